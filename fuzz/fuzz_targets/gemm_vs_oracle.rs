//! Small arbitrary GEMMs (sizes, strides, transposes, alpha/beta, epilogue, threads) through
//! every CPU kernel this machine runs, against the f64 oracle. beta = 0 must never read C.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::gemm::reference::gemm_reference_f64;
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
    seed: u32,
}

fuzz_target!(|x: Input| {
    let (m, n, k) = (usize::from(x.m % 40), usize::from(x.n % 70), usize::from(x.k % 70));
    let pad = usize::from(x.pad % 3);
    let (alpha, beta) = (f32::from(x.alpha) / 32.0, f32::from(x.beta) / 32.0);
    let (a_rs, a_cs) = if x.ta { (1, m + pad) } else { (k + pad, 1) };
    let (b_rs, b_cs) = if x.tb { (1, k + pad) } else { (n + pad, 1) };
    let (c_rs, c_cs) = if x.c_col { (1, m + pad) } else { (n + pad, 1) };
    let len =
        |r: usize, c: usize, rs: usize, cs: usize| if r == 0 || c == 0 { 0 } else { (r - 1) * rs + (c - 1) * cs + 1 };
    let mut s = x.seed | 1;
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
    let mut want = vec![0.0f64; m * n];
    gemm_reference_f64(alpha, av, bv, beta, Some(MatRef::new(&c0, m, n, c_rs, c_cs).unwrap()), &epi, &mut want)
        .unwrap();
    for kernel in available_kernels() {
        let mut cpu = Cpu { parallel_min_fmas: 0.0, ..Cpu::with_kernel(kernel).threads(if x.threads { 2 } else { 1 }) };
        if x.small_blocks {
            cpu.blocking = Blocking { mc: 2 * kernel.mr, kc: 8, nc: 2 * kernel.nr };
        }
        let mut c = c0.clone();
        cpu.gemm(alpha, av, bv, beta, MatMut::new(&mut c, m, n, c_rs, c_cs).unwrap(), &epi).unwrap();
        let got: Vec<f32> = (0..m * n).map(|i| c[(i / n) * c_rs + (i % n) * c_cs]).collect();
        let (err, at) = max_error(&got, &want);
        assert!(err <= tolerance(k), "{}: error {err:e} at {at:?}: {x:?}", kernel.id);
    }
});
