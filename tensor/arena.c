/* tensor/arena.c — the counted heap and the arenas every tensor lives in.
 *
 * An arena is a list of blocks handed out by bumping a pointer. Reset rewinds every block
 * without freeing it, so when the same sequence of allocations repeats (a training step),
 * each allocation lands in the same block as last time and the heap is never touched again.
 */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static atomic_uint_fast64_t heap_allocs;

uint64_t sl_heap_allocs(void) { return atomic_load(&heap_allocs); }

void *sl__malloc(size_t bytes)
{
    atomic_fetch_add(&heap_allocs, 1);
    return malloc(bytes ? bytes : 1);
}

void *sl__aligned_alloc(size_t align, size_t bytes)
{
    atomic_fetch_add(&heap_allocs, 1);
    void *p = NULL;
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0) return NULL;
    return p;
}

void *sl__realloc(void *p, size_t bytes)
{
    atomic_fetch_add(&heap_allocs, 1);
    return realloc(p, bytes ? bytes : 1);
}

void sl__free(void *p) { free(p); }

/* ---------------------------------------------------------------- arenas */

enum { BLOCK_ALIGN = 64, DEFAULT_BLOCK = 4 << 20 };

/* Released memory, in debug builds: under AddressSanitizer poisoned (any access is reported
 * until an allocation hands the bytes out again), otherwise filled with 0xFF bytes. Release
 * builds leave it as it is. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
static void poison(void *p, size_t n) { ASAN_POISON_MEMORY_REGION(p, n); }
static void unpoison(void *p, size_t n) { ASAN_UNPOISON_MEMORY_REGION(p, n); }
#elif !defined(NDEBUG)
static void poison(void *p, size_t n) { memset(p, 0xff, n); }
static void unpoison(void *p, size_t n) { (void)p, (void)n; }
#else
static void poison(void *p, size_t n) { (void)p, (void)n; }
static void unpoison(void *p, size_t n) { (void)p, (void)n; }
#endif

static _Thread_local sl_arena *current;        /* the calling thread's current arena */
static _Thread_local sl_arena *thread_default; /* its default arena (see the end of the file) */
static pthread_key_t default_key;              /* frees thread_default at thread exit */
static _Thread_local sl_arena *thread_scratch[SL__THREAD_SCRATCH]; /* sl__thread_scratch */
static pthread_key_t scratch_key; /* frees them at thread exit (its value: thread_scratch) */

/* A block hands out cap bytes from base, which is mem or mem + BLOCK_ALIGN, alternating with
 * the arena's generation: a reset moves every later allocation by BLOCK_ALIGN bytes (without
 * changing which allocations fit in which block), so that a program making the same tensors
 * after a reset does not put a new tensor's header where an old one's was, and a tensor
 * used after the reset is seen to be released (tensor/error.c, sl__is_live). */
typedef struct block {
    struct block *next;
    size_t cap, used;
    unsigned char *mem;  /* BLOCK_ALIGN-aligned, cap + BLOCK_ALIGN bytes */
    unsigned char *base; /* where this generation's allocations start */
} block;

static unsigned char *block_base(const block *b, uint32_t generation)
{
    return b->mem + (generation & 1) * BLOCK_ALIGN;
}

struct sl_arena {
    block *head, *cur;
    uint32_t generation; /* bumped by every reset */
    size_t block_bytes;
    size_t used;     /* bytes handed out since reset, padding included */
    size_t peak;
    size_t reserved; /* sum of block capacities */
};

sl_arena *sl_arena_new(size_t block_bytes)
{
    sl_arena *a = sl__malloc(sizeof *a);
    if (!a) return SL_FAIL(SL_ERR_OOM, "sl_arena_new: out of memory");
    memset(a, 0, sizeof *a);
    a->block_bytes = block_bytes ? block_bytes : DEFAULT_BLOCK;
    return a;
}

void sl_arena_free(sl_arena *a)
{
    if (!a) return;
    for (block *b = a->head, *n; b; b = n) {
        n = b->next;
        unpoison(b->mem, b->cap + BLOCK_ALIGN);
        sl__free(b->mem);
        sl__free(b);
    }
    if (current == a) current = NULL;
    if (thread_default == a) {
        thread_default = NULL;
        pthread_setspecific(default_key, NULL);
    }
    for (int i = 0; i < SL__THREAD_SCRATCH; i++)
        if (thread_scratch[i] == a) thread_scratch[i] = NULL;
    sl__free(a);
}

uint32_t sl__arena_generation(const sl_arena *a) { return a->generation; }

void sl_arena_reset(sl_arena *a)
{
    if (!a) return;
    a->generation++;
    for (block *b = a->head; b; b = b->next) {
        poison(b->base, b->used);
        b->used = 0;
        b->base = block_base(b, a->generation);
    }
    a->cur = a->head;
    a->used = 0;
}

