//! The replay benchmark: recorded per-(shape, device) runtimes, turned into a device model
//! (log-log interpolation over flops, noise with the recorded spread), replayed deterministically
//! through each policy on four traces, for several seeds (each seed draws its own trace shapes
//! and noise). Every policy sees the same noisy runtimes.
//!
//! Shapes are near-square (each dimension within 2x of the others), like the recorded ones.
//! Traces: T1 a network's layers repeated; T2 a Zipf long tail (2000 shapes, 20000 calls); T3 the
//! devices' speeds drift at the midpoint (GPU 3x slower); T4 unseen shapes after a warm-up (100
//! shapes, each 20 times). Policies: oracle (best expected device), always-CPU, always-GPU, the
//! old project's static rule (GPU when flops > 1e8), StarPU's `dmda` ported from its sources with
//! the history model and with the non-linear regression (`baselines.rs`), epsilon-greedy,
//! and Sparkle's juggler.
//!
//! Held-out metrics are over calls on shapes the policy has never run before, after the trace's
//! training window (T2: the first 2000 calls; T4: the warm-up; T1 and T3 have none): the share
//! sent to the truly fastest device, and the median error of the policy's prediction for the
//! device it picked.

use std::fmt::Write as _;
use std::time::Instant;

use super::baselines::{mix, normal, uniform, EpsilonGreedy, Policy, StarPuDmda, CPU, GPU};
use super::clock::FakeClock;
use super::model::{OpDesc, Prior};
use super::policy::{DeviceId, Juggler};

/// One recorded measurement row.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// 0 = the CPU, 1 = the GPU.
    pub device: usize,
    /// GEMM shape.
    pub shape: [usize; 3],
    /// Mean seconds.
    pub mean: f64,
    /// Standard deviation, seconds.
    pub std: f64,
}

/// A recorded machine: its samples and what its devices are.
#[derive(Clone, Debug)]
pub struct Recording {
    /// Free text: where and how it was recorded.
    pub machine: String,
    /// The CPU's measured peak (flop/s), for the juggler's prior.
    pub cpu_peak: f64,
    /// Whether the GPU is a real one (else a CPU-type Vulkan device such as lavapipe).
    pub gpu_is_discrete: bool,
    /// The measurements.
    pub samples: Vec<Sample>,
}

impl Recording {
    /// CSV: `# machine ...`, `# cpu_peak F`, `# gpu discrete|cpu`, then `device,m,n,k,mean,std`.
    pub fn to_csv(&self) -> String {
        let mut s = format!(
            "# machine {}\n# cpu_peak {:e}\n# gpu {}\ndevice,m,n,k,mean_s,std_s\n",
            self.machine,
            self.cpu_peak,
            if self.gpu_is_discrete { "discrete" } else { "cpu" }
        );
        for x in &self.samples {
            let _ = writeln!(s, "{},{},{},{},{:e},{:e}", x.device, x.shape[0], x.shape[1], x.shape[2], x.mean, x.std);
        }
        s
    }

    /// Parses [`Recording::to_csv`]'s format.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut r = Recording { machine: String::new(), cpu_peak: 0.0, gpu_is_discrete: true, samples: Vec::new() };
        for (i, line) in text.lines().enumerate() {
            let err = |w: &str| format!("line {}: {w}", i + 1);
            if let Some(m) = line.strip_prefix("# machine ") {
                r.machine = m.to_string();
            } else if let Some(p) = line.strip_prefix("# cpu_peak ") {
                r.cpu_peak = p.trim().parse().map_err(|_| err("bad cpu_peak"))?;
            } else if let Some(g) = line.strip_prefix("# gpu ") {
                r.gpu_is_discrete = g.trim() == "discrete";
            } else if line.starts_with('#') || line.starts_with("device,") || line.trim().is_empty() {
                continue;
            } else {
                let f: Vec<&str> = line.split(',').collect();
                let [d, m, n, k, mean, std] = f[..] else { return Err(err("expected 6 fields")) };
                let p = |v: &str| v.trim().parse::<usize>().map_err(|_| err("bad integer"));
                let q = |v: &str| v.trim().parse::<f64>().map_err(|_| err("bad number"));
                let s = Sample { device: p(d)?, shape: [p(m)?, p(n)?, p(k)?], mean: q(mean)?, std: q(std)? };
                if s.device > 1 || !s.mean.is_finite() || s.mean <= 0.0 || !s.std.is_finite() || s.std < 0.0 {
                    return Err(err("value out of range"));
                }
                r.samples.push(s);
            }
        }
        if r.cpu_peak <= 0.0
            || r.samples.iter().filter(|s| s.device == 0).count() < 2
            || r.samples.iter().filter(|s| s.device == 1).count() < 2
        {
            return Err("a recording needs cpu_peak and at least two samples per device".into());
        }
        Ok(r)
    }
}

