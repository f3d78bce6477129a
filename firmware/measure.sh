#!/usr/bin/env bash
# Flash and RAM of the firmware and of the kernel set inside it (sparkle-core's code minus its
# oracle and checks, plus the f32 libm functions the activations call). Needs binutils-arm-none-eabi.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --release -q
elf=target/thumbv7em-none-eabihf/release/sparkle-firmware
arm-none-eabi-size "$elf"
kernel=0 oracle=0 libm=0
while read -r _ size _ name; do
  bytes=$((16#$size))
  case "$name" in
    *sparkle_core*reference*|*sparkle_core::check::*) oracle=$((oracle + bytes)) ;;
    *sparkle_core*) kernel=$((kernel + bytes)); [ "$bytes" -ge 1024 ] && echo "  $bytes  $name" ;;
    libm::*f::*) libm=$((libm + bytes)) ;;
    libm::*) oracle=$((oracle + bytes)) ;;
  esac
done < <(arm-none-eabi-nm -C --size-sort -S "$elf" | awk 'NF >= 4 { print $1, $2, $3, substr($0, index($0, $4)) }')
echo "kernel set: $kernel bytes of sparkle-core code + $libm bytes of f32 libm = $((kernel + libm)) bytes"
echo "oracle and checks (not part of the kernel set): $oracle bytes"
