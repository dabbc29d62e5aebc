/* The tensor layer: creation, element access, printing, errors, arenas, the RNG, the pool. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "testutil.h"
#include "../tensor/internal.h" /* sl__pool_spin_ns, sl__cgroup_cpus */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

START_TEST(creation_values_and_shapes)
{
    sl_tensor *z = sl_zeros(SL_F32, sl_shape(2, 3));
    ck_assert_int_eq(z->ndim, 2);
    ck_assert_int_eq(sl_numel(z), 6);
    ck_assert(sl_is_contiguous(z));
    ck_assert_int_eq(z->strides[0], 3);
    ck_assert_int_eq(z->strides[1], 1);
    for (int i = 0; i < 6; i++) ck_assert(sl_get(z, i) == 0.0);
    sl_tensor *o = sl_ones(SL_F64, sl_shape(4));
    sl_tensor *f = sl_full(SL_I32, sl_shape(2, 2), 7);
    for (int i = 0; i < 4; i++) {
        ck_assert(sl_get(o, i) == 1.0);
        ck_assert(sl_get(f, i) == 7.0);
    }
    sl_tensor *s = sl_scalar(SL_F64, 2.5);
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_int_eq(sl_numel(s), 1);
    ck_assert(sl_item(s) == 2.5);
    sl_tensor *r = sl_arange(SL_I32, 2, 11, 3); /* 2 5 8 */
    ck_assert_int_eq(r->shape[0], 3);
    ck_assert(sl_get(r, 2) == 8.0);
    sl_tensor *rf = sl_arange(SL_F64, 0, 1, 0.25);
    ck_assert_int_eq(rf->shape[0], 4);
    ck_assert(sl_get(rf, 3) == 0.75);
    float buf[6] = {1, 2, 3, 4, 5, 6};
    sl_tensor *d = sl_from_data(SL_F32, sl_shape(3, 2), buf);
    buf[0] = 100; /* a copy, not a wrap */
    ck_assert(sl_get(d, 0) == 1.0);
    ck_assert(sl_get(d, 5) == 6.0);
    /* Six (and eight) dimensions. */
    sl_tensor *h = sl_zeros(SL_F64, sl_shape(2, 1, 3, 1, 2, 2));
    ck_assert_int_eq(h->ndim, 6);
    ck_assert_int_eq(sl_numel(h), 24);
    sl_tensor *e = sl_zeros(SL_F32, sl_shape(1, 2, 1, 2, 1, 2, 1, 2));
    ck_assert_int_eq(e->ndim, 8);
    sl_tensor *empty = sl_zeros(SL_F32, sl_shape(0, 3));
    ck_assert_int_eq(sl_numel(empty), 0);
    ck_assert(((uintptr_t)z->data & 63) == 0);
}
END_TEST

START_TEST(creation_errors)
{
    ck_assert_ptr_null(sl_zeros(SL_F32, sl_shape(2, -1)));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_zeros: negative dim in [2,-1]");
    sl_error_clear();
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_ptr_null(sl_empty(SL_F32, 9, nine));
    ck_assert_str_eq(sl_error_message(), "sl_empty: ndim 9 outside [0, 8]");
    sl_error_clear();
    ck_assert_ptr_null(sl_arange(SL_F32, 0, 5, 0));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
    ck_assert_ptr_null(sl_from_data(SL_F32, sl_shape(2), NULL));
    sl_error_clear();
    ck_assert_ptr_null(sl_zeros(SL_F32, sl_shape(INT64_C(1) << 40, INT64_C(1) << 40)));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    sl_error_clear();
    sl_tensor *t = sl_zeros(SL_F32, sl_shape(2, 2));
    ck_assert(isnan(sl_get(t, 4)));
    ck_assert_int_eq(sl_error(), SL_ERR_INDEX);
    ck_assert_str_eq(sl_error_message(), "sl_get: index 4 out of range for [2,2]");
    sl_error_clear();
    ck_assert(isnan(sl_item(t)));
    ck_assert_str_eq(sl_error_message(), "sl_item: expected one element, got [2,2]");
}
END_TEST

