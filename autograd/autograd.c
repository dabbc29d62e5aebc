/* autograd/autograd.c — grad mode, recording, and the backward engine.
 *
 * backward(out): a depth-first walk from out's node lists every node it depends on in
 * post-order (inputs before the ops that use them); running the list in reverse visits each
 * node after every consumer of its output has added its share of the gradient. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Thread_local bool grad_disabled;

bool sl_grad_enabled(void) { return !grad_disabled; }

bool sl_set_grad_enabled(bool enabled)
{
    bool prev = !grad_disabled;
    grad_disabled = !enabled;
    return prev;
}

/* ---------------------------------------------------------------- evaluation scope */

static _Thread_local int eval_depth; /* the calling thread's open scopes */

sl_eval_scope sl_eval_begin(sl_arena *scratch)
{
    sl_eval_scope s = {0};
    if (eval_depth == SL_EVAL_MAX_DEPTH) {
        sl_set_error(SL_ERR_STATE, "sl_eval_begin: %d scopes open already, the most there can be",
                     SL_EVAL_MAX_DEPTH);
        return s;
    }
    if (scratch && scratch == sl_arena_current()) {
        sl_set_error(SL_ERR_ARG, "sl_eval_begin: the scratch arena is the current arena; its "
                                 "reset at sl_eval_end would release the caller's tensors");
        return s;
    }
    sl_arena *a = scratch ? scratch : sl__thread_scratch(eval_depth);
    if (!a) return s;
    s.active = true;
    s.arena = a;
    s.depth = ++eval_depth;
    s.prev_arena = sl_arena_set(a);
    s.prev_grad = sl_set_grad_enabled(false);
    return s;
}

bool sl_eval_end(sl_eval_scope *s)
{
    if (!s || !s->active) return true;
    if (s->depth != eval_depth)
        return sl_set_error(SL_ERR_STATE,
                            "sl_eval_end: scopes end innermost first; this one is at depth %d, "
                            "the innermost at %d",
                            s->depth, eval_depth);
    sl_set_grad_enabled(s->prev_grad);
    sl_arena_set(s->prev_arena);
    sl_arena_reset(s->arena);
    eval_depth--;
    s->active = false;
    return true;
}

/* ---------------------------------------------------------------- leaves */

sl_tensor *sl_requires_grad(sl_tensor *t, bool requires_grad)
{
    SL_CHECK_TENSOR("sl_requires_grad", t);
    if (t->node)
        return SL_FAIL(SL_ERR_STATE,
                       "sl_requires_grad: %s %s was made by %s; only leaves take the flag "
                       "(sl_detach first)",
                       sl_dtype_name(t->dtype), sl_shape_str(t), t->node->op);
    if (requires_grad && !sl__check_float("sl_requires_grad", t)) return NULL;
    t->requires_grad = requires_grad;
    return t;
}

void sl_zero_grad(sl_tensor *t)
{
    if (t && t->grad) sl_fill(t->grad, 0.0);
}

sl_tensor *sl_detach(const sl_tensor *t)
{
    SL_CHECK_TENSOR("sl_detach", t);
    return sl__alias("sl_detach", t);
}

/* ---------------------------------------------------------------- observers */

static _Thread_local const sl_autograd_observer *observers[SL_MAX_OBSERVERS];
static _Thread_local int n_observers;

bool sl_autograd_add_observer(const sl_autograd_observer *obs)
{
    if (!obs) return sl_set_error(SL_ERR_ARG, "sl_autograd_add_observer: observer is NULL");
    for (int i = 0; i < n_observers; i++)
        if (observers[i] == obs)
            return sl_set_error(SL_ERR_ARG, "sl_autograd_add_observer: already added");
    if (n_observers == SL_MAX_OBSERVERS)
        return sl_set_error(SL_ERR_ARG, "sl_autograd_add_observer: %d observers already",
                            SL_MAX_OBSERVERS);
    observers[n_observers++] = obs;
    return true;
}

bool sl_autograd_remove_observer(const sl_autograd_observer *obs)
{
    for (int i = 0; i < n_observers; i++)
        if (observers[i] == obs) {
            memmove(observers + i, observers + i + 1,
                    sizeof *observers * (size_t)(n_observers - i - 1));
            n_observers--;
            return true;
        }
    return false;
}

