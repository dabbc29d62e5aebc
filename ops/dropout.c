/* ops/dropout.c — inverted dropout: in training, each element zeroed with probability p and the
 * others scaled by 1 / (1 - p); the identity otherwise.
 *
 * The mask is drawn from the caller's seeded RNG, one draw per element in row-major order, and
 * kept (one byte per element) for the backward. The kernels live in dropout_kernels.h (one
 * type-generic source, made into f32 and f64 functions for every SIMD level by dropout_isa.c). */
#include "dropout.h"

/* The running CPU's kernels (dropout_isa.c). */
static const sl__dropout_kernels *kernels(void) { return SL_ISA_PICK(sl__dropout_kernels); }

typedef struct {
    const uint8_t *keep; /* one byte per element, row-major */
    double scale;        /* 1 / (1 - p) */
} dropout_saved;

/* y = x * keep * scale with a fixed mask, so dx = g * keep * scale. */
static bool dropout_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    const dropout_saved *s = n->saved;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    kernels()->backward(gx->dtype, sl_ptr(n->grad), s->keep, s->scale, sl_ptr(gx), sl_numel(gx));
    return true;
}

sl_tensor *sl_dropout(sl_tensor *x, double p, sl_rng *rng, bool train)
{
    const char *op = "sl_dropout";
    SL_CHECK_TENSOR(op, x);
    if (!sl__check_float(op, x)) return NULL;
    if (!(p >= 0 && p < 1))
        return SL_FAIL(SL_ERR_ARG, "sl_dropout: p = %g is outside [0, 1)", p);
    if (!train || p == 0) return x;
    if (!rng) return SL_FAIL(SL_ERR_ARG, "sl_dropout: rng is NULL (needed to train with p > 0)");

    sl_tensor *xc = sl__contig(op, x);
    sl_tensor *y = sl__new_like(op, x);
    int64_t n = sl_numel(x);
    uint8_t *keep = y ? sl_arena_alloc(y->arena, (size_t)n + 1, 64) : NULL;
    if (!xc || !keep) return NULL;
    /* One uniform draw u per element, in row-major order, kept when u >= p: a seed gives one
     * mask, on any machine. */
    for (int64_t i = 0; i < n; i++) keep[i] = sl_rng_uniform(rng) >= p;
    double scale = 1 / (1 - p);
    kernels()->forward(x->dtype, sl_ptr(xc), keep, scale, y->data, n);
    sl_node *nd;
    if (!sl_record(&nd, op, y, 1, &x, dropout_backward, sizeof(dropout_saved))) return NULL;
    if (nd) *(dropout_saved *)nd->saved = (dropout_saved){keep, scale};
    return y;
}
