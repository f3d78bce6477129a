//! Op features and the per-device cost model.
//!
//! Predicted time = launch overhead + flops / (peak x efficiency(size)) + transfer bytes /
//! bandwidth. The efficiency curve starts from a prior (`flops / (flops + half)`: small work runs
//! far below peak) and is learned per size bucket (powers of two of the flop count), in log space,
//! from measured runtimes, in one model per op kind, variant and shape band ([`OpDesc::band`]: how far
//! below a square GEMM's flops per byte the op falls; a matrix-vector product runs far slower than
//! a square GEMM of the same flops). Unseen sizes interpolate between learned buckets, so shapes
//! never seen are still predicted; a band not yet measured borrows its nearest measured band.
//! Each update moves a bucket by a clamped residual (a 100x spike moves it by at most a factor
//! 4^alpha) with a learning rate that never falls below `MIN_RATE`, so drift is followed; a
//! bucket's first run, often slowed by one-time costs, is replaced by a much faster second one
//! rather than averaged with it.

use sparkle_core::{Conv2d, TensorLayout, WeightLayout};

/// Which op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// GEMM.
    Gemm,
    /// conv2d (any path).
    Conv2d,
}

/// Op variants, each its own code path on every backend (so its own cost model): conv2d's by
/// geometry, GEMM's by input type.
pub mod variant {
    /// Any other conv2d (7x7, strided 3x3, grouped or dilated 3x3).
    pub const DENSE: u8 = 0;
    /// 1x1, any stride or grouping (a GEMM over pixels).
    pub const POINTWISE: u8 = 1;
    /// Depthwise (one filter per channel: memory-bound).
    pub const DEPTHWISE: u8 = 2;
    /// 3x3, stride 1, no dilation, not grouped (Winograd on the GPU).
    pub const K3S1: u8 = 3;
    /// GEMM on f16 inputs (f32 sums; tensor cores where a GPU has them).
    pub const F16: u8 = 4;
    /// GEMM on bf16 inputs (f32 sums).
    pub const BF16: u8 = 5;
    /// conv2d on f16 input and weights: this plus the geometry's variant (`CONV_F16 + K3S1`...).
    pub const CONV_F16: u8 = 6;
    /// conv2d on bf16 input and weights, as [`CONV_F16`].
    pub const CONV_BF16: u8 = 10;
    /// f32 GEMM at `high` precision ([`sparkle_core::Precision::High`]: three f16 products per
    /// f32 product on a GPU's tensor cores).
    pub const GEMM_HIGH: u8 = 14;
    /// f32 GEMM at `medium` precision (one f16 product).
    pub const GEMM_MEDIUM: u8 = 15;
    /// GEMM on int8 operands (u8/i8, exact i32 sums; tensor cores where a GPU has them).
    pub const INT8: u8 = 16;
    /// conv2d on int8 input and weights, as [`CONV_F16`].
    pub const CONV_INT8: u8 = 17;
    /// Names in the model file, by variant.
    pub const NAMES: [&str; 21] = [
        "",
        "1x1",
        "dw",
        "3x3",
        "f16",
        "bf16",
        "dense-f16",
        "1x1-f16",
        "dw-f16",
        "3x3-f16",
        "dense-bf16",
        "1x1-bf16",
        "dw-bf16",
        "3x3-bf16",
        "high",
        "medium",
        "int8",
        "dense-int8",
        "1x1-int8",
        "dw-int8",
        "3x3-int8",
    ];
    /// Whether `variant` is one of `kind`'s (GEMM: f32 at each precision, f16, bf16, int8; conv2d: the
    /// four geometries, each in f32, f16, bf16 and int8).
    pub fn belongs(kind: super::OpKind, variant: u8) -> bool {
        match kind {
            super::OpKind::Gemm => matches!(variant, 0 | F16 | BF16 | GEMM_HIGH | GEMM_MEDIUM | INT8),
            super::OpKind::Conv2d => {
                variant <= K3S1
                    || (CONV_F16..CONV_BF16 + 4).contains(&variant)
                    || (CONV_INT8..CONV_INT8 + 4).contains(&variant)
            }
        }
    }
}

