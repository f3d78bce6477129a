//! `sparkle_std::Sparkle`, the handle users call: every op it places matches the f64 oracle on
//! every device selection; injected device failures fall back to the CPU with complete, correct
//! outputs; `auto` never places work on a CPU-type Vulkan device; it serves four threads at once.

use std::sync::Arc;

use sparkle_core::check::{gpu_tolerance, max_error};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Conv2dParams, Epilogue, MatMut, MatRef, Padding, TensorLayout};
use sparkle_std::juggler::DeviceId;
use sparkle_std::sparkle::{DeviceErrorKind, DeviceSel, Faults};
use sparkle_std::{Sparkle, SparkleError};
use sparkle_tests::{fill, skip};

/// Vulkan device indices here, or a loud skip.
fn vulkan_devices() -> Vec<sparkle_std::vk::DeviceInfo> {
    match sparkle_std::vk::devices() {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => {
            skip("VULKAN", "no Vulkan device: Sparkle's Vulkan placement is not checked");
            Vec::new()
        }
        Err(e) => {
            skip("VULKAN", &format!("no Vulkan: {e}"));
            Vec::new()
        }
    }
}

fn handle(devices: &[DeviceSel]) -> Sparkle {
    Sparkle::builder().devices(devices).in_memory_model().build().unwrap()
}

/// One GEMM with bias and activation through `s`, checked against the oracle.
fn check_gemm(s: &Sparkle, m: usize, n: usize, k: usize, seed: u64) -> sparkle_std::Run {
    let (mut a, mut b, mut c0, mut bias) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; m * n], vec![0.0; n]);
    fill(&mut a, seed);
    fill(&mut b, seed + 1);
    fill(&mut c0, seed + 2);
    fill(&mut bias, seed + 3);
    let epi = Epilogue { bias: sparkle_core::Bias::Col(&bias), activation: Activation::Tanh };
    let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
    let mut want = vec![0.0; m * n];
    gemm_reference_f64(0.75, av, bv, -0.5, Some(MatRef::row_major(&c0, m, n).unwrap()), &epi, &mut want).unwrap();
    let mut c = c0.clone();
    let run = s.gemm(0.75, av, bv, -0.5, MatMut::row_major(&mut c, m, n).unwrap(), &epi).unwrap();
    let (err, at) = max_error(&c, &want);
    assert!(err <= gpu_tolerance(k), "{run:?} {m}x{n}x{k}: error {err:e} at {at:?}");
    run
}

/// One conv2d (grouped, padded, strided, dilated) through `s`, checked against the oracle.
fn check_conv(s: &Sparkle, layout: TensorLayout, seed: u64) -> sparkle_std::Run {
    let g = Conv2dParams::new(2, 6, 13, 11, 8, 3, 3)
        .stride(2, 1)
        .pad(Padding::new(1, 2, 0, 1))
        .dilation(1, 2)
        .groups(2)
        .layout(layout)
        .validate()
        .unwrap();
    let (mut x, mut w, mut bias) = (vec![0.0; g.input_len()], vec![0.0; g.weight_len()], vec![0.0; 8]);
    fill(&mut x, seed);
    fill(&mut w, seed + 1);
    fill(&mut bias, seed + 2);
    let epi = Epilogue::activation(Activation::Relu).with_bias(&bias);
    let mut want = vec![0.0; g.output_len()];
    conv2d_reference_f64(&g, &x, &w, &epi, &mut want).unwrap();
    let mut y = vec![f32::NAN; g.output_len()];
    let run = s.conv2d(&g, &x, &w, &epi, &mut y).unwrap();
    let (err, at) = max_error(&y, &want);
    assert!(err <= gpu_tolerance(g.gemm_dims().2), "{run:?} {layout:?}: error {err:e} at {at:?}");
    run
}

#[test]
fn every_selection_matches_the_oracle() {
    let mut selections =
        vec![(vec![DeviceSel::Cpu], Some(DeviceId::Cpu)), (vec![DeviceSel::Cpu, DeviceSel::Vulkan], None)];
    if let Some(d) = vulkan_devices().first() {
        selections.push((vec![DeviceSel::VulkanIndex(d.index)], Some(DeviceId::Vulkan(d.index))));
    }
    for (sel, only) in selections {
        let s = handle(&sel);
        for (i, (m, n, k)) in [(1, 1, 1), (17, 23, 9), (64, 48, 130)].into_iter().enumerate() {
            let run = check_gemm(&s, m, n, k, i as u64 * 10);
            assert!(run.fallback.is_none(), "{sel:?}: {run:?}");
            if let Some(dev) = only {
                assert_eq!(run.device, dev, "{sel:?}");
            }
        }
        for layout in [TensorLayout::Nchw, TensorLayout::Nhwc] {
            let run = check_conv(&s, layout, 7);
            if let Some(dev) = only {
                assert_eq!(run.device, dev, "{sel:?}");
            }
        }
    }
}

