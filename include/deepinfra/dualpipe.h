/*
 * libdeepinfra dualpipe: pipeline-parallel schedules (DualPipe, DualPipeV,
 * 1F1B, ZB1P), their validator and cost simulator, timeline pictures, and an
 * executor that drives an engine's own compute and communication.
 *
 * Typical use:
 *
 *     // 1. the order of operations of each rank
 *     int64_t n;
 *     dinf_pipe_schedule(DINF_PIPE_DUALPIPEV, ranks, chunks, DINF_PIPE_WITH_COMM, rank,
 *                        NULL, 0, &n);                  // size query
 *     dinf_pipe_op *ops = malloc(n * sizeof *ops);
 *     dinf_pipe_schedule(DINF_PIPE_DUALPIPEV, ranks, chunks, DINF_PIPE_WITH_COMM, rank,
 *                        ops, n, &n);
 *     // 2. proof that it is safe: dinf_pipe_validate(...)
 *     // 3. what it costs: dinf_pipe_simulate(...) -> bubble, makespan, peak activations
 *     // 4. run it: dinf_pipe_executor_create(...) + dinf_pipe_executor_step(...) per rank
 *
 * Terms. A pipeline of `num_ranks` ranks runs `num_chunks` micro-batches per
 * step. Every compute op names a direction `dir` and a micro-batch `mb`:
 *   DualPipe   dir 0 flows rank 0 -> R-1 (stage r on rank r), dir 1 flows
 *              R-1 -> 0 (stage R-1-r on rank r); each direction carries
 *              num_chunks/2 micro-batches (mb = 0 .. num_chunks/2 - 1).
 *   DualPipeV  dir 0 (phase 0) flows rank 0 -> R-1 through stages 0..R-1,
 *              dir 1 (phase 1) flows R-1 -> 0 through stages R..2R-1; the
 *              last rank hands phase 0's output to phase 1 locally. One
 *              stream of num_chunks micro-batches (mb = 0 .. num_chunks-1).
 *   1F1B, ZB1P dir 0 only, rank r holds stage r; num_chunks micro-batches.
 *
 * Text notation (dinf_pipe_op_format / dinf_pipe_op_parse), as the upstream
 * reference writes it:
 *   F0.3 forward dir 0 mb 3 | B1.2 full backward | I0.2 backward for inputs,
 *   weight gradient deferred | W the oldest deferred weight gradients |
 *   F0.7&B1.3 overlapped forward and backward (also accepted: [F0.7&B1.3]) |
 *   Sf0.0@1 / Sb0.0@1 post the send of activation / input-gradient of dir 0
 *   mb 0 to rank 1 | Rf1.2@0 / Rb1.2@0 post the matching receive | "|" commit:
 *   launch the posted batch and wait for it.
 *
 * All functions here are CPU code, thread-safe (no shared state) and
 * deterministic, except the executor, whose step runs the engine's callbacks.
 */
#ifndef DEEPINFRA_DUALPIPE_H
#define DEEPINFRA_DUALPIPE_H

#include "deepinfra/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Schedule families. Values are part of the ABI. */
typedef enum dinf_pipe_kind {
    DINF_PIPE_DUALPIPE = 0,  /* num_ranks even, num_chunks even and >= 2 * num_ranks */
    DINF_PIPE_DUALPIPEV = 1, /* num_ranks >= 1, num_chunks >= 2 * num_ranks */
    DINF_PIPE_1F1B = 2,      /* num_ranks >= 1, num_chunks >= 1 */
    DINF_PIPE_ZB1P = 3,      /* zero-bubble ZB-H1: num_ranks >= 1, num_chunks >= num_ranks */
} dinf_pipe_kind;

#define DINF_PIPE_KIND_COUNT 4

