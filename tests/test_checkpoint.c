/* Checkpoints, the format: the safetensors layout byte for byte, bitwise round trips (f32,
 * f64, i32, metadata), every validation error with its message, truncations and flipped bytes
 * (never a crash, always an error, parameters unchanged), and atomic writes. */
#include "ckpt_testutil.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>

static void write_raw(const char *path, const char *header, size_t data_len)
{
    size_t n = strlen(header);
    unsigned char *b = calloc(1, 8 + n + data_len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    write_bytes(path, b, 8 + n + data_len);
    free(b);
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
        ck_assert(!temp_left(path));
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
         "tensor 'w' is F64 in the file, the model expects F32 (sl_load_opts.convert_dtype "
         "converts it)"},
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
    ck_assert_msg(is_temp_msg(sl_error_message(), "sl_save_params: cannot write '", path,
                              "': File too large"),
                  "%s", sl_error_message());
    ck_assert(!temp_left(path));
    ck_assert(sl_load_params(path, probe));
    assert_same(probe, s1, n1);

    /* The target is a directory: the rename fails, the temp file goes. */
    const char *sub = at("subdir");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert(!sl_save_params(sub, v2, NULL, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_IO);
    ck_assert_ptr_nonnull(strstr(sl_error_message(), "cannot rename"));
    ck_assert(!temp_left(sub));

    /* A directory that does not exist. */
    const char *nodir = at("nodir/x.safetensors");
    ck_assert(!sl_save_params(nodir, v2, NULL, 0));
    ck_assert_msg(is_temp_msg(sl_error_message(), "sl_save_params: cannot create '", nodir,
                              "': No such file or directory"),
                  "%s", sl_error_message());

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
    ck_assert(!temp_left(path));
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

int main(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tu_fixture(tc, setup, teardown);
    tu_add_test(s, tc, header_layout_is_safetensors);
    tu_add_test(s, tc, params_round_trip_bitwise);
    tu_add_test(s, tc, tensors_round_trip_bitwise);
    tu_add_test(s, tc, metadata_errors);
    tu_add_test(s, tc, each_validation_error_is_reported);
    tu_add_test(s, tc, truncated_files_fail_cleanly);
    tu_add_test(s, tc, flipped_bytes_fail_cleanly);
    tu_add_test(s, tc, flipped_bytes_fail_cleanly_training);
    tu_add_test(s, tc, failed_save_keeps_the_old_file);
    return tu_run(s);
}
