/* gguf.c - GGUF v2/v3 reader.
 *
 * Layout of a GGUF file (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 *   n_kv x (string key, u32 value type, value),
 *   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset),
 *   padding to general.alignment (default 32), tensor data.
 * A string is u64 length + bytes; an array is u32 element type, u64 count,
 * elements.
 *
 * Hostile input is the design constraint: every read goes through a cursor
 * that checks the remaining length, every count is bounded by the bytes that
 * could possibly hold it before anything is allocated, nesting depth is
 * capped, and duplicate keys/tensor names are rejected with a hash set so a
 * file with millions of entries stays linear. */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant/quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DEPTH 8     /* nested array depth */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_ITEMS (16ull << 20) /* string/array elements over all metadata */

typedef struct {
    hr_gguf_str key;
    hr_gguf_value val;
} gguf_kv;

/* Open-addressing hash index of names; slots hold entry index + 1 (0 = empty). */
typedef struct {
    uint64_t *slots;
    uint64_t cap; /* power of two, >= 2x entries */
} name_index;

struct hr_gguf {
    const uint8_t *base; /* whole file */
    size_t size;
    bool mapped;         /* base came from mmap (unmap on close) */
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    hr_gguf_tensor *tensors;
    name_index kv_index;
    name_index tensor_index;
    uint64_t data_offset;
    /* element arrays of string/array-typed metadata, freed on close */
    hr_gguf_value **chunks;
    uint64_t n_chunks, cap_chunks;
    uint64_t items_left; /* budget of parsed elements, bounds memory */
};

typedef struct {
    const uint8_t *p;
    size_t left;
    size_t size; /* total, for error messages */
    hr_err *err;
} cursor;

static size_t cur_pos(const cursor *c) { return c->size - c->left; }

static hr_status cur_need(cursor *c, uint64_t n, const char *what)
{
    if (n > c->left)
        return hr_err_set(c->err, HR_ERR_FORMAT,
                          "truncated file: %s needs %llu bytes at offset %zu but only %zu remain", what,
                          (unsigned long long)n, cur_pos(c), c->left);
    return HR_OK;
}

static hr_status cur_read(cursor *c, void *dst, size_t n, const char *what)
{
    hr_status st = cur_need(c, n, what);
    if (st)
        return st;
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return HR_OK;
}

static hr_status cur_u32(cursor *c, uint32_t *v, const char *what) { return cur_read(c, v, 4, what); }
static hr_status cur_u64(cursor *c, uint64_t *v, const char *what) { return cur_read(c, v, 8, what); }

static hr_status cur_str(cursor *c, hr_gguf_str *s, const char *what)
{
    uint64_t len;
    hr_status st = cur_u64(c, &len, what);
    if (st)
        return st;
    if ((st = cur_need(c, len, what)))
        return st;
    s->ptr = (const char *)c->p;
    s->len = len;
    c->p += len;
    c->left -= len;
    return HR_OK;
}

size_t hr_gguf_type_size(hr_gguf_type t)
{
    switch (t) {
    case HR_GGUF_U8: case HR_GGUF_I8: case HR_GGUF_BOOL: return 1;
    case HR_GGUF_U16: case HR_GGUF_I16: return 2;
    case HR_GGUF_U32: case HR_GGUF_I32: case HR_GGUF_F32: return 4;
    case HR_GGUF_U64: case HR_GGUF_I64: case HR_GGUF_F64: return 8;
    default: return 0;
    }
}

