/* examples/gpt/main.c — a byte-level GPT: train short, evaluate long, sample.
 *
 *   gpt train  [--data FILE] [--val FILE] [--pos alibi|none] [--context L] ... [--out CKPT]
 *   gpt eval   --ckpt CKPT [--data FILE] [--lengths 128,256,512] [--stride S]
 *   gpt sample --ckpt CKPT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
 *
 * Everything the program does goes through the public API (<shortlong/shortlong.h>): the model
 * is sl_gpt, training uses sl_adamw with a warmup-cosine schedule and gradient clipping, each
 * step runs in a step arena that is reset afterwards, and checkpoints are safetensors files. */
#include "data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- flags */

typedef struct {
    const char *name;
    enum { F_STR, F_INT, F_NUM } kind;
    void *value;
    const char *help;
} flag;

static bool parse_flags(int argc, char **argv, const flag *flags, int n)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return false;
        const flag *f = NULL;
        for (int k = 0; k < n; k++)
            if (a[0] == '-' && a[1] == '-' && !strcmp(a + 2, flags[k].name)) f = &flags[k];
        if (!f) {
            fprintf(stderr, "gpt: unknown argument '%s'\n", a);
            return false;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gpt: --%s needs a value\n", f->name);
            return false;
        }
        const char *v = argv[++i];
        char *end = NULL;
        switch (f->kind) {
        case F_STR: *(const char **)f->value = v; break;
        case F_INT: {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end) {
                fprintf(stderr, "gpt: --%s takes an integer, got '%s'\n", f->name, v);
                return false;
            }
            *(int64_t *)f->value = x;
            break;
        }
        case F_NUM: {
            double x = strtod(v, &end);
            if (!*v || *end || !isfinite(x)) {
                fprintf(stderr, "gpt: --%s takes a number, got '%s'\n", f->name, v);
                return false;
            }
            *(double *)f->value = x;
            break;
        }
        }
    }
    return true;
}

static void print_flags(const flag *flags, int n)
{
    for (int k = 0; k < n; k++) fprintf(stderr, "  --%-13s %s\n", flags[k].name, flags[k].help);
}

static bool check_range(const char *name, int64_t v, int64_t lo, int64_t hi)
{
    if (v >= lo && v <= hi) return true;
    fprintf(stderr, "gpt: --%s must be in [%lld, %lld], got %lld\n", name, (long long)lo,
            (long long)hi, (long long)v);
    return false;
}

static int fail(const char *what)
{
    fprintf(stderr, "gpt: %s: %s\n", what, sl_error_message());
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_duration(double s, char *buf, size_t cap)
{
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

/* RNG state <-> metadata hex, for bitwise resumption. */
static void rng_to_hex(const sl_rng *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "%016llx%016llx%016llx%016llx", (unsigned long long)r->s[0],
             (unsigned long long)r->s[1], (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
}

static bool rng_from_hex(const char *hex, sl_rng *r)
{
    if (strlen(hex) != 64) return false;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, hex + 16 * i, 16);
        part[16] = '\0';
        char *end;
        r->s[i] = strtoull(part, &end, 16);
        if (*end) return false;
    }
    return true;
}

/* ---------------------------------------------------------------- evaluation */

/* Mean next-byte loss (nats) of the model on `rows` windows of length T whose first `skip`
 * predictions are not counted, accumulated into *sum / *count. Grad mode must be off. */
static bool score_windows(sl_gpt *m, const text *t, int64_t start, int64_t T, int64_t stride,
                          int64_t rows, int64_t skip, double *sum, int64_t *count)
{
    sl_tensor *idx, *tgt;
    if (!windows_at(t, start, T, stride, rows, &idx, &tgt)) return false;
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL);
    if (!logits) return false;
    int64_t V = logits->shape[2];
    const float *lg = logits->data;
    const int32_t *y = tgt->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = skip; i < T; i++) {
            const float *row = lg + (r * T + i) * V;
            double mx = row[0];
            for (int64_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            double se = 0;
            for (int64_t v = 0; v < V; v++) se += exp(row[v] - mx);
            *sum += mx + log(se) - row[y[r * T + i]];
            (*count)++;
        }
    return true;
}

