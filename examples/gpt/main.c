/* examples/gpt/main.c — a byte-level GPT: train short, evaluate long, sample.
 *
 *   gpt train  [--data FILE] [--val FILE] [--pos METHOD] [--context L] ... [--out CKPT]
 *   gpt eval   --ckpt CKPT [--data FILE] [--lengths 128,256,512] [--stride S] [--score-last S]
 *              [--distant 1,2] [--window W] [--slope-scale X|auto] [--per-position CSV]
 *   gpt sample --ckpt CKPT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
 *   gpt experiment [--train FILE --valid FILE] [--methods ...]   (see experiment.c)
 *   mpirun -np N gpt train ...   data-parallel on N MPI ranks (dist.c)
 *
 * Everything the program does goes through the public API (<shortlong/shortlong.h>): the model
 * is sl_gpt, training uses sl_adamw with a warmup-cosine schedule and gradient clipping, each
 * step runs in a step arena that is reset afterwards, and checkpoints are safetensors files. */
#include "dist.h"
#include "gpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- train */

/* The training and validation texts: data (NULL: the built-in corpus) and val (NULL: the last
 * 10% of data, or the built-in corpus's validation part). */
static bool load_texts(const char *data, const char *val, text *tr, text *va)
{
    char err[512];
    memset(va, 0, sizeof *va);
    if (!data) {
        text_builtin(tr, 0, 2 << 20);
        if (!tr->bytes) return fprintf(stderr, "gpt: out of memory\n"), false;
    } else if (!text_read(tr, data, err, sizeof err)) {
        fprintf(stderr, "gpt: %s\n", err);
        return false;
    }
    bool ok;
    if (val) {
        if (!(ok = text_read(va, val, err, sizeof err))) fprintf(stderr, "gpt: %s\n", err);
    } else if (!data) {
        text_builtin(va, 1, 256 << 10);
        if (!(ok = va->bytes != NULL)) fprintf(stderr, "gpt: out of memory\n");
    } else if (!(ok = text_split(tr, va, 0.1))) {
        fprintf(stderr, "gpt: %s (%lld bytes) is too small to split off validation text\n", data,
                (long long)tr->n);
    }
    if (!ok) text_free(tr);
    return ok;
}

