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
//! - [`quant`]: int8 GEMM (`u8`/`i8` with zero points, exact `i32` sums) and its output stages
//!   (ONNX QLinear*, TFLite/CMSIS-NN fixed point), with an exact integer oracle.
//! - [`check`]: the one error measure and tolerance table for comparing with the oracle.
//! - `*::reference`: the oracle. Naive, safe, and the ruler every other kernel is checked
//!   against (with f64-accumulating twins for ground truth).
//!
//! ## Conventions
//! Element `(i, j)` of a view is at `i * rs + j * cs`. Sizes follow BLIS (`m, n, k`) for GEMM and
//! the names people know (`n, c, h, w, k, r, s`) for conv. Every error is an [`Error`] carrying
//! the numbers that were wrong.
//!
//! ## Where `unsafe` is, and why the safe API is sound
//! `unsafe` is denied crate-wide and allowed only in the modules that touch raw panels and
//! kernels, each opting in: [`arch`] (the SIMD kernels and CPU detection), the GEMM's packing,
//! loop nest, streamed few-row path and split reduction (`gemm/pack.rs`, [`gemm::driver`],
//! `gemm/small.rs`, `gemm/split_k.rs`), the conv paths that hand operands to the same driver
//! ([`conv::operands`], [`conv::fused`], [`conv::direct`] with its `rows`, [`conv::winograd`]), bf16 ([`bf16`])
//! and int8 ([`quant::driver`], [`quant::conv`] with its `depthwise_nhwc`, `quant/packed.rs`,
//! `quant/pairs.rs`). The
//! safe entry points that reach them are [`gemm::gemm`], [`gemm::driver::gemm_with`],
//! [`conv::conv2d`], [`conv::fused::conv2d_with`], [`conv::operands::pack_im2col_panels`],
//! [`quant::driver::qgemm_with`], [`quant::conv::qconv2d_with`] and [`arch::peak::fma_burst`]. Each validates everything the unsafe code relies on before calling
//! an `_unchecked` twin: views against their slices and each other (no self-aliasing C), shapes,
//! epilogue lengths, non-zero blocking, scratch length with checked arithmetic. The two things it
//! cannot check are proved by types: a [`arch::Kernel`] (or [`arch::quant::QKernel`]) exists only on a CPU that runs its ISA,
//! and an [`gemm::driver::Executor`] is an `unsafe trait` whose implementer promises each worker
//! index once. The drivers read `workers()` once (zero is an error), size the scratch and split
//! the work by that number, and ignore any index past it.
//!
//! ## Features
//! - `alloc` (off by default, additive): conveniences that allocate. Nothing requires it.
//!
//! MSRV: see the workspace `rust-version`.
#![no_std]
#![deny(missing_docs)]
// Unsafe is confined to the modules listed under "Where `unsafe` is" above, each of which opts in.
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod accum;
pub mod arch;
pub mod bf16;
pub mod check;
pub mod conv;
pub mod epilogue;
pub mod error;
pub mod f16;
pub mod gemm;
pub mod layout;
pub mod precision;
pub mod quant;
pub mod view;

pub use conv::{Conv2d, Conv2dParams, Padding};
pub use epilogue::{Activation, Bias, Epilogue};
pub use error::{Error, Param, Result};
pub use gemm::GemmDims;
pub use layout::{TensorLayout, WeightLayout};
pub use precision::Precision;
pub use view::{MatMut, MatRef};
