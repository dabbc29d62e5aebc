/* shortlong.h — the whole public API. See README.md for a tour. */
#ifndef SHORTLONG_H
#define SHORTLONG_H

#include "tensor.h"
#include "autograd.h"
#include "ops.h"
#include "nn.h"

#endif
