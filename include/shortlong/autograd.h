/* shortlong/autograd.h — reverse-mode autograd on a define-by-run tape, and gradcheck.
 *
 * Every op whose inputs require grad (while grad mode is on) records a node: its name, its
 * inputs, its output, whatever its backward needs (`saved`), and its backward function. The
 * nodes live in the arena of the op's output, so resetting the step arena drops the tape.
 * sl_backward() sorts the nodes reachable from the output topologically and runs each
 * backward once, in reverse order. Backward functions ACCUMULATE (+=) into the gradients of
 * their inputs, so fan-in needs nothing special.
 *
 * Gradients of leaves (tensors made by creation functions, with requires_grad set) accumulate
 * in leaf->grad, allocated in the leaf's own arena, until sl_zero_grad(). Gradients of
 * intermediate tensors are not kept.
 *
 * A backward consumes the graph: a second backward through the same nodes is an SL_ERR_STATE
 * error unless the first one passed SL_RETAIN_GRAPH.
 */
#ifndef SHORTLONG_AUTOGRAD_H
#define SHORTLONG_AUTOGRAD_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------- grad mode */

bool sl_grad_enabled(void);
/* Turns recording on or off for the calling thread; returns the previous state.
 *     bool prev = sl_set_grad_enabled(false);  ...no nodes, no saved memory...
 *     sl_set_grad_enabled(prev);                                               */
bool sl_set_grad_enabled(bool enabled);

/* ---------------------------------------------------------------- evaluation scope */

/* Evaluation (a validation loss, a sample) without a tape and without filling the caller's
 * arena, in one call each way:
 *     sl_eval_scope s = sl_eval_begin(NULL);
 *     double loss = sl_item(sl_gpt_loss(model, idx, targets));
 *     sl_eval_end(&s);
 * sl_eval_begin turns grad mode off and makes `scratch` the current arena; with scratch NULL,
 * an arena of the scope's own (one per nesting level, kept by the thread for its next scopes,
 * so that repeated evaluations stop allocating from the heap; never free it). sl_eval_end
 * restores the grad mode and the current arena as they were, and resets the scratch arena.
 * Tensors made inside do not outlive sl_eval_end: take what you need out first (sl_item,
 * sl_copy_out, or sl_copy_into a tensor made before the scope); a tensor from inside used
 * after it is refused as released (sl_arena_reset). Tensors made before the scope may be used
 * inside. Scopes nest, up to SL_EVAL_MAX_DEPTH, and end innermost first.
 * sl_eval_begin fails, changing nothing, when scratch is the current arena (the reset at the
 * end would release the caller's tensors), when nested too deep, or on OOM: it records the
 * error and returns a scope with `active` false, which sl_eval_end ignores. sl_eval_end fails
 * (SL_ERR_STATE, changing nothing) on a scope that is not the innermost. */
enum { SL_EVAL_MAX_DEPTH = 8 };
typedef struct sl_eval_scope {
    bool active;     /* begun and not yet ended */
    sl_arena *arena; /* the scratch arena the scope's tensors go to */
    /* internal: what sl_eval_end restores, and the nesting level */
    sl_arena *prev_arena;
    bool prev_grad;
    int depth;
} sl_eval_scope;
sl_eval_scope sl_eval_begin(sl_arena *scratch);
bool sl_eval_end(sl_eval_scope *scope);

/* Marks a leaf as requiring grad. Fails (SL_ERR_STATE) on a tensor made by an op, and
 * (SL_ERR_DTYPE) on an i32 tensor. Returns t, or NULL on error. */
sl_tensor *sl_requires_grad(sl_tensor *t, bool requires_grad);
/* Zeroes t->grad if it exists (keeps the buffer). */
void sl_zero_grad(sl_tensor *t);
/* A view of t's data with no history and no grad. */
sl_tensor *sl_detach(const sl_tensor *t);

/* ---------------------------------------------------------------- backward */

enum { SL_RETAIN_GRAPH = 1 };

