//! [`Sparkle`]: the one handle users call. Every op is placed by the juggler on the device
//! predicted to finish it first (the CPU path or a Vulkan device), timed, learned from, and on a
//! device failure re-run on the CPU from untouched inputs, so the caller always gets a complete,
//! correct result and a [`Run`] that says what happened.
//!
//! ```no_run
//! use sparkle_std::Sparkle;
//! use sparkle_std::core::{Epilogue, MatMut, MatRef};
//!
//! let sparkle = Sparkle::new()?;
//! let (a, b) = (vec![1.0f32; 64 * 32], vec![0.5f32; 32 * 16]);
//! let mut c = vec![0.0f32; 64 * 16];
//! let run = sparkle.gemm(
//!     1.0,
//!     MatRef::row_major(&a, 64, 32)?,
//!     MatRef::row_major(&b, 32, 16)?,
//!     0.0,
//!     MatMut::row_major(&mut c, 64, 16)?,
//!     &Epilogue::NONE,
//! )?;
//! println!("ran on {} ({}): {:.3} ms", run.device, run.kernel, run.seconds * 1e3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Devices: the CPU and every Vulkan GPU by default. A Vulkan device of type CPU (lavapipe,
//! llvmpipe, SwiftShader) runs on the host's own cores, so it is never chosen while the CPU path
//! is there: selected by name (`vulkan:N`) beside the CPU, it runs only the ops pinned to it
//! ([`Sparkle::gemm_on`], [`Sparkle::conv2d_tensor_on`], ...); selected without the CPU (or as
//! `vulkan` when it is the only Vulkan device), the juggler places work on it. Vulkan devices are opened on their first op: work the model keeps on the CPU
//! pays no Vulkan start-up. The learned model is loaded at start and saved on drop (and by
//! [`Sparkle::save`]), merged with what other processes saved meanwhile.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use sparkle_core::f16::{Half, HalfMats, HalfSlices};
use sparkle_core::{Conv2d, Epilogue, MatMut, MatRef, Precision};

pub use crate::backend::{DeviceError, DeviceErrorKind};
use crate::cpu::{Cpu, CpuError};
use crate::juggler::model::variant;
use crate::juggler::{store, Clock, DeviceId, Juggler, OpDesc, OpKind, SystemClock};

mod builder;
mod gpu;
mod quant;
mod split;
mod tensor;
pub use builder::{juggler_for, Builder, DeviceSel, CPU_TYPE_SETUP_SECONDS, GPU_SETUP_SECONDS};
pub use gpu::GpuDesc;
use gpu::{not_here, Gpu};
pub use tensor::{Tensor, TensorBias};

