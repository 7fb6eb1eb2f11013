"""tools/sm90-emu: the Hopper FP8 GEMM JIT kernel run on the CPU by the
host emulation of its PTX layer (mbarrier, TMA, wgmma), through the library's
own DINF_EXEC_CUDA path, against the CPU GEMM; planted kernel bugs must fail.

The base build (~25 s of CPU once, cached in build-emu/sm90-emu) and the short
runs keep this file well under a minute; SM90_EMU_LONG=1 adds several data
and scheduling seeds and the sanitizer-free full sweep in both accumulation
models.
"""
import os
import shutil
import subprocess

import pytest

from conftest import library_has_cuda

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(REPO, "tools", "sm90-emu", "run.sh")
CUDA_H = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "include", "cuda.h")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CUDA_H) and shutil.which("g++") and shutil.which("make")),
    reason="sm90-emu needs g++, make and the CUDA headers (cuda.h, cuda_runtime_api.h)")


@pytest.fixture(autouse=True)
def _library_with_kernels(loaded_library):
    """The emulator builds the kernels and the library sources itself, the same
    for any build under test: a CPU-only library ships no kernels to check.
    (A fixture, not a mark: the library is loaded when a test runs, not when
    this file is collected.)"""
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): it ships no GPU kernels")


def run(args=(), timeout=300, **env):
    e = dict(os.environ)
    for k in ("MUT", "MUT_FILE", "DINF_FP8_GEMM_PDL", "EMU_CONFIGS", "EMU_SEED", "EMU_SEEDS", "EMU_MMA", "EMU_SKEW", "EMU_RANDOM", "EMU_CLUSTER_SLOTS",
              "EMU_RANDOM_SEED", "EMU_ROOT", "EMU_FAST_ALL", "EMU_SAN", "MAKEFLAGS", "MFLAGS"):
        e.pop(k, None)
    # the emulator compiles the library sources itself (not the build under
    # test): one cached build serves every variant (SAN=1, CUDA=0, ...)
    e["EMU_OUT"] = os.path.join(REPO, "build-emu", "sm90-emu")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run([RUN, *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)


def test_emulated_gemm_matches_cpu():
    """Every case (normal / contiguous / masked; heuristic and forced
    configs, 1-3 stage rings; odd m/n/k tails; padded strides; -1 and
    out-of-range contiguous blocks; masked_m 0, m_max, above m_max, negative;
    persistent grids smaller than the tile count) within the documented
    bound of the CPU GEMM, poison kept everywhere the kernel must not write."""
    r = run(EMU_SEED=3)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    # 12 simple-rung cases, + 17 fast-rung ones (4 of them BLOCK_M 256, 8
    # split-K over clusters of 2, 3 and 4) when the library has fp8_gemm_fast.cuh,
    # + 6 of the weight-gradient kernel when it has fp8_gemm_1d1d.cuh
    assert len(lines) in (12, 29, 35), r.stdout
    assert "PASSED: 0 of %d runs failed" % len(lines) in r.stdout
    # the persistent loop is exercised: some launches have fewer CTAs than tiles
    assert any(" grid 2 of 9 tiles" in l or " grid 3 of 12 tiles" in l for l in lines), r.stdout


def test_weight_gradient_kernel_bitwise_in_cpu_order():
    """The weight-gradient kernel (fp8_gemm_1d1d.cuh: per-column B scales
    loaded by TMA into their own ring, float32 d +=), heuristic and forced
    configs with 1-3 stage rings, odd tails, padded strides, and the
    k-grouped form (one launch per group with k_g > 0, an empty group left
    alone): bit-identical to the CPU GEMM with the wgmma modelled in its
    order, and within the bound with exact wgmma sums; no PDL launch."""
    r = run(["wgrad"], EMU_MMA="seq", EMU_SEED=9, EMU_SEEDS=2)
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 12 and all("bitwise" in l and ", pdl 0," in l for l in ok), r.stdout
    assert any("wgrad_k_grouped" in l and " 3 launches" in l for l in ok), r.stdout
    assert "PASSED: 0 of 12 runs failed" in r.stdout


def test_emulated_gemm_bitwise_in_cpu_order():
    """With the wgmma modelled in the CPU GEMM's order (float32, sequential
    in k) the kernel's results are bit-identical to the CPU GEMM's."""
    r = run(["contig"], EMU_MMA="seq", EMU_SEED=11)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED: 0 of" in r.stdout and "bitwise" in r.stdout and "ok   contig_bn64_s2" in r.stdout


def test_block_m_256_waves_bitwise_in_cpu_order():
    """The fast rung's BLOCK_M 256 (two 64-row wgmma waves per math
    warpgroup sharing one accumulator set): normal with a partial last
    M-block, A multicast with a phantom partner, masked groups stored by TMA
    and directly; bit-identical to the CPU GEMM in its order, two data seeds."""
    r = run(["bm256"], EMU_MMA="seq", EMU_SEED=7, EMU_SEEDS=2)
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 8 and all("bitwise" in l and " config 256x" in l for l in ok), r.stdout
    assert "PASSED: 0 of 8 runs failed" in r.stdout


def test_split_k_clusters_of_2_3_4_bitwise_up_to_the_last_place():
    """Split-K over clusters of 2, 3 and 4 CTAs (rank 0 adds the other ranks'
    float32 partials in rank order, read through distributed shared memory),
    every form, ranks without k blocks, clusters looping over several tiles:
    within one bf16 place of the CPU GEMM's sequential order, two data seeds;
    and the same on a device whose GPCs hold one cluster of 3 or 4 at a time."""
    r = run(["split"], EMU_MMA="seq", EMU_SEED=5, EMU_SEEDS=2)
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 16 and all("bitwise" in l for l in ok), r.stdout
    for split in (2, 3, 4):
        assert any(" cluster %d split %d " % (split, split) in l for l in ok), r.stdout
    r = run(["split"], EMU_SEED=6, EMU_CLUSTER_SLOTS="3:1,4:1")
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 8, r.stdout
    assert any(" cluster 4 split 4 " in l and " grid 4 of " in l for l in ok), r.stdout


def test_fast_rung_launches_with_pdl_unless_switched_off():
    """DINF_FP8_GEMM_PDL: the fast rung's launches carry the programmatic
    stream serialization attribute by default (and every thread of the grid
    passes griddepcontrol.wait: the harness counts them), not with "0"; the
    simple rung never; any other value is refused before a launch."""
    r = run(["fast_"], EMU_SEED=4)
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 17 and all(", pdl 1," in l for l in ok), r.stdout
    r = run(["fast_masked"], EMU_SEED=4, DINF_FP8_GEMM_PDL="0")
    assert r.returncode == 0, r.stdout + r.stderr
    ok = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(ok) == 5 and all(", pdl 0," in l for l in ok), r.stdout
    r = run(["normal_bm64_bn32_s2"], EMU_SEED=4)
    assert r.returncode == 0 and ", pdl 0," in r.stdout, r.stdout + r.stderr
    r = run(["fast_normal_bn96_c1"], EMU_SEED=4, DINF_FP8_GEMM_PDL="on")
    assert r.returncode != 0, r.stdout + r.stderr
    assert ('emulated run returned invalid argument: dinf_fp8_gemm_nt: DINF_FP8_GEMM_PDL="on" '
            'is not "0" or "1"') in r.stdout, r.stdout


def test_selftest_of_paths_no_kernel_here_uses():
    """bf16 wgmma (K-major and MN-major B) on TMA boxes, a 4-D box, 2-CTA
    multicast, remote arrive, cluster barriers, TMA store, mbarrier rules:
    each against a direct computation."""
    r = run(["--selftest"], EMU_SEED=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SELFTEST PASSED" in r.stdout and r.stdout.count("ok  ") == 3, r.stdout


def test_random_cases():
    """Random forms, sizes, strides, group data and SM counts on random
    compiled instances, bit-identical to the CPU GEMM in its order."""
    n = 400 if os.environ.get("SM90_EMU_LONG") == "1" else 120
    r = run(EMU_RANDOM=n, EMU_RANDOM_SEED=17, EMU_MMA="seq", EMU_SEED=17, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED: 0 of %d random runs failed" % n in r.stdout, r.stdout


# (case, forced config to build, mutation, what must be reported)
MUTATIONS = [
    # the weight-gradient kernel: one column scale for both columns of a
    # pair; the stage's expected bytes without the B-scale box (the TMA
    # loads overshoot the count: the phase never completes)
    ("wgrad_bm128_bn128_s3", "128,128,3",
     "const float sb0 = sb[c], sb1 = sb[c + 1];|||const float sb0 = sb[c], sb1 = sb[c];",
     "bad elements"),
    ("wgrad_bm128_bn64_s1", "128,64,1",
     "kStageTxBytes = dinf_fp8_wgrad_stage_tx_bytes(BLOCK_M, BLOCK_N);|||"
     "kStageTxBytes = dinf_fp8_stage_tx_bytes(BLOCK_M, BLOCK_N);",
     "EMU: deadlock"),
    # the stage released before its scales are read: refilled under a late
    # reader (2 of the 3 data seeds catch it with this scheduling seed; the
    # 1- and 2-stage cases did not in the seeds tried)
    ("wgrad_bm128_bn128_s3", "128,128,3",
     "            mbar_arrive(&empty[s]); /* this thread is done with the stage */|||&&&"
     "            const float sa0 = sa_tiles[s * BLOCK_M + row0];|||"
     "            mbar_arrive(&empty[s]);\n            const float sa0 = sa_tiles[s * BLOCK_M + row0];",
     "bad elements"),
    ("normal_bm128_bn16_s3", "0,128,16,3",
     "mbar_arrive_expect_tx(&full[s], kStageTxBytes);|||mbar_arrive_expect_tx(&full[s], kStageTxBytes - 16);",
     "EMU: deadlock"),
    ("normal_bm128_bn16_s3", "0,128,16,3",
     "const float b_scale = b_scales[dinf_fp8_b_scale_index(&args, tile.group, n0, kb)];|||"
     "const float b_scale = b_scales[dinf_fp8_b_scale_index(&args, tile.group, n0, kb > 0 ? kb - 1 : 0)];",
     "bad elements"),
    ("masked_bm64_bn32_s1", "2,64,32,1",
     "            if (row >= tile.row_limit)|||            if (row > tile.row_limit)",
     "bad elements"),
    # BLOCK_M 256 waves (fast rung): wave 1 reading wave 0's A rows; the stage
    # released after wave 0 (refilled under wave 1's wgmma); a masked
    # warpgroup TMA-storing when only its first wave's rows are owned
    ("fast_normal_bm256_bn128_c1", "0,256,128,2,1,1",
     "(math_wg * kWgRows + w * 64) * DINF_FP8_BLOCK_K);|||(math_wg * kWgRows) * DINF_FP8_BLOCK_K);",
     "bad elements"),
    ("fast_normal_bm256_bn128_c1", "0,256,128,2,1,1",
     "                    if (w == kWaves - 1) {|||                    if (w == 0) {", "bad elements"),
    ("fast_masked_bm256_bn96_c2", "2,256,96,2,2,1",
     "            if (GEMM_TYPE != DINF_FP8_GEMM_MASKED || wg_row0 + kWgRows <= tile.row_limit) {|||"
     "            if (GEMM_TYPE != DINF_FP8_GEMM_MASKED || wg_row0 + 64 <= tile.row_limit) {",
     "bad elements"),
    # split-K over a cluster of 4 (the pull reduction): ranks > 0 overwrite a
    # partial rank 0 has not read; rank 0 releases rank 1's buffer only; rank 0
    # reads without waiting; red_full completes after one rank's warps
    ("fast_normal_bn64_split4", "0,128,64,2,4,4",
     "mbar_wait_acquire_cluster(red_empty, phase ^ 1u);|||mbar_wait_acquire_cluster(red_empty, phase);",
     "EMU: deadlock"),
    ("fast_normal_bn64_split4", "0,128,64,2,4,4",
     "smem_u32(red_empty), (uint32_t)lane));|||smem_u32(red_empty), 1u));", "EMU: deadlock"),
    ("fast_normal_bn64_split4", "0,128,64,2,4,4",
     "                mbar_wait_acquire_cluster(red_full, phase);|||", "EMU: deadlock"),
    ("fast_normal_bn64_split4", "0,128,64,2,4,4",
     "mbar_init(red_full, (SPLIT_K - 1) * (kMathThreads / 32));|||"
     "mbar_init(red_full, kMathThreads / 32);", "EMU: deadlock"),
]
LONG_MUTATIONS = [
    # wgrad: B scales of k block 0 only; d overwritten instead of accumulated;
    # the B-scale map's row stride not the aligned n (the driver refuses it)
    ("wgrad_bm128_bn128_s3", "128,128,3",
     "tma_load_3d(sb_tiles + s * kSbStride, &map_sb, &full[s], n0, kb, 0);|||"
     "tma_load_3d(sb_tiles + s * kSbStride, &map_sb, &full[s], n0, 0, 0);", "bad elements"),
    ("wgrad_bm64_bn32_s2", "64,32,2", "out[0] = out[0] + lo;|||out[0] = lo;", "bad elements"),
    ("wgrad_bm128_bn64_s1", "128,64,1",
     "{(uint64_t)(aligned_n * 4), (uint64_t)(aligned_n * 4 * k_blocks)},|||"
     "{(uint64_t)(p->n * 4), (uint64_t)(aligned_n * 4 * k_blocks)},", "cuTensorMapEncodeTiled"),
    ("normal_bm64_bn32_s2", "0,64,32,2", "                mbar_wait(&empty[s], slot.empty_parity);|||",
     "more arrivals than the barrier was initialised for"),
    ("normal_bm64_bn32_s2", "0,64,32,2", "            wgmma_fence();|||", "without a wgmma.fence"),
    ("normal_bm64_bn32_s2", "0,64,32,2", "            wgmma_wait_all();|||", "not waited for"),
    ("normal_bm128_bn64_s1", "0,128,64,1", "desc |= (unsigned long long)(1024 >> 4) << 32;|||"
     "desc |= (unsigned long long)(512 >> 4) << 32;", "stride byte offset 512"),
    ("normal_bm128_bn64_s1", "0,128,64,1", "                if (col + 1 < args.n)|||                if (col < args.n)",
     "bad elements"),
    ("normal_bm128_bn64_s1", "0,128,64,1",
     "tma_load_3d(sa_tiles + s * BLOCK_M, &map_sa, &full[s], m0, kb, a_group);|||"
     "tma_load_3d(sa_tiles + s * BLOCK_M, &map_sa, &full[s], m0 + 1, kb, a_group);", "bad elements"),
    ("masked_heuristic", "2,64,128,8",
     "gemm_type == DINF_FP8_GEMM_MASKED ? (long long)group * a->m + row : (long long)row;|||"
     "gemm_type == DINF_FP8_GEMM_MASKED ? (long long)group * a->m + row + 1 : (long long)row;", "bad elements"),
    ("normal_bm64_bn32_s2", "0,64,32,2",
     "        p->a, 1, 128, {(uint64_t)p->k, (uint64_t)p->m, (uint64_t)a_groups},|||"
     "        p->a, 1, 128, {(uint64_t)p->k, (uint64_t)p->m + 1, (uint64_t)a_groups},",
     "not inside one buffer the harness registered"),
    ("normal_bm64_bn32_s2", "0,64,32,2",
     "g->swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B|||"
     "g->swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_64B", "swizzle span"),
    ("normal_bm128_bn16_s3", "0,128,16,3", "    p.empty_parity = p.full_parity ^ 1u;|||    p.empty_parity = p.full_parity;",
     "EMU: deadlock"),
    ("fast_normal_bm256_bn128_c1", "0,256,128,2,1,1",
     "    return (math_wg * waves + wave) * 64 + warp * 16 + lane / 4 + 8 * half;|||"
     "    return (math_wg + wave) * 64 + warp * 16 + lane / 4 + 8 * half;", "bad elements"),
]
# Programmatic dependent launch (fast rung): every thread must pass
# griddepcontrol.wait before its first global access. The emulator closes
# every buffer the kernel can reach (PROT_NONE) to a thread that has not,
# and refuses a TMA issued before it. '&&&' joins several changes.
_PDL = "    griddep_wait();\n    griddep_launch_dependents();"
PDL_MUTATIONS = [
    # the wait removed
    ("fast_normal_bn96_c1", "0,128,96,3,1,1", _PDL + "|||    griddep_launch_dependents();",
     "before griddepcontrol.wait"),
    # the producer waits only after its first TMA load (of A)
    ("fast_normal_bn96_c1", "0,128,96,3,1,1",
     _PDL + "|||    if (warpgroup != 0)\n        griddep_wait();\n    griddep_launch_dependents();&&&"
     "                        tma_load_3d(a_dst, &map_a, &full[s], k0, m0, a_group);|||"
     "                        { tma_load_3d(a_dst, &map_a, &full[s], k0, m0, a_group); griddep_wait(); }",
     "cp.async.bulk.tensor (TMA load) issued before griddepcontrol.wait"),
    # the math warpgroups never wait: the scheduler's read of masked_m faults
    ("fast_masked_bn80_c1", "2,64,80,3,1,1",
     _PDL + "|||    if (warpgroup == 0)\n        griddep_wait();\n    griddep_launch_dependents();",
     "global memory access to group_info (m_indices / masked_m) (byte 0) before griddepcontrol.wait"),
    # split-K cluster, multicast partner: only rank 0 waits
    ("fast_normal_bn48_split", "0,128,48,2,2,2",
     _PDL + "|||    if (rank == 0)\n        griddep_wait();\n    griddep_launch_dependents();",
     "before griddepcontrol.wait"),
]
MUTATIONS += PDL_MUTATIONS
if os.environ.get("SM90_EMU_LONG") == "1":
    MUTATIONS += LONG_MUTATIONS


def mut_file(mut, config=""):
    """The wgrad kernel's template for its configs (three parameters); the
    simple rung's template when the text to change is in it, else wherever
    it is (the scheduler header, lib/gemm): gen.py checks it is unique."""
    old = mut.split("|||")[0]
    wgrad = os.path.join(REPO, "jit", "templates", "fp8_gemm_1d1d.cuh")
    if config.count(",") == 2 and old in open(wgrad).read():
        return "jit/templates/fp8_gemm_1d1d.cuh"
    simple = open(os.path.join(REPO, "jit", "templates", "fp8_gemm.cuh")).read()
    return "jit/templates/fp8_gemm.cuh" if old in simple else ""


@pytest.mark.parametrize("case,config,mut,expect", MUTATIONS, ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_planted_kernel_bug_is_caught(case, config, mut, expect):
    # configs with the simple rung's four parameters: plant there when the
    # text is in it (the fast rung shares much of its text); six: the fast rung
    # three data seeds, one scheduling stream: a race that a given interleaving
    # happens to survive (e.g. red_full completing early, caught by 7 of 8
    # scheduling seeds) is caught by one of the three runs
    r = run([case], MUT=mut, MUT_FILE=mut_file(mut, config), EMU_CONFIGS=config, EMU_SEED=5, EMU_SEEDS=3)
    out = r.stdout + r.stderr
    assert "mutation planted" in out, out
    assert r.returncode != 0, out
    assert expect in out, out


@pytest.mark.skipif(os.environ.get("SM90_EMU_LONG") != "1", reason="long run: SM90_EMU_LONG=1")
@pytest.mark.parametrize("mma", ["double", "seq"])
def test_long_seeds(mma):
    for seed in (1, 2, 3, 4):
        r = run(EMU_MMA=mma, EMU_SEED=seed, EMU_SEEDS=3, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
    r = run(EMU_MMA=mma, EMU_SKEW=0, EMU_SEEDS=2)
    assert r.returncode == 0, r.stdout + r.stderr
