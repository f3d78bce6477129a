//! Quantized conv2d: ONNX QLinearConv (and, with [`OutputStage::ACCUMULATOR`], ConvInteger) on
//! every geometry the f32 conv supports (stride, asymmetric padding, dilation, groups, NCHW/NHWC
//! activations, KCRS/KRSC weights).
//!
//! Per image and group it is the quantized GEMM of [`crate::quant::driver`] with A the image seen
//! through im2col (`ho*wo` rows, `(c/groups)*r*s` columns, never materialised: the driver packs
//! its rows straight from the input) and B the group's weights, transposed (one column per output
//! channel, so per-channel zero points and scales are per column). Padding reads as the input's
//! zero point, as ONNX specifies, so it adds nothing to the sum. Bit-identical to
//! [`qconv2d_reference`], the integer oracle.
#![allow(unsafe_code)]

use crate::conv::Conv2d;
use crate::error::{Error, Param, Result};
use crate::gemm::driver::{Executor, Pinned};
use crate::layout::{TensorLayout, WeightLayout};
use crate::quant::driver::{a_offset, fill_by_visit, qgemm_scratch_len, qgemm_unchecked, QOperands, QRows, QWorkspace};
use crate::quant::{
    accumulator_bound, fixed_narrow, float_narrow, in_range, narrow, OutputStage, PerChannel, QElem, QOperand,
};
use crate::view::MatRef;

/// The operands of a quantized conv2d: input and weights in the layouts of the geometry, their
/// zero points (the weights' per tensor or per output channel) and an optional `i32` bias per
/// output channel.
#[derive(Clone, Copy, Debug)]
pub struct QConv<'a, X: QOperand, W: QOperand> {
    /// Input (ONNX's x), `g.input_len()` elements.
    pub input: &'a [X],
    /// Zero point of the input (in X's range); also the value of the padding.
    pub x_zero: i32,
    /// Weights (ONNX's w), `g.weight_len()` elements.
    pub weight: &'a [W],
    /// Zero point of the weights, per tensor or per output channel (`k` values).
    pub w_zero: PerChannel<'a, i32>,
    /// Bias added to the accumulator, `k` values.
    pub bias: Option<&'a [i32]>,
}

impl<X: QOperand, W: QOperand> QConv<'_, X, W> {
    /// Checks buffer lengths against `g`, the zero points, the bias, the output stage for `Y`
    /// and the accumulator bound for the reduction `(c/groups)*r*s`.
    pub fn check<Y: QElem>(&self, g: &Conv2d, out: &OutputStage<'_>, output_len: usize) -> Result<()> {
        g.check_buffers(self.input.len(), self.weight.len(), self.bias.map(<[i32]>::len), output_len)?;
        let k = g.params().k;
        in_range(self.x_zero, X::MIN, X::MAX, Param::AZeroPoint)?;
        self.w_zero.validate(k, Param::BZeroPoint, |z| in_range(z, W::MIN, W::MAX, Param::BZeroPoint))?;
        out.validate::<Y>(k)?;
        let gemm_k = g.gemm_dims().2;
        accumulator_bound(gemm_k, self.x_zero, X::MIN, X::MAX, &self.w_zero, W::MIN, W::MAX, self.bias)
    }
}

/// The accumulator of output `(n, k, oy, ox)` from the definition: `bias[k] + sum (x - zx) * (w -
/// zw[k])` over the taps inside the input, in `i64`. The operands must have been checked.
pub fn accumulator<X: QOperand, W: QOperand>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    (n, k, oy, ox): (usize, usize, usize, usize),
) -> Result<i32> {
    let p = g.params();
    let (cg, kg) = (g.cg(), g.kg());
    let group = k / kg;
    let (zx, zw) = (i64::from(op.x_zero), i64::from(op.w_zero.at(k)));
    let mut acc = op.bias.map_or(0, |b| i64::from(b[k]));
    for ci in 0..cg {
        for r in 0..p.r {
            let Some(iy) = g.input_y(oy, r) else { continue };
            for s in 0..p.s {
                let Some(ix) = g.input_x(ox, s) else { continue };
                let x = i64::from(op.input[g.input_index(n, group * cg + ci, iy, ix)].widen());
                let w = i64::from(op.weight[g.weight_index(k, ci, r, s)].widen());
                acc += (x - zx) * (w - zw);
            }
        }
    }
    i32::try_from(acc).map_err(|_| Error::Overflow { param: Param::Accumulator })
}

