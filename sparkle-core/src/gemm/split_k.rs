//! GEMMs of few rows on many workers, split along the reduction: worker `w` multiplies a slice of
//! A's columns by the same rows of B (a contiguous band of a row-major B), into its own partial C;
//! a second phase sums the partials in a fixed order and applies `alpha`, `beta`, the bias and the
//! activation.
//!
//! Why: split by columns alone, as larger GEMMs are, sixteen workers over a B of 1024 columns each
//! read 256 bytes of every row, rows 4 KiB apart. Those runs are too short for the prefetchers,
//! and, all at the same offsets within their pages, they fill a sixteenth of the L2's sets, so a
//! worker's 256 KiB share of B did not stay in its 2 MiB L2 from one call to the next. A band of
//! whole rows reads runs of 4 KiB and more (one contiguous run where B's rows are packed tight).
//!
//! The sum of the partials runs in the same order whatever the workers, but in another order
//! than on one worker: results differ from the one-worker path by rounding (within the oracle's
//! tolerance), and are the same from run to run at one worker count.
#![allow(unsafe_code)]

use super::driver::{gemm_rect, planned_workers, OutPtr, Problem, Shared, Workspace};
use crate::arch::write_row;
use crate::epilogue::{Activation, Bias, Epilogue};
use crate::view::MatRef;

/// The fewest rows of B (reduction steps) a worker's band has.
const MIN_BAND: usize = 64;

/// The most rows of C whose reduction is split (1-3 rows of a row-major B take the streamed path
/// of `gemm/small.rs` first, where the kernel set has it, so this covers 4-8). Measured on an H100 host's 16-core Xeon, 16
/// threads, five alternating rounds, medians, GFLOPS columns -> bands: 4 x 1024 x 1024 208 -> 284,
/// 8 x 1024 x 1024 289 -> 398, but 16 rows 407 -> 389, 32 rows 523 -> 415, 64 rows 600 -> 340 (the
/// partials grow with the rows, and more rows reuse each element of B more often); on 8 threads
/// 4 and 8 rows +50-60%.
pub(crate) const MAX_ROWS: usize = 8;

/// Split by columns alone, each worker would take fewer than this many floats of every row of B
/// (1 KiB): only then is the reduction split. (On two Zen 4 threads, bands of rows 2 KiB wide lost
/// 15-20% to the column split: 8 x 1024 x 1024 185-200 -> 162 GFLOPS, 64 x 1024 x 1024 205-210 ->
/// 171.)
const NARROW: usize = 256;

/// The widest piece of a row of B (floats) a worker takes before the columns are split too:
/// bands of whole rows up to 4 KiB (one page), then columns in pieces of at least that.
const ROW_PIECE: usize = 1024;

/// The most floats of partial products (`bands * m * n`): 4 MiB.
pub const PARTIALS_MAX: usize = 1 << 20;

/// How `workers` workers split an `m x n x k` GEMM with a row-major B read in place: `(bands,
/// column pieces)`, or `None` where the reduction is not split (more rows than [`MAX_ROWS`], one
/// worker, columns enough for every worker ([`NARROW`]), too short a reduction, or partials past
/// [`PARTIALS_MAX`]). The driver also requires B's rows to be a multiple of 4 KiB apart.
pub(crate) fn plan(m: usize, n: usize, k: usize, workers: usize) -> Option<(usize, usize)> {
    if workers < 2 || m > MAX_ROWS || m == 0 || n == 0 || n >= NARROW * workers {
        return None;
    }
    let pieces = (n / ROW_PIECE).clamp(1, workers);
    let bands = (workers / pieces).min(k / MIN_BAND);
    let partials = bands.checked_mul(m)?.checked_mul(n)?;
    (bands >= 2 && partials <= PARTIALS_MAX).then_some((bands, pieces))
}

/// Floats of partials [`plan`] asks for `m x n x k` in either orientation (a column-major C runs
/// transposed), for [`super::driver::gemm_scratch_len`].
pub(crate) fn partials_len(m: usize, n: usize, k: usize, workers: usize) -> usize {
    let len = |m: usize, n: usize| plan(m, n, k, workers).map_or(0, |(bands, _)| bands * m * n);
    len(m, n).max(len(n, m))
}

