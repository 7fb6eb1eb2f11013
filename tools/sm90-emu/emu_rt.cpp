/*
 * sm90-emu fiber runtime (see emu_rt.h). Generalises tools/mla-emu's
 * runtime: several CTAs (a cluster) per scheduler, warp and warpgroup
 * collectives, mbarrier waits, cluster barriers and asynchronous operations.
 */
#include "emu_rt.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace emu {

enum State { READY, RUNNING, COLL, CTA_BAR, CL_BAR, MBAR, NBAR, DONE };
static const char *const state_names[] = {"ready",         "running",         "collective",
                                          "__syncthreads", "cluster barrier", "mbarrier wait",
                                          "named barrier", "done"};

struct Fiber {
    jmp_buf jb;
    ucontext_t ctx;
    char *stack = nullptr;
    bool started = false;
    int st = READY;
    unsigned tid = 0, rank = 0;
    unsigned nb_id = 0;       /* NBAR: the named barrier */
    uint64_t *wbar = nullptr; /* MBAR: the barrier and parity waited for */
    uint32_t wpar = 0;
    unsigned coll_n[2] = {0, 0};
    const char *coll_name = "";
    unsigned long long cl_arrived_phase = 0; /* cluster barrier: phase of its arrive */
    bool cl_pending = false;
    bool griddep = false; /* passed griddepcontrol.wait */
    void *ext = nullptr;
};

struct Cta {
    U3 idx;
    uint8_t *buf = nullptr; /* window offset 0 */
    unsigned live = 0, bar_count = 0;
    unsigned nb_count[16] = {0}, nb_threads[16] = {0};
    std::vector<unsigned> coll_count[2];
    std::vector<int> coll_op[2];
    std::vector<Slot> slots[2][2];
};

struct Mbar {
    uint32_t expected = 0, pending = 0;
    int64_t tx = 0;
    unsigned long long phase = 0;
    std::vector<int> waiters;
};

int skew = [] {
    const char *e = getenv("EMU_SKEW");
    return e && strcmp(e, "0") != 0;
}();
static uint64_t rng_state = [] {
    const char *e = getenv("EMU_SEED");
    uint64_t s = e ? strtoull(e, nullptr, 0) : 1;
    return s * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}();
