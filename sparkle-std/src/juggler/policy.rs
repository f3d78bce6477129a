//! The decision: for each op, the device with the earliest expected completion (when its queue
//! is free + predicted run time + the transfers the op needs there), with exploration of devices
//! that have not been measured at this size only when that is cheap. A device that fails is
//! skipped with exponential backoff and the op re-runs on the next one.

use std::collections::HashMap;
use std::fmt;

use super::clock::Clock;
use super::model::{CostModel, OpDesc, OpKind, Prior};

/// A device the juggler can place work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceId {
    /// The CPU backend.
    Cpu,
    /// Vulkan device `i` (in `sparkle_vk::devices()` order).
    Vulkan(usize),
}

impl DeviceId {
    /// The backend that computes on it, the key of its row in the tolerance table
    /// ([`sparkle_core::check::TOLERANCES`]).
    pub const fn backend(self) -> sparkle_core::check::Backend {
        match self {
            DeviceId::Cpu => sparkle_core::check::Backend::Cpu,
            DeviceId::Vulkan(_) => sparkle_core::check::Backend::Vulkan,
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => write!(f, "cpu"),
            DeviceId::Vulkan(i) => write!(f, "vulkan:{i}"),
        }
    }
}

/// One device's state.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) id: DeviceId,
    /// Whether the host's tensors must be copied to it (false for the CPU).
    pub(crate) remote: bool,
    pub(crate) models: HashMap<OpKind, CostModel>,
    pub(crate) prior: Prior,
    busy_until: f64,
    failed_until: f64,
    backoff: f64,
}

/// What the juggler decided for one op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Where it runs.
    pub device: DeviceId,
    /// Predicted seconds there (transfers included).
    pub predicted: f64,
    /// Whether the device was picked to learn about it rather than for its prediction.
    pub explored: bool,
}

/// Exploration is allowed only when the explored device's predicted completion is within this
/// factor of the best one: never send work to a device predicted to be much slower just to learn.
pub const EXPLORE_FACTOR: f64 = 2.0;
/// First backoff after a failure; doubles up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: f64 = 1.0;
/// Longest a failed device is skipped before it is tried again.
pub const MAX_BACKOFF: f64 = 60.0;

/// The scheduler.
pub struct Juggler<C: Clock> {
    clock: C,
    pub(crate) devices: Vec<Device>,
    /// Whether unmeasured devices are tried (within [`EXPLORE_FACTOR`]); off for deterministic runs.
    explore: bool,
}

impl<C: Clock> fmt::Debug for Juggler<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Juggler").field("devices", &self.devices).finish()
    }
}

impl<C: Clock> Juggler<C> {
    /// A juggler with no devices yet.
    pub fn new(clock: C) -> Self {
        Self { clock, devices: Vec::new(), explore: true }
    }

    /// Adds a device with its prior; `remote` when host tensors must be copied to it.
    pub fn add_device(&mut self, id: DeviceId, prior: Prior, remote: bool) {
        self.devices.push(Device {
            id,
            remote,
            models: HashMap::new(),
            prior,
            busy_until: 0.0,
            failed_until: 0.0,
            backoff: FIRST_BACKOFF,
        });
    }

    /// Turns exploration of unmeasured devices on (the default) or off (deterministic placement:
    /// always the best prediction).
    pub fn set_exploration(&mut self, on: bool) {
        self.explore = on;
    }

    /// The devices, in the order they were added.
    pub fn device_ids(&self) -> Vec<DeviceId> {
        self.devices.iter().map(|d| d.id).collect()
    }

    /// Predicted seconds of `op` on `device` (transfers included unless `resident`), queueing
    /// excluded; `None` for an unknown device.
    pub fn predict_on(&self, device: DeviceId, op: &OpDesc, resident: bool) -> Option<f64> {
        self.devices.iter().find(|d| d.id == device).map(|d| self.predict(d, op, Self::host_transfer(d, op, resident)))
    }

