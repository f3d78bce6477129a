//! The int8 side of the stamped tests: kernels and CPU paths by ISA, deterministic bytes, and
//! the GEMM cases every int8 backend runs against the integer oracle (`check` through a
//! `QRun`: the CPU, the CPU with B packed ahead, a Vulkan device).

use sparkle_core::arch::quant::QKernel;
use sparkle_core::arch::Isa;
use sparkle_core::quant::conv::{qconv2d_reference, QConv};
use sparkle_core::quant::packed::{QConvPacked, QGemmPacked};
use sparkle_core::quant::reference::qgemm_reference;
use sparkle_core::quant::{OutputStage, PerChannel, QElem, QGemm, QOperand};
use sparkle_core::{Conv2d, Conv2dParams, MatMut, MatRef, Padding, TensorLayout, WeightLayout};
use sparkle_std::cpu::isa::qkernel_for_isa;
use sparkle_std::cpu::Cpu;

/// The int8 kernel for `isa` if this CPU runs it; otherwise a loud skip (a failure when
/// `SPARKLE_REQUIRE_<ISA>=1`).
pub fn kernel(isa: Isa) -> Option<&'static QKernel> {
    match qkernel_for_isa(isa) {
        Ok(k) => Some(k),
        Err(_) => {
            let why = format!("this CPU or build cannot run the {} int8 kernel", isa.name());
            crate::skip(&isa.name().to_uppercase(), &why);
            None
        }
    }
}

/// The CPU path with int8 kernel `k` on `threads` threads, even for tiny problems.
pub fn cpu(k: &'static QKernel, threads: usize) -> Cpu {
    Cpu { qkernel: k, parallel_min_fmas: 0.0, ..Cpu::new().unwrap().threads(threads) }
}

/// `len` deterministic bytes from `seed`.
pub fn bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 56) as u8
        })
        .collect()
}

/// A backend that runs quantized GEMMs: the CPU, the CPU with B packed ahead, a Vulkan device.
pub trait QRun {
    /// What ran, for failure messages.
    fn name(&self) -> String;
    /// `C <- out(A * B)`, or the error's text.
    fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<(), String>;
    /// `output = out(conv2d(input, weight) + bias)`, or the error's text.
    fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), String>;
}

impl QRun for Cpu {
    fn name(&self) -> String {
        self.qkernel.id().to_string()
    }
    fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<(), String> {
        Cpu::qgemm(self, op, out, c).map(|_| ()).map_err(|e| e.to_string())
    }
    fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), String> {
        Cpu::qconv2d(self, g, op, out, output).map_err(|e| e.to_string())
    }
}

/// The CPU with B packed ahead (`Cpu::qgemm_pack`, then `Cpu::qgemm_packed`).
#[derive(Debug)]
pub struct Packed<'a>(pub &'a Cpu);

impl QRun for Packed<'_> {
    fn name(&self) -> String {
        format!("{} packed", self.0.qkernel.id())
    }
    fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<(), String> {
        let packed = self.0.qgemm_pack(&op.b).map_err(|e| e.to_string())?;
        let op = QGemmPacked { a: op.a, a_zero: op.a_zero, b: &packed, b_zero: op.b_zero, bias: op.bias };
        self.0.qgemm_packed(&op, out, c).map(|_| ()).map_err(|e| e.to_string())
    }
    fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), String> {
        let packed = self.0.qconv2d_pack(g, op.weight).map_err(|e| e.to_string())?;
        let op = QConvPacked { input: op.input, x_zero: op.x_zero, weight: &packed, w_zero: op.w_zero, bias: op.bias };
        self.0.qconv2d_packed(g, &op, out, output).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "vulkan")]
