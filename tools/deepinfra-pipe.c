/*
 * deepinfra-pipe: generate, validate, simulate and draw a pipeline schedule.
 *
 *   deepinfra-pipe --kind dualpipe --ranks 8 --chunks 20 --svg dp.svg --trace dp.json
 *
 * Every rank's stream comes from dinf_pipe_schedule, the set is checked by
 * dinf_pipe_validate (with --comm: the streams with their sends, receives and
 * commits, so matching and deadlock freedom are checked too), and timed by
 * dinf_pipe_simulate. The summary compares the worst rank's bubble with the
 * upstream README's formula for the kind.
 *
 * Exit status: 0 done; 1 a library call failed, the schedule is invalid, or a
 * file could not be written; 2 usage error.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, strcasecmp */

#include <deepinfra.h>
#include <deepinfra/dualpipe.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const PROG = "deepinfra-pipe";

static void usage(FILE *f) {
    fprintf(f,
            "usage: %s --kind dualpipe|dualpipev|1f1b|zb1p --ranks R --chunks N\n"
            "       [--costs F=1,B=2,W=1,FB=3,latency=0] [--svg FILE] [--trace FILE]\n"
            "       [--time-unit-us U] [--title TEXT] [--print] [--comm]\n"
            "\n"
            "  --kind K          schedule family\n"
            "  --ranks R         pipeline ranks\n"
            "  --chunks N        micro-batches per step\n"
            "  --costs LIST      simulator costs as key=value pairs, any subset of F (forward),\n"
            "                    B (full backward), W (weight gradients; I costs B-W), FB (an\n"
            "                    overlapped forward & backward) and latency (per message);\n"
            "                    defaults F=1,B=2,W=1,FB=3,latency=0\n"
            "  --svg FILE        write the simulated timeline as an SVG picture\n"
            "  --trace FILE      write it as Chrome trace JSON (Perfetto, chrome://tracing)\n"
            "  --time-unit-us U  microseconds per cost unit in the trace (default 1000)\n"
            "  --title TEXT      title of the picture and trace (default: kind, ranks, chunks)\n"
            "  --print           print every rank's stream in the text notation\n"
            "  --comm            include sends, receives and commits in the streams, and\n"
            "                    validate communication matching and deadlock freedom too\n"
            "\n"
            "Exit status: 0 done, 1 library error or invalid schedule, 2 usage error.\n",
            PROG);
}

static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", PROG);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr);
    exit(2);
}

/* A library call failed: say which, with the library's own message. */
static int library_error(const char *call) {
    fprintf(stderr, "%s: %s failed: %s\n", PROG, call, dinf_last_error());
    return 1;
}

static int parse_int(const char *opt, const char *text, int32_t *value) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end || errno || v < 1 || v > (1L << 20))
        usage_error("%s expects a whole number in [1, 2^20], got \"%s\"", opt, text);
    *value = (int32_t)v;
    return 0;
}

static double parse_cost(const char *key, const char *text) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v) || v < 0)
        usage_error("--costs: %s=\"%s\" is not a finite number >= 0", key, text);
    return v;
}

/* "F=1,B=2,..." into costs; keys are case-insensitive. */
static void parse_costs(const char *list, dinf_pipe_costs *costs) {
    char *copy = strdup(list);
    if (!copy) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        exit(1);
    }
    for (char *item = strtok(copy, ","); item; item = strtok(NULL, ",")) {
        char *eq = strchr(item, '=');
        if (!eq)
            usage_error("--costs: \"%s\" is not key=value", item);
        *eq = '\0';
        const char *key = item, *value = eq + 1;
        if (!strcasecmp(key, "F"))
            costs->forward = parse_cost(key, value);
        else if (!strcasecmp(key, "B"))
            costs->backward = parse_cost(key, value);
        else if (!strcasecmp(key, "W"))
            costs->weight = parse_cost(key, value);
        else if (!strcasecmp(key, "FB") || !strcasecmp(key, "F&B"))
            costs->forward_backward = parse_cost(key, value);
        else if (!strcasecmp(key, "latency") || !strcasecmp(key, "L"))
            costs->latency = parse_cost(key, value);
        else
            usage_error("--costs: unknown key \"%s\" (F, B, W, FB, latency)", key);
    }
    free(copy);
}

