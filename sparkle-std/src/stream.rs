//! A stream of conv2d layers run over the CPU and every Vulkan device at once: each layer goes
//! where a placement says (the juggler, or a fixed assignment), GPU layers are submitted
//! asynchronously with their weights kept resident on the device after first use, the CPU runs
//! its layers on a worker thread meanwhile, and every byte that crosses to or from a device is
//! counted. The juggler learns from each GPU layer's device timestamps (copies included, queueing
//! excluded).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

use sparkle_core::{Activation, Conv2d, Epilogue};
use sparkle_vk::{Context, Download, Pending, Tensor};

use crate::cpu::Cpu;
use crate::demo::DemoError;
use crate::juggler::{store, Clock, DeviceId, Juggler, OpDesc, Prior, SystemClock};

/// A juggler over the CPU and each of `gpus` as a device of its own (own cost model, own
/// queue), with priors by device type, and the fingerprint its learned model is stored under
/// (CPU brand, kernel, threads, crate version, each GPU's vendor, device and driver).
pub fn juggler(cpu: &Cpu, gpus: &[&Context], cpu_brand: &str) -> (Juggler<SystemClock>, String) {
    let mut j = Juggler::new(SystemClock::default());
    let peak = crate::cpu::peak::peak_gflops(cpu.threads) * 1e9;
    j.add_device(DeviceId::Cpu, Prior { overhead: 5e-6, peak, half: 2e6, bandwidth: f64::INFINITY }, false);
    let mut parts = vec![
        cpu_brand.to_string(),
        cpu.kernel.id.to_string(),
        cpu.threads.to_string(),
        env!("CARGO_PKG_VERSION").into(),
    ];
    for ctx in gpus {
        let i = ctx.info();
        // A CPU-type device (Mesa's lavapipe) is slow; a real GPU is fast but far away.
        let prior = if i.device_type == "CPU" {
            Prior { overhead: 300e-6, peak: 5e9, half: 1e8, bandwidth: 5e9 }
        } else {
            Prior { overhead: 50e-6, peak: 2e13, half: 1e9, bandwidth: 1.2e10 }
        };
        j.add_device(DeviceId::Vulkan(i.index), prior, true);
        parts.push(format!("{:x}:{:x}:{:x}", i.vendor_id, i.device_id, i.driver_version));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let fp = store::fingerprint(&refs);
    (j, fp)
}

/// One layer of the stream: geometry, weights, bias and the input it is fed (host data).
#[derive(Clone, Debug)]
pub struct Layer {
    /// Name for reports.
    pub name: &'static str,
    /// The geometry.
    pub geometry: Conv2d,
    /// Weights.
    pub weight: Vec<f32>,
    /// Bias, one per output channel (the activation is ReLU).
    pub bias: Vec<f32>,
    /// Input.
    pub input: Vec<f32>,
}

/// Where the layers go.
pub enum Placement<'a> {
    /// The juggler decides each op of the stream from its predicted completion on every device
    /// (queues included) and learns from what it measures.
    Juggler(&'a mut Juggler<SystemClock>),
    /// Every occurrence of layer `i` runs on `devices[i]`.
    Fixed(&'a [DeviceId]),
}

impl std::fmt::Debug for Placement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Juggler(_) => f.write_str("Juggler"),
            Placement::Fixed(d) => f.debug_tuple("Fixed").field(d).finish(),
        }
    }
}

/// What a stream run did.
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// Where each op of the stream ran.
    pub placements: Vec<DeviceId>,
    /// Wall seconds from the first dispatch to the last result on the host.
    pub seconds: f64,
    /// Bytes copied host -> device (inputs, and weights the first time a device needs them).
    pub uploaded: u64,
    /// Bytes copied device -> host (outputs).
    pub downloaded: u64,
    /// Each layer's output (from its last occurrence in the stream; empty if it never ran).
    pub outputs: Vec<Vec<f32>>,
    /// Seconds of each op where it ran: GPU device time from timestamps (its copies included),
    /// CPU wall time.
    pub op_seconds: Vec<f64>,
}

/// A GPU layer in flight.
struct InFlight {
    position: usize,
    index: usize,
    device: DeviceId,
    pending: Pending,
    download: Download,
    op: OpDesc,
    /// The juggler's prediction for it (0 under a fixed placement).
    predicted: f64,
}