/// Why an op through [`Sparkle`] failed. Device failures are not among them: those fall back to
/// the CPU and are reported in [`Run::fallback`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SparkleError {
    /// Shapes, strides, epilogue or scalars rejected before any device ran (nothing written).
    #[error("{0}")]
    Invalid(#[from] sparkle_core::Error),
    /// The CPU path failed (its memory budget, or an ISA forced with `SPARKLE_ISA`).
    #[error("{0}")]
    Cpu(#[source] CpuError),
    /// The configuration asked for something this machine does not have (a device, a setting).
    #[error("{0}")]
    Config(String),
    /// A device failed and the re-run that should have replaced it failed too.
    #[error("{0}")]
    Device(#[source] DeviceError),
}

impl From<CpuError> for SparkleError {
    fn from(e: CpuError) -> Self {
        match e {
            CpuError::Core(e) => SparkleError::Invalid(e),
            e => SparkleError::Cpu(e),
        }
    }
}

/// What one op did.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Where the result came from.
    pub device: DeviceId,
    /// The kernel or path: the CPU kernel id and conv path, or the Vulkan device's name and path.
    pub kernel: String,
    /// The juggler's prediction for the device it picked, seconds.
    pub predicted: f64,
    /// Measured seconds (host copies included for a Vulkan device), the fallback's included.
    pub seconds: f64,
    /// Whether the device was picked to measure it (it had not run this size yet).
    pub explored: bool,
    /// The first op of this kind and path on that device: its time includes one-time set-up
    /// (opening the device, compiling pipelines) and was not learned as run time.
    pub first_use: bool,
    /// The device failure that made the CPU re-run the op, if one happened.
    pub fallback: Option<DeviceError>,
    /// Bytes copied from the host to a device for this op (inputs it did not hold yet).
    pub uploaded: u64,
    /// Bytes copied from a device to the host for this op (its output, for ops on host slices;
    /// inputs held only on another device).
    pub downloaded: u64,
}

impl Run {
    /// A run that succeeded where decision `d` placed it, with its (uploaded, downloaded) bytes.
    fn placed(
        d: &crate::juggler::Decision,
        kernel: String,
        seconds: f64,
        first_use: bool,
        (uploaded, downloaded): (u64, u64),
    ) -> Self {
        Run {
            device: d.device,
            kernel,
            predicted: d.predicted,
            seconds,
            explored: d.explored,
            first_use,
            fallback: None,
            uploaded,
            downloaded,
        }
    }
}

/// One device's prediction for an op: the juggler places it where `wait + run` is smallest
/// (exploration aside).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// The device.
    pub device: DeviceId,
    /// Predicted seconds of the op there, host copies included.
    pub run: f64,
    /// Seconds until the device is free: ops in flight there, or an unopened device's set-up.
    pub wait: f64,
}

/// Injected device failures, for tests of the fallback (see [`Builder::inject_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Every `every`-th op sent to a Vulkan device fails (1: all of them).
    pub every: usize,
    /// As what.
    pub kind: DeviceErrorKind,
}

/// The handle: see the module docs. `Send + Sync`: share it between threads (`&Sparkle` or an
/// `Arc`); decisions are serialised briefly, the ops themselves run concurrently.
pub struct Sparkle {
    cpu: Cpu,
    gpus: Vec<Gpu>,
    /// The juggler and the ops in flight per device, under one lock: a decision charges the
    /// device's queue and counts the op in; its end counts it out and, on the last, empties the
    /// queue, with no other decision in between.
    state: Mutex<State>,
    model_path: Option<PathBuf>,
    fingerprint: String,
    loaded: Option<Result<store::Loaded, String>>,
    faults: Option<Faults>,
    /// What [`Builder::precision`] set.
    precision: Precision,
    gpu_ops: AtomicUsize,
    /// This handle among all in the process (device copies of tensors belong to one handle).
    #[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
    id: u64,
}

impl fmt::Debug for Sparkle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sparkle")
            .field("cpu", &self.cpu)
            .field("gpus", &self.gpus.iter().map(|g| &g.desc).collect::<Vec<_>>())
            .field("model_path", &self.model_path)
            .finish()
    }
}

/// What the lock of a [`Sparkle`] guards.
struct State {
    juggler: Juggler<SystemClock>,
    inflight: Vec<(DeviceId, usize)>,
    /// Whether anything was learned since the model was loaded or saved (a handle that ran
    /// nothing never rewrites the file).
    dirty: bool,
}

/// One op counted in flight on a device until dropped (also when the op panics).
struct InFlight<'a> {
    sparkle: &'a Sparkle,
    device: DeviceId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.sparkle.state();
        let now = st.juggler.clock().now();
        let idle = match st.inflight.iter_mut().find(|(d, _)| *d == self.device) {
            Some((_, n)) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => true,
        };
        if idle {
            st.juggler.set_busy_until(self.device, now);
        }
    }
}