/// Which cost model an op is predicted with: its kind, its variant (geometry and input type) and its
/// shape band ([`OpDesc::band`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelKey {
    /// The op.
    pub kind: OpKind,
    /// Its variant ([`variant`]).
    pub variant: u8,
    /// Its shape band.
    pub band: u8,
}

/// What a cost model needs to know about one op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpDesc {
    /// The op.
    pub kind: OpKind,
    /// Its variant ([`variant`]: 0 for an f32 GEMM and a dense f32 conv2d).
    pub variant: u8,
    /// Floating-point operations (2 per multiply-add).
    pub flops: f64,
    /// Bytes of inputs and outputs (what must cross to a device that does not hold them).
    pub bytes: f64,
    /// Its exact shape, hashed: ops of equal shape (and, but for hash collisions, only those)
    /// share it, so what one run of a shape showed applies to the next.
    pub footprint: u64,
}

impl OpDesc {
    /// A GEMM `m x n x k` reading A, B (and C) and writing C.
    pub fn gemm(m: usize, n: usize, k: usize) -> Self {
        let footprint = hash([0, m, n, k].map(|v| v as u64));
        let (m, n, k) = (m as f64, n as f64, k as f64);
        Self { kind: OpKind::Gemm, variant: 0, flops: 2.0 * m * n * k, bytes: 4.0 * (m * k + k * n + m * n), footprint }
    }
    /// An f32 GEMM `m x n x k` at `precision`: [`OpDesc::gemm`] for `Highest`, else modelled
    /// apart ([`variant::GEMM_HIGH`], [`variant::GEMM_MEDIUM`]: a GPU's tensor cores run it).
    pub fn gemm_at(m: usize, n: usize, k: usize, precision: sparkle_core::Precision) -> Self {
        let variant = match precision {
            sparkle_core::Precision::Highest => return Self::gemm(m, n, k),
            sparkle_core::Precision::High => variant::GEMM_HIGH,
            sparkle_core::Precision::Medium => variant::GEMM_MEDIUM,
        };
        let footprint = hash([u64::from(variant) << 8, m as u64, n as u64, k as u64]);
        Self { variant, footprint, ..Self::gemm(m, n, k) }
    }
    /// A GEMM `m x n x k` on half inputs ([`variant::F16`] or [`variant::BF16`]): two-byte A and
    /// B, an f32 C.
    pub fn gemm_half(m: usize, n: usize, k: usize, variant: u8) -> Self {
        let footprint = hash([u64::from(variant) << 8, m as u64, n as u64, k as u64]);
        let (m, n, k) = (m as f64, n as f64, k as f64);
        Self {
            kind: OpKind::Gemm,
            variant,
            flops: 2.0 * m * n * k,
            bytes: 2.0 * (m * k + k * n) + 4.0 * m * n,
            footprint,
        }
    }
    /// An int8 GEMM `m x n x k` ([`variant::INT8`]): one-byte A and B, a C of `out_bytes` per
    /// element (1, or 4 for the i32 accumulator).
    pub fn qgemm(m: usize, n: usize, k: usize, out_bytes: usize) -> Self {
        let footprint = hash([u64::from(variant::INT8) << 8 | out_bytes as u64, m as u64, n as u64, k as u64]);
        let (m, n, k) = (m as f64, n as f64, k as f64);
        Self {
            kind: OpKind::Gemm,
            variant: variant::INT8,
            flops: 2.0 * m * n * k,
            bytes: m * k + k * n + out_bytes as f64 * m * n,
            footprint,
        }
    }
    /// A conv2d on int8 input and weights ([`variant::CONV_INT8`] plus the geometry's variant):
    /// one-byte input and weights, an output of `out_bytes` per element.
    pub fn qconv2d(g: &Conv2d, out_bytes: usize) -> Self {
        let f32_op = Self::conv2d(g);
        let bytes = (g.input_len() + g.weight_len()) as f64 + (out_bytes * g.output_len()) as f64;
        let footprint = hash([f32_op.footprint, u64::from(variant::CONV_INT8), out_bytes as u64]);
        Self { variant: variant::CONV_INT8 + f32_op.variant, bytes, footprint, ..f32_op }
    }
    /// A conv2d on half input and weights (`base` [`variant::CONV_F16`] or
    /// [`variant::CONV_BF16`]): two-byte input and weights, an f32 output.
    pub fn conv2d_half(g: &Conv2d, base: u8) -> Self {
        let f32_op = Self::conv2d(g);
        let bytes = 2.0 * (g.input_len() + g.weight_len()) as f64 + 4.0 * g.output_len() as f64;
        let footprint = hash([f32_op.footprint, u64::from(base)]);
        Self { variant: base + f32_op.variant, bytes, footprint, ..f32_op }
    }
    /// A conv2d.
    pub fn conv2d(g: &Conv2d) -> Self {
        let p = g.params();
        let bytes = 4.0 * (g.input_len() + g.weight_len() + g.output_len()) as f64;
        let variant = if p.groups > 1 && p.groups == p.c && p.groups == p.k {
            variant::DEPTHWISE
        } else if p.r == 1 && p.s == 1 {
            variant::POINTWISE
        } else if p.r == 3 && p.s == 3 && p.stride == [1, 1] && p.dilation == [1, 1] && p.groups == 1 {
            variant::K3S1
        } else {
            variant::DENSE
        };
        let dims = [p.n, p.c, p.h, p.w, p.k, p.r, p.s, p.stride[0], p.stride[1], p.dilation[0], p.dilation[1]];
        let layouts = [usize::from(p.layout == TensorLayout::Nhwc), usize::from(p.weight_layout == WeightLayout::Krsc)];
        let rest = [p.pad.top, p.pad.left, p.pad.bottom, p.pad.right, p.groups, layouts[0], layouts[1]];
        let footprint = hash(std::iter::once(1).chain(dims).chain(rest).map(|v| v as u64));
        Self { kind: OpKind::Conv2d, variant, flops: g.flops(), bytes, footprint }
    }

