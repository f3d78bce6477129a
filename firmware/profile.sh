#!/usr/bin/env bash
# Where a firmware case's instructions go: runs the image in QEMU one instruction per
# translation block with every executed instruction logged, counts the instructions per address,
# and sums them per function and per source line (the innermost inlined one, from the debug
# info). Counts the whole run of the selected cases, the on-target oracle included (its functions
# are named `*reference*`) or, with TIMED=1, only the timed regions (between `profile_begin`
# and `profile_end`, as SysTick counts them).
#
#   [TIMED=1] firmware/profile.sh [CASES [LINES]]
#
# CASES: `int8`, `f32`, `int8 gemm`, one f32 GEMM alone (`gemm 16`, `gemm 32`, `gemm 64`, `gemv 64`,
# `gemv 256`) or one
# int8 conv case's name as `main.rs` lists it (default
# `int8`); LINES: source lines to print (default 40). Needs QEMU and binutils-arm-none-eabi
# (`scripts/setup.sh` installs both). Seconds for one case, a few minutes for all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cases=${1:-int8}
lines=${2:-40}
SPARKLE_FIRMWARE_ONLY=$cases cargo build --release -q
elf=target/thumbv7em-none-eabihf/release/sparkle-firmware
work=$(mktemp -d)
counter=
trap '[ -n "$counter" ] && kill "$counter" 2>/dev/null; rm -rf "$work"' EXIT
mkfifo "$work/trace"
# `Trace 0: HOST [FLAGS/PC/...] SYMBOL`: the guest PC is the second field in brackets.
awk -F'[][/]' -v timed="${TIMED:-0}" '
  /^Trace/ && /profile_begin/ { on = 1 }
  /^Trace/ && /profile_end/ { on = 0 }
  /^Trace/ && (on || timed == 0) { n[$3]++ }
  END { for (pc in n) print pc, n[pc] }' "$work/trace" >"$work/pcs" &
counter=$!
# One instruction per block: `-singlestep` until QEMU 8.1 deprecated it for the accelerator option.
version=$(qemu-system-arm --version | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p')
one=(-singlestep)
if [ "$(printf '%s\n' 8.1 "$version" | sort -V | head -1)" = 8.1 ]; then
  one=(-accel tcg,one-insn-per-tb=on)
fi
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -semihosting-config enable=on,target=native \
  -icount shift=0 "${one[@]}" -d exec,nochain -D "$work/trace" -kernel "$elf"
wait "$counter"
counter=
sort "$work/pcs" >"$work/sorted"
cut -d' ' -f1 "$work/sorted" | sed 's/^/0x/' |
  arm-none-eabi-addr2line -e "$elf" -f -C -s | paste - - >"$work/where"
paste -d' ' <(cut -d' ' -f2 "$work/sorted") "$work/where" >"$work/joined"
total=$(awk '{ s += $1 } END { print s }' "$work/joined")
echo "$total instructions executed (cases: $cases)"
echo "-- per function"
awk -F'\t' '{ split($1, a, " "); n[a[2]] += a[1] } END { for (f in n) printf "%10d  %s\n", n[f], f }' "$work/joined" |
  sort -rn | head -25
echo "-- per source line"
awk -F'\t' '{ split($1, a, " "); n[$2 "  " a[2]] += a[1] } END { for (l in n) printf "%10d  %s\n", n[l], l }' \
  "$work/joined" | sort -rn | head -"$lines"
