//! The main job: the ResNet-50 layer sequence at batch 1 (conv + bias + ReLU, plus MobileNet's
//! depthwise layer) placed by the juggler on the CPU or a Vulkan device, every layer checked
//! against the f64 oracle on every device, with the prediction, time, GFLOPS and error of each.

use std::time::Instant;

use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::fused::{choose_path, Conv2dPath};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::{Activation, Conv2d, Conv2dParams, Epilogue, Padding};

use crate::cpu::Cpu;
use crate::juggler::{DeviceId, Juggler, OpDesc, SystemClock};

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

/// A GPU: its context and its juggler id.
#[cfg(feature = "vulkan")]
pub type Gpu<'a> = Option<(&'a sparkle_vk::Context, DeviceId)>;
/// No GPU support in this build.
#[cfg(not(feature = "vulkan"))]
pub type Gpu<'a> = Option<(&'a (), DeviceId)>;

/// Runs every layer where the juggler decides, checks it against the f64 oracle, and also times
/// it on every other device, so the juggler's choice can be compared with always-CPU and
/// always-GPU (and learns from both measurements).
pub fn run(
    cpu: &Cpu,
    gpu: Gpu<'_>,
    juggler: &mut Juggler<SystemClock>,
    which: Layers,
) -> Result<Vec<LayerReport>, DemoError> {
    let mut out = Vec::new();
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
        let op = OpDesc::conv2d(&g);
        let decision = juggler.decide(&op, false).ok_or("no device")?;
        let mut y = vec![f32::NAN; g.output_len()];
        let cpu_seconds = best_of_three(|| Ok(cpu.conv2d(&g, &input, &weight, &epi, &mut y)?))?;
        let mut err = max_error(&y, &truth).0;
        juggler.record(DeviceId::Cpu, &op, false, cpu_seconds, false);
        let mut gpu_seconds = None;
        #[cfg(feature = "vulkan")]
        if let Some((ctx, id)) = gpu {
            let mut yg = vec![f32::NAN; g.output_len()];
            ctx.conv2d(&g, &input, &weight, &epi, &mut yg)?; // first call: compiles the pipeline
            let t = best_of_three(|| Ok(ctx.conv2d(&g, &input, &weight, &epi, &mut yg)?))?;
            err = err.max(max_error(&yg, &truth).0);
            juggler.record(id, &op, false, t, false);
            gpu_seconds = Some(t);
        }
        #[cfg(not(feature = "vulkan"))]
        let _ = gpu;
        let seconds = if decision.device == DeviceId::Cpu { cpu_seconds } else { gpu_seconds.unwrap_or(cpu_seconds) };
        out.push(LayerReport {
            name,
            geometry: g,
            path: choose_path(&g),
            device: decision.device,
            predicted: decision.predicted,
            seconds,
            cpu_seconds,
            gpu_seconds,
            max_error: err,
            tolerance: tolerance(g.gemm_dims().2),
        });
    }
    Ok(out)
}
