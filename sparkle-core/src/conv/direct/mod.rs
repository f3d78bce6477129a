//! The direct conv: each (image, group)'s input is copied once into a zero-padded image, which
//! the GEMM kernels then read in place for every tap — no im2col gather and no packing of the
//! image (the implicit GEMM gathers each input element once per tap and per block of columns).
//!
//! Stride 1: the padded image is `hp x wp` (the input inside its padding; consecutive rows share
//! their padding columns, `wp = w + max(left, right)`, where an output row still fits). Output
//! pixel `(y, x)` reads tap `(r, s)` at padded pixel `(y + r*dh, x + s*dw)`. Numbered along
//! padded rows, output pixel `p = y*wp + x` reads padded pixel `p + shift(t)`,
//! `shift = r*dh*wp + s*dw` (past a row's end, into the next row's left padding, zeros): one
//! shift per tap. The conv is then a GEMM over "virtual" pixels `p < (ho-1)*wp + wo` (the
//! `wp - wo` past each output row are computed and dropped: 1 of 15 at 14x14 with a 3x3 kernel)
//! whose reduction
//! runs in blocks of channels, tap by tap: within a block of one tap the image's rows are evenly
//! spaced, which is what the kernels read in place.
//!
//! Stride `sy x sx`: the padded image is staged as `sy*sx` phase planes, phase `(a, b)` holding
//! padded pixels `(py*sy + a, px*sx + b)` in a `hq x wq` plane (`hq = ceil(hp/sy)`,
//! `wq = ceil(wp/sx)`). Output pixel `(y, x)`'s tap `(r, s)` reads padded pixel
//! `(y*sy + r*dh, x*sx + s*dw)`: pixel `(y + r*dh / sy, x + s*dw / sx)` of phase
//! `(r*dh % sy, s*dw % sx)`. Numbered along phase rows, output pixel `p = y*wq + x` reads
//! `p + shift(t)` with the phase plane's offset in the shift: the stride-1 scheme over a phase
//! width `wq` (stride 1 is the one-phase case). A 7x7 stride-2 layer (ResNet's conv1) reads its
//! image in place instead of gathering every element 12 times.
//! - Channel planes as row tiles (`direct/rows.rs`, on kernel sets with row tiles: AVX-512):
//!   C^T (pixels x kg) = X^T * W^T, a tile a run of one output row's pixels by a panel of output
//!   channels, the weights packed per call, the output written by the tiles. Nothing past an
//!   output row is computed (see the module).
//! - Channel planes (NCHW; NHWC below [`MIN_CHANNELS`] channels a group, its image transposed
//!   while staged) on the other kernel sets: C (kg x pixels) = W (kg x reduction) * X. The
//!   reduction runs channel by channel and within a channel tap by tap, KCRS order: W is read in
//!   place as a row-major matrix (KRSC weights, below 16 channels a group, are reordered once per
//!   call), and X's row (c, t), plane `c` shifted by `shift(t)`, is read in place as B, the
//!   kernels finding it through a table of the taps' shifts (`MicroArgs::taps`). A channel's taps
//!   read overlapping windows of one plane, so a reduction slice of B stays in L1. An NHWC output
//!   is written transposed. The pixels past each output row (`wp - wo`) and up to a whole tile
//!   are computed and dropped: what [`chosen`]'s "at most a quarter dropped" bounds.
//! - Pixels (NHWC from [`MIN_CHANNELS`] channels a group) as row tiles on kernel sets with them
//!   (`direct/rows.rs`: a tile a run of one output row's pixels, read in place, by a panel of
//!   output channels, the reduction tap by tap, the weights packed per call in KRSC's order).
//! - Pixels on the other kernel sets: C^T (pixels x kg) = X^T * W^T. The
//!   reduction runs in blocks of channels, tap by tap (`Reduction`); X^T's row `p` is padded
//!   pixel `p + shift(t)`'s channels, read in place as A (row stride: a padded pixel's); W^T is
//!   packed as B.
//! - Not taken: NCHW with KRSC weights from 16 channels a group, reordered per call (see
//!   [`chosen`]) or over blocks of channels, one plane per row of B (B's panels spilled L1:
//!   0.65-0.85x the implicit GEMM on the 16-core Xeon); and taps read with a stride through KCRS
//!   weights (streamed from L2 `r*s` times over: 512->512 3x3 @7 at half the implicit GEMM's
//!   speed).
//!
//! Except for the row tiles, the product goes to scratch with the bias and activation fused into
//! the kernels' write-out; only the real pixels are copied to the output. Images are staged,
//! multiplied and copied out in chunks that fit [`MAX_FLOATS`], each step split over the
//! workers.
#![allow(unsafe_code)]
// Without the feature only `chosen` (always false) and the sizes are reachable.
#![cfg_attr(not(feature = "direct"), allow(dead_code))]

use core::ops::Range;

