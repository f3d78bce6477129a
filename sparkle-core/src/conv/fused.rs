//! The fast conv2d's driver: validation, scratch, and the five paths — implicit GEMM (the
//! operands of [`super::operands`] through the GEMM driver), the direct conv ([`super::direct`]),
//! a plain GEMM for 1x1 convolutions, the depthwise kernel, and Winograd ([`super::winograd`]).
//! [`choose_path_with`] is the one place that decides.
#![allow(unsafe_code)]

use core::ops::Range;

use crate::arch::depthwise::{
    nchw_blocks, nchw_blocks_scratch_len, nhwc_pack_weights, nhwc_weights_len, Axis, DepthwiseArgs, Flat,
};
use crate::arch::Kernel;
use crate::conv::operands::{Im2col, Im2colT};
use crate::conv::{check_epilogue, choose_path_for, choose_path_with, Conv2d, Conv2dPath};
use crate::epilogue::{Bias, Epilogue};
use crate::error::{Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::driver::{
    gemm_batch, operands_scratch_len, planned_workers, shared_scratch_len, Batch, JobFn, OutPtr, Shared, Workspace,
};
use crate::layout::TensorLayout;
use crate::view::MatRef;

/// Floats of scratch [`conv2d_with`] needs with `workers` workers to run the path
/// [`choose_path_with`] picks for `blocking` at its fastest. For a [`Conv2dPath::Winograd`] geometry that is the
/// transforms' buffers; with less, down to [`conv2d_min_scratch_len`], the conv runs as an
/// implicit GEMM instead. For an NCHW implicit GEMM it includes room for the im2col B gathered
/// once and shared by the workers; without it each worker gathers its own.
pub fn conv2d_scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    let least = conv2d_min_scratch_len(g, kernel, blocking, workers)?;
    match (planned_path(g, kernel, blocking, workers), g.params().layout) {
        // Never below the least, which a small Winograd geometry's packing can exceed.
        (Conv2dPath::Winograd, _) => Ok(super::winograd::scratch_len(g, kernel, blocking, workers)?.max(least)),
        // The im2col B, gathered once and shared by the workers.
        (Conv2dPath::ImplicitGemm, TensorLayout::Nchw) => shared_scratch_len(kernel, blocking, g.gemm_dims(), workers),
        // The padded images and products.
        #[cfg(feature = "direct")]
        (Conv2dPath::Direct, _) => Ok(super::direct::scratch_len(g, kernel, blocking, workers)?.max(least)),
        _ => Ok(least),
    }
}

/// The path to size and run for: [`choose_path_with`]'s for `blocking`'s
/// [`winograd_min_channels`](Blocking::winograd_min_channels), except a direct conv that `kernel` or
/// `blocking` cannot run (channel planes, NCHW or NHWC below 16 channels, on a kernel that has
/// no row tiles and does not read B in place, or no block of channels for the reduction slice),
/// which goes to Winograd
/// where that applies, else the implicit GEMM.
fn planned_path(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Conv2dPath {
    match choose_path_with(g, workers, blocking.winograd_min_channels) {
        #[cfg(feature = "direct")]
        Conv2dPath::Direct if !super::direct::fits(g, kernel, blocking, workers) => {
            if super::winograd::chosen(g) {
                Conv2dPath::Winograd
            } else {
                Conv2dPath::ImplicitGemm
            }
        }
        path => {
            let _ = (kernel, blocking);
            path
        }
    }
}

/// The least scratch [`conv2d_with`] accepts for `g` with `workers` workers: what
/// [`conv2d_scratch_len`] asks for, except that a Winograd or direct geometry may run as an
/// implicit GEMM.
pub fn conv2d_min_scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    match choose_path_for(g, workers) {
        // See `DepthwiseScratch`.
        Conv2dPath::Depthwise => DepthwiseScratch::new(g, kernel.depthwise.lanes(), workers)
            .and_then(|d| d.len(workers))
            .ok_or(Error::Overflow { param: Param::Scratch }),
        _ => {
            let (m, n, k) = g.gemm_dims();
            operands_scratch_len(kernel, blocking, m, n, k, workers)
        }
    }
}

