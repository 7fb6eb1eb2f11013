/*
 * FP8 quantization on the CPU (dinf_fp8_quantize, DeepGEMM's
 * per_token_cast_to_fp8 / per_block_cast_to_fp8 math): an activation tile of
 * a DeepSeek-V3 prefill step (4096 tokens x 7168, 1x128 blocks) from float32
 * and from bfloat16, and a weight (7168 x 2048, 128x128 blocks). Bytes are
 * those read and written once (x, the codes, the scales). The floor row is a
 * memcpy that reads and writes as many bytes in total, on one thread (the
 * quantizer runs on every core: dinf_exec NULL). Outputs are allocated once, outside the loop.
 */
#include "bench.h"

#include <deepinfra.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct quant_case {
    int64_t m, k;
    int32_t block_rows;
    dinf_dtype dtype;
    void *x;
    uint8_t *q;
    float *scales;
    char *copy_src, *copy_dst;
    size_t copy_bytes;
} quant_case;

static double run_quantize(void *arg) {
    quant_case *c = arg;
    if (dinf_fp8_quantize(c->x, c->dtype, c->m, c->k, c->k, c->block_rows, c->q, c->k, c->scales,
                          NULL) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    return 0;
}

static double run_copy(void *arg) {
    quant_case *c = arg;
    memcpy(c->copy_dst, c->copy_src, c->copy_bytes);
    return 0;
}

static void add_case(const char *name, int64_t m, int64_t k, int32_t block_rows, dinf_dtype dtype,
                     int floor) {
    if (!bench_selected(name))
        return;
    const size_t elem = dtype == DINF_DTYPE_FLOAT32 ? 4 : 2;
    const int64_t scales = (m + block_rows - 1) / block_rows * ((k + 127) / 128);
    const size_t bytes = (size_t)(m * k) * (elem + 1) + (size_t)scales * 4;
    if (floor) {
        quant_case *c = calloc(1, sizeof *c); /* lives until exit: the shim keeps the pointer */
        if (c) {
            c->copy_bytes = bytes / 2; /* read + written: the quantizer's traffic */
            c->copy_src = malloc(c->copy_bytes);
            c->copy_dst = malloc(c->copy_bytes);
        }
        if (!c || !c->copy_src || !c->copy_dst) {
            fprintf(stderr, "%s: out of memory\n", name);
            if (c)
                free(c->copy_src), free(c->copy_dst), free(c);
            return;
        }
        memset(c->copy_src, 1, c->copy_bytes);
        memset(c->copy_dst, 2, c->copy_bytes);
        bench_spec spec = {.name = name, .run = run_copy, .arg = c, .bytes = (double)bytes,
                           .unit = "ms",
                           .label = "floor: memcpy moving as many bytes (half read, half "
                                    "written), one thread"};
        bench_register(&spec);
        return;
    }
    quant_case *c = calloc(1, sizeof *c); /* lives until exit: the shim keeps the pointer */
    if (!c) {
        fprintf(stderr, "%s: out of memory\n", name);
        return;
    }
    c->m = m, c->k = k, c->block_rows = block_rows, c->dtype = dtype;
    c->x = malloc((size_t)(m * k) * elem);
    c->q = malloc((size_t)(m * k));
    c->scales = malloc((size_t)scales * 4);
    if (!c->x || !c->q || !c->scales) {
        fprintf(stderr, "%s: out of memory\n", name);
        free(c->x), free(c->q), free(c->scales), free(c);
        return;
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < m * k; i++) { /* random values over several binades */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const float v = ((float)(s >> 40) / (float)(1u << 24) - 0.5f) * (float)(1 + (s >> 61));
        if (elem == 4) {
            ((float *)c->x)[i] = v;
        } else {
            uint32_t u;
            memcpy(&u, &v, 4);
            ((uint16_t *)c->x)[i] = (uint16_t)(u >> 16);
        }
    }
    bench_spec spec = {.name = name, .run = run_quantize, .arg = c, .bytes = (double)bytes,
                       .unit = "ms",
                       .label = block_rows == 1 ? "1x128 blocks (per_token_cast_to_fp8)"
                                                : "128x128 blocks (per_block_cast_to_fp8)"};
    bench_register(&spec);
}

void bench_register_fp8(void) {
    add_case("core/fp8_quantize/per_token/f32/4096x7168", 4096, 7168, 1, DINF_DTYPE_FLOAT32, 0);
    add_case("core/fp8_quantize/per_token/bf16/4096x7168", 4096, 7168, 1, DINF_DTYPE_BFLOAT16, 0);
    add_case("core/fp8_quantize/per_block/bf16/7168x2048", 7168, 2048, 128, DINF_DTYPE_BFLOAT16, 0);
    add_case("core/fp8_quantize/floor/memcpy_f32_4096x7168", 4096, 7168, 1, DINF_DTYPE_FLOAT32, 1);
}
