/* examples/gpt/experiment.c — the extrapolation study: the ALiBi paper's Figure 1 in miniature,
 * and the instruments that say where each method's perplexity past L comes from.
 *
 *   gpt experiment [--train FILE --valid FILE] [--methods alibi,kerple,...] [--seeds 1,2,3]
 *                  [--context L] [--multiples 1,2,4,8,16] [--out-dir DIR] [budget flags]
 *
 * Trains one model per method and seed on the same text with the same config, steps, batch
 * and data order (the seed sets both the initialisation and the data order) at training
 * length L, records each run's training throughput and peak memory, then evaluates each model
 * at L, 2L, 4L, ... with:
 *   - non-overlapping windows (the paper's protocol), with the loss by position in the window;
 *   - sliding windows (stride L/2 by default);
 *   - the same-tokens protocol: windows that score only their last S bytes, placed so that
 *     every length scores the same bytes (eval.c);
 *   - the distant-context ablation: the same tokens with the input more than k L before each
 *     window's first scored byte replaced by other text of the corpus;
 *   - for ALiBi (fixed and learned slopes): the sliding-window control, attention limited to
 *     L in every layer, and inference-time slope scaling by L / T (position interpolation);
 * and optionally the paper's cost comparison (--cost 1: sinusoidal trained at 2L, with the
 * first seed). Means over the seeds are reported with their min-max spread (figures: bands;
 * summary.csv also has the standard deviation). After the first run it prints the expected
 * time of the rest; --estimate N instead trains every method N steps, evaluates it fully and
 * prints what the whole budget would take on this machine.
 *
 * Writes DIR/results.csv (every measurement), summary.csv (over seeds), per_position.csv,
 * cost.csv, results.md and the figures (report.c, figures.c). */
#include "experiment.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The methods of the full comparison, in the figures' order: the paper's six, learned ALiBi
 * slopes, and the methods after ALiBi. */
static const struct {
    const char *name;
    sl_pos pos;
    sl_slopes slopes;
} known_methods[] = {
    {"alibi", SL_POS_ALIBI, SL_SLOPES_FIXED},
    {"alibi-learned", SL_POS_ALIBI, SL_SLOPES_LEARNED},
    {"sinusoidal", SL_POS_SINUSOIDAL, SL_SLOPES_FIXED},
    {"rotary", SL_POS_ROTARY, SL_SLOPES_FIXED},
    {"t5", SL_POS_T5, SL_SLOPES_FIXED},
    {"learned", SL_POS_LEARNED, SL_SLOPES_FIXED},
    {"none", SL_POS_NONE, SL_SLOPES_FIXED},
    {"kerple", SL_POS_KERPLE, SL_SLOPES_FIXED},
    {"sandwich", SL_POS_SANDWICH, SL_SLOPES_FIXED},
    {"fire", SL_POS_FIRE, SL_SLOPES_FIXED},
};
enum { N_KNOWN = sizeof known_methods / sizeof *known_methods };

static void known_list(char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; i < N_KNOWN; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "",
                 known_methods[i].name);
}

static void add_method(experiment *e, int k)
{
    method *m = &e->methods[e->n_methods++];
    snprintf(m->name, sizeof m->name, "%s", known_methods[k].name);
    m->pos = known_methods[k].pos;
    m->slopes = known_methods[k].slopes;
    m->train_len = e->L;
    m->cost_only = false;
}

static bool parse_methods(experiment *e, const char *s)
{
    char buf[512], known[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int k = 0;
        while (k < N_KNOWN && strcmp(tok, known_methods[k].name)) k++;
        if (k == N_KNOWN) {
            known_list(known, sizeof known);
            fprintf(stderr, "gpt: unknown method '%s' in --methods (known: %s)\n", tok, known);
            return false;
        }
        for (int i = 0; i < e->n_methods; i++)
            if (!strcmp(e->methods[i].name, tok)) {
                fprintf(stderr, "gpt: method '%s' given twice in --methods\n", tok);
                return false;
            }
        if (e->n_methods == MAX_METHODS) {
            fprintf(stderr, "gpt: at most %d methods\n", MAX_METHODS);
            return false;
        }
        add_method(e, k);
    }
    return e->n_methods > 0;
}

