//! The `no_std` core as a Cortex-M4 would call it: no heap, no threads, caller-provided scratch
//! (sized by `scratch_len`), validation before any work; the same code runs here on the host.
//!
//! `cargo run -p sparkle-std --example no_std_core` (the firmware/ folder runs this on QEMU's
//! Cortex-M4F)

use sparkle_std::core::{conv, gemm, Activation, Conv2dParams, Epilogue, MatMut, MatRef, Padding};

fn main() -> Result<(), sparkle_std::core::Error> {
    // Fixed-size buffers, as on a microcontroller (there the scratch is far smaller: `scratch_len`
    // follows the blocking, which follows the caches).
    let mut scratch = [0.0f32; 1 << 16];

    // GEMM 8x8x8 with a ReLU epilogue.
    let a = [0.25f32; 64];
    let b = [0.5f32; 64];
    let mut c = [0.0f32; 64];
    let need = gemm::scratch_len(8, 8, 8)?;
    gemm::gemm(
        1.0,
        MatRef::row_major(&a, 8, 8)?,
        MatRef::row_major(&b, 8, 8)?,
        0.0,
        MatMut::row_major(&mut c, 8, 8)?,
        &Epilogue::activation(Activation::Relu),
        &mut scratch[..need],
    )?;
    println!("gemm 8x8x8: c[0] = {} (expected 1), {need} floats of scratch", c[0]);
    assert!(c.iter().all(|&v| v == 1.0), "every element is 8 * 0.25 * 0.5");

    // conv2d 4->4 3x3 on 8x8, padding 1.
    let g = Conv2dParams::new(1, 4, 8, 8, 4, 3, 3).pad(Padding::uniform(1)).validate()?;
    let x = [1.0f32; 256];
    let w = [0.125f32; 144];
    let mut y = [0.0f32; 256];
    let need = conv::scratch_len(&g)?;
    conv::conv2d(&g, &x[..g.input_len()], &w, &Epilogue::NONE, &mut y[..g.output_len()], &mut scratch[..need])?;
    println!("conv2d 4->4 3x3 @8: centre {} (expected 4.5), corner {} (expected 2)", y[9], y[0]);
    assert_eq!((y[9], y[0]), (4.5, 2.0));

    // Too little scratch is an error, never an overrun.
    let short = conv::conv2d(&g, &x[..g.input_len()], &w, &Epilogue::NONE, &mut y[..g.output_len()], &mut scratch[..0]);
    println!("with no scratch: {short:?}");
    assert!(short.is_err());
    Ok(())
}
