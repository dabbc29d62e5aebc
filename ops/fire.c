/* ops/fire.c — FIRE, the functional interpolation for relative positions of Li, Chen, Zhang,
 * Chen, Bhojanapalli et al., "Functional Interpolation for Relative Positions Improves Long
 * Context Transformers" (ICLR 2024):
 *
 *     bias[h,i,j] = f_h( psi(p_i - j) / psi(max(L, p_i)) ),   psi(x) = log(c x + 1),
 *
 * f a small MLP from one input to H outputs (Linear(1, W), ReLU, Linear(W, H); the paper uses
 * W = 32), c > 0 and the threshold L learned. Dividing by psi(max(L, p_i)) maps the distances a
 * query can see into [0, 1] whatever its position ("progressive interpolation"), so a query far
 * past the training length reads the same range of f's inputs as the queries seen in training;
 * the threshold keeps the early queries, whose distances are short, from being stretched over
 * the whole range. The normaliser depends on the query's position, so unlike ALiBi, T5 or
 * KERPLE the bias is not a function of the distance alone.
 *
 * Parameters, as the paper's reference implementation has them: the MLP's two linears
 * fc1 (weight (W, 1), bias (W)) and fc2 (weight (H, W), bias (H)); c, used as |c| (psi(x) =
 * log(|c| x + 1)); and a multiplier m of a fixed initial threshold L0, L = |m| L0; the
 * normaliser is psi(max(p_i, L)) + 1e-6 (SL_FIRE_EPS). Distances are |p_i - j| (keys after
 * the query, which a causal caller masks, get the bias of their distance). The modules choose
 * L0 (nn.h: the reference's 512 for a bare attention, context / 4 for the GPT, the ratio of
 * 512 to the paper's training length of 2048) and keep one FIRE per layer (the paper's FIRE,
 * not its layer-shared FIRE-S).
 *
 * Forward: f is a ReLU network of one input, so it is piecewise linear in u with a breakpoint
 * at u = -b1_k / w1_k for each hidden unit: the op sorts the breakpoints once per call and
 * stores, for each of the at most W + 1 pieces, each output's slope and intercept (in double),
 * so that each bias element costs a binary search and one multiply-add per head instead of the
 * MLP's W (H + 1). The backward evaluates the units directly (the gradient needs which units
 * are active), rows in fixed chunks whose sums are added in order: results do not depend on
 * the thread count. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    int64_t H, W, tq, tk;
    double ac, sc;                   /* |c| and sign(c) (0 at 0) */
    double thr, sm_l0;               /* the threshold |m| L0 and sign(m) L0 */
    const double *w1, *b1, *w2, *b2; /* (W), (W), (H, W), (H) */
    const double *psi;               /* (tk): log(1 + |c| d) */
    int64_t np;                      /* breakpoints (forward) */
    const double *bp;                /* (np), ascending */
    const double *A, *C;             /* (np + 1, H): f_h(u) = A u + C on each piece */
} fire_ctx;

#define SL_KERNELS "fire_kernels.h"
#include "instantiate.h"

enum { CHUNK_ROWS = 8 }; /* query rows per backward task: a fixed partition */

typedef struct {
    sl_dtype dtype;
    const fire_ctx *c;
    void *out;
    const void *g;
    double *acc; /* backward: one accumulator block per chunk */
    int64_t acc_len;
} fire_job;

static void forward_rows(void *ctx, int64_t i0, int64_t i1)
{
    const fire_job *j = ctx;
    if (j->dtype == SL_F32) fire_forward_rows_f32(j->c, j->out, i0, i1);
    else fire_forward_rows_f64(j->c, j->out, i0, i1);
}

static void backward_chunks(void *ctx, int64_t k0, int64_t k1)
{
    const fire_job *j = ctx;
    const fire_ctx *c = j->c;
    for (int64_t k = k0; k < k1; k++) {
        double *acc = j->acc + k * j->acc_len, *gh = acc + j->acc_len - c->H;
        int64_t i0 = k * CHUNK_ROWS, i1 = i0 + CHUNK_ROWS < c->tq ? i0 + CHUNK_ROWS : c->tq;
        if (j->dtype == SL_F32) fire_backward_rows_f32(c, j->g, acc, gh, i0, i1);
        else fire_backward_rows_f64(c, j->g, acc, gh, i0, i1);
    }
}

typedef struct {
    int64_t tq, tk;
    double l_init;
} fire_saved;

/* The inputs as doubles in the current arena, and |c|, the threshold and psi: what both
 * directions need. */
