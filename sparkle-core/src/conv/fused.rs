//! The fast conv2d: implicit GEMM with im2col never materialised (the B panels are gathered
//! straight from the input, padding/stride/dilation handled in the gather), a plain GEMM for 1x1
//! convolutions, and a dedicated depthwise kernel. [`choose_path`] is the one place that decides.
#![allow(unsafe_code)]

use core::ops::Range;

use crate::arch::depthwise::{Axis, DepthwiseArgs};
use crate::arch::Kernel;
use crate::conv::{check_epilogue, choose_path, Conv2d, Conv2dPath};
use crate::epilogue::{Bias, Epilogue};
use crate::error::{Error, Param, Result};
use crate::gemm::blocking::Blocking;
use crate::gemm::driver::{gemm_operands, gemm_scratch_len, Executor, Operand, Pinned};
use crate::gemm::pack::Block;
use crate::layout::TensorLayout;
use crate::view::MatRef;

/// Floats of scratch [`conv2d_with`] needs with `workers` workers.
pub fn conv2d_scratch_len(g: &Conv2d, kernel: &Kernel, blocking: &Blocking, workers: usize) -> Result<usize> {
    match choose_path(g) {
        // The NHWC depthwise kernel reads weights transposed to [r][s][c].
        Conv2dPath::Depthwise => Ok(if g.params().layout == TensorLayout::Nhwc { g.weight_len() } else { 0 }),
        _ => {
            let (m, n, k) = g.gemm_dims();
            gemm_scratch_len(kernel, blocking, m, n, k, workers)
        }
    }
}

/// `output = act(conv2d(input, weight) + bias)` with `kernel`, `blocking`, `exec`'s workers and
/// caller scratch of at least [`conv2d_scratch_len`] floats. Validates everything first; on an
/// error nothing has been written.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_with(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    kernel: &Kernel,
    blocking: &Blocking,
    exec: &(dyn Executor + Sync),
    scratch: &mut [f32],
) -> Result<()> {
    g.check_buffers(input.len(), weight.len(), None, output.len())?;
    check_epilogue(g, epi)?;
    if blocking.mc == 0 || blocking.kc == 0 || blocking.nc == 0 {
        return Err(Error::Zero { param: Param::Tile });
    }
    let exec = &Pinned::new(exec)?;
    let required = conv2d_scratch_len(g, kernel, blocking, exec.workers())?;
    if scratch.len() < required {
        return Err(Error::TooSmall { param: Param::Scratch, required, found: scratch.len() });
    }
    // SAFETY: buffers, epilogue and scratch validated above; a `Kernel` exists only on a CPU that
    // runs its ISA.
    unsafe { conv2d_unchecked(g, input, weight, epi, output, kernel, blocking, exec, scratch) };
    Ok(())
}

