//! f32 GEMMs on half-precision hardware: how much precision a caller allows (the choices of
//! PyTorch's `torch.set_float32_matmul_precision`), and the exact scaling and splitting of f32
//! values into f16 that the lower choices compute with.
//!
//! Each row of A (column of B) is scaled by the power of two that brings its largest magnitude
//! into `[2^14, 2^15)`, inside f16's range (exact: only the exponent changes). A scaled value `x`
//! is split into `hi = f16(x)` and `lo = f16((x - hi) * 2^11)` (the remainder scaled up, so it
//! stays clear of f16's subnormals: Ootomo & Yokota, "Recovering single precision accuracy from
//! Tensor Cores while surpassing the FP32 theoretical peak performance", IJHPCA 2022).
//! `hi + lo * 2^-11` keeps 22 of x's 24 bits (relative error at most `2^-22`) for every element
//! within [`HIGH_SPAN`] of the largest of its row (column); smaller ones keep fewer bits, and
//! those `2^-38` below it none.
//!
//! - [`Precision::High`]: `A * B ~ Ahi*Bhi + (Ahi*Blo + Alo*Bhi) * 2^-11` — three f16 products
//!   with f32 sums, each within `1.5 eps` of the f32 product; what a tensor core computes in
//!   place of one f32 product (with f16 for the bf16 of PyTorch's `high`). A row or column
//!   spanning more than [`HIGH_SPAN`] runs in f32 instead ([`within_high_span`]), so the result
//!   is always within f32's tolerance.
//! - [`Precision::Medium`]: `Ahi * Bhi` — one f16 product, 11 bits per input (elements `2^-28`
//!   below their row's largest keep fewer).
//!
//! The result of either is unscaled by the same powers of two ([`unscale`]) and checked against
//! the f64 oracle with [`Precision::tolerance`].

use half::f16;

use crate::check::{tolerance_for, Backend, DType};

/// The precision an f32 GEMM may be computed in, named as PyTorch names it. A device runs the
/// fastest path that is at least this precise: with no tensor cores that is f32 throughout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 products and sums (the f32 kernels).
    #[default]
    Highest,
    /// f32-accurate from half-precision products: each f32 input as two f16s, three products
    /// (within the f32 tolerance of the oracle).
    High,
    /// One f16 product per f32 product: inputs rounded to 11 bits.
    Medium,
}

impl Precision {
    /// Every choice, most precise first.
    pub const ALL: [Precision; 3] = [Precision::Highest, Precision::High, Precision::Medium];

    /// Its name, as PyTorch and the CLI spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::Highest => "highest",
            Precision::High => "high",
            Precision::Medium => "medium",
        }
    }

    /// The choice named `name` ([`Precision::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// f16 products per f32 product (0: none, f32 math).
    pub const fn products(self) -> usize {
        match self {
            Precision::Highest => 0,
            Precision::High => 3,
            Precision::Medium => 1,
        }
    }

    /// The bound on [`crate::check::error`] of a result computed at this precision from
    /// `backend`, for a reduction of length `k` over inputs of magnitude at most 1, against the
    /// f64 oracle on the f32 inputs. `Highest` and `High`: f32's row of the table. `Medium`: the
    /// f16 row plus the inputs' rounding, `2^-10` relative per product.
    pub fn tolerance(self, backend: Backend, k: usize) -> f64 {
        match self {
            Precision::Highest | Precision::High => tolerance_for(backend, DType::F32, k),
            Precision::Medium => tolerance_for(backend, DType::F16, k) + (k as f64 + 8.0) / 1024.0,
        }
    }
}

/// The exponent `s` with `max_abs * 2^s` in `[2^14, 2^15)` (0 for a zero or non-finite
/// `max_abs`): what a row of A or a column of B whose largest magnitude is `max_abs` is scaled by.
pub fn scale_exponent(max_abs: f32) -> i32 {
    if max_abs == 0.0 || !max_abs.is_finite() {
        return 0;
    }
    // As f64 every f32 (subnormals included) is normal: max = 1.f * 2^(b - 1023) < 2^(b - 1022).
    let biased = ((f64::from(max_abs.abs()).to_bits() >> 52) & 0x7ff) as i32;
    15 - (biased - 1022)
}

/// The widest ratio between the largest magnitude of a row of A (column of B) and its smallest
/// non-zero one for which [`Precision::High`] keeps 22 bits of every element: below it the
/// element's `hi` is an f16 subnormal.
pub const HIGH_SPAN: f32 = (1u32 << 28) as f32;

