/* model.h - a loaded model: hyperparameters and weights bound from a GGUF.
 *
 * Loading is O(metadata): the file is mmapped and weight tensors point into
 * the mapping; only 1-D tensors (norm weights, biases, rope factors) are
 * converted to float copies, since every kernel wants them that way.
 * Everything the forward pass needs is read from metadata: nothing about a
 * particular model is hard-coded beyond the architecture's tensor names and
 * its RoPE pairing style. */
#ifndef HR_MODEL_MODEL_H
#define HR_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "gguf/gguf.h"

typedef struct hr_model hr_model;
struct hr_vocab;

typedef enum {
    HR_ARCH_LLAMA = 1,
    HR_ARCH_QWEN2,
    HR_ARCH_QWEN3,
} hr_arch;

typedef enum {
    HR_ROPE_NORM = 0, /* rotate adjacent pairs (x[2i], x[2i+1]) - llama */
    HR_ROPE_NEOX = 2, /* rotate (x[i], x[i + d/2]) - qwen2, qwen3 */
} hr_rope_style;

typedef struct {
    hr_arch arch;
    char arch_name[32];
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;   /* key/query length per head */
    int32_t head_dim_v; /* value length per head */
    int32_t n_ff;
    int32_t n_ctx_train;
    int32_t rope_dim;   /* dimensions rotated per head (<= head_dim) */
    hr_rope_style rope_style;
    float rope_theta;
    float rope_freq_scale; /* 1 / linear scaling factor */
    float rms_eps;
    bool tied_output;      /* output matrix is the token embedding */
    bool has_rope_freqs;   /* llama3-style per-dimension frequency factors */
} hr_hparams;

/* Opens and validates a model file. Errors name the problem: unknown
 * architecture, missing tensor, wrong shape, unsupported tensor type,
 * vocabulary size not matching the output matrix, ... */
hr_status hr_model_load(const char *path, hr_model **out, hr_err *err);
void hr_model_free(hr_model *m);

const hr_hparams *hr_model_hparams(const hr_model *m);
const hr_gguf *hr_model_gguf(const hr_model *m);
const struct hr_vocab *hr_model_vocab(const hr_model *m);

/* Total bytes of all tensors in the file, and parameter count. */
uint64_t hr_model_weight_bytes(const hr_model *m);
uint64_t hr_model_n_params(const hr_model *m);

/* "llama" -> HR_ARCH_LLAMA; 0 if unknown. */
hr_arch hr_arch_from_name(const char *name);

#endif
