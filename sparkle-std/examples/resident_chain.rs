//! A chain of layers as tensors: inputs and weights uploaded once, every layer placed by the
//! juggler and reading the previous one's output where it already is (on a GPU it never crosses
//! back to the host between layers), one download at the end; checked against the CPU path.
//!
//! `cargo run --release -p sparkle-std --example resident_chain [-- cpu|vulkan|vulkan:N ...]`
//! (default: every device, the juggler decides).

use sparkle_std::core::{Activation, Conv2dParams, Epilogue, Padding};
use sparkle_std::cpu::Cpu;
use sparkle_std::sparkle::DeviceSel;
use sparkle_std::{Sparkle, SparkleError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut devices = Vec::new();
    for arg in std::env::args().skip(1) {
        devices.push(DeviceSel::parse(&arg).ok_or(format!("unknown device {arg:?}: cpu, vulkan or vulkan:N"))?);
    }
    let mut builder = Sparkle::builder();
    if !devices.is_empty() {
        builder = builder.devices(&devices);
    }
    let sparkle = match builder.build() {
        Ok(s) => s,
        Err(SparkleError::Config(e)) if std::env::var("SPARKLE_REQUIRE_VULKAN").as_deref() != Ok("1") => {
            println!("SKIPPED: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!("devices: {:?}", sparkle.devices());

    let g = Conv2dParams::new(1, 16, 32, 32, 16, 3, 3).pad(Padding::uniform(1)).validate()?;
    let x: Vec<f32> = (0..g.input_len()).map(|i| ((i % 13) as f32 - 6.0) / 8.0).collect();
    let w: Vec<f32> = (0..g.weight_len()).map(|i| ((i % 11) as f32 - 5.0) / 64.0).collect();

    // x -> y1 -> y2 -> y3, ReLU after each layer: each output stays where its layer ran.
    let (xt, wt) = (sparkle.upload(&x)?, sparkle.upload(&w)?);
    let mut y = xt;
    for layer in 1..=3 {
        let (next, run) = sparkle.conv2d_tensor(&g, &y, &wt, None, Activation::Relu)?;
        println!(
            "layer {layer}: {} ({}), {:.3} ms{}; output on {:?}",
            run.device,
            run.kernel,
            run.seconds * 1e3,
            if run.first_use { " incl. set-up" } else { "" },
            sparkle.locations(&next)
        );
        y = next;
    }
    let out = sparkle.download(&y)?;

    // The same chain on the CPU path directly.
    let cpu = Cpu::new()?;
    let epi = Epilogue::activation(Activation::Relu);
    let (mut a, mut b) = (vec![0.0f32; g.output_len()], vec![0.0f32; g.output_len()]);
    cpu.conv2d(&g, &x, &w, &epi, &mut a)?;
    cpu.conv2d(&g, &a, &w, &epi, &mut b)?;
    cpu.conv2d(&g, &b, &w, &epi, &mut a)?;
    let worst = out.iter().zip(&a).map(|(g, c)| (g - c).abs() / c.abs().max(1.0)).fold(0.0f32, f32::max);
    println!("largest difference from the CPU path {worst:e}");
    if worst > 1e-4 {
        return Err(format!("the chain differs from the CPU path by {worst}").into());
    }
    Ok(())
}
