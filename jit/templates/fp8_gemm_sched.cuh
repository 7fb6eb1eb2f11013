/*
 * FP8 GEMM index math shared by the host (lib/gemm, tests: plain C11) and the
 * Hopper kernel (fp8_gemm.cuh, compiled by NVRTC): the runtime arguments of
 * one launch, tile scheduling (the order in which a persistent CTA visits
 * output tiles), the group lookup of the grouped forms and the addressing of
 * the B scales. Written once so that the CPU tests exercise the code the
 * kernel runs. Embedded in the library like every template: it includes
 * nothing and uses only C types (int, long long, unsigned long long).
 */
#ifndef DINF_FP8_GEMM_SCHED_CUH
#define DINF_FP8_GEMM_SCHED_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define DINF_FP8_HD __device__ __forceinline__
/* Pure functions of template constants: folded at compile time in the kernel. */
#define DINF_FP8_HD_CONST constexpr __device__ __forceinline__
#else
#define DINF_FP8_HD static inline
#define DINF_FP8_HD_CONST static inline
#endif

/* The three forms (template constant GEMM_TYPE). */
#define DINF_FP8_GEMM_NORMAL 0
#define DINF_FP8_GEMM_CONTIGUOUS 1
#define DINF_FP8_GEMM_MASKED 2

/* K extent of one scale block and of one pipeline stage. */
#define DINF_FP8_BLOCK_K 128
/* N-blocks per raster strip: consecutive tiles walk up to this many N-blocks
 * of one M-block before moving to the next M-block, so CTAs running at the
 * same time share A rows and a band of B in L2 (DeepGEMM v1's order). */
#define DINF_FP8_STRIP_N_BLOCKS 16

/* Dynamic shared memory of one CTA (bytes): 1024 for aligning the base,
 * then per stage an A tile (BLOCK_M x 128 e4m3), a B tile (BLOCK_N x 128
 * e4m3) and BLOCK_M A scales (float32), then a full and an empty mbarrier
 * (8 bytes each) per stage. The kernel lays it out in this order. */
#define DINF_FP8_SMEM_BYTES(block_m, block_n, stages)                                            \
    (1024 + (stages) * ((block_m) * 128 + (block_n) * 128 + (block_m) * 4) + (stages) * 16)

/* The fast kernel (fp8_gemm_fast.cuh) adds the bf16 output tile of its
 * TMA-store epilogue (block_m x block_n x 2 bytes, a multiple of 1024 for
 * the block sizes it takes) in front of the stages. */
#define DINF_FP8_FAST_SMEM_BYTES(block_m, block_n, stages)                                       \
    (DINF_FP8_SMEM_BYTES(block_m, block_n, stages) + (block_m) * (block_n) * 2)

/* With split-K (fp8_gemm_fast.cuh, SPLIT_K 2..4) also the CTA's float32
 * partial tile (block_m x block_n x 4 bytes: ranks 1.. publish theirs in it
 * for rank 0 to read) and two reduction mbarriers. */
#define DINF_FP8_FAST_MAX_SPLIT_K 4
#define DINF_FP8_FAST_SPLIT_SMEM_BYTES(block_m, block_n, stages, split_k)                        \
    (DINF_FP8_FAST_SMEM_BYTES(block_m, block_n, stages) +                                        \
     ((split_k) > 1 ? (block_m) * (block_n) * 4 + 16 : 0))

/* Register reallocation of the fast rung at BLOCK_M 128 and 256 (384 threads under
 * __launch_bounds__(384, 1): ptxas gives each thread the 168-register cap at
 * entry): the producer warpgroup lowers itself to 40, the two math
 * warpgroups raise themselves to 232; 128 * 40 + 256 * 232 = 64512 <= 384 *
 * 168. setmaxnreg.inc blocks until the pool has the registers, so the launch
 * checks the entry count ptxas reported (a kernel built with fewer would hang). */
#define DINF_FP8_FAST_ENTRY_REGS 168
#define DINF_FP8_FAST_PRODUCER_REGS 40
#define DINF_FP8_FAST_MATH_REGS 232

