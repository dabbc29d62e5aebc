/* tensor/pool.c — the thread pool (n - 1 workers plus the calling thread) and the scratch
 * memory each thread owns.
 *
 * A job is a range [0, n) cut into chunks; every participant takes chunks from one atomic
 * counter until none are left, so uneven chunks balance themselves. Participant 0 is the
 * thread that started the job, 1 .. n - 1 the workers; a task learns which one runs it.
 * Between jobs a worker first watches for the next one for a few tens of microseconds (a
 * step's jobs come that close: waking a blocked thread costs about 10 us on a VM, per job),
 * then blocks on a condition variable; the caller waits for the workers the same way. The
 * watch is bounded (SL_POOL_SPIN_US, default SPIN_US; 0: block at once), so a worker never
 * holds a core for long that the next matrix product needs, and off by default where the
 * threads outnumber the CPUs (spin_ns), where it would hold one another thread needs.
 *
 * Scratch. Every thread that runs shortlong code (the pool's workers and any caller) owns a
 * few buffers, one per sl__scratch_slot, kept between calls and grown on demand: a kernel's
 * tiles, a packed matrix operand, the backward's node lists. They are freed when the thread
 * exits (the main thread's at exit). A warm loop reuses them and allocates nothing.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { MAX_THREADS = 256 };

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t threads[MAX_THREADS];
    int n_threads;      /* participants, caller included */
    atomic_uint_fast64_t generation; /* bumped for each job (under mu; read outside it too) */
    atomic_int active;  /* workers still inside the current job (written under mu) */
    atomic_bool stop;   /* written under mu; read outside it too */
    /* the current job */
    sl__task_fn fn;
    void *ctx;
    int64_t n, chunk;
    sl__scratch_slot slot; /* every participant first makes its scratch here reserve bytes */
    size_t reserve;
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

enum { SPIN_US = 50 }; /* how long a waiting thread watches before it blocks, by default */

/* The machine's online CPUs, at least 1. */
static int online_cpus(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > INT_MAX ? INT_MAX : (int)c;
}

/* The CPUs this process may run on: its affinity mask (a launcher's binding, taskset, a
 * cpuset), the main thread's, whichever thread asks; in a set as large as the kernel's. */
static int usable_cpus(void)
{
    for (int n = 1024; n <= 1 << 20; n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (!set) break;
        size_t size = CPU_ALLOC_SIZE(n);
        int rc = sched_getaffinity(getpid(), size, set), err = errno;
        int c = rc == 0 ? CPU_COUNT_S(size, set) : 0;
        CPU_FREE(set);
        if (rc == 0) return c > 0 ? c : online_cpus();
        if (err != EINVAL) break; /* EINVAL: the kernel's mask is larger than n CPUs */
    }
    return online_cpus();
}

/* This job's processes on this machine, as an MPI launcher tells them (Open MPI, MPICH); 1
 * without one. */
static int local_ranks(void)
{
    static const char *const names[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *e = getenv(names[i]);
        long v = e && *e ? strtol(e, NULL, 10) : 0;
        if (v >= 1) return v > 4096 ? 4096 : (int)v;
    }
    return 1;
}

/* The CPUs this process may count as its own: those it may run on, at most what a cgroup CPU
 * quota allows (docker --cpus: the mask shows the host's CPUs), and with an MPI job's processes
 * on this machine at most their share of it (they may share one mask: not bound, or bound to a
 * package they share; and one quota); 0 when there are more processes than CPUs. */
static int cpu_share(void)
{
    int c = usable_cpus(), machine = online_cpus(), quota = sl__cgroup_cpus(""),
        ranks = local_ranks();
    if (quota >= 1 && quota < machine) machine = quota;
    if (c > machine) c = machine;
    if (ranks > 1 && c > machine / ranks) c = machine / ranks;
    return c;
}

/* cpu_share(), read once: it reads the affinity mask, a cgroup file and the environment (a
 * benign race: every reader gets the same). */
static int cpu_share_once(void)
{
    static atomic_int share = -1; /* -1: not read yet */
    int c = atomic_load(&share);
    if (c < 0) atomic_store(&share, c = cpu_share());
    return c;
}

int sl__cpu_share(void)
{
    int c = cpu_share_once();
    return c < 1 ? 1 : c;
}

