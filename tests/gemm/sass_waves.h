/*
 * A check of the fast FP8 GEMM rung's math loop on its SASS (nvdisasm text),
 * for what the host emulator cannot see (notes/review-gemm-bm256-pdl.md, T2
 * and E1): in the emulator fence_operand is a no-op and the host compiler
 * cannot move a read across the emulated wgmma, so a reordering of
 * accumulator reads or writes across a wgmma by NVVM or ptxas, or a stage
 * release moved before the last wave, would only show on the GPU.
 *
 * What the compiled loop looks like (nvcc/NVRTC 13.0, BLOCK_M 256, BLOCK_N
 * 128: two 64-row waves per k block sharing the accumulators R24..R87):
 *
 *   .L_x_15:                                      <- k-block loop head
 *       SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR19], R28 ;   (full barrier)
 *       LDS x4 (B1: both waves' A scales)
 *       WARPGROUP.ARRIVE ;                        <- window of wave 0
 *       QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR32], RZ, !UPT ;  (x4)
 *       WARPGROUP.DEPBAR.LE gsb0, 0x0 ;           <- end of the window
 *       FFMA ... R24 ... (wave 0's promotion)
 *       WARPGROUP.ARRIVE ; QGMMA x4 ; WARPGROUP.DEPBAR.LE gsb0, 0x0 ;  (wave 1)
 *       @!P0 SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [R221+URZ], RZ ;  (the release)
 *       FFMA ... (wave 1's promotion)
 *       @!P1 BRA `(.L_x_15) ;                     <- back edge
 *
 * The rules (sass_check_waves):
 *  - a window runs from a WARPGROUP.ARRIVE to the next WARPGROUP.DEPBAR; it
 *    holds qgmma_per_wave QGMMA with one destination range, parsed from the
 *    instruction: Rd .. Rd + N/2 - 1 for QGMMA.64xNx32 (N/2 float32 per
 *    thread); every QGMMA of the text lies in a window;
 *  - no other instruction in a window names a register of that range (a
 *    read or a write while the wgmma may still read or write it), and no
 *    control flow enters or leaves a window (no branch, exit or call inside
 *    it, no label inside it that a branch targets), so the straight-line
 *    order is the execution order;
 *  - the windows form one loop (the first backward branch after the last
 *    window, to a label at or before the first window: the k-block loop)
 *    whose body holds a multiple of `waves` windows, a k block being `waves`
 *    consecutive windows;
 *  - per k block exactly one SYNCS.ARRIVE (the per-warp arrival on the empty
 *    barrier, remote with the multicast), after the DEPBAR of its last wave
 *    and before the next k block's first ARRIVE (or the back edge); none
 *    elsewhere in the body;
 *  - no shared-memory load (LDS*) between a k block's first ARRIVE and its
 *    release (B1: the A scales are read before the first wgmma).
 * A violation is reported in err (the rule and the instruction); the
 * function returns 0 when every rule holds.
 */
#ifndef DINF_SASS_WAVES_H
#define DINF_SASS_WAVES_H

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int is_label;
    char label[64];  /* is_label: the label's name; else a branch's target or "" */
    char op[64];     /* opcode with its modifiers, e.g. "QGMMA.64x128x32.F32.E4M3.E4M3" */
    char args[256];  /* operands (after the opcode, without the ';') */
    char text[320];  /* the line, trimmed, for messages */
} sass_line;

typedef struct {
    int windows;         /* ARRIVE..DEPBAR windows */
    int k_blocks;        /* windows / waves in the loop body */
    int qgmma;           /* QGMMA instructions */
    int acc_lo, acc_hi;  /* the accumulator registers of the first window */
    int releases;        /* SYNCS.ARRIVE in the loop body */
    int loads_hoisted;   /* LDS in the loop body before its first ARRIVE */
} sass_wave_report;

static inline void sass__trim(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t i = 0;
    while (isspace((unsigned char)s[i]))
        i++;
    memmove(s, s + i, n - i + 1);
}

