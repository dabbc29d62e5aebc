/* nn/internal.h — helpers shared by the modules, optimizers and checkpoints. Not installed. */
#ifndef SL_NN_INTERNAL_H
#define SL_NN_INTERNAL_H

#include "../ops/internal.h"
#include <shortlong/nn.h>

/* cfg with its defaults filled in (n_kv_heads = n_heads; T5's 32 buckets and maximum distance
 * 128) and every setting checked, or false with a message naming op. The GPT checks its
 * attention settings with it too. */
bool sl__attention_config_resolve(const char *op, const sl_attention_config *cfg,
                                  sl_attention_config *out);

/* The modules' residual forwards (nn.h), where residual NULL means none: the forward as it
 * is (the public ones take it as an error). */
sl_tensor *sl__linear_forward_residual(const sl_linear_module *m, sl_tensor *x,
                                       sl_tensor *residual);
sl_tensor *sl__mlp_forward_residual(const sl_mlp *m, sl_tensor *x, sl_tensor *residual);
sl_tensor *sl__attention_forward_residual(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                          const sl_attention_mask *mask, sl_tensor *residual);

/* KERPLE's initial parameters (log r1, log r2, each (H)): the authors' r1 ~ U(0, 2) and
 * r2 ~ U(0, 1), each at least 0.01, drawn from rng (r1 for every head, then r2). */
bool sl__kerple_init(sl_tensor *log_r1, sl_tensor *log_r2, sl_rng *rng);

/* A GPT config with its defaults filled in (mlp_ratio 4 and the attention's), every setting
 * checked (context at most SL_GPT_MAX_CONTEXT), or false with a message naming op. */
bool sl__gpt_config_resolve(const char *op, const sl_gpt_config *cfg, sl_gpt_config *out);
/* Calls fn for each parameter sl_gpt_new registers for the resolved config c, in order, with
 * its name and shape, without allocating; stops (false) when fn returns false. */
typedef bool (*sl__param_visitor)(void *ctx, const char *name, int ndim, const int64_t *shape);
bool sl__gpt_each_param(const sl_gpt_config *c, sl__param_visitor fn, void *ctx);
/* Records the resolved config's architectural keys ("shortlong.pos", ...; not the seed, the
 * dropout rate or, unless positions are learned, the context) as ps's configuration
 * (gpt_checkpoint.c, which maps the config onto metadata). */
bool sl__gpt_record_config(sl_params *ps, const sl_gpt_config *c);

#endif
