/* alloc_hook.c - the counters behind alloc_hook.h.
 *
 * --wrap=sym makes the linker resolve this program's references to `sym`
 * to __wrap_sym and `__real_sym` to the C library's sym, so the library
 * code under test is unchanged: the test binary alone decides to fail.
 * Counters are atomics, so the scheduler and writer threads can be swept;
 * the thread scope keeps a sweep deterministic when other threads allocate. */
#include "alloc_hook.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);

static atomic_bool g_armed;
static atomic_bool g_sticky;
static atomic_int g_scope;
static atomic_uint_fast64_t g_target;   /* fail the g_target-th counted allocation */
static atomic_uint_fast64_t g_count;    /* counted since arm */
static atomic_uint_fast64_t g_injected; /* failed on purpose since arm */
static atomic_int_fast64_t g_live;
static atomic_bool g_log;               /* server mode: say on stderr when failing */
static _Thread_local bool t_armer;
static _Thread_local int t_exempt; /* inside jansson's decoder: count nothing */

/* true: this allocation must fail */
static bool should_fail(void)
{
    if (t_exempt || !atomic_load_explicit(&g_armed, memory_order_acquire))
        return false;
    int scope = atomic_load_explicit(&g_scope, memory_order_relaxed);
    if ((scope == AH_THIS_THREAD && !t_armer) || (scope == AH_OTHER_THREADS && t_armer))
        return false;
    uint64_t k = atomic_fetch_add(&g_count, 1) + 1;
    uint64_t n = atomic_load(&g_target);
    if (n == 0 || k < n || (k > n && !atomic_load(&g_sticky)))
        return false;
    atomic_fetch_add(&g_injected, 1);
    static int bt = -1; /* AH_BACKTRACE=1: where each injected failure happens (debugging a sweep) */
    if (bt < 0)
        bt = getenv("AH_BACKTRACE") != NULL;
    if (bt) {
        void *frames[16];
        int nf = backtrace(frames, 16);
        backtrace_symbols_fd(frames, nf, 2);
        ssize_t w = write(2, "--\n", 3);
        (void)w;
    }
    if (atomic_load_explicit(&g_log, memory_order_relaxed)) {
        static const char msg[] = "alloc_hook: failing an allocation\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
    }
    return true;
}

void *__wrap_malloc(size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(k, n);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL; /* p stays valid, as with a real failure */
    }
    if (p && n == 0) { /* glibc frees p */
        __real_free(p);
        atomic_fetch_sub(&g_live, 1);
        return NULL;
    }
    void *q = __real_realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&g_live, 1);
    return q;
}

void __wrap_free(void *p)
{
    if (p)
        atomic_fetch_sub(&g_live, 1);
    __real_free(p);
}

char *__wrap_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = __wrap_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

char *__wrap_strdup(const char *s)
{
    return __wrap_strndup(s, (size_t)-1);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    if (should_fail()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_aligned_alloc(a, n);
    if (p)
        atomic_fetch_add(&g_live, 1);
    return p;
}

/* jansson 2.14's decoder ignores a failed buffer append in its lexer
 * (lex_save) and then aborts on assert(c == d) or an assert(0) in
 * lex_scan_string (upstream akheron/jansson#362, unfixed): an allocation
 * failure inside json_load* is a crash hearth cannot turn into an error.
 * The sweeps therefore never fail allocations made while jansson decodes;
 * everything else jansson allocates (building, dumping) is still swept. */
json_t *__real_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *e);
json_t *__real_json_loads(const char *s, size_t flags, json_error_t *e);
json_t *__real_json_load_file(const char *path, size_t flags, json_error_t *e);
json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *e);
json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *e);
json_t *__wrap_json_load_file(const char *path, size_t flags, json_error_t *e);

json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *e)
{
    t_exempt++;
    json_t *j = __real_json_loadb(buf, len, flags, e);
    t_exempt--;
    return j;
}

json_t *__wrap_json_loads(const char *s, size_t flags, json_error_t *e)
{
    t_exempt++;
    json_t *j = __real_json_loads(s, flags, e);
    t_exempt--;
    return j;
}

json_t *__wrap_json_load_file(const char *path, size_t flags, json_error_t *e)
{
    t_exempt++;
    json_t *j = __real_json_load_file(path, flags, e);
    t_exempt--;
    return j;
}