uint64_t rnd() {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void (*on_thread_exit)() = nullptr;
long long stat_switches = 0, stat_async = 0;

static std::vector<Fiber> fibers;
static std::vector<Cta> ctas;
static std::vector<int> ready;
struct Async {
    std::function<void()> fn;
    bool may_outlive;
    long long due; /* scheduler step from which it may land; -1: only when no thread can run */
};
static long long step = 0;
static std::vector<Async> asyncs;
static std::unordered_map<uintptr_t, Mbar> mbars;
static int cur = -1;
static jmp_buf sched_jb;
static unsigned nthreads = 0, cluster_n = 1;
static U3 g_grid, g_block;
static size_t dyn_off = 0, dyn_bytes = 0, window_bytes = 0;
static unsigned cl_live = 0, cl_arrived = 0;
static size_t n_done = 0;
static unsigned long long cl_phase = 0;
static const std::function<void()> *g_body = nullptr;
static const size_t kStack = 256 * 1024;

void fail(const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "EMU: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cur >= 0)
        fprintf(stderr, " [block (%u,%u,%u), thread %u]\n", ctas[fibers[cur].rank].idx.x,
                ctas[fibers[cur].rank].idx.y, ctas[fibers[cur].rank].idx.z, fibers[cur].tid);
    else
        fprintf(stderr, " [asynchronous operation or host]\n");
    abort();
}

static Fiber &self() {
    if (cur < 0)
        fail("a device-side operation outside a kernel thread");
    return fibers[cur];
}
unsigned tid() { return self().tid; }
U3 block_idx() { return ctas[self().rank].idx; }
U3 grid_dim() { return g_grid; }
U3 block_dim() { return g_block; }
unsigned cluster_rank() { return self().rank; }
unsigned cluster_size() { return cluster_n; }
void *&thread_ext_slot() { return self().ext; }
size_t async_pending() { return asyncs.size(); }

static void make_ready(int i) {
    fibers[i].st = READY;
    ready.push_back(i);
}

/* Leave the fiber for the scheduler (state already set). */
static void switch_out() {
    Fiber &f = fibers[cur];
    stat_switches++;
    if (!_setjmp(f.jb))
        _longjmp(sched_jb, 1);
}

void maybe_yield() {
    if (!skew || rnd() % 4)
        return;
    make_ready(cur);
    switch_out();
}

/* ---------------------------------------------------------- barriers -- */
static void cta_bar_check(Cta &c, unsigned rank) {
    if (c.bar_count == 0 || c.bar_count < c.live)
        return;
    c.bar_count = 0;
    for (size_t i = 0; i < fibers.size(); i++)
        if (fibers[i].rank == rank && fibers[i].st == CTA_BAR)
            make_ready((int)i);
}

void syncthreads() {
    Fiber &f = self();
    Cta &c = ctas[f.rank];
    f.st = CTA_BAR;
    c.bar_count++;
    cta_bar_check(c, f.rank);
    switch_out();
}

void named_barrier(unsigned id, unsigned threads) {
    Fiber &f = self();
    Cta &c = ctas[f.rank];
    if (id == 0 || id > 15)
        fail("bar.sync %u: named barrier ids are 1..15 here (0 is __syncthreads)", id);
    if (threads == 0 || threads % 32 || threads > nthreads)
        fail("bar.sync %u, %u: the thread count must be a multiple of 32 up to the block size %u", id,
             threads, nthreads);
    if (c.nb_count[id] && c.nb_threads[id] != threads)
        fail("bar.sync %u: %u threads here, %u in another thread's call", id, threads, c.nb_threads[id]);
    c.nb_threads[id] = threads;
    f.st = NBAR;
    f.nb_id = id;
    if (++c.nb_count[id] == threads) {
        c.nb_count[id] = 0;
        for (size_t i = 0; i < fibers.size(); i++)
            if (fibers[i].rank == f.rank && fibers[i].st == NBAR && fibers[i].nb_id == id)
                make_ready((int)i);
    }
    switch_out();
}

/* bar.arrive id, threads: counts toward the barrier without waiting; the
 * arrival that completes the count releases the bar.sync waiters. */
void named_barrier_arrive(unsigned id, unsigned threads) {
    Fiber &f = self();
    Cta &c = ctas[f.rank];
    if (id == 0 || id > 15)
        fail("bar.arrive %u: named barrier ids are 1..15 here (0 is __syncthreads)", id);
    if (threads == 0 || threads % 32 || threads > nthreads)
        fail("bar.arrive %u, %u: the thread count must be a multiple of 32 up to the block size %u", id,
             threads, nthreads);
    if (c.nb_count[id] && c.nb_threads[id] != threads)
        fail("bar.arrive %u: %u threads here, %u in another thread's call", id, threads, c.nb_threads[id]);
    c.nb_threads[id] = threads;
    if (++c.nb_count[id] == threads) {
        c.nb_count[id] = 0;
        for (size_t i = 0; i < fibers.size(); i++)
            if (fibers[i].rank == f.rank && fibers[i].st == NBAR && fibers[i].nb_id == id)
                make_ready((int)i);
    }
}

static void cluster_check() {
    if (cl_arrived == 0 || cl_arrived < cl_live)
        return;
    cl_arrived = 0;
    cl_phase++;
    for (size_t i = 0; i < fibers.size(); i++)
        if (fibers[i].st == CL_BAR && fibers[i].cl_arrived_phase < cl_phase)
            make_ready((int)i);
}

void cluster_arrive() {
    Fiber &f = self();
    if (f.cl_pending)
        fail("barrier.cluster.arrive twice without barrier.cluster.wait");
    f.cl_pending = true;
    f.cl_arrived_phase = cl_phase;
    cl_arrived++;
    cluster_check();
    maybe_yield();
}

void cluster_wait() {
    Fiber &f = self();
    if (!f.cl_pending)
        fail("barrier.cluster.wait without a preceding barrier.cluster.arrive");
    f.cl_pending = false;
    if (cl_phase > f.cl_arrived_phase) {
        maybe_yield();
        return;
    }
    f.st = CL_BAR;
    switch_out();
}

Slot *coll_slots(Level level) {
    Fiber &f = self();
    return ctas[f.rank].slots[level][f.coll_n[level] & 1].data();
}

void coll_wait(Level level, int opcode, const char *name) {
    Fiber &f = self();
    Cta &c = ctas[f.rank];
    const unsigned width = level == WARP ? 32 : 128;
    const unsigned g = f.tid / width;
    const unsigned size = std::min(width, nthreads - g * width);
    if (c.coll_count[level][g] == 0)
        c.coll_op[level][g] = opcode;
    else if (c.coll_op[level][g] != opcode)
        fail("%s %u: threads at different collective operations (%s here)",
             level == WARP ? "warp" : "warpgroup", g, name);
    f.coll_n[level]++;
    f.coll_name = name;
    f.st = COLL;
    if (++c.coll_count[level][g] == size) {
        c.coll_count[level][g] = 0;
        for (size_t i = 0; i < fibers.size(); i++)
            if (fibers[i].rank == f.rank && fibers[i].tid / width == g)
                make_ready((int)i);
    }
    switch_out();
}

/* ----------------------------------------------------- shared memory -- */
uint8_t *smem_dynamic() { return ctas[self().rank].buf + dyn_off; }

uint32_t smem_addr(const void *p) {
    const Fiber &f = self();
    const uint8_t *b = ctas[f.rank].buf;
    const uint8_t *q = (const uint8_t *)p;
    if (q < b + dyn_off || q > b + dyn_off + dyn_bytes)
        fail("cvta.to.shared of %p: not in this CTA's shared memory", p);
    return (uint32_t)(q - b);
}

uint8_t *smem_host(uint32_t addr, size_t bytes, unsigned *cta_rank) {
    const unsigned field = addr >> 24;
    const uint32_t off = addr & 0xFFFFFFu;
    unsigned r;
    if (field == 0) {
        if (cur < 0)
            fail("shared::cta address 0x%x used outside a thread", addr);
        r = fibers[cur].rank;
    } else {
        r = field - 1;
        if (r >= cluster_n)
            fail("shared::cluster address 0x%x names CTA rank %u of a cluster of %u", addr, r,
                 cluster_n);
    }
    if (off < dyn_off || (size_t)off + bytes > dyn_off + dyn_bytes)
        fail("shared memory access [0x%x, +%zu) outside the dynamic shared memory [0x%zx, 0x%zx)",
             off, bytes, dyn_off, dyn_off + dyn_bytes);
    if (ctas[r].live == 0)
        fail("access to the shared memory of CTA rank %u of the cluster after all its threads "
             "exited",
             r);
    if (cta_rank)
        *cta_rank = r;
    return ctas[r].buf + off;
}

void check_cta_alive(unsigned rank, const char *what) {
    if (rank < cluster_n && ctas[rank].live == 0)
        fail("%s into CTA rank %u of the cluster after all its threads exited", what, rank);
}

uint32_t mapa(uint32_t addr, unsigned rank) {
    if (rank >= cluster_n)
        fail("mapa to CTA rank %u of a cluster of %u", rank, cluster_n);
    if (addr >> 24)
        fail("mapa of 0x%x: not a shared::cta address", addr);
    return (addr & 0xFFFFFFu) | ((rank + 1) << 24);
}

uint8_t *smem_peer(const void *local, size_t bytes, unsigned rank) {
    const uint32_t a = smem_addr(local);
    return smem_host(mapa(a, rank), bytes, nullptr);
}

/* --------------------------------------------------------- mbarriers -- */
static uint64_t mbar_tag(const uint64_t *bar) { return 0x6D62617254414721ull ^ (uintptr_t)bar; }

static unsigned owner_rank(const void *p) {
    for (unsigned r = 0; r < cluster_n; r++) {
        const uint8_t *b = ctas[r].buf;
        if ((const uint8_t *)p >= b + dyn_off && (const uint8_t *)p + 8 <= b + dyn_off + dyn_bytes)
            return r;
    }
    fail("mbarrier %p is not in the shared memory of a CTA of the cluster", p);
}

static Mbar &mbar_get(uint64_t *bar, const char *op) {
    if (ctas[owner_rank(bar)].live == 0)
        fail("%s on an mbarrier of a CTA whose threads have all exited", op);
    if ((uintptr_t)bar % 8)
        fail("%s: mbarrier %p not 8-byte aligned", op, (void *)bar);
    auto it = mbars.find((uintptr_t)bar);
    if (it == mbars.end())
        fail("%s on an mbarrier that was never initialised (smem offset 0x%zx)", op,
             (size_t)((uint8_t *)bar - ctas[owner_rank(bar)].buf));
    if (*bar != mbar_tag(bar))
        fail("%s: the mbarrier's shared memory (offset 0x%zx) was overwritten by a store or a copy",
             op, (size_t)((uint8_t *)bar - ctas[owner_rank(bar)].buf));
    return it->second;
}

void mbar_init(uint64_t *bar, uint32_t count) {
    owner_rank(bar);
    if ((uintptr_t)bar % 8)
        fail("mbarrier.init: %p not 8-byte aligned", (void *)bar);
    if (count < 1 || count > (1u << 20) - 1)
        fail("mbarrier.init: count %u outside [1, 2^20 - 1]", count);
    Mbar &m = mbars[(uintptr_t)bar];
    if (!m.waiters.empty())
        fail("mbarrier.init on a barrier that threads are waiting on");
    m = Mbar();
    m.expected = m.pending = count;
    *bar = mbar_tag(bar);
}

static bool phase_done(const Mbar &m, uint32_t parity) {
    /* try_wait.parity: true when the phase of that parity has completed,
     * i.e. the current (incomplete) phase has the other parity. */
    return (m.phase & 1u) != (parity & 1u);
}

static void mbar_maybe_complete(Mbar &m) {
    if (m.pending != 0 || m.tx != 0)
        return;
    m.phase++;
    m.pending = m.expected;
    std::vector<int> still;
    for (int w : m.waiters) {
        if (phase_done(m, fibers[w].wpar))
            make_ready(w);
        else
            still.push_back(w);
    }
    m.waiters.swap(still);
}

void mbar_arrive(uint64_t *bar, uint32_t count, const char *what) {
    Mbar &m = mbar_get(bar, what);
    if (count > m.pending)
        fail("%s: %u arrival(s) on an mbarrier with %u pending arrival(s) left in phase %llu "
             "(expected count %u, tx-count %lld): more arrivals than the barrier was initialised for",
             what, count, m.pending, m.phase, m.expected, (long long)m.tx);
    m.pending -= count;
    mbar_maybe_complete(m);
}

void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    Mbar &m = mbar_get(bar, "mbarrier.expect_tx");
    if (bytes > (1u << 20) - 1)
        fail("expect_tx %u bytes: above the tx-count range 2^20 - 1", bytes);
    m.tx += bytes;
    if (m.tx > (1 << 20) - 1)
        fail("mbarrier tx-count %lld above 2^20 - 1", (long long)m.tx);
}

