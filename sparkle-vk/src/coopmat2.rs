//! `VK_NV_cooperative_matrix2` (workgroup-scope cooperative matrices with tensor addressing) where
//! vulkano 0.35 does not reach: its registry (Vulkan 1.3.281) predates the extension, so it can
//! neither enable it nor parse shaders that use it. This module does the three things vulkano
//! cannot, with the raw Vulkan entry points, and hands the results back to vulkano:
//!
//! - [`supported`]: the extension's features, limits and f16 workgroup-scope shapes, queried
//!   through `vkGetPhysicalDeviceFeatures2`, `vkGetPhysicalDeviceProperties2` and
//!   `vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV`; [`supported_bf16`]:
//!   the same for bf16, with `VK_KHR_shader_bfloat16`'s features (also newer than vulkano);
//! - [`create_device`]: the logical device with the extension and its features enabled (besides
//!   everything `Context::new` enables through vulkano; with bf16, `VK_KHR_shader_bfloat16` too),
//!   wrapped by `Device::from_handle`;
//! - [`load_shader`]: a module whose driver code is the real SPIR-V and whose vulkano-side
//!   reflection is a twin compiled from the same source with `REFLECT` (same bindings and push
//!   constants, an empty body), so vulkano derives the pipeline layout without parsing the
//!   extension's instructions.
//!
//! [`enumerate`] is the two-call shape query this extension's and `VK_KHR_cooperative_matrix`'s
//! lists (`device.rs`) share.
//!
//! The structures below are the Vulkan registry's (`VkPhysicalDeviceCooperativeMatrix2FeaturesNV`,
//! `VkPhysicalDeviceCooperativeMatrix2PropertiesNV`, `VkCooperativeMatrixFlexibleDimensionsPropertiesNV`,
//! `VkPhysicalDeviceShaderBfloat16FeaturesKHR`), field for field.

use std::ffi::{c_char, c_void, CStr};
use std::sync::Arc;

use ash::vk;
use vulkano::device::physical::PhysicalDevice;
use vulkano::device::{Device, DeviceCreateInfo, DeviceExtensions, DeviceFeatures, Queue, QueueCreateInfo};
use vulkano::shader::{ShaderModule, ShaderModuleCreateInfo};
use vulkano::VulkanObject;

use crate::error::{Result, VkError};

const EXTENSION: &str = "VK_NV_cooperative_matrix2";
const FEATURES_TYPE: vk::StructureType = vk::StructureType::from_raw(1_000_593_000);
const FLEXIBLE_TYPE: vk::StructureType = vk::StructureType::from_raw(1_000_593_001);
const PROPERTIES_TYPE: vk::StructureType = vk::StructureType::from_raw(1_000_593_002);
/// `VK_KHR_shader_bfloat16` (also newer than vulkano's registry): the bf16 type in shaders and
/// in cooperative matrices, for `gemm_cm2.comp`'s bf16 module.
const BF16_EXTENSION: &str = "VK_KHR_shader_bfloat16";
const BF16_FEATURES_TYPE: vk::StructureType = vk::StructureType::from_raw(1_000_141_000);
/// `VK_COMPONENT_TYPE_BFLOAT16_KHR`.
pub(crate) const BFLOAT16: vk::ComponentTypeKHR = vk::ComponentTypeKHR::from_raw(1_000_141_000);

/// `VkPhysicalDeviceShaderBfloat16FeaturesKHR`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Bf16Features {
    s_type: vk::StructureType,
    p_next: *mut c_void,
    shader_bfloat16_type: vk::Bool32,
    shader_bfloat16_dot_product: vk::Bool32,
    shader_bfloat16_cooperative_matrix: vk::Bool32,
}

