/* nn/safetensors.c — reading and writing safetensors files (the format; checkpoint.c maps
 * models, optimizers and configs onto it).
 *
 * The layout (https://github.com/huggingface/safetensors):
 *     8 bytes      N, the header length, a little-endian u64
 *     N bytes      a JSON object: {"__metadata__": {"key": "value", ...},
 *                                  "name": {"dtype": "F32", "shape": [2, 3],
 *                                           "data_offsets": [begin, end]}, ...}
 *                  padded with spaces so that the data starts at a multiple of 8
 *     the data     each tensor's elements, row-major, little-endian; offsets count from here,
 *                  tensors are packed with no gaps and no overlaps and cover all of it.
 * We write "__metadata__" first, then the tensors in the order given (the registry's), those
 * with 8-byte elements before those with 4-byte ones, so each is aligned to its element size.
 *
 * Reading treats the file as untrusted: the header is parsed and checked completely (the JSON,
 * each entry's dtype, shape and byte size, that the offsets tile the data region exactly)
 * before any data is read; then the names, dtypes and shapes are matched against the model;
 * only then is the data read into a staging buffer and copied out. So a bad file changes
 * nothing, and the error names the file and its first problem.
 *
 * Writing is atomic: everything goes to "<path>.tmp.<pid>.<n>", which is fsynced and renamed over
 * path, and the directory is fsynced; on any error the temp file is removed and the previous
 * file at path is untouched. A process killed mid-write leaves its temp file behind: each save
 * removes those of path whose process is gone. A symlink at path is followed (the file it
 * names is replaced, the link stays); an existing file's permission bits are kept.
 */
#include "safetensors.h"

#include <stdatomic.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes tensor data in host order; safetensors is little-endian"
#endif

/* The reference implementation refuses headers above 100 MB. */
#define MAX_HEADER ((uint64_t)100000000)
#define MSG_MAX 768

static const char *dtype_tag(sl_dtype d)
{
    return d == SL_F32 ? "F32" : d == SL_F64 ? "F64" : "I32";
}

/* ================================================================ reading */

bool sl__ckpt_vfail(const sl__ckpt *ck, const char *fmt, va_list ap)
{
    char msg[MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return sl_set_error(SL_ERR_FORMAT, "%s: %s: %s", ck->op, ck->path, msg);
}

bool sl__ckpt_fail(const sl__ckpt *ck, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl__ckpt_vfail(ck, fmt, ap);
    va_end(ap);
    return false;
}

static bool io_error(const char *op, const char *what, const char *path)
{
    return sl_set_error(SL_ERR_IO, "%s: cannot %s '%s': %s", op, what, path, strerror(errno));
}

void sl__ckpt_close(sl__ckpt *ck)
{
    if (ck->fd >= 0) close(ck->fd);
    json_decref(ck->root);
    sl__free(ck->entries);
    ck->fd = -1;
    ck->root = NULL;
    ck->entries = NULL;
}

/* Reads exactly n bytes at offset; false on a short read or an error (errno set). */
static bool read_at(int fd, void *buf, size_t n, uint64_t offset)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)offset);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO; /* the file shrank under us */
            return false;
        }
        p += r;
        n -= (size_t)r;
        offset += (uint64_t)r;
    }
    return true;
}

static bool parse_dtype(const char *s, sl_dtype *out)
{
    static const sl_dtype all[] = {SL_F32, SL_F64, SL_I32};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, dtype_tag(all[i]))) {
            *out = all[i];
            return true;
        }
    return false;
}

