//! The depthwise conv kernel body (groups == c == k): one filter per channel, no reduction
//! across channels.
//!
//! - **NCHW, the flat path** (vectors wider than one lane, filters of at most [`MAX_TAPS`] taps):
//!   a chunk of a channel plane's output rows is one 1-D convolution over the padded rows it
//!   reads, laid end to end. They are staged with their padding (zeros) as `sy * sx` phases of
//!   rows `wq` columns long: phase `(a, b)`, row `i`, column `j` holds padded pixel
//!   `(i*sy + a, j*sx + b)` (stride 1: consecutive rows share their padding columns), so tap
//!   `(r, s)` of flat output `q` (output row `q / wq`, column
//!   `q % wq`) reads phase `((r*dy) % sy, (s*dx) % sx)` at `q + ((r*dy)/sy)*wq + (s*dx)/sx` for
//!   every `q` ([`Taps`]). Every output is then the same few vector FMAs, whatever the width (a
//!   7x7 plane is 4 vectors of 16, not 7 short rows) or the padding (no edge columns); the
//!   columns past the output (`wq - wo` a row) are computed and dropped. Stride 1 stages rows as
//!   they are, stride 2 splits each input row into its even and odd columns
//!   ([`Simd::deinterleave`]), larger strides gather from a padded row. The chunk's results go
//!   through a small buffer into the output rows. (Before: rows vectorised along the output with
//!   scalar edge columns, and narrow or strided planes interleaved across channels: 6-20 GFLOPS
//!   on one Zen 4 core.)
//! - **NCHW, the row path** (larger filters): each output row along the columns, no scratch.
//! - **NHWC**: vectorised along the channels, several output pixels a pass.
//! - **One-lane kernels** (the Cortex-M's, the portable one), either layout: an output row of
//!   one channel at a time through the strides, eight outputs a block ([`one_lane_row`]).
//!
//! Geometry-free: the kernel knows windows along an axis ([`Axis`]) and tensors as element
//! strides; `conv/` derives both from its validated geometry, so the ISA layer does not depend on
//! the conv layer.

use core::ops::Range;

use super::{act_is_scalar, act_simd, load_upto, store_upto, Simd};
use crate::epilogue::Activation;
use crate::layout::TensorLayout;

/// One spatial axis of a window: output position `o` reads input position
/// `o * stride + t * dilation - pad` through tap `t`, or nothing where that falls outside
/// `0..input` (the padding).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    /// Input extent.
    pub input: usize,
    /// Output extent.
    pub output: usize,
    /// Taps of the filter.
    pub taps: usize,
    /// Step between output positions.
    pub stride: usize,
    /// Step between taps.
    pub dilation: usize,
    /// Padding before the first input position.
    pub pad: usize,
}

impl Axis {
    /// The input position tap `t` of output position `o` reads, or `None` in the padding.
    #[inline(always)]
    fn tap(&self, o: usize, t: usize) -> Option<usize> {
        (o * self.stride + t * self.dilation).checked_sub(self.pad).filter(|&i| i < self.input)
    }
}

/// One depthwise call: a range of work items over whole tensors.
#[derive(Clone, Debug)]
pub(crate) struct DepthwiseArgs {
    /// Channels (one filter each).
    pub channels: usize,
    /// The rows' window.
    pub y: Axis,
    /// The columns' window.
    pub x: Axis,
    /// Which axis is contiguous, and so vectorised: channels (NHWC) or columns (NCHW, where
    /// `input_strides[3] == output_strides[3] == 1`; NHWC has `[1] == 1`).
    pub layout: TensorLayout,
    /// Element strides of the input by (image, channel, row, column).
    pub input_strides: [usize; 4],
    /// Element strides of the output by (image, channel, row, column).
    pub output_strides: [usize; 4],
    /// The whole input tensor.
    pub input: *const f32,
    /// NCHW: the weights as given (`[c][r][s]`, both weight layouts agree when `c/groups == 1`),
    /// or, as channel blocks, blocked ([`nhwc_pack_weights`]); NHWC: as [`nhwc_pack_weights`]
    /// writes them, except for a one-lane kernel, which reads them as given in both layouts.
    pub weight: *const f32,
    /// `channels` biases, or null.
    pub bias: *const f32,
    /// Activation applied last.
    pub act: Activation,
    /// The whole output tensor.
    pub output: *mut f32,
    /// NCHW, the row path: planes `n*c + c`. NCHW, the flat path: chunk `i % chunks` of plane
    /// `i / chunks` ([`Flat::chunks`]). NCHW, channel blocks: see `blocks`. NHWC: output rows
    /// `n*ho + oy`.
    pub items: Range<usize>,
    /// NCHW, the flat path: its geometry, [`Flat::new`]'s for these axes and the kernel's lanes
    /// (`None`: the row path).
    pub flat: Option<Flat>,
    /// NCHW as channel blocks ([`nchw_blocks`]): items are block `i % blocks` of image
    /// `i / blocks`, and the weights are blocked.
    pub blocks: bool,
    /// The flat path and channel blocks: this call's own scratch of [`Flat::scratch_len`] or
    /// [`nchw_blocks_scratch_len`] floats. Else unused (may be null).
    pub scratch: *mut f32,
}

/// Output columns whose every tap is inside the input row: `[lo, hi)`.
fn interior(x: &Axis) -> (usize, usize) {
    let lo = x.pad.div_ceil(x.stride).min(x.output);
    let hi = (x.input + x.pad).saturating_sub((x.taps - 1) * x.dilation).div_ceil(x.stride).clamp(lo, x.output);
    (lo, hi)
}

/// Floats of staged rows and results the flat path aims for per worker: the chunk's working set
/// stays in a 32 KiB L1 beside the input rows being read.
const FLAT_BUDGET: usize = 4096;

/// The flat path's geometry for one NCHW depthwise conv with `lanes`-wide vectors (see the
/// module doc): every size in floats, each derived with checked arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flat {
    /// Columns of a staged phase row, also the pitch of the flat results: the output's columns
    /// and the furthest column tap's offset, `wo + ((taps - 1) * dilation) / stride`; at stride
    /// 1, `w + max(left, right)` where that fits (a tap past a row's end reads the next row's
    /// left padding, zeros).
    wq: usize,
    /// Phase rows below a chunk's first that its taps reach: `((taps - 1) * dilation) / stride`.
    kr: usize,
    /// Output rows per chunk (the last chunk may have fewer).
    rows: usize,
    /// Floats of one phase: `rows + kr + 1` staged rows and `lanes` of slack.
    phase: usize,
    /// Floats of the padded input row a horizontal stride of 3 or more splits into its phases,
    /// and a vector for its spill (stride 1: the padded row is the phase row; stride 2 splits
    /// the input row directly).
    padded: usize,
    /// Floats of the results buffer: `rows * wq` rounded up to whole vectors.
    results: usize,
}

