//! aarch64 kernels: the NEON instantiation of the one kernel body.

mod neon;

pub use neon::{Neon, NEON_KERNELS};
