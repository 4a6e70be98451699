/* fit.c - memory and decode-speed estimates (see fit.h). */
#include "report/fit.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/quant.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

static const struct {
    const char *name;
    double bits;
    bool mix;
} quants[] = {
    {"F32", 32, false},     {"F16", 16, false},    {"BF16", 16, false},    {"FP8", 8, false},
    {"Q8_0", 8.5, false},   {"Q6_K", 6.5625, false}, {"Q5_K_M", 5.70, true}, {"Q5_K_S", 5.5, true},
    {"Q5_1", 6.0, false},   {"Q5_0", 5.5, false},  {"Q4_K_M", 4.85, true}, {"Q4_K_S", 4.58, true},
    {"Q4_1", 5.0, false},   {"Q4_0", 4.5, false},  {"IQ4_NL", 4.5, false}, {"IQ4_XS", 4.25, false},
    {"MXFP4", 4.25, false}, {"Q3_K_M", 3.91, true}, {"Q3_K_S", 3.5, true},  {"Q2_K", 2.96, true},
    {"INT4", 4.25, false},
};

double hr_quant_bits(const char *q, bool *mix)
{
    if (mix)
        *mix = false;
    for (size_t i = 0; q && i < sizeof quants / sizeof quants[0]; i++)
        if (!strcasecmp(quants[i].name, q)) {
            if (mix)
                *mix = quants[i].mix;
            return quants[i].bits;
        }
    return 0;
}

const char *hr_quant_names(void)
{
    static char buf[256];
    if (!buf[0]) {
        size_t used = 0;
        for (size_t i = 0; i < sizeof quants / sizeof quants[0]; i++)
            used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", i ? " " : "", quants[i].name);
    }
    return buf;
}

double hr_fit_kv_bytes_per_token(const hr_model_spec *s, double kvb)
{
    if (s->attn == HR_ATTN_MLA)
        return (double)s->layers * (double)(s->kv_lora_rank + s->rope_dim + s->indexer_dim) * kvb;
    double per_layer = (double)s->kv_heads * (double)(s->head_dim + (s->head_dim_v ? s->head_dim_v : s->head_dim)) * kvb;
    return (double)(s->kv_layers + s->swa_layers) * per_layer;
}

double hr_fit_kv_bytes_seq(const hr_model_spec *s, double kvb, int64_t n)
{
    if (s->attn == HR_ATTN_MLA)
        return hr_fit_kv_bytes_per_token(s, kvb) * (double)n;
    double per_layer = (double)s->kv_heads * (double)(s->head_dim + (s->head_dim_v ? s->head_dim_v : s->head_dim)) * kvb;
    int64_t w = s->swa_layers ? (n < s->swa_window ? n : s->swa_window) : 0;
    return per_layer * ((double)s->kv_layers * (double)n + (double)s->swa_layers * (double)w);
}

/* Routed-expert parameters from total, active, E and k:
 * total = shared + E*p, active = shared + k*p. */
static double expert_params(const hr_model_spec *s)
{
    if (s->experts <= 0 || s->experts_active >= s->experts)
        return 0;
    double p = (s->params_total - s->params_active) / (double)(s->experts - s->experts_active);
    double e = p * s->experts;
    return e > 0 && e < s->params_total ? e : 0;
}

