//! Half-precision GEMM and conv2d on every Vulkan device ([`Context::gemm_half`],
//! [`Context::conv2d_half`]: every geometry and layout), f16 and bf16, against the
//! f64 oracle on the same rounded inputs (the tolerance table's f16 and bf16 rows): sizes around
//! the tiles and the padded k, strided and transposed operands, a column-major C, every bias mode
//! with an activation, and bad input that must be an error with C untouched. Where a device has
//! cooperative matrices the f16 cases run on them, where it has workgroup-scope ones the large
//! f16 and bf16 GEMMs, and where it has bf16 ones the bf16 convs; `SPARKLE_REQUIRE_COOPMAT=1`,
//! `SPARKLE_REQUIRE_COOPMAT2=1`, `SPARKLE_REQUIRE_COOPMAT2_BF16=1` and
//! `SPARKLE_REQUIRE_COOPMAT_BF16=1` make a machine without such a device fail instead of skipping
//! those checks.
#![cfg(feature = "vulkan")]

use sparkle_core::check::{max_error, tolerance_for, Backend};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::epilogue::{Activation, Bias, Epilogue};
use sparkle_core::f16::{bf16, f16, gemm_half_reference_f64, Half};
use sparkle_core::{Conv2dParams, Error, MatMut, MatRef, Padding, Param, TensorLayout, WeightLayout};
use sparkle_tests::skip;
use sparkle_vk::{Context, DeviceInfo, TileDtype, TileRules, VkError};

/// `len` values in [-1, 1) rounded to `H`, from `seed`.
fn values<H: Half>(len: usize, mut seed: u64) -> Vec<H> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            H::from_f32((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        })
        .collect()
}

fn contexts() -> Vec<Context> {
    sparkle_tests::vk_contexts()
}

/// The contexts whose device `has` the feature; where none has it, a loud skip (`thing`, `why`:
/// `SPARKLE_REQUIRE_<thing>=1` makes it a failure) and none.
fn with_devices<'a>(ctxs: &'a [Context], has: fn(&DeviceInfo) -> bool, thing: &str, why: &str) -> Vec<&'a Context> {
    let with: Vec<&Context> = ctxs.iter().filter(|c| has(c.info())).collect();
    if with.is_empty() {
        skip(thing, why);
    }
    with
}

