#!/usr/bin/env bash
# Compiles the shaders that need a newer glslang than vulkano-shaders links (cooperative
# matrices) into the SPIR-V committed under sparkle-vk/shaders/spv/, which sparkle-vk loads with
# vulkano-shaders' `bytes:` (gemm_cm2.comp: with coopmat2.rs `load_shader`, as the driver's module
# and a REFLECT twin), so building Sparkle never needs this compiler.
#
#   scripts/spirv.sh          rewrite the .spv files after editing their GLSL
#   scripts/spirv.sh --check  fail if a committed .spv differs from what its GLSL compiles to
#
# The compiler is .glslang/glslc, built by scripts/setup.sh (x86_64 Debian).
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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for b in "${builds[@]}"; do
  read -r out src defs <<<"$b"
  # shellcheck disable=SC2086
  "$glslc" "$shaders/$src" "$tmp/$out" ${defs:-}
  if $check; then
    if ! cmp -s "$tmp/$out" "$shaders/spv/$out"; then
      echo "spirv: sparkle-vk/shaders/spv/$out is stale: run scripts/spirv.sh and commit it" >&2
      status=1
    fi
  else
    cp "$tmp/$out" "$shaders/spv/$out"
  fi
done
$check && [ $status = 0 ] && echo "spirv: ${#builds[@]} committed SPIR-V module(s) match their GLSL"
exit $status
