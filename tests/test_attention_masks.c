/* The options of the fused sl_alibi_attention (sl_alibi_opts): key and query lengths, segment
 * ids, sliding windows, asymmetric slopes, and all of them together, with GQA/MQA and a KV
 * cache's alignment. Each is compared with the same math composed from primitive ops through
 * autograd in f64 (matmul, bias, masked_fill with -inf, softmax, matmul; rows with no visible
 * key zeroed): the output and every gradient (q, k, v, slopes, slopes_after) to 1e-10, on odd
 * sizes; gradchecked in f64; equal bitwise on 1, 2 and 4 threads; memory linear in T. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- cases */

enum { MAX_B = 4, MAX_T = 300 };

typedef struct {
    int64_t B, H, Hk, Tq, Tk, D, Dv;
    bool bidir;
    int64_t window;
    bool lengths; /* len_k / len_q below are used */
    int32_t len_k[MAX_B], len_q[MAX_B];
    int segments;        /* 0: none; 1: packed runs (increasing ids); 2: random ids in {0,1,2} */
    bool query_segments; /* pass query_segments too (else derived from key_segments) */
    bool asym;           /* slopes_after */
    double scale;
} mcase;

/* Segment ids of a case, (B, Tk) for keys and (B, Tq) for queries, drawn from rng. */
typedef struct {
    int32_t k[MAX_B * MAX_T], q[MAX_B * MAX_T];
} segs;

static void make_segments(const mcase *c, sl_rng *r, segs *s)
{
    for (int64_t b = 0; b < c->B; b++) {
        int32_t id = (int32_t)b * 7; /* rows start at different ids */
        for (int64_t j = 0; j < c->Tk; j++) {
            if (c->segments == 1 && j > 0 && sl_rng_below(r, 23) == 0) id++;
            s->k[b * c->Tk + j] = c->segments == 1 ? id : (int32_t)sl_rng_below(r, 3);
        }
        for (int64_t i = 0; i < c->Tq; i++) {
            int64_t p = c->Tk - c->Tq + i;
            /* explicit query ids: the key's at the same position, except now and then */
            int32_t same = p >= 0 && p < c->Tk ? s->k[b * c->Tk + p] : 0;
            s->q[b * c->Tq + i] = sl_rng_below(r, 5) ? same : (int32_t)sl_rng_below(r, 3);
        }
    }
}

static int32_t seg_q_of(const mcase *c, const segs *s, int64_t b, int64_t i)
{
    return c->query_segments ? s->q[b * c->Tq + i] : s->k[b * c->Tk + c->Tk - c->Tq + i];
}

/* The rule of sl_alibi_opts, written out: may query row i of batch row b see key j? */
static bool visible(const mcase *c, const segs *s, int64_t b, int64_t i, int64_t j)
{
    int64_t p = c->Tk - c->Tq + i, d = p - j;
    if (!c->bidir && j > p) return false;
    if (c->lengths && (j >= c->len_k[b] || p >= c->len_q[b])) return false;
    if (c->segments && s->k[b * c->Tk + j] != seg_q_of(c, s, b, i)) return false;
    if (c->window && (c->bidir ? llabs(d) : d) >= c->window) return false;
    return true;
}

/* ---------------------------------------------------------------- the two implementations */

/* k (B, Hk, T, D) -> (B, H, T, D), head h reading kv head h / (H / Hk). */
static sl_tensor *repeat_kv(sl_tensor *k, int64_t H)
{
    int64_t B = k->shape[0], Hk = k->shape[1], T = k->shape[2], D = k->shape[3];
    if (Hk == H) return k;
    sl_tensor *r = sl_reshape(k, sl_shape(B, Hk, 1, T, D));
    r = sl_expand(r, sl_shape(B, Hk, H / Hk, T, D));
    return sl_reshape(r, sl_shape(B, H, T, D));
}

/* The composed reference, through autograd:
 *     x = scale q k^T - m (p_i - j) [j <= p_i] - m' (j - p_i) [j > p_i]
 *     out = softmax(masked_fill(x, !visible, -inf)) v * keep
 * where a row with no visible key is unmasked instead (any finite softmax) and zeroed by keep
 * (B, 1, Tq, 1), so that it outputs 0 and passes no gradient. m' is m itself when symmetric, so
 * that m's gradient sums both sides. slopes NULL: the paper's. */
