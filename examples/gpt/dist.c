/* examples/gpt/dist.c — the gpt program on several MPI ranks, and the rules that keep a job
 * from hanging.
 *
 * - MPI starts only when an MPI launcher started the process (its environment says so: Open
 *   MPI's OMPI_COMM_WORLD_SIZE, PMIx's PMIX_RANK, the PMI_RANK / PMI_SIZE of MPICH's Hydra and
 *   Slurm, MVAPICH's MV2_COMM_WORLD_SIZE), so a plain `gpt ...` never touches MPI.
 * - Until training starts the ranks share nothing: each parses the same flags, reads the data
 *   and builds or loads the model itself, and may fail on its own (a bad flag, a missing file).
 *   Then they meet once (dist_ready; a rank that failed earlier meets them in dist_end), and
 *   if any failed, every rank stops with the exit status of the lowest failing rank, which
 *   shows its messages ("rank R of N: " before each line). Ranks other than 0 hold their
 *   stdout and stderr in temporary files until then, so that the messages every rank prints
 *   appear once, from rank 0.
 * - From then on the ranks run in lockstep: every decision that ends a step or the run (a
 *   failure on one rank, a diverging loss, a signal, a failed save) is taken from values that
 *   every rank holds after a collective call (dist_sum, dist_all), so every rank takes it at
 *   the same point; a rank's failure inside a step is carried to the end of the step, never
 *   acted on alone.
 * - No rank calls MPI_Finalize alone while others train: dist_end is every rank's last call.
 *   A rank that dies ends the job (mpirun aborts the others, see shortlong/dist.h). */
#define _GNU_SOURCE /* sched_getaffinity */
#include "dist.h"

#include "gpt.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The launcher variable that says an MPI launcher started this process, or NULL. */
static const char *launched_by(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                       "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return vars[i];
    return NULL;
}

#ifdef SL_HAVE_MPI

#include <shortlong/dist.h>

static struct {
    bool on;        /* MPI started by dist_start */
    int rank, size; /* in MPI_COMM_WORLD */
    bool met;       /* the ranks have met (dist_ready, or dist_end before it) */
    int stop_rc;    /* when the meeting found a failure: the job's exit status; else -1 */
    sl_ddp *ddp;
    FILE *held[2]; /* ranks > 0 until the meeting: what stdout (0) and stderr (1) received */
    int saved[2];  /* the original descriptors 1 and 2 meanwhile */
} g = {.size = 1, .stop_rc = -1, .saved = {-1, -1}};

static bool several(void) { return g.on && g.size > 1; }

static void hold_output(void)
{
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        FILE *f = tmpfile();
        int saved = f ? dup(i + 1) : -1;
        if (saved < 0 || dup2(fileno(f), i + 1) < 0) { /* then this rank just prints */
            if (saved >= 0) close(saved);
            if (f) fclose(f);
            continue;
        }
        g.held[i] = f;
        g.saved[i] = saved;
    }
}

/* Restores stdout and stderr; with show, writes what they held to them, each line after
 * `prefix`. */
static void release_output(bool show, const char *prefix)
{
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        if (!g.held[i]) continue;
        dup2(g.saved[i], i + 1);
        close(g.saved[i]);
        if (show) {
            FILE *to = i ? stderr : stdout;
            char *line = NULL;
            size_t cap = 0;
            rewind(g.held[i]);
            while (getline(&line, &cap, g.held[i]) > 0)
                fprintf(to, "%s%s%s", prefix, line, strchr(line, '\n') ? "" : "\n");
            free(line);
            fflush(to);
        }
        fclose(g.held[i]);
        g.held[i] = NULL;
    }
}

