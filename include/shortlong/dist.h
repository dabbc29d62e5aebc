/* shortlong/dist.h — data-parallel training on MPI (libshortlong_dist).
 *
 * Built only when CMake finds MPI, as its own library: link libshortlong_dist (pkg-config
 * shortlong_dist, or the CMake target shortlong::dist) and MPI. shortlong.h does not include this
 * header, and the core library has no MPI dependency.
 *
 * Who starts MPI. The caller does: MPI_Init_thread (or MPI_Init) before any call here,
 * MPI_Finalize after the last sl_ddp_free. Nothing here initialises or finalises MPI, so the
 * library composes with a program that uses MPI for its own ends. MPI calls are made only from
 * the thread that calls these functions (the one that runs the backward); shortlong's pool
 * threads never call MPI. With a pool of more than one thread that is MPI_THREAD_FUNNELED when
 * it is the main thread (MPI_THREAD_SERIALIZED otherwise): ask for it in MPI_Init_thread.
 *
 * Data parallelism. Every rank holds the whole model and runs the same steps on its own rows of
 * each global batch. sl_ddp_broadcast makes every rank start from rank 0's parameters;
 * sl_ddp_backward runs the local backward and all-reduces the gradients while it runs, so that
 * every rank then holds the same gradients (those of the global batch) and an optimizer step
 * keeps the replicas identical. A training loop (the README shows it whole):
 *
 *     sl_ddp *ddp = sl_ddp_new(model->params, MPI_COMM_WORLD, NULL);     // every rank
 *     sl_ddp_broadcast(ddp);                                              // rank 0's weights
 *     for (step...) {
 *         ...this rank's rows [r0, r1) of the global batch of B rows...
 *         sl_params_zero_grad(model->params);
 *         sl_tensor *loss = local mean loss over those rows;
 *         double share = (double)(r1 - r0) / B;
 *         bool ok = sl_ddp_backward(ddp, loss, share);   // grads = the global batch's
 *         sl_dist_all_ok(MPI_COMM_WORLD, ok, sl_error_message()); // a failure ends the job
 *         sl_optim_step(opt, lr);
 *         double l = ok ? share * sl_item(loss) : 0;
 *         sl_dist_sum(MPI_COMM_WORLD, &l, 1);            // the global mean loss, for printing
 *     }
 *     sl_ddp_free(ddp);                                   // every rank
 *
 * Buckets. Gradients travel in buckets: the parameters in REVERSE registration order, packed
 * greedily, a bucket closed as soon as it holds at least bucket_bytes of gradients (so every
 * bucket but the last holds at least that much; a parameter larger than bucket_bytes is a bucket
 * of its own; parameters are never split). Reverse order because modules register their
 * parameters in the order the forward uses them, and the backward finishes them in about the
 * opposite order: the first bucket is complete early in the backward, and each later one soon
 * after the one before (a parameter used again late, like a tied embedding, holds back only
 * its own bucket, the last).
 *
 * Overlap. While sl_backward runs, an autograd observer (autograd.h) copies each parameter's
 * gradient into its bucket as soon as it is final (grad_ready), and starts a bucket's reduction
 * when the bucket is complete and every bucket before it has started (so every rank starts them
 * in the same order, whatever the order its gradients arrive in). Reductions progress inside the
 * observer's callbacks (after each node's backward), because MPI libraries do not in general move
 * non-blocking messages forward unless the process calls into MPI. What is left after the
 * backward is finished there, and each bucket's result copied back into the gradients.
 *
 * The reduction. A ring all-reduce written on MPI_Isend/MPI_Irecv, not MPI_Iallreduce: MPI does
 * not promise a fixed summation order (the standard only recommends one, and MPI libraries pick
 * algorithms by message size and process layout), and a run must repeat bitwise. Each bucket is
 * cut into N chunks (N ranks) at fixed offsets; chunk c is summed along the ring starting at rank
 * c, ((g_c + g_{c+1}) + g_{c+2}) + ..., then passed around whole, so every rank ends with the
 * same bits, and the same number of ranks and bucket size always give the same result. (With two
 * ranks the sum is a single addition, and the result does not depend on the bucket size either.)
 * Against one process that runs the whole global batch, results differ by rounding only: the
 * sums are associated differently.
 *
 * Weights. Each rank passes its share of the global batch; the gradients become
 * sum_r share_r * grad_r, each product rounded once to the parameters' dtype. With local mean
 * losses over n_r of B rows and share_r = n_r / B, that is the gradient of the global mean,
 * however unevenly the rows are split. (Equal shares 1/N give plain averaging.)
 *
 * Missing gradients. A parameter that the backward did not reach on a rank, or whose gradient is
 * absent (NULL), contributes zeros there: every rank still takes part in every bucket. Each
 * bucket also carries one count per parameter of the ranks that had a gradient, so the ranks
 * agree without another message: a parameter gets a gradient (allocated zero, then the sum) on
 * every rank when any rank had one, and stays without one (so an optimizer skips it) when none
 * had.
 *
 * Collective calls. sl_ddp_new, sl_ddp_broadcast, sl_ddp_backward, sl_ddp_reduce, sl_ddp_free and
 * the sl_dist_* functions are collective: every rank of the communicator calls them, the same
 * number of times, in the same order. A call that fails on one rank because of a local problem
 * (a NULL loss from a failed forward, a failed backward, a bad weight) still takes part in the
 * reduction, contributing zeros, and returns false with the error recorded, so that no rank
 * waits for it: follow it with sl_dist_all_ok or sl_dist_agree to stop every rank.
 *
 * Failures of a process. A rank that dies (a crash, a signal, exit() without MPI_Finalize) ends
 * the whole job: the MPI runtime aborts the rest (Open MPI's mpirun does, reporting the rank
 * and its status), and MPI errors abort the job (the communicators made here use
 * MPI_ERRORS_ARE_FATAL). What cannot be detected is a rank that calls MPI_Finalize and exits
 * while others still expect it in a collective: Open MPI then waits forever. So stop a job from
 * one rank with sl_dist_all_ok (MPI_Abort), never by finalising that rank alone.
 *
 * Memory. sl_ddp_new allocates the buckets once (about (1 + 1/N) times the gradients' bytes, on
 * the heap); a warm sl_ddp_backward allocates nothing.
 */
