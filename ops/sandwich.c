/* ops/sandwich.c — Sandwich, the parameter-free relative-position bias of Chi, Fan, Rudnicky and
 * Ramadge, "Dissecting Transformer Length Extrapolation via the Lens of Receptive Field
 * Analysis" (ACL 2023).
 *
 * Sandwich keeps, of the score q_m . k_n of a model whose inputs carry sinusoidal embeddings
 * p_m of dimension d', only the position-position term p_m . p_n, which for Vaswani et al.'s
 * sinusoids is a function of the distance alone:
 *     p_m . p_n = sum_{k=1}^{d'/2} [sin(m w_k) sin(n w_k) + cos(m w_k) cos(n w_k)]
 *               = sum_{k=1}^{d'/2} cos((m - n) w_k),           w_k = 10000^(-2k/d').
 * It equals d'/2 at distance 0 and decays, overall logarithmically (with ripples), with the
 * distance: the shape of KERPLE's and of T5's learned biases. Sandwich subtracts d'/2 (a
 * constant per row, which the softmax ignores, so that the bias is 0 at distance 0 and negative
 * elsewhere) and, like ALiBi's slopes, gives head h (1-based, of H) its own scale:
 *     bias[h,i,j] = (sum_{k=1}^{d'/2} cos((p_i - j) w_k) - d'/2) / (8 h / H)
 * added to the scaled scores q . k / sqrt(D). The frequencies k = 1 .. d'/2 (not 0 .. d'/2 - 1:
 * the k = 0 term, cos(0) = 1 at every distance, would add nothing) and the scale 8h/H follow
 * the authors' formulation as NVIDIA NeMo implements it (SandwichRelativePositionEmbedding),
 * which takes d' to be the head dimension; here d' is the caller's (the GPT's sandwich_dim,
 * the head dimension by default). cos is even, so the bias of keys after the query (an encoder)
 * mirrors that of keys before it.
 *
 * The bias has no parameters: no node is recorded. It is made as a table (H, n) of distances in
 * double, then spread over (H, tq, tk) (distance.c). */
#include "distance.h"

#include <math.h>

#define SL_KERNELS "sandwich_kernels.h"
#include "instantiate.h"

typedef struct {
    sl_dtype dtype;
    int64_t H, dim, n;
    const double *w;
    void *tab;
} table_job;

static void table_rows(void *ctx, int64_t d0, int64_t d1)
{
    const table_job *j = ctx;
    if (j->dtype == SL_F32) sandwich_table_f32(j->H, j->dim, j->w, j->n, j->tab, d0, d1);
    else sandwich_table_f64(j->H, j->dim, j->w, j->n, j->tab, d0, d1);
}

sl_tensor *sl_sandwich_bias(sl_dtype dtype, int n_heads, int64_t dim, int64_t tq, int64_t tk)
{
    static const char *op = "sl_sandwich_bias";
    if (dtype != SL_F32 && dtype != SL_F64)
        return SL_FAIL(SL_ERR_DTYPE, "%s: dtype must be f32 or f64, not %s", op,
                       sl_dtype_name(dtype));
    if (n_heads < 1 || dim < 2 || dim % 2)
        return SL_FAIL(SL_ERR_ARG, "%s: n_heads %d must be >= 1 and dim %lld even and >= 2", op,
                       n_heads, (long long)dim);
    if (tq < 1 || tk < 1)
        return SL_FAIL(SL_ERR_ARG, "%s: tq %lld and tk %lld must be >= 1", op, (long long)tq,
                       (long long)tk);
    int64_t H = n_heads, n = sl__distance_count(tq, tk);
    sl_tensor *out = sl__new(op, dtype, 3, (int64_t[]){H, tq, tk});
    void *tab =
        out ? sl_arena_alloc(sl_arena_current(), sl_dtype_size(dtype) * (size_t)(H * n), 64) : NULL;
    double *w =
        tab ? sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)(dim / 2), 64) : NULL;
    if (!w) return NULL;
    for (int64_t k = 1; k <= dim / 2; k++) w[k - 1] = pow(10000.0, -2.0 * (double)k / (double)dim);
    table_job tj = {dtype, H, dim, n, w, tab};
    int64_t grain = 4096 / (dim / 2) > 1 ? 4096 / (dim / 2) : 1;
    sl_parallel_for(n, grain, table_rows, &tj);
    sl__distance_fill(dtype, tab, H, n, tq, tk, out->data);
    return out;
}
