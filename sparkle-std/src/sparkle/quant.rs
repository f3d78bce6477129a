//! int8 GEMM and conv2d through the handle ([`Sparkle::qgemm`], [`Sparkle::qconv2d`]): placed by
//! the juggler like every op (int8 modelled apart, [`crate::juggler::model::variant::INT8`] and
//! `CONV_INT8`), run on the CPU or a Vulkan device (tensor cores where the GPU has int8
//! cooperative matrices), the same bits either way.

use sparkle_core::quant::conv::QConv;
use sparkle_core::quant::{OutputStage, QElem, QGemm, QOperand};
use sparkle_core::{Conv2d, MatMut};

use super::{Op, Prediction, Run, Sparkle, SparkleError};
use crate::cpu::{Cpu, CpuError};
use crate::juggler::{DeviceId, OpDesc};

/// One int8 GEMM or conv2d with its operand and output types erased, as the placement runs it.
pub(super) trait QGemmJob {
    /// Runs it on the CPU.
    fn cpu(&mut self, cpu: &Cpu) -> Result<(), CpuError>;
    /// Runs it on a Vulkan device.
    #[cfg(feature = "vulkan")]
    fn vk(&mut self, ctx: &sparkle_vk::Context) -> Result<(), sparkle_vk::VkError>;
    /// Bytes a Vulkan device copies in and out: A, B and the bias; C.
    fn copies(&self) -> (u64, u64);
}

struct Job<'a, 'b, A: QOperand, B: QOperand, Y: QElem> {
    op: &'b QGemm<'a, A, B>,
    out: &'b OutputStage<'a>,
    c: MatMut<'b, Y>,
}

impl<A: QOperand, B: QOperand, Y: QElem> QGemmJob for Job<'_, '_, A, B, Y> {
    fn cpu(&mut self, cpu: &Cpu) -> Result<(), CpuError> {
        cpu.qgemm(self.op, self.out, self.c.rb_mut()).map(|_| ())
    }
    #[cfg(feature = "vulkan")]
    fn vk(&mut self, ctx: &sparkle_vk::Context) -> Result<(), sparkle_vk::VkError> {
        ctx.qgemm(self.op, self.out, self.c.rb_mut()).map(|_| ())
    }
    fn copies(&self) -> (u64, u64) {
        // Saturating: broadcast views (stride 0) can describe more elements than memory.
        let (a, b) = (&self.op.a, &self.op.b);
        let bias = self.op.bias.map_or(0, |v| 4 * v.len() as u64);
        let up = a.rows().saturating_mul(a.cols()).saturating_add(b.rows().saturating_mul(b.cols())) as u64;
        let c = (self.c.rows().saturating_mul(self.c.cols()) as u64).saturating_mul(std::mem::size_of::<Y>() as u64);
        (up.saturating_add(bias), c)
    }
}

struct ConvJob<'a, 'b, X: QOperand, W: QOperand, Y: QElem> {
    g: &'b Conv2d,
    op: &'b QConv<'a, X, W>,
    out: &'b OutputStage<'a>,
    output: &'b mut [Y],
}

impl<X: QOperand, W: QOperand, Y: QElem> QGemmJob for ConvJob<'_, '_, X, W, Y> {
    fn cpu(&mut self, cpu: &Cpu) -> Result<(), CpuError> {
        cpu.qconv2d(self.g, self.op, self.out, self.output)
    }
    #[cfg(feature = "vulkan")]
    fn vk(&mut self, ctx: &sparkle_vk::Context) -> Result<(), sparkle_vk::VkError> {
        ctx.qconv2d(self.g, self.op, self.out, self.output)
    }
    fn copies(&self) -> (u64, u64) {
        let up = (self.g.input_len() + self.g.weight_len()) as u64 + self.op.bias.map_or(0, |v| 4 * v.len() as u64);
        (up, std::mem::size_of_val(self.output) as u64)
    }
}

