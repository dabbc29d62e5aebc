/* Checkpoints: the safetensors layout byte for byte, bitwise round trips (f32, f64, i32,
 * metadata), every validation error with its message, truncations and flipped bytes (never a
 * crash, always an error, parameters unchanged), atomic writes, bitwise-identical resumption
 * of training, and GPT checkpoints. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- files */

static char dir[64];

static void setup(void)
{
    tu_setup();
    strcpy(dir, "/tmp/sl_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        remove(path);
        return;
    }
    struct dirent *e;
    char sub[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
    closedir(d);
    rmdir(path);
}

static void teardown(void)
{
    chmod(dir, 0700);
    remove_tree(dir);
    tu_teardown();
}

/* dir/name, in one of a few rotating buffers. */
static const char *at(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static unsigned char *read_bytes(const char *path, size_t *len)
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

static void write_bytes(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* A safetensors file with the given header text (not padded) and data_len bytes of data. */
static void write_raw(const char *path, const char *header, size_t data_len)
{
    size_t n = strlen(header);
    unsigned char *b = calloc(1, 8 + n + data_len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    write_bytes(path, b, 8 + n + data_len);
    free(b);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static const char *tmp_of(const char *path)
{
    static char b[300];
    snprintf(b, sizeof b, "%s.tmp.%ld", path, (long)getpid());
    return b;
}

/* ---------------------------------------------------------------- registries */

/* Five parameters, a scalar and an empty one among them, with random values. */
static sl_params *make_params(sl_dtype dtype, uint64_t seed)
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
static unsigned char *snapshot(const sl_params *ps, size_t *len)
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

static void assert_same(const sl_params *ps, const unsigned char *snap, size_t len)
{
    size_t n;
    unsigned char *now = snapshot(ps, &n);
    ck_assert_uint_eq(n, len);
    ck_assert_msg(memcmp(now, snap, n) == 0, "parameters changed");
    free(now);
}

/* The message starts with "<op>: <path>: ". */
static void assert_names_file(const char *op, const char *path)
{
    char prefix[400];
    snprintf(prefix, sizeof prefix, "%s: %s: ", op, path);
    ck_assert_msg(strncmp(sl_error_message(), prefix, strlen(prefix)) == 0,
                  "message '%s' does not start with '%s'", sl_error_message(), prefix);
    ck_assert_uint_gt(strlen(sl_error_message()), strlen(prefix) + 5);
}

/* ---------------------------------------------------------------- layout and round trips */

START_TEST(header_layout_is_safetensors)
{
    float x[2] = {1.5f, -2.0f};
    int32_t n[3] = {7, -8, 9};
    double d = 0.1;
    sl_named ts[] = {{"x", sl_from_data(SL_F32, sl_shape(2), x)},
                     {"n", sl_from_data(SL_I32, sl_shape(3), n)},
                     {"d", sl_from_data(SL_F64, 0, NULL, &d)}};
    sl_meta meta[] = {{"k", "v"}};
    const char *path = at("layout.safetensors");
    ck_assert_msg(sl_save_tensors(path, ts, 3, meta, 1), "%s", sl_error_message());
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | b[i];
    /* 8-byte dtypes first (alignment), compact JSON, spaces up to a multiple of 8 */
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
                       "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                       "\"n\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[16,28]}}";
    ck_assert_uint_eq(hn % 8, 0);
    ck_assert_uint_eq(hn, (strlen(want) + 7) / 8 * 8);
    ck_assert_int_eq(memcmp(b + 8, want, strlen(want)), 0);
    for (size_t i = 8 + strlen(want); i < 8 + hn; i++) ck_assert_int_eq(b[i], ' ');
    ck_assert_uint_eq(len, 8 + hn + 28);
    const unsigned char *data = b + 8 + hn;
    ck_assert_int_eq(memcmp(data, &d, 8), 0);
    ck_assert_int_eq(memcmp(data + 8, x, 8), 0);
    ck_assert_int_eq(memcmp(data + 16, n, 12), 0);
    free(b);
}
END_TEST

START_TEST(params_round_trip_bitwise)
{
    for (int k = 0; k < 2; k++) {
        sl_dtype dt = k ? SL_F64 : SL_F32;
        sl_params *a = make_params(dt, 1), *b = make_params(dt, 2);
        sl_meta meta[] = {{"data.position", "12345"},
                          {"rng", "00ff00ff00ff00ff"},
                          {"quote\"back\\slash", "line\nbreak\ttab"},
                          {"utf8 ключ", "значение ü 名前"},
                          {"empty", ""}};
        const char *path = at("p.safetensors");
        ck_assert_msg(sl_save_params(path, a, meta, 5), "%s", sl_error_message());
        ck_assert(!exists(tmp_of(path)));
        ck_assert_msg(sl_load_params(path, b), "%s", sl_error_message());
        size_t n;
        unsigned char *sa = snapshot(a, &n);
        assert_same(b, sa, n);
        free(sa);
        char buf[64];
        for (int i = 0; i < 5; i++) {
            ck_assert_msg(sl_read_meta(path, meta[i].key, buf, sizeof buf), "%s",
                          sl_error_message());
            ck_assert_str_eq(buf, meta[i].value);
        }
        sl_params_free(a);
        sl_params_free(b);
    }
}
END_TEST

START_TEST(tensors_round_trip_bitwise)
{
    sl_rng r = sl_rng_seed(3);
    int32_t ints[6] = {0, -1, INT32_MAX, INT32_MIN, 42, 7};
    sl_tensor *f32 = sl_rand_normal(&r, SL_F32, sl_shape(3, 4), 0, 1);
    sl_tensor *f64 = sl_rand_normal(&r, SL_F64, sl_shape(2, 2, 2), 0, 1);
    sl_tensor *i32 = sl_from_data(SL_I32, sl_shape(2, 3), ints);
    sl_tensor *view = tu_noncontig(f32); /* saved through a strided view */
    sl_named out[] = {{"f32", f32}, {"f64", f64}, {"i32", i32}, {"view", view}};
    const char *path = at("t.safetensors");
    ck_assert_msg(sl_save_tensors(path, out, 4, NULL, 0), "%s", sl_error_message());
    sl_named in[] = {{"i32", sl_zeros(SL_I32, sl_shape(2, 3))},
                     {"view", sl_zeros(SL_F32, sl_shape(3, 4))},
                     {"f64", sl_zeros(SL_F64, sl_shape(2, 2, 2))},
                     {"f32", sl_zeros(SL_F32, sl_shape(3, 4))}};
    ck_assert_msg(sl_load_tensors(path, in, 4), "%s", sl_error_message());
    ck_assert_int_eq(memcmp(in[0].tensor->data, ints, sizeof ints), 0);
    ck_assert_int_eq(memcmp(in[3].tensor->data, f32->data, 12 * 4), 0);
    ck_assert_int_eq(memcmp(in[1].tensor->data, f32->data, 12 * 4), 0);
    ck_assert_int_eq(memcmp(in[2].tensor->data, f64->data, 8 * 8), 0);
    /* one tensor fewer than the file holds */
    ck_assert(!sl_load_tensors(path, in, 3));
    ck_assert_str_eq(strstr(sl_error_message(), ": unexpected"),
                     ": unexpected tensor 'f32' (nothing of that name to load)");
}
END_TEST

START_TEST(metadata_errors)
{
    sl_params *ps = make_params(SL_F32, 1);
    const char *path = at("m.safetensors");
    sl_meta ok[] = {{"key", "a longer value"}};
    ck_assert(sl_save_params(path, ps, ok, 1));
    char buf[8];
    ck_assert(!sl_read_meta(path, "nope", buf, sizeof buf));
    ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
    ck_assert_str_eq(strstr(sl_error_message(), ": no"), ": no metadata key 'nope'");
    ck_assert(!sl_read_meta(path, "key", buf, sizeof buf));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(strstr(sl_error_message(), ": the value"),
                     ": the value of 'key' has 14 bytes, the buffer 8");

    const char *p2 = at("m2.safetensors");
    ck_assert(!sl_save_params(p2, ps, (sl_meta[]){{"optim.step", "3"}}, 1));
    ck_assert_str_eq(sl_error_message(), "sl_save_params: metadata key 'optim.step' is reserved "
                                         "(shortlong uses the prefixes 'optim.' and 'shortlong.')");
    ck_assert(!sl_save_params(p2, ps, (sl_meta[]){{"a", "1"}, {"a", "2"}}, 2));
    ck_assert_str_eq(sl_error_message(), "sl_save_params: metadata key 'a' given twice");
    ck_assert(!sl_save_params(p2, ps, (sl_meta[]){{"a", NULL}}, 1));
    ck_assert_str_eq(sl_error_message(), "sl_save_params: a metadata key or value is NULL");
    ck_assert(!sl_save_params(p2, ps, (sl_meta[]){{"a", "\xff\xfe"}}, 1));
    ck_assert_str_eq(sl_error_message(),
                     "sl_save_params: metadata 'a' is not valid UTF-8 (or out of memory)");
    ck_assert(!exists(p2));
    ck_assert(!sl_save_params(NULL, ps, NULL, 0));
    ck_assert_str_eq(sl_error_message(), "sl_save_params: path or registry is NULL");
    sl_params_free(ps);
}
END_TEST

/* ---------------------------------------------------------------- validation */

START_TEST(each_validation_error_is_reported)
{
    /* The registry: w f32 [2,3] (24 bytes), b f32 [3] (12 bytes). */
    sl_params *ps = sl_params_new(SL_F32);
    sl_params_add(ps, "w", sl_shape(2, 3), true);
    sl_params_add(ps, "b", sl_shape(3), false);
    size_t slen;
    unsigned char *snap = snapshot(ps, &slen);
#define W "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}"
    static const struct {
        const char *header;
        size_t data;
        const char *message;
    } cases[] = {
        {"{" W "," B "}", 36, NULL}, /* a good file, for reference */
        {"{" W "," B "", 36, "the header is not valid JSON: '}' expected near end of file "
                            "(header byte 111, file offset 119)"},
        {"[1,2]", 0, "the header is not a JSON object"},
        {"{\"__metadata__\":[]," W "," B "}", 36, "\"__metadata__\" is not a JSON object"},
        {"{\"__metadata__\":{\"a\":1}," W "," B "}", 36, "metadata value of 'a' is not a string"},
        {"{" W "," B ",\"w\":{}}", 36, "the header is not valid JSON: duplicate object key near "
                                       "'\"w\"' (header byte 115, file offset 123)"},
        {"{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}," B "}", 36,
         "tensor 'w': dtype \"BF16\" is not one shortlong reads (F32, F64, I32)"},
        {"{\"w\":{\"shape\":[2,3],\"data_offsets\":[0,24]}," B "}", 36,
         "tensor 'w': \"dtype\" is missing or not a string"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}," B "}", 36,
         "tensor 'w': shape entry 1 is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3.0],\"data_offsets\":[0,24]}," B "}", 36,
         "tensor 'w': shape entry 1 is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': shape has 9 dims, at most 8 are supported"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': shape is too large"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0]}," B "}", 36,
         "tensor 'w': \"data_offsets\" is not a pair of non-negative integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],\"x\":1}," B "}", 36,
         "tensor 'w': unexpected key 'x'"},
        {"{\"w\":7}", 0, "tensor 'w': the entry is not a JSON object"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}," B "}", 36,
         "tensor 'w': F32 [2,3] needs 24 bytes but data_offsets [0, 20] hold 20"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,0]}," B "}", 36,
         "tensor 'w': data_offsets [24, 0] run backwards"},
        {"{" W "," B "}", 30, "tensor 'b': data_offsets [24, 36] lie outside the data (30 bytes "
                              "after the header; is the file truncated?)"},
        {"{" W ",\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[20,32]}}", 36,
         "tensor 'b' [20, 32) overlaps tensor 'w' [0, 24)"},
        {"{" W ",\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[28,40]}}", 40,
         "bytes [24, 28) of the data belong to no tensor (before tensor 'b')"},
        {"{" W "," B "}", 40, "the tensors end at byte 36 of the data but the file holds 40 "
                              "(trailing bytes)"},
        {"{" W "}", 24, "missing tensor 'b'"},
        {"{" W "," B ",\"c\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[36,40]}}", 40,
         "unexpected tensor 'c' (nothing of that name to load)"},
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]}," B "}", 36,
         "tensor 'w' is F64 in the file, the model expects F32"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," B "}", 36,
         "tensor 'w' has shape [3,2] in the file, the model expects [2,3]"},
    };
