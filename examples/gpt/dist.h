/* examples/gpt/dist.h — the gpt program on several MPI ranks (dist.c).
 *
 * `mpirun -np N gpt train ...` trains data-parallel with libshortlong_dist when the program was
 * built with it (CMake found MPI: SL_HAVE_MPI); otherwise, and whenever no MPI launcher started
 * the process, there is one process and every function here is the one-process case: a no-op,
 * an identity, or sl_backward. A program built without MPI and started by mpirun says so and
 * exits with status 2 (dist_start).
 *
 * Collective calls (dist_ready, dist_all, dist_report, dist_sum, dist_check_same, dist_attach,
 * dist_backward, dist_detach) must be made by every rank, in the same order. How the training
 * loop keeps to that is said in dist.c. */
#ifndef GPT_DIST_H
#define GPT_DIST_H

#include <shortlong/shortlong.h>

/* First thing in main: starts MPI (MPI_THREAD_FUNNELED) when an MPI launcher started this
 * process and the program has MPI. -1 to go on; otherwise the exit status for dist_end, after
 * a message (built without MPI; or several ranks asked for another command than train). */
int dist_start(int *argc, char ***argv);
/* Last thing in main, on every rank: returns the exit status of the job (the same on every
 * rank: the failing rank's when the ranks stopped before training) and finalises MPI. */
int dist_end(int rc);

int dist_rank(void); /* 0 in one process */
int dist_size(void); /* the number of ranks; 1 in one process */

/* Collective: the ranks meet when each is ready to train (ok) or has failed (!ok, after its
 * messages). True when every rank is ready. Otherwise false on every rank: the job stops with
 * the lowest failing rank's exit status and messages (dist_end). Until this meeting ranks
 * other than 0 hold back their output, so that what every rank says appears once. */
bool dist_ready(bool ok);

/* Collective: true when ok on every rank (no message). */
bool dist_all(bool ok);
/* Collective, once every rank knows that some rank failed (ok false there): rank 0 prints
 * "gpt: <what>: rank R: <message>" from the lowest failing rank R (in one process, as fail()). */
void dist_report(bool ok, const char *what);
/* Collective: vals[0..n) summed over the ranks in rank order, the same bits on every rank. */
void dist_sum(double *vals, int n);
/* Collective: whether every rank's `settings` (lines "name value") equal rank 0's; if not,
 * false on every rank, and rank 0 prints the first line that differs on the lowest such rank. */
bool dist_check_same(const char *settings);

/* Collective: the data-parallel wrapper around ps (sl_ddp_new), then rank 0's parameters on
 * every rank (sl_ddp_broadcast). False on every rank after rank 0 printed why. Also warns when
 * a rank has fewer CPUs than threads (mpirun bound it). */
bool dist_attach(sl_params *ps);
/* sl_backward(loss), its gradients summed over the ranks with each rank's weight, its share of
 * the global batch (sl_ddp_backward; in one process sl_backward). */
bool dist_backward(sl_tensor *loss, double weight);
void dist_detach(void);

#endif
