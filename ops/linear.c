/* ops/linear.c — the fused fully connected layer: y = act(x W^T + b), and its backward.
 *
 *     x (..., in), W (out, in), b (out) -> y (..., out);  act: none or GELU (tanh form)
 *
 * What sl_matmul + sl_add + sl_gelu compute, in one op: x's leading dims fold into the rows of
 * one (rows, in) @ (in, out) gemm (x read in place when its rows are evenly strided), W goes to
 * gemm as transposed, uncopied, and the bias and activation run on each block of rows right
 * after gemm wrote it, while it is in cache. Backward makes no view gradients: dx and dW are
 * accumulated by gemm (beta = 1) straight into the gradient buffers of x and W (dx with beta =
 * 0 into a new, unzeroed buffer when x's gradient starts there: sl_input_grad_overwrite), and
 * db is a column sum folded into the pass that applies the activation's derivative, which each
 * chunk of dx's rows runs on its own rows just before its product reads them (so they come back
 * from cache; sl_linear_heads' chunks first lay out their rows of dL/dy too). sl_linear_residual
 * adds its residual to each block of rows after the activation, and hands dL/dy on as the
 * residual's gradient (the residual recorded first, as sl_add records it). Those per-row
 * epilogues live in linear_kernels.h (one type-generic source, made into f32 and f64 functions
 * for every SIMD level by linear_isa.c; the running CPU's are picked here, ops/linear.h).
 *
 * f32 products run on shortlong's own kernel (ops/gemm.c) where ops/blas.c's rule says so
 * (sl__sgemm_use): the operand it packs (W^T forward, W for dx, x for dW) is packed once
 * per product, in parallel, into the calling thread's scratch buffer, and the chunks share it.
 * Otherwise cblas.
 *
 * OpenBLAS runs on one thread (ops/blas.c); products split over the pool in chunks fixed by
 * the shape and the process's CPUs, never the thread count (chunk_rows: multiples of GEMM_ROWS
 * rows; dW also in slabs of SLAB rows of the inner dim, added in order), and db is summed in
 * double per block of BLOCK rows, the blocks added in order: every gemm call and every sum is
 * the same whatever the thread count, so results repeat bitwise on any number of threads.
 */
#include "blas.h"
#include "gemm.h"
#include "linear.h"

#include <limits.h>
#include <math.h>

enum {
    BLOCK = 64,      /* rows per db partial sum and per elementwise task */
    GEMM_ROWS = 256, /* output rows per gemm call, at least (chunk_rows) */
    SLAB = 1024,     /* dW's inner dim (x's rows) per gemm call */
};
_Static_assert(SLAB % SL__SGEMM_KC == 0, "slabs start where a packed operand can be cut");
_Static_assert(GEMM_ROWS % BLOCK == 0, "a dx chunk holds whole units of du");
#define MIN_CHUNK_FLOPS 4e6 /* below this much work, a parallel chunk costs more than it saves */

/* The running CPU's epilogues (linear_isa.c). */
static const sl__linear_kernels *kernels(void) { return SL_ISA_PICK(sl__linear_kernels); }

/* ---------------------------------------------------------------- gemm */

/* A matrix as gemm reads it: element (i, j) at p[i * rs + j * cs]; trans/ld from the layout. */
typedef struct {
    char *p;
    CBLAS_TRANSPOSE trans;
    int64_t ld;
} mat;

/* rows x cols with strides (rs, cs) as a gemm operand (sl__blas_layout); false if it has to be
 * copied first. */
static bool as_mat(char *p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, mat *m)
{
    m->p = p;
    return sl__blas_layout(rows, cols, rs, cs, &m->trans, &m->ld);
}

/* Rows [r0, r1) of c (row-major, ldc) = a @ b + beta c (beta 0 or 1), a with rows of a's
 * layout; through shortlong's own kernel when b was packed for it (bp), else cblas. */
