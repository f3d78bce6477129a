//! The ops on host slices ([`Context::gemm`], [`Context::conv2d`]): validated by the core,
//! planned ([`crate::plan`]), operands uploaded through the pool's staging buffers, the plan
//! recorded and submitted, the result copied back. Also the recording of a plan that resident
//! ops share and the resident timings that benchmarks and the autotune (`tune.rs`) use.
use std::time::Instant;

use sparkle_core::epilogue::{Activation, Bias, Epilogue};
use sparkle_core::gemm::{check, GemmDims};
use sparkle_core::view::required_len;
use sparkle_core::{Conv2d, MatMut, MatRef};
use vulkano::buffer::{BufferUsage, Subbuffer};
use vulkano::command_buffer::{AutoCommandBufferBuilder, PrimaryAutoCommandBuffer};
use vulkano::memory::allocator::MemoryTypeFilter;

use crate::context::Context;
use crate::error::{api, Result};
use crate::params::{bias_operand, gemm_params, with_epilogue};
use crate::plan::{conv_plan, gemm_plan, with_bias_mode, Plan};
use crate::pool::Scratch;

/// Records an op over (A, B, C, bias) into a command buffer.
pub(crate) type Recorder<'a> =
    dyn Fn(&mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>, [&Subbuffer<[f32]>; 4]) -> Result<()> + 'a;

