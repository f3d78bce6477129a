//! int8 conv2d ([`Context::qconv2d`]): an implicit GEMM whose A (output pixels x the reduction) is
//! gathered on the device, 16 bytes at a time, from the input staged once per call; the int8
//! GEMM's kernels (`gemm_coopmat.comp` with INT8 and CONV on cooperative matrices,
//! `gemm_i8.comp` with CONV on the shader cores) and its write-out (`quant.glsl`), so the bits
//! are the integer oracle's, as for [`Context::qgemm`].
//!
//! What the host stages, in one pass over each operand:
//! - the input, as NHWC with each group's channels rounded up to 16 (zeros past them), shifted to
//!   signed bytes: every 16-byte chunk of a tap's channels is one aligned load, whatever the
//!   caller's layout (NCHW or NHWC);
//! - the weights as B^T, one row per output channel in the same (tap, channel) order, zero in
//!   the rounded-up channels (so whatever A holds there adds nothing), rows zero-padded to whole
//!   slices;
//! - the terms of `quant.glsl`: per output channel the bias and zero-point terms and the stage's
//!   scale words, in a block per group; per (image, group, output pixel) the patch's sum, which
//!   the weights' zero point multiplies (a channel-summed plane, then a sum over the taps: the
//!   padding counts as the input's zero point, as ONNX says).
//!
//! A depthwise conv (`groups == c == k`) skips all of this: `dwconv_i8.comp` reads the input and
//! weights as they are (shifted to signed bytes) and sums each output's taps directly.
//!
//! One dispatch runs one GEMM per group (`gl_WorkGroupID.z`) whose rows are the output pixels of
//! every image (so small images still fill whole tiles), in chunks of images where their rows
//! would pass the dispatch limit. C comes back per group as those rows x the group's channels
//! (bytes four to a word, or `i32`) and is written into the caller's layout.

use sparkle_core::conv::{choose_path, Conv2dPath};
use sparkle_core::quant::conv::QConv;
use sparkle_core::quant::{ChannelStage, OutputStage, QElem, QOperand};
use sparkle_core::{Conv2d, Error, Param, TensorLayout, WeightLayout};

use crate::context::Context;
use crate::error::{Result, VkError};
use crate::half::{coop_tile, COOP_TILES};
use crate::params::{conv_geometry, u32_of, Params};
use crate::plan::{elementwise_groups, Kind, TileDtype, TileRules, MAX_GROUPS};
use crate::quant::{put_column, shift, with_stage, QPlan, K_ALIGN};
use crate::staging::{self, staged_grid, staged_shape, StagedShape, CHUNK_BYTES};

/// The staged shapes of an int8 conv, for a chunk of `images` images.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QConvShape {
    /// The kernel, its workgroups and buffer sizes.
    pub(crate) plan: QPlan,
    /// Chunks per tap (a group's channels rounded up to whole chunks, over the chunk).
    pub(crate) cpt: usize,
    /// The reduction's padded length in bytes (a row of B^T).
    pub(crate) kp: usize,
    /// A group's output channels rounded up to 4 (its block of columns in the terms).
    pub(crate) kg4: usize,
}

