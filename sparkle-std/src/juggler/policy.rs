//! The decision: for each op, the device with the earliest expected completion (when its queue
//! is free + predicted run time + the transfers the op needs there; a shape that ran on a device
//! is predicted there from its own runs), with budgeted exploration of devices whose model of the
//! op, or whose run of its shape, is still missing. A device that fails is skipped with
//! exponential backoff and the op re-runs on the next one.

use std::collections::HashMap;
use std::fmt;

use super::clock::Clock;
use super::model::{streak_after, Bucket, CostModel, ModelKey, OpDesc, Prior, DRIFT_RESIDUAL, DRIFT_STREAK};

/// A device the juggler can place work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceId {
    /// The CPU backend.
    Cpu,
    /// Vulkan device `i` (in `sparkle_vk::devices()` order).
    Vulkan(usize),
}

impl DeviceId {
    /// The backend that computes on it, the key of its row in the tolerance table
    /// ([`sparkle_core::check::TOLERANCES`]).
    pub const fn backend(self) -> sparkle_core::check::Backend {
        match self {
            DeviceId::Cpu => sparkle_core::check::Backend::Cpu,
            DeviceId::Vulkan(_) => sparkle_core::check::Backend::Vulkan,
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => write!(f, "cpu"),
            DeviceId::Vulkan(i) => write!(f, "vulkan:{i}"),
        }
    }
}

/// One device's state.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) id: DeviceId,
    /// Whether the host's tensors must be copied to it (false for the CPU).
    pub(crate) remote: bool,
    /// One cost model per (op kind, variant, shape band), created on its first measurement.
    pub(crate) models: FxMap<ModelKey, CostModel>,
    /// The model of nothing learned (what an op of an unmeasured kind is predicted with).
    blank: CostModel,
    /// Per exact shape ([`OpDesc::footprint`]) run here: ln(seconds), copies excluded, as a
    /// running mean (`log_eff`) over `weight` runs. A shape that ran here is predicted from its
    /// own runs: shapes that share a model but run at different speeds (a 3x3 conv at 14x14 and
    /// one at 56x56) are then told apart, and another shape's runs cannot move its prediction.
    pub(crate) shapes: FxMap<u64, ShapeStat>,
    /// The learned bus: `log_eff` holds ln(learned bandwidth / the prior's), learned from runs
    /// whose copies are most of their predicted time (the H200 host's copies run at about 5 GB/s
    /// through the handle, not the prior's 12: skinny GEMMs and early 1x1 convs on the GPU were
    /// predicted up to 2x too fast).
    pub(crate) bus: Bucket,
    pub(crate) prior: Prior,
    busy_until: f64,
    failed_until: f64,
    backoff: f64,
}

/// rustc's FxHash: the juggler's maps are keyed by small values it computes itself (model keys,
/// shape footprints that are hashes already), and SipHash's flood resistance cost a good part of
/// a decision's 1 us budget.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.write_u64(u64::from(b)));
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

/// A map hashed with [`Fx`].
pub(crate) type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fx>>;

/// What one device learned about one exact shape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ShapeStat {
    /// Mean ln(seconds), copies excluded.
    pub(crate) log_mean: f64,
    /// Variance of ln(seconds) (how noisy this shape's runs are here).
    pub(crate) log_var: f64,
    /// Runs behind the mean (capped at [`SHAPE_RUNS`]); 0: never ran here.
    pub(crate) weight: f64,
    /// Runs here in all.
    pub(crate) calls: u32,
    /// Consecutive large misses of one sign (positive: slower than the mean).
    streak: i8,
    /// Its history was reset by drift, and no other device has run the shape since: the other
    /// devices' predictions for it may be stale, so one of them is tried.
    pub(crate) drifted: bool,
}

