/* ops/softmax.c — softmax and log-softmax along one axis.
 *
 * A tensor of shape (outer, L, inner), L the softmax axis, is a set of outer * inner "lanes":
 * lane l holds the L elements base(l) + k * inner, k in [0, L). The last axis of a contiguous
 * input is the fast case (inner == 1: each lane is a contiguous row); other axes run the same
 * kernels with stride inner. A non-contiguous input is copied to contiguous first. Lanes run
 * in parallel on the pool.
 *
 * Numerically stable: the lane's maximum m is subtracted before exp, so exp never overflows
 * and the largest term is exactly 1; the denominators (and the backward's dot products) are
 * summed in double. The kernels are in softmax_isa.c, compiled for every SIMD level. */
#include "softmax.h"

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* The running CPU's kernels (softmax_isa.c). */
static const sl__softmax_kernels *kernels(void) { return SL_ISA_PICK(sl__softmax_kernels); }

/* Runs the kernels over every lane of a contiguous tensor of t's shape along `axis`. */
static void run_lanes(lane_job *j, const sl_tensor *t, int axis)
{
    int64_t n = sl_numel(t);
    j->L = t->shape[axis];
    j->inner = 1;
    for (int d = axis + 1; d < t->ndim; d++) j->inner *= t->shape[d];
    if (n == 0) return;
    sl_parallel_for(n / j->L, GRAIN / j->L + 1, kernels()->lanes, j);
}

/* ---------------------------------------------------------------- the ops */

typedef struct {
    int axis;
    bool log;
} softmax_saved;

/* The math is above the kernels (softmax_isa.c); here y is the contiguous forward output and g
 * the gradient. */
static bool softmax_backward(sl_node *n)
{
    const softmax_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    lane_job j = {s->log, true, gx->dtype, 0, 0, n->out->data, n->grad->data, gx->data};
    run_lanes(&j, gx, s->axis);
    return true;
}

static sl_tensor *softmax(sl_tensor *a, int axis, bool log)
{
    const char *name = log ? "sl_log_softmax" : "sl_softmax";
    SL_CHECK_TENSOR(name, a);
    if (!sl__check_float(name, a)) return NULL;
    int ax;
    if (!sl__axis(name, a, axis, &ax)) return NULL;
    sl_tensor *x = sl__contig(name, a);
    sl_tensor *y = x ? sl__new_like(name, a) : NULL;
    if (!y) return NULL;
    lane_job j = {log, false, a->dtype, 0, 0, sl_ptr(x), NULL, y->data};
    run_lanes(&j, y, ax);
    sl_node *n;
    if (!sl_record(&n, name, y, 1, &a, softmax_backward, sizeof(softmax_saved))) return NULL;
    if (n) *(softmax_saved *)n->saved = (softmax_saved){ax, log};
    if (!sl_save_for_backward(n, y)) return NULL; /* the backward reads the output */
    return y;
}

sl_tensor *sl_softmax(sl_tensor *a, int axis) { return softmax(a, axis, false); }
sl_tensor *sl_log_softmax(sl_tensor *a, int axis) { return softmax(a, axis, true); }
