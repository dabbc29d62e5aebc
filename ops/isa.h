/* ops/isa.h — compiling a kernel for every SIMD level (not installed).
 *
 * A file named <name>_isa.c (in tensor/, ops/ or nn/) is compiled once per level the target
 * has (CMakeLists.txt: generic, avx2, avx512 on x86-64; generic elsewhere), each time with that
 * level's compiler flags and SL_ISA_SUFFIX defined to the level's name. Inside it, SL_ISA(name)
 * names a function or table for the level being compiled (name_avx512, ...), and
 * SL_VEC_BYTES is the width of the level's vector registers, for the vector types of
 * ops/simd.h. The library's own code then picks the level's symbols at run time with
 * sl__isa() (tensor/internal.h): one binary, the kernels for the CPU it runs on.
 *
 * SL_HAVE_AVX2 / SL_HAVE_AVX512 (defined by CMake for every file) say which levels were
 * compiled, so that the dispatching code declares and picks only those. */
#ifndef SL_OPS_ISA_H
#define SL_OPS_ISA_H

#define SL_ISA_CAT_(a, b) a##_##b
#define SL_ISA_CAT(a, b) SL_ISA_CAT_(a, b)

#ifdef SL_ISA_SUFFIX /* inside a <name>_isa.c */
#define SL_ISA(name) SL_ISA_CAT(name, SL_ISA_SUFFIX)
#if defined(__AVX512F__)
#define SL_VEC_BYTES 64
#elif defined(__AVX2__)
#define SL_VEC_BYTES 32
#else
#define SL_VEC_BYTES 16
#endif
#endif

/* Declares, for every compiled level, `decl` with its name suffixed: SL_ISA_DECLARE(extern const
 * table, foo) gives foo_generic, foo_avx2, foo_avx512. */
#define SL_ISA_DECL1(decl, name, isa) decl SL_ISA_CAT(name, isa);
#if defined(SL_HAVE_AVX512) && defined(SL_HAVE_AVX2)
#define SL_ISA_DECLARE(decl, name)                                                               \
    SL_ISA_DECL1(decl, name, generic) SL_ISA_DECL1(decl, name, avx2) SL_ISA_DECL1(decl, name, avx512)
#elif defined(SL_HAVE_AVX2)
#define SL_ISA_DECLARE(decl, name) SL_ISA_DECL1(decl, name, generic) SL_ISA_DECL1(decl, name, avx2)
#else
#define SL_ISA_DECLARE(decl, name) SL_ISA_DECL1(decl, name, generic)
#endif

/* The address of the compiled level's `name` for the running CPU's level (sl__isa()), falling
 * back to the highest compiled level below it. */
#if defined(SL_HAVE_AVX512) && defined(SL_HAVE_AVX2)
#define SL_ISA_PICK(name)                                                                        \
    (sl__isa() >= SL__ISA_AVX512 ? &SL_ISA_CAT(name, avx512)                                    \
     : sl__isa() >= SL__ISA_AVX2 ? &SL_ISA_CAT(name, avx2)                                      \
                                 : &SL_ISA_CAT(name, generic))
#elif defined(SL_HAVE_AVX2)
#define SL_ISA_PICK(name)                                                                        \
    (sl__isa() >= SL__ISA_AVX2 ? &SL_ISA_CAT(name, avx2) : &SL_ISA_CAT(name, generic))
#else
#define SL_ISA_PICK(name) (&SL_ISA_CAT(name, generic))
#endif

#endif
