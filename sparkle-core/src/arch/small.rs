//! The streamed GEMM kernels' bodies for a few rows of C (see `gemm/small.rs`, which chooses the
//! path and splits the work): compiled per ISA as [`super::GemmKernel`]'s `small`.
#![allow(unsafe_code)]

use crate::arch::{load_upto, store_upto, Simd};
use crate::epilogue::Epilogue;

/// The most rows of C the streamed path (`gemm/small.rs`) takes with B row-major, and with B
/// transposed. Measured on one Zen 4 core against the blocked driver, GFLOPS at 1024 x 1024 /
/// 4096 x 1024 / 4096 x 4096:
/// - Row-major B (streamed -> blocked): streaming wins at 2-3 rows (2 rows 32-65 / 47 / 20-21 ->
///   28 / 26 / 15); from four rows the blocked driver, which reads B in place from one row tile
///   up, is faster (AVX-512 4 rows 45-50 / 36-44 / 26-28 -> 59 / 46 / 27-28, 6 rows 19-23 /
///   31-40 / 25-27 -> 81 / 55-57 / 33; AVX2 4 rows 41-45 / 42 -> 49-51 / 27, 6 rows 26 at
///   1024 x 1024 -> 73-76).
/// - Transposed: 8 rows stream at 70 / 70 (MKL 47 / 43 beside them). More rows run in passes
///   of up to eight over blocks of B^T kept in L2 ([`dots_passes`]; one pass of nine to sixteen
///   rows, its columns one or two at a time, ran 0.5-1.2x the blocked driver: the compiler no
///   longer keeps every sum in a register). Blocked -> passes: 9 rows 34 -> 90,
///   12 rows 46 -> 80, 16 rows 53 -> 65 / 51 -> 75, 24 rows 65 / 62 -> 75; at 32-64 rows the
///   blocked driver is faster (32 x 4096 x 1024 70 against 61, 64 x 1024 x 1024 89 against 66).
pub(crate) const ROWS_MAX_M: usize = 3;
/// See [`ROWS_MAX_M`].
pub(crate) const DOTS_MAX_M: usize = 24;

/// Rows of B a pass of the row-major form reads together.
const ROWS: usize = 4;

/// Floats of C a block of the row-major form keeps in L1 while every pass over B's rows runs
/// (16 KiB: half a Zen 4's L1, a third of a recent Xeon's; its `m` rows share them, each a
/// whole number of 16-float vectors).
const BLOCK: usize = 4096;

/// One worker's share of a small GEMM: columns `cols` of `C = act(alpha * A * B + beta * C +
/// bias)`, C with unit column stride; a few rows for the streamed forms (`gemm::small::takes`),
/// a small row-major problem (or a band of its rows) for the register tiles
/// (`gemm::small::tiles_fit`, `arch::tiles`).
pub(crate) struct SmallArgs<'a> {
    pub(crate) m: usize,
    pub(crate) k: usize,
    /// A: element `(i, p)` at `a + i * rs_a + p * cs_a`.
    pub(crate) a: *const f32,
    pub(crate) rs_a: usize,
    pub(crate) cs_a: usize,
    /// B: element `(p, j)` at `b + p * rs_b + j * cs_b`.
    pub(crate) b: *const f32,
    pub(crate) rs_b: usize,
    pub(crate) cs_b: usize,
    /// C: element `(i, j)` at `c + i * rs_c + j`.
    pub(crate) c: *mut f32,
    pub(crate) rs_c: usize,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    pub(crate) epi: &'a Epilogue<'a>,
    /// The dot-product form (B^T's rows contiguous, `rs_b == 1`, `cs_a == 1`), not the
    /// row-major one (`cs_b == 1`).
    pub(crate) dots: bool,
    /// This worker's columns of C, `first..end`.
    pub(crate) cols: (usize, usize),
}

/// The streamed GEMM of `p`'s columns on `S`.
///
/// # Safety
/// The CPU runs `S`; `p` describes valid operands as `gemm::small::takes` admits them, every
/// element of C in `p.cols` exclusive to this call; the epilogue validated for C.
#[inline(always)]
pub(crate) unsafe fn small_body<S: Simd>(p: &SmallArgs<'_>) {
    // SAFETY: forwarded contract.
    unsafe {
        debug_assert!(p.m <= if p.dots { DOTS_MAX_M } else { ROWS_MAX_M });
        match (!p.dots, p.m) {
            (true, 1) => rows_form::<S, 1>(p),
            (true, 2) => rows_form::<S, 2>(p),
            (true, _) => rows_form::<S, 3>(p),
            (false, m) if m <= DOTS_PASS => dots_pass::<S>(p, 0),
            (false, _) => dots_passes::<S>(p),
        }
    }
}

