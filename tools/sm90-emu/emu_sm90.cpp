/*
 * Host implementations of the sm_90a PTX instructions (see emu_sm90.h).
 * Written from the PTX ISA and the CUDA driver API documentation; every
 * place where the emulator refuses something the hardware might accept is
 * marked "emulator rule".
 */
#include "emu_sm90.h"

#include <cuda.h>

#include <cmath>
#include <vector>

namespace emu {

int mma_mode = [] {
    const char *e = getenv("EMU_MMA");
    if (!e || !strcmp(e, "double"))
        return 0;
    if (!strcmp(e, "seq"))
        return 1;
    fprintf(stderr, "EMU: EMU_MMA=%s: expected double or seq\n", e);
    exit(2);
}();

/* ------------------------------------------------------- conversions -- */
static uint32_t f32_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    return b;
}
static float bits_f32(uint32_t b) {
    float x;
    memcpy(&x, &b, 4);
    return x;
}

/* cvt.rn.bf16.f32: round to nearest even; NaN -> canonical NaN 0x7FFF. */
uint16_t cvt_rn_bf16_f32(float x) {
    const uint32_t b = f32_bits(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u)
        return 0x7FFF;
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}
uint32_t cvt_rn_bf16x2_f32(float a, float b) {
    return ((uint32_t)cvt_rn_bf16_f32(a) << 16) | cvt_rn_bf16_f32(b);
}
float bf16_to_f32(uint16_t v) { return bits_f32((uint32_t)v << 16); }

/* float8 e4m3 (E4M3FN): bias 7, no infinities, S.1111.111 is NaN,
 * exponent 0 is subnormal (m / 8 * 2^-6). */
float e4m3_to_f32(uint8_t c) {
    const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    float v;
    if (e == 15 && m == 7)
        v = NAN;
    else if (e == 0)
        v = std::ldexp((float)m, -9);
    else
        v = std::ldexp((float)(8 + m), e - 10);
    return s ? -v : v;
}
static struct E4m3Table {
    float t[256];
    E4m3Table() {
        for (int i = 0; i < 256; i++)
            t[i] = e4m3_to_f32((uint8_t)i);
    }
} e4m3_table;

/* ---------------------------------------------------- thread state -- */
struct WgOp {
    WgType type;
    int n;
    uint64_t da, db;
    float *d;
    int scale_d;
    int trans_b = 0;
    long long group; /* -1: not committed yet */
    bool captured = false;
    bool chain_start = false;
    std::vector<float> d_in;
    std::vector<uint8_t> a, b; /* rows r0, r1 (32 bytes each); the thread's n/4 columns of B */
};
struct BulkOp {
    long long group;
    std::function<void(bool)> read; /* the shared-memory read, then the global write (now: true) */
};
struct ThreadExt {
    std::vector<WgOp> ops;
    long long next_group = 0;
    bool fenced = false;
    std::vector<BulkOp> bulk;
    long long bulk_next = 0;
};
static ThreadExt &ext() {
    void *&s = thread_ext_slot();
    if (!s)
        s = new ThreadExt();
    return *(ThreadExt *)s;
}

/* --------------------------------------------------------------- TMA -- */
static const TensorMap &map_check(const void *map, const char *what) {
    const TensorMap *m = (const TensorMap *)map;
    if ((uintptr_t)map % 64)
        fail("%s: tensor map %p is not 64-byte aligned", what, map);
    if (m->magic != kTensorMapMagic)
        fail("%s: %p is not a tensor map encoded by cuTensorMapEncodeTiled", what, map);
    return *m;
}

void tma_prefetch(const void *map) { map_check(map, "prefetch.tensormap"); }

/* Swizzled byte offset within a destination (emulator rule: swizzled boxes
 * have rows of exactly the swizzle span and start 1024-byte aligned, so the
 * pattern is the 16-byte chunk index XOR (row % 8) of each 1024-byte span
 * for 128B, and the analogous 512 / 256-byte patterns for 64B / 32B). */