impl Bf16Features {
    /// None enabled, or (`needed`) the two `gemm_cm2.comp`'s bf16 module uses.
    fn new(needed: bool) -> Self {
        let b = if needed { vk::TRUE } else { vk::FALSE };
        Bf16Features {
            s_type: BF16_FEATURES_TYPE,
            p_next: std::ptr::null_mut(),
            shader_bfloat16_type: b,
            shader_bfloat16_dot_product: vk::FALSE,
            shader_bfloat16_cooperative_matrix: b,
        }
    }
}

/// `VkPhysicalDeviceCooperativeMatrix2FeaturesNV`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Features {
    s_type: vk::StructureType,
    p_next: *mut c_void,
    workgroup_scope: vk::Bool32,
    flexible_dimensions: vk::Bool32,
    reductions: vk::Bool32,
    conversions: vk::Bool32,
    per_element_operations: vk::Bool32,
    tensor_addressing: vk::Bool32,
    block_loads: vk::Bool32,
}

impl Features {
    fn empty() -> Self {
        let f = vk::FALSE;
        Features {
            s_type: FEATURES_TYPE,
            p_next: std::ptr::null_mut(),
            workgroup_scope: f,
            flexible_dimensions: f,
            reductions: f,
            conversions: f,
            per_element_operations: f,
            tensor_addressing: f,
            block_loads: f,
        }
    }

    /// The ones `gemm_cm2.comp` uses.
    fn needed() -> Self {
        let t = vk::TRUE;
        Features {
            workgroup_scope: t,
            flexible_dimensions: t,
            per_element_operations: t,
            tensor_addressing: t,
            ..Self::empty()
        }
    }

    fn covers(&self, want: &Features) -> bool {
        let pairs = [
            (self.workgroup_scope, want.workgroup_scope),
            (self.flexible_dimensions, want.flexible_dimensions),
            (self.reductions, want.reductions),
            (self.conversions, want.conversions),
            (self.per_element_operations, want.per_element_operations),
            (self.tensor_addressing, want.tensor_addressing),
            (self.block_loads, want.block_loads),
        ];
        pairs.iter().all(|&(have, want)| have == vk::TRUE || want == vk::FALSE)
    }
}

/// `VkPhysicalDeviceCooperativeMatrix2PropertiesNV`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Properties {
    s_type: vk::StructureType,
    p_next: *mut c_void,
    workgroup_scope_max_workgroup_size: u32,
    flexible_dimensions_max_dimension: u32,
    workgroup_scope_reserved_shared_memory: u32,
}

/// `VkCooperativeMatrixFlexibleDimensionsPropertiesNV`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Flexible {
    s_type: vk::StructureType,
    p_next: *mut c_void,
    m_granularity: u32,
    n_granularity: u32,
    k_granularity: u32,
    a_type: vk::ComponentTypeKHR,
    b_type: vk::ComponentTypeKHR,
    c_type: vk::ComponentTypeKHR,
    result_type: vk::ComponentTypeKHR,
    saturating_accumulation: vk::Bool32,
    scope: vk::ScopeKHR,
    workgroup_invocations: u32,
}

/// Rows, columns and depth of `gemm_cm2.comp`'s tile (its BM, BN, BK): a device runs it only
/// where its granularities divide them.
pub(crate) const TILE: [u32; 3] = [128, 128, 64];

/// Whether `p` offers `t x t -> f32` (`t` f16 or bf16) in workgroup scope for 256 invocations
/// with granularities that divide [`TILE`].
fn offers(p: &PhysicalDevice, t: vk::ComponentTypeKHR) -> bool {
    use vk::ComponentTypeKHR as T;
    let [m, n, k] = TILE;
    shapes(p).iter().any(|s| {
        (s.a_type, s.b_type, s.c_type, s.result_type) == (t, t, T::FLOAT32, T::FLOAT32)
            && s.scope == vk::ScopeKHR::WORKGROUP
            && s.workgroup_invocations == 256
            && [(m, s.m_granularity), (n, s.n_granularity), (k, s.k_granularity)]
                .iter()
                .all(|&(size, g)| g != 0 && size % g == 0)
    })
}

