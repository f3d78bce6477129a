//! Half-precision inputs: IEEE `f16` and `bf16` (the `half` crate, `no_std`), what a GEMM on
//! either computes, and its oracle.
//!
//! A half GEMM is `C (f32) = A (half) * B (half)` with f32 (or wider) sums: what `torch.matmul` on
//! f16 or bf16 tensors computes inside, and what tensor cores do. The oracle,
//! [`gemm_half_reference_f64`], sums the same (already rounded) inputs in f64, so it measures
//! only the GEMM's own error; a result is within [`crate::check::tolerance_for`] of it with the
//! type's [`Half::DTYPE`]. Rounding f32 data to half is the caller's choice of precision, not an
//! error of the GEMM. The CPU computes bf16 ([`crate::bf16`]); Vulkan computes both.

pub use half::{bf16, f16};

use crate::check::DType;
use crate::error::{Error, Param, Result};
use crate::gemm::GemmDims;
use crate::view::{MatMut, MatRef};

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A GEMM's two half operands, by type: what code that is generic over [`Half`] matches on to
/// reach a type's own kernel.
#[derive(Clone, Copy, Debug)]
pub enum HalfMats<'a> {
    /// f16 A and B.
    F16(MatRef<'a, f16>, MatRef<'a, f16>),
    /// bf16 A and B.
    Bf16(MatRef<'a, bf16>, MatRef<'a, bf16>),
}

/// A conv2d's half input and weights, by type (as [`HalfMats`]).
#[derive(Clone, Copy, Debug)]
pub enum HalfSlices<'a> {
    /// f16 input and weights.
    F16(&'a [f16], &'a [f16]),
    /// bf16 input and weights.
    Bf16(&'a [bf16], &'a [bf16]),
}

/// A 16-bit floating-point input type: [`struct@f16`] or [`struct@bf16`].
pub trait Half: Copy + Default + Send + Sync + 'static + sealed::Sealed {
    /// `x` and `w` as their type's [`HalfSlices`].
    fn slices<'a>(x: &'a [Self], w: &'a [Self]) -> HalfSlices<'a>;
    /// `a` and `b` as their type's [`HalfMats`].
    fn mats<'a>(a: MatRef<'a, Self>, b: MatRef<'a, Self>) -> HalfMats<'a>;
    /// Its rows in the tolerance table.
    const DTYPE: DType;
    /// Its name, as the CLI and the benchmarks spell it.
    const NAME: &'static str;
    /// The nearest value (round to nearest even; overflow to infinity).
    fn from_f32(x: f32) -> Self;
    /// The exact value.
    fn to_f64(self) -> f64;
    /// The bit pattern.
    fn to_bits(self) -> u16;
}

/// `Half` for `$t`, whose [`HalfMats`] and [`HalfSlices`] variant is `$v`.
macro_rules! impl_half {
    ($t:ident, $v:ident, $dtype:expr, $name:literal) => {
        impl Half for $t {
            fn slices<'a>(x: &'a [Self], w: &'a [Self]) -> HalfSlices<'a> {
                HalfSlices::$v(x, w)
            }
            fn mats<'a>(a: MatRef<'a, Self>, b: MatRef<'a, Self>) -> HalfMats<'a> {
                HalfMats::$v(a, b)
            }
            const DTYPE: DType = $dtype;
            const NAME: &'static str = $name;
            fn from_f32(x: f32) -> Self {
                $t::from_f32(x)
            }
            fn to_f64(self) -> f64 {
                $t::to_f64(self)
            }
            fn to_bits(self) -> u16 {
                $t::to_bits(self)
            }
        }
    };
}
impl_half!(f16, F16, DType::F16, "f16");
impl_half!(bf16, Bf16, DType::Bf16, "bf16");

/// The shapes of `C = A * B`, checked.
pub fn check_half<T: Copy, C: Copy>(a: &MatRef<'_, T>, b: &MatRef<'_, T>, c: &MatMut<'_, C>) -> Result<GemmDims> {
    let d = GemmDims { m: a.rows(), n: b.cols(), k: a.cols() };
    if b.rows() != d.k {
        return Err(Error::Mismatch { param: Param::B, expected: d.k, found: b.rows() });
    }
    if c.rows() != d.m {
        return Err(Error::Mismatch { param: Param::COut, expected: d.m, found: c.rows() });
    }
    if c.cols() != d.n {
        return Err(Error::Mismatch { param: Param::COut, expected: d.n, found: c.cols() });
    }
    Ok(d)
}

/// The oracle: `c[i][j] = sum_p a[i][p] * b[p][j]` in f64 (each product exact, the sum rounded
/// once per term at f64's precision). Safe code only.
pub fn gemm_half_reference_f64<H: Half>(
    a: &MatRef<'_, H>,
    b: &MatRef<'_, H>,
    mut c: MatMut<'_, f64>,
) -> Result<GemmDims> {
    let d = check_half(a, b, &c)?;
    let (ad, ars, acs) = (a.as_slice(), a.rs(), a.cs());
    let (bd, brs, bcs) = (b.as_slice(), b.rs(), b.cs());
    for i in 0..d.m {
        for j in 0..d.n {
            let mut sum = 0.0f64;
            for p in 0..d.k {
                sum += ad[i * ars + p * acs].to_f64() * bd[p * brs + j * bcs].to_f64();
            }
            c.set(i, j, sum);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_sums_the_rounded_inputs() {
        // 1 + 2^-11 is not an f16: it rounds to 1 (ties to even), so the product is 1 * 3.
        let a = [f16::from_f32(1.0 + 1.0 / 2048.0)];
        let b = [f16::from_f32(3.0)];
        let mut c = [0.0f64];
        let d = gemm_half_reference_f64(
            &MatRef::new(&a, 1, 1, 1, 1).unwrap(),
            &MatRef::new(&b, 1, 1, 1, 1).unwrap(),
            MatMut::new(&mut c, 1, 1, 1, 1).unwrap(),
        )
        .unwrap();
        assert_eq!((d.m, d.n, d.k), (1, 1, 1));
        assert_eq!(c[0], 3.0);
        // bf16 keeps 8 bits: 1 + 2^-7 survives.
        let a = [bf16::from_f32(1.0 + 1.0 / 128.0)];
        let b = [bf16::from_f32(2.0)];
        gemm_half_reference_f64(
            &MatRef::new(&a, 1, 1, 1, 1).unwrap(),
            &MatRef::new(&b, 1, 1, 1, 1).unwrap(),
            MatMut::new(&mut c, 1, 1, 1, 1).unwrap(),
        )
        .unwrap();
        assert_eq!(c[0], 2.0 + 2.0 / 128.0);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let a = [f16::ZERO; 6];
        let mut c = [0.0f64; 4];
        let r = gemm_half_reference_f64(
            &MatRef::new(&a, 2, 3, 3, 1).unwrap(),
            &MatRef::new(&a, 2, 3, 3, 1).unwrap(),
            MatMut::new(&mut c, 2, 2, 2, 1).unwrap(),
        );
        assert!(matches!(r, Err(Error::Mismatch { param: Param::B, expected: 3, found: 2 })));
    }
}