impl Context {
    /// Records `plan`'s dispatches over these buffers (and a pooled workspace for split-K).
    pub(crate) fn record_plan(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        plan: &Plan,
        [a, b, c, bias]: [&Subbuffer<[f32]>; 4],
    ) -> Result<()> {
        let work = match plan.reduce {
            Some((_, _, len)) => Some(self.pool.scratch(Scratch::SplitK, len)?),
            None => None,
        };
        let mut steps = vec![(plan.kind, plan.groups)];
        steps.extend(plan.reduce.map(|(kind, groups, _)| (kind, groups)));
        let buffers = [a, b, c, bias, work.as_ref().unwrap_or(bias)];
        for (kind, groups) in steps {
            // SAFETY: the f32 GEMM and conv shaders bounds-check every load against m, n, k and
            // the geometry, and every store against m and n (the workspace against
            // m * n * groups * splits, its length); the buffers were sized from the same
            // validated shapes. The half GEMMs (`HalfPlan::with`) read their operands within
            // the packed, zero-padded lengths their plan sizes the buffers to and a split-K
            // part only its own, non-empty range of slices (`half::split_k_parts`), and store C
            // and the workspace as the f32 kernels do. Vulkano orders the reduction after the
            // partial tiles it reads.
            unsafe { self.pipelines.dispatch(cb, kind, &plan.params, groups, &buffers) }?;
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
        let (bias_mode, bias_data) = bias_operand(&epi.bias);
        let params = gemm_params(alpha, [d.m, d.k, a.rs(), a.cs()], [b.rs(), b.cs()], beta, [d.n, c.rs(), c.cs()])?;
        let params = with_epilogue(params, bias_mode, epi.activation)?;
        let plan = gemm_plan(&params, self.min_vec4_tiles())?; // may autotune: before recording
        let mut cb = self.submitter.begin()?;
        let ab = self.pool.upload(&mut cb, &a.as_slice()[..a_len])?;
        let bb = self.pool.upload(&mut cb, &b.as_slice()[..b_len])?;
        // C is read only when beta != 0.
        let cbuf = if beta != 0.0 {
            self.pool.upload(&mut cb, &c.as_slice()[..c_len])?
        } else {
            self.pool.buffer(
                c_len,
                BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
                MemoryTypeFilter::PREFER_DEVICE,
            )?
        };
        let bias = self.pool.upload(&mut cb, bias_data)?;
        self.record_plan(&mut cb, &plan, [&ab, &bb, &cbuf, &bias])?;
        let out = self.pool.readback(&mut cb, &cbuf, c_len)?;
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
        let most = self.pool.most_floats();
        let tiles = crate::winograd::tiles(g).unwrap_or(usize::MAX);
        if tiles >= t.min_winograd_tiles as usize && crate::winograd::applies(g, most) {
            return self.record_winograd(cb, g, activation, has_bias, bufs);
        }
        let plan = conv_plan(g, &Epilogue::activation(activation), t.min_vec4_tiles)?;
        self.record_plan(cb, &with_bias_mode(plan, u32::from(has_bias)), bufs)
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
        self.tuning(); // the plan reads it: a first autotune runs now, not inside this recording
        let mut cb = self.submitter.begin()?;
        let wb = self.pool.upload(&mut cb, weight)?;
        let xb = self.pool.upload(&mut cb, input)?;
        let yb = self.pool.buffer(
            output.len(),
            BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_DEVICE,
        )?;
        let bias = self.pool.upload(&mut cb, bias_data)?;
        self.record_conv2d(&mut cb, g, epi.activation, !bias_data.is_empty(), [&wb, &xb, &yb, &bias])?;
        let out = self.pool.readback(&mut cb, &yb, output.len())?;
        self.submit_and_wait(cb)?;
        output.copy_from_slice(&out.read().map_err(api("reading the output back"))?);
        Ok(())
    }

    /// `reps` runs of a plan recorded in one command buffer over device-resident buffers of the
    /// given lengths (A, B, C), timed from submission to completion after a one-run warm-up
    /// (pipeline creation excluded): seconds per run.
    pub(crate) fn time_resident(&self, plan: &Plan, lens: [usize; 3], reps: u32) -> Result<f64> {
        self.time_recorded([lens[0], lens[1], lens[2], 1], reps, 0.0, &|cb, bufs| self.record_plan(cb, plan, bufs))
    }

    /// [`Context::time_resident`] for whatever `record` records over (A, B, C, bias: `lens`
    /// 4-byte elements each, holding whatever the pool held), after at least `warm_up` seconds
    /// of the same runs (a GPU idling at a low clock needs about 0.1 s of sustained work to reach
    /// its full one; 0 keeps the one-run warm-up).
    pub(crate) fn time_recorded(
        &self,
        lens: [usize; 4],
        reps: u32,
        warm_up: f64,
        record: &Recorder<'_>,
    ) -> Result<f64> {
        let usage = BufferUsage::STORAGE_BUFFER;
        let dev = MemoryTypeFilter::PREFER_DEVICE;
        let (ab, bb, cbuf) = (
            self.pool.buffer(lens[0], usage, dev)?,
            self.pool.buffer(lens[1], usage, dev)?,
            self.pool.buffer(lens[2], usage, dev)?,
        );
        let bias = self.pool.buffer(lens[3], usage, dev)?;
        let run = |reps: u32| -> Result<f64> {
            let mut cb = self.submitter.begin()?;
            for _ in 0..reps {
                record(&mut cb, [&ab, &bb, &cbuf, &bias])?;
            }
            let t = Instant::now();
            self.submit_and_wait(cb)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let (reps, start) = (reps.max(1), Instant::now());
        run(1)?;
        while start.elapsed().as_secs_f64() < warm_up {
            run(reps)?;
        }
        Ok(run(reps)? / f64::from(reps))
    }

    /// Seconds per row-major `m x n x k` GEMM with the operands already on the device, after at
    /// least `warm_up` seconds of the same (see [`Context::time_gemm_half_resident`]).
    pub fn time_gemm_resident(&self, m: usize, n: usize, k: usize, reps: u32, warm_up: f64) -> Result<f64> {
        let params = gemm_params(1.0, [m, k, k, 1], [n, 1], 0.0, [n, n, 1])?;
        let plan = gemm_plan(&params, self.min_vec4_tiles())?;
        self.time_recorded([m * k, k * n, m * n, 1], reps, warm_up, &|cb, bufs| self.record_plan(cb, &plan, bufs))
    }

    /// Seconds per conv2d (+ ReLU) with input, weights and output already on the device.
    pub fn time_conv2d_resident(&self, g: &Conv2d, reps: u32) -> Result<f64> {
        self.time_conv2d_warm(g, reps, 0.0)
    }

    /// [`Context::time_conv2d_resident`] after at least `warm_up` seconds of the same.
    pub(crate) fn time_conv2d_warm(&self, g: &Conv2d, reps: u32, warm_up: f64) -> Result<f64> {
        self.time_recorded([g.weight_len(), g.input_len(), g.output_len(), 1], reps, warm_up, &|cb, bufs| {
            self.record_conv2d(cb, g, Activation::Relu, false, bufs)
        })
    }
}
