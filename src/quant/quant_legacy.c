/* quant_legacy.c - the 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, IQ4_NL, MXFP4 (weights) and Q8_0, Q8_1 (activations).
 *
 * Element order in a 4-bit block: byte j holds element j in its low nibble
 * and element j+16 in its high nibble. Q5 types keep the fifth bits in a
 * little-endian 32-bit word, bit j for element j. */
#include "quant/quant_impl.h"

const int8_t hr_iq4nl_values[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

/* E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 doubled; codes 8..15 negative. */
const int8_t hr_mxfp4_values[16] = {
    0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
};

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static uint32_t load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void store_qh(uint8_t qh[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        qh[i] = (uint8_t)(v >> (8 * i));
}

/* Minimum and maximum of x[0..k). */
static void min_max(const float *x, int k, float *mn, float *mx)
{
    *mn = x[0];
    *mx = x[0];
    for (int j = 1; j < k; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

static float inv_or_zero(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

/* ---- Q4_0 ---- */

void hr_q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q4_0 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b.qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((b.qs[j] >> 4) - 8) * d;
        }
    }
}

void hr_q4_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q4_0 x;
        hr_block_q8_0 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += ((x.qs[j] & 0x0f) - 8) * y.qs[j] + ((x.qs[j] >> 4) - 8) * y.qs[j + 16];
        sum += (float)isum * hr_load_f16(x.d) * hr_load_f16(y.d);
    }
    *s = sum;
}

void hr_q4_0_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        hr_block_q4_0 b;
        b.d = hr_f32_to_f16(hr_signed_absmax(x, HR_QK32) / -8.0f);
        const float id = inv_or_zero(hr_load_f16(b.d));
        for (int j = 0; j < 16; j++) {
            int lo = clampi(hr_nearest_int(x[j] * id) + 8, 0, 15);
            int hi = clampi(hr_nearest_int(x[j + 16] * id) + 8, 0, 15);
            b.qs[j] = (uint8_t)(lo | hi << 4);
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q4_1 ---- */

void hr_q4_1_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q4_1 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d), m = hr_load_f16(b.m);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b.qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(b.qs[j] >> 4) * d + m;
        }
    }
}

void hr_q4_1_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q4_1 x;
        hr_block_q8_1 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (x.qs[j] & 0x0f) * y.qs[j] + (x.qs[j] >> 4) * y.qs[j + 16];
        /* sum(q*d + m) * a = d*da*sum(q*qa) + m * (da*sum(qa)) */
        sum += (hr_load_f16(x.d) * hr_load_f16(y.d)) * (float)isum + hr_load_f16(x.m) * hr_load_f16(y.s);
    }
    *s = sum;
}

void hr_q4_1_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        float mn, mx;
        min_max(x, HR_QK32, &mn, &mx);
        hr_block_q4_1 b;
        b.d = hr_f32_to_f16((mx - mn) / 15.0f);
        b.m = hr_f32_to_f16(mn);
        const float id = inv_or_zero(hr_load_f16(b.d)), m = hr_load_f16(b.m);
        for (int j = 0; j < 16; j++) {
            int lo = clampi(hr_nearest_int((x[j] - m) * id), 0, 15);
            int hi = clampi(hr_nearest_int((x[j + 16] - m) * id), 0, 15);
            b.qs[j] = (uint8_t)(lo | hi << 4);
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q5_0 ---- */

void hr_q5_0_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q5_0 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        const uint32_t qh = load_qh(b.qh);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            int lo = (int)((b.qs[j] & 0x0f) | ((qh >> j) & 1) << 4) - 16;
            int hi = (int)((b.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
            y[j] = (float)lo * d;
            y[j + 16] = (float)hi * d;
        }
    }
}

void hr_q5_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q5_0 x;
        hr_block_q8_0 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        const uint32_t qh = load_qh(x.qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (int)((x.qs[j] & 0x0f) | ((qh >> j) & 1) << 4) - 16;
            int hi = (int)((x.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
            isum += lo * y.qs[j] + hi * y.qs[j + 16];
        }
        sum += (float)isum * hr_load_f16(x.d) * hr_load_f16(y.d);
    }
    *s = sum;
}

