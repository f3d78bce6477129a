//! The Vulkan toolchain, end to end: GLSL compiled at build time, run on every device found
//! (Mesa's lavapipe in CI), output checked. Skips loudly without a device unless
//! `SPARKLE_REQUIRE_VULKAN=1`.
#![cfg(feature = "vulkan")]

use sparkle_tests::{fill, skip};
use sparkle_vk::{devices, Context};

#[test]
fn saxpy_runs_on_every_device() {
    let devs = match devices() {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => return skip("VULKAN", "no Vulkan device with a compute queue"),
        Err(e) => return skip("VULKAN", &format!("no Vulkan: {e}")),
    };
    for info in devs {
        let ctx = Context::new(info.index).expect("open device");
        for len in [1usize, 63, 64, 65, 10_000] {
            let mut x = vec![0.0; len];
            let mut y = vec![0.0; len];
            fill(&mut x, len as u64);
            fill(&mut y, len as u64 + 1);
            let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 0.5f32.mul_add(*x, *y)).collect();
            ctx.saxpy(0.5, &x, &mut y).expect("saxpy");
            for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6, "{}: y[{i}] = {g}, want {w}", info.name);
            }
        }
        eprintln!("vulkan smoke passed on {} ({})", info.name, info.device_type);
    }
}

#[test]
fn mismatched_lengths_are_an_error() {
    let Ok(ctx) = Context::best() else {
        return skip("VULKAN", "no Vulkan device");
    };
    let mut y = [0.0f32; 3];
    assert!(ctx.saxpy(1.0, &[1.0, 2.0], &mut y).is_err());
    assert!(Context::new(usize::MAX).is_err(), "a missing device index is an error, not a panic");
}
