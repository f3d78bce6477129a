//! The depthwise conv kernel body (groups == c == k): one filter per channel, no reduction
//! across channels, so it is memory-bound and vectorised along the contiguous axis: channels for
//! NHWC, output columns for NCHW (stride 1, rows of at least a vector). NCHW planes that are
//! strided or narrower than a vector (MobileNet's stride-2 layers, 14x14 and 7x7 planes) are
//! vectorised across channels instead: a block of `LANES` channels is interleaved, one input row
//! at a time, into the worker's scratch (a ring of the rows one output row reads), so each tap is
//! one vector load (they ran the scalar way at 0.6-1.1 GFLOPS before).
//!
//! Geometry-free: the kernel knows windows along an axis ([`Axis`]) and tensors as element
//! strides; `conv/` derives both from its validated geometry, so the ISA layer does not depend on
//! the conv layer.

use core::ops::Range;

use super::{act_is_scalar, act_simd, Simd};
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
    /// NCHW: the weights as given (`[c][r][s]`, both weight layouts agree when `c/groups == 1`);
    /// NHWC: the weights transposed to `[r][s][c]`.
    pub weight: *const f32,
    /// `channels` biases, or null.
    pub bias: *const f32,
    /// Activation applied last.
    pub act: Activation,
    /// The whole output tensor.
    pub output: *mut f32,
    /// NCHW: planes `n*c + c`; NHWC: output rows `n*ho + oy`.
    pub items: Range<usize>,
    /// This call's own scratch of [`packed_scratch_len`] floats for its kernel's lanes (NCHW
    /// only), or null: then strided and narrow planes run the scalar way.
    pub scratch: *mut f32,
    /// NCHW, 0: `items` are planes. Else the channel-blocked path: item `i` is block
    /// `i / row_chunks` (`LANES` channels of one image; blocks counted image by image) over
    /// chunk `i % row_chunks` of the output rows (batch 1 has too few blocks for every worker).
    pub row_chunks: usize,
}

/// Input rows a ring must hold so that one output row's taps are all in it.
fn ring_rows(y: &Axis) -> usize {
    (y.taps - 1) * y.dilation + 1
}

/// Output columns whose every tap is inside the input row: `[lo, hi)`.
fn interior(x: &Axis) -> (usize, usize) {
    let lo = x.pad.div_ceil(x.stride).min(x.output);
    let hi = (x.input + x.pad).saturating_sub((x.taps - 1) * x.dilation).div_ceil(x.stride).clamp(lo, x.output);
    (lo, hi)
}

/// Whether NCHW planes with columns `x` run across blocks of `lanes` channels: the plane is
/// strided, or its interior is narrower than a vector (else each row is vectorised along it).
pub(crate) fn channel_blocked(lanes: usize, x: &Axis) -> bool {
    let (lo, hi) = interior(x);
    (2..=16).contains(&lanes) && !(x.stride == 1 && hi - lo >= lanes)
}

/// Floats of scratch one NCHW depthwise call with `lanes`-wide vectors needs: for the
/// channel-interleaved path ([`channel_blocked`]) a ring of input rows and the block's weights,
/// else 0; `None` on overflow.
pub(crate) fn packed_scratch_len(lanes: usize, y: &Axis, x: &Axis) -> Option<usize> {
    if !channel_blocked(lanes, x) {
        return Some(0);
    }
    let ring = y.taps.checked_sub(1)?.checked_mul(y.dilation)?.checked_add(1)?;
    ring.checked_mul(x.input)?.checked_add(y.taps.checked_mul(x.taps)?)?.checked_mul(lanes)
}