impl Flat {
    /// Whether NCHW depthwise convs on these axes take the flat path with `lanes`-wide vectors:
    /// wider than one lane, a filter of at most [`MAX_TAPS`] taps, some output.
    pub(crate) fn applies(lanes: usize, y: &Axis, x: &Axis) -> bool {
        lanes >= 2 && y.output > 0 && x.output > 0 && y.taps.checked_mul(x.taps).is_some_and(|t| t <= MAX_TAPS)
    }

    /// The geometry for `planes` planes (images times channels) on `workers` workers, or `None`
    /// where the flat path does not apply ([`Flat::applies`]) or a size overflows. Chunks hold
    /// about [`FLAT_BUDGET`] floats, and are cut smaller where that leaves a worker without two.
    pub(crate) fn new(lanes: usize, y: &Axis, x: &Axis, planes: usize, workers: usize) -> Option<Flat> {
        if !Self::applies(lanes, y, x) {
            return None;
        }
        let reach = x.taps.checked_sub(1)?.checked_mul(x.dilation)?;
        let wq = x.output.checked_add(reach / x.stride)?;
        // Stride 1: consecutive rows share their padding columns (a row's right padding is the
        // next row's left, both zeros) where an output row and a tap's reach still fit in the
        // pitch `w + max(left, right)` (5x5 on 14x14: 16 columns, was 18).
        let wq = match x.stride {
            1 => {
                let right = x.output.checked_add(reach)?.saturating_sub(x.pad.checked_add(x.input)?);
                let shared = x.input.checked_add(x.pad.max(right))?;
                if x.output <= shared && reach < shared {
                    shared.min(wq)
                } else {
                    wq
                }
            }
            _ => wq,
        };
        let kr = y.taps.checked_sub(1)?.checked_mul(y.dilation)? / y.stride;
        let phases = y.stride.checked_mul(x.stride)?;
        // Per output row: a staged row in each phase and a row of results.
        let per_row = phases.checked_add(1)?.checked_mul(wq)?;
        let chunks = (2 * workers.max(1)).div_ceil(planes.max(1));
        let rows = (FLAT_BUDGET / per_row).min(y.output.div_ceil(chunks)).clamp(1, y.output);
        let phase = rows.checked_add(kr)?.checked_add(1)?.checked_mul(wq)?.checked_add(lanes)?;
        let padded = match x.stride {
            1 | 2 => 0,
            // With a vector of room for its spill.
            sx => wq.checked_mul(sx)?.checked_add(lanes)?,
        };
        let results = rows.checked_mul(wq)?.checked_next_multiple_of(lanes)?;
        Some(Flat { wq, kr, rows, phase, padded, results })
    }

    /// Floats of scratch one worker needs: the phases, the padded row and the results.
    pub(crate) fn scratch_len(&self, y: &Axis, x: &Axis) -> Option<usize> {
        let phases = y.stride.checked_mul(x.stride)?;
        self.phase.checked_mul(phases)?.checked_add(self.padded)?.checked_add(self.results)
    }

    /// Chunks of output rows a plane is split into.
    pub(crate) fn chunks(&self, y: &Axis) -> usize {
        y.output.div_ceil(self.rows)
    }
}

/// Copies `len` floats from `src` to `dst` in vectors, the last one partial: the runs here
/// (rows of 7 to a few hundred floats) are too short for a `memcpy` call to pay.
///
/// # Safety
/// `src` valid for reading and `dst` for writing `len` floats, not overlapping; the CPU runs `S`.
#[inline(always)]
unsafe fn copy_run<S: Simd>(src: *const f32, dst: *mut f32, len: usize) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: (whole body) every access is below `len`.
    unsafe {
        while i + l <= len {
            S::store(dst.add(i), S::load(src.add(i)));
            i += l;
        }
        if i < len {
            S::store_partial(dst.add(i), len - i, S::load_partial(src.add(i), len - i));
        }
    }
}

/// Writes `len` zeros at `dst` in vectors, the last one partial.
///
/// # Safety
/// `dst` valid for writing `len` floats; the CPU runs `S`.
#[inline(always)]
unsafe fn zero_run<S: Simd>(dst: *mut f32, len: usize) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: (whole body) every access is below `len`.
    unsafe {
        while i + l <= len {
            S::store(dst.add(i), S::zero());
            i += l;
        }
        if i < len {
            S::store_partial(dst.add(i), len - i, S::zero());
        }
    }
}

/// One input row written with its padding: `len` columns at `dst`, column `j` being input column
/// `j - px` of the row at `src` (`w_in` columns), 0 outside it.
struct PaddedRow {
    src: *const f32,
    w_in: usize,
    px: usize,
    dst: *mut f32,
    len: usize,
}

impl PaddedRow {
    /// Writes the row a whole vector at a time, each vector one windowed load (the input's
    /// columns in it, zeros around them: no separate runs of zeros), so the row spills up to a
    /// vector minus one float past `len` (a function, not a closure: closures do not inherit the
    /// caller's target features, and this is vector code).
    ///
    /// # Safety
    /// `src` readable for `w_in` floats, `dst` writable for `len` rounded up to a vector; the
    /// CPU runs `S`.
    #[inline(always)]
    unsafe fn write<S: Simd>(self) {
        let l = S::LANES;
        // Padded column `k + i` is input column `k + i - px`.
        let base = self.src.wrapping_sub(self.px);
        let end = self.px + self.w_in;
        // SAFETY: the caller's; lanes `lo..hi` of the vector at `k` are input columns inside
        // `0..w_in`; every store starts below `len`.
        unsafe {
            for k in (0..self.len).step_by(l) {
                let (lo, hi) = (self.px.saturating_sub(k).min(l), end.saturating_sub(k).min(l));
                let v = match (lo, hi) {
                    (0, h) if h == l => S::load(base.wrapping_add(k)),
                    (lo, hi) if lo < hi => S::load_window(base.wrapping_add(k), lo, hi),
                    _ => S::zero(),
                };
                S::store(self.dst.add(k), v);
            }
        }
    }
}

/// Stride 2: one input row (`w_in` columns at `src`) written with its padding `px` as its two
/// column phases, `len` columns each at `phases[b]`: column `j` of phase `b` is padded column
/// `2j + b`, input column `2j + b - px`. Each phase is a run of the input's even or odd columns
/// between zeros; a vector of each comes from two (`Simd::deinterleave`), straight from the input.
struct SplitRow {
    src: *const f32,
    w_in: usize,
    px: usize,
    phases: [*mut f32; 2],
    len: usize,
}

