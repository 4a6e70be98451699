/* ops.h - element-wise helpers of the forward pass on the SIMD path in use.
 * Pure functions of their inputs (element by element), so results never
 * depend on batching or threads; the avx512 bodies differ from the portable
 * ones by roundings (a polynomial exp instead of libm's expf). */
#ifndef HR_CPU_OPS_H
#define HR_CPU_OPS_H

#include <stdint.h>

/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + e^-g[i]) * u[i] */
void hr_cpu_silu_mul(float *g, const float *u, int64_t n);

#endif