/// The ground truth of the replay: expected seconds per device from the recording (log-log
/// interpolation over flops), and per-call noise with the recorded relative spread.
struct Truth {
    curves: [Vec<(f64, f64)>; 2],
    sigma: [f64; 2],
    /// Per-device slowdown factor (T3's drift).
    factor: [f64; 2],
}

impl Truth {
    fn new(r: &Recording) -> Self {
        let curve = |d: usize| {
            let mut v: Vec<(f64, f64)> = r
                .samples
                .iter()
                .filter(|s| s.device == d)
                .map(|s| (OpDesc::gemm(s.shape[0], s.shape[1], s.shape[2]).flops.ln(), s.mean.ln()))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let sigma = |d: usize| {
            let mut rel: Vec<f64> = r.samples.iter().filter(|s| s.device == d).map(|s| s.std / s.mean).collect();
            rel.sort_by(f64::total_cmp);
            rel.get(rel.len() / 2).copied().unwrap_or(0.05).clamp(0.01, 0.5)
        };
        Truth { curves: [curve(0), curve(1)], sigma: [sigma(0), sigma(1)], factor: [1.0, 1.0] }
    }

    fn expected(&self, d: usize, op: &OpDesc) -> f64 {
        let c = &self.curves[d];
        let x = op.flops.ln();
        let i = c.partition_point(|p| p.0 < x).clamp(1, c.len() - 1);
        let (a, b) = (c[i - 1], c[i]);
        let t = if b.0 > a.0 { (x - a.0) / (b.0 - a.0) } else { 0.0 };
        // Beyond the recorded range: the end segment's slope, but never faster than linear in flops.
        let y = a.1 + t * (b.1 - a.1);
        let y = if x > c[c.len() - 1].0 { y.max(c[c.len() - 1].1 + (x - c[c.len() - 1].0)) } else { y };
        y.exp() * self.factor[d]
    }

    /// The realised runtime of call `call` on device `d` (deterministic in the call and the seed,
    /// shared by all policies).
    fn realised(&self, d: usize, op: &OpDesc, call: u64, seed: u64) -> f64 {
        let draw = mix(seed).wrapping_add(call.wrapping_mul(2)).wrapping_add(d as u64);
        self.expected(d, op) * (self.sigma[d] * normal(draw)).exp()
    }
}

/// A trace: a sequence of GEMM shapes, and where the drift (if any) starts.
struct Trace {
    name: &'static str,
    calls: Vec<[usize; 3]>,
    drift_at: Option<usize>,
    /// Calls from here on count for first-pick accuracy (T4: the unseen shapes).
    first_pick_from: usize,
    /// Calls from here on, on shapes not run before, are held out (`None`: no held-out calls).
    heldout_from: Option<usize>,
}

/// A GEMM shape of size about 2^[lo, hi) with each dimension within 2x of it: the recordings are
/// of square shapes, whose bytes grow with their flops, so the replay keeps that relation (a truth
/// over flops alone would misstate the transfer cost of very skinny shapes).
fn shape(seed: u64, lo: f64, hi: f64) -> [usize; 3] {
    let size = lo + (hi - lo) * uniform(seed);
    let dim = |s: u64| (size + uniform(s) - 0.5).exp2().round().max(1.0) as usize;
    [dim(seed ^ 1), dim(seed ^ 2), dim(seed ^ 3)]
}

/// The four traces of seed `seed` (seed 0 draws the shapes the single-seed replay always used).
fn traces(max_log2: f64, seed: u64) -> Vec<Trace> {
    let base = mix(seed ^ 0x5EED) * u64::from(seed != 0);
    let shape = |i: u64, lo: f64, hi: f64| shape(base ^ i, lo, hi);
    let network: Vec<[usize; 3]> = (0..12).map(|i| shape(100 + i, 4.0, max_log2)).collect();
    let t1: Vec<[usize; 3]> = (0..2000).map(|i| network[i % network.len()]).collect();
    let tail: Vec<[usize; 3]> = (0..2000).map(|i| shape(1000 + i as u64, 3.0, max_log2)).collect();
    // Zipf(1): shape i with weight 1/(i+1), sampled by inverse CDF.
    let h: f64 = (1..=tail.len()).map(|i| 1.0 / i as f64).sum();
    let t2: Vec<[usize; 3]> = (0..20_000u64)
        .map(|c| {
            let mut u = uniform(base ^ (50_000 + c)) * h;
            let mut i = 0;
            while i + 1 < tail.len() && u > 1.0 / (i + 1) as f64 {
                u -= 1.0 / (i + 1) as f64;
                i += 1;
            }
            tail[i]
        })
        .collect();
    let mid: Vec<[usize; 3]> = (0..40).map(|i| shape(7000 + i, 5.0, max_log2)).collect();
    let t3: Vec<[usize; 3]> = (0..4000).map(|i| mid[i % mid.len()]).collect();
    // Each warm-up shape recurs 20 times: a per-shape history (10 samples per device, the first
    // one dropped) can finish calibrating both devices.
    let warm: Vec<[usize; 3]> = (0..100).map(|i| shape(9000 + i, 3.0, max_log2)).collect();
    let unseen: Vec<[usize; 3]> = (0..300).map(|i| shape(20_000 + i, 3.0, max_log2)).collect();
    let t4: Vec<[usize; 3]> = (0..2000).map(|i| warm[i % warm.len()]).chain(unseen).collect();
    vec![
        Trace { name: "T1", calls: t1, drift_at: None, first_pick_from: 0, heldout_from: None },
        Trace { name: "T2", calls: t2, drift_at: None, first_pick_from: 0, heldout_from: Some(2000) },
        Trace { name: "T3", calls: t3, drift_at: Some(2000), first_pick_from: 0, heldout_from: None },
        Trace { name: "T4", calls: t4, drift_at: None, first_pick_from: 2000, heldout_from: Some(2000) },
    ]
}

/// One policy's result on one trace, over every seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Trace name.
    pub trace: String,
    /// Policy name.
    pub policy: String,
    /// Total time over the oracle's, in percent above it (decision overhead included): the mean
    /// over seeds.
    pub regret_pct_mean: f64,
    /// The best seed's regret.
    pub regret_pct_min: f64,
    /// The worst seed's regret.
    pub regret_pct_max: f64,
    /// Share of first occurrences of a shape sent to the best device (mean over seeds).
    pub first_pick_accuracy: f64,
    /// Share of held-out calls sent to the best device (mean over seeds; `None` where the trace
    /// holds nothing out).
    pub pick_accuracy_heldout: Option<f64>,
    /// Median |predicted - measured| / measured on held-out calls, percent, for the device picked
    /// (mean over seeds; `None` where the trace holds nothing out or the policy cannot predict
    /// every held-out call).
    pub median_pred_error_pct: Option<f64>,
    /// T3: calls after the drift until 50 consecutive calls agree with the oracle (mean over
    /// seeds; 0 elsewhere).
    pub calls_to_converge: f64,
    /// 99th percentile of the decision's wall time, ns (the largest over seeds).
    pub decision_ns_p99: f64,
}