/* ---------------------------------------------------------------- measurements */

static row *new_row(experiment *e, int mi, int si, int ti, const char *protocol,
                    const char *variant)
{
    if (e->n_rows == e->cap_rows) {
        int cap = e->cap_rows ? 2 * e->cap_rows : 256;
        row *r = realloc(e->rows, sizeof *r * (size_t)cap);
        if (!r) return NULL;
        e->rows = r, e->cap_rows = cap;
    }
    row *r = &e->rows[e->n_rows++];
    memset(r, 0, sizeof *r);
    *r = (row){.method = mi,
               .seed = si,
               .mult = ti,
               .eval_len = e->mult[ti] * e->L,
               .protocol = protocol,
               .nll = NAN};
    snprintf(r->variant, sizeof r->variant, "%s", variant);
    return r;
}

static bool add_pos(experiment *e, const pos_row *p)
{
    if (e->n_pos == e->cap_pos) {
        int cap = e->cap_pos ? 2 * e->cap_pos : 1024;
        pos_row *n = realloc(e->pos, sizeof *n * (size_t)cap);
        if (!n) return false;
        e->pos = n, e->cap_pos = cap;
    }
    e->pos[e->n_pos++] = *p;
    return true;
}

/* Records the score of one evaluation (or why there is none: the pending error). */
static void record(row *r, bool ok, const score *s)
{
    if (ok) {
        r->nll = s->nll, r->n = s->n;
    } else {
        snprintf(r->note, sizeof r->note, "%s", sl_error_message());
        sl_error_clear();
    }
}

/* The per-position sums of one length, bucketed, into e->pos. */
static bool bucket_positions(experiment *e, int mi, int si, int64_t T, const pos_loss *pl)
{
    int64_t edges[1024];
    int n = pos_buckets(T, e->per_octave, edges, 1024);
    for (int b = 0; b + 1 < n; b++) {
        double s = 0;
        int64_t c = 0;
        for (int64_t i = edges[b]; i < edges[b + 1]; i++) s += pl->sum[i], c += pl->count[i];
        pos_row p = {mi, si, T, edges[b], edges[b + 1], c, c ? s / (double)c : NAN};
        if (c && !add_pos(e, &p)) return false;
    }
    return true;
}