use crate::arch::{Kernel, RowsKernel};
use crate::conv::operands::{copy, pack_a_by, pack_b_by, zero};
use crate::conv::Conv2d;
use crate::epilogue::{Bias, Epilogue};
use crate::error::{add, mul, Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::driver::{
    gemm_batch, operands_scratch_len, planned_workers, Batch, Executor, InPlaceB, JobFn, Operand, OutPtr, Shared,
    Workspace,
};
use crate::gemm::pack::Block;
use crate::layout::{TensorLayout, WeightLayout};
use crate::view::MatRef;

mod rows;

/// The most taps (`r*s`) of a direct conv on channel planes: its table of shifts lives in the
/// operand (7x7).
pub const MAX_TAPS: usize = 49;

/// The fewest input channels per group an NHWC image is read as pixels (A, a block of channels
/// per tap): below it a reduction block is too short for the kernels, and the image is staged as
/// channel planes instead, whose reduction runs over whole channels, every tap (ResNet's conv1,
/// 3 channels of 7x7 taps, NCHW: 70 -> 99 GFLOPS on one Zen 4 thread against the implicit GEMM).
pub const MIN_CHANNELS: usize = 16;

/// Below this many weights a reorder to KCRS runs on the calling thread alone.
const REORDER_ALONE: usize = 1 << 16;

/// The most floats of padded images and products one chunk of (image, group) pairs takes
/// (16 MiB); a single pair may take more. (512 in this crate's unit tests: a chunk per pair.)
pub const MAX_FLOATS: usize = if cfg!(test) { 512 } else { 1 << 22 };

/// Whether [`choose_path`](super::choose_path) takes the direct conv for `g` (where neither the
/// pointwise, depthwise nor Winograd path applies): this build has the `direct` feature (a
/// default one), the stride is no longer than the kernel's dilated extent (so few staged phase
/// planes go unread), at most a quarter of the computed pixels are dropped, the kernel has at
/// most [`MAX_TAPS`] taps, and the buffers' sizes fit a `usize`. Every layout pair, except NCHW
/// with KRSC weights from [`MIN_CHANNELS`] channels a group: channel planes read KCRS-ordered
/// weights, and reordering a large weight tensor per call cost more than the direct conv saves
/// (512->512 3x3 @7 on one Zen 4 thread: 75 GFLOPS as the implicit GEMM, 15 direct).
pub fn chosen(g: &Conv2d) -> bool {
    let p = g.params();
    // u128: a validated geometry's padding and dilation may be near usize::MAX.
    let extent = |taps: usize, d: usize| (taps as u128 - 1) * d as u128 + 1;
    cfg!(feature = "direct")
        && p.stride[0] as u128 <= extent(p.r, p.dilation[0])
        && p.stride[1] as u128 <= extent(p.s, p.dilation[1])
        && p.r * p.s <= MAX_TAPS
        && (p.layout == TensorLayout::Nhwc || p.weight_layout == WeightLayout::Kcrs || g.cg() < MIN_CHANNELS)
        // The computed row is the phase plane's width.
        && Shape::new(g, 32, 32, 512).is_ok_and(|shape| 4 * g.wo() as u128 >= 3 * shape.wp as u128)
}

/// Whether `g`'s image is staged as channel planes (NCHW, and NHWC below [`MIN_CHANNELS`]
/// channels a group) rather than read as pixels (NHWC from [`MIN_CHANNELS`]).
pub(crate) fn planes(g: &Conv2d) -> bool {
    g.params().layout == TensorLayout::Nchw || g.cg() < MIN_CHANNELS
}

/// Whether a [`chosen`] geometry runs direct on more than [`WINOGRAD_MAX_WORKERS`] workers (on
/// at most that many it always does): a stride-1 conv of at least [`MIN_CHANNELS`] channels a
/// group, an NHWC one of fewer, or any other (strided, or NCHW of few channels) whose kernel has
/// at least [`MANY_WORKERS_MIN_TAPS`] taps or whose images have at most
/// [`MANY_WORKERS_MAX_PIXELS`] output pixels. The others run as the implicit GEMM there.
/// Measured on the 16-core Xeon at 4, 8 and 16 threads, direct against the implicit GEMM, NCHW,
/// batch 1: ResNet's conv1 (7x7, stride 2; its gather reads each input element 12
/// times) 1.1-1.4x; 256->256 3x3 s2 @28 and 512->512 s2 @14 (14x14 and 7x7 outputs, too few
/// column panels for the implicit GEMM's split) 1.1-1.2x at 16; but 3->32 3x3 s2 @224 0.6-0.75x,
/// 3->32 3x3 @224 and @112 0.7-0.95x, 128->128 3x3 s2 @56 and 64->64 s2 @112 0.85-0.97x (the
/// product's copy and the phase planes cost more than the gather saves there). On one and two
/// threads direct wins on all of them (Zen 4: 3->32 3x3 @224 13 -> 73 GFLOPS on one thread).
/// NHWC below [`MIN_CHANNELS`] channels (as channel planes) always runs direct: its implicit GEMM
/// gathers a few channels per pixel (Xeon, 16 threads: 3->32 3x3 s2 @224 and 3->32 3x3 @224 at
/// 34-74 GFLOPS; conv1 101-150 against 544-622 direct).
///
/// [`WINOGRAD_MAX_WORKERS`]: super::path::WINOGRAD_MAX_WORKERS
pub fn scales(g: &Conv2d) -> bool {
    let p = g.params();
    (p.stride == [1, 1] && g.cg() >= MIN_CHANNELS)
        || (p.layout == TensorLayout::Nhwc && planes(g))
        || p.r * p.s >= MANY_WORKERS_MIN_TAPS
        || g.ho().saturating_mul(g.wo()) <= MANY_WORKERS_MAX_PIXELS
}

/// See [`scales`].
pub const MANY_WORKERS_MIN_TAPS: usize = 25;

/// See [`scales`].
pub const MANY_WORKERS_MAX_PIXELS: usize = 14 * 14;

/// The sizes of one (image, group) pair on a kernel with an `mr x nr` register tile.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// A phase plane's height, `ceil(hp / sy)` (stride 1: the padded height `hp`).
    hq: usize,
    /// A phase plane's width, `ceil(wpad / sx)`: the virtual pixels' row (stride 1: the padded
    /// width `wpad`).
    wp: usize,
    /// Phase planes (`sy * sx`).
    phases: usize,
    /// Pixels of a phase plane (`hq * wp`).
    plane: usize,
    /// Computed (virtual) pixels: `(ho-1)*wp + wo` rounded up to whole register tiles.
    pixels: usize,
    /// Channel planes: floats between channels; pixels: between padded pixels.
    stride: usize,
    /// Floats of the padded image (with the guard the last tile's reads run into).
    image: usize,
    /// Floats of the product (`kg x pixels` or `pixels x kg`).
    product: usize,
    /// The reduction's order.
    red: Reduction,
    /// The image staged as channel planes (NCHW, and NHWC below [`MIN_CHANNELS`] channels a
    /// group): the reduction runs channel by channel, tap by tap, the image read through the taps
    /// (B; A in the row tiles) and the weights in KCRS order.
    planes: bool,
}

