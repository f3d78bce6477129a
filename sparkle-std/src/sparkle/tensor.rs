//! Tensors for chains of ops: [`Sparkle::upload`] once, run ops whose inputs and outputs are
//! [`Tensor`]s, [`Sparkle::download`] at the end. Each op's output stays on the device that ran
//! it, so a chain the juggler keeps on one GPU never crosses back to the host between layers.
//!
//! Placement charges only the copies an op needs: an input already on a device costs nothing
//! there; one on the host costs its upload; one on another GPU its download and upload. The
//! first op of a kind on a device includes pipeline set-up and is not learned as run time.
//!
//! A device failure re-runs the op on the CPU. If the device was lost, every tensor that lived
//! only there is gone, so each tensor remembers how it was made (its op and inputs) until it has a
//! host copy: the CPU recomputes what was lost, and the chain's result is still complete and
//! correct. A tensor with a host copy forgets its recipe, which lets the inputs before it go.
//!
//! ```no_run
//! use sparkle_std::core::{Activation, Conv2dParams, Padding};
//! use sparkle_std::Sparkle;
//!
//! let sparkle = Sparkle::new()?;
//! let g = Conv2dParams::new(1, 16, 32, 32, 16, 3, 3).pad(Padding::uniform(1)).validate()?;
//! let x = sparkle.upload(&vec![0.5; g.input_len()])?;
//! let w = sparkle.upload(&vec![0.01; g.weight_len()])?;
//! let (y1, _) = sparkle.conv2d_tensor(&g, &x, &w, None, Activation::Relu)?;
//! let (y2, run) = sparkle.conv2d_tensor(&g, &y1, &w, None, Activation::Relu)?;
//! println!("layer 2 on {}; y2 lives on {:?}", run.device, sparkle.locations(&y2));
//! let out: Vec<f32> = sparkle.download(&y2)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sparkle_core::epilogue::Bias;
use sparkle_core::{Activation, Conv2d, Epilogue, Error, MatMut, MatRef, Param};

use super::{DeviceError, Run, Sparkle, SparkleError};
use crate::cpu::Cpu;
use crate::juggler::{DeviceId, Juggler, OpDesc, SystemClock};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Floats that live on the host, on one or more Vulkan devices, or both, made by a [`Sparkle`].
/// Immutable: ops make new tensors. Cloning is cheap and shares the data.
#[derive(Clone)]
pub struct Tensor(Arc<Node>);

struct Node {
    len: usize,
    host: Mutex<Option<Arc<Vec<f32>>>>,
    #[cfg(feature = "vulkan")]
    copies: Mutex<Vec<DeviceCopy>>,
    /// How to recompute it on the CPU while it has no host copy.
    recipe: Mutex<Option<TensorOp>>,
}

/// A copy on Vulkan device `index` of the handle `owner`, valid while that device is still the
/// same `generation` (not lost since). Another handle's copies are not this handle's to use.
#[cfg(feature = "vulkan")]
#[derive(Clone)]
struct DeviceCopy {
    owner: u64,
    index: usize,
    generation: u64,
    tensor: sparkle_vk::Tensor,
}

impl Tensor {
    /// Number of floats.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether it holds no floats.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    fn new(len: usize, host: Option<Vec<f32>>, recipe: Option<TensorOp>) -> Self {
        Tensor(Arc::new(Node {
            len,
            host: Mutex::new(host.map(Arc::new)),
            #[cfg(feature = "vulkan")]
            copies: Mutex::default(),
            recipe: Mutex::new(recipe),
        }))
    }

    fn host(&self) -> Option<Arc<Vec<f32>>> {
        lock(&self.0.host).clone()
    }

    /// Stores the host copy and forgets the recipe (its inputs may go).
    fn set_host(&self, data: Arc<Vec<f32>>) {
        *lock(&self.0.host) = Some(data);
        *lock(&self.0.recipe) = None;
    }

    fn bytes(&self) -> f64 {
        4.0 * self.0.len as f64
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor").field("len", &self.0.len).field("on_host", &self.host().is_some()).finish()
    }
}

/// The bias of [`Sparkle::gemm_tensor`]: none, one per row of C, or one per column.
#[derive(Clone, Copy, Debug, Default)]
pub enum TensorBias<'t> {
    /// No bias.
    #[default]
    None,
    /// `bias[i]` added to row i (length m).
    Row(&'t Tensor),
    /// `bias[j]` added to column j (length n): a fully connected layer's bias.
    Col(&'t Tensor),
}

/// Which side a GEMM bias is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Row,
    Col,
}

