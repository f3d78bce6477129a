//! The per-device context: one opened device, its compute queue, and the parts every op uses.

use std::sync::{Arc, Mutex};

use vulkano::command_buffer::{AutoCommandBufferBuilder, PrimaryAutoCommandBuffer};
use vulkano::device::physical::PhysicalDevice;
use vulkano::device::{Device, DeviceCreateInfo, DeviceExtensions, DeviceFeatures, Queue, QueueCreateInfo};
use vulkano::memory::allocator::StandardMemoryAllocator;

use crate::device::{compute_queue_family, devices, info, instance, physical_devices, DeviceInfo};
use crate::error::{api, Result, VkError};
use crate::plan::Tuning;
use crate::pool::Pool;
use crate::shaders::Pipelines;
use crate::submit::{Submission, Submitter};

/// One opened device: its compute queue and the allocators every pipeline shares.
#[derive(Debug)]
pub struct Context {
    info: DeviceInfo,
    device: Arc<Device>,
    queue: Arc<Queue>,
    /// Buffers, workspaces and host copies.
    pub(crate) pool: Pool,
    /// Compiled shaders, bound per dispatch.
    pub(crate) pipelines: Pipelines,
    /// Command buffers and their chained submission.
    pub(crate) submitter: Submitter,
    /// Kernel choices, measured (or loaded) on first use.
    pub(crate) tuning: Mutex<Option<Tuning>>,
    /// Held while the f32 kernel choices are loaded or measured, so that threads meeting the
    /// device first at once measure it once.
    pub(crate) f32_tuning: Mutex<()>,
    /// Tile rules per [`crate::TileDtype`] (in its order), measured (or loaded) on first use.
    pub(crate) tile_rules: Mutex<[Option<crate::TileRules>; 3]>,
    /// Held while a dtype's tile rules are loaded or measured, so that threads meeting a dtype
    /// first at once measure it once.
    pub(crate) tile_tuning: Mutex<()>,
    /// f16 GEMMs run on cooperative matrices ([`DeviceInfo::cooperative_matrix_f16`], enabled).
    pub(crate) coopmat_f16: bool,
    /// int8 GEMMs run on cooperative matrices ([`DeviceInfo::cooperative_matrix_i8`], enabled).
    pub(crate) coopmat_i8: bool,
    /// f16 GEMMs run on workgroup-scope cooperative matrices
    /// ([`DeviceInfo::cooperative_matrix2_f16`], enabled).
    pub(crate) coopmat2_f16: bool,
    /// bf16 GEMMs do too ([`DeviceInfo::cooperative_matrix2_bf16`], enabled).
    pub(crate) coopmat2_bf16: bool,
    /// bf16 conv2d runs on cooperative matrices ([`DeviceInfo::cooperative_matrix_bf16`],
    /// enabled: the device was opened with bf16 cooperative matrices).
    pub(crate) coopmat_bf16: bool,
}

/// The extension and features the kernels use: the KHR cooperative matrices, f16 arithmetic and
/// the memory model where f16 GEMMs run on them (`coopmat_f16`), 8-bit integers where int8 ones
/// do (`coopmat_i8`). `coopmat2::create_device` enables the same, and what its own kernel adds.
fn enabled(coopmat_f16: bool, coopmat_i8: bool) -> (DeviceExtensions, DeviceFeatures) {
    if !coopmat_f16 {
        return (DeviceExtensions::empty(), DeviceFeatures::empty());
    }
    (
        DeviceExtensions { khr_cooperative_matrix: true, ..DeviceExtensions::empty() },
        DeviceFeatures {
            cooperative_matrix: true,
            shader_float16: true,
            vulkan_memory_model: true,
            shader_int8: coopmat_i8,
            ..DeviceFeatures::empty()
        },
    )
}