#ifndef SHORTLONG_DIST_H
#define SHORTLONG_DIST_H

#include "nn.h"

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- the data-parallel wrapper */

typedef struct sl_ddp sl_ddp;

enum { SL_DDP_DEFAULT_BUCKET_BYTES = 1 << 20 };

typedef struct sl_ddp_opts { /* a zero field picks its default */
    size_t bucket_bytes;     /* gradient bytes per bucket (see Buckets); 0: 1 MiB */
    bool after_backward;     /* no overlap: reduce every bucket only after the backward has ended
                                (what the overlap hides is measured against this) */
} sl_ddp_opts;

/* A data-parallel wrapper around registry ps on communicator comm (MPI_COMM_WORLD, say), which it
 * duplicates, so its messages never meet the caller's. Collective. Checks that every rank's
 * registry has the same parameters (names, shapes, dtype, in the same order) and fails on every
 * rank otherwise, with the first difference in the message. A problem on any rank fails the call
 * on every rank, with "sl_ddp_new: rank R: <what>" from the lowest such rank R. opts may be NULL
 * (defaults). Make it after the model is complete; do not add parameters afterwards. NULL on
 * error: SL_ERR_ARG on the rank whose registry is NULL, empty or differs from rank 0's (and when
 * MPI is not initialised, without taking part), SL_ERR_OOM on a rank out of memory, SL_ERR_STATE
 * on the ranks whose own part succeeded. */
sl_ddp *sl_ddp_new(sl_params *ps, MPI_Comm comm, const sl_ddp_opts *opts);
/* Collective; frees the wrapper and its communicator (not the registry). NULL is a no-op, on
 * every rank. */
void sl_ddp_free(sl_ddp *ddp);