/// The op being placed, as each backend runs it.
enum Op<'a, 'b> {
    Gemm {
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        c: &'b mut MatMut<'a>,
        epi: &'b Epilogue<'a>,
        // Only a Vulkan device computes anything but f32.
        #[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
        precision: Precision,
    },
    GemmHalf {
        ab: HalfMats<'a>,
        c: &'b mut MatMut<'a>,
        epi: &'b Epilogue<'a>,
    },
    Conv2dHalf {
        g: &'b Conv2d,
        xw: HalfSlices<'a>,
        epi: &'b Epilogue<'a>,
        output: &'b mut [f32],
    },
    Conv2d {
        g: &'b Conv2d,
        input: &'a [f32],
        weight: &'a [f32],
        epi: &'b Epilogue<'a>,
        output: &'b mut [f32],
    },
    /// An int8 GEMM, its operand and output types behind the job.
    QGemm {
        job: &'b mut dyn quant::QGemmJob,
    },
}

impl Op<'_, '_> {
    /// Bytes a Vulkan device copies in and out for the op: every input (C only when beta is not
    /// 0), and the output.
    fn copies(&self) -> (u64, u64) {
        let len = |rows, cols, rs, cs| sparkle_core::view::required_len(rows, cols, rs, cs).unwrap_or(0) as u64;
        let (up, down) = match self {
            Op::Gemm { a, b, beta, c, epi, .. } => {
                let c_len = len(c.rows(), c.cols(), c.rs(), c.cs());
                let bias = match epi.bias {
                    sparkle_core::Bias::None => 0,
                    sparkle_core::Bias::Row(v) | sparkle_core::Bias::Col(v) => v.len() as u64,
                };
                let up = len(a.rows(), a.cols(), a.rs(), a.cs()) + len(b.rows(), b.cols(), b.rs(), b.cs()) + bias;
                (up + if *beta != 0.0 { c_len } else { 0 }, c_len)
            }
            Op::Conv2d { g, epi, .. } => {
                let bias = if matches!(epi.bias, sparkle_core::Bias::None) { 0 } else { g.params().k };
                ((g.input_len() + g.weight_len() + bias) as u64, g.output_len() as u64)
            }
            Op::GemmHalf { ab, c, epi } => {
                // Two-byte A and B (packed, so only their elements), four-byte bias and C.
                let (a, b) = match ab {
                    HalfMats::F16(a, b) => ((a.rows(), a.cols()), (b.rows(), b.cols())),
                    HalfMats::Bf16(a, b) => ((a.rows(), a.cols()), (b.rows(), b.cols())),
                };
                let bias = match epi.bias {
                    sparkle_core::Bias::None => 0,
                    sparkle_core::Bias::Row(v) | sparkle_core::Bias::Col(v) => v.len() as u64,
                };
                // Saturating: broadcast views (stride 0) can describe more elements than memory.
                let halves = (a.0.saturating_mul(a.1)).saturating_add(b.0.saturating_mul(b.1)) as u64;
                let c_len = c.rows().saturating_mul(c.cols()) as u64;
                return (halves.saturating_mul(2).saturating_add(4 * bias), c_len.saturating_mul(4));
            }
            Op::Conv2dHalf { g, epi, .. } => {
                let bias = if matches!(epi.bias, sparkle_core::Bias::None) { 0 } else { g.params().k };
                let halves = (g.input_len() + g.weight_len()) as u64;
                return (2 * halves + 4 * bias as u64, 4 * g.output_len() as u64);
            }
            Op::QGemm { job } => return job.copies(),
        };
        (4 * up, 4 * down)
    }
}

impl Sparkle {
    /// The CPU and every Vulkan GPU, the learned model from its default place.
    pub fn new() -> Result<Self, SparkleError> {
        Self::builder().build()
    }

    /// Configures devices, threads, the model, determinism and fault injection.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The devices work may be placed on.
    pub fn devices(&self) -> Vec<DeviceId> {
        self.state().juggler.device_ids()
    }

    /// The CPU backend (the fallback of last resort, whichever devices are selected).
    pub fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    /// The Vulkan devices this handle may use.
    pub fn gpus(&self) -> Vec<GpuDesc> {
        self.gpus.iter().map(|g| g.desc.clone()).collect()
    }

    /// What loading the model found (`None`: in-memory model), or why the file was ignored.
    pub fn model_status(&self) -> Option<&Result<store::Loaded, String>> {
        self.loaded.as_ref()
    }

