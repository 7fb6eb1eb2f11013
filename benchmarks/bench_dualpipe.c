/*
 * DualPipe scheduling at PP = 64 ranks, 256 micro-batches: generating every
 * rank's stream, simulating it, and validating it with communication (the
 * matching and deadlock model). No peer exists in C; upstream builds the
 * same order by running its Python step() on GPUs.
 */
#include "bench.h"

#include <deepinfra.h>

#include <stdio.h>
#include <stdlib.h>

enum { RANKS = 64, CHUNKS = 256 };

typedef struct pipe_case {
    dinf_pipe_kind kind;
    int task; /* 0: schedule + simulate, 1: validate with communication */
    dinf_pipe_op *ops[RANKS];
    int64_t len[RANKS], cap[RANKS];
    double busy[RANKS], bubble[RANKS];
    int32_t peak[RANKS];
    char label[96];
} pipe_case;

static double run_pipe(void *arg) {
    pipe_case *c = arg;
    unsigned flags = c->task == 1 ? DINF_PIPE_WITH_COMM : 0;
    for (int r = 0; r < RANKS; r++)
        if (dinf_pipe_schedule(c->kind, RANKS, CHUNKS, flags, r, c->ops[r], c->cap[r],
                               &c->len[r]) != DINF_STATUS_OK)
            goto fail;
    if (c->task == 0) {
        dinf_pipe_costs costs = {1, 2, 1, 3, 0};
        dinf_pipe_sim_result res = {0};
        res.busy = c->busy;
        res.bubble = c->bubble;
        res.peak_activations = c->peak;
        if (dinf_pipe_simulate(c->kind, RANKS, CHUNKS, (const dinf_pipe_op *const *)c->ops, c->len,
                               &costs, &res, NULL, 0, NULL) != DINF_STATUS_OK)
            goto fail;
        bench_set_counter("max_bubble", res.max_bubble);
    } else {
        int32_t valid;
        if (dinf_pipe_validate(c->kind, RANKS, CHUNKS, (const dinf_pipe_op *const *)c->ops, c->len,
                               NULL, &valid) != DINF_STATUS_OK)
            goto fail;
        if (!valid) {
            bench_set_error("schedule reported invalid");
            return -1;
        }
    }
    return 0;
fail:
    bench_set_error(dinf_last_error());
    return -1;
}

static void add(const char *name, dinf_pipe_kind kind, int task) {
    pipe_case *c = calloc(1, sizeof *c);
    c->kind = kind;
    c->task = task;
    int64_t total = 0;
    unsigned flags = task == 1 ? DINF_PIPE_WITH_COMM : 0;
    for (int r = 0; r < RANKS; r++) {
        dinf_pipe_schedule(kind, RANKS, CHUNKS, flags, r, NULL, 0, &c->cap[r]);
        c->ops[r] = malloc((size_t)c->cap[r] * sizeof(dinf_pipe_op));
        total += c->cap[r];
    }
    snprintf(c->label, sizeof c->label, "%lld ops%s", (long long)total,
             task == 1 ? " with communication" : " (compute)");
    bench_spec spec = {.name = name, .run = run_pipe, .arg = c, .items = (double)total,
                       .items_name = "ops/s", .label = c->label, .unit = "ms"};
    bench_register(&spec);
}

void bench_register_dualpipe(void) {
    add("dualpipe/schedule+simulate/dualpipe/PP64_N256", DINF_PIPE_DUALPIPE, 0);
    add("dualpipe/schedule+simulate/dualpipev/P64_N256", DINF_PIPE_DUALPIPEV, 0);
    add("dualpipe/schedule+simulate/1f1b/PP64_N256", DINF_PIPE_1F1B, 0);
    add("dualpipe/schedule+simulate/zb1p/PP64_N256", DINF_PIPE_ZB1P, 0);
    add("dualpipe/schedule+validate_comm/dualpipe/PP64_N256", DINF_PIPE_DUALPIPE, 1);
    add("dualpipe/schedule+validate_comm/dualpipev/P64_N256", DINF_PIPE_DUALPIPEV, 1);
}
