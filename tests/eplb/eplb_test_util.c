#include "eplb_test_util.h"

#include <stdlib.h>
#include <string.h>

const char *eplb_check_invariants(const int64_t *phy2log, const int64_t *phy_replica,
                                  const int64_t *logcnt, const int64_t *log2phy, int64_t width,
                                  int64_t L, int64_t E, int64_t R) {
    static _Thread_local char msg[256];
    int64_t *seen = calloc((size_t)R, sizeof(int64_t));
    int64_t *count = calloc((size_t)E, sizeof(int64_t));
    const char *result = NULL;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(msg, sizeof msg, __VA_ARGS__);                                                    \
        result = msg;                                                                              \
        goto done;                                                                                 \
    } while (0)
    for (int64_t l = 0; l < L; l++) {
        memset(count, 0, (size_t)E * sizeof(int64_t));
        int64_t total = 0;
        for (int64_t x = 0; x < R; x++) {
            int64_t e = phy2log[l * R + x];
            if (e < 0 || e >= E)
                FAIL("layer %lld slot %lld: expert %lld out of range", (long long)l, (long long)x,
                     (long long)e);
            count[e]++;
        }
        for (int64_t e = 0; e < E; e++) {
            int64_t c = logcnt[l * E + e];
            total += c;
            if (c < 1)
                FAIL("layer %lld expert %lld: logcnt %lld < 1", (long long)l, (long long)e,
                     (long long)c);
            if (c != count[e])
                FAIL("layer %lld expert %lld: logcnt %lld but %lld slots", (long long)l,
                     (long long)e, (long long)c, (long long)count[e]);
            if (c > width)
                FAIL("layer %lld expert %lld: logcnt %lld > width %lld", (long long)l, (long long)e,
                     (long long)c, (long long)width);
            const int64_t *row = log2phy + (l * E + e) * width;
            memset(seen, 0, (size_t)R * sizeof(int64_t));
            for (int64_t k = 0; k < width; k++) {
                int64_t x = row[k];
                if (k >= c) {
                    if (x != -1)
                        FAIL("layer %lld expert %lld: log2phy[%lld]=%lld, want -1 padding",
                             (long long)l, (long long)e, (long long)k, (long long)x);
                    continue;
                }
                if (x < 0 || x >= R || phy2log[l * R + x] != e)
                    FAIL("layer %lld expert %lld: log2phy[%lld]=%lld is not a slot of the expert",
                         (long long)l, (long long)e, (long long)k, (long long)x);
                if (seen[x]++)
                    FAIL("layer %lld expert %lld: slot %lld listed twice", (long long)l,
                         (long long)e, (long long)x);
                if (phy_replica && phy_replica[l * R + x] != k)
                    FAIL("layer %lld slot %lld: phy_replica %lld but log2phy column %lld",
                         (long long)l, (long long)x, (long long)phy_replica[l * R + x],
                         (long long)k);
            }
        }
        if (total != R)
            FAIL("layer %lld: logcnt sums to %lld, want R=%lld", (long long)l, (long long)total,
                 (long long)R);
    }
done:
#undef FAIL
    free(seen);
    free(count);
    return result;
}

const char *eplb_check_groups_on_nodes(const int64_t *phy2log, int64_t L, int64_t E, int64_t R,
                                       int64_t G, int64_t N) {
    static _Thread_local char msg[256];
    int64_t S = E / G, Rn = R / N;
    int64_t *node_of_group = malloc((size_t)G * sizeof(int64_t));
    const char *result = NULL;
    for (int64_t l = 0; l < L && !result; l++) {
        for (int64_t g = 0; g < G; g++)
            node_of_group[g] = -1;
        for (int64_t x = 0; x < R && !result; x++) {
            int64_t g = phy2log[l * R + x] / S, n = x / Rn;
            if (node_of_group[g] == -1)
                node_of_group[g] = n;
            else if (node_of_group[g] != n) {
                snprintf(msg, sizeof msg, "layer %lld: group %lld on nodes %lld and %lld",
                         (long long)l, (long long)g, (long long)node_of_group[g], (long long)n);
                result = msg;
            }
        }
    }
    free(node_of_group);
    return result;
}