struct Fixed(&'static str, fn(&OpDesc) -> usize);
impl Policy for Fixed {
    fn name(&self) -> &'static str {
        self.0
    }
    fn pick(&mut self, op: &OpDesc, _: [usize; 3], _: u64) -> usize {
        (self.1)(op)
    }
}

/// Sparkle's juggler, with the same priors `sparkle demo` uses.
struct Sparkle(Juggler<FakeClock>);
impl Sparkle {
    fn new(r: &Recording) -> Self {
        let mut j = Juggler::new(FakeClock::default());
        j.add_device(DeviceId::Cpu, Prior::cpu(r.cpu_peak), false);
        let gpu = if r.gpu_is_discrete { Prior::GPU } else { Prior::CPU_TYPE_GPU };
        j.add_device(DeviceId::Vulkan(0), gpu, true);
        Sparkle(j)
    }
    fn id(d: usize) -> DeviceId {
        if d == CPU {
            DeviceId::Cpu
        } else {
            DeviceId::Vulkan(0)
        }
    }
}
impl Policy for Sparkle {
    fn name(&self) -> &'static str {
        "sparkle"
    }
    fn pick(&mut self, op: &OpDesc, _: [usize; 3], _: u64) -> usize {
        match self.0.decide(op, false).map(|d| d.device) {
            Some(DeviceId::Cpu) | None => 0,
            Some(_) => 1,
        }
    }
    fn predict(&self, op: &OpDesc, _: [usize; 3], d: usize) -> Option<f64> {
        self.0.predict_on(Self::id(d), op, false)
    }
    fn learn(&mut self, op: &OpDesc, _: [usize; 3], d: usize, t: f64) {
        self.0.record(Self::id(d), op, false, t, false);
    }
}