static size_t swz(size_t lin, unsigned span) {
    if (span == 128)
        return lin ^ (((lin >> 7) & 7) << 4);
    if (span == 64)
        return lin ^ (((lin >> 7) & 3) << 4);
    if (span == 32)
        return lin ^ (((lin >> 7) & 1) << 4);
    return lin;
}

static size_t box_bytes(const TensorMap &m) {
    size_t b = m.elem_bytes;
    for (int d = 0; d < m.rank; d++)
        b *= m.box[d];
    return b;
}

/* Copy the box at c from global memory into dst (host pointer). */
static void tma_gather(const TensorMap &m, const int *c, uint8_t *dst) {
    const unsigned e = m.elem_bytes, b0 = m.box[0], row_bytes = b0 * e;
    std::vector<uint8_t> row(row_bytes);
    unsigned idx[5] = {0, 0, 0, 0, 0};
    size_t rows = 1;
    for (int d = 1; d < m.rank; d++)
        rows *= m.box[d];
    for (size_t r = 0; r < rows; r++) {
        size_t rem = r;
        bool inb = true;
        uint64_t goff = 0;
        for (int d = 1; d < m.rank; d++) {
            idx[d] = (unsigned)(rem % m.box[d]);
            rem /= m.box[d];
            const long long x = (long long)c[d] + idx[d];
            if (x < 0 || x >= (long long)m.dims[d])
                inb = false;
            else
                goff += (uint64_t)x * m.strides[d - 1];
        }
        /* out-of-bounds elements: zeros (OOB_FILL_NONE) or NaN (NAN_REQUEST_ZERO_FMA, floats) */
        if (m.oob_nan && m.is_float) {
            for (unsigned i = 0; i < b0; i++) {
                if (e == 4) {
                    const uint32_t q = 0x7FFFFFFFu;
                    memcpy(&row[i * 4], &q, 4);
                } else if (e == 2) {
                    const uint16_t q = 0x7FFF;
                    memcpy(&row[i * 2], &q, 2);
                } else
                    memset(&row[i * e], 0xFF, e);
            }
        } else
            memset(row.data(), 0, row_bytes);
        if (inb) {
            long long lo = c[0], hi = (long long)c[0] + b0;
            if (lo < 0)
                lo = 0;
            if (hi > (long long)m.dims[0])
                hi = (long long)m.dims[0];
            if (lo < hi) {
                const uint8_t *src = (const uint8_t *)(uintptr_t)(m.base + goff + (uint64_t)lo * e);
                global_check(src, (size_t)(hi - lo) * e, "TMA load");
                memcpy(&row[(size_t)(lo - c[0]) * e], src, (size_t)(hi - lo) * e);
            }
        }
        const size_t lin0 = r * row_bytes;
        for (unsigned o = 0; o < row_bytes; o += 16) {
            const unsigned len = row_bytes - o < 16 ? row_bytes - o : 16;
            memcpy(dst + swz(lin0 + o, m.swizzle_bytes), &row[o], len);
        }
    }
}

static void check_dst(const TensorMap &m, const void *dst, const char *what) {
    const uint32_t a = smem_addr(dst);
    if (a % 128)
        fail("%s: shared memory address 0x%x is not 128-byte aligned", what, a);
    if (m.swizzle_bytes && a % 1024)
        fail("%s: swizzled box at shared address 0x%x: not 1024-byte aligned (emulator rule: the "
             "swizzle pattern is taken relative to a 1024-byte aligned box)",
             what, a);
    smem_host(a, box_bytes(m), nullptr);
}

