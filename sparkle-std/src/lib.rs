//! # sparkle-std
//!
//! Sparkle on `std`. Start with [`Sparkle`]: one handle that places every GEMM and conv2d on the
//! device predicted to finish it first (the threaded CPU path or any Vulkan GPU), learns from
//! what it measures, keeps what it learned across processes, and falls back to the CPU when a
//! device fails, so the result is always complete and correct:
//!
//! ```no_run
//! use sparkle_std::core::{Activation, Conv2dParams, Epilogue, Padding};
//! use sparkle_std::Sparkle;
//!
//! let sparkle = Sparkle::new()?;
//! let g = Conv2dParams::new(1, 64, 56, 56, 64, 3, 3).pad(Padding::uniform(1)).validate()?;
//! let (x, w) = (vec![0.5f32; g.input_len()], vec![0.01f32; g.weight_len()]);
//! let mut y = vec![0.0f32; g.output_len()];
//! let run = sparkle.conv2d(&g, &x, &w, &Epilogue::activation(Activation::Relu), &mut y)?;
//! println!("{} via {}: predicted {:.2} ms, took {:.2} ms", run.device, run.kernel, run.predicted * 1e3, run.seconds * 1e3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For chains of layers, [`Sparkle::upload`] tensors once and run [`Sparkle::conv2d_tensor`] /
//! [`Sparkle::gemm_tensor`] on them: each output stays on the device that made it, placement
//! charges only the copies an op needs, and a device lost mid-chain is recomputed on the CPU
//! ([`sparkle::Tensor`]).
//!
//! Underneath: [`cpu`] (the threaded CPU path and run-time ISA dispatch), [`juggler`] (cost
//! models, placement, fallback, persistence), [`vk`] (Vulkan, re-exported), [`budget`] and
//! [`files`] (memory budgets and atomic files), [`multi`] and [`stream`] (one op or a layer
//! stream over several devices), [`npy`] (NumPy files), [`bench`](mod@bench) (the measurement loops behind
//! `sparkle bench` and the peer comparisons), and the `sparkle` command-line tool.
#![deny(missing_docs)]
// Unsafe in three files only, each opting in: the executor (cpu/workers.rs: its promise to the
// core, and its worker threads running a caller's closure), a fallible calloc (budget.rs) and
// std's feature detection on aarch64 (cpu/isa.rs).
#![deny(unsafe_code)]

pub use sparkle_core as core;
pub use sparkle_files as files;
#[cfg(feature = "vulkan")]
pub use sparkle_vk as vk;

pub use sparkle::{Run, Sparkle, SparkleError, Tensor, TensorBias};

pub mod backend;
pub mod bench;
pub mod budget;
pub mod cpu;
pub mod demo;
pub mod juggler;
pub mod multi;
#[cfg(feature = "npy")]
pub mod npy;
pub mod sparkle;
pub mod stream;
