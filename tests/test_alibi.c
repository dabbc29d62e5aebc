/* ALiBi: the slopes, and the fused sl_alibi_attention against a naive loop written here and
 * against the same math composed from matmul, add, masked_fill and softmax through autograd:
 * outputs, probabilities, every gradient (slopes included), odd sizes, GQA, causal and
 * bidirectional, KV-cache alignment, thread counts, memory, errors, f64 gradchecks. */
#include "testutil.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- slopes */

/* The reference implementation's rule, written as it is there (ofirpress/attention_with_linear_
 * biases, get_slopes): a power of two n gets start * ratio^i with start = ratio = 2^(-2^-(log2 n
 * - 3)); otherwise the slopes of the closest power of two below, then every other slope of
 * twice that many heads. */
static void paper_slopes(int n, double *out)
{
    double l2 = log2((double)n);
    if (l2 == floor(l2)) {
        double start = pow(2.0, -pow(2.0, -(l2 - 3)));
        for (int i = 0; i < n; i++) out[i] = start * pow(start, i);
        return;
    }
    int closest = 1 << (int)floor(l2);
    paper_slopes(closest, out);
    double twice[256];
    paper_slopes(2 * closest, twice);
    for (int i = 0; i < n - closest; i++) out[closest + i] = twice[2 * i];
}

START_TEST(slopes_follow_the_paper)
{
    int counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 24, 96};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        int n = counts[c];
        double want[128];
        paper_slopes(n, want);
        sl_tensor *t = sl_alibi_slopes(n);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(t->dtype, SL_F64);
        ck_assert_int_eq(t->ndim, 1);
        ck_assert_int_eq(t->shape[0], n);
        ck_assert(!t->requires_grad);
        for (int h = 0; h < n; h++) {
            ck_assert_close(sl_get(t, h), want[h], 1e-14, 0);
            ck_assert_close(sl_alibi_slope(h, n), want[h], 1e-14, 0);
        }
    }
    /* The lists written out: H = 8 starts at 1/2 (not 1), H = 12 appends the odd slopes of 16
     * heads after the 8 (the paper's code, and include/shortlong/ops.h). */
    for (int h = 0; h < 8; h++) ck_assert_double_eq(sl_alibi_slope(h, 8), 1.0 / (2 << h));
    double h12[] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                    0.7071, 0.3536, 0.1768, 0.0884};
    for (int h = 0; h < 12; h++) ck_assert_close(sl_alibi_slope(h, 12), h12[h], 0, 5e-5);
    ck_assert_close(sl_alibi_slope(8, 12), sqrt(0.5), 1e-15, 0);
    ck_assert_double_eq(sl_alibi_slope(0, 1), 0.00390625); /* one head: 2^-8 */
}
END_TEST

START_TEST(slopes_errors)
{
    ck_assert_ptr_null(sl_alibi_slopes(0));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_alibi_slopes: n_heads is 0; it must be at least 1");
    sl_error_clear();
    ck_assert(isnan(sl_alibi_slope(8, 8)));
    ck_assert_str_eq(sl_error_message(), "sl_alibi_slope: head 8 of 8 heads");
    sl_error_clear();
    ck_assert(isnan(sl_alibi_slope(0, -1)));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
}
END_TEST

/* ---------------------------------------------------------------- references */

typedef struct {
    int64_t B, H, Hk, Tq, Tk, D, Dv;
    bool bidirectional;
    double scale; /* 0: default */
} cfg;

static double scale_of(const cfg *c) { return c->scale != 0 ? c->scale : 1 / sqrt((double)c->D); }

static double slope_of(const sl_tensor *slopes, int64_t h, int64_t H)
{
    return slopes ? sl_get(slopes, h) : pow(2.0, -8.0 * (double)(h + 1) / (double)H);
}

/* A naive loop in double: probabilities P (B, H, Tq, Tk) and output (B, H, Tq, Dv). For
 * default slopes it assumes H is a power of two. */
static void naive(const cfg *c, const sl_tensor *q, const sl_tensor *k, const sl_tensor *v,
                  const sl_tensor *slopes, double *P, double *out)
{
    int64_t G = c->H / c->Hk, off = c->Tk - c->Tq;
    double *x = malloc(sizeof(double) * (size_t)c->Tk);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->H; h++) {
            int64_t g = h / G;
            double m = slope_of(slopes, h, c->H);
            for (int64_t i = 0; i < c->Tq; i++) {
                int64_t p = off + i;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < c->Tk; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < c->D; d++)
                        s += sl_get(q, ((b * c->H + h) * c->Tq + i) * c->D + d) *
                             sl_get(k, ((b * c->Hk + g) * c->Tk + j) * c->D + d);
                    double dist = c->bidirectional ? fabs((double)(p - j)) : (double)(p - j);
                    x[j] = (!c->bidirectional && j > p) ? -INFINITY : scale_of(c) * s - m * dist;
                    if (x[j] > mx) mx = x[j];
                }
                for (int64_t j = 0; j < c->Tk; j++) sum += exp(x[j] - mx);
                double *prow = P + ((b * c->H + h) * c->Tq + i) * c->Tk;
                for (int64_t j = 0; j < c->Tk; j++) prow[j] = exp(x[j] - mx) / sum;
                for (int64_t e = 0; e < c->Dv; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < c->Tk; j++)
                        o += prow[j] * sl_get(v, ((b * c->Hk + g) * c->Tk + j) * c->Dv + e);
                    out[((b * c->H + h) * c->Tq + i) * c->Dv + e] = o;
                }
            }
        }
    free(x);
}

