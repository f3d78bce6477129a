#!/usr/bin/env bash
# Sparkle's set-up: installs everything the build, the demo and the tests need on a fresh
# Debian 12 machine with only Rust installed. Idempotent and fast when all is already there.
#
# - Vulkan: the loader, Mesa's lavapipe (a CPU Vulkan driver, so GPU code is tested everywhere).
# - shaderc: Debian's libshaderc_combined.a is NOT combined (it lacks glslang and SPIRV-Tools),
#   so vulkano-shaders' proc-macro fails to load ("can't find crate for vulkano_shaders").
#   We merge the archives into one real libshaderc_combined.a in .shaderc/, which
#   .cargo/config.toml hands to shaderc-sys as SHADERC_LIB_DIR.
# - aarch64 cross gcc + qemu-user, so the NEON kernels are tested for real; qemu-system-arm for
#   the Cortex-M4F firmware (firmware/), binutils-arm-none-eabi to measure its size.
# - rustup targets: the no_std core (Cortex-M4F, M0, wasm32), aarch64; the rustfmt/clippy components;
#   nightly with Miri and cargo-fuzz for the hardening steps; the minimum supported Rust version.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

apt_pkgs=(mesa-vulkan-drivers libvulkan-dev libvulkan1 vulkan-tools libshaderc-dev glslang-dev spirv-tools
          gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-system-arm binutils-arm-none-eabi)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

shaderc="$root/.shaderc"
if [ ! -s "$shaderc/libshaderc_combined.a" ]; then
  echo "setup: merging shaderc, glslang and SPIRV-Tools into $shaderc/libshaderc_combined.a"
  lib=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  mkdir -p "$shaderc"
  {
    echo "CREATE $shaderc/libshaderc_combined.a.tmp"
    for a in libshaderc_combined.a libglslang.a libMachineIndependent.a libGenericCodeGen.a libOSDependent.a \
             libOGLCompiler.a libHLSL.a libSPIRV.a libglslang-default-resource-limits.a libSPIRV-Tools-opt.a \
             libSPIRV-Tools.a; do
      if [ -f "$lib/$a" ]; then echo "ADDLIB $lib/$a"; fi
    done
    echo SAVE
    echo END
  } | ar -M
  mv "$shaderc/libshaderc_combined.a.tmp" "$shaderc/libshaderc_combined.a"
fi

targets=(thumbv7em-none-eabihf thumbv6m-none-eabi aarch64-unknown-linux-gnu wasm32-unknown-unknown)
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
# Nightly for the fuzz smoke (cargo-fuzz, libFuzzer) and Miri over the core.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
nightly_components=$(rustup component list --toolchain nightly --installed)
for c in miri rust-src; do
  grep -q "^$c" <<<"$nightly_components" || rustup component add "$c" --toolchain nightly
done
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The minimum supported Rust version (Cargo.toml's rust-version), which CI builds the libraries with.
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
rustup toolchain list | grep -q "^$msrv-" || rustup toolchain install "$msrv" --profile minimal
components=$(rustup component list --installed)
for c in rustfmt clippy; do
  grep -q "^$c" <<<"$components" || rustup component add "$c"
done
