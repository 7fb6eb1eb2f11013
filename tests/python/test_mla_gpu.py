"""deepinfra.mla on torch CUDA tensors (the sm_90a kernels on torch's current
stream) against the numpy CPU path. Skipped without torch or a CUDA device;
tools/gpu-check runs it on the GPU machine."""

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch", allow_module_level=True)

from deepinfra import mla  # noqa: E402

from test_mla import BF16, assert_close, make_problem  # noqa: E402


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Every torch.empty the wrapper makes on the GPU (out, lse, workspace,
    metadata) starts as NaN (floating point; 0xFF bytes for the workspace) or
    0x5A5A5A5A (int32 metadata), so an element the kernels leave unwritten
    fails the comparison (a recycled block could otherwise hold the previous
    call's nearly equal results)."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_cuda and t.numel():
            if t.is_floating_point():
                t.fill_(float("nan"))
            elif t.dtype == torch.uint8:
                t.fill_(0xFF)  # the workspace: NaN partials
            else:
                t.fill_(0x5A5A5A5A)
        return t

    monkeypatch.setattr(torch, "empty", empty)


def to_gpu_bf16(x):
    return torch.from_numpy(np.ascontiguousarray(x).view(np.int16).copy()) \
        .view(torch.bfloat16).cuda()


@pytest.mark.parametrize("b,s_q,h_q,h_kv,s_k,causal,page", [
    (3, 1, 16, 1, 300, False, 64),
    (4, 2, 128, 1, 700, True, 64),
    (5, 2, 6, 2, 200, True, 16),
    (2, 3, 126, 2, 300, True, 32),  # 189 rows per KV head: 3 m-blocks, the last partial
])
def test_device_tensors_match_the_cpu(b, s_q, h_q, h_kv, s_k, causal, page, poisoned_empty):
    q, cache, bt, lens = make_problem(b, s_q, h_q, h_kv, s_k, True, page, seed=40 + b, zeros=True)
    meta, splits = mla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
    out_cpu, lse_cpu = mla.flash_mla_with_kvcache(q, cache, bt, lens, 512, meta, splits,
                                                  causal=causal)
    d_lens = torch.from_numpy(lens).cuda()
    d_meta, d_splits = mla.get_mla_metadata(d_lens, s_q * h_q // h_kv, h_kv)
    assert np.array_equal(d_meta.cpu().numpy(), meta)
    assert np.array_equal(d_splits.cpu().numpy(), splits)
    out, lse = mla.flash_mla_with_kvcache(to_gpu_bf16(q), to_gpu_bf16(cache),
                                          torch.from_numpy(bt).cuda(), d_lens, 512, d_meta,
                                          d_splits, causal=causal)
    torch.cuda.synchronize()
    out = out.float().cpu().numpy()
    lse = lse.cpu().numpy()
    assert_close(out, out_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6, "out")
    assert_close(lse, lse_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6, "lse")

    # FP8: quantize on the GPU, same bytes as the CPU; decode against the CPU's FP8 decode
    num_blocks = cache.shape[0]
    slots, rows = [], []
    for i in range(b):
        for key in range(int(lens[i])):
            pg = bt[i, key // page]
            slots.append(pg * page + key % page)
            rows.append(cache[pg, key % page])
    kv = np.stack(rows)
    fp8 = np.full((num_blocks, page, h_kv, 656), 0xFF, np.uint8)
    mla.quantize_kvcache_fp8(kv, np.array(slots, np.int64), fp8)
    d_fp8 = torch.full((num_blocks, page, h_kv, 656), 0xFF, dtype=torch.uint8, device="cuda")
    mla.quantize_kvcache_fp8(to_gpu_bf16(kv), torch.tensor(slots, dtype=torch.int64).cuda(), d_fp8)
    assert np.array_equal(d_fp8.cpu().numpy(), fp8)
    out8_cpu, lse8_cpu = mla.flash_mla_with_kvcache(q, fp8, bt, lens, 512, meta, splits,
                                                    causal=causal, is_fp8_kvcache=True)
    out8, lse8 = mla.flash_mla_with_kvcache(to_gpu_bf16(q), d_fp8, torch.from_numpy(bt).cuda(),
                                            d_lens, 512, d_meta, d_splits, causal=causal,
                                            is_fp8_kvcache=True)
    assert_close(out8.float().cpu().numpy(), out8_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6,
                 "fp8 out")
    assert_close(lse8.cpu().numpy(), lse8_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6,
                 "fp8 lse")


def test_fp8_l2_prefetch_distance_changes_no_bit(monkeypatch, poisoned_empty):
    """DINF_MLA_FP8_PREFETCH (how many blocks ahead the FP8 producer of the fast
    and seesaw rungs prefetches pages into L2; the library reads it on every
    call) reaches the library from Python: off (0), the default (unset) and the
    deepest (8) give bit-identical outputs, on both rungs, equal to the CPU
    within the upstream tolerances; a value outside 0..8 raises
    InvalidArgumentError with the library's message."""
    import deepinfra

    b, s_q, h_q, h_kv, s_k, page = 12, 1, 16, 1, 500, 64  # several requests per part
    q, cache, bt, lens = make_problem(b, s_q, h_q, h_kv, s_k, True, page, seed=77, zeros=True)
    meta, splits = mla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
    slots, rows = [], []
    for i in range(b):
        for key in range(int(lens[i])):
            pg = bt[i, key // page]
            slots.append(pg * page + key % page)
            rows.append(cache[pg, key % page])
    fp8 = np.full((cache.shape[0], page, h_kv, 656), 0xFF, np.uint8)
    mla.quantize_kvcache_fp8(np.stack(rows), np.array(slots, np.int64), fp8)
    out_cpu, lse_cpu = mla.flash_mla_with_kvcache(q, fp8, bt, lens, 512, meta, splits,
                                                  is_fp8_kvcache=True)
    args = (to_gpu_bf16(q), torch.from_numpy(fp8).cuda(), torch.from_numpy(bt).cuda(),
            torch.from_numpy(lens).cuda(), 512, torch.from_numpy(meta).cuda(),
            torch.from_numpy(splits).cuda())
    for rung in ("fast", "seesaw"):
        monkeypatch.setenv("DINF_MLA_KERNEL", rung)
        results = []
        for distance in ("0", None, "8"):
            if distance is None:
                monkeypatch.delenv("DINF_MLA_FP8_PREFETCH", raising=False)
            else:
                monkeypatch.setenv("DINF_MLA_FP8_PREFETCH", distance)
            out, lse = mla.flash_mla_with_kvcache(*args, is_fp8_kvcache=True)
            torch.cuda.synchronize()
            results.append((out.view(torch.int16).cpu().numpy(), lse.cpu().numpy()))
        for other in results[1:]:
            assert np.array_equal(other[0], results[0][0]), rung + ": out differs with the prefetch"
            assert np.array_equal(other[1].view(np.int32), results[0][1].view(np.int32)), \
                rung + ": lse differs with the prefetch"
        out = results[0][0].view(BF16).astype(np.float64)
        assert_close(out, out_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6, rung + " out")
        assert_close(results[0][1], lse_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6,
                     rung + " lse")
    monkeypatch.setenv("DINF_MLA_FP8_PREFETCH", "9")
    with pytest.raises(deepinfra.InvalidArgumentError,
                       match=r"DINF_MLA_FP8_PREFETCH='9' is not a block count in \[0, 8\]"):
        mla.flash_mla_with_kvcache(*args, is_fp8_kvcache=True)


@pytest.mark.parametrize("b,s_q,h_q,h_kv,topk,page,fp8,varlen", [
    (3, 2, 64, 1, 300, 64, False, True),
    (2, 1, 128, 1, 2048, 64, True, False),   # FlashMLA's V3.2 shape (h_q 128, FP8)
    (2, 2, 64, 1, 100, 7, True, True),       # odd page
    (2, 2, 32, 2, 80, 32, False, True),      # h_kv = 2
])
def test_sparse_device_tensors_match_the_cpu(b, s_q, h_q, h_kv, topk, page, fp8, varlen,
                                             poisoned_empty):
    """The sparse decode on torch CUDA tensors (device metadata; the simple rung
    with BF16, the fast rung with FP8) against the numpy CPU path."""
    from test_mla import make_sparse_problem, quantize_all, sparse_call

    nb = 16 * -(-max(2 * topk, 32) // (16 * page) + 1)  # num_blocks * page % 16 == 0
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, h_kv, topk, page, seed=500 + topk,
                                                 varlen=varlen, num_blocks=nb)
    kc = quantize_all(cache)[0] if fp8 else cache
    meta, splits = mla.get_mla_metadata(None if varlen else np.zeros(b, np.int32),
                                        s_q * h_q // h_kv, h_kv, h_q, fp8, topk,
                                        topk_length=lengths)
    out_cpu, lse_cpu = sparse_call(q, kc, idx, lengths, meta, splits, 0.3, fp8)
    d_len = None if lengths is None else torch.from_numpy(lengths).cuda()
    d_meta, d_splits = mla.get_mla_metadata(
        None if varlen else torch.zeros(b, dtype=torch.int32, device="cuda"),
        s_q * h_q // h_kv, h_kv, h_q, fp8, topk, topk_length=d_len)
    assert d_meta.is_cuda and d_splits.is_cuda
    assert np.array_equal(d_meta.cpu().numpy(), meta)
    assert np.array_equal(d_splits.cpu().numpy(), splits)
    d_kc = torch.from_numpy(kc).cuda() if fp8 else to_gpu_bf16(kc)
    out, lse = mla.flash_mla_with_kvcache(to_gpu_bf16(q), d_kc, None, None, 512, d_meta,
                                          d_splits, 0.3, False, fp8,
                                          torch.from_numpy(idx).cuda(), topk_length=d_len)
    torch.cuda.synchronize()
    assert out.shape == (b, s_q, h_q, 512) and lse.shape == (b, h_q, s_q)
    assert_close(out.float().cpu().numpy(), out_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6,
                 "sparse out")
    assert_close(lse.cpu().numpy(), lse_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6,
                 "sparse lse")


@pytest.mark.parametrize("fp8,epage,elen", [(True, 64, True), (True, 5, False), (False, 3, True)])
def test_sparse_extras_on_device_match_the_cpu(fp8, epage, elen, poisoned_empty):
    """attn_sink and the extra cache (FlashMLA's 2026 keywords) on torch CUDA
    tensors, through the lazy plan (made on the device), against the numpy
    CPU path with an eager plan."""
    from test_mla import make_sparse_problem, quantize_all, sparse_call

    b, s_q, h_q, topk, etopk = 2, 2, 64, 200, 90
    q, cache, idx, lengths = make_sparse_problem(b, s_q, h_q, 1, topk, 64, seed=610,
                                                 varlen=True, num_blocks=16)
    blocks = 16 * -(-2 * etopk // (16 * epage))
    _, ecache, eidx, elengths = make_sparse_problem(b, s_q, h_q, 1, etopk, epage, seed=611,
                                                    varlen=elen, num_blocks=blocks)
    sink = np.random.default_rng(612).uniform(-2, 8, h_q).astype(np.float32)
    sink[0], sink[1] = -np.inf, np.inf
    kc, ekc = (quantize_all(cache)[0], quantize_all(ecache)[0]) if fp8 else (cache, ecache)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, fp8, topk, topk_length=lengths,
                                        extra_topk=etopk, extra_topk_length=elengths)
    out_cpu, lse_cpu = sparse_call(q, kc, idx, lengths, meta, splits, None, fp8, attn_sink=sink,
                                   extra_k_cache=ekc, extra_indices_in_kvcache=eidx,
                                   extra_topk_length=elengths)
    dev = (lambda a: torch.from_numpy(a).cuda()) if fp8 else to_gpu_bf16
    sched, _ = mla.get_mla_metadata()
    out, lse = mla.flash_mla_with_kvcache(
        to_gpu_bf16(q), dev(kc), None, None, 512, sched, None, None, False, fp8,
        torch.from_numpy(idx).cuda(), topk_length=torch.from_numpy(lengths).cuda(),
        attn_sink=torch.from_numpy(sink).cuda(), extra_k_cache=dev(ekc),
        extra_indices_in_kvcache=torch.from_numpy(eidx).cuda(),
        extra_topk_length=None if elengths is None else torch.from_numpy(elengths).cuda())
    torch.cuda.synchronize()
    assert np.array_equal(sched.tile_scheduler_metadata.cpu().numpy(), meta)
    assert np.array_equal(sched.num_splits.cpu().numpy(), splits)
    assert_close(out.float().cpu().numpy(), out_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6,
                 "extras out")
    assert_close(lse.cpu().numpy(), lse_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6,
                 "extras lse")


def test_model1_cache_on_device_matches_the_cpu(poisoned_empty):
    """The MODEL1 cache (head_dim 512) on torch CUDA tensors: the GPU quantizer
    writes the CPU's bytes into upstream's padded pages, and the sparse decode
    (fast rung's MODEL1 kernel, with a MODEL1 extra cache and the sink, lazy
    plan on the device) matches the numpy CPU path."""
    from test_mla import make_model1_problem, sparse_call

    b, s_q, h_q = 2, 2, 64
    q, kc, _, rows, idx, lengths = make_model1_problem(b, s_q, h_q, 150, 61, 700, True)
    _, ekc, _, _, eidx, elengths = make_model1_problem(b, s_q, h_q, 70, 5, 701, True)
    d_kc = mla.empty_model1_kvcache(kc.shape[0], kc.shape[1], device="cuda")
    d_kc.fill_(0xFF)
    finite = np.isfinite(rows.astype(np.float32)).all(axis=(1, 2))
    slots = np.flatnonzero(finite).astype(np.int64)
    mla.quantize_kvcache_fp8(to_gpu_bf16(rows[slots]), torch.from_numpy(slots).cuda(), d_kc)
    torch.cuda.synchronize()
    padded = d_kc.stride(0)
    got = torch.as_strided(d_kc, (kc.shape[0], kc.shape[1] * 584), (padded, 1)).cpu().numpy()
    want = np.lib.stride_tricks.as_strided(kc, (kc.shape[0], kc.shape[1] * 584),
                                           (kc.strides[0], 1))
    assert np.array_equal(got, want), "GPU MODEL1 quantizer bytes differ from the CPU's"
    sink = np.random.default_rng(702).uniform(-2, 8, h_q).astype(np.float32)
    kw = dict(attn_sink=sink, extra_k_cache=ekc, extra_indices_in_kvcache=eidx,
              extra_topk_length=elengths)
    meta, splits = mla.get_mla_metadata(None, s_q * h_q, 1, h_q, True, 150, topk_length=lengths,
                                        extra_topk=70, extra_topk_length=elengths)
    out_cpu, lse_cpu = sparse_call(q, kc, idx, lengths, meta, splits, None, True, **kw)
    e_nb, e_page = ekc.shape[:2]  # the whole padded buffer to the device, viewed the same way
    e_flat = np.lib.stride_tricks.as_strided(ekc, (e_nb, ekc.strides[0]), (ekc.strides[0], 1))
    d_ekc = torch.from_numpy(e_flat.copy()).cuda()[:, :e_page * 584].view(e_nb, e_page, 1, 584)
    sched, _ = mla.get_mla_metadata()
    out, lse = mla.flash_mla_with_kvcache(
        to_gpu_bf16(q), d_kc, None, None, 512, sched, None, None, False, True,
        torch.from_numpy(idx).cuda(), topk_length=torch.from_numpy(lengths).cuda(),
        attn_sink=torch.from_numpy(sink).cuda(), extra_k_cache=d_ekc,
        extra_indices_in_kvcache=torch.from_numpy(eidx).cuda(),
        extra_topk_length=torch.from_numpy(elengths).cuda())
    torch.cuda.synchronize()
    assert_close(out.float().cpu().numpy(), out_cpu.astype(np.float64), 8e-4, 2.01 / 128, 5e-6,
                 "model1 out")
    assert_close(lse.cpu().numpy(), lse_cpu.astype(np.float64), 1e-6, 8.01 / 65536, 5e-6,
                 "model1 lse")


def test_sparse_device_refuses_the_fast_rungs(monkeypatch):
    """mla.h: a BF16 sparse decode runs the simple rung (DINF_MLA_KERNEL=fast or
    seesaw is UNSUPPORTED with the reason, reaching Python as UnsupportedError);
    the seesaw rung refuses every sparse decode."""
    import deepinfra
    from test_mla import make_sparse_problem

    q, cache, idx, _ = make_sparse_problem(2, 1, 64, 1, 64, 64, seed=3)
    d_meta, d_splits = mla.get_mla_metadata(torch.zeros(2, dtype=torch.int32, device="cuda"),
                                            64, 1, 64, False, 64)
    args = (to_gpu_bf16(q), to_gpu_bf16(cache), None, None, 512, d_meta, d_splits)
    reasons = {"fast": "a sparse decode on the fast rung needs the FP8 cache",
               "seesaw": "the seesaw rung takes dense decodes only"}
    for rung, reason in reasons.items():
        monkeypatch.setenv("DINF_MLA_KERNEL", rung)
        with pytest.raises(deepinfra.UnsupportedError, match="DINF_MLA_KERNEL=%s, but the %s rung "
                           % (rung, rung) + reason):
            mla.flash_mla_with_kvcache(*args, indices=torch.from_numpy(idx).cuda())
    monkeypatch.setenv("DINF_MLA_KERNEL", "simple")
    out, lse = mla.flash_mla_with_kvcache(*args, indices=torch.from_numpy(idx).cuda())
    torch.cuda.synchronize()
    assert torch.isfinite(out.float()).all()


def test_lazy_plan_on_device_tensors(poisoned_empty):
    """FlashMLA's 2026 form on the GPU: get_mla_metadata() then the first call
    makes the plan on the device (from the device cache_seqlens), the same
    plan and results as the eager device call."""
    q, cache, bt, lens = make_problem(3, 2, 64, 1, 300, True, 64, seed=91)
    d_q, d_cache = to_gpu_bf16(q), to_gpu_bf16(cache)
    d_bt, d_lens = torch.from_numpy(bt).cuda(), torch.from_numpy(lens).cuda()
    d_meta, d_splits = mla.get_mla_metadata(d_lens, 2 * 64, 1)
    want_out, want_lse = mla.flash_mla_with_kvcache(d_q, d_cache, d_bt, d_lens, 512, d_meta,
                                                    d_splits, causal=True)
    sched, _ = mla.get_mla_metadata()
    out, lse = mla.flash_mla_with_kvcache(d_q, d_cache, d_bt, d_lens, 512, sched, None,
                                          causal=True)
    torch.cuda.synchronize()
    assert sched.tile_scheduler_metadata.is_cuda
    assert torch.equal(sched.tile_scheduler_metadata, d_meta)
    assert torch.equal(sched.num_splits, d_splits)
    assert torch.equal(out.view(torch.int16), want_out.view(torch.int16))
    assert torch.equal(lse, want_lse)