static void gemm_rows(sl_dtype dt, const mat *a, const mat *b, const float *bp, char *c,
                      int64_t ldc, int64_t r0, int64_t r1, int64_t n, int64_t k, double beta)
{
    if (bp) {
        sl__sgemm_rows((const float *)a->p, a->trans == CblasTrans, a->ld, bp, k, n, (float *)c,
                       ldc, r0, r1, beta != 0);
        return;
    }
    size_t es = sl_dtype_size(dt);
    /* row r0 of a: r0 rows down when NoTrans, r0 columns across when Trans */
    const char *ap = a->p + (size_t)(r0 * (a->trans == CblasNoTrans ? a->ld : 1)) * es;
    int m = (int)(r1 - r0);
    if (dt == SL_F32)
        cblas_sgemm(CblasRowMajor, a->trans, b->trans, m, (int)n, (int)k, 1.0f,
                    (const float *)ap, (int)a->ld, (const float *)b->p, (int)b->ld, (float)beta,
                    (float *)c + r0 * ldc, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, a->trans, b->trans, m, (int)n, (int)k, 1.0, (const double *)ap,
                    (int)a->ld, (const double *)b->p, (int)b->ld, beta, (double *)c + r0 * ldc,
                    (int)ldc);
}

typedef struct {
    float *bp;
    const mat *b;
    int64_t k, n;
} pack_job;

static void pack_panels(void *ctx, int64_t p0, int64_t p1)
{
    const pack_job *j = ctx;
    sl__sgemm_pack(j->bp, (const float *)j->b->p, j->b->trans == CblasTrans, j->b->ld, j->k, j->n,
                   p0, p1);
}

/* b (k x n) packed for shortlong's own kernel into the calling thread's scratch (valid until
 * the next packing), panels split over the pool, for a product of m rows; NULL when the kernel
 * is not used for this product (f64, too few rows or columns or switched off: sl__sgemm_use,
 * or no memory for the packing): cblas then. */
static float *packed_b(sl_dtype dt, const mat *b, int64_t m, int64_t k, int64_t n)
{
    if (dt != SL_F32 || !sl__sgemm_use(m, n) || k == 0 || n == 0) return NULL;
    float *bp = sl__sgemm_scratch(sl__sgemm_packed_floats(k, n));
    if (!bp) return NULL;
    pack_job j = {bp, b, k, n};
    int64_t per_panel = (int64_t)sl__sgemm_packed_floats(k, 1) + 1; /* floats */
    sl_parallel_for(sl__sgemm_panels(n), (1 << 16) / per_panel + 1, pack_panels, &j);
    return bp;
}

/* Rows per gemm call, of `rows` that `ways` CPUs share: GEMM_ROWS, or a multiple of it holding
 * at least MIN_CHUNK_FLOPS. Through cblas, which packs the other operand (the weight) anew in
 * every call (at 256 rows, 5-10% of the product on an AVX-512 Xeon: BENCHMARKS.md), as many
 * rows as give each of the CPUs one call, in multiples of GEMM_ROWS: fewer packings where the
 * CPUs are few, the same calls as before where they are many. The CPUs are the process's
 * (sl__cpu_share), not the thread count, so that the calls, and the bits, are the same on any
 * number of threads. */
static int64_t chunk_rows(int64_t rows, int64_t ways, double flops_per_row, bool cblas)
{
    int64_t c = GEMM_ROWS;
    if (cblas && ways >= 1) {
        const int64_t share = ((rows + ways - 1) / ways + GEMM_ROWS - 1) / GEMM_ROWS * GEMM_ROWS;
        if (share > c) c = share;
    }
    double g = MIN_CHUNK_FLOPS / (flops_per_row * (double)c);
    return c * (g > 1 ? (int64_t)ceil(g) : 1);
}

/* ---------------------------------------------------------------- forward */

typedef struct {
    sl_dtype dtype;
    mat x, w;            /* x (rows, in); w^T as the (in, out) operand */
    const float *wp;     /* w^T packed for shortlong's kernel, or NULL (cblas) */
    int64_t rows, in, out, chunk;
    bool gelu;
    char *y;             /* (rows, out): gemm's output, + bias, then act() applied in place */
    char *d;             /* (rows, out): gelu'(pre-activation), for backward; NULL if not kept */
    const char *b;       /* (out) or NULL */
    const char *r;       /* sl_linear_residual: the residual's rows, rrs elements apart, or NULL */
    int64_t rrs;
    int64_t T, hd;       /* sl_linear_heads: y is (B, out / hd, T, hd); hd 0: y is (rows, out) */
    const sl__linear_kernels *k;
} forward_job;

