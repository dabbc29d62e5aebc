/* shortlong/nn.h — modules, the parameter registry, optimizers, schedules and checkpoints.
 *
 * Modules are plain structs made by `sl_<module>_new` and run by `sl_<module>_forward`.
 * A module's parameters (and the module struct itself) live in a parameter registry,
 * sl_params, which owns a long-lived arena: parameters, their gradients and optimizer state
 * stay put while a step arena holds the activations and the tape of one step.
 *
 * Parameter names are hierarchical, "blocks.0.attn.qkv.weight": each constructor takes the
 * module's name and registers "<name>.weight" etc. Weights follow PyTorch's layouts (Linear
 * weight is [out, in]) so checkpoints map one to one onto a PyTorch state_dict.
 *
 * Functions return NULL / false on error with the message in sl_error_message().
 */
#ifndef SHORTLONG_NN_H
#define SHORTLONG_NN_H

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- parameter registry (params.c) */

#define SL_PARAM_NAME_MAX 96

typedef struct sl_param {
    char name[SL_PARAM_NAME_MAX];
    sl_tensor *value; /* a leaf with requires_grad; value->grad once a backward reached it */
    bool decay;       /* AdamW applies weight decay (false for biases, norms, embeddings) */
} sl_param;

typedef struct sl_params sl_params;

/* A registry whose parameters all have `dtype` (f32 for training, f64 for gradchecks). */
sl_params *sl_params_new(sl_dtype dtype);
void sl_params_free(sl_params *ps);
sl_dtype sl_params_dtype(const sl_params *ps);
/* The registry's long-lived arena (modules allocate their structs here). */
sl_arena *sl_params_arena(sl_params *ps);
/* A new zero parameter named `name` (unique; at most SL_PARAM_NAME_MAX - 1 chars). */
sl_tensor *sl_params_add(sl_params *ps, const char *name, int ndim, const int64_t *shape,
                         bool decay);
int sl_params_count(const sl_params *ps);
int64_t sl_params_numel(const sl_params *ps);
const sl_param *sl_params_at(const sl_params *ps, int i); /* in registration order */
sl_tensor *sl_params_find(const sl_params *ps, const char *name);
void sl_params_zero_grad(sl_params *ps);
/* Scales all gradients so their global L2 norm is at most max_norm; returns the norm before. */
double sl_params_clip_grad_norm(sl_params *ps, double max_norm);
/* Fills t with normal(0, std) draws from rng in row-major order (no autograd). */
bool sl_init_normal(sl_tensor *t, sl_rng *rng, double std);

/* ---------------------------------------------------------------- modules (modules.c) */

typedef struct sl_linear {
    sl_tensor *weight; /* (out, in) */
    sl_tensor *bias;   /* (out) or NULL */
} sl_linear;
/* weight ~ normal(0, 0.02), bias zero. */
sl_linear *sl_linear_new(sl_params *ps, const char *name, int64_t in, int64_t out, bool bias,
                         sl_rng *rng);
sl_tensor *sl_linear_forward(const sl_linear *m, sl_tensor *x); /* (..., in) -> (..., out) */

typedef struct sl_embed {
    sl_tensor *weight; /* (num, dim) */
} sl_embed;
sl_embed *sl_embed_new(sl_params *ps, const char *name, int64_t num, int64_t dim, sl_rng *rng);
sl_tensor *sl_embed_forward(const sl_embed *m, sl_tensor *indices); /* i32 (...) -> (..., dim) */

typedef struct sl_layer_norm {
    sl_tensor *weight, *bias; /* (dim), ones and zeros */
    double eps;               /* 0 at construction: 1e-5 */
} sl_layer_norm;
sl_layer_norm *sl_layer_norm_new(sl_params *ps, const char *name, int64_t dim, double eps);
sl_tensor *sl_layer_norm_forward(const sl_layer_norm *m, sl_tensor *x);

/* Dropout holds no parameters; the caller says whether it is training and gives the rng. */
typedef struct sl_drop {
    double p;
} sl_drop;
sl_tensor *sl_drop_forward(const sl_drop *m, sl_tensor *x, sl_rng *rng, bool train);

