//! A chain of layers kept on a GPU: weights and activations uploaded once, every layer reading
//! the previous one's output in device memory, one submission, one download at the end; checked
//! against the CPU path.
//!
//! `cargo run --release -p sparkle-std --example resident_chain`

use sparkle_std::core::{Activation, Conv2dParams, Epilogue, Padding};
use sparkle_std::cpu::Cpu;
use sparkle_std::vk::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = match Context::best() {
        Ok(ctx) => ctx,
        Err(e) if std::env::var("SPARKLE_REQUIRE_VULKAN").as_deref() != Ok("1") => {
            println!("SKIPPED: no Vulkan device here ({e}); nothing to chain");
            return Ok(());
        }
        Err(e) => return Err(format!("SPARKLE_REQUIRE_VULKAN=1 but {e}").into()),
    };
    println!("device: {}", ctx.info().name);
    let g = Conv2dParams::new(1, 16, 32, 32, 16, 3, 3).pad(Padding::uniform(1)).validate()?;
    let x: Vec<f32> = (0..g.input_len()).map(|i| ((i % 13) as f32 - 6.0) / 8.0).collect();
    let w: Vec<f32> = (0..g.weight_len()).map(|i| ((i % 11) as f32 - 5.0) / 64.0).collect();

    // On the device: x -> y1 -> y2 -> y3, ReLU after each layer, nothing crosses back until the end.
    let (xd, wd) = (ctx.upload(&x)?, ctx.upload(&w)?);
    let ys = [ctx.zeros(g.output_len())?, ctx.zeros(g.output_len())?, ctx.zeros(g.output_len())?];
    let mut rec = ctx.record()?;
    rec.conv2d(&g, &xd, &wd, None, Activation::Relu, &ys[0])?;
    rec.conv2d(&g, &ys[0], &wd, None, Activation::Relu, &ys[1])?;
    rec.conv2d(&g, &ys[1], &wd, None, Activation::Relu, &ys[2])?;
    let timing = rec.submit()?.wait()?;
    let on_gpu = ctx.download(&ys[2])?;

    // The same chain on the CPU path.
    let cpu = Cpu::new()?;
    let epi = Epilogue::activation(Activation::Relu);
    let (mut a, mut b) = (vec![0.0f32; g.output_len()], vec![0.0f32; g.output_len()]);
    cpu.conv2d(&g, &x, &w, &epi, &mut a)?;
    cpu.conv2d(&g, &a, &w, &epi, &mut b)?;
    cpu.conv2d(&g, &b, &w, &epi, &mut a)?;
    let worst = on_gpu.iter().zip(&a).map(|(g, c)| (g - c).abs() / c.abs().max(1.0)).fold(0.0f32, f32::max);
    println!("3 layers on the device in {:?} s; largest difference from the CPU path {worst:e}", timing.device_seconds);
    if worst > 1e-4 {
        return Err(format!("the device chain differs from the CPU path by {worst}").into());
    }
    Ok(())
}