/* Rows [r0, r1): gemm, then bias and activation, row by row, then the residual added. */
static void forward_rows(const forward_job *j, int64_t r0, int64_t r1)
{
    size_t es = sl_dtype_size(j->dtype);
    if (j->in > 0)
        gemm_rows(j->dtype, &j->x, &j->w, j->wp, j->y, j->out, r0, r1, j->out, j->in, 0.0);
    else memset(j->y + (size_t)(r0 * j->out) * es, 0, (size_t)((r1 - r0) * j->out) * es);
    if (j->b || j->gelu) j->k->forward_rows(j->dtype, j->y, j->d, j->b, r0, r1, j->out, j->gelu);
    if (!j->r) return;
    char *y = j->y + es * (size_t)(r0 * j->out);
    if (j->rrs == j->out) /* rows back to back: one run */
        j->k->add(j->dtype, y, j->r + es * (size_t)(r0 * j->out), (r1 - r0) * j->out);
    else
        for (int64_t r = r0; r < r1; r++, y += es * (size_t)j->out)
            j->k->add(j->dtype, y, j->r + es * (size_t)(r * j->rrs), j->out);
}

/* Chunks [c0, c1) of j->chunk rows, one gemm call each. */
static void forward_chunks(void *ctx, int64_t c0, int64_t c1)
{
    const forward_job *j = ctx;
    for (int64_t c = c0; c < c1; c++)
        forward_rows(j, c * j->chunk, (c + 1) * j->chunk < j->rows ? (c + 1) * j->chunk : j->rows);
}

/* dst = src + b (b NULL: a copy of src) over n elements of type T, in 32-byte vectors and a
 * tail (the library builds at -O2, where GCC leaves such loops scalar). */
#define ADD_BIAS(T, dst, src, b, n)                                                                \
    do {                                                                                           \
        typedef T v_ __attribute__((vector_size(32)));                                             \
        T *d_ = (T *)(dst);                                                                        \
        const T *s_ = (const T *)(src), *b_ = (const T *)(b);                                      \
        if (!b_) {                                                                                 \
            sl__copy_row((char *)d_, (const char *)s_, sizeof(T) * (size_t)(n));                   \
        } else {                                                                                   \
            int64_t i_ = 0;                                                                        \
            for (; i_ + (int64_t)(32 / sizeof(T)) <= (n); i_ += (int64_t)(32 / sizeof(T))) {       \
                v_ x_, y_;                                                                         \
                memcpy(&x_, s_ + i_, sizeof x_);                                                   \
                memcpy(&y_, b_ + i_, sizeof y_);                                                   \
                x_ += y_;                                                                          \
                memcpy(d_ + i_, &x_, sizeof x_);                                                   \
            }                                                                                      \
            for (; i_ < (n); i_++) d_[i_] = s_[i_] + b_[i_];                                       \
        }                                                                                          \
    } while (0)

/* sl_linear_heads, chunks [c0, c1): each chunk's gemm into the worker's scratch, then every row's
 * out / hd heads, the bias added, to their places in (B, out / hd, T, hd). */
static void forward_heads_chunks(void *ctx, int64_t c0, int64_t c1, int worker)
{
    (void)worker;
    const forward_job *j = ctx;
    const size_t es = sl_dtype_size(j->dtype);
    const int64_t P = j->out / j->hd;
    char *tmp = sl__scratch(SL__SCRATCH_FORWARD, es * (size_t)(j->chunk * j->out));
    if (!tmp) return; /* reserved at the job's start: not reached */
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * j->chunk, r1 = r0 + j->chunk < j->rows ? r0 + j->chunk : j->rows;
        mat x = j->x; /* NoTrans (x_operand): rows r0 .. from x.p */
        x.p += (size_t)(r0 * x.ld) * es;
        if (j->in > 0)
            gemm_rows(j->dtype, &x, &j->w, j->wp, tmp, j->out, 0, r1 - r0, j->out, j->in, 0.0);
        else memset(tmp, 0, es * (size_t)((r1 - r0) * j->out));
        for (int64_t p = 0; p < P; p++) /* each head's rows one after the other in its plane */
            for (int64_t r = r0; r < r1; r++) {
                const int64_t b = r / j->T, t = r % j->T;
                char *dst = j->y + es * (size_t)(((b * P + p) * j->T + t) * j->hd);
                const char *src = tmp + es * (size_t)((r - r0) * j->out + p * j->hd);
                const char *bias = j->b ? j->b + es * (size_t)(p * j->hd) : NULL;
                if (j->dtype == SL_F32) ADD_BIAS(float, dst, src, bias, j->hd);
                else ADD_BIAS(double, dst, src, bias, j->hd);
            }
    }
}

/* ---------------------------------------------------------------- backward */

