//! Every int8 GEMM kernel this machine can run, stamped with the same tests against the integer
//! oracle, which they must match bit for bit: edge sizes around mr/nr and the k-group, every
//! pair of operand types (u8/i8 x u8/i8), per-tensor and per-channel zero points, both output
//! stages (ONNX, fixed point) and the raw accumulator, strided and transposed operands, one and
//! three threads, a proptest, and bad input that must be an error with C untouched. Every case
//! also runs with B packed ahead (`Cpu::qgemm_pack`).

use proptest::prelude::*;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::arch::Isa;
use sparkle_core::quant::{OutputStage, PerChannel, QGemm};
use sparkle_core::{Error, MatMut, MatRef, Param};
use sparkle_std::cpu::Cpu;
use sparkle_tests::quant::{cpu, kernel, Case, Packed, Stage};

/// `case` on `cpu`, and with B packed ahead.
fn check(cpu: &Cpu, case: Case) {
    sparkle_tests::quant::check(cpu, case);
    sparkle_tests::quant::check(&Packed(cpu), case);
}

fn edge_sizes(k: &'static QKernel, threads: usize) {
    let cpu = cpu(k, threads);
    let (mr, nr, g) = (k.mr(), k.nr(), k.k_group());
    for m in 0..=2 * mr + 1 {
        for kk in [0, 1, g - 1, g, g + 1, 2 * g + 1, 37] {
            check(&cpu, Case::new(m, nr + 3, kk));
        }
    }
    for n in 0..=2 * nr + 1 {
        for kk in [1, 2 * g + 1] {
            check(&cpu, Case { stage: Stage::Fixed, ..Case::new(mr + 1, n, kk) });
        }
    }
}

fn layouts_and_stages(k: &'static QKernel, threads: usize) {
    let cpu = cpu(k, threads);
    for stage in [Stage::Acc, Stage::Onnx, Stage::Fixed] {
        for (ta, c_col, pad, per_channel, bias) in [
            (false, false, 0, true, true),
            (true, false, 3, false, true),
            (false, true, 1, true, false),
            (true, true, 0, false, false),
        ] {
            let case =
                Case { ta, c_col, pad, per_channel, bias, stage, ..Case::new(3 * k.mr() + 1, 2 * k.nr() + 3, 45) };
            check(&cpu, case);
        }
    }
}

/// Bad parameters are errors naming what is wrong, and C is not written.
fn errors_leave_c_untouched(k: &'static QKernel) {
    let cpu = cpu(k, 2);
    let a = [1u8; 6];
    let b = [1i8; 6];
    let op = QGemm {
        a: MatRef::row_major(&a, 2, 3).unwrap(),
        a_zero: 0,
        b: MatRef::row_major(&b, 3, 2).unwrap(),
        b_zero: PerChannel::Tensor(0),
        bias: None,
    };
    let mut c = [7u8; 4];
    let mut run = |op: &QGemm<'_, u8, i8>, out: &OutputStage<'_>| {
        let r = cpu.qgemm(op, out, MatMut::row_major(&mut c, 2, 2).unwrap());
        assert_eq!(c, [7; 4], "an error must not write C");
        r.unwrap_err().to_string()
    };
    let onnx = OutputStage::onnx(1.0, PerChannel::Tensor(1.0), 1.0, 0);
    assert!(run(&QGemm { a_zero: 256, ..op }, &onnx).contains("zero point of A (x) = 256 is outside [0, 255]"));
    assert!(run(&QGemm { b_zero: PerChannel::Tensor(-129), ..op }, &onnx).contains("zero point of B (w) = -129"));
    assert!(run(&QGemm { b_zero: PerChannel::Channel(&[0]), ..op }, &onnx).contains("expected 2, found 1"));
    assert!(run(&QGemm { bias: Some(&[1]), ..op }, &onnx).contains("bias"));
    assert!(run(&op, &OutputStage::onnx(0.0, PerChannel::Tensor(1.0), 1.0, 0)).contains("scale"));
    assert!(run(&op, &OutputStage::onnx(1.0, PerChannel::Tensor(f32::NAN), 1.0, 0)).contains("scale"));
    assert!(run(&op, &OutputStage::onnx(1.0, PerChannel::Channel(&[1.0; 3]), 1.0, 0)).contains("expected 2, found 3"));
    let fixed = |m, s| OutputStage::fixed(PerChannel::Tensor(m), PerChannel::Tensor(s), 0, 0, 255);
    assert!(run(&op, &fixed(-1, 0)).contains("multiplier"));
    assert!(run(&op, &fixed(1 << 30, 31)).contains("shift = 31"));
    assert!(
        run(&op, &OutputStage { zero_point: 3, ..OutputStage::ACCUMULATOR }).contains("zero point of the output (y)")
    );
    // A reduction too long for an exact i32 sum (u8 x i8 at zero points 0: 65 793).
    let long_a = vec![255u8; 65_794];
    let long_b = vec![-128i8; 65_794];
    let long = QGemm {
        a: MatRef::row_major(&long_a, 1, 65_794).unwrap(),
        b: MatRef::row_major(&long_b, 65_794, 1).unwrap(),
        ..op
    };
    let mut one = [0i32; 1];
    let err = cpu.qgemm(&long, &OutputStage::ACCUMULATOR, MatMut::row_major(&mut one, 1, 1).unwrap()).unwrap_err();
    assert!(matches!(
        err,
        sparkle_std::cpu::CpuError::Core(Error::OutOfRange { param: Param::Accumulator, max: 65_793, .. })
    ));
    // One shorter is exact: 65 793 * 255 * -128 = -2 147 483 520.
    let fits = QGemm {
        a: MatRef::row_major(&long_a[1..], 1, 65_793).unwrap(),
        b: MatRef::row_major(&long_b[1..], 65_793, 1).unwrap(),
        ..op
    };
    cpu.qgemm(&fits, &OutputStage::ACCUMULATOR, MatMut::row_major(&mut one, 1, 1).unwrap()).unwrap();
    assert_eq!(one[0], -2_147_483_520);
}

/// One test module per registered int8 kernel, stamped from the core's registration list
/// (`sparkle_core::for_each_qkernel!`): a kernel added there is tested here without an edit.
macro_rules! qkernel_tests {
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
            fn layouts_and_output_stages() {
                if let Some(k) = kernel(Isa::$isa) { layouts_and_stages(k, 1); layouts_and_stages(k, 3) }
            }
            #[test]
            fn bad_input_is_an_error() {
                if let Some(k) = kernel(Isa::$isa) { errors_leave_c_untouched(k) }
            }
            #[test]
            fn large_threads() {
                if let Some(k) = kernel(Isa::$isa) {
                    for threads in [1, 2] {
                        check(&cpu(k, threads), Case::new(301, 277, 300));
                    }
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(48))]
                #[test]
                fn matches_oracle_bit_for_bit(
                    m in 0usize..40, n in 0usize..70, k in 0usize..90, ta: bool, c_col: bool, pad in 0usize..3,
                    per_channel: bool, bias: bool, stage in 0usize..3, threads in 1usize..4, seed: u64,
                ) {
                    let Some(kern) = kernel(Isa::$isa) else { return Ok(()) };
                    let stage = [Stage::Acc, Stage::Onnx, Stage::Fixed][stage];
                    check(&cpu(kern, threads), Case { m, n, k, ta, c_col, pad, per_channel, bias, stage, seed });
                }
            }
        }
    )*};
}

sparkle_core::for_each_qkernel!(qkernel_tests);
