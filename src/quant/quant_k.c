/* quant_k.c - the 256-element super-block ("K") types Q2_K..Q6_K and the
 * Q8_K activation format they are multiplied with.
 *
 * Element order, per type (e = 0..255 inside a super-block):
 *  Q2_K/Q3_K: e = 128h + 32j + l -> bits 2j..2j+1 of qs[32h + l]; Q3_K's
 *             third bit is bit (4h + j) of hmask[l]; scale group e/16.
 *  Q4_K/Q5_K: e = 64c + 32u + l -> nibble u of qs[32c + l]; Q5_K's fifth
 *             bit is bit (2c + u) of qh[l]; scale/min group e/32.
 *  Q6_K:      e = 128h + 32k + l -> nibble (k>>1) of ql[64h + 32(k&1) + l],
 *             high bits 2k..2k+1 of qh[32h + l]; scale group e/16.
 * Dequantisation products are formed in float in the same order as the GGML
 * reference (scale * sub-scale first, then times the quant, then minus the
 * min product) so results match GGML bit for bit. Dot products sum integers
 * inside a super-block and accumulate blocks in float; the mins go through
 * Q8_K's per-16 sums. */
#include "quant/quant_impl.h"

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static float inv_or_zero(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

/* ---- Q8_K ---- */

void hr_q8_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q8_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        for (int j = 0; j < HR_QK_K; j++)
            dst[i * HR_QK_K + j] = b.d * (float)b.qs[j];
    }
}

/* llama.cpp's Q8_K quantiser: the signed value of largest magnitude maps to
 * -127 (so d may be negative), rounding to nearest even. */
void hr_q8_k_from_float(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        hr_block_q8_k b;
        memset(&b, 0, sizeof b);
        const float mx = hr_signed_absmax(x, HR_QK_K);
        if (mx != 0.0f) {
            const float iscale = -127.0f / mx;
            for (int j = 0; j < HR_QK_K; j++)
                b.qs[j] = (int8_t)clampi(hr_nearest_int(iscale * x[j]), -127, 127);
            for (int g = 0; g < 16; g++) {
                int sum = 0;
                for (int l = 0; l < 16; l++)
                    sum += b.qs[16 * g + l];
                b.bsums[g] = (int16_t)sum;
            }
            b.d = 1.0f / iscale;
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q2_K ---- */

static int q2k_quant(const hr_block_q2_k *b, int e)
{
    int h = e >> 7, j = (e >> 5) & 3, l = e & 31;
    return (b->qs[32 * h + l] >> (2 * j)) & 3;
}

void hr_q2_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q2_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d), dmin = hr_load_f16(b.dmin);
        float *y = dst + i * HR_QK_K;
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)(b.scales[g] & 0x0f);
            const float ml = dmin * (float)(b.scales[g] >> 4);
            for (int l = 0; l < 16; l++)
                y[16 * g + l] = dl * (float)q2k_quant(&b, 16 * g + l) - ml;
        }
    }
}

void hr_q2_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q2_k x;
        hr_block_q8_k y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            int gs = 0;
            for (int l = 0; l < 16; l++)
                gs += q2k_quant(&x, 16 * g + l) * y.qs[16 * g + l];
            isum += (x.scales[g] & 0x0f) * gs;
            msum += (x.scales[g] >> 4) * y.bsums[g];
        }
        const float dall = y.d * hr_load_f16(x.d), dmin = y.d * hr_load_f16(x.dmin);
        sum += dall * (float)isum - dmin * (float)msum;
    }
    *s = sum;
}

