/*
 * Pictures of simulated timelines: an SVG drawing (ranks as rows, ops as
 * coloured boxes, in the spirit of the upstream DualPipe README figure) and
 * Chrome trace JSON (Perfetto, chrome://tracing).
 *
 * Both writers run the same emission code twice when asked: once counting
 * (buf == NULL) and once writing, so the size query and the output cannot
 * disagree. Numbers are formatted without the C library's locale (a host
 * program that sets LC_NUMERIC to a comma locale must not break the XML or
 * the JSON), and every text that comes from the caller is escaped.
 */
#include "pipe_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Output: a bounded writer that keeps counting past its end                 */
/* ------------------------------------------------------------------------ */

typedef struct out {
    char *buf;  /* NULL: count only */
    size_t cap; /* bytes of buf */
    size_t len; /* bytes produced so far; may exceed cap */
} out;

static void put_n(out *o, const char *s, size_t n) {
    if (o->buf && o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len = o->len + n < o->len ? SIZE_MAX : o->len + n;
}

static void put(out *o, const char *s) { put_n(o, s, strlen(s)); }

/* Short fragments with integer and string conversions only (no %f/%g: those
 * follow the locale; doubles go through num()). */
static void putf(out *o, const char *fmt, ...) DINF_PRINTF(2, 3);
static void putf(out *o, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put_n(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ------------------------------------------------------------------------ */
/* Locale-independent numbers                                                */
/* ------------------------------------------------------------------------ */

typedef struct numstr {
    char s[40];
} numstr;

/* x (finite) with up to `digits` significant digits, shortest form, '.' as
 * the decimal point whatever LC_NUMERIC says. */
static numstr num_sig(double x, int digits) {
    char raw[64];
    numstr r;
    snprintf(raw, sizeof raw, "%.*g", digits, x);
    /* Only digits, sign and exponent are ours; any other run of bytes is the
     * locale's decimal point. */
    size_t j = 0;
    int in_point = 0;
    for (const char *p = raw; *p && j + 1 < sizeof r.s; p++) {
        char c = *p;
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == 'E') {
            r.s[j++] = c;
            in_point = 0;
        } else if (!in_point) {
            r.s[j++] = '.';
            in_point = 1;
        }
    }
    r.s[j] = '\0';
    return r;
}

/* The shortest form of x that reads back as x (for messages). */
static numstr num_exact(double x) {
    for (int digits = 1; digits < 17; digits++) {
        char raw[64];
        snprintf(raw, sizeof raw, "%.*g", digits, x);
        if (strtod(raw, NULL) == x) /* both in the same locale */
            return num_sig(x, digits);
    }
    return num_sig(x, 17);
}

/* A coordinate in pixels: two decimals, trailing zeros dropped. */
static numstr num_px(double x) {
    numstr r;
    long long hundredths = llround(x * 100.0);
    int neg = hundredths < 0;
    unsigned long long a = neg ? 0ull - (unsigned long long)hundredths
                               : (unsigned long long)hundredths;
    unsigned long long whole = a / 100, frac = a % 100;
    if (frac == 0)
        snprintf(r.s, sizeof r.s, "%s%llu", neg ? "-" : "", whole);
    else if (frac % 10 == 0)
        snprintf(r.s, sizeof r.s, "%s%llu.%llu", neg ? "-" : "", whole, frac / 10);
    else
        snprintf(r.s, sizeof r.s, "%s%llu.%02llu", neg ? "-" : "", whole, frac);
    return r;
}

#define PX(x) (num_px(x).s)

/* ------------------------------------------------------------------------ */
/* Escaping caller text                                                      */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if the bytes
 * there are not one (overlong forms, surrogates, > U+10FFFF, truncation).
 * *cp receives the code point. */
static int utf8_next(const unsigned char *s, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int n;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return n;
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Text content / attribute value of XML 1.0: markup characters as entities;
 * characters XML cannot carry at all (most C0 controls, U+FFFE/U+FFFF) and
 * malformed UTF-8 as U+FFFD. */
static void put_xml(out *o, const char *text) {
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        uint32_t cp;
        int n = utf8_next(p, &cp);
        if (n == 0) {
            put(o, REPLACEMENT);
            p++;
            continue;
        }
        switch (cp) {
        case '&': put(o, "&amp;"); break;
        case '<': put(o, "&lt;"); break;
        case '>': put(o, "&gt;"); break;
        case '"': put(o, "&quot;"); break;
        case '\'': put(o, "&#39;"); break;
        default:
            if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0xFFFE ||
                cp == 0xFFFF)
                put(o, REPLACEMENT);
            else
                put_n(o, (const char *)p, (size_t)n);
        }
        p += n;
    }
}

/* The inside of a JSON string (RFC 8259): quote, backslash and controls
 * escaped, malformed UTF-8 as U+FFFD. */
static void put_json(out *o, const char *text) {
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        uint32_t cp;
        int n = utf8_next(p, &cp);
        if (n == 0) {
            put(o, "\\ufffd");
            p++;
            continue;
        }
        switch (cp) {
        case '"': put(o, "\\\""); break;
        case '\\': put(o, "\\\\"); break;
        case '\n': put(o, "\\n"); break;
        case '\r': put(o, "\\r"); break;
        case '\t': put(o, "\\t"); break;
        default:
            if (cp < 0x20)
                putf(o, "\\u%04x", (unsigned)cp);
            else
                put_n(o, (const char *)p, (size_t)n);
        }
        p += n;
    }
}