/* Op types. Values are part of the ABI. */
typedef enum dinf_pipe_op_type {
    DINF_PIPE_OP_F = 0,         /* forward (dir, mb) */
    DINF_PIPE_OP_B = 1,         /* full backward (dir, mb) */
    DINF_PIPE_OP_I = 2,         /* backward for inputs of (dir, mb); weight gradient deferred */
    DINF_PIPE_OP_W = 3,         /* weight gradients of the oldest deferred backward */
    DINF_PIPE_OP_FB = 4,        /* forward (dir, mb) overlapped with backward (dir2, mb2) */
    DINF_PIPE_OP_SEND_ACT = 5,  /* post send of activation (dir, mb) to peer */
    DINF_PIPE_OP_RECV_ACT = 6,  /* post receive of activation (dir, mb) from peer */
    DINF_PIPE_OP_SEND_GRAD = 7, /* post send of input-gradient (dir, mb) to peer */
    DINF_PIPE_OP_RECV_GRAD = 8, /* post receive of output-gradient (dir, mb) from peer */
    DINF_PIPE_OP_COMMIT = 9,    /* launch the posted sends/receives as one batch and wait */
} dinf_pipe_op_type;

/* One op of a rank's stream. Unused fields are -1. */
typedef struct dinf_pipe_op {
    int32_t type; /* dinf_pipe_op_type */
    int32_t dir;  /* F, B, I, send, recv: direction; FB: the forward's direction */
    int32_t mb;   /* F, B, I, send, recv: micro-batch; FB: the forward's micro-batch */
    int32_t dir2; /* FB: the backward's direction */
    int32_t mb2;  /* FB: the backward's micro-batch */
    int32_t peer; /* send, recv: the other rank */
} dinf_pipe_op;

/* Flags of dinf_pipe_schedule. */
#define DINF_PIPE_WITH_COMM 1u /* include send/recv posts and commits (else compute ops only) */

/*
 * dinf_pipe_schedule - the op stream of one rank.
 *
 * DualPipe and DualPipeV streams equal the upstream scheduler's
 * (deepseek-ai/DualPipe 3da1bbe) op for op, communication included. 1F1B is
 * the classic one-forward-one-backward schedule; ZB1P is the zero-bubble
 * ZB-H1 schedule (backward split into I and W, W deferred into the bubbles).
 *
 * Arguments:
 *   kind        [IN]  dinf_pipe_kind
 *   num_ranks   [IN]  pipeline ranks (see dinf_pipe_kind for the rules)
 *   num_chunks  [IN]  micro-batches per step (see dinf_pipe_kind)
 *   flags       [IN]  0 or DINF_PIPE_WITH_COMM
 *   rank        [IN]  0 <= rank < num_ranks
 *   ops         [OUT] caller-owned array of capacity ops, or NULL to ask for
 *                     the count only
 *   capacity    [IN]  entries available in ops
 *   num_ops     [OUT] the stream's length (set even when capacity is too
 *                     small); not NULL
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (bad kind, sizes,
 * rank, flags, NULL num_ops, or capacity < length with ops != NULL).
 */
DINF_API dinf_status dinf_pipe_schedule(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        uint32_t flags, int32_t rank, dinf_pipe_op *ops,
                                        int64_t capacity, int64_t *num_ops);

/*
 * dinf_pipe_op_format - write op in the text notation ("F0.3", "Sf0.0@1",
 * "|", ...) into buf (NUL-terminated, at most bytes bytes; 64 always fit).
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (NULL pointers, a
 * malformed op, buffer too small).
 */
DINF_API dinf_status dinf_pipe_op_format(const dinf_pipe_op *op, char *buf, size_t bytes);

/*
 * dinf_pipe_op_parse - parse one op of the text notation (the whole string,
 * no surrounding spaces; FB may be bracketed "[F0.3&B1.1]"). Numbers are
 * decimal, 0 .. 2^30. Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT
 * naming the first character that does not fit.
 */
DINF_API dinf_status dinf_pipe_op_parse(const char *text, dinf_pipe_op *op);

