/* ops/alibi_attention.h — what sl_alibi_attention (alibi_attention.c) and its kernels
 * (alibi_attention_isa.c, compiled for every SIMD level) share: the job every task reads, the
 * rules for which tiles run, and the table of one level's kernels. Not installed. */
#ifndef SL_OPS_ALIBI_ATTENTION_H
#define SL_OPS_ALIBI_ATTENTION_H

#include "internal.h"

#include <math.h>

/* ---------------------------------------------------------------- configuration */

enum { TILE = 64 };             /* queries and keys per tile */
enum { BIAS_TABLE = 2 * TILE }; /* a tile's distinct biases (2 TILE - 1), in whole vectors */


/* Everything a task needs: sizes, the inputs' element strides (last dims contiguous), the
 * outputs. Pointers are to element 0; the kernels cast them to their T. */
typedef struct {
    int64_t B, H, Hk, Tq, Tk, D, Dv;
    int64_t group; /* H / Hk: query heads per kv head */
    int64_t off;   /* Tk - Tq: query row i sits at p_i = off + i */
    int64_t nqt, nkt;
    bool causal;
    bool asym;      /* slopes_after differs from slopes (their gradients are apart) */
    int64_t window; /* 0: none */
    double scale;
    const double *slopes;         /* [H]: m, keys j <= p_i */
    const double *slopes_after;   /* [H]: m', keys j > p_i (== slopes unless asym) */
    const int32_t *len_k, *len_q; /* [B] each, or NULL: no limit */
    const int32_t *seg_q, *seg_k; /* (B, Tq), (B, Tk), or both NULL: no segments */
    const int32_t *segq_range;    /* (B, nqt, 2): min and max of seg_q over each query tile */
    const int32_t *segk_range;    /* (B, nkt, 2): the same over each key tile */
    /* Tensors as (b, head, position, d): element 0 and the element strides of the first three
     * dims (the last is contiguous), so that heads may lie side by side in rows of (B, T, .):
     * sl_alibi_attention_packed reads q, k, v and writes out, dq, dk, dv there. */
    const void *q, *k, *v;
    int64_t qs[3], ks[3], vs[3];
    void *o; /* (B, H, Tq, Dv) at os */
    int64_t os[3];
    void *lse;        /* (B, H, Tq) contiguous, or NULL when nothing will run backward */
    const void *dout; /* dL/dout, (B, H, Tq, Dv) at dos */
    int64_t dos[3];
    void *drow;         /* (B, H, Tq) contiguous: D_i = dO_i . O_i */
    void *dq, *dk, *dv; /* gradients to accumulate into, at dqs, dks, dvs; NULL if not wanted */
    int64_t dqs[3], dks[3], dvs[3];
    /* the gradient is new (sl_input_grad_overwrite): the tasks write every row of it, zeros
     * where nothing flows (keys past a length, rows no tile reaches), instead of adding */
    bool set_q, set_k, set_v;
    double *dslope_part; /* (H, B, nqt): per-task shares of dL/dslope, or NULL; asym: then
                            (H, B, nqt) shares of dL/dslope_after */
} attn_job;

/* The offset of element (b, h, i, 0) of a tensor at strides s. */
static inline int64_t at3(const int64_t s[3], int64_t b, int64_t h, int64_t i)
{
    return b * s[0] + h * s[1] + i * s[2];
}

/* ---------------------------------------------------------------- which tiles run
 *
 * Positions: query i at p = off + i, key j at j. A pair is visible when j < len_k[b],
 * p < len_q[b], j <= p (causal), p - j < W (causal) or |p - j| < W (bidirectional), and the
 * segment ids match. */

/* How many of the n query rows from position p0 are within row b's query length. */
static inline int valid_queries(const attn_job *j, int64_t b, int64_t p0, int n)
{
    if (!j->len_q) return n;
    int64_t v = j->len_q[b] - p0;
    return v <= 0 ? 0 : v < n ? (int)v : n;
}

/* Keys [*lo, *hi) that the nq queries from position p0 of row b may see, by the key length,
 * causality and the window (empty when *lo >= *hi). */
