/* arch_phi3.c - Phi-3 / Phi-3.5 / Phi-4 (and Phi-4-mini): fused attn_qkv and
 * gate+up, NeoX RoPE on the first rope.dimension_count values, LongRoPE
 * (rope_factors_short / rope_factors_long: pair i's frequency divided by
 * factor[i]; the long factors once the context exceeds the original one,
 * and cos/sin scaled by rope.scaling.attn_factor). Sliding-window attention
 * is never used for this family whatever attention.sliding_window says (as
 * in llama.cpp). */
#include "model/model_impl.h"

static hr_status fill(hr_loader *l, hr_model *m)
{
    hr_hparams *hp = &m->hp;
    hr_status st;
    if (hp->n_ff < 1)
        return hr_ld_fail(l, "missing metadata 'phi3.feed_forward_length'");
    hp->rope_style = HR_ROPE_NEOX;
    m->rope_long_ctx = hp->n_ctx_train;
    if ((st = hr_ld_int(l, "rope.scaling.original_context_length", &m->rope_long_ctx, false, 1, 1 << 30)) ||
        (st = hr_ld_float(l, "rope.scaling.attn_factor", &hp->rope[0].attn_factor, false)))
        return st;
    if (!m->rope_freqs &&
        ((st = hr_ld_floats(l, &m->rope_freqs, "rope_factors_short.weight", hp->rope_dim / 2, 1, false)) ||
         (st = hr_ld_floats(l, &m->rope_freqs_long, "rope_factors_long.weight", hp->rope_dim / 2, 1, false))))
        return st;
    for (int32_t i = 0; i < hp->n_layer; i++)
        if ((st = hr_ld_llama_layer(l, m, i, true, NULL)))
            return st;
    return HR_OK;
}

const hr_arch_family hr_arch_phi3 = { "phi3", fill };