static sl_tensor *composed(const mcase *c, const segs *s, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                           sl_tensor *slopes, sl_tensor *after)
{
    int64_t B = c->B, H = c->H, Tq = c->Tq, Tk = c->Tk, off = Tk - Tq;
    sl_tensor *before_d = sl_zeros(SL_F64, sl_shape(Tq, Tk));
    sl_tensor *after_d = sl_zeros(SL_F64, sl_shape(Tq, Tk));
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) {
            int64_t d = off + i - j;
            sl_set(d >= 0 ? before_d : after_d, i * Tk + j, -(double)llabs(d));
        }
    sl_tensor *mask = sl_zeros(SL_I32, sl_shape(B, 1, Tq, Tk));
    sl_tensor *keep = sl_zeros(SL_F64, sl_shape(B, 1, Tq, 1));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tq; i++) {
            int seen = 0;
            for (int64_t j = 0; j < Tk; j++) seen += visible(c, s, b, i, j);
            sl_set(keep, b * Tq + i, seen > 0);
            for (int64_t j = 0; j < Tk; j++)
                sl_set(mask, (b * Tq + i) * Tk + j, seen > 0 && !visible(c, s, b, i, j));
        }
    sl_tensor *m = slopes ? slopes : sl_alibi_slopes((int)H);
    sl_tensor *ma = after ? after : m;
    sl_tensor *bias = sl_add(sl_mul(sl_reshape(m, sl_shape(H, 1, 1)), before_d),
                             sl_mul(sl_reshape(ma, sl_shape(H, 1, 1)), after_d)); /* (H,Tq,Tk) */
    double scale = c->scale != 0 ? c->scale : 1 / sqrt((double)c->D);
    sl_tensor *sc = sl_matmul(q, sl_transpose(repeat_kv(k, H), 2, 3));
    sl_tensor *x = sl_masked_fill(sl_add(sl_mul_scalar(sc, scale), bias), mask, -INFINITY);
    return sl_mul(sl_matmul(sl_softmax(x, -1), repeat_kv(v, H)), keep);
}

/* The options of a case, their tensors made in the current arena. */
static sl_alibi_opts opts_of(const mcase *c, const segs *s, sl_tensor *after)
{
    sl_alibi_opts o = {.bidirectional = c->bidir, .scale = c->scale, .window = c->window};
    if (c->lengths) {
        o.key_lengths = sl_from_data(SL_I32, sl_shape(c->B), c->len_k);
        o.query_lengths = sl_from_data(SL_I32, sl_shape(c->B), c->len_q);
    }
    if (c->segments) o.key_segments = sl_from_data(SL_I32, sl_shape(c->B, c->Tk), s->k);
    if (c->segments && c->query_segments)
        o.query_segments = sl_from_data(SL_I32, sl_shape(c->B, c->Tq), s->q);
    o.slopes_after = after;
    return o;
}

static sl_tensor *fused(const mcase *c, const segs *s, sl_tensor *q, sl_tensor *k, sl_tensor *v,
                        sl_tensor *slopes, sl_tensor *after)
{
    sl_alibi_opts o = opts_of(c, s, after);
    return sl_alibi_attention(q, k, v, slopes ? slopes : SL_NONE, &o);
}

/* ---------------------------------------------------------------- fused vs composed */

typedef struct {
    sl_tensor *q, *k, *v, *slopes, *after; /* leaves; slopes and after may be NULL */
} leaves;

/* Perturbed paper's slopes (after: in reverse head order), so that a mix-up of heads or sides
 * shows. */
static sl_tensor *slopes_leaf(sl_rng *r, int64_t H, bool reverse)
{
    sl_tensor *m = sl_alibi_slopes((int)H);
    sl_tensor *p = sl_empty(SL_F64, sl_shape(H));
    for (int64_t h = 0; h < H; h++)
        sl_set(p, h, sl_get(m, reverse ? H - 1 - h : h) * (1 + 0.3 * sl_rng_uniform(r)));
    return sl_requires_grad(p, true);
}

static leaves make_leaves(sl_rng *r, const mcase *c, bool learn_slopes)
{
    leaves l = {tu_randn(r, SL_F64, sl_shape(c->B, c->H, c->Tq, c->D)),
                tu_randn(r, SL_F64, sl_shape(c->B, c->Hk, c->Tk, c->D)),
                tu_randn(r, SL_F64, sl_shape(c->B, c->Hk, c->Tk, c->Dv)), NULL, NULL};
    if (learn_slopes) l.slopes = slopes_leaf(r, c->H, false);
    if (c->asym) l.after = slopes_leaf(r, c->H, true);
    return l;
}

static leaves cast_leaves(const leaves *l, sl_dtype dt)
{
    return (leaves){tu_cast_leaf(l->q, dt), tu_cast_leaf(l->k, dt), tu_cast_leaf(l->v, dt),
                    l->slopes ? tu_cast_leaf(l->slopes, SL_F64) : NULL,
                    l->after ? tu_cast_leaf(l->after, SL_F64) : NULL};
}

static void describe(const mcase *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "B%lld H%lld Hk%lld Tq%lld Tk%lld D%lld Dv%lld %s W%lld%s%s%s%s",
             (long long)c->B, (long long)c->H, (long long)c->Hk, (long long)c->Tq, (long long)c->Tk,
             (long long)c->D, (long long)c->Dv, c->bidir ? "bidir" : "causal", (long long)c->window,
             c->lengths ? " lengths" : "",
             c->segments == 1   ? " packed"
             : c->segments == 2 ? " random-segments"
                                : "",
             c->query_segments ? " (query ids)" : "", c->asym ? " asym" : "");
}