/// [`conv2d_with`] without validation.
///
/// # Safety
/// Everything [`conv2d_with`] checks must hold.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv2d_unchecked(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
    kernel: &Kernel,
    blocking: &Blocking,
    exec: &(dyn Executor + Sync),
    scratch: &mut [f32],
) {
    let p = g.params();
    let bias = match epi.bias {
        Bias::Row(b) => Some(b),
        _ => None,
    };
    if choose_path(g) == Conv2dPath::Depthwise {
        // SAFETY: forwarded contract.
        unsafe { depthwise(g, input, weight, bias, epi, output, kernel, exec, scratch) };
        return;
    }
    let (kg, hw, gemm_k) = g.gemm_dims();
    let cg = g.cg();
    let out = output.as_mut_ptr();
    for n in 0..p.n {
        for grp in 0..p.groups {
            let w0 = g.weight_group_offset(grp);
            // Cannot fail: the weight length was validated.
            let Ok(wg) = MatRef::row_major(&weight[w0..w0 + kg * gemm_k], kg, gemm_k) else { return };
            let gb = bias.map(|b| &b[grp * kg..(grp + 1) * kg]);
            let (off, _, _) = g.output_gemm_view(n, grp);
            // SAFETY: off is the output offset of (n, group), inside the validated output.
            let c = unsafe { out.add(off) };
            match p.layout {
                // C (kg x hw) = W (kg x gemm_k) * im2col (gemm_k x hw), rows of C contiguous.
                TensorLayout::Nchw => {
                    let epi = Epilogue { bias: gb.map_or(Bias::None, Bias::Row), activation: epi.activation };
                    if choose_path(g) == Conv2dPath::Pointwise {
                        let x0 = g.input_index(n, grp * cg, 0, 0);
                        let Ok(x) = MatRef::row_major(&input[x0..x0 + cg * hw], cg, hw) else { return };
                        // SAFETY: forwarded contract; C rows are hw apart, contiguous.
                        unsafe { gemm_operands(1.0, &wg, &x, 0.0, c, hw, 1, &epi, kernel, blocking, exec, scratch) };
                    } else {
                        let x = Im2col { g, input, n, group: grp };
                        // SAFETY: as above.
                        unsafe { gemm_operands(1.0, &wg, &x, 0.0, c, hw, 1, &epi, kernel, blocking, exec, scratch) };
                    }
                }
                // C^T (hw x kg) = im2col^T (hw x gemm_k) * W^T (gemm_k x kg), rows of C^T contiguous.
                TensorLayout::Nhwc => {
                    let epi = Epilogue { bias: gb.map_or(Bias::None, Bias::Col), activation: epi.activation };
                    let wt = wg.t();
                    if choose_path(g) == Conv2dPath::Pointwise {
                        let x0 = g.input_index(n, grp * cg, 0, 0);
                        let len = (hw - 1) * p.c + cg;
                        let Ok(x) = MatRef::new(&input[x0..x0 + len], hw, cg, p.c, 1) else { return };
                        // SAFETY: forwarded contract; C^T rows are k apart, contiguous.
                        unsafe { gemm_operands(1.0, &x, &wt, 0.0, c, p.k, 1, &epi, kernel, blocking, exec, scratch) };
                    } else {
                        let x = Im2colT(Im2col { g, input, n, group: grp });
                        // SAFETY: as above.
                        unsafe { gemm_operands(1.0, &x, &wt, 0.0, c, p.k, 1, &epi, kernel, blocking, exec, scratch) };
                    }
                }
            }
        }
    }
}

/// The depthwise path: items split evenly over the workers.
///
/// # Safety
/// As [`conv2d_unchecked`], for a depthwise geometry.
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epi: &Epilogue<'_>,
    output: &mut [f32],
    kernel: &Kernel,
    exec: &(dyn Executor + Sync),
    scratch: &mut [f32],
) {
    let p = g.params();
    let (weights, items) = match p.layout {
        TensorLayout::Nchw => (weight, p.n * p.c),
        TensorLayout::Nhwc => {
            // [c][r][s] -> [r][s][c], so the channel vectors are contiguous.
            let rs = p.r * p.s;
            for c in 0..p.c {
                for t in 0..rs {
                    scratch[t * p.c + c] = weight[c * rs + t];
                }
            }
            (&scratch[..weight.len()], p.n * g.ho())
        }
    };
    // The kernel is geometry-free: it gets the windows as axes and the tensors as strides, each
    // stride the geometry's own index of a unit step.
    let unit = |index: &dyn Fn(usize, usize, usize, usize) -> usize| {
        [index(1, 0, 0, 0), index(0, 1, 0, 0), index(0, 0, 1, 0), index(0, 0, 0, 1)]
    };
    let template = DepthwiseArgs {
        channels: p.c,
        y: Axis { input: p.h, output: g.ho(), taps: p.r, stride: p.stride[0], dilation: p.dilation[0], pad: p.pad.top },
        x: Axis {
            input: p.w,
            output: g.wo(),
            taps: p.s,
            stride: p.stride[1],
            dilation: p.dilation[1],
            pad: p.pad.left,
        },
        layout: p.layout,
        input_strides: unit(&|n, c, y, x| g.input_index(n, c, y, x)),
        output_strides: unit(&|n, c, y, x| g.output_index(n, c, y, x)),
        input: input.as_ptr(),
        weight: weights.as_ptr(),
        bias: bias.map_or(core::ptr::null(), |b| b.as_ptr()),
        act: epi.activation,
        output: output.as_mut_ptr(),
        items: 0..0,
    };
    let template = SharedArgs(template);
    let workers = exec.workers().max(1);
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let range: Range<usize> = items * w / workers..items * (w + 1) / workers;
        let args = template.with_items(range);
        // SAFETY: tensors validated by the caller; workers write disjoint items (whole planes or
        // whole output rows); the CPU supports the kernel's ISA.
        unsafe { (kernel.depthwise.run)(&args) };
    });
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

