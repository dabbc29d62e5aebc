/* tests/dist/test_dist.c — libshortlong_dist under mpirun (tests/dist/run_mpi.sh).
 *
 *     mpirun -np N test_dist CASE
 *
 * runs one case on every rank; tests/dist/CMakeLists.txt registers each case with CTest as
 * dist.<case> (with the rank count in the name when it is run at more than one). Not a Check
 * suite: a failed Check assertion on one rank would let that rank go on to the next test while
 * the others wait in a collective. A failed CHECK here prints the rank, the line and the message
 * and ends the whole job (MPI_Abort), so a failure is reported, never a hang.
 */
#include <shortlong/dist.h>
#include <shortlong/shortlong.h>

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank, size;

__attribute__((format(printf, 4, 5))) static void fail_at(const char *file, int line,
                                                          const char *cond, const char *fmt, ...)
{
    fprintf(stderr, "test_dist: rank %d of %d: %s:%d: check failed: %s: ", rank, size, file, line,
            cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__);                              \
    } while (0)
#define OK(call) CHECK(call, "%s", sl_error_message())

/* ================================================================ by hand */

/* p_i . C_i summed over the given parameters (NULL entries skipped): d/dp_i = C_i. */
static sl_tensor *dot_loss(sl_tensor *const *p, sl_tensor *const *c, int n)
{
    sl_tensor *loss = NULL;
    for (int i = 0; i < n; i++) {
        if (!p[i]) continue;
        sl_tensor *t = sl_sum_all(sl_mul(p[i], c[i]));
        loss = loss ? sl_add(loss, t) : t;
    }
    return loss;
}

/* Rank r's gradient of parameter i at element j: small integers, so every weighted sum below is
 * exact in f32 and the comparison can be ==. */
static double hand_grad(int r, int i, int64_t j) { return (r + 1) * (i + 1) + (double)(j % 5); }

/* Dyadic shares that sum to 1: 1/2, 1/4, ..., and the last one twice. */
static double share(int r, int n)
{
    return r < n - 1 ? ldexp(1.0, -(r + 1)) : ldexp(1.0, -(n - 1));
}

