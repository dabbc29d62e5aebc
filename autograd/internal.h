/* autograd/internal.h — the autograd layer's helpers for the library's own .c files (the
 * layers above it included). Not installed. */
#ifndef SL_AUTOGRAD_INTERNAL_H
#define SL_AUTOGRAD_INTERNAL_H

#include "../tensor/internal.h"
#include <shortlong/autograd.h>

#endif