/* The meeting: every rank says whether it is ready to train and, if not, its exit status. */
static bool meet(bool ready, int rc)
{
    g.met = true;
    int mine[2] = {ready, rc}, *all = malloc(sizeof *all * 2 * (size_t)g.size);
    if (!all) {
        fprintf(stderr, "gpt: rank %d: out of memory\n", g.rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allgather(mine, 2, MPI_INT, all, 2, MPI_INT, MPI_COMM_WORLD);
    int first = -1, n_ready = 0;
    for (int r = 0; r < g.size; r++) {
        n_ready += all[2 * r] != 0;
        if (!all[2 * r] && first < 0) first = r;
    }
    int first_rc = first >= 0 ? all[2 * first + 1] : 0;
    free(all);
    if (first < 0) {
        release_output(false, "");
        return true;
    }
    /* A rank that ended without an error (--help) while others were ready: a different command
     * line on that rank; the job still fails. */
    g.stop_rc = first_rc == 0 && n_ready > 0 ? 2 : first_rc;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rank %d of %d: ", first, g.size);
    release_output(g.rank == first && first > 0, prefix);
    if (g.rank == 0 && first > 0)
        fprintf(stderr, "gpt: rank %d of %d %s: every rank stops\n", first, g.size,
                first_rc ? "cannot train" : "ended before training");
    return false;
}

int dist_start(int *argc, char ***argv)
{
    if (!launched_by()) return -1;
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided); /* MPI errors abort the job */
    g.on = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    if (g.size == 1) return -1; /* mpirun -np 1: one process, as without mpirun */
    if (g.rank > 0) hold_output();
    if (provided < MPI_THREAD_FUNNELED) { /* the same on every rank */
        fprintf(stderr,
                "gpt: this MPI does not support MPI_THREAD_FUNNELED (it provides "
                "level %d), which the training's thread pool needs\n",
                provided);
        return 2;
    }
    const char *cmd = *argc > 1 ? (*argv)[1] : "";
    if (strcmp(cmd, "train")) {
        fprintf(stderr,
                "gpt: only `gpt train` runs on several ranks (mpirun started %d); run `gpt %s` "
                "as one process, without mpirun\n",
                g.size, cmd[0] ? cmd : "<command>");
        return 2;
    }
    return -1;
}

int dist_end(int rc)
{
    if (!g.on) return rc;
    if (several() && !g.met) meet(false, rc);
    if (g.stop_rc >= 0) rc = g.stop_rc;
    dist_detach();
    fflush(stdout);
    fflush(stderr);
    MPI_Finalize();
    return rc;
}

int dist_rank(void) { return several() ? g.rank : 0; }
int dist_size(void) { return several() ? g.size : 1; }

bool dist_ready(bool ok) { return several() ? meet(ok, 1) : ok; }

bool dist_all(bool ok)
{
    if (!several()) return ok;
    int mine = ok, all;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all != 0;
}

void dist_report(bool ok, const char *what)
{
    if (!several()) {
        if (!ok) fail(what);
        return;
    }
    char msg[640];
    if (!sl_dist_agree(MPI_COMM_WORLD, ok, sl_error_message(), msg, sizeof msg) && g.rank == 0)
        fprintf(stderr, "gpt: %s: %s\n", what, msg);
}

void dist_sum(double *vals, int n)
{
    /* sl_dist_sum fails only on a wrong n, which is the same on every rank */
    if (several() && !sl_dist_sum(MPI_COMM_WORLD, vals, n))
        sl_dist_all_ok(MPI_COMM_WORLD, false, sl_error_message());
}

enum { SETTINGS_CAP = 4096 };

/* Line `i` of s (without its newline) into out. */
static void line_of(const char *s, int i, char *out, size_t cap)
{
    for (; i > 0 && s; i--) s = (s = strchr(s, '\n')) ? s + 1 : NULL;
    size_t n = s ? strcspn(s, "\n") : 0;
    snprintf(out, cap, "%.*s", (int)n, s ? s : "");
}

bool dist_check_same(const char *settings)
{
    if (!several()) return true;
    char lead[SETTINGS_CAP], why[400] = "";
    snprintf(lead, sizeof lead, "%s", settings);
    MPI_Bcast(lead, sizeof lead, MPI_CHAR, 0, MPI_COMM_WORLD);
    bool same = !strncmp(lead, settings, sizeof lead - 1);
    for (int i = 0; !same && !why[0]; i++) {
        char a[160], b[160];
        line_of(settings, i, a, sizeof a);
        line_of(lead, i, b, sizeof b);
        if (strcmp(a, b)) snprintf(why, sizeof why, "it has %s where rank 0 has %s", a, b);
        else if (!a[0]) snprintf(why, sizeof why, "its settings differ from rank 0's");
    }
    char msg[640];
    if (sl_dist_agree(MPI_COMM_WORLD, same, why, msg, sizeof msg)) return true;
    if (g.rank == 0)
        fprintf(stderr,
                "gpt: the ranks would not train the same model on the same data: %s (start "
                "every rank with the same flags, files and checkpoint)\n",
                msg);
    return false;
}

bool dist_attach(sl_params *ps)
{
    if (!several()) return true;
    g.ddp = sl_ddp_new(ps, MPI_COMM_WORLD, NULL); /* fails on every rank together */
    if (!g.ddp) {
        if (g.rank == 0) fail("cannot start data-parallel training");
        return false;
    }
    sl_ddp_broadcast(g.ddp);
    int threads = sl_get_num_threads();
    cpu_set_t cpus;
    int n_cpus = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : threads;
    double short_of_cpus = n_cpus < threads;
    dist_sum(&short_of_cpus, 1);
    if (g.rank == 0 && short_of_cpus > 0)
        fprintf(stderr,
                "gpt: warning: %.0f of %d ranks have fewer CPUs than their %d threads: mpirun "
                "bound them (Open MPI binds a rank to one core when it starts 2 ranks or "
                "fewer); pass --bind-to none, see docs/distributed.md\n",
                short_of_cpus, g.size, threads);
    return true;
}

bool dist_backward(sl_tensor *loss, double weight)
{
    return several() ? sl_ddp_backward(g.ddp, loss, weight) : sl_backward(loss);
}

void dist_detach(void)
{
    if (!several()) return;
    sl_ddp_free(g.ddp); /* collective; NULL is a no-op on every rank */
    g.ddp = NULL;
}

#else /* built without MPI: one process */

int dist_start(int *argc, char ***argv)
{
    const char *var = launched_by();
    if (!var) return -1;
    const char *n =
        getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    fprintf(stderr,
            "gpt: this gpt was built without MPI, but an MPI launcher started it (%s is set%s%s): "
            "it cannot train data-parallel. Run it without mpirun, or rebuild it where CMake "
            "finds MPI (sudo apt-get install libopenmpi-dev openmpi-bin; the configure output "
            "then says \"MPI found\")\n",
            var, n ? ", ranks: " : "", n ? n : "");
    return 2;
}

int dist_end(int rc) { return rc; }
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
bool dist_ready(bool ok) { return ok; }
bool dist_all(bool ok) { return ok; }

void dist_report(bool ok, const char *what)
{
    if (!ok) fail(what);
}

void dist_sum(double *vals, int n) {}
bool dist_check_same(const char *settings) { return true; }
bool dist_attach(sl_params *ps) { return true; }
bool dist_backward(sl_tensor *loss, double weight) { return sl_backward(loss); }
void dist_detach(void) {}

#endif
