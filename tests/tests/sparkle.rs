//! `sparkle_std::Sparkle`, the handle users call: every op it places matches the f64 oracle on
//! every device selection; injected device failures fall back to the CPU with complete, correct
//! outputs; `auto` never places work on a CPU-type Vulkan device; it serves four threads at once;
//! tensor chains stay on the device that ran them, match the oracle layer by layer, and survive the
//! device being lost mid-chain; an unopened device waits its set-up, an idle one nothing.

use std::sync::Arc;

use sparkle_core::check::{gpu_tolerance, max_error};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Conv2dParams, Epilogue, MatMut, MatRef, Padding, Precision, TensorLayout};
use sparkle_std::juggler::DeviceId;
use sparkle_std::sparkle::{DeviceErrorKind, DeviceSel, Faults};
use sparkle_std::{Sparkle, SparkleError, Tensor, TensorBias};
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
    gemm_case(s, None, [m, n, k], seed, gpu_tolerance(k)).0
}

/// One GEMM (alpha, beta, column bias, tanh) through `s` (on `device`, else where it places it),
/// within `tol` of the oracle: its run and C.
fn gemm_case(
    s: &Sparkle,
    device: Option<DeviceId>,
    [m, n, k]: [usize; 3],
    seed: u64,
    tol: f64,
) -> (sparkle_std::Run, Vec<f32>) {
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
    let cv = MatMut::row_major(&mut c, m, n).unwrap();
    let run = match device {
        Some(d) => s.gemm_on(d, 0.75, av, bv, -0.5, cv, &epi),
        None => s.gemm(0.75, av, bv, -0.5, cv, &epi),
    }
    .unwrap();
    let (err, at) = max_error(&c, &want);
    assert!(err <= tol, "{run:?} {m}x{n}x{k}: error {err:e} at {at:?} > {tol:e}");
    (run, c)
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

/// A small network as a chain of tensor ops: conv (bias, ReLU) -> conv (stride 2, GELU) -> fully
/// connected (column bias, tanh) -> fully connected. Returns the tensors, layer outputs last, and
/// each op's run.
struct Chain {
    g1: sparkle_core::Conv2d,
    g2: sparkle_core::Conv2d,
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    f1: Tensor,
    c1: Tensor,
    f2: Tensor,
    ys: Vec<Tensor>,
    runs: Vec<sparkle_std::Run>,
}

const FC: [usize; 3] = [2, 10, 6 * 5 * 4]; // m (batch), n, k of the first fully connected layer
const FC2: [usize; 3] = [2, 4, 10];

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; len];
    fill(&mut v, seed);
    v
}