void tma_load(void *dst, const void *map, uint64_t *bar, const int *coords, int rank, uint16_t mask) {
    griddep_check("cp.async.bulk.tensor (TMA load) issued");
    const TensorMap m = map_check(map, "cp.async.bulk.tensor (load)");
    if (m.rank != rank)
        fail("cp.async.bulk.tensor.%dd with a tensor map of rank %d", rank, m.rank);
    check_dst(m, dst, "cp.async.bulk.tensor (load)");
    mbar_test(bar, 0); /* the barrier must be initialised */
    const size_t bytes = box_bytes(m);
    std::vector<int> c(coords, coords + rank);
    struct Dest {
        uint8_t *dst;
        uint64_t *bar;
        unsigned rank;
    };
    std::vector<Dest> dests;
    if (mask == 0)
        dests.push_back({(uint8_t *)dst, bar, cluster_rank()});
    else {
        for (unsigned r = 0; r < 16; r++)
            if (mask >> r & 1u) {
                if (r >= cluster_size())
                    fail("multicast mask 0x%x names CTA rank %u of a cluster of %u", mask, r,
                         cluster_size());
                dests.push_back({smem_peer(dst, bytes, r), (uint64_t *)smem_peer(bar, 8, r), r});
            }
    }
    post_async([m, c, bytes, dests] {
        std::vector<uint8_t> tmp(bytes);
        tma_gather(m, c.data(), tmp.data());
        for (const Dest &d : dests) {
            check_cta_alive(d.rank, "a TMA load lands");
            memcpy(d.dst, tmp.data(), bytes);
            mbar_complete_tx(d.bar, (uint32_t)bytes);
        }
    });
    maybe_yield();
}

void tma_store(const void *map, const void *src, const int *coords, int rank) {
    griddep_check("cp.async.bulk.tensor (TMA store) issued");
    const TensorMap m = map_check(map, "cp.async.bulk.tensor (store)");
    if (m.rank != rank)
        fail("cp.async.bulk.tensor.%dd store with a tensor map of rank %d", rank, m.rank);
    check_dst(m, src, "cp.async.bulk.tensor (store)");
    const size_t bytes = box_bytes(m);
    const uint8_t *s = (const uint8_t *)src;
    std::vector<int> c(coords, coords + rank);
    ThreadExt &x = ext();
    /* The shared memory is read at a later point (at the latest when a
     * wait_group.read covering it returns); the global write follows. */
    auto read = [m, c, s, bytes](bool write_now) {
        std::vector<uint8_t> lin(bytes);
        for (size_t o = 0; o < bytes; o += 16) /* rows are multiples of 16 bytes */
            memcpy(&lin[o], s + swz(o, m.swizzle_bytes), 16);
        auto write = [m, c, lin] {
            const unsigned e = m.elem_bytes, b0 = m.box[0];
            size_t rows = 1;
            for (int d = 1; d < m.rank; d++)
                rows *= m.box[d];
            for (size_t r = 0; r < rows; r++) {
                size_t rem = r;
                bool inb = true;
                uint64_t goff = 0;
                for (int d = 1; d < m.rank; d++) {
                    const unsigned i = (unsigned)(rem % m.box[d]);
                    rem /= m.box[d];
                    const long long xx = (long long)c[d] + i;
                    if (xx < 0 || xx >= (long long)m.dims[d])
                        inb = false;
                    else
                        goff += (uint64_t)xx * m.strides[d - 1];
                }
                if (!inb)
                    continue; /* out-of-bounds elements are not written */
                long long lo = c[0], hi = (long long)c[0] + b0;
                if (lo < 0)
                    lo = 0;
                if (hi > (long long)m.dims[0])
                    hi = (long long)m.dims[0];
                if (lo >= hi)
                    continue;
                uint8_t *g = (uint8_t *)(uintptr_t)(m.base + goff + (uint64_t)lo * e);
                global_check(g, (size_t)(hi - lo) * e, "TMA store");
                memcpy(g, &lin[r * b0 * e + (size_t)(lo - c[0]) * e], (size_t)(hi - lo) * e);
            }
        };
        if (write_now)
            write();
        else
            post_async(write, true);
    };
    x.bulk.push_back({-1, read});
    maybe_yield();
}

void bulk_commit_group() {
    ThreadExt &x = ext();
    for (BulkOp &b : x.bulk)
        if (b.group < 0)
            b.group = x.bulk_next;
    x.bulk_next++;
}

/* cp.async.bulk.wait_group[.read] n: all but the n most recent bulk groups
 * complete (.read: their shared-memory reads; the global writes may still
 * be in flight). */