impl ShapeStat {
    /// Learns one run's ln(seconds). Like a model bucket: a clamped step, and DRIFT_STREAK
    /// large misses in a row of one sign are drift, not noise (the shape's history is then
    /// forgotten); a miss is large beyond [`DRIFT_RESIDUAL`] and beyond 2.5 standard deviations
    /// of this shape's own runs, so a noisy shape (small ops on many CPU threads scatter by
    /// 50%) is not reset by its noise.
    fn learn(&mut self, observed: f64) {
        self.calls = self.calls.saturating_add(1);
        if self.weight == 0.0 {
            self.log_mean = observed;
            self.weight = 1.0;
            return;
        }
        let miss = observed - self.log_mean;
        let large = miss.abs() > DRIFT_RESIDUAL.ln().max(2.5 * self.log_var.sqrt());
        self.streak = streak_after(self.streak, large, miss > 0.0);
        if self.streak.unsigned_abs() >= DRIFT_STREAK {
            *self = ShapeStat { log_mean: observed, log_var: 0.0, weight: 1.0, streak: 0, drifted: true, ..*self };
            return;
        }
        let rate = 1.0 / (self.weight + 1.0);
        let step = miss.clamp(-SHAPE_STEP.ln(), SHAPE_STEP.ln());
        self.log_mean += rate * step;
        // A large miss adds only DRIFT_RESIDUAL to the spread: a spike, or the first runs after
        // a drift, would otherwise widen it until the drift no longer counted as large (and a
        // noisy shape's spread still grows from 0, a step at a time, to its own).
        let counted = if large { DRIFT_RESIDUAL.ln().powi(2) } else { step * step };
        self.log_var += rate * (counted - self.log_var);
        self.weight = (self.weight + 1.0).min(SHAPE_RUNS);
    }
}

/// Shapes remembered per device (a new shape past this many is predicted by its model alone).
pub const SHAPES: usize = 4096;
/// A shape's time is a running mean over at most this many runs (so it follows drift)...
pub const SHAPE_RUNS: f64 = 8.0;
/// ...and one run moves it by at most this factor (a spike barely moves it).
pub const SHAPE_STEP: f64 = 2.0;

impl Device {
    /// Host <-> device bytes per second, as learned.
    fn bandwidth(&self) -> f64 {
        self.prior.bandwidth * self.bus.log_eff.exp()
    }

    /// The model an op of `key` is predicted with: its own once measured, else the nearest
    /// measured one of its kind (first its variant in the nearest band, the lower on a tie, then
    /// other variants: a skinny GEMM before any was measured borrows the square GEMMs' model),
    /// else the blank model (the prior).
    fn model_for(&self, key: &ModelKey) -> &CostModel {
        if let Some(m) = self.models.get(key) {
            return m;
        }
        let distance = |k: &ModelKey| 8 * u8::from(k.variant != key.variant) + k.band.abs_diff(key.band);
        self.models
            .iter()
            .filter(|(k, _)| k.kind == key.kind)
            .min_by_key(|(k, _)| (distance(k), k.band, k.variant))
            .map_or(&self.blank, |(_, m)| m)
    }

    /// Predicted seconds of `op` (of model `key`), `transfer` seconds of copies included: from
    /// its shape's own runs here if there were any, else from its model.
    fn predict(&self, op: &OpDesc, key: &ModelKey, transfer: f64) -> f64 {
        match self.shapes.get(&op.footprint) {
            Some(s) if s.weight > 0.0 => s.log_mean.exp() + transfer,
            _ => self.model_for(key).predict(op, transfer),
        }
    }
}

/// What the juggler decided for one op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Where it runs.
    pub device: DeviceId,
    /// Predicted seconds there (transfers included).
    pub predicted: f64,
    /// Whether the device was picked to learn about it rather than for its prediction.
    pub explored: bool,
}

/// Exploration is allowed only when the explored device's predicted completion is within this
/// factor of the best one: never send work to a device predicted to be much slower just to learn.
pub const EXPLORE_FACTOR: f64 = 2.0;
/// The bus is learned from runs whose predicted copies take this many times the rest of the run
/// (with less, the rest's error, the GPU's own inefficiency at mid sizes, would be learned as a
/// slow bus).
pub const BUS_DOMINANT: f64 = 4.0;
/// After a shape drifted on the best device, the runner-up is tried if predicted within this
/// factor.
pub const DRIFT_EXPLORE_FACTOR: f64 = 3.0;
/// A recurring shape is tried once on a device it never ran on when that device's predicted
/// completion is later than the best one's by at most this share of the time the shape took so
/// far.
pub const SHAPE_EXPLORE_SHARE: f64 = 0.1;
/// An exploring run is predicted to take at most this share of the seconds run so far.
pub const EXPLORE_BUDGET: f64 = 0.05;
/// First backoff after a failure; doubles up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: f64 = 1.0;
/// Longest a failed device is skipped before it is tried again.
pub const MAX_BACKOFF: f64 = 60.0;