fn chain(s: &Sparkle) -> Chain {
    let g1 = Conv2dParams::new(2, 3, 12, 10, 8, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
    let g2 = Conv2dParams::new(2, 8, 12, 10, 6, 3, 3).stride(2, 2).validate().unwrap();
    let up = |len, seed| s.upload(&data(len, seed)).unwrap();
    let (x, w1, b1, w2) = (up(g1.input_len(), 1), up(g1.weight_len(), 2), up(8, 3), up(g2.weight_len(), 4));
    let (f1, c1, f2) = (up(FC[2] * FC[1], 5), up(FC[1], 6), up(FC2[2] * FC2[1], 7));
    let mut runs = Vec::new();
    let mut keep = |(t, r): (Tensor, sparkle_std::Run)| {
        runs.push(r);
        t
    };
    let y1 = keep(s.conv2d_tensor(&g1, &x, &w1, Some(&b1), Activation::Relu).unwrap());
    let y2 = keep(s.conv2d_tensor(&g2, &y1, &w2, None, Activation::Gelu).unwrap());
    let y3 = keep(s.gemm_tensor(&y2, &f1, FC, TensorBias::Col(&c1), Activation::Tanh).unwrap());
    let y4 = keep(s.gemm_tensor(&y3, &f2, FC2, TensorBias::None, Activation::None).unwrap());
    Chain { g1, g2, x, w1, b1, w2, f1, c1, f2, ys: vec![y1, y2, y3, y4], runs }
}

/// Each layer's output against the oracle applied to that layer's actual (downloaded) input.
fn check_chain_layers(s: &Sparkle, c: &Chain) {
    let get = |t: &Tensor| s.download(t).unwrap();
    let (x, w1, b1, w2) = (get(&c.x), get(&c.w1), get(&c.b1), get(&c.w2));
    let (f1, c1, f2) = (get(&c.f1), get(&c.c1), get(&c.f2));
    let ys: Vec<Vec<f32>> = c.ys.iter().map(get).collect();
    let mut want = vec![0.0; c.g1.output_len()];
    let epi = Epilogue::activation(Activation::Relu).with_bias(&b1);
    conv2d_reference_f64(&c.g1, &x, &w1, &epi, &mut want).unwrap();
    let mut worst = vec![(max_error(&ys[0], &want), gpu_tolerance(27))];
    let mut want = vec![0.0; c.g2.output_len()];
    conv2d_reference_f64(&c.g2, &ys[0], &w2, &Epilogue::activation(Activation::Gelu), &mut want).unwrap();
    worst.push((max_error(&ys[1], &want), gpu_tolerance(72)));
    for (i, ([m, n, k], input, b, bias, act)) in [
        (FC, &ys[1], &f1, sparkle_core::Bias::Col(&c1), Activation::Tanh),
        (FC2, &ys[2], &f2, sparkle_core::Bias::None, Activation::None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut want = vec![0.0; m * n];
        let (a, b) = (MatRef::row_major(input, m, k).unwrap(), MatRef::row_major(b, k, n).unwrap());
        gemm_reference_f64(1.0, a, b, 0.0, None, &Epilogue { bias, activation: act }, &mut want).unwrap();
        worst.push((max_error(&ys[2 + i], &want), gpu_tolerance(k)));
    }
    for (layer, ((err, at), tol)) in worst.into_iter().enumerate() {
        assert!(err <= tol, "layer {}: error {err:e} at {at:?} (runs {:?})", layer + 1, c.runs);
    }
}

#[test]
fn a_tensor_chain_stays_where_it_runs_and_matches_the_oracle_layer_by_layer() {
    let mut selections = vec![(DeviceSel::Cpu, DeviceId::Cpu)];
    for d in vulkan_devices() {
        selections.push((DeviceSel::VulkanIndex(d.index), DeviceId::Vulkan(d.index)));
    }
    for (sel, dev) in selections {
        let s = handle(std::slice::from_ref(&sel));
        let c = chain(&s);
        for r in &c.runs {
            assert_eq!((r.device, r.fallback.is_none()), (dev, true), "{sel:?}: {r:?}");
        }
        // Nothing crossed back between layers; the weights went to the device once and stay.
        for y in &c.ys {
            assert_eq!(s.locations(y), vec![dev], "{sel:?}");
        }
        if dev != DeviceId::Cpu {
            assert_eq!(s.locations(&c.w1), vec![DeviceId::Cpu, dev], "{sel:?}");
            assert!(c.runs[0].first_use, "the device's first conv includes its set-up: {:?}", c.runs[0]);
        }
        check_chain_layers(&s, &c);
        // A download leaves a host copy beside the device one.
        if dev != DeviceId::Cpu {
            assert_eq!(s.locations(&c.ys[3]), vec![DeviceId::Cpu, dev]);
        }
    }
}

#[test]
fn a_device_lost_mid_chain_is_recomputed_on_the_cpu() {
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let dev = DeviceId::Vulkan(d.index);
    let s = Sparkle::builder()
        .devices(&[DeviceSel::VulkanIndex(d.index)])
        .in_memory_model()
        .inject_faults(Faults { every: 3, kind: DeviceErrorKind::Lost })
        .build()
        .unwrap();
    let c = chain(&s);
    // Layers 1 and 2 ran on the device; the third op lost it, taking y1 and y2 along: the CPU
    // recomputed them from their recipes to run layer 3, and layer 4 ran on the CPU while the
    // device backs off.
    let devices: Vec<DeviceId> = c.runs.iter().map(|r| r.device).collect();
    assert_eq!(devices, vec![dev, dev, DeviceId::Cpu, DeviceId::Cpu], "{:?}", c.runs);
    let lost = c.runs[2].fallback.as_ref().expect("layer 3 fell back");
    assert_eq!((lost.kind, lost.device), (DeviceErrorKind::Lost, dev));
    for y in &c.ys {
        assert_eq!(s.locations(y), vec![DeviceId::Cpu], "nothing lives on the lost device any more");
    }
    check_chain_layers(&s, &c);
    // Bit for bit the CPU path's own chain: the lost layers were recomputed there.
    let cpu = handle(&[DeviceSel::Cpu]);
    let on_cpu = chain(&cpu);
    assert_eq!(s.download(&c.ys[3]).unwrap(), cpu.download(&on_cpu.ys[3]).unwrap());
}

#[test]
fn tensor_ops_reject_mismatched_shapes() {
    let s = handle(&[DeviceSel::Cpu]);
    let (a, b) = (s.upload(&[1.0; 6]).unwrap(), s.upload(&[1.0; 6]).unwrap());
    for (mnk, bias) in
        [([2, 2, 2], TensorBias::None), ([2, 2, 3], TensorBias::Col(&a)), ([usize::MAX, 2, 3], TensorBias::None)]
    {
        let err = s.gemm_tensor(&a, &b, mnk, bias, Activation::None).unwrap_err();
        assert!(matches!(err, SparkleError::Invalid(_)), "{mnk:?}: {err}");
    }
    let g = Conv2dParams::new(1, 1, 2, 2, 1, 1, 1).validate().unwrap();
    assert!(matches!(s.conv2d_tensor(&g, &a, &b, None, Activation::Relu), Err(SparkleError::Invalid(_))));
    // And the right shape works: 2x3 times 3x2.
    let (y, _) = s.gemm_tensor(&a, &b, [2, 2, 3], TensorBias::None, Activation::None).unwrap();
    assert_eq!(s.download(&y).unwrap(), vec![3.0; 4]);
}

#[test]
fn an_unopened_device_waits_its_set_up_and_an_idle_one_nothing() {
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let dev = DeviceId::Vulkan(d.index);
    // With the CPU path: the CPU waits for nothing, a GPU for its set-up; a CPU-type device
    // (lavapipe) is no placement target beside the CPU at all.
    let s = handle(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)]);
    let wait = |s: &Sparkle| -> Vec<(DeviceId, f64)> {
        s.predict_gemm(64, 64, 64).iter().map(|p| (p.device, p.wait)).collect()
    };
    let setup = if d.device_type == "CPU" {
        sparkle_std::sparkle::CPU_TYPE_SETUP_SECONDS
    } else {
        sparkle_std::sparkle::GPU_SETUP_SECONDS
    };
    let before = wait(&s);
    assert_eq!(before[0], (DeviceId::Cpu, 0.0));
    if d.device_type == "CPU" {
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(s.devices(), vec![DeviceId::Cpu]);
    } else {
        assert_eq!(before[1].0, dev);
        assert!(before[1].1 > 0.0 && before[1].1 <= setup, "{before:?}");
    }
    // Alone, it is placed on, after its set-up.
    let s = handle(&[DeviceSel::VulkanIndex(d.index)]);
    let before = wait(&s);
    assert_eq!(before[0].0, dev);
    assert!(before[0].1 > 0.0 && before[0].1 <= setup, "{before:?}");
    // Pinned there, the op opens the device; once it is done nothing is queued anywhere.
    let (a, b) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64 * 64]);
    let mut c = vec![0.0f32; 64 * 64];
    let av = MatRef::row_major(&a, 64, 64).unwrap();
    let run = s
        .gemm_on(
            dev,
            1.0,
            av,
            MatRef::row_major(&b, 64, 64).unwrap(),
            0.0,
            MatMut::row_major(&mut c, 64, 64).unwrap(),
            &Epilogue::NONE,
        )
        .unwrap();
    assert_eq!((run.device, run.first_use), (dev, true), "{run:?}");
    assert!(c.iter().all(|&v| v == 64.0));
    for (device, w) in wait(&s) {
        assert_eq!(w, 0.0, "{device} still charged after the op finished");
    }
}

