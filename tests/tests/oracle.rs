//! The oracle agrees with itself three ways: f32 vs f64 accumulation, direct conv vs
//! im2col + GEMM, and the GEMM contract (beta = 0 never reads C, transposes are views).

use proptest::prelude::*;
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::im2col::{im2col, im2col_len};
use sparkle_core::conv::reference::{conv2d_reference, conv2d_reference_f64, conv2d_reference_f64_at};
use sparkle_core::gemm::reference::{gemm_reference, gemm_reference_f64, gemm_reference_f64_at};
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, MatMut, MatRef, Padding, TensorLayout, WeightLayout};
use sparkle_tests::fill;

fn activation() -> impl Strategy<Value = Activation> {
    (0usize..Activation::ALL.len()).prop_map(|i| Activation::ALL[i])
}

fn conv_params() -> impl Strategy<Value = Conv2dParams> {
    (
        (1usize..3, 1usize..4, 1usize..9, 1usize..9, 1usize..4),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (1usize..4, any::<bool>(), any::<bool>()),
    )
        .prop_map(|((n, cm, h, w, km), (r, s, sh, sw, dh, dw), (pt, pl, pb, pr), (groups, nhwc, krsc))| {
            Conv2dParams::new(n, cm * groups, h, w, km * groups, r, s)
                .stride(sh, sw)
                .dilation(dh, dw)
                .pad(Padding::new(pt, pl, pb, pr))
                .groups(groups)
                .layout(if nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
                .weight_layout(if krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The direct conv equals, for every image and group, weights x im2col through the GEMM
    /// oracle writing straight into the output through a strided view.
    #[test]
    fn direct_conv_equals_im2col_gemm(p in conv_params(), act in activation(), with_bias: bool, seed: u64) {
        let Ok(g) = p.validate() else { return Ok(()) };
        let mut input = vec![0.0; g.input_len()];
        let mut weight = vec![0.0; g.weight_len()];
        let mut bias = vec![0.0; p.k];
        fill(&mut input, seed);
        fill(&mut weight, seed ^ 1);
        fill(&mut bias, seed ^ 2);
        let epi = Epilogue { bias: if with_bias { Bias::Row(&bias) } else { Bias::None }, activation: act };

        let mut truth = vec![0.0f64; g.output_len()];
        conv2d_reference_f64(&g, &input, &weight, &epi, &mut truth).unwrap();
        let mut direct = vec![0.0f32; g.output_len()];
        conv2d_reference(&g, &input, &weight, &epi, &mut direct).unwrap();

        let (kg, cols, gk) = g.gemm_dims();
        let mut via_gemm = vec![f32::NAN; g.output_len()];
        let mut col = vec![0.0; im2col_len(&g).unwrap()];
        for n in 0..p.n {
            for grp in 0..p.groups {
                im2col(&g, &input, n, grp, &mut col).unwrap();
                let w0 = g.weight_group_offset(grp);
                let a = MatRef::row_major(&weight[w0..w0 + kg * gk], kg, gk).unwrap();
                let b = MatRef::row_major(&col, gk, cols).unwrap();
                let (off, rs, cs) = g.output_gemm_view(n, grp);
                let c = MatMut::new(&mut via_gemm[off..], kg, cols, rs, cs).unwrap();
                let gb = match epi.bias { Bias::Row(b) => Bias::Row(&b[grp * kg..(grp + 1) * kg]), other => other };
                gemm_reference(1.0, a, b, 0.0, c, &Epilogue { bias: gb, activation: act }).unwrap();
            }
        }
        // The single-element oracle (what the fuzz targets sample) is the same function.
        for n in 0..p.n {
            for k in 0..p.k {
                for (oy, ox) in [(0, 0), (g.ho() - 1, g.wo() - 1), (g.ho() / 2, g.wo() / 3)] {
                    let one = conv2d_reference_f64_at(&g, &input, &weight, &epi, (n, k, oy, ox)).unwrap();
                    prop_assert_eq!(one.to_bits(), truth[g.output_index(n, k, oy, ox)].to_bits());
                }
            }
        }
        prop_assert!(conv2d_reference_f64_at(&g, &input, &weight, &epi, (p.n, 0, 0, 0)).is_err());
        prop_assert!(conv2d_reference_f64_at(&g, &input, &weight, &epi, (0, 0, g.ho(), 0)).is_err());
        let tol = tolerance(gk);
        let (e1, at1) = max_error(&direct, &truth);
        let (e2, at2) = max_error(&via_gemm, &truth);
        prop_assert!(e1 <= tol, "direct: error {e1:e} at {at1:?} > {tol:e}");
        prop_assert!(e2 <= tol, "im2col+gemm: error {e2:e} at {at2:?} > {tol:e}");
    }

    /// GEMM over arbitrary strides and transposes, alpha/beta and epilogues, against f64.
    #[test]
    fn gemm_f32_within_tolerance_of_f64(
        m in 0usize..12, n in 0usize..12, k in 0usize..40,
        ta: bool, tb: bool, c_col_major: bool,
        alpha in -2.0f32..2.0, beta in prop_oneof![Just(0.0f32), -1.5f32..1.5],
        act in activation(), bias_kind in 0u8..3, seed: u64,
    ) {
        let mut a = vec![0.0; m * k];
        let mut b = vec![0.0; k * n];
        let mut c = vec![0.0; m * n];
        let mut bias = vec![0.0; m.max(n)];
        fill(&mut a, seed);
        fill(&mut b, seed ^ 1);
        fill(&mut c, seed ^ 2);
        fill(&mut bias, seed ^ 3);
        if beta == 0.0 {
            c.iter_mut().for_each(|v| *v = f32::NAN);
        }
        let av = if ta { MatRef::row_major(&a, k, m).unwrap().t() } else { MatRef::row_major(&a, m, k).unwrap() };
        let bv = if tb { MatRef::col_major(&b, n, k).unwrap().t() } else { MatRef::row_major(&b, k, n).unwrap() };
        let bias = match bias_kind { 0 => Bias::None, 1 => Bias::Row(&bias[..m]), _ => Bias::Col(&bias[..n]) };
        let epi = Epilogue { bias, activation: act };
        let c0 = c.clone();
        let c0v = if c_col_major { MatRef::col_major(&c0, m, n).unwrap() } else { MatRef::row_major(&c0, m, n).unwrap() };
        let mut truth = vec![0.0f64; m * n];
        gemm_reference_f64(alpha, av, bv, beta, Some(c0v), &epi, &mut truth).unwrap();
        for (idx, want) in truth.iter().enumerate() {
            let one = gemm_reference_f64_at(alpha, av, bv, beta, Some(c0v), &epi, (idx / n, idx % n)).unwrap();
            prop_assert_eq!(one.to_bits(), want.to_bits());
        }
        prop_assert!(gemm_reference_f64_at(alpha, av, bv, beta, Some(c0v), &epi, (m, 0)).is_err());
        let cv = if c_col_major { MatMut::col_major(&mut c, m, n).unwrap() } else { MatMut::row_major(&mut c, m, n).unwrap() };
        gemm_reference(alpha, av, bv, beta, cv, &epi).unwrap();
        let got: Vec<f32> = (0..m * n)
            .map(|idx| { let (i, j) = (idx / n, idx % n); if c_col_major { c[j * m + i] } else { c[i * n + j] } })
            .collect();
        let (e, at) = max_error(&got, &truth);
        prop_assert!(e <= tolerance(k), "error {e:e} at {at:?}");
        if beta == 0.0 {
            prop_assert!(got.iter().all(|v| !v.is_nan()), "NaN from C leaked with beta = 0");
        }
    }
}

#[test]
fn identity_product() {
    let n = 7;
    let mut eye = vec![0.0f32; n * n];
    (0..n).for_each(|i| eye[i * n + i] = 1.0);
    let mut b = vec![0.0; n * n];
    fill(&mut b, 5);
    let mut c = vec![f32::NAN; n * n];
    let e = MatRef::row_major(&eye, n, n).unwrap();
    let bv = MatRef::row_major(&b, n, n).unwrap();
    gemm_reference(1.0, e, bv, 0.0, MatMut::row_major(&mut c, n, n).unwrap(), &Epilogue::NONE).unwrap();
    assert_eq!(c, b);
}

#[test]
fn shape_errors_are_reported_not_panicked() {
    let a = [0.0f32; 6];
    let mut c = [0.0f32; 4];
    let av = MatRef::row_major(&a, 2, 3).unwrap();
    let bv = MatRef::row_major(&a, 2, 3).unwrap();
    let err = gemm_reference(1.0, av, bv, 0.0, MatMut::row_major(&mut c, 2, 2).unwrap(), &Epilogue::NONE);
    assert_eq!(
        err.unwrap_err(),
        sparkle_core::Error::Mismatch { param: sparkle_core::Param::B, expected: 3, found: 2 }
    );
    let g = Conv2dParams::new(1, 2, 4, 4, 2, 3, 3).validate().unwrap();
    let mut out = vec![0.0; g.output_len()];
    assert!(conv2d_reference(&g, &[0.0; 3], &[0.0; 36], &Epilogue::NONE, &mut out).is_err());
    let short_bias = [0.0f32; 1];
    let epi = Epilogue::NONE.with_bias(&short_bias);
    assert!(conv2d_reference(&g, &[0.0; 32], &[0.0; 36], &epi, &mut out).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The fused conv packing gathers exactly the explicit im2col, panel by panel, in both layouts
    /// (a fuzz find: the gather once assumed NCHW addressing).
    #[test]
    fn fused_packing_equals_explicit_im2col(p in conv_params(), nr in 1usize..20, r0: u16, c0: u16, seed: u64) {
        let Ok(g) = p.validate() else { return Ok(()) };
        let mut input = vec![0.0; g.input_len()];
        fill(&mut input, seed);
        let (_, pixels, gemm_k) = g.gemm_dims();
        let rows = (usize::from(r0) % gemm_k)..gemm_k;
        let cols = (usize::from(c0) % pixels)..pixels;
        let mut packed = vec![f32::NAN; cols.len().div_ceil(nr) * nr * rows.len()];
        sparkle_core::conv::operands::pack_im2col_panels(&g, &input, p.n - 1, p.groups - 1, rows.clone(), cols.clone(), nr, &mut packed).unwrap();
        let mut col = vec![0.0; im2col_len(&g).unwrap()];
        im2col(&g, &input, p.n - 1, p.groups - 1, &mut col).unwrap();
        for (q, row) in rows.clone().enumerate() {
            for (j, pixel) in cols.clone().enumerate() {
                prop_assert_eq!(packed[((j / nr) * rows.len() + q) * nr + j % nr], col[row * pixels + pixel]);
            }
        }
    }
}
