//! Depthwise int8 conv on channels-last (NHWC) images, vectorized across the channels.
//!
//! `conv::depthwise` runs one channel at a time along its plane; in NHWC a channel's elements
//! are `c` apart, so that loop reads one byte of every pixel it touches (2.7 GOPS at 32 channels
//! @112 on a Zen 4, against PyTorch's 43). Here a pixel's channels are the vector:
//!
//! ```text
//! worker w: a share of the output rows (all images' rows in order), every channel; or, where
//!            the channel blocks outnumber the rows, every row and a share of the blocks
//!   per block of CB (32) channels, or 16 or 8 at the end, or fewer (element by element):
//!     the block's weights less their zero points as word lanes, tap by tap (`wt[tap][lane]`)
//!     per output row, PX (16) pixels at a time:
//!       each pixel's sums = bias - zx * (its taps' weight sums) + sum over its taps inside the
//!         input of x * wt[tap]: interior pixels RUN (4) at a time through one table of tap
//!         offsets (RUN independent chains of multiply-adds, each tap's weights loaded once),
//!         border pixels one by one over their valid kernel rows and columns
//!       the PX x block tile written out: the kernel's vector write-out where it has one (a
//!       one-byte output with the ONNX stage), else each element through the oracle's stage
//! ```
//!
//! Padding adds nothing (`x - zx` is 0 there by definition), hence `zx` times the weight sums
//! of the taps inside the input. A product `x * w`, with `x` an input byte widened to 32 bits
//! and `w` the weight less its zero point (in [-255, 255]) in the low half of a 32-bit lane, is
//! one lane of a word multiply-add: `vpdpwssd` (AVX-512 VNNI, which accumulates too) or
//! `vpmaddwd` (AVX2), exact because the high halves' product is 0. Sums wrap: exact, as the
//! true sum fits (the accumulator bound of the op's check).
#![allow(unsafe_code)]

use super::{interior_range, DwOut, QConv, ZEROS};
use crate::arch::quant::{FinishTile, QKernel};
use crate::conv::Conv2d;
use crate::gemm::driver::{planned_workers, Executor, Pinned};
use crate::quant::{narrow, OutputStage, QElem, QOperand};
use crate::TensorLayout;

/// Channels per block (the lanes of a pixel's sums; 2 AVX-512 registers).
const CB: usize = 32;
/// The narrower blocks for a remainder of 16 or 8 channels or more.
const CB_HALF: usize = 16;
const CB_QUARTER: usize = 8;
/// Output pixels per tile (the write-out's rows).
const PX: usize = 16;
/// Taps at most (7 x 7); larger kernels take the per-channel loop.
const MAX_TAPS: usize = 49;

/// Whether this path takes depthwise conv `g` (checked operands): NHWC, at most
/// [`MAX_TAPS`] taps, on x86-64 and AArch64 (elsewhere the per-channel loop: a Cortex-M's
/// one-lane vectors and small stack; `rows` keeps about 9 KiB of tables there).
pub(super) fn fits(g: &Conv2d) -> bool {
    let p = g.params();
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && p.layout == TensorLayout::Nhwc
        && p.r.saturating_mul(p.s) <= MAX_TAPS
}

/// One worker's part: output rows (row `q` is image `q / ho`, output row `q % ho`) by channels.
#[derive(Clone, Debug)]
struct Part {
    rows: core::ops::Range<usize>,
    channels: core::ops::Range<usize>,
}

