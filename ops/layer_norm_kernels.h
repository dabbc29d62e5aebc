/* ops/layer_norm_kernels.h — the layer norm kernels, written once over a type T and
 * instantiated by layer_norm_isa.c for every SIMD level with T = float and with T = double (SUF
 * names them: _f32, _f64). Statistics and gradient sums are in double, over the 8 double lanes
 * of ops/simd.h (sl_acc8 for the running sums, whose order is the same at every level). The backward kernel ACCUMULATES into dx. */
#include <tgmath.h>

#define WIDE FN(sl_vd_wide)     /* SL_VD T's from memory, in double */
#define ADD_TO FN(sl_vd_add_to)  /* SL_VD T's in memory += SL_VD doubles, rounded to T */

/* SL_VD T's in a register: HALF_LOAD from memory, TO_T from doubles (rounded to nearest) */
#if T_IS_F32
#define HALF sl_vd_f32
#define TO_T(v) __builtin_convertvector((v), sl_vd_f32)
#else
#define HALF sl_vd
#define TO_T(v) (v)
#endif
static inline HALF FN(half_load)(const T *p)
{
    HALF v;
    memcpy(&v, p, sizeof v);
    return v;
}
#define HALF_LOAD FN(half_load)

/* for each of the 8 elements from j on, SL_VD at a time: h indexes sl_acc8's registers and o is
 * the offset of h's elements. Unrolled, so that the sums stay in registers. */
#define EACH8(j, ...)                                                                            \
    _Pragma("GCC unroll 8") for (int h = 0; h < SL_ACC8; h++)                                   \
    {                                                                                            \
        const int64_t o = (j) + h * SL_VD;                                                       \
        __VA_ARGS__;                                                                             \
    }

/* The rows whose statistics are summed side by side: each sum is one chain of dependent
 * additions (one 64-byte register at AVX-512), so a row alone waits on the adder's latency;
 * NR rows' chains run at once, each in its own order, as a row alone would. At the generic
 * level (four 16-byte registers per sum) two rows fill the registers. */
#define NR (SL_ACC8 >= 4 ? 2 : 4)

/* The mean and rstd = 1 / sqrt(var + eps) of the nr rows of C from x (contiguous), in double
 * (two passes, 8 lanes): the same operations in the same order whatever nr is. */
static inline __attribute__((always_inline)) void
FN(row_stats)(const T *restrict x, int64_t C, int nr, double eps, double *restrict mean,
              double *restrict rstd)
{
    const int64_t C8 = C - C % 8;
    sl_acc8 s8[NR], v8[NR];
    double m[NR];
    _Pragma("GCC unroll 4") for (int q = 0; q < nr; q++) s8[q] = v8[q] = (sl_acc8){0};
    for (int64_t j = 0; j < C8; j += 8)
        _Pragma("GCC unroll 4") for (int q = 0; q < nr; q++)
            EACH8(j, s8[q].r[h] += WIDE(x + q * C + o));
    _Pragma("GCC unroll 4") for (int q = 0; q < nr; q++) {
        double s = sl_acc8_hsum(s8[q]);
        for (int64_t j = C8; j < C; j++) s += x[q * C + j];
        m[q] = s / (double)C;
    }
    for (int64_t j = 0; j < C8; j += 8)
        _Pragma("GCC unroll 4") for (int q = 0; q < nr; q++) EACH8(j, {
                sl_vd d = WIDE(x + q * C + o) - m[q];
                v8[q].r[h] += d * d;
            });
    _Pragma("GCC unroll 4") for (int q = 0; q < nr; q++) {
        double v = sl_acc8_hsum(v8[q]);
        for (int64_t j = C8; j < C; j++) v += (x[q * C + j] - m[q]) * (x[q * C + j] - m[q]);
        mean[q] = m[q];
        rstd[q] = 1 / sqrt(v / (double)C + eps);
    }
}

/* Rows [r0, r1) of x (rows, C): y = (x - mean) * rstd * w + b, the rows' mean and rstd
 * (row_stats, NR rows at a time) saved. w, b: (C) or NULL. */
