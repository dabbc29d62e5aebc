/* sl_alibi_attention_packed: attention on the heads as one Linear packs them, qkv (B, T,
 * (H + 2 Hk) D) -> (B, T, H D). It must be the same computation as splitting the heads out with
 * views (sl_narrow, sl_reshape, sl_permute), sl_alibi_attention, and merging them back
 * (sl_permute, sl_reshape): the same kernel reading and writing other addresses, so the output
 * and every gradient (qkv's, the slopes') are compared bitwise, in f32 and f64, with GQA/MQA,
 * odd lengths, both directions and every option. Then an f64 gradcheck, thread counts,
 * sl_linear_heads (against sl_linear split into heads) feeding the heads-major (4-D) layout
 * (against the 3-D one), and the errors. */
#include "testutil.h"

#include <string.h>

typedef struct {
    int64_t B, T, H, Hk, D;
    bool bidir, asym, learn, lengths, segments;
    int64_t window;
} pcase;

static void describe(const pcase *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "B%lld T%lld H%lld Hk%lld D%lld %s%s%s%s%s W%lld", (long long)c->B,
             (long long)c->T, (long long)c->H, (long long)c->Hk, (long long)c->D,
             c->bidir ? "bidir" : "causal", c->asym ? " asym" : "", c->learn ? " learned" : "",
             c->lengths ? " lengths" : "", c->segments ? " segments" : "", (long long)c->window);
}

/* The case's masks: lengths T, T - 3, 1, ... per row; segments: documents of 37 positions. */
typedef struct {
    int32_t len[4];
    int32_t seg[4 * 300];
} pmask;

static sl_alibi_opts opts_of(const pcase *c, pmask *m, sl_tensor *after)
{
    sl_alibi_opts o = {.bidirectional = c->bidir, .window = c->window, .slopes_after = after};
    for (int64_t b = 0; b < c->B; b++) {
        m->len[b] = (int32_t)(b == 0 ? c->T : b == 1 ? c->T - 3 : 1);
        for (int64_t t = 0; t < c->T; t++) m->seg[b * c->T + t] = (int32_t)(t / 37 + b);
    }
    if (c->lengths) o.key_lengths = o.query_lengths = sl_from_data(SL_I32, sl_shape(c->B), m->len);
    if (c->segments) o.key_segments = sl_from_data(SL_I32, sl_shape(c->B, c->T), m->seg);
    return o;
}

/* (B, T, n D) -> (B, n, T, D) through views, as a user would split heads. */
static sl_tensor *split(sl_tensor *x, int64_t n, int64_t D)
{
    sl_tensor *h = sl_reshape(x, 4, (int64_t[]){x->shape[0], x->shape[1], n, D});
    return sl_permute(h, (int[]){0, 2, 1, 3});
}

static sl_tensor *by_views(const pcase *c, pmask *m, sl_tensor *qkv, sl_tensor *slopes,
                           sl_tensor *after)
{
    int64_t C = c->H * c->D, kv = c->Hk * c->D;
    sl_tensor *q = split(sl_narrow(qkv, 2, 0, C), c->H, c->D);
    sl_tensor *k = split(sl_narrow(qkv, 2, C, kv), c->Hk, c->D);
    sl_tensor *v = split(sl_narrow(qkv, 2, C + kv, kv), c->Hk, c->D);
    sl_alibi_opts o = opts_of(c, m, after);
    sl_tensor *y = sl_alibi_attention(q, k, v, slopes, &o);
    return sl_reshape(sl_permute(y, (int[]){0, 2, 1, 3}), 3, (int64_t[]){c->B, c->T, C});
}

static sl_tensor *packed(const pcase *c, pmask *m, sl_tensor *qkv, sl_tensor *slopes,
                         sl_tensor *after)
{
    sl_alibi_opts o = opts_of(c, m, after);
    return sl_alibi_attention_packed(qkv, (int)c->H, (int)c->Hk, slopes, &o);
}