impl Shape {
    /// The shape of `g`'s pairs for an `mr x nr` tile and reduction blocks of at most `kc`.
    fn new(g: &Conv2d, mr: usize, nr: usize, kc: usize) -> Result<Shape> {
        let p = g.params();
        let hp = add(add(p.h, p.pad.top, Param::Scratch)?, p.pad.bottom, Param::Scratch)?;
        let wpad = add(add(p.w, p.pad.left, Param::Scratch)?, p.pad.right, Param::Scratch)?;
        let [sy, sx] = p.stride;
        // The kernels' table of shifts holds MAX_TAPS (`chosen` asks the same).
        if mul(p.r, p.s, Param::Scratch)? > MAX_TAPS {
            return Err(Error::Overflow { param: Param::Scratch });
        }
        // Stride 1: consecutive rows share their padding columns where that leaves room for an
        // output row (`wo <= w + max(left, right)`): a row's right padding is the next row's
        // left (both zeros), so the row pitch is `w + max(left, right)`, not `w + left + right`,
        // and fewer computed pixels are dropped (3x3 at 14x14: 1 of 15, was 2 of 16). The last
        // row's right padding then reads `min(left, right)` zeros past the plane: the guard.
        let (shared, separate) = (p.w + p.pad.left.max(p.pad.right), wpad.div_ceil(sx));
        let wp = match (sy, sx) {
            (1, 1) if g.wo() <= shared => shared,
            _ => separate,
        };
        let hq = hp.div_ceil(sy);
        // Floats past the plane a real output's taps reach (0 unless the padding is shared).
        let over = separate - wp;
        let phases = mul(sy, sx, Param::Scratch)?;
        let plane = mul(hq, wp, Param::Scratch)?;
        let area = mul(plane, phases, Param::Scratch)?;
        // (ho-1)*sy + (r-1)*dh <= hp - 1, so (ho-1) + (r-1)*dh / sy <= hq - 1 (and so for the
        // columns): virtual pixel p + shift stays inside its phase plane, except for the pixels
        // past each row's `wo` and the last tile's, which the next plane or the guard hold.
        let real = add(mul(g.ho() - 1, wp, Param::Scratch)?, g.wo(), Param::Scratch)?;
        let (cg, kg) = (g.cg(), g.kg());
        let planes = planes(g);
        let (pixels, stride, image, product) = match planes {
            true => {
                let pixels = mul(real.div_ceil(nr), nr, Param::Scratch)?;
                // Planes an odd number of 64-byte lines apart, so a reduction slice's rows (one
                // per plane) fall into different L1 sets; `nr` floats of guard.
                let plane = add(add(area, nr, Param::Scratch)?, over, Param::Scratch)?.div_ceil(16) * 16;
                let plane = if plane % 32 == 0 { plane + 16 } else { plane };
                (pixels, plane, mul(plane, cg, Param::Scratch)?, mul(kg, pixels, Param::Scratch)?)
            }
            false => {
                let pixels = mul(real.div_ceil(mr), mr, Param::Scratch)?;
                // Rows a multiple of 4 KiB apart would put a tile's rows into one L1 set.
                let step = if (cg * 4).is_multiple_of(4096) { cg + 16 } else { cg };
                let image = mul(add(add(area, mr, Param::Scratch)?, over, Param::Scratch)?, step, Param::Scratch)?;
                (pixels, step, image, mul(pixels, kg, Param::Scratch)?)
            }
        };
        // No block of channels long enough for this `kc`: not a size, but the same answer (the
        // direct conv does not run). By taps, a block is one channel.
        let block = if planes { Some(1) } else { block(cg, kc) };
        let block = block.ok_or(Error::Overflow { param: Param::Scratch })?;
        let red = Reduction { block, taps: p.r * p.s, s: p.s, dilation: p.dilation, stride: p.stride, wp, plane };
        Ok(Shape { hq, wp, phases, plane, pixels, stride, image, product, red, planes })
    }

    /// Floats of one pair: padded image and product.
    fn pair(&self) -> Result<usize> {
        add(self.image, self.product, Param::Scratch)
    }
}

/// The channels of one reduction block: the largest divisor of `cg` that is at most `kc`, if
/// that is at least [`MIN_CHANNELS`] (or all of `cg`).
fn block(cg: usize, kc: usize) -> Option<usize> {
    let d = (cg.div_ceil(kc.max(1))..=cg).find(|d| cg.is_multiple_of(*d))?;
    let b = cg / d;
    (b >= MIN_CHANNELS.min(cg)).then_some(b)
}

/// The direct conv's reduction order: blocks of `block` channels, and within a block of channels
/// every tap in turn (so a block's weights are read for all taps while in cache), and within a
/// tap the block's channels. Row `q` is channel `c`, tap `t`.
#[derive(Clone, Copy, Debug)]
struct Reduction {
    block: usize,
    taps: usize,
    s: usize,
    dilation: [usize; 2],
    stride: [usize; 2],
    /// A phase plane's width and pixels ([`Shape`]'s `wp` and `plane`).
    wp: usize,
    plane: usize,
}

impl Reduction {
    /// `(c, t)` of reduction row `q`.
    #[inline]
    fn split(&self, q: usize) -> (usize, usize) {
        let span = self.block * self.taps;
        let (cb, rem) = (q / span, q % span);
        (cb * self.block + rem % self.block, rem / self.block)
    }
    /// Pixels between output pixel `p` and what tap `t` reads for it: the offset of the tap's
    /// phase plane and its shift inside it (stride 1: `r*dh*wp + s*dw`).
    #[inline]
    fn shift(&self, t: usize) -> usize {
        let (y, x) = (t / self.s * self.dilation[0], t % self.s * self.dilation[1]);
        let [sy, sx] = self.stride;
        ((y % sy) * sx + x % sx) * self.plane + y / sy * self.wp + x / sx
    }
    /// The kernels' table of [`Reduction::shift`]s: tap `t`'s at `t` (`taps <= MAX_TAPS`, as
    /// `Shape::new` checks), zeros past the last.
    fn shifts(&self) -> [usize; MAX_TAPS] {
        let mut shifts = [0; MAX_TAPS];
        for (t, slot) in shifts.iter_mut().enumerate().take(self.taps) {
            *slot = self.shift(t);
        }
        shifts
    }
    /// Whether rows `q` all lie in one block of one tap (an empty range: the block of its start).
    #[inline]
    fn one_tap(&self, q: &Range<usize>) -> bool {
        q.is_empty() || (q.end - 1) / self.block == q.start / self.block
    }
}

