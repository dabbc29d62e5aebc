/* TEMPORARY: minimal sl_reshape until ops/shape.c lands. */
#include "../tensor/internal.h"
#include <shortlong/ops.h>
sl_tensor *sl_reshape(sl_tensor *a, int ndim, const int64_t *shape)
{
    sl_tensor *c = sl__contig(a);
    sl_tensor *v = sl__alias(c);
    v->ndim = ndim;
    memcpy(v->shape, shape, sizeof(int64_t) * ndim);
    sl__contiguous_strides(ndim, shape, v->strides);
    return v;
}
