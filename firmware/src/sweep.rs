//! The int8 kernel's sweep on the target (`cargo run --release --features sweep`): what the
//! demo cases never reach on the Cortex-M4's SMLAD kernel, each GEMM and conv bit for bit against
//! the integer oracle. The demo cases are all s8 x s8 -> s8 through TFLite's fixed-point stage,
//! symmetric weights, whole 2 x 2 tiles and even reductions, so they run only the kernel's fused
//! form; here:
//! - every operand pair (u8/s8 x u8/s8), so the row sums of a zero point and both widenings run;
//! - every output stage: the int32 accumulator, ONNX's float stage (u8 and s8 out) and the fixed
//!   point one (fused only for s8 x s8 -> s8 with symmetric weights; the others through the
//!   plain kernel and the driver's write-out);
//! - ragged shapes: edge tiles in both directions, odd reductions (the pair loop's tail), a
//!   reduction of one, a single element, and weights' zero points per channel;
//! - convs through the same kernel: strided, padded, grouped, dilated, both layouts.
//!
//! A separate build, so the demo firmware's kernel set (`measure.sh`) holds only what its cases
//! instantiate.

use cortex_m_semihosting::hprintln;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::gemm::driver::Sequential;
use sparkle_core::quant::conv::{qconv2d_reference, qconv2d_scratch_len, qconv2d_with, QConv};
use sparkle_core::quant::driver::{qgemm_scratch_len, qgemm_with, QWorkspace};
use sparkle_core::quant::reference::qgemm_reference;
use sparkle_core::quant::{quantize_multiplier, OutputStage, PerChannel, QElem, QGemm, QOperand};
use sparkle_core::{Conv2dParams, MatMut, MatRef, Padding, TensorLayout};

/// The most elements of any operand or output here.
const LEN: usize = 640;
/// The most output channels (columns of B).
const CH: usize = 12;

/// Which output stage a case runs.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The int32 accumulator.
    Accumulator,
    /// ONNX's float multiplier, round half to even.
    Onnx,
    /// TFLite's fixed-point multiplier and shift, ReLU at the output offset.
    Fixed,
}

/// `LEN` values of `T` from a xorshift stream, spread over the type's whole range (both ends and
/// the middle; not every value in every case's slice).
fn values<T: QElem>(seed: u32) -> [T; LEN] {
    let mut xs = crate::xorshift(seed);
    core::array::from_fn(|_| T::narrow(T::MIN + (xs.next().unwrap_or(0) >> 24) as i32))
}

/// The stage's multipliers: per channel for ONNX (`w_scale`) and fixed point (`mult`, `shift`).
struct Scales {
    w_scale: [f32; CH],
    mult: [i32; CH],
    shift: [i32; CH],
}

impl Scales {
    fn new() -> Option<Self> {
        let w_scale: [f32; CH] = core::array::from_fn(|j| 0.002 * (1 + j % 5) as f32);
        let (mut mult, mut shift) = ([0; CH], [0; CH]);
        for j in 0..CH {
            let (m, s) = quantize_multiplier(f64::from(0.03f32) * f64::from(w_scale[j]) / f64::from(0.07f32)).ok()?;
            mult[j] = m;
            shift[j] = s;
        }
        Some(Scales { w_scale, mult, shift })
    }

    /// The output stage for `Y` over `n` channels.
    fn stage<Y: QElem>(&self, stage: Stage, n: usize) -> OutputStage<'_> {
        // An output zero point inside Y's range and off its middle.
        let y_zero = Y::MIN + 100;
        match stage {
            Stage::Accumulator => OutputStage::ACCUMULATOR,
            Stage::Onnx => OutputStage::onnx(0.03, PerChannel::Channel(&self.w_scale[..n]), 0.07, y_zero),
            Stage::Fixed => OutputStage::fixed(
                PerChannel::Channel(&self.mult[..n]),
                PerChannel::Channel(&self.shift[..n]),
                y_zero,
                y_zero,
                Y::MAX,
            ),
        }
    }
}

/// One GEMM `m x n x k` of `A x B -> Y` with `stage`, bit for bit against the oracle.
fn gemm<A: QOperand, B: QOperand, Y: QElem + PartialEq>(
    (m, n, k): (usize, usize, usize),
    stage: Stage,
    symmetric: bool,
    scratch: &mut [i32],
) -> bool {
    let ok = (|| {
        let kernel = QKernel::best();
        let need = qgemm_scratch_len(kernel, m, n, k, 1).ok()?;
        if need > scratch.len() || m * k > LEN || k * n > LEN || m * n > LEN || n > CH {
            hprintln!("  buffers too small (scratch {})", need);
            return None;
        }
        let (a, b) = (values::<A>(m as u32 * 31 + k as u32), values::<B>(n as u32 * 17 + 3));
        let b_zeros: [i32; CH] = core::array::from_fn(|j| B::MIN + 60 + 13 * j as i32);
        let bias: [i32; CH] = core::array::from_fn(|j| (j as i32 - 6) * 389);
        let scales = Scales::new()?;
        let out = scales.stage::<Y>(stage, n);
        let op = QGemm {
            a: MatRef::row_major(&a[..m * k], m, k).ok()?,
            a_zero: A::MIN + 77,
            b: MatRef::row_major(&b[..k * n], k, n).ok()?,
            b_zero: if symmetric { PerChannel::Tensor(0) } else { PerChannel::Channel(&b_zeros[..n]) },
            bias: Some(&bias[..n]),
        };
        let (mut got, mut want) = ([Y::narrow(Y::MIN); LEN], [Y::narrow(Y::MIN); LEN]);
        let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..need] };
        qgemm_with(&op, &out, MatMut::row_major(&mut got[..m * n], m, n).ok()?, ws).ok()?;
        qgemm_reference(&op, &out, MatMut::row_major(&mut want[..m * n], m, n).ok()?).ok()?;
        Some(got[..m * n] == want[..m * n])
    })()
    .unwrap_or(false);
    if !ok {
        let zeros = if symmetric { "symmetric" } else { "zero points per channel" };
        hprintln!("FAIL int8 sweep gemm {}x{}x{} {}x{}->{} {:?}, {}", m, n, k, A::NAME, B::NAME, Y::NAME, stage, zeros);
    }
    ok
}