/// The most rows one pass of the transposed form computes ([`dots_columns`]).
const DOTS_PASS: usize = 8;

/// Floats of B^T (its rows, C's columns) a block of [`dots_passes`] keeps in L2 for every pass
/// over it: 256 KiB, a quarter of a Zen 4's L2.
const DOTS_BLOCK: usize = 1 << 16;

/// Transposed, more than [`DOTS_PASS`] rows: blocks of B^T's rows ([`DOTS_BLOCK`] floats) each
/// read from memory once and again from L2 by passes of up to eight of C's rows, the rows split
/// evenly.
///
/// # Safety
/// As [`small_body`], `rs_b == 1`, `cs_a == 1`.
#[inline(always)]
unsafe fn dots_passes<S: Simd>(p: &SmallArgs<'_>) {
    let (first, end) = p.cols;
    let block = (DOTS_BLOCK / p.k.max(1)).max(DOTS_PASS) & !(DOTS_PASS - 1);
    let passes = p.m.div_ceil(DOTS_PASS);
    // SAFETY: each pass's rows and columns lie inside the caller's (its contract).
    unsafe {
        for j0 in (first..end).step_by(block) {
            for g in 0..passes {
                let (i0, i1) = (p.m * g / passes, p.m * (g + 1) / passes);
                let pass = SmallArgs {
                    m: i1 - i0,
                    a: p.a.wrapping_add(i0 * p.rs_a),
                    c: p.c.add(i0 * p.rs_c),
                    cols: (j0, end.min(j0 + block)),
                    ..*p
                };
                dots_pass::<S>(&pass, i0);
            }
        }
    }
}

/// One pass of the transposed form over `p.m <= DOTS_PASS` rows, the first of them C's row `row0`
/// (for the bias).
///
/// # Safety
/// As [`small_body`], `rs_b == 1`, `cs_a == 1`.
#[inline(always)]
unsafe fn dots_pass<S: Simd>(p: &SmallArgs<'_>, row0: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match p.m {
            1 => dots_form::<S, 1, { dots_columns(1) }>(p, row0),
            2 => dots_form::<S, 2, { dots_columns(2) }>(p, row0),
            3 => dots_form::<S, 3, { dots_columns(3) }>(p, row0),
            4 => dots_form::<S, 4, { dots_columns(4) }>(p, row0),
            5 => dots_form::<S, 5, { dots_columns(5) }>(p, row0),
            6 => dots_form::<S, 6, { dots_columns(6) }>(p, row0),
            7 => dots_form::<S, 7, { dots_columns(7) }>(p, row0),
            _ => dots_form::<S, 8, { dots_columns(8) }>(p, row0),
        }
    }
}

/// Row-major B: C's rows in blocks of [`BLOCK`] floats (`BLOCK / M` columns), each block updated
/// by [`ROWS`] rows of B at a time.
///
/// # Safety
/// As [`small_body`], `m == M`, `cs_b == 1`.
#[inline(always)]
unsafe fn rows_form<S: Simd, const M: usize>(p: &SmallArgs<'_>) {
    let lanes = S::LANES;
    let (first, end) = p.cols;
    // SAFETY: (whole body) A's elements (i < M, q < k), B's rows (q < k) over columns
    // first..end and C's rows over the same are inside the operands (the caller's contract).
    unsafe {
        let block = (BLOCK / M) & !15;
        for j0 in (first..end).step_by(block) {
            let j1 = end.min(j0 + block);
            for i in 0..M {
                let row = p.c.add(i * p.rs_c);
                for j in j0..j1 {
                    *row.add(j) = if p.beta == 0.0 { 0.0 } else { p.beta * *row.add(j) };
                }
            }
            for p0 in (0..p.k).step_by(ROWS) {
                let rows = ROWS.min(p.k - p0);
                // alpha * A[i, p0 + q], zero past the reduction's end.
                let mut coef = [[S::zero(); ROWS]; M];
                let mut brow = [p.b; ROWS];
                for q in 0..rows {
                    for (i, row) in coef.iter_mut().enumerate() {
                        row[q] = S::splat(p.alpha * *p.a.add(i * p.rs_a + (p0 + q) * p.cs_a));
                    }
                    brow[q] = p.b.add((p0 + q) * p.rs_b);
                }
                let mut j = j0;
                while j < j1 {
                    let len = lanes.min(j1 - j);
                    let mut bv = [S::zero(); ROWS];
                    for q in 0..rows {
                        bv[q] = load_upto::<S>(brow[q].add(j), len);
                    }
                    for (i, coef) in coef.iter().enumerate() {
                        let cp = p.c.add(i * p.rs_c + j);
                        let mut v = load_upto::<S>(cp, len);
                        for q in 0..ROWS {
                            v = S::fmadd(coef[q], bv[q], v);
                        }
                        store_upto::<S>(cp, len, v);
                    }
                    j += len;
                }
            }
            if *p.epi != Epilogue::NONE {
                for i in 0..M {
                    let row = p.c.add(i * p.rs_c);
                    for j in j0..j1 {
                        *row.add(j) = p.epi.apply(i, j, *row.add(j));
                    }
                }
            }
        }
    }
}

