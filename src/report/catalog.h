/* catalog.h - the data behind `hearth fit`, `hearth cost` and
 * `hearth models --catalog`: open-weight model shapes (data/models.json),
 * hardware tiers (data/gpus.json) and API prices (data/prices.json).
 *
 * The JSON files are compiled into the binary; a user file with the same
 * layout may be merged over them (entries with the same name replace the
 * built-in ones, new names are added). Every field is validated on load:
 * a bad file is an HR_ERR_FORMAT naming the file, the entry and the field. */
#ifndef HR_REPORT_CATALOG_H
#define HR_REPORT_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    HR_ATTN_GQA = 0, /* 2 x kv_heads x head_dim values per token per KV layer (MHA/MQA included) */
    HR_ATTN_MLA,     /* kv_lora_rank + rope_dim (+ indexer_dim) values per token per layer */
} hr_attn_kind;

typedef struct {
    char name[64];        /* stable lowercase id: "llama-3.1-70b-instruct" */
    char display[96];
    char arch[32];
    char license[96];
    char license_class[24]; /* "apache-2.0", "mit", "custom" */
    char source[256];
    char default_quant[16]; /* "" = Q4_K_M */
    char note[1024];
    char gguf[512];         /* where GGUF files are published ("; "-joined) */
    double params_total, params_active;
    int32_t layers, hidden, heads, kv_heads, head_dim, ffn, vocab; /* 0 = not recorded */
    int32_t head_dim_v;     /* value length per head when it differs from head_dim (0 = same) */
    int64_t context;
    bool tied;
    hr_attn_kind attn;
    int32_t kv_layers;      /* layers with a full-context KV cache (default: layers - swa_layers) */
    int32_t swa_layers;     /* layers whose KV keeps only the last swa_window tokens */
    int32_t swa_window;
    int32_t kv_lora_rank, rope_dim, indexer_dim; /* MLA */
    int32_t experts, experts_active;             /* MoE; 0 = dense */
} hr_model_spec;

typedef struct {
    char name[32];          /* "h100-80gb" */
    char display[64];
    double memory_gb;       /* 1e9 bytes */
    double bandwidth_gbs;   /* 1e9 bytes/s */
    double fp16_tflops;     /* dense */
    double price_per_hour;  /* USD per GPU-hour; 0 = none */
    char price_note[256];
} hr_gpu_spec;

typedef struct {
    char name[48];          /* "gpt-4o-mini" */
    char provider[32];
    double input, cached_input, output; /* USD per 1M tokens */
    bool is_default;        /* priced by `hearth cost` when no --api is given */
    char source[256];
    char date[24];
    char note[512];
} hr_api_price;

typedef struct hr_catalog hr_catalog;

/* Loads the built-in data, then merges the optional user files (NULL = none). */
hr_status hr_catalog_load(const char *models_file, const char *gpus_file, const char *prices_file, hr_catalog **out,
                          hr_err *err);
void hr_catalog_free(hr_catalog *c);

size_t hr_catalog_n_models(const hr_catalog *c);
const hr_model_spec *hr_catalog_model_at(const hr_catalog *c, size_t i);
size_t hr_catalog_n_gpus(const hr_catalog *c);
const hr_gpu_spec *hr_catalog_gpu_at(const hr_catalog *c, size_t i);
size_t hr_catalog_n_apis(const hr_catalog *c);
const hr_api_price *hr_catalog_api_at(const hr_catalog *c, size_t i);

/* Case-insensitive lookups; NULL when unknown. */
const hr_model_spec *hr_catalog_find_model(const hr_catalog *c, const char *name);
const hr_gpu_spec *hr_catalog_find_gpu(const hr_catalog *c, const char *name);
const hr_api_price *hr_catalog_find_api(const hr_catalog *c, const char *name);

/* "a, b, c" of every name (for error messages); static buffer per kind. */
const char *hr_catalog_model_names(const hr_catalog *c);
const char *hr_catalog_gpu_names(const hr_catalog *c);
const char *hr_catalog_api_names(const hr_catalog *c);

/* The text of a built-in data file ("models.json"), or NULL. */
const char *hr_data_builtin(const char *name, size_t *len);

#endif
