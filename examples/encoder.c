/* examples/encoder.c — a bidirectional ALiBi encoder (a sequence classifier) written against
 * shortlong's public nn API, trained on batches of mixed lengths with padding masks and tested
 * on sequences 1x, 2x and 4x as long as the longest it was trained on.
 *
 *     tokens (B, T) -> Embedding -> Block(bidirectional ALiBi, padding mask) -> LayerNorm
 *                   -> max over each row's real tokens -> Linear -> logits (B, 2)
 *
 * Two tasks, each needing positions (a bag of tokens cannot do them):
 *   order:  two marked tokens A and B among fillers; is A before B? Direction matters: with
 *           symmetric slopes a sequence and its reverse give the same output, so that model can
 *           only guess (50%); asymmetric slopes (separate ones for keys after the query) can tell
 *           left from right.
 *   near:   two A marks among fillers, either at most 2 positions apart or at least 4; which?
 *           Symmetric in direction, but it needs distances.
 * Each task trains one model per way of holding the slopes (sl_attention_config):
 *   paper     fixed, symmetric, the paper's slopes (1/4, 1/16, 1/64, 1/256 for 4 heads)
 *   steep     fixed, symmetric, the paper's times 4 (slope_scale = 4)
 *   asym      fixed, asymmetric: the paper's for keys before the query, and for keys after it
 *             the slope of the neighbouring head (heads 0, 1 and 2, 3 swap them)
 *   learned   learned, symmetric (m = exp(theta), theta from the paper's)
 *   asym+lrn  learned, asymmetric
 * and prints the accuracy of each at 1x, 2x and 4x the training length. Stated accuracy: at 1x,
 * at least 0.95 for the models whose slopes can see what the task needs: the asymmetric ones on
 * order, the symmetric ones on near (asymmetric slopes learn near too, but not within these
 * 300 steps for every seed). The run fails (exit 1) if one of them does not reach it.
 *
 * Build it against an installed shortlong:
 *     cc -O2 encoder.c $(pkg-config --cflags --libs shortlong) -lm -o encoder
 *     ./encoder [--steps 300] [--length 16] [--seed 1]
 * Everything it touches is in <shortlong/shortlong.h>.
 */
#include <shortlong/shortlong.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { VOCAB = 16, DIM = 64, HEADS = 4, LAYERS = 1, MLP = 2 * DIM, BATCH = 64, N_EVAL = 1024 };
/* (head dim DIM / HEADS = 16: a whole number of SIMD vectors, which the fused kernel's tiles
 * want; below one vector they take a slower scalar path) */
enum { PAD = 0, MARK_A = 1, MARK_B = 2 }; /* the marks; fillers are 3 .. VOCAB - 1 */
enum { NEAR = 2 };                          /* near: d <= NEAR, or d >= NEAR + 2 */

/* ---------------------------------------------------------------- the tasks */

typedef enum { TASK_ORDER, TASK_NEAR, N_TASKS } task;
static const char *const task_name[N_TASKS] = {"order", "near"};

/* A random token in [lo, VOCAB) other than `not` (pass -1 for none). */
static int32_t filler(sl_rng *r, int32_t lo, int32_t not1, int32_t not2)
{
    for (;;) {
        int32_t t = lo + (int32_t)sl_rng_below(r, (uint64_t)(VOCAB - lo));
        if (t != not1 && t != not2) return t;
    }
}

/* One sequence of n tokens into ids[0 .. n) (the rest of the row is padding); returns its
 * label, 0 or 1, each half the time. */
static int32_t make_sequence(task k, sl_rng *r, int64_t n, int32_t *ids)
{
    int32_t label = (int32_t)sl_rng_below(r, 2);
    if (k == TASK_ORDER) {
        for (int64_t i = 0; i < n; i++) ids[i] = filler(r, 3, -1, -1);
        int64_t a = (int64_t)sl_rng_below(r, (uint64_t)n), b;
        do b = (int64_t)sl_rng_below(r, (uint64_t)n);
        while (b == a);
        if ((a < b) != label) { /* put A first iff the label says so */
            int64_t t = a;
            a = b, b = t;
        }
        ids[a] = MARK_A, ids[b] = MARK_B;
        return label;
    }
    /* near: two A marks at distance d; d <= NEAR (label 1) or d >= NEAR + 2 (label 0) */
    for (int64_t i = 0; i < n; i++) ids[i] = filler(r, 3, -1, -1);
    int64_t d = label ? 1 + (int64_t)sl_rng_below(r, NEAR)
                      : NEAR + 2 + (int64_t)sl_rng_below(r, (uint64_t)(n - 2 - NEAR));
    int64_t a = (int64_t)sl_rng_below(r, (uint64_t)(n - d));
    ids[a] = ids[a + d] = MARK_A;
    return label;
}

