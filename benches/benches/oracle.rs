//! The oracle's speed, as the floor every fast kernel is measured against.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sparkle_core::gemm::reference::gemm_reference;
use sparkle_core::{Epilogue, MatMut, MatRef};
use sparkle_std::demo::fill;

fn gemm_oracle(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference_gemm_f32");
    for n in [32usize, 64, 128] {
        let mut a = vec![0.0; n * n];
        let mut b = vec![0.0; n * n];
        fill(&mut a, 1);
        fill(&mut b, 2);
        let mut out = vec![0.0; n * n];
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_function(format!("{n}x{n}x{n}"), |bench| {
            bench.iter(|| {
                let av = MatRef::row_major(&a, n, n).unwrap();
                let bv = MatRef::row_major(&b, n, n).unwrap();
                let cv = MatMut::row_major(&mut out, n, n).unwrap();
                gemm_reference(1.0, av, bv, 0.0, cv, &Epilogue::NONE).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, gemm_oracle);
criterion_main!(benches);
