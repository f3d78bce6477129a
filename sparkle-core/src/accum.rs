//! The accumulator types of the oracle: f32 (what a microcontroller runs) and f64 (ground truth).

use core::ops::{Add, Mul};

use crate::epilogue::Epilogue;

/// An accumulator the reference kernels are generic over.
pub trait Accum: Copy + Add<Output = Self> + Mul<Output = Self> + PartialEq {
    /// Additive identity.
    const ZERO: Self;
    /// Widens (or keeps) an f32 input.
    fn from_f32(x: f32) -> Self;
    /// `epi` applied to output element `(i, j)` in this precision.
    fn epilogue(epi: &Epilogue<'_>, i: usize, j: usize, x: Self) -> Self;
}

impl Accum for f32 {
    const ZERO: Self = 0.0;
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn epilogue(epi: &Epilogue<'_>, i: usize, j: usize, x: Self) -> Self {
        epi.apply(i, j, x)
    }
}

impl Accum for f64 {
    const ZERO: Self = 0.0;
    #[inline]
    fn from_f32(x: f32) -> Self {
        f64::from(x)
    }
    #[inline]
    fn epilogue(epi: &Epilogue<'_>, i: usize, j: usize, x: Self) -> Self {
        epi.apply_f64(i, j, x)
    }
}