/* Calls callback `f` of every observer that has one, with the arguments after user. */
#define NOTIFY(f, ...)                                                                           \
    for (int i_ = 0; i_ < n_observers; i_++)                                                     \
        if (observers[i_]->f) observers[i_]->f(observers[i_]->user, __VA_ARGS__)

static bool want_grad_ready(void)
{
    for (int i = 0; i < n_observers; i++)
        if (observers[i]->grad_ready) return true;
    return false;
}

/* ---------------------------------------------------------------- recording */

bool sl_record(sl_node **node, const char *op, sl_tensor *out, int n_in, sl_tensor *const *in,
               sl_backward_fn backward, size_t saved_bytes)
{
    *node = NULL;
    if (grad_disabled || !out) return true;
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= in[i] && in[i]->requires_grad;
    if (!any) return true;
    sl_arena *a = out->arena;
    sl_node *n = sl_arena_alloc(a, sizeof *n, 16);
    sl_tensor **ins = sl_arena_alloc(a, sizeof *ins * (size_t)(n_in ? n_in : 1), 16);
    void *saved = saved_bytes ? sl_arena_alloc(a, saved_bytes, 64) : NULL;
    if (!n || !ins || (saved_bytes && !saved)) return false;
    memset(n, 0, sizeof *n);
    memcpy(ins, in, sizeof *ins * (size_t)n_in);
    if (saved) memset(saved, 0, saved_bytes);
    n->op = op;
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    n->in = ins;
    n->saved = saved;
    out->requires_grad = true;
    out->node = n;
    *node = n;
    NOTIFY(recorded, n);
    return true;
}

bool sl_save_for_backward(sl_node *n, sl_tensor *t)
{
    if (!n || !t) return true;
    for (int i = 0; i < n->n_kept; i++)
        if (n->kept[i] == t) return true;
    if (n->n_kept == SL_MAX_SAVED)
        return sl_set_error(SL_ERR_STATE, "sl_save_for_backward: %s keeps more than %d tensors",
                            n->op, SL_MAX_SAVED);
    n->kept[n->n_kept] = t;
    n->kept_version[n->n_kept++] = t->version ? *t->version : 0;
    return true;
}

/* What a kept tensor is to the node, for a message: "input 1 (blocks.0.ln1.weight) f32 [64]". */
static const char *kept_what(const sl_node *n, const sl_tensor *t, char *buf, size_t cap)
{
    int k = -1;
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] && n->in[i]->data == t->data && n->in[i]->version == t->version) k = i;
    int len = t == n->out ? snprintf(buf, cap, "its output")
              : k >= 0    ? snprintf(buf, cap, "input %d", k)
                          : snprintf(buf, cap, "a copy of an input");
    const char *name = t->name ? t->name : k >= 0 ? n->in[k]->name : NULL;
    if (len >= 0 && (size_t)len < cap)
        snprintf(buf + len, cap - (size_t)len, "%s%s%s %s %s", name ? " (" : "", name ? name : "",
                 name ? ")" : "", sl_dtype_name(t->dtype), sl_shape_str(t));
    return buf;
}

/* Whether every tensor the node kept still has the version it had when it was kept; else
 * reports the first that does not. */
static bool kept_unchanged(const sl_node *n)
{
    for (int i = 0; i < n->n_kept; i++) {
        const sl_tensor *t = n->kept[i];
        if (!t->version || *t->version == n->kept_version[i]) continue;
        char what[256];
        return sl_set_error(SL_ERR_STATE,
                            "sl_backward: %s needs %s as it was in the forward, but it was "
                            "written in place since (version %u, now %u): its gradient would be "
                            "wrong; change it after the backward, or pass the op a copy",
                            n->op, kept_what(n, t, what, sizeof what), n->kept_version[i],
                            *t->version);
    }
    return true;
}

/* Spare gradient buffers, during a backward: the gradient of a node's output is dead once the
 * node's backward has run (every consumer of the output ran before it), so its storage is kept
 * here and handed to the next intermediate gradient of the same dtype, element count and arena.
 * A backward then holds the gradients still live, a layer's worth or so, rather than one per
 * intermediate tensor, as it would if each stayed until the arena's reset. */
static _Thread_local sl_tensor **spare;
static _Thread_local size_t n_spare;
static _Thread_local bool recycling; /* inside run_backward */
static _Thread_local bool consuming; /* inside a run_backward without SL_RETAIN_GRAPH */