/*
 * dinf_pipe_stream_parse - parse a whitespace-separated line of ops into ops
 * (capacity entries; NULL to count). num_ops [OUT] the number of ops (also
 * when capacity is too small, as dinf_pipe_schedule does).
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT naming the token (or
 * the capacity); ops before the failure may have been written.
 */
DINF_API dinf_status dinf_pipe_stream_parse(const char *text, dinf_pipe_op *ops, int64_t capacity,
                                            int64_t *num_ops);

/* ------------------------------------------------------------------------ */
/* Validation                                                                */
/* ------------------------------------------------------------------------ */

/* The first rule a stream set breaks (dinf_pipe_validate). */
typedef struct dinf_pipe_violation {
    int32_t rank;     /* -1 if the whole set is at fault */
    int64_t op_index; /* index in that rank's stream, -1 if none */
    char rule[192];   /* e.g. "B1.3 before its F1.3" */
} dinf_pipe_violation;

/*
 * dinf_pipe_validate - check any set of rank streams (ours, or parsed from
 * text) for:
 *   - every op well formed, micro-batches and peers in range for the kind;
 *   - per rank: one F and one backward (B, I or inside FB) per micro-batch of
 *     each direction that runs on it, the forward first;
 *   - W never ahead of the deferred backwards it runs (the FIFO never
 *     underflows) and no deferred backward left without its W;
 *   - every posted send matched by exactly one posted receive with the same
 *     kind, direction, micro-batch and the right peers, with the neighbours the
 *     kind's data flow implies;
 *   - no deadlock when each commit waits until every send and receive of its
 *     batch has its partner posted and committed;
 *   - with communication, each compute op's input arrived: a forward that is
 *     not its direction's first stage has had its activation received and
 *     committed, a backward that is not the last stage its gradient.
 * Streams without any send/recv/commit are checked for the compute rules and
 * for a data-flow deadlock (an op whose input can never arrive). Time and
 * memory are linear in the number of ops.
 *
 * Arguments:
 *   kind, num_ranks, num_chunks [IN]  what the streams claim to be
 *   streams    [IN]  num_ranks pointers, streams[r] = rank r's ops
 *   lengths    [IN]  num_ranks lengths
 *   violation  [OUT] set when the set is invalid; may be NULL
 *   valid      [OUT] 1 if every rule holds, else 0; not NULL
 * Returns DINF_STATUS_OK whether or not the streams are valid (see *valid);
 * DINF_STATUS_INVALID_ARGUMENT for NULL pointers or bad sizes;
 * DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_pipe_validate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        const dinf_pipe_op *const *streams, const int64_t *lengths,
                                        dinf_pipe_violation *violation, int32_t *valid);

/* ------------------------------------------------------------------------ */
/* Simulation                                                                */
/* ------------------------------------------------------------------------ */

/* Costs of the simulator, in any one time unit. */
typedef struct dinf_pipe_costs {
    double forward;          /* F */
    double backward;         /* B, a full backward (I costs backward - weight) */
    double weight;           /* W */
    double forward_backward; /* F&B, an overlapped pair */
    double latency;          /* per message, from the end of the producing op */
} dinf_pipe_costs;

/* One op on the simulated timeline. */
typedef struct dinf_pipe_event {
    int32_t rank;
    int64_t op_index; /* index in the rank's compute stream */
    dinf_pipe_op op;
    double start, end;
} dinf_pipe_event;

/* Summary of a simulation. Per-rank arrays are caller-owned, may be NULL. */
typedef struct dinf_pipe_sim_result {
    double makespan;           /* end of the last op of any rank (all start at 0) */
    double max_bubble;         /* max over ranks of makespan - busy time */
    int32_t max_peak_activations;
    double *busy;              /* [num_ranks] time spent in ops */
    double *bubble;            /* [num_ranks] makespan - busy */
    int32_t *peak_activations; /* [num_ranks] most micro-batches whose forward is done and whose
                                * backward (B, I, or inside FB) is not, counting the transient
                                * +1 inside an overlapped F&B */
} dinf_pipe_sim_result;

