//! The integer oracle of the quantized GEMM: naive, safe, each accumulator an exact `i64` sum of
//! zero-point-corrected products. Every int8 kernel, backend and CLI path is checked against it
//! bit for bit.

use crate::error::{Error, Param, Result};
use crate::quant::{OutputStage, QElem, QGemm, QGemmDims, QOperand};
use crate::view::MatMut;

/// The accumulator of element `(i, j)`: `sum_p (A(i,p) - za) * (B(p,j) - zb[j]) + bias[j]`, summed
/// in `i64`; an error if it does not fit in `i32` (which [`QGemm::check`]'s bound rules out).
/// `(i, j)` must be inside `m x n` of a checked op.
pub fn accumulator<A: QOperand, B: QOperand>(op: &QGemm<'_, A, B>, (i, j): (usize, usize)) -> Result<i32> {
    let zb = i64::from(op.b_zero.at(j));
    let za = i64::from(op.a_zero);
    let mut acc = op.bias.map_or(0, |b| i64::from(b[j]));
    for p in 0..op.a.cols() {
        acc += (i64::from(op.a.at(i, p).widen()) - za) * (i64::from(op.b.at(p, j).widen()) - zb);
    }
    i32::try_from(acc).map_err(|_| Error::Overflow { param: Param::Accumulator })
}

/// `C <- out(A * B)` with the oracle's accumulators and the one output stage
/// ([`OutputStage::apply`]). Runs anywhere, microcontrollers included.
pub fn qgemm_reference<A: QOperand, B: QOperand, Y: QElem>(
    op: &QGemm<'_, A, B>,
    out: &OutputStage<'_>,
    mut c: MatMut<'_, Y>,
) -> Result<QGemmDims> {
    let d = op.check(out, &c)?;
    for i in 0..d.m {
        for j in 0..d.n {
            c.set(i, j, out.apply::<Y>(accumulator(op, (i, j))?, j));
        }
    }
    Ok(d)
}
