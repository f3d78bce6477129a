#!/usr/bin/env bash
# Builds the CMSIS-NN bench for the Cortex-M4F and runs it in QEMU's mps2-an386 with the
# firmware's flags (firmware/.cargo/config.toml), once per optimisation level.
#   benches/cmsis/run.sh CMSIS_NN_DIR CMSIS_CORE_DIR
# CMSIS_NN_DIR: a CMSIS-NN checkout (Include/, Source/). CMSIS_CORE_DIR: the folder holding
# Include/core_cm4.h (CMSIS_6/CMSIS/Core or CMSIS_5/CMSIS/Core). OPTS (environment) lists the
# optimisation levels, default "-O2 -O3 -Ofast". No network; needs gcc-arm-none-eabi,
# libnewlib-arm-none-eabi and qemu-system-arm. Exits non-zero if a case fails.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 CMSIS_NN_DIR CMSIS_CORE_DIR" >&2
  exit 2
fi
nn=$(cd "$1" && pwd)
core=$(cd "$2" && pwd)
[ -f "$nn/Include/arm_nnfunctions.h" ] || { echo "$nn: no Include/arm_nnfunctions.h" >&2; exit 2; }
[ -f "$core/Include/core_cm4.h" ] || { echo "$core: no Include/core_cm4.h" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")"
status=0
for opt in ${OPTS:--O2 -O3 -Ofast}; do
  build="build/${opt#-}"
  config="$nn $core $opt $(arm-none-eabi-gcc --version | head -1)"
  # A build made from other sources or flags is thrown away (make only sees timestamps).
  if [ -f "$build/config" ] && [ "$(cat "$build/config")" != "$config" ]; then
    rm -rf "$build"
  fi
  mkdir -p "$build"
  echo "$config" > "$build/config"
  make -s CMSIS_NN="$nn" CMSIS_CORE="$core" OPT="$opt" BUILD="$build"
  echo "== CMSIS-NN $opt"
  qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -icount shift=0 \
    -kernel "$build/bench.elf" || status=1
done
exit $status