/// An op on tensors: what runs, and what a tensor keeps to be recomputed.
#[derive(Clone)]
enum TensorOp {
    Conv2d { g: Conv2d, input: Tensor, weight: Tensor, bias: Option<Tensor>, activation: Activation },
    Gemm { mnk: [usize; 3], a: Tensor, b: Tensor, bias: Option<(Tensor, Side)>, activation: Activation },
}

impl TensorOp {
    /// A validated conv2d on tensors.
    fn conv2d(
        g: &Conv2d,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Self, SparkleError> {
        g.check_buffers(input.len(), weight.len(), bias.map(Tensor::len), g.output_len())?;
        activation.validate()?;
        Ok(TensorOp::Conv2d { g: *g, input: input.clone(), weight: weight.clone(), bias: bias.cloned(), activation })
    }

    /// A validated row-major GEMM on tensors.
    fn gemm(
        a: &Tensor,
        b: &Tensor,
        [m, n, k]: [usize; 3],
        bias: TensorBias<'_>,
        activation: Activation,
    ) -> Result<Self, SparkleError> {
        let need = |rows: usize, cols: usize, param| rows.checked_mul(cols).ok_or(Error::Overflow { param });
        let expect = [(Param::A, need(m, k, Param::A)?, a.len()), (Param::B, need(k, n, Param::B)?, b.len())];
        need(m, n, Param::COut)?;
        for (param, expected, found) in expect {
            if expected != found {
                return Err(Error::Mismatch { param, expected, found }.into());
            }
        }
        let bias = match bias {
            TensorBias::None => None,
            TensorBias::Row(t) => Some((t.clone(), Side::Row, m)),
            TensorBias::Col(t) => Some((t.clone(), Side::Col, n)),
        };
        if let Some((t, _, expected)) = &bias {
            if t.len() != *expected {
                return Err(Error::Mismatch { param: Param::Bias, expected: *expected, found: t.len() }.into());
            }
        }
        activation.validate()?;
        let bias = bias.map(|(t, side, _)| (t, side));
        Ok(TensorOp::Gemm { mnk: [m, n, k], a: a.clone(), b: b.clone(), bias, activation })
    }

    fn inputs(&self) -> Vec<&Tensor> {
        match self {
            TensorOp::Conv2d { input, weight, bias, .. } => {
                [Some(input), Some(weight), bias.as_ref()].into_iter().flatten().collect()
            }
            TensorOp::Gemm { a, b, bias, .. } => {
                [Some(a), Some(b), bias.as_ref().map(|(t, _)| t)].into_iter().flatten().collect()
            }
        }
    }

    fn desc(&self) -> OpDesc {
        match self {
            TensorOp::Conv2d { g, .. } => OpDesc::conv2d(g),
            TensorOp::Gemm { mnk: [m, n, k], .. } => OpDesc::gemm(*m, *n, *k),
        }
    }

    /// The path `cpu` runs the op on (workers, kernel and budget included), naming the run.
    fn path(&self, cpu: &Cpu) -> &'static str {
        match self {
            TensorOp::Conv2d { g, .. } => cpu.conv2d_run_path(g).name(),
            TensorOp::Gemm { .. } => "gemm",
        }
    }

    fn out_len(&self) -> usize {
        match self {
            TensorOp::Conv2d { g, .. } => g.output_len(),
            // Checked when the op was made.
            TensorOp::Gemm { mnk: [m, n, _], .. } => m * n,
        }
    }

    fn activation(&self) -> Activation {
        match self {
            TensorOp::Conv2d { activation, .. } | TensorOp::Gemm { activation, .. } => *activation,
        }
    }

    /// Runs on the CPU path over host copies of the inputs ([`Sparkle::host_of`]: downloaded or
    /// recomputed where need be, the bytes downloaded counted in `downloaded`).
    fn run_cpu(&self, s: &Sparkle, downloaded: &mut u64) -> Result<Vec<f32>, SparkleError> {
        let hosts = self.inputs().into_iter().map(|t| s.host_of(t, downloaded)).collect::<Result<Vec<_>, _>>()?;
        let mut out =
            s.cpu.memory_budget.zeros("an op's output tensor", self.out_len()).map_err(crate::cpu::CpuError::from)?;
        let activation = self.activation();
        match self {
            TensorOp::Conv2d { g, .. } => {
                let bias = hosts.get(2).map_or(Bias::None, |b| Bias::Row(b));
                s.cpu.conv2d(g, &hosts[0], &hosts[1], &Epilogue { bias, activation }, &mut out)?;
            }
            TensorOp::Gemm { mnk: [m, n, k], bias, .. } => {
                let bias = match (bias, hosts.get(2)) {
                    (Some((_, Side::Row)), Some(b)) => Bias::Row(b),
                    (Some((_, Side::Col)), Some(b)) => Bias::Col(b),
                    _ => Bias::None,
                };
                let (a, b) = (MatRef::row_major(&hosts[0], *m, *k)?, MatRef::row_major(&hosts[1], *k, *n)?);
                s.cpu.gemm(1.0, a, b, 0.0, MatMut::row_major(&mut out, *m, *n)?, &Epilogue { bias, activation })?;
            }
        }
        Ok(out)
    }
}

