#!/usr/bin/env bash
# Command 2 of the README: set up (idempotent), then run the whole test suite: formatting, lints,
# the no_std builds for Cortex-M4F and M0, and every test (Vulkan ones on lavapipe where no GPU).
# CI runs this with SPARKLE_REQUIRE_VULKAN=1 and SPARKLE_REQUIRE_<ISA>=1 for every ISA the CPU has
# (.ci/run), so nothing skips silently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh

started=$SECONDS
step() { printf '\n== [%d s] %s\n' "$((SECONDS - started))" "$*"; }
step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -q -p sparkle-std --no-default-features --lib -- -D warnings  # the CPU-only library
step "the committed cooperative-matrix SPIR-V matches its GLSL (scripts/spirv.sh --check)"
scripts/spirv.sh --check
step "no import cycle inside any library crate"
python3 scripts/check_cycles.py sparkle-core sparkle-files sparkle-vk sparkle-std
step "cargo doc -D warnings (every public item documented, every link resolved)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --no-deps
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
step "the libraries on the minimum supported Rust version ($msrv)"
CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check -q -p sparkle-core -p sparkle-files -p sparkle-vk -p sparkle-std --lib
for t in thumbv7em-none-eabihf thumbv6m-none-eabi; do
  step "sparkle-core for $t (no_std)"
  cargo build -q -p sparkle-core --target "$t" --release
done
step "sparkle-core for wasm32-unknown-unknown with simd128 (build only: no wasm runner here)"
RUSTFLAGS="-C target-feature=+simd128" cargo build -q -p sparkle-core --target wasm32-unknown-unknown --release
log=$(mktemp)
# Tests that skip (no Vulkan device, no AVX-512...) append themselves here (tests/src/lib.rs), so
# the closing line counts them as skipped, not passed.
export SPARKLE_SKIP_LOG=$(mktemp)
trap 'rm -f "$log" "$SPARKLE_SKIP_LOG"' EXIT
step "cargo test"
cargo test --workspace 2>&1 | tee -a "$log"
step "sparkle-core's unit tests without the parallel feature (every call on the calling thread, as on an MCU)"
cargo test -q -p sparkle-core --lib --no-default-features --features winograd,direct 2>&1 | tee -a "$log"
step "examples: every program a user copies from runs (the model in a scratch folder)"
# The builds `cargo test` just made (its profile and the workspace's features): nothing is
# compiled again (`cargo run -p sparkle-std` would rebuild every dependency another way).
built=$(cargo build -q --workspace --examples --profile test --message-format=json |
  sed -n 's/.*"kind":\["example"\].*"executable":"\([^"]*\)".*/\1/p')
examples_cache=$(mktemp -d)
example() {
  local exe
  exe=$(grep "/examples/$1\$" <<<"$built") || { echo "example $1 was not built"; exit 1; }
  SPARKLE_CACHE_DIR="$examples_cache" "$exe" "${@:2}"
}
example no_std_core
example resident_chain
example desktop_app
# The chain again, on the Vulkan device(s) by name (lavapipe here): resident between layers.
example resident_chain vulkan
rm -rf "$examples_cache"
step "cargo package: the four library crates package (metadata, versions of path dependencies, files)"
# Without the verification build: cargo treats the packages it unpacks as immutable registry
# crates, so a second run reuses the first run's build of them (stale after any change), and a
# clean verification costs a full build. The crates were verified from their packages when the
# packaging changed (see the issue notes).
cargo package -q --workspace --allow-dirty --no-verify --exclude sparkle-tests --exclude sparkle-benches
step "a downstream crate outside the workspace builds against sparkle-std and runs"
downstream=$(mktemp -d)
cp -r downstream/. "$downstream"
sed -i "s|path = \"../sparkle-std\"|path = \"$PWD/sparkle-std\"|" "$downstream/Cargo.toml"
cp Cargo.lock "$downstream/"  # the versions this checkout is tested with (reuses its builds)
# In the test profile at the workspace's opt-level and debug info, so the dependencies built above
# are reused.
(cd "$downstream" && SHADERC_LIB_DIR="$OLDPWD/.shaderc" CARGO_TARGET_DIR="$OLDPWD/target" \
  CARGO_PROFILE_TEST_OPT_LEVEL=1 CARGO_PROFILE_TEST_DEBUG=line-tables-only \
  SPARKLE_CACHE_DIR="$downstream/cache" cargo run -q --profile test)
