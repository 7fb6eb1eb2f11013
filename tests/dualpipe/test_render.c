/*
 * The SVG and Chrome-trace renderers on hand-made events (independent of the
 * simulator): size query against the real render, short buffers, bad input,
 * every rank and op drawn with its colour class, escaping, trace scaling.
 */
#include <deepinfra.h>
#include <deepinfra/dualpipe.h>

#include <criterion/criterion.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dinf_pipe_event ev(int rank, int64_t index, int type, int dir, int mb, int dir2, int mb2,
                          double start, double end) {
    dinf_pipe_event e;
    memset(&e, 0, sizeof e);
    e.rank = rank;
    e.op_index = index;
    e.op.type = type;
    e.op.dir = dir;
    e.op.mb = mb;
    e.op.dir2 = dir2;
    e.op.mb2 = mb2;
    e.op.peer = -1;
    e.start = start;
    e.end = end;
    return e;
}

/* Three ranks (the last one idle), every colour class once or more. */
#define NUM_RANKS 3
#define NUM_EVENTS 9
static void sample(dinf_pipe_event *e) {
    int k = 0;
    e[k++] = ev(0, 0, DINF_PIPE_OP_F, 0, 0, -1, -1, 0, 1);
    e[k++] = ev(0, 1, DINF_PIPE_OP_F, 0, 1, -1, -1, 1, 2);
    e[k++] = ev(0, 2, DINF_PIPE_OP_FB, 0, 2, 1, 0, 2, 5);
    e[k++] = ev(0, 3, DINF_PIPE_OP_I, 0, 0, -1, -1, 5, 6);
    e[k++] = ev(0, 4, DINF_PIPE_OP_W, -1, -1, -1, -1, 6, 7);
    e[k++] = ev(1, 0, DINF_PIPE_OP_F, 1, 0, -1, -1, 0.5, 1.5);
    e[k++] = ev(1, 1, DINF_PIPE_OP_B, 0, 0, -1, -1, 2, 4);
    e[k++] = ev(1, 2, DINF_PIPE_OP_B, 1, 0, -1, -1, 4, 6);
    e[k++] = ev(1, 3, DINF_PIPE_OP_I, 1, 1, -1, -1, 6, 7);
    cr_assert_eq(k, NUM_EVENTS);
}

