/* ops/gather.c — sl_gather (torch.gather) and sl_index_select: elements or slices of a picked
 * along one dim by i32 indices, with a scatter-add backward.
 *
 *     gather        y[i_0, .., i_d, .., i_n] = a[i_0, .., index[i_0, .., i_n], .., i_n]
 *                   y and index (n + 1)-D, of one shape; a no smaller off dim d
 *     index_select  y[i_0, .., i_d, .., i_n] = a[i_0, .., index[i_d], .., i_n]
 *                   index 1-D; y is a's shape with index's length at d
 *
 * Both run one kernel (gather_kernels.h, made into f32, f64 and i32 functions below): y
 * (contiguous) is seen as [outer, len, inner] around dim d, the index is read through strides
 * over y's shape (index_select's are 0 off d), and a through its own strides, so no operand is
 * copied. Work splits into units of (outer position, block of QB inner positions): the units
 * write disjoint elements of y and, in the backward, of a's gradient (elements that differ off
 * d), each gradient element accumulated by one unit in the order of the index along d. The sums
 * are therefore the same on any thread count. */
#include "internal.h"

enum { GRAIN = 1 << 15 }; /* elements per parallel chunk, at least */
enum { QB = 256 };        /* inner positions per unit */

typedef struct {
    int nd, dim;
    int64_t shape[SL_MAX_DIMS]; /* y's */
    int64_t outer, len, inner;  /* y as [outer, len, inner] around dim */
    int64_t nqb;                /* blocks of QB inner positions */
    int64_t xs[SL_MAX_DIMS];    /* the source's strides: a's forward, its gradient's backward */
    int64_t is[SL_MAX_DIMS];    /* the index's strides over y's shape */
} gather_geom;

/* The offsets into the source and into the index of outer position o (y's dims before dim). */
static inline void outer_offsets(const gather_geom *g, int64_t o, int64_t *xo, int64_t *io)
{
    int64_t x = 0, i = 0;
    for (int d = g->dim - 1; d >= 0; d--) {
        int64_t c = o % g->shape[d];
        o /= g->shape[d];
        x += c * g->xs[d];
        i += c * g->is[d];
    }
    *xo = x;
    *io = i;
}

/* The same for inner positions q0 .. q0 + m - 1 (y's dims after dim, row-major), by counting. */
static inline void inner_offsets(const gather_geom *g, int64_t q0, int64_t m, int64_t *xq,
                                 int64_t *iq)
{
    int64_t c[SL_MAX_DIMS], x = 0, i = 0, q = q0;
    for (int d = g->nd - 1; d > g->dim; d--) {
        c[d] = q % g->shape[d];
        q /= g->shape[d];
        x += c[d] * g->xs[d];
        i += c[d] * g->is[d];
    }
    for (int64_t k = 0; k < m; k++) {
        xq[k] = x;
        iq[k] = i;
        for (int d = g->nd - 1; d > g->dim; d--) { /* the next position */
            if (++c[d] < g->shape[d]) {
                x += g->xs[d];
                i += g->is[d];
                break;
            }
            x -= (c[d] - 1) * g->xs[d];
            i -= (c[d] - 1) * g->is[d];
            c[d] = 0;
        }
    }
}

#define SL_KERNELS "gather_kernels.h"
#define SL_KERNELS_I32
#include "instantiate.h"

typedef struct {
    const gather_geom *g;
    sl_dtype dtype;
    void *x; /* the source (forward) or its gradient (backward) */
    const int32_t *idx;
    void *y; /* y (forward) or its gradient (backward) */
} gather_job;

static void gather_forward_range(void *ctx, int64_t u0, int64_t u1)
{
    const gather_job *j = ctx;
    switch (j->dtype) {
    case SL_F32: gather_forward_f32(j->g, j->x, j->idx, j->y, u0, u1); break;
    case SL_F64: gather_forward_f64(j->g, j->x, j->idx, j->y, u0, u1); break;
    case SL_I32: gather_forward_i32(j->g, j->x, j->idx, j->y, u0, u1); break;
    }
}

static void gather_backward_range(void *ctx, int64_t u0, int64_t u1)
{
    const gather_job *j = ctx;
    switch (j->dtype) {
    case SL_F32: gather_backward_f32(j->g, j->x, j->idx, j->y, u0, u1); break;
    case SL_F64: gather_backward_f64(j->g, j->x, j->idx, j->y, u0, u1); break;
    case SL_I32: gather_backward_i32(j->g, j->x, j->idx, j->y, u0, u1); break; /* (no grad) */
    }
}

/* Runs the forward or the backward kernel over every unit, in parallel. */
static void run_units(const gather_geom *g, sl_dtype dtype, void *x, const int32_t *idx, void *y,
                      bool backward)
{
    int64_t units = g->outer * g->nqb;
    if (units == 0 || g->len == 0) return;
    int64_t per_unit = g->len * (g->inner < QB ? g->inner : QB);
    gather_job j = {g, dtype, x, idx, y};
    sl_parallel_for(units, per_unit >= GRAIN ? 1 : GRAIN / per_unit,
                    backward ? gather_backward_range : gather_forward_range, &j);
}

