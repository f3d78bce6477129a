//! criterion benches of every GEMM kernel this CPU runs (ids `{isa}_gemm_f32_{mr}x{nr}`), one
//! thread, after checking each against the f64 oracle. The side-by-side comparison with peers
//! is `cargo run --release -p sparkle-benches --bin peers -- gemm` (src/bin/peers.rs).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::gemm::reference::gemm_reference_f64;
use sparkle_core::{Epilogue, MatMut, MatRef};
use sparkle_std::cpu::isa::available_kernels;
use sparkle_std::cpu::Cpu;
use sparkle_std::demo::fill;

fn kernels(c: &mut Criterion) {
    for kernel in available_kernels() {
        let gemm = Cpu::with_kernel(kernel).threads(1);
        let mut group = c.benchmark_group(kernel.id());
        for n in [64usize, 256, 512] {
            let mut a = vec![0.0; n * n];
            let mut b = vec![0.0; n * n];
            fill(&mut a, 1);
            fill(&mut b, 2);
            let mut out = vec![0.0; n * n];
            let run = |out: &mut [f32]| {
                let av = MatRef::row_major(&a, n, n).unwrap();
                let bv = MatRef::row_major(&b, n, n).unwrap();
                gemm.gemm(1.0, av, bv, 0.0, MatMut::row_major(out, n, n).unwrap(), &Epilogue::NONE).unwrap();
            };
            run(&mut out);
            if n <= 256 {
                let mut want = vec![0.0; n * n];
                let (av, bv) = (MatRef::row_major(&a, n, n).unwrap(), MatRef::row_major(&b, n, n).unwrap());
                gemm_reference_f64(1.0, av, bv, 0.0, None, &Epilogue::NONE, &mut want).unwrap();
                let (err, at) = max_error(&out, &want);
                assert!(err <= tolerance(n), "{} wrong at {at:?}: {err:e}", kernel.id());
            }
            group.throughput(Throughput::Elements((2 * n * n * n) as u64));
            group.bench_function(format!("{n}x{n}x{n}"), |bench| bench.iter(|| run(&mut out)));
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
