/* nn/modules.c — Linear, Embedding, LayerNorm, Dropout and the MLP.
 *
 * Each module is a struct in its registry's arena holding pointers to its parameters, and a
 * forward function that composes differentiable ops: the backward comes from the tape.
 */
#include "internal.h"

#include <stdio.h>

/* "<module>.<leaf>", or just "<leaf>" for an unnamed module; too long a name is caught by
 * sl_params_add, which sees the whole of it. */
static sl_tensor *add_param(sl_params *ps, const char *module, const char *leaf, int ndim,
                            const int64_t *shape, bool decay)
{
    char name[2 * SL_PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s%s%s", module, module[0] ? "." : "", leaf);
    return sl_params_add(ps, name, ndim, shape, decay);
}

/* The module struct, zeroed, in the registry's arena. */
static void *module_alloc(const char *op, sl_params *ps, const char *name, size_t bytes)
{
    if (!ps) return SL_FAIL(SL_ERR_ARG, "%s: registry is NULL", op);
    if (!name) return SL_FAIL(SL_ERR_ARG, "%s: name is NULL", op);
    void *m = sl_arena_alloc(sl_params_arena(ps), bytes, 16);
    if (m) memset(m, 0, bytes);
    return m;
}

/* ---------------------------------------------------------------- Linear */

sl_linear_module *sl_linear_new(sl_params *ps, const char *name, int64_t in, int64_t out, bool bias,
                                sl_rng *rng)
{
    if (in < 1 || out < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_linear_new: %s: sizes in %lld, out %lld must be >= 1",
                       name ? name : "?", (long long)in, (long long)out);
    if (!rng) return SL_FAIL(SL_ERR_ARG, "sl_linear_new: rng is NULL");
    sl_linear_module *m = module_alloc("sl_linear_new", ps, name, sizeof *m);
    if (!m) return NULL;
    m->weight = add_param(ps, name, "weight", 2, (int64_t[]){out, in}, true);
    if (!m->weight || !sl_init_normal(m->weight, rng, 0.02)) return NULL;
    if (bias && !(m->bias = add_param(ps, name, "bias", 1, &out, false))) return NULL;
    return m;
}

/* y = x W^T + b through the fused sl_linear: one gemm over all of x's rows, W never copied,
 * the bias added as gemm finishes each block of rows. */
sl_tensor *sl_linear_forward(const sl_linear_module *m, sl_tensor *x)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_linear_forward: module is NULL");
    SL_CHECK_TENSOR("sl_linear_forward", x);
    const sl_tensor *w = m->weight;
    int64_t in = w->shape[1];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != in)
        return SL_FAIL(SL_ERR_SHAPE, "sl_linear_forward: input %s does not end in %lld features "
                       "(weight %s)", sl_shape_str(x), (long long)in, sl_shape_str(w));
    if (x->dtype != w->dtype)
        return SL_FAIL(SL_ERR_DTYPE, "sl_linear_forward: input is %s, weight is %s",
                       sl_dtype_name(x->dtype), sl_dtype_name(w->dtype));
    return sl_linear(x, m->weight, m->bias ? m->bias : SL_NONE, SL_ACT_NONE);
}

sl_tensor *sl_linear_forward_residual(const sl_linear_module *m, sl_tensor *x,
                                      sl_tensor *residual)
{
    SL_CHECK_TENSOR("sl_linear_forward_residual", residual);
    return sl__linear_forward_residual(m, x, residual);
}

sl_tensor *sl__linear_forward_residual(const sl_linear_module *m, sl_tensor *x,
                                       sl_tensor *residual)
{
    if (!residual || !m || !x || x == SL_NONE || !sl__is_live(x) || x->ndim < 1 ||
        x->dtype != m->weight->dtype || x->shape[x->ndim - 1] != m->weight->shape[1])
        return sl_linear_forward(m, x); /* without a residual, or for its error message */
    return sl_linear_residual(x, m->weight, m->bias ? m->bias : SL_NONE, SL_ACT_NONE, residual);
}

/* ---------------------------------------------------------------- Embedding */

