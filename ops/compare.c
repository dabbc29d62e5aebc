/* ops/compare.c — elementwise comparisons: sl_eq, sl_ne, sl_lt, sl_le, sl_gt, sl_ge of two
 * tensors (broadcasting) or of a tensor and a scalar (sl_<op>_scalar), each giving an i32 mask,
 * 1 where the comparison holds and 0 elsewhere: what sl_where and sl_masked_fill take, and what
 * sl_to_dtype turns into counts. Not differentiable: a mask is piecewise constant in its inputs,
 * so no node is recorded.
 *
 * The kernels live in compare_kernels.h (one type-generic source, made into f32, f64 and i32
 * functions below). Contiguous operands of one shape run in parallel chunks, any others through
 * the broadcast iterator. */
#include "internal.h"

typedef enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_COUNT } compare_op;
static const char *const compare_name[] = {"sl_eq", "sl_ne", "sl_lt", "sl_le", "sl_gt", "sl_ge"};
static const char *const compare_scalar_name[] = {"sl_eq_scalar", "sl_ne_scalar", "sl_lt_scalar",
                                                  "sl_le_scalar", "sl_gt_scalar", "sl_ge_scalar"};
_Static_assert(sizeof compare_name / sizeof *compare_name == C_COUNT, "a name for every op");
_Static_assert(sizeof compare_scalar_name / sizeof *compare_scalar_name == C_COUNT,
               "a scalar name for every op");

#define SL_KERNELS "compare_kernels.h"
#define SL_KERNELS_I32
#include "instantiate.h"

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */

typedef struct {
    compare_op op;
    sl_dtype dtype;
    bool scalar;
    double s;
} compare_ctx;

/* One run of either form, in the operands' dtype. */
static void compare_any_run(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const compare_ctx *c = vctx;
    switch (c->dtype) {
    case SL_F32:
        if (c->scalar) compare_scalar_run_f32(c->op, p, bs, n, c->s);
        else compare_run_f32(c->op, p, bs, n);
        break;
    case SL_F64:
        if (c->scalar) compare_scalar_run_f64(c->op, p, bs, n, c->s);
        else compare_run_f64(c->op, p, bs, n);
        break;
    case SL_I32:
        if (c->scalar) compare_scalar_run_i32(c->op, p, bs, n, c->s);
        else compare_run_i32(c->op, p, bs, n);
        break;
    }
}

/* Contiguous operands of the output's shape (b unused by the scalar form), in chunks. */
typedef struct {
    compare_ctx c;
    int32_t *y;
    const char *a, *b;
    int64_t es;
} compare_flat_job;

static void compare_flat_range(void *vctx, int64_t b, int64_t e)
{
    const compare_flat_job *j = vctx;
    char *p[3] = {(char *)(j->y + b), (char *)j->a + b * j->es,
                  j->b ? (char *)j->b + b * j->es : NULL};
    int64_t bs[3] = {sizeof(int32_t), j->es, j->es};
    compare_any_run((void *)&j->c, p, bs, e - b);
}

static sl_tensor *compare(compare_op op, sl_tensor *a, sl_tensor *b)
{
    const char *name = compare_name[op];
    SL_CHECK_TENSOR(name, a);
    SL_CHECK_TENSOR(name, b);
    if (!sl__check_same_dtype(name, a, b)) return NULL;
    int nd;
    int64_t shape[SL_MAX_DIMS];
    if (!sl__broadcast_shapes(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return NULL;
    sl_tensor *y = sl__new(name, SL_I32, nd, shape);
    if (!y) return NULL;
    compare_ctx c = {op, a->dtype, false, 0};
    if (sl__same_shape(a, b) && sl_is_contiguous(a) && sl_is_contiguous(b)) {
        compare_flat_job j = {c, y->data, sl_ptr(a), sl_ptr(b), (int64_t)sl_dtype_size(a->dtype)};
        sl_parallel_for(sl_numel(y), GRAIN, compare_flat_range, &j);
    } else {
        sl__foreach_broadcast(compare_any_run, &c, 3, (sl_tensor *[]){y, a, b}, y);
    }
    return y;
}

static sl_tensor *compare_scalar(compare_op op, sl_tensor *a, double s)
{
    const char *name = compare_scalar_name[op];
    SL_CHECK_TENSOR(name, a);
    sl_tensor *y = sl__new(name, SL_I32, a->ndim, a->shape);
    if (!y) return NULL;
    compare_ctx c = {op, a->dtype, true, s};
    if (sl_is_contiguous(a)) {
        compare_flat_job j = {c, y->data, sl_ptr(a), NULL, (int64_t)sl_dtype_size(a->dtype)};
        sl_parallel_for(sl_numel(y), GRAIN, compare_flat_range, &j);
    } else {
        sl__foreach_broadcast(compare_any_run, &c, 2, (sl_tensor *[]){y, a}, y);
    }
    return y;
}

sl_tensor *sl_eq(sl_tensor *a, sl_tensor *b) { return compare(C_EQ, a, b); }
sl_tensor *sl_ne(sl_tensor *a, sl_tensor *b) { return compare(C_NE, a, b); }
sl_tensor *sl_lt(sl_tensor *a, sl_tensor *b) { return compare(C_LT, a, b); }
sl_tensor *sl_le(sl_tensor *a, sl_tensor *b) { return compare(C_LE, a, b); }
sl_tensor *sl_gt(sl_tensor *a, sl_tensor *b) { return compare(C_GT, a, b); }
sl_tensor *sl_ge(sl_tensor *a, sl_tensor *b) { return compare(C_GE, a, b); }

sl_tensor *sl_eq_scalar(sl_tensor *a, double s) { return compare_scalar(C_EQ, a, s); }
sl_tensor *sl_ne_scalar(sl_tensor *a, double s) { return compare_scalar(C_NE, a, s); }
sl_tensor *sl_lt_scalar(sl_tensor *a, double s) { return compare_scalar(C_LT, a, s); }
sl_tensor *sl_le_scalar(sl_tensor *a, double s) { return compare_scalar(C_LE, a, s); }
sl_tensor *sl_gt_scalar(sl_tensor *a, double s) { return compare_scalar(C_GT, a, s); }
sl_tensor *sl_ge_scalar(sl_tensor *a, double s) { return compare_scalar(C_GE, a, s); }
