/* testutil.h - helpers shared by the cmocka tests. */
#ifndef HR_TESTUTIL_H
#define HR_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fixture folder: $HEARTH_FIXTURES, else the build's default (../shared/fixtures). */
const char *tu_fixtures(void);

/* Joins the fixture folder and a relative path into a static buffer (rotating, 8 slots). */
const char *tu_fixture(const char *rel);

/* Reads a whole file; returns malloc'd bytes (NUL-terminated) or NULL; *size gets the length. */
void *tu_read_file(const char *path, size_t *size);

/* The models/arch fixtures hearth cannot load yet: for a name starting with
 * a listed family ("deepseek2-F32.json", "qwen35-Q8_0.gguf"), why (the
 * family and the issue that adds it); NULL for everything else. One list
 * for every test that walks the fixtures: loading a listed file must fail
 * with HR_ERR_UNSUPPORTED, and a family that starts loading fails those
 * tests until it is taken off. */
const char *tu_arch_not_yet(const char *name);

/* True under CI (CI=true in the environment, as .ci/run and scripts/test.sh
 * set it): there a check that cannot run must fail, not skip. */
bool tu_ci(void);

/* In a cmocka test whose prerequisite (why: a printf format) is missing: a
 * failure under CI, a skip elsewhere. */
#define TU_SKIP_OR_FAIL(...)                                                                                          \
    do {                                                                                                              \
        if (tu_ci())                                                                                                  \
            fail_msg("required when CI=true: " __VA_ARGS__);                                                          \
        print_message("skipped: " __VA_ARGS__);                                                                       \
        print_message("\n");                                                                                          \
        skip();                                                                                                       \
    } while (0)

#endif
