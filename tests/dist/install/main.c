/* A consumer of an installed libshortlong_dist: one data-parallel step of a linear model on
 * every rank of MPI_COMM_WORLD, checked against the gradient of the whole batch worked out by
 * hand. Built out of tree by tests/dist/install/CMakeLists.txt (find_package, shortlong::dist)
 * and by .ci/run (pkg-config shortlong_dist), run there under mpirun. */
#include <shortlong/dist.h>
#include <shortlong/shortlong.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    sl_params *ps = sl_params_new(SL_F64);
    sl_tensor *w = sl_params_add(ps, "w", sl_shape(3), true);
    sl_ddp *ddp = sl_ddp_new(ps, MPI_COMM_WORLD, NULL);
    bool ok = w && ddp && sl_ddp_broadcast(ddp);
    /* loss_r = sum(w * x_r) with x_r = (r + 1, 2 (r + 1), 3 (r + 1)) and equal shares: the
     * gradient is the mean of the x_r, (i + 1) (N + 1) / 2 for element i. */
    sl_arena *arena = sl_arena_new(0);
    sl_arena_set(arena);
    const double x[] = {rank + 1.0, 2.0 * (rank + 1), 3.0 * (rank + 1)};
    sl_tensor *loss = ok ? sl_sum_all(sl_mul(w, sl_from_data(SL_F64, sl_shape(3), x))) : NULL;
    ok = ok && sl_ddp_backward(ddp, loss, 1.0 / size);
    sl_dist_all_ok(MPI_COMM_WORLD, ok, sl_error_message());
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        double want = (i + 1) * (size + 1) / 2.0, got = sl_get(w->grad, i);
        if (got != want) {
            fprintf(stderr, "dist install test: rank %d: grad[%d] = %g, want %g\n", rank, i, got,
                    want);
            bad = 1;
        }
    }
    sl_dist_all_ok(MPI_COMM_WORLD, !bad, "wrong gradients");
    if (rank == 0) printf("dist install test: ok on %d ranks\n", size);
    sl_arena_set(NULL);
    sl_arena_free(arena);
    sl_ddp_free(ddp);
    sl_params_free(ps);
    MPI_Finalize();
    return 0;
}
