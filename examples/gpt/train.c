/* examples/gpt/train.c — the training loop.
 *
 * One step: a random batch of windows -> sl_gpt_loss -> sl_backward -> clip -> AdamW at the
 * schedule's learning rate -> zero the gradients -> reset the step arena (the tape and every
 * activation go at once; parameters, gradients and optimizer state live in the model's own
 * arena). The loss is checked before the backward and the gradient norm before the update:
 * a non-finite one stops the run without touching the parameters. At each evaluation the
 * model is validated and, with an output path, a training checkpoint is written atomically
 * (weights, optimizer state, config, step, both RNG streams and the run's settings, see
 * run.c, and the validation loss, train.val_loss), so a resumed run continues bitwise where
 * it stopped; but only when the validation loss and every parameter are finite, so a diverging
 * run never replaces a good checkpoint: the file at the output path is replaced only by a model
 * that passed those checks (the save is a rename over it), and otherwise stays as it was.
 *
 * On N MPI ranks (dist.h) the loop is the same, data-parallel: every rank draws the same global
 * batch of --batch rows from the same data stream and runs rows [r B / N, (r + 1) B / N) of it;
 * sl_ddp_backward gives every rank the global batch's gradients (each rank's weighted by its
 * share of the rows), so the clipped norm, the update and the parameters are the same on every
 * rank. The loss checked and printed is the global mean (the ranks' shares summed);
 * validation splits the windows over the ranks and sums their losses; rank 0 alone writes
 * checkpoints, and every rank learns whether that worked. Each decision to stop (a failure on
 * any rank, divergence, a signal to any rank) is taken by every rank at the same point, from
 * values every rank holds (dist.c says why that matters). */
#include "dist.h"
#include "gpt.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The model, optimizer, step and data stream, fresh or from a training checkpoint. */
static bool setup(const train_opts *o, sl_gpt **m, sl_optim **opt, int64_t *start,
                  sl_rng *data_rng)
{
    *m = o->resume ? sl_gpt_load(o->resume, SL_F32) : sl_gpt_new(&o->cfg, SL_F32);
    if (!*m) return fail(o->resume ? "cannot resume" : "cannot build the model"), false;
    *opt = sl_adamw_new((*m)->params, &(sl_adamw_config){.beta1 = 0.9, .beta2 = 0.95,
                                                        .eps = 1e-8,
                                                        .weight_decay = o->weight_decay});
    if (!*opt) return fail("cannot make the optimizer"), false;
    *data_rng = sl_rng_seed((*m)->cfg.seed * 7919 + 17);
    *start = 0;
    if (!o->resume) return true;
    char buf[128];
    if (!sl_load_training(o->resume, (*m)->params, *opt)) return fail("cannot resume"), false;
    if (!sl_read_meta(o->resume, "train.step", buf, sizeof buf) ||
        (*start = strtoll(buf, NULL, 10)) < 0 ||
        !sl_read_meta(o->resume, "train.data_rng", buf, sizeof buf) ||
        !sl_rng_from_hex(buf, data_rng)) {
        fprintf(stderr, "gpt: %s lacks the training state (train.step, train.data_rng)\n",
                o->resume);
        return false;
    }
    if (!o->quiet)
        fprintf(stderr, "resuming %s at step %lld\n", o->resume, (long long)*start);
    return true;
}

/* The checkpoint, with the run's settings and the validation loss of the model it holds
 * (train.val_loss, when it was validated: val_loss not NAN). */
static bool save(const train_opts *o, const sl_gpt *m, const sl_optim *opt, int64_t step,
                 const sl_rng *data_rng, double val_loss)
{
    sl_meta extra[RUN_META_MAX];
    char bufs[RUN_META_MAX][80];
    int n = run_meta(o, step, data_rng, extra, bufs);
    if (!isnan(val_loss) && n < RUN_META_MAX) {
        snprintf(bufs[n], sizeof bufs[n], "%.17g", val_loss);
        extra[n] = (sl_meta){"train.val_loss", bufs[n]}, n++;
    }
    if (sl_gpt_save(o->out, m, opt, extra, n)) return true;
    return fail("cannot save the checkpoint"), false;
}

