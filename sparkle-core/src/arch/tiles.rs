//! The register-tile GEMM body for small row-major problems (see `gemm/small.rs`'s `tiles_fit`,
//! which chooses the path, and `gemm/driver.rs`'s `run_small`, which splits the work): compiled
//! per ISA as [`super::GemmKernel`]'s `tiles` (x86_64's AVX2 and AVX-512 sets; the Cortex-M4 has
//! its own, `arm.rs`). Nothing is packed: each tile reads A's rows and B's in place.
#![allow(unsafe_code)]

use crate::arch::small::SmallArgs;
use crate::arch::{act_is_scalar, act_simd, activate, load_upto, store_upto, Simd};
use crate::epilogue::Bias;

/// Small row-major problems (`gemm::small::tiles_fit`) in register tiles read straight from A and
/// B, nothing packed: C's columns in strips of `NV` vectors (the last one narrower, its last
/// vector loaded and stored under a mask), each strip's rows in tiles of `MR`. The rows past the
/// last whole tile run as one tile of `MR`, `MR2` or `MR3` rows, the least that covers them,
/// moved up over rows already done and written only for its new rows; a C of fewer than `MR`
/// rows runs in tiles of `MR2` and `MR3`. The strip of B (`k` rows of `NV` vectors) stays in L1
/// while the tiles pass over it.
///
/// The columns past the last whole vector, where they are at most `H::LANES` (narrower
/// vectors, `H == S` for none), run as a strip of their own in `H`'s vectors: a tail of 4 or 8
/// columns costs one FMA a row and step either way, and where a core runs two of the narrower
/// FMAs in the time of one of the wider (a Zen 4's ymm against its zmm), half the time.
///
/// # Safety
/// As [`crate::arch::small::small_body`], with `cs_a == 1`, `cs_b == 1`, `m >= MR3`, and
/// `MR >= MR2 >= MR3`; the CPU runs `H` too.
#[inline(always)]
pub(crate) unsafe fn tiles_body<
    S: Simd,
    H: Simd,
    const MR: usize,
    const MR2: usize,
    const MR3: usize,
    const NV: usize,
>(
    p: &SmallArgs<'_>,
) {
    // A strip narrower than NV vectors runs as one or NV vectors, the last under a mask, or
    // where its last columns are at most H::LANES, those in a strip of H's vectors. The
    // smallest tile fits in the fewest rows the driver hands a call (`gemm::small::tiles_fit`'s
    // 4, `run_small`'s 4-row bands).
    const { assert!((NV == 1 || NV == 2) && MR >= MR2 && MR2 >= MR3 && MR3 <= 4) };
    // Checked in release too: a tile moved up past row 0 would read and write before A and C.
    assert!(p.m >= MR3, "register tiles over {} rows (at least {MR3})", p.m);
    debug_assert!(p.cs_a == 1 && p.cs_b == 1);
    let lanes = S::LANES;
    let (first, end) = p.cols;
    let mut j = first;
    // SAFETY: each strip's columns lie in this call's (its contract).
    unsafe {
        while j < end {
            let n = (end - j).min(NV * lanes);
            // Columns past the whole vectors that the narrower vectors take alone.
            let narrow = n % lanes <= H::LANES && H::LANES < lanes;
            match (n == NV * lanes, n.cmp(&lanes)) {
                (true, _) => tiles_strip::<S, MR, MR2, MR3, NV, false>(p, j, n),
                (false, core::cmp::Ordering::Equal) => tiles_strip::<S, MR, MR2, MR3, 1, false>(p, j, n),
                (false, core::cmp::Ordering::Less) if narrow => narrow_strip::<H, MR, MR2, MR3>(p, j, n),
                (false, core::cmp::Ordering::Less) => tiles_strip::<S, MR, MR2, MR3, 1, true>(p, j, n),
                // NV == 2 (asserted above): one whole vector, then the rest.
                (false, core::cmp::Ordering::Greater) if narrow => {
                    tiles_strip::<S, MR, MR2, MR3, 1, false>(p, j, lanes);
                    narrow_strip::<H, MR, MR2, MR3>(p, j + lanes, n - lanes);
                }
                (false, core::cmp::Ordering::Greater) => tiles_strip::<S, MR, MR2, MR3, NV, true>(p, j, n),
            }
            j += n;
        }
    }
}

