"""deepinfra.mla: the FlashMLA v1 names against a numpy float64 reference."""

import ctypes

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


# ------------------------------------------------------------ sparse decode --
# DeepSeek Sparse Attention (FlashMLA's Sept-2025 API): get_mla_metadata(...,
# num_heads_q, is_fp8_kvcache, topk) and flash_mla_with_kvcache(..., indices=).

INT32_MIN = -(2**31)


@pytest.fixture
def poisoned_np_empty(monkeypatch):
    """Every np.empty (the wrapper's out, lse, workspace and metadata) starts
    as NaN / 0xFFFF bf16 NaN / 0xFF bytes (floats and bf16 bits) or 0x5A5A5A5A
    (other integers), so an element the library leaves unwritten fails."""
    real_empty = np.empty

    def empty(*args, **kwargs):
        a = real_empty(*args, **kwargs)
        if a.dtype.kind == "f" or a.dtype in (np.uint16, np.uint8):
            a.view(np.uint8).fill(0xFF)
        elif a.dtype.kind in "iu":
            a.view(np.uint8).fill(0x5A)
        return a

    monkeypatch.setattr(np, "empty", empty)


def make_sparse_problem(b, s_q, h_q, h_kv, topk, page, seed, varlen=False, num_blocks=None):
    """Random q and cache (randn/10 clamped, never zero-filled) with about 60%
    of the slots in use and NaN in every other slot; indices [b, s_q, topk]
    drawn from the used slots with duplicates, -1 and other negative entries,
    the last position of request 0 all -1, and entries at or past
    topk_length[b] pointing at NaN slots (they must never be read).
    topk_length (varlen) is random in [0, topk] with the last request at topk
    and (b >= 3) request 1 at 0; None otherwise."""
    rng = np.random.default_rng(seed)
    if num_blocks is None:
        num_blocks = -(-max(2 * topk, 32) // page) + 1
    n_slots = num_blocks * page
    cache = np.clip(rng.standard_normal((num_blocks, page, h_kv, 576)) / 10, -1, 1)
    cache = cache.astype(np.float32).astype(BF16)
    used = rng.random(n_slots) < 0.6
    used[rng.integers(0, n_slots)] = True
    pool = np.flatnonzero(used).astype(np.int32)
    unused = np.flatnonzero(~used).astype(np.int32)
    cache.reshape(n_slots, h_kv, 576)[~used] = np.nan
    indices = pool[rng.integers(0, len(pool), (b, s_q, topk))]
    if topk >= 4:  # explicit duplicates (the draw with replacement makes more)
        indices[..., 1] = indices[..., 0]
        indices[..., -1] = indices[..., topk // 2]
    neg = rng.random((b, s_q, topk)) < 0.15
    indices[neg] = -1
    if topk >= 8:
        indices[..., 2] = INT32_MIN
        indices[..., 3] = -7
    indices[0, s_q - 1, :] = -1  # a position without any valid slot
    if varlen:
        lengths = rng.integers(0, topk + 1, b).astype(np.int32)
        lengths[-1] = topk
        if b >= 3:
            lengths[1] = 0
        for i in range(b):  # never read: NaN slots
            if lengths[i] < topk and len(unused):
                indices[i, :, lengths[i]:] = unused[rng.integers(0, len(unused),
                                                                  (s_q, topk - lengths[i]))]
    else:
        lengths = None
    q = np.clip(rng.standard_normal((b, s_q, h_q, 576)) / 10, -1, 1).astype(np.float32).astype(BF16)
    return q, cache, indices.astype(np.int32), lengths


def sparse_reference(q, cache, indices, topk_length, scale):
    """float64: per query position, gather the valid listed slots (duplicates
    count twice), softmax; +inf lse and 0 out without a valid slot."""
    b, s_q, h_q, _ = q.shape
    h_kv = cache.shape[2]
    group = h_q // h_kv
    flat = cache.reshape(-1, h_kv, 576)
    topk = indices.shape[2]
    out = np.zeros((b, s_q, h_q, 512))
    lse = np.full((b, h_q, s_q), np.inf)
    for i in range(b):
        n = topk if topk_length is None else int(topk_length[i])
        for t in range(s_q):
            slots = indices[i, t, :n]
            slots = slots[slots >= 0]
            if len(slots) == 0:
                continue
            keys = flat[slots].astype(np.float64)  # [m, h_kv, 576]
            for hk in range(h_kv):
                heads = slice(hk * group, (hk + 1) * group)
                k = keys[:, hk]
                s = (q[i, t, heads].astype(np.float64) @ k.T) * scale  # [group, m]
                m = s.max(axis=1, keepdims=True)
                l = m + np.log(np.exp(s - m).sum(axis=1, keepdims=True))
                lse[i, heads, t] = l[:, 0]
                out[i, t, heads] = np.exp(s - l) @ k[:, :512]
    return out.astype(np.float32).astype(BF16).astype(np.float64), lse


def quantize_all(cache):
    """FP8 cache of a BF16 cache with the library's quantizer (NaN rows stay
    NaN: 0xFF entries), and its dequantization as a BF16 cache. Any page size:
    the quantizer takes 16-token pages, and a contiguous cache's slot s is
    flat row s whatever the page size (num_blocks * page must divide by 16)."""
    num_blocks, page, h_kv, _ = cache.shape
    n_slots = num_blocks * page
    assert n_slots % 16 == 0
    rows = cache.reshape(n_slots, h_kv, 576)
    finite = np.isfinite(rows.astype(np.float32)).all(axis=(1, 2))
    fp8 = np.full((n_slots // 16, 16, h_kv, 656), 0xFF, np.uint8)
    slots = np.flatnonzero(finite).astype(np.int64)
    mla.quantize_kvcache_fp8(np.ascontiguousarray(rows[slots]), slots, fp8)
    fp8 = fp8.reshape(num_blocks, page, h_kv, 656)
    deq = dequantize(fp8).astype(BF16)
    assert np.isfinite(deq.reshape(n_slots, h_kv, 576)[finite].astype(np.float32)).all()
    return fp8, deq


def sparse_call(q, cache, indices, lengths, meta, splits, scale=None, fp8=False, **kw):
    return mla.flash_mla_with_kvcache(q, cache, None, None, 512, meta, splits, scale, False,
                                      fp8, indices, topk_length=lengths, **kw)


def check_sparse(out, lse, ref_out, ref_lse, what):
    assert out.dtype == BF16 and lse.dtype == np.float32
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape, what
    assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "out " + what)
    assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "lse " + what)
    empty = np.isinf(ref_lse)  # [b, h_q, s_q]: no valid slot -> out exactly 0
    assert (out.astype(np.float32).transpose(0, 2, 1, 3)[empty] == 0).all(), what


@pytest.mark.parametrize(
    "b,s_q,h_q,h_kv,topk,page,fp8,varlen,num_sms,scale",
    [
        (2, 1, 16, 1, 1, 64, False, False, 132, None),     # topk 1
        (3, 2, 64, 1, 64, 64, False, True, 132, 0.3),      # topk_length, a 0 length
        (2, 2, 128, 1, 100, 7, False, False, 132, None),   # odd page
        (1, 2, 16, 1, 2048, 64, False, False, 132, None),  # long lists, split across parts
        (4, 1, 64, 1, 256, 16, False, True, 8, 0.2),
        (2, 2, 64, 1, 100, 64, True, True, 132, None),     # FP8 (V3.2 configuration)
        (3, 1, 128, 1, 64, 7, True, False, 20, 0.25),      # FP8, odd page
        (2, 2, 32, 2, 80, 32, False, True, 132, None),     # h_kv = 2
        (1, 2, 128, 1, 2048, 64, True, True, 132, None),   # FlashMLA's V3.2 decode shape
    ],
)
def test_sparse_matches_float64_reference(b, s_q, h_q, h_kv, topk, page, fp8, varlen, num_sms,
                                          scale, poisoned_np_empty):
    nb = None
    if fp8 and page % 16:
        nb = 16 * -(-max(2 * topk, 32) // (16 * page) + 1)  # num_blocks * page % 16 == 0
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, h_kv, topk, page,
                                                 seed=1000 + topk + h_q, varlen=varlen,
                                                 num_blocks=nb)
    what = "b=%d s_q=%d h_q=%d h_kv=%d topk=%d page=%d fp8=%s varlen=%s num_sms=%d" % (
        b, s_q, h_q, h_kv, topk, page, fp8, varlen, num_sms)
    meta, splits = mla.get_mla_metadata(np.zeros(b, np.int32), s_q * h_q // h_kv, h_kv, h_q,
                                        fp8, topk, num_sms=num_sms, topk_length=lengths)
    assert meta.dtype == np.int32 and meta.shape[1] == 8
    assert splits.dtype == np.int32 and splits.shape == (b * s_q + 1,) and splits[0] == 0
    assert (np.diff(splits) >= 1).all()
    if fp8:
        kc, deq = quantize_all(cache)
    else:
        kc = deq = cache
    out, lse = sparse_call(q, kc, idx, lengths, meta, splits, scale, fp8)
    ref_out, ref_lse = sparse_reference(q, deq, idx, lengths, 576 ** -0.5 if scale is None
                                        else scale)
    check_sparse(out, lse, ref_out, ref_lse, what)
    if fp8:  # the FP8 decode is the BF16 decode of the dequantized cache, bit for bit
        out16, lse16 = sparse_call(q, deq, idx, lengths, meta, splits, scale)
        assert np.array_equal(out.view(np.uint16), out16.view(np.uint16)), what
        assert np.array_equal(lse.view(np.int32), lse16.view(np.int32)), what


def test_sparse_split_plans_and_threads(poisoned_np_empty):
    """One problem under several plans (1 part: nothing split .. 1000 parts:
    every position cut across many) and thread counts, all against the
    reference; a plan's result does not depend on the thread count."""
    b, s_q, h_q, topk = 3, 2, 64, 300
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, topk, 64, seed=77, varlen=True)
    ref_out, ref_lse = sparse_reference(q, cache, idx, lengths, 0.15)
    for num_sms in (1, 5, 132, 1000):
        meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, topk=topk, num_sms=num_sms,
                                            topk_length=lengths)
        results = []
        for threads in (1, 0):
            out, lse = sparse_call(q, cache, idx, lengths, meta, splits, 0.15, num_threads=threads)
            check_sparse(out, lse, ref_out, ref_lse, "num_sms=%d threads=%d" % (num_sms, threads))
            results.append((out.view(np.uint16).copy(), lse.view(np.int32).copy()))
        assert np.array_equal(results[0][0], results[1][0])
        assert np.array_equal(results[0][1], results[1][1])
        if num_sms == 1:
            assert splits[-1] == b * s_q  # one part: no position split
    assert splits[-1] >= b * s_q + 4  # 1000 parts: positions cut into several pieces


