/* ops/cross_entropy_kernels.h — the cross-entropy kernels, written once over a type T and
 * instantiated by cross_entropy_isa.c for every SIMD level with T = float and with T = double
 * (SUF names them: _f32, _f64; T_IS_F32 says which). The f32 exponentials run SL_VF lanes at a
 * time through ops/simd.h's sl_vf_exp, the f64 ones through exp; the log-sum-exp and the loss
 * are in double either way. The backward kernel ACCUMULATES into the logits' gradient. */
#include <tgmath.h>

/* Rows [r0, r1) of x (rows, C) whose target counts: lse = log(sum_j exp(x_j)), computed as
 * max + log(sum_j exp(x_j - max)) with the sum in double, so large logits cannot overflow. */
static void FN(cross_entropy_forward)(const T *restrict x, const int32_t *restrict tgt,
                                      int32_t ignore, double *restrict lse, int64_t r0,
                                      int64_t r1, int64_t C)
{
    for (int64_t r = r0; r < r1; r++) {
        if (!ce_counted(tgt[r], ignore)) continue;
        const T *xr = x + r * C;
        T mx = xr[0];
        for (int64_t j = 1; j < C; j++)
            if (xr[j] > mx) mx = xr[j];
#if T_IS_F32 /* SL_VF logits at a time through the vector exp, the last C % SL_VF padded with
               -inf (e^-inf = 0), the sum in 8 double lanes (ops/simd.h) */
        sl_acc8 acc = {0};
        for (int64_t j = 0; j < C; j += SL_VF) {
            sl_vf v = C - j >= SL_VF ? sl_vf_load(xr + j)
                                     : sl_vf_load_part(xr + j, C - j, -INFINITY);
            acc = sl_acc8_add_vf(acc, sl_vf_exp(v - mx));
        }
        double s = sl_acc8_hsum(acc);
#else
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += exp(xr[j] - mx);
#endif
        lse[r] = mx + log(s);
    }
}

/* The sum over counted rows of -log_softmax(x)[t] = lse - x[t], in row order. */
static double FN(cross_entropy_total)(const T *restrict x, const int32_t *restrict tgt,
                                      int32_t ignore, const double *restrict lse, int64_t rows,
                                      int64_t C)
{
    double total = 0;
    for (int64_t r = 0; r < rows; r++)
        if (ce_counted(tgt[r], ignore)) total += lse[r] - x[r * C + tgt[r]];
    return total;
}

/* Rows [r0, r1): gx += (softmax(x) - onehot(t)) * scale for counted rows, nothing for ignored
 * ones; softmax_j = exp(x_j - lse), the difference taken in double. */
static void FN(cross_entropy_backward)(const T *restrict x, const int32_t *restrict tgt,
                                       int32_t ignore, const double *restrict lse, double scale,
                                       T *restrict gx, int64_t r0, int64_t r1, int64_t C)
{
#if T_IS_F32
    const sl_vi lane = sl_vi_iota();
    const float sc = (float)scale;
#endif
    for (int64_t r = r0; r < r1; r++) {
        int32_t t = tgt[r];
        if (!ce_counted(t, ignore)) continue;
        const T *xr = x + r * C;
        T *gr = gx + r * C;
#if T_IS_F32
        for (int64_t j = 0; j < C; j += SL_VF) {
            int64_t n = C - j < SL_VF ? C - j : SL_VF;
            sl_vf v = n == SL_VF ? sl_vf_load(xr + j) : sl_vf_load_part(xr + j, n, 0);
            sl_vf p = sl_vf_exp(sl_vfd_narrow(sl_vf_widen(v) - lse[r]));
            sl_vf onehot = (sl_vf)((lane + (int32_t)j == t) & (sl_vi)sl_vf_splat(1.0f));
            sl_vf g = (p - onehot) * sc;
            if (n == SL_VF) sl_vf_store(gr + j, sl_vf_load(gr + j) + g);
            else sl_vf_store_part(gr + j, sl_vf_load_part(gr + j, n, 0) + g, n);
        }
#else
        for (int64_t j = 0; j < C; j++)
            gr[j] += (T)((exp(xr[j] - lse[r]) - (j == t)) * scale);
#endif
    }
}
