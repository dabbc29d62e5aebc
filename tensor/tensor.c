/* tensor/tensor.c — tensor headers, creation, element access, printing, broadcasting and the
 * strided iterator that elementwise kernels run on. */
#include "accumulate.h"

#include <math.h>
#include <stdlib.h>

const sl_tensor sl__none = {.name = "SL_NONE"};

size_t sl_dtype_size(sl_dtype dtype) { return dtype == SL_F64 ? 8 : 4; }

const char *sl_dtype_name(sl_dtype dtype)
{
    switch (dtype) {
    case SL_F32: return "f32";
    case SL_F64: return "f64";
    case SL_I32: return "i32";
    }
    return "?";
}

/* double -> i32 without undefined behaviour: truncates toward zero, saturates, NaN gives 0. */
static inline int32_t to_i32(double v)
{
    if (!(v == v)) return 0;
    if (v >= 2147483647.0) return INT32_MAX;
    if (v <= -2147483648.0) return INT32_MIN;
    return (int32_t)v;
}

int64_t sl__shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int64_t sl_numel(const sl_tensor *t) { return t ? sl__shape_numel(t->ndim, t->shape) : 0; }

void *sl_ptr(const sl_tensor *t)
{
    return t ? (char *)t->data + t->offset * (int64_t)sl_dtype_size(t->dtype) : NULL;
}

void sl__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