/// Whether a row (column) whose largest magnitude is `max_abs` and smallest non-zero one
/// `min_abs` is within [`HIGH_SPAN`] (an all-zero one, `min_abs` infinite, is).
pub fn within_high_span(max_abs: f32, min_abs: f32) -> bool {
    min_abs == f32::INFINITY || max_abs <= min_abs * HIGH_SPAN
}

/// The factor `lo` is scaled by ([`split`]): `2^11`.
pub const LO_SCALE: f32 = 2048.0;

/// `2^e`, exact, for `e` clamped to `[-1022, 1023]`.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// `x * 2^s` split into `(hi, lo)`: `hi` the nearest f16, `lo` the nearest f16 to what is left
/// times [`LO_SCALE`]. `s` is a [`scale_exponent`] of a magnitude at least `|x|` (exponents
/// outside `[-1022, 1023]` are clamped), and `x` is finite.
pub fn split(x: f32, s: i32) -> (f16, f16) {
    if (-126..=127).contains(&s) {
        // In f32: exact where the scaled value is normal; below that (2^-126, far under f16's
        // smallest 2^-24 even after LO_SCALE) both halves are 0 either way. `scaled - hi` is
        // exact (a multiple of scaled's ulp below half of hi's), and so is its scaling.
        let scaled = x * f32::from_bits(((s + 127) as u32) << 23);
        let hi = f16::from_f32(scaled);
        return (hi, f16::from_f32((scaled - hi.to_f32()) * LO_SCALE));
    }
    // Outside f32's exponent range `scaled` is exact in f64 and keeps x's 24 significant bits, so
    // it rounds to f16 through f32 without double rounding: where it is no normal f32 it is
    // either past f16's range (infinite either way) or below 2^-126 (0 either way). The same
    // holds for `scaled - hi`. (`half`'s own `f16::from_f64` is not used: as of 2.7.1 it drops
    // the low 32 bits of the f64 before rounding, so it misrounds values just above a tie.)
    let scaled = f64::from(x) * pow2(s);
    let hi = f16::from_f32(scaled as f32);
    (hi, f16::from_f32(((scaled - hi.to_f64()) * f64::from(LO_SCALE)) as f32))
}