/* Keeps g's storage for reuse; false (nothing kept) if the list cannot grow. */
static void keep_spare(sl_tensor *g)
{
    sl_tensor **s = sl__scratch(SL__SCRATCH_SPARE_GRADS, sizeof *s * (n_spare + 1));
    if (!s) return;
    spare = s;
    spare[n_spare++] = g;
}

/* A contiguous buffer for t's gradient from the spares (zeroed if zero), or NULL if none
 * fits. */
static sl_tensor *reuse_spare(const sl_tensor *t, bool zero)
{
    int64_t n = sl_numel(t);
    for (size_t i = n_spare; i-- > 0;) {
        sl_tensor *g = spare[i];
        if (g->dtype != t->dtype || g->arena != t->arena || sl_numel(g) != n) continue;
        spare[i] = spare[--n_spare];
        sl_arena *prev = sl_arena_set(t->arena);
        sl_tensor *v = sl__alias("sl_backward", g); /* the same storage, t's shape */
        sl_arena_set(prev);
        if (!v) return NULL;
        v->ndim = t->ndim;
        memcpy(v->shape, t->shape, sizeof v->shape);
        sl__contiguous_strides(v->ndim, v->shape, v->strides);
        v->offset = 0;
        if (zero) memset(v->data, 0, (size_t)n * sl_dtype_size(v->dtype));
        return v;
    }
    return NULL;
}

/* The gradient buffer of t: its node's (intermediate) or its own (leaf), made on first use in
 * the tensor's own arena (or from the spares): zeroed, or (zero false: the caller overwrites
 * it) with whatever the memory held; *made is set when this call made it. */
static sl_tensor *grad_buffer(sl_tensor *t, bool zero, bool *made)
{
    sl_tensor **slot = t->node ? &t->node->grad : &t->grad;
    if (*slot) return *slot;
    if (recycling && t->node) *slot = reuse_spare(t, zero);
    if (!*slot) {
        sl_arena *prev = sl_arena_set(t->arena);
        *slot = (zero ? sl_zeros : sl_empty)(t->dtype, t->ndim, t->shape);
        sl_arena_set(prev);
    }
#ifndef NDEBUG
    /* debug builds: an unzeroed buffer holds NaN, so an element its backward fails to write
     * shows up in every gradient test */
    if (*slot && !zero)
        memset((*slot)->data, 0xff, (size_t)sl_numel(*slot) * sl_dtype_size(t->dtype));
#endif
    *made = *slot != NULL;
    return *slot;
}

/* Input i of node, if it takes a gradient. */
static sl_tensor *grad_input(sl_node *node, int i)
{
    if (!node || i < 0 || i >= node->n_in) return NULL;
    sl_tensor *t = node->in[i];
    return t && t->requires_grad ? t : NULL;
}

sl_tensor *sl_input_grad(sl_node *node, int i)
{
    sl_tensor *t = grad_input(node, i);
    bool made = false;
    sl_tensor *g = t ? grad_buffer(t, true, &made) : NULL;
    if (g) sl__bump(g); /* the caller writes it */
    return g;
}

/* Whether input i's tensor is also another input of node (its gradient then gets two
 * contributions from this one backward). */
static bool input_repeated(const sl_node *node, int i)
{
    const sl_tensor *t = node->in[i];
    for (int k = 0; k < node->n_in; k++) {
        const sl_tensor *u = node->in[k];
        if (k != i && u && (u == t || (u->node && u->node == t->node))) return true;
    }
    return false;
}

sl_tensor *sl_input_grad_overwrite(sl_node *node, int i, bool *overwrite)
{
    bool made = false;
    sl_tensor *t = grad_input(node, i);
    /* an input that is also another input (sl_linear(b, W, b)) gets a zeroed buffer, to
     * accumulate into: its other contribution may be written first */
    bool zero = t && input_repeated(node, i);
    sl_tensor *g = t ? grad_buffer(t, zero, &made) : NULL;
    made = made && !zero;
    if (overwrite) *overwrite = made;
    if (g) sl__bump(g);
    return g;
}

bool sl_input_grad_pass(sl_node *node, int i)
{
    sl_tensor *t = grad_input(node, i), *g = node ? node->grad : NULL;
    if (!t || !t->node || t->node->grad || !g || !recycling || node->grad_passed ||
        g->dtype != t->dtype || g->arena != t->arena || !sl__same_shape(g, t) ||
        !sl_is_contiguous(g) || g->offset != 0)
        return false;
    if (input_repeated(node, i)) return false; /* x + x: both would write one buffer */
    t->node->grad = g; /* the engine then leaves it out of the spares (run_backward) */
    node->grad_passed = true;
    sl__bump(g);
    return true;
}

