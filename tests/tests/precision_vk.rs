//! f32 GEMMs at a chosen precision on every Vulkan device ([`Context::gemm_split`],
//! [`Context::gemm_with_precision`]) against the f64 oracle on the f32 inputs: `high` (three f16
//! products from hi and lo planes) within the f32 tolerance, `medium` (one) within its wider
//! bound; rows and columns of any magnitude scaled exactly; non-finite inputs, `alpha`, `beta`,
//! bias and activation as the f32 kernels treat them; bad input an error with C untouched. On
//! lavapipe the split kernels run on the shader cores; on a device with f16 cooperative matrices
//! on those (the tensor cores).
#![cfg(feature = "vulkan")]

use sparkle_core::check::{max_error, Backend};
use sparkle_core::epilogue::{Activation, Bias, Epilogue};
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Error, MatMut, MatRef, Param, Precision};
use sparkle_vk::{Context, VkError};

/// `len` values in [-1, 1) with all 24 bits used, from `seed`.
fn values(len: usize, mut seed: u64) -> Vec<f32> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn contexts() -> Vec<Context> {
    sparkle_tests::vk_contexts()
}

/// The largest error of `precision` on `m x n x k` (A transposed when `ta`, `alpha`, `beta` over a
/// C of ones, a row bias + ReLU when `epi`) against the oracle; asserted within its tolerance.
fn check(ctx: &Context, precision: Precision, [m, n, k]: [usize; 3], ta: bool, epi: bool, seed: u64) -> f64 {
    let (a, b) = (values(m * k, seed), values(k * n, seed ^ 0x9e37));
    let a = if ta { MatRef::new(&a, m, k, 1, m.max(1)) } else { MatRef::row_major(&a, m, k) }.unwrap();
    let b = MatRef::row_major(&b, k, n).unwrap();
    let bias: Vec<f32> = (0..m).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
    let epi = if epi { Epilogue { bias: Bias::Row(&bias), activation: Activation::Relu } } else { Epilogue::NONE };
    let (alpha, beta) = (1.5, -0.5);
    let c0 = vec![1.0f32; m * n];
    let mut got = c0.clone();
    ctx.gemm_split(precision, alpha, a, b, beta, MatMut::row_major(&mut got, m, n).unwrap(), &epi).unwrap();
    let mut want = vec![0.0f64; m * n];
    let c0 = MatRef::row_major(&c0, m, n).unwrap();
    gemm_reference_f64(alpha, a, b, beta, Some(c0), &epi, &mut want).unwrap();
    let (err, at) = max_error(&got, &want);
    // alpha = 1.5 scales the sum: its bound too.
    let tol = 1.5 * precision.tolerance(Backend::Vulkan, k);
    assert!(
        err <= tol,
        "{} {} on {}, {m}x{n}x{k} ta={ta}: error {err:e} at {at:?} > {tol:e}",
        ctx.info().name,
        precision.name(),
        ctx.precision_path(precision)
    );
    err
}

#[test]
fn high_is_within_the_f32_tolerance_and_medium_within_its_own() {
    for ctx in contexts() {
        // Around the 64- and 128-row tiles, k around the 32-half padding, long k.
        for (i, &mnk) in
            [[1, 1, 1], [3, 5, 31], [65, 130, 33], [128, 128, 64], [200, 70, 300], [33, 40, 2000]].iter().enumerate()
        {
            for ta in [false, true] {
                let seed = 2 * i as u64 + u64::from(ta);
                let high = check(&ctx, Precision::High, mnk, ta, i % 2 == 0, seed);
                let medium = check(&ctx, Precision::Medium, mnk, ta, i % 2 == 0, seed);
                // The lo planes are used: one f16 product per term loses ~2^-12 per product.
                if mnk[2] >= 31 {
                    assert!(medium > 8.0 * high, "{mnk:?}: medium {medium:e} vs high {high:e}");
                }
            }
        }
        // k = 0 and empty shapes: C <- act(beta * C + bias).
        check(&ctx, Precision::High, [4, 3, 0], false, true, 9);
        check(&ctx, Precision::High, [0, 3, 5], false, false, 9);
    }
}

