//! conv2d: geometry and index math, the fast paths (implicit GEMM, pointwise, depthwise), the
//! explicit im2col, and the direct-conv oracle.

pub mod fused;
pub mod geometry;
pub mod im2col;
pub mod reference;

pub use geometry::{Conv2d, Conv2dParams, Padding};

use crate::epilogue::{Bias, Epilogue};
use crate::error::{Error, Param, Result};

/// Checks an epilogue for a conv: the activation's parameters, and a bias (if any) that is one
/// value per output channel ([`Bias::Row`] of length `k`).
pub fn check_epilogue(g: &Conv2d, epi: &Epilogue<'_>) -> Result<()> {
    epi.activation.validate()?;
    match epi.bias {
        Bias::None => Ok(()),
        Bias::Row(b) if b.len() == g.params().k => Ok(()),
        Bias::Row(b) => Err(Error::Mismatch { param: Param::Bias, expected: g.params().k, found: b.len() }),
        Bias::Col(_) => Err(Error::Invalid { param: Param::Bias }),
    }
}