void hr_q5_0_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        hr_block_q5_0 b;
        b.d = hr_f32_to_f16(hr_signed_absmax(x, HR_QK32) / -16.0f);
        const float id = inv_or_zero(hr_load_f16(b.d));
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int lo = clampi(hr_nearest_int(x[j] * id) + 16, 0, 31);
            int hi = clampi(hr_nearest_int(x[j + 16] * id) + 16, 0, 31);
            b.qs[j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        store_qh(b.qh, qh);
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q5_1 ---- */

void hr_q5_1_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q5_1 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d), m = hr_load_f16(b.m);
        const uint32_t qh = load_qh(b.qh);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            unsigned lo = (b.qs[j] & 0x0fu) | ((qh >> j) & 1) << 4;
            unsigned hi = (b.qs[j] >> 4u) | ((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)lo * d + m;
            y[j + 16] = (float)hi * d + m;
        }
    }
}

void hr_q5_1_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q5_1 x;
        hr_block_q8_1 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        const uint32_t qh = load_qh(x.qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (int)((x.qs[j] & 0x0f) | ((qh >> j) & 1) << 4);
            int hi = (int)((x.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
            isum += lo * y.qs[j] + hi * y.qs[j + 16];
        }
        sum += (hr_load_f16(x.d) * hr_load_f16(y.d)) * (float)isum + hr_load_f16(x.m) * hr_load_f16(y.s);
    }
    *s = sum;
}

void hr_q5_1_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        float mn, mx;
        min_max(x, HR_QK32, &mn, &mx);
        hr_block_q5_1 b;
        b.d = hr_f32_to_f16((mx - mn) / 31.0f);
        b.m = hr_f32_to_f16(mn);
        const float id = inv_or_zero(hr_load_f16(b.d)), m = hr_load_f16(b.m);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int lo = clampi(hr_nearest_int((x[j] - m) * id), 0, 31);
            int hi = clampi(hr_nearest_int((x[j + 16] - m) * id), 0, 31);
            b.qs[j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
            qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
        }
        store_qh(b.qh, qh);
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q8_0 (weights and activations) ---- */

void hr_q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q8_0 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        for (int j = 0; j < HR_QK32; j++)
            dst[i * HR_QK32 + j] = (float)b.qs[j] * d;
    }
}

void hr_q8_0_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q8_0 x, y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int j = 0; j < HR_QK32; j++)
            isum += x.qs[j] * y.qs[j];
        sum += (float)isum * hr_load_f16(x.d) * hr_load_f16(y.d);
    }
    *s = sum;
}

/* llama.cpp's CPU activation quantiser: d = amax/127 (stored as fp16),
 * values scaled by 127/amax and rounded to nearest (ties to even). */
static float q8_block(const float *x, int8_t qs[32], float *d)
{
    float amax = 0.0f;
    for (int j = 0; j < HR_QK32; j++)
        if (fabsf(x[j]) > amax)
            amax = fabsf(x[j]);
    *d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < HR_QK32; j++)
        qs[j] = (int8_t)clampi(hr_nearest_int(x[j] * id), -127, 127);
    return amax;
}

void hr_q8_0_from_float(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q8_0 b;
        float d;
        q8_block(src + i * HR_QK32, b.qs, &d);
        b.d = hr_f32_to_f16(d);
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

void hr_q8_0_quantize(const float *src, void *dst, int64_t n) { hr_q8_0_from_float(src, dst, n); }

/* ---- Q8_1 (activations for Q4_1/Q5_1) ---- */

void hr_q8_1_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q8_1 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        for (int j = 0; j < HR_QK32; j++)
            dst[i * HR_QK32 + j] = (float)b.qs[j] * d;
    }
}