/// `m x n x k` with A stored transposed when `ta`, C column-major when `c_col`, `pad` extra
/// elements on every leading dimension, and `epi`'s bias mode (0 none, 1 row, 2 column) + ReLU.
fn check<H: Half>(
    ctx: &Context,
    [m, n, k]: [usize; 3],
    (ta, c_col, pad, bias_mode): (bool, bool, usize, u8),
    seed: u64,
) {
    let (lda, ldb, ldc) = (if ta { m } else { k } + pad, n + pad, if c_col { m } else { n } + pad);
    let a_len = if ta { k * lda } else { m * lda };
    let (a, b) = (values::<H>(a_len.max(1), seed), values::<H>((k * ldb).max(1), seed ^ 0x9e37));
    let a = if ta { MatRef::new(&a, m, k, 1, lda) } else { MatRef::new(&a, m, k, lda, 1) }.unwrap();
    let b = MatRef::new(&b, k, n, ldb, 1).unwrap();
    let bias_v: Vec<f32> = (0..m.max(n)).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
    let bias = match bias_mode {
        1 => Bias::Row(&bias_v[..m]),
        2 => Bias::Col(&bias_v[..n]),
        _ => Bias::None,
    };
    let activation = if bias_mode == 0 { Activation::None } else { Activation::Relu };
    let epi = Epilogue { bias, activation };
    let c_len = if c_col { n * ldc } else { m * ldc };
    let (rs, cs) = if c_col { (1, ldc) } else { (ldc, 1) };
    let mut got = vec![f32::NAN; c_len.max(1)];
    ctx.gemm_half(&a, &b, MatMut::new(&mut got, m, n, rs, cs).unwrap(), &epi).unwrap();
    let mut want = vec![0.0f64; m * n];
    gemm_half_reference_f64(&a, &b, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    for (e, w) in want.iter_mut().enumerate() {
        *w = epi.apply_f64(e / n, e % n, *w);
    }
    let got_mn: Vec<f32> = (0..m * n).map(|e| got[(e / n) * rs + (e % n) * cs]).collect();
    let (err, at) = max_error(&got_mn, &want);
    let tol = tolerance_for(Backend::Vulkan, H::DTYPE, k);
    let path = ctx.gemm_half_path::<H>(m, n, k).unwrap();
    assert!(
        err <= tol,
        "{} {} on {path}, {m}x{n}x{k} ta={ta} c_col={c_col} bias={bias_mode}: error {err} at {at:?} > {tol}",
        ctx.info().name,
        H::NAME
    );
    // Only the view's elements were written: the padding is still NaN.
    let written = (0..m * n).map(|e| (e / n) * rs + (e % n) * cs).collect::<std::collections::HashSet<_>>();
    assert!(got.iter().enumerate().all(|(i, v)| written.contains(&i) || v.is_nan()), "wrote outside the view");
}

fn every_case<H: Half>(ctx: &Context) {
    // Around the 64- and 128-row tiles, k around the 32-half padding, k = 0.
    for (i, &[m, n, k]) in
        [[1, 1, 1], [1, 1, 0], [3, 5, 31], [33, 70, 100], [64, 64, 32], [129, 130, 65], [200, 257, 300]]
            .iter()
            .enumerate()
    {
        check::<H>(ctx, [m, n, k], (false, false, 0, 0), i as u64);
        check::<H>(ctx, [m, n, k], (true, true, 3, (i % 3) as u8), 100 + i as u64);
    }
    // Few tiles over a long reduction: split-K (half.rs `split_k_parts`) into 4 parts of 8
    // slices, 4 of 10, 10, 10 and 7, and 2 of 11; the parts' sums finished with each bias mode.
    check::<H>(ctx, [97, 45, 1000], (false, true, 1, 2), 7);
    check::<H>(ctx, [16, 200, 1000], (false, false, 0, 1), 8);
    check::<H>(ctx, [5, 40, 1170], (true, false, 2, 0), 9);
    check::<H>(ctx, [70, 33, 700], (false, true, 0, 1), 10);
}

#[test]
fn f16_gemm_matches_the_oracle_on_every_device() {
    for ctx in contexts() {
        every_case::<f16>(&ctx);
    }
}

#[test]
fn bf16_gemm_matches_the_oracle_on_every_device() {
    for ctx in contexts() {
        every_case::<bf16>(&ctx);
    }
}

/// Each dtype's tile rules measured on every device (`Context::retune_tiles`): values its
/// measurement can give (a tile count it measured at, or never; split-K to 16 x 1-16 parts), the
/// rule's where the device lacks the kernels, remembered by the context; then GEMMs of each half
/// dtype on either side of the measured thresholds and at a split shape, against the oracle.
#[test]
fn tile_rules_are_measured_per_device_and_dtype() {
    let squares = [256u32, 512, 768, 1024, 1536, 2048, 3072, 4096].map(|s| (s / 128).pow(2));
    let wides = [2048u32, 3072, 4096, 6144].map(|s| s / 128 * (s / 256));
    for ctx in contexts() {
        for dtype in TileDtype::ALL {
            let t = std::time::Instant::now();
            let r = ctx.retune_tiles(dtype).unwrap();
            eprintln!("{} {}: {r:?} in {:.2} s", ctx.info().name, dtype.name(), t.elapsed().as_secs_f64());
            let rule = TileRules::rule(dtype);
            assert_eq!(ctx.tile_rules(dtype), r, "remembered");
            let f = r.min_full_tiles;
            assert!(f == rule.min_full_tiles || f == u32::MAX || squares.contains(&f), "{r:?}");
            let l = r.min_large_tiles;
            assert!(l == rule.min_large_tiles || l == u32::MAX || wides.contains(&l), "{r:?}");
            assert!([16, 32, 64, 128, 256].contains(&r.split_k_groups) || r.split_k_groups == rule.split_k_groups);
            // Nothing to choose (int8 without cooperative matrices: one kernel, no split-K).
            if ctx.tile_choices(dtype) == (false, false) {
                assert_eq!(r, rule, "nothing to measure");
            }
        }
        // Under the measured rules: a split shape (16 tiles of 64 x 64 at most), squares below
        // and above where the large kernel takes over.
        for (i, mnk) in [[16, 200, 1000], [64, 1000, 2000], [300, 260, 70]].into_iter().enumerate() {
            check::<f16>(&ctx, mnk, (false, false, 1, 1), 300 + i as u64);
            check::<bf16>(&ctx, mnk, (true, false, 2, 0), 310 + i as u64);
        }
    }
}

#[test]
fn bad_input_is_an_error_and_c_is_untouched() {
    for ctx in contexts() {
        let (a, b) = (values::<f16>(12, 1), values::<f16>(12, 2));
        let mut c = [7.0f32; 9];
        let a34 = MatRef::new(&a, 3, 4, 4, 1).unwrap();
        let b43 = MatRef::new(&b, 4, 3, 3, 1).unwrap();
        let r = ctx.gemm_half(&a34, &a34, MatMut::new(&mut c, 3, 3, 3, 1).unwrap(), &Epilogue::NONE);
        assert!(matches!(r, Err(VkError::Core(Error::Mismatch { param: Param::B, .. }))), "{r:?}");
        let short = [1.0f32; 2];
        let epi = Epilogue { bias: Bias::Col(&short), activation: Activation::None };
        assert!(ctx.gemm_half(&a34, &b43, MatMut::new(&mut c, 3, 3, 3, 1).unwrap(), &epi).is_err());
        assert_eq!(c, [7.0; 9]);
    }
}

#[test]
fn cooperative_matrices_are_used_where_a_device_has_them() {
    let ctxs = contexts();
    let why = "no Vulkan device with 16x16x16 f16 cooperative matrices";
    for ctx in with_devices(&ctxs, |d| d.cooperative_matrix_f16, "COOPMAT", why) {
        assert!(ctx.has_cooperative_matrix_f16(), "{}: offered but not enabled", ctx.info().name);
        // A size with several 128x128 tiles and a k of many slices, on the tensor cores.
        check::<f16>(ctx, [300, 520, 2000], (false, false, 0, 2), 11);
        coopmat_convs::<f16>(ctx, 60);
        eprintln!("f16 GEMMs and conv2d on cooperative matrices passed on {}", ctx.info().name);
    }
}

/// GEMMs of `H` the workgroup-scope kernel takes (at least 256 tiles of 128 x 128), asserted to
/// run there and checked against the oracle (seeds from `seed`): edge tiles in m and n; k = 70
/// pads to 96 (one clamped slice of 64 and a half-filled one), once with A transposed and C
/// column-major; k = 520 to 544 (one unrolled step of eight unclamped slices in the interior
/// tiles, then a half-filled clamped one).
fn workgroup_cases<H: Half>(ctx: &Context, seed: u64) {
    for (i, (k, layout)) in
        [(70, (false, false, 0, 2)), (70, (true, true, 3, 1)), (520, (false, false, 1, 1))].into_iter().enumerate()
    {
        let path = ctx.gemm_half_path::<H>(2050, 2040, k).unwrap();
        assert_eq!(path, "workgroup cooperative matrices", "{} {}", ctx.info().name, H::NAME);
        check::<H>(ctx, [2050, 2040, k], layout, seed + i as u64);
    }
}

#[test]
fn workgroup_cooperative_matrices_are_used_where_a_device_has_them() {
    let ctxs = contexts();
    let why = "no Vulkan device with VK_NV_cooperative_matrix2 (f16, workgroup scope)";
    for ctx in with_devices(&ctxs, |d| d.cooperative_matrix2_f16, "COOPMAT2", why) {
        assert!(ctx.has_cooperative_matrix2_f16(), "{}: offered but not enabled", ctx.info().name);
        if std::env::var_os("SPARKLE_VK_COOPMAT_TILE").is_some() {
            return skip("COOPMAT2", "SPARKLE_VK_COOPMAT_TILE keeps every f16 GEMM on the KHR kernel");
        }
        workgroup_cases::<f16>(ctx, 12);
        eprintln!("f16 on workgroup cooperative matrices passed on {}", ctx.info().name);
    }
}

#[test]
fn bf16_runs_on_workgroup_cooperative_matrices_where_a_device_has_them() {
    let ctxs = contexts();
    let why = "no Vulkan device with VK_KHR_shader_bfloat16 beside VK_NV_cooperative_matrix2";
    for ctx in with_devices(&ctxs, |d| d.cooperative_matrix2_bf16, "COOPMAT2_BF16", why) {
        assert!(ctx.has_cooperative_matrix2_bf16(), "{}: offered but not enabled", ctx.info().name);
        workgroup_cases::<bf16>(ctx, 22);
        // Every bf16 GEMM runs there (the shader cores ran 0.3-0.6x as fast from 512^3 down to
        // 16 x 1024 x 1024 on an H100), small and ragged ones too.
        for (i, mnk) in [[16, 1024, 64], [33, 70, 9], [1, 1, 1]].into_iter().enumerate() {
            assert_eq!(ctx.gemm_half_path::<bf16>(mnk[0], mnk[1], mnk[2]).unwrap(), "workgroup cooperative matrices");
            check::<bf16>(ctx, mnk, (false, true, 1, 0), 40 + i as u64);
        }
        eprintln!("bf16 on workgroup cooperative matrices passed on {}", ctx.info().name);
    }
}

/// conv2d `p` + bias (when `bias`) + ReLU on `H` input and weights, against the f64 oracle on the
/// same rounded values (reduction length C/groups * R * S).
fn check_conv<H: Half>(ctx: &Context, p: Conv2dParams, bias: bool, seed: u64) {
    let g = p.validate().unwrap();
    let (x, w) = (values::<H>(g.input_len(), seed), values::<H>(g.weight_len(), seed ^ 0x51));
    let bias_v: Vec<f32> = (0..p.k).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
    let epi = Epilogue { bias: if bias { Bias::Row(&bias_v) } else { Bias::None }, activation: Activation::Relu };
    let mut got = vec![f32::NAN; g.output_len()];
    ctx.conv2d_half(&g, &x, &w, &epi, &mut got).unwrap();
    let widen = |v: &[H]| v.iter().map(|h| h.to_f64() as f32).collect::<Vec<f32>>();
    let mut want = vec![0.0f64; g.output_len()];
    conv2d_reference_f64(&g, &widen(&x), &widen(&w), &epi, &mut want).unwrap();
    let (err, at) = max_error(&got, &want);
    let k = p.c / p.groups * p.r * p.s;
    let tol = tolerance_for(Backend::Vulkan, H::DTYPE, k);
    assert!(err <= tol, "{} {} conv {p:?}: error {err} at {at:?} > {tol}", ctx.info().name, H::NAME);
}

fn every_conv<H: Half>(ctx: &Context) {
    let base = Conv2dParams::new(2, 5, 9, 8, 7, 3, 3).pad(Padding::uniform(1));
    check_conv::<H>(ctx, base, true, 1);
    check_conv::<H>(ctx, base.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc), false, 2);
    check_conv::<H>(ctx, base.stride(2, 1).dilation(1, 2).pad(Padding::new(0, 2, 1, 0)), true, 3);
    check_conv::<H>(ctx, Conv2dParams::new(1, 6, 7, 7, 9, 3, 3).groups(3).pad(Padding::uniform(1)), true, 4);
    check_conv::<H>(ctx, Conv2dParams::new(1, 4, 6, 6, 4, 3, 3).groups(4).layout(TensorLayout::Nhwc), true, 5);
    check_conv::<H>(ctx, Conv2dParams::new(1, 70, 5, 5, 130, 1, 1), true, 6);
    check_conv::<H>(ctx, Conv2dParams::new(1, 3, 20, 20, 16, 7, 7).stride(2, 2).pad(Padding::uniform(3)), false, 7);
    // The staged kernel (cooperative matrices): images and groups in one dispatch, a group's
    // channels past one chunk, KRSC weights on NCHW; and enough rows for its 128 x 128 tile.
    let grouped = Conv2dParams::new(3, 20, 6, 7, 12, 3, 3).groups(2).weight_layout(WeightLayout::Krsc);
    check_conv::<H>(ctx, grouped.pad(Padding::uniform(1)).dilation(2, 1), true, 8);
    check_conv::<H>(ctx, Conv2dParams::new(8, 16, 32, 64, 130, 1, 1).layout(TensorLayout::Nhwc), true, 9);
}

