/*
 * Row movement of the GPU EP transports, host-device: writing a local row as
 * a wire row, storing a wire row at its receive location (all-to-all, with
 * the grouped / strided fields of the low-latency scales), and the ordered
 * float32 reduction of a combine. The CUDA kernels (kernels/ep/ep_kernels.cu)
 * call these with lane = lane index, lanes = 32 (a warp per row); the CPU
 * tests (tests/ep_gpu/test_ep_emulated.c) call the same functions with
 * lane = 0, lanes = 1 inside an emulation of the peer-store and NCCL
 * transports, and compare the protocol's results with the threads oracle.
 * Every lane handles its own bytes / elements, so the result does not depend
 * on the lane count. Not installed.
 */
#ifndef DINF_EP_ROWS_HD_H
#define DINF_EP_ROWS_HD_H

#include "ep_cuda.h"
#include "ep_hd.h"
#include "ep_peer_hd.h"

/* 16 bytes moved as one unit (a 128-bit load/store on the device). */
typedef struct __attribute__((aligned(16))) dinf__ep_v16 {
    uint64_t lo, hi;
} dinf__ep_v16;

/* bytes bytes from src to dst, lane of lanes, with the widest unit both
 * addresses and the size allow. Rows are < 2^31 bytes. */
DINF_HD void dinf__ep_copy(char *dst, const char *src, int64_t bytes, int32_t lane,
                           int32_t lanes) {
    const int32_t unit = dinf__ep_copy_unit((uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src,
                                            bytes);
    const int32_t n = (int32_t)(bytes / unit);
    if (unit == 16) {
        for (int32_t i = lane; i < n; i += lanes)
            ((dinf__ep_v16 *)dst)[i] = ((const dinf__ep_v16 *)src)[i];
    } else if (unit == 8) {
        for (int32_t i = lane; i < n; i += lanes)
            ((uint64_t *)dst)[i] = ((const uint64_t *)src)[i];
    } else if (unit == 4) {
        for (int32_t i = lane; i < n; i += lanes)
            ((uint32_t *)dst)[i] = ((const uint32_t *)src)[i];
    } else if (unit == 2) {
        for (int32_t i = lane; i < n; i += lanes)
            ((uint16_t *)dst)[i] = ((const uint16_t *)src)[i];
    } else {
        for (int32_t i = lane; i < n; i += lanes)
            dst[i] = src[i];
    }
}

/* One element of a strided receive field (1, 2, 4 or 8 bytes; the wire
 * descriptors accept no other size for strided fields). */
DINF_HD void dinf__ep_copy_elem(char *dst, const char *src, int32_t elem_bytes) {
    if (elem_bytes == 8)
        *(uint64_t *)dst = *(const uint64_t *)src;
    else if (elem_bytes == 4)
        *(uint32_t *)dst = *(const uint32_t *)src;
    else if (elem_bytes == 2)
        *(uint16_t *)dst = *(const uint16_t *)src;
    else
        *dst = *src;
}

/* Local row `row` of the step's send fields, as a wire row at wire; lane 0
 * writes the trailer (the row index). */
DINF_HD void dinf__ep_put_wire_row(const dinf__ep_step *s, int64_t row, char *wire, int32_t lane,
                                   int32_t lanes) {
    for (int32_t i = 0; i < s->num_fields; i++) {
        const dinf__ep_wire_field *f = &s->f[i];
        dinf__ep_copy(wire + f->offset, f->send + row * f->send_stride, f->bytes, lane, lanes);
    }
    if (lane == 0)
        *(int32_t *)(wire + dinf__ep_wire_trailer(s->row_bytes)) = (int32_t)row;
}

/* The wire row at wire, stored at local receive row q of every field (and
 * its source row into recv_src_row[q] when wanted). */
DINF_HD void dinf__ep_get_wire_row(const dinf__ep_step *s, const char *wire, int64_t q,
                                   int32_t lane, int32_t lanes) {
    for (int32_t i = 0; i < s->num_fields; i++) {
        const dinf__ep_wire_field *f = &s->f[i];
        int64_t g, r;
        dinf__ep_recv_split(q, f->recv_rows_per_group, &g, &r);
        char *dst = f->recv + g * f->recv_group_stride + r * f->recv_stride;
        const char *src = wire + f->offset;
        if (f->recv_elem_stride == f->elem_bytes) {
            dinf__ep_copy(dst, src, (int64_t)f->elems * f->elem_bytes, lane, lanes);
        } else {
            for (int32_t e = lane; e < f->elems; e += lanes)
                dinf__ep_copy_elem(dst + (int64_t)e * f->recv_elem_stride,
                                   src + (int64_t)e * f->elem_bytes, f->elem_bytes);
        }
    }
    if (s->recv_src_row && lane == 0)
        s->recv_src_row[q] = *(const int32_t *)(wire + dinf__ep_wire_trailer(s->row_bytes));
}

DINF_HD float dinf__ep_load_elem(const void *row, int32_t elem, int64_t i) {
    return elem == DINF__EP_ELEM_BF16 ? dinf__f32_from_bf16(((const uint16_t *)row)[i])
                                      : ((const float *)row)[i];
}

/*
 * Output row t of a reducing step: for each field and element (lane of
 * lanes), acc = float(bias0) + float(bias1) (a missing bias reads as +0:
 * upstream's order, as the threads transport); for each term j in order:
 * acc = acc + w * value (one float32 multiply, one add: dinf__ep_acc_bf16 for
 * bfloat16 values); one rounding at the store. The term (src, pos) is read at
 * stage + dinf__ep_stage_row(slot_bytes, recv_offsets, src, pos, row_bytes).
 * Returns 1 when a term names a row outside its source's segment (that term
 * is skipped), else 0.
 */
/* bf16 element i (0..7) of 16 loaded bytes. */
DINF_HD float dinf__ep_v16_bf16(dinf__ep_v16 v, int i) {
    const uint64_t w = i < 4 ? v.lo : v.hi;
    return dinf__f32_from_bf16((uint16_t)(w >> (16 * (i % 4))));
}

/* 1 when p is 16-byte aligned. */
DINF_HD int dinf__ep_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/*
 * The bfloat16 -> bfloat16 field of a reducing step, 8 elements (16 bytes)
 * per load: the same float32 operations per element, in the same order, as
 * the scalar path of dinf__ep_reduce_row (so the bits do not depend on the
 * path). Needs elems % 8 == 0 and 16-byte aligned rows (the caller checks).
 */
DINF_HD int dinf__ep_reduce_bf16x8(const dinf__ep_step *s, int32_t fi, int64_t t,
                                   const char *stage, int64_t slot_bytes, int32_t lane,
                                   int32_t lanes) {
    int bad = 0;
    const int64_t *terms = s->terms + t * s->num_terms;
    const int weighted = s->apply_weights[fi] && s->weights;
    const int64_t offset = s->f[fi].offset, stride = s->out_stride[fi];
    dinf__ep_v16 *out = (dinf__ep_v16 *)((char *)s->out[fi] + t * stride);
    const dinf__ep_v16 *b0 = s->bias0[fi] ? (const dinf__ep_v16 *)((const char *)s->bias0[fi] + t * stride) : 0;
    const dinf__ep_v16 *b1 = s->bias1[fi] ? (const dinf__ep_v16 *)((const char *)s->bias1[fi] + t * stride) : 0;
    for (int32_t c = lane; c < s->red_elems[fi] / 8; c += lanes) {
        /* upstream's order: acc starts at float(bias0) + float(bias1) (+0 when
         * missing), then the terms in order */
        float acc[8];
        {
            const dinf__ep_v16 zero = {0, 0};
            const dinf__ep_v16 v0 = b0 ? b0[c] : zero, v1 = b1 ? b1[c] : zero;
#if defined(__CUDACC__)
#pragma unroll
#endif
            for (int i = 0; i < 8; i++)
                acc[i] = (b0 ? dinf__ep_v16_bf16(v0, i) : 0.0f) +
                         (b1 ? dinf__ep_v16_bf16(v1, i) : 0.0f);
        }
        for (int32_t j = 0; j < s->num_terms; j++) {
            const int64_t term = terms[j];
            if (term == -1)
                continue;
            const int32_t src = dinf__ep_unpack_hi(term);
            const int64_t pos = (int64_t)(uint32_t)dinf__ep_unpack_lo(term);
            if (src < 0 || src >= s->num_ranks ||
                pos >= s->recv_offsets[src + 1] - s->recv_offsets[src]) {
                bad = 1;
                continue;
            }
            const dinf__ep_v16 v =
                ((const dinf__ep_v16 *)(stage +
                                        dinf__ep_stage_row(slot_bytes, s->recv_offsets, src, pos,
                                                           s->row_bytes) +
                                        offset))[c];
            const float w = weighted ? s->weights[t * s->num_terms + j] : 1.0f;
#if defined(__CUDACC__)
#pragma unroll
#endif
            for (int i = 0; i < 8; i++)
                acc[i] = acc[i] + w * dinf__ep_v16_bf16(v, i);
        }
        dinf__ep_v16 r = {0, 0};
#if defined(__CUDACC__)
#pragma unroll
#endif
        for (int i = 0; i < 8; i++) {
            const uint64_t h = dinf__bf16_from_f32(acc[i]);
            if (i < 4)
                r.lo |= h << (16 * i);
            else
                r.hi |= h << (16 * (i - 4));
        }
        out[c] = r;
    }
    return bad;
}

DINF_HD int dinf__ep_reduce_row(const dinf__ep_step *s, int64_t t, const char *stage,
                                int64_t slot_bytes, int32_t lane, int32_t lanes) {
    int bad = 0;
    const int64_t *terms = s->terms + t * s->num_terms;
    for (int32_t fi = 0; fi < s->num_fields; fi++) {
        if (s->in_elem[fi] == DINF__EP_ELEM_BF16 && s->out_elem[fi] == DINF__EP_ELEM_BF16 &&
            s->red_elems[fi] % 8 == 0 && s->row_bytes % 16 == 0 && s->out_stride[fi] % 16 == 0 &&
            dinf__ep_aligned16(stage) && dinf__ep_aligned16(s->out[fi]) &&
            (!s->bias0[fi] || dinf__ep_aligned16(s->bias0[fi])) &&
            (!s->bias1[fi] || dinf__ep_aligned16(s->bias1[fi]))) {
            bad |= dinf__ep_reduce_bf16x8(s, fi, t, stage, slot_bytes, lane, lanes);
            continue;
        }
        const int64_t offset = s->f[fi].offset;
        const int32_t in_elem = s->in_elem[fi], out_elem = s->out_elem[fi];
        const int weighted = s->apply_weights[fi] && s->weights;
        char *out = (char *)s->out[fi] + t * s->out_stride[fi];
        for (int32_t e = lane; e < s->red_elems[fi]; e += lanes) {
            /* upstream's order: float(bias0) + float(bias1) (+0 when missing) first */
            float acc = (s->bias0[fi] ? dinf__ep_load_elem((const char *)s->bias0[fi] +
                                                                t * s->out_stride[fi],
                                                            out_elem, e)
                                      : 0.0f) +
                        (s->bias1[fi] ? dinf__ep_load_elem((const char *)s->bias1[fi] +
                                                                t * s->out_stride[fi],
                                                            out_elem, e)
                                      : 0.0f);
            for (int32_t j = 0; j < s->num_terms; j++) {
                const int64_t term = terms[j];
                if (term == -1)
                    continue;
                const int32_t src = dinf__ep_unpack_hi(term);
                const int64_t pos = (int64_t)(uint32_t)dinf__ep_unpack_lo(term);
                if (src < 0 || src >= s->num_ranks ||
                    pos >= s->recv_offsets[src + 1] - s->recv_offsets[src]) {
                    bad = 1;
                    continue;
                }
                const char *value = stage +
                                    dinf__ep_stage_row(slot_bytes, s->recv_offsets, src, pos,
                                                       s->row_bytes) +
                                    offset;
                const float w = weighted ? s->weights[t * s->num_terms + j] : 1.0f;
                if (in_elem == DINF__EP_ELEM_BF16)
                    acc = dinf__ep_acc_bf16(acc, ((const uint16_t *)value)[e], w);
                else
                    acc = acc + w * ((const float *)value)[e];
            }
            if (out_elem == DINF__EP_ELEM_BF16)
                ((uint16_t *)out)[e] = dinf__bf16_from_f32(acc);
            else
                ((float *)out)[e] = acc;
        }
    }
    return bad;
}

#endif /* DINF_EP_ROWS_HD_H */
