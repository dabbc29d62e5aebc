/* ops/nnops.c — nn primitives: layernorm, embedding, cross-entropy, dropout, where, masked_fill.
 *
 * Each section holds the op's kernels (forward, then backward) and then the wrapper that checks
 * the arguments, runs the kernels and records the tape node.
 *
 * The kernels are written once over a type T. This file includes itself twice with
 * NNOPS_KERNELS defined (T = float, then T = double); those two passes compile only the
 * `#ifdef NNOPS_KERNELS` blocks, making the _f32 and _f64 kernels. The normal pass compiles
 * everything else. (elementwise.c does the same with a separate kernels header.)
 */
#ifndef NNOPS_KERNELS
#include "internal.h"

#include <tgmath.h>

#include "vexp.h"

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

/* Row sums in layernorm run over 8 double lanes, lane k taking elements k, k + 8, ..., then
 * the lanes added pairwise and the C % 8 leftovers after them: a fixed order (the same bits on
 * any thread count) that the compiler can keep in vector registers, where one running double
 * would serialise every row on the latency of an add. */
typedef double vd8 __attribute__((vector_size(64)));

static inline double hsum8(vd8 v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* 16 floats as two vectors of 8 doubles, and back (f32 cross-entropy). */
typedef float vf8 __attribute__((vector_size(32)));

static inline void split_f32(sl__vf v, vd8 *lo, vd8 *hi)
{
    *lo = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd8);
    *hi = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15),
                                  vd8);
}

