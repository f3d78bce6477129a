//! CPU conv2d (every path, both layouts, every parameter) against the f64 oracle, stamped for
//! every kernel set this machine runs.

use proptest::prelude::*;
use sparkle_core::arch::{Isa, Kernel};
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::conv::{choose_path, choose_path_for, choose_path_with, Conv2dPath};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, Padding, TensorLayout, WeightLayout};
use sparkle_std::budget::MemoryBudget;
use sparkle_std::cpu::isa::{kernel_for_isa, supported};
use sparkle_std::cpu::Cpu;
use sparkle_tests::{fill, skip};

fn kernel(isa: Isa) -> Option<&'static Kernel> {
    match kernel_for_isa(isa) {
        Ok(k) if supported(isa) => Some(k),
        _ => {
            skip(&isa.name().to_uppercase(), &format!("this CPU or build cannot run the {} kernels", isa.name()));
            None
        }
    }
}

/// Runs `p` through `cpu` and the oracle; panics with the geometry on a mismatch. Returns the path.
fn check(cpu: &Cpu, p: Conv2dParams, act: Activation, with_bias: bool, seed: u64) -> Conv2dPath {
    let g = p.validate().unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut input = vec![0.0; g.input_len()];
    let mut weight = vec![0.0; g.weight_len()];
    let mut bias = vec![0.0; p.k];
    fill(&mut input, seed);
    fill(&mut weight, seed + 1);
    fill(&mut bias, seed + 2);
    let epi = Epilogue { bias: if with_bias { Bias::Row(&bias) } else { Bias::None }, activation: act };
    let mut want = vec![0.0f64; g.output_len()];
    conv2d_reference_f64(&g, &input, &weight, &epi, &mut want).unwrap();
    let mut got = vec![f32::NAN; g.output_len()];
    cpu.conv2d(&g, &input, &weight, &epi, &mut got).unwrap();
    let (err, at) = max_error(&got, &want);
    let tol = tolerance(g.gemm_dims().2);
    let path = choose_path(&g);
    assert!(err <= tol, "{} {:?} {p:?} {act:?}: error {err:e} at {at:?} > {tol:e}", cpu.kernel.id(), path);
    // The weights packed ahead: the same bits.
    let packed = cpu.conv2d_pack(&g, &weight).unwrap();
    let mut again = vec![f32::NAN; g.output_len()];
    cpu.conv2d_packed(&g, &input, &packed, &epi, &mut again).unwrap();
    let same = got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{} {path:?} {p:?} {act:?}: packed weights (packed: {})", cpu.kernel.id(), packed.is_packed());
    path
}

fn cpus(kern: &'static Kernel) -> [Cpu; 3] {
    let base = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kern) };
    // The rule's paths (Winograd at any channel count), not this CPU's measured thresholds: the
    // sweep asserts which path each geometry takes.
    let base = Cpu { blocking: Blocking { winograd_min_channels: [0; 2], ..base.blocking }, ..base };
    [
        base.threads(1),
        base.threads(2),
        Cpu { blocking: Blocking::new(2 * kern.mr(), 16, 2 * kern.nr()), ..base.threads(2) },
    ]
}