fn device_of<'a>(gpus: &[&'a Context], id: DeviceId) -> Option<&'a Context> {
    match id {
        DeviceId::Vulkan(i) => gpus.iter().copied().find(|g| g.info().index == i),
        DeviceId::Cpu => None,
    }
}

/// Weights resident on the GPUs, by (device, layer): uploaded the first time a device runs a
/// layer, reused by every later occurrence and every later run given the same map.
pub type Resident = HashMap<(DeviceId, usize), Tensor>;

/// Runs the ops `order` (indices into `layers`) over `cpu` and `gpus` as `placement` says.
pub fn run(
    cpu: &Cpu,
    gpus: &[&Context],
    layers: &[Layer],
    order: &[usize],
    mut placement: Placement<'_>,
    resident: &mut Resident,
) -> Result<StreamReport, DemoError> {
    if let Some(&bad) = order.iter().find(|&&i| i >= layers.len()) {
        return Err(format!("the stream names layer {bad} of {}", layers.len()).into());
    }
    if let Placement::Fixed(d) = &placement {
        if d.len() != layers.len() {
            return Err(format!("{} layers but {} fixed devices", layers.len(), d.len()).into());
        }
    }
    let start = Instant::now();
    let mut run = Run {
        layers,
        placements: Vec::with_capacity(order.len()),
        op_seconds: vec![0.0; order.len()],
        outputs: vec![Vec::new(); layers.len()],
        uploaded: 0,
        downloaded: 0,
        in_flight: Vec::new(),
        cpu_queue: Vec::new(),
    };
    let (to_cpu, cpu_jobs) = mpsc::channel::<(usize, usize)>();
    let (cpu_done, from_cpu) = mpsc::channel::<CpuResult>();
    std::thread::scope(|s| -> Result<(), DemoError> {
        let worker = s.spawn(move || {
            for (position, i) in cpu_jobs {
                let l = &layers[i];
                let epi = Epilogue::activation(Activation::Relu).with_bias(&l.bias);
                let mut y = vec![0.0; l.geometry.output_len()];
                let t = Instant::now();
                let r =
                    cpu.conv2d(&l.geometry, &l.input, &l.weight, &epi, &mut y).map(|()| y).map_err(|e| e.to_string());
                if cpu_done.send((position, i, r, t.elapsed().as_secs_f64())).is_err() {
                    return;
                }
            }
        });
        let result = (|| -> Result<(), DemoError> {
            for (position, &i) in order.iter().enumerate() {
                // Learn from whatever finished, so the queues below hold only work in flight.
                run.retire_finished(&mut placement, &from_cpu)?;
                let op = OpDesc::conv2d(&layers[i].geometry);
                let (device, predicted) = match &mut placement {
                    Placement::Fixed(d) => (d[i], 0.0),
                    Placement::Juggler(j) => {
                        let now = j.clock().now();
                        // Each device is busy for the predicted time of what it still holds.
                        let mut queued: HashMap<DeviceId, f64> = HashMap::new();
                        for f in &run.in_flight {
                            *queued.entry(f.device).or_default() += f.predicted;
                        }
                        queued.insert(DeviceId::Cpu, run.cpu_queue.iter().map(|(_, p)| p).sum());
                        for (d, q) in queued {
                            j.set_busy_until(d, now + q);
                        }
                        let decision = j.decide(&op, false).ok_or("no device")?;
                        (decision.device, decision.predicted)
                    }
                };
                run.placements.push(device);
                match device_of(gpus, device) {
                    None => {
                        to_cpu.send((position, i)).map_err(|_| "the CPU worker stopped")?;
                        run.cpu_queue.push((position, predicted));
                    }
                    Some(ctx) => run.submit(ctx, device, position, i, op, predicted, resident)?,
                }
            }
            drop(to_cpu);
            while !run.in_flight.is_empty() || !run.cpu_queue.is_empty() {
                run.retire_one(&mut placement, &from_cpu)?;
            }
            Ok(())
        })();
        worker.join().map_err(|_| "the CPU worker panicked")?;
        result
    })?;
    Ok(StreamReport {
        placements: run.placements,
        seconds: start.elapsed().as_secs_f64(),
        uploaded: run.uploaded,
        downloaded: run.downloaded,
        outputs: run.outputs,
        op_seconds: run.op_seconds,
    })
}

