/* nn modules and the parameter registry: names, counts, errors, clipping, initialisation,
 * values against naive loops, and float64 gradchecks of every module. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* Every parameter of ps set to normal(mean, std) values: LayerNorm-like "weight"s of size
 * (n) around 1, everything else around 0, so biases and affine parts are exercised. */
static void randomize(sl_params *ps, sl_rng *r, double std)
{
    for (int i = 0; i < sl_params_count(ps); i++) {
        const sl_param *p = sl_params_at(ps, i);
        ck_assert(sl_init_normal(p->value, r, std));
        bool norm_weight = p->value->ndim == 1 && strstr(p->name, "weight");
        if (norm_weight)
            for (int64_t k = 0; k < sl_numel(p->value); k++)
                sl_set(p->value, k, 1 + sl_get(p->value, k));
    }
}

/* The values of t as a row-major double array in the current arena. */
static double *vals(const sl_tensor *t)
{
    double *b = sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)sl_numel(t), 64);
    ck_assert_ptr_nonnull(b);
    for (int64_t i = 0; i < sl_numel(t); i++) b[i] = sl_get(t, i);
    return b;
}

/* ---------------------------------------------------------------- registry */

START_TEST(registry_names_count_find_errors)
{
    sl_params *ps = sl_params_new(SL_F64);
    ck_assert_ptr_nonnull(ps);
    ck_assert_int_eq(sl_params_dtype(ps), SL_F64);
    sl_tensor *a = sl_params_add(ps, "a.weight", sl_shape(3, 4), true);
    sl_tensor *b = sl_params_add(ps, "a.bias", sl_shape(4), false);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert(a->requires_grad && !a->node && a->dtype == SL_F64);
    ck_assert_str_eq(a->name, "a.weight");
    for (int i = 0; i < 12; i++) ck_assert(sl_get(a, i) == 0.0);
    ck_assert_int_eq(sl_params_count(ps), 2);
    ck_assert_int_eq(sl_params_numel(ps), 16);
    ck_assert_str_eq(sl_params_at(ps, 0)->name, "a.weight");
    ck_assert(sl_params_at(ps, 0)->decay && !sl_params_at(ps, 1)->decay);
    ck_assert_ptr_eq(sl_params_at(ps, 1)->value, b);
    ck_assert_ptr_eq(sl_params_find(ps, "a.bias"), b);
    ck_assert_ptr_null(sl_params_find(ps, "a.nothing"));
    ck_assert_int_eq(sl_error(), SL_OK); /* absent is not an error */

    ck_assert_ptr_null(sl_params_add(ps, "a.weight", sl_shape(2), true));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_params_add: a parameter named 'a.weight' already exists");
    sl_error_clear();
    ck_assert_ptr_null(sl_params_add(ps, "", sl_shape(2), true));
    ck_assert_str_eq(sl_error_message(), "sl_params_add: empty parameter name");
    sl_error_clear();
    char longname[SL_PARAM_NAME_MAX + 1];
    memset(longname, 'x', SL_PARAM_NAME_MAX);
    longname[SL_PARAM_NAME_MAX] = '\0';
    ck_assert_ptr_null(sl_params_add(ps, longname, sl_shape(2), true));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "is longer than 95 characters"));
    sl_error_clear();
    ck_assert_ptr_null(sl_params_at(ps, 2));
    ck_assert_str_eq(sl_error_message(), "sl_params_at: index 2 out of range for 2 parameters");
    sl_error_clear();
    ck_assert_ptr_null(sl_params_new(SL_I32));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert_int_eq(sl_params_count(ps), 2); /* failed adds left nothing behind */

    /* Many parameters: the entry array grows, earlier entries and tensors stay put. */
    const sl_param *first = sl_params_at(ps, 0);
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%d", i);
        ck_assert_ptr_nonnull(sl_params_add(ps, name, sl_shape(1), true));
    }
    ck_assert_int_eq(sl_params_count(ps), 102);
    ck_assert_ptr_eq(sl_params_find(ps, "a.weight"), a);
    ck_assert_ptr_eq(sl_params_at(ps, 0), first);
    ck_assert_str_eq(first->name, "a.weight");
    ck_assert_str_eq(sl_params_at(ps, 101)->name, "p99");
    sl_params_free(ps);
}
END_TEST

/* loss = sum(a * ca) + sum(b * cb), so dL/da = ca, dL/db = cb; c has no gradient. */
START_TEST(clip_grad_norm_matches_hand_computation)
{
    sl_params *ps = sl_params_new(SL_F32);
    sl_tensor *a = sl_params_add(ps, "a", sl_shape(2, 2), true);
    sl_tensor *b = sl_params_add(ps, "b", sl_shape(3), false);
    sl_tensor *c = sl_params_add(ps, "c", sl_shape(5), false);
    ck_assert_ptr_nonnull(c);
    const float ca[] = {1, -2, 3, 0.5f}, cb[] = {4, 0, -1};
    sl_tensor *loss = sl_add(sl_sum_all(sl_mul(a, sl_from_data(SL_F32, sl_shape(2, 2), ca))),
                             sl_sum_all(sl_mul(b, sl_from_data(SL_F32, sl_shape(3), cb))));
    ck_assert_msg(sl_backward(loss), "%s", sl_error_message());
    ck_assert_ptr_null(c->grad);
    double want = sqrt(1 + 4 + 9 + 0.25 + 16 + 0 + 1); /* 5.6789083458... */
    /* A max above the norm: the norm comes back, nothing changes. */
    ck_assert_close(sl_params_clip_grad_norm(ps, 10.0), want, 1e-12, 0);
    ck_assert_close(sl_get(a->grad, 1), -2.0, 0, 0);
    /* A max below it: every gradient scaled by max / (norm + 1e-6). */
    ck_assert_close(sl_params_clip_grad_norm(ps, 2.0), want, 1e-12, 0);
    double s = 2.0 / (want + 1e-6);
    for (int i = 0; i < 4; i++) ck_assert_close(sl_get(a->grad, i), ca[i] * s, 1e-6, 0);
    for (int i = 0; i < 3; i++) ck_assert_close(sl_get(b->grad, i), cb[i] * s, 1e-6, 0);
    ck_assert_close(sl_params_clip_grad_norm(ps, 100.0), 2.0, 1e-6, 0);
    ck_assert(isnan(sl_params_clip_grad_norm(ps, 0.0)));
    ck_assert_str_eq(sl_error_message(), "sl_params_clip_grad_norm: max_norm 0 must be > 0");
    sl_error_clear();
    sl_params_zero_grad(ps);
    for (int i = 0; i < 4; i++) ck_assert(sl_get(a->grad, i) == 0.0);
    ck_assert(sl_params_clip_grad_norm(ps, 1.0) == 0.0);
    sl_params_free(ps);
}
END_TEST