void hr_q8_1_from_float(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_q8_1 b;
        float d;
        q8_block(src + i * HR_QK32, b.qs, &d);
        int sum = 0;
        for (int j = 0; j < HR_QK32; j++)
            sum += b.qs[j];
        b.d = hr_f32_to_f16(d);
        b.s = hr_f32_to_f16(d * (float)sum);
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- IQ4_NL ---- */

void hr_iq4_nl_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_iq4_nl b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)hr_iq4nl_values[b.qs[j] & 0x0f];
            y[j + 16] = d * (float)hr_iq4nl_values[b.qs[j] >> 4];
        }
    }
}

void hr_iq4_nl_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_iq4_nl x;
        hr_block_q8_0 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += hr_iq4nl_values[x.qs[j] & 0x0f] * y.qs[j] + hr_iq4nl_values[x.qs[j] >> 4] * y.qs[j + 16];
        sum += hr_load_f16(x.d) * hr_load_f16(y.d) * (float)isum;
    }
    *s = sum;
}

static int iq4nl_nearest(float v)
{
    int best = 0;
    float bd = fabsf(v - (float)hr_iq4nl_values[0]);
    for (int k = 1; k < 16; k++) {
        float e = fabsf(v - (float)hr_iq4nl_values[k]);
        if (e < bd) {
            bd = e;
            best = k;
        }
    }
    return best;
}

/* Scale so the extreme value hits the table's -127 end, pick the nearest
 * entries, then refit the scale by least squares once and keep the better. */
void hr_iq4_nl_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        float dcand[2];
        dcand[0] = hr_signed_absmax(x, HR_QK32) / -127.0f;
        dcand[1] = dcand[0];
        hr_block_iq4_nl best;
        float best_err = INFINITY;
        for (int c = 0; c < 2; c++) {
            hr_block_iq4_nl b;
            b.d = hr_f32_to_f16(dcand[c]);
            const float d = hr_load_f16(b.d), id = inv_or_zero(d);
            float sxq = 0.0f, sqq = 0.0f, err = 0.0f;
            int idx[32];
            for (int j = 0; j < HR_QK32; j++) {
                idx[j] = iq4nl_nearest(x[j] * id);
                float q = (float)hr_iq4nl_values[idx[j]];
                sxq += x[j] * q;
                sqq += q * q;
                float e = x[j] - d * q;
                err += e * e;
            }
            for (int j = 0; j < 16; j++)
                b.qs[j] = (uint8_t)(idx[j] | idx[j + 16] << 4);
            if (err < best_err) {
                best_err = err;
                best = b;
            }
            if (c == 0 && sqq > 0.0f)
                dcand[1] = sxq / sqq;
        }
        memcpy(p + i * sizeof best, &best, sizeof best);
    }
}

/* ---- MXFP4 (OCP microscaling FP4: one E8M0 exponent per 32 E2M1 codes) ----
 *
 * Block: byte 0 the exponent e, bytes 1..16 the codes, byte j holding element
 * j in its low nibble and element j+16 in its high nibble (as Q4_0). Element
 * = hr_mxfp4_values[code] * 2^(e-128), exact in float. */

void hr_mxfp4_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_mxfp4 b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_e8m0_half(b.e);
        float *y = dst + i * HR_QK32;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)hr_mxfp4_values[b.qs[j] & 0x0f] * d;
            y[j + 16] = (float)hr_mxfp4_values[b.qs[j] >> 4] * d;
        }
    }
}

/* Against Q8_0 activations, as llama.cpp pairs it: per block the exact
 * integer sum of doubled codes times quants, scaled by fp16(d_a) * 2^(e-128)
 * (that product is exact unless it falls below the normal range). */
void hr_mxfp4_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        hr_block_mxfp4 x;
        hr_block_q8_0 y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += hr_mxfp4_values[x.qs[j] & 0x0f] * y.qs[j] + hr_mxfp4_values[x.qs[j] >> 4] * y.qs[j + 16];
        sum += hr_load_f16(y.d) * hr_e8m0_half(x.e) * (float)isum;
    }
    *s = sum;
}