/// A split for one GEMM: [`plan`]'s `bands x pieces`, and the blocking `(mc, kc, nc)` its workers
/// pack with, `per_worker` floats of scratch each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts {
    pub bands: usize,
    pub pieces: usize,
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub per_worker: usize,
}

/// `C <- act(alpha * A * B + beta * C + bias)` in `bands x pieces` parts and a sum.
///
/// # Safety
/// As [`super::driver::gemm_operands`]; `parts` from [`plan`] for these dimensions and `ws.exec`'s
/// workers, with the blocking of [`super::driver::effective`]; B row-major and
/// `ws.kernel.gemm.b_in_place`; `ws.scratch` holds each worker's `per_worker` floats and then
/// `bands * m * n` more.
pub(crate) unsafe fn run(
    parts: Parts,
    (alpha, a, b, beta): (f32, &MatRef<'_>, &MatRef<'_>, f32),
    c: OutPtr,
    epi: &Epilogue<'_>,
    ws: &mut Workspace<'_>,
) {
    let Parts { bands, pieces, mc, kc, nc, per_worker } = parts;
    let (kernel, exec, blocking) = (ws.kernel, ws.exec, ws.blocking);
    let workers = planned_workers(exec).max(1);
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let nr = kernel.gemm.nr;
    let col_panels = n.div_ceil(nr);
    let kc_few = blocking.few_rows_kc(workers, kc);
    let scratch = Shared(ws.scratch.as_mut_ptr());
    // SAFETY: the partials follow the workers' regions inside the scratch (the contract).
    let partials = Shared(unsafe { scratch.ptr().add(workers * per_worker) });
    let band = |i: usize| k * i / bands..k * (i + 1) / bands;
    exec.run(&|w| {
        if w >= bands * pieces {
            return;
        }
        let (i, j) = (w / pieces, w % pieces);
        let rows = band(i);
        let cols = (col_panels * j / pieces * nr)..(col_panels * (j + 1) / pieces * nr).min(n);
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        // The band lies inside A's columns and B's rows; a partial left unwritten would be
        // summed as it stands, so a failure here must not pass silently.
        let (Ok(ai), Ok(bi)) = (a.submatrix(0, rows.start, m, rows.len()), b.submatrix(rows.start, 0, rows.len(), n))
        else {
            unreachable!("a band of the reduction lies inside A and B")
        };
        // SAFETY: partial i is m x n floats inside the partials region.
        let out = OutPtr { ptr: unsafe { partials.ptr().add(i * m * n) }, rs: n, cs: 1 };
        let prob = Problem::new(
            (&ai, &bi, out),
            (1.0, 0.0, Bias::None, Activation::None),
            kernel,
            (mc, kc, nc, kc_few),
            blocking,
        );
        // SAFETY: worker w owns scratch slice w and columns `cols` of partial i (one worker per
        // (band, piece)); the caller's contract covers the rest.
        unsafe { gemm_rect(&prob, 0..m, cols, scratch.ptr().add(w * per_worker), None) };
    });
    // `run` has returned: every partial is complete. Each worker sums a run of columns (whole
    // vectors of 16 but the last), a chunk of a row at a time, partial 0 first.
    let (act, bias) = (epi.activation, epi.bias);
    let out = Shared(c.ptr);
    exec.run(&|w| {
        if w >= workers {
            return;
        }
        let share = |w: usize| if w == workers { n } else { (n * w / workers) & !15 };
        let mut sum = [0.0f32; CHUNK];
        for r in 0..m {
            for c0 in (share(w)..share(w + 1)).step_by(CHUNK) {
                let len = CHUNK.min(share(w + 1) - c0);
                let sum = &mut sum[..len];
                for i in 0..bands {
                    // SAFETY: partials are complete and only read; row r's columns c0..c0+len
                    // of partial i lie inside it.
                    let part = unsafe { core::slice::from_raw_parts(partials.ptr().add(i * m * n + r * n + c0), len) };
                    if i == 0 {
                        sum.copy_from_slice(part);
                    } else {
                        sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
                    }
                }
                let bias = match bias {
                    Bias::None => None,
                    Bias::Row(v) => Some((v[r..].as_ptr(), 0)),
                    Bias::Col(v) => Some((v[c0..].as_ptr(), 1)),
                };
                // SAFETY: row r's columns c0..c0+len of C are valid and this worker's alone; the
                // bias holds a value for the row, or one for each of those columns.
                unsafe { write_row(sum, out.ptr().add(r * c.rs + c0 * c.cs), c.cs, alpha, beta, bias, act) };
            }
        }
    });
}

