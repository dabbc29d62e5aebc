/* examples/gpt/gpt.h — what the gpt program's commands share: flags, training, evaluation. */
#ifndef GPT_GPT_H
#define GPT_GPT_H

#include "data.h"

#include <stdio.h>

/* ---------------------------------------------------------------- flags (cli.c) */

typedef struct {
    const char *name;
    enum { F_STR, F_INT, F_NUM } kind;
    void *value; /* const char **, int64_t *, double * */
    const char *help;
} flag;

enum { PARSE_OK, PARSE_HELP, PARSE_ERROR };
/* Parses "--name value" pairs: PARSE_OK, PARSE_HELP (--help or -h anywhere; nothing else is
 * parsed), or PARSE_ERROR after a message naming the flag (unknown, no value, a bad value). */
int parse_flags(int argc, char **argv, const flag *flags, int n);
/* Whether the last parse_flags call saw --name on the command line. */
bool flag_given(const flag *flags, int n, const char *name);
void print_flags(FILE *to, const flag *flags, int n);
/* After parse_flags failed or saw --help: the usage line and the flags (to stdout for --help,
 * to stderr otherwise); returns the exit code, 0 for --help and 2 otherwise. */
int usage_exit(int parsed, const char *usage, const flag *flags, int n);
bool check_range(const char *name, int64_t v, int64_t lo, int64_t hi);
/* v > lo (or >= lo) and v <= hi, else a message naming --name; hi may be INFINITY. */
bool check_number(const char *name, double v, double lo, bool lo_included, double hi);
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
    const char *data_path;   /* recorded in checkpoints: the training file, NULL: built-in */
    const char *val_path;    /* the validation file, NULL: the default */
    bool quiet;              /* no progress output */
} train_opts;

typedef struct {
    int64_t steps;           /* steps run by this call */
    int64_t saved_step;      /* the step of the last checkpoint this call wrote; -1: none */
    int stopped_by;          /* the signal that stopped the run (SIGINT, SIGTERM), or 0 */
    double seconds, tokens_per_s;
    double train_loss;       /* the last step's training loss (nats per byte) */
    double train_loss_avg;   /* its moving average, as the progress line shows it */
    double val_loss;         /* the last evaluation's validation loss */
    size_t peak_bytes;       /* parameters + gradients + optimizer state + the step arena's peak */
} train_result;

/* Trains a model on `train`, validating on `val`. Each step's loss and gradient norm are
 * checked before its update, and a checkpoint is written only when the validation loss and
 * every parameter are finite: a diverging run stops with the last good checkpoint in place.
 * After stop_on_signals, a SIGINT or SIGTERM ends the run after the current step, with a
 * checkpoint (r->stopped_by says which). Returns the model (free with sl_gpt_free), or NULL
 * after printing why. Data-parallel on several MPI ranks (dist.h), collectively. */
sl_gpt *train_run(const train_opts *o, const text *train, const text *val, train_result *r);

/* ---------------------------------------------------------------- runs (run.c) */

enum { RUN_META_MAX = 16 };
/* The train.* metadata of a checkpoint at `step`: the settings a resumed run restores. */
int run_meta(const train_opts *o, int64_t step, const sl_rng *data_rng, sl_meta *out,
             char bufs[RUN_META_MAX][80]);
/* o (from the flags) becomes the run stored in o->resume: its model, settings and files, with
 * every given flag that disagrees reported; *start is the step it is at. 0 on success, 1 if
 * the checkpoint cannot be read, 2 on conflicting flags (after messages). */
int resume_merge(train_opts *o, const flag *flags, int nf, int64_t *start);

/* An exclusive lock on "<out>.lock" (created; removed by unlock_output), so that two runs
 * cannot write one output (on several ranks rank 0 takes it; the others return true). False after a
 * message: another run holds it, or the file cannot be created (a directory that does not exist or
 * cannot be written: said before training). */
typedef struct {
    int fd;
    char path[4096];
} out_lock;
bool lock_output(const char *out, out_lock *l);
void unlock_output(out_lock *l);

/* SIGINT and SIGTERM set a flag that train_run checks after each step; a second one of the
 * same kind stops the program at once (the last checkpoint stays whole: saves are atomic). */
void stop_on_signals(void);
int stop_requested(void); /* the signal received, or 0 */

/* ---------------------------------------------------------------- evaluation (eval.c) */

typedef struct {
    double nll; /* mean nats per byte */
    int64_t n;  /* bytes scored */
} score;

/* Per-position sums: sum[i] and count[i] of the losses of the predictions at window position
 * i (made with i + 1 bytes of context), i < cap; the caller zeroes them. */
typedef struct {
    double *sum;
    int64_t *count;
    int64_t cap;
} pos_loss;

/* Non-overlapping windows of T over the first span + 1 bytes: every prediction counts (the
 * paper's main protocol). Grad mode must be off; `step` is reset between batches. */
bool eval_nonoverlap(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
                     score *out);
/* The same, adding each prediction's loss into pl (NULL: not) by its position in the window. */
bool eval_nonoverlap_pos(sl_gpt *m, const text *t, int64_t T, int64_t span, sl_arena *step,
                         score *out, pos_loss *pl);
/* The edges of the per-position buckets of a window of T: edges[0] = 0 < edges[1] < ... <
 * edges[n - 1] = T, bucket b holding positions [edges[b], edges[b + 1]); log-spaced, the
 * distinct values of round(2^(q / per_octave)) (so 1, 2, ..., 8 are buckets of one position,
 * then they widen: per_octave 4 gives 10, 11, 13, 16, 19, 23, 27, 32, ...), or one position
 * per bucket with per_octave 0. Returns n (at most cap). */
int pos_buckets(int64_t T, int per_octave, int64_t *edges, int cap);

/* The same-tokens protocol: windows that score only their last S predictions, placed so that
 * every length T in [S, Tmax] scores the same bytes. Window k (k = 0 .. K - 1) of length T
 * starts at Tmax - T + k S and scores the bytes at text offsets Tmax - S + 1 + k S ..
 * Tmax + k S; its stride is S and its window T. */
typedef struct {
    int64_t S;          /* predictions scored per window */
    int64_t Tmax;       /* the longest length evaluated: where the first scored block ends */
    int64_t max_scored; /* at most this many bytes scored (0: as many as the span holds) */
} same_plan;
/* K, the windows per length (0 if the first span + 1 bytes hold none). */
int64_t same_tokens_windows(const same_plan *p, int64_t span);
/* The loss of those K S bytes with windows of length T (S <= T <= Tmax). keep >= 0: the
 * distant-context ablation, every input byte more than keep before the first scored position
 * of its window (window positions [0, T - S - keep)) replaced by the bytes at the same place
 * half the text away (circularly: deterministic, real text of the corpus, never the window's
 * own bytes; the text needs 2 (T + 1) bytes); so each scored prediction keeps at least its
 * keep + 1 nearest bytes. keep < 0: nothing replaced. targets (NULL: not wanted) receives the
 * text offset of each scored byte, K S of them, in order. */
bool eval_same_tokens(sl_gpt *m, const text *t, int64_t T, const same_plan *p, int64_t keep,
                      int64_t span, sl_arena *step, score *out, int64_t *targets);
/* Sliding windows of T moved by `stride`: the first window scores all its predictions, each
 * later one only its last `stride`, so every scored byte has at least T - stride context. */
bool eval_sliding(sl_gpt *m, const text *t, int64_t T, int64_t stride, int64_t span,
                  sl_arena *step, score *out);

/* ---------------------------------------------------------------- commands */

int cmd_experiment(int argc, char **argv); /* experiment.c */

#endif