static bool fire_setup(const char *op, sl_tensor *const *in, double l_init, int64_t tq, int64_t tk,
                       fire_ctx *c)
{
    int64_t W = in[0]->shape[0], H = in[2]->shape[0];
    double *v =
        sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)(2 * W + H * W + H + tk), 64);
    if (!v) return false;
    double *w1 = v, *b1 = w1 + W, *w2 = b1 + W, *b2 = w2 + H * W, *psi = b2 + H;
    sl_tensor *cw2 = sl__contig(op, in[2]);
    if (!cw2) return false;
    for (int64_t k = 0; k < W; k++) w1[k] = sl_get(in[0], k), b1[k] = sl_get(in[1], k);
    for (int64_t e = 0; e < H * W; e++) w2[e] = sl_get(cw2, e);
    for (int64_t h = 0; h < H; h++) b2[h] = sl_get(in[3], h);
    double cv = sl_get(in[4], 0), mv = sl_get(in[5], 0);
    double sc = cv > 0 ? 1 : cv < 0 ? -1 : 0, sm = mv > 0 ? 1 : mv < 0 ? -1 : 0; // signs
    *c = (fire_ctx){.H = H, .W = W, .tq = tq, .tk = tk};
    c->ac = fabs(cv), c->sc = sc, c->thr = fabs(mv) * l_init, c->sm_l0 = sm * l_init;
    c->w1 = w1, c->b1 = b1, c->w2 = w2, c->b2 = b2, c->psi = psi;
    for (int64_t d = 0; d < tk; d++) psi[d] = log1p(c->ac * (double)d);
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The pieces of f: breakpoints t_k = -b1_k / w1_k (w1_k != 0) in ascending order, and on piece
 * q (between breakpoints q - 1 and q) each output's slope and intercept. A unit with w1 > 0 is
 * active above its breakpoint, on the pieces after its rank; with w1 < 0 below it, on the
 * pieces up to its rank; with w1 = 0 everywhere if b1 > 0 (a constant), else nowhere. */
static bool fire_pieces(fire_ctx *c)
{
    int64_t W = c->W, H = c->H, np = 0;
    double *bp =
        sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)(W + 2 * (W + 1) * H), 64);
    if (!bp) return false;
    for (int64_t k = 0; k < W; k++)
        if (c->w1[k] != 0) bp[np++] = -c->b1[k] / c->w1[k];
    qsort(bp, (size_t)np, sizeof *bp, cmp_double);
    double *A = bp + W, *C = A + (W + 1) * H;
    for (int64_t q = 0; q <= np; q++)
        for (int64_t h = 0; h < H; h++) A[q * H + h] = 0, C[q * H + h] = c->b2[h];
    for (int64_t k = 0; k < W; k++) {
        double w = c->w1[k], b = c->b1[k];
        int64_t q0 = 0, q1 = np; /* active on pieces [q0, q1] */
        if (w == 0 && !(b > 0)) continue;
        if (w != 0) {
            double t = -b / w;
            int64_t rank = 0; /* the first breakpoint equal to t */
            while (bp[rank] < t) rank++;
            if (w > 0) q0 = rank + 1;
            else q1 = rank;
        }
        for (int64_t q = q0; q <= q1; q++)
            for (int64_t h = 0; h < H; h++) {
                A[q * H + h] += c->w2[h * W + k] * w;
                C[q * H + h] += c->w2[h * W + k] * b;
            }
    }
    c->np = np, c->bp = bp, c->A = A, c->C = C;
    return true;
}

/* See fire_backward_rows (fire_kernels.h) for the chain rule; here the chunks' sums are added
 * in chunk order and then into the inputs' gradients. */
static bool fire_backward(sl_node *nd)
{
    static const char *op = "sl_fire_bias";
    const fire_saved *s = nd->saved;
    fire_ctx c;
    if (!fire_setup(op, nd->in, s->l_init, s->tq, s->tk, &c)) return false;
    int64_t W = c.W, H = c.H, len = 2 * W + H * W + H + 2 + H; /* + H: per-chunk scratch */
    int64_t chunks = (s->tq + CHUNK_ROWS - 1) / CHUNK_ROWS;
    size_t bytes = sizeof(double) * (size_t)(chunks * len);
    double *acc = sl_arena_alloc(sl_arena_current(), bytes, 64);
    if (!acc) return false;
    memset(acc, 0, bytes);
    fire_job j = {nd->out->dtype, &c, NULL, nd->grad->data, acc, len};
    sl_parallel_for(chunks, 1, backward_chunks, &j);
    for (int64_t k = 1; k < chunks; k++)
        for (int64_t e = 0; e < len - H; e++) acc[e] += acc[k * len + e];
    const int64_t offsets[6] = {
        0, W, 2 * W, 2 * W + H * W, 2 * W + H * W + H, 2 * W + H * W + H + 1};
    for (int i = 0; i < 6; i++) {
        if (!nd->in[i]->requires_grad) continue;
        sl_tensor *gi = sl_input_grad(nd, i);
        if (!gi) return false;
        for (int64_t e = 0, n = sl_numel(gi); e < n; e++) {
            if (gi->dtype == SL_F32) ((float *)gi->data)[e] += (float)acc[offsets[i] + e];
            else ((double *)gi->data)[e] += acc[offsets[i] + e];
        }
    }
    return true;
}

