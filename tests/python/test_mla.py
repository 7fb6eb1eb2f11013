"""deepinfra.mla: the FlashMLA v1 names against a numpy float64 reference."""

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import deepinfra  # noqa: E402
from deepinfra import mla  # noqa: E402

BF16 = ml_dtypes.bfloat16


def make_problem(b, s_q, h_q, h_kv, s_k, varlen, page, seed, zeros=False):
    """Random q/cache (randn/10 clamped), shuffled pages, NaN in unused rows."""
    rng = np.random.default_rng(seed)
    if varlen:
        lens = np.maximum(rng.normal(s_k, s_k / 2, b), s_q).astype(np.int32)
    else:
        lens = np.full(b, s_k, np.int32)
    if zeros:
        lens[rng.random(b) < 0.4] = 0
    max_blocks = int(-(-lens.max() // page)) + 1
    num_blocks = b * max_blocks + 2
    perm = rng.permutation(num_blocks).astype(np.int32)
    block_table = np.full((b, max_blocks), 2147480000, np.int32)
    nxt = 0
    for i in range(b):
        used = -(-int(lens[i]) // page)
        block_table[i, :used] = perm[nxt:nxt + used]
        nxt += used
    cache = np.clip(rng.standard_normal((num_blocks, page, h_kv, 576)) / 10, -1, 1)
    cache = cache.astype(np.float32).astype(BF16)
    for i in range(b):  # NaN everywhere a request does not use
        for j in range(max_blocks):
            start = j * page
            if start >= lens[i]:
                continue
            valid = min(page, int(lens[i]) - start)
            cache[block_table[i, j], valid:] = np.nan
    used_pages = set(block_table[block_table < num_blocks].tolist())
    for pg in range(num_blocks):
        if pg not in used_pages:
            cache[pg] = np.nan
    q = np.clip(rng.standard_normal((b, s_q, h_q, 576)) / 10, -1, 1).astype(np.float32).astype(BF16)
    return q, cache, block_table, lens


def reference(q, cache, block_table, lens, scale, causal):
    """float64: gather each request's keys, attention, bottom-right causal mask."""
    b, s_q, h_q, _ = q.shape
    page, h_kv = cache.shape[1], cache.shape[2]
    out = np.zeros((b, s_q, h_q, 512))
    lse = np.full((b, h_q, s_q), np.inf)
    for i in range(b):
        n = int(lens[i])
        if n == 0:
            continue
        pages = block_table[i, : -(-n // page)]
        keys = cache[pages].reshape(-1, h_kv, 576)[:n].astype(np.float64)  # [n, h_kv, 576]
        for h in range(h_q):
            k = keys[:, h // (h_q // h_kv)]
            s = (q[i, :, h].astype(np.float64) @ k.T) * scale  # [s_q, n]
            for t in range(s_q):
                limit = n - (s_q - 1 - t) if causal else n
                if limit <= 0:
                    continue
                row = s[t, :limit]
                m = row.max()
                l = m + np.log(np.exp(row - m).sum())
                lse[i, h, t] = l
                out[i, t, h] = np.exp(row - l) @ k[:limit, :512]
    return out.astype(np.float32).astype(BF16).astype(np.float64), lse


def assert_close(got, ref, abs_tol, rel_tol, cos_tol, what):
    got = got.astype(np.float64)
    inf_ref = ~np.isfinite(ref)
    assert np.array_equal(np.isinf(got), np.isinf(ref)) and not np.isnan(got).any(), what
    assert (got[inf_ref] == ref[inf_ref]).all(), what
    g, r = got[~inf_ref], ref[~inf_ref]
    err = np.abs(g - r)
    bad = ~((err <= abs_tol) | (err <= rel_tol * np.abs(r)))
    assert not bad.any(), "%s: %d elements off, worst %g" % (what, bad.sum(), err.max())
    den = (g * g + r * r).sum()
    cos_diff = 0.0 if den == 0 else 1 - 2 * (g * r).sum() / den
    assert cos_diff <= cos_tol, "%s: cos_diff %g" % (what, cos_diff)


@pytest.mark.parametrize(
    "b,s_q,h_q,h_kv,s_k,varlen,causal,page",
    [
        (1, 1, 16, 1, 20, False, False, 64),
        (2, 2, 64, 1, 140, True, True, 64),
        (3, 1, 3, 1, 200, True, False, 64),
        (2, 2, 128, 1, 90, False, True, 64),
        (4, 2, 6, 2, 150, True, True, 32),
        (3, 1, 16, 1, 100, True, False, 16),
    ],
)
def test_matches_float64_reference(b, s_q, h_q, h_kv, s_k, varlen, causal, page):
    q, cache, bt, lens = make_problem(b, s_q, h_q, h_kv, s_k, varlen, page, seed=b * 7 + h_q)
    meta, splits = mla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
    assert meta.shape[1] == 8 and meta.dtype == np.int32
    assert splits.shape == (b + 1,) and splits[0] == 0
    out, lse = mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, meta, splits, causal=causal)
    assert out.dtype == BF16 and out.shape == (b, s_q, h_q, 512)
    assert lse.dtype == np.float32 and lse.shape == (b, h_q, s_q)
    ref_out, ref_lse = reference(q, cache, bt, lens, 576 ** -0.5, causal and s_q > 1)
    what = "b=%d s_q=%d h_q=%d h_kv=%d s_k=%d varlen=%s causal=%s page=%d" % (
        b, s_q, h_q, h_kv, s_k, varlen, causal, page)
    assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "out " + what)
    assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "lse " + what)


def test_zero_length_requests_and_split_merge():
    q, cache, bt, lens = make_problem(8, 2, 16, 1, 300, True, 64, seed=5, zeros=True)
    lens[1] = 0
    ref_out, ref_lse = reference(q, cache, bt, lens, 0.1, True)
    for num_sms in (1, 132, 1000):  # one part (nothing split) .. many splits
        meta, splits = mla.get_mla_metadata(lens, 32, 1, num_sms=num_sms)
        out, lse = mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, meta, splits,
                                              softmax_scale=0.1, causal=True)
        assert np.isinf(lse[1]).all() and (out[1].astype(np.float32) == 0).all()
        assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "out num_sms=%d" % num_sms)
        assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "lse num_sms=%d" % num_sms)
    assert splits[-1] > len(lens)  # the last plan did split requests


