/*
 * Self-test of the emulated PTX paths no kernel of this tree exercises yet
 * (run.sh --selftest): bf16 wgmma with K-major and MN-major B fed by 128B
 * swizzled TMA boxes (the MLA fast rung's layouts: S = Q K^T, O = P V with V
 * MN-major), a 4-D box, 2-CTA multicast with per-CTA complete_tx, remote
 * mbarrier arrive, cluster barriers, mbarrier phase/parity rules, a TMA store
 * with bulk groups. Each result is compared with a direct computation on
 * the logical matrices, so the descriptor reading (LBO/SBO) and the TMA
 * layout must agree; both remain our reading of the PTX ISA.
 */
#include "emu_sm90.h"

#include <cmath>
#include <vector>

static int failures = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                           \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

struct alignas(64) Map {
    uint64_t raw[16];
};

static Map make_map(void *base, int elem_dtype, unsigned rank, const uint64_t *dims, const uint64_t *strides,
                    const uint32_t *box, int swizzle) {
    Map m;
    const uint32_t es[5] = {1, 1, 1, 1, 1};
    const int r = emu_encode_tiled(&m, elem_dtype, rank, base, dims, strides, box, es, 0, swizzle, 0, 0);
    if (r != 0) {
        printf("FAIL: encode returned %d\n", r);
        exit(1);
    }
    return m;
}

static uint16_t bf16(float x) { return emu::cvt_rn_bf16_f32(x); }
static float f(uint16_t b) { return emu::bf16_to_f32(b); }
static uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 |
           1ull << 62;
}

/* CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9, UINT8 = 0, FLOAT32 = 7; SWIZZLE_128B = 3, NONE = 0 */

