/* ops/rotary.c — sinusoidal position encodings: Vaswani et al.'s table, added to token
 * embeddings, and rotary position embedding (RoPE; Su et al., "RoFormer: Enhanced Transformer
 * with Rotary Position Embedding", 2021), which rotates queries and keys. Both use the angles
 * p w_i of position p at the frequencies w_i = base^(-2i/D), base 10000.
 *
 * sl_sinusoidal (Vaswani et al., "Attention Is All You Need", 2017, section 3.5):
 *     PE[p, 2i] = sin(p w_i),   PE[p, 2i + 1] = cos(p w_i),   w_i = 10000^(-2i/C)
 *
 * sl_rotary: each row x[b,h,t,:] of x (B, H, T, D) sits at position p = pos0 + t, and each
 * pair of its features is rotated by the angle p w_i, i in [0, D/2):
 *     y[i]       = x[i] cos(p w_i) - x[i + D/2] sin(p w_i)
 *     y[i + D/2] = x[i] sin(p w_i) + x[i + D/2] cos(p w_i)
 * The pairs are (i, i + D/2), the "half-split" layout of GPT-NeoX and of LLaMA as written for
 * Hugging Face (rotate_half), not RoFormer's interleaved (2i, 2i + 1). Both are the same
 * rotations of a permuted feature order, so a model learns the same with either; this one reads
 * each row as two contiguous halves.
 *
 * Rotating queries and keys this way makes their dot product depend on positions only through
 * their difference: (R_m q) . (R_n k) = q . R_(n-m) k, since rotations compose and R^T = R^-1.
 *
 * Angles are formed and their cos and sin taken in double (p can be large; the angle must not
 * lose its fraction): for RoPE once per call as a (T, D/2) table in x's dtype, kept for
 * backward. */
#include "internal.h"

#include <math.h>

enum { GRAIN_ELEMS = 1 << 14 }; /* elements per parallel chunk, at least */

/* ---------------------------------------------------------------- kernels */

/* One row of D = 2 half features: out = R x (sign +1, forward) or out += R^T x (sign -1,
 * backward), with R the rotation by the angles whose cos and sin are c[i], s[i]. x is read
 * with element stride xs; out is contiguous. */
#define ROTARY_KERNELS(T, SUF)                                                                   \
    static void rotate_row_##SUF(const T *x, int64_t xs, T *out, int64_t half, const T *c,       \
                                 const T *s, bool backward)                                      \
    {                                                                                            \
        const T *x2 = x + half * xs;                                                             \
        T *out2 = out + half;                                                                    \
        if (!backward)                                                                           \
            for (int64_t i = 0; i < half; i++) {                                                 \
                T a = x[i * xs], b = x2[i * xs];                                                 \
                out[i] = a * c[i] - b * s[i];                                                    \
                out2[i] = a * s[i] + b * c[i];                                                   \
            }                                                                                    \
        else                                                                                     \
            for (int64_t i = 0; i < half; i++) {                                                 \
                T a = x[i * xs], b = x2[i * xs];                                                 \
                out[i] += a * c[i] + b * s[i];                                                   \
                out2[i] += b * c[i] - a * s[i];                                                  \
            }                                                                                    \
    }

ROTARY_KERNELS(float, f32)
ROTARY_KERNELS(double, f64)

/* ---------------------------------------------------------------- jobs */

typedef struct {
    sl_dtype dtype;
    int64_t H, T, half;
    const void *cos, *sin; /* (T, half) */
    const char *x;         /* element (0,0,0,0) */
    int64_t xs[4];         /* x's element strides */
    char *out;             /* (B, H, T, D), contiguous */
    bool backward;
} rotary_job;

static void rotary_rows(void *ctx, int64_t r0, int64_t r1)
{
    const rotary_job *j = ctx;
    size_t es = sl_dtype_size(j->dtype);
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / (j->H * j->T), h = r / j->T % j->H, t = r % j->T;
        const char *x = j->x + (b * j->xs[0] + h * j->xs[1] + t * j->xs[2]) * (int64_t)es;
        char *out = j->out + r * 2 * j->half * (int64_t)es;
        if (j->dtype == SL_F32)
            rotate_row_f32((const float *)x, j->xs[3], (float *)out, j->half,
                           (const float *)j->cos + t * j->half,
                           (const float *)j->sin + t * j->half, j->backward);
        else
            rotate_row_f64((const double *)x, j->xs[3], (double *)out, j->half,
                           (const double *)j->cos + t * j->half,
                           (const double *)j->sin + t * j->half, j->backward);
    }
}

typedef struct {
    sl_dtype dtype;
    int64_t pos0, half;
    double base;
    void *cos, *sin; /* (T, half) */
} table_job;

/* Rows [t0, t1) of the cos and sin tables: angle (pos0 + t) w_i, in double. */
static void table_rows(void *ctx, int64_t t0, int64_t t1)
{
    const table_job *j = ctx;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t i = 0; i < j->half; i++) {
            double w = pow(j->base, -2.0 * (double)i / (double)(2 * j->half));
            double a = (double)(j->pos0 + t) * w;
            int64_t k = t * j->half + i;
            if (j->dtype == SL_F32) {
                ((float *)j->cos)[k] = (float)cos(a);
                ((float *)j->sin)[k] = (float)sin(a);
            } else {
                ((double *)j->cos)[k] = cos(a);
                ((double *)j->sin)[k] = sin(a);
            }
        }
}

