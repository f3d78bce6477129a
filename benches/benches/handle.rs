//! The cost of placement: a mixed sequence of GEMM and conv2d calls (the demo's small layers and
//! square/skinny GEMMs) through one `Sparkle` handle with `auto` placement, beside the same
//! sequence on the CPU path directly, in one run. Where the CPU is the right answer (a machine
//! whose only Vulkan device is lavapipe, or none), auto must be within 2% of always-CPU.
//!
//! `cargo bench -p sparkle-benches --bench handle`

use criterion::{criterion_group, criterion_main, Criterion};
use sparkle_core::{Activation, Conv2d, Epilogue, MatMut, MatRef};
use sparkle_std::cpu::Cpu;
use sparkle_std::demo::{fill, layers, Layers};
use sparkle_std::Sparkle;

enum Op {
    Gemm { m: usize, n: usize, k: usize, a: Vec<f32>, b: Vec<f32> },
    Conv { g: Conv2d, x: Vec<f32>, w: Vec<f32>, bias: Vec<f32> },
}

fn ops() -> Vec<Op> {
    let mut out = Vec::new();
    for (i, (m, n, k)) in
        [(64, 64, 64), (256, 256, 256), (1024, 32, 256), (32, 512, 512), (128, 128, 1024)].into_iter().enumerate()
    {
        let (mut a, mut b) = (vec![0.0; m * k], vec![0.0; k * n]);
        fill(&mut a, i as u64);
        fill(&mut b, i as u64 + 50);
        out.push(Op::Gemm { m, n, k, a, b });
    }
    for (i, (_, p)) in layers(Layers::Small).into_iter().enumerate() {
        let g = p.validate().unwrap();
        let (mut x, mut w, mut bias) = (vec![0.0; g.input_len()], vec![0.0; g.weight_len()], vec![0.0; p.k]);
        fill(&mut x, i as u64 + 100);
        fill(&mut w, i as u64 + 200);
        fill(&mut bias, i as u64 + 300);
        out.push(Op::Conv { g, x, w, bias });
    }
    out
}

fn mixed(c: &mut Criterion) {
    let ops = ops();
    let cpu = Cpu::new().unwrap();
    // The model is learned in memory, as a fresh process would (warm-up included in criterion's).
    let sparkle = Sparkle::builder().in_memory_model().build().unwrap();
    let mut outs: Vec<Vec<f32>> = ops
        .iter()
        .map(|op| match op {
            Op::Gemm { m, n, .. } => vec![0.0; m * n],
            Op::Conv { g, .. } => vec![0.0; g.output_len()],
        })
        .collect();
    let mut group = c.benchmark_group("mixed_sequence");
    group.sample_size(20);
    group.bench_function("always_cpu", |bench| {
        bench.iter(|| {
            for (op, out) in ops.iter().zip(outs.iter_mut()) {
                match op {
                    Op::Gemm { m, n, k, a, b } => {
                        let (av, bv) = (MatRef::row_major(a, *m, *k).unwrap(), MatRef::row_major(b, *k, *n).unwrap());
                        cpu.gemm(1.0, av, bv, 0.0, MatMut::row_major(out, *m, *n).unwrap(), &Epilogue::NONE).unwrap();
                    }
                    Op::Conv { g, x, w, bias } => {
                        let epi = Epilogue::activation(Activation::Relu).with_bias(bias);
                        cpu.conv2d(g, x, w, &epi, out).unwrap();
                    }
                }
            }
        })
    });
    group.bench_function("sparkle_auto", |bench| {
        bench.iter(|| {
            for (op, out) in ops.iter().zip(outs.iter_mut()) {
                match op {
                    Op::Gemm { m, n, k, a, b } => {
                        let (av, bv) = (MatRef::row_major(a, *m, *k).unwrap(), MatRef::row_major(b, *k, *n).unwrap());
                        sparkle
                            .gemm(1.0, av, bv, 0.0, MatMut::row_major(out, *m, *n).unwrap(), &Epilogue::NONE)
                            .unwrap();
                    }
                    Op::Conv { g, x, w, bias } => {
                        let epi = Epilogue::activation(Activation::Relu).with_bias(bias);
                        sparkle.conv2d(g, x, w, &epi, out).unwrap();
                    }
                }
            }
        })
    });
    group.finish();
    // The fixed cost of placing one op (decide, time, learn, report), on an op too small to hide it.
    let mut group = c.benchmark_group("one_16x16x16_gemm");
    let (a, b) = (vec![0.5f32; 256], vec![0.25f32; 256]);
    let mut out = vec![0.0f32; 256];
    group.bench_function("cpu", |bench| {
        bench.iter(|| {
            let (av, bv) = (MatRef::row_major(&a, 16, 16).unwrap(), MatRef::row_major(&b, 16, 16).unwrap());
            cpu.gemm(1.0, av, bv, 0.0, MatMut::row_major(&mut out, 16, 16).unwrap(), &Epilogue::NONE).unwrap();
        })
    });
    group.bench_function("sparkle_auto", |bench| {
        bench.iter(|| {
            let (av, bv) = (MatRef::row_major(&a, 16, 16).unwrap(), MatRef::row_major(&b, 16, 16).unwrap());
            sparkle.gemm(1.0, av, bv, 0.0, MatMut::row_major(&mut out, 16, 16).unwrap(), &Epilogue::NONE).unwrap();
        })
    });
    group.finish();
    println!("sparkle auto placed on: {:?}", sparkle.devices());
}

criterion_group!(benches, mixed);
criterion_main!(benches);
