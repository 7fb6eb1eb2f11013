"""deepinfra.gemm on device arrays: routing to DINF_EXEC_CUDA and the binding's
checks, with fake __cuda_array_interface__ objects on any machine (they never
reach a kernel: every call here is rejected by the binding or, in C, before a
launch), and with torch CUDA tensors where a GPU and torch are present."""

import numpy as np
import pytest

import deepinfra
from deepinfra import gemm

ml_dtypes = pytest.importorskip("ml_dtypes")


class FakeDeviceArray:
    """Just enough of the CUDA array interface (v3): nothing is ever read."""

    def __init__(self, shape, typestr, ptr=0x7F0000000000, strides=None):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": typestr, "data": (ptr, False),
            "strides": strides, "version": 3,
        }


def aligned_scales(m, kb, groups=None, ptr=0x7F0000100000):
    aligned = -(-m // 4) * 4
    if groups is None:
        return FakeDeviceArray((m, kb), "<f4", ptr, strides=(4, 4 * aligned))
    return FakeDeviceArray((groups, m, kb), "<f4", ptr,
                           strides=(4 * aligned * kb, 4, 4 * aligned))


def normal_operands(m=128, n=256, k=512, a_ptr=0x7F0000200000):
    kb = -(-k // 128)
    a = FakeDeviceArray((m, k), "|u1", a_ptr)
    sa = aligned_scales(m, kb)
    b = FakeDeviceArray((n, k), "|u1", 0x7F0000300000)
    sb = FakeDeviceArray((-(-n // 128), kb), "<f4", 0x7F0000400000)
    out = FakeDeviceArray((m, n), "<u2", 0x7F0000500000)
    return (a, sa), (b, sb), out


def test_device_call_reaches_the_c_library_on_the_cuda_path():
    # A misaligned A: with a usable GPU the C library rejects it before any launch
    # (INVALID_ARGUMENT); without one it stops at the device check (UNSUPPORTED).
    # Either way the message proves the call went to DINF_EXEC_CUDA.
    lhs, rhs, out = normal_operands(a_ptr=0x7F0000200001)
    with pytest.raises(deepinfra.DeepInfraError) as e:
        gemm.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
    msg = str(e.value)
    assert msg.startswith("dinf_fp8_gemm_nt: "), msg
    assert ("16-byte aligned" in msg and isinstance(e.value, deepinfra.InvalidArgumentError)) or (
        ("sm_90" in msg or "without CUDA" in msg) and isinstance(e.value, deepinfra.UnsupportedError)
    ), msg


def test_grouped_device_calls_reach_the_c_library():
    k, n, groups = 256, 128, 3
    kb = 2
    b = FakeDeviceArray((groups, n, k), "|u1", 0x7F0000300001)  # misaligned: rejected in C
    sb = FakeDeviceArray((groups, 1, kb), "<f4", 0x7F0000400000)
    a = FakeDeviceArray((256, k), "|u1", 0x7F0000200000)
    idx = FakeDeviceArray((256,), "<i4", 0x7F0000600000)
    out = FakeDeviceArray((256, n), "<i2", 0x7F0000500000)
    with pytest.raises(deepinfra.DeepInfraError) as e:
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, aligned_scales(256, kb)), (b, sb), out,
                                                       idx)
    assert str(e.value).startswith("dinf_fp8_m_grouped_gemm_nt_contiguous: "), str(e.value)
    a3 = FakeDeviceArray((groups, 64, k), "|u1", 0x7F0000200000)
    out3 = FakeDeviceArray((groups, 64, n), "<u2", 0x7F0000500000)
    masked = FakeDeviceArray((groups,), "<i4", 0x7F0000600000)
    with pytest.raises(deepinfra.DeepInfraError) as e:
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a3, aligned_scales(64, kb, groups)), (b, sb),
                                                   out3, masked, 40)
    assert str(e.value).startswith("dinf_fp8_m_grouped_gemm_nt_masked: "), str(e.value)


def test_mixing_host_and_device_arrays_is_rejected():
    (a, sa), (b, sb), out = normal_operands()
    host_out = np.zeros((128, 256), ml_dtypes.bfloat16)
    with pytest.raises(deepinfra.InvalidArgumentError, match="a mix of device and host arrays: out"):
        gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), host_out)
    with pytest.raises(deepinfra.InvalidArgumentError, match="lhs\\[1\\], rhs\\[1\\] on the host"):
        gemm.gemm_fp8_fp8_bf16_nt((a, np.zeros((128, 4), np.float32)),
                                  (b, np.zeros((2, 4), np.float32)), out)