/// Runs depthwise conv `g` (where [`fits`]; operands checked) on the workers: each a contiguous
/// share of the output rows, or, where the blocks of [`CB`] channels outnumber the rows and
/// there are fewer than two rows a worker (7 x 7 x 960 at batch 1), a share of the blocks.
pub(super) fn run<X: QOperand, W: QOperand, Y: QElem>(
    (kernel, exec): (&QKernel, &Pinned<'_>),
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &mut [Y],
) {
    let dst = DwOut::new(output);
    let (rows, c) = (g.params().n * g.ho(), g.params().c);
    let workers = planned_workers(exec).max(1);
    let blocks = c.div_ceil(CB);
    let by_rows = rows >= 2 * workers || rows >= blocks;
    let part = |w: usize| match by_rows {
        true => Part { rows: rows * w / workers..rows * (w + 1) / workers, channels: 0..c },
        false => {
            let edge = |w: usize| (blocks * w / workers * CB).min(c);
            Part { rows: 0..rows, channels: edge(w)..edge(w + 1) }
        }
    };
    if workers == 1 {
        // SAFETY: one worker, every element; `output` is borrowed mutably for the call.
        unsafe { on_isa(kernel, g, op, out, &dst, part(0)) };
    } else {
        // SAFETY: the parts are disjoint (whole rows, or every row of disjoint channels), so no
        // element is written by two workers; `output` is borrowed mutably until `run` returns,
        // after every worker.
        exec.run(&|w| unsafe { on_isa(kernel, g, op, out, &dst, part(w)) });
    }
}

/// [`rows`] compiled for the kernel's ISA (its loops then vectorize with the kernel's vectors).
///
/// # Safety
/// No other worker writes the output elements of `part` during the run.
unsafe fn on_isa<X: QOperand, W: QOperand, Y: QElem>(
    kernel: &QKernel,
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &DwOut<Y>,
    part: Part,
) {
    // The kernel's vector write-out (its ISA proved by the kernel).
    let finish = kernel.finish_tile;
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must run AVX2, and `finish` where given; as [`rows`].
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &DwOut<Y>,
            part: Part,
            finish: Option<unsafe fn(&FinishTile)>,
        ) {
            // SAFETY: forwarded contract; the CPU runs AVX2.
            unsafe { rows::<X, W, Y, AVX2>(g, op, out, output, part, finish) }
        }
        /// # Safety
        /// The CPU must run AVX-512F with AVX512_VNNI, and `finish` where given; as [`rows`].
        #[target_feature(enable = "avx512f,avx512vnni")]
        unsafe fn avx512vnni<X: QOperand, W: QOperand, Y: QElem>(
            g: &Conv2d,
            op: &QConv<'_, X, W>,
            out: &OutputStage<'_>,
            output: &DwOut<Y>,
            part: Part,
            finish: Option<unsafe fn(&FinishTile)>,
        ) {
            // SAFETY: forwarded contract; the CPU runs AVX512_VNNI.
            unsafe { rows::<X, W, Y, AVX512VNNI>(g, op, out, output, part, finish) }
        }
        match kernel.isa() {
            crate::arch::Isa::Avx512Vnni | crate::arch::Isa::AmxInt8 if crate::arch::Isa::Avx512Vnni.is_available() => {
                // SAFETY: detected; the kernel proves its write-out's ISA; forwarded contract.
                return unsafe { avx512vnni(g, op, out, output, part, finish) };
            }
            crate::arch::Isa::Avx2
            | crate::arch::Isa::AvxVnni
            | crate::arch::Isa::Avx512Vnni
            | crate::arch::Isa::AmxInt8 => {
                // SAFETY: the kernel proves the CPU runs AVX2 (every x86 int8 kernel's detection
                // requires it) and its write-out's ISA; forwarded contract.
                return unsafe { avx2(g, op, out, output, part, finish) };
            }
            _ => {}
        }
    }
    // SAFETY: the kernel proves the ISA of its write-out; forwarded contract.
    unsafe { rows::<X, W, Y, PORTABLE>(g, op, out, output, part, finish) }
}

/// [`rows`]'s sums: the compiler's vectors, AVX2's `vpmaddwd`, AVX-512 VNNI's `vpdpwssd`.
const PORTABLE: u8 = 0;
#[cfg(target_arch = "x86_64")]
const AVX2: u8 = 1;
#[cfg(target_arch = "x86_64")]
const AVX512VNNI: u8 = 2;