static int handler_calls;
static sl_status handler_code;
static void count_handler(sl_status code, const char *msg, void *user)
{
    handler_calls++;
    handler_code = code;
    ck_assert_ptr_eq(user, &handler_calls);
    ck_assert(strstr(msg, "sl_sum_all") || strstr(msg, "sl_exp"));
}

START_TEST(error_handler_and_clear)
{
    ck_assert_int_eq(sl_error(), SL_OK);
    ck_assert_str_eq(sl_error_message(), "");
    sl_error_handler prev = sl_set_error_handler(count_handler, &handler_calls);
    sl_tensor *i = sl_zeros(SL_I32, sl_shape(3));
    ck_assert_ptr_null(sl_exp(i));
    ck_assert_int_eq(handler_calls, 1);
    ck_assert_int_eq(handler_code, SL_ERR_DTYPE);
    /* Propagating NULL does not raise a second error. */
    ck_assert_ptr_null(sl_exp(sl_exp(i)));
    ck_assert_int_eq(handler_calls, 2); /* the inner call failed anew */
    ck_assert_ptr_null(sl_exp(NULL));
    ck_assert_int_eq(handler_calls, 2);
    sl_set_error_handler(prev, NULL);
    sl_error_clear();
    ck_assert_int_eq(sl_error(), SL_OK);
    ck_assert_str_eq(sl_status_name(SL_ERR_FORMAT), "format error");
}
END_TEST

START_TEST(element_access_copy_fill_print)
{
    sl_tensor *t = sl_arange(SL_F64, 0, 6, 1);
    double out[6];
    ck_assert(sl_copy_out(t, out));
    for (int i = 0; i < 6; i++) ck_assert(out[i] == i);
    sl_set(t, 2, -1.5);
    ck_assert(sl_get(t, 2) == -1.5);
    sl_tensor *f = sl_empty(SL_F32, sl_shape(6));
    ck_assert(sl_copy_into(f, t));
    ck_assert(sl_get(f, 2) == -1.5);
    ck_assert(sl_fill(f, 3.0));
    ck_assert(sl_get(f, 5) == 3.0);
    ck_assert(!sl_copy_into(sl_empty(SL_F32, sl_shape(5)), t));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    sl_error_clear();

    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    sl_tensor *p = sl_arange(SL_I32, 0, 6, 1);
    sl_fprint(m, sl_reshape(p, sl_shape(2, 3)), "p");
    sl_fprint(m, sl_arange(SL_F32, 0, 10, 1), NULL);
    fclose(m);
    ck_assert_str_eq(text, "p: i32 [2,3]\n[[0, 1, 2],\n [3, 4, 5]]\n"
                           "f32 [10]\n[0, 1, 2, ..., 7, 8, 9]\n");
    free(text);
}
END_TEST

START_TEST(arena_reuses_blocks)
{
    sl_arena *a = sl_arena_new(1 << 16);
    sl_arena *prev = sl_arena_set(a);
    uint64_t allocs = 0;
    size_t reserved = 0;
    for (int step = 0; step < 5; step++) {
        for (int k = 0; k < 20; k++) ck_assert_ptr_nonnull(sl_zeros(SL_F32, sl_shape(100 * k + 1)));
        ck_assert_ptr_nonnull(sl_zeros(SL_F64, sl_shape(100000))); /* a block of its own */
        if (step == 1) {
            allocs = sl_heap_allocs();
            reserved = sl_arena_reserved(a);
        }
        if (step > 1) {
            ck_assert_uint_eq(sl_heap_allocs(), allocs);
            ck_assert_uint_eq(sl_arena_reserved(a), reserved);
        }
        ck_assert_uint_ge(sl_arena_peak(a), sl_arena_used(a));
        sl_arena_reset(a);
        ck_assert_uint_eq(sl_arena_used(a), 0);
    }
    ck_assert_uint_ge(sl_arena_peak(a), 800000);
    void *p = sl_arena_alloc(a, 10, 64);
    ck_assert(((uintptr_t)p & 63) == 0);
    ck_assert_ptr_null(sl_arena_alloc(a, 10, 3));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    sl_error_clear();
    ck_assert_ptr_eq(sl_arena_set(prev), a);
    sl_arena_free(a);
}
END_TEST

