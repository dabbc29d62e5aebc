/* examples/gpt/experiment.h — what the experiment (experiment.c) measures and what its report
 * and figures (report.c, figures.c) are made from. */
#ifndef GPT_EXPERIMENT_H
#define GPT_EXPERIMENT_H

#include "gpt.h"

enum { MAX_METHODS = 16, MAX_MULT = 16, MAX_SEEDS = 16, MAX_K = 8 };

/* A method of the comparison: a positional method and, for ALiBi, how its slopes are held. */
typedef struct {
    char name[32]; /* "alibi", "alibi-learned", ..., "sinusoidal-2L" (the cost comparison) */
    sl_pos pos;
    sl_slopes slopes;
    int64_t train_len; /* L, or 2L for the cost comparison's run */
    bool cost_only;    /* the cost comparison's run: not in the figures */
} method;

/* One measurement: a model (method, seed) at one evaluation length under one protocol. */
typedef struct {
    int method, seed; /* indices into the experiment's methods and seeds */
    int mult;         /* index into the multiples */
    int64_t eval_len;
    const char *protocol;           /* "nonoverlap", "sliding", "same_tokens" */
    char variant[32];               /* "full", "attn_window_L", "slopes_L_over_T", "beyond_<k>L" */
    int64_t window, stride, scored; /* bytes per forward, between windows, scored per window */
    double nll;                     /* nats per byte; NAN: not available (note says why) */
    int64_t n;                      /* bytes scored */
    char note[160];
} row;

/* The loss of one per-position bucket of the non-overlapping windows. */
typedef struct {
    int method, seed;
    int64_t eval_len, lo, hi, n;
    double nll;
} pos_row;

/* The cost of one training run, measured in that run. */
typedef struct {
    int method, seed;
    int64_t params;
    train_result tr;
    double eval_seconds;
} cost_row;

typedef struct {
    /* settings */
    method methods[MAX_METHODS + 1];
    int n_methods; /* including the cost run, which is last when present */
    int64_t seeds[MAX_SEEDS];
    int n_seeds;
    int64_t L, mult[MAX_MULT];
    int n_mult;
    int64_t span, stride, distant[MAX_K];
    int n_distant;
    same_plan plan; /* S = 0: the same-tokens protocol is off */
    bool sliding, positions, window_control, slope_scaling;
    int per_octave;
    char command[1024], settings[1024];
    /* results */
    row *rows;
    int n_rows, cap_rows;
    pos_row *pos;
    int n_pos, cap_pos;
    cost_row costs[(MAX_METHODS + 1) * MAX_SEEDS];
    int n_costs;
    double seconds;
} experiment;

/* The mean, min, max and standard deviation (n - 1) of the perplexities over the seeds of the
 * rows of (method, mult, protocol, variant) that have one; false when none has. */
typedef struct {
    double mean, min, max, std, nll_mean;
    int n;
} spread;
bool ppl_spread(const experiment *e, int mi, int mult, const char *protocol, const char *variant,
                spread *out);

/* The mean, min and max over seeds of one cost of method mi (what: 0 tokens/s, 1 peak MiB,
 * 2 train seconds, 3 eval seconds); returns the number of runs (0: none, mean NAN). */
int cost_stats(const experiment *e, int mi, int what, double *mean, double *lo, double *hi);

/* report.c: results.csv, summary.csv, per_position.csv, cost.csv and results.md in dir. */
bool write_report(const experiment *e, const char *dir);
/* figures.c: figure.svg (perplexity against length, non-overlapping, seed bands),
 * same_tokens.svg, per_position.svg, distant_context.svg and cost.svg in dir. */
bool write_figures(const experiment *e, const char *dir);

#endif