/// The scheduler.
pub struct Juggler<C: Clock> {
    clock: C,
    pub(crate) devices: Vec<Device>,
    /// Whether unmeasured devices are tried (within [`EXPLORE_FACTOR`]); off for deterministic runs.
    explore: bool,
    /// Seconds of every run learned from, on all devices (what exploration is budgeted against).
    spent: f64,
}

impl<C: Clock> fmt::Debug for Juggler<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Juggler").field("devices", &self.devices).finish()
    }
}

impl<C: Clock> Juggler<C> {
    /// A juggler with no devices yet.
    pub fn new(clock: C) -> Self {
        Self { clock, devices: Vec::new(), explore: true, spent: 0.0 }
    }

    /// Adds a device with its prior; `remote` when host tensors must be copied to it.
    pub fn add_device(&mut self, id: DeviceId, prior: Prior, remote: bool) {
        self.devices.push(Device {
            id,
            remote,
            models: FxMap::default(),
            blank: CostModel::new(prior),
            shapes: FxMap::default(),
            bus: Bucket::default(),
            prior,
            busy_until: 0.0,
            failed_until: 0.0,
            backoff: FIRST_BACKOFF,
        });
    }

    /// Turns exploration of unmeasured devices on (the default) or off (deterministic placement:
    /// always the best prediction).
    pub fn set_exploration(&mut self, on: bool) {
        self.explore = on;
    }

    /// The devices, in the order they were added.
    pub fn device_ids(&self) -> Vec<DeviceId> {
        self.devices.iter().map(|d| d.id).collect()
    }

    /// Predicted seconds of `op` on `device` (transfers included unless `resident`), queueing
    /// excluded; `None` for an unknown device.
    pub fn predict_on(&self, device: DeviceId, op: &OpDesc, resident: bool) -> Option<f64> {
        let d = self.devices.iter().find(|d| d.id == device)?;
        Some(d.predict(op, &op.model_key(), Self::host_transfer(d, op, resident)))
    }

