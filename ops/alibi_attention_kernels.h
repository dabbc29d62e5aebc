/* ops/alibi_attention_kernels.h — the tile kernels of sl_alibi_attention, written once over a
 * type T and included by alibi_attention.c with T = float and T = double (SUF: f32, f64).
 * VEC is T's SIMD vector of VL lanes, IVEC the integer vector a comparison of two VECs gives,
 * and FN(vexp) the exponential of a VEC.
 *
 * Every tile is TILE queries x TILE keys, held in scratch as rows of TILE elements. In the
 * comments: x_ij = scale * q_i . k_j + bias_ij is the logit, bias_ij = -m (p_i - j) for keys
 * j <= p_i and -m' (j - p_i) for keys after the query (bidirectional; m' = m unless asymmetric),
 * -inf where the pair is masked (causality, window, segments); P the softmax of x over j, and
 * lse_i = log sum_j exp(x_ij), so that P_ij = exp(x_ij - lse_i). A row with no visible key has
 * lse_i = +inf, which makes every P_ij of it 0. Key and query lengths never reach the tiles: the
 * tasks cut the key and query ranges short instead. ISEG is the integer type of IVEC's lanes,
 * in which the tiles hold segment ids for vector comparisons. */

#define VEC CAT(vec, SUF)
#define IVEC CAT(ivec, SUF)
#define ISEG CAT(iseg, SUF)
#define VL ((int)(VEC_BYTES / sizeof(T)))
#if T_IS_F32
#define VTRANSPOSE sl_vf_transpose
#else
#define VTRANSPOSE sl_vd_transpose
#endif