/* k (B, Hk, T, D) -> (B, H, T, D), head h reading kv head h / (H / Hk): what GQA means. */
static sl_tensor *repeat_kv(sl_tensor *k, int64_t H)
{
    int64_t B = k->shape[0], Hk = k->shape[1], T = k->shape[2], D = k->shape[3];
    if (Hk == H) return k;
    sl_tensor *r = sl_reshape(k, sl_shape(B, Hk, 1, T, D));
    r = sl_expand(r, sl_shape(B, Hk, H / Hk, T, D));
    return sl_reshape(r, sl_shape(B, H, T, D));
}

/* The same attention composed from primitive ops, through autograd:
 *     x = scale q k^T + slopes[h] * (-dist),  masked_fill(x, j > p_i, -inf),  softmax(x) v
 * dist_ij = p_i - j (|p_i - j| bidirectional), built here from positions. slopes: a [H] tensor
 * of any float dtype (cast to q's, differentiably) or NULL for the default. */
static sl_tensor *composed(const cfg *c, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                           sl_tensor *slopes)
{
    sl_dtype dt = q->dtype;
    int64_t Tq = c->Tq, Tk = c->Tk, off = Tk - Tq;
    sl_tensor *negdist = sl_empty(dt, sl_shape(Tq, Tk));
    sl_tensor *mask = sl_zeros(SL_I32, sl_shape(Tq, Tk));
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) {
            double d = (double)(off + i - j);
            sl_set(negdist, i * Tk + j, -(c->bidirectional ? fabs(d) : d));
            sl_set(mask, i * Tk + j, !c->bidirectional && j > off + i);
        }
    sl_tensor *m = slopes ? slopes : sl_alibi_slopes((int)c->H);
    if (m->dtype != dt) m = sl_to_dtype(m, dt);
    sl_tensor *bias = sl_mul(sl_reshape(m, sl_shape(c->H, 1, 1)), negdist); /* (H, Tq, Tk) */
    sl_tensor *s = sl_matmul(q, sl_transpose(repeat_kv(k, c->H), 2, 3));
    sl_tensor *x = sl_add(sl_mul_scalar(s, scale_of(c)), bias);
    if (!c->bidirectional) x = sl_masked_fill(x, mask, -INFINITY);
    return sl_matmul(sl_softmax(x, -1), repeat_kv(v, c->H));
}

static sl_tensor *fused(const cfg *c, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                        sl_tensor *slopes)
{
    sl_alibi_opts o = {.bidirectional = c->bidirectional, .scale = c->scale};
    return sl_alibi_attention(q, k, v, slopes ? slopes : SL_NONE, &o);
}

/* ---------------------------------------------------------------- fused vs composed */

static bool bitwise_equal(const sl_tensor *a, const sl_tensor *b)
{
    return !memcmp(a->data, b->data, sl_dtype_size(a->dtype) * (size_t)sl_numel(a));
}

typedef struct {
    sl_tensor *q, *k, *v, *slopes; /* leaves; slopes may be NULL */
} leaves;

static leaves make_leaves(sl_rng *r, const cfg *c, sl_dtype dt, bool learn_slopes)
{
    leaves l;
    l.q = tu_randn(r, dt, sl_shape(c->B, c->H, c->Tq, c->D));
    l.k = tu_randn(r, dt, sl_shape(c->B, c->Hk, c->Tk, c->D));
    l.v = tu_randn(r, dt, sl_shape(c->B, c->Hk, c->Tk, c->Dv));
    l.slopes = NULL;
    if (learn_slopes) { /* the paper's, perturbed, so that a mix-up of heads shows */
        l.slopes = sl_alibi_slopes((int)c->H);
        for (int64_t h = 0; h < c->H; h++)
            sl_set(l.slopes, h, sl_get(l.slopes, h) * (1 + 0.3 * sl_rng_uniform(r)));
        sl_requires_grad(l.slopes, true);
    }
    return l;
}

static leaves copy_leaves(const leaves *l, sl_dtype dt)
{
    leaves c = {tu_cast_leaf(l->q, dt), tu_cast_leaf(l->k, dt), tu_cast_leaf(l->v, dt), NULL};
    if (l->slopes) c.slopes = tu_cast_leaf(l->slopes, l->slopes->dtype);
    return c;
}