typedef struct {
    mat x, w;     /* as forward used them (copies if they had to be) */
    char *d;      /* (rows, out) gelu'(pre-activation), GELU only */
    int64_t rows, in, out;
    bool gelu;
    int64_t T, hd; /* sl_linear_heads: dL/dy comes as (B, out / hd, T, hd); hd 0: (rows, out) */
    int X;         /* the node's inputs: x, W, b from index X on; sl_linear_residual (X = 1)
                      records the residual first, as sl_add(residual, ...) does, so that the
                      backward reaches the inputs' subgraphs in the same order */
} linear_saved;

typedef struct {
    const linear_saved *s;
    sl_dtype dtype;
    const char *g; /* (B, P, T, hd) */
    char *rows;    /* (rows, out) */
} heads_job;

enum { HEAD_ROWS = 8 }; /* rows per block of heads_rows: a block of out's rows stays in L1 */

/* Rows [r0, r1) of (rows, out) from the heads' planes (B, P, T, hd): every head's hd columns of
 * them, in blocks of up to HEAD_ROWS positions of one batch row, a block of whole rows at a time
 * (rows written one head at a time would be 128-byte pieces a row apart, which miss). */
static void heads_rows(const heads_job *h, int64_t r0, int64_t r1)
{
    const linear_saved *s = h->s;
    const size_t es = sl_dtype_size(h->dtype), n = es * (size_t)s->hd;
    const int64_t P = s->out / s->hd;
    for (int64_t r = r0; r < r1;) {
        const int64_t b = r / s->T, t0 = r % s->T;
        int64_t t1 = t0 + HEAD_ROWS < s->T ? t0 + HEAD_ROWS : s->T;
        if (t1 - t0 > r1 - r) t1 = t0 + (r1 - r);
        for (int64_t p = 0; p < P; p++) {
            const char *src = h->g + n * (size_t)((b * P + p) * s->T);
            char *dst = h->rows + es * (size_t)(b * s->T * s->out + p * s->hd);
            for (int64_t t = t0; t < t1; t++)
                sl__copy_row(dst + es * (size_t)(t * s->out), src + n * (size_t)t, n);
        }
        r += t1 - t0;
    }
}

static void heads_to_rows(void *ctx, int64_t r0, int64_t r1) { heads_rows(ctx, r0, r1); }

typedef struct {
    sl_dtype dtype;
    const linear_saved *s;
    const char *g; /* (rows, out) dL/dy */
    char *du;      /* (rows, out): g * act'(u), or g itself without an activation */
    double *dbp;   /* (units, out) partial sums of du, or NULL */
    char *dx, *dw; /* gradient buffers, contiguous (rows, in) and (out, in), or NULL */
    double dx_beta; /* 1: dx accumulates; 0: dx is new (sl_input_grad_overwrite) */
    mat dum, wm;   /* du as a NoTrans (rows, out) operand; w as the (out, in) operand */
    const float *wp, *xp; /* w and x packed for shortlong's kernel, or NULL (cblas) */
    int64_t xchunk, wchunk, wchunks; /* rows per dx call; dW rows per call, calls per slab */
    bool du_in_dx;  /* each dx chunk makes its rows' du first (du_units), read back from cache */
    const heads_job *heads; /* sl_linear_heads with a dx product: each dx chunk lays out its
                               rows of dL/dy first (heads_rows), before du_units */
    char *slabs;   /* (slabs - 1, out, in): dW's share from every slab but the first */
    const sl__linear_kernels *k;
} backward_job;

/* Units [u0, u1): du = g * act'(u) and the units' db partial sums. */
static void du_units(void *ctx, int64_t u0, int64_t u1)
{
    const backward_job *j = ctx;
    const linear_saved *s = j->s;
    for (int64_t unit = u0; unit < u1; unit++) {
        int64_t r0 = unit * BLOCK, r1 = r0 + BLOCK < s->rows ? r0 + BLOCK : s->rows;
        double *db = j->dbp ? j->dbp + unit * s->out : NULL;
        if (db) memset(db, 0, sizeof(double) * (size_t)s->out);
        j->k->backward_rows(j->dtype, j->g, s->d, j->du, db, r0, r1, s->out, s->gelu);
    }
}

/* Chunks [c0, c1) of dx's rows: dx += du @ W  ((rows, out) @ (out, in)), with du_in_dx the
 * chunk's du and db partial sums made just before (xchunk is a multiple of BLOCK). */
