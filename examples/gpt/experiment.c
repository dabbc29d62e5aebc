/* examples/gpt/experiment.c — the ALiBi paper's Figure 1 in miniature.
 *
 *   gpt experiment [--train FILE --valid FILE] [--methods alibi,sinusoidal,...] [--context L]
 *                  [--multiples 1,2,4,8,16] [--out-dir DIR] [model and training flags]
 *
 * Trains one model per positional method on the same text with the same config, steps, batch
 * and seed at training length L, then evaluates each at L, 2L, 4L, ... with non-overlapping
 * windows (the paper's protocol) and with sliding windows (stride L/2 by default). It records
 * each method's training throughput and peak memory, and the paper's cost comparison: ALiBi
 * trained at L and evaluated at 2L against sinusoidal trained at 2L and evaluated at 2L.
 * Writes DIR/results.csv, DIR/results.md and DIR/figure.svg (perplexity against evaluation
 * length, log axes, one line per method). */
#include "gpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_METHODS = 16, MAX_MULT = 16 };

typedef struct {
    sl_pos pos;
    int64_t train_len;
    train_result tr;
    double ppl[MAX_MULT], sppl[MAX_MULT]; /* NAN: not available (n/a) */
    char note[MAX_MULT][160];
} run;

static int parse_methods(const char *s, sl_pos *out, int cap)
{
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < cap; tok = strtok(NULL, ",")) {
        if (!sl_pos_parse(tok, &out[n])) {
            sl_error_clear();
            fprintf(stderr, "gpt: unknown method '%s' in --methods (known: %s)\n", tok, pos_list());
            return -1;
        }
        n++;
    }
    return n;
}

/* Trains at length L and evaluates at each multiple of the experiment's L. */
static bool train_and_eval(run *r, const train_opts *base, int64_t L, int64_t Lbase,
                           const int64_t *mult, int n_mult, int64_t stride, int64_t span,
                           const text *tr, const text *va)
{
    train_opts o = *base;
    o.cfg.context = L;
    o.cfg.pos = r->pos;
    r->train_len = L;
    fprintf(stderr, "\n== %s, trained at L = %lld\n", sl_pos_name(r->pos), (long long)L);
    sl_gpt *m = train_run(&o, tr, va, &r->tr);
    if (!m) return false;
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    bool g = sl_set_grad_enabled(false);
    m->train = false;
    for (int i = 0; i < n_mult; i++) {
        int64_t T = mult[i] * Lbase, st = stride ? stride : Lbase / 2;
        score a, b;
        r->ppl[i] = r->sppl[i] = NAN;
        r->note[i][0] = '\0';
        if (T > span) {
            snprintf(r->note[i], sizeof r->note[i], "longer than the %lld evaluated bytes",
                     (long long)span);
            continue;
        }
        if (!eval_nonoverlap(m, va, T, span, step, &a) ||
            !eval_sliding(m, va, T, st < T ? st : T, span, step, &b)) {
            snprintf(r->note[i], sizeof r->note[i], "%s", sl_error_message());
            sl_error_clear();
            sl_arena_reset(step);
            continue;
        }
        r->ppl[i] = exp(a.nll);
        r->sppl[i] = exp(b.nll);
        fprintf(stderr, "   eval at %5lld (%gL): ppl %8.4f   sliding ppl %8.4f\n", (long long)T,
                (double)T / (double)L, r->ppl[i], r->sppl[i]);
    }
    sl_set_grad_enabled(g);
    sl_arena_set(prev);
    sl_arena_free(step);
    sl_gpt_free(m);
    return true;
}

/* ---------------------------------------------------------------- output */

static void fmt_ppl(double v, char *buf, size_t cap)
{
    if (isnan(v)) snprintf(buf, cap, "n/a");
    else snprintf(buf, cap, "%.3f", v);
}