static inline sl__vf join_f32(vd8 lo, vd8 hi)
{
    vf8 l = __builtin_convertvector(lo, vf8), h = __builtin_convertvector(hi, vf8);
    return __builtin_shufflevector(l, h, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* Whether cross-entropy counts target t. */
static inline bool ce_counted(int32_t t, int32_t ignore_index)
{
    return ignore_index == SL_NO_IGNORE || t != ignore_index;
}

#define NNOPS_KERNELS
#define T float
#define SUF f32
#define T_IS_F32 1
#include "nnops.c"
#undef T
#undef SUF
#undef T_IS_F32
#define T double
#define SUF f64
#define T_IS_F32 0
#include "nnops.c"
#undef T
#undef SUF
#undef T_IS_F32
#undef NNOPS_KERNELS

enum {
    GRAIN = 1 << 15, /* elements per parallel chunk, at least */
    MAX_BLOCKS = 64, /* row blocks of the layernorm weight/bias gradient */
};

/* Rows of row_len elements per parallel chunk, so that a chunk holds about GRAIN elements. */
static int64_t row_grain(int64_t row_len)
{
    return row_len >= GRAIN ? 1 : GRAIN / (row_len ? row_len : 1);
}

/* Runs fn over shape_of's shape with every operand read as broadcast to it. */
static void foreach_broadcast(sl__run_fn fn, void *ctx, int nops, sl_tensor *const *ops,
                              const sl_tensor *shape_of)
{
    int64_t st[SL__MAX_OPS][SL_MAX_DIMS];
    char *base[SL__MAX_OPS];
    size_t es[SL__MAX_OPS];
    for (int k = 0; k < nops; k++) {
        sl__broadcast_strides(ops[k], shape_of->ndim, shape_of->shape, st[k]);
        base[k] = sl_ptr(ops[k]);
        es[k] = sl_dtype_size(ops[k]->dtype);
    }
    sl__foreach(nops, base, (const int64_t(*)[SL_MAX_DIMS])st, es, shape_of->ndim,
                shape_of->shape, fn, ctx);
}
#endif /* !NNOPS_KERNELS */

/* ================================================================ layernorm */
#ifdef NNOPS_KERNELS

/* 8 consecutive T's as a vector, and widened to double. */
typedef T FN(v8) __attribute__((vector_size(8 * sizeof(T))));

static inline FN(v8) FN(ld8)(const T *p)
{
    FN(v8) v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vd8 FN(ld8d)(const T *p) { return __builtin_convertvector(FN(ld8)(p), vd8); }

/* Rows [r0, r1) of x (rows, C): y = (x - mean) * rstd * w + b, where the row's mean and
 * rstd = 1 / sqrt(var + eps) are computed in double (two passes, 8 lanes) and saved.
 * w, b: (C) or NULL. */
static void FN(layernorm_forward)(const T *restrict x, const T *restrict w, const T *restrict b,
                                  T *restrict y, double *restrict mean, double *restrict rstd,
                                  int64_t r0, int64_t r1, int64_t C, double eps)
{
    const int64_t C8 = C - C % 8;
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * C;
        T *yr = y + r * C;
        vd8 s8 = {0}, v8 = {0};
        for (int64_t j = 0; j < C8; j += 8) s8 += FN(ld8d)(xr + j);
        double s = hsum8(s8);
        for (int64_t j = C8; j < C; j++) s += xr[j];
        double m = s / (double)C;
        for (int64_t j = 0; j < C8; j += 8) {
            vd8 d = FN(ld8d)(xr + j) - m;
            v8 += d * d;
        }
        double v = hsum8(v8);
        for (int64_t j = C8; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        double rs = 1 / sqrt(v / (double)C + eps);
        for (int64_t j = 0; j < C8; j += 8) {
            FN(v8) h = __builtin_convertvector((FN(ld8d)(xr + j) - m) * rs, FN(v8));
            if (w) h *= FN(ld8)(w + j);
            if (b) h += FN(ld8)(b + j);
            memcpy(yr + j, &h, sizeof h);
        }
        for (int64_t j = C8; j < C; j++) {
            T h = (T)((xr[j] - m) * rs);
            yr[j] = (w ? h * w[j] : h) + (b ? b[j] : 0);
        }
        mean[r] = m;
        rstd[r] = rs;
    }
}

/* Rows [r0, r1), with xhat = (x - mean) * rstd and dxhat = g * w (g alone without w):
 *   dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   when dx is given,
 *   dw += g * xhat and db += g, summed over the rows into C doubles,  when given.
 * In 8 double lanes, like the forward. */
static void FN(layernorm_backward)(const T *restrict x, const T *restrict w, const T *restrict g,
                                   const double *restrict mean, const double *restrict rstd,
                                   T *restrict dx, double *restrict dw, double *restrict db,
                                   int64_t r0, int64_t r1, int64_t C)
{
    const int64_t C8 = C - C % 8;
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * C, *gr = g + r * C;
        double m = mean[r], rs = rstd[r];
        if (dx) {
            T *dxr = dx + r * C;
            vd8 sd8 = {0}, sdx8 = {0}; /* sums of dxhat and of dxhat * xhat */
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 dh = w ? FN(ld8d)(gr + j) * FN(ld8d)(w + j) : FN(ld8d)(gr + j);
                sd8 += dh;
                sdx8 += dh * ((FN(ld8d)(xr + j) - m) * rs);
            }
            double sd = hsum8(sd8), sdx = hsum8(sdx8);
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                sd += dh;
                sdx += dh * ((xr[j] - m) * rs);
            }
            sd /= (double)C;
            sdx /= (double)C;
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 dh = w ? FN(ld8d)(gr + j) * FN(ld8d)(w + j) : FN(ld8d)(gr + j);
                vd8 xh = (FN(ld8d)(xr + j) - m) * rs;
                FN(v8) d = FN(ld8)(dxr + j) + __builtin_convertvector(rs * (dh - sd - xh * sdx),
                                                                      FN(v8));
                memcpy(dxr + j, &d, sizeof d);
            }
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                dxr[j] += (T)(rs * (dh - sd - (xr[j] - m) * rs * sdx));
            }
        }
        if (dw) {
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 acc;
                memcpy(&acc, dw + j, sizeof acc);
                acc += FN(ld8d)(gr + j) * ((FN(ld8d)(xr + j) - m) * rs);
                memcpy(dw + j, &acc, sizeof acc);
            }
            for (int64_t j = C8; j < C; j++) dw[j] += gr[j] * ((xr[j] - m) * rs);
        }
        if (db) {
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 acc;
                memcpy(&acc, db + j, sizeof acc);
                acc += FN(ld8d)(gr + j);
                memcpy(db + j, &acc, sizeof acc);
            }
            for (int64_t j = C8; j < C; j++) db[j] += gr[j];
        }
    }
}

