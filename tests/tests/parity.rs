//! Cross-backend parity: the same cases, written once, run on every backend (threaded CPU and
//! each Vulkan device; Mesa's lavapipe in CI) against the f64 oracle.

use sparkle_core::check::{gpu_tolerance, max_error};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, MatMut, MatRef, Padding, TensorLayout, WeightLayout};
use sparkle_std::backend::{Backend, Conv2dOp, GemmOp};
use sparkle_tests::fill;

fn gemm_cases(be: &dyn Backend) {
    // Multiples of 4 reach the Vulkan vec4 kernel (128x128 tiles) in every layout, with edges of
    // m, n and k inside a tile; the others take the general kernel.
    let sizes = [
        (1, 1, 1),
        (7, 5, 3),
        (64, 64, 64),
        (65, 63, 17),
        (130, 70, 129),
        (3, 200, 1),
        (33, 1, 300),
        (132, 260, 68),
        (129, 132, 8),
        (256, 4, 260),
        (64, 68, 520),
    ];
    // The fifth: row-major with no epilogue beyond alpha (the shaders' whole-vec4 store of C).
    let layouts =
        [(false, false, false), (true, false, true), (false, true, false), (true, true, true), (false, false, false)];
    for (idx, &(m, n, k)) in sizes.iter().enumerate() {
        for (li, &(ta, tb, c_col)) in layouts.iter().enumerate() {
            let plain = li == 4;
            let act = if plain { Activation::None } else { Activation::ALL[(idx + li) % Activation::ALL.len()] };
            let (alpha, beta) = if plain {
                (0.5, 0.0)
            } else if li % 2 == 0 {
                (1.0, 0.0)
            } else {
                (-0.75, 1.5)
            };
            let mut a = vec![0.0; m * k];
            let mut b = vec![0.0; k * n];
            let mut c = vec![0.0; m * n];
            let mut bias = vec![0.0; m.max(n)];
            fill(&mut a, 1 + idx as u64);
            fill(&mut b, 2 + idx as u64);
            fill(&mut c, 3 + idx as u64);
            fill(&mut bias, 4);
            if beta == 0.0 {
                c.iter_mut().for_each(|v| *v = f32::NAN);
            }
            let av = if ta { MatRef::col_major(&a, m, k) } else { MatRef::row_major(&a, m, k) }.unwrap();
            let bv = if tb { MatRef::col_major(&b, k, n) } else { MatRef::row_major(&b, k, n) }.unwrap();
            let bias = match (idx + li) % 3 {
                _ if plain => Bias::None,
                0 => Bias::None,
                1 => Bias::Row(&bias[..m]),
                _ => Bias::Col(&bias[..n]),
            };
            let epi = Epilogue { bias, activation: act };
            let c0 = c.clone();
            let c0v = if c_col { MatRef::col_major(&c0, m, n) } else { MatRef::row_major(&c0, m, n) }.unwrap();
            let mut want = vec![0.0; m * n];
            gemm_reference_f64(alpha, av, bv, beta, Some(c0v), &epi, &mut want).unwrap();
            let cv = if c_col { MatMut::col_major(&mut c, m, n) } else { MatMut::row_major(&mut c, m, n) }.unwrap();
            be.gemm(&GemmOp { alpha, a: av, b: bv, beta, epi }, cv).unwrap();
            let got: Vec<f32> = (0..m * n).map(|x| if c_col { c[(x % n) * m + x / n] } else { c[x] }).collect();
            let (err, at) = max_error(&got, &want);
            assert!(
                err <= gpu_tolerance(k),
                "{}: gemm {m}x{n}x{k} {ta} {tb} {c_col} {act:?}: error {err:e} at {at:?}",
                be.name()
            );
        }
    }
}

