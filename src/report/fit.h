/* fit.h - will a model fit this hardware, for how many users, and how
 * fast will it decode? (`hearth fit`)
 *
 * Memory: weights (exact from a GGUF's tensor sizes, or parameters x bits
 * per weight of the quant type for a catalog entry) + KV cache (per token,
 * from the attention geometry: GQA heads, MLA latent width, sliding-window
 * layers) + a runtime overhead. Speed: a roofline per decode step - the
 * bytes a step must read (weights touched + every user's KV) over the
 * effective bandwidth, against the FLOPs over the effective compute; the
 * slower one wins. Every assumption is recorded as a line of text. */
#ifndef HR_REPORT_FIT_H
#define HR_REPORT_FIT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "report/catalog.h"

/* Bits per weight of a quant name ("Q4_K_M", "q8_0", "F16", "MXFP4", ...):
 * exact for uniform types, a typical average for llama-quantize mixes.
 * Returns 0 for an unknown name. *mix is set when the figure is an average. */
double hr_quant_bits(const char *quant, bool *mix);
/* "F32 F16 BF16 Q8_0 ..." */
const char *hr_quant_names(void);

/* What a decode step reads and computes, independent of the hardware. */
typedef struct {
    hr_model_spec spec;   /* shape (KV geometry, heads, MoE) */
    char quant[24];       /* weight type name, for display */
    bool exact;           /* weights measured from a GGUF file */
    char path[512];       /* the GGUF file, if any */
    double weights_bytes; /* everything that must be resident */
    double expert_bytes;  /* part of weights_bytes in routed experts (0: dense) */
    double unread_bytes;  /* resident but not read per step (untied token embedding) */
    double params_total;
    double flops_params;  /* parameters multiplied per token (active, without the embedding lookup) */
} hr_fit_model;

/* From a catalog entry and a quant name (NULL = the entry's default). */
hr_status hr_fit_model_from_spec(const hr_model_spec *s, const char *quant, hr_fit_model *out, hr_err *err);
/* From a GGUF file's metadata and tensor table (any architecture). */
hr_status hr_fit_model_from_gguf(const char *path, hr_fit_model *out, hr_err *err);

/* KV cache bytes per token (every KV layer, windows not yet full) and for one
 * sequence of n tokens, at kv_type_bytes per value (2 = F16). */
double hr_fit_kv_bytes_per_token(const hr_model_spec *s, double kv_type_bytes);
double hr_fit_kv_bytes_seq(const hr_model_spec *s, double kv_type_bytes, int64_t n_tokens);

typedef struct {
    char name[32];          /* "h100-80gb", "cpu" */
    char display[96];
    bool cpu;
    int32_t devices;        /* GPUs (tensor parallel); 1 for cpu */
    double memory_bytes;    /* per device */
    double usable_bytes;    /* per device, after the driver/allocator reserve */
    double bandwidth_Bps;   /* per device, effective for decode */
    double flops;           /* per device, effective */
    /* cpu only: measured weight-streaming rate of the matmul kernels (bytes
     * of weights per second at one token; 0 = use bandwidth_Bps) */
    double gemv_Bps;
    char basis[512];        /* where the numbers come from */
} hr_fit_hw;

/* Fills hw from a catalog GPU with the default efficiencies (75% of peak
 * bandwidth, 50% of peak FLOPs, 5% of memory reserved). */
void hr_fit_hw_from_gpu(const hr_gpu_spec *g, int32_t devices, hr_fit_hw *hw);

#define HR_FIT_MAX_ASSUMPTIONS 32
#define HR_FIT_ASSUMPTION_LEN 256

typedef struct {
    int64_t ctx;
    int32_t users;
    double kv_type_bytes;     /* 2 = F16 */
    char kv_type[8];
    double weights_bytes;
    double kv_bytes_per_token;
    double kv_bytes_per_seq;  /* one user at ctx */
    double kv_bytes;          /* users x kv_bytes_per_seq */
    double overhead_bytes;
    double total_bytes;
    double device_bytes;      /* memory of all devices */
    double usable_bytes;
    double headroom_bytes;    /* usable - total (negative: short by that much) */
    bool fits;
    char why[512];            /* when it does not fit: the reason */
    int64_t max_users;        /* at ctx */
    /* decode at `users` concurrent sequences */
    double step_bytes, step_flops;
    double t_mem_s, t_compute_s;
    const char *bound;        /* "memory bandwidth" or "compute" */
    double decode_tps_user, decode_tps_total;
    /* the same at max_users (if > 0) */
    double decode_tps_user_at_max, decode_tps_total_at_max;
    int n_assumptions;
    char assumptions[HR_FIT_MAX_ASSUMPTIONS][HR_FIT_ASSUMPTION_LEN];
} hr_fit_result;

/* ctx <= 0: min(4096, model context); users <= 0: 1; kv_type: "f16"
 * (default), "bf16", "f32", "q8_0", "q4_0". */
hr_status hr_fit_compute(const hr_fit_model *m, const hr_fit_hw *hw, int64_t ctx, int32_t users, const char *kv_type,
                         hr_fit_result *out, hr_err *err);

#endif
