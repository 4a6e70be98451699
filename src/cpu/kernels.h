/* kernels.h - per-ISA kernel tables (internal to src/cpu/).
 *
 * Each lookup returns the ISA's own body for a GGML type id, or NULL when it
 * has none. The x86 files compile to nothing on other architectures, so only
 * dispatch.c calls these, and only under HR_CPU_X86. */
#ifndef HR_CPU_KERNELS_H
#define HR_CPU_KERNELS_H

#include <stdint.h>

#include "cpu/attn.h"
#include "quant/quant.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define HR_CPU_X86 1
hr_vec_dot_fn hr_avx2_vec_dot(uint32_t type);
hr_from_float_fn hr_avx2_from_float(uint32_t act_type);
hr_vec_dot_fn hr_avx512_vec_dot(uint32_t type);
hr_from_float_fn hr_avx512_from_float(uint32_t act_type);
hr_attn_fn hr_avx512_attn(int32_t group, int32_t d, int32_t dv);
void hr_avx512_silu_mul(float *g, const float *u, int64_t n);
#endif

#endif