    /// Its shape band, `0..BANDS`: how many factors of 2^1.5 its arithmetic intensity (flops per
    /// byte) falls below that of the square GEMM with the same flops. Square GEMMs and dense
    /// convolutions are band 0; a GEMM with M = 32 against 1024 x 1024 is band 1, M = 8 against
    /// 1024 x 1024 band 2, a matrix-vector product of 4096 band 3. For one aspect ratio the band
    /// grows with the size (the square GEMM's intensity grows, a skinny one's does not): MobileNet's
    /// depthwise 3x3 at 112 is band 2 at batch 1 and 3 at batch 32. Ops of one size run at very
    /// different speeds across bands (memory-bound or not), so each band has its own cost model.
    pub fn band(&self) -> u8 {
        // The square GEMM of these flops: n = (flops / 2)^(1/3), 12 n^2 bytes, n / 6 flops a byte.
        let square = (self.flops / 2.0).cbrt() / 6.0;
        let q = self.flops / self.bytes / square;
        if q.is_finite() && q > 0.0 {
            ((-q.log2() / 1.5).floor().max(0.0) as u8).min(BANDS - 1)
        } else {
            0
        }
    }

    /// The cost model it is predicted with.
    pub fn model_key(&self) -> ModelKey {
        // A hand-built description with another kind's variant gets the kind's first.
        let variant = if variant::belongs(self.kind, self.variant) { self.variant } else { 0 };
        ModelKey { kind: self.kind, variant, band: self.band() }
    }
}

