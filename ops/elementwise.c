/* ops/elementwise.c — unary, scalar and broadcasting binary elementwise ops.
 *
 * Forward and backward kernels live in elementwise_kernels.h (one type-generic source, made
 * into f32 and f64 functions for every SIMD level by elementwise_isa.c; the running CPU's are
 * picked here). This file checks arguments, allocates outputs, records the tape node and runs
 * the kernels: contiguous operands in parallel chunks, broadcast operands through the strided
 * iterator. */
#include "elementwise.h"

#include <math.h>

static const char *const unary_name[] = {
    "sl_neg", "sl_add_scalar", "sl_mul_scalar", "sl_pow_scalar", "sl_exp", "sl_log", "sl_sqrt",
    "sl_tanh", "sl_sigmoid", "sl_relu", "sl_gelu", "sl_gelu"};
_Static_assert(sizeof unary_name / sizeof *unary_name == U_COUNT, "a name for every unary op");

static const char *const binary_name[] = {"sl_add", "sl_sub", "sl_mul", "sl_div"};
_Static_assert(sizeof binary_name / sizeof *binary_name == B_COUNT, "a name for every binary op");

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

/* The running CPU's kernels (elementwise_isa.c). */
static const sl__elementwise_kernels *kernels(void) { return SL_ISA_PICK(sl__elementwise_kernels); }

/* ---------------------------------------------------------------- unary */

typedef struct {
    unary_op op;
    double p;
} unary_saved;

/* What each backward reads besides the gradient: the input x, the output y, or neither. */
static bool reads_x(unary_op op)
{
    return op == U_POW || op == U_LOG || op == U_RELU || op == U_GELU_ERF || op == U_GELU_TANH;
}
static bool reads_y(unary_op op)
{
    return op == U_EXP || op == U_SQRT || op == U_TANH || op == U_SIGMOID;
}

static bool unary_backward(sl_node *n)
{
    const unary_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    sl_tensor *x = !gx ? NULL : reads_x(s->op) ? sl__contig(n->op, n->in[0]) : n->in[0];
    if (!x) return false;
    unary_job j = {s->op, gx->dtype, sl_ptr(x), n->out->data, n->grad->data, gx->data, s->p};
    sl_parallel_for(sl_numel(gx), GRAIN, kernels()->unary_backward, &j);
    return true;
}

static sl_tensor *unary(unary_op op, sl_tensor *a, double p)
{
    const char *name = unary_name[op];
    SL_CHECK_TENSOR(name, a);
    if (!sl__check_float(name, a)) return NULL;
    sl_tensor *x = sl__contig(name, a);
    sl_tensor *y = x ? sl__new_like(name, a) : NULL;
    if (!y) return NULL;
    unary_job j = {op, a->dtype, sl_ptr(x), NULL, NULL, y->data, p};
    sl_parallel_for(sl_numel(y), GRAIN, kernels()->unary_forward, &j);
    sl_node *n;
    if (!sl_record(&n, name, y, 1, &a, unary_backward, sizeof(unary_saved))) return NULL;
    if (n) *(unary_saved *)n->saved = (unary_saved){op, p};
    if ((reads_x(op) && !sl_save_for_backward(n, a)) ||
        (reads_y(op) && !sl_save_for_backward(n, y)))
        return NULL;
    return y;
}

sl_tensor *sl_neg(sl_tensor *a) { return unary(U_NEG, a, 0); }
sl_tensor *sl_add_scalar(sl_tensor *a, double s) { return unary(U_ADDS, a, s); }
sl_tensor *sl_mul_scalar(sl_tensor *a, double s) { return unary(U_MULS, a, s); }
sl_tensor *sl_pow_scalar(sl_tensor *a, double e) { return unary(U_POW, a, e); }
sl_tensor *sl_exp(sl_tensor *a) { return unary(U_EXP, a, 0); }
sl_tensor *sl_log(sl_tensor *a) { return unary(U_LOG, a, 0); }
sl_tensor *sl_sqrt(sl_tensor *a) { return unary(U_SQRT, a, 0); }
sl_tensor *sl_tanh(sl_tensor *a) { return unary(U_TANH, a, 0); }
sl_tensor *sl_sigmoid(sl_tensor *a) { return unary(U_SIGMOID, a, 0); }
sl_tensor *sl_relu(sl_tensor *a) { return unary(U_RELU, a, 0); }

sl_tensor *sl_gelu(sl_tensor *a, sl_gelu_approx approx)
{
    if (approx != SL_GELU_ERF && approx != SL_GELU_TANH)
        return SL_FAIL(SL_ERR_ARG, "sl_gelu: unknown approximation %d", (int)approx);
    return unary(approx == SL_GELU_ERF ? U_GELU_ERF : U_GELU_TANH, a, 0);
}

/* ---------------------------------------------------------------- binary (broadcasting) */

typedef struct {
    binary_ctx c;
    char *y;
    const char *a, *b;
    int64_t es;
} binary_flat_job;

