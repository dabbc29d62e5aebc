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
 * Names. A module and the op it applies share one name: the op sl_linear (ops.h) and the module
 * sl_linear_module, made by sl_linear_new and run by sl_linear_forward; likewise layer_norm,
 * embedding and dropout. Modules that no single op shares a name with are named plainly
 * (sl_mlp, sl_attention, sl_block, sl_gpt).
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
/* The configuration the parameters were made for, as text pairs ("shortlong.n_heads" = "4").
 * sl_gpt_new records its architecture here; any model may record its own. Saving writes the
 * pairs to the file's metadata, and loading (sl_load_params, sl_load_training) compares the
 * file's value of every key the registry has (a key the file lacks is not compared) and
 * refuses a difference, naming each key with both values: two models whose shapes agree but
 * whose parameters mean different things (ALiBi and sinusoidal, 4 heads and 8) do not load
 * into each other. Record only what changes what the parameters mean (not a seed, a dropout
 * rate or a length the parameters do not depend on). A registry without pairs loads any file
 * whose tensors match. Setting a key again replaces its value; keys starting with "optim."
 * are the optimizer's (an error). The strings are copied. */
bool sl_params_set_config(sl_params *ps, const char *key, const char *value);
/* The value of key, or NULL when the registry has none (not an error). */
const char *sl_params_config(const sl_params *ps, const char *key);
int sl_params_config_count(const sl_params *ps);
/* The i-th pair, in the order the keys were first set. */
bool sl_params_config_at(const sl_params *ps, int i, const char **key, const char **value);
void sl_params_zero_grad(sl_params *ps);
/* Copies every parameter's values from src into dst, matched by name, converting the dtype
 * (a model trained in f32 into an f64 one for a gradcheck, or back). The registries must hold
 * the same names with the same shapes, one to one, in any order; otherwise (SL_ERR_ARG) the
 * error names the first mismatch and dst is left unchanged. Gradients are not copied. */
bool sl_params_copy(sl_params *dst, const sl_params *src);
/* Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
 * A norm that is not finite (an Inf or NaN in a gradient) is returned as it is, nothing is
 * scaled, and an error is recorded (SL_ERR_STATE) naming the first parameter whose gradient
 * is not finite, the element's flat index and its value: check sl_error() or isfinite() on
 * the result before stepping. NaN on a bad argument (a NULL registry, max_norm <= 0). */
double sl_params_clip_grad_norm(sl_params *ps, double max_norm);
/* Fills t with normal(0, std) draws from rng in row-major order (no autograd). */
bool sl_init_normal(sl_tensor *t, sl_rng *rng, double std);

/* ---------------------------------------------------------------- modules (modules.c) */

typedef struct sl_linear_module {
    sl_tensor *weight; /* (out, in) */
    sl_tensor *bias;   /* (out) or NULL */
} sl_linear_module;
/* weight ~ normal(0, 0.02), bias zero. */
sl_linear_module *sl_linear_new(sl_params *ps, const char *name, int64_t in, int64_t out, bool bias,
                                sl_rng *rng);
/* (..., in) -> (..., out) */
sl_tensor *sl_linear_forward(const sl_linear_module *m, sl_tensor *x);
/* residual + sl_linear_forward(m, x), the residual (of the output's shape and dtype) added by
 * the Linear itself (sl_linear_residual: the same bits, gradients too, with no tensor and no
 * pass of its own for the sum). The residual forwards below work the same way. */
sl_tensor *sl_linear_forward_residual(const sl_linear_module *m, sl_tensor *x,
                                      sl_tensor *residual);

typedef struct sl_embedding_module {
    sl_tensor *weight; /* (num, dim) */
} sl_embedding_module;
sl_embedding_module *sl_embedding_new(sl_params *ps, const char *name, int64_t num, int64_t dim,
                                      sl_rng *rng);
/* i32 (...) -> (..., dim) */
sl_tensor *sl_embedding_forward(const sl_embedding_module *m, sl_tensor *indices);

typedef struct sl_layer_norm_module {
    sl_tensor *weight, *bias; /* (dim), ones and zeros */
    double eps;               /* 0 at construction: 1e-5 */
} sl_layer_norm_module;
sl_layer_norm_module *sl_layer_norm_new(sl_params *ps, const char *name, int64_t dim, double eps);
sl_tensor *sl_layer_norm_forward(const sl_layer_norm_module *m, sl_tensor *x);

