//! Quantized conv2d (ONNX QLinearConv / ConvInteger) on every int8 kernel this machine runs,
//! against the integer oracle, bit for bit: stride, asymmetric padding (which reads as the input's
//! zero point), dilation, groups and depthwise, both activation and weight layouts, batches, every
//! operand-type pair, per-channel zero points and scales, both output stages, one and three
//! threads, a proptest over the geometry, and bad input that is an error with the output untouched.
//! Every case also runs with its weights packed ahead (`Cpu::qconv2d_pack`).

use proptest::prelude::*;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::arch::Isa;
use sparkle_core::quant::conv::{qconv2d_reference, QConv};
use sparkle_core::quant::packed::QConvPacked;
use sparkle_core::quant::{OutputStage, PerChannel};
use sparkle_core::{Conv2dParams, Padding, TensorLayout, WeightLayout};
use sparkle_std::cpu::Cpu;
use sparkle_tests::quant::{bytes, check_conv_typed, cpu, kernel, Packed, WZero};

/// `p` on `cpu` and with its weights packed ahead, every operand-type pair of the stage.
fn check_zero(cpu: &Cpu, p: Conv2dParams, stage: usize, w_zero: WZero, seed: u64) {
    sparkle_tests::quant::check_conv(cpu, p, stage, w_zero, seed);
    sparkle_tests::quant::check_conv(&Packed(cpu), p, stage, w_zero, seed);
}

fn check(cpu: &Cpu, p: Conv2dParams, stage: usize, per_channel: bool, seed: u64) {
    check_zero(cpu, p, stage, if per_channel { WZero::Channel } else { WZero::Tensor }, seed)
}

/// The shared geometry sweep ([`sparkle_tests::quant::conv_sweep`]), each case twice.
fn sweep(k: &'static QKernel, threads: usize) {
    let cpu = cpu(k, threads);
    for (i, p) in sparkle_tests::quant::conv_sweep() {
        check(&cpu, p, i % 3, i % 2 == 0, i as u64);
        check(&cpu, p, (i + 1) % 3, i % 2 == 1, i as u64 + 50);
    }
}

/// A ResNet-50 3x3 layer, large enough to use many items and both threads.
fn resnet_layer(k: &'static QKernel) {
    for threads in [1, 3] {
        let p = Conv2dParams::new(1, 64, 28, 28, 64, 3, 3).pad(Padding::uniform(1));
        let cpu = cpu(k, threads);
        check_conv_typed::<_, u8, i8, u8>(&cpu, p, 1, WZero::Channel, 9, |x| x, |x| x as i8);
        check_conv_typed::<_, u8, i8, u8>(&Packed(&cpu), p, 1, WZero::Channel, 9, |x| x, |x| x as i8);
    }
}

/// Channel counts of real networks, whole and partial blocks of 64 per group, at stride 1: the
/// direct conv on kernels that have one (AMX, AVX-512 VNNI: the staged image read in place, its
/// rows past each output row dropped), im2col elsewhere. Every layout pair, one and three threads, and all
/// three kinds of weight zero point (the symmetric one skips the row sums).
fn wide_channels(k: &'static QKernel) {
    let shapes = [
        // Whole blocks, two images.
        Conv2dParams::new(2, 64, 6, 7, 40, 3, 3).pad(Padding::uniform(1)),
        // 56 channels, padded to 64 per staged pixel; asymmetric padding, dilation, 3 x 2.
        Conv2dParams::new(1, 56, 9, 8, 33, 3, 2).dilation(2, 1).pad(Padding::new(2, 0, 1, 1)),
        // Two groups of 64 (each its own staged image and B), padding on two sides only.
        Conv2dParams::new(1, 128, 7, 9, 70, 3, 3).groups(2).pad(Padding::new(0, 1, 1, 0)),
        // 1x1 with padding (not the matrix path): two blocks per pixel, the borders the bias.
        Conv2dParams::new(1, 128, 5, 5, 36, 1, 1).pad(Padding::uniform(1)),
    ];
    let layouts = [
        (TensorLayout::Nchw, WeightLayout::Kcrs),
        (TensorLayout::Nhwc, WeightLayout::Krsc),
        (TensorLayout::Nchw, WeightLayout::Krsc),
        (TensorLayout::Nhwc, WeightLayout::Kcrs),
    ];
    for (i, p) in shapes.into_iter().enumerate() {
        for (j, (layout, wl)) in layouts.into_iter().enumerate() {
            let p = p.layout(layout).weight_layout(wl);
            let cpu = cpu(k, 1 + 2 * (j % 2));
            let zero = [WZero::Tensor, WZero::Channel, WZero::Symmetric][(i + j) % 3];
            check_zero(&cpu, p, (i + j) % 3, zero, (i * 4 + j) as u64);
        }
    }
}

