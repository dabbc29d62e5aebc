/* ops/kerple.c — KERPLE's logarithmic relative-position bias (Chi, Fan, Ramadge and Rudnicky,
 * "KERPLE: Kernelized Relative Positional Embedding for Length Extrapolation", NeurIPS 2022;
 * the "log" variant, which the paper finds extrapolates best):
 *
 *     bias[h,i,j] = -r1[h] log(1 + r2[h] |p_i - j|),   r1, r2 > 0 per head,
 *
 * added to the scaled scores q . k / sqrt(D) (as the authors' GPT-NeoX code adds it to the
 * scores after their 1/sqrt(D) scaling). Query row i sits at p_i = tk - tq + i. The bias depends
 * on the distance only, so it is made as a table (H, n) of the n distances and spread over
 * (H, tq, tk) (distance.c); the backward sums the bias gradient per distance first, which
 * makes the parameters' gradients O(H n) after an O(H tq tk) sum.
 *
 * The op takes r1 and r2 themselves; how they stay positive is the caller's choice. The
 * authors clamp the parameters to at least 0.01 in place at every forward (a projection
 * outside the optimizer); the attention module here learns log r1 and log r2 instead (r =
 * exp(theta), as it holds learned ALiBi slopes: positive without touching the parameters,
 * and a step changes r by a ratio), initialised at the authors' r1 ~ U(0, 2), r2 ~ U(0, 1)
 * clamped at 0.01 (nn/attention.c). A causal caller masks the keys after the query; their bias
 * (that of the distance j - p_i) is then never seen. */
#include "distance.h"

#include <math.h>

#define SL_KERNELS "kerple_kernels.h"
#include "instantiate.h"

typedef struct {
    int64_t tq, tk, n;
} kerple_saved;

typedef struct {
    sl_dtype dtype;
    const void *r1, *r2;
    int64_t n;
    void *tab;
} table_job;

static void table_heads(void *ctx, int64_t h0, int64_t h1)
{
    const table_job *j = ctx;
    if (j->dtype == SL_F32) kerple_table_f32(j->r1, j->r2, j->n, j->tab, h0, h1);
    else kerple_table_f64(j->r1, j->r2, j->n, j->tab, h0, h1);
}

/* bias[h,i,j] = -r1[h] log(1 + r2[h] d), d = |p_i - j|. With G[h, d] = sum of dL/dbias over
 * the pairs at distance d:
 *     dL/dr1[h] = -sum_d G[h,d] log(1 + r2[h] d)
 *     dL/dr2[h] = -r1[h] sum_d G[h,d] d / (1 + r2[h] d) */
static bool kerple_backward(sl_node *nd)
{
    const kerple_saved *s = nd->saved;
    sl_tensor *r1 = nd->in[0], *r2 = nd->in[1];
    sl_tensor *g1 = r1->requires_grad ? sl_input_grad(nd, 0) : NULL;
    sl_tensor *g2 = r2->requires_grad ? sl_input_grad(nd, 1) : NULL;
    if ((r1->requires_grad && !g1) || (r2->requires_grad && !g2)) return false;
    if (!g1 && !g2) return true;
    int64_t H = r1->shape[0];
    size_t bytes = sizeof(double) * (size_t)(H * s->n);
    double *G = sl_arena_alloc(sl_arena_current(), bytes, 64);
    if (!G) return false;
    memset(G, 0, bytes);
    sl__distance_sums(r1->dtype, nd->grad->data, H, s->n, s->tq, s->tk, G);
    sl_tensor *c1 = sl__contig("sl_kerple_bias", r1), *c2 = sl__contig("sl_kerple_bias", r2);
    if (!c1 || !c2) return false;
    if (r1->dtype == SL_F32)
        kerple_backward_f32(sl_ptr(c1), sl_ptr(c2), G, H, s->n, g1 ? g1->data : NULL,
                            g2 ? g2->data : NULL);
    else
        kerple_backward_f64(sl_ptr(c1), sl_ptr(c2), G, H, s->n, g1 ? g1->data : NULL,
                            g2 ? g2->data : NULL);
    return true;
}

sl_tensor *sl_kerple_bias(sl_tensor *r1, sl_tensor *r2, int64_t tq, int64_t tk)
{
    static const char *op = "sl_kerple_bias";
    SL_CHECK_TENSOR(op, r1);
    SL_CHECK_TENSOR(op, r2);
    if (!sl__check_float(op, r1) || !sl__check_same_dtype(op, r1, r2)) return NULL;
    if (r1->ndim != 1 || !sl__same_shape(r1, r2))
        return SL_FAIL(SL_ERR_SHAPE, "%s: r1 %s and r2 %s must both be (H)", op, sl_shape_str(r1),
                       sl_shape_str(r2));
    if (tq < 1 || tk < 1)
        return SL_FAIL(SL_ERR_ARG, "%s: tq %lld and tk %lld must be >= 1", op, (long long)tq,
                       (long long)tk);
    int64_t H = r1->shape[0], n = sl__distance_count(tq, tk);
    for (int64_t h = 0; h < H; h++) {
        double a = sl_get(r1, h), b = sl_get(r2, h);
        if (!(isfinite(a) && isfinite(b) && b >= 0))
            return SL_FAIL(SL_ERR_ARG,
                           "%s: head %lld has r1 %g, r2 %g; both must be finite "
                           "and r2 >= 0 (log(1 + r2 d) is not defined for every d otherwise)",
                           op, (long long)h, a, b);
    }
    sl_tensor *c1 = sl__contig(op, r1), *c2 = c1 ? sl__contig(op, r2) : NULL;
    sl_tensor *out = c2 ? sl__new(op, r1->dtype, 3, (int64_t[]){H, tq, tk}) : NULL;
    void *tab =
        out ? sl_arena_alloc(sl_arena_current(), sl_dtype_size(r1->dtype) * (size_t)(H * n), 64)
            : NULL;
    if (!tab) return NULL;
    table_job tj = {r1->dtype, sl_ptr(c1), sl_ptr(c2), n, tab};
    sl_parallel_for(H, 1, table_heads, &tj);
    sl__distance_fill(r1->dtype, tab, H, n, tq, tk, out->data);
    sl_node *nd;
    if (!sl_record(&nd, op, out, 2, (sl_tensor *[]){r1, r2}, kerple_backward, sizeof(kerple_saved)))
        return NULL;
    if (nd) *(kerple_saved *)nd->saved = (kerple_saved){tq, tk, n};
    if (!sl_save_for_backward(nd, r1) || !sl_save_for_backward(nd, r2)) return NULL;
    return out;
}
