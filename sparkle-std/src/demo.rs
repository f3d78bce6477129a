//! The main job, as far as it goes today: a small conv-net slice (conv + bias + ReLU layers,
//! a strided conv, a 1x1 and a depthwise conv) run through the CPU oracle, each layer checked
//! against the f64 ground truth, and the Vulkan toolchain exercised on every device found.

use std::time::Instant;

use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::reference::{conv2d_reference, conv2d_reference_f64};
use sparkle_core::{Activation, Conv2d, Conv2dParams, Epilogue, Padding};

/// One layer of the demo and what it measured.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// Layer name.
    pub name: &'static str,
    /// The geometry.
    pub geometry: Conv2d,
    /// Seconds of the f32 run.
    pub seconds: f64,
    /// Largest error against the f64 oracle.
    pub max_error: f64,
    /// The tolerance it was held to.
    pub tolerance: f64,
}

impl LayerReport {
    /// GFLOPS of the run.
    pub fn gflops(&self) -> f64 {
        self.geometry.flops() / self.seconds / 1e9
    }
    /// Whether the error is within tolerance.
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

/// The demo's layers: a scaled-down ResNet/MobileNet slice that runs in well under a second.
pub fn layers() -> Vec<(&'static str, Conv2dParams)> {
    vec![
        ("stem 3->16 3x3 s2 @64", Conv2dParams::new(1, 3, 64, 64, 16, 3, 3).stride(2, 2).pad(Padding::uniform(1))),
        ("16->16 3x3 @32", Conv2dParams::new(1, 16, 32, 32, 16, 3, 3).pad(Padding::uniform(1))),
        ("16->32 1x1 @32", Conv2dParams::new(1, 16, 32, 32, 32, 1, 1)),
        ("dw 32 3x3 @32", Conv2dParams::new(1, 32, 32, 32, 32, 3, 3).pad(Padding::uniform(1)).groups(32)),
        ("32->32 3x3 d2 @32", Conv2dParams::new(1, 32, 32, 32, 32, 3, 3).pad(Padding::uniform(2)).dilation(2, 2)),
    ]
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

/// Runs every layer through the oracle and checks it against the f64 ground truth.
pub fn run_cpu() -> Result<Vec<LayerReport>, sparkle_core::Error> {
    let mut out = Vec::new();
    for (i, (name, params)) in layers().into_iter().enumerate() {
        let g = params.validate()?;
        let mut input = vec![0.0; g.input_len()];
        let mut weight = vec![0.0; g.weight_len()];
        let mut bias = vec![0.0; params.k];
        fill(&mut input, 3 * i as u64 + 1);
        fill(&mut weight, 3 * i as u64 + 2);
        fill(&mut bias, 3 * i as u64 + 3);
        let epi = Epilogue::activation(Activation::Relu).with_bias(&bias);
        let mut y = vec![0.0f32; g.output_len()];
        let t = Instant::now();
        conv2d_reference(&g, &input, &weight, &epi, &mut y)?;
        let seconds = t.elapsed().as_secs_f64().max(1e-9);
        let mut truth = vec![0.0f64; g.output_len()];
        conv2d_reference_f64(&g, &input, &weight, &epi, &mut truth)?;
        let (max_error, _) = max_error(&y, &truth);
        out.push(LayerReport { name, geometry: g, seconds, max_error, tolerance: tolerance(g.gemm_dims().2) });
    }
    Ok(out)
}