/* Every protocol at every length for one trained model. Grad off; step is the scratch arena. */
static bool evaluate(experiment *e, int mi, int si, sl_gpt *m, const text *va, sl_arena *step)
{
    const method *me = &e->methods[mi];
    int64_t L = e->L;
    bool alibi = me->pos == SL_POS_ALIBI && !me->cost_only;
    for (int ti = 0; ti < e->n_mult; ti++) {
        int64_t T = e->mult[ti] * L;
        if (T > e->span) {
            row *r = new_row(e, mi, si, ti, "nonoverlap", "full");
            if (!r) return false;
            snprintf(r->note, sizeof r->note, "longer than the %lld evaluated bytes",
                     (long long)e->span);
            continue;
        }
        pos_loss pl = {0};
        if (e->positions && !me->cost_only) {
            pl = (pos_loss){calloc((size_t)T, sizeof(double)), calloc((size_t)T, sizeof(int64_t)),
                            T};
            if (!pl.sum || !pl.count) return free(pl.sum), free(pl.count), false;
        }
        score s;
        row *r = new_row(e, mi, si, ti, "nonoverlap", "full");
        if (!r) return false;
        r->window = r->stride = r->scored = T;
        bool ok = eval_nonoverlap_pos(m, va, T, e->span, step, &s, pl.sum ? &pl : NULL);
        record(r, ok, &s);
        if (ok && pl.sum && !bucket_positions(e, mi, si, T, &pl)) ok = false;
        free(pl.sum), free(pl.count);
        if (!ok) continue; /* a method that cannot run at T (learned positions past L) */
        if (me->cost_only) continue;
        int64_t st = e->stride < T ? e->stride : T;
        if (e->sliding) {
            if (!(r = new_row(e, mi, si, ti, "sliding", "full"))) return false;
            r->window = T, r->stride = r->scored = st;
            record(r, eval_sliding(m, va, T, st, e->span, step, &s), &s);
        }
        const same_plan *p = &e->plan;
        bool same = p->S && T >= p->S && T <= p->Tmax;
        if (same) {
            if (!(r = new_row(e, mi, si, ti, "same_tokens", "full"))) return false;
            r->window = T, r->stride = r->scored = p->S;
            record(r, eval_same_tokens(m, va, T, p, -1, e->span, step, &s, NULL), &s);
        }
        for (int k = 0; same && k < e->n_distant; k++) {
            int64_t keep = e->distant[k] * L;
            if (T - p->S <= keep) continue; /* nothing that far back */
            char v[32];
            snprintf(v, sizeof v, "beyond_%lldL", (long long)e->distant[k]);
            if (!(r = new_row(e, mi, si, ti, "same_tokens", v))) return false;
            r->window = T, r->stride = r->scored = p->S;
            record(r, eval_same_tokens(m, va, T, p, keep, e->span, step, &s, NULL), &s);
        }
        if (alibi && e->window_control) { /* attention limited to L in every layer */
            if (!sl_gpt_set_window(m, L)) return false;
            if (!(r = new_row(e, mi, si, ti, "nonoverlap", "attn_window_L"))) return false;
            r->window = r->stride = r->scored = T;
            record(r, eval_nonoverlap(m, va, T, e->span, step, &s), &s);
            if (same) {
                if (!(r = new_row(e, mi, si, ti, "same_tokens", "attn_window_L"))) return false;
                r->window = T, r->stride = r->scored = p->S;
                record(r, eval_same_tokens(m, va, T, p, -1, e->span, step, &s, NULL), &s);
            }
            if (!sl_gpt_set_window(m, 0)) return false;
        }
        if (alibi && e->slope_scaling && T > L) { /* slopes times L / T */
            if (!sl_gpt_scale_slopes(m, (double)L / (double)T)) return false;
            if (!(r = new_row(e, mi, si, ti, "nonoverlap", "slopes_L_over_T"))) return false;
            r->window = r->stride = r->scored = T;
            record(r, eval_nonoverlap(m, va, T, e->span, step, &s), &s);
            if (same) {
                if (!(r = new_row(e, mi, si, ti, "same_tokens", "slopes_L_over_T"))) return false;
                r->window = T, r->stride = r->scored = p->S;
                record(r, eval_same_tokens(m, va, T, p, -1, e->span, step, &s, NULL), &s);
            }
            if (!sl_gpt_scale_slopes(m, 1)) return false;
        }
    }
    return true;
}

/* The base training options of every run. */
typedef struct {
    train_opts base;
    int64_t steps;
} budget;

/* Trains method mi with seed si (steps of training: the budget's, or `steps` when > 0) and
 * evaluates it (unless eval is false); adds its cost. */
