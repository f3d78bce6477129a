//! The explicit im2col: the conv input of one (image, group) unrolled into a
//! `gemm_k x (ho*wo)` row-major matrix whose rows follow [`Conv2d::reduction_index`], so that
//! `conv = weights(kg x gemm_k) * im2col`. The oracle tests use it to prove the direct conv and
//! the GEMM formulation agree; the fused kernels must produce the same panels without it.

use crate::conv::Conv2d;
use crate::error::{mul, Error, Param, Result};

/// Elements of one (image, group) im2col matrix.
pub fn im2col_len(g: &Conv2d) -> Result<usize> {
    let (_, cols, rows) = g.gemm_dims();
    mul(rows, cols, Param::Scratch)
}

/// Writes the im2col matrix of image `n`, group `group` into `out` (padding taps are 0).
pub fn im2col(g: &Conv2d, input: &[f32], n: usize, group: usize, out: &mut [f32]) -> Result<()> {
    let p = g.params();
    if input.len() != g.input_len() {
        return Err(Error::Mismatch { param: Param::Input, expected: g.input_len(), found: input.len() });
    }
    if n >= p.n {
        return Err(Error::TooSmall { param: Param::N, required: n + 1, found: p.n });
    }
    if group >= p.groups {
        return Err(Error::TooSmall { param: Param::Groups, required: group + 1, found: p.groups });
    }
    let len = im2col_len(g)?;
    if out.len() < len {
        return Err(Error::TooSmall { param: Param::Scratch, required: len, found: out.len() });
    }
    let (_, cols, rows) = g.gemm_dims();
    let cg = g.cg();
    for row in 0..rows {
        let (ci, r, s) = g.reduction_tap(row);
        for oy in 0..g.ho() {
            for ox in 0..g.wo() {
                let v = match (g.input_y(oy, r), g.input_x(ox, s)) {
                    (Some(iy), Some(ix)) => input[g.input_index(n, group * cg + ci, iy, ix)],
                    _ => 0.0,
                };
                out[row * cols + oy * g.wo() + ox] = v;
            }
        }
    }
    Ok(())
}