/* How long a waiting thread watches: SL_POOL_SPIN_US if set; else SPIN_US while the pool's
 * threads fit the process's share of the CPUs (cpu_share), and 0 when they do not (there a
 * watching thread holds a core another thread needs: a step of 2 ranks x 2 threads on 2 cores
 * ran 5-7% slower watching). */
static int64_t spin_ns(void)
{
    static atomic_int_fast64_t forced = -2; /* -2: not read yet, -1: not set; a benign race */
    int64_t f = atomic_load(&forced);
    if (f == -2) {
        const char *e = getenv("SL_POOL_SPIN_US");
        long us = e && *e ? strtol(e, NULL, 10) : -1;
        f = us < 0 ? -1 : us > 100000 ? 100000000 : (int64_t)us * 1000;
        atomic_store(&forced, f);
    }
    if (f >= 0) return f;
    int r = cpu_share_once(); /* 0: less than a CPU per process */
    return r > 0 && atomic_load(&n_threads_now) <= r ? (int64_t)SPIN_US * 1000 : 0;
}

int64_t sl__pool_spin_ns(void) { return spin_ns(); }

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Watches, for at most spin_ns(), until done(arg) holds; whether it does. */
static bool spin_until(bool (*done)(uint64_t), uint64_t arg)
{
    const int64_t limit = spin_ns();
    if (limit <= 0) return done(arg);
    const int64_t t0 = now_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (done(arg)) return true;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (now_ns() - t0 > limit) return done(arg);
    }
}

static bool job_after(uint64_t seen)
{
    return atomic_load(&pool.generation) != seen || atomic_load(&pool.stop);
}
static bool workers_done(uint64_t unused)
{
    (void)unused;
    return atomic_load(&pool.active) == 0;
}

bool sl__in_pool(void) { return in_pool; }

/* Takes chunks of the current job until none are left. Before the first, the participant makes
 * its scratch as large as the job asked, whether or not it gets a chunk: which thread runs
 * which chunk changes from run to run, and this way each thread's scratch still grows in the
 * first job of a kind and never later. */
static void run_chunks(int worker)
{
    if (pool.reserve) (void)sl__scratch(pool.slot, pool.reserve);
    for (;;) {
        int64_t b = atomic_fetch_add(&pool.next, pool.chunk);
        if (b >= pool.n) return;
        int64_t e = b + pool.chunk < pool.n ? b + pool.chunk : pool.n;
        pool.fn(pool.ctx, b, e, worker);
    }
}

typedef struct {
    uint64_t generation; /* when it was started */
    int index;
} worker_arg;

static worker_arg worker_args[MAX_THREADS];

static void *worker(void *arg)
{
    const worker_arg *w = arg;
    in_pool = true;
    uint64_t seen = w->generation;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.stop && pool.generation == seen) pthread_cond_wait(&pool.work_cv, &pool.mu);
        if (pool.stop) break;
        seen = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        run_chunks(w->index);
        pthread_mutex_lock(&pool.mu);
        if (atomic_fetch_sub(&pool.active, 1) == 1) pthread_cond_signal(&pool.done_cv);
        pthread_mutex_unlock(&pool.mu);
        spin_until(job_after, seen); /* the next job often follows within microseconds */
        pthread_mutex_lock(&pool.mu);
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
    int c = cpu_share();
    return c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : c;
}

static bool atexit_done;

