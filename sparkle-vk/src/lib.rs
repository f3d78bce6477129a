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
//! - [`Context::gemm_half`] and [`Context::conv2d_half`]: f16 or bf16 inputs, f32 sums and output,
//!   on cooperative matrices (tensor cores, `VK_KHR_cooperative_matrix`) for f16 where the device
//!   offers them ([`DeviceInfo::cooperative_matrix_f16`]; large GEMMs on NVIDIA's workgroup-scope
//!   ones, [`DeviceInfo::cooperative_matrix2_f16`], and bf16 GEMMs of every size where the device
//!   has `VK_KHR_shader_bfloat16`, [`DeviceInfo::cooperative_matrix2_bf16`], bf16 conv2d on
//!   16x16x16 bf16 ones there, [`DeviceInfo::cooperative_matrix_bf16`]), else on the shader
//!   cores (`half`).
//! - [`Context::qgemm`] and [`Context::qconv2d`]: int8 GEMM and conv2d (`u8`/`i8` with zero
//!   points, ONNX or TFLite requantization, bit for bit as the CPU and the integer oracle), on
//!   cooperative matrices where the device offers 16x16x32 int8 ones
//!   ([`DeviceInfo::cooperative_matrix_i8`]), else on the shader cores; the conv gathers its
//!   patches on the device.
//! - Compiled pipelines are cached on disk per device and driver (`SPARKLE_CACHE_DIR` or the
//!   user cache directory); a bad cache file is ignored with a warning.
//! - Resident tensors and asynchronous submission ([`Context::upload`], [`Context::record`],
//!   [`Pending`]): a chain of ops runs on device memory without host round trips; each
//!   submission reports its device time from timestamps.
//! - Kernel choices per device ([`Tuning`]) come from a short autotune on first use, remembered
//!   next to the pipeline cache; so do each of f16, bf16 and int8's tile sizes and split-K
//!   ([`TileRules`], measured on the dtype's first use: [`Context::tile_rules`]).
//! - Every failure is a [`VkError`], never a panic: no loader, no device, out of memory and
//!   device lost are distinct so callers can fall back to another device.
//!
//! Layout, bottom to top (no module imports one above it): `error`; `coopmat2` (the raw Vulkan
//! that `VK_NV_cooperative_matrix2` and `VK_KHR_shader_bfloat16` need and vulkano 0.35 lacks); `device` (discovery,
//! [`DeviceInfo`]); `cache` (the on-disk pipeline cache); `params` (the push-constant ABI) and
//! `plan` (which shader, how many workgroups, what workspace: pure, tested without a GPU);
//! `pool` (buffers, workspaces, staging copies), `shaders` (pipelines and dispatch) and `submit`
//! (chained submissions), each owned by [`Context`] (`context`); then the ops: `ops` (host
//! slices), `half` (f16/bf16 GEMM and conv2d), `quant` (int8 GEMM), `qconv` (int8 conv2d), `staging` (the input of the convs that gather it in chunks), `resident` (tensors and recordings), `winograd`,
//! `tune`, `smoke`.
#![deny(missing_docs)]

mod cache;
mod context;
mod coopmat2;
mod device;
mod error;
mod half;
mod ops;
mod params;
mod plan;
mod pool;
mod precision;
mod qconv;
mod quant;
mod resident;
mod shaders;
mod smoke;
mod staging;
mod submit;
mod tune;
mod winograd;

pub use context::Context;
pub use device::{devices, DeviceInfo};
pub use error::{Result, VkError};
pub use resident::{Download, Pending, Recording, Tensor, TensorBias, TensorMat, Timing};
pub use tune::{TileDtype, TileRules, Tuning};