/// Whether `p`, a device that runs `gemm_coopmat.comp`'s f16 GEMM (the instance and device are
/// Vulkan 1.3), also runs `gemm_cm2.comp` (see [`crate::DeviceInfo::cooperative_matrix2_f16`]).
pub(crate) fn supported(p: &PhysicalDevice) -> bool {
    if std::env::var_os("SPARKLE_VK_COOPMAT2").is_some_and(|v| v == "0") {
        return false;
    }
    p.supported_features().storage_buffer16_bit_access
        && p.extension_properties().iter().any(|e| e.extension_name == EXTENSION)
        // SAFETY: the registry's structure, its type set, no chain; the extension is present
        // (checked just above).
        && unsafe { features(p, Features::empty()) }.covers(&Features::needed())
        && fits_limits(p)
        && offers(p, vk::ComponentTypeKHR::FLOAT16)
}

/// Whether `p`, where [`supported`] holds, also runs `gemm_cm2.comp`'s bf16 module (see
/// [`crate::DeviceInfo::cooperative_matrix2_bf16`]): `VK_KHR_shader_bfloat16` with the bf16 type
/// and bf16 cooperative matrices, and bf16 x bf16 -> f32 in workgroup scope as for f16.
pub(crate) fn supported_bf16(p: &PhysicalDevice) -> bool {
    if !p.extension_properties().iter().any(|e| e.extension_name == BF16_EXTENSION) {
        return false;
    }
    // SAFETY: the registry's structure, its type set, no chain; the device has the extension.
    let bf16 = unsafe { features(p, Bf16Features::new(false)) };
    bf16.shader_bfloat16_type == vk::TRUE && bf16.shader_bfloat16_cooperative_matrix == vk::TRUE && offers(p, BFLOAT16)
}

/// Whether the extension's limits on `p` take the kernel: a workgroup of 256 in workgroup scope
/// and matrices of [`TILE`]'s largest dimension.
fn fits_limits(p: &PhysicalDevice) -> bool {
    let mut cm2 = Properties {
        s_type: PROPERTIES_TYPE,
        p_next: std::ptr::null_mut(),
        workgroup_scope_max_workgroup_size: 0,
        flexible_dimensions_max_dimension: 0,
        workgroup_scope_reserved_shared_memory: 0,
    };
    let mut p2 = vk::PhysicalDeviceProperties2 { p_next: (&raw mut cm2).cast(), ..Default::default() };
    // SAFETY: as in `features`: a device of a 1.3 instance that has the extension, and one chained
    // structure of the registry's layout.
    unsafe { (p.instance().fns().v1_1.get_physical_device_properties2)(p.handle(), &mut p2) };
    let largest = TILE.iter().copied().max().unwrap_or(0);
    cm2.workgroup_scope_max_workgroup_size >= 256 && cm2.flexible_dimensions_max_dimension >= largest
}

/// An extension's feature structure `blank` as `p` fills it (`vkGetPhysicalDeviceFeatures2` with
/// `blank` as the whole chain).
///
/// # Safety
/// `p` is a device of a Vulkan 1.3 instance that has the extension; `blank` is the registry's
/// structure for it, with its structure type set and no chain.
unsafe fn features<T>(p: &PhysicalDevice, mut blank: T) -> T {
    let mut f2 = vk::PhysicalDeviceFeatures2 { p_next: (&raw mut blank).cast(), ..Default::default() };
    // SAFETY: the caller's contract: a valid device, and one structure of the registry's layout,
    // of a type the driver knows, as the chain.
    unsafe { (p.instance().fns().v1_1.get_physical_device_features2)(p.handle(), &mut f2) };
    blank
}

