//! The compute shaders (GLSL in `shaders/`, compiled to SPIR-V at build time by vulkano-shaders)
//! and their pipelines: created on first use per device through the on-disk pipeline cache, and
//! bound for one dispatch with the op's buffers and push constants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vulkano::buffer::Subbuffer;
use vulkano::command_buffer::{AutoCommandBufferBuilder, PrimaryAutoCommandBuffer};
use vulkano::descriptor_set::allocator::StandardDescriptorSetAllocator;
use vulkano::descriptor_set::{DescriptorSet, WriteDescriptorSet};
use vulkano::device::Device;
use vulkano::pipeline::cache::PipelineCache;
use vulkano::pipeline::compute::ComputePipelineCreateInfo;
use vulkano::pipeline::layout::PipelineDescriptorSetLayoutCreateInfo;
use vulkano::pipeline::{ComputePipeline, Pipeline, PipelineBindPoint, PipelineLayout, PipelineShaderStageCreateInfo};
use vulkano::shader::{EntryPoint, ShaderModule, SpecializationConstant};

use crate::device::DeviceInfo;
use crate::error::{api, Result, VkError};
use crate::params::Params;
use crate::plan::{Kind, Stage};

mod gemm_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm.comp" }
}

mod conv_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm.comp", define: [("CONV", "1")] }
}

mod gemm_vec4_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_vec4.comp" }
}

mod conv_vec4_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_vec4.comp", define: [("CONV", "1")] }
}

mod reduce_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_vec4.comp", define: [("REDUCE", "1")] }
}

mod reduce_conv_cs {
    vulkano_shaders::shader! {
        ty: "compute", path: "shaders/gemm_vec4.comp", define: [("REDUCE", "1"), ("CONV", "1")]
    }
}

mod dwconv_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/dwconv.comp" }
}

mod gemm_half_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_half.comp" }
}

mod conv_half_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_half.comp", define: [("CONV", "1")] }
}

mod conv_bf16_cs {
    vulkano_shaders::shader! {
        ty: "compute", path: "shaders/gemm_half.comp", define: [("CONV", "1"), ("BF16", "1")]
    }
}

mod conv_coopmat_f16_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_f16.spv" }
}

mod conv_coopmat_f16_staged_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_f16_staged.spv" }
}
mod conv_coopmat_f16_staged_small_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_f16_staged_64x64.spv" }
}

mod conv_coopmat_f16_narrow_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_f16_64x256.spv" }
}

mod gemm_bf16_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_half.comp", define: [("BF16", "1")] }
}

/// Compiled by `scripts/spirv.sh` (a glslang with `GL_KHR_cooperative_matrix`, newer than the one
/// vulkano-shaders links); `scripts/test.sh` checks it matches `shaders/gemm_coopmat.comp`.
mod gemm_coopmat_f16_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_f16.spv" }
}
mod gemm_coopmat_f16_wide_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_f16_128x256.spv" }
}

mod gemm_coopmat_f16_small_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_f16_64x64.spv" }
}
mod gemm_coopmat_split_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_split.spv" }
}
mod gemm_coopmat_split_small_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_split_64x64.spv" }
}
mod gemm_split_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_half.comp", define: [("SPLIT", "1")] }
}

mod gemm_i8_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_i8.comp" }
}
mod gemm_coopmat_i8_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_i8.spv" }
}
mod gemm_coopmat_i8_small_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/gemm_coopmat_i8_64x64.spv" }
}
mod conv_i8_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/gemm_i8.comp", define: [("CONV", "1")] }
}
mod dwconv_i8_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/dwconv_i8.comp" }
}
mod conv_coopmat_i8_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_i8.spv" }
}
mod conv_coopmat_i8_small_cs {
    vulkano_shaders::shader! { bytes: "shaders/spv/conv_coopmat_i8_64x64.spv" }
}

mod winograd_weights_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/winograd.comp", define: [("WEIGHTS", "1")] }
}
mod winograd_input_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/winograd.comp", define: [("INPUT", "1")] }
}
mod winograd_output_cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/winograd.comp", define: [("OUTPUT", "1")] }
}

/// `gemm_cm2.comp`: the driver's f16 module and its REFLECT twin (vulkano 0.35 cannot parse the
/// first; `coopmat2::load_shader`).
const COOPMAT2_F16: [&[u8]; 2] =
    [include_bytes!("../shaders/spv/gemm_cm2_f16.spv"), include_bytes!("../shaders/spv/gemm_cm2_f16.reflect.spv")];
/// `gemm_cm2.comp`'s bf16 module, with the f16 module's twin (its REFLECT build declares f16
/// elements: the same interface, which the test below checks).
const COOPMAT2_BF16: [&[u8]; 2] =
    [include_bytes!("../shaders/spv/gemm_cm2_bf16.spv"), include_bytes!("../shaders/spv/gemm_cm2_f16.reflect.spv")];