/* The code of the grid value nearest to |x| (0..7) for the scale d: the
 * first magnitude whose float error fabsf(v*d - |x|) is smallest. v*d is
 * exact and rounding is monotone, so the rounded errors fall and then rise
 * along the ascending magnitudes: the scan may stop at the first increase.
 * It gives exactly what a search over all 16 codes in order with a strict
 * "<" gives (llama.cpp's quantiser): a negative code's error for x equals
 * its magnitude's for |x| (round-to-nearest is symmetric), codes 8..15 come
 * after 0..7, and for x >= 0 a negative code is never below code 0's error
 * |x| (nor a positive one for x < 0). */
static int mxfp4_magnitude(float ax, float d)
{
    int best = 0;
    float best_err = ax; /* fabsf(0 * d - ax) */
    for (int k = 1; k < 8; k++) {
        const float err = fabsf((float)hr_mxfp4_values[k] * d - ax);
        if (err < best_err) {
            best = k;
            best_err = err;
        } else if (err > best_err) {
            break;
        }
    }
    return best;
}

static int mxfp4_code(float x, float d)
{
    const int m = mxfp4_magnitude(fabsf(x), d);
    return x < 0.0f && m != 0 ? m + 8 : m; /* NaN: every comparison false, code 0 */
}

/* The same codes by thresholds, for 32 <= e <= 253 (every real weight
 * block). With d = 2^(e-128) normal and far from the subnormals, scaling by
 * d commutes with rounding, so compare in units of d: q = |x|/d is exact and
 * lies in [0, 16). For q between grid values v_k <= q <= v_k+1 (each grid
 * value at most twice the one before) both differences q - v_k and
 * v_k+1 - q are exact (Sterbenz); any other grid value is at least 1 further
 * off, which a rounding of at most 2^-20 cannot hide. So the search above
 * picks the exact nearest grid value, the lower one on a tie: the count of
 * midpoints (0.5, 1.5, 2.5, 3.5, 5, 7, 10) strictly below q. */
static int mxfp4_code_fast(float x, float inv_d)
{
    const float q = fabsf(x) * inv_d;
    const int m = (q > 0.5f) + (q > 1.5f) + (q > 2.5f) + (q > 3.5f) + (q > 5.0f) + (q > 7.0f) + (q > 10.0f);
    return x < 0.0f && m != 0 ? m + 8 : m;
}

/* llama.cpp's MXFP4 quantiser (quantize_row_mxfp4_ref; llama-quantize uses
 * it with or without an importance matrix): e = floor(log2f(amax)) - 2 + 127,
 * so amax/2^(e-127) is in [4, 8) and values past 6 times the scale clip to
 * +-6; then each value takes its nearest code. Byte for byte the same for
 * finite input. Where GGML's float-to-uint8 cast is undefined (amax below
 * 2^-125, or infinite) the exponent is clamped to 0..254 here. */
void hr_mxfp4_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        float amax = 0.0f;
        for (int j = 0; j < HR_QK32; j++)
            if (amax < fabsf(x[j]))
                amax = fabsf(x[j]);
        int e = 0;
        if (amax > 0.0f) {
            const float l = floorf(log2f(amax)); /* -149 .. 128, or +inf */
            e = l > 129.0f ? 254 : (int)l + 125;
            e = clampi(e, 0, 254);
        }
        hr_block_mxfp4 b;
        b.e = (uint8_t)e;
        const float d = hr_e8m0_half(b.e);
        if (e >= 32 && e <= 253) {
            const float inv_d = 1.0f / d; /* 2^(128-e), exact */
            for (int j = 0; j < 16; j++)
                b.qs[j] = (uint8_t)(mxfp4_code_fast(x[j], inv_d) | mxfp4_code_fast(x[j + 16], inv_d) << 4);
        } else {
            for (int j = 0; j < 16; j++)
                b.qs[j] = (uint8_t)(mxfp4_code(x[j], d) | mxfp4_code(x[j + 16], d) << 4);
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}
