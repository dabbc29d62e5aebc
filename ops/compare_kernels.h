/* ops/compare_kernels.h — the comparison kernels, written once over a type T and included by
 * compare.c with T = float, double and int32_t (SUF names them: _f32, _f64, _i32). Each is one
 * run of sl__foreach / sl__foreach_broadcast (tensor/internal.h): byte pointers and byte strides,
 * the output i32 (1 where the comparison holds, else 0). Comparisons are C's: IEEE for floats,
 * so a NaN is unequal to everything, itself included, and neither less nor greater. */

/* One run of y[i] = a[i] op b[i]; p and the byte strides bs in the order y, a, b. */
static void FN(compare_run)(compare_op op, char *const *p, const int64_t *bs, int64_t n)
{
    int32_t *y = (int32_t *)p[0];
    const T *a = (const T *)p[1], *b = (const T *)p[2];
    int64_t sy = bs[0] / (int64_t)sizeof(int32_t);
    int64_t sa = bs[1] / (int64_t)sizeof(T), sb = bs[2] / (int64_t)sizeof(T);
    switch (op) {
    case C_EQ: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] == b[i * sb]; break;
    case C_NE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] != b[i * sb]; break;
    case C_LT: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] < b[i * sb]; break;
    case C_LE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] <= b[i * sb]; break;
    case C_GT: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] > b[i * sb]; break;
    case C_GE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] >= b[i * sb]; break;
    case C_COUNT: break;
    }
}

/* One run of y[i] = a[i] op s; operands y, a. A float a compares with s rounded to T (an f32
 * tensor against 0.1 compares with 0.1f, as PyTorch does); an i32 a with s itself, in double,
 * which holds every i32 exactly (so 2 < 2.5 and 2 != 2.5). */
static void FN(compare_scalar_run)(compare_op op, char *const *p, const int64_t *bs, int64_t n,
                                   double s)
{
    int32_t *y = (int32_t *)p[0];
    const T *a = (const T *)p[1];
    int64_t sy = bs[0] / (int64_t)sizeof(int32_t), sa = bs[1] / (int64_t)sizeof(T);
#if T_IS_INT
    const double v = s;
#else
    const T v = (T)s;
#endif
    switch (op) {
    case C_EQ: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] == v; break;
    case C_NE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] != v; break;
    case C_LT: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] < v; break;
    case C_LE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] <= v; break;
    case C_GT: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] > v; break;
    case C_GE: for (int64_t i = 0; i < n; i++) y[i * sy] = a[i * sa] >= v; break;
    case C_COUNT: break;
    }
}
