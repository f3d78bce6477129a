//! How results are compared with the f64 oracle: one error measure and one tolerance table,
//! used by every test, fuzz target, bench and the demo.
//!
//! The error of element `i` is `|got - want| / max(1, |want|)`. A reduction of length `k` in f32
//! may lose up to about `k * eps` relative to the sum of magnitudes (the classical `gamma_k`
//! bound), so the tolerance grows linearly with `k`. An indexing bug produces errors of order 1,
//! far above any tolerance here.

/// Where a result was computed: the backends the tolerance table tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// A CPU kernel of this crate.
    Cpu,
    /// A Vulkan shader.
    Vulkan,
}

impl Backend {
    /// Every backend, each with a row per [`DType`] in [`TOLERANCES`].
    pub const ALL: [Backend; 2] = [Backend::Cpu, Backend::Vulkan];
}

/// Element type of a result's inputs and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE single precision throughout, accumulation included.
    F32,
    /// bf16 inputs (the oracle sums the same rounded inputs), f32 accumulation and output.
    Bf16,
    /// IEEE f16 inputs (the oracle sums the same rounded inputs), f32 accumulation and output.
    F16,
}

impl DType {
    /// Every element type, each with a row per [`Backend`] in [`TOLERANCES`].
    pub const ALL: [DType; 3] = [DType::F32, DType::Bf16, DType::F16];
}

/// One row of [`TOLERANCES`]: a result of a reduction of length `k` is within
/// `per_term * (k + 8) + absolute` of the oracle in [`error`]'s measure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Growth per term of the reduction, relative.
    pub per_term: f64,
    /// An absolute allowance for approximated functions.
    pub absolute: f64,
}

impl Tolerance {
    /// The bound for a reduction of length `k`.
    pub fn at(&self, k: usize) -> f64 {
        self.per_term * (k as f64 + 8.0) + self.absolute
    }
}

/// The one tolerance table, by backend and element type. Every test, fuzz target, bench and the
/// CLI's checks read it (through [`tolerance_for`]).
///
/// - CPU, f32: `4 eps` per term — the classical `gamma_k` bound with room for the fused
///   epilogue (libm's transcendental functions are within a few ulp).
/// - Vulkan, f32: twice the CPU's (shaders may contract and reorder the reduction differently),
///   plus `1e-5` absolute for the driver's approximate `exp`/`tanh` and GELU's `erf` (1.5e-7).
/// - bf16: the products of bf16 inputs are exact in f32, so only the f32 sums round: f32's rows.
///   (`vdpbf16ps` flushes denormals to zero: below `2^-126`, far under any bound here.)
/// - int8 has no row: its sums are exact integers and every backend's result must equal the
///   integer oracle's bit for bit ([`crate::quant::reference`]).
pub const TOLERANCES: &[(Backend, DType, Tolerance)] = &[
    (Backend::Cpu, DType::F32, Tolerance { per_term: 4.0 * f32::EPSILON as f64, absolute: 0.0 }),
    (Backend::Vulkan, DType::F32, Tolerance { per_term: 8.0 * f32::EPSILON as f64, absolute: 1e-5 }),
    (Backend::Cpu, DType::Bf16, Tolerance { per_term: 4.0 * f32::EPSILON as f64, absolute: 0.0 }),
    (Backend::Vulkan, DType::Bf16, Tolerance { per_term: 8.0 * f32::EPSILON as f64, absolute: 1e-5 }),
    // The CPU widens f16 exactly and runs its f32 kernels.
    (Backend::Cpu, DType::F16, Tolerance { per_term: 4.0 * f32::EPSILON as f64, absolute: 0.0 }),
    (Backend::Vulkan, DType::F16, Tolerance { per_term: 8.0 * f32::EPSILON as f64, absolute: 1e-5 }),
];

/// The tolerance of a `dtype` result from `backend` for a reduction of length `k` (GEMM `k`,
/// conv `c/groups*r*s`), epilogue included.
pub fn tolerance_for(backend: Backend, dtype: DType, k: usize) -> f64 {
    let row = TOLERANCES.iter().find(|(b, d, _)| *b == backend && *d == dtype);
    // Every (backend, dtype) pair has a row (a test checks it); none would be an infinite bound.
    row.map_or(f64::INFINITY, |(_, _, t)| t.at(k))
}

/// [`tolerance_for`] a CPU f32 result: the common case.
pub fn tolerance(k: usize) -> f64 {
    tolerance_for(Backend::Cpu, DType::F32, k)
}

/// [`tolerance_for`] a Vulkan f32 result.
pub fn gpu_tolerance(k: usize) -> f64 {
    tolerance_for(Backend::Vulkan, DType::F32, k)
}

/// Error of one element as defined above; two NaNs agree, one NaN is an infinite error.
pub fn error(got: f32, want: f64) -> f64 {
    match (got.is_nan(), want.is_nan()) {
        (true, true) => 0.0,
        (false, false) if got as f64 == want => 0.0,
        (false, false) => (f64::from(got) - want).abs() / want.abs().max(1.0),
        _ => f64::INFINITY,
    }
}

/// The largest [`error`] over two equally long slices, and where it is (`None` when empty).
/// Slices of different lengths are an infinite error at the first missing index.
pub fn max_error(got: &[f32], want: &[f64]) -> (f64, Option<usize>) {
    if got.len() != want.len() {
        return (f64::INFINITY, Some(got.len().min(want.len())));
    }
    let mut worst = (0.0, None);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = error(g, w);
        if worst.1.is_none() || e > worst.0 {
            worst = (e, Some(i));
        }
    }
    worst
}

/// FNV-1a, 64-bit, of `data`: the checksum of Sparkle's cache files (the pipeline cache, the
/// juggler's model). It detects truncation and accidental corruption, not tampering.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_and_dtype_has_a_row() {
        for b in Backend::ALL {
            for d in DType::ALL {
                assert_eq!(TOLERANCES.iter().filter(|(x, y, _)| *x == b && *y == d).count(), 1, "{b:?} {d:?}");
            }
        }
        // The GPU's bound is never tighter than the CPU's.
        for k in [0, 1, 1000, 1 << 20] {
            assert!(gpu_tolerance(k) >= 2.0 * tolerance(k) && tolerance(k) > 0.0);
        }
    }
}
