/* The text notation of ops: printing, parsing, and field checks. */
#include "pipe_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

DINF_API dinf_status dinf_pipe_op_format(const dinf_pipe_op *op, char *buf, size_t bytes) {
    if (!op)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "op is NULL");
    if (!buf)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "buf is NULL");
    int n;
    switch (op->type) {
    case DINF_PIPE_OP_F: n = snprintf(buf, bytes, "F%d.%d", op->dir, op->mb); break;
    case DINF_PIPE_OP_B: n = snprintf(buf, bytes, "B%d.%d", op->dir, op->mb); break;
    case DINF_PIPE_OP_I: n = snprintf(buf, bytes, "I%d.%d", op->dir, op->mb); break;
    case DINF_PIPE_OP_W: n = snprintf(buf, bytes, "W"); break;
    case DINF_PIPE_OP_FB:
        n = snprintf(buf, bytes, "F%d.%d&B%d.%d", op->dir, op->mb, op->dir2, op->mb2);
        break;
    case DINF_PIPE_OP_SEND_ACT:
    case DINF_PIPE_OP_SEND_GRAD:
    case DINF_PIPE_OP_RECV_ACT:
    case DINF_PIPE_OP_RECV_GRAD: {
        char verb = (op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_SEND_GRAD) ? 'S'
                                                                                          : 'R';
        char what = (op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_RECV_ACT) ? 'f'
                                                                                         : 'b';
        n = snprintf(buf, bytes, "%c%c%d.%d@%d", verb, what, op->dir, op->mb, op->peer);
        break;
    }
    case DINF_PIPE_OP_COMMIT: n = snprintf(buf, bytes, "|"); break;
    default:
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "op->type=%d is not a dinf_pipe_op_type",
                         op->type);
    }
    if (n < 0 || (size_t)n >= bytes)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "bytes=%zu is too small for the op's %d characters and NUL", bytes, n);
    return DINF_STATUS_OK;
}

/* Parse a decimal in [0, 2^30] at *p; advances *p. -1 if none. */
static int32_t parse_number(const char **p) {
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return -1;
    int64_t v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > (1 << 30))
            return -1;
        s++;
    }
    *p = s;
    return (int32_t)v;
}

/* "<dir>.<mb>" */
static int parse_pair(const char **p, int32_t *dir, int32_t *mb) {
    *dir = parse_number(p);
    if (*dir < 0 || **p != '.')
        return -1;
    (*p)++;
    *mb = parse_number(p);
    return *mb < 0 ? -1 : 0;
}

static dinf_status parse_error(const char *text, const char *at, const char *expect) {
    return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, "dinf_pipe_op_parse",
                      "\"%.40s\": at offset %d: expected %s", text, (int)(at - text), expect);
}

DINF_API dinf_status dinf_pipe_op_parse(const char *text, dinf_pipe_op *op) {
    if (!text)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "text is NULL");
    if (!op)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "op is NULL");
    dinf_pipe_op o = {-1, -1, -1, -1, -1, -1};
    const char *p = text;
    if (strcmp(text, "|") == 0) {
        o.type = DINF_PIPE_OP_COMMIT;
    } else if (strcmp(text, "W") == 0) {
        o.type = DINF_PIPE_OP_W;
    } else if (*p == 'S' || *p == 'R') {
        int send = *p++ == 'S';
        if (*p != 'f' && *p != 'b')
            return parse_error(text, p, "'f' (activation) or 'b' (gradient)");
        int act = *p++ == 'f';
        o.type = send ? (act ? DINF_PIPE_OP_SEND_ACT : DINF_PIPE_OP_SEND_GRAD)
                      : (act ? DINF_PIPE_OP_RECV_ACT : DINF_PIPE_OP_RECV_GRAD);
        if (parse_pair(&p, &o.dir, &o.mb))
            return parse_error(text, p, "<direction>.<micro-batch>");
        if (*p++ != '@')
            return parse_error(text, p - 1, "'@<peer>'");
        if ((o.peer = parse_number(&p)) < 0)
            return parse_error(text, p, "a peer rank");
    } else {
        int bracket = *p == '[';
        p += bracket;
        char c = *p++;
        if (c != 'F' && c != 'B' && c != 'I')
            return parse_error(text, p - 1, "F, B, I, W, S, R or |");
        if (parse_pair(&p, &o.dir, &o.mb))
            return parse_error(text, p, "<direction>.<micro-batch>");
        o.type = c == 'F' ? DINF_PIPE_OP_F : c == 'B' ? DINF_PIPE_OP_B : DINF_PIPE_OP_I;
        if (*p == '&') {
            if (c != 'F')
                return parse_error(text, p, "the end of the op ('&' follows a forward only)");
            p++;
            if (*p++ != 'B')
                return parse_error(text, p - 1, "'B' after '&'");
            if (parse_pair(&p, &o.dir2, &o.mb2))
                return parse_error(text, p, "<direction>.<micro-batch>");
            o.type = DINF_PIPE_OP_FB;
        } else if (bracket) {
            return parse_error(text, p, "'&' inside brackets");
        }
        if (bracket && *p++ != ']')
            return parse_error(text, p - 1, "']'");
        if (*p)
            return parse_error(text, p, "the end of the op");
    }
    if (o.type == DINF_PIPE_OP_SEND_ACT || o.type == DINF_PIPE_OP_RECV_ACT ||
        o.type == DINF_PIPE_OP_SEND_GRAD || o.type == DINF_PIPE_OP_RECV_GRAD) {
        if (*p)
            return parse_error(text, p, "the end of the op");
    }
    *op = o;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_pipe_stream_parse(const char *text, dinf_pipe_op *ops, int64_t capacity,
                                            int64_t *num_ops) {
    if (!text)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "text is NULL");
    if (!num_ops)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_ops is NULL");
    if (ops && capacity < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "capacity=%lld is negative",
                         (long long)capacity);
    int64_t n = 0;
    const char *p = text;
    char token[64];
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t len = 0;
        while (p[len] && !isspace((unsigned char)p[len]))
            len++;
        if (len >= sizeof token)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "token %lld (\"%.20s...\") is too long",
                             (long long)n, p);
        memcpy(token, p, len);
        token[len] = '\0';
        dinf_pipe_op op;
        if (dinf_pipe_op_parse(token, &op) != DINF_STATUS_OK) {
            char inner[DINF_ERROR_MESSAGE_MAX];
            snprintf(inner, sizeof inner, "%s", dinf_last_error());
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "token %lld: %s", (long long)n, inner);
        }
        if (ops && n < capacity)
            ops[n] = op;
        n++;
        p += len;
    }
    *num_ops = n;
    if (ops && n > capacity)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "capacity=%lld is smaller than the %lld ops of the text",
                         (long long)capacity, (long long)n);
    return DINF_STATUS_OK;
}

