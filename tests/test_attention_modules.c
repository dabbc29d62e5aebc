/* Attention and blocks for encoders and masked batches (issue 9): bidirectional attention with
 * every positional method (T5's bidirectional buckets), windows, padding and packed-document
 * masks, fixed, learned and asymmetric ALiBi slopes; module gradchecks per option, T5's masked
 * path against the fused kernel's, padding and packing against separate sequences, KV-cache
 * decoding with a window against a full recompute, learned slopes through a GPT checkpoint, and
 * the errors. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

/* Every parameter to normal(0, std) (and T5 tables too), so that tests see non-trivial values;
 * learned slopes keep their initial values plus a little noise. */
static void randomize(sl_params *ps, sl_rng *r, double std)
{
    for (int i = 0; i < sl_params_count(ps); i++) {
        const sl_param *p = sl_params_at(ps, i);
        if (strstr(p->name, "log_slopes")) {
            for (int64_t h = 0; h < sl_numel(p->value); h++)
                sl_set(p->value, h, sl_get(p->value, h) + 0.1 * sl_rng_normal(r));
            continue;
        }
        sl_init_normal(p->value, r, std);
    }
}

static sl_tensor *lengths_of(int n, const int32_t *v)
{
    return sl_from_data(SL_I32, sl_shape(n), v);
}

typedef struct {
    const sl_attention *m;
    const sl_attention_mask *mask;
} attn_call;

static sl_tensor *run_attention(sl_tensor *const *in, int n, void *user)
{
    const attn_call *a = user;
    return sl_attention_forward_masked(a->m, in[0], NULL, a->mask);
}

/* Gradcheck of the module through x and every parameter. */
static void gradcheck_module(sl_params *ps, const sl_attention *m, sl_tensor *x,
                             const sl_attention_mask *mask)
{
    sl_tensor *in[16] = {x};
    ck_assert_int_le(sl_params_count(ps), 15);
    for (int i = 0; i < sl_params_count(ps); i++) in[1 + i] = sl_params_at(ps, i)->value;
    attn_call a = {m, mask};
    tu_gradcheck(run_attention, 1 + sl_params_count(ps), in, &a);
}

/* ---------------------------------------------------------------- T5's bidirectional buckets */

/* T5's rule, as the HuggingFace / mesh_tensorflow code writes it with bidirectional=True, from
 * relative_position = memory_position - query_position = j - p_i. */
static int t5_rule_bidir(int64_t relative_position, int num_buckets, int max_distance)
{
    int ret = 0;
    int64_t n = -relative_position;
    num_buckets /= 2;
    ret += (n < 0) * num_buckets;
    n = n < 0 ? -n : n;
    int max_exact = num_buckets / 2;
    if (n < max_exact) return ret + (int)n;
    int64_t large =
        max_exact + (int64_t)(log((double)n / max_exact) / log((double)max_distance / max_exact) *
                              (num_buckets - max_exact));
    return ret + (int)(large < num_buckets - 1 ? large : num_buckets - 1);
}

START_TEST(t5_bidirectional_buckets_follow_t5)
{
    /* T5's encoder defaults, 32 buckets up to 128: literal values of a few distances */
    ck_assert_int_eq(sl_t5_bucket_bidirectional(0, 32, 128), 0);
    ck_assert_int_eq(sl_t5_bucket_bidirectional(7, 32, 128), 7);
    ck_assert_int_eq(sl_t5_bucket_bidirectional(-1, 32, 128), 17);
    ck_assert_int_eq(sl_t5_bucket_bidirectional(-7, 32, 128), 23);
    ck_assert_int_eq(sl_t5_bucket_bidirectional(1000, 32, 128), 15);
    ck_assert_int_eq(sl_t5_bucket_bidirectional(-1000, 32, 128), 31);
    int settings[][2] = {{32, 128}, {8, 20}, {12, 40}, {5, 9}, {4, 2}};
    for (int s = 0; s < 5; s++)
        for (int64_t n = -300; n <= 300; n++)
            ck_assert_int_eq(sl_t5_bucket_bidirectional(n, settings[s][0], settings[s][1]),
                             t5_rule_bidir(-n, settings[s][0], settings[s][1]));
    ck_assert_int_eq(sl_t5_bucket_bidirectional(1, 3, 128), -1);
    ck_assert_str_eq(sl_error_message(),
                     "sl_t5_bucket_bidirectional: n_buckets 3 must be >= 4 (two halves of >= 2)");
    sl_error_clear();
    ck_assert_int_eq(sl_t5_bucket_bidirectional(1, 32, 8), -1);
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
}
END_TEST

static sl_tensor *call_t5_bidir(sl_tensor *const *in, int n, void *user)
{
    const int64_t *t = user;
    return sl_t5_bias_bidirectional(in[0], t[0], t[1], (int)t[2]);
}