hr_status hr_fit_model_from_spec(const hr_model_spec *s, const char *quant, hr_fit_model *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    out->spec = *s;
    if (!quant || !*quant)
        quant = s->default_quant[0] ? s->default_quant : "Q4_K_M";
    bool mix = false;
    double bits = hr_quant_bits(quant, &mix);
    if (bits <= 0)
        return hr_err_set(err, HR_ERR_INVALID, "unknown quant type '%s' (known: %s)", quant, hr_quant_names());
    snprintf(out->quant, sizeof out->quant, "%s", quant);
    for (char *p = out->quant; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    double B = bits / 8.0;
    out->params_total = s->params_total;
    out->weights_bytes = s->params_total * B;
    out->expert_bytes = expert_params(s) * B;
    double embd = (s->vocab > 0 && s->hidden > 0) ? (double)s->vocab * (double)s->hidden : 0;
    out->unread_bytes = s->tied ? 0 : embd * B;
    out->flops_params = s->params_active - (s->tied ? 0 : embd);
    if (out->flops_params <= 0)
        out->flops_params = s->params_active;
    return HR_OK;
}

static int32_t meta_i(const hr_gguf *g, const char *arch, const char *key, int64_t dflt)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v = dflt;
    if (!hr_gguf_get_i64(g, full, &v)) {
        /* per-layer arrays (e.g. head_count_kv): the first non-zero entry */
        const hr_gguf_value *a = hr_gguf_get_arr(g, full, HR_GGUF_ARRAY);
        if (a && a->v.arr.elem != HR_GGUF_STRING && a->v.arr.elem != HR_GGUF_ARRAY)
            for (uint64_t i = 0; i < a->v.arr.n; i++)
                if ((v = hr_gguf_arr_i64(a, i)) != 0)
                    break;
    }
    if (v < 0 || v > INT32_MAX)
        v = 0;
    return (int32_t)v;
}

static bool name_has(const hr_gguf_tensor *t, const char *needle)
{
    if (t->name.len >= 256)
        return false;
    char buf[256];
    hr_gguf_str_copy(t->name, buf, sizeof buf);
    return strstr(buf, needle) != NULL;
}

