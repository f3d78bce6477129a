#!/usr/bin/env bash
# Command 2 of the README: set up (idempotent), then run the whole test suite: formatting, lints,
# the no_std builds for Cortex-M4F and M0, and every test (Vulkan ones on lavapipe where no GPU).
# CI runs this with SPARKLE_REQUIRE_VULKAN=1 and SPARKLE_REQUIRE_AVX512=1 so nothing skips silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
for t in thumbv7em-none-eabihf thumbv6m-none-eabi; do
  step "sparkle-core for $t (no_std)"
  cargo build -q -p sparkle-core --target "$t" --release
done
step "cargo test"
cargo test --workspace