/* Values (query rows bottom-right aligned), and the gradient into the buckets. */
START_TEST(t5_bidirectional_bias_values_and_gradcheck)
{
    sl_rng r = sl_rng_seed(3);
    int64_t H = 3, NB = 10, MD = 12;
    sl_tensor *table = tu_randn(&r, SL_F64, sl_shape(H, NB));
    int64_t sizes[][2] = {{7, 7}, {3, 9}, {9, 4}, {1, 1}};
    for (int s = 0; s < 4; s++) {
        int64_t tq = sizes[s][0], tk = sizes[s][1];
        sl_tensor *b = sl_t5_bias_bidirectional(table, tq, tk, (int)MD);
        ck_assert_msg(b, "%s", sl_error_message());
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < tq; i++)
                for (int64_t j = 0; j < tk; j++) {
                    int64_t p = tk - tq + i;
                    ck_assert(sl_get(b, (h * tq + i) * tk + j) ==
                              sl_get(table, h * NB + t5_rule_bidir(j - p, (int)NB, (int)MD)));
                }
        int64_t args[3] = {tq, tk, MD};
        tu_gradcheck(call_t5_bidir, 1, &table, args);
    }
    ck_assert_ptr_null(sl_t5_bias_bidirectional(sl_zeros(SL_F64, sl_shape(2, 3)), 4, 4, 10));
    ck_assert_str_eq(sl_error_message(),
                     "sl_t5_bias_bidirectional: n_buckets 3 must be >= 4 (two halves of >= 2)");
    sl_error_clear();
}
END_TEST

/* ---------------------------------------------------------------- module gradchecks */

/* One small attention per option, f64, gradchecked through x and every parameter (learned
 * slopes, T5's table, KERPLE's and FIRE's parameters included). */
START_TEST(module_gradcheck_each_option)
{
    enum { B = 2, T = 6, C = 8, H = 2 };
    int32_t len[B] = {6, 4}, seg[B * T] = {0, 0, 0, 1, 1, 1, 3, 3, 4, 4, 4, 4};
    sl_attention_mask pad = {.lengths = lengths_of(B, len)};
    sl_attention_mask packed = {.segments = sl_from_data(SL_I32, sl_shape(B, T), seg)};
    sl_attention_mask both = {pad.lengths, packed.segments};
    struct {
        sl_attention_config c;
        const sl_attention_mask *mask;
    } cases[] = {
        {{.pos = SL_POS_ALIBI, .bidirectional = true}, NULL},
        {{.pos = SL_POS_ALIBI, .bidirectional = true}, &both},
        {{.pos = SL_POS_ALIBI, .window = 2}, &pad},
        {{.pos = SL_POS_ALIBI, .bidirectional = true, .window = 3}, &packed},
        {{.pos = SL_POS_ALIBI, .slopes = SL_SLOPES_LEARNED}, NULL},
        {{.pos = SL_POS_ALIBI, .slopes = SL_SLOPES_LEARNED, .slope_scale = 4}, &both},
        {{.pos = SL_POS_ALIBI, .bidirectional = true, .asymmetric = true}, &pad},
        {{.pos = SL_POS_ALIBI,
          .bidirectional = true,
          .asymmetric = true,
          .slopes = SL_SLOPES_LEARNED},
         &both},
        {{.pos = SL_POS_T5, .bidirectional = true, .t5_buckets = 8, .t5_max_distance = 6}, NULL},
        {{.pos = SL_POS_T5, .bidirectional = true, .t5_buckets = 8, .t5_max_distance = 6}, &both},
        {{.pos = SL_POS_T5, .window = 3, .t5_buckets = 8, .t5_max_distance = 6}, &pad},
        {{.pos = SL_POS_KERPLE, .bidirectional = true}, &both},
        {{.pos = SL_POS_KERPLE, .window = 3}, &pad},
        {{.pos = SL_POS_SANDWICH, .bidirectional = true, .sandwich_dim = 6}, &packed},
        {{.pos = SL_POS_SANDWICH}, &pad},
        {{.pos = SL_POS_FIRE, .fire_width = 4, .fire_threshold = 2.5}, &both},
        {{.pos = SL_POS_FIRE, .bidirectional = true, .fire_width = 3, .fire_threshold = 3.5}, NULL},
        {{.pos = SL_POS_ROTARY, .bidirectional = true, .window = 4}, &both},
        {{.pos = SL_POS_NONE, .bidirectional = true}, &packed},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        sl_rng r = sl_rng_seed(40 + t);
        sl_params *ps = sl_params_new(SL_F64);
        sl_attention_config c = cases[t].c;
        c.dim = C, c.n_heads = H, c.n_kv_heads = t % 2 ? 1 : 2, c.fused_qkv = t % 3 == 0;
        sl_attention *m = sl_attention_new(ps, "attn", &c, &r);
        ck_assert_msg(m, "case %zu: %s", t, sl_error_message());
        randomize(ps, &r, 0.5);
        gradcheck_module(ps, m, tu_randn(&r, SL_F64, sl_shape(B, T, C)), cases[t].mask);
        sl_params_free(ps);
    }
}
END_TEST