typedef struct sl_mlp {
    sl_linear *fc;   /* (hidden, dim) */
    sl_linear *proj; /* (dim, hidden) */
} sl_mlp;
/* dim -> hidden (GELU, tanh form as in GPT-2) -> dim. */
sl_mlp *sl_mlp_new(sl_params *ps, const char *name, int64_t dim, int64_t hidden, sl_rng *rng);
sl_tensor *sl_mlp_forward(const sl_mlp *m, sl_tensor *x);

/* ---------------------------------------------------------------- attention (attention.c) */

/* How attention knows where tokens are (the methods the ALiBi paper compares). */
typedef enum sl_pos {
    SL_POS_NONE = 0,  /* no positional information (NoPE) */
    SL_POS_ALIBI,     /* linear biases in the fused kernel */
    SL_POS_COUNT
} sl_pos;
const char *sl_pos_name(sl_pos pos);         /* "none", "alibi", ... */
bool sl_pos_parse(const char *name, sl_pos *out);

typedef struct sl_attention_config {
    int64_t dim;        /* model width C */
    int n_heads;        /* H; C % H == 0 */
    int n_kv_heads;     /* Hk; H % Hk == 0 (0 means H) */
    sl_pos pos;
    bool fused_qkv;     /* one (C + 2 Hk D) x C projection instead of three */
} sl_attention_config;

/* Keys and values of earlier positions for incremental decoding, one per layer. Decoding runs
 * with grad mode off (cache writes are not recorded): a forward with a cache fails otherwise. */
typedef struct sl_kv_cache {
    sl_tensor *k, *v; /* (B, Hk, capacity, D) */
    int64_t len;      /* positions filled */
} sl_kv_cache;
/* In the current arena. */
sl_kv_cache *sl_kv_cache_new(sl_dtype dtype, int64_t batch, int n_kv_heads, int64_t capacity,
                             int64_t head_dim);

typedef struct sl_attention {
    sl_attention_config cfg;
    sl_linear *qkv;          /* fused: (C + 2 Hk D, C) */
    sl_linear *q, *k, *v;    /* separate */
    sl_linear *proj;         /* (C, C) */
    sl_tensor *slopes;       /* (H) fixed per-head bias slopes: ALiBi's, zeros for none; not a
                                parameter (a user may swap in a leaf that requires grad) */
} sl_attention;
sl_attention *sl_attention_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                               sl_rng *rng);
/* Causal self-attention over x (B, T, C). With a cache, x holds the T newest positions: their
 * keys and values are appended and attention runs over all cache->len + T positions. */
sl_tensor *sl_attention_forward(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache);

/* ---------------------------------------------------------------- transformer (gpt.c) */

typedef struct sl_block {
    sl_layer_norm *ln1, *ln2;
    sl_attention *attn;
    sl_mlp *mlp;
} sl_block;
sl_block *sl_block_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                       int64_t mlp_hidden, sl_rng *rng);
/* Pre-LN: x + attn(ln1(x)), then + mlp(ln2(x)); dropout (if any) on both residual branches. */
sl_tensor *sl_block_forward(const sl_block *m, sl_tensor *x, sl_kv_cache *cache,
                            const sl_drop *drop, sl_rng *rng, bool train);

typedef struct sl_gpt_config {
    int64_t vocab_size;  /* 256 for bytes */
    int64_t context;     /* training length L (learned positions: the table size) */
    int64_t dim;         /* C */
    int n_layers;
    int n_heads;
    int n_kv_heads;      /* 0: n_heads */
    int mlp_ratio;       /* hidden = mlp_ratio * C; 0: 4 */
    sl_pos pos;
    bool tie_embeddings; /* LM head shares the token embedding */
    bool fused_qkv;
    double dropout;
    uint64_t seed;       /* initialisation */
} sl_gpt_config;

typedef struct sl_gpt {
    sl_gpt_config cfg;
    sl_params *params;   /* owned */
    sl_embed *tok;       /* tok.weight (vocab, C) */
    sl_block **blocks;
    sl_layer_norm *ln_f;
    sl_linear *head;     /* NULL when tied */
    sl_drop drop;
    sl_rng rng;          /* dropout stream */
    bool train;
} sl_gpt;