#[test]
fn injected_device_failures_fall_back_to_the_cpu_with_correct_outputs() {
    let Some(d) = vulkan_devices().first().cloned() else { return };
    for kind in [DeviceErrorKind::Lost, DeviceErrorKind::OutOfMemory] {
        let s = Sparkle::builder()
            .devices(&[DeviceSel::VulkanIndex(d.index)])
            .in_memory_model()
            .inject_faults(Faults { every: 2, kind })
            .build()
            .unwrap();
        let mut fell_back = 0;
        for i in 0..6 {
            let run = if i % 2 == 0 { check_gemm(&s, 33, 21, 17, i) } else { check_conv(&s, TensorLayout::Nchw, i) };
            if let Some(e) = &run.fallback {
                assert_eq!((e.kind, e.device, run.device), (kind, DeviceId::Vulkan(d.index), DeviceId::Cpu));
                fell_back += 1;
            }
        }
        // Every second op sent to the device fails; a failed device backs off, so later ops may
        // go to the CPU directly: at least one fallback happened, each with a correct result.
        assert!(fell_back >= 1, "{kind:?}: no fallback in 6 ops");
    }
}

#[test]
fn auto_never_places_work_on_a_cpu_type_vulkan_device() {
    let s = handle(&[DeviceSel::Cpu, DeviceSel::Vulkan]);
    let all = vulkan_devices();
    for d in s.gpus() {
        assert!(!d.cpu_type, "auto selected the CPU-type device {}", d.name);
    }
    for (i, (m, n, k)) in [(512, 512, 512), (2048, 64, 64), (8, 8, 8)].into_iter().enumerate() {
        let run = check_gemm(&s, m, n, k, i as u64);
        if let DeviceId::Vulkan(v) = run.device {
            assert!(all.iter().any(|d| d.index == v && d.device_type != "CPU"), "{run:?}");
        }
    }
    // Named explicitly, a CPU-type device is used.
    if let Some(cpu_type) = all.iter().find(|d| d.device_type == "CPU") {
        let s = handle(&[DeviceSel::VulkanIndex(cpu_type.index)]);
        assert_eq!(check_gemm(&s, 40, 30, 20, 9).device, DeviceId::Vulkan(cpu_type.index));
    }
}

#[test]
fn four_threads_share_one_handle() {
    let s = Arc::new(handle(&[DeviceSel::Cpu, DeviceSel::Vulkan]));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..6 {
                    if (t + i) % 2 == 0 {
                        check_gemm(&s, 20 + 7 * t, 31 + i, 40, (t * 100 + i) as u64);
                    } else {
                        check_conv(&s, TensorLayout::Nhwc, (t * 100 + i) as u64);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn bad_arguments_are_errors_and_touch_nothing() {
    let s = handle(&[DeviceSel::Cpu]);
    let (a, b) = (vec![1.0f32; 6], vec![1.0f32; 6]);
    let mut c = vec![7.0f32; 4];
    let err = s
        .gemm(
            1.0,
            MatRef::row_major(&a, 2, 3).unwrap(),
            MatRef::row_major(&b, 2, 3).unwrap(),
            0.0,
            MatMut::row_major(&mut c, 2, 2).unwrap(),
            &Epilogue::NONE,
        )
        .unwrap_err();
    assert!(matches!(err, SparkleError::Invalid(_)), "{err}");
    assert_eq!(c, vec![7.0; 4]);
    assert!(Sparkle::builder().devices(&[DeviceSel::VulkanIndex(99)]).in_memory_model().build().is_err());
}

#[test]
fn the_model_persists_and_reloads() {
    let dir = std::env::temp_dir().join(format!("sparkle-handle-model-{}", std::process::id()));
    let path = dir.join("model.txt");
    let _ = std::fs::remove_dir_all(&dir);
    {
        let s = Sparkle::builder().devices(&[DeviceSel::Cpu]).model_path(&path).build().unwrap();
        assert_eq!(s.model_status().unwrap().as_ref().unwrap(), &sparkle_std::juggler::store::Loaded::Missing);
        for i in 0..3 {
            check_gemm(&s, 96, 96, 96, i);
        }
    } // saved on drop
    let s = Sparkle::builder().devices(&[DeviceSel::Cpu]).model_path(&path).build().unwrap();
    assert_eq!(s.model_status().unwrap().as_ref().unwrap(), &sparkle_std::juggler::store::Loaded::Same);
    std::fs::remove_dir_all(&dir).unwrap();
}
