/*
 * CUDA launchers of the FP8 / BF16 operations of core.h (kernels/core/fp8.cu).
 * Called by lib/core/fp8.c after it has checked every argument: the
 * launchers trust their inputs. Each enqueues its kernel on place->stream on
 * device place->device (setting the calling thread's current device for the
 * launch and restoring it afterwards), returns without synchronising, and
 * reports a failed launch as DINF_STATUS_CUDA_ERROR naming `func`.
 * Not installed.
 */
#ifndef DINF_FP8_CUDA_H
#define DINF_FP8_CUDA_H

#include "parallel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* src, dst: count elements (count > 0); the pair is one dinf_convert
 * supports and src_dtype != dst_dtype. */
dinf_status dinf__fp8_convert_cuda(const char *func, const dinf__place *place, const void *src,
                                   dinf_dtype src_dtype, void *dst, dinf_dtype dst_dtype,
                                   int64_t count);

/* x: [m][k] (x_ld) float32 or bfloat16; q: [m][k] (q_ld) e4m3;
 * scales: [ceil(m/block_rows)][ceil(k/128)]; m, k > 0; block_rows 1 or 128. */
dinf_status dinf__fp8_quantize_cuda(const char *func, const dinf__place *place, const void *x,
                                    dinf_dtype x_dtype, int64_t m, int64_t k, int64_t x_ld,
                                    int32_t block_rows, uint8_t *q, int64_t q_ld, float *scales);

/* A same-dtype dinf_convert: bytes > 0 bytes from src to dst (cudaMemcpyAsync). */
dinf_status dinf__fp8_copy_cuda(const char *func, const dinf__place *place, const void *src,
                                void *dst, size_t bytes);

/* scales: [m][kb]; out: [kb][aligned_m]; kb > 0, aligned_m > 0. */
dinf_status dinf__fp8_scale_layout_mn_major_cuda(const char *func, const dinf__place *place,
                                                 const float *scales, int64_t m, int64_t kb,
                                                 int64_t aligned_m, float *out);

#ifdef __cplusplus
}
#endif

#endif