START_TEST(arena_growing_rounds_keep_about_the_largest)
{
    /* Rounds of growing sizes (evaluating at L, 2L, 4L, ...) must not keep every old block. */
    sl_arena *a = sl_arena_new(1 << 16);
    size_t largest = 0;
    for (int round = 0; round < 8; round++) {
        size_t bytes = (size_t)(1 << 18) << round; /* 256 KiB .. 32 MiB */
        for (int k = 0; k < 3; k++) ck_assert_ptr_nonnull(sl_arena_alloc(a, bytes, 64));
        largest = 3 * bytes;
        sl_arena_reset(a);
    }
    ck_assert_uint_le(sl_arena_reserved(a), largest + largest / 2);
    sl_arena_free(a);
}
END_TEST

/* The state round-trips through text exactly, and malformed text is refused without a change. */
START_TEST(rng_hex_round_trip)
{
    sl_rng r = sl_rng_seed(42), back = sl_rng_seed(0), keep;
    (void)sl_rng_next(&r);
    char hex[65];
    sl_rng_to_hex(&r, hex);
    ck_assert_int_eq((int)strlen(hex), 64);
    ck_assert(sl_rng_from_hex(hex, &back));
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(back.s[i], r.s[i]);
    ck_assert_uint_eq(sl_rng_next(&back), sl_rng_next(&r));
    /* the first word, written out by hand: seed 42 after one draw */
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)r.s[0]);
    sl_rng_to_hex(&r, hex);
    ck_assert(!strncmp(hex, want, 16));
    for (int i = 0; hex[i]; i++) hex[i] = (char)toupper((unsigned char)hex[i]);
    ck_assert(sl_rng_from_hex(hex, &back)); /* upper case is read too */
    ck_assert_uint_eq(back.s[0], r.s[0]);
    keep = back;
    const char *bad[] = {"", "0123", "g000000000000000000000000000000000000000000000000000000000000000"};
    for (int i = 0; i < 3; i++) {
        ck_assert(!sl_rng_from_hex(bad[i], &back));
        ck_assert_uint_eq(back.s[0], keep.s[0]);
    }
    hex[63] = '\0'; /* 63 digits */
    ck_assert(!sl_rng_from_hex(hex, &back));
    ck_assert(!sl_rng_from_hex(NULL, &back));
}
END_TEST

START_TEST(rng_reference_stream)
{
    /* xoshiro256** seeded with splitmix64: values computed independently (Python). */
    sl_rng r = sl_rng_seed(42);
    ck_assert_uint_eq(sl_rng_next(&r), UINT64_C(0x15780b2e0c2ec716));
    ck_assert_uint_eq(sl_rng_next(&r), UINT64_C(0x6104d9866d113a7e));
    ck_assert_uint_eq(sl_rng_next(&r), UINT64_C(0xae17533239e499a1));
    sl_rng z = sl_rng_seed(0);
    ck_assert_uint_eq(sl_rng_next(&z), UINT64_C(0x99ec5f36cb75f2b4));
    /* A copy continues the same stream. */
    sl_rng a = sl_rng_seed(7), b = a;
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(sl_rng_next(&a), sl_rng_next(&b));
}
END_TEST

