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

/// Whether panels of a row-major A or a column-major B are packed by [`transpose`]: on x86_64 and
/// aarch64. The Cortex-M's code size counts more (the blocked loop is 716 bytes of its
/// f32 kernel set); its small GEMMs read A in place and a B transposed rarely.
const TRANSPOSE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Packs the `mc x kc` block `blk` of `a` into `dst`
/// (`ceil(mc / mr) * mr * kc` floats).
///
/// # Safety
/// `row + mc <= a.rows()`, `col + kc <= a.cols()`, and `dst` must be valid for writing
/// `ceil(mc / mr) * mr * kc` floats.
pub(crate) unsafe fn pack_a(a: &MatRef<'_>, blk: Block, mr: usize, dst: *mut f32) {
    let Block { row, col, rows: mc, cols: kc } = blk;
    if kc == 0 {
        // Nothing to pack; and an empty view's slice may be empty, its offsets nowhere.
        return;
    }
    let (rs, cs) = (a.rs(), a.cs());
    let base = a.as_slice().as_ptr();
    let mut out = dst;
    for i0 in (0..mc).step_by(mr) {
        let rows = mr.min(mc - i0);
        if TRANSPOSE && cs < rs {
            // Row-major A (or closer along rows than columns): the panel is a transpose of `rows`
            // runs along the rows.
            // SAFETY: rows row+i0.. hold kc elements from col, cs apart; the panel's kc*mr floats
            // at `out` are inside `dst`.
            unsafe {
                transpose(base.add((row + i0) * rs + col * cs), rs, cs, rows, kc, out, mr);
                out = out.add(kc * mr);
            }
            continue;
        }
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

/// Writes the transpose of `rows` runs of `len` floats (run `i`'s element `p` at
/// `src + i * stride + p * step`) into `dst` as `len` groups of `width` floats
/// (`dst[p * width + i]`), the groups' last `width - rows` floats zero: a row-major A's or a
/// column-major B's panel. In blocks of `RUN` elements of every run, so each block's source
/// lines and destination groups stay in L1: element by element, a column-major B's panel was
/// gathered a line per float (64 x 1024 x 1024 with B transposed, one Zen 4 thread: 43 -> 86
/// GFLOPS). A block is a 64-byte line of each run, and on x86_64 each run's line `PF` floats on
/// is prefetched: a panel's 32 runs are more streams than the hardware prefetchers follow
/// (one Zen 4 thread, B transposed, GFLOPS: 16 x 4096 x 1024 44-46 -> 51, 16 x 4000 x 1000
/// 45-50 -> 54, 64 x 1024 x 1024 85 -> 88; `PF` 128 and 256 gained less). An 8 x 8 transpose in
/// AVX registers instead of the float stores gained nothing: the loads wait on memory.
///
/// # Safety
/// `rows <= width`; the runs readable; `len * width` floats writable at `dst`, not overlapping them.
unsafe fn transpose(src: *const f32, stride: usize, step: usize, rows: usize, len: usize, dst: *mut f32, width: usize) {
    const RUN: usize = 16;
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    const PF: usize = 64;
    // SAFETY: (whole body) reads run i's elements p0..p0+n < len, writes groups p0..p0+n < len.
    unsafe {
        for p0 in (0..len).step_by(RUN) {
            let n = RUN.min(len - p0);
            let out = dst.add(p0 * width);
            for i in 0..rows {
                let from = src.add(i * stride + p0 * step);
                // A hint only: the address may lie past the run (wrapping, never dereferenced).
                #[cfg(all(target_arch = "x86_64", not(miri)))]
                if step == 1 {
                    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<{ _MM_HINT_T0 }>(from.wrapping_add(PF).cast());
                }
                if n == RUN && step == 1 {
                    let v = from.cast::<[f32; RUN]>().read_unaligned();
                    for (q, x) in v.into_iter().enumerate() {
                        *out.add(q * width + i) = x;
                    }
                } else {
                    for q in 0..n {
                        *out.add(q * width + i) = *from.add(q * step);
                    }
                }
            }
            for q in 0..n {
                for i in rows..width {
                    *out.add(q * width + i) = 0.0;
                }
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
    // SAFETY: the caller's contract; `[f32; 4]` is aligned as `f32` is.
    unsafe {
        if n == 4 {
            dst.cast::<[f32; 4]>().write(src.cast::<[f32; 4]>().read());
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
    if kc == 0 {
        // As in `pack_a`.
        return;
    }
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
            if TRANSPOSE && rs < cs {
                // Column-major B (or closer along columns than rows): the panel is a transpose of
                // `cols` runs down the columns.
                transpose(src, cs, rs, cols, kc, out, nr);
            } else if cs == 1 && cols == nr {
                // Whole groups of contiguous columns: the common case, tested once per panel.
                #[cfg(all(target_arch = "arm", sparkle_arm_fpu))]
                if nr == 4 {
                    crate::arch::arm::copy_groups_of_4(src, rs, out, kc);
                    continue;
                }
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
