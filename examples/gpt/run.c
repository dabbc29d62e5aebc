/* examples/gpt/run.c — a training run beyond its loop: the settings a checkpoint stores so that
 * --resume continues the same run (and the comparison of those with the flags given alongside
 * --resume), the lock on the output file, and stopping cleanly on SIGINT / SIGTERM.
 *
 * A run's settings are stored in each checkpoint's metadata: the model's config (shortlong.*,
 * by sl_gpt_save), the optimizer's (optim.*, by sl_save_training) and the run's own (train.*):
 * the step reached, the data stream's RNG, the data and validation files, and the steps,
 * warmup, batch, learning rate, clip and evaluation settings. Resuming restores all of them.
 * A flag given with --resume must agree with the run, except those that only say how far or
 * how often: --steps may extend the run (the schedule then decays to the new total, which is
 * said), --eval-every, --eval-tokens, --stop-after, --threads and --out are this session's,
 * and --data / --val may name another file (said, since the data stream then differs). */
#include "dist.h"
#include "gpt.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- settings */

/* How train.data records the built-in corpus (older checkpoints wrote its description, which
 * starts the same way). */
static const char BUILTIN[] = "built-in synthetic corpus";

int run_meta(const train_opts *o, int64_t step, const sl_rng *data_rng, sl_meta *out,
             char bufs[RUN_META_MAX][80])
{
    int n = 0;
#define PUT(k, fmt, v) (snprintf(bufs[n], 80, fmt, v), out[n] = (sl_meta){k, bufs[n]}, n++)
    PUT("train.step", "%lld", (long long)step);
    sl_rng_to_hex(data_rng, bufs[n]);
    out[n] = (sl_meta){"train.data_rng", bufs[n]}, n++;
    out[n++] = (sl_meta){"train.data", o->data_path ? o->data_path : BUILTIN};
    out[n++] = (sl_meta){"train.val", o->val_path ? o->val_path : ""};
    PUT("train.steps", "%lld", (long long)o->steps);
    PUT("train.warmup", "%lld", (long long)o->warmup);
    PUT("train.batch", "%lld", (long long)o->batch);
    PUT("train.lr", "%.17g", o->lr);
    PUT("train.min_lr_frac", "%.17g", o->min_lr_frac);
    PUT("train.clip", "%.17g", o->clip);
    PUT("train.eval_every", "%lld", (long long)o->eval_every);
    PUT("train.eval_tokens", "%lld", (long long)o->eval_tokens);
#undef PUT
    return n;
}

/* The checkpoint's value of key, or NULL when it has none. */
static const char *meta(const char *path, const char *key, char *buf, size_t cap)
{
    if (sl_read_meta(path, key, buf, cap)) return buf;
    sl_error_clear();
    return NULL;
}

static bool meta_i64(const char *path, const char *key, int64_t *out)
{
    char buf[64], *end;
    if (!meta(path, key, buf, sizeof buf)) return false;
    long long v = strtoll(buf, &end, 10);
    if (*end || end == buf) return false;
    *out = v;
    return true;
}

static bool meta_num(const char *path, const char *key, double *out)
{
    char buf[64], *end;
    if (!meta(path, key, buf, sizeof buf)) return false;
    double v = strtod(buf, &end);
    if (*end || end == buf || !isfinite(v)) return false;
    *out = v;
    return true;
}

typedef struct {
    const char *path;
    const flag *flags;
    int nf;
    int conflicts;
} merge;

/* A flag that must agree with the run: given and different is a conflict (said). */
static void check_int(merge *mg, const char *name, int64_t flag_value, int64_t run_value)
{
    if (flag_given(mg->flags, mg->nf, name) && flag_value != run_value) {
        fprintf(stderr, "gpt: --%s %lld conflicts with the run being resumed (%s has %lld)\n", name,
                (long long)flag_value, mg->path, (long long)run_value);
        mg->conflicts++;
    }
}

