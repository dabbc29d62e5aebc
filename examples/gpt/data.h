/* examples/gpt/data.h — bytes in, batches and evaluation windows out. */
#ifndef GPT_DATA_H
#define GPT_DATA_H

#include <shortlong/shortlong.h>

typedef struct {
    unsigned char *bytes; /* owned */
    int64_t n;
    char source[256];     /* the file name, or a description of the built-in corpus */
} text;

/* Reads a whole file; false with a message naming the file on any problem. */
bool text_read(text *t, const char *path, char *err, size_t errcap);
/* The built-in corpus: `n` bytes of part `part` (0: training, 1: validation). */
void text_builtin(text *t, int part, int64_t n);
/* Splits off the last `frac` of src into val (copies), keeping the rest in src. */
bool text_split(text *src, text *val, double frac);
void text_free(text *t);

/* A batch of B random windows of T + 1 bytes: idx (B, T) and targets (B, T), i32, in the
 * current arena; the window starts come from rng. */
bool batch_random(const text *t, int64_t B, int64_t T, sl_rng *rng, sl_tensor **idx,
                  sl_tensor **targets);

/* `rows` windows of T inputs (and the T bytes after each, as targets), the r-th starting at
 * start + r * stride: i32 (rows, T) each. The caller keeps every window inside the text. */
bool windows_at(const text *t, int64_t start, int64_t T, int64_t stride, int64_t rows,
                sl_tensor **idx, sl_tensor **targets);

#endif