typedef struct {
    double nll;  /* mean nats per byte */
    int64_t n;   /* bytes scored */
} score;

/* Non-overlapping windows of T over the first `span` + 1 bytes: every prediction counts. */
static bool eval_nonoverlap(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
                            score *out)
{
    int64_t W = span / T, per = T >= 2048 ? 1 : 2048 / T;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t w = 0; w < W; w += per) {
        int64_t rows = W - w < per ? W - w : per;
        bool ok = score_windows(m, t, w * T, T, T, rows, 0, &sum, &cnt);
        sl_arena_reset(step);
        if (!ok) return false;
    }
    out->nll = cnt ? sum / (double)cnt : NAN;
    out->n = cnt;
    return true;
}

/* Sliding windows of T moved by `stride`: the first window scores all its predictions, each
 * later one only its last `stride` (so every scored byte has at least T - stride context). */
static bool eval_sliding(sl_gpt *m, const text *t, int64_t T, int64_t stride, int64_t span,
                         sl_arena *step, score *out)
{
    double sum = 0;
    int64_t cnt = 0;
    if (span < T) {
        out->nll = NAN;
        out->n = 0;
        return true;
    }
    bool ok = score_windows(m, t, 0, T, T, 1, 0, &sum, &cnt);
    sl_arena_reset(step);
    if (!ok) return false;
    int64_t n_more = (span - T) / stride, per = T >= 2048 ? 1 : 2048 / T;
    for (int64_t w = 0; w < n_more; w += per) {
        int64_t rows = n_more - w < per ? n_more - w : per;
        ok = score_windows(m, t, (w + 1) * stride, T, stride, rows, T - stride, &sum, &cnt);
        sl_arena_reset(step);
        if (!ok) return false;
    }
    out->nll = sum / (double)cnt;
    out->n = cnt;
    return true;
}

/* ---------------------------------------------------------------- train */

