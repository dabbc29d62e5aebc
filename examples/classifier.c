/* examples/classifier.c — a custom model written against shortlong's public nn API.
 *
 * The task: three interleaved spirals in the plane, a classic that a linear model cannot
 * separate. The model is a small residual MLP built from the library's modules:
 *
 *     x (B, 2) -> Linear -> [LayerNorm -> MLP(GELU) -> + residual] x 2 -> LayerNorm -> Linear -> logits (B, 3)
 *
 * trained with AdamW, a warmup-cosine schedule and gradient clipping, then saved to a
 * safetensors checkpoint, loaded into a fresh model, and checked to give the same accuracy.
 *
 * Build it against an installed shortlong:
 *     cc -O2 classifier.c $(pkg-config --cflags --libs shortlong) -lm -o classifier
 * Everything it touches is in <shortlong/shortlong.h>.
 */
#include <shortlong/shortlong.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define PI 3.14159265358979323846 /* M_PI is POSIX, not C11 */

enum { CLASSES = 3, WIDTH = 32, BLOCKS = 2, N_TRAIN = 1024, N_TEST = 768, STEPS = 400 };

/* A model is a struct of modules; its parameters live in one registry. */
typedef struct {
    sl_params *params;
    sl_linear_module *in, *out;
    sl_layer_norm_module *ln[BLOCKS], *ln_out;
    sl_mlp *mlp[BLOCKS];
} model;

static model *model_new(uint64_t seed)
{
    model *m = calloc(1, sizeof *m);
    sl_rng rng = sl_rng_seed(seed);
    m->params = sl_params_new(SL_F32);
    if (!m->params) return NULL;
    /* Names are hierarchical; they become the tensor names in the checkpoint. */
    m->in = sl_linear_new(m->params, "in", 2, WIDTH, true, &rng);
    for (int b = 0; b < BLOCKS; b++) {
        char name[32];
        snprintf(name, sizeof name, "blocks.%d.ln", b);
        m->ln[b] = sl_layer_norm_new(m->params, name, WIDTH, 1e-5);
        snprintf(name, sizeof name, "blocks.%d.mlp", b);
        m->mlp[b] = sl_mlp_new(m->params, name, WIDTH, 4 * WIDTH, &rng);
    }
    m->ln_out = sl_layer_norm_new(m->params, "ln_out", WIDTH, 1e-5);
    m->out = sl_linear_new(m->params, "out", WIDTH, CLASSES, true, &rng);
    return sl_error() == SL_OK ? m : NULL;
}

static void model_free(model *m)
{
    if (m) sl_params_free(m->params); /* the modules live in the registry's arena */
    free(m);
}

/* (B, 2) -> logits (B, 3). Every op records itself on the tape when grad mode is on. */
static sl_tensor *model_forward(const model *m, sl_tensor *x)
{
    sl_tensor *h = sl_linear_forward(m->in, x);
    for (int b = 0; b < BLOCKS; b++)
        h = sl_mlp_forward_residual(m->mlp[b], sl_layer_norm_forward(m->ln[b], h), h); // h + mlp
    return sl_linear_forward(m->out, sl_layer_norm_forward(m->ln_out, h));
}

/* n points of three noisy spirals: x (n, 2) f32, y (n) i32. */
static void spirals(uint64_t seed, int64_t n, sl_tensor **x, sl_tensor **y)
{
    sl_rng rng = sl_rng_seed(seed);
    *x = sl_empty(SL_F32, sl_shape(n, 2));
    *y = sl_empty(SL_I32, sl_shape(n));
    if (!*x || !*y) return;
    float *px = (*x)->data;
    int32_t *py = (*y)->data;
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % CLASSES);
        double r = sl_rng_uniform(&rng), theta = 4.0 * r + 2.0 * PI * c / CLASSES;
        px[2 * i] = (float)(r * cos(theta) + 0.03 * sl_rng_normal(&rng));
        px[2 * i + 1] = (float)(r * sin(theta) + 0.03 * sl_rng_normal(&rng));
        py[i] = c;
    }
}

/* Fraction of rows whose largest logit is the label. */
static double accuracy(const model *m, sl_tensor *x, sl_tensor *y)
{
    bool prev = sl_set_grad_enabled(false); /* inference: no tape, no saved activations */
    sl_tensor *logits = model_forward(m, x);
    sl_set_grad_enabled(prev);
    if (!logits) return NAN;
    int64_t n = x->shape[0], right = 0;
    const float *l = logits->data;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (l[i * CLASSES + c] > l[i * CLASSES + best]) best = c;
        right += best == ((const int32_t *)y->data)[i];
    }
    return (double)right / (double)n;
}

int main(int argc, char **argv)
{
    const char *ckpt = argc > 1 ? argv[1] : "classifier.safetensors";
    sl_set_error_handler(sl_error_abort_handler, NULL); /* a program: fail loudly on any error */

    /* Long-lived data in one arena; each step's activations and tape in another, reset after
     * every step so that training allocates nothing once warm. */
    sl_arena *data = sl_arena_new(0), *step = sl_arena_new(0);
    sl_arena_set(data);
    sl_tensor *xtr, *ytr, *xte, *yte;
    spirals(1, N_TRAIN, &xtr, &ytr);
    spirals(2, N_TEST, &xte, &yte);

    model *m = model_new(42);
    sl_optim *opt = sl_adamw_new(m->params, &(sl_adamw_config){.weight_decay = 0.01});
    printf("classifier: %lld parameters in %d tensors\n", (long long)sl_params_numel(m->params),
           sl_params_count(m->params));

    sl_arena_set(step);
    for (int s = 0; s < STEPS; s++) {
        sl_tensor *loss = sl_cross_entropy(model_forward(m, xtr), ytr, SL_NO_IGNORE);
        sl_backward(loss);
        sl_params_clip_grad_norm(m->params, 1.0);
        sl_optim_step(opt, sl_lr_warmup_cosine(s, 30, STEPS, 1e-2, 1e-4));
        sl_params_zero_grad(m->params);
        if (s % 100 == 0 || s == STEPS - 1)
            printf("step %4d  loss %.4f\n", s, sl_item(loss));
        sl_arena_reset(step); /* drops the tape and the activations */
    }
    double acc = accuracy(m, xte, yte);
    printf("test accuracy %.3f\n", acc);

    /* Save, load into a fresh model, and check the copy agrees. */
    sl_meta meta[] = {{"example", "spirals classifier"}};
    sl_save_params(ckpt, m->params, meta, 1);
    model *m2 = model_new(7); /* different init, overwritten by the load */
    sl_load_params(ckpt, m2->params);
    double acc2 = accuracy(m2, xte, yte);
    printf("reloaded from %s: test accuracy %.3f\n", ckpt, acc2);

    int rc = acc > 0.9 && acc2 == acc ? 0 : 1;
    if (rc) fprintf(stderr, "classifier: expected accuracy > 0.9 and an identical reload\n");
    sl_arena_set(NULL);
    sl_optim_free(opt);
    model_free(m2);
    model_free(m);
    sl_arena_free(step);
    sl_arena_free(data);
    return rc;
}