impl SplitRow {
    /// Writes both phase rows, exactly `len` columns each.
    ///
    /// # Safety
    /// `src` readable for `w_in` floats, each phase row writable for `len`; the CPU runs `S`.
    #[inline(always)]
    unsafe fn write<S: Simd>(self) {
        let (l, w) = (S::LANES, self.w_in);
        // Phase `b`'s first input column is `2 * j0 + b - px` (0 or 1) at column `j0`: the even
        // columns go to phase `px % 2`, the odd ones to the other.
        let run = |b: usize, of: usize| {
            let j0 = self.px.saturating_sub(b).div_ceil(2).min(self.len);
            (self.phases[b], j0, of.min(self.len - j0))
        };
        let even = run(self.px % 2, w.div_ceil(2));
        let odd = run(1 - self.px % 2, w / 2);
        // SAFETY: (whole body) input reads below `w_in` (partial loads at the end), phase writes
        // below `len` (`j0 + count <= len`, partial stores at the end).
        unsafe {
            let mut k = 0;
            while k < even.2.max(odd.2) {
                let left = w - 2 * k;
                let a = load_upto::<S>(self.src.add(2 * k), left.min(l));
                let b = if left > l { load_upto::<S>(self.src.add(2 * k + l), (left - l).min(l)) } else { S::zero() };
                let (e, o) = S::deinterleave(a, b);
                for ((dst, j0, count), v) in [(even, e), (odd, o)] {
                    if k < count {
                        store_upto::<S>(dst.add(j0 + k), (count - k).min(l), v);
                    }
                }
                k += l;
            }
            for (dst, j0, count) in [even, odd] {
                zero_run::<S>(dst, j0);
                zero_run::<S>(dst.add(j0 + count), self.len - j0 - count);
            }
        }
    }
}

/// Most taps the flat path takes (its table of tap offsets is on the stack); larger filters take
/// the row path.
const MAX_TAPS: usize = 64;

/// The taps over the staged phases (see [`flat_chunk`]): tap `t` of a channel reads
/// `scratch + offsets[t] + q` for flat output `q`.
struct Taps {
    offsets: [usize; MAX_TAPS],
    len: usize,
}

impl Taps {
    /// Tap `(r, s)` reads phase `((r*dy) % sy, (s*dx) % sx)` (`phase` floats each) at
    /// `((r*dy) / sy) * wq + (s*dx) / sx`. `None` beyond [`MAX_TAPS`].
    fn new(y: &Axis, x: &Axis, phase: usize, wq: usize) -> Option<Taps> {
        let len = y.taps.checked_mul(x.taps).filter(|&t| t <= MAX_TAPS)?;
        let mut offsets = [0; MAX_TAPS];
        for r in 0..y.taps {
            let (ra, rq) = ((r * y.dilation) % y.stride, (r * y.dilation) / y.stride);
            for s in 0..x.taps {
                let (cb, cq) = ((s * x.dilation) % x.stride, (s * x.dilation) / x.stride);
                offsets[r * x.taps + s] = (ra * x.stride + cb) * phase + rq * wq + cq;
            }
        }
        Some(Taps { offsets, len })
    }
}

/// Flat outputs `q..q + V * LANES` into `results`: every tap's weight (of `weight`) broadcast
/// once for `V` independent FMA chains over the phases at `phases`, then the SIMD part of the
/// activation.
///
/// # Safety
/// As [`flat_chunk`]'s reads and writes at `q`.
#[inline(always)]
unsafe fn flat_pass<S: Simd, const V: usize>(
    t: &Taps,
    (phases, weight): (*const f32, *const f32),
    q: usize,
    (bias, act): (S::V, Activation),
    results: *mut f32,
) {
    let l = S::LANES;
    let mut acc = [bias; V];
    // SAFETY: the caller's (flat_chunk's bounds).
    unsafe {
        let base = phases.add(q);
        for (i, &off) in t.offsets[..t.len].iter().enumerate() {
            let wv = S::splat(*weight.add(i));
            let src = base.add(off);
            for (u, a) in acc.iter_mut().enumerate() {
                *a = S::fmadd(S::load(src.add(u * l)), wv, *a);
            }
        }
        for (u, a) in acc.iter().enumerate() {
            S::store(results.add(q + u * l), act_simd::<S>(act, *a).unwrap_or(*a));
        }
    }
}

/// Output rows `rows` of channel `c` of image `n`, NCHW, the flat way (see the module doc).
///
/// # Safety
/// As [`depthwise_body`]; `f` is `p.flat`, `taps` its [`Taps`], `p.scratch` holds
/// `f.scratch_len(&p.y, &p.x)` floats, `rows` is within one chunk (`rows.len() <= f.rows`).
#[inline(always)]
unsafe fn flat_chunk<S: Simd>(p: &DepthwiseArgs, (f, taps): (&Flat, &Taps), n: usize, c: usize, rows: Range<usize>) {
    /// Vectors a pass: independent FMA chains, each tap's weight broadcast once for them.
    const U: usize = 4;
    let l = S::LANES;
    let (sy, sx) = (p.y.stride, p.x.stride);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let (wq, nr) = (f.wq, rows.len());
    let phase_at = |a: usize, b: usize| (a * sx + b) * f.phase;
    // SAFETY: (whole body) phase `(a, b)` is `p.scratch[phase_at(a, b)..][..f.phase]`, the
    // padded row and the results follow the phases; every copied input row is inside the plane
    // (rows and columns from the validated axes); a stride-1 staged row spills up to a vector
    // minus one float past its `wq`, into the rows staged after it or the phase's slack (zeroed
    // after the last row); reads of the flat convolution end before `(nr + kr + 1) * wq + l` in
    // a phase (results rounded up to a vector, and the column taps' offset
    // `((s_n - 1) * dx) / sx < wq`); the output rows are the item's own, and a row's spill stays
    // in the item's later rows.
    unsafe {
        let plane = p.input.add(at(is, n, c, 0, 0));
        let padded = p.scratch.add(phase_at(sy, 0));
        let results = padded.add(f.padded);
        // Stage: phase `(a, b)`, row `i`, column `j` is padded pixel
        // `((rows.start + i) * sy + a, j * sx + b)` (zeros outside the input).
        let (px, w_in) = (p.x.pad, p.x.input);
        let staged = nr + f.kr + 1;
        for a in 0..sy {
            for i in 0..staged {
                let row = i * wq;
                let Some(iy) = ((rows.start + i) * sy + a).checked_sub(p.y.pad).filter(|&iy| iy < p.y.input) else {
                    for b in 0..sx {
                        zero_run::<S>(p.scratch.add(phase_at(a, b) + row), wq);
                    }
                    continue;
                };
                let src = plane.add(iy * is[2]);
                match sx {
                    1 => PaddedRow { src, w_in, px, dst: p.scratch.add(phase_at(a, 0) + row), len: wq }.write::<S>(),
                    2 => {
                        let phases = [p.scratch.add(phase_at(a, 0) + row), p.scratch.add(phase_at(a, 1) + row)];
                        SplitRow { src, w_in, px, phases, len: wq }.write::<S>();
                    }
                    _ => {
                        // Any other stride: the padded row, then every `sx`-th column of it.
                        PaddedRow { src, w_in, px, dst: padded, len: f.padded - l }.write::<S>();
                        for b in 0..sx {
                            let dst = p.scratch.add(phase_at(a, b) + row);
                            for j in 0..wq {
                                *dst.add(j) = *padded.add(j * sx + b);
                            }
                        }
                    }
                }
            }
            for b in 0..sx {
                zero_run::<S>(p.scratch.add(phase_at(a, b) + staged * wq), l);
            }
        }
        // The flat convolution into the results, `U` vectors a pass.
        let w = p.weight.add(c * p.y.taps * p.x.taps);
        let bias = S::splat(if p.bias.is_null() { 0.0 } else { *p.bias.add(c) });
        let total = nr * wq;
        let mut q = 0;
        while q + U * l <= total {
            flat_pass::<S, U>(taps, (p.scratch, w), q, (bias, p.act), results);
            q += U * l;
        }
        // The last (partial) vectors in one pass of independent chains: one vector at a time,
        // each a chain of dependent FMAs, cost a 5x5 on 14x14 planes as much as the rest.
        let pass = (p.scratch.cast_const(), w);
        match (total - q).div_ceil(l) {
            0 => {}
            1 => flat_pass::<S, 1>(taps, pass, q, (bias, p.act), results),
            2 => flat_pass::<S, 2>(taps, pass, q, (bias, p.act), results),
            3 => flat_pass::<S, 3>(taps, pass, q, (bias, p.act), results),
            _ => flat_pass::<S, U>(taps, pass, q, (bias, p.act), results),
        }
        // The first `wo` columns of each row are the outputs.
        let scalar_act = act_is_scalar(p.act);
        let wo = p.x.output;
        for t in 0..nr {
            let dst = p.output.add(at(os, n, c, rows.start + t, 0));
            // Whole vectors where their spill lands in this chunk's later rows (each written
            // after this one; with rows back to back, the reads then end within `nr * wq` of the
            // results), else the last vector partial.
            if os[2] == wo && t * wo + wo.next_multiple_of(l) <= nr * wo {
                for ox in (0..wo).step_by(l) {
                    S::store(dst.add(ox), S::load(results.add(t * wq + ox)));
                }
            } else {
                copy_run::<S>(results.add(t * wq), dst, wo);
            }
            if scalar_act {
                for ox in 0..wo {
                    *dst.add(ox) = p.act.apply(*dst.add(ox));
                }
            }
        }
    }
}

