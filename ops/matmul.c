/* ops/matmul.c — the batched matrix product through cblas, and its backward.
 *
 *     a [..., M, K] @ b [..., K, N] -> y [..., M, N], batch dims broadcast (numpy)
 *
 * Every product, forward or backward, is one call of product(): c = x @ y (+ beta c) over c's
 * batch dims, with x and y read through their strides, optionally transposed. A matrix whose
 * rows are contiguous (column stride 1) goes to gemm as NoTrans, one whose columns are
 * (row stride 1) as Trans, with the other stride as its leading dimension: transposed views
 * are never copied. Only other layouts (every other column, a broadcast row) are copied, once,
 * in forward; backward reuses that copy.
 *
 * OpenBLAS runs on one thread (ops/blas.c); the work splits over our pool instead: over
 * batch entries when there are several, else over blocks of rows of one big product. f32
 * products run on shortlong's own kernel (ops/gemm.c) where ops/blas.c's rule says so
 * (sl__sgemm_use): a single product packs b once for all its row blocks; each batch entry
 * packs its own b into the working thread's scratch. cblas otherwise (and if a packing buffer
 * cannot be had).
 *
 * A b without batch dims (a Linear layer's weight) folds a's batch into rows when a's rows
 * are evenly strided: forward is one [B*M, K] @ [K, N] gemm, and backward's dB += A^T dC is
 * one gemm with inner dim B*M instead of a loop over the batch.
 */
#include "blas.h"
#include "gemm.h"

#include <limits.h>

/* ---------------------------------------------------------------- one product */

/* An operand as gemm reads it: element (i, j) of batch entry (b_0, b_1, ...) is at
 * p[sum_d b_d * bs[d] + i * rs + j * cs] (in elements). */
typedef struct {
    char *p;
    int64_t rs, cs;
    int64_t bs[SL_MAX_DIMS]; /* 0 on batch dims the operand is broadcast along */
    CBLAS_TRANSPOSE trans;
    int64_t ld;
} operand;

typedef struct {
    sl_dtype dtype;
    int64_t m, n, k;
    operand a, b, c; /* c [m, n] = a [m, k] @ b [k, n] + beta c */
    double beta;
    int nbd; /* batch dims */
    int64_t bshape[SL_MAX_DIMS];
    int64_t nbatch;
    bool kernel;         /* f32 through shortlong's own kernel */
    const float *packed; /* b packed once (a single product), or NULL */
} product_job;

/* t's last two dims as a rows x cols operand (transposed: its last two dims swapped), its
 * batch dims aligned to the last of nbd batch dims. */
static void operand_of(operand *o, const sl_tensor *t, bool transposed, int nbd)
{
    int r = t->ndim - 2;
    int64_t rows = t->shape[r + transposed], cols = t->shape[r + !transposed];
    o->p = sl_ptr(t);
    o->rs = t->strides[r + transposed];
    o->cs = t->strides[r + !transposed];
    for (int d = 0; d < nbd; d++) {
        int it = d - (nbd - r);
        o->bs[d] = it < 0 || t->shape[it] == 1 ? 0 : t->strides[it];
    }
    sl__blas_layout(rows, cols, o->rs, o->cs, &o->trans, &o->ld); /* callers made sure it fits */
}