/// Scratch blocking for the direct conv: `kc` one reduction block, or (by taps) whole channels.
fn blocking(g: &Conv2d, kernel: &Kernel, blocking: &Blocking) -> Result<(Blocking, Shape)> {
    let shape = Shape::new(g, kernel.gemm.mr, kernel.gemm.nr, blocking.kc)?;
    let taps = shape.red.taps;
    let kc = if shape.planes { (blocking.kc / taps).max(1) * taps } else { shape.red.block };
    Ok((Blocking { kc, ..*blocking }, shape))
}

/// The GEMM of one pair: `(m, n, k)`.
fn gemm_dims(g: &Conv2d, shape: &Shape) -> (usize, usize, usize) {
    let k = g.gemm_dims().2;
    if shape.planes {
        (g.kg(), shape.pixels, k)
    } else {
        (shape.pixels, g.kg(), k)
    }
}

/// How the direct conv of `g` runs with `workers` workers.
struct Plan {
    /// The GEMM driver's blocking ([`blocking`]).
    blocking: Blocking,
    shape: Shape,
    /// Pairs per chunk.
    chunk: usize,
    /// Floats of scratch the GEMM driver takes (first); a chunk of padded images and products
    /// follows, then `weights` floats: the weights reordered to KCRS (planes with KRSC weights),
    /// or the row tiles' panels.
    gemm: usize,
    weights: usize,
    /// Floats of scratch in all.
    total: usize,
    /// The row tiles channel planes run as (`rows.rs`), if any: then `weights` floats of packed
    /// weight panels follow the chunk of images (`gemm` is 0, and there are no products).
    row_tiles: Option<RowsKernel>,
}

impl Plan {
    /// `packed`: the weights come packed ahead ([`PackedForm`]), so no scratch holds them.
    fn new(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize, packed: bool) -> Result<Plan> {
        let (blocking, shape) = self::blocking(g, kernel, blocking)?;
        let p = g.params();
        let pairs = mul(p.n, p.groups, Param::Scratch)?;
        let row_tiles = rows::takes(kernel);
        // Row tiles: a chunk of images, then the packed weights; no GEMM scratch, no products.
        let (gemm, pair, weights) = if row_tiles.is_some() {
            (0, shape.image, if packed { 0 } else { rows::packed_len(g, kernel, workers)? })
        } else {
            let (m, n, k) = gemm_dims(g, &shape);
            let gemm = operands_scratch_len(kernel, &blocking, m, n, k, workers)?;
            let reorder = !packed && shape.planes && p.weight_layout == WeightLayout::Krsc;
            (gemm, shape.pair()?, if reorder { g.weight_len() } else { 0 })
        };
        let chunk = (MAX_FLOATS / pair.max(1)).clamp(1, pairs.max(1));
        let total = add(add(gemm, mul(chunk, pair, Param::Scratch)?, Param::Scratch)?, weights, Param::Scratch)?;
        Ok(Plan { blocking, shape, chunk, gemm, weights, total, row_tiles })
    }
}

/// Floats of scratch the direct conv of `g` needs with `workers` workers.
pub fn scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    Plan::new(g, kernel, blocking, workers, false).map(|plan| plan.total)
}

/// Whether `kernel` and `blocking` run a [`chosen`] geometry direct: channel planes (NCHW, and
/// NHWC below [`MIN_CHANNELS`] channels a group) need a kernel with row tiles
/// (AVX-512's, [`rows`]) or one that reads B in place
/// ([`crate::arch::GemmKernel::b_in_place`]: the x86 and NEON kernels), and the sizes must exist
/// (pixels: a block of at least [`MIN_CHANNELS`] channels dividing the group's within `kc`).
pub(crate) fn fits(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> bool {
    runs(g, kernel, blocking, workers, usize::MAX)
}

/// [`fits`], and the scratch holds [`scratch_len`].
pub(crate) fn runs(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize, scratch: usize) -> bool {
    Plan::new(g, kernel, blocking, workers, false).is_ok_and(|plan| {
        (kernel.gemm.b_in_place || !plan.shape.planes || plan.row_tiles.is_some()) && plan.total <= scratch
    })
}

/// How the direct conv of a geometry reads weights packed ahead
/// ([`crate::conv::packed::PackedConv`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PackedForm {
    /// The row tiles' panels (`rows.rs`): per group, `ceil(kg / nr)` panels of `gemm_k` groups of
    /// `nr` output channels, zero past `kg`, the reduction in KCRS order (channel planes) or with
    /// `pixels` in KRSC order.
    Rows { nr: usize, pixels: bool },
    /// Pixels on kernel sets without row tiles: per group `W^T`, `gemm_k x kg` row-major, the
    /// reduction in blocks of `block` channels, tap by tap (`Reduction`), which the GEMM driver
    /// packs as B by plain copies.
    Pixels { block: usize },
}

/// The form weights packed ahead take for `g` run direct on `kernel` and `blocking` by
/// `workers` workers, where the direct conv runs there on row tiles or as pixels (`None`
/// otherwise: the weights are read as given).
pub(crate) fn packed_form(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Option<PackedForm> {
    if !fits(g, kernel, blocking, workers) {
        return None;
    }
    let plan = Plan::new(g, kernel, blocking, workers, true).ok()?;
    match (plan.row_tiles, plan.shape.planes) {
        (Some(rk), planes) => Some(PackedForm::Rows { nr: rk.nr, pixels: !planes }),
        (None, false) => Some(PackedForm::Pixels { block: plan.shape.red.block }),
        (None, true) => None,
    }
}

/// Floats of weights packed in `form` for `g`.
pub(crate) fn packed_len(g: &Conv2d, form: PackedForm) -> Result<usize> {
    match form {
        PackedForm::Rows { nr, .. } => {
            let panels = mul(g.kg().div_ceil(nr.max(1)), g.params().groups, Param::Packed)?;
            mul(mul(panels, g.gemm_dims().2, Param::Packed)?, nr, Param::Packed)
        }
        PackedForm::Pixels { .. } => Ok(g.weight_len()),
    }
}

/// Floats of scratch the direct conv of `g` needs with weights packed ahead.
pub(crate) fn packed_scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    Plan::new(g, kernel, blocking, workers, true).map(|plan| plan.total)
}

