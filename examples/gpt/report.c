/* examples/gpt/report.c — the experiment's tables: every measurement (results.csv), the means
 * over seeds with their spread (summary.csv), the per-position losses (per_position.csv), the
 * cost of each run (cost.csv) and the Markdown report (results.md). */
#include "experiment.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

bool ppl_spread(const experiment *e, int mi, int mult, const char *protocol, const char *variant,
                spread *out)
{
    double v[MAX_SEEDS], nll = 0;
    int n = 0;
    for (int i = 0; i < e->n_rows && n < MAX_SEEDS; i++) {
        const row *r = &e->rows[i];
        if (r->method == mi && r->mult == mult && !strcmp(r->protocol, protocol) &&
            !strcmp(r->variant, variant) && !isnan(r->nll))
            nll += r->nll, v[n++] = exp(r->nll);
    }
    if (!n) return false;
    *out = (spread){.min = v[0], .max = v[0], .n = n, .nll_mean = nll / n};
    double s = 0;
    for (int i = 0; i < n; i++) {
        s += v[i];
        out->min = fmin(out->min, v[i]);
        out->max = fmax(out->max, v[i]);
    }
    out->mean = s / n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (v[i] - out->mean) * (v[i] - out->mean);
    out->std = n > 1 ? sqrt(ss / (n - 1)) : 0;
    return true;
}

/* "5.746", or "5.746 [5.701-5.790]" over several seeds; "n/a" when there is none. */
static void cell(const experiment *e, int mi, int ti, const char *protocol, const char *variant,
                 char *buf, size_t cap)
{
    spread s;
    if (!ppl_spread(e, mi, ti, protocol, variant, &s)) snprintf(buf, cap, "n/a");
    else if (s.n == 1) snprintf(buf, cap, "%.3f", s.mean);
    else snprintf(buf, cap, "%.3f [%.3f-%.3f]", s.mean, s.min, s.max);
}

/* A table of every method (of the comparison, or those given) at every length. */
static void table(FILE *f, const experiment *e, const char *protocol, const char *variant,
                  bool alibi_only)
{
    fprintf(f, "| method |");
    for (int i = 0; i < e->n_mult; i++)
        fprintf(f, " %lld (%lldL) |", (long long)(e->mult[i] * e->L), (long long)e->mult[i]);
    fprintf(f, "\n|---|");
    for (int i = 0; i < e->n_mult; i++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int mi = 0; mi < e->n_methods; mi++) {
        const method *m = &e->methods[mi];
        if (m->cost_only || (alibi_only && m->pos != SL_POS_ALIBI)) continue;
        fprintf(f, "| %s |", m->name);
        for (int ti = 0; ti < e->n_mult; ti++) {
            char b[64];
            cell(e, mi, ti, protocol, variant, b, sizeof b);
            fprintf(f, " %s |", b);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "\n");
}

static bool write_results_csv(const experiment *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "method,seed,train_len,eval_len,multiple,protocol,variant,window,stride,"
               "scored_per_window,n_scored,nll,ppl,bits_per_byte,note\n");
    for (int i = 0; i < e->n_rows; i++) {
        const row *r = &e->rows[i];
        const method *m = &e->methods[r->method];
        fprintf(f, "%s,%lld,%lld,%lld,%g,%s,%s,%lld,%lld,%lld,%lld,", m->name,
                (long long)e->seeds[r->seed], (long long)m->train_len, (long long)r->eval_len,
                (double)r->eval_len / (double)m->train_len, r->protocol, r->variant,
                (long long)r->window, (long long)r->stride, (long long)r->scored, (long long)r->n);
        if (isnan(r->nll)) fprintf(f, ",,,");
        else fprintf(f, "%.6f,%.6f,%.6f,", r->nll, exp(r->nll), r->nll / log(2.0));
        fprintf(f, "\"");
        for (const char *c = r->note; *c; c++) fputs(*c == '"' ? "\"\"" : (char[]){*c, 0}, f);
        fprintf(f, "\"\n");
    }
    return fclose(f) == 0;
}