static inline VEC FN(vload)(const T *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void FN(vstore)(T *p, VEC v) { memcpy(p, &v, sizeof v); }

static inline VEC FN(vsplat)(T x) { return x - (VEC){0}; } /* as sl_vf_splat (simd.h) */

/* mask ? a : b, lane by lane (mask lanes are all ones or all zeros). */
static inline VEC FN(vsel)(IVEC mask, VEC a, VEC b)
{
    return (VEC)(((IVEC)a & mask) | ((IVEC)b & ~mask));
}

/* y = a x + b y over n elements (b = 0: y is not read; x may be y), in vectors and a tail.
 * Inlined: its rows are a head wide (a few vectors), and b is a constant at every call. */
static inline __attribute__((always_inline)) void FN(axpby)(int64_t n, T a, const T *x, T b, T *y)
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
    VEC acc[MR2][NV], bv[NV];
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

/* Causal tiles: which terms of a product are zeros that need no multiplying. In a tile that
 * straddles the causal diagonal, the probabilities and score gradients of pairs whose key is
 * after the query are exactly 0, so for A's rows m .. m + mr - 1 only part of the inner dim
 * contributes: BAND_BELOW, k < m + mr + d (rows are queries, k keys, d = p0 - j0); BAND_ABOVE,
 * k >= m - d (rows are keys, k queries). On the diagonal tile (d = 0) that halves the work of
 * the products whose inner dim runs along the masked side. */
static inline void FN(band)(int band, int64_t d, int m, int mr, int K, int *k0, int *k1)
{
    int64_t lo = 0, hi = K;
    if (band == BAND_BELOW && m + mr + d < hi) hi = m + mr + d;
    if (band == BAND_ABOVE && m - d > lo) lo = m - d;
    *k0 = (int)(lo < hi ? lo : 0);
    *k1 = (int)(lo < hi ? hi : 0);
}

/* C (M, N) = A (M, K) B (K, N), or += when add, where A(m, k) = a[m * ars + k * acs] (A or a
 * transposed view), B and C row-major with leading dims ldb and ldc; terms outside the band
 * are skipped (they are zeros). Blocks of MR rows x NV vectors (with MR > 4, then blocks of 4
 * rows: a tile's 64 rows are 10 x 6 + 4), then MR2 rows x 2 vectors, then single vectors, then
 * scalars for the last N % VL columns. */
static inline __attribute__((always_inline)) void
FN(gemm)(bool add, int band, int64_t d, int M, int N, int K, const T *restrict a, int64_t ars,
         int64_t acs, const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    int n = 0, k0, k1;
#define BLOCK(mr, nv)                                                                             \
    (FN(band)(band, d, m, mr, K, &k0, &k1),                                                      \
     FN(gemm_block)(add, mr, nv, k1 - k0, a + m * ars + k0 * acs, ars, acs, b + k0 * ldb + n,     \
                    ldb, c + m * ldc + n, ldc))
    for (; n + NV * VL <= N; n += NV * VL) {
        int m = 0;
        for (; m + MR <= M; m += MR) BLOCK(MR, NV);
        if (MR > 4)
            for (; m + 4 <= M; m += 4) BLOCK(4, NV);
        for (; m < M; m++) BLOCK(1, NV);
    }
    if (NV > 2)
        for (; n + 2 * VL <= N; n += 2 * VL) {
            int m = 0;
            for (; m + MR2 <= M; m += MR2) BLOCK(MR2, 2);
            for (; m + 4 <= M; m += 4) BLOCK(4, 2);
            for (; m < M; m++) BLOCK(1, 2);
        }
    for (; n + VL <= N; n += VL) {
        int m = 0;
        for (; m + MR <= M; m += MR) BLOCK(MR, 1);
        if (MR > 4)
            for (; m + 4 <= M; m += 4) BLOCK(4, 1);
        for (; m < M; m++) BLOCK(1, 1);
    }
#undef BLOCK
    for (int m = 0; n < N && m < M; m++) {
        if (!add) memset(c + m * ldc + n, 0, sizeof(T) * (size_t)(N - n));
        FN(band)(band, d, m, 1, K, &k0, &k1);
        for (int k = k0; k < k1; k++) {
            T s = a[m * ars + k * acs];
            for (int j = n; j < N; j++) c[m * ldc + j] += s * b[k * ldb + j];
        }
    }
}

static void FN(gemm_set)(int M, int N, int K, const T *restrict a, int64_t ars, int64_t acs,
                         const T *restrict b, int64_t ldb, T *restrict c, int64_t ldc)
{
    FN(gemm)(false, BAND_NONE, 0, M, N, K, a, ars, acs, b, ldb, c, ldc);
}

/* C (M, N) = A B as FN(gemm_set), for a tile of scores whose pairs are masked causally: in
 * blocks of MR rows, the vectors of columns that every row of the block masks are stored as
 * zeros instead of multiplied (COLS_UPTO: keys c > m + mr - 1 + d after the block's last query;
 * COLS_FROM: queries c < m - d before the block's first key; d = p0 - j0). The callers mask
 * those pairs anyway, so the tile's results keep their bits; on the causal diagonal that skips
 * 3/8 of the product. The last N % VL columns are computed whole. */
static void FN(gemm_cols_set)(int cols, int64_t d, int M, int N, int K, const T *restrict a,
                              int64_t ars, int64_t acs, const T *restrict b, int64_t ldb,
                              T *restrict c, int64_t ldc)
{
    const int nvec = N / VL;
    if (cols == COLS_ALL || nvec == 0) {
        FN(gemm_set)(M, N, K, a, ars, acs, b, ldb, c, ldc);
        return;
    }
#define COLS_BLOCK(mr, nv)                                                                       \
    FN(gemm_block)(false, mr, nv, K, a + m * ars, ars, acs, b + v * VL, ldb, c + m * ldc + v * VL, \
                   ldc)
    for (int m = 0; m < M;) {
        const int mr = M - m >= MR ? MR : MR > 4 && M - m >= 4 ? 4 : 1;
        /* the block's vectors [v0, v1): those holding a column some row of it sees */
        int64_t v0 = 0, v1 = nvec;
        if (cols == COLS_UPTO) {
            const int64_t last = m + mr - 1 + d; /* the last key column the block sees */
            v1 = last < 0 ? 0 : last / VL + 1 < nvec ? last / VL + 1 : nvec;
        } else {
            const int64_t first = m - d; /* the first query column the block sees */
            v0 = first <= 0 ? 0 : first / VL < nvec ? first / VL : nvec;
        }
        for (int r = 0; r < mr; r++) {
            for (int64_t z = 0; z < v0; z++) FN(vstore)(c + (m + r) * ldc + z * VL, FN(vsplat)(0));
            for (int64_t z = v1; z < nvec; z++)
                FN(vstore)(c + (m + r) * ldc + z * VL, FN(vsplat)(0));
        }
        int64_t v = v0;
        /* mr as a constant, so that the blocks' accumulators live in registers */
#define COLS_ROWS(mr_)                                                                           \
    do {                                                                                         \
        for (; v + NV <= v1; v += NV) COLS_BLOCK(mr_, NV);                                       \
        if (NV > 2)                                                                              \
            for (; v + 2 <= v1; v += 2) COLS_BLOCK(mr_, 2);                                      \
        for (; v < v1; v++) COLS_BLOCK(mr_, 1);                                                  \
    } while (0)
        if (mr == MR) COLS_ROWS(MR);
        else if (mr == 4) COLS_ROWS(4);
        else COLS_ROWS(1);
#undef COLS_ROWS
        m += mr;
    }
#undef COLS_BLOCK
    if (nvec * VL < N) /* the last columns, whole */
        FN(gemm)(false, BAND_NONE, 0, M, N - nvec * VL, K, a, ars, acs, b + nvec * VL, ldb,
                 c + nvec * VL, ldc);
}

/* The same with the inner dim cut to the band, setting c or adding to it. Their A is a tile of
 * scratch, its rows or its columns TILE apart: those strides become constants, so that a
 * block's broadcasts of A address it at fixed offsets instead of through registers that a block
 * of eight rows runs short of. */
#define TILE_STRIDES(add)                                                                        \
    do {                                                                                         \
        if (ars == 1 && acs == TILE)                                                             \
            FN(gemm)(add, band, d, M, N, K, a, 1, TILE, b, ldb, c, ldc);                         \
        else if (ars == TILE && acs == 1)                                                        \
            FN(gemm)(add, band, d, M, N, K, a, TILE, 1, b, ldb, c, ldc);                         \
        else                                                                                     \
            FN(gemm)(add, band, d, M, N, K, a, ars, acs, b, ldb, c, ldc);                        \
    } while (0)

static void FN(gemm_band_set)(int band, int64_t d, int M, int N, int K, const T *restrict a,
                              int64_t ars, int64_t acs, const T *restrict b, int64_t ldb,
                              T *restrict c, int64_t ldc)
{
    TILE_STRIDES(false);
}

static void FN(gemm_band_acc)(int band, int64_t d, int M, int N, int K, const T *restrict a,
                              int64_t ars, int64_t acs, const T *restrict b, int64_t ldb,
                              T *restrict c, int64_t ldc)
{
    TILE_STRIDES(true);
}
#undef TILE_STRIDES

/* dst (n, TILE) = src (rows, n)^T, src rows ld apart: a tile of q, k, v or dO laid out for
 * gemm's B. Columns from `rows` to the next vector boundary are zeroed. Blocks of VL x VL are
 * transposed in registers (ops/simd.h), the edges element by element. */
static void FN(pack_t)(T *restrict dst, const T *restrict src, int64_t ld, int rows, int n)
{
    int padded = (rows + VL - 1) / VL * VL, c = 0;
    for (; c + VL <= rows; c += VL) {
        int d = 0;
        for (; d + VL <= n; d += VL) {
            VEC r[VL];
#pragma GCC unroll 16
            for (int i = 0; i < VL; i++) r[i] = FN(vload)(src + (c + i) * ld + d);
            VTRANSPOSE(r);
#pragma GCC unroll 16
            for (int i = 0; i < VL; i++) FN(vstore)(dst + (d + i) * TILE + c, r[i]);
        }
        for (; d < n; d++)
            for (int i = 0; i < VL; i++) dst[d * TILE + c + i] = src[(c + i) * ld + d];
    }
    for (; c < rows; c++)
        for (int d = 0; d < n; d++) dst[d * TILE + c] = src[c * ld + d];
    for (int d = 0; d < n; d++)
        for (c = rows; c < padded; c++) dst[d * TILE + c] = 0;
}

/* ---------------------------------------------------------------- logits and probabilities
 *
 * Two layouts of a tile of scores. Pass 1 of backward holds S (queries, keys): a row is one
 * query, and lse_i, D_i are scalars along it. The forward and pass 2 hold S^T (keys, queries): a
 * row is one key, and the per-query statistics (max, sum, lse, D) are vectors along it, so the
 * online softmax needs no horizontal reductions.
 *
 * Along a row, dist = p_i - j steps by -1 (query rows) or +1 (key rows) per column; it is
 * exact in T (positions are integers far below 2^24). Within a tile the bias depends on c - r
 * alone, so each tile first tabulates its 2 TILE - 1 values, rounded once, and a row reads them
 * with one load: the logit is then one fused multiply-add, scale * s + bias. The loops come in
 * four copies (SPECIALISED): with or without the bias (zero slopes: the benchmark's "nobias"),
 * and with or without the mask, which only some tiles need: those on the causal diagonal, at a
 * window's edges, across a segment boundary, and at the ends (a width that does not fill whole
 * vectors). */

/* Calls f(BIAS, FULL, ...) with both flags as constants: four loops without tests inside. */
#define SPECIALISED(f, bias, full, ...)                                                          \
    ((bias) ? ((full) ? f(true, true, __VA_ARGS__) : f(true, false, __VA_ARGS__))                \
            : ((full) ? f(false, true, __VA_ARGS__) : f(false, false, __VA_ARGS__)))

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* One tile: keys j0 .. j0 + nk - 1 against the queries at positions p0 .. p0 + nq - 1 (rows
 * are keys in the key layout, queries in the query layout), and what masks its pairs when it is
 * not full. row_seg[r] is row r's segment id and col_seg[c] column c's, or row_seg is NULL
 * (no segments). */
typedef struct {
    int64_t p0, j0;
    int nq, nk;
    bool full;              /* no pair masked, and the columns fill whole vectors */
    bool causal;            /* keys j > p_i masked */
    T window;               /* 0, or keys at p_i - j >= window (|p_i - j| bidirectional) masked */
    T mb, ma;               /* the slopes for keys before (j <= p_i) and after the query */
    const int32_t *row_seg; /* (rows) */
    const ISEG *col_seg;    /* (TILE) */
} FN(tile);

static inline VEC FN(iota)(void)
{
    VEC v;
    for (int i = 0; i < VL; i++) v[i] = (T)i;
    return v;
}

static inline VEC FN(vabs)(VEC v)
{
    return (VEC)((IVEC)v & ~(IVEC)FN(vsplat)((T)-0.0)); /* -0.0: the sign bit alone */
}

static inline IVEC FN(vload_seg)(const ISEG *p)
{
    IVEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline VEC FN(masked)(IVEC valid, VEC x, T fill)
{
    return FN(vsel)(valid, x, FN(vsplat)(fill));
}

/* tab[u] = the bias at distance d = d00 + dir (u - (TILE - 1)): -mb d for d >= 0 and ma d for
 * d < 0 (a key after the query; -ma |d|), which for mb = ma is -mb |d| to the bit. The bias of
 * row r, column c of a tile whose row 0, column 0 is at distance d00 is at
 * tab + (TILE - 1) - r + c; dir = +1 for key rows, -1 for query rows. */
static void FN(bias_table)(T *tab, T d00, T dir, T mb, T ma)
{
    VEC u = FN(iota)();
    for (int i = 0; i < BIAS_TABLE; i += VL, u += (T)VL) {
        VEC d = d00 + dir * (u - (T)(TILE - 1));
        FN(vstore)(tab + i, FN(vsel)(d >= 0, -mb * d, ma * d));
    }
}

/* x = scale * s + bias, bias from the row's slice of the table */
ALWAYS_INLINE VEC FN(logit)(bool bias, VEC s, const T *b, T scale)
{
    return bias ? s * scale + FN(vload)(b) : s * scale;
}

/* The lanes of row r, columns c .. c + VL - 1, that are in use (col < n) and not masked;
 * dist = p_i - j for each lane. */
static inline IVEC FN(visible)(const FN(tile) *t, VEC col, VEC dist, int n, int r, int c)
{
    IVEC v = col < (T)n;
    if (t->causal) v &= dist >= 0;
    if (t->window != 0) v &= (t->causal ? dist : FN(vabs)(dist)) < t->window;
    if (t->row_seg) v &= FN(vload_seg)(t->col_seg + c) == (ISEG)t->row_seg[r];
    return v;
}

static inline bool FN(has_bias)(const FN(tile) *t) { return t->mb != 0 || t->ma != 0; }

/* Causal tiles on the diagonal: the vectors of a row whose every pair is masked (the key after
 * the query) are 0 after the softmax and in the score gradients, so the loops below store 0
 * there without computing them (the same bits: exp(-inf) and the masked fill are +0 too).
 * Key rows r (columns are queries): the vectors before the returned column, at most nc. */
static inline int FN(masked_before)(const FN(tile) *t, int r, int nc)
{
    const int64_t lo = r - (t->p0 - t->j0); /* queries c < lo come before key j0 + r */
    if (!t->causal || lo <= 0) return 0;
    return lo / VL * VL < nc ? (int)(lo / VL * VL) : nc;
}

/* Query rows r (columns are keys): the vectors from the returned column on, at most n. */
static inline int FN(masked_from)(const FN(tile) *t, int r, int n)
{
    const int64_t hi = r + (t->p0 - t->j0); /* keys c > hi come after query p0 + r */
    if (!t->causal) return n;
    if (hi < 0) return 0;
    return (hi / VL + 1) * VL < n ? (int)((hi / VL + 1) * VL) : n;
}

/* Forward, key rows: the logits in place, and their max per query (column) into colmax. */
ALWAYS_INLINE void FN(logits_colmax)(bool bias, bool full, const FN(tile) *t, T *st, T scale,
                                     const T *tab, T *colmax)
{
    const VEC iota = FN(iota)();
    const int bk = t->nk, bq = t->nq;
    const T d00 = (T)(t->p0 - t->j0);
    for (int r = 0; r < bk; r++) {
        T *row = st + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        const int c0 = full ? 0 : FN(masked_before)(t, r, bq); /* masked whole before c0 */
        VEC col = (T)c0 + iota, dist = (d00 - (T)r + (T)c0) + iota; /* p0 + c - (j0 + r) */
        for (int c = c0; c < bq; c += VL, col += (T)VL, dist += (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(row + c), b + c, scale);
            if (!full) x = FN(masked)(FN(visible)(t, col, dist, bq, r, c), x, -INFINITY);
            FN(vstore)(row + c, x);
            VEC mx = FN(vload)(colmax + c);
            FN(vstore)(colmax + c, FN(vsel)(x > mx, x, mx));
        }
    }
}

/* Forward, one key tile of the online softmax for the tile's queries, tiles taken from the
 * diagonal backwards: with ALiBi the nearest keys carry the largest logits, so the max is found
 * early and later tiles rarely rescale the output. st (nk, TILE) holds the raw scores
 * k_j . q_i on entry and P~ = exp(x - m) on return (0 where masked). m (TILE) is the running
 * max of the logits per query, l its running sum of exp(x - m) in double; alpha gets
 * exp(m_old - m_new), by which the output accumulator's rows must be scaled before this tile's
 * P~ V is added (1 where the max did not change). */
static void FN(online_softmax)(const attn_job *j, T *st, const FN(tile) *t, T *m, double *l,
                               T *alpha)
{
    const int bk = t->nk, bq = t->nq, nc = (bq + VL - 1) / VL * VL;
    T colmax[TILE], colsum[TILE], tab[BIAS_TABLE];
    for (int c = 0; c < nc; c += VL) FN(vstore)(colmax + c, FN(vload)(m + c));
    if (FN(has_bias)(t)) FN(bias_table)(tab, (T)(t->p0 - t->j0), 1, t->mb, t->ma);
    SPECIALISED(FN(logits_colmax), FN(has_bias)(t), t->full, t, st, (T)j->scale, tab, colmax);
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
        const int c0 = t->full ? 0 : FN(masked_before)(t, r, nc); /* as logits_colmax's */
        for (int c = 0; c < c0; c += VL) FN(vstore)(row + c, FN(vsplat)(0));
        for (int c = c0; c < nc; c += VL) {
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

/* Pass 1, query rows: s (raw scores of the tile's queries against its keys) becomes
 * P = exp(x - lse), 0 where masked. */
ALWAYS_INLINE void FN(probabilities_body)(bool bias, bool full, const FN(tile) *t, T *s, T scale,
                                          const T *tab, const T *lse)
{
    const VEC iota = FN(iota)();
    const int bq = t->nq, bk = t->nk;
    const T d00 = (T)(t->p0 - t->j0);
    for (int r = 0; r < bq; r++) {
        T *row = s + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        const int c1 = full ? bk : FN(masked_from)(t, r, bk); /* masked whole from c1 on */
        VEC col = iota, dist = (d00 + (T)r) - iota; /* p0 + r - (j0 + c) */
        int c = 0;
        for (; c < c1; c += VL, col += (T)VL, dist -= (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(row + c), b + c, scale);
            if (!full) x = FN(masked)(FN(visible)(t, col, dist, bk, r, c), x, -INFINITY);
            FN(vstore)(row + c, FN(vexp)(x - lse[r]));
        }
        for (; c < bk; c += VL) FN(vstore)(row + c, FN(vsplat)(0));
    }
}

static void FN(probabilities_rows)(const attn_job *j, T *s, const FN(tile) *t, const T *lse)
{
    T tab[BIAS_TABLE];
    if (FN(has_bias)(t)) FN(bias_table)(tab, (T)(t->p0 - t->j0), -1, t->mb, t->ma);
    SPECIALISED(FN(probabilities_body), FN(has_bias)(t), t->full, t, s, (T)j->scale, tab, lse);
}

/* Pass 1: dp (dP = dO V^T on entry) becomes dS = P * (dP - D_i), 0 where masked. */
static void FN(score_grads_rows)(const FN(tile) *t, const T *p, T *dp, const T *drow)
{
    const VEC iota = FN(iota)();
    const int bq = t->nq, bk = t->nk;
    for (int r = 0; r < bq; r++) {
        const T *prow = p + (size_t)r * TILE;
        T *row = dp + (size_t)r * TILE;
        const int c1 = t->full ? bk : FN(masked_from)(t, r, bk); /* masked whole from c1 on */
        VEC col = iota, dist = (T)(t->p0 + r - t->j0) - iota;
        int c = 0;
        for (; c < c1; c += VL, col += (T)VL, dist -= (T)VL) {
            VEC ds = FN(vload)(prow + c) * (FN(vload)(row + c) - drow[r]);
            if (!t->full) ds = FN(masked)(FN(visible)(t, col, dist, bk, r, c), ds, 0);
            FN(vstore)(row + c, ds);
        }
        for (; c < bk; c += VL) FN(vstore)(row + c, FN(vsplat)(0));
    }
}

/* The single pass, query rows: dp (dP = dO V^T on entry) becomes scale dS = scale P (dP - D_i),
 * 0 where masked, and the slopes' shares of the tile are added to dm per query row r
 * (dm[r] and, asym, dm[TILE + r]): -sum_j dS_rj (p_r - j) over j <= p_r and -sum_j dS_rj
 * (j - p_r) over j > p_r, or with one slope for both sides -sum_j dS_rj |p_r - j| into dm[r]. */
ALWAYS_INLINE void FN(scaled_grads_body)(bool full, bool want_slope, const FN(tile) *t,
                                         const T *p, T *dp, const T *drow, T scale, bool asym,
                                         double *dm)
{
    const VEC iota = FN(iota)();
    const int bq = t->nq, bk = t->nk;
    for (int r = 0; r < bq; r++) {
        const T *prow = p + (size_t)r * TILE;
        T *row = dp + (size_t)r * TILE;
        VEC col = iota, dist = (T)(t->p0 + r - t->j0) - iota;
        VEC acc = {0}, acc_after = {0};
        /* with the slopes' sums, every vector (a masked one adds -0 or +0 to them) */
        const int c1 = full || want_slope ? bk : FN(masked_from)(t, r, bk);
        int c = 0;
        for (; c < c1; c += VL, col += (T)VL, dist -= (T)VL) {
            VEC ds = FN(vload)(prow + c) * (FN(vload)(row + c) - drow[r]);
            if (!full) ds = FN(masked)(FN(visible)(t, col, dist, bk, r, c), ds, 0);
            FN(vstore)(row + c, ds * scale);
            if (want_slope && asym) {
                IVEC before = dist >= 0;
                acc -= ds * FN(masked)(before, dist, 0);
                acc_after -= ds * FN(masked)(~before, -dist, 0);
            } else if (want_slope) {
                acc -= ds * FN(vabs)(dist);
            }
        }
        for (; c < bk; c += VL) FN(vstore)(row + c, FN(vsplat)((T)0 * scale)); /* as masked */
        if (want_slope) dm[r] += FN(hsum)(acc);
        if (want_slope && asym) dm[TILE + r] += FN(hsum)(acc_after);
    }
}

/* Pass 2, key rows: st (raw scores of the tile's keys against its queries) becomes
 * P^T = exp(x - lse); dpt (dP^T = V dO^T) becomes dS^T = P^T * (dP^T - D), both 0 where masked.
 * If want_slope, adds sum_ij dS_ij dx_ij/dm to dm[0] and sum_ij dS_ij dx_ij/dm' to dm[1] when
 * asym: -sum dS_ij (p_i - j) over j <= p_i and -sum dS_ij (j - p_i) over j > p_i; otherwise
 * (one slope for both sides) -sum_ij dS_ij |p_i - j| to dm[0]. */
ALWAYS_INLINE void FN(score_grads_body)(bool bias, bool full, const FN(tile) *t, T *st, T *dpt,
                                        T scale, const T *tab, const T *lse, const T *drow,
                                        bool want_slope, bool asym, double *dm)
{
    const VEC iota = FN(iota)();
    const int bk = t->nk, bq = t->nq;
    const T d00 = (T)(t->p0 - t->j0);
    VEC acc = {0}, acc_after = {0};
    for (int r = 0; r < bk; r++) {
        T *prow = st + (size_t)r * TILE, *row = dpt + (size_t)r * TILE;
        const T *b = tab + (TILE - 1) - r;
        /* masked whole before c0 (with the slopes' sums, every vector: see scaled_grads_body) */
        const int c0 = full || want_slope ? 0 : FN(masked_before)(t, r, bq);
        for (int c = 0; c < c0; c += VL) {
            FN(vstore)(prow + c, FN(vsplat)(0));
            FN(vstore)(row + c, FN(vsplat)(0));
        }
        VEC col = (T)c0 + iota, dist = (d00 - (T)r + (T)c0) + iota;
        for (int c = c0; c < bq; c += VL, col += (T)VL, dist += (T)VL) {
            VEC x = FN(logit)(bias, FN(vload)(prow + c), b + c, scale);
            IVEC valid = full ? (IVEC){0} : FN(visible)(t, col, dist, bq, r, c);
            if (!full) x = FN(masked)(valid, x, -INFINITY);
            VEC p = FN(vexp)(x - FN(vload)(lse + c));
            VEC ds = p * (FN(vload)(row + c) - FN(vload)(drow + c));
            if (!full) ds = FN(masked)(valid, ds, 0);
            FN(vstore)(prow + c, p);
            FN(vstore)(row + c, ds);
            if (want_slope && asym) {
                IVEC before = dist >= 0;
                acc -= ds * FN(masked)(before, dist, 0);
                acc_after -= ds * FN(masked)(~before, -dist, 0);
            } else if (want_slope) {
                acc -= ds * FN(vabs)(dist);
            }
        }
    }
    if (want_slope) dm[0] += FN(hsum)(acc);
    if (want_slope && asym) dm[1] += FN(hsum)(acc_after);
}

static void FN(score_grads_keys)(const attn_job *j, T *st, T *dpt, const FN(tile) *t,
                                 const T *lse, const T *drow, bool want_slope, double *dm)
{
    T tab[BIAS_TABLE];
    if (FN(has_bias)(t)) FN(bias_table)(tab, (T)(t->p0 - t->j0), 1, t->mb, t->ma);
    SPECIALISED(FN(score_grads_body), FN(has_bias)(t), t->full, t, st, dpt, (T)j->scale, tab,
                lse, drow, want_slope, j->asym, dm);
}

#undef ALWAYS_INLINE
#undef SPECIALISED

/* ---------------------------------------------------------------- tiles and tasks */

/* A worker's scratch, carved from one block (64-byte aligned pieces). */
typedef struct {
    T *s, *dp;      /* (TILE, TILE): scores or probabilities, and their gradients */
    T *bt, *bt2;    /* (D, TILE), (Dv, TILE): packed transposed tiles (q, k / dO, v) */
    T *acc, *acc2;  /* (TILE, max(D, Dv)), (TILE, Dv): output or gradient accumulators */
    T *m, *alpha;   /* (TILE): running max and rescaling factors; pass 2: lse, D */
    double *l;      /* (TILE): running sums */
    ISEG *colseg;   /* (TILE): the segment ids of a tile's columns */
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
    PIECE(colseg, ISEG, TILE);
#undef PIECE
    return off;
}

/* A tile of head h with its mask settings and slopes; the caller fills in the rest. */
static FN(tile) FN(tile_of)(const attn_job *j, int64_t h)
{
    return (FN(tile)){.causal = j->causal, .window = (T)j->window, .mb = (T)j->slopes[h],
                      .ma = (T)j->slopes_after[h]};
}

/* colseg[c] = seg[c] for c < n, 0 past it (lanes that the column count masks). */
static void FN(fill_colseg)(ISEG *colseg, const int32_t *seg, int n)
{
    for (int c = 0; c < TILE; c++) colseg[c] = c < n ? (ISEG)seg[c] : 0;
}

/* Rows i0 + [r0, r1) of head h, batch b: output zeros, lse +inf (no gradient). */
static void FN(zero_rows)(const attn_job *j, int64_t b, int64_t h, int64_t i0, int r0, int r1)
{
    const int64_t row0 = (b * j->H + h) * j->Tq + i0;
    for (int r = r0; r < r1; r++) {
        memset((T *)j->o + at3(j->os, b, h, i0 + r), 0, sizeof(T) * (size_t)j->Dv);
        if (j->lse) ((T *)j->lse)[row0 + r] = (T)INFINITY;
    }
}

/* y_r += a x_r for n rows of len elements, or y_r = a x_r when set: x's rows len apart, y's ld
 * apart. */
static inline __attribute__((always_inline)) void FN(add_rows)(bool set, int n, int64_t len, T a,
                                                               const T *x, T *y, int64_t ld)
{
    if (set)
        for (int r = 0; r < n; r++) FN(axpby)(len, a, x + r * len, 0, y + r * ld);
    else
        for (int r = 0; r < n; r++) FN(axpby)(len, a, x + r * len, 1, y + r * ld);
}

/* Rows [t0, t1) of head h, batch b of a gradient at strides s, len elements each: zeros, when
 * the gradient is new (set) and no tile writes them. */
static void FN(clear_rows)(bool set, void *grad, const int64_t s[3], int64_t b, int64_t h,
                           int64_t t0, int64_t t1, int64_t len)
{
    if (!set || !grad) return;
    for (int64_t t = t0; t < t1; t++)
        memset((T *)grad + at3(s, b, h, t), 0, sizeof(T) * (size_t)len);
}

/* ---------------------------------------------------------------- forward */

/* The forward of query tile qt of head h, batch b: with q^T packed once,
 *     for each key tile the queries may see, from the last back to the first: s^T = k q^T;
 *     online softmax; o~ = alpha o~ + P~ v;  and at the end o = o~ / l, lse = m + log l.
 * Query rows past the row's query length, and rows that see no key, get o = 0, lse = +inf. */
static void FN(forward_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * TILE, p0 = j->off + i0, row0 = (b * j->H + h) * j->Tq + i0;
    const int rows = (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE);
    const int bq = valid_queries(j, b, p0, rows);
    int64_t klo, khi;
    key_span(j, b, p0, bq, &klo, &khi);
    if (bq <= 0 || klo >= khi) {
        FN(zero_rows)(j, b, h, i0, 0, rows);
        return;
    }
    const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
    const int32_t *qrange = j->seg_q ? j->segq_range + 2 * (b * j->nqt + qt) : NULL;
    FN(tile) t = FN(tile_of)(j, h);
    t.p0 = p0;
    t.nq = bq;
    if (qrange) FN(fill_colseg)(w.colseg, j->seg_q + b * j->Tq + i0, bq);
    t.col_seg = w.colseg;

    FN(pack_t)(w.bt, q, j->qs[2], bq, (int)D);
    for (int c = 0; c < TILE; c++) { /* padding columns: m = 0 keeps them finite */
        w.m[c] = c < bq ? -INFINITY : 0;
        w.l[c] = 0;
    }
    bool first = true;
    for (int64_t kt = (khi - 1) / TILE; kt >= klo / TILE; kt--) {
        const int64_t j0 = kt * TILE;
        const int bk = (int)(khi - j0 < TILE ? khi - j0 : TILE);
        bool uniform = true;
        if (qrange) {
            const int32_t *krange = j->segk_range + 2 * (b * j->nkt + kt);
            if (segs_disjoint(qrange, krange)) continue;
            uniform = segs_uniform(qrange, krange);
            t.row_seg = j->seg_k + b * j->Tk + j0;
        }
        t.j0 = j0;
        t.nk = bk;
        t.full = tile_full(j, j0, bk, p0, bq, bq, uniform);
        const T *kj = k + j0 * j->ks[2], *vj = v + j0 * j->vs[2];
        FN(gemm_cols_set)(j->causal ? COLS_FROM : COLS_ALL, p0 - j0, bk, bq, (int)D, kj,
                          j->ks[2], 1, w.bt, TILE, w.s, TILE);
        FN(online_softmax)(j, w.s, &t, w.m, w.l, w.alpha);
        const int band = j->causal ? BAND_BELOW : BAND_NONE; /* rows: queries; k: keys */
        if (first) { /* the first tile sets the accumulator */
            FN(gemm_band_set)(band, p0 - j0, bq, (int)Dv, bk, w.s, 1, TILE, vj, j->vs[2], w.acc,
                              Dv);
            first = false;
            continue;
        }
        for (int r = 0; r < bq; r++)
            if (w.alpha[r] != 1)
                FN(axpby)(Dv, w.alpha[r], w.acc + r * Dv, 0, w.acc + r * Dv);
        FN(gemm_band_acc)(band, p0 - j0, bq, (int)Dv, bk, w.s, 1, TILE, vj, j->vs[2], w.acc, Dv);
    }
    if (first) { /* every key tile was in other segments */
        FN(zero_rows)(j, b, h, i0, 0, rows);
        return;
    }
    T *o = (T *)j->o + at3(j->os, b, h, i0);
    for (int r = 0; r < bq; r++) {
        if (w.l[r] == 0) { /* no visible key */
            FN(zero_rows)(j, b, h, i0, r, r + 1);
            continue;
        }
        FN(axpby)(Dv, (T)(1 / w.l[r]), w.acc + r * Dv, 0, o + r * j->os[2]);
        if (j->lse) ((T *)j->lse)[row0 + r] = (T)(w.m[r] + log(w.l[r]));
    }
    FN(zero_rows)(j, b, h, i0, bq, rows);
}

/* ---------------------------------------------------------------- backward */

/* D_i = sum_d dO_id O_id for rows [r0, r1) of (B * H * Tq), in double, in a fixed order: four
 * chains (d mod 4), one lane each of a vector of doubles, added pairwise at the end. The rows
 * are walked a (batch, head) at a time, so the strided addresses take no division per row. */
static void FN(row_dots)(const attn_job *j, int64_t r0, int64_t r1)
{
    typedef double d4 __attribute__((vector_size(4 * sizeof(double))));
    T *drow = (T *)j->drow;
    for (int64_t r = r0; r < r1;) {
        const int64_t bh = r / j->Tq, b = bh / j->H, h = bh % j->H;
        int64_t i = r % j->Tq;
        const int64_t iend = i + (r1 - r) < j->Tq ? i + (r1 - r) : j->Tq;
        const T *o = (const T *)j->o + at3(j->os, b, h, i);
        const T *go = (const T *)j->dout + at3(j->dos, b, h, i);
        for (; i < iend; i++, r++, o += j->os[2], go += j->dos[2]) {
            d4 s = {0, 0, 0, 0};
            int64_t d = 0;
            for (; d + 4 <= j->Dv; d += 4) {
                d4 x = {go[d], go[d + 1], go[d + 2], go[d + 3]};
                d4 y = {o[d], o[d + 1], o[d + 2], o[d + 3]};
                s += x * y;
            }
            for (; d < j->Dv; d++) s[0] += (double)go[d] * o[d];
            drow[r] = (T)((s[0] + s[1]) + (s[2] + s[3]));
        }
    }
}

/* Pass 1: dK and dV of key tile kt of kv head g, batch b, summed over the group's query heads
 * and every query tile that may see the key tile; k^T and v^T packed once:
 *     P = exp(q k^T scale + bias - lse), dV += P^T dO, dP = dO v^T, dS = P (dP - D),
 *     dK += scale dS^T q
 * Keys past the row's key length get no gradient. */
/* Query tile qt of row b against the key tile already in t (t->j0, t->nk, t->col_seg), for the
 * backward tasks that walk query tiles per key tile: sets t's query fields and returns the
 * tile's valid rows, or 0 when it has none or no query segment meets a key segment. */
static inline int FN(query_tile)(const attn_job *j, int64_t b, int64_t qt, const int32_t *krange,
                                 FN(tile) *t)
{
    const int64_t i0 = qt * TILE, p0 = j->off + i0;
    const int bq = valid_queries(j, b, p0, (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE));
    if (bq <= 0) return 0;
    bool uniform = true;
    if (krange) {
        const int32_t *qrange = j->segq_range + 2 * (b * j->nqt + qt);
        if (segs_disjoint(qrange, krange)) return 0;
        uniform = segs_uniform(qrange, krange);
        t->row_seg = j->seg_q + b * j->Tq + i0;
    }
    t->p0 = p0;
    t->nq = bq;
    t->full = tile_full(j, t->j0, t->nk, p0, bq, t->nk, uniform);
    return bq;
}

/* Returns the rows of the key tile whose dK and dV it wrote. */
static int FN(kv_grad_tile)(const attn_job *j, int64_t b, int64_t g, int64_t kt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, j0 = kt * TILE;
    const int64_t kend = j->len_k ? j->len_k[b] : j->Tk;
    const int bk = (int)(kend - j0 < TILE ? kend - j0 : TILE);
    int64_t plo, phi;
    if (bk <= 0) return 0;
    query_span(j, b, j0, bk, &plo, &phi);
    if (plo >= phi) return 0;
    const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1] + j0 * j->ks[2];
    const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1] + j0 * j->vs[2];
    const bool want_k = j->dk != NULL, want_v = j->dv != NULL;
    const int32_t *krange = j->seg_q ? j->segk_range + 2 * (b * j->nkt + kt) : NULL;
    if (krange) FN(fill_colseg)(w.colseg, j->seg_k + b * j->Tk + j0, bk);

    FN(pack_t)(w.bt, k, j->ks[2], bk, (int)D);
    if (want_k) FN(pack_t)(w.bt2, v, j->vs[2], bk, (int)Dv);
    memset(w.acc, 0, sizeof(T) * (size_t)(bk * D));
    memset(w.acc2, 0, sizeof(T) * (size_t)(bk * Dv));
    for (int64_t h = g * j->group; h < (g + 1) * j->group; h++) {
        FN(tile) t = FN(tile_of)(j, h);
        t.j0 = j0;
        t.nk = bk;
        t.col_seg = w.colseg;
        for (int64_t qt = (plo - j->off) / TILE; qt <= (phi - 1 - j->off) / TILE; qt++) {
            const int bq = FN(query_tile)(j, b, qt, krange, &t);
            if (bq <= 0) continue;
            const int64_t i0 = qt * TILE, row0 = (b * j->H + h) * j->Tq + i0;
            const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
            const T *go = (const T *)j->dout + at3(j->dos, b, h, i0);
            const int64_t lgo = j->dos[2];
            const int band = j->causal ? BAND_ABOVE : BAND_NONE; /* rows: keys; k: queries */
            const int cols = j->causal ? COLS_UPTO : COLS_ALL;
            const int64_t d = t.p0 - j0;
            FN(gemm_cols_set)(cols, d, bq, bk, (int)D, q, j->qs[2], 1, w.bt, TILE, w.s, TILE);
            FN(probabilities_rows)(j, w.s, &t, (const T *)j->lse + row0);
            if (want_v)
                FN(gemm_band_acc)(band, d, bk, (int)Dv, bq, w.s, 1, TILE, go, lgo, w.acc2, Dv);
            if (!want_k) continue;
            FN(gemm_cols_set)(cols, d, bq, bk, (int)Dv, go, lgo, 1, w.bt2, TILE, w.dp, TILE);
            FN(score_grads_rows)(&t, w.s, w.dp, (const T *)j->drow + row0);
            FN(gemm_band_acc)(band, d, bk, (int)D, bq, w.dp, 1, TILE, q, j->qs[2], w.acc, D);
        }
    }
    if (want_k)
        FN(add_rows)(j->set_k, bk, D, (T)j->scale, w.acc, (T *)j->dk + at3(j->dks, b, g, j0),
                     j->dks[2]);
    if (want_v)
        FN(add_rows)(j->set_v, bk, Dv, 1, w.acc2, (T *)j->dv + at3(j->dvs, b, g, j0), j->dvs[2]);
    return bk;
}

static void FN(kv_grad_task)(const attn_job *j, int64_t b, int64_t g, int64_t kt, char *scratch)
{
    const int64_t j0 = kt * TILE, end = j0 + TILE < j->Tk ? j0 + TILE : j->Tk;
    const int done = FN(kv_grad_tile)(j, b, g, kt, scratch);
    FN(clear_rows)(j->set_k, j->dk, j->dks, b, g, j0 + done, end, j->D);
    FN(clear_rows)(j->set_v, j->dv, j->dvs, b, g, j0 + done, end, j->Dv);
}

/* Pass 2: dQ of query tile qt of head h, batch b, and this tile's shares of dL/dm_h (and
 * dL/dm'_h); q^T and dO^T packed once, tiles in the key layout:
 *     P^T = exp(k q^T scale + bias - lse), dP^T = v dO^T, dS^T = P^T (dP^T - D),
 *     dQ += scale dS k,   dm_h += -sum_{j <= p_i} dS_ij (p_i - j),
 *     dm'_h += -sum_{j > p_i} dS_ij (j - p_i)   (into dm_h when the slopes are symmetric) */
static void FN(q_grad_task)(const attn_job *j, int64_t b, int64_t h, int64_t qt, char *scratch)
{
    FN(tiles) w;
    FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, g = h / j->group;
    const int64_t i0 = qt * TILE, p0 = j->off + i0, row0 = (b * j->H + h) * j->Tq + i0;
    const int rows = (int)(j->Tq - i0 < TILE ? j->Tq - i0 : TILE);
    const int bq = valid_queries(j, b, p0, rows);
    const bool want_slope = j->dslope_part != NULL;
    const int64_t slot = (h * j->B + b) * j->nqt + qt;
    double dm[2] = {0, 0};
    int64_t klo, khi;
    key_span(j, b, p0, bq, &klo, &khi);
    if (bq > 0 && klo < khi) {
        const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
        const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1];
        const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1];
        const int32_t *qrange = j->seg_q ? j->segq_range + 2 * (b * j->nqt + qt) : NULL;
        FN(tile) t = FN(tile_of)(j, h);
        t.p0 = p0;
        t.nq = bq;
        if (qrange) FN(fill_colseg)(w.colseg, j->seg_q + b * j->Tq + i0, bq);
        t.col_seg = w.colseg;

        FN(pack_t)(w.bt, q, j->qs[2], bq, (int)D);
        FN(pack_t)(w.bt2, (const T *)j->dout + at3(j->dos, b, h, i0), j->dos[2], bq, (int)Dv);
        for (int c = 0; c < TILE; c++) { /* lse and D along the tile's columns, 0 past bq */
            w.m[c] = c < bq ? ((const T *)j->lse)[row0 + c] : 0;
            w.alpha[c] = c < bq ? ((const T *)j->drow)[row0 + c] : 0;
        }
        memset(w.acc, 0, sizeof(T) * (size_t)(bq * D));
        for (int64_t kt = klo / TILE; kt * TILE < khi; kt++) {
            const int64_t j0 = kt * TILE;
            const int bk = (int)(khi - j0 < TILE ? khi - j0 : TILE);
            bool uniform = true;
            if (qrange) {
                const int32_t *krange = j->segk_range + 2 * (b * j->nkt + kt);
                if (segs_disjoint(qrange, krange)) continue;
                uniform = segs_uniform(qrange, krange);
                t.row_seg = j->seg_k + b * j->Tk + j0;
            }
            t.j0 = j0;
            t.nk = bk;
            t.full = tile_full(j, j0, bk, p0, bq, bq, uniform);
            const T *kj = k + j0 * j->ks[2];
            const int cols = j->causal ? COLS_FROM : COLS_ALL; /* rows: keys */
            FN(gemm_cols_set)(cols, p0 - j0, bk, bq, (int)D, kj, j->ks[2], 1, w.bt, TILE, w.s,
                              TILE);
            FN(gemm_cols_set)(cols, p0 - j0, bk, bq, (int)Dv, v + j0 * j->vs[2], j->vs[2], 1,
                              w.bt2, TILE, w.dp, TILE);
            FN(score_grads_keys)(j, w.s, w.dp, &t, w.m, w.alpha, want_slope, dm);
            if (j->dq) /* rows: queries; k: keys */
                FN(gemm_band_acc)(j->causal ? BAND_BELOW : BAND_NONE, p0 - j0, bq, (int)D, bk,
                                  w.dp, 1, TILE, kj, j->ks[2], w.acc, D);
        }
        if (j->dq)
            FN(add_rows)(j->set_q, bq, D, (T)j->scale, w.acc,
                         (T *)j->dq + at3(j->dqs, b, h, i0), j->dqs[2]);
        FN(clear_rows)(j->set_q, j->dq, j->dqs, b, h, i0 + bq, i0 + rows, D);
    } else {
        FN(clear_rows)(j->set_q, j->dq, j->dqs, b, h, i0, i0 + rows, D);
    }
    if (want_slope) j->dslope_part[slot] = dm[0];
    if (want_slope && j->asym) j->dslope_part[j->H * j->B * j->nqt + slot] = dm[1];
}

