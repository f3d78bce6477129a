//! # sparkle-std
//!
//! Sparkle on `std`: the threaded CPU path, runtime ISA dispatch, the juggler, and the
//! `sparkle` command-line tool. Re-exports the core and the Vulkan backend.
#![deny(missing_docs)]
// No unsafe but one line: the rayon executor's promise to the core (cpu/backend.rs opts in).
#![deny(unsafe_code)]

pub use sparkle_core as core;
#[cfg(feature = "vulkan")]
pub use sparkle_vk as vk;

pub mod backend;
pub mod budget;
pub mod cpu;
pub mod demo;
pub mod files;
pub mod juggler;
pub mod multi;
#[cfg(feature = "npy")]
pub mod npy;
#[cfg(feature = "vulkan")]
pub mod stream;