/* Render through the size query; returns the malloc'ed text. */
static char *render_svg(const dinf_pipe_event *e, int64_t n, int32_t R, const char *title) {
    size_t size = 0;
    cr_assert_eq(dinf_pipe_render_svg(e, n, R, title, NULL, 0, &size), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    char *text = malloc(size + 1);
    size_t written = 0;
    cr_assert_eq(dinf_pipe_render_svg(e, n, R, title, text, size + 1, &written), DINF_STATUS_OK,
                 "%s", dinf_last_error());
    cr_assert_eq(written, size, "written=%zu, size query said %zu", written, size);
    cr_assert_eq(strlen(text), size);
    return text;
}

static char *render_trace(const dinf_pipe_event *e, int64_t n, int32_t R, const char *title,
                          double unit) {
    size_t size = 0;
    cr_assert_eq(dinf_pipe_render_trace(e, n, R, title, unit, NULL, 0, &size), DINF_STATUS_OK,
                 "%s", dinf_last_error());
    char *text = malloc(size + 1);
    size_t written = 0;
    cr_assert_eq(dinf_pipe_render_trace(e, n, R, title, unit, text, size + 1, &written),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(written, size, "written=%zu, size query said %zu", written, size);
    cr_assert_eq(strlen(text), size);
    return text;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The fill attribute of the first element that carries `cls` exactly. */
static void fill_of(const char *svg, const char *cls, char *fill, size_t bytes) {
    char key[64];
    snprintf(key, sizeof key, "class=\"%s\"", cls);
    const char *p = strstr(svg, key);
    cr_assert(p, "no element of class \"%s\"", cls);
    const char *end = strstr(p, "/>");
    const char *f = strstr(p, "fill=\"");
    cr_assert(f && f < end, "class \"%s\" has no fill", cls);
    f += 6;
    size_t len = strcspn(f, "\"");
    cr_assert_lt(len, bytes);
    memcpy(fill, f, len);
    fill[len] = '\0';
}

Test(pipe_render, size_query_then_render_gives_identical_bytes) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    for (int which = 0; which < 2; which++) {
        char *a = which ? render_trace(e, NUM_EVENTS, NUM_RANKS, "t", 1.0)
                        : render_svg(e, NUM_EVENTS, NUM_RANKS, "t");
        size_t len = strlen(a);
        /* Render again into a larger buffer: same bytes, nothing past the NUL. */
        char *b = malloc(len + 64);
        memset(b, 0x5A, len + 64);
        size_t written = 0;
        dinf_status st =
            which ? dinf_pipe_render_trace(e, NUM_EVENTS, NUM_RANKS, "t", 1.0, b, len + 64,
                                           &written)
                  : dinf_pipe_render_svg(e, NUM_EVENTS, NUM_RANKS, "t", b, len + 64, &written);
        cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(written, len, "%s: written=%zu, first render %zu", which ? "trace" : "svg",
                     written, len);
        cr_assert_eq(memcmp(a, b, len + 1), 0, "%s: renders differ", which ? "trace" : "svg");
        for (size_t i = len + 1; i < len + 64; i++)
            cr_assert_eq(b[i], 0x5A, "%s: byte %zu past the NUL was written",
                         which ? "trace" : "svg", i);
        free(a);
        free(b);
    }
}

Test(pipe_render, too_small_buffer_is_an_error_that_names_the_size) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    for (int which = 0; which < 2; which++) {
        size_t size = 0;
        cr_assert_eq(which ? dinf_pipe_render_trace(e, NUM_EVENTS, NUM_RANKS, NULL, 1.0, NULL, 0,
                                                    &size)
                           : dinf_pipe_render_svg(e, NUM_EVENTS, NUM_RANKS, NULL, NULL, 0, &size),
                     DINF_STATUS_OK);
        /* Room for every byte but not the NUL, then a tiny buffer. */
        size_t caps[] = {size, 10, 1};
        for (int c = 0; c < 3; c++) {
            char *buf = malloc(size + 16);
            memset(buf, 0x5A, size + 16);
            size_t written = 0;
            dinf_status st =
                which ? dinf_pipe_render_trace(e, NUM_EVENTS, NUM_RANKS, NULL, 1.0, buf, caps[c],
                                               &written)
                      : dinf_pipe_render_svg(e, NUM_EVENTS, NUM_RANKS, NULL, buf, caps[c],
                                             &written);
            const char *what = which ? "trace" : "svg";
            cr_assert_eq(st, DINF_STATUS_INVALID_ARGUMENT, "%s bytes=%zu", what, caps[c]);
            cr_assert_eq(written, size, "%s bytes=%zu: written=%zu should say %zu", what, caps[c],
                         written, size);
            char want[96];
            snprintf(want, sizeof want, "bytes=%zu is too small", caps[c]);
            cr_assert(strstr(dinf_last_error(), want), "%s: %s", what, dinf_last_error());
            snprintf(want, sizeof want, "needs %zu bytes plus the NUL", size);
            cr_assert(strstr(dinf_last_error(), want), "%s: %s", what, dinf_last_error());
            cr_assert_eq(buf[0], '\0', "%s: a failed render leaves an empty string", what);
            for (size_t i = caps[c]; i < size + 16; i++)
                cr_assert_eq(buf[i], 0x5A, "%s bytes=%zu: byte %zu written", what, caps[c], i);
            free(buf);
        }
        /* bytes = 0 with a buffer: nothing at all is written. */
        char one = 0x5A;
        size_t written = 0;
        cr_assert_eq(which ? dinf_pipe_render_trace(e, NUM_EVENTS, NUM_RANKS, NULL, 1.0, &one, 0,
                                                    &written)
                           : dinf_pipe_render_svg(e, NUM_EVENTS, NUM_RANKS, NULL, &one, 0,
                                                  &written),
                     DINF_STATUS_INVALID_ARGUMENT);
        cr_assert_eq(one, 0x5A);
        cr_assert_eq(written, size);
    }
}

/* Both renderers reject the same bad events with the same words. */
static void expect_bad(const dinf_pipe_event *e, int64_t n, int32_t R, const char *needle) {
    size_t written;
    cr_assert_eq(dinf_pipe_render_svg(e, n, R, NULL, NULL, 0, &written),
                 DINF_STATUS_INVALID_ARGUMENT, "svg accepted input that should fail with \"%s\"",
                 needle);
    cr_assert(strstr(dinf_last_error(), "dinf_pipe_render_svg: "), "%s", dinf_last_error());
    cr_assert(strstr(dinf_last_error(), needle), "svg: \"%s\" lacks \"%s\"", dinf_last_error(),
              needle);
    cr_assert_eq(dinf_pipe_render_trace(e, n, R, NULL, 1.0, NULL, 0, &written),
                 DINF_STATUS_INVALID_ARGUMENT, "trace accepted input that should fail with "
                 "\"%s\"", needle);
    cr_assert(strstr(dinf_last_error(), "dinf_pipe_render_trace: "), "%s", dinf_last_error());
    cr_assert(strstr(dinf_last_error(), needle), "trace: \"%s\" lacks \"%s\"",
              dinf_last_error(), needle);
}

Test(pipe_render, bad_input_is_rejected_with_a_precise_message) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    expect_bad(NULL, 3, NUM_RANKS, "events is NULL but num_events=3");
    expect_bad(e, -1, NUM_RANKS, "num_events=-1 is negative");
    expect_bad(e, NUM_EVENTS, 0, "num_ranks=0 must be in [1,");
    expect_bad(e, NUM_EVENTS, -4, "num_ranks=-4 must be in [1,");
    expect_bad(e, NUM_EVENTS, 1, "events[5].rank=1 is not in [0, num_ranks=1)");

    dinf_pipe_event bad[NUM_EVENTS];
    memcpy(bad, e, sizeof bad);
    bad[2].rank = -1;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[2].rank=-1 is not in [0, num_ranks=3)");

    memcpy(bad, e, sizeof bad);
    bad[3].end = 4.5; /* start is 5 */
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[3] (rank 0): need 0 <= start <= end, got "
                                           "start=5 end=4.5");
    memcpy(bad, e, sizeof bad);
    bad[1].start = -1;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[1] (rank 0): need 0 <= start <= end");

    memcpy(bad, e, sizeof bad);
    bad[4].start = NAN;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[4] (rank 0): start and end must be finite");
    memcpy(bad, e, sizeof bad);
    bad[6].end = INFINITY;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[6] (rank 1): start and end must be finite");

    memcpy(bad, e, sizeof bad);
    bad[0].op.type = DINF_PIPE_OP_SEND_ACT;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[0].op.type=5 is not a compute op");
    memcpy(bad, e, sizeof bad);
    bad[0].op.dir = 2;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[0].op: dir=2 mb=0");
    memcpy(bad, e, sizeof bad);
    bad[2].op.mb2 = -1;
    expect_bad(bad, NUM_EVENTS, NUM_RANKS, "events[2].op (F&B): dir2=1 mb2=-1");

    size_t written;
    cr_assert_eq(dinf_pipe_render_svg(e, NUM_EVENTS, NUM_RANKS, NULL, NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "written is NULL"), "%s", dinf_last_error());
    double units[] = {0.0, -1.0, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(dinf_pipe_render_trace(e, NUM_EVENTS, NUM_RANKS, NULL, units[i], NULL, 0,
                                            &written),
                     DINF_STATUS_INVALID_ARGUMENT, "time_unit_us=%g accepted", units[i]);
        cr_assert(strstr(dinf_last_error(), "time_unit_us="), "%s", dinf_last_error());
        cr_assert(strstr(dinf_last_error(), "must be finite and > 0"), "%s", dinf_last_error());
    }
    /* A finite end that overflows once scaled. */
    dinf_pipe_event big = ev(0, 0, DINF_PIPE_OP_F, 0, 0, -1, -1, 0, 1e300);
    cr_assert_eq(dinf_pipe_render_trace(&big, 1, 1, NULL, 1e10, NULL, 0, &written),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "events[0].end=1e+300 times time_unit_us=1e+10"),
              "%s", dinf_last_error());
}