@pytest.mark.parametrize("case,pattern", [
    ("dtype", "typestr '<f8'"),
    ("scales_layout", "must be M-major and TMA-aligned"),
    ("row_major_scales_plain", "must be M-major and TMA-aligned"),
    ("element_stride", "unit element stride"),
    ("shape", "rhs\\[1\\] has shape"),
    ("out_dtype", "out must be bf16 or u16 or i16 on the device, got f32"),
    ("k_mismatch", "rhs\\[0\\] has k=256 but lhs\\[0\\] has k=512"),
    ("odd_byte_strides", "not multiples of its element size"),
    ("one_k_block_unpadded", "must be M-major and TMA-aligned"),
])
def test_device_arrays_are_checked_before_the_call(case, pattern):
    (a, sa), (b, sb), out = normal_operands()
    if case == "dtype":
        a = FakeDeviceArray((128, 512), "<f8")
    elif case == "scales_layout":
        sa = FakeDeviceArray((128, 4), "<f4", strides=(4, 4 * 132))
    elif case == "row_major_scales_plain":
        sa = FakeDeviceArray((128, 4), "<f4")  # C-contiguous [m, kb]: not M-major
    elif case == "element_stride":
        a = FakeDeviceArray((128, 512), "|u1", strides=(1024, 2))
    elif case == "shape":
        sb = FakeDeviceArray((3, 4), "<f4")
    elif case == "out_dtype":
        out = FakeDeviceArray((128, 256), "<f4")
    elif case == "k_mismatch":
        b = FakeDeviceArray((256, 256), "|u1")
    elif case == "one_k_block_unpadded":  # k <= 128, m % 4 != 0: [m, 1] of m floats only
        a = FakeDeviceArray((126, 128), "|u1")
        sa = FakeDeviceArray((126, 1), "<f4")
        b = FakeDeviceArray((256, 128), "|u1")
        sb = FakeDeviceArray((2, 1), "<f4")
        out = FakeDeviceArray((126, 256), "<u2")
    elif case == "odd_byte_strides":
        out = FakeDeviceArray((128, 256), "<u2", strides=(513, 2))
    with pytest.raises(deepinfra.InvalidArgumentError, match=pattern):
        gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)


def test_masked_device_groups_must_be_stacked_and_counts_int32():
    k, n, groups, m_max, kb = 256, 128, 2, 64, 2
    a = FakeDeviceArray((groups, m_max, k), "|u1", strides=(m_max * k * 2, k, 1))
    b = FakeDeviceArray((groups, n, k), "|u1")
    sb = FakeDeviceArray((groups, 1, kb), "<f4")
    out = FakeDeviceArray((groups, m_max, n), "<u2")
    masked = FakeDeviceArray((groups,), "<i4")
    with pytest.raises(deepinfra.InvalidArgumentError, match="lhs\\[0\\] must stack its groups"):
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked(
            (a, aligned_scales(m_max, kb, groups)), (b, sb), out, masked, 32)
    a = FakeDeviceArray((groups, m_max, k), "|u1")
    with pytest.raises(deepinfra.InvalidArgumentError, match="masked_m must be i32"):
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked(
            (a, aligned_scales(m_max, kb, groups)), (b, sb), out,
            FakeDeviceArray((groups,), "<i2"), 32)


# ----------------------------------------------------------- real GPU (torch) --

def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        return None
    return torch


torch_gpu = pytest.mark.skipif(_torch_cuda() is None, reason="needs torch and an sm_90 GPU")


def calc_diff(x, y):
    x, y = x.double(), y.double()
    denominator = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denominator)


def assert_each_close(out, ref):
    """calc_diff is global (one wrong element moves it by ~1/n): every element is
    also checked. The e4m3 rounding of the inputs puts an output ~3.7% of the rms
    output away from the unquantized product (measured on the CPU path, worst
    0.28 of this bound); a wrong element is off by about the rms itself."""
    out, ref = out.double(), ref.double()
    bound = 0.5 * ref.pow(2).mean().sqrt() + 0.1 * ref.abs()
    ratio = (out - ref).abs() / bound
    worst = int(ratio.argmax())
    assert float(ratio.max()) <= 1.0, "element %s: %g vs %g" % (
        divmod(worst, ref.shape[-1]), float(out.flatten()[worst]), float(ref.flatten()[worst]))


@torch_gpu
@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (128, 7168, 2048), (4096, 4096, 7168),
                                   (37, 200, 704)])
