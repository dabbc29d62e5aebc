/* examples/gpt/train.c — the training loop.
 *
 * One step: a random batch of windows -> sl_gpt_loss -> sl_backward -> clip -> AdamW at the
 * schedule's learning rate -> zero the gradients -> reset the step arena (the tape and every
 * activation go at once; parameters, gradients and optimizer state live in the model's own
 * arena). At each evaluation the model is validated and, with an output path, a training
 * checkpoint is written atomically: weights, optimizer state, config, step, and both RNG
 * streams, so a resumed run continues bitwise where it stopped. */
#include "gpt.h"

#include <math.h>
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
                 const sl_rng *data_rng, const text *train)
{
    char step_s[32], drng[80];
    snprintf(step_s, sizeof step_s, "%lld", (long long)step);
    sl_rng_to_hex(data_rng, drng);
    sl_meta extra[] = {{"train.step", step_s}, {"train.data_rng", drng},
                       {"train.data", train->source}};
    if (sl_gpt_save(o->out, m, opt, extra, 3)) return true;
    return fail("cannot save the checkpoint"), false;
}

static size_t model_bytes(const sl_gpt *m)
{
    return sl_arena_reserved(sl_params_arena(m->params));
}

sl_gpt *train_run(const train_opts *o, const text *train, const text *val, train_result *r)
{
    memset(r, 0, sizeof *r);
    r->val_loss = r->train_loss = NAN;
    sl_gpt *m = NULL;
    sl_optim *opt = NULL;
    int64_t start;
    sl_rng data_rng;
    sl_arena *step_arena = sl_arena_new(0);
    if (!step_arena || !setup(o, &m, &opt, &start, &data_rng)) goto fail;
    const int64_t L = m->cfg.context, B = o->batch;
    if (train->n < L + 2 || val->n < L + 2) {
        fprintf(stderr, "gpt: the training and validation texts need more than %lld bytes each\n",
                (long long)L + 1);
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
        bool ok = batch_random(train, B, L, &data_rng, &idx, &tgt) &&
                  (loss = sl_gpt_loss(m, idx, tgt)) && sl_backward(loss);
        if (ok && o->clip > 0) sl_params_clip_grad_norm(m->params, o->clip);
        ok = ok && sl_optim_step(opt, lr);
        if (!ok) {
            sl_arena_set(prev);
            fprintf(stderr, "\n");
            fail("training step failed");
            goto fail;
        }
        sl_params_zero_grad(m->params);
        r->train_loss = sl_item(loss);
        sl_arena_reset(step_arena);
        if (!isfinite(r->train_loss)) {
            sl_arena_set(prev);
            fprintf(stderr, "\ngpt: the loss became %g at step %lld; try a lower --lr\n",
                    r->train_loss, (long long)step);
            goto fail;
        }
        r->steps++;
        ema = isnan(ema) ? r->train_loss : 0.9 * ema + 0.1 * r->train_loss;
        double t = now(), rate = (double)(r->steps * B * L) / (t - t0);
        bool last = step + 1 == o->steps || r->steps == o->stop_after;
        bool do_eval = last || (o->eval_every && (step + 1) % o->eval_every == 0);
        if (tty && (t - last_log > 0.2 || do_eval)) {
            char eta[32];
            fmt_duration((t - t0) / (double)r->steps * (double)(o->steps - step - 1), eta,
                         sizeof eta);
            fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s   ",
                    (long long)step + 1, (long long)o->steps, ema, lr, rate, eta);
            last_log = t;
        } else if (!tty && !o->quiet && (r->steps % 50 == 0 || do_eval)) {
            fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s\n", (long long)step + 1,
                    (long long)o->steps, ema, lr, rate);
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
            if (o->out && !save(o, m, opt, step + 1, &data_rng, train)) {
                sl_arena_set(prev);
                goto fail;
            }
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
