//! Resident tensors and asynchronous submission: upload once, record a chain of ops that read
//! and write device memory, submit it without waiting, download at the end.
//!
//! ```no_run
//! # fn main() -> sparkle_vk::Result<()> {
//! use sparkle_core::{Activation, Conv2dParams};
//! use sparkle_vk::{Context, TensorBias};
//! let ctx = Context::best()?;
//! let g = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).validate()?;
//! let x = ctx.upload(&vec![0.5; g.input_len()])?;
//! let w = ctx.upload(&vec![0.01; g.weight_len()])?;
//! let (y, z) = (ctx.zeros(g.output_len())?, ctx.zeros(g.output_len())?);
//! let mut rec = ctx.record()?;
//! rec.conv2d(&g, &x, &w, None, Activation::Relu, &y)?;
//! rec.conv2d(&g, &y, &w, None, Activation::Relu, &z)?; // reads y on the device
//! let pending = rec.submit()?; // returns at once; more work may be recorded meanwhile
//! let timing = pending.wait()?;
//! println!("{:?} s on the device", timing.device_seconds);
//! let out = ctx.download(&z)?;
//! # Ok(()) }
//! ```
//!
//! Submissions on one context run in submission order (each is chained to the one before), so
//! an op may read a tensor an earlier, still-running submission writes. Every op is validated
//! before anything is recorded: a bad one leaves the recording as it was.

use std::sync::Arc;
use std::time::Instant;

use sparkle_core::epilogue::Activation;
use sparkle_core::view::required_len;
use sparkle_core::{Conv2d, Error, Param};
use vulkano::buffer::{BufferUsage, Subbuffer};
use vulkano::command_buffer::{AutoCommandBufferBuilder, CopyBufferInfo, PrimaryAutoCommandBuffer};
use vulkano::device::DeviceOwned;
use vulkano::memory::allocator::MemoryTypeFilter;
use vulkano::query::{QueryPool, QueryPoolCreateInfo, QueryResultFlags, QueryType};
use vulkano::sync::PipelineStage;

use crate::context::Context;
use crate::error::{api, Result, VkError};
use crate::submit::Submission;

const TENSOR_USAGE: BufferUsage =
    BufferUsage::STORAGE_BUFFER.union(BufferUsage::TRANSFER_SRC).union(BufferUsage::TRANSFER_DST);

/// `len` floats in one device's memory ([`Context::upload`], [`Context::zeros`]). Cloning is
/// cheap and shares the memory; it returns to the context's pool when the last clone and every
/// submission using it are gone.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) buf: Subbuffer<[f32]>,
}

impl Tensor {
    /// Number of floats.
    pub fn len(&self) -> usize {
        self.buf.len() as usize
    }
    /// Whether it holds no floats (never: Vulkan has no empty buffers, `zeros(0)` holds one).
    pub fn is_empty(&self) -> bool {
        self.buf.len() == 0
    }
    fn same_memory(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(self.buf.buffer(), other.buf.buffer())
    }
}

/// A strided matrix over a tensor, starting at its first element: element (i, j) at
/// `i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct TensorMat<'a> {
    tensor: &'a Tensor,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> TensorMat<'a> {
    /// Any strides; the tensor must hold every element (checked, with overflow checks).
    pub fn new(tensor: &'a Tensor, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        let need = required_len(rows, cols, rs, cs)?;
        if need > tensor.len() {
            return Err(Error::TooSmall { param: Param::Rows, required: need, found: tensor.len() }.into());
        }
        Ok(Self { tensor, rows, cols, rs, cs })
    }
    /// Rows of `cols` contiguous floats.
    pub fn row_major(tensor: &'a Tensor, rows: usize, cols: usize) -> Result<Self> {
        Self::new(tensor, rows, cols, cols, 1)
    }
    /// Columns of `rows` contiguous floats.
    pub fn col_major(tensor: &'a Tensor, rows: usize, cols: usize) -> Result<Self> {
        Self::new(tensor, rows, cols, 1, rows)
    }
}