/// Offset of element `(n, c, y, x)` of a tensor with these strides.
#[inline(always)]
fn at(strides: &[usize; 4], n: usize, c: usize, y: usize, x: usize) -> usize {
    n * strides[0] + c * strides[1] + y * strides[2] + x * strides[3]
}

/// Where one NHWC pass runs: output pixels `ox..ox + V` of row `oy` of image `n`. `checked` (for
/// `V == 1` at the left and right edges) skips the taps in the padding; unchecked, every tap of
/// the `V` pixels is inside the row.
#[derive(Clone, Copy)]
struct Pixels {
    n: usize,
    oy: usize,
    ox: usize,
    checked: bool,
}

/// Channels `c0..c0 + width` of the pixels `at` (see [`Pixels`]), NHWC: each tap's weights
/// loaded once for the `V` pixels' FMA chains (closures here would not inherit the caller's
/// target features, hence the functions).
///
/// # Safety
/// As [`depthwise_body`]; the pixels inside the output; `c0 + width <= channels`,
/// `width <= LANES`; weights `[r][s][c]`.
#[inline(always)]
unsafe fn nhwc_block<S: Simd, const V: usize>(p: &DepthwiseArgs, at_: Pixels, c0: usize, width: usize) {
    let (c_n, s_n) = (p.channels, p.x.taps);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let Pixels { n, oy, ox, checked } = at_;
    // SAFETY: (whole body) taps come from the validated axes (unchecked: the caller's interior);
    // every access is `width` floats of a channel run inside its tensor.
    unsafe {
        let bias = if p.bias.is_null() { S::zero() } else { load_upto::<S>(p.bias.add(c0), width) };
        let mut acc = [bias; V];
        // Pointer steps: tap to tap and pixel to pixel along the row, weights tap to tap.
        let (tap_step, px_step) = (p.x.dilation * is[3], p.x.stride * is[3]);
        for r in 0..p.y.taps {
            let Some(iy) = p.y.tap(oy, r) else { continue };
            let row = p.input.add(at(is, n, c0, iy, 0));
            let mut w = p.weight.add(r * s_n * c_n + c0);
            if checked {
                for s in 0..s_n {
                    if let Some(ix) = p.x.tap(ox, s) {
                        acc[0] = S::fmadd(load_upto::<S>(row.add(ix * is[3]), width), load_upto::<S>(w, width), acc[0]);
                    }
                    w = w.add(c_n);
                }
            } else {
                // Unchecked: tap 0 of pixel `ox` is inside the row.
                let mut src = row.add((ox * p.x.stride - p.x.pad) * is[3]);
                for _ in 0..s_n {
                    let wv = load_upto::<S>(w, width);
                    for (u, a) in acc.iter_mut().enumerate() {
                        *a = S::fmadd(load_upto::<S>(src.add(u * px_step), width), wv, *a);
                    }
                    src = src.add(tap_step);
                    w = w.add(c_n);
                }
            }
        }
        let scalar_act = act_is_scalar(p.act);
        for (u, a) in acc.iter().enumerate() {
            let out = p.output.add(at(os, n, c0, oy, ox + u));
            store_upto::<S>(out, width, act_simd::<S>(p.act, *a).unwrap_or(*a));
            if scalar_act {
                for c in 0..width {
                    *out.add(c) = p.act.apply(*out.add(c));
                }
            }
        }
    }
}

/// Every channel of the pixels `at` (see [`Pixels`]), NHWC, in vectors of `LANES` channels, the
/// last one partial.
///
/// # Safety
/// As [`nhwc_block`].
#[inline(always)]
unsafe fn nhwc_pixels<S: Simd, const V: usize>(p: &DepthwiseArgs, at_: Pixels) {
    let (l, c_n) = (S::LANES, p.channels);
    let mut c0 = 0;
    // SAFETY: the caller's; every block inside the channels.
    unsafe {
        while c0 + l <= c_n {
            nhwc_block::<S, V>(p, at_, c0, l);
            c0 += l;
        }
        if c0 < c_n {
            nhwc_block::<S, V>(p, at_, c0, c_n - c0);
        }
    }
}

/// Output pixels a window of the window path computes at most.
const WINDOW: usize = 8;

