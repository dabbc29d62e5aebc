/* examples/gpt/gpt.h — what the gpt program's commands share: flags, training, evaluation. */
#ifndef GPT_GPT_H
#define GPT_GPT_H

#include "data.h"

/* ---------------------------------------------------------------- flags (cli.c) */

typedef struct {
    const char *name;
    enum { F_STR, F_INT, F_NUM } kind;
    void *value; /* const char **, int64_t *, double * */
    const char *help;
} flag;

/* Parses "--name value" pairs; false (after a message) on an unknown flag, a missing or bad
 * value, or --help. */
bool parse_flags(int argc, char **argv, const flag *flags, int n);
void print_flags(const flag *flags, int n);
bool check_range(const char *name, int64_t v, int64_t lo, int64_t hi);
/* Prints "gpt: <what>: <shortlong's error message>" and returns 1. */
int fail(const char *what);
double now(void);
void fmt_duration(double seconds, char *buf, size_t cap);
/* "128,256,512" -> out[0..n); the count, or -1 unless every entry is a positive integer. */
int parse_int_list(const char *s, int64_t *out, int cap);
/* "alibi, none, ..." */
const char *pos_list(void);

/* ---------------------------------------------------------------- training (train.c) */

typedef struct {
    sl_gpt_config cfg;       /* ignored when resuming: the checkpoint's config is used */
    int64_t batch, steps, warmup, eval_every, eval_tokens, stop_after;
    double lr, min_lr_frac, weight_decay, clip;
    const char *out;         /* checkpoint written at each evaluation; NULL: none */
    const char *resume;      /* training checkpoint to continue; NULL: a new model */
    bool quiet;              /* no progress output */
} train_opts;

typedef struct {
    int64_t steps;           /* steps run by this call */
    double seconds, tokens_per_s;
    double train_loss, val_loss; /* last step's; last evaluation's (nats per byte) */
    size_t peak_bytes;       /* parameters + gradients + optimizer state + the step arena's peak */
} train_result;

/* Trains a model on `train`, validating on `val`. Returns the model (free with sl_gpt_free),
 * or NULL after printing why. */
sl_gpt *train_run(const train_opts *o, const text *train, const text *val, train_result *r);

/* ---------------------------------------------------------------- evaluation (eval.c) */

typedef struct {
    double nll; /* mean nats per byte */
    int64_t n;  /* bytes scored */
} score;

/* Non-overlapping windows of T over the first span + 1 bytes: every prediction counts (the
 * paper's main protocol). Grad mode must be off; `step` is reset between batches. */
bool eval_nonoverlap(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
                     score *out);
/* Sliding windows of T moved by `stride`: the first window scores all its predictions, each
 * later one only its last `stride`, so every scored byte has at least T - stride context. */
bool eval_sliding(sl_gpt *m, const text *t, int64_t T, int64_t stride, int64_t span,
                  sl_arena *step, score *out);

/* ---------------------------------------------------------------- commands */

int cmd_experiment(int argc, char **argv); /* experiment.c */

#endif
