//! GEMM: `C <- act(alpha * A * B + beta * C + bias)` on strided views.
//!
//! Transposed operands (BLAS's `op(A)`) are views with swapped strides: pass `a.t()`.
//! `beta == 0` means C is never read, so NaN or garbage in C cannot leak into the result.
//!
//! [`gemm`] is the `no_std` entry point: the best kernel this CPU runs, default blocking, one
//! thread and caller scratch ([`scratch_len`] floats). sparkle-std adds cache-derived blocking,
//! `SPARKLE_ISA` and threads on top of [`driver::gemm_with`].

pub mod blocking;
pub mod driver;
pub(crate) mod pack;
pub mod reference;
pub(crate) mod small;
pub(crate) mod split_k;

use crate::epilogue::Epilogue;
use crate::error::{Error, Param, Result};
use crate::view::{MatMut, MatRef};

/// The sizes of a validated GEMM: C is `m x n`, the reduction has length `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmDims {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
}

impl GemmDims {
    /// `2*m*n*k` as f64.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Checks `A (m x k) * B (k x n) -> C (m x n)`, the epilogue against `m x n`, and that alpha and
/// beta are finite.
pub fn check(
    alpha: f32,
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f32,
    c: &MatMut<'_>,
    epi: &Epilogue<'_>,
) -> Result<GemmDims> {
    let dims = GemmDims { m: a.rows(), n: b.cols(), k: a.cols() };
    if b.rows() != dims.k {
        return Err(Error::Mismatch { param: Param::B, expected: dims.k, found: b.rows() });
    }
    if c.rows() != dims.m {
        return Err(Error::Mismatch { param: Param::COut, expected: dims.m, found: c.rows() });
    }
    if c.cols() != dims.n {
        return Err(Error::Mismatch { param: Param::COut, expected: dims.n, found: c.cols() });
    }
    if !alpha.is_finite() || !beta.is_finite() {
        return Err(Error::Invalid { param: Param::Scalar });
    }
    epi.validate(dims.m, dims.n)?;
    Ok(dims)
}

/// Floats of scratch [`gemm`] needs for an `m x n x k` problem.
pub fn scratch_len(m: usize, n: usize, k: usize) -> Result<usize> {
    let kernel = crate::arch::Kernel::best();
    driver::gemm_scratch_len(kernel, &blocking::Blocking::for_kernel(kernel, blocking::CacheSizes::STATIC), m, n, k, 1)
}

/// `C <- act(alpha * A * B + beta * C + bias)` on one thread with the best kernel this CPU runs
/// ([`crate::arch::Kernel::best`]) and caller scratch of at least [`scratch_len`] floats (read
/// only where the problem is packed, [`driver::GemmPath::Packed`]; elsewhere less is no error).
/// No heap.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epi: &Epilogue<'_>,
    scratch: &mut [f32],
) -> Result<GemmDims> {
    let kernel = crate::arch::Kernel::best();
    let blocking = blocking::Blocking::for_kernel(kernel, blocking::CacheSizes::STATIC);
    driver::gemm_with(
        alpha,
        a,
        b,
        beta,
        c,
        epi,
        driver::Workspace { kernel, blocking: &blocking, exec: &driver::Sequential, scratch },
    )
}

#[cfg(test)]
mod tests {
    //! Small enough for Miri: the statically chosen kernel (the generic one under Miri), packing
    //! and the driver, against the f32 oracle.
    use super::*;
    use crate::check::{error, tolerance};
    use crate::epilogue::{Activation, Bias};

    fn fill(buf: &mut [f32], mut x: u32) {
        for v in buf {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
        }
    }

    #[test]
    fn driver_matches_oracle_on_edges_and_strides() {
        let mut scratch = [0.0f32; 8192];
        // The streamed path (`small.rs`): B row-major up to three rows (1 x 1 x 0), B
        // transposed with A row-major up to 24 (3 x 19 x 6; 11 x 9 x 7 in passes of up to eight
        // rows); with A column-major too (2 x 17 x 5) the blocked driver, B packed by the
        // transpose, and B row-major from four rows (4 x 13 x 6) read in place.
        for (m, n, k, ta, tb) in [
            (11, 9, 7, false, true),
            (5, 7, 3, false, false),
            (9, 6, 11, true, false),
            (1, 1, 0, false, false),
            (4, 13, 6, true, false),
            (3, 19, 6, false, true),
            (2, 17, 5, true, true),
        ] {
            let mut a = [0.0f32; 128];
            let mut b = [0.0f32; 128];
            let mut bias = [0.0f32; 16];
            fill(&mut a, 1);
            fill(&mut b, 2);
            fill(&mut bias, 3);
            let av = if ta { MatRef::col_major(&a[..m * k], m, k) } else { MatRef::row_major(&a[..m * k], m, k) };
            let av = av.unwrap();
            let bv = if tb { MatRef::col_major(&b[..k * n], k, n) } else { MatRef::row_major(&b[..k * n], k, n) };
            let bv = bv.unwrap();
            let epi = Epilogue { bias: Bias::Row(&bias[..m]), activation: Activation::Relu6 };
            let mut got = [f32::NAN; 128];
            let mut want = [0.0f32; 128];
            let len = scratch_len(m, n, k).unwrap();
            gemm(0.5, av, bv, 0.0, MatMut::row_major(&mut got[..m * n], m, n).unwrap(), &epi, &mut scratch[..len])
                .unwrap();
            reference::gemm_reference(0.5, av, bv, 0.0, MatMut::row_major(&mut want[..m * n], m, n).unwrap(), &epi)
                .unwrap();
            for (g, w) in got[..m * n].iter().zip(&want[..m * n]) {
                assert!(error(*g, f64::from(*w)) <= tolerance(k), "{m}x{n}x{k}: {g} vs {w}");
            }
            // Short scratch is an error, not an overrun, wherever the problem packs (the
            // unpacked paths read none).
            let c = MatMut::row_major(&mut got[..m * n], m, n).unwrap();
            if len > 0 && driver::gemm_path(crate::arch::Kernel::best(), &av, &bv, &c) == driver::GemmPath::Packed {
                assert!(gemm(1.0, av, bv, 0.0, c, &Epilogue::NONE, &mut scratch[..len - 1]).is_err());
            }
        }
    }

