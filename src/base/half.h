/* half.h - IEEE binary16 and bfloat16 conversions (bit-exact, portable C).
 *
 * The conversions round to nearest-even like the F16C instructions and like
 * ggml's reference code, so weights and activations round-trip identically
 * to the files' producers. */
#ifndef HR_BASE_HALF_H
#define HR_BASE_HALF_H

#include <stdint.h>
#include <string.h>

typedef uint16_t hr_f16;
typedef uint16_t hr_bf16;

static inline float hr_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t hr_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float hr_f16_to_f32(hr_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0)
            return hr_bits_to_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31)
        return hr_bits_to_f32(sign | 0x7f800000u | (man << 13));
    return hr_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline hr_f16 hr_f32_to_f16(float f)
{
    uint32_t x = hr_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (hr_f16)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (hr_f16)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below smallest normal 2^-14: subnormal or zero */
        if (ax < 0x33000000u) /* < 2^-25: rounds to zero */
            return (hr_f16)sign;
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (hr_f16)(sign | half);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1); /* round to nearest even */
    return (hr_f16)(sign | ((r - 0x38000000u) >> 13));
}

static inline float hr_bf16_to_f32(hr_bf16 h) { return hr_bits_to_f32((uint32_t)h << 16); }

static inline hr_bf16 hr_f32_to_bf16(float f)
{
    uint32_t u = hr_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep quiet */
        return (hr_bf16)((u >> 16) | 64);
    return (hr_bf16)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

#endif
