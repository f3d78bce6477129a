//! A desktop or server app using Sparkle: one handle, ops placed on the CPU or a GPU by the
//! juggler, each result's device and timing reported, the learned model kept for next time.
//!
//! `cargo run --release -p sparkle-std --example desktop_app`

use sparkle_std::core::{Activation, Conv2dParams, Epilogue, MatMut, MatRef, Padding};
use sparkle_std::Sparkle;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every device this machine has; the model learned by earlier runs is loaded.
    let sparkle = Sparkle::new()?;
    println!("devices: {:?} (model: {:?})", sparkle.devices(), sparkle.model_path());

    // A GEMM: C = A B, 256 x 384 x 512.
    let (m, n, k) = (256, 384, 512);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let run = sparkle.gemm(
        1.0,
        MatRef::row_major(&a, m, k)?,
        MatRef::row_major(&b, k, n)?,
        0.0,
        MatMut::row_major(&mut c, m, n)?,
        &Epilogue::NONE,
    )?;
    println!("gemm {m}x{n}x{k}: {} ({}), {:.3} ms", run.device, run.kernel, run.seconds * 1e3);

    // A ResNet-style layer, conv + bias + ReLU, a few times: the juggler learns as it goes.
    let g = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1)).validate()?;
    let x = vec![0.5f32; g.input_len()];
    let w = vec![0.01f32; g.weight_len()];
    let bias = vec![0.1f32; 64];
    let mut y = vec![0.0f32; g.output_len()];
    for _ in 0..3 {
        let run = sparkle.conv2d(&g, &x, &w, &Epilogue::activation(Activation::Relu).with_bias(&bias), &mut y)?;
        let note = match &run.fallback {
            Some(e) => format!(" (fell back to the CPU: {e})"),
            None => String::new(),
        };
        println!(
            "conv2d 64->64 3x3 @56: {} ({}), predicted {:.3} ms, took {:.3} ms{note}",
            run.device,
            run.kernel,
            run.predicted * 1e3,
            run.seconds * 1e3
        );
    }
    // Saved on drop too; saving explicitly reports errors.
    sparkle.save()?;
    Ok(())
}