/* Dropout holds no parameters; the caller says whether it is training and gives the rng. */
typedef struct sl_dropout_module {
    double p;
} sl_dropout_module;
sl_tensor *sl_dropout_forward(const sl_dropout_module *m, sl_tensor *x, sl_rng *rng, bool train);

typedef struct sl_mlp {
    sl_linear_module *fc;   /* (hidden, dim) */
    sl_linear_module *proj; /* (dim, hidden) */
} sl_mlp;
/* dim -> hidden (GELU, tanh form as in GPT-2) -> dim. */
sl_mlp *sl_mlp_new(sl_params *ps, const char *name, int64_t dim, int64_t hidden, sl_rng *rng);
sl_tensor *sl_mlp_forward(const sl_mlp *m, sl_tensor *x);
/* residual + sl_mlp_forward(m, x), added by the second Linear: a pre-LN block's
 * h + mlp(ln(h)) is sl_mlp_forward_residual(m, sl_layer_norm_forward(ln, h), h). */
sl_tensor *sl_mlp_forward_residual(const sl_mlp *m, sl_tensor *x, sl_tensor *residual);

/* ---------------------------------------------------------------- attention (attention.c) */

/* How attention knows where tokens are (the methods the ALiBi paper compares). */
typedef enum sl_pos {
    SL_POS_NONE = 0,   /* no positional information (NoPE) */
    SL_POS_ALIBI,      /* linear biases -m_h (p_i - j) in the fused kernel */
    SL_POS_SINUSOIDAL, /* Vaswani et al.'s sin/cos (sl_sinusoidal) added to the token embeddings
                          scaled by sqrt(C) (as Vaswani et al. and fairseq scale them); no
                          parameters, defined at any length */
    SL_POS_LEARNED,    /* a learned table pos.weight (context, C) added to the token embeddings;
                          a model cannot run past its context (sl_gpt_forward fails) */
    SL_POS_ROTARY,     /* RoPE: q and k rotated by position (sl_rotary, base SL_ROTARY_BASE) */
    SL_POS_T5,         /* T5's learned bias per head and distance bucket (sl_t5_bias), added to
                          the scores; scores materialised, O(T^2) memory */
    /* The methods after ALiBi, biases added to materialised scores as T5's is: */
    SL_POS_KERPLE,   /* KERPLE's log kernel -r1_h log(1 + r2_h |p_i - j|) (sl_kerple_bias),
                        r1 = exp(theta1), r2 = exp(theta2) learned per head */
    SL_POS_SANDWICH, /* Sandwich's parameter-free bias from sinusoidal inner products
                        (sl_sandwich_bias) */
    SL_POS_FIRE,     /* FIRE: an MLP of the distance normalised by the query's position
                        (sl_fire_bias), learned per layer */
    SL_POS_COUNT
} sl_pos;
/* "none", "alibi", "sinusoidal", "learned", "rotary", "t5", "kerple", "sandwich", "fire" */
const char *sl_pos_name(sl_pos pos);
bool sl_pos_parse(const char *name, sl_pos *out);

/* How ALiBi's slopes are held (SL_POS_ALIBI only). */
typedef enum sl_slopes {
    SL_SLOPES_FIXED = 0, /* constants: the paper's (times slope_scale); not parameters */
    SL_SLOPES_LEARNED,   /* parameters "<name>.log_slopes" (H) holding theta = log m, so that
                            m = exp(theta) (see "Learned slopes" below) */
    SL_SLOPES_COUNT
} sl_slopes;
/* "fixed", "learned" */
const char *sl_slopes_name(sl_slopes s);
bool sl_slopes_parse(const char *name, sl_slopes *out);

