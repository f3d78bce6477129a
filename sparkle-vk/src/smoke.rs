//! The toolchain smoke test: one tiny compute shader (`y = a*x + y`) compiled from GLSL at build
//! time and run on the device. If this works, the loader, the driver, shader compilation and
//! buffer round trips all work.

use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage};
use vulkano::descriptor_set::{DescriptorSet, WriteDescriptorSet};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter};
use vulkano::pipeline::{Pipeline, PipelineBindPoint};

use crate::context::Context;
use crate::error::{api, Result, VkError};
use sparkle_core::{Error, Param};

mod cs {
    vulkano_shaders::shader! { ty: "compute", path: "shaders/saxpy.comp" }
}

const LOCAL_SIZE: u32 = 64;

impl Context {
    /// `y <- a * x + y` on the device. `x` and `y` must have the same length.
    pub fn saxpy(&self, a: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
        if x.len() != y.len() {
            return Err(Error::Mismatch { param: Param::B, expected: x.len(), found: y.len() }.into());
        }
        if x.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(x.len()).map_err(|_| VkError::Core(Error::Overflow { param: Param::B }))?;
        let device = self.device().clone();
        let shader = cs::load(device.clone()).map_err(api("loading the saxpy shader"))?;
        let entry = shader
            .entry_point("main")
            .ok_or(VkError::Api { what: "finding the shader entry point", source: "no `main` in saxpy.comp".into() })?;
        let pipeline = crate::shaders::compute_pipeline(device, None, entry)?;

        let host = |usage| {
            (
                BufferCreateInfo { usage, ..Default::default() },
                AllocationCreateInfo {
                    memory_type_filter: MemoryTypeFilter::PREFER_DEVICE | MemoryTypeFilter::HOST_RANDOM_ACCESS,
                    ..Default::default()
                },
            )
        };
        let (bi, ai) = host(BufferUsage::STORAGE_BUFFER);
        let xb =
            Buffer::from_iter(self.pool.memory().clone(), bi, ai, x.iter().copied()).map_err(api("uploading x"))?;
        let (bi, ai) = host(BufferUsage::STORAGE_BUFFER);
        let yb =
            Buffer::from_iter(self.pool.memory().clone(), bi, ai, y.iter().copied()).map_err(api("uploading y"))?;

        let set = DescriptorSet::new(
            self.pipelines.descriptors().clone(),
            pipeline.layout().set_layouts()[0].clone(),
            [WriteDescriptorSet::buffer(0, xb), WriteDescriptorSet::buffer(1, yb.clone())],
            [],
        )
        .map_err(api("writing the descriptor set"))?;
        let mut builder = self.submitter.begin()?;
        builder
            .bind_pipeline_compute(pipeline.clone())
            .map_err(api("binding the pipeline"))?
            .bind_descriptor_sets(PipelineBindPoint::Compute, pipeline.layout().clone(), 0, set)
            .map_err(api("binding descriptors"))?
            .push_constants(pipeline.layout().clone(), 0, cs::Params { a, len })
            .map_err(api("pushing constants"))?;
        // SAFETY: the shader bounds-checks every invocation against `len`, and both buffers hold
        // exactly `len` floats, so no invocation reads or writes out of bounds.
        unsafe { builder.dispatch([len.div_ceil(LOCAL_SIZE), 1, 1]) }.map_err(api("recording the dispatch"))?;
        self.submit_and_wait(builder)?;
        let out = yb.read().map_err(api("reading y back"))?;
        y.copy_from_slice(&out);
        Ok(())
    }
}