static int cmd_train(int argc, char **argv)
{
    const char *data = NULL, *val = NULL, *pos = "alibi", *out = "gpt.safetensors",
               *resume = NULL, *slopes = "fixed";
    int64_t context = 128, batch = 16, layers = 4, heads = 4, kv_heads = 0, dim = 128,
            steps = 500, warmup = 50, seed = 1, threads = 0, eval_every = 100, eval_tokens = 65536,
            stop_after = 0;
    double lr = 2e-3, wd = 0.1, clip = 1.0, dropout = 0.0;
    char pos_help[300];
    snprintf(pos_help, sizeof pos_help, "positional method: %s (default alibi)", pos_list());
    flag flags[] = {
        {"data", F_STR, &data, "training text, a file of at most 1 GiB (default: the built-in "
                               "synthetic corpus)"},
        {"val", F_STR, &val, "validation text (default: the last 10% of --data)"},
        {"pos", F_STR, &pos, pos_help},
        {"slopes", F_STR, &slopes, "ALiBi's slopes: fixed (the paper's) or learned (default "
                                   "fixed; kept in the checkpoint)"},
        {"context", F_INT, &context, "training length L in bytes (default 128)"},
        {"batch", F_INT, &batch, "sequences per step, over all ranks (default 16)"},
        {"layers", F_INT, &layers, "transformer blocks (default 4)"},
        {"heads", F_INT, &heads, "attention heads (default 4)"},
        {"kv-heads", F_INT, &kv_heads, "key/value heads for GQA (default: --heads)"},
        {"dim", F_INT, &dim, "model width (default 128)"},
        {"steps", F_INT, &steps, "optimizer steps (default 500; resuming: the run's)"},
        {"lr", F_NUM, &lr, "peak learning rate (default 2e-3)"},
        {"warmup", F_INT, &warmup, "linear warmup steps (default 50)"},
        {"weight-decay", F_NUM, &wd, "AdamW decoupled weight decay (default 0.1)"},
        {"clip", F_NUM, &clip, "global gradient-norm clip, 0 = off (default 1.0)"},
        {"dropout", F_NUM, &dropout, "dropout on residual branches (default 0)"},
        {"seed", F_INT, &seed, "initialisation and data-order seed (default 1)"},
        {"threads", F_INT, &threads, "worker threads, per rank (default: SL_NUM_THREADS or "
                                     "the rank's CPUs)"},
        {"out", F_STR, &out, "checkpoint to write (default gpt.safetensors; locked while "
                             "training)"},
        {"resume", F_STR, &resume, "training checkpoint to continue: its model and settings are "
                                   "used"},
        {"stop-after", F_INT, &stop_after, "stop (and save) after N steps of this run"},
        {"eval-every", F_INT, &eval_every, "validate and save every N steps, 0 = at the end "
                                           "(default: 100, or --steps if fewer)"},
        {"eval-tokens", F_INT, &eval_tokens, "validation bytes per evaluation (default 65536)"},
    };
    int nf = sizeof flags / sizeof *flags;
    int parsed = parse_flags(argc, argv, flags, nf);
    if (parsed != PARSE_OK) return usage_exit(parsed, "gpt train [flags]", flags, nf);
    sl_pos method;
    if (!sl_pos_parse(pos, &method)) {
        sl_error_clear();
        fprintf(stderr, "gpt: unknown --pos '%s' (known: %s)\n", pos, pos_list());
        return 2;
    }
    sl_slopes slopes_kind;
    if (!sl_slopes_parse(slopes, &slopes_kind)) {
        fprintf(stderr, "gpt: unknown --slopes '%s' (known: fixed, learned)\n", slopes);
        return 2;
    }
    if (slopes_kind != SL_SLOPES_FIXED && method != SL_POS_ALIBI) {
        fprintf(stderr, "gpt: --slopes %s needs --pos alibi\n", slopes);
        return 2;
    }
    if (!check_range("context", context, 2, 1 << 20) || !check_range("batch", batch, 1, 1 << 16) ||
        !check_range("layers", layers, 1, 256) || !check_range("heads", heads, 1, 1024) ||
        !check_range("kv-heads", kv_heads, 0, heads) || !check_range("dim", dim, 1, 1 << 16) ||
        !check_range("steps", steps, 1, INT64_C(1) << 40) ||
        !check_range("warmup", warmup, 0, INT64_C(1) << 40) ||
        !check_range("threads", threads, 0, 256) ||
        !check_range("eval-every", eval_every, 0, INT64_C(1) << 40) ||
        !check_range("stop-after", stop_after, 0, INT64_C(1) << 40) ||
        !check_range("eval-tokens", eval_tokens, 1, INT64_C(1) << 40) ||
        !check_range("seed", seed, 0, INT64_MAX))
        return 2;
    if (!check_number("lr", lr, 0, false, INFINITY) ||
        !check_number("weight-decay", wd, 0, true, INFINITY) ||
        !check_number("clip", clip, 0, true, INFINITY) ||
        !check_number("dropout", dropout, 0, true, 1) || dropout == 1) {
        if (dropout == 1) fprintf(stderr, "gpt: --dropout must be in [0, 1), got 1\n");
        return 2;
    }
    train_opts o = {
        .cfg = {.vocab_size = 256, .context = context, .dim = dim, .n_layers = (int)layers,
                .n_heads = (int)heads, .n_kv_heads = (int)kv_heads, .mlp_ratio = 4, .pos = method,
                .tie_embeddings = true, .fused_qkv = true, .dropout = dropout,
                .seed = (uint64_t)seed, .slopes = slopes_kind},
        .batch = batch, .steps = steps, .warmup = warmup, .eval_every = eval_every,
        .eval_tokens = eval_tokens, .stop_after = stop_after, .lr = lr, .min_lr_frac = 0.1,
        .weight_decay = wd, .clip = clip, .out = out, .resume = resume, .data_path = data,
        .val_path = val};
    int64_t start = 0;
    if (resume) {
        int rc = resume_merge(&o, flags, nf, &start);
        if (rc) return rc;
    } else if (!flag_given(flags, nf, "eval-every")) {
        o.eval_every = o.steps < 100 ? o.steps : 100;
    }
    if (!check_range("eval-every", o.eval_every, 0, o.steps) ||
        !check_range("stop-after", o.stop_after, 0, o.steps - start))
        return 2;
    if (threads) sl_set_num_threads((int)threads);
    /* The output is locked (and its directory found writable) before anything else. */
    out_lock lock;
    if (!lock_output(out, &lock)) return 1;
    text tr, va;
    int rc = 1;
    if (!load_texts(o.data_path, o.val_path, &tr, &va)) goto unlock;
    char err[512];
    if (!text_check_vocab(&tr, o.cfg.vocab_size, err, sizeof err) ||
        !text_check_vocab(&va, o.cfg.vocab_size, err, sizeof err)) {
        fprintf(stderr, "gpt: %s\n", err);
        goto free_texts;
    }
    stop_on_signals();
    train_result r;
    sl_gpt *m = train_run(&o, &tr, &va, &r);
    if (m && r.stopped_by) {
        rc = 128 + r.stopped_by; /* as a shell reports a program a signal ended */
    } else if (m) {
        if (dist_rank() == 0)
            fprintf(stderr,
                    "done: %lld steps in %.1f s (%.0f tokens/s); train loss (avg) %.4f, last step "
                    "%.4f; val loss %.4f (ppl %.3f, %.3f bits/byte); saved %s\n",
                    (long long)r.steps, r.seconds, r.tokens_per_s, r.train_loss_avg, r.train_loss,
                    r.val_loss, exp(r.val_loss), r.val_loss / log(2.0), out);
        rc = 0;
    }
    sl_gpt_free(m);
free_texts:
    text_free(&tr);
    text_free(&va);
unlock:
    unlock_output(&lock);
    return rc;
}

