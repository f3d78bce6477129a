#!/usr/bin/env bash
# Command 1 of the README: set up (idempotent), then run the main job.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo run --release -q -p sparkle-std --bin sparkle -- demo "$@"