def test_sparse_plan_is_the_dense_plan_of_the_positions():
    """mla.h: the sparse plan is dinf_mla_get_metadata's for
    cache_seqlens'[b * s_q + t] = topk_length[b] (or topk), with parts from
    num_sm_parts(h_q / h_kv, h_kv, num_sms)."""
    lengths = np.array([700, 0, 65, 64, 1, 3000], np.int32)
    for s_q, h_q, h_kv, num_sms in ((1, 16, 1, 132), (2, 128, 1, 132), (3, 64, 2, 300),
                                    (2, 16, 1, 7)):
        rows = s_q * h_q // h_kv
        meta, splits = mla.get_mla_metadata(lengths, rows, h_kv, h_q, True, 3000, num_sms=num_sms,
                                            topk_length=lengths)
        dmeta, dsplits = mla.get_mla_metadata(np.repeat(lengths, s_q), h_q // h_kv, h_kv,
                                              num_sms=num_sms)
        assert np.array_equal(meta, dmeta) and np.array_equal(splits, dsplits)
        # without topk_length every position has topk keys
        meta, splits = mla.get_mla_metadata(lengths, rows, h_kv, h_q, topk=100, num_sms=num_sms)
        dmeta, dsplits = mla.get_mla_metadata(np.full(len(lengths) * s_q, 100, np.int32),
                                              h_q // h_kv, h_kv, num_sms=num_sms)
        assert np.array_equal(meta, dmeta) and np.array_equal(splits, dsplits)


def dense_as_sparse(bt, lens, page, nan_slot):
    """indices [b, 1, topk] listing keys 0..s_k-1 of each dense request through
    its block table; the tail (past topk_length = lens) points at a NaN slot."""
    b = len(lens)
    topk = max(int(lens.max()), 1)
    idx = np.full((b, 1, topk), nan_slot, np.int32)
    for i in range(b):
        j = np.arange(int(lens[i]))
        idx[i, 0, :len(j)] = bt[i, j // page] * page + j % page
    return idx


@pytest.mark.parametrize("fp8,page,num_sms", [(False, 64, 132), (False, 16, 1000), (True, 16, 40)])
def test_sparse_over_dense_keys_is_the_dense_decode_bit_for_bit(fp8, page, num_sms,
                                                                poisoned_np_empty):
    """s_q = 1 and indices = keys 0..s_k-1 of a dense request: same plan
    lengths, same plan, same arithmetic on the CPU: identical bits."""
    b, h_q = 6, 32
    q, cache, bt, lens = make_problem(b, 1, h_q, 1, 150, True, page, seed=90 + page, zeros=True)
    lens[2] = 0
    nan_page = int(np.setdiff1d(np.arange(cache.shape[0]), bt[bt < cache.shape[0]])[0])
    assert np.isnan(cache[nan_page].astype(np.float32)).all()
    idx = dense_as_sparse(bt, lens, page, nan_page * page + 3)
    topk = idx.shape[2]
    if fp8:
        kc, _ = quantize_all(cache)
    else:
        kc = cache
    dmeta, dsplits = mla.get_mla_metadata(lens, h_q, 1, num_sms=num_sms)
    smeta, ssplits = mla.get_mla_metadata(lens, h_q, 1, h_q, fp8, topk, num_sms=num_sms,
                                          topk_length=lens)
    assert np.array_equal(dmeta, smeta) and np.array_equal(dsplits, ssplits)
    dout, dlse = mla.flash_mla_with_kvcache(q, kc, bt, lens, 512, dmeta, dsplits, 0.2, False, fp8)
    sout, slse = sparse_call(q, kc, idx, lens, smeta, ssplits, 0.2, fp8)
    assert np.isinf(slse[2]).all()
    assert np.array_equal(dout.view(np.uint16), sout.view(np.uint16))
    assert np.array_equal(dlse.view(np.int32), slse.view(np.int32))
    # every request of length topk: no topk_length needed
    full = np.full(b, topk, np.int32)
    q, cache, bt, _ = make_problem(b, 1, h_q, 1, topk, False, page, seed=91)
    idx = dense_as_sparse(bt, full, page, 0)
    dmeta, dsplits = mla.get_mla_metadata(full, h_q, 1, num_sms=num_sms)
    smeta, ssplits = mla.get_mla_metadata(full, h_q, 1, h_q, topk=topk, num_sms=num_sms)
    dout, dlse = mla.flash_mla_with_kvcache(q, cache, bt, full, 512, dmeta, dsplits)
    sout, slse = sparse_call(q, cache, idx, None, smeta, ssplits)
    assert np.array_equal(dout.view(np.uint16), sout.view(np.uint16))
    assert np.array_equal(dlse.view(np.int32), slse.view(np.int32))


def test_sparse_ignores_block_table_and_cache_seqlens():
    q, cache, idx, lengths = make_sparse_problem(2, 2, 16, 1, 50, 64, seed=3, varlen=True)
    meta, splits = mla.get_mla_metadata(None, 32, 1, 16, topk=50, topk_length=lengths)
    out, lse = sparse_call(q, cache, idx, lengths, meta, splits)
    garbage = mla.flash_mla_with_kvcache(q, cache, np.full((2, 1), -9, np.int32),
                                         np.full(2, -9, np.int32), 512, meta, splits,
                                         indices=idx, topk_length=lengths)
    assert np.array_equal(out.view(np.uint16), garbage[0].view(np.uint16))
    assert np.array_equal(lse.view(np.int32), garbage[1].view(np.int32))


def test_sparse_errors_are_precise():
    b, s_q, h_q, topk, page = 2, 2, 16, 64, 64
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, topk, page, seed=11, varlen=True)
    lens = np.full(b, 5, np.int32)
    meta, splits = mla.get_mla_metadata(lens, s_q * h_q, 1, h_q, topk=topk, topk_length=lengths)
    err = deepinfra.InvalidArgumentError

    # get_mla_metadata with topk
    with pytest.raises(err, match="num_heads_q is required with topk"):
        mla.get_mla_metadata(lens, s_q * h_q, 1, topk=topk)
    with pytest.raises(err, match=r"num_heads_per_head_k=32 is not s_q \* num_heads_q / "
                                  r"num_heads_k for any s_q \(num_heads_q=3, num_heads_k=1\)"):
        mla.get_mla_metadata(lens, 32, 1, 3, topk=topk)
    with pytest.raises(err, match="num_heads_q=16 is not a multiple of num_heads_k=3"):
        mla.get_mla_metadata(lens, 32, 3, 16, topk=topk)
    with pytest.raises(err, match="pass cache_seqlens or topk_length"):
        mla.get_mla_metadata(None, 32, 1, 16, topk=topk)
    with pytest.raises(err, match="topk_length has 3 entries but cache_seqlens 2"):
        mla.get_mla_metadata(lens, 32, 1, 16, topk=topk, topk_length=np.ones(3, np.int32))
    with pytest.raises(err, match=r"dinf_mla_get_sparse_metadata: topk_length\[1\]=65 must be "
                                  r"in \[0, topk=64\]"):
        mla.get_mla_metadata(lens, 32, 1, 16, topk=topk, topk_length=np.array([3, 65], np.int32))
    with pytest.raises(err, match=r"topk_length\[0\]=-1 must be in \[0, topk=64\]"):
        mla.get_mla_metadata(lens, 32, 1, 16, topk=topk, topk_length=np.array([-1, 6], np.int32))
    with pytest.raises(err, match=r"topk=0 must be in \[1, 1048576\]"):
        mla.get_mla_metadata(lens, 32, 1, 16, topk=0)
    with pytest.raises(err, match="cache_seqlens is required for a dense plan"):
        mla.get_mla_metadata(None, 32, 1)
    with pytest.raises(err, match="topk_length is only used with topk"):
        mla.get_mla_metadata(lens, 32, 1, 16, topk_length=lengths)

    # flash_mla_with_kvcache with indices
    with pytest.raises(err, match="causal=True is not supported with indices"):
        mla.flash_mla_with_kvcache(q, cache, None, None, 512, meta, splits, None, True,
                                   indices=idx, topk_length=lengths)
    with pytest.raises(err, match="indices must be 3-D"):
        sparse_call(q, cache, idx[:, 0], lengths, meta, splits)
    with pytest.raises(err, match=r"indices must be \[b, s_q, topk\] = \[2, 2, topk >= 1\]"):
        sparse_call(q, cache, idx[:, :1], lengths, meta, splits)
    with pytest.raises(err, match=r"indices must be \[b, s_q, topk\] = \[2, 2, topk >= 1\]"):
        sparse_call(q, cache, idx[:, :, :0], lengths, meta, splits)
    with pytest.raises(err, match="indices must be an integer array"):
        sparse_call(q, cache, idx.astype(np.float32), lengths, meta, splits)
    with pytest.raises(err, match=r"topk_length must have shape \(2,\)"):
        sparse_call(q, cache, idx, lengths[:1], meta, splits)
    dmeta, dsplits = mla.get_mla_metadata(lens, s_q * h_q, 1)
    with pytest.raises(err, match=r"num_splits must have shape \(5,\) = \(b \* s_q \+ 1,\)"):
        sparse_call(q, cache, idx, lengths, dmeta, dsplits)
    with pytest.raises(err, match="topk_length is only used with indices"):
        mla.flash_mla_with_kvcache(q, cache, np.zeros((b, 1), np.int32), lens, 512, meta, splits,
                                   topk_length=lengths)
    with pytest.raises(err, match="block_table and cache_seqlens are required"):
        mla.flash_mla_with_kvcache(q, cache, None, None, 512, meta, splits)
    n_slots = cache.shape[0] * page
    bad = idx.copy()
    bad[1, 0, 3] = n_slots  # one past the cache
    full_len = np.array([topk // 2, topk], np.int32)
    fmeta, fsplits = mla.get_mla_metadata(lens, s_q * h_q, 1, h_q, topk=topk,
                                          topk_length=full_len)
    with pytest.raises(err, match=r"dinf_mla_sparse_decode_with_kvcache: indices\[1\]\[0\]\[3\]=%d "
                                  r"is outside the cache: slots are below num_blocks \* "
                                  r"page_block_size = 3 \* 64" % n_slots):
        sparse_call(q, cache, bad, full_len, fmeta, fsplits)
    with pytest.raises(err, match=r"dinf_mla_sparse_decode_with_kvcache: topk_length\[1\]=65 "
                                  r"must be in \[0, topk=64\]"):
        sparse_call(q, cache, idx, np.array([3, 65], np.int32), meta, splits)
    # a plan made for another topk (other block counts) or other lengths
    other = mla.get_mla_metadata(lens, s_q * h_q, 1, h_q, topk=200)
    stale = "does not match the plan for these topk_length, topk, extras, batch, seq_len_q"
    with pytest.raises(err, match=stale):
        sparse_call(q, cache, idx, None, *other)
    zmeta, zsplits = mla.get_mla_metadata(lens, s_q * h_q, 1, h_q, topk=topk,
                                          topk_length=np.array([0, topk], np.int32))
    with pytest.raises(err, match=stale):
        sparse_call(q, cache, idx, np.array([3, topk], np.int32), zmeta, zsplits)
    with pytest.raises(err, match="num_heads_q=16 is not a multiple of num_heads_kv=3"):
        sparse_call(q, np.concatenate([cache] * 3, axis=2), idx, lengths, meta, splits)
    with pytest.raises(deepinfra.UnsupportedError, match="head_dim_v=256 is not supported"):
        mla.flash_mla_with_kvcache(q, cache, None, None, 256, meta, splits, indices=idx,
                                   topk_length=lengths)
    with pytest.raises(err, match="pass is_fp8_kvcache=True"):
        sparse_call(q, np.zeros((2, page, 1, 656), BF16), idx, lengths, meta, splits)


def test_sparse_entries_past_topk_length_are_never_read(poisoned_np_empty):
    """mla.h: entries at or past topk_length[b] are never read, so even an
    out-of-range slot there is neither an error nor a change of the result."""
    b, s_q, h_q, topk = 2, 2, 16, 40
    q, cache, idx, _ = make_sparse_problem(b, s_q, h_q, 1, topk, 64, seed=21)
    lengths = np.array([10, 25], np.int32)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, topk=topk, topk_length=lengths)
    out, lse = sparse_call(q, cache, idx, lengths, meta, splits)
    tail = idx.copy()
    tail[0, :, 10:] = 2**31 - 1
    tail[1, :, 25:] = cache.shape[0] * 64
    out2, lse2 = sparse_call(q, cache, tail, lengths, meta, splits)
    assert np.array_equal(out.view(np.uint16), out2.view(np.uint16))
    assert np.array_equal(lse.view(np.int32), lse2.view(np.int32))
    ref_out, ref_lse = sparse_reference(q, cache, idx, lengths, 576 ** -0.5)
    check_sparse(out, lse, ref_out, ref_lse, "lengths 10, 25")


def test_sparse_result_depends_on_slots_not_on_the_page_size(poisoned_np_empty):
    """A slot is page * page_block_size + row, i.e. the flat row of a
    contiguous cache: viewing the same cache with pages of 1, 7 or 112 rows
    gives the same result, bit for bit; batch 0 and all-zero topk_length
    work (+inf lse, zero out)."""
    q, cache, idx, _ = make_sparse_problem(2, 2, 16, 1, 30, 112, seed=8)
    lengths = np.array([30, 11], np.int32)
    meta, splits = mla.get_mla_metadata(None, 32, 1, 16, topk=30, topk_length=lengths)
    results = []
    for page in (1, 7, 112):
        view = cache.reshape(-1, page, 1, 576)
        out, lse = sparse_call(q, view, idx, lengths, meta, splits)
        results.append((out.view(np.uint16), lse.view(np.int32)))
    for r in results[1:]:
        assert np.array_equal(r[0], results[0][0]) and np.array_equal(r[1], results[0][1])
    ref_out, ref_lse = sparse_reference(q, cache, idx, lengths, 576 ** -0.5)
    check_sparse(results[0][0].view(BF16), results[0][1].view(np.float32), ref_out, ref_lse,
                 "page 1")
    zero = np.zeros(2, np.int32)
    meta, splits = mla.get_mla_metadata(None, 32, 1, 16, topk=30, topk_length=zero)
    out, lse = sparse_call(q, cache, idx, zero, meta, splits)
    assert np.isinf(lse).all() and (lse > 0).all() and (out.astype(np.float32) == 0).all()
    meta, splits = mla.get_mla_metadata(np.zeros(0, np.int32), 32, 1, 16, topk=30)
    assert splits.tolist() == [0]
    out, lse = sparse_call(q[:0], cache, idx[:0], None, meta, splits)
    assert out.shape == (0, 2, 16, 512) and lse.shape == (0, 16, 2)


def sparse_reference_ex(q, cache, indices, topk_length, scale, sink=None, ecache=None,
                        eindices=None, elengths=None):
    """float64 with FlashMLA's 2026 extras: the keys of both lists in one
    softmax, the sink (per head) in the denominator only, lse without it."""
    b, s_q, h_q, d = q.shape  # d: 576, or 512 for the MODEL1 cache (V = the whole row)
    h_kv = cache.shape[2]
    group = h_q // h_kv
    flat = cache.reshape(-1, h_kv, d)
    out = np.zeros((b, s_q, h_q, 512))
    lse = np.full((b, h_q, s_q), np.inf)
    for i in range(b):
        n = indices.shape[2] if topk_length is None else int(topk_length[i])
        for t in range(s_q):
            slots = indices[i, t, :n]
            keys = flat[slots[slots >= 0]].astype(np.float64)
            if ecache is not None:
                e = eindices.shape[2] if elengths is None else int(elengths[i])
                es = eindices[i, t, :e]
                ekeys = ecache.reshape(-1, h_kv, d)[es[es >= 0]].astype(np.float64)
                keys = np.concatenate([keys, ekeys])
            if len(keys) == 0:
                continue
            for hk in range(h_kv):
                heads = slice(hk * group, (hk + 1) * group)
                k = keys[:, hk]
                s = (q[i, t, heads].astype(np.float64) @ k.T) * scale
                m = s.max(axis=1, keepdims=True)
                total = np.exp(s - m).sum(axis=1, keepdims=True)
                lse[i, heads, t] = (m + np.log(total))[:, 0]
                den = m + np.log(total)
                if sink is not None:
                    sk = sink[heads].astype(np.float64)[:, None]
                    with np.errstate(over="ignore"):
                        den = np.where(np.isposinf(sk), np.inf,
                                       m + np.log(total + np.exp(np.minimum(sk - m, 700))))
                out[i, t, heads] = np.exp(s - den) @ k[:, :512]
    return out.astype(np.float32).astype(BF16).astype(np.float64), lse


@pytest.mark.parametrize(
    "fp8,with_sink,with_extra,elen,epage,num_sms",
    [
        (False, True, False, False, 0, 132),   # sink only
        (False, False, True, True, 5, 132),    # extra cache only, odd page, split plans
        (False, True, True, False, 64, 8),
        (True, True, True, True, 64, 132),     # FP8 (V3.2 layout) with both
        (True, True, True, False, 3, 20),
    ],
)
def test_sparse_extras_match_float64_reference(fp8, with_sink, with_extra, elen, epage, num_sms,
                                               poisoned_np_empty):
    """attn_sink and the extra cache (FlashMLA's 2026 keywords) against float64."""
    b, s_q, h_q, topk, etopk = 3, 2, 16, 100, 70
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, topk, 64, seed=31, varlen=True)
    rng = np.random.default_rng(32)
    sink = None
    if with_sink:
        sink = rng.uniform(-2, 8, h_q).astype(np.float32)
        sink[0], sink[1] = -np.inf, np.inf
    ecache = eidx = elengths = None
    if with_extra:
        blocks = 16 * -(-2 * etopk // (16 * epage))  # slots a multiple of 16 (quantize_all)
        _, ecache, eidx, elengths = make_sparse_problem(b, s_q, h_q, 1, etopk, epage,
                                                        seed=33, varlen=elen, num_blocks=blocks)
    kc, deq, ekc, edeq = cache, cache, ecache, ecache
    if fp8:
        kc, deq = quantize_all(cache)
        if with_extra:
            ekc, edeq = quantize_all(ecache)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, fp8, topk, num_sms=num_sms,
                                        topk_length=lengths,
                                        extra_topk=etopk if with_extra else None,
                                        extra_topk_length=elengths)
    out, lse = sparse_call(q, kc, idx, lengths, meta, splits, None, fp8, attn_sink=sink,
                           extra_k_cache=ekc, extra_indices_in_kvcache=eidx,
                           extra_topk_length=elengths)
    ref_out, ref_lse = sparse_reference_ex(q, deq, idx, lengths, 576 ** -0.5, sink, edeq, eidx,
                                           elengths)
    what = "fp8=%s sink=%s extra=%s" % (fp8, with_sink, with_extra)
    assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "out " + what)
    assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "lse " + what)
    if with_sink:  # +inf sink: out 0; the sink never changes lse
        assert (out[:, :, 1].astype(np.float32) == 0).all()
        _, lse0 = sparse_call(q, kc, idx, lengths, meta, splits, None, fp8, extra_k_cache=ekc,
                              extra_indices_in_kvcache=eidx, extra_topk_length=elengths)
        assert np.array_equal(lse, lse0)


