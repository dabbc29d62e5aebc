/* The gpt program's evaluation instruments (examples/gpt/eval.c) on tiny models: per-position
 * losses against a naive loop, the per-position buckets, the same-tokens protocol's scored
 * bytes (identical at every length) and values, the distant-context ablation's identities (a
 * windowed model whose receptive field ends before the replaced text gives exactly the same
 * loss; one whose field reaches it does not), sliding windows of stride T against
 * non-overlapping ones, and slope scaling by 1 against none, bitwise. */
#include "gpt.h" /* before check.h, whose fail() macro would rename gpt.h's fail */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static sl_gpt *tiny(sl_pos pos, int layers, sl_slopes slopes)
{
    sl_gpt_config c = {.vocab_size = 256,
                       .context = 8,
                       .dim = 16,
                       .n_layers = layers,
                       .n_heads = 2,
                       .mlp_ratio = 2,
                       .pos = pos,
                       .tie_embeddings = true,
                       .fused_qkv = true,
                       .seed = 5,
                       .slopes = slopes};
    sl_gpt *m = sl_gpt_new(&c, SL_F32);
    ck_assert_msg(m != NULL, "%s", sl_error_message());
    /* larger weights than GPT-2's init, so that every position and byte matters */
    sl_rng r = sl_rng_seed(6);
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_param *p = sl_params_at(m->params, i);
        if (strstr(p->name, "ln") || strstr(p->name, "slopes")) continue;
        ck_assert(sl_init_normal(p->value, &r, 0.3));
    }
    m->train = false;
    return m;
}

static text corpus(int64_t n)
{
    text t;
    text_builtin(&t, 1, n);
    ck_assert_ptr_nonnull(t.bytes);
    return t;
}

/* -log softmax(logits)[y], the logits converted to f64 and through sl_log_softmax. */
static double naive_loss(const sl_tensor *logits, int64_t i, int y)
{
    sl_tensor *row =
        sl_to_dtype(sl_narrow(sl_narrow((sl_tensor *)logits, 0, 0, 1), 1, i, 1), SL_F64);
    return -sl_get(sl_log_softmax(row, -1), y);
}

/* The loss of window [s, s + T) at positions [from, T), summed, by a forward of its own. (The
 * instruments batch windows: an f32 matrix product of other rows rounds differently, so the two
 * agree to f32 precision, about 1e-8 relative here, not bitwise; a window or position taken
 * for another would differ by 1e-2 or more.) */
static double naive_window(sl_gpt *m, const text *t, int64_t s, int64_t T, int64_t from,
                           double *per_pos)
{
    sl_tensor *idx = sl_empty(SL_I32, sl_shape(1, T));
    for (int64_t i = 0; i < T; i++) ((int32_t *)idx->data)[i] = t->bytes[s + i];
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL);
    ck_assert_ptr_nonnull(logits);
    double sum = 0;
    for (int64_t i = from; i < T; i++) {
        double l = naive_loss(logits, i, t->bytes[s + i + 1]);
        if (per_pos) per_pos[i] += l;
        sum += l;
    }
    return sum;
}

START_TEST(per_position_loss_matches_a_naive_loop)
{
    enum { T = 16, SPAN = 700 }; /* 43 windows, in forwards of 128 rows and the rest */
    sl_gpt *m = tiny(SL_POS_ALIBI, 2, SL_SLOPES_FIXED);
    text t = corpus(4096);
    bool g = sl_set_grad_enabled(false);
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    double sum[T] = {0};
    int64_t cnt[T] = {0};
    pos_loss pl = {sum, cnt, T};
    score a, plain;
    ck_assert(eval_nonoverlap_pos(m, &t, T, SPAN, step, &a, &pl));
    ck_assert(eval_nonoverlap(m, &t, T, SPAN, step, &plain));
    sl_arena_set(prev);
    ck_assert(plain.nll == a.nll && plain.n == a.n && a.n == (SPAN / T) * T);
    double want[T] = {0}, total = 0, all = 0;
    for (int64_t w = 0; w < SPAN / T; w++) total += naive_window(m, &t, w * T, T, 0, want);
    for (int i = 0; i < T; i++) {
        ck_assert_int_eq(cnt[i], SPAN / T);
        ck_assert_close(sum[i], want[i], 1e-6, 0);
        all += sum[i];
    }
    ck_assert_close(a.nll, total / (double)a.n, 1e-6, 0);
    ck_assert_close(all / (double)a.n, a.nll, 1e-12, 0);
    sl_set_grad_enabled(g);
    sl_arena_free(step);
    text_free(&t);
    sl_gpt_free(m);
}
END_TEST