typedef struct sl_attention_config {
    int64_t dim;        /* model width C */
    int n_heads;        /* H; C % H == 0 */
    int n_kv_heads;     /* Hk; H % Hk == 0 (0 means H) */
    sl_pos pos;
    bool fused_qkv;     /* one (C + 2 Hk D) x C projection instead of three; with ALiBi, NoPE,
                           sinusoidal or learned positions and no KV cache, attention then runs
                           on its output as it is (sl_alibi_attention_packed): no head copies */
    /* T5 only (SL_POS_T5): */
    int t5_buckets;      /* buckets per head (0: 32) */
    int t5_max_distance; /* distances from here on share the last bucket (0: 128) */
    sl_tensor *t5_table; /* a bucket table (H, t5_buckets) to use rather than one of the module's
                            own: the GPT shares one across its layers, as T5 does. NULL: the
                            module registers "<name>.rel_bias" */
    /* Encoders and masks (every method): */
    bool bidirectional;  /* false: causal (a decoder); true: every query may see every key (an
                            encoder): ALiBi's bias -m |p_i - j|, T5's bidirectional buckets
                            (sl_t5_bias_bidirectional), rotary, sinusoidal, learned and none
                            as they are. A KV cache needs causal attention. */
    int64_t window;      /* 0: none; W >= 1: a query sees only keys with p_i - j < W (causal) or
                            |p_i - j| < W (bidirectional); the fused kernel then costs O(T W).
                            Decoding with a cache keeps it exactly (positions are absolute). */
    /* ALiBi only (SL_POS_ALIBI); the zero values are the paper's fixed, symmetric slopes: */
    sl_slopes slopes;    /* SL_SLOPES_FIXED or SL_SLOPES_LEARNED */
    bool asymmetric;     /* bidirectional only: separate slopes m' for keys after the query,
                            -m_h (p_i - j) before and -m'_h (j - p_i) after (sl_alibi_opts'
                            slopes_after), so that the encoder can tell left from right. m' starts
                            from the paper's slopes swapped in pairs of heads: head 0 takes head
                            1's slope for keys after the query and head 1 takes head 0's, then 2
                            and 3, ... (an odd last head keeps its own, and one head alone is
                            symmetric: set m->slopes_after yourself); fixed, or the parameter
                            "<name>.log_slopes_after" when learned. See "Choosing ALiBi's slopes
                            for an encoder" below. */
    double slope_scale;  /* multiplies the initial slopes (0: 1, the paper's); > 1 is steeper */
    /* KERPLE only (SL_POS_KERPLE): */
    sl_tensor *kerple_log_r1, *kerple_log_r2; /* (H) each: shared parameters holding log r1 and
                            log r2 (the GPT shares one pair across its layers, as the authors'
                            code does); both NULL: the module registers "<name>.kerple_log_r1"
                            and "<name>.kerple_log_r2", r1 ~ U(0, 2) and r2 ~ U(0, 1) as the
                            authors initialise them, each at least 0.01 (their clamp) */
    /* Sandwich only (SL_POS_SANDWICH): */
    int64_t sandwich_dim; /* d', the sinusoids' dimension, even (0: the head dimension D) */
    /* FIRE only (SL_POS_FIRE): */
    int fire_width;        /* W, the MLP's hidden units (0: 32, the paper's) */
    double fire_threshold; /* L0 > 0, the threshold's initial value in positions (0: 512, the
                              reference implementation's); the learned threshold is |m| L0 */
} sl_attention_config;

/* Per-call masks of a (self-)attention over x (B, T, C), in absolute positions (with a KV
 * cache: cache->len + T positions, the new ones last). Either field may be NULL (absent; a NULL
 * here is not taken for a failed call: check the tensors before the call).
 *   lengths:  i32 [B], values >= 0: row b's real tokens are positions 0 .. lengths[b] - 1,
 *             the rest padding (a length past the positions: none is padding, so a row's full
 *             length may be passed while decoding). Padding keys are masked and padding query
 *             rows output 0 and pass no gradient (what follows, e.g. an MLP, still gives them
 *             some value: leave them out of the loss or the pooling).
 *   segments: i32 [B, positions]: a document id per position (packed documents); a query sees
 *             only keys of its own document. Absolute positions (sinusoidal, learned, rotary)
 *             still count from the row's start; ALiBi and T5 see the distance p_i - j, which
 *             within a document is the distance inside it. */