const char *hr_gguf_type_name(hr_gguf_type t)
{
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

/* Decodes one scalar at p into v (type already validated). */
static void scalar_decode(uint32_t t, const uint8_t *p, hr_gguf_value *v)
{
    v->type = (hr_gguf_type)t;
    switch (t) {
    case HR_GGUF_U8: v->v.u = p[0]; break;
    case HR_GGUF_BOOL: v->v.u = p[0] != 0; break;
    case HR_GGUF_I8: v->v.i = (int8_t)p[0]; break;
    case HR_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); v->v.u = x; break; }
    case HR_GGUF_I16: { int16_t x; memcpy(&x, p, 2); v->v.i = x; break; }
    case HR_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); v->v.u = x; break; }
    case HR_GGUF_I32: { int32_t x; memcpy(&x, p, 4); v->v.i = x; break; }
    case HR_GGUF_F32: { float x; memcpy(&x, p, 4); v->v.f = x; break; }
    case HR_GGUF_U64: { uint64_t x; memcpy(&x, p, 8); v->v.u = x; break; }
    case HR_GGUF_I64: { int64_t x; memcpy(&x, p, 8); v->v.i = x; break; }
    case HR_GGUF_F64: { double x; memcpy(&x, p, 8); v->v.f = x; break; }
    default: break;
    }
}

/* Allocates n parsed elements. The element budget (GGUF_MAX_ITEMS, and
 * one element per 8 bytes of file) caps what a hostile file can make us
 * allocate at a small multiple of its size. */
static hr_status items_alloc(hr_gguf *g, uint64_t n, hr_gguf_value **out, hr_err *err)
{
    if (n > g->items_left)
        return hr_err_set(err, HR_ERR_LIMIT, "metadata arrays hold more than %llu elements in all",
                          (unsigned long long)GGUF_MAX_ITEMS);
    if (g->n_chunks == g->cap_chunks) {
        uint64_t cap = g->cap_chunks ? g->cap_chunks * 2 : 16;
        hr_gguf_value **c = realloc(g->chunks, cap * sizeof *c);
        if (!c)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory for metadata arrays");
        g->chunks = c;
        g->cap_chunks = cap;
    }
    hr_gguf_value *items = calloc(n, sizeof *items);
    if (!items)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a metadata array of %llu elements",
                          (unsigned long long)n);
    g->chunks[g->n_chunks++] = items;
    g->items_left -= n;
    *out = items;
    return HR_OK;
}

static hr_status parse_value(hr_gguf *g, cursor *c, uint32_t type, hr_gguf_value *v, int depth, const char *what)
{
    hr_status st;
    size_t ss = hr_gguf_type_size((hr_gguf_type)type);
    if (ss) {
        if ((st = cur_need(c, ss, what)))
            return st;
        scalar_decode(type, c->p, v);
        c->p += ss;
        c->left -= ss;
        return HR_OK;
    }
    if (type == HR_GGUF_STRING) {
        v->type = HR_GGUF_STRING;
        return cur_str(c, &v->v.s, what);
    }
    if (type != HR_GGUF_ARRAY)
        return hr_err_set(c->err, HR_ERR_FORMAT, "%s has invalid value type %u", what, type);
    if (depth >= GGUF_MAX_DEPTH)
        return hr_err_set(c->err, HR_ERR_FORMAT, "%s: arrays nested deeper than %d levels", what, GGUF_MAX_DEPTH);

    uint32_t elem;
    uint64_t n;
    if ((st = cur_u32(c, &elem, what)) || (st = cur_u64(c, &n, what)))
        return st;
    v->type = HR_GGUF_ARRAY;
    v->v.arr.elem = (hr_gguf_type)elem;
    v->v.arr.n = n;
    v->v.arr.raw = NULL;
    v->v.arr.items = NULL;
    size_t es = hr_gguf_type_size((hr_gguf_type)elem);
    if (es) {
        if (n > c->left / es)
            return hr_err_set(c->err, HR_ERR_FORMAT, "%s: array of %llu %s elements exceeds the file",
                              what, (unsigned long long)n, hr_gguf_type_name((hr_gguf_type)elem));
        v->v.arr.raw = c->p;
        c->p += n * es;
        c->left -= n * es;
        return HR_OK;
    }
    if (elem != HR_GGUF_STRING && elem != HR_GGUF_ARRAY)
        return hr_err_set(c->err, HR_ERR_FORMAT, "%s: array has invalid element type %u", what, elem);
    /* each string element takes >= 8 bytes, each nested array >= 12 */
    uint64_t min_elem = elem == HR_GGUF_STRING ? 8 : 12;
    if (n > c->left / min_elem)
        return hr_err_set(c->err, HR_ERR_FORMAT, "%s: array of %llu elements exceeds the file", what,
                          (unsigned long long)n);
    if (n == 0)
        return HR_OK;
    hr_gguf_value *items = NULL;
    if ((st = items_alloc(g, n, &items, c->err)))
        return st;
    v->v.arr.items = items;
    for (uint64_t i = 0; i < n; i++)
        if ((st = parse_value(g, c, elem, &items[i], depth + 1, what)))
            return st;
    return HR_OK;
}