static void dx_chunks(void *ctx, int64_t c0, int64_t c1)
{
    const backward_job *j = ctx;
    const linear_saved *s = j->s;
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * j->xchunk, r1 = r0 + j->xchunk < s->rows ? r0 + j->xchunk : s->rows;
        if (j->heads) heads_rows(j->heads, r0, r1);
        if (j->du_in_dx) du_units(ctx, r0 / BLOCK, (r1 + BLOCK - 1) / BLOCK);
        gemm_rows(j->dtype, &j->dum, &j->wm, j->wp, j->dx, s->in, r0, r1, s->in, s->out,
                  j->dx_beta);
    }
}

/* Tasks [t0, t1) of dW += du^T @ x  ((out, rows) @ (rows, in)): task t is chunk t % wchunks of
 * dW's rows over slab t / wchunks of x's rows. Slab 0 accumulates into dW itself (beta = 1),
 * slab k > 0 writes its share to slabs[k - 1], added afterwards in slab order. */
static void dw_tasks(void *ctx, int64_t t0, int64_t t1)
{
    const backward_job *j = ctx;
    const linear_saved *s = j->s;
    size_t es = sl_dtype_size(j->dtype);
    for (int64_t t = t0; t < t1; t++) {
        int64_t slab = t / j->wchunks, c = t % j->wchunks;
        int64_t r0 = c * j->wchunk, r1 = r0 + j->wchunk < s->out ? r0 + j->wchunk : s->out;
        int64_t k0 = slab * SLAB, k = s->rows - k0 < SLAB ? s->rows - k0 : SLAB;
        mat dut = {j->du + (size_t)(k0 * s->out) * es, CblasTrans, s->out}; /* du^T: (out, k) */
        mat xs = s->x;
        xs.p += (size_t)(k0 * xs.ld) * es;
        const float *xp = j->xp ? j->xp + sl__sgemm_packed_floats(k0, s->in) : NULL;
        char *dst = slab ? j->slabs + (size_t)((slab - 1) * s->out * s->in) * es : j->dw;
        gemm_rows(j->dtype, &dut, &xs, xp, dst, s->in, r0, r1, s->in, k, slab ? 0.0 : 1.0);
    }
}

/* Elements [e0, e1) of dW += the slabs' shares, in slab order. */
static void add_slabs(void *ctx, int64_t e0, int64_t e1)
{
    const backward_job *j = ctx;
    int64_t n = j->s->out * j->s->in, slabs = (j->s->rows + SLAB - 1) / SLAB;
    size_t es = sl_dtype_size(j->dtype);
    for (int64_t k = 1; k < slabs; k++)
        j->k->add(j->dtype, j->dw + (size_t)e0 * es, j->slabs + (size_t)((k - 1) * n + e0) * es,
                  e1 - e0);
}

/* y = act(u) (+ r), u = x W^T + b, so with g = dL/dy and du = g * act'(u):
 *     dx = du W,   dW = du^T x,   db = sum over rows of du   (dr = g). */