static sl_tensor *leaf_slopes(sl_rng *r, const pcase *c, bool reverse)
{
    sl_tensor *p = sl_empty(SL_F64, sl_shape(c->H));
    for (int64_t h = 0; h < c->H; h++)
        sl_set(p, h,
               sl_alibi_slope((int)(reverse ? c->H - 1 - h : h), (int)c->H) *
                   (1 + 0.3 * sl_rng_uniform(r)));
    return sl_requires_grad(p, c->learn);
}

static void same_bits(const char *what, const pcase *c, sl_dtype dt, const sl_tensor *a,
                      const sl_tensor *b)
{
    char d[160];
    describe(c, d, sizeof d);
    ck_assert_msg(a && b, "%s missing: %s %s", what, d, sl_dtype_name(dt));
    ck_assert_msg(!strcmp(sl_shape_str(a), sl_shape_str(b)), "%s: shapes %s and %s: %s", what,
                  sl_shape_str(a), sl_shape_str(b), d);
    for (int64_t e = 0; e < sl_numel(a); e++) {
        double x = sl_get(a, e), y = sl_get(b, e);
        ck_assert_msg(memcmp(&x, &y, sizeof x) == 0 && isfinite(x),
                      "%s [%lld]: packed %.17g, by views %.17g: %s %s", what, (long long)e, x, y, d,
                      sl_dtype_name(dt));
    }
}

