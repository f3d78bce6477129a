//! The measured FMA peak of this CPU: the core's FMA burst ([`sparkle_core::arch::peak`]) on the
//! widest vectors this CPU runs, timed on one thread and on all. Every GFLOPS figure Sparkle
//! reports is put beside this number.

use std::time::Instant;

use sparkle_core::arch::peak::fma_burst;
use sparkle_core::arch::Kernel;

/// GFLOPS of FMA on `threads` threads at once (best of five runs).
pub fn peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let kernel = Kernel::best();
    // About 640 MFLOP per thread on AVX-512 (1.7M rounds of 12 chains of 16-lane FMAs): a few
    // milliseconds, long enough to time, short enough to run at start-up.
    let iters = 1_666_666;
    let run = || std::hint::black_box(fma_burst(kernel, std::hint::black_box(iters))).0;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let flops: f64 = match &pool {
            Some(pool) if threads > 1 => pool.broadcast(|_| run()).iter().sum(),
            _ => run(),
        };
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}
