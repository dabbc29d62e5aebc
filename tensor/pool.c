/* tensor/pool.c — the thread pool: n - 1 workers plus the calling thread.
 *
 * A job is a range [0, n) cut into chunks; every participant takes chunks from one atomic
 * counter until none are left, so uneven chunks balance themselves. Workers block on a
 * condition variable between jobs and never spin, which matters on small machines: a spinning
 * worker steals the core that the next BLAS call or the main thread needs.
 *
 * OpenBLAS is set to one thread: shortlong splits big products over this pool itself
 * (ops/matmul.c), so only one set of threads exists and none of them waits by spinning.
 */
#include "internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 256 };

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t threads[MAX_THREADS];
    int n_threads;      /* participants, caller included */
    uint64_t generation; /* bumped for each job */
    int active;         /* workers still inside the current job */
    bool stop;
    /* the current job */
    sl_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    atomic_int_fast64_t next;
} pool_t;

static pool_t pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
                      .work_cv = PTHREAD_COND_INITIALIZER,
                      .done_cv = PTHREAD_COND_INITIALIZER};
/* job_mu is held for the whole of a job and while the pool is (re)configured, so one job runs
 * at a time and the workers never change under it. The thread count is also kept in an atomic,
 * so code inside a job can read it without taking job_mu. */
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static int requested;          /* 0: not decided yet; job_mu */
static atomic_int n_threads_now; /* 0 until the pool has started */
static _Thread_local bool in_pool;

bool sl__in_pool(void) { return in_pool; }

static void run_chunks(void)
{
    for (;;) {
        int64_t b = atomic_fetch_add(&pool.next, pool.chunk);
        if (b >= pool.n) return;
        int64_t e = b + pool.chunk < pool.n ? b + pool.chunk : pool.n;
        pool.fn(pool.ctx, b, e);
    }
}

static void *worker(void *arg)
{
    in_pool = true;
    uint64_t seen = (uint64_t)(uintptr_t)arg; /* the generation when it was started */
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.stop && pool.generation == seen) pthread_cond_wait(&pool.work_cv, &pool.mu);
        if (pool.stop) break;
        seen = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        run_chunks();
        pthread_mutex_lock(&pool.mu);
        if (--pool.active == 0) pthread_cond_signal(&pool.done_cv);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

static void pool_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stop = true;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 1; i < pool.n_threads; i++) pthread_join(pool.threads[i], NULL);
    pool.stop = false;
    pool.n_threads = 1;
}

static int default_threads(void)
{
    const char *e = getenv("SL_NUM_THREADS");
    if (e && *e) {
        long v = strtol(e, NULL, 10);
        if (v >= 1) return v > MAX_THREADS ? MAX_THREADS : (int)v;
    }
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : (int)c;
}

static bool atexit_done;

/* Starts the workers for `requested` threads if they are not running. job_mu held. */
static void pool_start_locked(void)
{
    if (!requested) requested = default_threads();
    if (pool.n_threads == requested && atomic_load(&n_threads_now)) return;
    if (pool.n_threads > 1) pool_stop();
    openblas_set_num_threads(1);
    pool.n_threads = 1;
    for (int i = 1; i < requested; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, (void *)(uintptr_t)pool.generation))
            break;
        pool.n_threads++;
    }
    atomic_store(&n_threads_now, pool.n_threads);
    if (!atexit_done) {
        atexit_done = true;
        atexit(pool_stop);
    }
}

void sl_set_num_threads(int n)
{
    if (in_pool) { /* from inside a job: the workers are busy with it */
        sl_set_error(SL_ERR_STATE, "sl_set_num_threads: called from inside a parallel job");
        return;
    }
    if (n < 1) n = default_threads();
    if (n > MAX_THREADS) n = MAX_THREADS;
    pthread_mutex_lock(&job_mu); /* waits for another thread's running job */
    requested = n;
    pool_start_locked();
    pthread_mutex_unlock(&job_mu);
}

int sl_get_num_threads(void)
{
    int n = atomic_load(&n_threads_now);
    if (n) return n;
    pthread_mutex_lock(&job_mu);
    pool_start_locked();
    n = pool.n_threads;
    pthread_mutex_unlock(&job_mu);
    return n;
}

void sl_parallel_for(int64_t n, int64_t grain, sl_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = in_pool ? 1 : sl_get_num_threads();
    if (nt == 1 || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    /* One job at a time: a second caller thread runs its job serially rather than wait. */
    if (pthread_mutex_trylock(&job_mu) != 0) {
        fn(ctx, 0, n);
        return;
    }
    nt = pool.n_threads; /* as configured now, under job_mu */
    if (nt == 1) {
        pthread_mutex_unlock(&job_mu);
        fn(ctx, 0, n);
        return;
    }
    /* Aim for a few chunks per thread so uneven chunks balance, but never below grain. */
    int64_t chunk = (n + 4 * nt - 1) / (4 * nt);
    if (chunk < grain) chunk = grain;
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.chunk = chunk;
    atomic_store(&pool.next, 0);
    pool.active = nt - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);

    in_pool = true;
    run_chunks();
    in_pool = false;

    pthread_mutex_lock(&pool.mu);
    while (pool.active > 0) pthread_cond_wait(&pool.done_cv, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&job_mu);
}