/* Code points of text (malformed bytes count one each), for width guesses. */
static size_t text_chars(const char *text) {
    size_t count = 0;
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        uint32_t cp;
        int n = utf8_next(p, &cp);
        p += n ? n : 1;
        count++;
    }
    return count;
}

/* ------------------------------------------------------------------------ */
/* Argument checks shared by both writers                                    */
/* ------------------------------------------------------------------------ */

static const char *kind_name(int32_t type) {
    switch (type) {
    case DINF_PIPE_OP_F: return "F";
    case DINF_PIPE_OP_B: return "B";
    case DINF_PIPE_OP_I: return "I";
    case DINF_PIPE_OP_W: return "W";
    case DINF_PIPE_OP_FB: return "FB";
    default: return NULL;
    }
}

static dinf_status check_events(const char *func, const dinf_pipe_event *events,
                                int64_t num_events, int32_t num_ranks, size_t *written) {
    if (!written)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "written is NULL");
    if (num_events < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_events=%lld is negative",
                          (long long)num_events);
    if (num_events > 0 && !events)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "events is NULL but num_events=%lld", (long long)num_events);
    if (num_ranks < 1 || num_ranks > DINF__PIPE_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_ranks=%d must be in [1, %d]",
                          num_ranks, DINF__PIPE_MAX);
    for (int64_t i = 0; i < num_events; i++) {
        const dinf_pipe_event *e = &events[i];
        const dinf_pipe_op *op = &e->op;
        long long k = (long long)i;
        if (e->rank < 0 || e->rank >= num_ranks)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld].rank=%d is not in [0, num_ranks=%d)", k, e->rank,
                              num_ranks);
        if (!isfinite(e->start) || !isfinite(e->end))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld] (rank %d): start and end must be finite (start is "
                              "%s, end is %s)",
                              k, e->rank, isfinite(e->start) ? "finite" : "not",
                              isfinite(e->end) ? "finite" : "not");
        if (e->start < 0 || e->end < e->start)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld] (rank %d): need 0 <= start <= end, got start=%s "
                              "end=%s",
                              k, e->rank, num_exact(e->start).s, num_exact(e->end).s);
        if (!kind_name(op->type))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld].op.type=%d is not a compute op (F, B, I, W or F&B)",
                              k, op->type);
        if (op->type != DINF_PIPE_OP_W &&
            (op->dir < 0 || op->dir > 1 || op->mb < 0 || op->mb > DINF__PIPE_MAX))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld].op: dir=%d mb=%d; need dir 0 or 1 and 0 <= mb <= %d",
                              k, op->dir, op->mb, DINF__PIPE_MAX);
        if (op->type == DINF_PIPE_OP_FB &&
            (op->dir2 < 0 || op->dir2 > 1 || op->mb2 < 0 || op->mb2 > DINF__PIPE_MAX))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "events[%lld].op (F&B): dir2=%d mb2=%d; need dir2 0 or 1 and "
                              "0 <= mb2 <= %d",
                              k, op->dir2, op->mb2, DINF__PIPE_MAX);
    }
    return DINF_STATUS_OK;
}