typedef struct {
    char *dst;
    const char *src;
    size_t es;
} copy_job;

static void copy_range(void *ctx, int64_t e0, int64_t e1)
{
    const copy_job *j = ctx;
    memcpy(j->dst + (size_t)e0 * j->es, j->src + (size_t)e0 * j->es, (size_t)(e1 - e0) * j->es);
}

bool sl__input_grad_identity(sl_node *node, int i)
{
    if (sl_input_grad_pass(node, i)) return true;
    bool fresh = false;
    sl_tensor *g = sl_input_grad_overwrite(node, i, &fresh);
    if (!g) return false;
    if (!fresh) { /* accumulate straight into the gradient */
        sl__accumulate(g, node->grad);
        return true;
    }
    copy_job j = {sl_ptr(g), sl_ptr(node->grad), sl_dtype_size(g->dtype)}; /* both contiguous */
    sl_parallel_for(sl_numel(g), 1 << 14, copy_range, &j);
    return true;
}

/* ---------------------------------------------------------------- topological order */

typedef struct {
    sl_node *node;
    int next_input;
} frame;

static atomic_uint epoch_counter;

/* Makes room for `need` entries of `elem` bytes in the slot's buffer (contents kept). */
static bool grow(void **buf, sl__scratch_slot slot, size_t need, size_t elem)
{
    void *p = sl__scratch(slot, need * elem);
    if (!p) return sl_set_error(SL_ERR_OOM, "sl_backward: out of memory for the node list");
    *buf = p;
    return true;
}

/* Input i of n lives in an arena that was reset after the forward. Its header is not read: it
 * may hold something else now. */
static bool released_input(const sl_node *n, int i)
{
    return sl_set_error(SL_ERR_STATE,
                        "sl_backward: input %d of %s (which made %s %s) was released by a reset "
                        "of the arena it was made in (sl_arena_reset) before the backward; keep "
                        "an op's inputs in an arena that outlives its backward",
                        i, n->op, sl_dtype_name(n->out->dtype), sl_shape_str(n->out));
}

/* Lists the nodes reachable from root in *order_out, inputs before consumers; fails if an input
 * of one of them was released (every input is checked before its header is read). The list and the
 * depth-first stack are the thread's scratch (tensor/pool.c), kept between calls, so a warm
 * backward allocates nothing; the list is valid until the thread's next backward. */
static bool topo_sort(sl_node *root, sl_node ***order_out, size_t *count)
{
    unsigned epoch = atomic_fetch_add(&epoch_counter, 1) + 1;
    sl_node **order = NULL;
    frame *stack = NULL;
    size_t n = 0, sp = 0;
    if (!grow((void **)&stack, SL__SCRATCH_TOPO_STACK, 1, sizeof *stack)) return false;
    stack[sp++] = (frame){root, 0};
    root->visit = epoch;
    while (sp) {
        frame *f = &stack[sp - 1];
        if (f->next_input < f->node->n_in) {
            int i = f->next_input++;
            sl_tensor *t = f->node->in[i];
            if (t && !sl__is_live(t)) return released_input(f->node, i);
            sl_node *c = t ? t->node : NULL;
            if (c && t->requires_grad && c->visit != epoch) {
                c->visit = epoch;
                if (!grow((void **)&stack, SL__SCRATCH_TOPO_STACK, sp + 1, sizeof *stack))
                    return false;
                stack[sp++] = (frame){c, 0};
            }
            continue;
        }
        if (!grow((void **)&order, SL__SCRATCH_TOPO, n + 1, sizeof *order)) return false;
        order[n++] = f->node;
        sp--;
    }
    *order_out = order;
    *count = n;
    return true;
}

/* ---------------------------------------------------------------- backward */

/* A leaf and the position in the order of the node after whose backward it is final. */
typedef struct {
    size_t k;
    sl_tensor *leaf;
} final_leaf;

/* For grad_ready: the leaves reachable through order[0..count), each with the node that uses it
 * last when the order runs backwards (the one of smallest k), sorted by that k. */