impl Sparkle {
    /// `C <- out(A * B)` on int8 operands with zero points ([`sparkle_core::quant`]: ONNX
    /// QLinearMatMul / MatMulInteger, or TFLite's fixed point), exactly the arguments of
    /// [`Cpu::qgemm`], placed by the juggler (int8 modelled apart from f32). On Vulkan:
    /// [`sparkle_vk::Context::qgemm`] (tensor cores where the device has int8 cooperative
    /// matrices); on the CPU, and as the fallback when a device fails: [`Cpu::qgemm`]. Every path
    /// returns the integer oracle's bits. Validated first: a bad argument is an error and C is
    /// untouched.
    pub fn qgemm<'a, A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'a, A, B>,
        out: &OutputStage<'a>,
        c: MatMut<'_, Y>,
    ) -> Result<Run, SparkleError> {
        self.qgemm_at(None, op, out, c)
    }

    /// [`Sparkle::qgemm`] on `device`, as [`Sparkle::gemm_on`].
    pub fn qgemm_on<'a, A: QOperand, B: QOperand, Y: QElem>(
        &self,
        device: DeviceId,
        op: &QGemm<'a, A, B>,
        out: &OutputStage<'a>,
        c: MatMut<'_, Y>,
    ) -> Result<Run, SparkleError> {
        self.qgemm_at(Some(device), op, out, c)
    }

    /// Every device's prediction for an `m x n x k` int8 GEMM writing `Y`, as the juggler weighs
    /// it.
    pub fn predict_qgemm<Y: QElem>(&self, m: usize, n: usize, k: usize) -> Vec<Prediction> {
        self.predict(&OpDesc::qgemm(m, n, k, std::mem::size_of::<Y>()))
    }

    /// `output = out(conv2d(input, weight) + bias)` on int8 input and weights with zero points
    /// (ONNX QLinearConv / ConvInteger, [`sparkle_core::quant::conv`]), exactly the arguments of
    /// [`Cpu::qconv2d`], placed by the juggler (int8 conv modelled apart per geometry). On Vulkan:
    /// [`sparkle_vk::Context::qconv2d`]; on the CPU and as the fallback: [`Cpu::qconv2d`]. The
    /// integer oracle's bits on every path. Validated first: a bad argument is an error and the
    /// output is untouched.
    pub fn qconv2d<'a, X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'a, X, W>,
        out: &OutputStage<'a>,
        output: &mut [Y],
    ) -> Result<Run, SparkleError> {
        self.qconv2d_at(None, g, op, out, output)
    }

    /// [`Sparkle::qconv2d`] on `device`, as [`Sparkle::gemm_on`].
    pub fn qconv2d_on<'a, X: QOperand, W: QOperand, Y: QElem>(
        &self,
        device: DeviceId,
        g: &Conv2d,
        op: &QConv<'a, X, W>,
        out: &OutputStage<'a>,
        output: &mut [Y],
    ) -> Result<Run, SparkleError> {
        self.qconv2d_at(Some(device), g, op, out, output)
    }

    /// Every device's prediction for int8 conv2d `g` writing `Y`, as the juggler weighs it.
    pub fn predict_qconv2d<Y: QElem>(&self, g: &Conv2d) -> Vec<Prediction> {
        self.predict(&OpDesc::qconv2d(g, std::mem::size_of::<Y>()))
    }

    fn qconv2d_at<'a, X: QOperand, W: QOperand, Y: QElem>(
        &self,
        forced: Option<DeviceId>,
        g: &Conv2d,
        op: &QConv<'a, X, W>,
        out: &OutputStage<'a>,
        output: &mut [Y],
    ) -> Result<Run, SparkleError> {
        op.check::<Y>(g, out, output.len())?;
        let desc = OpDesc::qconv2d(g, std::mem::size_of::<Y>());
        let mut job = ConvJob { g, op, out, output };
        self.place_on(forced, &desc, "conv2d int8", Op::QGemm { job: &mut job })
    }

    fn qgemm_at<'a, A: QOperand, B: QOperand, Y: QElem>(
        &self,
        forced: Option<DeviceId>,
        op: &QGemm<'a, A, B>,
        out: &OutputStage<'a>,
        c: MatMut<'_, Y>,
    ) -> Result<Run, SparkleError> {
        let d = op.check(out, &c)?;
        let desc = OpDesc::qgemm(d.m, d.n, d.k, std::mem::size_of::<Y>());
        let mut job = Job { op, out, c };
        self.place_on(forced, &desc, "gemm int8", Op::QGemm { job: &mut job })
    }
}
