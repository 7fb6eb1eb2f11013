"""deepinfra.gemm's weight-gradient GEMMs (DeepGEMM v1.3 names): 1x128 scales on
both operands, float32 output accumulated in place, against a numpy float64
reference; the k-grouped layout; the unquantized gradient; the binding's
checks; device arrays routed to DINF_EXEC_CUDA (fake arrays on any machine,
torch CUDA tensors where an sm_90 GPU and torch exist)."""

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import deepinfra  # noqa: E402
from deepinfra import gemm  # noqa: E402

E4M3 = ml_dtypes.float8_e4m3fn


def calc_diff(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    denominator = (x * x + y * y).sum()
    return 0.0 if denominator == 0 else 1 - 2 * (x * y).sum() / denominator


def reference(a, sa, b, sb):
    """float64: sum_kb sa[m,kb] * sb[n,kb] * sum_k a*b, and its terms' magnitude."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    k = a.shape[1]
    out = np.zeros((a.shape[0], b.shape[0]))
    mag = np.zeros_like(out)
    for j in range(-(-k // 128)):
        sl = slice(j * 128, min(k, j * 128 + 128))
        scale = sa[:, j:j + 1].astype(np.float64) * sb[:, j][None, :].astype(np.float64)
        out += scale * (a[:, sl] @ b[:, sl].T)
        mag += np.abs(scale) * (np.abs(a[:, sl]) @ np.abs(b[:, sl]).T)
    return out, mag


def quantized_pair(m, n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k), dtype=np.float32)
    y = rng.standard_normal((n, k), dtype=np.float32)
    return x, y, gemm.per_token_cast_to_fp8(x), gemm.per_token_cast_to_fp8(y)


@pytest.mark.parametrize("m,n,k", [(128, 256, 512), (37, 200, 700), (1, 5, 129), (200, 33, 100)])
def test_wgrad_accumulates_the_reference_into_out(m, n, k):
    x, y, (a, sa), (b, sb) = quantized_pair(m, n, k, seed=m * 7 + n + k)
    d0 = np.random.default_rng(1).standard_normal((m, n)).astype(np.float32)
    out = d0.copy()
    assert gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), out) is out
    ref, mag = reference(a, sa, b, sb)
    err = np.abs(out.astype(np.float64) - (d0 + ref))
    bound = 1e-5 * (mag + np.abs(d0)) + 1e-30
    assert (err <= bound).all(), "worst %g of the bound" % (err / bound).max()
    # the added term against the unquantized product
    assert calc_diff(out - d0, x.astype(np.float64) @ y.astype(np.float64).T) < 1e-3


def test_plain_and_mn_major_scales_agree_and_threads_do_not_matter():
    _, _, (a, sa), (b, sb) = quantized_pair(70, 90, 300, seed=2)
    out1 = np.ones((70, 90), np.float32)
    gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), out1, num_threads=1)
    out2 = np.ones((70, 90), np.float32)
    gemm.wgrad_gemm_fp8_fp8_fp32_nt(
        (a.view(np.uint8), gemm.get_col_major_tma_aligned_tensor(sa)),
        (b, gemm.get_col_major_tma_aligned_tensor(sb)), out2, num_threads=3)
    assert np.array_equal(out1.view(np.uint32), out2.view(np.uint32))


def test_weight_gradient_of_a_linear_layer_over_two_micro_batches():
    """dW += dy^T x for two micro-batches (tokens along k), quantized 1x128 along the
    tokens, against the float64 gradient."""
    rng = np.random.default_rng(7)
    n_out, n_in, tokens = 128, 192, 512
    dw = np.zeros((n_out, n_in), np.float32)
    ref = np.zeros((n_out, n_in))
    for _ in range(2):
        x = rng.standard_normal((tokens, n_in), dtype=np.float32)
        dy = rng.standard_normal((tokens, n_out), dtype=np.float32)
        gemm.wgrad_gemm_fp8_fp8_fp32_nt(gemm.per_token_cast_to_fp8(dy.T),
                                        gemm.per_token_cast_to_fp8(x.T), dw)
        ref += dy.T.astype(np.float64) @ x.astype(np.float64)
    assert calc_diff(dw, ref) < 1e-3


def test_out_with_a_row_stride_is_accumulated_in_place():
    _, _, (a, sa), (b, sb) = quantized_pair(20, 30, 256, seed=4)
    big = np.full((20, 36), 5.0, np.float32)
    out = big[:, :30]
    gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), out)
    ref, _ = reference(a, sa, b, sb)
    assert np.allclose(big[:, :30], 5.0 + ref, rtol=1e-5, atol=1e-5)
    assert (big[:, 30:] == 5.0).all()


def k_grouped_inputs(m, n, ks, seed):
    """Flat A / B and stacked scales as upstream's k-grouped layout, plus the groups."""
    rng = np.random.default_rng(seed)
    a_parts, b_parts, sa_parts, sb_parts, groups = [], [], [], [], []
    for kg in ks:
        x = rng.standard_normal((m, kg), dtype=np.float32)
        y = rng.standard_normal((n, kg), dtype=np.float32)
        a, sa = gemm.per_token_cast_to_fp8(x)
        b, sb = gemm.per_token_cast_to_fp8(y)
        groups.append(((a, sa), (b, sb), x, y))
        a_parts.append(a.reshape(-1))
        b_parts.append(b.reshape(-1))
        sa_parts.append(sa.T)  # [ceil(k_g/128), m]
        sb_parts.append(sb.T)
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return ((cat(a_parts, E4M3), np.concatenate(sa_parts).astype(np.float32)),
            (cat(b_parts, E4M3), np.concatenate(sb_parts).astype(np.float32)), groups)


def test_k_grouped_equals_one_call_per_group():
    m, n, ks = 70, 45, [300, 0, 128, 1, 260]
    lhs, rhs, groups = k_grouped_inputs(m, n, ks, seed=9)
    d0 = np.random.default_rng(3).standard_normal((len(ks), m, n)).astype(np.float32)
    out = d0.copy()
    assert gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, out, ks) is out
    for g, (ga, gb, x, y) in enumerate(groups):
        one = d0[g].copy()
        if ks[g]:
            gemm.wgrad_gemm_fp8_fp8_fp32_nt(ga, gb, one)
            assert calc_diff(out[g] - d0[g], x.astype(np.float64) @ y.astype(np.float64).T) < 1e-3
        assert np.array_equal(one.view(np.uint32), out[g].view(np.uint32)), "group %d" % g


