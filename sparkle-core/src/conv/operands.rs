//! The implicit-GEMM operands of the fast conv2d: the input seen as the im2col matrix (and its
//! transpose, for NHWC) without materialising it. The GEMM driver asks them for packed panels;
//! the gather handles padding, stride and dilation. [`pack_im2col_panels`] exposes the packing
//! for tests and fuzzing.
#![allow(unsafe_code)]

use core::ops::Range;

use crate::conv::Conv2d;
use crate::error::{Error, Param, Result};
use crate::gemm::driver::Operand;
use crate::gemm::pack::Block;
use crate::layout::WeightLayout;

/// Floats per chunk of [`copy`] and [`zero`]: a 32-bit Arm build turns a copy of 32 bytes into a
/// `memcpy` call (about 30 instructions), one of 16 into loads and stores.
const CHUNK_FLOATS: usize = if cfg!(target_arch = "arm") { 4 } else { 8 };

/// Copies `len` floats. The runs of a panel are short (at most nr floats), so the copy is
/// inlined in chunks ([`CHUNK_FLOATS`]) rather than a call into libc per run.
///
/// # Safety
/// `src` readable and `dst` writable for `len` floats, not overlapping.
#[inline(always)]
pub(crate) unsafe fn copy(src: *const f32, dst: *mut f32, len: usize) {
    let mut t = 0;
    // SAFETY: every access is below len.
    unsafe {
        while t + CHUNK_FLOATS <= len {
            dst.add(t)
                .cast::<[f32; CHUNK_FLOATS]>()
                .write_unaligned(src.add(t).cast::<[f32; CHUNK_FLOATS]>().read_unaligned());
            t += CHUNK_FLOATS;
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
pub(crate) unsafe fn zero(dst: *mut f32, len: usize) {
    let mut t = 0;
    // SAFETY: every access is below len.
    unsafe {
        while t + CHUNK_FLOATS <= len {
            dst.add(t).cast::<[f32; CHUNK_FLOATS]>().write_unaligned([0.0; CHUNK_FLOATS]);
            t += CHUNK_FLOATS;
        }
        while t < len {
            *dst.add(t) = 0.0;
            t += 1;
        }
    }
}

/// [`Operand::pack_a`] through an element accessor.
///
/// # Safety
/// As [`Operand::pack_a`]; `get` is defined on the block.
#[inline(always)]
pub(crate) unsafe fn pack_a_by(blk: Block, mr: usize, dst: *mut f32, get: impl Fn(usize, usize) -> f32) {
    let Block { row, col, rows: mc, cols: kc } = blk;
    for i0 in (0..mc).step_by(mr) {
        for q in 0..kc {
            for i in 0..mr {
                let v = if i0 + i < mc { get(row + i0 + i, col + q) } else { 0.0 };
                // SAFETY: inside the documented extent.
                unsafe { *dst.add(i0 * kc + q * mr + i) = v };
            }
        }
    }
}

/// [`Operand::pack_b`] through an element accessor.
///
/// # Safety
/// As [`Operand::pack_b`]; `get` is defined on the block.
#[inline(always)]
pub(crate) unsafe fn pack_b_by(
    blk: Block,
    nr: usize,
    panels: Range<usize>,
    dst: *mut f32,
    get: impl Fn(usize, usize) -> f32,
) {
    let Block { row, col, rows: kc, cols: nc } = blk;
    for panel in panels {
        let j0 = panel * nr;
        for q in 0..kc {
            for j in 0..nr {
                let v = if j0 + j < nc { get(row + q, col + j0 + j) } else { 0.0 };
                // SAFETY: inside the documented extent.
                unsafe { *dst.add((panel * kc + q) * nr + j) = v };
            }
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
pub(crate) struct Im2col<'a> {
    g: &'a Conv2d,
    input: &'a [f32],
    n: usize,
    group: usize,
}

impl<'a> Im2col<'a> {
    /// Image `n`, group `group` of `input` (validated against `g` by the caller).
    pub(crate) fn new(g: &'a Conv2d, input: &'a [f32], n: usize, group: usize) -> Self {
        Self { g, input, n, group }
    }
}

impl Im2col<'_> {
    /// Element `(row, col)`: reduction row `row` (tap `(c, r, s)`), output pixel `col`. Only the
    /// packings no conv path takes call it (the matrix as A, its transpose as B: the trait needs
    /// both sides), so one copy out of line (Cortex-M flash).
    #[inline(never)]
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
    /// A gather with index arithmetic per run of pixels: measured slower per element than a
    /// copy (the 16-thread Xeon's 3x3 layers at 14x14 and 7x7 ran 2.1-2.7x faster with it shared).
    fn pack_cost(&self, _as_b: bool) -> usize {
        4
    }
    fn rows(&self) -> usize {
        self.g.gemm_dims().2
    }
    fn cols(&self) -> usize {
        self.g.gemm_dims().1
    }
    unsafe fn pack_a(&self, blk: Block, mr: usize, dst: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { pack_a_by(blk, mr, dst, |i, q| self.at(i, q)) }
    }
    unsafe fn pack_b(&self, blk: Block, nr: usize, panels: Range<usize>, dst: *mut f32) {
        let Block { row, col, rows: kc, cols: nc } = blk;
        // Divisions hoisted out of the per-panel work: pixel coordinates once per panel (in
        // chunks), the valid column range once per tap.
        const CHUNK: usize = 16;
        // Pixels gathered at once for narrow panels (below), and the room for them.
        const SPAN: usize = 64;
        let mut span = [core::mem::MaybeUninit::<f32>::uninit(); SPAN];
        let wo = self.g.wo();
        let mut first = panels.start;
        while first < panels.end {
            let last = (first + CHUNK).min(panels.end);
            let mut starts = [(0usize, 0usize); CHUNK];
            for (slot, panel) in starts.iter_mut().zip(first..last) {
                let q = col + panel * nr;
                *slot = (q / wo, q % wo);
            }
            // The chunk's pixels, all panels' together (the last panel may be cut short).
            let pixels = nc.min(last * nr) - first * nr;
            let mut tap = self.g.reduction_tap(row);
            for q in 0..kc {
                let cols = self.tap_cols(tap.2);
                if nr <= SPAN / 8 {
                    // Narrow panels (the 4-column tiles of the Cortex-M and the portable kernel):
                    // a gather per panel paid its index arithmetic for 4 pixels (a Cortex-M4's
                    // 3x3 conv at 8 channels, 10.4 instructions per multiply-accumulate); the
                    // chunk's pixels are gathered in spans of whole panels (at most SPAN
                    // pixels), then dealt out to the panels.
                    let step = SPAN / nr * nr;
                    let mut j = 0;
                    while j < pixels {
                        let len = step.min(pixels - j);
                        // SAFETY: `len <= SPAN` floats into `span`; the span's first pixel is
                        // panel `first + j / nr`'s first (j is a multiple of `step`, so of nr).
                        // The gather writes every one of the `len` floats it is given.
                        let gathered = unsafe {
                            self.gather_row(tap, cols, starts[j / nr], len, span.as_mut_ptr().cast());
                            core::slice::from_raw_parts(span.as_ptr().cast::<f32>(), len)
                        };
                        for (t, piece) in gathered.chunks(nr).enumerate() {
                            let panel = first + j / nr + t;
                            // SAFETY: panel `panel`, group `q` is inside the documented extent.
                            unsafe {
                                let out = dst.add((panel * kc + q) * nr);
                                copy(piece.as_ptr(), out, piece.len());
                                zero(out.add(piece.len()), nr - piece.len());
                            }
                        }
                        j += len;
                    }
                    tap = self.g.next_tap(tap);
                    continue;
                }
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
pub(crate) struct Im2colT<'a>(pub(crate) Im2col<'a>);

impl Im2colT<'_> {
    /// Reduction rows `qs` of output pixel `(oy, ox)` with KRSC weights (a tap's channels
    /// consecutive, as an NHWC pixel's are) into `dst`, row `q` at `dst + (q - qs.start) * step`:
    /// one run of channels a tap, copied or zeroed (the tap's validity and input offset once per
    /// run, not per element: a Cortex-M4's strided NHWC conv paid about 60 instructions a float).
    ///
    /// # Safety
    /// `dst` writable at every `(q - qs.start) * step`; `qs` inside the reduction; the image's
    /// input holds every validated tap.
    unsafe fn pixel_runs(&self, (oy, ox): (usize, usize), qs: Range<usize>, dst: *mut f32, step: usize) {
        let x = &self.0;
        let g = x.g;
        let cg = g.cg();
        let (n, cbase) = (x.n, x.group * cg);
        let mut q = qs.start;
        while q < qs.end {
            let (c, r, s) = g.reduction_tap(q);
            let run = (cg - c).min(qs.end - q);
            let out = (q - qs.start) * step;
            match (g.input_y(oy, r), g.input_x(ox, s)) {
                (Some(iy), Some(ix)) => {
                    let at = g.nhwc_input_index(n, cbase + c, iy, ix);
                    let src = &x.input[at..at + run];
                    for (t, &v) in src.iter().enumerate() {
                        // SAFETY: row q + t of the caller's rows.
                        unsafe { *dst.add(out + t * step) = v };
                    }
                }
                _ => {
                    for t in 0..run {
                        // SAFETY: as above.
                        unsafe { *dst.add(out + t * step) = 0.0 };
                    }
                }
            }
            q += run;
        }
    }
}

// SAFETY: as for `Im2col`.
unsafe impl Operand for Im2colT<'_> {
    /// A gather with index arithmetic per run of pixels: measured slower per element than a
    /// copy (the 16-thread Xeon's 3x3 layers at 14x14 and 7x7 ran 2.1-2.7x faster with it shared).
    fn pack_cost(&self, _as_b: bool) -> usize {
        4
    }
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
                if i < rows && g.params().weight_layout == WeightLayout::Krsc {
                    // SAFETY: row `i` of this panel, `kc` groups of `mr`.
                    unsafe { self.pixel_runs((oy, ox), col..col + kc, panel.add(i), mr) };
                    continue;
                }
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
        // SAFETY: forwarded contract.
        unsafe { pack_b_by(blk, nr, panels, dst, |q, j| self.0.at(j, q)) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::conv::geometry::{Conv2dParams, Padding};
    use crate::conv::im2col::{im2col, im2col_len};
    use crate::layout::TensorLayout;

    /// Packs `blk` of `x` as A (`mr`) and as B (`nr`, every panel) and compares each value with
    /// the documented layout over `get`, the explicit matrix.
    fn check_both_sides(x: &dyn Operand, get: &dyn Fn(usize, usize) -> f32, blk: Block, (mr, nr): (usize, usize)) {
        let Block { row, col, rows, cols } = blk;
        let mut a = vec![f32::NAN; rows.div_ceil(mr) * mr * cols];
        // SAFETY: the block is inside the matrix; `a` holds its panels.
        unsafe { x.pack_a(blk, mr, a.as_mut_ptr()) };
        for (at, &v) in a.iter().enumerate() {
            let (i0, q, i) = (at / (mr * cols) * mr, at / mr % cols, at % mr);
            let want = if i0 + i < rows { get(row + i0 + i, col + q) } else { 0.0 };
            assert_eq!(v, want, "A at {at}");
        }
        let panels = cols.div_ceil(nr);
        let mut b = vec![f32::NAN; panels * nr * rows];
        // SAFETY: as above, for every panel.
        unsafe { x.pack_b(blk, nr, 0..panels, b.as_mut_ptr()) };
        for (at, &v) in b.iter().enumerate() {
            let (panel, q, j) = (at / (nr * rows), at / nr % rows, at % nr);
            let want = if panel * nr + j < cols { get(row + q, col + panel * nr + j) } else { 0.0 };
            assert_eq!(v, want, "B at {at}");
        }
    }

    /// Both sides of the im2col matrix (both layouts) and of its transpose (NHWC, where it is
    /// used) against the explicit im2col: the conv paths pack `Im2col` as B and `Im2colT` as A
    /// only, and the other two packings run nowhere else.
    #[test]
    fn im2col_packs_as_a_and_as_b_in_both_layouts() {
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            let g = Conv2dParams::new(1, 4, 5, 6, 4, 3, 3)
                .stride(2, 1)
                .pad(Padding::uniform(1))
                .groups(2)
                .layout(layout)
                .validate()
                .unwrap();
            let input: Vec<f32> = (0..g.input_len()).map(|i| i as f32 + 1.0).collect();
            let (_, pixels, gemm_k) = g.gemm_dims();
            let mut m = vec![0.0; im2col_len(&g).unwrap()];
            im2col(&g, &input, 0, 1, &mut m).unwrap();
            let x = Im2col::new(&g, &input, 0, 1);
            let get = |i: usize, j: usize| m[i * pixels + j];
            check_both_sides(&x, &get, Block { row: 1, col: 2, rows: gemm_k - 1, cols: pixels - 3 }, (4, 3));
            if layout == TensorLayout::Nchw {
                continue;
            }
            // The transpose is the NHWC conv's A (its packing reads NHWC only).
            let t = Im2colT(Im2col::new(&g, &input, 0, 1));
            let get_t = |i: usize, j: usize| m[j * pixels + i];
            check_both_sides(&t, &get_t, Block { row: 2, col: 1, rows: pixels - 3, cols: gemm_k - 1 }, (3, 4));
        }
    }
}
