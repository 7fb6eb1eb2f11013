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
        assert rdma is None and isinstance(event, ep.EventOverlap)
        recv_x, recv_topk, recv_w, counts, handle, event = buf.dispatch(
            xs[r], num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
            num_tokens_per_expert=per_expert, topk_idx=topks[r], topk_weights=weights[r],
            expert_alignment=4, use_fp8=use_fp8)
        event.current_stream_wait()
        # upstream's cached dispatch: (recv_x, None, None, None, None, event)
        cached = buf.dispatch(xs[r], handle=handle, use_fp8=use_fp8)
        assert len(cached) == 6 and cached[1:5] == (None, None, None, None)
        cached_x = cached[0]
        cached[5].current_stream_wait()
        y = recv_x if not use_fp8 else (
            recv_x[0].astype(np.float32) * np.repeat(recv_x[1], 128, axis=1)).astype(BF16)
        combined, combined_w, event = buf.combine(y, handle, topk_weights=recv_w)
        with event:
            pass
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
        # upstream's 6-tuple: rank_prefix_matrix, channel_prefix_matrix,
        # recv_channel_prefix_matrix, recv_src_idx, is_token_in_rank, send_head
        assert len(handle) == 6 and len(tuple(handle)) == 6
        assert handle[0] is handle.rank_prefix_matrix and handle[3] is handle.recv_src_idx
        assert handle[1] is None and handle[2] is None and handle[5] is None
        np.testing.assert_array_equal(handle[4], in_rank)
        assert handle[0][num_ranks - 1][dst] == rows.shape[0]
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
        assert hook is None
        event.current_stream_wait()
        out = np.zeros((local, M, 128), BF16)
        gemm.m_grouped_gemm_fp8_fp8_bf16_nt_masked((q, s), (b, sb), out, count, T)
        x_bf16, count2, h2, _, hook = buf.low_latency_dispatch(xs[r], topks[r], T, experts,
                                                               use_fp8=False,
                                                               return_recv_hook=True)
        hook()  # upstream: launches the receive half; here it has happened
        combined, event, hook = buf.low_latency_combine(x_bf16, topks[r], weights[r], h2,
                                                        return_recv_hook=True)
        hook()
        event.current_stream_wait()
        return q, s, count, handle, out, x_bf16, count2, combined

    res = group.run(step)
    for dst in range(num_ranks):
        q, s, count, handle, out, x_bf16, count2, _ = res[dst]
        src_info, layout_range, t_, h_, e_ = handle
        assert (t_, h_, e_) == (T, hidden, experts)
        assert len(handle) == 5 and handle[0] is src_info and handle[1] is layout_range
        assert (handle[2], handle[3], handle[4]) == (T, hidden, experts)
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


def _small(rng, shape):
    """+-(1 + u/128) * 2^-(18..21): 8 significant bits, exact in bfloat16."""
    m = 1 + rng.integers(0, 128, shape) / 128
    v = np.ldexp(m, -rng.integers(18, 22, shape)) * rng.choice([-1.0, 1.0], shape)
    return v.astype(np.float32)


