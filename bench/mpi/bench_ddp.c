/* bench/mpi/bench_ddp.c — a data-parallel GPT training step on MPI (libshortlong_dist): time,
 * tokens/s, and what the all-reduce costs and how much of it the overlap hides.
 *
 *     SL_NUM_THREADS=1 mpirun -np 2 build/bin/bench_ddp               # 2 ranks x 1 thread
 *     SL_NUM_THREADS=2 mpirun -np 1 --bind-to none build/bin/bench_ddp # 1 rank x 2 threads
 *
 * The model and step are bench_gpt_step's (the reference config of BENCHMARKS.md: byte
 * vocabulary, d_model 256, 4 layers, 8 heads, context 256, global batch 8, tied embeddings,
 * fused qkv, ALiBi, AdamW with weight decay 0.1, lr 1e-4, one fixed batch of random bytes). The
 * global batch is split over the ranks, rank r taking rows [r B / N, (r + 1) B / N) with weight
 * rows / B. A step: zero grad, forward on the local rows, the backward with the gradients
 * all-reduced (sl_ddp_backward), AdamW.
 *
 * Modes, interleaved step by step so that they share the machine's load:
 *   overlap  sl_ddp_backward as it is: buckets reduced while the backward runs;
 *   after    the same reduction started only after the backward (sl_ddp_opts.after_backward);
 *   local    no reduction at all (a plain sl_backward): the compute alone, for reference.
 * And, after each step, with every rank synchronised by a barrier and nothing else running:
 *   comm     sl_ddp_reduce alone: the time the reduction of one step's gradients takes.
 *
 * Reported per mode (medians over the timed steps of each step's slowest rank): the step time,
 * tokens/s of the global batch, the backward (callbacks included), the callbacks' own time
 * (copies into the buckets, starting and progressing reductions) and the finish (after the
 * backward: the rest of the reduction, waiting for the other ranks, copying back). Then:
 *   hidden = (after - overlap) / comm: the share of the reduction's time the overlap removed
 *   from the step; and how many buckets had been reduced when the backward ended (overlap).
 *
 *     bench_ddp [--steps 10] [--warmup 2] [--bucket-bytes N] [--json] [--dim 256] [--layers 4]
 *               [--heads 8] [--context 256] [--batch 8]
 *
 * Threads per rank: SL_NUM_THREADS, else the pool's default: the CPUs the rank may run on (Open
 * MPI binds each rank to one core when it starts two or fewer, so 1), or with --bind-to none
 * the machine's CPUs divided among the ranks. A rank of several threads under a binding needs
 * --bind-to none (the program warns when a rank has fewer CPUs than threads).
 */
#define _GNU_SOURCE
#include <shortlong/dist.h>
#include <shortlong/shortlong.h>

#include "../bench_util.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_STEPS = 101 };
static const double LR = 1e-4, WEIGHT_DECAY = 0.1;

enum { OVERLAP, AFTER, LOCAL, COMM, N_MODES };
static const char *const mode_name[N_MODES] = {"overlap", "after", "local", "comm"};

static int rank, size;