typedef struct sl_attention_mask {
    sl_tensor *lengths;
    sl_tensor *segments;
} sl_attention_mask;

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
    sl_linear_module *qkv;       /* fused: (C + 2 Hk D, C) */
    sl_linear_module *q, *k, *v; /* separate */
    sl_linear_module *proj;      /* (C, C) */
    sl_tensor *slopes;       /* (H) fixed per-head bias slopes: ALiBi's (times slope_scale),
                                zeros for the others; not a parameter (a user may swap in a leaf
                                that requires grad); NULL with learned slopes */
    sl_tensor *slopes_after; /* (H) fixed slopes for keys after the query (asymmetric), or NULL */
    sl_tensor *log_slopes;   /* learned: the parameter "<name>.log_slopes" (H), m = exp(it) */
    sl_tensor *log_slopes_after; /* learned and asymmetric: "<name>.log_slopes_after" (H) */
    sl_tensor *t5_table;     /* T5: (H, buckets), normal(0, 0.02) when the module's own */
    sl_tensor *kerple_log_r1, *kerple_log_r2; /* KERPLE: (H) each, shared or the module's own */
    sl_fire_weights fire; /* FIRE: "<name>.fire.fc1.weight" (W, 1) and ".fc1.bias" (W),
                             ".fc2.weight" (H, W) and ".fc2.bias" (H), initialised as PyTorch's
                             nn.Linear is (uniform in +-1/sqrt(fan in)); ".c" (1) = 0.1 and
                             ".l_mult" (1) = 1, the reference's; no weight decay */
    double slope_factor;  /* ALiBi: multiplies the slopes at every call (1 after
                             sl_attention_new; sl_gpt_scale_slopes sets it): inference-time
                             slope scaling, nothing is retrained */
} sl_attention;
/* Errors (NULL): the config's (every setting is checked, with its name); slopes, asymmetric or
 * slope_scale with another method than ALiBi; asymmetric without bidirectional. */
sl_attention *sl_attention_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                               sl_rng *rng);
/* Self-attention over x (B, T, C), causal or bidirectional as configured. With a cache, x holds
 * the T newest positions: their keys and values are appended and attention runs over all
 * cache->len + T positions, the new ones at positions cache->len, ... (rotary rotates them
 * there, T5 and ALiBi align queries bottom-right; keys are cached rotated). */
sl_tensor *sl_attention_forward(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache);
/* The same with per-call masks (NULL: none). Errors (NULL): a mask that does not fit x (and
 * the cache), a cache with bidirectional attention. */
sl_tensor *sl_attention_forward_masked(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                       const sl_attention_mask *mask);
/* residual + sl_attention_forward_masked(m, x, cache, mask), added by the output projection
 * (residual (B, T, C), like the output). */
sl_tensor *sl_attention_forward_residual(const sl_attention *m, sl_tensor *x, sl_kv_cache *cache,
                                         const sl_attention_mask *mask, sl_tensor *residual);

/* Learned slopes. With SL_SLOPES_LEARNED a head's slope is m = exp(theta), theta a parameter
 * (no weight decay) initialised to log of the fixed slope. Why exp: m stays > 0 (a negative
 * slope would reward distance, m = 0 would forget position), and a step on theta changes every
 * head's slope by the same ratio, where a step on m itself would be a relative change 128 times
 * larger for the shallowest of 8 heads (1/256) than for the steepest (1/2): Adam's steps, of
 * about the learning rate in each parameter, would then wipe out the shallow heads' slopes
 * first. The gradient is the kernel's dL/dm times m. */