/// Packs `weight` (validated for `g`) in `form` into `dst` ([`packed_len`] floats).
///
/// # Safety
/// `form` is [`packed_form`]'s for `g` on `kernel` (so a `Rows` form's kernel is `kernel`'s).
pub(crate) unsafe fn pack(g: &Conv2d, kernel: &Kernel, form: PackedForm, weight: &[f32], dst: &mut [f32]) {
    let p = g.params();
    let (kg, gk) = (g.kg(), g.gemm_dims().2);
    match form {
        PackedForm::Rows { nr, pixels } => {
            let Some(rk) = kernel.gemm.rows.filter(|rk| rk.nr == nr) else { return };
            let per_group = kg.div_ceil(nr);
            for grp in 0..p.groups {
                for j in 0..per_group {
                    let at = (grp * per_group + j) * gk * nr;
                    let panel = &mut dst[at..at + gk * nr];
                    // SAFETY: `gk * nr` floats of this panel alone; the kernel set is this CPU's.
                    unsafe { rows::pack_panel(g, &rk, (weight, pixels), grp, j, panel.as_mut_ptr()) };
                }
            }
        }
        PackedForm::Pixels { block } => {
            let taps = p.r * p.s;
            let red = Reduction { block, taps, s: p.s, dilation: p.dilation, stride: p.stride, wp: 0, plane: 0 };
            for grp in 0..p.groups {
                let w0 = g.weight_group_offset(grp);
                let wt = Weights { g, w: &weight[w0..w0 + kg * gk], red };
                for (q, row) in dst[w0..w0 + kg * gk].chunks_exact_mut(kg).enumerate() {
                    for (o, v) in row.iter_mut().enumerate() {
                        *v = wt.w[wt.at(o, q)];
                    }
                }
            }
        }
    }
}

/// Whether the plan for `g` runs channel planes as row tiles (for tests).
#[cfg(test)]
pub(crate) fn row_tiles(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Option<bool> {
    Plan::new(g, kernel, blocking, workers, false).ok().map(|plan| plan.shape.planes && plan.row_tiles.is_some())
}

/// The direct conv of a validated `g` in `ws`; `weight` as given, or with `packed` packed ahead
/// in the form [`packed_form`] names for `g` and `ws` ([`pack`]).
///
/// # Safety
/// As [`super::fused::conv2d_unchecked`], and [`runs`] holds (with `packed`: the packed weights
/// are [`pack`]'s for this form, and the scratch holds [`packed_scratch_len`]).
pub(crate) unsafe fn conv2d_unchecked(
    g: &Conv2d,
    input: &[f32],
    (weight, packed): (&[f32], bool),
    epi: &Epilogue<'_>,
    bias: Option<&[f32]>,
    output: &mut [f32],
    ws: &mut Workspace<'_>,
) {
    let (kernel, exec) = (ws.kernel, ws.exec);
    let workers = planned_workers(exec).max(1);
    // Cannot fail: `runs` computed the same.
    let Ok(Plan { blocking: b, shape, chunk, gemm, weights, row_tiles, .. }) =
        Plan::new(g, kernel, ws.blocking, workers, packed)
    else {
        return;
    };
    let p = g.params();
    let pairs = p.n * p.groups;
    let (front, rest) = ws.scratch.split_at_mut(gemm);
    let (rest, reordered) = rest.split_at_mut(rest.len() - weights);
    let images = Shared(rest.as_mut_ptr());
    if let Some(rk) = row_tiles {
        for first in (0..pairs).step_by(chunk) {
            let count = chunk.min(pairs - first);
            // SAFETY: the chunk's images inside `rest` (`Plan`).
            unsafe { stage_chunk(g, &shape, input, images, first, count, exec) };
            // SAFETY: the images are staged and only read from here on; `reordered` holds the
            // panels of `workers` workers (`Plan`), `exec`'s count.
            unsafe {
                rows::tiles(
                    g,
                    &rk,
                    &shape,
                    (images.ptr(), first, count),
                    (weight, packed),
                    (reordered.as_mut_ptr(), workers),
                    epi,
                    bias,
                    output.as_mut_ptr(),
                    exec,
                )
            };
        }
        return;
    }
    // SAFETY: the products follow the chunk's images inside `rest` (sized by `Plan`).
    let products = Shared(unsafe { images.ptr().add(chunk * shape.image) });
    let out = Shared(output.as_mut_ptr());
    // Channel planes read the weights as a row-major matrix in the reduction's (c, t) order:
    // KRSC weights are reordered once, their output channels split over the workers.
    let weight: &[f32] = if weights > 0 {
        let dst = Shared(reordered.as_mut_ptr());
        let (k, gk, taps) = (p.k, g.gemm_dims().2, p.r * p.s);
        // A few channels' weights (conv1: 9408 floats) take less than a parallel region's start.
        let parts = if weights < REORDER_ALONE { 1 } else { workers };
        let reorder = |w: usize| {
            if w >= parts {
                return;
            }
            let cg = g.cg();
            for o in k * w / parts..k * (w + 1) / parts {
                // KRSC's (t, c) to KCRS's (c, t).
                let (src, row) = (&weight[o * gk..(o + 1) * gk], o * gk);
                for t in 0..taps {
                    for c in 0..cg {
                        // SAFETY: `reordered` holds the `k * gk` weights; output channel o's row
                        // is this worker's alone.
                        unsafe { *dst.ptr().add(row + c * taps + t) = src[t * cg + c] };
                    }
                }
            }
        };
        if parts == 1 {
            reorder(0);
        } else {
            exec.run(&reorder);
        }
        // SAFETY: written above and only read from here on.
        unsafe { core::slice::from_raw_parts(dst.ptr(), weights) }
    } else {
        weight
    };
    for first in (0..pairs).step_by(chunk) {
        let count = chunk.min(pairs - first);
        // 1. Pad the chunk's images.
        // SAFETY: the chunk's images inside `rest` (`Plan`).
        unsafe { stage_chunk(g, &shape, input, images, first, count, exec) };
        // 2. The products. The images are complete and only read from here on.
        // SAFETY: written above, inside `rest`, and not written again during the GEMMs.
        let staged = unsafe { core::slice::from_raw_parts(images.ptr(), count * shape.image) };
        let jobs = Jobs { g, shape, weight, packed, bias, images: staged, products, first, count };
        let mut inner = Workspace { kernel, blocking: &b, exec, scratch: &mut *front };
        // SAFETY: every job is the same GEMM; each writes its own product; the driver's scratch
        // (`front`) holds `operands_scratch_len` for `b`.
        unsafe { gemm_batch(&jobs, 1.0, 0.0, epi.activation, &mut inner) };
        // 3. The real pixels to the output, the units (pair, output channel or output row) split.
        let units = count * copy_units(g);
        exec.run(&|w| {
            if w >= workers {
                return;
            }
            for u in units * w / workers..units * (w + 1) / workers {
                // SAFETY: each unit reads its pair's product and writes its own output rows.
                unsafe { copy_out(g, &shape, products.ptr(), first, u, out.ptr()) };
            }
        });
    }
}

/// Pads the images of `count` pairs from pair `first` into `images` (`shape.image` floats
/// apart), the units (pair, phase row) split over the workers.
///
/// # Safety
/// `images` valid for `count * shape.image` floats, not otherwise used during the call; pairs
/// `first..first + count` exist.
unsafe fn stage_chunk(
    g: &Conv2d,
    shape: &Shape,
    input: &[f32],
    images: Shared<f32>,
    first: usize,
    count: usize,
    exec: &dyn Executor,
) {
    let workers = planned_workers(exec).max(1);
    let rows = stage_rows(g, shape);
    let (hq, [sy, sx]) = (shape.hq, g.params().stride);
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let units = count * rows;
        let (start, end) = (units * w / workers, units * (w + 1) / workers);
        // The first unit's (pair, channel, phase (a, b), phase row), then counted on: a unit's
        // divisions cost more than staging a short row (256->256 3x3 stride 2 @28 on one Zen 4
        // thread: the staging took 13% of the call, most of it in divisions).
        let (i, rest) = (start / rows, start % rows);
        let per_channel = shape.phases * hq;
        let (c, rest) = (rest / per_channel, rest % per_channel);
        let (phase, py) = (rest / hq, rest % hq);
        let mut at = Unit { i, c, a: phase / sx, b: phase % sx, py };
        let channels = rows / per_channel;
        for _ in start..end {
            // SAFETY: pair i's image inside `images`; each unit writes its own row (and guard).
            unsafe { stage(g, shape, input, first + at.i, &at, images.ptr().add(at.i * shape.image)) };
            at.advance([hq, sx, sy, channels]);
        }
    });
}