void bulk_wait_group(int n, bool read_only) {
    ThreadExt &x = ext();
    const long long limit = x.bulk_next - n; /* groups < limit complete */
    std::vector<BulkOp> keep;
    for (BulkOp &b : x.bulk) {
        if (b.group >= 0 && b.group < limit)
            b.read(!read_only); /* without .read the writes are complete on return */
        else
            keep.push_back(std::move(b));
    }
    x.bulk.swap(keep);
    maybe_yield();
}

/* ------------------------------------------------------------- wgmma -- */
struct Desc {
    uint32_t start, lbo, sbo;
};

/* Decode a matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits
 * 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride
 * byte offset >> 4, 49-51 base offset, 62-63 layout (1 = 128B swizzle).
 * Emulator rules (values our kernels never produce are rejected): 128B
 * swizzle only, K-major, base offset 0, reserved bits 0, LBO field 0 or 1
 * (unused for K-major swizzled layouts), SBO a non-zero multiple of 1024,
 * the start address at row 0 of a swizzle atom ((start >> 7) & 7 == 0)
 * with the 32-byte K slice inside the 128-byte row. */
static Desc decode(uint64_t desc, const char *which, bool mn_major = false) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4;
    const uint32_t lbo = (uint32_t)((desc >> 16) & 0x3FFF);
    const uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
    const unsigned base = (unsigned)((desc >> 49) & 7), layout = (unsigned)(desc >> 62);
    const uint64_t reserved = desc & (0x3ull << 14 | 0x3ull << 30 | 0x7ull << 46 | 0x3FFull << 52);
    if (layout != 1)
        fail("wgmma descriptor %s = 0x%016llx: layout type %u (only 1 = 128B swizzle is emulated)",
             which, (unsigned long long)desc, layout);
    if (reserved)
        fail("wgmma descriptor %s = 0x%016llx: reserved bits set", which, (unsigned long long)desc);
    if (base)
        fail("wgmma descriptor %s = 0x%016llx: base offset %u (our kernels use 0)", which,
             (unsigned long long)desc, base);
    if (!mn_major && lbo > 1)
        fail("wgmma descriptor %s = 0x%016llx: leading byte offset field %u (unused for K-major "
             "128B-swizzled operands: 0 or 1 expected)",
             which, (unsigned long long)desc, lbo);
    /* MN-major (CuTe's ((8,n),(8,k)) : ((1,LBO),(8,SBO)) in 16-byte units):
     * LBO = bytes between 64-element (128-byte) column blocks, SBO = bytes
     * between 8-row K groups; both whole 1024-byte atoms. */
    if (mn_major && (lbo == 0 || (lbo << 4) % 1024))
        fail("wgmma descriptor %s = 0x%016llx: MN-major leading byte offset %u is not a non-zero "
             "multiple of 1024",
             which, (unsigned long long)desc, lbo << 4);
    if (sbo == 0 || sbo % 1024)
        fail("wgmma descriptor %s = 0x%016llx: stride byte offset %u is not a non-zero multiple of "
             "1024 (8 rows of 128 bytes)",
             which, (unsigned long long)desc, sbo);
    if ((start >> 7) & 7)
        fail("wgmma descriptor %s = 0x%016llx: start address 0x%x is not at row 0 of a 1024-byte "
             "swizzle atom (base offset 0)",
             which, (unsigned long long)desc, start);
    if (!mn_major && (start & 0x7F) + 32 > 128)
        fail("wgmma descriptor %s = 0x%016llx: the 32-byte K slice at 0x%x crosses the 128-byte row",
             which, (unsigned long long)desc, start);
    if (mn_major && (start & 0x7F))
        fail("wgmma descriptor %s = 0x%016llx: MN-major start 0x%x not at a row start", which,
             (unsigned long long)desc, start);
    return {start, lbo << 4, sbo};
}

