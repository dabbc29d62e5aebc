/* examples/gpt/train.c — the training loop.
 *
 * One step: a random batch of windows -> sl_gpt_loss -> sl_backward -> clip -> AdamW at the
 * schedule's learning rate -> zero the gradients -> reset the step arena (the tape and every
 * activation go at once; parameters, gradients and optimizer state live in the model's own
 * arena). The loss is checked before the backward and the gradient norm before the update:
 * a non-finite one stops the run without touching the parameters. At each evaluation the
 * model is validated and, with an output path, a training checkpoint is written atomically
 * (weights, optimizer state, config, step, both RNG streams and the run's settings, see
 * run.c), so a resumed run continues bitwise where it stopped; but only when the validation
 * loss and every parameter are finite, so a diverging run never replaces a good checkpoint:
 * the file at the output path is replaced only by a model that passed those checks (the save
 * is a rename over it), and otherwise stays as it was. */
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

static bool save(const train_opts *o, const sl_gpt *m, const sl_optim *opt, int64_t step,
                 const sl_rng *data_rng)
{
    sl_meta extra[RUN_META_MAX];
    char bufs[RUN_META_MAX][80];
    int n = run_meta(o, step, data_rng, extra, bufs);
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

/* What is on disk after a run that stops without saving. */
static void say_kept(const train_opts *o, const train_result *r)
{
    if (!o->out) return;
    if (r->saved_step >= 0)
        fprintf(stderr, "gpt: %s keeps the checkpoint of step %lld\n", o->out,
                (long long)r->saved_step);
    else if (access(o->out, F_OK) == 0) fprintf(stderr, "gpt: %s is left as it was\n", o->out);
    else fprintf(stderr, "gpt: nothing was saved\n");
}

/* Writes the checkpoint of `step` when the model is sound: val_loss (NAN when there was no
 * evaluation, then last_loss stands in) and every parameter finite. False after a message. */
static bool save_checked(const train_opts *o, const sl_gpt *m, const sl_optim *opt, int64_t step,
                         const sl_rng *data_rng, double val_loss, double last_loss, train_result *r)
{
    double loss = isnan(val_loss) && !isnan(last_loss) ? last_loss : val_loss;
    const char *why = !isfinite(loss)     ? "its loss is not finite"
                      : !params_finite(m) ? "a parameter is not finite"
                                          : NULL;
    if (why) {
        fprintf(stderr,
                "gpt: the model of step %lld is not saved: %s (loss %g; the run "
                "diverged: try a lower --lr)\n",
                (long long)step, why, loss);
        say_kept(o, r);
        return false;
    }
    if (!save(o, m, opt, step, data_rng)) return false;
    r->saved_step = step;
    return true;
}

static size_t model_bytes(const sl_gpt *m)
{
    return sl_arena_reserved(sl_params_arena(m->params));
}

sl_gpt *train_run(const train_opts *o, const text *train, const text *val, train_result *r)
{
    memset(r, 0, sizeof *r);
    r->val_loss = r->train_loss = r->train_loss_avg = NAN;
    r->saved_step = -1;
    sl_gpt *m = NULL;
    sl_optim *opt = NULL;
    int64_t start;
    sl_rng data_rng;
    sl_arena *step_arena = sl_arena_new(0);
    if (!step_arena || !setup(o, &m, &opt, &start, &data_rng)) goto fail;
    const int64_t L = m->cfg.context, B = o->batch;
    if (train->n < L + 2 || val->n < L + 2) {
        fprintf(stderr,
                "gpt: the training and validation texts need more than %lld bytes each "
                "(they have %lld and %lld)\n",
                (long long)L + 1, (long long)train->n, (long long)val->n);
        goto fail;
    }
    if (start >= o->steps) {
        fprintf(stderr, "gpt: %s is at step %lld, not below --steps %lld: nothing to train\n",
                o->resume ? o->resume : "the model", (long long)start, (long long)o->steps);
        goto fail;
    }
    if (!o->quiet)
        fprintf(stderr,
                "gpt train: %lld parameters; pos %s, L %lld, batch %lld, %d layers, %d heads, "
                "dim %lld; %lld steps, lr %g, %d threads\n  data: %s\n  val:  %s\n",
                (long long)sl_params_numel(m->params), sl_pos_name(m->cfg.pos), (long long)L,
                (long long)B, m->cfg.n_layers, m->cfg.n_heads, (long long)m->cfg.dim,
                (long long)o->steps, o->lr, sl_get_num_threads(), train->source, val->source);

    bool tty = !o->quiet && isatty(STDERR_FILENO);
    double t0 = now(), last_log = t0, ema = NAN;
    sl_arena *prev = sl_arena_set(step_arena);
    for (int64_t step = start; step < o->steps; step++) {
        m->train = true;
        double lr = sl_lr_warmup_cosine(step, o->warmup, o->steps, o->lr, o->lr * o->min_lr_frac);
        sl_tensor *idx, *tgt, *loss = NULL;
        bool ok =
            batch_random(train, B, L, &data_rng, &idx, &tgt) && (loss = sl_gpt_loss(m, idx, tgt));
        /* The loss and the gradient norm are checked before the update, so that a step that
         * diverged never reaches the parameters. */
        double value = ok ? sl_item(loss) : NAN, norm = NAN;
        const char *diverged = NULL;
        if (ok && !isfinite(value)) diverged = "training loss";
        ok = ok && !diverged && sl_backward(loss);
        if (ok) norm = grad_norm(m->params, o->clip);
        if (ok && !isfinite(norm)) diverged = "gradient norm", ok = false;
        ok = ok && sl_optim_step(opt, lr);
        if (!ok) {
            sl_arena_set(prev);
            if (tty) fprintf(stderr, "\n");
            if (diverged) {
                sl_error_clear();
                fprintf(stderr,
                        "gpt: the %s is %g at step %lld, before its update: the run "
                        "diverged (try a lower --lr); the update is not applied\n",
                        diverged, diverged[0] == 't' ? value : norm, (long long)step + 1);
                say_kept(o, r);
            } else {
                fail("training step failed");
            }
            goto fail;
        }
        sl_params_zero_grad(m->params);
        r->train_loss = value;
        sl_arena_reset(step_arena);
        r->steps++;
        ema = isnan(ema) ? r->train_loss : 0.9 * ema + 0.1 * r->train_loss;
        r->train_loss_avg = ema;
        double t = now(), rate = (double)(r->steps * B * L) / (t - t0);
        int sig = stop_requested();
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
        } else if (!tty && !o->quiet && (r->steps % 50 == 0 || do_eval)) {
            fprintf(stderr, "step %lld/%lld train loss (avg) %.4f lr %.2e %.0f tok/s\n",
                    (long long)step + 1, (long long)o->steps, ema, lr, rate);
        }
        if (do_eval) {
            m->train = false;
            bool g = sl_set_grad_enabled(false);
            score s;
            int64_t span = val->n - 1 < o->eval_tokens ? val->n - 1 : o->eval_tokens;
            ok = eval_nonoverlap(m, val, L, span, step_arena, &s);
            sl_set_grad_enabled(g);
            if (!ok) {
                sl_arena_set(prev);
                fail("validation failed");
                goto fail;
            }
            r->val_loss = s.nll;
            if (!o->quiet)
                fprintf(stderr, "%sstep %lld: val loss %.4f (ppl %.3f, %.3f bits/byte) on %lld bytes\n",
                        tty ? "\n" : "", (long long)step + 1, s.nll, exp(s.nll), s.nll / log(2.0),
                        (long long)s.n);
            if (o->out && !save_checked(o, m, opt, step + 1, &data_rng, s.nll, NAN, r)) {
                sl_arena_set(prev);
                goto fail;
            }
        }
        if (sig) {
            /* Stopped by a signal: this step is done; save it (without the validation pass,
             * so that the program ends promptly) and say so. */
            sl_arena_set(prev);
            if (tty) fprintf(stderr, "\n");
            r->stopped_by = sig;
            const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
            if (o->out && !save_checked(o, m, opt, step + 1, &data_rng, NAN, r->train_loss, r))
                goto fail;
            if (o->out)
                fprintf(stderr,
                        "gpt: stopped by %s after step %lld; saved %s (continue with "
                        "--resume %s)\n",
                        name, (long long)step + 1, o->out, o->out);
            else fprintf(stderr, "gpt: stopped by %s after step %lld\n", name, (long long)step + 1);
            break;
        }
        if (last) break;
    }
    sl_arena_set(prev);
    r->seconds = now() - t0;
    r->tokens_per_s = (double)(r->steps * B * L) / r->seconds;
    r->peak_bytes = model_bytes(m) + sl_arena_peak(step_arena);
    sl_optim_free(opt);
    sl_arena_free(step_arena);
    return m;
fail:
    sl_optim_free(opt);
    sl_gpt_free(m);
    sl_arena_free(step_arena);
    return NULL;
}
