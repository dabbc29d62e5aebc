/* ops/relbias.c — T5's relative position bias (Raffel et al., "Exploring the Limits of Transfer
 * Learning with a Unified Text-to-Text Transformer", JMLR 2020, section 2.1).
 *
 * Each head learns one scalar per bucket of query-key distance, and attention adds the scalar
 * of the pair's bucket to its score. Causal buckets (T5's _relative_position_bucket with
 * bidirectional=False), for the distance n = max(p_i - j, 0) of query position p_i to key j:
 *     n <  E = n_buckets / 2 (integer division):  bucket n              (exact)
 *     n >= E:  min(E + floor(log(n / E) / log(max_distance / E) * (n_buckets - E)),
 *                  n_buckets - 1)                                      (log-spaced)
 * so distances from max_distance on all share the last bucket. (T5 computes the logarithm in
 * float32, this in double; for integer distances the two differ only where the quotient is
 * within float32 rounding of an integer, which for the defaults, 32 buckets and distance 128,
 * happens only at n = 128, whose bucket is clamped to the last either way.)
 *
 * Bidirectional buckets (bidirectional=True, for encoders): half of the buckets for keys at or
 * before the query, half for keys after it, each half the causal rule over |p_i - j| with
 * n_buckets / 2 buckets (T5 halves num_buckets, then adds it for keys after the query).
 *
 * sl_t5_bias builds the bias (H, Tq, Tk) from the table (H, n_buckets); its backward adds each
 * bias gradient into the bucket it was read from. */
#include "internal.h"

#include <math.h>

enum { GRAIN_ELEMS = 1 << 15 }; /* elements per parallel chunk, at least */

/* ---------------------------------------------------------------- buckets */

static bool check_buckets(const char *op, int n_buckets, int max_distance)
{
    if (n_buckets < 2)
        return sl_set_error(SL_ERR_ARG, "%s: n_buckets %d must be >= 2", op, n_buckets);
    if (max_distance <= n_buckets / 2)
        return sl_set_error(SL_ERR_ARG, "%s: max_distance %d must exceed the %d exact buckets "
                            "(n_buckets %d / 2)", op, max_distance, n_buckets / 2, n_buckets);
    return true;
}

/* Bidirectional buckets: two halves of n_buckets / 2, each a valid causal set. */
static bool check_buckets_bidir(const char *op, int n_buckets, int max_distance)
{
    if (n_buckets < 4)
        return sl_set_error(SL_ERR_ARG, "%s: n_buckets %d must be >= 4 (two halves of >= 2)", op,
                            n_buckets);
    if (max_distance <= n_buckets / 4)
        return sl_set_error(SL_ERR_ARG, "%s: max_distance %d must exceed the %d exact buckets "
                            "of each half (n_buckets %d / 4)", op, max_distance, n_buckets / 4,
                            n_buckets);
    return true;
}

/* The bucket of distance n (arguments checked). */
static int bucket_of(int64_t n, int n_buckets, int max_distance)
{
    int exact = n_buckets / 2;
    if (n < exact) return n < 0 ? 0 : (int)n;
    double r = log((double)n / exact) / log((double)max_distance / exact) * (n_buckets - exact);
    return r >= n_buckets - 1 - exact ? n_buckets - 1 : exact + (int)r;
}

int sl_t5_bucket(int64_t n, int n_buckets, int max_distance)
{
    if (!check_buckets("sl_t5_bucket", n_buckets, max_distance)) return -1;
    return bucket_of(n, n_buckets, max_distance);
}

/* The bidirectional bucket of n = p_i - j (arguments checked for n_buckets / 2). */
static int bucket_bidir_of(int64_t n, int n_buckets, int max_distance)
{
    int half = n_buckets / 2;
    return n < 0 ? half + bucket_of(-n, half, max_distance) : bucket_of(n, half, max_distance);
}

int sl_t5_bucket_bidirectional(int64_t n, int n_buckets, int max_distance)
{
    if (!check_buckets_bidir("sl_t5_bucket_bidirectional", n_buckets, max_distance)) return -1;
    return bucket_bidir_of(n, n_buckets, max_distance);
}

/* ---------------------------------------------------------------- kernels */

typedef struct {
    sl_dtype dtype;
    int64_t Tq, Tk, NB;
    int64_t nmin;          /* the least distance p_i - j with a bucket of its own: 0 causal */
    const int32_t *bucket; /* (Tk - nmin): bucket[n - nmin] for distances n in [nmin, Tk) */
    const void *table;     /* (H, NB), contiguous */
    void *out;             /* (H, Tq, Tk) */
    const void *g;         /* backward: dL/dout (H, Tq, Tk) */
    double *acc;           /* backward: (H, NB) sums */
} t5_job;

/* Rows [r0, r1) of the bias: out[h,i,j] = table[h, bucket[max(p_i - j, nmin) - nmin]],
 * p_i = Tk - Tq + i.
 * Backward, heads [h0, h1): acc[h, b] = sum of g[h,i,j] over the pairs (i, j) in bucket b, in
 * double, each head's rows summed in order by one task (the sums do not depend on threads). */