int64_t eplb_count_gpu_duplicates(const int64_t *phy2log, int64_t L, int64_t E, int64_t R,
                                  int64_t P) {
    int64_t ppg = R / P, dups = 0;
    for (int64_t l = 0; l < L; l++)
        for (int64_t g = 0; g < P; g++)
            for (int64_t i = 0; i < ppg; i++)
                for (int64_t j = 0; j < i; j++)
                    if (phy2log[l * R + g * ppg + i] == phy2log[l * R + g * ppg + j]) {
                        dups++;
                        break;
                    }
    (void)E;
    return dups;
}

const char *eplb_data_path(const char *name) {
    static _Thread_local char path[4096];
    const char *roots[] = {getenv("DINF_SOURCE_DIR"), DINF_SOURCE_DIR, "."};
    for (int i = 0; i < 3; i++) {
        if (!roots[i])
            continue;
        snprintf(path, sizeof path, "%s/tests/eplb/data/%s", roots[i], name);
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            return path;
        }
    }
    return path;
}

static int read_tag(FILE *f, const char *tag) {
    char buf[16];
    if (fscanf(f, "%15s", buf) != 1)
        return -1;
    return strcmp(buf, tag) == 0 ? 0 : -1;
}

static int read_i64s(FILE *f, int64_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        long long v;
        if (fscanf(f, "%lld", &v) != 1)
            return -1;
        out[i] = v;
    }
    return 0;
}

int eplb_read_vectors(const char *path, eplb_vector **cases) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    int count = 0, cap = 0;
    eplb_vector *v = NULL;
    char line[512];
    long pos = ftell(f);
    while (fgets(line, sizeof line, f) && line[0] == '#')
        pos = ftell(f);
    fseek(f, pos, SEEK_SET);
    for (;;) {
        eplb_vector c = {0};
        long long L, E, R, G, N, P, M;
        int id;
        if (read_tag(f, "case") != 0)
            break;
        if (fscanf(f, "%d %lld %lld %lld %lld %lld %lld %lld", &id, &L, &E, &R, &G, &N, &P, &M) != 8)
            goto bad;
        c.id = id, c.L = L, c.E = E, c.R = R, c.G = G, c.N = N, c.P = P, c.M = M;
        c.w = malloc((size_t)(L * E) * sizeof(float));
        c.phy2log = malloc((size_t)(L * R) * sizeof(int64_t));
        c.logcnt = malloc((size_t)(L * E) * sizeof(int64_t));
        c.log2phy = malloc((size_t)(L * E * M) * sizeof(int64_t));
        if (read_tag(f, "w") != 0)
            goto bad;
        for (long long i = 0; i < L * E; i++) {
            char num[64];
            if (fscanf(f, "%63s", num) != 1)
                goto bad;
            c.w[i] = strtof(num, NULL);
        }
        if (read_tag(f, "p") || read_i64s(f, c.phy2log, L * R) || read_tag(f, "c") ||
            read_i64s(f, c.logcnt, L * E) || read_tag(f, "m") || read_i64s(f, c.log2phy, L * E * M))
            goto bad;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            v = realloc(v, (size_t)cap * sizeof *v);
        }
        v[count++] = c;
        continue;
    bad:
        fprintf(stderr, "%s: malformed case after %d cases\n", path, count);
        free(c.w);
        free(c.phy2log);
        free(c.logcnt);
        free(c.log2phy);
        fclose(f);
        eplb_free_vectors(v, count);
        return -1;
    }
    fclose(f);
    *cases = v;
    return count;
}

void eplb_free_vectors(eplb_vector *cases, int count) {
    for (int i = 0; i < count; i++) {
        free(cases[i].w);
        free(cases[i].phy2log);
        free(cases[i].logcnt);
        free(cases[i].log2phy);
    }
    free(cases);
}
