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
//!
//! On a kernel with a direct form (AMX, AVX-512 VNNI) a stride-1 conv instead stages each image
//! with its padding and lets the kernel read its A rows from it in place: no im2col packing at
//! all (see `Direct`).
#![allow(unsafe_code)]

use crate::arch::quant::FinishTile;
use crate::conv::Conv2d;
use crate::error::{Error, Param, Result};
use crate::gemm::driver::{planned_workers, Executor, Pinned, Shared};
use crate::layout::{TensorLayout, WeightLayout};
use crate::quant::driver::transpose8x8;
use crate::quant::driver::{
    a_offset, b_offset, bytes, bytes_mut, bytes_run, fill_by_visit, line_start, qconv_direct_scratch_len,
    qconv_direct_unchecked, qgemm_packed_scratch_len, qgemm_scratch_len, qgemm_unchecked, BSource, DirectImage,
    PackedPanels, QOperands, QRows, QWorkspace, SHORT_RUN,
};
use crate::quant::{
    accumulator_bound, float_narrow, in_range, narrow, pairs, FixedFolded, FixedNarrow, OutputStage, PerChannel, QElem,
    QOperand,
};
use crate::view::MatRef;

mod depthwise_nhwc;

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
        self.check_with_weight_len::<Y>(g, out, output_len, self.weight.len())
    }

    /// [`QConv::check`] with `weight_len` for the weights' length (packed weights have none).
    pub(crate) fn check_with_weight_len<Y: QElem>(
        &self,
        g: &Conv2d,
        out: &OutputStage<'_>,
        output_len: usize,
        weight_len: usize,
    ) -> Result<()> {
        g.check_buffers(self.input.len(), weight_len, self.bias.map(<[i32]>::len), output_len)?;
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

/// `i32` words of scratch [`qconv2d_with`] needs on `workers` workers: the least it runs in
/// (for fixed buffers on a microcontroller). With [`qconv2d_staged_scratch_len`] words it runs
/// faster where that is more.
pub fn qconv2d_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Result<usize> {
    least_scratch_len(kernel, g, workers, false)
}

/// [`qconv2d_scratch_len`], with `packed` for weights packed ahead (no region for B's panels).
fn least_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize, packed: bool) -> Result<usize> {
    let (kg, hw, gemm_k) = g.gemm_dims();
    let gemm = if packed { qgemm_packed_scratch_len } else { qgemm_scratch_len };
    // The GEMM's, then one word per tap: its input offset from the pixel's first tap.
    gemm(kernel, hw, kg, gemm_k, workers)?.checked_add(gemm_k).ok_or(Error::Overflow { param: Param::Scratch })
}

/// `i32` words of scratch with which [`qconv2d_with`] stages the operands of a conv whose
/// im2col rows are scattered (NCHW activations, or KCRS weights): each image's group of channels
/// copied as NHWC and the weights reordered as KRSC, so that every kernel tap's channels are one
/// run of the input, which packs by copies instead of a gather per element (64->64 3x3 @56 on an
/// AMX Xeon: 5x). The sums are exact integers in any order, so the result is the same. Without a
/// direct form, equal to [`qconv2d_scratch_len`] where nothing is staged: NHWC input with KRSC
/// weights, one input channel per group (depthwise), 1x1 stride-1 unpadded convs (read as a
/// matrix), and KCRS weights with fewer than a quarter of an output pixel per output channel
/// (where reordering them costs more than it saves).
///
/// Where the kernel has a direct form (AMX, AVX-512 VNNI) and the conv is one it runs well
/// (stride 1, channels that fill 64-byte blocks, few rows dropped: `Direct::plan`), these are
/// the words of the direct conv instead, which stages the input with its padding and reads it
/// in place: no im2col packing at all.
pub fn qconv2d_staged_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Result<usize> {
    if let Some(d) = Direct::plan(kernel, g, workers) {
        return Ok(qconv2d_scratch_len(kernel, g, workers)?.max(d.words));
    }
    im2col_staged_scratch_len(kernel, g, workers, false)
}

/// The scratch of the im2col path with its operands staged (see [`qconv2d_staged_scratch_len`]).
/// With `packed`, for weights packed ahead.
fn im2col_staged_scratch_len(
    kernel: &crate::arch::quant::QKernel,
    g: &Conv2d,
    workers: usize,
    packed: bool,
) -> Result<usize> {
    let least = least_scratch_len(kernel, g, workers, packed)?;
    match staging(g)? {
        Some(st) => least
            .checked_add(st.input_words)
            .and_then(|w| w.checked_add(st.weight_words))
            .ok_or(Error::Overflow { param: Param::Scratch }),
        None => Ok(least),
    }
}

/// The order in which weights packed ahead ([`crate::quant::packed::QPackedConv`]) hold each
/// output channel's reduction: the one of the path a conv of `g` takes on the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightOrder {
    /// One input and one output channel per group: the weights as they are (KCRS = KRSC).
    Depthwise,
    /// The direct form's: per tap, `cp` channels (the group's, then canonical zeros).
    Direct { cp: usize },
    /// KRSC's (the staged im2col's, and the one whose im2col rows of NHWC input are runs).
    Krsc,
}

/// The path a conv of `g` with packed weights takes on `kernel`, named by its weight order. It
/// does not depend on the image size ([`Direct::worth`] does not decide it), so weights packed
/// once serve any image. Where the direct form's order is KRSC's (the group's channels whole
/// 64-byte blocks) on a kernel whose direct form is not always worth it (not AMX), the order is
/// [`WeightOrder::Krsc`], and each call takes the direct form or im2col as for unpacked weights.
pub(crate) fn weight_order(kernel: &crate::arch::quant::QKernel, g: &Conv2d) -> WeightOrder {
    let tiles64 = kernel.pack == crate::arch::quant::QPack::Tiles64;
    if g.cg() == 1 && g.kg() == 1 {
        WeightOrder::Depthwise
    } else if let Some(d) = Direct::feasible(kernel, g, 1).filter(|d| tiles64 || d.cp != g.cg()) {
        WeightOrder::Direct { cp: d.cp }
    } else {
        WeightOrder::Krsc
    }
}

/// `g` with KRSC weights: the geometry a packed conv's im2col reads through.
fn krsc(g: &Conv2d) -> Result<Conv2d> {
    crate::conv::Conv2dParams { weight_layout: WeightLayout::Krsc, ..*g.params() }.validate()
}

/// `i32` words of scratch [`crate::quant::packed::qconv2d_packed_with`] needs on `workers`
/// workers: the least it runs in. With [`qconv2d_packed_staged_scratch_len`] words it runs
/// faster where that is more.
pub fn qconv2d_packed_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Result<usize> {
    packed_scratch_len(kernel, g, workers, false)
}

/// `i32` words of scratch with which [`crate::quant::packed::qconv2d_packed_with`] stages the
/// input (see [`qconv2d_staged_scratch_len`]; packed weights are in the staged order already).
pub fn qconv2d_packed_staged_scratch_len(
    kernel: &crate::arch::quant::QKernel,
    g: &Conv2d,
    workers: usize,
) -> Result<usize> {
    packed_scratch_len(kernel, g, workers, true)
}

fn packed_scratch_len(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize, staged: bool) -> Result<usize> {
    match weight_order(kernel, g) {
        // The direct form has no other path for weights in its order.
        WeightOrder::Direct { .. } => Direct::feasible(kernel, g, workers)
            .map(|d| d.packed_words)
            .ok_or(Error::Overflow { param: Param::Scratch }),
        // Staged im2col, or the direct form where it reads KRSC weights and is worth it
        // (`packed_direct`, never for depthwise).
        _ if staged => {
            let im2col = im2col_staged_scratch_len(kernel, &krsc(g)?, workers, true)?;
            Ok(packed_direct(kernel, g, workers).map_or(im2col, |d| im2col.max(d.packed_words)))
        }
        _ => least_scratch_len(kernel, g, workers, true),
    }
}