static uint64_t str_hash(const char *p, uint64_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool str_eq2(hr_gguf_str a, hr_gguf_str b) { return a.len == b.len && !memcmp(a.ptr, b.ptr, a.len); }

static hr_status index_init(name_index *ix, uint64_t n)
{
    ix->cap = 16;
    while (ix->cap < n * 2)
        ix->cap <<= 1;
    ix->slots = calloc(ix->cap, sizeof *ix->slots);
    return ix->slots ? HR_OK : HR_ERR_NOMEM;
}

/* Inserts entry i named `name` (names(i) gives entry names); returns the
 * existing entry + 1 if the name is taken (nothing inserted), else 0. */
static uint64_t index_add(name_index *ix, hr_gguf_str name, uint64_t i, const hr_gguf *g,
                          hr_gguf_str (*names)(const hr_gguf *, uint64_t))
{
    uint64_t mask = ix->cap - 1;
    for (uint64_t h = str_hash(name.ptr, name.len) & mask;; h = (h + 1) & mask) {
        uint64_t slot = ix->slots[h];
        if (!slot) {
            ix->slots[h] = i + 1;
            return 0;
        }
        if (str_eq2(names(g, slot - 1), name))
            return slot;
    }
}

static uint64_t index_find(const name_index *ix, const char *name, const hr_gguf *g,
                           hr_gguf_str (*names)(const hr_gguf *, uint64_t))
{
    if (!ix->slots)
        return 0;
    size_t n = strlen(name);
    uint64_t mask = ix->cap - 1;
    for (uint64_t h = str_hash(name, n) & mask;; h = (h + 1) & mask) {
        uint64_t slot = ix->slots[h];
        if (!slot || hr_gguf_str_eq(names(g, slot - 1), name))
            return slot;
    }
}

static hr_gguf_str kv_name(const hr_gguf *g, uint64_t i) { return g->kv[i].key; }
static hr_gguf_str tensor_name(const hr_gguf *g, uint64_t i) { return g->tensors[i].name; }

static char *name_for_msg(hr_gguf_str s, char *buf, size_t cap)
{
    hr_gguf_str_copy(s, buf, cap);
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = '?';
    return buf;
}

static hr_status parse_tensor(hr_gguf *g, cursor *c, uint64_t idx, hr_err *err)
{
    hr_gguf_tensor *t = &g->tensors[idx];
    char nm[128];
    hr_status st;
    if ((st = cur_str(c, &t->name, "tensor name")))
        return st;
    if (t->name.len == 0 || t->name.len > 255)
        return hr_err_set(err, HR_ERR_FORMAT, "tensor %llu has a name of invalid length %llu",
                          (unsigned long long)idx, (unsigned long long)t->name.len);
    name_for_msg(t->name, nm, sizeof nm);
    if (memchr(t->name.ptr, 0, t->name.len))
        return hr_err_set(err, HR_ERR_FORMAT, "tensor name '%s' contains a NUL byte", nm);
    if ((st = cur_u32(c, &t->n_dims, "tensor dims")))
        return st;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' has %u dimensions (1..%d allowed)", nm, t->n_dims,
                          GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if ((st = cur_u64(c, &ne, "tensor shape")))
            return st;
        if (ne > (uint64_t)INT64_MAX / 2)
            return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' dimension %u is absurd (%llu)", nm, d,
                              (unsigned long long)ne);
        if (ne != 0 && nel > (UINT64_MAX / 4) / ne)
            return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' element count overflows", nm);
        nel *= ne;
        t->ne[d] = (int64_t)ne;
    }
    if ((st = cur_u32(c, &t->type, "tensor type")) || (st = cur_u64(c, &t->offset, "tensor offset")))
        return st;
    const hr_type_traits *tr = hr_type_get(t->type);
    if (!tr || tr->block_size <= 0 || tr->type_size == 0)
        return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' has unknown type id %u", nm, t->type);
    if (t->ne[0] % tr->block_size)
        return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s': row of %lld elements is not a multiple of the %s block size %lld",
                          nm, (long long)t->ne[0], tr->name, (long long)tr->block_size);
    uint64_t nblocks = nel / (uint64_t)tr->block_size;
    if (nblocks > UINT64_MAX / tr->type_size)
        return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' byte size overflows", nm);
    t->size = nblocks * tr->type_size;
    if (index_add(&g->tensor_index, t->name, idx, g, tensor_name))
        return hr_err_set(err, HR_ERR_FORMAT, "duplicate tensor name '%s'", nm);
    return HR_OK;
}