/// The plan of `g`'s conv over `images` images on the cooperative-matrix kernel (`coopmat`) or
/// the shader-core one, writing bytes (`bytes`) or `i32`: every size checked to fit the shaders'
/// 32-bit indices and the dispatch limits. The stage's fields are [`with_stage`]'s, the
/// padding's word the caller's.
pub(crate) fn qconv_plan(
    g: &Conv2d,
    images: usize,
    (coopmat, bytes): (bool, bool),
    rules: &TileRules,
) -> Result<QConvShape> {
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let StagedShape { cpt, kp, pix, m, a_words } = staged_shape(g, images, CHUNK_BYTES, K_ALIGN)?;
    let p = g.params();
    let (kg, hw, _) = g.gemm_dims();
    let kg4 = kg.checked_next_multiple_of(4).ok_or(overflow(Param::K))?;
    let c_rs = if bytes { kg4 / 4 } else { kg4 };
    let z = p.groups;
    let np = p.groups.checked_mul(kg4).ok_or(overflow(Param::K))?;
    let mul = |a: usize, b: usize, param| a.checked_mul(b).ok_or(overflow(param));
    let b_words = mul(p.k, kp / 4, Param::Weight)?;
    let c_words = mul(mul(z, m, Param::Output)?, c_rs, Param::Output)?;
    let aux_words =
        mul(np, 4, Param::Scratch)?.checked_add(mul(z, m, Param::Scratch)?).ok_or(overflow(Param::Scratch))?;
    for (len, param) in
        [(a_words, Param::Input), (b_words, Param::Weight), (c_words, Param::Output), (aux_words, Param::Scratch)]
    {
        // Every index the shaders form stays below these counts (in 4-byte words).
        u32_of(len.checked_mul(4).ok_or(overflow(param))?, param)?;
    }
    let (kind, [tm, tn]) = if coopmat {
        // As the GEMM (no 128x256 int8 kernel), counting every group's tiles; 64x64 where a
        // group's channels would fill at most half of a 128-wide tile.
        let tile = match coop_tile(m.saturating_mul(z), kg, rules)? {
            _ if kg <= 64 && std::env::var_os("SPARKLE_VK_COOPMAT_TILE").is_none() => 2,
            1 => 0,
            t => t,
        };
        (Kind::CoopmatConvI8 { tile }, COOP_TILES[usize::from(tile)])
    } else {
        (Kind::ConvI8, [64, 64])
    };
    let groups = staged_grid(kg, m, z, [tm, tn])?;
    let params = Params {
        m: u32_of(m, Param::Output)?,
        a_rs: u32_of(hw, Param::Output)?,
        n: u32_of(kg, Param::K)?,
        k: u32_of(kp, Param::K)?,
        b_rs: u32_of(kp / 16, Param::K)?,
        b_cs: u32_of(np, Param::K)?,
        c_rs: u32_of(c_rs, Param::K)?,
        epi: u32::from(bytes) << 8,
        layouts: u32_of(cpt, Param::C)?,
        hw: u32_of(pix, Param::C)?,
        // The geometry; the stage's fields (kout, splits, c_cs) are `with_stage`'s.
        ..conv_geometry(g)?
    };
    let plan = QPlan { kind, params, groups, a_words, b_words, c_words, aux_words };
    Ok(QConvShape { plan, cpt, kp, kg4 })
}

/// Images per dispatch: all of them, or as many as keep their rows within the dispatch limit of
/// the smallest tile's (64-row) workgroups.
fn images_per_dispatch(g: &Conv2d) -> usize {
    let p = g.params();
    (MAX_GROUPS as usize * 64 / g.gemm_dims().1.max(1)).clamp(1, p.n.max(1))
}