/// One conv of `X x W -> Y` with `stage`, bit for bit against the oracle.
fn conv<X: QOperand, W: QOperand, Y: QElem + PartialEq>(p: Conv2dParams, stage: Stage, scratch: &mut [i32]) -> bool {
    let ok = (|| {
        let g = p.validate().ok()?;
        let kernel = QKernel::best();
        let need = qconv2d_scratch_len(kernel, &g, 1).ok()?;
        if need > scratch.len() || g.input_len() > LEN || g.weight_len() > LEN || g.output_len() > LEN || p.k > CH {
            hprintln!("  buffers too small (scratch {})", need);
            return None;
        }
        let (x, w) = (values::<X>(5), values::<W>(6));
        let bias: [i32; CH] = core::array::from_fn(|j| (j as i32 - 4) * 251);
        let scales = Scales::new()?;
        let out = scales.stage::<Y>(stage, p.k);
        let op = QConv {
            input: &x[..g.input_len()],
            x_zero: X::MIN + 90,
            weight: &w[..g.weight_len()],
            w_zero: PerChannel::Tensor(0),
            bias: Some(&bias[..p.k]),
        };
        let (mut got, mut want) = ([Y::narrow(Y::MIN); LEN], [Y::narrow(Y::MIN); LEN]);
        let ws = QWorkspace { kernel, exec: &Sequential, scratch: &mut scratch[..need] };
        qconv2d_with(&g, &op, &out, &mut got[..g.output_len()], ws).ok()?;
        qconv2d_reference(&g, &op, &out, &mut want[..g.output_len()]).ok()?;
        Some(got[..g.output_len()] == want[..g.output_len()])
    })()
    .unwrap_or(false);
    if !ok {
        hprintln!("FAIL int8 sweep conv {:?} {}x{}->{} {:?}", p, X::NAME, W::NAME, Y::NAME, stage);
    }
    ok
}

/// Every GEMM shape on one operand pair, through all three stages (`Y`: the requantized type).
fn gemms<A: QOperand, B: QOperand, Y: QElem + PartialEq>(scratch: &mut [i32]) -> (usize, bool) {
    // Edge tiles both ways, odd reductions, a reduction of one, one element, whole tiles.
    const SHAPES: [(usize, usize, usize); 6] = [(5, 3, 7), (2, 9, 1), (7, 6, 33), (1, 1, 2), (4, 4, 3), (6, 12, 40)];
    let (mut cases, mut all) = (0, true);
    for shape in SHAPES {
        for symmetric in [true, false] {
            all &= gemm::<A, B, i32>(shape, Stage::Accumulator, symmetric, scratch);
            all &= gemm::<A, B, Y>(shape, Stage::Onnx, symmetric, scratch);
            all &= gemm::<A, B, Y>(shape, Stage::Fixed, symmetric, scratch);
            cases += 3;
        }
    }
    (cases, all)
}

/// Runs the sweep; prints one `PASS` line per group (a `FAIL` line per failing case).
pub fn run(scratch: &mut [i32]) -> bool {
    hprintln!("int8 sweep on {}", QKernel::best().id());
    let mut all = true;
    for (name, (cases, ok)) in [
        ("u8 x s8", gemms::<u8, i8, u8>(scratch)),
        ("s8 x s8", gemms::<i8, i8, i8>(scratch)),
        ("u8 x u8", gemms::<u8, u8, u8>(scratch)),
        ("s8 x u8", gemms::<i8, u8, i8>(scratch)),
    ] {
        hprintln!(
            "{} int8 sweep gemm {} ({} cases: 6 shapes, both weight symmetries, 3 stages)",
            pass(ok),
            name,
            cases
        );
        all &= ok;
    }
    let base = Conv2dParams::new(1, 6, 7, 9, 4, 3, 3);
    let convs = [
        base.pad(Padding::new(1, 0, 2, 1)).stride(2, 1),
        base.groups(2).dilation(1, 2),
        base.layout(TensorLayout::Nhwc).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 3, 5, 5, 5, 1, 1),
        Conv2dParams::new(1, 4, 6, 6, 4, 3, 3).groups(4).pad(Padding::uniform(1)),
    ];
    let mut ok = true;
    for p in convs {
        ok &= conv::<u8, i8, u8>(p, Stage::Onnx, scratch);
        ok &= conv::<i8, i8, i8>(p, Stage::Fixed, scratch);
        ok &= conv::<u8, i8, i32>(p, Stage::Accumulator, scratch);
    }
    hprintln!(
        "{} int8 sweep conv ({} cases: strided, grouped, dilated, NHWC, 1x1, depthwise)",
        pass(ok),
        3 * convs.len()
    );
    all & ok
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}
