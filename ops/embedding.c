/* ops/embedding.c — embedding lookup: rows of a table picked by integer indices.
 *
 *     weight (V, D), indices (...) i32 -> y (..., D)
 *
 * The kernels live in embedding_kernels.h (one type-generic source, made into f32 and f64
 * functions for every SIMD level by embedding_isa.c): the forward copies rows in parallel over
 * the tokens, the backward scatter-adds in parallel over the columns. */
#include "embedding.h"

#include "rows.h"

/* The running CPU's kernels (embedding_isa.c). */
static const sl__embedding_kernels *kernels(void) { return SL_ISA_PICK(sl__embedding_kernels); }

typedef struct {
    const int32_t *idx; /* contiguous indices (n) */
} embedding_saved;

/* y[i, :] = weight[idx[i], :], so dweight[v, :] = sum over the tokens i with idx[i] == v of
 * g[i, :]: a scatter-add, parallel over columns. */
static bool embedding_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    const embedding_saved *s = n->saved;
    sl_tensor *gw = sl_input_grad(n, 0);
    if (!gw) return false;
    int64_t D = gw->shape[1], ntok = sl_numel(n->in[1]);
    embedding_job j = {.dtype = gw->dtype, .g = sl_ptr(n->grad), .dw = sl_ptr(gw), .n = ntok,
                       .D = D, .idx = s->idx};
    sl_parallel_for(D, row_grain(ntok), kernels()->backward, &j); /* a column is ntok long */
    return true;
}

sl_tensor *sl_embedding(sl_tensor *weight, sl_tensor *indices)
{
    const char *op = "sl_embedding";
    SL_CHECK_TENSOR(op, weight);
    SL_CHECK_TENSOR(op, indices);
    if (!sl__check_float(op, weight)) return NULL;
    if (weight->ndim != 2)
        return SL_FAIL(SL_ERR_SHAPE, "sl_embedding: weight must be 2-D [V, D], got %s",
                       sl_shape_str(weight));
    if (indices->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_embedding: indices must be i32, got %s %s",
                       sl_dtype_name(indices->dtype), sl_shape_str(indices));
    if (indices->ndim + 1 > SL_MAX_DIMS)
        return SL_FAIL(SL_ERR_SHAPE, "sl_embedding: indices %s leave no room for the output's "
                       "last dim (at most %d dims)", sl_shape_str(indices), SL_MAX_DIMS);
    int64_t V = weight->shape[0], D = weight->shape[1];
    sl_tensor *ic = sl__contig(op, indices);
    if (!ic) return NULL;
    const int32_t *idx = sl_ptr(ic);
    int64_t ntok = sl_numel(ic);
    for (int64_t i = 0; i < ntok; i++)
        if (idx[i] < 0 || idx[i] >= V)
            return SL_FAIL(SL_ERR_INDEX,
                           "sl_embedding: index %d at flat position %lld is out of range [0, %lld) "
                           "for weight %s",
                           (int)idx[i], (long long)i, (long long)V, sl_shape_str(weight));

    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, indices->shape, sizeof(int64_t) * (size_t)indices->ndim);
    shape[indices->ndim] = D;
    sl_tensor *y = sl__new(op, weight->dtype, indices->ndim + 1, shape);
    if (!y) return NULL;
    embedding_job j = {.dtype = weight->dtype, .w = sl_ptr(weight), .y = y->data,
                       .ws0 = weight->strides[0], .ws1 = weight->strides[1], .n = ntok, .D = D,
                       .idx = idx};
    sl_parallel_for(ntok, row_grain(D), kernels()->forward, &j);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){weight, indices}, embedding_backward,
                   sizeof(embedding_saved)))
        return NULL;
    if (n) ((embedding_saved *)n->saved)->idx = idx;
    if (!sl_save_for_backward(n, ic)) return NULL;
    return y;
}