impl Context {
    /// `output = out(conv2d(input, weight) + bias)` on int8 input and weights with zero points
    /// (ONNX QLinearConv / ConvInteger, [`sparkle_core::quant::conv`]), every geometry, layout
    /// and grouping, with the integer oracle's bits: an implicit GEMM on the int8 kernels (tensor
    /// cores where the device has int8 cooperative matrices), A gathered on the device from the
    /// input staged by the host (see the module's docs). Validated first; the result is
    /// assembled apart and copied out whole, so on an error the output is untouched.
    pub fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<()> {
        op.check::<Y>(g, out, output.len())?;
        if output.is_empty() {
            return Ok(());
        }
        if choose_path(g) == Conv2dPath::Depthwise {
            return self.qconv2d_depthwise(g, op, out, output);
        }
        let p = g.params();
        // As many images a dispatch as its limits and the device's largest buffer allow.
        let mut chunk = images_per_dispatch(g);
        let shape = loop {
            match self.qconv_plan(g, chunk, one_byte::<Y>()) {
                Ok(shape) => break shape,
                Err(VkError::Core(Error::Overflow { .. }) | VkError::OutOfMemory(_)) if chunk > 1 => {
                    chunk = chunk.div_ceil(2)
                }
                Err(e) => return Err(e),
            }
        };
        let za = op.x_zero - shift::<X>();
        let (weights, colsums, patch_sums) = stage_weights(g, op, &shape)?;
        let columns = column_terms(g, op, out, &colsums, shape.kg4, za);
        let mut result = crate::pool::filled(output.len(), Y::narrow(0))?;
        for n0 in (0..p.n).step_by(chunk) {
            let images = n0..(n0 + chunk).min(p.n);
            let mut plan = shape.plan;
            if images.len() < chunk {
                // The last chunk's own sizes (fewer images: every check of the full chunk holds).
                plan = self.qconv_plan(g, images.len(), one_byte::<Y>())?.plan;
            }
            // The chunk's own push constants (its rows, m), with the stage and the padding.
            let (mut params, stages) = staged::<Y>(plan.params, out, p.k);
            params.a_cs = u32::from_le_bytes([za as u8; 4]);
            let cgp = shape.cpt * CHUNK_BYTES;
            let shifted = |v: X| u32::from((v.widen() - shift::<X>()) as u8);
            let input = staging::stage_input::<X, 4>(g, op.input, images.clone(), cgp, plan.a_words, shifted)?;
            let mut aux = columns.clone();
            aux.resize(plan.aux_words, 0);
            if patch_sums {
                row_sums(g, op, images.clone(), &mut aux[columns.len()..]);
            }
            let words = self.run_q(&plan, &params, [&input, &weights, &aux])?;
            write_out(g, images, &shape, &words, &stages, &mut result);
        }
        output.copy_from_slice(&result);
        Ok(())
    }

    /// Seconds per int8 conv of `g` (u8 output, fixed-point stage) with the staged operands
    /// already on the device: the kernel alone, without the host's staging and the transfers
    /// that [`Context::qconv2d`] also does, warmed up as [`Context::time_qgemm_resident`]. Every
    /// image in one dispatch, on the kernel [`Context::qconv2d`] picks.
    pub fn time_qconv2d_resident(&self, g: &Conv2d, reps: u32, warm_up: f64) -> Result<f64> {
        let plan = if choose_path(g) == Conv2dPath::Depthwise {
            self.qdw_plan(g, true)?
        } else {
            self.qconv_plan(g, g.params().n, true)?.plan
        };
        let params = with_stage(plan.params, 2, 0, (0, 255));
        let lens = [plan.a_words, plan.b_words, plan.c_words, plan.aux_words];
        self.time_recorded(lens, reps, warm_up, &|cb, bufs| {
            // SAFETY: the buffers have the plan's lengths (see `run_q`); the gather's indices
            // depend on the geometry only, and no index depends on a buffer's contents (a
            // garbage shift gives an undefined value, never an access out of bounds).
            unsafe { self.pipelines.dispatch(cb, plan.kind, &params, plan.groups, &bufs) }
        })
    }

    /// [`Context::qconv2d`] of a depthwise conv (`groups == c == k`): `dwconv_i8.comp` on the
    /// input and weights as they are (shifted to signed bytes), no staging and no GEMM.
    fn qconv2d_depthwise<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<()> {
        let plan = self.qdw_plan(g, one_byte::<Y>())?;
        let (mut params, stages) = staged::<Y>(plan.params, out, g.params().k);
        params.a_cs = (op.x_zero - shift::<X>()) as u32;
        // The kernel subtracts the zero points itself: each channel's term is its bias.
        let aux = column_terms(g, op, out, &vec![0; g.params().k], 1, 0);
        let [input, weights] = [signed_words(op.input), signed_words(op.weight)];
        let words = self.run_q(&plan, &params, [&input?, &weights?, &aux])?;
        let (bytes, p, hw) = (one_byte::<Y>(), g.params(), g.gemm_dims().1);
        if stages.is_empty() && bytes {
            for (quad, &word) in output.chunks_mut(4).zip(&words) {
                for (u, slot) in quad.iter_mut().enumerate() {
                    *slot = Y::narrow(output_byte::<Y>(word, u));
                }
            }
            return Ok(());
        }
        for (idx, slot) in output.iter_mut().enumerate() {
            let v = if bytes { output_byte::<Y>(words[idx / 4], idx % 4) } else { words[idx] as i32 };
            let ch = match p.layout {
                TensorLayout::Nchw => idx / hw % p.k,
                TensorLayout::Nhwc => idx % p.k,
            };
            *slot = finish(&stages, ch, v);
        }
        Ok(())
    }