/*
 * Math warpgroups and 64-row wgmma waves of a tile (fast rung): one math
 * warpgroup per 64 rows up to block_m 128 (one wave each); block_m 256 keeps
 * two math warpgroups, warpgroup g owning the 128 rows [128 g, +128) as two
 * m64 "waves" (rows 128 g + 64 w, w = 0, 1) that reuse one set of wgmma
 * accumulator registers: per 128-K block wave 0's four wgmma, their promotion
 * into wave 0's float32 totals, then wave 1's (DeepGEMM #81, WAVE_BLOCK_M).
 * Threads per CTA: one producer warpgroup + the math warpgroups (the simple
 * rung's block_m 64 / 128 give the same counts).
 */
DINF_FP8_HD_CONST int dinf_fp8_math_warpgroups(int block_m) { return block_m >= 128 ? 2 : 1; }
DINF_FP8_HD_CONST int dinf_fp8_waves(int block_m) { return block_m == 256 ? 2 : 1; }
DINF_FP8_HD_CONST int dinf_fp8_threads(int block_m) {
    return 128 * (1 + dinf_fp8_math_warpgroups(block_m));
}
/* The block_n values the fast rung takes with block_m 256: totals of both
 * waves (block_n floats) + one wave's accumulators (block_n / 2) must stay
 * inside the 232-register math budget with no spills: up to 128 (checked
 * for every block_n by compiling through NVRTC). */
#define DINF_FP8_FAST_BM256_MAX_BLOCK_N 128

/* Largest dynamic shared memory per block on sm_90 (227 KiB). */
#define DINF_FP8_SMEM_LIMIT 232448

/*
 * The kernels' carve-up of that memory, byte offsets from the 1024-aligned
 * base (the first 1024 bytes of the dynamic size pay for aligning it): the
 * output tile of the fast kernel's TMA-store epilogue at d (d_bytes, 0 for
 * the simple kernel), then stage s of A at a + s * a_stage, of B at
 * b + s * b_stage, its A scales at sa + s * sa_stage, its full / empty
 * mbarriers at full + 8 s / empty + 8 s.
 * Rules the hardware sets (checked on the CPU for every config): 128-byte
 * swizzled TMA destinations and wgmma operands start 1024-byte aligned (the
 * swizzle repeats every 8 rows of 128 bytes; math warpgroup 1 reads A from
 * a + 64 * 128, and at block_m 256 wave w of warpgroup g from
 * a + (2 g + w) * 64 * 128; with a 2-CTA cluster each CTA's half of A lands at
 * a + rank * block_m / 2 * 128), plain TMA destinations 128-byte aligned,
 * mbarriers 8; the swizzled output tile 1024-byte aligned (d = 0).
 */
typedef struct dinf_fp8_smem_layout {
    unsigned d, a, b, sa, full, empty, end;
    unsigned a_stage, b_stage, sa_stage;
} dinf_fp8_smem_layout;

DINF_FP8_HD_CONST dinf_fp8_smem_layout dinf_fp8_smem_carve_d(int block_m, int block_n, int stages,
                                                            unsigned d_bytes) {
    dinf_fp8_smem_layout l = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    l.a_stage = (unsigned)block_m * DINF_FP8_BLOCK_K; /* e4m3 */
    l.b_stage = (unsigned)block_n * DINF_FP8_BLOCK_K; /* e4m3 */
    l.sa_stage = (unsigned)block_m * 4;                /* float32 */
    l.d = 0;
    l.a = (d_bytes + 1023u) / 1024u * 1024u;
    l.b = l.a + (unsigned)stages * l.a_stage;
    l.sa = l.b + (unsigned)stages * l.b_stage;
    l.full = l.sa + (unsigned)stages * l.sa_stage;
    l.empty = l.full + (unsigned)stages * 8;
    l.end = l.empty + (unsigned)stages * 8;
    return l;
}

/* The simple kernel's carve-up (no output tile). */
DINF_FP8_HD_CONST dinf_fp8_smem_layout dinf_fp8_smem_carve(int block_m, int block_n,
                                                          int stages) {
    return dinf_fp8_smem_carve_d(block_m, block_n, stages, 0u);
}

/*
 * The weight-gradient kernel (fp8_gemm_1d1d.cuh) also loads each stage's B
 * scales (block_n float32, one per column) into a fourth ring after the
 * simple kernel's carve-up: slot s at sb + s * sb_stage, sb_stage block_n * 4
 * rounded up to 128 bytes (a TMA destination), sb 128-byte aligned after the
 * mbarriers. Its dynamic shared memory is the simple kernel's plus 128 (the
 * rounding) plus stages * sb_stage.
 */
