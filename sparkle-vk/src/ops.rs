//! GEMM and conv2d on the device: one tiled compute shader (`shaders/gemm.comp`), compiled twice
//! (plain GEMM, and implicit-GEMM conv2d with the im2col gather in the shader), the shared
//! epilogue in the shader. Inputs are validated by the core first; then uploaded to device-local
//! memory through staging buffers, the dispatch runs, and the result is copied back.

use std::sync::Arc;
use std::time::Instant;

use sparkle_core::epilogue::{Activation, Bias, Epilogue};
use sparkle_core::gemm::{check, GemmDims};
use sparkle_core::view::required_len;
use sparkle_core::{Conv2d, Error, MatMut, MatRef, Param, TensorLayout, WeightLayout};
use vulkano::buffer::{Buffer, BufferContents, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::command_buffer::{AutoCommandBufferBuilder, CommandBufferUsage, CopyBufferInfo, PrimaryAutoCommandBuffer};
use vulkano::descriptor_set::{DescriptorSet, WriteDescriptorSet};
use vulkano::device::Device;
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter};
use vulkano::pipeline::cache::PipelineCache;
use vulkano::pipeline::compute::ComputePipelineCreateInfo;
use vulkano::pipeline::layout::PipelineDescriptorSetLayoutCreateInfo;
use vulkano::pipeline::{ComputePipeline, Pipeline, PipelineBindPoint, PipelineLayout, PipelineShaderStageCreateInfo};
use vulkano::shader::{EntryPoint, SpecializationConstant};
use vulkano::sync::{self, GpuFuture};

use crate::context::Context;
use crate::error::{api, Result, VkError};
use crate::resident::Submission;
use crate::tune::{self, Tuning};

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

/// Records an op over (A, B, C, bias) into a command buffer.
type Recorder<'a> =
    dyn Fn(&mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>, [&Subbuffer<[f32]>; 4]) -> Result<()> + 'a;

/// Workspaces an op needs beside its operands ([`Context::scratch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scratch {
    /// Split-K partial tiles.
    SplitK,
    /// Winograd's transformed weights, input and products.
    WinogradU,
    WinogradV,
    WinogradM,
}

/// Most bytes of idle buffers the pool keeps per device.
const POOL_BYTES: u64 = 2 << 30;

/// Which shader a pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// 64x64 tiles of C, any strides.
    Gemm,
    /// 128x128 tiles, vec4 loads, double-buffered: operands with a contiguous dimension.
    /// `a_t`: A is stored with m contiguous; `b_t`: B with k contiguous.
    GemmVec4 { a_t: bool, b_t: bool },
    /// 64x64 tiles, B gathered from the conv input.
    Conv,
    /// `gemm_vec4.comp` with B gathered from the conv input, images side by side.
    ConvVec4,
    /// Adds split-K partial tiles and finishes C (GEMM or conv addressing).
    Reduce { conv: bool },
    /// A stage of Winograd F(2x2, 3x3) (`shaders/winograd.comp`).
    Winograd(crate::winograd::Stage),
    /// One invocation per output element, depthwise conv.
    Depthwise,
}

/// Rows (and columns) of C per workgroup of the general GEMM and the conv shader.
const TILE: u32 = 64;
/// Rows (and columns) of C per workgroup of `gemm_vec4.comp`.
const TILE_VEC4: u32 = 128;
/// Shortest reduction a split-K part gets: shorter ones spend more on the partial sums'
/// round trip than they gain.
const MIN_SPLIT_K: u32 = 64;

pub(crate) fn u32_of(v: usize, param: Param) -> Result<u32> {
    u32::try_from(v).map_err(|_| VkError::Core(Error::Overflow { param }))
}

pub(crate) fn act_code(a: Activation) -> Result<(u32, f32)> {
    Ok(match a {
        Activation::None => (0, 0.0),
        Activation::Relu => (1, 0.0),
        Activation::Relu6 => (2, 0.0),
        Activation::LeakyRelu { slope } => (3, slope),
        Activation::Sigmoid => (4, 0.0),
        Activation::Tanh => (5, 0.0),
        Activation::Gelu => (6, 0.0),
        // An activation the core gained and the shaders do not know: an error, never identity.
        _ => return Err(Error::Invalid { param: Param::Activation }.into()),
    })
}