static const pcase CASES[] = {
    {.B = 2, .T = 256, .H = 8, .Hk = 8, .D = 32}, /* the GPT's shape: whole tiles */
    {.B = 3, .T = 70, .H = 6, .Hk = 2, .D = 8},   /* GQA, a partial tile */
    {.B = 2, .T = 130, .H = 4, .Hk = 1, .D = 5},  /* MQA, D off the vector width */
    {.B = 1, .T = 1, .H = 2, .Hk = 2, .D = 4},    /* one position */
    {.B = 2, .T = 100, .H = 4, .Hk = 2, .D = 16, .learn = true, .window = 20},
    {.B = 2, .T = 90, .H = 3, .Hk = 3, .D = 8, .bidir = true, .asym = true, .learn = true},
    {.B = 3, .T = 150, .H = 4, .Hk = 2, .D = 8, .lengths = true, .segments = true},
    {.B = 2, .T = 80, .H = 4, .Hk = 4, .D = 8, .bidir = true, .lengths = true, .window = 9},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

static void compare(const pcase *c, sl_dtype dt, uint64_t seed)
{
    sl_rng r = sl_rng_seed(seed);
    pmask m;
    int64_t W = (c->H + 2 * c->Hk) * c->D;
    sl_tensor *x = tu_randn(&r, dt, sl_shape(c->B, c->T, W));
    sl_tensor *qkv_a = sl_requires_grad(tu_cast_leaf(x, dt), true);
    sl_tensor *qkv_b = sl_requires_grad(tu_cast_leaf(x, dt), true);
    sl_tensor *s = leaf_slopes(&r, c, false), *sa = c->asym ? leaf_slopes(&r, c, true) : NULL;
    sl_tensor *s_a = tu_cast_leaf(s, dt), *s_b = tu_cast_leaf(s, dt);
    sl_tensor *sa_a = sa ? tu_cast_leaf(sa, dt) : NULL, *sa_b = sa ? tu_cast_leaf(sa, dt) : NULL;
    sl_requires_grad(s_a, c->learn);
    sl_requires_grad(s_b, c->learn);
    sl_tensor *ya = packed(c, &m, qkv_a, s_a, sa_a), *yb = by_views(c, &m, qkv_b, s_b, sa_b);
    ck_assert_msg(ya && yb, "%s", sl_error_message());
    same_bits("output", c, dt, ya, yb);
    sl_tensor *g = tu_randn(&r, dt, sl_shape(c->B, c->T, c->H * c->D));
    ck_assert_msg(sl_backward_ex(ya, g, 0) && sl_backward_ex(yb, g, 0), "%s", sl_error_message());
    same_bits("dqkv", c, dt, qkv_a->grad, qkv_b->grad);
    if (c->learn) same_bits("dslopes", c, dt, s_a->grad, s_b->grad);
    if (c->asym) same_bits("dslopes_after", c, dt, sa_a->grad, sa_b->grad);
}

START_TEST(packed_equals_split_heads_bitwise)
{
    for (int t = 0; t < N_CASES; t++) {
        compare(&CASES[t], SL_F64, 40 + t);
        compare(&CASES[t], SL_F32, 60 + t);
    }
}
END_TEST

/* A qkv that is itself a view (every other row of a wider tensor) is read as its values. */
START_TEST(strided_qkv_is_read_as_its_values)
{
    pcase c = {.B = 2, .T = 40, .H = 4, .Hk = 2, .D = 8};
    pmask m;
    sl_rng r = sl_rng_seed(5);
    sl_tensor *wide = tu_randn(&r, SL_F64, sl_shape(2, 40, 2 * 64));
    sl_tensor *view = sl_narrow(wide, 2, 64, 64), *copy = sl_contiguous(view);
    sl_tensor *a = packed(&c, &m, view, SL_NONE, NULL), *b = packed(&c, &m, copy, SL_NONE, NULL);
    ck_assert_msg(a && b, "%s", sl_error_message());
    same_bits("output of a view", &c, SL_F64, a, b);
}
END_TEST

typedef struct {
    pcase c;
    pmask m;
} gc_ctx;

static sl_tensor *call_packed(sl_tensor *const *in, int n, void *user)
{
    gc_ctx *g = user;
    return packed(&g->c, &g->m, in[0], in[1], n > 2 ? in[2] : NULL);
}

START_TEST(gradcheck_f64)
{
    static const pcase cs[] = {
        {.B = 2, .T = 7, .H = 4, .Hk = 2, .D = 3, .learn = true},
        {.B = 2,
         .T = 6,
         .H = 2,
         .Hk = 1,
         .D = 3,
         .bidir = true,
         .asym = true,
         .learn = true,
         .lengths = true},
        {.B = 1, .T = 9, .H = 2, .Hk = 2, .D = 2, .learn = true, .window = 3},
    };
    sl_rng r = sl_rng_seed(9);
    for (size_t t = 0; t < sizeof cs / sizeof *cs; t++) {
        gc_ctx g = {.c = cs[t]};
        int64_t W = (g.c.H + 2 * g.c.Hk) * g.c.D;
        sl_tensor *in[3] = {sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(g.c.B, g.c.T, W)), true),
                            leaf_slopes(&r, &g.c, false),
                            g.c.asym ? leaf_slopes(&r, &g.c, true) : NULL};
        tu_gradcheck(call_packed, g.c.asym ? 3 : 2, in, &g);
        in[0] = tu_noncontig(in[0]);
        tu_gradcheck(call_packed, g.c.asym ? 3 : 2, in, &g);
    }
}
END_TEST

START_TEST(thread_counts_agree_bitwise)
{
    int prev = sl_get_num_threads();
    pcase c = {.B = 2, .T = 200, .H = 4, .Hk = 2, .D = 16, .learn = true, .lengths = true};
    pmask m;
    sl_rng r = sl_rng_seed(21);
    int64_t W = (c.H + 2 * c.Hk) * c.D;
    sl_tensor *x = tu_randn(&r, SL_F32, sl_shape(c.B, c.T, W));
    sl_tensor *g = tu_randn(&r, SL_F32, sl_shape(c.B, c.T, c.H * c.D));
    sl_tensor *want[2] = {NULL, NULL};
    for (int threads = 1; threads <= 4; threads *= 2) {
        sl_set_num_threads(threads);
        sl_tensor *qkv = sl_requires_grad(tu_cast_leaf(x, SL_F32), true);
        sl_tensor *y = packed(&c, &m, qkv, SL_NONE, NULL);
        ck_assert(y && sl_backward_ex(y, g, 0));
        if (!want[0]) {
            want[0] = y;
            want[1] = qkv->grad;
            continue;
        }
        same_bits("output across threads", &c, SL_F32, y, want[0]);
        same_bits("dqkv across threads", &c, SL_F32, qkv->grad, want[1]);
    }
    sl_set_num_threads(prev);
}
END_TEST