DINF_FP8_HD_CONST unsigned dinf_fp8_wgrad_sb_stage(int block_n) {
    return ((unsigned)block_n * 4u + 127u) / 128u * 128u;
}
#define DINF_FP8_WGRAD_SMEM_BYTES(block_m, block_n, stages)                                      \
    (DINF_FP8_SMEM_BYTES(block_m, block_n, stages) + 128 +                                       \
     (stages) * (((block_n) * 4 + 127) / 128 * 128))

typedef struct dinf_fp8_wgrad_smem_layout {
    dinf_fp8_smem_layout l; /* A, B, A scales, barriers: the simple kernel's */
    unsigned sb, sb_stage, end;
} dinf_fp8_wgrad_smem_layout;

DINF_FP8_HD_CONST dinf_fp8_wgrad_smem_layout dinf_fp8_wgrad_smem_carve(int block_m, int block_n,
                                                                      int stages) {
    dinf_fp8_wgrad_smem_layout w = {dinf_fp8_smem_carve(block_m, block_n, stages), 0, 0, 0};
    w.sb_stage = dinf_fp8_wgrad_sb_stage(block_n);
    w.sb = (w.l.end + 127u) / 128u * 128u;
    w.end = w.sb + (unsigned)stages * w.sb_stage;
    return w;
}

/* Bytes the four TMA loads of one wgrad stage deliver: the simple kernel's
 * three boxes and the B scales' {block_n} float32. */
DINF_FP8_HD_CONST unsigned dinf_fp8_wgrad_stage_tx_bytes(int block_m, int block_n) {
    return (unsigned)block_m * DINF_FP8_BLOCK_K + (unsigned)block_n * DINF_FP8_BLOCK_K +
           (unsigned)block_m * 4 + (unsigned)block_n * 4;
}

/* Bytes the three TMA loads of one stage deliver (the expect_tx of its full
 * barrier): whole boxes, out-of-bounds parts included (TMA fills them and
 * counts them): A {128, block_m} e4m3, B {128, block_n} e4m3, A scales
 * {block_m} float32. */
DINF_FP8_HD_CONST unsigned dinf_fp8_stage_tx_bytes(int block_m, int block_n) {
    return (unsigned)block_m * DINF_FP8_BLOCK_K + (unsigned)block_n * DINF_FP8_BLOCK_K +
           (unsigned)block_m * 4;
}

/*
 * wgmma shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format")
 * of a K-major operand tile as TMA writes it with the 128-byte swizzle and a
 * 128-byte inner box: rows of 128 bytes, 8-row core-matrix groups 1024 bytes
 * apart. Bits 0-13: start address >> 4; 16-29: leading byte offset >> 4
 * (unused for swizzled K-major layouts: 0); 32-45: stride byte offset >> 4
 * (1024 >> 4); 49-51: base offset (0: the tile starts 1024-byte aligned);
 * 62-63: layout type 1 = 128-byte swizzle. Moving along K inside the 128-byte
 * row (k32 steps of e4m3: 32 bytes) adds to the start address only: the
 * swizzle is a function of the address bits (DeepGEMM advances it the same way).
 */
DINF_FP8_HD_CONST unsigned long long dinf_fp8_wgmma_desc_sw128(unsigned smem_addr) {
    unsigned long long desc = 0;
    desc |= (unsigned long long)((smem_addr & 0x3FFFFu) >> 4); /* 14 bits */
    desc |= (unsigned long long)(1024 >> 4) << 32;
    desc |= 1ull << 62;
    return desc;
}

/*
 * Runtime arguments of one launch, passed by value to the kernel (same
 * layout in C and CUDA: 8-byte fields first, then 4-byte fields).
 */
typedef struct dinf_fp8_gemm_args {
    unsigned long long d;          /* bf16 output [rows][n], row stride ldd elements */
    unsigned long long b_scales;   /* float32 [num_groups][n_scale_blocks][k_blocks] */
    unsigned long long group_info; /* int32: m_indices [m] (contiguous), masked_m [G] (masked), 0 */
    long long ldd;                 /* output row stride, elements */
    int m;              /* normal: m; contiguous: m_sum; masked: m_max (rows per group) */
    int n, k;           /* columns, depth */
    int num_groups;     /* 1 for normal */
    int k_blocks;       /* ceil(k / 128) */
    int n_scale_blocks; /* ceil(n / 128) */
    int m_blocks;       /* normal/contiguous: ceil(m / BLOCK_M); masked: ceil(m_max / BLOCK_M) */
    int n_blocks;       /* ceil(n / BLOCK_N) */
} dinf_fp8_gemm_args;

