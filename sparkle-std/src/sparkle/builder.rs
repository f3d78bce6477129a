//! Configuring a [`Sparkle`]: which devices ([`DeviceSel`]), threads, the model, determinism,
//! fault injection; the juggler over the chosen devices with its priors and fingerprint
//! ([`juggler_for`]); the set-up charged to a device before it is opened.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use super::gpu::{Gpu, GpuDesc};
use super::{Faults, Sparkle, SparkleError, State};
use crate::budget::MemoryBudget;
use crate::cpu::{Cpu, CpuError};
use crate::juggler::{store, Clock, DeviceId, Juggler, Prior, SystemClock};
use sparkle_core::Precision;

/// Which devices a [`Sparkle`] may place work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSel {
    /// The CPU path.
    Cpu,
    /// Every Vulkan device that is not of type CPU; when there are none and the CPU path is not
    /// selected, the CPU-type ones (asked for by name, as `--device vulkan` does).
    Vulkan,
    /// Vulkan device `i` (any type: named explicitly).
    VulkanIndex(usize),
}

impl DeviceSel {
    /// Parses `cpu`, `vulkan`, `vulkan:N`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cpu" => Some(DeviceSel::Cpu),
            "vulkan" => Some(DeviceSel::Vulkan),
            _ => text.strip_prefix("vulkan:")?.parse().ok().map(DeviceSel::VulkanIndex),
        }
    }
}

/// Configures a [`Sparkle`] ([`Sparkle::builder`]).
#[derive(Clone, Debug, Default)]
pub struct Builder {
    devices: Option<Vec<DeviceSel>>,
    threads: Option<usize>,
    model: Option<Option<PathBuf>>,
    deterministic: bool,
    faults: Option<Faults>,
    memory_budget: Option<MemoryBudget>,
    precision: Precision,
}

impl Builder {
    /// Only these devices (default: the CPU and every Vulkan device not of type CPU).
    pub fn devices(mut self, devices: &[DeviceSel]) -> Self {
        self.devices = Some(devices.to_vec());
        self
    }

