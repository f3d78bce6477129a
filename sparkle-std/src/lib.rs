//! # sparkle-std
//!
//! Sparkle on `std`: the threaded CPU path, runtime ISA dispatch, the juggler, and the
//! `sparkle` command-line tool. Re-exports the core and the Vulkan backend.
#![deny(missing_docs)]
// Unsafe only where intrinsics are called (cpu/peak.rs opts in); everything else stays safe.
#![deny(unsafe_code)]

pub use sparkle_core as core;
#[cfg(feature = "vulkan")]
pub use sparkle_vk as vk;

pub mod backend;
pub mod cpu;
pub mod demo;
pub mod juggler;
pub mod multi;
#[cfg(feature = "npy")]
pub mod npy;
#[cfg(feature = "vulkan")]
pub mod stream;