/* One output tile: rows [m_block * BLOCK_M, +BLOCK_M) of group `group`
 * (within the group for masked; absolute for normal and contiguous),
 * columns [n_block * BLOCK_N, +BLOCK_N), valid rows below row_limit. */
typedef struct dinf_fp8_tile {
    int m_block, n_block;
    int group;     /* the B matrix (and for masked the A/D group) */
    int row_limit; /* rows >= row_limit (within the group for masked) are not stored */
    int phantom;   /* 2-CTA cluster only: the partner of the last N-block of an odd
                    * n_blocks (n_block == n_blocks): run through the pipeline (the
                    * multicast needs both CTAs) on N-block 0's B, never stored */
} dinf_fp8_tile;

/* Raster order inside a rectangle of m_blocks x n_units units: strips of
 * `strip` units (the last one narrower), M-blocks in order inside a strip,
 * units fastest. index < m_blocks * n_units. */
DINF_FP8_HD void dinf_fp8_raster_strip(long long index, int m_blocks, int n_units, int strip,
                                       int *m_block, int *n_unit) {
    const long long full = (long long)m_blocks * strip;
    const long long s = index / full;
    const int n_start = (int)(s * strip);
    const int rest = n_units - n_start;
    const int width = rest < strip ? rest : strip;
    const long long r = index - s * full;
    *m_block = (int)(r / width);
    *n_unit = n_start + (int)(r % width);
}

/* The simple kernel's order: units are N-blocks, strips of
 * DINF_FP8_STRIP_N_BLOCKS. */
DINF_FP8_HD void dinf_fp8_raster(long long index, int m_blocks, int n_blocks, int *m_block,
                                 int *n_block) {
    dinf_fp8_raster_strip(index, m_blocks, n_blocks, DINF_FP8_STRIP_N_BLOCKS, m_block, n_block);
}

/* Valid rows of masked group g: masked_m[g] clamped to [0, m_max] (the
 * device-side contract: an out-of-range count never writes outside the
 * group's m_max rows). */
DINF_FP8_HD int dinf_fp8_masked_rows(const int *masked_m, int g, int m_max) {
    const int v = masked_m[g];
    return v < 0 ? 0 : v > m_max ? m_max : v;
}

/* Tiles a launch may have to visit (an upper bound for masked, where the
 * counts live in device memory). */
DINF_FP8_HD long long dinf_fp8_tile_bound(const dinf_fp8_gemm_args *a, int gemm_type) {
    const long long per_group = (long long)a->m_blocks * a->n_blocks;
    return gemm_type == DINF_FP8_GEMM_MASKED ? per_group * a->num_groups : per_group;
}

/* N-units of a cluster of `cluster` CTAs: the CTAs of a cluster take the
 * `cluster` adjacent N-blocks of one M-block (the A tile they share by
 * multicast), so the schedule walks units of `cluster` N-blocks. */
DINF_FP8_HD int dinf_fp8_n_units(const dinf_fp8_gemm_args *a, int cluster) {
    return (a->n_blocks + cluster - 1) / cluster;
}

/* Units a launch may have to visit (upper bound for masked), per cluster. */
DINF_FP8_HD long long dinf_fp8_unit_bound(const dinf_fp8_gemm_args *a, int gemm_type,
                                          int cluster) {
    const long long per_group = (long long)a->m_blocks * dinf_fp8_n_units(a, cluster);
    return gemm_type == DINF_FP8_GEMM_MASKED ? per_group * a->num_groups : per_group;
}

/*
 * The tile of CTA `rank` (0 .. cluster-1) of a cluster at unit `index` of the
 * launch (0, 1, ... in the order every cluster agrees on): unit (m_block,
 * n_unit) gives CTA rank the N-block n_unit * cluster + rank of that M-block;
 * units run in strips of DINF_FP8_STRIP_N_BLOCKS / cluster units (the same
 * band of B as the simple order). Returns 1 and fills *tile when the unit is
 * to be computed (tile->phantom: the partner of the last N-block of an odd
 * n_blocks, which runs the pipeline but stores nothing), 0 when it is
 * skipped by every CTA of the cluster alike (contiguous: a block whose
 * m_indices entry is outside [0, num_groups), -1 included), -1 past the last
 * unit. Contiguous reads m_indices[m_block * block_m] only (the group must be
 * constant over the block). cluster 1, rank 0: the simple kernel's order.
 */