/* Ends a render: NUL-terminate, or fail naming the size needed. */
static dinf_status finish(const char *func, const char *what, out *o, size_t *written) {
    *written = o->len;
    if (o->len == SIZE_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "the %s would not fit in size_t",
                          what);
    if (!o->buf)
        return DINF_STATUS_OK;
    if (o->len >= o->cap) {
        if (o->cap > 0)
            o->buf[0] = '\0';
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "bytes=%zu is too small: the %s needs %zu bytes plus the NUL (pass "
                          "buf=NULL to ask for the size)",
                          o->cap, what, o->len);
    }
    o->buf[o->len] = '\0';
    return DINF_STATUS_OK;
}

/* ------------------------------------------------------------------------ */
/* SVG                                                                       */
/* ------------------------------------------------------------------------ */

/* Colour classes: the kind, and for F/B/I the direction. */
enum { C_F0, C_F1, C_B0, C_B1, C_I0, C_I1, C_W, C_FB, C_COUNT };

static const struct {
    const char *cls;  /* class attribute after "op " / "half " */
    const char *fill; /* box colour */
    const char *ink;  /* label colour on that box */
    const char *name1, *name2; /* legend text with one direction / with two */
} PALETTE[C_COUNT] = {
    [C_F0] = {"F d0", "#f28e2b", "#1b1b1b", "forward", "forward, dir 0"},
    [C_F1] = {"F d1", "#ffd8a8", "#1b1b1b", "forward", "forward, dir 1"},
    [C_B0] = {"B d0", "#3f9b4f", "#ffffff", "backward", "backward, dir 0"},
    [C_B1] = {"B d1", "#b7e0b0", "#1b1b1b", "backward", "backward, dir 1"},
    [C_I0] = {"I d0", "#1f8a9e", "#ffffff", "backward for inputs", "backward for inputs, dir 0"},
    [C_I1] = {"I d1", "#a6dbe3", "#1b1b1b", "backward for inputs", "backward for inputs, dir 1"},
    [C_W] = {"W", "#6a5fc1", "#ffffff", "backward for weights", "backward for weights"},
    [C_FB] = {"FB", "none", "#1b1b1b", "overlapped forward & backward",
              "overlapped forward & backward"},
};

static int colour_of(int32_t type, int32_t dir) {
    switch (type) {
    case DINF_PIPE_OP_F: return dir ? C_F1 : C_F0;
    case DINF_PIPE_OP_B: return dir ? C_B1 : C_B0;
    case DINF_PIPE_OP_I: return dir ? C_I1 : C_I0;
    case DINF_PIPE_OP_W: return C_W;
    default: return C_FB;
    }
}

/* Geometry, in pixels. */
#define FONT "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"
#define MARGIN_LEFT 78.0   /* rank labels */
#define MARGIN_RIGHT 92.0  /* idle column */
#define ROW_PITCH 28.0
#define BOX_HEIGHT 22.0
#define LABEL_FONT 11.0
#define DIGIT_EM 0.62      /* advance of a digit in DejaVu Sans, in em */
#define MIN_LABEL_FONT 5.0
#define MIN_OP_PX 24.0     /* the shortest op (or F&B half) gets at least this... */
#define PLOT_MIN_PX 640.0  /* ...within these bounds of the plot's width */
#define PLOT_MAX_PX 2400.0