/// Copies `len` floats. The runs of a panel are short (at most nr floats), so the copy is
/// inlined in 8-float chunks rather than a call into libc per run.
///
/// # Safety
/// `src` readable and `dst` writable for `len` floats, not overlapping.
#[inline(always)]
unsafe fn copy(src: *const f32, dst: *mut f32, len: usize) {
    let mut t = 0;
    // SAFETY: every access is below len.
    unsafe {
        while t + 8 <= len {
            dst.add(t).cast::<[f32; 8]>().write_unaligned(src.add(t).cast::<[f32; 8]>().read_unaligned());
            t += 8;
        }
        while t < len {
            *dst.add(t) = *src.add(t);
            t += 1;
        }
    }
}

/// Zeroes `len` floats (see [`copy`] for why not `write_bytes`).
///
/// # Safety
/// `dst` writable for `len` floats.
#[inline(always)]
unsafe fn zero(dst: *mut f32, len: usize) {
    let mut t = 0;
    // SAFETY: every access is below len.
    unsafe {
        while t + 8 <= len {
            dst.add(t).cast::<[f32; 8]>().write_unaligned([0.0; 8]);
            t += 8;
        }
        while t < len {
            *dst.add(t) = 0.0;
            t += 1;
        }
    }
}

/// The fused packing's view of the im2col matrix, exposed for tests and fuzzing: packs columns
/// `cols` (output pixels) of reduction rows `rows` of image `image`, group `group` as B panels of
/// width `nr` into `dst` (`ceil(cols.len()/nr) * nr * rows.len()` floats), exactly as the implicit
/// GEMM does. The result must equal the explicit [`crate::conv::im2col::im2col`] rearranged into
/// panels.
#[allow(clippy::too_many_arguments)]
pub fn pack_im2col_panels(
    g: &Conv2d,
    input: &[f32],
    image: usize,
    group: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    nr: usize,
    dst: &mut [f32],
) -> Result<()> {
    let p = g.params();
    let (_, pixels, gemm_k) = g.gemm_dims();
    if input.len() != g.input_len() {
        return Err(Error::Mismatch { param: Param::Input, expected: g.input_len(), found: input.len() });
    }
    if image >= p.n
        || group >= p.groups
        || rows.start > rows.end
        || rows.end > gemm_k
        || cols.start > cols.end
        || cols.end > pixels
    {
        return Err(Error::TooSmall {
            param: Param::Tile,
            required: rows.end.max(cols.end),
            found: gemm_k.min(pixels),
        });
    }
    if nr == 0 {
        return Err(Error::Zero { param: Param::Tile });
    }
    let panels = cols.len().div_ceil(nr);
    let need = panels
        .checked_mul(nr)
        .and_then(|x| x.checked_mul(rows.len()))
        .ok_or(Error::Overflow { param: Param::Scratch })?;
    if dst.len() < need {
        return Err(Error::TooSmall { param: Param::Scratch, required: need, found: dst.len() });
    }
    if rows.is_empty() || cols.is_empty() {
        return Ok(());
    }
    let x = Im2col { g, input, n: image, group };
    // SAFETY: the block is inside the matrix and dst holds every panel, both checked above.
    unsafe {
        x.pack_b(
            Block { row: rows.start, col: cols.start, rows: rows.len(), cols: cols.len() },
            nr,
            0..panels,
            dst.as_mut_ptr(),
        )
    };
    Ok(())
}

