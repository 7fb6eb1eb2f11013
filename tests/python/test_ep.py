"""deepinfra.ep: upstream DeepEP names on the in-process group, against numpy references."""

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import deepinfra  # noqa: E402
from deepinfra import ep, gemm  # noqa: E402

BF16 = ml_dtypes.bfloat16


def make_inputs(num_ranks, hidden, num_topk, num_experts, tokens, seed):
    """Per rank: x bf16 [N_r, H] (N_r = tokens - r), topk int64 with -1s, weights."""
    rng = np.random.default_rng(seed)
    xs, topks, weights = [], [], []
    for r in range(num_ranks):
        n = tokens - r
        xs.append(rng.uniform(-2, 2, (n, hidden)).astype(np.float32).astype(BF16))
        t = np.stack([rng.permutation(num_experts)[:num_topk] for _ in range(n)]).astype(np.int64)
        t[rng.random(t.shape) < 0.2] = -1
        topks.append(t)
        weights.append(rng.uniform(0.05, 1, t.shape).astype(np.float32))
    return xs, topks, weights


def reference_dispatch(xs, topks, dst, num_experts, num_ranks):
    """Rows received by rank dst: source rank ascending, then token; local ids."""
    local = num_experts // num_ranks
    rows, src_idx, recv_topk = [], [], []
    for src in range(num_ranks):
        for t in range(xs[src].shape[0]):
            sel = topks[src][t]
            if np.any((sel >= 0) & (sel // local == dst)):
                rows.append(xs[src][t])
                src_idx.append(t)
                lt = np.where((sel >= dst * local) & (sel < (dst + 1) * local), sel - dst * local, -1)
                recv_topk.append(lt)
    hidden = xs[0].shape[1]
    return (np.array(rows, BF16).reshape(-1, hidden), np.array(src_idx, np.int32),
            np.array(recv_topk, np.int64).reshape(-1, topks[0].shape[1]))


@pytest.mark.parametrize("num_ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("use_fp8", [False, True])
def test_dispatch_and_combine_match_the_reference(num_ranks, use_fp8):
    hidden, k, experts = 256, 4, 4 * num_ranks if num_ranks > 1 else 8
    xs, topks, weights = make_inputs(num_ranks, hidden, k, experts, 24, 7 + num_ranks)
    group = ep.Group(num_ranks, max_hidden=hidden, max_tokens_per_rank=24, max_topk=k,
                     max_num_experts=experts)

    def step(buf):
        r = buf.rank
        per_rank, rdma, per_expert, in_rank, event = buf.get_dispatch_layout(topks[r], experts)
        assert rdma is None and event is None
        recv_x, recv_topk, recv_w, counts, handle, _ = buf.dispatch(
            xs[r], num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
            num_tokens_per_expert=per_expert, topk_idx=topks[r], topk_weights=weights[r],
            expert_alignment=4, use_fp8=use_fp8)
        cached_x, none_topk, none_w, empty, same, _ = buf.dispatch(xs[r], handle=handle,
                                                                   use_fp8=use_fp8)
        assert none_topk is None and none_w is None and empty == [] and same is handle
        y = recv_x if not use_fp8 else (
            recv_x[0].astype(np.float32) * np.repeat(recv_x[1], 128, axis=1)).astype(BF16)
        combined, combined_w, _ = buf.combine(y, handle, topk_weights=recv_w)
        return per_rank, per_expert, in_rank, recv_x, cached_x, recv_topk, recv_w, counts, \
            handle, combined, combined_w

    out = group.run(step)
    local = experts // num_ranks
    for dst in range(num_ranks):
        per_rank, per_expert, in_rank, recv_x, cached_x, recv_topk, recv_w, counts, handle, _, _ = \
            out[dst]
        rows, src_idx, ref_topk = reference_dispatch(xs, topks, dst, experts, num_ranks)
        if use_fp8:
            q, s = gemm.per_token_cast_to_fp8(rows)
            np.testing.assert_array_equal(recv_x[0].view(np.uint8), q.view(np.uint8))
            np.testing.assert_array_equal(recv_x[1], s)
            np.testing.assert_array_equal(cached_x[0].view(np.uint8), q.view(np.uint8))
            deq = recv_x[0].astype(np.float32) * np.repeat(recv_x[1], 128, axis=1)
            ref = rows.astype(np.float32)
            assert np.all(np.abs(deq - ref) <= np.abs(ref) / 16 + np.repeat(s, 128, axis=1) / 500)
        else:
            np.testing.assert_array_equal(recv_x.view(np.uint16), rows.view(np.uint16))
            np.testing.assert_array_equal(cached_x.view(np.uint16), rows.view(np.uint16))
        np.testing.assert_array_equal(handle.recv_src_idx, src_idx)
        np.testing.assert_array_equal(recv_topk, ref_topk)
        assert np.all((recv_w == 0) == (recv_topk < 0))
        sel = np.concatenate([t.ravel() for t in topks])
        expect = [int(-(-np.sum(sel == dst * local + l) // 4) * 4) for l in range(local)]
        assert counts == expect
        assert handle.rank_prefix_matrix[-1, dst] == rows.shape[0]
        # layout of this rank's own tokens
        t = topks[dst]
        ref_in = np.stack([np.any((t >= 0) & (t // local == r), axis=1)
                           for r in range(num_ranks)], axis=1)
        np.testing.assert_array_equal(in_rank, ref_in)
        np.testing.assert_array_equal(per_rank, ref_in.sum(0))
        np.testing.assert_array_equal(per_expert, [np.sum(t == e) for e in range(experts)])
    # combine of the identity expert: each token times the ranks it reached
    for src in range(num_ranks):
        combined, combined_w = out[src][9], out[src][10]
        t = topks[src]
        reached = np.stack([np.any((t >= 0) & (t // local == r), axis=1)
                            for r in range(num_ranks)], axis=1).sum(1)
        v = xs[src] if not use_fp8 else (
            lambda q, s: (q.astype(np.float32) * np.repeat(s, 128, axis=1)).astype(BF16))(
                *gemm.per_token_cast_to_fp8(xs[src]))
        ref = v.astype(np.float32) * reached[:, None]  # exact: <= 4 copies of 8 bits
        ref = np.where(ref == 0, np.float32(0), ref).astype(BF16)  # the sum starts at +0
        np.testing.assert_array_equal(combined.view(np.uint16), ref.view(np.uint16))
        np.testing.assert_array_equal(combined_w, np.where(t >= 0, weights[src], 0))


def test_low_latency_layout_combine_and_masked_gemm():
    num_ranks, hidden, k, experts, T = 3, 256, 3, 6, 10
    xs, topks, weights = make_inputs(num_ranks, hidden, k, experts, T, 99)
    group = ep.Group(num_ranks, max_hidden=hidden, max_tokens_per_rank=T, max_topk=k,
                     max_num_experts=experts)
    local, M = experts // num_ranks, num_ranks * T
    rng = np.random.default_rng(5)
    w_fp8 = [gemm.per_block_cast_to_fp8(rng.uniform(-1, 1, (128, hidden)).astype(np.float32))
             for _ in range(local)]
    b = np.stack([q for q, _ in w_fp8])
    sb = np.stack([s for _, s in w_fp8])

    def step(buf):
        r = buf.rank
        (q, s), count, handle, event, hook = buf.low_latency_dispatch(xs[r], topks[r], T, experts,
                                                                      use_fp8=True)
        assert event is None and hook is None
        out = np.zeros((local, M, 128), BF16)
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((q, s), (b, sb), out, count, T)
        x_bf16, count2, h2, _, _ = buf.low_latency_dispatch(xs[r], topks[r], T, experts,
                                                            use_fp8=False)
        combined, _, _ = buf.low_latency_combine(x_bf16, topks[r], weights[r], h2)
        return q, s, count, handle, out, x_bf16, count2, combined

    res = group.run(step)
    for dst in range(num_ranks):
        q, s, count, handle, out, x_bf16, count2, _ = res[dst]
        src_info, layout_range, t_, h_, e_ = handle
        assert (t_, h_, e_) == (T, hidden, experts)
        for l in range(local):
            e = dst * local + l
            rows, srcs, begins = [], [], []
            for src in range(num_ranks):
                begins.append(len(rows))
                for t in range(xs[src].shape[0]):
                    for kk in range(k):
                        if topks[src][t, kk] == e:
                            rows.append(xs[src][t])
                            srcs.append(t)
                n = len(rows) - begins[-1]
                assert layout_range[l, src] == (begins[-1] << 32) | n
            assert count[l] == len(rows) == count2[l]
            rows = np.array(rows, BF16).reshape(-1, hidden)
            np.testing.assert_array_equal(src_info[l, :len(srcs)], srcs)
            np.testing.assert_array_equal(x_bf16[l, :len(rows)].view(np.uint16),
                                          rows.view(np.uint16))
            ref_q, ref_s = gemm.per_token_cast_to_fp8(rows)
            np.testing.assert_array_equal(q[l, :len(rows)].view(np.uint8), ref_q.view(np.uint8))
            np.testing.assert_array_equal(s[l, :len(rows)], ref_s)
            # the masked GEMM consumed the dispatch's layout as it stands
            ref_out = np.zeros((len(rows), 128), BF16)
            if len(rows):
                gemm.gemm_fp8_fp8_bf16_nt((ref_q, ref_s), (b[l], sb[l]), ref_out)
            np.testing.assert_array_equal(out[l, :len(rows)].view(np.uint16),
                                          ref_out.view(np.uint16))
    # weighted combine of identity experts: sum_k w * x in fp32, k ascending
    for src in range(num_ranks):
        combined = res[src][7]
        x = xs[src].astype(np.float32)
        acc = np.zeros_like(x)
        for kk in range(k):
            mask = (topks[src][:, kk] >= 0)[:, None]
            acc = np.where(mask, acc + weights[src][:, kk:kk + 1] * x, acc)
        np.testing.assert_array_equal(combined.view(np.uint16), acc.astype(BF16).view(np.uint16))


def test_errors_raise_on_every_rank():
    group = ep.Group(2, max_hidden=128, max_tokens_per_rank=4, max_topk=2, max_num_experts=4)
    x = np.ones((4, 128), BF16)
    good = np.array([[0, 1], [2, 3], [-1, 0], [3, -1]], np.int64)
    bad = good.copy()
    bad[1, 1] = 4

    def step(buf):
        try:
            buf.dispatch(x, topk_idx=bad if buf.rank == 1 else good, num_experts=4)
        except deepinfra.InvalidArgumentError as exc:
            return str(exc)
        return None

    msgs = group.run(step)
    assert "topk_idx[1][1]=4 is outside [-1, num_experts=4)" in msgs[1]
    assert "rank 1 rejected its arguments" in msgs[0]
    with pytest.raises(deepinfra.InvalidArgumentError, match="not a multiple of num_ranks"):
        ep.get_dispatch_layout(good, 3, 2)
    with pytest.raises(deepinfra.InvalidArgumentError, match="config->max_topk"):
        ep.Group(2, max_hidden=128, max_tokens_per_rank=4, max_topk=64, max_num_experts=4)


def test_a_missing_rank_times_out_instead_of_hanging():
    group = ep.Group(2, max_hidden=128, max_tokens_per_rank=4, max_topk=2, max_num_experts=4,
                     timeout_ms=200)
    with pytest.raises(deepinfra.DeepInfraTimeoutError, match=r"waited 200 ms for ranks \[1\]"):
        group.buffers[0].barrier()
    with pytest.raises(deepinfra.DeepInfraTimeoutError, match="the EP group is broken"):
        group.buffers[1].barrier()