int dinf__pipe_op_check(const dinf__pipe_shape *s, int32_t rank, const dinf_pipe_op *op,
                        char *why, size_t why_bytes) {
    const int32_t D = s->num_dirs, M = s->mb_per_dir;
#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(why, why_bytes, __VA_ARGS__);                                                     \
        return -1;                                                                                 \
    } while (0)
    /* Fields an op does not use must be -1 (dinf_pipe_op's contract). */
    const int uses_dir = op->type != DINF_PIPE_OP_COMMIT && op->type != DINF_PIPE_OP_W;
    const int uses_second = op->type == DINF_PIPE_OP_FB;
    const int uses_peer = op->type >= DINF_PIPE_OP_SEND_ACT && op->type <= DINF_PIPE_OP_RECV_GRAD;
    if ((!uses_dir && (op->dir != -1 || op->mb != -1)) ||
        (!uses_second && (op->dir2 != -1 || op->mb2 != -1)) || (!uses_peer && op->peer != -1))
        BAD("type %d carries a field it does not use (dir %d mb %d dir2 %d mb2 %d peer %d): unused "
            "fields must be -1",
            op->type, op->dir, op->mb, op->dir2, op->mb2, op->peer);
    switch (op->type) {
    case DINF_PIPE_OP_COMMIT:
    case DINF_PIPE_OP_W: return 0;
    case DINF_PIPE_OP_FB:
        if (op->dir2 < 0 || op->dir2 >= D || op->mb2 < 0 || op->mb2 >= M)
            BAD("the backward half of an F&B names direction %d micro-batch %d, outside "
                "%d direction(s) of %d micro-batches",
                op->dir2, op->mb2, D, M);
        /* fall through */
    case DINF_PIPE_OP_F:
    case DINF_PIPE_OP_B:
    case DINF_PIPE_OP_I:
        if (op->dir < 0 || op->dir >= D || op->mb < 0 || op->mb >= M)
            BAD("direction %d micro-batch %d is outside %d direction(s) of %d micro-batches",
                op->dir, op->mb, D, M);
        return 0;
    case DINF_PIPE_OP_SEND_ACT:
    case DINF_PIPE_OP_RECV_ACT:
    case DINF_PIPE_OP_SEND_GRAD:
    case DINF_PIPE_OP_RECV_GRAD: {
        if (op->dir < 0 || op->dir >= D || op->mb < 0 || op->mb >= M)
            BAD("direction %d micro-batch %d is outside %d direction(s) of %d micro-batches",
                op->dir, op->mb, D, M);
        /* Activations flow prev -> next, gradients next -> prev. */
        int to_next = op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_RECV_GRAD;
        int expect = to_next ? dinf__pipe_next_rank(s, op->dir, rank)
                             : dinf__pipe_prev_rank(s, op->dir, rank);
        int at_end = to_next ? dinf__pipe_last_stage(s, op->dir, rank)
                             : dinf__pipe_first_stage(s, op->dir, rank);
        if (at_end)
            BAD("rank %d is the %s stage of direction %d: it has no peer for this message", rank,
                to_next ? "last" : "first", op->dir);
        if (op->peer != expect)
            BAD("peer %d is not rank %d's neighbour for this message in direction %d (expected %d)",
                op->peer, rank, op->dir, expect);
        return 0;
    }
    default: BAD("type %d is not a dinf_pipe_op_type", op->type);
    }
#undef BAD
}