static void check_close(const char *what, const cfg *c, const sl_tensor *got,
                        const sl_tensor *want, double tol)
{
    ck_assert_ptr_nonnull(got);
    ck_assert_ptr_nonnull(want);
    double rel = tu_max_rel_diff(got, want);
    ck_assert_msg(rel <= tol,
                  "%s differs by %.3g relative (tol %.1g): B%lld H%lld Hk%lld Tq%lld Tk%lld D%lld "
                  "Dv%lld %s",
                  what, rel, tol, (long long)c->B, (long long)c->H, (long long)c->Hk,
                  (long long)c->Tq, (long long)c->Tk, (long long)c->D, (long long)c->Dv,
                  c->bidirectional ? "bidirectional" : "causal");
}

/* Fused in dtype dt against composed in f64 on the same values: output and the gradients of
 * q, k, v (and slopes) for one random output gradient. */
static void compare(const cfg *c, sl_dtype dt, bool learn_slopes, double tol, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    leaves ref = make_leaves(&r, c, SL_F64, learn_slopes);
    leaves fz = copy_leaves(&ref, dt);
    sl_tensor *want = composed(c, ref.q, ref.k, ref.v, ref.slopes);
    sl_tensor *got = fused(c, fz.q, fz.k, fz.v, fz.slopes);
    ck_assert_msg(want && got, "%s", sl_error_message());
    ck_assert_int_eq(got->dtype, dt);
    ck_assert_int_eq(got->ndim, 4);
    ck_assert_int_eq(got->shape[3], c->Dv);
    check_close("output", c, got, want, tol);

    sl_tensor *gout = sl_rand_normal(&r, SL_F64, 4, want->shape, 0, 1);
    ck_assert(sl_backward_ex(want, gout, 0));
    sl_tensor *gout_dt = sl_empty(dt, 4, want->shape);
    sl_copy_into(gout_dt, gout);
    ck_assert_msg(sl_backward_ex(got, gout_dt, 0), "%s", sl_error_message());
    check_close("dq", c, fz.q->grad, ref.q->grad, tol);
    check_close("dk", c, fz.k->grad, ref.k->grad, tol);
    check_close("dv", c, fz.v->grad, ref.v->grad, tol);
    if (learn_slopes) check_close("dslopes", c, fz.slopes->grad, ref.slopes->grad, tol);
}

static const cfg CASES[] = {
    /* B  H  Hk  Tq    Tk   D   Dv */
    {2, 4, 4, 70, 70, 16, 16, false, 0},   /* T not a multiple of the 64-row tile */
    {2, 4, 4, 70, 70, 16, 16, true, 0},
    {1, 2, 2, 1, 1, 8, 8, false, 0},       /* T = 1 */
    {1, 2, 2, 1, 1, 8, 8, true, 0},
    {1, 2, 2, 9, 9, 1, 1, false, 0},       /* D = 1 */
    {1, 2, 2, 9, 9, 1, 1, true, 0},
    {1, 2, 1, 1, 1000, 8, 4, false, 0},    /* one decoding step against 1000 keys, MQA */
    {1, 4, 2, 37, 150, 8, 12, false, 0},   /* Tq < Tk, GQA Hk = H/2, Dv != D */
    {1, 4, 2, 37, 150, 8, 12, true, 0},
    {2, 4, 1, 130, 130, 24, 24, false, 0}, /* three query tiles, Hk = 1 */
    {1, 2, 2, 80, 50, 8, 8, true, 0.3},    /* bidirectional allows Tq > Tk; a custom scale */
    {1, 2, 2, 150, 200, 64, 64, false, 0}, /* full register blocks (f32: 4 x 64 columns) */
    {1, 2, 2, 100, 100, 40, 72, false, 0}, /* partial blocks and scalar tails */
    {1, 2, 2, 75, 75, 32, 32, true, 0},    /* AVX-512's 8-row blocks of two vectors, row tails */
};

START_TEST(fused_matches_composed_f64)
{
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        compare(&CASES[i], SL_F64, true, 1e-10, 100 + i);
        compare(&CASES[i], SL_F64, false, 1e-10, 200 + i);
    }
}
END_TEST

START_TEST(fused_matches_composed_f32)
{
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
        compare(&CASES[i], SL_F32, true, 1e-5, 300 + i);
}
END_TEST

/* The f32 tiles run with subnormals flushed to zero (ops/alibi_attention.c): with steep slopes
 * and an output gradient of 1e-30, most products of far keys' probabilities with it fall below
 * 2^-126. The gradients still agree with f64, hold no subnormal value, and the calling thread's
 * floating-point mode is what it was. */