static void check_close(const char *what, const mcase *c, const sl_tensor *got,
                        const sl_tensor *want, double tol)
{
    char d[200];
    describe(c, d, sizeof d);
    ck_assert_msg(got && want, "%s: missing (%s)", what, d);
    double rel = tu_max_rel_diff(got, want);
    ck_assert_msg(rel <= tol, "%s differs by %.3g relative (tol %.1g): %s", what, rel, tol, d);
}

/* Fused in dt against composed in f64 on the same values: output, and the gradients of q, k, v,
 * slopes and slopes_after for one random output gradient. */
static void compare(const mcase *c, sl_dtype dt, bool learn_slopes, double tol, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    segs s;
    make_segments(c, &r, &s);
    leaves ref = make_leaves(&r, c, learn_slopes), fz = cast_leaves(&ref, dt);
    sl_tensor *want = composed(c, &s, ref.q, ref.k, ref.v, ref.slopes, ref.after);
    sl_tensor *got = fused(c, &s, fz.q, fz.k, fz.v, fz.slopes, fz.after);
    ck_assert_msg(want && got, "%s", sl_error_message());
    ck_assert_int_eq(got->dtype, dt);
    check_close("output", c, got, want, tol);
    for (int64_t e = 0; e < sl_numel(got); e++) ck_assert(isfinite(sl_get(got, e)));

    sl_tensor *gout = sl_rand_normal(&r, SL_F64, 4, want->shape, 0, 1);
    ck_assert(sl_backward_ex(want, gout, 0));
    sl_tensor *gout_dt = sl_empty(dt, 4, want->shape);
    sl_copy_into(gout_dt, gout);
    ck_assert_msg(sl_backward_ex(got, gout_dt, 0), "%s", sl_error_message());
    check_close("dq", c, fz.q->grad, ref.q->grad, tol);
    check_close("dk", c, fz.k->grad, ref.k->grad, tol);
    check_close("dv", c, fz.v->grad, ref.v->grad, tol);
    if (learn_slopes) check_close("dslopes", c, fz.slopes->grad, ref.slopes->grad, tol);
    if (c->asym) check_close("dslopes_after", c, fz.after->grad, ref.after->grad, tol);
}

/* Sizes, then the options of a case. */
#define SZ(b, h, hk, tq, tk, d, dv) .B = b, .H = h, .Hk = hk, .Tq = tq, .Tk = tk, .D = d, .Dv = dv
#define LENS(k0, k1, k2, k3, q0, q1, q2, q3)                                                       \
    .lengths = true, .len_k = {k0, k1, k2, k3}, .len_q = {q0, q1, q2, q3}