def test_sparse_extras_lazy_plan_and_errors():
    """The lazy plan makes the extra cache's plan by itself (the eager plan's
    bits); extras on a dense decode, half-given extras, wrong shapes and a
    plan made without the extra lists are refused by name."""
    b, s_q, h_q = 2, 2, 16
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, 64, 64, seed=41, varlen=True)
    _, ecache, eidx, elengths = make_sparse_problem(b, s_q, h_q, 1, 40, 7, seed=42, varlen=True)
    sink = np.linspace(-1, 3, h_q).astype(np.float32)
    kw = dict(attn_sink=sink, extra_k_cache=ecache, extra_indices_in_kvcache=eidx,
              extra_topk_length=elengths)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, False, 64, topk_length=lengths,
                                        extra_topk=40, extra_topk_length=elengths)
    want_out, want_lse = sparse_call(q, cache, idx, lengths, meta, splits, **kw)
    sched, _ = mla.get_mla_metadata()
    for _ in range(2):
        out, lse = sparse_call(q, cache, idx, lengths, sched, None, **kw)
        assert np.array_equal(out.view(np.uint16), want_out.view(np.uint16))
        assert np.array_equal(lse, want_lse)
    assert sched.config["extra_topk"] == 40
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"extra_topk 40 -> 41"):
        sparse_call(q, cache, idx, lengths, sched, None, extra_k_cache=ecache,
                    extra_indices_in_kvcache=np.concatenate([eidx, eidx[..., :1]], axis=2))
    err = deepinfra.InvalidArgumentError
    # a refused first call leaves the lazy plan unmade (the extras are checked first)
    sched2, _ = mla.get_mla_metadata()
    with pytest.raises(err, match="extra_indices_in_kvcache must be given with extra_k_cache"):
        sparse_call(q, cache, idx, lengths, sched2, None, extra_k_cache=ecache)
    assert sched2.config is None
    out2, _ = sparse_call(q, cache, idx, lengths, sched2, None, **kw)
    assert np.array_equal(out2.view(np.uint16), want_out.view(np.uint16))
    # the extra cache is named in its own errors
    with pytest.raises(err, match="extra_k_cache's last dimension 512 differs from q's 576"):
        sparse_call(q, cache, idx, lengths, meta, splits,
                    **dict(kw, extra_k_cache=np.ascontiguousarray(ecache[..., :512])))
    # the C struct's layout (mla.h, dinf_mla_sparse_extras; tests/mla/test_mla_sparse.c pins it too)
    ex = deepinfra._lib.MlaSparseExtras()
    assert ctypes.sizeof(ex) == 80 and ex.size == 80
    assert deepinfra._lib.MlaSparseExtras.extra_kv_token_stride.offset == 72
    assert deepinfra._lib.MlaSparseExtras.extra_page_block_size.offset == 56
    # a plan made without the extra lists
    pmeta, psplits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, False, 64, topk_length=lengths)
    with pytest.raises(err, match="topk_length, topk, extras, batch, seq_len_q"):
        sparse_call(q, cache, idx, lengths, pmeta, psplits, **kw)
    # the dense decode takes none of them
    dq, dcache, bt, lens = make_problem(1, 1, 16, 1, 100, True, 64, seed=43)
    dmeta, dsplits = mla.get_mla_metadata(lens, 16, 1)
    for name, value in (("attn_sink", sink), ("extra_k_cache", ecache),
                        ("extra_indices_in_kvcache", eidx), ("extra_topk_length", elengths)):
        with pytest.raises(deepinfra.UnsupportedError, match="%s is supported by the sparse "
                           "decode only" % name):
            mla.flash_mla_with_kvcache(dq, dcache, bt, lens, 512, dmeta, dsplits, **{name: value})
    with pytest.raises(err, match="extra_indices_in_kvcache must be given with extra_k_cache"):
        sparse_call(q, cache, idx, lengths, meta, splits, extra_k_cache=ecache)
    with pytest.raises(err, match="need extra_k_cache"):
        sparse_call(q, cache, idx, lengths, meta, splits, extra_indices_in_kvcache=eidx)
    with pytest.raises(err, match=r"attn_sink must be a float array of shape \(16,\)"):
        sparse_call(q, cache, idx, lengths, meta, splits, **dict(kw, attn_sink=sink[:3]))
    with pytest.raises(err, match="extra_indices_in_kvcache must be"):
        sparse_call(q, cache, idx, lengths, meta, splits, **dict(kw, extra_indices_in_kvcache=eidx[:1]))
    with pytest.raises(err, match="extra_k_cache has 2 KV heads, k_cache 1"):
        sparse_call(q, cache, idx, lengths, meta, splits,
                    **dict(kw, extra_k_cache=np.concatenate([ecache] * 2, axis=2)))
    with pytest.raises(err, match=r"extra_topk_length must have shape \(2,\)"):
        sparse_call(q, cache, idx, lengths, meta, splits,
                    **dict(kw, extra_topk_length=elengths[:1]))
    with pytest.raises(err, match=r"extras->extra_topk_length\[1\]=41 must be in \[0, "
                       r"extra_topk=40\]"):
        mla.get_mla_metadata(None, s_q * h_q, 1, h_q, False, 64, topk_length=lengths,
                             extra_topk=40, extra_topk_length=np.array([3, 41], np.int32))
    with pytest.raises(err, match="extra_topk_length needs extra_topk"):
        mla.get_mla_metadata(None, s_q * h_q, 1, h_q, False, 64, topk_length=lengths,
                             extra_topk_length=elengths)
    with pytest.raises(err, match="only used with topk"):
        mla.get_mla_metadata(lens, 16, 1, extra_topk=4)
    bad = eidx.copy()
    bad[0, 0, 0] = ecache.shape[0] * ecache.shape[1]
    elen_full = np.full(b, 40, np.int32)
    fmeta, fsplits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, False, 64, topk_length=lengths,
                                          extra_topk=40, extra_topk_length=elen_full)
    with pytest.raises(err, match=r"extras->extra_indices\[0\]\[0\]\[0\]=\d+ is outside "
                       "the extra cache"):
        sparse_call(q, cache, idx, lengths, fmeta, fsplits, extra_k_cache=ecache,
                    extra_indices_in_kvcache=bad, extra_topk_length=elen_full)