START_TEST(rng_distributions)
{
    sl_rng r = sl_rng_seed(3);
    enum { N = 200000 };
    double s = 0, s2 = 0, us = 0;
    for (int i = 0; i < N; i++) {
        double u = sl_rng_uniform(&r);
        ck_assert(u >= 0 && u < 1);
        us += u;
        double g = sl_rng_normal(&r);
        s += g;
        s2 += g * g;
        uint64_t k = sl_rng_below(&r, 7);
        ck_assert_uint_lt(k, 7);
    }
    ck_assert_close(us / N, 0.5, 0, 0.005);
    ck_assert_close(s / N, 0.0, 0, 0.01);
    ck_assert_close(s2 / N, 1.0, 0, 0.02);
    sl_rng r1 = sl_rng_seed(9), r2 = sl_rng_seed(9);
    sl_tensor *t1 = sl_rand_normal(&r1, SL_F32, sl_shape(64), 1.0, 0.5);
    sl_tensor *t2 = sl_rand_normal(&r2, SL_F32, sl_shape(64), 1.0, 0.5);
    ck_assert_mem_eq(t1->data, t2->data, 64 * sizeof(float));
    sl_tensor *u = sl_rand_uniform(&r1, SL_F64, sl_shape(1000), -2, 3);
    for (int i = 0; i < 1000; i++) ck_assert(sl_get(u, i) >= -2 && sl_get(u, i) < 3);
    ck_assert_ptr_null(sl_rand_uniform(&r1, SL_I32, sl_shape(2), 0, 1));
    ck_assert_int_eq(sl_error(), SL_ERR_DTYPE);
    sl_error_clear();
    ck_assert_ptr_null(sl_rand_normal(NULL, SL_F32, sl_shape(2), 0, 1));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
}
END_TEST

static atomic_int hits[10007];
static void mark_range(void *ctx, int64_t b, int64_t e)
{
    atomic_int *c = ctx;
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&c[i], 1);
}
static void mark(void *ctx, int64_t b, int64_t e)
{
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&hits[i], 1);
    /* A nested parallel_for runs serially inside the job. */
    if (ctx) sl_parallel_for(3, 1, mark, NULL);
}

START_TEST(pool_covers_every_index_once)
{
    for (int nt = 1; nt <= 4; nt++) {
        sl_set_num_threads(nt);
        ck_assert_int_eq(sl_get_num_threads(), nt);
        memset(hits, 0, sizeof hits);
        sl_parallel_for(10007, 16, mark, NULL);
        for (int i = 0; i < 10007; i++) ck_assert_int_eq(atomic_load(&hits[i]), 1);
        memset(hits, 0, sizeof hits);
        sl_parallel_for(5000, 100, mark, (void *)1);
        for (int i = 3; i < 5000; i++) ck_assert_int_eq(atomic_load(&hits[i]), 1);
    }
    sl_set_num_threads(0); /* back to the default */
    ck_assert_int_ge(sl_get_num_threads(), 1);
}
END_TEST

static atomic_int inner_count;
static void ask_pool(void *ctx, int64_t b, int64_t e)
{
    /* Reading the thread count inside a job must not block; reconfiguring is refused. */
    atomic_fetch_add(&inner_count, sl_get_num_threads() >= 1 ? (int)(e - b) : 0);
    if (b == 0) sl_set_num_threads(1);
}

static void *user_thread(void *arg)
{
    memset(arg, 0, sizeof(atomic_int) * 1000);
    for (int rep = 0; rep < 200; rep++) sl_parallel_for(1000, 10, mark_range, arg);
    return NULL;
}

START_TEST(pool_jobs_from_callbacks_and_several_threads)
{
    sl_set_num_threads(2);
    atomic_store(&inner_count, 0);
    sl_parallel_for(1000, 10, ask_pool, NULL);
    ck_assert_int_eq(atomic_load(&inner_count), 1000);
    ck_assert_int_eq(sl_get_num_threads(), 2); /* the call from inside the job was refused */
    sl_error_clear(); /* the refusal set an error on whichever thread ran chunk 0 */
    /* Two user threads submitting jobs at once: each gets every index, exactly 200 times. */
    static atomic_int counts[2][1000];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, user_thread, counts[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 1000; k++) ck_assert_int_eq(atomic_load(&counts[i][k]), 200);
}
END_TEST

/* The CPUs the pool counts as this process's own (tensor/pool.c's rule, written out): its
 * affinity mask's, at most the machine's CPUs or a cgroup quota's (sl__cgroup_cpus, tested on
 * fake trees below), and with an MPI job's processes on the machine (the launchers' variables)
 * at most that divided among them; 0 when they outnumber the CPUs. */
