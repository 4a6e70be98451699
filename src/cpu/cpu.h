/* cpu.h - CPU feature detection and run-time selection of the SIMD kernels.
 *
 * The kernels in src/cpu/ compute what src/quant/'s scalar reference
 * computes (integer block sums are exact; only the float accumulation order
 * differs), so the choice of path changes results by a few float roundings.
 * The path is decided once per process (thread-safe lazy init) from the host's
 * features, lowered by the environment variable HEARTH_CPU=scalar|avx2|avx512
 * or by hr_cpu_force() (tests, benchmarks). A request above what the host
 * supports falls back to the host's best with a one-time warning on stderr.
 *
 * Every function here is safe to call from any thread. hr_cpu_force() is meant
 * for tests and benchmarks: call it while no matmul is running. */
#ifndef HR_CPU_CPU_H
#define HR_CPU_CPU_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/quant.h"

typedef enum {
    HR_ISA_SCALAR = 0, /* the src/quant reference, any CPU */
    HR_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    HR_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI (plus everything AVX2 needs) */
    HR_ISA_COUNT
} hr_isa;

/* The best path this host (CPU and OS) supports, ignoring HEARTH_CPU. */
hr_isa hr_cpu_host_isa(void);

/* The path in use (host best, lowered by HEARTH_CPU or hr_cpu_force). */
hr_isa hr_cpu_isa(void);

/* "scalar", "avx2", "avx512"; hr_cpu_isa_name() names the path in use. */
const char *hr_isa_name(hr_isa isa);
const char *hr_cpu_isa_name(void);

/* Use `isa` from now on; a request above the host's best is lowered to it.
 * Returns the path actually selected. */
hr_isa hr_cpu_force(hr_isa isa);

/* Parses "scalar"/"avx2"/"avx512" (case-insensitive); false if unknown. */
bool hr_isa_parse(const char *s, hr_isa *out);

/* The dot product of a weight row of `type` with an activation row in its
 * vec_dot_type (see quant.h), on the path in use. Types without a SIMD body on
 * that path get the scalar reference. NULL for unsupported types. */
hr_vec_dot_fn hr_cpu_vec_dot(uint32_t type);

/* The activation quantiser for act_type (F32, F16, BF16, Q8_0, Q8_1, Q8_K) on
 * the path in use; byte-identical to the reference's from_float. NULL if
 * act_type is not an activation type. */
hr_from_float_fn hr_cpu_from_float(uint32_t act_type);

/* As above for an explicit path; NULL when that path has no SIMD body of its
 * own for the type (the scalar path returns the reference). For tests and
 * benchmarks: the caller must not pass a path the host lacks. */
hr_vec_dot_fn hr_cpu_vec_dot_isa(uint32_t type, hr_isa isa);
hr_from_float_fn hr_cpu_from_float_isa(uint32_t act_type, hr_isa isa);

#endif
