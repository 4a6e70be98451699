/* dispatch.c - host feature detection and the per-type kernel choice.
 *
 * Detection reads cpuid directly and checks with xgetbv that the OS saves
 * the AVX (and AVX-512) register state: a CPU flag alone is not enough
 * (an OS or hypervisor may leave the state off). */
#include "cpu/cpu.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"

#ifdef HR_CPU_X86
#include <cpuid.h>

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static hr_isa detect_host(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return HR_ISA_SCALAR;
    const bool fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1;
    if (!osxsave || !avx)
        return HR_ISA_SCALAR;
    const uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state */
        return HR_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return HR_ISA_SCALAR;
    const bool avx2 = b >> 5 & 1;
    if (!(avx2 && fma && f16c))
        return HR_ISA_SCALAR;
    const bool f = b >> 16 & 1, dq = b >> 17 & 1, bw = b >> 30 & 1, vl = b >> 31 & 1;
    const bool vnni = c >> 11 & 1;
    const bool zmm_state = (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM hi256, hi16 ZMM */
    if (f && dq && bw && vl && vnni && zmm_state)
        return HR_ISA_AVX512;
    return HR_ISA_AVX2;
}
#else
static hr_isa detect_host(void) { return HR_ISA_SCALAR; }
#endif

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static hr_isa host_isa = HR_ISA_SCALAR;
static _Atomic int active_isa = HR_ISA_SCALAR;

static const char *const isa_names[HR_ISA_COUNT] = { "scalar", "avx2", "avx512" };

const char *hr_isa_name(hr_isa isa)
{
    return (unsigned)isa < HR_ISA_COUNT ? isa_names[isa] : "unknown";
}

bool hr_isa_parse(const char *s, hr_isa *out)
{
    if (!s)
        return false;
    for (int i = 0; i < HR_ISA_COUNT; i++) {
        const char *n = isa_names[i];
        size_t k = 0;
        while (n[k] && s[k] && tolower((unsigned char)s[k]) == n[k])
            k++;
        if (!n[k] && !s[k]) {
            *out = (hr_isa)i;
            return true;
        }
    }
    return false;
}

static void init(void)
{
    host_isa = detect_host();
    hr_isa want = host_isa;
    const char *env = getenv("HEARTH_CPU");
    if (env && *env) {
        hr_isa req;
        if (!hr_isa_parse(env, &req))
            fprintf(stderr, "hearth: HEARTH_CPU=%s not recognised (scalar, avx2, avx512); using %s\n",
                    env, isa_names[host_isa]);
        else if (req > host_isa)
            fprintf(stderr, "hearth: HEARTH_CPU=%s not supported by this CPU; using %s\n", env,
                    isa_names[host_isa]);
        else
            want = req;
    }
    atomic_store(&active_isa, (int)want);
}

hr_isa hr_cpu_host_isa(void)
{
    pthread_once(&init_once, init);
    return host_isa;
}

hr_isa hr_cpu_isa(void)
{
    pthread_once(&init_once, init);
    return (hr_isa)atomic_load_explicit(&active_isa, memory_order_relaxed);
}

const char *hr_cpu_isa_name(void) { return isa_names[hr_cpu_isa()]; }

hr_isa hr_cpu_force(hr_isa isa)
{
    pthread_once(&init_once, init);
    if ((unsigned)isa >= HR_ISA_COUNT || isa > host_isa)
        isa = host_isa;
    atomic_store(&active_isa, (int)isa);
    return isa;
}

hr_vec_dot_fn hr_cpu_vec_dot_isa(uint32_t type, hr_isa isa)
{
    const hr_type_traits *t = hr_type_get(type);
    if (!t || !t->supported)
        return NULL;
    switch (isa) {
    case HR_ISA_SCALAR:
        return t->vec_dot;
#ifdef HR_CPU_X86
    case HR_ISA_AVX2:
        return hr_avx2_vec_dot(type);
    case HR_ISA_AVX512:
        return hr_avx512_vec_dot(type);
#endif
    default:
        return NULL;
    }
}

hr_from_float_fn hr_cpu_from_float_isa(uint32_t act_type, hr_isa isa)
{
    const hr_type_traits *t = hr_type_get(act_type);
    if (!t || !t->supported || !t->from_float || t->vec_dot_type != (hr_type)act_type)
        return NULL;
    switch (isa) {
    case HR_ISA_SCALAR:
        return t->from_float;
#ifdef HR_CPU_X86
    case HR_ISA_AVX2:
        return hr_avx2_from_float(act_type);
    case HR_ISA_AVX512:
        return hr_avx512_from_float(act_type);
#endif
    default:
        return NULL;
    }
}

/* Best body at or below `isa`: AVX-512 hosts also run the AVX2 bodies. */
hr_vec_dot_fn hr_cpu_vec_dot(uint32_t type)
{
    for (int i = (int)hr_cpu_isa(); i >= 0; i--) {
        hr_vec_dot_fn f = hr_cpu_vec_dot_isa(type, (hr_isa)i);
        if (f)
            return f;
    }
    return NULL;
}

hr_from_float_fn hr_cpu_from_float(uint32_t act_type)
{
    for (int i = (int)hr_cpu_isa(); i >= 0; i--) {
        hr_from_float_fn f = hr_cpu_from_float_isa(act_type, (hr_isa)i);
        if (f)
            return f;
    }
    return NULL;
}
