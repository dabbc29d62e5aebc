/* examples/gpt/data.c — reading text and cutting it into batches. Tokens are bytes (vocab 256),
 * so any file works, UTF-8 included: a multi-byte character is simply several tokens. */
#include "data.h"

#include "corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool text_read(text *t, const char *path, char *err, size_t errcap)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errcap, "cannot open '%s': %s", path, strerror(errno));
        return false;
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *b = malloc(cap);
    for (;;) {
        if (!b) {
            fclose(f);
            snprintf(err, errcap, "out of memory reading '%s'", path);
            return false;
        }
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = realloc(b, cap * 2);
        if (!nb) free(b);
        b = nb;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        snprintf(err, errcap, "cannot read '%s': %s", path, strerror(errno));
        return false;
    }
    t->bytes = b;
    t->n = (int64_t)n;
    snprintf(t->source, sizeof t->source, "%s", path);
    return true;
}

void text_builtin(text *t, int part, int64_t n)
{
    memset(t, 0, sizeof *t);
    t->bytes = malloc((size_t)n);
    if (!t->bytes) return;
    corpus_generate(part == 0 ? 1 : 2, (char *)t->bytes, (size_t)n);
    t->n = n;
    snprintf(t->source, sizeof t->source, "built-in synthetic corpus (%s, %lld bytes)",
             part == 0 ? "training part" : "validation part", (long long)n);
}

bool text_split(text *src, text *val, double frac)
{
    memset(val, 0, sizeof *val);
    int64_t nv = (int64_t)((double)src->n * frac);
    if (nv < 1) return false;
    val->bytes = malloc((size_t)nv);
    if (!val->bytes) return false;
    memcpy(val->bytes, src->bytes + src->n - nv, (size_t)nv);
    val->n = nv;
    src->n -= nv;
    snprintf(val->source, sizeof val->source, "last %.0f%% of %.200s", frac * 100, src->source);
    return true;
}

void text_free(text *t)
{
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

bool batch_random(const text *t, int64_t B, int64_t T, sl_rng *rng, sl_tensor **idx,
                  sl_tensor **targets)
{
    if (t->n < T + 1) return sl_set_error(SL_ERR_ARG, "%s has %lld bytes, fewer than a window of %lld",
                                          t->source, (long long)t->n, (long long)(T + 1));
    *idx = sl_empty(SL_I32, sl_shape(B, T));
    *targets = sl_empty(SL_I32, sl_shape(B, T));
    if (!*idx || !*targets) return false;
    int32_t *x = (*idx)->data, *y = (*targets)->data;
    for (int64_t b = 0; b < B; b++) {
        int64_t s = (int64_t)sl_rng_below(rng, (uint64_t)(t->n - T));
        for (int64_t i = 0; i < T; i++) {
            x[b * T + i] = t->bytes[s + i];
            y[b * T + i] = t->bytes[s + i + 1];
        }
    }
    return true;
}

bool windows_at(const text *t, int64_t start, int64_t T, int64_t stride, int64_t rows,
                sl_tensor **idx, sl_tensor **targets)
{
    *idx = sl_empty(SL_I32, sl_shape(rows, T));
    *targets = sl_empty(SL_I32, sl_shape(rows, T));
    if (!*idx || !*targets) return false;
    int32_t *x = (*idx)->data, *y = (*targets)->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < T; i++) {
            int64_t p = start + r * stride + i;
            x[r * T + i] = t->bytes[p];
            y[r * T + i] = t->bytes[p + 1];
        }
    return true;
}