/// `output = act(conv2d(input, weight) + bias)` in `ws` (its kernels, blocking, workers and
/// scratch of at least [`conv2d_min_scratch_len`] floats; [`conv2d_scratch_len`] for the fastest
/// path). Validates everything first; on an error nothing has been written.
pub fn conv2d_with(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    mut ws: Workspace<'_>,
) -> Result<()> {
    g.check_buffers(input.len(), weight.len(), None, output.len())?;
    check_epilogue(g, epi)?;
    let (kernel, blocking) = (ws.kernel, ws.blocking);
    ws.validated(
        |workers| conv2d_min_scratch_len(g, kernel, blocking, workers),
        // SAFETY: buffers, epilogue, blocking and scratch validated; the executor is pinned; a
        // `Kernel` exists only on a CPU that runs its ISA.
        |ws| unsafe { conv2d_unchecked(g, input, weight, epi, output, ws) },
    )
}

/// The path `g` runs on with `kernel`, `blocking`, `workers` and `scratch` floats of scratch:
/// [`choose_path_with`]'s for `blocking`; for a direct conv the kernel or blocking cannot run, Winograd where it
/// applies; and the implicit GEMM where the path's scratch is missing. A Winograd geometry also
/// runs as the implicit GEMM when an input or weight is not finite.
#[cfg_attr(not(any(feature = "direct", feature = "winograd")), allow(unused_variables))]
pub fn running_path(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize, scratch: usize) -> Conv2dPath {
    let path = planned_path(g, kernel, blocking, workers);
    let runs = match path {
        #[cfg(feature = "direct")]
        Conv2dPath::Direct => super::direct::runs(g, kernel, blocking, workers, scratch),
        #[cfg(feature = "winograd")]
        Conv2dPath::Winograd => super::winograd::scratch_len(g, kernel, blocking, workers).is_ok_and(|n| n <= scratch),
        _ => true,
    };
    if runs {
        path
    } else {
        Conv2dPath::ImplicitGemm
    }
}

/// Whether a [`Conv2dPath::Winograd`] geometry runs as Winograd in `ws`: its scratch holds the
/// transforms' buffers and the input and weights are finite (Winograd turns one infinity into
/// `inf - inf = NaN` where the oracle and the implicit GEMM give the infinity).
#[cfg(feature = "winograd")]
fn runs_winograd(g: &Conv2d, input: &[f32], weight: &[f32], ws: &Workspace<'_>) -> bool {
    let need = super::winograd::scratch_len(g, ws.kernel, ws.blocking, planned_workers(ws.exec));
    need.is_ok_and(|n| n <= ws.scratch.len())
        && input.iter().all(|x| x.is_finite())
        && weight.iter().all(|x| x.is_finite())
}

/// A conv's bias: one value per output channel ([`check_epilogue`] allows only that, or none).
fn per_channel_bias<'a>(epi: &Epilogue<'a>) -> Option<&'a [f32]> {
    match epi.bias {
        Bias::Row(b) => Some(b),
        _ => None,
    }
}

/// [`conv2d_with`] without validation.
///
/// # Safety
/// Everything [`conv2d_with`] checks must hold.
pub(crate) unsafe fn conv2d_unchecked(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    ws: &mut Workspace<'_>,
) {
    let path = planned_path(g, ws.kernel, ws.blocking, planned_workers(ws.exec));
    if path == Conv2dPath::Depthwise {
        // SAFETY: forwarded contract.
        unsafe { depthwise(g, input, weight, epi, output, ws) };
        return;
    }
    let bias = per_channel_bias(epi);
    #[cfg(feature = "winograd")]
    if path == Conv2dPath::Winograd && runs_winograd(g, input, weight, ws) {
        // SAFETY: forwarded contract; the scratch holds this path's buffers.
        unsafe { super::winograd::conv2d_unchecked(g, input, weight, epi, bias, output, ws) };
        return;
    }
    #[cfg(feature = "direct")]
    if path == Conv2dPath::Direct
        && super::direct::runs(g, ws.kernel, ws.blocking, planned_workers(ws.exec), ws.scratch.len())
    {
        // SAFETY: forwarded contract; the kernel and scratch run the direct conv.
        unsafe { super::direct::conv2d_unchecked(g, input, (weight, false), epi, bias, output, ws) };
        return;
    }
    let jobs = ConvJobs { g, input, weight, bias, out: Shared(output.as_mut_ptr()) };
    // SAFETY: forwarded contract; every (image, group) job is the same GEMM shape and writes its
    // own disjoint part of the validated output.
    unsafe { gemm_batch(&jobs, 1.0, 0.0, epi.activation, ws) };
}

/// The implicit GEMMs of a conv, one job per (image, group).
struct ConvJobs<'a> {
    g: &'a Conv2d,
    input: &'a [f32],
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    out: Shared<f32>,
}