START_TEST(per_position_buckets)
{
    int64_t e[256];
    const int64_t want[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  10, 11,
                            13, 16, 19, 23, 27, 32, 38, 45, 54, 64};
    int n = pos_buckets(64, 4, e, 256);
    ck_assert_int_eq(n, (int)(sizeof want / sizeof *want));
    for (int i = 0; i < n; i++) ck_assert_int_eq(e[i], want[i]);
    n = pos_buckets(50, 4, e, 256); /* the last bucket ends at T */
    ck_assert_int_eq(e[n - 1], 50);
    ck_assert_int_eq(e[n - 2], 45);
    n = pos_buckets(5, 0, e, 256); /* every position */
    ck_assert_int_eq(n, 6);
    for (int i = 0; i < n; i++) ck_assert_int_eq(e[i], i);
    n = pos_buckets(1, 4, e, 256);
    ck_assert(n == 2 && e[0] == 0 && e[1] == 1);
}
END_TEST

/* Every length scores exactly the same bytes, K S of them, the K blocks of S after the first
 * Tmax - S; the value is the mean over those predictions, each window run on its own. */
START_TEST(same_tokens_score_the_same_bytes_at_every_length)
{
    enum { S = 4, TMAX = 32, SPAN = 500 };
    sl_gpt *m = tiny(SL_POS_ALIBI, 2, SL_SLOPES_FIXED);
    text t = corpus(4096);
    bool g = sl_set_grad_enabled(false);
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    same_plan p = {S, TMAX, 0};
    int64_t K = same_tokens_windows(&p, SPAN);
    ck_assert_int_eq(K, (SPAN - TMAX) / S + 1);
    int64_t *first = calloc((size_t)(K * S), sizeof *first), *got = calloc((size_t)(K * S), 8);
    const int64_t lengths[] = {4, 8, 16, 32};
    double nll[4];
    for (int li = 0; li < 4; li++) {
        score s;
        ck_assert_msg(
            eval_same_tokens(m, &t, lengths[li], &p, -1, SPAN, step, &s, li ? got : first), "%s",
            sl_error_message());
        ck_assert_int_eq(s.n, K * S);
        nll[li] = s.nll;
        for (int64_t e = 0; e < K * S; e++) {
            ck_assert_int_eq(first[e], TMAX - S + 1 + e); /* consecutive bytes from Tmax - S + 1 */
            if (li) ck_assert_int_eq(got[e], first[e]);
        }
        ck_assert_int_le(first[K * S - 1], SPAN); /* inside the first span + 1 bytes */
    }
    sl_arena_set(prev);
    /* the value at T = 16: each window alone, its last S predictions */
    double want = 0;
    for (int64_t k = 0; k < K; k++)
        want += naive_window(m, &t, TMAX - 16 + k * S, 16, 16 - S, NULL);
    ck_assert_close(nll[2], want / (double)(K * S), 1e-6, 0);
    ck_assert_double_ne(nll[0], nll[3]); /* more context: another loss on the same bytes */
    /* a cap on the bytes scored caps the windows */
    same_plan capped = {S, TMAX, 40};
    ck_assert_int_eq(same_tokens_windows(&capped, SPAN), 10);
    ck_assert(!eval_same_tokens(m, &t, 64, &p, -1, SPAN, step, &(score){0}, NULL));
    ck_assert_str_eq(sl_error_message(), "same-tokens: length 64 outside [S, Tmax] = [4, 32]");
    sl_error_clear();
    free(first), free(got);
    sl_set_grad_enabled(g);
    sl_arena_free(step);
    text_free(&t);
    sl_gpt_free(m);
}
END_TEST

/* A model with no positional information (and one with ALiBi) and an attention window of L:
 * with everything more than keep bytes back replaced, the scored loss is exactly the same when
 * the receptive field, n_layers (L - 1), fits in keep, and differs when it does not, or
 * without the window. The replacement is deterministic. */
