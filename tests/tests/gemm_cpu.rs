//! Every CPU GEMM kernel this machine can run, stamped with the same tests against the f64
//! oracle: edge sizes around mr/nr and kc, transposes and strides, alpha/beta (beta = 0 with C
//! full of NaN), every epilogue, one and two threads, and a proptest.

use proptest::prelude::*;
use sparkle_core::arch::{Isa, Kernel};
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Bias, Epilogue, MatMut, MatRef};
use sparkle_std::cpu::isa::{kernel_for_isa, supported};
use sparkle_std::cpu::Cpu;
use sparkle_tests::{fill, skip};

/// How the operands are laid out in memory.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// A stored as its transpose (BLAS `op(A) = A^T`).
    ta: bool,
    /// B stored as its transpose.
    tb: bool,
    /// C column-major.
    c_col: bool,
    /// Extra padding added to every leading dimension.
    pad: usize,
}

const PLAIN: Layout = Layout { ta: false, tb: false, c_col: false, pad: 0 };

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    act: Activation,
    /// 0 none, 1 per row, 2 per column.
    bias: u8,
    layout: Layout,
    seed: u64,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Self {
        Case { m, n, k, alpha: 1.0, beta: 0.0, act: Activation::None, bias: 0, layout: PLAIN, seed: 7 }
    }
}

/// Runs `case` through `gemm` and the f64 oracle; panics with the case on a mismatch.
fn check(gemm: &Cpu, case: Case) {
    let Case { m, n, k, alpha, beta, act, bias, layout: l, seed } = case;
    // Leading dimensions with padding; element (i, j) at i*rs + j*cs.
    let (a_rs, a_cs) = if l.ta { (1, m + l.pad) } else { (k + l.pad, 1) };
    let (b_rs, b_cs) = if l.tb { (1, k + l.pad) } else { (n + l.pad, 1) };
    let (c_rs, c_cs) = if l.c_col { (1, m + l.pad) } else { (n + l.pad, 1) };
    let len = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    let mut a = vec![0.0; len(m, k, a_rs, a_cs)];
    let mut b = vec![0.0; len(k, n, b_rs, b_cs)];
    let mut c = vec![0.0; len(m, n, c_rs, c_cs)];
    let mut bias_v = vec![0.0; m.max(n)];
    fill(&mut a, seed);
    fill(&mut b, seed + 1);
    fill(&mut c, seed + 2);
    fill(&mut bias_v, seed + 3);
    if beta == 0.0 {
        c.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let c_before = c.clone();
    let av = MatRef::new(&a, m, k, a_rs, a_cs).unwrap();
    let bv = MatRef::new(&b, k, n, b_rs, b_cs).unwrap();
    let bias = match bias {
        0 => Bias::None,
        1 => Bias::Row(&bias_v[..m]),
        _ => Bias::Col(&bias_v[..n]),
    };
    let epi = Epilogue { bias, activation: act };
    let mut want = vec![0.0f64; m * n];
    let c0 = MatRef::new(&c_before, m, n, c_rs, c_cs).unwrap();
    gemm_reference_f64(alpha, av, bv, beta, Some(c0), &epi, &mut want).unwrap();
    gemm.gemm(alpha, av, bv, beta, MatMut::new(&mut c, m, n, c_rs, c_cs).unwrap(), &epi).unwrap();
    let got: Vec<f32> = (0..m * n).map(|x| c[(x / n) * c_rs + (x % n) * c_cs]).collect();
    let (err, at) = max_error(&got, &want);
    assert!(
        err <= tolerance(k),
        "{}: {case:?}: error {err:e} at {at:?} (tolerance {:e})",
        gemm.kernel.id(),
        tolerance(k)
    );
    // Padding between rows/columns of C must be untouched.
    for (idx, (&now, &before)) in c.iter().zip(&c_before).enumerate() {
        let (i, j) = if l.c_col { (idx % c_cs, idx / c_cs) } else { (idx / c_rs, idx % c_rs) };
        if i >= m || j >= n {
            assert!(now.to_bits() == before.to_bits(), "{}: {case:?}: wrote outside C at {idx}", gemm.kernel.id());
        }
    }
}

/// Small blocks so that every loop of the nest runs several times on small problems.
fn small_blocking(k: &Kernel) -> Blocking {
    Blocking::new(2 * k.mr(), 16, 2 * k.nr())
}

/// The kernel for `isa` if this CPU runs it; otherwise a loud skip (a failure when required).
fn kernel(isa: Isa) -> Option<&'static Kernel> {
    let name = isa.name().to_uppercase();
    match kernel_for_isa(isa) {
        Ok(k) if supported(isa) => Some(k),
        _ => {
            skip(&name, &format!("this CPU or build cannot run the {} kernel", isa.name()));
            None
        }
    }
}

