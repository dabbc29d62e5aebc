/* tensor/error.c — the one error mechanism: a per-thread status and message, and a handler. */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local sl_status err_code = SL_OK;
static _Thread_local char err_msg[1024];

static sl_error_handler handler;
static void *handler_user;
static atomic_int handler_from_env = 0; /* 0: not looked at, 1: looked at */

sl_status sl_error(void) { return err_code; }
const char *sl_error_message(void) { return err_code == SL_OK ? "" : err_msg; }

void sl_error_clear(void)
{
    err_code = SL_OK;
    err_msg[0] = '\0';
}

const char *sl_status_name(sl_status code)
{
    switch (code) {
    case SL_OK: return "ok";
    case SL_ERR_ARG: return "bad argument";
    case SL_ERR_SHAPE: return "shape error";
    case SL_ERR_DTYPE: return "dtype error";
    case SL_ERR_INDEX: return "index error";
    case SL_ERR_STATE: return "state error";
    case SL_ERR_OOM: return "out of memory";
    case SL_ERR_IO: return "I/O error";
    case SL_ERR_FORMAT: return "format error";
    }
    return "unknown error";
}

sl_error_handler sl_set_error_handler(sl_error_handler h, void *user)
{
    atomic_store(&handler_from_env, 1);
    sl_error_handler prev = handler;
    handler = h;
    handler_user = user;
    return prev;
}

void sl_error_abort_handler(sl_status code, const char *message, void *user)
{
    (void)user;
    fprintf(stderr, "shortlong: %s: %s\n", sl_status_name(code), message);
    abort();
}

bool sl_set_error(sl_status code, const char *fmt, ...)
{
    if (!atomic_exchange(&handler_from_env, 1)) {
        const char *e = getenv("SL_ABORT_ON_ERROR");
        if (e && *e && *e != '0' && !handler) handler = sl_error_abort_handler;
    }
    char tmp[sizeof err_msg]; /* an argument may be sl_error_message() itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(err_msg, tmp, sizeof err_msg);
    err_code = code == SL_OK ? SL_ERR_ARG : code;
    if (handler) handler(err_code, err_msg, handler_user);
    return false;
}

bool sl__null_arg(const char *op, const char *arg)
{
    if (err_code == SL_OK) sl_set_error(SL_ERR_ARG, "%s: argument '%s' is NULL", op, arg);
    return false;
}

bool sl__none_arg(const char *op, const char *arg)
{
    return sl_set_error(SL_ERR_ARG, "%s: argument '%s' is SL_NONE; it is not optional", op, arg);
}

/* Reads a header that may lie in released (and, under AddressSanitizer, poisoned) memory: that
 * is what it is for, so the sanitizer does not watch it. Released memory may hold anything
 * now (0xFF bytes in debug builds, another tensor's data or header otherwise): the arena
 * pointer is followed only when the seal vouches for it. Every header the API hands out has
 * an arena (SL_NONE is checked before this). */
__attribute__((no_sanitize_address)) bool sl__is_live(const sl_tensor *t)
{
    const sl_arena *a = t->arena;
    if (!a || (uintptr_t)a == UINTPTR_MAX || t->seal != sl__seal(a, t->generation)) return false;
    return t->generation == sl__arena_generation(a);
}

bool sl__check_live(const char *op, const sl_tensor *t, const char *arg)
{
    if (t == SL_NONE) return sl__none_arg(op, arg);
    if (sl__is_live(t)) return true;
    return sl_set_error(SL_ERR_STATE,
                        "%s: argument '%s' was released by a reset of the arena it was made in "
                        "(sl_arena_reset): its memory may hold something else now; make it "
                        "again, or keep it in an arena that outlives its use",
                        op, arg);
}

bool sl__check_float(const char *op, const sl_tensor *t)
{
    if (t->dtype == SL_F32 || t->dtype == SL_F64) return true;
    return sl_set_error(SL_ERR_DTYPE, "%s: expected f32 or f64, got %s %s", op,
                        sl_dtype_name(t->dtype), sl_shape_str(t));
}

bool sl__check_same_dtype(const char *op, const sl_tensor *a, const sl_tensor *b)
{
    if (a->dtype == b->dtype) return true;
    return sl_set_error(SL_ERR_DTYPE, "%s: dtypes differ: %s %s vs %s %s", op,
                        sl_dtype_name(a->dtype), sl_shape_str(a), sl_dtype_name(b->dtype),
                        sl_shape_str(b));
}

bool sl__axis(const char *op, const sl_tensor *t, int axis, int *out)
{
    int a = axis < 0 ? axis + t->ndim : axis;
    if (a < 0 || a >= t->ndim)
        return sl_set_error(SL_ERR_ARG, "%s: axis %d out of range for %s", op, axis,
                            sl_shape_str(t));
    *out = a;
    return true;
}