/* ---------------------------------------------------------------- sinusoidal table */

typedef struct {
    void *pe; /* (T, C) */
    sl_dtype dtype;
    int64_t pos0, C;
} sinusoid_job;

static void sinusoid_rows(void *ctx, int64_t t0, int64_t t1)
{
    const sinusoid_job *j = ctx;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t c = 0; c < j->C; c++) {
            double w = pow(SL_ROTARY_BASE, -(double)(c - c % 2) / (double)j->C); /* 2i = c - c%2 */
            double a = (double)(j->pos0 + t) * w, v = c % 2 ? cos(a) : sin(a);
            if (j->dtype == SL_F32) ((float *)j->pe)[t * j->C + c] = (float)v;
            else ((double *)j->pe)[t * j->C + c] = v;
        }
}

sl_tensor *sl_sinusoidal(sl_dtype dtype, int64_t pos0, int64_t T, int64_t C)
{
    static const char *op = "sl_sinusoidal";
    if (dtype != SL_F32 && dtype != SL_F64)
        return SL_FAIL(SL_ERR_DTYPE, "%s: dtype must be f32 or f64, not %s", op,
                       sl_dtype_name(dtype));
    if (T < 1 || C < 1)
        return SL_FAIL(SL_ERR_ARG, "%s: T %lld and C %lld must be >= 1", op, (long long)T,
                       (long long)C);
    if (pos0 < 0 || pos0 > (INT64_C(1) << 52))
        return SL_FAIL(SL_ERR_ARG, "%s: pos0 %lld outside [0, 2^52]", op, (long long)pos0);
    sl_tensor *pe = sl__new("sl_sinusoidal", dtype, 2, (int64_t[]){T, C});
    if (!pe) return NULL;
    sinusoid_job j = {pe->data, dtype, pos0, C};
    sl_parallel_for(T, C < 1024 ? 1024 / C : 1, sinusoid_rows, &j);
    return pe;
}

/* ---------------------------------------------------------------- the rotary op */

typedef struct {
    const void *cos, *sin; /* the forward's tables, in the output's arena */
} rotary_saved;

static void run_rows(const rotary_job *j, int64_t rows)
{
    int64_t D = 2 * j->half;
    int64_t grain = D > 0 && GRAIN_ELEMS / D > 1 ? GRAIN_ELEMS / D : 1;
    sl_parallel_for(rows, grain, rotary_rows, (void *)j);
}

/* y = R x row by row, R orthogonal, so dL/dx = R^T dL/dy: the inverse rotation (the angles
 * negated: cos the same, sin with its sign flipped), accumulated into gx. */
static bool rotary_backward(sl_node *n)
{
    const rotary_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    const sl_tensor *y = n->out;
    rotary_job j = {y->dtype, y->shape[1], y->shape[2], y->shape[3] / 2, s->cos, s->sin,
                    n->grad->data, {0}, gx->data, true};
    sl__contiguous_strides(4, y->shape, j.xs);
    run_rows(&j, y->shape[0] * y->shape[1] * y->shape[2]);
    return true;
}

sl_tensor *sl_rotary(sl_tensor *x, int64_t pos0, double base)
{
    static const char *op = "sl_rotary";
    SL_CHECK_TENSOR(op, x);
    if (!sl__check_float(op, x)) return NULL;
    if (x->ndim != 4)
        return SL_FAIL(SL_ERR_SHAPE, "%s: x %s is not (B, H, T, D)", op, sl_shape_str(x));
    int64_t T = x->shape[2], D = x->shape[3];
    if (D % 2)
        return SL_FAIL(SL_ERR_SHAPE, "%s: x %s: head dim %lld is odd (rotary rotates pairs)", op,
                       sl_shape_str(x), (long long)D);
    if (pos0 < 0 || pos0 > (INT64_C(1) << 52))
        return SL_FAIL(SL_ERR_ARG, "%s: pos0 %lld outside [0, 2^52]", op, (long long)pos0);
    if (!(base > 0) || !isfinite(base))
        return SL_FAIL(SL_ERR_ARG, "%s: base %g must be finite and > 0", op, base);
    int64_t half = D / 2;
    size_t es = sl_dtype_size(x->dtype), table_bytes = (size_t)(T * half) * es;
    sl_tensor *y = sl__new("sl_rotary", x->dtype, 4, x->shape);
    void *cs = y ? sl_arena_alloc(sl_arena_current(), table_bytes ? table_bytes : 1, 64) : NULL;
    void *sn = cs ? sl_arena_alloc(sl_arena_current(), table_bytes ? table_bytes : 1, 64) : NULL;
    if (!sn) return NULL;
    table_job tj = {x->dtype, pos0, half, base, cs, sn};
    int64_t tgrain = half > 0 && 1024 / half > 1 ? 1024 / half : 1;
    sl_parallel_for(T, tgrain, table_rows, &tj);
    rotary_job j = {x->dtype, x->shape[1], T, half, cs, sn, (const char *)sl_ptr(x), {0},
                    y->data, false};
    memcpy(j.xs, x->strides, sizeof j.xs);
    run_rows(&j, x->shape[0] * x->shape[1] * T);
    sl_node *n;
    if (!sl_record(&n, op, y, 1, &x, rotary_backward, sizeof(rotary_saved))) return NULL;
    if (n) *(rotary_saved *)n->saved = (rotary_saved){cs, sn};
    return y;
}
