#!/usr/bin/env bash
# Flash and RAM of the firmware and of the kernel sets inside it (sparkle-core's code minus its
# oracle and checks; the f32 set with the f32 libm functions the activations call, the int8 set
# apart). Needs binutils-arm-none-eabi.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --release -q
elf=target/thumbv7em-none-eabihf/release/sparkle-firmware
arm-none-eabi-size "$elf"
kernel=0 int8=0 oracle=0 libm=0
while read -r _ size _ name; do
  bytes=$((16#$size))
  case "$name" in
    *sparkle_core*reference*|*sparkle_core::check::*) oracle=$((oracle + bytes)) ;;
    *sparkle_core::quant::*|*sparkle_core::arch::quant::*|*sparkle_core?quant?*)
      int8=$((int8 + bytes)); [ "$bytes" -ge 1024 ] && echo "  $bytes  (int8) $name" ;;
    *sparkle_core*) kernel=$((kernel + bytes)); [ "$bytes" -ge 1024 ] && echo "  $bytes  $name" ;;
    # f32 functions live in modules named with an f (expf, tanhf, erff); erf and modf are f64.
    libm::math::erf::*|libm::math::modf::*) oracle=$((oracle + bytes)) ;;
    libm::*f::*) libm=$((libm + bytes)) ;;
    libm::*) oracle=$((oracle + bytes)) ;;
  esac
done < <(arm-none-eabi-nm -C --size-sort -S "$elf" | awk 'NF >= 4 { print $1, $2, $3, substr($0, index($0, $4)) }')
echo "f32 kernel set: $kernel bytes of sparkle-core code (GEMM, conv paths, geometry checks) + $libm bytes of f32 libm = $((kernel + libm)) bytes"
echo "int8 kernel set: $int8 bytes (sparkle_core::quant and arch::quant)"
echo "oracle and checks (not part of the kernel set): $oracle bytes"
