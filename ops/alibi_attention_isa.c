/* ops/alibi_attention_isa.c — sl_alibi_attention's tile kernels (alibi_attention_kernels.h)
 * for one SIMD level (tensor/isa.h): AVX-512 (blocks of 4 rows x 4 vectors of 16 floats in its 32
 * registers, or 8 x 2 for heads of 32 floats), AVX2 (6 x 2 vectors of 8 in 16 registers: 12
 * accumulators, enough to cover the latency of two FMA pipes, and 6 broadcasts per 2 loads) or
 * the generic level (4 x 2 vectors of 4). */
#include "alibi_attention.h"
#include "simd.h"

#define VEC_BYTES SL_VEC_BYTES
#if SL_VEC_BYTES == 64
#define MR 4
#define NV 4
#elif SL_VEC_BYTES == 32
#define MR 6
#define NV 2
#else
#define MR 4
#define NV 2
#endif
/* Rows of the blocks of two vectors when NV > 2, for as many accumulators as MR x NV: a head of
 * 32 floats is two AVX-512 vectors, which blocks of MR x 1 would cover with 4 accumulators, too
 * few chains to hide the FMA latency. */
#define MR2 (NV > 2 ? MR * NV / 2 : MR)

typedef sl_vf vec_f32; /* the kernels' vectors (ops/simd.h) */
typedef sl_vi ivec_f32;
typedef sl_vd vec_f64;
typedef sl_vl ivec_f64;
typedef int32_t iseg_f32; /* the lane types of ivec_f32 and ivec_f64 (segment ids in tiles) */
typedef int64_t iseg_f64;

/* Every argument of exp here is a logit minus a max or a log-sum-exp over it: x <= 0. */
static inline vec_f32 vexp_f32(vec_f32 x) { return sl_vf_exp_nonpos(x); }
static inline vec_f64 vexp_f64(vec_f64 x) { return sl_vd_exp(x); }

#define SL_KERNELS "alibi_attention_kernels.h"
#include "instantiate.h"

/* The scratch size as a function of (D, Dv) alone. */
static size_t scratch_f32(int64_t D, int64_t Dv) { return carve_f32(NULL, D, Dv, NULL); }
static size_t scratch_f64(int64_t D, int64_t Dv) { return carve_f64(NULL, D, Dv, NULL); }

const sl__attn_level SL_ISA(sl__attn_level) = {
    {scratch_f32, forward_task_f32, kv_grad_task_f32, q_grad_task_f32, group_grad_task_f32,
     row_dots_f32},
    {scratch_f64, forward_task_f64, kv_grad_task_f64, q_grad_task_f64, group_grad_task_f64,
     row_dots_f64},
};
