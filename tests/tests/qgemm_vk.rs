//! int8 GEMM on every Vulkan device ([`Context::qgemm`]) against the integer oracle, bit for bit:
//! the CPU's cases (`sparkle_tests::quant::check`: every operand-type pair, per-tensor and
//! per-channel zero points, ONNX and fixed-point stages and the raw accumulator, strided and
//! transposed operands, a column-major C) at sizes around the 64- and 128-wide tiles and the
//! 128-byte padded k, and bad input that must be an error with C untouched. Where a device has
//! int8 cooperative matrices the cases run on them; `SPARKLE_REQUIRE_COOPMAT=1` makes a machine
//! without such a device fail instead of skipping that check.
#![cfg(feature = "vulkan")]

use sparkle_core::quant::{OutputStage, PerChannel, QGemm};
use sparkle_core::{Error, MatMut, MatRef, Param};
use sparkle_tests::quant::{check, Case, Stage};
use sparkle_tests::skip;
use sparkle_vk::VkError;

#[test]
fn int8_gemm_matches_the_oracle_on_every_device() {
    for ctx in sparkle_tests::vk_contexts() {
        // Around the tiles and the 128-byte k slices, k = 0 and 1, unit sizes.
        for (i, &[m, n, k]) in
            [[1, 1, 1], [1, 1, 0], [3, 5, 63], [33, 70, 128], [64, 64, 129], [129, 130, 100], [200, 257, 300]]
                .iter()
                .enumerate()
        {
            check(&ctx, Case { seed: i as u64, ..Case::new(m, n, k) });
            let stage = [Stage::Acc, Stage::Onnx, Stage::Fixed][i % 3];
            let case = Case {
                ta: true,
                c_col: true,
                pad: 3,
                per_channel: i % 2 == 0,
                bias: i % 2 == 1,
                stage,
                seed: 100 + i as u64,
                ..Case::new(m, n, k)
            };
            check(&ctx, case);
        }
        for stage in [Stage::Acc, Stage::Fixed] {
            check(&ctx, Case { ta: true, pad: 1, stage, ..Case::new(97, 45, 1000) });
        }
    }
}

#[test]
fn bad_input_is_an_error_and_c_is_untouched() {
    for ctx in sparkle_tests::vk_contexts() {
        let (a, b) = ([1u8; 6], [1i8; 6]);
        let op = QGemm {
            a: MatRef::row_major(&a, 2, 3).unwrap(),
            a_zero: 0,
            b: MatRef::row_major(&b, 3, 2).unwrap(),
            b_zero: PerChannel::Tensor(0),
            bias: None,
        };
        let mut c = [7u8; 4];
        let onnx = OutputStage::onnx(1.0, PerChannel::Tensor(1.0), 1.0, 0);
        let r = ctx.qgemm(&QGemm { a_zero: 256, ..op }, &onnx, MatMut::row_major(&mut c, 2, 2).unwrap());
        assert!(matches!(r, Err(VkError::Core(Error::OutOfRange { param: Param::AZeroPoint, .. }))), "{r:?}");
        let r = ctx.qgemm(
            &op,
            &OutputStage::onnx(0.0, PerChannel::Tensor(1.0), 1.0, 0),
            MatMut::row_major(&mut c, 2, 2).unwrap(),
        );
        assert!(r.is_err());
        let r = ctx.qgemm(&op, &onnx, MatMut::row_major(&mut c[..3], 1, 3).unwrap());
        assert!(matches!(r, Err(VkError::Core(Error::Mismatch { .. }))), "{r:?}");
        assert_eq!(c, [7; 4]);
    }
}

#[test]
fn cooperative_matrices_are_used_where_a_device_has_them() {
    let ctxs = sparkle_tests::vk_contexts();
    let with: Vec<_> = ctxs.iter().filter(|c| c.info().cooperative_matrix_i8).collect();
    if with.is_empty() {
        return skip("COOPMAT", "no Vulkan device with 16x16x32 int8 cooperative matrices");
    }
    for ctx in with {
        assert!(ctx.has_cooperative_matrix_i8(), "{}: offered but not enabled", ctx.info().name);
        // Several tiles of each kernel (64x64 below 256 tiles of 128x128, 128x128 from there)
        // and a k of many slices, on the tensor cores.
        for [m, n, k] in [[300, 520, 2000], [2050, 2100, 200]] {
            check(ctx, Case { stage: Stage::Fixed, ..Case::new(m, n, k) });
        }
        eprintln!("int8 on cooperative matrices passed on {}", ctx.info().name);
    }
}

/// Accumulators on and around rounding ties through both stages and every output type: A's
/// column holds every u8 (zero point 128), so each output column sweeps `[-128, 127]` times its
/// B value plus its bias, against multipliers of 2^-1 .. 2^-10 (ONNX: ties to even; fixed point:
/// ties away from zero, negative ties included).
#[test]
fn rounding_ties_match_the_oracle() {
    use sparkle_core::quant::reference::qgemm_reference;
    use sparkle_core::quant::QElem;
    fn run<Y: QElem + PartialEq>(ctx: &sparkle_vk::Context, op: &QGemm<'_, u8, i8>, out: &OutputStage<'_>) {
        let n = op.b.cols();
        let (mut got, mut want) = (vec![Y::narrow(0); 256 * n], vec![Y::narrow(0); 256 * n]);
        ctx.qgemm(op, out, MatMut::row_major(&mut got, 256, n).unwrap()).unwrap();
        qgemm_reference(op, out, MatMut::row_major(&mut want, 256, n).unwrap()).unwrap();
        if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
            panic!("{}: {out:?} -> {}: element {at}: {:?} vs oracle {:?}", ctx.info().name, Y::NAME, got[at], want[at]);
        }
    }
    for ctx in sparkle_tests::vk_contexts() {
        let a: Vec<u8> = (0..=255).collect();
        let b = [1i8, 3, -1, 5, 7, -3, 1, 1];
        let bias = [0, 0, 0, 0, 0, 0, 1 << 20, -(1 << 24)];
        let op = QGemm {
            a: MatRef::row_major(&a, 256, 1).unwrap(),
            a_zero: 128,
            b: MatRef::row_major(&b, 1, 8).unwrap(),
            b_zero: PerChannel::Tensor(0),
            bias: Some(&bias),
        };
        let scales = [0.5f32, 0.25, 0.125, 0.5, 0.75, 1.5, 0.5, 1.0 / 1024.0];
        let onnx = OutputStage::onnx(1.0, PerChannel::Channel(&scales), 1.0, 1);
        let (mult, shift) = ([1 << 30; 8], [-1, -2, -3, 0, 1, -5, -1, -10]);
        let fixed = OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), -1, -128, 127);
        for out in [onnx, fixed] {
            run::<i8>(&ctx, &op, &out);
            run::<i32>(&ctx, &op, &out);
        }
        let fixed_u8 = OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), 128, 0, 255);
        run::<u8>(&ctx, &op, &fixed_u8);
    }
}