static int cpu_share(void)
{
    const char *o = getenv("OMPI_COMM_WORLD_LOCAL_SIZE"), *m = getenv("MPI_LOCALNRANKS");
    int ranks = o && atoi(o) >= 1 ? atoi(o) : m && atoi(m) >= 1 ? atoi(m) : 1;
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int c = CPU_COUNT(&set), machine = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int quota = sl__cgroup_cpus("");
    if (quota >= 1 && quota < machine) machine = quota;
    if (c > machine) c = machine;
    return ranks > 1 && c > machine / ranks ? machine / ranks : c;
}

/* Writes text to root/rel, making the directories on the way. */
static void put_file(const char *root, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s", path);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* sl__cgroup_cpus on fake trees: cgroup v2's cpu.max and v1's cfs files, ceil(quota / period),
 * the tightest quota from the cgroup up to the mount (a container's host path that is not under
 * the mount reaches the container's own quota at the mount's root) and over the hierarchies, the
 * hybrid layout, and no quota for "max", -1, malformed, out-of-range or missing files, or a
 * path out of the mount (".."). */
START_TEST(cgroup_quota_from_fake_trees)
{
    char root[64];
    const char *v2_self = "0::/a/b\n", *v1_self = "5:cpuacct,cpu:/docker/abc\n2:memory:/x\n";
    struct {
        const char *self, *files[4][2];
        int want;
    } cases[] = {
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "150000 100000\n"}}, 2},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "100000 100000\n"}}, 1},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "max 100000\n"}}, 0},
        {v2_self, /* the parent's quota is the tighter */
         {{"sys/fs/cgroup/a/b/cpu.max", "800000 100000\n"},
          {"sys/fs/cgroup/a/cpu.max", "300000 100000\n"},
          {"sys/fs/cgroup/cpu.max", "max 100000\n"}},
         3},
        {v2_self, {{"sys/fs/cgroup/cpu.max", "50000 100000\n"}}, 1}, /* half a CPU: 1 */
        {v2_self, {{"sys/fs/cgroup/unified/a/b/cpu.max", "400000 100000\n"}}, 4}, /* hybrid */
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "12x 100000\n"}}, 0},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "-5 100000\n"}}, 0},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "200000 0\n"}}, 0},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.weight", "100\n"}}, 0},
        {v1_self, /* the container's own cgroup at the mount's root */
         {{"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n"},
          {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"}},
         3},
        {v1_self,
         {{"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", "-1\n"},
          {"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us", "100000\n"}},
         0},
        {"3:cpuset:/a\n", /* "cpuset" is not "cpu" (the files where a "cpu" line would look) */
         {{"sys/fs/cgroup/cpu/a/cpu.cfs_quota_us", "100000\n"},
          {"sys/fs/cgroup/cpu/a/cpu.cfs_period_us", "100000\n"}},
         0},
        {"3:cpu:/a/b\n", /* v1, from the parent */
         {{"sys/fs/cgroup/cpu/a/cpu.cfs_quota_us", "200000\n"},
          {"sys/fs/cgroup/cpu/a/cpu.cfs_period_us", "100000\n"}},
         2},
        {"0::/\n", {{"sys/fs/cgroup/cpu.max", "200000 100000\n"}}, 2}, /* a namespace's root */
        {"4:cpu,cpuacct:/\n0::/a/b\n", /* two hierarchies: the tighter */
         {{"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "500000\n"},
          {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"},
          {"sys/fs/cgroup/a/b/cpu.max", "200000 100000\n"}},
         2},
        {"0::/../../../x\n", /* outside the mount (which has to exist for ".." to resolve) */
         {{"x/cpu.max", "100000 100000\n"}, {"sys/fs/cgroup/cgroup.procs", "1\n"}},
         0},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "9223372036854775807 100000\n"}}, INT_MAX},
        {v2_self, {{"sys/fs/cgroup/a/b/cpu.max", "99999999999999999999 100000\n"}}, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(root, sizeof root, "/tmp/sl_cgroup_XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(root));
        put_file(root, "proc/self/cgroup", cases[i].self);
        for (int f = 0; f < 4 && cases[i].files[f][0]; f++)
            put_file(root, cases[i].files[f][0], cases[i].files[f][1]);
        int got = sl__cgroup_cpus(root);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", root);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_msg(got == cases[i].want, "case %zu: %d CPUs, want %d", i, got,
                      cases[i].want);
    }
    ck_assert_int_eq(sl__cgroup_cpus("/nonexistent/root"), 0); /* no /proc/self/cgroup */
}
END_TEST

