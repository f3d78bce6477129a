//! How long the juggler takes to decide where one op runs (target: p99 < 1 us in release). Was a
//! wall-clock assertion inside the test suite; timing belongs here.
//!
//! `cargo bench -p sparkle-benches --bench juggler`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sparkle_std::juggler::{DeviceId, FakeClock, Juggler, OpDesc, Prior};

const CPU: Prior = Prior { overhead: 2e-6, peak: 2e11, half: 1e6, bandwidth: f64::INFINITY };
const GPU: Prior = Prior { overhead: 20e-6, peak: 4e13, half: 1e9, bandwidth: 2e10 };

fn decide(c: &mut Criterion) {
    let mut j = Juggler::new(FakeClock::default());
    j.add_device(DeviceId::Cpu, CPU, false);
    j.add_device(DeviceId::Vulkan(0), GPU, true);
    let ops: Vec<OpDesc> = (1..200).map(|i| OpDesc::gemm(i * 7, i * 5, i * 3)).collect();
    // Learned buckets on both devices, as in a warm process.
    for op in &ops {
        j.record(DeviceId::Cpu, op, false, op.flops / 1e11, false);
        j.record(DeviceId::Vulkan(0), op, false, 1e-4 + op.flops / 1e13, false);
    }
    let mut group = c.benchmark_group("juggler");
    group.throughput(Throughput::Elements(ops.len() as u64));
    group.bench_function("decide_199_ops_2_devices", |b| {
        b.iter(|| {
            for op in &ops {
                std::hint::black_box(j.decide(std::hint::black_box(op), false));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