/* Shapes: fc1_weight (W, 1), fc1_bias (W), fc2_weight (H, W), fc2_bias (H), c (1), l_mult (1). */
static bool check_weights(const char *op, sl_tensor *const *in)
{
    static const char *names[6] = {"fc1_weight", "fc1_bias", "fc2_weight",
                                   "fc2_bias",   "c",        "l_mult"};
    for (int i = 0; i < 6; i++) {
        if (!in[i]) return sl__null_arg(op, names[i]);
        if (!sl__check_live(op, in[i], names[i]) || !sl__check_float(op, in[i]) ||
            !sl__check_same_dtype(op, in[0], in[i]))
            return false;
    }
    int64_t W = in[0]->shape[0], H = in[2]->ndim == 2 ? in[2]->shape[0] : 0;
    bool ok = in[0]->ndim == 2 && in[0]->shape[1] == 1 && W >= 1 && in[1]->ndim == 1 &&
              in[1]->shape[0] == W && in[2]->ndim == 2 && H >= 1 && in[2]->shape[1] == W &&
              in[3]->ndim == 1 && in[3]->shape[0] == H && in[4]->ndim == 1 &&
              in[4]->shape[0] == 1 && in[5]->ndim == 1 && in[5]->shape[0] == 1;
    if (!ok) { /* the shapes one at a time: sl_shape_str's buffers rotate */
        char got[6][64];
        for (int i = 0; i < 6; i++) snprintf(got[i], sizeof got[i], "%s", sl_shape_str(in[i]));
        return sl_set_error(SL_ERR_SHAPE,
                            "%s: weights fc1 %s + %s, fc2 %s + %s, c %s, l_mult %s do not "
                            "fit (W, 1) + (W), (H, W) + (H), (1), (1)",
                            op, got[0], got[1], got[2], got[3], got[4], got[5]);
    }
    double cv = sl_get(in[4], 0), mv = sl_get(in[5], 0);
    if (!isfinite(cv) || !isfinite(mv))
        return sl_set_error(SL_ERR_ARG, "%s: c %g and l_mult %g must be finite", op, cv, mv);
    return true;
}

sl_tensor *sl_fire_bias(const sl_fire_weights *w, double l_init, int64_t tq, int64_t tk)
{
    static const char *op = "sl_fire_bias";
    if (!w) return SL_FAIL(SL_ERR_ARG, "%s: weights are NULL", op);
    sl_tensor *in[6] = {w->fc1_weight, w->fc1_bias, w->fc2_weight, w->fc2_bias, w->c, w->l_mult};
    if (!check_weights(op, in)) return NULL;
    if (!(isfinite(l_init) && l_init >= 0))
        return SL_FAIL(SL_ERR_ARG, "%s: l_init %g must be finite and >= 0", op, l_init);
    if (tq < 1 || tk < tq)
        return SL_FAIL(SL_ERR_ARG,
                       "%s: tq %lld and tk %lld must satisfy 1 <= tq <= tk (query "
                       "positions tk - tq + i are >= 0)",
                       op, (long long)tq, (long long)tk);
    fire_ctx c;
    if (!fire_setup(op, in, l_init, tq, tk, &c) || !fire_pieces(&c)) return NULL;
    sl_tensor *out = sl__new(op, in[0]->dtype, 3, (int64_t[]){c.H, tq, tk});
    if (!out) return NULL;
    fire_job j = {out->dtype, &c, out->data, NULL, NULL, 0};
    int64_t grain = (1 << 14) / (tk * c.H) > 1 ? (1 << 14) / (tk * c.H) : 1;
    sl_parallel_for(tq, grain, forward_rows, &j);
    sl_node *nd;
    if (!sl_record(&nd, op, out, 6, in, fire_backward, sizeof(fire_saved))) return NULL;
    if (nd) *(fire_saved *)nd->saved = (fire_saved){tq, tk, l_init};
    for (int i = 0; i < 6; i++)
        if (!sl_save_for_backward(nd, in[i])) return NULL;
    return out;
}