/* The pool's watch before blocking: SL_POOL_SPIN_US when set; else 50 us while the threads fit
 * this process's share of the CPUs, and 0 when they do not. CTest runs this with each of those
 * environments. */
START_TEST(pool_watch_follows_threads_and_cpus)
{
    const char *forced = getenv("SL_POOL_SPIN_US");
    int share = cpu_share();
    for (int nt = 1; nt <= 3; nt++) {
        sl_set_num_threads(nt);
        int64_t want = forced                    ? 1000 * (int64_t)atol(forced)
                       : share >= 1 && nt <= share ? 50000
                                                   : 0;
        ck_assert_int_eq(sl__pool_spin_ns(), want);
    }
    sl_set_num_threads(0);
}
END_TEST

/* The pool's default size: the process's share of the CPUs (cpu_share above), so 1 when it is
 * bound to one CPU; the workers run under the mask the pool started with. State is restored
 * before anything is asserted (CK_FORK=no: later tests run in this process). CTest runs this
 * with and without an MPI job's environment. */
static void add_range(void *ctx, int64_t b, int64_t e)
{
    int64_t part = 0;
    for (int64_t i = b; i < e; i++) part += i;
    atomic_fetch_add((_Atomic int64_t *)ctx, part);
}

static _Atomic int worker_cpus_min, worker_cpus_max;

static void note_mask(void *ctx, int64_t b, int64_t e)
{
    (void)ctx, (void)b, (void)e;
    cpu_set_t set;
    int c = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
    for (int m = atomic_load(&worker_cpus_min); c < m;)
        if (atomic_compare_exchange_weak(&worker_cpus_min, &m, c)) break;
    for (int m = atomic_load(&worker_cpus_max); c > m;)
        if (atomic_compare_exchange_weak(&worker_cpus_max, &m, c)) break;
}

START_TEST(pool_default_follows_affinity)
{
    const char *env = getenv("SL_NUM_THREADS");
    char *saved = env ? strdup(env) : NULL;
    unsetenv("SL_NUM_THREADS");
    int share = cpu_share(), want = share < 1 ? 1 : share > 256 ? 256 : share;
    cpu_set_t all;
    ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
    int cpus = CPU_COUNT(&all);
    sl_set_num_threads(0);
    int got_all = sl_get_num_threads(), got_one = 1, set_ok = 0, restored = 0;
    _Atomic int64_t sum = 0;
    if (cpus > 1) { /* bound to one CPU of the mask, as mpirun --bind-to core would */
        cpu_set_t one;
        CPU_ZERO(&one);
        int c = 0;
        while (!CPU_ISSET(c, &all)) c++;
        CPU_SET(c, &one);
        set_ok = sched_setaffinity(0, sizeof one, &one) == 0;
        sl_set_num_threads(0);
        got_one = sl_get_num_threads();
        sl_parallel_for(1000, 1, add_range, (void *)&sum);
        restored = sched_setaffinity(0, sizeof all, &all) == 0;
    }
    sl_set_num_threads(0); /* workers started again, under the whole mask */
    int got_again = sl_get_num_threads();
    atomic_store(&worker_cpus_min, INT_MAX);
    atomic_store(&worker_cpus_max, -1);
    sl_parallel_for(64, 1, note_mask, NULL);
    if (saved) setenv("SL_NUM_THREADS", saved, 1);
    free(saved);
    sl_set_num_threads(0);

    ck_assert_int_eq(got_all, want);
    ck_assert_int_eq(got_again, want);
    ck_assert_int_eq(atomic_load(&worker_cpus_min), cpus);
    ck_assert_int_eq(atomic_load(&worker_cpus_max), cpus);
    if (cpus > 1) {
        ck_assert(set_ok && restored);
        ck_assert_int_eq(got_one, 1);
        ck_assert_int_eq(atomic_load(&sum), 999 * 1000 / 2);
    }
}
END_TEST

