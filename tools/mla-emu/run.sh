#!/bin/sh
# Build tests/gpu/test_mla_gpu.c against the host emulation of kernels/mla
# (see README.md) and run it: tools/mla-emu/run.sh [criterion filter]
# Env: EMU_SKEW=1 (default) lets warps drift apart; MUT='old|||new' plants a bug.
# All three rungs (EMU_RUNGS=simple, fast, seesaw or a comma-separated list narrows);
# MUT_FAST='old|||new' plants a bug in kernels/mla/mla_decode_fast.cu (the fast and seesaw rungs).
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${EMU_OUT:-$root/build-emu/mla-emu}
mkdir -p "$out"
[ -f "$root/build/lib/libdeepinfra.a" ] || { echo "build the library first (make lib)"; exit 1; }
FL="-U_FORTIFY_SOURCE -O2 -g -Wno-psabi -fsanitize=${EMU_SAN:-undefined} -fno-sanitize-recover=undefined"
# the GPU test with the sweep's longest caches shortened (4096 -> 333 keys,
# b = 64 off, the b = 128 corner case at b = 12): an emulated CTA-block takes ~20 ms
sed -e 's/s_ks\[\] = {20, 140, 4096}/s_ks[] = {20, 140, 333}/' \
    -e 's/Test(mla_gpu, sweep_batch_64) { sweep(64); }/Test(mla_gpu, sweep_batch_64, .disabled = true) { sweep(64); }/' \
    -e 's/kv_make(&p, 128, 1, 4096, 1, 0, 64, 2, 7100);/kv_make(\&p, 12, 1, 300, 1, 0, 64, 2, 7100);/' \
    -e 's/for (int64_t i = 0; i < 128; i += 2)/for (int64_t i = 0; i < 12; i += 2)/' \
    -e 's/sizeof(int32_t) \* 128, cudaMemcpyHostToDevice/sizeof(int32_t) * 12, cudaMemcpyHostToDevice/' \
    "$root/tests/gpu/test_mla_gpu.c" > "$out/test_mla_gpu_emu.c"
python3 "$here/gen.py" "$root" "$out/emu_kernel.cpp"
python3 "$here/gen_fast.py" "$root" "$out/emu_fast.cpp"
gcc -std=c11 $FL -D_GNU_SOURCE -DDINF_WITH_CUDA=1 -I"$here/mockinc" -I"$root/include" -I"$root/lib" -I"$root/tests/gpu" \
    -Ddinf_device_query=emu_device_query -c "$out/test_mla_gpu_emu.c" -o "$out/t.o"
gcc -std=c11 -O2 -I"$root/include" -c "$here/emu_device.c" -o "$out/emu_device.o"
g++ -std=c++17 $FL -DDINF_BUILD -I"$root/include" -I"$here" -c "$out/emu_kernel.cpp" -o "$out/emu_kernel.o"
g++ -std=c++17 $FL -DDINF_BUILD -I"$root/include" -I"$root/lib" -I"$here" -c "$out/emu_fast.cpp" -o "$out/emu_fast.o"
g++ -std=c++17 $FL -I"$here" -c "$here/emu_rt.cpp" -o "$out/emu_rt.o"
g++ $FL "$out/t.o" "$out/emu_device.o" "$out/emu_kernel.o" "$out/emu_fast.o" "$out/emu_rt.o" "$root/build/lib/libdeepinfra.a" \
    -L/usr/local/cuda/lib64 -l:libcudart_static.a -lcriterion -ldl -lpthread -lrt -lm -o "$out/emu_tests"
DINF_MLA_TEST_RUNGS=${EMU_RUNGS:-simple,fast,seesaw} EMU_SKEW=${EMU_SKEW-1} ASAN_OPTIONS=detect_leaks=0 "$out/emu_tests" -j1 --filter "${1:-mla_gpu/*}"
