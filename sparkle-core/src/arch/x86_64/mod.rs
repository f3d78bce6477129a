//! x86_64 kernels: AVX2+FMA and AVX-512F instantiations of the one kernel body.

pub(crate) mod amx;
mod avx2;
mod avx512;
pub(crate) mod detect;

pub use avx2::{Avx2, AVX2_KERNELS};
pub use avx512::{Avx512, AVX512_KERNELS};