#[test]
fn pinned_tensor_ops_run_where_pinned_and_tensors_cross_handles() {
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let dev = DeviceId::Vulkan(d.index);
    let g = Conv2dParams::new(1, 4, 9, 7, 5, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
    let (x, w) = (data(g.input_len(), 11), data(g.weight_len(), 12));
    let alone = handle(&[DeviceSel::VulkanIndex(d.index)]);
    let (xt, wt) = (alone.upload(&x).unwrap(), alone.upload(&w).unwrap());
    let (y, run) = alone.conv2d_tensor(&g, &xt, &wt, None, Activation::Relu).unwrap();
    assert_eq!(run.device, dev);
    assert_eq!(run.uploaded, 4 * (g.input_len() + g.weight_len()) as u64, "{run:?}");
    // Another handle, with the CPU too: the device is pinned, and `y` (on the first handle's
    // device only) is not this handle's to read there: it is recomputed, then uploaded.
    let both = handle(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)]);
    assert!(both.locations(&y).is_empty());
    let g2 = Conv2dParams::new(1, 5, 9, 7, 3, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
    let w2 = data(g2.weight_len(), 13);
    let (z, run) = both.conv2d_tensor_on(dev, &g2, &y, &both.upload(&w2).unwrap(), None, Activation::None).unwrap();
    assert_eq!((run.device, run.fallback.is_none()), (dev, true), "{run:?}");
    assert_eq!(both.locations(&y), vec![DeviceId::Cpu, dev]);
    let y_host = both.download(&y).unwrap();
    let mut want = vec![0.0; g.output_len()];
    conv2d_reference_f64(&g, &x, &w, &Epilogue::activation(Activation::Relu), &mut want).unwrap();
    let (err, at) = max_error(&y_host, &want);
    assert!(err <= gpu_tolerance(36), "y: {err:e} at {at:?}");
    let mut want = vec![0.0; g2.output_len()];
    conv2d_reference_f64(&g2, &y_host, &w2, &Epilogue::NONE, &mut want).unwrap();
    let (err, at) = max_error(&both.download(&z).unwrap(), &want);
    assert!(err <= gpu_tolerance(45), "z: {err:e} at {at:?}");
}