impl QRun for sparkle_vk::Context {
    fn name(&self) -> String {
        format!("{} ({})", self.info().name, self.qgemm_path())
    }
    fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<(), String> {
        sparkle_vk::Context::qgemm(self, op, out, c).map(|_| ()).map_err(|e| e.to_string())
    }
    fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), String> {
        sparkle_vk::Context::qconv2d(self, g, op, out, output).map_err(|e| e.to_string())
    }
}

/// How the output is produced.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// The raw accumulator (i32 output).
    Acc,
    /// ONNX, per-channel weight scales.
    Onnx,
    /// Fixed point, per-channel multipliers and shifts, a ReLU-like clamp.
    Fixed,
}

/// One GEMM case: its shape, layouts, zero points, bias, stage and data.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The reduction.
    pub k: usize,
    /// A stored transposed.
    pub ta: bool,
    /// C column-major.
    pub c_col: bool,
    /// Padding on every leading dimension.
    pub pad: usize,
    /// Per-channel B zero points.
    pub per_channel: bool,
    /// A bias.
    pub bias: bool,
    /// The output stage.
    pub stage: Stage,
    /// The data's seed.
    pub seed: u64,
}

impl Case {
    /// `m x n x k`, row-major, per-channel zero points, a bias, the ONNX stage.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Case { m, n, k, ta: false, c_col: false, pad: 0, per_channel: true, bias: true, stage: Stage::Onnx, seed: 3 }
    }
}

fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Runs `case` with operand types `A`, `B` and output `Y` through `run` and the oracle; panics on
/// the first difference (the elements outside C's view included: they must stay unwritten).
fn check_typed<R: QRun, A: QOperand, B: QOperand, Y: QElem + PartialEq>(
    run: &R,
    case: Case,
    conv_a: fn(u8) -> A,
    conv_b: fn(u8) -> B,
) {
    let Case { m, n, k, ta, c_col, pad, per_channel, bias, stage, seed } = case;
    let (a_rs, a_cs) = if ta { (1, m + pad) } else { (k + pad, 1) };
    let (c_rs, c_cs) = if c_col { (1, m + pad) } else { (n + pad, 1) };
    let a: Vec<A> = bytes(extent(m, k, a_rs, a_cs), seed).into_iter().map(conv_a).collect();
    let b: Vec<B> = bytes(k * n, seed + 1).into_iter().map(conv_b).collect();
    let zr = bytes(n + 1, seed + 2);
    let span = (B::MAX - B::MIN) as u32 + 1;
    let zb: Vec<i32> = (0..n).map(|j| B::MIN + (u32::from(zr[j]) * 7 % span) as i32).collect();
    let za = A::MIN + (u32::from(zr[n]) * 13 % ((A::MAX - A::MIN) as u32 + 1)) as i32;
    let bias_v: Vec<i32> = (0..n).map(|j| (j as i32 * 37 % 201 - 100) * 50).collect();
    let op = QGemm {
        a: MatRef::new(&a, m, k, a_rs, a_cs).unwrap(),
        a_zero: za,
        // Column-major B (a conv's weights: each column contiguous, packed by whole groups)
        // where exactly one of A and C is transposed, so every pairing of the three occurs.
        b: if ta != c_col { MatRef::new(&b, k, n, 1, k) } else { MatRef::row_major(&b, k, n) }.unwrap(),
        b_zero: if per_channel {
            PerChannel::Channel(&zb)
        } else {
            PerChannel::Tensor(zb.first().copied().unwrap_or(0))
        },
        bias: bias.then_some(&bias_v[..]),
    };
    let w_scale: Vec<f32> = (0..n).map(|j| 0.001 + 0.0007 * (j % 9) as f32).collect();
    let mult: Vec<i32> = (0..n).map(|j| (1 << 30) + (j as i32 % 97) * 11_000_000).collect();
    let shift: Vec<i32> = (0..n).map(|j| -((j % 11) as i32) - 4).collect();
    let out = match stage {
        Stage::Acc => OutputStage::ACCUMULATOR,
        Stage::Onnx => OutputStage::onnx(0.02, PerChannel::Channel(&w_scale), 0.05, (Y::MIN + Y::MAX) / 2),
        Stage::Fixed => OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), 3, 3, Y::MAX),
    };
    let sentinel = Y::narrow(Y::MIN + 1);
    let mut got = vec![sentinel; extent(m, n, c_rs, c_cs)];
    let mut want = got.clone();
    run.qgemm(&op, &out, MatMut::new(&mut got, m, n, c_rs, c_cs).unwrap()).unwrap();
    qgemm_reference(&op, &out, MatMut::new(&mut want, m, n, c_rs, c_cs).unwrap()).unwrap();
    if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
        panic!(
            "{}: {case:?} {}x{}->{}: element {at}: {:?} vs oracle {:?}",
            run.name(),
            A::NAME,
            B::NAME,
            Y::NAME,
            got[at],
            want[at]
        );
    }
}