typedef struct svg_layout {
    double makespan;   /* latest end of any op */
    double axis_end;   /* time axis 0 .. axis_end: makespan, or 1 if that is 0 */
    double px_per_unit;
    double plot_x, plot_w;
    double width, height;
    double title_y, subtitle_y;
    double legend_y;   /* first legend row's centre */
    int legend_rows;
    double legend_x[C_COUNT], legend_dy[C_COUNT]; /* per present class */
    double rows_y;     /* top of rank 0's row */
    double axis_y;
    double tick_step;
    int present[C_COUNT];
    int two_dirs;
} svg_layout;

static double legend_item_width(int c, int two_dirs) {
    const char *name = two_dirs ? PALETTE[c].name2 : PALETTE[c].name1;
    double swatch = c == C_FB ? 32.0 : 16.0;
    return swatch + 6.0 + 6.6 * (double)strlen(name) + 22.0;
}

/* 1, 2 or 5 times a power of ten, >= raw. */
static double nice_step(double raw) {
    if (!(raw > 0) || !isfinite(raw))
        return 1.0;
    double p = pow(10.0, floor(log10(raw)));
    for (int i = 0; i < 4; i++) {
        double m[] = {1.0, 2.0, 5.0, 10.0};
        if (m[i] * p >= raw * (1 - 1e-12))
            return m[i] * p;
    }
    return 10.0 * p;
}

static void svg_layout_compute(svg_layout *L, const dinf_pipe_event *ev, int64_t n, int32_t R,
                               const char *title) {
    memset(L, 0, sizeof *L);
    double shortest = INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const dinf_pipe_op *op = &ev[i].op;
        double d = ev[i].end - ev[i].start;
        if (op->type == DINF_PIPE_OP_FB) {
            d *= 0.5;
            L->present[colour_of(DINF_PIPE_OP_F, op->dir)] = 1;
            L->present[colour_of(DINF_PIPE_OP_B, op->dir2)] = 1;
            if (op->dir2 == 1)
                L->two_dirs = 1;
        }
        L->present[colour_of(op->type, op->dir)] = 1;
        if (op->type != DINF_PIPE_OP_W && op->dir == 1)
            L->two_dirs = 1;
        if (ev[i].end > L->makespan)
            L->makespan = ev[i].end;
        if (d > 0 && d < shortest)
            shortest = d;
    }
    /* A positive span below 1e-100 would make the scale infinite: draw such
     * a timeline on a 1e-100 span instead (ops shrink, coordinates stay finite). */
    double span = L->makespan > 0 ? fmax(L->makespan, 1e-100) : 1.0;
    L->axis_end = span;
    double want = isfinite(shortest) ? span / shortest * MIN_OP_PX : PLOT_MIN_PX;
    L->plot_w = fmin(PLOT_MAX_PX, fmax(PLOT_MIN_PX, want));
    L->px_per_unit = L->plot_w / span;
    L->plot_x = MARGIN_LEFT;
    L->width = MARGIN_LEFT + L->plot_w + MARGIN_RIGHT;
    if (title) {
        double title_w = 20.0 + 11.0 * (double)text_chars(title);
        if (title_w > L->width)
            L->width = title_w;
    }

    L->title_y = 30.0;
    L->subtitle_y = title ? 50.0 : 24.0;
    /* Legend: present classes left to right, wrapping at the picture's width. */
    double x = L->plot_x, dy = 0.0;
    L->legend_rows = 0;
    for (int c = 0; c < C_COUNT; c++) {
        if (!L->present[c])
            continue;
        double w = legend_item_width(c, L->two_dirs);
        if (L->legend_rows == 0)
            L->legend_rows = 1;
        else if (x + w > L->width - 8.0 && x > L->plot_x) {
            x = L->plot_x;
            dy += 22.0;
            L->legend_rows++;
        }
        L->legend_x[c] = x;
        L->legend_dy[c] = dy;
        x += w;
    }
    L->legend_y = L->subtitle_y + 26.0;
    L->rows_y = L->legend_y + 22.0 * (L->legend_rows > 0 ? L->legend_rows : 0) + 14.0;
    L->axis_y = L->rows_y + ROW_PITCH * R + 6.0;
    L->height = L->axis_y + 48.0;
    /* Ticks at least 56 px apart. */
    L->tick_step = nice_step(56.0 / L->px_per_unit);
}