#[test]
fn the_handle_splits_one_op_over_its_devices() {
    let mut selections = vec![vec![DeviceSel::Cpu], vec![DeviceSel::Cpu, DeviceSel::Vulkan]];
    if let Some(d) = vulkan_devices().first() {
        selections.push(vec![DeviceSel::VulkanIndex(d.index)]);
    }
    for sel in selections {
        for faults in [None, Some(Faults { every: 1, kind: DeviceErrorKind::Lost })] {
            let mut b = Sparkle::builder().devices(&sel).in_memory_model();
            if let Some(f) = faults {
                b = b.inject_faults(f);
            }
            let s = b.build().unwrap();
            let (m, n, k) = (150, 40, 33);
            let (a, bm, bias) = (data(m * k, 1), data(k * n, 2), data(m, 3));
            let epi = Epilogue::activation(Activation::Relu).with_bias(&bias);
            let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&bm, k, n).unwrap());
            let mut want = vec![0.0; m * n];
            gemm_reference_f64(1.0, av, bv, 0.0, None, &epi, &mut want).unwrap();
            let mut c = vec![f32::NAN; m * n];
            let parts = s.gemm_split(1.0, av, bv, 0.0, MatMut::row_major(&mut c, m, n).unwrap(), &epi).unwrap();
            let (err, at) = max_error(&c, &want);
            assert!(err <= gpu_tolerance(k), "{sel:?} {faults:?}: {err:e} at {at:?} ({parts:?})");
            // The parts are the handle's placeable devices and cover every row, in order.
            assert_eq!(parts.iter().map(|p| p.device).collect::<Vec<_>>(), s.devices(), "{sel:?}");
            assert_eq!((parts[0].rows.start, parts.last().unwrap().rows.end), (0, m));
            let on_gpu = parts.iter().any(|p| p.device != DeviceId::Cpu && !p.rows.is_empty());
            assert_eq!(parts.iter().any(|p| p.failed.is_some()), faults.is_some() && on_gpu, "{sel:?}: {parts:?}");
            // And a batch split by images.
            let g = Conv2dParams::new(3, 4, 8, 8, 6, 3, 3).pad(Padding::uniform(1)).validate().unwrap();
            let (x, w) = (data(g.input_len(), 4), data(g.weight_len(), 5));
            let mut want = vec![0.0; g.output_len()];
            conv2d_reference_f64(&g, &x, &w, &Epilogue::NONE, &mut want).unwrap();
            let mut y = vec![f32::NAN; g.output_len()];
            s.conv2d_split(&g, &x, &w, &Epilogue::NONE, &mut y).unwrap();
            let (err, at) = max_error(&y, &want);
            assert!(err <= gpu_tolerance(36), "{sel:?} conv: {err:e} at {at:?}");
        }
    }
}