/* Backpropagates from a one-element tensor (a loss), seeding its gradient with 1. */
bool sl_backward(sl_tensor *loss);
/* Backpropagates from any tensor with an explicit gradient of the same shape and dtype
 * (NULL is allowed for a one-element output and means 1, as in sl_backward).
 * flags: 0 or SL_RETAIN_GRAPH. */
bool sl_backward_ex(sl_tensor *out, const sl_tensor *grad_out, int flags);

/* ---------------------------------------------------------------- observers */

/* Callbacks that watch the tape and the backward engine of the calling thread: a profiler times
 * ops with them, and a data-parallel trainer starts reducing a gradient as soon as it is final.
 * Any callback may be NULL. They run on the thread that records or runs the backward, never
 * inside a parallel job, and must not record ops themselves.
 *   recorded        a node was just recorded (forward): node->op, node->out, node->in;
 *   backward_begin  sl_backward / sl_backward_ex starts from `out`;
 *   node_begin/end  around each node's backward function (node_end also after a failure);
 *   grad_ready      leaf->grad is final for this backward: every node that accumulates into it
 *                   has run. Once per reachable leaf that requires grad, in the order they
 *                   become final (the loss itself first, when it is a leaf). A leaf that no
 *                   gradient reached still gets the call; its grad may then be NULL or zero;
 *   backward_end    the backward ended, ok or not. */
typedef struct sl_autograd_observer {
    void *user;
    void (*recorded)(void *user, const sl_node *node);
    void (*backward_begin)(void *user, const sl_tensor *out);
    void (*node_begin)(void *user, const sl_node *node);
    void (*node_end)(void *user, const sl_node *node);
    void (*grad_ready)(void *user, sl_tensor *leaf);
    void (*backward_end)(void *user, const sl_tensor *out, bool ok);
} sl_autograd_observer;

enum { SL_MAX_OBSERVERS = 8 };
/* Adds an observer for the calling thread (the struct is not copied: keep it alive until it is
 * removed). Observers are called in the order they were added. False (SL_ERR_ARG) if it is NULL
 * or already there, or SL_MAX_OBSERVERS are. */
bool sl_autograd_add_observer(const sl_autograd_observer *obs);
/* Removes it; false if it was not there. */
bool sl_autograd_remove_observer(const sl_autograd_observer *obs);

/* ---------------------------------------------------------------- custom ops */

/* Returns false on failure (with the error recorded). */
typedef bool (*sl_backward_fn)(sl_node *node);

enum { SL_MAX_SAVED = 8 }; /* tensors a node can keep for its backward (sl_save_for_backward) */

struct sl_node {
    const char *op;          /* "sl_matmul", ... */
    sl_backward_fn backward;
    sl_tensor *out;          /* the op's output */
    sl_tensor *grad;         /* d(loss)/d(out), contiguous, during backward; NULL otherwise */
    int n_in;
    sl_tensor **in;          /* the op's inputs */
    void *saved;             /* op-specific state: saved_bytes zeroed bytes, 64-byte aligned */
    int n_kept;              /* the tensors sl_save_for_backward kept, and their versions */
    sl_tensor *kept[SL_MAX_SAVED];
    uint32_t kept_version[SL_MAX_SAVED];
    uint32_t visit;          /* internal: topological sort */
    bool consumed;           /* internal: a backward ran through it without SL_RETAIN_GRAPH */
    bool grad_passed;        /* internal: its backward gave its gradient buffer to an input */
};

/* For op writers. If grad mode is on and any input requires grad, records `out` as made by op
 * `op` from in[0..n_in-1]: sets out->requires_grad and out->node and stores the node in *node,
 * with a `saved` block of saved_bytes zeroed bytes for the op to fill. Otherwise *node = NULL.
 * Returns false only on OOM (error set): the op must then fail rather than return an output
 * whose gradient would silently be missing.
 *     sl_node *n;
 *     if (!sl_record(&n, "sl_mul", out, 2, (sl_tensor *[]){a, b}, mul_backward, 0)) return NULL;
 */
bool sl_record(sl_node **node, const char *op, sl_tensor *out, int n_in, sl_tensor *const *in,
               sl_backward_fn backward, size_t saved_bytes);
