//! Shared helpers of the cross-backend tests.
#![deny(missing_docs)]

pub use sparkle_std::demo::fill;

mod skip;
pub use skip::{required, skip};
