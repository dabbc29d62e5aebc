/* shortlong/ops.h — differentiable ops.
 *
 * Every op takes and returns tensors in the current arena, records itself on the autograd tape
 * when an input requires grad, and has hand-written forward and backward kernels for f32 and
 * f64. Floating inputs of one op must share a dtype (no silent promotion: use sl_to_dtype).
 * Binary elementwise ops broadcast with numpy's rules. On error an op returns NULL and records a
 * message naming the op and the shapes (see tensor.h).
 *
 * Axes may be negative (counted from the end), as in numpy.
 */
#ifndef SHORTLONG_OPS_H
#define SHORTLONG_OPS_H

#include "autograd.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- elementwise (elementwise.c) */

sl_tensor *sl_add(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_sub(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_mul(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_div(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_neg(sl_tensor *a);
sl_tensor *sl_add_scalar(sl_tensor *a, double s);
sl_tensor *sl_mul_scalar(sl_tensor *a, double s);
sl_tensor *sl_pow_scalar(sl_tensor *a, double exponent);
sl_tensor *sl_exp(sl_tensor *a);
sl_tensor *sl_log(sl_tensor *a);
sl_tensor *sl_sqrt(sl_tensor *a);
sl_tensor *sl_tanh(sl_tensor *a);
sl_tensor *sl_sigmoid(sl_tensor *a);
sl_tensor *sl_relu(sl_tensor *a);
typedef enum sl_gelu_approx { SL_GELU_ERF = 0, SL_GELU_TANH = 1 } sl_gelu_approx;
sl_tensor *sl_gelu(sl_tensor *a, sl_gelu_approx approx);
/* A copy in another dtype (f32 <-> f64; i32 -> float without grad). */
sl_tensor *sl_to_dtype(sl_tensor *a, sl_dtype dtype);

/* ------------------------------------------------- abs, clamp, minimum, maximum (minmax.c) */

/* |a|, elementwise. The gradient is g sign(a), with sign(0) = 0 (PyTorch's choice: 0 is a
 * subgradient of |x| at 0), and 0 at a NaN. f32 or f64. */
sl_tensor *sl_abs(sl_tensor *a);
/* min(max(a, lo), hi), elementwise; lo or hi may be -INFINITY / INFINITY (no bound on that
 * side); for an f32 a they are first rounded to f32. A NaN in a stays NaN. The gradient passes
 * (1) where lo <= a <= hi, the bounds included, as torch.clamp's does, and is 0 outside and at a
 * NaN. (Composed from sl_maximum and sl_minimum, a value on a bound would get g / 2 instead; so
 * it does in PyTorch.) f32 or f64. Errors (NULL): a NaN bound, lo > hi (SL_ERR_ARG). */
sl_tensor *sl_clamp(sl_tensor *a, double lo, double hi);
/* Elementwise min(a, b) and max(a, b), broadcast (numpy rules); a NaN in either gives NaN.
 * Gradient: the strictly smaller (larger) input gets g, the other 0; a tie splits g equally,
 * g / 2 to each, as torch.minimum / torch.maximum do since PyTorch 1.10 (pytorch/pytorch#59669;
 * 1.13 included): their formula is where(a == b, g / 2, g) masked to 0 where the input loses.
 * Where either is NaN neither loses, and both get g (what that formula gives). Each input's
 * gradient is summed over the dims it was broadcast along. a and b share a float dtype. Results
 * do not depend on the thread count. Errors (NULL): dtypes, shapes that do not broadcast. */
sl_tensor *sl_minimum(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_maximum(sl_tensor *a, sl_tensor *b);

/* ---------------------------------------------------------------- comparisons (compare.c) */

/* Elementwise a == b, a != b, a < b, a <= b, a > b, a >= b with broadcasting, as an i32 mask:
 * 1 where it holds, 0 elsewhere (what sl_where and sl_masked_fill take; sl_to_dtype makes it a
 * float to sum or average). a and b share a dtype: f32, f64 or i32 (no promotion). Comparisons
 * are IEEE's: a NaN is unequal to everything, itself included (sl_ne gives 1, the others 0).
 * Not differentiable: no node is recorded, whatever the inputs. Results do not depend on the
 * thread count. Errors (NULL): dtypes that differ, shapes that do not broadcast. */
sl_tensor *sl_eq(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_ne(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_lt(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_le(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_gt(sl_tensor *a, sl_tensor *b);
sl_tensor *sl_ge(sl_tensor *a, sl_tensor *b);
/* The same against a scalar: a op s, an i32 mask of a's shape. For an f32 a, s is first rounded
 * to f32 (so an f32 0.1 equals 0.1, as in PyTorch); an f64 or i32 a is compared with s exactly
 * (an i32 2 is less than 2.5). */
sl_tensor *sl_eq_scalar(sl_tensor *a, double s);
sl_tensor *sl_ne_scalar(sl_tensor *a, double s);
sl_tensor *sl_lt_scalar(sl_tensor *a, double s);
sl_tensor *sl_le_scalar(sl_tensor *a, double s);
sl_tensor *sl_gt_scalar(sl_tensor *a, double s);
sl_tensor *sl_ge_scalar(sl_tensor *a, double s);

/* ---------------------------------------------------------------- reductions (reduce.c) */

/* Reduce over n_axes axes (n_axes == 0: all axes). keepdim keeps them as size 1. */
sl_tensor *sl_sum(sl_tensor *a, int n_axes, const int *axes, bool keepdim);
sl_tensor *sl_mean(sl_tensor *a, int n_axes, const int *axes, bool keepdim);
/* Variance with `correction` subtracted from the count (0: population, 1: unbiased). */
sl_tensor *sl_var(sl_tensor *a, int n_axes, const int *axes, bool keepdim, int correction);
/* Maximum; the gradient goes to the first position of the maximum (row-major within each
 * group). A NaN is the maximum (it propagates). Empty reduced axes are an error (SL_ERR_SHAPE). */
sl_tensor *sl_max(sl_tensor *a, int n_axes, const int *axes, bool keepdim);
/* Minimum, as sl_max: the gradient goes to the first position of the minimum; a NaN is the
 * minimum (it propagates). */
sl_tensor *sl_min(sl_tensor *a, int n_axes, const int *axes, bool keepdim);
/* The index along `axis` of the first maximum (minimum) of each row, as an i32 tensor: a's shape
 * without that axis (keepdim: with it as size 1). A NaN counts as the maximum (and as the
 * minimum): a row holding one gives the index of its first NaN, as sl_max / sl_min propagate it
 * (numpy and PyTorch do the same). Not differentiable (no node is recorded). f32 or f64. Errors
 * (NULL): an axis out of range, an empty axis (SL_ERR_SHAPE), an axis longer than INT32_MAX. */
sl_tensor *sl_argmax(sl_tensor *a, int axis, bool keepdim);
sl_tensor *sl_argmin(sl_tensor *a, int axis, bool keepdim);
/* Shorthands: sum / mean of every element (a 0-d tensor). */
sl_tensor *sl_sum_all(sl_tensor *a);
sl_tensor *sl_mean_all(sl_tensor *a);

/* ---------------------------------------------------------------- matmul (matmul.c) */

/* Which engine runs matrix products in this process, for reports: "OpenBLAS <core> (<how the
 * core was chosen>)", or "shortlong <level> kernel for f32 products of <n> rows or more, ..."
 * on AVX-512 CPUs and where OpenBLAS runs kernels below the CPU's SIMD level and could not be
 * switched (ops/blas.c has the rule; SL_SGEMM=blas or =kernel, SL_BLAS_CORE=keep or =<OpenBLAS
 * core> override it). */
const char *sl_matmul_engine(void);

/* a [..., M, K] @ b [..., K, N] -> [..., M, N]; both at least 2-D; batch dims broadcast.
 * Operands whose last two dims are transposed views go to cblas as transposed, uncopied. */
sl_tensor *sl_matmul(sl_tensor *a, sl_tensor *b);

/* ---------------------------------------------------------------- linear layer (linear.c) */

typedef enum sl_activation {
    SL_ACT_NONE = 0,
    SL_ACT_GELU_TANH = 1, /* 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))), GPT-2's GELU */
} sl_activation;
/* y = act(x weight^T + bias) over the last dim: x (..., in), weight (out, in), bias (out) or
 * NULL -> (..., out). What sl_matmul, sl_add and sl_gelu(SL_GELU_TANH) compose, in one op
 * (equal to rounding: the GELU is computed in another form, below):
 * one gemm over all of x's rows (x read in place when its rows are evenly strided, weight
 * never copied unless neither of its dims is contiguous), bias and activation applied to each
 * block of rows as gemm finishes it, and a backward that accumulates dx and dweight by gemm
 * straight into their gradients (no intermediate gradient buffers besides dL/du when there is
 * an activation). Differentiable in x, weight and bias. f32 or f64 (all three alike). GELU is
 * computed as u / (1 + e^(-2 z)), z = sqrt(2/pi) (u + 0.044715 u^3), which equals the tanh form
 * without its cancellation for negative u; in f32, in vectors, within a few ulp (deep in the
 * negative tail, where gelu(u) < 1e-6 |u|, within about |2 z| ulp). Results do not depend on
 * the thread count. Errors (NULL): dtypes, a weight that is not 2-D, an x whose last dim is
 * not weight's in, a bias that is not [out], an unknown activation. */
sl_tensor *sl_linear(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act);

/* sl_linear (no activation) with its outputs split into heads of head_dim: x (B, T, in) ->
 * (B, out / head_dim, T, head_dim), y[b, p, t, d] = (x W^T + b)[b, t, p head_dim + d]. The same
 * numbers as sl_linear followed by sl_reshape to (B, T, P, head_dim), sl_permute {0, 2, 1, 3}
 * and sl_contiguous (to the last bit, the gradients too), without the copies: each block of
 * rows goes from gemm to its heads' places while in cache, and backward takes dL/dy head by head.
 * A fused q/k/v projection made so feeds sl_alibi_attention_packed in the layout its tiles read
 * in place. Errors (NULL) as sl_linear's, named "sl_linear_heads", and x not 3-D, head_dim < 1,
 * or out not a multiple of head_dim. */
sl_tensor *sl_linear_heads(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, int64_t head_dim);

/* sl_linear with a residual added: y = act(x weight^T + bias) + residual, residual of y's shape
 * and dtype (..., out). The same numbers as sl_add(residual, sl_linear(x, weight, bias, act)),
 * to the last bit, the gradients too, in one op: each block of rows gets its residual while
 * gemm's output is in cache, the sum is not a tensor of its own, and the residual's gradient
 * is dL/dy itself (handed over uncopied when nothing else has reached the residual's yet). A
 * transformer block's residual connections (x + proj(...)) so cost no pass of their own.
 * Differentiable in all four. Errors (NULL) as sl_linear's, named "sl_linear_residual", and a
 * NULL residual or one whose shape or dtype is not the output's. */
sl_tensor *sl_linear_residual(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act,
                              sl_tensor *residual);

/* ---------------------------------------------------------------- shape (shape.c) */

/* A view when the strides allow it, else a copy. One entry may be -1 (inferred). */
sl_tensor *sl_reshape(sl_tensor *a, int ndim, const int64_t *shape);
sl_tensor *sl_permute(sl_tensor *a, const int *perm); /* perm has a->ndim entries */
sl_tensor *sl_transpose(sl_tensor *a, int dim0, int dim1);
/* Elements start, start+step, ... < stop along dim (step >= 1; start/stop clamp like Python). */
sl_tensor *sl_slice(sl_tensor *a, int dim, int64_t start, int64_t stop, int64_t step);
sl_tensor *sl_narrow(sl_tensor *a, int dim, int64_t start, int64_t length);
/* Broadcast to shape (numpy rules; a view with stride 0 on the new dims). */
sl_tensor *sl_expand(sl_tensor *a, int ndim, const int64_t *shape);
sl_tensor *sl_squeeze(sl_tensor *a, int dim);
sl_tensor *sl_unsqueeze(sl_tensor *a, int dim);
sl_tensor *sl_concat(int n, sl_tensor *const *tensors, int dim);
/* a itself when already contiguous, else a contiguous copy. */
sl_tensor *sl_contiguous(sl_tensor *a);

/* ---------------------------------------------------------------- stack, split (stack.c) */

/* n tensors of one shape and dtype joined along a new dim `dim` (in [-ndim - 1, ndim], negative
 * counted from the end of the result): the result has n at dim, and its slice i there is
 * tensors[i] (sl_concat of the tensors unsqueezed at dim, in one copy). Differentiable in each
 * (each gets its slice of the gradient; a tensor given twice gets both). Any dtype. Errors
 * (NULL): n < 1, a NULL tensor (tensors[i] named), dtypes or shapes that differ, dim out of
 * range, a result of more than SL_MAX_DIMS dims. */
sl_tensor *sl_stack(int n, sl_tensor *const *tensors, int dim);
/* Cuts a along dim into n consecutive pieces of sizes[0], .., sizes[n - 1] (each >= 0, adding up
 * to a's size along dim), stored in out[0 .. n): VIEWS of a (sl_narrow), no copy: a write
 * through a piece is a write to a. Each piece is differentiable (its gradient goes to its part
 * of a's). Returns n, or -1 on error with every out[i] NULL: a NULL a (its pending error kept),
 * n < 1, sizes or out NULL, dim out of range, a negative size, sizes that do not add up. */
int sl_split(sl_tensor *a, int dim, int n, const int64_t *sizes, sl_tensor **out);
/* torch.chunk: a cut along dim into at most n views of ceil(L / n) elements each (L a's size
 * along dim), the last one smaller: as many as that takes, which may be fewer than n (L = 5,
 * n = 4 gives 2, 2, 1; L = 2, n = 5 gives 1, 1). An empty dim gives n empty views. out has room
 * for n. Returns the number of pieces, or -1 on error (as sl_split; n < 1, out NULL). */
int sl_chunk(sl_tensor *a, int dim, int n, sl_tensor **out);

/* ---------------------------------------------------------------- softmax (softmax.c) */

sl_tensor *sl_softmax(sl_tensor *a, int axis);
sl_tensor *sl_log_softmax(sl_tensor *a, int axis);

/* ---------------------------------------------------------------- layer norm (layer_norm.c) */

/* Normalises over the last dim: (x - mean) / sqrt(var + eps) * weight + bias.
 * weight and bias are [C] and may be NULL (no affine part). */
sl_tensor *sl_layer_norm(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, double eps);

/* ---------------------------------------------------------------- embedding (embedding.c) */

/* weight [V, D], indices i32 [...] -> [..., D]. An index outside [0, V) is SL_ERR_INDEX. */
sl_tensor *sl_embedding(sl_tensor *weight, sl_tensor *indices);

/* ------------------------------------------------------------- cross-entropy (cross_entropy.c) */

/* logits [..., C], targets i32 [...] -> mean over targets != ignore_index of
 * -log_softmax(logits)[target] (a 0-d tensor). Pass SL_NO_IGNORE to count every target.
 * A target outside [0, C) that is not ignore_index is SL_ERR_INDEX. If every target is ignored
 * (or there are none), the loss is 0 and the gradient to logits is 0. */
#define SL_NO_IGNORE INT32_MIN
sl_tensor *sl_cross_entropy(sl_tensor *logits, sl_tensor *targets, int32_t ignore_index);

/* ---------------------------------------------------------------- dropout (dropout.c) */

/* Zeroes each element with probability p and scales the rest by 1/(1-p), drawing from rng.
 * Identity when !train or p == 0. */
sl_tensor *sl_dropout(sl_tensor *x, double p, sl_rng *rng, bool train);

/* ---------------------------------------------------------------- gather (gather.c) */

/* torch.gather: index (i32) has a's ndim and, off `axis`, sizes no larger than a's; y has
 * index's shape, and y[i_0, .., i_n] = a[i_0, .., index[i_0, .., i_n], .., i_n] (the index at
 * position axis). E.g. the logit of each target: sl_gather(logits [N, C], 1, targets [N, 1]).
 * Differentiable in a: the gradient is scattered back and added (an element picked twice gets
 * both contributions). a may be f32, f64 or i32 (no gradient), the index any strides (read in
 * place). Results do not depend on the thread count. Errors (NULL): an index not i32
 * (SL_ERR_DTYPE), shapes that do not fit (SL_ERR_SHAPE), an index value outside [0, a's size
 * along axis), negative ones included (SL_ERR_INDEX, naming the value and its position:
 * "sl_gather: index 4 at [1,0] is out of range [0, 4) along dim 1 of a [2,4]"). */
sl_tensor *sl_gather(sl_tensor *a, int axis, sl_tensor *index);
/* Whole slices of a along axis: y has a's shape with index's length at axis, and
 * y[.., i, ..] = a[.., index[i], ..], index a 1-D i32 tensor (e.g. rows of a batch, in the order
 * of a permutation). Differentiable in a as sl_gather (repeated indices accumulate). Errors
 * (NULL): an index that is not 1-D i32 (SL_ERR_DTYPE), a value outside [0, a's size along axis)
 * (SL_ERR_INDEX: "... index 3 at position 1 is out of range [0, 3) along dim 0 of a [3,2]"). */
sl_tensor *sl_index_select(sl_tensor *a, int axis, sl_tensor *index);

/* ---------------------------------------------------------------- selection (select.c) */

/* cond ? a : b elementwise, broadcast; cond is i32 (non-zero = true). */
sl_tensor *sl_where(sl_tensor *cond, sl_tensor *a, sl_tensor *b);
/* x with value where mask (i32, broadcast to x) is non-zero. */
sl_tensor *sl_masked_fill(sl_tensor *x, sl_tensor *mask, double value);

/* ---------------------------------------------------------------- ALiBi attention (alibi_attention.c) */

/* The ALiBi slope of head h (0-based) of n_heads (Press, Smith, Lewis, "Train Short, Test Long",
 * whose heads count from 1). n_heads a power of two: 2^(-8 (h + 1) / n_heads), so 8 heads get
 * 1/2, 1/4, ..., 1/256. Otherwise, with c the largest power of two below n_heads: the c slopes
 * of c heads, then the slopes of 2c heads at odd positions, 2^(-4k/c) for k = 1, 3, 5, ...
 * (12 heads: 1/2, ..., 1/256, 0.7071, 0.3536, 0.1768, 0.0884). NAN + SL_ERR_ARG for n_heads < 1
 * or h outside [0, n_heads). */
double sl_alibi_slope(int h, int n_heads);
/* All n_heads slopes as a new f64 [n_heads] tensor in the current arena (a leaf without grad:
 * sl_requires_grad makes them learnable). NULL + SL_ERR_ARG for n_heads < 1. */
sl_tensor *sl_alibi_slopes(int n_heads);

/* Options of sl_alibi_attention. A zero-initialised struct (or a NULL opts pointer) is plain
 * causal ALiBi with scale 1/sqrt(D). Tensor fields: NULL or SL_NONE is "absent" (a NULL here is
 * not taken for a failed call, so check the tensors you put in before the call). Positions, as
 * below: query row i at p_i = Tk - Tq + i, key j at j. A key j is visible to query row i of
 * batch row b when every rule in force holds:
 *     causal:         j <= p_i                      (bidirectional: no such rule)
 *     key_lengths:    j < key_lengths[b]
 *     query_lengths:  p_i < query_lengths[b]        (else row i sees nothing)
 *     segments:       key_segments[b,j] == query_segments[b,i]
 *     window W > 0:   p_i - j < W (causal), |p_i - j| < W (bidirectional)
 * A query row that sees no key (a padding row, a row whose segment has no key in range, ...)
 * outputs 0 (not NaN) and passes no gradient to anything. */
typedef struct sl_alibi_opts {
    bool bidirectional; /* false: causal (keys j <= p_i); true: no causal rule (an encoder) */
    double scale;       /* multiplies q . k (not the bias); 0: 1/sqrt(D) */
    /* Sliding window: 0 (or a width no distance reaches): none. With W >= 1 a query sees the
     * W keys p_i - W < j <= p_i (causal) or the 2W - 1 keys |p_i - j| < W (bidirectional).
     * Key tiles wholly outside the window are skipped: time O(Tq W), not O(Tq Tk). Composes
     * with a KV cache (positions are absolute). Negative: an error. */
    int64_t window;
    /* Padded batches: i32 [B], values >= 0, in positions (like j and p_i). Keys at
     * j >= key_lengths[b] are masked; query rows at p_i >= query_lengths[b] output 0 and pass
     * no gradient. A value past Tk counts as Tk (so a row's full length may be passed while
     * decoding). For a padded self-attention batch pass the same tensor to both. Absent: every
     * key / every query row is valid. */
    sl_tensor *key_lengths;
    sl_tensor *query_lengths;
    /* Packed documents: segment ids, any i32 values, key_segments [B, Tk] and query_segments
     * [B, Tq]; a query sees only keys of its own segment. The bias keeps using p_i - j, which
     * within one document is the distance inside it. query_segments absent: each query takes
     * the id of the key at its position, key_segments[b, p_i] (needs Tq <= Tk), which is what
     * self-attention and a KV cache want. query_segments without key_segments: an error. Tiles
     * whose ranges of ids do not meet are skipped (ids increasing along a row, as packing gives,
     * make that O(document length) keys per query). */
    sl_tensor *key_segments;
    sl_tensor *query_segments;
    /* Asymmetric bidirectional ALiBi: [H] slopes m'_h for keys after the query, so that the
     * bias is -m_h (p_i - j) for j <= p_i and -m'_h (j - p_i) for j > p_i; f32 or f64 whatever
     * q's dtype, differentiable (its gradient is -sum_{j > p_i} dS_ij (j - p_i) per head, while
     * slopes then gets only the j <= p_i part). Absent: m' = m (symmetric). Needs
     * bidirectional: in causal mode every key after the query is masked, and passing it is an
     * error. Why and how to pick them: nn.h, "Choosing ALiBi's slopes for an encoder". */
    sl_tensor *slopes_after;
} sl_alibi_opts;

/* Fused multi-head attention with ALiBi:
 *     out[b,h,i,:] = sum_j softmax_j(scale * q[b,h,i,:] . k[b,g,j,:] - m_h * (p_i - j)) v[b,g,j,:]
 * with q (B, H, Tq, D), k (B, Hk, Tk, D), v (B, Hk, Tk, Dv) -> out (B, H, Tq, Dv), over the
 * keys visible to query i (sl_alibi_opts: causal by default; windows, padding and segments).
 *   - Grouped-query attention: H is a multiple of Hk; query head h reads kv head
 *     g = h / (H / Hk) (Hk = 1: multi-query attention).
 *   - Query row i sits at absolute position p_i = Tk - Tq + i (bottom-right aligned), so one
 *     decoding step against a cache of Tk keys is a call with Tq = 1. Causal mode needs
 *     Tq <= Tk and masks keys j > p_i; bidirectional mode uses -m_h |p_i - j| (or -m'_h (j - p_i)
 *     after the query with opts->slopes_after) and no causal mask.
 *   - slopes: [H], f32 or f64 whatever q's dtype (the bias is computed inside the kernel from
 *     integer positions, in the dtype of q); SL_NONE: the paper's, sl_alibi_slope(h, H) (NULL
 *     is a failed call's result: NULL back, its error kept). Zero slopes give plain
 *     scaled-dot-product attention. A slopes tensor that requires grad gets the gradient
 *     -sum_ij dS_ij (p_i - j) per head (|p_i - j| bidirectional; only the j <= p_i part when
 *     slopes_after is given): learnable slopes.
 *   - opts NULL: causal, scale 1/sqrt(D), no masks.
 * q, k, v share a float dtype, the output's; any strides (views such as a [B,T,H,D] tensor
 * permuted to [B,H,T,D] are taken as they are; a tensor whose positions are not contiguous rows
 * is copied head by head into the calling thread's scratch before the tiles read it, O(B T H D),
 * since the tiles would otherwise wait on memory). Differentiable in q, k, v, slopes and
 * opts->slopes_after. Memory: besides the output, one log-sum-exp per query row (kept for
 * backward), a copy of the lengths and segment ids, those head-major copies, and a few tiles of
 * scratch per thread; nothing of size Tq x Tk, forward or backward. Results do not depend on
 * the thread count, and repeat bitwise. In f32 the tiles flush subnormal values to zero (a
 * product or sum below 2^-126, which ALiBi's far keys produce in training, would cost a
 * microcode assist each on x86): a result differs from IEEE arithmetic's by at most about
 * Tk x 1.2e-38; the calling thread's floating-point mode is left as it was. f64 is IEEE.
 * Errors (NULL): dtypes that differ or are not float, shapes that do not fit (named, e.g.
 * "sl_alibi_attention: q [2,8,16,64] and k [2,3,16,64]: 8 query heads are not a multiple of 3
 * kv heads"), Tq > Tk in causal mode, slopes or slopes_after of the wrong length or dtype, a
 * non-finite scale, a negative window, lengths or segment ids that are not i32 of their shape,
 * a negative length, slopes_after in causal mode, query_segments alone. */
sl_tensor *sl_alibi_attention(sl_tensor *q, sl_tensor *k, sl_tensor *v, sl_tensor *slopes,
                              const sl_alibi_opts *opts);

/* sl_alibi_attention on heads packed side by side, as one Linear makes them for
 * self-attention: qkv (B, T, (H + 2 Hk) D) holds, along its last dim, the H query heads, then the
 * Hk key heads, then the Hk value heads, D elements each; the result is (B, T, H D), the heads'
 * outputs side by side (what the output projection reads). It equals splitting qkv with
 * sl_narrow, sl_reshape and sl_permute into q (B, H, T, D), k and v (B, Hk, T, D), calling
 * sl_alibi_attention and merging the heads back (to the last bit, the gradients too when qkv's
 * starts at zero; tests/test_attention_packed.c), without the copies that
 * splitting and merging cost in forward and backward: the kernel reads the heads where they lie
 * and writes the output and qkv's gradient in place. n_kv_heads 0 means n_heads; slopes and
 * opts as for sl_alibi_attention (Tq = Tk = T). Differentiable in qkv, slopes and
 * opts->slopes_after. qkv may also be 4-D heads-major, (B, H + 2 Hk, T, D), as sl_linear_heads
 * makes it: then the tiles read each head's rows where they lie, with no copy at all. Errors
 * (NULL) as sl_alibi_attention's, named "sl_alibi_attention_packed", and a last dim that is not
 * a multiple of H + 2 Hk (3-D) or a head count that is not H + 2 Hk (4-D). */
sl_tensor *sl_alibi_attention_packed(sl_tensor *qkv, int n_heads, int n_kv_heads,
                                     sl_tensor *slopes, const sl_alibi_opts *opts);

/* ------------------------------------------------- positional methods (rotary.c, relbias.c) */

#define SL_ROTARY_BASE 10000.0 /* the frequency base of sinusoidal and rotary positions */

/* Vaswani et al.'s sinusoidal positions (T, C) for positions pos0 .. pos0 + T - 1, a new
 * tensor without grad: PE[t, 2i] = sin(p w_i), PE[t, 2i + 1] = cos(p w_i), p = pos0 + t,
 * w_i = 10000^(-2i/C), computed in double at any position. Errors (NULL): a non-float dtype,
 * T or C < 1, pos0 outside [0, 2^52]. */
sl_tensor *sl_sinusoidal(sl_dtype dtype, int64_t pos0, int64_t T, int64_t C);

/* Rotary position embedding (RoPE, Su et al.): x (B, H, T, D), D even, -> the same shape, row
 * x[b,h,t,:] at position p = pos0 + t rotated pair by pair by the angles p w_i,
 * w_i = base^(-2i/D):
 *     y[i]       = x[i] cos(p w_i) - x[i + D/2] sin(p w_i)
 *     y[i + D/2] = x[i] sin(p w_i) + x[i + D/2] cos(p w_i)
 * for i in [0, D/2): the "half-split" pairs (i, i + D/2) of GPT-NeoX and LLaMA, not RoFormer's
 * interleaved (2i, 2i + 1). Rotated queries and keys give scores that depend on positions only
 * through their difference. With a KV cache, pos0 is the number of cached positions. Angles
 * are computed in double. x may have any strides; differentiable in x (the backward rotates
 * the gradient back). Errors (NULL): a non-float dtype, x not 4-D or D odd, pos0 outside
 * [0, 2^52], a base that is not finite and > 0. */
sl_tensor *sl_rotary(sl_tensor *x, int64_t pos0, double base);

/* T5's causal relative-position bucket (Raffel et al., _relative_position_bucket with
 * bidirectional=False) of distance n = p_i - j from a query to a key (n <= 0: bucket 0): with
 * E = n_buckets / 2, distances below E have a bucket each; the rest are log-spaced,
 * E + floor(log(n / E) / log(max_distance / E) * (n_buckets - E)), clamped to n_buckets - 1, so
 * every distance from max_distance on shares the last bucket. T5's defaults: 32 buckets,
 * max_distance 128. -1 + SL_ERR_ARG if n_buckets < 2 or max_distance <= n_buckets / 2. */
int sl_t5_bucket(int64_t n, int n_buckets, int max_distance);

/* T5's relative position bias: table (H, n_buckets) -> bias (H, tq, tk) with
 *     bias[h,i,j] = table[h, sl_t5_bucket(p_i - j, n_buckets, max_distance)]
 * and query row i at position p_i = tk - tq + i (bottom-right aligned, as in
 * sl_alibi_attention: decoding tq new queries against tk cached keys). Add it to the scaled
 * scores (it broadcasts against (B, H, tq, tk)) and mask keys j > p_i. Differentiable in table:
 * each bias gradient is added into the bucket it was read from (summed in double). Errors
 * (NULL): a non-float table, a table that is not 2-D, bad buckets (as sl_t5_bucket),
 * tq or tk < 1. */
sl_tensor *sl_t5_bias(sl_tensor *table, int64_t tq, int64_t tk, int max_distance);

/* T5's bidirectional bucket (_relative_position_bucket with bidirectional=True, for encoders)
 * of the signed distance n = p_i - j: the first n_buckets / 2 buckets for keys at or before
 * the query (n >= 0), the next n_buckets / 2 for keys after it (n < 0), each half the causal
 * rule over |n| with n_buckets / 2 buckets:
 *     n >= 0:  sl_t5_bucket(n, n_buckets / 2, max_distance)
 *     n < 0:   n_buckets / 2 + sl_t5_bucket(-n, n_buckets / 2, max_distance)
 * (T5's encoder: 32 buckets, 16 each way, 8 of them exact, max_distance 128.) -1 + SL_ERR_ARG
 * if n_buckets < 4 or max_distance <= n_buckets / 4. */
int sl_t5_bucket_bidirectional(int64_t n, int n_buckets, int max_distance);
/* sl_t5_bias with bidirectional buckets: bias[h,i,j] = table[h, sl_t5_bucket_bidirectional(
 * p_i - j, n_buckets, max_distance)], p_i = tk - tq + i; no mask to add. Differentiable in
 * table; errors as sl_t5_bias, with the buckets checked as sl_t5_bucket_bidirectional's. */
sl_tensor *sl_t5_bias_bidirectional(sl_tensor *table, int64_t tq, int64_t tk, int max_distance);

/* ------------------------------------ methods after ALiBi (kerple.c, sandwich.c, fire.c) */

/* The biases below are (H, tq, tk) tensors to add to the scaled scores q . k / sqrt(D), like
 * sl_t5_bias's, for tq queries aligned bottom-right to tk keys (query row i at position
 * p_i = tk - tq + i). Each is defined for keys on both sides of the query (a causal caller
 * masks the keys after it). Results do not depend on the thread count. */

/* KERPLE's logarithmic bias (Chi et al., NeurIPS 2022):
 *     bias[h,i,j] = -r1[h] log(1 + r2[h] |p_i - j|)
 * r1, r2: (H), one float dtype, the output's; positive in the paper (the caller keeps them so:
 * nn's KERPLE holds their logarithms). Differentiable in r1 and r2 (the bias gradient is summed
 * per distance in double first). Errors (NULL): shapes, dtypes, tq or tk < 1, a non-finite
 * value or r2 < 0 (SL_ERR_ARG, naming the head). */
sl_tensor *sl_kerple_bias(sl_tensor *r1, sl_tensor *r2, int64_t tq, int64_t tk);

/* Sandwich's parameter-free bias (Chi et al., ACL 2023): the inner product of two sinusoidal
 * position embeddings of dimension dim, less its value at distance 0, scaled per head:
 *     bias[h,i,j] = (sum_{k=1}^{dim/2} cos((p_i - j) w_k) - dim/2) H / (8 (h + 1)),
 *     w_k = 10000^(-2k/dim), h = 0 .. H - 1
 * (so 0 at distance 0, negative elsewhere), computed in double. A new tensor without grad.
 * Errors (NULL): a non-float dtype, n_heads < 1, dim odd or < 2, tq or tk < 1. */
sl_tensor *sl_sandwich_bias(sl_dtype dtype, int n_heads, int64_t dim, int64_t tq, int64_t tk);

/* FIRE (Li et al., ICLR 2024): a learned function of the distance normalised by the query's
 * position,
 *     bias[h,i,j] = f_h(u),  u = psi(|p_i - j|) / (psi(max(p_i, L)) + SL_FIRE_EPS),
 *     psi(x) = log(|c| x + 1),  L = |l_mult| l_init,
 *     f(u) = fc2_weight relu(fc1_weight u + fc1_bias) + fc2_bias        (an MLP, 1 -> W -> H)
 * as the paper's reference implementation computes it. Differentiable in every weight. */
#define SL_FIRE_EPS 1e-6
typedef struct sl_fire_weights {
    sl_tensor *fc1_weight; /* (W, 1) */
    sl_tensor *fc1_bias;   /* (W) */
    sl_tensor *fc2_weight; /* (H, W) */
    sl_tensor *fc2_bias;   /* (H) */
    sl_tensor *c;          /* (1) */
    sl_tensor *l_mult;     /* (1): the threshold is |l_mult| l_init positions */
} sl_fire_weights;
/* The weights share one float dtype, the output's. Errors (NULL): a weight of the wrong shape
 * or dtype (all six named), a non-finite c or l_mult, l_init not finite and >= 0, tq < 1 or
 * tq > tk (every query position must be >= 0). */
sl_tensor *sl_fire_bias(const sl_fire_weights *w, double l_init, int64_t tq, int64_t tk);

#ifdef __cplusplus
}
#endif
#endif