static void average_by_hand_dtype(sl_dtype dtype)
{
    enum { P = 6 };
    const int64_t numel[P] = {1, 7, 13, 100, 3, 64};
    /* Buckets over the parameters in reverse order (64, 3, 100, 13, 7, 1 elements), closed at
     * >= bucket_bytes: 4 bytes is less than any parameter (one bucket each); 40 splits them
     * unevenly (f32: [64] [3 100] [13] [7 1]; f64: [64] [3 100] [13] [7] [1]); 1 GiB and the
     * default (1 MiB) hold everything. */
    const size_t bucket_bytes[] = {4, 40, (size_t)1 << 30, 0};
    const int want_buckets[2][4] = {{6, 4, 1, 1}, {6, 5, 1, 1}};
    sl_params *ps = sl_params_new(dtype);
    sl_tensor *p[P], *c[P];
    sl_arena *consts = sl_arena_new(0), *step = sl_arena_new(0);
    for (int i = 0; i < P; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        p[i] = i == 3   ? sl_params_add(ps, name, sl_shape(10, 10), true)
               : i == 5 ? sl_params_add(ps, name, sl_shape(4, 16), true)
                        : sl_params_add(ps, name, 1, &numel[i], true);
        OK(p[i]);
        sl_arena *prev = sl_arena_set(consts);
        c[i] = sl_zeros(dtype, p[i]->ndim, p[i]->shape);
        sl_arena_set(prev);
        for (int64_t j = 0; j < numel[i]; j++) sl_set(c[i], j, hand_grad(rank, i, j));
    }
    for (int bb = 0; bb < 4; bb++)
        for (int mode = 0; mode < 2; mode++) {
            sl_ddp_opts o = {.bucket_bytes = bucket_bytes[bb], .after_backward = mode == 1};
            sl_ddp *ddp = sl_ddp_new(ps, MPI_COMM_WORLD, &o);
            OK(ddp);
            sl_ddp_stats st;
            sl_ddp_get_stats(ddp, &st);
            CHECK(st.n_buckets == want_buckets[dtype == SL_F64][bb],
                  "bucket_bytes %zu: %d buckets, want %d", bucket_bytes[bb], st.n_buckets,
                  want_buckets[dtype == SL_F64][bb]);
            CHECK(st.bytes == (int64_t)sl_dtype_size(dtype) * (188 + P), "%lld bytes",
                  (long long)st.bytes);
            for (int rep = 0; rep < 2; rep++) { /* the second step reuses the buckets */
                sl_params_zero_grad(ps);
                sl_arena *prev = sl_arena_set(step);
                OK(sl_ddp_backward(ddp, dot_loss(p, c, P), share(rank, size)));
                sl_arena_set(prev);
                sl_arena_reset(step);
                for (int i = 0; i < P; i++)
                    for (int64_t j = 0; j < numel[i]; j++) {
                        double want = 0;
                        for (int r = 0; r < size; r++) want += share(r, size) * hand_grad(r, i, j);
                        double got = sl_get(p[i]->grad, j);
                        CHECK(got == want, "%s, bucket_bytes %zu, %s: p%d[%lld] = %.9g, want %.9g",
                              sl_dtype_name(dtype), bucket_bytes[bb],
                              mode ? "after the backward" : "overlapped", i, (long long)j, got,
                              want);
                    }
                sl_ddp_get_stats(ddp, &st);
                CHECK(mode == 1 ? st.launched_early == 0 : st.launched_early == st.n_buckets,
                      "%d of %d buckets started in the backward", st.launched_early, st.n_buckets);
            }
            sl_ddp_free(ddp);
        }
    sl_params_free(ps);
    sl_arena_free(consts);
    sl_arena_free(step);
}

static void test_average_by_hand(void)
{
    average_by_hand_dtype(SL_F32);
    average_by_hand_dtype(SL_F64);
}

/* ================================================================ missing gradients */

static void check_grad(const sl_tensor *p, double want, const char *when)
{
    CHECK(p->grad, "%s: %s has no gradient", when, p->name);
    for (int64_t j = 0; j < sl_numel(p); j++)
        CHECK(sl_get(p->grad, j) == want, "%s: %s[%lld] = %g, want %g", when, p->name, (long long)j,
              sl_get(p->grad, j), want);
}

