//! conv2d: geometry and index math, the fast paths (implicit GEMM, direct, pointwise, depthwise,
//! Winograd), the explicit im2col, and the direct-conv oracle.

pub mod direct;
pub mod fused;
pub mod geometry;
pub mod im2col;
pub mod operands;
pub mod packed;
pub mod path;
pub mod reference;
pub mod winograd;

pub use geometry::{Conv2d, Conv2dParams, Padding};
pub use packed::{conv2d_packed_len, conv2d_packed_scratch_len, conv2d_packed_with, PackedConv};
pub use path::{choose_path, choose_path_for, choose_path_with, Conv2dPath};

use crate::epilogue::{Bias, Epilogue};
use crate::error::{Error, Param, Result};
use crate::gemm::blocking::{Blocking, CacheSizes};
use crate::gemm::driver::{Sequential, Workspace};

/// Floats of scratch [`conv2d`] needs for `g` on its fastest path (for a Winograd geometry, the
/// transforms' buffers: `16·(k·c + c·t + k·t)` and more, `t` the 2x2 output tiles).
pub fn scratch_len(g: &Conv2d) -> Result<usize> {
    let kernel = crate::arch::Kernel::best();
    fused::conv2d_scratch_len(g, kernel, &Blocking::for_kernel(kernel, CacheSizes::STATIC), 1)
}

/// The least scratch [`conv2d`] accepts for `g`: with less than [`scratch_len`] but at least
/// this, a Winograd or direct geometry runs as an implicit GEMM (what a microcontroller with a
/// fixed scratch buffer gets).
pub fn min_scratch_len(g: &Conv2d) -> Result<usize> {
    let kernel = crate::arch::Kernel::best();
    fused::conv2d_min_scratch_len(g, kernel, &Blocking::for_kernel(kernel, CacheSizes::STATIC), 1)
}

/// `output = act(conv2d(input, weight) + bias)` on one thread with the best kernels this CPU runs
/// and caller scratch of at least [`min_scratch_len`] floats ([`scratch_len`] for the fastest
/// path): the `no_std`, no-heap entry
/// point (a Cortex-M4F runs this). Validates everything first; on an error nothing is written.
pub fn conv2d(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    let kernel = crate::arch::Kernel::best();
    let blocking = Blocking::for_kernel(kernel, CacheSizes::STATIC);
    fused::conv2d_with(
        g,
        input,
        weight,
        epi,
        output,
        Workspace { kernel, blocking: &blocking, exec: &Sequential, scratch },
    )
}

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

#[cfg(test)]
mod tests {
    //! Small enough for Miri: every conv path through the `no_std` entry point against the f32
    //! direct-conv oracle.
    use super::*;
    use crate::check::{error, tolerance};
    use crate::epilogue::Activation;
    use crate::layout::TensorLayout;

    #[test]
    fn every_path_matches_oracle() {
        let base = Conv2dParams::new(1, 4, 5, 6, 4, 3, 3).pad(Padding::new(1, 0, 2, 1));
        let mut paths = [false; 5];
        // Direct (NCHW, NHWC strided, dilated, grouped, KRSC: channel planes, and NHWC pixels),
        // the implicit GEMM (a 1x1 at stride 2), depthwise and pointwise (both layouts): every
        // path of the fused driver and its packing, which Miri checks.
        for p in [
            base,
            base.groups(4),
            base.groups(4).layout(TensorLayout::Nhwc),
            base.groups(2).dilation(1, 2),
            Conv2dParams::new(2, 4, 3, 3, 6, 1, 1),
            Conv2dParams::new(2, 4, 3, 3, 6, 1, 1).layout(TensorLayout::Nhwc),
            base.stride(2, 1).layout(TensorLayout::Nhwc),
            Conv2dParams::new(1, 4, 5, 6, 4, 1, 1).stride(2, 2),
            // Channel planes from KRSC weights (reordered) and from an NHWC image (transposed).
            base.stride(2, 2).weight_layout(crate::layout::WeightLayout::Krsc),
            base.stride(1, 2).layout(TensorLayout::Nhwc).weight_layout(crate::layout::WeightLayout::Krsc),
            // Direct: NHWC (NCHW as well where the kernel reads B in place).
            Conv2dParams::new(1, 16, 4, 6, 2, 3, 3).pad(Padding::uniform(1)).layout(TensorLayout::Nhwc),
        ] {
            let g = p.validate().unwrap();
            paths[choose_path(&g) as usize] = true;
            let mut x = [0.0f32; 512];
            let mut w = [0.0f32; 512];
            for (i, v) in x.iter_mut().enumerate() {
                *v = ((i * 7 % 13) as f32 - 6.0) / 8.0;
            }
            for (i, v) in w.iter_mut().enumerate() {
                *v = ((i * 5 % 11) as f32 - 5.0) / 8.0;
            }
            let bias = [0.25f32, -0.5, 0.125, 1.0, -0.25, 0.5];
            let epi = Epilogue::activation(Activation::LeakyRelu { slope: 0.1 }).with_bias(&bias[..p.k]);
            let (x, w) = (&x[..g.input_len()], &w[..g.weight_len()]);
            let mut scratch = [0.0f32; 8192];
            let mut got = [f32::NAN; 256];
            let mut want = [0.0f32; 256];
            let len = scratch_len(&g).unwrap();
            conv2d(&g, x, w, &epi, &mut got[..g.output_len()], &mut scratch[..len]).unwrap();
            reference::conv2d_reference(&g, x, w, &epi, &mut want[..g.output_len()]).unwrap();
            for (a, b) in got[..g.output_len()].iter().zip(&want[..g.output_len()]) {
                assert!(error(*a, f64::from(*b)) <= tolerance(g.gemm_dims().2), "{p:?}: {a} vs {b}");
            }
        }
        assert_eq!(
            paths,
            [true, true, false, true, true],
            "pointwise, depthwise, direct and implicit GEMM each ran (Winograd: below)"
        );
    }