void hr_q2_k_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        float sc[16], mn[16], smax = 0.0f, mmax = 0.0f;
        for (int g = 0; g < 16; g++) {
            float lo = 0.0f, hi = 0.0f; /* min <= 0 <= max keeps mins non-negative */
            for (int l = 0; l < 16; l++) {
                lo = fminf(lo, x[16 * g + l]);
                hi = fmaxf(hi, x[16 * g + l]);
            }
            sc[g] = (hi - lo) / 3.0f;
            mn[g] = -lo;
            smax = fmaxf(smax, sc[g]);
            mmax = fmaxf(mmax, mn[g]);
        }
        hr_block_q2_k b;
        memset(&b, 0, sizeof b);
        b.d = hr_f32_to_f16(smax / 15.0f);
        b.dmin = hr_f32_to_f16(mmax / 15.0f);
        const float d = hr_load_f16(b.d), dmin = hr_load_f16(b.dmin);
        const float id = inv_or_zero(d), idmin = inv_or_zero(dmin);
        for (int g = 0; g < 16; g++) {
            int qs = clampi(hr_nearest_int(sc[g] * id), 0, 15);
            int qm = clampi(hr_nearest_int(mn[g] * idmin), 0, 15);
            b.scales[g] = (uint8_t)(qs | qm << 4);
            const float dl = d * (float)qs, ml = dmin * (float)qm, il = inv_or_zero(dl);
            for (int l = 0; l < 16; l++) {
                int e = 16 * g + l;
                int q = clampi(hr_nearest_int((x[e] + ml) * il), 0, 3);
                b.qs[32 * (e >> 7) + (e & 31)] |= (uint8_t)(q << (2 * ((e >> 5) & 3)));
            }
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q3_K ---- */

static int q3k_quant(const hr_block_q3_k *b, int e)
{
    int h = e >> 7, j = (e >> 5) & 3, l = e & 31;
    int lo = (b->qs[32 * h + l] >> (2 * j)) & 3;
    int hb = (b->hmask[l] >> (4 * h + j)) & 1;
    return lo - (hb ? 0 : 4);
}

void hr_q3_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q3_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        int8_t sc[16];
        hr_k3_scales(b.scales, sc);
        const float d = hr_load_f16(b.d);
        float *y = dst + i * HR_QK_K;
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)sc[g];
            for (int l = 0; l < 16; l++)
                y[16 * g + l] = dl * (float)q3k_quant(&b, 16 * g + l);
        }
    }
}

void hr_q3_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q3_k x;
        hr_block_q8_k y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int8_t sc[16];
        hr_k3_scales(x.scales, sc);
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int gs = 0;
            for (int l = 0; l < 16; l++)
                gs += q3k_quant(&x, 16 * g + l) * y.qs[16 * g + l];
            isum += sc[g] * gs;
        }
        sum += hr_load_f16(x.d) * y.d * (float)isum;
    }
    *s = sum;
}

void hr_q3_k_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        float sc[16];
        for (int g = 0; g < 16; g++) /* signed: the extreme value maps to -4 */
            sc[g] = hr_signed_absmax(x + 16 * g, 16) / -4.0f;
        hr_block_q3_k b;
        memset(&b, 0, sizeof b);
        b.d = hr_f32_to_f16(hr_signed_absmax(sc, 16) / -32.0f);
        const float d = hr_load_f16(b.d), id = inv_or_zero(d);
        for (int g = 0; g < 16; g++) {
            int qs = clampi(hr_nearest_int(sc[g] * id), -32, 31);
            int v = qs + 32;
            if (g < 8)
                b.scales[g] |= (uint8_t)(v & 0x0f);
            else
                b.scales[g - 8] |= (uint8_t)((v & 0x0f) << 4);
            b.scales[8 + (g & 3)] |= (uint8_t)((v >> 4) << (2 * (g >> 2)));
            const float il = inv_or_zero(d * (float)qs);
            for (int l = 0; l < 16; l++) {
                int e = 16 * g + l;
                int q = clampi(hr_nearest_int(x[e] * il), -4, 3) + 4;
                int h = e >> 7, j = (e >> 5) & 3, ll = e & 31;
                b.qs[32 * h + ll] |= (uint8_t)((q & 3) << (2 * j));
                if (q & 4)
                    b.hmask[ll] |= (uint8_t)(1u << (4 * h + j));
            }
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q4_K / Q5_K shared scale packing ---- */

static void k4_pack_scales(uint8_t s[12], const int sc[8], const int mn[8])
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | (mn[j + 4] & 0x0f) << 4);
    }
}