/* Rows [r0, r1) of batch entry `batch`. */
static void gemm(const product_job *p, int64_t batch, int64_t r0, int64_t r1)
{
    int64_t oa = r0 * p->a.rs, ob = 0, oc = r0 * p->c.rs;
    for (int d = p->nbd - 1; d >= 0; d--) {
        int64_t i = batch % p->bshape[d];
        batch /= p->bshape[d];
        oa += i * p->a.bs[d];
        ob += i * p->b.bs[d];
        oc += i * p->c.bs[d];
    }
    if (p->kernel) {
        const float *bp = p->packed;
        if (!bp && (bp = sl__sgemm_scratch(sl__sgemm_packed_floats(p->k, p->n))))
            sl__sgemm_pack((float *)bp, (const float *)p->b.p + ob, p->b.trans == CblasTrans,
                           p->b.ld, p->k, p->n, 0, sl__sgemm_panels(p->n));
        if (bp) { /* the kernel takes row 0 of a and c and does the r0 offset itself */
            sl__sgemm_rows((const float *)p->a.p + oa - r0 * p->a.rs, p->a.trans == CblasTrans,
                           p->a.ld, bp, p->k, p->n, (float *)p->c.p + oc - r0 * p->c.rs,
                           p->c.ld, r0, r1, p->beta != 0);
            return;
        }
    }
    blasint m = (blasint)(r1 - r0), n = (blasint)p->n, k = (blasint)p->k;
    if (p->dtype == SL_F32)
        cblas_sgemm(CblasRowMajor, p->a.trans, p->b.trans, m, n, k, 1.0f,
                    (const float *)p->a.p + oa, (blasint)p->a.ld, (const float *)p->b.p + ob,
                    (blasint)p->b.ld, (float)p->beta, (float *)p->c.p + oc, (blasint)p->c.ld);
    else
        cblas_dgemm(CblasRowMajor, p->a.trans, p->b.trans, m, n, k, 1.0,
                    (const double *)p->a.p + oa, (blasint)p->a.ld, (const double *)p->b.p + ob,
                    (blasint)p->b.ld, p->beta, (double *)p->c.p + oc, (blasint)p->c.ld);
}

static void batch_range(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const product_job *p = ctx;
    for (int64_t i = begin; i < end; i++) gemm(p, i, 0, p->m);
}

static void row_range(void *ctx, int64_t begin, int64_t end) { gemm(ctx, 0, begin, end); }

typedef struct {
    const product_job *p;
    float *bp;
} pack_job;

static void pack_range(void *ctx, int64_t p0, int64_t p1)
{
    const pack_job *j = ctx;
    const operand *b = &j->p->b;
    sl__sgemm_pack(j->bp, (const float *)b->p, b->trans == CblasTrans, b->ld, j->p->k, j->p->n,
                   p0, p1);
}

/* Below this much work a parallel chunk costs more than it saves. */
#define MIN_CHUNK_FLOPS 4e6
enum { MIN_CHUNK_ROWS = 64 };

/* c = x @ y + beta c (x^T if tx, y^T if ty) for every batch entry of c, which is contiguous;
 * x and y broadcast to c's batch dims and are laid out for gemm (sl__blas_layout holds). */
static void product(sl_tensor *c, const sl_tensor *x, bool tx, const sl_tensor *y, bool ty,
                    double beta)
{
    product_job p = {.dtype = c->dtype, .beta = beta, .nbd = c->ndim - 2};
    memcpy(p.bshape, c->shape, sizeof(int64_t) * (size_t)p.nbd);
    p.nbatch = sl__shape_numel(p.nbd, c->shape);
    p.m = c->shape[p.nbd];
    p.n = c->shape[p.nbd + 1];
    p.k = x->shape[x->ndim - 1 - tx];
    if (p.nbatch == 0 || p.m == 0 || p.n == 0) return;
    if (p.k == 0) { /* an empty sum */
        if (beta == 0) memset(c->data, 0, (size_t)sl_numel(c) * sl_dtype_size(c->dtype));
        return;
    }
    operand_of(&p.a, x, tx, p.nbd);
    operand_of(&p.b, y, ty, p.nbd);
    operand_of(&p.c, c, false, p.nbd);
    /* the kernel computes c = a b (+ c): beta is 0 or 1 here */
    p.kernel = p.dtype == SL_F32 && sl__sgemm_use(p.m, p.n) && (beta == 0 || beta == 1);
    double flops = 2.0 * (double)p.m * (double)p.n * (double)p.k;
    if (p.nbatch > 1) {
        /* with the kernel, each batch entry packs its b into the working thread's scratch */
        double grain = MIN_CHUNK_FLOPS / flops;
        size_t pack = p.kernel ? sizeof(float) * sl__sgemm_packed_floats(p.k, p.n) : 0;
        sl__parallel_for_w(p.nbatch, grain > 1 ? (int64_t)grain : 1, batch_range, &p,
                           SL__SCRATCH_GEMM, pack);
    } else {
        if (p.kernel) { /* b packed once, shared by the row blocks */
            pack_job j = {&p, sl__sgemm_scratch(sl__sgemm_packed_floats(p.k, p.n))};
            if (j.bp) sl_parallel_for(sl__sgemm_panels(p.n), 1, pack_range, &j);
            p.packed = j.bp;
        }
        double grain = MIN_CHUNK_FLOPS / (flops / (double)p.m);
        sl_parallel_for(p.m, grain > MIN_CHUNK_ROWS ? (int64_t)grain : MIN_CHUNK_ROWS, row_range,
                        &p);
    }
}