bool sl_is_contiguous(const sl_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool sl__same_shape(const sl_tensor *a, const sl_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *sl__dims_str(int ndim, const int64_t *shape)
{
    static _Thread_local char bufs[4][8 * 24];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    size_t n = 0, cap = sizeof bufs[0];
    n += (size_t)snprintf(b + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(b + n, cap - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(b + n, cap - n, "]");
    return b;
}

const char *sl_shape_str(const sl_tensor *t)
{
    return t ? sl__dims_str(t->ndim, t->shape) : "(null)";
}

/* ---------------------------------------------------------------- creation */

bool sl__check_shape(const char *op, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > SL_MAX_DIMS)
        return sl_set_error(SL_ERR_ARG, "%s: ndim %d outside [0, %d]", op, ndim, SL_MAX_DIMS);
    if (ndim > 0 && !shape) return sl_set_error(SL_ERR_ARG, "%s: shape is NULL", op);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return sl_set_error(SL_ERR_SHAPE, "%s: negative dim in %s", op,
                                sl__dims_str(ndim, shape));
        if (shape[i] && n > INT64_MAX / 8 / shape[i])
            return sl_set_error(SL_ERR_SHAPE, "%s: %s is too large", op,
                                sl__dims_str(ndim, shape));
        n *= shape[i];
    }
    return true;
}

/* A tensor header and its storage's version counter, allocated together. */
typedef struct {
    sl_tensor t;
    uint32_t version;
} header;

/* A cleared header in the current arena, for op (which an out-of-memory message names). */
static sl_tensor *new_header(const char *op, sl_arena *a)
{
    header *h = sl_arena_alloc(a, sizeof *h, 16);
    if (!h) return SL_FAIL(SL_ERR_OOM, "%s: out of memory for a tensor header", op);
    memset(h, 0, sizeof *h);
    h->t.arena = a;
    h->t.generation = sl__arena_generation(a);
    h->t.seal = sl__seal(a, h->t.generation);
    h->t.version = &h->version;
    return &h->t;
}

static sl_tensor *alloc_tensor(const char *op, sl_dtype dtype, int ndim, const int64_t *shape)
{
    if (!sl__check_shape(op, ndim, shape)) return NULL;
    if (dtype != SL_F32 && dtype != SL_F64 && dtype != SL_I32)
        return SL_FAIL(SL_ERR_DTYPE, "%s: unknown dtype %d", op, (int)dtype);
    sl_arena *a = sl_arena_current();
    int64_t n = sl__shape_numel(ndim, shape);
    sl_tensor *t = a ? new_header(op, a) : NULL;
    if (!t) return NULL;
    size_t bytes = (size_t)n * sl_dtype_size(dtype);
    t->data = sl_arena_alloc(a, bytes, 64);
    if (!t->data)
        return SL_FAIL(SL_ERR_OOM, "%s: out of memory for a %s %s tensor (%zu bytes)", op,
                       sl_dtype_name(dtype), sl__dims_str(ndim, shape), bytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    sl__contiguous_strides(ndim, shape, t->strides);
    return t;
}

sl_tensor *sl__new(const char *op, sl_dtype dtype, int ndim, const int64_t *shape)
{
    return alloc_tensor(op, dtype, ndim, shape);
}

sl_tensor *sl__new_like(const char *op, const sl_tensor *t)
{
    return sl__new(op, t->dtype, t->ndim, t->shape);
}

sl_tensor *sl__alias(const char *op, const sl_tensor *t)
{
    sl_arena *a = sl_arena_current();
    sl_tensor *v = a ? new_header(op, a) : NULL;
    if (!v) return NULL;
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    memcpy(v->strides, t->strides, sizeof v->strides);
    v->offset = t->offset;
    v->data = t->data;
    v->version = t->version; /* one storage, one counter */
    return v;
}

sl_tensor *sl_empty(sl_dtype dtype, int ndim, const int64_t *shape)
{
    return alloc_tensor("sl_empty", dtype, ndim, shape);
}

sl_tensor *sl_zeros(sl_dtype dtype, int ndim, const int64_t *shape)
{
    sl_tensor *t = alloc_tensor("sl_zeros", dtype, ndim, shape);
    if (t) memset(t->data, 0, (size_t)sl_numel(t) * sl_dtype_size(dtype));
    return t;
}

sl_tensor *sl_zeros_like(const sl_tensor *t)
{
    SL_CHECK_TENSOR("sl_zeros_like", t);
    return sl_zeros(t->dtype, t->ndim, t->shape);
}

static void fill_contig(sl_tensor *t, double v)
{
    int64_t n = sl_numel(t);
    switch (t->dtype) {
    case SL_F32: for (int64_t i = 0; i < n; i++) ((float *)t->data)[i] = (float)v; break;
    case SL_F64: for (int64_t i = 0; i < n; i++) ((double *)t->data)[i] = v; break;
    case SL_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)t->data)[i] = to_i32(v); break;
    }
}

sl_tensor *sl_full(sl_dtype dtype, int ndim, const int64_t *shape, double value)
{
    sl_tensor *t = alloc_tensor("sl_full", dtype, ndim, shape);
    if (t) fill_contig(t, value);
    return t;
}

sl_tensor *sl_ones(sl_dtype dtype, int ndim, const int64_t *shape)
{
    return sl_full(dtype, ndim, shape, 1.0);
}

sl_tensor *sl_scalar(sl_dtype dtype, double value) { return sl_full(dtype, 0, NULL, value); }

sl_tensor *sl_arange(sl_dtype dtype, double start, double stop, double step)
{
    if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return SL_FAIL(SL_ERR_ARG, "sl_arange: bad range start %g stop %g step %g", start, stop,
                       step);
    double count = ceil((stop - start) / step);
    if (count >= 0x1p40)
        return SL_FAIL(SL_ERR_SHAPE, "sl_arange: [%g, %g) in steps of %g is too large", start, stop,
                       step);
    int64_t n = count > 0 ? (int64_t)count : 0;
    sl_tensor *t = alloc_tensor("sl_arange", dtype, 1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) sl_set(t, i, start + (double)i * step);
    return t;
}

sl_tensor *sl_from_data(sl_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
    if (!data) return SL_FAIL(SL_ERR_ARG, "sl_from_data: data is NULL");
    sl_tensor *t = alloc_tensor("sl_from_data", dtype, ndim, shape);
    if (t) memcpy(t->data, data, (size_t)sl_numel(t) * sl_dtype_size(dtype));
    return t;
}

/* ---------------------------------------------------------------- element access */

static int64_t flat_to_offset(const sl_tensor *t, int64_t flat)
{
    int64_t off = t->offset;
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t d = t->shape[i];
        off += (flat % d) * t->strides[i];
        flat /= d;
    }
    return off;
}

static double load(const sl_tensor *t, int64_t off)
{
    switch (t->dtype) {
    case SL_F32: return ((const float *)t->data)[off];
    case SL_F64: return ((const double *)t->data)[off];
    case SL_I32: return ((const int32_t *)t->data)[off];
    }
    return NAN;
}

static void store(sl_tensor *t, int64_t off, double v)
{
    switch (t->dtype) {
    case SL_F32: ((float *)t->data)[off] = (float)v; break;
    case SL_F64: ((double *)t->data)[off] = v; break;
    case SL_I32: ((int32_t *)t->data)[off] = to_i32(v); break;
    }
}

double sl_get(const sl_tensor *t, int64_t i)
{
    if (!t) return sl__null_arg("sl_get", "t"), NAN;
    if (!sl__check_live("sl_get", t, "t")) return NAN;
    if (i < 0 || i >= sl_numel(t)) {
        sl_set_error(SL_ERR_INDEX, "sl_get: index %lld out of range for %s", (long long)i,
                     sl_shape_str(t));
        return NAN;
    }
    return load(t, flat_to_offset(t, i));
}