    /// [`qdw_plan`] on this device, its buffers checked against the largest storage buffer.
    fn qdw_plan(&self, g: &Conv2d, bytes: bool) -> Result<QPlan> {
        let plan = qdw_plan(g, bytes)?;
        self.check_q_buffers(&plan)?;
        Ok(plan)
    }

    /// [`qconv_plan`] on this device, its buffers checked against the largest storage buffer.
    fn qconv_plan(&self, g: &Conv2d, images: usize, bytes: bool) -> Result<QConvShape> {
        let rules = self.tile_rules(TileDtype::Int8);
        let shape = qconv_plan(g, images, (self.has_cooperative_matrix_i8(), bytes), &rules)?;
        self.check_q_buffers(&shape.plan)?;
        Ok(shape)
    }
}

/// Whether `Y` is a one-byte type (the kernels then store four outputs to a word).
fn one_byte<Y: QElem>() -> bool {
    i64::from(Y::MAX) - i64::from(Y::MIN) <= 255
}

/// `params` with `out`'s stage, and the per-channel stages of the `k` output channels where the
/// host finishes them: an `i32` output that is rescaled comes back as the accumulator.
fn staged<Y: QElem>(params: Params, out: &OutputStage<'_>, k: usize) -> (Params, Vec<ChannelStage>) {
    let stage0 = out.channel::<Y>(0);
    if one_byte::<Y>() || stage0.mode() == 0 {
        (with_stage(params, stage0.mode(), stage0.zero_point(), stage0.range()), Vec::new())
    } else {
        (with_stage(params, 0, 0, (i32::MIN, i32::MAX)), (0..k).map(|o| out.channel::<Y>(o)).collect())
    }
}

/// Output byte `u` of `word` as `Y`'s value.
fn output_byte<Y: QElem>(word: u32, u: usize) -> i32 {
    let byte = (word >> (8 * u)) as u8;
    if Y::MIN < 0 {
        i32::from(byte as i8)
    } else {
        i32::from(byte)
    }
}

/// Output channel `o`'s value `v` as `Y`: through its stage where the host finishes it.
fn finish<Y: QElem>(stages: &[ChannelStage], o: usize, v: i32) -> Y {
    match stages.get(o) {
        Some(stage) => stage.apply::<Y>(v),
        None => Y::narrow(v),
    }
}

/// `x` shifted to signed bytes (a `u8` by -128), four to a word, the first lowest.
fn signed_words<T: QElem>(x: &[T]) -> Result<Vec<u32>> {
    let sx = shift::<T>();
    let mut words = crate::pool::filled(x.len().div_ceil(4), 0u32)?;
    for (word, quad) in words.iter_mut().zip(x.chunks(4)) {
        *word = quad.iter().enumerate().fold(0, |w, (u, &v)| w | u32::from((v.widen() - sx) as u8) << (8 * u));
    }
    Ok(words)
}

