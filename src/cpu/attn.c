/* attn.c - the portable streaming attention and the kernel choice. */
#include "cpu/attn.h"

#include <math.h>
#include <string.h>

#include "cpu/cpu.h"
#include "cpu/kernels.h"

#define TILE 16

static void attn_one(const float *q, int32_t group, int32_t d, int32_t dv, float scale, const hr_attn_kv *kv,
                     int32_t lo, int32_t n_pos, const float *sinks, float *out)
{
    for (int32_t g = 0; g < group; g++) {
        const float *qg = q + (size_t)g * d;
        float *o = out + (size_t)g * dv;
        float m = -INFINITY, l = 0.0f;
        memset(o, 0, (size_t)dv * sizeof(float));
        for (int32_t p0 = lo, n; p0 < n_pos; p0 += n) {
            /* a tile: at most TILE positions, inside one block */
            const int32_t blk = p0 / kv->block_tokens, in = p0 % kv->block_tokens;
            n = n_pos - p0 < TILE ? n_pos - p0 : TILE;
            if (in + n > kv->block_tokens)
                n = kv->block_tokens - in;
            const float *kb = kv->k[blk] + (size_t)in * kv->k_stride;
            const float *vb = kv->v[blk] + (size_t)in * kv->v_stride;
            float s[TILE], mt = -INFINITY;
            for (int32_t j = 0; j < n; j++) {
                const float *kr = kb + (size_t)j * kv->k_stride;
                float acc = 0.0f;
                for (int32_t i = 0; i < d; i++)
                    acc += qg[i] * kr[i];
                s[j] = acc * scale;
                if (s[j] > mt)
                    mt = s[j];
            }
            if (mt > m) {
                const float c = expf(m - mt);
                l *= c;
                for (int32_t i = 0; i < dv; i++)
                    o[i] *= c;
                m = mt;
            }
            for (int32_t j = 0; j < n; j++) {
                const float pj = expf(s[j] - m);
                const float *vr = vb + (size_t)j * kv->v_stride;
                l += pj;
                for (int32_t i = 0; i < dv; i++)
                    o[i] += pj * vr[i];
            }
        }
        if (sinks) { /* the sink's logit joins the denominator only */
            const float sk = sinks[g];
            if (sk > m) {
                const float c = expf(m - sk);
                l *= c;
                for (int32_t i = 0; i < dv; i++)
                    o[i] *= c;
                m = sk;
            }
            l += expf(sk - m);
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int32_t i = 0; i < dv; i++)
            o[i] *= inv;
    }
}

void hr_attn_ref(const float *q, size_t q_stride, int32_t n_tok, const int32_t *n_pos, int32_t group, int32_t d,
                 int32_t dv, float scale, const hr_attn_kv *kv, float *out, size_t out_stride)
{
    for (int32_t t = 0; t < n_tok; t++)
        attn_one(q + (size_t)t * q_stride, group, d, dv, scale, kv, 0, n_pos[t], NULL, out + (size_t)t * out_stride);
}

void hr_attn_ref_ex(const float *q, size_t q_stride, int32_t n_tok, const int32_t *lo, const int32_t *n_pos,
                    const float *sinks, int32_t group, int32_t d, int32_t dv, float scale, const hr_attn_kv *kv,
                    float *out, size_t out_stride)
{
    for (int32_t t = 0; t < n_tok; t++)
        attn_one(q + (size_t)t * q_stride, group, d, dv, scale, kv, lo ? lo[t] : 0, n_pos[t], sinks,
                 out + (size_t)t * out_stride);
}

hr_attn_fn hr_cpu_attn(int32_t group, int32_t d, int32_t dv)
{
#ifdef HR_CPU_X86
    if (hr_cpu_isa() >= HR_ISA_AVX512) {
        hr_attn_fn f = hr_avx512_attn(group, d, dv);
        if (f)
            return f;
    }
#endif
    (void)group;
    (void)d;
    (void)dv;
    return hr_attn_ref;
}