/* 32 bytes of row `row` (K-major, 128B swizzle) into out. */
static void read_row(const Desc &d, unsigned row, uint8_t *out) {
    for (unsigned ch = 0; ch < 2; ch++) {
        uint32_t a = d.start + (row >> 3) * d.sbo + (row & 7) * 128 + ch * 16;
        a ^= ((a >> 7) & 7) << 4;
        memcpy(out + 16 * ch, smem_host(a, 16, nullptr), 16);
    }
}

/* The 16 bf16 K values of column n of an MN-major operand (k16), as a
 * 32-byte K-major row. */
static void read_col_mn(const Desc &d, unsigned n, uint8_t *out) {
    for (unsigned k = 0; k < 16; k++) {
        uint32_t a = d.start + (n / 64) * d.lbo + (k / 8) * d.sbo + (k % 8) * 128 + (n % 64) * 2;
        a ^= ((a >> 7) & 7) << 4;
        memcpy(out + 2 * k, smem_host(a, 2, nullptr), 2);
    }
}

static void capture(WgOp &op) {
    const unsigned t = tid() % 128, w = t / 32, lane = t % 32;
    const Desc da = decode(op.da, "A"), db = decode(op.db, "B", op.trans_b);
    const unsigned r0 = 16 * w + lane / 4;
    op.a.resize(64);
    read_row(da, r0, &op.a[0]);
    read_row(da, r0 + 8, &op.a[32]);
    const unsigned ncols = (unsigned)op.n / 4;
    op.b.resize((size_t)ncols * 32);
    for (unsigned i = 0; i < (unsigned)op.n / 8; i++)
        for (unsigned j = 0; j < 2; j++)
            if (op.trans_b)
                read_col_mn(db, 8 * i + 2 * (lane % 4) + j, &op.b[(2 * i + j) * 32]);
            else
                read_row(db, 8 * i + 2 * (lane % 4) + j, &op.b[(2 * i + j) * 32]);
    op.captured = true;
}

static float elem(WgType type, const uint8_t *row, int k) {
    if (type == WG_E4M3)
        return e4m3_table.t[row[k]];
    uint16_t v;
    memcpy(&v, row + 2 * k, 2);
    return bf16_to_f32(v);
}

/* D fragment (PTX ISA, wgmma .m64nNk* f32 accumulators): d[4i + 2h + j] is
 * row 16 * warp + lane / 4 + 8 h, column 8 i + 2 (lane % 4) + j. */
static void compute(WgOp &op, const float *in, float *out) {
    const int kk = op.type == WG_E4M3 ? 32 : 16;
    for (int i = 0; i < op.n / 8; i++)
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 2; j++) {
                const uint8_t *ar = &op.a[32 * h], *br = &op.b[(2 * i + j) * 32];
                const int idx = 4 * i + 2 * h + j;
                if (mma_mode == 0) {
                    double s = 0;
                    for (int k = 0; k < kk; k++)
                        s += (double)elem(op.type, ar, k) * (double)elem(op.type, br, k);
                    out[idx] = op.scale_d ? (float)((double)in[idx] + s) : (float)s;
                } else {
                    float x = op.scale_d ? in[idx] : 0.0f;
                    for (int k = 0; k < kk; k++) {
                        const float p = elem(op.type, ar, k) * elem(op.type, br, k);
                        x = x + p;
                    }
                    out[idx] = x;
                }
            }
}

enum { OP_WGMMA = 101, OP_FENCE, OP_COMMIT, OP_WAIT };