static void svg_box_label(out *o, double x, double w, double y, const char *text,
                          const char *ink) {
    double chars = (double)strlen(text);
    double font = fmin(LABEL_FONT, (w - 3.0) / (DIGIT_EM * chars));
    if (font < MIN_LABEL_FONT)
        return; /* does not fit: the tooltip still names the op */
    putf(o, "<text x=\"%s\" ", PX(x + w / 2));
    putf(o, "y=\"%s\" ", PX(y + BOX_HEIGHT / 2 + font * 0.36));
    putf(o, "font-size=\"%s\" fill=\"%s\" text-anchor=\"middle\">%s</text>", PX(font), ink, text);
}

static void svg_event(out *o, const svg_layout *L, const dinf_pipe_event *e) {
    const dinf_pipe_op *op = &e->op;
    double x = L->plot_x + e->start * L->px_per_unit;
    double w = fmax((e->end - e->start) * L->px_per_unit, 0.5);
    double y = L->rows_y + ROW_PITCH * e->rank + (ROW_PITCH - BOX_HEIGHT) / 2;
    char name[64], label[16];
    if (dinf_pipe_op_format(op, name, sizeof name) != DINF_STATUS_OK)
        snprintf(name, sizeof name, "?");
    put(o, "<g><title>");
    putf(o, "rank %d: ", e->rank);
    put_xml(o, name); /* "F0.7&B1.3" */
    put(o, ", ");
    put(o, num_sig(e->start, 6).s);
    put(o, " to ");
    put(o, num_sig(e->end, 6).s);
    put(o, "</title>");
    if (op->type == DINF_PIPE_OP_FB) {
        /* One box split in two: the forward half, the backward half, and a
         * shared black border (the upstream figure's "overlapped" cell). */
        int cf = colour_of(DINF_PIPE_OP_F, op->dir), cb = colour_of(DINF_PIPE_OP_B, op->dir2);
        double half = w / 2;
        putf(o, "<rect class=\"half %s\" x=\"%s\" ", PALETTE[cf].cls, PX(x));
        putf(o, "y=\"%s\" width=\"%s\" ", PX(y), PX(half));
        putf(o, "height=\"%s\" fill=\"%s\"/>", PX(BOX_HEIGHT), PALETTE[cf].fill);
        putf(o, "<rect class=\"half %s\" x=\"%s\" ", PALETTE[cb].cls, PX(x + half));
        putf(o, "y=\"%s\" width=\"%s\" ", PX(y), PX(half));
        putf(o, "height=\"%s\" fill=\"%s\"/>", PX(BOX_HEIGHT), PALETTE[cb].fill);
        putf(o, "<rect class=\"op FB\" x=\"%s\" ", PX(x));
        putf(o, "y=\"%s\" width=\"%s\" ", PX(y), PX(w));
        /* A thinner border on narrow boxes, so that it never hides the colours. */
        putf(o, "height=\"%s\" fill=\"none\" stroke=\"#000000\" ", PX(BOX_HEIGHT));
        putf(o, "stroke-width=\"%s\"/>", PX(fmin(1.6, fmax(0.3, w * 0.04))));
        snprintf(label, sizeof label, "%d", op->mb);
        svg_box_label(o, x, half, y, label, PALETTE[cf].ink);
        snprintf(label, sizeof label, "%d", op->mb2);
        svg_box_label(o, x + half, half, y, label, PALETTE[cb].ink);
    } else {
        int c = colour_of(op->type, op->dir);
        putf(o, "<rect class=\"op %s\" x=\"%s\" ", PALETTE[c].cls, PX(x));
        putf(o, "y=\"%s\" width=\"%s\" ", PX(y), PX(w));
        putf(o, "height=\"%s\" fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>",
             PX(BOX_HEIGHT), PALETTE[c].fill);
        if (op->type == DINF_PIPE_OP_W)
            snprintf(label, sizeof label, "W");
        else
            snprintf(label, sizeof label, "%d", op->mb);
        svg_box_label(o, x, w, y, label, PALETTE[c].ink);
    }
    put(o, "</g>\n");
}