/* dst (C) += the sum of part (blocks, C) over its blocks, added in block order. */
static void FN(add_block_sums)(T *restrict dst, const double *restrict part, int64_t blocks,
                               int64_t C)
{
    for (int64_t j = 0; j < C; j++) {
        double s = 0;
        for (int64_t k = 0; k < blocks; k++) s += part[k * C + j];
        dst[j] += (T)s;
    }
}

#else

typedef struct {
    sl_tensor *x, *w;    /* contiguous x and weight (w NULL without one) */
    double *mean, *rstd; /* (rows) */
} layernorm_saved;

typedef struct {
    sl_dtype dtype;
    const void *x, *w, *b, *g;
    void *y, *dx;
    double *mean, *rstd;
    double *dw, *db; /* (blocks, C) partial sums, or NULL */
    int64_t rows, C, block_rows;
    double eps;
} layernorm_job;

static void layernorm_forward_range(void *ctx, int64_t r0, int64_t r1)
{
    const layernorm_job *j = ctx;
    if (j->dtype == SL_F32)
        layernorm_forward_f32(j->x, j->w, j->b, j->y, j->mean, j->rstd, r0, r1, j->C, j->eps);
    else
        layernorm_forward_f64(j->x, j->w, j->b, j->y, j->mean, j->rstd, r0, r1, j->C, j->eps);
}

/* Blocks [k0, k1) of block_rows rows each; block k sums its dw, db into row k of the partials. */
static void layernorm_backward_range(void *ctx, int64_t k0, int64_t k1)
{
    const layernorm_job *j = ctx;
    for (int64_t k = k0; k < k1; k++) {
        int64_t r0 = k * j->block_rows;
        int64_t r1 = r0 + j->block_rows < j->rows ? r0 + j->block_rows : j->rows;
        double *dw = j->dw ? j->dw + k * j->C : NULL, *db = j->db ? j->db + k * j->C : NULL;
        if (dw) memset(dw, 0, sizeof(double) * (size_t)j->C);
        if (db) memset(db, 0, sizeof(double) * (size_t)j->C);
        if (j->dtype == SL_F32)
            layernorm_backward_f32(j->x, j->w, j->g, j->mean, j->rstd, j->dx, dw, db, r0, r1, j->C);
        else
            layernorm_backward_f64(j->x, j->w, j->g, j->mean, j->rstd, j->dx, dw, db, r0, r1, j->C);
    }
}

static void add_block_sums(sl_tensor *dst, const double *part, int64_t blocks, int64_t C)
{
    if (dst->dtype == SL_F32) add_block_sums_f32(sl_ptr(dst), part, blocks, C);
    else add_block_sums_f64(sl_ptr(dst), part, blocks, C);
}

/* y = xhat * w + b with xhat = (x - mean) * rstd over each row of C, so with dxhat = g * w:
 *   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   dw = sum over rows of g * xhat,   db = sum over rows of g.
 * The rows are cut into at most MAX_BLOCKS blocks fixed by the shape alone. Each block sums its
 * own dw, db partials (in double) and a serial pass adds the blocks in order: no race, and the
 * same bits on any number of threads. */
static bool layernorm_backward(sl_node *n)
{
    const layernorm_saved *s = n->saved;
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
    layernorm_job j = {
        .dtype = x->dtype, .x = sl_ptr(s->x), .w = s->w ? sl_ptr(s->w) : NULL,
        .g = sl_ptr(n->grad), .dx = gx ? sl_ptr(gx) : NULL, .mean = s->mean, .rstd = s->rstd,
        .dw = gw ? part : NULL, .db = gb ? part + (gw ? blocks * C : 0) : NULL,
        .rows = rows, .C = C, .block_rows = block_rows};
    sl_parallel_for(blocks, 1, layernorm_backward_range, &j);
    if (gw) add_block_sums(gw, j.dw, blocks, C);
    if (gb) add_block_sums(gb, j.db, blocks, C);
    return true;
}