/*
 * dinf_pipe_simulate - run the streams in an idealised execution model: every
 * rank runs its compute ops in order, each as soon as the rank is free and
 * its input is there (an F that is not its direction's first stage waits for
 * the previous stage's F of the same micro-batch to end, plus latency; a
 * backward waits likewise for the next stage's backward; F&B waits for both).
 * Both halves of an F&B deliver their outputs when the F&B ends. Bubble =
 * makespan - busy time, all ranks starting at 0. Communication ops in the
 * streams are ignored: the data flow alone decides.
 *
 * Arguments:
 *   kind, num_ranks, num_chunks, streams, lengths [IN] as dinf_pipe_validate
 *   costs    [IN]  all >= 0 and finite, weight <= backward; not NULL
 *   result   [OUT] not NULL; its per-rank arrays are filled where non-NULL
 *   events   [OUT] caller-owned, one per compute op of all ranks in rank
 *                  order then stream order; may be NULL
 *   capacity [IN]  entries in events
 *   num_events [OUT] compute ops simulated; may be NULL
 * Returns DINF_STATUS_OK; DINF_STATUS_INVALID_ARGUMENT for bad input, for
 * streams that are not valid compute streams for the kind, for streams that
 * deadlock (the message names a waiting op), for times that overflow a
 * double, and for capacity < the number of compute ops (result and
 * *num_events are still filled then); DINF_STATUS_OUT_OF_MEMORY. Time and
 * memory are linear in the number of ops.
 */
DINF_API dinf_status dinf_pipe_simulate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        const dinf_pipe_op *const *streams, const int64_t *lengths,
                                        const dinf_pipe_costs *costs, dinf_pipe_sim_result *result,
                                        dinf_pipe_event *events, int64_t capacity,
                                        int64_t *num_events);

/* ------------------------------------------------------------------------ */
/* Pictures and traces                                                       */
/* ------------------------------------------------------------------------ */

/*
 * dinf_pipe_render_svg / dinf_pipe_render_trace - draw simulated events (from
 * dinf_pipe_simulate) as an SVG timeline (ranks as rows, ops as boxes coloured
 * by kind and direction, labelled with the micro-batch) or as Chrome trace
 * JSON (loads in Perfetto and chrome://tracing; one process, one thread per
 * rank, each cost unit drawn as time_unit_us microseconds).
 *
 * Arguments:
 *   events, num_events [IN]  as produced by dinf_pipe_simulate
 *   num_ranks [IN]
 *   title     [IN]  NUL-terminated text for the picture's title, may be NULL
 *   time_unit_us [IN] (trace only) microseconds per cost unit, > 0
 *   buf       [OUT] caller-owned; NULL to ask for the size
 *   bytes     [IN]  size of buf
 *   written   [OUT] bytes needed / written, excluding the terminating NUL;
 *                   not NULL
 * Output is deterministic and independent of the locale; invalid UTF-8 or
 * characters XML cannot hold in the title become U+FFFD. SVG boxes carry the
 * classes "op F d0|d1", "op B d0|d1", "op I d0|d1", "op W", "op FB" (with
 * "half" boxes inside) and rows "row"; labels narrower than 5 px are left out
 * (each box's tooltip still names its op). Trace events: "X" events with cat
 * F, B, I, W or FB and args op_index, dir, mb (dir2, mb2 for F&B), plus "M"
 * metadata naming the process and each rank's thread.
 * Returns DINF_STATUS_OK; DINF_STATUS_INVALID_ARGUMENT for NULL pointers,
 * num_events < 0, num_ranks outside [1, 2^20], an event with a rank out of
 * range, a non-compute op, directions other than 0/1 or micro-batches outside
 * [0, 2^20], times that are negative, non-finite or end < start,
 * time_unit_us not finite and > 0 or a scaled time overflowing, and for a
 * buffer that is too small (*written then says how much is needed and buf[0]
 * is NUL when bytes > 0); DINF_STATUS_OUT_OF_MEMORY (the SVG's per-rank
 * totals).
 */