fn sweep(kern: &'static Kernel) {
    let mut seen = std::collections::HashSet::new();
    for cpu in cpus(kern) {
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            for wl in [WeightLayout::Kcrs, WeightLayout::Krsc] {
                let with = |p: Conv2dParams| p.layout(layout).weight_layout(wl);
                // Kernel sizes 1..7 with stride, dilation and asymmetric padding (incl. pad > r/2).
                for r in 1..=7 {
                    let p = Conv2dParams::new(1, 3, 11, 10, 5, r, 8 - r).stride(1 + r % 3, 1 + (r + 1) % 3);
                    let p = p.dilation(1 + r % 2, 1 + (r / 3) % 3).pad(Padding::new(r / 2 + 1, r % 3, r, 4));
                    seen.insert(check(&cpu, with(p), Activation::Relu, true, r as u64));
                }
                // Output 1x1, input == kernel size, c = 1, k = 1, batch 3.
                seen.insert(check(&cpu, with(Conv2dParams::new(1, 4, 5, 5, 6, 5, 5)), Activation::None, false, 1));
                seen.insert(check(
                    &cpu,
                    with(Conv2dParams::new(3, 1, 9, 7, 4, 3, 3).pad(Padding::uniform(1))),
                    Activation::Gelu,
                    true,
                    2,
                ));
                seen.insert(check(&cpu, with(Conv2dParams::new(3, 5, 9, 7, 1, 3, 2)), Activation::Sigmoid, true, 3));
                // Groups 1, 2, c (depthwise), and a channel multiplier.
                for (c, k, groups) in [(6, 8, 1), (6, 8, 2), (37, 37, 37), (8, 16, 8)] {
                    let p = Conv2dParams::new(3, c, 13, 21, k, 3, 3).pad(Padding::new(1, 2, 0, 1)).groups(groups);
                    seen.insert(check(&cpu, with(p), Activation::Relu6, true, c as u64));
                    seen.insert(check(&cpu, with(p.stride(2, 2).dilation(2, 1)), Activation::Tanh, false, k as u64));
                }
                // Depthwise planes narrow, wide, strided and dilated (NCHW: flat rows of every
                // width, stride 2's column phases from even and odd left padding, stride 3; NHWC:
                // 40 = 2 x 16 + 8 = 5 x 8 channels, a partial vector), batch 2, on 3 workers too.
                for (hw, stride, dilation, left) in [
                    (7, 1, 1, 1),
                    (14, 1, 1, 1),
                    (14, 2, 1, 1),
                    (23, 2, 2, 1),
                    (9, 3, 1, 1),
                    (17, 2, 1, 0),
                    (40, 2, 1, 2),
                ] {
                    let p = Conv2dParams::new(2, 40, hw, hw + 1, 40, 3, 3)
                        .stride(stride, stride)
                        .dilation(dilation, dilation)
                        .pad(Padding::new(1, left, 2, 0))
                        .groups(40);
                    let three = cpu.threads(3);
                    seen.insert(check(&three, with(p), Activation::Relu6, true, hw as u64));
                    seen.insert(check(&cpu, with(p), Activation::Gelu, false, stride as u64));
                }
                // NCHW's flat path and its edges (one channel or three, so that 2 and 3 workers
                // split planes into chunks of rows): filters past its 64 taps (the row path, with
                // an interior a vector wide), exactly 64, a 5 x 5 at stride 2 on a plane taller
                // than a chunk, strides 4 and (2, 1), wide left padding, 7 x 7 outputs (a last
                // pass of four vectors), rows of 32 (whole vectors out), and rows so long that a
                // chunk is one row.
                for (c, (h, w), (r, s), stride, pad, threads) in [
                    (3, (12, 12), (9, 9), (1, 1), Padding::uniform(4), 2),
                    (3, (40, 40), (9, 9), (1, 1), Padding::uniform(4), 1),
                    (3, (20, 21), (8, 8), (1, 1), Padding::new(3, 4, 4, 3), 3),
                    (3, (150, 150), (5, 5), (2, 2), Padding::uniform(2), 2),
                    (3, (30, 33), (3, 3), (4, 4), Padding::new(1, 2, 0, 1), 3),
                    (3, (19, 23), (3, 5), (2, 1), Padding::new(0, 5, 1, 2), 2),
                    (32, (7, 7), (3, 3), (1, 1), Padding::uniform(1), 2),
                    (1, (32, 32), (3, 3), (1, 1), Padding::uniform(1), 3),
                    (1, (8, 2100), (3, 3), (1, 1), Padding::uniform(1), 2),
                ] {
                    let p = Conv2dParams::new(1, c, h, w, c, r, s).stride(stride.0, stride.1).pad(pad).groups(c);
                    seen.insert(check(&cpu.threads(threads), with(p), Activation::Relu, true, r as u64));
                }
                // Pointwise (1x1 stride 1): plain GEMM, no gather.
                seen.insert(check(&cpu, with(Conv2dParams::new(3, 19, 9, 11, 40, 1, 1)), Activation::Relu, true, 4));
                seen.insert(check(
                    &cpu,
                    with(Conv2dParams::new(1, 16, 7, 7, 24, 1, 1).groups(4)),
                    Activation::None,
                    true,
                    5,
                ));
                // Every epilogue on the implicit GEMM path (a stride past the kernel's extent).
                for act in Activation::ALL {
                    let p = Conv2dParams::new(1, 7, 12, 12, 33, 2, 2).stride(3, 3).pad(Padding::uniform(1));
                    check(&cpu, with(p), act, true, 6);
                }
                // Winograd: ragged tiles (26 x 39 outputs: 13 x 20 tiles of 2x2, a partial group
                // of lanes), asymmetric padding, batch 2, and every epilogue (in one of the four
                // layout pairs: the epilogue does not depend on them, and qemu-aarch64 runs this).
                let p = Conv2dParams::new(2, 5, 27, 39, 7, 3, 3).pad(Padding::new(1, 2, 0, 0));
                let acts = if (layout, wl) == (TensorLayout::Nchw, WeightLayout::Kcrs) {
                    &Activation::ALL[..]
                } else {
                    &Activation::ALL[1..2]
                };
                for &act in acts {
                    assert_eq!(check(&cpu, with(p), act, true, 7), Conv2dPath::Winograd);
                }
                // Four channels (Winograd's fewest), no padding, tiles just enough (16 x 16); and a wide reduction (in
                // the two pairs where both layouts change together).
                seen.insert(check(&cpu, with(Conv2dParams::new(1, 4, 34, 34, 1, 3, 3)), Activation::None, false, 8));
                if (layout == TensorLayout::Nchw) == (wl == WeightLayout::Kcrs) {
                    let p = Conv2dParams::new(2, 96, 28, 28, 40, 3, 3).pad(Padding::uniform(1));
                    seen.insert(check(&cpu, with(p), Activation::Relu, true, 9));
                }
                // The direct conv's rows sharing their padding columns (stride 1): asymmetric
                // padding, a 5x5 and a dilated 3x3; padding past the kernel's reach keeps
                // separate columns.
                for (r, dil, pad) in [
                    (5, 1, Padding::new(2, 1, 2, 3)),
                    (3, 2, Padding::new(1, 2, 2, 1)),
                    (3, 1, Padding::new(1, 4, 1, 3)),
                ] {
                    let p = Conv2dParams::new(1, 32, 13, 17, 24, r, r).dilation(dil, dil).pad(pad);
                    let path = check(&cpu, with(p), Activation::Relu, true, 11);
                    let direct = layout == TensorLayout::Nhwc || wl == WeightLayout::Kcrs;
                    assert!(!direct || path == Conv2dPath::Direct, "{p:?} ran {path:?}");
                }
                // An odd output height (a half row of tiles); 16 images of 4 x 4 tiles (a group of
                // lanes spans rows and images); padding past the kernel (tiles of padding only);
                // three workers for four channels (Winograd's fewest).
                for (p, threads) in [
                    (Conv2dParams::new(1, 4, 35, 34, 4, 3, 3), 2),
                    (Conv2dParams::new(16, 4, 7, 7, 3, 3, 3).pad(Padding::uniform(1)), 2),
                    (Conv2dParams::new(1, 4, 28, 28, 3, 3, 3).pad(Padding::new(4, 3, 5, 4)), 2),
                    (Conv2dParams::new(1, 4, 33, 33, 2, 3, 3), 3),
                ] {
                    let cpu = cpu.threads(threads);
                    assert_eq!(check(&cpu, with(p), Activation::Relu6, true, 10), Conv2dPath::Winograd);
                    // On those workers too, except NHWC on three (few channels: direct as channel
                    // planes, where the kernel reads B in place).
                    let planes = threads > 2 && layout == TensorLayout::Nhwc && kern.gemm().b_in_place();
                    let want = if planes { Conv2dPath::Direct } else { Conv2dPath::Winograd };
                    assert_eq!(cpu.conv2d_path(&with(p).validate().unwrap()).unwrap(), want);
                }
            }
        }
    }
    for path in [Conv2dPath::Pointwise, Conv2dPath::Depthwise, Conv2dPath::ImplicitGemm, Conv2dPath::Winograd] {
        assert!(seen.contains(&path), "{path:?} never ran");
    }
}

