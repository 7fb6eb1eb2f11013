#include "cuda_emu.h"
namespace emu {
int cur = -1;
std::vector<Fiber> fibers;
ucontext_t sched_ctx;
dim3v blockIdx_, gridDim_;
unsigned nthreads;
long long barrier_count;
WarpSlot slots_buf[2][1024];
unsigned op_count[1024];
static jmp_buf sched_jb;
int or_accum;
bool progress_since_last_pass;
bool (*end_of_pass_hook)() = nullptr;
void (*ldg_hook)(const void *, size_t) = nullptr;
/* bar.arrive arrivals per named barrier id, not yet matched by a release */
static unsigned named_arrived[32], named_arrive_count[32];
void named_arrive(unsigned id, unsigned count) {
    if (id >= 32 || (named_arrived[id] && named_arrive_count[id] != count)) {
        fprintf(stderr, "EMU: bar.arrive %u, %u: bad id or a count other than the pending arrivals'\n", id, count);
        abort();
    }
    named_arrive_count[id] = count;
    if (++named_arrived[id] >= count) {
        fprintf(stderr, "EMU: bar.arrive %u: %u arrivals reach the count %u without a waiter (block %u,%u)\n", id,
                named_arrived[id], count, blockIdx_.x, blockIdx_.y);
        abort();
    }
    progress_since_last_pass = true;
}
void block(int what) {
    if (what != YIELD)
        progress_since_last_pass = true;
    fibers[cur].wait = what;
    if (!_setjmp(fibers[cur].jb))
        _longjmp(sched_jb, 1);
}
}