/* Whether every parameter is finite (a model that is not is never saved). */
static bool params_finite(const sl_gpt *m)
{
    for (int i = 0; i < sl_params_count(m->params); i++) {
        const sl_tensor *t = sl_params_at(m->params, i)->value;
        const float *p = sl_ptr(t);
        for (int64_t k = 0, n = sl_numel(t); k < n; k++)
            if (!isfinite(p[k])) return false;
    }
    return true;
}

/* The global L2 norm of the gradients, clipped to `clip` (> 0) or not (0). */
static double grad_norm(sl_params *ps, double clip)
{
    if (clip > 0) return sl_params_clip_grad_norm(ps, clip);
    double ss = 0;
    for (int i = 0; i < sl_params_count(ps); i++) {
        const sl_tensor *g = sl_params_at(ps, i)->value->grad;
        if (!g) continue;
        const float *p = sl_ptr(g);
        for (int64_t k = 0, n = sl_numel(g); k < n; k++) ss += (double)p[k] * p[k];
    }
    return sqrt(ss);
}

/* What is on disk after a run that stops without saving (said by rank 0). */
static void say_kept(const train_opts *o, const train_result *r)
{
    if (!o->out || dist_rank() != 0) return;
    if (r->saved_step >= 0)
        fprintf(stderr, "gpt: %s keeps the checkpoint of step %lld\n", o->out,
                (long long)r->saved_step);
    else if (access(o->out, F_OK) == 0) fprintf(stderr, "gpt: %s is left as it was\n", o->out);
    else fprintf(stderr, "gpt: nothing was saved\n");
}

/* Writes the checkpoint of `step` when the model is sound: val_loss (NAN when there was no
 * evaluation, then last_loss stands in) and every parameter finite. False after a message.
 * Collective: the losses and parameters are the same on every rank, so is the decision; rank 0
 * writes, and every rank learns whether that worked. */
static bool save_checked(const train_opts *o, const sl_gpt *m, const sl_optim *opt, int64_t step,
                         const sl_rng *data_rng, double val_loss, double last_loss, train_result *r)
{
    double loss = isnan(val_loss) && !isnan(last_loss) ? last_loss : val_loss;
    const char *why = !isfinite(loss)     ? "its loss is not finite"
                      : !params_finite(m) ? "a parameter is not finite"
                                          : NULL;
    if (why) {
        if (dist_rank() == 0)
            fprintf(stderr,
                    "gpt: the model of step %lld is not saved: %s (loss %g; the run "
                    "diverged: try a lower --lr)\n",
                    (long long)step, why, loss);
        say_kept(o, r);
        return false;
    }
    if (!dist_all(dist_rank() != 0 || save(o, m, opt, step, data_rng, val_loss))) return false;
    r->saved_step = step;
    return true;
}

static size_t model_bytes(const sl_gpt *m)
{
    return sl_arena_reserved(sl_params_arena(m->params));
}

/* What must hold before the first step; false after a message. Checked by every rank, which
 * all see the same (ranks other than 0 hold their messages, dist.h). */
static bool can_train(const train_opts *o, const sl_gpt *m, int64_t start, const text *train,
                      const text *val)
{
    const int64_t L = m->cfg.context;
    if (train->n < L + 2 || val->n < L + 2) {
        fprintf(stderr,
                "gpt: the training and validation texts need more than %lld bytes each "
                "(they have %lld and %lld)\n",
                (long long)L + 1, (long long)train->n, (long long)val->n);
        return false;
    }
    if (start >= o->steps) {
        fprintf(stderr, "gpt: %s is at step %lld, not below --steps %lld: nothing to train\n",
                o->resume ? o->resume : "the model", (long long)start, (long long)o->steps);
        return false;
    }
    int ranks = dist_size();
    if (ranks > 1 && o->batch < ranks) {
        fprintf(stderr,
                "gpt: --batch %lld is the global batch, split over the %d ranks: it needs at "
                "least one row per rank\n",
                (long long)o->batch, ranks);
        return false;
    }
    if (ranks > 1 && m->cfg.dropout > 0) { /* each rank would draw its own masks */
        fprintf(stderr,
                "gpt: --dropout %g: dropout is not supported on several ranks (the ranks' masks "
                "would not be those of one process); train with --dropout 0 or on one rank\n",
                m->cfg.dropout);
        return false;
    }
    return true;
}

