/* ops/linear.h — sl_linear for the library's own modules (not installed). */
#ifndef SL_OPS_DENSE_H
#define SL_OPS_DENSE_H

#include <shortlong/ops.h>

/* sl_linear for callers whose NULL bias is never a failed call's result (a Linear layer without
 * a bias): it does not take a NULL bias for an error while an earlier, unrelated error is still
 * pending, as sl_linear does. Everything else is sl_linear. */
sl_tensor *sl__linear(sl_tensor *x, sl_tensor *weight, sl_tensor *bias, sl_activation act);

#endif
