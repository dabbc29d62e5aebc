/* bench/bench_util.h — what the benchmark programs share: a monotonic clock and the statistics
 * of a sample of times. Header-only, every function static inline: CMake builds each .c file in
 * bench/ as a program of its own, with no shared object to link.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The most samples median() takes; each program's own limit must not exceed it. */
#define BENCH_MAX_SAMPLES 256

/* Seconds on the monotonic clock. */
static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* qsort's comparison for doubles, ascending. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (v is left as it is); NaN unless 1 <= n <= BENCH_MAX_SAMPLES. */
static inline double median(const double *v, int n)
{
    double s[BENCH_MAX_SAMPLES];
    if (n < 1 || n > BENCH_MAX_SAMPLES) return NAN;
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* The smallest of v[0..n), n >= 1. */
static inline double min_of(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

/* The mean of v[0..n), n >= 1. */
static inline double mean_of(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

#endif