Test(pipe_render, svg_draws_every_rank_and_every_op_in_its_colour) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    char *svg = render_svg(e, NUM_EVENTS, NUM_RANKS, "sample");
    cr_assert(strncmp(svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ", 44) == 0);
    cr_assert(strstr(svg, "</svg>\n"));

    /* One row per rank, the idle one included, each labelled. */
    cr_assert_eq(count(svg, "<rect class=\"row\""), NUM_RANKS);
    for (int r = 0; r < NUM_RANKS; r++) {
        char label[32];
        snprintf(label, sizeof label, ">rank %d</text>", r);
        cr_assert_eq(count(svg, label), 1, "rank %d's label", r);
    }
    /* Exactly one box per op, by class. */
    cr_assert_eq(count(svg, "<rect class=\"op "), NUM_EVENTS);
    cr_assert_eq(count(svg, "<rect class=\"op F d0\""), 2);
    cr_assert_eq(count(svg, "<rect class=\"op F d1\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op B d0\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op B d1\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op I d0\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op I d1\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op W\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"op FB\""), 1);
    /* The F&B box is split: forward half in F dir 0's colour, backward half in
     * B dir 1's, under a black border. */
    cr_assert_eq(count(svg, "<rect class=\"half F d0\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"half B d1\""), 1);
    cr_assert_eq(count(svg, "<rect class=\"half "), 2);
    char fill[32], other[32];
    fill_of(svg, "op FB", fill, sizeof fill);
    cr_assert_str_eq(fill, "none");
    fill_of(svg, "half F d0", fill, sizeof fill);
    fill_of(svg, "op F d0", other, sizeof other);
    cr_assert_str_eq(fill, other, "F&B forward half %s, F dir 0 box %s", fill, other);
    fill_of(svg, "half B d1", fill, sizeof fill);
    fill_of(svg, "op B d1", other, sizeof other);
    cr_assert_str_eq(fill, other, "F&B backward half %s, B dir 1 box %s", fill, other);

    /* Distinct colours for the seven plain classes. */
    const char *classes[] = {"op F d0", "op F d1", "op B d0", "op B d1",
                             "op I d0", "op I d1", "op W"};
    char fills[7][32];
    for (int i = 0; i < 7; i++) {
        fill_of(svg, classes[i], fills[i], sizeof fills[i]);
        cr_assert_eq(fills[i][0], '#', "%s: fill %s", classes[i], fills[i]);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(fills[i], fills[j], "%s and %s share %s", classes[i], classes[j],
                              fills[i]);
    }

    /* Labels: each box its micro-batch, the F&B both, W its letter; the
     * tooltip names the op (escaped: "F0.2&amp;B1.0"). */
    const char *ops = strstr(svg, "<g class=\"ops\">");
    const char *ops_end = strstr(svg, "<g class=\"axis\"");
    cr_assert(ops && ops_end && ops < ops_end);
    int texts = 0;
    for (const char *p = strstr(ops, "<text "); p && p < ops_end; p = strstr(p + 1, "<text "))
        texts++;
    cr_assert_eq(texts, NUM_EVENTS + 1, "labels in the ops group: %d", texts);
    cr_assert(strstr(svg, "<title>rank 0: F0.2&amp;B1.0, 2 to 5</title>"));
    cr_assert(strstr(svg, "<title>rank 1: F1.0, 0.5 to 1.5</title>"));
    cr_assert(strstr(svg, ">W</text>"));
    /* A legend entry per class present, the title, the idle column. */
    cr_assert(strstr(svg, ">overlapped forward &amp; backward</text>"));
    cr_assert(strstr(svg, ">backward for inputs, dir 1</text>"));
    cr_assert(strstr(svg, ">sample</text>"));
    cr_assert(strstr(svg, ">idle</text>"));
    free(svg);
}

Test(pipe_render, svg_legend_lists_only_the_classes_present) {
    /* One direction only (1F1B): no "dir" in the legend. */
    dinf_pipe_event e[2] = {ev(0, 0, DINF_PIPE_OP_F, 0, 0, -1, -1, 0, 1),
                            ev(0, 1, DINF_PIPE_OP_B, 0, 0, -1, -1, 1, 3)};
    char *svg = render_svg(e, 2, 1, NULL);
    cr_assert(strstr(svg, ">forward</text>"));
    cr_assert(strstr(svg, ">backward</text>"));
    cr_assert_null(strstr(svg, "dir 0"));
    cr_assert_null(strstr(svg, "weights"));
    cr_assert_null(strstr(svg, "overlapped"));
    cr_assert_null(strstr(svg, "class=\"title\""), "no title element without a title");
    free(svg);
}

Test(pipe_render, svg_escapes_the_title) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    char *svg = render_svg(e, NUM_EVENTS, NUM_RANKS, "a<b & \"c\" 'd' > e\x01 f\xff g \xc3\xa9");
    cr_assert(strstr(svg, ">a&lt;b &amp; &quot;c&quot; &#39;d&#39; &gt; e\xEF\xBF\xBD f"
                          "\xEF\xBF\xBD g \xc3\xa9</text>"),
              "title not escaped:\n%.600s", svg);
    cr_assert_null(strstr(svg, "a<b"));
    cr_assert_null(strstr(svg, "\x01"));
    free(svg);
}