def test_lazy_plan_of_the_2026_api_equals_the_eager_plan():
    """get_mla_metadata() without arguments (FlashMLA's 2026 API) returns
    (FlashMLASchedMeta, None); the first flash_mla_with_kvcache call makes the
    plan, later calls reuse it, and the results are the eager plan's bits;
    another configuration or a num_splits is refused by name."""
    q, cache, bt, lens = make_problem(3, 2, 16, 1, 200, True, 64, seed=71)
    meta, splits = mla.get_mla_metadata(lens, 32, 1)
    want_out, want_lse = mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, meta, splits,
                                                    causal=True)
    sched, none = mla.get_mla_metadata()
    assert isinstance(sched, mla.FlashMLASchedMeta) and none is None and sched.config is None
    for _ in range(2):  # made by the first call, reused by the second
        out, lse = mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, sched, None, causal=True)
        assert np.array_equal(out.view(np.uint16), want_out.view(np.uint16))
        assert np.array_equal(lse, want_lse)
        assert np.array_equal(sched.tile_scheduler_metadata, meta)
        assert np.array_equal(sched.num_splits, splits)
    assert sched.config["causal"] is True and sched.config["b"] == 3
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"another configuration \(causal "
                       r"True -> False\)"):
        mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, sched, None, causal=False)
    with pytest.raises(deepinfra.InvalidArgumentError, match="num_splits must be None"):
        mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, mla.get_mla_metadata()[0], splits)
    with pytest.raises(deepinfra.InvalidArgumentError, match="num_heads_per_head_k and "
                       "num_heads_k are required"):
        mla.get_mla_metadata(lens)
    # the sparse decode (FP8 cache, no topk_length: the batch comes from q)
    q, cache, idx, lengths = make_sparse_problem(2, 2, 16, 1, 100, 16, seed=72)
    kc = quantize_all(cache)[0]
    meta, splits = mla.get_mla_metadata(np.zeros(2, np.int32), 32, 1, 16, True, 100)
    want_out, want_lse = sparse_call(q, kc, idx, None, meta, splits, None, True)
    sched, _ = mla.get_mla_metadata(num_sms=132)
    out, lse = sparse_call(q, kc, idx, None, sched, None, None, True)
    assert np.array_equal(out.view(np.uint16), want_out.view(np.uint16))
    assert np.array_equal(lse, want_lse)  # +inf where a position has no valid slot
    assert sched.config["topk"] == 100 and sched.config["is_fp8_kvcache"] is True


