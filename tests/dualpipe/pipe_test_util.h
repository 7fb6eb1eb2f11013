/* Helpers of the dualpipe tests: all ranks' streams of a schedule. */
#ifndef PIPE_TEST_UTIL_H
#define PIPE_TEST_UTIL_H

#include <deepinfra.h>

#include <criterion/criterion.h>
#include <stdlib.h>

typedef struct pipe_set {
    int32_t ranks;
    dinf_pipe_op *ops[256];
    int64_t len[256];
} pipe_set;

static inline void pipe_set_make(pipe_set *p, dinf_pipe_kind kind, int R, int N, unsigned flags) {
    p->ranks = R;
    for (int r = 0; r < R; r++) {
        int64_t n;
        cr_assert_eq(dinf_pipe_schedule(kind, R, N, flags, r, NULL, 0, &n), DINF_STATUS_OK,
                     "kind=%d R=%d N=%d: %s", kind, R, N, dinf_last_error());
        p->ops[r] = malloc((size_t)(n + 8) * sizeof(dinf_pipe_op));
        cr_assert_eq(dinf_pipe_schedule(kind, R, N, flags, r, p->ops[r], n, &p->len[r]),
                     DINF_STATUS_OK);
    }
}

static inline void pipe_set_free(pipe_set *p) {
    for (int r = 0; r < p->ranks; r++)
        free(p->ops[r]);
}

#define PIPE_STREAMS(p) ((const dinf_pipe_op *const *)(p)->ops)

#endif