#[test]
fn rows_and_columns_of_any_magnitude_are_scaled_exactly() {
    for ctx in contexts() {
        let (m, n, k) = (40, 24, 100);
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        // Row i of A times 2^ea(i), column j of B times 2^eb(j): far outside f16's range.
        let ea = |i: usize| (i as i32 * 37) % 201 - 100;
        let eb = |j: usize| (j as i32 * 53) % 161 - 80;
        let sa: Vec<f32> = (0..m * k).map(|e| a[e] * 2.0f32.powi(ea(e / k))).collect();
        let sb: Vec<f32> = (0..k * n).map(|e| b[e] * 2.0f32.powi(eb(e % n))).collect();
        for precision in [Precision::High, Precision::Medium] {
            let run = |a: &[f32], b: &[f32]| {
                let mut c = vec![0.0f32; m * n];
                let (a, b) = (MatRef::row_major(a, m, k).unwrap(), MatRef::row_major(b, k, n).unwrap());
                ctx.gemm_split(precision, 1.0, a, b, 0.0, MatMut::row_major(&mut c, m, n).unwrap(), &Epilogue::NONE)
                    .unwrap();
                c
            };
            let (plain, scaled) = (run(&a, &b), run(&sa, &sb));
            for e in 0..m * n {
                let (i, j) = (e / n, e % n);
                let want = f64::from(plain[e]) * 2.0f64.powi(ea(i) + eb(j));
                // Exact, unless the scaled result is past f32's range (then infinity or subnormal).
                if (1e-37..1e37).contains(&want.abs()) {
                    assert_eq!(f64::from(scaled[e]), want, "{} ({i}, {j})", precision.name());
                }
            }
        }
    }
}

#[test]
fn non_finite_inputs_give_what_the_f32_kernels_give() {
    for ctx in contexts() {
        let (m, n, k) = (5, 4, 6);
        let mut a = values(m * k, 5);
        let b = values(k * n, 6);
        a[7] = f32::INFINITY;
        a[20] = f32::NAN;
        let (a, b) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        let mut want = vec![0.0f32; m * n];
        ctx.gemm(1.0, a, b, 0.0, MatMut::row_major(&mut want, m, n).unwrap(), &Epilogue::NONE).unwrap();
        let mut got = vec![0.0f32; m * n];
        ctx.gemm_split(Precision::High, 1.0, a, b, 0.0, MatMut::row_major(&mut got, m, n).unwrap(), &Epilogue::NONE)
            .unwrap();
        assert_eq!(got.map_bits(), want.map_bits());
    }
}

trait Bits {
    fn map_bits(&self) -> Vec<u32>;
}
impl Bits for Vec<f32> {
    fn map_bits(&self) -> Vec<u32> {
        self.iter().map(|v| v.to_bits()).collect()
    }
}