/// Columns `j..j + n`, `n <= H::LANES`, of every row of C in one vector of `H` ([`tiles_body`]).
///
/// # Safety
/// As [`tiles_strip`].
#[inline(always)]
unsafe fn narrow_strip<H: Simd, const MR: usize, const MR2: usize, const MR3: usize>(
    p: &SmallArgs<'_>,
    j: usize,
    n: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        if n == H::LANES {
            tiles_strip::<H, MR, MR2, MR3, 1, false>(p, j, n)
        } else {
            tiles_strip::<H, MR, MR2, MR3, 1, true>(p, j, n)
        }
    }
}

/// Columns `j..j + n` of every row of C ([`tiles_body`]): `n == NV * LANES`, or with `TAIL` the
/// last vector `n - (NV - 1) * LANES` wide.
///
/// # Safety
/// As [`tiles_body`], columns `j..j + n` this call's.
#[inline(always)]
unsafe fn tiles_strip<
    S: Simd,
    const MR: usize,
    const MR2: usize,
    const MR3: usize,
    const NV: usize,
    const TAIL: bool,
>(
    p: &SmallArgs<'_>,
    j: usize,
    n: usize,
) {
    let m = p.m;
    // SAFETY: every tile's rows `i..i + H` lie in `0..m` (the last moved up, `m >= H`).
    unsafe {
        let mut i = 0;
        while i + MR <= m {
            tile::<S, MR, NV, TAIL>(p, i, 0, j, n);
            i += MR;
        }
        let left = m - i;
        if left == 0 {
            return;
        }
        if m >= MR {
            // The least tile that covers the rows left, moved up over rows done.
            if left <= MR3 {
                tile::<S, MR3, NV, TAIL>(p, m - MR3, MR3 - left, j, n);
            } else if left <= MR2 {
                tile::<S, MR2, NV, TAIL>(p, m - MR2, MR2 - left, j, n);
            } else {
                tile::<S, MR, NV, TAIL>(p, m - MR, MR - left, j, n);
            }
        } else if m >= MR2 {
            tile::<S, MR2, NV, TAIL>(p, 0, 0, j, n);
            tiles_left::<S, MR3, NV, TAIL>(p, MR2, j, n);
        } else {
            tiles_left::<S, MR3, NV, TAIL>(p, 0, j, n);
        }
    }
}

/// Rows `from..m` of columns `j..j + n` in tiles of `H` rows, the last moved up.
///
/// # Safety
/// As [`tiles_strip`], `from <= m`, `H <= m`.
#[inline(always)]
unsafe fn tiles_left<S: Simd, const H: usize, const NV: usize, const TAIL: bool>(
    p: &SmallArgs<'_>,
    from: usize,
    j: usize,
    n: usize,
) {
    let mut i = from;
    // SAFETY: rows i..i + H inside 0..m (the last one moved up: m >= H).
    unsafe {
        while i < p.m {
            let start = i.min(p.m - H);
            tile::<S, H, NV, TAIL>(p, start, i - start, j, n);
            i += H;
        }
    }
}

