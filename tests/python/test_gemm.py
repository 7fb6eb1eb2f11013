"""deepinfra.gemm: the DeepGEMM v1 names against a numpy float64 reference."""

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import deepinfra  # noqa: E402
from deepinfra import gemm  # noqa: E402

E4M3 = ml_dtypes.float8_e4m3fn
BF16 = ml_dtypes.bfloat16
POISON = 0x7FC1  # a bf16 NaN pattern the GEMM never produces


def calc_diff(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    denominator = (x * x + y * y).sum()
    return 0.0 if denominator == 0 else 1 - 2 * (x * y).sum() / denominator


def reference(a, sa, b, sb):
    """float64 block math: sum_kb sa[m,kb] * sb[n/128,kb] * sum_k a*b; and the row
    magnitudes (max over n of the sum of |terms|)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    m, k = a.shape
    n = b.shape[0]
    kb = -(-k // 128)
    out = np.zeros((m, n))
    mag = np.zeros((m, n))
    sb_cols = np.repeat(sb.astype(np.float64), 128, axis=0)[:n]  # [n, kb]
    for j in range(kb):
        sl = slice(j * 128, min(k, j * 128 + 128))
        scale = sa[:, j : j + 1].astype(np.float64) * sb_cols[:, j][None, :]
        out += scale * (a[:, sl] @ b[:, sl].T)
        mag += np.abs(scale) * (np.abs(a[:, sl]) @ np.abs(b[:, sl]).T)
    return out, mag.max(axis=1, keepdims=True)


def assert_matches_reference(got, ref, row_mag, what):
    """got (bf16) is the bf16 rounding of a value within 1e-5 x the row's magnitude."""
    tol = 1e-5 * row_mag
    lo = (ref - tol).astype(np.float32).astype(BF16).astype(np.float64)
    hi = (ref + tol).astype(np.float32).astype(BF16).astype(np.float64)
    g = got.astype(np.float64)
    bad = ~((g >= lo) & (g <= hi))
    assert not bad.any(), "%s: %d mismatches, first at %s: got %r, reference %r" % (
        what, bad.sum(), np.argwhere(bad)[0], g[bad][0], ref[bad][0])


def quantized(m, n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    return x, w, gemm.per_token_cast_to_fp8(x), gemm.per_block_cast_to_fp8(w)


@pytest.mark.parametrize("m,n,k", [(128, 256, 1024), (37, 200, 700), (1, 130, 129)])
def test_normal_gemm_matches_reference_and_unquantized_product(m, n, k):
    x, w, (a, sa), (b, sb) = quantized(m, n, k, seed=m * 1000 + n + k)
    assert a.dtype == E4M3 and a.shape == (m, k)
    assert sa.shape == (m, -(-k // 128)) and sb.shape == (-(-n // 128), -(-k // 128))
    out = np.empty((m, n), BF16)
    assert gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out) is out
    ref, mag = reference(a, sa, b, sb)
    assert_matches_reference(out, ref, mag, "m=%d n=%d k=%d" % (m, n, k))
    diff = calc_diff(out, x.astype(np.float64) @ w.astype(np.float64).T)
    assert diff < 1e-3, "calc_diff=%g" % diff


def test_bfloat16_input_and_plain_or_mn_major_scales_agree():
    x, w, (a, sa), (b, sb) = quantized(64, 256, 512, seed=3)
    a16, sa16 = gemm.per_token_cast_to_fp8(x.astype(BF16))
    xb = x.astype(BF16).astype(np.float32)
    a32, sa32 = gemm.per_token_cast_to_fp8(xb)
    np.testing.assert_array_equal(a16.view(np.uint8), a32.view(np.uint8))
    np.testing.assert_array_equal(sa16, sa32)
    plain = np.empty((64, 256), BF16)
    major = np.empty((64, 256), BF16)
    codes = np.empty((64, 256), np.uint16)
    gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), plain)
    gemm.gemm_fp8_fp8_bf16_nt((a, gemm.get_col_major_tma_aligned_tensor(sa)), (b, sb), major,
                              num_threads=2)
    gemm.gemm_fp8_fp8_bf16_nt((a.view(np.uint8), sa), (b.view(np.uint8), sb), codes,
                              num_threads=1)
    np.testing.assert_array_equal(plain.view(np.uint16), major.view(np.uint16))
    np.testing.assert_array_equal(plain.view(np.uint16), codes)


def test_col_major_tma_aligned_tensor_layout():
    s = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    t = gemm.get_col_major_tma_aligned_tensor(s)
    assert t.shape == (6, 3) and t.strides == (4, 4 * 8)
    np.testing.assert_array_equal(t, s)
    assert gemm.get_col_major_tma_aligned_tensor(t) is t  # already M-major: unchanged
    s3 = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    t3 = gemm.get_col_major_tma_aligned_tensor(s3)
    assert t3.shape == (2, 5, 2) and t3.strides == (4 * 8 * 2, 4, 4 * 8)
    np.testing.assert_array_equal(t3, s3)


def test_out_with_row_stride_is_written_in_place():
    _, _, (a, sa), (b, sb) = quantized(5, 40, 300, seed=9)
    big = np.full((5, 48), POISON, np.uint16)
    gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), big[:, :40])
    ref, mag = reference(a, sa, b, sb)
    assert_matches_reference(big[:, :40].view(BF16), ref, mag, "strided out")
    assert (big[:, 40:] == POISON).all()


