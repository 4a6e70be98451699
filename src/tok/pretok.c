/* pretok.c - the pre-tokenizers of byte-level BPE vocabularies.
 *
 * A pre-tokenizer is a list of regular expressions applied in sequence:
 * each one splits every piece left by the previous one into its matches and
 * the gaps between them (both kept). The patterns are those published with
 * the models' tokenizer definitions; they are compiled once per vocabulary
 * with PCRE2 (UTF + UCP, JIT when available). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string.h>

#include "tok/tok_internal.h"

/* 's 't 're 've 'm 'll 'd, any case */
#define CONTRACTIONS "(?i:'s|'t|'re|'ve|'m|'ll|'d)"

static const char *const k_gpt2[] = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
};

static const char *const k_llama3[] = {
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

static const char *const k_qwen2[] = {
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/* DeepSeek LLM: newlines, runs of cased letters, ASCII/full-width
 * punctuation, trailing whitespace, CJK runs, digit runs. The letter class
 * is Unicode's cased letters as listed in the model's tokenizer.json. */
static const char *const k_deepseek_llm[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}"
    "\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}"
    "\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}"
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+",
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}+",
};

static const char *const k_deepseek_coder[] = {
    "[\\r\\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}",
};

/* o200k (gpt-4o, gpt-oss): words split before an upper-case run, with an
 * optional contraction suffix. */
static const char *const k_o200k[] = {
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" CONTRACTIONS "?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" CONTRACTIONS "?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/* Qwen3.5: Qwen2's pattern with combining marks (\p{M}) kept inside
 * letter runs and out of the punctuation class. */
static const char *const k_qwen35[] = {
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/* DeepSeek-V3 (R1, V3.1, V3.2): digit groups of up to three, then runs of
 * CJK ideographs and kana, then words (a leading ASCII punctuation mark
 * may start an ASCII word), punctuation/symbol runs and whitespace. */
static const char *const k_deepseek_v3[] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
     "| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
};

static const struct {
    const char *name;
    hr_pretok_kind kind;
} k_names[] = {
    {"default", HR_PRE_GPT2},
    {"gpt-2", HR_PRE_GPT2},
    {"gpt2", HR_PRE_GPT2},
    {"llama-bpe", HR_PRE_LLAMA3},
    {"llama3", HR_PRE_LLAMA3},
    {"llama-v3", HR_PRE_LLAMA3},
    {"qwen2", HR_PRE_QWEN2},
    {"deepseek-r1-qwen", HR_PRE_QWEN2},
    {"deepseek-llm", HR_PRE_DEEPSEEK_LLM},
    {"deepseek-coder", HR_PRE_DEEPSEEK_CODER},
    {"deepseek-v3", HR_PRE_DEEPSEEK_V3},
    {"qwen35", HR_PRE_QWEN35},
    {"gpt-4o", HR_PRE_O200K},
    {"o200k", HR_PRE_O200K},
    {"gpt-oss", HR_PRE_O200K},
    {"llama4", HR_PRE_O200K},       /* Llama 4 Scout / Maverick */
    {"dbrx", HR_PRE_CL100K},        /* cl100k: Phi-4 (14B) files carry this name */
    {"smaug-bpe", HR_PRE_CL100K},
};

hr_status hr_pretok_init(hr_vocab *v, const char *pre_name, hr_err *err)
{
    const char *const *pats = NULL;
    int n = 0;
    bool found = false;
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (!strcmp(pre_name, k_names[i].name)) {
            v->pre = k_names[i].kind;
            found = true;
            break;
        }
    if (!found)
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "pre-tokenizer '%s' (tokenizer.ggml.pre) is not supported; supported: gpt-2, "
                          "llama-bpe, qwen2, qwen35, deepseek-llm, deepseek-coder, deepseek-v3, gpt-4o, llama4, dbrx",
                          pre_name);
    switch (v->pre) {
    case HR_PRE_GPT2: pats = k_gpt2; n = 1; break;
    case HR_PRE_LLAMA3:
    case HR_PRE_CL100K: pats = k_llama3; n = 1; break;
    case HR_PRE_QWEN2: pats = k_qwen2; n = 1; break;
    case HR_PRE_DEEPSEEK_LLM: pats = k_deepseek_llm; n = 6; break;
    case HR_PRE_DEEPSEEK_CODER: pats = k_deepseek_coder; n = 5; break;
    case HR_PRE_O200K: pats = k_o200k; n = 1; break;
    case HR_PRE_QWEN35: pats = k_qwen35; n = 1; break;
    case HR_PRE_DEEPSEEK_V3: pats = k_deepseek_v3; n = 3; break;
    }
    /* Llama 3's tokenizer takes a whole pre-token that is itself in the
     * vocabulary without running merges (tokenizer.json "ignore_merges"). */
    v->ignore_merges = v->pre == HR_PRE_LLAMA3;
    for (int i = 0; i < n; i++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pats[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec,
                                       &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            hr_pretok_free(v);
            return hr_err_set(err, HR_ERR_UNSUPPORTED, "pre-tokenizer '%s' step %d: %s at offset %zu", pre_name,
                              i, (const char *)msg, (size_t)eo);
        }
        v->re[i] = re;
        v->step_jit[i] = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
        v->n_steps = i + 1;
    }
    return HR_OK;
}

void hr_pretok_free(hr_vocab *v)
{
    for (int i = 0; i < HR_PRE_MAX_STEPS; i++) {
        pcre2_code_free(v->re[i]);
        v->re[i] = NULL;
    }
    v->n_steps = 0;
}

/* Splits [s, s+n) with step k and hands each piece to step k+1; the pieces
 * of the last step go to the BPE model. */
static void split_step(const hr_vocab *v, hr_scratch *sc, int k, const char *s, size_t n, hr_sink *out)
{
    if (n == 0)
        return;
    if (k == v->n_steps) {
        hr_bpe_word(v, sc, (const unsigned char *)s, n, out);
        return;
    }
    const pcre2_code *re = v->re[k];
    pcre2_match_data *md = sc->match_data;
    PCRE2_SIZE pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, sc->mctx);
        if (rc < 0)
            break; /* no more matches (or a resource limit: the rest is one piece) */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        PCRE2_SIZE a = ov[0], b = ov[1];
        if (b <= a) {
            /* empty match: step one character further */
            pos = a + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (a > gap)
            split_step(v, sc, k + 1, s + gap, a - gap, out);
        split_step(v, sc, k + 1, s + a, b - a, out);
        gap = pos = b;
    }
    if (gap < n)
        split_step(v, sc, k + 1, s + gap, n - gap, out);
}

void hr_bpe_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, hr_sink *out)
{
    split_step(v, sc, 0, s, n, out);
}