/* A batch of `rows` sequences padded to T: lengths uniform in [lo, T] (lo = T: all full). */
typedef struct {
    sl_tensor *ids, *lengths, *labels; /* i32 (rows, T), (rows), (rows) */
} batch;

static batch make_batch(task k, sl_rng *r, int64_t rows, int64_t T, int64_t lo)
{
    int32_t *ids = calloc((size_t)(rows * T), sizeof *ids), *len = malloc(sizeof *len * rows),
            *lab = malloc(sizeof *lab * rows);
    for (int64_t b = 0; b < rows; b++) {
        len[b] = (int32_t)(lo + (int64_t)sl_rng_below(r, (uint64_t)(T - lo + 1)));
        lab[b] = make_sequence(k, r, len[b], ids + b * T); /* PAD (0) after len[b] */
    }
    batch out = {sl_from_data(SL_I32, sl_shape(rows, T), ids),
                 sl_from_data(SL_I32, sl_shape(rows), len),
                 sl_from_data(SL_I32, sl_shape(rows), lab)};
    free(ids), free(len), free(lab);
    return out;
}

/* ---------------------------------------------------------------- the model */

typedef struct {
    const char *name;
    sl_slopes slopes;
    bool asymmetric;
    double slope_scale;
} variant;

static const variant VARIANTS[] = {
    {"paper", SL_SLOPES_FIXED, false, 1},      {"steep", SL_SLOPES_FIXED, false, 4},
    {"asym", SL_SLOPES_FIXED, true, 1},        {"learned", SL_SLOPES_LEARNED, false, 1},
    {"asym+lrn", SL_SLOPES_LEARNED, true, 1},
};
enum { N_VARIANTS = sizeof VARIANTS / sizeof VARIANTS[0] };

typedef struct {
    sl_params *params;
    sl_embedding_module *tok;
    sl_block *blocks[LAYERS];
    sl_layer_norm_module *ln;
    sl_linear_module *head;
} encoder;

static encoder *encoder_new(const variant *v, uint64_t seed)
{
    encoder *m = calloc(1, sizeof *m);
    sl_rng rng = sl_rng_seed(seed);
    m->params = sl_params_new(SL_F32);
    /* The attention settings are the whole difference from a decoder: bidirectional, and
     * how the slopes are held. */
    sl_attention_config ac = {.dim = DIM, .n_heads = HEADS, .pos = SL_POS_ALIBI,
                              .fused_qkv = true, .bidirectional = true, .slopes = v->slopes,
                              .asymmetric = v->asymmetric, .slope_scale = v->slope_scale};
    m->tok = sl_embedding_new(m->params, "tok", VOCAB, DIM, &rng);
    for (int l = 0; l < LAYERS; l++) {
        char name[32];
        snprintf(name, sizeof name, "blocks.%d", l);
        m->blocks[l] = sl_block_new(m->params, name, &ac, MLP, &rng);
    }
    m->ln = sl_layer_norm_new(m->params, "ln", DIM, 1e-5);
    m->head = sl_linear_new(m->params, "head", DIM, 2, true, &rng);
    if (sl_error() != SL_OK) {
        fprintf(stderr, "encoder: %s\n", sl_error_message());
        exit(1);
    }
    return m;
}

static void encoder_free(encoder *m)
{
    sl_params_free(m->params);
    free(m);
}

/* ids (B, T), lengths (B) -> logits (B, 2). Padding never reaches a real token: the mask hides
 * padding keys in every layer, and the pooling below covers real positions only. */
static sl_tensor *encoder_forward(const encoder *m, sl_tensor *ids, sl_tensor *lengths)
{
    int64_t B = ids->shape[0], T = ids->shape[1];
    sl_attention_mask mask = {.lengths = lengths};
    sl_tensor *x = sl_embedding_forward(m->tok, ids); // (B, T, C)
    for (int l = 0; l < LAYERS; l++)
        x = sl_block_forward_masked(m->blocks[l], x, NULL, &mask, NULL, NULL, false);
    x = sl_layer_norm_forward(m->ln, x);
    /* the max over each row's real positions (padding set to -inf first): a feature that one
     * position shows counts whatever the length, where a mean would dilute it by 1/length */
    sl_tensor *pad = sl_zeros(SL_I32, sl_shape(B, T, 1));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = ((const int32_t *)lengths->data)[b]; t < T; t++)
            ((int32_t *)pad->data)[b * T + t] = 1;
    sl_tensor *pooled = sl_max(sl_masked_fill(x, pad, -INFINITY), 1, (int[]){1}, false); // (B, C)
    return sl_linear_forward(m->head, pooled); // (B, 2)
}