/// The plan of a depthwise conv (`dwconv_i8.comp`): one invocation per four outputs, the input
/// and weights in their own layouts, C in the output's, the terms one column per channel.
pub(crate) fn qdw_plan(g: &Conv2d, bytes: bool) -> Result<QPlan> {
    let overflow = |param| VkError::Core(Error::Overflow { param });
    staging::check_coordinates(g)?;
    let p = g.params();
    let total = g.output_len();
    let (a_words, b_words) = (g.input_len().div_ceil(4), g.weight_len().div_ceil(4));
    let c_words = if bytes { total.div_ceil(4) } else { total };
    let aux_words = p.k.checked_mul(4).ok_or(overflow(Param::K))?;
    // The kernel forms output indices up to the total rounded up to 4, input indices below its
    // length: all must fit 32 bits.
    for (len, param) in [(total.saturating_add(4), Param::Output), (g.input_len(), Param::Input), (aux_words, Param::K)]
    {
        u32_of(len, param)?;
    }
    // One invocation per output word (four outputs): the total fits 32 bits, so the rows do too.
    let groups = elementwise_groups(u32_of(total.div_ceil(4), Param::Output)?);
    let params = Params {
        m: u32_of(p.n, Param::N)?,
        n: u32_of(g.gemm_dims().1, Param::Output)?,
        b_cs: u32_of(p.k, Param::K)?,
        epi: u32::from(bytes) << 8,
        // The geometry (`layouts` bit 0 the NHWC the shader reads); the stage's fields are
        // `with_stage`'s.
        ..conv_geometry(g)?
    };
    Ok(QPlan { kind: Kind::DepthwiseI8, params, groups, a_words, b_words, c_words, aux_words })
}

/// Bytes four to a word, the first lowest (the shaders' byte order).
fn to_words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// B^T (see the module's docs), and each output channel's sum of its shifted weights with
/// whether any shifted weight zero point is non-zero (then the patch sums are needed).
fn stage_weights<X: QOperand, W: QOperand>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    shape: &QConvShape,
) -> Result<(Vec<u32>, Vec<i32>, bool)> {
    let p = g.params();
    let (cg, cgp, kp, gemm_k, taps) = (g.cg(), shape.cpt * CHUNK_BYTES, shape.kp, g.gemm_dims().2, p.r * p.s);
    let sw = shift::<W>();
    let mut staged = crate::pool::filled(p.k * kp, 0u8)?;
    let mut sums = vec![0i32; p.k];
    // Each output channel's weights are one row of gemm_k in the weights' reduction order.
    for ((src, dst), sum) in op.weight.chunks_exact(gemm_k).zip(staged.chunks_exact_mut(kp)).zip(&mut sums) {
        let mut put = |ci: usize, tap: usize, v: W| {
            let v = v.widen() - sw;
            dst[tap * cgp + ci] = v as u8;
            *sum = sum.wrapping_add(v);
        };
        match p.weight_layout {
            WeightLayout::Kcrs => src.chunks_exact(taps).enumerate().for_each(|(ci, t)| {
                t.iter().enumerate().for_each(|(tap, &v)| put(ci, tap, v));
            }),
            WeightLayout::Krsc => src.chunks_exact(cg).enumerate().for_each(|(tap, c)| {
                c.iter().enumerate().for_each(|(ci, &v)| put(ci, tap, v));
            }),
        }
    }
    let patch_sums = (0..p.k).any(|o| op.w_zero.at(o) != sw);
    Ok((to_words(&staged), sums, patch_sums))
}

/// The per-column words of `quant.glsl` (see [`crate::quant`]'s `terms`), a block of `kg4`
/// columns per group: the column term `bias - za * colsum + k * za * zb` (`za` the input's
/// shifted zero point), the weights' shifted zero point, the stage's two scale words.
fn column_terms<X: QOperand, W: QOperand>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    colsums: &[i32],
    kg4: usize,
    za: i32,
) -> Vec<u32> {
    let p = g.params();
    let (kg, gemm_k) = (g.kg(), g.gemm_dims().2 as i32);
    let np = p.groups * kg4;
    let mut aux = vec![0u32; 4 * np];
    for (o, &sum) in colsums.iter().enumerate() {
        let bias = op.bias.map_or(0, |b| b[o]);
        let zb = op.w_zero.at(o) - shift::<W>();
        put_column(&mut aux, np, o / kg * kg4 + o % kg, (bias, za, zb, sum, gemm_k), out.channel::<i32>(o));
    }
    aux
}