/* One line of nvdisasm output: 1 instruction, 2 label, 0 anything else. */
static inline int sass__parse_line(const char *line, sass_line *out) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", line);
    sass__trim(buf);
    memset(out, 0, sizeof *out);
    snprintf(out->text, sizeof out->text, "%.*s", (int)sizeof out->text - 1, buf);
    size_t n = strlen(buf);
    if (n > 1 && buf[0] == '.' && buf[n - 1] == ':' && !strchr(buf, ' ')) {
        out->is_label = 1;
        snprintf(out->label, sizeof out->label, "%.*s", (int)(n - 1), buf);
        return 2;
    }
    /* address comment, optional predicate guard, opcode, operands, ';' */
    if (strncmp(buf, "/*", 2) != 0)
        return 0;
    const char *p = strstr(buf, "*/");
    if (!p)
        return 0;
    p += 2;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '@') { /* predicate guard */
        while (*p && !isspace((unsigned char)*p))
            p++;
        while (isspace((unsigned char)*p))
            p++;
    }
    size_t k = 0;
    while (p[k] && !isspace((unsigned char)p[k]) && p[k] != ';')
        k++;
    if (k == 0 || k >= sizeof out->op)
        return 0;
    memcpy(out->op, p, k);
    out->op[k] = '\0';
    p += k;
    while (isspace((unsigned char)*p))
        p++;
    const char *end = strchr(p, ';');
    size_t alen = end ? (size_t)(end - p) : strlen(p);
    if (alen >= sizeof out->args)
        alen = sizeof out->args - 1;
    memcpy(out->args, p, alen);
    out->args[alen] = '\0';
    sass__trim(out->args);
    const char *t = strstr(out->args, "`(");
    if (t) {
        t += 2;
        size_t m = 0;
        while (t[m] && t[m] != ')' && m + 1 < sizeof out->label)
            m++;
        snprintf(out->label, sizeof out->label, "%.*s", (int)m, t);
    }
    return 1;
}

static inline int sass__op_is(const sass_line *l, const char *prefix) {
    return !l->is_label && strncmp(l->op, prefix, strlen(prefix)) == 0;
}

static inline int sass__is_control(const sass_line *l) {
    static const char *ops[] = {"BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BREAK",
                                "BSYNC", "KILL"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t n = strlen(ops[i]);
        if (!l->is_label && strncmp(l->op, ops[i], n) == 0 &&
            (l->op[n] == '\0' || l->op[n] == '.'))
            return 1;
    }
    return 0;
}

/* Does an instruction name a register of [lo, hi]? Registers are "R<n>"
 * tokens (not UR<n>, not RZ); an operand "R<n>.64" spans 2, and every
 * register of an instruction whose opcode has .64 / .WIDE (2) or .128 (4)
 * is taken as that wide (conservative). *hit: the register found. */
static inline int sass__names_register(const sass_line *l, int lo, int hi, int *hit) {
    int width = 1;
    if (strstr(l->op, ".128"))
        width = 4;
    else if (strstr(l->op, ".64") || strstr(l->op, ".WIDE"))
        width = 2;
    const char *a = l->args;
    for (size_t i = 0; a[i]; i++) {
        if (a[i] != 'R' || !isdigit((unsigned char)a[i + 1]))
            continue;
        if (i > 0 && (isalnum((unsigned char)a[i - 1]) || a[i - 1] == '_'))
            continue; /* UR24, SR_..., part of a name */
        char *e;
        const long r = strtol(a + i + 1, &e, 10);
        int w = width;
        if (strncmp(e, ".64", 3) == 0 && w < 2)
            w = 2;
        if (r <= hi && r + w - 1 >= lo) {
            *hit = (int)(r < lo ? lo : r);
            return 1;
        }
    }
    return 0;
}

static inline int sass__fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Check the SASS text of one kernel (see the rules above). waves: the 64-row
 * waves per k block (dinf_fp8_waves(BLOCK_M)); qgmma_per_wave: wgmma per
 * wave (BLOCK_K / 32 = 4). Returns 0, or -1 with err set. */