/// FNV-1a over the words' little-endian bytes (no allocation: it runs in every decision).
fn hash(words: impl IntoIterator<Item = u64>) -> u64 {
    words
        .into_iter()
        .flat_map(u64::to_le_bytes)
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Shape bands ([`OpDesc::band`]).
pub const BANDS: u8 = 4;

/// What is assumed about a device before anything was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Seconds of fixed cost per op (dispatch, synchronisation).
    pub overhead: f64,
    /// Peak flop rate, flop/s.
    pub peak: f64,
    /// Flops at which the device reaches half its peak.
    pub half: f64,
    /// Host <-> device bytes per second; infinite for the CPU.
    pub bandwidth: f64,
}

impl Prior {
    /// The CPU path: `peak` flop/s (its measured FMA peak), a few microseconds per call, no
    /// copies.
    pub fn cpu(peak: f64) -> Self {
        Prior { overhead: 5e-6, peak, half: 2e6, bandwidth: f64::INFINITY }
    }
    /// A discrete GPU: fast, but far away (a launch and copies over the bus).
    pub const GPU: Prior = Prior { overhead: 50e-6, peak: 2e13, half: 1e9, bandwidth: 1.2e10 };
    /// A CPU-type Vulkan device (Mesa's lavapipe): slow, and its "copies" are memcpys.
    pub const CPU_TYPE_GPU: Prior = Prior { overhead: 300e-6, peak: 5e9, half: 1e8, bandwidth: 5e9 };
}

/// Size buckets: one per power of two of the flop count.
pub const BUCKETS: usize = 64;
/// Lowest learning rate: the model keeps following drift after many samples.
pub const MIN_RATE: f64 = 0.1;
/// Largest step of one update, as a factor on efficiency (robustness to spikes).
pub const MAX_STEP: f64 = 4.0;
/// A miss by more than this factor counts towards a drift streak...
pub const DRIFT_RESIDUAL: f64 = 1.3;
/// ...and this many in a row, in the same direction, reset the bucket's confidence (3 took 542
/// calls to follow the replay's T3 drift on the H200 recording through the handle, 0.30x the
/// faithful StarPU's; 2 takes 233, 0.13x, and a single spike still does not count).
pub const DRIFT_STREAK: u8 = 2;

/// A drift streak after one more run: 0 after an ordinary run; after a large miss, one longer if
/// it has the streak's sign (`up`), else a new streak of one.
pub(crate) fn streak_after(streak: i8, large: bool, up: bool) -> i8 {
    match (large, up) {
        (false, _) => 0,
        (true, up) if streak != 0 && (streak > 0) == up => streak.saturating_add(if up { 1 } else { -1 }),
        (true, true) => 1,
        (true, false) => -1,
    }
}

/// One bucket's learned state.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bucket {
    /// ln(efficiency) learned for this size.
    pub log_eff: f64,
    /// Samples behind it (capped): 0 means never measured.
    pub weight: f64,
    /// Consecutive large residuals of the same sign (positive: faster than predicted).
    pub streak: i8,
}

impl Bucket {
    /// Moves a learned log-scale (a fixed cost's, a bus's) towards `observed`: a step of at most
    /// MAX_STEP, at the buckets' rate, never below MIN_RATE.
    pub(crate) fn follow(&mut self, observed: f64) {
        let residual = (observed - self.log_eff).clamp(-MAX_STEP.ln(), MAX_STEP.ln());
        self.log_eff += (1.0 / (self.weight + 1.0)).max(MIN_RATE) * residual;
        self.weight = (self.weight + 1.0).min(50.0);
    }

    /// `theirs` adopted from a saved model: as saved when it is this machine's, else as a weak
    /// prior (one sample at most); the drift streak starts afresh.
    pub(crate) fn adopted(theirs: Bucket, same_machine: bool) -> Bucket {
        let weight = if same_machine { theirs.weight } else { theirs.weight.min(1.0) };
        Bucket { log_eff: theirs.log_eff, weight, streak: 0 }
    }
}