static void svg_legend(out *o, const svg_layout *L) {
    put(o, "<g class=\"legend\" font-size=\"12\" fill=\"#333333\">\n");
    for (int c = 0; c < C_COUNT; c++) {
        if (!L->present[c])
            continue;
        double x = L->legend_x[c], yc = L->legend_y + L->legend_dy[c];
        double top = yc - 8.0;
        double swatch = 16.0;
        if (c == C_FB) {
            /* A split swatch in the most common pair's colours. */
            int cf = L->present[C_F0] ? C_F0 : C_F1;
            int cb = L->two_dirs && L->present[C_B1] ? C_B1 : C_B0;
            swatch = 32.0;
            putf(o, "<rect class=\"key half\" x=\"%s\" ", PX(x));
            putf(o, "y=\"%s\" width=\"16\" height=\"16\" fill=\"%s\"/>", PX(top),
                 PALETTE[cf].fill);
            putf(o, "<rect class=\"key half\" x=\"%s\" ", PX(x + 16));
            putf(o, "y=\"%s\" width=\"16\" height=\"16\" fill=\"%s\"/>", PX(top),
                 PALETTE[cb].fill);
            putf(o, "<rect class=\"key FB\" x=\"%s\" ", PX(x));
            putf(o, "y=\"%s\" width=\"32\" height=\"16\" fill=\"none\" stroke=\"#000000\" "
                    "stroke-width=\"1.6\"/>",
                 PX(top));
        } else {
            putf(o, "<rect class=\"key %s\" x=\"%s\" ", PALETTE[c].cls, PX(x));
            putf(o, "y=\"%s\" width=\"16\" height=\"16\" fill=\"%s\"/>", PX(top),
                 PALETTE[c].fill);
        }
        putf(o, "<text x=\"%s\" ", PX(x + swatch + 6));
        putf(o, "y=\"%s\">", PX(yc + 4.5));
        put_xml(o, L->two_dirs ? PALETTE[c].name2 : PALETTE[c].name1);
        put(o, "</text>\n");
    }
    put(o, "</g>\n");
}