DINF_FP8_HD int dinf_fp8_unit_at(const dinf_fp8_gemm_args *a, int gemm_type, int block_m,
                                 int cluster, int rank, long long index, dinf_fp8_tile *tile) {
    if (index < 0)
        return -1;
    const int n_units = dinf_fp8_n_units(a, cluster);
    const int strip = DINF_FP8_STRIP_N_BLOCKS / cluster;
    int n_unit = 0;
    tile->phantom = 0;
    if (gemm_type == DINF_FP8_GEMM_MASKED) {
        const int *masked_m = (const int *)a->group_info;
        for (int g = 0; g < a->num_groups; g++) {
            const int rows = dinf_fp8_masked_rows(masked_m, g, a->m);
            const int m_blocks = (rows + block_m - 1) / block_m;
            const long long count = (long long)m_blocks * n_units;
            if (index < count) {
                dinf_fp8_raster_strip(index, m_blocks, n_units, strip, &tile->m_block, &n_unit);
                tile->n_block = n_unit * cluster + rank;
                tile->phantom = tile->n_block >= a->n_blocks;
                tile->group = g;
                tile->row_limit = rows;
                return 1;
            }
            index -= count;
        }
        return -1;
    }
    if (index >= (long long)a->m_blocks * n_units)
        return -1;
    dinf_fp8_raster_strip(index, a->m_blocks, n_units, strip, &tile->m_block, &n_unit);
    tile->n_block = n_unit * cluster + rank;
    tile->phantom = tile->n_block >= a->n_blocks;
    tile->row_limit = a->m;
    tile->group = 0;
    if (gemm_type == DINF_FP8_GEMM_CONTIGUOUS) {
        const int g = ((const int *)a->group_info)[(long long)tile->m_block * block_m];
        if (g < 0 || g >= a->num_groups)
            return 0;
        tile->group = g;
    }
    return 1;
}

/* Tile `index` of the simple kernel (one CTA per unit): dinf_fp8_unit_at
 * with cluster 1. */
DINF_FP8_HD int dinf_fp8_tile_at(const dinf_fp8_gemm_args *a, int gemm_type, int block_m,
                                 long long index, dinf_fp8_tile *tile) {
    return dinf_fp8_unit_at(a, gemm_type, block_m, 1, 0, index, tile);
}

/*
 * Split-K (fast kernel, SPLIT_K 2..4): the SPLIT_K CTAs of a cluster compute
 * the same tile over consecutive runs of its k blocks, rank r taking
 * [*begin, *end): ceil(k_blocks / split) blocks each from rank 0 on, the
 * last ranks fewer or none (an empty run leaves a zero partial). Rank 0 adds
 * the partials of ranks 1, 2, ... in that order to its own (a fixed order:
 * the result is deterministic, not bit-equal to the unsplit sum) and stores.
 */
DINF_FP8_HD void dinf_fp8_split_k_range(int k_blocks, int split, int rank, int *begin, int *end) {
    const int per = (k_blocks + split - 1) / split;
    const int b = rank * per < k_blocks ? rank * per : k_blocks;
    const int e = b + per < k_blocks ? b + per : k_blocks;
    *begin = b;
    *end = e;
}

/* Position of math thread t's i-th accumulator in the partial-tile buffer
 * (float index): i-major, so a warp's 32 lanes write 32 consecutive words. */
DINF_FP8_HD_CONST int dinf_fp8_split_slot(int i, int thread, int math_threads) {
    return i * math_threads + thread;
}

/* Index of b_scales[group][n0 / 128][kb]: the scale of column n0. */
DINF_FP8_HD long long dinf_fp8_b_scale_index(const dinf_fp8_gemm_args *a, int group, int n0,
                                             int kb) {
    return ((long long)group * a->n_scale_blocks + n0 / DINF_FP8_BLOCK_K) * a->k_blocks + kb;
}