/* sl_params_zero_grad over the pool: gradients of sizes around its 64 KiB pieces, both dtypes'
 * registries, every element zeroed; and it is a write like any other, so a backward that saved
 * a gradient before it sees the change. */
START_TEST(zero_grad_every_byte_and_bumps_versions)
{
    const int64_t sizes[] = {1, 16383, 16385, 70000, 3};
    for (int d = 0; d < 2; d++) {
        sl_params *ps = sl_params_new(d ? SL_F64 : SL_F32);
        sl_tensor *p[5], *loss = NULL;
        for (int i = 0; i < 5; i++) {
            char name[8];
            snprintf(name, sizeof name, "p%d", i);
            p[i] = sl_params_add(ps, name, sl_shape(sizes[i]), true);
            ck_assert_ptr_nonnull(p[i]);
            if (i == 2) continue; /* no backward reaches p2: no gradient */
            sl_tensor *t = sl_sum_all(sl_mul_scalar(p[i], 1.5));
            loss = loss ? sl_add(loss, t) : t;
        }
        ck_assert_msg(sl_backward(loss), "%s", sl_error_message());
        ck_assert_ptr_null(p[2]->grad);
        ck_assert_double_eq(sl_get(p[3]->grad, sizes[3] - 1), 1.5);
        sl_params_zero_grad(ps);
        for (int i = 0; i < 5; i++)
            for (int64_t e = 0; p[i]->grad && e < sizes[i]; e++)
                ck_assert_msg(sl_get(p[i]->grad, e) == 0, "p%d[%lld]", i, (long long)e);

        /* a node that saved p0's gradient: zeroing it afterwards fails that backward */
        sl_tensor *x = sl_requires_grad(sl_full(d ? SL_F64 : SL_F32, sl_shape(1), 2.0), true);
        sl_tensor *y = sl_sum_all(sl_mul(x, p[0]->grad));
        sl_params_zero_grad(ps);
        ck_assert(!sl_backward(y));
        ck_assert_int_eq(sl_error(), SL_ERR_STATE);
        sl_error_clear();
        sl_params_free(ps);
    }
}
END_TEST

/* sl_params_copy: values by name, any order, dtype converted; a mismatch names itself and
 * leaves the destination as it was. */
START_TEST(params_copy_by_name_converting_dtype)
{
    sl_params *src = sl_params_new(SL_F64), *dst = sl_params_new(SL_F32);
    sl_tensor *w = sl_params_add(src, "w", sl_shape(2, 3), true);
    sl_tensor *b = sl_params_add(src, "b", sl_shape(3), false);
    sl_tensor *db = sl_params_add(dst, "b", sl_shape(3), false); /* another order */
    sl_tensor *dw = sl_params_add(dst, "w", sl_shape(2, 3), true);
    for (int i = 0; i < 6; i++) sl_set(w, i, 0.1 * i - 0.25);
    for (int i = 0; i < 3; i++) sl_set(b, i, 1.0 / 3 + i);
    ck_assert_msg(sl_params_copy(dst, src), "%s", sl_error_message());
    for (int i = 0; i < 6; i++) ck_assert(sl_get(dw, i) == (float)(0.1 * i - 0.25));
    for (int i = 0; i < 3; i++) ck_assert(sl_get(db, i) == (float)(1.0 / 3 + i));
    ck_assert(sl_params_copy(src, src));

    /* mismatches, each found before anything is written */
    sl_fill(dw, 7);
    sl_params *other = sl_params_new(SL_F64);
    sl_params_add(other, "w", sl_shape(3, 2), true);
    sl_params_add(other, "b", sl_shape(3), false);
    ck_assert(!sl_params_copy(dst, other));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(),
                     "sl_params_copy: parameter 'w' is [3,2] in the source and [2,3] in the "
                     "destination");
    sl_params_add(dst, "extra", sl_shape(1), true);
    ck_assert(!sl_params_copy(dst, src));
    ck_assert_str_eq(sl_error_message(),
                     "sl_params_copy: parameter 'extra' [1] of the destination is not in the "
                     "source");
    ck_assert(!sl_params_copy(src, dst));
    ck_assert_str_eq(sl_error_message(),
                     "sl_params_copy: parameter 'extra' [1] of the source is not in the "
                     "destination");
    for (int i = 0; i < 6; i++) ck_assert(sl_get(dw, i) == 7);
    for (int i = 0; i < 3; i++) ck_assert(sl_get(b, i) == 1.0 / 3 + i);
    ck_assert(!sl_params_copy(NULL, src));
    ck_assert_str_eq(sl_error_message(), "sl_params_copy: registry is NULL");
    sl_error_clear();
    sl_params_free(other);
    sl_params_free(dst);
    sl_params_free(src);
}
END_TEST

/* ---------------------------------------------------------------- initialisation */

typedef struct {
    double mean, std;
} stats;

static stats stats_of(const sl_tensor *t)
{
    double s = 0, ss = 0;
    int64_t n = sl_numel(t);
    for (int64_t i = 0; i < n; i++) s += sl_get(t, i);
    double mean = s / n;
    for (int64_t i = 0; i < n; i++) ss += (sl_get(t, i) - mean) * (sl_get(t, i) - mean);
    return (stats){mean, sqrt(ss / n)};
}