/* A JSON integer >= 0, or false. */
static bool json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Checks one tensor entry of the header and fills e. */
static bool parse_entry(sl__ckpt *ck, const char *name, json_t *obj, sl__ckpt_entry *e)
{
    if (!json_is_object(obj))
        return sl__ckpt_fail(ck, "tensor '%s': the entry is not a JSON object", name);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return sl__ckpt_fail(ck, "tensor '%s': unexpected key '%s'", name, key);
    }
    json_t *jd = json_object_get(obj, "dtype"), *js = json_object_get(obj, "shape"),
           *jo = json_object_get(obj, "data_offsets");
    if (!json_is_string(jd))
        return sl__ckpt_fail(ck, "tensor '%s': \"dtype\" is missing or not a string", name);
    if (!parse_dtype(json_string_value(jd), &e->dtype))
        return sl__ckpt_fail(ck,
                             "tensor '%s': dtype \"%s\" is not one shortlong reads (F32, F64, I32)",
                             name, json_string_value(jd));
    if (!json_is_array(js))
        return sl__ckpt_fail(ck, "tensor '%s': \"shape\" is missing or not an array", name);
    if (json_array_size(js) > SL_MAX_DIMS)
        return sl__ckpt_fail(ck, "tensor '%s': shape has %zu dims, at most %d are supported", name,
                             json_array_size(js), SL_MAX_DIMS);
    e->name = name;
    e->ndim = (int)json_array_size(js);
    uint64_t bytes = sl_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++) {
        uint64_t d;
        if (!json_u64(json_array_get(js, (size_t)i), &d))
            return sl__ckpt_fail(ck, "tensor '%s': shape entry %d is not a non-negative integer",
                                 name, i);
        if (d && bytes > UINT64_MAX / d)
            return sl__ckpt_fail(ck, "tensor '%s': shape is too large", name);
        e->shape[i] = (int64_t)d;
        bytes *= d;
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_u64(json_array_get(jo, 0), &e->begin) || !json_u64(json_array_get(jo, 1), &e->end))
        return sl__ckpt_fail(
            ck, "tensor '%s': \"data_offsets\" is not a pair of non-negative integers", name);
    const char *shape = sl__dims_str(e->ndim, e->shape);
    if (e->begin > e->end)
        return sl__ckpt_fail(ck,
                             "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run backwards",
                             name, e->begin, e->end);
    if (e->end > ck->data_len)
        return sl__ckpt_fail(ck,
                             "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] lie outside the "
                             "data (%" PRIu64 " bytes after the header; is the file truncated?)",
                             name, e->begin, e->end, ck->data_len);
    if (e->end - e->begin != bytes)
        return sl__ckpt_fail(ck,
                             "tensor '%s': %s %s needs %" PRIu64 " bytes but data_offsets [%" PRIu64
                             ", %" PRIu64 "] hold %" PRIu64,
                             name, json_string_value(jd), shape, bytes, e->begin, e->end,
                             e->end - e->begin);
    return true;
}