START_TEST(subnormals_flush_and_the_fp_mode_is_kept)
{
    const cfg c = {1, 2, 2, 200, 200, 16, 16, false, 0};
    sl_rng r = sl_rng_seed(61);
    leaves ref = make_leaves(&r, &c, SL_F64, false);
    ref.slopes = sl_alibi_slopes(2);
    sl_set(ref.slopes, 0, 1.0);
    sl_set(ref.slopes, 1, 0.5);
    leaves fz = copy_leaves(&ref, SL_F32);
#if defined(__x86_64__) || defined(__i386__)
    const unsigned csr = __builtin_ia32_stmxcsr();
#endif
    sl_tensor *want = composed(&c, ref.q, ref.k, ref.v, ref.slopes);
    sl_tensor *got = fused(&c, fz.q, fz.k, fz.v, fz.slopes);
    ck_assert_msg(want && got, "%s", sl_error_message());
    sl_tensor *gout = sl_mul_scalar(sl_rand_normal(&r, SL_F64, 4, want->shape, 0, 1), 1e-30);
    sl_tensor *gout32 = sl_to_dtype(gout, SL_F32);
    ck_assert(sl_backward_ex(want, gout, 0));
    ck_assert_msg(sl_backward_ex(got, gout32, 0), "%s", sl_error_message());
#if defined(__x86_64__) || defined(__i386__)
    ck_assert_uint_eq(__builtin_ia32_stmxcsr(), csr);
#endif
    check_close("output", &c, got, want, 1e-5);
    const sl_tensor *g32[] = {fz.q->grad, fz.k->grad, fz.v->grad};
    const sl_tensor *g64[] = {ref.q->grad, ref.k->grad, ref.v->grad};
    const char *name[] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        check_close(name[i], &c, g32[i], g64[i], 1e-5);
        double least = INFINITY;
        for (int64_t e = 0; e < sl_numel(g32[i]); e++) {
            double x = fabs(sl_get(g32[i], e));
            if (x > 0 && x < least) least = x;
        }
        ck_assert_msg(least >= FLT_MIN, "%s holds a subnormal %g", name[i], least);
    }
}
END_TEST

/* Zero slopes: plain softmax(q k^T / sqrt(D)) v (the kernel's no-bias path). */
START_TEST(zero_slopes_are_plain_attention)
{
    cfg c = {1, 2, 2, 70, 90, 16, 16, false, 0};
    sl_rng r = sl_rng_seed(5);
    leaves l = make_leaves(&r, &c, SL_F64, false);
    sl_tensor *zero = sl_zeros(SL_F32, sl_shape(2)); /* f32 slopes with f64 q: allowed */
    sl_tensor *got = fused(&c, l.q, l.k, l.v, zero);
    double *P = malloc(sizeof(double) * 2 * 70 * 90), *want = malloc(sizeof(double) * 2 * 70 * 16);
    naive(&c, l.q, l.k, l.v, sl_zeros(SL_F64, sl_shape(2)), P, want);
    for (int64_t e = 0; e < 2 * 70 * 16; e++) ck_assert_close(sl_get(got, e), want[e], 1e-12, 1e-13);
    free(P);
    free(want);
}
END_TEST

/* ---------------------------------------------------------------- probabilities */

/* With v = identity (Dv = Tk) the output row i is P_i itself: every probability is compared
 * with the naive loop, so a bias that is constant per row (invisible after softmax only if it
 * is constant) or misaligned cannot hide. */
START_TEST(probabilities_are_right)
{
    cfg cs[] = {{1, 4, 2, 20, 90, 8, 90, false, 0}, {1, 4, 2, 20, 90, 8, 90, true, 0},
                {2, 2, 2, 70, 70, 4, 70, false, 0}};
    for (int t = 0; t < 3; t++) {
        cfg c = cs[t];
        sl_rng r = sl_rng_seed(7 + t);
        sl_tensor *q = sl_rand_normal(&r, SL_F64, sl_shape(c.B, c.H, c.Tq, c.D), 0, 1);
        sl_tensor *k = sl_rand_normal(&r, SL_F64, sl_shape(c.B, c.Hk, c.Tk, c.D), 0, 1);
        sl_tensor *v = sl_zeros(SL_F64, sl_shape(c.B, c.Hk, c.Tk, c.Tk));
        for (int64_t bg = 0; bg < c.B * c.Hk; bg++)
            for (int64_t j = 0; j < c.Tk; j++) sl_set(v, (bg * c.Tk + j) * c.Tk + j, 1.0);
        int64_t nP = c.B * c.H * c.Tq * c.Tk;
        double *P = malloc(sizeof(double) * (size_t)nP), *o = malloc(sizeof(double) * (size_t)nP);
        naive(&c, q, k, v, NULL, P, o);
        /* the composed ops give the same P (their output, v being the identity) */
        sl_tensor *Pc = composed(&c, q, k, v, NULL);
        for (int64_t e = 0; e < nP; e++) ck_assert_close(sl_get(Pc, e), P[e], 1e-13, 1e-16);
        for (int dt = 0; dt < 2; dt++) {
            sl_dtype d = dt ? SL_F32 : SL_F64;
            sl_tensor *got = fused(&c, tu_cast_leaf(q, d), tu_cast_leaf(k, d), tu_cast_leaf(v, d),
                                   NULL);
            ck_assert_ptr_nonnull(got);
            for (int64_t e = 0; e < nP; e++)
                ck_assert_close(sl_get(got, e), P[e], dt ? 2e-5 : 1e-13, dt ? 1e-7 : 1e-16);
        }
        free(P);
        free(o);
    }
}
END_TEST

/* q = 0: the logits are the bias alone, so P is known in closed form. Row i of a causal
 * 1-head attention with slope m: P_ij proportional to exp(-m (i - j)), j <= i. */