/* ---------------------------------------------------------------- heads-major qkv */

/* sl_linear_heads against sl_linear, split by views and made contiguous: the same numbers,
 * forward and every gradient, in f32 and f64, with and without bias, several row chunks, a
 * strided input, and an input without a gradient (then dL/dy is laid out as rows in a pass of
 * its own, not by the dx chunks). */
START_TEST(linear_heads_equals_linear_then_split)
{
    static const struct {
        int64_t B, T, in, out, hd;
        bool bias, strided, no_dx;
    } cs[] = {{3, 100, 24, 48, 8, true, false, false},
              {4, 300, 64, 96, 32, true, false, false}, /* 1200 rows: several gemm chunks */
              {4, 300, 64, 96, 32, true, false, true},
              {2, 7, 5, 6, 3, false, true, false},
              {2, 7, 5, 6, 3, true, false, true},
              {1, 1, 4, 4, 4, true, true, false}};
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++)
        for (int f = 0; f < 2; f++) {
            sl_dtype dt = f ? SL_F64 : SL_F32;
            sl_rng r = sl_rng_seed(70 + i);
            int64_t B = cs[i].B, T = cs[i].T, P = cs[i].out / cs[i].hd, hd = cs[i].hd;
            sl_tensor *x0 = tu_randn(&r, dt, sl_shape(B, T, cs[i].in));
            sl_tensor *w0 = tu_randn(&r, dt, sl_shape(cs[i].out, cs[i].in));
            sl_tensor *b0 = tu_randn(&r, dt, sl_shape(cs[i].out));
            sl_tensor *g = tu_randn(&r, dt, sl_shape(B, P, T, hd));
            sl_tensor *leaf[2][3];
            sl_tensor *y[2];
            for (int k = 0; k < 2; k++) {
                sl_tensor *xc = tu_cast_leaf(x0, dt);
                leaf[k][0] =
                    sl_requires_grad(cs[i].strided ? tu_noncontig(xc) : xc, !cs[i].no_dx);
                leaf[k][1] = sl_requires_grad(tu_cast_leaf(w0, dt), true);
                leaf[k][2] = cs[i].bias ? sl_requires_grad(tu_cast_leaf(b0, dt), true) : SL_NONE;
                sl_tensor *x = leaf[k][0];
                if (k == 0) {
                    y[k] = sl_linear_heads(x, leaf[k][1], leaf[k][2], hd);
                } else {
                    sl_tensor *l = sl_linear(x, leaf[k][1], leaf[k][2], SL_ACT_NONE);
                    l = sl_reshape(l, 4, (int64_t[]){B, T, P, hd});
                    y[k] = sl_contiguous(sl_permute(l, (int[]){0, 2, 1, 3}));
                }
                ck_assert_msg(y[k] && sl_backward_ex(y[k], g, 0), "%s", sl_error_message());
            }
            pcase c = {.B = B, .T = T, .H = P, .Hk = 0, .D = hd};
            same_bits("sl_linear_heads output", &c, dt, y[0], y[1]);
            if (cs[i].no_dx) ck_assert(!leaf[0][0]->grad && !leaf[1][0]->grad);
            else same_bits("sl_linear_heads dx", &c, dt, leaf[0][0]->grad, leaf[1][0]->grad);
            same_bits("sl_linear_heads dW", &c, dt, leaf[0][1]->grad, leaf[1][1]->grad);
            if (cs[i].bias)
                same_bits("sl_linear_heads db", &c, dt, leaf[0][2]->grad, leaf[1][2]->grad);
        }
}
END_TEST

static sl_tensor *call_linear_heads(sl_tensor *const *in, int n, void *user)
{
    (void)n;
    return sl_linear_heads(in[0], in[1], in[2], *(const int64_t *)user);
}

