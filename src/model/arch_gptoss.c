/* arch_gptoss.c - gpt-oss (20b / 120b): alternating sliding-window (even
 * layers) and full attention with their own RoPE bases, YaRN, attention
 * sinks, biases everywhere, post_attention_norm as the pre-FFN norm, and
 * k of E experts with biases: top-k of the router logits, a softmax over
 * the k, clamped SwiGLU (alpha 1.702, limit 7: the architecture's
 * constants, not in the file). */
#include <stdio.h>

#include "model/model_impl.h"

static hr_status fill(hr_loader *l, hr_model *m)
{
    hr_hparams *hp = &m->hp;
    hr_status st;
    int32_t n_ff_exp = 0, window = 0;
    if ((st = hr_ld_moe_counts(l, m, &n_ff_exp)) ||
        (st = hr_ld_int(l, "attention.sliding_window", &window, true, 1, 1 << 30)))
        return st;
    hp->rope_style = HR_ROPE_NEOX;
    hp->rope[1] = hp->rope[0]; /* the same scaling with the sliding layers' base (default: the same base) */
    if ((st = hr_ld_float(l, "rope.freq_base_swa", &hp->rope[1].base, false)))
        return st;
    hp->n_rope = 2;
    hp->router = HR_ROUTE_TOPK_SOFTMAX;
    hp->act = HR_ACT_SWIGLU_CLAMP;
    hp->act_alpha = 1.702f;
    hp->act_limit = 7.0f;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        hr_layer_desc *d = &m->desc[i];
        if (i % 2 == 0) {
            d->attn = HR_ATTN_WINDOW;
            d->window = window;
            d->rope = 1;
        }
        d->sinks = true;
        d->ffn = HR_FFN_MOE;
        d->n_ff = n_ff_exp;
        char n[96];
        snprintf(n, sizeof n, "blk.%d.attn_sinks.weight", i);
        if ((st = hr_ld_llama_layer(l, m, i, false, "post_attention_norm.weight")) ||
            (st = hr_ld_floats(l, &m->layers[i].sinks, n, d->n_head, 1, true)) ||
            (st = hr_ld_moe_layer(l, m, i, true, false)))
            return st;
    }
    return HR_OK;
}

const hr_arch_family hr_arch_gptoss = { "gpt-oss", fill };