/// The input of image `n`, group `group`, seen as the `gemm_k x (ho*wo)` im2col matrix.
struct Im2col<'a> {
    g: &'a Conv2d,
    input: &'a [f32],
    n: usize,
    group: usize,
}

impl Im2col<'_> {
    /// Element `(row, col)`: reduction row `row` (tap `(c, r, s)`), output pixel `col`.
    #[inline]
    fn at(&self, row: usize, col: usize) -> f32 {
        let g = self.g;
        let (c, r, s) = g.reduction_tap(row);
        let (oy, ox) = (col / g.wo(), col % g.wo());
        match (g.input_y(oy, r), g.input_x(ox, s)) {
            (Some(iy), Some(ix)) => self.input[g.input_index(self.n, self.group * g.cg() + c, iy, ix)],
            _ => 0.0,
        }
    }

    /// Writes `len` pixels starting at output pixel `(oy, ox)` of reduction-row tap `(c, r, s)`
    /// to `dst`. A run of output columns reads a run of one input row: output columns
    /// `[cols.0, cols.1)` (from [`Self::tap_cols`], once per tap: no division here) are inside
    /// the input, the rest is padding. Stride 1 is one copy.
    ///
    /// # Safety
    /// `dst` valid for `len` floats; the pixels inside the matrix.
    #[inline]
    unsafe fn gather_row(
        &self,
        (c, r, s): (usize, usize, usize),
        cols: (usize, usize),
        (mut oy, mut ox): (usize, usize),
        len: usize,
        dst: *mut f32,
    ) {
        let g = self.g;
        let p = g.params();
        let channel = self.group * g.cg() + c;
        // Distance between horizontally adjacent input elements: 1 in NCHW, c in NHWC.
        let xs = g.input_index(0, 0, 0, 1);
        let (sw, shift) = (p.stride[1], s * p.dilation[1]);
        let mut j = 0;
        while j < len {
            let run = (g.wo() - ox).min(len - j);
            // SAFETY: j + run <= len, so every write is inside dst; reads are validated taps.
            unsafe {
                let out = dst.add(j);
                match g.input_y(oy, r) {
                    None => zero(out, run),
                    Some(iy) => {
                        let a = cols.0.clamp(ox, ox + run);
                        let b = cols.1.clamp(a, ox + run);
                        zero(out, a - ox);
                        if b > a {
                            let ix = a * sw + shift - p.pad.left;
                            let src = self.input.as_ptr().add(g.input_index(self.n, channel, iy, ix));
                            if sw * xs == 1 {
                                copy(src, out.add(a - ox), b - a);
                            } else {
                                for t in 0..b - a {
                                    *out.add(a - ox + t) = *src.add(t * sw * xs);
                                }
                            }
                        }
                        zero(out.add(b - ox), ox + run - b);
                    }
                }
            }
            j += run;
            ox = 0;
            oy += 1;
        }
    }

    /// Output columns `[a, b)` whose input column `ox*stride + s*dilation - pad_left` is inside
    /// the row, for kernel column `s`.
    #[inline]
    fn tap_cols(&self, s: usize) -> (usize, usize) {
        let p = self.g.params();
        let (sw, shift) = (p.stride[1], s * p.dilation[1]);
        let a = p.pad.left.saturating_sub(shift).div_ceil(sw).min(self.g.wo());
        let b = (p.w + p.pad.left).saturating_sub(shift).div_ceil(sw).clamp(a, self.g.wo());
        (a, b)
    }
}

