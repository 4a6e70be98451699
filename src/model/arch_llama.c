/* arch_llama.c - the llama-shaped dense families: llama (Llama 2/3, Mistral
 * 7B, TinyStories), qwen2 (Qwen2/2.5, R1-Distill-Qwen: Q/K/V biases) and
 * qwen3 (per-head Q/K norms). Everything but the RoPE pairing and the
 * optional tensors is common (src/model/model.c). */
#include "model/model_impl.h"

static hr_status fill_dense(hr_loader *l, hr_model *m, hr_rope_style rope, hr_qk_norm qk, bool biases)
{
    hr_status st;
    m->hp.rope_style = rope;
    if (m->hp.n_ff < 1)
        return hr_ld_fail(l, "missing metadata '%s.feed_forward_length'", m->hp.arch_name);
    for (int32_t i = 0; i < m->hp.n_layer; i++) {
        m->desc[i].qk_norm = qk;
        if ((st = hr_ld_llama_layer(l, m, i, true, NULL)))
            return st;
        const hr_layer_weights *L = &m->layers[i];
        if (biases && (!L->bq || !L->bk || !L->bv))
            return hr_ld_fail(l, "missing tensor 'blk.%d.attn_%c.bias'", i, !L->bq ? 'q' : !L->bk ? 'k' : 'v');
    }
    return HR_OK;
}

static hr_status fill_llama(hr_loader *l, hr_model *m) { return fill_dense(l, m, HR_ROPE_NORM, HR_QKNORM_NONE, false); }
static hr_status fill_qwen2(hr_loader *l, hr_model *m) { return fill_dense(l, m, HR_ROPE_NEOX, HR_QKNORM_NONE, true); }
static hr_status fill_qwen3(hr_loader *l, hr_model *m) { return fill_dense(l, m, HR_ROPE_NEOX, HR_QKNORM_RMS, false); }

const hr_arch_family hr_arch_llama = { "llama", fill_llama };
const hr_arch_family hr_arch_qwen2 = { "qwen2", fill_qwen2 };
const hr_arch_family hr_arch_qwen3 = { "qwen3", fill_qwen3 };
