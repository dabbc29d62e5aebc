/* tests/cli/ckpt_fixture.c — makes the checkpoints the CLI tests and the fuzz corpus need,
 * including hostile ones:
 *
 *   ckpt_fixture gpt OUT [key=value ...]      a GPT (sl_gpt_new, then sl_gpt_save) with the
 *                                             config's fields set: vocab, context, dim, layers,
 *                                             heads, pos, seed (defaults: a tiny ALiBi model);
 *                                             dtype=f64 for f64 parameters, train=1 for a
 *                                             training checkpoint (AdamW, default settings,
 *                                             one step taken)
 *   ckpt_fixture set-meta IN OUT KEY VALUE    IN with a metadata value set (any length: the
 *                                             header is rewritten, the data kept)
 *   ckpt_fixture add-sparse IN OUT NAME BYTES IN with one more F32 tensor NAME of BYTES bytes
 *                                             at the end of the data, as a hole in a sparse
 *                                             file (no disk used)
 *   ckpt_fixture rss FILE CMD [ARGS ...]      runs CMD, writes its peak resident memory in KiB
 *                                             (wait4's ru_maxrss) to FILE and exits with its
 *                                             status
 *   ckpt_fixture compare A B TOL [TOL_KB]     the GPTs in checkpoints A and B have the same
 *                                             parameters (names, shapes) and every value of A
 *                                             is within TOL of B's (absolute), the key biases
 *                                             within TOL_KB (default TOL: see compare());
 *                                             prints the largest differences and where they
 *                                             are; status 1 if one is beyond its tolerance
 *
 * Exit status 0, or 1 with a message. */
#include <shortlong/shortlong.h>

#include <jansson.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int die(const char *what)
{
    fprintf(stderr, "ckpt_fixture: %s%s%s\n", what, sl_error() ? ": " : "",
            sl_error() ? sl_error_message() : "");
    return 1;
}

static int make_gpt(const char *out, int argc, char **argv)
{
    sl_gpt_config c = {.vocab_size = 16,
                       .context = 8,
                       .dim = 8,
                       .n_layers = 1,
                       .n_heads = 2,
                       .pos = SL_POS_ALIBI,
                       .tie_embeddings = true,
                       .fused_qkv = true,
                       .seed = 1};
    sl_dtype dtype = SL_F32;
    bool train = false;
    for (int i = 0; i < argc; i++) {
        char key[32];
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq - argv[i] >= (long)sizeof key) return die("arguments are key=value");
        memcpy(key, argv[i], (size_t)(eq - argv[i]));
        key[eq - argv[i]] = '\0';
        const char *v = eq + 1;
        if (!strcmp(key, "vocab")) c.vocab_size = atoll(v);
        else if (!strcmp(key, "context")) c.context = atoll(v);
        else if (!strcmp(key, "dim")) c.dim = atoll(v);
        else if (!strcmp(key, "layers")) c.n_layers = atoi(v);
        else if (!strcmp(key, "heads")) c.n_heads = atoi(v);
        else if (!strcmp(key, "seed")) c.seed = strtoull(v, NULL, 10);
        else if (!strcmp(key, "dtype")) dtype = !strcmp(v, "f64") ? SL_F64 : SL_F32;
        else if (!strcmp(key, "train")) train = atoi(v) != 0;
        else if (!strcmp(key, "pos")) {
            if (!sl_pos_parse(v, &c.pos)) return die("pos");
        } else {
            return die("unknown key");
        }
    }
    sl_gpt *m = sl_gpt_new(&c, dtype);
    sl_optim *opt = m && train ? sl_adamw_new(m->params, NULL) : NULL;
    if (opt) { /* one step on a short sequence, so the state is not all zeros */
        int32_t ids[2] = {0, (int32_t)(c.vocab_size - 1)};
        sl_tensor *idx = sl_from_data(SL_I32, sl_shape(1, 2), ids);
        sl_tensor *loss = sl_gpt_loss(m, idx, idx);
        if (!loss || !sl_backward(loss) || !sl_optim_step(opt, 1e-3)) return die("one step");
    }
    if (!m || (train && !opt) || !sl_gpt_save(out, m, opt, NULL, 0))
        return die("cannot make the model");
    sl_optim_free(opt);
    sl_gpt_free(m);
    return 0;
}