/// The set as registered, and the same without its unpacked paths (`Kernel::packed_only`), so
/// that the blocked driver meets the small shapes the register tiles would otherwise take.
fn with_packed(kern: &'static Kernel) -> [&'static Kernel; 2] {
    [kern, Box::leak(Box::new(kern.packed_only()))]
}

/// The GEMM under test with `threads` threads used even on tiny problems.
fn gemm_with_threads(kern: &'static Kernel, threads: usize) -> Cpu {
    Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kern).threads(threads) }
}

/// Rows and columns around the register tiles and the reduction slice, on the default and on
/// small blocking.
fn edge_tiles(kern: &'static Kernel, threads: usize) {
    let g = gemm_with_threads(kern, threads);
    let small = Cpu { blocking: small_blocking(kern), ..g };
    let kc = small.blocking.kc;
    for gemm in [&small, &g] {
        for m in 0..=2 * kern.mr() + 1 {
            for k in [0, 1, kc - 1, kc, kc + 1, 2 * kc + 3] {
                check(gemm, Case::new(m, kern.nr() + 3, k));
            }
        }
        for n in 0..=2 * kern.nr() + 1 {
            for k in [1, kc + 1] {
                check(gemm, Case::new(kern.mr() + 1, n, k));
            }
        }
    }
}

fn edge_sizes(kern: &'static Kernel, threads: usize) {
    for set in with_packed(kern) {
        edge_tiles(set, threads);
    }
    let g = gemm_with_threads(kern, threads);
    // A C of a few row tiles reads a row-major B of any size in place (the driver's
    // `B_IN_PLACE_ROWS`): this B is past the small-B limit (2^15 floats a reduction slice) for
    // every kernel, its reduction more than one slice.
    let kc = g.blocking.kc;
    for m in [kern.mr() + 1, 64] {
        check(&g, Case::new(m, (1 << 15) / kc + 3 * kern.nr() + 5, kc + 37));
    }
    // One row tile over a B in place of at least 2^22 floats streams it in short reduction
    // slices (the driver's `STREAM_KC`): a full tile and one a row short (the streamed path of
    // `gemm/small.rs` takes up to three rows), ragged columns, beta, column and row bias, ReLU.
    let k = 41;
    for (i, m) in [kern.mr() - 1, kern.mr()].into_iter().enumerate() {
        let case = Case::new(m, (1 << 22) / k + 3 * kern.nr() + 5, k);
        let act = if i == 0 { Activation::None } else { Activation::Relu };
        check(&g, Case { beta: 0.5, bias: 2 - i as u8, act, ..case });
    }
}

fn layouts_and_scalars(kern: &'static Kernel, threads: usize) {
    let g = gemm_with_threads(kern, threads);
    let small = Cpu { blocking: small_blocking(kern), ..g };
    let packed = gemm_with_threads(with_packed(kern)[1], threads);
    for gemm in [&small, &g, &packed] {
        for (ta, tb, c_col, pad) in [
            (false, false, false, 0),
            (true, false, false, 3),
            (false, true, false, 1),
            (true, true, true, 0),
            (false, false, true, 5),
        ] {
            for (alpha, beta) in [(1.0, 0.0), (-0.5, 0.0), (1.0, 1.0), (0.75, -1.25)] {
                let layout = Layout { ta, tb, c_col, pad };
                let (m, n, k) = (3 * kern.mr() + 1, 2 * kern.nr() + 3, 37);
                check(gemm, Case { alpha, beta, layout, ..Case::new(m, n, k) });
            }
        }
    }
}

