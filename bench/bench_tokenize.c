/* bench_tokenize - encoding speed in MB/s on one core.
 *
 * The text is generated here (no downloads): English prose from a word
 * list, C and Python code, and sentences in a dozen scripts, each about
 * --mb megabytes, plus a mix of the three (60/25/15).
 *
 * usage: bench_tokenize [--mb N] [VOCAB.gguf ...]
 * Without files it runs the qwen2, llama-bpe, gpt-2 and llama-spm
 * vocabularies of the fixture folder ($HEARTH_FIXTURES or the build's). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "gguf/gguf.h"
#include "tok/vocab.h"

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 1 << 16;
        while (c < b->n + n + 1)
            c *= 2;
        b->p = realloc(b->p, c);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }

static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state % n;
}

static const char *const k_words[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
    "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
    "would", "who", "so", "no", "time", "people", "year", "way", "day", "man", "thing", "woman", "life",
    "child", "world", "school", "state", "family", "student", "group", "country", "problem", "hand", "part",
    "place", "case", "week", "company", "system", "program", "question", "work", "government", "number",
    "night", "point", "home", "water", "room", "mother", "area", "money", "story", "fact", "month", "lot",
    "right", "study", "book", "eye", "job", "word", "business", "issue", "side", "kind", "head", "house",
    "service", "friend", "father", "power", "hour", "game", "line", "end", "member", "law", "car", "city",
    "community", "name", "president", "team", "minute", "idea", "kid", "body", "information", "back",
    "parent", "face", "others", "level", "office", "door", "health", "person", "art", "war", "history",
    "party", "result", "change", "morning", "reason", "research", "girl", "guy", "moment", "air", "teacher",
    "force", "education", "remarkable", "understanding", "development", "environmental", "responsibility",
    "nevertheless", "approximately", "characteristics", "don't", "it's", "we're", "they've", "I'll",
    "quickly", "slowly", "beautiful", "important", "different", "available", "international", "running",
    "walked", "considered", "described", "1999", "2024", "42", "3.14", "100,000",
};

static void gen_english(buf_t *b, size_t target)
{
    const size_t nw = sizeof k_words / sizeof k_words[0];
    while (b->n < target) {
        int sentences = 3 + (int)rnd(5);
        for (int s = 0; s < sentences; s++) {
            int len = 6 + (int)rnd(18);
            for (int w = 0; w < len; w++) {
                const char *word = k_words[rnd((uint32_t)nw)];
                if (w == 0) {
                    char cap[64];
                    snprintf(cap, sizeof cap, "%s", word);
                    if (cap[0] >= 'a' && cap[0] <= 'z')
                        cap[0] = (char)(cap[0] - 32);
                    puts_(b, cap);
                } else {
                    puts_(b, " ");
                    if (rnd(40) == 0)
                        puts_(b, "\"");
                    puts_(b, word);
                    if (rnd(12) == 0)
                        puts_(b, ",");
                }
            }
            puts_(b, rnd(10) == 0 ? "?" : rnd(12) == 0 ? "!" : ".");
            puts_(b, s + 1 < sentences ? " " : "");
        }
        puts_(b, "\n\n");
    }
}

static const char *const k_idents[] = {"count", "buffer", "index", "value", "result", "node", "item", "offset",
                                       "length", "ctx", "state", "tokens", "weights", "scale", "row", "col"};

static void gen_code(buf_t *b, size_t target)
{
    char line[512];
    const uint32_t ni = sizeof k_idents / sizeof k_idents[0];
    while (b->n < target) {
        const char *a = k_idents[rnd(ni)], *c = k_idents[rnd(ni)], *d = k_idents[rnd(ni)];
        if (rnd(2)) {
            snprintf(line, sizeof line,
                     "static int %s_%s(const struct %s *%s, size_t n)\n{\n"
                     "    int64_t acc = 0;\n"
                     "    for (size_t i = 0; i < n; i++) {\n"
                     "        if (%s->%s[i] > %u)\n"
                     "            acc += (int64_t)%s->%s[i] * 0x%X;\n"
                     "    }\n"
                     "    return (int)(acc >> %u); // %s\n}\n\n",
                     a, c, d, a, a, c, rnd(1000), a, d, rnd(65536), rnd(31), c);
        } else {
            snprintf(line, sizeof line,
                     "def %s_%s(%s, %s=None):\n"
                     "    \"\"\"Return the %s of each %s.\"\"\"\n"
                     "    out = []\n"
                     "    for k, v in enumerate(%s):\n"
                     "        if v is not None and k %% %u == 0:\n"
                     "            out.append({'%s': v, \"%s\": k * %u.5})\n"
                     "    return out  # TODO(%s): handle %s\n\n",
                     a, c, d, a, c, d, d, 2 + rnd(9), a, c, rnd(100), d, a);
        }
        puts_(b, line);
    }
}

static const char *const k_multi[] = {
    "Die Straßenbahn fährt über die Brücke, während es draußen regnet.",
    "Le café était fermé, alors nous sommes allés à la bibliothèque près de la gare.",
    "El niño comió una manzana y después jugó al fútbol con sus amigos.",
    "Наука и техника быстро развиваются в двадцать первом веке.",
    "Сегодня хорошая погода, и мы пойдём гулять в парк.",
    "今天天气很好，我们去公园散步吧。",
    "机器学习模型需要大量的数据来进行训练和评估。",
    "東京の春は桜がとても美しいです。",
    "私は毎朝コーヒーを飲みながらニュースを読みます。",
    "서울은 한국의 수도이며 인구가 매우 많습니다.",
    "اللغة العربية جميلة وغنية بالمفردات.",
    "भारत एक विशाल और विविधतापूर्ण देश है।",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Türkçe öğrenmek sandığınızdan daha kolay olabilir.",
    "Tiếng Việt có nhiều dấu thanh điệu khác nhau.",
    "ภาษาไทยมีตัวอักษรที่สวยงาม",
    "Emoji test: 🦙🚀✨ — “quoted” text… and ½ fractions ×2",
    "Zażółć gęślą jaźń — polskie znaki diakrytyczne.",
};

static void gen_multi(buf_t *b, size_t target)
{
    const uint32_t n = sizeof k_multi / sizeof k_multi[0];
    while (b->n < target) {
        puts_(b, k_multi[rnd(n)]);
        puts_(b, rnd(4) == 0 ? "\n" : " ");
    }
}

static void gen_mixed(buf_t *out, const buf_t *en, const buf_t *code, const buf_t *multi, size_t target)
{
    size_t oe = 0, oc = 0, om = 0;
    while (out->n < target) {
        uint32_t r = rnd(100);
        const buf_t *src = r < 60 ? en : r < 85 ? code : multi;
        size_t *o = r < 60 ? &oe : r < 85 ? &oc : &om;
        size_t chunk = 2000;
        if (*o + chunk > src->n)
            *o = 0;
        /* cut at a line start so that UTF-8 stays whole */
        size_t end = *o + chunk;
        while (end < src->n && src->p[end - 1] != '\n')
            end++;
        put(out, src->p + *o, end - *o);
        *o = end;
    }
}


