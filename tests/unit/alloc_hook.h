/* alloc_hook.h - allocation-failure injection for tests (never in a release
 * binary).
 *
 * A program linked with alloc_hook.c and
 *     -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,
 *     -Wl,--wrap=strdup,--wrap=strndup,--wrap=aligned_alloc,
 *     -Wl,--wrap=json_loadb,--wrap=json_loads,--wrap=json_load_file
 * sends every allocation made by code in its own objects (hr_core's and the
 * test's) through a counter; ah_install() also routes jansson's and
 * SQLite's allocators through it. While armed, the Nth counted allocation
 * fails (returns NULL, errno ENOMEM), and with `sticky` every one after it
 * too. Allocations while jansson decodes (json_load*) are never failed:
 * jansson 2.14 aborts there (see alloc_hook.c). Libraries linked as shared objects (libc internals, PCRE2, libcurl,
 * libmicrohttpd) are not counted. See docs/TESTING.md. */
#ifndef HR_ALLOC_HOOK_H
#define HR_ALLOC_HOOK_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    AH_ALL_THREADS = 0,
    AH_THIS_THREAD,   /* only allocations of the thread that called ah_arm */
    AH_OTHER_THREADS, /* only allocations of every other thread (a worker such as the scheduler) */
} ah_scope;

/* Routes jansson and SQLite through the hook. Call once, before either is
 * used (SQLite only accepts a new allocator before sqlite3_initialize). */
void ah_install(void);

/* Starts counting from zero; the nth counted allocation (1-based) fails,
 * and every later one too when sticky. n = 0 counts without failing. */
void ah_arm(uint64_t n, bool sticky, ah_scope scope);
/* Stops failing; returns how many allocations were counted since ah_arm. */
uint64_t ah_disarm(void);
/* Allocations failed on purpose since the last ah_arm. */
uint64_t ah_injected(void);
/* Blocks allocated through the hook and not yet freed (every thread, armed
 * or not): equal before and after an operation that cleaned up after itself. */
int64_t ah_live(void);

/* For a server built with the hook: HEARTH_TEST_FAIL_ALLOC_FILE names a file
 * holding "N" or "N+" (sticky) or "0"; on SIGUSR2 the hook re-reads it and
 * re-arms (all threads), and logs each injected failure on stderr. Installed
 * from a constructor when the variable is set. */

#endif
