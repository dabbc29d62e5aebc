/* dist/ddp.c — the data-parallel wrapper: buckets, the gradient observer, the ring all-reduce.
 *
 * include/shortlong/dist.h says what it does; this file says how. Per step:
 *
 *   begin     every parameter not ready, every bucket pending (its parameter count), none
 *             started;
 *   backward  grad_ready(leaf): weight * leaf->grad (or zeros) goes into the leaf's place in its
 *             bucket, and its count slot gets 1 (or 0); a bucket whose last parameter arrived,
 *             and every complete one after it, starts if all before it have (start_ready);
 *             then, as after every node's backward (node_end), progress(): MPI_Testsome over
 *             the requests in flight, and each bucket whose step completed takes its next one;
 *   finish    parameters still not ready (not reached) go in as they are, every bucket starts,
 *             progress waits (MPI_Waitsome) until every bucket is done; each bucket's sums are
 *             copied back into the gradients as it completes, and gradients that were absent
 *             here but present on another rank are made after the backward.
 *
 * The ring (N ranks, this one r, left r - 1, right r + 1, modulo N) over a bucket of n elements
 * cut in chunks [c n / N, (c + 1) n / N):
 *   reduce-scatter, steps s = 0 .. N-2: send chunk r - s right, receive chunk r - s - 1 from the
 *             left into `recv`, then chunk(r - s - 1) = recv + chunk(r - s - 1). Chunk c starts
 *             at rank c and gains one rank's term per step: ((g_c + g_{c+1}) + g_{c+2}) + ...;
 *             after step N-2, rank r holds chunk r + 1 summed over every rank.
 *   all-gather, steps s = N-1 .. 2N-3, t = s - (N-1): send chunk r + 1 - t right, receive chunk
 *             r - t from the left in place.
 * Each step waits for its send and receive to complete before the next is posted, and every
 * message of a bucket has the bucket's index as its tag; MPI keeps messages between two ranks
 * with one tag in order, so steps cannot mix, within a call or across calls.
 */
#include <shortlong/dist.h>

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bucket {
    int first, last; /* its parameters: order[first .. last) */
    int64_t n_grad; /* gradient elements; then one count per parameter: n = n_grad + last - first */
    int64_t n;
    void *buf;   /* n elements of the registry's dtype */
    void *recv;  /* the largest chunk, for the reduce-scatter */
    int pending; /* this step: parameters not copied in yet */
    int step;    /* ring step in flight; -1: not started; 2 (N - 1): done */
} bucket;

typedef struct {
    const sl_tensor *t;
    int i;
} leaf_index;

struct sl_ddp {
    sl_params *ps;
    MPI_Comm comm; /* our duplicate of the caller's */
    int rank, size;
    sl_dtype dtype;
    MPI_Datatype type;
    size_t esize;
    size_t bucket_bytes;
    bool after_backward;

    int n_params;
    sl_tensor **value;   /* per parameter (registration index) */
    int *order;          /* bucket position -> parameter: reverse registration order */
    int *bucket_of;      /* per parameter: its bucket */
    int *slot;           /* per parameter: its position in its bucket (count slot) */
    int64_t *offset;     /* per parameter: first element of its gradient in the bucket */
    bool *ready;         /* per parameter, this step */
    bool *make_grad;     /* per parameter, this step: absent here, present on another rank */
    leaf_index *by_leaf; /* sorted by tensor address, for grad_ready */

    bucket *b;
    int nb;
    MPI_Request *req; /* 2 per bucket: send, receive */
    int *done_idx;    /* MPI_Testsome's indices */
    int next_start;   /* buckets [0, next_start) started */
    int first_open;   /* buckets [0, first_open) done */

    double weight;
    bool bad_grad; /* a gradient this step that was not the parameter's shape and dtype */
    char bad_what[160];
    double callback_seconds;

    sl_autograd_observer obs;
    sl_ddp_stats stats;
    sl_arena *scratch; /* zero tensors for making absent gradients */
};