/* ---------------------------------------------------------------- layouts */

/* t itself if gemm can read its matrices, else a contiguous copy. */
static sl_tensor *blas_ready(sl_tensor *t)
{
    int r = t->ndim - 2;
    CBLAS_TRANSPOSE trans;
    int64_t ld;
    if (sl__blas_layout(t->shape[r], t->shape[r + 1], t->strides[r], t->strides[r + 1], &trans,
                        &ld))
        return t;
    return sl__contig("sl_matmul", t);
}

/* t's last dim with `rows` rows of stride rs: a 2-D header over t's storage. */
static sl_tensor matrix_view(const sl_tensor *t, int64_t rows, int64_t rs)
{
    sl_tensor v = *t;
    v.ndim = 2;
    v.shape[0] = rows;
    v.shape[1] = t->shape[t->ndim - 1];
    v.strides[0] = rs;
    v.strides[1] = t->strides[t->ndim - 1];
    return v;
}

/* Whether a @ b folds into one [rows, K] @ [K, N] product: b has a single matrix and a's rows
 * are evenly strided (and gemm can read them so). Sets the row count and stride. */
static bool folds(const sl_tensor *a, const sl_tensor *b, int64_t *rows, int64_t *rs)
{
    int64_t k = a->shape[a->ndim - 1];
    CBLAS_TRANSPOSE trans;
    int64_t ld;
    *rows = sl__shape_numel(a->ndim - 1, a->shape);
    return sl__shape_numel(b->ndim - 2, b->shape) == 1 && *rows <= INT_MAX &&
           sl__rows_stride(a, rs) &&
           sl__blas_layout(*rows, k, *rs, a->strides[a->ndim - 1], &trans, &ld);
}

/* ---------------------------------------------------------------- backward */

typedef struct {
    sl_tensor *a, *b; /* the operands as forward used them (copies if they had to be) */
    bool folded;
    int64_t rows, rs; /* folded: a as [rows, K] with row stride rs */
} matmul_saved;

/* dst (an operand's gradient: contiguous, the operand's shape) += x @ y over the batch dims
 * of out, summed over those dst was broadcast along. With nothing to sum, gemm accumulates
 * straight into dst (beta = 1); otherwise into a temporary that is then reduced. */
static bool accumulate_product(sl_tensor *dst, const sl_tensor *out, const sl_tensor *x,
                               bool tx, const sl_tensor *y, bool ty)
{
    int nbd = out->ndim - 2;
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, out->shape, sizeof(int64_t) * (size_t)nbd);
    shape[nbd] = dst->shape[dst->ndim - 2];
    shape[nbd + 1] = dst->shape[dst->ndim - 1];
    if (sl__shape_numel(nbd, out->shape) == sl__shape_numel(dst->ndim - 2, dst->shape)) {
        sl_tensor v = *dst; /* the same elements, with out's batch dims */
        v.ndim = nbd + 2;
        memcpy(v.shape, shape, sizeof shape);
        sl__contiguous_strides(v.ndim, v.shape, v.strides);
        product(&v, x, tx, y, ty, 1.0);
        return true;
    }
    sl_tensor *t = sl__new("sl_matmul", dst->dtype, nbd + 2, shape);
    if (!t) return false;
    product(t, x, tx, y, ty, 0.0);
    sl__accumulate_reduced(dst, t);
    return true;
}

/* y = a @ b, so with g = dL/dy:
 *     dL/da = g @ b^T   [..., M, N] @ [..., N, K]
 *     dL/db = a^T @ g   [..., K, M] @ [..., M, N]
 * each summed over the batch dims that operand was broadcast along. Folded (b one matrix):
 * with A, G the [rows, K] and [rows, N] views, dA += G @ B^T and dB += A^T @ G, one gemm each. */