static bool linear_backward(sl_node *n)
{
    const linear_saved *s = n->saved;
    const int X = s->X, W = X + 1, B = X + 2; /* inputs x, weight, bias (absent: NULL) */
    sl_tensor *gx = NULL, *gw = NULL, *gb = NULL;
    /* the residual's gradient is dL/dy itself (as sl_add's backward gives it, and first, as
     * sl_add's backward ran before the Linear's: every sum keeps its order) */
    if (X && n->in[0]->requires_grad && !sl__input_grad_identity(n, 0)) return false;
    const bool want_b = n->n_in > B && n->in[B] && n->in[B]->requires_grad;
    if (!n->in[X]->requires_grad && !n->in[W]->requires_grad && !want_b)
        return true; /* only the residual's */
    if (n->in[W]->requires_grad && !(gw = sl_input_grad(n, W))) return false;
    if (want_b && !(gb = sl_input_grad(n, B))) return false;
    sl_dtype dt = n->out->dtype;
    size_t es = sl_dtype_size(dt);
    int64_t units = (s->rows + BLOCK - 1) / BLOCK;
    backward_job j = {.dtype = dt, .s = s, .g = n->grad->data,
                      .dw = gw ? sl_ptr(gw) : NULL, .dx_beta = 1.0, .k = kernels()};
    size_t g_bytes = es * (size_t)(s->rows * s->out);
    /* sl_linear_heads: dL/dy head by head, back to rows in the thread's scratch (no GELU here),
     * by the dx chunks when there is a dx product (below), else in a pass of its own */
    heads_job h = {s, dt, j.g, NULL};
    if (s->hd) {
        if (!(h.rows = sl__scratch(SL__SCRATCH_BACKWARD, g_bytes)))
            return sl_set_error(SL_ERR_OOM, "%s: out of memory for %zu bytes of dL/dy", n->op,
                                g_bytes);
        j.g = h.rows;
    }
    /* dL/du = dL/dy * gelu'(u) is written over gelu'(u) when nothing reads that after this
     * backward (no SL_RETAIN_GRAPH): no buffer of its own, and its stores hit lines the pass has
     * just read. Otherwise it lives only through this backward: the thread's scratch, not the
     * step arena, where every layer's would stay until the reset. */
    j.du = (char *)j.g;
    if (s->gelu)
        j.du = sl__backward_consumes() ? s->d : sl__scratch(SL__SCRATCH_BACKWARD, g_bytes);
    if (!j.du)
        return sl_set_error(SL_ERR_OOM, "%s: out of memory for %zu bytes of dL/du", n->op,
                            g_bytes);
    if (gb && !(j.dbp = sl_arena_alloc(sl_arena_current(),
                                       sizeof(double) * (size_t)(units * s->out), 64)))
        return false;
    j.dum = (mat){j.du, CblasNoTrans, s->out};
    /* W as the (out, in) operand: forward read W^T as (in, out); the same memory flipped */
    j.wm = (mat){s->w.p, s->w.trans == CblasTrans ? CblasNoTrans : CblasTrans, s->w.ld};
    /* dx is written by gemm with beta 0 when its buffer is new (not zeroed first); asked for
     * here, after the last exit that could leave it unwritten */
    bool dx_new = false;
    if (n->in[X]->requires_grad && !(gx = sl_input_grad_overwrite(n, X, &dx_new))) return false;
    if (gx) {
        j.dx = sl_ptr(gx);
        j.dx_beta = dx_new ? 0.0 : 1.0;
        if (dx_new && s->out == 0) /* no product writes dx: it is 0 */
            memset(j.dx, 0, es * (size_t)(s->rows * s->in));
    }
    /* dL/dy's rows (sl_linear_heads), du and db's partial sums: in dx's chunks when there is
     * a dx product to read them while in cache, else in passes of their own */
    const bool products = s->in > 0 && s->out > 0 && s->rows > 0, dx_product = gx && products;
    j.du_in_dx = (s->gelu || gb) && dx_product;
    if (s->hd && dx_product) j.heads = &h;
    else if (s->hd) sl_parallel_for(s->rows, 16 * HEAD_ROWS, heads_to_rows, &h);
    if ((s->gelu || gb) && !j.du_in_dx) sl_parallel_for(units, 1, du_units, &j);
    if (dx_product) {
        j.wp = packed_b(dt, &j.wm, s->rows, s->out, s->in);
        j.xchunk = chunk_rows(s->rows, sl__cpu_share(), 2.0 * (double)(s->in * s->out), !j.wp);
        sl_parallel_for((s->rows + j.xchunk - 1) / j.xchunk, 1, dx_chunks, &j);
    }
    if (gb) { /* db += the partial sums, in unit order */
        for (int64_t c = 0; c < s->out; c++) {
            double acc = 0;
            for (int64_t u = 0; u < units; u++) acc += j.dbp[u * s->out + c];
            if (dt == SL_F32) ((float *)sl_ptr(gb))[c] += (float)acc;
            else ((double *)sl_ptr(gb))[c] += acc;
        }
    }
    if (!products) return true; /* empty products */
    if (gw) {
        /* dW's rows are few and its inner dim long: splitting the inner dim too, rather than
         * dW's rows ever finer, keeps each call's packing of x down to its own slab */
        int64_t slabs = (s->rows + SLAB - 1) / SLAB;
        if (slabs > 1 &&
            !(j.slabs = sl_arena_alloc(sl_arena_current(),
                                       es * (size_t)((slabs - 1) * s->out * s->in), 64)))
            return false;
        j.xp = packed_b(dt, &s->x, s->out, s->rows, s->in); /* slabs: at multiples of KC */
        j.wchunk = chunk_rows(s->out, (sl__cpu_share() + slabs - 1) / slabs,
                              2.0 * (double)((s->rows < SLAB ? s->rows : SLAB) * s->in), !j.xp);
        j.wchunks = (s->out + j.wchunk - 1) / j.wchunk;
        sl_parallel_for(slabs * j.wchunks, 1, dw_tasks, &j);
        if (slabs > 1) sl_parallel_for(s->out * s->in, 1 << 14, add_slabs, &j);
    }
    return true;
}

