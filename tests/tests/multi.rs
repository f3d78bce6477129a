//! One GEMM or conv2d split across devices (the CPU and every Vulkan device; lavapipe in CI):
//! every part against the oracle, every split proportion, and a device that fails mid-split.

use sparkle_core::check::{gpu_tolerance, max_error};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, MatMut, MatRef, Padding, TensorLayout, WeightLayout};
use sparkle_std::backend::{Backend, Conv2dOp, DeviceError, DeviceErrorKind, GemmOp};
use sparkle_std::juggler::DeviceId;
use sparkle_std::multi::{conv2d_split, gemm_split, split_rows};
use sparkle_tests::fill;

/// A device that scribbles over its rows of C, then fails.
struct Failing;
impl Backend for Failing {
    fn id(&self) -> DeviceId {
        DeviceId::Vulkan(99)
    }
    fn name(&self) -> String {
        "failing (injected)".into()
    }
    fn conv2d(&self, _: &Conv2dOp<'_>, _: &mut [f32]) -> Result<(), DeviceError> {
        Err(lost())
    }
    fn gemm(&self, _: &GemmOp<'_>, mut c: MatMut<'_>) -> Result<(), DeviceError> {
        for i in 0..c.rows() {
            for j in 0..c.cols() {
                c.set(i, j, 1e30);
            }
        }
        Err(lost())
    }
}

fn lost() -> DeviceError {
    DeviceError { device: DeviceId::Vulkan(99), kind: DeviceErrorKind::Lost, message: "device lost (injected)".into() }
}

fn check(
    parts: &[&dyn Backend],
    speeds: &[f64],
    (m, n, k): (usize, usize, usize),
    beta: f32,
    bias_row: bool,
) -> Vec<sparkle_std::multi::PartReport> {
    let mut a = vec![0.0; m * k];
    let mut b = vec![0.0; k * n];
    let mut c = vec![0.0; m * n];
    let mut bias = vec![0.0; m.max(n)];
    fill(&mut a, 1);
    fill(&mut b, 2);
    fill(&mut c, 3);
    fill(&mut bias, 4);
    let (av, bv) = (MatRef::row_major(&a, m, k).unwrap(), MatRef::row_major(&b, k, n).unwrap());
    let epi = Epilogue {
        bias: if bias_row { Bias::Row(&bias[..m]) } else { Bias::Col(&bias[..n]) },
        activation: Activation::Relu,
    };
    let c0 = c.clone();
    let mut want = vec![0.0; m * n];
    gemm_reference_f64(1.0, av, bv, beta, Some(MatRef::row_major(&c0, m, n).unwrap()), &epi, &mut want).unwrap();
    let rows = split_rows(m, speeds, 64);
    let op = GemmOp { alpha: 1.0, a: av, b: bv, beta, epi };
    let reports = gemm_split(parts, &rows, &op, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
    let (err, at) = max_error(&c, &want);
    assert!(err <= gpu_tolerance(k), "{speeds:?} {m}x{n}x{k}: error {err:e} at {at:?}");
    reports
}

#[test]
fn split_rows_covers_in_order_and_aligns() {
    let r = split_rows(1000, &[1.0, 3.0], 64);
    assert_eq!(r, vec![0..256, 256..1000]);
    assert_eq!(split_rows(100, &[1.0, 0.0], 64), vec![0..100, 100..100]);
    assert_eq!(split_rows(100, &[0.0, 1.0], 64), vec![0..0, 0..100]);
    assert_eq!(split_rows(10, &[1.0, 1.0, 1.0], 64), vec![0..0, 0..0, 0..10]);
}

/// Every Vulkan device (none, loudly, without one).
#[cfg(feature = "vulkan")]
fn gpus() -> Vec<sparkle_vk::Context> {
    match sparkle_vk::devices() {
        Ok(d) if !d.is_empty() => d.iter().map(|d| sparkle_vk::Context::new(d.index).unwrap()).collect(),
        _ => {
            sparkle_tests::skip("VULKAN", "no Vulkan device for the CPU+GPU split");
            Vec::new()
        }
    }
}

/// Equal shares, growing shares, and everything on the last device.
fn proportions(parts: usize) -> [Vec<f64>; 3] {
    let mut last = vec![0.0; parts];
    last[parts - 1] = 1.0;
    [vec![1.0; parts], (0..parts).map(|i| (i + 1) as f64).collect(), last]
}

#[test]
fn split_gemm_matches_oracle_on_cpu_and_every_vulkan_device() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap().threads(1);
    let cpu2 = sparkle_std::cpu::Cpu::new().unwrap().threads(1);
    let mut parts: Vec<&dyn Backend> = vec![&cpu, &cpu2];
    #[cfg(feature = "vulkan")]
    let gpus = gpus();
    #[cfg(feature = "vulkan")]
    parts.extend(gpus.iter().map(|g| g as &dyn Backend));
    for speeds in proportions(parts.len()) {
        for (shape, beta, bias_row) in
            [((300, 70, 45), 0.0, true), ((257, 33, 130), 0.5, false), ((64, 64, 64), 1.0, true)]
        {
            check(&parts, &speeds, shape, beta, bias_row);
        }
    }
}