// SAFETY: every job is `kg x hw x gemm_k` (or its transpose), writes the output of its own image
// and group (disjoint), with a bias of its group's `kg` channels.
unsafe impl Batch for ConvJobs<'_> {
    fn jobs(&self) -> usize {
        let p = self.g.params();
        p.n * p.groups
    }
    fn with_job(&self, job: usize, f: &mut JobFn<'_>) {
        let (g, input) = (self.g, self.input);
        let p = g.params();
        let (n, grp) = (job / p.groups, job % p.groups);
        let (kg, hw, gemm_k) = g.gemm_dims();
        let cg = g.cg();
        let w0 = g.weight_group_offset(grp);
        // Cannot fail: the weight length was validated.
        let Ok(wg) = MatRef::row_major(&self.weight[w0..w0 + kg * gemm_k], kg, gemm_k) else { return };
        let gb = self.bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
        let (off, _, _) = g.output_gemm_view(n, grp);
        // SAFETY: off is the output offset of (n, group), inside the validated output.
        let c = unsafe { self.out.ptr().add(off) };
        let pointwise = choose_path_for(g, 1) == Conv2dPath::Pointwise;
        match p.layout {
            // C (kg x hw) = W (kg x gemm_k) * im2col (gemm_k x hw), rows of C contiguous.
            TensorLayout::Nchw => {
                let out = OutPtr { ptr: c, rs: hw, cs: 1 };
                let bias = gb.map_or(Bias::None, Bias::Row);
                if pointwise {
                    let x0 = g.input_index(n, grp * cg, 0, 0);
                    let Ok(x) = MatRef::row_major(&input[x0..x0 + cg * hw], cg, hw) else { return };
                    f(&wg, &x, out, bias);
                } else {
                    f(&wg, &Im2col::new(g, input, n, grp), out, bias);
                }
            }
            // C^T (hw x kg) = im2col^T (hw x gemm_k) * W^T (gemm_k x kg), rows of C^T contiguous.
            TensorLayout::Nhwc => {
                let out = OutPtr { ptr: c, rs: p.k, cs: 1 };
                let bias = gb.map_or(Bias::None, Bias::Col);
                let wt = wg.t();
                if pointwise {
                    let x0 = g.input_index(n, grp * cg, 0, 0);
                    let len = (hw - 1) * p.c + cg;
                    let Ok(x) = MatRef::new(&input[x0..x0 + len], hw, cg, p.c, 1) else { return };
                    f(&x, &wt, out, bias);
                } else {
                    f(&Im2colT(Im2col::new(g, input, n, grp)), &wt, out, bias);
                }
            }
        }
    }
}

/// How a depthwise call uses its scratch: the weights reordered for the kernel first (the vector
/// kernels' NHWC path and NCHW as channel blocks: `arch::depthwise::nhwc_pack_weights`), then
/// each worker's own part (NCHW: a channel block's staging, or the flat path's staged rows,
/// `arch::depthwise::Flat`). The one place both the scratch's size and its use are derived.
struct DepthwiseScratch {
    /// NCHW as channel blocks (`arch::depthwise::nchw_blocks`).
    blocks: bool,
    /// NCHW, the flat path's geometry.
    flat: Option<Flat>,
    /// Floats of reordered weights (0: the kernel reads them as given).
    reordered: usize,
    /// Floats of each worker's part.
    per_worker: usize,
}

impl DepthwiseScratch {
    /// The layout for `g` (depthwise) with `lanes`-wide kernels on `workers` workers; `None` on
    /// overflow.
    fn new(g: &Conv2d, lanes: usize, workers: usize) -> Option<DepthwiseScratch> {
        let (p, (y, x)) = (g.params(), axes(g));
        let blocks = p.layout == TensorLayout::Nchw && nchw_blocks(lanes, &y, &x);
        // One-lane kernels read the weights as given in either layout.
        let reordered = match p.layout {
            TensorLayout::Nchw if !blocks => 0,
            _ if lanes == 1 => 0,
            _ => nhwc_weights_len(lanes, p.c, &y, &x)?,
        };
        let (flat, per_worker) = match p.layout {
            TensorLayout::Nchw if blocks => (None, nchw_blocks_scratch_len(lanes, &y, &x)?),
            TensorLayout::Nchw if Flat::applies(lanes, &y, &x) => {
                let flat = Flat::new(lanes, &y, &x, p.n.checked_mul(p.c)?, workers)?;
                (Some(flat), flat.scratch_len(&y, &x)?)
            }
            _ => (None, 0),
        };
        Some(DepthwiseScratch { blocks, flat, reordered, per_worker })
    }

    /// Floats of the whole scratch for `workers` workers.
    fn len(&self, workers: usize) -> Option<usize> {
        self.per_worker.checked_mul(workers)?.checked_add(self.reordered)
    }
}