sl_tensor *sl_layer_norm(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, double eps)
{
    const char *op = "sl_layer_norm";
    SL_CHECK_TENSOR(op, x);
    /* weight and bias may be NULL, but not a NULL that a failed call just returned. */
    if ((!weight || !bias) && sl_error() != SL_OK) return NULL;
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

    sl_tensor *xc = sl__contig(x);
    sl_tensor *wc = weight ? sl__contig(weight) : NULL, *bc = bias ? sl__contig(bias) : NULL;
    sl_tensor *y = sl__new(x->dtype, x->ndim, x->shape);
    /* mean and rstd per row, kept for the backward */
    double *stats = y ? sl_arena_alloc(y->arena, sizeof(double) * (size_t)(2 * rows + 1), 64)
                      : NULL;
    if (!xc || (weight && !wc) || (bias && !bc) || !stats) return NULL;
    layernorm_job j = {.dtype = x->dtype, .x = sl_ptr(xc), .w = wc ? sl_ptr(wc) : NULL,
                       .b = bc ? sl_ptr(bc) : NULL, .y = y->data, .mean = stats,
                       .rstd = stats + rows, .rows = rows, .C = C, .eps = eps};
    if (C > 0) sl_parallel_for(rows, row_grain(C), layernorm_forward_range, &j);
    sl_node *n;
    if (!sl_record(&n, op, y, 3, (sl_tensor *[]){x, weight, bias}, layernorm_backward,
                   sizeof(layernorm_saved)))
        return NULL;
    if (n) *(layernorm_saved *)n->saved = (layernorm_saved){xc, wc, stats, stats + rows};
    return y;
}

#endif

/* ================================================================ embedding */
#ifdef NNOPS_KERNELS

/* Tokens [i0, i1): y[i, :] = w[idx[i], :], w (V, D) read through element strides ws0, ws1,
 * y (n, D) contiguous. */
static void FN(embedding_forward)(const T *restrict w, int64_t ws0, int64_t ws1,
                                  const int32_t *restrict idx, T *restrict y, int64_t i0,
                                  int64_t i1, int64_t D)
{
    for (int64_t i = i0; i < i1; i++) {
        const T *wr = w + idx[i] * ws0;
        T *yr = y + i * D;
        if (ws1 == 1) memcpy(yr, wr, sizeof(T) * (size_t)D);
        else
            for (int64_t d = 0; d < D; d++) yr[d] = wr[d * ws1];
    }
}

/* Columns [d0, d1): dw[idx[i], d] += g[i, d] for every token i, in token order. Each column has
 * one owner, so repeated indices accumulate without a race, the same way on any thread count. */
static void FN(embedding_backward)(const int32_t *restrict idx, const T *restrict g,
                                   T *restrict dw, int64_t n, int64_t D, int64_t d0, int64_t d1)
{
    for (int64_t i = 0; i < n; i++) {
        const T *gr = g + i * D;
        T *dr = dw + idx[i] * D;
        for (int64_t d = d0; d < d1; d++) dr[d] += gr[d];
    }
}

#else

typedef struct {
    const int32_t *idx; /* contiguous indices (n) */
} embedding_saved;

typedef struct {
    sl_dtype dtype;
    const void *w, *g;
    void *y, *dw;
    int64_t ws0, ws1, n, D;
    const int32_t *idx;
} embedding_job;

static void embedding_forward_range(void *ctx, int64_t i0, int64_t i1)
{
    const embedding_job *j = ctx;
    if (j->dtype == SL_F32) embedding_forward_f32(j->w, j->ws0, j->ws1, j->idx, j->y, i0, i1, j->D);
    else embedding_forward_f64(j->w, j->ws0, j->ws1, j->idx, j->y, i0, i1, j->D);
}