/// What the CPU worker sends back: stream position, layer, output, seconds.
type CpuResult = (usize, usize, Result<Vec<f32>, String>, f64);

/// The state of one stream run.
struct Run<'l> {
    layers: &'l [Layer],
    placements: Vec<DeviceId>,
    op_seconds: Vec<f64>,
    outputs: Vec<Vec<f32>>,
    uploaded: u64,
    downloaded: u64,
    in_flight: Vec<InFlight>,
    /// CPU ops sent to the worker and not yet back: (position, predicted seconds).
    cpu_queue: Vec<(usize, f64)>,
}

impl Run<'_> {
    /// Records and submits layer `i` on `ctx`: input upload (and the weights on first use),
    /// conv2d + bias + ReLU, output download, all in one submission.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        ctx: &Context,
        device: DeviceId,
        position: usize,
        i: usize,
        op: OpDesc,
        predicted: f64,
        resident: &mut Resident,
    ) -> Result<(), DemoError> {
        let l = &self.layers[i];
        let mut rec = ctx.record()?;
        let w = match resident.get(&(device, i)) {
            Some(t) => t.clone(),
            None => {
                self.uploaded += 4 * l.weight.len() as u64;
                let t = rec.upload(&l.weight)?;
                resident.insert((device, i), t.clone());
                t
            }
        };
        let bias = rec.upload(&l.bias)?;
        let x = rec.upload(&l.input)?;
        let y = rec.zeros(l.geometry.output_len())?;
        self.uploaded += 4 * (l.input.len() + l.bias.len()) as u64;
        rec.conv2d(&l.geometry, &x, &w, Some(&bias), Activation::Relu, &y)?;
        let download = rec.download(&y)?;
        self.downloaded += 4 * l.geometry.output_len() as u64;
        let pending = rec.submit()?;
        self.in_flight.push(InFlight { position, index: i, device, pending, download, op, predicted });
        Ok(())
    }

    /// Collects a finished GPU op: output, time, and the juggler learns from the device time.
    fn retire_gpu(&mut self, f: InFlight, placement: &mut Placement<'_>) -> Result<(), DemoError> {
        let timing = f.pending.wait()?;
        let out = &mut self.outputs[f.index];
        out.resize(self.layers[f.index].geometry.output_len(), 0.0);
        f.download.read(out)?;
        let seconds = timing.device_seconds.unwrap_or(timing.wall_seconds);
        self.op_seconds[f.position] = seconds;
        if let Placement::Juggler(j) = placement {
            j.record(f.device, &f.op, false, seconds, false);
        }
        Ok(())
    }

    fn retire_cpu(
        &mut self,
        (position, i, r, seconds): CpuResult,
        placement: &mut Placement<'_>,
    ) -> Result<(), DemoError> {
        self.cpu_queue.retain(|(p, _)| *p != position);
        self.op_seconds[position] = seconds;
        self.outputs[i] = r?;
        if let Placement::Juggler(j) = placement {
            j.record(DeviceId::Cpu, &OpDesc::conv2d(&self.layers[i].geometry), false, seconds, false);
        }
        Ok(())
    }

    /// Every op that has finished by now, without waiting.
    fn retire_finished(
        &mut self,
        placement: &mut Placement<'_>,
        from_cpu: &mpsc::Receiver<CpuResult>,
    ) -> Result<(), DemoError> {
        while let Some(k) = self.in_flight.iter().position(|f| f.pending.is_done()) {
            let f = self.in_flight.swap_remove(k);
            self.retire_gpu(f, placement)?;
        }
        while let Ok(msg) = from_cpu.try_recv() {
            self.retire_cpu(msg, placement)?;
        }
        Ok(())
    }

    /// Waits for the oldest GPU op, or else the next CPU result.
    fn retire_one(
        &mut self,
        placement: &mut Placement<'_>,
        from_cpu: &mpsc::Receiver<CpuResult>,
    ) -> Result<(), DemoError> {
        self.retire_finished(placement, from_cpu)?;
        if !self.in_flight.is_empty() {
            let f = self.in_flight.remove(0);
            self.retire_gpu(f, placement)
        } else if !self.cpu_queue.is_empty() {
            let msg = from_cpu.recv().map_err(|_| "the CPU worker stopped")?;
            self.retire_cpu(msg, placement)
        } else {
            Ok(())
        }
    }
}