/* The projection made head by head into the 4-D packed attention, against the 3-D packed path
 * on sl_linear's output: the same output and the same gradients of x, W and b. */
typedef struct {
    int H, Hk;
    int64_t D;
    bool heads;
} proj_ctx;

static sl_tensor *project_attend(sl_tensor *const *in, int n, void *user)
{
    (void)n;
    const proj_ctx *p = user;
    sl_tensor *qkv = p->heads ? sl_linear_heads(in[0], in[1], in[2], p->D)
                              : sl_linear(in[0], in[1], in[2], SL_ACT_NONE);
    return sl_alibi_attention_packed(qkv, p->H, p->Hk, SL_NONE, NULL);
}

START_TEST(heads_major_qkv_equals_rows)
{
    static const proj_ctx ps[] = {{8, 8, 32, false}, {6, 2, 8, false}, {4, 1, 5, false}};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        for (int f = 0; f < 2; f++) {
            sl_dtype dt = f ? SL_F64 : SL_F32;
            sl_rng r = sl_rng_seed(90 + i);
            int64_t B = 2, T = 130, C = 24, W = (ps[i].H + 2 * ps[i].Hk) * ps[i].D;
            sl_tensor *x0 = tu_randn(&r, dt, sl_shape(B, T, C));
            sl_tensor *w0 = tu_randn(&r, dt, sl_shape(W, C));
            sl_tensor *b0 = tu_randn(&r, dt, sl_shape(W));
            sl_tensor *g = tu_randn(&r, dt, sl_shape(B, T, ps[i].H * ps[i].D));
            sl_tensor *in[2][3], *y[2];
            for (int k = 0; k < 2; k++) {
                proj_ctx p = ps[i];
                p.heads = k == 0;
                in[k][0] = sl_requires_grad(tu_cast_leaf(x0, dt), true);
                in[k][1] = sl_requires_grad(tu_cast_leaf(w0, dt), true);
                in[k][2] = sl_requires_grad(tu_cast_leaf(b0, dt), true);
                y[k] = project_attend(in[k], 3, &p);
                ck_assert_msg(y[k] && sl_backward_ex(y[k], g, 0), "%s", sl_error_message());
            }
            pcase c = {.B = B, .T = T, .H = ps[i].H, .Hk = ps[i].Hk, .D = ps[i].D};
            same_bits("heads-major output", &c, dt, y[0], y[1]);
            for (int e = 0; e < 3; e++)
                same_bits(e == 0 ? "heads-major dx" : e == 1 ? "heads-major dW" : "heads-major db",
                          &c, dt, in[0][e]->grad, in[1][e]->grad);
        }
}
END_TEST

START_TEST(heads_major_gradchecks_f64)
{
    sl_rng r = sl_rng_seed(31);
    int64_t hd = 3;
    sl_tensor *in[3] = {sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(2, 5, 4)), true),
                        sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(6, 4)), true),
                        sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(6)), true)};
    tu_gradcheck(call_linear_heads, 3, in, &hd);
    proj_ctx p = {2, 1, 2, true}; /* (2 + 2) heads of 2 */
    sl_tensor *pin[3] = {sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(2, 6, 3)), true),
                         sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(8, 3)), true),
                         sl_requires_grad(tu_randn(&r, SL_F64, sl_shape(8)), true)};
    tu_gradcheck(project_attend, 3, pin, &p);
}
END_TEST