static void test_missing_grad(void)
{
    CHECK(size >= 2, "needs 2 ranks or more");
    const size_t bucket_bytes[] = {4, (size_t)1 << 30};
    for (int bb = 0; bb < 2; bb++) {
        sl_params *ps = sl_params_new(SL_F32);
        sl_tensor *a = sl_params_add(ps, "a", sl_shape(5), true);
        sl_tensor *b = sl_params_add(ps, "b", sl_shape(6), true);
        sl_tensor *c = sl_params_add(ps, "c", sl_shape(7), true);
        sl_tensor *d = sl_params_add(ps, "d", sl_shape(3), true);
        OK(a && b && c && d);
        sl_ddp *ddp =
            sl_ddp_new(ps, MPI_COMM_WORLD, &(sl_ddp_opts){.bucket_bytes = bucket_bytes[bb]});
        OK(ddp);
        sl_arena *step = sl_arena_new(0);
        sl_arena *prev = sl_arena_set(step);
        /* Step 1: rank 0 uses a and b, rank 1 a and c, the others a alone; d is used nowhere.
         * Gradients: a (r + 1) on rank r, b 2 on rank 0, c 3 on rank 1; weights 1. */
        sl_tensor *ca = sl_full(SL_F32, sl_shape(5), rank + 1),
                  *cb = sl_full(SL_F32, sl_shape(6), 2), *cc = sl_full(SL_F32, sl_shape(7), 3);
        sl_tensor *use[3] = {a, rank == 0 ? b : NULL, rank == 1 ? c : NULL};
        sl_tensor *cs[3] = {ca, cb, cc};
        OK(sl_ddp_backward(ddp, dot_loss(use, cs, 3), 1.0));
        check_grad(a, size * (size + 1) / 2.0, "step 1");
        check_grad(b, 2, "step 1"); /* made on ranks 1.. */
        check_grad(c, 3, "step 1"); /* made on ranks 0, 2.. */
        CHECK(!d->grad, "step 1: d got a gradient on rank %d, though no rank had one", rank);
        sl_arena_reset(step);

        /* Step 2: rank 1 has no rows (SL_NONE, weight 0); the others use a alone. b and c have
         * zeroed gradients everywhere, which stay (zero); d still none. */
        sl_params_zero_grad(ps);
        ca = sl_full(SL_F32, sl_shape(5), rank + 1);
        if (rank == 1) OK(sl_ddp_backward(ddp, SL_NONE, 0.0));
        else OK(sl_ddp_backward(ddp, sl_sum_all(sl_mul(a, ca)), 1.0));
        check_grad(a, size * (size + 1) / 2.0 - 2, "step 2");
        check_grad(b, 0, "step 2");
        check_grad(c, 0, "step 2");
        CHECK(!d->grad, "step 2: d got a gradient");
        sl_arena_reset(step);

        /* Step 3: rank 1's forward fails (a NULL loss): it returns false with its error, the
         * others succeed with rank 1's zeros in the sums; then every rank learns of it. */
        sl_params_zero_grad(ps);
        ca = sl_full(SL_F32, sl_shape(5), rank + 1);
        sl_tensor *loss =
            rank == 1 ? sl_matmul(sl_reshape(a, sl_shape(1, 5)), sl_reshape(b, sl_shape(1, 6)))
                      : sl_sum_all(sl_mul(a, ca));
        bool ok = sl_ddp_backward(ddp, loss, 1.0);
        CHECK(ok == (rank != 1), "step 3: sl_ddp_backward returned %d", ok);
        if (rank == 1)
            CHECK(strstr(sl_error_message(), "sl_matmul: inner dims differ"), "step 3: error '%s'",
                  sl_error_message());
        else check_grad(a, size * (size + 1) / 2.0 - 2, "step 3");
        char msg[256];
        CHECK(!sl_dist_agree(MPI_COMM_WORLD, ok, sl_error_message(), msg, sizeof msg),
              "step 3: the ranks agreed that all was well");
        CHECK(!strncmp(msg, "rank 1: sl_matmul: inner dims differ", 36), "step 3: message '%s'",
              msg);
        sl_error_clear();
        sl_arena_reset(step);

        /* Step 4: a bad weight on rank 0: false there, zeros from it, the others go on. */
        sl_params_zero_grad(ps);
        ca = sl_full(SL_F32, sl_shape(5), rank + 1);
        ok = sl_ddp_backward(ddp, sl_sum_all(sl_mul(a, ca)), rank == 0 ? NAN : 1.0);
        CHECK(ok == (rank != 0), "step 4: returned %d", ok);
        if (rank == 0)
            CHECK(strstr(sl_error_message(), "weight nan is not a finite number"), "'%s'",
                  sl_error_message());
        check_grad(a, size * (size + 1) / 2.0 - 1, "step 4");
        sl_error_clear();
        sl_arena_reset(step);

        /* Step 5: after the failures, an ordinary step is exact again. */
        sl_params_zero_grad(ps);
        ca = sl_full(SL_F32, sl_shape(5), rank + 1);
        OK(sl_ddp_backward(ddp, sl_sum_all(sl_mul(a, ca)), 1.0));
        check_grad(a, size * (size + 1) / 2.0, "step 5");
        sl_arena_set(prev);
        sl_arena_free(step);
        sl_ddp_free(ddp);
        sl_params_free(ps);
    }
}

/* ================================================================ a small GPT */

