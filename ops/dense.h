/* ops/dense.h — sl_dense for the library's own modules (not installed). */
#ifndef SL_OPS_DENSE_H
#define SL_OPS_DENSE_H

#include <shortlong/ops.h>

/* sl_dense for callers whose NULL bias is never a failed call's result (a Linear layer without
 * a bias): it does not take a NULL bias for an error while an earlier, unrelated error is still
 * pending, as sl_dense does. Everything else is sl_dense. */
sl_tensor *sl__dense(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act);

#endif
