//! # sparkle-vk
//!
//! Sparkle's Vulkan backend, through vulkano 0.35 and GLSL compute shaders compiled at build
//! time (vulkano-shaders). Runs on any vendor's GPU, and on Mesa's lavapipe (CPU) in CI.
//!
//! - [`devices`] lists every device with a compute queue; [`Context`] opens one.
//! - [`Context::gemm`] and [`Context::conv2d`]: tiled compute shaders with the shared epilogue,
//!   validated by the core first: a 128x128 vec4 GEMM kernel (split-K when tiles are few), a
//!   64x64 kernel for any strides, implicit-GEMM and depthwise conv2d, and Winograd F(2x2, 3x3)
//!   for large 3x3 stride-1 convs.
//! - Compiled pipelines are cached on disk per device and driver (`SPARKLE_CACHE_DIR` or the
//!   user cache directory); a bad cache file is ignored with a warning.
//! - Resident tensors and asynchronous submission ([`Context::upload`], [`Context::record`],
//!   [`Pending`]): a chain of ops runs on device memory without host round trips; each
//!   submission reports its device time from timestamps.
//! - Kernel choices per device ([`Tuning`]) come from a short autotune on first use, remembered
//!   next to the pipeline cache.
//! - Every failure is a [`VkError`], never a panic: no loader, no device, out of memory and
//!   device lost are distinct so callers can fall back to another device.
#![deny(missing_docs)]

mod cache;
mod context;
mod error;
mod ops;
mod resident;
mod smoke;
mod tune;
mod winograd;

pub use context::{devices, Context, DeviceInfo};
pub use error::{Result, VkError};
pub use resident::{Download, Pending, Recording, Tensor, TensorBias, TensorMat, Timing};
pub use tune::Tuning;
