//! The depthwise conv kernel body (groups == c == k): one filter per channel, no reduction
//! across channels, so it is memory-bound and vectorised along the contiguous axis: channels for
//! NHWC, output columns for NCHW (stride 1).

use core::ops::Range;

use super::{act_is_scalar, act_simd, Simd};
use crate::conv::Conv2d;
use crate::epilogue::Activation;
use crate::layout::TensorLayout;

/// One depthwise call: a range of work items over whole tensors.
#[derive(Clone, Debug)]
pub struct DepthwiseArgs<'a> {
    /// A validated geometry with `groups == c == k`.
    pub g: &'a Conv2d,
    /// The whole input tensor.
    pub input: *const f32,
    /// NCHW: the weights as given (`[c][r][s]`, both weight layouts agree when `c/groups == 1`);
    /// NHWC: the weights transposed to `[r][s][c]`.
    pub weight: *const f32,
    /// `k` biases, or null.
    pub bias: *const f32,
    /// Activation applied last.
    pub act: Activation,
    /// The whole output tensor.
    pub output: *mut f32,
    /// NCHW: planes `n*c + c`; NHWC: output rows `n*ho + oy`.
    pub items: Range<usize>,
}

/// One output element the scalar way (edges, tails, strided cases).
///
/// # Safety
/// As [`depthwise_body`]; `(n, c, oy, ox)` inside the output.
#[inline(always)]
unsafe fn pixel(
    p: &DepthwiseArgs<'_>,
    n: usize,
    c: usize,
    oy: usize,
    ox: usize,
    w_at: impl Fn(usize, usize) -> usize,
) -> f32 {
    let g = p.g;
    let (r_n, s_n) = (g.params().r, g.params().s);
    let mut acc = 0.0f32;
    // SAFETY: taps come from the validated geometry, so every index is inside its tensor.
    unsafe {
        for r in 0..r_n {
            let Some(iy) = g.input_y(oy, r) else { continue };
            for s in 0..s_n {
                let Some(ix) = g.input_x(ox, s) else { continue };
                acc += *p.input.add(g.input_index(n, c, iy, ix)) * *p.weight.add(w_at(r, s));
            }
        }
        let b = if p.bias.is_null() { 0.0 } else { *p.bias.add(c) };
        p.act.apply(acc + b)
    }
}

/// The depthwise body for SIMD type `S`.
///
/// # Safety
/// The CPU supports `S`; pointers cover the geometry's tensors (the bias `k` floats if non-null,
/// the weights `k*r*s`); `items` inside the item count; outputs of these items owned by the call.
#[inline(always)]
pub unsafe fn depthwise_body<S: Simd>(p: &DepthwiseArgs<'_>) {
    let g = p.g;
    let prm = g.params();
    let (c_n, r_n, s_n, ho, wo) = (prm.c, prm.r, prm.s, g.ho(), g.wo());
    let lanes = S::LANES;
    let scalar_act = act_is_scalar(p.act);
    // SAFETY: (whole body) every index below comes from the validated geometry and is inside
    // its tensor; the ISA is the caller's.
    unsafe {
        match prm.layout {
            TensorLayout::Nhwc => {
                let w_at = |c: usize| move |r: usize, s: usize| (r * s_n + s) * c_n + c;
                for item in p.items.clone() {
                    let (n, oy) = (item / ho, item % ho);
                    for ox in 0..wo {
                        let out = p.output.add(g.output_index(n, 0, oy, ox));
                        let mut c0 = 0;
                        while c0 + lanes <= c_n {
                            let mut acc = S::zero();
                            for r in 0..r_n {
                                let Some(iy) = g.input_y(oy, r) else { continue };
                                for s in 0..s_n {
                                    let Some(ix) = g.input_x(ox, s) else { continue };
                                    let x = S::load(p.input.add(g.input_index(n, c0, iy, ix)));
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
                let [_, sw] = prm.stride;
                let [_, dw] = prm.dilation;
                let pl = prm.pad.left;
                // Output columns whose every tap is inside the input row: [xlo, xhi).
                let xlo = pl.div_ceil(sw).min(wo);
                let reach = (s_n - 1) * dw;
                let xhi = (prm.w + pl).saturating_sub(reach).div_ceil(sw).clamp(xlo, wo);
                let vector = sw == 1 && xhi - xlo >= lanes;
                for item in p.items.clone() {
                    let (n, c) = (item / c_n, item % c_n);
                    let w_at = move |r: usize, s: usize| (c * r_n + r) * s_n + s;
                    let plane = p.input.add(g.input_index(n, c, 0, 0));
                    let b0 = if p.bias.is_null() { 0.0 } else { *p.bias.add(c) };
                    let bias = S::splat(b0);
                    // One output pixel near the left/right padding, the scalar way.
                    let edge = |oy: usize, x: usize| {
                        let mut acc = b0;
                        for r in 0..r_n {
                            let Some(iy) = g.input_y(oy, r) else { continue };
                            let row = plane.add(iy * prm.w);
                            for s in 0..s_n {
                                let ix = (x * sw + s * dw).wrapping_sub(pl);
                                if ix < prm.w {
                                    acc += *row.add(ix) * *p.weight.add(w_at(r, s));
                                }
                            }
                        }
                        p.act.apply(acc)
                    };
                    for oy in 0..ho {
                        let out = p.output.add(g.output_index(n, c, oy, 0));
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
                                    let Some(iy) = g.input_y(oy, r) else { continue };
                                    let row = plane.add(iy * prm.w + x0 - pl);
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
                                    let Some(iy) = g.input_y(oy, r) else { continue };
                                    let row = plane.add(iy * prm.w + x0 - pl);
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