static hr_status parse(hr_gguf *g, hr_err *err)
{
    cursor c = {g->base, g->size, g->size, err};
    hr_status st;
    char magic[4];
    if ((st = cur_read(&c, magic, 4, "magic")))
        return hr_err_set(err, HR_ERR_FORMAT, "not a GGUF file (%zu bytes, too short for the header)", g->size);
    if (memcmp(magic, "GGUF", 4))
        return hr_err_set(err, HR_ERR_FORMAT, "not a GGUF file (bad magic)");
    if ((st = cur_u32(&c, &g->version, "header")))
        return st;
    if (g->version != 2 && g->version != 3)
        return hr_err_set(err, HR_ERR_UNSUPPORTED, "unsupported GGUF version %u (2 and 3 are supported)", g->version);
    if ((st = cur_u64(&c, &g->n_tensors, "header")) || (st = cur_u64(&c, &g->n_kv, "header")))
        return st;
    /* a key-value pair takes >= 13 bytes (key length, type, 1-byte value);
     * a tensor entry >= 33 (name length+1, dims, one dim, type, offset) */
    if (g->n_kv > c.left / 13)
        return hr_err_set(err, HR_ERR_FORMAT, "header claims %llu metadata entries, more than the file can hold",
                          (unsigned long long)g->n_kv);
    if (g->n_tensors > c.left / 33)
        return hr_err_set(err, HR_ERR_FORMAT, "header claims %llu tensors, more than the file can hold",
                          (unsigned long long)g->n_tensors);

    g->items_left = c.left / 8 < GGUF_MAX_ITEMS ? c.left / 8 : GGUF_MAX_ITEMS;
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    if (!g->kv || index_init(&g->kv_index, g->n_kv))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for %llu metadata entries", (unsigned long long)g->n_kv);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        uint32_t type;
        if ((st = cur_str(&c, &kv->key, "metadata key")) || (st = cur_u32(&c, &type, "metadata type")))
            return st;
        char key[128];
        name_for_msg(kv->key, key, sizeof key);
        if (memchr(kv->key.ptr, 0, kv->key.len))
            return hr_err_set(err, HR_ERR_FORMAT, "metadata key '%s' contains a NUL byte", key);
        if (index_add(&g->kv_index, kv->key, i, g, kv_name))
            return hr_err_set(err, HR_ERR_FORMAT, "duplicate metadata key '%s'", key);
        char what[160];
        snprintf(what, sizeof what, "metadata '%s'", key);
        if ((st = parse_value(g, &c, type, &kv->val, 0, what)))
            return st;
        if (hr_gguf_str_eq(kv->key, "general.alignment")) {
            if (kv->val.type != HR_GGUF_U32 || kv->val.v.u == 0 || (kv->val.v.u & (kv->val.v.u - 1)))
                return hr_err_set(err, HR_ERR_FORMAT, "general.alignment must be a power-of-two u32");
            g->alignment = kv->val.v.u;
        }
    }

    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors || index_init(&g->tensor_index, g->n_tensors))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for %llu tensors", (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((st = parse_tensor(g, &c, i, err)))
            return st;

    uint64_t pos = cur_pos(&c);
    uint64_t data = (pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && data > g->size)
        return hr_err_set(err, HR_ERR_FORMAT, "truncated file: tensor data section starts at %llu, file has %zu bytes",
                          (unsigned long long)data, g->size);
    g->data_offset = data;
    uint64_t data_size = data <= g->size ? g->size - data : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        hr_gguf_tensor *t = &g->tensors[i];
        char nm[128];
        name_for_msg(t->name, nm, sizeof nm);
        if (t->offset % g->alignment)
            return hr_err_set(err, HR_ERR_FORMAT, "tensor '%s' offset %llu is not aligned to %llu", nm,
                              (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > data_size || t->size > data_size - t->offset)
            return hr_err_set(err, HR_ERR_FORMAT,
                              "tensor '%s' (%llu bytes at data offset %llu) extends past the end of the file "
                              "(data section is %llu bytes)",
                              nm, (unsigned long long)t->size, (unsigned long long)t->offset,
                              (unsigned long long)data_size);
        t->data = g->base + data + t->offset;
    }
    return HR_OK;
}

