/* nn/checkpoint.h — what a model's own checkpoint format (gpt_checkpoint.c) builds on: the
 * parameter and training checkpoints of checkpoint.c, and its parsing of metadata values. Not
 * installed. */
#ifndef SL_NN_CHECKPOINT_H
#define SL_NN_CHECKPOINT_H

#include "safetensors.h"

/* Loads ps's parameters (and opt's state, if opt) from the opened file; without opt, optimizer
 * state in the file ("optim.*") is skipped (never read). The file's values of ps's
 * configuration keys must be ps's unless opts->ignore_config. opts NULL: the defaults. */
bool sl__load_model(const char *op, sl__ckpt *ck, const sl_params *ps, const sl_optim *opt,
                    const sl_load_opts *opts);
/* Saves ps (and opt's state and settings, if opt) with the metadata object meta, and ps's
 * configuration pairs. */
bool sl__save_model(const char *op, const char *path, const sl_params *ps, const sl_optim *opt,
                    json_t *meta);
/* Adds the caller's metadata pairs; the prefixes "optim." and "shortlong." are shortlong's own
 * (an error). */
bool sl__put_user_meta(const char *op, json_t *meta, const sl_meta *m, int n);

/* A decimal integer, and a finite decimal number as %.17g writes it (no hex, inf, nan or
 * spaces); false on anything else. */
bool sl__parse_i64(const char *s, int64_t *out);
bool sl__parse_double(const char *s, double *out);

#endif