/// The fixed assignment (one device per layer) with the smallest predicted makespan for the
/// stream `order`, from `seconds[layer][device]`: every device runs its layers back to back,
/// all devices at once. Exhaustive (devices^layers candidates, at most about a million).
pub fn best_fixed(seconds: &[Vec<f64>], order: &[usize]) -> Option<(Vec<usize>, f64)> {
    let layers = seconds.len();
    let devices = seconds.first()?.len();
    let count = (devices as f64).powi(layers as i32);
    if devices == 0 || count > 2e6 {
        return None;
    }
    let mut occurrences = vec![0usize; layers];
    for &i in order {
        occurrences[i] += 1;
    }
    let mut best: Option<(Vec<usize>, f64)> = None;
    let mut pick = vec![0usize; layers];
    loop {
        let mut load = vec![0.0; devices];
        for (l, &d) in pick.iter().enumerate() {
            load[d] += seconds[l][d] * occurrences[l] as f64;
        }
        let makespan = load.iter().copied().fold(0.0, f64::max);
        if best.as_ref().is_none_or(|(_, b)| makespan < *b) {
            best = Some((pick.clone(), makespan));
        }
        // Next assignment, as a base-`devices` counter.
        let mut l = 0;
        while l < layers {
            pick[l] += 1;
            if pick[l] < devices {
                break;
            }
            pick[l] = 0;
            l += 1;
        }
        if l == layers {
            return best;
        }
    }
}

/// The demo's layers at batch `n` as a stream, with deterministic data.
pub fn demo_layers(which: crate::demo::Layers, n: usize) -> Result<Vec<Layer>, DemoError> {
    crate::demo::layers(which)
        .into_iter()
        .enumerate()
        .map(|(i, (name, p))| {
            let geometry = sparkle_core::Conv2dParams { n, ..p }.validate()?;
            let mut l = Layer {
                name,
                geometry,
                weight: vec![0.0; geometry.weight_len()],
                bias: vec![0.0; p.k],
                input: vec![0.0; geometry.input_len()],
            };
            crate::demo::fill(&mut l.input, 3 * i as u64 + 1);
            crate::demo::fill(&mut l.weight, 3 * i as u64 + 2);
            crate::demo::fill(&mut l.bias, 3 * i as u64 + 3);
            Ok(l)
        })
        .collect()
}

/// One policy's run of the stream.
#[derive(Clone, Debug)]
pub struct PolicyRun {
    /// "always cpu", "always vulkan:0", "balanced fixed", "juggler".
    pub policy: String,
    /// What it did.
    pub report: StreamReport,
}

/// [`compare`]'s measurements.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The devices, in the order of `seconds`' columns.
    pub devices: Vec<DeviceId>,
    /// Seconds of each layer on each device (after a warm-up, weights resident).
    pub seconds: Vec<Vec<f64>>,
    /// The fixed assignment (one device per layer) that balances those seconds best over the
    /// devices running at once: the "balanced fixed" run.
    pub balanced: Vec<DeviceId>,
    /// Each policy's measured run of the stream.
    pub runs: Vec<PolicyRun>,
    /// Largest error of any run's output (first image of each layer) against the f64 oracle,
    /// over the oracle's tolerance for that layer (1.0 = at the tolerance).
    pub worst_error_ratio: f64,
}