# ----------------------------------------------------------- MODEL1 cache --
# FlashMLA 2026's second FP8 format (d_qk = 512): block-major pages, ue8m0
# scales per 64 channels, V = the whole 512-wide row.


def model1_reference_bytes(rows, page):
    """FlashMLA's MODEL1 quantizer written out in numpy (independent of the
    library): rows [slots, 512] bf16 -> [num_blocks, padded page bytes]."""
    slots = rows.shape[0]
    nb = slots // page
    padded = -(-page * 584 // 576) * 576
    out = np.zeros((nb, padded), np.uint8)
    x = rows.astype(np.float32)
    for sl in range(slots):
        pg, r = divmod(sl, page)
        data = out[pg, r * 576:(r + 1) * 576]
        sc = out[pg, page * 576 + r * 8:page * 576 + r * 8 + 8]
        for g in range(7):
            grp = x[sl, g * 64:(g + 1) * 64]
            inv = max(np.float32(np.abs(grp).max()) / np.float32(448.0), np.float32(1e-4))
            e = int(np.ceil(np.log2(np.float64(inv))))
            sc[g] = e + 127
            q = (grp.astype(np.float64) / 2.0 ** e).astype(np.float32)
            data[g * 64:(g + 1) * 64] = q.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        data[448:576] = rows[sl, 448:512].view(np.uint8)
    return out


def model1_decode(cache_view):
    """[nb, page, 1, 584] MODEL1 view -> [nb, page, 1, 512] float32 rows."""
    nb, page = cache_view.shape[:2]
    out = np.zeros((nb, page, 1, 512), np.float32)
    for pg in range(nb):
        flat = np.lib.stride_tricks.as_strided(cache_view[pg, 0, 0], (page * 584,), (1,))
        for r in range(page):
            data = flat[r * 576:(r + 1) * 576]
            sc = flat[page * 576 + r * 8:page * 576 + r * 8 + 7].astype(np.int32)
            codes = data[:448].copy().view(ml_dtypes.float8_e4m3fn).astype(np.float32)
            scale = np.where(sc == 255, np.nan, np.exp2(np.minimum(sc, 254) - 127.0))
            out[pg, r, 0, :448] = codes * np.repeat(scale, 64).astype(np.float32)
            out[pg, r, 0, 448:] = data[448:].copy().view(BF16).astype(np.float32)
    return out.astype(BF16)


def make_model1_problem(b, s_q, h_q, topk, page, seed, varlen):
    """A sparse problem over a MODEL1 cache quantized by the library from the
    rows of make_sparse_problem (their first 512 values), pages padded as
    upstream's; returns (q [.., 512], cache view, decoded rows, indices, lengths)."""
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, topk, page, seed, varlen=varlen,
                                                 num_blocks=-(-2 * topk // page) + 1)
    nb = cache.shape[0]
    rows = np.ascontiguousarray(cache.reshape(nb * page, 1, 576)[:, :, :512])
    finite = np.isfinite(rows.astype(np.float32)).all(axis=(1, 2))
    kc = mla.empty_model1_kvcache(nb, page)
    kc[...] = 0xFF
    slots = np.flatnonzero(finite).astype(np.int64)
    mla.quantize_kvcache_fp8(np.ascontiguousarray(rows[slots]), slots, kc)
    return np.ascontiguousarray(q[..., :512]), kc, model1_decode(kc), rows, idx, lengths


@pytest.mark.parametrize("b,s_q,h_q,topk,page,varlen,num_sms", [
    (2, 2, 64, 100, 64, True, 132),
    (3, 1, 128, 70, 7, False, 132),
    (2, 2, 16, 130, 61, True, 8),
])
def test_model1_cache_matches_float64_reference(b, s_q, h_q, topk, page, varlen, num_sms,
                                                poisoned_np_empty):
    """head_dim 512 reads the MODEL1 cache (FlashMLA 2026): against float64 over
    rows decoded here from the bytes (ue8m0 scales per 64 channels, V the whole row)."""
    q, kc, deq, _, idx, lengths = make_model1_problem(b, s_q, h_q, topk, page, 600 + page, varlen)
    meta, splits = mla.get_mla_metadata(None if varlen else np.zeros(b, np.int32), s_q * h_q, 1,
                                        h_q, True, topk, num_sms=num_sms, topk_length=lengths)
    out, lse = sparse_call(q, kc, idx, lengths, meta, splits, None, True)
    assert out.shape == (b, s_q, h_q, 512)
    ref_out, ref_lse = sparse_reference_ex(q, deq, idx, lengths, 512 ** -0.5)
    assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "model1 out")
    assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "model1 lse")