enum { STEPS = 20, B = 5, T = 16 };
#define LR_VALUE 3e-3
static const double LR = LR_VALUE;

static sl_gpt *small_gpt(uint64_t seed)
{
    sl_gpt_config cfg = {.vocab_size = 32,
                         .context = T,
                         .dim = 32,
                         .n_layers = 2,
                         .n_heads = 4,
                         .mlp_ratio = 4,
                         .pos = SL_POS_ALIBI,
                         .tie_embeddings = true,
                         .fused_qkv = true,
                         .seed = seed};
    sl_gpt *m = sl_gpt_new(&cfg, SL_F32);
    OK(m);
    m->train = true;
    return m;
}

/* The global batch of step s (B, T) and its targets, the same on every rank. */
static void batch(int s, int32_t *idx, int32_t *tgt)
{
    sl_rng r = sl_rng_seed(1000 + (uint64_t)s);
    for (int i = 0; i < B * T; i++) {
        idx[i] = (int32_t)sl_rng_below(&r, 32);
        tgt[i] = (idx[i] * 5 + 3) % 32; /* learnable: a function of the current token */
    }
}

static sl_optim *adamw(sl_gpt *m)
{
    sl_optim *o = sl_adamw_new(m->params, &(sl_adamw_config){0.9, 0.95, 1e-8, 0.1});
    OK(o);
    return o;
}

/* One process, the whole batch: the reference. Writes the loss of each step. */
static sl_gpt *train_single(double *losses)
{
    sl_gpt *m = small_gpt(1);
    sl_optim *o = adamw(m);
    sl_arena *step = sl_arena_new(0);
    int32_t idx[B * T], tgt[B * T];
    for (int s = 0; s < STEPS; s++) {
        batch(s, idx, tgt);
        sl_params_zero_grad(m->params);
        sl_arena *prev = sl_arena_set(step);
        sl_tensor *loss = sl_gpt_loss(m, sl_from_data(SL_I32, sl_shape(B, T), idx),
                                      sl_from_data(SL_I32, sl_shape(B, T), tgt));
        OK(loss && sl_backward(loss) && sl_optim_step(o, LR));
        losses[s] = sl_item(loss);
        sl_arena_set(prev);
        sl_arena_reset(step);
    }
    sl_optim_free(o);
    sl_arena_free(step);
    return m;
}

typedef struct {
    sl_ddp_opts opts;
    int jitter_rank;               /* that rank sleeps in some of its backward's nodes (-1: none) */
    int die_rank;                  /* that rank ends itself in the backward of step 3 (-1: none) */
    int die_how;                   /* 0: exit(3); 1: SIGKILL */
    uint64_t heap_allocs_warm;     /* out: shortlong heap allocations in steps 2.. */
    int launched_early, n_buckets; /* out: the last step's stats */
} ddp_run;

typedef struct {
    int nodes;
    int die_how;
    bool die;
    int die_at; /* the node (counted from 1) after whose backward the rank dies */
} node_hook;

static void hook_node_end(void *user, const sl_node *node)
{
    node_hook *h = user;
    h->nodes++;
    if (h->die && h->nodes == h->die_at) {
        fprintf(stderr, "test_dist: rank %d ends itself (%s) in the backward of step 3\n", rank,
                h->die_how == 0 ? "exit(3)" : "SIGKILL");
        if (h->die_how == 0) exit(3);
        raise(SIGKILL);
    }
    if (!h->die && h->nodes % 7 == 0) usleep(300);
}

/* Data-parallel: rank r trains on rows [r B / N, (r + 1) B / N) with weight rows / B, starting
 * from its own initialisation (seed 1 + r) overwritten by rank 0's through the broadcast. */
