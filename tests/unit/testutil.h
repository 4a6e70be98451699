/* testutil.h - helpers shared by the cmocka tests. */
#ifndef HR_TESTUTIL_H
#define HR_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Fixture folder: $HEARTH_FIXTURES, else the build's default (../shared/fixtures). */
const char *tu_fixtures(void);

/* Joins the fixture folder and a relative path into a static buffer (rotating, 8 slots). */
const char *tu_fixture(const char *rel);

/* Reads a whole file; returns malloc'd bytes (NUL-terminated) or NULL; *size gets the length. */
void *tu_read_file(const char *path, size_t *size);

#endif
