/* gguf_write.c - serialising GGUF v3.
 *
 * Every key-value is encoded to bytes immediately into one growing buffer,
 * so writing is a concatenation; tensors keep their own copies of data. */
#include "gguf/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 32

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    void *data;
    size_t size;
} wtensor;

struct hr_gguf_writer {
    buf kv;
    uint64_t n_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

static void put(buf *b, const void *d, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s, size_t n)
{
    put_u64(b, n);
    put(b, s, n);
}

hr_gguf_writer *hr_gguf_writer_new(void) { return calloc(1, sizeof(hr_gguf_writer)); }

void hr_gguf_writer_free(hr_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv.p);
    free(w);
}

/* Appends key + type + value bytes; rolls back on allocation failure. */
static hr_status kv(hr_gguf_writer *w, const char *key, hr_gguf_type type, const void *val, size_t n)
{
    size_t mark = w->kv.n;
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, type);
    put(&w->kv, val, n);
    if (w->kv.oom) {
        w->kv.oom = 0;
        w->kv.n = mark;
        return HR_ERR_NOMEM;
    }
    w->n_kv++;
    return HR_OK;
}

hr_status hr_gguf_writer_u32(hr_gguf_writer *w, const char *key, uint32_t v) { return kv(w, key, HR_GGUF_U32, &v, 4); }
hr_status hr_gguf_writer_i32(hr_gguf_writer *w, const char *key, int32_t v) { return kv(w, key, HR_GGUF_I32, &v, 4); }
hr_status hr_gguf_writer_u64(hr_gguf_writer *w, const char *key, uint64_t v) { return kv(w, key, HR_GGUF_U64, &v, 8); }
hr_status hr_gguf_writer_f32(hr_gguf_writer *w, const char *key, float v) { return kv(w, key, HR_GGUF_F32, &v, 4); }
hr_status hr_gguf_writer_bool(hr_gguf_writer *w, const char *key, int v)
{
    uint8_t b = v != 0;
    return kv(w, key, HR_GGUF_BOOL, &b, 1);
}

hr_status hr_gguf_writer_str(hr_gguf_writer *w, const char *key, const char *v)
{
    buf b = {0};
    put_str(&b, v, strlen(v));
    hr_status st = b.oom ? HR_ERR_NOMEM : kv(w, key, HR_GGUF_STRING, b.p, b.n);
    free(b.p);
    return st;
}


hr_status hr_gguf_writer_arr(hr_gguf_writer *w, const char *key, hr_gguf_type elem, const void *data, uint64_t n)
{
    size_t es = hr_gguf_type_size(elem);
    if (!es)
        return HR_ERR_INVALID;
    buf b = {0};
    put_u32(&b, elem);
    put_u64(&b, n);
    put(&b, data, es * n);
    hr_status st = b.oom ? HR_ERR_NOMEM : kv(w, key, HR_GGUF_ARRAY, b.p, b.n);
    free(b.p);
    return st;
}

hr_status hr_gguf_writer_arr_str(hr_gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    buf b = {0};
    put_u32(&b, HR_GGUF_STRING);
    put_u64(&b, n);
    for (uint64_t i = 0; i < n; i++)
        put_str(&b, v[i], strlen(v[i]));
    hr_status st = b.oom ? HR_ERR_NOMEM : kv(w, key, HR_GGUF_ARRAY, b.p, b.n);
    free(b.p);
    return st;
}

/* Re-encodes a parsed value (recursively for arrays). */
static void put_value(buf *b, const hr_gguf_value *v)
{
    size_t es = hr_gguf_type_size(v->type);
    if (es) {
        uint64_t u = v->type == HR_GGUF_I8 || v->type == HR_GGUF_I16 || v->type == HR_GGUF_I32 || v->type == HR_GGUF_I64
                         ? (uint64_t)v->v.i
                         : v->v.u;
        if (v->type == HR_GGUF_F32) {
            float f = (float)v->v.f;
            put(b, &f, 4);
        } else if (v->type == HR_GGUF_F64) {
            put(b, &v->v.f, 8);
        } else {
            put(b, &u, es); /* little-endian host: low bytes first */
        }
        return;
    }
    if (v->type == HR_GGUF_STRING) {
        put_str(b, v->v.s.ptr, v->v.s.len);
        return;
    }
    put_u32(b, v->v.arr.elem);
    put_u64(b, v->v.arr.n);
    size_t aes = hr_gguf_type_size(v->v.arr.elem);
    if (aes)
        put(b, v->v.arr.raw, aes * v->v.arr.n);
    else
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            put_value(b, &v->v.arr.items[i]);
}

hr_status hr_gguf_writer_copy_kv(hr_gguf_writer *w, const hr_gguf *g, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    for (uint64_t i = 0; i < hr_gguf_n_kv(g); i++) {
        hr_gguf_str k = hr_gguf_key_at(g, i);
        if (plen && (k.len < plen || memcmp(k.ptr, prefix, plen)))
            continue;
        const hr_gguf_value *v = hr_gguf_value_at(g, i);
        size_t mark = w->kv.n;
        put_str(&w->kv, k.ptr, k.len);
        put_u32(&w->kv, v->type);
        put_value(&w->kv, v);
        if (w->kv.oom) {
            w->kv.oom = 0;
            w->kv.n = mark;
            return HR_ERR_NOMEM;
        }
        w->n_kv++;
    }
    return HR_OK;
}

hr_status hr_gguf_writer_tensor(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, const void *data, size_t size)
{
    if (n_dims < 1 || n_dims > 4)
        return HR_ERR_INVALID;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t)
            return HR_ERR_NOMEM;
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(size ? size : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return HR_ERR_NOMEM;
    }
    if (size)
        memcpy(t->data, data, size);
    t->size = size;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    w->n_t++;
    return HR_OK;
}

hr_status hr_gguf_writer_to_memory(const hr_gguf_writer *w, void **out, size_t *size, hr_err *err)
{
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, w->n_t);
    put_u64(&b, w->n_kv);
    put(&b, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&b, t->name, strlen(t->name));
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(&b, (uint64_t)t->ne[d]);
        put_u32(&b, t->type);
        put_u64(&b, off);
        off += (t->size + ALIGN - 1) / ALIGN * ALIGN;
    }
    static const uint8_t zeros[ALIGN];
    put(&b, zeros, (ALIGN - b.n % ALIGN) % ALIGN);
    for (size_t i = 0; i < w->n_t; i++) {
        put(&b, w->t[i].data, w->t[i].size);
        put(&b, zeros, (ALIGN - w->t[i].size % ALIGN) % ALIGN);
    }
    if (b.oom) {
        free(b.p);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory while serialising GGUF");
    }
    *out = b.p;
    *size = b.n;
    return HR_OK;
}

hr_status hr_gguf_writer_to_file(const hr_gguf_writer *w, const char *path, hr_err *err)
{
    void *data;
    size_t n;
    hr_status st = hr_gguf_writer_to_memory(w, &data, &n, err);
    if (st)
        return st;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(data);
        return hr_err_set(err, HR_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    }
    int bad = fwrite(data, 1, n, f) != n;
    bad |= fclose(f) != 0;
    free(data);
    if (bad)
        return hr_err_set(err, HR_ERR_IO, "writing '%s' failed", path);
    return HR_OK;
}