/// Push constants of every shader (`shaders/common.glsl`, field for field). 120 bytes: every
/// Vulkan device offers at least 128.
#[derive(BufferContents, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Params {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) a_rs: u32,
    pub(crate) a_cs: u32,
    pub(crate) b_rs: u32,
    pub(crate) b_cs: u32,
    pub(crate) c_rs: u32,
    pub(crate) c_cs: u32,
    /// Activation code | bias mode << 8 (0 none, 1 per row, 2 per column).
    pub(crate) epi: u32,
    pub(crate) slope: f32,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    // Conv geometry (conv shaders only).
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) sh: u32,
    pub(crate) sw: u32,
    pub(crate) pt: u32,
    pub(crate) pl: u32,
    pub(crate) dh: u32,
    pub(crate) dw: u32,
    pub(crate) wo: u32,
    pub(crate) groups: u32,
    pub(crate) kout: u32,
    /// NHWC tensors | KRSC weights << 1.
    pub(crate) layouts: u32,
    /// Output pixels per image (`gemm_vec4.comp`'s conv).
    pub(crate) hw: u32,
    /// Split-K parts (1: none).
    pub(crate) splits: u32,
}

/// Reduction length of each split-K part (`gemm_vec4.comp` computes the same): whole slices of
/// 8, the last part what is left.
fn k_chunk(k: u32, splits: u32) -> u32 {
    k.div_ceil(splits.max(1)).next_multiple_of(8)
}

/// The dispatches of one op: the main one and, with split-K, the reduction that finishes C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    kind: Kind,
    params: Params,
    groups: [u32; 3],
    /// The reduction's shader and workgroups, and the workspace it reads (floats).
    reduce: Option<(Kind, [u32; 3], usize)>,
}

/// Workgroups for one invocation per element of `total`, in rows of at most 65535 (the shaders
/// index `x + y * 65535 * 256`).
pub(crate) fn elementwise_groups(total: u32) -> [u32; 3] {
    let n = total.div_ceil(256).max(1);
    [n.min(65535), n.div_ceil(65535), 1]
}

/// The vec4 kernel's plan for `p` (with `p.groups` independent problems) when its 128x128
/// tiles number at least `min_tiles`, or fewer but the reduction is long enough to split into
/// parts (so tiles x parts reaches `min_tiles`); `None` when the 64x64 kernel should run.
pub(crate) fn vec4_plan(kind: Kind, mut p: Params, min_tiles: u32, reduce: Kind) -> Result<Option<Plan>> {
    if min_tiles == u32::MAX {
        // The tuning that never uses the vec4 kernel (not even split).
        return Ok(None);
    }
    let grid = [p.n.div_ceil(TILE_VEC4), p.m.div_ceil(TILE_VEC4)];
    let tiles = grid[0].saturating_mul(grid[1]).saturating_mul(p.groups);
    p.splits = 1;
    if tiles >= min_tiles {
        return Ok(Some(Plan { kind, params: p, groups: [grid[0], grid[1], p.groups], reduce: None }));
    }
    let mut parts = min_tiles.div_ceil(tiles.max(1)).min(p.k / MIN_SPLIT_K).min(64);
    // Rounding parts up to whole slices can leave the last ones empty: use fewer parts.
    while parts > 1 && p.k.div_ceil(k_chunk(p.k, parts)) < parts {
        parts = p.k.div_ceil(k_chunk(p.k, parts));
    }
    if parts < 2 {
        return Ok(None);
    }
    p.splits = parts;
    let overflow = || VkError::Core(Error::Overflow { param: Param::Scratch });
    let elements = p.m.checked_mul(p.n).and_then(|e| e.checked_mul(p.groups)).ok_or_else(overflow)?;
    let work = elements.checked_mul(p.splits).ok_or_else(overflow)?;
    Ok(Some(Plan {
        kind,
        params: p,
        groups: [grid[0], grid[1], p.groups * p.splits],
        reduce: Some((reduce, elementwise_groups(elements), work as usize)),
    }))
}

/// GEMM push constants for A (`[rows, cols, rs, cs]`), B strides, C (`[cols, rs, cs]`), every
/// size and the extent of each operand checked to fit the shaders' 32-bit indices.
pub(crate) fn gemm_params(alpha: f32, a: [usize; 4], b: [usize; 2], beta: f32, c: [usize; 3]) -> Result<Params> {
    let [m, k, a_rs, a_cs] = a;
    let [n, c_rs, c_cs] = c;
    for len in [required_len(m, k, a_rs, a_cs)?, required_len(k, n, b[0], b[1])?, required_len(m, n, c_rs, c_cs)?] {
        u32_of(len, Param::Scratch)?;
    }
    Ok(Params {
        m: u32_of(m, Param::M)?,
        n: u32_of(n, Param::GemmN)?,
        k: u32_of(k, Param::GemmK)?,
        a_rs: u32_of(a_rs, Param::A)?,
        a_cs: u32_of(a_cs, Param::A)?,
        b_rs: u32_of(b[0], Param::B)?,
        b_cs: u32_of(b[1], Param::B)?,
        c_rs: u32_of(c_rs, Param::COut)?,
        c_cs: u32_of(c_cs, Param::COut)?,
        alpha,
        beta,
        ..Params::default()
    })
}