static int mod(int a, int n) { return ((a % n) + n) % n; }

static int64_t chunk_lo(const bucket *b, int n_ranks, int c) { return b->n * (int64_t)c / n_ranks; }

static char *elem(const sl_ddp *d, void *base, int64_t i) { return (char *)base + i * d->esize; }

/* ---------------------------------------------------------------- gradients in and out */

static bool grad_usable(sl_ddp *d, const sl_tensor *v, const sl_tensor *g)
{
    if (g->dtype == v->dtype && sl_numel(g) == sl_numel(v) && sl_is_contiguous(g)) return true;
    if (!d->bad_grad)
        snprintf(d->bad_what, sizeof d->bad_what, "the gradient of '%s' is %s %s%s, not %s %s",
                 v->name ? v->name : "?", sl_dtype_name(g->dtype), sl_shape_str(g),
                 sl_is_contiguous(g) ? "" : " (strided)", sl_dtype_name(v->dtype), sl_shape_str(v));
    d->bad_grad = true;
    return false;
}

/* Parameter i's gradient times the weight, or zeros, into its bucket; its count slot gets
 * whether this rank has a gradient for it. Each product is rounded once. */
static void copy_in(sl_ddp *d, int i)
{
    bucket *b = &d->b[d->bucket_of[i]];
    const sl_tensor *v = d->value[i], *g = v->grad;
    int64_t n = sl_numel(v);
    bool have = g && grad_usable(d, v, g);
    double w = d->weight;
    if (d->dtype == SL_F32) {
        float *dst = (float *)b->buf + d->offset[i];
        if (!have) memset(dst, 0, sizeof(float) * (size_t)n);
        else {
            const float *src = sl_ptr(g);
            for (int64_t k = 0; k < n; k++) dst[k] = (float)((double)src[k] * w);
        }
        ((float *)b->buf)[b->n_grad + d->slot[i]] = have ? 1.0f : 0.0f;
    } else {
        double *dst = (double *)b->buf + d->offset[i];
        if (!have) memset(dst, 0, sizeof(double) * (size_t)n);
        else {
            const double *src = sl_ptr(g);
            for (int64_t k = 0; k < n; k++) dst[k] = src[k] * w;
        }
        ((double *)b->buf)[b->n_grad + d->slot[i]] = have ? 1.0 : 0.0;
    }
    d->ready[i] = true;
    b->pending--;
}

/* A done bucket's sums back into its parameters' gradients: where any rank had a gradient (the
 * summed count is positive). A gradient absent here is made after the backward (make_grad). */
static void copy_out(sl_ddp *d, bucket *b)
{
    for (int pos = b->first; pos < b->last; pos++) {
        int i = d->order[pos];
        double count = d->dtype == SL_F32 ? ((float *)b->buf)[b->n_grad + pos - b->first]
                                          : ((double *)b->buf)[b->n_grad + pos - b->first];
        if (count == 0) continue; /* no rank had one: this one has none either */
        sl_tensor *v = d->value[i], *g = v->grad;
        if (!g) {
            d->make_grad[i] = true;
            continue;
        }
        if (!grad_usable(d, v, g)) continue;
        memcpy(sl_ptr(g), elem(d, b->buf, d->offset[i]), d->esize * (size_t)sl_numel(v));
        sl_mark_modified(g);
    }
}

/* Gives parameter i the gradient the other ranks agreed on though it had none here: a zero
 * gradient made by a backward from the leaf itself (the way autograd allocates leaves'
 * gradients, in the parameter's arena), then the bucket's sums. */