START_TEST(gpt2_init_statistics_and_determinism)
{
    enum { LAYERS = 4 };
    sl_gpt_config cfg = {.vocab_size = 256, .context = 64, .dim = 128, .n_layers = LAYERS,
                         .n_heads = 4, .pos = SL_POS_ALIBI, .fused_qkv = true, .seed = 7};
    sl_gpt *m = sl_gpt_new(&cfg, SL_F32);
    ck_assert_msg(m != NULL, "%s", sl_error_message());
    const double resid = 0.02 / sqrt(2.0 * LAYERS);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *p = sl_params_at(m->params, i);
        stats s = stats_of(p->value);
        const char *n = p->name;
        size_t len = strlen(n);
        bool is_bias = len > 5 && !strcmp(n + len - 5, ".bias");
        if (strstr(n, "ln")) { /* LayerNorm: ones and zeros */
            ck_assert_msg(s.std == 0 && s.mean == (is_bias ? 0.0 : 1.0), "%s", n);
        } else if (is_bias) {
            ck_assert_msg(s.std == 0 && s.mean == 0, "%s: bias not zero", n);
        } else {
            double want = strstr(n, ".proj.weight") ? resid : 0.02;
            ck_assert_msg(fabs(s.std - want) < 0.03 * want, "%s: std %g, want %g", n, s.std, want);
            ck_assert_msg(fabs(s.mean) < 0.05 * want, "%s: mean %g", n, s.mean);
        }
    }
    /* The same seed gives bitwise the same weights; another seed other weights. */
    sl_gpt *same = sl_gpt_new(&cfg, SL_F32);
    cfg.seed = 8;
    sl_gpt *other = sl_gpt_new(&cfg, SL_F32);
    ck_assert(same && other);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_tensor *a = sl_params_at(m->params, i)->value;
        ck_assert(memcmp(a->data, sl_params_at(same->params, i)->value->data,
                         sizeof(float) * (size_t)sl_numel(a)) == 0);
    }
    ck_assert(tu_max_abs_diff(m->tok->weight, other->tok->weight) > 0.01);
    sl_gpt_free(m);
    sl_gpt_free(same);
    sl_gpt_free(other);
}
END_TEST

/* ---------------------------------------------------------------- Linear, Embedding, LayerNorm */

static sl_tensor *run_linear(sl_tensor *const *in, int n, void *user)
{
    return sl_linear_forward(user, in[0]);
}

START_TEST(linear_values_and_errors)
{
    sl_rng r = sl_rng_seed(1);
    sl_params *ps = sl_params_new(SL_F64);
    sl_linear_module *m = sl_linear_new(ps, "lin", 5, 3, true, &r);
    sl_linear_module *nb = sl_linear_new(ps, "nb", 5, 3, false, &r);
    ck_assert(m && nb && !nb->bias);
    ck_assert_int_eq(m->weight->shape[0], 3);
    ck_assert_int_eq(m->weight->shape[1], 5);
    ck_assert_ptr_eq(sl_params_find(ps, "lin.bias"), m->bias);
    ck_assert_ptr_null(sl_params_find(ps, "nb.bias"));
    randomize(ps, &r, 1.0);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 4, 5));
    sl_tensor *y = sl_linear_forward(m, x);
    ck_assert_int_eq(y->ndim, 3);
    ck_assert_int_eq(y->shape[2], 3);
    double *xv = vals(x), *w = vals(m->weight), *b = vals(m->bias);
    for (int row = 0; row < 8; row++)
        for (int o = 0; o < 3; o++) {
            double s = b[o];
            for (int i = 0; i < 5; i++) s += xv[row * 5 + i] * w[o * 5 + i];
            ck_assert_close(sl_get(y, row * 3 + o), s, 1e-13, 1e-13);
        }
    /* A 1-D input. */
    sl_tensor *y1 = sl_linear_forward(nb, sl_ones(SL_F64, sl_shape(5)));
    ck_assert_int_eq(y1->ndim, 1);
    ck_assert_int_eq(y1->shape[0], 3);
    for (int o = 0; o < 3; o++) {
        double s = 0;
        for (int i = 0; i < 5; i++) s += sl_get(nb->weight, o * 5 + i);
        ck_assert_close(sl_get(y1, o), s, 1e-13, 1e-13);
    }
    ck_assert_ptr_null(sl_linear_forward(m, sl_zeros(SL_F64, sl_shape(2, 4))));
    ck_assert_str_eq(sl_error_message(),
                     "sl_linear_forward: input [2,4] does not end in 5 features (weight [3,5])");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear_forward(m, sl_zeros(SL_F32, sl_shape(2, 5))));
    ck_assert_str_eq(sl_error_message(), "sl_linear_forward: input is f32, weight is f64");
    sl_error_clear();
    /* with a residual: the same as adding it after */
    sl_tensor *res = tu_randn(&r, SL_F64, sl_shape(2, 4, 3));
    ck_assert(tu_max_abs_diff(sl_linear_forward_residual(m, x, res), sl_add(res, y)) == 0);
    ck_assert(tu_max_abs_diff(sl_linear_forward_residual(nb, x, res),
                              sl_add(res, sl_linear_forward(nb, x))) == 0);
    ck_assert_ptr_null(sl_linear_forward_residual(m, x, NULL));
    ck_assert_str_eq(sl_error_message(), "sl_linear_forward_residual: argument 'residual' is NULL");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear_forward_residual(m, x, x));
    ck_assert_str_eq(sl_error_message(), "sl_linear_residual: residual [2,4,5] does not have the "
                                         "output's shape (input [2,4,5] @ weight [3,5]: expected "
                                         "[2,4,3])");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear_forward_residual(m, sl_zeros(SL_F64, sl_shape(2, 4)), res));
    ck_assert_str_eq(sl_error_message(),
                     "sl_linear_forward: input [2,4] does not end in 5 features (weight [3,5])");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear_new(ps, "bad", 0, 3, true, &r));
    ck_assert_str_eq(sl_error_message(), "sl_linear_new: bad: sizes in 0, out 3 must be >= 1");
    sl_error_clear();
    ck_assert_ptr_null(sl_linear_new(ps, "lin", 5, 3, true, &r));
    ck_assert_str_eq(sl_error_message(), "sl_params_add: a parameter named 'lin.weight' already exists");
    sl_error_clear();
    sl_params_free(ps);
}
END_TEST