/// One to eight rows and a few more, the streamed path (`gemm/small.rs`, on the kernel sets that
/// have it, up to three rows with B row-major and 24 transposed; the blocked driver beyond and on
/// the others):
/// B row-major (A either way) and B transposed (A row-major or not), C row-major and column-major
/// (computed transposed), widths around the vector and a block of C's columns, reductions around
/// the four-row pass and the vector, alpha, beta, bias and activation.
fn few_rows(kern: &'static Kernel, threads: usize) {
    let g = gemm_with_threads(kern, threads);
    // 9-24 rows transposed: passes of up to eight rows over blocks of B^T's rows.
    for m in (1..=8).chain([9, 13, 24]) {
        for (n, k) in [(1, 1), (15, 3), (16, 4), (17, 5), (33, 16), (1030, 9), (2100, 37), (40, 1023)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (i, act) in [Activation::None, Activation::Relu].into_iter().enumerate() {
                    let layout = Layout { ta, tb, pad: i, ..PLAIN };
                    let beta = if i == 0 { 0.0 } else { 0.5 };
                    let case = Case { alpha: 1.5, beta, act, bias: ((m + i) % 3) as u8, layout, ..Case::new(m, n, k) };
                    check(&g, case);
                    // A column-major C of `m` columns: computed transposed, its `m` the few rows.
                    let layout = Layout { c_col: true, ..layout };
                    check(&g, Case { layout, ..Case::new(n, m, k) });
                }
            }
        }
    }
}

/// Few rows over a B in place whose rows are 4 KiB apart, with their own reduction slice
/// ([`Blocking::kc_few_rows`], which sparkle-std measures per CPU), unlike `kc` and unlike each
/// other on one worker and on two: ragged last slices, an edge panel of B (packed in the few-row
/// slice), 4-64 rows (past the streamed forms), alpha, beta, bias and ReLU. B of other strides
/// (no padding) and B^T take `kc`: the same results.
fn few_rows_own_slice(kern: &'static Kernel, threads: usize) {
    let blocking = Blocking { kc_few_rows: [8, 24], ..Blocking::new(4 * kern.mr(), 64, 4 * kern.nr()) };
    let g = Cpu { blocking, ..gemm_with_threads(kern, threads) };
    for m in [4, 13, 40, 64] {
        for (n, k) in [(2 * kern.nr() + 3, 100), (kern.nr(), 7), (5 * kern.nr(), 200), (1024, 70)] {
            for (tb, pad) in [(false, 1024 - n), (false, 0), (true, 0)] {
                let layout = Layout { tb, pad, ..PLAIN };
                let case = Case {
                    alpha: 1.5,
                    beta: 0.5,
                    act: Activation::Relu,
                    bias: (m % 3) as u8,
                    layout,
                    ..Case::new(m, n, k)
                };
                check(&g, case);
            }
        }
    }
}

fn epilogues(kern: &'static Kernel, threads: usize) {
    for set in with_packed(kern) {
        epilogues_of(set, threads);
    }
}

fn epilogues_of(kern: &'static Kernel, threads: usize) {
    let g = Cpu { blocking: small_blocking(kern), ..gemm_with_threads(kern, threads) };
    for act in Activation::ALL {
        for bias in 0..3 {
            for c_col in [false, true] {
                for beta in [0.0, 0.5] {
                    let layout = Layout { c_col, ..PLAIN };
                    // Sizes with both full and edge tiles, several kc blocks.
                    let case =
                        Case { act, bias, beta, layout, alpha: 1.5, ..Case::new(2 * kern.mr() + 3, kern.nr() + 5, 40) };
                    check(&g, case);
                }
            }
        }
    }
}