/// One half GEMM (bias per column + ReLU) through `s` on `on` (or placed), checked against the
/// oracle on the same rounded inputs.
fn check_gemm_half<H: sparkle_core::f16::Half>(
    s: &Sparkle,
    on: Option<DeviceId>,
    [m, n, k]: [usize; 3],
    seed: u64,
) -> sparkle_std::Run {
    use sparkle_core::check::{tolerance_for, Backend};
    use sparkle_core::f16::gemm_half_reference_f64;
    let (mut a, mut b, mut bias) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; n]);
    fill(&mut a, seed);
    fill(&mut b, seed + 1);
    fill(&mut bias, seed + 2);
    let a: Vec<H> = a.iter().map(|&v| H::from_f32(v)).collect();
    let b: Vec<H> = b.iter().map(|&v| H::from_f32(v)).collect();
    let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
    let epi = Epilogue { bias: sparkle_core::Bias::Col(&bias), activation: Activation::Relu };
    let mut c = vec![f32::NAN; m * n];
    let cv = MatMut::row_major(&mut c, m, n).unwrap();
    let run = match on {
        Some(d) => s.gemm_half_on(d, av, bv, cv, &epi),
        None => s.gemm_half(av, bv, cv, &epi),
    }
    .unwrap();
    let mut want = vec![0.0f64; m * n];
    gemm_half_reference_f64(&av, &bv, MatMut::row_major(&mut want, m, n).unwrap()).unwrap();
    for (e, w) in want.iter_mut().enumerate() {
        *w = epi.apply_f64(e / n, e % n, *w);
    }
    let (err, at) = max_error(&c, &want);
    let backend = if run.device == DeviceId::Cpu { Backend::Cpu } else { Backend::Vulkan };
    let tol = tolerance_for(backend, H::DTYPE, k);
    assert!(err <= tol, "{} on {:?} ({}): error {err:e} at {at:?} > {tol:e}", H::NAME, run.device, run.kernel);
    run
}