static bool make_grad(sl_ddp *d, int i)
{
    sl_tensor *v = d->value[i];
    if (!d->scratch && !(d->scratch = sl_arena_new(0))) return false;
    sl_arena *prev = sl_arena_set(d->scratch);
    sl_tensor *zero = sl_zeros(v->dtype, v->ndim, v->shape);
    sl_arena_set(prev);
    bool ok = zero && sl_backward_ex(v, zero, 0) && v->grad;
    sl_arena_reset(d->scratch);
    if (!ok) return false;
    bucket *b = &d->b[d->bucket_of[i]];
    memcpy(sl_ptr(v->grad), elem(d, b->buf, d->offset[i]), d->esize * (size_t)sl_numel(v));
    sl_mark_modified(v->grad);
    return true;
}

/* ---------------------------------------------------------------- the ring */

static void post(sl_ddp *d, int k)
{
    bucket *b = &d->b[k];
    int N = d->size, r = d->rank, s = b->step;
    int send_c, recv_c;
    void *dst;
    if (s < N - 1) {
        send_c = mod(r - s, N);
        recv_c = mod(r - s - 1, N);
        dst = b->recv;
    } else {
        int t = s - (N - 1);
        send_c = mod(r + 1 - t, N);
        recv_c = mod(r - t, N);
        dst = elem(d, b->buf, chunk_lo(b, N, recv_c));
    }
    int64_t s0 = chunk_lo(b, N, send_c), s1 = chunk_lo(b, N, send_c + 1);
    int64_t r0 = chunk_lo(b, N, recv_c), r1 = chunk_lo(b, N, recv_c + 1);
    MPI_Irecv(dst, (int)(r1 - r0), d->type, mod(r - 1, N), k, d->comm, &d->req[2 * k + 1]);
    MPI_Isend(elem(d, b->buf, s0), (int)(s1 - s0), d->type, mod(r + 1, N), k, d->comm,
              &d->req[2 * k]);
}

/* Bucket k's step completed: add what arrived (reduce-scatter), then post the next step or, after
 * the last, copy the sums out. */
static void advance(sl_ddp *d, int k)
{
    bucket *b = &d->b[k];
    int N = d->size, s = b->step;
    if (s < N - 1) {
        int c = mod(d->rank - s - 1, N);
        int64_t lo = chunk_lo(b, N, c), n = chunk_lo(b, N, c + 1) - lo;
        if (d->dtype == SL_F32) {
            float *acc = (float *)b->buf + lo;
            const float *in = b->recv;
            for (int64_t i = 0; i < n; i++) acc[i] = in[i] + acc[i];
        } else {
            double *acc = (double *)b->buf + lo;
            const double *in = b->recv;
            for (int64_t i = 0; i < n; i++) acc[i] = in[i] + acc[i];
        }
    }
    if (++b->step == 2 * (N - 1)) copy_out(d, b);
    else post(d, k);
}

static void start(sl_ddp *d, int k)
{
    d->b[k].step = 0;
    if (d->size == 1) copy_out(d, &d->b[k]); /* the weighted gradients are the sums */
    else post(d, k);
}

/* Starts buckets in order while the next one is complete. */
static void start_ready(sl_ddp *d)
{
    while (d->next_start < d->nb && d->b[d->next_start].pending == 0) start(d, d->next_start++);
}

static bool bucket_done(const sl_ddp *d, const bucket *b) { return b->step == 2 * (d->size - 1); }

/* Moves the started buckets on: each whose step's two requests completed takes its next step.
 * Without `wait`, returns when a test finds nothing new; with it, when every started bucket is
 * done. */
static void progress(sl_ddp *d, bool wait)
{
    while (d->first_open < d->next_start) {
        int lo = d->first_open, n_req = 2 * (d->next_start - lo), n_done = 0;
        if (wait) MPI_Waitsome(n_req, d->req + 2 * lo, &n_done, d->done_idx, MPI_STATUSES_IGNORE);
        else MPI_Testsome(n_req, d->req + 2 * lo, &n_done, d->done_idx, MPI_STATUSES_IGNORE);
        if (n_done == MPI_UNDEFINED) n_done = 0; /* no active request (cannot happen) */
        for (int k = lo; k < d->next_start; k++)
            if (d->b[k].step >= 0 && !bucket_done(d, &d->b[k]) &&
                d->req[2 * k] == MPI_REQUEST_NULL && d->req[2 * k + 1] == MPI_REQUEST_NULL)
                advance(d, k);
        while (d->first_open < d->next_start && bucket_done(d, &d->b[d->first_open]))
            d->first_open++;
        if (!wait && n_done == 0) return;
    }
}