static void svg_write(out *o, const svg_layout *L, const dinf_pipe_event *ev, int64_t n,
                      int32_t R, const char *title, const double *busy) {
    put(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    putf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%s\" ", PX(L->width));
    putf(o, "height=\"%s\" ", PX(L->height));
    putf(o, "viewBox=\"0 0 %s ", PX(L->width));
    putf(o, "%s\" font-family=\"" FONT "\">\n", PX(L->height));
    putf(o, "<rect class=\"bg\" x=\"0\" y=\"0\" width=\"%s\" ", PX(L->width));
    putf(o, "height=\"%s\" fill=\"#ffffff\"/>\n", PX(L->height));
    if (title) {
        put(o, "<title>");
        put_xml(o, title);
        put(o, "</title>\n");
        putf(o, "<text class=\"title\" x=\"%s\" y=\"%s\" font-size=\"18\" font-weight=\"bold\" "
                "fill=\"#111111\">",
             PX(L->plot_x), PX(L->title_y));
        put_xml(o, title);
        put(o, "</text>\n");
    }
    putf(o, "<text class=\"subtitle\" x=\"%s\" y=\"%s\" font-size=\"12\" fill=\"#555555\">",
         PX(L->plot_x), PX(L->subtitle_y));
    putf(o, "%lld ops on %d rank%s, makespan ", (long long)n, R, R == 1 ? "" : "s");
    put(o, num_sig(L->makespan, 6).s);
    put(o, " cost units; idle = makespan - busy</text>\n");
    svg_legend(o, L);

    /* Rows: background stripe, rank label, idle time. */
    put(o, "<g class=\"rows\" font-size=\"12\">\n");
    putf(o, "<text x=\"%s\" ", PX(L->plot_x + L->plot_w + 10));
    putf(o, "y=\"%s\" fill=\"#555555\">idle</text>\n", PX(L->rows_y - 5));
    for (int32_t r = 0; r < R; r++) {
        double y = L->rows_y + ROW_PITCH * r;
        putf(o, "<rect class=\"row\" x=\"%s\" ", PX(L->plot_x));
        putf(o, "y=\"%s\" width=\"%s\" ", PX(y), PX(L->plot_w));
        putf(o, "height=\"%s\" fill=\"%s\"/>", PX(ROW_PITCH), r % 2 ? "#ffffff" : "#f3f4f6");
        putf(o, "<text x=\"%s\" ", PX(L->plot_x - 10));
        putf(o, "y=\"%s\" text-anchor=\"end\" fill=\"#111111\">rank %d</text>",
             PX(y + ROW_PITCH / 2 + 4.5), r);
        putf(o, "<text x=\"%s\" ", PX(L->plot_x + L->plot_w + 10));
        putf(o, "y=\"%s\" fill=\"#333333\">", PX(y + ROW_PITCH / 2 + 4.5));
        put(o, num_sig(L->makespan - busy[r], 6).s);
        put(o, "</text>\n");
    }
    put(o, "</g>\n");

    /* Grid lines behind the ops. */
    double rows_bottom = L->rows_y + ROW_PITCH * R;
    put(o, "<g class=\"grid\" stroke=\"#d9dce1\" stroke-width=\"1\">\n");
    for (int64_t k = 0; k <= 100000; k++) {
        double t = (double)k * L->tick_step;
        if (t > L->axis_end * (1 + 1e-9))
            break;
        double x = L->plot_x + t * L->px_per_unit;
        putf(o, "<line x1=\"%s\" y1=\"%s\" ", PX(x), PX(L->rows_y));
        putf(o, "x2=\"%s\" y2=\"%s\"/>\n", PX(x), PX(rows_bottom));
    }
    put(o, "</g>\n");

    put(o, "<g class=\"ops\">\n");
    for (int64_t i = 0; i < n; i++)
        svg_event(o, L, &ev[i]);
    put(o, "</g>\n");

    /* Time axis. */
    put(o, "<g class=\"axis\" font-size=\"11\" fill=\"#333333\">\n");
    putf(o, "<line x1=\"%s\" y1=\"%s\" ", PX(L->plot_x), PX(L->axis_y));
    putf(o, "x2=\"%s\" y2=\"%s\" stroke=\"#333333\"/>\n", PX(L->plot_x + L->plot_w),
         PX(L->axis_y));
    for (int64_t k = 0; k <= 100000; k++) {
        double t = (double)k * L->tick_step;
        if (t > L->axis_end * (1 + 1e-9))
            break;
        double x = L->plot_x + t * L->px_per_unit;
        putf(o, "<line x1=\"%s\" y1=\"%s\" ", PX(x), PX(L->axis_y));
        putf(o, "x2=\"%s\" y2=\"%s\" stroke=\"#333333\"/>", PX(x), PX(L->axis_y + 5));
        putf(o, "<text x=\"%s\" y=\"%s\" text-anchor=\"middle\">", PX(x), PX(L->axis_y + 18));
        put(o, num_sig(t, 6).s);
        put(o, "</text>\n");
    }
    putf(o, "<text x=\"%s\" ", PX(L->plot_x + L->plot_w / 2));
    putf(o, "y=\"%s\" text-anchor=\"middle\" fill=\"#555555\">time (cost units)</text>\n",
         PX(L->axis_y + 38));
    put(o, "</g>\n</svg>\n");
}