static void check_num(merge *mg, const char *name, double flag_value, double run_value)
{
    if (flag_given(mg->flags, mg->nf, name) && flag_value != run_value) {
        fprintf(stderr, "gpt: --%s %g conflicts with the run being resumed (%s has %.17g)\n", name,
                flag_value, mg->path, run_value);
        mg->conflicts++;
    }
}

/* Checked, then the run's value is taken. */
static void keep_int(merge *mg, const char *name, int64_t *value, int64_t run_value)
{
    check_int(mg, name, *value, run_value);
    *value = run_value;
}

static void keep_num(merge *mg, const char *name, double *value, double run_value)
{
    check_num(mg, name, *value, run_value);
    *value = run_value;
}

/* A run setting from train.*: kept when the checkpoint has it, else the flag's (older
 * checkpoints did not store it). */
static void keep_meta_int(merge *mg, const char *name, const char *key, int64_t *value)
{
    int64_t v;
    if (meta_i64(mg->path, key, &v)) keep_int(mg, name, value, v);
    else if (!flag_given(mg->flags, mg->nf, name))
        fprintf(stderr, "gpt: note: %s does not record --%s; using %lld\n", mg->path, name,
                (long long)*value);
}

static void keep_meta_num(merge *mg, const char *name, const char *key, double *value)
{
    double v;
    if (meta_num(mg->path, key, &v)) keep_num(mg, name, value, v);
    else if (!flag_given(mg->flags, mg->nf, name))
        fprintf(stderr, "gpt: note: %s does not record --%s; using %g\n", mg->path, name, *value);
}

/* --data or --val: the run's file unless the flag names one (said when it differs). */
static void keep_file(merge *mg, const char *name, const char *key, const char **value, char *store,
                      size_t cap)
{
    const char *run = meta(mg->path, key, store, cap);
    if (!run) return; /* an older checkpoint: the flag (or its default) */
    bool builtin = !strncmp(run, BUILTIN, strlen(BUILTIN)), none = !run[0];
    const char *run_file = builtin || none ? NULL : run;
    if (!flag_given(mg->flags, mg->nf, name)) {
        *value = run_file;
        if (run_file) fprintf(stderr, "resuming on the run's --%s %s\n", name, run_file);
        return;
    }
    if (!run_file || strcmp(run_file, *value))
        fprintf(stderr,
                "gpt: note: the run trained with --%s %s; continuing with %s (the data "
                "stream differs from the run's)\n",
                name,
                run_file  ? run_file
                : builtin ? "(the built-in corpus)"
                          : "(the default)",
                *value);
}