static inline int sass_check_waves(const char *sass, int waves, int qgmma_per_wave,
                                   sass_wave_report *rep, char *err, size_t errlen) {
    memset(rep, 0, sizeof *rep);
    rep->acc_lo = rep->acc_hi = -1;
    err[0] = '\0';
    /* parse */
    int cap = 1024, count = 0;
    sass_line *ls = (sass_line *)malloc(sizeof *ls * (size_t)cap);
    if (!ls)
        return sass__fail(err, errlen, "out of memory");
    for (const char *p = sass; *p;) {
        const char *nl = strchr(p, '\n');
        const size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        p += len + (nl ? 1 : 0);
        if (count == cap) {
            cap *= 2;
            sass_line *g = (sass_line *)realloc(ls, sizeof *ls * (size_t)cap);
            if (!g) {
                free(ls);
                return sass__fail(err, errlen, "out of memory");
            }
            ls = g;
        }
        if (sass__parse_line(line, &ls[count]))
            count++;
    }
    int rc = 0;
    enum { MAXW = 64 };
    int arrive[MAXW], depbar[MAXW];
    int nw = 0;
    for (int i = 0; i < count; i++)
        rep->qgmma += sass__op_is(&ls[i], "QGMMA");
    /* windows */
    for (int i = 0; i < count && rc == 0; i++) {
        if (!sass__op_is(&ls[i], "WARPGROUP.ARRIVE"))
            continue;
        int j = i + 1;
        while (j < count && !sass__op_is(&ls[j], "WARPGROUP.DEPBAR")) {
            if (sass__op_is(&ls[j], "WARPGROUP.ARRIVE")) {
                rc = sass__fail(err, errlen, "WARPGROUP.ARRIVE without a DEPBAR before the next "
                                "one: %s", ls[i].text);
                break;
            }
            j++;
        }
        if (rc)
            break;
        if (j == count) {
            rc = sass__fail(err, errlen, "WARPGROUP.ARRIVE without a DEPBAR: %s", ls[i].text);
            break;
        }
        /* the DEPBAR must wait for every wgmma group (count 0): with
         * "DEPBAR.LE gsb0, 0x1" a wgmma may still run after it */
        {
            const char *imm = strrchr(ls[j].args, ',');
            while (imm && (*imm == ',' || *imm == ' '))
                imm++;
            if (!imm || strncmp(imm, "0x0", 3) != 0 ||
                (imm[3] != '\0' && imm[3] != ' ' && imm[3] != ';')) {
                rc = sass__fail(err, errlen, "window %d: the DEPBAR does not wait for every wgmma "
                                "group (count 0): %s", nw, ls[j].text);
                break;
            }
        }
        if (nw == MAXW) {
            rc = sass__fail(err, errlen, "more than %d wgmma windows", MAXW);
            break;
        }
        /* the accumulator range of this window's QGMMA */
        int lo = -1, hi = -1, q = 0;
        for (int k = i + 1; k < j; k++) {
            if (!sass__op_is(&ls[k], "QGMMA"))
                continue;
            int bn = 0, d = -1;
            if (sscanf(ls[k].op, "QGMMA.64x%dx32", &bn) != 1 || bn <= 0 ||
                sscanf(ls[k].args, "R%d", &d) != 1)
                rc = sass__fail(err, errlen, "window %d: cannot parse the QGMMA shape and "
                                "destination: %s", nw, ls[k].text);
            else if (q > 0 && (d != lo || d + bn / 2 - 1 != hi))
                rc = sass__fail(err, errlen, "window %d: QGMMA destinations differ (R%d..R%d, "
                                "then %s)", nw, lo, hi, ls[k].text);
            lo = d, hi = d + bn / 2 - 1;
            q++;
            if (rc)
                break;
        }
        if (rc)
            break;
        if (q != qgmma_per_wave) {
            rc = sass__fail(err, errlen, "window %d (%s): %d QGMMA, expected %d", nw, ls[i].text,
                            q, qgmma_per_wave);
            break;
        }
        if (nw == 0)
            rep->acc_lo = lo, rep->acc_hi = hi;
        for (int k = i + 1; k < j && rc == 0; k++) {
            int hit;
            if (ls[k].is_label) {
                for (int b = 0; b < count; b++)
                    if (!ls[b].is_label && ls[b].label[0] && strcmp(ls[b].label, ls[k].label) == 0)
                        rc = sass__fail(err, errlen, "window %d: label %s inside it is the "
                                        "target of %s", nw, ls[k].label, ls[b].text);
                continue;
            }
            if (sass__op_is(&ls[k], "QGMMA"))
                continue;
            if (sass__is_control(&ls[k]))
                rc = sass__fail(err, errlen, "window %d: control flow inside it: %s", nw,
                                ls[k].text);
            else if (sass__names_register(&ls[k], lo, hi, &hit))
                rc = sass__fail(err, errlen, "window %d: %s names R%d of the accumulators "
                                "R%d..R%d between WARPGROUP.ARRIVE and WARPGROUP.DEPBAR", nw,
                                ls[k].text, hit, lo, hi);
        }
        arrive[nw] = i, depbar[nw] = j;
        nw++;
        i = j;
    }
    rep->windows = nw;
    if (rc == 0 && nw == 0)
        rc = sass__fail(err, errlen, "no WARPGROUP.ARRIVE .. DEPBAR window");
    /* every QGMMA inside a window */
    int in_windows = 0;
    for (int w = 0; w < nw; w++)
        for (int k = arrive[w]; k < depbar[w]; k++)
            in_windows += sass__op_is(&ls[k], "QGMMA");
    if (rc == 0 && in_windows != rep->qgmma)
        rc = sass__fail(err, errlen, "%d QGMMA outside the ARRIVE..DEPBAR windows",
                        rep->qgmma - in_windows);
    /* the k-block loop: the first backward branch after the last window */
    int head = -1, back = -1;
    for (int k = nw ? depbar[nw - 1] + 1 : count; rc == 0 && k < count && back < 0; k++) {
        if (!sass__op_is(&ls[k], "BRA") || !ls[k].label[0])
            continue;
        for (int t = 0; t < arrive[0]; t++)
            if (ls[t].is_label && strcmp(ls[t].label, ls[k].label) == 0)
                head = t, back = k;
    }
    if (rc == 0 && back < 0)
        rc = sass__fail(err, errlen, "no backward branch after the last window to a label "
                        "before the first one (the k-block loop)");
    if (rc == 0 && nw % waves != 0)
        rc = sass__fail(err, errlen, "%d windows in the loop, not a multiple of %d waves", nw,
                        waves);
    if (rc == 0) {
        rep->k_blocks = nw / waves;
        for (int k = head; k < arrive[0]; k++)
            rep->loads_hoisted += sass__op_is(&ls[k], "LDS");
        for (int k = head; k <= back; k++)
            rep->releases += sass__op_is(&ls[k], "SYNCS.ARRIVE");
    }
    for (int b = 0; rc == 0 && b < rep->k_blocks; b++) {
        const int first = arrive[b * waves], last_depbar = depbar[b * waves + waves - 1];
        const int next = b + 1 < rep->k_blocks ? arrive[(b + 1) * waves] : back;
        /* none from the body's start (or the previous k block's first
         * arrive) up to this block's last DEPBAR */
        const int from = b == 0 ? head : arrive[b * waves];
        for (int k = from; k < last_depbar && rc == 0; k++)
            if (sass__op_is(&ls[k], "SYNCS.ARRIVE"))
                rc = sass__fail(err, errlen, "k block %d: %s before the DEPBAR of its last wave "
                                "(the stage is released while a wave may still read it)", b,
                                ls[k].text);
        int rel = -1, nrel = 0;
        for (int k = last_depbar + 1; k < next && rc == 0; k++)
            if (sass__op_is(&ls[k], "SYNCS.ARRIVE"))
                nrel++, rel = rel < 0 ? k : rel;
        if (rc == 0 && nrel != 1)
            rc = sass__fail(err, errlen, "k block %d: %d SYNCS.ARRIVE after its last wave's "
                            "DEPBAR, expected exactly 1 (the release of the stage)", b, nrel);
        for (int k = first; k < rel && rc == 0; k++)
            if (sass__op_is(&ls[k], "LDS"))
                rc = sass__fail(err, errlen, "k block %d: %s between its first "
                                "WARPGROUP.ARRIVE and the release (the A scales must be read "
                                "before the first wgmma)", b, ls[k].text);
    }
    free(ls);
    return rc;
}

#endif