/* ---------------------------------------------------------------- the op */

static const char *const OP = "sl_linear";

/* x as a NoTrans (rows, in) operand, copied to contiguous (in the current arena, alive as
 * long as the tape) if it cannot be read in place; returns the tensor read (x or the copy), or
 * NULL. */
static sl_tensor *x_operand(sl_tensor *x, int64_t rows, int64_t in, mat *m)
{
    int64_t rs;
    if (sl__rows_stride(x, &rs) && (in <= 1 || x->strides[x->ndim - 1] == 1) &&
        as_mat(sl_ptr(x), rows, in, rs, 1, m) && m->trans == CblasNoTrans)
        return x;
    sl_tensor *c = sl__contig(OP, x);
    return c && as_mat(sl_ptr(c), rows, in, in, 1, m) ? c : NULL;
}

/* sl_linear; sl_linear_heads when hd > 0 (x 3-D, act none: checked by the caller);
 * sl_linear_residual when res is given (hd 0). */
static sl_tensor *linear(const char *op, sl_tensor *x, sl_tensor *weight, sl_tensor *bias,
                         sl_activation act, int64_t hd, sl_tensor *res)
{
    if (!sl__check_float(op, x) || !sl__check_same_dtype(op, x, weight) ||
        (bias && !sl__check_same_dtype(op, x, bias)) || (res && !sl__check_same_dtype(op, x, res)))
        return NULL;
    if (weight->ndim != 2)
        return SL_FAIL(SL_ERR_SHAPE, "%s: weight must be 2-D (out, in), got %s", op,
                       sl_shape_str(weight));
    int64_t out = weight->shape[0], in = weight->shape[1];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != in)
        return SL_FAIL(SL_ERR_SHAPE, "%s: input %s does not end in %lld features (weight %s)", op,
                       sl_shape_str(x), (long long)in, sl_shape_str(weight));
    if (bias && (bias->ndim != 1 || bias->shape[0] != out))
        return SL_FAIL(SL_ERR_SHAPE, "%s: bias %s does not match weight %s (expected [%lld])", op,
                       sl_shape_str(bias), sl_shape_str(weight), (long long)out);
    if (hd && out % hd)
        return SL_FAIL(SL_ERR_SHAPE, "%s: weight %s: %lld outputs are not a multiple of head_dim "
                       "%lld", op, sl_shape_str(weight), (long long)out, (long long)hd);
    int64_t rows = sl__shape_numel(x->ndim - 1, x->shape);
    if (rows > INT_MAX || in > INT_MAX || out > INT_MAX)
        return SL_FAIL(SL_ERR_SHAPE, "%s: input %s @ weight %s has a dim past BLAS's int range",
                       op, sl_shape_str(x), sl_shape_str(weight));
    int64_t shape[SL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    if (res && (res->ndim != x->ndim || memcmp(res->shape, shape, sizeof(int64_t) * x->ndim)))
        return SL_FAIL(SL_ERR_SHAPE, "%s: residual %s does not have the output's shape (input %s "
                       "@ weight %s: expected %s)", op, sl_shape_str(res), sl_shape_str(x),
                       sl_shape_str(weight), sl__dims_str(x->ndim, shape));
    bool gelu = act == SL_ACT_GELU_TANH;
    sl_tensor *y = hd ? sl__new(op, x->dtype, 4,
                                (int64_t[]){x->shape[0], out / hd, x->shape[1], hd})
                      : sl__new(op, x->dtype, x->ndim, shape);
    if (!y) return NULL;

    forward_job j = {.dtype = x->dtype, .rows = rows, .in = in, .out = out, .gelu = gelu,
                     .y = y->data, .T = hd ? x->shape[1] : 0, .hd = hd, .k = kernels()};
    sl_tensor *wk = weight, *bk = bias ? sl__contig(OP, bias) : NULL;
    sl_tensor *xk = x_operand(x, rows, in, &j.x);
    if (!xk || (bias && !bk)) return NULL;
    /* W^T (in, out): strides swapped */
    if (!as_mat(sl_ptr(weight), in, out, weight->strides[1], weight->strides[0], &j.w)) {
        if (!(wk = sl__contig(OP, weight))) return NULL;
        as_mat(sl_ptr(wk), in, out, 1, in, &j.w);
    }
    j.b = bk ? sl_ptr(bk) : NULL;
    if (res) { /* read in place when its rows are evenly strided and themselves contiguous */
        sl_tensor *rk = res;
        if (!sl__rows_stride(res, &j.rrs) || (out > 1 && res->strides[res->ndim - 1] != 1)) {
            if (!(rk = sl__contig(op, res))) return NULL;
            j.rrs = out;
        }
        j.r = sl_ptr(rk);
    }
    /* GELU's derivative is computed with the activation, from the same exponential, and kept
     * for backward (which then only multiplies) when x, W or b will take a gradient (the
     * residual's needs none) */
    bool want_d = sl_grad_enabled() && (x->requires_grad || weight->requires_grad ||
                                         (bias && bias->requires_grad));
    size_t d_bytes = sl_dtype_size(x->dtype) * (size_t)(rows * out);
    if (gelu && want_d && !(j.d = sl_arena_alloc(y->arena, d_bytes, 64))) return NULL;
    j.wp = in > 0 ? packed_b(x->dtype, &j.w, rows, in, out) : NULL;
    j.chunk = chunk_rows(rows, sl__cpu_share(), 2.0 * (double)(in * out) + 1, !j.wp);
    int64_t chunks = (rows + j.chunk - 1) / j.chunk;
    if (out > 0 && hd)
        sl__parallel_for_w(chunks, 1, forward_heads_chunks, &j, SL__SCRATCH_FORWARD,
                           sl_dtype_size(x->dtype) * (size_t)(j.chunk * out));
    else if (out > 0)
        sl_parallel_for(chunks, 1, forward_chunks, &j);

    sl_node *n;
    sl_tensor *ins[4] = {res, x, weight, bias}, **rec = res ? ins : ins + 1;
    if (!sl_record(&n, op, y, res ? 4 : bias ? 3 : 2, rec, linear_backward, sizeof(linear_saved)))
        return NULL;
    if (n)
        *(linear_saved *)n->saved =
            (linear_saved){j.x, j.w, j.d, rows, in, out, gelu, j.T, hd, res ? 1 : 0};
    /* dx reads W, dW reads x (as forward read them: the inputs or their copies); the saved
     * derivative is the op's own */
    if ((weight->requires_grad && !sl_save_for_backward(n, xk)) ||
        (x->requires_grad && !sl_save_for_backward(n, wk)))
        return NULL;
    return y;
}