void wgmma(WgType type, int n, uint64_t desc_a, uint64_t desc_b, float *d, int scale_d, int trans_b) {
    if (n < 8 || n > 256 || n % 8)
        fail("wgmma n = %d", n);
    if (trans_b && type != WG_BF16)
        fail("wgmma: imm-trans-b with an 8-bit type (only 16-bit types may be MN-major)");
    Slot *s = coll_slots(WARPGROUP);
    const unsigned t = tid();
    s[t].v[0] = desc_a;
    s[t].v[1] = desc_b;
    s[t].v[2] = (uint64_t)(scale_d != 0);
    s[t].v[3] = (uint64_t)n | (uint64_t)type << 16 | (uint64_t)trans_b << 24;
    coll_wait(WARPGROUP, OP_WGMMA, "wgmma.mma_async");
    const Slot &o = s[t / 128 * 128];
    for (int i = 0; i < 4; i++)
        if (o.v[i] != s[t].v[i])
            fail("wgmma.mma_async: operand %d differs across the warpgroup (0x%llx here, 0x%llx in "
                 "thread %u)",
                 i, (unsigned long long)s[t].v[i], (unsigned long long)o.v[i], t / 128 * 128);
    decode(desc_a, "A");
    decode(desc_b, "B", trans_b != 0);
    ThreadExt &x = ext();
    bool busy = false;
    for (const WgOp &p : x.ops)
        busy |= p.d == d;
    WgOp op;
    op.type = type;
    op.n = n;
    op.da = desc_a;
    op.db = desc_b;
    op.d = d;
    op.scale_d = scale_d != 0;
    op.trans_b = trans_b;
    op.group = -1;
    if (!busy) {
        if (!x.fenced)
            fail("wgmma.mma_async on accumulators without a wgmma.fence since they were last "
                 "accessed");
        op.chain_start = true;
        op.d_in.assign(d, d + n / 2);
        for (int i = 0; i < n / 2; i++)
            d[i] = NAN; /* the registers are in use until wgmma.wait_group */
    }
    if (skew && rnd() % 2)
        capture(op); /* operands read at issue ... */
    x.ops.push_back(std::move(op));
}

void wgmma_fence() {
    coll_wait(WARP, OP_FENCE, "wgmma.fence");
    ext().fenced = true;
}

void wgmma_commit() {
    coll_wait(WARP, OP_COMMIT, "wgmma.commit_group");
    ThreadExt &x = ext();
    for (WgOp &p : x.ops)
        if (p.group < 0)
            p.group = x.next_group;
    x.next_group++;
}

void wgmma_wait(int n) {
    coll_wait(WARP, OP_WAIT, "wgmma.wait_group");
    ThreadExt &x = ext();
    const long long limit = x.next_group - n;
    std::vector<WgOp> keep;
    /* complete in issue order; a chain's value flows through `cur` */
    std::vector<std::pair<float *, std::vector<float>>> vals;
    for (WgOp &p : x.ops) {
        if (!(p.group >= 0 && p.group < limit)) {
            keep.push_back(std::move(p));
            continue;
        }
        if (!p.captured)
            capture(p); /* ... or at the latest point, the wait */
        std::vector<float> *in = nullptr;
        for (auto &v : vals)
            if (v.first == p.d)
                in = &v.second;
        if (p.chain_start || !in) {
            if (!p.chain_start)
                fail("internal: wgmma chain without a start");
            vals.push_back({p.d, p.d_in});
            in = &vals.back().second;
        }
        std::vector<float> out(p.n / 2);
        compute(p, in->data(), out.data());
        *in = out;
    }
    for (auto &v : vals) {
        bool pending = false;
        for (const WgOp &p : keep)
            pending |= p.d == v.first;
        if (pending)
            fail("wgmma.wait_group completes part of a chain on the same accumulators");
        memcpy(v.first, v.second.data(), v.second.size() * sizeof(float));
    }
    x.ops.swap(keep);
    x.fenced = false;
}

void thread_exit_checks() {
    void *&s = thread_ext_slot();
    if (!s)
        return;
    ThreadExt *x = (ThreadExt *)s;
    if (!x->ops.empty())
        fail("thread exited with %zu wgmma operation(s) not waited for", x->ops.size());
    if (!x->bulk.empty())
        fail("thread exited with %zu bulk copies (TMA stores) not waited for", x->bulk.size());
    delete x;
    s = nullptr;
}
static struct Hook {
    Hook() { on_thread_exit = thread_exit_checks; }
} hook;

} // namespace emu