/// The extension's flexible-dimension shapes on `p` (empty where the entry point is missing).
fn shapes(p: &PhysicalDevice) -> Vec<Flexible> {
    let blank = Flexible {
        s_type: FLEXIBLE_TYPE,
        p_next: std::ptr::null_mut(),
        m_granularity: 0,
        n_granularity: 0,
        k_granularity: 0,
        a_type: vk::ComponentTypeKHR::FLOAT16,
        b_type: vk::ComponentTypeKHR::FLOAT16,
        c_type: vk::ComponentTypeKHR::FLOAT16,
        result_type: vk::ComponentTypeKHR::FLOAT16,
        saturating_accumulation: vk::FALSE,
        scope: vk::ScopeKHR::DEVICE,
        workgroup_invocations: 0,
    };
    // SAFETY: the entry point takes (physical device, count, `Flexible` array), and `blank` is the
    // registry's structure with its type and no chain.
    unsafe { enumerate(p, c"vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV", blank) }
}

/// The structures the physical-device query `name` lists for `p` (the two-call idiom: the count,
/// then at most that many structures, each starting as `blank`); empty where the entry point is
/// missing or the query fails. The cooperative-matrix extensions' shape lists (this one's and
/// `VK_KHR_cooperative_matrix`'s, `device.rs`) have no vulkano wrapper, and vulkano's function
/// table would call a panicking stub where the loader lacks the entry point.
///
/// # Safety
/// `name`'s function must have the signature `fn(VkPhysicalDevice, *mut u32, *mut T) -> VkResult`,
/// and `blank` be a `T` the driver may fill: its structure type set, no chain.
pub(crate) unsafe fn enumerate<T: Copy>(p: &PhysicalDevice, name: &CStr, blank: T) -> Vec<T> {
    type ListFn<T> = unsafe extern "system" fn(vk::PhysicalDevice, *mut u32, *mut T) -> vk::Result;
    let instance = p.instance();
    // SAFETY: a valid instance handle and a NUL-terminated name; the result is null or the
    // function of that name.
    let f = unsafe { instance.library().get_instance_proc_addr(instance.handle(), name.as_ptr()) };
    let Some(f) = f else { return Vec::new() };
    // SAFETY: the caller's contract: that function has this signature (same ABI, only the
    // pointer's type changes).
    let f: ListFn<T> = unsafe { std::mem::transmute(f) };
    let mut count = 0u32;
    // SAFETY: the count, then at most that many structures the caller vouched for.
    unsafe {
        if f(p.handle(), &mut count, std::ptr::null_mut()) != vk::Result::SUCCESS {
            return Vec::new();
        }
        let mut out = vec![blank; count as usize];
        let r = f(p.handle(), &mut count, out.as_mut_ptr());
        if r != vk::Result::SUCCESS && r != vk::Result::INCOMPLETE {
            return Vec::new();
        }
        out.truncate(count as usize);
        out
    }
}

/// `wanted` with this kernel's 16-bit storage buffers, or an error where `wanted` holds an
/// extension or feature [`create_device`]'s raw create info does not carry (the KHR cooperative
/// matrices; cooperative matrices, f16, int8, the memory model and 16-bit storage buffers).
fn with_own((extensions, features): (DeviceExtensions, DeviceFeatures)) -> Result<(DeviceExtensions, DeviceFeatures)> {
    let features = DeviceFeatures { storage_buffer16_bit_access: true, ..features };
    let carried = DeviceFeatures {
        cooperative_matrix: features.cooperative_matrix,
        shader_float16: features.shader_float16,
        shader_int8: features.shader_int8,
        vulkan_memory_model: features.vulkan_memory_model,
        storage_buffer16_bit_access: true,
        ..DeviceFeatures::empty()
    };
    let khr_only = DeviceExtensions { khr_cooperative_matrix: true, ..DeviceExtensions::empty() };
    if features != carried || extensions != khr_only {
        return Err(VkError::Config(format!(
            "opening a device with VK_NV_cooperative_matrix2: {extensions:?} / {features:?} is more than it carries"
        )));
    }
    Ok((extensions, features))
}