static bool matmul_backward(sl_node *n)
{
    const matmul_saved *s = n->saved;
    sl_tensor *g = n->grad, *ga = NULL, *gb = NULL;
    if (n->in[0]->requires_grad && !(ga = sl_input_grad(n, 0))) return false;
    if (n->in[1]->requires_grad && !(gb = sl_input_grad(n, 1))) return false;
    if (s->folded) {
        int64_t k = s->a->shape[s->a->ndim - 1], nn = g->shape[g->ndim - 1];
        sl_tensor a2 = matrix_view(s->a, s->rows, s->rs);
        sl_tensor b2 = matrix_view(s->b, k, s->b->strides[s->b->ndim - 2]);
        sl_tensor g2 = matrix_view(g, s->rows, nn);
        if (ga) {
            sl_tensor ga2 = matrix_view(ga, s->rows, k);
            product(&ga2, &g2, false, &b2, true, 1.0);
        }
        if (gb) {
            sl_tensor gb2 = matrix_view(gb, k, nn);
            product(&gb2, &a2, true, &g2, false, 1.0);
        }
        return true;
    }
    if (ga && !accumulate_product(ga, g, g, false, s->b, true)) return false;
    if (gb && !accumulate_product(gb, g, s->a, true, g, false)) return false;
    return true;
}

/* ---------------------------------------------------------------- forward */

sl_tensor *sl_matmul(sl_tensor *a, sl_tensor *b)
{
    SL_CHECK_TENSOR("sl_matmul", a);
    SL_CHECK_TENSOR("sl_matmul", b);
    if (!sl__check_float("sl_matmul", a) || !sl__check_float("sl_matmul", b) ||
        !sl__check_same_dtype("sl_matmul", a, b))
        return NULL;
    if (a->ndim < 2 || b->ndim < 2)
        return SL_FAIL(SL_ERR_SHAPE, "sl_matmul: operands must be at least 2-D: %s @ %s",
                       sl_shape_str(a), sl_shape_str(b));
    int64_t m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], n = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != k)
        return SL_FAIL(SL_ERR_SHAPE, "sl_matmul: inner dims differ: %s @ %s", sl_shape_str(a),
                       sl_shape_str(b));
    if (m > INT_MAX || k > INT_MAX || n > INT_MAX)
        return SL_FAIL(SL_ERR_SHAPE, "sl_matmul: %s @ %s has a dim past BLAS's int range",
                       sl_shape_str(a), sl_shape_str(b));
    /* The batch dims, broadcast. */
    int na = a->ndim - 2, nb = b->ndim - 2, nbd = na > nb ? na : nb;
    int64_t shape[SL_MAX_DIMS];
    for (int d = 0; d < nbd; d++) {
        int ia = d - (nbd - na), ib = d - (nbd - nb);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return SL_FAIL(SL_ERR_SHAPE, "sl_matmul: batch dims do not broadcast: %s @ %s",
                           sl_shape_str(a), sl_shape_str(b));
        shape[d] = da == 1 ? db : da;
    }
    shape[nbd] = m;
    shape[nbd + 1] = n;
    sl_tensor *y = sl__new("sl_matmul", a->dtype, nbd + 2, shape);
    sl_tensor *ra = y ? blas_ready(a) : NULL;
    sl_tensor *rb = ra ? blas_ready(b) : NULL;
    if (!rb) return NULL;

    int64_t rows = 0, rs = 0;
    bool folded = folds(ra, rb, &rows, &rs);
    if (folded) {
        sl_tensor a2 = matrix_view(ra, rows, rs);
        sl_tensor b2 = matrix_view(rb, k, rb->strides[rb->ndim - 2]);
        sl_tensor y2 = matrix_view(y, rows, n);
        product(&y2, &a2, false, &b2, false, 0.0);
    } else {
        product(y, ra, false, rb, false, 0.0);
    }

    sl_node *node;
    if (!sl_record(&node, "sl_matmul", y, 2, (sl_tensor *[]){a, b}, matmul_backward,
                   sizeof(matmul_saved)))
        return NULL;
    if (node) *(matmul_saved *)node->saved = (matmul_saved){ra, rb, folded, rows, rs};
    /* da reads b, db reads a (as forward read them: the operands or their copies) */
    if ((b->requires_grad && !sl_save_for_backward(node, ra)) ||
        (a->requires_grad && !sl_save_for_backward(node, rb)))
        return NULL;
    return y;
}