/* ------------------------------------------------- tensor map encode -- */
extern "C" int emu_encode_tiled(void *map, int dtype, unsigned rank, void *base, const uint64_t *dims,
                                const uint64_t *strides, const uint32_t *box,
                                const uint32_t *element_strides, int interleave, int swizzle,
                                int l2_promotion, int oob_fill) {
    (void)l2_promotion;
    int elem = 0, is_float = 0;
    switch (dtype) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8: elem = 1; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16: elem = 2; break;
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: elem = 2; is_float = 1; break;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32: elem = 4; break;
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: elem = 4; is_float = 1; break;
    default:
        fprintf(stderr, "EMU: cuTensorMapEncodeTiled: data type %d not emulated\n", dtype);
        return CUDA_ERROR_INVALID_VALUE;
    }
#define BAD(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "EMU: cuTensorMapEncodeTiled: " __VA_ARGS__);                             \
        fprintf(stderr, "\n");                                                                     \
        return CUDA_ERROR_INVALID_VALUE;                                                           \
    } while (0)
    if (!map || (uintptr_t)map % 64)
        BAD("tensorMap %p not 64-byte aligned", map);
    if (rank < 1 || rank > 5)
        BAD("rank %u", rank);
    if ((uintptr_t)base % 16)
        BAD("globalAddress %p not 16-byte aligned", base);
    if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
        BAD("interleaved layouts are not emulated");
    for (unsigned d = 0; d < rank; d++) {
        if (dims[d] == 0 || dims[d] > (1ull << 32))
            BAD("globalDim[%u] = %llu", d, (unsigned long long)dims[d]);
        if (box[d] == 0 || box[d] > 256)
            BAD("boxDim[%u] = %u", d, box[d]);
        if (element_strides[d] == 0 || element_strides[d] > 8)
            BAD("elementStrides[%u] = %u", d, element_strides[d]);
        if (element_strides[d] != 1)
            BAD("elementStrides[%u] = %u: only 1 is emulated", d, element_strides[d]);
    }
    for (unsigned d = 0; d + 1 < rank; d++)
        if (strides[d] % 16 || strides[d] >= (1ull << 40))
            BAD("globalStrides[%u] = %llu (multiple of 16 below 2^40)", d,
                (unsigned long long)strides[d]);
    if ((box[0] * (unsigned)elem) % 16)
        BAD("boxDim[0] * element size = %u bytes is not a multiple of 16", box[0] * elem);
    unsigned span = 0;
    switch (swizzle) {
    case CU_TENSOR_MAP_SWIZZLE_NONE: span = 0; break;
    case CU_TENSOR_MAP_SWIZZLE_32B: span = 32; break;
    case CU_TENSOR_MAP_SWIZZLE_64B: span = 64; break;
    case CU_TENSOR_MAP_SWIZZLE_128B: span = 128; break;
    default: BAD("swizzle %d not emulated", swizzle);
    }
    if (span && box[0] * (unsigned)elem > span)
        BAD("boxDim[0] * element size = %u bytes exceeds the swizzle span %u", box[0] * elem, span);
    if (span && box[0] * (unsigned)elem != span)
        BAD("boxDim[0] * element size = %u bytes below the swizzle span %u (emulator rule: not "
            "emulated)",
            box[0] * elem, span);
    if (oob_fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE && !is_float)
        BAD("NaN out-of-bounds fill for an integer type");
#undef BAD
    emu::TensorMap m;
    memset(&m, 0, sizeof m);
    m.magic = emu::kTensorMapMagic;
    m.base = (uint64_t)(uintptr_t)base;
    for (unsigned d = 0; d < rank; d++) {
        m.dims[d] = dims[d];
        m.box[d] = box[d];
    }
    for (unsigned d = 0; d + 1 < rank; d++)
        m.strides[d] = strides[d];
    m.rank = (uint8_t)rank;
    m.elem_bytes = (uint8_t)elem;
    m.swizzle_bytes = (uint8_t)span;
    m.oob_nan = oob_fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
    m.is_float = (uint8_t)is_float;
    memset(map, 0, 128);
    memcpy(map, &m, sizeof m);
    return CUDA_SUCCESS;
}