def test_torch_cuda_normal_gemm_matches_the_unquantized_product(m, n, k):
    torch = _torch_cuda()
    torch.manual_seed(0)
    x = torch.randn((m, k), device="cuda", dtype=torch.bfloat16)
    y = torch.randn((n, k), device="cuda", dtype=torch.bfloat16)
    a, sa = gemm.per_token_cast_to_fp8(x)
    b, sb = gemm.per_block_cast_to_fp8(y)
    assert a.is_cuda and str(a.dtype) == "torch.float8_e4m3fn"
    pad_n = -(-n // 8) * 8
    out = torch.full((m, pad_n), float("nan"), device="cuda", dtype=torch.bfloat16)[:, :n]
    gemm.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)  # plain scales: transposed on the GPU
    torch.cuda.synchronize()
    ref = x.float() @ y.float().t()
    assert not torch.isnan(out).any()
    assert calc_diff(out, ref) < 1e-3
    assert_each_close(out, ref)


@torch_gpu
def test_torch_cuda_grouped_gemms():
    torch = _torch_cuda()
    torch.manual_seed(1)
    groups, m_per, n, k = 4, 256, 4096, 2048
    x = torch.randn((groups * m_per, k), device="cuda", dtype=torch.bfloat16)
    y = torch.randn((groups, n, k), device="cuda", dtype=torch.bfloat16)
    a, sa = gemm.per_token_cast_to_fp8(x)
    sa = gemm.get_col_major_tma_aligned_tensor(sa)
    bq = [gemm.per_block_cast_to_fp8(y[g]) for g in range(groups)]
    b = torch.stack([q.view(torch.uint8) for q, _ in bq])  # uint8 codes: the device path takes them
    sb = torch.stack([s for _, s in bq])
    idx = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(m_per)
    idx[m_per:2 * m_per] = -1  # group 1's rows: skipped
    out = torch.full((groups * m_per, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    gemm.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, idx)
    torch.cuda.synchronize()
    for g in range(groups):
        rows = slice(g * m_per, (g + 1) * m_per)
        if g == 1:
            assert torch.isnan(out[rows]).all()
            continue
        ref = x[rows].float() @ y[g].float().t()
        assert calc_diff(out[rows], ref) < 1e-3
        assert_each_close(out[rows], ref)

    m_max = 320
    xm = torch.randn((groups, m_max, k), device="cuda", dtype=torch.bfloat16)
    qa = [gemm.per_token_cast_to_fp8(xm[g]) for g in range(groups)]
    am = torch.stack([q.view(torch.uint8) for q, _ in qa])
    sam = gemm.get_col_major_tma_aligned_tensor(torch.stack([s for _, s in qa]))
    masked = torch.tensor([0, 1, 200, 320], device="cuda", dtype=torch.int32)
    outm = torch.full((groups, m_max, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((am, sam), (b, sb), outm, masked, 130)
    torch.cuda.synchronize()
    for g, rows in enumerate([0, 1, 200, 320]):
        assert torch.isnan(outm[g, rows:]).all()
        if rows:
            ref = xm[g, :rows].float() @ y[g].float().t()
            assert calc_diff(outm[g, :rows], ref) < 1e-3
            assert_each_close(outm[g, :rows], ref)


def _sm90_device():
    info = deepinfra.device_query(0)
    return bool(info["usable"]) and (info["cc_major"], info["cc_minor"]) == (9, 0)


@pytest.mark.skipif(not _sm90_device(), reason="needs an sm_90 GPU")
def test_precompile_on_the_device_loads_what_the_calls_then_run(tmp_path):
    """gemm.precompile with num_sms=0 asks this GPU for its configs and loads
    them: the GEMM calls that follow neither compile nor load (fresh process,
    own cache)."""
    from conftest import run_python

    code = """
import torch
from deepinfra import gemm, jit
ms = [1, 64, 128]
configs = gemm.precompile("normal", 2112, 7168, ms)
before = jit.stats()
assert before.loads == len(configs) and before.compiles == len(configs), (before, configs)
for m in ms:
    x = torch.randn((m, 7168), device="cuda", dtype=torch.bfloat16)
    y = torch.randn((2112, 7168), device="cuda", dtype=torch.bfloat16)
    out = torch.empty((m, 2112), device="cuda", dtype=torch.bfloat16)
    gemm.gemm_fp8_fp8_bf16_nt(gemm.per_token_cast_to_fp8(x), gemm.per_block_cast_to_fp8(y), out)
torch.cuda.synchronize()
after = jit.stats()
assert after.compiles == before.compiles and after.loads == before.loads, (before, after)
print("ok", len(configs), [str(c) for c in configs])
"""
    p = run_python(code, {"DINF_JIT_CACHE_DIR": str(tmp_path / "cache"),
                          "DEEPINFRA_LIBRARY_PATH": deepinfra.library_path()})
    assert p.returncode == 0 and p.stdout.startswith("ok"), p.stdout + p.stderr