static void test_bf16_wgmma() {
    const int R = 64, C = 64, KEYS = 32, VC = 256;
    std::vector<uint16_t> q(R * C), k(KEYS * C), v(16 * VC);
    uint64_t s = 12345;
    auto rnd = [&] {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((int)(s >> 40) % 17 - 8) / 8.0f;
    };
    for (auto &x : q) x = bf16(rnd());
    for (auto &x : k) x = bf16(rnd());
    for (auto &x : v) x = bf16(rnd());
    emu::global_clear();
    emu::global_add(q.data(), q.size() * 2, "q");
    emu::global_add(k.data(), k.size() * 2, "k");
    emu::global_add(v.data(), v.size() * 2, "v");
    const uint64_t qd[2] = {(uint64_t)C, (uint64_t)R}, qs[1] = {(uint64_t)C * 2};
    const uint32_t qb[2] = {64, 64};
    const Map mq = make_map(q.data(), 9, 2, qd, qs, qb, 3);
    const uint64_t kd[2] = {(uint64_t)C, (uint64_t)KEYS}, ks[1] = {(uint64_t)C * 2};
    const uint32_t kbx[2] = {64, 32};
    const Map mk = make_map(k.data(), 9, 2, kd, ks, kbx, 3);
    /* V as 4-D: {64 columns, 16 keys, 4 column blocks, 1}: strides key 512 B, block 128 B */
    const uint64_t vd[4] = {64, 16, 4, 1}, vs[3] = {(uint64_t)VC * 2, 128, (uint64_t)VC * 2 * 16};
    const uint32_t vb[4] = {64, 16, 4, 1};
    const Map mv = make_map(v.data(), 9, 4, vd, vs, vb, 3);
    std::vector<float> S(R * KEYS), O(R * VC);
    const size_t smem = 1024 + 8192 + 4096 + 8192 + 64;
    emu::launch({1, 1, 1}, {128, 1, 1}, {1, 1, 1}, smem, [&] {
        uint8_t *base = emu::smem_dynamic();
        base += (1024 - (emu::smem_addr(base) & 1023)) & 1023;
        uint8_t *sq = base, *sk = base + 8192, *sv = base + 8192 + 4096;
        uint64_t *bar = (uint64_t *)(base + 8192 + 4096 + 8192);
        const unsigned t = emu::tid();
        if (t == 0) {
            emu::mbar_init(bar, 1);
            CHECK(emu::mbar_test(bar, 1) && !emu::mbar_test(bar, 0), "fresh barrier parity");
            emu::mbar_expect_tx(bar, 8192 + 4096 + 8192);
            emu::mbar_arrive(bar, 1, "arrive");
            const int c2[2] = {0, 0}, c4[4] = {0, 0, 0, 0};
            emu::tma_load(sq, &mq, bar, c2, 2, 0);
            emu::tma_load(sk, &mk, bar, c2, 2, 0);
            emu::tma_load(sv, &mv, bar, c4, 4, 0);
        }
        emu::syncthreads();
        emu::mbar_wait(bar, 0);
        float acc[16], o[128];
        emu::wgmma_fence();
        for (int ks = 0; ks < 4; ks++) /* S = Q K^T over 64 columns, k16 steps of 32 bytes */
            emu::wgmma(emu::WG_BF16, 32, desc(emu::smem_addr(sq) + 32 * ks, 16, 1024),
                       desc(emu::smem_addr(sk) + 32 * ks, 16, 1024), acc, ks > 0, 0);
        /* O = Q[:, 0:16] V: A K-major, B MN-major (LBO: 64-column blocks 2048 B apart) */
        emu::wgmma(emu::WG_BF16, 256, desc(emu::smem_addr(sq), 16, 1024), desc(emu::smem_addr(sv), 2048, 1024), o,
                   0, 1);
        emu::wgmma_commit();
        emu::wgmma_wait(0);
        const unsigned w = t / 32, lane = t % 32;
        for (int i = 0; i < 4; i++)
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 2; j++)
                    S[(16 * w + lane / 4 + 8 * h) * KEYS + 8 * i + 2 * (lane % 4) + j] = acc[4 * i + 2 * h + j];
        for (int i = 0; i < 32; i++)
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 2; j++)
                    O[(16 * w + lane / 4 + 8 * h) * VC + 8 * i + 2 * (lane % 4) + j] = o[4 * i + 2 * h + j];
    });
    int bad = 0;
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < KEYS; c++) {
            double e = 0;
            for (int x = 0; x < C; x++)
                e += (double)f(q[r * C + x]) * f(k[c * C + x]);
            bad += std::fabs(e - S[r * KEYS + c]) > 1e-6 * (1 + std::fabs(e));
        }
        for (int c = 0; c < VC; c++) {
            double e = 0;
            for (int x = 0; x < 16; x++)
                e += (double)f(q[r * C + x]) * f(v[x * VC + c]);
            bad += std::fabs(e - O[r * VC + c]) > 1e-6 * (1 + std::fabs(e));
        }
    }
    CHECK(bad == 0, "bf16 wgmma: %d of %d results differ from the direct product", bad, R * (KEYS + VC));
    printf("%s bf16 wgmma K-major (S = Q K^T, 64x32) and MN-major B (O = P V, 64x256) from TMA boxes\n",
           bad ? "FAIL" : "ok  ");
}

