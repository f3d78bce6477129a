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
use crate::juggler::{Clock, DeviceId, Juggler, OpDesc, SystemClock};

/// A juggler over the CPU and each of `gpus` as a device of its own (own cost model, own
/// queue), with the priors of [`crate::sparkle::juggler_for`], and the fingerprint its learned
/// model is stored under. As in [`crate::Sparkle`], a CPU-type Vulkan device (lavapipe) runs on
/// the host's own cores and is never a placement target beside the CPU path (the stream still
/// times it in the fixed assignments).
pub fn juggler(cpu: &Cpu, gpus: &[&Context], cpu_brand: &str) -> (Juggler<SystemClock>, String) {
    let descs: Vec<_> =
        gpus.iter().map(|ctx| crate::sparkle::GpuDesc::from_info(ctx.info())).filter(|d| !d.cpu_type).collect();
    let machine: Vec<crate::sparkle::GpuDesc> = match sparkle_vk::devices() {
        Ok(all) => all.iter().map(crate::sparkle::GpuDesc::from_info).collect(),
        Err(_) => gpus.iter().map(|ctx| crate::sparkle::GpuDesc::from_info(ctx.info())).collect(),
    };
    crate::sparkle::juggler_for(cpu, true, &descs, &machine, cpu_brand)
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

/// Weights resident on the GPUs, by (device, layer): uploaded the first time a device runs a
/// layer, reused by every later occurrence and every later run given the same map.
pub type Resident = HashMap<(DeviceId, usize), Tensor>;

/// An op for a device's worker: stream position and layer.
#[derive(Clone, Copy, Debug)]
struct Job {
    position: usize,
    layer: usize,
}

/// What a worker sends back for one op (its output stays with the worker, see [`Outputs`]).
struct Done {
    job: Job,
    device: DeviceId,
    output: Result<(), String>,
    /// GPU: device time from timestamps (its copies included); CPU: wall time.
    seconds: f64,
    uploaded: u64,
    downloaded: u64,
}

/// A worker's latest output of each layer it ran: (stream position, data). One buffer per layer,
/// written again by every occurrence, so a long stream does not allocate (and page-fault) a
/// fresh output per op.
type Outputs = HashMap<usize, (usize, Vec<f32>)>;

/// `outputs`' buffer for `job`, marked as its latest.
fn output_for(outputs: &mut Outputs, job: Job, len: usize) -> &mut Vec<f32> {
    let slot = outputs.entry(job.layer).or_insert_with(|| (job.position, vec![0.0; len]));
    slot.0 = job.position;
    &mut slot.1
}

/// The CPU's worker: runs its ops one after another.
fn cpu_worker(cpu: &Cpu, layers: &[Layer], jobs: mpsc::Receiver<Job>, done: mpsc::Sender<Done>) -> Outputs {
    let mut outputs = Outputs::new();
    for job in jobs {
        let l = &layers[job.layer];
        let epi = Epilogue::activation(Activation::Relu).with_bias(&l.bias);
        let y = output_for(&mut outputs, job, l.geometry.output_len());
        let t = Instant::now();
        let output = cpu.conv2d(&l.geometry, &l.input, &l.weight, &epi, y).map_err(|e| e.to_string());
        let seconds = t.elapsed().as_secs_f64();
        if done.send(Done { job, device: DeviceId::Cpu, output, seconds, uploaded: 0, downloaded: 0 }).is_err() {
            break;
        }
    }
    outputs
}

/// A GPU op submitted by its worker.
struct Submitted {
    job: Job,
    pending: Pending,
    download: Download,
    uploaded: u64,
}

/// Records and submits one layer: input upload (and the weights on first use), conv2d + bias +
/// ReLU, output download, all in one submission.
fn submit(
    ctx: &Context,
    layers: &[Layer],
    weights: &mut HashMap<usize, Tensor>,
    job: Job,
) -> Result<Submitted, DemoError> {
    let l = &layers[job.layer];
    let mut rec = ctx.record()?;
    let mut uploaded = 4 * (l.input.len() + l.bias.len()) as u64;
    let w = match weights.get(&job.layer) {
        Some(t) => t.clone(),
        None => {
            uploaded += 4 * l.weight.len() as u64;
            let t = rec.upload(&l.weight)?;
            weights.insert(job.layer, t.clone());
            t
        }
    };
    let bias = rec.upload(&l.bias)?;
    let x = rec.upload(&l.input)?;
    let y = rec.zeros(l.geometry.output_len())?;
    rec.conv2d(&l.geometry, &x, &w, Some(&bias), Activation::Relu, &y)?;
    let download = rec.download(&y)?;
    Ok(Submitted { job, pending: rec.submit()?, download, uploaded })
}

/// Waits for a submitted op and reads its output.
fn finish(s: Submitted, device: DeviceId, layers: &[Layer], outputs: &mut Outputs) -> Done {
    let out_len = layers[s.job.layer].geometry.output_len();
    let result = s.pending.wait().map_err(|e| e.to_string()).and_then(|timing| {
        s.download.read(output_for(outputs, s.job, out_len)).map_err(|e| e.to_string())?;
        Ok(timing.device_seconds.unwrap_or(timing.wall_seconds))
    });
    let (output, seconds) = match result {
        Ok(t) => (Ok(()), t),
        Err(e) => (Err(e), 0.0),
    };
    Done { job: s.job, device, output, seconds, uploaded: s.uploaded, downloaded: 4 * out_len as u64 }
}

/// A GPU's worker: keeps up to two submissions in flight, so the host copies of the next op
/// overlap the device's work on the current one, and sends each result back as it completes.
fn gpu_worker(
    ctx: &Context,
    device: DeviceId,
    layers: &[Layer],
    weights: &mut HashMap<usize, Tensor>,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Done>,
) -> Outputs {
    let mut outputs = Outputs::new();
    let mut in_flight: std::collections::VecDeque<Submitted> = Default::default();
    let mut open = true;
    loop {
        let next = if !open {
            None
        } else if in_flight.is_empty() {
            jobs.recv().map_err(|_| open = false).ok()
        } else if in_flight.len() < 2 {
            match jobs.try_recv() {
                Ok(j) => Some(j),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        let report = match next {
            Some(job) => match submit(ctx, layers, weights, job) {
                Ok(s) => {
                    in_flight.push_back(s);
                    continue;
                }
                Err(e) => Done { job, device, output: Err(e.to_string()), seconds: 0.0, uploaded: 0, downloaded: 0 },
            },
            None => match in_flight.pop_front() {
                Some(s) => finish(s, device, layers, &mut outputs),
                None if !open => return outputs,
                None => continue,
            },
        };
        if done.send(report).is_err() {
            return outputs;
        }
    }
}

/// Runs the ops `order` (indices into `layers`) over `cpu` and `gpus` as `placement` says:
/// every device has a worker thread, so the CPU, each GPU and the host copies for each GPU
/// all proceed at once while this thread decides where the next op goes.
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
    // Each GPU worker owns its device's resident weights during the run.
    let mut weights: Vec<(DeviceId, HashMap<usize, Tensor>)> = gpus
        .iter()
        .map(|g| {
            let id = DeviceId::Vulkan(g.info().index);
            let mine: Vec<(DeviceId, usize)> = resident.keys().filter(|(d, _)| *d == id).copied().collect();
            (id, mine.into_iter().filter_map(|k| resident.remove(&k).map(|t| (k.1, t))).collect())
        })
        .collect();
    let start = Instant::now();
    let mut report = StreamReport {
        placements: Vec::with_capacity(order.len()),
        seconds: 0.0,
        uploaded: 0,
        downloaded: 0,
        outputs: vec![Vec::new(); layers.len()],
        op_seconds: vec![0.0; order.len()],
    };
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let result = std::thread::scope(|s| -> Result<(), DemoError> {
        let mut queues: HashMap<DeviceId, mpsc::Sender<Job>> = HashMap::new();
        let (tx, rx) = mpsc::channel();
        let done = done_tx.clone();
        let mut workers = vec![s.spawn(move || cpu_worker(cpu, layers, rx, done))];
        queues.insert(DeviceId::Cpu, tx);
        for (ctx, (id, w)) in gpus.iter().copied().zip(weights.iter_mut()) {
            let (tx, rx) = mpsc::channel();
            let (id, done) = (*id, done_tx.clone());
            workers.push(s.spawn(move || gpu_worker(ctx, id, layers, w, rx, done)));
            queues.insert(id, tx);
        }
        drop(done_tx);
        // The juggler's queue model: the predicted seconds of what each device still holds.
        let mut held: HashMap<usize, (DeviceId, f64)> = HashMap::new();
        let mut first_error = None;
        let mut collect = |d: Done,
                           report: &mut StreamReport,
                           placement: &mut Placement<'_>,
                           held: &mut HashMap<usize, (DeviceId, f64)>| {
            held.remove(&d.job.position);
            report.uploaded += d.uploaded;
            report.downloaded += d.downloaded;
            report.op_seconds[d.job.position] = d.seconds;
            match d.output {
                Ok(()) => {
                    if let Placement::Juggler(j) = placement {
                        j.record(d.device, &OpDesc::conv2d(&layers[d.job.layer].geometry), false, d.seconds, false);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        };
        for (position, &i) in order.iter().enumerate() {
            while let Ok(d) = done_rx.try_recv() {
                collect(d, &mut report, &mut placement, &mut held);
            }
            let op = OpDesc::conv2d(&layers[i].geometry);
            let (device, predicted) = match &mut placement {
                Placement::Fixed(d) => (d[i], 0.0),
                Placement::Juggler(j) => {
                    let now = j.clock().now();
                    let mut queued: HashMap<DeviceId, f64> = queues.keys().map(|d| (*d, 0.0)).collect();
                    for (d, p) in held.values() {
                        *queued.entry(*d).or_default() += p;
                    }
                    for (d, q) in queued {
                        j.set_busy_until(d, now + q);
                    }
                    let decision = j.decide(&op, false).ok_or("no device")?;
                    (decision.device, decision.predicted)
                }
            };
            report.placements.push(device);
            let queue = queues.get(&device).ok_or_else(|| format!("{device} is not one of the stream's devices"))?;
            queue.send(Job { position, layer: i }).map_err(|_| format!("the worker of {device} stopped"))?;
            held.insert(position, (device, predicted));
        }
        queues.clear(); // the workers finish what they hold, then stop
        for d in done_rx.iter() {
            collect(d, &mut report, &mut placement, &mut held);
        }
        // Each layer's output from its last occurrence, whichever worker ran it.
        let mut latest = vec![None; layers.len()];
        for w in workers {
            for (layer, (position, y)) in w.join().map_err(|_| "a worker panicked")? {
                if latest[layer].is_none_or(|p| position > p) {
                    latest[layer] = Some(position);
                    report.outputs[layer] = y;
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None if !held.is_empty() => Err("a worker stopped before finishing its ops".into()),
            None => Ok(()),
        }
    });
    for (id, w) in weights {
        resident.extend(w.into_iter().map(|(layer, t)| ((id, layer), t)));
    }
    result?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
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
