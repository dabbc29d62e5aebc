/* fuzz/fuzz_loaders.c — a libFuzzer target for every loader of untrusted files: each input is
 * written to a file and handed to sl_read_meta, sl_gpt_read_config, sl_gpt_load (strict, and
 * converting to f64 with non-finite values allowed), sl_load_params and sl_load_training into
 * the registry of the seed corpus's model (so that mutations of a matching file reach the data
 * path: the finiteness check, the copies), and sl_load_tensors. A loaded model runs one
 * forward, so a config the loader accepted is one the model can use. Built with clang and
 * -fsanitize=fuzzer,address,undefined (cmake -DSL_FUZZ=ON); see fuzz/README.md. */
#define _GNU_SOURCE /* memfd_create */
#include <shortlong/shortlong.h>

#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The seed corpus's model (tests/cli/ckpt_fixture.c's default GPT). */
static const sl_gpt_config seed_model = {.vocab_size = 16, .context = 8, .dim = 8,
                                         .n_layers = 1, .n_heads = 2, .pos = SL_POS_ALIBI,
                                         .tie_embeddings = true, .fused_qkv = true, .seed = 1};

static char path[256];
static int fd = -1;
static sl_gpt *model;
static sl_optim *opt;
static sl_arena *arena;

static bool named_file; /* a file in TMPDIR, not a memfd */

static void remove_file(void)
{
    if (named_file) unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    sl_set_num_threads(1);
    /* Each input goes to a file in memory, which the loaders open by name: rewriting a file on
     * a disk's file system (truncate, then write) can wait for the disk on every input. */
    fd = memfd_create("sl_fuzz_input", MFD_CLOEXEC);
    if (fd >= 0) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/sl_fuzz_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        fd = mkstemp(path);
        named_file = fd >= 0;
    }
    if (fd < 0) {
        perror("fuzz_loaders: cannot make the input file");
        abort();
    }
    atexit(remove_file);
    model = sl_gpt_new(&seed_model, SL_F32);
    opt = model ? sl_adamw_new(model->params, NULL) : NULL;
    arena = sl_arena_new(0);
    if (!opt || !arena) {
        fprintf(stderr, "fuzz_loaders: %s\n", sl_error_message());
        abort();
    }
    return 0;
}

/* One forward of a loaded model on two tokens, in the scratch arena. (With grad mode on: the
 * forward without grad makes two arenas of its own, whose 4 MiB blocks are what an ASan build
 * spends most of an input's time on.) */
static void run(sl_gpt *m)
{
    sl_arena *prev = sl_arena_set(arena);
    int32_t ids[2] = {0, (int32_t)(m->cfg.vocab_size - 1)};
    int64_t T = m->cfg.context < 2 ? 1 : 2;
    sl_tensor *idx = sl_from_data(SL_I32, sl_shape(1, T), ids);
    sl_gpt_forward(m, idx, NULL);
    sl_arena_set(prev);
    sl_arena_reset(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    char buf[128];
    sl_gpt_config cfg;
    sl_read_meta(path, "shortlong.model", buf, sizeof buf);
    sl_gpt_read_config(path, &cfg);
    sl_gpt *m = sl_gpt_load(path, SL_F32);
    if (m) run(m);
    sl_gpt_free(m);
    sl_load_opts lax = {.allow_nonfinite = true, .convert_dtype = true, .ignore_config = true};
    m = sl_gpt_load_ex(path, SL_F64, &lax);
    sl_gpt_free(m);
    sl_load_params(path, model->params);
    sl_load_params_ex(path, model->params, &lax);
    sl_load_training(path, model->params, opt);
    sl_arena *prev = sl_arena_set(arena);
    sl_named named[] = {{"x", sl_zeros(SL_F32, sl_shape(4))}, {"n", sl_zeros(SL_I32, sl_shape(3))},
                        {"d", sl_zeros(SL_F64, 0, NULL)}};
    sl_load_tensors(path, named, 3);
    sl_load_tensors_ex(path, named, 3, &lax);
    sl_arena_set(prev);
    sl_arena_reset(arena);
    sl_error_clear();
    return 0;
}