    /// When `device`'s queue is expected to be free (clock seconds).
    pub fn busy_until(&self, device: DeviceId) -> Option<f64> {
        self.devices.iter().find(|d| d.id == device).map(|d| d.busy_until)
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The cost model `device` predicts `op` with (the prior alone if nothing was learned yet),
    /// before its shape's own offset.
    pub fn model_of(&self, device: DeviceId, op: &OpDesc) -> Option<CostModel> {
        let d = self.devices.iter().find(|d| d.id == device)?;
        Some(d.model_for(&op.model_key()).clone())
    }

    /// Seconds to move `op`'s data to `d` when it lives on the host (none when `resident`).
    fn host_transfer(d: &Device, op: &OpDesc, resident: bool) -> f64 {
        if d.remote && !resident {
            op.bytes / d.bandwidth()
        } else {
            0.0
        }
    }

    /// Seconds to copy `bytes` between the host and `device` at its bandwidth (0 for the CPU and
    /// for an unknown device).
    pub fn copy_seconds(&self, device: DeviceId, bytes: f64) -> f64 {
        match self.devices.iter().find(|d| d.id == device) {
            Some(d) if d.remote => bytes / d.bandwidth(),
            _ => 0.0,
        }
    }

    /// Where `op` should run. `resident`: its tensors already live on the remote devices.
    pub fn decide(&self, op: &OpDesc, resident: bool) -> Option<Decision> {
        self.decide_among(op, &|d| Self::host_transfer(d, op, resident), &[])
    }

    /// Where `op` should run when its data is spread over devices: `transfer(device)` is the
    /// seconds of copies the op needs there (see [`Juggler::copy_seconds`]).
    pub fn decide_with(&self, op: &OpDesc, transfer: &dyn Fn(DeviceId) -> f64) -> Option<Decision> {
        self.decide_among(op, &|d| transfer(d.id), &[])
    }

    fn decide_among(&self, op: &OpDesc, transfer: &dyn Fn(&Device) -> f64, exclude: &[DeviceId]) -> Option<Decision> {
        let now = self.clock.now();
        let key = op.model_key();
        // Each available device's predicted run time and completion, computed once.
        // (Devices past the 16th are still placed on, but never explored.)
        let mut candidates = [(0usize, 0.0f64, 0.0f64); 16];
        let mut n = 0;
        let mut best: Option<(usize, f64, f64)> = None; // (index, completion, run time)
        for (i, d) in self.devices.iter().enumerate() {
            if d.failed_until > now || exclude.contains(&d.id) {
                continue;
            }
            let run = d.predict(op, &key, transfer(d));
            let done = (d.busy_until - now).max(0.0) + run;
            if n < candidates.len() {
                candidates[n] = (i, done, run);
                n += 1;
            }
            if best.is_none_or(|(_, b, _)| done < b) {
                best = Some((i, done, run));
            }
        }
        let (bi, best_done, best_run) = best?;
        if self.explore {
            // Capped exploration, three cases. (1) A device that measured no op of this kind,
            // variant and band yet (its prediction is the prior's guess or borrowed from other
            // bands) whose predicted completion is close, and whose run is predicted at most
            // EXPLORE_BUDGET of the time run so far: a first depthwise conv on lavapipe is tried
            // on a small layer, not on a batch of 32 (80x the CPU).
            // (2) A shape that keeps recurring but never ran on a device whose model of its kind,
            // variant and band was measured: that device once its predicted extra time is at most
            // SHAPE_EXPLORE_SHARE of the time the shape took so far (the prediction comes from
            // other shapes, which may run at other speeds: a 1x1 conv at 56x56 runs at a third of
            // the CPU's rate at 28x28; without one run, a pessimistic guess is never corrected).
            // (A borrowed model is not enough for (2): lavapipe's depthwise convs run 10-80x
            // slower than its other convs predict.)
            let spent = || -> f64 {
                candidates[..n]
                    .iter()
                    .filter_map(|c| self.devices[c.0].shapes.get(&op.footprint))
                    .map(|s| f64::from(s.calls) * s.log_mean.exp())
                    .sum()
            };
            for &(i, done, run) in &candidates[..n] {
                if i == bi {
                    continue;
                }
                let d = &self.devices[i];
                let unmeasured = !d.models.contains_key(&key);
                // (A full shape memory cannot record the try: then nothing counts as untried.)
                let untried =
                    || d.models.contains_key(&key) && d.shapes.len() < SHAPES && !d.shapes.contains_key(&op.footprint);
                if (unmeasured && done <= EXPLORE_FACTOR * best_done && run <= EXPLORE_BUDGET * self.spent)
                    || (untried() && done - best_done <= SHAPE_EXPLORE_SHARE * spent())
                {
                    return Some(Decision { device: d.id, predicted: run, explored: true });
                }
            }
            // (3) The shape just drifted on the best device (it became much slower or faster
            // there): the runner-up's prediction may be as stale, so it is tried once if close.
            if self.devices[bi].shapes.get(&op.footprint).is_some_and(|s| s.drifted) {
                let runner_up = candidates[..n].iter().filter(|c| c.0 != bi).min_by(|a, b| a.1.total_cmp(&b.1));
                if let Some(&(i, _, run)) = runner_up.filter(|c| c.1 <= DRIFT_EXPLORE_FACTOR * best_done) {
                    return Some(Decision { device: self.devices[i].id, predicted: run, explored: true });
                }
            }
        }
        Some(Decision { device: self.devices[bi].id, predicted: best_run, explored: false })
    }

    /// Learns from a measured run. `first_call`: the run included one-time costs (pipeline
    /// compilation, JIT) and is not run time, so it is not learned from.
    pub fn record(&mut self, device: DeviceId, op: &OpDesc, resident: bool, seconds: f64, first_call: bool) {
        let transfer = match self.devices.iter().find(|d| d.id == device) {
            Some(d) => Self::host_transfer(d, op, resident),
            None => return,
        };
        self.record_with(device, op, transfer, seconds, first_call);
    }

    /// [`Juggler::record`] for a run that spent `transfer` seconds (as predicted) on copies.
    pub fn record_with(&mut self, device: DeviceId, op: &OpDesc, transfer: f64, seconds: f64, first_call: bool) {
        let Some(index) = self.devices.iter().position(|d| d.id == device) else { return };
        let d = &mut self.devices[index];
        d.failed_until = 0.0;
        d.backoff = FIRST_BACKOFF;
        if first_call || !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        self.spent += seconds;
        let d = &mut self.devices[index];
        let key = op.model_key();
        let mut transfer = transfer;
        if d.remote && transfer > 0.0 && transfer.is_finite() && d.bandwidth().is_finite() {
            // Mostly copies (as predicted): what the rest leaves of the run is the copies' time.
            let bytes = transfer * d.bandwidth();
            let rest = d.model_for(&key).predict(op, 0.0);
            if transfer > BUS_DOMINANT * rest {
                let implied = (seconds - rest).max(0.2 * transfer);
                d.bus.follow((bytes / implied / d.prior.bandwidth).ln());
            }
            transfer = bytes / d.bandwidth();
        }
        if !d.models.contains_key(&key) {
            // A new model starts from the device's learned fixed cost, which belongs to the
            // device, not to the shape.
            let mut m = CostModel::new(d.prior);
            m.overhead = d.model_for(&key).overhead;
            d.models.insert(key, m);
        }
        if let Some(m) = d.models.get_mut(&key) {
            m.update(op, transfer, seconds);
        }
        // A run here refreshes what the other devices' drifted histories left in doubt.
        for (i, other) in self.devices.iter_mut().enumerate() {
            if let Some(s) = other.shapes.get_mut(&op.footprint).filter(|_| i != index) {
                s.drifted = false;
            }
        }
        let d = &mut self.devices[index];
        let observed = (seconds - transfer).max(0.1 * seconds).ln();
        let full = d.shapes.len() >= SHAPES;
        let s = match d.shapes.get_mut(&op.footprint) {
            Some(s) => s,
            None if !full => d.shapes.entry(op.footprint).or_default(),
            None => return,
        };
        s.learn(observed);
    }

    /// Marks `device` as busy until `until` (its queue holds work already).
    pub fn set_busy_until(&mut self, device: DeviceId, until: f64) {
        if let Some(d) = self.devices.iter_mut().find(|d| d.id == device) {
            d.busy_until = until;
        }
    }

    /// Marks `device` as failed: skipped for a backoff that doubles with each failure in a row
    /// (from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]), then probed again.
    pub fn fail(&mut self, device: DeviceId) {
        let now = self.clock.now();
        if let Some(d) = self.devices.iter_mut().find(|d| d.id == device) {
            d.failed_until = now + d.backoff;
            d.backoff = (d.backoff * 2.0).min(MAX_BACKOFF);
        }
    }

    /// Runs `op` where the juggler decides, timing it with the clock and learning from it; if the
    /// device fails, marks it unhealthy (retried after a backoff) and re-runs on the next best
    /// device. `run(device, first_call)` does the work. Returns the result, the device that
    /// produced it, and the decision; or the last error when every device failed.
    pub fn run<T, E>(
        &mut self,
        op: &OpDesc,
        resident: bool,
        first_call: impl Fn(DeviceId) -> bool,
        mut run: impl FnMut(DeviceId) -> Result<T, E>,
    ) -> Result<(T, Decision), Option<E>> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(decision) = self.decide_among(op, &|d| Self::host_transfer(d, op, resident), &tried) {
            let first = first_call(decision.device);
            let start = self.clock.now();
            match run(decision.device) {
                Ok(v) => {
                    let seconds = self.clock.now() - start;
                    self.record(decision.device, op, resident, seconds, first);
                    return Ok((v, decision));
                }
                Err(e) => {
                    self.fail(decision.device);
                    tried.push(decision.device);
                    last = Some(e);
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::FakeClock;
    use super::*;

    const CPU: Prior = Prior { overhead: 2e-6, peak: 2e11, half: 1e6, bandwidth: f64::INFINITY };
    const GPU: Prior = Prior { overhead: 20e-6, peak: 4e13, half: 1e9, bandwidth: 2e10 };

    fn juggler() -> Juggler<FakeClock> {
        let mut j = Juggler::new(FakeClock::default());
        j.add_device(DeviceId::Cpu, CPU, false);
        j.add_device(DeviceId::Vulkan(0), GPU, true);
        j
    }

    #[test]
    fn a_shape_is_predicted_from_its_own_runs_through_noise_and_follows_drift() {
        let mut j = juggler();
        let (a, b) = (OpDesc::gemm(512, 512, 512), OpDesc::gemm(520, 512, 512));
        assert_eq!(a.model_key(), b.model_key(), "one model, two shapes");
        // `a` runs at 1 ms with +-30% noise, `b` (same model bucket) at 4 ms.
        for i in 0..16 {
            let noise = if i % 2 == 0 { 1.3 } else { 1.0 / 1.3 };
            j.record(DeviceId::Cpu, &a, false, 1e-3 * noise, false);
            j.record(DeviceId::Cpu, &b, false, 4e-3, false);
        }
        let predict = |j: &Juggler<FakeClock>, op: &OpDesc| j.predict_on(DeviceId::Cpu, op, false).unwrap();
        assert!((0.8e-3..1.25e-3).contains(&predict(&j, &a)), "{}", predict(&j, &a));
        assert!((3.6e-3..4.4e-3).contains(&predict(&j, &b)), "{}", predict(&j, &b));
        // One 3x spike is noise; two in a row are drift.
        j.record(DeviceId::Cpu, &a, false, 3e-3, false);
        assert!(predict(&j, &a) < 1.5e-3, "{}", predict(&j, &a));
        j.record(DeviceId::Cpu, &a, false, 1e-3, false);
        j.record(DeviceId::Cpu, &a, false, 3e-3, false);
        j.record(DeviceId::Cpu, &a, false, 3e-3, false);
        assert!((2.5e-3..3.5e-3).contains(&predict(&j, &a)), "{}", predict(&j, &a));
    }

    #[test]
    fn the_bus_is_learned_from_runs_that_are_mostly_copies() {
        // The bus really moves 5 GB/s, the prior says 20.
        let mut j = juggler();
        let skinny = OpDesc::gemm(1, 4096, 4096);
        let truth = |op: &OpDesc| 20e-6 + op.bytes / 5e9;
        for _ in 0..20 {
            j.record(DeviceId::Vulkan(0), &skinny, false, truth(&skinny), false);
        }
        let learned = skinny.bytes / j.copy_seconds(DeviceId::Vulkan(0), skinny.bytes);
        assert!((4e9..6.5e9).contains(&learned), "{learned:e}");
        // An unseen copy-bound shape is predicted with it.
        let other = OpDesc::gemm(4, 2048, 8192);
        let ratio = j.predict_on(DeviceId::Vulkan(0), &other, false).unwrap() / truth(&other);
        assert!((0.7..1.4).contains(&ratio), "{ratio}");
    }

    #[test]
    fn skinny_and_square_shapes_of_one_size_are_learned_apart() {
        // The CPU runs square GEMMs at 100 GFLOPS and M = 8 ones (memory-bound) at 10.
        let truth = |op: &OpDesc| op.flops / if op.band() == 0 { 1e11 } else { 1e10 };
        let mut j = juggler();
        for n in [256, 512, 1024, 2048] {
            for op in [OpDesc::gemm(n, n, n), OpDesc::gemm(8, 4 * n, 4 * n)] {
                for _ in 0..5 {
                    j.record(DeviceId::Cpu, &op, false, truth(&op), false);
                }
            }
        }
        // Sizes never measured, between the measured ones: each within 25% of its own truth.
        for op in [OpDesc::gemm(768, 768, 768), OpDesc::gemm(8, 3072, 3072)] {
            let ratio = j.predict_on(DeviceId::Cpu, &op, false).unwrap() / truth(&op);
            assert!((0.8..1.25).contains(&ratio), "band {}: predicted / true {ratio}", op.band());
        }
        // A band never measured (1: M = 32 here) borrows the nearest measured one's model (0).
        let (mid, square) = (OpDesc::gemm(32, 1024, 1024), OpDesc::gemm(1024, 1024, 1024));
        assert_eq!((mid.band(), square.band(), OpDesc::gemm(8, 1024, 1024).band()), (1, 0, 2));
        assert_eq!(j.model_of(DeviceId::Cpu, &mid), j.model_of(DeviceId::Cpu, &square));
    }

    #[test]
    fn small_work_stays_on_the_cpu_and_large_goes_to_the_gpu() {
        let j = juggler();
        assert_eq!(j.decide(&OpDesc::gemm(32, 32, 32), false).unwrap().device, DeviceId::Cpu);
        assert_eq!(j.decide(&OpDesc::gemm(4096, 4096, 4096), false).unwrap().device, DeviceId::Vulkan(0));
        // Resident tensors move the crossover down.
        let mid = OpDesc::gemm(512, 512, 512);
        let host = j.decide(&mid, false).unwrap();
        let resident = j.decide(&mid, true).unwrap();
        assert!(resident.predicted <= host.predicted);
    }

    #[test]
    fn only_the_copies_an_op_needs_are_charged() {
        let mut j = juggler();
        j.add_device(DeviceId::Vulkan(1), GPU, true);
        // A mid-sized op whose 64 MB of inputs live on GPU 1: GPU 0 pays the copy, GPU 1 does not.
        let op = OpDesc::gemm(2048, 2048, 2048);
        let bytes = 64e6;
        let on_1 =
            |d: DeviceId| if d == DeviceId::Vulkan(1) { 0.0 } else { 2.0 * j.copy_seconds(DeviceId::Vulkan(0), bytes) };
        let d = j.decide_with(&op, &on_1).unwrap();
        assert_eq!(d.device, DeviceId::Vulkan(1));
        assert_eq!(d.predicted, j.predict_on(DeviceId::Vulkan(1), &op, true).unwrap());
        let on_0 =
            |d: DeviceId| if d == DeviceId::Vulkan(0) { 0.0 } else { 2.0 * j.copy_seconds(DeviceId::Vulkan(1), bytes) };
        assert_eq!(j.decide_with(&op, &on_0).unwrap().device, DeviceId::Vulkan(0));
        assert_eq!(j.copy_seconds(DeviceId::Cpu, bytes), 0.0);
        assert_eq!(j.copy_seconds(DeviceId::Vulkan(0), bytes), bytes / GPU.bandwidth);
        // Learning subtracts the charged copies: a run that took exactly the prediction with the
        // copies leaves the prediction where it was.
        let before = j.predict_on(DeviceId::Vulkan(0), &op, true).unwrap();
        let copies = j.copy_seconds(DeviceId::Vulkan(0), bytes);
        j.record_with(DeviceId::Vulkan(0), &op, copies, before + copies, false);
        let after = j.predict_on(DeviceId::Vulkan(0), &op, true).unwrap();
        assert!((after / before - 1.0).abs() < 1e-9, "{before} -> {after}");
    }

    #[test]
    fn a_busy_device_loses_work_it_would_otherwise_win() {
        let mut j = juggler();
        let big = OpDesc::gemm(2048, 2048, 2048);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Vulkan(0));
        j.set_busy_until(DeviceId::Vulkan(0), 1e6);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Cpu);
    }

    #[test]
    fn a_failing_device_is_skipped_the_result_still_arrives_and_it_is_retried_later() {
        let mut j = juggler();
        let big = OpDesc::gemm(2048, 2048, 2048);
        let (out, d) = j
            .run(&big, true, |_| false, |dev| if dev == DeviceId::Vulkan(0) { Err("device lost") } else { Ok(42) })
            .unwrap();
        assert_eq!((out, d.device), (42, DeviceId::Cpu));
        // Skipped while backing off...
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Cpu);
        // ...and probed again once the backoff has passed.
        j.clock().advance(FIRST_BACKOFF + 0.1);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Vulkan(0));
        // Every device failing returns the last error, never a result from nowhere.
        let all: Result<(i32, Decision), Option<&str>> = j.run(&big, true, |_| false, |_| Err("boom"));
        assert_eq!(all.unwrap_err(), Some("boom"));
    }

