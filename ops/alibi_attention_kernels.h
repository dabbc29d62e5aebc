/* ops/alibi_attention_kernels.h — the tile kernels of sl_alibi_attention, written once over a
 * type T and included by alibi_attention.c with T = float and T = double (SUF: f32, f64).
 * VEC is T's SIMD vector of VL lanes, IVEC the integer vector a comparison of two VECs gives,
 * and FN(vexp) the exponential of a VEC.
 *
 * Every tile is (BQ queries) x (BK keys); a tile of scores s lives in scratch as BQ rows of BK.
 * In the comments: x_ij = scale * q_i . k_j + bias_ij is the logit, bias_ij = -m (p_i - j)
 * (causal, keys j <= p_i) or -m |p_i - j| (bidirectional), P the softmax of x over j, and
 * lse_i = log sum_j exp(x_ij), so that P_ij = exp(x_ij - lse_i). */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)
#define VEC CAT(vec, SUF)
#define IVEC CAT(ivec, SUF)
#define VL ((int)(VEC_BYTES / sizeof(T)))

static inline VEC FN(vload)(const T *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void FN(vstore)(T *p, VEC v) { memcpy(p, &v, sizeof v); }

static inline VEC FN(vsplat)(T x) { return (VEC){0} + x; }

/* mask ? a : b, lane by lane (mask lanes are all ones or all zeros). */
static inline VEC FN(vsel)(IVEC mask, VEC a, VEC b)
{
    return (VEC)(((IVEC)a & mask) | ((IVEC)b & ~mask));
}

static inline T FN(hmax)(VEC v)
{
    T m = v[0];
    for (int i = 1; i < VL; i++) m = v[i] > m ? v[i] : m;
    return m;
}

static inline double FN(hsum)(VEC v)
{
    double s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

/* ---------------------------------------------------------------- tile products */

/* One register block of gemm_acc: mr rows by nv vectors of C (compile-time constants once
 * inlined, so the accumulators live in registers). */
static inline __attribute__((always_inline)) void
FN(gemm_block)(int mr, int nv, int K, const T *restrict a, int64_t ars, int64_t acs,
               const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    VEC acc[MR][NV], bv[NV];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int n = 0; n < nv; n++) acc[r][n] = FN(vload)(c + r * ldc + n * VL);
    for (int k = 0; k < K; k++) {
#pragma GCC unroll 8
        for (int n = 0; n < nv; n++) bv[n] = FN(vload)(b + k * ldb + n * VL);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            T s = a[r * ars + k * acs];
#pragma GCC unroll 8
            for (int n = 0; n < nv; n++) acc[r][n] += s * bv[n];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int n = 0; n < nv; n++) FN(vstore)(c + r * ldc + n * VL, acc[r][n]);
}

/* C (M, N) += A (M, K) B (K, N), where A(m, k) = a[m * ars + k * acs] (A or a transposed view),
 * B and C row-major with leading dims ldb and ldc. Blocks of MR rows x NV vectors, then single
 * vectors, then scalars for the last N % VL columns. */
static void FN(gemm_acc)(int M, int N, int K, const T *restrict a, int64_t ars, int64_t acs,
                         const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    int n = 0;
    for (; n + NV * VL <= N; n += NV * VL) {
        int m = 0;
        for (; m + MR <= M; m += MR)
            FN(gemm_block)(MR, NV, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
        for (; m < M; m++)
            FN(gemm_block)(1, NV, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
    }
    for (; n + VL <= N; n += VL) {
        int m = 0;
        for (; m + MR <= M; m += MR)
            FN(gemm_block)(MR, 1, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
        for (; m < M; m++)
            FN(gemm_block)(1, 1, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
    }
    if (n < N)
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) {
                T s = a[m * ars + k * acs];
                for (int j = n; j < N; j++) c[m * ldc + j] += s * b[k * ldb + j];
            }
}

/* dst (n, BK) = src (bk, n)^T, src rows ld apart: a key tile laid out for gemm_acc's B. */
static void FN(pack_t)(T *restrict dst, const T *restrict src, int64_t ld, int bk, int n)
{
    for (int c = 0; c < bk; c++)
        for (int d = 0; d < n; d++) dst[d * BK + c] = src[c * ld + d];
}

/* s (bq, BK) = q_tile (bq, D) k_tile^T, from the packed kt (D, BK). */
static void FN(scores)(const attn_job *j, T *s, const T *q, int bq, const T *kt, int bk)
{
    memset(s, 0, sizeof(T) * (size_t)bq * BK);
    FN(gemm_acc)(bq, bk, (int)j->D, q, j->qs[2], 1, kt, BK, s, BK);
}

/* ---------------------------------------------------------------- logits and probabilities */

/* Geometry of one query row against one key tile starting at key j0. */
typedef struct {
    T d0;      /* p_i - j0, exact: positions are integers far below 2^24 */
    int valid; /* keys j0 .. j0 + valid - 1 are visible to the row */
} FN(row_geom);

static inline FN(row_geom) FN(geom)(const attn_job *j, int64_t p, int64_t j0, int bk)
{
    int64_t valid = bk;
    if (j->causal) valid = p - j0 + 1 < 0 ? 0 : p - j0 + 1 < bk ? p - j0 + 1 : bk;
    return (FN(row_geom)){(T)(p - j0), (int)valid};
}

/* The distance p_i - j of the VL keys from column c, |p_i - j| when bidirectional. */
static inline VEC FN(dist)(const attn_job *j, FN(row_geom) g, VEC col)
{
    VEC d = g.d0 - col;
    return j->causal ? d : FN(vsel)(d < 0, -d, d);
}

/* x = scale * s + bias for the VL keys from column c (col = c, c+1, ...); -inf past `valid`. */
static inline VEC FN(logits)(const attn_job *j, FN(row_geom) g, VEC s, VEC col, T scale,
                              T slope)
{
    VEC x = s * scale;
    if (slope != 0) x -= slope * FN(dist)(j, g, col);
    return FN(vsel)(col < (T)g.valid, x, FN(vsplat)(-INFINITY));
}

static inline VEC FN(iota)(void)
{
    VEC v;
    for (int i = 0; i < VL; i++) v[i] = (T)i;
    return v;
}

/* The online softmax over one key tile (keys j0 ..) for the bq rows of a query tile whose row
 * 0 sits at position p0. s holds the raw scores q_i . k_j on entry and P~_ij = exp(x_ij - m_i)
 * on return (0 for masked keys and past bk). m and l are the running max of x and sum of
 * exp(x - m); alpha_i = exp(m_old - m_new) is what row i of the output accumulator must be
 * multiplied by before this tile's P~ V is added. */
static void FN(online_softmax)(const attn_job *j, T *s, int bq, int64_t p0, int64_t j0, int bk,
                               T slope, T *m, double *l, T *alpha)
{
    const T scale = (T)j->scale;
    const VEC iota = FN(iota)();
    for (int r = 0; r < bq; r++) {
        T *row = s + (size_t)r * BK;
        FN(row_geom) g = FN(geom)(j, p0 + r, j0, bk);
        if (g.valid == 0) { /* every key of the tile is after p_i */
            memset(row, 0, sizeof(T) * BK);
            alpha[r] = 1;
            continue;
        }
        VEC mx = FN(vsplat)(-INFINITY);
        for (int c = 0; c < bk; c += VL) {
            VEC x = FN(logits)(j, g, FN(vload)(row + c), iota + (T)c, scale, slope);
            FN(vstore)(row + c, x);
            mx = FN(vsel)(x > mx, x, mx);
        }
        T tile_max = FN(hmax)(mx);
        T m_new = tile_max > m[r] ? tile_max : m[r];
        alpha[r] = FN(exp_scalar)(m[r] - m_new); /* exp(-inf) = 0 on the first tile */
        VEC sum = {0};
        for (int c = 0; c < bk; c += VL) {
            VEC p = FN(vexp)(FN(vload)(row + c) - m_new);
            FN(vstore)(row + c, p);
            sum += p;
        }
        l[r] = l[r] * alpha[r] + FN(hsum)(sum);
        m[r] = m_new;
    }
}

/* s (raw scores on entry) becomes P_ij = exp(x_ij - lse_i), 0 for masked keys and past bk. */
static void FN(probabilities)(const attn_job *j, T *s, int bq, int64_t p0, int64_t j0, int bk,
                              T slope, const T *lse)
{
    const T scale = (T)j->scale;
    const VEC iota = FN(iota)();
    for (int r = 0; r < bq; r++) {
        T *row = s + (size_t)r * BK;
        FN(row_geom) g = FN(geom)(j, p0 + r, j0, bk);
        for (int c = 0; c < bk; c += VL) {
            VEC x = FN(logits)(j, g, FN(vload)(row + c), iota + (T)c, scale, slope);
            FN(vstore)(row + c, FN(vexp)(x - lse[r]));
        }
    }
}

/* dp (dP = dO V^T on entry) becomes dS = P * (dP - D_i), 0 outside the visible keys. Returns
 * sum_ij dS_ij * dx_ij/dm = -sum_ij dS_ij (p_i - j) (|p_i - j| bidirectional) if want_slope. */
static double FN(score_grads)(const attn_job *j, const T *p, T *dp, int bq, int64_t p0,
                              int64_t j0, int bk, const T *drow, bool want_slope)
{
    const VEC iota = FN(iota)();
    double dslope = 0;
    for (int r = 0; r < bq; r++) {
        const T *prow = p + (size_t)r * BK;
        T *row = dp + (size_t)r * BK;
        FN(row_geom) g = FN(geom)(j, p0 + r, j0, bk);
        VEC acc = {0};
        for (int c = 0; c < bk; c += VL) {
            VEC col = iota + (T)c;
            VEC ds = FN(vload)(prow + c) * (FN(vload)(row + c) - drow[r]);
            ds = FN(vsel)(col < (T)g.valid, ds, FN(vsplat)(0));
            FN(vstore)(row + c, ds);
            if (want_slope) acc -= ds * FN(dist)(j, g, col);
        }
        if (want_slope) dslope += FN(hsum)(acc);
    }
    return dslope;
}

/* ---------------------------------------------------------------- forward */

/* Tiles of the current task; pointers into the worker's scratch (see carve_scratch). */
typedef struct {
    T *s, *dp;     /* (BQ, BK) scores / probabilities, and their gradients */
    T *kt, *vt;    /* (D, BK), (Dv, BK): the key tile's k and v, transposed */
    T *acc, *acc2; /* output or gradient accumulators */
    T *m, *alpha;  /* (BQ) */
    double *l;     /* (BQ) */
} FN(tiles);

static FN(tiles) FN(tiles_of)(void *const *p)
{
    return (FN(tiles)){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]};
}

/* The forward of query tile qt of head h, batch b:
 *     for each key tile up to the diagonal: s = q k^T; online softmax; o~ = alpha o~ + P~ v
 *     o = o~ / l, lse = m + log l. */
static void FN(forward_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt,
                             void *const *scratch)
{
    FN(tiles) w = FN(tiles_of)(scratch);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * BQ, p0 = j->off + i0;
    const int bq = (int)(j->Tq - i0 < BQ ? j->Tq - i0 : BQ);
    const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
    const T slope = (T)j->slopes[h];
    /* causal: the last row sees keys up to p0 + bq - 1; the tiles after are never computed */
    int64_t kend = j->causal && p0 + bq < j->Tk ? p0 + bq : j->Tk;

    memset(w.acc, 0, sizeof(T) * (size_t)(bq * Dv));
    for (int r = 0; r < bq; r++) {
        w.m[r] = -INFINITY;
        w.l[r] = 0;
    }
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int bk = (int)(kend - j0 < BK ? kend - j0 : BK);
        FN(pack_t)(w.kt, k + j0 * j->ks[2], j->ks[2], bk, (int)D);
        FN(scores)(j, w.s, q, bq, w.kt, bk);
        FN(online_softmax)(j, w.s, bq, p0, j0, bk, slope, w.m, w.l, w.alpha);
        for (int r = 0; r < bq; r++)
            if (w.alpha[r] != 1)
                for (int64_t d = 0; d < Dv; d++) w.acc[r * Dv + d] *= w.alpha[r];
        FN(gemm_acc)(bq, (int)Dv, bk, w.s, BK, 1, v + j0 * j->vs[2], j->vs[2], w.acc, Dv);
    }
    int64_t row0 = (b * j->H + h) * j->Tq + i0;
    T *o = (T *)j->o + row0 * Dv;
    for (int r = 0; r < bq; r++) {
        T inv = (T)(1 / w.l[r]);
        for (int64_t d = 0; d < Dv; d++) o[r * Dv + d] = w.acc[r * Dv + d] * inv;
        if (j->lse) ((T *)j->lse)[row0 + r] = (T)(w.m[r] + log(w.l[r]));
    }
}

/* ---------------------------------------------------------------- backward */

/* D_i = sum_d dO_id O_id for rows [r0, r1) of (B * H * Tq), in double. */
static void FN(row_dots)(const attn_job *j, int64_t r0, int64_t r1)
{
    const T *o = j->o, *go = j->dout;
    T *drow = (T *)j->drow;
    for (int64_t r = r0; r < r1; r++) {
        double s = 0;
        for (int64_t d = 0; d < j->Dv; d++) s += (double)go[r * j->Dv + d] * o[r * j->Dv + d];
        drow[r] = (T)s;
    }
}

/* dK and dV of key tile kt of kv head g, batch b, summed over the group's query heads and
 * every query tile that sees the key tile:
 *     P = exp(x - lse), dV += P^T dO, dP = dO V^T, dS = P (dP - D), dK += scale dS^T Q */
static void FN(kv_grad_task)(const attn_job *j, int64_t b, int64_t g, int64_t kt,
                             void *const *scratch)
{
    FN(tiles) w = FN(tiles_of)(scratch);
    const int64_t D = j->D, Dv = j->Dv, j0 = kt * BK;
    const int bk = (int)(j->Tk - j0 < BK ? j->Tk - j0 : BK);
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1] + j0 * j->ks[2];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1] + j0 * j->vs[2];
    const bool want_k = j->dk != NULL, want_v = j->dv != NULL;
    /* causal: query rows i < j0 - off see none of these keys */
    int64_t first = j->causal && j0 - j->off > 0 ? (j0 - j->off) / BQ : 0;

    FN(pack_t)(w.kt, k, j->ks[2], bk, (int)D);
    if (want_k) FN(pack_t)(w.vt, v, j->vs[2], bk, (int)Dv);
    memset(w.acc, 0, sizeof(T) * (size_t)(bk * D));
    memset(w.acc2, 0, sizeof(T) * (size_t)(bk * Dv));
    for (int64_t h = g * j->group; h < (g + 1) * j->group; h++) {
        const T slope = (T)j->slopes[h];
        for (int64_t qt = first; qt < j->nqt; qt++) {
            const int64_t i0 = qt * BQ, row0 = (b * j->H + h) * j->Tq + i0;
            const int bq = (int)(j->Tq - i0 < BQ ? j->Tq - i0 : BQ);
            const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
            const T *go = (const T *)j->dout + row0 * Dv;
            FN(scores)(j, w.s, q, bq, w.kt, bk);
            FN(probabilities)(j, w.s, bq, j->off + i0, j0, bk, slope, (const T *)j->lse + row0);
            if (want_v) FN(gemm_acc)(bk, (int)Dv, bq, w.s, 1, BK, go, Dv, w.acc2, Dv);
            if (!want_k) continue;
            memset(w.dp, 0, sizeof(T) * (size_t)bq * BK);
            FN(gemm_acc)(bq, bk, (int)Dv, go, Dv, 1, w.vt, BK, w.dp, BK);
            FN(score_grads)(j, w.s, w.dp, bq, j->off + i0, j0, bk, (const T *)j->drow + row0,
                            false);
            FN(gemm_acc)(bk, (int)D, bq, w.dp, 1, BK, q, j->qs[2], w.acc, D);
        }
    }
    int64_t krow = (b * j->Hk + g) * j->Tk + j0;
    const T scale = (T)j->scale;
    if (want_k) {
        T *dk = (T *)j->dk + krow * D;
        for (int64_t e = 0; e < bk * D; e++) dk[e] += scale * w.acc[e];
    }
    if (want_v) {
        T *dv = (T *)j->dv + krow * Dv;
        for (int64_t e = 0; e < bk * Dv; e++) dv[e] += w.acc2[e];
    }
}

