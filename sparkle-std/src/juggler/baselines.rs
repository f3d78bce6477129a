//! The policies the juggler is measured against in the replay (and the interface every replayed
//! policy implements, with the replay's deterministic random draws): StarPU's `dmda` over its
//! history-based performance model, ported rule by rule from StarPU's sources (each rule cites the
//! file and function it comes from; line numbers are those of starpu-runtime/starpu at commit
//! 3f3cc82a), the same with StarPU's non-linear regression model refitted online, and
//! epsilon-greedy.
//!
//! The replay runs one call at a time, so every worker's queue is empty at each decision: dmda's
//! expected start is "now" on every worker, its expected end `now + transfer + length`, and its
//! fitness `alpha * (end - best end) + beta * transfer` with the defaults `alpha = beta = 1` and
//! no energy model (deque_modeling_policy_data_aware.c, `compute_all_performance_predictions`
//! L568-573 and the fitness at L680-682).

use std::collections::HashMap;

use super::model::{OpDesc, OpKind, Prior};

/// Device index of the CPU in recordings and policies.
pub(crate) const CPU: usize = 0;
/// Device index of the GPU.
pub(crate) const GPU: usize = 1;

/// A policy under replay. `key` is the op's footprint: equal for equal shapes (StarPU's
/// `starpu_task_footprint`, a hash of the data sizes), different otherwise.
pub(crate) trait Policy {
    fn name(&self) -> &'static str;
    fn pick(&mut self, op: &OpDesc, key: u64, call: u64) -> usize;
    /// Its predicted seconds for `op` on `device`, if it can predict.
    fn predict(&self, _op: &OpDesc, _key: u64, _device: usize) -> Option<f64> {
        None
    }
    fn learn(&mut self, _op: &OpDesc, _key: u64, _device: usize, _seconds: f64) {}
}