/// One unit of [`stage_chunk`]: pair `i` of the chunk, channel `c` (planes; 0 for pixels), phase
/// `(a, b)` (phase plane `a * sx + b`), phase row `py`.
struct Unit {
    i: usize,
    c: usize,
    a: usize,
    b: usize,
    py: usize,
}

impl Unit {
    /// The next unit: the phase row first, then `b`, `a`, the channel and the pair, each
    /// wrapping at its count in `[hq, sx, sy, channels]` into the next.
    fn advance(&mut self, counts: [usize; 4]) {
        for (digit, count) in [&mut self.py, &mut self.b, &mut self.a, &mut self.c].into_iter().zip(counts) {
            *digit += 1;
            if *digit < count {
                return;
            }
            *digit = 0;
        }
        self.i += 1;
    }
}

/// Pads unit `at` of pair `pair`'s image into `dst` (the pair's image): row `at.py` of phase
/// plane `(at.a, at.b)` of channel `at.c` of the group (channel planes, from either layout), or
/// of the pixels' phase plane (NHWC pixels). A channel's (planes) or the image's (pixels) last
/// row also zeroes the guard after it.
///
/// # Safety
/// `dst` holds `shape.image` floats; `pair < n * groups`; `at` one of [`stage_rows`]' units.
unsafe fn stage(g: &Conv2d, shape: &Shape, input: &[f32], pair: usize, at: &Unit, dst: *mut f32) {
    let p = g.params();
    let (n, grp) = if p.groups == 1 { (pair, 0) } else { (pair / p.groups, pair % p.groups) };
    let (hq, wq, [sy, sx]) = (shape.hq, shape.wp, p.stride);
    let (a, b, py) = (at.a, at.b, at.py);
    let phase = a * sx + b;
    // The phase plane's last row (of the channel's planes, or of the pixels' image).
    let last = a + 1 == sy && b + 1 == sx && py + 1 == hq;
    // Padded row `y` or column `x` inside the input: its input row or column.
    let inside = |v: usize, before: usize, len: usize| v.checked_sub(before).filter(|&v| v < len);
    let y = inside(py * sy + a, p.pad.top, p.h);
    // The phase row's pixels `px` that lie inside the input: `px*sx + b - pad.left` in `0..w`.
    let first = p.pad.left.saturating_sub(b).div_ceil(sx).min(wq);
    let end = (p.pad.left + p.w).saturating_sub(b).div_ceil(sx).clamp(first, wq);
    let src = input.as_ptr();
    // SAFETY: (whole body) writes inside the pair's image (its layout from `Shape::new`), reads
    // validated input rows: `first..end` are the phase row's pixels inside the input.
    unsafe {
        match shape.planes {
            true => {
                let c = at.c;
                let base = dst.add(c * shape.stride);
                let line = base.add(phase * shape.plane + py * wq);
                match y {
                    None => zero(line, wq),
                    Some(y) => {
                        zero(line, first);
                        if first < end {
                            // The input column of the first pixel inside, and the floats between
                            // two of the phase row's pixels.
                            let x = first * sx + b - p.pad.left;
                            let from = src.add(g.input_index(n, grp * g.cg() + c, y, x));
                            let step = if p.layout == TensorLayout::Nchw { sx } else { sx * p.c };
                            if step == 1 {
                                copy(from, line.add(first), end - first);
                            } else if step == 2 {
                                // Stride 2 (NCHW): every other float, as slices the compiler
                                // vectorises (the general loop below cost 10-14% of 256->256
                                // and 512->512 3x3 stride 2 on one Zen 4 thread).
                                let len = end - first;
                                let to = core::slice::from_raw_parts_mut(line.add(first), len);
                                let from = core::slice::from_raw_parts(from, 2 * len - 1);
                                for (v, pair) in to.iter_mut().zip(from.chunks(2)) {
                                    *v = pair[0];
                                }
                            } else {
                                for (i, px) in (first..end).enumerate() {
                                    *line.add(px) = *from.add(i * step);
                                }
                            }
                        }
                        zero(line.add(end), wq - end);
                    }
                }
                if last {
                    // The guard after the channel's planes, which the last tiles' reads reach.
                    let planes = shape.phases * shape.plane;
                    zero(base.add(planes), shape.stride - planes);
                }
            }
            false => {
                let (cg, step) = (g.cg(), shape.stride);
                let line = dst.add((phase * shape.plane + py * wq) * step);
                for px in 0..wq {
                    let pixel = line.add(px * step);
                    match y.filter(|_| (first..end).contains(&px)) {
                        Some(y) => {
                            let x = px * sx + b - p.pad.left;
                            copy(src.add(g.nhwc_input_index(n, grp * cg, y, x)), pixel, cg)
                        }
                        None => zero(pixel, cg),
                    }
                }
                if last {
                    // The guard past the last plane, which the last tiles' reads reach.
                    let planes = shape.phases * shape.plane * step;
                    zero(dst.add(planes), shape.image - planes);
                }
            }
        }
    }
}

