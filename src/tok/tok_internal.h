/* tok_internal.h - the vocabulary's private layout, shared by the loader
 * (vocab.c), the encoders (encode.c, pretok.c) and the decoders (decode.c).
 * Not part of the public interface. */
#ifndef HR_TOK_INTERNAL_H
#define HR_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/utf8.h"
#include "tok/vocab.h"

/* Pre-tokenizers of byte-level BPE vocabularies (tokenizer.ggml.pre). */
typedef enum {
    HR_PRE_GPT2 = 0,
    HR_PRE_LLAMA3,
    HR_PRE_QWEN2,
    HR_PRE_DEEPSEEK_LLM,
    HR_PRE_DEEPSEEK_CODER,
    HR_PRE_O200K,
    HR_PRE_QWEN35,
    HR_PRE_DEEPSEEK_V3,
    HR_PRE_CL100K, /* Llama 3's pattern without ignore_merges */
} hr_pretok_kind;

#define HR_PRE_MAX_STEPS 6

/* Open-addressing table from a byte string to a token id. */
typedef struct {
    int32_t *slots; /* id or -1 */
    uint32_t mask;
} hr_strmap;

/* Open-addressing table from a pair of token ids to a merge rank. */
typedef struct {
    uint64_t key;   /* (left << 32) | right; UINT64_MAX = empty */
    int32_t rank;
    int32_t result; /* id of the merged token */
} hr_merge_slot;

struct hr_vocab {
    hr_vocab_kind kind;
    /* tokenizer model "gemma4": BPE merges over SentencePiece pieces (raw
     * UTF-8, spaces as U+2581, <0xNN> byte fallback, no dummy prefix) */
    bool spm_bpe;
    int32_t n;

    /* Raw token text (as stored in the GGUF), all in one arena. */
    char *text;
    uint32_t *text_off; /* n + 1 offsets */
    /* Decoded bytes of each token's text (byte-level or U+2581 undone);
     * for control/user-defined tokens the raw text. */
    char *dec;
    uint32_t *dec_off; /* n + 1 offsets */

    int8_t *type;
    float *score; /* SPM only */

    hr_strmap by_text; /* raw text -> id (every token; last one wins) */
    hr_strmap by_dec;  /* BPE: decoded bytes -> id of normal/byte tokens */

    hr_merge_slot *merges;
    uint32_t merge_mask;

    int32_t byte_tok[256]; /* SPM: <0xNN> ids; BPE: id of each byte's symbol; -1 if none */

    /* Tokens split out of raw text before the model runs: user-defined
     * always, control and unknown only when parse_special is asked. */
    int32_t *special;    /* ids sorted by (first byte, length descending) */
    int32_t n_special;
    int32_t special_first[257]; /* index range per first byte */

    int32_t bos, eos, eot, pad, unk, eom;
    bool add_bos, add_eos, add_space_prefix;
    bool ignore_merges;
    uint8_t *eog; /* n flags */
    /* n flags: user-defined tokens that are still never split out of text
     * that may not produce control tokens: end-of-generation, the special
     * ids, and SentencePiece's <s> </s> <unk> <pad> (Phi-3's GGUF types its
     * `</s>` user-defined, as its tokenizer.json marks it non-special). */
    uint8_t *no_raw;

    /* SPM: the characters (UTF-8 bytes packed in a uint32) that some token
     * has right before a U+2581; text is cut before any other U+2581. */
    bool spm_cut;
    int n_space_join;
    uint32_t space_join[32];

    /* Harmony (gpt-oss): the control tokens that structure a reply
     * (<|start|> <|channel|> <|message|> <|end|> <|constrain|>) decode to
     * their text even without render_special, so that the reply's channels
     * can be told apart (api/reasoning.h). */
    int n_shown;
    int32_t shown[5];

    hr_pretok_kind pre;
    int n_steps;
    void *re[HR_PRE_MAX_STEPS];     /* pcre2_code_8 * */
    bool step_jit[HR_PRE_MAX_STEPS];
};

uint64_t hr_tok_hash(const void *p, size_t n);
int32_t hr_strmap_get(const hr_strmap *m, const hr_vocab *v, const char *arena,
                      const uint32_t *off, const char *s, size_t n);

static inline const char *hr_tok_text_(const hr_vocab *v, int32_t id, size_t *len)
{
    *len = v->text_off[id + 1] - v->text_off[id];
    return v->text + v->text_off[id];
}

/* Looks a raw token text up; -1 if absent. */
static inline int32_t hr_vocab_find_(const hr_vocab *v, const char *s, size_t n)
{
    return hr_strmap_get(&v->by_text, v, v->text, v->text_off, s, n);
}

static inline int32_t hr_vocab_find_dec_(const hr_vocab *v, const char *s, size_t n)
{
    return hr_strmap_get(&v->by_dec, v, v->dec, v->dec_off, s, n);
}

/* Merge rank of (l, r) and the merged id, or -1. */
static inline int32_t hr_merge_rank_(const hr_vocab *v, int32_t l, int32_t r, int32_t *result)
{
    if (!v->merges)
        return -1;
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & v->merge_mask;
    for (;;) {
        const hr_merge_slot *s = &v->merges[i];
        if (s->key == key) {
            *result = s->result;
            return s->rank;
        }
        if (s->key == UINT64_MAX)
            return -1;
        i = (i + 1) & v->merge_mask;
    }
}

/* UTF-8 helpers: base/utf8.h. */

/* Pre-tokenizer (pretok.c). */
hr_status hr_pretok_init(hr_vocab *v, const char *pre_name, hr_err *err);
void hr_pretok_free(hr_vocab *v);

/* Output sink shared by the encoders. */
typedef struct {
    int32_t *out;
    size_t cap;
    size_t n;
} hr_sink;

static inline void hr_sink_put(hr_sink *s, int32_t id)
{
    if (s->n < s->cap)
        s->out[s->n] = id;
    s->n++;
}

/* Scratch memory of one encode call. */
typedef struct {
    void *sym;
    size_t sym_cap;  /* bytes (the buffer holds bsym or ssym) */
    void *heap;
    size_t heap_cap; /* bytes (bpair heap, or SPM text + spair heap) */
    void *match_data; /* pcre2_match_data_8 * */
    void *jit_stack;  /* pcre2_jit_stack_8 * */
    void *mctx;       /* pcre2_match_context_8 * */
    bool oom;
} hr_scratch;

/* Encodes one fragment of ordinary text (no special tokens inside). */
/* Words up to this many bytes use the scanning merge loop, longer ones the
 * heap (at most 24; tests set 0 to compare both). */
extern int hr_tok_bpe_scan_max;

void hr_bpe_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, hr_sink *out);
void hr_bpe_word(const hr_vocab *v, hr_scratch *sc, const unsigned char *s, size_t n, hr_sink *out);
void hr_spm_bpe_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, hr_sink *out);
void hr_spm_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, bool prefix_space,
                     hr_sink *out);

#endif