/// What one policy did on one trace of one seed.
struct Run {
    total: f64,
    picks: Vec<usize>,
    /// Predicted seconds for the picked device (NaN where the policy had none).
    predicted: Vec<f64>,
    realised: Vec<f64>,
    decision_ns: Vec<f64>,
}

fn replay(r: &Recording, trace: &Trace, seed: u64, policy: &mut dyn Policy) -> Run {
    let mut truth = Truth::new(r);
    let n = trace.calls.len();
    let mut run = Run {
        total: 0.0,
        picks: Vec::with_capacity(n),
        predicted: Vec::with_capacity(n),
        realised: Vec::with_capacity(n),
        decision_ns: Vec::with_capacity(n),
    };
    for (i, &s) in trace.calls.iter().enumerate() {
        if trace.drift_at == Some(i) {
            truth.factor[GPU] = 3.0;
        }
        let op = OpDesc::gemm(s[0], s[1], s[2]);
        let t = Instant::now();
        // The policy's own draws (epsilon-greedy's) differ per seed too.
        let d = policy.pick(&op, s, mix(seed).wrapping_add(i as u64));
        let ns = t.elapsed().as_nanos() as f64;
        run.predicted.push(policy.predict(&op, s, d).unwrap_or(f64::NAN));
        let seconds = truth.realised(d, &op, i as u64, seed);
        policy.learn(&op, s, d, seconds);
        run.total += seconds + ns * 1e-9;
        run.picks.push(d);
        run.realised.push(seconds);
        run.decision_ns.push(ns);
    }
    run
}

/// The policies of the replay (the oracle is computed, not run).
fn policies(r: &Recording) -> Vec<Box<dyn Policy>> {
    vec![
        Box::new(Fixed("always-cpu", |_| CPU)),
        Box::new(Fixed("always-gpu", |_| GPU)),
        Box::new(Fixed("static-1e8", |op| if op.flops > 1e8 { GPU } else { CPU })),
        Box::new(StarPuDmda::new(false)),
        Box::new(StarPuDmda::new(true)),
        Box::new(EpsilonGreedy::default()),
        Box::new(Sparkle::new(r)),
    ]
}

/// One seed's metrics of one policy on one trace.
struct SeedResult {
    regret_pct: f64,
    first_pick_accuracy: f64,
    pick_accuracy_heldout: Option<f64>,
    median_pred_error_pct: Option<f64>,
    calls_to_converge: usize,
    decision_ns_p99: f64,
}