static int by_offset(const void *a, const void *b)
{
    const sl__ckpt_entry *x = *(const sl__ckpt_entry *const *)a;
    const sl__ckpt_entry *y = *(const sl__ckpt_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The tensors must tile [0, data_len): sorted by offset, each starts where the last ended. */
static bool check_tiling(sl__ckpt *ck)
{
    const sl__ckpt_entry **order = sl__malloc(sizeof *order * (size_t)(ck->n + 1));
    if (!order) return sl_set_error(SL_ERR_OOM, "%s: out of memory", ck->op);
    for (int i = 0; i < ck->n; i++) order[i] = &ck->entries[i];
    qsort(order, (size_t)ck->n, sizeof *order, by_offset);
    uint64_t pos = 0;
    const sl__ckpt_entry *prev = NULL;
    bool ok = true;
    for (int i = 0; i < ck->n && ok; i++) {
        const sl__ckpt_entry *e = order[i];
        if (e->begin < pos)
            ok = sl__ckpt_fail(ck,
                               "tensor '%s' [%" PRIu64 ", %" PRIu64
                               ") overlaps tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                               e->name, e->begin, e->end, prev->name, prev->begin, prev->end);
        else if (e->begin > pos)
            ok = sl__ckpt_fail(ck,
                               "bytes [%" PRIu64 ", %" PRIu64 ") of the data belong to no tensor "
                               "(before tensor '%s')",
                               pos, e->begin, e->name);
        pos = e->end;
        prev = e;
    }
    if (ok && pos != ck->data_len)
        ok = sl__ckpt_fail(ck,
                           "the tensors end at byte %" PRIu64
                           " of the data but the file holds %" PRIu64 " (trailing bytes)",
                           pos, ck->data_len);
    sl__free(order);
    return ok;
}

/* Opens path and checks its header completely (no tensor data is read). */
bool sl__ckpt_open(sl__ckpt *ck, const char *op, const char *path)
{
    *ck = (sl__ckpt){.op = op, .path = path, .fd = -1};
    if (!path) return sl_set_error(SL_ERR_ARG, "%s: path is NULL", op);
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer. Only a regular file is
     * read, in blocking mode. */
    ck->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (ck->fd < 0) return io_error(op, "open", path);
    struct stat st;
    if (fstat(ck->fd, &st) != 0) return io_error(op, "stat", path);
    if (!S_ISREG(st.st_mode)) return sl__ckpt_fail(ck, "not a regular file");
    int fl = fcntl(ck->fd, F_GETFL);
    if (fl < 0 || fcntl(ck->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) return io_error(op, "open", path);
    ck->file_size = (uint64_t)st.st_size;
    if (ck->file_size < 8)
        return sl__ckpt_fail(
            ck, "the file is %" PRIu64 " bytes, too short for the 8-byte header length",
            ck->file_size);
    unsigned char len[8];
    if (!read_at(ck->fd, len, 8, 0)) return io_error(op, "read", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len[i];
    ck->header_len = n;
    if (n > MAX_HEADER)
        return sl__ckpt_fail(ck,
                             "header length %" PRIu64 " is absurd (the limit is %" PRIu64
                             "; is this "
                             "a safetensors file?)",
                             n, MAX_HEADER);
    if (n > ck->file_size - 8)
        return sl__ckpt_fail(ck,
                             "header length %" PRIu64
                             " is larger than the rest of the file (%" PRIu64
                             " bytes; is the file truncated?)",
                             n, ck->file_size - 8);
    ck->data_len = ck->file_size - 8 - n;
    char *text = sl__malloc((size_t)n);
    if (!text) return sl_set_error(SL_ERR_OOM, "%s: out of memory for a %" PRIu64 "-byte header",
                                   op, n);
    if (!read_at(ck->fd, text, (size_t)n, 8)) {
        sl__free(text);
        return io_error(op, "read", path);
    }
    json_error_t err;
    ck->root = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    sl__free(text);
    if (!ck->root)
        return sl__ckpt_fail(ck,
                             "the header is not valid JSON: %s (header byte %d, file offset %d)",
                             err.text, err.position, err.position + 8);
    if (!json_is_object(ck->root)) return sl__ckpt_fail(ck, "the header is not a JSON object");

    size_t count = json_object_size(ck->root);
    ck->entries = sl__malloc(sizeof *ck->entries * (count + 1));
    if (!ck->entries) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    const char *key;
    json_t *val;
    json_object_foreach(ck->root, key, val)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val))
                return sl__ckpt_fail(ck, "\"__metadata__\" is not a JSON object");
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv)
            {
                if (!json_is_string(mv))
                    return sl__ckpt_fail(ck, "metadata value of '%s' is not a string", mk);
            }
            ck->meta = val;
            continue;
        }
        if (!parse_entry(ck, key, val, &ck->entries[ck->n])) return false;
        ck->n++;
    }
    return check_tiling(ck);
}

static const sl__ckpt_entry *ck_find(const sl__ckpt *ck, const char *name)
{
    for (int i = 0; i < ck->n; i++)
        if (!strcmp(ck->entries[i].name, name)) return &ck->entries[i];
    return NULL;
}

const char *sl__ckpt_meta(const sl__ckpt *ck, const char *key)
{
    json_t *v = ck->meta ? json_object_get(ck->meta, key) : NULL;
    return v ? json_string_value(v) : NULL;
}