/* ---------------------------------------------------------------- eval */

/* Writes the per-position losses of one length as CSV rows (length, bucket, n, nll, ppl). */
static void write_positions(FILE *f, int64_t T, const pos_loss *pl, int per_octave)
{
    int64_t edges[4096];
    int n = pos_buckets(T, per_octave, edges, 4096);
    for (int b = 0; b + 1 < n; b++) {
        double s = 0;
        int64_t c = 0;
        for (int64_t i = edges[b]; i < edges[b + 1] && i < pl->cap; i++)
            s += pl->sum[i], c += pl->count[i];
        if (c)
            fprintf(f, "%lld,%lld,%lld,%lld,%.6f,%.6f\n", (long long)T, (long long)edges[b],
                    (long long)edges[b + 1], (long long)c, s / (double)c, exp(s / (double)c));
    }
}

static int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL, *lengths_s = NULL, *distant_s = NULL, *slope_s = NULL,
               *positions = NULL;
    int64_t stride = 0, max_tokens = 65536, threads = 0, score_last = -1, same_bytes = 16384,
            window = 0, per_octave = 4;
    flag flags[] = {
        {"ckpt", F_STR, &ckpt, "checkpoint written by gpt train (required)"},
        {"data", F_STR, &data, "text to evaluate on (default: the built-in validation text)"},
        {"lengths", F_STR, &lengths_s, "comma-separated window lengths (default L,2L,4L,8L)"},
        {"stride", F_INT, &stride, "sliding-window stride (default: half of each length)"},
        {"max-tokens", F_INT, &max_tokens, "bytes evaluated per length (default 65536)"},
        {"score-last", F_INT, &score_last,
         "same-tokens protocol: score the last S predictions "
         "of each window, the same bytes at every length "
         "(default L/2, at most the shortest length; 0: off)"},
        {"same-bytes", F_INT, &same_bytes,
         "bytes the same-tokens protocol scores at most "
         "(default 16384)"},
        {"distant", F_STR, &distant_s,
         "k1,k2,...: also same tokens with the input more than "
         "k L before each window's first scored byte replaced by "
         "text from half the file away"},
        {"window", F_INT, &window,
         "attention window for every layer (0: none; L: the "
         "sliding-window control)"},
        {"slope-scale", F_STR, &slope_s,
         "ALiBi: multiply the slopes by X, or 'auto' for L/T at "
         "each length T > L (position interpolation)"},
        {"per-position", F_STR, &positions,
         "write the non-overlapping loss by position in the "
         "window to this CSV file"},
        {"buckets-per-octave", F_INT, &per_octave,
         "per-position buckets: log-spaced, this many "
         "per doubling (default 4; 0: every position)"},
        {"threads", F_INT, &threads, "worker threads"},
    };
    int nf = sizeof flags / sizeof *flags;
    int parsed = parse_flags(argc, argv, flags, nf);
    if (parsed == PARSE_OK && !ckpt) {
        fprintf(stderr, "gpt: eval needs --ckpt\n");
        parsed = PARSE_ERROR;
    }
    if (parsed != PARSE_OK) return usage_exit(parsed, "gpt eval --ckpt CKPT [flags]", flags, nf);
    if (!check_range("stride", stride, 0, INT64_C(1) << 40) ||
        !check_range("max-tokens", max_tokens, 2, INT64_C(1) << 40) ||
        !check_range("score-last", score_last, -1, INT64_C(1) << 30) ||
        !check_range("same-bytes", same_bytes, 1, INT64_C(1) << 40) ||
        !check_range("window", window, 0, INT64_C(1) << 40) ||
        !check_range("buckets-per-octave", per_octave, 0, 64) ||
        !check_range("threads", threads, 0, 256))
        return 2;
    int64_t distant[16];
    int nd = 0;
    if (distant_s && (nd = parse_int_list(distant_s, distant, 16)) <= 0) {
        fprintf(stderr, "gpt: --distant takes positive integers separated by commas, got '%s'\n",
                distant_s);
        return 2;
    }
    double slope_scale = 1;
    bool slope_auto = slope_s && !strcmp(slope_s, "auto");
    if (slope_s && !slope_auto) {
        char *end;
        slope_scale = strtod(slope_s, &end);
        if (!*slope_s || *end || !(isfinite(slope_scale) && slope_scale > 0)) {
            fprintf(stderr, "gpt: --slope-scale takes a number > 0 or 'auto', got '%s'\n", slope_s);
            return 2;
        }
    }
    if (threads) sl_set_num_threads((int)threads);
    sl_gpt *m = sl_gpt_load(ckpt, SL_F32);
    if (!m) return fail("cannot load the checkpoint");
    int64_t lengths[64];
    int nl;
    int64_t L = m->cfg.context;
    if (slope_s && m->cfg.pos != SL_POS_ALIBI) {
        fprintf(stderr, "gpt: --slope-scale needs an ALiBi model; %s has %s positions\n", ckpt,
                sl_pos_name(m->cfg.pos));
        sl_gpt_free(m);
        return 2;
    }
    if (lengths_s) {
        nl = parse_int_list(lengths_s, lengths, 64);
        if (nl <= 0) {
            fprintf(stderr, "gpt: --lengths takes positive integers separated by commas, got '%s'\n",
                    lengths_s);
            sl_gpt_free(m);
            return 2;
        }
    } else { /* L, 2L, 4L, 8L (L is at most SL_GPT_MAX_CONTEXT: no overflow) */
        nl = 0;
        for (int i = 0; i < 4 && L <= INT64_MAX >> i; i++) lengths[nl++] = L << i;
    }
    text t;
    char err[512];
    if (data) {
        if (!text_read(&t, data, err, sizeof err)) {
            fprintf(stderr, "gpt: %s\n", err);
            sl_gpt_free(m);
            return 1;
        }
    } else {
        text_builtin(&t, 1, 256 << 10);
    }
    bool usable = t.n >= 2 && text_check_vocab(&t, m->cfg.vocab_size, err, sizeof err);
    if (!usable) {
        if (t.n < 2)
            fprintf(stderr, "gpt: %s has %lld bytes; evaluation needs at least 2 (a byte and the "
                    "one after it)\n", t.source, (long long)t.n);
        else
            fprintf(stderr, "gpt: %s\n", err);
        text_free(&t);
        sl_gpt_free(m);
        return 1;
    }
    int64_t span = t.n - 1 < max_tokens ? t.n - 1 : max_tokens;
    /* The same-tokens plan: S scored per window, the longest length that fits as Tmax. */
    same_plan plan = {0, 0, same_bytes};
    int64_t shortest = INT64_MAX;
    for (int i = 0; i < nl; i++) {
        if (lengths[i] <= span && lengths[i] > plan.Tmax) plan.Tmax = lengths[i];
        if (lengths[i] < shortest) shortest = lengths[i];
    }
    plan.S = score_last >= 0 ? score_last : (L / 2 > 0 ? L / 2 : 1);
    if (score_last < 0 && plan.S > shortest) plan.S = shortest;
    if (plan.S > shortest) {
        fprintf(stderr, "gpt: --score-last %lld is longer than the shortest length %lld\n",
                (long long)plan.S, (long long)shortest);
        text_free(&t);
        sl_gpt_free(m);
        return 2;
    }
    int64_t K = plan.S ? same_tokens_windows(&plan, span) : 0;
    FILE *pf = NULL;
    if (positions && !(pf = fopen(positions, "w"))) {
        fprintf(stderr, "gpt: cannot write '%s': %s\n", positions, strerror(errno));
        text_free(&t);
        sl_gpt_free(m);
        return 1;
    }
    if (pf) fprintf(pf, "length,pos_lo,pos_hi,n,nll,ppl\n");
    if (window && !sl_gpt_set_window(m, window)) {
        fail("cannot set the window");
        if (pf) fclose(pf);
        text_free(&t);
        sl_gpt_free(m);
        return 1;
    }
    printf("# gpt eval: %s (pos %s%s, trained at L = %lld) on %s, first %lld bytes\n", ckpt,
           sl_pos_name(m->cfg.pos), m->cfg.slopes == SL_SLOPES_LEARNED ? ", learned slopes" : "",
           (long long)L, t.source, (long long)span);
    if (window) printf("# attention window %lld in every layer\n", (long long)window);
    if (slope_s)
        printf("# ALiBi slopes scaled by %s\n",
               slope_auto ? "L / T at each length T > L" : slope_s);
    printf("# nonoverlap: window T, stride T, every prediction scored (the paper's protocol)\n"
           "# sliding: window T, the stride below; the first window scores all, the others "
           "their last stride\n");
    if (K)
        printf("# same-tok: window T, stride %lld, the last %lld predictions scored: the same "
               "%lld bytes at every length (offsets %lld .. %lld)\n",
               (long long)plan.S, (long long)plan.S, (long long)(K * plan.S),
               (long long)(plan.Tmax - plan.S + 1), (long long)(plan.Tmax + (K - 1) * plan.S));
    for (int k = 0; k < nd && K; k++)
        printf("# beyond-%lldL: same-tok with the input more than %lld bytes before each "
               "window's first scored byte replaced by text from half the file away\n",
               (long long)distant[k], (long long)(distant[k] * L));
    printf("%8s %8s %12s %10s %8s %12s %10s", "length", "x L", "ppl", "bits/byte", "stride",
           "sliding ppl", "bits/byte");
    if (K) printf(" %12s %10s", "same-tok ppl", "bits/byte");
    for (int k = 0; k < nd && K; k++) {
        char h[32];
        snprintf(h, sizeof h, "beyond-%lldL", (long long)distant[k]);
        printf(" %12s", h);
    }
    printf("\n");
    sl_arena *step = sl_arena_new(0);
    sl_arena *prev = sl_arena_set(step);
    bool g = sl_set_grad_enabled(false);
    m->train = false;
    int rc = 0;
    pos_loss pl = {0};
    for (int i = 0; i < nl; i++) {
        int64_t T = lengths[i], st = stride ? stride : (T / 2 ? T / 2 : 1);
        if (T > span) {
            printf("%8lld %8.2f %12s %10s %8s %12s %10s   (longer than the %lld evaluated bytes)\n",
                   (long long)T, (double)T / (double)L, "n/a", "n/a", "", "n/a", "n/a",
                   (long long)span);
            continue;
        }
        if (st > T) st = T;
        if (slope_s && !sl_gpt_scale_slopes(m, slope_auto ? (T > L ? (double)L / (double)T : 1)
                                                          : slope_scale)) {
            rc = fail("cannot scale the slopes");
            break;
        }
        if (pf) {
            free(pl.sum), free(pl.count);
            pl = (pos_loss){calloc((size_t)T, sizeof(double)), calloc((size_t)T, sizeof(int64_t)),
                            T};
            if (!pl.sum || !pl.count) {
                rc = 1, fprintf(stderr, "gpt: out of memory\n");
                break;
            }
        }
        score a, b, c = {NAN, 0}, dk[16];
        bool ok = eval_nonoverlap_pos(m, &t, T, span, step, &a, pf ? &pl : NULL) &&
                  eval_sliding(m, &t, T, st, span, step, &b) &&
                  (!K || eval_same_tokens(m, &t, T, &plan, -1, span, step, &c, NULL));
        for (int k = 0; ok && K && k < nd; k++)
            ok = eval_same_tokens(m, &t, T, &plan, distant[k] * L, span, step, &dk[k], NULL);
        if (!ok) {
            /* e.g. a learned-position model asked past its table: say so and go on */
            printf("%8lld %8.2f %12s %10s %8s %12s %10s   (%s)\n", (long long)T,
                   (double)T / (double)L, "n/a", "n/a", "", "n/a", "n/a", sl_error_message());
            sl_error_clear();
            sl_arena_reset(step);
            continue;
        }
        printf("%8lld %8.2f %12.4f %10.4f %8lld %12.4f %10.4f", (long long)T, (double)T / (double)L,
               exp(a.nll), a.nll / log(2.0), (long long)st, exp(b.nll), b.nll / log(2.0));
        if (K) printf(" %12.4f %10.4f", exp(c.nll), c.nll / log(2.0));
        for (int k = 0; k < nd && K; k++) printf(" %12.4f", exp(dk[k].nll));
        printf("\n");
        if (pf) write_positions(pf, T, &pl, (int)per_octave);
        fflush(stdout);
    }
    free(pl.sum), free(pl.count);
    if (pf && fclose(pf) != 0) rc = 1, fprintf(stderr, "gpt: cannot write '%s'\n", positions);
    sl_set_grad_enabled(g);
    sl_arena_set(prev);
    sl_arena_free(step);
    text_free(&t);
    sl_gpt_free(m);
    return rc;
}