#[test]
fn a_device_failing_mid_split_has_its_part_rerun() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap().threads(1);
    let failing = Failing;
    let parts: [&dyn Backend; 2] = [&cpu, &failing];
    for beta in [0.0, 0.75] {
        let reports = check(&parts, &[1.0, 1.0], (200, 40, 30), beta, true);
        assert_eq!(reports[1].failed, Some(lost()), "{reports:?}");
        assert!(reports[0].failed.is_none());
    }
}

#[test]
fn column_major_c_is_an_error_not_a_race() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap();
    let parts: [&dyn Backend; 2] = [&cpu, &cpu];
    let a = vec![1.0f32; 64 * 8];
    let mut c = vec![0.0f32; 64 * 64];
    let av = MatRef::row_major(&a, 64, 8).unwrap();
    let bv = MatRef::row_major(&a[..8 * 64], 8, 64).unwrap();
    let op = GemmOp { alpha: 1.0, a: av, b: bv, beta: 0.0, epi: Epilogue::NONE };
    let r = gemm_split(&parts, &[0..32, 32..64], &op, MatMut::col_major(&mut c, 64, 64).unwrap());
    assert!(r.is_err());
}

fn check_conv(parts: &[&dyn Backend], speeds: &[f64], p: Conv2dParams) -> Vec<sparkle_std::multi::PartReport> {
    let g = p.validate().unwrap();
    let (mut x, mut w, mut bias) = (vec![0.0; g.input_len()], vec![0.0; g.weight_len()], vec![0.0; p.k]);
    fill(&mut x, 5);
    fill(&mut w, 6);
    fill(&mut bias, 7);
    let epi = Epilogue { bias: Bias::Row(&bias), activation: Activation::Relu6 };
    let mut want = vec![0.0; g.output_len()];
    conv2d_reference_f64(&g, &x, &w, &epi, &mut want).unwrap();
    let mut y = vec![f32::NAN; g.output_len()];
    let images = split_rows(p.n, speeds, 1);
    let reports = conv2d_split(parts, &images, &Conv2dOp { g: &g, input: &x, weight: &w, epi }, &mut y).unwrap();
    let (err, at) = max_error(&y, &want);
    assert!(err <= gpu_tolerance(g.gemm_dims().2), "{speeds:?} {p:?}: error {err:e} at {at:?}");
    reports
}

#[test]
fn split_conv2d_matches_oracle_on_cpu_and_every_vulkan_device() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap().threads(1);
    let mut parts: Vec<&dyn Backend> = vec![&cpu];
    #[cfg(feature = "vulkan")]
    let gpus = gpus();
    #[cfg(feature = "vulkan")]
    parts.extend(gpus.iter().map(|g| g as &dyn Backend));
    let base = Conv2dParams::new(5, 6, 9, 8, 8, 3, 3).pad(Padding::uniform(1));
    for speeds in proportions(parts.len()) {
        check_conv(&parts, &speeds, base);
        check_conv(&parts, &speeds, base.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc).stride(2, 1));
        check_conv(&parts, &speeds, Conv2dParams::new(3, 8, 7, 7, 8, 3, 3).groups(8));
    }
}

#[test]
fn a_device_failing_mid_conv_split_has_its_part_rerun() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap().threads(1);
    let parts: [&dyn Backend; 2] = [&cpu, &Failing];
    let reports = check_conv(&parts, &[1.0, 1.0], Conv2dParams::new(4, 3, 6, 6, 4, 3, 3));
    assert!(reports[1].failed == Some(lost()) && reports[0].failed.is_none(), "{reports:?}");
}

#[test]
fn conv_split_ranges_must_cover_the_batch() {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap();
    let parts: [&dyn Backend; 2] = [&cpu, &cpu];
    let g = Conv2dParams::new(4, 2, 5, 5, 2, 3, 3).validate().unwrap();
    let (x, w) = (vec![1.0; g.input_len()], vec![1.0; g.weight_len()]);
    let mut y = vec![0.0; g.output_len()];
    // A gap, past the batch, and fewer ranges than devices.
    let whole = std::iter::once(0..4).collect::<Vec<_>>();
    let bad: [&[std::ops::Range<usize>]; 3] = [&[0..2, 3..4], &[0..2, 2..5], &whole];
    for ranges in bad {
        let op = Conv2dOp { g: &g, input: &x, weight: &w, epi: Epilogue::NONE };
        assert!(conv2d_split(&parts, ranges, &op, &mut y).is_err(), "{ranges:?}");
    }
}