#[test]
fn half_gemms_match_the_oracle_on_every_device_and_fall_back_when_one_fails() {
    use sparkle_core::f16::{bf16, f16};
    let s = handle(&[DeviceSel::Cpu]);
    for (i, shape) in [[1, 1, 1], [33, 21, 70], [64, 130, 200]].into_iter().enumerate() {
        assert_eq!(check_gemm_half::<f16>(&s, None, shape, i as u64).device, DeviceId::Cpu);
        assert_eq!(check_gemm_half::<bf16>(&s, None, shape, 10 + i as u64).device, DeviceId::Cpu);
    }
    // A bad bias length is an error before anything runs.
    let a = [f16::ONE; 4];
    let mut c = [5.0f32; 4];
    let (av, cv) = (MatRef::row_major(&a, 2, 2).unwrap(), MatMut::row_major(&mut c, 2, 2).unwrap());
    let epi = Epilogue { bias: sparkle_core::Bias::Col(&[1.0]), activation: Activation::None };
    assert!(matches!(s.gemm_half(av, av, cv, &epi), Err(SparkleError::Invalid(_))));
    assert_eq!(c, [5.0; 4]);
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let s = handle(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)]);
    let gpu = DeviceId::Vulkan(d.index);
    assert_eq!(check_gemm_half::<f16>(&s, Some(gpu), [70, 90, 300], 3).device, gpu);
    assert_eq!(check_gemm_half::<bf16>(&s, Some(gpu), [70, 90, 300], 4).device, gpu);
    let s = Sparkle::builder()
        .devices(&[DeviceSel::VulkanIndex(d.index)])
        .in_memory_model()
        .inject_faults(Faults { every: 1, kind: DeviceErrorKind::Lost })
        .build()
        .unwrap();
    let run = check_gemm_half::<f16>(&s, Some(gpu), [40, 50, 60], 5);
    assert_eq!((run.device, run.fallback.map(|e| e.kind)), (DeviceId::Cpu, Some(DeviceErrorKind::Lost)));
}

#[test]
fn half_conv2d_matches_the_oracle_on_every_device_and_falls_back_when_one_fails() {
    use sparkle_core::check::{tolerance_for, Backend};
    use sparkle_core::f16::{bf16, f16, Half};
    fn check<H: Half>(s: &Sparkle, on: Option<DeviceId>, seed: u64) -> sparkle_std::Run {
        let p = Conv2dParams::new(2, 4, 9, 7, 6, 3, 3).pad(Padding::uniform(1)).layout(TensorLayout::Nhwc);
        let g = p.validate().unwrap();
        let (mut x, mut w, mut bias) = (vec![0.0; g.input_len()], vec![0.0; g.weight_len()], vec![0.0; 6]);
        fill(&mut x, seed);
        fill(&mut w, seed + 1);
        fill(&mut bias, seed + 2);
        let xh: Vec<H> = x.iter().map(|&v| H::from_f32(v)).collect();
        let wh: Vec<H> = w.iter().map(|&v| H::from_f32(v)).collect();
        let epi = Epilogue::activation(Activation::Relu).with_bias(&bias);
        let mut y = vec![f32::NAN; g.output_len()];
        let run = match on {
            Some(d) => s.conv2d_half_on(d, &g, &xh, &wh, &epi, &mut y),
            None => s.conv2d_half(&g, &xh, &wh, &epi, &mut y),
        }
        .unwrap();
        let widen = |v: &[H]| v.iter().map(|h| h.to_f64() as f32).collect::<Vec<f32>>();
        let mut want = vec![0.0; g.output_len()];
        conv2d_reference_f64(&g, &widen(&xh), &widen(&wh), &epi, &mut want).unwrap();
        let (err, at) = max_error(&y, &want);
        let backend = if run.device == DeviceId::Cpu { Backend::Cpu } else { Backend::Vulkan };
        let tol = tolerance_for(backend, H::DTYPE, g.gemm_dims().2);
        assert!(err <= tol, "{} conv on {:?} ({}): error {err:e} at {at:?} > {tol:e}", H::NAME, run.device, run.kernel);
        run
    }
    let s = handle(&[DeviceSel::Cpu]);
    assert_eq!(check::<f16>(&s, None, 1).device, DeviceId::Cpu);
    assert_eq!(check::<bf16>(&s, None, 2).device, DeviceId::Cpu);
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let gpu = DeviceId::Vulkan(d.index);
    let s = handle(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)]);
    assert_eq!(check::<f16>(&s, Some(gpu), 3).device, gpu);
    assert_eq!(check::<bf16>(&s, Some(gpu), 4).device, gpu);
    let s = Sparkle::builder()
        .devices(&[DeviceSel::VulkanIndex(d.index)])
        .in_memory_model()
        .inject_faults(Faults { every: 1, kind: DeviceErrorKind::OutOfMemory })
        .build()
        .unwrap();
    let run = check::<f16>(&s, Some(gpu), 5);
    assert_eq!((run.device, run.fallback.map(|e| e.kind)), (DeviceId::Cpu, Some(DeviceErrorKind::OutOfMemory)));
}

