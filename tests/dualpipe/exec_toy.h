/*
 * Test harness of the pipeline executor: a toy model in double precision, a
 * sequential single-rank reference, an engine that implements every
 * dinf_pipe_callbacks entry for one rank, and an in-process mailbox that
 * carries activations and gradients between ranks running on pthreads.
 *
 * Model: stage s is Linear(h -> 4h, no bias) -> tanh -> Linear(4h -> h, no
 * bias); the loss of a micro-batch is the mean squared error against its
 * labels. The backward splits like the upstream example's deferrable linear:
 * the input part (dz, da, dx) runs at once, the weight part (dW2 += dy^T z,
 * dW1 += da^T x) runs then or in a later weight_grad call.
 *
 * Placement is the one dinf_pipe_task describes (DualPipe: rank r holds
 * stages r and R-1-r, two batches, one entering at each end; DualPipeV: rank
 * r holds stages r and 2R-1-r, one batch; 1F1B/ZB1P: rank r holds stage r).
 */
#ifndef EXEC_TOY_H
#define EXEC_TOY_H

#include <deepinfra/dualpipe.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define EXEC_MAX_RANKS 8
#define EXEC_MAX_POSTS 16

typedef struct exec_config {
    dinf_pipe_kind kind;
    int num_ranks, num_chunks;
    int hidden;               /* h */
    int64_t batch_size;       /* rows of each batch (DualPipe: each end's batch) */
    unsigned seed;            /* weights, inputs and labels */
    int use_forward_backward; /* 1: the engine offers a forward_backward callback */
    double timeout_s;         /* how long a commit waits for a message */
} exec_config;

/* The model, the data, and the sequential reference's results. */
typedef struct exec_problem {
    exec_config cfg;
    int num_stages;  /* R (DualPipe, 1F1B, ZB1P) or 2R (DualPipeV) */
    int num_batches; /* 2 (DualPipe: one per direction) or 1 */
    int mb_per_dir;
    double *w1;        /* [num_stages][4h][h] */
    double *w2;        /* [num_stages][h][4h] */
    double *x;         /* [num_batches][batch_size][h] inputs */
    double *labels;    /* [num_batches][batch_size][h] */
    int64_t *offsets;  /* [mb_per_dir + 1] tensor_split boundaries of each batch */
    double *ref_loss;  /* [num_batches][mb_per_dir] */
    double *ref_gw1;   /* [num_stages][4h][h] summed over every micro-batch of every batch */
    double *ref_gw2;   /* [num_stages][h][4h] */
} exec_problem;

exec_problem *exec_problem_create(const exec_config *cfg);
void exec_problem_destroy(exec_problem *p);

/* One message between ranks, owned by the mailbox until received. */
typedef struct exec_msg {
    struct exec_msg *next;
    int src, dst;
    dinf_pipe_msg kind;
    int dir, mb;
    int64_t rows;
    double data[]; /* [rows][h] */
} exec_msg;

typedef struct exec_world {
    pthread_mutex_t lock;
    pthread_cond_t arrived;
    int num_ranks;
    exec_msg *inbox[EXEC_MAX_RANKS]; /* delivered, not yet received */
    int aborted;                     /* a rank's step failed: stop waiting */
    double timeout_s;
} exec_world;

/* What one rank knows about one micro-batch of one direction. */
typedef struct exec_mb_state {
    int64_t rows;
    double *x, *z, *y;   /* stage input [rows][h], tanh [rows][4h], output [rows][h] */
    double *dy, *da, *dx; /* output-gradient [rows][h], pre-tanh grad [rows][4h], input-gradient */
    int have_x, have_dy, forwarded, backwarded, deferred, weighted;
    int has_loss;
    double loss;
} exec_mb_state;

enum exec_callback {
    EXEC_CB_FORWARD,
    EXEC_CB_BACKWARD,
    EXEC_CB_WEIGHT_GRAD,
    EXEC_CB_FORWARD_BACKWARD,
    EXEC_CB_POST_SEND,
    EXEC_CB_POST_RECV,
    EXEC_CB_COMMIT,
    EXEC_CB_COUNT
};

extern const char *const exec_callback_names[EXEC_CB_COUNT];

typedef struct exec_engine {
    const exec_problem *p;
    exec_world *world;
    int rank;
    int num_slots;
    int stage[2];                 /* stage held in module slot 0 / 1 */
    double *w1[2], *w2[2];        /* this rank's copies of its stages' weights */
    double *gw1[2], *gw2[2];      /* their gradients */
    exec_mb_state *mb[2];         /* [slot = dir][mb_per_dir] */
    exec_msg *pending_sends;      /* posted since the last commit, in order */
    struct {
        dinf_pipe_msg kind;
        int dir, mb, peer;
    } posted_recvs[EXEC_MAX_POSTS];
    int num_posted_recvs;
    int calls[EXEC_CB_COUNT];
    /* failure injection: callback fail_callback fails on its call number fail_at (0-based) */
    int fail_callback; /* -1: none */
    int fail_at;
    dinf_status fail_status;
    int failed;              /* an injected failure happened */
    int calls_after_failure; /* callbacks entered after it */
} exec_engine;

/* A whole pipeline: one engine and one executor per rank. */
typedef struct exec_run {
    exec_problem *p;
    exec_world world;
    exec_engine *engines[EXEC_MAX_RANKS];
    dinf_pipe_executor *executors[EXEC_MAX_RANKS];
    dinf_status status[EXEC_MAX_RANKS];
    char error[EXEC_MAX_RANKS][1024];
} exec_run;

/* The callbacks of an engine (commit etc. included). */
dinf_pipe_callbacks exec_engine_callbacks(exec_engine *e, int with_forward_backward);

/* Engines, executors (created with batch_size = cfg.batch_size); NULL and
 * why filled on failure. */
exec_run *exec_run_create(exec_problem *p, char *why, size_t why_bytes);
/* Zero every gradient and per-micro-batch flag, empty the mailbox. */
void exec_run_reset(exec_run *run);
/* One step on every rank, each on its own thread; returns the number of
 * ranks whose step failed (status[] and error[] say why). */
int exec_run_step(exec_run *run);
/* 0 if the step matched the reference (losses bitwise, gradients within
 * rel_tol of each matrix's largest reference element) and left nothing
 * behind; else -1 with the first difference in why. */
int exec_run_check(const exec_run *run, double rel_tol, char *why, size_t why_bytes);
void exec_run_destroy(exec_run *run);

#endif