static void embedding_backward_range(void *ctx, int64_t d0, int64_t d1)
{
    const embedding_job *j = ctx;
    if (j->dtype == SL_F32) embedding_backward_f32(j->idx, j->g, j->dw, j->n, j->D, d0, d1);
    else embedding_backward_f64(j->idx, j->g, j->dw, j->n, j->D, d0, d1);
}

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
    sl_parallel_for(D, row_grain(ntok), embedding_backward_range, &j); /* a column is ntok long */
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
    sl_tensor *ic = sl__contig(indices);
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
    sl_tensor *y = sl__new(weight->dtype, indices->ndim + 1, shape);
    if (!y) return NULL;
    embedding_job j = {.dtype = weight->dtype, .w = sl_ptr(weight), .y = y->data,
                       .ws0 = weight->strides[0], .ws1 = weight->strides[1], .n = ntok, .D = D,
                       .idx = idx};
    sl_parallel_for(ntok, row_grain(D), embedding_forward_range, &j);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){weight, indices}, embedding_backward,
                   sizeof(embedding_saved)))
        return NULL;
    if (n) ((embedding_saved *)n->saved)->idx = idx;
    return y;
}

#endif

/* ================================================================ cross-entropy */
#ifdef NNOPS_KERNELS

/* Rows [r0, r1) of x (rows, C) whose target counts: lse = log(sum_j exp(x_j)), computed as
 * max + log(sum_j exp(x_j - max)) with the sum in double, so large logits cannot overflow. */
static void FN(cross_entropy_forward)(const T *restrict x, const int32_t *restrict tgt,
                                      int32_t ignore, double *restrict lse, int64_t r0,
                                      int64_t r1, int64_t C)
{
    for (int64_t r = r0; r < r1; r++) {
        if (!ce_counted(tgt[r], ignore)) continue;
        const T *xr = x + r * C;
        T mx = xr[0];
        for (int64_t j = 1; j < C; j++)
            if (xr[j] > mx) mx = xr[j];
#if T_IS_F32 /* 16 logits at a time through the vector exp, the last C % 16 padded with -inf
               (e^-inf = 0), the sum in 8 double lanes as in layernorm */
        vd8 acc = {0};
        for (int64_t j = 0; j < C; j += SL__VW) {
            sl__vf v = C - j >= SL__VW ? sl__vload(xr + j)
                                       : sl__vload_part(xr + j, C - j, -INFINITY);
            vd8 lo, hi;
            split_f32(sl__vexp(v - mx), &lo, &hi);
            acc += lo + hi;
        }
        double s = hsum8(acc);
#else
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += exp(xr[j] - mx);
#endif
        lse[r] = mx + log(s);
    }
}

/* The sum over counted rows of -log_softmax(x)[t] = lse - x[t], in row order. */
static double FN(cross_entropy_total)(const T *restrict x, const int32_t *restrict tgt,
                                      int32_t ignore, const double *restrict lse, int64_t rows,
                                      int64_t C)
{
    double total = 0;
    for (int64_t r = 0; r < rows; r++)
        if (ce_counted(tgt[r], ignore)) total += lse[r] - x[r * C + tgt[r]];
    return total;
}

/* Rows [r0, r1): gx += (softmax(x) - onehot(t)) * scale for counted rows, nothing for ignored
 * ones; softmax_j = exp(x_j - lse), the difference taken in double. */
static void FN(cross_entropy_backward)(const T *restrict x, const int32_t *restrict tgt,
                                       int32_t ignore, const double *restrict lse, double scale,
                                       T *restrict gx, int64_t r0, int64_t r1, int64_t C)
{
#if T_IS_F32
    const sl__vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const float sc = (float)scale;
#endif
    for (int64_t r = r0; r < r1; r++) {
        int32_t t = tgt[r];
        if (!ce_counted(t, ignore)) continue;
        const T *xr = x + r * C;
        T *gr = gx + r * C;
#if T_IS_F32
        for (int64_t j = 0; j < C; j += SL__VW) {
            int64_t n = C - j < SL__VW ? C - j : SL__VW;
            sl__vf v = n == SL__VW ? sl__vload(xr + j) : sl__vload_part(xr + j, n, 0);
            vd8 lo, hi;
            split_f32(v, &lo, &hi);
            sl__vf p = sl__vexp(join_f32(lo - lse[r], hi - lse[r]));
            sl__vf onehot = (sl__vf)((lane + (int32_t)j == t) & (sl__vi)((sl__vf){0} + 1.0f));
            sl__vf g = (p - onehot) * sc;
            if (n == SL__VW) sl__vstore(gr + j, sl__vload(gr + j) + g);
            else sl__vstore_part(gr + j, sl__vload_part(gr + j, n, 0) + g, n);
        }
#else
        for (int64_t j = 0; j < C; j++)
            gr[j] += (T)((exp(xr[j] - lse[r]) - (j == t)) * scale);
#endif
    }
}

