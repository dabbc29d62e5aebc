/* examples/gpt/eval.c — perplexity over windows of a text, and the instruments that say where
 * it comes from. Each prediction's loss comes from the logits with a log-sum-exp in double.
 *
 * Protocols (each names its window, the bytes a forward sees, and its stride, how far the next
 * window starts):
 *   nonoverlap   windows of T moved by T, every prediction scored (the paper's protocol); with
 *                per-position sums, the loss at each position of the window;
 *   sliding      windows of T moved by a stride; the first window scores every prediction,
 *                each later one its last `stride`;
 *   same tokens  windows of T moved by S that score their last S predictions, placed so that
 *                every length up to Tmax scores exactly the same bytes (the ALiBi paper's
 *                Appendix B control): a change with T is then the effect of more context alone;
 *   distant      same tokens, with every input byte more than `keep` before the window's first
 *                scored prediction replaced by other text of the same corpus: if the loss does
 *                not move, the model does not use what was replaced. */
#include "gpt.h"

#include <math.h>

/* The text offset of the first replacement byte for the window starting at s: half the text
 * away (circularly), so that for a text of at least 2 (T + 1) bytes the replacement never
 * overlaps the window or its targets, and the same window always gets the same bytes. */
static int64_t replacement_start(const text *t, int64_t s) { return (s + t->n / 2) % t->n; }

/* Scores `rows` windows of length T, the r-th starting at start + r * stride, of which the
 * predictions at positions [skip, T) count (accumulated into *sum, *count, and per position
 * into pl when given), with the inputs at positions [0, cut) replaced (cut 0: none). targets,
 * when given, receives the text offset of each scored byte and is advanced. Grad mode must be
 * off. */
static bool score_windows(sl_gpt *m, const text *t, int64_t start, int64_t T, int64_t stride,
                          int64_t rows, int64_t skip, int64_t cut, pos_loss *pl, int64_t **targets,
                          double *sum, int64_t *count)
{
    sl_tensor *idx, *tgt;
    if (!windows_at(t, start, T, stride, rows, &idx, &tgt)) return false;
    for (int64_t r = 0; r < rows && cut > 0; r++) {
        int64_t from = replacement_start(t, start + r * stride);
        int32_t *x = (int32_t *)idx->data + r * T;
        for (int64_t i = 0; i < cut; i++) x[i] = t->bytes[(from + i) % t->n];
    }
    sl_tensor *logits = sl_gpt_forward(m, idx, NULL);
    if (!logits) return false;
    int64_t V = logits->shape[2];
    const float *lg = logits->data;
    const int32_t *y = tgt->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = skip; i < T; i++) {
            if (y[r * T + i] >= V) /* the callers check the text first (text_check_vocab) */
                return sl_set_error(SL_ERR_INDEX,
                                    "byte %d is outside the model's vocabulary "
                                    "of %lld",
                                    y[r * T + i], (long long)V);
            const float *row = lg + (r * T + i) * V;
            double mx = row[0];
            for (int64_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            double se = 0;
            for (int64_t v = 0; v < V; v++) se += exp(row[v] - mx);
            double loss = mx + log(se) - row[y[r * T + i]];
            *sum += loss;
            (*count)++;
            if (pl && i < pl->cap) pl->sum[i] += loss, pl->count[i]++;
            if (targets) *(*targets)++ = start + r * stride + i + 1;
        }
    return true;
}

/* Windows per forward: about 2048 bytes' worth. */
static int64_t rows_per_forward(int64_t T) { return T >= 2048 ? 1 : 2048 / T; }

bool eval_nonoverlap_pos(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
                         score *out, pos_loss *pl)
{
    int64_t W = span / T, per = rows_per_forward(T);
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t w = 0; w < W; w += per) {
        int64_t rows = W - w < per ? W - w : per;
        bool ok = score_windows(m, t, w * T, T, T, rows, 0, 0, pl, NULL, &sum, &cnt);
        sl_arena_reset(step);
        if (!ok) return false;
    }
    out->nll = cnt ? sum / (double)cnt : NAN;
    out->n = cnt;
    return true;
}