/// The integer oracle: every output from [`accumulator`] and the one output stage. Runs
/// anywhere, microcontrollers included.
pub fn qconv2d_reference<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
) -> Result<()> {
    op.check::<Y>(g, out, output.len())?;
    let p = g.params();
    for n in 0..p.n {
        for k in 0..p.k {
            for oy in 0..g.ho() {
                for ox in 0..g.wo() {
                    output[g.output_index(n, k, oy, ox)] = out.apply::<Y>(accumulator(g, op, (n, k, oy, ox))?, k);
                }
            }
        }
    }
    Ok(())
}

/// `i32` words of scratch [`qconv2d_with`] needs on `workers` workers.
pub fn qconv2d_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Result<usize> {
    let (kg, hw, gemm_k) = g.gemm_dims();
    // The GEMM's, then one word per tap: its input offset from the pixel's first tap.
    qgemm_scratch_len(kernel, hw, kg, gemm_k, workers)?
        .checked_add(gemm_k)
        .ok_or(Error::Overflow { param: Param::Scratch })
}

/// Image `n` of the input seen through im2col for group `group`: row `oy * wo + ox`, column
/// `reduction_index(c, r, s)` (the weights' order), the input's zero point in the padding.
struct Im2col<'a, X> {
    g: &'a Conv2d,
    input: &'a [X],
    n: usize,
    group: usize,
    x_zero: i32,
    /// Rows gather through these: tap `p` of pixel `(oy, ox)` at `corner(oy, ox) + taps[p]`,
    /// every tap for interior pixels, the taps inside the input for border ones (None when an
    /// offset would not fit an i32).
    taps: Option<&'a [i32]>,
    /// Output rows and columns whose every tap is inside the input: `[lo, hi)`.
    interior: ([usize; 2], [usize; 2]),
}

/// The input offset of tap `p` (in the weights' order) from its pixel's top-left tap, for every
/// tap, into `out` (`gemm_k` words); false when one does not fit an i32.
fn tap_offsets(g: &Conv2d, out: &mut [i32]) -> bool {
    let p = g.params();
    let (ystride, xstride, cstride) = strides(g);
    for c in 0..g.cg() {
        for r in 0..p.r {
            for s in 0..p.s {
                let off = c * cstride + r * p.dilation[0] * ystride + s * p.dilation[1] * xstride;
                match i32::try_from(off) {
                    Ok(v) => out[g.reduction_index(c, r, s)] = v,
                    Err(_) => return false,
                }
            }
        }
    }
    true
}

/// `(ystride, xstride, cstride)` of the input's layout.
fn strides(g: &Conv2d) -> (usize, usize, usize) {
    let p = g.params();
    match p.layout {
        TensorLayout::Nchw => (p.w, 1, p.h * p.w),
        TensorLayout::Nhwc => (p.w * p.c, p.c, 1),
    }
}

/// `[lo, hi)` of the outputs along one axis whose taps all fall inside `[0, size)`: output `o`
/// reads `o * stride - pad + t * dilation` for `t < taps`.
fn interior_range(out: usize, size: usize, stride: usize, pad: usize, dilation: usize, taps: usize) -> [usize; 2] {
    let lo = pad.div_ceil(stride);
    let span = (taps - 1) * dilation;
    // o * stride - pad + span < size  <=>  o * stride < size + pad - span.
    let hi = if size + pad > span { ((size + pad - span - 1) / stride + 1).min(out) } else { 0 };
    [lo.min(hi), hi]
}