START_TEST(linear_gradcheck_with_and_without_bias)
{
    sl_rng r = sl_rng_seed(2);
    sl_params *ps = sl_params_new(SL_F64);
    sl_linear_module *m = sl_linear_new(ps, "lin", 4, 3, true, &r);
    sl_linear_module *nb = sl_linear_new(ps, "nb", 4, 3, false, &r);
    randomize(ps, &r, 1.0);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3, 4));
    tu_gradcheck(run_linear, 3, (sl_tensor *[]){x, m->weight, m->bias}, m);
    tu_gradcheck(run_linear, 2, (sl_tensor *[]){x, nb->weight}, nb);
    tu_gradcheck(run_linear, 3, (sl_tensor *[]){tu_noncontig(x), m->weight, m->bias}, m);
    sl_params_free(ps);
}
END_TEST

static sl_tensor *run_embed(sl_tensor *const *in, int n, void *user)
{
    return sl_embedding_forward(user, in[1]);
}
static sl_tensor *run_layer_norm(sl_tensor *const *in, int n, void *user)
{
    return sl_layer_norm_forward(user, in[0]);
}

START_TEST(embedding_and_layer_norm_modules)
{
    sl_rng r = sl_rng_seed(3);
    sl_params *ps = sl_params_new(SL_F64);
    sl_embedding_module *e = sl_embedding_new(ps, "tok", 6, 4, &r);
    sl_layer_norm_module *ln = sl_layer_norm_new(ps, "ln", 4, 0);
    ck_assert(e && ln);
    ck_assert(ln->eps == 1e-5);
    ck_assert(!sl_params_at(ps, 0)->decay && !sl_params_at(ps, 1)->decay);
    randomize(ps, &r, 0.5);
    const int32_t ids[] = {5, 0, 5, 2};
    sl_tensor *idx = sl_from_data(SL_I32, sl_shape(2, 2), ids);
    sl_tensor *y = sl_embedding_forward(e, idx);
    for (int i = 0; i < 4; i++)
        for (int d = 0; d < 4; d++)
            ck_assert(sl_get(y, i * 4 + d) == sl_get(e->weight, ids[i] * 4 + d));
    tu_gradcheck(run_embed, 2, (sl_tensor *[]){e->weight, idx}, e);

    /* LayerNorm against a naive loop. */
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(3, 4));
    sl_tensor *z = sl_layer_norm_forward(ln, x);
    double *xv = vals(x), *w = vals(ln->weight), *b = vals(ln->bias);
    for (int row = 0; row < 3; row++) {
        double mu = 0, var = 0;
        for (int d = 0; d < 4; d++) mu += xv[row * 4 + d] / 4;
        for (int d = 0; d < 4; d++) var += (xv[row * 4 + d] - mu) * (xv[row * 4 + d] - mu) / 4;
        for (int d = 0; d < 4; d++)
            ck_assert_close(sl_get(z, row * 4 + d),
                            (xv[row * 4 + d] - mu) / sqrt(var + 1e-5) * w[d] + b[d], 1e-12, 1e-12);
    }
    tu_gradcheck(run_layer_norm, 3, (sl_tensor *[]){x, ln->weight, ln->bias}, ln);
    ck_assert_ptr_null(sl_layer_norm_new(ps, "ln2", 4, -1));
    ck_assert_str_eq(sl_error_message(), "sl_layer_norm_new: ln2: eps -1 must be >= 0");
    sl_error_clear();
    sl_params_free(ps);
}
END_TEST

START_TEST(dropout_module)
{
    sl_rng r = sl_rng_seed(4);
    sl_tensor *x = sl_ones(SL_F32, sl_shape(4000));
    sl_dropout_module d = {0.25};
    ck_assert_ptr_eq(sl_dropout_forward(&d, x, &r, false), x); /* eval: identity */
    sl_rng r2 = r;
    sl_tensor *y = sl_dropout_forward(&d, x, &r, true), *y2 = sl_dropout_forward(&d, x, &r2, true);
    int zeros = 0;
    for (int i = 0; i < 4000; i++) {
        double v = sl_get(y, i);
        ck_assert(v == 0 || fabs(v - 1 / 0.75) < 1e-6);
        ck_assert(v == sl_get(y2, i)); /* the same stream, the same mask */
        zeros += v == 0;
    }
    ck_assert_msg(abs(zeros - 1000) < 5 * 28, "%d zeros of 4000 at p = 0.25", zeros);
    ck_assert_ptr_null(sl_dropout_forward(NULL, x, &r, true));
}
END_TEST

/* ---------------------------------------------------------------- MLP */

static sl_tensor *run_mlp(sl_tensor *const *in, int n, void *user)
{
    return sl_mlp_forward(user, in[0]);
}

static sl_tensor *run_mlp_residual(sl_tensor *const *in, int n, void *user)
{
    return sl_mlp_forward_residual(user, in[0], in[5]);
}

START_TEST(mlp_values_and_gradcheck)
{
    sl_rng r = sl_rng_seed(5);
    sl_params *ps = sl_params_new(SL_F64);
    sl_mlp *m = sl_mlp_new(ps, "mlp", 3, 5, &r);
    ck_assert_ptr_nonnull(m);
    const char *names[] = {"mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"};
    for (int i = 0; i < 4; i++) ck_assert_str_eq(sl_params_at(ps, i)->name, names[i]);
    randomize(ps, &r, 0.7);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 3));
    sl_tensor *y = sl_mlp_forward(m, x);
    double *xv = vals(x), *w1 = vals(m->fc->weight), *b1 = vals(m->fc->bias);
    double *w2 = vals(m->proj->weight), *b2 = vals(m->proj->bias);
    for (int row = 0; row < 2; row++)
        for (int o = 0; o < 3; o++) {
            double s = b2[o];
            for (int h = 0; h < 5; h++) {
                double a = b1[h];
                for (int i = 0; i < 3; i++) a += xv[row * 3 + i] * w1[h * 3 + i];
                double g = 0.5 * a * (1 + tanh(sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)));
                s += g * w2[o * 5 + h];
            }
            ck_assert_close(sl_get(y, row * 3 + o), s, 1e-12, 1e-12);
        }
    sl_tensor *in[] = {x, m->fc->weight, m->fc->bias, m->proj->weight, m->proj->bias,
                       tu_randn(&r, SL_F64, sl_shape(2, 3))};
    tu_gradcheck(run_mlp, 5, in, m);
    /* with a residual: the same values as adding it after, and its gradients */
    ck_assert(tu_max_abs_diff(sl_mlp_forward_residual(m, x, in[5]), sl_add(in[5], y)) == 0);
    tu_gradcheck(run_mlp_residual, 6, in, m);
    ck_assert_ptr_null(sl_mlp_forward_residual(m, x, NULL));
    ck_assert_str_eq(sl_error_message(), "sl_mlp_forward_residual: argument 'residual' is NULL");
    sl_error_clear();
    sl_params_free(ps);
}
END_TEST

