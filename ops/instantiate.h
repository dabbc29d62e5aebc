/* ops/instantiate.h — the one way an op makes its f32 and f64 kernels (not installed).
 *
 * An op writes its kernels once over a type T in ops/<op>_kernels.h, naming each function
 * FN(name) (FN, CAT: below), and its .c file instantiates them with
 *     #define SL_KERNELS "<op>_kernels.h"
 *     #include "instantiate.h"
 * which includes the header twice: T = float (SUF f32, T_IS_F32 1), then T = double (SUF f64,
 * T_IS_F32 0), making name_f32 and name_f64. T_IS_F32 lets a kernel keep a hand-vectorised f32
 * path beside the plain loop. An op that also takes i32 tensors (comparisons, gathers) defines
 * SL_KERNELS_I32 as well, which adds T = int32_t (SUF i32, T_IS_INT 1; T_IS_INT is 0 for the
 * float types). No include guard: each .c file includes it once per header. */
#ifndef SL_KERNELS
#error "define SL_KERNELS as the kernel header to instantiate"
#endif

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

#define T_IS_INT 0
#define T float
#define SUF f32
#define T_IS_F32 1
#include SL_KERNELS
#undef T
#undef SUF
#undef T_IS_F32

#define T double
#define SUF f64
#define T_IS_F32 0
#include SL_KERNELS
#undef T
#undef SUF
#undef T_IS_F32
#undef T_IS_INT

#ifdef SL_KERNELS_I32
#define T_IS_INT 1
#define T int32_t
#define SUF i32
#define T_IS_F32 0
#include SL_KERNELS
#undef T
#undef SUF
#undef T_IS_F32
#undef T_IS_INT
#undef SL_KERNELS_I32
#endif

#undef FN
#undef CAT
#undef CAT_
#undef SL_KERNELS