/* ---------------------------------------------------------------- sample */

/* Draws a byte from logits (V) with temperature and top-k (0: all). */
static int draw(const float *logits, int64_t V, double temperature, int64_t top_k, sl_rng *rng)
{
    double p[256], mx = -INFINITY;
    int64_t n = V < 256 ? V : 256;
    if (temperature <= 0) { /* greedy */
        int best = 0;
        for (int64_t v = 1; v < n; v++)
            if (logits[v] > logits[best]) best = (int)v;
        return best;
    }
    for (int64_t v = 0; v < n; v++) mx = logits[v] > mx ? logits[v] : mx;
    double kth = -INFINITY;
    if (top_k > 0 && top_k < n) { /* the k-th largest logit */
        float sorted[256];
        memcpy(sorted, logits, sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < top_k; i++)
            for (int64_t j = i + 1; j < n; j++)
                if (sorted[j] > sorted[i]) {
                    float tmp = sorted[i];
                    sorted[i] = sorted[j];
                    sorted[j] = tmp;
                }
        kth = sorted[top_k - 1];
    }
    double z = 0;
    for (int64_t v = 0; v < n; v++) {
        p[v] = logits[v] >= kth ? exp((logits[v] - mx) / temperature) : 0;
        z += p[v];
    }
    double u = sl_rng_uniform(rng) * z;
    for (int64_t v = 0; v < n; v++) {
        u -= p[v];
        if (u < 0) return (int)v;
    }
    return (int)(n - 1);
}