hr_status hr_fit_model_from_gguf(const char *path, hr_fit_model *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    hr_gguf *g = NULL;
    hr_status st = hr_gguf_open(path, &g, err);
    if (st != HR_OK)
        return st;
    hr_model_spec *s = &out->spec;
    char arch[32] = "";
    hr_gguf_str as;
    if (!hr_gguf_get_str(g, "general.architecture", &as) || as.len == 0 || as.len >= sizeof arch) {
        hr_gguf_close(g);
        return hr_err_set(err, HR_ERR_FORMAT, "%s: no general.architecture", path);
    }
    hr_gguf_str_copy(as, arch, sizeof arch);
    snprintf(s->arch, sizeof s->arch, "%s", arch);
    hr_gguf_str ns;
    if (hr_gguf_get_str(g, "general.name", &ns))
        hr_gguf_str_copy(ns, s->display, sizeof s->display);
    const char *base = strrchr(path, '/');
    snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : path);
    if (!s->display[0])
        snprintf(s->display, sizeof s->display, "%s", s->name);
    hr_gguf_str ls;
    if (hr_gguf_get_str(g, "general.license", &ls))
        hr_gguf_str_copy(ls, s->license, sizeof s->license);
    s->layers = meta_i(g, arch, "block_count", 0);
    s->hidden = meta_i(g, arch, "embedding_length", 0);
    s->heads = meta_i(g, arch, "attention.head_count", 0);
    s->kv_heads = meta_i(g, arch, "attention.head_count_kv", s->heads);
    s->head_dim = meta_i(g, arch, "attention.key_length", s->heads ? s->hidden / s->heads : 0);
    s->head_dim_v = meta_i(g, arch, "attention.value_length", s->head_dim);
    if (s->head_dim_v == s->head_dim)
        s->head_dim_v = 0;
    s->ffn = meta_i(g, arch, "feed_forward_length", 0);
    s->context = meta_i(g, arch, "context_length", 0);
    s->experts = meta_i(g, arch, "expert_count", 0);
    s->experts_active = meta_i(g, arch, "expert_used_count", 0);
    int32_t lora = meta_i(g, arch, "attention.kv_lora_rank", 0);
    if (lora > 0) {
        s->attn = HR_ATTN_MLA;
        s->kv_lora_rank = lora;
        s->rope_dim = meta_i(g, arch, "rope.dimension_count", 64);
        s->indexer_dim = meta_i(g, arch, "attention.indexer.key_length", 0);
    }
    /* the layer pattern (sliding-window layers and their window) comes from
     * the model loader's descriptor, the same one the engine runs; a family
     * hearth cannot load yet is counted with every layer attending fully */
    hr_model *hm = NULL;
    if (s->attn == HR_ATTN_GQA && hr_model_load(path, &hm, NULL) == HR_OK) {
        const hr_hparams *hp = hr_model_hparams(hm);
        for (int32_t i = 0; i < hp->n_layer; i++)
            if (hp->layer[i].attn == HR_ATTN_WINDOW) {
                s->swa_layers++;
                s->swa_window = hp->layer[i].window > s->swa_window ? hp->layer[i].window : s->swa_window;
            }
    }
    hr_model_free(hm);
    s->kv_layers = s->layers - s->swa_layers;

    double total = 0, params = 0, experts = 0, expert_params_sum = 0, embd = 0, embd_params = 0;
    bool has_output = false;
    uint32_t dominant = 0;
    double dom_bytes[64] = {0};
    for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
        const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
        double n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (double)t->ne[d];
        total += (double)t->size;
        params += n;
        if (name_has(t, "_exps")) {
            experts += (double)t->size;
            expert_params_sum += n;
        }
        if (hr_gguf_str_eq(t->name, "token_embd.weight")) {
            embd = (double)t->size;
            embd_params = n;
            if (s->vocab == 0 && t->n_dims == 2)
                s->vocab = (int32_t)t->ne[1];
        }
        if (hr_gguf_str_eq(t->name, "output.weight"))
            has_output = true;
        if (t->n_dims >= 2 && t->type < 64)
            dom_bytes[t->type] += (double)t->size;
    }
    for (uint32_t ty = 0; ty < 64; ty++)
        if (dom_bytes[ty] > dom_bytes[dominant])
            dominant = ty;
    s->tied = !has_output;
    out->exact = true;
    snprintf(out->path, sizeof out->path, "%s", path);
    out->weights_bytes = total;
    out->expert_bytes = experts;
    out->unread_bytes = has_output ? embd : 0;
    out->params_total = params;
    s->params_total = params;
    double active = params - expert_params_sum +
                    (s->experts > 0 && s->experts_active > 0 ? expert_params_sum * s->experts_active / s->experts : 0);
    s->params_active = active;
    out->flops_params = active - (has_output ? embd_params : 0);
    snprintf(out->quant, sizeof out->quant, "%s", hr_type_name(dominant));
    hr_gguf_close(g);
    if (s->layers <= 0 || (s->attn == HR_ATTN_GQA && (s->kv_heads <= 0 || s->head_dim <= 0)))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: architecture '%s' lacks the attention metadata fit needs", path,
                          arch);
    return HR_OK;
}

void hr_fit_hw_from_gpu(const hr_gpu_spec *g, int32_t devices, hr_fit_hw *hw)
{
    memset(hw, 0, sizeof *hw);
    snprintf(hw->name, sizeof hw->name, "%s", g->name);
    snprintf(hw->display, sizeof hw->display, "%s", g->display);
    hw->devices = devices > 0 ? devices : 1;
    hw->memory_bytes = g->memory_gb * 1e9;
    hw->usable_bytes = hw->memory_bytes * 0.95;
    hw->bandwidth_Bps = g->bandwidth_gbs * 1e9 * 0.75;
    hw->flops = g->fp16_tflops * 1e12 * 0.5;
    snprintf(hw->basis, sizeof hw->basis,
             "%s: %.0f GB, %.0f GB/s, %.0f dense FP16 TFLOPS (datasheet); decode assumed to reach 75%% of peak "
             "bandwidth and 50%% of peak FLOPs; 5%% of memory kept free for the allocator",
             g->display, g->memory_gb, g->bandwidth_gbs, g->fp16_tflops);
}