/* ---------------------------------------------------------------- the observer */

static int find_leaf(const sl_ddp *d, const sl_tensor *t)
{
    int lo = 0, hi = d->n_params;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (d->by_leaf[mid].t == t) return d->by_leaf[mid].i;
        if ((uintptr_t)d->by_leaf[mid].t < (uintptr_t)t) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void on_grad_ready(void *user, sl_tensor *leaf)
{
    sl_ddp *d = user;
    double t0 = MPI_Wtime();
    int i = find_leaf(d, leaf);
    if (i >= 0 && !d->ready[i]) {
        copy_in(d, i);
        if (d->b[d->bucket_of[i]].pending == 0) start_ready(d);
    }
    progress(d, false);
    d->callback_seconds += MPI_Wtime() - t0;
}

static void on_node_end(void *user, const sl_node *node)
{
    sl_ddp *d = user;
    if (d->first_open == d->next_start) return; /* nothing in flight */
    double t0 = MPI_Wtime();
    progress(d, false);
    d->callback_seconds += MPI_Wtime() - t0;
}

/* ---------------------------------------------------------------- one step */

static void begin_step(sl_ddp *d, double weight)
{
    d->weight = weight;
    for (int i = 0; i < d->n_params; i++) d->ready[i] = d->make_grad[i] = false;
    for (int k = 0; k < d->nb; k++) {
        d->b[k].pending = d->b[k].last - d->b[k].first;
        d->b[k].step = -1;
    }
    d->next_start = d->first_open = 0;
    d->bad_grad = false;
    d->callback_seconds = 0;
    d->stats = (sl_ddp_stats){.n_buckets = d->nb, .bytes = d->stats.bytes};
}

/* Everything not in yet goes in as it is; every bucket starts and completes; absent gradients
 * the others had are made. `ok` is the step's state so far: a later failure does not replace an
 * error already recorded. */
static bool finish(sl_ddp *d, bool ok)
{
    double t0 = MPI_Wtime();
    for (int pos = 0; pos < d->n_params; pos++) {
        int i = d->order[pos];
        if (!d->ready[i]) copy_in(d, i);
    }
    start_ready(d);
    progress(d, true);
    for (int i = 0; i < d->n_params; i++)
        if (d->make_grad[i] && !make_grad(d, i) && ok) ok = false;
    if (d->bad_grad && ok)
        ok = sl_set_error(SL_ERR_SHAPE, "sl_ddp: %s (the rank contributed zeros for it)",
                          d->bad_what);
    d->stats.finish_seconds = MPI_Wtime() - t0;
    return ok;
}

static bool check_weight(const char *fn, double weight)
{
    if (isfinite(weight) && weight >= 0) return true;
    return sl_set_error(SL_ERR_ARG,
                        "%s: weight %g is not a finite number >= 0 (this rank "
                        "contributed zeros)",
                        fn, weight);
}

bool sl_ddp_backward(sl_ddp *d, sl_tensor *loss, double weight)
{
    if (!d) return sl_set_error(SL_ERR_ARG, "sl_ddp_backward: ddp is NULL");
    bool ok = true;
    if (!loss) {
        if (sl_error() == SL_OK)
            sl_set_error(SL_ERR_ARG, "sl_ddp_backward: loss is NULL (this rank contributed "
                                     "zeros)");
        ok = false;
    } else ok = check_weight("sl_ddp_backward", weight);
    begin_step(d, ok ? weight : 0.0);
    if (ok && loss != SL_NONE) {
        bool watch = !d->after_backward;
        if (watch && !sl_autograd_add_observer(&d->obs)) ok = false;
        double t0 = MPI_Wtime();
        ok = ok && sl_backward(loss);
        d->stats.backward_seconds = MPI_Wtime() - t0;
        if (watch) sl_autograd_remove_observer(&d->obs);
        d->stats.callback_seconds = d->callback_seconds;
        d->stats.launched_early = d->next_start;
        for (int k = 0; k < d->next_start; k++) d->stats.done_early += bucket_done(d, &d->b[k]);
        if (!ok) d->weight = 0; /* what is not in yet goes in as zeros */
    }
    return finish(d, ok);
}

bool sl_ddp_reduce(sl_ddp *d, double weight)
{
    if (!d) return sl_set_error(SL_ERR_ARG, "sl_ddp_reduce: ddp is NULL");
    bool ok = check_weight("sl_ddp_reduce", weight);
    begin_step(d, ok ? weight : 0.0);
    return finish(d, ok);
}

bool sl_ddp_broadcast(sl_ddp *d)
{
    if (!d) return sl_set_error(SL_ERR_ARG, "sl_ddp_broadcast: ddp is NULL");
    for (int i = 0; i < d->n_params; i++) {
        sl_tensor *v = d->value[i];
        char *p = sl_ptr(v);
        for (int64_t done = 0, n = sl_numel(v); done < n;) {
            int count = n - done > INT_MAX ? INT_MAX : (int)(n - done);
            MPI_Bcast(p + done * (int64_t)d->esize, count, d->type, 0, d->comm);
            done += count;
        }
        sl_mark_modified(v);
    }
    return true;
}

int sl_ddp_rank(const sl_ddp *d) { return d ? d->rank : -1; }

int sl_ddp_size(const sl_ddp *d) { return d ? d->size : 0; }

void sl_ddp_get_stats(const sl_ddp *d, sl_ddp_stats *stats)
{
    if (stats) *stats = d ? d->stats : (sl_ddp_stats){0};
}

/* ---------------------------------------------------------------- setup */

static int cmp_leaf(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const leaf_index *)a)->t, y = (uintptr_t)((const leaf_index *)b)->t;
    return (x > y) - (x < y);
}