/// Bias of a resident op: none, one per row of C (per output channel of a conv), or one per
/// column.
#[derive(Clone, Copy, Debug, Default)]
pub enum TensorBias<'a> {
    /// No bias.
    #[default]
    None,
    /// `bias[i]` added to row i.
    Row(&'a Tensor),
    /// `bias[j]` added to column j (GEMM only).
    Col(&'a Tensor),
}

/// How long a submission took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// From the device's timestamps around the recorded ops (excludes queueing behind earlier
    /// submissions); `None` where the queue has no timestamps.
    pub device_seconds: Option<f64>,
    /// From submission until [`Pending::wait`] saw it complete.
    pub wall_seconds: f64,
}

/// A submitted recording: wait for it, or poll it.
#[must_use = "a submission runs anyway; wait on it to know it finished and how long it took"]
pub struct Pending {
    future: Submission,
    queries: Option<(Arc<QueryPool>, f64, u32)>,
    submitted: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("submitted", &self.submitted).finish_non_exhaustive()
    }
}

impl Pending {
    /// Whether the device has finished it.
    pub fn is_done(&self) -> bool {
        self.future.is_signaled().unwrap_or(false)
    }

    /// Blocks until the device has finished; device errors (lost device, out of memory) come
    /// back here.
    pub fn wait(self) -> Result<Timing> {
        self.future.wait(None).map_err(api("waiting for the device"))?;
        let wall_seconds = self.submitted.elapsed().as_secs_f64();
        let device_seconds = self.queries.and_then(|(pool, period_ns, bits)| {
            let mut t = [0u64; 2];
            pool.get_results(0..2, &mut t, QueryResultFlags::WAIT).ok()?;
            let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
            let ticks = (t[1] & mask).wrapping_sub(t[0] & mask) & mask;
            Some(ticks as f64 * period_ns * 1e-9)
        });
        Ok(Timing { device_seconds, wall_seconds })
    }
}

/// A tensor's contents on their way to the host ([`Recording::download`]).
#[derive(Debug)]
pub struct Download {
    host: Subbuffer<[f32]>,
}

impl Download {
    /// Copies the downloaded floats into `out` (same length); call after the submission that
    /// recorded the download finished ([`Pending::wait`]), else this is an error.
    pub fn read(&self, out: &mut [f32]) -> Result<()> {
        let data = self.host.read().map_err(api("reading a download (has its submission finished?)"))?;
        if data.len() != out.len() {
            return Err(Error::Mismatch { param: Param::Output, expected: data.len(), found: out.len() }.into());
        }
        out.copy_from_slice(&data);
        Ok(())
    }
}

/// Ops recorded for one submission ([`Context::record`]).
pub struct Recording<'a> {
    ctx: &'a Context,
    cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
    queries: Option<(Arc<QueryPool>, f64, u32)>,
}

impl std::fmt::Debug for Recording<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("device", &self.ctx.info().name).finish_non_exhaustive()
    }
}

impl Context {
    /// A device tensor holding a copy of `data` (waits for the copy).
    pub fn upload(&self, data: &[f32]) -> Result<Tensor> {
        let mut cb = self.submitter.begin()?;
        let buf = self.pool.upload_into(&mut cb, data, TENSOR_USAGE)?;
        self.submit(cb)?.wait(None).map_err(api("waiting for an upload"))?;
        Ok(Tensor { buf })
    }

    /// A device tensor of `len` zeros (at least one: Vulkan has no empty buffers).
    pub fn zeros(&self, len: usize) -> Result<Tensor> {
        let buf = self.pool.buffer(len, TENSOR_USAGE, MemoryTypeFilter::PREFER_DEVICE)?;
        let mut cb = self.submitter.begin()?;
        cb.fill_buffer(buf.clone().reinterpret(), 0).map_err(api("recording a fill"))?;
        self.submit(cb)?.wait(None).map_err(api("waiting for a fill"))?;
        Ok(Tensor { buf })
    }

