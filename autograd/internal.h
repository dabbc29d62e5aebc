/* autograd/internal.h — the autograd layer's helpers for the library's own .c files (the
 * layers above it included). Not installed. */
#ifndef SL_AUTOGRAD_INTERNAL_H
#define SL_AUTOGRAD_INTERNAL_H

#include "../tensor/internal.h"
#include <shortlong/autograd.h>

/* Inside a backward function: true when the running backward consumes the graph (no
 * SL_RETAIN_GRAPH), so that the node's saved tensors are never read again and the backward may
 * write over them; false under SL_RETAIN_GRAPH, where a second backward (or a retry after a
 * failed one) reads them again, and outside a backward. */
bool sl__backward_consumes(void);

/* Inside a backward function: input i's gradient gets node's own, dL/dx_i += dL/dy, for an
 * input of y's shape that y passes on unchanged (x in x + b, the residual of
 * sl_linear_residual). node's buffer is handed over when nothing else has reached input i's
 * yet (sl_input_grad_pass); else a new buffer gets a copy of it, or an existing one gets it
 * added. False (an error set) when out of memory. */
bool sl__input_grad_identity(sl_node *node, int i);

#endif
