/* ops/layer_norm_kernels.h — the layer norm kernels, written once over a type T and included by
 * layer_norm.c with T = float and with T = double (SUF names them: _f32, _f64). Statistics and
 * gradient sums are in double, over the 8 double lanes of ops/rows.h. The backward kernel
 * ACCUMULATES into dx. */
#include <tgmath.h>

/* 8 consecutive T's as a vector, and widened to double. */
typedef T FN(v8) __attribute__((vector_size(8 * sizeof(T))));

static inline FN(v8) FN(ld8)(const T *p)
{
    FN(v8) v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vd8 FN(ld8d)(const T *p) { return __builtin_convertvector(FN(ld8)(p), vd8); }

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
        vd8 s8 = {0}, v8 = {0};
        for (int64_t j = 0; j < C8; j += 8) s8 += FN(ld8d)(xr + j);
        double s = hsum8(s8);
        for (int64_t j = C8; j < C; j++) s += xr[j];
        double m = s / (double)C;
        for (int64_t j = 0; j < C8; j += 8) {
            vd8 d = FN(ld8d)(xr + j) - m;
            v8 += d * d;
        }
        double v = hsum8(v8);
        for (int64_t j = C8; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        double rs = 1 / sqrt(v / (double)C + eps);
        for (int64_t j = 0; j < C8; j += 8) {
            FN(v8) h = __builtin_convertvector((FN(ld8d)(xr + j) - m) * rs, FN(v8));
            if (w) h *= FN(ld8)(w + j);
            if (b) h += FN(ld8)(b + j);
            memcpy(yr + j, &h, sizeof h);
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
            vd8 sd8 = {0}, sdx8 = {0}; /* sums of dxhat and of dxhat * xhat */
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 dh = w ? FN(ld8d)(gr + j) * FN(ld8d)(w + j) : FN(ld8d)(gr + j);
                sd8 += dh;
                sdx8 += dh * ((FN(ld8d)(xr + j) - m) * rs);
            }
            double sd = hsum8(sd8), sdx = hsum8(sdx8);
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                sd += dh;
                sdx += dh * ((xr[j] - m) * rs);
            }
            sd /= (double)C;
            sdx /= (double)C;
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 dh = w ? FN(ld8d)(gr + j) * FN(ld8d)(w + j) : FN(ld8d)(gr + j);
                vd8 xh = (FN(ld8d)(xr + j) - m) * rs;
                FN(v8) d = FN(ld8)(dxr + j) + __builtin_convertvector(rs * (dh - sd - xh * sdx),
                                                                      FN(v8));
                memcpy(dxr + j, &d, sizeof d);
            }
            for (int64_t j = C8; j < C; j++) {
                double dh = w ? (double)gr[j] * w[j] : gr[j];
                dxr[j] += (T)(rs * (dh - sd - (xr[j] - m) * rs * sdx));
            }
        }
        if (dw) {
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 acc;
                memcpy(&acc, dw + j, sizeof acc);
                acc += FN(ld8d)(gr + j) * ((FN(ld8d)(xr + j) - m) * rs);
                memcpy(dw + j, &acc, sizeof acc);
            }
            for (int64_t j = C8; j < C; j++) dw[j] += gr[j] * ((xr[j] - m) * rs);
        }
        if (db) {
            for (int64_t j = 0; j < C8; j += 8) {
                vd8 acc;
                memcpy(&acc, db + j, sizeof acc);
                acc += FN(ld8d)(gr + j);
                memcpy(db + j, &acc, sizeof acc);
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