    /// Where the model is kept, if anywhere.
    pub fn model_path(&self) -> Option<&std::path::Path> {
        self.model_path.as_deref()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the learned model now (merged with what other processes saved). Also done on drop
    /// when something was learned. The file is read and written outside the handle's lock.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.model_path else { return Ok(()) };
        let snapshot = {
            let mut st = self.state();
            st.dirty = false;
            store::snapshot(&st.juggler)
        };
        store::save_snapshot(snapshot, path, &self.fingerprint)
    }

    /// Every device's prediction for an f32 GEMM of this shape (at [`Sparkle::precision`]), as
    /// the juggler weighs it.
    pub fn predict_gemm(&self, m: usize, n: usize, k: usize) -> Vec<Prediction> {
        self.predict(&OpDesc::gemm_at(m, n, k, self.precision))
    }

    /// The precision f32 GEMMs may be computed in ([`Builder::precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Every device's prediction for an `m x n x k` GEMM on `H` inputs, as the juggler weighs it.
    pub fn predict_gemm_half<H: Half>(&self, m: usize, n: usize, k: usize) -> Vec<Prediction> {
        self.predict(&OpDesc::gemm_half(m, n, k, half_variant::<H>()))
    }

    /// Every device's prediction for this conv2d, as the juggler weighs it.
    pub fn predict_conv2d(&self, g: &Conv2d) -> Vec<Prediction> {
        self.predict(&OpDesc::conv2d(g))
    }

    fn predict(&self, op: &OpDesc) -> Vec<Prediction> {
        let st = self.state();
        let j = &st.juggler;
        let now = j.clock().now();
        j.device_ids()
            .into_iter()
            .filter_map(|device| {
                let run = j.predict_on(device, op, false)?;
                let wait = (j.busy_until(device)? - now).max(0.0);
                Some(Prediction { device, run, wait })
            })
            .collect()
    }