static inline void key_span(const attn_job *j, int64_t b, int64_t p0, int nq, int64_t *lo, int64_t *hi)
{
    int64_t l = 0, h = j->len_k ? j->len_k[b] : j->Tk, last = p0 + nq - 1;
    if (j->causal && last + 1 < h) h = last + 1;
    if (j->window) {
        if (p0 - j->window + 1 > l) l = p0 - j->window + 1;
        if (!j->causal && last + j->window < h) h = last + j->window;
    }
    *lo = l;
    *hi = h;
}

/* Query positions [*lo, *hi) of row b that may see the nk keys from j0. */
static inline void query_span(const attn_job *j, int64_t b, int64_t j0, int nk, int64_t *lo, int64_t *hi)
{
    int64_t l = j->off, h = j->off + j->Tq, last = j0 + nk - 1;
    if (j->len_q && j->len_q[b] < h) h = j->len_q[b];
    if (j->causal && j0 > l) l = j0;
    if (j->window) {
        if (last + j->window < h) h = last + j->window;
        if (!j->causal && j0 - j->window + 1 > l) l = j0 - j->window + 1;
    }
    *lo = l;
    *hi = h;
}

/* Segment id ranges [min, max] of a query tile and a key tile: no pair can match... */
static inline bool segs_disjoint(const int32_t *a, const int32_t *b)
{
    return a[1] < b[0] || b[1] < a[0];
}

/* ... or every pair matches. */
static inline bool segs_uniform(const int32_t *a, const int32_t *b)
{
    return a[0] == a[1] && b[0] == b[1] && a[0] == b[0];
}

/* Whether no pair of keys j0 .. j0 + nk - 1 and queries at p0 .. p0 + nq - 1 is masked by
 * causality or the window, the segments being uniform, and the tile's width `along` fills
 * whole vectors of vl lanes: then the tile runs without a mask. (tile_full passes the kernel's
 * own VL.) */
static inline bool tile_full_n(const attn_job *j, int64_t j0, int nk, int64_t p0, int nq, int along,
                               bool uniform, int vl)
{
    if (along % vl || !uniform) return false;
    int64_t dmax = p0 + nq - 1 - j0, dmin = p0 - (j0 + nk - 1); /* the extremes of p - j */
    if (j->causal && dmin < 0) return false;
    if (j->window && (j->causal ? dmax : dmax > -dmin ? dmax : -dmin) >= j->window) return false;
    return true;
}
#define tile_full(j, j0, nk, p0, nq, along, uniform)                                               \
    tile_full_n((j), (j0), (nk), (p0), (nq), (along), (uniform), VL)

/* Which terms of a tile product are zeros to skip (alibi_attention_kernels.h, FN(band)). */
enum { BAND_NONE, BAND_BELOW, BAND_ABOVE };
/* Which columns of a causal tile of scores are masked for a whole block of rows, so that the
 * score product may store zeros there (FN(gemm_cols_set)): COLS_UPTO, rows are queries and
 * columns keys (keys after the queries masked); COLS_FROM, rows keys and columns queries. */
enum { COLS_ALL, COLS_UPTO, COLS_FROM };

/* One SIMD level's kernels for one dtype (alibi_attention_kernels.h). Tasks index (batch, head,
 * query tile) or (batch, kv head, key tile); scratch holds scratch_bytes(D, Dv) bytes of the
 * calling thread's tiles. */
typedef struct {
    size_t (*scratch_bytes)(int64_t D, int64_t Dv);
    void (*forward_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch);
    void (*kv_grad_task)(const attn_job *j, int64_t b, int64_t g, int64_t kt, char *scratch);
    void (*q_grad_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch);
    /* the single pass over (batch, kv head); scratch: scratch_bytes(D, Dv) and then
     * group x Tq x D elements */
    void (*group_grad_task)(const attn_job *j, int64_t b, int64_t g, char *scratch);
    void (*row_dots)(const attn_job *j, int64_t r0, int64_t r1);
} sl__attn_kernels;

typedef struct {
    sl__attn_kernels f32, f64;
} sl__attn_level;

SL_ISA_DECLARE(extern const sl__attn_level, sl__attn_level)

#endif