/// `case` through `run` for every operand-type pair, each with the output type its stage makes.
pub fn check<R: QRun>(run: &R, case: Case) {
    let to_i8 = |x: u8| x as i8;
    let id = |x: u8| x;
    match case.stage {
        Stage::Acc => {
            check_typed::<R, u8, i8, i32>(run, case, id, to_i8);
            check_typed::<R, i8, u8, i32>(run, case, to_i8, id);
        }
        _ => {
            check_typed::<R, u8, i8, u8>(run, case, id, to_i8);
            check_typed::<R, i8, i8, i8>(run, case, to_i8, to_i8);
            check_typed::<R, u8, u8, u8>(run, case, id, id);
            check_typed::<R, i8, u8, i8>(run, case, to_i8, id);
        }
    }
}

/// The weights' zero points of a conv case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WZero {
    /// One, drawn at random.
    Tensor,
    /// One per output channel, drawn at random.
    Channel,
    /// The symmetric one (0 for i8 weights, 128 for u8): the CPU drivers then skip A's row sums.
    Symmetric,
}

/// conv2d `p` with input type `X`, weights `W` and output `Y` through `run` and the oracle; panics
/// on the first difference. Stage 0: the accumulator (i32 out), 1: ONNX per-channel, 2: fixed
/// point per-channel with a ReLU clamp.
pub fn check_conv_typed<R: QRun, X: QOperand, W: QOperand, Y: QElem + PartialEq>(
    run: &R,
    p: Conv2dParams,
    stage: usize,
    w_zero: WZero,
    seed: u64,
    cx: fn(u8) -> X,
    cw: fn(u8) -> W,
) {
    let g = p.validate().unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let k = p.k;
    let input: Vec<X> = bytes(g.input_len(), seed).into_iter().map(cx).collect();
    let weight: Vec<W> = bytes(g.weight_len(), seed + 1).into_iter().map(cw).collect();
    let z = bytes(k + 1, seed + 2);
    let wz: Vec<i32> = (0..k).map(|j| W::MIN + i32::from(z[j]) % (W::MAX - W::MIN + 1)).collect();
    let xz = X::MIN + i32::from(z[k]) % (X::MAX - X::MIN + 1);
    let bias: Vec<i32> = (0..k).map(|j| (j as i32 * 53 % 301 - 150) * 20).collect();
    let op = QConv {
        input: &input,
        x_zero: xz,
        weight: &weight,
        w_zero: match w_zero {
            WZero::Tensor => PerChannel::Tensor(wz[0]),
            WZero::Channel => PerChannel::Channel(&wz),
            WZero::Symmetric => PerChannel::Tensor(if W::MIN < 0 { 0 } else { 128 }),
        },
        bias: Some(&bias),
    };
    let w_scale: Vec<f32> = (0..k).map(|j| 0.002 + 0.0011 * (j % 7) as f32).collect();
    let mult: Vec<i32> = (0..k).map(|j| (1 << 30) + (j as i32 % 89) * 12_000_000).collect();
    let shift: Vec<i32> = (0..k).map(|j| -((j % 9) as i32) - 5).collect();
    let out = match stage {
        0 => OutputStage::ACCUMULATOR,
        1 => OutputStage::onnx(0.03, PerChannel::Channel(&w_scale), 0.07, (Y::MIN + Y::MAX) / 2),
        _ => {
            OutputStage::fixed(PerChannel::Channel(&mult), PerChannel::Channel(&shift), Y::MIN + 2, Y::MIN + 2, Y::MAX)
        }
    };
    let fill = Y::narrow(Y::MIN + 3);
    let mut got = vec![fill; g.output_len()];
    let mut want = got.clone();
    run.qconv2d(&g, &op, &out, &mut got).unwrap_or_else(|e| panic!("{}: {p:?}: {e}", run.name()));
    qconv2d_reference(&g, &op, &out, &mut want).unwrap();
    if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("{}: {p:?} stage {stage}: output {at}: {:?} vs oracle {:?}", run.name(), got[at], want[at]);
    }
}

