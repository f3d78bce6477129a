//! Criterion benches and side-by-side peer comparisons of Sparkle's kernels.
#![deny(missing_docs)]
