/* tensor/cpu.c — which SIMD level the CPU has, and which the library's kernels run at.
 *
 * Levels, as the x86-64 micro-architecture levels name them: generic (the baseline the build
 * targets), avx2 (x86-64-v3: AVX2, FMA, F16C, BMI1/2) and avx512 (x86-64-v4: AVX-512 F, CD, BW,
 * DQ, VL). The kernels of each level are compiled into the library whatever the build machine
 * (tensor/isa.h); the running CPU is asked once, at first use, and SL_ISA=generic|avx2|avx512 in
 * the environment lowers the level (never raises it past the CPU's). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[SL__ISA_COUNT] = {"generic", "avx2", "avx512"};

const char *sl__isa_name(sl__isa_level level)
{
    return level >= 0 && level < SL__ISA_COUNT ? names[level] : "?";
}

sl__isa_level sl__cpu_isa(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
              __builtin_cpu_supports("bmi2");
    bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
              __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
              __builtin_cpu_supports("avx512vl");
    return v4 ? SL__ISA_AVX512 : v3 ? SL__ISA_AVX2 : SL__ISA_GENERIC;
#else
    return SL__ISA_GENERIC;
#endif
}

sl__isa_level sl__isa_parse(const char *s)
{
    for (int i = 0; s && i < SL__ISA_COUNT; i++)
        if (!strcmp(s, names[i])) return (sl__isa_level)i;
    return SL__ISA_COUNT;
}

sl__isa_level sl__isa(void)
{
    static int chosen = -1; /* a benign race: every thread computes the same value */
    if (chosen < 0) {
        sl__isa_level level = sl__cpu_isa(), want = sl__isa_parse(getenv("SL_ISA"));
        if (want < level) level = want; /* SL_ISA only lowers it; unset or unknown: no cap */
        chosen = (int)level;
    }
    return (sl__isa_level)chosen;
}

const char *sl_cpu_isa(void) { return sl__isa_name(sl__isa()); }