/// The conv geometry fields of the push constants for `g` (the rest default, one split).
pub(crate) fn conv_geometry(g: &Conv2d) -> Result<Params> {
    let p = g.params();
    let u = |v: usize| u32_of(v, Param::Input);
    Ok(Params {
        cin: u(p.c)?,
        h: u(p.h)?,
        w: u(p.w)?,
        r: u(p.r)?,
        s: u(p.s)?,
        sh: u(p.stride[0])?,
        sw: u(p.stride[1])?,
        pt: u(p.pad.top)?,
        pl: u(p.pad.left)?,
        dh: u(p.dilation[0])?,
        dw: u(p.dilation[1])?,
        wo: u(g.wo())?,
        groups: u(p.groups)?,
        kout: u(p.k)?,
        layouts: u32::from(p.layout == TensorLayout::Nhwc) | u32::from(p.weight_layout == WeightLayout::Krsc) << 1,
        hw: u(g.gemm_dims().1)?,
        splits: 1,
        ..Params::default()
    })
}

/// `p` with this bias mode (0 none, 1 per row, 2 per column) and activation.
pub(crate) fn with_epilogue(p: Params, bias_mode: u32, activation: Activation) -> Result<Params> {
    let (act, slope) = act_code(activation)?;
    Ok(Params { epi: act | bias_mode << 8, slope, ..p })
}

/// `plan` with its bias mode replaced (the activation kept).
pub(crate) fn with_bias_mode(mut plan: Plan, bias_mode: u32) -> Plan {
    plan.params.epi = (plan.params.epi & 0xff) | bias_mode << 8;
    plan
}

/// The layout flags of `gemm_vec4.comp` for these strides, if it can run them: A and B each
/// need a unit stride along one dimension, the other stride a multiple of 4, and the
/// contiguous extent a multiple of 4 (so a vec4 never straddles an edge).
fn vec4_layout(p: &Params) -> Option<(bool, bool)> {
    let a_t = if p.a_cs == 1 && p.a_rs.is_multiple_of(4) && p.k.is_multiple_of(4) {
        false
    } else if p.a_rs == 1 && p.a_cs.is_multiple_of(4) && p.m.is_multiple_of(4) {
        true
    } else {
        return None;
    };
    let b_t = if p.b_cs == 1 && p.b_rs.is_multiple_of(4) && p.n.is_multiple_of(4) {
        false
    } else if p.b_rs == 1 && p.b_cs.is_multiple_of(4) && p.k.is_multiple_of(4) {
        true
    } else {
        return None;
    };
    Some((a_t, b_t))
}

/// A GEMM's plan: the vec4 kernel when the layout allows it and there are at least
/// `min_tiles` of its 128x128 tiles, or split-K parts make up for fewer; else the general
/// 64x64 kernel, whose four times as many workgroups keep more of a large GPU busy.
pub(crate) fn gemm_plan(p: &Params, min_tiles: u32) -> Result<Plan> {
    let p = Params { groups: 1, splits: 1, ..*p };
    if let Some((a_t, b_t)) = vec4_layout(&p) {
        if let Some(plan) = vec4_plan(Kind::GemmVec4 { a_t, b_t }, p, min_tiles, Kind::Reduce { conv: false })? {
            return Ok(plan);
        }
    }
    Ok(Plan { kind: Kind::Gemm, params: p, groups: [p.n.div_ceil(TILE), p.m.div_ceil(TILE), 1], reduce: None })
}

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