static void note(hr_fit_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(hr_fit_result *r, const char *fmt, ...)
{
    if (r->n_assumptions >= HR_FIT_MAX_ASSUMPTIONS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->assumptions[r->n_assumptions++], HR_FIT_ASSUMPTION_LEN, fmt, ap);
    va_end(ap);
}

/* Fraction of routed experts at least one of n sequences touches, with k
 * of E chosen uniformly per token. */
static double experts_touched(const hr_model_spec *s, int64_t n)
{
    if (s->experts <= 0)
        return 1;
    return 1.0 - pow(1.0 - (double)s->experts_active / s->experts, (double)n);
}

static void roofline(const hr_fit_model *m, const hr_fit_hw *hw, const hr_fit_result *r, int64_t users, double *bytes,
                     double *flops, double *t_mem, double *t_comp)
{
    const hr_model_spec *s = &m->spec;
    double dense = m->weights_bytes - m->expert_bytes - m->unread_bytes;
    double w = dense + m->expert_bytes * experts_touched(s, users);
    /* one embedding row per token when the embedding is not the output matrix */
    if (m->unread_bytes > 0 && s->vocab > 0)
        w += m->unread_bytes / s->vocab * (double)users;
    *bytes = w + (double)users * r->kv_bytes_per_seq;
    double attn = 0;
    if (s->heads > 0) {
        /* QK^T and AV over every attended position of every KV layer */
        double width, positions;
        if (s->attn == HR_ATTN_MLA) {
            width = (double)(2 * s->kv_lora_rank + s->rope_dim); /* absorbed: keys are latent + RoPE, values latent */
            positions = (double)s->layers * (double)r->ctx;
        } else {
            width = (double)(s->head_dim + (s->head_dim_v ? s->head_dim_v : s->head_dim));
            int64_t win = s->swa_layers ? (r->ctx < s->swa_window ? r->ctx : s->swa_window) : 0;
            positions = (double)s->kv_layers * (double)r->ctx + (double)s->swa_layers * (double)win;
        }
        attn = 2.0 * s->heads * width * positions;
    }
    *flops = (double)users * (2.0 * m->flops_params + attn);
    if (hw->cpu && hw->gemv_Bps > 0) {
        /* CPU: the matmul kernels stream the weights once per step at the
         * measured one-token rate (their arithmetic included); the KV cache
         * is read at memory bandwidth; each further user's matmul FLOPs and
         * all attention FLOPs run at the measured 16-token rate. The CPU is
         * not a roofline machine: these add up rather than overlap. */
        double kv = (double)users * r->kv_bytes_per_seq;
        *t_mem = (*bytes - kv) / hw->gemv_Bps + kv / hw->bandwidth_Bps;
        *t_comp = ((double)(users - 1) * 2.0 * m->flops_params + (double)users * attn) / hw->flops;
        *t_mem += *t_comp;
        *t_comp = 0;
        return;
    }
    *t_mem = *bytes / (hw->bandwidth_Bps * hw->devices);
    *t_comp = *flops / (hw->flops * hw->devices);
}

hr_status hr_fit_compute(const hr_fit_model *m, const hr_fit_hw *hw, int64_t ctx, int32_t users, const char *kv_type,
                         hr_fit_result *r, hr_err *err)
{
    memset(r, 0, sizeof *r);
    const hr_model_spec *s = &m->spec;
    if (!kv_type || !*kv_type)
        kv_type = "f16";
    double kvb;
    if (!strcasecmp(kv_type, "f16") || !strcasecmp(kv_type, "bf16"))
        kvb = 2;
    else if (!strcasecmp(kv_type, "f32"))
        kvb = 4;
    else if (!strcasecmp(kv_type, "q8_0"))
        kvb = 34.0 / 32.0;
    else if (!strcasecmp(kv_type, "q4_0"))
        kvb = 18.0 / 32.0;
    else
        return hr_err_set(err, HR_ERR_INVALID, "unknown KV cache type '%s' (f16, bf16, f32, q8_0, q4_0)", kv_type);
    snprintf(r->kv_type, sizeof r->kv_type, "%s", kv_type);
    for (char *p = r->kv_type; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    r->kv_type_bytes = kvb;
    int64_t model_ctx = s->context > 0 ? s->context : 4096;
    if (ctx <= 0)
        ctx = model_ctx < 4096 ? model_ctx : 4096;
    if (ctx > model_ctx)
        return hr_err_set(err, HR_ERR_INVALID, "--ctx %lld exceeds %s's context length of %lld tokens", (long long)ctx,
                          s->name, (long long)model_ctx);
    if (users <= 0)
        users = 1;
    r->ctx = ctx;
    r->users = users;

    r->weights_bytes = m->weights_bytes;
    r->kv_bytes_per_token = hr_fit_kv_bytes_per_token(s, kvb);
    r->kv_bytes_per_seq = hr_fit_kv_bytes_seq(s, kvb, ctx);
    r->kv_bytes = r->kv_bytes_per_seq * users;

    /* runtime overhead: fixed per device + activation scratch for a 512-token step + logits per user */
    double fixed = hw->cpu ? 64.0 * 1024 * 1024 : 0.75 * GIB * hw->devices;
    double width = (double)(s->hidden > 0 ? s->hidden : 4096);
    double ffn = (double)(s->ffn > 0 ? s->ffn : 4 * width);
    double scratch = 512.0 * (8.0 * width + 3.0 * ffn) * 4.0;
    double per_user = (double)(s->vocab > 0 ? s->vocab : 128000) * 4.0;
    r->overhead_bytes = fixed + scratch + per_user * users;
    r->total_bytes = r->weights_bytes + r->kv_bytes + r->overhead_bytes;
    r->device_bytes = hw->memory_bytes * hw->devices;
    r->usable_bytes = hw->usable_bytes * hw->devices;
    r->headroom_bytes = r->usable_bytes - r->total_bytes;
    r->fits = r->headroom_bytes >= 0;

    double room_for_users = r->usable_bytes - r->weights_bytes - fixed - scratch;
    double per_seq = r->kv_bytes_per_seq + per_user;
    r->max_users = room_for_users > 0 ? (int64_t)floor(room_for_users / per_seq) : 0;

    if (!r->fits) {
        if (r->weights_bytes + fixed + scratch > r->usable_bytes)
            snprintf(r->why, sizeof r->why,
                     "the weights alone (%.1f GB at %s) plus runtime overhead (%.1f GB) exceed the %.1f GB usable on "
                     "%s x%d; use more devices (--gpus), a smaller quant, or a smaller model",
                     r->weights_bytes / 1e9, m->quant, (fixed + scratch) / 1e9, r->usable_bytes / 1e9, hw->name,
                     hw->devices);
        else
            snprintf(r->why, sizeof r->why,
                     "the KV cache for %d users at %lld tokens needs %.1f GB but only %.1f GB is left after the "
                     "weights; at most %lld users fit at this context (or shorten --ctx, or quantise the KV cache)",
                     users, (long long)ctx, r->kv_bytes / 1e9, (room_for_users - per_user * 0) / 1e9,
                     (long long)r->max_users);
    }

    roofline(m, hw, r, users, &r->step_bytes, &r->step_flops, &r->t_mem_s, &r->t_compute_s);
    double step = r->t_mem_s > r->t_compute_s ? r->t_mem_s : r->t_compute_s;
    r->bound = hw->cpu && hw->gemv_Bps > 0 ? "CPU kernel"
               : r->t_mem_s >= r->t_compute_s ? "memory bandwidth" : "compute";
    r->decode_tps_user = step > 0 ? 1.0 / step : 0;
    r->decode_tps_total = r->decode_tps_user * users;
    if (r->max_users > 0) {
        double b, f, tm, tc;
        roofline(m, hw, r, r->max_users, &b, &f, &tm, &tc);
        double st = tm > tc ? tm : tc;
        r->decode_tps_user_at_max = st > 0 ? 1.0 / st : 0;
        r->decode_tps_total_at_max = r->decode_tps_user_at_max * (double)r->max_users;
    }

    /* the assumptions, in the order they matter */
    if (m->exact)
        note(r, "weights: %.3f GB, the sum of the GGUF's tensor sizes (dominant type %s)", m->weights_bytes / 1e9,
             m->quant);
    else {
        bool mix = false;
        double bits = hr_quant_bits(m->quant, &mix);
        note(r, "weights: %.3g parameters x %.4g bits (%s%s) = %.3f GB; real files differ by a few %% (embeddings "
                "and norms are often kept at higher precision)",
             m->params_total, bits, m->quant, mix ? ", typical average of llama-quantize's mix" : "",
             m->weights_bytes / 1e9);
    }
    if (s->attn == HR_ATTN_MLA)
        note(r, "KV cache: MLA latent, %d layers x (%d latent + %d RoPE%s%s) values x %.4g bytes (%s) = %.0f bytes/token",
             s->layers, s->kv_lora_rank, s->rope_dim, s->indexer_dim ? " + indexer " : "",
             s->indexer_dim ? "key" : "", kvb, r->kv_type, r->kv_bytes_per_token);
    else
        note(r, "KV cache: %d layers x %d KV heads x (%d + %d) values x %.4g bytes (%s) = %.0f bytes/token%s",
             s->kv_layers + s->swa_layers, s->kv_heads, s->head_dim, s->head_dim_v ? s->head_dim_v : s->head_dim, kvb,
             r->kv_type, r->kv_bytes_per_token, s->heads > s->kv_heads ? " (grouped-query: KV heads, not query heads)" : "");
    if (s->swa_layers)
        note(r, "%d of those layers keep only the last %d tokens (sliding window): %.0f bytes per sequence at %lld "
                "tokens",
             s->swa_layers, s->swa_window, r->kv_bytes_per_seq, (long long)ctx);
    if (s->layers > s->kv_layers + s->swa_layers && s->attn == HR_ATTN_GQA)
        note(r, "%d layers keep no KV cache (linear attention; their constant per-sequence state is not counted)",
             s->layers - s->kv_layers - s->swa_layers);
    note(r, "runtime overhead %.2f GB: %s, activations for a 512-token step, float32 logits per user",
         r->overhead_bytes / 1e9, hw->cpu ? "64 MiB process" : "0.75 GiB per GPU (CUDA context, library workspaces)");
    note(r, "hardware: %s", hw->basis);
    if (hw->devices > 1)
        note(r, "%d devices in tensor parallel: memory, bandwidth and FLOPs add up; interconnect time ignored",
             hw->devices);
    note(r, "decode: every user's sequence is %lld tokens long (worst case, the end of --ctx); one step reads the "
            "weights once for all users plus each user's KV cache",
         (long long)ctx);
    if (s->experts > 0)
        note(r, "MoE: %d of %d experts per token; with %d users a step touches %.0f%% of the routed-expert weights "
                "(uniform routing)",
             s->experts_active, s->experts, users, 100 * experts_touched(s, users));
    if (hw->cpu && hw->gemv_Bps > 0)
        note(r, "decode step (CPU) = weight bytes / measured one-token matmul rate + KV bytes / memory bandwidth + "
                "(extra users' matmul FLOPs + attention FLOPs) / measured 16-token rate; norms, RoPE, sampling and "
                "scheduling not included");
    else
        note(r, "decode step = max(bytes read / bandwidth, FLOPs / compute) (a roofline); prefill, sampling and "
                "scheduling time not included");
    return HR_OK;
}