/// The direct plan for weights packed in KRSC's order, where the direct form reads them (its
/// order is KRSC's: `cp == cg`) and is worth it.
fn packed_direct(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Option<Direct> {
    Direct::plan(kernel, g, workers).filter(|d| d.cp == g.cg())
}

/// How [`qconv2d_with`] stages a conv (see [`qconv2d_staged_scratch_len`]).
struct Staging {
    /// One image's group of channels as NHWC with KRSC weights: `c = cg`, `k = kg`, one group,
    /// one image. Im2col reads through it; the output keeps the caller's geometry.
    g: Conv2d,
    /// Words of the staged input (`h * w * cg` bytes).
    input_words: usize,
    /// Words of the reordered weights (`k * gemm_k` bytes), zero where they are KRSC already.
    weight_words: usize,
}

/// The staging of `g`, where it applies: a conv the im2col packs (not 1x1 stride-1 unpadded,
/// not depthwise) with more than one channel per group, not already NHWC with KRSC weights.
fn staging(g: &Conv2d) -> Result<Option<Staging>> {
    let p = g.params();
    let (kg, _, gemm_k) = g.gemm_dims();
    let cg = g.cg();
    let fast = p.layout == TensorLayout::Nhwc && p.weight_layout == WeightLayout::Krsc;
    // Reordering the weights costs a move per weight, a staged im2col saves about one per
    // weight per output pixel: below a quarter of a pixel per output channel (512->512 3x3 @7 at
    // batch 1: 0.1) the reorder costs more than it saves (measured: 72 -> 50 GOPS there, 100 ->
    // 173 at 256->256 @14, 0.77).
    let reorder_pays = p.weight_layout == WeightLayout::Krsc || p.n * g.ho() * g.wo() * 4 >= p.k;
    if fast || cg <= 1 || pointwise(g) || !reorder_pays {
        return Ok(None);
    }
    let staged = crate::conv::Conv2dParams {
        n: 1,
        c: cg,
        k: kg,
        groups: 1,
        layout: TensorLayout::Nhwc,
        weight_layout: WeightLayout::Krsc,
        ..*p
    }
    .validate()?;
    let sp = Param::Scratch;
    let input_words = crate::error::mul(crate::error::mul(p.h, p.w, sp)?, cg, sp)?.div_ceil(4);
    let weight_words =
        if p.weight_layout == WeightLayout::Krsc { 0 } else { crate::error::mul(p.k, gemm_k, sp)?.div_ceil(4) };
    Ok(Some(Staging { g: staged, input_words, weight_words }))
}

/// How [`qconv2d_with`] runs a conv on a kernel's direct form ([`QKernel::direct`]): per
/// image and group, the group's channels staged as NHWC with the padding around them as pixels
/// of the zero point, each pixel `cp` bytes (the channels rounded up to 64, the rest the zero
/// point too); then the staged pixel `q` is row `q` of an implicit GEMM whose reduction is the
/// `cp` bytes at each tap's offset from it (stride 1: the output pixel `(q / width, q % width)`
/// reads the staged pixels `q + (r * dilation) * width + s * dilation`). The kernel reads its
/// A rows from the image in place (AMX loads them as tiles, VNNI broadcasts them), so nothing
/// is packed per tile. Rows past `wo` in each output row (`width - wo` of them) are computed and
/// dropped.
///
/// The weights are staged as KRSC with `cp` channels per tap, the padding's canonical value 0;
/// as the image's padding channels hold the zero point, every padded step adds `(zx - zx) * w =
/// 0` to the true sum, which is therefore the conv's, and the driver's zero-point identity holds
/// for the padded reduction as for any other.
///
/// [`QKernel::direct`]: crate::arch::quant::QKernel
struct Direct {
    /// Bytes per staged pixel: the group's channels rounded up to 64.
    cp: usize,
    /// Staged pixels per row: the padded input's width.
    width: usize,
    /// Staged rows of the padded input.
    height: usize,
    /// Rows of the implicit GEMM per image: `(ho - 1) * width + wo`.
    rows: usize,
    /// Staged pixels in the buffer: the padded input, and every pixel the last tile's taps read
    /// (also the words of the per-pixel sums, one each).
    pixels: usize,
    /// Words of the GEMM's scratch (packed B, per-worker tiles).
    gemm_words: usize,
    /// Words of the GEMM's scratch with weights packed ahead (no B region).
    packed_gemm_words: usize,
    /// Words of the staged image (with a line's worth to align it).
    image_words: usize,
    /// Words of the staged weights: 0 where the caller's are in the staged order already (KRSC,
    /// or KCRS at 1x1, with `cp` channels).
    weight_words: usize,
    /// Every word: the tap offsets (`gemm_k`), then the above.
    words: usize,
    /// Every word with weights packed ahead: no B region, no staged weights.
    packed_words: usize,
}

impl Direct {
    /// The plan for `g` on `kernel`, where the kernel has a direct form and the conv is one it
    /// runs well: stride 1, more than one channel per group, and channels that pad to 64 with
    /// at most a quarter more reduction steps than im2col's rounding (3 channels in 64 would be
    /// 21x the work), and few rows dropped ([`Direct::worth`]). None where not, or where a size
    /// overflows.
    fn plan(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Option<Direct> {
        Self::feasible(kernel, g, workers).filter(|d| d.worth(kernel, g))
    }

    /// Whether the direct form beats im2col for `g` on `kernel`. Rows computed and dropped
    /// (the border columns, the last tile's rounding) against the A panels the im2col path
    /// packs, whose cost per product falls with the output channels `kg` that reuse them. AMX's
    /// packing is dear (64-byte rows gathered per tile): its direct form wins everywhere
    /// (512->512 3x3 @7, 31% dropped: 3.5x). A kernel with 4-byte groups packs cheaply: on
    /// AVX-512 VNNI (Zen 4, one thread) the direct form gave 64->64 3x3 @56 (4% dropped) 1.6x,
    /// 128->128 @28 (7%) 1.2x, 256->256 @14 (14%) 1.04x, 512->512 @7 (31%) 0.9x: it is taken
    /// where the dropped share times `kg` is at most 32. Depends on the image size, so it never
    /// decides a packed weight order ([`weight_order`]).
    fn worth(&self, kernel: &crate::arch::quant::QKernel, g: &Conv2d) -> bool {
        if kernel.pack == crate::arch::quant::QPack::Tiles64 {
            return true;
        }
        let (outputs, kg) = (g.ho() * g.wo(), g.gemm_dims().0);
        let tiles = self.rows.next_multiple_of(kernel.mr);
        (tiles - outputs).checked_mul(kg).is_some_and(|d| d <= outputs.saturating_mul(32))
    }

    /// The plan where the kernel has a direct form and `g` is one it runs (see [`Direct::plan`]),
    /// whether or not it is [`Direct::worth`] it.
    fn feasible(kernel: &crate::arch::quant::QKernel, g: &Conv2d, workers: usize) -> Option<Direct> {
        let p = g.params();
        let (cg, (kg, _, gemm_k)) = (g.cg(), g.gemm_dims());
        let (ho, wo) = (g.ho(), g.wo());
        // (`DIRECT_KERNELS`: not compiled where no kernel has the form.)
        if !crate::quant::driver::DIRECT_KERNELS
            || kernel.direct.is_none()
            || p.stride != [1, 1]
            || cg < 2
            || ho == 0
            || wo == 0
            || kg == 0
        {
            return None;
        }
        let taps = p.r * p.s;
        let cp = cg.checked_next_multiple_of(64)?;
        let kp = taps.checked_mul(cp)?;
        if kp.checked_mul(4)? > gemm_k.checked_next_multiple_of(64)?.checked_mul(5)? {
            return None;
        }
        let width = p.pad.left.checked_add(p.w)?.checked_add(p.pad.right)?;
        let height = p.pad.top.checked_add(p.h)?.checked_add(p.pad.bottom)?;
        let rows = (ho - 1).checked_mul(width)?.checked_add(wo)?;
        let reach = ((p.r - 1) * p.dilation[0]).checked_mul(width)?.checked_add((p.s - 1) * p.dilation[1])?;
        let tiles = rows.checked_next_multiple_of(kernel.mr)?;
        let pixels = height.checked_mul(width)?.max(tiles.checked_add(reach)?);
        // The kernel takes the taps' byte offsets as i32.
        i32::try_from(pixels.checked_mul(cp)?).ok()?;
        let gemm_words = qconv_direct_scratch_len(kernel, (rows, kg, kp), workers, false).ok()?;
        let packed_gemm_words = qconv_direct_scratch_len(kernel, (rows, kg, kp), workers, true).ok()?;
        let image_words = (pixels * cp).div_ceil(4).checked_add(16)?;
        // KRSC with whole blocks of channels is the staged order already; so is KCRS at 1x1.
        let in_place = cp == cg && (p.weight_layout == WeightLayout::Krsc || taps == 1);
        let weight_words = if in_place { 0 } else { p.k.checked_mul(kp)?.div_ceil(4) };
        let sum = |words: &[usize]| words.iter().try_fold(gemm_k, |a, &w| a.checked_add(w));
        let words = sum(&[gemm_words, image_words, pixels, weight_words])?;
        let packed_words = sum(&[packed_gemm_words, image_words, pixels])?;
        Some(Direct {
            cp,
            width,
            height,
            rows,
            pixels,
            gemm_words,
            packed_gemm_words,
            image_words,
            weight_words,
            words,
            packed_words,
        })
    }
}

/// [`qconv2d_with`]'s loop over groups and images on the direct form (see [`Direct`]): the
/// weights staged once, then per group and image the image staged and the direct GEMM run.
#[allow(clippy::too_many_arguments)]
fn run_direct<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    d: &Direct,
    op: &QConv<'_, X, W>,
    packed: Option<&PackedView<'_>>,
    out: &OutputStage<'_>,
    output: &mut [Y],
    (kernel, exec): (&crate::arch::quant::QKernel, &Pinned<'_>),
    scratch: &mut [i32],
) {
    let p = g.params();
    let (kg, _, gemm_k) = g.gemm_dims();
    let kp = p.r * p.s * d.cp;
    let (taps, rest) = scratch.split_at_mut(gemm_k);
    let (gemm, rest) = rest.split_at_mut(if packed.is_some() { d.packed_gemm_words } else { d.gemm_words });
    let (image, rest) = rest.split_at_mut(d.image_words);
    let (sums, wbuf) = rest.split_at_mut(d.pixels);
    // Each tap's byte offset from the pixel of its row (they fit an i32: `Direct::plan`).
    let taps = &mut taps[..p.r * p.s];
    for (t, o) in taps.iter_mut().enumerate() {
        let (r, s) = (t / p.s, t % p.s);
        *o = ((r * p.dilation[0] * d.width + s * p.dilation[1]) * d.cp) as i32;
    }
    let weights: &[W] = if packed.is_none() && d.weight_words > 0 {
        let staged = &mut as_elems::<W>(wbuf)[..p.k * kp];
        on_workers(exec, staged, kp, |k, row| stage_weight_row(g, op.weight, k, row));
        staged
    } else {
        op.weight
    };
    let image = as_elems::<u8>(image);
    let start = line_start(image);
    let image = &mut image[start..][..d.pixels * d.cp];
    let row_bytes = d.width * d.cp;
    // The canonical zero point: the image's padding, and the GEMM's A zero point.
    let za = op.x_zero + a_offset::<X>();
    // The write-out reads row sums only where a canonical weight zero point is nonzero.
    let need_sums = (0..p.k).any(|j| op.w_zero.at(j) + b_offset::<W>() != 0);
    for group in 0..p.groups {
        // The staged weights hold `k` rows of `kp` (or are the caller's, `kp = gemm_k`); packed
        // ones are in this order already.
        let b_mat;
        let b = match packed {
            Some(pv) => BSource::Packed(pv.group(group, kg)),
            None => {
                let Ok(b) = MatRef::new(weights.get(group * kg * kp..).unwrap_or(&[]), kp, kg, 1, kp) else { return };
                b_mat = b;
                BSource::Matrix(&b_mat)
            }
        };
        for n in 0..p.n {
            // Row by row on the workers; the pixels past the padded input are the zero point.
            let (rows, tail) = image.split_at_mut(d.height * row_bytes);
            tail.fill(za as u8);
            on_workers(exec, rows, row_bytes, |yy, row| {
                stage_direct_row(g, d, op.input, (n, group * g.cg(), yy), za as u8, row)
            });
            let pixel_sums = if need_sums {
                for (s, px) in sums.iter_mut().zip(image.chunks_exact(d.cp)) {
                    *s = px.iter().map(|&b| i32::from(b)).sum();
                }
                Some(&sums[..])
            } else {
                None
            };
            let a = DirectImage {
                image,
                pixel_bytes: d.cp,
                taps: &taps[..],
                rows: d.rows,
                width: d.width,
                wo: g.wo(),
                pixel_sums,
            };
            let ops = QOperands { a: &a, a_zero: za, b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
            let (at, rs, cs) = g.output_gemm_view(n, group);
            let c = (output.as_mut_ptr().wrapping_add(at), cs, rs);
            // SAFETY: `qconv2d_with` validated the operands, the stage and the accumulator bound
            // for `g`; the padded reduction has the same true sums (see `Direct`). The scratch
            // holds the direct GEMM's words (`Direct::plan`); the kernel has a direct form;
            // `cp` is a multiple of 64; the image holds `pixels` staged pixels, which cover
            // every tile of `mr` rows below `rows` at every tap (`plan`), and the pixel sums
            // cover them too, present where a weight zero point is nonzero. The output view is
            // `g`'s for image `n`, group `group`, as in `qconv2d_with`; C's row `oy * wo + ox`
            // is output pixel `(oy, ox)`. B is packed for each group's first image (packed
            // weights were checked to be in this order for this kernel's format and shape).
            unsafe { qconv_direct_unchecked(&ops, out, c, kernel, exec, gemm, n == 0) };
        }
    }
}

/// `f(i, chunk)` for every `chunk_len` chunk `i` of `buf`, the chunks dealt round-robin to the
/// workers (each chunk to one worker, so the writes are disjoint).
fn on_workers<T: Send>(exec: &Pinned<'_>, buf: &mut [T], chunk_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let (workers, chunks) = (planned_workers(exec), buf.len() / chunk_len.max(1));
    if workers <= 1 || chunks <= 1 {
        buf.chunks_exact_mut(chunk_len.max(1)).enumerate().for_each(|(i, c)| f(i, c));
        return;
    }
    let base = Shared(buf.as_mut_ptr());
    exec.run(&|w| {
        for i in (w..chunks).step_by(workers) {
            // SAFETY: chunk `i < chunks` lies inside `buf`, which is borrowed mutably for the
            // call; each index goes to one worker (`i % workers == w`), so no chunk is aliased.
            let chunk = unsafe { core::slice::from_raw_parts_mut(base.ptr().add(i * chunk_len), chunk_len) };
            f(i, chunk);
        }
    });
}

/// Row `yy` of the padded input of image `n`, channels `c0 .. c0 + cg`, staged into `row` for
/// [`Direct`]: each input pixel's channels shifted to canonical `u8` at its padded position,
/// everything else (the conv's padding, the channels past `cg`) `za`.
fn stage_direct_row<X: QOperand>(
    g: &Conv2d,
    d: &Direct,
    input: &[X],
    (n, c0, yy): (usize, usize, usize),
    za: u8,
    row: &mut [u8],
) {
    let p = g.params();
    let (cg, cp) = (g.cg(), d.cp);
    let off = a_offset::<X>();
    let Some(y) = yy.checked_sub(p.pad.top).filter(|&y| y < p.h) else {
        row.fill(za);
        return;
    };
    let (left, rest) = row.split_at_mut(p.pad.left * cp);
    let (pixels, right) = rest.split_at_mut(p.w * cp);
    left.fill(za);
    right.fill(za);
    if cp > cg {
        for px in pixels.chunks_exact_mut(cp) {
            px[cg..].fill(za);
        }
    }
    match p.layout {
        TensorLayout::Nhwc => {
            for (x, px) in pixels.chunks_exact_mut(cp).enumerate() {
                let at = ((n * p.h + y) * p.w + x) * p.c + c0;
                bytes_run(&input[at..at + cg], off, &mut px[..cg], false);
            }
        }
        TensorLayout::Nchw => {
            // Channel c's row y is `w` bytes of its plane: whole blocks of 8 channels x 8
            // pixels transposed as eight u64 (the shift to u8 is a flip of each byte's top
            // bit, `off` being 0 or 128), the rest byte by byte.
            let plane = p.h * p.w;
            let src = bytes(&input[(n * p.c + c0) * plane..(n * p.c + c0 + cg) * plane]);
            let flip = if off != 0 { 0x8080_8080_8080_8080u64 } else { 0 };
            let (whole, w8) = (cg / 8 * 8, p.w / 8 * 8);
            for ch0 in (0..whole).step_by(8) {
                for x0 in (0..w8).step_by(8) {
                    for (j, col) in channel_block(src, ch0 * plane + y * p.w + x0, plane).into_iter().enumerate() {
                        let at = (x0 + j) * cp + ch0;
                        pixels[at..at + 8].copy_from_slice(&(col ^ flip).to_le_bytes());
                    }
                }
            }
            for ch in 0..cg {
                let from = if ch < whole { w8 } else { 0 };
                let line = &src[ch * plane + y * p.w..][..p.w];
                for x in from..p.w {
                    pixels[x * cp + ch] = (i32::from(line[x]) + off) as u8;
                }
            }
        }
    }
}

/// Output channel `k`'s weights staged into `out` (`taps * cp`) in KRSC's reduction order: per
/// tap, the group's `cg` channels, then (for [`Direct`], whose `cp` pads them to 64) `cp - cg`
/// of the value whose canonical form is 0.
fn stage_weight_row<W: QOperand>(g: &Conv2d, weight: &[W], k: usize, out: &mut [W]) {
    let p = g.params();
    let (cg, (_, _, gemm_k)) = (g.cg(), g.gemm_dims());
    let taps = p.r * p.s;
    let cp = out.len() / taps;
    let row = &weight[k * gemm_k..(k + 1) * gemm_k];
    let pad = W::narrow(-b_offset::<W>());
    match p.weight_layout {
        WeightLayout::Krsc => {
            for (run, chans) in out.chunks_exact_mut(cp).zip(row.chunks_exact(cg)) {
                run[..cg].copy_from_slice(chans);
            }
        }
        WeightLayout::Kcrs => {
            // Channel c's taps are `row[c * taps ..][..taps]`: eight channels' taps (one
            // contiguous read) give each tap eight channels, stored as one run.
            let whole = cg / 8 * 8;
            for (c0, block) in row[..whole * taps].chunks_exact(8 * taps).enumerate() {
                for t in 0..taps {
                    let v: [W; 8] = core::array::from_fn(|i| block[i * taps + t]);
                    out[t * cp + c0 * 8..][..8].copy_from_slice(&v);
                }
            }
            for c in whole..cg {
                for t in 0..taps {
                    out[t * cp + c] = row[c * taps + t];
                }
            }
        }
    }
    if cp > cg {
        for run in out.chunks_exact_mut(cp) {
            run[cg..].fill(pad);
        }
    }
}

/// A 1x1, stride-1, unpadded conv: the GEMM reads its input as a matrix.
fn pointwise(g: &Conv2d) -> bool {
    let p = g.params();
    p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == crate::conv::Padding::uniform(0)
}

/// Bytes seen as operand elements.
fn elems<X: QOperand>(b: &[u8]) -> &[X] {
    const { assert!(core::mem::size_of::<X>() == 1 && core::mem::align_of::<X>() == 1) };
    // SAFETY: `X` is `u8` or `i8` (sealed; size and alignment asserted): every bit pattern valid.
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<X>(), b.len()) }
}

/// Scratch words seen as operand elements (a staging buffer).
pub(crate) fn as_elems<X: QOperand>(words: &mut [i32]) -> &mut [X] {
    const { assert!(core::mem::size_of::<X>() == 1 && core::mem::align_of::<X>() == 1) };
    // SAFETY: `X` is `u8` or `i8` (`QOperand` is sealed; the assertion above checks the size):
    // one byte, alignment one, every bit pattern valid; the slice covers the words' bytes and
    // borrows them mutably for its lifetime.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<X>(), words.len() * 4) }
}

/// Copies channels `c0 .. c0 + cg` of image `n` of `input` (in `g`'s layout) into `out` as an
/// NHWC image of `cg` channels. NCHW in blocks of 64 pixels, so that the block's outputs stay in
/// L1 while the channels' rows stream past.
fn stage_input<X: QOperand>(g: &Conv2d, input: &[X], n: usize, c0: usize, out: &mut [X]) {
    let p = g.params();
    let (hw, cg) = (p.h * p.w, g.cg());
    let out = &mut out[..hw * cg];
    match p.layout {
        TensorLayout::Nchw => {
            let image = &input[(n * p.c + c0) * hw..(n * p.c + c0 + cg) * hw];
            // Whole blocks of 8 channels x 8 pixels as eight u64 transposed in registers; the
            // channels past the last whole block of 8 byte by byte.
            let (image, out) = (bytes(image), bytes_mut(out));
            let whole = cg / 8 * 8;
            for px0 in (0..hw).step_by(64) {
                let px1 = (px0 + 64).min(hw);
                let px8 = px0 + (px1 - px0) / 8 * 8;
                for ch0 in (0..whole).step_by(8) {
                    for px in (px0..px8).step_by(8) {
                        for (j, col) in channel_block(image, ch0 * hw + px, hw).into_iter().enumerate() {
                            let at = (px + j) * cg + ch0;
                            out[at..at + 8].copy_from_slice(&col.to_le_bytes());
                        }
                    }
                }
                for (ch, row) in image.chunks_exact(hw).enumerate() {
                    let pixels = if ch < whole { px8..px1 } else { px0..px1 };
                    for px in pixels {
                        out[px * cg + ch] = row[px];
                    }
                }
            }
        }
        TensorLayout::Nhwc => {
            for (px, to) in out.chunks_exact_mut(cg).enumerate() {
                let at = (n * hw + px) * p.c + c0;
                to.copy_from_slice(&input[at..at + cg]);
            }
        }
    }
}

/// Eight pixels of eight NCHW channels as eight pixels' channels: the 8 bytes at `first + i *
/// plane` for channel `i`, transposed (result `j` holds pixel `j`'s eight channels).
#[inline(always)]
fn channel_block(src: &[u8], first: usize, plane: usize) -> [u64; 8] {
    let rows = core::array::from_fn(|i| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&src[first + i * plane..][..8]);
        u64::from_le_bytes(b)
    });
    transpose8x8(rows)
}

