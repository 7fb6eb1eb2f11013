/*
 * libdeepinfra: DeepSeek's published inference and training infrastructure
 * techniques as a C library. Include this umbrella header and link
 * -ldeepinfra (pkg-config --cflags --libs deepinfra).
 *
 * Modules (one header each, all independent; each depends only on core):
 *   deepinfra/core.h   status codes, dinf_last_error, version, dtypes, device query,
 *                      execution place, number formats and FP8 quantization
 *   deepinfra/eplb.h   expert-parallel load-balancing plans (DeepSeek EPLB)
 *   deepinfra/gemm.h   FP8 GEMMs with fine-grained scaling (DeepGEMM-style)
 *   deepinfra/jit.h    the run-time compilation cache behind the GEMM kernels: cache
 *                      directory, ahead-of-serving precompilation, counters
 *   deepinfra/mla.h    MLA decode over a paged KV cache with split-KV scheduling (FlashMLA)
 *   deepinfra/ep.h     MoE expert-parallel dispatch/combine (DeepEP v1 semantics): layout,
 *                      normal and low-latency modes, FP8 dispatch, over threads/NCCL/CUDA peers
 *   deepinfra/dualpipe.h  pipeline schedules (DualPipe, DualPipeV, 1F1B, ZB1P):
 *                      generate, validate, simulate, draw, execute
 */
#ifndef DEEPINFRA_H
#define DEEPINFRA_H

#include "deepinfra/core.h"
#include "deepinfra/dualpipe.h"
#include "deepinfra/ep.h"
#include "deepinfra/eplb.h"
#include "deepinfra/gemm.h"
#include "deepinfra/jit.h"
#include "deepinfra/mla.h"

#endif /* DEEPINFRA_H */