/*
 * B scales of a tile whose block_n need not divide 128 (fast kernel): its
 * first `former` columns, [n0, n0 + former), lie in scale block n0 / 128
 * (dinf_fp8_b_scale_index(.., n0, ..)), the rest in the next one, whose
 * first column is dinf_fp8_b_scale_next_col (clamped to the last scale
 * block: columns there are >= n, computed but never stored). The block sizes
 * the fast kernel takes (block_n a multiple of 16, and for block_n > 128 a
 * divisor relation that keeps n0 % 128 <= 256 - block_n) touch at most two
 * scale blocks and give a former that is a multiple of 16 (the CPU tests
 * check both for every N-block), so a wgmma column group of 8 never
 * straddles the boundary.
 */
DINF_FP8_HD_CONST int dinf_fp8_gcd(int a, int b) { return b == 0 ? a : dinf_fp8_gcd(b, a % b); }

/* The block_n values the fast kernel takes: multiples of 16 from 16 to 160
 * whose tiles touch at most two 128-column scale blocks: the largest start
 * offset n0 % 128 is 128 - gcd(block_n, 128), so block_n - gcd <= 128
 * (16 .. 128, 144, 160). */
DINF_FP8_HD_CONST int dinf_fp8_fast_block_n_ok(int block_n) {
    return block_n >= 16 && block_n <= 160 && block_n % 16 == 0 &&
           block_n - dinf_fp8_gcd(block_n, DINF_FP8_BLOCK_K) <= DINF_FP8_BLOCK_K;
}

DINF_FP8_HD int dinf_fp8_b_scale_former(int n0, int block_n) {
    const int left = DINF_FP8_BLOCK_K - n0 % DINF_FP8_BLOCK_K;
    return left < block_n ? left : block_n;
}
DINF_FP8_HD int dinf_fp8_b_scale_next_col(const dinf_fp8_gemm_args *a, int n0) {
    const int next = (n0 / DINF_FP8_BLOCK_K + 1) * DINF_FP8_BLOCK_K;
    const int last = (a->n_scale_blocks - 1) * DINF_FP8_BLOCK_K;
    return next < last ? next : last;
}

/* Output element offset (in elements from d) of row `row` of the tile's
 * group (masked: rows are per group, m_max rows per group) and column col. */
DINF_FP8_HD long long dinf_fp8_d_offset(const dinf_fp8_gemm_args *a, int gemm_type, int group,
                                        int row, int col) {
    const long long global_row =
        gemm_type == DINF_FP8_GEMM_MASKED ? (long long)group * a->m + row : (long long)row;
    return global_row * a->ldd + col;
}

/*
 * The mbarrier pipeline (fp8_gemm.cuh). Both roles count the k blocks they
 * handle, it = 0, 1, ... over the same tile sequence (skipped tiles count
 * nothing on either side), and use stage it % stages. The consumers wait on
 * the stage's full barrier for parity (it / stages) & 1: the completion of
 * its (it / stages)-th fill. The producer waits on the stage's empty barrier
 * for the opposite parity: on the first pass a fresh barrier counts as having
 * completed the phase of parity 1, so it passes at once; on pass p >= 1 it
 * waits for the consumers' (p - 1)-th release of the stage. Unsigned `it`
 * wraps after 2^32 k blocks of one CTA (far beyond any kernel's run time).
 */
typedef struct dinf_fp8_pipe_slot {
    int stage;
    unsigned full_parity;  /* consumers: mbarrier.try_wait.parity on full[stage] */
    unsigned empty_parity; /* producer: mbarrier.try_wait.parity on empty[stage] */
} dinf_fp8_pipe_slot;

DINF_FP8_HD_CONST dinf_fp8_pipe_slot dinf_fp8_pipe_at(unsigned it, unsigned stages) {
    dinf_fp8_pipe_slot p = {0, 0, 0};
    p.stage = (int)(it % stages);
    p.full_parity = (it / stages) & 1u;
    p.empty_parity = p.full_parity ^ 1u;
    return p;
}

/*
 * The fast kernel's output tile in shared memory, as its TMA store reads it
 * (tensor map of D with box {swizzle / 2, block_m, 1} and the swizzle mode
 * CU_TENSOR_MAP_SWIZZLE_<swizzle>B): the block_n columns are cut into
 * block_n * 2 / swizzle chunks of swizzle bytes per row; chunk j holds rows
 * 0 .. block_m - 1 of swizzle bytes each, at j * block_m * swizzle; inside
 * each, the 16-byte unit of byte address x is XORed with bits 7.. of x
 * (128 B: bits 4-6 ^= bits 7-9; 64 B: bits 4-5 ^= 7-8; 32 B: bit 4 ^= bit 7:
 * the TMA swizzle patterns, a function of the shared address, so chunks start
 * 1024-byte aligned). This spreads a warp's bf16x2 stores (8 rows x 4 column
 * pairs) over all 32 banks. swizzle: the widest of 128, 64, 32 bytes that
 * divides a row of the tile (block_n a multiple of 16).
 */