/// One `H x NV` register tile at rows `i0..i0 + H` and columns `j..j + n` of C: `k` rank-1
/// updates from A's rows and B's in place, then `C <- act(alpha * acc + beta * C + bias)` for
/// rows `i0 + skip..` only.
///
/// # Safety
/// As [`tiles_strip`], rows `i0..i0 + H` inside A and C, `skip < H`.
#[inline(always)]
unsafe fn tile<S: Simd, const H: usize, const NV: usize, const TAIL: bool>(
    p: &SmallArgs<'_>,
    i0: usize,
    skip: usize,
    j: usize,
    n: usize,
) {
    let lanes = S::LANES;
    // The last vector's width (the others are whole).
    let last = n - (NV - 1) * lanes;
    let width = |v: usize| if TAIL && v + 1 == NV { last } else { lanes };
    // SAFETY: (whole body) A's rows i0..i0 + H hold k floats, B's k rows hold columns j..j + n,
    // C's rows and the bias the same (the caller's contract); the masked vector reads and writes
    // only its `last` lanes.
    unsafe {
        // Wrapping: with `k == 0` A and B may be empty slices, never read.
        let (a, b) = (p.a.wrapping_add(i0 * p.rs_a), p.b.wrapping_add(j));
        let acc = tile_updates::<S, H, NV, TAIL>(a, p.rs_a, (b, p.rs_b), p.k, last);
        let (alpha, beta) = (S::splat(p.alpha), S::splat(p.beta));
        let act = p.epi.activation;
        // Every row in turn, the skipped ones passed over: an index from `skip` on would keep
        // the accumulators in memory (zeroed there by a call to memset, 13% of 16^3).
        for (i, row) in acc.iter().enumerate() {
            if i < skip {
                continue;
            }
            let crow = p.c.add((i0 + i) * p.rs_c + j);
            for (v, &x) in row.iter().enumerate() {
                let (cp, w) = (crow.add(v * lanes), width(v));
                let mut y = S::mul(x, alpha);
                if p.beta != 0.0 {
                    y = S::fmadd(load_upto::<S>(cp, w), beta, y);
                }
                match p.epi.bias {
                    Bias::None => {}
                    Bias::Row(bias) => y = S::add(y, S::splat(*bias.get_unchecked(i0 + i))),
                    Bias::Col(bias) => y = S::add(y, load_upto::<S>(bias.as_ptr().add(j + v * lanes), w)),
                }
                store_upto::<S>(cp, w, act_simd::<S>(act, y).unwrap_or(y));
            }
        }
        if act_is_scalar(act) {
            activate(p.c.add((i0 + skip) * p.rs_c + j), p.rs_c, 1, H - skip, n, act);
        }
    }
}

/// The `k` rank-1 updates of one [`tile`] from A's rows (`rs_a` apart) and B's (`rs_b` apart)
/// in place, with `TAIL` the last vector `last` wide.
///
/// # Safety
/// A's `H` rows hold `k` floats, B's `k` rows `(NV - 1) * LANES + last` (`NV * LANES` without
/// `TAIL`); the CPU runs `S`.
#[inline(always)]
unsafe fn tile_updates<S: Simd, const H: usize, const NV: usize, const TAIL: bool>(
    a: *const f32,
    rs_a: usize,
    (mut b, rs_b): (*const f32, usize),
    k: usize,
    last: usize,
) -> [[S::V; NV]; H] {
    let lanes = S::LANES;
    // SAFETY: bounds as documented; the masked load reads only its `last` lanes.
    unsafe {
        let mut acc = [[S::zero(); NV]; H];
        for q in 0..k {
            let mut bv = [S::zero(); NV];
            for (v, slot) in bv.iter_mut().enumerate() {
                *slot = if TAIL && v + 1 == NV {
                    S::load_partial(b.add(v * lanes), last)
                } else {
                    S::load(b.add(v * lanes))
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i * rs_a + q));
                for v in 0..NV {
                    row[v] = S::fmadd(ai, bv[v], row[v]);
                }
            }
            // Wrapping: past B's last row it may leave the allocation, never read there.
            b = b.wrapping_add(rs_b);
        }
        // By value, not through a reference (which kept them in memory, as `rank1_updates` found).
        acc
    }
}