/// The weights of `g` (every group) reordered as KRSC into `out`: the same rows of `gemm_k`,
/// each in KRSC's reduction order.
fn stage_weights<W: QOperand>(g: &Conv2d, weight: &[W], staged: &Conv2d, out: &mut [W]) {
    // The staged geometry's reduction index of (c, r, s) is `(r * s_taps + s) * cg + c`.
    let p = g.params();
    let (_, _, gemm_k) = g.gemm_dims();
    debug_assert!(p.weight_layout == WeightLayout::Kcrs && staged.params().weight_layout == WeightLayout::Krsc);
    for (k, to) in out[..p.k * gemm_k].chunks_exact_mut(gemm_k).enumerate() {
        stage_weight_row(g, weight, k, to);
    }
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

impl<X: QOperand> Im2col<'_, X> {
    /// The length of the runs of consecutive taps (in the weights' order) that read consecutive
    /// input elements, where every tap is in one: for NHWC input and KRSC weights (channels
    /// innermost in both), a kernel row's taps where they are adjacent pixels of all the
    /// input's channels (one group, no horizontal dilation: conv1's 7 x 3 = 21 bytes), else
    /// each tap's group of channels. None elsewhere (NCHW with KCRS has runs of a kernel row,
    /// too short to beat the gather: measured slower at 3x3). Border pixels copy each tap's
    /// channels (`cg`) on their own through i16, or as bytes one copy per kernel row's inside
    /// columns ([`Im2col::border_row_bytes`]).
    fn run(&self) -> Option<usize> {
        let p = self.g.params();
        let cg = self.g.cg();
        let row = if p.groups == 1 && p.dilation[1] == 1 { p.s * cg } else { cg };
        (p.layout == TensorLayout::Nhwc && p.weight_layout == WeightLayout::Krsc && cg > 1).then_some(row)
    }

    /// The input from row `i`'s top-left tap, when every tap of that output pixel is inside
    /// the input (tap `p` is then at `taps[p]`); None for border pixels.
    #[inline(always)]
    fn interior_input(&self, i: usize) -> Option<&[X]> {
        let g = self.g;
        let p = g.params();
        let (oy, ox) = (i / g.wo(), i % g.wo());
        let ([y0, y1], [x0, x1]) = self.interior;
        if !((y0..y1).contains(&oy) && (x0..x1).contains(&ox)) {
            return None;
        }
        let (ystride, xstride, cstride) = strides(g);
        let image = self.n * p.c * p.h * p.w + self.group * g.cg() * cstride;
        let corner = image + (oy * p.stride[0] - p.pad.top) * ystride + (ox * p.stride[1] - p.pad.left) * xstride;
        Some(&self.input[corner..])
    }

    /// The offset of output pixel `(oy, ox)`'s top-left tap in the input, outside it for a
    /// border pixel: signed. Every offset fits an isize (the input is a slice).
    #[inline(always)]
    fn signed_corner(&self, oy: usize, ox: usize) -> isize {
        let p = self.g.params();
        let (ystride, xstride, cstride) = strides(self.g);
        let image = self.n * p.c * p.h * p.w + self.group * self.g.cg() * cstride;
        image as isize + (oy * p.stride[0]) as isize * ystride as isize - p.pad.top as isize * ystride as isize
            + (ox * p.stride[1]) as isize * xstride as isize
            - p.pad.left as isize * xstride as isize
    }

    /// A border pixel's row as bytes where each kernel row is one run (NHWC, KRSC, one group, no
    /// horizontal dilation: conv1): per kernel row, the zero point where the row is outside the
    /// input, else the zero point for the columns outside it and one copy of the columns inside
    /// (a contiguous range: a column's input position grows with it). None elsewhere (the
    /// caller then takes [`QRows::fill_row`]). The bytes past the row are not written.
    fn border_row_bytes(&self, i: usize, off: i32, out: &mut [u8], with_sum: bool) -> Option<i32> {
        let g = self.g;
        let p = g.params();
        let (cg, taps) = (g.cg(), self.taps?);
        if self.run()? != p.s * cg || p.r > 32 || p.s > 32 {
            return None;
        }
        let (oy, ox) = (i / g.wo(), i % g.wo());
        let corner = self.signed_corner(oy, ox);
        let (mut lo, mut hi) = (p.s, 0);
        for s in 0..p.s {
            if g.input_x(ox, s).is_some() {
                lo = lo.min(s);
                hi = s + 1;
            }
        }
        let zp = self.x_zero + off;
        let mut sum = 0i32;
        // The zero point into `o`; its sum.
        let pad = |o: &mut [u8]| {
            o.iter_mut().for_each(|b| *b = zp as u8);
            if with_sum {
                zp.wrapping_mul(o.len() as i32)
            } else {
                0
            }
        };
        let row = p.s * cg;
        for (r, o) in out[..p.r * row].chunks_exact_mut(row).enumerate() {
            if g.input_y(oy, r).is_none() || lo >= hi {
                sum = sum.wrapping_add(pad(o));
                continue;
            }
            let (left, rest) = o.split_at_mut(lo * cg);
            let (mid, right) = rest.split_at_mut((hi - lo) * cg);
            sum = sum.wrapping_add(pad(left)).wrapping_add(pad(right));
            let at = (corner + taps[r * row + lo * cg] as isize) as usize;
            sum = sum.wrapping_add(bytes_run(&self.input[at..at + (hi - lo) * cg], off, mid, with_sum));
        }
        Some(sum)
    }
}