    /// Few rows over a B read in place, its rows 4 KiB apart, take `Blocking::kc_few_rows` (one
    /// worker's and two workers' slices, unlike `kc` and each other; ragged last slices, a
    /// packed edge panel).
    #[test]
    #[allow(unsafe_code)]
    fn few_rows_take_their_own_reduction_slice() {
        struct Two;
        // SAFETY: two workers, each index once, on this thread.
        unsafe impl driver::Executor for Two {
            fn workers(&self) -> usize {
                2
            }
            fn run(&self, f: &(dyn Fn(usize) + Sync)) {
                f(0);
                f(1);
            }
        }
        let kernel = crate::arch::Kernel::best();
        let blocking = blocking::Blocking { kc_few_rows: [3, 5], ..blocking::Blocking::new(8, 8, 64) };
        // B's rows 4 KiB apart: the case the slice is for.
        let (m, n, k) = (5, kernel.nr() + 3, 11);
        let (mut a, mut b) = ([0.0f32; 55], [0.0f32; 10 * 1024 + 35]);
        fill(&mut a, 4);
        fill(&mut b, 5);
        let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::new(&b, k, n, 1024, 1).unwrap());
        let mut want = [0.0f32; 5 * 35];
        reference::gemm_reference(
            1.0,
            av,
            bv,
            0.0,
            MatMut::row_major(&mut want[..m * n], m, n).unwrap(),
            &Epilogue::NONE,
        )
        .unwrap();
        let mut scratch = [0.0f32; 4096];
        for exec in [&driver::Sequential as &(dyn driver::Executor + Sync), &Two] {
            let len = driver::gemm_scratch_len(kernel, &blocking, m, n, k, exec.workers()).unwrap();
            let mut got = [f32::NAN; 5 * 35];
            let c = MatMut::row_major(&mut got[..m * n], m, n).unwrap();
            let ws = driver::Workspace { kernel, blocking: &blocking, exec, scratch: &mut scratch[..len] };
            driver::gemm_with(1.0, av, bv, 0.0, c, &Epilogue::NONE, ws).unwrap();
            for (g, w) in got[..m * n].iter().zip(&want[..m * n]) {
                assert!(error(*g, f64::from(*w)) <= tolerance(k), "{g} vs {w}");
            }
        }
    }

    /// An executor of three workers: with the `parallel` feature a GEMM large enough to split is
    /// run through it; without, on the calling thread alone, the executor never run (its
    /// planning not compiled). The product matches the oracle either way.
    #[test]
    #[allow(unsafe_code)]
    fn the_executor_runs_only_with_the_parallel_feature() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        struct Three(AtomicUsize);
        // SAFETY: three workers, each index once, on this thread.
        unsafe impl driver::Executor for Three {
            fn workers(&self) -> usize {
                3
            }
            fn run(&self, f: &(dyn Fn(usize) + Sync)) {
                self.0.fetch_add(1, Ordering::Relaxed);
                (0..3).for_each(f);
            }
        }
        let kernel = crate::arch::Kernel::best().packed_only();
        let blocking = blocking::Blocking::new(8, 8, 64);
        let (m, n, k) = (48, 40, 24);
        let (mut a, mut b) = ([0.0f32; 48 * 24], [0.0f32; 24 * 40]);
        fill(&mut a, 6);
        fill(&mut b, 7);
        let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        let mut want = [0.0f32; 48 * 40];
        let c = MatMut::row_major(&mut want, m, n).unwrap();
        reference::gemm_reference(1.0, av, bv, 0.0, c, &Epilogue::NONE).unwrap();
        let exec = Three(AtomicUsize::new(0));
        let len = driver::gemm_scratch_len(&kernel, &blocking, m, n, k, 3).unwrap();
        let mut scratch = [0.0f32; 4096];
        let mut got = [f32::NAN; 48 * 40];
        let c = MatMut::row_major(&mut got, m, n).unwrap();
        let ws = driver::Workspace { kernel: &kernel, blocking: &blocking, exec: &exec, scratch: &mut scratch[..len] };
        driver::gemm_with(1.0, av, bv, 0.0, c, &Epilogue::NONE, ws).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(error(*g, f64::from(*w)) <= tolerance(k), "{g} vs {w}");
        }
        let runs = exec.0.load(Ordering::Relaxed);
        assert_eq!(runs > 0, cfg!(feature = "parallel"), "{runs} runs");
    }

    /// `k == 0` through strided views of empty slices (no element, and offsets from nowhere): C
    /// is `act(beta * C + bias)`, on the streamed path's two forms (3 rows; 13 rows transposed
    /// in passes) and the blocked driver's packing (13 rows, a ragged row panel on every kernel:
    /// B row-major, and B transposed with A column-major).
    #[test]
    fn empty_reductions_through_strided_views() {
        let mut scratch = [0.0f32; 4096];
        let bias = [0.25f32, -0.5, 0.75, -1.0, 0.5, 0.125, -0.25, 1.0, 2.0, -2.0, 0.0, 0.5, -0.75];
        for (m, n, tb, ta) in [
            (3, 5, false, false),
            (3, 5, true, false),
            (13, 6, false, false),
            (13, 6, true, false),
            (13, 6, true, true),
        ] {
            let av = if ta { MatRef::new(&[], m, 0, 1, 5) } else { MatRef::new(&[], m, 0, 5, 1) };
            let av = av.unwrap();
            let bv = if tb { MatRef::new(&[], 0, n, 1, 2) } else { MatRef::new(&[], 0, n, 7, 1) };
            let bv = bv.unwrap();
            let epi = Epilogue { bias: Bias::Row(&bias[..m]), activation: Activation::Relu };
            let mut got = [1.0f32; 78];
            let len = scratch_len(m, n, 0).unwrap();
            let c = MatMut::row_major(&mut got[..m * n], m, n).unwrap();
            gemm(1.0, av, bv, 0.5, c, &epi, &mut scratch[..len]).unwrap();
            for (x, g) in got[..m * n].iter().enumerate() {
                assert_eq!(*g, (0.5 + bias[x / n]).max(0.0), "{m}x{n}, B transposed {tb}, A {ta}, element {x}");
            }
        }
    }

    /// An executor whose `workers()` changes between calls (1, then 8), or that passes indices
    /// past its count: the driver reads the count once and ignores the rest, so nothing is
    /// written outside the scratch (Miri checks this) and the result is still right. Zero
    /// workers is an error, not an unwritten output.
    #[test]
    #[allow(unsafe_code)]
    fn odd_executors_cannot_make_the_driver_write_out_of_bounds() {
        use crate::gemm::driver::{gemm_scratch_len, gemm_with, Executor, Workspace};
        use core::sync::atomic::{AtomicUsize, Ordering};
        struct Fickle(AtomicUsize);
        // SAFETY: (a test of the driver's defence) runs every index of the count it reports
        // first, on this thread, plus indices past it.
        unsafe impl Executor for Fickle {
            fn workers(&self) -> usize {
                if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                    1
                } else {
                    8
                }
            }
            fn run(&self, f: &(dyn Fn(usize) + Sync)) {
                for w in 0..8 {
                    f(w)
                }
            }
        }
        struct NoWorkers;
        // SAFETY: zero workers, no calls.
        unsafe impl Executor for NoWorkers {
            fn workers(&self) -> usize {
                0
            }
            fn run(&self, _: &(dyn Fn(usize) + Sync)) {}
        }
        let kernel = crate::arch::Kernel::generic();
        let blocking = blocking::Blocking::new(8, 8, 8);
        let (m, n, k) = (9, 10, 11);
        let mut a = [0.0f32; 99];
        let mut b = [0.0f32; 110];
        fill(&mut a, 5);
        fill(&mut b, 6);
        let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        let len = gemm_scratch_len(kernel, &blocking, m, n, k, 1).unwrap();
        let mut scratch = [0.0f32; 512];
        let mut got = [f32::NAN; 90];
        let mut want = [0.0f32; 90];
        let exec = Fickle(AtomicUsize::new(0));
        let c = MatMut::row_major(&mut got, m, n).unwrap();
        let ws = Workspace { kernel, blocking: &blocking, exec: &exec, scratch: &mut scratch[..len] };
        gemm_with(1.0, av, bv, 0.0, c, &Epilogue::NONE, ws).unwrap();
        let w = MatMut::row_major(&mut want, m, n).unwrap();
        reference::gemm_reference(1.0, av, bv, 0.0, w, &Epilogue::NONE).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(error(*g, f64::from(*w)) <= tolerance(k), "{g} vs {w}");
        }
        let c = MatMut::row_major(&mut got, m, n).unwrap();
        let ws = Workspace { kernel, blocking: &blocking, exec: &NoWorkers, scratch: &mut scratch };
        let err = gemm_with(1.0, av, bv, 0.0, c, &Epilogue::NONE, ws);
        assert_eq!(err, Err(Error::Zero { param: Param::Workers }));
    }
}