/* Choosing ALiBi's slopes for an encoder (bidirectional attention). The figures are from
 * examples/encoder.c (one block, 4 heads, width 64, trained 300 steps on lengths 8 to 16,
 * tested on 1024 sequences of 16, 32 and 64), over seeds 1 to 5: ranges across seeds.
 *   - Direction. Symmetric slopes (the default) give -m |p_i - j|: nothing in the scores tells a
 *     key before the query from one after it, so a bidirectional ALiBi model with no other
 *     positional information gives a sequence's reverse the reversed outputs, and a pooled
 *     classifier the same answer for both. Learning cannot fix that: a learned symmetric slope
 *     stays symmetric. On "order" (is mark A before mark B) symmetric slopes, fixed or learned,
 *     scored 0.45 to 0.53 at every length; asymmetric ones (asymmetric = true) 1.000 at 1x,
 *     0.992 to 1.000 at 2x and 0.715 to 1.000 at 4x fixed (one seed below 0.999), 1.000 at 1x
 *     and 2x and 0.903 to 1.000 at 4x learned. When order matters, use asymmetric slopes.
 *   - Their start. Heads 2k and 2k + 1 exchange their slopes for the keys after the query: in
 *     each pair one head decays faster backwards and the other forwards, so comparing them
 *     gives direction, and both stay as local as the paper's. Reversing the whole order instead
 *     makes every head steep on one side and nearly flat on the other: in an earlier setting of
 *     the example (two blocks, "near" as d <= 3 against d >= 4) that reached 0.63 fixed and
 *     0.52 learned at 1x on "near", where the pair swap reached 0.98 and 0.98. Do not start
 *     learned asymmetric slopes symmetric: for a task whose label flips with the sequence's
 *     reversal the loss is then even in m - m', whose gradient is zero there.
 *   - Steepness, and pooling. The paper's slopes were tuned for causal language models. On
 *     "near" (two marks at most 2 apart, or at least 4), pooling with a max over positions,
 *     at 2x / 4x: the paper's 0.949-0.969 / 0.950-0.969, 4x steeper (slope_scale 4)
 *     0.938-0.957 / 0.944-0.961, 16x steeper 0.929-0.976 / 0.937-0.980; 4x shallower (0.25)
 *     failed to learn in 2 of 5 seeds (1x 0.79, 0.87) and reached 0.90-0.92 at 4x in the
 *     others. Pooling with the mean over positions instead, the paper's slopes fell to chance
 *     at 4x in every seed (0.475-0.569, after 0.97-0.98 at 1x), while 4x steeper ones held in
 *     3 of 5 (0.958-0.990; 0.51 and 0.62 in the others), 16x steeper 0.77-0.95 in 4 of 5: a
 *     mean dilutes one position's evidence by the length, and the shallow heads' share of
 *     attention grows with it. So: the paper's slopes or steeper, not shallower; pool so that
 *     one position's evidence does not depend on the length (a max over the real positions,
 *     as the example does); and where a mean is what the task needs, take steeper slopes. */

/* ---------------------------------------------------------------- transformer (gpt.c) */

typedef struct sl_block {
    sl_layer_norm_module *ln1, *ln2;
    sl_attention *attn;
    sl_mlp *mlp;
} sl_block;
sl_block *sl_block_new(sl_params *ps, const char *name, const sl_attention_config *cfg,
                       int64_t mlp_hidden, sl_rng *rng);
/* Pre-LN: x + attn(ln1(x)), then + mlp(ln2(x)); dropout (if any) on both residual branches.
 * Without dropout (none, p = 0, or train false) each branch's output projection adds the
 * residual itself (sl_linear_residual: the same bits, one pass and one (B, T, C) tensor less). */
sl_tensor *sl_block_forward(const sl_block *m, sl_tensor *x, sl_kv_cache *cache,
                            const sl_dropout_module *drop, sl_rng *rng, bool train);
/* The same with per-call attention masks (NULL: none; see sl_attention_mask). */
sl_tensor *sl_block_forward_masked(const sl_block *m, sl_tensor *x, sl_kv_cache *cache,
                                   const sl_attention_mask *mask, const sl_dropout_module *drop,
                                   sl_rng *rng, bool train);

/* The longest context a GPT config may have (2^24 positions): a bound on what a checkpoint's
 * config can ask for, far beyond what the models here train at. Only learned positions
 * allocate per position; the other methods evaluate at any length regardless. */
#define SL_GPT_MAX_CONTEXT (INT64_C(1) << 24)

typedef struct sl_gpt_config {
    int64_t vocab_size;  /* 256 for bytes */
    int64_t context;     /* training length L, 1 to SL_GPT_MAX_CONTEXT (learned positions: the
                            table size) */
    int64_t dim;         /* C */
    int n_layers;
    int n_heads;
    int n_kv_heads;      /* 0: n_heads */
    int mlp_ratio;       /* hidden = mlp_ratio * C; 0: 4 */
    sl_pos pos;
    int t5_buckets;      /* T5: buckets per head (0: 32) */
    int t5_max_distance; /* T5: distance where the last bucket starts (0: 128) */
    bool tie_embeddings; /* LM head shares the token embedding */
    bool fused_qkv;
    double dropout;
    uint64_t seed;       /* initialisation */
    sl_slopes slopes;    /* ALiBi: fixed (the paper's) or learned per layer (checkpointed) */
    int64_t sandwich_dim;  /* Sandwich: d' (0: the head dimension) */
    int fire_width;        /* FIRE: the MLP's hidden units (0: 32) */
    double fire_threshold; /* FIRE: the threshold's initial value L0 (0: context / 4, the ratio of
                              the reference's 512 to the paper's training length of 2048) */
} sl_gpt_config;