#else

typedef struct {
    sl_tensor *x;       /* contiguous logits (rows, C) */
    const int32_t *tgt; /* contiguous targets (rows) */
    double *lse;        /* (rows), set on counted rows */
    int64_t count;      /* counted rows */
    int32_t ignore;
} cross_entropy_saved;

typedef struct {
    sl_dtype dtype;
    const void *x;
    void *gx;
    const int32_t *tgt;
    double *lse;
    double scale;
    int64_t C;
    int32_t ignore;
} cross_entropy_job;

static void cross_entropy_forward_range(void *ctx, int64_t r0, int64_t r1)
{
    const cross_entropy_job *j = ctx;
    if (j->dtype == SL_F32)
        cross_entropy_forward_f32(j->x, j->tgt, j->ignore, j->lse, r0, r1, j->C);
    else
        cross_entropy_forward_f64(j->x, j->tgt, j->ignore, j->lse, r0, r1, j->C);
}

static void cross_entropy_backward_range(void *ctx, int64_t r0, int64_t r1)
{
    const cross_entropy_job *j = ctx;
    if (j->dtype == SL_F32)
        cross_entropy_backward_f32(j->x, j->tgt, j->ignore, j->lse, j->scale, j->gx, r0, r1, j->C);
    else
        cross_entropy_backward_f64(j->x, j->tgt, j->ignore, j->lse, j->scale, j->gx, r0, r1, j->C);
}

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
    sl_parallel_for(rows, row_grain(C), cross_entropy_backward_range, &j);
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
    sl_tensor *tc = sl__contig(targets);
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

    sl_tensor *xc = sl__contig(logits);
    sl_tensor *y = sl__new(logits->dtype, 0, NULL);
    double *lse = y ? sl_arena_alloc(y->arena, sizeof(double) * (size_t)(rows + 1), 64) : NULL;
    if (!xc || !lse) return NULL;
    cross_entropy_job j = {logits->dtype, sl_ptr(xc), NULL, tgt, lse, 0, C, ignore_index};
    sl_parallel_for(rows, row_grain(C), cross_entropy_forward_range, &j);
    double total = logits->dtype == SL_F32
                       ? cross_entropy_total_f32(j.x, tgt, ignore_index, lse, rows, C)
                       : cross_entropy_total_f64(j.x, tgt, ignore_index, lse, rows, C);
    sl_set(y, 0, count ? total / (double)count : 0.0);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){logits, targets}, cross_entropy_backward,
                   sizeof(cross_entropy_saved)))
        return NULL;
    if (n)
        *(cross_entropy_saved *)n->saved = (cross_entropy_saved){xc, tgt, lse, count, ignore_index};
    return y;
}

#endif

/* ================================================================ dropout */
#ifdef NNOPS_KERNELS

/* y = keep ? x * scale : 0 over n contiguous elements. */
static void FN(dropout_forward)(const T *restrict x, const uint8_t *restrict keep, T scale,
                                T *restrict y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = keep[i] ? x[i] * scale : 0;
}

/* gx += keep ? g * scale : 0. */
static void FN(dropout_backward)(const T *restrict g, const uint8_t *restrict keep, T scale,
                                 T *restrict gx, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (keep[i]) gx[i] += g[i] * scale;
}