DINF_API dinf_status dinf_pipe_render_svg(const dinf_pipe_event *events, int64_t num_events,
                                          int32_t num_ranks, const char *title, char *buf,
                                          size_t bytes, size_t *written) {
    dinf_status st = check_events(__func__, events, num_events, num_ranks, written);
    if (st != DINF_STATUS_OK)
        return st;
    double *busy = calloc((size_t)num_ranks, sizeof *busy);
    if (!busy)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "no memory for %d per-rank totals",
                         num_ranks);
    for (int64_t i = 0; i < num_events; i++)
        busy[events[i].rank] += events[i].end - events[i].start;
    svg_layout L;
    svg_layout_compute(&L, events, num_events, num_ranks, title);
    out o = {buf, buf ? bytes : 0, 0};
    svg_write(&o, &L, events, num_events, num_ranks, title, busy);
    free(busy);
    return finish(__func__, "SVG", &o, written);
}

/* ------------------------------------------------------------------------ */
/* Chrome trace JSON                                                         */
/* ------------------------------------------------------------------------ */

DINF_API dinf_status dinf_pipe_render_trace(const dinf_pipe_event *events, int64_t num_events,
                                            int32_t num_ranks, const char *title,
                                            double time_unit_us, char *buf, size_t bytes,
                                            size_t *written) {
    dinf_status st = check_events(__func__, events, num_events, num_ranks, written);
    if (st != DINF_STATUS_OK)
        return st;
    if (!(time_unit_us > 0) || !isfinite(time_unit_us))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "time_unit_us=%s must be finite and > 0",
                         isfinite(time_unit_us) ? num_exact(time_unit_us).s : "not finite");
    for (int64_t i = 0; i < num_events; i++)
        if (!isfinite(events[i].end * time_unit_us))
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "events[%lld].end=%s times time_unit_us=%s overflows a double",
                             (long long)i, num_exact(events[i].end).s,
                             num_exact(time_unit_us).s);

    out o = {buf, buf ? bytes : 0, 0};
    put(&o, "{\"traceEvents\":[\n");
    put(&o, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"");
    put_json(&o, title ? title : "pipeline");
    put(&o, "\"}}");
    for (int32_t r = 0; r < num_ranks; r++) {
        putf(&o,
             ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
             "\"args\":{\"name\":\"rank %d\"}}",
             r, r);
        putf(&o,
             ",\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":0,\"tid\":%d,"
             "\"args\":{\"sort_index\":%d}}",
             r, r);
    }
    for (int64_t i = 0; i < num_events; i++) {
        const dinf_pipe_event *e = &events[i];
        const dinf_pipe_op *op = &e->op;
        char name[64];
        if (dinf_pipe_op_format(op, name, sizeof name) != DINF_STATUS_OK)
            snprintf(name, sizeof name, "?");
        /* dur from the scaled ends, so that ts + dur is the scaled end. */
        double ts = e->start * time_unit_us, te = e->end * time_unit_us;
        putf(&o, ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":", name,
             kind_name(op->type));
        put(&o, num_sig(ts, 15).s);
        put(&o, ",\"dur\":");
        put(&o, num_sig(te - ts, 15).s);
        putf(&o, ",\"pid\":0,\"tid\":%d,\"args\":{\"op_index\":%lld", e->rank,
             (long long)e->op_index);
        if (op->type != DINF_PIPE_OP_W)
            putf(&o, ",\"dir\":%d,\"mb\":%d", op->dir, op->mb);
        if (op->type == DINF_PIPE_OP_FB)
            putf(&o, ",\"dir2\":%d,\"mb2\":%d", op->dir2, op->mb2);
        put(&o, "}}");
    }
    put(&o, "\n],\"displayTimeUnit\":\"ms\"}\n");
    return finish(__func__, "trace", &o, written);
}