typedef struct sl_gpt {
    sl_gpt_config cfg;
    sl_params *params;   /* owned */
    sl_embedding_module *tok; /* tok.weight (vocab, C) */
    sl_embedding_module *pos; /* learned: pos.weight (context, C); NULL otherwise */
    sl_tensor *t5_table; /* T5: pos.rel_bias (H, buckets), shared by every layer; else NULL */
    sl_tensor *kerple_log_r1, *kerple_log_r2; /* KERPLE: pos.kerple_log_r1 and _r2 (H), shared
                                                 by every layer; else NULL */
    sl_block **blocks;
    sl_layer_norm_module *ln_f;
    sl_linear_module *head; /* NULL when tied */
    sl_dropout_module drop;
    sl_rng rng;          /* dropout stream */
    bool train;
} sl_gpt;

/* GPT-2 init: normal(0, 0.02); residual projections (attn.proj, mlp.proj) scaled by
 * 1/sqrt(2 n_layers). Parameters in `dtype`. */
sl_gpt *sl_gpt_new(const sl_gpt_config *cfg, sl_dtype dtype);
void sl_gpt_free(sl_gpt *m);
/* idx i32 (B, T) -> logits (B, T, vocab). caches: NULL, or n_layers caches (decoding): idx
 * then holds the T newest positions, which follow the caches' len earlier ones. Dropout runs
 * when m->train is set. A learned-position model fails (SL_ERR_INDEX, "sl_gpt_forward:
 * position P is past the learned position table (L positions); ...") on positions >= context;
 * every other method runs at any length. */
sl_tensor *sl_gpt_forward(sl_gpt *m, sl_tensor *idx, sl_kv_cache **caches);
/* n_layers empty caches for batch rows and capacity positions, in the current arena. */
sl_kv_cache **sl_gpt_kv_caches_new(const sl_gpt *m, int64_t batch, int64_t capacity);
/* Mean next-token cross-entropy of idx (B, T) against targets (B, T) (a 0-d tensor); targets
 * equal to -1 are ignored (padding). */
sl_tensor *sl_gpt_loss(sl_gpt *m, sl_tensor *idx, sl_tensor *targets);

/* Evaluation-time settings of a built or loaded model (what the checkpoint holds is unchanged;
 * they hold until set again). For the instruments of the gpt program's eval and experiment.
 *
 * Every layer's attention sees only the keys at distance < window from the query (the
 * attention config's window: O(T W) in the fused kernel; the scores' methods mask the rest);
 * 0 removes the window. With window L an ALiBi model is the sliding-window control: if it
 * matches the full model at long lengths, the full model's gain past L does not come from
 * context farther than L (n_layers (L - 1) with the layers stacked). Errors (false): NULL,
 * window < 0. */
bool sl_gpt_set_window(sl_gpt *m, int64_t window);
/* Every layer's ALiBi slopes, fixed or learned, are multiplied by factor at each call (factor 1
 * restores them, bitwise): inference-time slope scaling, position interpolation for ALiBi
 * (Al-Khateeb et al., 2023), with factor L_train / L_eval. Errors (false): NULL, a method other
 * than ALiBi, factor not finite and > 0. */
bool sl_gpt_scale_slopes(sl_gpt *m, double factor);

/* ---------------------------------------------------------------- optimizers (optim.c) */

/* An optimizer updates every parameter of a registry. Make it after the model: it covers the
 * parameters registered then (a step fails if more were added). Its state (moments, momentum
 * buffers) lives in the registry's arena, allocated once here, so a step allocates nothing;
 * sl_optim_free frees the rest, and the optimizer must not outlive its registry.
 * As in torch.optim, a parameter with no gradient (no backward ever reached it) is skipped;
 * a gradient that exists but is zero is an ordinary update. Updates are elementwise, computed
 * in double, split over the thread pool: the results do not depend on the thread count. */
typedef struct sl_optim sl_optim;

typedef struct sl_adamw_config {
    double beta1, beta2, eps; /* 0 picks the default: 0.9, 0.95, 1e-8 */
    double weight_decay;      /* decoupled; applied only to params with decay set */
} sl_adamw_config;
/* torch.optim.AdamW: with t the parameter's own step count (from 1),
 *     p = p * (1 - lr * weight_decay)            (decay params only, before the moments)
 *     m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *     p -= lr * mhat / (sqrt(vhat) + eps),   mhat = m / (1 - beta1^t), vhat = v / (1 - beta2^t)
 * cfg may be NULL (all defaults, no weight decay). NULL on a bad registry or setting. */