static const struct {
    const char *arg, *name;
    dinf_pipe_kind kind;
} KINDS[] = {
    {"dualpipe", "DualPipe", DINF_PIPE_DUALPIPE},
    {"dualpipev", "DualPipeV", DINF_PIPE_DUALPIPEV},
    {"1f1b", "1F1B", DINF_PIPE_1F1B},
    {"zb1p", "ZB1P", DINF_PIPE_ZB1P},
};

/* The README's bubble formula for the kind (reference section 3). */
static double readme_bubble(dinf_pipe_kind kind, int32_t ranks, const dinf_pipe_costs *c,
                            const char **formula, int32_t *pp) {
    switch (kind) {
    case DINF_PIPE_DUALPIPE:
    case DINF_PIPE_DUALPIPEV:
        *pp = kind == DINF_PIPE_DUALPIPE ? ranks : 2 * ranks;
        *formula = "(PP/2-1)(F&B+B-3W)";
        return (*pp / 2.0 - 1) * (c->forward_backward + c->backward - 3 * c->weight);
    case DINF_PIPE_1F1B:
        *pp = ranks;
        *formula = "(PP-1)(F+B)";
        return (ranks - 1) * (c->forward + c->backward);
    case DINF_PIPE_ZB1P:
        *pp = ranks;
        *formula = "(PP-1)(F+B-2W)";
        return (ranks - 1) * (c->forward + c->backward - 2 * c->weight);
    }
    return NAN;
}

static int is_compute(int32_t type) {
    return type == DINF_PIPE_OP_F || type == DINF_PIPE_OP_B || type == DINF_PIPE_OP_I ||
           type == DINF_PIPE_OP_W || type == DINF_PIPE_OP_FB;
}

typedef dinf_status (*render_fn)(const dinf_pipe_event *, int64_t, int32_t, const char *, double,
                                 char *, size_t, size_t *);

static dinf_status svg_adapter(const dinf_pipe_event *e, int64_t n, int32_t r, const char *t,
                               double unit, char *buf, size_t bytes, size_t *written) {
    (void)unit;
    return dinf_pipe_render_svg(e, n, r, t, buf, bytes, written);
}

/* Render (size query, then the text) and write it to path. */
static int write_rendering(render_fn render, const char *call, const char *path,
                           const dinf_pipe_event *events, int64_t n, int32_t ranks,
                           const char *title, double unit) {
    size_t size;
    if (render(events, n, ranks, title, unit, NULL, 0, &size) != DINF_STATUS_OK)
        return library_error(call);
    char *text = malloc(size + 1);
    if (!text) {
        fprintf(stderr, "%s: out of memory for %zu bytes of %s output\n", PROG, size + 1, call);
        return 1;
    }
    int rc = 0;
    if (render(events, n, ranks, title, unit, text, size + 1, &size) != DINF_STATUS_OK) {
        rc = library_error(call);
    } else {
        FILE *f = fopen(path, "wb");
        int ok = f && fwrite(text, 1, size, f) == size;
        int saved = errno;
        if (f && fclose(f) != 0 && ok) {
            ok = 0;
            saved = errno;
        }
        if (!ok) {
            fprintf(stderr, "%s: cannot write %s: %s\n", PROG, path, strerror(saved));
            rc = 1;
        } else {
            printf("wrote %s (%zu bytes)\n", path, size);
        }
    }
    free(text);
    return rc;
}