/* ---------------------------------------------------------------- attention */

/* The paper's slopes for a power-of-two head count, h = 1..H. */
static double paper_slope(int h, int H) { return pow(2.0, -8.0 * (h + 1) / H); }

/* T5's causal bucket of distance n >= 0 (Raffel et al.; defaults 32 buckets, distance 128). */
static int t5_bucket_of(int n, int nb, int md)
{
    int exact = nb / 2;
    if (n < exact) return n;
    int b = exact + (int)(log((double)n / exact) / log((double)md / exact) * (nb - exact));
    return b < nb - 1 ? b : nb - 1;
}

/* Rotates each pair (v[d], v[d + D/2]) of a head's D features by the angle p 10000^(-2d/D). */
static void naive_rope(double *v, int D, int p)
{
    for (int d = 0; d < D / 2; d++) {
        double a = p * pow(10000.0, -2.0 * d / D), x = v[d], y = v[d + D / 2];
        v[d] = x * cos(a) - y * sin(a);
        v[d + D / 2] = x * sin(a) + y * cos(a);
    }
}

/* The bias the module's method adds to the score of query position i and key j, from its
 * parameters, in the papers' words: T5's bucket (32 buckets, distance 128); KERPLE's
 * -r1 log(1 + r2 (i - j)), r = exp of the parameters; Sandwich's sinusoidal inner product
 * (dimension D) less D/2 over 8h/H; FIRE's MLP of log(c (i - j) + 1) / log(c max(i, L) + 1),
 * each unit written out. 0 for the others. */
static double naive_bias(const sl_attention *m, int h, int i, int j)
{
    const sl_attention_config *c = &m->cfg;
    int H = c->n_heads;
    switch (c->pos) {
    case SL_POS_T5: return sl_get(m->t5_table, h * 32 + t5_bucket_of(i - j, 32, 128));
    case SL_POS_KERPLE:
        return -exp(sl_get(m->kerple_log_r1, h)) *
               log(1 + exp(sl_get(m->kerple_log_r2, h)) * (i - j));
    case SL_POS_SANDWICH: {
        int D = (int)(c->dim / H);
        double s = 0;
        for (int k = 1; k <= D / 2; k++) {
            double w = pow(10000.0, -2.0 * k / D);
            s += sin(i * w) * sin(j * w) + cos(i * w) * cos(j * w);
        }
        return (s - D / 2.0) / (8.0 * (h + 1) / H);
    }
    case SL_POS_FIRE: {
        const sl_fire_weights *f = &m->fire;
        double cc = fabs(sl_get(f->c, 0)), L = fabs(sl_get(f->l_mult, 0)) * c->fire_threshold;
        double u = log(cc * (i - j) + 1) / (log(cc * fmax(i, L) + 1) + 1e-6);
        double out = sl_get(f->fc2_bias, h);
        for (int k = 0; k < c->fire_width; k++)
            out += sl_get(f->fc2_weight, h * c->fire_width + k) *
                   fmax(0, sl_get(f->fc1_weight, k) * u + sl_get(f->fc1_bias, k));
        return out;
    }
    default: return 0;
    }
}

/* Causal attention in naive double loops, from the module's weights: x (B, T, C) -> (B, T, C).
 * W (F, C), bw (F) are the q | k | v projections stacked (F = C + 2 Hk D). pos picks the
 * positional method that acts here: ALiBi's slopes, rotary q and k, or the bias of T5, KERPLE,
 * Sandwich or FIRE (naive_bias); the others attend without positions. */
static void naive_attention(const double *x, int B, int T, int C, int H, int Hk, sl_pos pos,
                            const sl_attention *mod, const double *W, const double *bw,
                            const double *Wp, const double *bp, double *out)
{
    int D = C / H, F = C + 2 * Hk * D;
    double *qkv = calloc((size_t)B * T * F, sizeof *qkv), *y = calloc((size_t)B * T * C, 8);
    double *p = calloc((size_t)T, sizeof *p);
    for (int bt = 0; bt < B * T; bt++) {
        for (int f = 0; f < F; f++) {
            double s = bw[f];
            for (int c = 0; c < C; c++) s += x[bt * C + c] * W[f * C + c];
            qkv[bt * F + f] = s;
        }
        for (int h = 0; pos == SL_POS_ROTARY && h < H + Hk; h++) /* q heads, then k heads */
            naive_rope(qkv + bt * F + h * D, D, bt % T);
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / Hk);
            double m = pos == SL_POS_ALIBI ? paper_slope(h, H) : 0;
            for (int i = 0; i < T; i++) {
                const double *q = qkv + (b * T + i) * F + h * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *k = qkv + (b * T + j) * F + C + g * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += q[d] * k[d];
                    p[j] = s / sqrt(D) - m * (i - j);
                    p[j] += naive_bias(mod, h, i, j);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < D; d++) {
                    double s = 0;
                    for (int j = 0; j <= i; j++)
                        s += p[j] / sum * qkv[(b * T + j) * F + C + Hk * D + g * D + d];
                    y[(b * T + i) * C + h * D + d] = s;
                }
            }
        }
    for (int bt = 0; bt < B * T; bt++)
        for (int o = 0; o < C; o++) {
            double s = bp[o];
            for (int c = 0; c < C; c++) s += y[bt * C + c] * Wp[o * C + c];
            out[bt * C + o] = s;
        }
    free(qkv);
    free(y);
    free(p);
}