/// Opens `physical` with one queue of `queue_family_index`, the extensions and features `Context`
/// asks for (`wanted`: the KHR cooperative matrices and their features) plus this extension and
/// the 16-bit storage buffers its kernel reads, and with `bf16` `VK_KHR_shader_bfloat16` and the
/// bf16 module's features; returns vulkano's device and queue. Only called where [`supported`]
/// holds (and [`supported_bf16`] with `bf16`). The raw create info is built from `wanted`'s
/// fields, and vulkano is told exactly what was enabled: a feature the raw chain below does not
/// carry is an error.
pub(crate) fn create_device(
    physical: Arc<PhysicalDevice>,
    queue_family_index: u32,
    (extensions, features): (DeviceExtensions, DeviceFeatures),
    bf16: bool,
    found: usize,
) -> Result<(Arc<Device>, Arc<Queue>)> {
    let (extensions, features) = with_own((extensions, features))?;
    // vulkano's default (`QueueCreateInfo::queues`), which the create info below states.
    let priorities = [0.5f32];
    let queue_info = vk::DeviceQueueCreateInfo {
        queue_family_index,
        queue_count: 1,
        p_queue_priorities: priorities.as_ptr(),
        ..Default::default()
    };
    let names: [*const c_char; 3] = [
        c"VK_KHR_cooperative_matrix".as_ptr(),
        c"VK_NV_cooperative_matrix2".as_ptr(),
        c"VK_KHR_shader_bfloat16".as_ptr(),
    ];
    let names = &names[..if bf16 { 3 } else { 2 }];
    let mut bf16_features = Bf16Features::new(true);
    let mut cm2 = Features::needed();
    if bf16 {
        cm2.p_next = (&raw mut bf16_features).cast();
    }
    let mut khr = vk::PhysicalDeviceCooperativeMatrixFeaturesKHR {
        cooperative_matrix: features.cooperative_matrix.into(),
        p_next: (&raw mut cm2).cast(),
        ..Default::default()
    };
    let mut v12 = vk::PhysicalDeviceVulkan12Features {
        shader_float16: features.shader_float16.into(),
        shader_int8: features.shader_int8.into(),
        vulkan_memory_model: features.vulkan_memory_model.into(),
        p_next: (&raw mut khr).cast(),
        ..Default::default()
    };
    let mut v11 = vk::PhysicalDeviceVulkan11Features {
        storage_buffer16_bit_access: features.storage_buffer16_bit_access.into(),
        p_next: (&raw mut v12).cast(),
        ..Default::default()
    };
    let f2 = vk::PhysicalDeviceFeatures2 { p_next: (&raw mut v11).cast(), ..Default::default() };
    let info = vk::DeviceCreateInfo {
        p_next: (&raw const f2).cast(),
        queue_create_info_count: 1,
        p_queue_create_infos: &queue_info,
        enabled_extension_count: names.len() as u32,
        pp_enabled_extension_names: names.as_ptr(),
        ..Default::default()
    };
    let mut handle = vk::Device::null();
    // SAFETY: a valid physical device; every pointer in `info` and its chain points at locals
    // that outlive the call, each structure with its own type; the extensions and features are
    // ones `supported` found on this device (the core ones are Vulkan 1.2/1.1 features of a
    // 1.3 device).
    let r = unsafe {
        (physical.instance().fns().v1_0.create_device)(physical.handle(), &info, std::ptr::null(), &mut handle)
    };
    if r != vk::Result::SUCCESS {
        return Err(VkError::Api {
            what: "creating the logical device (cooperative matrix 2)",
            source: format!("{r:?}").into(),
        });
    }
    let create_info = DeviceCreateInfo {
        queue_create_infos: vec![QueueCreateInfo { queue_family_index, ..Default::default() }],
        enabled_extensions: extensions,
        enabled_features: features,
        ..Default::default()
    };
    // SAFETY: `handle` was just created from `physical` with this queue and with these
    // extensions and features, plus `VK_NV_cooperative_matrix2` (and `VK_KHR_shader_bfloat16`),
    // which vulkano does not know (it only ever sees modules whose reflection omits both:
    // `load_shader`).
    let (device, mut queues) = unsafe { Device::from_handle(physical, handle, create_info) };
    let queue = queues.next().ok_or(VkError::NoDevice { found })?;
    Ok((device, queue))
}