// SAFETY: packing reads validated taps of the input only and writes the documented extents.
unsafe impl Operand for Im2col<'_> {
    fn rows(&self) -> usize {
        self.g.gemm_dims().2
    }
    fn cols(&self) -> usize {
        self.g.gemm_dims().1
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        let Block { row, col, rows: mc, cols: kc } = blk;
        let mut out = dst;
        for i0 in (0..mc).step_by(mr) {
            for q in 0..kc {
                for i in 0..mr {
                    let v = if i0 + i < mc { self.at(row + i0 + i, col + q) } else { 0.0 };
                    // SAFETY: inside the documented extent.
                    unsafe { *out.add(i) = v };
                }
                // SAFETY: as above.
                out = unsafe { out.add(mr) };
            }
        }
    }
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: Range<usize>, dst: *mut f32) {
        let Block { row, col, rows: kc, cols: nc } = blk;
        // Divisions hoisted out of the per-panel work: pixel coordinates once per panel (in
        // chunks), the valid column range once per tap.
        const CHUNK: usize = 16;
        let wo = self.g.wo();
        let mut first = panels.start;
        while first < panels.end {
            let last = (first + CHUNK).min(panels.end);
            let mut starts = [(0usize, 0usize); CHUNK];
            for (slot, panel) in starts.iter_mut().zip(first..last) {
                let q = col + panel * nr;
                *slot = (q / wo, q % wo);
            }
            let mut tap = self.g.reduction_tap(row);
            for q in 0..kc {
                let cols = self.tap_cols(tap.2);
                for (i, panel) in (first..last).enumerate() {
                    let len = nr.min(nc - panel * nr);
                    // SAFETY: panel `panel`, group `q` is inside the documented extent.
                    unsafe {
                        let out = dst.add((panel * kc + q) * nr);
                        self.gather_row(tap, cols, starts[i], len, out);
                        zero(out.add(len), nr - len);
                    }
                }
                tap = self.g.next_tap(tap);
            }
            first = last;
        }
    }
}

/// The transposed im2col, `(ho*wo) x gemm_k`: the A operand of the NHWC formulation.
struct Im2colT<'a>(Im2col<'a>);

// SAFETY: as for `Im2col`.
unsafe impl Operand for Im2colT<'_> {
    fn rows(&self) -> usize {
        self.0.cols()
    }
    fn cols(&self) -> usize {
        self.0.rows()
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        let Block { row, col, rows: mc, cols: kc } = blk;
        let x = &self.0;
        let g = x.g;
        let cbase = x.group * g.cg();
        for i0 in (0..mc).step_by(mr) {
            let rows = mr.min(mc - i0);
            // SAFETY: panel i0/mr of the documented extent.
            let panel = unsafe { dst.add(i0 * kc) };
            for i in 0..mr {
                let pix = row + i0 + i;
                let (oy, ox) = if i < rows { (pix / g.wo(), pix % g.wo()) } else { (0, 0) };
                for q in 0..kc {
                    let v = if i < rows {
                        let (c, r, s) = g.reduction_tap(col + q);
                        match (g.input_y(oy, r), g.input_x(ox, s)) {
                            (Some(iy), Some(ix)) => {
                                // SAFETY: a validated tap of image n.
                                unsafe { *x.input.get_unchecked(g.nhwc_input_index(x.n, cbase + c, iy, ix)) }
                            }
                            _ => 0.0,
                        }
                    } else {
                        0.0
                    };
                    // SAFETY: inside the panel.
                    unsafe { *panel.add(q * mr + i) = v };
                }
            }
        }
    }
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: Range<usize>, dst: *mut f32) {
        let Block { row, col, rows: kc, cols: nc } = blk;
        for panel in panels {
            let j0 = panel * nr;
            for q in 0..kc {
                for j in 0..nr {
                    let v = if j0 + j < nc { self.0.at(col + j0 + j, row + q) } else { 0.0 };
                    // SAFETY: inside the documented extent.
                    unsafe { *dst.add((panel * kc + q) * nr + j) = v };
                }
            }
        }
    }
}
