/* ops/layer_norm_kernels.h — the layer norm kernels, written once over a type T and
 * instantiated by layer_norm_isa.c for every SIMD level with T = float and with T = double (SUF
 * names them: _f32, _f64). Statistics and gradient sums are in double, over the 8 double lanes
 * of ops/simd.h (sl_v8_f64, whose order is the same at every level). The backward kernel
 * ACCUMULATES into dx. */
#include <tgmath.h>

#define V8 FN(sl_v8)         /* 8 T's */
#define LOAD8 FN(sl_v8_load) /* 8 T's from memory */
#define WIDE8 FN(sl_v8_wide) /* 8 T's from memory, in double */
#define STORE8 FN(sl_v8_store)

/* Rows [r0, r1) of x (rows, C): y = (x - mean) * rstd * w + b, where the row's mean and
 * rstd = 1 / sqrt(var + eps) are computed in double (two passes, 8 lanes) and saved.
 * w, b: (C) or NULL. */
static void FN(layer_norm_forward)(const T *restrict x, const T *restrict w, const T *restrict b,
                                   T *restrict y, double *restrict mean, double *restrict rstd,
                                   int64_t r0, int64_t r1, int64_t C, double eps)
{
    const int64_t C8 = C - C % 8;
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * C;
        T *yr = y + r * C;
        sl_v8_f64 s8 = {0}, v8 = {0};
        for (int64_t j = 0; j < C8; j += 8) s8 += WIDE8(xr + j);
        double s = sl_v8_hsum(s8);
        for (int64_t j = C8; j < C; j++) s += xr[j];
        double m = s / (double)C;
        for (int64_t j = 0; j < C8; j += 8) {
            sl_v8_f64 d = WIDE8(xr + j) - m;
            v8 += d * d;
        }
        double v = sl_v8_hsum(v8);
        for (int64_t j = C8; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        double rs = 1 / sqrt(v / (double)C + eps);
        for (int64_t j = 0; j < C8; j += 8) {
            V8 h = __builtin_convertvector((WIDE8(xr + j) - m) * rs, V8);
            if (w) h *= LOAD8(w + j);
            if (b) h += LOAD8(b + j);
            STORE8(yr + j, h);
        }
        for (int64_t j = C8; j < C; j++) {
            T h = (T)((xr[j] - m) * rs);
            yr[j] = (w ? h * w[j] : h) + (b ? b[j] : 0);
        }
        mean[r] = m;
        rstd[r] = rs;
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
            sl_v8_f64 sd8 = {0}, sdx8 = {0}; /* sums of dxhat and of dxhat * xhat */
            for (int64_t j = 0; j < C8; j += 8) {
                sl_v8_f64 dh = w ? WIDE8(gr + j) * WIDE8(w + j) : WIDE8(gr + j);
                sd8 += dh;
                sdx8 += dh * ((WIDE8(xr + j) - m) * rs);
            }
            double sd = sl_v8_hsum(sd8), sdx = sl_v8_hsum(sdx8);
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                sd += dh;
                sdx += dh * ((xr[j] - m) * rs);
            }
            sd /= (double)C;
            sdx /= (double)C;
            /* dx's pass also adds dw's and db's terms, from the same loads */
            for (int64_t j = 0; j < C8; j += 8) {
                sl_v8_f64 gw = WIDE8(gr + j), dh = w ? gw * WIDE8(w + j) : gw;
                sl_v8_f64 xh = (WIDE8(xr + j) - m) * rs;
                V8 d = LOAD8(dxr + j) + __builtin_convertvector(rs * (dh - sd - xh * sdx), V8);
                STORE8(dxr + j, d);
                if (dw) sl_v8_store_f64(dw + j, sl_v8_load_f64(dw + j) + gw * xh);
                if (db) sl_v8_store_f64(db + j, sl_v8_load_f64(db + j) + gw);
            }
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                dxr[j] += (T)(rs * (dh - sd - (xr[j] - m) * rs * sdx));
                if (dw) dw[j] += gr[j] * ((xr[j] - m) * rs);
                if (db) db[j] += gr[j];
            }
            continue;
        }
        if (dw) {
            for (int64_t j = 0; j < C8; j += 8) {
                sl_v8_f64 acc = sl_v8_load_f64(dw + j);
                acc += WIDE8(gr + j) * ((WIDE8(xr + j) - m) * rs);
                sl_v8_store_f64(dw + j, acc);
            }
            for (int64_t j = C8; j < C; j++) dw[j] += gr[j] * ((xr[j] - m) * rs);
        }
        if (db) {
            for (int64_t j = 0; j < C8; j += 8) {
                sl_v8_f64 acc = sl_v8_load_f64(db + j);
                acc += WIDE8(gr + j);
                sl_v8_store_f64(db + j, acc);
            }
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

#undef V8
#undef LOAD8
#undef WIDE8
#undef STORE8
