/* dist/helpers.c — what a training loop needs on any communicator besides the gradients: a sum
 * that repeats bitwise (the loss for printing), and agreeing on an error so that a failure on
 * one rank stops every rank instead of leaving them waiting.
 */
#include <shortlong/dist.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SUM_STACK = 256, SUM_MAX = 1 << 20, WHY_BYTES = 512 };

/* MPI_Allgather, then each value summed in rank order on every rank: the same bits everywhere,
 * which MPI_Allreduce does not promise. */
bool sl_dist_sum(MPI_Comm comm, double *vals, int n)
{
    if (n < 0) return sl_set_error(SL_ERR_ARG, "sl_dist_sum: n = %d is negative", n);
    if (n == 0) return true;
    int size;
    MPI_Comm_size(comm, &size);
    bool ok = true;
    double stack[SUM_STACK], zeros[SUM_STACK] = {0};
    size_t total = (size_t)n * (size_t)size;
    if (total > SUM_MAX) /* the same n on every rank: every rank fails here, none waits */
        return sl_set_error(SL_ERR_ARG, "sl_dist_sum: %d values on %d ranks is more than %d", n,
                            size, SUM_MAX);
    double *all = total <= SUM_STACK ? stack : malloc(sizeof *all * total);
    if (!all) { /* cannot take part: end the job rather than leave it waiting */
        int rank;
        MPI_Comm_rank(comm, &rank);
        fprintf(stderr, "shortlong: rank %d: sl_dist_sum: no memory for %d values on %d ranks\n",
                rank, n, size);
        MPI_Abort(comm, 1);
    }
    const double *mine = vals;
    if (!vals) { /* take part with zeros, then fail */
        ok = sl_set_error(SL_ERR_ARG, "sl_dist_sum: vals is NULL (this rank contributed zeros)");
        mine = n <= SUM_STACK ? zeros : NULL;
        if (!mine) mine = calloc((size_t)n, sizeof *mine);
        if (!mine) MPI_Abort(comm, 1);
    }
    MPI_Allgather(mine, n, MPI_DOUBLE, all, n, MPI_DOUBLE, comm);
    if (mine != vals && mine != zeros) free((void *)mine);
    for (int j = 0; ok && j < n; j++) {
        double s = all[j];
        for (int r = 1; r < size; r++) s += all[(size_t)r * (size_t)n + (size_t)j];
        vals[j] = s;
    }
    if (all != stack) free(all);
    return ok;
}

/* The lowest failing rank (MPI_MIN over rank or INT_MAX), then its message from it. */
static int first_failure(MPI_Comm comm, bool ok, const char *why, char text[WHY_BYTES])
{
    int rank, mine, first;
    MPI_Comm_rank(comm, &rank);
    mine = ok ? INT_MAX : rank;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == INT_MAX) return -1;
    if (rank == first) snprintf(text, WHY_BYTES, "%s", why && why[0] ? why : "failed");
    MPI_Bcast(text, WHY_BYTES, MPI_CHAR, first, comm);
    text[WHY_BYTES - 1] = '\0';
    return first;
}

bool sl_dist_agree(MPI_Comm comm, bool ok, const char *why, char *msg, size_t cap)
{
    char text[WHY_BYTES] = "";
    int first = first_failure(comm, ok, why, text);
    if (first < 0) {
        if (msg && cap) msg[0] = '\0';
        return true;
    }
    if (msg && cap) snprintf(msg, cap, "rank %d: %s", first, text);
    return false;
}

bool sl_dist_all_ok(MPI_Comm comm, bool ok, const char *why)
{
    char text[WHY_BYTES] = "";
    int first = first_failure(comm, ok, why, text);
    if (first < 0) return true;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (rank == first) {
        fprintf(stderr, "shortlong: rank %d of %d: %s\n", rank, size, text);
        fflush(stderr);
        MPI_Abort(comm, 1);
    }
    /* The failing rank's MPI_Abort ends this process too; until then it waits here (the failing
     * rank never enters the barrier). */
    MPI_Barrier(comm);
    MPI_Abort(comm, 1);
    return false;
}