DINF_API dinf_status dinf_pipe_render_svg(const dinf_pipe_event *events, int64_t num_events,
                                          int32_t num_ranks, const char *title, char *buf,
                                          size_t bytes, size_t *written);
DINF_API dinf_status dinf_pipe_render_trace(const dinf_pipe_event *events, int64_t num_events,
                                            int32_t num_ranks, const char *title,
                                            double time_unit_us, char *buf, size_t bytes,
                                            size_t *written);

/* ------------------------------------------------------------------------ */
/* Executor                                                                  */
/* ------------------------------------------------------------------------ */

/* What one compute callback is asked to do. */
typedef struct dinf_pipe_task {
    int32_t rank;          /* this rank */
    int32_t dir;           /* direction (DualPipe) or phase (DualPipeV); 0 otherwise */
    int32_t mb;            /* micro-batch within the direction */
    int32_t stage;         /* global stage index of the module that runs (see the header top) */
    int32_t module;        /* local module slot: 0 or 1 (DualPipe, DualPipeV), else 0 */
    int32_t first_stage;   /* 1: the input is the engine's own micro-batch (row_offset..) */
    int32_t last_stage;    /* 1: compute the loss here (forward) / start from it (backward) */
    int32_t local_input;   /* forward: 1 = the input is this rank's own output of the other
                            * module for the same mb; backward: 1 = the output-gradient is this
                            * rank's own input-gradient of the other module for the same mb
                            * (both: DualPipeV, last rank: phase 1 forward, phase 0 backward) */
    int32_t defer_weight_grad; /* backward only: 1 = compute input grads now, keep the weight
                                * gradient for a later weight_grad call (zero-bubble split) */
    int64_t row_offset;    /* first row of this micro-batch in its direction's batch (for the
                            * first stage's input and the last stage's labels alike) */
    int64_t row_count;     /* ...and its rows (tensor_split: the first batch % chunks get one
                            * more); both -1 when no batch size was configured */
} dinf_pipe_task;

/* Kinds of messages for post_send / post_recv. */
typedef enum dinf_pipe_msg {
    DINF_PIPE_MSG_ACT = 0,  /* an activation of (dir, mb) */
    DINF_PIPE_MSG_GRAD = 1, /* an input-gradient of (dir, mb) */
} dinf_pipe_msg;

#define DINF_PIPE_CALLBACKS_MAGIC 0x50495045u /* "PIPE" */

/*
 * The engine's side. Every callback returns DINF_STATUS_OK or a failure
 * status; on failure the step stops at once and returns that status, with a
 * message naming the rank, the op and the callback, followed by the text of
 * dinf_last_error() at the time of the failure: the executor clears that
 * text before each callback, and the callback sets it with
 * dinf_set_last_error or by failing a dinf_* call, or leaves it empty ("(the
 * callback set no message)"). A step that succeeds leaves the caller's
 * dinf_last_error() as it was. All callbacks run on the thread that calls
 * dinf_pipe_executor_step, in stream order.
 */