START_TEST(bias_alone_closed_form)
{
    int64_t T = 5;
    double m = 0.5;
    sl_tensor *q = sl_zeros(SL_F64, sl_shape(1, 1, T, 3));
    sl_tensor *k = sl_ones(SL_F64, sl_shape(1, 1, T, 3));
    sl_tensor *v = sl_zeros(SL_F64, sl_shape(1, 1, T, T));
    for (int64_t j = 0; j < T; j++) sl_set(v, j * T + j, 1.0);
    sl_tensor *slopes = sl_full(SL_F64, sl_shape(1), m);
    for (int bidir = 0; bidir < 2; bidir++) {
        sl_alibi_opts o = {.bidirectional = bidir};
        sl_tensor *P = sl_alibi_attention(q, k, v, slopes, &o);
        for (int64_t i = 0; i < T; i++) {
            double z = 0;
            for (int64_t j = 0; j < T; j++) z += (bidir || j <= i) ? exp(-m * fabs((double)(i - j))) : 0;
            for (int64_t j = 0; j < T; j++) {
                double want = (bidir || j <= i) ? exp(-m * fabs((double)(i - j))) / z : 0;
                ck_assert_close(sl_get(P, i * T + j), want, 1e-15, 1e-300);
            }
        }
    }
    /* The last row against 5 keys, causal: 1, e^-.5, e^-1, ... normalised. */
    sl_tensor *P = sl_alibi_attention(sl_narrow(q, 2, 4, 1), k, v, slopes, NULL);
    ck_assert_close(sl_get(P, 4), 1 / (1 + exp(-0.5) + exp(-1) + exp(-1.5) + exp(-2)), 1e-15, 0);
}
END_TEST

/* ---------------------------------------------------------------- gradcheck */

static sl_tensor *call_fused(sl_tensor *const *in, int n, void *user)
{
    return fused(user, in[0], in[1], in[2], n > 3 ? in[3] : NULL);
}

/* q arrives as (B, Tq, H, D) and is permuted to (B, H, Tq, D): strided, last dim contiguous. */
static sl_tensor *call_fused_permuted(sl_tensor *const *in, int n, void *user)
{
    return fused(user, sl_permute(in[0], (int[]){0, 2, 1, 3}), in[1], in[2], in[3]);
}

START_TEST(gradcheck_q_k_v_slopes)
{
    cfg cs[] = {{1, 2, 1, 5, 7, 3, 2, false, 0}, {1, 2, 2, 6, 4, 3, 3, true, 0},
                {2, 2, 2, 3, 3, 2, 2, false, 0.7}};
    sl_rng r = sl_rng_seed(11);
    for (int t = 0; t < 3; t++) {
        leaves l = make_leaves(&r, &cs[t], SL_F64, true);
        sl_tensor *in[] = {l.q, l.k, l.v, l.slopes};
        tu_gradcheck(call_fused, 4, in, &cs[t]);
        sl_tensor *vin[] = {tu_noncontig(l.q), tu_noncontig(l.k), tu_noncontig(l.v), l.slopes};
        tu_gradcheck(call_fused, 4, vin, &cs[t]);
        tu_f32_matches_f64(call_fused, 4, in, &cs[t]);
    }
    cfg c = {1, 3, 3, 4, 6, 2, 2, false, 0};
    sl_tensor *in[] = {tu_randn(&r, SL_F64, sl_shape(1, 4, 3, 2)),
                       tu_randn(&r, SL_F64, sl_shape(1, 3, 6, 2)),
                       tu_randn(&r, SL_F64, sl_shape(1, 3, 6, 2)),
                       sl_requires_grad(sl_alibi_slopes(3), true)};
    tu_gradcheck(call_fused_permuted, 4, in, &c);
}
END_TEST

/* Backward accumulates (+=) into every gradient: a second forward + backward without zeroing
 * doubles them exactly. */
START_TEST(gradients_accumulate)
{
    cfg c = {2, 4, 2, 70, 90, 8, 8, false, 0};
    sl_rng r = sl_rng_seed(23);
    leaves l = make_leaves(&r, &c, SL_F64, true);
    sl_tensor *gout = sl_rand_normal(&r, SL_F64, sl_shape(c.B, c.H, c.Tq, c.Dv), 0, 1);
    sl_tensor *leaf[] = {l.q, l.k, l.v, l.slopes}, *once[4];
    ck_assert(sl_backward_ex(fused(&c, l.q, l.k, l.v, l.slopes), gout, 0));
    for (int i = 0; i < 4; i++) {
        once[i] = sl_empty(SL_F64, leaf[i]->ndim, leaf[i]->shape);
        sl_copy_into(once[i], leaf[i]->grad);
    }
    ck_assert(sl_backward_ex(fused(&c, l.q, l.k, l.v, l.slopes), gout, 0));
    for (int i = 0; i < 4; i++)
        for (int64_t e = 0; e < sl_numel(once[i]); e++)
            ck_assert_double_eq(sl_get(leaf[i]->grad, e), 2 * sl_get(once[i], e));
}
END_TEST