/* dQ of query tile qt of head h, batch b, and this tile's share of dL/dm_h:
 *     P = exp(x - lse), dP = dO V^T, dS = P (dP - D), dQ += scale dS K,
 *     dm_h += sum_ij dS_ij dx_ij/dm_h = -sum_ij dS_ij (p_i - j) */
static void FN(q_grad_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt,
                            void *const *scratch)
{
    FN(tiles) w = FN(tiles_of)(scratch);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * BQ, p0 = j->off + i0, row0 = (b * j->H + h) * j->Tq + i0;
    const int bq = (int)(j->Tq - i0 < BQ ? j->Tq - i0 : BQ);
    const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
    const T *go = (const T *)j->dout + row0 * Dv;
    const T slope = (T)j->slopes[h];
    const bool want_slope = j->dslope_part != NULL;
    int64_t kend = j->causal && p0 + bq < j->Tk ? p0 + bq : j->Tk;
    double dslope = 0;

    memset(w.acc, 0, sizeof(T) * (size_t)(bq * D));
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int bk = (int)(kend - j0 < BK ? kend - j0 : BK);
        FN(pack_t)(w.kt, k + j0 * j->ks[2], j->ks[2], bk, (int)D);
        FN(pack_t)(w.vt, v + j0 * j->vs[2], j->vs[2], bk, (int)Dv);
        FN(scores)(j, w.s, q, bq, w.kt, bk);
        FN(probabilities)(j, w.s, bq, p0, j0, bk, slope, (const T *)j->lse + row0);
        memset(w.dp, 0, sizeof(T) * (size_t)bq * BK);
        FN(gemm_acc)(bq, bk, (int)Dv, go, Dv, 1, w.vt, BK, w.dp, BK);
        dslope += FN(score_grads)(j, w.s, w.dp, bq, p0, j0, bk, (const T *)j->drow + row0,
                                  want_slope);
        if (j->dq) FN(gemm_acc)(bq, (int)D, bk, w.dp, BK, 1, k + j0 * j->ks[2], j->ks[2], w.acc, D);
    }
    if (j->dq) {
        T *dq = (T *)j->dq + row0 * D;
        const T scale = (T)j->scale;
        for (int64_t e = 0; e < bq * D; e++) dq[e] += scale * w.acc[e];
    }
    if (want_slope) j->dslope_part[(h * j->B + b) * j->nqt + qt] = dslope;
}

#undef VL
#undef IVEC
#undef VEC
#undef FN
#undef CAT
#undef CAT_
