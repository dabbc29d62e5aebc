/* nn/safetensors.h — the safetensors file format, for checkpoint.c. Not installed.
 *
 * sl__ckpt_open reads and checks a file's header completely (no tensor data yet);
 * sl__ckpt_load then matches named tensors against it and copies the data into them only when
 * everything fits. sl__ckpt_write writes named tensors and a metadata object atomically.
 * Errors name the function (`op`) and the file: "<op>: <path>: <detail>".
 */
#ifndef SL_NN_SAFETENSORS_H
#define SL_NN_SAFETENSORS_H

#include "internal.h"

#include <jansson.h>

typedef struct {
    const char *name; /* in the parsed JSON */
    sl_dtype dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS];
    uint64_t begin, end; /* bytes, relative to the data region */
} sl__ckpt_entry;

/* An open file. Initialised by sl__ckpt_open even when it fails; always sl__ckpt_close it. */
typedef struct {
    const char *op, *path;
    int fd;
    uint64_t file_size, header_len, data_len;
    json_t *root;
    json_t *meta;            /* "__metadata__" or NULL */
    sl__ckpt_entry *entries; /* n, in header order */
    int n;
} sl__ckpt;

bool sl__ckpt_open(sl__ckpt *ck, const char *op, const char *path);
void sl__ckpt_close(sl__ckpt *ck);
/* A "__metadata__" value, or NULL if the key is absent. */
const char *sl__ckpt_meta(const sl__ckpt *ck, const char *key);
/* Records "<op>: <path>: <formatted detail>" as SL_ERR_FORMAT. Always false. */
bool sl__ckpt_vfail(const sl__ckpt *ck, const char *fmt, va_list ap);
bool sl__ckpt_fail(const sl__ckpt *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline bool sl__has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}
/* Loads items[0..n) (contiguous tensors): each must be in the file with its dtype (or, with
 * opts->convert_dtype, the other float dtype) and shape, and the file may hold no other tensor
 * except those whose names start with skip_prefix (if not NULL), which are never read. Only
 * the items' byte ranges are read, into a staging buffer; their float values must be finite
 * unless opts->allow_nonfinite. Nothing is written to the items unless all of that holds.
 * opts NULL: the defaults. */
bool sl__ckpt_load(sl__ckpt *ck, const sl_named *items, int n, const char *skip_prefix,
                   const sl_load_opts *opts);

/* Adds a metadata pair to a JSON object (an error on a NULL, a repeated key or bad UTF-8). */
bool sl__ckpt_meta_put(const char *op, json_t *meta, const char *key, const char *value);
/* Writes items[0..n) (names unique) and the metadata object to path, atomically. */
bool sl__ckpt_write(const char *op, const char *path, const sl_named *items, int n,
                    json_t *meta);

#endif