impl Context {
    pub(crate) fn pipeline(&self, kind: Kind) -> Result<Arc<ComputePipeline>> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&kind) {
            return Ok(p.clone());
        }
        let device = self.device().clone();
        let module = match kind {
            Kind::Gemm => gemm_cs::load(device.clone()),
            Kind::GemmVec4 { .. } => gemm_vec4_cs::load(device.clone()),
            Kind::Conv => conv_cs::load(device.clone()),
            Kind::ConvVec4 => conv_vec4_cs::load(device.clone()),
            Kind::Reduce { conv: false } => reduce_cs::load(device.clone()),
            Kind::Reduce { conv: true } => reduce_conv_cs::load(device.clone()),
            Kind::Winograd(stage) => crate::winograd::load(stage, device.clone()),
            Kind::Depthwise => dwconv_cs::load(device.clone()),
        }
        .map_err(api("loading the GEMM shader"))?;
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
        if let Some(disk) = &self.cache {
            crate::cache::save(disk, self.info());
        }
        Ok(pipeline)
    }

    fn min_vec4_tiles(&self) -> u32 {
        self.tuning().min_vec4_tiles
    }

    /// This device's kernel choices: set by [`Context::set_tuning`], else remembered from an
    /// earlier run, else measured now by [`Context::retune`] (and [`Tuning::DEFAULT`] if that
    /// fails).
    pub fn tuning(&self) -> Tuning {
        if let Some(t) = *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) {
            return t;
        }
        let t = match tune::load(self.info()) {
            Some(t) => t,
            None => self.retune().unwrap_or_else(|e| {
                eprintln!("sparkle: the Vulkan autotune failed on {} ({e}); using defaults", self.info().name);
                Tuning::DEFAULT
            }),
        };
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        t
    }

    /// Uses `t` from now on in this context (not saved).
    pub fn set_tuning(&self, t: Tuning) {
        *self.tuning.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// Measures this device's kernel choices, uses and saves them. Square row-major GEMMs of
    /// growing size run on both kernels until the 64x64 one takes over 0.1 s (so a slow device
    /// such as lavapipe stops early); the vec4 kernel takes over from the size where it wins at
    /// every larger measured size.
    pub fn retune(&self) -> Result<Tuning> {
        let mut points = Vec::new();
        for s in [256u32, 512, 1024, 2048, 4096] {
            let n = s as usize;
            let params = gemm_params(1.0, [n, n, n, 1], [n, 1], 0.0, [n, n, 1])?;
            let small = gemm_plan(&params, u32::MAX)?;
            let big = gemm_plan(&params, 0)?;
            let len = (s * s) as usize;
            let time = |plan: &Plan| -> Result<f64> {
                let one = self.time_resident(plan, [len; 3], 1)?;
                let reps = (0.02 / one).clamp(1.0, 50.0) as u32;
                self.time_resident(plan, [len; 3], reps)
            };
            let general = time(&small)?;
            points.push((big.groups[0] * big.groups[1], time(&big)? / general));
            if general > 0.1 {
                break;
            }
        }
        let t = Tuning { min_vec4_tiles: tune::threshold(&points), ..Tuning::DEFAULT };
        tune::save(self.info(), &t);
        self.set_tuning(t);
        Ok(t)
    }

    /// Bytes of device and staging buffers the pool holds (in use or idle).
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, _, b)| b.size()).sum()
    }

    /// `len` floats of a buffer with this usage and memory, from the pool when a free one fits
    /// (a buffer is free when the pool holds its only reference: every command that used it has
    /// completed and been dropped), else newly allocated with a power-of-two capacity and pooled.
    /// Fresh allocations cost page faults and driver calls on every op; reuse removes them.
    pub(crate) fn buffer(&self, len: usize, usage: BufferUsage, filter: MemoryTypeFilter) -> Result<Subbuffer<[f32]>> {
        // The shaders index with 32 bits and bind whole buffers: nothing larger than the
        // device's largest storage-buffer range can be used (nor allocated: vulkano panics on
        // byte sizes that overflow).
        let most = u64::from(self.device().physical_device().properties().max_storage_buffer_range) / 4;
        let len = len.max(1) as u64;
        if len > most {
            return Err(VkError::OutOfMemory(
                format!("{len} floats exceed the device's largest storage buffer ({most} floats)").into(),
            ));
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let free = |b: &Subbuffer<[f32]>| Arc::strong_count(b.buffer()) == 1;
        let fits = pool
            .iter()
            .filter(|(u, f, b)| {
                *u == usage && *f == filter && b.len() >= len && b.len() <= 4 * len.max(1024) && free(b)
            })
            .min_by_key(|(_, _, b)| b.len());
        if let Some((_, _, b)) = fits {
            return Ok(b.clone().slice(0..len));
        }
        let capacity = len.checked_next_power_of_two().unwrap_or(len).min(most);
        let full = Buffer::new_slice::<f32>(
            self.memory.clone(),
            BufferCreateInfo { usage, ..Default::default() },
            AllocationCreateInfo { memory_type_filter: filter, ..Default::default() },
            capacity,
        )
        .map_err(api("allocating a buffer"))?;
        // Keep the pool under POOL_BYTES by dropping free buffers, largest first.
        let mut total: u64 = pool.iter().map(|(_, _, b)| b.size()).sum::<u64>() + full.size();
        while total > POOL_BYTES {
            let Some(i) =
                pool.iter().enumerate().filter(|(_, e)| free(&e.2)).max_by_key(|(_, e)| e.2.size()).map(|(i, _)| i)
            else {
                break;
            };
            total -= pool.swap_remove(i).2.size();
        }
        pool.push((usage, filter, full.clone()));
        Ok(full.slice(0..len))
    }

    /// A device-local buffer filled from `data` through a staging buffer (copy recorded in `cb`).
    fn record_upload(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        data: &[f32],
    ) -> Result<Subbuffer<[f32]>> {
        self.upload_into(cb, data, BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC)
    }

    /// [`Context::upload`]'s recording part, into a buffer with this usage.
    pub(crate) fn upload_into(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        data: &[f32],
        usage: BufferUsage,
    ) -> Result<Subbuffer<[f32]>> {
        // Vulkan has no empty buffers: an empty operand (e.g. no bias) is one unused zero.
        let data = if data.is_empty() { &[0.0f32][..] } else { data };
        let staging = self.buffer(
            data.len(),
            BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
        )?;
        // One memcpy into the mapped staging memory (an element iterator ran at a few GB/s).
        staging.write().map_err(api("mapping a staging buffer"))?.copy_from_slice(data);
        let dst = self.buffer(data.len(), usage, MemoryTypeFilter::PREFER_DEVICE)?;
        cb.copy_buffer(CopyBufferInfo::buffers(staging, dst.clone())).map_err(api("recording an upload"))?;
        Ok(dst)
    }

    pub(crate) fn begin(&self) -> Result<AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>> {
        AutoCommandBufferBuilder::primary(
            self.commands.clone(),
            self.queue().queue_family_index(),
            CommandBufferUsage::OneTimeSubmit,
        )
        .map_err(api("beginning a command buffer"))
    }

    pub(crate) fn submit_and_wait(&self, cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>) -> Result<()> {
        self.submit(cb)?.wait(None).map_err(api("waiting for the device"))
    }

    /// Submits `cb` after everything submitted before on this context (chained futures: the
    /// device may run it as soon as its inputs are written) and returns without waiting.
    pub(crate) fn submit(&self, cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>) -> Result<Submission> {
        let cb = cb.build().map_err(api("building the command buffer"))?;
        let mut last = self.last.0.lock().unwrap_or_else(|e| e.into_inner());
        let before: Box<dyn GpuFuture + Send + Sync> = match last.take() {
            Some(f) if !f.is_signaled().unwrap_or(true) => {
                Box::new(crate::resident::After { prev: f, queue: self.queue().clone() })
            }
            _ => sync::now(self.device().clone()).boxed_send_sync(),
        };
        let future = before
            .then_execute(self.queue().clone(), cb)
            .map_err(api("submitting"))?
            .boxed_send_sync()
            .then_signal_fence_and_flush()
            .map_err(api("flushing"))?;
        let future = Arc::new(future);
        *last = Some(future.clone());
        Ok(future)
    }

    /// The device buffer of `slot`, at least `len` floats: one per context and slot, kept and
    /// reused by every later op (grown when one needs more). Reuse is safe even while earlier
    /// submissions that used it run: vulkano orders every access to it (barriers within a
    /// command buffer, the chained submissions across them). Without it a recording of many ops
    /// would hold a fresh workspace per op.
    pub(crate) fn scratch(&self, slot: Scratch, len: usize) -> Result<Subbuffer<[f32]>> {
        let mut slots = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = slots.get(&slot) {
            if b.len() >= len.max(1) as u64 {
                return Ok(b.clone().slice(0..len.max(1) as u64));
            }
        }
        let b = self.buffer(len, BufferUsage::STORAGE_BUFFER, MemoryTypeFilter::PREFER_DEVICE)?;
        slots.insert(slot, b.clone());
        Ok(b)
    }

    /// One pooled device float, bound where a shader's optional input (the bias) is absent.
    pub(crate) fn scratch_one(&self) -> Result<Subbuffer<[f32]>> {
        self.buffer(1, BufferUsage::STORAGE_BUFFER, MemoryTypeFilter::PREFER_DEVICE)
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
        let pipeline = self.pipeline(kind)?;
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

    /// Records `plan`'s dispatches over these buffers (and a pooled workspace for split-K).
    pub(crate) fn record_plan(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        plan: &Plan,
        [a, b, c, bias]: [&Subbuffer<[f32]>; 4],
    ) -> Result<()> {
        let work = match plan.reduce {
            Some((_, _, len)) => Some(self.scratch(Scratch::SplitK, len)?),
            None => None,
        };
        let mut steps = vec![(plan.kind, plan.groups)];
        steps.extend(plan.reduce.map(|(kind, groups, _)| (kind, groups)));
        let buffers = [a, b, c, bias, work.as_ref().unwrap_or(bias)];
        for (kind, groups) in steps {
            // SAFETY: the GEMM and conv shaders bounds-check every load against m, n, k and the
            // geometry, and every store against m and n (the workspace against
            // m * n * groups * splits, its length); the buffers were sized from the same
            // validated shapes. Vulkano orders the reduction after the partial tiles it reads.
            unsafe { self.dispatch(cb, kind, &plan.params, groups, &buffers) }?;
        }
        Ok(())
    }

    /// `C <- act(alpha * A * B + beta * C + bias)` on the device (any strides).
    pub fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        mut c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims> {
        let d = check(alpha, &a, &b, beta, &c, epi)?;
        if d.m == 0 || d.n == 0 {
            return Ok(d);
        }
        let a_len = required_len(a.rows(), a.cols(), a.rs(), a.cs())?;
        let b_len = required_len(b.rows(), b.cols(), b.rs(), b.cs())?;
        let c_len = required_len(c.rows(), c.cols(), c.rs(), c.cs())?;
        let (bias_mode, bias_data): (u32, &[f32]) = match epi.bias {
            Bias::None => (0, &[]),
            Bias::Row(v) => (1, v),
            Bias::Col(v) => (2, v),
        };
        let params = gemm_params(alpha, [d.m, d.k, a.rs(), a.cs()], [b.rs(), b.cs()], beta, [d.n, c.rs(), c.cs()])?;
        let params = with_epilogue(params, bias_mode, epi.activation)?;
        let mut cb = self.begin()?;
        let ab = self.record_upload(&mut cb, &a.as_slice()[..a_len])?;
        let bb = self.record_upload(&mut cb, &b.as_slice()[..b_len])?;
        // C is read only when beta != 0.
        let cbuf = if beta != 0.0 {
            self.record_upload(&mut cb, &c.as_slice()[..c_len])?
        } else {
            self.buffer(
                c_len,
                BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
                MemoryTypeFilter::PREFER_DEVICE,
            )?
        };
        let bias = self.record_upload(&mut cb, bias_data)?;
        let plan = gemm_plan(&params, self.min_vec4_tiles())?;
        self.record_plan(&mut cb, &plan, [&ab, &bb, &cbuf, &bias])?;
        let out = self.readback(&mut cb, &cbuf, c_len)?;
        self.submit_and_wait(cb)?;
        let out = out.read().map_err(api("reading C back"))?;
        // Only the view's elements: gaps between rows or columns stay as the caller left them.
        let (rs, cs) = (c.rs(), c.cs());
        let dst = c.as_mut_slice();
        if cs == 1 {
            for i in 0..d.m {
                dst[i * rs..i * rs + d.n].copy_from_slice(&out[i * rs..i * rs + d.n]);
            }
        } else {
            for i in 0..d.m {
                for j in 0..d.n {
                    dst[i * rs + j * cs] = out[i * rs + j * cs];
                }
            }
        }
        Ok(d)
    }

    pub(crate) fn readback(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        src: &Subbuffer<[f32]>,
        len: usize,
    ) -> Result<Subbuffer<[f32]>> {
        let host = self.buffer(
            len,
            BufferUsage::TRANSFER_DST,
            MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_RANDOM_ACCESS,
        )?;
        cb.copy_buffer(CopyBufferInfo::buffers(src.clone(), host.clone())).map_err(api("recording a download"))?;
        Ok(host)
    }

    /// Records conv2d `g` + bias (if `has_bias`) + `activation` over (weights, input, output,
    /// bias): Winograd where it applies and the conv is large enough for this device's tuning,
    /// else the direct plan ([`Context::conv_plan`]).
    pub(crate) fn record_conv2d(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        g: &Conv2d,
        activation: Activation,
        has_bias: bool,
        bufs: [&Subbuffer<[f32]>; 4],
    ) -> Result<()> {
        let t = self.tuning();
        let most = u64::from(self.device().physical_device().properties().max_storage_buffer_range) / 4;
        let tiles = crate::winograd::tiles(g).unwrap_or(usize::MAX);
        if tiles >= t.min_winograd_tiles as usize && crate::winograd::applies(g, most) {
            return self.record_winograd(cb, g, activation, has_bias, bufs);
        }
        let plan = Self::conv_plan(g, &Epilogue::activation(activation), t.min_vec4_tiles)?;
        self.record_plan(cb, &with_bias_mode(plan, u32::from(has_bias)), bufs)
    }

    /// The plan of a conv2d: depthwise shader; the vec4 kernel over every image at once when
    /// the weights' rows are vec4-aligned (C/groups * R * S a multiple of 4) and there are
    /// enough tiles or split-K parts; else the 64x64 kernel, one image and group per z.
    pub(crate) fn conv_plan(g: &Conv2d, epi: &Epilogue<'_>, min_tiles: u32) -> Result<Plan> {
        let p = g.params();
        let (kg, hw, gemm_k) = g.gemm_dims();
        let (act, slope) = act_code(epi.activation)?;
        let (c_rs, c_cs) = match p.layout {
            TensorLayout::Nchw => (hw, 1),
            TensorLayout::Nhwc => (1, p.k),
        };
        for len in [g.input_len(), g.weight_len(), g.output_len()] {
            u32_of(len, Param::Scratch)?;
        }
        let u = |v: usize| u32_of(v, Param::Input);
        let params = Params {
            m: u(kg)?,
            n: u(hw)?,
            k: u(gemm_k)?,
            a_rs: u(gemm_k)?,
            a_cs: 1,
            c_rs: u(c_rs)?,
            c_cs: u(c_cs)?,
            epi: act | if matches!(epi.bias, Bias::Row(_)) { 1 << 8 } else { 0 },
            slope,
            alpha: 1.0,
            beta: 0.0,
            ..conv_geometry(g)?
        };
        if sparkle_core::conv::fused::choose_path(g) == sparkle_core::conv::fused::Conv2dPath::Depthwise {
            // m = images; one invocation per output element.
            let params = Params { m: u(p.n)?, ..params };
            return Ok(Plan {
                kind: Kind::Depthwise,
                params,
                groups: elementwise_groups(u(g.output_len())?),
                reduce: None,
            });
        }
        if params.k.is_multiple_of(4) {
            let columns = u(p.n.checked_mul(hw).ok_or(Error::Overflow { param: Param::N })?)?;
            let wide = Params { n: columns, ..params };
            if let Some(plan) = vec4_plan(Kind::ConvVec4, wide, min_tiles, Kind::Reduce { conv: true })? {
                return Ok(plan);
            }
        }
        let z = u(p.n.checked_mul(p.groups).ok_or(Error::Overflow { param: Param::N })?)?;
        Ok(Plan {
            kind: Kind::Conv,
            params,
            groups: [params.n.div_ceil(TILE), params.m.div_ceil(TILE), z],
            reduce: None,
        })
    }

    /// `output = act(conv2d(input, weight) + bias)` on the device: implicit GEMM, every parameter.
    pub fn conv2d(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &[f32],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<()> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        let bias_data: &[f32] = match epi.bias {
            Bias::Row(v) => v,
            _ => &[],
        };
        let mut cb = self.begin()?;
        let wb = self.record_upload(&mut cb, weight)?;
        let xb = self.record_upload(&mut cb, input)?;
        let yb = self.buffer(
            output.len(),
            BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_DEVICE,
        )?;
        let bias = self.record_upload(&mut cb, bias_data)?;
        self.record_conv2d(&mut cb, g, epi.activation, !bias_data.is_empty(), [&wb, &xb, &yb, &bias])?;
        let out = self.readback(&mut cb, &yb, output.len())?;
        self.submit_and_wait(cb)?;
        output.copy_from_slice(&out.read().map_err(api("reading the output back"))?);
        Ok(())
    }

    /// `reps` runs of a plan recorded in one command buffer over device-resident buffers of the
    /// given lengths (A, B, C), timed from submission to completion after a one-run warm-up
    /// (pipeline creation excluded): seconds per run.
    fn time_resident(&self, plan: &Plan, lens: [usize; 3], reps: u32) -> Result<f64> {
        self.time_recorded(lens, reps, &|cb, bufs| self.record_plan(cb, plan, bufs))
    }

    /// [`Context::time_resident`] for whatever `record` records over (A, B, C, bias).
    fn time_recorded(&self, lens: [usize; 3], reps: u32, record: &Recorder<'_>) -> Result<f64> {
        let usage = BufferUsage::STORAGE_BUFFER;
        let dev = MemoryTypeFilter::PREFER_DEVICE;
        let (ab, bb, cbuf) =
            (self.buffer(lens[0], usage, dev)?, self.buffer(lens[1], usage, dev)?, self.buffer(lens[2], usage, dev)?);
        let bias = self.buffer(1, usage, dev)?;
        let run = |reps: u32| -> Result<f64> {
            let mut cb = self.begin()?;
            for _ in 0..reps {
                record(&mut cb, [&ab, &bb, &cbuf, &bias])?;
            }
            let t = Instant::now();
            self.submit_and_wait(cb)?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(1)?;
        Ok(run(reps.max(1))? / f64::from(reps.max(1)))
    }

    /// Seconds per row-major `m x n x k` GEMM with the operands already on the device.
    pub fn time_gemm_resident(&self, m: usize, n: usize, k: usize, reps: u32) -> Result<f64> {
        let params = gemm_params(1.0, [m, k, k, 1], [n, 1], 0.0, [n, n, 1])?;
        let plan = gemm_plan(&params, self.min_vec4_tiles())?;
        self.time_resident(&plan, [m * k, k * n, m * n], reps)
    }

    /// Seconds per conv2d (+ ReLU) with input, weights and output already on the device.
    pub fn time_conv2d_resident(&self, g: &Conv2d, reps: u32) -> Result<f64> {
        self.time_recorded([g.weight_len(), g.input_len(), g.output_len()], reps, &|cb, bufs| {
            self.record_conv2d(cb, g, Activation::Relu, false, bufs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(m: u32, n: u32, k: u32, a: (u32, u32), b: (u32, u32)) -> Params {
        Params { m, n, k, a_rs: a.0, a_cs: a.1, b_rs: b.0, b_cs: b.1, ..Params::default() }
    }

    #[test]
    fn the_vec4_kernel_runs_only_layouts_it_can_load() {
        // Row-major A and B; column-major ones; mixed.
        assert_eq!(vec4_layout(&params(5, 8, 12, (12, 1), (8, 1))), Some((false, false)));
        assert_eq!(vec4_layout(&params(8, 5, 12, (1, 8), (1, 12))), Some((true, true)));
        assert_eq!(vec4_layout(&params(8, 8, 4, (1, 8), (8, 1))), Some((true, false)));
        // k not a multiple of 4 with k contiguous; a row stride not a multiple of 4; no unit stride.
        assert_eq!(vec4_layout(&params(8, 8, 6, (6, 1), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 8, 4, (6, 1), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 8, 4, (8, 2), (8, 1))), None);
        assert_eq!(vec4_layout(&params(8, 6, 4, (4, 1), (6, 1))), None);
    }

    #[test]
    fn tile_count_and_reduction_length_pick_the_kernel() {
        let p = params(256, 256, 64, (64, 1), (256, 1));
        let plan = gemm_plan(&p, 4).unwrap();
        assert_eq!((plan.kind, plan.groups), (Kind::GemmVec4 { a_t: false, b_t: false }, [2, 2, 1]));
        assert!(plan.reduce.is_none());
        let plan = gemm_plan(&p, 5).unwrap();
        assert_eq!((plan.kind, plan.groups), (Kind::Gemm, [4, 4, 1]), "k = 64 is too short to split");
        let odd = params(256, 256, 63, (63, 1), (256, 1));
        assert_eq!(gemm_plan(&odd, 0).unwrap().kind, Kind::Gemm);
        let long = params(256, 256, 4096, (4096, 1), (256, 1));
        assert_eq!(gemm_plan(&long, u32::MAX).unwrap().kind, Kind::Gemm, "never the vec4 kernel, not even split");
    }

    #[test]
    fn split_k_covers_the_reduction_in_parts_of_whole_slices() {
        // 4 tiles of a GEMM with k = 1000 on a device that wants 64: 16 parts of 64 or more.
        let p = params(256, 256, 1000, (1000, 1), (256, 1));
        let plan = gemm_plan(&p, 64).unwrap();
        let q = plan.params;
        assert_eq!(plan.kind, Kind::GemmVec4 { a_t: false, b_t: false });
        let chunk = k_chunk(q.k, q.splits);
        assert_eq!(chunk % 8, 0);
        assert!(q.splits * chunk >= 1000 && (q.splits - 1) * chunk < 1000, "{} x {chunk}", q.splits);
        assert!(q.splits >= 2 && q.splits <= 1000 / MIN_SPLIT_K);
        assert_eq!(plan.groups, [2, 2, q.splits]);
        let (kind, groups, work) = plan.reduce.unwrap();
        assert_eq!(kind, Kind::Reduce { conv: false });
        assert_eq!(work, (256 * 256 * q.splits) as usize);
        assert!(groups[0] * groups[1] * 256 >= 256 * 256);
    }
}
