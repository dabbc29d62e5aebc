/* ops/alibi_attention_isa.c — sl_alibi_attention's tile kernels (alibi_attention_kernels.h)
 * for one SIMD level (ops/isa.h): AVX-512 (blocks of 4 rows x 4 vectors of 16 floats in its 32
 * registers), AVX2 (4 x 2 vectors of 8 in 16 registers) or the generic level (4 x 2 vectors of
 * 4). */
#include "alibi_attention.h"

#if SL_VEC_BYTES == 64
#define VEC_BYTES 64
#define MR 4
#define NV 4
#elif SL_VEC_BYTES == 32
#define VEC_BYTES 32
#define MR 4
#define NV 2
#else
#define VEC_BYTES 16
#define MR 4
#define NV 2
#endif

typedef float vec_f32 __attribute__((vector_size(VEC_BYTES)));
typedef int32_t ivec_f32 __attribute__((vector_size(VEC_BYTES)));
typedef double vec_f64 __attribute__((vector_size(VEC_BYTES)));
typedef int64_t ivec_f64 __attribute__((vector_size(VEC_BYTES)));
typedef int32_t iseg_f32; /* the lane types of ivec_f32 and ivec_f64 (segment ids in tiles) */
typedef int64_t iseg_f64;

/* exp of a vector of floats x <= 0 (every argument here is a logit minus a max or a
 * log-sum-exp over it), within 1.05 ulp: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2/2,
 * exp(r) by Cephes' expf polynomial. 0 below log(FLT_MIN) and for -inf; NaN stays NaN. */
static inline vec_f32 vexp_f32(vec_f32 x)
{
    const ivec_f32 tiny = x < -87.33654f;
    x = (vec_f32)((ivec_f32)x & ~tiny); /* tiny lanes: 0, any finite value would do */
    vec_f32 t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    vec_f32 n = t - 12582912.0f;
    vec_f32 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vec_f32 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    ivec_f32 e = (__builtin_convertvector(n, ivec_f32) + 127) << 23; /* 2^n, n in [-126, 0] */
    vec_f32 y = p * (vec_f32)e;
    return (vec_f32)((ivec_f32)y & ~tiny);
}

/* f64 is the reference precision: libm's exp, lane by lane. */
static inline vec_f64 vexp_f64(vec_f64 x)
{
    for (int i = 0; i < (int)(VEC_BYTES / sizeof(double)); i++) x[i] = exp(x[i]);
    return x;
}

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