/// Channels `c0..c0 + LANES` of image `n`, output rows `rows`, NCHW, vectorised across the
/// channels (any stride, dilation and width): each input row is interleaved once into a ring in `p.scratch`
/// (`[slot][x][lane]`), the block's weights into `[tap][lane]` after it; each output pixel is then
/// one vector FMA per tap.
///
/// # Safety
/// As [`depthwise_body`]; `p.scratch` holds [`packed_scratch_len`] floats for `S::LANES`
/// (at most 16); `c0 + S::LANES <= p.channels`.
#[inline(always)]
unsafe fn packed_block<S: Simd>(p: &DepthwiseArgs, n: usize, c0: usize, rows: Range<usize>) {
    let l = S::LANES;
    let (r_n, s_n, w_in, wo) = (p.y.taps, p.x.taps, p.x.input, p.x.output);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let ring = ring_rows(&p.y);
    // SAFETY: (whole body) the scratch holds ring * w_in * l + r_n * s_n * l floats; every input
    // and output index comes from the validated axes and strides.
    unsafe {
        let weights = p.scratch.add(ring * w_in * l);
        for t in 0..r_n * s_n {
            for j in 0..l {
                *weights.add(t * l + j) = *p.weight.add((c0 + j) * r_n * s_n + t);
            }
        }
        let bias = if p.bias.is_null() { S::zero() } else { S::load(p.bias.add(c0)) };
        let scalar_act = act_is_scalar(p.act);
        let mut lanes_out = [0.0f32; 16];
        let (sw, dw, pl) = (p.x.stride, p.x.dilation, p.x.pad);
        let (xlo, xhi) = interior(&p.x);
        // Input rows [0, next) are in the ring (row iy in slot iy % ring).
        let mut next = 0;
        for oy in rows {
            // The rows this output row reads, each interleaved once.
            if let Some(last) = (0..r_n).rev().find_map(|r| p.y.tap(oy, r)) {
                for iy in next.max((last + 1).saturating_sub(ring))..=last {
                    let dst = p.scratch.add((iy % ring) * w_in * l);
                    for j in 0..l {
                        let src = p.input.add(at(is, n, c0 + j, iy, 0));
                        for x in 0..w_in {
                            *dst.add(x * l + j) = *src.add(x * is[3]);
                        }
                    }
                }
                next = next.max(last + 1);
            }
            // Each tap row's place in the ring, once per output row (a division per tap was most
            // of the time); null where the tap falls in the padding.
            let mut rows = [core::ptr::null::<f32>(); 16];
            let row_of = |r: usize| {
                p.y.tap(oy, r).map_or(core::ptr::null(), |iy| p.scratch.add((iy % ring) * w_in * l).cast_const())
            };
            for (r, slot) in rows.iter_mut().enumerate().take(r_n) {
                *slot = row_of(r);
            }
            for ox in 0..wo {
                let mut acc = bias;
                let inside = (xlo..xhi).contains(&ox);
                for r in 0..r_n {
                    let row = if r < rows.len() { rows[r] } else { row_of(r) };
                    if row.is_null() {
                        continue;
                    }
                    let w_row = weights.add(r * s_n * l);
                    if inside {
                        // Every column tap inside the row: no checks.
                        let first = row.add((ox * sw - pl) * l);
                        for s in 0..s_n {
                            acc = S::fmadd(S::load(first.add(s * dw * l)), S::load(w_row.add(s * l)), acc);
                        }
                    } else {
                        for s in 0..s_n {
                            let Some(ix) = p.x.tap(ox, s) else { continue };
                            acc = S::fmadd(S::load(row.add(ix * l)), S::load(w_row.add(s * l)), acc);
                        }
                    }
                }
                S::store(lanes_out.as_mut_ptr(), act_simd::<S>(p.act, acc).unwrap_or(acc));
                let out = p.output.add(at(os, n, c0, oy, ox));
                for (j, &v) in lanes_out[..l].iter().enumerate() {
                    *out.add(j * os[1]) = if scalar_act { p.act.apply(v) } else { v };
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

/// One output element the scalar way (edges, tails, strided cases).
///
/// # Safety
/// As [`depthwise_body`]; `(n, c, oy, ox)` inside the output.
#[inline(always)]
unsafe fn pixel(
    p: &DepthwiseArgs,
    n: usize,
    c: usize,
    oy: usize,
    ox: usize,
    w_at: impl Fn(usize, usize) -> usize,
) -> f32 {
    let mut acc = 0.0f32;
    // SAFETY: taps come from the validated axes, so every index is inside its tensor.
    unsafe {
        for r in 0..p.y.taps {
            let Some(iy) = p.y.tap(oy, r) else { continue };
            for s in 0..p.x.taps {
                let Some(ix) = p.x.tap(ox, s) else { continue };
                acc += *p.input.add(at(&p.input_strides, n, c, iy, ix)) * *p.weight.add(w_at(r, s));
            }
        }
        let b = if p.bias.is_null() { 0.0 } else { *p.bias.add(c) };
        p.act.apply(acc + b)
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
    let (c_n, r_n, s_n, ho, wo) = (p.channels, p.y.taps, p.x.taps, p.y.output, p.x.output);
    let (is, os) = (&p.input_strides, &p.output_strides);
    let lanes = S::LANES;
    let scalar_act = act_is_scalar(p.act);
    // SAFETY: (whole body) every index below comes from the validated axes and strides and is
    // inside its tensor; the ISA is the caller's.
    unsafe {
        match p.layout {
            TensorLayout::Nhwc => {
                let w_at = |c: usize| move |r: usize, s: usize| (r * s_n + s) * c_n + c;
                for item in p.items.clone() {
                    let (n, oy) = (item / ho, item % ho);
                    for ox in 0..wo {
                        let out = p.output.add(at(os, n, 0, oy, ox));
                        let mut c0 = 0;
                        while c0 + lanes <= c_n {
                            let mut acc = S::zero();
                            for r in 0..r_n {
                                let Some(iy) = p.y.tap(oy, r) else { continue };
                                for s in 0..s_n {
                                    let Some(ix) = p.x.tap(ox, s) else { continue };
                                    let x = S::load(p.input.add(at(is, n, c0, iy, ix)));
                                    let w = S::load(p.weight.add((r * s_n + s) * c_n + c0));
                                    acc = S::fmadd(x, w, acc);
                                }
                            }
                            if !p.bias.is_null() {
                                acc = S::add(acc, S::load(p.bias.add(c0)));
                            }
                            S::store(out.add(c0), act_simd::<S>(p.act, acc).unwrap_or(acc));
                            if scalar_act {
                                for c in c0..c0 + lanes {
                                    *out.add(c) = p.act.apply(*out.add(c));
                                }
                            }
                            c0 += lanes;
                        }
                        for c in c0..c_n {
                            *out.add(c) = pixel(p, n, c, oy, ox, w_at(c));
                        }
                    }
                }
            }
            TensorLayout::Nchw => {
                let (sw, dw, pl, w_in) = (p.x.stride, p.x.dilation, p.x.pad, p.x.input);
                let (xlo, xhi) = interior(&p.x);
                let vector = sw == 1 && xhi - xlo >= lanes;
                for item in p.items.clone() {
                    // The planes and output rows this item covers: a whole plane, or (the
                    // channel-blocked path) a block of `lanes` channels over a chunk of rows.
                    let (n, c_first, c_end, rows) = match item.checked_div(p.row_chunks) {
                        Some(block) => {
                            let chunk = item % p.row_chunks;
                            let per_image = c_n.div_ceil(lanes);
                            let (n, c) = (block / per_image, (block % per_image) * lanes);
                            let rows = ho * chunk / p.row_chunks..ho * (chunk + 1) / p.row_chunks;
                            (n, c, (c + lanes).min(c_n), rows)
                        }
                        None => (item / c_n, item % c_n, item % c_n + 1, 0..ho),
                    };
                    if p.row_chunks > 0 && c_end - c_first == lanes && !p.scratch.is_null() {
                        packed_block::<S>(p, n, c_first, rows);
                        continue;
                    }
                    // A block's last channels (fewer than `lanes`), or a plane: the scalar or
                    // row-vectorised way.
                    for c in c_first..c_end {
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
                        for oy in rows.clone() {
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
            }
        }
    }
}