/// Depthwise NHWC (vectorized across the channels): blocks of 32, 16 and 8 channels and a rest
/// of fewer (53 = 32 + 16 + 5; 80 = 32 + 32 + 16; 29 = 16 + 8 + 5; 40 = 32 + 8; 24), interior pixels
/// in runs of one to four and the border ones alone, rows of several 16-pixel tiles, 3x3, 5x5
/// and 7x7 (strided, dilated, asymmetric padding), two rows shared by three workers (the channel
/// blocks split instead), i8 and u8 input, every kind of weight zero point (nonzero ones make
/// weights of up to 255 in magnitude), every output stage, one and three threads, both weight
/// layouts.
fn depthwise_nhwc(k: &'static QKernel) {
    let shapes = [
        Conv2dParams::new(1, 53, 11, 13, 53, 3, 3).groups(53).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 80, 9, 10, 80, 5, 5).groups(80).stride(2, 1).pad(Padding::new(2, 1, 0, 2)),
        Conv2dParams::new(1, 32, 12, 12, 32, 3, 3).groups(32).dilation(2, 2).pad(Padding::uniform(2)),
        Conv2dParams::new(1, 48, 6, 17, 48, 3, 5).groups(48).stride(1, 2).pad(Padding::new(1, 2, 1, 2)),
        Conv2dParams::new(1, 48, 6, 37, 48, 3, 3).groups(48).pad(Padding::uniform(1)),
        Conv2dParams::new(1, 29, 7, 22, 29, 3, 3).groups(29).pad(Padding::new(0, 1, 2, 1)),
        Conv2dParams::new(1, 40, 9, 11, 40, 7, 7).groups(40).pad(Padding::uniform(3)),
        Conv2dParams::new(1, 96, 2, 9, 96, 3, 3).groups(96).pad(Padding::uniform(1)),
        Conv2dParams::new(1, 24, 5, 16, 24, 3, 3).groups(24).pad(Padding::uniform(1)),
    ];
    for (i, p) in shapes.into_iter().enumerate() {
        for (j, wl) in [WeightLayout::Krsc, WeightLayout::Kcrs].into_iter().enumerate() {
            let p = p.layout(TensorLayout::Nhwc).weight_layout(wl);
            let cpu = cpu(k, 1 + 2 * ((i + j) % 2));
            for (z, zero) in [WZero::Tensor, WZero::Channel, WZero::Symmetric].into_iter().enumerate() {
                check_zero(&cpu, p, (i + j + z) % 3, zero, (i * 8 + j * 3 + z) as u64);
            }
        }
    }
}

