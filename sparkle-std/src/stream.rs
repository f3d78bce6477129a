//! A stream of conv2d layers through one [`Sparkle`] handle, from several threads at once: each
//! op goes where the juggler places it (or where a fixed assignment pins it), the handle's queue
//! accounting spreads concurrent ops over the devices, every layer's weights are tensors that
//! stay on a device after their first use there, and every byte that crosses to or from a device
//! is counted. One placement path: the same handle, juggler and fallback as every other call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sparkle_core::check::{tolerance_for, DType};
use sparkle_core::{Activation, Conv2d, Epilogue};

use crate::demo::DemoError;
use crate::juggler::DeviceId;
use crate::{Sparkle, Tensor};

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

/// Every layer's weights and bias as tensors of one handle: copied to a device the first time it
/// runs the layer and kept there for every later occurrence and every later run given them.
#[derive(Clone, Debug)]
pub struct Weights(Vec<(Tensor, Tensor)>);

impl Weights {
    /// The layers' weights and biases, on the host until a device needs them.
    pub fn upload(sparkle: &Sparkle, layers: &[Layer]) -> Result<Self, DemoError> {
        let w = layers.iter().map(|l| Ok((sparkle.upload(&l.weight)?, sparkle.upload(&l.bias)?)));
        Ok(Weights(w.collect::<Result<_, crate::SparkleError>>()?))
    }
}

/// Where the layers go.
#[derive(Clone, Copy, Debug)]
pub enum Placement<'a> {
    /// The handle's juggler places each op (queues included) and learns from what it measures.
    Juggler,
    /// Every occurrence of layer `i` runs on `devices[i]`.
    Fixed(&'a [DeviceId]),
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
    /// The device that computed each of `outputs` (the CPU where a device failed and the CPU
    /// re-ran the op).
    pub output_devices: Vec<DeviceId>,
    /// Seconds of each op from its dispatch to its output on the host, copies included.
    pub op_seconds: Vec<f64>,
    /// Ops a device failed and the CPU re-ran.
    pub fallbacks: usize,
}

/// A layer's latest output: (stream position, its host copy).
type Latest = (usize, Arc<Vec<f32>>);

/// Threads that feed the stream by default: one for the CPU and two per Vulkan device, so each
/// device's next op is copied in while its current one runs.
pub fn default_workers(sparkle: &Sparkle) -> usize {
    1 + 2 * sparkle.gpus().len()
}

/// What one worker did with one op.
struct Done {
    position: usize,
    device: DeviceId,
    seconds: f64,
    uploaded: u64,
    downloaded: u64,
    fell_back: bool,
}