static block *block_new(size_t cap, uint32_t generation)
{
    block *b = sl__malloc(sizeof *b);
    if (!b) return NULL;
    b->mem = sl__aligned_alloc(BLOCK_ALIGN, cap + BLOCK_ALIGN);
    if (!b->mem) {
        sl__free(b);
        return NULL;
    }
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    b->base = block_base(b, generation);
    return b;
}

static void *block_take(block *b, size_t bytes, size_t align)
{
    size_t start = (b->used + align - 1) & ~(align - 1);
    if (start > b->cap || b->cap - start < bytes) return NULL;
    b->used = start + bytes;
    unpoison(b->base + start, bytes);
    return b->base + start;
}

void *sl_arena_alloc(sl_arena *a, size_t bytes, size_t align)
{
    if (!a) return SL_FAIL(SL_ERR_ARG, "sl_arena_alloc: arena is NULL");
    if (align > BLOCK_ALIGN || (align & (align - 1)))
        return SL_FAIL(SL_ERR_ARG, "sl_arena_alloc: alignment %zu is not a power of two <= %d",
                       align, BLOCK_ALIGN);
    if (align < 16) align = 16;
    if (bytes > (SIZE_MAX >> 2))
        return SL_FAIL(SL_ERR_OOM, "sl_arena_alloc: %zu bytes is too large", bytes);
    /* Try the current block, then the later ones (rewound by reset), in order. */
    for (block *b = a->cur; b; b = b->next) {
        size_t before = b->used;
        void *p = block_take(b, bytes, align);
        if (p) {
            a->cur = b;
            a->used += b->used - before;
            if (a->used > a->peak) a->peak = a->used;
            return p;
        }
    }
    /* None fits. The blocks after the current one are untouched since the reset and all too
     * small: free them, so an arena whose rounds grow (evaluating at L, 2L, 4L, ...) holds about
     * the largest round rather than the sum of all of them. Then add a block after the current. */
    block *tail = a->cur ? a->cur->next : a->head;
    while (tail) {
        block *n = tail->next;
        a->reserved -= tail->cap;
        unpoison(tail->mem, tail->cap + BLOCK_ALIGN);
        sl__free(tail->mem);
        sl__free(tail);
        tail = n;
    }
    /* A large allocation gets a block of its own, with room to spare for the small ones that
     * follow it (its tensor header, its tape node), which would otherwise open a new block. */
    size_t cap = bytes + align > a->block_bytes ? bytes + align + a->block_bytes / 8
                                                : a->block_bytes;
    block *b = block_new(cap, a->generation);
    if (a->cur) a->cur->next = b;
    else a->head = b;
    if (!b) return SL_FAIL(SL_ERR_OOM, "sl_arena_alloc: out of memory for %zu bytes", bytes);
    a->reserved += cap;
    a->cur = b;
    void *p = block_take(b, bytes, align);
    a->used += b->used;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

size_t sl_arena_used(const sl_arena *a) { return a ? a->used : 0; }
size_t sl_arena_peak(const sl_arena *a) { return a ? a->peak : 0; }
size_t sl_arena_reserved(const sl_arena *a) { return a ? a->reserved : 0; }

/* ---------------------------------------------------------------- the current arena */

/* Each thread has its own default arena, made on first use: threads that never call
 * sl_arena_set do not share (and race on) one arena. A thread's default arena is freed when the
 * thread exits, and the one of the thread that calls exit() (normally main) at exit. */
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_destroy(void *a) { sl_arena_free(a); }

static void scratch_destroy(void *arenas)
{
    for (int i = 0; i < SL__THREAD_SCRATCH; i++) sl_arena_free(((sl_arena **)arenas)[i]);
}

static void default_free_at_exit(void)
{
    sl_arena_free(thread_default);
    scratch_destroy(thread_scratch);
}

static void default_init(void)
{
    pthread_key_create(&default_key, default_destroy);
    pthread_key_create(&scratch_key, scratch_destroy);
    atexit(default_free_at_exit);
}

sl_arena *sl_arena_set(sl_arena *a)
{
    sl_arena *prev = current;
    current = a;
    return prev;
}

sl_arena *sl_arena_current(void)
{
    if (current) return current;
    if (!thread_default) {
        pthread_once(&default_once, default_init);
        thread_default = sl_arena_new(0);
        if (thread_default) pthread_setspecific(default_key, thread_default);
    }
    return thread_default;
}

sl_arena *sl__thread_scratch(int i)
{
    if (i < 0 || i >= SL__THREAD_SCRATCH)
        return SL_FAIL(SL_ERR_ARG, "sl__thread_scratch: index %d outside [0, %d)", i,
                       SL__THREAD_SCRATCH);
    if (!thread_scratch[i]) {
        pthread_once(&default_once, default_init);
        if (!(thread_scratch[i] = sl_arena_new(0))) return NULL;
        pthread_setspecific(scratch_key, thread_scratch);
    }
    return thread_scratch[i];
}
