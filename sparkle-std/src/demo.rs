//! The main job: the ResNet-50 layer sequence at batch 1 (conv + bias + ReLU, plus MobileNet's
//! depthwise layer) placed through [`Sparkle`] on the CPU or a Vulkan device, every layer checked
//! against the f64 oracle on every device, with the prediction, time, GFLOPS and error of each.

use std::time::Instant;

use sparkle_core::check::{max_error, tolerance_for, DType};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::conv::Conv2dPath;
use sparkle_core::{Activation, Conv2d, Conv2dParams, Epilogue, Padding};

use crate::juggler::DeviceId;
use crate::sparkle::Sparkle;

/// One layer of the demo and what it measured.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// Layer name.
    pub name: &'static str,
    /// The geometry.
    pub geometry: Conv2d,
    /// Which CPU path ran it.
    pub path: Conv2dPath,
    /// Where the juggler sent it.
    pub device: DeviceId,
    /// The juggler's predicted seconds there.
    pub predicted: f64,
    /// Measured seconds there (best of three).
    pub seconds: f64,
    /// Measured seconds on the CPU.
    pub cpu_seconds: f64,
    /// Measured seconds on the GPU, when there is one.
    pub gpu_seconds: Option<f64>,
    /// Largest error against the f64 oracle, over every device that ran it.
    pub max_error: f64,
    /// The tolerance it was held to.
    pub tolerance: f64,
}

impl LayerReport {
    /// GFLOPS on the chosen device.
    pub fn gflops(&self) -> f64 {
        self.geometry.flops() / self.seconds / 1e9
    }
    /// Whether the error is within tolerance.
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

/// Which layer set the demo runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// The ResNet-50 layer set at batch 1 plus a depthwise layer (the real demo, a few seconds).
    ResNet50,
    /// A scaled-down slice that runs in well under a second (tests, slow machines).
    Small,
}

/// The demo's layers.
pub fn layers(which: Layers) -> Vec<(&'static str, Conv2dParams)> {
    let p = Conv2dParams::new;
    match which {
        Layers::ResNet50 => vec![
            ("conv1 3->64 7x7 s2 @224", p(1, 3, 224, 224, 64, 7, 7).stride(2, 2).pad(Padding::uniform(3))),
            ("64->64 3x3 @56", p(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1))),
            ("64->256 1x1 @56", p(1, 64, 56, 56, 256, 1, 1)),
            ("128->128 3x3 @28", p(1, 128, 28, 28, 128, 3, 3).pad(Padding::uniform(1))),
            ("256->256 3x3 @14", p(1, 256, 14, 14, 256, 3, 3).pad(Padding::uniform(1))),
            ("512->512 3x3 @7", p(1, 512, 7, 7, 512, 3, 3).pad(Padding::uniform(1))),
            ("256->1024 1x1 @14", p(1, 256, 14, 14, 1024, 1, 1)),
            ("dw 32 3x3 @112", p(1, 32, 112, 112, 32, 3, 3).pad(Padding::uniform(1)).groups(32)),
        ],
        Layers::Small => vec![
            ("stem 3->16 3x3 s2 @64", p(1, 3, 64, 64, 16, 3, 3).stride(2, 2).pad(Padding::uniform(1))),
            ("16->16 3x3 @32", p(1, 16, 32, 32, 16, 3, 3).pad(Padding::uniform(1))),
            ("16->32 1x1 @32", p(1, 16, 32, 32, 32, 1, 1)),
            ("dw 32 3x3 @32", p(1, 32, 32, 32, 32, 3, 3).pad(Padding::uniform(1)).groups(32)),
            ("32->32 3x3 d2 @32", p(1, 32, 32, 32, 32, 3, 3).pad(Padding::uniform(2)).dilation(2, 2)),
        ],
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so runs are reproducible.
pub fn fill(buf: &mut [f32], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for v in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    }
}

/// The demo's error type.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// Best of three runs of `f`, in seconds.
fn best_of_three(mut f: impl FnMut() -> Result<(), DemoError>) -> Result<f64, DemoError> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64().max(1e-9));
    }
    Ok(best)
}

/// Runs every layer through `sparkle` (placed by the juggler: the time reported is that of the
/// placed run, best of three), checks it against the f64 oracle, and also runs it pinned on every
/// device of the handle, so the placement can be compared with always-CPU and always-GPU (the
/// handle learns from all of it). Every device's output is checked.
pub fn run(sparkle: &Sparkle, which: Layers) -> Result<Vec<LayerReport>, DemoError> {
    let mut out = Vec::new();
    let gpu = sparkle.devices().into_iter().find(|d| *d != DeviceId::Cpu);
    for (i, (name, params)) in layers(which).into_iter().enumerate() {
        let g = params.validate()?;
        let mut input = vec![0.0; g.input_len()];
        let mut weight = vec![0.0; g.weight_len()];
        let mut bias = vec![0.0; params.k];
        fill(&mut input, 3 * i as u64 + 1);
        fill(&mut weight, 3 * i as u64 + 2);
        fill(&mut bias, 3 * i as u64 + 3);
        let epi = Epilogue::activation(Activation::Relu).with_bias(&bias);
        let mut truth = vec![0.0f64; g.output_len()];
        conv2d_reference_f64(&g, &input, &weight, &epi, &mut truth)?;
        let mut y = vec![f32::NAN; g.output_len()];
        let mut err = 0.0f64;
        // Pinned on each device first (a GPU's first use compiles its pipelines), best of three.
        // A device that failed (and fell back to the CPU) is an error here: the demo compares devices.
        let mut pinned = |device: DeviceId| -> Result<f64, DemoError> {
            y.fill(f32::NAN); // each device's output is its own, never the previous device's
            let on = |y: &mut [f32]| -> Result<(), DemoError> {
                match sparkle.conv2d_on(device, &g, &input, &weight, &epi, y)?.fallback {
                    Some(e) => Err(format!("{name}: {e}").into()),
                    None => Ok(()),
                }
            };
            on(&mut y)?;
            let t = best_of_three(|| on(&mut y))?;
            err = err.max(max_error(&y, &truth).0);
            Ok(t)
        };
        let cpu_seconds = pinned(DeviceId::Cpu)?;
        let gpu_seconds = gpu.map(&mut pinned).transpose()?;
        // Then where the juggler places it, having measured both.
        let mut placed = None;
        y.fill(f32::NAN);
        let seconds = best_of_three(|| {
            placed = Some(sparkle.conv2d(&g, &input, &weight, &epi, &mut y)?);
            Ok(())
        })?;
        err = err.max(max_error(&y, &truth).0);
        let placed = placed.ok_or("no run")?;
        out.push(LayerReport {
            name,
            geometry: g,
            path: sparkle.cpu().conv2d_run_path(&g),
            device: placed.device,
            predicted: placed.predicted,
            seconds,
            cpu_seconds,
            gpu_seconds,
            max_error: err,
            // The loosest row of the devices compared (the error is their largest).
            tolerance: tolerance_for(gpu.unwrap_or(DeviceId::Cpu).backend(), DType::F32, g.gemm_dims().2),
        });
    }
    Ok(out)
}