fn score(trace: &Trace, best: &[usize], oracle_total: f64, run: &mut Run) -> SeedResult {
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut first_ok) = (0usize, 0usize);
    let (mut held, mut held_ok, mut errors) = (0usize, 0usize, Vec::new());
    for (i, s) in trace.calls.iter().enumerate() {
        let new = seen.insert(*s);
        if new && i >= trace.first_pick_from {
            first += 1;
            first_ok += usize::from(run.picks[i] == best[i]);
        }
        if new && trace.heldout_from.is_some_and(|from| i >= from) {
            held += 1;
            held_ok += usize::from(run.picks[i] == best[i]);
            if run.predicted[i].is_finite() {
                errors.push(100.0 * (run.predicted[i] - run.realised[i]).abs() / run.realised[i]);
            }
        }
    }
    let converge = trace.drift_at.map_or(0, |at| {
        let agree: Vec<bool> = (at..run.picks.len()).map(|i| run.picks[i] == best[i]).collect();
        (0..agree.len()).find(|&i| agree[i..].iter().take(50).filter(|&&a| a).count() >= 50).unwrap_or(agree.len())
    });
    errors.sort_by(f64::total_cmp);
    run.decision_ns.sort_by(f64::total_cmp);
    let ns = &run.decision_ns;
    SeedResult {
        regret_pct: 100.0 * (run.total / oracle_total - 1.0),
        first_pick_accuracy: if first == 0 { 1.0 } else { first_ok as f64 / first as f64 },
        pick_accuracy_heldout: (held > 0).then(|| held_ok as f64 / held as f64),
        // Every held-out call needs a prediction: a policy that cannot predict some has none.
        median_pred_error_pct: (held > 0 && errors.len() == held).then(|| errors[errors.len() / 2]),
        calls_to_converge: converge,
        decision_ns_p99: ns.get(ns.len() * 99 / 100).copied().unwrap_or(0.0),
    }
}

/// The seeds' results of one (trace, policy) folded into an [`Outcome`].
fn fold(trace: &str, policy: &str, seeds: &[SeedResult]) -> Outcome {
    let n = seeds.len().max(1) as f64;
    let mean = |f: &dyn Fn(&SeedResult) -> f64| seeds.iter().map(f).sum::<f64>() / n;
    let mean_opt = |f: &dyn Fn(&SeedResult) -> Option<f64>| {
        let v: Option<Vec<f64>> = seeds.iter().map(f).collect();
        v.map(|v| v.iter().sum::<f64>() / n)
    };
    Outcome {
        trace: trace.into(),
        policy: policy.into(),
        regret_pct_mean: mean(&|s| s.regret_pct),
        regret_pct_min: seeds.iter().map(|s| s.regret_pct).fold(f64::INFINITY, f64::min),
        regret_pct_max: seeds.iter().map(|s| s.regret_pct).fold(f64::NEG_INFINITY, f64::max),
        first_pick_accuracy: mean(&|s| s.first_pick_accuracy),
        pick_accuracy_heldout: mean_opt(&|s| s.pick_accuracy_heldout),
        median_pred_error_pct: mean_opt(&|s| s.median_pred_error_pct),
        calls_to_converge: mean(&|s| s.calls_to_converge as f64),
        decision_ns_p99: seeds.iter().map(|s| s.decision_ns_p99).fold(0.0, f64::max),
    }
}