/* Starts the workers for `requested` threads if they are not running. job_mu held. */
static void pool_start_locked(void)
{
    if (!requested) requested = default_threads();
    if (pool.n_threads == requested && atomic_load(&n_threads_now)) return;
    if (pool.n_threads > 1) pool_stop();
    pool.n_threads = 1;
    for (int i = 1; i < requested; i++) {
        worker_args[i] = (worker_arg){pool.generation, i};
        if (pthread_create(&pool.threads[i], NULL, worker, &worker_args[i])) break;
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

/* Runs fn(ctx, 0, n, 0) on the calling thread, its scratch reserved first. */
static void run_serial(int64_t n, sl__task_fn fn, void *ctx, sl__scratch_slot slot,
                       size_t reserve)
{
    if (reserve) (void)sl__scratch(slot, reserve);
    fn(ctx, 0, n, 0);
}

/* Runs fn over [0, n) in chunks of `chunk` (0: a few per thread, at least grain) on the pool,
 * or serially (as participant 0) when that is all there is to do: a single chunk, a pool of
 * one, a call from inside a job, or another thread's job running. reserve > 0: every
 * participant's scratch for `slot` is made at least that large first. */
static void run_job(int64_t n, int64_t grain, int64_t chunk, sl__task_fn fn, void *ctx,
                    sl__scratch_slot slot, size_t reserve)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = in_pool ? 1 : sl_get_num_threads();
    if (nt == 1 || n <= (chunk ? chunk : grain)) {
        run_serial(n, fn, ctx, slot, reserve);
        return;
    }
    /* One job at a time: a second caller thread runs its job serially rather than wait. */
    if (pthread_mutex_trylock(&job_mu) != 0) {
        run_serial(n, fn, ctx, slot, reserve);
        return;
    }
    nt = pool.n_threads; /* as configured now, under job_mu */
    if (nt == 1) {
        pthread_mutex_unlock(&job_mu);
        run_serial(n, fn, ctx, slot, reserve);
        return;
    }
    if (!chunk) { /* a few chunks per thread, so uneven chunks balance, but never below grain */
        chunk = (n + 4 * nt - 1) / (4 * nt);
        if (chunk < grain) chunk = grain;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.chunk = chunk;
    pool.slot = slot;
    pool.reserve = reserve;
    atomic_store(&pool.next, 0);
    pool.active = nt - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.work_cv);
    pthread_mutex_unlock(&pool.mu);

    in_pool = true;
    run_chunks(0);
    in_pool = false;

    spin_until(workers_done, 0);
    pthread_mutex_lock(&pool.mu);
    while (pool.active > 0) pthread_cond_wait(&pool.done_cv, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&job_mu);
}

void sl__parallel_for_w(int64_t n, int64_t grain, sl__task_fn fn, void *ctx,
                        sl__scratch_slot slot, size_t reserve)
{
    run_job(n, grain, 0, fn, ctx, slot, reserve);
}

void sl__parallel_tasks(int64_t n, sl__task_fn fn, void *ctx, sl__scratch_slot slot,
                        size_t reserve)
{
    run_job(n, 1, 1, fn, ctx, slot, reserve);
}

/* The public form: a task that does not need its worker index. */
typedef struct {
    sl_range_fn fn;
    void *ctx;
} range_ctx;

static void range_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const range_ctx *r = ctx;
    r->fn(r->ctx, begin, end);
}

void sl_parallel_for(int64_t n, int64_t grain, sl_range_fn fn, void *ctx)
{
    range_ctx r = {fn, ctx};
    run_job(n, grain, 0, range_task, &r, SL__SCRATCH_GEMM, 0);
}

/* ---------------------------------------------------------------- scratch */

typedef struct {
    void *p;
    size_t cap;
} buffer;

static _Thread_local buffer scratch[SL__SCRATCH_SLOTS];
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *unused)
{
    (void)unused;
    for (int i = 0; i < SL__SCRATCH_SLOTS; i++) {
        sl__free(scratch[i].p);
        scratch[i] = (buffer){NULL, 0};
    }
}

static void scratch_free_at_exit(void) { scratch_free(NULL); }

static void scratch_init(void)
{
    pthread_key_create(&scratch_key, scratch_free);
    atexit(scratch_free_at_exit); /* the thread that calls exit() runs no key destructor */
}

void *sl__scratch(sl__scratch_slot slot, size_t bytes)
{
    buffer *b = &scratch[slot];
    if (bytes <= b->cap) return b->p;
    pthread_once(&scratch_once, scratch_init);
    pthread_setspecific(scratch_key, (void *)1); /* any non-NULL value runs the destructor */
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < bytes) cap = cap > SIZE_MAX / 2 ? bytes : 2 * cap;
    void *p = sl__aligned_alloc(64, cap);
    if (!p) return NULL;
    if (b->p) memcpy(p, b->p, b->cap);
    memset((char *)p + b->cap, 0, cap - b->cap);
    sl__free(b->p);
    b->p = p;
    b->cap = cap;
    return p;
}