def test_model1_quantizer_bytes_equal_flashmla_rule():
    """quantize_kvcache_fp8 with kv [n, 1, 512] writes FlashMLA's MODEL1 bytes
    (its quantizer's rule written out in numpy), into upstream's padded pages."""
    rng = np.random.default_rng(5)
    page, nb = 7, 3
    rows = np.clip(rng.standard_normal((nb * page, 512)) / 10, -1, 1).astype(np.float32)
    rows[3, :64] = 0.0
    rows[4, 64:128] *= 1e-3
    rows[5, 128:192] *= 1e4
    rows = rows.astype(BF16)
    kc = mla.empty_model1_kvcache(nb, page)
    mla.quantize_kvcache_fp8(rows.reshape(-1, 1, 512), np.arange(nb * page), kc)
    want = model1_reference_bytes(rows, page)
    for pg in range(nb):
        got = np.lib.stride_tricks.as_strided(kc[pg, 0, 0], (page * 584,), (1,))
        assert np.array_equal(got, want[pg, :page * 584]), "page %d" % pg
    err = deepinfra.InvalidArgumentError
    with pytest.raises(err, match=r"must have byte strides \(page, 584, any, 1\)"):
        mla.quantize_kvcache_fp8(rows.reshape(-1, 1, 512), np.arange(nb * page),
                                 np.zeros((nb, page, 1, 584), np.uint8)[:, ::-1])
    with pytest.raises(err, match=r"MODEL1 kv must be \[num_tokens, 1, 512\]"):
        mla.quantize_kvcache_fp8(np.zeros((2, 2, 512), BF16), np.arange(2), kc)