#undef W
#undef B
    const char *path = at("bad.safetensors");
    char want[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(path, cases[i].header, cases[i].data);
        sl_error_clear();
        bool ok = sl_load_params(path, ps);
        if (!cases[i].message) {
            ck_assert_msg(ok, "case %zu: %s", i, sl_error_message());
            continue;
        }
        ck_assert_msg(!ok, "case %zu loaded", i);
        ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
        snprintf(want, sizeof want, "sl_load_params: %s: %s", path, cases[i].message);
        ck_assert_str_eq(sl_error_message(), want);
        assert_same(ps, snap, slen);
    }

    /* The header length itself. */
    write_bytes(path, "\x10\0\0", 3);
    ck_assert(!sl_load_params(path, ps));
    snprintf(want, sizeof want, "sl_load_params: %s: the file is 3 bytes, too short for the "
             "8-byte header length", path);
    ck_assert_str_eq(sl_error_message(), want);
    write_bytes(path, "\0\0\0\0\0\x01\0\0{}", 10);
    ck_assert(!sl_load_params(path, ps));
    snprintf(want, sizeof want, "sl_load_params: %s: header length 1099511627776 is absurd (the "
             "limit is 100000000; is this a safetensors file?)", path);
    ck_assert_str_eq(sl_error_message(), want);
    write_bytes(path, "\x40\0\0\0\0\0\0\0{}", 10);
    ck_assert(!sl_load_params(path, ps));
    snprintf(want, sizeof want, "sl_load_params: %s: header length 64 is larger than the rest "
             "of the file (2 bytes; is the file truncated?)", path);
    ck_assert_str_eq(sl_error_message(), want);

    /* Files that cannot be read at all. */
    ck_assert(!sl_load_params(at("absent"), ps));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    snprintf(want, sizeof want, "sl_load_params: cannot open '%s': No such file or directory",
             at("absent"));
    ck_assert_str_eq(sl_error_message(), want);
    ck_assert(!sl_load_params(dir, ps));
    snprintf(want, sizeof want, "sl_load_params: %s: not a regular file", dir);
    ck_assert_str_eq(sl_error_message(), want);
    assert_same(ps, snap, slen);
    free(snap);
    sl_params_free(ps);
}
END_TEST