/* Slopes may be f32 with f64 q, k, v: the kernel reads them as doubles, so f32 slopes act
 * exactly like f64 slopes holding the same values, and their gradient is the f64 one rounded. */
START_TEST(slopes_dtype_is_free)
{
    cfg c = {1, 4, 2, 70, 70, 8, 8, false, 0};
    sl_rng r = sl_rng_seed(29);
    leaves l = make_leaves(&r, &c, SL_F64, true);
    sl_tensor *m32 = tu_cast_leaf(l.slopes, SL_F32), *m64 = tu_cast_leaf(m32, SL_F64);
    sl_tensor *gout = sl_rand_normal(&r, SL_F64, sl_shape(c.B, c.H, c.Tq, c.Dv), 0, 1);
    sl_tensor *a = fused(&c, l.q, l.k, l.v, m32), *b = fused(&c, l.q, l.k, l.v, m64);
    ck_assert(bitwise_equal(a, b));
    ck_assert(sl_backward_ex(a, gout, 0) && sl_backward_ex(b, gout, 0));
    ck_assert_int_eq(m32->grad->dtype, SL_F32);
    for (int64_t h = 0; h < c.H; h++)
        ck_assert_float_eq(((float *)m32->grad->data)[h], (float)sl_get(m64->grad, h));
}
END_TEST

/* ---------------------------------------------------------------- cache, threads, memory */

/* The last n rows of a full causal call equal a call with only those n queries (p_i aligned
 * bottom-right), which is what decoding with a KV cache relies on. */
START_TEST(cache_consistency)
{
    sl_rng r = sl_rng_seed(13);
    int64_t T = 150;
    for (int dt = 0; dt < 2; dt++) {
        sl_dtype d = dt ? SL_F32 : SL_F64;
        sl_tensor *q = sl_rand_normal(&r, d, sl_shape(2, 4, T, 16), 0, 1);
        sl_tensor *k = sl_rand_normal(&r, d, sl_shape(2, 2, T, 16), 0, 1);
        sl_tensor *v = sl_rand_normal(&r, d, sl_shape(2, 2, T, 8), 0, 1);
        sl_tensor *full = sl_alibi_attention(q, k, v, SL_NONE, NULL);
        int64_t ns[] = {1, 2, 63, 64, 65, 100};
        for (int t = 0; t < 6; t++) {
            int64_t n = ns[t];
            sl_tensor *last = sl_alibi_attention(sl_narrow(q, 2, T - n, n), k, v, SL_NONE, NULL);
            ck_assert_ptr_nonnull(last);
            ck_assert_int_eq(last->shape[2], n);
            double rel = tu_max_rel_diff(last, sl_narrow(full, 2, T - n, n));
            ck_assert_msg(rel <= (dt ? 1e-6 : 1e-14), "n = %lld: %g", (long long)n, rel);
        }
    }
}
END_TEST

typedef struct {
    sl_tensor *out, *dq, *dk, *dv, *dm;
} run_result;

static run_result run_once(const leaves *l, const cfg *c, sl_tensor *gout)
{
    sl_zero_grad(l->q);
    sl_zero_grad(l->k);
    sl_zero_grad(l->v);
    sl_zero_grad(l->slopes);
    sl_tensor *out = fused(c, l->q, l->k, l->v, l->slopes);
    ck_assert(sl_backward_ex(out, gout, 0));
    run_result r = {out, sl_detach(l->q->grad), sl_detach(l->k->grad), sl_detach(l->v->grad),
                    sl_detach(l->slopes->grad)};
    /* keep copies: the grads are zeroed by the next run */
    sl_tensor **t[] = {&r.dq, &r.dk, &r.dv, &r.dm};
    for (int i = 0; i < 4; i++) {
        sl_tensor *cp = sl_empty((*t[i])->dtype, (*t[i])->ndim, (*t[i])->shape);
        sl_copy_into(cp, *t[i]);
        *t[i] = cp;
    }
    return r;
}

START_TEST(thread_counts_agree_and_runs_repeat)
{
    int prev = sl_get_num_threads();
    cfg cs[] = {{2, 4, 2, 200, 200, 32, 32, false, 0}, {1, 4, 4, 130, 100, 16, 16, true, 0}};
    for (int t = 0; t < 2; t++) {
        sl_rng r = sl_rng_seed(17 + t);
        leaves l = make_leaves(&r, &cs[t], SL_F32, true);
        sl_tensor *gout =
            sl_rand_normal(&r, SL_F32, sl_shape(cs[t].B, cs[t].H, cs[t].Tq, cs[t].Dv), 0, 1);
        sl_set_num_threads(1);
        run_result base = run_once(&l, &cs[t], gout);
        int counts[] = {2, 4};
        for (int i = 0; i < 2; i++) {
            sl_set_num_threads(counts[i]);
            run_result a = run_once(&l, &cs[t], gout), b = run_once(&l, &cs[t], gout);
            sl_tensor *ra[] = {a.out, a.dq, a.dk, a.dv, a.dm}, *rb[] = {b.out, b.dq, b.dk, b.dv, b.dm};
            sl_tensor *r1[] = {base.out, base.dq, base.dk, base.dv, base.dm};
            for (int e = 0; e < 5; e++) {
                ck_assert_msg(bitwise_equal(ra[e], rb[e]), "result %d: two runs differ", e);
                ck_assert_double_le(tu_max_rel_diff(ra[e], r1[e]), 1e-6);
                /* stronger, by design: tasks are independent of the schedule */
                ck_assert_msg(bitwise_equal(ra[e], r1[e]), "result %d: %d threads vs 1", e,
                              counts[i]);
            }
        }
    }
    sl_set_num_threads(prev);
}
END_TEST