static bool write_csv(const char *path, const run *runs, int n, const int64_t *mult, int n_mult,
                      int64_t L, int64_t stride)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "method,train_len,eval_len,multiple,protocol,stride,ppl,bits_per_byte,"
               "train_tokens_per_s,train_seconds,peak_mib,note\n");
    for (int r = 0; r < n; r++)
        for (int i = 0; i < n_mult; i++)
            for (int p = 0; p < 2; p++) {
                double v = p ? runs[r].sppl[i] : runs[r].ppl[i];
                int64_t T = mult[i] * L;
                fprintf(f, "%s,%lld,%lld,%g,%s,%lld,", sl_pos_name(runs[r].pos),
                        (long long)runs[r].train_len, (long long)T,
                        (double)T / (double)runs[r].train_len, p ? "sliding" : "nonoverlap",
                        (long long)(p ? (stride ? stride : L / 2) : T));
                if (isnan(v)) fprintf(f, ",,");
                else fprintf(f, "%.6f,%.6f,", v, log2(v));
                fprintf(f, "%.1f,%.2f,%.2f,\"%s\"\n", runs[r].tr.tokens_per_s,
                        runs[r].tr.seconds, (double)runs[r].tr.peak_bytes / (1 << 20),
                        runs[r].note[i]);
            }
    return fclose(f) == 0;
}

static void md_table(FILE *f, const run *runs, int n, const int64_t *mult, int n_mult, int64_t L,
                     bool sliding)
{
    fprintf(f, "| method |");
    for (int i = 0; i < n_mult; i++) fprintf(f, " %lld (%lldL) |", (long long)(mult[i] * L),
                                             (long long)mult[i]);
    fprintf(f, "\n|---|");
    for (int i = 0; i < n_mult; i++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int r = 0; r < n; r++) {
        if (runs[r].train_len != L) continue;
        fprintf(f, "| %s |", sl_pos_name(runs[r].pos));
        for (int i = 0; i < n_mult; i++) {
            char b[32];
            fmt_ppl(sliding ? runs[r].sppl[i] : runs[r].ppl[i], b, sizeof b);
            fprintf(f, " %s |", b);
        }
        fprintf(f, "\n");
    }
}

static bool write_md(const char *path, const run *runs, int n, int n_main, const int64_t *mult,
                     int n_mult, int64_t L, int64_t stride, const char *command)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "# Extrapolation: perplexity against evaluation length\n\n");
    fprintf(f, "Command: `%s`\n\n", command);
    fprintf(f, "Trained at L = %lld bytes. Perplexity per byte (lower is better); n/a where a "
               "method cannot run at that length.\n\n", (long long)L);
    fprintf(f, "## Non-overlapping windows (the paper's protocol)\n\n");
    md_table(f, runs, n_main, mult, n_mult, L, false);
    fprintf(f, "\n## Sliding windows (stride %lld)\n\n", (long long)(stride ? stride : L / 2));
    md_table(f, runs, n_main, mult, n_mult, L, true);
    fprintf(f, "\n## Training cost\n\n| method | train L | tokens/s | seconds | peak memory (MiB) "
               "| speed vs sinusoidal |\n|---|---|---|---|---|---|\n");
    double sin_speed = NAN;
    for (int r = 0; r < n_main; r++)
        if (!strcmp(sl_pos_name(runs[r].pos), "sinusoidal")) sin_speed = runs[r].tr.tokens_per_s;
    for (int r = 0; r < n; r++) {
        char ratio[32] = "";
        if (!isnan(sin_speed) && runs[r].train_len == L)
            snprintf(ratio, sizeof ratio, "%.2fx", runs[r].tr.tokens_per_s / sin_speed);
        fprintf(f, "| %s | %lld | %.0f | %.1f | %.1f | %s |\n", sl_pos_name(runs[r].pos),
                (long long)runs[r].train_len, runs[r].tr.tokens_per_s, runs[r].tr.seconds,
                (double)runs[r].tr.peak_bytes / (1 << 20), ratio);
    }
    if (n > n_main) {
        /* The cost comparison: ALiBi at L evaluated at 2L vs sinusoidal trained at 2L. */
        const run *a = NULL, *s = &runs[n - 1];
        for (int r = 0; r < n_main; r++)
            if (!strcmp(sl_pos_name(runs[r].pos), "alibi")) a = &runs[r];
        int i2 = -1;
        for (int i = 0; i < n_mult; i++)
            if (mult[i] == 2) i2 = i;
        if (a && i2 >= 0) {
            char pa[32], ps[32];
            fmt_ppl(a->ppl[i2], pa, sizeof pa);
            fmt_ppl(s->ppl[i2], ps, sizeof ps); /* both evaluated at 2L */
            fprintf(f, "\n## Train short, test long: the cost comparison\n\n"
                       "| model | trained at | evaluated at | ppl | train seconds | peak memory (MiB) |\n"
                       "|---|---|---|---|---|---|\n");
            fprintf(f, "| alibi | %lld | %lld | %s | %.1f | %.1f |\n", (long long)L,
                    (long long)(2 * L), pa, a->tr.seconds, (double)a->tr.peak_bytes / (1 << 20));
            fprintf(f, "| sinusoidal | %lld | %lld | %s | %.1f | %.1f |\n", (long long)(2 * L),
                    (long long)(2 * L), ps, s->tr.seconds, (double)s->tr.peak_bytes / (1 << 20));
        }
    }
    return fclose(f) == 0;
}