static sl_gpt *train_ddp(ddp_run *run, double *losses)
{
    sl_gpt *m = small_gpt(1 + (uint64_t)rank);
    sl_optim *o = adamw(m);
    sl_ddp *ddp = sl_ddp_new(m->params, MPI_COMM_WORLD, &run->opts);
    OK(ddp);
    OK(sl_ddp_broadcast(ddp));
    sl_arena *step = sl_arena_new(0);
    int r0 = rank * B / size, r1 = (rank + 1) * B / size, rows = r1 - r0;
    int32_t idx[B * T], tgt[B * T];
    node_hook hook = {0};
    sl_autograd_observer obs = {.user = &hook, .node_end = hook_node_end};
    int backward_nodes = 0; /* the dying rank counts them at step 2, to die halfway at step 3 */
    uint64_t heap0 = 0;
    for (int s = 0; s < STEPS; s++) {
        if (s == 2) heap0 = sl_heap_allocs();
        batch(s, idx, tgt);
        sl_params_zero_grad(m->params);
        sl_arena *prev = sl_arena_set(step);
        double w = (double)rows / B, l = 0;
        bool hooked = rank == run->jitter_rank || (rank == run->die_rank && (s == 2 || s == 3));
        hook = (node_hook){.die = rank == run->die_rank && s == 3, .die_how = run->die_how,
                           .die_at = backward_nodes / 2};
        if (hooked) OK(sl_autograd_add_observer(&obs));
        if (rows > 0) {
            sl_tensor *loss = sl_gpt_loss(m, sl_from_data(SL_I32, sl_shape(rows, T), idx + r0 * T),
                                          sl_from_data(SL_I32, sl_shape(rows, T), tgt + r0 * T));
            OK(sl_ddp_backward(ddp, loss, w));
            l = w * sl_item(loss);
        } else OK(sl_ddp_backward(ddp, SL_NONE, 0.0));
        if (hooked) sl_autograd_remove_observer(&obs);
        if (rank == run->die_rank && s == 2) backward_nodes = hook.nodes;
        OK(sl_optim_step(o, LR));
        OK(sl_dist_sum(MPI_COMM_WORLD, &l, 1));
        losses[s] = l;
        sl_arena_set(prev);
        sl_arena_reset(step);
    }
    run->heap_allocs_warm = sl_heap_allocs() - heap0;
    sl_ddp_stats st;
    sl_ddp_get_stats(ddp, &st);
    run->launched_early = st.launched_early;
    run->n_buckets = st.n_buckets;
    sl_ddp_free(ddp);
    sl_optim_free(o);
    sl_arena_free(step);
    return m;
}

/* The key part of a fused qkv bias, elements [C, 2C) of "blocks.<l>.attn.qkv.bias": its exact
 * gradient is zero (adding b_k to every key adds q . b_k to every score of a query, which the
 * softmax ignores), so what a backward computes for it is rounding noise. */
static bool is_key_bias(const sl_tensor *v, int64_t j, int64_t C)
{
    size_t n = strlen(v->name), suffix = strlen("attn.qkv.bias");
    return n >= suffix && !strcmp(v->name + n - suffix, "attn.qkv.bias") && j >= C && j < 2 * C;
}

/* max |a - b| over every parameter but the key biases (*worst), and over those (*worst_kb); the
 * registries match by construction. */
static void max_diff(const sl_gpt *a, const sl_gpt *b, double *worst, double *worst_kb,
                     bool *bitwise)
{
    *worst = *worst_kb = 0;
    *bitwise = true;
    for (int i = 0; i < sl_params_count(a->params); i++) {
        const sl_tensor *x = sl_params_at(a->params, i)->value;
        const sl_tensor *y = sl_params_at(b->params, i)->value;
        const float *p = sl_ptr(x), *q = sl_ptr(y);
        for (int64_t j = 0; j < sl_numel(x); j++) {
            double d = fabs((double)p[j] - q[j]);
            double *w = is_key_bias(x, j, a->cfg.dim) ? worst_kb : worst;
            if (d > *w) *w = d;
            if (memcmp(&p[j], &q[j], sizeof *p)) *bitwise = false;
        }
    }
}