#define BUCKET_INDEX(j, n) (((n) > (j)->nmin ? (n) : (j)->nmin) - (j)->nmin)
#define T5_KERNELS(T, SUF)                                                                       \
    static void t5_forward_rows_##SUF(const t5_job *j, int64_t r0, int64_t r1)                   \
    {                                                                                            \
        for (int64_t r = r0; r < r1; r++) {                                                      \
            int64_t h = r / j->Tq, p = j->Tk - j->Tq + r % j->Tq;                                \
            const T *tab = (const T *)j->table + h * j->NB;                                      \
            T *out = (T *)j->out + r * j->Tk;                                                    \
            for (int64_t k = 0; k < j->Tk; k++) out[k] = tab[j->bucket[BUCKET_INDEX(j, p - k)]]; \
        }                                                                                        \
    }                                                                                            \
    static void t5_backward_heads_##SUF(const t5_job *j, int64_t h0, int64_t h1)                 \
    {                                                                                            \
        for (int64_t h = h0; h < h1; h++) {                                                      \
            double *acc = j->acc + h * j->NB;                                                    \
            for (int64_t i = 0; i < j->Tq; i++) {                                                \
                int64_t p = j->Tk - j->Tq + i;                                                   \
                const T *g = (const T *)j->g + (h * j->Tq + i) * j->Tk;                          \
                for (int64_t k = 0; k < j->Tk; k++)                                              \
                    acc[j->bucket[BUCKET_INDEX(j, p - k)]] += g[k];                              \
            }                                                                                    \
        }                                                                                        \
    }

T5_KERNELS(float, f32)
T5_KERNELS(double, f64)

static void t5_forward_rows(void *ctx, int64_t r0, int64_t r1)
{
    const t5_job *j = ctx;
    if (j->dtype == SL_F32) t5_forward_rows_f32(j, r0, r1);
    else t5_forward_rows_f64(j, r0, r1);
}

static void t5_backward_heads(void *ctx, int64_t h0, int64_t h1)
{
    const t5_job *j = ctx;
    if (j->dtype == SL_F32) t5_backward_heads_f32(j, h0, h1);
    else t5_backward_heads_f64(j, h0, h1);
}

/* ---------------------------------------------------------------- the op */

typedef struct {
    int64_t Tq, Tk, nmin;
    const int32_t *bucket; /* in the output's arena */
} t5_saved;

/* out[h,i,j] = table[h, bucket(i, j)], so dL/dtable[h,b] = sum over (i, j) in bucket b of
 * dL/dout[h,i,j]: a scatter-add of the bias gradient into the buckets. */
static bool t5_backward(sl_node *n)
{
    const t5_saved *s = n->saved;
    if (!n->in[0]->requires_grad) return true;
    sl_tensor *gt = sl_input_grad(n, 0);
    if (!gt) return false;
    int64_t H = gt->shape[0], NB = gt->shape[1];
    double *acc = sl_arena_alloc(sl_arena_current(), sizeof(double) * (size_t)(H * NB), 64);
    if (!acc) return false;
    memset(acc, 0, sizeof(double) * (size_t)(H * NB));
    t5_job j = {gt->dtype, s->Tq, s->Tk, NB, s->nmin, s->bucket, NULL, NULL, n->grad->data, acc};
    sl_parallel_for(H, 1, t5_backward_heads, &j);
    for (int64_t k = 0; k < H * NB; k++) {
        if (gt->dtype == SL_F32) ((float *)gt->data)[k] += (float)acc[k];
        else ((double *)gt->data)[k] += acc[k];
    }
    return true;
}

/* The bias of either kind: bidirectional buckets when bidir. */
static sl_tensor *t5_bias(const char *op, sl_tensor *table, int64_t tq, int64_t tk,
                          int max_distance, bool bidir)
{
    SL_CHECK_TENSOR(op, table);
    if (!sl__check_float(op, table)) return NULL;
    if (table->ndim != 2)
        return SL_FAIL(SL_ERR_SHAPE, "%s: table %s is not (H, n_buckets)", op,
                       sl_shape_str(table));
    int64_t H = table->shape[0], NB = table->shape[1];
    if (NB > INT32_MAX)
        return SL_FAIL(SL_ERR_SHAPE, "%s: table %s has too many buckets", op,
                       sl_shape_str(table));
    if (bidir ? !check_buckets_bidir(op, (int)NB, max_distance)
              : !check_buckets(op, (int)NB, max_distance))
        return NULL;
    if (tq < 1 || tk < 1)
        return SL_FAIL(SL_ERR_ARG, "%s: tq %lld and tk %lld must be >= 1", op, (long long)tq,
                       (long long)tk);
    int64_t nmin = bidir ? 1 - tq : 0; /* p_i - j >= (tk - tq) - (tk - 1) */
    sl_tensor *tab = sl__contig(op, table);
    sl_tensor *out = tab ? sl__new(op, table->dtype, 3, (int64_t[]){H, tq, tk}) : NULL;
    int32_t *bucket =
        out ? sl_arena_alloc(sl_arena_current(), sizeof(int32_t) * (size_t)(tk - nmin), 64)
            : NULL;
    if (!bucket) return NULL;
    for (int64_t n = nmin; n < tk; n++)
        bucket[n - nmin] = bidir ? bucket_bidir_of(n, (int)NB, max_distance)
                                 : bucket_of(n, (int)NB, max_distance);
    t5_job j = {table->dtype, tq, tk, NB, nmin, bucket, sl_ptr(tab), out->data, NULL, NULL};
    int64_t grain = GRAIN_ELEMS / tk > 1 ? GRAIN_ELEMS / tk : 1;
    sl_parallel_for(H * tq, grain, t5_forward_rows, &j);
    sl_node *n;
    if (!sl_record(&n, op, out, 1, &table, t5_backward, sizeof(t5_saved))) return NULL;
    if (n) *(t5_saved *)n->saved = (t5_saved){tq, tk, nmin, bucket};
    return out;
}

sl_tensor *sl_t5_bias(sl_tensor *table, int64_t tq, int64_t tk, int max_distance)
{
    return t5_bias("sl_t5_bias", table, tq, tk, max_distance, false);
}

sl_tensor *sl_t5_bias_bidirectional(sl_tensor *table, int64_t tq, int64_t tk, int max_distance)
{
    return t5_bias("sl_t5_bias_bidirectional", table, tq, tk, max_distance, true);
}
