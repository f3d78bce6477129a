//! The measured FMA peak of this CPU: independent FMA chains on the widest vectors this CPU runs,
//! on one thread and on all. Every GFLOPS figure Sparkle reports is put beside this number.
#![allow(unsafe_code)]

use std::time::Instant;

use sparkle_core::arch::Simd;
#[cfg(target_arch = "x86_64")]
use {super::isa::supported, sparkle_core::arch::Isa};

/// Independent accumulator chains: enough to cover FMA latency x throughput on current cores
/// (4-cycle latency x 2 pipes = 8; 12 leaves margin).
const CHAINS: usize = 12;

#[inline(always)]
unsafe fn chains<S: Simd>(iters: u64) -> f32 {
    // SAFETY: (whole body) the caller runs on a CPU with S's ISA.
    unsafe {
        let mut acc = [S::zero(); CHAINS];
        let x = S::splat(0.999_999);
        let y = S::splat(1e-7);
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = S::fmadd(*a, x, y);
            }
        }
        let mut out = [0.0f32; 16];
        let mut sum = S::zero();
        for a in acc {
            sum = S::add(sum, a);
        }
        S::store(out.as_mut_ptr(), sum);
        out[0]
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64) -> f32 {
    // SAFETY: AVX-512F is enabled for this function and checked by the caller.
    unsafe { chains::<sparkle_core::arch::x86_64::Avx512>(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64) -> f32 {
    // SAFETY: AVX2 and FMA are enabled for this function and checked by the caller.
    unsafe { chains::<sparkle_core::arch::x86_64::Avx2>(iters) }
}

/// Runs `iters` iterations on the widest ISA available; returns (flops, a value to keep alive).
fn run(iters: u64) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if supported(Isa::Avx512) {
            // SAFETY: AVX-512F detected at run time.
            let v = unsafe { chains_avx512(iters) };
            return ((iters * CHAINS as u64 * 16 * 2) as f64, v);
        }
        if supported(Isa::Avx2) {
            // SAFETY: AVX2 and FMA detected at run time.
            let v = unsafe { chains_avx2(iters) };
            return ((iters * CHAINS as u64 * 8 * 2) as f64, v);
        }
    }
    // SAFETY: the scalar ISA runs everywhere.
    let v = unsafe { chains::<sparkle_core::arch::generic::Scalar>(iters) };
    ((iters * CHAINS as u64 * 2) as f64, v)
}

/// GFLOPS of FMA on `threads` threads at once (best of a few runs of about 50 ms).
pub fn peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let iters = 20_000_000 / CHAINS as u64;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let flops: f64 = match &pool {
            Some(pool) if threads > 1 => {
                pool.broadcast(|_| std::hint::black_box(run(std::hint::black_box(iters))).0).iter().sum()
            }
            _ => std::hint::black_box(run(std::hint::black_box(iters))).0,
        };
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}
