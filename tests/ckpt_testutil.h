/* tests/ckpt_testutil.h — files and registries for the checkpoint suites (test_checkpoint.c,
 * test_checkpoint_train.c): a fresh temporary directory per test, byte-level file access, a
 * small registry, and snapshots of parameter bytes. */
#ifndef SL_CKPT_TESTUTIL_H
#define SL_CKPT_TESTUTIL_H

#include "testutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- files */

static char dir[64];

static inline void setup(void)
{
    tu_setup();
    strcpy(dir, "/tmp/sl_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static inline void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        remove(path);
        return;
    }
    struct dirent *e;
    char sub[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
            remove_tree(sub);
    closedir(d);
    rmdir(path);
}

static inline void teardown(void)
{
    chmod(dir, 0700);
    remove_tree(dir);
    tu_teardown();
}

/* dir/name, in one of a few rotating buffers. */
static inline const char *at(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static inline unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len + 1);
    ck_assert_uint_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static inline void write_bytes(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* A safetensors file with the given header text (not padded) and data_len bytes of data. */
static inline bool exists(const char *path) { return access(path, F_OK) == 0; }

/* The prefix of the temp files a save of path uses: "<path>.tmp.<pid>." and a counter. */
static inline const char *tmp_of(const char *path)
{
    static char b[300];
    snprintf(b, sizeof b, "%s.tmp.%ld.", path, (long)getpid());
    return b;
}

/* True if a temp file of path (any counter) is still in its directory. */
static inline bool temp_left(const char *path)
{
    char folder[300], prefix[320];
    snprintf(folder, sizeof folder, "%s", path);
    char *slash = strrchr(folder, '/');
    const char *base = slash ? slash + 1 : folder;
    snprintf(prefix, sizeof prefix, "%.300s.tmp.", base);
    if (slash) *slash = '\0';
    DIR *d = opendir(slash ? folder : ".");
    bool found = false;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d) closedir(d);
    return found;
}

/* msg is "<head><a temp file of path>': <tail>". */
static inline bool is_temp_msg(const char *msg, const char *head, const char *path,
                               const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    const char *pre = tmp_of(path);
    return strncmp(msg, head, h) == 0 && strncmp(msg + h, pre, strlen(pre)) == 0 &&
           strlen(msg) >= h + t && strcmp(msg + strlen(msg) - t, tail) == 0;
}

/* ---------------------------------------------------------------- registries */

/* Five parameters, a scalar and an empty one among them, with random values. */
static inline sl_params *make_params(sl_dtype dtype, uint64_t seed)
{
    sl_params *ps = sl_params_new(dtype);
    ck_assert_ptr_nonnull(ps);
    sl_rng r = sl_rng_seed(seed);
    sl_tensor *t[] = {
        sl_params_add(ps, "emb.weight", sl_shape(5, 3), false),
        sl_params_add(ps, "blocks.0.fc.weight", sl_shape(4, 3), true),
        sl_params_add(ps, "blocks.0.fc.bias", sl_shape(4), false),
        sl_params_add(ps, "scale", 0, NULL, false),
        sl_params_add(ps, "empty", sl_shape(0, 3), true),
    };
    for (int i = 0; i < 5; i++) {
        ck_assert_ptr_nonnull(t[i]);
        sl_init_normal(t[i], &r, 1.0);
    }
    return ps;
}

/* All parameter bytes, concatenated. */
static inline unsigned char *snapshot(const sl_params *ps, size_t *len)
{
    size_t n = 0;
    for (int i = 0; i < sl_params_count(ps); i++) {
        const sl_tensor *t = sl_params_at(ps, i)->value;
        n += (size_t)sl_numel(t) * sl_dtype_size(t->dtype);
    }
    unsigned char *b = malloc(n + 1), *p = b;
    for (int i = 0; i < sl_params_count(ps); i++) {
        const sl_tensor *t = sl_params_at(ps, i)->value;
        size_t k = (size_t)sl_numel(t) * sl_dtype_size(t->dtype);
        memcpy(p, t->data, k);
        p += k;
    }
    *len = n;
    return b;
}

static inline void assert_same(const sl_params *ps, const unsigned char *snap, size_t len)
{
    size_t n;
    unsigned char *now = snapshot(ps, &n);
    ck_assert_uint_eq(n, len);
    ck_assert_msg(memcmp(now, snap, n) == 0, "parameters changed");
    free(now);
}

/* The message starts with "<op>: <path>: ". */
static inline void assert_names_file(const char *op, const char *path)
{
    char prefix[400];
    snprintf(prefix, sizeof prefix, "%s: %s: ", op, path);
    ck_assert_msg(strncmp(sl_error_message(), prefix, strlen(prefix)) == 0,
                  "message '%s' does not start with '%s'", sl_error_message(), prefix);
    ck_assert_uint_gt(strlen(sl_error_message()), strlen(prefix) + 5);
}

#endif