def test_contiguous_layout_skips_minus_one_blocks():
    groups, n, k = 3, 200, 384
    block_group = [0, -1, 2, 1, 2]
    m_sum = 128 * len(block_group)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((m_sum, k), dtype=np.float32)
    w = rng.standard_normal((groups, n, k), dtype=np.float32)
    a, sa = gemm.per_token_cast_to_fp8(x)
    bs = [gemm.per_block_cast_to_fp8(w[g]) for g in range(groups)]
    b = np.stack([q for q, _ in bs])
    sb = np.stack([s for _, s in bs])
    m_indices = np.repeat(np.array(block_group, np.int32), 128)
    out = np.full((m_sum, n), POISON, np.uint16).view(BF16)
    gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    for blk, g in enumerate(block_group):
        rows = slice(blk * 128, blk * 128 + 128)
        if g < 0:
            assert (out[rows].view(np.uint16) == POISON).all(), "block %d was written" % blk
            continue
        ref, mag = reference(a[rows], sa[rows], b[g], sb[g])
        assert_matches_reference(out[rows], ref, mag, "block %d group %d" % (blk, g))
        diff = calc_diff(out[rows], x[rows].astype(np.float64) @ w[g].astype(np.float64).T)
        assert diff < 1e-3, "block %d: calc_diff=%g" % (blk, diff)


def test_masked_layout_computes_only_masked_rows():
    groups, m_max, n, k = 4, 160, 130, 256
    rng = np.random.default_rng(21)
    masked_m = np.array([0, 160, *rng.integers(1, 160, size=2)], np.int32)
    x = rng.standard_normal((groups, m_max, k), dtype=np.float32)
    w = rng.standard_normal((groups, n, k), dtype=np.float32)
    qa = [gemm.per_token_cast_to_fp8(x[g]) for g in range(groups)]
    qb = [gemm.per_block_cast_to_fp8(w[g]) for g in range(groups)]
    a = np.stack([q for q, _ in qa])
    sa = np.stack([s for _, s in qa])
    b = np.stack([q for q, _ in qb])
    sb = np.stack([s for _, s in qb])
    out = np.full((groups, m_max, n), POISON, np.uint16).view(BF16)
    gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m,
                                               int(masked_m.mean()) + 1)
    for g in range(groups):
        mm = int(masked_m[g])
        assert (out[g, mm:].view(np.uint16) == POISON).all(), "group %d rows >= %d" % (g, mm)
        if mm == 0:
            continue
        ref, mag = reference(a[g, :mm], sa[g, :mm], b[g], sb[g])
        assert_matches_reference(out[g, :mm], ref, mag, "group %d" % g)
        diff = calc_diff(out[g, :mm], x[g, :mm].astype(np.float64) @ w[g].astype(np.float64).T)
        assert diff < 1e-3, "group %d: calc_diff=%g" % (g, diff)


def test_errors_carry_the_library_message():
    _, _, (a, sa), (b, sb) = quantized(128, 64, 128, seed=1)
    out = np.empty((128, 64), BF16)
    b3, sb3 = b[None], sb[None]
    bad = np.zeros(128, np.int32)
    bad[77] = 1
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"m_indices\[77\]=1 is outside"):
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b3, sb3), out, bad)
    with pytest.raises(deepinfra.InvalidArgumentError, match=r"masked_m\[0\]=129 is outside"):
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a[None], sa[None]), (b3, sb3), out[None],
                                                   np.array([129], np.int32), 1)
    with pytest.raises(deepinfra.InvalidArgumentError, match="expected_m=-1 is negative"):
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a[None], sa[None]), (b3, sb3), out[None],
                                                   np.array([1], np.int32), -1)
    with pytest.raises(deepinfra.InvalidArgumentError, match="out has shape"):
        gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), np.empty((128, 63), BF16))
    with pytest.raises(deepinfra.InvalidArgumentError, match="must be float8_e4m3fn or uint8"):
        gemm.gemm_fp8_fp8_bf16_nt((a.astype(np.float32), sa), (b, sb), out)
    with pytest.raises(deepinfra.InvalidArgumentError, match="lhs scales must be float32"):
        gemm.gemm_fp8_fp8_bf16_nt((a, sa[:, :0]), (b, sb), out)


def test_masked_one_row_per_group_into_a_padded_output():
    """m_max == 1 with an output whose groups are padded: each group's row
    lands in its own group, the padding columns stay untouched."""
    groups, n, k = 3, 40, 128
    rng = np.random.default_rng(5)
    x = rng.standard_normal((groups, 1, k), dtype=np.float32)
    w = rng.standard_normal((groups, n, k), dtype=np.float32)
    qa = [gemm.per_token_cast_to_fp8(x[g]) for g in range(groups)]
    qb = [gemm.per_block_cast_to_fp8(w[g]) for g in range(groups)]
    a = np.stack([q for q, _ in qa])
    sa = np.stack([s for _, s in qa])
    b = np.stack([q for q, _ in qb])
    sb = np.stack([s for _, s in qb])
    big = np.full((groups, 48), POISON, np.uint16).view(BF16)
    out = big.reshape(groups, 1, 48)[:, :, :n]
    gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out,
                                               np.ones(groups, np.int32), 1)
    assert (big.view(np.uint16)[:, n:] == POISON).all(), "padding columns were written"
    for g in range(groups):
        ref, mag = reference(a[g], sa[g], b[g], sb[g])
        assert_matches_reference(out[g], ref, mag, "group %d" % g)