/// The depthwise path: items split evenly over the workers.
///
/// # Safety
/// As [`conv2d_unchecked`], for a depthwise geometry.
unsafe fn depthwise(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    ws: &mut Workspace<'_>,
) {
    let bias = per_channel_bias(epi);
    let (kernel, exec, scratch) = (ws.kernel, ws.exec, &mut *ws.scratch);
    let p = g.params();
    let (y, x) = axes(g);
    let workers = planned_workers(exec).max(1);
    let lanes = kernel.depthwise.lanes();
    // Cannot fail: validated with the scratch (`conv2d_min_scratch_len`, the same geometry).
    let Some(DepthwiseScratch { blocks, flat, reordered, per_worker }) = DepthwiseScratch::new(g, lanes, workers)
    else {
        return;
    };
    if reordered > 0 {
        nhwc_pack_weights(lanes, (&y, &x), weight, &mut scratch[..reordered]);
    }
    let (reordered, rest) = scratch.split_at_mut(reordered);
    // The kernel reads the reordered weights where there are any, else the caller's.
    let weights: &[f32] = if reordered.is_empty() { weight } else { reordered };
    // The items: channel blocks of each image, chunks of rows of each plane (the flat path),
    // whole planes (the row path), or output rows (NHWC).
    let (items, scratch_base) = match (p.layout, flat) {
        (TensorLayout::Nchw, _) if blocks => (p.n * p.c.div_ceil(lanes), rest.as_mut_ptr()),
        (TensorLayout::Nchw, Some(f)) => (p.n * p.c * f.chunks(&y), rest.as_mut_ptr()),
        (TensorLayout::Nchw, None) => (p.n * p.c, core::ptr::null_mut()),
        (TensorLayout::Nhwc, _) => (p.n * g.ho(), core::ptr::null_mut()),
    };
    // The kernel is geometry-free: it gets the windows as axes and the tensors as strides, each
    // stride the geometry's own index of a unit step.
    let unit = |index: &dyn Fn(usize, usize, usize, usize) -> usize| {
        [index(1, 0, 0, 0), index(0, 1, 0, 0), index(0, 0, 1, 0), index(0, 0, 0, 1)]
    };
    let template = DepthwiseArgs {
        channels: p.c,
        y,
        x,
        layout: p.layout,
        input_strides: unit(&|n, c, y, x| g.input_index(n, c, y, x)),
        output_strides: unit(&|n, c, y, x| g.output_index(n, c, y, x)),
        input: input.as_ptr(),
        weight: weights.as_ptr(),
        bias: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
        act: epi.activation,
        output: output.as_mut_ptr(),
        items: 0..0,
        flat,
        blocks,
        scratch: scratch_base,
    };
    let template = SharedArgs(template);
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let range: Range<usize> = items * w / workers..items * (w + 1) / workers;
        let mut args = template.with_items(range);
        if !args.scratch.is_null() {
            // SAFETY: the scratch holds `workers * per_worker` floats (validated by the caller).
            args.scratch = unsafe { args.scratch.add(w * per_worker) };
        }
        // SAFETY: tensors validated by the caller; workers write disjoint items (planes, chunks
        // of a plane's rows, or whole NHWC output rows) and use disjoint scratch; the CPU
        // supports the kernel's ISA.
        unsafe { (kernel.depthwise.run)(&args) };
    });
}

/// The depthwise kernel's windows: rows, then columns.
fn axes(g: &Conv2d) -> (Axis, Axis) {
    let p = g.params();
    let y =
        Axis { input: p.h, output: g.ho(), taps: p.r, stride: p.stride[0], dilation: p.dilation[0], pad: p.pad.top };
    let x =
        Axis { input: p.w, output: g.wo(), taps: p.s, stride: p.stride[1], dilation: p.dilation[1], pad: p.pad.left };
    (y, x)
}