START_TEST(distant_context_replaced_beyond_the_receptive_field_changes_nothing)
{
    enum { L = 8, T = 64, S = 8, SPAN = 700 };
    text t = corpus(8192);
    bool g = sl_set_grad_enabled(false);
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    same_plan p = {S, T, 0};
    const sl_pos methods[] = {SL_POS_NONE, SL_POS_ALIBI};
    for (int mi = 0; mi < 2; mi++)
        for (int layers = 1; layers <= 2; layers++) {
            sl_gpt *m = tiny(methods[mi], layers, SL_SLOPES_FIXED);
            int64_t field = layers * (L - 1);
            score full, same, again, short_keep, open;
            ck_assert(sl_gpt_set_window(m, L));
            ck_assert(eval_same_tokens(m, &t, T, &p, -1, SPAN, step, &full, NULL));
            ck_assert(eval_same_tokens(m, &t, T, &p, field, SPAN, step, &same, NULL));
            ck_assert(eval_same_tokens(m, &t, T, &p, field, SPAN, step, &again, NULL));
            ck_assert_msg(same.nll == full.nll, "%s, %d layers: %.17g vs %.17g",
                          sl_pos_name(methods[mi]), layers, same.nll, full.nll);
            ck_assert(again.nll == same.nll);
            if (layers == 2) { /* keep L: inside the second layer's field */
                ck_assert(eval_same_tokens(m, &t, T, &p, L, SPAN, step, &short_keep, NULL));
                ck_assert_double_ne(short_keep.nll, full.nll);
            }
            ck_assert(sl_gpt_set_window(m, 0)); /* no window: everything is in reach */
            ck_assert(eval_same_tokens(m, &t, T, &p, -1, SPAN, step, &full, NULL));
            ck_assert(eval_same_tokens(m, &t, T, &p, field, SPAN, step, &open, NULL));
            ck_assert_double_ne(open.nll, full.nll);
            sl_gpt_free(m);
        }
    /* the replacement needs text for it: 2 (T + 1) bytes */
    text small = corpus(100);
    sl_gpt *m = tiny(SL_POS_NONE, 1, SL_SLOPES_FIXED);
    same_plan q = {4, 60, 0};
    ck_assert(!eval_same_tokens(m, &small, 60, &q, 8, 99, step, &(score){0}, NULL));
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "fewer than the 2 (T + 1) = 122"));
    sl_error_clear();
    sl_gpt_free(m);
    text_free(&small);
    sl_arena_set(prev);
    sl_set_grad_enabled(g);
    sl_arena_free(step);
    text_free(&t);
}
END_TEST

/* Sliding windows moved by their own length score what non-overlapping ones do; slopes scaled
 * by 1 change nothing, bitwise, fixed or learned, and another factor does. */
START_TEST(sliding_stride_t_and_slope_scale_one)
{
    enum { T = 16, SPAN = 640 };
    text t = corpus(4096);
    bool g = sl_set_grad_enabled(false);
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    for (int learned = 0; learned < 2; learned++) {
        sl_gpt *m = tiny(SL_POS_ALIBI, 2, learned ? SL_SLOPES_LEARNED : SL_SLOPES_FIXED);
        score a, b, c, d;
        ck_assert(eval_nonoverlap(m, &t, T, SPAN, step, &a));
        ck_assert(eval_sliding(m, &t, T, T, SPAN, step, &b));
        ck_assert(a.n == b.n);
        ck_assert_close(b.nll, a.nll, 1e-6, 0); /* batched differently */
        ck_assert(sl_gpt_scale_slopes(m, 1));
        ck_assert(eval_nonoverlap(m, &t, T, SPAN, step, &c));
        ck_assert(c.nll == a.nll);
        ck_assert(sl_gpt_scale_slopes(m, 0.5));
        ck_assert(eval_nonoverlap(m, &t, T, SPAN, step, &d));
        ck_assert_double_ne(d.nll, a.nll);
        sl_gpt_free(m);
    }
    sl_arena_set(prev);
    sl_set_grad_enabled(g);
    sl_arena_free(step);
    text_free(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gpt_eval");
    TCase *tc = tcase_create("gpt_eval");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, per_position_loss_matches_a_naive_loop);
    tu_add_test(s, tc, per_position_buckets);
    tu_add_test(s, tc, same_tokens_score_the_same_bytes_at_every_length);
    tu_add_test(s, tc, distant_context_replaced_beyond_the_receptive_field_changes_nothing);
    tu_add_test(s, tc, sliding_stride_t_and_slope_scale_one);
    return tu_run(s);
}
