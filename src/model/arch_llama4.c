/* arch_llama4.c - Llama 4 (Scout / Maverick): MoE layers interleaved with
 * dense ones (every interleave_moe_layer_step-th layer), a shared expert,
 * top-k sigmoid routing whose weight scales the expert's input; RoPE on
 * adjacent pairs with llama3 frequency factors, then a weightless RMS norm
 * of Q and K, and chunked attention (8192) on three of four layers; every
 * 4th layer NoPE: full causal attention, no Q/K norm, queries scaled by the
 * attention temperature 1 + 0.1 ln(floor((p + 1) / 8192) + 1). The chunk,
 * the NoPE step and the temperature constants are llama.cpp's defaults for
 * the architecture (the converter does not write them). */
#include "model/model_impl.h"

static hr_status fill(hr_loader *l, hr_model *m)
{
    hr_hparams *hp = &m->hp;
    hr_status st;
    int32_t n_ff_exp = 0, step = 1, nope_step = 4;
    if ((st = hr_ld_moe_counts(l, m, &n_ff_exp)) ||
        (st = hr_ld_int(l, "interleave_moe_layer_step", &step, false, 1, 4096)) ||
        (st = hr_ld_int(l, "no_rope_layer_step", &nope_step, false, 1, 4096)))
        return st;
    if (hp->n_ff < 1)
        return hr_ld_fail(l, "missing metadata 'llama4.feed_forward_length'");
    hp->rope_style = HR_ROPE_NORM;
    hp->router = HR_ROUTE_SIGMOID_TOPK;
    hp->route_scales_input = true;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        hr_layer_desc *d = &m->desc[i];
        if ((i + 1) % nope_step == 0) {
            d->rope = -1;
            d->temp_scale = 0.1f;
            d->temp_floor = 8192;
        } else {
            d->qk_norm = HR_QKNORM_L2;
            d->attn = HR_ATTN_CHUNKED;
            d->window = 8192;
        }
        const bool moe = (i + 1) % step == 0;
        if (moe) {
            d->ffn = HR_FFN_MOE;
            d->n_ff = n_ff_exp;
            d->n_ff_shexp = n_ff_exp;
        }
        if ((st = hr_ld_llama_layer(l, m, i, !moe, NULL)) || (moe && (st = hr_ld_moe_layer(l, m, i, false, true))))
            return st;
    }
    return HR_OK;
}

const hr_arch_family hr_arch_llama4 = { "llama4", fill };