void mbar_complete_tx(uint64_t *bar, uint32_t bytes) {
    Mbar &m = mbar_get(bar, "complete_tx");
    m.tx -= bytes;
    if (m.tx < -((1 << 20) - 1))
        fail("mbarrier tx-count %lld below -(2^20 - 1)", (long long)m.tx);
    mbar_maybe_complete(m);
}

bool mbar_test(uint64_t *bar, uint32_t parity) { return phase_done(mbar_get(bar, "mbarrier.try_wait"), parity); }

void mbar_wait(uint64_t *bar, uint32_t parity) {
    Mbar &m = mbar_get(bar, "mbarrier.try_wait.parity");
    if (phase_done(m, parity)) {
        maybe_yield();
        return;
    }
    /* Woken when a phase of the awaited parity completed; if the barrier ran
     * through another phase before this thread ran again, the parity test
     * fails again and it waits on (as try_wait.parity would): a protocol
     * that lets a barrier run ahead of a waiter shows as a deadlock. */
    while (!phase_done(mbar_get(bar, "mbarrier.try_wait.parity"), parity)) {
        Fiber &f = self();
        f.st = MBAR;
        f.wbar = bar;
        f.wpar = parity;
        mbar_get(bar, "mbarrier.try_wait.parity").waiters.push_back(cur);
        switch_out();
    }
}

