/*
 * GPU tests of ep: every GPU transport against the CPU oracle (the threads
 * transport on the same inputs), bitwise. One scenario per rank runs the
 * layout, notify, normal dispatch (bf16, FP8 quantized on the send side,
 * FP8 pre-quantized, cached), combine (weights, two biases), and the
 * low-latency dispatch (bf16 and FP8, M-major scales) and combine; every
 * output is compared byte for byte (rows past the valid counts excluded).
 *   - virtual ranks R = 1, 2, 4, 8 on one GPU (one cooperative launch per step)
 *   - CUDA IPC with one rank (the peer-store path through the IPC constructor)
 *   - NCCL with a single-rank communicator (dlopen'd NCCL; skipped without it)
 *   - timeouts and mismatched calls return errors, never hang
 *   - the CUDA layout and its rejection of invalid expert ids
 * Skipped, visibly, without a usable device; a failure under
 * DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#define _POSIX_C_SOURCE 200809L
#include <deepinfra.h>

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <stdlib.h>
#include <string.h>


TestSuite(ep_gpu, .init = require_gpu, .timeout = 300.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "ep/ep_nccl.h"

#include "../ep_gpu/ep_scenario.h"

static void virtual_case(int32_t R, int32_t H, int32_t K, int32_t E, int64_t T, uint64_t seed) {
    scen sc = {R, H, K, E, T, {0}, seed};
    for (int32_t r = 0; r < R; r++)
        sc.N[r] = T - (int64_t)((r * 37 + 5) % (T / 2 + 1));
    if (R >= 4)
        sc.N[2] = 0; /* a rank with no tokens */
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *groups[MAXR];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(R, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    int32_t rank = -1, num_ranks = 0, memory = -1, device = -1;
    dinf_ep_group_info(groups[R - 1], &rank, &num_ranks, &memory, &device);
    cr_assert_eq(rank, R - 1);
    cr_assert_eq(num_ranks, R);
    cr_assert_eq(memory, DINF_EP_MEMORY_DEVICE);
    cr_assert_eq(device, 0);
    char label[64];
    snprintf(label, sizeof label, "virtual R=%d H=%d K=%d E=%d T=%lld", (int)R, (int)H, (int)K,
             (int)E, (long long)T);
    check_against_oracle(label, &sc, groups, 1);
    /* twice on the same groups: the flags and slots of the next steps */
    sc.seed = seed + 1;
    check_against_oracle(label, &sc, groups, 1);
    for (int32_t r = 0; r < R; r++)
        dinf_ep_group_destroy(groups[r]);
}

Test(ep_gpu, virtual_one_rank_matches_the_oracle) { virtual_case(1, 256, 4, 8, 48, 1); }
Test(ep_gpu, virtual_two_ranks_match_the_oracle) { virtual_case(2, 384, 4, 16, 64, 2); }
Test(ep_gpu, virtual_four_ranks_match_the_oracle) { virtual_case(4, 256, 6, 32, 96, 3); }
Test(ep_gpu, virtual_eight_ranks_match_the_oracle) { virtual_case(8, 512, 8, 64, 128, 4); }
Test(ep_gpu, virtual_eight_ranks_deepseek_hidden) { virtual_case(8, 7168, 8, 64, 32, 5); }

static int copy_gather(void *ctx, const void *in, void *out, size_t bytes) {
    (void)ctx;
    memcpy(out, in, bytes);
    return 0;
}

Test(ep_gpu, cuda_ipc_single_rank_matches_the_oracle) {
    scen sc = {1, 256, 4, 8, 64, {50}, 9};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *g = NULL;
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, copy_gather, NULL, &g),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    check_against_oracle("cuda-ipc R=1", &sc, &g, 1);
    cr_assert_eq(dinf_ep_group_barrier(g), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_ep_group_destroy(g);
}