typedef struct {
    unsigned char *bytes;
    size_t len;
    uint64_t hlen;
    json_t *header;
} file;

static bool read_file(const char *path, file *f)
{
    FILE *in = fopen(path, "rb");
    if (!in) return false;
    fseek(in, 0, SEEK_END);
    f->len = (size_t)ftell(in);
    fseek(in, 0, SEEK_SET);
    f->bytes = malloc(f->len + 1);
    bool ok = f->bytes && fread(f->bytes, 1, f->len, in) == f->len && f->len >= 8;
    fclose(in);
    if (!ok) return false;
    f->hlen = 0;
    for (int i = 7; i >= 0; i--) f->hlen = f->hlen << 8 | f->bytes[i];
    if (f->hlen > f->len - 8) return false;
    f->header = json_loadb((const char *)f->bytes + 8, (size_t)f->hlen, 0, NULL);
    return f->header != NULL;
}

/* The header (padded to 8) and the data after it (data_len bytes of it written). */
static bool write_file(const char *path, const file *f, size_t data_len)
{
    char *h = json_dumps(f->header, JSON_COMPACT);
    if (!h) return false;
    size_t n = strlen(h), padded = (n + 7) / 8 * 8;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    FILE *out = fopen(path, "wb");
    bool ok = out && fwrite(len, 1, 8, out) == 8 && fwrite(h, 1, n, out) == n;
    for (size_t i = n; ok && i < padded; i++) ok = fputc(' ', out) != EOF;
    ok = ok && fwrite(f->bytes + 8 + f->hlen, 1, data_len, out) == data_len;
    if (out) ok = fclose(out) == 0 && ok;
    free(h);
    return ok;
}