/// The direct conv (padded image read in place; strided: as phase planes): odd sizes, asymmetric
/// padding, dilation, strides (2x2 with a 7x7 kernel on 3 channels like ResNet's conv1, 2x1 and
/// 1x3 with dilation, 3x3 on a 3x3 kernel), non-square kernels, a padded 1x1, groups, batches,
/// every layout pair, on one and two workers and with blocking whose reduction slices split the
/// channels. Each case asserts the path it ran on: the direct conv, except that channel planes
/// (NCHW, and NHWC below 16 channels a group) run the implicit GEMM on a kernel that cannot read
/// B in place.
fn direct(kern: &'static Kernel) {
    let cases = [
        Conv2dParams::new(1, 32, 14, 14, 48, 3, 3).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 48, 11, 13, 20, 3, 5).pad(Padding::new(1, 2, 3, 2)).dilation(2, 1),
        Conv2dParams::new(1, 16, 9, 9, 17, 1, 1).pad(Padding::uniform(1)),
        Conv2dParams::new(3, 64, 8, 7, 24, 3, 3).pad(Padding::uniform(1)).groups(2),
        Conv2dParams::new(1, 96, 7, 7, 40, 3, 3).pad(Padding::uniform(1)),
        Conv2dParams::new(1, 32, 6, 30, 33, 5, 2).pad(Padding::new(2, 0, 2, 1)),
        Conv2dParams::new(1, 16, 12, 20, 8, 3, 3).pad(Padding::uniform(2)).dilation(1, 2),
        Conv2dParams::new(2, 3, 23, 22, 20, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
        Conv2dParams::new(1, 32, 13, 11, 24, 3, 3).stride(2, 2).pad(Padding::new(1, 0, 0, 1)),
        Conv2dParams::new(1, 16, 15, 12, 18, 3, 2).stride(2, 1).dilation(2, 1).pad(Padding::new(2, 1, 1, 0)),
        Conv2dParams::new(2, 48, 9, 17, 9, 2, 4).stride(1, 3).dilation(1, 2).pad(Padding::new(0, 2, 1, 3)).groups(3),
        Conv2dParams::new(1, 32, 16, 16, 12, 3, 3).stride(3, 3).pad(Padding::uniform(1)),
        // Few channels a group: NHWC as channel planes too.
        Conv2dParams::new(2, 12, 10, 9, 8, 3, 3).pad(Padding::new(1, 1, 0, 2)).groups(2),
    ];
    for cpu in cpus(kern) {
        for (i, p) in cases.into_iter().enumerate() {
            for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
                for wl in [WeightLayout::Kcrs, WeightLayout::Krsc] {
                    let p = p.layout(layout).weight_layout(wl);
                    let g = p.validate().unwrap();
                    let planes = layout == TensorLayout::Nchw || g.cg() < 16;
                    // NCHW with KRSC weights from 16 channels: the implicit GEMM.
                    let krsc = layout == TensorLayout::Nchw && wl == WeightLayout::Krsc && g.cg() >= 16;
                    let chosen = if krsc { Conv2dPath::ImplicitGemm } else { Conv2dPath::Direct };
                    let runs = if !planes || kern.gemm().b_in_place() { chosen } else { Conv2dPath::ImplicitGemm };
                    assert_eq!(cpu.conv2d_path(&g).unwrap(), runs, "{p:?} {:?}", cpu.blocking);
                    let act = Activation::ALL[i % Activation::ALL.len()];
                    assert_eq!(check(&cpu, p, act, i % 2 == 0, 20 + i as u64), chosen);
                }
            }
        }
    }
}