    /// The tensor's contents, after every submission so far has finished writing it.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.check_owner(t)?;
        let mut cb = self.submitter.begin()?;
        let host = self.pool.readback(&mut cb, &t.buf, t.len())?;
        self.submit(cb)?.wait(None).map_err(api("waiting for a download"))?;
        let data = host.read().map_err(api("reading a download"))?.to_vec();
        Ok(data)
    }

    /// Starts recording ops on resident tensors; [`Recording::submit`] sends them.
    pub fn record(&self) -> Result<Recording<'_>> {
        // The ops' plans read the tuning: a first autotune (its own submissions) runs now, not
        // while this recording is open.
        self.tuning();
        let mut cb = self.submitter.begin()?;
        let queries = self.timestamp_queries()?;
        if let Some((pool, _, _)) = &queries {
            // SAFETY: the pool is new and used only by this command buffer: resetting both
            // queries makes them unavailable before they are written below and at submit.
            unsafe {
                cb.reset_query_pool(pool.clone(), 0..2).map_err(api("resetting timestamps"))?;
                cb.write_timestamp(pool.clone(), 0, PipelineStage::TopOfPipe).map_err(api("writing a timestamp"))?;
            }
        }
        Ok(Recording { ctx: self, cb, queries })
    }

    /// A two-query timestamp pool with the tick length in ns and valid bits, if this queue
    /// writes timestamps.
    fn timestamp_queries(&self) -> Result<Option<(Arc<QueryPool>, f64, u32)>> {
        let physical = self.device().physical_device();
        let family = &physical.queue_family_properties()[self.queue().queue_family_index() as usize];
        let Some(bits) = family.timestamp_valid_bits else { return Ok(None) };
        let pool = QueryPool::new(
            self.device().clone(),
            QueryPoolCreateInfo { query_count: 2, ..QueryPoolCreateInfo::query_type(QueryType::Timestamp) },
        )
        .map_err(api("creating a timestamp pool"))?;
        Ok(Some((pool, f64::from(physical.properties().timestamp_period), bits)))
    }

    pub(crate) fn check_owner(&self, t: &Tensor) -> Result<()> {
        if Arc::ptr_eq(t.buf.buffer().device(), self.device()) {
            Ok(())
        } else {
            Err(VkError::Api { what: "using a tensor", source: "it lives on another device".into() })
        }
    }
}

/// An error unless the output tensor is distinct from every input: the shaders read inputs
/// while other workgroups write the output.
fn distinct(out: &Tensor, inputs: &[Option<&Tensor>]) -> Result<()> {
    if inputs.iter().flatten().any(|t| t.same_memory(out)) {
        return Err(VkError::Api {
            what: "recording an op",
            source: "the output tensor is also one of its inputs".into(),
        });
    }
    Ok(())
}

