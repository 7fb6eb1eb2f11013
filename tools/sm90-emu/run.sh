#!/bin/sh
# Build the sm90-emu FP8 GEMM harness and run it (see README.md):
#   tools/sm90-emu/run.sh [CASE-SUBSTRING]
#   tools/sm90-emu/run.sh --selftest     (emulated PTX paths no kernel here uses yet)
# Env: EMU_SKEW (1 by default here), EMU_SEED (scheduling seed), EMU_SEEDS
# (data seeds per case), EMU_CLUSTER_SLOTS ("4:1": resident clusters per size), EMU_MMA=double|seq, MUT='old|||new' (plant a bug; MUT_FILE=path limits it to one file;
# built in its own directory), EMU_SAN (sanitizers, default undefined; "" for
# none, address,undefined for ASan too), EMU_OUT (build directory).
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# EMU_ROOT: emulate another checkout's kernels and library code (read only)
src_root=${EMU_ROOT:-$root}
base=${EMU_OUT:-$root/build-emu/sm90-emu}
san=${EMU_SAN-undefined}
if [ -n "$MUT$EMU_CONFIGS" ] || [ "$san" != undefined ] || [ "$src_root" != "$root" ]; then
    tag=$(printf '%s|%s|%s|%s|%s|%s' "$MUT" "${MUT_FILE:-}" "$EMU_CONFIGS" "$san" "$src_root" "$EMU_FAST_ALL" | cksum | cut -d' ' -f1)
    out=$base/var-$tag
    # start from the unmutated build (same flags, same mtimes): make redoes
    # only what the mutation touches
    if [ ! -d "$out" ] && [ -d "$base/base" ] && [ "$san" = undefined ] && [ "$src_root" = "$root" ]; then
        cp -a "$base/base" "$out"
        find "$out/obj" -name '*.d' -exec sed -i "s|$base/base/|$out/|g" {} +
    fi
else
    out=$base/base
fi
mkdir -p "$out"
if [ "$1" = --selftest ]; then
    make -s -j2 -f "$here/emu.mk" HERE="$here" OUT="$out" SAN="$san" "$out/emu_selftest" >&2
    EMU_SKEW=${EMU_SKEW-1} exec "$out/emu_selftest"
fi
python3 "$here/gen.py" "$src_root" "$out"
make -s -j2 -f "$here/emu.mk" HERE="$here" OUT="$out" SAN="$san" "$out/emu_gemm" >&2
EMU_SKEW=${EMU_SKEW-1} exec "$out/emu_gemm" "$@"
