#!/usr/bin/env bash
# Compiles the shaders that need a newer glslang than vulkano-shaders links (cooperative
# matrices) into the SPIR-V committed under sparkle-vk/shaders/spv/, which sparkle-vk loads with
# vulkano-shaders' `bytes:` (gemm_cm2.comp: with coopmat2.rs `load_shader`, as the driver's module
# and a REFLECT twin), so building Sparkle never needs this compiler.
#
#   scripts/spirv.sh          rewrite the .spv files after editing their GLSL
#   scripts/spirv.sh --check  fail if a committed .spv differs from what its GLSL compiles to
#
# The compilers are .glslang/glslc (glslang 15.1) and, for the bf16 modules, .glslang16/glslc
# (glslang 16.6), both built by scripts/setup.sh (x86_64 Debian).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
glslc="$root/.glslang/glslc"
shaders="$root/sparkle-vk/shaders"
check=false
[ "${1:-}" = --check ] && check=true
if [ ! -x "$glslc" ]; then
  echo "spirv: SKIPPED: $glslc is missing (scripts/setup.sh builds it on x86_64)" >&2
  [ "${SPARKLE_REQUIRE_GLSLC:-0}" = 1 ] && exit 1
  exit 0
fi
# output   source   defines...
builds=(
  "gemm_coopmat_f16.spv gemm_coopmat.comp"
  "gemm_coopmat_f16_128x256.spv gemm_coopmat.comp BM=128 BN=256 BK=32 WM=64 WN=64"
  "conv_coopmat_f16.spv gemm_coopmat.comp CONV=1"
  "conv_coopmat_f16_64x256.spv gemm_coopmat.comp CONV=1 BM=64 BN=256 BK=32 WM=32 WN=64"
  "gemm_coopmat_f16_64x64.spv gemm_coopmat.comp BM=64 BN=64 BK=32 WM=32 WN=16"
  "gemm_coopmat_split.spv gemm_coopmat.comp SPLIT=1"
  "gemm_coopmat_split_64x64.spv gemm_coopmat.comp SPLIT=1 BM=64 BN=64 BK=32 WM=32 WN=16"
  "gemm_coopmat_i8.spv gemm_coopmat.comp INT8=1 BM=128 BN=128 BK=128 WM=64 WN=32"
  "gemm_coopmat_i8_64x64.spv gemm_coopmat.comp INT8=1 BM=64 BN=64 BK=128 WM=32 WN=16"
  "conv_coopmat_f16_staged.spv gemm_coopmat.comp CONV=1 STAGED=1"
  "conv_coopmat_f16_staged_64x64.spv gemm_coopmat.comp CONV=1 STAGED=1 BM=64 BN=64 BK=32 WM=32 WN=16"
  "conv_coopmat_i8.spv gemm_coopmat.comp INT8=1 CONV=1 BM=128 BN=128 BK=128 WM=64 WN=32"
  "conv_coopmat_i8_64x64.spv gemm_coopmat.comp INT8=1 CONV=1 BM=64 BN=64 BK=128 WM=32 WN=16"
  "gemm_cm2_f16.spv gemm_cm2.comp"
  "gemm_cm2_f16.reflect.spv gemm_cm2.comp REFLECT=1"
)
# Modules that need GL_EXT_bfloat16 (glslang >= 15.4), compiled by the second compiler
# scripts/setup.sh builds (.glslang16/glslc, from Debian testing's glslang 16.6).
# gemm_cm2.comp's bf16 module shares the f16 module's REFLECT twin (same interface: its REFLECT
# build declares f16). Each has a sidecar, `<module>.glsl-sha256`: the hash of the GLSL it was
# built from (its source, the files it includes and its defines), which rewriting writes and --check
# compares. Where that compiler is missing (its pinned packages gone from Debian's pool),
# rewriting fails (the bf16 modules would fall behind their GLSL) and --check compares only the
# hash, loudly: an edit to the GLSL since the module was built makes it stale.
# SPARKLE_REQUIRE_GLSLC16=1 makes the missing compiler a failure.
builds16=(
  "gemm_cm2_bf16.spv gemm_cm2.comp BF16=1"
  "conv_coopmat_bf16_staged.spv gemm_coopmat.comp CONV=1 STAGED=1 BF16=1"
  "conv_coopmat_bf16_staged_64x64.spv gemm_coopmat.comp CONV=1 STAGED=1 BF16=1 BM=64 BN=64 BK=32 WM=32 WN=16"
)
glslc16="$root/.glslang16/glslc"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
# Parallel lists: each module's compiler and its build line.
compilers=()
lines=()
for b in "${builds[@]}"; do compilers+=("$glslc"); lines+=("$b"); done
if [ -x "$glslc16" ]; then
  for b in "${builds16[@]}"; do compilers+=("$glslc16"); lines+=("$b"); done
else
  echo "spirv: SKIPPED compiling ${#builds16[@]} bf16 module(s): $glslc16 is missing (scripts/setup.sh builds it where Debian still has its packages)" >&2
  if [ "${SPARKLE_REQUIRE_GLSLC16:-0}" = 1 ] || ! $check; then
    echo "spirv: the bf16 modules need $glslc16" >&2
    exit 1
  fi
fi
# The hash of the GLSL a bf16 module is built from: its source, the files it includes, its defines.
# The included files are hashed in the order the source names them (common.glsl first).
glsl_hash() {
  local inc
  inc=$(sed -n 's/^#include "\(.*\)"/\1/p' "$shaders/$1")
  # shellcheck disable=SC2086
  { cat "$shaders/$1" $(printf "$shaders/%s " $inc); echo "$2"; } | sha256sum | cut -d' ' -f1
}
for b in "${builds16[@]}"; do
  read -r out src defs <<<"$b"
  if $check && [ "$(cat "$shaders/spv/$out.glsl-sha256" 2>/dev/null)" != "$(glsl_hash "$src" "${defs:-}")" ]; then
    echo "spirv: sparkle-vk/shaders/spv/$out was built from other GLSL than today's: run scripts/spirv.sh (with $glslc16) and commit it" >&2
    status=1
  fi
done
for i in "${!lines[@]}"; do
  read -r out src defs <<<"${lines[$i]}"
  # shellcheck disable=SC2086
  "${compilers[$i]}" "$shaders/$src" "$tmp/$out" ${defs:-}
  if $check; then
    if ! cmp -s "$tmp/$out" "$shaders/spv/$out"; then
      echo "spirv: sparkle-vk/shaders/spv/$out is stale: run scripts/spirv.sh and commit it" >&2
      status=1
    fi
  else
    cp "$tmp/$out" "$shaders/spv/$out"
  fi
done
# Rewritten: each bf16 module's sidecar, once every module has compiled (`set -e` stops short of
# here otherwise, leaving the old module beside its old hash).
if ! $check; then
  for b in "${builds16[@]}"; do
    read -r out src defs <<<"$b"
    glsl_hash "$src" "${defs:-}" > "$shaders/spv/$out.glsl-sha256"
  done
fi
$check && [ $status = 0 ] && echo "spirv: ${#lines[@]} committed SPIR-V module(s) match their GLSL"
exit $status