static int cmd_train(int argc, char **argv)
{
    const char *data = NULL, *val = NULL, *pos = "alibi", *out = "gpt.safetensors",
               *resume = NULL;
    int64_t context = 128, batch = 16, layers = 4, heads = 4, kv_heads = 0, dim = 128,
            steps = 500, warmup = 50, seed = 1, threads = 0, eval_every = 100, eval_tokens = 65536,
            stop_after = 0;
    double lr = 2e-3, min_lr_frac = 0.1, wd = 0.1, clip = 1.0, dropout = 0.0;
    flag flags[] = {
        {"data", F_STR, &data, "training text (default: the built-in synthetic corpus)"},
        {"val", F_STR, &val, "validation text (default: the last 10% of --data)"},
        {"pos", F_STR, &pos, "positional method: alibi or none (default alibi)"},
        {"context", F_INT, &context, "training length L in bytes (default 128)"},
        {"batch", F_INT, &batch, "sequences per step (default 16)"},
        {"layers", F_INT, &layers, "transformer blocks (default 4)"},
        {"heads", F_INT, &heads, "attention heads (default 4)"},
        {"kv-heads", F_INT, &kv_heads, "key/value heads for GQA (default: --heads)"},
        {"dim", F_INT, &dim, "model width (default 128)"},
        {"steps", F_INT, &steps, "optimizer steps (default 500)"},
        {"lr", F_NUM, &lr, "peak learning rate (default 2e-3)"},
        {"warmup", F_INT, &warmup, "linear warmup steps (default 50)"},
        {"weight-decay", F_NUM, &wd, "AdamW decoupled weight decay (default 0.1)"},
        {"clip", F_NUM, &clip, "global gradient-norm clip, 0 = off (default 1.0)"},
        {"dropout", F_NUM, &dropout, "dropout on residual branches (default 0)"},
        {"seed", F_INT, &seed, "initialisation and data-order seed (default 1)"},
        {"threads", F_INT, &threads, "worker threads (default: SL_NUM_THREADS or all CPUs)"},
        {"out", F_STR, &out, "checkpoint to write (default gpt.safetensors)"},
        {"resume", F_STR, &resume, "training checkpoint to continue from"},
        {"stop-after", F_INT, &stop_after, "stop (and save) after N steps of this run; resume later"},
        {"eval-every", F_INT, &eval_every, "validate every N steps, 0 = only at the end (100)"},
        {"eval-tokens", F_INT, &eval_tokens, "validation bytes per evaluation (default 65536)"},
    };
    int nf = sizeof flags / sizeof *flags;
    if (!parse_flags(argc, argv, flags, nf)) {
        fprintf(stderr, "usage: gpt train [flags]\n");
        print_flags(flags, nf);
        return 2;
    }
    sl_pos method;
    if (!sl_pos_parse(pos, &method)) {
        fprintf(stderr, "gpt: unknown --pos '%s'\n", pos);
        return 2;
    }
    if (!check_range("context", context, 2, 1 << 20) || !check_range("batch", batch, 1, 1 << 16) ||
        !check_range("layers", layers, 1, 256) || !check_range("heads", heads, 1, 1024) ||
        !check_range("kv-heads", kv_heads, 0, heads) || !check_range("dim", dim, 1, 1 << 16) ||
        !check_range("steps", steps, 1, INT64_C(1) << 40) ||
        !check_range("warmup", warmup, 0, INT64_C(1) << 40) ||
        !check_range("threads", threads, 0, 256) || !check_range("eval-every", eval_every, 0, steps) ||
        !check_range("stop-after", stop_after, 0, steps) ||
        !check_range("eval-tokens", eval_tokens, 1, INT64_C(1) << 40))
        return 2;
    if (lr <= 0 || wd < 0 || clip < 0 || dropout < 0 || dropout >= 1) {
        fprintf(stderr, "gpt: --lr must be > 0, --weight-decay and --clip >= 0, --dropout in [0, 1)\n");
        return 2;
    }
    if (threads) sl_set_num_threads((int)threads);

    text train_text, val_text;
    char err[512];
    if (data) {
        if (!text_read(&train_text, data, err, sizeof err)) {
            fprintf(stderr, "gpt: %s\n", err);
            return 1;
        }
        if (val) {
            if (!text_read(&val_text, val, err, sizeof err)) {
                fprintf(stderr, "gpt: %s\n", err);
                text_free(&train_text);
                return 1;
            }
        } else if (!text_split(&train_text, &val_text, 0.1)) {
            fprintf(stderr, "gpt: %s is too small to split off validation text\n", data);
            text_free(&train_text);
            return 1;
        }
    } else {
        text_builtin(&train_text, 0, 2 << 20);
        text_builtin(&val_text, 1, 256 << 10);
    }
    int rc = 1;
    sl_gpt *m = NULL;
    sl_optim *opt = NULL;
    sl_arena *step_arena = sl_arena_new(0);
    if (train_text.n < context + 2 || val_text.n < context + 2) {
        fprintf(stderr, "gpt: the training and validation texts need more than %lld bytes each\n",
                (long long)context + 1);
        goto done;
    }

    sl_gpt_config cfg = {.vocab_size = 256, .context = context, .dim = dim, .n_layers = (int)layers,
                         .n_heads = (int)heads, .n_kv_heads = (int)kv_heads, .mlp_ratio = 4,
                         .pos = method, .tie_embeddings = true, .fused_qkv = true,
                         .dropout = dropout, .seed = (uint64_t)seed};
    sl_rng data_rng = sl_rng_seed((uint64_t)seed * 7919 + 17);
    int64_t start_step = 0;
    if (resume) {
        m = sl_gpt_load(resume, SL_F32);
        if (!m) {
            fail("cannot resume");
            goto done;
        }
        cfg = m->cfg;
        context = cfg.context;
    } else {
        m = sl_gpt_new(&cfg, SL_F32);
        if (!m) {
            fail("cannot build the model");
            goto done;
        }
    }
    opt = sl_adamw_new(m->params, &(sl_adamw_config){.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                                                     .weight_decay = wd});
    if (!opt) {
        fail("cannot make the optimizer");
        goto done;
    }
    if (resume) {
        char buf[128];
        if (!sl_load_training(resume, m->params, opt) ||
            !sl_read_meta(resume, "train.step", buf, sizeof buf)) {
            fail("cannot resume");
            goto done;
        }
        start_step = strtoll(buf, NULL, 10);
        if (!sl_read_meta(resume, "train.data_rng", buf, sizeof buf) ||
            !rng_from_hex(buf, &data_rng) ||
            !sl_read_meta(resume, "train.model_rng", buf, sizeof buf) ||
            !rng_from_hex(buf, &m->rng)) {
            fprintf(stderr, "gpt: %s lacks the training state (train.data_rng, train.model_rng)\n",
                    resume);
            goto done;
        }
        fprintf(stderr, "resuming %s at step %lld\n", resume, (long long)start_step);
    }
    fprintf(stderr,
            "gpt train: %s; %lld parameters; pos %s, L %lld, batch %lld, %d layers, %d heads, dim "
            "%lld; %lld steps, lr %g, %d threads\n  data: %s\n  val:  %s\n",
            out, (long long)sl_params_numel(m->params), sl_pos_name(cfg.pos), (long long)context,
            (long long)batch, cfg.n_layers, cfg.n_heads, (long long)cfg.dim, (long long)steps, lr,
            sl_get_num_threads(), train_text.source, val_text.source);

    bool tty = isatty(STDERR_FILENO);
    double t0 = now(), last_log = t0, loss_ema = NAN;
    int64_t tokens = 0;
    sl_arena *prev = sl_arena_set(step_arena);
    double val_loss = NAN, train_loss = NAN;
    for (int64_t step = start_step; step < steps; step++) {
        m->train = true;
        double lr_now = sl_lr_warmup_cosine(step, warmup, steps, lr, lr * min_lr_frac);
        sl_tensor *idx, *tgt;
        if (!batch_random(&train_text, batch, context, &data_rng, &idx, &tgt)) goto step_fail;
        sl_tensor *loss = sl_gpt_loss(m, idx, tgt);
        if (!loss || !sl_backward(loss)) goto step_fail;
        if (clip > 0) sl_params_clip_grad_norm(m->params, clip);
        if (!sl_optim_step(opt, lr_now)) goto step_fail;
        sl_params_zero_grad(m->params);
        train_loss = sl_item(loss);
        sl_arena_reset(step_arena);
        if (!isfinite(train_loss)) {
            fprintf(stderr, "\ngpt: the loss became %g at step %lld; try a lower --lr\n",
                    train_loss, (long long)step);
            goto unwind;
        }
        loss_ema = isnan(loss_ema) ? train_loss : 0.9 * loss_ema + 0.1 * train_loss;
        tokens += batch * context;
        int64_t done_steps = step + 1 - start_step;
        double t = now(), rate = (double)tokens / (t - t0);
        bool last = step + 1 == steps || done_steps == stop_after;
        bool do_eval = last || (eval_every && (step + 1) % eval_every == 0);
        if (tty && (t - last_log > 0.2 || last || do_eval)) {
            char eta[32];
            fmt_duration((t - t0) / (double)done_steps * (double)(steps - step - 1), eta, sizeof eta);
            fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s   ",
                    (long long)step + 1, (long long)steps, loss_ema, lr_now, rate, eta);
            last_log = t;
        } else if (!tty && (done_steps % 50 == 0 || last || do_eval)) {
            fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s\n", (long long)step + 1,
                    (long long)steps, loss_ema, lr_now, rate);
        }
        if (do_eval) {
            m->train = false;
            bool g = sl_set_grad_enabled(false);
            score s;
            int64_t span = val_text.n - 1 < eval_tokens ? val_text.n - 1 : eval_tokens;
            bool ok = eval_nonoverlap(m, &val_text, context, span, step_arena, &s);
            sl_set_grad_enabled(g);
            if (!ok) goto step_fail;
            val_loss = s.nll;
            fprintf(stderr, "%sstep %lld: val loss %.4f (ppl %.3f, %.3f bits/byte) on %lld bytes\n",
                    tty ? "\n" : "", (long long)step + 1, val_loss, exp(val_loss),
                    val_loss / log(2.0), (long long)s.n);
            char step_s[32], drng[80], mrng[80];
            snprintf(step_s, sizeof step_s, "%lld", (long long)step + 1);
            rng_to_hex(&data_rng, drng, sizeof drng);
            rng_to_hex(&m->rng, mrng, sizeof mrng);
            sl_meta extra[] = {{"train.step", step_s},
                               {"train.data_rng", drng},
                               {"train.model_rng", mrng},
                               {"train.data", train_text.source}};
            if (!sl_gpt_save(out, m, opt, extra, 4)) {
                fail("cannot save the checkpoint");
                goto unwind;
            }
        }
        if (last) break;
        continue;
    step_fail:
        fprintf(stderr, "\n");
        fail("training step failed");
        goto unwind;
    }
    {
        double t = now() - t0;
        fprintf(stderr,
                "done: %lld steps in %.1f s (%.0f tokens/s); final train loss %.4f, val loss %.4f "
                "(ppl %.3f, %.3f bits/byte); saved %s\n",
                (long long)(tokens / (batch * context)), t, (double)tokens / t, train_loss, val_loss,
                exp(val_loss), val_loss / log(2.0), out);
    }
    rc = 0;