uint32_t mbar_try_wait(uint64_t *bar, uint32_t parity) {
    if (phase_done(mbar_get(bar, "mbarrier.try_wait.parity"), parity)) {
        maybe_yield();
        return 1;
    }
    mbar_wait(bar, parity);
    return skew && rnd() % 2 ? 0 : 1;
}
unsigned long long steps() { return (unsigned long long)step; }

void post_async(std::function<void()> fn, bool may_outlive) {
    /* When does it land? Without skew: as late as possible (when no thread
     * can run). With skew: half the time that, else after a log-uniform
     * random number of scheduling steps (0 .. 4095: short delays are as
     * likely as long ones), so a thread that reads the data without waiting
     * for its barrier sees poison or stale data, and one that reads a stage
     * after releasing it sees the refill. */
    long long due = -1;
    if (skew && rnd() % 2)
        due = step + (long long)(rnd() % (1ull << (rnd() % 13)));
    asyncs.push_back({std::move(fn), may_outlive, due});
}

/* ----------------------------------------------------- global memory -- */
struct GBuf {
    uintptr_t lo, hi;
    const char *name;
};
static std::vector<GBuf> gbufs;
void global_add(const void *p, size_t bytes, const char *name) {
    gbufs.push_back({(uintptr_t)p, (uintptr_t)p + bytes, name});
}
/* PDL guards (see emu_rt.h). */
struct GGuard {
    uintptr_t lo, hi;
    const char *name;
};
static std::vector<GGuard> gguards;
static bool g_pdl = false, guards_closed = false;
long long stat_griddep_waits = 0;
static size_t page_bytes() { return (size_t)sysconf(_SC_PAGESIZE); }
static void guards_set(bool closed) {
    if (closed == guards_closed)
        return;
    for (const GGuard &g : gguards)
        if (mprotect((void *)g.lo, g.hi - g.lo, closed ? PROT_NONE : PROT_READ | PROT_WRITE) != 0)
            fail("mprotect of the PDL guard of %s failed", g.name);
    guards_closed = closed;
}
static void on_segv(int sig, siginfo_t *info, void *) {
    const uintptr_t a = (uintptr_t)info->si_addr;
    if (guards_closed)
        for (const GGuard &g : gguards)
            if (a >= g.lo && a < g.hi) {
                guards_closed = false; /* fail() may print through the harness's buffers */
                for (const GGuard &h : gguards)
                    mprotect((void *)h.lo, h.hi - h.lo, PROT_READ | PROT_WRITE);
                fail("global memory access to %s (byte %zu) before griddepcontrol.wait in a kernel "
                     "launched with programmatic dependent launch",
                     g.name, (size_t)(a - g.lo));
            }
    signal(sig, SIG_DFL); /* not ours: fault again, as without the handler */
}
void global_guard_add(const void *p, size_t bytes, const char *name) {
    const size_t page = page_bytes();
    if ((uintptr_t)p % page)
        fail("global_guard_add(%s): %p is not page-aligned", name, p);
    gguards.push_back({(uintptr_t)p, (uintptr_t)p + (bytes + page - 1) / page * page, name});
}
void griddep_wait() {
    if (cur >= 0 && !fibers[cur].griddep) {
        fibers[cur].griddep = true;
        if (g_pdl)
            stat_griddep_waits++;
    }
    guards_set(false);
    maybe_yield();
}
void griddep_check(const char *what) {
    if (g_pdl && cur >= 0 && !fibers[cur].griddep)
        fail("%s before griddepcontrol.wait in a kernel launched with programmatic dependent "
             "launch",
             what);
}
void global_clear() {
    guards_set(false);
    gbufs.clear();
    gguards.clear();
}
void global_check(const void *p, size_t bytes, const char *what) {
    const uintptr_t a = (uintptr_t)p;
    for (const GBuf &g : gbufs)
        if (a >= g.lo && a + bytes <= g.hi)
            return;
    fail("%s: global access [%p, +%zu) is not inside one buffer the harness registered", what, p,
         bytes);
}