/* FNV-1a over a text: the ranks compare what they read. */
static uint64_t text_hash(const text *t)
{
    uint64_t h = 14695981039346656037u;
    for (int64_t i = 0; i < t->n; i++) h = (h ^ t->bytes[i]) * 1099511628211u;
    return h;
}

/* Everything that must be the same on every rank for the ranks to train one model, a line
 * each: the settings, the model's config, where the run is, and the texts. */
static void run_settings(const train_opts *o, const sl_gpt *m, int64_t start,
                         const sl_rng *data_rng, const text *train, const text *val, char *buf,
                         size_t cap)
{
    const sl_gpt_config *c = &m->cfg;
    char rng[65];
    sl_rng_to_hex(data_rng, rng);
    snprintf(buf, cap,
             "--batch %lld\n--steps %lld\n--warmup %lld\n--lr %.17g\nmin_lr_frac %.17g\n"
             "--weight-decay %.17g\n--clip %.17g\n--eval-every %lld\n--eval-tokens %lld\n"
             "--stop-after %lld\n--context %lld\n--dim %lld\n--layers %d\n--heads %d\n"
             "--kv-heads %d\n--pos %s\n--slopes %d\n--seed %llu\n--dropout %.17g\n"
             "vocab %lld\nmlp_ratio %d\ntie_embeddings %d\nfused_qkv %d\nparameters %lld\n"
             "start step %lld\ndata stream %s\ntraining text of %lld bytes, hash %016llx\n"
             "validation text of %lld bytes, hash %016llx\n",
             (long long)o->batch, (long long)o->steps, (long long)o->warmup, o->lr, o->min_lr_frac,
             o->weight_decay, o->clip, (long long)o->eval_every, (long long)o->eval_tokens,
             (long long)o->stop_after, (long long)c->context, (long long)c->dim, c->n_layers,
             c->n_heads, c->n_kv_heads, sl_pos_name(c->pos), (int)c->slopes,
             (unsigned long long)c->seed, c->dropout, (long long)c->vocab_size, c->mlp_ratio,
             c->tie_embeddings, c->fused_qkv, (long long)sl_params_numel(m->params),
             (long long)start, rng, (long long)train->n, (unsigned long long)text_hash(train),
             (long long)val->n, (unsigned long long)text_hash(val));
}

/* Rows [r0, r0 + n) of a (B, T) batch: a view, or the batch itself when that is all of it. */
static sl_tensor *rows(sl_tensor *t, int64_t r0, int64_t n)
{
    return t && (r0 || n != t->shape[0]) ? sl_narrow(t, 0, r0, n) : t;
}

/* The validation loss over non-overlapping windows of L in the first span + 1 bytes. On
 * several ranks each rank scores its share of the windows and the ranks' sums are added: the
 * windows and the result of one process, to the rounding of the sums. Collective; false after
 * a message. */
static bool validate(sl_gpt *m, const text *val, int64_t L, int64_t span, sl_arena *step,
                     score *out)
{
    m->train = false;
    bool g = sl_set_grad_enabled(false), ok;
    int rank = dist_rank(), ranks = dist_size();
    if (ranks == 1) {
        ok = eval_nonoverlap(m, val, L, span, step, out);
    } else {
        int64_t W = span / L, w0 = W * rank / ranks, w1 = W * (rank + 1) / ranks;
        text mine = *val; /* this rank's windows, w0 to w1, from the start of window w0 */
        mine.bytes += w0 * L;
        mine.n -= w0 * L;
        score s = {NAN, 0};
        bool mine_ok = eval_nonoverlap(m, &mine, L, (w1 - w0) * L, step, &s);
        /* nll * n is this rank's sum of losses to one rounding */
        double v[3] = {mine_ok && s.n ? s.nll * (double)s.n : 0, mine_ok ? (double)s.n : 0,
                       !mine_ok};
        dist_sum(v, 3);
        out->nll = v[1] > 0 ? v[0] / v[1] : NAN;
        out->n = (int64_t)v[1];
        if (!(ok = v[2] == 0)) dist_report(mine_ok, "validation failed");
    }
    sl_set_grad_enabled(g);
    if (!ok && ranks == 1) fail("validation failed");
    return ok;
}