Test(ep_gpu, nccl_single_rank_communicator_matches_the_oracle) {
    const dinf__nccl_api *nccl = NULL;
    if (dinf__nccl("test", &nccl) != DINF_STATUS_OK)
        cr_skip_test("NCCL is not loadable: %s", dinf_last_error());
    cr_assert_eq(cudaSetDevice(0), cudaSuccess);
    dinf__nccl_unique_id id;
    cr_assert_eq(nccl->get_unique_id(&id), 0);
    void *comm = NULL;
    const int rc = nccl->comm_init_rank(&comm, 1, id, 0);
    cr_assert_eq(rc, 0, "ncclCommInitRank(nranks=1): %s", nccl->get_error_string(rc));
    scen sc = {1, 256, 4, 8, 64, {41}, 11};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *g = NULL;
    cr_assert_eq(dinf_ep_group_create_nccl(comm, 0, &c, &g), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    check_against_oracle("nccl R=1", &sc, &g, 1);
    cr_assert_eq(dinf_ep_group_barrier(g), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_ep_group_destroy(g);
    dinf_ep_group *bad = NULL;
    /* another device than the communicator's (or one that does not exist) */
    cr_assert_neq(dinf_ep_group_create_nccl(comm, 1, &c, &bad), DINF_STATUS_OK);
    cr_assert_null(bad);
    nccl->comm_destroy(comm);
}

/* ---- timeouts and mismatched calls ---- */

typedef struct late_job {
    dinf_ep_group *group;
    int op;          /* 0: barrier, 1: notify, 2: nothing */
    int delay_ms;
    int64_t bad_id;  /* op 1: nonzero puts this id at topk_idx[1][2] */
    dinf_status status;
    double seconds;
    char message[1100];
} late_job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *late_thread(void *arg) {
    late_job *j = arg;
    cudaSetDevice(0);
    if (j->delay_ms) {
        struct timespec ts = {j->delay_ms / 1000, (long)(j->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const double t0 = now_s();
    j->status = DINF_STATUS_OK;
    if (j->op == 0) {
        j->status = dinf_ep_group_barrier(j->group);
    } else if (j->op == 1) {
        dinf_ep_handle *h = NULL;
        dinf_ep_handle_create(j->group, &h);
        int64_t *topk = NULL;
        cudaMalloc((void **)&topk, 64);
        cudaMemset(topk, 0, 64);
        if (j->bad_id)
            cudaMemcpy(topk + 6, &j->bad_id, 8, cudaMemcpyHostToDevice);
        dinf_exec e = DINF_EXEC_CUDA_INIT(0, NULL);
        j->status = dinf_ep_notify_dispatch(j->group, topk, 2, 4, 8, NULL, NULL, NULL, 1, h, NULL,
                                            NULL, &e);
        cudaFree(topk);
        dinf_ep_handle_destroy(h);
    }
    j->seconds = now_s() - t0;
    snprintf(j->message, sizeof j->message, "%s", dinf_last_error());
    return NULL;
}

static void run_pair(dinf_ep_group **groups, late_job *jobs) {
    pthread_t t[2];
    for (int r = 0; r < 2; r++) {
        jobs[r].group = groups[r];
        pthread_create(&t[r], NULL, late_thread, &jobs[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(t[r], NULL);
}

Test(ep_gpu, a_missing_rank_times_out_and_breaks_the_group) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 256;
    c.max_tokens_per_rank = 16;
    c.max_topk = 4;
    c.max_num_experts = 8;
    c.timeout_ms = 300;
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job jobs[2] = {{.op = 0}, {.op = 2}};
    run_pair(groups, jobs);
    cr_assert_eq(jobs[0].status, DINF_STATUS_TIMEOUT, "%s", jobs[0].message);
    cr_assert(strstr(jobs[0].message, "[1]"), "%s", jobs[0].message);
    cr_assert_lt(jobs[0].seconds, 10.0);
    /* the late rank finds the group broken at once */
    late_job again[2] = {{.op = 2}, {.op = 0}};
    run_pair(groups, again);
    cr_assert_eq(again[1].status, DINF_STATUS_TIMEOUT, "%s", again[1].message);
    cr_assert(strstr(again[1].message, "broken"), "%s", again[1].message);
    cr_assert_lt(again[1].seconds, 1.0);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

Test(ep_gpu, mismatched_calls_fail_on_every_rank) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 256;
    c.max_tokens_per_rank = 16;
    c.max_topk = 4;
    c.max_num_experts = 8;
    c.timeout_ms = 2000;
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job jobs[2] = {{.op = 1}, {.op = 0}};
    run_pair(groups, jobs);
    for (int r = 0; r < 2; r++) {
        cr_assert_neq(jobs[r].status, DINF_STATUS_OK, "rank %d succeeded", r);
        cr_assert_lt(jobs[r].seconds, 10.0);
    }
    cr_assert(strstr(jobs[0].message, "mismatched") || strstr(jobs[1].message, "mismatched"),
              "%s | %s", jobs[0].message, jobs[1].message);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

/* ---- the CUDA layout ---- */

Test(ep_gpu, cuda_layout_matches_the_cpu_and_rejects_bad_ids) {
    const int64_t N = 3000, K = 8;
    const int32_t E = 256, R = 8;
    uint64_t s = 77;
    int64_t *topk = malloc((size_t)(N * K) * 8);
    for (int64_t i = 0; i < N * K; i++)
        topk[i] = rng_next(&s) % 9 == 0 ? -1 : (int64_t)(rng_next(&s) % E);
    int32_t rank_cpu[8], expert_cpu[256], rank_gpu[8], expert_gpu[256];
    uint8_t *in_cpu = malloc((size_t)(N * R)), *in_gpu = malloc((size_t)(N * R));
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, N, K, E, R, rank_cpu, expert_cpu, in_cpu, NULL),
                 DINF_STATUS_OK);
    int64_t *d_topk;
    int32_t *d_rank, *d_expert;
    uint8_t *d_in;
    cr_assert_eq(cudaMalloc((void **)&d_topk, (size_t)(N * K) * 8), cudaSuccess);
    cudaMalloc((void **)&d_rank, 32);
    cudaMalloc((void **)&d_expert, 1024);
    cudaMalloc((void **)&d_in, (size_t)(N * R));
    cudaMemset(d_rank, 0xa5, 32);
    cudaMemset(d_expert, 0xa5, 1024);
    cudaMemset(d_in, 0xa5, (size_t)(N * R));
    cudaMemcpy(d_topk, topk, (size_t)(N * K) * 8, cudaMemcpyHostToDevice);
    dinf_exec e = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_ep_get_dispatch_layout(d_topk, N, K, E, R, d_rank, d_expert, d_in, &e),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cudaMemcpy(rank_gpu, d_rank, 32, cudaMemcpyDeviceToHost);
    cudaMemcpy(expert_gpu, d_expert, 1024, cudaMemcpyDeviceToHost);
    cudaMemcpy(in_gpu, d_in, (size_t)(N * R), cudaMemcpyDeviceToHost);
    cr_assert(memcmp(rank_cpu, rank_gpu, 32) == 0);
    cr_assert(memcmp(expert_cpu, expert_gpu, 1024) == 0);
    cr_assert(memcmp(in_cpu, in_gpu, (size_t)(N * R)) == 0);
    /* an invalid id: the message names the first one */
    const int64_t bad = 257;
    cudaMemcpy(d_topk + 1234 * K + 5, &bad, 8, cudaMemcpyHostToDevice);
    cudaMemcpy(d_topk + 2000 * K + 1, &bad, 8, cudaMemcpyHostToDevice);
    cr_assert_eq(dinf_ep_get_dispatch_layout(d_topk, N, K, E, R, d_rank, d_expert, d_in, &e),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "topk_idx[1234][5]=257"), "%s", dinf_last_error());
    cudaFree(d_topk);
    cudaFree(d_rank);
    cudaFree(d_expert);
    cudaFree(d_in);
    free(topk);
    free(in_cpu);
    free(in_gpu);
}

/* An invalid id reaches the GPU planner of one rank: every rank fails, the
 * group stays usable. */
Test(ep_gpu, gpu_planner_rejects_bad_ids_on_every_rank) {
    scen sc = {2, 256, 4, 16, 32, {32, 20}, 21};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job ok[2] = {{.op = 1}, {.op = 1}};
    run_pair(groups, ok);
    cr_assert_eq(ok[0].status, DINF_STATUS_OK, "%s", ok[0].message);
    cr_assert_eq(ok[1].status, DINF_STATUS_OK, "%s", ok[1].message);
    late_job bad[2] = {{.op = 1}, {.op = 1, .bad_id = 99}};
    run_pair(groups, bad);
    cr_assert_eq(bad[1].status, DINF_STATUS_INVALID_ARGUMENT, "%s", bad[1].message);
    cr_assert(strstr(bad[1].message, "topk_idx[1][2]=99"), "%s", bad[1].message);
    cr_assert_eq(bad[0].status, DINF_STATUS_INVALID_ARGUMENT, "%s", bad[0].message);
    cr_assert(strstr(bad[0].message, "rank 1 rejected"), "%s", bad[0].message);
    check_against_oracle("virtual R=2 after a rejected call", &sc, groups, 1);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

#endif