/* ---------------------------------------------------------------- learned and asymmetric slopes */

/* Learned slopes are parameters named "<name>.log_slopes" (and "<name>.log_slopes_after"),
 * without weight decay, holding log of the paper's slopes (times slope_scale; after: those of
 * the pair-swapped heads); fixed ones are constants, and at initialisation both give the same
 * output. */
START_TEST(learned_slopes_are_named_parameters_initialised_to_the_papers)
{
    enum { C = 12, H = 3 };
    sl_rng r = sl_rng_seed(5);
    sl_params *ps = sl_params_new(SL_F64);
    sl_attention_config f = {.dim = C,
                             .n_heads = H,
                             .pos = SL_POS_ALIBI,
                             .bidirectional = true,
                             .asymmetric = true,
                             .slope_scale = 2};
    sl_attention_config l = f;
    l.slopes = SL_SLOPES_LEARNED;
    sl_attention *mf = sl_attention_new(ps, "fixed", &f, &r);
    int before = sl_params_count(ps);
    sl_attention *ml = sl_attention_new(ps, "enc.0.attn", &l, &r);
    ck_assert(mf && ml);
    ck_assert_int_eq(sl_params_count(ps) - before, before + 2); /* the same linears + 2 */
    ck_assert_ptr_null(ml->slopes);
    ck_assert_ptr_null(ml->slopes_after);
    ck_assert_ptr_null(mf->log_slopes);
    ck_assert(sl_params_find(ps, "enc.0.attn.log_slopes") == ml->log_slopes);
    ck_assert(sl_params_find(ps, "enc.0.attn.log_slopes_after") == ml->log_slopes_after);
    for (int i = 0; i < sl_params_count(ps); i++)
        if (strstr(sl_params_at(ps, i)->name, "log_slopes")) ck_assert(!sl_params_at(ps, i)->decay);
    const int swapped[H] = {1, 0, 2}; /* pairs (0, 1), (2, 3), ...; the odd one out keeps its own */
    for (int h = 0; h < H; h++) {
        ck_assert_double_eq(sl_get(mf->slopes, h), 2 * sl_alibi_slope(h, H));
        ck_assert_double_eq(sl_get(mf->slopes_after, h), 2 * sl_alibi_slope(swapped[h], H));
        ck_assert_double_eq(sl_get(ml->log_slopes, h), log(2 * sl_alibi_slope(h, H)));
        ck_assert_double_eq(sl_get(ml->log_slopes_after, h),
                            log(2 * sl_alibi_slope(swapped[h], H)));
    }
    /* the same weights: the same output (exp(log m) is m to rounding) */
    sl_copy_into(ml->q->weight, mf->q->weight), sl_copy_into(ml->q->bias, mf->q->bias);
    sl_copy_into(ml->k->weight, mf->k->weight), sl_copy_into(ml->k->bias, mf->k->bias);
    sl_copy_into(ml->v->weight, mf->v->weight), sl_copy_into(ml->v->bias, mf->v->bias);
    sl_copy_into(ml->proj->weight, mf->proj->weight);
    sl_copy_into(ml->proj->bias, mf->proj->bias);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 9, C));
    ck_assert_double_le(
        tu_max_rel_diff(sl_attention_forward(ml, x, NULL), sl_attention_forward(mf, x, NULL)),
        1e-14);
    sl_params_free(ps);
}
END_TEST

/* Symmetric bidirectional ALiBi cannot tell a sequence from its reverse: the output of the
 * reversed input is the reversed output. Asymmetric slopes can. */
START_TEST(symmetric_slopes_cannot_see_direction)
{
    enum { T = 11, C = 8 };
    for (int asym = 0; asym < 2; asym++) {
        sl_rng r = sl_rng_seed(6);
        sl_params *ps = sl_params_new(SL_F64);
        sl_attention_config c = {
            .dim = C, .n_heads = 2, .pos = SL_POS_ALIBI, .bidirectional = true, .asymmetric = asym};
        sl_attention *m = sl_attention_new(ps, "a", &c, &r);
        randomize(ps, &r, 0.5);
        sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(1, T, C));
        sl_tensor *xr = sl_empty(SL_F64, sl_shape(1, T, C));
        for (int64_t t = 0; t < T; t++)
            sl_copy_into(sl_narrow(xr, 1, T - 1 - t, 1), sl_narrow(x, 1, t, 1));
        sl_tensor *y = sl_attention_forward(m, x, NULL), *yr = sl_attention_forward(m, xr, NULL);
        double worst = 0;
        for (int64_t t = 0; t < T; t++) {
            double d = tu_max_abs_diff(sl_narrow(yr, 1, T - 1 - t, 1), sl_narrow(y, 1, t, 1));
            worst = d > worst ? d : worst;
        }
        if (asym) ck_assert_double_gt(worst, 1e-3);
        else ck_assert_double_le(worst, 1e-13);
        sl_params_free(ps);
    }
}
END_TEST