/* FNV-1a over a parameter's name, dtype and shape. */
static uint64_t param_hash(const sl_param *p)
{
    uint64_t h = 1469598103934665603ull;
    const sl_tensor *v = p->value;
    for (const char *c = p->name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    int64_t head[2] = {v->dtype, v->ndim};
    for (int k = 0; k < 2 + v->ndim; k++) {
        uint64_t x = (uint64_t)(k < 2 ? head[k] : v->shape[k - 2]);
        for (int byte = 0; byte < 8; byte++)
            h = (h ^ ((x >> (8 * byte)) & 0xff)) * 1099511628211ull;
    }
    return h;
}

static void ddp_release(sl_ddp *d)
{
    for (int k = 0; d->b && k < d->nb; k++) {
        free(d->b[k].buf);
        free(d->b[k].recv);
    }
    free(d->b);
    free(d->req);
    free(d->done_idx);
    free(d->value);
    free(d->order);
    free(d->bucket_of);
    free(d->slot);
    free(d->offset);
    free(d->ready);
    free(d->make_grad);
    free(d->by_leaf);
    if (d->scratch) sl_arena_free(d->scratch);
    free(d);
}

/* Every rank compares its parameters with rank 0's (count, then per-parameter hashes of name,
 * dtype and shape). Collective; writes the first difference into why. */
static bool same_model(sl_ddp *d, bool have, char *why, size_t cap)
{
    int n0 = have ? d->n_params : -1;
    MPI_Bcast(&n0, 1, MPI_INT, 0, d->comm);
    if (n0 < 0) {
        if (!why[0]) snprintf(why, cap, "rank 0 has no usable registry");
        return false;
    }
    uint64_t *h0 = malloc(sizeof *h0 * (size_t)(n0 ? n0 : 1));
    if (!h0) { /* cannot take part in the broadcast: end the job rather than leave it waiting */
        fprintf(stderr, "shortlong: rank %d: sl_ddp_new: out of memory\n", d->rank);
        MPI_Abort(d->comm, 1);
    }
    bool ok = true;
    for (int i = 0; d->rank == 0 && have && i < n0; i++) h0[i] = param_hash(sl_params_at(d->ps, i));
    MPI_Bcast(h0, n0, MPI_UINT64_T, 0, d->comm);
    if (!have) ok = false; /* why says already */
    else {
        for (int i = 0; ok && i < n0 && i < d->n_params; i++) {
            const sl_param *p = sl_params_at(d->ps, i);
            if (param_hash(p) != h0[i]) {
                snprintf(why, cap, "parameter %d ('%s', %s %s) is not rank 0's parameter %d", i,
                         p->name, sl_dtype_name(p->value->dtype), sl_shape_str(p->value), i);
                ok = false;
            }
        }
        if (ok && n0 != d->n_params) {
            snprintf(why, cap, "%d parameters where rank 0 has %d", d->n_params, n0);
            ok = false;
        }
    }
    free(h0);
    return ok;
}

/* Buckets over the parameters in reverse registration order, each closed once it holds at least
 * bucket_bytes of gradients; then the buffers. */
static bool make_buckets(sl_ddp *d, char *why, size_t cap)
{
    int P = d->n_params;
    d->value = malloc(sizeof *d->value * (size_t)(P ? P : 1));
    d->order = malloc(sizeof *d->order * (size_t)(P ? P : 1));
    d->bucket_of = malloc(sizeof *d->bucket_of * (size_t)(P ? P : 1));
    d->slot = malloc(sizeof *d->slot * (size_t)(P ? P : 1));
    d->offset = malloc(sizeof *d->offset * (size_t)(P ? P : 1));
    d->ready = malloc(sizeof *d->ready * (size_t)(P ? P : 1));
    d->make_grad = malloc(sizeof *d->make_grad * (size_t)(P ? P : 1));
    d->by_leaf = malloc(sizeof *d->by_leaf * (size_t)(P ? P : 1));
    d->b = calloc((size_t)(P ? P : 1), sizeof *d->b);
    if (!d->value || !d->order || !d->bucket_of || !d->slot || !d->offset || !d->ready ||
        !d->make_grad || !d->by_leaf || !d->b) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    for (int i = 0; i < P; i++) {
        d->value[i] = sl_params_at(d->ps, i)->value;
        d->order[i] = P - 1 - i;
        d->by_leaf[i] = (leaf_index){d->value[i], i};
    }
    qsort(d->by_leaf, (size_t)P, sizeof *d->by_leaf, cmp_leaf);
    d->nb = 0;
    for (int pos = 0; pos < P;) {
        bucket *b = &d->b[d->nb];
        b->first = pos;
        size_t bytes = 0;
        while (pos < P && (pos == b->first || bytes < d->bucket_bytes)) {
            int i = d->order[pos];
            d->bucket_of[i] = d->nb;
            d->slot[i] = pos - b->first;
            d->offset[i] = b->n_grad;
            b->n_grad += sl_numel(d->value[i]);
            bytes += d->esize * (size_t)sl_numel(d->value[i]);
            pos++;
        }
        b->last = pos;
        b->n = b->n_grad + (b->last - b->first);
        d->nb++;
    }
    int *tag_ub = NULL, flag = 0;
    MPI_Comm_get_attr(d->comm, MPI_TAG_UB, &tag_ub, &flag);
    if (flag && d->nb - 1 > *tag_ub) {
        snprintf(why, cap, "%d buckets, more than MPI's largest tag (%d): make them larger", d->nb,
                 *tag_ub);
        return false;
    }
    d->req = malloc(sizeof *d->req * (size_t)(2 * d->nb + 1));
    d->done_idx = malloc(sizeof *d->done_idx * (size_t)(2 * d->nb + 1));
    if (!d->req || !d->done_idx) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    int64_t total = 0;
    for (int k = 0; k < d->nb; k++) {
        bucket *b = &d->b[k];
        d->req[2 * k] = d->req[2 * k + 1] = MPI_REQUEST_NULL;
        int64_t chunk = 0;
        for (int c = 0; c < d->size; c++)
            if (chunk_lo(b, d->size, c + 1) - chunk_lo(b, d->size, c) > chunk)
                chunk = chunk_lo(b, d->size, c + 1) - chunk_lo(b, d->size, c);
        if (chunk > INT_MAX) {
            snprintf(why, cap,
                     "a bucket of %lld elements cut in %d chunks has chunks larger than "
                     "MPI's int counts: use smaller buckets",
                     (long long)b->n, d->size);
            return false;
        }
        b->buf = malloc(d->esize * (size_t)(b->n ? b->n : 1));
        b->recv = malloc(d->esize * (size_t)(chunk ? chunk : 1));
        if (!b->buf || !b->recv) {
            snprintf(why, cap, "out of memory for the buckets");
            return false;
        }
        total += b->n;
    }
    d->stats.n_buckets = d->nb;
    d->stats.bytes = total * (int64_t)d->esize;
    return true;
}

sl_ddp *sl_ddp_new(sl_params *ps, MPI_Comm comm, const sl_ddp_opts *opts)
{
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized)
        return sl_set_error(SL_ERR_ARG, "sl_ddp_new: MPI is not initialised (call MPI_Init or "
                                        "MPI_Init_thread first)"),
               NULL;
    if (comm == MPI_COMM_NULL)
        return sl_set_error(SL_ERR_ARG, "sl_ddp_new: the communicator is MPI_COMM_NULL"), NULL;
    sl_ddp *d = calloc(1, sizeof *d);
    if (!d) return sl_set_error(SL_ERR_OOM, "sl_ddp_new: out of memory"), NULL;
    /* From here on every rank takes part to the end, whatever fails locally, so that a problem
     * on one rank fails every rank's call instead of leaving the others waiting. */
    MPI_Comm_dup(comm, &d->comm);
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    char why[400] = "";
    bool have = ps != NULL && sl_params_count(ps) > 0;
    sl_ddp_opts o = opts ? *opts : (sl_ddp_opts){0};
    if (!ps) snprintf(why, sizeof why, "the registry is NULL");
    else if (!have) snprintf(why, sizeof why, "the registry has no parameters");
    if (have) {
        d->ps = ps;
        d->n_params = sl_params_count(ps);
        d->dtype = sl_params_dtype(ps);
        d->type = d->dtype == SL_F32 ? MPI_FLOAT : MPI_DOUBLE;
        d->esize = sl_dtype_size(d->dtype);
        d->bucket_bytes = o.bucket_bytes ? o.bucket_bytes : SL_DDP_DEFAULT_BUCKET_BYTES;
        d->after_backward = o.after_backward;
    }
    bool ok = same_model(d, have, why, sizeof why) && make_buckets(d, why, sizeof why);
    d->obs =
        (sl_autograd_observer){.user = d, .grad_ready = on_grad_ready, .node_end = on_node_end};
    char msg[600];
    if (!sl_dist_agree(d->comm, ok, why, msg, sizeof msg)) {
        MPI_Comm_free(&d->comm);
        ddp_release(d);
        sl_set_error(ok ? SL_ERR_STATE : (strstr(why, "memory") ? SL_ERR_OOM : SL_ERR_ARG),
                     "sl_ddp_new: %s", msg);
        return NULL;
    }
    return d;
}

void sl_ddp_free(sl_ddp *d)
{
    if (!d) return;
    MPI_Comm_free(&d->comm);
    ddp_release(d);
}
