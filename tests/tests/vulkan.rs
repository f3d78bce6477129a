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

#[test]
fn pipeline_cache_and_tuning_are_written_and_corrupt_ones_ignored() {
    use sparkle_core::{Epilogue, MatMut, MatRef};
    if devices().map_or(true, |d| d.is_empty()) {
        return skip("VULKAN", "no Vulkan device");
    }
    let dir = std::env::temp_dir().join(format!("sparkle-vk-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Only this test creates contexts after setting it; the other tests here do not read it.
    std::env::set_var("SPARKLE_CACHE_DIR", &dir);
    let run = || {
        let ctx = Context::best().expect("device");
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let mut c = [0.0f32; 4];
        let av = MatRef::row_major(&a, 2, 2).unwrap();
        ctx.gemm(1.0, av, av, 0.0, MatMut::row_major(&mut c, 2, 2).unwrap(), &Epilogue::NONE).expect("gemm");
        assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
    };
    run();
    let find = |prefix: &str| {
        std::fs::read_dir(&dir)
            .expect("cache dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
    };
    let file = find("vk-pipelines-").expect("a pipeline cache file");
    assert!(std::fs::metadata(&file).unwrap().len() > 24, "cache file has data");
    let tuning = find("vk-tuning-").expect("the autotune's result is remembered");
    assert!(std::fs::read_to_string(&tuning).unwrap().starts_with("sparkle-vk tuning 3\n"));
    std::fs::write(&file, b"garbage, not a cache").unwrap();
    std::fs::write(&tuning, b"garbage").unwrap();
    run();
    assert!(std::fs::read(&file).unwrap().starts_with(b"SPKPC"), "a corrupt cache is replaced by a valid one");
    let text = std::fs::read_to_string(&tuning).unwrap();
    assert!(text.starts_with("sparkle-vk tuning 3\nmin_vec4_tiles "), "re-measured: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn buffers_are_reused_across_ops() {
    use sparkle_core::{Epilogue, MatMut, MatRef};
    let Ok(ctx) = Context::best() else {
        return skip("VULKAN", "no Vulkan device");
    };
    let a = vec![0.5f32; 96 * 80];
    let b = vec![0.25f32; 80 * 70];
    let mut c = vec![0.0f32; 96 * 70];
    let mut run = || {
        let (av, bv) = (MatRef::row_major(&a, 96, 80).unwrap(), MatRef::row_major(&b, 80, 70).unwrap());
        ctx.gemm(1.0, av, bv, 0.0, MatMut::row_major(&mut c, 96, 70).unwrap(), &Epilogue::NONE).unwrap();
    };
    run();
    let after_first = ctx.pooled_bytes();
    for _ in 0..5 {
        run();
    }
    assert_eq!(ctx.pooled_bytes(), after_first, "the same op reuses its buffers");
    assert!(c.iter().all(|&v| (v - 10.0).abs() < 1e-4), "{}", c[0]);
}
