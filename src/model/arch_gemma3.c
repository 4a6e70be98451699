/* arch_gemma3.c - Gemma 3 (1B-27B): embeddings scaled by sqrt(hidden), local
 * (sliding window) : global layers 5 : 1 (layer il is local iff
 * il % pattern < pattern - 1, pattern 6 unless the file says otherwise) with
 * their own RoPE bases (linear scaling on the global ones only), per-head
 * Q/K norms, sandwich norms, GELU-tanh, final logit soft-cap. The query
 * scale is 1/sqrt(head size), except that a 62-layer file is Gemma-3-27B,
 * whose query_pre_attn_scalar is hidden / heads (llama.cpp's rule; the file
 * does not carry it). The converter has already added Gemma's "1 +" to the
 * norm weights. */
#include <math.h>
#include <stdio.h>

#include "model/model_impl.h"

static hr_status fill(hr_loader *l, hr_model *m)
{
    hr_hparams *hp = &m->hp;
    hr_status st;
    int32_t window = 0, pattern = 6;
    if ((st = hr_ld_int(l, "attention.sliding_window", &window, true, 1, 1 << 30)) ||
        (st = hr_ld_int(l, "attention.sliding_window_pattern", &pattern, false, 1, 4096)) ||
        (st = hr_ld_float(l, "final_logit_softcapping", &hp->final_softcap, false)))
        return st;
    if (hp->n_ff < 1)
        return hr_ld_fail(l, "missing metadata 'gemma3.feed_forward_length'");
    hp->rope_style = HR_ROPE_NEOX;
    hp->rope[1] = (hr_rope_cfg){ .base = 10000.0f, .freq_scale = 1.0f, .attn_factor = 1.0f,
                                 .n_ctx_orig = hp->n_ctx_train };
    if ((st = hr_ld_float(l, "rope.freq_base_swa", &hp->rope[1].base, false)))
        return st;
    hp->n_rope = 2;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    hp->post_norms = true;
    hp->act = HR_ACT_GELU_TANH;
    const float q_scale = hp->n_layer == 62 ? 1.0f / sqrtf((float)(hp->n_embd / hp->n_head))
                                            : 1.0f / sqrtf((float)hp->head_dim);
    for (int32_t i = 0; i < hp->n_layer; i++) {
        hr_layer_desc *d = &m->desc[i];
        if (i % pattern < pattern - 1) {
            d->attn = HR_ATTN_WINDOW;
            d->window = window;
            d->rope = 1;
        }
        d->qk_norm = HR_QKNORM_RMS;
        d->q_scale = q_scale;
        hr_layer_weights *L = &m->layers[i];
        char n[96];
        if ((st = hr_ld_llama_layer(l, m, i, true, NULL)))
            return st;
        snprintf(n, sizeof n, "blk.%d.post_attention_norm.weight", i);
        if ((st = hr_ld_floats(l, &L->post_attn_norm, n, hp->n_embd, 1, true)))
            return st;
        snprintf(n, sizeof n, "blk.%d.post_ffw_norm.weight", i);
        if ((st = hr_ld_floats(l, &L->post_ffn_norm, n, hp->n_embd, 1, true)))
            return st;
    }
    return HR_OK;
}

const hr_arch_family hr_arch_gemma3 = { "gemma3", fill };