/* The file's entry for tensor t (named `name`), with t's dtype (or, converting, another float
 * dtype) and shape; else an error. */
static const sl__ckpt_entry *ck_match(const sl__ckpt *ck, const char *name, const sl_tensor *t,
                                      const sl_load_opts *opts)
{
    const sl__ckpt_entry *e = ck_find(ck, name);
    if (!e) return sl__ckpt_fail(ck, "missing tensor '%s'", name), NULL;
    bool floats = e->dtype != SL_I32 && t->dtype != SL_I32;
    if (e->dtype != t->dtype && !(opts->convert_dtype && floats))
        return sl__ckpt_fail(ck, "tensor '%s' is %s in the file, the model expects %s%s", name,
                             dtype_tag(e->dtype), dtype_tag(t->dtype),
                             floats ? " (sl_load_opts.convert_dtype converts it)" : ""),
               NULL;
    if (e->ndim != t->ndim || memcmp(e->shape, t->shape, sizeof *e->shape * (size_t)e->ndim))
        return sl__ckpt_fail(ck, "tensor '%s' has shape %s in the file, the model expects %s", name,
                             sl__dims_str(e->ndim, e->shape), sl_shape_str(t)),
               NULL;
    if (!sl_is_contiguous(t))
        return sl_set_error(SL_ERR_ARG, "%s: tensor '%s' %s is not contiguous", ck->op, name,
                            sl_shape_str(t)),
               NULL;
    return e;
}

/* Reads each found entry's byte range (and only those: a tensor the caller skips is never
 * read) into one staging buffer, entry i at offsets[i]. */
static unsigned char *ck_read_ranges(const sl__ckpt *ck, const sl__ckpt_entry *const *found, int n,
                                     uint64_t *offsets)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        offsets[i] = total;
        total += found[i]->end - found[i]->begin;
    }
    if (total > SIZE_MAX - 1)
        return sl_set_error(SL_ERR_OOM, "%s: %s: %" PRIu64 " bytes of tensors do not fit in memory",
                            ck->op, ck->path, total),
               NULL;
    unsigned char *buf = sl__malloc((size_t)total + 1);
    if (!buf)
        return sl_set_error(SL_ERR_OOM, "%s: out of memory for %" PRIu64 " bytes of %s", ck->op,
                            total, ck->path),
               NULL;
    for (int i = 0; i < n; i++)
        if (!read_at(ck->fd, buf + offsets[i], (size_t)(found[i]->end - found[i]->begin),
                     8 + ck->header_len + found[i]->begin)) {
            io_error(ck->op, "read", ck->path);
            sl__free(buf);
            return NULL;
        }
    return buf;
}

/* The first non-finite value of a float entry's staged bytes (unaligned: memcpy), or -1. */
static int64_t first_nonfinite(const unsigned char *p, sl_dtype dtype, int64_t n, double *value)
{
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (dtype == SL_F32) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            v = f;
        } else {
            memcpy(&v, p + 8 * i, 8);
        }
        if (!isfinite(v)) {
            *value = v;
            return i;
        }
    }
    return -1;
}

/* The first finite f64 value that is beyond float's range (it would become infinite), or -1. */
static int64_t first_too_large_for_f32(const unsigned char *p, int64_t n, double *value)
{
    for (int64_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        if (isfinite(v) && isinf((float)v)) {
            *value = v;
            return i;
        }
    }
    return -1;
}

