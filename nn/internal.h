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

#endif