static hr_status open_common(hr_gguf *g, hr_gguf **out, hr_err *err)
{
    hr_status st = parse(g, err);
    if (st) {
        hr_gguf_close(g);
        return st;
    }
    *out = g;
    return HR_OK;
}

hr_status hr_gguf_open_memory(const void *data, size_t size, hr_gguf **out, hr_err *err)
{
    *out = NULL;
    hr_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

hr_status hr_gguf_open(const char *path, hr_gguf **out, hr_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hr_err_set(err, HR_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return hr_err_set(err, HR_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return hr_err_set(err, HR_ERR_IO, "'%s' is not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return hr_err_set(err, HR_ERR_FORMAT, "'%s' is not a GGUF file (%lld bytes)", path, (long long)sb.st_size);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return hr_err_set(err, HR_ERR_IO, "cannot mmap '%s': %s", path, strerror(e));
    hr_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, (size_t)sb.st_size);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    g->base = map;
    g->size = (size_t)sb.st_size;
    g->mapped = true;
    return open_common(g, out, err);
}

void hr_gguf_close(hr_gguf *g)
{
    if (!g)
        return;
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g->kv);
    for (uint64_t i = 0; i < g->n_chunks; i++)
        free(g->chunks[i]);
    free(g->chunks);
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g);
}

uint32_t hr_gguf_version(const hr_gguf *g) { return g->version; }
uint64_t hr_gguf_file_size(const hr_gguf *g) { return g->size; }
uint64_t hr_gguf_alignment(const hr_gguf *g) { return g->alignment; }
uint64_t hr_gguf_n_kv(const hr_gguf *g) { return g->n_kv; }
hr_gguf_str hr_gguf_key_at(const hr_gguf *g, uint64_t i) { return g->kv[i].key; }
const hr_gguf_value *hr_gguf_value_at(const hr_gguf *g, uint64_t i) { return &g->kv[i].val; }
uint64_t hr_gguf_n_tensors(const hr_gguf *g) { return g->n_tensors; }
const hr_gguf_tensor *hr_gguf_tensor_at(const hr_gguf *g, uint64_t i) { return &g->tensors[i]; }

bool hr_gguf_str_eq(hr_gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && !memcmp(s.ptr, c, n);
}

char *hr_gguf_str_copy(hr_gguf_str s, char *buf, size_t cap)
{
    if (!cap)
        return buf;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return buf;
}

const hr_gguf_value *hr_gguf_find(const hr_gguf *g, const char *key)
{
    uint64_t slot = index_find(&g->kv_index, key, g, kv_name);
    return slot ? &g->kv[slot - 1].val : NULL;
}

const hr_gguf_tensor *hr_gguf_find_tensor(const hr_gguf *g, const char *name)
{
    uint64_t slot = index_find(&g->tensor_index, name, g, tensor_name);
    return slot ? &g->tensors[slot - 1] : NULL;
}

static bool is_uint(hr_gguf_type t) { return t == HR_GGUF_U8 || t == HR_GGUF_U16 || t == HR_GGUF_U32 || t == HR_GGUF_U64; }
static bool is_sint(hr_gguf_type t) { return t == HR_GGUF_I8 || t == HR_GGUF_I16 || t == HR_GGUF_I32 || t == HR_GGUF_I64; }

bool hr_gguf_get_i64(const hr_gguf *g, const char *key, int64_t *out)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v)
        return false;
    if (is_uint(v->type)) {
        if (v->v.u > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v->v.u;
        return true;
    }
    if (is_sint(v->type)) {
        *out = v->v.i;
        return true;
    }
    return false;
}