/// Runs every policy on every trace (`only`: one trace by name) for seeds `0..seeds` (at least
/// one), and folds each (trace, policy) over the seeds. The oracle's row is exact (0% regret).
pub fn run(r: &Recording, only: Option<&str>, seeds: u64) -> Vec<Outcome> {
    let max_log2 =
        r.samples.iter().map(|s| (s.shape.iter().product::<usize>() as f64).log2() / 3.0).fold(0.0, f64::max);
    let names: Vec<&'static str> = policies(r).iter().map(|p| p.name()).collect();
    // Per trace, per policy, one result per seed.
    let mut results: Vec<(&'static str, Vec<Vec<SeedResult>>)> = Vec::new();
    for seed in 0..seeds.max(1) {
        for trace in traces(max_log2.max(6.0), seed) {
            if only.is_some_and(|o| o != trace.name) {
                continue;
            }
            // The oracle: the device with the lower expected time (after the drift, the drifted one).
            let mut truth = Truth::new(r);
            let mut best = Vec::with_capacity(trace.calls.len());
            let mut oracle_total = 0.0;
            for (i, &s) in trace.calls.iter().enumerate() {
                if trace.drift_at == Some(i) {
                    truth.factor[GPU] = 3.0;
                }
                let op = OpDesc::gemm(s[0], s[1], s[2]);
                let d = if truth.expected(GPU, &op) < truth.expected(CPU, &op) { GPU } else { CPU };
                oracle_total += truth.realised(d, &op, i as u64, seed);
                best.push(d);
            }
            let k = match results.iter().position(|(n, _)| *n == trace.name) {
                Some(k) => k,
                None => {
                    results.push((trace.name, names.iter().map(|_| Vec::new()).collect()));
                    results.len() - 1
                }
            };
            for (p, policy) in policies(r).iter_mut().enumerate() {
                let mut run = replay(r, &trace, seed, policy.as_mut());
                results[k].1[p].push(score(&trace, &best, oracle_total, &mut run));
            }
        }
    }
    let mut out = Vec::new();
    for (trace, per_policy) in &results {
        out.push(Outcome {
            trace: trace.to_string(),
            policy: "oracle".into(),
            regret_pct_mean: 0.0,
            regret_pct_min: 0.0,
            regret_pct_max: 0.0,
            first_pick_accuracy: 1.0,
            pick_accuracy_heldout: None,
            median_pred_error_pct: None,
            calls_to_converge: 0.0,
            decision_ns_p99: 0.0,
        });
        for (name, seeds) in names.iter().zip(per_policy) {
            out.push(fold(trace, name, seeds));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic machine: CPU 100 GFLOPS with 2 us overhead; GPU 10 TFLOPS with 60 us of
    /// launch and copies.
    fn machine() -> Recording {
        let mut samples = Vec::new();
        for n in [16usize, 32, 64, 128, 256, 512, 1024, 2048] {
            let f = OpDesc::gemm(n, n, n).flops;
            samples.push(Sample { device: 0, shape: [n, n, n], mean: 2e-6 + f / 1e11, std: 0.03 * (2e-6 + f / 1e11) });
            samples.push(Sample {
                device: 1,
                shape: [n, n, n],
                mean: 60e-6 + f / 1e13,
                std: 0.05 * (60e-6 + f / 1e13),
            });
        }
        Recording { machine: "synthetic".into(), cpu_peak: 1.2e11, gpu_is_discrete: true, samples }
    }

    #[test]
    fn csv_round_trip_and_rejections() {
        let r = machine();
        let back = Recording::from_csv(&r.to_csv()).unwrap();
        assert_eq!(back.samples, r.samples);
        assert!(Recording::from_csv("device,m,n,k,mean_s,std_s\n0,1,1,1,-1,0\n").is_err());
        assert!(Recording::from_csv("garbage").is_err());
    }

    #[test]
    fn the_juggler_beats_both_starpu_ports_and_is_close_to_the_oracle() {
        let out = run(&machine(), None, 2);
        let get = |t: &str, p: &str| out.iter().find(|o| o.trace == t && o.policy == p).unwrap().clone();
        for t in ["T1", "T2", "T3", "T4"] {
            let s = get(t, "sparkle");
            for baseline in ["starpu-dmda", "starpu-dmda-nl"] {
                let b = get(t, baseline);
                assert!(s.regret_pct_mean < b.regret_pct_mean, "{t}: sparkle {s:?} vs {b:?}");
            }
            assert!(s.regret_pct_max < 5.0, "{t}: {s:?}");
            assert!(s.regret_pct_min <= s.regret_pct_mean && s.regret_pct_mean <= s.regret_pct_max);
        }
        let t4 = get("T4", "sparkle");
        assert!(t4.first_pick_accuracy >= 0.9 && t4.pick_accuracy_heldout.unwrap() >= 0.9, "{t4:?}");
        assert!(t4.median_pred_error_pct.unwrap() < 25.0, "{t4:?}");
        // The history model cannot predict a shape it has not calibrated.
        assert_eq!(get("T4", "starpu-dmda").median_pred_error_pct, None);
        assert_eq!(get("T1", "sparkle").pick_accuracy_heldout, None, "T1 holds nothing out");
    }

    #[test]
    fn seeds_change_the_trace_and_seed_zero_is_the_published_one() {
        let (a, b) = (traces(10.0, 0), traces(10.0, 1));
        assert_ne!(a[1].calls[..50], b[1].calls[..50]);
        assert_eq!(a[0].calls[0], shape(100, 4.0, 10.0));
        // T4's warm-up shapes recur 20 times each.
        let first = a[3].calls[0];
        assert_eq!(a[3].calls[..2000].iter().filter(|&&s| s == first).count(), 20);
    }
}