/// An interior pixel's row: `input[taps[p]] + off` into `out[p]` as i16, and their sum. Out of
/// line on a Cortex-M, so that its loop keeps its pointers and offset in registers.
#[cfg_attr(not(target_arch = "arm"), inline(always))]
#[cfg_attr(target_arch = "arm", inline(never))]
fn gather<X: QOperand>(input: &[X], taps: &[i32], off: i32, out: &mut [i16]) -> i32 {
    let mut sum = 0i32;
    for (o, &t) in out.iter_mut().zip(taps) {
        let v = input[t as usize].widen() + off;
        sum = sum.wrapping_add(v);
        *o = v as i16;
    }
    sum
}

/// Writes `src` shifted by `off` into `out` as i16 and returns the sum of the shifted values: a
/// loop the compiler vectorizes.
#[inline(always)]
fn widen_run<X: QOperand>(src: &[X], off: i32, out: &mut [i16]) -> i32 {
    let mut sum = 0i32;
    for (o, x) in out.iter_mut().zip(src) {
        let v = x.widen() + off;
        sum = sum.wrapping_add(v);
        *o = v as i16;
    }
    sum
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
    /// [`QRows::visit_row`]. Out of line on a Cortex-M, where the packing loop inlined into the
    /// driver spilled its registers.
    #[cfg_attr(not(target_arch = "arm"), inline(always))]
    #[cfg_attr(target_arch = "arm", inline(never))]
    fn fill_row(&self, i: usize, off: i32, out: &mut [i16]) -> i32 {
        let g = self.g;
        let p = g.params();
        let (oy, ox) = (i / g.wo(), i % g.wo());
        let Some(taps) = self.taps.filter(|_| p.r <= 32 && p.s <= 32) else {
            return fill_by_visit(self, i, off, out);
        };
        let mut sum = 0i32;
        if let Some(input) = self.interior_input(i) {
            if let Some(run) = self.run() {
                // Runs of `run` consecutive taps read consecutive input elements: copies.
                for (o, &t) in out[..taps.len()].chunks_exact_mut(run).zip(taps.iter().step_by(run)) {
                    sum = sum.wrapping_add(widen_run(&input[t as usize..t as usize + run], off, o));
                }
                return sum;
            }
            return gather(input, taps, off, out);
        }
        let corner = self.signed_corner(oy, ox);
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
            WeightLayout::Krsc if self.run().is_some() => {
                // NHWC: each (r, s) is a run of the group's channels, copied or the zero point.
                let cg = g.cg();
                for (rs, o) in out[..p.r * p.s * cg].chunks_exact_mut(cg).enumerate() {
                    let (r, s) = (rs / p.s, rs % p.s);
                    if rows >> r & cols >> s & 1 != 0 {
                        let at = (corner + taps[rs * cg] as isize) as usize;
                        sum = sum.wrapping_add(widen_run(&self.input[at..at + cg], off, o));
                    } else {
                        o.fill(zp as i16);
                        sum = sum.wrapping_add(zp.wrapping_mul(cg as i32));
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

    #[inline(always)]
    fn byte_rows(&self) -> bool {
        self.run().is_some() && self.taps.is_some()
    }
    /// Interior pixels of one output row with short runs (conv1): [`QRows::fill_row_bytes`]'s
    /// `SHORT_RUN` copies, the pixels' inputs `stride * xstride` apart, checked once for the
    /// block (where the last copy would read past the input, row by row instead). One division
    /// per block where every row took two, and no bounds check per run: conv1 on one Zen 4
    /// thread, 240 -> 267 GOPS (then its border rows as bytes, [`Im2col::border_row_bytes`],
    /// 267 -> 298).
    #[inline(always)]
    fn fill_rows_bytes(&self, i0: usize, n: usize, off: i32, out: &mut [u8], stride: usize) -> bool {
        let (Some(run), Some(taps)) = (self.run(), self.taps) else { return false };
        let wo = self.g.wo();
        if off != 0 || run > SHORT_RUN || n == 0 || taps.is_empty() || i0 % wo + n > wo {
            return false;
        }
        // The first and last pixels interior and in one output row: so is every pixel between.
        let (Some(input), Some(_)) = (self.interior_input(i0), self.interior_input(i0 + n - 1)) else {
            return false;
        };
        let step = self.g.params().stride[1] * strides(self.g).1;
        let last_tap = taps.iter().step_by(run).fold(0, |m, &t| m.max(t as usize));
        let src = bytes(input);
        let runs = taps.len() / run;
        // The furthest byte read and written (the last row's last run, a whole SHORT_RUN).
        if (n - 1) * step + last_tap + SHORT_RUN > src.len()
            || (n - 1) * stride + (runs - 1) * run + SHORT_RUN > out.len()
        {
            return false;
        }
        let (src, dst) = (src.as_ptr(), out.as_mut_ptr());
        for r in 0..n {
            for (j, &t) in taps.iter().step_by(run).enumerate() {
                // SAFETY: `r < n`, `t <= last_tap`, `j < runs`: inside both slices (checked
                // above). Rows in increasing order, runs too: each copy overwrites what the one
                // before wrote past its run.
                unsafe {
                    let v = src.add(r * step + t as usize).cast::<[u8; SHORT_RUN]>().read_unaligned();
                    dst.add(r * stride + j * run).cast::<[u8; SHORT_RUN]>().write_unaligned(v);
                }
            }
        }
        true
    }
    /// A source with runs ([`Im2col::run`]): an interior pixel's runs copied as bytes, a border
    /// pixel's through [`Im2col::border_row_bytes`] (where each kernel row is one run).
    #[inline(always)]
    fn fill_row_bytes(&self, i: usize, off: i32, out: &mut [u8], with_sum: bool) -> Option<i32> {
        let run = self.run()?;
        let taps = self.taps?;
        let Some(input) = self.interior_input(i) else { return self.border_row_bytes(i, off, out, with_sum) };
        // Short runs (conv1's 21 bytes: a kernel row of 7 pixels of 3 channels) as one copy of
        // SHORT_RUN bytes each, the next run overwriting what it wrote past its end, where the
        // input and `out` hold that much: one load and one store a run, where a copy of the
        // run's own length took a few dozen instructions (conv1 on one Zen 4 thread, with the
        // panels packed in vectors: 196 -> 218 GOPS).
        if off == 0 && !with_sum && run <= SHORT_RUN {
            let src = bytes(input);
            for (j, &t) in taps.iter().step_by(run).enumerate() {
                let (t, o) = (t as usize, j * run);
                // Arrays, not slices: a slice copy calls `memmove`.
                let from = src.get(t..t + SHORT_RUN).and_then(|v| <&[u8; SHORT_RUN]>::try_from(v).ok());
                match (from, out.get_mut(o..o + SHORT_RUN)) {
                    (Some(from), Some(to)) => {
                        if let Ok(to) = <&mut [u8; SHORT_RUN]>::try_from(to) {
                            *to = *from;
                        }
                    }
                    _ => out[o..o + run].copy_from_slice(&src[t..t + run]),
                }
            }
            return Some(0);
        }
        let mut sum = 0i32;
        for (o, &t) in out[..taps.len()].chunks_exact_mut(run).zip(taps.iter().step_by(run)) {
            sum = sum.wrapping_add(bytes_run(&input[t as usize..t as usize + run], off, o, with_sum));
        }
        Some(sum)
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

/// Kernel rows [`depthwise`] stages per output row at most (stride 1), and taps per row.
const STAGED_ROWS: usize = 8;
const STAGED_TAPS: usize = 16;
/// Staged columns per kernel row at most: 256 outputs and a reach of 16.
const STAGED_COLS: usize = 256 + 16;

/// [`depthwise`]'s staged form: 16 outputs from column `b0`, `bias` plus each tap's products at
/// its offset into its kernel row's staged inputs, for an `R x S` kernel (a loop the compiler
/// unrolls, the 16 sums in one register). Wrapping: exact, as the true sum fits (the
/// accumulator bound).
#[inline(always)]
fn staged_block<const R: usize, const S: usize>(
    rows: &[[i32; STAGED_COLS]; STAGED_ROWS],
    taps: &[[i32; STAGED_TAPS]; STAGED_ROWS],
    b0: usize,
    dw: usize,
    bias: i32,
) -> [i32; 16] {
    staged_block_any(rows, taps, (R, S), b0, dw, bias)
}

/// [`staged_block`] for any kernel size (`r <= STAGED_ROWS`, `s <= STAGED_TAPS`).
#[inline(always)]
fn staged_block_any(
    rows: &[[i32; STAGED_COLS]; STAGED_ROWS],
    taps: &[[i32; STAGED_TAPS]; STAGED_ROWS],
    (r, s): (usize, usize),
    b0: usize,
    dw: usize,
    bias: i32,
) -> [i32; 16] {
    let mut v = [bias; 16];
    for (row, ws) in rows.iter().zip(taps).take(r) {
        for (t, &w) in ws.iter().enumerate().take(s) {
            let xs = &row[b0 + t * dw..][..16];
            v.iter_mut().zip(xs).for_each(|(a, &x)| *a = a.wrapping_add(x.wrapping_mul(w)));
        }
    }
    v
}

/// [`depthwise`]'s stride-1 form: for output row `oy` of the channel plane at `plane`, kernel
/// row `r`'s input less the zero point `zx` into `rows[r][..cover]` (`rows[r][t]` the input
/// column `t - pad.left`, 0 in the padding, and every row 0 whose input row is padding). Staged
/// before the products read them at offsets that straddle these stores (at once, they would
/// stall on store forwarding).
fn stage_rows<X: QOperand>(
    g: &Conv2d,
    input: &[X],
    (plane, oy, cover, zx): (usize, usize, usize, i32),
    rows: &mut [[i32; STAGED_COLS]; STAGED_ROWS],
) {
    let p = g.params();
    let (ystride, xstride) = match p.layout {
        TensorLayout::Nchw => (p.w, 1),
        TensorLayout::Nhwc => (p.w * p.c, p.c),
    };
    let pl = p.pad.left;
    // Columns `[lo, hi)` of a row are inside the input.
    let lo = pl.min(cover);
    let hi = (p.w + pl).min(cover).max(lo);
    for (r, row) in rows.iter_mut().enumerate().take(p.r) {
        let row = &mut row[..cover];
        let Some(iy) = g.input_y(oy, r) else {
            row.fill(0);
            continue;
        };
        row[..lo].fill(0);
        row[hi..].fill(0);
        let first = plane + iy * ystride + (lo - pl) * xstride;
        let inside = &mut row[lo..hi];
        if xstride == 1 {
            let n = inside.len();
            inside.iter_mut().zip(&input[first..first + n]).for_each(|(t, x)| *t = x.widen() - zx);
        } else {
            inside.iter_mut().zip(input[first..].iter().step_by(xstride)).for_each(|(t, x)| *t = x.widen() - zx);
        }
    }
}

/// Depthwise (one input and one output channel per group): a direct loop, which a GEMM per
/// channel (one column wide) would not beat, on the workers, each a contiguous share of the
/// channels (see [`depthwise`]). Checked operands only.
fn depthwise_for<X: QOperand, W: QOperand, Y: QElem>(
    (kernel, exec): (&crate::arch::quant::QKernel, &Pinned<'_>),
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
) {
    let dst = DwOut::new(output);
    let (workers, k) = (planned_workers(exec).max(1), g.params().k);
    // Worker `w`'s channels: a contiguous share.
    let share = |w: usize| k * w / workers..k * (w + 1) / workers;
    if workers == 1 {
        // SAFETY: one worker, every channel; `output` is borrowed mutably for the call.
        unsafe { depthwise_on(kernel, g, op, out, &dst, 0..k) };
    } else {
        // SAFETY: the shares are disjoint, so no element is written by two workers; `output`
        // is borrowed mutably until `run` returns, after every worker.
        exec.run(&|w| unsafe { depthwise_on(kernel, g, op, out, &dst, share(w)) });
    }
}

/// The depthwise output as workers share it: each writes the elements of its own channels (or,
/// in `depthwise_nhwc`, of its own rows or channel blocks).
struct DwOut<Y> {
    ptr: Shared<Y>,
    len: usize,
}

impl<Y> DwOut<Y> {
    /// The whole of `output`, for the workers to share (borrowed mutably by the caller for as
    /// long as this lives).
    fn new(output: &mut [Y]) -> Self {
        DwOut { ptr: Shared(output.as_mut_ptr()), len: output.len() }
    }

    /// Writes element `i` (inside the output: panics, as indexing would, where not).
    ///
    /// # Safety
    /// No other worker reads or writes element `i` during the run.
    unsafe fn put(&self, i: usize, v: Y) {
        assert!(i < self.len);
        // SAFETY: inside the output (checked), written by this worker alone (the contract).
        unsafe { self.ptr.ptr().add(i).write(v) }
    }

    /// Writes `f(acc[i])` to element `at + i * step` for each `i` (inside the output: panics
    /// where not). Not inlined on a Cortex-M: the loop gets the registers its constants need
    /// (the caller's loops spill them there).
    ///
    /// # Safety
    /// No other worker reads or writes those elements during the run.
    #[cfg_attr(target_arch = "arm", inline(never))]
    unsafe fn put_run(&self, at: usize, step: usize, acc: &[i32], f: impl Fn(i32) -> Y) {
        let Some(before_last) = acc.len().checked_sub(1) else { return };
        let last = before_last.checked_mul(step).and_then(|d| d.checked_add(at));
        assert!(last.is_some_and(|last| last < self.len));
        // SAFETY: `at` is inside the output (checked with the last element).
        let mut ptr = unsafe { self.ptr.ptr().add(at) };
        if step == 1 {
            // Contiguous (NCHW, or NHWC with one channel): a slice, stored with post-increment
            // on a Cortex-M.
            // SAFETY: elements `at .. at + acc.len()` are inside the output (the last checked)
            // and this worker's alone while the slice lives (the contract).
            let run = unsafe { core::slice::from_raw_parts_mut(ptr, acc.len()) };
            run.iter_mut().zip(acc).for_each(|(o, &a)| *o = f(a));
            return;
        }
        for &a in acc {
            // SAFETY: elements `at + i * step` for `i < acc.len()` are inside the output (the
            // last checked), written by this worker alone (the contract); past the last the
            // pointer is never dereferenced.
            unsafe { ptr.write(f(a)) };
            ptr = ptr.wrapping_add(step);
        }
    }

    /// A pointer to element `at`, where elements `at .. at + n` are inside the output (panics
    /// where not): for writes that leave the elements between them to other workers.
    fn ptr_at(&self, at: usize, n: usize) -> *mut Y {
        assert!(at.checked_add(n).is_some_and(|end| end <= self.len));
        self.ptr.ptr().wrapping_add(at)
    }

    /// Elements `at .. at + n` (inside the output: panics where not).
    ///
    /// # Safety
    /// No other worker reads or writes them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn run(&self, at: usize, n: usize) -> &mut [Y] {
        assert!(at.checked_add(n).is_some_and(|end| end <= self.len));
        // SAFETY: inside the output (checked), this worker's alone (the contract).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.ptr().add(at), n) }
    }
}

/// [`depthwise`] on channels `ks`, compiled for the kernel's ISA.
///
/// # Safety
/// No other worker writes the elements of channels `ks` during the run.
// Out of line: on a Cortex-M4 without the `parallel` feature (one caller left), inlined, its
// row sums went out of line instead (int8 depthwise 8.48 -> 8.60 instructions per MAC).
#[inline(never)]
unsafe fn depthwise_on<X: QOperand, W: QOperand, Y: QElem>(
    kernel: &crate::arch::quant::QKernel,
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &DwOut<Y>,
    ks: core::ops::Range<usize>,
) {
    // The kernel's vector write-out (its ISA proved by the kernel).
    let finish = kernel.finish_tile;
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must run AVX2, and `finish` where given; as [`depthwise`].
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &DwOut<Y>,
            ks: core::ops::Range<usize>,
            finish: Option<unsafe fn(&FinishTile)>,
        ) {
            // SAFETY: forwarded contract.
            unsafe { depthwise(g, op, out, (output, ks), finish, false) }
        }
        /// # Safety
        /// The CPU must run AVX-512F, and `finish` where given; as [`depthwise`].
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &DwOut<Y>,
            ks: core::ops::Range<usize>,
            finish: Option<unsafe fn(&FinishTile)>,
        ) {
            // SAFETY: forwarded contract.
            unsafe { depthwise(g, op, out, (output, ks), finish, false) }
        }
        match kernel.isa() {
            crate::arch::Isa::Avx2 | crate::arch::Isa::AvxVnni => {
                // SAFETY: the kernel proves the CPU runs AVX2 (AVX-VNNI's detection requires
                // it) and its write-out's ISA; forwarded contract.
                return unsafe { avx2(g, op, out, output, ks, finish) };
            }
            crate::arch::Isa::Avx512Vnni | crate::arch::Isa::AmxInt8 => {
                // SAFETY: the kernel proves AVX-512F (and AVX2, which its detection requires)
                // and its write-out's ISA; forwarded contract.
                return unsafe { avx512(g, op, out, output, ks, finish) };
            }
            _ => {}
        }
    }
    // The pair form where `smlad` is one instruction (its portable form is four).
    let pair_form = cfg!(all(target_arch = "arm", sparkle_arm_dsp)) && pairs::fits(g);
    // SAFETY: the kernel proves the ISA of its write-out; forwarded contract.
    unsafe { depthwise(g, op, out, (output, ks), finish, pair_form) }
}

/// Zeros for the write-out's column terms of a depthwise chunk.
const ZEROS: [i32; 32] = [0; 32];

/// The loop of [`depthwise_for`] over channels `ks`. At horizontal stride 1 (rows of at most 256
/// outputs, kernels of at most 8 x 16), per output row: the kernel rows staged ([`stage_rows`]),
/// then 16 outputs at a time over every tap ([`staged_block`]), then the output stage on the
/// whole row. Otherwise per output row in chunks of up to 64 outputs: for each tap inside the
/// input, one pass over the chunk's outputs that read it (a strided row of the input), then the
/// output stage. Padding adds nothing. Compiled for the kernel's ISA by `depthwise_on` (its row
/// loops then vectorize with the kernel's vectors). With `pair_form` (a Cortex-M with the DSP
/// extension, where [`pairs::fits`]), the kernel rows staged as 16-bit pairs and summed two taps
/// an instruction ([`pairs`]), then the output stage, in chunks of up to [`pairs::CHUNK`]
/// outputs: a band of whole output rows where a row fits (written out as one run), else part of
/// one row.
///
/// # Safety
/// The CPU runs `finish`, where given; no other worker writes the elements of channels `ks`
/// during the run.
#[inline(always)]
unsafe fn depthwise<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    (output, ks): (&DwOut<Y>, core::ops::Range<usize>),
    finish: Option<unsafe fn(&FinishTile)>,
    pair_form: bool,
) {
    // Outputs per pass: 64 for the vector units; 16 on a Cortex-M, whose rows are short and
    // which initialises the whole chunk of accumulators per row.
    const CHUNK: usize = if cfg!(target_arch = "arm") { 16 } else { 64 };
    // Accumulators: a chunk, the pair form's band (at most `pairs::CHUNK`, 64) or the staged
    // form's whole output row (at most 256).
    const ACC: usize = if cfg!(target_arch = "arm") { pairs::CHUNK } else { STAGED_COLS - 16 };
    let p = g.params();
    let (ho, wo) = (g.ho(), g.wo());
    let (ystride, xstride, cstride) = match p.layout {
        TensorLayout::Nchw => (p.w, 1, p.h * p.w),
        TensorLayout::Nhwc => (p.w * p.c, p.c, 1),
    };
    let (sw, dw, pl) = (p.stride[1], p.dilation[1], p.pad.left);
    // Stride 1 with rows of at most STAGED_COLS - 16 outputs (not on a Cortex-M, whose stack the
    // rows would not fit): each output row's kernel rows staged first (`stage_rows`).
    let reach = (p.s - 1).saturating_mul(dw);
    let cover = wo.next_multiple_of(CHUNK) + reach;
    let staged = !pair_form
        && !cfg!(target_arch = "arm")
        && sw == 1
        && p.r <= STAGED_ROWS
        && p.s <= STAGED_TAPS
        && cover <= STAGED_COLS;
    let mut pair_rows = pair_form.then(|| pairs::PairRows::new(g));
    // Output rows per chunk: the pair form's whole rows (a ring) as many as `pairs::CHUNK`
    // accumulators hold (with an odd row's one extra sum; the same bands on every target, so
    // that the unit tests run the Cortex-M's), else one.
    let band = match &pair_rows {
        Some(pr) if pr.whole_rows() => ((pairs::CHUNK - wo % 2) / wo).max(1),
        _ => 1,
    };
    // Outputs per chunk: the staged form's output row is one (`wo <= ACC`, as `cover` fits).
    let chunk = match &pair_rows {
        Some(pr) => pr.chunk,
        None if staged => wo,
        None => CHUNK,
    };
    let mut rows = [[0i32; STAGED_COLS]; STAGED_ROWS];
    let mut acc_buf = [0i32; ACC];
    let zx = op.x_zero;
    for k in ks {
        let stage = out.channel::<Y>(k);
        let zw = op.w_zero.at(k);
        let bias = op.bias.map_or(0, |b| b[k]);
        // The staged form's weights less their zero point, kernel row by row.
        let mut taps = [[0i32; STAGED_TAPS]; STAGED_ROWS];
        if let Some(pr) = &mut pair_rows {
            pr.weights(g, op.weight, k, zw);
        }
        if staged {
            for (r, ws) in taps.iter_mut().enumerate().take(p.r) {
                for (s, w) in ws.iter_mut().enumerate().take(p.s) {
                    *w = op.weight[g.weight_index(k, 0, r, s)].widen() - zw;
                }
            }
        }
        for n in 0..p.n {
            let plane = n * p.c * p.h * p.w + k * cstride;
            for oy in (0..ho).step_by(band) {
                // Output rows oy .. oy + rows_here, one chunk when `band > 1`.
                let rows_here = band.min(ho - oy);
                if staged {
                    stage_rows(g, op.input, (plane, oy, cover, zx), &mut rows);
                }
                for ox0 in (0..wo).step_by(chunk) {
                    // A band's rows (`ox0 = 0`) are consecutive elements of the output (`step`
                    // apart), so its outputs are one run from (oy, 0): below, output `i` of a
                    // chunk is at column `ox0 + i` of row `oy` as `output_index` counts (linear:
                    // a column past the row's end is the next row's).
                    let row_len = chunk.min(wo - ox0);
                    let len = if staged { wo } else { rows_here * row_len };
                    // The accumulators this chunk uses, from the bias.
                    let acc = &mut acc_buf[..if staged {
                        len.next_multiple_of(16)
                    } else if pair_rows.is_some() {
                        ACC
                    } else {
                        chunk
                    }];
                    if let Some(pr) = &mut pair_rows {
                        for q in 0..rows_here {
                            pr.stage(g, op.input, (plane, oy + q, ox0, zx), oy + q == 0);
                            // An even length: an odd row's last sum is overwritten by the next
                            // row's first, or dropped.
                            pr.sums(oy + q, bias, &mut acc[q * row_len..][..row_len.next_multiple_of(2)]);
                        }
                    } else if staged {
                        acc.fill(bias);
                        // Per block of 16 outputs (a register), each tap's products at a fixed
                        // offset into its staged row: full vectors, no bounds per tap (outputs
                        // past `len` are computed and dropped). Wrapping: exact, as the true
                        // sum fits (the accumulator bound).
                        for (b0, block) in (ox0..).step_by(16).zip(acc.chunks_exact_mut(16)) {
                            let v = match (p.r, p.s, dw) {
                                (3, 3, 1) => staged_block::<3, 3>(&rows, &taps, b0, 1, bias),
                                (5, 5, 1) => staged_block::<5, 5>(&rows, &taps, b0, 1, bias),
                                _ => staged_block_any(&rows, &taps, (p.r, p.s), b0, dw, bias),
                            };
                            block.copy_from_slice(&v);
                        }
                    } else {
                        acc.fill(bias);
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
                    }
                    match (stage.float_multiplier(), p.layout) {
                        // A contiguous output row in a one-byte type: one loop of the stage's
                        // own arithmetic, which vectorizes.
                        (Some(m), TensorLayout::Nchw) if narrow::<Y>() => {
                            let at = g.output_index(n, k, oy, ox0);
                            let (zp, lo, hi) = (stage.zero_point, stage.lo, stage.hi);
                            // SAFETY: a run of channel `k`'s output row, this worker's (the
                            // contract).
                            let out = unsafe { output.run(at, len) };
                            match finish {
                                // The kernel's vector write-out: the chunk as a tile of one
                                // channel (no column terms, one multiplier), its whole rows of 32
                                // in one call, then the rest.
                                Some(f) => {
                                    let ms = [m; 32];
                                    let whole = len / 32 * 32;
                                    let parts = [(0, whole.min(len), 32), (whole, len, len - whole)];
                                    for (i0, end, n) in parts.into_iter().filter(|p| p.0 < p.1) {
                                        let row = &mut out[i0..end];
                                        let ft = FinishTile {
                                            rows: row.len() / n,
                                            n,
                                            raw: acc[i0..].as_ptr(),
                                            raw_stride: 32,
                                            term: ZEROS.as_ptr(),
                                            zb: ZEROS.as_ptr(),
                                            m: ms.as_ptr(),
                                            row_sums: ZEROS.as_ptr(),
                                            row_terms: false,
                                            zp,
                                            lo,
                                            hi,
                                            out: row.as_mut_ptr().cast::<u8>(),
                                            out_stride: 32,
                                        };
                                        // SAFETY: the caller's contract (the CPU runs `f`);
                                        // every array holds a row's `n <= 32` elements (the row
                                        // sums, not read, `rows <= ACC / 32 <= 32`); `rows` rows
                                        // 32 apart are inside `acc` and `row` (`rows * n` of
                                        // them; Y is one byte, `narrow`).
                                        unsafe { f(&ft) };
                                    }
                                }
                                None => {
                                    for (o, &a) in out.iter_mut().zip(&acc[..len]) {
                                        *o = Y::narrow(float_narrow(a, m, zp, lo, hi));
                                    }
                                }
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
                            let acc = &acc[..len];
                            match FixedFolded::new(mult, shift, zp, lo, hi) {
                                Some(folded) if folded.tops_i8() => {
                                    // TFLite's usual shifts, into `i8`: one multiply-add and a
                                    // saturation a value.
                                    let to_y = move |a| Y::narrow(folded.apply_i8(a));
                                    // SAFETY: channel `k`'s outputs, this worker's (the contract).
                                    unsafe { output.put_run(at, step, acc, to_y) };
                                }
                                Some(folded) => {
                                    let to_y = move |a| Y::narrow(folded.apply(a));
                                    // SAFETY: as above.
                                    unsafe { output.put_run(at, step, acc, to_y) };
                                }
                                None => {
                                    let stage = FixedNarrow::new(mult, shift, zp, lo, hi);
                                    if shift <= 0 {
                                        // No left shift (a multiplier below 1 whose shift is past
                                        // the folded form's range): one register fewer in the loop.
                                        let to_y = move |a| Y::narrow(stage.apply_right(a));
                                        // SAFETY: as above.
                                        unsafe { output.put_run(at, step, acc, to_y) };
                                    } else {
                                        let to_y = move |a| Y::narrow(stage.apply(a));
                                        // SAFETY: as above.
                                        unsafe { output.put_run(at, step, acc, to_y) };
                                    }
                                }
                            }
                        }
                        _ => {
                            for (i, &a) in acc[..len].iter().enumerate() {
                                // SAFETY: channel `k`'s output, this worker's (the contract).
                                unsafe { output.put(g.output_index(n, k, oy, ox0 + i), stage.apply(a)) };
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
    let required = qconv2d_scratch_len(ws.kernel, g, planned_workers(&exec))?;
    if ws.scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: ws.scratch.len() });
    }
    run_conv(g, op, None, out, output, (ws.kernel, &exec), ws.scratch)
}

/// Conv weights packed ahead ([`crate::quant::packed::QPackedConv`]) as a run reads them,
/// checked to be packed for the run's kernel format and weight geometry.
pub(crate) struct PackedView<'a> {
    /// The path's weight order.
    pub order: WeightOrder,
    /// Depthwise: the weights' bytes as given. Else each group's panels, `group_bytes` apart.
    pub bytes: &'a [u8],
    /// Each output channel's canonical weight sum in the order's reduction (not depthwise).
    pub colsums: &'a [i32],
    /// Bytes of one group's panels.
    pub group_bytes: usize,
}

impl<'a> PackedView<'a> {
    /// Group `group`'s B (`kg` columns).
    fn group(&self, group: usize, kg: usize) -> PackedPanels<'a> {
        PackedPanels {
            panels: &self.bytes[group * self.group_bytes..][..self.group_bytes],
            colsums: &self.colsums[group * kg..][..kg],
        }
    }
}

/// [`qconv2d_with`] (and its packed twin) after validation: `op`, the stage and `output` checked
/// for `g`; the scratch at least the least length of the path (unpacked: [`qconv2d_scratch_len`];
/// packed: [`qconv2d_packed_scratch_len`]); `packed`, where given, packed in
/// [`weight_order`]`(kernel, g)` for this kernel's format and `g`'s weight shape (then
/// `op.weight` is not read).
pub(crate) fn run_conv<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    packed: Option<&PackedView<'_>>,
    out: &OutputStage<'_>,
    output: &mut [Y],
    (kernel, exec): (&crate::arch::quant::QKernel, &Pinned<'_>),
    scratch: &mut [i32],
) -> Result<()> {
    let (kg, hw, gemm_k) = g.gemm_dims();
    if output.is_empty() || hw == 0 || kg == 0 {
        return Ok(());
    }
    if g.cg() == 1 && kg == 1 {
        let weight = packed.map_or(op.weight, |pv| elems::<W>(&pv.bytes[..g.weight_len()]));
        let op = &QConv { weight, ..*op };
        if depthwise_nhwc::fits(g) {
            depthwise_nhwc::run((kernel, exec), g, op, out, output);
        } else {
            depthwise_for((kernel, exec), g, op, out, output);
        }
        return Ok(());
    }
    match packed.map(|pv| pv.order) {
        Some(WeightOrder::Direct { .. }) => {
            // The packed scratch length came from this plan.
            let d =
                Direct::feasible(kernel, g, planned_workers(exec)).ok_or(Error::Overflow { param: Param::Scratch })?;
            run_direct(g, &d, op, packed, out, output, (kernel, exec), scratch);
            return Ok(());
        }
        Some(WeightOrder::Krsc) => {
            if let Some(d) = packed_direct(kernel, g, planned_workers(exec)).filter(|d| scratch.len() >= d.packed_words)
            {
                run_direct(g, &d, op, packed, out, output, (kernel, exec), scratch);
                return Ok(());
            }
        }
        None => {
            if let Some(d) = Direct::plan(kernel, g, planned_workers(exec)).filter(|d| scratch.len() >= d.words) {
                run_direct(g, &d, op, None, out, output, (kernel, exec), scratch);
                return Ok(());
            }
        }
        Some(WeightOrder::Depthwise) => {}
    }
    // Packed weights are in KRSC's order: im2col reads through `g` with KRSC weights (the same
    // input, output and sizes; only the reduction's order differs).
    let krsc_g;
    let g_run = if packed.is_some() {
        krsc_g = krsc(g)?;
        &krsc_g
    } else {
        g
    };
    let p = g.params();
    // Staged where the caller's scratch allows it (the staged copies after the GEMM's words).
    let staged_len = im2col_staged_scratch_len(kernel, g_run, planned_workers(exec), packed.is_some())?;
    let staging = if scratch.len() >= staged_len { staging(g_run)? } else { None };
    let (taps, scratch) = scratch.split_at_mut(gemm_k);
    let cg = g.cg();
    let pointwise = pointwise(g);
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
        if packed.is_none() {
            b_view(group)?;
        }
        if pointwise {
            (0..p.n).try_for_each(|n| a_view(n, group).map(drop))?;
        }
    }
    if let Some(st) = &staging {
        let (scratch, copies) = scratch.split_at_mut(scratch.len() - st.input_words - st.weight_words);
        let (xbuf, wbuf) = copies.split_at_mut(st.input_words);
        let taps: Option<&[i32]> = tap_offsets(&st.g, taps).then_some(taps);
        let bufs = StagedBuffers { taps, scratch, xbuf: as_elems::<X>(xbuf), wbuf: as_elems::<W>(wbuf) };
        run_staged(g, st, op, packed, out, output, (kernel, exec), bufs);
        return Ok(());
    }
    let taps: Option<&[i32]> = tap_offsets(g_run, taps).then_some(taps);
    let interior = (
        interior_range(g.ho(), p.h, p.stride[0], p.pad.top, p.dilation[0], p.r),
        interior_range(g.wo(), p.w, p.stride[1], p.pad.left, p.dilation[1], p.s),
    );
    // Groups outer, images inner: each group's weights are packed once, for its first image.
    for group in 0..p.groups {
        // The group's weights are a dense row-major kg x gemm_k matrix; B is its transpose.
        let b_mat;
        let b = match packed {
            Some(pv) => BSource::Packed(pv.group(group, kg)),
            None => {
                b_mat = b_view(group)?;
                BSource::Matrix(&b_mat)
            }
        };
        for n in 0..p.n {
            // The group's outputs as a kg x (ho*wo) matrix; C is its transpose.
            let (at, rs, cs) = g.output_gemm_view(n, group);
            let c = (output.as_mut_ptr().wrapping_add(at), cs, rs);
            let pack_b = n == 0;
            if pointwise {
                // A 1x1, stride-1, unpadded conv reads the input as a (ho*wo) x cg matrix.
                let a = a_view(n, group)?;
                let ops = QOperands { a: &a, a_zero: op.x_zero, b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
                // SAFETY: as below.
                unsafe { qgemm_unchecked(&ops, out, c, kernel, exec, scratch, pack_b) };
                continue;
            }
            let a = Im2col { g: g_run, input: op.input, n, group, x_zero: op.x_zero, taps, interior };
            let ops = QOperands { a: &a, a_zero: op.x_zero, b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
            // SAFETY: the operands, the stage and the scratch were validated above, for these
            // per-image GEMMs (`hw x kg x gemm_k`, channels `group * kg ..`); the geometry puts
            // every `(pixel, channel)` of this image and group at `at + pixel * cs + channel * rs`
            // inside `output` (its length was checked), each at a distinct offset, and no other
            // image or group writes them; the executor is pinned. For images after the first,
            // the previous call packed this group's B into the same scratch. Packed weights are
            // in `g_run`'s reduction order, for this kernel's format.
            unsafe { qgemm_unchecked(&ops, out, c, kernel, exec, scratch, pack_b) };
        }
    }
    Ok(())
}

/// The scratch of a staged conv, split: the tap offsets (of the staged geometry), the GEMM's
/// words, and the two staging buffers.
struct StagedBuffers<'a, X, W> {
    taps: Option<&'a [i32]>,
    scratch: &'a mut [i32],
    xbuf: &'a mut [X],
    wbuf: &'a mut [W],
}

/// [`qconv2d_with`]'s loop over groups and images with staged operands: the weights reordered
/// once, then per group and image the group's channels of the image staged as NHWC and its
/// GEMM run through the staged geometry, written into the caller's output geometry.
#[allow(clippy::too_many_arguments)]
fn run_staged<X: QOperand, W: QOperand, Y: QElem>(
    g: &Conv2d,
    st: &Staging,
    op: &QConv<'_, X, W>,
    packed: Option<&PackedView<'_>>,
    out: &OutputStage<'_>,
    output: &mut [Y],
    (kernel, exec): (&crate::arch::quant::QKernel, &Pinned<'_>),
    bufs: StagedBuffers<'_, X, W>,
) {
    let StagedBuffers { taps, scratch, xbuf, wbuf } = bufs;
    let p = g.params();
    let (kg, _, gemm_k) = g.gemm_dims();
    let weights: &[W] = if st.weight_words > 0 {
        stage_weights(g, op.weight, &st.g, wbuf);
        wbuf
    } else {
        op.weight
    };
    let sp = st.g.params();
    let interior = (
        interior_range(g.ho(), sp.h, sp.stride[0], sp.pad.top, sp.dilation[0], sp.r),
        interior_range(g.wo(), sp.w, sp.stride[1], sp.pad.left, sp.dilation[1], sp.s),
    );
    for group in 0..p.groups {
        let off = g.weight_group_offset(group);
        // `run_conv` built this view on the caller's weights before calling; the staged ones
        // have their length, so this never returns early (which would leave the output partly
        // written). Packed weights are in the staged (KRSC) order already.
        let b_mat;
        let b = match packed {
            Some(pv) => BSource::Packed(pv.group(group, kg)),
            None => {
                let Ok(b) = MatRef::new(weights.get(off..).unwrap_or(&[]), gemm_k, kg, 1, gemm_k) else { return };
                b_mat = b;
                BSource::Matrix(&b_mat)
            }
        };
        for n in 0..p.n {
            stage_input(g, op.input, n, group * g.cg(), xbuf);
            let a = Im2col { g: &st.g, input: xbuf, n: 0, group: 0, x_zero: op.x_zero, taps, interior };
            let ops = QOperands { a: &a, a_zero: op.x_zero, b, b_zero: &op.w_zero, bias: op.bias, ch0: group * kg };
            let (at, rs, cs) = g.output_gemm_view(n, group);
            let c = (output.as_mut_ptr().wrapping_add(at), cs, rs);
            // SAFETY: as in `qconv2d_with` (which validated everything for `g`): the staged
            // geometry reads the same pixels and taps of the staged image as `g` reads of image
            // `n`, group `group`, with the same GEMM sizes; the output view is `g`'s. The scratch
            // holds the GEMM's words (the staged copies are after them); B is packed for each
            // group's first image.
            unsafe { qgemm_unchecked(&ops, out, c, kernel, exec, scratch, n == 0) };
        }
    }
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
                // The least scratch, and the staged one (NCHW: the input staged as NHWC).
                let least = qconv2d_scratch_len(kernel, &g, 1).unwrap();
                let staged = qconv2d_staged_scratch_len(kernel, &g, 1).unwrap();
                assert_eq!(staged > least, layout == TensorLayout::Nchw);
                for len in [least, staged] {
                    let mut got = [0u8; 144];
                    let mut want = [1u8; 144];
                    let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
                    qconv2d_with(&g, &op, &out, &mut got[..g.output_len()], ws).unwrap();
                    qconv2d_reference(&g, &op, &out, &mut want[..g.output_len()]).unwrap();
                    assert_eq!(got, want, "{layout:?} {} scratch {len}", kernel.id());
                }
            }
        }
    }

    /// The Cortex-M's pair form of the depthwise conv ([`pairs`]), run here on its portable
    /// `smlad`: the two-pair loop (3 and 4 taps a row) and the generic one (odd and even
    /// widths, one and eight rows), bands of rows with a short last one, odd rows in a band,
    /// several chunks a row (the last odd), chunks shrunk to fit the staged rows, a chunk wholly
    /// in the padding, one-column images, vertical stride and dilation (no ring), asymmetric
    /// padding, both layouts, `u8` and `i8` inputs, per-channel weight zero points, and the
    /// fixed-point, float and `i32` output stages; outputs the form would leave unwritten show
    /// (the fast output starts from other values than the oracle's).
    #[test]
    fn depthwise_pair_form_matches_the_oracle() {
        fn check<X: QOperand, Y: QElem + PartialEq>(g: &Conv2d, input: &[X], stage: &OutputStage<'_>) {
            let p = g.params();
            let weight: [i8; 4 * 64] = core::array::from_fn(|i| (i * 71 % 256) as u8 as i8);
            let wz = [3, -1, 0, 7];
            let bias = [5, -900, 0, 70_000];
            let op = QConv {
                input: &input[..g.input_len()],
                x_zero: X::narrow(X::MIN + 40).widen(),
                weight: &weight[..g.weight_len()],
                w_zero: PerChannel::Channel(&wz[..p.k]),
                bias: Some(&bias[..p.k]),
            };
            let (mut got, mut want) = ([Y::narrow(1); 8192], [Y::narrow(0); 8192]);
            let len = g.output_len();
            let dst = DwOut { ptr: Shared(got.as_mut_ptr()), len };
            // SAFETY: one caller, every channel; `got` outlives the call.
            unsafe { depthwise(g, &op, stage, (&dst, 0..p.k), None, true) };
            qconv2d_reference(g, &op, stage, &mut want[..len]).unwrap();
            assert_eq!(got[..len], want[..len], "{p:?}");
        }
        let mult = [1_500_000_000, 1_200_000_000, 2_000_000_000, 1_073_741_824];
        // Channel 2 shifts left (the write-out's other loop).
        let shift = [-9, -8, 1, -12];
        let fixed = OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), -5, -128, 127);
        // Into u8 below 255: the folded form's general clamp (channels 0 and 3), a shift past
        // its range (channel 1: no left shift) and a left shift (channel 2).
        let shift_u8 = [-9, -25, 1, -22];
        let fixed_u8 = OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift_u8), 10, 0, 200);
        let onnx = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.3, 120);
        let wide = OutputStage::ACCUMULATOR;
        let input_u8: [u8; 4 * 2 * 80 * 4] = core::array::from_fn(|i| (i * 37 % 256) as u8);
        let input_i8: [i8; 4 * 2 * 80 * 4] = core::array::from_fn(|i| (i * 53 % 251) as u8 as i8);
        let cases = [
            // (c, h, w, r, s, pad (t, l, b, r), vertical stride, vertical dilation)
            (4, 6, 5, 3, 3, (1, 1, 1, 1), 1, 1),
            (2, 5, 80, 3, 3, (1, 1, 1, 1), 1, 1),
            (3, 7, 9, 5, 5, (2, 2, 2, 2), 1, 1),
            (2, 4, 7, 1, 7, (0, 6, 0, 1), 1, 1),
            (4, 9, 6, 8, 2, (3, 0, 4, 1), 2, 1),
            (2, 9, 70, 2, 4, (1, 3, 0, 2), 1, 3),
            (1, 3, 1, 1, 1, (0, 0, 0, 0), 1, 1),
            // Bands of 4 rows of 16 (the last of 1); of 3 odd rows of 21 (the last of 2).
            (2, 13, 16, 3, 3, (1, 1, 1, 1), 1, 1),
            (2, 8, 21, 3, 4, (1, 2, 1, 1), 1, 1),
            // Rows of 67: chunks of 64 and 3. A 5x5 on rows of 50: chunks shrunk to 44.
            (2, 3, 67, 3, 3, (1, 1, 1, 1), 1, 1),
            (1, 5, 50, 5, 5, (2, 2, 2, 2), 1, 1),
            // The first chunk wholly in the left padding.
            (2, 3, 3, 2, 1, (0, 70, 1, 2), 1, 1),
            // One column: one value of a staged row inside the input (NHWC: `c` apart).
            (2, 6, 1, 3, 1, (0, 0, 0, 0), 1, 1),
            (2, 6, 1, 5, 5, (2, 2, 2, 2), 1, 1),
        ];
        // Under Miri (for `put_run`'s pointer arithmetic) the first case only.
        for (c, h, w, r, s, (t, l, b, rp), sy, dy) in cases.into_iter().take(if cfg!(miri) { 1 } else { cases.len() }) {
            for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
                let g = Conv2dParams::new(2, c, h, w, c, r, s)
                    .groups(c)
                    .pad(Padding::new(t, l, b, rp))
                    .stride(sy, 1)
                    .dilation(dy, 1)
                    .layout(layout)
                    .validate()
                    .unwrap();
                assert!(pairs::fits(&g));
                check::<u8, i8>(&g, &input_u8, &fixed.channels(0, c).unwrap());
                check::<i8, u8>(&g, &input_i8, &fixed_u8.channels(0, c).unwrap());
                check::<i8, u8>(&g, &input_i8, &onnx);
                check::<u8, i32>(&g, &input_u8, &wide);
            }
        }
    }

    /// The direct conv (the staged image read in place) on a portable kernel in AMX's formats,
    /// so that its staging, tap offsets, dropped rows and write-out run on every CPU and under
    /// Miri: 120 channels (two blocks, the second padded), NCHW with an i8 input (its shift a
    /// flip of the top bit in the 8 x 8 transposes) and NHWC, per-channel and symmetric weight
    /// zero points, asymmetric padding, two images; two groups with dilation.
    #[test]
    fn direct_conv_matches_the_oracle() {
        use crate::arch::quant::GENERIC_TILES_Q;
        const C: usize = 120;
        let input: [i8; 2 * C * 27] = core::array::from_fn(|i| (i * 53 % 251) as u8 as i8);
        let weight: [i8; 3 * C * 6] = core::array::from_fn(|i| (i * 71 % 256) as u8 as i8);
        let wz = [3, -1, 0];
        let out = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.05, 7);
        let mut scratch = [0i32; 32768];
        // Under Miri (which takes minutes over the case above) one image of 64 channels, 1x1,
        // padded, NCHW: every part of the path but the second block.
        let cases = if cfg!(miri) {
            &[(Conv2dParams::new(1, 64, 1, 8, 2, 1, 1).pad(Padding::uniform(1)), TensorLayout::Nchw)][..]
        } else {
            let p = Conv2dParams::new(2, C, 3, 9, 3, 3, 2).pad(Padding::new(1, 0, 0, 1));
            let grouped = Conv2dParams::new(1, C, 3, 9, 2, 3, 2).groups(2).dilation(1, 2).pad(Padding::new(1, 0, 0, 1));
            &[(p, TensorLayout::Nchw), (p, TensorLayout::Nhwc), (grouped, TensorLayout::Nchw)][..]
        };
        for (&(p, layout), (wl, per_channel)) in
            cases.iter().zip([(WeightLayout::Kcrs, true), (WeightLayout::Krsc, false), (WeightLayout::Krsc, true)])
        {
            let w_zero = if per_channel { PerChannel::Channel(&wz[..p.k]) } else { PerChannel::Tensor(0) };
            let g = p.layout(layout).weight_layout(wl).validate().unwrap();
            let (input, weight) = (&input[..g.input_len()], &weight[..g.weight_len()]);
            let op = QConv { input, x_zero: -5, weight, w_zero, bias: Some(&[9, -40, 1000][..p.k]) };
            let kernel = &GENERIC_TILES_Q;
            let len = qconv2d_staged_scratch_len(kernel, &g, 1).unwrap();
            assert!(Direct::plan(kernel, &g, 1).is_some_and(|d| d.words <= len), "{len}");
            let (mut got, mut want) = ([0u8; 2 * 3 * 18], [1u8; 2 * 3 * 18]);
            let (got, want) = (&mut got[..g.output_len()], &mut want[..g.output_len()]);
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qconv2d_with(&g, &op, &out, got, ws).unwrap();
            qconv2d_reference(&g, &op, &out, want).unwrap();
            assert_eq!(got, want, "{layout:?}");
        }
    }

    /// The NCHW staging's 8 x 8 block transpose (8 channels, 45 pixels: whole blocks and the
    /// ragged rest) and the packing without row sums (every weight zero point 0), both kernels.
    #[test]
    fn whole_channel_blocks_and_zero_weight_offsets_match_the_oracle() {
        let p = Conv2dParams::new(1, 9, 5, 9, 3, 3, 3).pad(Padding::uniform(1));
        let g = p.validate().unwrap();
        let input: [u8; 405] = core::array::from_fn(|i| (i * 53 % 251) as u8);
        let weight: [i8; 243] = core::array::from_fn(|i| (i * 71 % 256) as u8 as i8);
        let op = QConv { input: &input, x_zero: 9, weight: &weight, w_zero: PerChannel::Tensor(0), bias: None };
        let out = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.05, 7);
        let mut scratch = [0i32; 8192];
        for kernel in [crate::arch::quant::QKernel::generic(), crate::arch::quant::QKernel::best()] {
            let len = qconv2d_staged_scratch_len(kernel, &g, 1).unwrap();
            let (mut got, mut want) = ([0u8; 135], [1u8; 135]);
            let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
            qconv2d_with(&g, &op, &out, &mut got, ws).unwrap();
            qconv2d_reference(&g, &op, &out, &mut want).unwrap();
            assert_eq!(got, want, "{}", kernel.id());
        }
    }
}
