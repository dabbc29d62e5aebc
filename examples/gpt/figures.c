/* examples/gpt/figures.c — the experiment's figures, plain SVG written by hand:
 *   figure.svg           perplexity against evaluation length (non-overlapping windows), one
 *                        line per method through the means over seeds, a band from the min to
 *                        the max over seeds; log axes
 *   same_tokens.svg      the same for the same-tokens protocol, with ALiBi's sliding-window
 *                        control dashed
 *   per_position.svg     loss against position in the window at the longest length, means
 *                        over seeds, a line at L
 *   distant_context.svg  how much the loss rises when the input more than k L back is
 *                        replaced (and, for ALiBi, when attention is limited to L), at the
 *                        longest length: bars of the mean over seeds, whiskers min to max
 *   cost.svg             training throughput and peak memory per method, the same way */
#include "experiment.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const colors[] = {"#d62728", "#ff9896", "#1f77b4", "#2ca02c",
                                     "#9467bd", "#8c564b", "#7f7f7f", "#ff7f0e",
                                     "#17becf", "#e377c2", "#bcbd22", "#aec7e8"};
enum { N_COLORS = sizeof colors / sizeof *colors };

static const char *color_of(int mi) { return colors[mi % N_COLORS]; }

/* A new figure: its title and, when given, a subtitle under it. */
static FILE *svg_open(const char *dir, const char *name, double W, double H, const char *title,
                      const char *subtitle)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" "
            "font-size=\"13\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
            W, H, W, H, W / 2, title);
    if (subtitle)
        fprintf(f,
                "<text x=\"%.0f\" y=\"40\" text-anchor=\"middle\" font-size=\"12\" "
                "fill=\"#444\">%s</text>\n",
                W / 2, subtitle);
    return f;
}

static bool svg_close(FILE *f)
{
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}

/* A plot area [x0, x1] x [y1, y0] (SVG y grows downwards) over data ranges. */
typedef struct {
    double x0, x1, y0, y1;     /* pixels */
    double xlo, xhi, ylo, yhi; /* data, after the axis transform */
    bool xlog, ylog;           /* log2 x, natural-log y */
} plot;

static double px(const plot *p, double v)
{
    double t = p->xlog ? log2(v) : v;
    return p->x0 + (p->x1 - p->x0) * (t - p->xlo) / (p->xhi - p->xlo);
}

static double py(const plot *p, double v)
{
    double t = p->ylog ? log(v) : v;
    return p->y0 - (p->y0 - p->y1) * (t - p->ylo) / (p->yhi - p->ylo);
}

/* Round tick values for [lo, hi]: multiples of 1, 2 or 5 times a power of ten, about 5 of
 * them; returns their count (at most cap). */
static int nice_ticks(double lo, double hi, double *out, int cap)
{
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), step = 10 * mag;
    const double steps[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (steps[i] * mag >= raw) {
            step = steps[i] * mag;
            break;
        }
    int n = 0;
    for (double v = ceil(lo / step) * step; v <= hi + 1e-9 * step && n < cap; v += step)
        out[n++] = fabs(v) < 1e-12 * step ? 0 : v;
    return n;
}

/* The frame, the x ticks at the given values, round y ticks, and the axis labels (the y label
 * left of the frame, so that side-by-side panels each have their own). */
static void axes(FILE *f, const plot *p, const double *xt, int nx, const char *xlabel,
                 const char *ylabel)
{
    fprintf(f, "<path d=\"M%.1f %.1f V%.1f H%.1f\" stroke=\"black\" fill=\"none\"/>\n", p->x0,
            p->y1, p->y0, p->x1);
    for (int i = 0; i < nx; i++) {
        double x = px(p, xt[i]);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                x, p->y1, x, p->y0, x, p->y0 + 18, xt[i]);
    }
    double lo = p->ylog ? exp(p->ylo) : p->ylo, hi = p->ylog ? exp(p->yhi) : p->yhi, yt[16];
    int ny = nice_ticks(lo, hi, yt, 16);
    for (int k = 0; k < ny; k++) {
        double y = py(p, yt[k]);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.6g</text>\n",
                p->x0, y, p->x1, y, p->x0 - 6, y + 4, yt[k]);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n",
            (p->x0 + p->x1) / 2, p->y0 + 40, xlabel);
    double lx = p->x0 - 56, ly = (p->y0 + p->y1) / 2;
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 %.0f "
            "%.0f)\">%s</text>\n",
            lx, ly, lx, ly, ylabel);
}

static void legend(FILE *f, double x, double y, int i, const char *color, const char *label,
                   bool dashed)
{
    fprintf(f,
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
            "stroke-width=\"3\"%s/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
            x, y + 22.0 * i, x + 24, y + 22.0 * i, color, dashed ? " stroke-dasharray=\"6 3\"" : "",
            x + 30, y + 4 + 22.0 * i, label);
}

