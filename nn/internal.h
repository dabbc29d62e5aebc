/* nn/internal.h — helpers shared by the modules, optimizers and checkpoints. Not installed. */
#ifndef SL_NN_INTERNAL_H
#define SL_NN_INTERNAL_H

#include "../ops/internal.h"
#include <shortlong/nn.h>

#endif