#[test]
fn gemm_with_precision_runs_f32_where_there_are_no_tensor_cores() {
    for ctx in contexts() {
        let (m, n, k) = (70, 33, 90);
        let (a, b) = (values(m * k, 7), values(k * n, 8));
        let (a, b) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        let mut f32_c = vec![0.0f32; m * n];
        ctx.gemm(1.0, a, b, 0.0, MatMut::row_major(&mut f32_c, m, n).unwrap(), &Epilogue::NONE).unwrap();
        for precision in Precision::ALL {
            let mut c = vec![0.0f32; m * n];
            ctx.gemm_with_precision(
                precision,
                1.0,
                a,
                b,
                0.0,
                MatMut::row_major(&mut c, m, n).unwrap(),
                &Epilogue::NONE,
            )
            .unwrap();
            let coopmat = ctx.has_cooperative_matrix_f16();
            if precision == Precision::Highest || !coopmat {
                assert_eq!(c.map_bits(), f32_c.map_bits(), "{}", precision.name());
                assert_eq!(ctx.precision_path(precision), "f32 on shader cores");
            } else {
                let mut want = vec![0.0f64; m * n];
                gemm_reference_f64(1.0, a, b, 0.0, None, &Epilogue::NONE, &mut want).unwrap();
                assert!(max_error(&c, &want).0 <= precision.tolerance(Backend::Vulkan, k));
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_and_c_is_untouched() {
    for ctx in contexts() {
        let a = values(12, 1);
        let a34 = MatRef::row_major(&a, 3, 4).unwrap();
        let mut c = [7.0f32; 9];
        for precision in Precision::ALL {
            let r = ctx.gemm_split(
                precision,
                1.0,
                a34,
                a34,
                0.0,
                MatMut::row_major(&mut c, 3, 3).unwrap(),
                &Epilogue::NONE,
            );
            assert!(matches!(r, Err(VkError::Core(Error::Mismatch { param: Param::B, .. }))), "{r:?}");
            let short = [1.0f32; 2];
            let epi = Epilogue { bias: Bias::Row(&short), activation: Activation::None };
            let b43 = MatRef::row_major(&a, 4, 3).unwrap();
            let r =
                ctx.gemm_with_precision(precision, 1.0, a34, b43, 0.0, MatMut::row_major(&mut c, 3, 3).unwrap(), &epi);
            assert!(r.is_err());
        }
        assert_eq!(c, [7.0; 9]);
    }
}

#[test]
fn any_layout_of_b_and_c_gives_the_same_bits() {
    for ctx in contexts() {
        let (m, n, k) = (37, 29, 70);
        let (a, b, c0) = (values(m * k, 11), values(k * n, 12), values(m * n, 13));
        // B and C also stored column-major: the same matrices.
        let b_t: Vec<f32> = (0..k * n).map(|e| b[(e % k) * n + e / k]).collect();
        let c_t: Vec<f32> = (0..m * n).map(|e| c0[(e % m) * n + e / m]).collect();
        let a = MatRef::row_major(&a, m, k).unwrap();
        let epi = Epilogue { bias: Bias::Col(&c0[..n]), activation: Activation::Relu };
        for precision in [Precision::High, Precision::Medium] {
            let mut row = c0.clone();
            let bv = MatRef::row_major(&b, k, n).unwrap();
            ctx.gemm_split(precision, 0.5, a, bv, 2.0, MatMut::row_major(&mut row, m, n).unwrap(), &epi).unwrap();
            let mut col = c_t.clone();
            let bv = MatRef::col_major(&b_t, k, n).unwrap();
            ctx.gemm_split(precision, 0.5, a, bv, 2.0, MatMut::col_major(&mut col, m, n).unwrap(), &epi).unwrap();
            let col_as_row: Vec<f32> = (0..m * n).map(|e| col[(e % n) * m + e / n]).collect();
            assert_eq!(col_as_row.map_bits(), row.map_bits(), "{}", precision.name());
        }
    }
}

#[test]
fn high_keeps_f32_accuracy_across_a_row_of_wide_range_and_falls_back_past_it() {
    for ctx in contexts() {
        let b = [0.0f32, 1.0];
        let b = MatRef::row_major(&b, 2, 1).unwrap();
        // 2^27 beside 1.2345678 in one row of A: within the span, the small one keeps 22 bits
        // (its lo is scaled up past f16's subnormals); 2^40 beside it: past the span, f32 runs.
        for (big, fallback) in [(2.0f32.powi(27), false), (2.0f32.powi(40), true)] {
            let a = [big, 1.234_567_8];
            let a = MatRef::row_major(&a, 1, 2).unwrap();
            let mut f32_c = [0.0f32];
            ctx.gemm(1.0, a, b, 0.0, MatMut::row_major(&mut f32_c, 1, 1).unwrap(), &Epilogue::NONE).unwrap();
            let mut c = [0.0f32];
            ctx.gemm_split(Precision::High, 1.0, a, b, 0.0, MatMut::row_major(&mut c, 1, 1).unwrap(), &Epilogue::NONE)
                .unwrap();
            let err = (f64::from(c[0]) - 1.234_567_8f64).abs();
            assert!(err <= Precision::High.tolerance(Backend::Vulkan, 2), "2^{}: {} ({err:e})", big.log2(), c[0]);
            if fallback {
                assert_eq!(c[0].to_bits(), f32_c[0].to_bits());
            }
        }
    }
}

#[test]
fn beta_zero_never_reads_c() {
    for ctx in contexts() {
        let (m, n, k) = (9, 7, 5);
        let (a, b) = (values(m * k, 21), values(k * n, 22));
        let (a, b) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
        for precision in [Precision::High, Precision::Medium] {
            let mut c = vec![f32::NAN; m * n];
            ctx.gemm_split(precision, 1.0, a, b, 0.0, MatMut::row_major(&mut c, m, n).unwrap(), &Epilogue::NONE)
                .unwrap();
            assert!(c.iter().all(|v| v.is_finite()), "{}", precision.name());
        }
    }
}

#[test]
fn medium_runs_on_workgroup_cooperative_matrices_where_a_device_has_them() {
    let ctxs = contexts();
    let with: Vec<&Context> = ctxs.iter().filter(|c| c.info().cooperative_matrix2_f16).collect();
    if with.is_empty() {
        return sparkle_tests::skip(
            "COOPMAT2",
            "no Vulkan device with VK_NV_cooperative_matrix2 (f16, workgroup scope)",
        );
    }
    for ctx in with {
        // At least 256 tiles of 128 x 128 and k = 520 (one unrolled step of unclamped slices, then
        // a clamped one), edge tiles in m and n, A transposed, bias and ReLU.
        check(ctx, Precision::Medium, [2050, 2040, 520], true, true, 21);
    }
}