def test_combine_adds_biases_first_then_ranks_ascending():
    """Each rank's expert returns its own row per (rank, token), chosen so the
    float32 sum depends on the order; the bits must match an oracle that adds
    bias0 + bias1 first, then the ranks ascending (upstream). The reverse rank
    order and biases-last each give other bits (checked), so a wrong order fails.

    Order round, for a token reaching ranks r_1 < ... < r_m: r_1 returns s,
    r_m returns -s (s = +-1), the others a small value v: (s + v) - s and
    (-s + v) + s round v to different float32 grids, visible in bfloat16.
    Bias round: every rank returns a small value, bias0 = b, bias1 = -b with
    |b| in [1, 2): b + (-b) first keeps the small sum exact; biases last do not.
    """
    num_ranks, hidden, k, experts, tokens = 4, 128, 4, 8, 20
    xs, topks, _ = make_inputs(num_ranks, hidden, k, experts, tokens, 11)
    local = experts // num_ranks
    rng = np.random.default_rng(12)
    reach = [np.stack([np.any((t >= 0) & (t // local == d), axis=1) for d in range(num_ranks)],
                      axis=1) for t in topks]
    vals, smalls, b0s = [], [], []
    for src in range(num_ranks):
        n = xs[src].shape[0]
        sign = rng.choice([-1.0, 1.0], (n, 1)).astype(np.float32) * np.ones((n, hidden),
                                                                            np.float32)
        per_dst = [_small(rng, (n, hidden)) for _ in range(num_ranks)]
        idx = [np.flatnonzero(row) for row in reach[src]]
        for t in range(n):
            if len(idx[t]) >= 2:
                per_dst[idx[t][0]][t] = sign[t]
                per_dst[idx[t][-1]][t] = -sign[t]
        vals.append(per_dst)
        smalls.append([_small(rng, (n, hidden)) for _ in range(num_ranks)])
        b0s.append((rng.choice([-1.0, 1.0], (n, hidden)) *
                    (1 + rng.integers(0, 128, (n, hidden)) / 128)).astype(np.float32))
    group = ep.Group(num_ranks, max_hidden=hidden, max_tokens_per_rank=tokens, max_topk=k,
                     max_num_experts=experts)

    def step(buf):
        r = buf.rank
        recv_x, _, _, _, handle, _ = buf.dispatch(xs[r], topk_idx=topks[r], num_experts=experts)
        rpm, src_idx = handle[0], handle[3]
        y = np.empty((recv_x.shape[0], hidden), np.float32)
        y_small = np.empty_like(y)
        for row in range(recv_x.shape[0]):
            src = int(np.searchsorted(rpm[:, r], row, side="right"))
            y[row] = vals[src][r][src_idx[row]]
            y_small[row] = smalls[src][r][src_idx[row]]
        combined, _, _ = buf.combine(y.astype(BF16), handle)
        b0 = b0s[r].astype(BF16)
        combined_b, _, _ = buf.combine(y_small.astype(BF16), handle, bias=(b0, -b0))
        return combined, combined_b

    out = group.run(step)
    reverse_differs = bias_last_differs = total = 0
    for src in range(num_ranks):
        shape = xs[src].shape
        asc, desc = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        b0 = b0s[src]
        small = b0 + (-b0)
        small_bias_last = np.zeros(shape, np.float32)
        for d in range(num_ranks):
            m = reach[src][:, d:d + 1]
            asc = np.where(m, asc + vals[src][d], asc)
            small = np.where(m, small + smalls[src][d], small)
            small_bias_last = np.where(m, small_bias_last + smalls[src][d], small_bias_last)
        for d in reversed(range(num_ranks)):
            m = reach[src][:, d:d + 1]
            desc = np.where(m, desc + vals[src][d], desc)
        small_bias_last = (small_bias_last + b0) + (-b0)
        want, want_b = asc.astype(BF16).view(np.uint16), small.astype(BF16).view(np.uint16)
        np.testing.assert_array_equal(out[src][0].view(np.uint16), want)
        np.testing.assert_array_equal(out[src][1].view(np.uint16), want_b)
        reverse_differs += np.sum(desc.astype(BF16).view(np.uint16) != want)
        bias_last_differs += np.sum(small_bias_last.astype(BF16).view(np.uint16) != want_b)
        total += want.size
    assert reverse_differs > total // 20, (reverse_differs, total)
    assert bias_last_differs > total // 4, (bias_last_differs, total)


def test_a_python_argument_error_fails_every_rank_and_keeps_the_group():
    """A shape this binding rejects on one rank still makes the rank's C call,
    so the others fail at once (default 100 s timeout: a hang would break the
    group and the following calls would fail) and the group goes on working."""
    num_ranks, hidden, k, experts, T = 3, 128, 2, 6, 8
    xs, topks, weights = make_inputs(num_ranks, hidden, k, experts, T, 21)
    group = ep.Group(num_ranks, max_hidden=hidden, max_tokens_per_rank=T, max_topk=k,
                     max_num_experts=experts)

    def attempt(call):
        try:
            call()
        except deepinfra.InvalidArgumentError as exc:
            return str(exc)
        return None

    def step(buf):
        r = buf.rank
        msgs = []
        # notify step: rank 1's topk_idx has the wrong number of rows
        msgs.append(attempt(lambda: buf.dispatch(
            xs[r], topk_idx=topks[r][:-1] if r == 1 else topks[r], num_experts=experts)))
        recv_x, _, recv_w, _, handle, _ = buf.dispatch(
            xs[r], topk_idx=topks[r], topk_weights=weights[r], num_experts=experts)
        # cached dispatch: rank 2's x is 1-D
        msgs.append(attempt(lambda: buf.dispatch(xs[r][0] if r == 2 else xs[r], handle=handle)))
        # combine: rank 0's x has a row too many
        y = np.concatenate([recv_x, recv_x[:1]]) if r == 0 else recv_x
        msgs.append(attempt(lambda: buf.combine(y, handle)))
        # low-latency dispatch: rank 1 asks for UE8M0 scales
        msgs.append(attempt(lambda: buf.low_latency_dispatch(xs[r], topks[r], T, experts,
                                                             use_ue8m0=r == 1)))
        x_ll, _, ll_handle, _, _ = buf.low_latency_dispatch(xs[r], topks[r], T, experts,
                                                            use_fp8=False)
        # low-latency combine: rank 2's weights have the wrong shape
        w = weights[r][:, :1] if r == 2 else weights[r]
        msgs.append(attempt(lambda: buf.low_latency_combine(x_ll, topks[r], w, ll_handle)))
        # the group still works
        combined, combined_w, _ = buf.combine(recv_x, handle, topk_weights=recv_w)
        buf.barrier()
        return msgs, combined_w

    res = group.run(step)
    culprits = [1, 2, 0, 1, 2]
    own = ["topk_idx has %d rows, x %d" % (T - 2, T - 1), "x must be 2-D",
           "rows; the dispatch received", "UE8M0", "topk_weights must have shape"]
    for i, culprit in enumerate(culprits):
        for r in range(num_ranks):
            msg = res[r][0][i]
            assert msg is not None, (i, r)
            if r == culprit:
                assert own[i] in msg, (i, r, msg)
            else:
                assert "rank %d rejected its arguments" % culprit in msg, (i, r, msg)
    for r in range(num_ranks):
        np.testing.assert_array_equal(res[r][1], np.where(topks[r] >= 0, weights[r], 0))


def test_upstream_no_op_settings():
    assert ep.Buffer.set_num_sms(24) is None
    ev = ep.Buffer.capture()
    ev.current_stream_wait()
    with ev:
        pass
    assert ep.Buffer.get_dispatch_config(8) is None and ep.Buffer.get_combine_config(8) is None
    T, H, R, E = 128, 7168, 8, 256

    def a16(v):
        return (v + 15) // 16 * 16

    message = a16(H * 2) + a16(H // 128 * 4) + 16
    assert ep.Buffer.get_low_latency_rdma_size_hint(T, H, R, E) == R * T * (E // R) * message \
        + 4096
    with pytest.raises(deepinfra.InvalidArgumentError, match="max_hidden"):
        ep.Buffer.get_low_latency_rdma_size_hint(T, 0, R, E)
    group = ep.Group(2, max_hidden=128, max_tokens_per_rank=4, max_topk=2, max_num_experts=4)
    group.run(lambda buf: buf.clean_low_latency_buffer(4, 128, 4))