/* Every truncation of the header and a sample of the data region fails cleanly. */
START_TEST(truncated_files_fail_cleanly)
{
    sl_params *good = make_params(SL_F32, 1), *ps = make_params(SL_F32, 2);
    const char *path = at("full.safetensors"), *cut = at("cut.safetensors");
    ck_assert(sl_save_params(path, good, (sl_meta[]){{"step", "10"}}, 1));
    size_t len, slen;
    unsigned char *b = read_bytes(path, &len);
    unsigned char *snap = snapshot(ps, &slen);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | b[i];
    int tried = 0;
    for (size_t n = 0; n < len; n += n < 8 + hn ? 1 : 5) {
        write_bytes(cut, b, n);
        sl_error_clear();
        ck_assert_msg(!sl_load_params(cut, ps), "a file cut at %zu of %zu bytes loaded", n, len);
        assert_names_file("sl_load_params", cut);
        assert_same(ps, snap, slen);
        tried++;
    }
    ck_assert_int_gt(tried, (int)hn);
    free(snap);
    free(b);
    sl_params_free(good);
    sl_params_free(ps);
}
END_TEST

/* Flipped bits in the length and the header: an error naming the file with the parameters
 * untouched, or (a flip inside a metadata value, or one JSON whitespace for another) a load
 * that gives exactly the saved values. */