/* ------------------------------------------------------------ launch -- */
static void trampoline() {
    (*g_body)();
    if (on_thread_exit)
        on_thread_exit();
    Fiber &f = fibers[cur];
    if (f.cl_pending)
        fail("thread exited after barrier.cluster.arrive without the matching wait");
    f.st = DONE;
    n_done++;
    Cta &c = ctas[f.rank];
    c.live--;
    cl_live--;
    cta_bar_check(c, f.rank);
    cluster_check();
    _longjmp(sched_jb, 1);
}

static void deadlock() {
    cur = -1;
    unsigned counts[DONE + 1] = {0};
    for (auto &f : fibers)
        counts[f.st]++;
    fprintf(stderr, "EMU: deadlock: no thread can run and no copy is in flight (");
    for (int s = 0; s <= DONE; s++)
        if (counts[s])
            fprintf(stderr, " %u %s", counts[s], state_names[s]);
    fprintf(stderr, " )\n");
    int shown = 0;
    for (auto &f : fibers) {
        if (f.st == DONE || shown >= 12)
            continue;
        shown++;
        fprintf(stderr, "  block (%u,%u,%u) thread %u: %s", ctas[f.rank].idx.x, ctas[f.rank].idx.y,
                ctas[f.rank].idx.z, f.tid, state_names[f.st]);
        if (f.st == MBAR) {
            const Mbar &m = mbars[(uintptr_t)f.wbar];
            fprintf(stderr, " on smem 0x%zx parity %u (phase %llu, %u of %u arrivals pending, tx %lld)",
                    (size_t)((uint8_t *)f.wbar - ctas[owner_rank(f.wbar)].buf), f.wpar, m.phase,
                    m.pending, m.expected, (long long)m.tx);
        }
        if (f.st == COLL)
            fprintf(stderr, " %s", f.coll_name);
        fprintf(stderr, "\n");
    }
    abort();
}