/* The staged values of entry e checked for what they become in t. */
static bool check_values(const sl__ckpt *ck, const sl__ckpt_entry *e, const unsigned char *p,
                         const sl_tensor *t, const sl_load_opts *opts)
{
    if (e->dtype == SL_I32) return true;
    int64_t n = sl_numel(t), i;
    double v;
    if (!opts->allow_nonfinite && (i = first_nonfinite(p, e->dtype, n, &v)) >= 0)
        return sl__ckpt_fail(ck,
                             "tensor '%s' %s holds %g at flat index %" PRId64 " (a model "
                             "with NaN or infinite values; sl_load_opts.allow_nonfinite loads "
                             "it anyway)",
                             e->name, sl__dims_str(e->ndim, e->shape), v, i);
    if (e->dtype == SL_F64 && t->dtype == SL_F32 && (i = first_too_large_for_f32(p, n, &v)) >= 0)
        return sl__ckpt_fail(ck,
                             "tensor '%s' %s holds %g at flat index %" PRId64 ", beyond the "
                             "range of F32",
                             e->name, sl__dims_str(e->ndim, e->shape), v, i);
    return true;
}

/* Copies entry e's staged values into t, converting between f32 and f64 if they differ. */
static void copy_out(const sl__ckpt_entry *e, const unsigned char *p, sl_tensor *t)
{
    int64_t n = sl_numel(t);
    if (e->dtype == t->dtype) {
        memcpy(sl_ptr(t), p, (size_t)(e->end - e->begin));
    } else if (t->dtype == SL_F64) {
        double *d = sl_ptr(t);
        for (int64_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            d[i] = f;
        }
    } else {
        float *d = sl_ptr(t);
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            d[i] = (float)v;
        }
    }
    sl__bump(t);
}

bool sl__ckpt_load(sl__ckpt *ck, const sl_named *items, int n, const char *skip_prefix,
                   const sl_load_opts *opts)
{
    static const sl_load_opts strict = {0};
    if (!opts) opts = &strict;
    const sl__ckpt_entry **found = sl__malloc(sizeof *found * (size_t)(n + 1));
    uint64_t *offsets = sl__malloc(sizeof *offsets * (size_t)(n + 1));
    bool ok = found && offsets;
    if (!ok) sl_set_error(SL_ERR_OOM, "%s: out of memory", ck->op);
    for (int i = 0; ok && i < n; i++)
        ok = (found[i] = ck_match(ck, items[i].name, items[i].tensor, opts)) != NULL;
    for (int i = 0; ok && i < ck->n; i++) {
        const char *name = ck->entries[i].name;
        bool known = skip_prefix && sl__has_prefix(name, skip_prefix);
        for (int k = 0; !known && k < n; k++) known = !strcmp(items[k].name, name);
        if (!known)
            ok = sl__ckpt_fail(ck, "unexpected tensor '%s' (nothing of that name to load)", name);
    }
    unsigned char *staged = ok ? ck_read_ranges(ck, found, n, offsets) : NULL;
    ok = ok && staged;
    for (int i = 0; ok && i < n; i++)
        ok = check_values(ck, found[i], staged + offsets[i], items[i].tensor, opts);
    for (int i = 0; ok && i < n; i++) copy_out(found[i], staged + offsets[i], items[i].tensor);
    sl__free(staged);
    sl__free(offsets);
    sl__free(found);
    return ok;
}

/* ================================================================ writing */

bool sl__ckpt_meta_put(const char *op, json_t *meta, const char *key, const char *value)
{
    if (!key || !value) return sl_set_error(SL_ERR_ARG, "%s: a metadata key or value is NULL", op);
    if (json_object_get(meta, key))
        return sl_set_error(SL_ERR_ARG, "%s: metadata key '%s' given twice", op, key);
    if (json_object_set_new(meta, key, json_string(value)))
        return sl_set_error(SL_ERR_ARG, "%s: metadata '%s' is not valid UTF-8 (or out of memory)",
                            op, key);
    return true;
}

