//! Packing of operand blocks into the micro-panel order the kernels stream through:
//! A into `mr`-row panels (`kc` groups of `mr` values), B into `nr`-column panels (`kc` groups of
//! `nr` values), zero-padded at the edges so every kernel call reads whole panels.
#![allow(unsafe_code)]

use crate::view::MatRef;

/// A block of an operand: `rows x cols` elements from `(row, col)` (`mc x kc` of A, `kc x nc` of
/// B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) row: usize,
    pub(crate) col: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// Packs the `mc x kc` block `blk` of `a` into `dst`
/// (`ceil(mc / mr) * mr * kc` floats).
///
/// # Safety
/// `row + mc <= a.rows()`, `col + kc <= a.cols()`, and `dst` must be valid for writing
/// `ceil(mc / mr) * mr * kc` floats.
pub(crate) unsafe fn pack_a(a: &MatRef<'_>, blk: Block, mr: usize, dst: *mut f32) {
    let Block { row, col, rows: mc, cols: kc } = blk;
    let (rs, cs) = (a.rs(), a.cs());
    let base = a.as_slice().as_ptr();
    let mut out = dst;
    for i0 in (0..mc).step_by(mr) {
        let rows = mr.min(mc - i0);
        for p in 0..kc {
            // SAFETY: (row + i0 + i, col + p) is inside the validated view for i < rows, so the
            // offset is inside its slice; `out` stays within the `dst` extent the caller gave.
            unsafe {
                let src = base.add((row + i0) * rs + (col + p) * cs);
                if rs == 1 && rows == mr {
                    copy_group(src, out, mr);
                } else {
                    for i in 0..rows {
                        *out.add(i) = *src.add(i * rs);
                    }
                    for i in rows..mr {
                        *out.add(i) = 0.0;
                    }
                }
                out = out.add(mr);
            }
        }
    }
}

/// Copies one group of `n` floats into a panel. Four (the portable and Cortex-M4F tiles) as a
/// fixed-size copy, a few loads and stores where a `memcpy` call of a run-time length cost about
/// 30 instructions per group: a fifth of a Cortex-M4F's 32^3 GEMM.
///
/// # Safety
/// `n` floats readable at `src` and writable at `dst`, not overlapping.
#[inline(always)]
unsafe fn copy_group(src: *const f32, dst: *mut f32, n: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if n == 4 {
            dst.cast::<[f32; 4]>().write_unaligned(src.cast::<[f32; 4]>().read_unaligned());
        } else {
            core::ptr::copy_nonoverlapping(src, dst, n);
        }
    }
}

/// Packs nr-panels `panel0..panel1` of the `kc x nc` block `blk` of `b` into
/// `dst`, which points at the start of the whole packed block (panel `j` starts at `j * nr * kc`).
///
/// # Safety
/// `row + kc <= b.rows()`, `col + nc <= b.cols()`, `panel1 <= ceil(nc / nr)`, and `dst` must be
/// valid for writing panels `panel0..panel1` (`nr * kc` floats each).
pub(crate) unsafe fn pack_b(b: &MatRef<'_>, blk: Block, nr: usize, panels: core::ops::Range<usize>, dst: *mut f32) {
    let Block { row, col, rows: kc, cols: nc } = blk;
    let (rs, cs) = (b.rs(), b.cs());
    let base = b.as_slice().as_ptr();
    for panel in panels {
        let j0 = panel * nr;
        let cols = nr.min(nc - j0);
        // SAFETY: as in `pack_a`, with rows and columns swapped; the panel's extent in `dst` is
        // inside what the caller guaranteed.
        unsafe {
            let mut out = dst.add(panel * nr * kc);
            let mut src = base.add(row * rs + (col + j0) * cs);
            if cs == 1 && cols == nr {
                // Whole groups of contiguous columns: the common case, tested once per panel.
                for _ in 0..kc {
                    copy_group(src, out, nr);
                    src = src.wrapping_add(rs);
                    out = out.add(nr);
                }
            } else {
                for _ in 0..kc {
                    for j in 0..cols {
                        *out.add(j) = *src.add(j * cs);
                    }
                    for j in cols..nr {
                        *out.add(j) = 0.0;
                    }
                    src = src.wrapping_add(rs);
                    out = out.add(nr);
                }
            }
        }
    }
}
