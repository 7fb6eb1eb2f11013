/*
 * CUDA launchers of the MLA decode (kernels/mla/mla_decode.cu). Called by
 * lib/mla/mla.c after it has checked every argument it can see from the host
 * (shapes, strides, pointers, alignment, overlap); the values in device
 * memory (lengths, block table, plan) are guarded inside the kernels. Each
 * enqueues its kernels on place->stream on device place->device (restoring
 * the caller's current device), does not synchronise, is graph-capturable,
 * and fails with DINF_STATUS_UNSUPPORTED on a device that is not sm_90 and
 * DINF_STATUS_CUDA_ERROR on a failed launch. Not installed.
 */
#ifndef DINF_MLA_CUDA_H
#define DINF_MLA_CUDA_H

#include "../core/parallel.h"
#include "mla_hd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dinf__mla_plan_lengths on the device (one thread): the dense plan
 * (cache_seqlens) or the sparse one (requests b * s_q + t); L->lens is device
 * memory or NULL. Writes meta [parts][8] and num_splits [requests + 1]. */
dinf_status dinf__mla_metadata_cuda(const char *func, const dinf__place *place,
                                    const dinf__mla_lengths *L, int64_t requests, int32_t parts,
                                    int32_t *meta, int32_t *num_splits);

/* The split-KV decode then the combine; p->batch > 0, workspace carved. */
dinf_status dinf__mla_decode_cuda(const char *func, const dinf__place *place,
                                  const dinf__mla_params *p);

/* The fast rung (kernels/mla/mla_decode_fast.cu): TMA + wgmma decode, then
 * the combine as a programmatic dependent launch. The caller checked
 * dinf__mla_fast_unsupported (lib/mla/mla_fast_hd.h). */
dinf_status dinf__mla_decode_fast_cuda(const char *func, const dinf__place *place,
                                       const dinf__mla_params *p, int seesaw);

/* The log-sum-exp combine of split requests (kernels/mla/mla_decode.cu);
 * pdl = 1 launches it with cudaLaunchAttributeProgrammaticStreamSerialization
 * (it waits for the previous kernel with griddepcontrol.wait either way). */
dinf_status dinf__mla_combine_cuda(const char *func, const dinf__place *place,
                                   const dinf__mla_params *p, int pdl);

/* FP8 quantize-into-cache; num_tokens > 0; slots outside [0, num_slots) skipped. */
dinf_status dinf__mla_quantize_fp8_cuda(const char *func, const dinf__place *place,
                                        const uint16_t *kv, int64_t num_tokens, int32_t h_kv,
                                        int64_t kv_token_ld, const int64_t *slot_mapping,
                                        uint8_t *k_cache, int64_t num_slots, int32_t page,
                                        int64_t kv_block_stride, int64_t kv_token_stride);

/* MODEL1 quantize-into-cache; num_tokens > 0; slots outside [0, num_slots) skipped. */
dinf_status dinf__mla_quantize_model1_cuda(const char *func, const dinf__place *place,
                                           const uint16_t *kv, int64_t num_tokens,
                                           int64_t kv_token_ld, const int64_t *slot_mapping,
                                           uint8_t *k_cache, int64_t num_slots, int32_t page,
                                           int64_t kv_block_stride);

#ifdef __cplusplus
}
#endif

#endif