START_TEST(errors_name_the_op_and_shapes)
{
    sl_tensor *x = sl_zeros(SL_F32, sl_shape(2, 5, 30));
#define EXPECT(call, code, msg)                                                                    \
    do {                                                                                           \
        ck_assert_ptr_null(call);                                                                  \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)
    EXPECT(sl_alibi_attention_packed(x, 4, 2, SL_NONE, NULL), SL_ERR_SHAPE,
           "sl_alibi_attention_packed: qkv [2,5,30] must be 3-D [B,T,(H + 2 Hk) D], non-empty, "
           "its last dim a multiple of 8 (4 query heads and twice 2 kv heads)");
    EXPECT(sl_alibi_attention_packed(x, 4, 3, SL_NONE, NULL), SL_ERR_ARG,
           "sl_alibi_attention_packed: n_heads 4, n_kv_heads 3: both must be >= 1 and n_heads a "
           "multiple of n_kv_heads");
    EXPECT(sl_alibi_attention_packed(sl_zeros(SL_F32, sl_shape(5, 30)), 3, 1, SL_NONE, NULL),
           SL_ERR_SHAPE,
           "sl_alibi_attention_packed: qkv [5,30] must be 3-D [B,T,(H + 2 Hk) D], non-empty, its "
           "last dim a multiple of 5 (3 query heads and twice 1 kv heads)");
    EXPECT(sl_alibi_attention_packed(sl_zeros(SL_I32, sl_shape(2, 5, 30)), 3, 3, SL_NONE, NULL),
           SL_ERR_DTYPE, "sl_alibi_attention_packed: expected f32 or f64, got i32 [2,5,30]");
    EXPECT(sl_alibi_attention_packed(x, 6, 2, sl_alibi_slopes(4), NULL), SL_ERR_SHAPE,
           "sl_alibi_attention_packed: slopes [4] for qkv [2,5,30] of 6 heads: need one per "
           "head, [6]");
    sl_alibi_opts o = {.window = -1};
    EXPECT(sl_alibi_attention_packed(x, 6, 2, SL_NONE, &o), SL_ERR_ARG,
           "sl_alibi_attention_packed: window -1 must be >= 0 (0: no window)");
    EXPECT(sl_alibi_attention_packed(NULL, 6, 2, SL_NONE, NULL), SL_ERR_ARG,
           "sl_alibi_attention_packed: argument 'qkv' is NULL");
    EXPECT(sl_alibi_attention_packed(sl_zeros(SL_F32, sl_shape(2, 5, 4, 8)), 2, 2, SL_NONE, NULL),
           SL_ERR_SHAPE,
           "sl_alibi_attention_packed: qkv [2,5,4,8] [B,H + 2 Hk,T,D] must have 6 heads (2 query "
           "heads and twice 2 kv heads)");
    sl_tensor *w = sl_zeros(SL_F32, sl_shape(30, 8));
    EXPECT(sl_linear_heads(sl_zeros(SL_F32, sl_shape(4, 8)), w, SL_NONE, 5), SL_ERR_SHAPE,
           "sl_linear_heads: input [4,8] must be 3-D (B, T, in), non-empty");
    EXPECT(sl_linear_heads(sl_zeros(SL_F32, sl_shape(2, 4, 8)), w, SL_NONE, 0), SL_ERR_ARG,
           "sl_linear_heads: head_dim 0 must be >= 1");
    EXPECT(sl_linear_heads(sl_zeros(SL_F32, sl_shape(2, 4, 8)), w, SL_NONE, 7), SL_ERR_SHAPE,
           "sl_linear_heads: weight [30,8]: 30 outputs are not a multiple of head_dim 7");
    EXPECT(sl_linear_heads(sl_zeros(SL_F32, sl_shape(2, 4, 9)), w, SL_NONE, 5), SL_ERR_SHAPE,
           "sl_linear_heads: input [2,4,9] does not end in 8 features (weight [30,8])");
#undef EXPECT
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention_packed");
    TCase *tc = tcase_create("packed");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_timeout(tc, 600);
    tu_add_test(s, tc, packed_equals_split_heads_bitwise);
    tu_add_test(s, tc, strided_qkv_is_read_as_its_values);
    tu_add_test(s, tc, gradcheck_f64);
    tu_add_test(s, tc, thread_counts_agree_bitwise);
    tu_add_test(s, tc, linear_heads_equals_linear_then_split);
    tu_add_test(s, tc, heads_major_qkv_equals_rows);
    tu_add_test(s, tc, heads_major_gradchecks_f64);
    tu_add_test(s, tc, errors_name_the_op_and_shapes);
    tu_every_isa();
    return tu_run(s);
}