impl Sparkle {
    /// A tensor holding a copy of `data`, on the host until an op needs it on a device (the copy
    /// is then part of that op, and kept for the next). Errors if it does not fit the memory
    /// budget.
    pub fn upload(&self, data: &[f32]) -> Result<Tensor, SparkleError> {
        self.cpu.memory_budget.check("an uploaded tensor", data.len(), 4).map_err(crate::cpu::CpuError::from)?;
        Ok(Tensor::new(data.len(), Some(data.to_vec()), None))
    }

    /// The tensor's floats: downloaded from a device that holds it, or recomputed on the CPU if
    /// that device was lost. The host copy is kept.
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>, SparkleError> {
        Ok(self.host_of(t, &mut 0)?.as_ref().clone())
    }

    /// Where the tensor's data is now: [`DeviceId::Cpu`] for a host copy, and every Vulkan
    /// device holding a live copy.
    pub fn locations(&self, t: &Tensor) -> Vec<DeviceId> {
        let mut at = Vec::new();
        if t.host().is_some() {
            at.push(DeviceId::Cpu);
        }
        #[cfg(feature = "vulkan")]
        for c in lock(&t.0.copies).iter().filter(|c| c.owner == self.id) {
            let live = self.gpu(DeviceId::Vulkan(c.index)).is_some_and(|g| self.context_of(g, c.generation).is_some());
            if live && !at.contains(&DeviceId::Vulkan(c.index)) {
                at.push(DeviceId::Vulkan(c.index));
            }
        }
        at
    }

