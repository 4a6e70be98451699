/* status.h - error reporting shared by every hearth module.
 *
 * Functions that can fail return an hr_status and, when `err` is not NULL,
 * write a one-line human-readable message into it.  Messages name the
 * problem ("tensor 'blk.0.attn_q.weight' extends past end of file"), not
 * the code path.  Only the CLI decides to exit on an error. */
#ifndef HR_BASE_STATUS_H
#define HR_BASE_STATUS_H

#include <stddef.h>

typedef enum {
    HR_OK = 0,
    HR_ERR_IO,          /* open/read/mmap failed */
    HR_ERR_FORMAT,      /* malformed or hostile input data */
    HR_ERR_UNSUPPORTED, /* well-formed but not supported (type, arch) */
    HR_ERR_NOMEM,       /* allocation failed */
    HR_ERR_INVALID,     /* bad argument from the caller */
    HR_ERR_LIMIT,       /* a configured limit was exceeded */
    HR_ERR_NOT_FOUND,   /* a named thing does not exist */
} hr_status;

#define HR_ERR_MSG_MAX 512

typedef struct {
    hr_status status;
    char msg[HR_ERR_MSG_MAX];
} hr_err;

/* Records `st` and a printf-style message in `err` (if not NULL); returns st. */
hr_status hr_err_set(hr_err *err, hr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with more context ("loading x.gguf: ..."). */
hr_status hr_err_prefix(hr_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Stable short name of a status code ("format", "io", ...). */
const char *hr_status_name(hr_status st);

#endif