/* The stacked q | k | v weights and biases of either layout. */
static void stacked_qkv(const sl_attention *m, double **W, double **bw)
{
    if (m->qkv) {
        *W = vals(m->qkv->weight);
        *bw = vals(m->qkv->bias);
        return;
    }
    sl_tensor *w = sl_concat(3, (sl_tensor *[]){m->q->weight, m->k->weight, m->v->weight}, 0);
    sl_tensor *b = sl_concat(3, (sl_tensor *[]){m->q->bias, m->k->bias, m->v->bias}, 0);
    *W = vals(w);
    *bw = vals(b);
}

static sl_tensor *run_attention(sl_tensor *const *in, int n, void *user)
{
    return sl_attention_forward(user, in[0], NULL);
}

/* Every combination: fused / separate qkv, H = Hk / GQA / MQA, every positional method (those
 * that add positions to the embeddings attend without them here). Values against the naive
 * loops, then an f64 gradcheck through x and every parameter (T5's table included). */
START_TEST(attention_values_and_gradchecks)
{
    enum { B = 2, T = 5, C = 8, H = 4 };
    const int kv_heads[] = {4, 2, 1};
    for (int fused = 0; fused < 2; fused++)
        for (int kh = 0; kh < 3; kh++)
            for (int pos = 0; pos < SL_POS_COUNT; pos++) {
                sl_rng r = sl_rng_seed(100 + fused * 10 + kh * 3 + pos);
                sl_params *ps = sl_params_new(SL_F64);
                sl_attention_config cfg = {.dim = C, .n_heads = H, .n_kv_heads = kv_heads[kh],
                                           .pos = (sl_pos)pos, .fused_qkv = fused};
                sl_attention *m = sl_attention_new(ps, "attn", &cfg, &r);
                ck_assert_msg(m != NULL, "%s", sl_error_message());
                bool t5 = pos == SL_POS_T5;
                int extra = t5 + 2 * (pos == SL_POS_KERPLE) + 6 * (pos == SL_POS_FIRE);
                ck_assert_int_eq(sl_params_count(ps), (fused ? 4 : 8) + extra);
                if (t5) {
                    ck_assert_str_eq(sl_params_at(ps, sl_params_count(ps) - 1)->name,
                                     "attn.rel_bias");
                    ck_assert(m->t5_table->shape[0] == H && m->t5_table->shape[1] == 32);
                    ck_assert_int_eq(m->cfg.t5_max_distance, 128);
                } else {
                    ck_assert_ptr_null(m->t5_table);
                }
                int64_t Hk = kv_heads[kh], D = C / H;
                if (fused) ck_assert_int_eq(m->qkv->weight->shape[0], C + 2 * Hk * D);
                else ck_assert_int_eq(m->k->weight->shape[0], Hk * D);
                for (int h = 0; h < H; h++)
                    ck_assert(sl_get(m->slopes, h) == (pos == SL_POS_ALIBI ? paper_slope(h, H) : 0));
                randomize(ps, &r, 0.6);
                sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(B, T, C));
                sl_tensor *y = sl_attention_forward(m, x, NULL);
                ck_assert_msg(y != NULL, "%s", sl_error_message());
                double *W, *bw, want[B * T * C];
                stacked_qkv(m, &W, &bw);
                naive_attention(vals(x), B, T, C, H, (int)Hk, (sl_pos)pos, m, W, bw,
                                vals(m->proj->weight), vals(m->proj->bias), want);
                for (int i = 0; i < B * T * C; i++)
                    ck_assert_msg(fabs(sl_get(y, i) - want[i]) < 1e-12,
                                  "fused %d, Hk %lld, %s: element %d: %.15g vs %.15g", fused,
                                  (long long)Hk, sl_pos_name(pos), i, sl_get(y, i), want[i]);
                sl_tensor *in[16] = {x};
                for (int i = 0; i < sl_params_count(ps); i++) in[1 + i] = sl_params_at(ps, i)->value;
                tu_gradcheck(run_attention, 1 + sl_params_count(ps), in, m);
                sl_params_free(ps);
            }
}
END_TEST

/* The same weights with and without ALiBi: the first query sees only itself, so its output
 * is the same; later queries see the bias. */
START_TEST(attention_alibi_changes_the_output)
{
    sl_rng r = sl_rng_seed(6);
    sl_params *ps = sl_params_new(SL_F64);
    sl_attention_config a = {.dim = 8, .n_heads = 2, .pos = SL_POS_ALIBI, .fused_qkv = true};
    sl_attention_config n = {.dim = 8, .n_heads = 2, .pos = SL_POS_NONE, .fused_qkv = true};
    sl_attention *ma = sl_attention_new(ps, "a", &a, &r), *mn = sl_attention_new(ps, "n", &n, &r);
    ck_assert(ma && mn);
    ck_assert_int_eq(ma->cfg.n_kv_heads, 2); /* 0 means n_heads */
    sl_copy_into(mn->qkv->weight, ma->qkv->weight);
    sl_copy_into(mn->proj->weight, ma->proj->weight);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(1, 6, 8));
    sl_tensor *ya = sl_attention_forward(ma, x, NULL), *yn = sl_attention_forward(mn, x, NULL);
    /* Row 0 attends to itself only: identical. Later rows differ. */
    for (int c = 0; c < 8; c++) ck_assert_close(sl_get(ya, c), sl_get(yn, c), 1e-14, 1e-14);
    ck_assert(fabs(sl_get(ya, 5 * 8) - sl_get(yn, 5 * 8)) > 1e-6);
    sl_params_free(ps);
}
END_TEST

/* T5 with grad off goes 256 queries at a time through a scratch arena: the same output as the
 * scores of all queries at once (grad on), in one pass and decoding after a cache, and the
 * caller's arena grows by far less than one (Tq, Tk) score matrix per head. */