/// A budget too small for Winograd's buffers but enough for the implicit GEMM: the conv still
/// runs, as an implicit GEMM, and matches the oracle.
fn winograd_over_budget(kern: &'static Kernel) {
    let p = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1));
    let g = p.validate().unwrap();
    // The rule's paths: Winograd planned (not this CPU's measured thresholds, which may send it
    // direct), with a budget between the least scratch and Winograd's buffers.
    let base = Cpu::with_kernel(kern).threads(1);
    let blocking = Blocking { winograd_min_channels: [0; 2], ..base.blocking };
    let least = sparkle_core::conv::fused::conv2d_min_scratch_len(&g, kern, &blocking, 1).unwrap();
    let full = sparkle_core::conv::fused::conv2d_scratch_len(&g, kern, &blocking, 1).unwrap();
    assert!(full > least, "{full} floats for Winograd, {least} the least");
    let cpu = Cpu { memory_budget: MemoryBudget::bytes((4 * (least + full) / 2) as u64), blocking, ..base };
    assert_eq!(cpu.conv2d_path(&g).unwrap(), Conv2dPath::ImplicitGemm);
    check(&cpu, p, Activation::Relu, true, 11);
}

/// More workers than cores, so the GEMM driver splits C on 2-D grids and the im2col B (NCHW) is
/// gathered once for all workers (`gemm::driver::Split`), and batches of GEMMs (Winograd's 16,
/// a grouped conv's (image, group) pairs) run in one parallel region (`gemm_batch`), with
/// default and small blocking (many reduction slices and column blocks per worker), in both
/// layouts: the implicit GEMM, a strided one, a pointwise, a Winograd and grouped geometries.
fn many_workers(kern: &'static Kernel) {
    let shapes = [
        Conv2dParams::new(2, 40, 9, 9, 60, 3, 3).pad(Padding::uniform(1)),
        // Direct on 16 workers: strided, 6x6 outputs.
        Conv2dParams::new(1, 64, 12, 12, 128, 3, 3).stride(2, 2).pad(Padding::uniform(1)),
        // The implicit GEMM: 11 x 2 panels, a 576-deep gather; room for B gathered once, shared.
        Conv2dParams::new(1, 576, 12, 12, 128, 1, 1).stride(2, 2),
        // The direct conv: 3 images x 2 groups of 32 channels, asymmetric padding.
        Conv2dParams::new(3, 64, 10, 9, 40, 3, 3).pad(Padding::new(1, 2, 0, 1)).groups(2),
        Conv2dParams::new(1, 24, 6, 7, 100, 3, 3).stride(2, 1).pad(Padding::new(1, 0, 2, 1)),
        Conv2dParams::new(1, 48, 5, 5, 70, 1, 1),
        Conv2dParams::new(2, 5, 27, 39, 7, 3, 3).pad(Padding::new(1, 2, 0, 0)),
        // 12 (image, group) GEMMs: run together, a few per worker.
        Conv2dParams::new(3, 16, 8, 8, 24, 3, 3).groups(4).pad(Padding::uniform(1)),
        Conv2dParams::new(3, 16, 8, 8, 24, 1, 1).groups(4),
    ];
    let base = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kern) };
    let small = Blocking::new(2 * kern.mr(), 16, 2 * kern.nr());
    for cpu in [base.threads(16), Cpu { blocking: small, ..base.threads(16) }] {
        for (i, p) in shapes.into_iter().enumerate() {
            for (layout, wl) in [(TensorLayout::Nchw, WeightLayout::Kcrs), (TensorLayout::Nhwc, WeightLayout::Krsc)] {
                check(&cpu, p.layout(layout).weight_layout(wl), Activation::Relu, i % 2 == 0, i as u64);
            }
        }
    }
    // The direct conv on 16 workers, path asserted: strided with small outputs; channel planes
    // with few channels a group from either layout, KRSC weights reordered (NCHW) and a large
    // NHWC image (as planes on any worker count); and a large NCHW image of few channels, which
    // runs as the implicit GEMM there.
    let planes = |want| if kern.gemm().b_in_place() { want } else { Conv2dPath::ImplicitGemm };
    let few = Conv2dParams::new(2, 12, 10, 9, 8, 3, 3).pad(Padding::new(1, 0, 2, 1)).groups(2);
    let big = Conv2dParams::new(1, 5, 20, 18, 12, 3, 3).pad(Padding::uniform(1));
    for (p, want) in [
        (shapes[1], planes(Conv2dPath::Direct)),
        (few.weight_layout(WeightLayout::Krsc), planes(Conv2dPath::Direct)),
        // 69120 KRSC weights: reordered by all the workers.
        (
            Conv2dParams::new(1, 15, 6, 6, 512, 3, 3).pad(Padding::uniform(1)).weight_layout(WeightLayout::Krsc),
            planes(Conv2dPath::Direct),
        ),
        (few.layout(TensorLayout::Nhwc), planes(Conv2dPath::Direct)),
        (big.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc), planes(Conv2dPath::Direct)),
        (big, Conv2dPath::ImplicitGemm),
    ] {
        let cpu = base.threads(16);
        assert_eq!(cpu.conv2d_path(&p.validate().unwrap()).unwrap(), want, "{p:?}");
        check(&cpu, p, Activation::Relu, true, 13);
    }
    // A budget with room for each worker's own blocks but not for a shared B: the conv runs.
    let p = Conv2dParams::new(1, 576, 12, 12, 128, 1, 1).stride(2, 2);
    let g = p.validate().unwrap();
    let cpu = base.threads(16);
    let least = sparkle_core::conv::fused::conv2d_min_scratch_len(&g, kern, &cpu.blocking, 16).unwrap();
    let most = sparkle_core::conv::fused::conv2d_scratch_len(&g, kern, &cpu.blocking, 16).unwrap();
    assert!(most > least, "a shared B needs room: {most} vs {least}");
    let tight = Cpu { memory_budget: MemoryBudget::bytes(4 * least as u64), ..cpu };
    check(&tight, p, Activation::Relu, true, 12);
}