sl_gpt *train_run(const train_opts *o, const text *train, const text *val, train_result *r)
{
    memset(r, 0, sizeof *r);
    r->val_loss = r->train_loss = r->train_loss_avg = NAN;
    r->saved_step = -1;
    sl_gpt *m = NULL;
    sl_optim *opt = NULL;
    int64_t start = 0;
    sl_rng data_rng;
    sl_arena *step_arena = sl_arena_new(0);
    bool ok =
        step_arena && setup(o, &m, &opt, &start, &data_rng) && can_train(o, m, start, train, val);
    if (!dist_ready(ok)) goto fail; /* from here on the ranks run in lockstep */
    const int rank = dist_rank(), ranks = dist_size();
    const bool lead = rank == 0; /* rank 0 alone prints and saves */
    if (ranks > 1) {
        char settings[4096];
        run_settings(o, m, start, &data_rng, train, val, settings, sizeof settings);
        if (!dist_check_same(settings) || !dist_attach(m->params)) goto fail;
    }
    const int64_t L = m->cfg.context, B = o->batch;
    /* This rank's rows of each global batch, and its share of the batch. */
    const int64_t r0 = B * rank / ranks, n_rows = B * (rank + 1) / ranks - r0;
    const double share = (double)n_rows / (double)B;
    char procs[64];
    int threads = sl_get_num_threads();
    if (ranks > 1)
        snprintf(procs, sizeof procs, "%d ranks x %d thread%s", ranks, threads,
                 threads == 1 ? "" : "s");
    else snprintf(procs, sizeof procs, "%d threads", threads);
    if (!o->quiet && lead)
        fprintf(stderr,
                "gpt train: %lld parameters; pos %s, L %lld, batch %lld, %d layers, %d heads, "
                "dim %lld; %lld steps, lr %g, %s\n  data: %s\n  val:  %s\n",
                (long long)sl_params_numel(m->params), sl_pos_name(m->cfg.pos), (long long)L,
                (long long)B, m->cfg.n_layers, m->cfg.n_heads, (long long)m->cfg.dim,
                (long long)o->steps, o->lr, procs, train->source, val->source);

    bool tty = !o->quiet && lead && isatty(STDERR_FILENO), talk = !o->quiet && lead;
    double t0 = now(), last_log = t0, ema = NAN;
    sl_arena *prev = sl_arena_set(step_arena);
    for (int64_t step = start; step < o->steps; step++) {
        m->train = true;
        double lr = sl_lr_warmup_cosine(step, o->warmup, o->steps, o->lr, o->lr * o->min_lr_frac);
        sl_tensor *idx, *tgt, *loss = NULL;
        ok = batch_random(train, B, L, &data_rng, &idx, &tgt) &&
             (loss = sl_gpt_loss(m, rows(idx, r0, n_rows), rows(tgt, r0, n_rows)));
        /* The loss (the global mean: each rank's share of it, summed) and the gradient norm are
         * checked before the update, so that a step that diverged never reaches the
         * parameters. */
        double local = ok ? sl_item(loss) : NAN, norm = NAN;
        double v[2] = {ok ? share * local : 0, !ok};
        dist_sum(v, 2);
        if (v[1] > 0) {
            sl_arena_set(prev);
            if (tty) fprintf(stderr, "\n");
            dist_report(ok, "training step failed");
            goto fail;
        }
        double value = v[0];
        const char *diverged = NULL;
        if (!isfinite(value)) diverged = "training loss";
        if (!diverged) {
            ok = dist_backward(loss, share); /* the same gradients on every rank */
            if (ok) norm = grad_norm(m->params, o->clip);
            if (ok && !isfinite(norm)) diverged = "gradient norm";
            ok = ok && (diverged || sl_optim_step(opt, lr));
        }
        /* The end of the step: whether any rank failed or was asked to stop. */
        int sig = stop_requested();
        double end[3] = {!ok, sig == SIGINT, sig == SIGTERM};
        dist_sum(end, 3);
        if (end[0] > 0 || diverged) {
            sl_arena_set(prev);
            if (tty) fprintf(stderr, "\n");
            if (end[0] > 0) {
                dist_report(ok, "training step failed");
            } else {
                sl_error_clear();
                if (lead)
                    fprintf(stderr,
                            "gpt: the %s is %g at step %lld, before its update: the run "
                            "diverged (try a lower --lr); the update is not applied\n",
                            diverged, diverged[0] == 't' ? value : norm, (long long)step + 1);
                say_kept(o, r);
            }
            goto fail;
        }
        sig = end[1] > 0 ? SIGINT : end[2] > 0 ? SIGTERM : 0;
        sl_params_zero_grad(m->params);
        r->train_loss = value;
        sl_arena_reset(step_arena);
        r->steps++;
        ema = isnan(ema) ? r->train_loss : 0.9 * ema + 0.1 * r->train_loss;
        r->train_loss_avg = ema;
        double t = now(), rate = (double)(r->steps * B * L) / (t - t0);
        bool last = step + 1 == o->steps || r->steps == o->stop_after || sig;
        bool do_eval = !sig && (last || (o->eval_every && (step + 1) % o->eval_every == 0));
        if (tty && (t - last_log > 0.2 || do_eval)) {
            char eta[32];
            fmt_duration((t - t0) / (double)r->steps * (double)(o->steps - step - 1), eta,
                         sizeof eta);
            fprintf(stderr,
                    "\rstep %lld/%lld | train loss (avg) %.4f | lr %.2e | %.0f tok/s | ETA %s   ",
                    (long long)step + 1, (long long)o->steps, ema, lr, rate, eta);
            last_log = t;
        } else if (!tty && talk && (r->steps % 50 == 0 || do_eval)) {
            fprintf(stderr, "step %lld/%lld train loss (avg) %.4f lr %.2e %.0f tok/s\n",
                    (long long)step + 1, (long long)o->steps, ema, lr, rate);
        }
        if (do_eval) {
            score s;
            int64_t span = val->n - 1 < o->eval_tokens ? val->n - 1 : o->eval_tokens;
            if (!validate(m, val, L, span, step_arena, &s)) {
                sl_arena_set(prev);
                goto fail;
            }
            r->val_loss = s.nll;
            if (talk)
                fprintf(stderr, "%sstep %lld: val loss %.4f (ppl %.3f, %.3f bits/byte) on %lld bytes\n",
                        tty ? "\n" : "", (long long)step + 1, s.nll, exp(s.nll), s.nll / log(2.0),
                        (long long)s.n);
            if (o->out && !save_checked(o, m, opt, step + 1, &data_rng, s.nll, NAN, r)) {
                sl_arena_set(prev);
                goto fail;
            }
        }
        if (sig) {
            /* Stopped by a signal (to any rank): this step is done; save it (without the
             * validation pass, so that the program ends promptly) and say so. */
            sl_arena_set(prev);
            if (tty) fprintf(stderr, "\n");
            r->stopped_by = sig;
            const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
            if (o->out && !save_checked(o, m, opt, step + 1, &data_rng, NAN, r->train_loss, r))
                goto fail;
            if (lead && o->out)
                fprintf(stderr,
                        "gpt: stopped by %s after step %lld; saved %s (continue with "
                        "--resume %s)\n",
                        name, (long long)step + 1, o->out, o->out);
            else if (lead)
                fprintf(stderr, "gpt: stopped by %s after step %lld\n", name, (long long)step + 1);
            break;
        }
        if (last) break;
    }
    sl_arena_set(prev);
    r->seconds = now() - t0;
    r->tokens_per_s = (double)(r->steps * B * L) / r->seconds;
    r->peak_bytes = model_bytes(m) + sl_arena_peak(step_arena);
    dist_detach();
    sl_optim_free(opt);
    sl_arena_free(step_arena);
    return m;
fail:
    dist_detach();
    sl_optim_free(opt);
    sl_gpt_free(m);
    sl_arena_free(step_arena);
    return NULL;
}