static const mcase CASES[] = {
    /* key padding: lengths 0 (a row of nothing), 1, odd, full; queries alike */
    {SZ(3, 3, 3, 70, 70, 8, 8), .bidir = true, LENS(70, 33, 1, 0, 70, 33, 1, 0)},
    {SZ(4, 3, 1, 70, 70, 8, 5), LENS(70, 33, 1, 0, 70, 33, 1, 0)},
    /* query lengths apart from key lengths; T = 1 */
    {SZ(2, 2, 2, 130, 130, 4, 4), .bidir = true, LENS(100, 129, 0, 0, 130, 7, 0, 0)},
    {SZ(2, 2, 1, 1, 1, 3, 3), LENS(1, 0, 0, 0, 1, 1, 0, 0)},
    {SZ(2, 2, 1, 1, 1, 3, 3), .bidir = true, LENS(0, 1, 0, 0, 1, 1, 0, 0)},
    /* a cache's alignment (Tq < Tk) with lengths in positions */
    {SZ(2, 4, 2, 37, 150, 8, 12), LENS(150, 120, 0, 0, 150, 140, 0, 0)},
    /* packed documents: increasing ids, random ids, explicit query ids, Tq < Tk, Tq > Tk */
    {SZ(2, 4, 2, 150, 150, 8, 8), .segments = 1},
    {SZ(2, 4, 2, 150, 150, 8, 8), .bidir = true, .segments = 1},
    {SZ(2, 3, 3, 70, 70, 4, 6), .bidir = true, .segments = 2},
    {SZ(2, 3, 3, 70, 70, 4, 6), .segments = 2, .query_segments = true},
    {SZ(1, 2, 1, 37, 150, 8, 8), .segments = 1},
    {SZ(1, 2, 1, 200, 150, 8, 8), .bidir = true, .segments = 1, .query_segments = true},
    /* sliding windows: 1, small, a tile, a tile + 1, bidirectional, over a cache */
    {SZ(1, 2, 2, 150, 150, 8, 8), .window = 1},
    {SZ(2, 3, 1, 150, 150, 8, 8), .window = 5},
    {SZ(1, 2, 2, 150, 150, 8, 8), .window = 64},
    {SZ(1, 2, 2, 150, 150, 8, 8), .window = 65},
    {SZ(1, 2, 2, 150, 150, 8, 8), .bidir = true, .window = 3},
    {SZ(1, 3, 3, 133, 133, 8, 8), .bidir = true, .window = 70},
    {SZ(2, 4, 1, 37, 300, 8, 8), .window = 20},
    {SZ(1, 2, 2, 1, 300, 8, 8), .window = 100},
    {SZ(1, 2, 2, 9, 9, 8, 8), .bidir = true, .window = 100}, /* wider than any distance */
    /* asymmetric slopes */
    {SZ(2, 3, 1, 70, 70, 8, 8), .bidir = true, .asym = true},
    {SZ(1, 4, 4, 37, 150, 8, 4), .bidir = true, .asym = true},
    {SZ(1, 3, 3, 150, 100, 8, 4), .bidir = true, .asym = true},
    /* everything at once */
    {SZ(2, 4, 2, 133, 133, 8, 8), .bidir = true, .window = 40, LENS(133, 90, 0, 0, 133, 90, 0, 0),
     .segments = 1, .asym = true, .scale = 0.3},
    {SZ(2, 3, 3, 133, 133, 8, 8), .bidir = true, .window = 17, LENS(101, 133, 0, 0, 133, 64, 0, 0),
     .segments = 2, .query_segments = true, .asym = true},
    {SZ(2, 4, 1, 70, 133, 8, 8), .window = 50, LENS(133, 100, 0, 0, 133, 120, 0, 0), .segments = 1},
    {SZ(3, 3, 3, 1, 1, 2, 2), .bidir = true, .window = 1, LENS(1, 0, 1, 0, 1, 1, 0, 0),
     .segments = 2, .query_segments = true, .asym = true},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

START_TEST(each_option_matches_composed_f64)
{
    for (int t = 0; t < N_CASES; t++) {
        compare(&CASES[t], SL_F64, false, 1e-10, 100 + t);
        compare(&CASES[t], SL_F64, true, 1e-10, 200 + t);
    }
}
END_TEST

START_TEST(each_option_matches_composed_f32)
{
    for (int t = 0; t < N_CASES; t++) compare(&CASES[t], SL_F32, true, 2e-5, 300 + t);
}
END_TEST

/* ---------------------------------------------------------------- direct properties */

/* Rows that see no key give 0, not NaN, and pass nothing: their queries get no gradient, and
 * changing their output gradient changes no other gradient. Here: row 0 of batch 0 is padding
 * (query length), row 0 of batch 1 is in a segment no key has, and batch 2 has no keys. */
START_TEST(rows_that_see_nothing_are_zero_and_pass_nothing)
{
    int64_t B = 3, H = 2, T = 67, D = 4;
    sl_rng r = sl_rng_seed(5);
    sl_tensor *q = tu_randn(&r, SL_F64, sl_shape(B, H, T, D));
    sl_tensor *k = tu_randn(&r, SL_F64, sl_shape(B, H, T, D));
    sl_tensor *v = tu_randn(&r, SL_F64, sl_shape(B, H, T, D));
    int32_t lk[] = {T, T, 0}, lq[] = {T - 5, T, T};
    int32_t sk[3 * 67], sq[3 * 67];
    for (int64_t e = 0; e < B * T; e++) sk[e] = sq[e] = 1;
    sq[1 * T + 3] = 9; /* batch 1, query 3: no key of segment 9 */
    sl_alibi_opts o = {.bidirectional = true,
                       .key_lengths = sl_from_data(SL_I32, sl_shape(B), lk),
                       .query_lengths = sl_from_data(SL_I32, sl_shape(B), lq),
                       .key_segments = sl_from_data(SL_I32, sl_shape(B, T), sk),
                       .query_segments = sl_from_data(SL_I32, sl_shape(B, T), sq)};
    sl_tensor *out = sl_alibi_attention(q, k, v, SL_NONE, &o);
    ck_assert_ptr_nonnull(out);
    bool dead[3][67] = {{false}};
    for (int64_t i = T - 5; i < T; i++) dead[0][i] = true;
    dead[1][3] = true;
    for (int64_t i = 0; i < T; i++) dead[2][i] = true;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t d = 0; d < D; d++) {
                    double x = sl_get(out, ((b * H + h) * T + i) * D + d);
                    ck_assert(isfinite(x));
                    if (dead[b][i]) ck_assert_double_eq(x, 0);
                    else ck_assert(x != 0);
                }
    sl_tensor *g1 = sl_rand_normal(&r, SL_F64, 4, out->shape, 0, 1);
    sl_tensor *g2 = sl_empty(SL_F64, 4, out->shape);
    sl_copy_into(g2, g1);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t d = 0; dead[b][i] && d < D; d++)
                    sl_set(g2, ((b * H + h) * T + i) * D + d, 1e6 * (d + 1));
    sl_tensor *grads[2][3];
    for (int run = 0; run < 2; run++) {
        sl_zero_grad(q);
        sl_zero_grad(k);
        sl_zero_grad(v);
        sl_tensor *y = sl_alibi_attention(q, k, v, SL_NONE, &o);
        ck_assert(sl_backward_ex(y, run ? g2 : g1, 0));
        sl_tensor *leaf[3] = {q, k, v};
        for (int i = 0; i < 3; i++) {
            grads[run][i] = sl_empty(SL_F64, 4, leaf[i]->shape);
            sl_copy_into(grads[run][i], leaf[i]->grad);
        }
    }
    for (int i = 0; i < 3; i++)
        ck_assert(!memcmp(grads[0][i]->data, grads[1][i]->data,
                          sizeof(double) * (size_t)(B * H * T * D)));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t d = 0; dead[b][i] && d < D; d++)
                    ck_assert_double_eq(sl_get(grads[0][0], ((b * H + h) * T + i) * D + d), 0);
    /* batch 2 has no keys at all: its k and v get nothing */
    for (int64_t e = 2 * H * T * D; e < B * H * T * D; e++) {
        ck_assert_double_eq(sl_get(grads[0][1], e), 0);
        ck_assert_double_eq(sl_get(grads[0][2], e), 0);
    }
}
END_TEST

