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

apt_pkgs=(curl mesa-vulkan-drivers libvulkan-dev libvulkan1 vulkan-tools libshaderc-dev glslang-dev spirv-tools
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

# A GLSL compiler new enough for cooperative matrices (GL_KHR_cooperative_matrix: glslang >= 14;
# GL_NV_cooperative_matrix2, gemm_cm2.comp: >= 15; Debian 12 has 12). It compiles only the tensor-core shaders, into SPIR-V committed under
# sparkle-vk/shaders/spv/ (scripts/spirv.sh), so building Sparkle never needs it; the test
# command uses it to check the committed SPIR-V matches its GLSL. Debian 13's static libraries,
# pinned by hash, linked with a shim for two glibc 2.38 symbols (scripts/glslc/isoc23.c).
# build_glslc OUT: fetches the Debian packages listed on stdin ("sha256 pool-path" lines), checks
# each one's hash, and links scripts/glslc against their static libraries into OUT. Returns 1,
# building nothing, where a package is no longer in Debian's pool or the link fails (the caller
# decides whether that ends the setup); exits on a wrong hash.
build_glslc() {
  local out=$1 work lib sum path
  work=$(mktemp -d)
  while read -r sum path; do
    if ! curl -fsSL --retry 3 -o "$work/pkg.deb" "http://deb.debian.org/debian/$path"; then
      echo "setup: $path is no longer in Debian's pool" >&2
      rm -rf "$work"
      return 1
    fi
    echo "$sum  $work/pkg.deb" | sha256sum -c --quiet - || exit 1
    dpkg-deb -x "$work/pkg.deb" "$work/root" || exit 1
  done
  lib="$work/root/usr/lib/x86_64-linux-gnu"
  mkdir -p "$(dirname "$out")"
  gcc -O2 -I"$work/root/usr/include" "$root/scripts/glslc/glslc.c" "$root/scripts/glslc/isoc23.c" \
    "$lib/libshaderc_combined.a" "$lib/libglslang.a" "$lib/libMachineIndependent.a" "$lib/libGenericCodeGen.a" \
    "$lib/libOSDependent.a" "$lib/libSPIRV.a" "$lib/libglslang-default-resource-limits.a" \
    "$lib/libSPIRV-Tools-opt.a" "$lib/libSPIRV-Tools.a" -lstdc++ -lm -lpthread -o "$out.tmp" &&
    mv "$out.tmp" "$out" || { echo "setup: linking $out failed" >&2; rm -rf "$work"; return 1; }
  rm -rf "$work"
}

glslc="$root/.glslang/glslc"
if [ ! -x "$glslc" ] && [ "$(dpkg --print-architecture)" = amd64 ]; then
  echo "setup: building $glslc from Debian 13's shaderc 2025.2 and glslang 15.1"
  build_glslc "$glslc" <<'DEBS' || exit 1
20e94fbc4d6817f6d6043271e022a3101a2568b21f43d76f40378ce5ed2ca9e7 pool/main/g/glslang/glslang-dev_15.1.0+1.4.309.0-1_amd64.deb
727f2c5879020c44489bbe0de922cb8ae3cbeda756aa491918d51018d617a142 pool/main/s/shaderc/libshaderc-dev_2025.2-1_amd64.deb
2cc272ef1340cf0b47de6c5fcccaf91574d7a8f4061abb718d6c639463e85aab pool/main/s/spirv-tools/spirv-tools_2025.1~rc1-1_amd64.deb
DEBS
fi

# A second GLSL compiler for the shaders that need GL_EXT_bfloat16 (glslang >= 15.4; Debian 13
# has 15.1): Debian testing's glslang 16.6, shaderc 2026.4 and SPIRV-Tools 2026.4, pinned by hash
# and linked as above. Testing's pool drops superseded packages: where these are gone this step
# says so and goes on (scripts/spirv.sh then skips the bf16 modules' check, loudly; the committed
# SPIR-V needs no compiler). To move on, put the current versions and hashes here (from
# dists/testing/main/binary-amd64/Packages.xz) and rerun scripts/spirv.sh.
glslc16="$root/.glslang16/glslc"
if [ ! -x "$glslc16" ] && [ "$(dpkg --print-architecture)" = amd64 ]; then
  echo "setup: building $glslc16 from Debian testing's shaderc 2026.4 and glslang 16.6"
  build_glslc "$glslc16" <<'DEBS' || echo "setup: WARNING: $glslc16 not built (the bf16 shaders' SPIR-V goes unchecked)" >&2
f84effa2939c98d66886d57478da65292e2879515eb8a2375de77e0a95b431d5 pool/main/g/glslang/glslang-dev_16.6.0-1_amd64.deb
ee27e239b32983f63bf6358a438120958af1800552f3647838e1a61c06901b78 pool/main/s/shaderc/libshaderc-dev_2026.4-1_amd64.deb
5cb0484d00263473146fcb18794629dc8d25f283c5276bcf9e0dfd53a34e97b6 pool/main/s/spirv-tools/spirv-tools-dev_2026.4~rc2-1_amd64.deb
DEBS
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
