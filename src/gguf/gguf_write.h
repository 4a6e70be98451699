/* gguf_write.h - building GGUF v3 files (for `hearth synth` and tests).
 *
 * Metadata and tensor descriptions are collected in memory, then written in
 * one pass: header, key-values, tensor infos, aligned tensor data. Tensor
 * data is copied when added, so callers may free their buffers.
 *
 * Large files are streamed instead: declare tensors without data
 * (hr_gguf_writer_tensor_decl), open the file with hr_gguf_writer_stream_open
 * (header, metadata and tensor infos are written then), and append each
 * declared tensor's bytes in declaration order with hr_gguf_writer_stream_data;
 * tensors added with data are written by the stream when their turn comes.
 * Alignment padding is inserted automatically. */
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

/* Copies one parsed value (any type, arrays included) under a new key. */
hr_status hr_gguf_writer_value(hr_gguf_writer *w, const char *key, const hr_gguf_value *v);

/* ne[0] is the row length; n_dims 1..4; data is hr_row_size bytes per row. */
hr_status hr_gguf_writer_tensor(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const int64_t *ne, const void *data, size_t size);

/* Declares a tensor of `size` bytes whose data will be streamed later. */
hr_status hr_gguf_writer_tensor_decl(hr_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                     const int64_t *ne, size_t size);

/* Streaming: creates `path`, writes header, metadata, tensor infos and the
 * data of leading tensors that were added with data. */
hr_status hr_gguf_writer_stream_open(hr_gguf_writer *w, const char *path, hr_err *err);
/* Appends n bytes of the current declared tensor's data (may be called many
 * times per tensor; a call may not cross into the next tensor). */
hr_status hr_gguf_writer_stream_data(hr_gguf_writer *w, const void *data, size_t n, hr_err *err);
/* Checks that every tensor was written completely and closes the file. On
 * any failure the file is closed (the partial file is left for the caller
 * to remove). */
hr_status hr_gguf_writer_stream_close(hr_gguf_writer *w, hr_err *err);

/* Serialises to a malloc'd buffer (*out, *size) or to a file (every tensor
 * must have been added with data). */
hr_status hr_gguf_writer_to_memory(const hr_gguf_writer *w, void **out, size_t *size, hr_err *err);
hr_status hr_gguf_writer_to_file(const hr_gguf_writer *w, const char *path, hr_err *err);

#endif
