//! The CPU backend on std: run-time ISA dispatch, cache-derived blocking, and threads (rayon)
//! around the core's `no_std` GEMM and conv2d drivers.

pub mod backend;
pub mod caches;
pub mod isa;
pub mod peak;

pub use backend::{conv2d, gemm, Cpu, CpuError};