/* jansson frees with its own free function, so it may be a plain wrapper */
static void *json_alloc(size_t n) { return __wrap_malloc(n); }
static void json_release(void *p) { __wrap_free(p); }

/* SQLite wants the size of a block back: malloc_usable_size answers it for
 * glibc's allocator and for ASan's. */
static void *sq_malloc(int n) { return n > 0 ? __wrap_malloc((size_t)n) : NULL; }
static void sq_free(void *p) { __wrap_free(p); }
static void *sq_realloc(void *p, int n) { return __wrap_realloc(p, n > 0 ? (size_t)n : 1); }
static int sq_size(void *p) { return p ? (int)malloc_usable_size(p) : 0; }
static int sq_roundup(int n) { return (n + 7) & ~7; }
static int sq_init(void *ud) { (void)ud; return SQLITE_OK; }
static void sq_shutdown(void *ud) { (void)ud; }

void ah_install(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    json_set_alloc_funcs(json_alloc, json_release);
    static const sqlite3_mem_methods mm = {sq_malloc, sq_free, sq_realloc, sq_size, sq_roundup, sq_init,
                                           sq_shutdown, NULL};
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &mm) != SQLITE_OK)
        fprintf(stderr, "alloc_hook: SQLite already initialised; its allocations are not counted\n");
}

void ah_arm(uint64_t n, bool sticky, ah_scope scope)
{
    atomic_store(&g_armed, false);
    t_armer = true;
    atomic_store(&g_scope, (int)scope);
    atomic_store(&g_sticky, sticky);
    atomic_store(&g_target, n);
    atomic_store(&g_count, 0);
    atomic_store(&g_injected, 0);
    atomic_store_explicit(&g_armed, true, memory_order_release);
}

uint64_t ah_disarm(void)
{
    atomic_store(&g_armed, false);
    return atomic_load(&g_count);
}

uint64_t ah_injected(void) { return atomic_load(&g_injected); }
int64_t ah_live(void) { return atomic_load(&g_live); }

/* ---- server mode (a hearth binary linked with the hook, tests only) ---- */

static char g_ctl_path[1024];

/* "alloc_hook: <what> <n>\n" on stderr with write() alone (signal-safe). */
static void say(const char *what, uint64_t n, const char *tail)
{
    char buf[96];
    size_t k = 0;
    for (const char *p = "alloc_hook: "; *p; p++)
        buf[k++] = *p;
    for (const char *p = what; *p && k < 60; p++)
        buf[k++] = *p;
    char d[24];
    int nd = 0;
    do {
        d[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (nd)
        buf[k++] = d[--nd];
    for (const char *p = tail; *p && k < sizeof buf - 1; p++)
        buf[k++] = *p;
    buf[k++] = '\n';
    ssize_t w = write(2, buf, k);
    (void)w;
}

/* SIGUSR2: re-read the control file, say what was counted since the last
 * arm, and re-arm. open/read/close/write and atomics only. */
static void on_usr2(int sig)
{
    (void)sig;
    int saved = errno;
    int fd = open(g_ctl_path, O_RDONLY);
    char buf[32] = {0};
    ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    uint64_t n = 0;
    bool sticky = false;
    for (ssize_t i = 0; i < r; i++) {
        if (buf[i] >= '0' && buf[i] <= '9')
            n = n * 10 + (uint64_t)(buf[i] - '0');
        else if (buf[i] == '+')
            sticky = true;
    }
    atomic_store(&g_armed, false);
    say("counted ", atomic_load(&g_count), " allocations");
    if (n)
        say("armed ", n, sticky ? "+" : "");
    else
        say("disarmed ", 0, "");
    atomic_store(&g_scope, AH_ALL_THREADS);
    atomic_store(&g_sticky, sticky);
    atomic_store(&g_target, n);
    atomic_store(&g_count, 0);
    atomic_store(&g_injected, 0);
    atomic_store_explicit(&g_armed, n != 0, memory_order_release);
    errno = saved;
}

__attribute__((constructor)) static void ah_server_mode(void)
{
    const char *f = getenv("HEARTH_TEST_FAIL_ALLOC_FILE");
    if (!f || !*f)
        return;
    snprintf(g_ctl_path, sizeof g_ctl_path, "%s", f);
    ah_install();
    atomic_store(&g_log, true);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}