/// Column taps of the widest filter the window path takes (rows of taps: as many).
const MAX_WINDOW_TAPS: usize = 5;

/// Whether NHWC depthwise convs on these axes take the window path with `lanes`-wide vectors:
/// wider than one lane, columns of dilation 1 and stride 1 or 2, filters 3 or 5 columns wide and
/// at most [`MAX_WINDOW_TAPS`] rows high.
///
/// The path: each output row is windows of up to [`WINDOW`] pixels, each window block by block
/// of `LANES` channels; a window loads each input pixel it reads once (a vector of the block's
/// channels, in place) and feeds every output it reaches, each weight loaded once, the weights
/// blocked (`[c / LANES][r][s][LANES]`: one block's filter in one run). NCHW convs on small
/// planes run on it too ([`nchw_blocks`]). Before, each output
/// pixel loaded its own inputs (a load an FMA) and the weights were `[r][s][c]`: at 1024
/// channels a block's taps, 4 KiB apart, sat on one L1 set with its pixels.
pub(crate) fn nhwc_windows(lanes: usize, y: &Axis, x: &Axis) -> bool {
    lanes >= 2 && y.taps <= MAX_WINDOW_TAPS && x.dilation == 1 && matches!(x.stride, 1 | 2) && matches!(x.taps, 3 | 5)
}

/// Floats of the NHWC depthwise kernel's weights for `channels` channels on these axes:
/// blocked on the window path (whole blocks of `lanes`), else `[r][s][c]`; `None` on overflow.
pub(crate) fn nhwc_weights_len(lanes: usize, channels: usize, y: &Axis, x: &Axis) -> Option<usize> {
    let taps = y.taps.checked_mul(x.taps)?;
    let channels = if nhwc_windows(lanes, y, x) { channels.checked_next_multiple_of(lanes)? } else { channels };
    channels.checked_mul(taps)
}

/// Writes `weight` (`[c][r][s]`) in the order the NHWC depthwise kernel (and NCHW as channel
/// blocks) reads into `dst` ([`nhwc_weights_len`] floats): blocked on the window path (a partial
/// block's missing channels 0), else `[r][s][c]`. Written in order, read at a stride.
pub(crate) fn nhwc_pack_weights(lanes: usize, (y, x): (&Axis, &Axis), weight: &[f32], dst: &mut [f32]) {
    let taps = y.taps * x.taps;
    let channels = weight.len() / taps.max(1);
    if nhwc_windows(lanes, y, x) {
        for (b, block) in dst.chunks_exact_mut(lanes * taps).enumerate() {
            for (t, run) in block.chunks_exact_mut(lanes).enumerate() {
                for (i, d) in run.iter_mut().enumerate() {
                    let c = b * lanes + i;
                    *d = if c < channels { weight[c * taps + t] } else { 0.0 };
                }
            }
        }
    } else {
        for (t, row) in dst.chunks_exact_mut(channels.max(1)).enumerate().take(taps) {
            for (d, w) in row.iter_mut().zip(weight[t..].iter().step_by(taps)) {
                *d = *w;
            }
        }
    }
}

/// One window: output pixels `ox..ox + v` (`v <= V`) of one row at `out` (pixel stride
/// `out_step`), channels `c0..c0 + width`, from the input rows `rows` (each at channel `c0`;
/// null: a row in the padding), `T` column taps at column stride `SX`. Window position `j`
/// reads input column `ox * SX + j - pad`, zeros outside the row; outputs `v..V` are computed
/// and dropped.
///
/// # Safety
/// As [`depthwise_body`]; `p.x` of `T` taps, stride `SX` and dilation 1; each non-null row a
/// row of the input at channel `c0`; the `v` pixels inside the output; `c0 + width <= channels`,
/// `width <= LANES`; weights blocked ([`nhwc_pack_weights`]).
#[inline(always)]
unsafe fn window<S: Simd, const V: usize, const T: usize, const SX: usize>(
    p: &DepthwiseArgs,
    rows: &[*const f32; MAX_WINDOW_TAPS],
    (ox, v): (usize, usize),
    (c0, width): (usize, usize),
    (out, out_step): (*mut f32, usize),
) {
    let (l, step, pad) = (S::LANES, p.input_strides[3], p.x.pad);
    // Positions `j` inside the row: `lo..hi`, and needed only below `(v - 1) * SX + T`.
    let first = ox * SX;
    let lo = pad.saturating_sub(first);
    let hi = (p.x.input + pad).saturating_sub(first).min((v - 1) * SX + T);
    // SAFETY: (whole body) columns in `lo..hi` inside the row; the block's `T * y.taps` weight
    // vectors and `width` biases inside theirs.
    unsafe {
        let bias = if p.bias.is_null() { S::zero() } else { load_upto::<S>(p.bias.add(c0), width) };
        let mut acc = [bias; V];
        let weights = p.weight.add(c0 * p.y.taps * T);
        for (r, &row) in rows.iter().enumerate().take(p.y.taps) {
            if row.is_null() {
                continue;
            }
            // The window's input pixels, zeros in the padding (straight-line code, no skips).
            let mut xs = [S::zero(); (WINDOW - 1) * 2 + MAX_WINDOW_TAPS];
            for (j, x) in xs.iter_mut().enumerate().take((V - 1) * SX + T) {
                if (lo..hi).contains(&j) {
                    *x = load_upto::<S>(row.add((first + j - pad) * step), width);
                }
            }
            let w = weights.add(r * T * l);
            for t in 0..T {
                let wv = S::load(w.add(t * l));
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = S::fmadd(xs[u * SX + t], wv, *a);
                }
            }
        }
        let scalar_act = act_is_scalar(p.act);
        for (u, a) in acc.iter().enumerate().take(v) {
            let o = out.add(u * out_step);
            store_upto::<S>(o, width, act_simd::<S>(p.act, *a).unwrap_or(*a));
            if scalar_act {
                for c in 0..width {
                    *o.add(c) = p.act.apply(*o.add(c));
                }
            }
        }
    }
}

/// Every channel of one window (see [`window`]): block by block of `LANES` channels, the last one
/// partial, `rows` and `out` at channel 0.
///
/// # Safety
/// As [`window`], for every channel.
#[inline(always)]
unsafe fn window_blocks<S: Simd, const V: usize, const T: usize, const SX: usize>(
    p: &DepthwiseArgs,
    rows: &[*const f32; MAX_WINDOW_TAPS],
    pixels: (usize, usize),
    (out, out_step): (*mut f32, usize),
) {
    let (l, c_n) = (S::LANES, p.channels);
    let (ics, ocs) = (p.input_strides[1], p.output_strides[1]);
    let mut c0 = 0;
    // SAFETY: the caller's; every block inside the channels.
    unsafe {
        while c0 < c_n {
            let at_c0 = rows.map(|r| if r.is_null() { r } else { r.add(c0 * ics) });
            let block = (c0, l.min(c_n - c0));
            window::<S, V, T, SX>(p, &at_c0, pixels, block, (out.add(c0 * ocs), out_step));
            c0 += l;
        }
    }
}