impl Context {
    /// Opens device `index` of [`devices`].
    pub fn new(index: usize) -> Result<Self> {
        let instance = instance()?;
        let all = physical_devices(&instance)?;
        let physical = all.get(index).cloned().ok_or(VkError::NoDevice { found: all.len() })?;
        let queue_family_index = compute_queue_family(&physical).ok_or(VkError::NoDevice { found: all.len() })?;
        let mut info = info(index, &physical);
        let max_storage_buffer_range = physical.properties().max_storage_buffer_range;
        let coopmat_f16 = info.cooperative_matrix_f16;
        let coopmat_i8 = info.cooperative_matrix_i8;
        // vulkano 0.35 cannot enable VK_NV_cooperative_matrix2: opened with the raw API where the
        // device has it, and through vulkano without it if that fails.
        let wanted = enabled(coopmat_f16, coopmat_i8);
        // With VK_KHR_shader_bfloat16 too where the device has it; where that open fails, without
        // it (keeping the f16 kernel); where that fails too, without either.
        let mut opened = None;
        for bf16 in [true, false] {
            if !info.cooperative_matrix2_f16 || (bf16 && !info.cooperative_matrix2_bf16) {
                continue;
            }
            let what =
                if bf16 { "VK_NV_cooperative_matrix2 and VK_KHR_shader_bfloat16" } else { "VK_NV_cooperative_matrix2" };
            match crate::coopmat2::create_device(physical.clone(), queue_family_index, wanted, bf16, all.len()) {
                Ok(device) => {
                    opened = Some(device);
                    break;
                }
                Err(e) => {
                    eprintln!("sparkle: opening {} with {what} failed ({e}); opening it without", info.name);
                    info.cooperative_matrix2_bf16 = false;
                    info.cooperative_matrix2_f16 &= bf16;
                }
            }
        }
        let coopmat2_f16 = opened.is_some();
        let coopmat2_bf16 = coopmat2_f16 && info.cooperative_matrix2_bf16;
        // bf16 cooperative matrices are enabled on that open alone (`coopmat2::create_device`).
        info.cooperative_matrix_bf16 &= coopmat2_bf16;
        let coopmat_bf16 = info.cooperative_matrix_bf16;
        let (device, queue) = match opened {
            Some(opened) => opened,
            None => Self::open(physical, queue_family_index, wanted, all.len())?,
        };
        let memory = Arc::new(StandardMemoryAllocator::new_default(device.clone()));
        Ok(Self {
            pool: Pool::new(memory, max_storage_buffer_range),
            pipelines: Pipelines::new(device.clone(), info.clone()),
            submitter: Submitter::new(device.clone(), queue.clone()),
            tuning: Mutex::default(),
            f32_tuning: Mutex::default(),
            tile_rules: Mutex::default(),
            tile_tuning: Mutex::default(),
            coopmat_f16,
            coopmat_i8,
            coopmat2_f16,
            coopmat2_bf16,
            coopmat_bf16,
            info,
            device,
            queue,
        })
    }

    /// Opens `physical` through vulkano with one queue of `queue_family_index` and these
    /// extensions and features ([`enabled`]).
    fn open(
        physical: Arc<PhysicalDevice>,
        queue_family_index: u32,
        (enabled_extensions, enabled_features): (DeviceExtensions, DeviceFeatures),
        found: usize,
    ) -> Result<(Arc<Device>, Arc<Queue>)> {
        let (device, mut queues) = Device::new(
            physical,
            DeviceCreateInfo {
                queue_create_infos: vec![QueueCreateInfo { queue_family_index, ..Default::default() }],
                enabled_extensions,
                enabled_features,
                ..Default::default()
            },
        )
        .map_err(api("creating the logical device"))?;
        let queue = queues.next().ok_or(VkError::NoDevice { found })?;
        Ok((device, queue))
    }

    /// The preferred device: the first discrete GPU, else integrated, virtual, then CPU (lavapipe).
    pub fn best() -> Result<Self> {
        let all = devices()?;
        let rank = |d: &DeviceInfo| match d.device_type.as_str() {
            "discrete GPU" => 0,
            "integrated GPU" => 1,
            "virtual GPU" => 2,
            "CPU" => 3,
            _ => 4,
        };
        let best = all.iter().min_by_key(|d| rank(d)).ok_or(VkError::NoDevice { found: 0 })?;
        Self::new(best.index)
    }

    /// Submits `cb` after everything submitted before on this queue, without waiting
    /// ([`Submitter::submit`]); then writes pipelines created while recording it to the disk
    /// cache, so no disk write happens inside a recording.
    pub(crate) fn submit(&self, cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>) -> Result<Submission> {
        let submission = self.submitter.submit(cb)?;
        self.pipelines.persist();
        Ok(submission)
    }

    /// [`Context::submit`], then waits for the device.
    pub(crate) fn submit_and_wait(&self, cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>) -> Result<()> {
        self.submit(cb)?.wait(None).map_err(api("waiting for the device"))
    }

    /// What this device is.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }
    /// The vulkano device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }
    /// The compute queue ops are submitted to.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }
    /// Bytes of device and staging buffers the pool holds (in use or idle).
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.pooled_bytes()
    }
}