/// Runs the ops `order` (indices into `layers`) through `sparkle` from `workers` threads, each
/// taking the next op in order: upload its input, run the layer (conv + bias + ReLU) where
/// `placement` says, bring the output to the host.
pub fn run(
    sparkle: &Sparkle,
    layers: &[Layer],
    weights: &Weights,
    order: &[usize],
    placement: Placement<'_>,
    workers: usize,
) -> Result<StreamReport, DemoError> {
    if let Some(&bad) = order.iter().find(|&&i| i >= layers.len()) {
        return Err(format!("the stream names layer {bad} of {}", layers.len()).into());
    }
    if weights.0.len() != layers.len() {
        return Err(format!("{} layers but weights for {}", layers.len(), weights.0.len()).into());
    }
    if let Placement::Fixed(d) = placement {
        if d.len() != layers.len() {
            return Err(format!("{} layers but {} fixed devices", layers.len(), d.len()).into());
        }
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<DemoError>> = Mutex::new(None);
    // Each layer's latest output: (stream position, data).
    let latest: Mutex<HashMap<usize, Latest>> = Mutex::default();
    let start = Instant::now();
    let one = |position: usize| -> Result<Done, DemoError> {
        let i = order[position];
        let (l, (w, b)) = (&layers[i], &weights.0[i]);
        let t = Instant::now();
        let x = sparkle.upload(&l.input)?;
        let (y, run) = match placement {
            Placement::Juggler => sparkle.conv2d_tensor(&l.geometry, &x, w, Some(b), Activation::Relu)?,
            Placement::Fixed(d) => sparkle.conv2d_tensor_on(d[i], &l.geometry, &x, w, Some(b), Activation::Relu)?,
        };
        // The output on the host: a GPU's downloaded (counted), the CPU's as it is (no copy).
        let mut down = 0;
        let out = sparkle.host_of(&y, &mut down)?;
        let seconds = t.elapsed().as_secs_f64();
        let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.get(&i).is_none_or(|(p, _)| *p < position) {
            latest.insert(i, (position, out));
        }
        Ok(Done {
            position,
            device: run.device,
            seconds,
            uploaded: run.uploaded,
            downloaded: run.downloaded + down,
            fell_back: run.fallback.is_some(),
        })
    };
    let done: Vec<Done> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let position = next.fetch_add(1, Ordering::Relaxed);
                        if position >= order.len() {
                            break;
                        }
                        match one(position) {
                            Ok(d) => mine.push(d),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut report = StreamReport {
        placements: vec![DeviceId::Cpu; order.len()],
        seconds,
        uploaded: 0,
        downloaded: 0,
        outputs: vec![Vec::new(); layers.len()],
        output_devices: vec![DeviceId::Cpu; layers.len()],
        op_seconds: vec![0.0; order.len()],
        fallbacks: 0,
    };
    if done.len() != order.len() {
        return Err("a worker stopped before finishing its ops".into());
    }
    let mut computed_by = vec![DeviceId::Cpu; order.len()];
    for d in done {
        report.placements[d.position] = d.device;
        computed_by[d.position] = if d.fell_back { DeviceId::Cpu } else { d.device };
        report.op_seconds[d.position] = d.seconds;
        report.uploaded += d.uploaded;
        report.downloaded += d.downloaded;
        report.fallbacks += usize::from(d.fell_back);
    }
    for (i, (position, y)) in latest.into_inner().unwrap_or_else(|e| e.into_inner()) {
        report.outputs[i] = y.as_ref().clone();
        report.output_devices[i] = computed_by[position];
    }
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

/// Measures every layer on every device of `sparkle` (one op at a time, after a warm-up, weights
/// resident), then runs the stream (`rounds` times the layers, in order, from
/// [`default_workers`] threads, best of three turns) always on each device, with the balanced
/// fixed assignment, and with the juggler (which has learned from all of it), checking every
/// output against the f64 oracle. The best fixed assignment is the fastest of the measured fixed runs
/// ([`Comparison::best_fixed`]).
pub fn compare(sparkle: &Sparkle, layers: &[Layer], rounds: usize) -> Result<Comparison, DemoError> {
    let mut devices = vec![DeviceId::Cpu];
    devices.extend(sparkle.gpus().iter().map(|g| DeviceId::Vulkan(g.index)));
    let weights = Weights::upload(sparkle, layers)?;
    let once: Vec<usize> = (0..layers.len()).collect();
    let mut seconds = vec![vec![0.0; devices.len()]; layers.len()];
    for (di, &d) in devices.iter().enumerate() {
        let all_here = vec![d; layers.len()];
        run(sparkle, layers, &weights, &once, Placement::Fixed(&all_here), 1)?; // warm-up
        let r = run(sparkle, layers, &weights, &once, Placement::Fixed(&all_here), 1)?;
        for (l, &t) in r.op_seconds.iter().enumerate() {
            seconds[l][di] = t;
        }
    }
    let order: Vec<usize> = (0..rounds.max(1)).flat_map(|_| 0..layers.len()).collect();
    let (pick, _) = best_fixed(&seconds, &order).ok_or("too many layers and devices to search")?;
    let best: Vec<DeviceId> = pick.iter().map(|&d| devices[d]).collect();
    let workers = default_workers(sparkle);
    let mut policies: Vec<(String, Placement<'_>)> = Vec::new();
    let alone: Vec<Vec<DeviceId>> = devices.iter().map(|&d| vec![d; layers.len()]).collect();
    for (d, all_here) in devices.iter().zip(&alone) {
        policies.push((format!("always {d}"), Placement::Fixed(all_here)));
    }
    policies.push(("balanced fixed".into(), Placement::Fixed(&best)));
    policies.push(("juggler".into(), Placement::Juggler));
    // Each policy's best of three runs; the policies take turns, each turn starting one policy
    // later, so none is favoured by always running first (colder) or last (warmer).
    let mut runs: Vec<Option<PolicyRun>> = vec![None; policies.len()];
    for turn in 0..3 {
        for p in (0..policies.len()).map(|i| (i + turn) % policies.len()) {
            let (policy, placement) = &policies[p];
            let report = run(sparkle, layers, &weights, &order, *placement, workers)?;
            if runs[p].as_ref().is_none_or(|r| report.seconds < r.report.seconds) {
                runs[p] = Some(PolicyRun { policy: policy.clone(), report });
            }
        }
    }
    let runs: Vec<PolicyRun> = runs.into_iter().flatten().collect();
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
/// against the f64 oracle (which runs on that image alone), each output held to the tolerance
/// of the backend that computed it: at most 1 passes.
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
        for r in runs {
            let backend = r.report.output_devices[i].backend();
            let tol = tolerance_for(backend, DType::F32, g1.gemm_dims().2);
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