/// The units [`stage`] pads a pair's image in: every phase row of every channel (planes) or every
/// phase row (pixels), so that a few channels (ResNet's conv1: 3) still give every worker rows.
fn stage_rows(g: &Conv2d, shape: &Shape) -> usize {
    let rows = shape.phases * shape.hq;
    if shape.planes {
        g.cg() * rows
    } else {
        rows
    }
}

/// The units [`copy_out`] copies a pair's product in: its output channels (NCHW) or output rows
/// (NHWC, so that a worker's writes are whole pixels).
fn copy_units(g: &Conv2d) -> usize {
    match g.params().layout {
        TensorLayout::Nchw => g.kg(),
        TensorLayout::Nhwc => g.ho(),
    }
}

/// Copies unit `u` of the chunk starting at pair `first` from the products to the output: NCHW,
/// an output channel's rows; NHWC, an output row's pixels.
///
/// # Safety
/// The chunk's products are complete; the unit lies inside the chunk; `out` is the validated output.
unsafe fn copy_out(g: &Conv2d, shape: &Shape, products: *const f32, first: usize, u: usize, out: *mut f32) {
    let p = g.params();
    let (kg, wp) = (g.kg(), shape.wp);
    // SAFETY: (whole body) reads inside the pair's product, writes the pair's own output elements.
    unsafe {
        match p.layout {
            TensorLayout::Nchw => {
                let (i, o) = (u / kg, u % kg);
                let pair = first + i;
                let (n, grp) = (pair / p.groups, pair % p.groups);
                let src = products.add(i * shape.product + o * shape.pixels);
                for y in 0..g.ho() {
                    copy(src.add(y * wp), out.add(g.output_index(n, grp * kg + o, y, 0)), g.wo());
                }
            }
            TensorLayout::Nhwc => {
                let (i, y) = (u / g.ho(), u % g.ho());
                let pair = first + i;
                let (n, grp) = (pair / p.groups, pair % p.groups);
                let product = products.add(i * shape.product);
                for x in 0..g.wo() {
                    let dst = out.add(g.output_index(n, grp * kg, y, x));
                    if shape.planes {
                        // The product is `kg x pixels`: a pixel's channels are a row apart.
                        let src = product.add(y * wp + x);
                        for o in 0..kg {
                            *dst.add(o) = *src.add(o * shape.pixels);
                        }
                    } else {
                        copy(product.add((y * wp + x) * kg), dst, kg);
                    }
                }
            }
        }
    }
}

/// The GEMMs of one chunk of pairs.
struct Jobs<'a> {
    g: &'a Conv2d,
    shape: Shape,
    weight: &'a [f32],
    /// `weight` is [`pack`]'s [`PackedForm::Pixels`]: each group's `W^T` row-major.
    packed: bool,
    bias: Option<&'a [f32]>,
    images: &'a [f32],
    products: Shared<f32>,
    first: usize,
    count: usize,
}

// SAFETY: every job is the GEMM of `gemm_dims`, writing its own pair's product (disjoint), with a
// bias of its group's `kg` channels.
unsafe impl Batch for Jobs<'_> {
    fn jobs(&self) -> usize {
        self.count
    }
    fn with_job(&self, i: usize, f: &mut JobFn<'_>) {
        let g = self.g;
        let grp = (self.first + i) % g.params().groups;
        let (kg, gemm_k) = (g.kg(), g.gemm_dims().2);
        let w0 = g.weight_group_offset(grp);
        let w = &self.weight[w0..w0 + kg * gemm_k];
        let image = Image {
            data: &self.images[i * self.shape.image..(i + 1) * self.shape.image],
            shape: self.shape,
            k: gemm_k,
            shifts: if self.shape.planes { self.shape.red.shifts() } else { [0; MAX_TAPS] },
        };
        let gb = self.bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
        // SAFETY: pair i's product inside the chunk's.
        let c = unsafe { self.products.ptr().add(i * self.shape.product) };
        let out = OutPtr { ptr: c, rs: self.shape.pixels, cs: 1 };
        if self.shape.planes {
            // KCRS weights (or KRSC reordered) are the reduction's order: a row-major matrix.
            let Ok(a) = MatRef::row_major(w, kg, gemm_k) else { return };
            f(&a, &image, out, gb.map_or(Bias::None, Bias::Row));
        } else if self.packed {
            // The group's W^T, `gemm_k x kg` row-major in the reduction's order ([`pack`]).
            let Ok(wt) = MatRef::row_major(w, gemm_k, kg) else { return };
            f(&image, &wt, OutPtr { ptr: c, rs: kg, cs: 1 }, gb.map_or(Bias::None, Bias::Col));
        } else {
            let wt = Weights { g, w, red: self.shape.red };
            f(&image, &wt, OutPtr { ptr: c, rs: kg, cs: 1 }, gb.map_or(Bias::None, Bias::Col));
        }
    }
}