/// One output row of the window path (see [`window`]), `rows` and `out` at channel 0: split
/// evenly into windows of at most [`WINDOW`] pixels (7 pixels: one window of 7; 28: four of 7),
/// each run by the narrowest of the compiled widths (8, 7, 4) that holds it, every channel of a
/// window before the next (a pixel's channels are contiguous).
///
/// # Safety
/// As [`window`], for the whole row at `out`.
#[inline(always)]
unsafe fn window_row<S: Simd, const T: usize, const SX: usize>(
    p: &DepthwiseArgs,
    rows: &[*const f32; MAX_WINDOW_TAPS],
    out: *mut f32,
) {
    let (wo, step) = (p.x.output, p.output_strides[3]);
    let windows = wo.div_ceil(WINDOW);
    // SAFETY: the caller's; each window inside the row.
    unsafe {
        for i in 0..windows {
            let (ox, end) = (wo * i / windows, wo * (i + 1) / windows);
            let at_ = (ox, end - ox);
            let o = (out.add(ox * step), step);
            match end - ox {
                8 => window_blocks::<S, 8, T, SX>(p, rows, at_, o),
                5..=7 => window_blocks::<S, 7, T, SX>(p, rows, at_, o),
                _ => window_blocks::<S, 4, T, SX>(p, rows, at_, o),
            }
        }
    }
}

/// The window path (see [`nhwc_windows`]) over this call's items (output rows `n*ho + oy`).
///
/// # Safety
/// As [`depthwise_body`]; [`nhwc_windows`] holds for `S::LANES` and `p`'s axes, and the weights
/// are blocked.
#[inline(always)]
unsafe fn window_items<S: Simd>(p: &DepthwiseArgs) {
    let ho = p.y.output;
    let (is, os) = (&p.input_strides, &p.output_strides);
    // SAFETY: (whole body) input rows from the validated axis, outputs of this call's items.
    unsafe {
        for item in p.items.clone() {
            let (n, oy) = (item / ho, item % ho);
            let mut rows = [core::ptr::null::<f32>(); MAX_WINDOW_TAPS];
            for (r, row) in rows.iter_mut().enumerate().take(p.y.taps) {
                if let Some(iy) = p.y.tap(oy, r) {
                    *row = p.input.add(at(is, n, 0, iy, 0));
                }
            }
            let out = p.output.add(at(os, n, 0, oy, 0));
            match (p.x.taps, p.x.stride) {
                (3, 1) => window_row::<S, 3, 1>(p, &rows, out),
                (3, _) => window_row::<S, 3, 2>(p, &rows, out),
                (_, 1) => window_row::<S, 5, 1>(p, &rows, out),
                _ => window_row::<S, 5, 2>(p, &rows, out),
            }
        }
    }
}

/// Pixels of an output plane up to which NCHW depthwise convs on the window path's axes run as
/// channel blocks ([`nchw_blocks`]) rather than flat rows (input planes: 4 times as many).
const BLOCKS_MAX_PIXELS: usize = 64;

/// Whether NCHW depthwise convs on these axes run as channel blocks with `lanes`-wide vectors:
/// the window path's axes ([`nhwc_windows`]) with at most [`BLOCKS_MAX_PIXELS`] output pixels a
/// plane. Each item is `LANES` channels of one image: their input planes are staged interleaved
/// (`[h][w][LANES]`), the window path runs over them, and the results are written back to their
/// planes. On small planes the flat path's per-plane work dominates. One Zen 4 core, flat ->
/// blocks (GFLOPS): 3x3 512 channels stride 2 @14 4.5 -> 7.1, 1024 @7 10.4 -> 13.0; but 512 @14
/// (14 x 14 outputs) 19.0 -> 15.5 and 128 @56 29.3 -> 14.7, where the staging outweighs it.
pub(crate) fn nchw_blocks(lanes: usize, y: &Axis, x: &Axis) -> bool {
    let small = |pixels: Option<usize>, most: usize| pixels.is_some_and(|px| px <= most);
    nhwc_windows(lanes, y, x)
        && small(y.output.checked_mul(x.output), BLOCKS_MAX_PIXELS)
        && small(y.input.checked_mul(x.input), 4 * BLOCKS_MAX_PIXELS)
}

/// Floats of scratch one worker of an NCHW depthwise call as channel blocks needs: a block's
/// staged input and results; `None` on overflow.
pub(crate) fn nchw_blocks_scratch_len(lanes: usize, y: &Axis, x: &Axis) -> Option<usize> {
    let input = y.input.checked_mul(x.input)?;
    input.checked_add(y.output.checked_mul(x.output)?)?.checked_mul(lanes)
}

/// NCHW as channel blocks (see [`nchw_blocks`]) over this call's items (block `i % blocks` of
/// image `i / blocks`).
///
/// # Safety
/// As [`depthwise_body`]; [`nchw_blocks`] holds for `S::LANES` and `p`'s axes, the weights are
/// blocked, and `p.scratch` holds [`nchw_blocks_scratch_len`] floats.
#[inline(always)]
unsafe fn block_items<S: Simd>(p: &DepthwiseArgs) {
    let (l, c_n) = (S::LANES, p.channels);
    let blocks = c_n.div_ceil(l);
    let (h, w, ho, wo) = (p.y.input, p.x.input, p.y.output, p.x.output);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let taps = p.y.taps * p.x.taps;
    // SAFETY: (whole body) items inside the count, so their planes inside the tensors; the
    // staged input and results inside the scratch.
    unsafe {
        let (staged, results) = (p.scratch, p.scratch.add(h * w * l));
        for item in p.items.clone() {
            let (n, c0) = (item / blocks, (item % blocks) * l);
            let width = l.min(c_n - c0);
            // Pixel by pixel, its `width` channels gathered from their planes (written in
            // order: scattered stores, as the other loop order vectorises, ran at a third of
            // the speed). Lanes past `width` are never read (the window loads `width` channels).
            let src = p.input.add(at(is, n, c0, 0, 0));
            for iy in 0..h {
                for ix in 0..w {
                    let (from, to) = (src.add(iy * is[2] + ix * is[3]), staged.add((iy * w + ix) * l));
                    for i in 0..width {
                        *to.add(i) = *from.add(i * is[1]);
                    }
                }
            }
            let block = DepthwiseArgs {
                channels: width,
                layout: TensorLayout::Nhwc,
                input_strides: [0, 1, w * l, l],
                output_strides: [0, 1, wo * l, l],
                input: staged,
                weight: p.weight.add(c0 * taps),
                bias: if p.bias.is_null() { p.bias } else { p.bias.add(c0) },
                output: results,
                items: 0..ho,
                flat: None,
                blocks: false,
                scratch: core::ptr::null_mut(),
                ..p.clone()
            };
            window_items::<S>(&block);
            for i in 0..width {
                let dst = p.output.add(at(os, n, c0 + i, 0, 0));
                for oy in 0..ho {
                    for ox in 0..wo {
                        *dst.add(oy * os[2] + ox * os[3]) = *results.add((oy * wo + ox) * l + i);
                    }
                }
            }
        }
    }
}