#define FAIL(status)                                                                               \
    do {                                                                                           \
        rc = (status);                                                                             \
        goto done;                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    const char *kind_arg = NULL, *svg_path = NULL, *trace_path = NULL, *title = NULL;
    int32_t ranks = 0, chunks = 0;
    int print = 0, comm = 0;
    double time_unit_us = 1000.0;
    dinf_pipe_costs costs = {1.0, 2.0, 1.0, 3.0, 0.0};

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        /* --opt value or --opt=value */
        char name[64];
        const char *value = NULL;
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof name)
            usage_error("unknown option \"%s\"", arg);
        memcpy(name, arg, len);
        name[len] = '\0';
        int takes_value = !strcmp(name, "--kind") || !strcmp(name, "--ranks") ||
                          !strcmp(name, "--chunks") || !strcmp(name, "--costs") ||
                          !strcmp(name, "--svg") || !strcmp(name, "--trace") ||
                          !strcmp(name, "--title") || !strcmp(name, "--time-unit-us");
        if (takes_value) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                usage_error("%s needs a value", name);
        } else if (eq) {
            usage_error("%s takes no value", name);
        }
        if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(name, "--kind")) {
            kind_arg = value;
        } else if (!strcmp(name, "--ranks")) {
            parse_int(name, value, &ranks);
        } else if (!strcmp(name, "--chunks")) {
            parse_int(name, value, &chunks);
        } else if (!strcmp(name, "--costs")) {
            parse_costs(value, &costs);
        } else if (!strcmp(name, "--svg")) {
            svg_path = value;
        } else if (!strcmp(name, "--trace")) {
            trace_path = value;
        } else if (!strcmp(name, "--title")) {
            title = value;
        } else if (!strcmp(name, "--time-unit-us")) {
            char *end;
            time_unit_us = strtod(value, &end);
            if (end == value || *end || !isfinite(time_unit_us) || time_unit_us <= 0)
                usage_error("--time-unit-us expects a number > 0, got \"%s\"", value);
        } else if (!strcmp(name, "--print")) {
            print = 1;
        } else if (!strcmp(name, "--comm")) {
            comm = 1;
        } else {
            usage_error("unknown option \"%s\"", arg);
        }
    }
    if (!kind_arg)
        usage_error("--kind is required");
    if (!ranks)
        usage_error("--ranks is required");
    if (!chunks)
        usage_error("--chunks is required");
    int k = -1;
    for (int j = 0; j < (int)(sizeof KINDS / sizeof KINDS[0]); j++)
        if (!strcasecmp(kind_arg, KINDS[j].arg))
            k = j;
    if (k < 0)
        usage_error("--kind \"%s\" is not one of dualpipe, dualpipev, 1f1b, zb1p", kind_arg);
    const dinf_pipe_kind kind = KINDS[k].kind;
    char default_title[160];
    snprintf(default_title, sizeof default_title, "%s, %d rank%s, %d micro-batches",
             KINDS[k].name, ranks, ranks == 1 ? "" : "s", chunks);
    if (!title)
        title = default_title;

    /* Every rank's stream. Failures below jump to done, which frees all. */
    int rc = 0;
    dinf_pipe_event *events = NULL;
    const uint32_t flags = comm ? DINF_PIPE_WITH_COMM : 0;
    dinf_pipe_op **streams = calloc((size_t)ranks, sizeof *streams);
    int64_t *lengths = calloc((size_t)ranks, sizeof *lengths);
    double *busy = calloc((size_t)ranks, sizeof *busy);
    double *bubble = calloc((size_t)ranks, sizeof *bubble);
    int32_t *peak = calloc((size_t)ranks, sizeof *peak);
    if (!streams || !lengths || !busy || !bubble || !peak) {
        fprintf(stderr, "%s: out of memory for %d ranks\n", PROG, ranks);
        rc = 1;
        goto done;
    }
    int64_t total_compute = 0;
    for (int32_t r = 0; r < ranks; r++) {
        if (dinf_pipe_schedule(kind, ranks, chunks, flags, r, NULL, 0, &lengths[r]) !=
            DINF_STATUS_OK)
            FAIL(library_error("dinf_pipe_schedule"));
        streams[r] = malloc((size_t)(lengths[r] > 0 ? lengths[r] : 1) * sizeof *streams[r]);
        if (!streams[r]) {
            fprintf(stderr, "%s: out of memory for rank %d's stream\n", PROG, r);
            FAIL(1);
        }
        if (dinf_pipe_schedule(kind, ranks, chunks, flags, r, streams[r], lengths[r],
                               &lengths[r]) != DINF_STATUS_OK)
            FAIL(library_error("dinf_pipe_schedule"));
        for (int64_t i = 0; i < lengths[r]; i++)
            total_compute += is_compute(streams[r][i].type);
    }

    if (print) {
        for (int32_t r = 0; r < ranks; r++) {
            printf("rank %d:", r);
            for (int64_t i = 0; i < lengths[r]; i++) {
                char op[64];
                if (dinf_pipe_op_format(&streams[r][i], op, sizeof op) != DINF_STATUS_OK)
                    FAIL(library_error("dinf_pipe_op_format"));
                printf(" %s", op);
            }
            printf("\n");
        }
    }

    const dinf_pipe_op *const *cstreams = (const dinf_pipe_op *const *)streams;
    dinf_pipe_violation violation;
    int32_t valid = 0;
    if (dinf_pipe_validate(kind, ranks, chunks, cstreams, lengths, &violation, &valid) !=
        DINF_STATUS_OK)
        FAIL(library_error("dinf_pipe_validate"));
    if (!valid) {
        fprintf(stderr, "%s: the %s schedule is invalid: rank %d, op %lld: %s\n", PROG,
                KINDS[k].name, violation.rank, (long long)violation.op_index, violation.rule);
        FAIL(1);
    }

    events = malloc((size_t)(total_compute > 0 ? total_compute : 1) *
                                     sizeof *events);
    if (!events) {
        fprintf(stderr, "%s: out of memory for %lld events\n", PROG, (long long)total_compute);
        FAIL(1);
    }
    dinf_pipe_sim_result result = {0};
    result.busy = busy;
    result.bubble = bubble;
    result.peak_activations = peak;
    int64_t num_events = 0;
    if (dinf_pipe_simulate(kind, ranks, chunks, cstreams, lengths, &costs, &result, events,
                           total_compute, &num_events) != DINF_STATUS_OK)
        FAIL(library_error("dinf_pipe_simulate"));

    printf("%s: %d ranks, %d micro-batches; costs F=%g B=%g W=%g F&B=%g latency=%g\n",
           KINDS[k].name, ranks, chunks, costs.forward, costs.backward, costs.weight,
           costs.forward_backward, costs.latency);
    printf("schedule: valid (%s)\n",
           comm ? "compute rules, send/receive matching, deadlock freedom, inputs"
                : "compute rules; --comm also checks communication");
    printf("makespan: %g\n", result.makespan);
    printf("%6s %12s %12s %10s\n", "rank", "busy", "bubble", "peak_act");
    for (int32_t r = 0; r < ranks; r++)
        printf("%6d %12g %12g %10d\n", r, busy[r], bubble[r], peak[r]);
    const char *formula = "?";
    int32_t pp = 0;
    double readme = readme_bubble(kind, ranks, &costs, &formula, &pp);
    printf("max bubble: %g\n", result.max_bubble);
    printf("README bubble %s with PP=%d: %g\n", formula, pp, readme);
    printf("max peak activations: %d\n", result.max_peak_activations);

    if (svg_path)
        rc |= write_rendering(svg_adapter, "dinf_pipe_render_svg", svg_path, events, num_events,
                              ranks, title, time_unit_us);
    if (trace_path)
        rc |= write_rendering(dinf_pipe_render_trace, "dinf_pipe_render_trace", trace_path,
                              events, num_events, ranks, title, time_unit_us);

done:
    for (int32_t r = 0; streams && r < ranks; r++)
        free(streams[r]);
    free(streams);
    free(lengths);
    free(busy);
    free(bubble);
    free(peak);
    free(events);
    return rc;
}