/* GPT-2 init: normal(0, 0.02); residual projections (attn.proj, mlp.proj) scaled by
 * 1/sqrt(2 n_layers). Parameters in `dtype`. */
sl_gpt *sl_gpt_new(const sl_gpt_config *cfg, sl_dtype dtype);
void sl_gpt_free(sl_gpt *m);
/* idx i32 (B, T) -> logits (B, T, vocab). caches: NULL, or n_layers caches (decoding): idx
 * then holds the T newest positions, which follow the caches' len earlier ones. Dropout runs
 * when m->train is set. */
sl_tensor *sl_gpt_forward(sl_gpt *m, sl_tensor *idx, sl_kv_cache **caches);
/* n_layers empty caches for batch rows and capacity positions, in the current arena. */
sl_kv_cache **sl_gpt_kv_caches_new(const sl_gpt *m, int64_t batch, int64_t capacity);
/* Mean next-token cross-entropy of idx (B, T) against targets (B, T) (a 0-d tensor); targets
 * equal to -1 are ignored (padding). */
sl_tensor *sl_gpt_loss(sl_gpt *m, sl_tensor *idx, sl_tensor *targets);

/* ---------------------------------------------------------------- optimizers (optim.c) */

typedef struct sl_optim sl_optim;

typedef struct sl_adamw_config {
    double beta1, beta2, eps; /* 0.9, 0.95, 1e-8 when 0 */
    double weight_decay;      /* decoupled; applied only to params with decay set */
} sl_adamw_config;
sl_optim *sl_adamw_new(sl_params *ps, const sl_adamw_config *cfg);
/* Plain SGD with optional momentum (PyTorch's form: buf = mu buf + g; p -= lr buf). */
sl_optim *sl_sgd_new(sl_params *ps, double momentum, double weight_decay);
/* One update with learning rate lr from the parameters' current gradients. */
bool sl_optim_step(sl_optim *opt, double lr);
int64_t sl_optim_steps(const sl_optim *opt);
void sl_optim_free(sl_optim *opt);

/* Learning-rate schedules: step counts from 0. */
double sl_lr_constant(int64_t step, double lr);
/* Linear warmup from 0 to max_lr over `warmup` steps, then cosine decay to min_lr at `total`. */
double sl_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double max_lr,
                           double min_lr);

/* ---------------------------------------------------------------- checkpoints (checkpoint.c) */

/* safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype ("F32", "F64", "I32"), shape and data_offsets, with "__metadata__" string pairs; then the
 * raw little-endian data. Written atomically (temp file, fsync, rename). */
typedef struct sl_meta {
    const char *key, *value;
} sl_meta;

/* Saves every parameter (by name) plus the metadata pairs. */
bool sl_save_params(const char *path, const sl_params *ps, const sl_meta *meta, int n_meta);
/* Loads every parameter of ps from path: the file must hold exactly ps's names with matching
 * dtypes and shapes. Validates the header length, the JSON, dtypes, shapes, and that every
 * offset lies inside the file; reports the first problem with the file name. */
bool sl_load_params(const char *path, sl_params *ps);
/* Reads one metadata value into buf; false if the file is bad or the key is absent. */
bool sl_read_meta(const char *path, const char *key, char *buf, size_t cap);

/* Training checkpoints: parameters, the optimizer's state tensors and step count, and the
 * caller's metadata (data position, RNG state, ...), so that resuming continues bitwise
 * identically. */
bool sl_save_training(const char *path, const sl_params *ps, const sl_optim *opt,
                      const sl_meta *meta, int n_meta);
bool sl_load_training(const char *path, sl_params *ps, sl_optim *opt);

/* GPT checkpoints: the config is stored in __metadata__ and checked (or used) on load. */
bool sl_gpt_save(const char *path, const sl_gpt *m, const sl_optim *opt, const sl_meta *extra,
                 int n_extra);
/* Builds a model from the file's config and loads its weights. */
sl_gpt *sl_gpt_load(const char *path, sl_dtype dtype);

#ifdef __cplusplus
}
#endif
#endif