static void bench_one(const hr_vocab *v, const char *label, const buf_t *t)
{
    size_t cap = t->n + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    double best = 1e30;
    hr_err err = {0};
    for (int rep = 0; rep < 3; rep++) {
        double t0 = hr_now_s();
        if (hr_tok_encode(v, t->p, t->n, false, false, ids, cap, &n, &err) != HR_OK) {
            fprintf(stderr, "encode failed: %s\n", err.msg);
            exit(1);
        }
        double dt = hr_now_s() - t0;
        if (dt < best)
            best = dt;
    }
    printf("  %-12s %7.2f MB  %9zu tokens  %5.2f bytes/token  %8.2f MB/s\n", label, (double)t->n / 1e6, n,
           (double)t->n / (double)(n ? n : 1), (double)t->n / 1e6 / best);
    free(ids);
}

int main(int argc, char **argv)
{
    double mb = 4.0;
    const char *files[16];
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (nf < 16)
            files[nf++] = argv[i];
    }
    if (mb <= 0 || mb > 512)
        mb = 4.0;
    static char defaults[4][4096];
    if (nf == 0) {
        const char *dir = getenv("HEARTH_FIXTURES");
        if (!dir || !*dir)
            dir = HR_FIXTURES_DIR;
        const char *names[] = {"qwen2", "llama-bpe", "gpt-2", "llama-spm"};
        for (int i = 0; i < 4; i++) {
            snprintf(defaults[i], sizeof defaults[i], "%s/tokenizer/ggml-vocab-%s.gguf", dir, names[i]);
            files[nf++] = defaults[i];
        }
    }
    size_t target = (size_t)(mb * 1e6);
    buf_t en = {0}, code = {0}, multi = {0}, mixed = {0};
    gen_english(&en, target);
    gen_code(&code, target);
    gen_multi(&multi, target);
    gen_mixed(&mixed, &en, &code, &multi, target);
    printf("encoding speed, one thread, best of 3\n");
    for (int f = 0; f < nf; f++) {
        hr_gguf *g;
        hr_vocab *v;
        hr_err err = {0};
        if (hr_gguf_open(files[f], &g, &err) != HR_OK || hr_vocab_load(g, &v, &err) != HR_OK) {
            fprintf(stderr, "%s: %s\n", files[f], err.msg);
            return 1;
        }
        const char *base = strrchr(files[f], '/');
        printf("%s\n", base ? base + 1 : files[f]);
        bench_one(v, "english", &en);
        bench_one(v, "code", &code);
        bench_one(v, "multilingual", &multi);
        bench_one(v, "mixed", &mixed);
        hr_vocab_free(v);
        hr_gguf_close(g);
    }
    free(en.p);
    free(code.p);
    free(multi.p);
    free(mixed.p);
    return 0;
}