DINF_FP8_HD_CONST int dinf_fp8_d_swizzle_bytes(int block_n) {
    return (block_n * 2) % 128 == 0 ? 128 : (block_n * 2) % 64 == 0 ? 64 : 32;
}
DINF_FP8_HD_CONST unsigned dinf_fp8_d_smem_offset(int row, int col, int block_m, int swizzle) {
    const unsigned byte = (unsigned)col * 2u;
    const unsigned lin = (byte / (unsigned)swizzle) * (unsigned)block_m * (unsigned)swizzle +
                         (unsigned)row * (unsigned)swizzle + byte % (unsigned)swizzle;
    return lin ^ (((lin >> 7) & ((unsigned)swizzle / 16u - 1u)) << 4);
}

/* The same offset for the fragment element pair (row, dinf_fp8_frag_col(i,
 * lane)) split the way the kernel computes it: a per-row part
 * (row * swizzle + 4 * (lane % 4), and the row's XOR pattern
 * ((row * swizzle) >> 7) & (swizzle / 16 - 1)) plus a part fixed by the
 * unrolled i (the chunk i * 16 / swizzle and the 16-byte unit
 * i % (swizzle / 16)). The chunks start at multiples of block_m * swizzle
 * >= 2048 bytes, so they leave the XOR bits alone. */
DINF_FP8_HD_CONST unsigned dinf_fp8_d_smem_row_base(int row, int lane, int swizzle) {
    return (unsigned)row * (unsigned)swizzle + 4u * (unsigned)(lane % 4);
}
DINF_FP8_HD_CONST unsigned dinf_fp8_d_smem_row_xor(int row, int swizzle) {
    return (((unsigned)row * (unsigned)swizzle) >> 7) & ((unsigned)swizzle / 16u - 1u);
}
DINF_FP8_HD_CONST unsigned dinf_fp8_d_smem_frag_offset(unsigned row_base, unsigned row_xor, int i,
                                                       int block_m, int swizzle) {
    const unsigned chunk = (unsigned)i * 16u / (unsigned)swizzle;
    const unsigned unit = (unsigned)i % ((unsigned)swizzle / 16u);
    return chunk * (unsigned)block_m * (unsigned)swizzle + row_base + ((unit ^ row_xor) << 4);
}

/*
 * The wgmma m64nNk32 accumulator fragment (PTX ISA 9.7.15.5, "Matrix D"):
 * thread `lane` of warp `warp` (0..3) of a math warpgroup owning tile rows
 * [64 * math_wg, +64) holds, for column group i (8 columns), accumulators
 * 4i + 2*half + {0, 1} at tile row dinf_fp8_frag_row(math_wg, warp, lane, half)
 * and tile columns dinf_fp8_frag_col(i, lane) + {0, 1}.
 */
DINF_FP8_HD int dinf_fp8_frag_row(int math_wg, int warp, int lane, int half) {
    return math_wg * 64 + warp * 16 + lane / 4 + 8 * half;
}
/* The same with `waves` 64-row waves per math warpgroup (dinf_fp8_waves):
 * warpgroup math_wg owns rows [64 * waves * math_wg, +64 * waves), its wave
 * `wave` the 64 rows from 64 * (waves * math_wg + wave). waves 1:
 * dinf_fp8_frag_row. */
DINF_FP8_HD int dinf_fp8_frag_row_wave(int math_wg, int waves, int wave, int warp, int lane,
                                       int half) {
    return (math_wg * waves + wave) * 64 + warp * 16 + lane / 4 + 8 * half;
}
DINF_FP8_HD int dinf_fp8_frag_col(int i, int lane) { return 8 * i + 2 * (lane % 4); }

#ifdef __cplusplus
static_assert(sizeof(dinf_fp8_gemm_args) == 64, "dinf_fp8_gemm_args: host and device layouts differ");
#else
_Static_assert(sizeof(dinf_fp8_gemm_args) == 64, "dinf_fp8_gemm_args: host and device layouts differ");
#endif

#endif /* DINF_FP8_GEMM_SCHED_CUH */