rm -rf "$downstream"
step "aarch64: CPU kernel tests under qemu-aarch64 (NEON, dot product and i8mm for real)"
# qemu-user's default CPU is its `max`: it runs the Armv8.2 dot product and Armv8.6 i8mm. The
# portable kernels' suites (`generic::`) are the same Rust that `cargo test` ran natively above,
# so under emulation only the Arm kernels' suites run (each the whole driver, for its kernel; bf16
# has no Arm kernel).
env -u SPARKLE_REQUIRE_AVX512 -u SPARKLE_REQUIRE_AVX512VNNI -u SPARKLE_REQUIRE_AVXVNNI -u SPARKLE_REQUIRE_AVX512BF16 -u SPARKLE_REQUIRE_AMXINT8 -u SPARKLE_REQUIRE_AMXBF16 \
  SPARKLE_REQUIRE_NEON=1 SPARKLE_REQUIRE_NEONDOT=1 SPARKLE_REQUIRE_NEONI8MM=1 \
  cargo test -p sparkle-tests --no-default-features --target aarch64-unknown-linux-gnu \
  --test gemm_cpu --test conv_cpu --test qgemm_cpu --test qconv_cpu --test oracle --test geometry \
  -- --skip generic:: 2>&1 | tee -a "$log"
step "Cortex-M4F firmware under qemu-system-arm (mps2-an386)"
(cd firmware && cargo run --release -q) 2>&1 | tee -a "$log"
grep -q '^FAIL' "$log" && { echo "firmware: a case failed"; exit 1; }

step "Cortex-M4F: the int8 kernel's sweep (operand pairs, output stages, ragged tiles) under qemu"
(cd firmware && cargo run --release -q --features sweep) 2>&1 | tee -a "$log"
grep -q '^FAIL' "$log" && { echo "firmware: a sweep case failed"; exit 1; }

step "Miri: the core's unit tests (index math, views, generic kernel, packing, driver)"
echo "(SIMD kernels are not run under Miri: they are intrinsics; the generic kernel stands in for them)"
# Miri interprets on one thread: the tests run as two halves at once, one a core (the int8
# modules' tests and the rest take about as long), on one build.
cargo +nightly miri test -q -p sparkle-core --lib --no-run
cargo +nightly miri test -q -p sparkle-core --lib -- quant:: >"$log.quant" 2>&1 & quant=$!
cargo +nightly miri test -q -p sparkle-core --lib -- --skip quant:: >"$log.rest" 2>&1 && miri_rest=0 || miri_rest=$?
wait "$quant" && miri_quant=0 || miri_quant=$?
cat "$log.quant" "$log.rest" | tee -a "$log"
rm -f "$log.quant" "$log.rest"
[ "$miri_quant$miri_rest" = 00 ] || { echo "Miri: a test failed"; exit 1; }

step "fuzz smoke: every target for ${SPARKLE_FUZZ_SECONDS:=10} s from its seed corpus"
# Optimised at level 1 (with AddressSanitizer, debug assertions and overflow checks, as always):
# it builds in a third of level 3's time and runs the seeds and 10 s of fuzzing alike. Fuzzing
# for long, by hand, keeps cargo-fuzz's level 3 (README, "Hardening").
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
(cd fuzz && cargo +nightly fuzz build -O 2>&1 | tail -1)
# One libFuzzer process a target, two targets at a time (one a core).
fuzz_one() {
  local work
  work=$(mktemp -d)
  if ! (cd fuzz && cargo +nightly fuzz run -O "$1" "$work" "corpus/$1" -- \
        -max_total_time="$SPARKLE_FUZZ_SECONDS" -timeout=10 -rss_limit_mb=4096) >"$work.log" 2>&1; then
    tail -40 "$work.log"
    echo "fuzz target $1 failed (artifact under fuzz/artifacts/$1)"
    return 1
  fi
  echo "$1: $(grep -E '^Done [0-9]+ runs' "$work.log")"
  rm -rf "$work" "$work.log"
}
running=()
for t in $(cd fuzz && cargo +nightly fuzz list); do
  if [ "${#running[@]}" -ge 2 ]; then  # two run: wait for the older one
    wait "${running[0]}" || exit 1
    running=("${running[@]:1}")
  fi
  fuzz_one "$t" & running+=($!)
done
for pid in "${running[@]}"; do wait "$pid" || exit 1; done
unset CARGO_PROFILE_RELEASE_OPT_LEVEL

# One closing line over every test binary above (firmware cases count as tests too). A test that
# skipped part of its work passed in libtest's eyes; here it counts as skipped, once.
fw_pass=$(grep -c '^PASS ' "$log" || true)
echo "test result: ok. $fw_pass passed; 0 failed; 0 ignored (firmware)" >> "$log"
skipped=$(cut -d' ' -f1,2 "$SPARKLE_SKIP_LOG" | sort -u | wc -l)
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (test binary, test name):"
  cut -d' ' -f1,2 "$SPARKLE_SKIP_LOG" | sort -u | sed 's/^/  /'
fi
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6; i += $8 }
  END { printf "\n%d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$log"