/* A zero-initialised opts is today's causal ALiBi exactly (the same bits as NULL opts), and so
 * are options that change nothing: lengths of Tk, one segment, a window wider than T. */
START_TEST(neutral_options_change_nothing)
{
    int64_t B = 2, H = 4, T = 150, D = 16;
    sl_rng r = sl_rng_seed(7);
    for (int dt = 0; dt < 2; dt++) {
        sl_dtype d = dt ? SL_F32 : SL_F64;
        sl_tensor *q = sl_rand_normal(&r, d, sl_shape(B, H, T, D), 0, 1);
        sl_tensor *k = sl_rand_normal(&r, d, sl_shape(B, H, T, D), 0, 1);
        sl_tensor *v = sl_rand_normal(&r, d, sl_shape(B, H, T, D), 0, 1);
        size_t bytes = sl_dtype_size(d) * (size_t)(B * H * T * D);
        sl_tensor *base = sl_alibi_attention(q, k, v, SL_NONE, NULL);
        sl_alibi_opts zero = {0};
        ck_assert(!memcmp(sl_alibi_attention(q, k, v, SL_NONE, &zero)->data, base->data, bytes));
        int32_t len[] = {T, 1000}, seg[2 * 150]; /* past Tk: all valid */
        for (int e = 0; e < 2 * 150; e++) seg[e] = 4;
        sl_alibi_opts same = {.window = 10 * T,
                              .key_lengths = sl_from_data(SL_I32, sl_shape(B), len),
                              .query_lengths = sl_from_data(SL_I32, sl_shape(B), len),
                              .key_segments = sl_from_data(SL_I32, sl_shape(B, T), seg),
                              .slopes_after = SL_NONE};
        ck_assert(!memcmp(sl_alibi_attention(q, k, v, SL_NONE, &same)->data, base->data, bytes));
        /* bidirectional: slopes_after equal to the slopes gives the symmetric output */
        sl_alibi_opts sym = {.bidirectional = true}, asym = sym;
        asym.slopes_after = sl_alibi_slopes((int)H);
        ck_assert(!memcmp(sl_alibi_attention(q, k, v, SL_NONE, &sym)->data,
                          sl_alibi_attention(q, k, v, SL_NONE, &asym)->data, bytes));
    }
}
END_TEST

/* With slopes_after, the two slopes' gradients split the symmetric one: dm + dm' equals the
 * gradient of one slope tensor used for both sides. */
START_TEST(asymmetric_gradients_split_the_symmetric_one)
{
    mcase c = {SZ(2, 3, 1, 70, 90, 8, 8), .bidir = true};
    sl_rng r = sl_rng_seed(9);
    segs s;
    leaves l = make_leaves(&r, &c, true);
    sl_tensor *m2 = tu_cast_leaf(l.slopes, SL_F64), *m3 = tu_cast_leaf(l.slopes, SL_F64);
    sl_tensor *gout = sl_rand_normal(&r, SL_F64, sl_shape(c.B, c.H, c.Tq, c.Dv), 0, 1);
    ck_assert(sl_backward_ex(fused(&c, &s, l.q, l.k, l.v, l.slopes, NULL), gout, 0));
    ck_assert(sl_backward_ex(fused(&c, &s, l.q, l.k, l.v, m2, m3), gout, 0));
    for (int64_t h = 0; h < c.H; h++)
        ck_assert_close(sl_get(m2->grad, h) + sl_get(m3->grad, h), sl_get(l.slopes->grad, h), 1e-12,
                        1e-14);
}
END_TEST