/// SPIR-V bytes as words (the committed `.spv` files are whole words, little-endian).
pub(crate) fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
}

/// A module running `real` whose interface vulkano reads from `reflect`.
///
/// # Safety
/// `reflect` must be `real`'s source compiled with `REFLECT` (`scripts/spirv.sh` builds both):
/// the same entry point, workgroup size, descriptor bindings (type, set, binding, access) and
/// push-constant block. `real` must be valid SPIR-V for `device`, whose features it needs enabled.
pub(crate) unsafe fn load_shader(device: &Arc<Device>, real: &[u8], reflect: &[u8]) -> Result<Arc<ShaderModule>> {
    let real = words(real);
    let reflect = words(reflect);
    let info = vk::ShaderModuleCreateInfo { code_size: real.len() * 4, p_code: real.as_ptr(), ..Default::default() };
    let mut handle = vk::ShaderModule::null();
    // SAFETY: a valid device; the code is whole words that outlive the call.
    let r = unsafe { (device.fns().v1_0.create_shader_module)(device.handle(), &info, std::ptr::null(), &mut handle) };
    if r != vk::Result::SUCCESS {
        return Err(VkError::Api { what: "loading a shader (cooperative matrix 2)", source: format!("{r:?}").into() });
    }
    // SAFETY: `handle` is a module of `device`. Its create info differs from `reflect` only in
    // the body (the caller's contract), which vulkano reads for nothing but the interface; it
    // destroys `handle` when the module is dropped.
    Ok(unsafe { ShaderModule::from_handle(device.clone(), handle, ShaderModuleCreateInfo::new(&reflect)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written structures have the registry's layout (64-bit: `sType`, padding, `pNext`,
    /// then the members), so the driver reads the fields it writes.
    #[test]
    fn raw_structures_have_the_registrys_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(
            (
                offset_of!(Bf16Features, p_next),
                offset_of!(Bf16Features, shader_bfloat16_type),
                size_of::<Bf16Features>()
            ),
            (8, 16, 32)
        );
        assert_eq!(offset_of!(Bf16Features, shader_bfloat16_cooperative_matrix), 24);
        assert_eq!(
            (offset_of!(Features, workgroup_scope), offset_of!(Features, block_loads), size_of::<Features>()),
            (16, 40, 48)
        );
        assert_eq!(
            (offset_of!(Flexible, a_type), offset_of!(Flexible, workgroup_invocations), size_of::<Flexible>()),
            (28, 52, 56)
        );
    }

    #[test]
    fn the_raw_device_carries_what_context_asks_for_and_refuses_more() {
        let khr = DeviceExtensions { khr_cooperative_matrix: true, ..DeviceExtensions::empty() };
        let f16 = DeviceFeatures {
            cooperative_matrix: true,
            shader_float16: true,
            vulkan_memory_model: true,
            ..DeviceFeatures::empty()
        };
        let (e, f) = with_own((khr, DeviceFeatures { shader_int8: true, ..f16 })).unwrap();
        assert_eq!(e, khr);
        assert_eq!(f, DeviceFeatures { shader_int8: true, storage_buffer16_bit_access: true, ..f16 });
        // A feature or extension the raw chain does not set would make vulkano's record wrong.
        assert!(with_own((khr, DeviceFeatures { shader_int16: true, ..f16 })).is_err());
        assert!(with_own((DeviceExtensions { khr_16bit_storage: true, ..khr }, f16)).is_err());
    }
}
