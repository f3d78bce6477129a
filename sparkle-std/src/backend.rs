//! One interface over every device that runs Sparkle's ops: the CPU backend and each Vulkan
//! device, with typed failures (a fallback tells a lost device from one out of memory). The
//! multi-device split, the cross-backend tests and the `Sparkle` handle use it.

use sparkle_core::{Conv2d, Epilogue, MatMut, MatRef};

use crate::cpu::CpuError;
use crate::juggler::DeviceId;

/// What kind of device failure happened: a fallback treats them alike (re-run on the CPU), a
/// caller may not (a lost device stays unusable; out-of-memory is about this op's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceErrorKind {
    /// The device was lost (driver reset, hang) or could not be opened.
    Lost,
    /// The device ran out of memory for this op.
    OutOfMemory,
    /// The device rejected the op's parameters (a bug, or a device limit).
    Invalid,
    /// Anything else (a failed submission, a driver error).
    Other,
}

/// A device's failure, typed, with the device's own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {message}")]
pub struct DeviceError {
    /// Which device.
    pub device: DeviceId,
    /// What kind of failure.
    pub kind: DeviceErrorKind,
    /// The device's message.
    pub message: String,
}

#[cfg(feature = "vulkan")]
impl DeviceError {
    /// A Vulkan error of `device`, typed by what it means for a fallback.
    pub fn from_vk(device: DeviceId, e: &sparkle_vk::VkError) -> Self {
        use sparkle_vk::VkError as V;
        let kind = match e {
            V::DeviceLost(_) | V::NoLoader(_) | V::NoDevice { .. } => DeviceErrorKind::Lost,
            V::OutOfMemory(_) => DeviceErrorKind::OutOfMemory,
            V::Core(_) => DeviceErrorKind::Invalid,
            _ => DeviceErrorKind::Other,
        };
        Self { device, kind, message: e.to_string() }
    }
}

impl DeviceError {
    /// A CPU-path failure as a device error of [`DeviceId::Cpu`].
    pub fn from_cpu(e: &CpuError) -> Self {
        let kind = match e {
            CpuError::Core(_) => DeviceErrorKind::Invalid,
            CpuError::OutOfMemory(_) => DeviceErrorKind::OutOfMemory,
            _ => DeviceErrorKind::Other,
        };
        DeviceError { device: DeviceId::Cpu, kind, message: e.to_string() }
    }
}

/// One GEMM's operands but C: `C <- act(alpha * A * B + beta * C + bias)`. What a [`Backend`]
/// and the split take, so the six arguments are written once.
#[derive(Clone, Copy, Debug)]
pub struct GemmOp<'a> {
    /// Scales `A * B`.
    pub alpha: f32,
    /// `m x k`.
    pub a: MatRef<'a>,
    /// `k x n`.
    pub b: MatRef<'a>,
    /// Scales the old C (0: C is only written).
    pub beta: f32,
    /// Bias and activation.
    pub epi: Epilogue<'a>,
}

/// One conv2d's operands but the output: `output = act(conv2d(input, weight) + bias)`.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOp<'a> {
    /// The validated geometry.
    pub g: &'a Conv2d,
    /// The input tensor.
    pub input: &'a [f32],
    /// The weights.
    pub weight: &'a [f32],
    /// Bias (per output channel) and activation.
    pub epi: Epilogue<'a>,
}

/// A device that computes GEMM and conv2d.
pub trait Backend: Sync {
    /// Which device, as the juggler names it.
    fn id(&self) -> DeviceId;
    /// A human-readable description.
    fn name(&self) -> String;
    /// `c <- op` (see [`GemmOp`]).
    fn gemm(&self, op: &GemmOp<'_>, c: MatMut<'_>) -> Result<(), DeviceError>;
    /// `output <- op` (see [`Conv2dOp`]).
    fn conv2d(&self, op: &Conv2dOp<'_>, output: &mut [f32]) -> Result<(), DeviceError>;
}

impl Backend for crate::cpu::Cpu {
    fn id(&self) -> DeviceId {
        DeviceId::Cpu
    }
    fn name(&self) -> String {
        format!("cpu {} x{}", self.kernel.id(), self.threads)
    }
    fn gemm(&self, op: &GemmOp<'_>, c: MatMut<'_>) -> Result<(), DeviceError> {
        crate::cpu::Cpu::gemm(self, op.alpha, op.a, op.b, op.beta, c, &op.epi)
            .map(|_| ())
            .map_err(|e| DeviceError::from_cpu(&e))
    }
    fn conv2d(&self, op: &Conv2dOp<'_>, output: &mut [f32]) -> Result<(), DeviceError> {
        crate::cpu::Cpu::conv2d(self, op.g, op.input, op.weight, &op.epi, output).map_err(|e| DeviceError::from_cpu(&e))
    }
}

#[cfg(feature = "vulkan")]
impl Backend for sparkle_vk::Context {
    fn id(&self) -> DeviceId {
        DeviceId::Vulkan(self.info().index)
    }
    fn name(&self) -> String {
        format!("vulkan {}", self.info().name)
    }
    fn gemm(&self, op: &GemmOp<'_>, c: MatMut<'_>) -> Result<(), DeviceError> {
        sparkle_vk::Context::gemm(self, op.alpha, op.a, op.b, op.beta, c, &op.epi)
            .map(|_| ())
            .map_err(|e| DeviceError::from_vk(Backend::id(self), &e))
    }
    fn conv2d(&self, op: &Conv2dOp<'_>, output: &mut [f32]) -> Result<(), DeviceError> {
        sparkle_vk::Context::conv2d(self, op.g, op.input, op.weight, &op.epi, output)
            .map_err(|e| DeviceError::from_vk(Backend::id(self), &e))
    }
}