/// The weight `w` (in [-255, 255]) as a tap's lane: its 16 bits in the low half, 0 in the
/// high half, so that a word multiply-add (`vpmaddwd`, `vpdpwssd`) of the lane with an input
/// byte widened to 32 bits (zero or sign) is the exact product (the high halves' product is 0).
fn lane(w: i32) -> i32 {
    i32::from(w as i16 as u16)
}

/// The weight in a [`lane`].
#[inline(always)]
fn weight(lane: i32) -> i32 {
    i32::from(lane as i16)
}

/// Pixels per call of the vector sums: independent chains of multiply-adds (each tap's
/// `vpdpwssd` waits for the previous one's result: one pixel alone runs at its latency).
const RUN: usize = 4;

/// The sums of `accs.len()` pixels `step` elements apart over their taps: `accs[q][l] =
/// init[l] + sum of x[l] * w[l]` for the `lanes` lanes of each tap `(input offset of pixel 0,
/// weight lanes)`, with `V`'s instructions for up to [`RUN`] pixels of 32, 16 or 8 lanes, else
/// pixel by pixel, element by element.
///
/// # Safety
/// The CPU runs `V`'s instructions.
#[inline(always)]
unsafe fn pixels<'w, X: QOperand, const V: u8>(
    accs: &mut [[i32; CB]],
    init: &[i32; CB],
    input: &[X],
    taps: impl Iterator<Item = (usize, &'w [i32; CB])> + Clone,
    (lanes, step): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if V != PORTABLE && (1..=RUN).contains(&accs.len()) && matches!(lanes, CB | CB_HALF | CB_QUARTER) {
        let bytes = crate::quant::driver::bytes(input);
        // Every tap's lanes of every pixel inside the input (checked here, once a tap).
        let last = (accs.len() - 1) * step + lanes;
        let taps = taps.inspect(|&(at, _)| assert!(at + last <= bytes.len()));
        let (signed, at) = (X::MIN < 0, (bytes.as_ptr(), step));
        /// The helper for `$p` pixels of `$r` registers.
        macro_rules! call {
            ($f:ident, $r:literal, $p:literal) => {{
                let accs: &mut [[i32; CB]; $p] = accs.try_into().unwrap_or_else(|_| unreachable!());
                // SAFETY: the CPU runs V's instructions (the contract); every pixel's `lanes`
                // bytes of every tap are inside the input (asserted as the helper reads them);
                // `init`, the accumulators and the weight lanes hold CB words.
                unsafe { x86::$f::<$r, $p>(accs, init, at, taps, signed) }
            }};
        }
        // RUN is 4: the arms below name every count.
        const _: () = assert!(RUN == 4);
        // Eight lanes on AVX2's vectors (which AVX-512 implies).
        match (V, lanes, accs.len()) {
            (AVX512VNNI, CB, 1) => call!(vnni, 2, 1),
            (AVX512VNNI, CB, 2) => call!(vnni, 2, 2),
            (AVX512VNNI, CB, 3) => call!(vnni, 2, 3),
            (AVX512VNNI, CB, _) => call!(vnni, 2, 4),
            (AVX512VNNI, CB_HALF, 1) => call!(vnni, 1, 1),
            (AVX512VNNI, CB_HALF, 2) => call!(vnni, 1, 2),
            (AVX512VNNI, CB_HALF, 3) => call!(vnni, 1, 3),
            (AVX512VNNI, CB_HALF, _) => call!(vnni, 1, 4),
            (_, CB, 1) => call!(avx2, 4, 1),
            (_, CB, 2) => call!(avx2, 4, 2),
            (_, CB, 3) => call!(avx2, 4, 3),
            (_, CB, _) => call!(avx2, 4, 4),
            (_, CB_HALF, 1) => call!(avx2, 2, 1),
            (_, CB_HALF, 2) => call!(avx2, 2, 2),
            (_, CB_HALF, 3) => call!(avx2, 2, 3),
            (_, CB_HALF, _) => call!(avx2, 2, 4),
            (_, _, 1) => call!(avx2, 1, 1),
            (_, _, 2) => call!(avx2, 1, 2),
            (_, _, 3) => call!(avx2, 1, 3),
            (_, _, _) => call!(avx2, 1, 4),
        }
        return;
    }
    for (q, acc) in accs.iter_mut().enumerate() {
        *acc = *init;
        for (at, w) in taps.clone() {
            let at = at + q * step;
            for ((a, x), &w) in acc.iter_mut().zip(&input[at..at + lanes]).zip(w) {
                *a = a.wrapping_add(x.widen().wrapping_mul(weight(w)));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CB;
    use core::arch::x86_64::*;

    /// [`super::pixels`] for `P` pixels on `R` registers of 16 lanes each: per tap, each
    /// pixel's 16 bytes widened to words (zero or sign, `signed`) and `vpdpwssd` with the tap's
    /// weight lanes (loaded once for the pixels).
    ///
    /// # Safety
    /// The CPU runs AVX-512F and AVX512_VNNI; for every tap, `16 * R` bytes from `input + at +
    /// q * step` are readable for each pixel `q < P` (`(input, step) = at`).
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    pub(super) unsafe fn vnni<'w, const R: usize, const P: usize>(
        accs: &mut [[i32; CB]; P],
        init: &[i32; CB],
        (input, step): (*const u8, usize),
        taps: impl Iterator<Item = (usize, &'w [i32; CB])>,
        signed: bool,
    ) {
        // SAFETY: R <= 2 registers of 16 words inside `init`, each accumulator and each weight
        // array (CB = 32); the input bytes as the contract says.
        unsafe {
            let start: [__m512i; R] = core::array::from_fn(|r| _mm512_loadu_si512(init.as_ptr().add(16 * r).cast()));
            let mut v = [start; P];
            for (at, w) in taps {
                for r in 0..R {
                    let w = _mm512_loadu_si512(w.as_ptr().add(16 * r).cast());
                    for (q, v) in v.iter_mut().enumerate() {
                        let b = _mm_loadu_si128(input.add(at + q * step + 16 * r).cast());
                        let x = if signed { _mm512_cvtepi8_epi32(b) } else { _mm512_cvtepu8_epi32(b) };
                        v[r] = _mm512_dpwssd_epi32(v[r], x, w);
                    }
                }
            }
            for (acc, v) in accs.iter_mut().zip(&v) {
                for (r, v) in v.iter().enumerate() {
                    _mm512_storeu_si512(acc.as_mut_ptr().add(16 * r).cast(), *v);
                }
            }
        }
    }

    /// [`super::pixels`] for `P` pixels on `R` registers of 8 lanes each: per tap, each
    /// pixel's 8 bytes widened to words and `vpmaddwd` with the tap's weight lanes, then added.
    ///
    /// # Safety
    /// The CPU runs AVX2; for every tap, `8 * R` bytes from `input + at + q * step` are readable
    /// for each pixel `q < P`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn avx2<'w, const R: usize, const P: usize>(
        accs: &mut [[i32; CB]; P],
        init: &[i32; CB],
        (input, step): (*const u8, usize),
        taps: impl Iterator<Item = (usize, &'w [i32; CB])>,
        signed: bool,
    ) {
        // SAFETY: R <= 4 registers of 8 words inside `init`, each accumulator and each weight
        // array (CB = 32); the input bytes as the contract says.
        unsafe {
            let start: [__m256i; R] = core::array::from_fn(|r| _mm256_loadu_si256(init.as_ptr().add(8 * r).cast()));
            let mut v = [start; P];
            for (at, w) in taps {
                for r in 0..R {
                    let w = _mm256_loadu_si256(w.as_ptr().add(8 * r).cast());
                    for (q, v) in v.iter_mut().enumerate() {
                        let b = _mm_loadl_epi64(input.add(at + q * step + 8 * r).cast());
                        let x = if signed { _mm256_cvtepi8_epi32(b) } else { _mm256_cvtepu8_epi32(b) };
                        v[r] = _mm256_add_epi32(v[r], _mm256_madd_epi16(x, w));
                    }
                }
            }
            for (acc, v) in accs.iter_mut().zip(&v) {
                for (r, v) in v.iter().enumerate() {
                    _mm256_storeu_si256(acc.as_mut_ptr().add(8 * r).cast(), *v);
                }
            }
        }
    }
}

/// Output rows `range` (row `q`: image `q / ho`, output row `q % ho`) by `channels` (from a
/// block's edge), as the module docs say.
///
/// # Safety
/// The CPU runs `finish`, where given, and `V`'s instructions; no other worker writes these
/// output elements during the run.
#[inline(always)]
unsafe fn rows<X: QOperand, W: QOperand, Y: QElem, const V: u8>(
    g: &Conv2d,
    op: &QConv<'_, X, W>,
    out: &OutputStage<'_>,
    output: &DwOut<Y>,
    Part { rows: range, channels }: Part,
    finish: Option<unsafe fn(&FinishTile)>,
) {
    let p = g.params();
    let (ho, wo, c) = (g.ho(), g.wo(), p.c);
    let taps = p.r * p.s;
    let zx = op.x_zero;
    // Each tap's input offset from a pixel's top-left tap (interior pixels).
    let mut tap_at = [0usize; MAX_TAPS];
    for r in 0..p.r {
        for s in 0..p.s {
            tap_at[r * p.s + s] = (r * p.dilation[0] * p.w + s * p.dilation[1]) * c;
        }
    }
    let ([y0, y1], [x0, x1]) = (
        interior_range(ho, p.h, p.stride[0], p.pad.top, p.dilation[0], p.r),
        interior_range(wo, p.w, p.stride[1], p.pad.left, p.dilation[1], p.s),
    );
    let mut wt = [[0i32; CB]; MAX_TAPS];
    let mut bias = [0i32; CB];
    // The bias less `zx` times the lane's weight sum over every tap: an interior pixel's start.
    let mut inner = [0i32; CB];
    if channels.is_empty() || range.is_empty() {
        return;
    }
    let mut stages = [out.channel::<Y>(channels.start); CB];
    let mut ms = [0f32; CB];
    let mut acc = [[0i32; CB]; PX];
    let mut c0 = channels.start;
    while c0 < channels.end {
        let lanes = match channels.end - c0 {
            rest if rest >= CB => CB,
            rest if rest >= CB_HALF => CB_HALF,
            rest if rest >= CB_QUARTER => CB_QUARTER,
            rest => rest,
        };
        for l in 0..lanes {
            let k = c0 + l;
            let zw = op.w_zero.at(k);
            let mut sum = 0i32;
            for r in 0..p.r {
                for s in 0..p.s {
                    // In [-255, 255] (the zero point is in the weight type's range).
                    let w = op.weight[g.weight_index(k, 0, r, s)].widen() - zw;
                    wt[r * p.s + s][l] = lane(w);
                    sum = sum.wrapping_add(w);
                }
            }
            bias[l] = op.bias.map_or(0, |b| b[k]);
            inner[l] = bias[l].wrapping_sub(zx.wrapping_mul(sum));
            stages[l] = out.channel::<Y>(k);
        }
        // The vector write-out: a one-byte output with the ONNX stage (every channel's kind is
        // the first's).
        let vector = finish.filter(|_| narrow::<Y>() && stages[0].float_multiplier().is_some());
        if vector.is_some() {
            for (m, s) in ms.iter_mut().zip(&stages[..lanes]) {
                *m = s.float_multiplier().unwrap_or(0.0);
            }
        }
        for q in range.clone() {
            let (n, oy) = (q / ho, q % ho);
            let image = n * p.h * p.w * c;
            let y_inside = (y0..y1).contains(&oy);
            for ox0 in (0..wo).step_by(PX) {
                let px = PX.min(wo - ox0);
                // Interior pixels in runs of up to RUN (neighbours `stride * c` apart), border
                // pixels one by one.
                let step = p.stride[1] * c;
                let mut i = 0;
                while i < px {
                    let ox = ox0 + i;
                    if y_inside && (x0..x1).contains(&ox) {
                        let run = (x1.min(ox0 + px) - ox).min(RUN);
                        let corner =
                            image + ((oy * p.stride[0] - p.pad.top) * p.w + ox * p.stride[1] - p.pad.left) * c + c0;
                        let list = tap_at[..taps].iter().map(move |&t| corner + t).zip(&wt[..taps]);
                        // SAFETY: the CPU runs V's instructions (the contract).
                        unsafe { pixels::<X, V>(&mut acc[i..i + run], &inner, op.input, list, (lanes, step)) };
                        i += run;
                        continue;
                    }
                    // A border pixel: its taps inside the input (kernel rows `r0..r1` by columns
                    // `s0..s1`), from the bias less `zx` times their weight sums.
                    let valid = |n: usize, ok: &dyn Fn(usize) -> bool| {
                        let lo = (0..n).find(|&t| ok(t)).unwrap_or(n);
                        (lo, (lo..n).find(|&t| !ok(t)).unwrap_or(n))
                    };
                    let (r0, r1) = valid(p.r, &|r| g.input_y(oy, r).is_some());
                    let (s0, s1) = valid(p.s, &|s| g.input_x(ox, s).is_some());
                    let inside = (r0..r1).flat_map(|r| (s0..s1).map(move |s| r * p.s + s));
                    let mut init = bias;
                    for t in inside.clone() {
                        for (a, &w) in init.iter_mut().zip(&wt[t]) {
                            *a = a.wrapping_sub(zx.wrapping_mul(weight(w)));
                        }
                    }
                    // The pixel's first valid tap's input; the others `tap_at` from it less the
                    // first's offset.
                    let (wt, tap_at) = (&wt, &tap_at);
                    let list = (r1 > r0 && s1 > s0).then(|| {
                        let (iy, ix) = (g.input_y(oy, r0).unwrap_or(0), g.input_x(ox, s0).unwrap_or(0));
                        let first = image + (iy * p.w + ix) * c + c0;
                        let base = tap_at[r0 * p.s + s0];
                        inside.map(move |t| (first + tap_at[t] - base, &wt[t]))
                    });
                    // SAFETY: as above.
                    unsafe {
                        pixels::<X, V>(&mut acc[i..i + 1], &init, op.input, list.into_iter().flatten(), (lanes, step))
                    };
                    i += 1;
                }
                // The tile: pixels `ox0 ..` of row `oy`, `p.k` (= c) apart, channels `c0 ..`,
                // written through a pointer (the elements between its rows may be another
                // worker's).
                let at = g.output_index(n, c0, oy, ox0);
                let tile = output.ptr_at(at, (px - 1) * p.k + lanes);
                match vector {
                    Some(f) => {
                        let (zp, (lo, hi)) = (stages[0].zero_point(), stages[0].range());
                        let ft = FinishTile {
                            rows: px,
                            n: lanes,
                            raw: acc.as_ptr().cast::<i32>(),
                            raw_stride: CB,
                            term: ZEROS.as_ptr(),
                            zb: ZEROS.as_ptr(),
                            m: ms.as_ptr(),
                            row_sums: ZEROS.as_ptr(),
                            row_terms: false,
                            zp,
                            lo,
                            hi,
                            out: tile.cast::<u8>(),
                            out_stride: p.k,
                        };
                        // SAFETY: the caller's contract (the CPU runs `f`; the `lanes` elements
                        // of each of the `px` rows are this worker's); every array holds
                        // `lanes <= 32` elements (the row sums, not read); `px` rows `CB` apart
                        // are inside `acc`, and `px` rows `p.k` apart of `lanes` bytes inside the
                        // output (`ptr_at` checked the span; Y is one byte, `narrow`).
                        unsafe { f(&ft) };
                    }
                    None => {
                        for (i, a) in acc[..px].iter().enumerate() {
                            for (l, (s, &v)) in stages[..lanes].iter().zip(&a[..lanes]).enumerate() {
                                // SAFETY: inside the span `ptr_at` checked; this worker's element
                                // (the contract).
                                unsafe { tile.add(i * p.k + l).write(s.apply(v)) };
                            }
                        }
                    }
                }
            }
        }
        c0 += lanes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::quant::QKernel;
    use crate::conv::{Conv2dParams, Padding};
    use crate::gemm::driver::Sequential;
    use crate::quant::conv::{qconv2d_reference, qconv2d_scratch_len, qconv2d_with};
    use crate::quant::driver::QWorkspace;
    use crate::quant::PerChannel;
    use crate::WeightLayout;
    use core::array::from_fn;

    const C: usize = 53;
    const H: usize = 4;
    const W: usize = 7;

    /// `g` on `kernel` against the oracle for input `input`, into `Y`.
    fn check<X: QOperand, Y: QElem + PartialEq + core::fmt::Debug>(
        kernel: &QKernel,
        g: &Conv2d,
        input: &[X],
        out: &OutputStage<'_>,
    ) {
        let weight: [i8; C * 9] = from_fn(|i| (i * 91 % 256) as u8 as i8);
        let wz: [i32; C] = from_fn(|i| (i as i32 * 7) % 41 - 20);
        let bias: [i32; C] = from_fn(|i| i as i32 * 13 - 300);
        let op = QConv { input, x_zero: 17, weight: &weight, w_zero: PerChannel::Channel(&wz), bias: Some(&bias) };
        let mut scratch = [0i32; 1024];
        let len = qconv2d_scratch_len(kernel, g, 1).unwrap();
        assert!(len <= scratch.len(), "{len}");
        let mut got = [Y::narrow(1); C * H * W];
        let mut want = [Y::narrow(2); C * H * W];
        let n = g.output_len();
        let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..len] };
        qconv2d_with(g, &op, out, &mut got[..n], ws).unwrap();
        qconv2d_reference(g, &op, out, &mut want[..n]).unwrap();
        assert_eq!(got[..n], want[..n], "{}", kernel.id());
    }

    /// Blocks of 32, 16 and 5 lanes; interior pixels in a run and border pixels alone; u8 and
    /// i8 input; per-channel weight zero points (weights of up to 148 in magnitude); the ONNX
    /// stage into u8 and the accumulator into i32; the portable sums (which Miri runs) and the
    /// best kernel's.
    #[test]
    fn matches_the_oracle() {
        let p = Conv2dParams::new(1, C, H, W, C, 3, 3)
            .groups(C)
            .pad(Padding::new(1, 2, 0, 1))
            .layout(TensorLayout::Nhwc)
            .weight_layout(WeightLayout::Krsc);
        let g = p.validate().unwrap();
        assert!(fits(&g));
        let x_u8: [u8; C * H * W] = from_fn(|i| (i * 37 % 256) as u8);
        let x_i8: [i8; C * H * W] = from_fn(|i| (i * 37 % 256) as u8 as i8);
        let onnx = OutputStage::onnx(0.02, PerChannel::Tensor(0.01), 0.05, 120);
        // Miri has no SIMD: the best kernel is the portable one there.
        let kernels = if cfg!(miri) { &[QKernel::generic()][..] } else { &[QKernel::generic(), QKernel::best()] };
        for &kernel in kernels {
            check::<u8, u8>(kernel, &g, &x_u8, &onnx);
            check::<i8, u8>(kernel, &g, &x_i8, &onnx);
            check::<u8, i32>(kernel, &g, &x_u8, &OutputStage::ACCUMULATOR);
            check::<i8, i32>(kernel, &g, &x_i8, &OutputStage::ACCUMULATOR);
        }
    }
}
