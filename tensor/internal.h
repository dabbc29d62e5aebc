/* tensor/internal.h — the tensor layer's helpers for the library's own .c files: the counted
 * heap, errors, shapes, broadcasting, strided iteration, the pool's internals. Not installed.
 *
 * Each layer has an internal header that includes the one below it and nothing above:
 *     tensor/internal.h  <-  autograd/internal.h  <-  ops/internal.h  <-  nn/internal.h
 * A .c file includes its own layer's.
 */
#ifndef SL_TENSOR_INTERNAL_H
#define SL_TENSOR_INTERNAL_H

#include <shortlong/tensor.h>

#include <stdarg.h>
#include <string.h>

/* ---------------------------------------------------------------- heap (counted) */
void *sl__malloc(size_t bytes);
void *sl__aligned_alloc(size_t align, size_t bytes);
void *sl__realloc(void *p, size_t bytes);
void sl__free(void *p);

/* ---------------------------------------------------------------- errors */
/* Records an error and evaluates to NULL: `return SL_FAIL(SL_ERR_SHAPE, "sl_op: ...", ...);` */
#define SL_FAIL(code, ...) (sl_set_error((code), __VA_ARGS__), (void *)0)

/* NULL argument: keep a pending error (the NULL came from a failed call), else report one. */
bool sl__null_arg(const char *op, const char *arg);
/* A tensor made before its arena's last reset: reports "<op>: argument '<arg>' ..." (SL_ERR_STATE)
 * and returns false; likewise SL_NONE (sl__none_arg). */
bool sl__check_live(const char *op, const sl_tensor *t, const char *arg);
/* Whether t was made in its arena's current generation (no reset since). Safe to call on a
 * header in released memory. */
bool sl__is_live(const sl_tensor *t);
/* "<op>: argument '<arg>' is SL_NONE; it is not optional". Always false. */
bool sl__none_arg(const char *op, const char *arg);
/* The argument check every op starts with: a NULL (from a failed call, or a mistake), SL_NONE,
 * or a tensor released by an arena reset returns NULL from the op. */