/* ---------------------------------------------------------------- masks */

/* T5 with a zero table is plain attention: its composed, masked path (mask, rows that see
 * nothing zeroed) equals the fused kernel's (SL_POS_NONE) on the same weights, for every mask,
 * causal and bidirectional, with windows; with grad on (all scores) and off (query blocks). */
START_TEST(t5_masked_path_matches_the_fused_kernel)
{
    enum { B = 3, C = 8 };
    const int64_t Ts[] = {9, 300};
    for (int ti = 0; ti < 2; ti++) {
        int64_t T = Ts[ti];
        int32_t len[B] = {(int32_t)T, (int32_t)T / 2, 0};
        int32_t *seg = malloc(sizeof(int32_t) * (size_t)(B * T));
        for (int64_t e = 0; e < B * T; e++) seg[e] = (int32_t)((e % T) * 3 / T + (e == 4));
        sl_attention_mask masks[] = {
            {NULL, NULL},
            {lengths_of(B, len), NULL},
            {NULL, sl_from_data(SL_I32, sl_shape(B, T), seg)},
            {lengths_of(B, len), sl_from_data(SL_I32, sl_shape(B, T), seg)}};
        free(seg);
        for (int bidir = 0; bidir < 2; bidir++)
            for (int w = 0; w < 2; w++)
                for (int k = 0; k < 4; k++) {
                    sl_rng r = sl_rng_seed(7);
                    sl_params *ps = sl_params_new(SL_F64);
                    sl_attention_config ct = {.dim = C,
                                              .n_heads = 2,
                                              .n_kv_heads = 1,
                                              .pos = SL_POS_T5,
                                              .bidirectional = bidir,
                                              .window = w ? 5 : 0};
                    sl_attention_config cn = ct;
                    cn.pos = SL_POS_NONE;
                    sl_attention *mt = sl_attention_new(ps, "t", &ct, &r);
                    sl_attention *mn = sl_attention_new(ps, "n", &cn, &r);
                    randomize(ps, &r, 0.5);
                    sl_fill(mt->t5_table, 0);
                    sl_linear_module *lt[] = {mt->q, mt->k, mt->v, mt->proj};
                    sl_linear_module *ln[] = {mn->q, mn->k, mn->v, mn->proj};
                    for (int i = 0; i < 4; i++) {
                        sl_copy_into(lt[i]->weight, ln[i]->weight);
                        sl_copy_into(lt[i]->bias, ln[i]->bias);
                    }
                    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(B, T, C));
                    for (int g = 0; g < 2; g++) {
                        bool prev = sl_set_grad_enabled(g == 0);
                        sl_tensor *yt = sl_attention_forward_masked(mt, x, NULL, &masks[k]);
                        sl_tensor *yn = sl_attention_forward_masked(mn, x, NULL, &masks[k]);
                        sl_set_grad_enabled(prev);
                        ck_assert_msg(yt && yn, "%s", sl_error_message());
                        double d = tu_max_rel_diff(yt, yn);
                        ck_assert_msg(d <= 1e-12, "T %lld bidir %d window %d mask %d grad %d: %g",
                                      (long long)T, bidir, w, k, g == 0, d);
                    }
                    sl_params_free(ps);
                }
    }
}
END_TEST

/* The module under each positional method that sees only distances (ALiBi, T5, rotary, none,
 * KERPLE, Sandwich; not FIRE, whose normaliser is the query's absolute position):
 * a padded batch gives, at each row's real positions, what the sequence gives alone; two
 * documents packed into one row with segment ids give what each gives alone. Through blocks
 * (sl_block_forward_masked), bidirectional and causal. */