unwind:
    sl_arena_set(prev);
done:
    sl_optim_free(opt);
    sl_gpt_free(m);
    sl_arena_free(step_arena);
    text_free(&train_text);
    text_free(&val_text);
    return rc;
}

/* ---------------------------------------------------------------- eval */

static int parse_lengths(const char *s, int64_t *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || (*end && *end != ',')) return -1;
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    return *s ? -1 : n;
}

static int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL, *lengths_s = NULL;
    int64_t stride = 0, max_tokens = 65536, threads = 0;
    flag flags[] = {
        {"ckpt", F_STR, &ckpt, "checkpoint written by gpt train (required)"},
        {"data", F_STR, &data, "text to evaluate on (default: the built-in validation text)"},
        {"lengths", F_STR, &lengths_s, "comma-separated window lengths (default L,2L,4L,8L)"},
        {"stride", F_INT, &stride, "sliding-window stride (default: half of each length)"},
        {"max-tokens", F_INT, &max_tokens, "bytes evaluated per length (default 65536)"},
        {"threads", F_INT, &threads, "worker threads"},
    };
    int nf = sizeof flags / sizeof *flags;
    if (!parse_flags(argc, argv, flags, nf) || !ckpt) {
        if (!ckpt) fprintf(stderr, "gpt: eval needs --ckpt\n");
        fprintf(stderr, "usage: gpt eval --ckpt CKPT [flags]\n");
        print_flags(flags, nf);
        return 2;
    }
    if (!check_range("stride", stride, 0, INT64_C(1) << 40) ||
        !check_range("max-tokens", max_tokens, 2, INT64_C(1) << 40) ||
        !check_range("threads", threads, 0, 256))
        return 2;
    if (threads) sl_set_num_threads((int)threads);
    sl_gpt *m = sl_gpt_load(ckpt, SL_F32);
    if (!m) return fail("cannot load the checkpoint");
    int64_t lengths[64];
    int nl;
    int64_t L = m->cfg.context;
    if (lengths_s) {
        nl = parse_lengths(lengths_s, lengths, 64);
        if (nl <= 0) {
            fprintf(stderr, "gpt: --lengths takes positive integers separated by commas, got '%s'\n",
                    lengths_s);
            sl_gpt_free(m);
            return 2;
        }
    } else {
        nl = 4;
        for (int i = 0; i < 4; i++) lengths[i] = L << i;
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
    int64_t span = t.n - 1 < max_tokens ? t.n - 1 : max_tokens;
    printf("# gpt eval: %s (pos %s, trained at L = %lld) on %s, first %lld bytes\n", ckpt,
           sl_pos_name(m->cfg.pos), (long long)L, t.source, (long long)span);
    printf("%8s %8s %12s %10s %8s %12s %10s\n", "length", "x L", "ppl", "bits/byte", "stride",
           "sliding ppl", "bits/byte");
    sl_arena *step = sl_arena_new(0);
    sl_arena *prev = sl_arena_set(step);
    bool g = sl_set_grad_enabled(false);
    m->train = false;
    int rc = 0;
    for (int i = 0; i < nl; i++) {
        int64_t T = lengths[i], st = stride ? stride : (T / 2 ? T / 2 : 1);
        if (T > span) {
            printf("%8lld %8.2f %12s %10s %8s %12s %10s   (longer than the %lld evaluated bytes)\n",
                   (long long)T, (double)T / (double)L, "n/a", "n/a", "", "n/a", "n/a",
                   (long long)span);
            continue;
        }
        if (st > T) st = T;
        score a, b;
        if (!eval_nonoverlap(m, &t, T, span, step, &a) ||
            !eval_sliding(m, &t, T, st, span, step, &b)) {
            /* e.g. a learned-position model asked past its table: say so and go on */
            printf("%8lld %8.2f %12s %10s %8s %12s %10s   (%s)\n", (long long)T,
                   (double)T / (double)L, "n/a", "n/a", "", "n/a", "n/a", sl_error_message());
            sl_error_clear();
            sl_arena_reset(step);
            continue;
        }
        printf("%8lld %8.2f %12.4f %10.4f %8lld %12.4f %10.4f\n", (long long)T,
               (double)T / (double)L, exp(a.nll), a.nll / log(2.0), (long long)st, exp(b.nll),
               b.nll / log(2.0));
        fflush(stdout);
    }
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
    if (!parse_flags(argc, argv, flags, nf) || !ckpt) {
        if (!ckpt) fprintf(stderr, "gpt: sample needs --ckpt\n");
        fprintf(stderr, "usage: gpt sample --ckpt CKPT [flags]\n");
        print_flags(flags, nf);
        return 2;
    }
    if (!check_range("tokens", tokens, 0, 1 << 20) || !check_range("top-k", top_k, 0, 256) ||
        !check_range("threads", threads, 0, 256))
        return 2;
    if (temperature < 0) {
        fprintf(stderr, "gpt: --temperature must be >= 0\n");
        return 2;
    }
    if (threads) sl_set_num_threads((int)threads);
    sl_gpt *m = sl_gpt_load(ckpt, SL_F32);
    if (!m) return fail("cannot load the checkpoint");
    m->train = false;
    int64_t P = (int64_t)strlen(prompt);
    const char *start = P ? prompt : "\n";
    if (!P) P = 1;
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

static void usage(void)
{
    fprintf(stderr,
            "usage: gpt <command> [flags]\n"
            "  train   train a byte-level GPT (default data: a built-in synthetic corpus)\n"
            "  eval    perplexity and bits/byte at several window lengths\n"
            "  sample  generate text with a KV cache\n"
            "Run 'gpt <command> --help' for the flags of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            char *none[] = {"--help"};
            const char *c = argv[1];
            if (!strcmp(c, "train")) return cmd_train(1, none) == 2 ? 0 : 1;
            if (!strcmp(c, "eval")) return cmd_eval(1, none) == 2 ? 0 : 1;
            if (!strcmp(c, "sample")) return cmd_sample(1, none) == 2 ? 0 : 1;
        }
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sample")) return cmd_sample(argc - 2, argv + 2);
    fprintf(stderr, "gpt: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