Test(pipe_render, empty_timeline_renders_rows_and_metadata) {
    char *svg = render_svg(NULL, 0, 2, "empty");
    cr_assert_eq(count(svg, "<rect class=\"row\""), 2);
    cr_assert_eq(count(svg, "<rect class=\"op "), 0);
    free(svg);
    char *trace = render_trace(NULL, 0, 2, "empty", 1.0);
    cr_assert_eq(count(trace, "\"ph\":\"M\""), 1 + 2 * 2);
    cr_assert_eq(count(trace, "\"ph\":\"X\""), 0);
    free(trace);
}

/* Braces and brackets balance outside strings; strings end. */
static void expect_balanced_json(const char *json) {
    int depth = 0, in_string = 0;
    for (const char *p = json; *p; p++) {
        if (in_string) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_string = 0;
            else
                cr_assert((unsigned char)*p >= 0x20, "raw control byte in a JSON string");
            continue;
        }
        if (*p == '"')
            in_string = 1;
        else if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            cr_assert_geq(--depth, 0, "unbalanced at offset %td", p - json);
    }
    cr_assert_eq(in_string, 0, "unterminated string");
    cr_assert_eq(depth, 0, "unbalanced: depth %d at the end", depth);
}

Test(pipe_render, trace_has_metadata_and_one_scaled_event_per_op) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    char *json = render_trace(e, NUM_EVENTS, NUM_RANKS, "pipe \"x\"\\y\n", 2.5);
    expect_balanced_json(json);
    cr_assert(strncmp(json, "{\"traceEvents\":[", 16) == 0, "%.40s", json);
    cr_assert(strstr(json, "],\"displayTimeUnit\":\"ms\"}\n"));
    /* Process name (escaped title), a name and an order for every thread. */
    cr_assert(strstr(json, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
                           "\"args\":{\"name\":\"pipe \\\"x\\\"\\\\y\\n\"}}"),
              "%.300s", json);
    cr_assert_eq(count(json, "\"ph\":\"M\""), 1 + 2 * NUM_RANKS);
    for (int r = 0; r < NUM_RANKS; r++) {
        char want[128];
        snprintf(want, sizeof want,
                 "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
                 "\"args\":{\"name\":\"rank %d\"}}",
                 r, r);
        cr_assert(strstr(json, want), "missing %s", want);
    }
    /* One complete event per op; times in µs = cost units * 2.5. */
    cr_assert_eq(count(json, "\"ph\":\"X\""), NUM_EVENTS);
    const char *want[NUM_EVENTS] = {
        "{\"name\":\"F0.0\",\"cat\":\"F\",\"ph\":\"X\",\"ts\":0,\"dur\":2.5,\"pid\":0,\"tid\":0,"
        "\"args\":{\"op_index\":0,\"dir\":0,\"mb\":0}}",
        "{\"name\":\"F0.1\",\"cat\":\"F\",\"ph\":\"X\",\"ts\":2.5,\"dur\":2.5,\"pid\":0,"
        "\"tid\":0,\"args\":{\"op_index\":1,\"dir\":0,\"mb\":1}}",
        "{\"name\":\"F0.2&B1.0\",\"cat\":\"FB\",\"ph\":\"X\",\"ts\":5,\"dur\":7.5,\"pid\":0,"
        "\"tid\":0,\"args\":{\"op_index\":2,\"dir\":0,\"mb\":2,\"dir2\":1,\"mb2\":0}}",
        "{\"name\":\"I0.0\",\"cat\":\"I\",\"ph\":\"X\",\"ts\":12.5,\"dur\":2.5,\"pid\":0,"
        "\"tid\":0,\"args\":{\"op_index\":3,\"dir\":0,\"mb\":0}}",
        "{\"name\":\"W\",\"cat\":\"W\",\"ph\":\"X\",\"ts\":15,\"dur\":2.5,\"pid\":0,\"tid\":0,"
        "\"args\":{\"op_index\":4}}",
        "{\"name\":\"F1.0\",\"cat\":\"F\",\"ph\":\"X\",\"ts\":1.25,\"dur\":2.5,\"pid\":0,"
        "\"tid\":1,\"args\":{\"op_index\":0,\"dir\":1,\"mb\":0}}",
        "{\"name\":\"B0.0\",\"cat\":\"B\",\"ph\":\"X\",\"ts\":5,\"dur\":5,\"pid\":0,\"tid\":1,"
        "\"args\":{\"op_index\":1,\"dir\":0,\"mb\":0}}",
        "{\"name\":\"B1.0\",\"cat\":\"B\",\"ph\":\"X\",\"ts\":10,\"dur\":5,\"pid\":0,\"tid\":1,"
        "\"args\":{\"op_index\":2,\"dir\":1,\"mb\":0}}",
        "{\"name\":\"I1.1\",\"cat\":\"I\",\"ph\":\"X\",\"ts\":15,\"dur\":2.5,\"pid\":0,"
        "\"tid\":1,\"args\":{\"op_index\":3,\"dir\":1,\"mb\":1}}",
    };
    const char *prev = json;
    for (int i = 0; i < NUM_EVENTS; i++) {
        const char *at = strstr(json, want[i]);
        cr_assert(at, "event %d missing: %s\nin:\n%s", i, want[i], json);
        cr_assert_gt(at, prev, "event %d out of order", i);
        prev = at;
    }
    free(json);
}

Test(pipe_render, output_does_not_depend_on_the_locale) {
    dinf_pipe_event e[NUM_EVENTS];
    sample(e);
    char *svg = render_svg(e, NUM_EVENTS, NUM_RANKS, "t");
    char *json = render_trace(e, NUM_EVENTS, NUM_RANKS, "t", 0.5);
    const char *comma_locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8",
                                   "ru_RU.UTF-8", "nl_NL.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < sizeof comma_locales / sizeof *comma_locales && !set; i++)
        set = setlocale(LC_NUMERIC, comma_locales[i]);
    if (!set) {
        setlocale(LC_NUMERIC, "C");
        free(svg);
        free(json);
        cr_skip_test("no locale with a decimal comma is installed");
    }
    char *svg2 = render_svg(e, NUM_EVENTS, NUM_RANKS, "t");
    char *json2 = render_trace(e, NUM_EVENTS, NUM_RANKS, "t", 0.5);
    setlocale(LC_NUMERIC, "C");
    cr_assert_str_eq(svg2, svg, "SVG changes under LC_NUMERIC=%s", set);
    cr_assert_str_eq(json2, json, "trace changes under LC_NUMERIC=%s", set);
    free(svg);
    free(svg2);
    free(json);
    free(json2);
}
