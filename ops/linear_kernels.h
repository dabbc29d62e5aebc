/* ops/linear_kernels.h — the epilogues of sl_linear (bias, GELU and their backward, run on each
 * row right after or before gemm), written once over a type T and instantiated by linear_isa.c
 * for every SIMD level with T = float and with T = double (SUF names them: _f32, _f64; T_IS_F32
 * says which). The f32 GELU runs on the vectors of ops/simd.h, the f64 one on gelu_f64, both
 * defined in linear_isa.c. */

/* d += p over n elements. (The plain loops are SL_EACH's, which the compiler vectorises.) */
static void FN(add)(T *restrict d, const T *restrict p, int64_t n) { SL_EACH(n, d[i] += p[i]); }

/* One row of n: y += b (b may be NULL); then, if gelu, with u that sum: d = gelu'(u) when d is
 * given, and y = gelu(u) in place. */
static void FN(forward_row)(T *restrict y, T *restrict d, const T *restrict b, int64_t n,
                            bool gelu)
{
    if (b) FN(add)(y, b, n);
    if (!gelu) return;
#if T_IS_F32
    int64_t j = 0;
    for (; j + SL_VF <= n; j += SL_VF) {
        sl_vf u = sl_vf_load(y + j), e = gelu_e(u), s = 1.0f / (1.0f + e);
        if (d) sl_vf_store(d + j, gelu_deriv_vec(u, e, s));
        sl_vf_store(y + j, gelu_vec(u, s));
    }
    if (j < n) {
        sl_vf u = sl_vf_load_part(y + j, n - j, 0), e = gelu_e(u), s = 1.0f / (1.0f + e);
        if (d) sl_vf_store_part(d + j, gelu_deriv_vec(u, e, s), n - j);
        sl_vf_store_part(y + j, gelu_vec(u, s), n - j);
    }
#else
    for (int64_t j = 0; j < n; j++) y[j] = gelu_f64(y[j], d ? d + j : NULL);
#endif
}

/* Not inlined: inlined into backward_row, GCC 12 lost SL_EACH's multiple-of-16 trip count and
 * left both loops scalar (perf: 2% of the GPT step in a vmulss loop). */
static __attribute__((noinline)) void FN(mul)(T *restrict du, const T *restrict g,
                                              const T *restrict d, int64_t n)
{
    SL_EACH(n, du[i] = g[i] * d[i]);
}

static __attribute__((noinline)) void FN(mul_in_place)(T *restrict d, const T *restrict g,
                                                       int64_t n)
{
    SL_EACH(n, d[i] *= g[i]);
}

/* One row of n: when gelu, du = g * d, d forward's gelu'(u) (du may be d itself; without gelu du
 * is g and nothing is written), and db += du in double (when db is given). */
static void FN(backward_row)(const T *restrict g, const T *d, T *du, double *restrict db,
                             int64_t n, bool gelu)
{
    if (gelu && du == d) FN(mul_in_place)(du, g, n);
    else if (gelu) FN(mul)(du, g, d, n);
    if (db) {
        const T *s = gelu ? du : g;
        SL_EACH(n, db[i] += s[i]);
    }
}
