/* tensor/isa.h — compiling a kernel for every SIMD level (not installed; tensor/internal.h
 * includes it, so every layer has it).
 *
 * A file named <name>_isa.c (in tensor/, ops/ or nn/) is compiled once per level the target
 * has (CMakeLists.txt: generic, avx2, avx512 on x86-64; generic elsewhere), each time with that
 * level's compiler flags and SL_ISA_SUFFIX defined to the level's name. Inside it, SL_ISA(name)
 * names a function or table for the level being compiled (name_avx512, ...); the vector types
 * of ops/simd.h take the level's register width. The library's own code then picks the level's
 * symbols at run time with SL_ISA_PICK (below, through sl__isa()): one binary, the kernels for
 * the CPU it runs on.
 *
 * The pattern: <op>.h declares a table of the op's kernels and SL_ISA_DECLARE(extern const
 * table, name); <op>_isa.c defines `const table SL_ISA(name) = {...}`; <op>.c keeps
 * SL_ISA_PICK(name) (ops/gemm.h, ops/alibi_attention.h, ops/linear.h, ...).
 *
 * SL_HAVE_AVX2 / SL_HAVE_AVX512 (defined by CMake for every file) say which levels were
 * compiled, so that the dispatching code declares and picks only those. */
#ifndef SL_TENSOR_ISA_H
#define SL_TENSOR_ISA_H

#define SL_ISA_CAT_(a, b) a##_##b
#define SL_ISA_CAT(a, b) SL_ISA_CAT_(a, b)

#ifdef SL_ISA_SUFFIX /* inside a <name>_isa.c */
#define SL_ISA(name) SL_ISA_CAT(name, SL_ISA_SUFFIX)
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
