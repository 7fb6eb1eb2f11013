#!/usr/bin/env python3
"""Print the wgmma e4m3 wrappers of jit/templates/dinf_sm90.cuh (one
specialization per supported N). Run after changing the N list:
    tools/gen-wgmma.py > /tmp/w.txt   and paste between the GENERATED markers.
With arguments, print those N instead (the fast GEMM's extra block sizes:
    tools/gen-wgmma.py 48 80 96 112 144 160   -> the second GENERATED block).
"""
import sys
NS = tuple(int(x) for x in sys.argv[1:]) or (16, 32, 64, 128)
for n in NS:
    regs = n // 2
    outs = ", ".join("%%%d" % i for i in range(regs))
    print("template <> struct wgmma_e4m3<%d> {" % n)
    print("    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {")
    print("        asm volatile(\"{\\n.reg .pred p;\\nsetp.ne.b32 p, %%%d, 0;\\n\"" % (regs + 2))
    print("                     \"wgmma.mma_async.sync.aligned.m64n%dk32.f32.e4m3.e4m3 \"" % n)
    # split the register list over lines of ~16
    chunks = [list(range(i, min(i + 16, regs))) for i in range(0, regs, 16)]
    for ci, ch in enumerate(chunks):
        s = ", ".join("%%%d" % i for i in ch)
        pre = "{" if ci == 0 else ""
        post = "}, " if ci == len(chunks) - 1 else ", "
        print("                     \"%s%s%s\"" % (pre, s, post))
    print("                     \"%%%d, %%%d, p, 1, 1;\\n}\\n\"" % (regs, regs + 1))
    for ci, ch in enumerate(chunks):
        s = ", ".join("\"+f\"(d[%d])" % i for i in ch)
        print("                     %s %s" % (":" if ci == 0 else ",", s))
    print("                     : \"l\"(desc_a), \"l\"(desc_b), \"r\"(accumulate));")
    print("    }")
    print("};")