static void flip_header_bytes(bool training)
{
    sl_params *good = make_params(SL_F32, 1), *ps = make_params(SL_F32, 2);
    sl_optim *og = sl_adamw_new(good, NULL), *op = sl_adamw_new(ps, NULL);
    const char *path = at("good.safetensors"), *bad = at("flipped.safetensors");
    const char *fn = training ? "sl_load_training" : "sl_load_params";
    sl_meta meta[] = {{"data.position", "777"}};
    ck_assert(training ? sl_save_training(path, good, og, meta, 1)
                       : sl_save_params(path, good, meta, 1));
    size_t len, slen, glen;
    unsigned char *b = read_bytes(path, &len);
    unsigned char *snap = snapshot(ps, &slen), *gsnap = snapshot(good, &glen);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | b[i];
    static const unsigned char masks[] = {0x01, 0x02, 0x08, 0x20, 0x80};
    int failed = 0, loaded = 0;
    write_bytes(bad, b, len);
    FILE *f = fopen(bad, "r+b"); /* flipped in place, one byte at a time */
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < 8 + hn; i++)
        for (size_t k = 0; k < sizeof masks; k++) {
            fseek(f, (long)i, SEEK_SET);
            fputc(b[i] ^ masks[k], f);
            fflush(f);
            sl_error_clear();
            bool ok = training ? sl_load_training(bad, ps, op) : sl_load_params(bad, ps);
            if (ok) {
                assert_same(ps, gsnap, glen); /* what was saved */
                loaded++;
                /* back to the original values for the next round */
                size_t off = 0;
                for (int p = 0; p < sl_params_count(ps); p++) {
                    sl_tensor *t = sl_params_at(ps, p)->value;
                    size_t nb = (size_t)sl_numel(t) * 4;
                    memcpy(t->data, snap + off, nb);
                    off += nb;
                }
            } else {
                assert_names_file(fn, bad);
                assert_same(ps, snap, slen);
                failed++;
            }
            fseek(f, (long)i, SEEK_SET);
            fputc(b[i], f);
        }
    fclose(f);
    /* Most flips break the file; the ones that load are harmless (metadata text). */
    ck_assert_msg(failed > 9 * loaded, "%d flips failed, %d loaded", failed, loaded);
    free(b);
    free(snap);
    free(gsnap);
    sl_optim_free(og);
    sl_optim_free(op);
    sl_params_free(good);
    sl_params_free(ps);
}

START_TEST(flipped_bytes_fail_cleanly) { flip_header_bytes(false); }
END_TEST

START_TEST(flipped_bytes_fail_cleanly_training) { flip_header_bytes(true); }
END_TEST

/* ---------------------------------------------------------------- atomic writes */

START_TEST(failed_save_keeps_the_old_file)
{
    sl_params *v1 = make_params(SL_F32, 1), *v2 = make_params(SL_F32, 2);
    sl_params *probe = make_params(SL_F32, 3);
    const char *path = at("ckpt.safetensors");
    ck_assert(sl_save_params(path, v1, NULL, 0));
    size_t n1;
    unsigned char *s1 = snapshot(v1, &n1);

    /* A write that fails half way: the file size limit stops it after 64 bytes. */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    bool ok = sl_save_params(path, v2, NULL, 0);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    ck_assert(!ok);
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    char want[512];
    snprintf(want, sizeof want, "sl_save_params: cannot write '%s': File too large",
             tmp_of(path));
    ck_assert_str_eq(sl_error_message(), want);
    ck_assert(!exists(tmp_of(path)));
    ck_assert(sl_load_params(path, probe));
    assert_same(probe, s1, n1);

    /* The target is a directory: the rename fails, the temp file goes. */
    const char *sub = at("subdir");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert(!sl_save_params(sub, v2, NULL, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "cannot rename"));
    ck_assert(!exists(tmp_of(sub)));

    /* A directory that does not exist. */
    const char *nodir = at("nodir/x.safetensors");
    ck_assert(!sl_save_params(nodir, v2, NULL, 0));
    snprintf(want, sizeof want, "sl_save_params: cannot create '%s': No such file or directory",
             tmp_of(nodir));
    ck_assert_str_eq(sl_error_message(), want);

    /* An unwritable directory (root writes anyway, so only as another user). */
    if (geteuid() != 0) {
        ck_assert_int_eq(chmod(dir, 0500), 0);
        ck_assert(!sl_save_params(path, v2, NULL, 0));
        ck_assert_int_eq(sl_error(), SL_ERR_IO);
        chmod(dir, 0700);
        ck_assert(sl_load_params(path, probe));
        assert_same(probe, s1, n1);
    }

    /* And a save that works replaces the file. */
    ck_assert(sl_save_params(path, v2, NULL, 0));
    ck_assert(!exists(tmp_of(path)));
    size_t n2;
    unsigned char *s2 = snapshot(v2, &n2);
    ck_assert(sl_load_params(path, probe));
    assert_same(probe, s2, n2);
    free(s1);
    free(s2);
    sl_params_free(v1);
    sl_params_free(v2);
    sl_params_free(probe);
}
END_TEST

