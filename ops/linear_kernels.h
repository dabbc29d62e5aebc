/* ops/linear_kernels.h — the epilogues of sl_linear (bias, GELU and their backward, run on each
 * row right after or before gemm), written once over a type T and included by linear.c with
 * T = float and with T = double (SUF names them: _f32, _f64; T_IS_F32 says which). The f32 GELU
 * runs on the 16-lane vectors of ops/vexp.h, the f64 one on gelu_f64, both defined in linear.c. */

/* The plain loops below run their first n - n % 16 iterations in a loop of their own: a trip
 * count known to be a multiple of 16 is what GCC's -O2 (its "very cheap" vectorizer cost model)
 * needs to vectorize a loop. */
#define VEC16(n) ((n) & ~(int64_t)15) /* n >= 0 */

/* d += p over n elements. */
static void FN(add)(T *restrict d, const T *restrict p, int64_t n)
{
    for (int64_t e = 0; e < VEC16(n); e++) d[e] += p[e];
    for (int64_t e = VEC16(n); e < n; e++) d[e] += p[e];
}

/* One row of n: u += b (b may be NULL); y = gelu(u) if gelu (y separate), else nothing more. */
static void FN(forward_row)(T *restrict u, T *restrict y, const T *restrict b, int64_t n,
                            bool gelu)
{
    if (b) FN(add)(u, b, n);
    if (!gelu) return;
#if T_IS_F32
    int64_t j = 0;
    for (; j + VW <= n; j += VW) vstore(y + j, gelu_vec(vload(u + j)));
    if (j < n) vstore_part(y + j, gelu_vec(vload_part(u + j, n - j)), n - j);
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
        for (; j + VW <= n; j += VW) vstore(du + j, vload(g + j) * gelu_deriv_vec(vload(u + j)));
        if (j < n)
            vstore_part(du + j, vload_part(g + j, n - j) * gelu_deriv_vec(vload_part(u + j, n - j)),
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
        for (int64_t j = 0; j < VEC16(n); j++) db[j] += d[j];
        for (int64_t j = VEC16(n); j < n; j++) db[j] += d[j];
    }
}

#undef VEC16