sl_optim *sl_adamw_new(sl_params *ps, const sl_adamw_config *cfg);
/* torch.optim.SGD (no dampening, no Nesterov): g += weight_decay * p (L2, decay params only);
 * buf = momentum * buf + g; p -= lr * buf (buf is g when momentum is 0). */
sl_optim *sl_sgd_new(sl_params *ps, double momentum, double weight_decay);
/* One update with learning rate lr (finite, >= 0) from the parameters' current gradients.
 * On error nothing changes (no parameter, no optimizer state, not the step count): a gradient
 * that does not match its parameter, a grown registry, or a gradient holding an Inf or a NaN
 * (SL_ERR_STATE, naming the parameter and the element's flat index), which would otherwise
 * turn the parameter, and through it every other, into NaN. Every gradient is checked, in one
 * pass over the thread pool, before anything is updated. */
bool sl_optim_step(sl_optim *opt, double lr);
int64_t sl_optim_steps(const sl_optim *opt); /* successful steps (restored by a checkpoint) */
void sl_optim_free(sl_optim *opt);

/* Learning-rate schedules: step counts from 0; a negative step is an error (NaN returned). */
double sl_lr_constant(int64_t step, double lr);
/* Linear warmup, then cosine decay from max_lr to min_lr, reached at step `total`:
 *     step <  warmup:           max_lr * (step + 1) / warmup    (step 0 already trains)
 *     warmup <= step < total:   min_lr + (max_lr - min_lr) * (1 + cos(pi * r)) / 2,
 *                               r = (step - warmup) / (total - warmup)
 *     step >= total:            min_lr                                                    */
double sl_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double max_lr,
                           double min_lr);

/* ---------------------------------------------------------------- checkpoints (checkpoint.c) */

/* safetensors files, which Python's `safetensors` reads: an 8-byte little-endian header length
 * N, N bytes of JSON naming each tensor's dtype ("F32", "F64", "I32"), shape and data_offsets,
 * with "__metadata__" string pairs (padded with spaces to a multiple of 8); then the raw
 * little-endian data, tensors packed in order.
 *
 * Writes are atomic: the file is written to "<path>.tmp.<pid>.<n>", fsynced and renamed over path,
 * then the directory is fsynced. On any error the temp file is removed and a previous file at
 * path is left as it was (SL_ERR_IO). A process killed during a save leaves its temp file;
 * the next save to the same path removes every such file whose process no longer runs. A
 * symlink at path is followed: the file it names is replaced (created if absent) and the link
 * stays a link. Replacing a file keeps its permission bits (a new file gets 0666 less the
 * umask). Saves do not lock: two processes saving to one path each replace the file whole, and
 * the last rename wins (the gpt program locks its output, see examples/gpt).
 *
 * Files are untrusted input. Loading checks, and reports the first problem as
 * "<function>: <path>: <detail>" (SL_ERR_FORMAT; SL_ERR_IO if it cannot be read): the header
 * length (at most 100 MB and inside the file), the JSON, each tensor's dtype, shape and byte
 * size, that the data_offsets tile the data exactly (no overlap, gap or trailing bytes), then
 * the names, dtypes and shapes against the model (missing or extra tensors). Only then are the
 * byte ranges of the tensors being loaded read (a tensor that is skipped, such as optimizer
 * state when loading weights, is never read), into a staging buffer; every float value must be
 * finite (the first NaN or infinity is reported with its tensor and flat index); and only then
 * is anything copied: a failed load never changes the caller's tensors. A file is opened
 * without blocking and must be a regular file (a FIFO or a device is refused).
 *
 * Metadata keys starting with "optim." and "shortlong." are shortlong's own; a caller's key
 * with either prefix is an error. */
typedef struct sl_meta {
    const char *key, *value;
} sl_meta;