/* ---------------------------------------------------------------- training checkpoints */

/* A two-layer regression on a fixed data set; each step draws its batch with the rng and
 * advances a data position, so resuming has to restore both. */
typedef struct {
    sl_params *ps;
    sl_linear *l1, *l2;
    sl_optim *opt;
    float x[32][8], y[32][4];
    sl_rng rng;
    int64_t pos;
} trainer;

static void trainer_init(trainer *t, uint64_t init_seed, bool sgd)
{
    sl_rng r = sl_rng_seed(init_seed);
    t->ps = sl_params_new(SL_F32);
    t->l1 = sl_linear_new(t->ps, "l1", 8, 16, true, &r);
    t->l2 = sl_linear_new(t->ps, "l2", 16, 4, true, &r);
    ck_assert_ptr_nonnull(t->l2);
    t->opt = sgd ? sl_sgd_new(t->ps, 0.9, 0.01)
                 : sl_adamw_new(t->ps, &(sl_adamw_config){.weight_decay = 0.1});
    sl_rng d = sl_rng_seed(100); /* the data set is the same for every trainer */
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < 8; j++) t->x[i][j] = (float)sl_rng_normal(&d);
        for (int j = 0; j < 4; j++) t->y[i][j] = (float)sl_rng_normal(&d);
    }
    t->rng = sl_rng_seed(5);
    t->pos = 0;
}

static void trainer_free(trainer *t)
{
    sl_optim_free(t->opt);
    sl_params_free(t->ps);
}

static void train(trainer *t, int steps)
{
    for (int s = 0; s < steps; s++) {
        float bx[4][8], by[4][4];
        for (int i = 0; i < 4; i++) {
            int64_t row = (t->pos * 4 + (int64_t)sl_rng_below(&t->rng, 8)) % 32;
            memcpy(bx[i], t->x[row], sizeof bx[i]);
            memcpy(by[i], t->y[row], sizeof by[i]);
        }
        t->pos++;
        sl_params_zero_grad(t->ps);
        sl_tensor *x = sl_from_data(SL_F32, sl_shape(4, 8), bx);
        sl_tensor *y = sl_from_data(SL_F32, sl_shape(4, 4), by);
        sl_tensor *out = sl_linear_forward(t->l2, sl_tanh(sl_linear_forward(t->l1, x)));
        sl_tensor *d = sl_sub(out, y);
        ck_assert_msg(sl_backward(sl_mean_all(sl_mul(d, d))), "%s", sl_error_message());
        double lr = sl_lr_warmup_cosine(sl_optim_steps(t->opt), 2, 10, 0.05, 0.005);
        ck_assert(sl_optim_step(t->opt, lr));
    }
}

static void save_trainer(const trainer *t, const char *path)
{
    char pos[32], rng[80];
    snprintf(pos, sizeof pos, "%lld", (long long)t->pos);
    snprintf(rng, sizeof rng, "%016llx%016llx%016llx%016llx", (unsigned long long)t->rng.s[0],
             (unsigned long long)t->rng.s[1], (unsigned long long)t->rng.s[2],
             (unsigned long long)t->rng.s[3]);
    sl_meta meta[] = {{"data.position", pos}, {"rng", rng}};
    ck_assert_msg(sl_save_training(path, t->ps, t->opt, meta, 2), "%s", sl_error_message());
}

/* The data position and the rng from the caller's metadata. */
static void load_position(trainer *t, const char *path)
{
    char buf[80];
    ck_assert(sl_read_meta(path, "data.position", buf, sizeof buf));
    t->pos = strtoll(buf, NULL, 10);
    ck_assert(sl_read_meta(path, "rng", buf, sizeof buf));
    for (int w = 0; w < 4; w++) {
        char word[17];
        memcpy(word, buf + 16 * w, 16);
        word[16] = '\0';
        t->rng.s[w] = strtoull(word, NULL, 16);
    }
}

static void load_trainer(trainer *t, const char *path)
{
    ck_assert_msg(sl_load_training(path, t->ps, t->opt), "%s", sl_error_message());
    load_position(t, path);
}