/* Asymmetric per-32 quantisation shared by Q4_K (qmax 15) and Q5_K (31):
 * fills q[256], the 6-bit scales and mins, and the two fp16 super scales. */
static void k45_quantize(const float *x, int qmax, int q[256], int sc[8], int mn[8], hr_f16 *dh, hr_f16 *dminh)
{
    float fs[8], fm[8], smax = 0.0f, mmax = 0.0f;
    for (int g = 0; g < 8; g++) {
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[32 * g + l]);
            hi = fmaxf(hi, x[32 * g + l]);
        }
        fs[g] = (hi - lo) / (float)qmax;
        fm[g] = -lo;
        smax = fmaxf(smax, fs[g]);
        mmax = fmaxf(mmax, fm[g]);
    }
    *dh = hr_f32_to_f16(smax / 63.0f);
    *dminh = hr_f32_to_f16(mmax / 63.0f);
    const float d = hr_load_f16(*dh), dmin = hr_load_f16(*dminh);
    const float id = inv_or_zero(d), idmin = inv_or_zero(dmin);
    for (int g = 0; g < 8; g++) {
        sc[g] = clampi(hr_nearest_int(fs[g] * id), 0, 63);
        mn[g] = clampi(hr_nearest_int(fm[g] * idmin), 0, 63);
        const float dl = d * (float)sc[g], ml = dmin * (float)mn[g], il = inv_or_zero(dl);
        for (int l = 0; l < 32; l++)
            q[32 * g + l] = clampi(hr_nearest_int((x[32 * g + l] + ml) * il), 0, qmax);
    }
}

/* ---- Q4_K ---- */

static int q4k_quant(const hr_block_q4_k *b, int e)
{
    int c = e >> 6, u = (e >> 5) & 1, l = e & 31;
    return (b->qs[32 * c + l] >> (4 * u)) & 0x0f;
}

void hr_q4_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q4_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d), dmin = hr_load_f16(b.dmin);
        float *y = dst + i * HR_QK_K;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, mn;
            hr_k4_scale_min(b.scales, g, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            for (int l = 0; l < 32; l++)
                y[32 * g + l] = dl * (float)q4k_quant(&b, 32 * g + l) - ml;
        }
    }
}

void hr_q4_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q4_k x;
        hr_block_q8_k y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0, msum = 0;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, mn;
            hr_k4_scale_min(x.scales, g, &sc, &mn);
            int gs = 0;
            for (int l = 0; l < 32; l++)
                gs += q4k_quant(&x, 32 * g + l) * y.qs[32 * g + l];
            isum += sc * gs;
            msum += mn * (y.bsums[2 * g] + y.bsums[2 * g + 1]);
        }
        const float d = hr_load_f16(x.d) * y.d, dmin = hr_load_f16(x.dmin) * y.d;
        sum += d * (float)isum - dmin * (float)msum;
    }
    *s = sum;
}

void hr_q4_k_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        int q[256], sc[8], mn[8];
        hr_block_q4_k b;
        memset(&b, 0, sizeof b);
        k45_quantize(src + i * HR_QK_K, 15, q, sc, mn, &b.d, &b.dmin);
        k4_pack_scales(b.scales, sc, mn);
        for (int e = 0; e < HR_QK_K; e++)
            b.qs[32 * (e >> 6) + (e & 31)] |= (uint8_t)(q[e] << (4 * ((e >> 5) & 1)));
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q5_K ---- */

static int q5k_quant(const hr_block_q5_k *b, int e)
{
    int c = e >> 6, u = (e >> 5) & 1, l = e & 31;
    int lo = (b->qs[32 * c + l] >> (4 * u)) & 0x0f;
    int hb = (b->qh[l] >> (2 * c + u)) & 1;
    return lo | hb << 4;
}

void hr_q5_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q5_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d), dmin = hr_load_f16(b.dmin);
        float *y = dst + i * HR_QK_K;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, mn;
            hr_k4_scale_min(b.scales, g, &sc, &mn);
            const float dl = d * (float)sc, ml = dmin * (float)mn;
            for (int l = 0; l < 32; l++)
                y[32 * g + l] = dl * (float)q5k_quant(&b, 32 * g + l) - ml;
        }
    }
}