static bool final_leaves(sl_node **order, size_t count, final_leaf **out, size_t *n_out)
{
    unsigned epoch = atomic_fetch_add(&epoch_counter, 1) + 1;
    final_leaf *fin = NULL;
    size_t n = 0;
    for (size_t k = 0; k < count; k++)
        for (int i = 0; i < order[k]->n_in; i++) {
            sl_tensor *t = order[k]->in[i];
            if (!t || t->node || !t->requires_grad || t->mark == epoch) continue;
            t->mark = epoch;
            if (!grow((void **)&fin, SL__SCRATCH_TOPO_LEAVES, n + 1, sizeof *fin)) return false;
            fin[n++] = (final_leaf){k, t};
        }
    *out = fin;
    *n_out = n;
    return true;
}

/* Runs the nodes of order[0..count) backwards (the seeded output's first). */
static bool run_backward(sl_node **order, size_t count, bool retain)
{
    final_leaf *fin = NULL;
    size_t n_fin = 0;
    if (want_grad_ready() && !final_leaves(order, count, &fin, &n_fin)) return false;
    n_spare = 0;
    recycling = true;
    consuming = !retain;
    bool ok = true;
    for (size_t k = count; k-- > 0 && ok;) {
        sl_node *n = order[k];
        if (n->grad) { /* else nothing flowed into it */
            NOTIFY(node_begin, n);
            ok = n->backward(n);
            NOTIFY(node_end, n);
            if (ok && !n->grad_passed) keep_spare(n->grad);
            n->grad = NULL;
            n->grad_passed = false;
            if (!retain) n->consumed = true;
            if (!ok) /* drop the partial sums still waiting, so a retry starts clean */
                while (k-- > 0) order[k]->grad = NULL;
        }
        for (; ok && n_fin > 0 && fin[n_fin - 1].k == k; n_fin--)
            NOTIFY(grad_ready, fin[n_fin - 1].leaf);
    }
    recycling = false;
    consuming = false;
    n_spare = 0;
    return ok;
}

bool sl__backward_consumes(void) { return recycling && consuming; }

bool sl_backward_ex(sl_tensor *out, const sl_tensor *grad_out, int flags)
{
    if (!out) return sl__null_arg("sl_backward", "out");
    if (!sl__check_live("sl_backward", out, "out") ||
        (grad_out && !sl__check_live("sl_backward", grad_out, "grad_out")))
        return false;
    if (!out->requires_grad)
        return sl_set_error(SL_ERR_STATE,
                            "sl_backward: %s %s does not require grad (no input requires grad, "
                            "or grad mode was off when it was made)",
                            sl_dtype_name(out->dtype), sl_shape_str(out));
    if (grad_out && (!sl__same_shape(out, grad_out) || grad_out->dtype != out->dtype))
        return sl_set_error(SL_ERR_SHAPE, "sl_backward: gradient %s %s does not match output %s %s",
                            sl_dtype_name(grad_out->dtype), sl_shape_str(grad_out),
                            sl_dtype_name(out->dtype), sl_shape_str(out));
    if (!grad_out && sl_numel(out) != 1)
        return sl_set_error(SL_ERR_SHAPE,
                            "sl_backward: output %s has more than one element; pass its "
                            "gradient to sl_backward_ex",
                            sl_shape_str(out));
    size_t count = 0;
    sl_node **order = NULL;
    if (out->node && !topo_sort(out->node, &order, &count)) return false;
    for (size_t k = 0; k < count; k++)
        if (order[k]->consumed)
            return sl_set_error(SL_ERR_STATE,
                                "sl_backward: the graph through %s was already consumed by an "
                                "earlier backward; pass SL_RETAIN_GRAPH to the first one to run "
                                "backward twice",
                                order[k]->op);
    /* Every kept tensor as it was, checked before any gradient is accumulated. */
    for (size_t k = 0; k < count; k++)
        if (!kept_unchanged(order[k])) return false;
    NOTIFY(backward_begin, out);
    /* Seed. */
    bool made;
    sl_tensor *g = grad_buffer(out, true, &made);
    bool ok = g != NULL;
    if (ok && grad_out) {
        sl__accumulate(g, grad_out);
        sl__bump(g);
    } else if (ok) {
        sl_set(g, 0, sl_get(g, 0) + 1.0);
    }
    if (ok && !out->node) NOTIFY(grad_ready, out); /* a leaf: final already */
    ok = ok && run_backward(order, count, flags & SL_RETAIN_GRAPH);
    NOTIFY(backward_end, out, ok);
    return ok;
}

bool sl_backward(sl_tensor *loss) { return sl_backward_ex(loss, NULL, 0); }
