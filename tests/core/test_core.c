/* Core: status strings, thread-local last error, version, dtypes, device query. */
#include <deepinfra.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

Test(core, status_strings_cover_every_status) {
    const char *want[DINF_STATUS_COUNT] = {"ok", "invalid argument", "unsupported",
                                           "out of memory", "CUDA error", "NCCL error",
                                           "JIT error", "timeout", "internal error"};
    for (int s = 0; s < DINF_STATUS_COUNT; s++)
        cr_assert_str_eq(dinf_status_string((dinf_status)s), want[s], "status %d", s);
    cr_assert_str_eq(dinf_status_string((dinf_status)99), "unknown status");
    cr_assert_str_eq(dinf_status_string((dinf_status)-1), "unknown status");
}

Test(core, version_matches_header) {
    cr_assert_eq(dinf_version(), DINF_VERSION_CODE);
    cr_assert_eq(DINF_VERSION_CODE, DINF_VERSION_MAJOR * 10000 + DINF_VERSION_MINOR * 100 +
                                        DINF_VERSION_PATCH);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%d.%d.%d+", DINF_VERSION_MAJOR, DINF_VERSION_MINOR,
             DINF_VERSION_PATCH);
    cr_assert(strncmp(dinf_version_string(), prefix, strlen(prefix)) == 0, "%s",
              dinf_version_string());
    cr_assert_str_eq(dinf_version_string() + strlen(prefix), DINF_WITH_CUDA ? "cuda" : "cpu");
}

Test(core, dtypes) {
    const size_t bytes[DINF_DTYPE_COUNT] = {4, 8, 2, 2, 1, 1, 1, 1, 4, 8};
    for (int d = 0; d < DINF_DTYPE_COUNT; d++) {
        size_t b = 0;
        cr_assert_eq(dinf_dtype_size((dinf_dtype)d, &b), DINF_STATUS_OK);
        cr_assert_eq(b, bytes[d], "dtype %s", dinf_dtype_name((dinf_dtype)d));
    }
    cr_assert_str_eq(dinf_dtype_name(DINF_DTYPE_FP8_E4M3), "float8_e4m3fn");
    cr_assert_str_eq(dinf_dtype_name(DINF_DTYPE_BFLOAT16), "bfloat16");
    cr_assert_str_eq(dinf_dtype_name((dinf_dtype)42), "unknown");
    size_t b;
    cr_assert_eq(dinf_dtype_size((dinf_dtype)42, &b), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_dtype_size: dtype=42 is not a dinf_dtype value (0..9)");
    cr_assert_eq(dinf_dtype_size(DINF_DTYPE_INT32, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_dtype_size: bytes is NULL");
}

static void *fail_in_thread(void *arg) {
    size_t b;
    (void)arg;
    const char *before = dinf_last_error();
    int clean = before[0] == '\0';
    dinf_dtype_size((dinf_dtype)77, &b);
    return (void *)(intptr_t)(clean && strstr(dinf_last_error(), "dtype=77") != NULL);
}

Test(core, last_error_is_thread_local) {
    size_t b;
    cr_assert_str_eq(dinf_last_error(), "", "no call has failed yet");
    dinf_dtype_size((dinf_dtype)55, &b);
    pthread_t t;
    void *ok;
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, &ok);
    cr_assert(ok, "a new thread starts with an empty message and gets its own");
    cr_assert(strstr(dinf_last_error(), "dtype=55") != NULL, "this thread's message is kept: %s",
              dinf_last_error());
}

static void *set_in_thread(void *arg) {
    (void)arg;
    dinf_set_last_error("the other thread's text");
    return (void *)(intptr_t)(strcmp(dinf_last_error(), "the other thread's text") == 0);
}

Test(core, set_last_error_sets_copies_truncates_and_clears) {
    dinf_set_last_error("engine: NCCL send to rank 3 failed");
    cr_assert_str_eq(dinf_last_error(), "engine: NCCL send to rank 3 failed");
    char text[64];
    snprintf(text, sizeof text, "copied");
    dinf_set_last_error(text);
    text[0] = 'X';
    cr_assert_str_eq(dinf_last_error(), "copied", "the text is copied, not referenced");

    /* its own text, and a suffix of it (overlapping copies) */
    dinf_set_last_error(dinf_last_error());
    cr_assert_str_eq(dinf_last_error(), "copied");
    dinf_set_last_error(dinf_last_error() + 2);
    cr_assert_str_eq(dinf_last_error(), "pied");

    /* longer than the capacity: the first DINF_ERROR_MESSAGE_BYTES - 1 bytes */
    static char big[3 * DINF_ERROR_MESSAGE_BYTES];
    for (size_t i = 0; i + 1 < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    dinf_set_last_error(big);
    cr_assert_eq(strlen(dinf_last_error()), DINF_ERROR_MESSAGE_BYTES - 1);
    cr_assert_eq(strncmp(dinf_last_error(), big, DINF_ERROR_MESSAGE_BYTES - 1), 0);

    /* a failing call replaces it; NULL and "" clear it */
    size_t b;
    dinf_dtype_size((dinf_dtype)66, &b);
    cr_assert(strstr(dinf_last_error(), "dtype=66") != NULL, "%s", dinf_last_error());
    dinf_set_last_error(NULL);
    cr_assert_str_eq(dinf_last_error(), "");
    dinf_set_last_error("x");
    dinf_set_last_error("");
    cr_assert_str_eq(dinf_last_error(), "");

    /* per thread */
    dinf_set_last_error("this thread's text");
    pthread_t t;
    void *ok;
    pthread_create(&t, NULL, set_in_thread, NULL);
    pthread_join(t, &ok);
    cr_assert(ok, "the other thread sees its own text");
    cr_assert_str_eq(dinf_last_error(), "this thread's text");
}

Test(core, device_query_answers_without_a_gpu) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    cr_assert_eq(dinf_device_query(0, &info), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(info.size, sizeof info);
    cr_assert_eq(info.built_with_cuda, DINF_WITH_CUDA);
    if (!info.usable) {
        cr_assert_neq(info.reason[0], '\0', "a device that is not usable needs a reason");
    } else {
        cr_assert_eq(info.cc_major, 9);
        cr_assert_gt(info.sm_count, 0);
    }
    cr_log_info("device 0: usable=%d count=%d runtime=%d driver=%d name='%s' reason='%s'",
                info.usable, info.device_count, info.runtime_version, info.driver_version,
                info.name, info.reason);
    /* a device that cannot exist */
    cr_assert_eq(dinf_device_query(1 << 20, &info), DINF_STATUS_OK);
    cr_assert_eq(info.usable, 0);
    cr_assert_neq(info.reason[0], '\0');
}

Test(core, device_query_rejects_bad_arguments) {
    cr_assert_eq(dinf_device_query(0, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_device_query: info is NULL");
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    cr_assert_eq(dinf_device_query(-1, &info), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_device_query: device=-1 is negative");
    info.size = 8;
    cr_assert_eq(dinf_device_query(0, &info), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "info->size=8 is smaller than") != NULL, "%s",
              dinf_last_error());
}