static std::vector<char *> stack_pool;

static void run_cluster(const std::vector<U3> &ids, const std::function<void()> &body) {
    cluster_n = (unsigned)ids.size();
    ctas.assign(cluster_n, Cta());
    for (unsigned r = 0; r < cluster_n; r++) {
        Cta &c = ctas[r];
        c.idx = ids[r];
        c.buf = (uint8_t *)aligned_alloc(1024, (window_bytes + 1023) / 1024 * 1024);
        if (!c.buf)
            fail("out of memory for shared memory");
        memset(c.buf, 0xFF, window_bytes); /* e4m3 / float NaN everywhere */
        c.live = nthreads;
        for (int l = 0; l < 2; l++) {
            const unsigned groups = (nthreads + (l ? 127 : 31)) / (l ? 128 : 32);
            c.coll_count[l].assign(groups, 0);
            c.coll_op[l].assign(groups, 0);
            c.slots[l][0].assign(nthreads, Slot());
            c.slots[l][1].assign(nthreads, Slot());
        }
    }
    const size_t n = (size_t)nthreads * cluster_n;
    fibers.clear();
    fibers.resize(n);
    while (stack_pool.size() < n) {
        const long page = sysconf(_SC_PAGESIZE);
        char *s = (char *)mmap(nullptr, kStack + page, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s == MAP_FAILED)
            fail("cannot map fiber stacks");
        mprotect(s, page, PROT_NONE); /* guard page: a stack overflow faults */
        stack_pool.push_back(s + page);
    }
    ready.clear();
    for (size_t i = 0; i < n; i++) {
        Fiber &f = fibers[i];
        f.rank = (unsigned)(i / nthreads);
        f.tid = (unsigned)(i % nthreads);
        f.stack = stack_pool[i];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
        make_ready((int)i);
    }
    cl_live = (unsigned)n;
    cl_arrived = 0;
    cl_phase = 0;
    g_body = &body;
    n_done = 0;
    for (;;) {
        if (n_done == n) {
            for (const Async &a : asyncs)
                if (!a.may_outlive)
                    fail("every thread of the cluster exited with asynchronous copies into shared "
                         "memory still in flight");
            if (asyncs.empty())
                break;
        }
        size_t pick = asyncs.size();
        if (!asyncs.empty()) {
            if (ready.empty())
                pick = skew ? rnd() % asyncs.size() : 0;
            else
                for (size_t a = 0; a < asyncs.size(); a++)
                    if (asyncs[a].due >= 0 && asyncs[a].due <= step) {
                        pick = a;
                        break;
                    }
        }
        if (pick < asyncs.size()) {
            const size_t i = pick;
            std::function<void()> fn = std::move(asyncs[i].fn);
            asyncs.erase(asyncs.begin() + (long)i);
            cur = -1;
            guards_set(false); /* the copy engine: issued by a thread that passed the wait */
            fn();
            stat_async++;
            continue;
        }
        if (ready.empty())
            deadlock();
        const size_t i = skew ? rnd() % ready.size() : ready.size() - 1;
        step++;
        const int fi = ready[i];
        ready[i] = ready.back();
        ready.pop_back();
        cur = fi;
        Fiber &f = fibers[fi];
        f.st = RUNNING;
        guards_set(g_pdl && !f.griddep);
        if (!_setjmp(sched_jb)) {
            if (!f.started) {
                f.started = true;
                setcontext(&f.ctx);
            }
            _longjmp(f.jb, 1);
        }
        cur = -1;
    }
    cur = -1;
    guards_set(false);
    for (unsigned r = 0; r < cluster_n; r++) {
        for (auto it = mbars.begin(); it != mbars.end();) {
            const uint8_t *p = (const uint8_t *)it->first;
            if (p >= ctas[r].buf && p < ctas[r].buf + window_bytes)
                it = mbars.erase(it);
            else
                ++it;
        }
        free(ctas[r].buf);
    }
    ctas.clear();
    fibers.clear();
}