    /// Winograd through the `no_std` entry point: a ragged grid of just enough tiles (16 x 17 of
    /// 2x2), both layouts, bias and an activation, small enough for Miri.
    #[test]
    #[cfg(feature = "winograd")]
    fn winograd_matches_oracle() {
        let p = Conv2dParams::new(1, 4, 33, 34, 2, 3, 3).pad(Padding::new(1, 0, 0, 1));
        // Miri interprets every step: one layout there, both natively.
        for p in [p, p.layout(TensorLayout::Nhwc)].into_iter().take(if cfg!(miri) { 1 } else { 2 }) {
            let g = p.validate().unwrap();
            assert_eq!(choose_path(&g), Conv2dPath::Winograd);
            let mut x = [0.0f32; 4 * 33 * 34];
            let mut w = [0.0f32; 2 * 4 * 9];
            for (i, v) in x.iter_mut().enumerate() {
                *v = ((i * 7 % 13) as f32 - 6.0) / 8.0;
            }
            for (i, v) in w.iter_mut().enumerate() {
                *v = ((i * 5 % 11) as f32 - 5.0) / 8.0;
            }
            let bias = [0.25f32, -0.5];
            let epi = Epilogue::activation(Activation::LeakyRelu { slope: 0.1 }).with_bias(&bias);
            let mut scratch = [0.0f32; 49152];
            let (mut got, mut want) = ([f32::NAN; 2 * 32 * 33], [0.0f32; 2 * 32 * 33]);
            reference::conv2d_reference(&g, &x, &w, &epi, &mut want).unwrap();
            let (full, least) = (scratch_len(&g).unwrap(), min_scratch_len(&g).unwrap());
            assert!(least <= full, "{least} <= {full}");
            conv2d(&g, &x, &w, &epi, &mut got, &mut scratch[..full]).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!(error(*a, f64::from(*b)) <= tolerance(g.gemm_dims().2), "{p:?}: {a} vs {b}");
            }
            assert!(conv2d(&g, &x, &w, &epi, &mut got, &mut scratch[..least - 1]).is_err());
            // An infinite input takes the implicit GEMM, which keeps the oracle's infinities
            // (Winograd would turn them into NaN). Natively only: Miri runs that path elsewhere.
            if cfg!(miri) {
                continue;
            }
            x[40] = f32::INFINITY;
            reference::conv2d_reference(&g, &x, &w, &epi, &mut want).unwrap();
            conv2d(&g, &x, &w, &epi, &mut got, &mut scratch[..full]).unwrap();
            assert!(want.iter().any(|v| v.is_infinite()));
            for (a, b) in got.iter().zip(&want) {
                assert!(error(*a, f64::from(*b)) <= tolerance(g.gemm_dims().2), "{p:?} inf: {a} vs {b}");
            }
        }
    }
}