static bool write_summary_csv(const experiment *e, const char *path)
{
    static const char *const cases[][2] = {{"nonoverlap", "full"},
                                           {"sliding", "full"},
                                           {"same_tokens", "full"},
                                           {"nonoverlap", "attn_window_L"},
                                           {"same_tokens", "attn_window_L"},
                                           {"nonoverlap", "slopes_L_over_T"},
                                           {"same_tokens", "slopes_L_over_T"}};
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "method,train_len,eval_len,multiple,protocol,variant,seeds,ppl_mean,ppl_min,"
               "ppl_max,ppl_std,nll_mean\n");
    for (int mi = 0; mi < e->n_methods; mi++)
        for (int ti = 0; ti < e->n_mult; ti++)
            for (int c = 0; c < 7 + e->n_distant; c++) {
                char v[32];
                const char *protocol = c < 7 ? cases[c][0] : "same_tokens";
                if (c < 7) snprintf(v, sizeof v, "%s", cases[c][1]);
                else snprintf(v, sizeof v, "beyond_%lldL", (long long)e->distant[c - 7]);
                spread s;
                if (!ppl_spread(e, mi, ti, protocol, v, &s)) continue;
                const method *m = &e->methods[mi];
                int64_t T = e->mult[ti] * e->L;
                fprintf(f, "%s,%lld,%lld,%g,%s,%s,%d,%.6f,%.6f,%.6f,%.6f,%.6f\n", m->name,
                        (long long)m->train_len, (long long)T, (double)T / (double)m->train_len,
                        protocol, v, s.n, s.mean, s.min, s.max, s.std, s.nll_mean);
            }
    return fclose(f) == 0;
}

static bool write_positions_csv(const experiment *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "method,seed,train_len,eval_len,pos_lo,pos_hi,n,nll\n");
    for (int i = 0; i < e->n_pos; i++) {
        const pos_row *p = &e->pos[i];
        fprintf(f, "%s,%lld,%lld,%lld,%lld,%lld,%lld,%.6f\n", e->methods[p->method].name,
                (long long)e->seeds[p->seed], (long long)e->methods[p->method].train_len,
                (long long)p->eval_len, (long long)p->lo, (long long)p->hi, (long long)p->n,
                p->nll);
    }
    return fclose(f) == 0;
}

static bool write_cost_csv(const experiment *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "method,seed,train_len,params,steps,tokens_per_s,train_seconds,eval_seconds,"
               "peak_mib\n");
    for (int i = 0; i < e->n_costs; i++) {
        const cost_row *c = &e->costs[i];
        const method *m = &e->methods[c->method];
        fprintf(f, "%s,%lld,%lld,%lld,%lld,%.1f,%.2f,%.2f,%.2f\n", m->name,
                (long long)e->seeds[c->seed], (long long)m->train_len, (long long)c->params,
                (long long)c->tr.steps, c->tr.tokens_per_s, c->tr.seconds, c->eval_seconds,
                (double)c->tr.peak_bytes / (1 << 20));
    }
    return fclose(f) == 0;
}

int cost_stats(const experiment *e, int mi, int what, double *mean, double *lo, double *hi)
{
    int n = 0;
    double s = 0;
    for (int i = 0; i < e->n_costs; i++) {
        const cost_row *c = &e->costs[i];
        if (c->method != mi) continue;
        double v = what == 0   ? c->tr.tokens_per_s
                   : what == 1 ? (double)c->tr.peak_bytes / (1 << 20)
                   : what == 2 ? c->tr.seconds
                               : c->eval_seconds;
        *lo = n ? fmin(*lo, v) : v;
        *hi = n ? fmax(*hi, v) : v;
        s += v, n++;
    }
    *mean = n ? s / n : NAN;
    return n;
}