fn bad_input(kern: &'static Kernel) {
    let cpu = Cpu::with_kernel(kern);
    let g = Conv2dParams::new(1, 2, 5, 5, 3, 3, 3).validate().unwrap();
    let (input, weight) = (vec![0.0; g.input_len()], vec![0.0; g.weight_len()]);
    let mut out = vec![7.0; g.output_len()];
    assert!(cpu.conv2d(&g, &input[1..], &weight, &Epilogue::NONE, &mut out).is_err());
    assert!(cpu.conv2d(&g, &input, &weight[1..], &Epilogue::NONE, &mut out).is_err());
    let bias = [0.0f32; 2];
    assert!(cpu.conv2d(&g, &input, &weight, &Epilogue::NONE.with_bias(&bias), &mut out).is_err());
    let col = Epilogue { bias: Bias::Col(&bias), activation: Activation::None };
    assert!(cpu.conv2d(&g, &input, &weight, &col, &mut out).is_err());
    assert!(out.iter().all(|&v| v == 7.0), "nothing may be written on an error");
}

/// One test module per registered kernel set, stamped from the core's registration list
/// (`sparkle_core::for_each_kernel!`): a kernel added there is tested here without an edit.
macro_rules! conv_tests {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {$(
        $(#[$cfg])*
        mod $name {
            use super::*;

            #[test]
            fn every_path_and_parameter() {
                if let Some(k) = kernel(Isa::$isa) { sweep(k) }
            }
            #[test]
            fn winograd_falls_back_within_the_budget() {
                if let Some(k) = kernel(Isa::$isa) { winograd_over_budget(k) }
            }
            #[test]
            fn direct_conv() {
                if let Some(k) = kernel(Isa::$isa) { direct(k) }
            }
            #[test]
            fn bad_input_is_an_error() {
                if let Some(k) = kernel(Isa::$isa) { bad_input(k) }
            }
            #[test]
            fn grids_of_many_workers() {
                if let Some(k) = kernel(Isa::$isa) { many_workers(k) }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]
                #[test]
                fn matches_oracle(
                    (n, cm, h, w, km) in (1usize..3, 1usize..5, 1usize..14, 1usize..14, 1usize..6),
                    (r, s, sh, sw, dh, dw) in (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
                    (pt, pl, pb, pr) in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
                    (groups, depthwise, nhwc, krsc, threads) in (1usize..4, any::<bool>(), any::<bool>(), any::<bool>(), 1usize..6),
                    act in 0usize..7, with_bias: bool, seed: u64,
                ) {
                    let Some(kern) = kernel(Isa::$isa) else { return Ok(()) };
                    let (c, k) = if depthwise { (cm * groups, cm * groups) } else { (cm * groups, km * groups) };
                    let groups = if depthwise { c } else { groups };
                    let p = Conv2dParams::new(n, c, h, w, k, r, s).stride(sh, sw).dilation(dh, dw)
                        .pad(Padding::new(pt, pl, pb, pr)).groups(groups)
                        .layout(if nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
                        .weight_layout(if krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs });
                    if p.validate().is_err() { return Ok(()) }
                    let cpu = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kern).threads(threads) };
                    check(&cpu, p, Activation::ALL[act], with_bias, seed);
                }
            }
        }
    )*};
}