/// Plane `c` of image `n`, NCHW, the row path (filters past [`MAX_TAPS`] taps): each output row
/// along the columns, the edge columns the scalar way; no scratch.
///
/// # Safety
/// As [`depthwise_body`]; `(n, c)` inside the tensors.
#[inline(always)]
unsafe fn nchw_plane<S: Simd>(p: &DepthwiseArgs, n: usize, c: usize) {
    let (r_n, s_n, ho, wo, lanes) = (p.y.taps, p.x.taps, p.y.output, p.x.output, S::LANES);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let (sw, dw, pl, w_in) = (p.x.stride, p.x.dilation, p.x.pad, p.x.input);
    let (xlo, xhi) = interior(&p.x);
    let vector = sw == 1 && xhi - xlo >= lanes;
    // SAFETY: (whole body) every index comes from the validated axes and strides and is inside
    // its tensor; the ISA is the caller's.
    unsafe {
        let w_at = move |r: usize, s: usize| (c * r_n + r) * s_n + s;
        let plane = p.input.add(at(is, n, c, 0, 0));
        let b0 = if p.bias.is_null() { 0.0 } else { *p.bias.add(c) };
        let bias = S::splat(b0);
        // One output pixel near the left/right padding, the scalar way.
        let edge = |oy: usize, x: usize| {
            let mut acc = b0;
            for r in 0..r_n {
                let Some(iy) = p.y.tap(oy, r) else { continue };
                let row = plane.add(iy * is[2]);
                for s in 0..s_n {
                    let ix = (x * sw + s * dw).wrapping_sub(pl);
                    if ix < w_in {
                        acc += *row.add(ix) * *p.weight.add(w_at(r, s));
                    }
                }
            }
            p.act.apply(acc)
        };
        for oy in 0..ho {
            let out = p.output.add(at(os, n, c, oy, 0));
            let mut x = 0;
            if vector {
                // Accumulate in registers, one store per vector: accumulating in the
                // output row made every tap a load-store round trip, and page-aligned
                // input and output rows alias in the store buffer (4 KiB aliasing):
                // 13 GFLOPS on one Zen 4 core for MobileNet's 32 ch @112.
                // Four vectors at once: four independent FMA chains (one chain
                // of r*s dependent FMAs was latency-bound at 16 GFLOPS).
                const U: usize = 4;
                let chunk = |x0: usize, out: *mut f32| {
                    let mut acc = [bias; U];
                    for r in 0..r_n {
                        let Some(iy) = p.y.tap(oy, r) else { continue };
                        let row = plane.add(iy * is[2] + x0 - pl);
                        for s in 0..s_n {
                            let w = S::splat(*p.weight.add(w_at(r, s)));
                            for (u, a) in acc.iter_mut().enumerate() {
                                *a = S::fmadd(S::load(row.add(s * dw + u * lanes)), w, *a);
                            }
                        }
                    }
                    for (u, a) in acc.iter().enumerate() {
                        let o = out.add(x0 + u * lanes);
                        match act_simd::<S>(p.act, *a) {
                            Some(y) => S::store(o, y),
                            None => {
                                S::store(o, *a);
                                for t in 0..lanes {
                                    *o.add(t) = p.act.apply(*o.add(t));
                                }
                            }
                        }
                    }
                };
                let single = |x0: usize, out: *mut f32| {
                    let mut acc = bias;
                    for r in 0..r_n {
                        let Some(iy) = p.y.tap(oy, r) else { continue };
                        let row = plane.add(iy * is[2] + x0 - pl);
                        for s in 0..s_n {
                            let w = S::splat(*p.weight.add(w_at(r, s)));
                            acc = S::fmadd(S::load(row.add(s * dw)), w, acc);
                        }
                    }
                    let o = out.add(x0);
                    match act_simd::<S>(p.act, acc) {
                        Some(y) => S::store(o, y),
                        None => {
                            S::store(o, acc);
                            for t in 0..lanes {
                                *o.add(t) = p.act.apply(*o.add(t));
                            }
                        }
                    }
                };
                for x0 in 0..xlo {
                    *out.add(x0) = edge(oy, x0);
                }
                x = xlo;
                while x + U * lanes <= xhi {
                    chunk(x, out);
                    x += U * lanes;
                }
                while x < xhi {
                    // The last vector ends exactly at xhi, overlapping the one before.
                    let x0 = x.min(xhi - lanes);
                    single(x0, out);
                    x = x0 + lanes;
                }
            }
            for x in x..wo {
                *out.add(x) = edge(oy, x);
            }
        }
    }
}

/// Tap range `[t0, t1)` of output position `o` on `axis` whose input positions are inside the
/// input (contiguous: positions grow with the tap); empty where none is.
#[inline(always)]
fn valid_taps(axis: &Axis, o: usize) -> (usize, usize) {
    let base = o * axis.stride;
    let t0 = axis.pad.saturating_sub(base).div_ceil(axis.dilation);
    let t1 = (axis.input + axis.pad).saturating_sub(base).div_ceil(axis.dilation).min(axis.taps);
    (t0, t1)
}

/// One-lane kernels (a Cortex-M's): each item's output rows one channel at a time, NCHW planes
/// (items `n*c + c`) and NHWC rows (items `n*ho + oy`, every channel) alike, through the tensors'
/// strides ([`one_lane_row`]).
///
/// # Safety
/// As [`depthwise_body`], with `S::LANES == 1`, neither the flat path nor channel blocks.
#[inline(always)]
unsafe fn one_lane<S: Simd>(p: &DepthwiseArgs) {
    let (c_n, ho, taps) = (p.channels, p.y.output, p.y.taps * p.x.taps);
    // Weights by (channel, tap) as the caller gave them, `[c][r][s]`, in either layout (nothing
    // is reordered for a one-lane kernel).
    let w_steps = (taps, 1);
    // SAFETY: every item inside the item count, so its rows are inside the tensors.
    unsafe {
        for item in p.items.clone() {
            match p.layout {
                TensorLayout::Nchw => {
                    for oy in 0..ho {
                        one_lane_row::<S>(p, (item / c_n, item % c_n, oy), w_steps);
                    }
                }
                TensorLayout::Nhwc => {
                    for c in 0..c_n {
                        one_lane_row::<S>(p, (item / ho, c, item % ho), w_steps);
                    }
                }
            }
        }
    }
}

