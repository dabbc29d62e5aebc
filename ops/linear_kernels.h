/* ops/linear_kernels.h — the epilogues of sl_linear (bias, GELU and their backward, run on each
 * row right after or before gemm), written once over a type T and instantiated by linear_isa.c
 * for every SIMD level with T = float and with T = double (SUF names them: _f32, _f64; T_IS_F32
 * says which). The f32 GELU runs on the vectors of ops/simd.h, the f64 one on gelu_f64, both
 * defined in linear_isa.c. */

/* d += p over n elements. (The plain loops are SL_EACH's, which the compiler vectorises.) */
static void FN(add)(T *restrict d, const T *restrict p, int64_t n) { SL_EACH(n, d[i] += p[i]); }

/* One row of n: u += b (b may be NULL); y = gelu(u) if gelu (y separate), else nothing more. */
static void FN(forward_row)(T *restrict u, T *restrict y, const T *restrict b, int64_t n,
                            bool gelu)
{
    if (b) FN(add)(u, b, n);
    if (!gelu) return;
#if T_IS_F32
    int64_t j = 0;
    for (; j + SL_VF <= n; j += SL_VF) sl_vf_store(y + j, gelu_vec(sl_vf_load(u + j)));
    if (j < n) sl_vf_store_part(y + j, gelu_vec(sl_vf_load_part(u + j, n - j, 0)), n - j);
#else
    for (int64_t j = 0; j < n; j++) y[j] = gelu_f64(u[j], NULL);
#endif
}

/* One row of n: du = g * gelu'(u) (when gelu; else du is g and nothing is written), and
 * db += du in double (when db is given). */
static void FN(backward_row)(const T *restrict g, const T *restrict u, T *restrict du,
                             double *restrict db, int64_t n, bool gelu)
{
    if (gelu) {
#if T_IS_F32
        int64_t j = 0;
        for (; j + SL_VF <= n; j += SL_VF)
            sl_vf_store(du + j, sl_vf_load(g + j) * gelu_deriv_vec(sl_vf_load(u + j)));
        if (j < n)
            sl_vf_store_part(du + j,
                             sl_vf_load_part(g + j, n - j, 0) *
                                 gelu_deriv_vec(sl_vf_load_part(u + j, n - j, 0)),
                             n - j);
#else
        for (int64_t j = 0; j < n; j++) {
            double d;
            gelu_f64(u[j], &d);
            du[j] = g[j] * d;
        }
#endif
    }
    if (db) {
        const T *d = gelu ? du : g;
        SL_EACH(n, db[i] += d[i]);
    }
}