def test_errors():
    _, _, (a, sa), (b, sb) = quantized_pair(16, 24, 256, seed=5)
    out = np.zeros((16, 24), np.float32)
    with pytest.raises(deepinfra.InvalidArgumentError, match="out must be float32"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), out.astype(np.float64))
    with pytest.raises(deepinfra.InvalidArgumentError, match="out has shape"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), out[:, :23])
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(deepinfra.InvalidArgumentError, match="out is read-only"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), ro)
    with pytest.raises(deepinfra.InvalidArgumentError, match="rhs scales must be float32"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb[:, :1]), out)
    with pytest.raises(deepinfra.InvalidArgumentError, match="rhs\\[0\\] has k=128"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b[:, :128], sb), out)
    with pytest.raises(deepinfra.InvalidArgumentError, match="unit element stride"):
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), np.zeros((16, 48), np.float32)[:, ::2])
    lhs, rhs, _ = k_grouped_inputs(8, 8, [128, 64], seed=1)
    outg = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(deepinfra.InvalidArgumentError, match="batch_sizes must be integers"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, outg, [128.0, 64.5])
    # the operands may come in any shape: read flat
    out2 = np.zeros((2, 8, 8), np.float32)
    gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt((lhs[0].reshape(8, -1), lhs[1]),
                                              (rhs[0].reshape(2, -1), rhs[1]), out2, [128, 64])
    gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, outg, [128, 64])
    assert np.array_equal(out2, outg)
    outg[:] = 0
    with pytest.raises(deepinfra.InvalidArgumentError, match="batch_sizes has a negative k"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, outg, [-1, 193])
    with pytest.raises(deepinfra.InvalidArgumentError, match="out has 2 groups but batch_sizes has 3"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, outg, [64, 64, 64])
    with pytest.raises(deepinfra.InvalidArgumentError, match="hold 1536 / 1536 codes"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, outg, [128, 32])
    with pytest.raises(deepinfra.InvalidArgumentError, match="lhs\\[1\\] must be float32 of shape"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt((lhs[0], lhs[1][:1]), rhs, outg, [128, 64])
    with pytest.raises(deepinfra.InvalidArgumentError, match="must be C-contiguous"):
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, np.zeros((2, 8, 16), np.float32)[:, :, :8],
                                                  [128, 64])