START_TEST(padding_and_packing_equal_separate_sequences)
{
    enum { C = 8, T = 13 };
    const sl_pos methods[] = {SL_POS_ALIBI, SL_POS_T5,     SL_POS_ROTARY,
                              SL_POS_NONE,  SL_POS_KERPLE, SL_POS_SANDWICH};
    for (int mi = 0; mi < 6; mi++)
        for (int bidir = 0; bidir < 2; bidir++) {
            sl_rng r = sl_rng_seed(8);
            sl_params *ps = sl_params_new(SL_F64);
            sl_attention_config c = {.dim = C,
                                     .n_heads = 2,
                                     .pos = methods[mi],
                                     .bidirectional = bidir,
                                     .t5_buckets = 8,
                                     .t5_max_distance = 6,
                                     .asymmetric = bidir && mi == 0,
                                     .slopes = mi == 0 ? SL_SLOPES_LEARNED : SL_SLOPES_FIXED};
            sl_block *blk = sl_block_new(ps, "b", &c, 16, &r);
            ck_assert_msg(blk, "%s", sl_error_message());
            randomize(ps, &r, 0.5);
            sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, T, C));
            /* padding: row 0 holds 13 tokens, row 1 holds 8 (then garbage) */
            int32_t len[] = {T, 8};
            sl_attention_mask pad = {.lengths = lengths_of(2, len)};
            sl_tensor *y = sl_block_forward_masked(blk, x, NULL, &pad, NULL, NULL, false);
            sl_tensor *short1 = sl_block_forward(blk, sl_narrow(sl_narrow(x, 0, 1, 1), 1, 0, 8),
                                                 NULL, NULL, NULL, false);
            ck_assert_msg(y && short1, "%s", sl_error_message());
            double d = tu_max_rel_diff(sl_narrow(sl_narrow(y, 0, 1, 1), 1, 0, 8), short1);
            ck_assert_msg(d <= 1e-13, "%s bidir %d padding: %g", sl_pos_name(methods[mi]), bidir,
                          d);
            /* the attention itself gives padding rows 0, so the projection's bias */
            sl_tensor *ya1 = sl_attention_forward_masked(blk->attn, x, NULL, &pad);
            for (int64_t t = 8; t < T; t++)
                for (int64_t e = 0; e < C; e++)
                    ck_assert_double_eq(sl_get(ya1, (T + t) * C + e),
                                        sl_get(blk->attn->proj->bias, e));
            /* packing: row 0 = document A (5 tokens) then document B (8 tokens) */
            int32_t seg[2 * T];
            for (int t = 0; t < 2 * T; t++) seg[t] = t % T < 5 ? 1 : 2;
            sl_attention_mask packed = {.segments = sl_from_data(SL_I32, sl_shape(2, T), seg)};
            sl_tensor *yp = sl_block_forward_masked(blk, x, NULL, &packed, NULL, NULL, false);
            sl_tensor *row0 = sl_narrow(x, 0, 0, 1);
            sl_tensor *ya =
                sl_block_forward(blk, sl_narrow(row0, 1, 0, 5), NULL, NULL, NULL, false);
            sl_tensor *yb =
                sl_block_forward(blk, sl_narrow(row0, 1, 5, 8), NULL, NULL, NULL, false);
            ck_assert_msg(yp && ya && yb, "%s", sl_error_message());
            sl_tensor *yp0 = sl_narrow(yp, 0, 0, 1);
            d = tu_max_rel_diff(sl_narrow(yp0, 1, 0, 5), ya);
            ck_assert_msg(d <= 1e-13, "%s bidir %d packing, A: %g", sl_pos_name(methods[mi]), bidir,
                          d);
            /* B sits at positions 5.. of the row: only distances matter (rotary: relative) */
            d = tu_max_rel_diff(sl_narrow(yp0, 1, 5, 8), yb);
            ck_assert_msg(d <= 1e-12, "%s bidir %d packing: %g", sl_pos_name(methods[mi]), bidir,
                          d);
            sl_params_free(ps);
        }
}
END_TEST

/* Decoding with a KV cache and a window (and padding lengths in positions) equals a full
 * recompute, token by token and in chunks, for ALiBi (fused), T5, KERPLE, Sandwich and FIRE
 * (masked scores; FIRE with a threshold of 20, so that most queries are past it) and rotary. */
START_TEST(kv_cache_with_a_window_equals_full_recompute)
{
    enum { C = 8, T = 150 };
    const sl_pos methods[] = {SL_POS_ALIBI,  SL_POS_T5,       SL_POS_ROTARY,
                              SL_POS_KERPLE, SL_POS_SANDWICH, SL_POS_FIRE};
    const int64_t chunks[] = {1, 1, 7, 64, 1, 40, 36};
    for (int mi = 0; mi < 6; mi++)
        for (int lp = 0; lp < 2; lp++) {
            sl_rng r = sl_rng_seed(10);
            sl_params *ps = sl_params_new(SL_F64);
            sl_attention_config c = {.dim = C,
                                     .n_heads = 4,
                                     .n_kv_heads = 2,
                                     .pos = methods[mi],
                                     .window = 9,
                                     .t5_buckets = 8,
                                     .t5_max_distance = 6,
                                     .fire_threshold = 20,
                                     .fused_qkv = true};
            sl_attention *m = sl_attention_new(ps, "a", &c, &r);
            randomize(ps, &r, 0.5);
            sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, T, C));
            int32_t len[] = {T, 100};
            sl_attention_mask mask = {.lengths = lp ? lengths_of(2, len) : NULL};
            sl_tensor *full = sl_attention_forward_masked(m, x, NULL, &mask);
            ck_assert_ptr_nonnull(full);
            bool prev = sl_set_grad_enabled(false);
            sl_kv_cache *kv = sl_kv_cache_new(SL_F64, 2, 2, T, C / 4);
            int64_t at = 0;
            for (size_t s = 0; s < sizeof chunks / sizeof *chunks; s++) {
                sl_tensor *y =
                    sl_attention_forward_masked(m, sl_narrow(x, 1, at, chunks[s]), kv, &mask);
                ck_assert_msg(y, "%s", sl_error_message());
                double d = tu_max_rel_diff(y, sl_narrow(full, 1, at, chunks[s]));
                ck_assert_msg(d <= 1e-12, "%s lengths %d: positions [%lld, %lld): %g",
                              sl_pos_name(methods[mi]), lp, (long long)at,
                              (long long)(at + chunks[s]), d);
                at += chunks[s];
            }
            ck_assert_int_eq(at, T);
            sl_set_grad_enabled(prev);
            sl_params_free(ps);
        }
}
END_TEST