impl<X: QOperand> QRows for Im2col<'_, X> {
    fn rows(&self) -> usize {
        self.g.ho() * self.g.wo()
    }
    fn cols(&self) -> usize {
        self.g.gemm_dims().2
    }
    fn offset(&self) -> i32 {
        a_offset::<X>()
    }
    /// Interior pixels: one gather through the tap offsets. Border pixels: the same gather
    /// where a tap's row and column are inside the input (bit masks of the valid kernel rows and
    /// columns), the zero point elsewhere; kernels wider than 32 taps go through
    /// [`QRows::visit_row`].
    #[inline(always)]
    fn fill_row(&self, i: usize, off: i32, out: &mut [i16]) -> i32 {
        let g = self.g;
        let p = g.params();
        let (oy, ox) = (i / g.wo(), i % g.wo());
        let ([y0, y1], [x0, x1]) = self.interior;
        let Some(taps) = self.taps.filter(|_| p.r <= 32 && p.s <= 32) else {
            return fill_by_visit(self, i, off, out);
        };
        let (ystride, xstride, cstride) = strides(g);
        let image = self.n * p.c * p.h * p.w + self.group * g.cg() * cstride;
        let mut sum = 0i32;
        if (y0..y1).contains(&oy) && (x0..x1).contains(&ox) {
            let corner = image + (oy * p.stride[0] - p.pad.top) * ystride + (ox * p.stride[1] - p.pad.left) * xstride;
            let input = &self.input[corner..];
            for (o, &t) in out.iter_mut().zip(taps) {
                let v = input[t as usize].widen() + off;
                sum = sum.wrapping_add(v);
                *o = v as i16;
            }
            return sum;
        }
        // The top-left tap's offset, outside the input for a border pixel: signed. Every offset
        // fits an isize (the input is a slice).
        let corner = image as isize + (oy * p.stride[0]) as isize * ystride as isize
            - p.pad.top as isize * ystride as isize
            + (ox * p.stride[1]) as isize * xstride as isize
            - p.pad.left as isize * xstride as isize;
        let (mut rows, mut cols) = (0u32, 0u32);
        for r in 0..p.r {
            rows |= u32::from(g.input_y(oy, r).is_some()) << r;
        }
        for s in 0..p.s {
            cols |= u32::from(g.input_x(ox, s).is_some()) << s;
        }
        let zp = self.x_zero + off;
        let mut at = 0;
        let mut put = |valid: bool, out: &mut [i16]| {
            let v = if valid { self.input[(corner + taps[at] as isize) as usize].widen() + off } else { zp };
            sum = sum.wrapping_add(v);
            out[at] = v as i16;
            at += 1;
        };
        match p.weight_layout {
            WeightLayout::Kcrs => {
                for _ in 0..g.cg() {
                    for r in 0..p.r {
                        for s in 0..p.s {
                            put(rows >> r & cols >> s & 1 != 0, out);
                        }
                    }
                }
            }
            WeightLayout::Krsc => {
                for r in 0..p.r {
                    for s in 0..p.s {
                        let valid = rows >> r & cols >> s & 1 != 0;
                        for _ in 0..g.cg() {
                            put(valid, out);
                        }
                    }
                }
            }
        }
        sum
    }

    /// Taps in the weights' order, each input pixel's offset computed once per (r, s) (or
    /// (c, r)) and the channel stride of the layout added per channel: no division, no
    /// per-element layout branch.
    #[inline(always)]
    fn visit_row(&self, i: usize, mut f: impl FnMut(i32)) {
        let g = self.g;
        let p = g.params();
        let (oy, ox) = (i / g.wo(), i % g.wo());
        let (cg, c0, zp) = (g.cg(), self.group * g.cg(), self.x_zero);
        // Offset of (n, c, iy, ix) = image + iy * ystride + ix * xstride + c * cstride.
        let image = self.n * p.c * p.h * p.w;
        let (ystride, xstride, cstride) = match p.layout {
            TensorLayout::Nchw => (p.w, 1, p.h * p.w),
            TensorLayout::Nhwc => (p.w * p.c, p.c, 1),
        };
        let pixel = |iy: usize, ix: usize| image + iy * ystride + ix * xstride;
        match p.weight_layout {
            WeightLayout::Kcrs => {
                for c in 0..cg {
                    let ch = (c0 + c) * cstride;
                    for r in 0..p.r {
                        let iy = g.input_y(oy, r);
                        for s in 0..p.s {
                            f(match (iy, g.input_x(ox, s)) {
                                (Some(iy), Some(ix)) => self.input[pixel(iy, ix) + ch].widen(),
                                _ => zp,
                            });
                        }
                    }
                }
            }
            WeightLayout::Krsc => {
                for r in 0..p.r {
                    let iy = g.input_y(oy, r);
                    for s in 0..p.s {
                        match (iy, g.input_x(ox, s)) {
                            (Some(iy), Some(ix)) => {
                                let at = pixel(iy, ix) + c0 * cstride;
                                for c in 0..cg {
                                    f(self.input[at + c * cstride].widen());
                                }
                            }
                            _ => (0..cg).for_each(|_| f(zp)),
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise (one input and one output channel per group): a direct loop in safe code, which a
/// GEMM per channel (one column wide) would not beat. Per output row, in chunks of up to 64
/// outputs: for each tap inside the input, one pass over the chunk's outputs that read it (a
/// strided row of the input), then the output stage. Padding adds nothing. Checked operands only.
/// [`depthwise`] compiled for the kernel's ISA (its row loops then vectorize with the kernel's
/// vectors; the `QKernel` proves the CPU has them).
fn depthwise_for<X: QOperand, W: QOperand, Y: QElem>(
    kernel: &crate::arch::quant::QKernel,
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must run AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &mut [Y],
        ) {
            depthwise(g, op, out, output)
        }
        /// # Safety
        /// The CPU must run AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &mut [Y],
        ) {
            depthwise(g, op, out, output)
        }
        match kernel.isa() {
            // SAFETY: the kernel proves the CPU runs AVX2 (AVX-VNNI's detection requires it).
            crate::arch::Isa::Avx2 | crate::arch::Isa::AvxVnni => return unsafe { avx2(g, op, out, output) },
            // SAFETY: the kernel proves AVX-512F (and AVX2, which its detection requires).
            crate::arch::Isa::Avx512Vnni => return unsafe { avx512(g, op, out, output) },
            _ => {}
        }
    }
    let _ = kernel;
    depthwise(g, op, out, output)
}

#[inline(always)]
fn depthwise<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
) {
    // Outputs per pass: 64 for the vector units; 16 on a Cortex-M, whose rows are short and
    // which initialises the whole chunk of accumulators per row.
    const CHUNK: usize = if cfg!(target_arch = "arm") { 16 } else { 64 };
    let p = g.params();
    let (ho, wo) = (g.ho(), g.wo());
    let (ystride, xstride, cstride) = match p.layout {
        TensorLayout::Nchw => (p.w, 1, p.h * p.w),
        TensorLayout::Nhwc => (p.w * p.c, p.c, 1),
    };
    let (sw, dw, pl) = (p.stride[1], p.dilation[1], p.pad.left);
    let zx = op.x_zero;
    for k in 0..p.k {
        let stage = out.channel::<Y>(k);
        let zw = op.w_zero.at(k);
        let bias = op.bias.map_or(0, |b| b[k]);
        for n in 0..p.n {
            let plane = n * p.c * p.h * p.w + k * cstride;
            for oy in 0..ho {
                for ox0 in (0..wo).step_by(CHUNK) {
                    let len = CHUNK.min(wo - ox0);
                    let mut acc = [bias; CHUNK];
                    for r in 0..p.r {
                        let Some(iy) = g.input_y(oy, r) else { continue };
                        for s in 0..p.s {
                            let w = op.weight[g.weight_index(k, 0, r, s)].widen() - zw;
                            // Outputs ox whose input column ox*sw + s*dw - pl is inside [0, w).
                            let shift = s * dw;
                            let lo = pl.saturating_sub(shift).div_ceil(sw).max(ox0);
                            let hi =
                                if p.w + pl > shift { ((p.w + pl - shift - 1) / sw + 1).min(ox0 + len) } else { 0 };
                            if lo >= hi {
                                continue;
                            }
                            let first = plane + iy * ystride + (lo * sw + shift - pl) * xstride;
                            let step = sw * xstride;
                            let accs = &mut acc[lo - ox0..hi - ox0];
                            // Wrapping: exact, as the true sum fits (the accumulator bound).
                            let mac = |a: &mut i32, x: &X| *a = a.wrapping_add((x.widen() - zx).wrapping_mul(w));
                            if step == 1 {
                                // Contiguous (NCHW, stride 1): a loop the compiler vectorizes.
                                let n = accs.len();
                                accs.iter_mut().zip(&op.input[first..first + n]).for_each(|(a, x)| mac(a, x));
                            } else {
                                accs.iter_mut()
                                    .zip(op.input[first..].iter().step_by(step))
                                    .for_each(|(a, x)| mac(a, x));
                            }
                        }
                    }
                    match (stage.float_multiplier(), p.layout) {
                        // A contiguous output row in a one-byte type: one loop of the stage's
                        // own arithmetic, which vectorizes.
                        (Some(m), TensorLayout::Nchw) if narrow::<Y>() => {
                            let at = g.output_index(n, k, oy, ox0);
                            let (zp, lo, hi) = (stage.zero_point, stage.lo, stage.hi);
                            for (o, &a) in output[at..at + len].iter_mut().zip(&acc[..len]) {
                                *o = Y::narrow(float_narrow(a, m, zp, lo, hi));
                            }
                        }
                        // The fixed-point stage into a one-byte type (validated: multiplier >= 0,
                        // shift in [-31, 30]): its short form, along the output row.
                        (None, _) if narrow::<Y>() && stage.is_fixed() => {
                            let [mult, shift] = stage.scale_words();
                            let (zp, lo, hi) = (stage.zero_point, stage.lo, stage.hi);
                            let at = g.output_index(n, k, oy, ox0);
                            // Neighbouring outputs of a row: adjacent in NCHW, `k` apart in NHWC.
                            let step = match p.layout {
                                TensorLayout::Nchw => 1,
                                TensorLayout::Nhwc => p.k,
                            };
                            for (i, &a) in acc[..len].iter().enumerate() {
                                output[at + i * step] = Y::narrow(fixed_narrow(a, mult, shift, zp, lo, hi));
                            }
                        }
                        _ => {
                            for (i, &a) in acc[..len].iter().enumerate() {
                                output[g.output_index(n, k, oy, ox0 + i)] = stage.apply(a);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `output = out(conv2d(input, weight) + bias)` in `ws` (its int8 kernel, workers and scratch of
/// at least [`qconv2d_scratch_len`] words): validates everything, then runs one quantized GEMM per
/// image and group. The result is bit-identical to [`qconv2d_reference`].
pub fn qconv2d_with<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
    ws: QWorkspace<'_>,
) -> Result<()> {
    op.check::<Y>(g, out, output.len())?;
    let exec = Pinned::new(ws.exec)?;
    let required = qconv2d_scratch_len(ws.kernel, g, exec.workers())?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    let p = g.params();
    let (kg, hw, gemm_k) = g.gemm_dims();
    if output.is_empty() || hw == 0 || kg == 0 {
        return Ok(());
    }
    if g.cg() == 1 && kg == 1 {
        depthwise_for(ws.kernel, g, op, out, output);
        return Ok(());
    }
    let (taps, scratch) = ws.scratch.split_at_mut(gemm_k);
    let taps: Option<&[i32]> = tap_offsets(g, taps).then_some(taps);
    let interior = (
        interior_range(g.ho(), p.h, p.stride[0], p.pad.top, p.dilation[0], p.r),
        interior_range(g.wo(), p.w, p.stride[1], p.pad.left, p.dilation[1], p.s),
    );
    let cg = g.cg();
    let pointwise = p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == crate::conv::Padding::uniform(0);
    let a_view = |n: usize, group: usize| {
        let (start, rs_a, cs_a) = match p.layout {
            TensorLayout::Nchw => ((n * p.c + group * cg) * hw, 1, hw),
            TensorLayout::Nhwc => (n * hw * p.c + group * cg, p.c, 1),
        };
        MatRef::new(op.input.get(start..).unwrap_or(&[]), hw, cg, rs_a, cs_a)
    };
    let b_view = |group: usize| {
        let off = g.weight_group_offset(group);
        MatRef::new(op.weight.get(off..).unwrap_or(&[]), gemm_k, kg, 1, gemm_k)
    };
    // Every view is inside its buffer (checked against the geometry above); building each once
    // here first means no error can come after the first output is written.
    for group in 0..p.groups {
        b_view(group)?;
        if pointwise {
            (0..p.n).try_for_each(|n| a_view(n, group).map(drop))?;
        }
    }
    // Groups outer, images inner: each group's weights are packed once, for its first image.
    for group in 0..p.groups {
        for n in 0..p.n {
            // The group's weights are a dense row-major kg x gemm_k matrix; B is its transpose.
            let b = b_view(group)?;
            // The group's outputs as a kg x (ho*wo) matrix; C is its transpose.
            let (at, rs, cs) = g.output_gemm_view(n, group);
            let c = (output.as_mut_ptr().wrapping_add(at), cs, rs);
            let pack_b = n == 0;
            if pointwise {
                // A 1x1, stride-1, unpadded conv reads the input as a (ho*wo) x cg matrix.
                let a = a_view(n, group)?;
                let ops =
                    QOperands { a: &a, a_zero: op.x_zero, b: &b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
                // SAFETY: as below.
                unsafe { qgemm_unchecked(&ops, out, c, ws.kernel, &exec, scratch, pack_b) };
                continue;
            }
            let a = Im2col { g, input: op.input, n, group, x_zero: op.x_zero, taps, interior };
            let ops = QOperands { a: &a, a_zero: op.x_zero, b: &b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
            // SAFETY: the operands, the stage and the scratch were validated above, for these
            // per-image GEMMs (`hw x kg x gemm_k`, channels `group * kg ..`); the geometry puts
            // every `(pixel, channel)` of this image and group at `at + pixel * cs + channel * rs`
            // inside `output` (its length was checked), each at a distinct offset, and no other
            // image or group writes them; the executor is pinned. For images after the first,
            // the previous call packed this group's B into the same scratch.
            unsafe { qgemm_unchecked(&ops, out, c, ws.kernel, &exec, scratch, pack_b) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: the driver's pointer arithmetic over both layouts and groups.
    use super::*;
    use crate::conv::{Conv2dParams, Padding};
    use crate::gemm::driver::Sequential;

    #[test]
    fn groups_padding_and_both_layouts_match_the_oracle() {
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            let p = Conv2dParams::new(2, 4, 5, 4, 6, 3, 2)
                .pad(Padding::new(1, 0, 2, 1))
                .stride(2, 1)
                .groups(2)
                .layout(layout)
                .weight_layout(WeightLayout::Krsc);
            let g = p.validate().unwrap();
            let input: [u8; 160] = core::array::from_fn(|i| (i * 37 % 256) as u8);
            let weight: [i8; 72] = core::array::from_fn(|i| (i * 91 % 256) as u8 as i8);
            let wz = [1, -2, 0, 3, 5, -7];
            let op = QConv {
                input: &input,
                x_zero: 17,
                weight: &weight,
                w_zero: PerChannel::Channel(&wz),
                bias: Some(&[5, -9, 0, 100, 7, -3]),
            };
            let out = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.05, 120);
            let mut scratch = [0i32; 8192];
            for kernel in [crate::arch::quant::QKernel::generic(), crate::arch::quant::QKernel::best()] {
                let mut got = [0u8; 144];
                let mut want = [1u8; 144];
                let len = qconv2d_scratch_len(kernel, &g, 1).unwrap();
                let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
                qconv2d_with(&g, &op, &out, &mut got[..g.output_len()], ws).unwrap();
                qconv2d_reference(&g, &op, &out, &mut want[..g.output_len()]).unwrap();
                assert_eq!(got, want, "{layout:?} {}", kernel.id());
            }
        }
    }
}
