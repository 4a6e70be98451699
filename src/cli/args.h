/* args.h - small, strict option parsing helpers shared by the subcommands. */
#ifndef HR_CLI_ARGS_H
#define HR_CLI_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a whole string as a number in [min, max]; false (and a message on
 * stderr naming the option) if it is not one. */
bool arg_int(const char *opt, const char *s, long long min, long long max, long long *out);
bool arg_float(const char *opt, const char *s, double min, double max, double *out);

/* Parses a UTC date "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS" into Unix ms. */
bool arg_date(const char *s, int64_t *ms);

/* Returns argv[*i + 1] and advances *i, or prints "option X needs a value". */
const char *arg_value(int argc, char **argv, int *i);

/* Parses "1 2 3" (spaces and/or commas) into a malloc'd array. */
bool arg_tokens(const char *s, int32_t **out, size_t *n);

/* Prints "hearth CMD: message" to stderr; returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