static void FN(layer_norm_forward)(const T *restrict x, const T *restrict w, const T *restrict b,
                                   T *restrict y, double *restrict mean, double *restrict rstd,
                                   int64_t r0, int64_t r1, int64_t C, double eps)
{
    const int64_t C8 = C - C % 8;
    for (int64_t r = r0; r < r1;) {
        /* NR rows' statistics, then those rows normalised while they are in L1 */
        const int nr = r + NR <= r1 ? NR : 1;
        if (nr == NR) FN(row_stats)(x + r * C, C, NR, eps, mean + r, rstd + r); /* constants: */
        else FN(row_stats)(x + r * C, C, 1, eps, mean + r, rstd + r); /* sums in registers */
        for (const int64_t r_end = r + nr; r < r_end; r++) {
            const T *xr = x + r * C;
            T *yr = y + r * C;
            const double m = mean[r], rs = rstd[r];
            /* xhat rounded to T, then the weight and bias in T, in registers: a second pass
             * over y would reload each vector from two half-width stores still in the store
             * buffer, which cannot forward to it */
            for (int64_t j = 0; j < C8; j += 8) EACH8(j, {
                    HALF hv = TO_T((WIDE(xr + o) - m) * rs);
                    if (w && b) hv = hv * HALF_LOAD(w + o) + HALF_LOAD(b + o);
                    else if (w) hv = hv * HALF_LOAD(w + o);
                    else if (b) hv = hv + HALF_LOAD(b + o);
                    memcpy(yr + o, &hv, sizeof hv);
                });
            for (int64_t j = C8; j < C; j++) {
                T h = (T)((xr[j] - m) * rs);
                yr[j] = w && b ? h * w[j] + b[j] : w ? h * w[j] : b ? h + b[j] : h;
            }
        }
    }
}

/* Rows [r0, r1), with xhat = (x - mean) * rstd and dxhat = g * w (g alone without w):
 *   dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   when dx is given,
 *   dw += g * xhat and db += g, summed over the rows into C doubles,  when given.
 * In 8 double lanes, like the forward. */
static void FN(layer_norm_backward)(const T *restrict x, const T *restrict w, const T *restrict g,
                                    const double *restrict mean, const double *restrict rstd,
                                    T *restrict dx, double *restrict dw, double *restrict db,
                                    int64_t r0, int64_t r1, int64_t C)
{
    const int64_t C8 = C - C % 8;
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * C, *gr = g + r * C;
        double m = mean[r], rs = rstd[r];
        if (dx) {
            T *dxr = dx + r * C;
            sl_acc8 sd8 = {0}, sdx8 = {0}; /* sums of dxhat and of dxhat * xhat */
            for (int64_t j = 0; j < C8; j += 8) EACH8(j, {
                    sl_vd dh = w ? WIDE(gr + o) * WIDE(w + o) : WIDE(gr + o);
                    sd8.r[h] += dh;
                    sdx8.r[h] += dh * ((WIDE(xr + o) - m) * rs);
                });
            double sd = sl_acc8_hsum(sd8), sdx = sl_acc8_hsum(sdx8);
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                sd += dh;
                sdx += dh * ((xr[j] - m) * rs);
            }
            sd /= (double)C;
            sdx /= (double)C;
            /* dx's pass also adds dw's and db's terms, from the same loads */
            for (int64_t j = 0; j < C8; j += 8) EACH8(j, {
                    sl_vd gv = WIDE(gr + o), dh = w ? gv * WIDE(w + o) : gv;
                    sl_vd xh = (WIDE(xr + o) - m) * rs;
                    ADD_TO(dxr + o, rs * (dh - sd - xh * sdx));
                    if (dw) sl_vd_add_to_f64(dw + o, gv * xh);
                    if (db) sl_vd_add_to_f64(db + o, gv);
                });
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                dxr[j] += (T)(rs * (dh - sd - (xr[j] - m) * rs * sdx));
                if (dw) dw[j] += gr[j] * ((xr[j] - m) * rs);
                if (db) db[j] += gr[j];
            }
            continue;
        }
        if (dw) {
            for (int64_t j = 0; j < C8; j += 8)
                EACH8(j, sl_vd_add_to_f64(dw + o, WIDE(gr + o) * ((WIDE(xr + o) - m) * rs)));
            for (int64_t j = C8; j < C; j++) dw[j] += gr[j] * ((xr[j] - m) * rs);
        }
        if (db) {
            for (int64_t j = 0; j < C8; j += 8) EACH8(j, sl_vd_add_to_f64(db + o, WIDE(gr + o)));
            for (int64_t j = C8; j < C; j++) db[j] += gr[j];
        }
    }
}

/* dst (C) += the sum of part (blocks, C) over its blocks, added in block order. */
static void FN(add_block_sums)(T *restrict dst, const double *restrict part, int64_t blocks,
                               int64_t C)
{
    for (int64_t j = 0; j < C; j++) {
        double s = 0;
        for (int64_t k = 0; k < blocks; k++) s += part[k * C + j];
        dst[j] += (T)s;
    }
}

#undef WIDE
#undef ADD_TO
#undef HALF
#undef TO_T
#undef HALF_LOAD
#undef EACH8
#undef NR