/* A line chart in plain SVG: log2 x (evaluation length), log y (perplexity). */
static bool write_svg(const char *path, const run *runs, int n_main, const int64_t *mult,
                      int n_mult, int64_t L)
{
    static const char *colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f"};
    const double W = 720, H = 440, x0 = 70, x1 = 560, y0 = 390, y1 = 40;
    double lo = INFINITY, hi = -INFINITY;
    for (int r = 0; r < n_main; r++)
        for (int i = 0; i < n_mult; i++)
            if (!isnan(runs[r].ppl[i])) {
                lo = fmin(lo, runs[r].ppl[i]);
                hi = fmax(hi, runs[r].ppl[i]);
            }
    if (!isfinite(lo)) lo = 1, hi = 10;
    double ylo = log(lo) - 0.05, yhi = log(hi) + 0.05;
    double xlo = log2((double)(mult[0] * L)), xhi = log2((double)(mult[n_mult - 1] * L));
    if (xhi <= xlo) xhi = xlo + 1;
#define PX(v) (x0 + (x1 - x0) * (log2(v) - xlo) / (xhi - xlo))
#define PY(v) (y0 - (y0 - y1) * (log(v) - ylo) / (yhi - ylo))
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%%\" "
               "height=\"100%%\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Perplexity "
               "vs evaluation length (trained at L = %lld, non-overlapping)</text>\n",
            (x0 + x1) / 2, (long long)L);
    fprintf(f, "<path d=\"M%.1f %.1f V%.1f H%.1f\" stroke=\"black\" fill=\"none\"/>\n", x0, y1,
            y0, x1);
    for (int i = 0; i < n_mult; i++) {
        double v = (double)(mult[i] * L), x = PX(v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%lld</text>\n",
                x, y1, x, y0, x, y0 + 18, (long long)(mult[i] * L));
    }
    /* y ticks: 6 values spread on the log scale */
    for (int k = 0; k <= 5; k++) {
        double v = exp(ylo + (yhi - ylo) * k / 5.0), y = PY(v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n",
                x0, y, x1, y, x0 - 6, y + 4, v);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">evaluation length (bytes, "
               "log scale)</text>\n", (x0 + x1) / 2, H - 12);
    fprintf(f, "<text x=\"18\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
               "%.0f)\">perplexity per byte (log scale)</text>\n", (y0 + y1) / 2, (y0 + y1) / 2);
    for (int r = 0; r < n_main; r++) {
        const char *c = colors[r % 8];
        bool pen = false;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", c);
        for (int i = 0; i < n_mult; i++) {
            if (isnan(runs[r].ppl[i])) {
                pen = false;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", pen ? "L" : "M", PX((double)(mult[i] * L)),
                    PY(runs[r].ppl[i]));
            pen = true;
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < n_mult; i++)
            if (!isnan(runs[r].ppl[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                        PX((double)(mult[i] * L)), PY(runs[r].ppl[i]), c);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"3\"/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                x1 + 20, y1 + 20 + 22.0 * r, x1 + 44, y1 + 20 + 22.0 * r, c, x1 + 50,
                y1 + 24 + 22.0 * r, sl_pos_name(runs[r].pos));
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}

/* ---------------------------------------------------------------- the command */

int cmd_experiment(int argc, char **argv)
{
    const char *train_path = NULL, *valid_path = NULL, *methods_s = NULL, *mult_s = "1,2,4,8,16",
               *out_dir = "experiment";
    int64_t context = 128, batch = 16, layers = 4, heads = 4, dim = 128, steps = 500,
            warmup = 50, seed = 1, threads = 0, stride = 0, eval_tokens = 65536, cost = 1;
    double lr = 2e-3, wd = 0.1;
    flag flags[] = {
        {"train", F_STR, &train_path, "training text (default: the built-in corpus)"},
        {"valid", F_STR, &valid_path, "evaluation text (default: the built-in validation part)"},
        {"methods", F_STR, &methods_s, "comma-separated positional methods (default: all)"},
        {"multiples", F_STR, &mult_s, "evaluation lengths as multiples of L (default 1,2,4,8,16)"},
        {"context", F_INT, &context, "training length L (default 128)"},
        {"stride", F_INT, &stride, "sliding-window stride (default L/2)"},
        {"eval-tokens", F_INT, &eval_tokens, "bytes evaluated per length (default 65536)"},
        {"cost", F_INT, &cost, "1: also train sinusoidal at 2L for the cost comparison (default)"},
        {"out-dir", F_STR, &out_dir, "where results.csv, results.md, figure.svg go (experiment)"},
        {"batch", F_INT, &batch, "sequences per step (default 16)"},
        {"layers", F_INT, &layers, "transformer blocks (default 4)"},
        {"heads", F_INT, &heads, "attention heads (default 4)"},
        {"dim", F_INT, &dim, "model width (default 128)"},
        {"steps", F_INT, &steps, "optimizer steps per model (default 500)"},
        {"lr", F_NUM, &lr, "peak learning rate (default 2e-3)"},
        {"warmup", F_INT, &warmup, "warmup steps (default 50)"},
        {"weight-decay", F_NUM, &wd, "AdamW weight decay (default 0.1)"},
        {"seed", F_INT, &seed, "seed shared by every model (default 1)"},
        {"threads", F_INT, &threads, "worker threads"},
    };
    int nf = sizeof flags / sizeof *flags;
    int parsed = parse_flags(argc, argv, flags, nf);
    if (parsed != PARSE_OK) return usage_exit(parsed, "gpt experiment [flags]", flags, nf);
    sl_pos methods[MAX_METHODS];
    int n_methods = 0;
    if (methods_s) {
        if ((n_methods = parse_methods(methods_s, methods, MAX_METHODS)) <= 0) return 2;
    } else {
        for (int p = 0; p < SL_POS_COUNT && p < MAX_METHODS; p++) methods[n_methods++] = (sl_pos)p;
    }
    int64_t mult[MAX_MULT];
    int n_mult = parse_int_list(mult_s, mult, MAX_MULT);
    if (n_mult <= 0) {
        fprintf(stderr, "gpt: --multiples takes positive integers separated by commas\n");
        return 2;
    }
    for (int i = 1; i < n_mult; i++)
        if (mult[i] <= mult[i - 1]) {
            fprintf(stderr, "gpt: --multiples must increase\n");
            return 2;
        }
    if (!check_range("context", context, 2, 1 << 16) || !check_range("batch", batch, 1, 4096) ||
        !check_range("layers", layers, 1, 64) || !check_range("heads", heads, 1, 256) ||
        !check_range("dim", dim, 1, 1 << 14) || !check_range("steps", steps, 1, 1 << 30) ||
        !check_range("warmup", warmup, 0, 1 << 30) || !check_range("threads", threads, 0, 256) ||
        !check_range("stride", stride, 0, 1 << 30) || !check_range("cost", cost, 0, 1) ||
        !check_range("eval-tokens", eval_tokens, 2, INT64_C(1) << 40))
        return 2;
    if (!check_number("lr", lr, 0, false, INFINITY) ||
        !check_number("weight-decay", wd, 0, true, INFINITY))
        return 2;
    if (threads) sl_set_num_threads((int)threads);
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "gpt: cannot create '%s': %s\n", out_dir, strerror(errno));
        return 1;
    }
    text tr, va;
    char err[512];
    if (train_path || valid_path) {
        if (!train_path || !valid_path) {
            fprintf(stderr, "gpt: give both --train and --valid, or neither\n");
            return 2;
        }
        if (!text_read(&tr, train_path, err, sizeof err)) {
            fprintf(stderr, "gpt: %s\n", err);
            return 1;
        }
        if (!text_read(&va, valid_path, err, sizeof err)) {
            fprintf(stderr, "gpt: %s\n", err);
            text_free(&tr);
            return 1;
        }
    } else {
        text_builtin(&tr, 0, 2 << 20);
        text_builtin(&va, 1, 256 << 10);
    }
    int64_t span = va.n - 1 < eval_tokens ? va.n - 1 : eval_tokens;

    /* The command line, for the report. */
    char command[1024] = "gpt experiment";
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(command);
        snprintf(command + n, sizeof command - n, " %s", argv[i]);
    }
    train_opts base = {
        .cfg = {.vocab_size = 256, .dim = dim, .n_layers = (int)layers, .n_heads = (int)heads,
                .mlp_ratio = 4, .tie_embeddings = true, .fused_qkv = true,
                .seed = (uint64_t)seed},
        .batch = batch, .steps = steps, .warmup = warmup, .eval_every = 0,
        .eval_tokens = eval_tokens < 65536 ? eval_tokens : 65536, .lr = lr, .min_lr_frac = 0.1,
        .weight_decay = wd, .clip = 1.0};
    run runs[MAX_METHODS + 1];
    memset(runs, 0, sizeof runs);
    int n_runs = 0, rc = 0;
    double t0 = now();
    for (int k = 0; k < n_methods; k++) {
        runs[n_runs].pos = methods[k];
        if (!train_and_eval(&runs[n_runs], &base, context, context, mult, n_mult, stride, span,
                            &tr, &va)) {
            rc = 1;
            goto out;
        }
        n_runs++;
    }
    int n_main = n_runs;
    sl_pos sinusoidal;
    if (cost && sl_pos_parse("sinusoidal", &sinusoidal)) {
        /* Sinusoidal trained at 2L, evaluated at multiples of L (so its "1" column is L). */
        runs[n_runs].pos = sinusoidal;
        if (!train_and_eval(&runs[n_runs], &base, 2 * context, context, mult, n_mult, stride,
                            span, &tr, &va)) {
            rc = 1;
            goto out;
        }
        n_runs++;
    }
    sl_error_clear();
    char path[1024];
    snprintf(path, sizeof path, "%s/results.csv", out_dir);
    bool ok = write_csv(path, runs, n_runs, mult, n_mult, context, stride);
    snprintf(path, sizeof path, "%s/results.md", out_dir);
    ok = ok && write_md(path, runs, n_runs, n_main, mult, n_mult, context, stride, command);
    snprintf(path, sizeof path, "%s/figure.svg", out_dir);
    ok = ok && write_svg(path, runs, n_main, mult, n_mult, context);
    if (!ok) {
        fprintf(stderr, "gpt: cannot write the results under '%s': %s\n", out_dir, strerror(errno));
        rc = 1;
    } else {
        fprintf(stderr, "\nexperiment done in %.0f s; wrote %s/results.csv, results.md, figure.svg\n",
                now() - t0, out_dir);
        snprintf(path, sizeof path, "%s/results.md", out_dir);
        FILE *f = fopen(path, "r");
        for (int c; f && (c = fgetc(f)) != EOF;) putchar(c);
        if (f) fclose(f);
    }
out:
    text_free(&tr);
    text_free(&va);
    return rc;
}
