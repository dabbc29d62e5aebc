/* examples/gpt/data.c — reading text and cutting it into batches. Tokens are bytes (vocab 256),
 * so any file works, UTF-8 included: a multi-byte character is simply several tokens. */
#include "data.h"

#include "corpus.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool text_read(text *t, const char *path, char *err, size_t errcap)
{
    memset(t, 0, sizeof *t);
    /* O_NONBLOCK: a FIFO would otherwise block the open until a writer came. Only a regular
     * file is read (a FIFO, a device such as /dev/zero or a directory is refused), and only
     * up to TEXT_MAX_BYTES. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errcap, "cannot open '%s': %s", path, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap,
                 "'%s' is not a regular file (data must be a file, not a FIFO, a "
                 "device or a directory)",
                 path);
        close(fd);
        return false;
    }
    if ((uint64_t)st.st_size > TEXT_MAX_BYTES) {
        snprintf(err, errcap, "'%s' is %lld bytes, more than the %lld a text may have", path,
                 (long long)st.st_size, (long long)TEXT_MAX_BYTES);
        close(fd);
        return false;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    size_t cap = (size_t)st.st_size, n = 0;
    unsigned char *b = malloc(cap + 1);
    if (!b) {
        close(fd);
        snprintf(err, errcap, "out of memory reading '%s' (%zu bytes)", path, cap);
        return false;
    }
    while (n < cap) { /* the size fstat gave: a file that grows meanwhile is read that far */
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errcap, "cannot read '%s': %s", path, strerror(errno));
            free(b);
            close(fd);
            return false;
        }
        if (r == 0) break; /* it shrank */
        n += (size_t)r;
    }
    close(fd);
    t->bytes = b;
    t->n = (int64_t)n;
    snprintf(t->source, sizeof t->source, "%s", path);
    return true;
}

bool text_check_vocab(const text *t, int64_t vocab, char *err, size_t errcap)
{
    if (vocab >= 256) return true;
    for (int64_t i = 0; i < t->n; i++)
        if (t->bytes[i] >= vocab) {
            snprintf(err, errcap,
                     "byte %d at offset %lld of %s is outside the model's "
                     "vocabulary of %lld",
                     t->bytes[i], (long long)i, t->source, (long long)vocab);
            return false;
        }
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
