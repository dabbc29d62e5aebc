/* examples/gpt/data.h — bytes in, batches and evaluation windows out. */
#ifndef GPT_DATA_H
#define GPT_DATA_H

#include <shortlong/shortlong.h>

typedef struct {
    unsigned char *bytes; /* owned */
    int64_t n;
    char source[256];     /* the file name, or a description of the built-in corpus */
} text;

/* The largest text read whole (1 GiB). */
#define TEXT_MAX_BYTES (INT64_C(1) << 30)

/* Reads a whole file, which must be a regular file of at most TEXT_MAX_BYTES (a FIFO or a
 * device is refused without blocking); false with a message naming the file on any problem.
 * An empty file is read (n = 0): the caller decides how much it needs. */
bool text_read(text *t, const char *path, char *err, size_t errcap);
/* Every byte of t is below vocab (a model with a vocabulary under 256 cannot score the rest);
 * false with a message naming the first byte that is not and its offset. */
bool text_check_vocab(const text *t, int64_t vocab, char *err, size_t errcap);
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
