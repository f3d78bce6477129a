//! Winograd F(2x2, 3x3) conv2d on the device (`shaders/winograd.comp`): for 3x3 filters with
//! stride 1, dilation 1 and one group, the weights and the input are transformed into 16
//! planes, multiplied as 16 batched GEMMs on the vec4 kernel, and transformed back with the bias
//! and activation: 2.25x fewer multiplies than the direct (implicit GEMM) path. Chosen when the
//! conv has at least [`crate::Tuning::min_winograd_tiles`] output tiles.

use sparkle_core::epilogue::Activation;
use sparkle_core::{Conv2d, TensorLayout};
use vulkano::buffer::Subbuffer;
use vulkano::command_buffer::{AutoCommandBufferBuilder, PrimaryAutoCommandBuffer};

use crate::context::Context;
use crate::error::Result;
use crate::params::{act_code, conv_geometry, u32_of, Params};
use crate::plan::{elementwise_groups, vec4_plan, Kind, Stage};
use crate::pool::Scratch;

/// Whether Winograd can run `g` at all: 3x3, stride 1, dilation 1, one group, channels a
/// multiple of 4 (the batched GEMM's vec4 loads), and every transformed plane within 32-bit
/// indices and `most` floats (the device's largest storage buffer).
pub(crate) fn applies(g: &Conv2d, most: u64) -> bool {
    let p = g.params();
    let shape = p.r == 3 && p.s == 3 && p.stride == [1, 1] && p.dilation == [1, 1] && p.groups == 1;
    shape
        && p.c.is_multiple_of(4)
        && planes(g).is_some_and(|lens| lens.iter().all(|&len| u32::try_from(len).is_ok() && len as u64 <= most))
}

/// Output tiles (2x2) of every image.
pub(crate) fn tiles(g: &Conv2d) -> Option<usize> {
    let p = g.params();
    p.n.checked_mul(g.ho().div_ceil(2))?.checked_mul(g.wo().div_ceil(2))
}

/// Floats of U, V and M.
fn planes(g: &Conv2d) -> Option<[usize; 3]> {
    let p = g.params();
    let t = tiles(g)?;
    let plane = |a: usize, b: usize| a.checked_mul(b)?.checked_mul(16);
    Some([plane(p.k, p.c)?, plane(t, p.c)?, plane(p.k, t)?])
}

impl Context {
    /// Records the Winograd conv2d of `g` (which [`applies`]): weights, input, bias and output
    /// buffers as in the direct path.
    pub(crate) fn record_winograd(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        g: &Conv2d,
        activation: Activation,
        has_bias: bool,
        [w, x, y, bias]: [&Subbuffer<[f32]>; 4],
    ) -> Result<()> {
        let p = g.params();
        let [u_len, v_len, m_len] =
            planes(g).ok_or(sparkle_core::Error::Overflow { param: sparkle_core::Param::Scratch })?;
        let t = tiles(g).ok_or(sparkle_core::Error::Overflow { param: sparkle_core::Param::Scratch })?;
        let u = |v: usize| u32_of(v, sparkle_core::Param::Input);
        let (act, slope) = act_code(activation)?;
        // V as C x T (tiles contiguous) where the GEMM can load it so: see winograd.comp.
        let ct = p.layout == TensorLayout::Nchw && t % 4 == 0;
        let geometry = conv_geometry(g)?;
        let params = Params {
            m: u(p.k)?,
            n: u(t)?,
            k: u(p.c)?,
            epi: act | u32::from(has_bias) << 8,
            slope,
            alpha: 1.0,
            layouts: geometry.layouts | u32::from(ct) << 2,
            ..geometry
        };
        let (ub, vb, mb) = (
            self.pool.scratch(Scratch::WinogradU, u_len)?,
            self.pool.scratch(Scratch::WinogradV, v_len)?,
            self.pool.scratch(Scratch::WinogradM, m_len)?,
        );
        // SAFETY: each transform checks its invocation index against the element count it
        // covers (K*C, tiles*C, K*tiles) and reads only inside the image (patch coordinates are
        // bounds-checked); U, V and M were sized 16 times those counts, the input, weights and
        // output by the validated geometry.
        unsafe {
            self.pipelines.dispatch(
                cb,
                Kind::Winograd(Stage::Weights),
                &params,
                elementwise_groups(u(p.k * p.c)?),
                &[w, &ub],
            )?;
            self.pipelines.dispatch(
                cb,
                Kind::Winograd(Stage::Input),
                &params,
                elementwise_groups(u(t * p.c)?),
                &[x, &vb],
            )?;
        }
        // M[xi] (K x T) = U[xi] (K x C, rows of C) * V[xi] (C x T: rows of T, or T x C stored).
        let (b_rs, b_cs) = if ct { (params.n, 1) } else { (1, params.k) };
        let gemm = Params {
            m: params.m,
            n: params.n,
            k: params.k,
            a_rs: params.k,
            a_cs: 1,
            b_rs,
            b_cs,
            c_rs: params.n,
            c_cs: 1,
            alpha: 1.0,
            groups: 16,
            splits: 1,
            ..Params::default()
        };
        let kind = Kind::GemmVec4 { a_t: false, b_t: !ct };
        let reduce = Kind::Reduce { conv: false };
        let min_tiles = self.tuning().min_vec4_tiles;
        let plan = match vec4_plan(kind, gemm, min_tiles, reduce)? {
            Some(plan) => plan,
            None => vec4_plan(kind, gemm, 0, reduce)?
                .ok_or(sparkle_core::Error::Invalid { param: sparkle_core::Param::Tile })?,
        };
        self.record_plan(cb, &plan, [&ub, &vb, &mb, bias])?;
        // SAFETY: as above; the output transform writes only outputs inside Ho x Wo.
        unsafe {
            self.pipelines.dispatch(
                cb,
                Kind::Winograd(Stage::Output),
                &params,
                elementwise_groups(u(p.k * t)?),
                &[&mb, y, bias],
            )
        }
    }
}