bool hr_gguf_get_u64(const hr_gguf *g, const char *key, uint64_t *out)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v)
        return false;
    if (is_uint(v->type)) {
        *out = v->v.u;
        return true;
    }
    if (is_sint(v->type) && v->v.i >= 0) {
        *out = (uint64_t)v->v.i;
        return true;
    }
    return false;
}

bool hr_gguf_get_u32(const hr_gguf *g, const char *key, uint32_t *out)
{
    uint64_t x;
    if (!hr_gguf_get_u64(g, key, &x) || x > UINT32_MAX)
        return false;
    *out = (uint32_t)x;
    return true;
}

bool hr_gguf_get_f32(const hr_gguf *g, const char *key, float *out)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v)
        return false;
    if (v->type == HR_GGUF_F32 || v->type == HR_GGUF_F64)
        *out = (float)v->v.f;
    else if (is_uint(v->type))
        *out = (float)v->v.u;
    else if (is_sint(v->type))
        *out = (float)v->v.i;
    else
        return false;
    return true;
}

bool hr_gguf_get_bool(const hr_gguf *g, const char *key, bool *out)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v || (v->type != HR_GGUF_BOOL && !is_uint(v->type)))
        return false;
    *out = v->v.u != 0;
    return true;
}

bool hr_gguf_get_str(const hr_gguf *g, const char *key, hr_gguf_str *out)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v || v->type != HR_GGUF_STRING)
        return false;
    *out = v->v.s;
    return true;
}

const hr_gguf_value *hr_gguf_get_arr(const hr_gguf *g, const char *key, hr_gguf_type elem)
{
    const hr_gguf_value *v = hr_gguf_find(g, key);
    if (!v || v->type != HR_GGUF_ARRAY)
        return NULL;
    if (elem != HR_GGUF_ARRAY && v->v.arr.elem != elem)
        return NULL;
    return v;
}

double hr_gguf_arr_f64(const hr_gguf_value *arr, uint64_t i)
{
    size_t es = hr_gguf_type_size(arr->v.arr.elem);
    if (!es || i >= arr->v.arr.n)
        return 0.0;
    hr_gguf_value v = {0};
    scalar_decode(arr->v.arr.elem, (const uint8_t *)arr->v.arr.raw + i * es, &v);
    if (v.type == HR_GGUF_F32 || v.type == HR_GGUF_F64)
        return v.v.f;
    return is_sint(v.type) ? (double)v.v.i : (double)v.v.u;
}

int64_t hr_gguf_arr_i64(const hr_gguf_value *arr, uint64_t i)
{
    size_t es = hr_gguf_type_size(arr->v.arr.elem);
    if (!es || i >= arr->v.arr.n)
        return 0;
    hr_gguf_value v = {0};
    scalar_decode(arr->v.arr.elem, (const uint8_t *)arr->v.arr.raw + i * es, &v);
    if (v.type == HR_GGUF_F32 || v.type == HR_GGUF_F64) {
        /* saturate: a cast of NaN or of a value out of range is undefined */
        if (!(v.v.f == v.v.f))
            return 0;
        if (v.v.f >= 9223372036854775807.0)
            return INT64_MAX;
        if (v.v.f <= -9223372036854775808.0)
            return INT64_MIN;
        return (int64_t)v.v.f;
    }
    return is_sint(v.type) ? v.v.i : (int64_t)v.v.u;
}