/// A pair's padded image as the direct conv's operand: channel planes `reduction x pixels` (B),
/// pixels `pixels x reduction` (A). Element (pixel `j`, row `q` = channel `c`, tap `t`) is image
/// float `c*stride + shift(t) + j` (planes) or `(j + shift(t))*stride + c` (pixels).
struct Image<'a> {
    data: &'a [f32],
    shape: Shape,
    k: usize,
    /// By taps: each tap's shift, in floats (the kernels' table).
    shifts: [usize; MAX_TAPS],
}

impl Image<'_> {
    /// Offset of pixel `j`, reduction row `q`.
    #[inline]
    fn at(&self, j: usize, q: usize) -> usize {
        let (c, t) = self.shape.red.split(q);
        let shift = self.shape.red.shift(t);
        if self.shape.planes {
            c * self.shape.stride + shift + j
        } else {
            (j + shift) * self.shape.stride + c
        }
    }
    /// Element `(row, col)` of the operand.
    #[inline]
    fn get(&self, row: usize, col: usize) -> f32 {
        let (j, q) = if self.shape.planes { (col, row) } else { (row, col) };
        self.data[self.at(j, q)]
    }
}

// SAFETY: packing reads the image through `get` (bounds-checked); the in-place views cover rows or
// columns of one reduction block, whose every element lies inside the image (`Shape::new`'s guard).
unsafe impl Operand for Image<'_> {
    fn rows(&self) -> usize {
        if self.shape.planes {
            self.k
        } else {
            self.shape.pixels
        }
    }
    fn cols(&self) -> usize {
        if self.shape.planes {
            self.shape.pixels
        } else {
            self.k
        }
    }
    /// Read in place (never packed where the direct conv runs).
    fn pack_cost(&self, _as_b: bool) -> usize {
        1
    }
    fn in_place(&self, cols: Range<usize>) -> Option<(*const f32, usize)> {
        (!self.shape.planes && self.shape.red.one_tap(&cols))
            .then(|| (self.data.as_ptr().wrapping_add(self.at(0, cols.start)), self.shape.stride))
    }
    fn b_in_place(&self, rows: Range<usize>, _few_rows: bool) -> Option<InPlaceB> {
        let ptr = self.data.as_ptr().wrapping_add(self.at(0, rows.start));
        let taps = self.shape.red.taps;
        // Channel planes are read by taps, whole channels: row (c, t) at plane c (`ptr`, tap 0
        // being unshifted) plus tap t's shift.
        let whole = rows.start.is_multiple_of(taps) && rows.len().is_multiple_of(taps);
        (self.shape.planes && whole).then_some(InPlaceB {
            ptr,
            rs: self.shape.stride,
            taps: self.shifts.as_ptr(),
            ntaps: taps,
        })
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_a_by(blk, mr, dst, |i, q| self.get(i, q)) }
    }
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: Range<usize>, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_b_by(blk, nr, panels, dst, |q, j| self.get(q, j)) }
    }
}

/// A group's weights in the direct conv's reduction order, transposed: NHWC's B
/// (`reduction x kg`).
#[derive(Clone, Copy)]
struct Weights<'a> {
    g: &'a Conv2d,
    w: &'a [f32],
    red: Reduction,
}

impl Weights<'_> {
    /// Offset of output channel `o`, reduction row `q`.
    #[inline]
    fn at(&self, o: usize, q: usize) -> usize {
        let (c, t) = self.red.split(q);
        o * self.g.gemm_dims().2 + self.g.reduction_index(c, t / self.red.s, t % self.red.s)
    }
    /// Reduction rows `q0..q0 + len` (inside one tap's block) of every output channel as a
    /// `kg x len` matrix view: within a tap a block's channels are a fixed stride apart (KCRS:
    /// `r*s`; KRSC: 1).
    fn block_view(&self, q0: usize, len: usize) -> Option<MatRef<'_>> {
        let at = self.at(0, q0);
        let cs = self.g.reduction_index(1, 0, 0) - self.g.reduction_index(0, 0, 0);
        MatRef::new(self.w.get(at..)?, self.g.kg(), len, self.g.gemm_dims().2, cs).ok()
    }
}

// SAFETY: packing reads through bounds-checked indexing or a validated view.
unsafe impl Operand for Weights<'_> {
    fn rows(&self) -> usize {
        self.g.gemm_dims().2
    }
    fn cols(&self) -> usize {
        self.g.kg()
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_a_by(blk, mr, dst, |q, o| self.w[self.at(o, q)]) }
    }
    /// Packed for every reduction block: within one tap a block is a strided matrix, packed by
    /// the GEMM's own `pack_b`.
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: Range<usize>, dst: *mut f32) {
        let rows = blk.row..blk.row + blk.rows;
        if let (true, Some(view)) = (self.red.one_tap(&rows), self.block_view(blk.row, blk.rows)) {
            let blk = Block { row: 0, ..blk };
            // SAFETY: forwarded contract; the view holds the block's rows and every column.
            unsafe { crate::gemm::pack::pack_b(&view.t(), blk, nr, panels, dst) };
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { pack_b_by(blk, nr, panels, dst, |q, o| self.w[self.at(o, q)]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reduction row maps to one (channel, tap), blocks stay inside one tap, and the blocks
    /// divide the channels.
    #[test]
    fn reduction_order_is_a_permutation() {
        for (cg, kc) in [(16, 512), (64, 16), (96, 64), (512, 256), (37, 512)] {
            let b = block(cg, kc).unwrap();
            assert!(cg % b == 0 && b <= kc.max(cg.min(kc)));
            let red = Reduction { block: b, taps: 6, s: 3, dilation: [1, 2], stride: [1, 1], wp: 10, plane: 100 };
            let mut seen = [[false; 6]; 512];
            for q in 0..cg * 6 {
                let (c, t) = red.split(q);
                assert!(!seen[c][t], "{cg} {kc}: ({c}, {t}) twice");
                seen[c][t] = true;
                if q % b == 0 {
                    assert!(red.one_tap(&(q..q + b)));
                    assert!(!red.one_tap(&(q..q + b + 1)) || q + b == cg * 6);
                }
            }
        }
        assert_eq!(block(37, 16), None);
        assert_eq!(block(16, 8), None);
        assert_eq!(block(96, 16), Some(16));
        assert_eq!(block(96, 40), Some(32));
    }
}