/// `gemm_coopmat.comp`'s staged bf16 conv, with its f16 module as the twin vulkano reads (the
/// operands are uvec4 buffers in both: the same interface, which the test below checks).
const CONV_STAGED_BF16: [&[u8]; 2] = [
    include_bytes!("../shaders/spv/conv_coopmat_bf16_staged.spv"),
    include_bytes!("../shaders/spv/conv_coopmat_f16_staged.spv"),
];
/// The same with 64 x 64 tiles.
const CONV_STAGED_BF16_SMALL: [&[u8]; 2] = [
    include_bytes!("../shaders/spv/conv_coopmat_bf16_staged_64x64.spv"),
    include_bytes!("../shaders/spv/conv_coopmat_f16_staged_64x64.spv"),
];

/// A compute pipeline for `entry`, its layout derived from the shader, compiled through `cache`.
pub(crate) fn compute_pipeline(
    device: Arc<Device>,
    cache: Option<Arc<PipelineCache>>,
    entry: EntryPoint,
) -> Result<Arc<ComputePipeline>> {
    let stage = PipelineShaderStageCreateInfo::new(entry);
    let layout_info = PipelineDescriptorSetLayoutCreateInfo::from_stages([&stage])
        .into_pipeline_layout_create_info(device.clone())
        .map_err(|e| VkError::Api { what: "deriving the pipeline layout", source: format!("{e:?}").into() })?;
    let layout = PipelineLayout::new(device.clone(), layout_info).map_err(api("creating the pipeline layout"))?;
    ComputePipeline::new(device, cache, ComputePipelineCreateInfo::stage_layout(stage, layout))
        .map_err(api("creating the compute pipeline"))
}

/// One device's pipelines, by shader.
pub(crate) struct Pipelines {
    device: Arc<Device>,
    info: DeviceInfo,
    /// The pipeline cache (loaded from and saved to disk), if one could be created.
    cache: Option<Arc<PipelineCache>>,
    descriptors: Arc<StandardDescriptorSetAllocator>,
    map: Mutex<HashMap<Kind, Arc<ComputePipeline>>>,
    /// A pipeline was created since the disk cache was last written.
    unsaved: AtomicBool,
    /// Held while the disk cache is written, so two writers cannot finish in the wrong order (an
    /// older snapshot written last would drop a pipeline and clear the flag that would rewrite it).
    saving: Mutex<()>,
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        self.persist();
    }
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines").field("device", &self.info.name).finish_non_exhaustive()
    }
}

impl Pipelines {
    /// No pipeline yet; the disk cache of `info`'s device loaded if there is one.
    pub(crate) fn new(device: Arc<Device>, info: DeviceInfo) -> Self {
        let cache = crate::cache::load(&device, &info);
        let descriptors = Arc::new(StandardDescriptorSetAllocator::new(device.clone(), Default::default()));
        Pipelines {
            device,
            info,
            cache,
            descriptors,
            map: Mutex::default(),
            unsaved: AtomicBool::new(false),
            saving: Mutex::new(()),
        }
    }

    /// Writes the disk cache if a pipeline was created since it was last written. Called after a
    /// submission (pipelines are created while recording; the disk write waits until the
    /// recording is closed) and when the context is dropped.
    pub(crate) fn persist(&self) {
        if !self.unsaved.load(Ordering::Acquire) {
            return;
        }
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        // Cleared before the snapshot: a pipeline created during the write sets it again.
        if self.unsaved.swap(false, Ordering::AcqRel) {
            if let Some(disk) = &self.cache {
                crate::cache::save(disk, &self.info);
            }
        }
    }

    /// The descriptor-set allocator the dispatches use.
    pub(crate) fn descriptors(&self) -> &Arc<StandardDescriptorSetAllocator> {
        &self.descriptors
    }