#define SL_CHECK_TENSOR(op, t)                                                                   \
    do {                                                                                         \
        if (!(t)) {                                                                              \
            sl__null_arg((op), #t);                                                              \
            return NULL;                                                                         \
        }                                                                                        \
        if (!sl__check_live((op), (t), #t)) return NULL;                                         \
    } while (0)
/* The same for an optional argument, which may be SL_NONE (absent): read it with sl__opt. */
#define SL_CHECK_OPTIONAL(op, t)                                                                 \
    do {                                                                                         \
        if (!(t)) {                                                                              \
            sl__null_arg((op), #t);                                                              \
            return NULL;                                                                         \
        }                                                                                        \
        if ((t) != SL_NONE && !sl__check_live((op), (t), #t)) return NULL;                       \
    } while (0)

/* An optional argument after its check: NULL for SL_NONE, else t. */
static inline sl_tensor *sl__opt(sl_tensor *t) { return t == SL_NONE ? NULL : t; }

bool sl__check_float(const char *op, const sl_tensor *t);                       /* f32 or f64 */
bool sl__check_same_dtype(const char *op, const sl_tensor *a, const sl_tensor *b);
/* Normalises a possibly negative axis into [0, ndim); reports "<op>: axis A out of range for
 * [shape]" otherwise. */
bool sl__axis(const char *op, const sl_tensor *t, int axis, int *out);

/* ---------------------------------------------------------------- tensors */
/* ndim in [0, SL_MAX_DIMS], no negative dim, numel * 8 bytes fits in int64; else reports
 * "<op>: ..." and returns false. */
bool sl__check_shape(const char *op, int ndim, const int64_t *shape);
/* A new contiguous tensor in the current arena, data uninitialised; op names the caller in the
 * message of a failure (a shape too large, out of memory). */
sl_tensor *sl__new(const char *op, sl_dtype dtype, int ndim, const int64_t *shape);
sl_tensor *sl__new_like(const char *op, const sl_tensor *t);
/* A new header sharing t's storage (shape, strides, offset copied; no grad, no node). */
sl_tensor *sl__alias(const char *op, const sl_tensor *t);
/* Bumps the version counter of t's storage (an in-place write). t may be NULL. */
static inline void sl__bump(sl_tensor *t)
{
    if (t && t->version) ++*t->version;
}
/* Scratch arena i (0 <= i < SL__THREAD_SCRATCH) of the calling thread, made on first use and
 * kept for the thread's later calls (freed when it exits, or at exit), never freed by the
 * caller: evaluation scopes run in them (autograd.c). NULL on OOM. */
enum { SL__THREAD_SCRATCH = 8 };
sl_arena *sl__thread_scratch(int i);
/* The arena's generation: bumped by every reset. */
uint32_t sl__arena_generation(const sl_arena *a);
/* A header's seal: a hash of its arena and generation, never 0. A header whose seal does not
 * match them is not one the library made (memory reused since), and its arena pointer is not
 * followed. */
static inline uint32_t sl__seal(const sl_arena *a, uint32_t generation)
{
    uint64_t x = ((uint64_t)(uintptr_t)a + generation * UINT64_C(0xD6E8FEB86659FD93)) *
                 UINT64_C(0x9E3779B97F4A7C15);
    return (uint32_t)(x >> 32) | 1;
}
/* Row-major contiguous strides for shape. */
void sl__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* t when contiguous, else a contiguous copy (no autograd); op as in sl__new. */
sl_tensor *sl__contig(const char *op, const sl_tensor *t);
bool sl__same_shape(const sl_tensor *a, const sl_tensor *b);
int64_t sl__shape_numel(int ndim, const int64_t *shape);
/* "[2,3]" for a raw shape, in the same rotating buffers as sl_shape_str. */
const char *sl__dims_str(int ndim, const int64_t *shape);

/* numpy broadcasting of two shapes; reports "<op>: shapes do not broadcast: [..] vs [..]". */
bool sl__broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                          int *nout, int64_t *sout);
/* Strides (in elements) that read t as if broadcast to (ndim, shape): 0 on broadcast dims.
 * The caller has checked that t broadcasts. */
void sl__broadcast_strides(const sl_tensor *t, int ndim, const int64_t *shape, int64_t *strides);

/* ---------------------------------------------------------------- strided iteration */
/* Visits up to 4 operands over one shape, calling fn once per innermost run with the byte
 * pointers of the run's first elements and the operands' byte strides along the run.
 * Dims are collapsed where every operand allows, so contiguous operands give one long run. */
#define SL__MAX_OPS 4
typedef void (*sl__run_fn)(void *ctx, char *const *ptr, const int64_t *bstride, int64_t n);
void sl__foreach(int nops, char *const *base, const int64_t (*strides)[SL_MAX_DIMS],
                 const size_t *esize, int ndim, const int64_t *shape, sl__run_fn fn, void *ctx);
/* sl__foreach over shape_of's shape, with each of the nops operands (any strides, each its own
 * dtype) read as broadcast to it (stride 0 on its broadcast dims). The caller has checked that
 * they broadcast. */
void sl__foreach_broadcast(sl__run_fn fn, void *ctx, int nops, sl_tensor *const *ops,
                           const sl_tensor *shape_of);
/* dst += src, where src has a shape dst broadcasts to: sums src over the broadcast dims (f32
 * sums in double). Same dtype. dst may have any strides (a view of a gradient buffer is fine,
 * and the shape ops' backwards rely on that). The backward of every broadcasting op uses it. */
void sl__accumulate_reduced(sl_tensor *dst, const sl_tensor *src);
/* dst += src, same shape, both with any strides. */
void sl__accumulate(sl_tensor *dst, const sl_tensor *src);

/* ---------------------------------------------------------------- CPU (cpu.c) */
/* SIMD levels, lowest first: the baseline the build targets, x86-64-v3 (AVX2, FMA), x86-64-v4
 * (AVX-512 F/CD/BW/DQ/VL). */
typedef enum { SL__ISA_GENERIC, SL__ISA_AVX2, SL__ISA_AVX512, SL__ISA_COUNT } sl__isa_level;
sl__isa_level sl__cpu_isa(void);         /* what the CPU has */
sl__isa_level sl__isa(void);             /* what kernels run at: the CPU's, lowered by SL_ISA */
sl__isa_level sl__isa_parse(const char *name); /* "avx2" -> SL__ISA_AVX2; SL__ISA_COUNT if unknown */
const char *sl__isa_name(sl__isa_level level);
/* Kernels compiled for every level, and picking the running CPU's: */
#include "isa.h"

/* ---------------------------------------------------------------- threads */
/* True while the calling thread runs a pool job (a nested parallel for then runs serially). */
bool sl__in_pool(void);
/* How long, in ns, a pool thread watches for work before it blocks, as things stand now
 * (tensor/pool.c: SL_POOL_SPIN_US, else 50 us, or 0 where the threads outnumber the process's
 * share of the CPUs). For tests. */
int64_t sl__pool_spin_ns(void);
/* The CPUs a cgroup CPU quota allows the process (tensor/cgroup.c): ceil(quota / period), the
 * tightest over its cgroup and their ancestors; 0 when none is set or none can be read. root
 * prefixes every path read ("" for the system's own files; tests pass a fake tree). */
int sl__cgroup_cpus(const char *root);

/* The calling thread's scratch buffer for `slot`: at least `bytes`, 64-byte aligned, kept
 * between calls and grown on demand (keeping its contents; new bytes are zero), freed when the
 * thread exits. Valid until the thread's next call for the same slot. NULL if it cannot grow
 * (no error is set: the caller decides). One slot per use that can be live at the same time. */
typedef enum {
    SL__SCRATCH_GEMM,      /* a packed matrix operand (ops/gemm.c) */
    SL__SCRATCH_TILES,     /* a fused kernel's tiles (ops/alibi_attention.c) */
    SL__SCRATCH_TOPO,      /* the backward's node list (autograd/autograd.c) */
    SL__SCRATCH_TOPO_STACK,/* and its depth-first stack */
    SL__SCRATCH_TOPO_LEAVES,/* and the leaves each node makes final (observers) */
    SL__SCRATCH_SPARE_GRADS,/* and the gradient buffers it has finished with */
    SL__SCRATCH_BACKWARD,  /* an op's temporary during its backward (linear's dL/du) */
    SL__SCRATCH_ROWS,      /* attention's inputs laid out head by head (ops/alibi_attention.c) */
    SL__SCRATCH_FORWARD,   /* an op's temporary during its forward (linear's heads' rows) */
    SL__SCRATCH_SLOTS
} sl__scratch_slot;
void *sl__scratch(sl__scratch_slot slot, size_t bytes);

/* A task: [begin, end) of a job, run by participant `worker`: 0 is the thread that started the
 * job (or any thread running one serially), 1 .. sl_get_num_threads() - 1 the pool's workers. */
typedef void (*sl__task_fn)(void *ctx, int64_t begin, int64_t end, int worker);
/* sl_parallel_for, with the worker index passed to each task, and each participant's scratch
 * for `slot` made at least `reserve` bytes before it takes a task (0: none), so that scratch
 * grows in the first job of a kind whichever thread runs which task, never later. */
void sl__parallel_for_w(int64_t n, int64_t grain, sl__task_fn fn, void *ctx,
                        sl__scratch_slot slot, size_t reserve);
/* n coarse tasks handed out one at a time, in index order (put the costliest first, so that
 * the schedule ends with small ones); scratch as in sl__parallel_for_w. Run serially, one call
 * covers them all. */
void sl__parallel_tasks(int64_t n, sl__task_fn fn, void *ctx, sl__scratch_slot slot,
                        size_t reserve);
/* The CPUs this process counts as its own (its affinity, a cgroup quota, its share among an MPI
 * job's local ranks; at least 1), read once: the pool's size unless SL_NUM_THREADS or
 * sl_set_num_threads says otherwise, and unlike the thread count a constant of the process, so
 * that work split by it splits the same way on any number of threads. */
int sl__cpu_share(void);


#endif
