/* gguf.h - a validating reader for GGUF v2/v3 files.
 *
 * The file is mmapped read-only; metadata is parsed once into a table, and
 * tensor data is never copied: hr_gguf_tensor.data points into the mapping.
 * Every count, length, offset and size is checked against the file before
 * use, so a truncated, corrupt or hostile file yields HR_ERR_FORMAT with a
 * message naming the problem, never an out-of-bounds read or a huge
 * allocation (allocations are bounded by the file size).
 *
 * Strings in GGUF are length-prefixed, not NUL-terminated: hr_gguf_str
 * carries a pointer into the mapping and a length. */
#ifndef HR_GGUF_GGUF_H
#define HR_GGUF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct hr_gguf hr_gguf;

typedef enum {
    HR_GGUF_U8 = 0,
    HR_GGUF_I8 = 1,
    HR_GGUF_U16 = 2,
    HR_GGUF_I16 = 3,
    HR_GGUF_U32 = 4,
    HR_GGUF_I32 = 5,
    HR_GGUF_F32 = 6,
    HR_GGUF_BOOL = 7,
    HR_GGUF_STRING = 8,
    HR_GGUF_ARRAY = 9,
    HR_GGUF_U64 = 10,
    HR_GGUF_I64 = 11,
    HR_GGUF_F64 = 12,
} hr_gguf_type;

typedef struct {
    const char *ptr; /* not NUL-terminated; points into the mapping */
    uint64_t len;
} hr_gguf_str;

typedef struct hr_gguf_value hr_gguf_value;
struct hr_gguf_value {
    hr_gguf_type type;
    union {
        uint64_t u;     /* U8, U16, U32, U64, BOOL */
        int64_t i;      /* I8, I16, I32, I64 */
        double f;       /* F32, F64 */
        hr_gguf_str s;  /* STRING */
        struct {
            hr_gguf_type elem;  /* element type */
            uint64_t n;         /* element count */
            const void *raw;    /* scalar elements: packed little-endian data in the mapping */
            hr_gguf_value *items; /* STRING and ARRAY elements: parsed values (n of them) */
        } arr;
    } v;
};

typedef struct {
    hr_gguf_str name;
    uint32_t type;       /* GGML type id (see quant/quant.h) */
    uint32_t n_dims;     /* 1..4 */
    int64_t ne[4];       /* elements per dimension, ne[0] fastest; unused dims are 1 */
    uint64_t offset;     /* from the start of the data section */
    uint64_t size;       /* bytes */
    const void *data;    /* in the mapping */
} hr_gguf_tensor;

/* Opens and validates a file. On failure *out is NULL and err says why. */
hr_status hr_gguf_open(const char *path, hr_gguf **out, hr_err *err);

/* Parses a GGUF image held in memory (not copied: must outlive the handle).
 * Used by tests and the fuzzer. */
hr_status hr_gguf_open_memory(const void *data, size_t size, hr_gguf **out, hr_err *err);

void hr_gguf_close(hr_gguf *g);

uint32_t hr_gguf_version(const hr_gguf *g);
uint64_t hr_gguf_file_size(const hr_gguf *g);
uint64_t hr_gguf_alignment(const hr_gguf *g);

/* Metadata. Keys are compared byte-for-byte. */
uint64_t hr_gguf_n_kv(const hr_gguf *g);
hr_gguf_str hr_gguf_key_at(const hr_gguf *g, uint64_t i);
const hr_gguf_value *hr_gguf_value_at(const hr_gguf *g, uint64_t i);
const hr_gguf_value *hr_gguf_find(const hr_gguf *g, const char *key);

/* Typed getters with numeric coercion between integer types (and integer to
 * float). They return false if the key is missing or of an incompatible type,
 * leaving *out untouched (so callers may preset a default). */
bool hr_gguf_get_u64(const hr_gguf *g, const char *key, uint64_t *out);
bool hr_gguf_get_u32(const hr_gguf *g, const char *key, uint32_t *out);
bool hr_gguf_get_i64(const hr_gguf *g, const char *key, int64_t *out);
bool hr_gguf_get_f32(const hr_gguf *g, const char *key, float *out);
bool hr_gguf_get_bool(const hr_gguf *g, const char *key, bool *out);
bool hr_gguf_get_str(const hr_gguf *g, const char *key, hr_gguf_str *out);
/* Array of elem type `elem` (HR_GGUF_ARRAY matches any); NULL otherwise. */
const hr_gguf_value *hr_gguf_get_arr(const hr_gguf *g, const char *key, hr_gguf_type elem);

/* Element i of a scalar array as a number (any integer/float/bool elem type). */
double hr_gguf_arr_f64(const hr_gguf_value *arr, uint64_t i);
int64_t hr_gguf_arr_i64(const hr_gguf_value *arr, uint64_t i);

/* Tensors. */
uint64_t hr_gguf_n_tensors(const hr_gguf *g);
const hr_gguf_tensor *hr_gguf_tensor_at(const hr_gguf *g, uint64_t i);
const hr_gguf_tensor *hr_gguf_find_tensor(const hr_gguf *g, const char *name);

/* true if s equals the NUL-terminated c string. */
bool hr_gguf_str_eq(hr_gguf_str s, const char *c);
/* Copies s into buf (truncating, always NUL-terminated); returns buf. */
char *hr_gguf_str_copy(hr_gguf_str s, char *buf, size_t cap);

const char *hr_gguf_type_name(hr_gguf_type t);
/* Bytes of one scalar of type t; 0 for STRING, ARRAY and invalid types. */
size_t hr_gguf_type_size(hr_gguf_type t);

#endif