/// The cost model of one (device, op kind): a fixed cost per op (the prior's overhead, scaled by
/// what was learned) plus compute at a learned efficiency per size bucket, plus the copies.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    /// The prior.
    pub prior: Prior,
    /// Learned buckets.
    pub buckets: Vec<Bucket>,
    /// The learned fixed cost: `log_eff` holds ln(learned overhead / the prior's), learned from
    /// ops whose fixed costs dominate (a 16^3 GEMM on the CPU path costs about 1 us, not the
    /// prior's 5 us: without this every small op was predicted 2-5x too slow).
    pub overhead: Bucket,
}

fn bucket_of(flops: f64) -> usize {
    (flops.max(1.0).log2() as usize).min(BUCKETS - 1)
}

impl CostModel {
    /// A model that knows only its prior.
    pub fn new(prior: Prior) -> Self {
        Self { prior, buckets: vec![Bucket::default(); BUCKETS], overhead: Bucket::default() }
    }

    fn prior_log_eff(&self, flops: f64) -> f64 {
        (flops / (flops + self.prior.half)).max(1e-9).ln()
    }

    /// ln(efficiency) at `flops`: the bucket if learned, else interpolated between the nearest
    /// learned buckets below and above (in log-flops), else extrapolated from the nearest one by
    /// the prior's slope, else the prior.
    pub fn log_eff(&self, flops: f64) -> f64 {
        let b = bucket_of(flops);
        if self.buckets[b].weight > 0.0 {
            return self.buckets[b].log_eff;
        }
        let below = (0..b).rev().find(|&i| self.buckets[i].weight > 0.0);
        let above = (b + 1..BUCKETS).find(|&i| self.buckets[i].weight > 0.0);
        let at = |i: usize| 2f64.powi(i as i32);
        // Learned value relative to the prior at bucket i, carried over to `flops`.
        let shifted = |i: usize| self.buckets[i].log_eff - self.prior_log_eff(at(i)) + self.prior_log_eff(flops);
        match (below, above) {
            (Some(lo), Some(hi)) => {
                let t = (b - lo) as f64 / (hi - lo) as f64;
                (1.0 - t) * shifted(lo) + t * shifted(hi)
            }
            (Some(i), None) | (None, Some(i)) => shifted(i),
            (None, None) => self.prior_log_eff(flops),
        }
        .min(0.0)
    }

    /// Seconds of compute alone.
    pub fn compute_time(&self, op: &OpDesc) -> f64 {
        op.flops / (self.prior.peak * self.log_eff(op.flops).exp())
    }

    /// Seconds of fixed cost per op, as learned.
    pub fn overhead(&self) -> f64 {
        self.prior.overhead * self.overhead.log_eff.exp()
    }

    /// Predicted seconds for `op`, `transfer` seconds of copies included (0 when resident).
    pub fn predict(&self, op: &OpDesc, transfer: f64) -> f64 {
        self.overhead() + self.compute_time(op) + transfer
    }

    /// Samples behind the prediction at this size (0: a guess).
    pub fn confidence(&self, op: &OpDesc) -> f64 {
        self.buckets[bucket_of(op.flops)].weight
    }