/* The scores' path in query blocks (grad off, more queries than a block) equals the whole
 * scores (grad on), for each method with a bias, causal and bidirectional, with and without a
 * window and padding: each block's bias sits at the block's absolute positions. */
START_TEST(scores_in_query_blocks_equal_the_whole_scores)
{
    enum { B = 2, T = 300, C = 8 }; /* blocks [44, 300) and [0, 44) */
    const sl_pos methods[] = {SL_POS_T5, SL_POS_KERPLE, SL_POS_SANDWICH, SL_POS_FIRE};
    int32_t len[B] = {T, 220};
    sl_attention_mask pad = {.lengths = lengths_of(B, len)};
    for (int mi = 0; mi < 4; mi++)
        for (int v = 0; v < 4; v++) {
            sl_rng r = sl_rng_seed(90 + mi);
            sl_params *ps = sl_params_new(SL_F64);
            sl_attention_config c = {.dim = C,
                                     .n_heads = 2,
                                     .pos = methods[mi],
                                     .bidirectional = v & 1,
                                     .window = v & 2 ? 70 : 0,
                                     .fire_threshold = 100,
                                     .fused_qkv = true};
            sl_attention *m = sl_attention_new(ps, "a", &c, &r);
            ck_assert_msg(m, "%s", sl_error_message());
            randomize(ps, &r, 0.5);
            sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(B, T, C));
            const sl_attention_mask *mask = v == 3 ? &pad : NULL;
            sl_tensor *whole = sl_attention_forward_masked(m, x, NULL, mask);
            bool prev = sl_set_grad_enabled(false);
            sl_tensor *blocks = sl_attention_forward_masked(m, x, NULL, mask);
            sl_set_grad_enabled(prev);
            ck_assert_msg(whole && blocks, "%s", sl_error_message());
            double d = tu_max_rel_diff(blocks, whole);
            ck_assert_msg(d <= 1e-13, "%s variant %d: %g", sl_pos_name(methods[mi]), v, d);
            sl_params_free(ps);
        }
}
END_TEST

/* ---------------------------------------------------------------- GPT with learned slopes */

static char tmpdir[64];

static const char *at(const char *file)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, file);
    return buf;
}

/* A GPT with learned slopes: its config says so in the checkpoint ("shortlong.slopes"), the
 * slopes of every layer are parameters that training moves, and a load gives the same
 * parameters bitwise and the same logits. Fixed slopes have no parameter. */
