/*
 * Wire-row descriptors of the GPU EP transports (lib/ep/ep_cuda.h): how an
 * all-to-all or reducing step of the protocol becomes the dinf__ep_step the
 * kernels read. Plain host code, built in every configuration so that the
 * CPU tests check it.
 */
#include "ep_cuda.h"

#include <string.h>

static dinf_status too_large(const char *func, const char *what) {
    return dinf__fail(DINF_STATUS_INTERNAL, func,
                      "the %s of this EP step does not fit a wire row (2^31 - 1 bytes)", what);
}

dinf_status dinf__ep_step_from_a2a(const char *func, const dinf__ep_a2a *a2a, dinf__ep_step *s) {
    memset(s, 0, sizeof *s);
    if (a2a->num_fields < 0 || a2a->num_fields > DINF__EP_MAX_FIELDS)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "an EP step has %d fields (at most %d)",
                          (int)a2a->num_fields, DINF__EP_MAX_FIELDS);
    int64_t bytes[DINF__EP_MAX_FIELDS], offsets[DINF__EP_MAX_FIELDS];
    for (int32_t i = 0; i < a2a->num_fields; i++) {
        const dinf__ep_field *f = &a2a->fields[i];
        if (f->elem_bytes < 1 || f->elems < 0 || (int64_t)f->elem_bytes * f->elems > INT32_MAX)
            return too_large(func, "fields");
        const int strided = f->recv_elem_stride != f->elem_bytes;
        if (strided && f->elem_bytes != 1 && f->elem_bytes != 2 && f->elem_bytes != 4 &&
            f->elem_bytes != 8)
            return dinf__fail(DINF_STATUS_INTERNAL, func,
                              "field %d: a strided receive field of %d-byte elements (1, 2, 4 "
                              "or 8 are supported)",
                              (int)i, (int)f->elem_bytes);
        bytes[i] = (int64_t)f->elem_bytes * f->elems;
    }
    const int64_t row = dinf__ep_wire_layout(bytes, a2a->num_fields, offsets);
    if (row < 0)
        return too_large(func, "fields");
    s->kind = DINF__EP_STEP_A2A;
    s->num_fields = a2a->num_fields;
    s->row_bytes = row;
    for (int32_t i = 0; i < a2a->num_fields; i++) {
        const dinf__ep_field *f = &a2a->fields[i];
        dinf__ep_wire_field *w = &s->f[i];
        w->send = (const char *)f->send;
        w->send_stride = f->send_stride;
        w->bytes = bytes[i];
        w->offset = offsets[i];
        w->recv = (char *)f->recv;
        w->recv_stride = f->recv_stride;
        w->recv_elem_stride = f->recv_elem_stride;
        w->recv_rows_per_group = f->recv_rows_per_group;
        w->recv_group_stride = f->recv_group_stride;
        w->elem_bytes = f->elem_bytes;
        w->elems = f->elems;
    }
    s->send_rows = a2a->send_rows;
    s->recv_rows = a2a->recv_rows;
    s->recv_src_row = a2a->recv_src_row;
    return DINF_STATUS_OK;
}

dinf_status dinf__ep_step_from_reduce(const char *func, const dinf__ep_reduce *red,
                                      dinf__ep_step *s) {
    memset(s, 0, sizeof *s);
    if (red->num_fields < 0 || red->num_fields > 2)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "a reducing EP step has %d fields (at most 2)",
                          (int)red->num_fields);
    if (red->num_terms < 0 || red->num_out_rows < 0)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "a reducing EP step has %d terms, %lld rows",
                          (int)red->num_terms, (long long)red->num_out_rows);
    int64_t bytes[2], offsets[2];
    for (int32_t i = 0; i < red->num_fields; i++) {
        const dinf__ep_reduce_field *f = &red->fields[i];
        if ((f->in_elem != DINF__EP_ELEM_BF16 && f->in_elem != DINF__EP_ELEM_F32) ||
            (f->out_elem != DINF__EP_ELEM_BF16 && f->out_elem != DINF__EP_ELEM_F32))
            return dinf__fail(DINF_STATUS_INTERNAL, func, "reduce field %d: unknown element type",
                              (int)i);
        const int64_t size = f->in_elem == DINF__EP_ELEM_BF16 ? 2 : 4;
        if (f->elems < 0 || size * f->elems > INT32_MAX)
            return too_large(func, "reduce fields");
        bytes[i] = size * f->elems;
    }
    const int64_t row = dinf__ep_wire_layout(bytes, red->num_fields, offsets);
    if (row < 0)
        return too_large(func, "reduce fields");
    s->kind = DINF__EP_STEP_REDUCE;
    s->num_fields = red->num_fields;
    s->row_bytes = row;
    for (int32_t i = 0; i < red->num_fields; i++) {
        const dinf__ep_reduce_field *f = &red->fields[i];
        dinf__ep_wire_field *w = &s->f[i];
        w->send = (const char *)f->in;
        w->send_stride = f->in_stride;
        w->bytes = bytes[i];
        w->offset = offsets[i];
        s->in_elem[i] = f->in_elem;
        s->out_elem[i] = f->out_elem;
        s->red_elems[i] = f->elems;
        s->apply_weights[i] = f->apply_weights;
        s->out[i] = f->out;
        s->out_stride[i] = f->out_stride;
        s->bias0[i] = f->bias0;
        s->bias1[i] = f->bias1;
    }
    s->send_rows = red->send_rows;
    s->num_out_rows = red->num_out_rows;
    s->num_terms = red->num_terms;
    s->terms = red->terms;
    s->weights = red->weights;
    return DINF_STATUS_OK;
}
