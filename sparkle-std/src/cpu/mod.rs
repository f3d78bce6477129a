//! The CPU backend on std: run-time ISA dispatch, cache-derived blocking, and threads (rayon)
//! around the core's `no_std` GEMM driver.

pub mod caches;
pub mod gemm;
pub mod isa;
pub mod peak;

pub use gemm::{gemm, Gemm};