int resume_merge(train_opts *o, const flag *flags, int nf, int64_t *start)
{
    static char data_buf[1024], val_buf[1024];
    merge mg = {o->resume, flags, nf, 0};
    sl_gpt_config c;
    if (!sl_gpt_read_config(o->resume, &c)) return fail("cannot resume");
    if (!meta_i64(o->resume, "train.step", start) || *start < 0) {
        fprintf(stderr,
                "gpt: %s lacks the training state (train.step): not a checkpoint of gpt "
                "train\n",
                o->resume);
        return 1;
    }
    /* the model */
    check_int(&mg, "context", o->cfg.context, c.context);
    check_int(&mg, "layers", o->cfg.n_layers, c.n_layers);
    check_int(&mg, "heads", o->cfg.n_heads, c.n_heads);
    check_int(&mg, "kv-heads", o->cfg.n_kv_heads ? o->cfg.n_kv_heads : o->cfg.n_heads,
              c.n_kv_heads ? c.n_kv_heads : c.n_heads);
    check_int(&mg, "dim", o->cfg.dim, c.dim);
    check_int(&mg, "seed", (int64_t)o->cfg.seed, (int64_t)c.seed);
    check_num(&mg, "dropout", o->cfg.dropout, c.dropout);
    if (flag_given(flags, nf, "pos") && o->cfg.pos != c.pos) {
        fprintf(stderr, "gpt: --pos %s conflicts with the run being resumed (%s has %s)\n",
                sl_pos_name(o->cfg.pos), o->resume, sl_pos_name(c.pos));
        mg.conflicts++;
    }
    o->cfg = c;
    /* the run */
    keep_meta_int(&mg, "batch", "train.batch", &o->batch);
    keep_meta_int(&mg, "warmup", "train.warmup", &o->warmup);
    keep_meta_num(&mg, "lr", "train.lr", &o->lr);
    keep_meta_num(&mg, "clip", "train.clip", &o->clip);
    keep_meta_num(&mg, "weight-decay", "optim.weight_decay", &o->weight_decay);
    double frac;
    if (meta_num(o->resume, "train.min_lr_frac", &frac)) o->min_lr_frac = frac;
    int64_t steps;
    bool have_steps = meta_i64(o->resume, "train.steps", &steps);
    if (mg.conflicts) {
        fprintf(stderr, "gpt: a resumed run keeps its model and training settings: drop the "
                        "conflicting flags, or train a new model without --resume\n");
        return 2;
    }
    if (flag_given(flags, nf, "steps")) {
        if (o->steps <= *start) {
            fprintf(stderr,
                    "gpt: --steps %lld: %s is already at step %lld; pass a larger "
                    "--steps to train further\n",
                    (long long)o->steps, o->resume, (long long)*start);
            return 2;
        }
        if (have_steps && steps != o->steps)
            fprintf(stderr,
                    "gpt: note: --steps %lld changes the run's %lld steps: the learning "
                    "rate now decays to step %lld\n",
                    (long long)o->steps, (long long)steps, (long long)o->steps);
    } else if (have_steps) {
        o->steps = steps;
        if (steps <= *start) {
            fprintf(stderr,
                    "gpt: the run in %s is complete (step %lld of %lld); pass --steps N "
                    "> %lld to train further\n",
                    o->resume, (long long)*start, (long long)steps, (long long)*start);
            return 2;
        }
    } else if (o->steps <= *start) {
        fprintf(stderr,
                "gpt: %s is at step %lld and does not record its step count; pass "
                "--steps N > %lld\n",
                o->resume, (long long)*start, (long long)*start);
        return 2;
    }
    if (!flag_given(flags, nf, "eval-every") &&
        !meta_i64(o->resume, "train.eval_every", &o->eval_every))
        o->eval_every = o->steps < 100 ? o->steps : 100;
    if (!flag_given(flags, nf, "eval-tokens"))
        meta_i64(o->resume, "train.eval_tokens", &o->eval_tokens);
    keep_file(&mg, "data", "train.data", &o->data_path, data_buf, sizeof data_buf);
    keep_file(&mg, "val", "train.val", &o->val_path, val_buf, sizeof val_buf);
    return 0;
}

/* ---------------------------------------------------------------- the output lock */

bool lock_output(const char *out, out_lock *l)
{
    l->fd = -1;
    if (dist_rank() != 0) return true; /* rank 0 writes the checkpoints and holds the lock */
    struct stat st;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "gpt: --out %s is a directory\n", out);
        return false;
    }
    snprintf(l->path, sizeof l->path, "%s.lock", out);
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (fd < 0) {
            fprintf(stderr, "gpt: cannot write --out %s: cannot create %s: %s\n", out, l->path,
                    strerror(errno));
            return false;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                fprintf(stderr, "gpt: %s is being written by another gpt train (it holds %s)\n",
                        out, l->path);
            else fprintf(stderr, "gpt: cannot lock %s: %s\n", l->path, strerror(e));
            return false;
        }
        /* The holder before us removes the file as it exits: if the name no longer leads to
         * the file we locked, lock the one it leads to now. */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(l->path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino) {
            l->fd = fd;
            return true;
        }
        close(fd);
    }
    fprintf(stderr, "gpt: cannot lock %s: it keeps changing\n", l->path);
    return false;
}

void unlock_output(out_lock *l)
{
    if (l->fd < 0) return;
    unlink(l->path); /* while still holding the lock: see lock_output */
    close(l->fd);
    l->fd = -1;
}

/* ---------------------------------------------------------------- stopping */

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

void stop_on_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second signal stops at once, the default way */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int stop_requested(void) { return stop_signal; }
