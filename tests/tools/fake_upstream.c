/* fake_upstream - a tiny OpenAI-compatible stand-in for routing tests and
 * benchmarks (loopback only). The first path segment picks the behaviour:
 *
 *   POST /MODE/v1/chat/completions  (or /MODE/v1/completions)
 *
 *   ok        answers at once (streamed or not) with usage
 *   nousage   like ok, without a usage object
 *   slow      waits 300 ms, then like ok
 *   500, 429  that status with an OpenAI error body
 *   hang      never answers (the connection is held up to 60 s)
 *   cut       streams two chunks, then drops the connection
 *   cut0      sends 200 headers, then drops the connection before any event
 *   garbage   200 with a body that is not JSON / not events
 *   json      answers the JSON text {"a": 1, "b": [1, 2]}
 *
 * GET /count/MODE prints how many requests MODE got. Prints
 * "fake_upstream: listening on PORT" on stderr. Usage:
 *   fake_upstream [--port N] [--text TEXT] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#if MHD_VERSION < 0x00097002
typedef int mhd_result;
#else
typedef enum MHD_Result mhd_result;
#endif

static const char *g_text = "The quick brown fox jumps over the lazy dog.";
static const char *modes[] = {"ok", "nousage", "slow", "500", "429", "hang", "cut", "cut0", "garbage", "json", NULL};
static atomic_int counts[16];

typedef struct {
    char *body;
    size_t len, cap;
} req;

typedef struct {
    char *data;
    size_t len, off;
    int cut_after; /* chunks before dropping; -1: never */
    int chunks;
} stream_state;

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_state *s = cls;
    (void)pos;
    if (s->cut_after >= 0 && s->chunks >= s->cut_after)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->off >= s->len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* one event per call */
    const char *end = strstr(s->data + s->off, "\n\n");
    size_t n = end ? (size_t)(end + 2 - (s->data + s->off)) : s->len - s->off;
    if (n > max)
        n = max;
    memcpy(buf, s->data + s->off, n);
    s->off += n;
    s->chunks++;
    if (s->cut_after >= 0)
        usleep(20000);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_state *s = cls;
    free(s->data);
    free(s);
}

static void append(char **p, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *p = realloc(*p, *cap);
    }
    memcpy(*p + *len, s, n + 1);
    *len += n;
}