START_TEST(gpt_learned_slopes_checkpoint_round_trip)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sl_attn_mod_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    sl_gpt_config c = {.vocab_size = 11,
                       .context = 8,
                       .dim = 8,
                       .n_layers = 2,
                       .n_heads = 2,
                       .pos = SL_POS_ALIBI,
                       .tie_embeddings = true,
                       .fused_qkv = true,
                       .seed = 3,
                       .slopes = SL_SLOPES_LEARNED};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert_msg(m, "%s", sl_error_message());
    sl_gpt_config cf = c;
    cf.slopes = SL_SLOPES_FIXED;
    sl_gpt *mf = sl_gpt_new(&cf, SL_F32);
    ck_assert_int_eq(sl_params_count(m->params), sl_params_count(mf->params) + 2);
    sl_tensor *ls = sl_params_find(m->params, "blocks.1.attn.log_slopes");
    ck_assert_ptr_nonnull(ls);
    ck_assert_ptr_null(sl_params_find(mf->params, "blocks.1.attn.log_slopes"));
    /* a few AdamW steps move the slopes */
    sl_optim *opt = sl_adamw_new(m->params, NULL);
    sl_rng r = sl_rng_seed(4);
    int32_t ids[2 * 8], tg[2 * 8];
    for (int i = 0; i < 16; i++) ids[i] = (int32_t)sl_rng_below(&r, 11), tg[i] = (i * 3) % 11;
    sl_tensor *idx = sl_from_data(SL_I32, sl_shape(2, 8), ids);
    sl_tensor *tgt = sl_from_data(SL_I32, sl_shape(2, 8), tg);
    float before = ((float *)ls->data)[0];
    for (int s = 0; s < 3; s++) {
        sl_params_zero_grad(m->params);
        ck_assert(sl_backward(sl_gpt_loss(m, idx, tgt)));
        ck_assert(sl_optim_step(opt, 1e-2));
    }
    ck_assert(((float *)ls->data)[0] != before);
    const char *path = at("learned.safetensors");
    ck_assert_msg(sl_gpt_save(path, m, opt, NULL, 0), "%s", sl_error_message());
    char buf[16];
    ck_assert(sl_read_meta(path, "shortlong.slopes", buf, sizeof buf));
    ck_assert_str_eq(buf, "learned");
    sl_gpt_config rc;
    ck_assert(sl_gpt_read_config(path, &rc));
    ck_assert_int_eq(rc.slopes, SL_SLOPES_LEARNED);
    sl_gpt *l = sl_gpt_load(path, SL_F32);
    ck_assert_msg(l, "%s", sl_error_message());
    ck_assert_int_eq(l->cfg.slopes, SL_SLOPES_LEARNED);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *a = sl_params_at(m->params, i), *b = sl_params_at(l->params, i);
        ck_assert_str_eq(a->name, b->name);
        ck_assert(!memcmp(a->value->data, b->value->data, 4 * (size_t)sl_numel(a->value)));
    }
    bool prev = sl_set_grad_enabled(false);
    ck_assert_double_eq(tu_max_abs_diff(sl_gpt_forward(l, idx, NULL), sl_gpt_forward(m, idx, NULL)),
                        0);
    sl_set_grad_enabled(prev);
    /* a fixed-slopes model's checkpoint says fixed; its file does not load as learned */
    ck_assert(sl_gpt_save(at("fixed.safetensors"), mf, NULL, NULL, 0));
    ck_assert(sl_read_meta(at("fixed.safetensors"), "shortlong.slopes", buf, sizeof buf));
    ck_assert_str_eq(buf, "fixed");
    ck_assert(!sl_load_params(at("fixed.safetensors"), m->params));
    sl_error_clear();
    /* learned slopes with another method: a clear error */
    sl_gpt_config bad = c;
    bad.pos = SL_POS_ROTARY;
    ck_assert_ptr_null(sl_gpt_new(&bad, SL_F32));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_new: slopes, asymmetric and slope_scale are "
                                         "ALiBi's settings, and pos is rotary");
    sl_error_clear();
    sl_optim_free(opt);
    sl_gpt_free(l);
    sl_gpt_free(m);
    sl_gpt_free(mf);
    unlink(at("learned.safetensors"));
    unlink(at("fixed.safetensors"));
    rmdir(tmpdir);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(config_and_mask_errors)
{
    sl_rng r = sl_rng_seed(1);
    sl_params *ps = sl_params_new(SL_F64);
#define EXPECT_NEW(cfg, msg)                                                                       \
    do {                                                                                           \
        sl_attention_config c_ = cfg;                                                              \
        c_.dim = 8, c_.n_heads = 2;                                                                \
        ck_assert_ptr_null(sl_attention_new(ps, "a", &c_, &r));                                    \
        ck_assert_int_eq(sl_error(), SL_ERR_ARG);                                                  \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_ALIBI, .asymmetric = true}),
               "sl_attention_new: asymmetric slopes need bidirectional attention (causal "
               "attention sees no key after its query)");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_T5, .slopes = SL_SLOPES_LEARNED}),
               "sl_attention_new: slopes, asymmetric and slope_scale are ALiBi's settings, and "
               "pos is t5");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_NONE, .slope_scale = 2}),
               "sl_attention_new: slopes, asymmetric and slope_scale are ALiBi's settings, and "
               "pos is none");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_ALIBI, .slope_scale = -1}),
               "sl_attention_new: slope_scale -1 must be finite and > 0");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_ALIBI, .slopes = (sl_slopes)7}),
               "sl_attention_new: unknown slopes 7");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_ALIBI, .window = -2}),
               "sl_attention_new: window -2 must be >= 0 (0: none)");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_SANDWICH, .sandwich_dim = 5}),
               "sl_attention_new: sandwich_dim 5 must be even and in [2, 65536] (0: the head "
               "dimension, here 4)");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_FIRE, .fire_width = 5000}),
               "sl_attention_new: fire_width 5000 outside [1, 4096]");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_FIRE, .fire_threshold = -3}),
               "sl_attention_new: fire_threshold -3 must be finite and > 0");
    sl_tensor *lr = sl_zeros(SL_F64, sl_shape(2));
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_KERPLE, .kerple_log_r1 = lr}),
               "sl_attention_new: give both kerple_log_r1 and kerple_log_r2, or neither");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_T5, .kerple_log_r1 = lr, .kerple_log_r2 = lr}),
               "sl_attention_new: kerple_log_r1 and kerple_log_r2 are KERPLE's, and pos is t5");
    EXPECT_NEW(((sl_attention_config){.pos = SL_POS_KERPLE,
                                      .kerple_log_r1 = lr,
                                      .kerple_log_r2 = sl_zeros(SL_F64, sl_shape(3))}),
               "sl_attention_new: kerple_log_r2 f64 [3] is not (H) = f64 [2]");
    EXPECT_NEW(((sl_attention_config){
                   .pos = SL_POS_T5, .bidirectional = true, .t5_buckets = 3, .t5_max_distance = 8}),
               "sl_attention_new: bidirectional T5 splits the buckets in two halves and needs "
               "t5_buckets >= 4 (got 3) and t5_max_distance > t5_buckets / 4 (got 8)");