START_TEST(attention_t5_query_blocks_without_grad)
{
    enum { T = 600, C = 8 };
    sl_rng r = sl_rng_seed(9);
    sl_params *ps = sl_params_new(SL_F64);
    sl_attention_config c = {.dim = C, .n_heads = 2, .n_kv_heads = 1, .pos = SL_POS_T5};
    sl_attention *m = sl_attention_new(ps, "a", &c, &r);
    randomize(ps, &r, 0.5);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(1, T, C));
    sl_tensor *full = sl_attention_forward(m, x, NULL); /* grad on: all scores at once */
    ck_assert_ptr_nonnull(full);
    bool prev = sl_set_grad_enabled(false);
    size_t used = sl_arena_used(sl_arena_current());
    sl_tensor *blocked = sl_attention_forward(m, x, NULL);
    ck_assert_ptr_nonnull(blocked);
    size_t grew = sl_arena_used(sl_arena_current()) - used;
    ck_assert_msg(grew < (size_t)T * T * 8, "the arena grew by %zu bytes", grew);
    ck_assert_double_eq_tol(tu_max_abs_diff(blocked, full), 0, 1e-12);
    sl_kv_cache *kv = sl_kv_cache_new(SL_F64, 1, 1, T, C / 2);
    ck_assert_ptr_nonnull(sl_attention_forward(m, sl_narrow(x, 1, 0, 100), kv));
    sl_tensor *rest = sl_attention_forward(m, sl_narrow(x, 1, 100, T - 100), kv);
    ck_assert_ptr_nonnull(rest);
    ck_assert_double_eq_tol(tu_max_abs_diff(rest, sl_narrow(full, 1, 100, T - 100)), 0, 1e-12);
    sl_set_grad_enabled(prev);
    sl_params_free(ps);
}
END_TEST

START_TEST(attention_config_and_cache_errors)
{
    sl_rng r = sl_rng_seed(7);
    sl_params *ps = sl_params_new(SL_F32);
    sl_attention_config c = {.dim = 10, .n_heads = 4, .pos = SL_POS_ALIBI, .fused_qkv = true};
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(), "sl_attention_new: dim 10 is not a multiple of n_heads 4");
    sl_error_clear();
    c = (sl_attention_config){.dim = 12, .n_heads = 4, .n_kv_heads = 3, .pos = SL_POS_ALIBI};
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(),
                     "sl_attention_new: n_heads 4 is not a multiple of n_kv_heads 3");
    sl_error_clear();
    c = (sl_attention_config){.dim = 12, .n_heads = 4, .pos = (sl_pos)99};
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(), "sl_attention_new: unknown positional method 99");
    sl_error_clear();
    c = (sl_attention_config){.dim = 12, .n_heads = 4, .pos = SL_POS_ROTARY};
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(), "sl_attention_new: rotary needs an even head dim, not "
                                         "3 (dim 12 / 4 heads)");
    sl_error_clear();
    c = (sl_attention_config){.dim = 12, .n_heads = 4, .pos = SL_POS_T5, .t5_buckets = 8,
                              .t5_max_distance = 4};
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(), "sl_attention_new: T5 needs t5_buckets >= 2 (got 8) "
                                         "and t5_max_distance > t5_buckets / 2 (got 4)");
    sl_error_clear();
    c.t5_max_distance = 0, c.t5_table = sl_zeros(SL_F32, sl_shape(4, 16));
    ck_assert_ptr_null(sl_attention_new(ps, "a", &c, &r));
    ck_assert_str_eq(sl_error_message(), "sl_attention_new: t5_table f32 [4,16] is not "
                                         "(H, buckets) = f32 [4,8]");
    sl_error_clear();
    c = (sl_attention_config){.dim = 12, .n_heads = 4, .n_kv_heads = 2, .pos = SL_POS_ALIBI};
    sl_attention *m = sl_attention_new(ps, "a", &c, &r);
    ck_assert_ptr_nonnull(m);
    sl_tensor *x = sl_zeros(SL_F32, sl_shape(1, 3, 12));
    ck_assert_ptr_null(sl_attention_forward(m, sl_zeros(SL_F32, sl_shape(3, 12)), NULL));
    ck_assert_str_eq(sl_error_message(), "sl_attention_forward: input [3,12] is not (B, T, 12)");
    sl_error_clear();
    sl_kv_cache *kv = sl_kv_cache_new(SL_F32, 1, 2, 4, 3);
    ck_assert_ptr_nonnull(kv);
    ck_assert_ptr_null(sl_attention_forward(m, x, kv)); /* grad mode is on */
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "a KV cache needs grad mode off"));
    sl_error_clear();
    bool prev = sl_set_grad_enabled(false);
    ck_assert_ptr_nonnull(sl_attention_forward(m, x, kv));
    ck_assert_int_eq(kv->len, 3);
    ck_assert_ptr_null(sl_attention_forward(m, sl_zeros(SL_F32, sl_shape(1, 2, 12)), kv));
    ck_assert_str_eq(sl_error_message(),
                     "sl_attention_forward: KV cache full: 3 + 2 positions > capacity 4");
    sl_error_clear();
    ck_assert_int_eq(kv->len, 3);
    sl_kv_cache *wrong = sl_kv_cache_new(SL_F32, 2, 2, 4, 3);
    ck_assert_ptr_null(sl_attention_forward(m, x, wrong));
    ck_assert_str_eq(sl_error_message(), "sl_attention_forward: KV cache [2,2,4,3] does not fit "
                                         "keys (B, Hk, T, D) = [1,2,3,3]");
    sl_error_clear();
    sl_set_grad_enabled(prev);
    ck_assert_ptr_null(sl_kv_cache_new(SL_I32, 1, 1, 1, 1));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    sl_params_free(ps);
}
END_TEST