/* sl_item reads a one-element tensor of any dtype and any shape (a view included), exactly;
 * anything else is NaN with an error. */
START_TEST(item_of_every_dtype)
{
    ck_assert(sl_item(sl_scalar(SL_I32, -2147483647)) == -2147483647.0);
    ck_assert(sl_item(sl_scalar(SL_F32, 0.1)) == (double)0.1f);
    ck_assert(sl_item(sl_scalar(SL_F64, 0.1)) == 0.1);
    ck_assert(sl_item(sl_full(SL_I32, sl_shape(1, 1, 1), 7)) == 7.0);
    sl_tensor *t = sl_from_data(SL_F64, sl_shape(2, 3), (double[]){1, 2, 3, 4, 5, 6});
    ck_assert(sl_item(sl_narrow(sl_narrow(t, 0, 1, 1), 1, 2, 1)) == 6.0); /* a strided view */
    ck_assert_int_eq(sl_error(), SL_OK);

    ck_assert(isnan(sl_item(sl_zeros(SL_I32, sl_shape(2)))));
    ck_assert_int_eq(sl_error(), SL_ERR_SHAPE);
    ck_assert_str_eq(sl_error_message(), "sl_item: expected one element, got [2]");
    sl_error_clear();
    ck_assert(isnan(sl_item(sl_zeros(SL_F32, sl_shape(0)))));
    ck_assert_str_eq(sl_error_message(), "sl_item: expected one element, got [0]");
    sl_error_clear();
    ck_assert(isnan(sl_item(NULL)));
    ck_assert_int_eq(sl_error(), SL_ERR_ARG);
    ck_assert_str_eq(sl_error_message(), "sl_item: argument 't' is NULL");
    ck_assert(isnan(sl_item(NULL))); /* a NULL from a failure keeps its message */
    ck_assert_str_eq(sl_error_message(), "sl_item: argument 't' is NULL");
    sl_error_clear();
    ck_assert(isnan(sl_item(SL_NONE)));
    ck_assert_str_eq(sl_error_message(), "sl_item: argument 't' is SL_NONE; it is not optional");
    sl_error_clear();
    sl_arena *a = sl_arena_new(0), *prev = sl_arena_set(a);
    sl_tensor *one = sl_scalar(SL_F64, 1);
    sl_arena_reset(a);
    ck_assert(isnan(sl_item(one)));
    ck_assert_int_eq(sl_error(), SL_ERR_STATE);
    sl_error_clear();
    sl_arena_set(prev);
    sl_arena_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("tensor");
    tu_fixture(tc, tu_setup, tu_teardown);
    tu_add_test(s, tc, creation_values_and_shapes);
    tu_add_test(s, tc, creation_errors);
    tu_add_test(s, tc, error_handler_and_clear);
    tu_add_test(s, tc, element_access_copy_fill_print);
    tu_add_test(s, tc, arena_reuses_blocks);
    tu_add_test(s, tc, arena_growing_rounds_keep_about_the_largest);
    tu_add_test(s, tc, rng_reference_stream);
    tu_add_test(s, tc, rng_hex_round_trip);
    tu_add_test(s, tc, rng_distributions);
    tu_add_test(s, tc, pool_covers_every_index_once);
    tu_add_test(s, tc, pool_jobs_from_callbacks_and_several_threads);
    tu_add_test(s, tc, pool_watch_follows_threads_and_cpus);
    tu_add_test(s, tc, pool_default_follows_affinity);
    tu_add_test(s, tc, cgroup_quota_from_fake_trees);
    tu_add_test(s, tc, item_of_every_dtype);
    return tu_run(s);
}