bool eval_nonoverlap(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step, score *out)
{
    return eval_nonoverlap_pos(m, t, T, span, step, out, NULL);
}

bool eval_sliding(sl_gpt *m, const text *t, int64_t T, int64_t stride, int64_t span, sl_arena *step,
                  score *out)
{
    double sum = 0;
    int64_t cnt = 0;
    if (span < T) {
        out->nll = NAN;
        out->n = 0;
        return true;
    }
    bool ok = score_windows(m, t, 0, T, T, 1, 0, 0, NULL, NULL, &sum, &cnt);
    sl_arena_reset(step);
    if (!ok) return false;
    int64_t n_more = (span - T) / stride, per = rows_per_forward(T);
    for (int64_t w = 0; w < n_more; w += per) {
        int64_t rows = n_more - w < per ? n_more - w : per;
        ok = score_windows(m, t, (w + 1) * stride, T, stride, rows, T - stride, 0, NULL, NULL, &sum,
                           &cnt);
        sl_arena_reset(step);
        if (!ok) return false;
    }
    out->nll = sum / (double)cnt;
    out->n = cnt;
    return true;
}

int64_t same_tokens_windows(const same_plan *p, int64_t span)
{
    if (p->S < 1 || p->Tmax < p->S || span < p->Tmax) return 0;
    int64_t k = (span - p->Tmax) / p->S + 1, cap = p->max_scored / p->S;
    return cap >= 1 && cap < k ? cap : k;
}

bool eval_same_tokens(sl_gpt *m, const text *t, int64_t T, const same_plan *p, int64_t keep,
                      int64_t span, sl_arena *step, score *out, int64_t *targets)
{
    int64_t K = same_tokens_windows(p, span);
    if (T < p->S || T > p->Tmax)
        return sl_set_error(SL_ERR_ARG,
                            "same-tokens: length %lld outside [S, Tmax] = [%lld, "
                            "%lld]",
                            (long long)T, (long long)p->S, (long long)p->Tmax);
    if (K < 1)
        return sl_set_error(SL_ERR_ARG, "same-tokens: %lld bytes hold no window of %lld",
                            (long long)span, (long long)p->Tmax);
    int64_t cut = keep < 0 ? 0 : T - p->S - keep; /* inputs replaced in each window */
    if (cut > 0 && t->n < 2 * (T + 1))
        return sl_set_error(SL_ERR_ARG,
                            "distant-context ablation: %s has %lld bytes, fewer "
                            "than the 2 (T + 1) = %lld the replacement text needs",
                            t->source, (long long)t->n, (long long)(2 * (T + 1)));
    double sum = 0;
    int64_t cnt = 0, per = rows_per_forward(T);
    for (int64_t w = 0; w < K; w += per) {
        int64_t rows = K - w < per ? K - w : per;
        bool ok = score_windows(m, t, p->Tmax - T + w * p->S, T, p->S, rows, T - p->S,
                                cut > 0 ? cut : 0, NULL, targets ? &targets : NULL, &sum, &cnt);
        sl_arena_reset(step);
        if (!ok) return false;
    }
    out->nll = sum / (double)cnt;
    out->n = cnt;
    return true;
}

int pos_buckets(int64_t T, int per_octave, int64_t *edges, int cap)
{
    int n = 0;
    edges[n++] = 0;
    for (int q = 0; n < cap; q++) {
        int64_t e = per_octave > 0 ? (int64_t)llround(pow(2.0, (double)q / per_octave)) : q + 1;
        if (e >= T) break;
        if (e > edges[n - 1]) edges[n++] = e;
    }
    if (n < cap && edges[n - 1] < T) edges[n++] = T;
    return n;
}
