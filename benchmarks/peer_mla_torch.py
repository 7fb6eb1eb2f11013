#!/usr/bin/env python3
"""PyTorch peer of the MLA decode benchmark (benchmarks/bench_mla.c), run by
tools/gpu-check on the GPU machine: the same shapes (b=128, h_q {16, 64, 128},
s_q {1, 2}, s_k {4096, 8192, 16384}, causal, BF16 and FP8 caches of 64-token
pages through a shuffled block table), computed the plain way: gather the
pages into a dense [b, s_k, 576] tensor (dequantizing FP8 entries to bf16),
then Q K^T, softmax in float32 and P V with bf16 matmuls. Timed with CUDA
events (median of 5 after 2 warm-ups, L2 not flushed, like ours), rates by
FlashMLA's formulas (flashmla.md 7.1); then the sparse decode's rows (b 64 and
128, s_q 2, h_q 128, topk 2048 slots per position over the FP8 cache: gather,
dequantize, attention). Writes Google-Benchmark-style JSON
(--out FILE, rewritten after every row, so a run stopped by its time budget
keeps the rows it finished) that tools/gpu-summary prints beside our rows,
and prints one line per row.

    python3 benchmarks/peer_mla_torch.py --out build/gpu-check/peer-mla-torch.json
"""
import argparse
import json
import math
import sys

