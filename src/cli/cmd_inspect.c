/* hearth inspect: what a GGUF file holds, without computing anything.
 * Reads the metadata through the GGUF reader only, so it also describes
 * files the engine cannot run (and says why, via the model loader). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "engine/kvcache.h"
#include "model/model.h"
#include "quant/quant.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hearth inspect MODEL.gguf [--json] [--metadata]\n"
               "  --json       machine-readable output\n"
               "  --metadata   also list every metadata key (arrays summarised)\n");
}

static const char *meta_str(const hr_gguf *g, const char *key, char *buf, size_t cap)
{
    hr_gguf_str s;
    if (!hr_gguf_get_str(g, key, &s))
        return NULL;
    return hr_gguf_str_copy(s, buf, cap);
}

static long long meta_arch_int(const hr_gguf *g, const char *arch, const char *key)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    return hr_gguf_get_i64(g, full, &v) ? (long long)v : -1;
}

/* Short text form of a metadata value (arrays: element type and count). */
static void value_text(const hr_gguf_value *v, char *buf, size_t cap)
{
    switch (v->type) {
    case HR_GGUF_STRING: {
        char tmp[96];
        hr_gguf_str_copy(v->v.s, tmp, sizeof tmp);
        for (char *p = tmp; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        snprintf(buf, cap, "\"%s\"%s", tmp, v->v.s.len >= sizeof tmp ? "..." : "");
        break;
    }
    case HR_GGUF_ARRAY:
        snprintf(buf, cap, "[%s x %llu]", hr_gguf_type_name(v->v.arr.elem), (unsigned long long)v->v.arr.n);
        break;
    case HR_GGUF_F32: case HR_GGUF_F64: snprintf(buf, cap, "%g", v->v.f); break;
    case HR_GGUF_BOOL: snprintf(buf, cap, "%s", v->v.u ? "true" : "false"); break;
    case HR_GGUF_I8: case HR_GGUF_I16: case HR_GGUF_I32: case HR_GGUF_I64:
        snprintf(buf, cap, "%lld", (long long)v->v.i);
        break;
    default: snprintf(buf, cap, "%llu", (unsigned long long)v->v.u); break;
    }
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false, meta = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--metadata"))
            meta = true;
        else if (!strcmp(argv[i], "-m") && i + 1 < argc)
            path = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    hr_err err = {0};
    hr_gguf *g;
    if (hr_gguf_open(path, &g, &err))
        return cli_fail("inspect", "%s", err.msg);

    char arch[64] = "", name[256] = "", license[128] = "", tokmodel[64] = "";
    meta_str(g, "general.architecture", arch, sizeof arch);
    meta_str(g, "general.name", name, sizeof name);
    meta_str(g, "general.license", license, sizeof license);
    meta_str(g, "tokenizer.ggml.model", tokmodel, sizeof tokmodel);
    const hr_gguf_value *toks = hr_gguf_get_arr(g, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    long long n_vocab = toks ? (long long)toks->v.arr.n : -1;

    /* tensor type mix: count and bytes per type */
    uint64_t type_count[HR_TYPE_COUNT] = {0}, type_bytes[HR_TYPE_COUNT] = {0};
    uint64_t params = 0, tensor_bytes = 0;
    for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
        const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (uint64_t)t->ne[d];
        params += n;
        tensor_bytes += t->size;
        if (t->type < HR_TYPE_COUNT) {
            type_count[t->type]++;
            type_bytes[t->type] += t->size;
        }
    }
    /* can the engine run it? */
    hr_model *m = NULL;
    hr_err merr = {0};
    hr_status mst = hr_model_load(path, &m, &merr);
    /* the layer descriptor the engine will run, and the bytes a token reads */
    char *desc = NULL;
    uint64_t active = 0, kv_per_tok = 0;
    if (m) {
        const size_t cap = 256 * (size_t)(hr_model_hparams(m)->n_layer + 2);
        if ((desc = malloc(cap)))
            hr_model_describe(m, desc, cap);
        active = hr_model_active_bytes(m);
        kv_per_tok = hr_kv_bytes_per_token(hr_model_hparams(m));
    }
    hr_model_free(m);

    static const char *arch_keys[] = {"context_length", "embedding_length", "block_count", "feed_forward_length",
                                      "attention.head_count", "attention.head_count_kv"};
    int rc = 0;
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(path));
        json_object_set_new(o, "file_size", json_integer((json_int_t)hr_gguf_file_size(g)));
        json_object_set_new(o, "gguf_version", json_integer(hr_gguf_version(g)));
        json_object_set_new(o, "architecture", json_string(arch));
        json_object_set_new(o, "name", json_string(name));
        json_object_set_new(o, "license", license[0] ? json_string(license) : json_null());
        json_object_set_new(o, "n_params", json_integer((json_int_t)params));
        json_object_set_new(o, "tensor_bytes", json_integer((json_int_t)tensor_bytes));
        json_object_set_new(o, "n_tensors", json_integer((json_int_t)hr_gguf_n_tensors(g)));
        json_object_set_new(o, "n_vocab", json_integer(n_vocab));
        json_object_set_new(o, "tokenizer", json_string(tokmodel));
        for (size_t k = 0; k < sizeof arch_keys / sizeof arch_keys[0]; k++)
            json_object_set_new(o, arch_keys[k], json_integer(meta_arch_int(g, arch, arch_keys[k])));
        json_t *types = json_object();
        for (int t = 0; t < HR_TYPE_COUNT; t++)
            if (type_count[t]) {
                json_t *e = json_object();
                json_object_set_new(e, "tensors", json_integer((json_int_t)type_count[t]));
                json_object_set_new(e, "bytes", json_integer((json_int_t)type_bytes[t]));
                json_object_set_new(types, hr_type_name((uint32_t)t), e);
            }
        json_object_set_new(o, "tensor_types", types);
        json_object_set_new(o, "runnable", json_boolean(mst == HR_OK));
        if (desc) {
            json_object_set_new(o, "layers", json_string(desc));
            json_object_set_new(o, "active_bytes_per_token", json_integer((json_int_t)active));
            json_object_set_new(o, "kv_bytes_per_token_f32", json_integer((json_int_t)kv_per_tok));
        }
        if (mst)
            json_object_set_new(o, "error", json_string(merr.msg));
        if (meta) {
            json_t *md = json_object();
            for (uint64_t i = 0; i < hr_gguf_n_kv(g); i++) {
                char key[256], val[192];
                hr_gguf_str_copy(hr_gguf_key_at(g, i), key, sizeof key);
                value_text(hr_gguf_value_at(g, i), val, sizeof val);
                json_object_set_new(md, key, json_string(val));
            }
            json_object_set_new(o, "metadata", md);
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("file:          %s (%.2f MiB, GGUF v%u)\n", path, hr_gguf_file_size(g) / 1048576.0, hr_gguf_version(g));
        printf("name:          %s\n", name[0] ? name : "(none)");
        printf("architecture:  %s\n", arch[0] ? arch : "(none)");
        printf("license:       %s\n", license[0] ? license : "(not stated)");
        printf("parameters:    %llu (%.2f M)\n", (unsigned long long)params, params / 1e6);
        printf("vocabulary:    %lld tokens (%s)\n", n_vocab, tokmodel[0] ? tokmodel : "no tokenizer");
        for (size_t k = 0; k < sizeof arch_keys / sizeof arch_keys[0]; k++)
            printf("%-14s %lld\n", arch_keys[k], meta_arch_int(g, arch, arch_keys[k]));
        printf("tensors:       %llu, %.2f MiB\n", (unsigned long long)hr_gguf_n_tensors(g), tensor_bytes / 1048576.0);
        for (int t = 0; t < HR_TYPE_COUNT; t++)
            if (type_count[t])
                printf("  %-8s %5llu tensors  %10.2f MiB\n", hr_type_name((uint32_t)t),
                       (unsigned long long)type_count[t], type_bytes[t] / 1048576.0);
        printf("runnable:      %s\n", mst == HR_OK ? "yes" : merr.msg);
        if (desc) {
            printf("weights read per token: %.2f MiB; KV cache per token: %llu bytes (F32)\n", active / 1048576.0,
                   (unsigned long long)kv_per_tok);
            printf("descriptor:    %s\n", desc);
        }
        if (meta) {
            printf("metadata:\n");
            for (uint64_t i = 0; i < hr_gguf_n_kv(g); i++) {
                char key[256], val[192];
                hr_gguf_str_copy(hr_gguf_key_at(g, i), key, sizeof key);
                value_text(hr_gguf_value_at(g, i), val, sizeof val);
                printf("  %-48s %s\n", key, val);
            }
        }
    }
    free(desc);
    hr_gguf_close(g);
    return rc;
}