void sl_set(sl_tensor *t, int64_t i, double v)
{
    if (!t) {
        sl__null_arg("sl_set", "t");
        return;
    }
    if (!sl__check_live("sl_set", t, "t")) return;
    if (i < 0 || i >= sl_numel(t)) {
        sl_set_error(SL_ERR_INDEX, "sl_set: index %lld out of range for %s", (long long)i,
                     sl_shape_str(t));
        return;
    }
    store(t, flat_to_offset(t, i), v);
    sl__bump(t);
}

double sl_item(const sl_tensor *t)
{
    if (!t) return sl__null_arg("sl_item", "t"), NAN;
    if (!sl__check_live("sl_item", t, "t")) return NAN;
    if (sl_numel(t) != 1) {
        sl_set_error(SL_ERR_SHAPE, "sl_item: expected one element, got %s", sl_shape_str(t));
        return NAN;
    }
    return load(t, t->offset);
}

/* Copy with conversion between any two dtypes, over any strides. */
typedef struct {
    sl_dtype dt, st;
} convert_ctx;

static void convert_run(void *vctx, char *const *p, const int64_t *bs, int64_t n)
{
    const convert_ctx *c = vctx;
    char *d = p[0];
    const char *s = p[1];
#define CONVERT(DT, ST)                                                                          \
    for (int64_t i = 0; i < n; i++) *(DT *)(d + i * bs[0]) = (DT) * (const ST *)(s + i * bs[1]);
    if (c->dt == c->st && bs[0] == (int64_t)sl_dtype_size(c->dt) && bs[1] == bs[0]) {
        memcpy(d, s, (size_t)(n * bs[0]));
        return;
    }
    if (bs[1] == 0 && bs[0] == (int64_t)sl_dtype_size(c->dt) && n > 1) {
        /* one value filling a contiguous run (sl_fill, sl_zero_grad): convert it once, then
         * memset a zero or copy it in doubling blocks */
        convert_ctx one = *c;
        convert_run(&one, p, bs, 1);
        size_t es = (size_t)bs[0], done = 1;
        static const char zero[8];
        if (!memcmp(d, zero, es)) {
            memset(d, 0, (size_t)n * es);
            return;
        }
        for (; done < (size_t)n; done *= 2)
            memcpy(d + done * es, d, (done < (size_t)n - done ? done : (size_t)n - done) * es);
        return;
    }
    switch (c->dt * 3 + c->st) {
    case SL_F32 * 3 + SL_F32: CONVERT(float, float) break;
    case SL_F32 * 3 + SL_F64: CONVERT(float, double) break;
    case SL_F32 * 3 + SL_I32: CONVERT(float, int32_t) break;
    case SL_F64 * 3 + SL_F32: CONVERT(double, float) break;
    case SL_F64 * 3 + SL_F64: CONVERT(double, double) break;
    case SL_F64 * 3 + SL_I32: CONVERT(double, int32_t) break;
    case SL_I32 * 3 + SL_F32:
        for (int64_t i = 0; i < n; i++) *(int32_t *)(d + i * bs[0]) = to_i32(*(const float *)(s + i * bs[1]));
        break;
    case SL_I32 * 3 + SL_F64:
        for (int64_t i = 0; i < n; i++) *(int32_t *)(d + i * bs[0]) = to_i32(*(const double *)(s + i * bs[1]));
        break;
    case SL_I32 * 3 + SL_I32: CONVERT(int32_t, int32_t) break;
    }
#undef CONVERT
}

/* dst (any strides) <- src broadcast to dst's shape, converting dtypes. */
static void copy_broadcast(sl_tensor *dst, const sl_tensor *src)
{
    int64_t ss[SL_MAX_DIMS];
    sl__broadcast_strides(src, dst->ndim, dst->shape, ss);
    int64_t st[2][SL_MAX_DIMS];
    memcpy(st[0], dst->strides, sizeof st[0]);
    memcpy(st[1], ss, sizeof st[1]);
    char *base[2] = {sl_ptr(dst), sl_ptr(src)};
    size_t es[2] = {sl_dtype_size(dst->dtype), sl_dtype_size(src->dtype)};
    convert_ctx c = {dst->dtype, src->dtype};
    sl__foreach(2, base, (const int64_t(*)[SL_MAX_DIMS])st, es, dst->ndim, dst->shape,
                convert_run, &c);
}

