#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

hr_status hr_err_set(hr_err *err, hr_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

hr_status hr_err_prefix(hr_err *err, const char *fmt, ...)
{
    if (!err)
        return HR_OK;
    char prefix[HR_ERR_MSG_MAX];
    char old[HR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = 0;
    return err->status;
}

const char *hr_status_name(hr_status st)
{
    switch (st) {
    case HR_OK: return "ok";
    case HR_ERR_IO: return "io";
    case HR_ERR_FORMAT: return "format";
    case HR_ERR_UNSUPPORTED: return "unsupported";
    case HR_ERR_NOMEM: return "nomem";
    case HR_ERR_INVALID: return "invalid";
    case HR_ERR_LIMIT: return "limit";
    case HR_ERR_NOT_FOUND: return "not-found";
    }
    return "unknown";
}
