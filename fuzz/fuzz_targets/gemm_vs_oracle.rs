//! Small arbitrary GEMMs (sizes, strides, transposes, alpha/beta, epilogue, threads) through a
//! CPU kernel this machine runs (the input picks which, so the fuzzer steers towards each),
//! against the f64 oracle. beta = 0 must never read C.
//!
//! Checked per kernel: every element of C is written and finite where the oracle is (C starts as
//! NaN when beta = 0), nothing outside C's view changes, and up to `SAMPLES` points (all of C when
//! it is that small; always both corners) equal the f64 oracle within the tolerance table. The
//! oracle runs for the sampled points only (`gemm_reference_f64_at`), which keeps this target
//! above 5,000 runs/s.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparkle_core::check::{error, tolerance};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::gemm::reference::gemm_reference_f64_at;
use sparkle_core::{Activation, Bias, Epilogue, MatMut, MatRef};
use sparkle_std::cpu::isa::available_kernels;
use sparkle_std::cpu::Cpu;

#[derive(Arbitrary, Debug)]
struct Input {
    m: u8,
    n: u8,
    k: u8,
    ta: bool,
    tb: bool,
    c_col: bool,
    pad: u8,
    alpha: i8,
    beta: i8,
    act: u8,
    bias: u8,
    threads: bool,
    small_blocks: bool,
    kernel: u8,
    seed: u32,
}

fuzz_target!(|x: Input| {
    let (m, n, k) = (usize::from(x.m % 28), usize::from(x.n % 70), usize::from(x.k % 40));
    let pad = usize::from(x.pad % 3);
    let (alpha, beta) = (f32::from(x.alpha) / 32.0, f32::from(x.beta) / 32.0);
    let (a_rs, a_cs) = if x.ta { (1, m + pad) } else { (k + pad, 1) };
    let (b_rs, b_cs) = if x.tb { (1, k + pad) } else { (n + pad, 1) };
    let (c_rs, c_cs) = if x.c_col { (1, m + pad) } else { (n + pad, 1) };
    let len =
        |r: usize, c: usize, rs: usize, cs: usize| if r == 0 || c == 0 { 0 } else { (r - 1) * rs + (c - 1) * cs + 1 };
    let mut s = x.seed | 1;
    let mut s2 = x.seed.rotate_left(16) | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    let a: Vec<f32> = (0..len(m, k, a_rs, a_cs)).map(|_| rnd()).collect();
    let b: Vec<f32> = (0..len(k, n, b_rs, b_cs)).map(|_| rnd()).collect();
    let c0: Vec<f32> = (0..len(m, n, c_rs, c_cs)).map(|_| if beta == 0.0 { f32::NAN } else { rnd() }).collect();
    let bias_v: Vec<f32> = (0..m.max(n)).map(|_| rnd()).collect();
    let av = MatRef::new(&a, m, k, a_rs, a_cs).unwrap();
    let bv = MatRef::new(&b, k, n, b_rs, b_cs).unwrap();
    let bias = match x.bias % 3 {
        0 => Bias::None,
        1 => Bias::Row(&bias_v[..m]),
        _ => Bias::Col(&bias_v[..n]),
    };
    let epi = Epilogue { bias, activation: Activation::ALL[usize::from(x.act) % Activation::ALL.len()] };
    let c0v = MatRef::new(&c0, m, n, c_rs, c_cs).unwrap();
    // Sampled points of C (i, j) with their f64 truth.
    const SAMPLES: usize = 16;
    let points: Vec<(usize, usize)> = if m * n <= SAMPLES {
        (0..m * n).map(|i| (i / n, i % n)).collect()
    } else {
        let mut pts = vec![(0, 0), (m - 1, n - 1)];
        pts.extend((0..SAMPLES - 2).map(|_| (rnd_idx(&mut s2, m), rnd_idx(&mut s2, n))));
        pts
    };
    let want: Vec<f64> = points
        .iter()
        .map(|&at| gemm_reference_f64_at(alpha, av, bv, beta, Some(c0v), &epi, at).unwrap())
        .collect();
    let mut in_view = vec![false; c0.len()];
    for i in 0..m {
        for j in 0..n {
            in_view[i * c_rs + j * c_cs] = true;
        }
    }
    let kernels = available_kernels();
    {
        let kernel = kernels[usize::from(x.kernel) % kernels.len()];
        let mut cpu = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kernel).threads(if x.threads { 2 } else { 1 }) };
        if x.small_blocks {
            cpu.blocking = Blocking::new(2 * kernel.mr(), 8, 2 * kernel.nr());
        }
        let mut c = c0.clone();
        cpu.gemm(alpha, av, bv, beta, MatMut::new(&mut c, m, n, c_rs, c_cs).unwrap(), &epi).unwrap();
        for (&(i, j), &w) in points.iter().zip(&want) {
            let got = c[i * c_rs + j * c_cs];
            assert!(error(got, w) <= tolerance(k), "{}: {got} vs {w} at ({i}, {j}): {x:?}", kernel.id());
        }
        for (idx, (&now, &before)) in c.iter().zip(&c0).enumerate() {
            if in_view[idx] {
                // NaN from C with beta = 0, or an element never written: the oracle is finite here
                // (inputs in [-1, 1], finite alpha/beta), so the kernel must be too.
                assert!(now.is_finite(), "{}: C[{idx}] = {now}: {x:?}", kernel.id());
            } else {
                assert_eq!(now.to_bits(), before.to_bits(), "{}: wrote outside C at {idx}: {x:?}", kernel.id());
            }
        }
    }
});

fn rnd_idx(s: &mut u32, n: usize) -> usize {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    *s as usize % n
}