impl Recording<'_> {
    /// `C <- act(alpha * A * B + beta * C + bias)` on resident tensors (C distinct from A, B
    /// and the bias).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &mut self,
        alpha: f32,
        a: TensorMat<'_>,
        b: TensorMat<'_>,
        beta: f32,
        c: TensorMat<'_>,
        bias: TensorBias<'_>,
        activation: Activation,
    ) -> Result<&mut Self> {
        let (m, n, k) = (a.rows, b.cols, a.cols);
        for (param, expected, found) in [(Param::B, k, b.rows), (Param::COut, m, c.rows), (Param::COut, n, c.cols)] {
            if expected != found {
                return Err(Error::Mismatch { param, expected, found }.into());
            }
        }
        if !alpha.is_finite() || !beta.is_finite() {
            return Err(Error::Invalid { param: Param::Scalar }.into());
        }
        activation.validate()?;
        let (bias_mode, bias_t) = match bias {
            TensorBias::None => (0, None),
            TensorBias::Row(t) => (1, Some((t, m))),
            TensorBias::Col(t) => (2, Some((t, n))),
        };
        if let Some((t, need)) = bias_t {
            if t.len() < need {
                return Err(Error::TooSmall { param: Param::Bias, required: need, found: t.len() }.into());
            }
        }
        let bias_t = bias_t.map(|(t, _)| t);
        for t in [Some(a.tensor), Some(b.tensor), Some(c.tensor), bias_t].into_iter().flatten() {
            self.ctx.check_owner(t)?;
        }
        distinct(c.tensor, &[Some(a.tensor), Some(b.tensor), bias_t])?;
        if m == 0 || n == 0 {
            return Ok(self);
        }
        let params =
            crate::params::gemm_params(alpha, [a.rows, a.cols, a.rs, a.cs], [b.rs, b.cs], beta, [n, c.rs, c.cs])?;
        let params = crate::params::with_epilogue(params, bias_mode, activation)?;
        let plan = crate::plan::gemm_plan(&params, self.ctx.tuning().min_vec4_tiles)?;
        let bias_buf = self.bias_or_dummy(bias_t)?;
        self.ctx.record_plan(&mut self.cb, &plan, [&a.tensor.buf, &b.tensor.buf, &c.tensor.buf, &bias_buf])?;
        Ok(self)
    }

    /// `output = act(conv2d(input, weight) + bias)` on resident tensors (output distinct from
    /// the others), every parameter of the core's geometry.
    pub fn conv2d(
        &mut self,
        g: &Conv2d,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
        output: &Tensor,
    ) -> Result<&mut Self> {
        g.check_buffers(input.len(), weight.len(), bias.map(Tensor::len), output.len())?;
        activation.validate()?;
        for t in [Some(input), Some(weight), Some(output), bias].into_iter().flatten() {
            self.ctx.check_owner(t)?;
        }
        distinct(output, &[Some(input), Some(weight), bias])?;
        let bias_buf = self.bias_or_dummy(bias)?;
        let bufs = [&weight.buf, &input.buf, &output.buf, &bias_buf];
        self.ctx.record_conv2d(&mut self.cb, g, activation, bias.is_some(), bufs)?;
        Ok(self)
    }

    /// The bias buffer to bind: the tensor's, or a pooled dummy where there is none (the
    /// shaders declare the binding).
    fn bias_or_dummy(&self, bias: Option<&Tensor>) -> Result<vulkano::buffer::Subbuffer<[f32]>> {
        match bias {
            Some(t) => Ok(t.buf.clone()),
            None => self.ctx.pool.one(),
        }
    }

    /// Copies `src` into `dst` (same length) on the device.
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<&mut Self> {
        self.ctx.check_owner(src)?;
        self.ctx.check_owner(dst)?;
        if src.len() != dst.len() {
            return Err(Error::Mismatch { param: Param::Output, expected: src.len(), found: dst.len() }.into());
        }
        distinct(dst, &[Some(src)])?;
        self.cb
            .copy_buffer(CopyBufferInfo::buffers(src.buf.clone(), dst.buf.clone()))
            .map_err(api("recording a copy"))?;
        Ok(self)
    }

    /// A new device tensor holding `data`, copied in when this recording runs (so the upload
    /// overlaps other devices' work instead of blocking the caller).
    pub fn upload(&mut self, data: &[f32]) -> Result<Tensor> {
        Ok(Tensor { buf: self.ctx.pool.upload_into(&mut self.cb, data, TENSOR_USAGE)? })
    }

    /// A new device tensor of `len` zeros, filled when this recording runs.
    pub fn zeros(&mut self, len: usize) -> Result<Tensor> {
        let buf = self.ctx.pool.buffer(len, TENSOR_USAGE, MemoryTypeFilter::PREFER_DEVICE)?;
        self.cb.fill_buffer(buf.clone().reinterpret(), 0).map_err(api("recording a fill"))?;
        Ok(Tensor { buf })
    }

    /// Copies `t` to host memory when this recording runs; read it with [`Download::read`]
    /// after the submission finished.
    pub fn download(&mut self, t: &Tensor) -> Result<Download> {
        self.ctx.check_owner(t)?;
        Ok(Download { host: self.ctx.pool.readback(&mut self.cb, &t.buf, t.len())? })
    }

    /// Sends the recorded ops to the device and returns at once.
    pub fn submit(mut self) -> Result<Pending> {
        if let Some((pool, _, _)) = &self.queries {
            // SAFETY: query 1 was reset in `record` and is written once.
            unsafe { self.cb.write_timestamp(pool.clone(), 1, PipelineStage::BottomOfPipe) }
                .map_err(api("writing a timestamp"))?;
        }
        let submitted = Instant::now();
        let future = self.ctx.submit(self.cb)?;
        Ok(Pending { future, queries: self.queries, submitted })
    }
}