static bool write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* The JSON header for items (offsets packed in order), padded with spaces to a multiple of 8. */
static char *make_header(const char *op, const sl_named *items, int n, json_t *meta, size_t *len)
{
    json_t *root = json_object();
    bool ok = root != NULL;
    if (ok && json_object_size(meta)) ok = json_object_set(root, "__metadata__", meta) == 0;
    uint64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        const sl_tensor *t = items[i].tensor;
        uint64_t bytes = (uint64_t)sl_numel(t) * sl_dtype_size(t->dtype);
        if (!strcmp(items[i].name, "__metadata__") || json_object_get(root, items[i].name)) {
            sl_set_error(SL_ERR_ARG, "%s: tensor name '%s' is reserved or given twice", op,
                         items[i].name);
            json_decref(root);
            return NULL;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *e = shape ? json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_tag(t->dtype),
                                      "shape", shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + bytes))
                          : NULL;
        ok = e && json_object_set_new(root, items[i].name, e) == 0;
        off += bytes;
    }
    char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!text) {
        sl_set_error(SL_ERR_ARG, "%s: cannot build the header (a name that is not UTF-8, or out "
                     "of memory)", op);
        return NULL;
    }
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8;
    char *h = sl__malloc(padded);
    if (h) {
        memcpy(h, text, tl);
        memset(h + tl, ' ', padded - tl);
        *len = padded;
    } else {
        sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    }
    free(text); /* jansson's allocator */
    return h;
}

/* Writes the header and each item's data to fd. */
static bool write_contents(int fd, const char *header, size_t hlen, const sl_named *items, int n)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    if (!write_all(fd, len, 8) || !write_all(fd, header, hlen)) return false;
    for (int i = 0; i < n; i++) {
        const sl_tensor *t = items[i].tensor;
        size_t bytes = (size_t)sl_numel(t) * sl_dtype_size(t->dtype);
        if (sl_is_contiguous(t)) {
            if (!write_all(fd, sl_ptr(t), bytes)) return false;
            continue;
        }
        void *buf = sl__malloc(bytes);
        if (!buf) {
            errno = ENOMEM;
            return false;
        }
        bool ok = sl_copy_out(t, buf) && write_all(fd, buf, bytes);
        sl__free(buf);
        if (!ok) return false;
    }
    return true;
}

/* fsync of the directory holding path, so that the rename itself is durable. */
static bool fsync_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = sl__malloc(n + 2);
    if (!dir) return false;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sl__free(dir);
    if (fd < 0) return false;
    /* Some file systems cannot fsync a directory (EINVAL): nothing more can be done there. */
    bool ok = fsync(fd) == 0 || errno == EINVAL;
    close(fd);
    return ok;
}

/* The file a save of path replaces: path itself, or, when path is a symlink (a chain of them),
 * the file it finally names, existing or not. A heap string; NULL on an error (reported). */
static char *final_target(const char *op, const char *path)
{
    size_t cap = strlen(path) + 1;
    char *cur = sl__malloc(cap);
    if (!cur) return SL_FAIL(SL_ERR_OOM, "%s: out of memory", op);
    memcpy(cur, path, cap);
    for (int hops = 0;; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) return cur; /* absent, or not a link */
        if (hops == 40) {
            sl__free(cur);
            return SL_FAIL(SL_ERR_IO,
                           "%s: cannot save to '%s': too many levels of symbolic "
                           "links",
                           op, path);
        }
        size_t lcap = (size_t)st.st_size + 1 > 256 ? (size_t)st.st_size + 1 : 256;
        char *link = sl__malloc(lcap);
        ssize_t ln = link ? readlink(cur, link, lcap) : -1;
        if (ln < 0 || (size_t)ln >= lcap) {
            sl__free(link);
            sl__free(cur);
            return SL_FAIL(SL_ERR_IO, "%s: cannot read the symbolic link '%s'", op, path);
        }
        link[ln] = '\0';
        /* A relative link is relative to the link's directory. */
        const char *slash = strrchr(cur, '/');
        size_t dlen = link[0] != '/' && slash ? (size_t)(slash - cur) + 1 : 0;
        char *next = sl__malloc(dlen + (size_t)ln + 1);
        if (next) {
            memcpy(next, cur, dlen);
            memcpy(next + dlen, link, (size_t)ln + 1);
        }
        sl__free(link);
        sl__free(cur);
        if (!next) return SL_FAIL(SL_ERR_OOM, "%s: out of memory", op);
        cur = next;
    }
}