    /// `act(conv2d(input, weight) + bias)` on tensors (bias: one per output channel), placed by
    /// the juggler with the copies each device would need; the output stays where it was made.
    pub fn conv2d_tensor(
        &self,
        g: &Conv2d,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<(Tensor, Run), SparkleError> {
        self.place_tensor(None, TensorOp::conv2d(g, input, weight, bias, activation)?)
    }

    /// [`Sparkle::conv2d_tensor`] on `device`, not where the juggler would place it (as
    /// [`Sparkle::conv2d_on`]): still learned from, still falls back to the CPU.
    pub fn conv2d_tensor_on(
        &self,
        device: DeviceId,
        g: &Conv2d,
        input: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<(Tensor, Run), SparkleError> {
        self.place_tensor(Some(device), TensorOp::conv2d(g, input, weight, bias, activation)?)
    }

    /// `C = act(A B + bias)` on tensors: A is `m x k`, B `k x n`, C `m x n`, all row-major;
    /// placed as [`Sparkle::conv2d_tensor`].
    pub fn gemm_tensor(
        &self,
        a: &Tensor,
        b: &Tensor,
        mnk: [usize; 3],
        bias: TensorBias<'_>,
        activation: Activation,
    ) -> Result<(Tensor, Run), SparkleError> {
        self.place_tensor(None, TensorOp::gemm(a, b, mnk, bias, activation)?)
    }

    /// [`Sparkle::gemm_tensor`] on `device`, as [`Sparkle::conv2d_tensor_on`].
    pub fn gemm_tensor_on(
        &self,
        device: DeviceId,
        a: &Tensor,
        b: &Tensor,
        mnk: [usize; 3],
        bias: TensorBias<'_>,
        activation: Activation,
    ) -> Result<(Tensor, Run), SparkleError> {
        self.place_tensor(Some(device), TensorOp::gemm(a, b, mnk, bias, activation)?)
    }

    /// Seconds of copies `inputs` (with their `locations`) need to be on `device`.
    fn copies_to(j: &Juggler<SystemClock>, inputs: &[(&Tensor, Vec<DeviceId>)], device: DeviceId) -> f64 {
        inputs
            .iter()
            .map(|(t, at)| {
                if at.contains(&device) {
                    return 0.0;
                }
                // From the host, or down from the device holding it first.
                let down = if at.contains(&DeviceId::Cpu) {
                    0.0
                } else {
                    at.first().map_or(0.0, |&src| j.copy_seconds(src, t.bytes()))
                };
                down + j.copy_seconds(device, t.bytes())
            })
            .sum()
    }

    /// Runs `op` on `forced`, or where the juggler decides with the copies each device needs.
    fn place_tensor(&self, forced: Option<DeviceId>, op: TensorOp) -> Result<(Tensor, Run), SparkleError> {
        self.check_forced(forced)?;
        let desc = op.desc();
        let path = op.path(&self.cpu);
        let inputs: Vec<(&Tensor, Vec<DeviceId>)> = op.inputs().into_iter().map(|t| (t, self.locations(t))).collect();
        let mut copies = 0.0;
        let (decision, _inflight) = self.reserve(|j| {
            let d = match forced {
                Some(device) => crate::juggler::Decision {
                    device,
                    predicted: j.predict_on(device, &desc, true).unwrap_or(f64::NAN)
                        + Self::copies_to(j, &inputs, device),
                    explored: false,
                },
                None => j.decide_with(&desc, &|device| Self::copies_to(j, &inputs, device))?,
            };
            copies = Self::copies_to(j, &inputs, d.device);
            Some(d)
        });
        let started = Instant::now();
        let mut fallback = None;
        let mut downloaded = 0;
        if let Some(d) = decision.filter(|d| d.device != DeviceId::Cpu) {
            // Host copies of the inputs the device lacks (downloaded from another device, or
            // recomputed), fetched before anything is recorded.
            let hosts = inputs
                .iter()
                .map(
                    |(t, at)| {
                        if at.contains(&d.device) {
                            Ok(None)
                        } else {
                            self.host_of(t, &mut downloaded).map(Some)
                        }
                    },
                )
                .collect::<Result<Vec<_>, _>>()?;
            match self.run_gpu_tensor(d.device, &op, &hosts) {
                Ok((out, kernel, device_seconds, uploaded)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    let first = self.first_use(d.device, desc.kind, path);
                    // The device's own time (its copies included, queueing behind other threads'
                    // submissions excluded) where it has timestamps.
                    self.learn(d.device, &desc, copies, device_seconds.unwrap_or(seconds), first);
                    let run = Run::placed(&d, format!("{kernel}, {path}"), seconds, first, (uploaded, downloaded));
                    return Ok((out, run));
                }
                Err(e) => {
                    self.state().juggler.fail(d.device);
                    fallback = Some(e);
                }
            }
        }
        // The CPU: chosen, the fallback, or the last resort when every device is backing off.
        let t = Instant::now();
        let out = op.run_cpu(self, &mut downloaded)?;
        let copies = Self::copies_to(&self.state().juggler, &inputs, DeviceId::Cpu);
        self.learn(DeviceId::Cpu, &desc, copies, t.elapsed().as_secs_f64(), false);
        let run = Run {
            device: DeviceId::Cpu,
            kernel: format!("{}, {path}", self.cpu.kernel.id()),
            predicted: decision.map_or(f64::NAN, |d| d.predicted),
            seconds: started.elapsed().as_secs_f64(),
            explored: fallback.is_none() && decision.is_some_and(|d| d.explored),
            first_use: false,
            fallback,
            uploaded: 0,
            downloaded,
        };
        Ok((Tensor::new(out.len(), Some(out), None), run))
    }

    /// The tensor's host copy: the one it has, else downloaded from a live device copy (counted
    /// in `downloaded`, bytes), else recomputed on the CPU from its recipe (recursively: the
    /// inputs may be gone too).
    pub(crate) fn host_of(&self, t: &Tensor, downloaded: &mut u64) -> Result<Arc<Vec<f32>>, SparkleError> {
        if let Some(h) = t.host() {
            return Ok(h);
        }
        #[cfg(feature = "vulkan")]
        if let Some(h) = self.download_copy(t) {
            *downloaded += 4 * h.len() as u64;
            t.set_host(h.clone());
            return Ok(h);
        }
        let recipe = lock(&t.0.recipe).clone();
        let Some(recipe) = recipe else {
            // Unreachable by construction: a tensor is made with a host copy, or on a device with
            // its recipe, which is dropped only once the host copy is stored.
            return Err(SparkleError::Config("a tensor lost its data and its recipe".into()));
        };
        let h = Arc::new(recipe.run_cpu(self, downloaded)?);
        t.set_host(h.clone());
        Ok(h)
    }

    /// The floats of a live device copy of `t`, if one can be read.
    #[cfg(feature = "vulkan")]
    fn download_copy(&self, t: &Tensor) -> Option<Arc<Vec<f32>>> {
        let copies: Vec<DeviceCopy> = lock(&t.0.copies).iter().filter(|c| c.owner == self.id).cloned().collect();
        for c in copies {
            let Some(gpu) = self.gpu(DeviceId::Vulkan(c.index)) else { continue };
            let Some(ctx) = self.context_of(gpu, c.generation) else { continue };
            match ctx.download(&c.tensor) {
                Ok(v) => return Some(Arc::new(v)),
                Err(e) => {
                    let e = DeviceError::from_vk(DeviceId::Vulkan(c.index), &e);
                    if e.kind == super::DeviceErrorKind::Lost {
                        self.close(gpu, c.generation);
                    }
                }
            }
        }
        None
    }

    /// Runs `op` on a Vulkan device: inputs it lacks are uploaded from `hosts` in the same
    /// submission (and kept there for later ops); the output is a new tensor on the device.
    #[cfg(feature = "vulkan")]
    fn run_gpu_tensor(
        &self,
        device: DeviceId,
        op: &TensorOp,
        hosts: &[Option<Arc<Vec<f32>>>],
    ) -> Result<(Tensor, String, Option<f64>, u64), DeviceError> {
        use sparkle_vk::{TensorBias as VkBias, TensorMat};
        let gpu = self.gpu(device).ok_or_else(|| super::not_here(device))?;
        let index = gpu.desc.index;
        let inputs = op.inputs();
        let owner = self.id;
        let (out, uploaded, generation, timing) = self.on_gpu(gpu, |ctx, generation| {
            let vk = |e: sparkle_vk::VkError| DeviceError::from_vk(device, &e);
            let mut rec = ctx.record().map_err(vk)?;
            let mut on_device = Vec::with_capacity(inputs.len());
            let mut uploaded = Vec::new();
            for (t, host) in inputs.iter().zip(hosts) {
                let here = lock(&t.0.copies)
                    .iter()
                    .find(|c| c.owner == owner && c.index == index && c.generation == generation)
                    .cloned();
                match (here, host) {
                    (Some(c), _) => on_device.push(c.tensor),
                    (None, Some(h)) => {
                        let x = rec.upload(h).map_err(vk)?;
                        uploaded.push((*t, x.clone()));
                        on_device.push(x);
                    }
                    // Its copy went between placement and now (the device was re-opened).
                    (None, None) => {
                        return Err(DeviceError {
                            device,
                            kind: super::DeviceErrorKind::Lost,
                            message: "an input's device copy is gone".into(),
                        })
                    }
                }
            }
            let out = rec.zeros(op.out_len()).map_err(vk)?;
            match op {
                TensorOp::Conv2d { g, activation, .. } => {
                    rec.conv2d(g, &on_device[0], &on_device[1], on_device.get(2), *activation, &out).map_err(vk)?;
                }
                TensorOp::Gemm { mnk: [m, n, k], bias, activation, .. } => {
                    let bias = match (bias, on_device.get(2)) {
                        (Some((_, Side::Row)), Some(b)) => VkBias::Row(b),
                        (Some((_, Side::Col)), Some(b)) => VkBias::Col(b),
                        _ => VkBias::None,
                    };
                    let a = TensorMat::row_major(&on_device[0], *m, *k).map_err(vk)?;
                    let b = TensorMat::row_major(&on_device[1], *k, *n).map_err(vk)?;
                    let c = TensorMat::row_major(&out, *m, *n).map_err(vk)?;
                    rec.gemm(1.0, a, b, 0.0, c, bias, *activation).map_err(vk)?;
                }
            }
            let timing = rec.submit().map_err(vk)?.wait().map_err(vk)?;
            Ok((out, uploaded, generation, timing))
        })?;
        let mut bytes = 0;
        for (t, x) in uploaded {
            bytes += 4 * t.len() as u64;
            lock(&t.0.copies).push(DeviceCopy { owner, index, generation, tensor: x });
        }
        let result = Tensor::new(op.out_len(), None, Some(op.clone()));
        lock(&result.0.copies).push(DeviceCopy { owner, index, generation, tensor: out });
        Ok((result, format!("vulkan {}", gpu.desc.name), timing.device_seconds, bytes))
    }

    #[cfg(not(feature = "vulkan"))]
    fn run_gpu_tensor(
        &self,
        device: DeviceId,
        _op: &TensorOp,
        _hosts: &[Option<Arc<Vec<f32>>>],
    ) -> Result<(Tensor, String, Option<f64>, u64), DeviceError> {
        Err(super::not_here(device))
    }
}