void launch(U3 grid, U3 block, U3 cluster, size_t smem, const std::function<void()> &body,
            bool pdl) {
    g_pdl = pdl;
    if (pdl && !gguards.empty()) {
        static bool installed = false;
        if (!installed) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = on_segv;
            sa.sa_flags = SA_SIGINFO;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGSEGV, &sa, nullptr);
            installed = true;
        }
    }
    if (block.y != 1 || block.z != 1 || block.x == 0 || block.x > 1024)
        fail("launch: block (%u,%u,%u): the emulator runs 1-D blocks of 1..1024 threads", block.x,
             block.y, block.z);
    if (cluster.x == 0)
        cluster = {1, 1, 1};
    if (grid.x % cluster.x || grid.y % cluster.y || grid.z % cluster.z)
        fail("launch: grid (%u,%u,%u) is not a multiple of the cluster (%u,%u,%u)", grid.x, grid.y,
             grid.z, cluster.x, cluster.y, cluster.z);
    if (cluster.x * cluster.y * cluster.z > 8)
        fail("launch: cluster of %u CTAs (portable limit 8)", cluster.x * cluster.y * cluster.z);
    if (!asyncs.empty())
        fail("launch with asynchronous operations of an earlier launch pending");
    g_grid = grid;
    g_block = block;
    nthreads = block.x;
    dyn_bytes = smem;
    /* The dynamic shared memory window starts 16-byte aligned, at a random
     * offset below 1024 under EMU_SKEW (kernels align what they need). */
    dyn_off = skew ? (size_t)(rnd() % 64) * 16 : 0;
    window_bytes = dyn_off + smem + 64;
    std::vector<std::vector<U3>> clusters;
    for (unsigned z = 0; z < grid.z; z += cluster.z)
        for (unsigned y = 0; y < grid.y; y += cluster.y)
            for (unsigned x = 0; x < grid.x; x += cluster.x) {
                std::vector<U3> ids;
                for (unsigned cz = 0; cz < cluster.z; cz++)
                    for (unsigned cy = 0; cy < cluster.y; cy++)
                        for (unsigned cx = 0; cx < cluster.x; cx++)
                            ids.push_back({x + cx, y + cy, z + cz});
                clusters.push_back(ids);
            }
    if (skew)
        for (size_t i = clusters.size(); i > 1; i--)
            std::swap(clusters[i - 1], clusters[rnd() % i]);
    for (auto &ids : clusters)
        run_cluster(ids, body);
    g_pdl = false;
}

} // namespace emu
