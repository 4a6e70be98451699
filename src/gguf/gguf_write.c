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
    void *data; /* NULL for a declared (streamed) tensor */
    size_t size;
} wtensor;

struct hr_gguf_writer {
    buf kv;
    uint64_t n_kv;
    wtensor *t;
    size_t n_t, cap_t;
    /* streaming state */
    FILE *sf;
    size_t cur;      /* tensor whose data is being written */
    size_t cur_done; /* bytes of it written so far */
    int sbad;        /* a write failed */
};

static const uint8_t zeros[ALIGN];

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
    if (w->sf)
        fclose(w->sf);
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

hr_status hr_gguf_writer_value(hr_gguf_writer *w, const char *key, const hr_gguf_value *v)
{
    size_t mark = w->kv.n;
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, v->type);
    put_value(&w->kv, v);
    if (w->kv.oom) {
        w->kv.oom = 0;
        w->kv.n = mark;
        return HR_ERR_NOMEM;
    }
    w->n_kv++;
    return HR_OK;
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

static hr_status add_tensor(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                            const int64_t *ne, const void *data, size_t size, int copy)
{
    if (n_dims < 1 || n_dims > 4 || w->sf)
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
    if (copy)
        t->data = malloc(size ? size : 1);
    if (!t->name || (copy && !t->data)) {
        free(t->name);
        free(t->data);
        return HR_ERR_NOMEM;
    }
    if (copy && size)
        memcpy(t->data, data, size);
    t->size = size;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    w->n_t++;
    return HR_OK;
}

hr_status hr_gguf_writer_tensor(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, const void *data, size_t size)
{
    return add_tensor(w, name, type, n_dims, ne, data, size, 1);
}

hr_status hr_gguf_writer_tensor_decl(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                     const int64_t *ne, size_t size)
{
    return add_tensor(w, name, type, n_dims, ne, NULL, size, 0);
}

/* Header, metadata, tensor infos and the padding up to the data section. */
static void put_head(buf *b, const hr_gguf_writer *w)
{
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, w->n_t);
    put_u64(b, w->n_kv);
    put(b, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(b, t->name, strlen(t->name));
        put_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(b, (uint64_t)t->ne[d]);
        put_u32(b, t->type);
        put_u64(b, off);
        off += (t->size + ALIGN - 1) / ALIGN * ALIGN;
    }
    put(b, zeros, (ALIGN - b->n % ALIGN) % ALIGN);
}

hr_status hr_gguf_writer_to_memory(const hr_gguf_writer *w, void **out, size_t *size, hr_err *err)
{
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data)
            return hr_err_set(err, HR_ERR_INVALID, "tensor '%s' has no data (declared for streaming)", w->t[i].name);
    buf b = {0};
    put_head(&b, w);
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

/* ---- streaming ---------------------------------------------------------- */

static void swrite(hr_gguf_writer *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->sf) != n)
        w->sbad = 1;
}

/* Writes the data of tensors that carry their own, and the padding after
 * every completed tensor, until a declared tensor still needs bytes. */
static void stream_advance(hr_gguf_writer *w)
{
    while (w->cur < w->n_t) {
        const wtensor *t = &w->t[w->cur];
        if (t->data && w->cur_done == 0) {
            swrite(w, t->data, t->size);
            w->cur_done = t->size;
        }
        if (w->cur_done < t->size)
            return;
        swrite(w, zeros, (ALIGN - t->size % ALIGN) % ALIGN);
        w->cur++;
        w->cur_done = 0;
    }
}

hr_status hr_gguf_writer_stream_open(hr_gguf_writer *w, const char *path, hr_err *err)
{
    if (w->sf)
        return hr_err_set(err, HR_ERR_INVALID, "GGUF stream already open");
    buf b = {0};
    put_head(&b, w);
    if (b.oom) {
        free(b.p);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory while serialising GGUF");
    }
    w->sf = fopen(path, "wb");
    if (!w->sf) {
        free(b.p);
        return hr_err_set(err, HR_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    }
    w->cur = w->cur_done = 0;
    w->sbad = 0;
    swrite(w, b.p, b.n);
    free(b.p);
    stream_advance(w);
    if (w->sbad)
        return hr_err_set(err, HR_ERR_IO, "writing '%s' failed: %s", path, strerror(errno));
    return HR_OK;
}

hr_status hr_gguf_writer_stream_data(hr_gguf_writer *w, const void *data, size_t n, hr_err *err)
{
    if (!w->sf)
        return hr_err_set(err, HR_ERR_INVALID, "GGUF stream not open");
    if (w->cur >= w->n_t || n > w->t[w->cur].size - w->cur_done)
        return hr_err_set(err, HR_ERR_INVALID, "more tensor data than declared%s%s",
                          w->cur < w->n_t ? " for " : "", w->cur < w->n_t ? w->t[w->cur].name : "");
    swrite(w, data, n);
    w->cur_done += n;
    stream_advance(w);
    if (w->sbad)
        return hr_err_set(err, HR_ERR_IO, "writing GGUF data failed: %s", strerror(errno));
    return HR_OK;
}

hr_status hr_gguf_writer_stream_close(hr_gguf_writer *w, hr_err *err)
{
    if (!w->sf)
        return hr_err_set(err, HR_ERR_INVALID, "GGUF stream not open");
    stream_advance(w);
    hr_status st = HR_OK;
    if (w->cur < w->n_t)
        st = hr_err_set(err, HR_ERR_INVALID, "tensor '%s' is incomplete (%zu of %zu bytes)", w->t[w->cur].name,
                        w->cur_done, w->t[w->cur].size);
    int bad = w->sbad;
    bad |= fclose(w->sf) != 0;
    w->sf = NULL;
    if (!st && bad)
        st = hr_err_set(err, HR_ERR_IO, "writing GGUF file failed");
    return st;
}