/* The KV cache: the last n rows of a full call equal a call with only those n queries, with
 * every option (positions, and so the window, lengths and segments, are absolute). */
START_TEST(cache_rows_equal_full_rows)
{
    int64_t B = 2, H = 4, Hk = 2, T = 150, D = 8;
    sl_rng r = sl_rng_seed(11);
    sl_tensor *q = sl_rand_normal(&r, SL_F64, sl_shape(B, H, T, D), 0, 1);
    sl_tensor *k = sl_rand_normal(&r, SL_F64, sl_shape(B, Hk, T, D), 0, 1);
    sl_tensor *v = sl_rand_normal(&r, SL_F64, sl_shape(B, Hk, T, D), 0, 1);
    int32_t len[] = {T, 120}, seg[2 * 150];
    for (int64_t e = 0; e < B * T; e++) seg[e] = (int32_t)((e % T) / 40);
    int64_t windows[] = {0, 1, 7, 64, 100};
    for (int w = 0; w < 5; w++) {
        sl_alibi_opts o = {.window = windows[w],
                           .key_lengths = sl_from_data(SL_I32, sl_shape(B), len),
                           .query_lengths = sl_from_data(SL_I32, sl_shape(B), len),
                           .key_segments = sl_from_data(SL_I32, sl_shape(B, T), seg)};
        sl_tensor *full = sl_alibi_attention(q, k, v, SL_NONE, &o);
        int64_t ns[] = {1, 2, 63, 64, 65, 100};
        for (int t = 0; t < 6; t++) {
            int64_t n = ns[t];
            sl_tensor *last = sl_alibi_attention(sl_narrow(q, 2, T - n, n), k, v, SL_NONE, &o);
            ck_assert_msg(last, "%s", sl_error_message());
            double rel = tu_max_rel_diff(last, sl_narrow(full, 2, T - n, n));
            ck_assert_msg(rel <= 1e-14, "window %lld, n = %lld: %g", (long long)windows[w],
                          (long long)n, rel);
        }
    }
}
END_TEST

/* ---------------------------------------------------------------- gradcheck */

typedef struct {
    mcase c;
    segs s;
} gc_ctx;

static sl_tensor *call_fused(sl_tensor *const *in, int n, void *user)
{
    gc_ctx *g = user;
    return fused(&g->c, &g->s, in[0], in[1], in[2], in[3], g->c.asym ? in[4] : NULL);
}

START_TEST(gradcheck_each_option)
{
    static const mcase cs[] = {
        {SZ(2, 2, 1, 6, 6, 3, 2), .bidir = true, LENS(6, 3, 0, 0, 5, 6, 0, 0)}, /* lengths */
        {SZ(2, 2, 2, 5, 7, 3, 2), LENS(4, 7, 0, 0, 7, 6, 0, 0)},
        {SZ(1, 2, 2, 9, 9, 3, 2), .segments = 2}, /* segments */
        {SZ(1, 2, 1, 9, 9, 3, 2), .bidir = true, .segments = 2, .query_segments = true},
        {SZ(1, 2, 2, 9, 9, 3, 2), .window = 3}, /* window */
        {SZ(1, 2, 2, 5, 9, 3, 2), .bidir = true, .window = 2},
        {SZ(1, 3, 1, 6, 6, 3, 2), .bidir = true, .asym = true}, /* asymmetric */
        {SZ(2, 2, 2, 7, 7, 3, 2), .bidir = true, .window = 4, LENS(7, 5, 0, 0, 6, 7, 0, 0),
         .segments = 2, .query_segments = true, .asym = true},
    };
    sl_rng r = sl_rng_seed(13);
    for (size_t t = 0; t < sizeof cs / sizeof *cs; t++) {
        gc_ctx g = {.c = cs[t]};
        make_segments(&g.c, &r, &g.s);
        leaves l = make_leaves(&r, &g.c, true);
        sl_tensor *in[] = {l.q, l.k, l.v, l.slopes, l.after};
        tu_gradcheck(call_fused, g.c.asym ? 5 : 4, in, &g);
        sl_tensor *vin[] = {tu_noncontig(l.q), tu_noncontig(l.k), tu_noncontig(l.v), l.slopes,
                            l.after};
        tu_gradcheck(call_fused, g.c.asym ? 5 : 4, vin, &g);
    }
}
END_TEST

/* ---------------------------------------------------------------- threads, memory, errors */

typedef struct {
    sl_tensor *r[6]; /* out, dq, dk, dv, dslopes, dslopes_after */
} run_result;

static sl_tensor *copy_of(const sl_tensor *t)
{
    sl_tensor *c = sl_empty(t->dtype, t->ndim, t->shape);
    sl_copy_into(c, t);
    return c;
}