bool sl_copy_into(sl_tensor *dst, const sl_tensor *src)
{
    if (!dst) return sl__null_arg("sl_copy_into", "dst");
    if (!src) return sl__null_arg("sl_copy_into", "src");
    if (!sl__check_live("sl_copy_into", dst, "dst") || !sl__check_live("sl_copy_into", src, "src"))
        return false;
    if (!sl__same_shape(dst, src))
        return sl_set_error(SL_ERR_SHAPE, "sl_copy_into: shapes differ: dst %s, src %s",
                            sl_shape_str(dst), sl_shape_str(src));
    copy_broadcast(dst, src);
    sl__bump(dst);
    return true;
}

bool sl_copy_out(const sl_tensor *t, void *buf)
{
    if (!t) return sl__null_arg("sl_copy_out", "t");
    if (!sl__check_live("sl_copy_out", t, "t")) return false;
    if (!buf) return sl_set_error(SL_ERR_ARG, "sl_copy_out: buf is NULL");
    sl_tensor d = *t;
    d.data = buf;
    d.offset = 0;
    sl__contiguous_strides(t->ndim, t->shape, d.strides);
    copy_broadcast(&d, t);
    return true;
}

bool sl_fill(sl_tensor *t, double v)
{
    if (!t) return sl__null_arg("sl_fill", "t");
    if (!sl__check_live("sl_fill", t, "t")) return false;
    sl_tensor s = {.dtype = SL_F64, .ndim = 0, .data = &v};
    copy_broadcast(t, &s);
    sl__bump(t);
    return true;
}

void sl_mark_modified(sl_tensor *t) { sl__bump(t); }

sl_tensor *sl__contig(const char *op, const sl_tensor *t)
{
    if (sl_is_contiguous(t)) return (sl_tensor *)t;
    sl_tensor *c = sl__new_like(op, t);
    if (c) copy_broadcast(c, t);
    return c;
}

/* ---------------------------------------------------------------- broadcasting */

bool sl__broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                          int *nout, int64_t *sout)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - na), ib = i - (n - nb);
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return sl_set_error(SL_ERR_SHAPE, "%s: shapes do not broadcast: %s vs %s", op,
                                sl__dims_str(na, sa), sl__dims_str(nb, sb));
        sout[i] = da == 1 ? db : da;
    }
    *nout = n;
    return true;
}

void sl__broadcast_strides(const sl_tensor *t, int ndim, const int64_t *shape, int64_t *strides)
{
    for (int i = 0; i < ndim; i++) {
        int it = i - (ndim - t->ndim);
        strides[i] = (it < 0 || (t->shape[it] == 1 && shape[i] != 1)) ? 0 : t->strides[it];
    }
}

/* ---------------------------------------------------------------- strided iteration */

