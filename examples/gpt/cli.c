/* examples/gpt/cli.c — flag parsing and small helpers shared by the commands. */
#include "gpt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The value pointers of the flags the last parse_flags call set. */
enum { MAX_GIVEN = 128 };
static const void *given[MAX_GIVEN];
static int n_given;

int parse_flags(int argc, char **argv, const flag *flags, int n)
{
    n_given = 0;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return PARSE_HELP;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const flag *f = NULL;
        for (int k = 0; k < n; k++)
            if (a[0] == '-' && a[1] == '-' && !strcmp(a + 2, flags[k].name)) f = &flags[k];
        if (!f) {
            fprintf(stderr, "gpt: unknown argument '%s'\n", a);
            return PARSE_ERROR;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gpt: --%s needs a value\n", f->name);
            return PARSE_ERROR;
        }
        const char *v = argv[++i];
        char *end = NULL;
        switch (f->kind) {
        case F_STR: *(const char **)f->value = v; break;
        case F_INT: {
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || errno) {
                fprintf(stderr, "gpt: --%s takes an integer, got '%s'\n", f->name, v);
                return PARSE_ERROR;
            }
            *(int64_t *)f->value = x;
            break;
        }
        case F_NUM: {
            double x = strtod(v, &end);
            if (!*v || *end || !isfinite(x)) {
                fprintf(stderr, "gpt: --%s takes a number, got '%s'\n", f->name, v);
                return PARSE_ERROR;
            }
            *(double *)f->value = x;
            break;
        }
        }
        if (n_given < MAX_GIVEN) given[n_given++] = f->value;
    }
    return PARSE_OK;
}

bool flag_given(const flag *flags, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (!strcmp(flags[k].name, name))
            for (int g = 0; g < n_given; g++)
                if (given[g] == flags[k].value) return true;
    return false;
}

void print_flags(FILE *to, const flag *flags, int n)
{
    for (int k = 0; k < n; k++) fprintf(to, "  --%-13s %s\n", flags[k].name, flags[k].help);
}

int usage_exit(int parsed, const char *usage, const flag *flags, int n)
{
    FILE *to = parsed == PARSE_HELP ? stdout : stderr;
    fprintf(to, "usage: %s\n", usage);
    print_flags(to, flags, n);
    return parsed == PARSE_HELP ? 0 : 2;
}

bool check_range(const char *name, int64_t v, int64_t lo, int64_t hi)
{
    if (v >= lo && v <= hi) return true;
    fprintf(stderr, "gpt: --%s must be in [%lld, %lld], got %lld\n", name, (long long)lo,
            (long long)hi, (long long)v);
    return false;
}

bool check_number(const char *name, double v, double lo, bool lo_included, double hi)
{
    if ((lo_included ? v >= lo : v > lo) && v <= hi) return true;
    if (isinf(hi))
        fprintf(stderr, "gpt: --%s must be %s %g, got %g\n", name, lo_included ? ">=" : ">", lo, v);
    else
        fprintf(stderr, "gpt: --%s must be in %s%g, %g], got %g\n", name, lo_included ? "[" : "(",
                lo, hi, v);
    return false;
}

int fail(const char *what)
{
    fprintf(stderr, "gpt: %s: %s\n", what, sl_error_message());
    return 1;
}

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fmt_duration(double s, char *buf, size_t cap)
{
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

int parse_int_list(const char *s, int64_t *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || (*end && *end != ',')) return -1;
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    return *s ? -1 : n;
}

const char *pos_list(void)
{
    static char buf[256];
    if (!buf[0])
        for (int p = 0; p < SL_POS_COUNT; p++) {
            size_t n = strlen(buf);
            snprintf(buf + n, sizeof buf - n, "%s%s", p ? ", " : "", sl_pos_name((sl_pos)p));
        }
    return buf;
}
