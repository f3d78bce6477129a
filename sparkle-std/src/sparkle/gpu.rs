//! The Vulkan devices of a [`Sparkle`]: each opened on its first op, closed when it is lost (its
//! generation moves on, so the tensors it held are known to be gone) and re-opened by a later op;
//! injected faults for tests; the ops on host slices there.

use std::collections::HashSet;
use std::sync::Mutex;

#[cfg(feature = "vulkan")]
use sparkle_core::f16::{HalfMats, HalfSlices};

use super::{DeviceError, DeviceErrorKind, Op, Sparkle};
use crate::juggler::{DeviceId, OpKind};

/// One Vulkan device of a [`Sparkle`]: opened on first use, re-opened after it was lost.
pub(super) struct Gpu {
    pub(super) desc: GpuDesc,
    #[cfg(feature = "vulkan")]
    pub(super) slot: Mutex<Slot>,
    /// (op kind, path) pairs this device has run: the first of each is set-up, not run time.
    pub(super) seen: Mutex<HashSet<(OpKind, &'static str)>>,
}

/// A Vulkan device's open context and its generation: a lost device's context is dropped and the
/// generation moves on, so tensors it held are known to be gone; the next op opens a fresh one.
#[cfg(feature = "vulkan")]
#[derive(Default)]
pub(super) struct Slot {
    ctx: Option<std::sync::Arc<sparkle_vk::Context>>,
    generation: u64,
}

impl Sparkle {
    pub(super) fn gpu(&self, device: DeviceId) -> Option<&Gpu> {
        match device {
            DeviceId::Vulkan(i) => self.gpus.iter().find(|g| g.desc.index == i),
            DeviceId::Cpu => None,
        }
    }

    /// Runs the op on a Vulkan device; returns its description for [`Run::kernel`].
    #[cfg(feature = "vulkan")]
    pub(super) fn run_gpu(&self, device: DeviceId, op: &mut Op<'_, '_>) -> Result<String, DeviceError> {
        let gpu = self.gpu(device).ok_or_else(|| not_here(device))?;
        self.on_gpu(gpu, |ctx, _| {
            let r = match op {
                Op::Gemm { alpha, a, b, beta, c, epi, precision } => {
                    ctx.gemm_with_precision(*precision, *alpha, *a, *b, *beta, c.rb_mut(), epi).map(|_| ())
                }
                Op::Conv2d { g, input, weight, epi, output } => ctx.conv2d(g, input, weight, epi, output),
                Op::GemmHalf { ab: HalfMats::F16(a, b), c, epi } => ctx.gemm_half(a, b, c.rb_mut(), epi).map(|_| ()),
                Op::GemmHalf { ab: HalfMats::Bf16(a, b), c, epi } => ctx.gemm_half(a, b, c.rb_mut(), epi).map(|_| ()),
                Op::Conv2dHalf { g, xw: HalfSlices::F16(x, w), epi, output } => ctx.conv2d_half(g, x, w, epi, output),
                Op::Conv2dHalf { g, xw: HalfSlices::Bf16(x, w), epi, output } => ctx.conv2d_half(g, x, w, epi, output),
                Op::QGemm { job } => job.vk(ctx),
            };
            r.map_err(|e| DeviceError::from_vk(device, &e))
        })?;
        Ok(format!("vulkan {}", gpu.desc.name))
    }

    /// Runs `work` on `gpu`'s context (opened if needed) and its generation, after the injected
    /// fault if one is due. A lost device is closed: its tensors are gone, and the next op
    /// opens it afresh.
    #[cfg(feature = "vulkan")]
    pub(super) fn on_gpu<T>(
        &self,
        gpu: &Gpu,
        work: impl FnOnce(&sparkle_vk::Context, u64) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let device = DeviceId::Vulkan(gpu.desc.index);
        let (ctx, generation) = {
            let mut slot = gpu.slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.ctx.is_none() {
                let ctx = sparkle_vk::Context::new(gpu.desc.index).map_err(|e| DeviceError::from_vk(device, &e))?;
                slot.ctx = Some(std::sync::Arc::new(ctx));
            }
            (slot.ctx.clone().expect("opened above"), slot.generation)
        };
        let n = self.gpu_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let r = match self.faults {
            Some(f) if f.every > 0 && n.is_multiple_of(f.every) => {
                Err(DeviceError { device, kind: f.kind, message: format!("injected fault (op {n})") })
            }
            _ => work(&ctx, generation),
        };
        if let Err(e) = &r {
            if e.kind == DeviceErrorKind::Lost {
                self.close(gpu, generation);
            }
        }
        r
    }

    /// Drops `gpu`'s context of `generation` (if still current) after a loss.
    #[cfg(feature = "vulkan")]
    pub(super) fn close(&self, gpu: &Gpu, generation: u64) {
        let mut slot = gpu.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == generation {
            slot.ctx = None;
            slot.generation += 1;
            // Re-opening compiles the pipelines again: set-up, not run time.
            gpu.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// `gpu`'s context if it is still the one of `generation`.
    #[cfg(feature = "vulkan")]
    pub(super) fn context_of(&self, gpu: &Gpu, generation: u64) -> Option<std::sync::Arc<sparkle_vk::Context>> {
        let slot = gpu.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == generation {
            slot.ctx.clone()
        } else {
            None
        }
    }

    #[cfg(not(feature = "vulkan"))]
    pub(super) fn run_gpu(&self, device: DeviceId, _op: &mut Op<'_, '_>) -> Result<String, DeviceError> {
        let _ = (&self.gpu_ops, self.faults);
        Err(DeviceError { device, kind: DeviceErrorKind::Lost, message: "no Vulkan support in this build".into() })
    }
}

/// The error for a device this handle does not have.
pub(super) fn not_here(device: DeviceId) -> DeviceError {
    DeviceError { device, kind: DeviceErrorKind::Lost, message: "not a device of this handle".into() }
}

/// A Vulkan device as the juggler and the fingerprint see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuDesc {
    /// Index in `sparkle_vk::devices()` order.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Whether it is a CPU-type device (a software rasteriser on the host's cores).
    pub cpu_type: bool,
    /// Vendor, device and driver, for the model's fingerprint.
    pub identity: String,
}

#[cfg(feature = "vulkan")]
impl GpuDesc {
    /// From what Vulkan reports about the device.
    pub fn from_info(i: &sparkle_vk::DeviceInfo) -> Self {
        GpuDesc {
            index: i.index,
            name: i.name.clone(),
            cpu_type: i.device_type == "CPU",
            identity: format!("{:x}:{:x}:{:x}", i.vendor_id, i.device_id, i.driver_version),
        }
    }
}