    #[test]
    fn first_calls_are_not_learned_and_measurements_are() {
        let mut j = juggler();
        let op = OpDesc::gemm(256, 256, 256);
        let before = j.model_of(DeviceId::Cpu, &op).unwrap().predict(&op, 0.0);
        j.record(DeviceId::Cpu, &op, false, 10.0, true);
        assert_eq!(j.model_of(DeviceId::Cpu, &op).unwrap().predict(&op, 0.0), before);
        j.record(DeviceId::Cpu, &op, false, before * 3.0, false);
        assert!(j.model_of(DeviceId::Cpu, &op).unwrap().predict(&op, 0.0) > before * 1.5);
    }

    /// Ops where the CPU is the best prediction, with the GPU's predicted completion (unmeasured,
    /// host tensors) as a multiple of the CPU's.
    fn cpu_wins_with_gpu_ratio(j: &Juggler<FakeClock>) -> Vec<(OpDesc, f64)> {
        (1..=64)
            .map(|i| OpDesc::gemm(i * 8, i * 8, i * 8))
            .filter_map(|op| {
                let cpu = j.predict_on(DeviceId::Cpu, &op, false).unwrap();
                let gpu = j.predict_on(DeviceId::Vulkan(0), &op, false).unwrap();
                (cpu < gpu).then_some((op, gpu / cpu))
            })
            .collect()
    }