/// [`gemm_case`] on `device` with `precision`'s tolerance; returns C.
fn check_gemm_at(s: &Sparkle, device: DeviceId, precision: Precision, shape: [usize; 3], seed: u64) -> Vec<f32> {
    let tol = precision.tolerance(sparkle_core::check::Backend::Vulkan, shape[2]);
    let (run, c) = gemm_case(s, Some(device), shape, seed, tol);
    assert_eq!(run.device, device, "{}", precision.name());
    c
}

#[test]
fn f32_gemms_at_high_and_medium_precision_match_the_oracle_and_are_modelled_apart() {
    let dir = std::env::temp_dir().join(format!("sparkle-precision-model-{}", std::process::id()));
    let path = dir.join("model.txt");
    let _ = std::fs::remove_dir_all(&dir);
    let shape = [70, 90, 300];
    // The CPU computes f32 at every precision.
    let highest = check_gemm_at(&handle(&[DeviceSel::Cpu]), DeviceId::Cpu, Precision::Highest, shape, 1);
    for precision in [Precision::High, Precision::Medium] {
        let s = Sparkle::builder().devices(&[DeviceSel::Cpu]).precision(precision).in_memory_model().build().unwrap();
        assert_eq!(s.precision(), precision);
        assert_eq!(check_gemm_at(&s, DeviceId::Cpu, precision, shape, 1), highest);
    }
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let gpu = DeviceId::Vulkan(d.index);
    for precision in [Precision::High, Precision::Medium] {
        let s = Sparkle::builder()
            .devices(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)])
            .precision(precision)
            .model_path(&path)
            .build()
            .unwrap();
        for seed in 0..2 {
            check_gemm_at(&s, gpu, precision, shape, 10 + seed);
            check_gemm_at(&s, DeviceId::Cpu, precision, shape, 20 + seed);
        }
        s.save().unwrap();
        // Learned under the precision's own name, not the f32 GEMM's.
        let text = std::fs::read_to_string(&path).unwrap();
        let name = format!("gemm-{}", precision.name());
        assert!(text.lines().any(|l| l.split_whitespace().any(|w| w == name)), "no {name} model in:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The handle as an int8 backend: every op placed (or pinned to `on`), each run's device kept.
struct Placed<'a> {
    s: &'a Sparkle,
    on: Option<DeviceId>,
    runs: std::cell::RefCell<Vec<sparkle_std::Run>>,
}