static void test_cluster() {
    /* 2-CTA cluster: each CTA multicasts half of a 64-row e4m3 box; both CTAs
     * wait for the whole box; then each arrives on the peer's barrier. Then a
     * TMA store of the box back to global memory (CTA 0). */
    const int ROWS = 64;
    std::vector<uint8_t> a(ROWS * 128), out(ROWS * 128, 0);
    for (size_t i = 0; i < a.size(); i++)
        a[i] = (uint8_t)(i * 37 + 11);
    emu::global_clear();
    emu::global_add(a.data(), a.size(), "a");
    emu::global_add(out.data(), out.size(), "out");
    const uint64_t d[2] = {128, (uint64_t)ROWS}, st[1] = {128};
    const uint32_t half[2] = {128, (uint32_t)ROWS / 2};
    const Map m = make_map(a.data(), 0, 2, d, st, half, 3);
    const Map mo = make_map(out.data(), 0, 2, d, st, half, 3);
    int ok_ctas = 0;
    emu::launch({2, 1, 1}, {128, 1, 1}, {2, 1, 1}, 1024 + ROWS * 128 + 64, [&] {
        uint8_t *base = emu::smem_dynamic();
        base += (1024 - (emu::smem_addr(base) & 1023)) & 1023;
        uint64_t *full = (uint64_t *)(base + ROWS * 128), *peer = full + 1;
        const unsigned t = emu::tid(), r = emu::cluster_rank();
        if (t == 0) {
            emu::mbar_init(full, 1);
            emu::mbar_init(peer, 1);
        }
        emu::cluster_arrive();
        emu::cluster_wait();
        if (t == 0) {
            emu::mbar_expect_tx(full, ROWS * 128);
            emu::mbar_arrive(full, 1, "arrive");
            const int c[2] = {0, (int)r * ROWS / 2};
            emu::tma_load(base + r * (ROWS / 2) * 128, &m, full, c, 2, 3);
        }
        emu::mbar_wait(full, 0);
        if (t == 0) {
            bool same = true;
            for (int i = 0; i < ROWS * 128; i++) {
                const int row = i / 128, col = i % 128;
                const int phys = row * 128 + ((((col / 16) ^ (row % 8)) * 16) | (col % 16));
                same &= base[phys] == a[i];
            }
            ok_ctas += same;
            emu::mbar_arrive((uint64_t *)emu::smem_host(emu::mapa(emu::smem_addr(peer), r ^ 1), 8, nullptr), 1,
                             "remote arrive");
            emu::mbar_wait(peer, 0);
            if (r == 0) {
                const int c0[2] = {0, 0}, c1[2] = {0, ROWS / 2};
                emu::tma_store(&mo, base, c0, 2);
                emu::tma_store(&mo, base + (ROWS / 2) * 128, c1, 2);
                emu::bulk_commit_group();
                emu::bulk_wait_group(0, false);
            }
        }
        emu::cluster_arrive();
        emu::cluster_wait();
    });
    CHECK(ok_ctas == 2, "multicast: %d of 2 CTAs hold the whole box", ok_ctas);
    CHECK(out == a, "TMA store round trip differs");
    printf("%s 2-CTA multicast (per-CTA complete_tx), remote arrive, cluster barriers, TMA store\n",
           ok_ctas == 2 && out == a ? "ok  " : "FAIL");
}

static void test_mbarrier_phases() {
    bool ok = true;
    emu::launch({1, 1, 1}, {32, 1, 1}, {1, 1, 1}, 1024, [&] {
        uint64_t *bar = (uint64_t *)emu::smem_dynamic();
        if (emu::tid() == 0) {
            emu::mbar_init(bar, 2);
            emu::mbar_arrive(bar, 1, "a");
            ok &= !emu::mbar_test(bar, 0) && emu::mbar_test(bar, 1); /* phase 0 open */
            emu::mbar_expect_tx(bar, 100);
            emu::mbar_complete_tx(bar, 60);
            emu::mbar_arrive(bar, 1, "b"); /* arrivals done, 40 bytes pending */
            ok &= !emu::mbar_test(bar, 0);
            emu::mbar_complete_tx(bar, 40); /* phase 0 completes */
            ok &= emu::mbar_test(bar, 0) && !emu::mbar_test(bar, 1);
            emu::mbar_complete_tx(bar, 8); /* tx before expect_tx: negative, allowed */
            emu::mbar_expect_tx(bar, 8);
            emu::mbar_arrive(bar, 2, "c"); /* phase 1 completes */
            ok &= emu::mbar_test(bar, 1) && !emu::mbar_test(bar, 0);
        }
    });
    CHECK(ok, "mbarrier phase / parity / tx rules");
    printf("%s mbarrier phases, parity, tx-count (incl. complete_tx before expect_tx)\n", ok ? "ok  " : "FAIL");
}

int main() {
    test_mbarrier_phases();
    test_bf16_wgmma();
    test_cluster();
    printf("%s\n", failures ? "SELFTEST FAILED" : "SELFTEST PASSED");
    return failures ? 1 : 0;
}