#undef EXPECT_NEW
    ck_assert(sl_slopes_parse("learned", NULL));
    ck_assert(!sl_slopes_parse("steep", NULL));
    ck_assert_str_eq(sl_error_message(),
                     "sl_slopes_parse: unknown slopes 'steep' (known: fixed, learned)");
    sl_error_clear();
    ck_assert_str_eq(sl_slopes_name(SL_SLOPES_LEARNED), "learned");

    sl_attention_config c = {.dim = 8, .n_heads = 2, .pos = SL_POS_ALIBI, .bidirectional = true};
    sl_attention *m = sl_attention_new(ps, "enc", &c, &r);
    sl_tensor *x = tu_randn(&r, SL_F64, sl_shape(2, 5, 8));
#define EXPECT_FWD(mask, code, msg)                                                                \
    do {                                                                                           \
        sl_attention_mask m_ = mask;                                                               \
        ck_assert_ptr_null(sl_attention_forward_masked(m, x, NULL, &m_));                          \
        ck_assert_int_eq(sl_error(), code);                                                        \
        ck_assert_str_eq(sl_error_message(), msg);                                                 \
        sl_error_clear();                                                                          \
    } while (0)
    EXPECT_FWD(((sl_attention_mask){.lengths = sl_zeros(SL_I32, sl_shape(3))}), SL_ERR_SHAPE,
               "sl_attention_forward: mask lengths i32 [3] must be i32 [2] (one per batch row)");
    EXPECT_FWD(((sl_attention_mask){.lengths = sl_full(SL_I32, sl_shape(2), -6)}), SL_ERR_ARG,
               "sl_attention_forward: mask lengths[0] is -6; it must be >= 0");
    EXPECT_FWD(((sl_attention_mask){.segments = sl_zeros(SL_F64, sl_shape(2, 5))}), SL_ERR_SHAPE,
               "sl_attention_forward: mask segments f64 [2,5] must be i32 [2,5] (batch rows, "
               "positions attended over)");
#undef EXPECT_FWD
    bool prev = sl_set_grad_enabled(false);
    sl_kv_cache *kv = sl_kv_cache_new(SL_F64, 2, 2, 16, 4);
    ck_assert_ptr_null(sl_attention_forward(m, x, kv));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    ck_assert_str_eq(sl_error_message(), "sl_attention_forward: a KV cache needs causal attention "
                                         "(bidirectional attention lets earlier positions see "
                                         "later ones, which the cache has not seen)");
    sl_error_clear();
    ck_assert_int_eq(kv->len, 0);
    sl_set_grad_enabled(prev);
    sl_params_free(ps);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention_modules");
    TCase *tc = tcase_create("modules");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_timeout(tc, 600);
    tu_add_test(s, tc, t5_bidirectional_buckets_follow_t5);
    tu_add_test(s, tc, t5_bidirectional_bias_values_and_gradcheck);
    tu_add_test(s, tc, module_gradcheck_each_option);
    tu_add_test(s, tc, learned_slopes_are_named_parameters_initialised_to_the_papers);
    tu_add_test(s, tc, symmetric_slopes_cannot_see_direction);
    tu_add_test(s, tc, t5_masked_path_matches_the_fused_kernel);
    tu_add_test(s, tc, padding_and_packing_equal_separate_sequences);
    tu_add_test(s, tc, kv_cache_with_a_window_equals_full_recompute);
    tu_add_test(s, tc, scores_in_query_blocks_equal_the_whole_scores);
    tu_add_test(s, tc, gpt_learned_slopes_checkpoint_round_trip);
    tu_add_test(s, tc, config_and_mask_errors);
    return tu_run(s);
}
