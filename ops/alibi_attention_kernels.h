/* ops/alibi_attention_kernels.h — the tile kernels of sl_alibi_attention, written once over a
 * type T and included by alibi_attention.c with T = float and T = double (SUF: f32, f64).
 * VEC is T's SIMD vector of VL lanes, IVEC the integer vector a comparison of two VECs gives,
 * and FN(vexp) the exponential of a VEC.
 *
 * Every tile is TILE queries x TILE keys, held in scratch as rows of TILE elements. In the
 * comments: x_ij = scale * q_i . k_j + bias_ij is the logit, bias_ij = -m (p_i - j)
 * (causal, keys j <= p_i) or -m |p_i - j| (bidirectional), P the softmax of x over j, and
 * lse_i = log sum_j exp(x_ij), so that P_ij = exp(x_ij - lse_i). */

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

/* y = a x + b y over n elements (b = 0: y is not read; x may be y), in vectors and a tail. */
static void FN(axpby)(int64_t n, T a, const T *x, T b, T *y)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) {
        VEC v = a * FN(vload)(x + i);
        FN(vstore)(y + i, b != 0 ? v + b * FN(vload)(y + i) : v);
    }
    for (; i < n; i++) y[i] = a * x[i] + (b != 0 ? b * y[i] : 0);
}