/* Copies rank 0's parameter values to every other rank (MPI_Bcast, registration order) and marks
 * them modified. Collective. Returns false only for a NULL ddp. */
bool sl_ddp_broadcast(sl_ddp *ddp);

/* sl_backward(loss) on this rank, overlapped with the all-reduce of the gradients: afterwards
 * every parameter's gradient is sum over ranks of weight_r * grad_r (see Weights and Missing
 * gradients). loss is this rank's local loss (usually the mean over its rows); weight is its
 * share, finite and >= 0. loss may be SL_NONE: no backward on this rank (a rank with no rows
 * this step, weight 0), its current gradients are reduced as they are. Gradients already there
 * are included, so several local backwards (gradient accumulation) can precede one
 * sl_ddp_backward, which then reduces their sum. Collective. False, with the error recorded but
 * after taking part in the reduction, if loss is NULL (a failed forward: the pending error is
 * kept), the weight is bad, or the backward fails. */
bool sl_ddp_backward(sl_ddp *ddp, sl_tensor *loss, double weight);
/* The reduction alone, of the gradients as they are (after a plain sl_backward, say): gradients
 * become sum over ranks of weight_r * grad_r. Collective. False on a bad weight (after taking
 * part). */
bool sl_ddp_reduce(sl_ddp *ddp, double weight);

int sl_ddp_rank(const sl_ddp *ddp); /* this process's rank in the communicator, -1 if NULL */
int sl_ddp_size(const sl_ddp *ddp); /* the number of ranks, 0 if NULL */

/* What the last sl_ddp_backward or sl_ddp_reduce did on this rank. */
typedef struct sl_ddp_stats {
    int n_buckets;           /* buckets per step */
    int64_t bytes;           /* bytes reduced per step: gradients and the per-parameter counts */
    int launched_early;      /* buckets started before the backward ended */
    int done_early;          /* buckets whose reduction was complete when the backward ended */
    double backward_seconds; /* sl_backward, the observer's callbacks included */
    double callback_seconds; /* of which in the callbacks: copies, starting and progressing
                                reductions */
    double finish_seconds;   /* after the backward: finishing the reductions (waiting for
                                other ranks included) and copying the results back */
} sl_ddp_stats;
/* Fills *stats (zeros for a NULL ddp). */
void sl_ddp_get_stats(const sl_ddp *ddp, sl_ddp_stats *stats);

/* ---------------------------------------------------------------- helpers on any communicator */

/* Sums vals[0..n) over the ranks of comm, in place, in rank order (((v_0 + v_1) + v_2) + ...),
 * so every rank gets the same bits, run after run. Collective; n must be the same on every rank.
 * For the global mean loss, pass share_r * local_mean_r. False (SL_ERR_ARG) on n < 0, on more
 * than 2^20 values over all ranks (n x ranks), or vals NULL with n > 0 (after taking part with
 * zeros). Out of memory for the gathered values, it ends the job (MPI_Abort). */
bool sl_dist_sum(MPI_Comm comm, double *vals, int n);

/* Agrees on an error across comm. Collective. true when ok is true on every rank. Otherwise
 * false on every rank, and msg (cap bytes, may be NULL when cap is 0) holds
 * "rank R: <why>" from the lowest rank R whose ok was false (why may be NULL or "": "failed";
 * at most 512 bytes of it travel). For a clean stop: every rank learns of the error, rank 0
 * prints msg, every rank calls MPI_Finalize and exits. */
bool sl_dist_agree(MPI_Comm comm, bool ok, const char *why, char *msg, size_t cap);

/* As sl_dist_agree, but when any rank failed it does not return: the lowest failing rank prints
 * "shortlong: rank R of N: <why>" to stderr and calls MPI_Abort(comm, 1), which ends every
 * process of the job; the other ranks wait for that. So a bad argument or a failed step on one
 * rank ends the job with its message instead of a hang. Collective. */
bool sl_dist_all_ok(MPI_Comm comm, bool ok, const char *why);

#ifdef __cplusplus
}
#endif
#endif