static int peak_rss(const char *report, char **cmd)
{
    pid_t pid = fork();
    if (pid < 0) return die("cannot fork");
    if (pid == 0) {
        execvp(cmd[0], cmd);
        _exit(127);
    }
    int status;
    struct rusage u;
    if (wait4(pid, &status, 0, &u) != pid) return die("cannot wait");
    FILE *f = fopen(report, "w");
    if (!f || fprintf(f, "%ld\n", u.ru_maxrss) < 0 || fclose(f) != 0) return die("cannot report");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Whether element j of parameter p is a key bias: the exact gradient of a bias added to every
 * key of a head is zero (the softmax ignores a constant added to all of a query's scores), so
 * what the backward computes for it is rounding noise, which AdamW, dividing by the gradient's
 * own root mean square, turns into steps of up to about lr: two runs whose sums round
 * differently end with key biases apart by up to about lr, not by rounding. */
static bool is_key_bias(const sl_gpt *m, const sl_param *p, int64_t j)
{
    const sl_gpt_config *c = &m->cfg;
    size_t n = strlen(p->name);
    int64_t kv = (c->n_kv_heads ? c->n_kv_heads : c->n_heads) * (c->dim / c->n_heads);
    if (n >= 11 && !strcmp(p->name + n - 11, "attn.k.bias")) return true;
    return n >= 13 && !strcmp(p->name + n - 13, "attn.qkv.bias") && j >= c->dim && j < c->dim + kv;
}

typedef struct {
    double d, a, b;
    const char *name;
    int64_t at;
} worst;

static int compare(const char *a_path, const char *b_path, double tol, double tol_kb)
{
    sl_gpt *a = sl_gpt_load(a_path, SL_F32), *b = a ? sl_gpt_load(b_path, SL_F32) : NULL;
    if (!a || !b) return die("cannot load the checkpoints");
    int n = sl_params_count(a->params);
    if (n != sl_params_count(b->params)) return die("the models have different parameters");
    worst w[2] = {{0, 0, 0, "-", 0}, {0, 0, 0, "-", 0}}; /* the others, the key biases */
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const sl_param *pa = sl_params_at(a->params, i), *pb = sl_params_at(b->params, i);
        int64_t k = sl_numel(pa->value);
        if (strcmp(pa->name, pb->name) || k != sl_numel(pb->value))
            return die("the models have different parameters");
        const float *x = sl_ptr(pa->value), *y = sl_ptr(pb->value);
        for (int64_t j = 0; j < k; j++) {
            double d = fabs((double)x[j] - (double)y[j]);
            worst *v = &w[is_key_bias(a, pa, j)];
            if (!(d <= v->d)) /* NaN counts as the worst */
                *v = (worst){isnan(d) ? INFINITY : d, x[j], y[j], pa->name, j};
        }
        total += k;
    }
    bool ok = w[0].d <= tol && w[1].d <= tol_kb;
    for (int i = 0; i < 2; i++)
        printf("ckpt_fixture compare: %s max |a - b| = %.3g at %s[%lld] (%.9g vs %.9g), "
               "tolerance %.3g%s\n",
               i ? "key biases:" : "parameters:", w[i].d, w[i].name, (long long)w[i].at, w[i].a,
               w[i].b, i ? tol_kb : tol, w[i].d <= (i ? tol_kb : tol) ? "" : ": EXCEEDED");
    printf("ckpt_fixture compare: %lld values, %s\n", (long long)total,
           ok ? "within the tolerances" : "NOT within the tolerances");
    sl_gpt_free(a);
    sl_gpt_free(b);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "compare"))
        return compare(argv[2], argv[3], atof(argv[4]), atof(argv[argc == 6 ? 5 : 4]));
    if (argc >= 4 && !strcmp(argv[1], "rss")) return peak_rss(argv[2], argv + 3);
    if (argc >= 3 && !strcmp(argv[1], "gpt")) return make_gpt(argv[2], argc - 3, argv + 3);
    file f = {0};
    if (argc == 6 && !strcmp(argv[1], "set-meta")) {
        if (!read_file(argv[2], &f)) return die("cannot read the input");
        json_t *meta = json_object_get(f.header, "__metadata__");
        if (!meta || json_object_set_new(meta, argv[4], json_string(argv[5])))
            return die("no metadata");
        return write_file(argv[3], &f, f.len - 8 - f.hlen) ? 0 : die("cannot write");
    }
    if (argc == 6 && !strcmp(argv[1], "add-sparse")) {
        if (!read_file(argv[2], &f)) return die("cannot read the input");
        uint64_t data = f.len - 8 - f.hlen, bytes = strtoull(argv[5], NULL, 10) / 4 * 4;
        json_t *e =
            json_pack("{s:s, s:[I], s:[I, I]}", "dtype", "F32", "shape", (json_int_t)(bytes / 4),
                      "data_offsets", (json_int_t)data, (json_int_t)(data + bytes));
        if (!e || json_object_set_new(f.header, argv[4], e)) return die("cannot add the entry");
        if (!write_file(argv[3], &f, data)) return die("cannot write");
        /* the header grew: the data now ends at the new header's end plus data bytes */
        FILE *out = fopen(argv[3], "rb");
        if (!out) return die("cannot reopen");
        fseek(out, 0, SEEK_END);
        long size = ftell(out);
        fclose(out);
        return truncate(argv[3], (off_t)size + (off_t)bytes) == 0 ? 0 : die("cannot extend");
    }
    fprintf(stderr,
            "usage: ckpt_fixture gpt OUT [key=value ...] | set-meta IN OUT KEY VALUE | "
            "add-sparse IN OUT NAME BYTES | rss FILE CMD [ARGS ...] | compare A B TOL [TOL_KB]\n");
    return 2;
}