#else

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
    if (gx->dtype == SL_F32)
        dropout_backward_f32(sl_ptr(n->grad), s->keep, (float)s->scale, sl_ptr(gx), sl_numel(gx));
    else
        dropout_backward_f64(sl_ptr(n->grad), s->keep, s->scale, sl_ptr(gx), sl_numel(gx));
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

    sl_tensor *xc = sl__contig(x);
    sl_tensor *y = sl__new_like(x);
    int64_t n = sl_numel(x);
    uint8_t *keep = y ? sl_arena_alloc(y->arena, (size_t)n + 1, 64) : NULL;
    if (!xc || !keep) return NULL;
    /* One uniform draw u per element, in row-major order, kept when u >= p: a seed gives one
     * mask, on any machine. */
    for (int64_t i = 0; i < n; i++) keep[i] = sl_rng_uniform(rng) >= p;
    double scale = 1 / (1 - p);
    if (x->dtype == SL_F32) dropout_forward_f32(sl_ptr(xc), keep, (float)scale, y->data, n);
    else dropout_forward_f64(sl_ptr(xc), keep, scale, y->data, n);
    sl_node *nd;
    if (!sl_record(&nd, op, y, 1, &x, dropout_backward, sizeof(dropout_saved))) return NULL;
    if (nd) *(dropout_saved *)nd->saved = (dropout_saved){keep, scale};
    return y;
}

#endif

/* ================================================================ where, masked_fill */
#ifdef NNOPS_KERNELS

/* One run of y = c ? a : b, c i32; p and the byte strides bs in the order y, c, a, b. */
static void FN(where_forward)(char *const *p, const int64_t *bs, int64_t n)
{
    T *y = (T *)p[0];
    const int32_t *c = (const int32_t *)p[1];
    const T *a = (const T *)p[2], *b = (const T *)p[3];
    int64_t sy = bs[0] / (int64_t)sizeof(T), sc = bs[1] / (int64_t)sizeof(int32_t);
    int64_t sa = bs[2] / (int64_t)sizeof(T), sb = bs[3] / (int64_t)sizeof(T);
    for (int64_t i = 0; i < n; i++) y[i * sy] = c[i * sc] ? a[i * sa] : b[i * sb];
}

/* One run of y = m ? value : x, m i32; operands y, x, m. */
static void FN(masked_fill_forward)(char *const *p, const int64_t *bs, int64_t n, T value)
{
    T *y = (T *)p[0];
    const T *x = (const T *)p[1];
    const int32_t *m = (const int32_t *)p[2];
    int64_t sy = bs[0] / (int64_t)sizeof(T), sx = bs[1] / (int64_t)sizeof(T);
    int64_t sm = bs[2] / (int64_t)sizeof(int32_t);
    for (int64_t i = 0; i < n; i++) y[i * sy] = m[i * sm] ? value : x[i * sx];
}

/* One run of a selection's backward: d += g where (c != 0) == when; operands d, g, c. d may have
 * stride 0 (its input was broadcast along the run): the run then sums into one element. */
static void FN(select_backward)(char *const *p, const int64_t *bs, int64_t n, bool when)
{
    T *d = (T *)p[0];
    const T *g = (const T *)p[1];
    const int32_t *c = (const int32_t *)p[2];
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    int64_t sc = bs[2] / (int64_t)sizeof(int32_t);
    for (int64_t i = 0; i < n; i++)
        if ((c[i * sc] != 0) == when) d[i * sd] += g[i * sg];
}

#else

typedef struct {
    sl_dtype dtype;
    bool when;    /* select_backward: pass the gradient where the condition is this */
    double value; /* masked_fill */
} select_ctx;

static void where_forward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    if (((const select_ctx *)ctx)->dtype == SL_F32) where_forward_f32(p, bs, n);
    else where_forward_f64(p, bs, n);
}

static void masked_fill_forward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    const select_ctx *c = ctx;
    if (c->dtype == SL_F32) masked_fill_forward_f32(p, bs, n, (float)c->value);
    else masked_fill_forward_f64(p, bs, n, c->value);
}

static void select_backward_run(void *ctx, char *const *p, const int64_t *bs, int64_t n)
{
    const select_ctx *c = ctx;
    if (c->dtype == SL_F32) select_backward_f32(p, bs, n, c->when);
    else select_backward_f64(p, bs, n, c->when);
}

/* y = c ? a : b, so dL/da = g where c and dL/db = g where !c, each summed over the dims its
 * input was broadcast along (the gradient buffer is read with stride 0 there). */
