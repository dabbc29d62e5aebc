/* shortlong/tensor.h — tensors, dtypes, errors, arenas, the seeded RNG and the thread pool.
 *
 * The lowest layer. The differentiable ops, views included (reshape, permute, ...), live in
 * ops.h, built on the view math in tensor/. sl_tensor itself carries the fields autograd keeps
 * per tensor (grad, node, requires_grad), so that any tensor can take part in a backward
 * without a side table: they belong to autograd (autograd.h documents them, autograd/ sets
 * them); code in tensor/ only creates tensors with them cleared (and sl_fprint shows
 * requires_grad).
 *
 * Errors. No function in shortlong exits or aborts on a user's mistake. A failing call
 * returns NULL (or false / a non-zero sl_status) and records, per thread, a status code and a
 * message that names the op and the shapes, e.g.
 *     sl_matmul: inner dims differ: [8,256,256] @ [128,512]
 * Read it with sl_error() / sl_error_message(). An op handed a NULL tensor while an error is
 * pending returns NULL without replacing the message, so a chain of calls can be checked once
 * at the end. sl_set_error_handler() installs a callback that runs on every new error;
 * sl_error_abort_handler prints the message and aborts (handy in programs and while debugging,
 * and what SL_ABORT_ON_ERROR=1 in the environment selects).
 *
 * Lifetime. Every tensor lives in an arena (a bump allocator made of reusable blocks) and is
 * never freed on its own: resetting the arena releases all its tensors at once and keeps the
 * blocks, so a loop that makes the same allocations each iteration stops touching the heap
 * after its first iteration. New tensors go to the calling thread's current arena
 * (sl_arena_set); without one, to the thread's own default arena (freed when the thread
 * exits). An arena is not locked: share one between threads only with your own locking.
 */
#ifndef SHORTLONG_TENSOR_H
#define SHORTLONG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_MAX_DIMS 8

typedef enum sl_dtype { SL_F32 = 0, SL_F64 = 1, SL_I32 = 2 } sl_dtype;

/* ---------------------------------------------------------------- errors */

typedef enum sl_status {
    SL_OK = 0,
    SL_ERR_ARG,    /* a bad argument: NULL, out of range, inconsistent */
    SL_ERR_SHAPE,  /* shapes that do not fit the op */
    SL_ERR_DTYPE,  /* a dtype the op does not take, or two that differ */
    SL_ERR_INDEX,  /* an index out of range (embedding, gather, ...) */
    SL_ERR_STATE,  /* a call at the wrong time (backward twice, no graph, ...) */
    SL_ERR_OOM,    /* out of memory */
    SL_ERR_IO,     /* a file could not be opened, read or written */
    SL_ERR_FORMAT, /* a file's contents are corrupt, truncated or of another config */
} sl_status;

typedef void (*sl_error_handler)(sl_status code, const char *message, void *user);

