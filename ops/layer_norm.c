/* ops/layer_norm.c — layer norm over the last dim, with optional weight and bias.
 *
 *     x (..., C), weight (C) or NULL, bias (C) or NULL -> y (..., C)
 *
 * The kernels live in layer_norm_kernels.h (one type-generic source, made into f32 and f64
 * functions for every SIMD level by layer_norm_isa.c). Rows run in parallel; each row's mean
 * and rstd are computed in double and saved for the backward, which sums the weight and bias
 * gradients per block of rows. */
#include "layer_norm.h"

#include <math.h>

#include "rows.h"

/* The running CPU's kernels (layer_norm_isa.c). */
static const sl__layer_norm_kernels *kernels(void) { return SL_ISA_PICK(sl__layer_norm_kernels); }

enum { MAX_BLOCKS = 64 }; /* row blocks of the weight/bias gradient */

typedef struct {
    sl_tensor *x, *w;    /* contiguous x and weight (w NULL without one) */
    double *mean, *rstd; /* (rows) */
} layer_norm_saved;

/* y = xhat * w + b with xhat = (x - mean) * rstd over each row of C, so with dxhat = g * w:
 *   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   dw = sum over rows of g * xhat,   db = sum over rows of g.
 * The rows are cut into at most MAX_BLOCKS blocks fixed by the shape alone. Each block sums its
 * own dw, db partials (in double) and a serial pass adds the blocks in order: no race, and the
 * same bits on any number of threads. */
static bool layer_norm_backward(sl_node *n)
{
    const layer_norm_saved *s = n->saved;
    sl_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    sl_tensor *gx = NULL, *gw = NULL, *gb = NULL;
    if (x->requires_grad && !(gx = sl_input_grad(n, 0))) return false;
    if (w && w->requires_grad && !(gw = sl_input_grad(n, 1))) return false;
    if (b && b->requires_grad && !(gb = sl_input_grad(n, 2))) return false;
    int64_t C = x->shape[x->ndim - 1], rows = sl__shape_numel(x->ndim - 1, x->shape);
    if (rows == 0 || C == 0) return true;

    int64_t blocks = rows * C / GRAIN;
    blocks = blocks < 1 ? 1 : blocks > MAX_BLOCKS ? MAX_BLOCKS : blocks;
    int64_t block_rows = (rows + blocks - 1) / blocks;
    blocks = (rows + block_rows - 1) / block_rows;
    int64_t nparts = (gw != NULL) + (gb != NULL);
    double *part = NULL;
    if (nparts) {
        size_t bytes = sizeof(double) * (size_t)(nparts * blocks * C);
        part = sl_arena_alloc(sl_arena_current(), bytes, 64);
        if (!part) return false;
    }
    layer_norm_job j = {
        .dtype = x->dtype, .x = sl_ptr(s->x), .w = s->w ? sl_ptr(s->w) : NULL,
        .g = sl_ptr(n->grad), .dx = gx ? sl_ptr(gx) : NULL, .mean = s->mean, .rstd = s->rstd,
        .dw = gw ? part : NULL, .db = gb ? part + (gw ? blocks * C : 0) : NULL,
        .rows = rows, .C = C, .block_rows = block_rows};
    const sl__layer_norm_kernels *k = kernels();
    sl_parallel_for(blocks, 1, k->backward, &j);
    if (gw) k->add_block_sums(gw->dtype, sl_ptr(gw), j.dw, blocks, C);
    if (gb) k->add_block_sums(gb->dtype, sl_ptr(gb), j.db, blocks, C);
    return true;
}

sl_tensor *sl_layer_norm(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, double eps)
{
    const char *op = "sl_layer_norm";
    SL_CHECK_TENSOR(op, x);
    SL_CHECK_OPTIONAL(op, weight);
    SL_CHECK_OPTIONAL(op, bias);
    weight = sl__opt(weight);
    bias = sl__opt(bias);
    if (!sl__check_float(op, x)) return NULL;
    if (x->ndim == 0)
        return SL_FAIL(SL_ERR_SHAPE, "sl_layer_norm: x must have at least 1 dim (normalised over "
                                     "the last), got []");
    int64_t C = x->shape[x->ndim - 1], rows = sl__shape_numel(x->ndim - 1, x->shape);
    sl_tensor *const params[2] = {weight, bias};
    const char *const names[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        if (!params[i]) continue;
        if (!sl__check_same_dtype(op, x, params[i])) return NULL;
        if (params[i]->ndim != 1 || params[i]->shape[0] != C)
            return SL_FAIL(SL_ERR_SHAPE,
                           "sl_layer_norm: %s %s does not match the last dim of x %s "
                           "(expected [%lld])",
                           names[i], sl_shape_str(params[i]), sl_shape_str(x), (long long)C);
    }
    if (!(eps >= 0) || isinf(eps))
        return SL_FAIL(SL_ERR_ARG, "sl_layer_norm: eps %g must be finite and >= 0", eps);

    sl_tensor *xc = sl__contig(op, x);
    sl_tensor *wc = weight ? sl__contig(op, weight) : NULL,
              *bc = bias ? sl__contig(op, bias) : NULL;
    sl_tensor *y = sl__new(op, x->dtype, x->ndim, x->shape);
    /* mean and rstd per row, kept for the backward */
    double *stats = y ? sl_arena_alloc(y->arena, sizeof(double) * (size_t)(2 * rows + 1), 64)
                      : NULL;
    if (!xc || (weight && !wc) || (bias && !bc) || !stats) return NULL;
    layer_norm_job j = {.dtype = x->dtype, .x = sl_ptr(xc), .w = wc ? sl_ptr(wc) : NULL,
                       .b = bc ? sl_ptr(bc) : NULL, .y = y->data, .mean = stats,
                       .rstd = stats + rows, .rows = rows, .C = C, .eps = eps};
    if (C > 0) sl_parallel_for(rows, row_grain(C), kernels()->forward, &j);
    sl_node *n;
    if (!sl_record(&n, op, y, 3, (sl_tensor *[]){x, weight, bias}, layer_norm_backward,
                   sizeof(layer_norm_saved)))
        return NULL;
    if (n) *(layer_norm_saved *)n->saved = (layer_norm_saved){xc, wc, stats, stats + rows};
    if (!sl_save_for_backward(n, xc) || !sl_save_for_backward(n, wc)) return NULL;
    return y;
}