fn conv_cases(be: &dyn Backend) {
    let base = Conv2dParams::new(2, 6, 13, 11, 8, 3, 3).pad(Padding::new(1, 2, 0, 1));
    let cases = [
        base,
        base.stride(2, 3).dilation(2, 1),
        base.groups(2),
        Conv2dParams::new(1, 5, 9, 9, 5, 5, 5).groups(5).pad(Padding::uniform(4)),
        Conv2dParams::new(3, 7, 6, 6, 9, 1, 1),
        Conv2dParams::new(1, 3, 20, 18, 16, 7, 7).stride(2, 2).pad(Padding::uniform(3)),
        Conv2dParams::new(1, 4, 5, 5, 3, 5, 5),
        // C/groups * R * S a multiple of 4: the Vulkan vec4 kernel (images side by side), and
        // with a long reduction over few outputs, split-K.
        Conv2dParams::new(2, 8, 9, 7, 12, 3, 3).pad(Padding::uniform(1)).stride(2, 1),
        Conv2dParams::new(2, 8, 7, 9, 8, 3, 3).groups(2).dilation(1, 2).pad(Padding::new(2, 0, 1, 1)),
        Conv2dParams::new(1, 32, 6, 5, 8, 3, 3).pad(Padding::uniform(1)),
        // Winograd F(2x2, 3x3): odd output sizes (edge tiles), asymmetric padding; a tile count
        // that is a multiple of 4 (its other layout of the transformed input).
        Conv2dParams::new(2, 8, 9, 7, 12, 3, 3).pad(Padding::new(1, 0, 2, 1)),
        Conv2dParams::new(2, 8, 8, 8, 8, 3, 3).pad(Padding::uniform(1)),
    ];
    for (i, p) in cases.into_iter().enumerate() {
        for (layout, wl) in [
            (TensorLayout::Nchw, WeightLayout::Kcrs),
            (TensorLayout::Nhwc, WeightLayout::Krsc),
            (TensorLayout::Nhwc, WeightLayout::Kcrs),
        ] {
            let p = p.layout(layout).weight_layout(wl);
            let g = p.validate().unwrap();
            let mut x = vec![0.0; g.input_len()];
            let mut w = vec![0.0; g.weight_len()];
            let mut bias = vec![0.0; p.k];
            fill(&mut x, 10 + i as u64);
            fill(&mut w, 20 + i as u64);
            fill(&mut bias, 30);
            let epi = Epilogue { bias: Bias::Row(&bias), activation: Activation::ALL[i % Activation::ALL.len()] };
            let mut want = vec![0.0; g.output_len()];
            conv2d_reference_f64(&g, &x, &w, &epi, &mut want).unwrap();
            let mut y = vec![f32::NAN; g.output_len()];
            be.conv2d(&Conv2dOp { g: &g, input: &x, weight: &w, epi }, &mut y).unwrap();
            let (err, at) = max_error(&y, &want);
            assert!(err <= gpu_tolerance(g.gemm_dims().2), "{}: conv {p:?}: error {err:e} at {at:?}", be.name());
        }
    }
}

fn bad_input(be: &dyn Backend) {
    let a = [0.0f32; 6];
    let mut c = [5.0f32; 4];
    let av = MatRef::row_major(&a, 2, 3).unwrap();
    let op = GemmOp { alpha: 1.0, a: av, b: av, beta: 0.0, epi: Epilogue::NONE };
    assert!(be.gemm(&op, MatMut::row_major(&mut c, 2, 2).unwrap()).is_err());
    let g = Conv2dParams::new(1, 2, 4, 4, 2, 3, 3).validate().unwrap();
    let mut y = vec![5.0; g.output_len()];
    let op = Conv2dOp { g: &g, input: &[0.0; 3], weight: &[0.0; 36], epi: Epilogue::NONE };
    assert!(be.conv2d(&op, &mut y).is_err());
    assert!(c.iter().chain(&y).all(|&v| v == 5.0), "{}: wrote on an error", be.name());
}

macro_rules! parity {
    ($($name:ident => $backends:expr),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn gemm_matches_oracle() {
                for be in $backends { gemm_cases(be.as_ref()) }
            }
            #[test]
            fn conv2d_matches_oracle() {
                for be in $backends { conv_cases(be.as_ref()) }
            }
            #[test]
            fn bad_input_is_an_error() {
                for be in $backends { bad_input(be.as_ref()) }
            }
        }
    )*};
}

fn cpu() -> Vec<Box<dyn Backend>> {
    let cpu = sparkle_std::cpu::Cpu::new().unwrap();
    vec![Box::new(cpu.threads(1)), Box::new(sparkle_std::cpu::Cpu { parallel_min_fmas: 0.0, ..cpu.threads(2) })]
}

/// Every Vulkan device three times: with the vec4 kernel wherever the layout allows it and
/// Winograd wherever it applies, with the general kernel only, and wanting 16 tiles (so split-K
/// runs wherever the reduction is long enough): each case runs through every path whatever the
/// device's own tuning says.
#[cfg(feature = "vulkan")]
fn vulkan() -> Vec<Box<dyn Backend>> {
    match sparkle_vk::devices() {
        Ok(devs) if !devs.is_empty() => devs
            .iter()
            .flat_map(|d| {
                [(0, 0), (u32::MAX, u32::MAX), (16, u32::MAX)].map(|(min_vec4_tiles, min_winograd_tiles)| {
                    let ctx = sparkle_vk::Context::new(d.index).expect("open device");
                    ctx.set_tuning(sparkle_vk::Tuning { min_vec4_tiles, min_winograd_tiles });
                    Box::new(ctx) as Box<dyn Backend>
                })
            })
            .collect(),
        Ok(_) => {
            sparkle_tests::skip("VULKAN", "no Vulkan device with a compute queue");
            Vec::new()
        }
        Err(e) => {
            sparkle_tests::skip("VULKAN", &format!("no Vulkan: {e}"));
            Vec::new()
        }
    }
}

parity! {
    cpu_backend => cpu(),
}

#[cfg(feature = "vulkan")]
parity! {
    vulkan_backend => vulkan(),
}