    /// When `device`'s queue is expected to be free (clock seconds).
    pub fn busy_until(&self, device: DeviceId) -> Option<f64> {
        self.devices.iter().find(|d| d.id == device).map(|d| d.busy_until)
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn model(&self, d: &Device, kind: OpKind) -> CostModel {
        d.models.get(&kind).cloned().unwrap_or_else(|| CostModel::new(d.prior))
    }

    /// The cost model of `device` for `kind` (the prior alone if nothing was learned yet).
    pub fn model_of(&self, device: DeviceId, kind: OpKind) -> Option<CostModel> {
        self.devices.iter().find(|d| d.id == device).map(|d| self.model(d, kind))
    }

    /// Seconds to move `op`'s data to `d` when it lives on the host (none when `resident`).
    fn host_transfer(d: &Device, op: &OpDesc, resident: bool) -> f64 {
        if d.remote && !resident {
            op.bytes / d.prior.bandwidth
        } else {
            0.0
        }
    }

    /// Predicted seconds of `op` on `d`, `transfer` seconds of copies included.
    fn predict(&self, d: &Device, op: &OpDesc, transfer: f64) -> f64 {
        let m = d.models.get(&op.kind);
        match m {
            Some(m) => m.predict(op, transfer),
            None => CostModel::new(d.prior).predict(op, transfer),
        }
    }

    /// Seconds to copy `bytes` between the host and `device` at its bandwidth (0 for the CPU and
    /// for an unknown device).
    pub fn copy_seconds(&self, device: DeviceId, bytes: f64) -> f64 {
        match self.devices.iter().find(|d| d.id == device) {
            Some(d) if d.remote => bytes / d.prior.bandwidth,
            _ => 0.0,
        }
    }

    /// Where `op` should run. `resident`: its tensors already live on the remote devices.
    pub fn decide(&self, op: &OpDesc, resident: bool) -> Option<Decision> {
        self.decide_among(op, &|d| Self::host_transfer(d, op, resident), &[])
    }

    /// Where `op` should run when its data is spread over devices: `transfer(device)` is the
    /// seconds of copies the op needs there (see [`Juggler::copy_seconds`]).
    pub fn decide_with(&self, op: &OpDesc, transfer: &dyn Fn(DeviceId) -> f64) -> Option<Decision> {
        self.decide_among(op, &|d| transfer(d.id), &[])
    }

    fn decide_among(&self, op: &OpDesc, transfer: &dyn Fn(&Device) -> f64, exclude: &[DeviceId]) -> Option<Decision> {
        let now = self.clock.now();
        let mut best: Option<(usize, f64, f64)> = None; // (index, completion, run time)
        for (i, d) in self.devices.iter().enumerate() {
            if d.failed_until > now || exclude.contains(&d.id) {
                continue;
            }
            let run = self.predict(d, op, transfer(d));
            let done = (d.busy_until - now).max(0.0) + run;
            if best.is_none_or(|(_, b, _)| done < b) {
                best = Some((i, done, run));
            }
        }
        let (bi, best_done, best_run) = best?;
        if !self.explore {
            return Some(Decision { device: self.devices[bi].id, predicted: best_run, explored: false });
        }
        // Capped exploration: an unmeasured device at this size whose predicted completion is close.
        for (i, d) in self.devices.iter().enumerate() {
            if i == bi || d.failed_until > now || exclude.contains(&d.id) {
                continue;
            }
            let unmeasured = d.models.get(&op.kind).is_none_or(|m| m.confidence(op) < 1.0);
            let run = self.predict(d, op, transfer(d));
            let done = (d.busy_until - now).max(0.0) + run;
            if unmeasured && done <= EXPLORE_FACTOR * best_done {
                return Some(Decision { device: d.id, predicted: run, explored: true });
            }
        }
        Some(Decision { device: self.devices[bi].id, predicted: best_run, explored: false })
    }

    /// Learns from a measured run. `first_call`: the run included one-time costs (pipeline
    /// compilation, JIT) and is not run time, so it is not learned from.
    pub fn record(&mut self, device: DeviceId, op: &OpDesc, resident: bool, seconds: f64, first_call: bool) {
        let transfer = match self.devices.iter().find(|d| d.id == device) {
            Some(d) => Self::host_transfer(d, op, resident),
            None => return,
        };
        self.record_with(device, op, transfer, seconds, first_call);
    }

    /// [`Juggler::record`] for a run that spent `transfer` seconds (as predicted) on copies.
    pub fn record_with(&mut self, device: DeviceId, op: &OpDesc, transfer: f64, seconds: f64, first_call: bool) {
        let Some(d) = self.devices.iter_mut().find(|d| d.id == device) else { return };
        d.failed_until = 0.0;
        d.backoff = FIRST_BACKOFF;
        if first_call {
            return;
        }
        let prior = d.prior;
        d.models.entry(op.kind).or_insert_with(|| CostModel::new(prior)).update(op, transfer, seconds);
    }

    /// Marks `device` as busy until `until` (its queue holds work already).
    pub fn set_busy_until(&mut self, device: DeviceId, until: f64) {
        if let Some(d) = self.devices.iter_mut().find(|d| d.id == device) {
            d.busy_until = until;
        }
    }

    /// Marks `device` as failed: skipped for a backoff that doubles with each failure in a row
    /// (from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]), then probed again.
    pub fn fail(&mut self, device: DeviceId) {
        let now = self.clock.now();
        if let Some(d) = self.devices.iter_mut().find(|d| d.id == device) {
            d.failed_until = now + d.backoff;
            d.backoff = (d.backoff * 2.0).min(MAX_BACKOFF);
        }
    }

    /// Runs `op` where the juggler decides, timing it with the clock and learning from it; if the
    /// device fails, marks it unhealthy (retried after a backoff) and re-runs on the next best
    /// device. `run(device, first_call)` does the work. Returns the result, the device that
    /// produced it, and the decision; or the last error when every device failed.
    pub fn run<T, E>(
        &mut self,
        op: &OpDesc,
        resident: bool,
        first_call: impl Fn(DeviceId) -> bool,
        mut run: impl FnMut(DeviceId) -> Result<T, E>,
    ) -> Result<(T, Decision), Option<E>> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(decision) = self.decide_among(op, &|d| Self::host_transfer(d, op, resident), &tried) {
            let first = first_call(decision.device);
            let start = self.clock.now();
            match run(decision.device) {
                Ok(v) => {
                    let seconds = self.clock.now() - start;
                    self.record(decision.device, op, resident, seconds, first);
                    return Ok((v, decision));
                }
                Err(e) => {
                    self.fail(decision.device);
                    tried.push(decision.device);
                    last = Some(e);
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::FakeClock;
    use super::*;

    const CPU: Prior = Prior { overhead: 2e-6, peak: 2e11, half: 1e6, bandwidth: f64::INFINITY };
    const GPU: Prior = Prior { overhead: 20e-6, peak: 4e13, half: 1e9, bandwidth: 2e10 };

    fn juggler() -> Juggler<FakeClock> {
        let mut j = Juggler::new(FakeClock::default());
        j.add_device(DeviceId::Cpu, CPU, false);
        j.add_device(DeviceId::Vulkan(0), GPU, true);
        j
    }

    #[test]
    fn small_work_stays_on_the_cpu_and_large_goes_to_the_gpu() {
        let j = juggler();
        assert_eq!(j.decide(&OpDesc::gemm(32, 32, 32), false).unwrap().device, DeviceId::Cpu);
        assert_eq!(j.decide(&OpDesc::gemm(4096, 4096, 4096), false).unwrap().device, DeviceId::Vulkan(0));
        // Resident tensors move the crossover down.
        let mid = OpDesc::gemm(512, 512, 512);
        let host = j.decide(&mid, false).unwrap();
        let resident = j.decide(&mid, true).unwrap();
        assert!(resident.predicted <= host.predicted);
    }

    #[test]
    fn only_the_copies_an_op_needs_are_charged() {
        let mut j = juggler();
        j.add_device(DeviceId::Vulkan(1), GPU, true);
        // A mid-sized op whose 64 MB of inputs live on GPU 1: GPU 0 pays the copy, GPU 1 does not.
        let op = OpDesc::gemm(2048, 2048, 2048);
        let bytes = 64e6;
        let on_1 =
            |d: DeviceId| if d == DeviceId::Vulkan(1) { 0.0 } else { 2.0 * j.copy_seconds(DeviceId::Vulkan(0), bytes) };
        let d = j.decide_with(&op, &on_1).unwrap();
        assert_eq!(d.device, DeviceId::Vulkan(1));
        assert_eq!(d.predicted, j.predict_on(DeviceId::Vulkan(1), &op, true).unwrap());
        let on_0 =
            |d: DeviceId| if d == DeviceId::Vulkan(0) { 0.0 } else { 2.0 * j.copy_seconds(DeviceId::Vulkan(1), bytes) };
        assert_eq!(j.decide_with(&op, &on_0).unwrap().device, DeviceId::Vulkan(0));
        assert_eq!(j.copy_seconds(DeviceId::Cpu, bytes), 0.0);
        assert_eq!(j.copy_seconds(DeviceId::Vulkan(0), bytes), bytes / GPU.bandwidth);
        // Learning subtracts the charged copies: a run that took exactly the prediction with the
        // copies leaves the prediction where it was.
        let before = j.predict_on(DeviceId::Vulkan(0), &op, true).unwrap();
        let copies = j.copy_seconds(DeviceId::Vulkan(0), bytes);
        j.record_with(DeviceId::Vulkan(0), &op, copies, before + copies, false);
        let after = j.predict_on(DeviceId::Vulkan(0), &op, true).unwrap();
        assert!((after / before - 1.0).abs() < 1e-9, "{before} -> {after}");
    }

    #[test]
    fn a_busy_device_loses_work_it_would_otherwise_win() {
        let mut j = juggler();
        let big = OpDesc::gemm(2048, 2048, 2048);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Vulkan(0));
        j.set_busy_until(DeviceId::Vulkan(0), 1e6);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Cpu);
    }

    #[test]
    fn a_failing_device_is_skipped_the_result_still_arrives_and_it_is_retried_later() {
        let mut j = juggler();
        let big = OpDesc::gemm(2048, 2048, 2048);
        let (out, d) = j
            .run(&big, true, |_| false, |dev| if dev == DeviceId::Vulkan(0) { Err("device lost") } else { Ok(42) })
            .unwrap();
        assert_eq!((out, d.device), (42, DeviceId::Cpu));
        // Skipped while backing off...
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Cpu);
        // ...and probed again once the backoff has passed.
        j.clock().advance(FIRST_BACKOFF + 0.1);
        assert_eq!(j.decide(&big, true).unwrap().device, DeviceId::Vulkan(0));
        // Every device failing returns the last error, never a result from nowhere.
        let all: Result<(i32, Decision), Option<&str>> = j.run(&big, true, |_| false, |_| Err("boom"));
        assert_eq!(all.unwrap_err(), Some("boom"));
    }

    #[test]
    fn first_calls_are_not_learned_and_measurements_are() {
        let mut j = juggler();
        let op = OpDesc::gemm(256, 256, 256);
        let before = j.model_of(DeviceId::Cpu, op.kind).unwrap().predict(&op, 0.0);
        j.record(DeviceId::Cpu, &op, false, 10.0, true);
        assert_eq!(j.model_of(DeviceId::Cpu, op.kind).unwrap().predict(&op, 0.0), before);
        j.record(DeviceId::Cpu, &op, false, before * 3.0, false);
        assert!(j.model_of(DeviceId::Cpu, op.kind).unwrap().predict(&op, 0.0) > before * 1.5);
    }

    /// Ops where the CPU is the best prediction, with the GPU's predicted completion (unmeasured,
    /// host tensors) as a multiple of the CPU's.
    fn cpu_wins_with_gpu_ratio(j: &Juggler<FakeClock>) -> Vec<(OpDesc, f64)> {
        (1..=64)
            .map(|i| OpDesc::gemm(i * 8, i * 8, i * 8))
            .filter_map(|op| {
                let cpu = j.predict_on(DeviceId::Cpu, &op, false).unwrap();
                let gpu = j.predict_on(DeviceId::Vulkan(0), &op, false).unwrap();
                (cpu < gpu).then_some((op, gpu / cpu))
            })
            .collect()
    }

    #[test]
    fn exploration_is_capped() {
        let j = juggler();
        // A tiny op: the GPU (unmeasured) costs 10x the CPU's prediction: not explored.
        let tiny = OpDesc::gemm(8, 8, 8);
        let d = j.decide(&tiny, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Cpu, false));
        // Every op whose unmeasured GPU is predicted beyond the cap stays on the CPU, unexplored.
        let beyond: Vec<_> = cpu_wins_with_gpu_ratio(&j).into_iter().filter(|&(_, r)| r > EXPLORE_FACTOR).collect();
        assert!(!beyond.is_empty());
        for (op, ratio) in beyond {
            let d = j.decide(&op, false).unwrap();
            assert_eq!((d.device, d.explored), (DeviceId::Cpu, false), "GPU at {ratio:.2}x must not be explored");
        }
    }

    #[test]
    fn an_unmeasured_device_within_the_cap_is_explored_until_measured() {
        let mut j = juggler();
        let within: Vec<_> =
            cpu_wins_with_gpu_ratio(&j).into_iter().filter(|&(_, r)| r > 1.0 && r <= EXPLORE_FACTOR).collect();
        assert!(!within.is_empty(), "the priors put no op inside the exploration window");
        let (op, ratio) = within[0];
        let d = j.decide(&op, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Vulkan(0), true), "GPU at {ratio:.2}x must be explored");
        // Once measured at this size (and slower, as predicted), the CPU gets the op again.
        let gpu_time = j.predict_on(DeviceId::Vulkan(0), &op, false).unwrap();
        for _ in 0..4 {
            j.record(DeviceId::Vulkan(0), &op, false, gpu_time, false);
        }
        let d = j.decide(&op, false).unwrap();
        assert_eq!((d.device, d.explored), (DeviceId::Cpu, false));
    }
}