static inline double FN(hsum)(VEC v)
{
    double s = 0;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

/* ---------------------------------------------------------------- tile products */

/* One register block of gemm: mr rows by nv vectors of C (compile-time constants once inlined,
 * so the accumulators live in registers); C = A B, or C += A B when add. */
static inline __attribute__((always_inline)) void
FN(gemm_block)(bool add, int mr, int nv, int K, const T *restrict a, int64_t ars, int64_t acs,
               const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    VEC acc[MR][NV], bv[NV];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int n = 0; n < nv; n++)
            acc[r][n] = add ? FN(vload)(c + r * ldc + n * VL) : FN(vsplat)(0);
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

/* C (M, N) = A (M, K) B (K, N), or += when add, where A(m, k) = a[m * ars + k * acs] (A or a
 * transposed view), B and C row-major with leading dims ldb and ldc. Blocks of MR rows x NV
 * vectors, then single vectors, then scalars for the last N % VL columns. */
static inline __attribute__((always_inline)) void
FN(gemm)(bool add, int M, int N, int K, const T *restrict a, int64_t ars, int64_t acs,
         const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    int n = 0;
    for (; n + NV * VL <= N; n += NV * VL) {
        int m = 0;
        for (; m + MR <= M; m += MR)
            FN(gemm_block)(add, MR, NV, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
        for (; m < M; m++)
            FN(gemm_block)(add, 1, NV, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
    }
    for (; n + VL <= N; n += VL) {
        int m = 0;
        for (; m + MR <= M; m += MR)
            FN(gemm_block)(add, MR, 1, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
        for (; m < M; m++)
            FN(gemm_block)(add, 1, 1, K, a + m * ars, ars, acs, b + n, ldb, c + m * ldc + n, ldc);
    }
    for (int m = 0; n < N && m < M; m++) {
        if (!add) memset(c + m * ldc + n, 0, sizeof(T) * (size_t)(N - n));
        for (int k = 0; k < K; k++) {
            T s = a[m * ars + k * acs];
            for (int j = n; j < N; j++) c[m * ldc + j] += s * b[k * ldb + j];
        }
    }
}

static void FN(gemm_set)(int M, int N, int K, const T *restrict a, int64_t ars, int64_t acs,
                         const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    FN(gemm)(false, M, N, K, a, ars, acs, b, ldb, c, ldc);
}

static void FN(gemm_acc)(int M, int N, int K, const T *restrict a, int64_t ars, int64_t acs,
                         const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    FN(gemm)(true, M, N, K, a, ars, acs, b, ldb, c, ldc);
}

/* dst (n, TILE) = src (rows, n)^T, src rows ld apart: a tile of q, k, v or dO laid out for
 * gemm's B. Columns from `rows` to the next vector boundary are zeroed. */
static void FN(pack_t)(T *restrict dst, const T *restrict src, int64_t ld, int rows, int n)
{
    int padded = (rows + VL - 1) / VL * VL;
    for (int c = 0; c < rows; c++)
        for (int d = 0; d < n; d++) dst[d * TILE + c] = src[c * ld + d];
    for (int d = 0; d < n; d++)
        for (int c = rows; c < padded; c++) dst[d * TILE + c] = 0;
}

/* ---------------------------------------------------------------- logits and probabilities
 *
 * Two layouts of a tile of scores. Pass 1 of backward holds S (queries, keys): a row is one
 * query, and lse_i, D_i are scalars along it. The forward and pass 2 hold S^T (keys, queries): a
 * row is one key, and the per-query statistics (max, sum, lse, D) are vectors along it, so the
 * online softmax needs no horizontal reductions.
 *
 * Along a row, dist = p_i - j steps by -1 (query rows) or +1 (key rows) per column; it is
 * exact in T (positions are integers far below 2^24). The bias uses |dist|, which is dist
 * itself wherever a causal query sees the key (dist >= 0); elsewhere the logit is masked.
 * Within a tile the bias depends on c - r alone, so each tile first tabulates its 2 TILE - 1
 * values, -slope |dist| rounded once, and a row reads them with one load: the logit is then
 * one fused multiply-add, scale * s + bias. The loops come in four copies (SPECIALISED): with
 * or without the bias (zero slopes: the benchmark's "nobias"), and with or without the mask,
 * which only the tiles on the diagonal and at the ends need. */

/* Calls f(BIAS, FULL, ...) with both flags as constants: four loops without tests inside. */
#define SPECIALISED(f, bias, full, ...)                                                          \
    ((bias) ? ((full) ? f(true, true, __VA_ARGS__) : f(true, false, __VA_ARGS__))                \
            : ((full) ? f(false, true, __VA_ARGS__) : f(false, false, __VA_ARGS__)))

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static inline VEC FN(iota)(void)
{
    VEC v;
    for (int i = 0; i < VL; i++) v[i] = (T)i;
    return v;
}

static inline VEC FN(vabs)(VEC v)
{
    VEC sign; /* -0.0: the sign bit alone (vsplat would give 0 + -0.0 = +0.0) */
    for (int i = 0; i < VL; i++) sign[i] = (T)-0.0;
    return (VEC)((IVEC)v & ~(IVEC)sign);
}

static inline VEC FN(masked)(IVEC valid, VEC x, T fill)
{
    return FN(vsel)(valid, x, FN(vsplat)(fill));
}

/* tab[u] = -slope |d00 + dir (u - (TILE - 1))|: the bias of row r, column c of a tile whose
 * row 0, column 0 is at distance d00, read at tab + (TILE - 1) - r + c; dir = +1 for key rows,
 * -1 for query rows. */
static void FN(bias_table)(T *tab, T d00, T dir, T slope)
{
    VEC u = FN(iota)();
    for (int i = 0; i < BIAS_TABLE; i += VL, u += (T)VL)
        FN(vstore)(tab + i, -slope * FN(vabs)(d00 + dir * (u - (T)(TILE - 1))));
}

/* x = scale * s + bias, bias from the row's slice of the table */
ALWAYS_INLINE VEC FN(logit)(bool bias, VEC s, const T *b, T scale)
{
    return bias ? s * scale + FN(vload)(b) : s * scale;
}

/* The lanes of a row that are in use (col < n) and, causal, visible (dist >= 0). */
static inline IVEC FN(visible)(bool causal, VEC col, VEC dist, int n)
{
    IVEC v = col < (T)n;
    return causal ? v & (dist >= 0) : v;
}

/* A tile of keys j0 .. j0 + nk - 1 and queries from position p0 needs no mask when every query
 * sees every key and `along` (the columns in use) fills whole vectors. */
static inline bool FN(tile_full)(const attn_job *j, int64_t j0, int nk, int64_t p0, int along)
{
    return along % VL == 0 && (!j->causal || j0 + nk - 1 <= p0);
}

/* Forward, key rows: the logits in place, and their max per query (column) into colmax. */
ALWAYS_INLINE void FN(logits_colmax)(bool bias, bool full, bool causal, T *st, int bk, int bq,
                                     T d00, T scale, const T *tab, T *colmax)
{
    const VEC iota = FN(iota)();
    for (int r = 0; r < bk; r++) {
        T *row = st + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        VEC col = iota, dist = (d00 - (T)r) + iota; /* p0 + c - (j0 + r) */
        for (int c = 0; c < bq; c += VL, col += (T)VL, dist += (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(row + c), b + c, scale);
            if (!full) x = FN(masked)(FN(visible)(causal, col, dist, bq), x, -INFINITY);
            FN(vstore)(row + c, x);
            VEC mx = FN(vload)(colmax + c);
            FN(vstore)(colmax + c, FN(vsel)(x > mx, x, mx));
        }
    }
}

/* Forward, one key tile (keys j0 .. j0 + bk - 1) of the online softmax for the bq queries from
 * position p0, tiles taken from the diagonal backwards: with ALiBi the nearest keys carry the
 * largest logits, so the max is found early and later tiles rarely rescale the output. st (bk, TILE) holds the raw scores k_j . q_i on entry and P~ = exp(x - m) on
 * return (0 where masked). m (TILE) is the running max of the logits per query, l its running
 * sum of exp(x - m) in double; alpha gets exp(m_old - m_new), by which the output accumulator's
 * rows must be scaled before this tile's P~ V is added (1 where the max did not change). */
static void FN(online_softmax)(const attn_job *j, T *st, int bk, int bq, int64_t p0, int64_t j0,
                               T slope, T *m, double *l, T *alpha)
{
    const int nc = (bq + VL - 1) / VL * VL;
    T colmax[TILE], colsum[TILE], tab[BIAS_TABLE];
    for (int c = 0; c < nc; c += VL) FN(vstore)(colmax + c, FN(vload)(m + c));
    if (slope != 0) FN(bias_table)(tab, (T)(p0 - j0), 1, slope);
    SPECIALISED(FN(logits_colmax), slope != 0, FN(tile_full)(j, j0, bk, p0, bq), j->causal, st,
                bk, bq, (T)(p0 - j0), (T)j->scale, tab, colmax);
    for (int c = 0; c < nc; c += VL) {
        VEC mo = FN(vload)(m + c), mn = FN(vload)(colmax + c);
        /* an unchanged max gives exactly 1, also while a query has seen no key (-inf) */
        FN(vstore)(alpha + c, FN(vsel)(mo == mn, FN(vsplat)(1), FN(vexp)(mo - mn)));
        FN(vstore)(colsum + c, FN(vsplat)(0));
        /* such a query's logits are all -inf: exp(x - 0) = 0 rather than exp(-inf + inf) */
        FN(vstore)(colmax + c, FN(masked)(mn != -INFINITY, mn, 0));
    }
    for (int r = 0; r < bk; r++) {
        T *row = st + (size_t)r * TILE;
        for (int c = 0; c < nc; c += VL) {
            VEC p = FN(vexp)(FN(vload)(row + c) - FN(vload)(colmax + c));
            FN(vstore)(row + c, p);
            FN(vstore)(colsum + c, FN(vload)(colsum + c) + p);
        }
    }
    for (int c = 0; c < bq; c++) {
        l[c] = l[c] * alpha[c] + colsum[c];
        m[c] = l[c] != 0 ? colmax[c] : -INFINITY;
    }
}

/* Pass 1, query rows: s (raw scores of the bq queries from p0 against keys from j0) becomes
 * P = exp(x - lse), 0 where masked. */
ALWAYS_INLINE void FN(probabilities_body)(bool bias, bool full, bool causal, T *s, int bq,
                                          int bk, T d00, T scale, const T *tab, const T *lse)
{
    const VEC iota = FN(iota)();
    for (int r = 0; r < bq; r++) {
        T *row = s + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        VEC col = iota, dist = (d00 + (T)r) - iota; /* p0 + r - (j0 + c) */
        for (int c = 0; c < bk; c += VL, col += (T)VL, dist -= (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(row + c), b + c, scale);
            if (!full) x = FN(masked)(FN(visible)(causal, col, dist, bk), x, -INFINITY);
            FN(vstore)(row + c, FN(vexp)(x - lse[r]));
        }
    }
}

static void FN(probabilities_rows)(const attn_job *j, T *s, int bq, int64_t p0, int64_t j0,
                                   int bk, T slope, const T *lse)
{
    T tab[BIAS_TABLE];
    if (slope != 0) FN(bias_table)(tab, (T)(p0 - j0), -1, slope);
    SPECIALISED(FN(probabilities_body), slope != 0, FN(tile_full)(j, j0, bk, p0, bk), j->causal,
                s, bq, bk, (T)(p0 - j0), (T)j->scale, tab, lse);
}

/* Pass 1: dp (dP = dO V^T on entry) becomes dS = P * (dP - D_i), 0 where masked. */
static void FN(score_grads_rows)(const attn_job *j, const T *p, T *dp, int bq, int64_t p0,
                                 int64_t j0, int bk, const T *drow)
{
    const VEC iota = FN(iota)();
    const bool full = FN(tile_full)(j, j0, bk, p0, bk), causal = j->causal;
    for (int r = 0; r < bq; r++) {
        const T *prow = p + (size_t)r * TILE;
        T *row = dp + (size_t)r * TILE;
        VEC col = iota, dist = (T)(p0 + r - j0) - iota;
        for (int c = 0; c < bk; c += VL, col += (T)VL, dist -= (T)VL) {
            VEC ds = FN(vload)(prow + c) * (FN(vload)(row + c) - drow[r]);
            if (!full) ds = FN(masked)(FN(visible)(causal, col, dist, bk), ds, 0);
            FN(vstore)(row + c, ds);
        }
    }
}

/* Pass 2, key rows: st (raw scores of keys from j0 against the bq queries from p0) becomes
 * P^T = exp(x - lse); dpt (dP^T = V dO^T) becomes dS^T = P^T * (dP^T - D), both 0 where masked.
 * Returns sum_ij dS_ij dx_ij/dm = -sum_ij dS_ij |p_i - j| if want_slope. */
ALWAYS_INLINE double FN(score_grads_body)(bool bias, bool full, bool causal, T *st, T *dpt,
                                          int bk, int bq, T d00, T scale, const T *tab,
                                          const T *lse, const T *drow, bool want_slope)
{
    const VEC iota = FN(iota)();
    VEC acc = {0};
    for (int r = 0; r < bk; r++) {
        T *prow = st + (size_t)r * TILE, *row = dpt + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        VEC col = iota, dist = (d00 - (T)r) + iota;
        for (int c = 0; c < bq; c += VL, col += (T)VL, dist += (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(prow + c), b + c, scale);
            IVEC valid = full ? (IVEC){0} : FN(visible)(causal, col, dist, bq);
            if (!full) x = FN(masked)(valid, x, -INFINITY);
            VEC p = FN(vexp)(x - FN(vload)(lse + c));
            VEC ds = p * (FN(vload)(row + c) - FN(vload)(drow + c));
            if (!full) ds = FN(masked)(valid, ds, 0);
            FN(vstore)(prow + c, p);
            FN(vstore)(row + c, ds);
            if (want_slope) acc -= ds * FN(vabs)(dist);
        }
    }
    return want_slope ? FN(hsum)(acc) : 0;
}

static double FN(score_grads_keys)(const attn_job *j, T *st, T *dpt, int bk, int bq, int64_t p0,
                                   int64_t j0, T slope, const T *lse, const T *drow,
                                   bool want_slope)
{
    T tab[BIAS_TABLE];
    if (slope != 0) FN(bias_table)(tab, (T)(p0 - j0), 1, slope);
    return SPECIALISED(FN(score_grads_body), slope != 0, FN(tile_full)(j, j0, bk, p0, bq),
                       j->causal, st, dpt, bk, bq, (T)(p0 - j0), (T)j->scale, tab, lse, drow,
                       want_slope);
}

#undef ALWAYS_INLINE
#undef SPECIALISED

/* ---------------------------------------------------------------- forward */

/* A worker's scratch, carved from one block (64-byte aligned pieces). */
typedef struct {
    T *s, *dp;      /* (TILE, TILE): scores or probabilities, and their gradients */
    T *bt, *bt2;    /* (D, TILE), (Dv, TILE): packed transposed tiles (q, k / dO, v) */
    T *acc, *acc2;  /* (TILE, max(D, Dv)), (TILE, Dv): output or gradient accumulators */
    T *m, *alpha;   /* (TILE): running max and rescaling factors; pass 2: lse, D */
    double *l;      /* (TILE): running sums */
} FN(tiles);

/* Lays the tiles out from base (NULL: only counts); returns the bytes needed. */
static size_t FN(carve)(char *base, int64_t D, int64_t Dv, FN(tiles) *w)
{
    size_t off = 0;
#define PIECE(field, type, n)                                                                    \
    do {                                                                                         \
        if (base) w->field = (type *)(base + off);                                              \
        off += (sizeof(type) * (size_t)(n) + 63) & ~(size_t)63;                                  \
    } while (0)
    PIECE(s, T, TILE * TILE);
    PIECE(dp, T, TILE * TILE);
    PIECE(bt, T, D * TILE);
    PIECE(bt2, T, Dv * TILE);
    PIECE(acc, T, TILE * (D > Dv ? D : Dv));
    PIECE(acc2, T, TILE * Dv);
    PIECE(m, T, TILE);
    PIECE(alpha, T, TILE);
    PIECE(l, double, TILE);
#undef PIECE
    return off;
}

/* The forward of query tile qt of head h, batch b: with q^T packed once,
 *     for each key tile from the diagonal back to key 0: s^T = k q^T; online softmax;
 *     o~ = alpha o~ + P~ v;  and at the end o = o~ / l, lse = m + log l. */
static void FN(forward_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * TILE, p0 = j->off + i0;
    const int bq = (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE);
    const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
    const T slope = (T)j->slopes[h];
    /* causal: the last query sees keys up to p0 + bq - 1; later tiles are never computed */
    const int64_t kend = j->causal && p0 + bq < j->Tk ? p0 + bq : j->Tk;

    FN(pack_t)(w.bt, q, j->qs[2], bq, (int)D);
    for (int c = 0; c < TILE; c++) { /* padding columns: m = 0 keeps them finite */
        w.m[c] = c < bq ? -INFINITY : 0;
        w.l[c] = 0;
    }
    const int64_t last = (kend - 1) / TILE;
    for (int64_t kt = last; kt >= 0; kt--) {
        const int64_t j0 = kt * TILE;
        const int bk = (int)(kend - j0 < TILE ? kend - j0 : TILE);
        const T *kj = k + j0 * j->ks[2], *vj = v + j0 * j->vs[2];
        FN(gemm_set)(bk, bq, (int)D, kj, j->ks[2], 1, w.bt, TILE, w.s, TILE);
        FN(online_softmax)(j, w.s, bk, bq, p0, j0, slope, w.m, w.l, w.alpha);
        if (kt == last) { /* the first tile sets the accumulator */
            FN(gemm_set)(bq, (int)Dv, bk, w.s, 1, TILE, vj, j->vs[2], w.acc, Dv);
            continue;
        }
        for (int r = 0; r < bq; r++)
            if (w.alpha[r] != 1)
                FN(axpby)(Dv, w.alpha[r], w.acc + r * Dv, 0, w.acc + r * Dv);
        FN(gemm_acc)(bq, (int)Dv, bk, w.s, 1, TILE, vj, j->vs[2], w.acc, Dv);
    }
    const int64_t row0 = (b * j->H + h) * j->Tq + i0;
    T *o = (T *)j->o + row0 * Dv;
    for (int r = 0; r < bq; r++) {
        FN(axpby)(Dv, (T)(1 / w.l[r]), w.acc + r * Dv, 0, o + r * Dv);
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

/* Pass 1: dK and dV of key tile kt of kv head g, batch b, summed over the group's query heads
 * and every query tile that sees the key tile; k^T and v^T packed once:
 *     P = exp(q k^T scale + bias - lse), dV += P^T dO, dP = dO v^T, dS = P (dP - D),
 *     dK += scale dS^T q */
static void FN(kv_grad_task)(const attn_job *j, int64_t b, int64_t g, int64_t kt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, j0 = kt * TILE;
    const int bk = (int)(j->Tk - j0 < TILE ? j->Tk - j0 : TILE);
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1] + j0 * j->ks[2];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1] + j0 * j->vs[2];
    const bool want_k = j->dk != NULL, want_v = j->dv != NULL;
    /* causal: queries at positions below j0 see none of these keys */
    const int64_t first = j->causal && j0 - j->off > 0 ? (j0 - j->off) / TILE : 0;

    FN(pack_t)(w.bt, k, j->ks[2], bk, (int)D);
    if (want_k) FN(pack_t)(w.bt2, v, j->vs[2], bk, (int)Dv);
    memset(w.acc, 0, sizeof(T) * (size_t)(bk * D));
    memset(w.acc2, 0, sizeof(T) * (size_t)(bk * Dv));
    for (int64_t h = g * j->group; h < (g + 1) * j->group; h++) {
        const T slope = (T)j->slopes[h];
        for (int64_t qt = first; qt < j->nqt; qt++) {
            const int64_t i0 = qt * TILE, p0 = j->off + i0, row0 = (b * j->H + h) * j->Tq + i0;
            const int bq = (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE);
            const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
            const T *go = (const T *)j->dout + row0 * Dv;
            FN(gemm_set)(bq, bk, (int)D, q, j->qs[2], 1, w.bt, TILE, w.s, TILE);
            FN(probabilities_rows)(j, w.s, bq, p0, j0, bk, slope, (const T *)j->lse + row0);
            if (want_v) FN(gemm_acc)(bk, (int)Dv, bq, w.s, 1, TILE, go, Dv, w.acc2, Dv);
            if (!want_k) continue;
            FN(gemm_set)(bq, bk, (int)Dv, go, Dv, 1, w.bt2, TILE, w.dp, TILE);
            FN(score_grads_rows)(j, w.s, w.dp, bq, p0, j0, bk, (const T *)j->drow + row0);
            FN(gemm_acc)(bk, (int)D, bq, w.dp, 1, TILE, q, j->qs[2], w.acc, D);
        }
    }
    const int64_t krow = (b * j->Hk + g) * j->Tk + j0;
    const T scale = (T)j->scale;
    if (want_k) {
        T *dk = (T *)j->dk + krow * D;
        FN(axpby)(bk * D, scale, w.acc, 1, dk);
    }
    if (want_v) {
        T *dv = (T *)j->dv + krow * Dv;
        FN(axpby)(bk * Dv, 1, w.acc2, 1, dv);
    }
}

/* Pass 2: dQ of query tile qt of head h, batch b, and this tile's share of dL/dm_h; q^T and
 * dO^T packed once, tiles in the key layout:
 *     P^T = exp(k q^T scale + bias - lse), dP^T = v dO^T, dS^T = P^T (dP^T - D),
 *     dQ += scale dS k,   dm_h += -sum_ij dS_ij (p_i - j) */
static void FN(q_grad_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * TILE, p0 = j->off + i0, row0 = (b * j->H + h) * j->Tq + i0;
    const int bq = (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE);
    const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
    const T slope = (T)j->slopes[h];
    const bool want_slope = j->dslope_part != NULL;
    const int64_t kend = j->causal && p0 + bq < j->Tk ? p0 + bq : j->Tk;
    double dslope = 0;

    FN(pack_t)(w.bt, q, j->qs[2], bq, (int)D);
    FN(pack_t)(w.bt2, (const T *)j->dout + row0 * Dv, Dv, bq, (int)Dv);
    for (int c = 0; c < TILE; c++) { /* lse and D along the tile's columns, 0 past bq */
        w.m[c] = c < bq ? ((const T *)j->lse)[row0 + c] : 0;
        w.alpha[c] = c < bq ? ((const T *)j->drow)[row0 + c] : 0;
    }
    memset(w.acc, 0, sizeof(T) * (size_t)(bq * D));
    for (int64_t j0 = 0; j0 < kend; j0 += TILE) {
        const int bk = (int)(kend - j0 < TILE ? kend - j0 : TILE);
        const T *kj = k + j0 * j->ks[2];
        FN(gemm_set)(bk, bq, (int)D, kj, j->ks[2], 1, w.bt, TILE, w.s, TILE);
        FN(gemm_set)(bk, bq, (int)Dv, v + j0 * j->vs[2], j->vs[2], 1, w.bt2, TILE, w.dp, TILE);
        dslope += FN(score_grads_keys)(j, w.s, w.dp, bk, bq, p0, j0, slope, w.m, w.alpha,
                                       want_slope);
        if (j->dq) FN(gemm_acc)(bq, (int)D, bk, w.dp, 1, TILE, kj, j->ks[2], w.acc, D);
    }
    if (j->dq) {
        T *dq = (T *)j->dq + row0 * D;
        const T scale = (T)j->scale;
        FN(axpby)(bq * D, scale, w.acc, 1, dq);
    }
    if (want_slope) j->dslope_part[(h * j->B + b) * j->nqt + qt] = dslope;
}

#undef VL
#undef IVEC
#undef VEC