/* Every rank holds bitwise rank 0's parameters. */
static void check_replicas_equal(const sl_gpt *m)
{
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_tensor *v = sl_params_at(m->params, i)->value;
        size_t bytes = sizeof(float) * (size_t)sl_numel(v);
        float *mine = sl_ptr(v), *zero = malloc(bytes);
        CHECK(zero, "out of memory");
        memcpy(zero, mine, bytes);
        MPI_Bcast(zero, (int)sl_numel(v), MPI_FLOAT, 0, MPI_COMM_WORLD);
        CHECK(!memcmp(zero, mine, bytes), "%s differs from rank 0's", v->name);
        free(zero);
    }
}

/* The tolerance of a data-parallel run against one process. Both compute the gradient of the
 * same global batch, with the sums associated differently (the matrix products' sums over rows,
 * the loss's mean, then the ring), so each step's gradients differ in their last bits, and 20
 * steps of training carry that on. TOL, 1e-5 absolute (1/300 of one AdamW step of lr 3e-3, on
 * parameters of size 0.02 to 1), holds every parameter with a real gradient; measured: 6e-7 on
 * 2 ranks, 3e-6 on 3. The key biases are the exception: their exact gradient is zero, both runs
 * follow rounding noise, and AdamW, which divides by the gradients' own root mean square, turns
 * noise into steps of up to about lr; they are held to TOL_KB = lr, one step (measured: 2e-5). */
static const double TOL = 1e-5, TOL_KB = LR_VALUE;

static void test_train_matches_single(void)
{
    double ref_loss[STEPS], loss[STEPS];
    sl_gpt *ref = train_single(ref_loss);
    ddp_run run = {.opts = {.bucket_bytes = 4096}, .jitter_rank = -1, .die_rank = -1};
    sl_gpt *m = train_ddp(&run, loss);
    bool bitwise;
    double worst, worst_kb, worst_loss = 0;
    max_diff(ref, m, &worst, &worst_kb, &bitwise);
    for (int s = 0; s < STEPS; s++) worst_loss = fmax(worst_loss, fabs(loss[s] - ref_loss[s]));
    if (rank == 0)
        printf("%d ranks against 1 process after %d AdamW steps (lr %g): max |param diff| %.3g "
               "(tolerance %g), key biases %.3g (tolerance %g)%s; max |loss diff| %.3g; loss "
               "%.4f -> %.4f; %d buckets\n",
               size, STEPS, LR, worst, size == 1 ? 0.0 : TOL, worst_kb, size == 1 ? 0.0 : TOL_KB,
               bitwise ? ", bitwise equal" : "", worst_loss, loss[0], loss[STEPS - 1],
               run.n_buckets);
    if (size == 1) CHECK(bitwise, "1 rank differs from the plain loop by %.3g", worst);
    CHECK(worst <= TOL, "max |param diff| %.3g > %g", worst, TOL);
    CHECK(worst_kb <= TOL_KB, "max |key bias diff| %.3g > %g", worst_kb, TOL_KB);
    CHECK(worst_loss <= 1e-5, "the global mean loss differs by %.3g", worst_loss);
    CHECK(loss[STEPS - 1] < loss[0] - 0.1, "no learning: %.4f -> %.4f", loss[0], loss[STEPS - 1]);
    CHECK(run.heap_allocs_warm == 0, "%llu shortlong heap allocations in warm steps",
          (unsigned long long)run.heap_allocs_warm);
    CHECK(run.n_buckets > 4, "%d buckets", run.n_buckets);
    CHECK(run.launched_early == run.n_buckets, "%d of %d buckets started in the backward",
          run.launched_early, run.n_buckets);
    check_replicas_equal(m);
    sl_gpt_free(ref);
    sl_gpt_free(m);
}