/// splitmix64.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in (0, 1), deterministic in `seed`.
pub(crate) fn uniform(seed: u64) -> f64 {
    ((mix(seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal draw (Box-Muller), deterministic in `seed`.
pub(crate) fn normal(seed: u64) -> f64 {
    let (u, v) = (uniform(seed), uniform(seed ^ 0xA5A5_A5A5));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `STARPU_CALIBRATE_MINIMUM`'s default: a history entry predicts only from this many samples
/// (src/core/perfmodel/perfmodel_history.c L120: `_starpu_calibration_minimum =
/// starpu_getenv_number_default("STARPU_CALIBRATE_MINIMUM", 10)`).
const CALIBRATE_MINIMUM: u32 = 10;

/// `STARPU_HISTORY_MAX_ERROR`'s default, percent (perfmodel_history.c L119; the default
/// `STARPU_HISTORYMAXERROR` is configure.ac's `calibration_heuristic=50`).
const HISTORY_MAX_ERROR_PCT: f64 = 50.0;

/// One history entry: a footprint (the exact shape) on one worker
/// (`struct starpu_perfmodel_history_entry` in include/starpu_perfmodel.h).
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    sum: f64,
    nsample: u32,
    nerror: u32,
    mean: f64,
    /// Whether the entry exists: a history model creates it from a footprint's first run
    /// without recording that run (see [`Entry::update`]).
    seen: bool,
}

impl Entry {
    /// `_starpu_update_perfmodel_history` (src/core/perfmodel/perfmodel_history.c): a measurement
    /// off the mean by more than `STARPU_HISTORY_MAX_ERROR` percent either way is an error and
    /// stays out of the mean; when errors reach the sample count the entry is flushed ("Too big
    /// deviation ... flushing the performance model"). Otherwise sum and count grow and the mean
    /// is `sum / nsample` (StarPU also keeps a sum of squares for a deviation dmda never reads).
    ///
    /// `drop_first`: a `STARPU_HISTORY_BASED` model creates a footprint's entry with no sample
    /// (L1926: `if (number != 1 || model->type != STARPU_HISTORY_BASED)` is the only branch that
    /// stores the first measurement); the regression-based models keep it.
    fn update(&mut self, measured: f64, drop_first: bool) {
        if !self.seen {
            self.seen = true;
            if drop_first {
                return;
            }
        }
        // L1945-1949: `local_deviation = measured/entry->mean`, an error when
        // `100*local_deviation > 100+historymaxerror || 100/local_deviation > 100+historymaxerror`
        // (only once the entry has samples); L1951-1954: `nerror++`, flushed when
        // `nerror >= nsample`.
        if self.nsample > 0 {
            let deviation = measured / self.mean;
            let limit = (100.0 + HISTORY_MAX_ERROR_PCT) / 100.0;
            if deviation > limit || 1.0 / deviation > limit {
                self.nerror += 1;
                if self.nerror >= self.nsample {
                    *self = Entry { seen: true, ..Entry::default() };
                }
                return;
            }
        }
        self.sum += measured;
        self.nsample += 1;
        self.mean = self.sum / f64::from(self.nsample);
    }

    /// `__starpu_history_based_job_expected_perf` (L1740-1825): NaN unless
    /// `entry->nsample >= _starpu_calibration_minimum` (L1789), then the mean.
    fn expected(&self) -> f64 {
        if self.nsample >= CALIBRATE_MINIMUM {
            self.mean
        } else {
            f64::NAN
        }
    }
}

/// StarPU's non-linear regression model `a * size^b + c` of one worker
/// (`STARPU_NL_REGRESSION_BASED`), `size` the footprint's data size in bytes (the sum of its
/// buffers: perfmodel.c `__starpu_job_get_data_size` L254-280). StarPU fits it over the
/// per-footprint means weighted by their sample counts (regression.c,
/// `_starpu_regression_non_linear_power`) only when the model file is written at shutdown
/// (perfmodel_history.c `dump_reg_model` L378/L415) and trusts it only after loading it in a
/// later run (`scan_reg_model` L531) when `minx < 0.9 maxx` and at least
/// `STARPU_CALIBRATE_MINIMUM` samples went in (`VALID_REGRESSION`, L66-67).
#[derive(Clone, Copy, Debug)]
struct PowerFit {
    a: f64,
    b: f64,
    c: f64,
    /// Smallest and largest size fitted.
    minx: f64,
    maxx: f64,
}

impl PowerFit {
    /// Weighted least squares of `ln(y - c) = ln a + b ln x` over `(size, mean, samples)`
    /// points, `c` searched on a grid below the smallest mean (regression.c scans `c` and keeps
    /// the best fit); `None` unless `VALID_REGRESSION` holds and 3 distinct sizes went in.
    fn fit(points: &[(f64, f64, u32)]) -> Option<Self> {
        let minx = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let maxx = points.iter().map(|p| p.0).fold(0.0, f64::max);
        let samples: u32 = points.iter().map(|p| p.2).sum();
        let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        if xs.len() < 3 || minx >= 0.9 * maxx || samples < CALIBRATE_MINIMUM {
            return None;
        }
        let ymin = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let mut best: Option<(f64, PowerFit)> = None;
        for step in 0..64 {
            let c = ymin * f64::from(step) / 64.0;
            let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for &(x, y, w) in points {
                let (lx, ly, w) = (x.ln(), (y - c).ln(), f64::from(w));
                n += w;
                sx += w * lx;
                sy += w * ly;
                sxx += w * lx * lx;
                sxy += w * lx * ly;
            }
            let den = n * sxx - sx * sx;
            if den.abs() < 1e-12 {
                continue;
            }
            let b = (n * sxy - sx * sy) / den;
            let a = ((sy - b * sx) / n).exp();
            let f = PowerFit { a, b, c, minx, maxx };
            let err: f64 = points.iter().map(|&(x, y, w)| f64::from(w) * (f.predict(x) / y).ln().powi(2)).sum();
            if best.is_none_or(|(e, _)| err < e) {
                best = Some((err, f));
            }
        }
        best.map(|(_, f)| f)
    }

    /// `_starpu_non_linear_regression_based_job_expected_perf` (L1643): `a*size^b + c` for
    /// sizes within `[0.9 minx, 1.1 maxx]`, else nothing (the caller falls back to history).
    fn predict_in_range(&self, size: f64) -> Option<f64> {
        (size >= 0.9 * self.minx && size <= 1.1 * self.maxx).then(|| self.predict(size))
    }

    fn predict(&self, size: f64) -> f64 {
        self.a * size.powf(self.b) + self.c
    }
}

/// StarPU's `dmda` with the history model (`starpu-dmda`), or with the non-linear regression
/// model (`starpu-dmda-nl`) refitted online whenever a worker's samples grew by an eighth (at
/// least 16) since the last fit — StarPU fits it only
/// when the model file is written, so in a cold first run it behaves as plain history: this
/// variant is kinder to StarPU than StarPU is.
pub(crate) struct StarPuDmda {
    /// Per (footprint, worker).
    history: HashMap<(u64, usize), Entry>,
    /// Each footprint's codelet and data size (the regression's `size`).
    sizes: HashMap<u64, (OpKind, f64)>,
    /// One regression per (codelet, worker): GEMM and conv2d are separate codelets, each with
    /// its own performance model, as in a StarPU application.
    nl: Option<HashMap<(OpKind, usize), PowerFit>>,
    /// Samples per (codelet, worker) since its last refit, and in all (nl).
    since_fit: HashMap<(OpKind, usize), u32>,
    samples: HashMap<(OpKind, usize), u32>,
    /// Seconds per byte over the bus to and from the GPU (StarPU's bus calibration; here the
    /// bandwidth the juggler's prior assumes, so both policies see the same bus).
    bus: f64,
}

impl StarPuDmda {
    /// Plain history (`starpu-dmda`), or with the regression (`starpu-dmda-nl`).
    pub(crate) fn new(nl: bool) -> Self {
        StarPuDmda {
            history: HashMap::new(),
            sizes: HashMap::new(),
            nl: nl.then(HashMap::new),
            since_fit: HashMap::new(),
            samples: HashMap::new(),
            bus: 1.0 / Prior::GPU.bandwidth,
        }
    }

    /// `starpu_task_expected_data_transfer_time_for` (perfmodel.c L510): the GPU needs the
    /// operands over the bus, the CPU (main memory) holds them.
    fn transfer(&self, op: &OpDesc, device: usize) -> f64 {
        if device == GPU {
            op.bytes * self.bus
        } else {
            0.0
        }
    }

    /// The model's expected length: for `nl` the regression first (within its range), then the
    /// calibrated history (L1643-); for plain history the calibrated history; else NaN.
    fn length(&self, op: &OpDesc, key: u64, device: usize) -> f64 {
        let fitted =
            self.nl.as_ref().and_then(|fits| fits.get(&(op.kind, device))).and_then(|f| f.predict_in_range(op.bytes));
        fitted.unwrap_or_else(|| self.history.get(&(key, device)).map_or(f64::NAN, Entry::expected))
    }

    fn refit(&mut self, kind: OpKind, device: usize) {
        let Some(fits) = &mut self.nl else { return };
        let points: Vec<(f64, f64, u32)> = self
            .history
            .iter()
            .filter(|((_, d), e)| *d == device && e.nsample > 0)
            .filter_map(|((key, _), e)| {
                let (k, bytes) = self.sizes[key];
                (k == kind).then_some((bytes, e.mean, e.nsample))
            })
            .collect();
        match PowerFit::fit(&points) {
            Some(f) => fits.insert((kind, device), f),
            None => fits.remove(&(kind, device)),
        };
    }
}

impl Policy for StarPuDmda {
    fn name(&self) -> &'static str {
        if self.nl.is_some() {
            "starpu-dmda-nl"
        } else {
            "starpu-dmda"
        }
    }

    /// `compute_all_performance_predictions` (deque_modeling_policy_data_aware.c L411-602):
    /// workers in id order; a NaN prediction sets `calibrating` and `unknown`, and the task is
    /// forced onto the first worker whose model could not predict it (with empty queues every
    /// `ntasks_end` is 0, so the L531-547 conditions keep the first NaN worker). Ids number the
    /// accelerators before the CPUs (src/core/topology.c `_starpu_init_machine_config`
    /// L1440-1449: "we put the CPU section after the accelerator"). Otherwise the smallest
    /// fitness wins, ties to the earlier worker.
    fn pick(&mut self, op: &OpDesc, key: u64, _: u64) -> usize {
        let mut best = (f64::INFINITY, GPU);
        for device in [GPU, CPU] {
            let length = self.length(op, key, device);
            if length.is_nan() {
                return device;
            }
            let transfer = self.transfer(op, device);
            let fitness = (transfer + length) + transfer;
            if fitness < best.0 {
                best = (fitness, device);
            }
        }
        best.1
    }

    fn predict(&self, op: &OpDesc, key: u64, device: usize) -> Option<f64> {
        let length = self.length(op, key, device);
        (!length.is_nan()).then(|| length + self.transfer(op, device))
    }

    /// The history measures the codelet alone: StarPU fetches the data before the task starts,
    /// so the bus time is outside the measurement (driver_common.c
    /// `_starpu_driver_update_job_feedback`, ~L248-320: recorded while the model is calibrating,
    /// which the first NaN prediction turns on for good).
    fn learn(&mut self, op: &OpDesc, key: u64, device: usize, seconds: f64) {
        let codelet = (seconds - self.transfer(op, device)).max(seconds * 0.01);
        let drop_first = self.nl.is_none();
        self.history.entry((key, device)).or_default().update(codelet, drop_first);
        self.sizes.insert(key, (op.kind, op.bytes));
        let model = (op.kind, device);
        let since = self.since_fit.entry(model).or_default();
        *since += 1;
        let samples = self.samples.entry(model).or_default();
        *samples += 1;
        if self.nl.is_some() && *since >= (*samples / 8).max(16) {
            *since = 0;
            self.refit(op.kind, device);
        }
    }
}

/// Epsilon-greedy over per-shape means (epsilon 0.1; unseen shapes get a random device).
#[derive(Default)]
pub(crate) struct EpsilonGreedy {
    mean: HashMap<(u64, usize), (f64, u32)>,
}

impl Policy for EpsilonGreedy {
    fn name(&self) -> &'static str {
        "epsilon-greedy"
    }
    fn pick(&mut self, _: &OpDesc, key: u64, call: u64) -> usize {
        let m = |d: usize| self.mean.get(&(key, d)).copied();
        match (m(CPU), m(GPU)) {
            (Some(a), Some(b)) if uniform(call ^ 0xE95) >= 0.1 => usize::from(b.0 < a.0),
            _ => usize::from(uniform(call ^ 0xE96) < 0.5),
        }
    }
    fn predict(&self, _: &OpDesc, key: u64, device: usize) -> Option<f64> {
        self.mean.get(&(key, device)).map(|m| m.0)
    }
    fn learn(&mut self, _: &OpDesc, key: u64, d: usize, t: f64) {
        let e = self.mean.entry((key, d)).or_insert((0.0, 0));
        e.0 = (e.0 * f64::from(e.1) + t) / f64::from(e.1 + 1);
        e.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_rules() {
        let mut e = Entry::default();
        e.update(9.0, true); // a history model does not record the first run
        assert_eq!(e.nsample, 0);
        for _ in 0..9 {
            e.update(1.0, true);
        }
        assert!(e.expected().is_nan(), "9 samples: not calibrated");
        e.update(1.0, true);
        assert_eq!(e.expected(), 1.0);
        // Outliers either way (over 1.5x, under 1/1.5x) stay out of the mean...
        e.update(1.6, true);
        e.update(0.6, true);
        e.update(0.7, true); // within 1/1.5: a sample
        assert_eq!((e.nsample, e.nerror), (11, 2));
        // ...until there are as many errors as samples: then the entry is flushed.
        for _ in 0..9 {
            e.update(3.0, true);
        }
        assert_eq!((e.nsample, e.nerror), (0, 0));
        assert!(e.expected().is_nan());
        // The regression models keep the first run.
        let mut r = Entry::default();
        r.update(2.0, false);
        assert_eq!((r.nsample, r.mean), (1, 2.0));
    }

    #[test]
    fn uncalibrated_goes_to_the_accelerator_first() {
        let mut p = StarPuDmda::new(false);
        let op = OpDesc::gemm(8, 8, 8);
        assert_eq!(p.pick(&op, 8, 0), GPU);
        for _ in 0..11 {
            p.learn(&op, 8, GPU, 1e-3);
        }
        assert_eq!(p.pick(&op, 8, 0), CPU);
    }

    #[test]
    fn the_power_fit_recovers_a_power_law() {
        let pts: Vec<(f64, f64, u32)> =
            [1e3f64, 1e4, 1e5, 1e6].iter().map(|&x| (x, 2e-9 * x.powf(1.5) + 1e-5, 10)).collect();
        let f = PowerFit::fit(&pts).unwrap();
        for &(x, y, _) in &pts {
            assert!((f.predict(x) / y - 1.0).abs() < 0.05, "{f:?} at {x}");
        }
        assert!(f.predict_in_range(2e6).is_none() && f.predict_in_range(1e6).is_some());
        assert!(PowerFit::fit(&pts[..2]).is_none());
    }
}