    pub(crate) fn get(&self, kind: Kind) -> Result<Arc<ComputePipeline>> {
        let mut cache = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&kind) {
            return Ok(p.clone());
        }
        let device = self.device.clone();
        let module = self.load(kind)?;
        let constants = match kind {
            Kind::GemmVec4 { a_t, b_t } => {
                [(0, SpecializationConstant::Bool(a_t)), (1, SpecializationConstant::Bool(b_t))].into_iter().collect()
            }
            _ => Default::default(),
        };
        let entry = module
            .specialize(constants)
            .map_err(|e| VkError::Api { what: "specializing the shader", source: format!("{e:?}").into() })?
            .entry_point("main")
            .ok_or(VkError::Api { what: "finding the shader entry point", source: "no `main`".into() })?;
        let pipeline = compute_pipeline(device, self.cache.clone(), entry)?;
        cache.insert(kind, pipeline.clone());
        self.unsaved.store(true, Ordering::Release);
        Ok(pipeline)
    }

    /// The module of `kind`.
    fn load(&self, kind: Kind) -> Result<Arc<ShaderModule>> {
        let device = self.device.clone();
        match kind {
            Kind::Coopmat2 { bf16 } => {
                let (enabled, what) = if bf16 {
                    (self.info.cooperative_matrix2_bf16, "bf16 GEMM where VK_KHR_shader_bfloat16")
                } else {
                    (self.info.cooperative_matrix2_f16, "f16 GEMM where VK_NV_cooperative_matrix2")
                };
                if !enabled {
                    return Err(VkError::Config(format!(
                        "{}: the workgroup-scope {what} is not enabled",
                        self.info.name
                    )));
                }
                let [real, reflect] = if bf16 { COOPMAT2_BF16 } else { COOPMAT2_F16 };
                // SAFETY: one source compiled with and without REFLECT (scripts/spirv.sh; the
                // interface test below); the context enabled the extensions and their features
                // (it clears `DeviceInfo::cooperative_matrix2_f16` and `_bf16` where it could not).
                return unsafe { crate::coopmat2::load_shader(&device, real, reflect) };
            }
            Kind::CoopmatConvStaged { small, bf16: true } => {
                if !self.info.cooperative_matrix_bf16 {
                    return Err(VkError::Config(format!(
                        "{}: bf16 cooperative matrices (VK_KHR_shader_bfloat16) are not enabled",
                        self.info.name
                    )));
                }
                let [real, reflect] = if small { CONV_STAGED_BF16_SMALL } else { CONV_STAGED_BF16 };
                // SAFETY: one source compiled with and without BF16 (scripts/spirv.sh; the
                // interface test below); the context opened the device with bf16 cooperative
                // matrices (it clears `DeviceInfo::cooperative_matrix_bf16` where it could not).
                return unsafe { crate::coopmat2::load_shader(&device, real, reflect) };
            }
            Kind::Gemm => gemm_cs::load(device.clone()),
            Kind::GemmVec4 { .. } => gemm_vec4_cs::load(device.clone()),
            Kind::Conv => conv_cs::load(device.clone()),
            Kind::ConvVec4 => conv_vec4_cs::load(device.clone()),
            Kind::Reduce { conv: false } => reduce_cs::load(device.clone()),
            Kind::Reduce { conv: true } => reduce_conv_cs::load(device.clone()),
            Kind::Winograd(Stage::Weights) => winograd_weights_cs::load(device.clone()),
            Kind::Winograd(Stage::Input) => winograd_input_cs::load(device.clone()),
            Kind::Winograd(Stage::Output) => winograd_output_cs::load(device.clone()),
            Kind::Depthwise => dwconv_cs::load(device.clone()),
            Kind::HalfGemm { bf16: false } => gemm_half_cs::load(device.clone()),
            Kind::HalfGemm { bf16: true } => gemm_bf16_cs::load(device.clone()),
            Kind::HalfConv { bf16: false } => conv_half_cs::load(device.clone()),
            Kind::HalfConv { bf16: true } => conv_bf16_cs::load(device.clone()),
            Kind::CoopmatConvF16 { narrow: false } => conv_coopmat_f16_cs::load(device.clone()),
            Kind::CoopmatConvF16 { narrow: true } => conv_coopmat_f16_narrow_cs::load(device.clone()),
            Kind::CoopmatConvStaged { small: false, bf16: false } => conv_coopmat_f16_staged_cs::load(device.clone()),
            Kind::CoopmatConvStaged { small: true, bf16: false } => {
                conv_coopmat_f16_staged_small_cs::load(device.clone())
            }
            Kind::CoopmatF16 { tile: 0 } => gemm_coopmat_f16_cs::load(device.clone()),
            Kind::CoopmatF16 { tile: 1 } => gemm_coopmat_f16_wide_cs::load(device.clone()),
            Kind::CoopmatF16 { tile: _ } => gemm_coopmat_f16_small_cs::load(device.clone()),
            Kind::SplitF16 { coopmat: true, small: false } => gemm_coopmat_split_cs::load(device.clone()),
            Kind::SplitF16 { coopmat: true, small: true } => gemm_coopmat_split_small_cs::load(device.clone()),
            Kind::SplitF16 { coopmat: false, .. } => gemm_split_cs::load(device.clone()),
            Kind::GemmI8 => gemm_i8_cs::load(device.clone()),
            Kind::CoopmatI8 { tile: 0 } => gemm_coopmat_i8_cs::load(device.clone()),
            Kind::CoopmatI8 { tile: _ } => gemm_coopmat_i8_small_cs::load(device.clone()),
            Kind::ConvI8 => conv_i8_cs::load(device.clone()),
            Kind::DepthwiseI8 => dwconv_i8_cs::load(device.clone()),
            Kind::CoopmatConvI8 { tile: 0 } => conv_coopmat_i8_cs::load(device.clone()),
            Kind::CoopmatConvI8 { tile: _ } => conv_coopmat_i8_small_cs::load(device.clone()),
        }
        .map_err(api("loading a shader"))
    }

    /// Records one dispatch of `kind`: buffer i bound at binding i (only the bindings the shader
    /// uses: the compiler drops unused ones from its layout).
    ///
    /// # Safety
    /// The shader must stay within the buffers for these parameters and workgroups.
    pub(crate) unsafe fn dispatch(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        kind: Kind,
        params: &Params,
        groups: [u32; 3],
        buffers: &[&Subbuffer<[f32]>],
    ) -> Result<()> {
        let pipeline = self.get(kind)?;
        let layout = pipeline.layout().set_layouts()[0].clone();
        let writes = buffers
            .iter()
            .zip(0u32..)
            .filter(|(_, i)| layout.bindings().contains_key(i))
            .map(|(buf, i)| WriteDescriptorSet::buffer(i, (*buf).clone()))
            .collect::<Vec<_>>();
        let set = DescriptorSet::new(self.descriptors.clone(), layout, writes, [])
            .map_err(api("writing the descriptor set"))?;
        cb.bind_pipeline_compute(pipeline.clone())
            .map_err(api("binding the pipeline"))?
            .bind_descriptor_sets(PipelineBindPoint::Compute, pipeline.layout().clone(), 0, set)
            .map_err(api("binding descriptors"))?
            .push_constants(pipeline.layout().clone(), 0, *params)
            .map_err(api("pushing constants"))?;
        // SAFETY: the caller vouches for the shader's accesses.
        unsafe { cb.dispatch(groups) }.map_err(api("recording the dispatch"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{CONV_STAGED_BF16, CONV_STAGED_BF16_SMALL, COOPMAT2_BF16, COOPMAT2_F16};
    use crate::coopmat2::words;

    /// What vulkano reads of a module's interface, without the ids that differ between two
    /// compilations: the workgroup size and every binding, set, access, block, stride and member
    /// offset decoration (`OpExecutionMode LocalSize`, `OpDecorate`, `OpMemberDecorate`), sorted.
    fn interface(spirv: &[u8]) -> Vec<Vec<u32>> {
        const EXECUTION_MODE: u32 = 16;
        const DECORATE: u32 = 71;
        const MEMBER_DECORATE: u32 = 72;
        const LOCAL_SIZE: u32 = 17;
        // SpecId, Block, ArrayStride, NonWritable, NonReadable, Binding, DescriptorSet, Offset.
        const KEPT: [u32; 8] = [1, 2, 6, 24, 25, 33, 34, 35];
        let w = words(spirv);
        assert_eq!(w.first(), Some(&0x0723_0203), "not SPIR-V");
        let mut out = Vec::new();
        let mut at = 5;
        while at < w.len() {
            let (op, len) = (w[at] & 0xffff, (w[at] >> 16) as usize);
            assert!(len > 0 && at + len <= w.len(), "a truncated instruction at word {at}");
            let args = &w[at + 1..at + len];
            match op {
                EXECUTION_MODE if args.get(1) == Some(&LOCAL_SIZE) => out.push([&[op], &args[1..]].concat()),
                DECORATE if args.get(1).is_some_and(|d| KEPT.contains(d)) => out.push([&[op], &args[1..]].concat()),
                MEMBER_DECORATE if args.get(2).is_some_and(|d| KEPT.contains(d)) => {
                    out.push([&[op], &args[1..]].concat())
                }
                _ => {}
            }
            at += len;
        }
        out.sort();
        out
    }

    #[test]
    fn the_reflected_twin_has_the_real_modules_interface() {
        let modules = [
            ("gemm_cm2.comp (f16)", COOPMAT2_F16),
            ("gemm_cm2.comp (bf16)", COOPMAT2_BF16),
            ("the staged bf16 conv", CONV_STAGED_BF16),
            ("the staged bf16 conv (64 x 64)", CONV_STAGED_BF16_SMALL),
        ];
        for (what, [real, reflect]) in modules {
            assert_ne!(real, reflect, "{what}: its twin is the same module");
            let (real, reflect) = (interface(real), interface(reflect));
            // Four buffers (set and binding each) and a workgroup size at least.
            assert!(real.len() >= 9, "{real:?}");
            assert_eq!(real, reflect, "{what} and its twin differ: `load_shader`'s contract");
        }
    }
}
