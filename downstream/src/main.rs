//! A downstream program: one `Sparkle` handle, a GEMM and a small chain of tensor ops, each
//! checked against a naive loop written here.

use sparkle_std::core::{Activation, Conv2dParams, Epilogue, MatMut, MatRef};
use sparkle_std::Sparkle;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sparkle = Sparkle::new()?;
    let (m, n, k) = (33, 17, 29);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
    let mut c = vec![0.0f32; m * n];
    let run = sparkle.gemm(
        1.0,
        MatRef::row_major(&a, m, k)?,
        MatRef::row_major(&b, k, n)?,
        0.0,
        MatMut::row_major(&mut c, m, n)?,
        &Epilogue::NONE,
    )?;
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            if (c[i * n + j] - want).abs() > 1e-3 * want.abs().max(1.0) {
                return Err(format!("gemm ({i}, {j}): {} != {want}", c[i * n + j]).into());
            }
        }
    }
    // A 1x1 conv with ReLU twice, as tensors: each layer is a per-pixel matrix product.
    let g = Conv2dParams::new(1, 4, 3, 3, 4, 1, 1).validate()?;
    let w: Vec<f32> = (0..16).map(|i| if i % 5 == 0 { 1.0 } else { -0.25 }).collect();
    let x: Vec<f32> = (0..g.input_len()).map(|i| i as f32 / 9.0 - 1.0).collect();
    let (xt, wt) = (sparkle.upload(&x)?, sparkle.upload(&w)?);
    let (y1, _) = sparkle.conv2d_tensor(&g, &xt, &wt, None, Activation::Relu)?;
    let (y2, last) = sparkle.conv2d_tensor(&g, &y1, &wt, None, Activation::Relu)?;
    let layer = |x: &[f32]| -> Vec<f32> {
        let mut y = vec![0.0; 36];
        for o in 0..4 {
            for p in 0..9 {
                y[o * 9 + p] = (0..4).map(|c| w[o * 4 + c] * x[c * 9 + p]).sum::<f32>().max(0.0);
            }
        }
        y
    };
    let want = layer(&layer(&x));
    let got = sparkle.download(&y2)?;
    if got.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-5) {
        return Err(format!("conv chain: {got:?} != {want:?}").into());
    }
    println!("downstream: gemm on {} and a tensor chain on {}: both match", run.device, last.device);
    Ok(())
}