/* The single pass: every gradient of kv head g's group in batch b, in one task (so dQ, which
 * every key tile adds to, is written by this task alone): for each key tile the group's queries
 * may see, with k^T and v^T packed once, for each query head of the group and each query tile
 * that sees the key tile:
 *     P = exp(q k^T scale + bias - lse)          (1 product)
 *     dV += P^T dO                               (2)
 *     dP = dO v^T,  dS' = scale P (dP - D)       (3)
 *     dK += dS'^T q                              (4)
 *     dQ += dS' k                                (5)
 * five tile products per pair where the two passes take seven. dQ accumulates over the key
 * tiles in the task's scratch (past the tiles: group x Tq x D), added to the gradient at the
 * end; the slopes' shares of each (head, query tile) in dslope_part, key tiles in order. */
static void FN(group_grad_task)(const attn_job *j, int64_t b, int64_t g, char *scratch)
{
    FN(tiles) w;
    const size_t tiles_bytes = FN(carve)(scratch, j->D, j->Dv, &w);
    const int64_t D = j->D, Dv = j->Dv, G = j->group;
    T *dqs = (T *)(scratch + tiles_bytes); /* (G, Tq, D) */
    const bool want_k = j->dk != NULL, want_v = j->dv != NULL, want_q = j->dq != NULL;
    const bool want_slope = j->dslope_part != NULL, asym = j->asym;
    const int64_t kend = j->len_k ? j->len_k[b] : j->Tk;
    double dm[2 * TILE];
    if (want_q) memset(dqs, 0, sizeof(T) * (size_t)(G * j->Tq * D));
    for (int64_t kt = 0; kt * TILE < kend; kt++) {
        const int64_t j0 = kt * TILE;
        const int bk = (int)(kend - j0 < TILE ? kend - j0 : TILE);
        int64_t plo, phi;
        query_span(j, b, j0, bk, &plo, &phi);
        if (plo >= phi) { /* no query sees these keys */
            FN(clear_rows)(j->set_k, j->dk, j->dks, b, g, j0, j0 + bk, D);
            FN(clear_rows)(j->set_v, j->dv, j->dvs, b, g, j0, j0 + bk, Dv);
            continue;
        }
        const T *k = (const T *)j->k + b * j->ks[0] + g * j->ks[1] + j0 * j->ks[2];
        const T *v = (const T *)j->v + b * j->vs[0] + g * j->vs[1] + j0 * j->vs[2];
        const int32_t *krange = j->seg_q ? j->segk_range + 2 * (b * j->nkt + kt) : NULL;
        if (krange) FN(fill_colseg)(w.colseg, j->seg_k + b * j->Tk + j0, bk);
        FN(pack_t)(w.bt, k, j->ks[2], bk, (int)D);
        FN(pack_t)(w.bt2, v, j->vs[2], bk, (int)Dv);
        memset(w.acc, 0, sizeof(T) * (size_t)(bk * D));
        memset(w.acc2, 0, sizeof(T) * (size_t)(bk * Dv));
        for (int64_t h = g * G; h < (g + 1) * G; h++) {
            FN(tile) t = FN(tile_of)(j, h);
            t.j0 = j0;
            t.nk = bk;
            t.col_seg = w.colseg;
            for (int64_t qt = (plo - j->off) / TILE; qt <= (phi - 1 - j->off) / TILE; qt++) {
                const int bq = FN(query_tile)(j, b, qt, krange, &t);
                if (bq <= 0) continue;
                const int64_t i0 = qt * TILE, row0 = (b * j->H + h) * j->Tq + i0;
                const T *q = (const T *)j->q + b * j->qs[0] + h * j->qs[1] + i0 * j->qs[2];
                const T *go = (const T *)j->dout + at3(j->dos, b, h, i0);
                const int64_t lgo = j->dos[2];
                const int64_t d = t.p0 - j0; /* the tile's diagonal offset, for the bands */
                const int above = j->causal ? BAND_ABOVE : BAND_NONE,
                          below = j->causal ? BAND_BELOW : BAND_NONE;
                const int cols = j->causal ? COLS_UPTO : COLS_ALL; /* rows: queries */
                FN(gemm_cols_set)(cols, d, bq, bk, (int)D, q, j->qs[2], 1, w.bt, TILE, w.s, TILE);
                FN(probabilities_rows)(j, w.s, &t, (const T *)j->lse + row0);
                if (want_v)
                    FN(gemm_band_acc)(above, d, bk, (int)Dv, bq, w.s, 1, TILE, go, lgo, w.acc2,
                                      Dv);
                if (!want_k && !want_q && !want_slope) continue;
                FN(gemm_cols_set)(cols, d, bq, bk, (int)Dv, go, lgo, 1, w.bt2, TILE, w.dp, TILE);
                if (want_slope) memset(dm, 0, sizeof dm);
                const T *dr = (const T *)j->drow + row0;
                if (t.full && want_slope)
                    FN(scaled_grads_body)(true, true, &t, w.s, w.dp, dr, (T)j->scale, asym, dm);
                else if (t.full)
                    FN(scaled_grads_body)(true, false, &t, w.s, w.dp, dr, (T)j->scale, asym, dm);
                else if (want_slope)
                    FN(scaled_grads_body)(false, true, &t, w.s, w.dp, dr, (T)j->scale, asym, dm);
                else
                    FN(scaled_grads_body)(false, false, &t, w.s, w.dp, dr, (T)j->scale, asym, dm);
                if (want_k)
                    FN(gemm_band_acc)(above, d, bk, (int)D, bq, w.dp, 1, TILE, q, j->qs[2], w.acc,
                                      D);
                if (want_q) {
                    T *dq = dqs + ((h - g * G) * j->Tq + i0) * D;
                    FN(gemm_band_acc)(below, d, bq, (int)D, bk, w.dp, TILE, 1, k, j->ks[2], dq, D);
                }
                if (want_slope) {
                    const int64_t slot = (h * j->B + b) * j->nqt + qt;
                    double s0 = 0, s1 = 0;
                    for (int r = 0; r < bq; r++) s0 += dm[r];
                    j->dslope_part[slot] += s0;
                    if (asym) {
                        for (int r = 0; r < bq; r++) s1 += dm[TILE + r];
                        j->dslope_part[j->H * j->B * j->nqt + slot] += s1;
                    }
                }
            }
        }
        if (want_k)
            FN(add_rows)(j->set_k, bk, D, 1, w.acc, (T *)j->dk + at3(j->dks, b, g, j0),
                         j->dks[2]);
        if (want_v)
            FN(add_rows)(j->set_v, bk, Dv, 1, w.acc2, (T *)j->dv + at3(j->dvs, b, g, j0),
                         j->dvs[2]);
    }
    const int64_t kdone = kend > 0 ? kend : 0; /* keys past the length get no gradient */
    FN(clear_rows)(j->set_k, j->dk, j->dks, b, g, kdone, j->Tk, D);
    FN(clear_rows)(j->set_v, j->dv, j->dvs, b, g, kdone, j->Tk, Dv);
    if (want_q)
        for (int64_t h = g * G; h < (g + 1) * G; h++)
            FN(add_rows)(j->set_q, (int)j->Tq, D, 1, dqs + (h - g * G) * j->Tq * D,
                         (T *)j->dq + at3(j->dqs, b, h, 0), j->dqs[2]);
}

#undef VTRANSPOSE
#undef VL
#undef ISEG
#undef IVEC
#undef VEC
