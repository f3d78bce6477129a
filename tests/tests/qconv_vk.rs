//! int8 conv2d on every Vulkan device ([`sparkle_vk::Context::qconv2d`]: the input staged by the
//! host, the patches gathered on the device by the int8 GEMM's kernels) against the integer
//! oracle, bit for bit: the CPU's geometry
//! sweep (stride, asymmetric padding read as the input's zero point, dilation, groups and
//! depthwise, both activation and weight layouts, batches, every operand-type pair, per-tensor and
//! per-channel zero points, both stages and the accumulator), a ResNet-50 3x3 layer, and bad input
//! that is an error with the output untouched.
#![cfg(feature = "vulkan")]

use sparkle_core::quant::conv::QConv;
use sparkle_core::quant::{OutputStage, PerChannel};
use sparkle_core::{Conv2dParams, Padding};
use sparkle_tests::quant::{check_conv, WZero};

#[test]
fn int8_conv2d_matches_the_oracle_on_every_device() {
    for ctx in sparkle_tests::vk_contexts() {
        for (i, p) in sparkle_tests::quant::conv_sweep() {
            // Every case with per-channel weight zero points (which the depthwise kernel and the
            // GEMM's patch sums subtract) and with one of the per-tensor kinds.
            for zero in [WZero::Channel, [WZero::Tensor, WZero::Symmetric][i % 2]] {
                check_conv(&ctx, p, i % 3, zero, i as u64);
            }
        }
        let resnet = Conv2dParams::new(1, 64, 28, 28, 64, 3, 3).pad(Padding::uniform(1));
        check_conv(&ctx, resnet, 1, WZero::Channel, 9);
    }
}

#[test]
fn bad_input_is_an_error_and_the_output_is_untouched() {
    for ctx in sparkle_tests::vk_contexts() {
        let g = Conv2dParams::new(1, 2, 4, 4, 3, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
        let (input, weight) = (vec![1u8; g.input_len()], vec![1i8; g.weight_len()]);
        let op = QConv { input: &input, x_zero: 0, weight: &weight, w_zero: PerChannel::Tensor(0), bias: None };
        let onnx = OutputStage::onnx(1.0, PerChannel::Tensor(1.0), 1.0, 0);
        let mut y = vec![7u8; g.output_len()];
        assert!(ctx.qconv2d(&g, &QConv { x_zero: -1, ..op }, &onnx, &mut y).is_err());
        assert!(ctx.qconv2d(&g, &QConv { w_zero: PerChannel::Channel(&[0, 0]), ..op }, &onnx, &mut y).is_err());
        assert!(ctx.qconv2d(&g, &QConv { input: &input[1..], ..op }, &onnx, &mut y).is_err());
        let n = y.len();
        assert!(ctx.qconv2d(&g, &op, &onnx, &mut y[..n - 1]).is_err());
        assert!(y.iter().all(|&v| v == 7));
    }
}