static void test_repeat_bitwise(void)
{
    double loss[3][STEPS];
    ddp_run runs[3] = {
        {.opts = {.bucket_bytes = 4096}, .jitter_rank = -1, .die_rank = -1},
        /* the same, with one rank's backward slowed at some nodes: messages arrive otherwise */
        {.opts = {.bucket_bytes = 4096}, .jitter_rank = size - 1, .die_rank = -1},
        /* two ranks: each sum is one addition, so neither bucket size nor overlap matters */
        {.opts = {.bucket_bytes = 100000, .after_backward = true},
         .jitter_rank = 0,
         .die_rank = -1},
    };
    int n_runs = size == 2 ? 3 : 2;
    sl_gpt *m[3];
    for (int k = 0; k < n_runs; k++) m[k] = train_ddp(&runs[k], loss[k]);
    for (int k = 1; k < n_runs; k++) {
        bool bitwise;
        double worst, worst_kb;
        max_diff(m[0], m[k], &worst, &worst_kb, &bitwise);
        CHECK(bitwise, "run %d differs from run 0 by up to %.3g", k, fmax(worst, worst_kb));
        CHECK(!memcmp(loss[0], loss[k], sizeof loss[0]), "run %d's losses differ", k);
    }
    CHECK(runs[2].launched_early == 0 || n_runs < 3, "after_backward started %d early",
          runs[2].launched_early);
    if (rank == 0)
        printf("%d ranks: %d runs bitwise equal (%d and %d buckets)\n", size, n_runs,
               runs[0].n_buckets, runs[n_runs - 1].n_buckets);
    for (int k = 0; k < n_runs; k++) sl_gpt_free(m[k]);
}

/* ================================================================ setup and helpers */

static void test_mismatched_models(void)
{
    CHECK(size >= 2, "needs 2 ranks or more");
    /* rank 1's second parameter has another shape */
    sl_params *ps = sl_params_new(SL_F32);
    OK(sl_params_add(ps, "w0", sl_shape(3), true));
    OK(sl_params_add(ps, "w1", sl_shape(rank == 1 ? 5 : 4), true));
    sl_ddp *ddp = sl_ddp_new(ps, MPI_COMM_WORLD, NULL);
    CHECK(!ddp, "sl_ddp_new accepted different models");
    CHECK(strstr(sl_error_message(),
                 "sl_ddp_new: rank 1: parameter 1 ('w1', f32 [5]) is not rank 0's parameter 1"),
          "'%s'", sl_error_message());
    /* rank 1 has one parameter more */
    if (rank == 1) OK(sl_params_add(ps, "w2", sl_shape(2), true));
    sl_params *same = sl_params_new(SL_F32);
    OK(sl_params_add(same, "w0", sl_shape(3), true));
    OK(sl_params_add(same, "w1", sl_shape(4), true));
    if (rank == 1) OK(sl_params_add(same, "w2", sl_shape(2), true));
    CHECK(!sl_ddp_new(same, MPI_COMM_WORLD, NULL), "an extra parameter was accepted");
    CHECK(strstr(sl_error_message(), "sl_ddp_new: rank 1: 3 parameters where rank 0 has 2"), "'%s'",
          sl_error_message());
    /* rank 0 has no registry */
    CHECK(!sl_ddp_new(rank == 0 ? NULL : same, MPI_COMM_WORLD, NULL), "NULL was accepted");
    CHECK(strstr(sl_error_message(), "sl_ddp_new: rank 0: the registry is NULL"), "'%s'",
          sl_error_message());
    sl_error_clear();
    /* and after all that, a good one works */
    sl_params_free(same);
    same = sl_params_new(SL_F32);
    OK(sl_params_add(same, "w0", sl_shape(3), true));
    OK((ddp = sl_ddp_new(same, MPI_COMM_WORLD, NULL)));
    CHECK(sl_ddp_rank(ddp) == rank && sl_ddp_size(ddp) == size, "rank %d size %d", sl_ddp_rank(ddp),
          sl_ddp_size(ddp));
    sl_ddp_free(ddp);
    sl_params_free(same);
    sl_params_free(ps);
}