static run_result run_once(const mcase *c, const segs *s, const leaves *l, sl_tensor *gout)
{
    sl_tensor *leaf[5] = {l->q, l->k, l->v, l->slopes, l->after};
    for (int i = 0; i < 5; i++)
        if (leaf[i]) sl_zero_grad(leaf[i]);
    sl_tensor *out = fused(c, s, l->q, l->k, l->v, l->slopes, l->after);
    ck_assert(sl_backward_ex(out, gout, 0));
    run_result r = {{out}};
    for (int i = 0; i < 5; i++) r.r[i + 1] = leaf[i] ? copy_of(leaf[i]->grad) : NULL;
    return r;
}

START_TEST(thread_counts_agree_bitwise)
{
    int prev = sl_get_num_threads();
    mcase cs[] = {
        {SZ(2, 4, 2, 200, 200, 16, 16), .bidir = true, .window = 70,
         LENS(200, 150, 0, 0, 190, 150, 0, 0), .segments = 1, .asym = true},
        {SZ(2, 4, 1, 130, 200, 16, 8), .window = 90, LENS(200, 170, 0, 0, 200, 200, 0, 0),
         .segments = 2},
    };
    for (int t = 0; t < 2; t++) {
        sl_rng r = sl_rng_seed(17 + t);
        segs s;
        make_segments(&cs[t], &r, &s);
        leaves l64 = make_leaves(&r, &cs[t], true), l = cast_leaves(&l64, SL_F32);
        sl_tensor *gout =
            sl_rand_normal(&r, SL_F32, sl_shape(cs[t].B, cs[t].H, cs[t].Tq, cs[t].Dv), 0, 1);
        sl_set_num_threads(1);
        run_result base = run_once(&cs[t], &s, &l, gout);
        int counts[] = {2, 4};
        for (int i = 0; i < 2; i++) {
            sl_set_num_threads(counts[i]);
            run_result a = run_once(&cs[t], &s, &l, gout);
            for (int e = 0; e < 6; e++) {
                if (!a.r[e]) continue;
                size_t bytes = sl_dtype_size(a.r[e]->dtype) * (size_t)sl_numel(a.r[e]);
                ck_assert_msg(!memcmp(a.r[e]->data, base.r[e]->data, bytes),
                              "case %d result %d: %d threads vs 1", t, e, counts[i]);
            }
        }
    }
    sl_set_num_threads(prev);
}
END_TEST

/* Forward + backward at T = 1024 with every option uses far less than one (T, T) matrix
 * (4 MiB in f32) beyond its output and gradients, and a warm arena needs no new heap
 * allocation. */
START_TEST(memory_is_linear_in_T_with_every_option)
{
    int64_t T = 1024, H = 2, D = 16;
    sl_rng r = sl_rng_seed(19);
    sl_tensor *q = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *k = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *v = tu_randn(&r, SL_F32, sl_shape(1, H, T, D));
    sl_tensor *m = sl_requires_grad(sl_alibi_slopes((int)H), true);
    sl_tensor *ma = sl_requires_grad(sl_alibi_slopes((int)H), true);
    sl_tensor *gout = sl_rand_normal(&r, SL_F32, sl_shape(1, H, T, D), 0, 1);
    int32_t len[] = {1000}, *seg = malloc(sizeof(int32_t) * (size_t)T);
    for (int64_t j = 0; j < T; j++) seg[j] = (int32_t)(j / 300);
    sl_tensor *lens = sl_from_data(SL_I32, sl_shape(1), len);
    sl_tensor *segs_t = sl_from_data(SL_I32, sl_shape(1, T), seg);
    free(seg);
    sl_alibi_opts o = {.bidirectional = true,
                       .window = 200,
                       .key_lengths = lens,
                       .query_lengths = lens,
                       .key_segments = segs_t,
                       .slopes_after = ma};
    size_t tensor_bytes = sizeof(float) * (size_t)(H * T * D);
    ck_assert(sl_backward_ex(sl_alibi_attention(q, k, v, m, &o), gout, 0));
    sl_arena *step = sl_arena_new(0);
    sl_arena *prev = sl_arena_set(step);
    for (int it = 0; it < 2; it++) {
        uint64_t allocs = sl_heap_allocs();
        sl_arena_reset(step);
        sl_tensor *out = sl_alibi_attention(q, k, v, m, &o);
        ck_assert(sl_backward_ex(out, gout, 0));
        size_t extra = sl_arena_peak(step) - 2 * tensor_bytes;
        ck_assert_msg(extra < (size_t)1 << 20, "extra %zu bytes", extra);
        if (it == 1) ck_assert_uint_eq(sl_heap_allocs(), allocs);
    }
    sl_arena_set(prev);
    sl_arena_free(step);
}
END_TEST