def test_errors_carry_the_library_message():
    q, cache, bt, lens = make_problem(2, 1, 16, 1, 100, False, 64, seed=9)
    meta, splits = mla.get_mla_metadata(lens, 16, 1)
    bad = bt.copy()
    bad[1, 0] = -3
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"block_table\[1\]\[0\]=-3 is outside"):
        mla.flash_mla_with_kvcache(q, cache, bad, lens, 512, meta, splits)
    with pytest.raises(deepinfra.UnsupportedError, match="head_dim_v=256 is not supported"):
        mla.flash_mla_with_kvcache(q, cache, bt, lens, 256, meta, splits)
    stale = lens.copy()
    stale[0] = 1
    with pytest.raises(deepinfra.InvalidArgumentError, match="does not match the plan"):
        mla.flash_mla_with_kvcache(q, cache, bt, stale, 512, meta, splits)
    with pytest.raises(deepinfra.InvalidArgumentError, match="is not a multiple of num_heads_kv"):
        mla.flash_mla_with_kvcache(q, np.concatenate([cache] * 3, axis=2), bt, lens, 512, meta,
                                   splits)
    with pytest.raises(deepinfra.InvalidArgumentError, match="cache_seqlens\\[0\\]=-1 is negative"):
        mla.get_mla_metadata(np.array([-1, 3], np.int32), 16, 1)
    with pytest.raises(deepinfra.InvalidArgumentError, match="q_rows_per_head_kv=9000"):
        mla.get_mla_metadata(lens, 9000, 1)
    with pytest.raises(deepinfra.InvalidArgumentError, match="q must be bfloat16"):
        mla.flash_mla_with_kvcache(q.astype(np.float32), cache, bt, lens, 512, meta, splits)


def dequantize(entries):
    """[..., 656] FP8 entries -> [..., 576] float32 (independent of the library)."""
    codes = entries[..., :512].copy().view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    scales = entries[..., 512:528].copy().view(np.float32)  # [..., 4]
    rope = entries[..., 528:656].copy().view(np.uint16).view(BF16).astype(np.float32)
    return np.concatenate([codes * np.repeat(scales, 128, axis=-1), rope], axis=-1)


@pytest.mark.parametrize("b,s_q,h_q,h_kv,s_k,causal,page", [
    (2, 1, 16, 1, 140, False, 64),
    (3, 2, 4, 2, 90, True, 16),
])
def test_fp8_cache_equals_bf16_on_dequantized(b, s_q, h_q, h_kv, s_k, causal, page):
    q, cache, bt, lens = make_problem(b, s_q, h_q, h_kv, s_k, True, page, seed=31 + b)
    num_blocks = cache.shape[0]
    fp8 = np.full((num_blocks, page, h_kv, 656), 0xFF, np.uint8)  # NaN codes where unused
    slots, rows = [], []
    for i in range(b):
        for key in range(int(lens[i])):
            pg = bt[i, key // page]
            slots.append(pg * page + key % page)
            rows.append(cache[pg, key % page])
    kv = np.stack(rows) if rows else np.zeros((0, h_kv, 576), BF16)
    mla.quantize_kvcache_fp8(kv, np.array(slots, np.int64), fp8)
    deq = cache.copy()
    for s, _ in zip(slots, rows):
        deq[s // page, s % page] = dequantize(fp8[s // page, s % page]).astype(BF16)
    assert np.isfinite(deq[np.array(slots) // page, np.array(slots) % page].astype(np.float32)).all()
    meta, splits = mla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
    out8, lse8 = mla.flash_mla_with_kvcache(q, fp8, bt, lens, 512, meta, splits, None, causal, True)
    out16, lse16 = mla.flash_mla_with_kvcache(q, deq, bt, lens, 512, meta, splits, None, causal)
    assert np.array_equal(out8.view(np.uint16), out16.view(np.uint16))
    assert np.array_equal(lse8, lse16)
    ref_out, ref_lse = reference(q, deq, bt, lens, 576 ** -0.5, causal and s_q > 1)
    assert_close(out8, ref_out, 8e-4, 2.01 / 128, 5e-6, "fp8 out")
    with pytest.raises(deepinfra.InvalidArgumentError, match="pass is_fp8_kvcache=True"):
        mla.flash_mla_with_kvcache(q, np.zeros(fp8.shape, BF16), bt, lens, 512, meta, splits)
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"slot_mapping\[0\]=-5 is outside"):
        mla.quantize_kvcache_fp8(kv[:1], np.array([-5], np.int64), fp8)