/* y's geometry around dim, with the source's strides xs and the index's is (over y's shape). */
static void make_geom(gather_geom *g, int nd, const int64_t *shape, int dim, const int64_t *xs,
                      const int64_t *is)
{
    memset(g, 0, sizeof *g);
    g->nd = nd;
    g->dim = dim;
    g->outer = g->inner = 1;
    for (int d = 0; d < nd; d++) {
        g->shape[d] = shape[d];
        g->xs[d] = xs[d];
        g->is[d] = is[d];
        if (d < dim) g->outer *= shape[d];
        if (d > dim) g->inner *= shape[d];
    }
    g->len = shape[dim];
    g->nqb = (g->inner + QB - 1) / QB;
}

typedef struct {
    gather_geom g; /* xs replaced by the gradient's (contiguous) strides in the backward */
} gather_saved;

/* y = a gathered by the index along dim (either op): each y element is one element of a, so
 * dL/da[.., k, ..] is the sum of g over the y positions whose index is k there (a scatter-add;
 * repeated indices accumulate, unpicked elements get 0). */
static bool gather_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    const gather_saved *s = n->saved;
    sl_tensor *ga = sl_input_grad(n, 0);
    if (!ga) return false;
    gather_geom g = s->g;
    memcpy(g.xs, ga->strides, sizeof g.xs);
    run_units(&g, ga->dtype, ga->data, sl_ptr(n->in[1]), n->grad->data, true);
    return true;
}

/* Checks every index value against [0, n) (a's size along dim); reports the first one outside,
 * in the index's row-major order, with its position. */
static bool check_indices(const char *op, const sl_tensor *a, int dim, const sl_tensor *index)
{
    int64_t count = sl_numel(index), n = a->shape[dim];
    const int32_t *base = sl_ptr(index);
    for (int64_t p = 0; p < count; p++) {
        int64_t off = 0, rest = p, pos[SL_MAX_DIMS];
        for (int d = index->ndim - 1; d >= 0; d--) {
            pos[d] = rest % index->shape[d];
            rest /= index->shape[d];
            off += pos[d] * index->strides[d];
        }
        int32_t v = base[off];
        if (v >= 0 && v < n) continue;
        return index->ndim == 1
                   ? sl_set_error(SL_ERR_INDEX,
                                  "%s: index %d at position %lld is out of range [0, %lld) "
                                  "along dim %d of a %s",
                                  op, (int)v, (long long)p, (long long)n, dim, sl_shape_str(a))
                   : sl_set_error(SL_ERR_INDEX,
                                  "%s: index %d at %s is out of range [0, %lld) along dim %d of "
                                  "a %s",
                                  op, (int)v, sl__dims_str(index->ndim, pos), (long long)n, dim,
                                  sl_shape_str(a));
    }
    return true;
}

/* Allocates y (nd, shape), runs the forward, records the node and keeps the index. */
static sl_tensor *gather_run(const char *op, sl_tensor *a, sl_tensor *index, const gather_geom *g)
{
    sl_tensor *y = sl__new(op, a->dtype, g->nd, g->shape);
    if (!y) return NULL;
    run_units(g, a->dtype, sl_ptr(a), sl_ptr(index), y->data, false);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){a, index}, gather_backward, sizeof(gather_saved)))
        return NULL;
    if (n) *(gather_saved *)n->saved = (gather_saved){*g};
    if (!sl_save_for_backward(n, index)) return NULL;
    return y;
}

sl_tensor *sl_gather(sl_tensor *a, int axis, sl_tensor *index)
{
    const char *op = "sl_gather";
    SL_CHECK_TENSOR(op, a);
    SL_CHECK_TENSOR(op, index);
    if (index->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_gather: index must be i32, got %s %s",
                       sl_dtype_name(index->dtype), sl_shape_str(index));
    int dim;
    if (!sl__axis(op, a, axis, &dim)) return NULL;
    if (index->ndim != a->ndim)
        return SL_FAIL(SL_ERR_SHAPE, "sl_gather: index %s and a %s differ in ndim",
                       sl_shape_str(index), sl_shape_str(a));
    for (int d = 0; d < a->ndim; d++)
        if (d != dim && index->shape[d] > a->shape[d])
            return SL_FAIL(SL_ERR_SHAPE,
                           "sl_gather: index %s is larger than a %s in dim %d (only the gather "
                           "dim %d may be)",
                           sl_shape_str(index), sl_shape_str(a), d, dim);
    if (!check_indices(op, a, dim, index)) return NULL;
    gather_geom g;
    make_geom(&g, a->ndim, index->shape, dim, a->strides, index->strides);
    return gather_run(op, a, index, &g);
}

sl_tensor *sl_index_select(sl_tensor *a, int axis, sl_tensor *index)
{
    const char *op = "sl_index_select";
    SL_CHECK_TENSOR(op, a);
    SL_CHECK_TENSOR(op, index);
    if (index->dtype != SL_I32 || index->ndim != 1)
        return SL_FAIL(SL_ERR_DTYPE, "sl_index_select: index must be a 1-D i32 tensor, got %s %s",
                       sl_dtype_name(index->dtype), sl_shape_str(index));
    int dim;
    if (!sl__axis(op, a, axis, &dim)) return NULL;
    if (!check_indices(op, a, dim, index)) return NULL;
    int64_t shape[SL_MAX_DIMS], is[SL_MAX_DIMS] = {0};
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] = index->shape[0];
    is[dim] = index->strides[0];
    gather_geom g;
    make_geom(&g, a->ndim, shape, dim, a->strides, is);
    return gather_run(op, a, index, &g);
}
