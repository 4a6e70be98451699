/* libFuzzer target: the GGUF reader must reject or accept any byte string
 * without reading out of bounds, and everything it accepts must be safe to
 * walk (every metadata value, every tensor's first and last byte), and the
 * tokenizer built from its metadata must load or fail cleanly. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tok/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk(const hr_gguf_value *v, int depth)
{
    switch (v->type) {
    case HR_GGUF_STRING:
        if (v->v.s.len)
            sink += (uint8_t)v->v.s.ptr[0] + (uint8_t)v->v.s.ptr[v->v.s.len - 1];
        break;
    case HR_GGUF_ARRAY:
        if (v->v.arr.items)
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                walk(&v->v.arr.items[i], depth + 1);
        else if (v->v.arr.n)
            sink += (uint64_t)hr_gguf_arr_i64(v, 0) + (uint64_t)hr_gguf_arr_i64(v, v->v.arr.n - 1);
        break;
    default:
        sink += v->v.u;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy so the sanitizer sees any overread */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    hr_gguf *g = NULL;
    hr_err err;
    if (hr_gguf_open_memory(copy, size, &g, &err) == HR_OK) {
        for (uint64_t i = 0; i < hr_gguf_n_kv(g); i++)
            walk(hr_gguf_value_at(g, i), 0);
        for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
            const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
            if (t->size)
                sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->size - 1];
            char name[300];
            hr_gguf_str_copy(t->name, name, sizeof name);
            if (hr_gguf_find_tensor(g, name) == NULL)
                abort(); /* every tensor must be findable by its name */
        }
        uint32_t u;
        hr_gguf_get_u32(g, "general.alignment", &u);
        /* hostile tokenizer metadata must be refused or loaded safely */
        hr_vocab *v = NULL;
        if (hr_vocab_load(g, &v, &err) == HR_OK) {
            int32_t ids[64];
            size_t n = 0;
            hr_tok_encode(v, "Hello world 123", 15, true, true, ids, 64, &n, &err);
            char piece[64];
            for (size_t i = 0; i < n && i < 64; i++)
                hr_tok_piece(v, ids[i], true, piece, sizeof piece);
            hr_vocab_free(v);
        }
        hr_gguf_close(g);
    }
    free(copy);
    return 0;
}
