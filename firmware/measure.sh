#!/usr/bin/env bash
# Flash and RAM of the firmware and of the kernel sets inside it. A set's size is the firmware's
# text with only that set's calls into sparkle-core (the f32 conv and GEMM, or the int8 ones)
# minus its text with neither (`SPARKLE_FIRMWARE_STUB`, main.rs): everything the set links,
# the f32 libm functions its activations call and core code the compiler inlined into the
# cases' own functions included; the oracle, the checks and the harness are in both builds.
# Then the largest sparkle-core functions of the full build, by name, for orientation. Needs
# binutils-arm-none-eabi.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
elf=target/thumbv7em-none-eabihf/release/sparkle-firmware
text() { # the text size of a build with the named sets' calls left out
  SPARKLE_FIRMWARE_STUB=$1 cargo build --release -q
  arm-none-eabi-size "$elf" | awk 'NR == 2 { print $1 }'
}
none=$(text all)
f32_only=$(text int8)
int8_only=$(text f32)
full=$(text "")
arm-none-eabi-size "$elf"
while read -r _ size _ name; do
  bytes=$((16#$size))
  case "$name" in
    *sparkle_core*reference*|*sparkle_core::check::*) ;;
    *sparkle_core::quant::*|*sparkle_core::arch::quant::*|*sparkle_core?quant?*)
      [ "$bytes" -ge 1024 ] && echo "  $bytes  (int8) $name" ;;
    *sparkle_core*) [ "$bytes" -ge 1024 ] && echo "  $bytes  $name" ;;
  esac
done < <(arm-none-eabi-nm -C --size-sort -S "$elf" | awk 'NF >= 4 { print $1, $2, $3, substr($0, index($0, $4)) }')
echo "f32 kernel set: $((f32_only - none)) bytes (text $f32_only with the f32 cases' calls, $none with none)"
echo "int8 kernel set: $((int8_only - none)) bytes (text $int8_only with the int8 cases' calls)"
echo "both: $((full - none)) bytes (text $full; what the two sets share counts once)"