static void test_helpers(void)
{
    /* Rank order: ((1e16 + 1) + 1) + ... - 1e16 on the last rank, in doubles. */
    double v[2] = {rank == 0 ? 1e16 : rank == size - 1 ? -1e16 : 1.0, (double)rank};
    if (size == 1) v[0] = 1.0;
    double want0 = 0, want1 = 0;
    for (int r = 0; r < size; r++) {
        want0 += size == 1 ? 1.0 : r == 0 ? 1e16 : r == size - 1 ? -1e16 : 1.0;
        want1 += r;
    }
    OK(sl_dist_sum(MPI_COMM_WORLD, v, 2));
    CHECK(v[0] == want0 && v[1] == want1, "sums %.17g %g, want %.17g %g", v[0], v[1], want0, want1);
    OK(sl_dist_sum(MPI_COMM_WORLD, v, 0));
    /* too many values or a negative count: false on every rank, before any message */
    CHECK(!sl_dist_sum(MPI_COMM_WORLD, v, (1 << 20) / size + 1) &&
              strstr(sl_error_message(), "is more than 1048576"),
          "'%s'", sl_error_message());
    CHECK(!sl_dist_sum(MPI_COMM_WORLD, v, -1) && strstr(sl_error_message(), "n = -1"), "'%s'",
          sl_error_message());
    sl_error_clear();
    char msg[64] = "x";
    CHECK(sl_dist_agree(MPI_COMM_WORLD, true, "unused", msg, sizeof msg) && !msg[0], "'%s'", msg);
    char why[32];
    snprintf(why, sizeof why, "bad on rank %d", rank);
    bool agreed = sl_dist_agree(MPI_COMM_WORLD, rank == 0, why, msg, sizeof msg);
    CHECK(size == 1 ? agreed : !agreed, "agree returned %d", agreed);
    if (size > 1) CHECK(!strcmp(msg, "rank 1: bad on rank 1"), "'%s'", msg);
    CHECK(sl_dist_all_ok(MPI_COMM_WORLD, true, NULL), "all_ok");
}

/* ================================================================ failures (expected to fail) */

/* Ends the job: rank 1's argument is bad. tests/dist/run_mpi.sh checks the status and message. */
static void test_all_ok_aborts(void)
{
    bool ok = rank != 1;
    sl_dist_all_ok(MPI_COMM_WORLD, ok, ok ? NULL : "--batch 0 is not a positive number");
    fail_at(__FILE__, __LINE__, "sl_dist_all_ok", "returned although rank 1 failed");
}

/* Rank 1 ends itself in the middle of its backward at step 3, while rank 0 waits for its
 * messages: mpirun must end the job (non-zero status), not wait forever. */
static void rank_dies(int how)
{
    double loss[STEPS];
    ddp_run run = {
        .opts = {.bucket_bytes = 4096}, .jitter_rank = -1, .die_rank = 1, .die_how = how};
    sl_gpt_free(train_ddp(&run, loss));
    fail_at(__FILE__, __LINE__, "train_ddp", "returned although rank 1 died");
}
static void test_rank_exits(void) { rank_dies(0); }
static void test_rank_killed(void) { rank_dies(1); }

/* ================================================================ main */

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    {"average_by_hand", test_average_by_hand},
    {"missing_grad", test_missing_grad},
    {"train_matches_single", test_train_matches_single},
    {"repeat_bitwise", test_repeat_bitwise},
    {"mismatched_models", test_mismatched_models},
    {"helpers", test_helpers},
    {"all_ok_aborts", test_all_ok_aborts},
    {"rank_exits", test_rank_exits},
    {"rank_killed", test_rank_killed},
};

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    sl_set_num_threads(1); /* ranks share the machine's cores */
    const char *name = argc > 1 ? argv[1] : "";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(name, cases[i].name)) {
            cases[i].fn();
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) printf("test_dist %s: passed on %d ranks\n", name, size);
            MPI_Finalize();
            return 0;
        }
    if (rank == 0) fprintf(stderr, "test_dist: no case '%s'\n", name);
    MPI_Finalize();
    return 2;
}