START_TEST(option_errors)
{
    sl_tensor *q = sl_zeros(SL_F32, sl_shape(2, 4, 16, 8));
    sl_tensor *k = sl_zeros(SL_F32, sl_shape(2, 2, 16, 8));
#define EXPECT(opts, code, msg)                                                                    \
    do {                                                                                           \
        sl_alibi_opts o_ = opts;                                                                   \
        ck_assert_ptr_null(sl_alibi_attention(q, k, k, SL_NONE, &o_));                             \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)
    EXPECT(((sl_alibi_opts){.window = -1}), SL_ERR_ARG,
           "sl_alibi_attention: window -1 must be >= 0 (0: no window)");
    EXPECT(((sl_alibi_opts){.key_lengths = sl_zeros(SL_I32, sl_shape(3))}), SL_ERR_SHAPE,
           "sl_alibi_attention: key_lengths must be i32 [2], got i32 [3]");
    EXPECT(((sl_alibi_opts){.query_lengths = sl_zeros(SL_F32, sl_shape(2))}), SL_ERR_DTYPE,
           "sl_alibi_attention: query_lengths must be i32 [2], got f32 [2]");
    EXPECT(((sl_alibi_opts){.key_lengths = sl_full(SL_I32, sl_shape(2), -3)}), SL_ERR_ARG,
           "sl_alibi_attention: key_lengths[0] is -3; it must be >= 0");
    EXPECT(((sl_alibi_opts){.query_lengths = sl_full(SL_I32, sl_shape(2), -1)}), SL_ERR_ARG,
           "sl_alibi_attention: query_lengths[0] is -1; it must be >= 0");
    EXPECT(((sl_alibi_opts){.key_segments = sl_zeros(SL_I32, sl_shape(2, 15))}), SL_ERR_SHAPE,
           "sl_alibi_attention: key_segments must be i32 [2,16], got i32 [2,15]");
    EXPECT(((sl_alibi_opts){.query_segments = sl_zeros(SL_I32, sl_shape(2, 16))}), SL_ERR_ARG,
           "sl_alibi_attention: query_segments without key_segments");
    EXPECT(((sl_alibi_opts){.slopes_after = sl_alibi_slopes(4)}), SL_ERR_ARG,
           "sl_alibi_attention: slopes_after needs bidirectional attention (causal attention "
           "masks every key after its query)");
    EXPECT(((sl_alibi_opts){.bidirectional = true, .slopes_after = sl_alibi_slopes(3)}),
           SL_ERR_SHAPE,
           "sl_alibi_attention: slopes_after [3] for q [2,4,16,8]: need one per head, [4]");
    EXPECT(((sl_alibi_opts){.bidirectional = true, .slopes_after = sl_zeros(SL_I32, sl_shape(4))}),
           SL_ERR_DTYPE, "sl_alibi_attention: slopes_after must be f32 or f64, got i32 [4]");
    /* key ids alone need every query at a key's position */
    sl_tensor *q20 = sl_zeros(SL_F32, sl_shape(2, 4, 20, 8));
    sl_alibi_opts o = {.bidirectional = true, .key_segments = sl_zeros(SL_I32, sl_shape(2, 16))};
    ck_assert_ptr_null(sl_alibi_attention(q20, k, k, SL_NONE, &o));
    ck_assert_str_eq(sl_error_message(), "sl_alibi_attention: key_segments without "
                                         "query_segments needs Tq <= Tk (20 queries, 16 keys)");
    sl_error_clear();
    /* a released tensor in the options is refused */
    sl_arena *tmp = sl_arena_new(0), *prev = sl_arena_set(tmp);
    sl_tensor *stale = sl_full(SL_I32, sl_shape(2), 3);
    sl_arena_set(prev);
    sl_arena_reset(tmp);
    sl_alibi_opts so = {.key_lengths = stale};
    ck_assert_ptr_null(sl_alibi_attention(q, k, k, SL_NONE, &so));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    sl_error_clear();
    sl_arena_free(tmp);
#undef EXPECT
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention_masks");
    TCase *tc = tcase_create("masks");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_timeout(tc, 600);
    tu_add_test(s, tc, each_option_matches_composed_f64);
    tu_add_test(s, tc, each_option_matches_composed_f32);
    tu_add_test(s, tc, rows_that_see_nothing_are_zero_and_pass_nothing);
    tu_add_test(s, tc, neutral_options_change_nothing);
    tu_add_test(s, tc, asymmetric_gradients_split_the_symmetric_one);
    tu_add_test(s, tc, cache_rows_equal_full_rows);
    tu_add_test(s, tc, gradcheck_each_option);
    tu_add_test(s, tc, thread_counts_agree_bitwise);
    tu_add_test(s, tc, memory_is_linear_in_T_with_every_option);
    tu_add_test(s, tc, option_errors);
    tu_every_isa();
    return tu_run(s);
}
