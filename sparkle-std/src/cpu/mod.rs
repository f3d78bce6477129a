//! The CPU backend on std: run-time ISA dispatch, cache-derived blocking refined by measurement
//! ([`tune`]), and threads (rayon) around the core's `no_std` GEMM and conv2d drivers.

pub mod backend;
pub mod caches;
pub mod isa;
pub mod peak;
pub mod tune;
mod workers;

pub use backend::{conv2d, gemm, Cpu, CpuError};

/// The CPU's marketing name (Linux: `model name` of /proc/cpuinfo), or the architecture.
pub fn brand() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
