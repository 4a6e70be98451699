/* gguf_write.h - building GGUF v3 files (for `hearth synth` and tests).
 *
 * Metadata and tensor descriptions are collected in memory, then written in
 * one pass: header, key-values, tensor infos, aligned tensor data. Tensor
 * data is copied when added, so callers may free their buffers. */
#ifndef HR_GGUF_GGUF_WRITE_H
#define HR_GGUF_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "gguf/gguf.h"

typedef struct hr_gguf_writer hr_gguf_writer;

hr_gguf_writer *hr_gguf_writer_new(void);
void hr_gguf_writer_free(hr_gguf_writer *w);

/* Each returns HR_ERR_NOMEM on allocation failure (the writer stays usable). */
hr_status hr_gguf_writer_u32(hr_gguf_writer *w, const char *key, uint32_t v);
hr_status hr_gguf_writer_i32(hr_gguf_writer *w, const char *key, int32_t v);
hr_status hr_gguf_writer_u64(hr_gguf_writer *w, const char *key, uint64_t v);
hr_status hr_gguf_writer_f32(hr_gguf_writer *w, const char *key, float v);
hr_status hr_gguf_writer_bool(hr_gguf_writer *w, const char *key, int v);
hr_status hr_gguf_writer_str(hr_gguf_writer *w, const char *key, const char *v);
/* Array of scalars: elem is the element type, data holds n packed elements. */
hr_status hr_gguf_writer_arr(hr_gguf_writer *w, const char *key, hr_gguf_type elem, const void *data, uint64_t n);
hr_status hr_gguf_writer_arr_str(hr_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* Copies every metadata entry of g (to build a file from another's tokenizer). */
hr_status hr_gguf_writer_copy_kv(hr_gguf_writer *w, const hr_gguf *g, const char *prefix);

/* ne[0] is the row length; n_dims 1..4; data is hr_row_size bytes per row. */
hr_status hr_gguf_writer_tensor(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, const void *data, size_t size);

/* Serialises to a malloc'd buffer (*out, *size) or to a file. */
hr_status hr_gguf_writer_to_memory(const hr_gguf_writer *w, void **out, size_t *size, hr_err *err);
hr_status hr_gguf_writer_to_file(const hr_gguf_writer *w, const char *path, hr_err *err);

#endif