namespace emu {
static std::function<void()> *body;
static void trampoline() {
    (*body)();
    fibers[cur].wait = DONE;
    progress_since_last_pass = true;
    _longjmp(sched_jb, 1);
}
static int skew = getenv("EMU_SKEW") && strcmp(getenv("EMU_SKEW"), "0") != 0;
/* another warp than w is also ready: holding w back still makes progress */
static bool any_ready_elsewhere(unsigned w, unsigned n) {
    for (unsigned v = 0; v * 32 < n; v++) {
        if (v == w)
            continue;
        unsigned at = 0, lanes = 0;
        for (unsigned l = v * 32; l < n && l < v * 32 + 32; l++, lanes++)
            at += fibers[l].wait == WARP_OP;
        if (at == lanes && lanes)
            return true;
    }
    return false;
}
void run_cta(unsigned n, std::function<void()> fn) {
    body = &fn;
    fibers.assign(n, Fiber());
    memset(named_arrived, 0, sizeof named_arrived);
    memset(op_count, 0, sizeof op_count);
    for (unsigned i = 0; i < n; i++) {
        Fiber &f = fibers[i];
        f.tid = i;
        static std::vector<char *> pool;
        while (pool.size() <= i)
            pool.push_back((char *)malloc(256 * 1024));
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = pool[i];
        f.ctx.uc_stack.ss_size = 256 * 1024;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < n; i++)
            if (fibers[i].wait == RUN) {
                cur = (int)i;
                if (!_setjmp(sched_jb)) {
                    if (!fibers[i].started) {
                        fibers[i].started = true;
                        setcontext(&fibers[i].ctx);
                    }
                    _longjmp(fibers[i].jb, 1);
                }
            }
        cur = -1;
        if (end_of_pass_hook && end_of_pass_hook())
            progress_since_last_pass = true;
        unsigned done = 0, at_cta = 0, yielded = 0;
        for (auto &f : fibers) {
            done += f.wait == DONE;
            at_cta += f.wait == CTA_BAR;
            yielded += f.wait == YIELD;
        }
        if (done == n)
            break;
        bool released = false, held = false;
        /* named barriers: release an id once bar_count fibers wait at it */
        for (unsigned i = 0; i < n; i++) {
            if (fibers[i].wait != NAMED_BAR)
                continue;
            unsigned at = 0;
            for (unsigned j = 0; j < n; j++)
                at += fibers[j].wait == NAMED_BAR && fibers[j].bar_id == fibers[i].bar_id;
            const unsigned bid = fibers[i].bar_id;
            if (bid < 32 && named_arrived[bid]) {
                if (named_arrive_count[bid] != fibers[i].bar_count) {
                    fprintf(stderr, "EMU: named barrier %u: bar.arrive count %u, bar.sync count %u\n", bid,
                            named_arrive_count[bid], fibers[i].bar_count);
                    abort();
                }
                at += named_arrived[bid];
            }
            if (at > fibers[i].bar_count) {
                fprintf(stderr, "EMU: %u threads at named barrier %u of %u (block %u,%u)\n", at,
                        fibers[i].bar_id, fibers[i].bar_count, blockIdx_.x, blockIdx_.y);
                abort();
            }
            if (at == fibers[i].bar_count) {
                const unsigned id = fibers[i].bar_id;
                for (unsigned j = 0; j < n; j++)
                    if (fibers[j].wait == NAMED_BAR && fibers[j].bar_id == id)
                        fibers[j].wait = RUN;
                if (id < 32)
                    named_arrived[id] = 0;
                released = true;
            }
        }
        for (unsigned w = 0; w * 32 < n; w++) {
            unsigned at_warp = 0, lanes = 0;
            for (unsigned l = w * 32; l < n && l < w * 32 + 32; l++, lanes++)
                at_warp += fibers[l].wait == WARP_OP;
            if (at_warp == lanes) {
                /* skew: hold a ready warp back now and then, so warps drift
                 * apart between CTA barriers and missing barriers show */
                static unsigned long long rng = 88172645463325252ull;
                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                if (skew && (rng % 8) < 5 && any_ready_elsewhere(w, n)) {
                    held = true;
                    continue;
                }
                for (unsigned l = w * 32; l < w * 32 + lanes; l++)
                    fibers[l].wait = RUN;
                released = true;
            } else if (at_warp) {
                /* some lanes at a warp op, others elsewhere: divergence (or a
                 * lane waiting while others are at a CTA barrier) */
                bool others_blocked_elsewhere = true;
                for (unsigned l = w * 32; l < w * 32 + lanes; l++)
                    if (fibers[l].wait == RUN || fibers[l].wait == YIELD)
                        others_blocked_elsewhere = false;
                if (others_blocked_elsewhere) {
                    fprintf(stderr, "EMU: warp %u diverged at a warp-collective op (block %u,%u)\n", w,
                            blockIdx_.x, blockIdx_.y);
                    abort();
                }
            }
        }
        if (!released && held)
            for (unsigned w = 0; w * 32 < n; w++) {
                unsigned at = 0, lanes = 0;
                for (unsigned l = w * 32; l < n && l < w * 32 + 32; l++, lanes++)
                    at += fibers[l].wait == WARP_OP;
                if (at == lanes && lanes) {
                    for (unsigned l = w * 32; l < w * 32 + lanes; l++)
                        fibers[l].wait = RUN;
                    released = true;
                }
            }
        if (at_cta == n) {
            for (auto &f : fibers)
                f.wait = RUN;
            barrier_count++;
            continue;
        }
        /* spin-waits (mbarrier try_wait): a pass in which every runnable fiber
         * only yielded again, and nothing was released, changed nothing that
         * a spinning fiber could wait for */
        if (yielded) {
            static long long stalls = 0;
            if (!released && !progress_since_last_pass) {
                if (++stalls > 3) {
                    fprintf(stderr, "EMU: deadlock in block (%u,%u): %u fibers spin on mbarriers, %u done, "
                                    "%u at a CTA barrier\n",
                            blockIdx_.x, blockIdx_.y, yielded, done, at_cta);
                    abort();
                }
            } else {
                stalls = 0;
            }
            for (auto &f : fibers)
                if (f.wait == YIELD)
                    f.wait = RUN;
            progress_since_last_pass = false;
            continue;
        }
        if (released)
            continue;
        fprintf(stderr, "EMU: deadlock in block (%u,%u): %u done, %u at a CTA barrier of %u\n", blockIdx_.x,
                blockIdx_.y, done, at_cta, n);
        abort();
    }
    for (unsigned id = 0; id < 32; id++)
        if (named_arrived[id]) {
            fprintf(stderr, "EMU: block (%u,%u) exited with %u unmatched bar.arrive at named barrier %u\n",
                    blockIdx_.x, blockIdx_.y, named_arrived[id], id);
            abort();
        }
    fibers.clear();
}
}