/// Each (group, image, output pixel)'s sum of its shifted patch into `sums` (the padding as the
/// shifted input zero point): the group's channels summed per input pixel, then over the taps.
fn row_sums<X: QOperand, W: QOperand>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    images: std::ops::Range<usize>,
    sums: &mut [u32],
) {
    let count = images.len();
    let p = g.params();
    let (cg, hw, wo) = (g.cg(), g.gemm_dims().1, g.wo());
    let sx = shift::<X>();
    let pad = (cg as i32).wrapping_mul(op.x_zero - sx);
    let mut plane = vec![0i32; p.h * p.w];
    for (i, n) in images.enumerate() {
        for grp in 0..p.groups {
            plane.fill(0);
            for c in grp * cg..(grp + 1) * cg {
                for y in 0..p.h {
                    for x in 0..p.w {
                        let v = op.input[g.input_index(n, c, y, x)].widen() - sx;
                        plane[y * p.w + x] = plane[y * p.w + x].wrapping_add(v);
                    }
                }
            }
            let out = &mut sums[(grp * count + i) * hw..][..hw];
            for (j, slot) in out.iter_mut().enumerate() {
                let (oy, ox) = (j / wo, j % wo);
                let mut sum = 0i32;
                for r in 0..p.r {
                    for s in 0..p.s {
                        sum = sum.wrapping_add(match (g.input_y(oy, r), g.input_x(ox, s)) {
                            (Some(iy), Some(ix)) => plane[iy * p.w + ix],
                            _ => pad,
                        });
                    }
                }
                *slot = sum as u32;
            }
        }
    }
}