/// Weights packed once serve every image size: packed for a 12x12 image, where the direct conv
/// (on kernels that have one) is worth it, then run on it and on a 5x5 one, where it drops too
/// many rows for AVX-512 VNNI's and im2col runs instead; whole and partial blocks of channels.
fn packed_any_image(k: &'static QKernel) {
    let cpu = cpu(k, 1);
    for c in [128, 56] {
        let at = |hw: usize| Conv2dParams::new(1, c, hw, hw, 128, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
        let (large, small) = (at(12), at(5));
        let weight: Vec<i8> = bytes(large.weight_len(), 7).into_iter().map(|b| b as i8).collect();
        let packed = cpu.qconv2d_pack(&large, &weight).unwrap();
        for g in [large, small] {
            assert!(packed.fits(k, &g), "{}: packed for 12x12, refused at {:?}", k.id(), g.params());
            let input = bytes(g.input_len(), 8);
            let op = QConv { input: &input, x_zero: 3, weight: &weight, w_zero: PerChannel::Tensor(-2), bias: None };
            let mut want = vec![0i32; g.output_len()];
            qconv2d_reference(&g, &op, &OutputStage::ACCUMULATOR, &mut want).unwrap();
            let op = QConvPacked { input: &input, x_zero: 3, weight: &packed, w_zero: op.w_zero, bias: None };
            let mut got = vec![0i32; g.output_len()];
            cpu.qconv2d_packed(&g, &op, &OutputStage::ACCUMULATOR, &mut got).unwrap();
            assert!(got == want, "{}: packed at 12x12, run on {:?}", k.id(), g.params());
        }
    }
}

/// The core entry with the least scratch (no staged copies, as on a microcontroller's fixed
/// buffers) and with the staged scratch (the NHWC input and KRSC weights copies), each against
/// the oracle, on geometries whose im2col is scattered (NCHW or KCRS), strided, dilated, grouped
/// and with enough pixels per channel that staging applies.
fn least_and_staged_scratch(k: &'static QKernel) {
    use sparkle_core::gemm::driver::Sequential;
    use sparkle_core::quant::conv::{qconv2d_scratch_len, qconv2d_staged_scratch_len, qconv2d_with};
    use sparkle_core::quant::driver::QWorkspace;
    let shapes = [
        Conv2dParams::new(2, 6, 12, 10, 4, 3, 3).pad(Padding::new(1, 0, 2, 1)),
        Conv2dParams::new(1, 8, 11, 11, 6, 3, 3).stride(2, 2).dilation(1, 2).groups(2).pad(Padding::uniform(2)),
        Conv2dParams::new(1, 3, 16, 16, 8, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
    ];
    let mut staged_runs = 0;
    for p in shapes {
        for (layout, wl) in [
            (TensorLayout::Nchw, WeightLayout::Kcrs),
            (TensorLayout::Nchw, WeightLayout::Krsc),
            (TensorLayout::Nhwc, WeightLayout::Kcrs),
        ] {
            let g = p.layout(layout).weight_layout(wl).validate().unwrap();
            let input = bytes(g.input_len(), 7);
            let weight: Vec<i8> = bytes(g.weight_len(), 8).into_iter().map(|x| x as i8).collect();
            let w_zero: Vec<i32> = (0..p.k as i32).map(|j| j % 5 - 2).collect();
            let op =
                QConv { input: &input, x_zero: 9, weight: &weight, w_zero: PerChannel::Channel(&w_zero), bias: None };
            let mut want = vec![0i32; g.output_len()];
            qconv2d_reference(&g, &op, &OutputStage::ACCUMULATOR, &mut want).unwrap();
            let least = qconv2d_scratch_len(k, &g, 1).unwrap();
            let staged = qconv2d_staged_scratch_len(k, &g, 1).unwrap();
            assert!(staged > least, "{p:?}: staging should apply");
            staged_runs += 1;
            for len in [least, staged] {
                let mut scratch = vec![0i32; len];
                let mut got = vec![-1i32; g.output_len()];
                let ws = QWorkspace { kernel: k, exec: &Sequential, scratch: &mut scratch };
                qconv2d_with(&g, &op, &OutputStage::ACCUMULATOR, &mut got, ws).unwrap();
                assert_eq!(got, want, "{}: {p:?} {layout:?} {wl:?} scratch {len}", k.id());
            }
        }
    }
    assert_eq!(staged_runs, 9);
}

fn errors_leave_output_untouched(k: &'static QKernel) {
    let cpu = cpu(k, 2);
    let g = Conv2dParams::new(1, 2, 4, 4, 3, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
    let input = vec![1u8; g.input_len()];
    let weight = vec![1i8; g.weight_len()];
    let op = QConv { input: &input, x_zero: 0, weight: &weight, w_zero: PerChannel::Tensor(0), bias: None };
    let onnx = OutputStage::onnx(1.0, PerChannel::Tensor(1.0), 1.0, 0);
    let mut y = vec![9u8; g.output_len()];
    let mut run = |op: &QConv<'_, u8, i8>, out: &OutputStage<'_>, len: usize| {
        let r = cpu.qconv2d(&g, op, out, &mut y[..len]);
        assert!(y.iter().all(|&v| v == 9), "an error must not write the output");
        r.unwrap_err().to_string()
    };
    let n = g.output_len();
    assert!(run(&QConv { x_zero: -1, ..op }, &onnx, n).contains("zero point of A (x) = -1"));
    assert!(run(&QConv { w_zero: PerChannel::Channel(&[0, 0]), ..op }, &onnx, n).contains("expected 3, found 2"));
    assert!(run(&QConv { bias: Some(&[0; 2]), ..op }, &onnx, n).contains("bias"));
    assert!(run(&QConv { input: &input[1..], ..op }, &onnx, n).contains("input"));
    assert!(run(&op, &onnx, n - 1).contains("output"));
    assert!(run(&op, &OutputStage::onnx(1.0, PerChannel::Channel(&[1.0; 2]), 1.0, 0), n).contains("scale"));
}

/// Few channels in NHWC with KRSC weights, whose kernel rows are short runs of the input (conv1's
/// 7 pixels of 3 channels: 21 bytes), gathered in whole vectors past each run's end where the
/// input holds them and exactly where it does not (the last image's last rows), with the
/// symmetric weight zero point (no row sums: the vector gather) and a random one, one and three
/// threads.
fn short_runs(k: &'static QKernel) {
    let shapes = [
        // conv1's geometry on a small image, one and two images.
        Conv2dParams::new(1, 3, 20, 20, 16, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
        Conv2dParams::new(2, 3, 17, 19, 40, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
        // Runs of 8 and 30 bytes, no padding (every pixel interior), stride 1.
        Conv2dParams::new(1, 2, 9, 10, 9, 3, 4),
        Conv2dParams::new(1, 6, 8, 12, 33, 2, 5).pad(Padding::new(0, 1, 2, 0)),
        // Output rows wide enough for whole panels of interior pixels (gathered a panel at a
        // time where the weights' zero points are symmetric): conv1's geometry, and stride 1
        // without padding, whose last pixels' whole-vector reads would pass the input's end.
        Conv2dParams::new(1, 3, 30, 64, 16, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
        Conv2dParams::new(1, 2, 6, 40, 9, 3, 4),
        // Groups with one-column kernels: each tap a run of its group's channels, border
        // pixels as bytes from the group's first channel.
        Conv2dParams::new(1, 8, 6, 6, 8, 3, 1).groups(2).pad(Padding::uniform(1)),
    ];
    for threads in [1, 3] {
        let cpu = cpu(k, threads);
        for (i, p) in shapes.into_iter().enumerate() {
            let p = p.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc);
            for stage in 0..3 {
                check_zero(&cpu, p, stage, WZero::Symmetric, (i * 3 + stage) as u64);
            }
            check_zero(&cpu, p, 1, WZero::Tensor, i as u64 + 20);
        }
    }
}

macro_rules! qconv_tests {
    ($($(#[$cfg:meta])* $name:ident => $isa:ident ($kernel:path)),* $(,)?) => {$(
        $(#[$cfg])*
        mod $name {
            use super::*;

            #[test]
            fn geometries_one_thread() {
                if let Some(k) = kernel(Isa::$isa) { sweep(k, 1) }
            }
            #[test]
            fn geometries_three_threads() {
                if let Some(k) = kernel(Isa::$isa) { sweep(k, 3) }
            }
            #[test]
            fn resnet_3x3() {
                if let Some(k) = kernel(Isa::$isa) { resnet_layer(k) }
            }
            #[test]
            fn wide_channel_blocks() {
                if let Some(k) = kernel(Isa::$isa) { wide_channels(k) }
            }
            #[test]
            fn depthwise_channels_last() {
                if let Some(k) = kernel(Isa::$isa) { depthwise_nhwc(k) }
            }
            #[test]
            fn short_kernel_row_runs() {
                if let Some(k) = kernel(Isa::$isa) { short_runs(k) }
            }
            #[test]
            fn packed_weights_any_image() {
                if let Some(k) = kernel(Isa::$isa) { packed_any_image(k) }
            }
            #[test]
            fn bad_input_is_an_error() {
                if let Some(k) = kernel(Isa::$isa) { errors_leave_output_untouched(k) }
            }
            #[test]
            fn least_and_staged_scratch_match_the_oracle() {
                if let Some(k) = kernel(Isa::$isa) { least_and_staged_scratch(k) }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(32))]
                #[test]
                fn matches_oracle_bit_for_bit(
                    n in 1usize..3, cg in 1usize..5, groups in 1usize..4, kg in 1usize..6, h in 1usize..10, w in 1usize..10,
                    r in 1usize..4, s in 1usize..4, sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
                    pad in (0usize..3, 0usize..3, 0usize..3, 0usize..3), nhwc: bool, krsc: bool,
                    stage in 0usize..3, per_channel: bool, threads in 1usize..4, seed: u64,
                ) {
                    let Some(kern) = kernel(Isa::$isa) else { return Ok(()) };
                    let p = Conv2dParams::new(n, cg * groups, h, w, kg * groups, r, s)
                        .stride(sh, sw).dilation(dh, dw).groups(groups)
                        .pad(Padding::new(pad.0, pad.1, pad.2, pad.3))
                        .layout(if nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
                        .weight_layout(if krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs });
                    // Geometries the f32 conv rejects (a kernel larger than the padded input) are
                    // not conv2d cases.
                    prop_assume!(p.validate().is_ok());
                    check(&cpu(kern, threads), p, stage, per_channel, seed);
                }
            }
        }
    )*};
}

sparkle_core::for_each_qkernel!(qconv_tests);
