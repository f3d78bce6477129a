//! Small arbitrary conv2d geometries (every parameter, both layouts, every path) through a CPU
//! kernel set this machine runs (the input picks which), against the f64 oracle.
//!
//! Checked: every output element is written and finite (the output starts as NaN; the oracle is
//! finite for these inputs), and up to `SAMPLES` points (all of a small output; always the first
//! and last) equal the f64 oracle within the tolerance table. The oracle runs for the sampled
//! points only (`conv2d_reference_f64_at`), which keeps this target above 5,000 runs/s.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparkle_core::check::{error, tolerance};
use sparkle_core::conv::reference::conv2d_reference_f64_at;
use sparkle_core::{Activation, Conv2dParams, Epilogue, Padding, TensorLayout, WeightLayout};
use sparkle_std::cpu::isa::available_kernels;
use sparkle_std::cpu::Cpu;

#[derive(Arbitrary, Debug)]
struct Input {
    dims: [u8; 7],
    stride: [u8; 2],
    dilation: [u8; 2],
    pad: [u8; 4],
    groups: u8,
    depthwise: bool,
    nhwc: bool,
    krsc: bool,
    act: u8,
    bias: bool,
    threads: bool,
    kernel: u8,
    seed: u32,
}

fuzz_target!(|x: Input| {
    let d = |v: u8, m: u8| usize::from(v % m) + 1;
    let groups = d(x.groups, 3);
    let (c, k, groups) = if x.depthwise {
        let c = d(x.dims[1], 20);
        (c, c, c)
    } else {
        (d(x.dims[1], 5) * groups, d(x.dims[4], 6) * groups, groups)
    };
    let p =
        Conv2dParams::new(d(x.dims[0], 2), c, d(x.dims[2], 14), d(x.dims[3], 14), k, d(x.dims[5], 5), d(x.dims[6], 5))
            .stride(d(x.stride[0], 3), d(x.stride[1], 3))
            .dilation(d(x.dilation[0], 3), d(x.dilation[1], 3))
            .pad(Padding::new(
                usize::from(x.pad[0] % 5),
                usize::from(x.pad[1] % 5),
                usize::from(x.pad[2] % 5),
                usize::from(x.pad[3] % 5),
            ))
            .groups(groups)
            .layout(if x.nhwc { TensorLayout::Nhwc } else { TensorLayout::Nchw })
            .weight_layout(if x.krsc { WeightLayout::Krsc } else { WeightLayout::Kcrs });
    let Ok(g) = p.validate() else { return };
    let input: Vec<f32> = (0..g.input_len()).map(|i| ((i * 7919) % 199) as f32 / 99.0 - 1.0).collect();
    let weight: Vec<f32> = (0..g.weight_len()).map(|i| ((i * 104_729) % 211) as f32 / 105.0 - 1.0).collect();
    let bias: Vec<f32> = (0..p.k).map(|i| i as f32 / 7.0 - 0.5).collect();
    let mut epi = Epilogue::activation(Activation::ALL[usize::from(x.act) % Activation::ALL.len()]);
    if x.bias {
        epi = epi.with_bias(&bias);
    }
    // Sampled output points (n, k, oy, ox) with their f64 truth.
    const SAMPLES: usize = 16;
    let (ho, wo) = (g.ho(), g.wo());
    let at = |i: usize| (i / (p.k * ho * wo), i / (ho * wo) % p.k, i / wo % ho, i % wo);
    let len = g.output_len();
    let mut s = x.seed | 1;
    let points: Vec<usize> = if len <= SAMPLES {
        (0..len).collect()
    } else {
        let mut pts = vec![0, len - 1];
        pts.extend((0..SAMPLES - 2).map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as usize % len
        }));
        pts
    };
    let want: Vec<f64> =
        points.iter().map(|&i| conv2d_reference_f64_at(&g, &input, &weight, &epi, at(i)).unwrap()).collect();
    let kernels = available_kernels();
    let kernel = kernels[usize::from(x.kernel) % kernels.len()];
    let cpu = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kernel).threads(if x.threads { 2 } else { 1 }) };
    let mut y = vec![f32::NAN; len];
    cpu.conv2d(&g, &input, &weight, &epi, &mut y).unwrap();
    let tol = tolerance(g.gemm_dims().2);
    for (&i, &w) in points.iter().zip(&want) {
        let (n, k, oy, ox) = at(i);
        let got = y[g.output_index(n, k, oy, ox)];
        assert!(error(got, w) <= tol, "{}: {got} vs {w} at {:?}: {p:?}", kernel.id(), at(i));
    }
    if let Some(bad) = y.iter().position(|v| !v.is_finite()) {
        panic!("{}: output[{bad}] = {} (never written?): {p:?}", kernel.id(), y[bad]);
    }
});