/// Convs the staged cooperative-matrix kernel takes, asserted to run there and checked against the
/// oracle: 64 x 64 tiles (few channels: images and groups in one dispatch, NHWC with KRSC
/// weights), 128 x 128 ones (130 channels: an edge tile in n; a 3x3 with 144 channels a tap, a
/// reduction of 41 slices).
fn coopmat_convs<H: Half>(ctx: &Context, seed: u64) {
    let cases = [
        Conv2dParams::new(3, 20, 6, 7, 12, 3, 3).groups(2).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 24, 9, 9, 40, 3, 3).layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc),
        Conv2dParams::new(8, 16, 32, 64, 130, 1, 1),
        Conv2dParams::new(4, 144, 14, 14, 160, 3, 3).pad(Padding::uniform(1)),
    ];
    for (i, p) in cases.into_iter().enumerate() {
        let g = p.validate().unwrap();
        let path = ctx.conv2d_half_path::<H>(&g).unwrap();
        assert_eq!(path, "cooperative matrices", "{} {} {p:?}", ctx.info().name, H::NAME);
        check_conv::<H>(ctx, p, i % 2 == 0, seed + i as u64);
    }
}

#[test]
fn bf16_convs_run_on_cooperative_matrices_where_a_device_has_them() {
    let ctxs = contexts();
    let why = "no Vulkan device with 16x16x16 bf16 cooperative matrices (VK_KHR_shader_bfloat16)";
    for ctx in with_devices(&ctxs, |d| d.cooperative_matrix_bf16, "COOPMAT_BF16", why) {
        assert!(ctx.has_cooperative_matrix_bf16(), "{}: offered but not enabled", ctx.info().name);
        coopmat_convs::<bf16>(ctx, 70);
        eprintln!("bf16 conv2d on cooperative matrices passed on {}", ctx.info().name);
    }
}

#[test]
fn f16_conv2d_matches_the_oracle_on_every_device() {
    for ctx in contexts() {
        every_conv::<f16>(&ctx);
    }
}

#[test]
fn bf16_conv2d_matches_the_oracle_on_every_device() {
    for ctx in contexts() {
        every_conv::<bf16>(&ctx);
    }
}

#[test]
fn a_bad_conv_is_an_error_and_the_output_is_untouched() {
    for ctx in contexts() {
        let g = Conv2dParams::new(1, 2, 4, 4, 3, 3, 3).validate().unwrap();
        let (x, w) = (values::<f16>(g.input_len(), 1), values::<f16>(g.weight_len(), 2));
        let mut y = vec![9.0f32; g.output_len()];
        assert!(ctx.conv2d_half(&g, &x[1..], &w, &Epilogue::NONE, &mut y).is_err());
        let short = [1.0f32; 2];
        let epi = Epilogue { bias: Bias::Row(&short), activation: Activation::None };
        assert!(ctx.conv2d_half(&g, &x, &w, &epi, &mut y).is_err());
        assert!(y.iter().all(|&v| v == 9.0));
    }
}