START_TEST(training_resumes_bitwise)
{
    for (int k = 0; k < 2; k++) {
        const char *path = at("train.safetensors");
        trainer a, b;
        trainer_init(&a, 1, k);
        train(&a, 3);
        save_trainer(&a, path);
        train(&a, 3);
        /* A fresh trainer with another initialisation and another rng state. */
        trainer_init(&b, 2, k);
        b.rng = sl_rng_seed(99);
        load_trainer(&b, path);
        ck_assert_int_eq(sl_optim_steps(b.opt), 3);
        ck_assert_int_eq(b.pos, 3);
        train(&b, 3);
        ck_assert_int_eq(sl_optim_steps(b.opt), 6);
        size_t na, nb;
        unsigned char *sa = snapshot(a.ps, &na), *sb = snapshot(b.ps, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(sa, sb, na) == 0, "resumed training differs (%s)",
                      k ? "sgd" : "adamw");
        /* and the optimizer state matters: without it the run differs */
        trainer c;
        trainer_init(&c, 2, k);
        ck_assert(sl_load_params(path, c.ps)); /* weights only */
        load_position(&c, path);
        train(&c, 3);
        unsigned char *sc = snapshot(c.ps, &nb);
        ck_assert_msg(memcmp(sa, sc, na) != 0, "optimizer state made no difference");
        free(sa);
        free(sb);
        free(sc);
        trainer_free(&a);
        trainer_free(&b);
        trainer_free(&c);
    }
}
END_TEST

START_TEST(training_checkpoint_errors)
{
    trainer a;
    trainer_init(&a, 1, false);
    train(&a, 1);
    const char *path = at("t.safetensors"), *plain = at("plain.safetensors");
    save_trainer(&a, path);
    char want[512];
    /* another optimizer type, other settings, a file without optimizer state */
    sl_optim *sgd = sl_sgd_new(a.ps, 0.9, 0);
    ck_assert(!sl_load_training(path, a.ps, sgd));
    snprintf(want, sizeof want, "sl_load_training: %s: the optimizer in the file is 'adamw', "
             "this one is 'sgd'", path);
    ck_assert_str_eq(sl_error_message(), want);
    sl_optim *other = sl_adamw_new(a.ps, &(sl_adamw_config){.beta2 = 0.999, .weight_decay = 0.1});
    ck_assert(!sl_load_training(path, a.ps, other));
    snprintf(want, sizeof want, "sl_load_training: %s: optim.beta2 is 0.94999999999999996 in the "
             "file but 0.999 in this optimizer", path);
    ck_assert_str_eq(sl_error_message(), want);
    ck_assert(sl_save_params(plain, a.ps, NULL, 0));
    ck_assert(!sl_load_training(plain, a.ps, a.opt));
    snprintf(want, sizeof want, "sl_load_training: %s: no optimizer state (metadata 'optim.type' "
             "is absent): not a training checkpoint", plain);
    ck_assert_str_eq(sl_error_message(), want);
    /* weights load from a training checkpoint */
    ck_assert_msg(sl_load_params(path, a.ps), "%s", sl_error_message());
    /* an optimizer of another registry; a NULL optimizer */
    trainer b;
    trainer_init(&b, 1, false);
    ck_assert(!sl_load_training(path, a.ps, b.opt));
    ck_assert_str_eq(sl_error_message(),
                     "sl_load_training: the optimizer was made for another registry");
    ck_assert(!sl_save_training(path, a.ps, NULL, NULL, 0));
    ck_assert_str_eq(sl_error_message(), "sl_save_training: optimizer is NULL");
    /* a parameter whose name would clash with the state's */
    sl_params *ps = sl_params_new(SL_F32);
    sl_params_add(ps, "optim.m.x", sl_shape(2), true);
    sl_optim *o = sl_adamw_new(ps, NULL);
    ck_assert(!sl_save_training(at("clash"), ps, o, NULL, 0));
    ck_assert_str_eq(sl_error_message(), "sl_save_training: parameter name 'optim.m.x' clashes "
                                         "with the optimizer's state names");
    sl_optim_free(o);
    sl_params_free(ps);
    sl_optim_free(sgd);
    sl_optim_free(other);
    trainer_free(&a);
    trainer_free(&b);
}
END_TEST

/* ---------------------------------------------------------------- GPT checkpoints */

static const sl_gpt_config tiny_gpt = {.vocab_size = 16, .context = 8, .dim = 8, .n_layers = 2,
                                       .n_heads = 2, .pos = SL_POS_ALIBI, .fused_qkv = true,
                                       .dropout = 0.1, .seed = 7};