static void die(const char *what)
{
    fprintf(stderr, "bench_ddp: rank %d: %s: %s\n", rank, what, sl_error_message());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static int usage(void)
{
    if (rank == 0)
        fprintf(stderr, "usage: bench_ddp [--steps N] [--warmup N] [--bucket-bytes N] [--json] "
                        "[--dim N] [--layers N] [--heads N] [--context N] [--batch N]\n");
    MPI_Finalize();
    return 2;
}

typedef struct {
    double step, backward, callback, finish, done_early;
} sample;

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    sl_gpt_config cfg = {.vocab_size = 256,
                         .context = 256,
                         .dim = 256,
                         .n_layers = 4,
                         .n_heads = 8,
                         .mlp_ratio = 4,
                         .pos = SL_POS_ALIBI,
                         .tie_embeddings = true,
                         .fused_qkv = true,
                         .seed = 1};
    int64_t B = 8;
    int steps = 10, warmup = 2;
    size_t bucket_bytes = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) json = true;
        else if (!v) return usage();
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--warmup")) warmup = atoi(v), i++;
        else if (!strcmp(a, "--bucket-bytes")) bucket_bytes = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--dim")) cfg.dim = atoll(v), i++;
        else if (!strcmp(a, "--layers")) cfg.n_layers = atoi(v), i++;
        else if (!strcmp(a, "--heads")) cfg.n_heads = atoi(v), i++;
        else if (!strcmp(a, "--context")) cfg.context = atoll(v), i++;
        else if (!strcmp(a, "--batch")) B = atoll(v), i++;
        else return usage();
    }
    if (steps < 1 || steps > MAX_STEPS || warmup < 0 || B < size) return usage();

    int threads = sl_get_num_threads();
    cpu_set_t cpus;
    int n_cpus = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : -1;
    if (n_cpus > 0 && n_cpus < threads)
        fprintf(stderr,
                "bench_ddp: warning: rank %d runs %d threads on %d CPU(s) (mpirun bound "
                "it: pass --bind-to none)\n",
                rank, threads, n_cpus);
    double load0[3] = {0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load0[0], &load0[1], &load0[2]) != 3) load0[0] = -1;
        fclose(la);
    }

    const int64_t T = cfg.context;
    sl_gpt *m = sl_gpt_new(&cfg, SL_F32);
    if (!m) die("sl_gpt_new");
    m->train = true;
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){0.9, 0.95, 1e-8, WEIGHT_DECAY});
    sl_ddp *ddp[2];
    for (int k = 0; k < 2; k++) {
        sl_ddp_opts o = {.bucket_bytes = bucket_bytes, .after_backward = k == AFTER};
        if (!(ddp[k] = sl_ddp_new(m->params, MPI_COMM_WORLD, &o))) die("sl_ddp_new");
    }
    sl_ddp_broadcast(ddp[0]);
    sl_arena *data = sl_arena_new(0), *step = sl_arena_new(0);
    if (!opt || !data || !step) die("setup");

    /* the global batch (the same on every rank), then this rank's rows */
    int64_t r0 = rank * B / size, r1 = (rank + 1) * B / size, rows = r1 - r0;
    sl_arena_set(data);
    sl_tensor *idx = sl_empty(SL_I32, sl_shape(rows, T)),
              *tgt = sl_empty(SL_I32, sl_shape(rows, T));
    if (!idx || !tgt) die("tokens");
    sl_rng rng = sl_rng_seed(7);
    int32_t *ip = idx->data, *tp = tgt->data;
    for (int64_t i = 0; i < B * T; i++) {
        int32_t a = (int32_t)sl_rng_below(&rng, (uint64_t)cfg.vocab_size);
        int32_t b = (int32_t)sl_rng_below(&rng, (uint64_t)cfg.vocab_size);
        if (i >= r0 * T && i < r1 * T) ip[i - r0 * T] = a, tp[i - r0 * T] = b;
    }
    sl_arena_set(NULL);
    double weight = (double)rows / (double)B;

    static sample s[N_MODES][MAX_STEPS];
    for (int it = 0; it < warmup + steps; it++)
        for (int mode = 0; mode < N_MODES; mode++) {
            sample x = {0};
            if (mode == COMM) { /* the reduction alone, every rank starting together */
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = now();
                if (!sl_ddp_reduce(ddp[OVERLAP], 1.0)) die("sl_ddp_reduce");
                x.step = x.finish = now() - t0;
            } else {
                double t0 = now();
                sl_params_zero_grad(m->params);
                sl_arena *prev = sl_arena_set(step);
                sl_tensor *loss = sl_gpt_loss(m, idx, tgt);
                bool ok;
                if (mode == LOCAL) {
                    double t1 = now();
                    ok = loss && sl_backward(loss);
                    x.backward = now() - t1;
                } else {
                    ok = sl_ddp_backward(ddp[mode], loss, weight);
                    sl_ddp_stats st;
                    sl_ddp_get_stats(ddp[mode], &st);
                    x.backward = st.backward_seconds;
                    x.callback = st.callback_seconds;
                    x.finish = st.finish_seconds;
                    x.done_early = st.done_early;
                }
                if (!ok || !sl_optim_step(opt, LR)) die("step");
                sl_arena_set(prev);
                sl_arena_reset(step);
                x.step = now() - t0;
            }
            /* the slowest rank's figures */
            double mine[5] = {x.step, x.backward, x.callback, x.finish, -x.done_early}, worst[5];
            MPI_Allreduce(mine, worst, 5, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (it >= warmup)
                s[mode][it - warmup] = (sample){worst[0], worst[1], worst[2], worst[3], -worst[4]};
        }

    double med[N_MODES][4], done_early = 0;
    for (int mode = 0; mode < N_MODES; mode++) {
        double v[5][MAX_STEPS];
        for (int k = 0; k < steps; k++) {
            v[0][k] = s[mode][k].step;
            v[1][k] = s[mode][k].backward;
            v[2][k] = s[mode][k].callback;
            v[3][k] = s[mode][k].finish;
            v[4][k] = s[mode][k].done_early;
        }
        for (int f = 0; f < 4; f++) med[mode][f] = 1e3 * median(v[f], steps);
        if (mode == OVERLAP) done_early = median(v[4], steps);
    }
    sl_ddp_stats st;
    sl_ddp_get_stats(ddp[OVERLAP], &st);
    double hidden = (med[AFTER][0] - med[OVERLAP][0]) / med[COMM][0];
    double tok = (double)(B * T);
    if (rank == 0 && json) {
        printf("{\"bench\": \"ddp\", \"ranks\": %d, \"threads\": %d, \"cpus_rank0\": %d, "
               "\"dim\": %lld, \"layers\": %d, \"heads\": %d, \"context\": %lld, \"batch\": %lld, "
               "\"params\": %lld, \"buckets\": %d, \"bytes\": %lld, \"steps\": %d, "
               "\"load1\": %.2f",
               size, threads, n_cpus, (long long)cfg.dim, cfg.n_layers, cfg.n_heads, (long long)T,
               (long long)B, (long long)sl_params_numel(m->params), st.n_buckets,
               (long long)st.bytes, steps, load0[0]);
        for (int mode = 0; mode < N_MODES; mode++)
            printf(", \"%s_step_ms\": %.3f, \"%s_tokens_per_s\": %.0f, \"%s_backward_ms\": %.3f, "
                   "\"%s_callback_ms\": %.3f, \"%s_finish_ms\": %.3f",
                   mode_name[mode], med[mode][0], mode_name[mode], tok / (1e-3 * med[mode][0]),
                   mode_name[mode], med[mode][1], mode_name[mode], med[mode][2], mode_name[mode],
                   med[mode][3]);
        printf(", \"done_early\": %.1f, \"hidden\": %.3f}\n", done_early, hidden);
    } else if (rank == 0) {
        printf("bench_ddp: %d rank(s) x %d thread(s) (rank 0 may use %d CPUs); GPT d_model %lld, "
               "%d layers, %d heads, T %lld, global batch %lld; %lld parameters; %d buckets, "
               "%.2f MB reduced per step; 1-minute load %.2f at the start; medians of %d steps "
               "(each step's slowest rank)\n",
               size, threads, n_cpus, (long long)cfg.dim, cfg.n_layers, cfg.n_heads, (long long)T,
               (long long)B, (long long)sl_params_numel(m->params), st.n_buckets, st.bytes / 1e6,
               load0[0], steps);
        printf("  %-8s %10s %10s %11s %11s %10s\n", "mode", "step ms", "tokens/s", "backward ms",
               "callback ms", "finish ms");
        for (int mode = 0; mode < N_MODES; mode++)
            printf("  %-8s %10.1f %10.0f %11.1f %11.2f %10.2f\n", mode_name[mode], med[mode][0],
                   mode == COMM ? 0.0 : tok / (1e-3 * med[mode][0]), med[mode][1], med[mode][2],
                   med[mode][3]);
        printf("  the reduction alone (comm): %.2f ms per step; after - overlap = %.2f ms: the "
               "overlap hides %.0f%% of it; overlap: %.1f of %d buckets reduced before the "
               "backward ended (median; the slowest rank)\n",
               med[COMM][0], med[AFTER][0] - med[OVERLAP][0], 100 * hidden, done_early,
               st.n_buckets);
    }
    for (int k = 0; k < 2; k++) sl_ddp_free(ddp[k]);
    sl_optim_free(opt);
    sl_gpt_free(m);
    sl_arena_free(step);
    sl_arena_free(data);
    MPI_Finalize();
    return 0;
}