/* Forward + backward at Tq = Tk = 1024 uses far less than one (Tq, Tk) matrix (4 MiB in f32)
 * beyond its output and gradients, and a warm arena needs no new heap allocation. */
START_TEST(memory_is_linear_in_T)
{
    int64_t T = 1024, H = 2, D = 16;
    sl_rng r = sl_rng_seed(19);
    sl_tensor *q = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *k = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *v = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *gout = sl_rand_normal(&r, SL_F32, sl_shape(1, H, T, D), 0, 1);
    size_t tensor_bytes = sizeof(float) * (size_t)(H * T * D);
    /* a first backward makes the leaves' grads (in their own arena), so that the step arena
     * below holds only the output, its gradient and the op's own memory */
    sl_tensor *warm = sl_alibi_attention(q, k, v, SL_NONE, NULL);
    ck_assert(sl_backward_ex(warm, gout, 0));
    sl_arena *step = sl_arena_new(0);
    sl_arena *prev = sl_arena_set(step);
    for (int it = 0; it < 2; it++) {
        uint64_t allocs = sl_heap_allocs();
        sl_arena_reset(step);
        sl_tensor *out = sl_alibi_attention(q, k, v, SL_NONE, NULL);
        ck_assert(sl_backward_ex(out, gout, 0));
        size_t extra = sl_arena_peak(step) - 2 * tensor_bytes; /* minus out and d(out) */
        ck_assert_msg(extra < (size_t)1 << 20, "extra %zu bytes", extra);
        if (it == 1) ck_assert_uint_eq(sl_heap_allocs(), allocs);
    }
    sl_arena_set(prev);
    sl_arena_free(step);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(errors_name_the_shapes)
{
    sl_tensor *q = sl_zeros(SL_F32, sl_shape(2, 8, 16, 64));
    sl_tensor *k3 = sl_zeros(SL_F32, sl_shape(2, 3, 16, 64));
    sl_tensor *k = sl_zeros(SL_F32, sl_shape(2, 4, 16, 64));
    sl_tensor *v = sl_zeros(SL_F32, sl_shape(2, 4, 16, 32));
#define EXPECT(call, code, msg)                                                                  \
    do {                                                                                         \
        ck_assert_ptr_null(call);                                                                \
        ck_assert_int_eq(sl_error(), code);                                                      \
        ck_assert_str_eq(sl_error_message(), msg);                                               \
        sl_error_clear();                                                                        \
    } while (0)
    EXPECT(sl_alibi_attention(q, k3, k3, SL_NONE, NULL), SL_ERR_SHAPE,
           "sl_alibi_attention: q [2,8,16,64] and k [2,3,16,64]: 8 query heads are not a "
           "multiple of 3 kv heads");
    sl_tensor *q20 = sl_zeros(SL_F32, sl_shape(2, 8, 20, 64));
    EXPECT(sl_alibi_attention(q20, k, v, SL_NONE, NULL), SL_ERR_SHAPE,
           "sl_alibi_attention: q [2,8,20,64] and k [2,4,16,64]: causal attention needs Tq <= Tk "
           "(20 queries, 16 keys)");
    sl_alibi_opts bidir = {.bidirectional = true};
    ck_assert_ptr_nonnull(sl_alibi_attention(q20, k, v, SL_NONE, &bidir)); /* fine there */
    EXPECT(sl_alibi_attention(q, k, v, sl_alibi_slopes(7), NULL), SL_ERR_SHAPE,
           "sl_alibi_attention: slopes [7] for q [2,8,16,64]: need one per head, [8]");
    EXPECT(sl_alibi_attention(q, k, v, sl_zeros(SL_I32, sl_shape(8)), NULL), SL_ERR_DTYPE,
           "sl_alibi_attention: slopes must be f32 or f64, got i32 [8]");
    EXPECT(sl_alibi_attention(q, sl_zeros(SL_F64, sl_shape(2, 4, 16, 64)), v, SL_NONE, NULL),
           SL_ERR_DTYPE, "sl_alibi_attention: dtypes differ: f32 [2,8,16,64] vs f64 [2,4,16,64]");
    EXPECT(sl_alibi_attention(q, k, sl_zeros(SL_F32, sl_shape(2, 4, 15, 32)), SL_NONE, NULL),
           SL_ERR_SHAPE,
           "sl_alibi_attention: k [2,4,16,64] and v [2,4,15,32]: batch sizes, kv heads or key "
           "counts differ");
    EXPECT(sl_alibi_attention(q, sl_zeros(SL_F32, sl_shape(2, 4, 16, 32)), v, SL_NONE, NULL),
           SL_ERR_SHAPE,
           "sl_alibi_attention: q [2,8,16,64] and k [2,4,16,32]: batch sizes or head dims differ");
    EXPECT(sl_alibi_attention(sl_zeros(SL_F32, sl_shape(8, 16, 64)), k, v, SL_NONE, NULL),
           SL_ERR_SHAPE, "sl_alibi_attention: q must be 4-D [B,H,Tq,D], got [8,16,64]");
    EXPECT(sl_alibi_attention(q, sl_zeros(SL_F32, sl_shape(2, 4, 0, 64)), v, SL_NONE, NULL),
           SL_ERR_SHAPE, "sl_alibi_attention: k [2,4,0,64] is empty");
    sl_alibi_opts bad = {.scale = NAN};
    EXPECT(sl_alibi_attention(q, k, v, SL_NONE, &bad), SL_ERR_ARG,
           "sl_alibi_attention: scale nan is not finite");
    EXPECT(sl_alibi_attention(NULL, k, v, SL_NONE, NULL), SL_ERR_ARG,
           "sl_alibi_attention: argument 'q' is NULL");
    /* a NULL from a failed call propagates, first message kept: in q, and in slopes too,
     * which would otherwise mean "the default" */
    ck_assert_ptr_null(sl_alibi_attention(q, k, v, sl_alibi_slopes(0), NULL));
    ck_assert_str_eq(sl_error_message(), "sl_alibi_slopes: n_heads is 0; it must be at least 1");
    sl_error_clear();
    ck_assert_ptr_null(
        sl_alibi_attention(sl_exp(sl_zeros(SL_I32, sl_shape(1))), k, v, SL_NONE, NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
#undef EXPECT
}
END_TEST

/* The optional slopes: SL_NONE is the paper's whatever error is pending; a NULL is a failed
 * call's result (its error kept) or, with no error pending, a mistake reported as one. Before
 * SL_NONE, NULL meant the default and, with an unrelated error pending, made the op return
 * NULL with that old message. */
START_TEST(slopes_none_and_null)
{
    sl_rng r = sl_rng_seed(8);
    sl_tensor *q = sl_rand_normal(&r, SL_F64, sl_shape(1, 4, 5, 8), 0, 1);
    sl_tensor *k = sl_rand_normal(&r, SL_F64, sl_shape(1, 2, 5, 8), 0, 1);
    sl_tensor *v = sl_rand_normal(&r, SL_F64, sl_shape(1, 2, 5, 8), 0, 1);
    sl_tensor *want = sl_alibi_attention(q, k, v, sl_alibi_slopes(4), NULL);
    ck_assert_ptr_nonnull(want);
    sl_error_clear();
    ck_assert_ptr_null(sl_matmul(q, q)); /* an unrelated error, left pending */
    sl_tensor *y = sl_alibi_attention(q, k, v, SL_NONE, NULL);
    ck_assert_ptr_nonnull(y);
    ck_assert_double_eq(tu_max_abs_diff(y, want), 0);
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE); /* still the matmul's */
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [1,4,5,8] @ [1,4,5,8]");
    ck_assert_ptr_null(sl_alibi_attention(q, k, v, NULL, NULL)); /* propagates */
    ck_assert_str_eq(sl_error_message(), "sl_matmul: inner dims differ: [1,4,5,8] @ [1,4,5,8]");
    sl_error_clear();
    ck_assert_ptr_null(sl_alibi_attention(q, k, v, NULL, NULL));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_alibi_attention: argument 'slopes' is NULL");
    sl_error_clear();
    ck_assert_ptr_null(sl_alibi_attention(q, SL_NONE, v, SL_NONE, NULL));
    ck_assert_str_eq(sl_error_message(),
                     "sl_alibi_attention: argument 'k' is SL_NONE; it is not optional");
    sl_error_clear();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alibi");
    TCase *tc = tcase_create("alibi");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_timeout(tc, 600);
    tu_add_test(s, tc, slopes_follow_the_paper);
    tu_add_test(s, tc, slopes_errors);
    tu_add_test(s, tc, slopes_none_and_null);
    tu_add_test(s, tc, fused_matches_composed_f64);
    tu_add_test(s, tc, fused_matches_composed_f32);
    tu_add_test(s, tc, subnormals_flush_and_the_fp_mode_is_kept);
    tu_add_test(s, tc, zero_slopes_are_plain_attention);
    tu_add_test(s, tc, probabilities_are_right);
    tu_add_test(s, tc, bias_alone_closed_form);
    tu_add_test(s, tc, gradcheck_q_k_v_slopes);
    tu_add_test(s, tc, gradients_accumulate);
    tu_add_test(s, tc, slopes_dtype_is_free);
    tu_add_test(s, tc, cache_consistency);
    tu_add_test(s, tc, thread_counts_agree_and_runs_repeat);
    tu_add_test(s, tc, memory_is_linear_in_T);
    tu_add_test(s, tc, errors_name_the_shapes);
    tu_every_isa();
    return tu_run(s);
}
