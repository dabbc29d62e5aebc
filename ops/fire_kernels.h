/* ops/fire_kernels.h — FIRE's bias and its parameters' gradients, written once over a type T
 * (instantiated by fire.c, which defines fire_ctx). Everything but the bias and its gradient is
 * in double. Row i is query i, at position p = tk - tq + i; psi[d] = log(1 + |c| d). */
#include <math.h>

/* The piece of f that u falls in: the number of breakpoints below u. */
static inline int64_t FN(fire_piece)(const fire_ctx *c, double u)
{
    int64_t lo = 0, hi = c->np; /* bp[lo - 1] < u <= bp[hi] */
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (c->bp[mid] < u) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Query rows [i0, i1) of out (H, tq, tk): out[h,i,j] = f_h(psi(|p - j|) / psi_N(p)), f_h the
 * linear piece of the MLP's output h that u lies on (A u + C). */
static void FN(fire_forward_rows)(const fire_ctx *c, T *restrict out, int64_t i0, int64_t i1)
{
    const int64_t H = c->H, tq = c->tq, tk = c->tk;
    for (int64_t i = i0; i < i1; i++) {
        int64_t p = tk - tq + i;
        double N = (double)p > c->thr ? (double)p : c->thr;
        double inv = 1 / (log1p(c->ac * N) + SL_FIRE_EPS);
        for (int64_t j = 0; j < tk; j++) {
            double u = c->psi[p >= j ? p - j : j - p] * inv;
            int64_t q = FN(fire_piece)(c, u);
            const double *A = c->A + q * H, *C = c->C + q * H;
            for (int64_t h = 0; h < H; h++) out[(h * tq + i) * tk + j] = (T)(A[h] * u + C[h]);
        }
    }
}

/* Query rows [i0, i1): the gradients of the parameters from g = dL/dbias (H, tq, tk), added to
 * acc = [fc1_weight (W), fc1_bias (W), fc2_weight (H W), fc2_bias (H), c, l_mult], in double,
 * the rows in order. With a_k = w1_k u + b1_k and f_h = b2_h + sum_k w2_hk relu(a_k):
 *     df_h/dw2_hk = relu(a_k),  df_h/db2_h = 1,  and, through s_k = sum_h g_h w2_hk [a_k > 0],
 *     dL/dw1_k = s_k u,  dL/db1_k = s_k,  dL/du = sum_k s_k w1_k;
 *     u = A / B,  A = log(1 + |c| d),  B = log(1 + |c| N) + eps,  N = max(p, |m| L0):
 *     du/dc = sign(c) (d / (1 + |c| d) - u N / (1 + |c| N)) / B
 *     du/dm = -u |c| (dN/dm) / ((1 + |c| N) B),  dN/dm = sign(m) L0 where |m| L0 > p, half that
 *             where they tie (torch.maximum's rule), 0 where p is larger. */
static void FN(fire_backward_rows)(const fire_ctx *c, const T *restrict g, double *restrict acc,
                                   double *restrict gh, int64_t i0, int64_t i1)
{
    const int64_t H = c->H, W = c->W, tq = c->tq, tk = c->tk;
    double *gw1 = acc, *gb1 = gw1 + W, *gw2 = gb1 + W, *gb2 = gw2 + H * W, *gc = gb2 + H,
           *gm = gc + 1;
    for (int64_t i = i0; i < i1; i++) {
        int64_t p = tk - tq + i;
        double N = (double)p > c->thr ? (double)p : c->thr;
        double B = log1p(c->ac * N) + SL_FIRE_EPS, inv = 1 / B;
        double dN = c->thr > (double)p ? c->sm_l0 : c->thr == (double)p ? 0.5 * c->sm_l0 : 0;
        double dBdc = c->sc * N / (1 + c->ac * N), dBdm = c->ac * dN / (1 + c->ac * N);
        for (int64_t j = 0; j < tk; j++) {
            bool any = false;
            for (int64_t h = 0; h < H; h++) {
                gh[h] = (double)g[(h * tq + i) * tk + j];
                any |= gh[h] != 0;
            }
            if (!any) continue; /* a masked key, say */
            int64_t d = p >= j ? p - j : j - p;
            double A = c->psi[d], u = A * inv, gu = 0;
            for (int64_t h = 0; h < H; h++) gb2[h] += gh[h];
            for (int64_t k = 0; k < W; k++) {
                double a = c->w1[k] * u + c->b1[k];
                if (!(a > 0)) continue;
                double s = 0;
                for (int64_t h = 0; h < H; h++) {
                    s += gh[h] * c->w2[h * W + k];
                    gw2[h * W + k] += gh[h] * a;
                }
                gb1[k] += s;
                gw1[k] += s * u;
                gu += s * c->w1[k];
            }
            double dudc = (c->sc * (double)d / (1 + c->ac * (double)d) - A * inv * dBdc) * inv;
            *gc += gu * dudc;
            *gm += gu * (-A * inv * inv * dBdm);
        }
    }
}