/// Columns of a row summed at a time.
const CHUNK: usize = 256;

#[cfg(test)]
mod tests {
    // Without the `parallel` feature only the plan's test runs (nothing splits).
    #![cfg_attr(not(feature = "parallel"), allow(unused))]
    extern crate std;
    use super::*;
    use crate::check::{error, tolerance};
    use crate::gemm::driver::{gemm_scratch_len, gemm_with, split_k_parts, Executor};
    use crate::gemm::reference::gemm_reference;
    use crate::view::MatMut;

    /// `n` workers, one after another on this thread.
    struct InTurn(usize);
    // SAFETY: calls `f` once per index in 0..n, in turn, before returning.
    unsafe impl Executor for InTurn {
        fn workers(&self) -> usize {
            self.0
        }
        fn run(&self, f: &(dyn Fn(usize) + Sync)) {
            (0..self.0).for_each(f)
        }
    }

    /// `len` multiples of 1/8 in [-1, 1), from `seed`.
    fn fill(len: usize, seed: u32) -> std::vec::Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 20) % 17) as f32 / 8.0 - 1.0)
            .collect()
    }

    fn view(c: &mut [f32], m: usize, n: usize, col_major: bool) -> MatMut<'_> {
        if col_major { MatMut::col_major(c, m, n) } else { MatMut::row_major(c, m, n) }.unwrap()
    }

    #[test]
    fn the_plan() {
        // Sixteen workers over 1024 columns: sixteen bands of whole rows.
        assert_eq!(plan(8, 1024, 1024, 16), Some((16, 1)));
        // 2048 columns: two pieces of 4 KiB, eight bands.
        assert_eq!(plan(8, 2048, 1024, 16), Some((8, 2)));
        // Split by columns, every worker would take 1 KiB of each row: no bands.
        assert_eq!(plan(8, 4096, 1024, 16), None);
        assert_eq!(plan(8, 511, 1024, 2), Some((2, 1)));
        assert_eq!(plan(8, 512, 1024, 2), None);
        // Bands of at least 64 rows of B.
        assert_eq!(plan(8, 1024, 200, 16), Some((3, 1)));
        assert_eq!(plan(8, 1024, 127, 16), None);
        // Too many rows, one worker, partials past 4 MiB.
        assert_eq!(plan(9, 1024, 1024, 16), None);
        assert_eq!(plan(8, 1024, 1024, 1), None);
        assert_eq!(plan(8, 2048, 4096, 32), Some((16, 2)));
        assert_eq!(plan(8, 1023, 1 << 20, 64), Some((64, 1)));
        assert_eq!(plan(8, 1023, 1 << 20, 256), None);
        assert_eq!(partials_len(8, 1024, 1024, 16), 16 * 8 * 1024);
        assert_eq!(partials_len(1024, 8, 1024, 16), 16 * 8 * 1024);
    }

    /// Bands on 2-5 workers against the oracle: beta (C full of NaN where beta is 0), a bias by
    /// rows and by columns, an activation, ragged pieces, B's rows 4 KiB apart (the case that is
    /// split), and a column-major C (the transposed orientation: C^T = B^T A^T, whose few rows are
    /// C's columns and whose row-major B is A stored by columns). Miri runs two of the cases.
    #[test]
    #[cfg(feature = "parallel")]
    fn bands_match_the_oracle() {
        let kernel = crate::arch::Kernel::best();
        let blocking = crate::gemm::blocking::Blocking::new(16, 48, 64);
        let k = 128;
        let wide = kernel.nr() + 5;
        let (rows, cols) = (fill(wide, 4), fill(wide, 5));
        for (beta, bias, act, col_major) in [
            (0.0, Bias::None, Activation::None, false),
            (0.5, Bias::Row(&rows[..5]), Activation::Relu, false),
            (-1.0, Bias::Col(&cols), Activation::Tanh, false),
            (0.25, Bias::Row(&rows), Activation::None, true),
        ] {
            // Under Miri (slow) three workers, on the first case and the transposed one.
            let counts: &[usize] = if cfg!(miri) { &[3] } else { &[2, 3, 4, 5] };
            if cfg!(miri) && beta != 0.0 && !col_major {
                continue;
            }
            // Row-major C: 5 x wide (more rows than the streamed path takes), B (k x wide) with rows
            // 1024 floats apart. Column-major C: wide x 5, A (wide x k) with columns 1024 floats apart.
            let (m, n) = if col_major { (wide, 5) } else { (5, wide) };
            let (a, b, c0) = if col_major {
                (fill(1024 * (k - 1) + m, 1), fill(k * n, 2), fill(m * n, 3))
            } else {
                (fill(m * k, 1), fill(1024 * (k - 1) + n, 2), fill(m * n, 3))
            };
            let av = if col_major { MatRef::new(&a, m, k, 1, 1024) } else { MatRef::row_major(&a, m, k) }.unwrap();
            let bv = if col_major { MatRef::row_major(&b, k, n) } else { MatRef::new(&b, k, n, 1024, 1) }.unwrap();
            let epi = Epilogue { bias, activation: act };
            let mut want = c0.clone();
            gemm_reference(0.75, av, bv, beta, view(&mut want, m, n, col_major), &epi).unwrap();
            for &workers in counts {
                assert!(plan(5, wide, k, workers).is_some());
                let mut got = if beta == 0.0 { std::vec![f32::NAN; m * n] } else { c0.clone() };
                let len = gemm_scratch_len(kernel, &blocking, m, n, k, workers).unwrap();
                let mut scratch = std::vec![f32::NAN; len];
                let ws = Workspace { kernel, blocking: &blocking, exec: &InTurn(workers), scratch: &mut scratch };
                let (ta, tb) = if col_major { (bv.t(), av.t()) } else { (av, bv) };
                assert!(split_k_parts(&ta, &tb, &ws).is_some(), "{workers} workers: not split");
                gemm_with(0.75, av, bv, beta, view(&mut got, m, n, col_major), &epi, ws).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(error(*g, f64::from(*w)) <= tolerance(k), "{workers} workers, element {i}: {g} vs {w}");
                }
            }
        }
    }

    /// More bands than two and more than one column piece, against the oracle (too large for
    /// Miri): 5 x 2048 x 256 on nine workers (4 bands x 2 pieces), 6 x 300 x 320 on five (5 bands).
    #[test]
    #[cfg(feature = "parallel")]
    #[cfg_attr(miri, ignore)]
    fn many_bands_and_pieces() {
        let kernel = crate::arch::Kernel::best();
        let blocking = crate::gemm::blocking::Blocking::new(16, 48, 256);
        for (m, n, k, workers, rs, want_parts) in [(5, 2048, 256, 9, 2048, (4, 2)), (6, 300, 320, 5, 1024, (5, 1))] {
            assert_eq!(plan(m, n, k, workers), Some(want_parts));
            let (a, b, cols) = (fill(m * k, 7), fill(rs * (k - 1) + n, 8), fill(n, 9));
            let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::new(&b, k, n, rs, 1).unwrap());
            let epi = Epilogue { bias: Bias::Col(&cols), activation: Activation::Relu };
            let mut want = std::vec![0.0f32; m * n];
            gemm_reference(1.0, av, bv, 0.0, MatMut::row_major(&mut want, m, n).unwrap(), &epi).unwrap();
            let mut got = std::vec![f32::NAN; m * n];
            let mut scratch = std::vec![f32::NAN; gemm_scratch_len(kernel, &blocking, m, n, k, workers).unwrap()];
            let ws = Workspace { kernel, blocking: &blocking, exec: &InTurn(workers), scratch: &mut scratch };
            assert!(split_k_parts(&av, &bv, &ws).is_some());
            gemm_with(1.0, av, bv, 0.0, MatMut::row_major(&mut got, m, n).unwrap(), &epi, ws).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(error(*g, f64::from(*w)) <= tolerance(k), "{m}x{n}x{k}, element {i}: {g} vs {w}");
            }
        }
    }
}