void sl__foreach(int nops, char *const *base, const int64_t (*strides)[SL_MAX_DIMS],
                 const size_t *esize, int ndim, const int64_t *shape, sl__run_fn fn, void *ctx)
{
    int64_t sh[SL_MAX_DIMS], bs[SL__MAX_OPS][SL_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) return;
        if (shape[d] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = bs[k][nd - 1] == strides[k][d] * (int64_t)esize[k] * shape[d];
        if (merge) {
            sh[nd - 1] *= shape[d];
            for (int k = 0; k < nops; k++) bs[k][nd - 1] = strides[k][d] * (int64_t)esize[k];
        } else {
            sh[nd] = shape[d];
            for (int k = 0; k < nops; k++) bs[k][nd] = strides[k][d] * (int64_t)esize[k];
            nd++;
        }
    }
    if (nd == 0) {
        sh[0] = 1;
        for (int k = 0; k < nops; k++) bs[k][0] = 0;
        nd = 1;
    }
    int64_t inner[SL__MAX_OPS], idx[SL_MAX_DIMS] = {0};
    char *p[SL__MAX_OPS];
    for (int k = 0; k < nops; k++) {
        inner[k] = bs[k][nd - 1];
        p[k] = base[k];
    }
    for (;;) {
        fn(ctx, p, inner, sh[nd - 1]);
        int d = nd - 2;
        for (; d >= 0; d--) {
            for (int k = 0; k < nops; k++) p[k] += bs[k][d];
            if (++idx[d] < sh[d]) break;
            for (int k = 0; k < nops; k++) p[k] -= bs[k][d] * sh[d];
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

void sl__foreach_broadcast(sl__run_fn fn, void *ctx, int nops, sl_tensor *const *ops,
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

/* The running CPU's accumulation runs (accumulate_isa.c). */
static sl__run_fn accumulate_run(void) { return SL_ISA_PICK(sl__accumulate_kernels)->run; }

/* A large accumulation that sums nothing (dst broadcasts along no dim of src) between two
 * storages splits over the pool along src's outermost dim of size > 1: each part writes its
 * own elements of dst, so the result is the same as in one pass. */
enum { ACC_PARALLEL_MIN = 1 << 16 }; /* elements */

typedef struct {
    char *base[2];
    int64_t st[2][SL_MAX_DIMS];
    size_t es[2];
    int ndim, outer; /* outer: the dim split */
    int64_t shape[SL_MAX_DIMS];
    sl__acc_ctx c;
    sl__run_fn run;
} acc_job;

static void accumulate_range(void *ctx, int64_t i0, int64_t i1)
{
    const acc_job *j = ctx;
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, j->shape, sizeof shape);
    shape[j->outer] = i1 - i0;
    char *base[2];
    for (int k = 0; k < 2; k++)
        base[k] = j->base[k] + i0 * j->st[k][j->outer] * (int64_t)j->es[k];
    sl__foreach(2, base, j->st, j->es, j->ndim, shape, j->run, (void *)&j->c);
}

void sl__accumulate_reduced(sl_tensor *dst, const sl_tensor *src)
{
    acc_job j = {.base = {sl_ptr(dst), sl_ptr(src)},
                 .es = {sl_dtype_size(dst->dtype), sl_dtype_size(src->dtype)},
                 .ndim = src->ndim, .outer = -1, .c = {dst->dtype}, .run = accumulate_run()};
    sl__broadcast_strides(dst, src->ndim, src->shape, j.st[0]);
    memcpy(j.st[1], src->strides, sizeof j.st[1]);
    memcpy(j.shape, src->shape, sizeof j.shape);
    bool sums = false;
    for (int d = 0; d < src->ndim; d++) {
        if (src->shape[d] > 1 && j.st[0][d] == 0) sums = true;
        if (src->shape[d] > 1 && j.outer < 0) j.outer = d;
    }
    int64_t n = sl_numel(src);
    if (!sums && j.outer >= 0 && n >= ACC_PARALLEL_MIN && dst->data != src->data) {
        int64_t per = n / src->shape[j.outer]; /* elements per index of the outer dim */
        int64_t grain = (ACC_PARALLEL_MIN / 4 + per - 1) / per;
        sl_parallel_for(src->shape[j.outer], grain, accumulate_range, &j);
        return;
    }
    sl__foreach(2, j.base, (const int64_t(*)[SL_MAX_DIMS])j.st, j.es, src->ndim, src->shape, j.run,
                &j.c);
}

void sl__accumulate(sl_tensor *dst, const sl_tensor *src) { sl__accumulate_reduced(dst, src); }

/* ---------------------------------------------------------------- printing */

static void print_rec(FILE *f, const sl_tensor *t, int dim, int64_t off, int indent)
{
    const int64_t edge = 3;
    int64_t n = t->shape[dim];
    fputc('[', f);
    for (int64_t i = 0; i < n; i++) {
        if (n > 2 * edge && i == edge) {
            fputs(dim == t->ndim - 1 ? "..., " : "...,\n", f);
            if (dim != t->ndim - 1) fprintf(f, "%*s", indent + 1, "");
            i = n - edge;
        }
        int64_t o = off + i * t->strides[dim];
        if (dim == t->ndim - 1) {
            if (t->dtype == SL_I32) fprintf(f, "%d", ((const int32_t *)t->data)[o]);
            else fprintf(f, "%.6g", load(t, o));
        } else {
            print_rec(f, t, dim + 1, o, indent + 1);
        }
        if (i + 1 < n) {
            fputc(',', f);
            if (dim == t->ndim - 1) fputc(' ', f);
            else fprintf(f, "\n%*s", indent + 1, "");
        }
    }
    fputc(']', f);
}

void sl_fprint(FILE *f, const sl_tensor *t, const char *label)
{
    if (label) fprintf(f, "%s: ", label);
    if (!t) {
        fprintf(f, "(null)\n");
        return;
    }
    fprintf(f, "%s %s%s\n", sl_dtype_name(t->dtype), sl_shape_str(t),
            t->requires_grad ? " requires_grad" : "");
    if (t->ndim == 0) fprintf(f, "%.6g", load(t, t->offset));
    else if (sl_numel(t) == 0) fprintf(f, "[]");
    else print_rec(f, t, 0, t->offset, 0);
    fputc('\n', f);
}