def test_kernel_config_of_the_wgrad_form():
    c = gemm.kernel_config("wgrad", 7168, 2112, 4096, num_sms=132)
    assert c.name == "fp8_gemm_1d1d" and len(c.constants) == 3, c
    assert gemm.kernel_config(3, 7168, 2112, 4096, num_sms=132) == c


# ------------------------------------------------------------ device arrays --

class FakeDeviceArray:
    """Just enough of the CUDA array interface (v3): nothing is ever read."""

    def __init__(self, shape, typestr, ptr, strides=None):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (ptr, False), "strides": strides, "version": 3}


def mn_major(rows, kb, ptr):
    aligned = -(-rows // 4) * 4
    return FakeDeviceArray((rows, kb), "<f4", ptr, strides=(4, 4 * aligned))


def test_device_calls_reach_the_c_library():
    m, n, k = 128, 96, 512
    a = FakeDeviceArray((m, k), "|u1", 0x7F0000200001)  # misaligned: rejected in C (or no GPU)
    b = FakeDeviceArray((n, k), "|u1", 0x7F0000300000)
    out = FakeDeviceArray((m, n), "<f4", 0x7F0000500000)
    with pytest.raises(deepinfra.DeepInfraError) as e:
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, mn_major(m, 4, 0x7F0000100000)),
                                        (b, mn_major(n, 4, 0x7F0000400000)), out)
    msg = str(e.value)
    assert msg.startswith("dinf_fp8_wgrad_gemm_nt: "), msg
    assert "16-byte aligned" in msg or "sm_90" in msg or "without CUDA" in msg, msg
    # k_g = 40: the device path's row-stride rule (or no GPU)
    af = FakeDeviceArray((m * 168,), "|u1", 0x7F0000200000)
    bf = FakeDeviceArray((n * 168,), "|u1", 0x7F0000300000)
    sa = FakeDeviceArray((2, m), "<f4", 0x7F0000100000)
    sb = FakeDeviceArray((2, n), "<f4", 0x7F0000400000)
    outg = FakeDeviceArray((2, m, n), "<f4", 0x7F0000500000)
    with pytest.raises(deepinfra.DeepInfraError) as e:
        gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt((af, sa), (bf, sb), outg, [128, 40])
    assert str(e.value).startswith("dinf_fp8_k_grouped_wgrad_gemm_nt: "), str(e.value)
    assert "ks[1]=40 is not a multiple of 16" in str(e.value) or "sm_90" in str(e.value) or \
        "without CUDA" in str(e.value), str(e.value)


