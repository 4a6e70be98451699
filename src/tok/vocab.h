/* vocab.h - a model's vocabulary and tokenizer, read from GGUF
 * `tokenizer.ggml.*` metadata.
 *
 * Encoding (text -> ids) follows the reference tokenizers exactly
 * (SentencePiece-style "llama" models and byte-level BPE "gpt2" models with
 * the pre-tokenizer named by tokenizer.ggml.pre). Decoding (ids -> UTF-8)
 * handles SentencePiece's U+2581 spaces and <0xNN> byte tokens and
 * byte-level BPE's byte-to-unicode mapping.
 *
 * A vocab is immutable after load and safe to share between threads. */
#ifndef HR_TOK_VOCAB_H
#define HR_TOK_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/span.h"
#include "base/status.h"
#include "gguf/gguf.h"

typedef struct hr_vocab hr_vocab;

typedef enum {
    HR_VOCAB_SPM = 1, /* tokenizer.ggml.model = "llama" */
    HR_VOCAB_BPE = 2, /* tokenizer.ggml.model = "gpt2" */
} hr_vocab_kind;

/* GGUF token types (tokenizer.ggml.token_type). */
enum {
    HR_TOKEN_NORMAL = 1,
    HR_TOKEN_UNKNOWN = 2,
    HR_TOKEN_CONTROL = 3,
    HR_TOKEN_USER_DEFINED = 4,
    HR_TOKEN_UNUSED = 5,
    HR_TOKEN_BYTE = 6,
};

hr_status hr_vocab_load(const hr_gguf *g, hr_vocab **out, hr_err *err);
void hr_vocab_free(hr_vocab *v);

hr_vocab_kind hr_vocab_kind_of(const hr_vocab *v);
int32_t hr_vocab_n_tokens(const hr_vocab *v);
/* Raw token text as stored in the vocabulary (not decoded); len in *len. */
const char *hr_vocab_token_text(const hr_vocab *v, int32_t id, size_t *len);
int hr_vocab_token_type(const hr_vocab *v, int32_t id);
/* Id of the token whose raw text is exactly `text` (len bytes), or -1.
 * Chat code uses it to look up control tokens such as "<|im_end|>". */
int32_t hr_vocab_find(const hr_vocab *v, const char *text, size_t len);

/* Special ids, -1 when the model has none. */
int32_t hr_vocab_bos(const hr_vocab *v);
int32_t hr_vocab_eos(const hr_vocab *v);
int32_t hr_vocab_eot(const hr_vocab *v);
int32_t hr_vocab_pad(const hr_vocab *v);
int32_t hr_vocab_unk(const hr_vocab *v);
bool hr_vocab_add_bos(const hr_vocab *v);
bool hr_vocab_add_eos(const hr_vocab *v);
/* true for tokens that end generation (EOS, EOT, and other end-of-generation ids). */
bool hr_vocab_is_eog(const hr_vocab *v, int32_t id);

/* Encodes `len` bytes of text. add_special: add BOS/EOS as the metadata says.
 * parse_special: recognise special-token text such as "<|im_start|>"
 * (only chat templates ask for this; raw user text must not). Without it,
 * user-defined tokens are still recognised (as Hugging Face does), except
 * end-of-generation / special-id ones and <s> </s> <unk> <pad>.
 * Writes up to `cap` ids to `out` and the total count to *n_out; if the
 * total exceeds cap, returns HR_ERR_LIMIT (call again with a larger buffer).
 * Invalid UTF-8 is documented in docs/TOKENIZER.md. */
hr_status hr_tok_encode(const hr_vocab *v, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t *out, size_t cap, size_t *n_out, hr_err *err);

/* Encodes a rendered chat prompt: special-token text written by the
 * template becomes control tokens (as with parse_special), but not where it
 * overlaps one of the `n_plain` spans (sorted, disjoint byte ranges of
 * `text`: message content and other request strings), which are
 * tokenized as with parse_special off. Text is not cut at span boundaries,
 * so benign content gives the same ids as hr_tok_encode with parse_special. */
hr_status hr_tok_encode_marked(const hr_vocab *v, const char *text, size_t len, bool add_special,
                               const hr_span *plain, size_t n_plain, int32_t *out, size_t cap, size_t *n_out,
                               hr_err *err);

/* Appends the decoded bytes of one token to buf (at most cap bytes) and
 * returns the number of bytes the piece has (may exceed cap: then nothing
 * useful was written). Control tokens decode to "" unless render_special.
 * A decoded piece may be an incomplete UTF-8 sequence (byte tokens). */
size_t hr_tok_piece(const hr_vocab *v, int32_t id, bool render_special, char *buf, size_t cap);

/* Decodes a whole sequence as the incremental detokenizer would (leading
 * SentencePiece space of the first content piece stripped, invalid UTF-8
 * replaced by U+FFFD). Writes the NUL-terminated text to buf and returns its
 * length; a result >= cap means buf was too small (call again with
 * result + 1). SIZE_MAX on allocation failure. */
size_t hr_tok_decode(const hr_vocab *v, const int32_t *ids, size_t n, bool render_special, char *buf,
                     size_t cap);

/* Incremental detokenizer for streaming: feed ids one at a time, get back
 * only complete UTF-8 text; incomplete sequences are held until completed,
 * bytes that can never become valid are replaced with U+FFFD.
 * SentencePiece's leading space of the first piece is stripped as the
 * reference detokenizers do when the vocab says so. */
typedef struct hr_detok hr_detok;
hr_status hr_detok_new(const hr_vocab *v, bool render_special, hr_detok **out, hr_err *err);
void hr_detok_free(hr_detok *d);
/* Marks the decoded text as continuing earlier text (a prompt with
 * content): SentencePiece's leading space of the first piece is kept. */
void hr_detok_continue(hr_detok *d);
/* Decodes `id`; writes the newly complete text (NUL-terminated) to buf and
 * returns its length, or returns >= cap if buf is too small (nothing lost:
 * the text stays pending). */
size_t hr_detok_push(hr_detok *d, int32_t id, char *buf, size_t cap);
/* Flushes what is pending (invalid remainder becomes U+FFFD). */
size_t hr_detok_flush(hr_detok *d, char *buf, size_t cap);

#endif