/// The depthwise call every worker starts from (its raw pointers make it `!Sync`).
struct SharedArgs(DepthwiseArgs);
// SAFETY: workers only read the template; each writes the disjoint items of its own copy (see
// `depthwise`).
unsafe impl Sync for SharedArgs {}
impl SharedArgs {
    /// The call for one worker's items.
    fn with_items(&self, items: Range<usize>) -> DepthwiseArgs {
        DepthwiseArgs { items, ..self.0.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three workers run in turn on this thread.
    struct Three;
    // SAFETY: every index of its count once, in turn, on this thread.
    unsafe impl crate::gemm::driver::Executor for Three {
        fn workers(&self) -> usize {
            3
        }
        fn run(&self, f: &(dyn Fn(usize) + Sync)) {
            for w in 0..3 {
                f(w)
            }
        }
    }

    /// Four lanes in plain Rust, so that the depthwise kernel's vector paths (the flat one, the
    /// partial NHWC channels) run under Miri, which checks every pointer they compute; the
    /// trait's portable partial loads, windows and deinterleave with them.
    #[derive(Clone, Copy, Debug)]
    struct Lanes4;

    impl crate::arch::Simd for Lanes4 {
        type V = [f32; 4];
        const LANES: usize = 4;
        unsafe fn zero() -> [f32; 4] {
            [0.0; 4]
        }
        unsafe fn splat(x: f32) -> [f32; 4] {
            [x; 4]
        }
        unsafe fn load(p: *const f32) -> [f32; 4] {
            // SAFETY: the caller's four readable floats.
            unsafe { p.cast::<[f32; 4]>().read_unaligned() }
        }
        unsafe fn store(p: *mut f32, v: [f32; 4]) {
            // SAFETY: the caller's four writable floats.
            unsafe { p.cast::<[f32; 4]>().write_unaligned(v) }
        }
        unsafe fn fmadd(a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
            core::array::from_fn(|i| a[i] * b[i] + c[i])
        }
        unsafe fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
            core::array::from_fn(|i| a[i] * b[i])
        }
        unsafe fn add(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
            core::array::from_fn(|i| a[i] + b[i])
        }
        unsafe fn max(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
            core::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
        }
        unsafe fn min(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
            core::array::from_fn(|i| if a[i] < b[i] { a[i] } else { b[i] })
        }
    }

    /// # Safety
    /// As [`crate::arch::depthwise::depthwise_body`].
    unsafe fn lanes4_dwconv_f32(p: &crate::arch::depthwise::DepthwiseArgs) {
        // SAFETY: forwarded contract; plain Rust runs everywhere.
        unsafe { crate::arch::depthwise::depthwise_body::<Lanes4>(p) }
    }

    /// Runs the depthwise conv `g` (at most 2048 input and output floats, 9 channels, 256
    /// weights) on four plain-Rust lanes over three workers, with a bias and ReLU6, and checks it
    /// against the oracle.
    fn lanes4_depthwise_matches_the_oracle(g: &Conv2d) {
        use crate::arch::DepthwiseKernel;
        use crate::check::tolerance;
        use crate::conv::reference::conv2d_reference_f64;
        use crate::Activation;
        let generic = Kernel::generic();
        let depthwise = DepthwiseKernel { id: "lanes4_dwconv_f32", run: lanes4_dwconv_f32, lanes: 4 };
        let kernel = &Kernel { depthwise, ..*generic };
        let blocking = Blocking::for_kernel(kernel, crate::gemm::blocking::CacheSizes::DEFAULT);
        let p = g.params();
        assert_eq!(choose_path_for(g, 3), Conv2dPath::Depthwise);
        let input: [f32; 2048] = core::array::from_fn(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0);
        let weight: [f32; 256] = core::array::from_fn(|i| ((i * 53 % 89) as f32 - 44.0) / 32.0);
        let bias: [f32; 9] = core::array::from_fn(|i| i as f32 * 0.75 - 3.0);
        let epi = Epilogue { bias: Bias::Row(&bias[..p.c]), activation: Activation::Relu6 };
        let (input, weight) = (&input[..g.input_len()], &weight[..g.weight_len()]);
        let (mut out, mut want) = ([f32::NAN; 2048], [0.0f64; 2048]);
        let (out, want) = (&mut out[..g.output_len()], &mut want[..g.output_len()]);
        let mut scratch = [f32::NAN; 4096];
        let need = conv2d_scratch_len(g, kernel, &blocking, 3).unwrap();
        let ws = Workspace { kernel, blocking: &blocking, exec: &Three, scratch: &mut scratch[..need] };
        conv2d_with(g, input, weight, &epi, out, ws).unwrap();
        conv2d_reference_f64(g, input, weight, &epi, want).unwrap();
        for (i, (&o, &w)) in out.iter().zip(want.iter()).enumerate() {
            assert!((f64::from(o) - w).abs() <= tolerance(p.r * p.s) * w.abs().max(1.0), "{p:?} {i}: {o} vs {w}");
        }
    }

    /// The depthwise window path on four plain-Rust lanes against the oracle, under Miri too:
    /// NHWC (3 and 5 columns, strides 1 and 2, windows of 2 to 8 pixels with outputs dropped,
    /// partial channel blocks, asymmetric padding, two images over three workers) and, beside
    /// it, the pixel path it leaves (7 columns, dilation); NCHW as channel blocks (small planes).
    #[test]
    fn depthwise_windows_match_the_oracle() {
        use crate::conv::{Conv2dParams, Padding};
        // (layout, images, channels, (h, w), (r, s), stride, dilation, padding)
        let (nhwc, nchw) = (TensorLayout::Nhwc, TensorLayout::Nchw);
        let cases = [
            (nhwc, 2, 6, (3, 19), (3, 3), 1, 1, Padding::uniform(1)),
            (nhwc, 1, 5, (5, 11), (5, 5), 1, 1, Padding::uniform(2)),
            (nhwc, 1, 9, (4, 17), (3, 3), 2, 1, Padding::new(0, 1, 1, 0)),
            (nhwc, 2, 4, (7, 9), (5, 5), 2, 1, Padding::new(2, 2, 1, 2)),
            (nhwc, 1, 3, (3, 2), (3, 3), 1, 1, Padding::uniform(1)),
            (nhwc, 1, 7, (6, 8), (5, 3), 1, 1, Padding::new(2, 0, 1, 2)),
            (nhwc, 1, 6, (5, 9), (3, 7), 1, 1, Padding::uniform(3)),
            (nhwc, 1, 5, (7, 8), (3, 3), 1, 2, Padding::uniform(2)),
            (nchw, 2, 6, (7, 7), (3, 3), 1, 1, Padding::uniform(1)),
            (nchw, 1, 5, (13, 11), (3, 3), 2, 1, Padding::new(1, 1, 0, 1)),
            (nchw, 1, 3, (6, 5), (5, 5), 1, 1, Padding::uniform(2)),
        ];
        for (layout, n, c, (h, w), (r, s), stride, dilation, pad) in cases {
            let p = Conv2dParams::new(n, c, h, w, c, r, s).stride(stride, stride).dilation(dilation, dilation);
            let g = p.pad(pad).groups(c).layout(layout).validate().unwrap();
            let (y, x) = axes(&g);
            assert!(layout == nhwc || nchw_blocks(4, &y, &x), "{p:?}: not as channel blocks");
            lanes4_depthwise_matches_the_oracle(&g);
        }
    }

    /// The depthwise kernel's vector paths on four plain-Rust lanes against the oracle: NCHW's
    /// flat rows at strides 1, 2 and 3 (padding on either side, dilation, a plane split into
    /// chunks over three workers), NHWC with a partial vector of channels. Under Miri too.
    #[test]
    fn depthwise_vector_paths_match_the_oracle() {
        use crate::conv::{Conv2dParams, Padding};
        let cases = [
            (TensorLayout::Nchw, 2, (9, 8), 1, 1, Padding::new(1, 2, 1, 0)),
            (TensorLayout::Nchw, 3, (15, 17), 2, 1, Padding::new(1, 1, 2, 1)),
            (TensorLayout::Nchw, 2, (16, 19), 2, 1, Padding::new(0, 0, 1, 2)),
            (TensorLayout::Nchw, 2, (10, 13), 3, 2, Padding::new(2, 3, 0, 1)),
            (TensorLayout::Nhwc, 6, (5, 6), 1, 1, Padding::uniform(1)),
        ];
        for (layout, c, (h, w), stride, dilation, pad) in cases {
            let p = Conv2dParams::new(1, c, h, w, c, 3, 3).stride(stride, stride).dilation(dilation, dilation);
            let g = p.pad(pad).groups(c).layout(layout).validate().unwrap();
            let (y, x) = axes(&g);
            assert!(layout == TensorLayout::Nhwc || !nchw_blocks(4, &y, &x), "{p:?}: not the flat path");
            lanes4_depthwise_matches_the_oracle(&g);
        }
    }

    /// Several chunks (one pair each here, `direct::MAX_FLOATS` being 512 in unit tests), three
    /// workers run in turn, groups and a batch: NHWC and (where the kernel reads B in place or
    /// has row tiles) NCHW against the oracle; a kernel set with row tiles also without them, so
    /// that its channel planes run both forms.
    #[test]
    fn chunks_of_pairs_match_the_oracle() {
        let best = Kernel::best();
        let planes = Kernel { gemm: crate::arch::GemmKernel { rows: None, ..best.gemm }, ..*best };
        chunks_of_pairs(best);
        if best.gemm.rows.is_some() {
            chunks_of_pairs(&planes);
        }
    }

    fn chunks_of_pairs(kernel: &Kernel) {
        use crate::check::tolerance;
        use crate::conv::reference::conv2d_reference_f64;
        use crate::conv::{Conv2dParams, Padding};
        use crate::Activation;
        // Reduction slices of 3 channels by 9 taps (NCHW) or 16 channels (NHWC).
        let blocking = Blocking::new(2 * kernel.mr(), 32, 2 * kernel.nr());
        for layout in [TensorLayout::Nhwc, TensorLayout::Nchw] {
            // Under Miri two images of one group: still a chunk each.
            let (n, groups) = if cfg!(miri) { (2, 1) } else { (3, 2) };
            let p = Conv2dParams::new(n, 16 * groups, 5, 6, 2 * groups, 3, 3).pad(Padding::new(1, 1, 1, 2));
            let g = p.groups(groups).layout(layout).validate().unwrap();
            assert_eq!(choose_path_for(&g, 3), Conv2dPath::Direct);
            let (mut input, mut weight, bias) =
                ([0.0f32; 3 * 32 * 30], [0.0f32; 4 * 16 * 9], [0.5f32, -1.0, 2.0, 0.25]);
            for (i, x) in input.iter_mut().enumerate() {
                *x = ((i * 37 % 101) as f32 - 50.0) / 64.0;
            }
            for (i, x) in weight.iter_mut().enumerate() {
                *x = ((i * 53 % 89) as f32 - 44.0) / 32.0;
            }
            let epi = Epilogue { bias: Bias::Row(&bias[..2 * groups]), activation: Activation::Relu };
            let (input, weight) = (&input[..g.input_len()], &weight[..g.weight_len()]);
            let mut out = [f32::NAN; 3 * 4 * 5 * 7];
            let mut want = [0.0f64; 3 * 4 * 5 * 7];
            let (out, want) = (&mut out[..g.output_len()], &mut want[..g.output_len()]);
            let mut scratch = [0.0f32; 1 << 15];
            let need = conv2d_scratch_len(&g, kernel, &blocking, 3).unwrap();
            let runs = if layout == TensorLayout::Nhwc || kernel.gemm.b_in_place || kernel.gemm.rows.is_some() {
                Conv2dPath::Direct
            } else {
                Conv2dPath::ImplicitGemm
            };
            assert_eq!(running_path(&g, kernel, &blocking, 3, need), runs);
            let ws = Workspace { kernel, blocking: &blocking, exec: &Three, scratch: &mut scratch[..need] };
            conv2d_with(&g, input, weight, &epi, out, ws).unwrap();
            conv2d_reference_f64(&g, input, weight, &epi, want).unwrap();
            for (i, (&o, &w)) in out.iter().zip(want.iter()).enumerate() {
                assert!((f64::from(o) - w).abs() <= tolerance(144) * w.abs().max(1.0), "{layout:?} {i}: {o} vs {w}");
            }
        }
    }

    /// Channel planes on the best kernel set as row tiles (where it has them) and as the
    /// planes form (the same set without them), against the oracle: more than 14 pixels a row
    /// (several tiles a row), a last panel of 8 channels (one-vector tiles), 40 channels (a
    /// partial two-vector panel), stride and dilation (phase planes), groups and a batch (a
    /// panel repacked per group), NHWC below 16 channels, KRSC weights (packed element by
    /// element), an activation without a vector form, two workers. Each case asserts that it ran
    /// direct and which form its plan took.
    #[test]
    fn row_tiles_and_channel_planes_match_the_oracle() {
        /// Two workers in turn: strided and few-channel geometries run direct on up to two.
        struct Two;
        // SAFETY: every index of its count once, in turn, on this thread.
        unsafe impl crate::gemm::driver::Executor for Two {
            fn workers(&self) -> usize {
                2
            }
            fn run(&self, f: &(dyn Fn(usize) + Sync)) {
                f(0);
                f(1);
            }
        }
        extern crate std;
        use crate::check::tolerance;
        use crate::conv::reference::conv2d_reference_f64;
        use crate::conv::{Conv2dParams, Padding};
        use crate::Activation;
        use std::vec;
        let best = Kernel::best();
        let planes = Kernel { gemm: crate::arch::GemmKernel { rows: None, ..best.gemm }, ..*best };
        let cases = [
            Conv2dParams::new(1, 5, 9, 31, 40, 3, 3).pad(Padding::uniform(1)),
            Conv2dParams::new(2, 6, 11, 17, 8, 3, 2)
                .stride(2, 1)
                .dilation(1, 2)
                .pad(Padding::new(1, 2, 0, 1))
                .groups(2),
            Conv2dParams::new(1, 3, 15, 16, 20, 5, 5).stride(2, 2).pad(Padding::uniform(2)).layout(TensorLayout::Nhwc),
            Conv2dParams::new(1, 4, 7, 20, 33, 3, 3)
                .pad(Padding::uniform(1))
                .weight_layout(crate::layout::WeightLayout::Krsc),
        ];
        // Under Miri (the portable kernel, no row tiles) the first case's form on a smaller image
        // and fewer channels (the full one took 4-7 minutes of CI), once.
        let small = [Conv2dParams::new(1, 3, 4, 9, 8, 3, 3).pad(Padding::uniform(1))];
        let (cases, kernels) = if cfg!(miri) { (&small[..], &[best][..]) } else { (&cases[..], &[best, &planes][..]) };
        for &kernel in kernels {
            for (i, p) in cases.iter().enumerate() {
                let g = p.validate().unwrap();
                let blocking = Blocking::for_kernel(kernel, crate::gemm::blocking::CacheSizes::DEFAULT);
                let rows = super::super::direct::row_tiles(&g, kernel, &blocking, 2);
                assert_eq!(rows, Some(kernel.gemm.rows.is_some()), "{p:?}");
                let input: vec::Vec<f32> = (0..g.input_len()).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
                let weight: vec::Vec<f32> = (0..g.weight_len()).map(|i| ((i * 53 % 89) as f32 - 44.0) / 32.0).collect();
                let bias: vec::Vec<f32> = (0..p.k).map(|i| i as f32 / 8.0 - 1.0).collect();
                let act = [Activation::Gelu, Activation::Relu, Activation::None, Activation::Sigmoid][i];
                let epi = Epilogue { bias: if i == 2 { Bias::None } else { Bias::Row(&bias) }, activation: act };
                let mut out = vec![f32::NAN; g.output_len()];
                let mut want = vec![0.0f64; g.output_len()];
                let mut scratch = vec![0.0f32; conv2d_scratch_len(&g, kernel, &blocking, 2).unwrap()];
                let ws = Workspace { kernel, blocking: &blocking, exec: &Two, scratch: &mut scratch };
                assert_eq!(running_path(&g, kernel, &blocking, 2, usize::MAX), Conv2dPath::Direct);
                conv2d_with(&g, &input, &weight, &epi, &mut out, ws).unwrap();
                conv2d_reference_f64(&g, &input, &weight, &epi, &mut want).unwrap();
                let tol = tolerance(g.gemm_dims().2);
                for (at, (&o, &w)) in out.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (f64::from(o) - w).abs() <= tol * w.abs().max(1.0),
                        "{} {p:?} {at}: {o} vs {w}",
                        kernel.id()
                    );
                }
            }
        }
    }

    /// A direct conv the kernel or blocking cannot run goes where it would have gone without
    /// the direct path: Winograd where that applies, else the implicit GEMM with its shared B.
    #[test]
    fn a_direct_conv_that_cannot_run_falls_back() {
        use crate::conv::{Conv2dParams, Padding};
        use crate::gemm::blocking::CacheSizes;
        // The generic kernel without B read in place.
        let generic = Kernel::generic();
        let kernel = &Kernel { gemm: crate::arch::GemmKernel { b_in_place: false, ..generic.gemm }, ..*generic };
        let blocking = Blocking::for_kernel(kernel, CacheSizes::DEFAULT);
        let wino = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1));
        let want = if cfg!(feature = "winograd") { Conv2dPath::Winograd } else { Conv2dPath::ImplicitGemm };
        // NCHW on a kernel that cannot read B in place; NHWC with no block of 16 channels in kc = 8.
        let small = Blocking { kc: 8, ..blocking };
        for (p, b) in [(wino, blocking), (wino.layout(TensorLayout::Nhwc), small)] {
            let g = p.validate().unwrap();
            assert_eq!(choose_path_for(&g, 4), if cfg!(feature = "direct") { Conv2dPath::Direct } else { want });
            let need = conv2d_scratch_len(&g, kernel, &b, 4).unwrap();
            assert_eq!(running_path(&g, kernel, &b, 4, need), want, "{p:?}");
        }
        let g = Conv2dParams::new(1, 128, 28, 28, 128, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
        assert_eq!(running_path(&g, kernel, &blocking, 4, usize::MAX), Conv2dPath::ImplicitGemm);
        let shared = shared_scratch_len(kernel, &blocking, g.gemm_dims(), 4).unwrap();
        assert_eq!(conv2d_scratch_len(&g, kernel, &blocking, 4).unwrap(), shared);
    }
}
