//! How results are compared with the f64 oracle: one error measure and one tolerance table,
//! used by every test, fuzz target, bench and the demo.
//!
//! The error of element `i` is `|got - want| / max(1, |want|)`. A reduction of length `k` in f32
//! may lose up to about `k * eps` relative to the sum of magnitudes (the classical `gamma_k`
//! bound), so the tolerance grows linearly with `k`. An indexing bug produces errors of order 1,
//! far above any tolerance here.

/// Tolerance for an f32 result of a reduction of length `k` (GEMM `k`, conv `c/groups*r*s`),
/// epilogue included (libm's transcendental functions are within a few ulp).
pub fn tolerance(k: usize) -> f64 {
    4.0 * f64::from(f32::EPSILON) * (k as f64 + 8.0)
}

/// Tolerance for a Vulkan result: shaders may contract and reorder the reduction differently
/// (twice the CPU's bound) and approximate transcendental activations (GELU's erf to 1.5e-7,
/// the driver's `exp`/`tanh`), hence the absolute `1e-5`.
pub fn gpu_tolerance(k: usize) -> f64 {
    2.0 * tolerance(k) + 1e-5
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