static void binary_flat_range(void *vctx, int64_t b, int64_t e)
{
    const binary_flat_job *j = vctx;
    char *p[3] = {j->y + b * j->es, (char *)j->a + b * j->es, (char *)j->b + b * j->es};
    int64_t bs[3] = {j->es, j->es, j->es};
    kernels()->binary_forward((void *)&j->c, p, bs, e - b);
}

/* y = a op b; dL/da is g * dy/da summed over the dims a was broadcast along (likewise b).
 * Where that is g itself (a + b, a - b: a's, when a has y's shape), a's gradient is g's own
 * buffer, handed over uncopied when nothing else has reached it yet (sl_input_grad_pass), and
 * b's of a + b is a copy of g when it is the first to reach it. */
static bool binary_backward(sl_node *n)
{
    binary_op op = *(const binary_op *)n->saved;
    sl_tensor *y = n->out;
    for (int which = 0; which < 2; which++) {
        if (!n->in[which]->requires_grad) continue;
        bool identity = (op == B_ADD || (op == B_SUB && which == 0)) &&
                        sl__same_shape(n->in[which], y);
        if (identity) {
            if (!sl__input_grad_identity(n, which)) return false;
            continue;
        }
        sl_tensor *gx = sl_input_grad(n, which);
        if (!gx) return false;
        /* Accumulate straight into the gradient; dims where it has stride 0 are summed. */
        binary_ctx c = {op, y->dtype, which};
        sl__foreach_broadcast(kernels()->binary_backward, &c, 4,
                              (sl_tensor *[]){gx, n->grad, n->in[0], n->in[1]}, y);
    }
    return true;
}

static sl_tensor *binary(binary_op op, sl_tensor *a, sl_tensor *b)
{
    const char *name = binary_name[op];
    SL_CHECK_TENSOR(name, a);
    SL_CHECK_TENSOR(name, b);
    if (!sl__check_float(name, a) || !sl__check_same_dtype(name, a, b)) return NULL;
    int nd;
    int64_t shape[SL_MAX_DIMS];
    if (!sl__broadcast_shapes(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape))
        return NULL;
    sl_tensor *y = sl__new(name, a->dtype, nd, shape);
    if (!y) return NULL;
    binary_ctx c = {op, a->dtype, 0};
    if (sl__same_shape(a, b) && sl_is_contiguous(a) && sl_is_contiguous(b)) {
        binary_flat_job j = {c, y->data, sl_ptr(a), sl_ptr(b), (int64_t)sl_dtype_size(a->dtype)};
        sl_parallel_for(sl_numel(y), GRAIN, binary_flat_range, &j);
    } else {
        sl__foreach_broadcast(kernels()->binary_forward, &c, 3, (sl_tensor *[]){y, a, b}, y);
    }
    sl_node *n;
    if (!sl_record(&n, name, y, 2, (sl_tensor *[]){a, b}, binary_backward, sizeof(binary_op)))
        return NULL;
    if (n) *(binary_op *)n->saved = op;
    /* mul: da reads b, db reads a; div: da reads b, db reads a and b */
    bool keep_a = (op == B_MUL || op == B_DIV) && b->requires_grad;
    bool keep_b = (op == B_MUL && a->requires_grad) || op == B_DIV;
    if ((keep_a && !sl_save_for_backward(n, a)) || (keep_b && !sl_save_for_backward(n, b)))
        return NULL;
    return y;
}

sl_tensor *sl_add(sl_tensor *a, sl_tensor *b) { return binary(B_ADD, a, b); }
sl_tensor *sl_sub(sl_tensor *a, sl_tensor *b) { return binary(B_SUB, a, b); }
sl_tensor *sl_mul(sl_tensor *a, sl_tensor *b) { return binary(B_MUL, a, b); }
sl_tensor *sl_div(sl_tensor *a, sl_tensor *b) { return binary(B_DIV, a, b); }

/* ---------------------------------------------------------------- dtype conversion */

/* y = (dtype) x: the gradient converts back. */
static bool to_dtype_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    sl_tensor *g = gx ? sl__new_like(n->op, gx) : NULL;
    if (!g || !sl_copy_into(g, n->grad)) return false;
    sl__accumulate(gx, g);
    return true;
}

sl_tensor *sl_to_dtype(sl_tensor *a, sl_dtype dtype)
{
    SL_CHECK_TENSOR("sl_to_dtype", a);
    if (dtype != SL_F32 && dtype != SL_F64 && dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_to_dtype: unknown dtype %d", (int)dtype);
    sl_tensor *y = sl__new("sl_to_dtype", dtype, a->ndim, a->shape);
    if (!y || !sl_copy_into(y, a)) return NULL;
    if (dtype == SL_I32) return y; /* no gradient through integers */
    sl_node *n;
    if (!sl_record(&n, "sl_to_dtype", y, 1, &a, to_dtype_backward, 0)) return NULL;
    return y;
}
