/* arch_qwen3moe.c - Qwen3 mixture of experts (Qwen3-30B-A3B, Qwen3-235B-A22B):
 * qwen3 attention (per-head Q/K norms, NeoX RoPE) and, on every layer, k of
 * E SwiGLU experts chosen by a softmax router, the k weights renormalised. */
#include "model/model_impl.h"

static hr_status fill(hr_loader *l, hr_model *m)
{
    hr_hparams *hp = &m->hp;
    hr_status st;
    int32_t n_ff_exp = 0;
    if ((st = hr_ld_moe_counts(l, m, &n_ff_exp)))
        return st;
    hp->rope_style = HR_ROPE_NEOX;
    hp->router = HR_ROUTE_SOFTMAX_TOPK;
    hp->router_renorm = true;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        hr_layer_desc *d = &m->desc[i];
        d->qk_norm = HR_QKNORM_RMS;
        d->ffn = HR_FFN_MOE;
        d->n_ff = n_ff_exp;
        if ((st = hr_ld_llama_layer(l, m, i, false, NULL)) || (st = hr_ld_moe_layer(l, m, i, false, false)))
            return st;
    }
    return HR_OK;
}

const hr_arch_family hr_arch_qwen3moe = { "qwen3moe", fill };
