/* ops/elementwise_kernels.h — the elementwise kernels, written once over a type T and
 * instantiated by elementwise_isa.c for every SIMD level with T = float and with T = double (SUF
 * names them: _f32, _f64). <tgmath.h> picks expf/exp etc. from the argument type. Each forward
 * sits next to its backward; backward kernels ACCUMULATE into the input's gradient. */
#include <tgmath.h>

/* y = op(x), x and y contiguous, n elements. */
static void FN(unary_forward)(unary_op op, const T *restrict x, T *restrict y, int64_t n, T p)
{
    const T c = (T)0.7978845608028654, k = (T)0.044715; /* sqrt(2/pi), tanh-GELU's cubic */
    switch (op) {
    case U_NEG: SL_EACH(n, y[i] = -x[i]); break;
    case U_ADDS: SL_EACH(n, y[i] = x[i] + p); break;
    case U_MULS: SL_EACH(n, y[i] = x[i] * p); break;
    case U_POW: for (int64_t i = 0; i < n; i++) y[i] = pow(x[i], p); break;
    case U_EXP: for (int64_t i = 0; i < n; i++) y[i] = exp(x[i]); break;
    case U_LOG: for (int64_t i = 0; i < n; i++) y[i] = log(x[i]); break;
    case U_SQRT: for (int64_t i = 0; i < n; i++) y[i] = sqrt(x[i]); break;
    case U_TANH: for (int64_t i = 0; i < n; i++) y[i] = tanh(x[i]); break;
    case U_SIGMOID: for (int64_t i = 0; i < n; i++) y[i] = 1 / (1 + exp(-x[i])); break;
    case U_RELU: SL_EACH(n, y[i] = x[i] > 0 ? x[i] : 0); break;
    case U_GELU_ERF: /* x * Phi(x) */
        for (int64_t i = 0; i < n; i++) y[i] = (T)0.5 * x[i] * (1 + erf(x[i] * (T)M_SQRT1_2));
        break;
    case U_GELU_TANH: /* 0.5 x (1 + tanh(c (x + k x^3))) */
        for (int64_t i = 0; i < n; i++) {
            T v = x[i];
            y[i] = (T)0.5 * v * (1 + tanh(c * (v + k * v * v * v)));
        }
        break;
    case U_COUNT: break;
    }
}

/* gx += g * dy/dx, from x, the forward output y and the parameter p. */
static void FN(unary_backward)(unary_op op, const T *restrict x, const T *restrict y,
                               const T *restrict g, T *restrict gx, int64_t n, T p)
{
    const T c = (T)0.7978845608028654, k = (T)0.044715;
    switch (op) {
    case U_NEG: SL_EACH(n, gx[i] -= g[i]); break;
    case U_ADDS: SL_EACH(n, gx[i] += g[i]); break;
    case U_MULS: SL_EACH(n, gx[i] += g[i] * p); break;
    case U_POW: /* y = x^p: p x^(p-1) */
        for (int64_t i = 0; i < n; i++) gx[i] += g[i] * p * pow(x[i], p - 1);
        break;
    case U_EXP: SL_EACH(n, gx[i] += g[i] * y[i]); break;
    case U_LOG: SL_EACH(n, gx[i] += g[i] / x[i]); break;
    case U_SQRT: SL_EACH(n, gx[i] += g[i] * (T)0.5 / y[i]); break;
    case U_TANH: SL_EACH(n, gx[i] += g[i] * (1 - y[i] * y[i])); break;
    case U_SIGMOID: SL_EACH(n, gx[i] += g[i] * y[i] * (1 - y[i])); break;
    case U_RELU: /* g read unconditionally: a load under the condition is not vectorised */
        SL_EACH(n, const T gi = g[i]; gx[i] += x[i] > 0 ? gi : 0);
        break;
    case U_GELU_ERF: /* Phi(x) + x phi(x) */
        for (int64_t i = 0; i < n; i++) {
            T v = x[i];
            T cdf = (T)0.5 * (1 + erf(v * (T)M_SQRT1_2));
            T pdf = exp((T)-0.5 * v * v) * (T)0.3989422804014327; /* 1/sqrt(2 pi) */
            gx[i] += g[i] * (cdf + v * pdf);
        }
        break;
    case U_GELU_TANH: /* 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2), t = tanh(u) */
        for (int64_t i = 0; i < n; i++) {
            T v = x[i];
            T t = tanh(c * (v + k * v * v * v));
            gx[i] += g[i] * ((T)0.5 * (1 + t) + (T)0.5 * v * (1 - t * t) * c * (1 + 3 * k * v * v));
        }
        break;
    case U_COUNT: break;
    }
}