/* Any tensors under names of the caller's choosing (i32 token buffers, custom state, ...). */
typedef struct sl_named {
    const char *name;
    sl_tensor *tensor;
} sl_named;
/* How a load treats what the strict default refuses. Pass NULL (or {0}) for the defaults. */
typedef struct sl_load_opts {
    bool allow_nonfinite; /* load NaN and infinite float values (default: an error naming the
                             tensor and the flat index of the first) */
    bool convert_dtype;   /* a float tensor stored as F32 loads into an F64 one and the reverse
                             (rounded to nearest; a finite value beyond F32's range is an
                             error): an f32 checkpoint into an f64 model for a gradcheck. I32
                             never converts */
    bool ignore_config;   /* load although the file's configuration differs from the
                             registry's (sl_params_set_config) */
} sl_load_opts;

/* Saves the n tensors (any dtype and strides; names unique) plus the metadata pairs. */
bool sl_save_tensors(const char *path, const sl_named *tensors, int n, const sl_meta *meta,
                     int n_meta);
/* Loads the file into the n given tensors (contiguous), which must match the file's tensors
 * one to one by name, dtype and shape. */
bool sl_load_tensors(const char *path, const sl_named *tensors, int n);
bool sl_load_tensors_ex(const char *path, const sl_named *tensors, int n, const sl_load_opts *opts);

/* Saves every parameter (by name, registration order) plus the metadata pairs and the
 * registry's configuration (sl_params_set_config). */
bool sl_save_params(const char *path, const sl_params *ps, const sl_meta *meta, int n_meta);
/* Loads every parameter of ps from path: the file must hold all of ps's names with ps's dtype
 * and the same shapes, and no other tensors except optimizer state ("optim.*", skipped and
 * never read), so a training checkpoint loads too; and the file's values of the registry's
 * configuration keys must be the registry's ("sl_load_params: f: it was saved from a model
 * with another configuration (shortlong.n_heads: file 4, model 8; shortlong.pos: file alibi,
 * model sinusoidal); ...", the keys in the registry's order). */
bool sl_load_params(const char *path, sl_params *ps);
bool sl_load_params_ex(const char *path, sl_params *ps, const sl_load_opts *opts);
/* Reads one metadata value into buf (cap bytes with the NUL). False if the file is bad, the
 * key is absent (SL_ERR_FORMAT) or the value does not fit (SL_ERR_ARG). */
bool sl_read_meta(const char *path, const char *key, char *buf, size_t cap);

/* Training checkpoints: parameters, the optimizer's state tensors ("optim.m.<param>",
 * "optim.v.<param>" and "optim.step.<param>" for AdamW, "optim.momentum.<param>" for SGD),
 * its type, step count and settings ("optim.type", "optim.step", "optim.beta1", ...), and the
 * caller's metadata (data position, RNG state as hex, ...), so that resuming continues bitwise
 * identically. Loading fails if the optimizer's type or settings differ from the file's. */
bool sl_save_training(const char *path, const sl_params *ps, const sl_optim *opt,
                      const sl_meta *meta, int n_meta);
bool sl_load_training(const char *path, sl_params *ps, sl_optim *opt);
bool sl_load_training_ex(const char *path, sl_params *ps, sl_optim *opt, const sl_load_opts *opts);

/* GPT checkpoints: every field of the config is stored in __metadata__ ("shortlong.model" =
 * "gpt", "shortlong.vocab_size", "shortlong.pos" = "alibi", ...), with the dropout RNG state
 * ("shortlong.rng"). opt may be NULL (weights only); with an optimizer the file is also a
 * training checkpoint for sl_load_training(path, m->params, opt). */
bool sl_gpt_save(const char *path, const sl_gpt *m, const sl_optim *opt, const sl_meta *extra,
                 int n_extra);
/* Reads the config of a GPT checkpoint (to compare with command-line settings, say). A missing
 * or malformed key is an error naming it. */
bool sl_gpt_read_config(const char *path, sl_gpt_config *cfg);
/* Builds a model (parameters in dtype, which must be the file's unless opts->convert_dtype)
 * from the file's config and loads its weights and dropout RNG state. NULL if the config is
 * missing, malformed or makes no valid model (every setting is checked, the context against
 * SL_GPT_MAX_CONTEXT), or the file's tensors are not exactly those the config implies (token
 * embedding, position table, T5 table, every block, head: names, shapes and dtypes); all of
 * that is checked before the model is allocated, so the model's size is bounded by the file's
 * and a hostile config cannot make the load allocate gigabytes. */
sl_gpt *sl_gpt_load(const char *path, sl_dtype dtype);
sl_gpt *sl_gpt_load_ex(const char *path, sl_dtype dtype, const sl_load_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
