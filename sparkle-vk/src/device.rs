//! Device discovery: the Vulkan instance, every physical device with a compute queue, and what
//! each one is ([`DeviceInfo`]). The bottom of the crate: nothing here opens a device.

use std::sync::Arc;

use vulkano::device::physical::{PhysicalDevice, PhysicalDeviceType};
use vulkano::device::QueueFlags;
use vulkano::instance::{Instance, InstanceCreateFlags, InstanceCreateInfo};
use vulkano::memory::MemoryHeapFlags;
use vulkano::VulkanLibrary;

use crate::error::{api, Result, VkError};

/// What a user (and the juggler) needs to know about one Vulkan device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Index in [`devices`] order (the loader's enumeration order).
    pub index: usize,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, 0x10005 Mesa software).
    pub vendor_id: u32,
    /// PCI device id.
    pub device_id: u32,
    /// Discrete, integrated, virtual, CPU or other.
    pub device_type: String,
    /// Driver name reported by the driver (Vulkan 1.2+), if any.
    pub driver_name: Option<String>,
    /// Driver version, vendor-encoded.
    pub driver_version: u32,
    /// Highest Vulkan API version the device supports, as "major.minor.patch".
    pub api_version: String,
    /// Device UUID (stable per device and driver).
    pub uuid: [u8; 16],
    /// Pipeline-cache UUID: cached pipelines are only valid for the same value.
    pub pipeline_cache_uuid: [u8; 16],
    /// Subgroup (warp / wave) size, if reported.
    pub subgroup_size: Option<u32>,
    /// Shared memory per workgroup in bytes.
    pub max_shared_memory: u32,
    /// Largest workgroup (invocations).
    pub max_workgroup_invocations: u32,
    /// Bytes of device-local memory (sum of device-local heaps).
    pub device_local_bytes: u64,
    /// Whether f16 GEMMs can run on cooperative matrices (tensor cores): the device offers
    /// `VK_KHR_cooperative_matrix` with 16x16x16 f16 x f16 -> f32 in subgroup scope, f16
    /// arithmetic, the Vulkan memory model, and subgroups of exactly 32 (the shader's layout).
    pub cooperative_matrix_f16: bool,
    /// Whether int8 GEMMs can run on cooperative matrices: everything
    /// [`DeviceInfo::cooperative_matrix_f16`] needs, 8-bit shader integers, 36 KiB of shared
    /// memory, and 16x16x32 i8 x i8 -> i32 in subgroup scope with wrapping (not saturating)
    /// accumulation.
    pub cooperative_matrix_i8: bool,
    /// Whether f16 GEMMs can run on workgroup-scope cooperative matrices
    /// (`VK_NV_cooperative_matrix2`, `gemm_cm2.comp`): everything
    /// [`DeviceInfo::cooperative_matrix_f16`] needs, 16-bit storage buffers, the extension's
    /// workgroup scope, flexible dimensions, tensor addressing and per-element operations, and
    /// f16 x f16 -> f32 in workgroup scope for workgroups of 256 with granularities and limits
    /// that take the kernel's tile. `SPARKLE_VK_COOPMAT2=0` turns it off (to measure the KHR
    /// kernel beside it); `Context::new` clears it where opening the device with the extension
    /// failed.
    pub cooperative_matrix2_f16: bool,
    /// Whether bf16 GEMMs run on the same kernel (`gemm_cm2.comp`'s bf16 module): everything
    /// [`DeviceInfo::cooperative_matrix2_f16`] needs, `VK_KHR_shader_bfloat16` with the bf16 type
    /// and bf16 cooperative matrices, and bf16 x bf16 -> f32 in workgroup scope as for f16.
    /// Cleared with it where opening the device with the extensions failed.
    pub cooperative_matrix2_bf16: bool,
    /// Whether bf16 conv2d runs on cooperative matrices (`gemm_coopmat.comp`'s staged conv, bf16
    /// module): everything [`DeviceInfo::cooperative_matrix2_bf16`] needs (the device is opened
    /// with `VK_KHR_shader_bfloat16` on that path alone) and 16x16x16 bf16 x bf16 -> f32 in
    /// subgroup scope. Cleared with it.
    pub cooperative_matrix_bf16: bool,
}

pub(crate) fn instance() -> Result<Arc<Instance>> {
    let library = VulkanLibrary::new().map_err(|e| VkError::NoLoader(Box::new(e)))?;
    Instance::new(
        library,
        InstanceCreateInfo { flags: InstanceCreateFlags::ENUMERATE_PORTABILITY, ..Default::default() },
    )
    .map_err(api("creating the Vulkan instance"))
}

pub(crate) fn compute_queue_family(p: &PhysicalDevice) -> Option<u32> {
    // Prefer a compute queue without graphics (async compute), else any with compute.
    let families = p.queue_family_properties();
    let pick = |want_graphics: bool| {
        families.iter().position(|q| {
            q.queue_flags.intersects(QueueFlags::COMPUTE)
                && q.queue_flags.intersects(QueueFlags::GRAPHICS) == want_graphics
        })
    };
    pick(false).or_else(|| pick(true)).and_then(|i| u32::try_from(i).ok())
}

pub(crate) fn physical_devices(instance: &Arc<Instance>) -> Result<Vec<Arc<PhysicalDevice>>> {
    Ok(instance
        .enumerate_physical_devices()
        .map_err(api("enumerating physical devices"))?
        .filter(|p| compute_queue_family(p).is_some())
        .collect())
}

