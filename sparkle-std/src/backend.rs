//! One interface over every device that runs Sparkle's ops: the CPU backend and each Vulkan
//! device. The multi-device split, the cross-backend tests and the juggler's callers use it.

use sparkle_core::{Conv2d, Epilogue, MatMut, MatRef};

use crate::juggler::DeviceId;

/// A device that computes GEMM and conv2d.
pub trait Backend: Sync {
    /// Which device, as the juggler names it.
    fn id(&self) -> DeviceId;
    /// A human-readable description.
    fn name(&self) -> String;
    /// `C <- act(alpha * A * B + beta * C + bias)`.
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<(), String>;
    /// `output = act(conv2d(input, weight) + bias)`.
    fn conv2d(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &[f32],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), String>;
}

impl Backend for crate::cpu::Cpu {
    fn id(&self) -> DeviceId {
        DeviceId::Cpu
    }
    fn name(&self) -> String {
        format!("cpu {} x{}", self.kernel.id(), self.threads)
    }
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<(), String> {
        crate::cpu::Cpu::gemm(self, alpha, a, b, beta, c, epi).map(|_| ()).map_err(|e| e.to_string())
    }
    fn conv2d(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &[f32],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), String> {
        crate::cpu::Cpu::conv2d(self, g, input, weight, epi, output).map_err(|e| e.to_string())
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
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<(), String> {
        sparkle_vk::Context::gemm(self, alpha, a, b, beta, c, epi).map(|_| ()).map_err(|e| e.to_string())
    }
    fn conv2d(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &[f32],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), String> {
        sparkle_vk::Context::conv2d(self, g, input, weight, epi, output).map_err(|e| e.to_string())
    }
}