    /// `C <- act(alpha * A * B + beta * C + bias)`, exactly the arguments of [`Cpu::gemm`],
    /// placed by the juggler. Validated first: a bad argument is an error and C is untouched.
    pub fn gemm<'a>(
        &self,
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        self.gemm_at(None, alpha, a, b, beta, c, epi)
    }

    /// `output = act(conv2d(input, weight) + bias)`, exactly the arguments of [`Cpu::conv2d`],
    /// placed by the juggler. Validated first: a bad argument is an error and the output is
    /// untouched.
    pub fn conv2d<'a>(
        &self,
        g: &Conv2d,
        input: &'a [f32],
        weight: &'a [f32],
        epi: &Epilogue<'a>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        self.conv2d_at(None, g, input, weight, epi, output)
    }

    /// `C <- act(A * B + bias)` on f16 or bf16 A and B (any strides), f32 sums and C, placed by
    /// the juggler, which models each input type apart from f32 (a GPU's tensor cores make half
    /// GEMMs far faster there). On Vulkan: [`crate::vk::Context::gemm_half`] (cooperative matrices
    /// for f16 where the device has them); on the CPU, and as the fallback when a device fails:
    /// [`Cpu::gemm_half`]. Validated first: a bad argument is an error and C is untouched.
    pub fn gemm_half<'a, H: Half>(
        &self,
        a: MatRef<'a, H>,
        b: MatRef<'a, H>,
        c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        self.gemm_half_at(None, a, b, c, epi)
    }

    /// [`Sparkle::gemm_half`] on `device`, as [`Sparkle::gemm_on`].
    pub fn gemm_half_on<'a, H: Half>(
        &self,
        device: DeviceId,
        a: MatRef<'a, H>,
        b: MatRef<'a, H>,
        c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        self.gemm_half_at(Some(device), a, b, c, epi)
    }

    fn gemm_half_at<'a, H: Half>(
        &self,
        forced: Option<DeviceId>,
        a: MatRef<'a, H>,
        b: MatRef<'a, H>,
        mut c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        let d = sparkle_core::f16::check_half(&a, &b, &c)?;
        epi.validate(d.m, d.n)?;
        let v = half_variant::<H>();
        let desc = OpDesc::gemm_half(d.m, d.n, d.k, v);
        let path = if v == variant::F16 { "gemm f16" } else { "gemm bf16" };
        self.place_on(forced, &desc, path, Op::GemmHalf { ab: H::mats(a, b), c: &mut c, epi })
    }

    /// `output = act(conv2d(input, weight) + bias)` on f16 or bf16 input and weights (every
    /// geometry), f32 sums and output, placed by the juggler (each input type modelled apart). On
    /// Vulkan: [`crate::vk::Context::conv2d_half`]; on the CPU and as the fallback:
    /// [`Cpu::conv2d_half`]. Validated first: a bad argument is an error and the output is
    /// untouched.
    pub fn conv2d_half<H: Half>(
        &self,
        g: &Conv2d,
        input: &[H],
        weight: &[H],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        self.conv2d_half_at(None, g, input, weight, epi, output)
    }

    /// [`Sparkle::conv2d_half`] on `device`, as [`Sparkle::gemm_on`].
    pub fn conv2d_half_on<H: Half>(
        &self,
        device: DeviceId,
        g: &Conv2d,
        input: &[H],
        weight: &[H],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        self.conv2d_half_at(Some(device), g, input, weight, epi, output)
    }

    fn conv2d_half_at<H: Half>(
        &self,
        forced: Option<DeviceId>,
        g: &Conv2d,
        input: &[H],
        weight: &[H],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        let desc = OpDesc::conv2d_half(g, conv_variant::<H>());
        let path = if conv_variant::<H>() == variant::CONV_F16 { "conv2d f16" } else { "conv2d bf16" };
        self.place_on(forced, &desc, path, Op::Conv2dHalf { g, xw: H::slices(input, weight), epi, output })
    }

    /// Every device's prediction for conv2d `g` on `H` input and weights, as the juggler weighs it.
    pub fn predict_conv2d_half<H: Half>(&self, g: &Conv2d) -> Vec<Prediction> {
        self.predict(&OpDesc::conv2d_half(g, conv_variant::<H>()))
    }

    /// [`Sparkle::gemm`] on `device` (one of [`Sparkle::devices`], or the CPU), not where the
    /// juggler would place it: to compare devices, or to pin an op. Still learned from, and still
    /// falls back to the CPU if the device fails.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_on<'a>(
        &self,
        device: DeviceId,
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        self.gemm_at(Some(device), alpha, a, b, beta, c, epi)
    }

    /// [`Sparkle::conv2d`] on `device`, as [`Sparkle::gemm_on`].
    pub fn conv2d_on<'a>(
        &self,
        device: DeviceId,
        g: &Conv2d,
        input: &'a [f32],
        weight: &'a [f32],
        epi: &Epilogue<'a>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        self.conv2d_at(Some(device), g, input, weight, epi, output)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_at<'a>(
        &self,
        forced: Option<DeviceId>,
        alpha: f32,
        a: MatRef<'a>,
        b: MatRef<'a>,
        beta: f32,
        mut c: MatMut<'a>,
        epi: &Epilogue<'a>,
    ) -> Result<Run, SparkleError> {
        let d = sparkle_core::gemm::check(alpha, &a, &b, beta, &c, epi)?;
        let precision = self.precision;
        let desc = OpDesc::gemm_at(d.m, d.n, d.k, precision);
        let path = match precision {
            Precision::Highest => "gemm",
            Precision::High => "gemm high",
            Precision::Medium => "gemm medium",
        };
        self.place_on(forced, &desc, path, Op::Gemm { alpha, a, b, beta, c: &mut c, epi, precision })
    }

    fn conv2d_at<'a>(
        &self,
        forced: Option<DeviceId>,
        g: &Conv2d,
        input: &'a [f32],
        weight: &'a [f32],
        epi: &Epilogue<'a>,
        output: &mut [f32],
    ) -> Result<Run, SparkleError> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        let op = Op::Conv2d { g, input, weight, epi, output };
        // The path the CPU runs (workers, kernel and budget included) names the run.
        let path = self.cpu.conv2d_run_path(g);
        self.place_on(forced, &OpDesc::conv2d(g), path.name(), op)
    }

    /// Runs `op` on `forced`, or where the juggler decides.
    fn place_on(
        &self,
        forced: Option<DeviceId>,
        desc: &OpDesc,
        path: &'static str,
        mut op: Op<'_, '_>,
    ) -> Result<Run, SparkleError> {
        self.check_forced(forced)?;
        let (decision, _inflight) = self.reserve(|j| match forced {
            Some(device) => Some(crate::juggler::Decision {
                device,
                predicted: j.predict_on(device, desc, false).unwrap_or(f64::NAN),
                explored: false,
            }),
            None => j.decide(desc, false),
        });
        let started = Instant::now();
        let result = match decision {
            Some(d) if d.device != DeviceId::Cpu => {
                match self.run_gpu(d.device, &mut op) {
                    Ok(kernel) => {
                        let seconds = started.elapsed().as_secs_f64();
                        // Marked only once an op succeeded: a failed first op leaves the set-up to
                        // the next one, which is then not learned as run time either.
                        let first = self.first_use(d.device, desc.kind, path);
                        // Host slices: every operand byte crossed to the device and back.
                        let copies = self.state().juggler.copy_seconds(d.device, desc.bytes);
                        self.learn(d.device, desc, copies, seconds, first);
                        Ok(Run::placed(&d, format!("{kernel}, {path}"), seconds, first, op.copies()))
                    }
                    // Whatever the kind (lost, out of memory, or a device limit the host's
                    // validation could not know), the inputs are untouched: the CPU answers.
                    Err(e) => {
                        self.state().juggler.fail(d.device);
                        self.run_cpu(desc, path, &mut op, d.predicted, started, Some(e))
                    }
                }
            }
            Some(d) => self.run_cpu(desc, path, &mut op, d.predicted, started, None).map(|mut r| {
                r.explored = d.explored;
                r
            }),
            // Every device is backing off after failures: the CPU path is the last resort.
            None => self.run_cpu(desc, path, &mut op, f64::NAN, started, None),
        };
        result
    }

    /// An error unless `forced` (a pinned op's device) is one of this handle's.
    fn check_forced(&self, forced: Option<DeviceId>) -> Result<(), SparkleError> {
        match forced {
            Some(DeviceId::Vulkan(i)) if self.gpu(DeviceId::Vulkan(i)).is_none() => {
                Err(SparkleError::Config(format!("vulkan:{i} is not a device of this handle")))
            }
            _ => Ok(()),
        }
    }

    /// Decides with `decide` and charges the decision to its device's queue, under one lock; the
    /// guard counts the op out again when dropped.
    fn reserve(
        &self,
        decide: impl FnOnce(&Juggler<SystemClock>) -> Option<crate::juggler::Decision>,
    ) -> (Option<crate::juggler::Decision>, Option<InFlight<'_>>) {
        let mut st = self.state();
        let Some(d) = decide(&st.juggler) else { return (None, None) };
        let j = &mut st.juggler;
        let now = j.clock().now();
        let start = j.busy_until(d.device).unwrap_or(now).max(now);
        j.set_busy_until(d.device, start + d.predicted);
        match st.inflight.iter_mut().find(|(dev, _)| *dev == d.device) {
            Some((_, n)) => *n += 1,
            None => st.inflight.push((d.device, 1)),
        }
        (Some(d), Some(InFlight { sparkle: self, device: d.device }))
    }

    /// Learns `seconds` of `desc` on `device`, of which `copies` (predicted) were copies.
    fn learn(&self, device: DeviceId, desc: &OpDesc, copies: f64, seconds: f64, first_call: bool) {
        let mut st = self.state();
        st.juggler.record_with(device, desc, copies, seconds, first_call);
        st.dirty |= !first_call;
    }

    fn run_cpu(
        &self,
        desc: &OpDesc,
        path: &'static str,
        op: &mut Op<'_, '_>,
        predicted: f64,
        started: Instant,
        fallback: Option<DeviceError>,
    ) -> Result<Run, SparkleError> {
        let t = Instant::now();
        match op {
            Op::Gemm { alpha, a, b, beta, c, epi, .. } => {
                self.cpu.gemm(*alpha, *a, *b, *beta, c.rb_mut(), epi)?;
            }
            Op::Conv2d { g, input, weight, epi, output } => self.cpu.conv2d(g, input, weight, epi, output)?,
            Op::GemmHalf { ab: HalfMats::F16(a, b), c, epi } => {
                self.cpu.gemm_half(a, b, c.rb_mut(), epi)?;
            }
            Op::GemmHalf { ab: HalfMats::Bf16(a, b), c, epi } => {
                self.cpu.gemm_half(a, b, c.rb_mut(), epi)?;
            }
            Op::Conv2dHalf { g, xw: HalfSlices::F16(x, w), epi, output } => {
                self.cpu.conv2d_half(g, x, w, epi, output)?;
            }
            Op::Conv2dHalf { g, xw: HalfSlices::Bf16(x, w), epi, output } => {
                self.cpu.conv2d_half(g, x, w, epi, output)?;
            }
            Op::QGemm { job } => job.cpu(&self.cpu)?,
        }
        // (The juggler ignores a device it was not given: a handle without the CPU learns nothing.)
        self.learn(DeviceId::Cpu, desc, 0.0, t.elapsed().as_secs_f64(), false);
        let kernel = match op {
            Op::GemmHalf { ab: HalfMats::Bf16(..), .. } => self.cpu.bkernel.id(),
            Op::QGemm { .. } => self.cpu.qkernel.id(),
            _ => self.cpu.kernel.id(),
        };
        Ok(Run {
            device: DeviceId::Cpu,
            kernel: format!("{kernel}, {path}"),
            predicted,
            seconds: started.elapsed().as_secs_f64(),
            explored: false,
            first_use: false,
            fallback,
            uploaded: 0,
            downloaded: 0,
        })
    }

    /// Whether this is `device`'s first op of this kind and path (and remembers it).
    fn first_use(&self, device: DeviceId, kind: OpKind, path: &'static str) -> bool {
        let Some(g) = self.gpu(device) else { return false };
        g.seen.lock().unwrap_or_else(|e| e.into_inner()).insert((kind, path))
    }
}