/// conv2d `p` through `run` for the operand-type pairs of `stage`.
pub fn check_conv<R: QRun>(run: &R, p: Conv2dParams, stage: usize, w_zero: WZero, seed: u64) {
    let to_i8 = |x: u8| x as i8;
    let id = |x: u8| x;
    if stage == 0 {
        check_conv_typed::<R, u8, i8, i32>(run, p, stage, w_zero, seed, id, to_i8);
        check_conv_typed::<R, i8, u8, i32>(run, p, stage, w_zero, seed, to_i8, id);
    } else {
        check_conv_typed::<R, u8, i8, u8>(run, p, stage, w_zero, seed, id, to_i8);
        check_conv_typed::<R, i8, i8, i8>(run, p, stage, w_zero, seed, to_i8, to_i8);
        check_conv_typed::<R, u8, u8, u8>(run, p, stage, w_zero, seed, id, id);
    }
}

/// The conv geometries every int8 backend is checked on, each in both activation layouts and
/// both weight layouts, numbered by geometry: padding, pointwise, stride with asymmetric padding,
/// dilation, groups, strided depthwise, a tall 7x2 filter, grouped pointwise, dilated depthwise.
pub fn conv_sweep() -> Vec<(usize, Conv2dParams)> {
    let shapes = [
        Conv2dParams::new(1, 3, 9, 11, 5, 3, 3).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 8, 7, 7, 19, 1, 1),
        Conv2dParams::new(1, 6, 10, 9, 7, 3, 3).stride(2, 2).pad(Padding::new(1, 0, 2, 1)),
        Conv2dParams::new(1, 4, 12, 12, 6, 3, 3).dilation(2, 2).pad(Padding::uniform(2)),
        Conv2dParams::new(1, 8, 8, 8, 12, 3, 3).groups(4).pad(Padding::uniform(1)),
        Conv2dParams::new(2, 16, 9, 9, 16, 3, 3).groups(16).stride(2, 2).pad(Padding::uniform(1)),
        Conv2dParams::new(1, 5, 11, 6, 33, 7, 2).stride(3, 1).pad(Padding::new(3, 0, 3, 1)),
        // Pointwise (read as a matrix), grouped, two images.
        Conv2dParams::new(2, 8, 5, 6, 12, 1, 1).groups(4),
        // Depthwise at stride 1 (the CPU's staged rows), dilated, channels shared unevenly by workers.
        Conv2dParams::new(2, 7, 9, 21, 7, 3, 3).groups(7).dilation(2, 2).pad(Padding::uniform(2)),
    ];
    let mut out = Vec::new();
    for (i, p) in shapes.into_iter().enumerate() {
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            for wl in [WeightLayout::Kcrs, WeightLayout::Krsc] {
                out.push((i, p.layout(layout).weight_layout(wl)));
            }
        }
    }
    out
}