void hr_q5_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q5_k x;
        hr_block_q8_k y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0, msum = 0;
        for (int g = 0; g < 8; g++) {
            uint8_t sc, mn;
            hr_k4_scale_min(x.scales, g, &sc, &mn);
            int gs = 0;
            for (int l = 0; l < 32; l++)
                gs += q5k_quant(&x, 32 * g + l) * y.qs[32 * g + l];
            isum += sc * gs;
            msum += mn * (y.bsums[2 * g] + y.bsums[2 * g + 1]);
        }
        const float d = hr_load_f16(x.d) * y.d, dmin = hr_load_f16(x.dmin) * y.d;
        sum += d * (float)isum - dmin * (float)msum;
    }
    *s = sum;
}

void hr_q5_k_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        int q[256], sc[8], mn[8];
        hr_block_q5_k b;
        memset(&b, 0, sizeof b);
        k45_quantize(src + i * HR_QK_K, 31, q, sc, mn, &b.d, &b.dmin);
        k4_pack_scales(b.scales, sc, mn);
        for (int e = 0; e < HR_QK_K; e++) {
            int c = e >> 6, u = (e >> 5) & 1, l = e & 31;
            b.qs[32 * c + l] |= (uint8_t)((q[e] & 0x0f) << (4 * u));
            if (q[e] & 16)
                b.qh[l] |= (uint8_t)(1u << (2 * c + u));
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}

/* ---- Q6_K ---- */

static int q6k_quant(const hr_block_q6_k *b, int e)
{
    int h = e >> 7, k = (e >> 5) & 3, l = e & 31;
    int lo = (b->ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
    int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}

void hr_q6_k_to_float(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q6_k b;
        memcpy(&b, p + i * sizeof b, sizeof b);
        const float d = hr_load_f16(b.d);
        float *y = dst + i * HR_QK_K;
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)b.scales[g];
            for (int l = 0; l < 16; l++)
                y[16 * g + l] = dl * (float)q6k_quant(&b, 16 * g + l);
        }
    }
}

void hr_q6_k_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        hr_block_q6_k x;
        hr_block_q8_k y;
        memcpy(&x, pw + i * sizeof x, sizeof x);
        memcpy(&y, pa + i * sizeof y, sizeof y);
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int gs = 0;
            for (int l = 0; l < 16; l++)
                gs += q6k_quant(&x, 16 * g + l) * y.qs[16 * g + l];
            isum += x.scales[g] * gs;
        }
        sum += hr_load_f16(x.d) * y.d * (float)isum;
    }
    *s = sum;
}

void hr_q6_k_quantize(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        float sc[16];
        for (int g = 0; g < 16; g++) /* signed: the extreme value maps to -32 */
            sc[g] = hr_signed_absmax(x + 16 * g, 16) / -32.0f;
        hr_block_q6_k b;
        memset(&b, 0, sizeof b);
        b.d = hr_f32_to_f16(hr_signed_absmax(sc, 16) / -128.0f);
        const float d = hr_load_f16(b.d), id = inv_or_zero(d);
        for (int g = 0; g < 16; g++) {
            int qs = clampi(hr_nearest_int(sc[g] * id), -128, 127);
            b.scales[g] = (int8_t)qs;
            const float il = inv_or_zero(d * (float)qs);
            for (int l = 0; l < 16; l++) {
                int e = 16 * g + l;
                int q = clampi(hr_nearest_int(x[e] * il), -32, 31) + 32;
                int h = e >> 7, k = (e >> 5) & 3, ll = e & 31;
                b.ql[64 * h + 32 * (k & 1) + ll] |= (uint8_t)((q & 0x0f) << (4 * (k >> 1)));
                b.qh[32 * h + ll] |= (uint8_t)((q >> 4) << (2 * k));
            }
        }
        memcpy(p + i * sizeof b, &b, sizeof b);
    }
}