static int cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *prompt = "";
    int64_t tokens = 200, top_k = 40, seed = 1, threads = 0;
    double temperature = 0.8;
    flag flags[] = {
        {"ckpt", F_STR, &ckpt, "checkpoint written by gpt train (required)"},
        {"prompt", F_STR, &prompt, "text to continue (default: a newline)"},
        {"tokens", F_INT, &tokens, "bytes to generate (default 200)"},
        {"temperature", F_NUM, &temperature, "softmax temperature, 0 = greedy (default 0.8)"},
        {"top-k", F_INT, &top_k, "sample among the k likeliest bytes, 0 = all (default 40)"},
        {"seed", F_INT, &seed, "sampling seed (default 1)"},
        {"threads", F_INT, &threads, "worker threads"},
    };
    int nf = sizeof flags / sizeof *flags;
    int parsed = parse_flags(argc, argv, flags, nf);
    if (parsed == PARSE_OK && !ckpt) {
        fprintf(stderr, "gpt: sample needs --ckpt\n");
        parsed = PARSE_ERROR;
    }
    if (parsed != PARSE_OK) return usage_exit(parsed, "gpt sample --ckpt CKPT [flags]", flags, nf);
    if (!check_range("tokens", tokens, 0, 1 << 20) || !check_range("top-k", top_k, 0, 256) ||
        !check_range("threads", threads, 0, 256))
        return 2;
    if (!check_number("temperature", temperature, 0, true, INFINITY)) return 2;
    if (threads) sl_set_num_threads((int)threads);
    sl_gpt *m = sl_gpt_load(ckpt, SL_F32);
    if (!m) return fail("cannot load the checkpoint");
    m->train = false;
    int64_t P = (int64_t)strlen(prompt);
    const char *start = P ? prompt : "\n";
    if (!P) P = 1;
    for (int64_t i = 0; i < P; i++)
        if ((unsigned char)start[i] >= m->cfg.vocab_size) {
            fprintf(stderr, "gpt: byte %d of the prompt is outside the model's vocabulary of "
                    "%lld\n", (unsigned char)start[i], (long long)m->cfg.vocab_size);
            sl_gpt_free(m);
            return 1;
        }
    int64_t cap = P + tokens;
    int n_kv = m->cfg.n_kv_heads ? m->cfg.n_kv_heads : m->cfg.n_heads;
    sl_arena *keep = sl_arena_new(0), *step = sl_arena_new(0);
    sl_arena *prev = sl_arena_set(keep);
    bool g = sl_set_grad_enabled(false);
    sl_kv_cache **caches = sl_arena_alloc(keep, sizeof *caches * (size_t)m->cfg.n_layers, 16);
    int rc = 1;
    for (int l = 0; caches && l < m->cfg.n_layers; l++)
        if (!(caches[l] = sl_kv_cache_new(SL_F32, 1, n_kv, cap, m->cfg.dim / m->cfg.n_heads))) {
            fail("cannot make the KV cache");
            goto out;
        }
    sl_rng rng = sl_rng_seed((uint64_t)seed);
    sl_arena_set(step);
    fputs(prompt, stdout);
    sl_tensor *idx = sl_empty(SL_I32, sl_shape(1, P));
    for (int64_t i = 0; idx && i < P; i++) ((int32_t *)idx->data)[i] = (unsigned char)start[i];
    for (int64_t i = 0; i < tokens; i++) {
        sl_tensor *logits = idx ? sl_gpt_forward(m, idx, caches) : NULL;
        if (!logits) {
            fputc('\n', stdout);
            fail("sampling failed");
            goto out;
        }
        int64_t T = logits->shape[1], V = logits->shape[2];
        int b = draw((const float *)logits->data + (T - 1) * V, V, temperature, top_k, &rng);
        putchar(b);
        fflush(stdout);
        sl_arena_reset(step);
        idx = sl_full(SL_I32, sl_shape(1, 1), b);
    }
    putchar('\n');
    rc = 0;
out:
    sl_set_grad_enabled(g);
    sl_arena_set(prev);
    sl_arena_free(step);
    sl_arena_free(keep);
    sl_gpt_free(m);
    return rc;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: gpt <command> [flags]\n"
            "  train   train a byte-level GPT (default data: a built-in synthetic corpus)\n"
            "  eval    perplexity and bits/byte at several window lengths\n"
            "  sample  generate text with a KV cache\n"
            "  experiment  train one model per positional method, compare them at many lengths\n"
            "Run 'gpt <command> --help' for the flags of a command.\n");
}

static int run(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sample")) return cmd_sample(argc - 2, argv + 2);
    if (!strcmp(argv[1], "experiment")) return cmd_experiment(argc - 2, argv + 2);
    fprintf(stderr, "gpt: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    int rc = dist_start(&argc, &argv); /* MPI, when mpirun started this process (dist.c) */
    if (rc < 0) rc = run(argc, argv);
    return dist_end(rc);
}