/* ---------------------------------------------------------------- training and testing */

static double accuracy(const encoder *m, task k, int64_t T, uint64_t seed, sl_arena *step)
{
    sl_rng r = sl_rng_seed(seed);
    bool prev = sl_set_grad_enabled(false);
    int64_t right = 0;
    for (int64_t done = 0; done < N_EVAL; done += BATCH) {
        sl_arena_reset(step);
        batch bt = make_batch(k, &r, BATCH, T, T); /* every test sequence is T long */
        sl_tensor *logits = encoder_forward(m, bt.ids, bt.lengths);
        for (int64_t b = 0; b < BATCH; b++) {
            int guess = sl_get(logits, 2 * b + 1) > sl_get(logits, 2 * b);
            right += guess == ((const int32_t *)bt.labels->data)[b];
        }
    }
    sl_set_grad_enabled(prev);
    return (double)right / N_EVAL;
}

static void train(encoder *m, task k, int64_t L, int64_t steps, uint64_t seed, sl_arena *step)
{
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){.weight_decay = 0.01});
    sl_rng r = sl_rng_seed(seed);
    for (int64_t s = 0; s < steps; s++) {
        sl_arena_reset(step);
        batch bt = make_batch(k, &r, BATCH, L, L / 2); /* mixed lengths: L/2 .. L */
        sl_tensor *loss = sl_cross_entropy(encoder_forward(m, bt.ids, bt.lengths), bt.labels,
                                           SL_NO_IGNORE);
        sl_params_zero_grad(m->params);
        if (!loss || !sl_backward(loss)) {
            fprintf(stderr, "encoder: %s\n", sl_error_message());
            exit(1);
        }
        sl_params_clip_grad_norm(m->params, 1.0);
        sl_optim_step(opt, sl_lr_warmup_cosine(s, steps / 10, steps, 2e-3, 2e-4));
    }
    sl_optim_free(opt);
}

int main(int argc, char **argv)
{
    int64_t steps = 300, L = 16;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--length") && i + 1 < argc) L = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--steps 300] [--length 16] [--seed 1]\n", argv[0]);
            return 2;
        }
    }
    if (steps < 1 || L < 10 || L > 4096) {
        fprintf(stderr, "encoder: --steps must be >= 1 and --length in [10, 4096]\n");
        return 2;
    }
    sl_arena *step = sl_arena_new(0);
    sl_arena_set(step);
    printf("bidirectional ALiBi encoder: trained on lengths %lld..%lld (%lld steps of %d), "
           "tested on %d sequences of each length\n\n",
           (long long)(L / 2), (long long)L, (long long)steps, BATCH, N_EVAL);
    printf("%-7s %-9s %7s %7s %7s\n", "task", "slopes", "1x", "2x", "4x");
    printf("%-7s %-9s %7lld %7lld %7lld\n", "", "", (long long)L, (long long)(2 * L),
           (long long)(4 * L));
    int failed = 0;
    for (int k = 0; k < N_TASKS; k++)
        for (int v = 0; v < N_VARIANTS; v++) {
            encoder *m = encoder_new(&VARIANTS[v], seed);
            train(m, (task)k, L, steps, seed + 100, step);
            double acc[3];
            for (int x = 0; x < 3; x++) acc[x] = accuracy(m, (task)k, L << x, seed + 200 + x, step);
            /* the stated accuracy at 1x, for the slopes that suit the task */
            bool can = (k == TASK_ORDER) == VARIANTS[v].asymmetric;
            bool ok = !can || acc[0] >= 0.95;
            failed += !ok;
            printf("%-7s %-9s %7.3f %7.3f %7.3f%s\n", task_name[k], VARIANTS[v].name, acc[0],
                   acc[1], acc[2], !can ? "" : ok ? "   *" : "   * below 0.95 at 1x");
            fflush(stdout);
            encoder_free(m);
        }
    printf("\n* stated: at least 0.95 at 1x (the slopes that can see what the task needs)\n");
    sl_arena_set(NULL);
    sl_arena_free(step);
    if (failed) fprintf(stderr, "encoder: %d model(s) below the stated accuracy at 1x\n", failed);
    return failed ? 1 : 0;
}