static bool run_one(experiment *e, int mi, int si, const budget *b, int64_t steps, const text *tr,
                    const text *va, bool eval)
{
    const method *me = &e->methods[mi];
    train_opts o = b->base;
    o.cfg.context = me->train_len;
    o.cfg.pos = me->pos;
    o.cfg.slopes = me->slopes;
    o.cfg.seed = (uint64_t)e->seeds[si];
    if (steps > 0) {
        o.steps = steps;
        if (o.warmup > steps / 2) o.warmup = steps / 2;
    }
    fprintf(stderr, "\n== %s, seed %lld, trained at L = %lld\n", me->name, (long long)e->seeds[si],
            (long long)me->train_len);
    cost_row *c = &e->costs[e->n_costs];
    memset(c, 0, sizeof *c);
    c->method = mi, c->seed = si;
    sl_gpt *m = train_run(&o, tr, va, &c->tr);
    if (!m) return false;
    c->params = sl_params_numel(m->params);
    e->n_costs++;
    if (!eval) {
        sl_gpt_free(m);
        return true;
    }
    double t0 = now();
    sl_arena *step = sl_arena_new(0), *prev = sl_arena_set(step);
    bool g = sl_set_grad_enabled(false);
    m->train = false;
    int first = e->n_rows;
    bool ok = step && evaluate(e, mi, si, m, va, step);
    sl_set_grad_enabled(g);
    sl_arena_set(prev);
    sl_arena_free(step);
    sl_gpt_free(m);
    c->eval_seconds = now() - t0;
    for (int i = first; i < e->n_rows; i++) {
        const row *r = &e->rows[i];
        if (strcmp(r->variant, "full") && strcmp(r->protocol, "nonoverlap")) continue;
        if (isnan(r->nll))
            fprintf(stderr, "   %-11s %-16s %6lld: n/a (%s)\n", r->protocol, r->variant,
                    (long long)r->eval_len, r->note);
        else
            fprintf(stderr, "   %-11s %-16s %6lld: ppl %8.4f\n", r->protocol, r->variant,
                    (long long)r->eval_len, exp(r->nll));
    }
    fprintf(stderr, "   train %.1f s (%.0f tokens/s, peak %.1f MiB), eval %.1f s\n", c->tr.seconds,
            c->tr.tokens_per_s, (double)c->tr.peak_bytes / (1 << 20), c->eval_seconds);
    if (!ok) fail("evaluation failed");
    return ok;
}

/* --estimate N: every method trained N steps (its throughput) and evaluated fully (its
 * evaluation time), projected onto the budget's steps and the seeds. */
static int estimate(experiment *e, const budget *b, int64_t n_steps, const text *tr, const text *va)
{
    double total = 0;
    int runs = 0;
    char buf[32];
    printf("# estimate: %lld steps of each method measured, projected onto %lld steps, %d "
           "seeds, %d threads\n%-16s %12s %10s %10s %10s\n",
           (long long)n_steps, (long long)b->steps, e->n_seeds, sl_get_num_threads(), "method",
           "tokens/s", "train", "eval", "per run");
    for (int mi = 0; mi < e->n_methods; mi++) {
        int before = e->n_costs;
        if (!run_one(e, mi, 0, b, n_steps, tr, va, !e->methods[mi].cost_only)) return 1;
        const cost_row *c = &e->costs[before];
        double train =
            (double)(b->steps * b->base.batch * e->methods[mi].train_len) / c->tr.tokens_per_s;
        double run = train + c->eval_seconds;
        int n = e->methods[mi].cost_only ? 1 : e->n_seeds; /* the cost run: the first seed */
        total += run * n, runs += n;
        fmt_duration(run, buf, sizeof buf);
        printf("%-16s %12.0f %9.0fs %9.0fs %10s\n", e->methods[mi].name, c->tr.tokens_per_s, train,
               c->eval_seconds, buf);
    }
    fmt_duration(total, buf, sizeof buf);
    printf("expected total: %s for %d runs (on this machine, as loaded as it is now)\n", buf, runs);
    return 0;
}

/* ---------------------------------------------------------------- the command */

/* "1,2,3" into out (positive integers, increasing when `increasing`); the count or -1. */
static int int_list(const char *flag_name, const char *s, int64_t *out, int cap, bool increasing)
{
    int n = parse_int_list(s, out, cap);
    for (int i = 1; n > 0 && increasing && i < n; i++)
        if (out[i] <= out[i - 1]) n = -1;
    if (n <= 0)
        fprintf(stderr,
                "gpt: --%s takes %d or fewer positive integers separated by commas%s, "
                "got '%s'\n",
                flag_name, cap, increasing ? ", increasing" : "", s);
    return n;
}

