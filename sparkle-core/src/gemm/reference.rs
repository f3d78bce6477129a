//! The GEMM oracle: a naive triple loop in safe Rust. Nothing here is optimised; it is the ruler
//! every fast kernel, backend, fuzz target and bench is checked against.

use crate::accum::Accum;
use crate::epilogue::Epilogue;
use crate::error::{Error, Param, Result};
use crate::gemm::{check, GemmDims};
use crate::view::{MatMut, MatRef};

/// One output element in precision `T`: `alpha * sum_p a(i,p) b(p,j) + beta * c`, epilogue applied.
/// `c` is only evaluated when `beta != 0`.
#[inline]
fn element<T: Accum>(
    alpha: f32,
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f32,
    c: impl FnOnce() -> f32,
    epi: &Epilogue<'_>,
    (i, j): (usize, usize),
) -> T {
    let mut acc = T::ZERO;
    for p in 0..a.cols() {
        acc = acc + T::from_f32(a.at(i, p)) * T::from_f32(b.at(p, j));
    }
    let mut v = T::from_f32(alpha) * acc;
    if beta != 0.0 {
        v = v + T::from_f32(beta) * T::from_f32(c());
    }
    T::epilogue(epi, i, j, v)
}

/// `C <- act(alpha*A*B + beta*C + bias)`, accumulating in f32 in k order. Runs anywhere,
/// microcontrollers included. `beta == 0` never reads C.
pub fn gemm_reference(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    epi: &Epilogue<'_>,
) -> Result<GemmDims> {
    let d = check(alpha, &a, &b, beta, &c, epi)?;
    for i in 0..d.m {
        for j in 0..d.n {
            let v = element::<f32>(alpha, &a, &b, beta, || c.at(i, j), epi, (i, j));
            c.set(i, j, v);
        }
    }
    Ok(d)
}

/// Ground truth: the same product accumulated in f64, written row-major into `out` (`m*n`).
/// `c` is the C operand before the update; it must be given (and is read) only when `beta != 0`.
pub fn gemm_reference_f64(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: Option<MatRef<'_>>,
    epi: &Epilogue<'_>,
    out: &mut [f64],
) -> Result<GemmDims> {
    let (d, c) = check_f64(&a, &b, beta, c, epi)?;
    let len = d.m * d.n;
    if out.len() != len {
        return Err(Error::Mismatch { param: Param::COut, expected: len, found: out.len() });
    }
    for i in 0..d.m {
        for j in 0..d.n {
            let c_ij = || c.as_ref().map_or(0.0, |c| c.at(i, j));
            out[i * d.n + j] = element::<f64>(alpha, &a, &b, beta, c_ij, epi, (i, j));
        }
    }
    Ok(d)
}

/// The checks of [`gemm_reference_f64`] short of the output buffer: shapes, C when `beta != 0`,
/// the epilogue, and `m * n` representable.
fn check_f64<'c>(
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f32,
    c: Option<MatRef<'c>>,
    epi: &Epilogue<'_>,
) -> Result<(GemmDims, Option<MatRef<'c>>)> {
    let d = GemmDims { m: a.rows(), n: b.cols(), k: a.cols() };
    if b.rows() != d.k {
        return Err(Error::Mismatch { param: Param::B, expected: d.k, found: b.rows() });
    }
    let len = d.m.checked_mul(d.n).ok_or(Error::Overflow { param: Param::COut })?;
    let c = match c {
        Some(c) if c.rows() == d.m && c.cols() == d.n => Some(c),
        Some(c) => return Err(Error::Mismatch { param: Param::COut, expected: d.m, found: c.rows() }),
        None if beta != 0.0 => return Err(Error::Mismatch { param: Param::COut, expected: len, found: 0 }),
        None => None,
    };
    epi.validate(d.m, d.n)?;
    Ok((d, c))
}

/// Element `(i, j)` of [`gemm_reference_f64`], for checking sampled points of large outputs (the
/// fuzz targets do) without computing the whole oracle.
pub fn gemm_reference_f64_at(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: Option<MatRef<'_>>,
    epi: &Epilogue<'_>,
    (i, j): (usize, usize),
) -> Result<f64> {
    let (d, c) = check_f64(&a, &b, beta, c, epi)?;
    if i >= d.m {
        return Err(Error::TooSmall { param: Param::M, required: i + 1, found: d.m });
    }
    if j >= d.n {
        return Err(Error::TooSmall { param: Param::GemmN, required: j + 1, found: d.n });
    }
    let c_ij = || c.as_ref().map_or(0.0, |c| c.at(i, j));
    Ok(element::<f64>(alpha, &a, &b, beta, c_ij, epi, (i, j)))
}
