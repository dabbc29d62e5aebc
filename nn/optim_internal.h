/* nn/optim_internal.h — what checkpoint.c needs to know about an optimizer. Not installed.
 *
 * An optimizer's state is a list of named tensors in the registry's arena, allocated once when
 * the optimizer is made, so that a checkpoint can save and restore it like the parameters:
 *   AdamW: "optim.m.<param>", "optim.v.<param>" (the moments, the parameter's dtype and shape)
 *          and "optim.step.<param>" (f64 scalar: the updates that parameter has had, which
 *          drives its bias correction, as torch keeps state["step"] per parameter);
 *   SGD:   "optim.momentum.<param>" when momentum != 0, else nothing.
 * Its hyperparameters are described by metadata pairs ("optim.beta1" = "0.90000000000000002",
 * ...) that a training checkpoint stores and checks on load.
 */
#ifndef SL_NN_OPTIM_INTERNAL_H
#define SL_NN_OPTIM_INTERNAL_H

#include "internal.h"

typedef enum { SL__OPTIM_ADAMW, SL__OPTIM_SGD } sl__optim_kind;

typedef struct {
    const char *name; /* "optim.m.blocks.0.attn.qkv.weight", in the registry's arena */
    sl_tensor *t;
} sl__optim_state;

enum { SL__OPTIM_HYPER = 4 };

struct sl_optim {
    sl__optim_kind kind;
    sl_params *ps;
    int n_params;        /* the registry's count when the optimizer was made */
    int64_t steps;       /* successful sl_optim_step calls */
    /* AdamW: beta1, beta2, eps, weight_decay. SGD: momentum, weight_decay. */
    const char *hyper_names[SL__OPTIM_HYPER];
    double hyper[SL__OPTIM_HYPER];
    int n_hyper;
    int n_state;
    sl__optim_state *state; /* n_state entries, heap */
    int64_t *ends;          /* n_params entries, heap: a step's gradient sizes, summed */
};

const char *sl__optim_kind_name(const sl_optim *opt); /* "adamw", "sgd" */

#endif