/// A sum of products of values scaled by `2^sa` and `2^sb` ([`split`]), scaled back and rounded
/// once to f32 (exponents as [`split`] takes them).
pub fn unscale(acc: f32, sa: i32, sb: i32) -> f32 {
    (f64::from(acc) * pow2(sa.saturating_add(sb).saturating_neg())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Powers of two come from `pow2`, exact: under Miri `powi` may be off by an ulp or two.

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.name()), Some(p));
        }
        assert_eq!(Precision::parse("low"), None);
    }

    #[test]
    fn scaling_brings_the_largest_into_range() {
        for m in [1.0f32, 0.75, 3.0e-30, f32::MAX, 1.0e-45, 65504.0, pow2(14) as f32, pow2(15) as f32 - 1.0] {
            let s = scale_exponent(m);
            let v = f64::from(m) * pow2(s);
            assert!((16384.0..32768.0).contains(&v), "{m}: scaled by 2^{s} to {v}");
            assert_eq!(scale_exponent(-m), s);
        }
        assert_eq!(scale_exponent(0.0), 0);
        assert_eq!(scale_exponent(f32::INFINITY), 0);
    }

    #[test]
    fn hi_plus_lo_keeps_22_bits() {
        let mut x = 0.123_456_79f32;
        for _ in 0..1000 {
            // A deterministic walk over magnitudes 2^-30 .. 2^30, both signs.
            x = -(x * 1.618_034 + 0.1).rem_euclid(3.0) * pow2((x.to_bits() % 61) as i32 - 30) as f32;
            if x == 0.0 {
                continue;
            }
            let s = scale_exponent(x.abs());
            let (hi, lo) = split(x, s);
            let back = (hi.to_f64() + lo.to_f64() / 2048.0) * pow2(-s);
            let rel = (back - f64::from(x)).abs() / f64::from(x).abs();
            assert!(rel <= pow2(-22), "{x}: {rel:e}");
            // hi + lo * 2^-11 is exact in f32, so the shader-core twin loses nothing more.
            assert_eq!(f64::from(hi.to_f32() + lo.to_f32() / 2048.0), hi.to_f64() + lo.to_f64() / 2048.0);
        }
    }

    /// The f16 nearest to `v` (ties to even), found among `half`'s answer and its neighbours by
    /// exact f64 distances: independent of how [`split`] rounds.
    fn nearest_f16(v: f64) -> f16 {
        let guess = f16::from_f64(v);
        if !guess.is_finite() || v == 0.0 {
            return guess;
        }
        let bits = guess.to_bits();
        let mut best = guess;
        for b in [bits.wrapping_sub(1), bits.wrapping_add(1)] {
            let c = f16::from_bits(b);
            // Only neighbours of the same sign and finite (a step across 0 or to NaN is no neighbour).
            if !c.is_finite() || (b ^ bits) & 0x8000 != 0 {
                continue;
            }
            let (dc, db) = ((c.to_f64() - v).abs(), (best.to_f64() - v).abs());
            if dc < db || (dc == db && c.to_bits() & 1 == 0) {
                best = c;
            }
        }
        best
    }

    #[test]
    fn nearest_f16_breaks_halfs_near_ties() {
        // 304.5 + 2^-13 steps of 2^-24: above the tie, so 305 steps; `half` 2.7.1 says 304.
        let v = -19_955_720.0 * pow2(-40);
        assert_eq!(nearest_f16(v).to_f64(), -305.0 * pow2(-24));
        assert_eq!(nearest_f16(-304.5 * pow2(-24)).to_f64(), -304.0 * pow2(-24));
        // A normal one: 1 + 2^-11 (a tie) + 2^-40 rounds up.
        assert_eq!(nearest_f16(1.0 + pow2(-11) + pow2(-40)).to_f64(), 1.0 + pow2(-10));
    }

    #[test]
    fn the_f32_split_is_the_f64_one() {
        let mut x = 0.7f32;
        // Fewer under Miri, which interprets each step.
        for i in 0..if cfg!(miri) { 4000 } else { 40000 } {
            x = -(x * 1.618_034 + 0.1).rem_euclid(3.0) * pow2((x.to_bits() % 81) as i32 - 40) as f32;
            // From the element's own scale down to 2^-60 below it (the rows' largest far above).
            let s = scale_exponent(x.abs()) - (i % 61);
            let scaled = f64::from(x) * pow2(s);
            let hi = nearest_f16(scaled);
            let want = (hi, nearest_f16((scaled - hi.to_f64()) * 2048.0));
            assert_eq!(split(x, s), want, "{x} * 2^{s}");
        }
        // Both sides of the f32 path's bounds.
        // The last: just above a tie of f16 subnormals on the f64 path (2^87 * 19955720 * 2^-127).
        let near_tie = 19_955_720.0 * pow2(87) as f32;
        for (x, s) in
            [(1e-38f32, 126), (1e-38, 127), (1e-38, 128), (1e-40, 150), (3e38, -126), (3e38, -127), (near_tie, -127)]
        {
            let scaled = f64::from(x) * pow2(s);
            let hi = nearest_f16(scaled);
            let want = (hi, nearest_f16((scaled - hi.to_f64()) * 2048.0));
            assert_eq!(split(x, s), want, "{x} * 2^{s}");
        }
    }

    #[test]
    fn elements_within_the_span_keep_22_bits() {
        // A row whose largest is 2^20 and an element 2^-7.9: 2^27.9 apart, within the span.
        let (max, x) = (1_048_576.0f32, 0.004_321_987f32);
        assert!(within_high_span(max, x));
        let s = scale_exponent(max);
        let (hi, lo) = split(x, s);
        let back = (hi.to_f64() + lo.to_f64() / 2048.0) * pow2(-s);
        assert!((back - f64::from(x)).abs() <= f64::from(x) * pow2(-22), "{back} vs {x}");
        assert!(!within_high_span(max, x / 2.0));
        assert!(within_high_span(max, f32::INFINITY) && within_high_span(0.0, f32::INFINITY));
        // Clamped, never a panic or garbage from an out-of-range exponent.
        assert_eq!(unscale(1.0, i32::MAX, i32::MAX), 0.0);
        assert_eq!(split(0.0, i32::MIN), (f16::ZERO, f16::ZERO));
    }

    #[test]
    fn unscaling_reaches_past_f32_powers() {
        // Both operands tiny: scaled up by 2^140 each, the product is scaled back by 2^-280.
        let s = scale_exponent(1e-38);
        let (hi, _) = split(1e-38, s);
        let acc = hi.to_f32() * hi.to_f32();
        let got = unscale(acc, s, s);
        assert!(got == 0.0, "1e-76 rounds to 0 in f32: {got}");
        let s = scale_exponent(3.0);
        assert_eq!(unscale(12.0 * pow2(2 * s) as f32, s, s), 12.0);
    }
}