sl_embedding_module *sl_embedding_new(sl_params *ps, const char *name, int64_t num, int64_t dim,
                                      sl_rng *rng)
{
    if (num < 1 || dim < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_embedding_new: %s: sizes num %lld, dim %lld must be >= 1",
                       name ? name : "?", (long long)num, (long long)dim);
    if (!rng) return SL_FAIL(SL_ERR_ARG, "sl_embedding_new: rng is NULL");
    sl_embedding_module *m = module_alloc("sl_embedding_new", ps, name, sizeof *m);
    if (!m) return NULL;
    m->weight = add_param(ps, name, "weight", 2, (int64_t[]){num, dim}, false);
    if (!m->weight || !sl_init_normal(m->weight, rng, 0.02)) return NULL;
    return m;
}

sl_tensor *sl_embedding_forward(const sl_embedding_module *m, sl_tensor *indices)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_embedding_forward: module is NULL");
    return sl_embedding(m->weight, indices);
}

/* ---------------------------------------------------------------- LayerNorm */

sl_layer_norm_module *sl_layer_norm_new(sl_params *ps, const char *name, int64_t dim, double eps)
{
    if (dim < 1)
        return SL_FAIL(SL_ERR_ARG, "sl_layer_norm_new: %s: dim %lld must be >= 1",
                       name ? name : "?", (long long)dim);
    if (!(eps >= 0))
        return SL_FAIL(SL_ERR_ARG, "sl_layer_norm_new: %s: eps %g must be >= 0",
                       name ? name : "?", eps);
    sl_layer_norm_module *m = module_alloc("sl_layer_norm_new", ps, name, sizeof *m);
    if (!m) return NULL;
    m->eps = eps > 0 ? eps : 1e-5;
    m->weight = add_param(ps, name, "weight", 1, &dim, false);
    m->bias = m->weight ? add_param(ps, name, "bias", 1, &dim, false) : NULL;
    if (!m->bias || !sl_fill(m->weight, 1.0)) return NULL;
    return m;
}

sl_tensor *sl_layer_norm_forward(const sl_layer_norm_module *m, sl_tensor *x)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_layer_norm_forward: module is NULL");
    return sl_layer_norm(x, m->weight ? m->weight : SL_NONE, m->bias ? m->bias : SL_NONE, m->eps);
}

/* ---------------------------------------------------------------- Dropout */

sl_tensor *sl_dropout_forward(const sl_dropout_module *m, sl_tensor *x, sl_rng *rng, bool train)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_dropout_forward: module is NULL");
    return sl_dropout(x, m->p, rng, train);
}

/* ---------------------------------------------------------------- MLP */

sl_mlp *sl_mlp_new(sl_params *ps, const char *name, int64_t dim, int64_t hidden, sl_rng *rng)
{
    sl_mlp *m = module_alloc("sl_mlp_new", ps, name, sizeof *m);
    if (!m) return NULL;
    char sub[2 * SL_PARAM_NAME_MAX];
    snprintf(sub, sizeof sub, "%s%sfc", name, name[0] ? "." : "");
    if (!(m->fc = sl_linear_new(ps, sub, dim, hidden, true, rng))) return NULL;
    snprintf(sub, sizeof sub, "%s%sproj", name, name[0] ? "." : "");
    if (!(m->proj = sl_linear_new(ps, sub, hidden, dim, true, rng))) return NULL;
    return m;
}

/* proj(gelu_tanh(fc(x))): (..., C) -> (..., hidden) -> (..., C). The GELU runs inside fc's
 * sl_linear, on each block of rows as gemm finishes it. */
sl_tensor *sl_mlp_forward(const sl_mlp *m, sl_tensor *x)
{
    return sl__mlp_forward_residual(m, x, NULL);
}

sl_tensor *sl_mlp_forward_residual(const sl_mlp *m, sl_tensor *x, sl_tensor *residual)
{
    SL_CHECK_TENSOR("sl_mlp_forward_residual", residual);
    return sl__mlp_forward_residual(m, x, residual);
}

sl_tensor *sl__mlp_forward_residual(const sl_mlp *m, sl_tensor *x, sl_tensor *residual)
{
    if (!m) return SL_FAIL(SL_ERR_ARG, "sl_mlp_forward: module is NULL");
    SL_CHECK_TENSOR("sl_mlp_forward", x);
    const sl_tensor *w = m->fc->weight;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1] || x->dtype != w->dtype)
        return sl_linear_forward(m->fc, x); /* for its error message */
    sl_tensor *h =
        sl_linear(x, m->fc->weight, m->fc->bias ? m->fc->bias : SL_NONE, SL_ACT_GELU_TANH);
    return sl__linear_forward_residual(m->proj, h, residual);
}
