#!/bin/sh
# Build the sm90-emu FP8 GEMM harness and run it (see README.md):
#   tools/sm90-emu/run.sh [CASE-SUBSTRING]
# Env: EMU_SKEW (1 by default here), EMU_SEED (scheduling seed), EMU_SEEDS
# (data seeds per case), EMU_MMA=double|seq, MUT='old|||new' (plant a bug;
# built in its own directory), EMU_SAN (sanitizers, default undefined; "" for
# none, address,undefined for ASan too), EMU_OUT (build directory).
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -n "$MUT" ]; then
    tag=$(printf '%s' "$MUT" | cksum | cut -d' ' -f1)
    out=${EMU_OUT:-$root/build/sm90-emu}/mut-$tag
else
    out=${EMU_OUT:-$root/build/sm90-emu}/base
fi
mkdir -p "$out"
python3 "$here/gen.py" "$root" "$out"
make -s -j2 -f "$here/emu.mk" HERE="$here" OUT="$out" SAN="${EMU_SAN-undefined}" "$out/emu_gemm" >&2
EMU_SKEW=${EMU_SKEW-1} exec "$out/emu_gemm" "$@"