static void assert_same_config(const sl_gpt_config *a, const sl_gpt_config *b)
{
    ck_assert_int_eq(a->vocab_size, b->vocab_size);
    ck_assert_int_eq(a->context, b->context);
    ck_assert_int_eq(a->dim, b->dim);
    ck_assert_int_eq(a->n_layers, b->n_layers);
    ck_assert_int_eq(a->n_heads, b->n_heads);
    ck_assert_int_eq(a->n_kv_heads, b->n_kv_heads);
    ck_assert_int_eq(a->mlp_ratio, b->mlp_ratio);
    ck_assert_int_eq(a->pos, b->pos);
    ck_assert_int_eq(a->tie_embeddings, b->tie_embeddings);
    ck_assert_int_eq(a->fused_qkv, b->fused_qkv);
    ck_assert_double_eq(a->dropout, b->dropout);
    ck_assert_uint_eq(a->seed, b->seed);
}

static sl_tensor *logits_of(sl_gpt *m)
{
    int32_t idx[10] = {1, 5, 3, 0, 15, 2, 2, 9, 4, 7};
    bool prev = sl_set_grad_enabled(false);
    sl_tensor *y = sl_gpt_forward(m, sl_from_data(SL_I32, sl_shape(1, 10), idx), NULL);
    sl_set_grad_enabled(prev);
    ck_assert_msg(y != NULL, "%s", sl_error_message());
    return y;
}

START_TEST(gpt_round_trip)
{
    sl_gpt_config variants[4];
    for (int v = 0; v < 4; v++) variants[v] = tiny_gpt;
    variants[1].tie_embeddings = true;
    variants[2].fused_qkv = false;
    variants[2].n_kv_heads = 1;
    variants[3].pos = SL_POS_NONE;
    variants[3].seed = UINT64_MAX;
    variants[3].dropout = 0;
    for (int v = 0; v < 4; v++) {
        sl_gpt *m = sl_gpt_new(&variants[v], SL_F32);
        ck_assert_msg(m != NULL, "%s", sl_error_message());
        sl_rng_next(&m->rng); /* a dropout stream that has moved on */
        const char *path = at("gpt.safetensors");
        ck_assert_msg(sl_gpt_save(path, m, NULL, (sl_meta[]){{"note", "hi"}}, 1), "%s",
                      sl_error_message());
        sl_gpt_config cfg;
        ck_assert_msg(sl_gpt_read_config(path, &cfg), "%s", sl_error_message());
        assert_same_config(&cfg, &m->cfg);
        sl_gpt *l = sl_gpt_load(path, SL_F32);
        ck_assert_msg(l != NULL, "%s", sl_error_message());
        assert_same_config(&l->cfg, &m->cfg);
        ck_assert_int_eq(memcmp(&l->rng, &m->rng, sizeof m->rng), 0);
        size_t na, nb;
        unsigned char *sa = snapshot(m->params, &na);
        assert_same(l->params, sa, na);
        ck_assert_double_eq(tu_max_abs_diff(logits_of(l), logits_of(m)), 0);
        char buf[8];
        ck_assert(sl_read_meta(path, "note", buf, sizeof buf));
        ck_assert_str_eq(buf, "hi");
        ck_assert(sl_read_meta(path, "shortlong.pos", buf, sizeof buf));
        ck_assert_str_eq(buf, sl_pos_name(m->cfg.pos));
        /* parameters in another dtype than the file's */
        ck_assert_ptr_null(sl_gpt_load(path, SL_F64));
        ck_assert_str_eq(strstr(sl_error_message(), ": tensor"),
                         ": tensor 'tok.weight' is F32 in the file, the model expects F64");
        free(sa);
        (void)nb;
        sl_gpt_free(l);
        sl_gpt_free(m);
    }
}
END_TEST

START_TEST(gpt_training_checkpoint)
{
    sl_gpt *m = sl_gpt_new(&tiny_gpt, SL_F32);
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){.weight_decay = 0.1});
    int32_t idx[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    m->train = true;
    sl_tensor *loss = sl_gpt_loss(m, sl_from_data(SL_I32, sl_shape(1, 8), idx),
                                  sl_from_data(SL_I32, sl_shape(1, 8), tgt));
    ck_assert_msg(loss && sl_backward(loss), "%s", sl_error_message());
    ck_assert(sl_optim_step(opt, 1e-2));
    const char *path = at("gpt_train.safetensors");
    ck_assert_msg(sl_gpt_save(path, m, opt, NULL, 0), "%s", sl_error_message());
    sl_gpt *l = sl_gpt_load(path, SL_F32); /* skips the optimizer state */
    ck_assert_msg(l != NULL, "%s", sl_error_message());
    sl_optim *lopt = sl_adamw_new(l->params, &(sl_adamw_config){.weight_decay = 0.1});
    ck_assert_msg(sl_load_training(path, l->params, lopt), "%s", sl_error_message());
    ck_assert_int_eq(sl_optim_steps(lopt), 1);
    size_t n;
    unsigned char *s = snapshot(m->params, &n);
    assert_same(l->params, s, n);
    free(s);
    sl_optim_free(lopt);
    sl_optim_free(opt);
    sl_gpt_free(l);
    sl_gpt_free(m);
}
END_TEST