/// The juggler's first conv2d variant for `H` inputs (the geometry's is added to it).
fn conv_variant<H: Half>() -> u8 {
    if H::DTYPE == sparkle_core::check::DType::F16 {
        variant::CONV_F16
    } else {
        variant::CONV_BF16
    }
}

/// The juggler's GEMM variant for `H` inputs.
fn half_variant<H: Half>() -> u8 {
    if H::DTYPE == sparkle_core::check::DType::F16 {
        variant::F16
    } else {
        variant::BF16
    }
}

impl Drop for Sparkle {
    fn drop(&mut self) {
        // Only what was learned is saved (a handle that ran nothing leaves the file alone); best
        // effort: a model that cannot be saved is only a lost optimisation.
        if self.state().dirty {
            let _ = self.save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<Sparkle>();
    }

    #[test]
    fn device_names_parse() {
        assert_eq!(DeviceSel::parse("cpu"), Some(DeviceSel::Cpu));
        assert_eq!(DeviceSel::parse("vulkan"), Some(DeviceSel::Vulkan));
        assert_eq!(DeviceSel::parse("vulkan:2"), Some(DeviceSel::VulkanIndex(2)));
        assert_eq!(DeviceSel::parse("vulkan:x"), None);
        assert_eq!(DeviceSel::parse("gpu"), None);
    }
}