@pytest.mark.parametrize("case,pattern", [
    ("out_bf16", "out must be f32 on the device"),
    ("plain_scales", "rhs\\[1\\] on the device must be M-major"),
    ("grouped_scales_unaligned", "lhs\\[1\\] must be a contiguous float32 \\[2, 132\\]"),
    ("grouped_codes", "lhs\\[0\\] must be a contiguous 1-D array of 24768 codes"),
    ("grouped_scales_strided", "rhs\\[1\\] must be a contiguous float32 \\[1, 96\\]"),
])
def test_device_arrays_are_checked_before_the_call(case, pattern):
    m, n, k = 129, 96, 256
    a = FakeDeviceArray((m, k), "|u1", 0x7F0000200000)
    b = FakeDeviceArray((n, k), "|u1", 0x7F0000300000)
    sa, sb = mn_major(m, 2, 0x7F0000100000), mn_major(n, 2, 0x7F0000400000)
    out = FakeDeviceArray((m, n), "<f4", 0x7F0000500000)
    with pytest.raises(deepinfra.InvalidArgumentError, match=pattern):
        if case == "out_bf16":
            gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb),
                                            FakeDeviceArray((m, n), "<u2", 0x7F0000500000))
        elif case == "plain_scales":
            gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, FakeDeviceArray((n, 2), "<f4", 0x7F0000400000)),
                                            out)
        elif case == "grouped_scales_strided":
            # one k block in all: a strided row of scales must still be refused
            gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(
                (FakeDeviceArray((m * 128,), "|u1", 0x7F0000200000),
                 FakeDeviceArray((1, 132), "<f4", 0x7F0000100000)),
                (FakeDeviceArray((n * 128,), "|u1", 0x7F0000300000),
                 FakeDeviceArray((1, 96), "<f4", 0x7F0000400000, strides=(768, 8))),
                FakeDeviceArray((1, m, n), "<f4", 0x7F0000500000), [128])
        else:
            af = FakeDeviceArray((m * 192,) if case == "grouped_scales_unaligned" else (m * 191,),
                                 "|u1", 0x7F0000200000)
            bf = FakeDeviceArray((n * 192,), "|u1", 0x7F0000300000)
            gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(
                (af, FakeDeviceArray((2, m), "<f4", 0x7F0000100000)),
                (bf, FakeDeviceArray((2, n), "<f4", 0x7F0000400000)),
                FakeDeviceArray((2, m, n), "<f4", 0x7F0000500000), [128, 64])


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        return None
    return torch


@pytest.mark.skipif(_torch_cuda() is None, reason="needs torch and an sm_90 GPU")
def test_torch_cuda_wgrad_matches_the_cpu_path():
    """The Hopper kernel against the CPU path on the same quantized inputs (the
    CPU is exact in its documented order; the tensor cores add in another), and
    the k-grouped form on torch tensors."""
    torch = _torch_cuda()
    rng = np.random.default_rng(11)
    for m, n, k in [(7168, 2112, 1024), (129, 250, 528), (64, 7168, 256)]:  # k % 16 == 0
        x = rng.standard_normal((m, k), dtype=np.float32)
        y = rng.standard_normal((n, k), dtype=np.float32)
        (a, sa), (b, sb) = gemm.per_token_cast_to_fp8(x), gemm.per_token_cast_to_fp8(y)
        d0 = rng.standard_normal((m, n)).astype(np.float32)
        cpu = d0.copy()
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((a, sa), (b, sb), cpu)
        t = lambda v: torch.from_numpy(np.ascontiguousarray(v)).cuda()  # noqa: E731
        gpu = t(d0)
        gemm.wgrad_gemm_fp8_fp8_fp32_nt((t(a.view(np.uint8)), t(sa)), (t(b.view(np.uint8)), t(sb)), gpu)
        torch.cuda.synchronize()
        got = gpu.cpu().numpy()
        _, mag = reference(a, sa, b, sb)
        assert (np.abs(got - cpu) <= 2e-6 * (mag + np.abs(d0)) + 1e-6).all(), (m, n, k)
    ks = [256, 0, 128, 512]
    lhs, rhs, _ = k_grouped_inputs(96, 160, ks, seed=12)
    cpu = np.zeros((4, 96, 160), np.float32)
    gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, cpu, ks)
    pad = lambda s, rows: np.pad(s, ((0, 0), (0, -(-rows // 4) * 4 - rows)))  # noqa: E731
    t = lambda v: torch.from_numpy(np.ascontiguousarray(v)).cuda()  # noqa: E731
    gpu = torch.zeros((4, 96, 160), device="cuda")
    gemm.k_grouped_wgrad_gemm_fp8_fp8_fp32_nt((t(lhs[0].view(np.uint8)), t(pad(lhs[1], 96))),
                                              (t(rhs[0].view(np.uint8)), t(pad(rhs[1], 160))), gpu, ks)
    torch.cuda.synchronize()
    assert calc_diff(gpu.cpu().numpy(), cpu) < 1e-6