/* Rewrites path with `from` replaced by `to` (same length, so the offsets stay right). */
static void edit_file(const char *path, const char *out, const char *from, const char *to)
{
    ck_assert_uint_eq(strlen(from), strlen(to));
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    b[len] = 0;
    char *hit = NULL;
    for (size_t i = 8; i + strlen(from) <= len && !hit; i++)
        if (!memcmp(b + i, from, strlen(from))) hit = (char *)b + i;
    ck_assert_msg(hit != NULL, "'%s' not in the header", from);
    memcpy(hit, to, strlen(to));
    write_bytes(out, b, len);
    free(b);
}

START_TEST(gpt_config_errors)
{
    sl_gpt *m = sl_gpt_new(&tiny_gpt, SL_F32);
    const char *path = at("gpt.safetensors"), *bad = at("bad.safetensors");
    ck_assert(sl_gpt_save(path, m, NULL, NULL, 0));
    static const struct {
        const char *from, *to, *message;
    } cases[] = {
        {"\"shortlong.dim\":\"8\"", "\"shortlong.dix\":\"8\"",
         "missing config key 'shortlong.dim'"},
        {"\"shortlong.n_heads\":\"2\"", "\"shortlong.n_heads\":\"x\"",
         "config key 'shortlong.n_heads' has the value 'x', which is not a valid integer"},
        {"\"shortlong.pos\":\"alibi\"", "\"shortlong.pos\":\"alibx\"",
         "config key 'shortlong.pos' has the value 'alibx', which is not a valid positional "
         "method"},
        {"\"shortlong.fused_qkv\":\"true\"", "\"shortlong.fused_qkv\":\"tru3\"",
         "config key 'shortlong.fused_qkv' has the value 'tru3', which is not a valid boolean "
         "(true or false)"},
        {"\"shortlong.dropout\":\"0.1", "\"shortlong.dropout\":\"0x1",
         "config key 'shortlong.dropout' has the value '0x10000000000000001', which is not a "
         "valid number"},
        {"\"shortlong.model\":\"gpt\"", "\"shortlong.model\":\"gpu\"",
         "not a shortlong GPT checkpoint (metadata 'shortlong.model' is 'gpu', expected 'gpt')"},
        {"\"shortlong.rng\":\"", "\"shortlong.rnh\":\"",
         "config key 'shortlong.rng' is absent, expected 64 hex digits"},
        {"\"shortlong.n_heads\":\"2\"", "\"shortlong.n_heads\":\"3\"",
         "its config does not make a model: sl_gpt_new: dim 8 is not a multiple of n_heads 3"},
        {"\"shortlong.vocab_size\":\"16\"", "\"shortlong.vocab_size\":\"17\"",
         "tensor 'tok.weight' has shape [16,8] in the file, the model expects [17,8]"},
        {"\"shortlong.n_layers\":\"2\"", "\"shortlong.n_layers\":\"1\"",
         "unexpected tensor 'blocks.1."},
    };
    char want[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        edit_file(path, bad, cases[i].from, cases[i].to);
        sl_error_clear();
        ck_assert_ptr_null(sl_gpt_load(bad, SL_F32));
        ck_assert_int_eq(sl_error(), SL_ERR_FORMAT);
        snprintf(want, sizeof want, "sl_gpt_load: %s: %s", bad, cases[i].message);
        ck_assert_msg(!strncmp(sl_error_message(), want, strlen(want)), "case %zu: '%s'", i,
                      sl_error_message());
    }
    /* A file with no config at all. */
    ck_assert(sl_save_params(bad, m->params, NULL, 0));
    ck_assert_ptr_null(sl_gpt_load(bad, SL_F32));
    snprintf(want, sizeof want, "sl_gpt_load: %s: not a shortlong GPT checkpoint (metadata "
             "'shortlong.model' is absent, expected 'gpt')", bad);
    ck_assert_str_eq(sl_error_message(), want);
    sl_gpt_config cfg;
    ck_assert(!sl_gpt_read_config(bad, &cfg));
    ck_assert_ptr_null(sl_gpt_load(at("absent"), SL_F32));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    /* the caller may not write shortlong's keys */
    ck_assert(!sl_gpt_save(bad, m, NULL, (sl_meta[]){{"shortlong.dim", "9"}}, 1));
    ck_assert_str_eq(sl_error_message(), "sl_gpt_save: metadata key 'shortlong.dim' is reserved "
                                         "(shortlong uses the prefixes 'optim.' and 'shortlong.')");
    sl_gpt_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, header_layout_is_safetensors);
    tcase_add_test(tc, params_round_trip_bitwise);
    tcase_add_test(tc, tensors_round_trip_bitwise);
    tcase_add_test(tc, metadata_errors);
    tcase_add_test(tc, each_validation_error_is_reported);
    tcase_add_test(tc, truncated_files_fail_cleanly);
    tcase_add_test(tc, flipped_bytes_fail_cleanly);
    tcase_add_test(tc, flipped_bytes_fail_cleanly_training);
    tcase_add_test(tc, failed_save_keeps_the_old_file);
    tcase_add_test(tc, training_resumes_bitwise);
    tcase_add_test(tc, training_checkpoint_errors);
    tcase_add_test(tc, gpt_round_trip);
    tcase_add_test(tc, gpt_training_checkpoint);
    tcase_add_test(tc, gpt_config_errors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