/* For op writers: declares that node's backward reads t's values (an input, the output, or a
 * copy the op made), recording t's version (tensor.h). Declare every tensor the backward
 * reads, and only those. If t is written in place before the backward runs, the backward fails
 * before accumulating any gradient, naming the op and t, instead of using the new values.
 * node may be NULL (nothing recorded: a no-op). False (SL_ERR_STATE) past SL_MAX_SAVED: fail
 * the op then. */
bool sl_save_for_backward(sl_node *node, sl_tensor *t);
/* For backward functions: the gradient buffer of input i (contiguous, its shape and dtype,
 * zero the first time it is asked for in a pass), to ACCUMULATE into. Check
 * node->in[i]->requires_grad first and skip inputs that do not (this returns NULL for them);
 * for the others NULL means OOM, with the error set: return false. */
sl_tensor *sl_input_grad(sl_node *node, int i);
/* For backward functions that STORE every element of input i's gradient (a gemm with beta 0,
 * a copy) when nothing has reached it yet: as sl_input_grad, but a buffer made by this call is
 * not zeroed first, and *overwrite says which case it is. *overwrite true: the buffer is new
 * and holds garbage (NaN in builds without NDEBUG, so a missed element shows in gradchecks):
 * write every element. False: it holds earlier contributions (or is zeroed: an input that is
 * also another input of the node always gets a zeroed buffer): accumulate, as always. Ask for
 * it just before writing it: a backward that fails after asking must not leave it unwritten. */
sl_tensor *sl_input_grad_overwrite(sl_node *node, int i, bool *overwrite);
/* For backward functions whose gradient for input i is exactly the output's gradient,
 * unchanged (an addition's): makes node->grad itself input i's gradient buffer, with nothing
 * copied, when input i is an intermediate with no gradient yet in this pass and of the same
 * dtype, shape and arena; returns true then, and the function must not write input i's
 * gradient. False: nothing happened; accumulate into sl_input_grad(node, i) as usual. At most
 * one input per node is passed; node->grad's values stay readable for the other inputs. */
bool sl_input_grad_pass(sl_node *node, int i);

/* ---------------------------------------------------------------- gradcheck */

/* A function of tensors under test. Returns its output (any shape), or NULL on error. */
typedef sl_tensor *(*sl_gradcheck_fn)(sl_tensor *const *inputs, int n_inputs, void *user);

typedef struct sl_gradcheck_opts { /* a zero field picks its default */
    double eps;       /* central-difference step; default 1e-6 */
    double atol;      /* default 1e-5 */
    double rtol;      /* default 1e-3 */
    uint64_t seed;    /* for the random projection of non-scalar outputs; default 1 */
    bool quiet;       /* do not print the failure report to stderr */
} sl_gradcheck_opts;

typedef struct sl_gradcheck_result {
    bool ok;
    int input;             /* the input with the worst element, -1 if none */
    int64_t index;         /* that element's row-major flat index */
    double analytic;       /* the analytic gradient there */
    double numeric;        /* the finite-difference gradient there */
    double excess;         /* |a - n| - (atol + rtol * |n|), worst over all elements */
    bool repeat_ok;        /* a second backward gave bitwise the same gradients */
    char message[512];     /* a human-readable report */
} sl_gradcheck_result;

/* Checks the analytic gradient of fn against central differences in float64.
 * Every floating input that requires grad must be f64 (i32 inputs pass through unperturbed).
 * A non-scalar output y is reduced to sum(w * y) with fixed random weights w, so the check
 * covers the full vector-Jacobian product. An element passes when
 * |analytic - numeric| <= atol + rtol * |numeric|. It also checks that running forward and
 * backward a second time gives bitwise the same gradients. opts may be NULL (defaults);
 * result may be NULL. At most 64 inputs. Temporary tensors go to a private arena, and the
 * inputs' gradients are left as they were (zero if they had none). Returns result->ok. */
bool sl_gradcheck(sl_gradcheck_fn fn, int n_inputs, sl_tensor *const *inputs, void *user,
                  const sl_gradcheck_opts *opts, sl_gradcheck_result *result);

#ifdef __cplusplus
}
#endif
#endif
