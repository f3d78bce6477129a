//! Every bf16 GEMM kernel this machine can run, stamped with the same tests against the f64
//! oracle on the same rounded inputs (within the tolerance table's bf16 row): edge sizes around
//! mr/nr and the k-pair, strided and transposed operands, a column-major C, one and three
//! threads, a proptest, and bad input that must be an error with C untouched.

use proptest::prelude::*;
use sparkle_core::arch::bf16::BKernel;
use sparkle_core::arch::Isa;
use sparkle_core::bf16::{bf16, gemm_bf16_reference_f64};
use sparkle_core::check::{max_error, tolerance_for, Backend, DType};
use sparkle_core::{Error, MatMut, MatRef, Param};
use sparkle_std::cpu::Cpu;
use sparkle_tests::bf16::{cpu, kernel};

/// `len` values in [-1, 1) rounded to bf16, from `seed`.
fn values(len: usize, mut seed: u64) -> Vec<bf16> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            bf16::from_f32((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        })
        .collect()
}

/// `m x n x k` with A stored transposed when `ta`, C column-major when `c_col`, `pad` extra
/// elements on every leading dimension.
fn check(cpu: &Cpu, [m, n, k]: [usize; 3], (ta, c_col, pad): (bool, bool, usize), seed: u64) {
    let (lda, ldb, ldc) = (if ta { m } else { k } + pad, n + pad, if c_col { m } else { n } + pad);
    let a_len = if ta { k * lda } else { m * lda };
    let (a, b) = (values(a_len, seed), values(k * ldb, seed ^ 0x9e37));
    let a = if ta { MatRef::new(&a, m, k, 1, lda) } else { MatRef::new(&a, m, k, lda, 1) }.unwrap();
    let b = MatRef::new(&b, k, n, ldb, 1).unwrap();
    let c_len = if c_col { n * ldc } else { m * ldc };
    let (rs, cs) = if c_col { (1, ldc) } else { (ldc, 1) };
    let mut got = vec![f32::NAN; c_len.max(1)];
    cpu.gemm_bf16(&a, &b, MatMut::new(&mut got, m, n, rs, cs).unwrap()).unwrap();
    let mut want = vec![0.0f64; m * n];
    gemm_bf16_reference_f64(&a, &b, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    let got: Vec<f32> = (0..m * n).map(|e| got[(e / n) * rs + (e % n) * cs]).collect();
    let (err, at) = max_error(&got, &want);
    let tol = tolerance_for(Backend::Cpu, DType::Bf16, k);
    assert!(err <= tol, "{} {m}x{n}x{k} ta={ta} c_col={c_col}: error {err} at {at:?} > {tol}", cpu.bkernel.id());
}

fn edge_sizes(k: &'static BKernel, threads: usize) {
    let cpu = cpu(k, threads);
    let (mr, nr) = (k.mr(), k.nr());
    for m in [1, mr - 1, mr, mr + 1, 2 * mr + 3] {
        for n in [1, nr - 1, nr, nr + 1, 3 * nr + 5] {
            for kk in [0, 1, 2, 3, 17, 64] {
                check(&cpu, [m.max(1), n.max(1), kk], (false, false, 0), (m * 1000 + n * 10 + kk) as u64);
            }
        }
    }
}

fn errors_leave_c_untouched(k: &'static BKernel) {
    let cpu = cpu(k, 2);
    let (a, b) = (values(12, 1), values(12, 2));
    let mut c = [7.0f32; 9];
    let a = MatRef::row_major(&a, 3, 4).unwrap();
    let b_wrong = MatRef::row_major(&b, 3, 4).unwrap();
    let err = cpu.gemm_bf16(&a, &b_wrong, MatMut::row_major(&mut c, 3, 3).unwrap()).unwrap_err();
    assert!(matches!(err, sparkle_std::cpu::CpuError::Core(Error::Mismatch { param: Param::B, .. })), "{err:?}");
    let b = MatRef::row_major(&b, 4, 3).unwrap();
    let mut c_wrong = [7.0f32; 8];
    assert!(cpu.gemm_bf16(&a, &b, MatMut::row_major(&mut c_wrong, 4, 2).unwrap()).is_err());
    assert!(c.iter().chain(&c_wrong).all(|&v| v == 7.0));
}

/// One test module per registered bf16 kernel, stamped from the core's registration list
/// (`sparkle_core::for_each_bkernel!`): a kernel added there is tested here without an edit.
macro_rules! bkernel_tests {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {$(
        $(#[$cfg])*
        mod $name {
            use super::*;

            #[test]
            fn edge_sizes_one_thread() {
                if let Some(k) = kernel(Isa::$isa) { edge_sizes(k, 1) }
            }
            #[test]
            fn edge_sizes_three_threads() {
                if let Some(k) = kernel(Isa::$isa) { edge_sizes(k, 3) }
            }
            #[test]
            fn layouts() {
                if let Some(k) = kernel(Isa::$isa) {
                    for (ta, c_col, pad) in [(true, false, 0), (false, true, 3), (true, true, 1)] {
                        check(&cpu(k, 2), [37, 45, 29], (ta, c_col, pad), 5);
                    }
                }
            }
            #[test]
            fn bad_input_is_an_error() {
                if let Some(k) = kernel(Isa::$isa) { errors_leave_c_untouched(k) }
            }
            #[test]
            fn large_threads() {
                if let Some(k) = kernel(Isa::$isa) {
                    for threads in [1, 2] {
                        check(&cpu(k, threads), [301, 277, 300], (false, false, 0), 9);
                    }
                    // k beyond one chunk of 256 pairs (three chunks, the last partial), both
                    // layouts of A.
                    check(&cpu(k, 2), [45, 70, 1100], (false, false, 0), 10);
                    check(&cpu(k, 1), [13, 33, 1301], (true, true, 2), 11);
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]
                #[test]
                fn matches_oracle(
                    m in 1usize..40, n in 1usize..70, k in 0usize..90, ta: bool, c_col: bool, pad in 0usize..3,
                    threads in 1usize..4, seed: u64,
                ) {
                    let Some(kern) = kernel(Isa::$isa) else { return Ok(()) };
                    check(&cpu(kern, threads), [m, n, k], (ta, c_col, pad), seed);
                }
            }
        }
    )*};
}

sparkle_core::for_each_bkernel!(bkernel_tests);