/// Measures every layer on every device, then runs the stream (`rounds` times the layers, in
/// order) always on each device, with the balanced fixed assignment, and with the juggler
/// (which has learned from the same measurements), checking every output against the f64
/// oracle. The best fixed assignment is the fastest of the measured fixed runs
/// ([`Comparison::best_fixed`]).
pub fn compare(
    cpu: &Cpu,
    gpus: &[&Context],
    layers: &[Layer],
    rounds: usize,
    juggler: &mut Juggler<SystemClock>,
) -> Result<Comparison, DemoError> {
    let mut devices = vec![DeviceId::Cpu];
    devices.extend(gpus.iter().map(|g| DeviceId::Vulkan(g.info().index)));
    let mut resident = Resident::new();
    let once: Vec<usize> = (0..layers.len()).collect();
    let mut seconds = vec![vec![0.0; devices.len()]; layers.len()];
    for (di, &d) in devices.iter().enumerate() {
        let all_here = vec![d; layers.len()];
        run(cpu, gpus, layers, &once, Placement::Fixed(&all_here), &mut resident)?; // warm-up
        let r = run(cpu, gpus, layers, &once, Placement::Fixed(&all_here), &mut resident)?;
        for (l, &t) in r.op_seconds.iter().enumerate() {
            seconds[l][di] = t;
            juggler.record(d, &OpDesc::conv2d(&layers[l].geometry), false, t, false);
        }
    }
    let order: Vec<usize> = (0..rounds.max(1)).flat_map(|_| 0..layers.len()).collect();
    let (pick, _) = best_fixed(&seconds, &order).ok_or("too many layers and devices to search")?;
    let best: Vec<DeviceId> = pick.iter().map(|&d| devices[d]).collect();
    let mut runs = Vec::new();
    for &d in &devices {
        let all_here = vec![d; layers.len()];
        let report = run(cpu, gpus, layers, &order, Placement::Fixed(&all_here), &mut resident)?;
        runs.push(PolicyRun { policy: format!("always {d}"), report });
    }
    let report = run(cpu, gpus, layers, &order, Placement::Fixed(&best), &mut resident)?;
    runs.push(PolicyRun { policy: "balanced fixed".into(), report });
    let report = run(cpu, gpus, layers, &order, Placement::Juggler(juggler), &mut resident)?;
    runs.push(PolicyRun { policy: "juggler".into(), report });
    let worst_error_ratio = check_first_images(layers, &runs)?;
    Ok(Comparison { devices, seconds, balanced: best, runs, worst_error_ratio })
}

impl Comparison {
    /// The fastest measured fixed assignment (every run but the juggler's).
    pub fn best_fixed(&self) -> Option<&PolicyRun> {
        self.runs.iter().filter(|r| r.policy != "juggler").min_by(|a, b| a.report.seconds.total_cmp(&b.report.seconds))
    }
    /// The juggler's run.
    pub fn juggler(&self) -> Option<&PolicyRun> {
        self.runs.iter().find(|r| r.policy == "juggler")
    }
}

/// The largest error over tolerance of the first image of every layer's output in every run,
/// against the f64 oracle (which runs on that image alone).
fn check_first_images(layers: &[Layer], runs: &[PolicyRun]) -> Result<f64, DemoError> {
    let mut worst: f64 = 0.0;
    for (i, l) in layers.iter().enumerate() {
        let g1 = sparkle_core::Conv2dParams { n: 1, ..*l.geometry.params() }.validate()?;
        let epi = Epilogue::activation(Activation::Relu).with_bias(&l.bias);
        let mut truth = vec![0.0f64; g1.output_len()];
        sparkle_core::conv::reference::conv2d_reference_f64(
            &g1,
            &l.input[..g1.input_len()],
            &l.weight,
            &epi,
            &mut truth,
        )?;
        let tol = sparkle_core::check::tolerance(g1.gemm_dims().2);
        for r in runs {
            let out = &r.report.outputs[i];
            if out.len() < g1.output_len() {
                return Err(format!("{}: no output for {}", r.policy, l.name).into());
            }
            let (err, _) = sparkle_core::check::max_error(&out[..g1.output_len()], &truth);
            worst = worst.max(err / tol);
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::best_fixed;

    #[test]
    fn best_fixed_balances_the_load() {
        // Two layers, two equal devices: one layer each.
        let (pick, span) = best_fixed(&[vec![1.0, 1.0], vec![1.0, 1.0]], &[0, 1]).unwrap();
        assert_ne!(pick[0], pick[1]);
        assert_eq!(span, 1.0);
        // A device 10x slower gets nothing worth giving it.
        let (pick, span) = best_fixed(&[vec![1.0, 10.0], vec![1.0, 10.0]], &[0, 1, 1]).unwrap();
        assert_eq!(pick, vec![0, 0]);
        assert_eq!(span, 3.0);
        assert!(best_fixed(&[], &[]).is_none());
    }
}