    /// Learns from one measured runtime of `op` (which spent `transfer` seconds on copies).
    pub fn update(&mut self, op: &OpDesc, transfer: f64, seconds: f64) {
        if !(seconds.is_finite() && seconds > 0.0 && op.flops > 0.0) {
            return;
        }
        // Where the fixed cost is most of the prediction (copies and compute small beside it),
        // the measurement is mostly fixed cost: learn its scale (in log, at the buckets' rate; a
        // step at most MAX_STEP).
        let compute_predicted = self.compute_time(op);
        if compute_predicted + transfer < 0.5 * self.overhead() {
            let observed = ((seconds - transfer - compute_predicted).max(0.05 * seconds) / self.prior.overhead).ln();
            self.overhead.follow(observed);
        }
        let fixed = self.overhead() + transfer;
        // What is left for compute; never less than a tenth of the measurement.
        let compute = (seconds - fixed).max(0.1 * seconds);
        let observed = (op.flops / (self.prior.peak * compute)).min(1.0).ln();
        let b = bucket_of(op.flops);
        let predicted = self.log_eff(op.flops);
        let residual = (observed - predicted).clamp(-MAX_STEP.ln(), MAX_STEP.ln());
        let bucket = &mut self.buckets[b];
        // Drift: DRIFT_STREAK large misses in the same direction in a row are not spikes; the bucket
        // forgets most of its history (one 100x outlier does not start a streak).
        bucket.streak = streak_after(bucket.streak, residual.abs() > DRIFT_RESIDUAL.ln(), residual > 0.0);
        if bucket.streak.unsigned_abs() >= DRIFT_STREAK {
            bucket.weight = bucket.weight.min(2.0);
        }
        // The first run at a size often pays one-time costs (first touch of fresh buffers, cold
        // caches): a second run much faster than it replaces it instead of being averaged in.
        let rate = if bucket.weight == 1.0 && residual > DRIFT_RESIDUAL.ln() {
            1.0
        } else {
            (1.0 / (bucket.weight + 1.0)).max(MIN_RATE)
        };
        bucket.log_eff = (predicted + rate * residual).min(0.0);
        bucket.weight = (bucket.weight + 1.0).min(50.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Prior = Prior { overhead: 2e-6, peak: 2e11, half: 2e6, bandwidth: f64::INFINITY };

    /// A device whose true efficiency is 0.8 * flops / (flops + 5e6).
    fn truth(op: &OpDesc) -> f64 {
        CPU.overhead + op.flops / (CPU.peak * 0.8 * op.flops / (op.flops + 5e6))
    }

    #[test]
    fn learns_and_predicts_unseen_sizes() {
        let mut m = CostModel::new(CPU);
        for n in [64usize, 128, 512, 1024] {
            for _ in 0..10 {
                let op = OpDesc::gemm(n, n, n);
                m.update(&op, 0.0, truth(&op));
            }
        }
        for n in [96usize, 256, 384, 700, 2048] {
            let op = OpDesc::gemm(n, n, n);
            let ratio = m.predict(&op, 0.0) / truth(&op);
            assert!((0.8..1.25).contains(&ratio), "n={n}: predicted/true = {ratio}");
        }
    }

    #[test]
    fn a_slow_first_run_is_soon_forgotten() {
        // A warm-up 5x slower than the device really is, then three true runs: within 25% (a plain
        // running mean stays 41% slow: a quarter of the clamped 4x step is left).
        let op = OpDesc::gemm(2048, 2048, 2048);
        let mut m = CostModel::new(CPU);
        m.update(&op, 0.0, 5.0 * truth(&op));
        for _ in 0..3 {
            m.update(&op, 0.0, truth(&op));
        }
        let ratio = m.predict(&op, 0.0) / truth(&op);
        assert!(ratio < 1.25, "{ratio}");
    }

    #[test]
    fn one_spike_barely_moves_it_and_drift_is_followed() {
        let mut m = CostModel::new(CPU);
        let op = OpDesc::gemm(256, 256, 256);
        for _ in 0..50 {
            m.update(&op, 0.0, truth(&op));
        }
        let before = m.predict(&op, 0.0);
        m.update(&op, 0.0, 100.0 * truth(&op));
        let after = m.predict(&op, 0.0);
        assert!(after / before < 1.2, "a 100x spike moved the prediction by {}", after / before);
        // The device becomes 2x slower for good: followed within a few dozen calls.
        for _ in 0..30 {
            m.update(&op, 0.0, 2.0 * truth(&op));
        }
        let ratio = m.predict(&op, 0.0) / (2.0 * truth(&op));
        assert!((0.85..1.15).contains(&ratio), "after drift: {ratio}");
    }
}