sl_tensor *sl_linear(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act)
{
    SL_CHECK_TENSOR(OP, x);
    SL_CHECK_TENSOR(OP, weight);
    SL_CHECK_OPTIONAL(OP, bias);
    if (act != SL_ACT_NONE && act != SL_ACT_GELU_TANH)
        return SL_FAIL(SL_ERR_ARG, "sl_linear: unknown activation %d", (int)act);
    return linear(OP, x, weight, sl__opt(bias), act, 0, NULL);
}

sl_tensor *sl_linear_residual(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act,
                              sl_tensor *residual)
{
    static const char *const op = "sl_linear_residual";
    SL_CHECK_TENSOR(op, x);
    SL_CHECK_TENSOR(op, weight);
    SL_CHECK_OPTIONAL(op, bias);
    SL_CHECK_TENSOR(op, residual);
    if (act != SL_ACT_NONE && act != SL_ACT_GELU_TANH)
        return SL_FAIL(SL_ERR_ARG, "%s: unknown activation %d", op, (int)act);
    return linear(op, x, weight, sl__opt(bias), act, 0, residual);
}

sl_tensor *sl_linear_heads(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, int64_t head_dim)
{
    static const char *const op = "sl_linear_heads";
    SL_CHECK_TENSOR(op, x);
    SL_CHECK_TENSOR(op, weight);
    SL_CHECK_OPTIONAL(op, bias);
    if (head_dim < 1)
        return SL_FAIL(SL_ERR_ARG, "%s: head_dim %lld must be >= 1", op, (long long)head_dim);
    if (x->ndim != 3 || x->shape[0] < 1 || x->shape[1] < 1)
        return SL_FAIL(SL_ERR_SHAPE, "%s: input %s must be 3-D (B, T, in), non-empty", op,
                       sl_shape_str(x));
    return linear(op, x, weight, sl__opt(bias), SL_ACT_NONE, head_dim, NULL);
}