sparkle_core::for_each_kernel!(conv_tests);

#[test]
fn path_choice() {
    let path = |p: Conv2dParams| choose_path(&p.validate().unwrap());
    assert_eq!(path(Conv2dParams::new(1, 64, 56, 56, 256, 1, 1)), Conv2dPath::Pointwise);
    assert_eq!(path(Conv2dParams::new(1, 64, 56, 56, 256, 1, 1).stride(2, 2)), Conv2dPath::ImplicitGemm);
    assert_eq!(path(Conv2dParams::new(1, 32, 112, 112, 32, 3, 3).groups(32)), Conv2dPath::Depthwise);
    assert_eq!(path(Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Winograd);
    // Too few tiles for Winograd, dilated, grouped or not 3x3 at stride 1: the direct conv.
    assert_eq!(path(Conv2dParams::new(1, 128, 28, 28, 128, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Direct);
    assert_eq!(path(Conv2dParams::new(2, 128, 28, 28, 128, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Winograd);
    assert_eq!(path(Conv2dParams::new(1, 512, 7, 7, 512, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Direct);
    // Winograd's buffers past 64 MiB (batch 11 at 56x56x64): the direct conv, whose scratch is
    // bounded by its chunks.
    assert_eq!(path(Conv2dParams::new(10, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Winograd);
    assert_eq!(path(Conv2dParams::new(11, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1))), Conv2dPath::Direct);
    let p = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3);
    for p in [p.dilation(1, 2), p.groups(2), Conv2dParams::new(1, 64, 56, 56, 64, 3, 2)] {
        assert_eq!(path(p), Conv2dPath::Direct, "{p:?}");
    }
    // Strided (as phase planes), and NCHW with few channels (ResNet's conv1): the direct conv.
    let conv1 = Conv2dParams::new(1, 3, 224, 224, 64, 7, 7).stride(2, 2).pad(Padding::uniform(3));
    for p in [p.stride(2, 2), p.groups(8), Conv2dParams::new(1, 15, 56, 56, 64, 5, 5), conv1] {
        assert_eq!(path(p), Conv2dPath::Direct, "{p:?}");
    }
    // NHWC with few channels (as planes), and NCHW with few channels of KRSC weights (reordered).
    let few = Conv2dParams::new(1, 15, 56, 56, 64, 5, 5).layout(TensorLayout::Nhwc);
    let krsc = conv1.weight_layout(WeightLayout::Krsc);
    for p in [few, krsc, krsc.layout(TensorLayout::Nhwc)] {
        assert_eq!(path(p), Conv2dPath::Direct, "{p:?}");
    }
    // A stride longer than the kernel (a 1x1 at stride 2 would stage four phases to read one),
    // more than a quarter of the computed pixels dropped (1 of every 3 at 2x2 with a 3x3 kernel:
    // rows of 2 pixels sharing one column of padding), or NCHW with KRSC weights from 16
    // channels: the implicit GEMM.
    let small = Conv2dParams::new(1, 64, 2, 2, 64, 3, 3).pad(Padding::uniform(1));
    let shortcut = Conv2dParams::new(1, 256, 56, 56, 512, 1, 1).stride(2, 2);
    let krsc = Conv2dParams::new(1, 128, 28, 28, 128, 3, 3).pad(Padding::uniform(1)).weight_layout(WeightLayout::Krsc);
    for p in [shortcut, small, small.layout(TensorLayout::Nhwc), krsc] {
        assert_eq!(path(p), Conv2dPath::ImplicitGemm, "{p:?}");
    }
    // Winograd's geometries run direct on more than two workers, and in NHWC on any.
    let wino = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1));
    let path_for = |p: Conv2dParams, w| choose_path_for(&p.validate().unwrap(), w);
    assert_eq!(path_for(wino, 2), Conv2dPath::Winograd);
    assert_eq!(path_for(wino, 3), Conv2dPath::Direct);
    assert_eq!(path_for(wino.layout(TensorLayout::Nhwc), 1), Conv2dPath::Direct);
    // Strided and few-channel convs run direct on many workers only with a wide kernel (conv1),
    // small images (14x14 outputs) or in NHWC (as channel planes); on one or two, always.
    let rgb = Conv2dParams::new(1, 3, 224, 224, 32, 3, 3).stride(2, 2).pad(Padding::uniform(1));
    let s2 = |c, hw| Conv2dParams::new(1, c, hw, hw, c, 3, 3).stride(2, 2).pad(Padding::uniform(1));
    for (p, many) in [
        (conv1, Conv2dPath::Direct),
        (s2(256, 28), Conv2dPath::Direct),
        (rgb, Conv2dPath::ImplicitGemm),
        (rgb.stride(1, 1), Conv2dPath::ImplicitGemm),
        (rgb.layout(TensorLayout::Nhwc), Conv2dPath::Direct),
        (s2(128, 56), Conv2dPath::ImplicitGemm),
    ] {
        assert_eq!(path_for(p, 2), Conv2dPath::Direct, "{p:?}");
        assert_eq!(path_for(p, 3), many, "{p:?}");
    }
    // NCHW with KRSC weights from 16 channels: never direct.
    assert_eq!(path_for(wino.weight_layout(WeightLayout::Krsc), 16), Conv2dPath::Winograd);
    // A CPU's measured channel thresholds (sparkle-std's tuning) send convs of fewer channels
    // (the smaller of input and output) direct on one and two workers, and nothing else.
    let with = |p: Conv2dParams, w, min| choose_path_with(&p.validate().unwrap(), w, min);
    assert_eq!(with(wino, 1, [64, 128]), Conv2dPath::Winograd);
    assert_eq!(with(wino, 2, [64, 128]), Conv2dPath::Direct);
    assert_eq!(with(wino, 1, [65, 0]), Conv2dPath::Direct);
    assert_eq!(
        with(Conv2dParams::new(1, 64, 56, 56, 256, 3, 3).pad(Padding::uniform(1)), 1, [65, 0]),
        Conv2dPath::Direct
    );
    // The smaller of the two: 64 here.
    let wide_in = Conv2dParams::new(1, 128, 56, 56, 64, 3, 3).pad(Padding::uniform(1));
    assert_eq!(with(wide_in, 1, [64, 0]), Conv2dPath::Winograd);
    assert_eq!(with(wide_in, 1, [65, 0]), Conv2dPath::Direct);
    assert_eq!(with(wino.weight_layout(WeightLayout::Krsc), 1, [usize::MAX; 2]), Conv2dPath::Winograd, "no direct");
    for p in [conv1, rgb, s2(128, 56), wino.layout(TensorLayout::Nhwc)] {
        for w in [1, 2, 3] {
            assert_eq!(with(p, w, [usize::MAX; 2]), path_for(p, w), "{p:?} on {w}");
        }
    }
}

/// A Winograd geometry sent direct by the channel threshold runs direct through the backend, and
/// matches the oracle on both paths.
#[test]
fn the_measured_channel_threshold_picks_the_path_that_runs() {
    let kern = sparkle_std::cpu::isa::gemm_kernel().unwrap();
    let p = Conv2dParams::new(1, 16, 32, 32, 24, 3, 3).pad(Padding::uniform(1));
    let g = p.validate().unwrap();
    for (min, want) in [([16, 16], Conv2dPath::Winograd), ([17, 0], Conv2dPath::Direct)] {
        let base = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kern) }.threads(1);
        let cpu = Cpu { blocking: Blocking { winograd_min_channels: min, ..base.blocking }, ..base };
        assert_eq!(cpu.conv2d_path(&g).unwrap(), want, "{min:?}");
        check(&cpu, p, Activation::Relu, true, 7);
    }
}

/// The `no_std` entry points (statically chosen kernel, caller scratch, one thread): what a
/// microcontroller calls.
#[test]
fn no_std_entry_points_match_oracle() {
    let p = Conv2dParams::new(1, 8, 16, 16, 8, 3, 3).pad(Padding::uniform(1));
    for p in [p, p.groups(8), Conv2dParams::new(1, 8, 16, 16, 16, 1, 1), p.layout(TensorLayout::Nhwc)] {
        let g = p.validate().unwrap();
        let mut x = vec![0.0; g.input_len()];
        let mut w = vec![0.0; g.weight_len()];
        let mut b = vec![0.0; p.k];
        fill(&mut x, 1);
        fill(&mut w, 2);
        fill(&mut b, 3);
        let epi = Epilogue::activation(Activation::Relu).with_bias(&b);
        let mut scratch = vec![0.0; sparkle_core::conv::scratch_len(&g).unwrap()];
        let mut y = vec![0.0; g.output_len()];
        sparkle_core::conv::conv2d(&g, &x, &w, &epi, &mut y, &mut scratch).unwrap();
        let mut want = vec![0.0; g.output_len()];
        conv2d_reference_f64(&g, &x, &w, &epi, &mut want).unwrap();
        let (err, at) = max_error(&y, &want);
        assert!(err <= tolerance(g.gemm_dims().2), "{p:?}: {err:e} at {at:?}");
        // Too little scratch is an error, not an overrun. (Between the least and the fastest
        // path's scratch, a direct or Winograd conv runs as an implicit GEMM.)
        let least = sparkle_core::conv::min_scratch_len(&g).unwrap();
        if least > 0 {
            let short = least - 1;
            assert!(sparkle_core::conv::conv2d(&g, &x, &w, &epi, &mut y, &mut scratch[..short]).is_err());
        }
    }
    let (m, n, k) = (19, 23, 37);
    let mut a = vec![0.0; m * k];
    let mut bm = vec![0.0; k * n];
    fill(&mut a, 4);
    fill(&mut bm, 5);
    let mut c = vec![f32::NAN; m * n];
    let mut scratch = vec![0.0; sparkle_core::gemm::scratch_len(m, n, k).unwrap()];
    let (av, bv) =
        (sparkle_core::MatRef::row_major(&a, m, k).unwrap(), sparkle_core::MatRef::row_major(&bm, k, n).unwrap());
    sparkle_core::gemm::gemm(
        1.0,
        av,
        bv,
        0.0,
        sparkle_core::MatMut::row_major(&mut c, m, n).unwrap(),
        &Epilogue::NONE,
        &mut scratch,
    )
    .unwrap();
    let mut want = vec![0.0; m * n];
    sparkle_core::gemm::reference::gemm_reference_f64(1.0, av, bv, 0.0, None, &Epilogue::NONE, &mut want).unwrap();
    assert!(max_error(&c, &want).0 <= tolerance(k));
}
