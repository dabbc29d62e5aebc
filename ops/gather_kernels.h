/* ops/gather_kernels.h — the kernels of sl_gather and sl_index_select, written once over a type
 * T and included by gather.c with T = float, double and int32_t (SUF names them: _f32, _f64,
 * _i32). Each runs units [u0, u1) of the geometry g (gather.c): unit u is the outer position
 * o = u / nqb and the inner positions [q0, q0 + m) of block u % nqb, over every l along dim.
 * The backward kernel ACCUMULATES into the gradient. */

/* y[o, l, q] = x[outer(o) + inner(q) + idx[o, l, q] * x_stride(dim)], y contiguous. */
static void FN(gather_forward)(const gather_geom *g, const T *restrict x,
                               const int32_t *restrict idx, T *restrict y, int64_t u0, int64_t u1)
{
    int64_t xq[QB], iq[QB];
    const int64_t xsd = g->xs[g->dim], isd = g->is[g->dim];
    for (int64_t u = u0; u < u1; u++) {
        int64_t o = u / g->nqb, q0 = u % g->nqb * QB;
        int64_t m = g->inner - q0 < QB ? g->inner - q0 : QB, xo, io;
        outer_offsets(g, o, &xo, &io);
        inner_offsets(g, q0, m, xq, iq);
        for (int64_t l = 0; l < g->len; l++) {
            T *yl = y + (o * g->len + l) * g->inner + q0;
            const int32_t *il = idx + io + l * isd;
            for (int64_t k = 0; k < m; k++) yl[k] = x[xo + xq[k] + (int64_t)il[iq[k]] * xsd];
        }
    }
}

/* gx[outer(o) + inner(q) + idx[o, l, q] * gx_stride(dim)] += g[o, l, q], in the order of l:
 * repeated indices accumulate, each gradient element within one unit, in one order. */
static void FN(gather_backward)(const gather_geom *g, T *restrict gx, const int32_t *restrict idx,
                                const T *restrict gy, int64_t u0, int64_t u1)
{
    int64_t xq[QB], iq[QB];
    const int64_t xsd = g->xs[g->dim], isd = g->is[g->dim];
    for (int64_t u = u0; u < u1; u++) {
        int64_t o = u / g->nqb, q0 = u % g->nqb * QB;
        int64_t m = g->inner - q0 < QB ? g->inner - q0 : QB, xo, io;
        outer_offsets(g, o, &xo, &io);
        inner_offsets(g, q0, m, xq, iq);
        for (int64_t l = 0; l < g->len; l++) {
            const T *gl = gy + (o * g->len + l) * g->inner + q0;
            const int32_t *il = idx + io + l * isd;
            for (int64_t k = 0; k < m; k++) gx[xo + xq[k] + (int64_t)il[iq[k]] * xsd] += gl[k];
        }
    }
}