/// The columns of C the transposed form computes together for `m` rows: its `m * D` sums, `D`
/// vectors of B^T and one of A in registers, and `D` rows of B^T streamed at once. Measured on
/// one Zen 4 core (AVX-512), B transposed, GFLOPS at 1024 x 1024: `D` = 4 for every `m`, 34 /
/// 39 / 39 / 32 at `m` = 1 / 4 / 6 / 8; these `D`, 37 / 77 / 68-77 / 70. 24 sums (6 x 4, 8 x
/// 3) ran 38-41: the compiler then spills. At one row, 8 columns (more streams) ran a GEMV
/// from memory (1 x 4096 x 4096) at 16.6 against 13.4 and one in L3 at 35 against 37.
const fn dots_columns(m: usize) -> usize {
    match m {
        1 => 8,
        2..=5 => 4,
        6 => 3,
        _ => 2,
    }
}

/// B^T row-major, A row-major: `D` columns of C at a time ([`dots_columns`]), each element a
/// dot product along `k` in vectors (whole vectors, then one partial), reduced across lanes at
/// the end.
///
/// # Safety
/// As [`small_body`], `m == M`, `rs_b == 1`, `cs_a == 1`.
#[inline(always)]
unsafe fn dots_form<S: Simd, const M: usize, const D: usize>(p: &SmallArgs<'_>, row0: usize) {
    let lanes = S::LANES;
    let (first, end) = p.cols;
    // SAFETY: (whole body) A's rows (i < M) and B^T's rows (j in first..end) hold k contiguous
    // floats; C's elements (i < M, j in first..end) are this call's (the caller's contract).
    unsafe {
        for j0 in (first..end).step_by(D) {
            let cols = D.min(end - j0);
            // Past the last column, its row again (read, never stored): the loops stay whole.
            // Wrapping: with `k == 0` B may be an empty slice, its rows nowhere.
            let bt: [*const f32; D] = core::array::from_fn(|d| p.b.wrapping_add((j0 + d.min(cols - 1)) * p.cs_b));
            let mut acc = [[S::zero(); D]; M];
            let mut q = 0;
            // Whole vectors, then one partial: two copies of the step on purpose (one inlined
            // helper for both, taking the sums by reference, ran 8 rows x 1024 x 1024 with B^T
            // at 39-41 GFLOPS against 66 in alternating runs on one Zen 4 core).
            while q + lanes <= p.k {
                let bv: [S::V; D] = core::array::from_fn(|d| S::load(bt[d].add(q)));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = S::load(p.a.add(i * p.rs_a + q));
                    for d in 0..D {
                        acc[d] = S::fmadd(av, bv[d], acc[d]);
                    }
                }
                q += lanes;
            }
            if q < p.k {
                let len = p.k - q;
                let bv: [S::V; D] = core::array::from_fn(|d| load_upto::<S>(bt[d].add(q), len));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = load_upto::<S>(p.a.add(i * p.rs_a + q), len);
                    for d in 0..D {
                        acc[d] = S::fmadd(av, bv[d], acc[d]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                for (d, &v) in acc.iter().enumerate().take(cols) {
                    // At most 16 lanes (`LANES <= 16`).
                    let mut lane = [0.0f32; 16];
                    S::store(lane.as_mut_ptr(), v);
                    let sum: f32 = lane[..lanes].iter().sum();
                    let (j, cp) = (j0 + d, p.c.add(i * p.rs_c + j0 + d));
                    let mut y = p.alpha * sum;
                    if p.beta != 0.0 {
                        y += p.beta * *cp;
                    }
                    *cp = p.epi.apply(row0 + i, j, y);
                }
            }
        }
    }
}