/// Output row `oy` of channel `c` of image `n` for [`one_lane`]; weights of channel `c`, tap `t`
/// at `c * w_steps.0 + t * w_steps.1`. The tap rows inside the input are found once; inside the
/// row's interior eight outputs share each weight (eight independent multiply-add chains, no
/// bounds checks; the last eight end at the interior's end), the rest one at a time over their
/// taps inside the input. On a Cortex-M4 (the firmware's 3x3 depthwise case, 8 channels of
/// 16x16): 9.62 instructions per multiply-add where the vector kernels' row path, run one lane
/// wide, took 11.30, in 1.8 KiB where that took 3.9. Out of line: one copy for both layouts.
///
/// # Safety
/// As [`one_lane`]; `(n, c, oy)` inside the output.
#[inline(never)]
unsafe fn one_lane_row<S: Simd>(p: &DepthwiseArgs, (n, c, oy): (usize, usize, usize), (w_c, w_t): (usize, usize)) {
    let (is, (y, x)) = (&p.input_strides, (&p.y, &p.x));
    // Outputs a block.
    const U: usize = 8;
    let (r0, r1) = valid_taps(y, oy);
    let (xlo, xhi) = interior(x);
    // Pointer steps along the input row: output to output, tap to tap.
    let (step, tap_step) = (x.stride * is[3], x.dilation * is[3]);
    // SAFETY: (whole body) rows `r0..r1` and, per output, the taps `valid_taps` gives (all of
    // them inside the interior) are inside the input; the output element is inside the output.
    // The tap pointers step with wrapping arithmetic: after a row's last tap they may point
    // past the tensors, and are not read there.
    unsafe {
        let plane = p.input.add(n * is[0] + c * is[1]);
        let weight = p.weight.add(c * w_c);
        let bias = S::splat(if p.bias.is_null() { 0.0 } else { *p.bias.add(c) });
        let row_of = |r: usize| plane.add((oy * y.stride + r * y.dilation - y.pad) * is[2]);
        let put = |ox: usize, v: S::V| {
            let out = p.output.add(at(&p.output_strides, n, c, oy, ox));
            match act_simd::<S>(p.act, v) {
                Some(v) => S::store(out, v),
                None => {
                    S::store(out, v);
                    *out = p.act.apply(*out);
                }
            }
        };
        let mut ox = 0;
        while ox < x.output {
            if (xlo..xhi).contains(&ox) && xhi - xlo >= U {
                // U interior outputs; the last U end at the interior's end, recomputing (bit for
                // bit) up to U - 1 before them.
                let o0 = ox.min(xhi - U);
                let mut acc = [bias; U];
                for r in r0..r1 {
                    let mut src = row_of(r).add((o0 * x.stride - x.pad) * is[3]);
                    let mut w = weight.add(r * x.taps * w_t);
                    for _ in 0..x.taps {
                        let wv = S::splat(*w);
                        if step == 1 {
                            // Constant offsets (a Cortex-M's loads take them as immediates).
                            for (u, a) in acc.iter_mut().enumerate() {
                                *a = S::fmadd(S::load(src.add(u)), wv, *a);
                            }
                        } else {
                            for (u, a) in acc.iter_mut().enumerate() {
                                *a = S::fmadd(S::load(src.add(u * step)), wv, *a);
                            }
                        }
                        src = src.wrapping_add(tap_step);
                        w = w.wrapping_add(w_t);
                    }
                }
                for (u, &a) in acc.iter().enumerate() {
                    put(o0 + u, a);
                }
                ox = o0 + U;
            } else {
                // One output over its taps inside the input.
                let (s0, s1) = valid_taps(x, ox);
                let mut acc = bias;
                if s0 < s1 {
                    for r in r0..r1 {
                        let mut src = row_of(r).add((ox * x.stride + s0 * x.dilation - x.pad) * is[3]);
                        let mut w = weight.add((r * x.taps + s0) * w_t);
                        for _ in s0..s1 {
                            acc = S::fmadd(S::load(src), S::splat(*w), acc);
                            src = src.wrapping_add(tap_step);
                            w = w.wrapping_add(w_t);
                        }
                    }
                }
                put(ox, acc);
                ox += 1;
            }
        }
    }
}

/// The depthwise body for SIMD type `S`.
///
/// # Safety
/// The CPU supports `S`; the axes and strides describe tensors the pointers cover (the bias
/// `channels` floats if non-null, the weights `channels * y.taps * x.taps`), with the contiguous
/// axis `layout` names; `items` inside the item count; outputs of these items owned by the call.
#[inline(always)]
pub(crate) unsafe fn depthwise_body<S: Simd>(p: &DepthwiseArgs) {
    let (c_n, ho, wo, lanes) = (p.channels, p.y.output, p.x.output, S::LANES);
    // SAFETY: (whole body) every item below is inside the item count, so its pixels, planes or
    // chunks are inside the tensors; the ISA and the scratch are the caller's.
    unsafe {
        if lanes == 1 {
            // (A constant: vector kernels do not build it, one-lane kernels nothing below.)
            return one_lane::<S>(p);
        }
        match p.layout {
            TensorLayout::Nhwc => {
                if nhwc_windows(lanes, &p.y, &p.x) {
                    window_items::<S>(p);
                    return;
                }
                // Pixels a pass.
                const U: usize = 4;
                let (xlo, xhi) = interior(&p.x);
                for item in p.items.clone() {
                    let (n, oy) = (item / ho, item % ho);
                    let mut ox = 0;
                    while ox < wo {
                        if (xlo..xhi).contains(&ox) && ox + U <= xhi {
                            nhwc_pixels::<S, U>(p, Pixels { n, oy, ox, checked: false });
                            ox += U;
                        } else {
                            nhwc_pixels::<S, 1>(p, Pixels { n, oy, ox, checked: !(xlo..xhi).contains(&ox) });
                            ox += 1;
                        }
                    }
                }
            }
            TensorLayout::Nchw if p.blocks => block_items::<S>(p),
            TensorLayout::Nchw => match p.flat {
                Some(f) => {
                    // Cannot fail: `Flat::new` took the filter.
                    let Some(taps) = Taps::new(&p.y, &p.x, f.phase, f.wq) else { return };
                    let chunks = f.chunks(&p.y);
                    for item in p.items.clone() {
                        let (plane, chunk) = (item / chunks, item % chunks);
                        let rows = chunk * f.rows..((chunk + 1) * f.rows).min(ho);
                        flat_chunk::<S>(p, (&f, &taps), plane / c_n, plane % c_n, rows);
                    }
                }
                None => {
                    for item in p.items.clone() {
                        nchw_plane::<S>(p, item / c_n, item % c_n);
                    }
                }
            },
        }
    }
}