impl sparkle_tests::quant::QRun for Placed<'_> {
    fn name(&self) -> String {
        format!("Sparkle on {:?}", self.on)
    }
    fn qgemm<A: sparkle_core::quant::QOperand, B: sparkle_core::quant::QOperand, Y: sparkle_core::quant::QElem>(
        &self,
        op: &sparkle_core::quant::QGemm<'_, A, B>,
        out: &sparkle_core::quant::OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<(), String> {
        let run = match self.on {
            Some(d) => self.s.qgemm_on(d, op, out, c),
            None => self.s.qgemm(op, out, c),
        }
        .map_err(|e| e.to_string())?;
        self.runs.borrow_mut().push(run);
        Ok(())
    }
    fn qconv2d<X: sparkle_core::quant::QOperand, W: sparkle_core::quant::QOperand, Y: sparkle_core::quant::QElem>(
        &self,
        g: &sparkle_core::Conv2d,
        op: &sparkle_core::quant::conv::QConv<'_, X, W>,
        out: &sparkle_core::quant::OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), String> {
        let run = match self.on {
            Some(d) => self.s.qconv2d_on(d, g, op, out, output),
            None => self.s.qconv2d(g, op, out, output),
        }
        .map_err(|e| e.to_string())?;
        self.runs.borrow_mut().push(run);
        Ok(())
    }
}

#[test]
fn int8_gemm_and_conv2d_match_the_oracle_on_every_device_and_fall_back_when_one_fails() {
    use sparkle_tests::quant::{check, check_conv, Case, Stage, WZero};
    fn placed(s: &Sparkle, on: Option<DeviceId>) -> Placed<'_> {
        Placed { s, on, runs: Default::default() }
    }
    let cases = [Case::new(1, 1, 1), Case { stage: Stage::Acc, ..Case::new(33, 21, 70) }, Case::new(64, 130, 200)];
    let s = handle(&[DeviceSel::Cpu]);
    let p = placed(&s, None);
    for case in cases {
        check(&p, case);
    }
    assert!(p.runs.borrow().iter().all(|r| r.device == DeviceId::Cpu && r.kernel.ends_with("gemm int8")));
    let conv = Conv2dParams::new(2, 6, 9, 8, 10, 3, 3).groups(2).pad(Padding::uniform(1)).layout(TensorLayout::Nhwc);
    check_conv(&p, conv, 2, WZero::Tensor, 3);
    assert!(p.runs.borrow().last().is_some_and(|r| r.device == DeviceId::Cpu && r.kernel.ends_with("conv2d int8")));
    // A bad zero point is an error before anything runs.
    let (a, b) = ([1u8; 4], [1i8; 4]);
    let op = sparkle_core::quant::QGemm {
        a: MatRef::row_major(&a, 2, 2).unwrap(),
        a_zero: 300,
        b: MatRef::row_major(&b, 2, 2).unwrap(),
        b_zero: sparkle_core::quant::PerChannel::Tensor(0),
        bias: None,
    };
    let mut c = [5u8; 4];
    let out = sparkle_core::quant::OutputStage::onnx(1.0, sparkle_core::quant::PerChannel::Tensor(1.0), 1.0, 0);
    assert!(matches!(s.qgemm(&op, &out, MatMut::row_major(&mut c, 2, 2).unwrap()), Err(SparkleError::Invalid(_))));
    assert_eq!(c, [5; 4]);
    let Some(d) = vulkan_devices().first().cloned() else { return };
    let gpu = DeviceId::Vulkan(d.index);
    let s = handle(&[DeviceSel::Cpu, DeviceSel::VulkanIndex(d.index)]);
    let p = placed(&s, Some(gpu));
    for case in cases {
        check(&p, case);
    }
    check_conv(&p, conv, 1, WZero::Channel, 7);
    assert!(p.runs.borrow().iter().all(|r| r.device == gpu && r.fallback.is_none()), "{:?}", p.runs.borrow());
    let s = Sparkle::builder()
        .devices(&[DeviceSel::VulkanIndex(d.index)])
        .in_memory_model()
        .inject_faults(Faults { every: 1, kind: DeviceErrorKind::Lost })
        .build()
        .unwrap();
    let p = placed(&s, Some(gpu));
    check(&p, cases[2]);
    check_conv(&p, conv, 0, WZero::Channel, 5);
    let runs = p.runs.borrow();
    assert!(runs
        .iter()
        .all(|r| r.device == DeviceId::Cpu && r.fallback.as_ref().map(|e| e.kind) == Some(DeviceErrorKind::Lost)));
}
