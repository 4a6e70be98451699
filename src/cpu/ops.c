/* ops.c - portable bodies and dispatch of ops.h. */
#include "cpu/ops.h"

#include <math.h>

#include "cpu/cpu.h"
#include "cpu/kernels.h"

static void silu_mul_ref(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void hr_cpu_silu_mul(float *g, const float *u, int64_t n)
{
#ifdef HR_CPU_X86
    if (hr_cpu_isa() >= HR_ISA_AVX512) {
        hr_avx512_silu_mul(g, u, n);
        return;
    }
#endif
    silu_mul_ref(g, u, n);
}