pub(crate) fn info(index: usize, p: &PhysicalDevice) -> DeviceInfo {
    let props = p.properties();
    let device_type = match props.device_type {
        PhysicalDeviceType::DiscreteGpu => "discrete GPU",
        PhysicalDeviceType::IntegratedGpu => "integrated GPU",
        PhysicalDeviceType::VirtualGpu => "virtual GPU",
        PhysicalDeviceType::Cpu => "CPU",
        _ => "other",
    };
    let v = p.api_version();
    let device_local_bytes = p
        .memory_properties()
        .memory_heaps
        .iter()
        .filter(|h| h.flags.intersects(MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .sum();
    let f16 = cooperative_matrix_f16(p);
    let cm2 = f16 && crate::coopmat2::supported(p);
    let cm2_bf16 = cm2 && crate::coopmat2::supported_bf16(p);
    DeviceInfo {
        index,
        name: props.device_name.clone(),
        vendor_id: props.vendor_id,
        device_id: props.device_id,
        device_type: device_type.to_string(),
        driver_name: props.driver_name.clone(),
        driver_version: props.driver_version,
        api_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
        uuid: props.device_uuid.unwrap_or_default(),
        pipeline_cache_uuid: props.pipeline_cache_uuid,
        subgroup_size: props.subgroup_size,
        max_shared_memory: props.max_compute_shared_memory_size,
        max_workgroup_invocations: props.max_compute_work_group_invocations,
        device_local_bytes,
        cooperative_matrix_f16: f16,
        cooperative_matrix_i8: cooperative_matrix_i8(p),
        cooperative_matrix2_f16: cm2,
        cooperative_matrix2_bf16: cm2_bf16,
        cooperative_matrix_bf16: cm2_bf16 && subgroup_shape(p, crate::coopmat2::BFLOAT16),
    }
}

/// The device features `gemm_coopmat.comp` needs, when [`DeviceInfo::cooperative_matrix_f16`].
pub(crate) fn cooperative_matrix_f16(p: &PhysicalDevice) -> bool {
    let f = p.supported_features();
    // The shaders are SPIR-V 1.6 (compiled for Vulkan 1.3), which vulkano loads only on a 1.3
    // device through a 1.3 instance.
    let v13 = vulkano::Version::V1_3;
    p.api_version() >= v13
        && p.instance().api_version() >= v13
        && p.supported_extensions().khr_cooperative_matrix
        && f.cooperative_matrix
        && f.shader_float16
        && f.vulkan_memory_model
        && subgroups_are_32(p)
        && subgroup_shape(p, ash::vk::ComponentTypeKHR::FLOAT16)
}

/// Whether `p` offers 16x16x16 `t` x `t` -> f32 cooperative matrices in subgroup scope.
fn subgroup_shape(p: &PhysicalDevice, t: ash::vk::ComponentTypeKHR) -> bool {
    use ash::vk::{ComponentTypeKHR as T, ScopeKHR};
    cooperative_matrix_shapes(p).iter().any(|s| {
        (s.m_size, s.n_size, s.k_size) == (16, 16, 16)
            && (s.a_type, s.b_type, s.c_type, s.result_type) == (t, t, T::FLOAT32, T::FLOAT32)
            && s.scope == ScopeKHR::SUBGROUP
    })
}

/// The device features `gemm_coopmat.comp` with INT8 needs, when
/// [`DeviceInfo::cooperative_matrix_i8`].
pub(crate) fn cooperative_matrix_i8(p: &PhysicalDevice) -> bool {
    // The 128x128 kernel's slices of A and B^T: 2 x 128 rows x 144 bytes.
    const SHARED: u32 = 36_864;
    cooperative_matrix_f16(p)
        && p.supported_features().shader_int8
        && p.properties().max_compute_shared_memory_size >= SHARED
        && cooperative_matrix_shapes(p).iter().any(|s| {
            use ash::vk::{ComponentTypeKHR as T, ScopeKHR};
            (s.m_size, s.n_size, s.k_size) == (16, 16, 32)
                && (s.a_type, s.b_type, s.c_type, s.result_type) == (T::SINT8, T::SINT8, T::SINT32, T::SINT32)
                && s.saturating_accumulation == ash::vk::FALSE
                && s.scope == ScopeKHR::SUBGROUP
        })
}

/// Whether every compute subgroup on `p` has 32 invocations, which the shader's layout (8 subgroups
/// of 32 in a workgroup of 256) assumes: the default size is 32 and, where the driver may choose
/// another (Vulkan 1.3's `minSubgroupSize`/`maxSubgroupSize`; Intel's 8-32, AMD's 32-64), it
/// cannot. NVIDIA's is fixed at 32.
fn subgroups_are_32(p: &PhysicalDevice) -> bool {
    let props = p.properties();
    props.subgroup_size == Some(32)
        && props.min_subgroup_size.unwrap_or(32) == 32
        && props.max_subgroup_size.unwrap_or(32) == 32
}

/// The cooperative-matrix shapes and types `p` offers (`vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR`,
/// through [`crate::coopmat2::enumerate`]). Empty where the extension or the entry point is missing.
fn cooperative_matrix_shapes(p: &PhysicalDevice) -> Vec<ash::vk::CooperativeMatrixPropertiesKHR<'static>> {
    if !p.supported_extensions().khr_cooperative_matrix {
        return Vec::new();
    }
    // SAFETY: the entry point takes (physical device, count, `VkCooperativeMatrixPropertiesKHR`
    // array) (ash's `PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR`), and the default
    // structure has its type and no chain.
    unsafe {
        crate::coopmat2::enumerate(
            p,
            c"vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR",
            ash::vk::CooperativeMatrixPropertiesKHR::default(),
        )
    }
}

/// Every Vulkan device with a compute queue, in the loader's order.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    let instance = instance()?;
    Ok(physical_devices(&instance)?.iter().enumerate().map(|(i, p)| info(i, p)).collect())
}