/// Small row-major problems, which the sets with register tiles run straight from A and B
/// (`gemm::small::tiles_fit`, at least 4 rows): every row count up to three of the largest tiles
/// and two more (the last tile of each strip moved up over rows done, or C shorter than a tile),
/// widths around one and two vectors and a strip (masked last vectors; a last strip of at most
/// half a vector in the narrower vectors, alone or after a whole vector), reductions of 0 to 256,
/// padded rows, alpha, beta (C read under the masks), both biases and activations (scalar ones
/// among them), a column-major C, deeper reductions, more workers, a B whose rows are 4 KiB
/// apart, and the blocked driver on the same cases.
fn register_tiles(kern: &'static Kernel, threads: usize) {
    for set in with_packed(kern) {
        let g = gemm_with_threads(set, threads);
        for m in 4..=3 * 12 + 2 {
            for (i, n) in [1, 4, 5, 8, 9, 15, 16, 17, 20, 24, 25, 31, 32, 33, 40, 47, 48, 49, 56, 64, 65, 79]
                .into_iter()
                .enumerate()
            {
                let k = [0, 1, 7, 33, 256][(m + i) % 5];
                let pad = (m + i) % 3;
                let beta = if (m + i) % 2 == 0 { 0.0 } else { 0.75 };
                let act = Activation::ALL[(m * 7 + i) % Activation::ALL.len()];
                let layout = Layout { pad, ..PLAIN };
                let case = Case { alpha: 1.25, beta, act, bias: ((m + 2 * i) % 3) as u8, layout, ..Case::new(m, n, k) };
                check(&g, Case { seed: (m * 100 + i) as u64, ..case });
            }
        }
        // A column-major C (computed transposed: the biases change sides), bias and activation;
        // reductions of 257-512 (past AVX-512's default slice); three and five workers (uneven
        // row bands).
        for (i, (m, n, k)) in [(37, 45, 300), (20, 70, 512), (9, 33, 257), (62, 17, 40)].into_iter().enumerate() {
            for c_col in [false, true] {
                let layout = Layout { c_col, ..PLAIN };
                let case =
                    Case { beta: 0.5, act: Activation::Relu6, bias: 1 + (i % 2) as u8, layout, ..Case::new(m, n, k) };
                check(&g, case);
                check(&gemm_with_threads(set, 3 + 2 * (i % 2)), case);
            }
        }
        // B's rows 4 KiB apart: register tiles up to a reduction of 256, packed past it.
        for k in [200, 256, 257, 300] {
            let n = 40;
            check(&g, Case { beta: 1.0, layout: Layout { pad: 1024 - n, ..PLAIN }, ..Case::new(16, n, k) });
        }
    }
}

fn errors_not_panics(kern: &'static Kernel) {
    let g = Cpu::with_kernel(kern);
    let a = [0.0f32; 6];
    let mut c = [0.0f32; 4];
    let av = MatRef::row_major(&a, 2, 3).unwrap();
    assert!(g.gemm(1.0, av, av, 0.0, MatMut::row_major(&mut c, 2, 2).unwrap(), &Epilogue::NONE).is_err());
    let bv = MatRef::row_major(&a, 3, 2).unwrap();
    assert!(g.gemm(f32::NAN, av, bv, 0.0, MatMut::row_major(&mut c, 2, 2).unwrap(), &Epilogue::NONE).is_err());
    let short = [0.0f32; 1];
    let epi = Epilogue::NONE.with_bias(&short);
    assert!(g.gemm(1.0, av, bv, 0.0, MatMut::row_major(&mut c, 2, 2).unwrap(), &epi).is_err());
}