static bool where_backward(sl_node *n)
{
    for (int k = 1; k <= 2; k++) {
        if (!n->in[k]->requires_grad) continue;
        sl_tensor *d = sl_input_grad(n, k);
        if (!d) return false;
        select_ctx c = {n->out->dtype, k == 1, 0};
        foreach_broadcast(select_backward_run, &c, 3, (sl_tensor *[]){d, n->grad, n->in[0]},
                          n->out);
    }
    return true;
}

/* numpy broadcasting of cond, a and b; reports all three shapes when they do not broadcast. */
static bool where_shape(sl_tensor *const *t, int *nout, int64_t *out)
{
    int nd = 0;
    for (int k = 0; k < 3; k++) nd = t[k]->ndim > nd ? t[k]->ndim : nd;
    for (int i = 0; i < nd; i++) {
        out[i] = 1;
        for (int k = 0; k < 3; k++) {
            int it = i - (nd - t[k]->ndim);
            int64_t d = it >= 0 ? t[k]->shape[it] : 1;
            if (d != 1 && out[i] != 1 && d != out[i])
                return sl_set_error(SL_ERR_SHAPE,
                                    "sl_where: shapes do not broadcast: cond %s, a %s, b %s",
                                    sl_shape_str(t[0]), sl_shape_str(t[1]), sl_shape_str(t[2]));
            if (d != 1) out[i] = d;
        }
    }
    *nout = nd;
    return true;
}

sl_tensor *sl_where(sl_tensor *cond, sl_tensor *a, sl_tensor *b)
{
    const char *op = "sl_where";
    SL_CHECK_TENSOR(op, cond);
    SL_CHECK_TENSOR(op, a);
    SL_CHECK_TENSOR(op, b);
    if (cond->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_where: cond must be i32, got %s %s",
                       sl_dtype_name(cond->dtype), sl_shape_str(cond));
    if (!sl__check_float(op, a) || !sl__check_same_dtype(op, a, b)) return NULL;
    sl_tensor *in[3] = {cond, a, b};
    int nd = 0;
    int64_t shape[SL_MAX_DIMS];
    if (!where_shape(in, &nd, shape)) return NULL;
    sl_tensor *y = sl__new(a->dtype, nd, shape);
    if (!y) return NULL;
    select_ctx c = {a->dtype, false, 0};
    foreach_broadcast(where_forward_run, &c, 4, (sl_tensor *[]){y, cond, a, b}, y);
    sl_node *n;
    if (!sl_record(&n, op, y, 3, in, where_backward, 0)) return NULL;
    return y;
}

/* y = mask ? value : x, so dL/dx = g where mask is 0. */
static bool masked_fill_backward(sl_node *n)
{
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gx = sl_input_grad(n, 0);
    if (!gx) return false;
    select_ctx c = {gx->dtype, false, 0};
    foreach_broadcast(select_backward_run, &c, 3, (sl_tensor *[]){gx, n->grad, n->in[1]}, n->out);
    return true;
}

sl_tensor *sl_masked_fill(sl_tensor *x, sl_tensor *mask, double value)
{
    const char *op = "sl_masked_fill";
    SL_CHECK_TENSOR(op, x);
    SL_CHECK_TENSOR(op, mask);
    if (!sl__check_float(op, x)) return NULL;
    if (mask->dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "sl_masked_fill: mask must be i32, got %s %s",
                       sl_dtype_name(mask->dtype), sl_shape_str(mask));
    bool fits = mask->ndim <= x->ndim;
    for (int i = 0; fits && i < mask->ndim; i++) {
        int64_t d = mask->shape[i];
        fits = d == 1 || d == x->shape[x->ndim - mask->ndim + i];
    }
    if (!fits)
        return SL_FAIL(SL_ERR_SHAPE, "sl_masked_fill: mask %s does not broadcast to x %s",
                       sl_shape_str(mask), sl_shape_str(x));
    sl_tensor *y = sl__new_like(x);
    if (!y) return NULL;
    select_ctx c = {x->dtype, false, value};
    foreach_broadcast(masked_fill_forward_run, &c, 3, (sl_tensor *[]){y, x, mask}, y);
    sl_node *n;
    if (!sl_record(&n, op, y, 2, (sl_tensor *[]){x, mask}, masked_fill_backward, 0)) return NULL;
    return y;
}

#endif