sl_status sl_error(void);              /* this thread's pending error, SL_OK if none */
const char *sl_error_message(void);    /* "" if none; valid until the next error or clear */
void sl_error_clear(void);
const char *sl_status_name(sl_status code);
/* Installs a handler called on every new error (process-wide); returns the previous one. */
sl_error_handler sl_set_error_handler(sl_error_handler handler, void *user);
void sl_error_abort_handler(sl_status code, const char *message, void *user);
/* Records an error (for code built on shortlong: custom ops, modules). Always returns false. */
bool sl_set_error(sl_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- arenas */

typedef struct sl_arena sl_arena;

/* block_bytes: the size of each block (0 picks 4 MiB); larger allocations get a block of their
 * own. Returns NULL on OOM. */
sl_arena *sl_arena_new(size_t block_bytes);
void sl_arena_free(sl_arena *arena);
/* Releases every tensor in the arena; keeps the blocks for reuse. Each reset starts a new
 * generation of the arena: an op, an accessor (sl_get, sl_fill, ...) or sl_backward handed a
 * tensor made before the reset fails (SL_ERR_STATE, naming the op and the argument) instead of
 * reading whatever the memory holds now. One case escapes: a stale pointer that lands exactly
 * on the header of a tensor made since is taken for that tensor. Each reset moves the arena's
 * allocations by 64 bytes, so that making the same tensors again after a reset (a training
 * loop) never does that to a tensor of the generation before. Debug builds fill released
 * memory with 0xFF bytes (NaN in f32 and f64, -1 in i32), and AddressSanitizer builds poison
 * it, so that a stale read through a raw pointer is seen as well. A tensor of a freed arena
 * is freed memory: nothing checks it. */
void sl_arena_reset(sl_arena *arena);
/* Makes `arena` the calling thread's current arena (NULL: the thread's default); returns the
 * previous one (NULL if it was the default). */
sl_arena *sl_arena_set(sl_arena *arena);
sl_arena *sl_arena_current(void);
void *sl_arena_alloc(sl_arena *arena, size_t bytes, size_t align); /* NULL + SL_ERR_OOM */
size_t sl_arena_used(const sl_arena *arena);     /* bytes handed out since the last reset */
size_t sl_arena_peak(const sl_arena *arena);     /* the most ever in use at once */
size_t sl_arena_reserved(const sl_arena *arena); /* bytes held in blocks */
/* Number of heap allocations shortlong has made since the process started (all threads). */
uint64_t sl_heap_allocs(void);

/* ---------------------------------------------------------------- tensors */

typedef struct sl_node sl_node;

/* A strided view of typed storage. Read the fields freely; change them only through the API.
 * Element (i0, i1, ...) is at data + (offset + sum_k i_k * strides[k]) * sizeof(element).
 *
 * In-place writes. Every write through the API (sl_fill, sl_copy_into, sl_set, an optimizer
 * step, a checkpoint load, ...) bumps a version counter that a tensor shares with every view of
 * its storage. An op that keeps a tensor for its backward records the version; if it changed
 * by the time the backward runs, the backward fails, naming the op and the tensor, rather than
 * give a wrong gradient. Writes straight through ->data are not seen: after one, call
 * sl_mark_modified. */
typedef struct sl_tensor {
    sl_dtype dtype;
    int ndim;                       /* 0 for a scalar */
    int64_t shape[SL_MAX_DIMS];
    int64_t strides[SL_MAX_DIMS];   /* in elements; 0 on a broadcast (expanded) dim */
    int64_t offset;                 /* in elements */
    void *data;                     /* base of the storage, shared by views */
    sl_arena *arena;                /* the arena the tensor was allocated in */
    uint32_t generation;            /* the arena's generation then (see sl_arena_reset) */
    uint32_t seal;                  /* internal: vouches for arena and generation */
    uint32_t *version;              /* in-place writes to the storage (shared with views) */
    /* autograd's (autograd.h): */
    struct sl_tensor *grad;         /* accumulated gradient (leaves that require grad) */
    sl_node *node;                  /* the op that made it (NULL for leaves) */
    bool requires_grad;
    uint32_t mark;                  /* the backward engine's bookkeeping */
    const char *name;               /* optional, for messages (parameters have one) */
} sl_tensor;

size_t sl_dtype_size(sl_dtype dtype);
const char *sl_dtype_name(sl_dtype dtype); /* "f32", "f64", "i32" */

int64_t sl_numel(const sl_tensor *t);
bool sl_is_contiguous(const sl_tensor *t);
/* "[8,256,256]"; the string lives in one of a few per-thread buffers, for messages. */
const char *sl_shape_str(const sl_tensor *t);
/* Pointer to element 0 of the view (data + offset). */
void *sl_ptr(const sl_tensor *t);

/* An absent optional tensor argument: a Linear without a bias, a LayerNorm without an affine
 * part, ALiBi's default slopes. A NULL tensor argument is never "absent": NULL is what a failed
 * call returns, so an op handed one returns NULL, keeping the error pending (or, if none is,
 * reporting the NULL argument). Never write through SL_NONE. */
extern const sl_tensor sl__none;
#define SL_NONE ((sl_tensor *)&sl__none)

/* Creation, in the current arena. shape has ndim entries (ndim may be 0). NULL on error. */
sl_tensor *sl_empty(sl_dtype dtype, int ndim, const int64_t *shape);
sl_tensor *sl_zeros(sl_dtype dtype, int ndim, const int64_t *shape);
sl_tensor *sl_ones(sl_dtype dtype, int ndim, const int64_t *shape);
sl_tensor *sl_full(sl_dtype dtype, int ndim, const int64_t *shape, double value);
sl_tensor *sl_scalar(sl_dtype dtype, double value);
/* [start, stop) in steps of step (1-D). */
sl_tensor *sl_arange(sl_dtype dtype, double start, double stop, double step);
/* A contiguous copy of `data` (row-major, elements of `dtype`). */
sl_tensor *sl_from_data(sl_dtype dtype, int ndim, const int64_t *shape, const void *data);
sl_tensor *sl_zeros_like(const sl_tensor *t);
/* Shorthand shapes: sl_shape(2, 3, 4) expands to 3, (const int64_t[]){2, 3, 4}. */
#define SL_NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, N, ...) N
#define SL_NARGS(...) SL_NARGS_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define sl_shape(...) SL_NARGS(__VA_ARGS__), (const int64_t[]){__VA_ARGS__}

/* Element access by logical row-major index (slow; for tests, printing and small glue). */
double sl_get(const sl_tensor *t, int64_t flat_index);
void sl_set(sl_tensor *t, int64_t flat_index, double value);
double sl_item(const sl_tensor *t); /* the value of a one-element tensor (NAN + error otherwise) */
/* Copies the view's elements, row-major, into buf (numel * dtype_size bytes). */
bool sl_copy_out(const sl_tensor *t, void *buf);
/* Copies src's values into dst (same shape; dtypes may differ). No autograd. */
bool sl_copy_into(sl_tensor *dst, const sl_tensor *src);
/* Sets every element (no autograd). */
bool sl_fill(sl_tensor *t, double value);
/* Bumps t's version counter (shared with its views): call it after writing through ->data,
 * so that a backward that kept t for its gradient fails instead of using the new values. */
void sl_mark_modified(sl_tensor *t);

/* Prints "<label>: <dtype> <shape>" (and "requires_grad" when set), then the values: every
 * entry of a dim of up to 6, else its first 3 and last 3 with "..." between. label may be NULL. */
void sl_fprint(FILE *f, const sl_tensor *t, const char *label);
#define sl_print(t) sl_fprint(stdout, (t), #t)

/* ---------------------------------------------------------------- RNG */

/* xoshiro256** seeded through splitmix64. Integer arithmetic only, so a seed gives the same
 * bits on every machine. Uniform doubles use the top 53 bits; normals use Box-Muller
 * (libm log/cos/sin in double). A generator is a plain value: copy it to fork a stream,
 * store it in a checkpoint to resume one. */
typedef struct sl_rng { uint64_t s[4]; } sl_rng;

sl_rng sl_rng_seed(uint64_t seed);
/* The state as 64 lowercase hex digits and a NUL (buf holds at least 65 bytes), and back (either
 * case; false, and *rng untouched, unless hex is exactly 64 hex digits): for keeping a stream in
 * a checkpoint's text metadata. */
void sl_rng_to_hex(const sl_rng *rng, char *buf);
bool sl_rng_from_hex(const char *hex, sl_rng *rng);
uint64_t sl_rng_next(sl_rng *rng);
double sl_rng_uniform(sl_rng *rng);          /* [0, 1) */
double sl_rng_normal(sl_rng *rng);           /* N(0, 1) */
uint64_t sl_rng_below(sl_rng *rng, uint64_t n); /* [0, n), unbiased */
sl_tensor *sl_rand_uniform(sl_rng *rng, sl_dtype dtype, int ndim, const int64_t *shape,
                           double lo, double hi);
sl_tensor *sl_rand_normal(sl_rng *rng, sl_dtype dtype, int ndim, const int64_t *shape,
                          double mean, double std);

/* ---------------------------------------------------------------- CPU */

/* The SIMD level shortlong's kernels run at on this CPU: "generic", "avx2" or "avx512". Every
 * level's kernels are in the library, whatever machine built it; the best the CPU has is
 * chosen at first use, and SL_ISA=generic|avx2|avx512 in the environment lowers it. */
const char *sl_cpu_isa(void);

/* ---------------------------------------------------------------- threads */

/* The pool: n - 1 worker threads plus the caller. The count comes from sl_set_num_threads,
 * else SL_NUM_THREADS, else the process's share of the CPUs: those of its affinity mask (its
 * main thread's, as taskset, a cpuset or an MPI launcher's binding set it), at most the CPUs a
 * cgroup CPU quota allows (docker --cpus: ceil(quota / period)), and with an MPI job's
 * processes on this machine (OMPI_COMM_WORLD_LOCAL_SIZE or MPI_LOCALNRANKS) at most the online
 * CPUs, or the quota's, divided among them. Between jobs a worker watches for the next one for
 * up to 50 us (SL_POOL_SPIN_US; not at all where the threads outnumber that share), then
 * sleeps on a condition variable. Matrix products split over this pool too (ops.h), so the
 * process has one set of threads. */
void sl_set_num_threads(int n);
int sl_get_num_threads(void);

/* fn(ctx, begin, end) over [0, n) in chunks of at least `grain`, on the pool. Called from
 * inside a pool job it runs serially. Blocks until every chunk is done. */
typedef void (*sl_range_fn)(void *ctx, int64_t begin, int64_t end);
void sl_parallel_for(int64_t n, int64_t grain, sl_range_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