static mhd_result send_text(struct MHD_Connection *c, unsigned status, const char *ctype, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", ctype);
    mhd_result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static mhd_result answer(struct MHD_Connection *c, const char *mode, bool chat, const char *body)
{
    bool stream = body && strstr(body, "\"stream\":true");
    bool usage = strcmp(mode, "nousage") != 0;
    const char *text = !strcmp(mode, "json") ? "{\"a\": 1, \"b\": [1, 2]}" : g_text;
    char model[128] = "fake-model";
    const char *m = body ? strstr(body, "\"model\":\"") : NULL;
    if (m) {
        m += 9;
        size_t i = 0;
        while (m[i] && m[i] != '"' && i < sizeof model - 1) {
            model[i] = m[i];
            i++;
        }
        model[i] = 0;
    }
    /* words of the text, one token each */
    char words[64][64];
    int nw = 0;
    const char *p = text;
    while (*p && nw < 64) {
        size_t l = strcspn(p + 1, " ") + 1;
        if (l > 63)
            l = 63;
        memcpy(words[nw], p, l);
        words[nw][l] = 0;
        nw++;
        p += l;
    }
    char esc[4096];
    size_t k = 0;
    for (const char *q = text; *q && k < sizeof esc - 3; q++) {
        if (*q == '"' || *q == '\\')
            esc[k++] = '\\';
        esc[k++] = *q;
    }
    esc[k] = 0;
    char usage_s[160];
    snprintf(usage_s, sizeof usage_s, "{\"prompt_tokens\":11,\"completion_tokens\":%d,\"total_tokens\":%d}", nw,
             11 + nw);
    char *out = NULL;
    size_t len = 0, cap = 0;
    char line[8192];
    if (!stream) {
        if (chat)
            snprintf(line, sizeof line,
                     "{\"id\":\"chatcmpl-fake1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"%s\","
                     "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
                     "\"finish_reason\":\"stop\"}]%s%s}",
                     model, esc, usage ? ",\"usage\":" : "", usage ? usage_s : "");
        else
            snprintf(line, sizeof line,
                     "{\"id\":\"cmpl-fake1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"%s\","
                     "\"choices\":[{\"index\":0,\"text\":\"%s\",\"finish_reason\":\"stop\"}]%s%s}",
                     model, esc, usage ? ",\"usage\":" : "", usage ? usage_s : "");
        if (!strcmp(mode, "garbage"))
            snprintf(line, sizeof line, "<html>this is not json");
        return send_text(c, 200, "application/json", line);
    }
    if (!strcmp(mode, "garbage")) {
        append(&out, &len, &cap, "data: {not json at all\n\n");
    } else {
        for (int i = 0; i < nw; i++) {
            char we[200];
            size_t q = 0;
            for (const char *s = words[i]; *s && q < sizeof we - 3; s++) {
                if (*s == '"' || *s == '\\')
                    we[q++] = '\\';
                we[q++] = *s;
            }
            we[q] = 0;
            if (chat)
                snprintf(line, sizeof line,
                         "data: {\"id\":\"chatcmpl-fake1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                         "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                         "\"finish_reason\":null}]}\n\n",
                         model, we);
            else
                snprintf(line, sizeof line,
                         "data: {\"id\":\"cmpl-fake1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"%s\","
                         "\"choices\":[{\"index\":0,\"text\":\"%s\",\"finish_reason\":null}]}\n\n",
                         model, we);
            append(&out, &len, &cap, line);
        }
        snprintf(line, sizeof line,
                 "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"%s\","
                 "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                 model);
        append(&out, &len, &cap, line);
        if (usage && strstr(body, "\"include_usage\":true")) {
            snprintf(line, sizeof line,
                     "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"%s\","
                     "\"choices\":[],\"usage\":%s}\n\n",
                     model, usage_s);
            append(&out, &len, &cap, line);
        }
        append(&out, &len, &cap, "data: [DONE]\n\n");
    }
    stream_state *s = calloc(1, sizeof *s);
    s->data = out;
    s->len = len;
    s->cut_after = !strcmp(mode, "cut") ? 2 : !strcmp(mode, "cut0") ? 0 : -1;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_cb, s, stream_free);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    mhd_result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static int mode_index(const char *m)
{
    for (int i = 0; modes[i]; i++)
        if (!strcmp(modes[i], m))
            return i;
    return -1;
}

static mhd_result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->len + *upload_size < (1u << 20)) {
            append(&r->body, &r->len, &r->cap, "");
            r->body = realloc(r->body, r->len + *upload_size + 1);
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = 0;
            r->cap = r->len + 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(method, "GET") && !strncmp(url, "/count/", 7)) {
        int i = mode_index(url + 7);
        char b[32];
        snprintf(b, sizeof b, "%d\n", i < 0 ? -1 : atomic_load(&counts[i]));
        return send_text(c, 200, "text/plain", b);
    }
    char mode[32] = "";
    const char *rest = NULL;
    if (url[0] == '/') {
        const char *sl = strchr(url + 1, '/');
        if (sl && (size_t)(sl - url - 1) < sizeof mode) {
            memcpy(mode, url + 1, (size_t)(sl - url - 1));
            mode[sl - url - 1] = 0;
            rest = sl;
        }
    }
    int mi = mode_index(mode);
    if (mi < 0 || !rest || strcmp(method, "POST"))
        return send_text(c, 404, "application/json", "{\"error\":{\"message\":\"unknown mode or path\"}}");
    atomic_fetch_add(&counts[mi], 1);
    bool chat = strstr(rest, "chat/completions") != NULL;
    if (!strcmp(mode, "500"))
        return send_text(c, 500, "application/json",
                         "{\"error\":{\"message\":\"fake internal error\",\"type\":\"server_error\"}}");
    if (!strcmp(mode, "429"))
        return send_text(c, 429, "application/json",
                         "{\"error\":{\"message\":\"fake rate limit\",\"type\":\"rate_limit_error\"}}");
    if (!strcmp(mode, "hang")) {
        sleep(60);
        return MHD_NO;
    }
    if (!strcmp(mode, "slow"))
        usleep(300000);
    return answer(c, mode, chat, r->body);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--text") && i + 1 < argc)
            g_text = argv[++i];
        else {
            fprintf(stderr, "usage: fake_upstream [--port N] [--text TEXT]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL,
        NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 2000u, MHD_OPTION_CONNECTION_TIMEOUT, 120u, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        1024u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "fake_upstream: cannot listen\n");
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "fake_upstream: listening on %d\n", di ? di->port : port);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    int sig;
    sigwait(&s, &sig);
    MHD_stop_daemon(d);
    return 0;
}