START_TEST(pos_names_parse)
{
    sl_pos p = SL_POS_NONE;
    ck_assert(sl_pos_parse("alibi", &p) && p == SL_POS_ALIBI);
    ck_assert(sl_pos_parse("none", &p) && p == SL_POS_NONE);
    ck_assert_str_eq(sl_pos_name(SL_POS_ALIBI), "alibi");
    ck_assert_str_eq(sl_pos_name(SL_POS_NONE), "none");
    const char *names[] = {"none", "alibi",  "sinusoidal", "learned", "rotary",
                           "t5",   "kerple", "sandwich",   "fire"};
    ck_assert_int_eq(SL_POS_COUNT, 9);
    for (int i = 0; i < SL_POS_COUNT; i++) {
        ck_assert_str_eq(sl_pos_name((sl_pos)i), names[i]);
        ck_assert(sl_pos_parse(names[i], &p) && p == (sl_pos)i);
    }
    ck_assert_str_eq(sl_pos_name(SL_POS_COUNT), "?");
    ck_assert(!sl_pos_parse("rope-ish", &p));
    ck_assert_str_eq(sl_error_message(),
                     "sl_pos_parse: unknown positional method 'rope-ish' "
                     "(known: none, alibi, sinusoidal, learned, rotary, t5, kerple, "
                     "sandwich, fire)");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- block */

static sl_tensor *run_block(sl_tensor *const *in, int n, void *user)
{
    return sl_block_forward(user, in[0], NULL, NULL, NULL, false);
}

START_TEST(block_is_pre_ln_residual_and_gradchecks)
{
    sl_rng r = sl_rng_seed(8);
    sl_params *ps = sl_params_new(SL_F64);
    sl_attention_config c = {.dim = 8, .n_heads = 2, .n_kv_heads = 1, .pos = SL_POS_ALIBI,
                             .fused_qkv = true};
    sl_block *b = sl_block_new(ps, "blocks.3", &c, 12, &r);
    ck_assert_ptr_nonnull(b);
    const char *names[] = {"blocks.3.ln1.weight", "blocks.3.ln1.bias", "blocks.3.attn.qkv.weight",
                           "blocks.3.attn.qkv.bias", "blocks.3.attn.proj.weight",
                           "blocks.3.attn.proj.bias", "blocks.3.ln2.weight", "blocks.3.ln2.bias",
                           "blocks.3.mlp.fc.weight", "blocks.3.mlp.fc.bias",
                           "blocks.3.mlp.proj.weight", "blocks.3.mlp.proj.bias"};
    ck_assert_int_eq(sl_params_count(ps), 12);
    for (int i = 0; i < 12; i++) ck_assert_str_eq(sl_params_at(ps, i)->name, names[i]);
    randomize(ps, &r, 0.5);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 4, 8));
    /* The same thing composed from the modules. */
    sl_tensor *h = sl_add(x, sl_attention_forward(b->attn, sl_layer_norm_forward(b->ln1, x), NULL));
    ck_assert(tu_max_abs_diff(sl_attention_forward_residual(
                                  b->attn, sl_layer_norm_forward(b->ln1, x), NULL, NULL, x),
                              h) == 0);
    ck_assert_ptr_null(sl_attention_forward_residual(b->attn, x, NULL, NULL, NULL));
    ck_assert_str_eq(sl_error_message(),
                     "sl_attention_forward_residual: argument 'residual' is NULL");
    sl_error_clear();
    sl_tensor *want = sl_add(h, sl_mlp_forward(b->mlp, sl_layer_norm_forward(b->ln2, h)));
    sl_tensor *y = sl_block_forward(b, x, NULL, NULL, NULL, false);
    ck_assert(tu_max_abs_diff(y, want) == 0);
    /* and the same gradients of x and of every parameter (the block's output projections add
     * the residual themselves: sl_linear_residual) */
    sl_tensor *gy = sl_rand_normal(&r, SL_F64, sl_shape(2, 4, 8), 0, 1), *grads[2][13];
    for (int fused = 0; fused < 2; fused++) {
        sl_zero_grad(x);
        sl_params_zero_grad(ps);
        sl_tensor *out = want;
        if (fused) out = sl_block_forward(b, x, NULL, NULL, NULL, false);
        ck_assert_msg(sl_backward_ex(out, gy, SL_RETAIN_GRAPH), "%s", sl_error_message());
        grads[fused][0] = sl_mul_scalar(x->grad, 1.0);
        for (int i = 0; i < 12; i++)
            grads[fused][1 + i] = sl_mul_scalar(sl_params_at(ps, i)->value->grad, 1.0);
    }
    for (int i = 0; i < 13; i++)
        ck_assert_msg(tu_max_abs_diff(grads[0][i], grads[1][i]) == 0, "gradient %d differs", i);
    /* With dropout while training: on both residual branches, in that order. */
    sl_dropout_module drop = {0.5};
    sl_rng r1 = sl_rng_seed(9), r2 = r1;
    sl_tensor *yd = sl_block_forward(b, x, NULL, &drop, &r1, true);
    h = sl_add(x, sl_dropout(sl_attention_forward(b->attn, sl_layer_norm_forward(b->ln1, x), NULL),
                             0.5, &r2, true));
    want = sl_add(h, sl_dropout(sl_mlp_forward(b->mlp, sl_layer_norm_forward(b->ln2, h)), 0.5,
                                &r2, true));
    ck_assert(tu_max_abs_diff(yd, want) == 0);
    ck_assert(tu_max_abs_diff(yd, y) > 1e-3);
    ck_assert(tu_max_abs_diff(sl_block_forward(b, x, NULL, &drop, &r1, false), y) == 0);
    sl_tensor *in[13] = {x};
    for (int i = 0; i < 12; i++) in[1 + i] = sl_params_at(ps, i)->value;
    tu_gradcheck(run_block, 13, in, b);
    sl_params_free(ps);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("nn");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, registry_names_count_find_errors);
    tu_add_test(s, tc, clip_grad_norm_matches_hand_computation);
    tu_add_test(s, tc, zero_grad_every_byte_and_bumps_versions);
    tu_add_test(s, tc, params_copy_by_name_converting_dtype);
    tu_add_test(s, tc, gpt2_init_statistics_and_determinism);
    tu_add_test(s, tc, linear_values_and_errors);
    tu_add_test(s, tc, linear_gradcheck_with_and_without_bias);
    tu_add_test(s, tc, embedding_and_layer_norm_modules);
    tu_add_test(s, tc, dropout_module);
    tu_add_test(s, tc, mlp_values_and_gradcheck);
    tu_add_test(s, tc, attention_values_and_gradchecks);
    tu_add_test(s, tc, attention_alibi_changes_the_output);
    tu_add_test(s, tc, attention_t5_query_blocks_without_grad);
    tu_add_test(s, tc, attention_config_and_cache_errors);
    tu_add_test(s, tc, pos_names_parse);
    tu_add_test(s, tc, block_is_pre_ln_residual_and_gradchecks);
    return tu_run(s);
}