/// C of `images` (per group, per image: output pixels x `c_rs` words) into `result`, in the
/// geometry's layout; an `i32` output through `stages` where they are given.
fn write_out<Y: QElem>(
    g: &Conv2d,
    images: std::ops::Range<usize>,
    shape: &QConvShape,
    words: &[u32],
    stages: &[ChannelStage],
    result: &mut [Y],
) {
    let p = g.params();
    let (kg, hw) = (g.kg(), g.gemm_dims().1);
    let bytes = one_byte::<Y>();
    let rs = shape.plan.params.c_rs as usize;
    // Output channel o of a row of C: its byte or word, finished.
    let value = |row: &[u32], col: usize, o: usize| -> Y {
        let v = if bytes { output_byte::<Y>(row[col / 4], col % 4) } else { row[col] as i32 };
        finish(stages, o, v)
    };
    // Output pixels a block of NCHW's transpose takes: their rows of C stay in L1.
    const BLOCK: usize = 32;
    let count = images.len();
    for (i, n) in images.enumerate() {
        let image = &mut result[n * hw * p.k..][..hw * p.k];
        for grp in 0..p.groups {
            let block = &words[(grp * count + i) * hw * rs..][..hw * rs];
            match p.layout {
                TensorLayout::Nchw => {
                    for j0 in (0..hw).step_by(BLOCK) {
                        let len = BLOCK.min(hw - j0);
                        let rows = &block[j0 * rs..][..len * rs];
                        for col in 0..kg {
                            let o = grp * kg + col;
                            let out = &mut image[o * hw + j0..][..len];
                            for (slot, row) in out.iter_mut().zip(rows.chunks_exact(rs)) {
                                *slot = value(row, col, o);
                            }
                        }
                    }
                }
                TensorLayout::Nhwc => {
                    for (row, out) in block.chunks_exact(rs).zip(image.chunks_exact_mut(p.k)) {
                        for (col, slot) in out[grp * kg..][..kg].iter_mut().enumerate() {
                            *slot = value(row, col, grp * kg + col);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sparkle_core::{Conv2dParams, Padding};

    use super::*;

    const RULE: TileRules = TileRules::rule(TileDtype::Int8);

    #[test]
    fn plans_round_channels_to_chunks_and_reductions_to_slices() {
        // 3x3, 20 channels per group (two chunks a tap), 2 groups of 6 output channels.
        let g = Conv2dParams::new(3, 40, 10, 12, 12, 3, 3).groups(2).pad(Padding::uniform(1)).validate().unwrap();
        let s = qconv_plan(&g, 3, (false, true), &RULE).unwrap();
        assert_eq!((s.cpt, s.kp, s.kg4), (2, 384, 8));
        let q = s.plan.params;
        // m = the 3 images' output pixels, n = a group's output channels, a staged pixel 2 groups
        // x 2 chunks; one GEMM per group.
        let dims = (q.m, q.a_rs, q.n, q.k, q.b_rs, q.b_cs, q.c_rs, q.layouts, q.hw);
        assert_eq!(dims, (360, 120, 6, 384, 24, 16, 2, 2, 4));
        assert_eq!((s.plan.kind, s.plan.groups), (Kind::ConvI8, [1, 6, 2]));
        assert_eq!(s.plan.a_words, 3 * 120 * 4 * 4);
        assert_eq!((s.plan.b_words, s.plan.c_words, s.plan.aux_words), (12 * 96, 2 * 360 * 2, 4 * 16 + 2 * 360));
        // Few tiles: the 64x64 cooperative-matrix kernel; an i32 C has a word per column.
        let s = qconv_plan(&g, 3, (true, false), &RULE).unwrap();
        assert_eq!((s.plan.kind, s.plan.params.c_rs), (Kind::CoopmatConvI8 { tile: 2 }, 8));
    }

    #[test]
    fn depthwise_plans_one_invocation_per_four_outputs() {
        let dw = Conv2dParams::new(2, 32, 112, 112, 32, 3, 3).groups(32).pad(Padding::uniform(1));
        let g = dw.validate().unwrap();
        let plan = qdw_plan(&g, true).unwrap();
        // 802 816 outputs: 200 704 words of four bytes, 784 workgroups of 256 invocations.
        assert_eq!((plan.kind, plan.groups), (Kind::DepthwiseI8, [784, 1, 1]));
        assert_eq!((plan.a_words, plan.b_words, plan.c_words, plan.aux_words), (200_704, 72, 200_704, 128));
        assert_eq!((plan.params.m, plan.params.n, plan.params.b_cs, plan.params.layouts), (2, 12_544, 32, 0));
        // An i32 output has a word per output; past 65535 workgroups the dispatch is two-dimensional.
        assert_eq!(qdw_plan(&g, false).unwrap().c_words, 802_816);
        let big = Conv2dParams::new(64, 64, 256, 256, 64, 3, 3).groups(64).pad(Padding::uniform(1));
        assert_eq!(qdw_plan(&big.layout(TensorLayout::Nhwc).validate().unwrap(), true).unwrap().groups, [65535, 5, 1]);
    }

    #[test]
    fn dispatches_stay_within_the_limit() {
        // At most 65535 workgroups of 64 rows: 85 596 images of 7 x 7 output pixels.
        let small = Conv2dParams::new(100_000, 16, 7, 7, 16, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
        assert_eq!(images_per_dispatch(&small), 85_596);
        assert!(qconv_plan(&small, 85_596, (false, true), &RULE).is_ok());
        assert!(qconv_plan(&small, 85_597, (false, true), &RULE).is_err());
        // Coordinates at 2^30 and past (the shaders' signed arithmetic): an error, not a wrap.
        let far = Conv2dParams::new(1, 1, (1 << 29) + 1, 1, 1, 2, 1).dilation(1 << 29, 1).validate().unwrap();
        assert!(qconv_plan(&far, 1, (false, true), &RULE).is_err() && qdw_plan(&far, true).is_err());
        let near = Conv2dParams::new(1, 1, (1 << 25) + 1, 1, 1, 2, 1).dilation(1 << 25, 1).validate().unwrap();
        assert!(qconv_plan(&near, 1, (false, true), &RULE).is_ok());
        let big = Conv2dParams::new(1 << 12, 64, 512, 512, 64, 3, 3).validate().unwrap();
        assert!(qconv_plan(&big, 1 << 12, (false, true), &RULE).is_err());
    }
}