/* Which instruments: a comma list of sliding, same, distant, window, slopes, position. */
static bool parse_instruments(experiment *e, const char *s)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    e->sliding = e->positions = e->window_control = e->slope_scaling = false;
    bool same = false, distant = false;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (!strcmp(tok, "sliding")) e->sliding = true;
        else if (!strcmp(tok, "same")) same = true;
        else if (!strcmp(tok, "distant")) distant = true;
        else if (!strcmp(tok, "window")) e->window_control = true;
        else if (!strcmp(tok, "slopes")) e->slope_scaling = true;
        else if (!strcmp(tok, "position")) e->positions = true;
        else if (strcmp(tok, "none")) {
            fprintf(stderr,
                    "gpt: unknown instrument '%s' in --instruments (known: sliding, same, "
                    "distant, window, slopes, position, none)\n",
                    tok);
            return false;
        }
    }
    if (!same) e->plan.S = 0;
    if (!distant) e->n_distant = 0;
    return true;
}

int cmd_experiment(int argc, char **argv)
{
    const char *train_path = NULL, *valid_path = NULL, *methods_s = NULL, *mult_s = "1,2,4,8,16",
               *out_dir = "experiment", *seeds_s = NULL, *distant_s = "1",
               *instruments_s = "sliding,same,distant,window,slopes,position";
    int64_t context = 128, batch = 16, layers = 4, heads = 4, dim = 128, steps = 500, warmup = 50,
            seed = 1, threads = 0, stride = 0, eval_tokens = 65536, cost = 1, score_last = 0,
            same_bytes = 8192, per_octave = 4, estimate_steps = 0;
    double lr = 2e-3, wd = 0.1;
    char methods_help[400], known[256];
    known_list(known, sizeof known);
    snprintf(methods_help, sizeof methods_help, "comma-separated methods (default: all: %s)",
             known);
    flag flags[] = {
        {"train", F_STR, &train_path, "training text (default: the built-in corpus)"},
        {"valid", F_STR, &valid_path, "evaluation text (default: the built-in validation part)"},
        {"methods", F_STR, &methods_s, methods_help},
        {"seeds", F_STR, &seeds_s,
         "comma-separated seeds, one run of every method each "
         "(default: --seed)"},
        {"seed", F_INT, &seed, "the seed when --seeds is not given (default 1)"},
        {"multiples", F_STR, &mult_s, "evaluation lengths as multiples of L (default 1,2,4,8,16)"},
        {"context", F_INT, &context, "training length L (default 128)"},
        {"stride", F_INT, &stride, "sliding-window stride (default L/2)"},
        {"eval-tokens", F_INT, &eval_tokens, "bytes evaluated per length (default 65536)"},
        {"score-last", F_INT, &score_last,
         "same-tokens protocol: bytes scored per window "
         "(default L/2)"},
        {"same-bytes", F_INT, &same_bytes,
         "same-tokens protocol: bytes scored per length "
         "(default 8192)"},
        {"distant", F_STR, &distant_s,
         "distant-context ablation: replace the input more than "
         "k L back, for each k (default 1)"},
        {"instruments", F_STR, &instruments_s,
         "any of sliding, same, distant, window, slopes, "
         "position, or none (default: all)"},
        {"buckets-per-octave", F_INT, &per_octave,
         "per-position buckets per doubling "
         "(default 4; 0: every position)"},
        {"cost", F_INT, &cost,
         "1: also train sinusoidal at 2L (first seed) for the paper's "
         "cost comparison (default 1)"},
        {"estimate", F_INT, &estimate_steps,
         "N: train each method N steps, evaluate it, print "
         "the expected time of the whole budget and stop"},
        {"out-dir", F_STR, &out_dir, "where the CSV, tables and figures go (experiment)"},
        {"batch", F_INT, &batch, "sequences per step (default 16)"},
        {"layers", F_INT, &layers, "transformer blocks (default 4)"},
        {"heads", F_INT, &heads, "attention heads (default 4)"},
        {"dim", F_INT, &dim, "model width (default 128)"},
        {"steps", F_INT, &steps, "optimizer steps per model (default 500)"},
        {"lr", F_NUM, &lr, "peak learning rate (default 2e-3)"},
        {"warmup", F_INT, &warmup, "warmup steps (default 50)"},
        {"weight-decay", F_NUM, &wd, "AdamW weight decay (default 0.1)"},
        {"threads", F_INT, &threads, "worker threads"},
    };
    int nf = sizeof flags / sizeof *flags;
    int parsed = parse_flags(argc, argv, flags, nf);
    if (parsed != PARSE_OK) return usage_exit(parsed, "gpt experiment [flags]", flags, nf);
    if (!check_range("context", context, 2, 1 << 16) || !check_range("batch", batch, 1, 4096) ||
        !check_range("layers", layers, 1, 64) || !check_range("heads", heads, 1, 256) ||
        !check_range("dim", dim, 1, 1 << 14) || !check_range("steps", steps, 1, 1 << 30) ||
        !check_range("warmup", warmup, 0, 1 << 30) || !check_range("threads", threads, 0, 256) ||
        !check_range("stride", stride, 0, 1 << 30) || !check_range("cost", cost, 0, 1) ||
        !check_range("eval-tokens", eval_tokens, 2, INT64_C(1) << 40) ||
        !check_range("score-last", score_last, 0, context) ||
        !check_range("same-bytes", same_bytes, 1, INT64_C(1) << 40) ||
        !check_range("buckets-per-octave", per_octave, 0, 64) ||
        !check_range("estimate", estimate_steps, 0, 1 << 30) ||
        !check_range("seed", seed, 0, INT64_MAX))
        return 2;
    if (!check_number("lr", lr, 0, false, INFINITY) ||
        !check_number("weight-decay", wd, 0, true, INFINITY))
        return 2;
    experiment *e = calloc(1, sizeof *e);
    if (!e) return fprintf(stderr, "gpt: out of memory\n"), 1;
    int rc = 2;
    text tr = {0}, va = {0};
    e->L = context;
    e->per_octave = (int)per_octave;
    if (methods_s) {
        if (!parse_methods(e, methods_s)) goto out;
    } else {
        for (int k = 0; k < N_KNOWN; k++) add_method(e, k);
    }
    if ((e->n_mult = int_list("multiples", mult_s, e->mult, MAX_MULT, true)) <= 0) goto out;
    if (seeds_s) {
        if ((e->n_seeds = int_list("seeds", seeds_s, e->seeds, MAX_SEEDS, false)) <= 0) goto out;
    } else {
        e->seeds[0] = seed, e->n_seeds = 1;
    }
    if ((e->n_distant = int_list("distant", distant_s, e->distant, MAX_K, true)) <= 0) goto out;
    e->plan.S = score_last ? score_last : (context / 2 ? context / 2 : 1);
    e->plan.max_scored = same_bytes;
    if (!parse_instruments(e, instruments_s)) goto out;
    if (cost) {
        method *m = &e->methods[e->n_methods++];
        *m = (method){.pos = SL_POS_SINUSOIDAL, .train_len = 2 * context, .cost_only = true};
        snprintf(m->name, sizeof m->name, "sinusoidal-2L");
    }
    if (threads) sl_set_num_threads((int)threads);
    rc = 1;
    if (!estimate_steps && mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "gpt: cannot create '%s': %s\n", out_dir, strerror(errno));
        goto out;
    }
    char err[512];
    if (train_path || valid_path) {
        if (!train_path || !valid_path) {
            fprintf(stderr, "gpt: give both --train and --valid, or neither\n");
            rc = 2;
            goto out;
        }
        if (!text_read(&tr, train_path, err, sizeof err) ||
            !text_read(&va, valid_path, err, sizeof err)) {
            fprintf(stderr, "gpt: %s\n", err);
            goto out;
        }
    } else {
        text_builtin(&tr, 0, 2 << 20);
        text_builtin(&va, 1, 256 << 10);
        if (!tr.bytes || !va.bytes) {
            fprintf(stderr, "gpt: out of memory\n");
            goto out;
        }
    }
    e->span = va.n - 1 < eval_tokens ? va.n - 1 : eval_tokens;
    e->stride = stride ? stride : (context / 2 ? context / 2 : 1);
    for (int i = 0; i < e->n_mult; i++)
        if (e->mult[i] * context <= e->span) e->plan.Tmax = e->mult[i] * context;
    if (e->plan.S && e->plan.S > e->mult[0] * context) e->plan.S = e->mult[0] * context;
    snprintf(e->command, sizeof e->command, "gpt experiment");
    for (int i = 0; i < argc; i++)
        snprintf(e->command + strlen(e->command), sizeof e->command - strlen(e->command), " %s",
                 argv[i]);
    snprintf(e->settings, sizeof e->settings,
             "%lld layers, width %lld, %lld heads; %lld steps of %lld x %lld bytes, lr %g, "
             "warmup %lld, weight decay %g; trained on %s, evaluated on the first %lld bytes "
             "of %s; %d threads",
             (long long)layers, (long long)dim, (long long)heads, (long long)steps,
             (long long)batch, (long long)context, lr, (long long)warmup, wd, tr.source,
             (long long)e->span, va.source, sl_get_num_threads());
    budget b = {.steps = steps};
    b.base = (train_opts){.cfg = {.vocab_size = 256,
                                  .dim = dim,
                                  .n_layers = (int)layers,
                                  .n_heads = (int)heads,
                                  .mlp_ratio = 4,
                                  .tie_embeddings = true,
                                  .fused_qkv = true},
                          .batch = batch,
                          .steps = steps,
                          .warmup = warmup,
                          .eval_every = 0,
                          .eval_tokens = eval_tokens < 65536 ? eval_tokens : 65536,
                          .lr = lr,
                          .min_lr_frac = 0.1,
                          .weight_decay = wd,
                          .clip = 1.0,
                          .quiet = false};
    if (estimate_steps) {
        rc = estimate(e, &b, estimate_steps, &tr, &va);
        goto out;
    }
    int n_runs = 0, done = 0;
    for (int mi = 0; mi < e->n_methods; mi++) n_runs += e->methods[mi].cost_only ? 1 : e->n_seeds;
    double t0 = now();
    for (int si = 0; si < e->n_seeds; si++)
        for (int mi = 0; mi < e->n_methods; mi++) {
            if (e->methods[mi].cost_only && si) continue;
            if (!run_one(e, mi, si, &b, 0, &tr, &va, true)) goto out;
            done++;
            double per = (now() - t0) / done;
            char a[32], c[32];
            fmt_duration(per, a, sizeof a);
            fmt_duration(per * (n_runs - done), c, sizeof c);
            if (done == 1)
                fprintf(stderr,
                        "   expected: about %s per run, so %s more for the other %d "
                        "runs (methods on materialised scores, t5, kerple, sandwich, fire, "
                        "take longer; --estimate measures each)\n",
                        a, c, n_runs - 1);
            else if (done < n_runs)
                fprintf(stderr, "   run %d of %d done; at %s per run so far, %s to go\n", done,
                        n_runs, a, c);
        }
    e->seconds = now() - t0;
    sl_error_clear();
    if (!write_report(e, out_dir) || !write_figures(e, out_dir)) {
        fprintf(stderr, "gpt: cannot write the results under '%s': %s\n", out_dir, strerror(errno));
        goto out;
    }
    char took[32];
    fmt_duration(e->seconds, took, sizeof took);
    fprintf(stderr,
            "\nexperiment done in %s; wrote %s/results.csv, summary.csv, per_position.csv, "
            "cost.csv, results.md, figure.svg, same_tokens.svg, per_position.svg, "
            "distant_context.svg, cost.svg\n",
            took, out_dir);
    char path[1100];
    snprintf(path, sizeof path, "%s/results.md", out_dir);
    FILE *f = fopen(path, "r");
    for (int c; f && (c = fgetc(f)) != EOF;) putchar(c);
    if (f) fclose(f);
    rc = 0;
out:
    text_free(&tr);
    text_free(&va);
    free(e->rows);
    free(e->pos);
    free(e);
    return rc;
}
