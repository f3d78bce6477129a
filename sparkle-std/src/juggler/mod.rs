//! The juggler: predicts each op's time on each device, picks the device that finishes it first,
//! learns from measured runtimes, falls back to the next device when one fails, and persists what
//! it learned.
//!
//! - [`model`]: op features (kind, conv variant, shape band, exact-shape footprint) and a cost
//!   model per (device, kind, variant, band) that predicts shapes it has never seen (prior
//!   roofline plus efficiency learned per size bucket, robust to spikes, forgetting slowly).
//! - [`policy`]: the decision (earliest expected completion; a shape that ran on a device is
//!   predicted there from its own runs; the bus learned from copy-bound runs; budgeted
//!   exploration), fallback with backoff, and the [`clock::Clock`] it runs on (injected, so
//!   tests are deterministic).
//! - [`store`]: the model on disk, atomic, checksummed, fingerprinted.
//! - [`replay`]: the replay benchmark against the oracle, fixed rules, StarPU's `dmda` (ported
//!   from its sources in `baselines.rs`, with its history and its regression model) and
//!   epsilon-greedy on recorded runtimes of GEMMs and conv layers, over seeds, with held-out
//!   metrics.
#![forbid(unsafe_code)]

mod baselines;
pub mod clock;
pub mod model;
pub mod policy;
pub mod replay;
pub mod store;

pub use clock::{Clock, FakeClock, SystemClock};
pub use model::{CostModel, OpDesc, OpKind, Prior};
pub use policy::{Decision, DeviceId, Juggler};
