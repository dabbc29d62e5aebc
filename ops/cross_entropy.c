/* ops/cross_entropy.c — mean cross-entropy of logits against integer targets.
 *
 *     logits (..., C), targets (...) i32 -> loss [] (the mean over the counted targets)
 *
 * The kernels live in cross_entropy_kernels.h (one type-generic source, made into f32 and f64
 * functions for every SIMD level by cross_entropy_isa.c): one log-sum-exp per row, in parallel
 * over the rows, saved for the backward; the loss sums them in row order. */
#include "cross_entropy.h"

#include <math.h>

#include "rows.h"

/* The running CPU's kernels (cross_entropy_isa.c). */
static const sl__cross_entropy_kernels *kernels(void)
{
    return SL_ISA_PICK(sl__cross_entropy_kernels);
}

typedef struct {
    sl_tensor *x;       /* contiguous logits (rows, C) */
    const int32_t *tgt; /* contiguous targets (rows) */
    double *lse;        /* (rows), set on counted rows */
    int64_t count;      /* counted rows */
    int32_t ignore;
} cross_entropy_saved;

/* loss = (1/count) * sum over counted rows r of (lse_r - x[r, t_r]), so
 *   dloss/dx[r, j] = (softmax(x_r)_j - [j == t_r]) / count   on counted rows, 0 on ignored ones,
 * times the incoming gradient g (a scalar). No counted row: the loss is a constant 0. */
static bool cross_entropy_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    const cross_entropy_saved *s = n->saved;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    if (s->count == 0) return true;
    int64_t C = s->x->shape[s->x->ndim - 1], rows = sl_numel(s->x) / C;
    cross_entropy_job j = {s->x->dtype, sl_ptr(s->x), sl_ptr(gx), s->tgt, s->lse,
                           sl_get(n->grad, 0) / (double)s->count, C, s->ignore};
    sl_parallel_for(rows, row_grain(C), kernels()->backward, &j);
    return true;
}

sl_tensor *sl_cross_entropy(sl_tensor *logits, sl_tensor *targets, int32_t ignore_index)
{
    const char *op = "sl_cross_entropy";
    SL_CHECK_TENSOR(op, logits);
    SL_CHECK_TENSOR(op, targets);
    if (!sl__check_float(op, logits)) return NULL;
    if (logits->ndim == 0)
        return SL_FAIL(SL_ERR_SHAPE, "sl_cross_entropy: logits must have at least 1 dim "
                                     "(classes last), got []");
    if (targets->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_cross_entropy: targets must be i32, got %s %s",
                       sl_dtype_name(targets->dtype), sl_shape_str(targets));
    bool match = targets->ndim == logits->ndim - 1;
    for (int i = 0; match && i < targets->ndim; i++) match = targets->shape[i] == logits->shape[i];
    if (!match)
        return SL_FAIL(SL_ERR_SHAPE,
                       "sl_cross_entropy: targets %s do not match the leading dims of logits %s "
                       "(expected %s)",
                       sl_shape_str(targets), sl_shape_str(logits),
                       sl__dims_str(logits->ndim - 1, logits->shape));
    int64_t C = logits->shape[logits->ndim - 1], rows = sl_numel(targets), count = 0;
    sl_tensor *tc = sl__contig(op, targets);
    if (!tc) return NULL;
    const int32_t *tgt = sl_ptr(tc);
    for (int64_t r = 0; r < rows; r++) {
        if (!ce_counted(tgt[r], ignore_index)) continue;
        if (tgt[r] < 0 || tgt[r] >= C)
            return SL_FAIL(SL_ERR_INDEX,
                           "sl_cross_entropy: target %d at flat position %lld is out of range "
                           "[0, %lld) for logits %s",
                           (int)tgt[r], (long long)r, (long long)C, sl_shape_str(logits));
        count++;
    }

    sl_tensor *xc = sl__contig(op, logits);
    sl_tensor *y = sl__new(op, logits->dtype, 0, NULL);
    double *lse = y ? sl_arena_alloc(y->arena, sizeof(double) * (size_t)(rows + 1), 64) : NULL;
    if (!xc || !lse) return NULL;
    cross_entropy_job j = {logits->dtype, sl_ptr(xc), NULL, tgt, lse, 0, C, ignore_index};
    const sl__cross_entropy_kernels *k = kernels();
    sl_parallel_for(rows, row_grain(C), k->forward, &j);
    double total = k->total(&j, rows);
    sl_set(y, 0, count ? total / (double)count : 0.0);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){logits, targets}, cross_entropy_backward,
                   sizeof(cross_entropy_saved)))
        return NULL;
    if (n)
        *(cross_entropy_saved *)n->saved = (cross_entropy_saved){xc, tgt, lse, count, ignore_index};
    if (!sl_save_for_backward(n, xc) || !sl_save_for_backward(n, tc)) return NULL;
    return y;
}
