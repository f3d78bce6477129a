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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step "cargo test"
cargo test --workspace 2>&1 | tee -a "$log"
step "aarch64: CPU kernel tests under qemu-aarch64 (NEON for real)"
SPARKLE_REQUIRE_NEON=1 cargo test -p sparkle-tests --no-default-features --target aarch64-unknown-linux-gnu \
  --test gemm_cpu --test oracle --test geometry 2>&1 | tee -a "$log"

# One closing line over every test binary above.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\n%d passed, %d failed, %d skipped\n", p, f, i }' "$log"