/// More workers than this machine has cores, so the driver splits C on 2-D grids
/// (`gemm::driver::Split`; a matrix B is never shared, the conv tests cover that): tall and wide
/// shapes, several reduction slices and column blocks per worker (small blocking), a transposed
/// B, a column-major C (computed transposed), an A whose rows are 4 KiB apart (packed, not read
/// in place), bias and beta.
fn many_workers(kern: &'static Kernel) {
    let shapes = [(301, 20, 300), (40, 301, 77), (200, 45, 530), (96, 40, 1024), (13, 5, 9)];
    for threads in [3, 5, 16] {
        for small in [false, true] {
            let mut g = gemm_with_threads(kern, threads);
            if small {
                g.blocking = small_blocking(kern);
            }
            for (i, &(m, n, k)) in shapes.iter().enumerate() {
                let layout = Layout { c_col: i % 2 == 1, tb: i % 3 == 0, ..PLAIN };
                let case =
                    Case { beta: 0.5, bias: 1 + (i % 2) as u8, act: Activation::Relu, layout, ..Case::new(m, n, k) };
                check(&g, Case { seed: i as u64, ..case });
            }
        }
    }
}

/// One test module per registered kernel set, stamped from the core's registration list
/// (`sparkle_core::for_each_kernel!`): a kernel added there is tested here without an edit.
macro_rules! kernel_tests {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {$(
        $(#[$cfg])*
        mod $name {
            use super::*;

            #[test]
            fn edge_sizes_one_thread() {
                if let Some(k) = kernel(Isa::$isa) { edge_sizes(k, 1) }
            }
            #[test]
            fn edge_sizes_two_threads() {
                if let Some(k) = kernel(Isa::$isa) { edge_sizes(k, 2) }
            }
            #[test]
            fn layouts_alpha_beta() {
                if let Some(k) = kernel(Isa::$isa) { layouts_and_scalars(k, 1); layouts_and_scalars(k, 2) }
            }
            #[test]
            fn all_epilogues() {
                if let Some(k) = kernel(Isa::$isa) { epilogues(k, 1); epilogues(k, 2) }
            }
            #[test]
            fn few_rows_streamed() {
                if let Some(k) = kernel(Isa::$isa) { few_rows(k, 1); few_rows(k, 2) }
            }
            #[test]
            fn few_rows_in_their_own_slices() {
                if let Some(k) = kernel(Isa::$isa) { few_rows_own_slice(k, 1); few_rows_own_slice(k, 2) }
            }
            #[test]
            fn small_register_tiles() {
                if let Some(k) = kernel(Isa::$isa) { register_tiles(k, 1); register_tiles(k, 2) }
            }
            #[test]
            fn bad_input_is_an_error() {
                if let Some(k) = kernel(Isa::$isa) { errors_not_panics(k) }
            }
            #[test]
            fn large_square_threads() {
                if let Some(k) = kernel(Isa::$isa) {
                    for threads in [1, 2] {
                        check(&gemm_with_threads(k, threads), Case { beta: 1.0, bias: 1, act: Activation::Relu, ..Case::new(301, 277, 300) });
                    }
                }
            }

            #[test]
            fn grids_of_many_workers() {
                if let Some(k) = kernel(Isa::$isa) { many_workers(k) }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]
                #[test]
                fn matches_oracle(
                    m in 0usize..50, n in 0usize..70, k in 0usize..70,
                    ta: bool, tb: bool, c_col: bool, pad in 0usize..3,
                    alpha in -2.0f32..2.0, beta in prop_oneof![Just(0.0f32), -1.0f32..1.0],
                    act in 0usize..7, bias in 0u8..3, threads in 1usize..6, small: bool, packed: bool,
                    seed: u64,
                ) {
                    let Some(kern) = kernel(Isa::$isa) else { return Ok(()) };
                    let mut g = gemm_with_threads(with_packed(kern)[usize::from(packed)], threads);
                    if small { g.blocking = small_blocking(kern) }
                    let layout = Layout { ta, tb, c_col, pad };
                    check(&g, Case { m, n, k, alpha, beta, act: Activation::ALL[act], bias, layout, seed });
                }
            }
        }
    )*};
}

sparkle_core::for_each_kernel!(kernel_tests);