/* One series of a perplexity chart: method mi under (protocol, variant), one point per length
 * with data: a min-max band, then the line through the means. */
static void ppl_series(FILE *f, const experiment *e, const plot *p, int mi, const char *protocol,
                       const char *variant, bool dashed)
{
    double xs[MAX_MULT], lo[MAX_MULT], hi[MAX_MULT], mean[MAX_MULT];
    int n = 0;
    for (int ti = 0; ti < e->n_mult; ti++) {
        spread s;
        if (!ppl_spread(e, mi, ti, protocol, variant, &s)) continue;
        xs[n] = (double)(e->mult[ti] * e->L), lo[n] = s.min, hi[n] = s.max, mean[n++] = s.mean;
    }
    if (!n) return;
    const char *c = color_of(mi);
    if (e->n_seeds > 1) {
        fprintf(f, "<path fill=\"%s\" fill-opacity=\"0.12\" stroke=\"none\" d=\"", c);
        for (int i = 0; i < n; i++)
            fprintf(f, "%s%.1f %.1f ", i ? "L" : "M", px(p, xs[i]), py(p, hi[i]));
        for (int i = n - 1; i >= 0; i--) fprintf(f, "L%.1f %.1f ", px(p, xs[i]), py(p, lo[i]));
        fprintf(f, "Z\"/>\n");
    }
    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s d=\"", c,
            dashed ? " stroke-dasharray=\"6 3\"" : "");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.1f %.1f ", i ? "L" : "M", px(p, xs[i]), py(p, mean[i]));
    fprintf(f, "\"/>\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", px(p, xs[i]),
                py(p, mean[i]), c);
}

/* Perplexity against length for every method of the comparison under protocol; with_control
 * adds ALiBi's attention-window-L variant, dashed. */
static bool ppl_chart(const experiment *e, const char *dir, const char *name, const char *protocol,
                      const char *title, bool with_control)
{
    char full_title[256];
    snprintf(full_title, sizeof full_title,
             "%s (trained at L = %lld; bands: min-max over %d "
             "seed%s)",
             title, (long long)e->L, e->n_seeds, e->n_seeds > 1 ? "s" : "");
    FILE *f = svg_open(dir, name, 880, 480, full_title, NULL);
    if (!f) return false;
    plot p = {.x0 = 80, .x1 = 650, .y0 = 420, .y1 = 40, .xlog = true, .ylog = true};
    double lo = INFINITY, hi = -INFINITY;
    for (int mi = 0; mi < e->n_methods; mi++)
        for (int ti = 0; ti < e->n_mult && !e->methods[mi].cost_only; ti++)
            for (int v = 0; v < 2; v++) {
                spread s;
                if (ppl_spread(e, mi, ti, protocol, v ? "attn_window_L" : "full", &s))
                    lo = fmin(lo, s.min), hi = fmax(hi, s.max);
            }
    if (!isfinite(lo)) lo = 1, hi = 10;
    if (hi <= lo) hi = lo * 1.1;
    p.ylo = log(lo) - 0.05, p.yhi = log(hi) + 0.05;
    p.xlo = log2((double)(e->mult[0] * e->L)),
    p.xhi = log2((double)(e->mult[e->n_mult - 1] * e->L));
    if (p.xhi <= p.xlo) p.xhi = p.xlo + 1;
    double xt[MAX_MULT];
    for (int i = 0; i < e->n_mult; i++) xt[i] = (double)(e->mult[i] * e->L);
    axes(f, &p, xt, e->n_mult, "evaluation length (bytes, log scale)",
         "perplexity per byte (log scale)");
    int row_i = 0;
    for (int mi = 0; mi < e->n_methods; mi++) {
        if (e->methods[mi].cost_only) continue;
        ppl_series(f, e, &p, mi, protocol, "full", false);
        legend(f, p.x1 + 20, p.y1 + 10, row_i++, color_of(mi), e->methods[mi].name, false);
        if (with_control && e->methods[mi].pos == SL_POS_ALIBI && e->window_control) {
            ppl_series(f, e, &p, mi, protocol, "attn_window_L", true);
            char label[64];
            snprintf(label, sizeof label, "%s, window L", e->methods[mi].name);
            legend(f, p.x1 + 20, p.y1 + 10, row_i++, color_of(mi), label, true);
        }
    }
    return svg_close(f);
}

/* The longest evaluation length with per-position data. */
static int64_t longest_positions(const experiment *e)
{
    int64_t T = 0;
    for (int i = 0; i < e->n_pos; i++) T = e->pos[i].eval_len > T ? e->pos[i].eval_len : T;
    return T;
}