PAGE = 64
DQK, DV, ENTRY = 576, 512, 656


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="one shape per dtype")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("peer_mla_torch: torch is not installed; no peer rows", file=sys.stderr)
        json.dump({"benchmarks": []}, open(a.out, "w"))
        return 0
    if not torch.cuda.is_available():
        print("peer_mla_torch: no CUDA device; no peer rows", file=sys.stderr)
        json.dump({"benchmarks": []}, open(a.out, "w"))
        return 0
    json.dump({"benchmarks": []}, open(a.out, "w"))
    dev = torch.device("cuda")
    torch.manual_seed(0)
    b, s_k_max = 128, 16384
    max_blocks = s_k_max // PAGE
    num_blocks = b * max_blocks
    bt = torch.randperm(num_blocks, device=dev, dtype=torch.int64).view(b, max_blocks)
    kv = (torch.randn(num_blocks, PAGE, 1, DQK, device=dev) / 10).clamp(-1, 1).to(torch.bfloat16)
    # FP8 entries in the library's layout (power-of-two scales per 128 channels)
    nope = kv[..., :DV].float().view(num_blocks, PAGE, 1, 4, 128)
    amax = nope.abs().amax(-1).clamp(min=1e-4)
    scale = torch.exp2(torch.ceil(torch.log2(amax / 448.0)))
    codes = (nope / scale[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    kv8 = torch.empty(num_blocks, PAGE, 1, ENTRY, device=dev, dtype=torch.uint8)
    kv8[..., :DV] = codes.view(num_blocks, PAGE, 1, DV).view(torch.uint8)
    kv8[..., DV:DV + 16] = scale.contiguous().view(torch.uint8).view(num_blocks, PAGE, 1, 16)
    kv8[..., DV + 16:] = kv[..., DV:].contiguous().view(torch.uint8)
    del nope, amax, codes

    def gather(cache, s_k, fp8):
        nblk = s_k // PAGE
        k = cache[bt[:, :nblk]].view(b, nblk * PAGE, -1)  # [b, s_k, 576 or 656]
        if not fp8:
            return k
        codes = k[..., :DV].view(torch.float8_e4m3fn).float().view(b, s_k, 4, 128)
        sc = k[..., DV:DV + 16].contiguous().view(torch.float32).view(b, s_k, 4, 1)
        rope = k[..., DV + 16:].contiguous().view(torch.bfloat16)
        return torch.cat([(codes * sc).view(b, s_k, DV).to(torch.bfloat16), rope], -1)

    def decode(q, s_q, h_q, s_k, fp8):
        k = gather(kv8 if fp8 else kv, s_k, fp8)
        qf = q.view(b, s_q * h_q, DQK)
        s = torch.bmm(qf, k.transpose(1, 2)).float() * (192 ** -0.5)
        if s_q > 1:  # bottom-right causal: row of position t sees keys < s_k - (s_q - 1 - t)
            t = torch.arange(s_q, device=dev).repeat_interleave(h_q)
            mask = torch.arange(s_k, device=dev)[None, :] >= (s_k - (s_q - 1 - t))[:, None]
            s.masked_fill_(mask[None], float("-inf"))
        lse = torch.logsumexp(s, -1)
        p = torch.softmax(s, -1).to(torch.bfloat16)
        out = torch.bmm(p, k[..., :DV])
        return out.view(b, s_q, h_q, DV), lse

    rows = []

    def median_us(fn, what):
        """Median of 5 timed calls after 2 warm-ups (CUDA events, L2 not
        flushed), or None when the device runs out of memory."""
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        try:
            for i in range(7):
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                if i >= 2:
                    times.append(start.elapsed_time(stop) * 1e3)  # us
        except torch.cuda.OutOfMemoryError as e:
            print("peer_mla_torch: out of memory at %s: %s" % (what, e), file=sys.stderr)
            torch.cuda.empty_cache()
            return None
        return sorted(times)[len(times) // 2]

    def record(name, t_us, flops, nbytes):
        rows.append({"name": name, "real_time": t_us, "time_unit": "us",
                     "FLOP/s": flops / (t_us * 1e-6), "B/s": nbytes / (t_us * 1e-6),
                     "label": "peer: PyTorch gather + attention (torch %s)" % torch.__version__})
        # the JSON after every row: a run stopped by gpu-check's budget keeps its rows
        json.dump({"benchmarks": rows}, open(a.out, "w"), indent=1)
        print("%-44s %10.1f us  %8.2f TFLOP/s  %8.1f GB/s" % (
            name, t_us, flops / t_us / 1e6, nbytes / t_us / 1e3))
        torch.cuda.empty_cache()

    shapes = [(s_q, h_q, s_k) for s_q in (1, 2) for h_q in (16, 64, 128)
              for s_k in (4096, 8192, 16384)]
    if a.quick:
        shapes = shapes[:1]
    for fp8 in (False, True):
        for s_q, h_q, s_k in shapes:
            q = (torch.randn(b, s_q, h_q, DQK, device=dev) / 10).to(torch.bfloat16)
            t_us = median_us(lambda: decode(q, s_q, h_q, s_k, fp8),
                             "s_q=%d h_q=%d s_k=%d" % (s_q, h_q, s_k))
            if t_us is None:
                continue
            n = b * s_k
            flops = 2.0 * s_q * h_q * n * (DQK + DV)
            nbytes = n * (ENTRY if fp8 else 2 * DQK) + b * s_q * h_q * (DQK + DV) * 2.0
            record("mla/torch/%s/b128_sq%d_hq%d_sk%d" % ("fp8" if fp8 else "bf16", s_q, h_q, s_k),
                   t_us, flops, nbytes)
    # the sparse decode (DeepSeek V3.2, benchmarks/bench_mla.c's mla/gpu/sparse_fp8 rows): per
    # query position, topk slots spread over the FP8 cache; gather the entries, dequantize,
    # then attention over the gathered keys
    topk = 2048
    for b_sp in (() if a.quick else (64, 128)):
        s_q, h_q = 2, 128
        idx = torch.randint(0, num_blocks * PAGE, (b_sp * s_q, topk), device=dev)
        q = (torch.randn(b_sp * s_q, h_q, DQK, device=dev) / 10).to(torch.bfloat16)
        flat = kv8.view(num_blocks * PAGE, ENTRY)

        def sparse_decode():
            k = flat[idx]  # [b s_q, topk, 656]
            codes = k[..., :DV].view(torch.float8_e4m3fn).float().view(b_sp * s_q, topk, 4, 128)
            sc = k[..., DV:DV + 16].contiguous().view(torch.float32).view(b_sp * s_q, topk, 4, 1)
            rope = k[..., DV + 16:].contiguous().view(torch.bfloat16)
            kd = torch.cat([(codes * sc).view(b_sp * s_q, topk, DV).to(torch.bfloat16), rope], -1)
            s = torch.bmm(q, kd.transpose(1, 2)).float() * (192 ** -0.5)
            lse = torch.logsumexp(s, -1)
            p = torch.softmax(s, -1).to(torch.bfloat16)
            return torch.bmm(p, kd[..., :DV]), lse

        t_us = median_us(sparse_decode, "sparse b=%d" % b_sp)
        if t_us is None:
            continue
        n = b_sp * s_q * topk
        record("mla/torch/sparse_fp8/b%d_sq2_hq128_topk%d" % (b_sp, topk), t_us,
               2.0 * h_q * n * (DQK + DV), n * ENTRY + b_sp * s_q * h_q * (DQK + DV) * 2.0)
    json.dump({"benchmarks": rows}, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