    /// The precision f32 GEMMs ([`Sparkle::gemm`] and its `_on` and split forms) may be computed
    /// in, as PyTorch's `torch.set_float32_matmul_precision` sets it (default `Highest`: f32
    /// throughout). Each device runs the fastest path at least this precise: `High` and `Medium`
    /// run on a GPU's tensor cores where it has f16 cooperative matrices
    /// ([`crate::vk::Context::gemm_with_precision`]) and as f32 everywhere else (the CPU, other
    /// GPUs); the juggler models each precision apart. Resident tensors
    /// ([`Sparkle::gemm_tensor`]) and conv2d compute f32.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// CPU threads (default: all).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Keep the learned model in this file (default: `juggler-model.txt` in the user cache folder,
    /// or `SPARKLE_CACHE_DIR`).
    pub fn model_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = Some(Some(path.into()));
        self
    }

    /// Learn in memory only: nothing is loaded or saved.
    pub fn in_memory_model(mut self) -> Self {
        self.model = Some(None);
        self
    }

    /// Always the best prediction, no exploration of unmeasured devices (reproducible placement).
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    /// Makes Vulkan ops fail on purpose (tests of the fallback).
    pub fn inject_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The memory budget of the CPU path (default: `SPARKLE_MEMORY_BUDGET`, or half the memory).
    pub fn memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = Some(budget);
        self
    }

    /// Detects the devices, builds the juggler with its priors and loads the learned model.
    pub fn build(self) -> Result<Sparkle, SparkleError> {
        let kernel = crate::cpu::isa::gemm_kernel().map_err(|e| SparkleError::Cpu(CpuError::Isa(e)))?;
        let budget = match self.memory_budget {
            Some(b) => b,
            None => MemoryBudget::from_env().map_err(SparkleError::Config)?,
        };
        let mut cpu = Cpu { memory_budget: budget, ..Cpu::with_kernel(kernel) };
        if let Some(t) = self.threads {
            cpu = cpu.threads(t);
        }
        let sel = self.devices.unwrap_or_else(|| vec![DeviceSel::Cpu, DeviceSel::Vulkan]);
        if sel.is_empty() {
            return Err(SparkleError::Config("no device selected".into()));
        }
        let use_cpu = sel.contains(&DeviceSel::Cpu);
        let (gpus, machine) = gpus_for(&sel, use_cpu)?;
        let descs: Vec<GpuDesc> = gpus.iter().map(|g| g.desc.clone()).collect();
        let (mut juggler, fingerprint) = juggler_for(&cpu, use_cpu, &descs, &machine, &crate::cpu::brand());
        juggler.set_exploration(!self.deterministic);
        // A Vulkan device is opened on its first op, which then also compiles (or loads) its
        // pipelines: measured 0.3-1.6 s on an H200 host, seconds on lavapipe. Charge that as
        // queue time from start-up, so a short-lived process (a CLI call) keeps small and medium
        // work on the CPU instead of paying it; in a longer-lived one the charge has expired by
        // the time the set-up would be amortised, and the device is opened for work it wins.
        let now = juggler.clock().now();
        for g in &gpus {
            let setup = if g.desc.cpu_type { CPU_TYPE_SETUP_SECONDS } else { GPU_SETUP_SECONDS };
            juggler.set_busy_until(DeviceId::Vulkan(g.desc.index), now + setup);
        }
        let model_path = self.model.unwrap_or_else(store::default_path);
        let mut loaded = None;
        if let Some(path) = &model_path {
            loaded = Some(store::load(&mut juggler, path, &fingerprint));
        }
        Ok(Sparkle {
            cpu,
            gpus,
            state: Mutex::new(State { juggler, inflight: Vec::new(), dirty: false }),
            model_path,
            fingerprint,
            loaded,
            faults: self.faults,
            precision: self.precision,
            gpu_ops: AtomicUsize::new(0),
            id: {
                static HANDLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                HANDLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }
}

/// Seconds charged for opening a GPU and building its pipelines (see [`Builder::build`]).
pub const GPU_SETUP_SECONDS: f64 = 0.3;
/// The same for a CPU-type Vulkan device (lavapipe compiles its pipelines with LLVM).
pub const CPU_TYPE_SETUP_SECONDS: f64 = 2.0;

/// The juggler over the CPU (if `use_cpu`) and `gpus`, with priors by device type, and the
/// fingerprint its learned model is stored under: the CPU brand, kernel, threads, crate version,
/// and the vendor, device and driver of every Vulkan device of the machine (`machine`), whichever
/// are placed on, so handles with different device selections share one model. The priors are
/// [`Prior::cpu`], [`Prior::GPU`] and [`Prior::CPU_TYPE_GPU`] (the replay benchmark uses the same).
pub fn juggler_for(
    cpu: &Cpu,
    use_cpu: bool,
    gpus: &[GpuDesc],
    machine: &[GpuDesc],
    brand: &str,
) -> (Juggler<SystemClock>, String) {
    let mut j = Juggler::new(SystemClock::default());
    if use_cpu {
        let peak = crate::cpu::peak::peak_gflops(cpu.threads) * 1e9;
        j.add_device(DeviceId::Cpu, Prior::cpu(peak), false);
    }
    let mut parts =
        vec![brand.to_string(), cpu.kernel.id().to_string(), cpu.threads.to_string(), env!("CARGO_PKG_VERSION").into()];
    // A CPU-type device (Mesa's lavapipe) runs on the host's own cores: beside the CPU path it
    // only takes cores from it, so it is never a placement target then (ops pinned to it still run).
    for g in gpus.iter().filter(|g| !(use_cpu && g.cpu_type)) {
        let prior = if g.cpu_type { Prior::CPU_TYPE_GPU } else { Prior::GPU };
        j.add_device(DeviceId::Vulkan(g.index), prior, true);
    }
    parts.extend(machine.iter().map(|g| g.identity.clone()));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    (j, store::fingerprint(&refs))
}

#[cfg(feature = "vulkan")]
fn gpus_for(sel: &[DeviceSel], use_cpu: bool) -> Result<(Vec<Gpu>, Vec<GpuDesc>), SparkleError> {
    let wants_vulkan = sel.iter().any(|s| *s != DeviceSel::Cpu);
    let infos = match sparkle_vk::devices() {
        Ok(i) => i,
        // No loader or no device: without an explicit request that is simply a CPU-only machine.
        Err(_) if use_cpu && !sel.iter().any(|s| matches!(s, DeviceSel::VulkanIndex(_))) => Vec::new(),
        Err(e) => return Err(SparkleError::Config(format!("Vulkan was asked for: {e}"))),
    };
    let all: Vec<GpuDesc> = infos.iter().map(GpuDesc::from_info).collect();
    if !wants_vulkan {
        return Ok((Vec::new(), all));
    }
    let mut chosen: Vec<GpuDesc> = Vec::new();
    for s in sel {
        match s {
            DeviceSel::Cpu => {}
            DeviceSel::VulkanIndex(i) => {
                let d = all.iter().find(|d| d.index == *i).ok_or_else(|| {
                    SparkleError::Config(format!("vulkan:{i} does not exist ({} Vulkan device(s) here)", all.len()))
                })?;
                chosen.push(d.clone());
            }
            DeviceSel::Vulkan => {
                let real: Vec<&GpuDesc> = all.iter().filter(|d| !d.cpu_type).collect();
                if !real.is_empty() {
                    chosen.extend(real.into_iter().cloned());
                } else if !use_cpu {
                    // Asked for Vulkan by name and only CPU-type devices exist: use them.
                    chosen.extend(all.iter().cloned());
                }
            }
        }
    }
    if chosen.is_empty() && !use_cpu {
        return Err(SparkleError::Config("Vulkan was asked for but no Vulkan device is usable here".into()));
    }
    chosen.sort_by_key(|d| d.index);
    chosen.dedup_by_key(|d| d.index);
    let gpus = chosen.into_iter().map(|desc| Gpu { desc, slot: Mutex::default(), seen: Mutex::default() });
    Ok((gpus.collect(), all))
}

#[cfg(not(feature = "vulkan"))]
fn gpus_for(sel: &[DeviceSel], _use_cpu: bool) -> Result<(Vec<Gpu>, Vec<GpuDesc>), SparkleError> {
    if sel.iter().any(|s| *s != DeviceSel::Cpu) {
        return Err(SparkleError::Config("this build has no Vulkan support (feature `vulkan`)".into()));
    }
    Ok((Vec::new(), Vec::new()))
}