static bool position_chart(const experiment *e, const char *dir)
{
    int64_t T = longest_positions(e);
    char title[256];
    snprintf(title, sizeof title,
             "Loss by position in the window, non-overlapping windows of "
             "%lld (trained at L = %lld; mean over seeds)",
             (long long)T, (long long)e->L);
    FILE *f = svg_open(dir, "per_position.svg", 880, 480, title, NULL);
    if (!f) return false;
    plot p = {.x0 = 80, .x1 = 650, .y0 = 420, .y1 = 40, .xlog = true};
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < e->n_pos; i++)
        if (e->pos[i].eval_len == T) lo = fmin(lo, e->pos[i].nll), hi = fmax(hi, e->pos[i].nll);
    if (!isfinite(lo)) lo = 0, hi = 1;
    if (hi <= lo) hi = lo + 0.1;
    p.ylo = lo - 0.05 * (hi - lo), p.yhi = hi + 0.05 * (hi - lo);
    p.xlo = 0, p.xhi = log2((double)(T > 1 ? T : 2));
    double xt[24];
    int nx = 0;
    for (int64_t v = 1; v <= T && nx < 24; v *= 4) xt[nx++] = (double)v;
    axes(f, &p, xt, nx, "position in the window + 1 (bytes of context, log scale)",
         "loss (nats per byte)");
    if (e->L <= T) {
        double x = px(&p, (double)e->L);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
                "stroke-dasharray=\"4 4\"/><text x=\"%.1f\" y=\"%.1f\">L</text>\n",
                x, p.y1, x, p.y0, x + 4, p.y1 + 14);
    }
    int row_i = 0;
    for (int mi = 0; mi < e->n_methods; mi++) {
        /* per bucket, the mean over seeds */
        bool any = false;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", color_of(mi));
        for (int i = 0; i < e->n_pos; i++) {
            const pos_row *a = &e->pos[i];
            if (a->method != mi || a->eval_len != T || a->seed != 0) continue;
            double s = 0;
            int n = 0;
            for (int j = 0; j < e->n_pos; j++) {
                const pos_row *b = &e->pos[j];
                if (b->method == mi && b->eval_len == T && b->lo == a->lo) s += b->nll, n++;
            }
            double x = (double)(a->lo + a->hi - 1) / 2 + 1;
            fprintf(f, "%s%.1f %.1f ", any ? "L" : "M", px(&p, x), py(&p, s / n));
            any = true;
        }
        fprintf(f, "\"/>\n");
        if (any) legend(f, p.x1 + 20, p.y1 + 10, row_i++, color_of(mi), e->methods[mi].name, false);
    }
    return svg_close(f);
}

/* The mean, min and max over seeds of nll(variant) - nll(full), same tokens, at length index
 * ti; false when no seed has both. */
static bool delta(const experiment *e, int mi, int ti, const char *variant, double *mean,
                  double *lo, double *hi)
{
    int n = 0;
    double s = 0;
    for (int si = 0; si < e->n_seeds; si++) {
        double a = NAN, b = NAN;
        for (int i = 0; i < e->n_rows; i++) {
            const row *r = &e->rows[i];
            if (r->method != mi || r->seed != si || r->mult != ti ||
                strcmp(r->protocol, "same_tokens"))
                continue;
            if (!strcmp(r->variant, "full")) a = r->nll;
            if (!strcmp(r->variant, variant)) b = r->nll;
        }
        if (isnan(a) || isnan(b)) continue;
        double d = b - a;
        *lo = n ? fmin(*lo, d) : d, *hi = n ? fmax(*hi, d) : d;
        s += d, n++;
    }
    *mean = n ? s / n : NAN;
    return n > 0;
}

/* One bar from y = 0 to v at x, with a whisker from lo to hi. */
static void bar(FILE *f, const plot *p, double x, double w, double v, double lo, double hi,
                const char *color, bool hatched, bool whisker)
{
    double y0 = py(p, 0), y = py(p, v);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"%s/>\n", x,
            fmin(y, y0), w, fabs(y0 - y), color, hatched ? " fill-opacity=\"0.45\"" : "");
    if (whisker)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                x + w / 2, py(p, lo), x + w / 2, py(p, hi));
}

