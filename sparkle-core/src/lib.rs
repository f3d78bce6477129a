//! # sparkle-core
//!
//! The portable heart of Sparkle: `#![no_std]`, no heap needed, runs on a Cortex-M4 as well as
//! on a server.
//!
//! - [`view`]: strided matrix views ([`MatRef`], [`MatMut`]) validated against their slices.
//! - [`gemm`]: `C <- act(alpha * A * B + beta * C + bias)`; `beta == 0` never reads C.
//! - [`conv`]: conv2d geometry (stride, asymmetric padding, dilation, groups, NCHW/NHWC
//!   activations, KCRS/KRSC weights) with checked arithmetic, and its index math.
//! - [`epilogue`]: bias + activation shared by every backend.
//! - [`tile`]: exact-cover partitions of an output for threads and workgroups.
//! - [`check`]: the one error measure and tolerance table for comparing with the oracle.
//! - `*::reference`: the oracle. Naive, safe, and the ruler every other kernel is checked
//!   against (with f64-accumulating twins for ground truth).
//!
//! ## Conventions
//! Element `(i, j)` of a view is at `i * rs + j * cs`. Sizes follow BLIS (`m, n, k`) for GEMM and
//! the names people know (`n, c, h, w, k, r, s`) for conv. Every error is an [`Error`] carrying
//! the numbers that were wrong.
//!
//! ## Features
//! - `alloc` (off by default, additive): conveniences that allocate. Nothing requires it.
//!
//! MSRV: see the workspace `rust-version`.
#![no_std]
#![deny(missing_docs)]
// Unsafe is confined to arch/, gemm/pack.rs and gemm/driver.rs, each of which opts in.
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod accum;
pub mod arch;
pub mod check;
pub mod conv;
pub mod epilogue;
pub mod error;
pub mod gemm;
pub mod layout;
pub mod tile;
pub mod view;

pub use conv::{Conv2d, Conv2dParams, Padding};
pub use epilogue::{Activation, Bias, Epilogue};
pub use error::{Error, Param, Result};
pub use gemm::GemmDims;
pub use layout::{TensorLayout, WeightLayout};
pub use tile::{Tile, Tiling};
pub use view::{MatMut, MatRef};