static bool write_md(const experiment *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return false;
    int L = (int)e->L;
    char took[32];
    fmt_duration(e->seconds, took, sizeof took);
    fprintf(f, "# Extrapolation study: trained at L = %d bytes\n\n", L);
    fprintf(f, "Command: `%s`\n\nSettings: %s. Seeds: ", e->command, e->settings);
    for (int s = 0; s < e->n_seeds; s++)
        fprintf(f, "%s%lld", s ? ", " : "", (long long)e->seeds[s]);
    fprintf(f,
            " (each seed sets the initialisation and the data order of every method). Wall "
            "time %s.\n\n",
            took);
    fprintf(f, "Perplexity per byte (lower is better): the mean over the seeds, with the min-max "
               "range over the seeds in brackets when there are several (summary.csv also has "
               "the standard deviation); n/a where a method cannot run at that length.\n\n");
    fprintf(f, "## Non-overlapping windows (the paper's protocol: window T, stride T, every "
               "byte scored)\n\n");
    table(f, e, "nonoverlap", "full", false);
    if (e->sliding) {
        fprintf(f,
                "## Sliding windows (window T, stride %lld: each byte after the first window "
                "has at least T - %lld of context)\n\n",
                (long long)e->stride, (long long)e->stride);
        table(f, e, "sliding", "full", false);
    }
    if (e->plan.S) {
        fprintf(f,
                "## The same bytes at every length (window T, stride %lld, the last %lld of "
                "each window scored; %lld bytes, the same ones at every length)\n\n"
                "A change along a row is the effect of more context alone: the early-token "
                "curse is gone (every scored byte has at least T - %lld bytes of context), "
                "and the bytes do not change (the ALiBi paper's Appendix B control).\n\n",
                (long long)e->plan.S, (long long)e->plan.S,
                (long long)(same_tokens_windows(&e->plan, e->span) * e->plan.S),
                (long long)e->plan.S);
        table(f, e, "same_tokens", "full", false);
    }
    for (int k = 0; e->plan.S && k < e->n_distant; k++) {
        char v[32];
        snprintf(v, sizeof v, "beyond_%lldL", (long long)e->distant[k]);
        fprintf(f,
                "## Is distant context used? The same bytes, with the input more than %lldL "
                "(%lld bytes) before each window's first scored byte replaced\n\n"
                "The replacement is the text at the same place half the file away (real "
                "text of the same corpus, deterministic). If a row equals the one above at "
                "the same length, the model does not use what was replaced; n/a where "
                "nothing is that far back.\n\n",
                (long long)e->distant[k], (long long)(e->distant[k] * L));
        table(f, e, "same_tokens", v, false);
    }
    if (e->window_control) {
        fprintf(f,
                "## ALiBi with attention limited to L (%d) in every layer: the "
                "sliding-window control\n\nIf it matches the full model at long lengths, the "
                "full model's gain past L is not long-range use (each layer sees L; the "
                "stacked layers, n_layers (L - 1)).\n\nNon-overlapping windows:\n\n",
                L);
        table(f, e, "nonoverlap", "attn_window_L", true);
        if (e->plan.S) {
            fprintf(f, "The same bytes at every length:\n\n");
            table(f, e, "same_tokens", "attn_window_L", true);
        }
    }
    if (e->slope_scaling) {
        fprintf(f, "## ALiBi with its slopes scaled by L / T at inference (position "
                   "interpolation; nothing retrained)\n\nNon-overlapping windows:\n\n");
        table(f, e, "nonoverlap", "slopes_L_over_T", true);
        if (e->plan.S) {
            fprintf(f, "The same bytes at every length:\n\n");
            table(f, e, "same_tokens", "slopes_L_over_T", true);
        }
    }
    fprintf(f, "## Cost, measured in the same runs\n\nTraining throughput (tokens per second, "
               "mean [min-max] over seeds), speed relative to sinusoidal, peak memory of the "
               "run (parameters, gradients, optimizer state and the step arena's peak), "
               "parameters, and the seconds of training and of the evaluation above.\n\n"
               "| method | train L | tokens/s | vs sinusoidal | peak MiB | parameters | train s "
               "| eval s |\n|---|---|---|---|---|---|---|---|\n");
    double sin_speed = NAN, lo, hi;
    for (int mi = 0; mi < e->n_methods; mi++)
        if (e->methods[mi].pos == SL_POS_SINUSOIDAL && !e->methods[mi].cost_only)
            cost_stats(e, mi, 0, &sin_speed, &lo, &hi);
    for (int mi = 0; mi < e->n_methods; mi++) {
        double tps, mib, trs, evs, a, b;
        int n = cost_stats(e, mi, 0, &tps, &lo, &hi);
        if (!n) continue;
        cost_stats(e, mi, 1, &mib, &a, &b);
        cost_stats(e, mi, 2, &trs, &a, &b);
        cost_stats(e, mi, 3, &evs, &a, &b);
        int64_t params = 0;
        for (int i = 0; i < e->n_costs; i++)
            if (e->costs[i].method == mi) params = e->costs[i].params;
        char speed[64] = "", ratio[32] = "";
        if (n > 1) snprintf(speed, sizeof speed, "%.0f [%.0f-%.0f]", tps, lo, hi);
        else snprintf(speed, sizeof speed, "%.0f", tps);
        if (!isnan(sin_speed) && !e->methods[mi].cost_only)
            snprintf(ratio, sizeof ratio, "%.2fx", tps / sin_speed);
        fprintf(f, "| %s | %lld | %s | %s | %.1f | %lld | %.1f | %.1f |\n", e->methods[mi].name,
                (long long)e->methods[mi].train_len, speed, ratio, mib, (long long)params, trs,
                evs);
    }
    fprintf(f, "\nThroughput depends on what else the machine runs: compare methods within one "
               "run of the study, or measure back to back (bench/).\n");
    const method *last = &e->methods[e->n_methods - 1];
    int ai = -1, i2 = -1;
    for (int mi = 0; mi < e->n_methods; mi++)
        if (!strcmp(e->methods[mi].name, "alibi")) ai = mi;
    for (int ti = 0; ti < e->n_mult; ti++)
        if (e->mult[ti] == 2) i2 = ti;
    if (last->cost_only && ai >= 0 && i2 >= 0) {
        char pa[64], ps[64];
        double as, at, ss, st, x, y;
        cell(e, ai, i2, "nonoverlap", "full", pa, sizeof pa);
        cell(e, e->n_methods - 1, i2, "nonoverlap", "full", ps, sizeof ps);
        cost_stats(e, ai, 2, &at, &x, &y);
        cost_stats(e, ai, 1, &as, &x, &y);
        cost_stats(e, e->n_methods - 1, 2, &st, &x, &y);
        cost_stats(e, e->n_methods - 1, 1, &ss, &x, &y);
        fprintf(f,
                "\n## Train short, test long: the paper's cost comparison\n\n| model | trained "
                "at | evaluated at | ppl | train seconds | peak MiB |\n|---|---|---|---|---|---|\n"
                "| alibi | %d | %d | %s | %.1f | %.1f |\n| sinusoidal | %d | %d | %s | %.1f | "
                "%.1f |\n",
                L, 2 * L, pa, at, as, 2 * L, 2 * L, ps, st, ss);
    }
    fprintf(f, "\nFiles: results.csv (every measurement: protocol, variant, window, stride, "
               "bytes scored per window and in all), summary.csv (over seeds), per_position.csv "
               "(non-overlapping loss by position in the window, log-spaced buckets), cost.csv; "
               "figures figure.svg, same_tokens.svg, per_position.svg, distant_context.svg, "
               "cost.svg.\n");
    return fclose(f) == 0;
}

bool write_report(const experiment *e, const char *dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/results.csv", dir);
    bool ok = write_results_csv(e, path);
    snprintf(path, sizeof path, "%s/summary.csv", dir);
    ok = ok && write_summary_csv(e, path);
    snprintf(path, sizeof path, "%s/per_position.csv", dir);
    ok = ok && write_positions_csv(e, path);
    snprintf(path, sizeof path, "%s/cost.csv", dir);
    ok = ok && write_cost_csv(e, path);
    snprintf(path, sizeof path, "%s/results.md", dir);
    return ok && write_md(e, path);
}
