/* ops/instantiate.h — the one way an op makes its f32 and f64 kernels (not installed).
 *
 * An op writes its kernels once over a type T in ops/<op>_kernels.h, naming each function
 * FN(name) (FN, CAT: below), and its .c file instantiates them with
 *     #define SL_KERNELS "<op>_kernels.h"
 *     #include "instantiate.h"
 * which includes the header twice: T = float (SUF f32, T_IS_F32 1), then T = double (SUF f64,
 * T_IS_F32 0), making name_f32 and name_f64. T_IS_F32 lets a kernel keep a hand-vectorised f32
 * path beside the plain loop. No include guard: each .c file includes it once per header. */
#ifndef SL_KERNELS
#error "define SL_KERNELS as the kernel header to instantiate"
#endif

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

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

#undef FN
#undef CAT
#undef CAT_
#undef SL_KERNELS