/* y[i] = a[i * sa] OP b[i * sb], with loops of their own for contiguous a and b and for either
 * one broadcast (stride 0), which the compiler can vectorise. */
#define BINARY_FORWARD(OP)                                                                       \
    do {                                                                                         \
        if (sa == 1 && sb == 1) SL_EACH(n, y[i] = a[i] OP b[i]);                                 \
        else if (sa == 1 && sb == 0) SL_EACH(n, y[i] = a[i] OP b[0]);                            \
        else if (sa == 0 && sb == 1) SL_EACH(n, y[i] = a[0] OP b[i]);                            \
        else                                                                                     \
            for (int64_t i = 0; i < n; i++) y[i] = a[i * sa] OP b[i * sb];                       \
    } while (0)

/* One run of a broadcast binary op: y[i] = a[i] op b[i] (byte strides sa, sb; y contiguous,
 * apart from a and b). */
static void FN(binary_forward)(binary_op op, char *restrict y_, const char *restrict a_,
                               const char *restrict b_, int64_t sa, int64_t sb, int64_t n)
{
    T *y = (T *)y_;
    sa /= (int64_t)sizeof(T);
    sb /= (int64_t)sizeof(T);
    const T *a = (const T *)a_, *b = (const T *)b_;
    switch (op) {
    case B_ADD: BINARY_FORWARD(+); break;
    case B_SUB: BINARY_FORWARD(-); break;
    case B_MUL: BINARY_FORWARD(*); break;
    case B_DIV: BINARY_FORWARD(/); break;
    case B_COUNT: break;
    }
}
#undef BINARY_FORWARD

/* One run of the backward of y = a op b for input `which` (0: a, 1: b):
 * d[i] += g[i] * dy/d(which), where d is the gradient buffer or a temporary shaped like y.
 * All operands have byte strides (d may have stride 0: a reduction over a broadcast dim). */
/* The loop of one backward case over strided operands, and the same loop where d, g and the
 * operands the case reads are contiguous (the flat case, which the compiler can vectorise). */
#define BINARY_BACKWARD(contig, body)                                                            \
    do {                                                                                         \
        if (sd == 1 && sg == 1 && (contig)) {                                                    \
            sd = sg = sa = sb = 1;                                                               \
            SL_EACH(n, body);                                                                    \
        } else {                                                                                 \
            for (int64_t i = 0; i < n; i++) body;                                                \
        }                                                                                        \
    } while (0)

/* One run of the backward of y = a op b for input `which` (0: a, 1: b):
 * d[i] += g[i] * dy/d(which), where d is the gradient buffer or a temporary shaped like y.
 * All operands have byte strides (d may have stride 0: a reduction over a broadcast dim); d is
 * apart from the others. */
static void FN(binary_backward)(binary_op op, int which, char *restrict d_,
                                const char *restrict g_, const char *restrict a_,
                                const char *restrict b_, const int64_t *bs, int64_t n)
{
    T *d = (T *)d_;
    const T *g = (const T *)g_, *a = (const T *)a_, *b = (const T *)b_;
    int64_t sd = bs[0] / (int64_t)sizeof(T), sg = bs[1] / (int64_t)sizeof(T);
    int64_t sa = bs[2] / (int64_t)sizeof(T), sb = bs[3] / (int64_t)sizeof(T);
    T s = which == 0 || op != B_SUB ? 1 : -1;
    switch (op) {
    case B_ADD:
    case B_SUB: /* d(a +- b) = da +- db */
        BINARY_BACKWARD(true, d[i * sd] += s * g[i * sg]);
        break;
    case B_MUL: /* d(ab) = b da + a db */
        if (which == 0) BINARY_BACKWARD(sb == 1, d[i * sd] += g[i * sg] * b[i * sb]);
        else BINARY_BACKWARD(sa == 1, d[i * sd] += g[i * sg] * a[i * sa]);
        break;
    case B_DIV: /* d(a/b) = da / b - a db / b^2 */
        if (which == 0) BINARY_BACKWARD(sb == 1, d[i * sd] += g[i * sg] / b[i * sb]);
        else
            BINARY_BACKWARD(sa == 1 && sb == 1,
                            d[i * sd] -= g[i * sg] * a[i * sa] / (b[i * sb] * b[i * sb]));
        break;
    case B_COUNT: break;
    }
}
#undef BINARY_BACKWARD
