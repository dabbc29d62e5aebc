/* examples/gpt/eval.c — perplexity over windows of a text: non-overlapping (the paper's main
 * protocol) and sliding. Each prediction's loss comes from the logits with a log-sum-exp in
 * double. */
#include "gpt.h"

#include <math.h>

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
            *sum += mx + log(se) - row[y[r * T + i]];
            (*count)++;
        }
    return true;
}

bool eval_nonoverlap(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
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

bool eval_sliding(sl_gpt *m, const text *t, int64_t T, int64_t stride, int64_t span,
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