typedef struct dinf_pipe_callbacks {
    uint32_t size;  /* sizeof(dinf_pipe_callbacks) as the caller knows it (at least the first
                     * version's; DINF_PIPE_CALLBACKS_INIT sets it) */
    uint32_t magic; /* DINF_PIPE_CALLBACKS_MAGIC */
    void *user;     /* passed to every callback */
    /* required */
    dinf_status (*forward)(void *user, const dinf_pipe_task *task);
    dinf_status (*backward)(void *user, const dinf_pipe_task *task);
    /* required when the schedule defers weight gradients (DualPipe, DualPipeV,
     * ZB1P): run the deferred weight gradients of (task->dir, task->mb); task
     * is the deferred backward's own task (defer_weight_grad = 1), handed back
     * in FIFO order */
    dinf_status (*weight_grad)(void *user, const dinf_pipe_task *task);
    /* optional: forward f overlapped with backward b; when NULL the executor
     * calls forward(f) then backward(b) */
    dinf_status (*forward_backward)(void *user, const dinf_pipe_task *f, const dinf_pipe_task *b);
    /* required for num_ranks > 1 (optional for one rank, which never
     * communicates): post a send/receive on the engine's communicator;
     * nothing may block until commit */
    dinf_status (*post_send)(void *user, int32_t rank, dinf_pipe_msg msg, int32_t dir, int32_t mb,
                             int32_t peer);
    dinf_status (*post_recv)(void *user, int32_t rank, dinf_pipe_msg msg, int32_t dir, int32_t mb,
                             int32_t peer);
    /* launch everything posted since the last commit as one batch and wait for
     * it (called at every commit of the stream, even an empty one) */
    dinf_status (*commit)(void *user, int32_t rank);
} dinf_pipe_callbacks;

#define DINF_PIPE_CALLBACKS_INIT {sizeof(dinf_pipe_callbacks), DINF_PIPE_CALLBACKS_MAGIC, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL}

typedef struct dinf_pipe_executor dinf_pipe_executor;

/*
 * dinf_pipe_executor_create - an executor for one rank. It generates the
 * rank's stream with communication once and checks it (every op well formed,
 * the deferred weight-gradient FIFO balanced; the cross-rank rules are
 * dinf_pipe_validate's); each dinf_pipe_executor_step then runs one training
 * step through the callbacks. An executor is used by one thread at a time;
 * different executors (ranks) run concurrently. A step that failed leaves the
 * executor ready for the next step.
 *
 * Arguments:
 *   kind, num_ranks, num_chunks, rank [IN] as dinf_pipe_schedule
 *   batch_size [IN]  rows of the batch each first stage splits into
 *                    micro-batches (for dinf_pipe_task.row_offset/row_count),
 *                    or 0 if the engine splits itself
 *   callbacks  [IN]  copied; see dinf_pipe_callbacks for which are required
 *   executor   [OUT] not NULL; free with dinf_pipe_executor_destroy
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (sizes, missing
 * callbacks, bad size/magic) or DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_pipe_executor_create(dinf_pipe_kind kind, int32_t num_ranks,
                                               int32_t num_chunks, int32_t rank,
                                               int64_t batch_size,
                                               const dinf_pipe_callbacks *callbacks,
                                               dinf_pipe_executor **executor);

/*
 * dinf_pipe_executor_step - run the rank's whole stream once: commits,
 * posts, compute ops, and the deferred weight-gradient FIFO. Every rank of the
 * pipeline must call it (each on its own thread or process) for the step to
 * complete. It allocates nothing. Returns DINF_STATUS_OK, the first failing
 * callback's status (message: "dinf_pipe_executor_step: rank R op I (B1.3):
 * backward failed: <dinf_last_error() at that moment>"),
 * DINF_STATUS_INVALID_ARGUMENT for a NULL executor, or DINF_STATUS_INTERNAL
 * if the FIFO is not empty at the end.
 */
DINF_API dinf_status dinf_pipe_executor_step(dinf_pipe_executor *executor);

/* Frees the executor; NULL is accepted. */
DINF_API void dinf_pipe_executor_destroy(dinf_pipe_executor *executor);

/*
 * dinf_pipe_split - tensor_split boundaries: micro-batch k of a batch of
 * batch_size rows split into num_chunks pieces starts at offsets[k] and has
 * offsets[k+1] - offsets[k] rows (the first batch_size % num_chunks pieces
 * get one extra row). offsets [OUT] has num_chunks + 1 entries.
 */
DINF_API dinf_status dinf_pipe_split(int64_t batch_size, int32_t num_chunks, int64_t *offsets);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_DUALPIPE_H */