def test_model1_with_extras_lazy_plan_and_errors(poisoned_np_empty):
    """A MODEL1 extra cache (own page size) and the sink through the lazy plan:
    the eager plan's bits and the float64 reference; MODEL1-only refusals."""
    b, s_q, h_q = 2, 2, 16
    q, kc, deq, _, idx, lengths = make_model1_problem(b, s_q, h_q, 80, 64, 71, True)
    _, ekc, edeq, _, eidx, elengths = make_model1_problem(b, s_q, h_q, 50, 5, 72, True)
    sink = np.linspace(-1, 4, h_q).astype(np.float32)
    kw = dict(attn_sink=sink, extra_k_cache=ekc, extra_indices_in_kvcache=eidx,
              extra_topk_length=elengths)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, True, 80, topk_length=lengths,
                                        extra_topk=50, extra_topk_length=elengths)
    want_out, want_lse = sparse_call(q, kc, idx, lengths, meta, splits, None, True, **kw)
    sched, _ = mla.get_mla_metadata()
    out, lse = sparse_call(q, kc, idx, lengths, sched, None, None, True, **kw)
    assert np.array_equal(out.view(np.uint16), want_out.view(np.uint16))
    assert np.array_equal(lse, want_lse)
    ref_out, ref_lse = sparse_reference_ex(q, deq, idx, lengths, 512 ** -0.5, sink, edeq, eidx,
                                           elengths)
    assert_close(out, ref_out, 8e-4, 2.01 / 128, 5e-6, "model1 extras out")
    assert_close(lse, ref_lse, 1e-6, 8.01 / 65536, 5e-6, "model1 extras lse")
    err = deepinfra.InvalidArgumentError
    with pytest.raises(err, match=r"a MODEL1 k_cache \(head_dim 512\) must be"):
        sparse_call(q, np.zeros((4, 64, 1, 656), np.uint8), idx, lengths, meta, splits, None, True)
    with pytest.raises(err, match=r"a MODEL1 extra_k_cache \(head_dim 512\) must be"):
        sparse_call(q, kc, idx, lengths, meta, splits, None, True,
                    **dict(kw, extra_k_cache=np.zeros((4, 5, 1, 656), np.uint8)))
    with pytest.raises(deepinfra.UnsupportedError, match="supported by the sparse FP8 decode only"):
        sparse_call(q, deq, idx, lengths, meta, splits, None, False)