/* Removes the temp files "<base>.tmp.<pid>.<n>" of target left by processes that no longer run
 * (killed mid-save). Not this process's (another thread may be saving) nor a running one's. */
static void remove_stale_temps(const char *target)
{
    const char *slash = strrchr(target, '/');
    const char *base = slash ? slash + 1 : target;
    size_t dlen = slash ? (size_t)(slash - target) + 1 : 0, blen = strlen(base);
    char *dirname = sl__malloc(dlen + 2);
    if (!dirname) return;
    if (dlen) memcpy(dirname, target, dlen);
    strcpy(dirname + dlen, dlen ? "" : ".");
    DIR *d = opendir(dirname);
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) || strncmp(name + blen, ".tmp.", 5)) continue;
        const char *p = name + blen + 5;
        size_t np = strspn(p, "0123456789");
        if (!np || p[np] != '.' || !p[np + 1] ||
            strspn(p + np + 1, "0123456789") != strlen(p + np + 1))
            continue;
        long pid = strtol(p, NULL, 10);
        if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *full = sl__malloc(dlen + strlen(name) + 1);
        if (!full) break;
        memcpy(full, target, dlen);
        strcpy(full + dlen, name);
        unlink(full);
        sl__free(full);
    }
    if (d) closedir(d);
    sl__free(dirname);
}

/* Writes items to path atomically. As the reference implementation does, 8-byte tensors go
 * first so that every tensor starts at a multiple of its element size (the header length is
 * a multiple of 8); otherwise the order is the caller's. */
bool sl__ckpt_write(const char *op, const char *path, const sl_named *given, int n, json_t *meta)
{
    if (!path) return sl_set_error(SL_ERR_ARG, "%s: path is NULL", op);
    sl_named *items = sl__malloc(sizeof *items * (size_t)(n + 1));
    if (!items) return sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
    int k = 0;
    for (size_t size = 8; size >= 4; size -= 4)
        for (int i = 0; i < n; i++)
            if (sl_dtype_size(given[i].tensor->dtype) == size) items[k++] = given[i];
    size_t hlen;
    char *header = make_header(op, items, n, meta, &hlen);
    char *target = header ? final_target(op, path) : NULL;
    size_t cap = target ? strlen(target) + 32 : 0;
    char *tmp = target ? sl__malloc(cap) : NULL;
    if (!tmp) {
        if (target) sl_set_error(SL_ERR_OOM, "%s: out of memory", op);
        sl__free(target);
        sl__free(header);
        sl__free(items);
        return false;
    }
    remove_stale_temps(target);
    struct stat old;
    bool replacing = stat(target, &old) == 0 && S_ISREG(old.st_mode);
    /* A name unique to this call (pid and a counter), created exclusively: two threads saving
     * to the same path never share a temp file. */
    static atomic_uint counter;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%u", target, (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    bool ok = false;
    if (fd < 0) {
        io_error(op, "create", tmp);
    } else if ((replacing && fchmod(fd, old.st_mode & 07777) != 0) ||
               !write_contents(fd, header, hlen, items, n) || fsync(fd) != 0) {
        io_error(op, "write", tmp);
        close(fd);
    } else if (close(fd) != 0) {
        io_error(op, "write", tmp);
    } else if (rename(tmp, target) != 0) {
        sl_set_error(SL_ERR_IO, "%s: cannot rename '%s' to '%s': %s", op, tmp, target,
                     strerror(errno));
    } else if (!fsync_dir(target)) {
        io_error(op, "fsync the directory of", target);
    } else {
        ok = true;
    }
    if (!ok && fd >= 0) unlink(tmp); /* no-op once renamed */
    sl__free(tmp);
    sl__free(target);
    sl__free(header);
    sl__free(items);
    return ok;
}