static bool distant_chart(const experiment *e, const char *dir)
{
    int ti = e->n_mult - 1; /* the longest length with same-tokens data */
    while (ti > 0 && e->mult[ti] * e->L > e->plan.Tmax) ti--;
    int64_t T = e->mult[ti] * e->L;
    char title[300];
    snprintf(title, sizeof title,
             "Is distant context used? The same bytes at length %lld "
             "(trained at L = %lld)",
             (long long)T, (long long)e->L);
    FILE *f = svg_open(dir, "distant_context.svg", 960, 520, title,
                       "the loss with the input farther back replaced, less the loss with all of "
                       "it: above 0, what was replaced was used");
    if (!f) return false;
    const char *variants[MAX_K + 1];
    char names[MAX_K][32];
    int nv = 0;
    for (int k = 0; k < e->n_distant; k++) {
        snprintf(names[k], sizeof names[k], "beyond_%lldL", (long long)e->distant[k]);
        variants[nv++] = names[k];
    }
    variants[nv++] = "attn_window_L";
    double lo = 0, hi = 0, m, a, b;
    int groups = 0;
    for (int mi = 0; mi < e->n_methods; mi++) {
        if (e->methods[mi].cost_only) continue;
        groups++;
        for (int v = 0; v < nv; v++)
            if (delta(e, mi, ti, variants[v], &m, &a, &b)) lo = fmin(lo, a), hi = fmax(hi, b);
    }
    if (hi - lo < 1e-3) hi = lo + 1e-3;
    plot p = {.x0 = 90, .x1 = 920, .y0 = 420, .y1 = 60};
    p.ylo = lo - 0.05 * (hi - lo), p.yhi = hi + 0.05 * (hi - lo), p.xlo = 0, p.xhi = 1;
    axes(f, &p, NULL, 0, "", "loss difference (nats per byte)");
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", p.x0,
            py(&p, 0), p.x1, py(&p, 0));
    double gw = (p.x1 - p.x0) / (groups ? groups : 1), bw = gw * 0.8 / nv;
    int g = 0;
    for (int mi = 0; mi < e->n_methods; mi++) {
        if (e->methods[mi].cost_only) continue;
        double gx = p.x0 + gw * g + gw * 0.1;
        for (int v = 0; v < nv; v++)
            if (delta(e, mi, ti, variants[v], &m, &a, &b))
                bar(f, &p, gx + bw * v, bw * 0.9, m, a, b, color_of(mi), v == nv - 1,
                    e->n_seeds > 1);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", gx + gw * 0.4,
                p.y0 + 18, e->methods[mi].name);
        g++;
    }
    char key[256] = "bars: the input beyond ";
    for (int k = 0; k < e->n_distant; k++)
        snprintf(key + strlen(key), sizeof key - strlen(key), "%s%lldL", k ? ", " : "",
                 (long long)e->distant[k]);
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s replaced; pale: ALiBi "
            "with attention limited to L instead; whiskers: min-max over seeds</text>\n",
            (p.x0 + p.x1) / 2, p.y0 + 44, key);
    return svg_close(f);
}

static bool cost_chart(const experiment *e, const char *dir)
{
    FILE *f = svg_open(dir, "cost.svg", 980, 470,
                       "Cost of each method, measured in the same "
                       "runs",
                       "training throughput and peak memory: mean over seeds, whiskers "
                       "min to max");
    if (!f) return false;
    int n = e->n_methods;
    for (int panel = 0; panel < 2; panel++) {
        double x0 = panel ? 600 : 100, x1 = panel ? 950 : 450;
        double hi = 0, m, lo, h;
        for (int mi = 0; mi < n; mi++)
            if (cost_stats(e, mi, panel, &m, &lo, &h)) hi = fmax(hi, h);
        if (hi <= 0) hi = 1;
        plot p = {.x0 = x0,
                  .x1 = x1,
                  .y0 = 380,
                  .y1 = 60,
                  .xlo = 0,
                  .xhi = 1,
                  .ylo = 0,
                  .yhi = hi * 1.05};
        axes(f, &p, NULL, 0, "", panel ? "peak memory (MiB)" : "training tokens per second");
        double bw = (x1 - x0) / (n ? n : 1);
        for (int mi = 0; mi < n; mi++) {
            if (!cost_stats(e, mi, panel, &m, &lo, &h)) continue;
            double x = x0 + bw * mi + bw * 0.15;
            bar(f, &p, x, bw * 0.7, m, lo, h, color_of(mi), false, e->n_seeds > 1);
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" transform=\"rotate(-45 "
                    "%.1f %.1f)\" font-size=\"11\">%s</text>\n",
                    x + bw * 0.35, p.y0 + 14, x + bw * 0.35, p.y0 + 14, e->methods[mi].name);
        }
    }
    return svg_close(f);
}

bool write_figures(const experiment *e, const char *dir)
{
    bool ok = ppl_chart(e, dir, "figure.svg", "nonoverlap",
                        "Perplexity vs evaluation length, non-overlapping windows", false);
    if (ok && e->plan.S)
        ok = ppl_chart(e, dir, "same_tokens.svg", "same_tokens",
                       "Perplexity of the same bytes at every length", true);
    if (ok && e->positions) ok = position_chart(e, dir);
    if (ok && e->plan.S) ok = distant_chart(e, dir);
    return ok && cost_chart(e, dir);
}