    #[test]
    fn exploration_is_capped() {
        let mut j = juggler();
        // A second of conv work on the CPU: budget to explore with (and no GEMM model touched).
        let conv = sparkle_core::Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).validate().unwrap();
        j.record(DeviceId::Cpu, &OpDesc::conv2d(&conv), false, 1.0, false);
        // A tiny op: the GPU (unmeasured) costs 10x the CPU's prediction: not explored.
        let tiny = OpDesc::gemm(8, 8, 8);
        let d = j.decide(&tiny, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Cpu, false));
        // Every op whose unmeasured GPU is predicted beyond the cap stays on the CPU, unexplored.
        let beyond: Vec<_> = cpu_wins_with_gpu_ratio(&j).into_iter().filter(|&(_, r)| r > EXPLORE_FACTOR).collect();
        assert!(!beyond.is_empty());
        for (op, ratio) in beyond {
            let d = j.decide(&op, false).unwrap();
            assert_eq!((d.device, d.explored), (DeviceId::Cpu, false), "GPU at {ratio:.2}x must not be explored");
        }
    }

    #[test]
    fn an_unmeasured_device_within_the_cap_is_explored_until_measured() {
        let mut j = juggler();
        let within: Vec<_> =
            cpu_wins_with_gpu_ratio(&j).into_iter().filter(|&(_, r)| r > 1.0 && r <= EXPLORE_FACTOR).collect();
        assert!(!within.is_empty(), "the priors put no op inside the exploration window");
        let (op, ratio) = within[0];
        // Nothing run yet: no budget to explore with.
        assert!(!j.decide(&op, false).unwrap().explored);
        // A second of conv work on the CPU (another kind: the GEMM models stay as they were).
        let conv = sparkle_core::Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).validate().unwrap();
        j.record(DeviceId::Cpu, &OpDesc::conv2d(&conv), false, 1.0, false);
        let d = j.decide(&op, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Vulkan(0), true), "GPU at {ratio:.2}x must be explored");
        // Once measured at this size (and slower, as predicted), the CPU gets the op again.
        let gpu_time = j.predict_on(DeviceId::Vulkan(0), &op, false).unwrap();
        for _ in 0..4 {
            j.record(DeviceId::Vulkan(0), &op, false, gpu_time, false);
        }
        let d = j.decide(&op, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Cpu, false));
    }
}
