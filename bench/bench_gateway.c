/* bench_gateway - what routing through hearth adds to an upstream call.
 *
 * Open-loop load (a request every 1/rate s, libcurl multi, loopback URLs
 * only, bounded time and count), alternating between phases so that
 * machine noise hits both sides alike:
 *
 *   --direct URL --gateway URL     non-streamed chat completions straight to
 *                                  the upstream vs through hearth: latency
 *                                  p50/p99 of each and the difference;
 *   --a URL --b URL --stream       streamed: time to first byte of each
 *                                  side (e.g. a route without and with a
 *                                  shadow), p50/p99.
 *
 *   bench_gateway --direct http://127.0.0.1:P/ok/v1 --gateway http://127.0.0.1:H/v1 \
 *       --model-direct m --model-gateway fake-ok [--rate 500] [--seconds 8] [--rounds 4]
 *
 * bench/gateway.sh starts the fake upstream and hearth and runs both. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "base/clock.h"

typedef struct {
    double t0, tfirst, tend;
    long code;
    int side;
    bool used;
} slot;

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
    slot *s = ud;
    (void)p;
    if (s->tfirst == 0)
        s->tfirst = hr_now_s();
    return sz * n;
}

static bool loopback(const char *u)
{
    return !strncmp(u, "http://127.0.0.1:", 17) || !strncmp(u, "http://localhost:", 17) ||
           !strncmp(u, "http://[::1]:", 13);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    if (!n)
        return 0;
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    const char *url[2] = {NULL, NULL}, *model[2] = {"m", "m"};
    double rate = 500, seconds = 8;
    int rounds = 4;
    bool stream = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((!strcmp(a, "--direct") || !strcmp(a, "--a")) && v)
            url[0] = argv[++i];
        else if ((!strcmp(a, "--gateway") || !strcmp(a, "--b")) && v)
            url[1] = argv[++i];
        else if ((!strcmp(a, "--model-direct") || !strcmp(a, "--model-a")) && v)
            model[0] = argv[++i];
        else if ((!strcmp(a, "--model-gateway") || !strcmp(a, "--model-b")) && v)
            model[1] = argv[++i];
        else if (!strcmp(a, "--rate") && v)
            rate = atof(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            seconds = atof(argv[++i]);
        else if (!strcmp(a, "--rounds") && v)
            rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--stream"))
            stream = true;
        else {
            fprintf(stderr, "usage: bench_gateway --direct URL --gateway URL [--model-direct M] [--model-gateway M] "
                            "[--rate R] [--seconds S] [--rounds N] [--stream]\n");
            return 2;
        }
    }
    if (!url[0] || !url[1] || !loopback(url[0]) || !loopback(url[1])) {
        fprintf(stderr, "bench_gateway: two loopback base URLs are needed (http://127.0.0.1:PORT/...)\n");
        return 2;
    }
    if (rate < 1 || rate > 5000 || seconds <= 0 || seconds > 120 || rounds < 1 || rounds > 100) {
        fprintf(stderr, "bench_gateway: rate 1..5000, seconds 0..120, rounds 1..100\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_ALL);
    int total = (int)(rate * seconds) + 1;
    slot *slots = calloc((size_t)total, sizeof *slots);
    CURL **easies = calloc((size_t)total, sizeof *easies);
    char full[2][512], body[2][512];
    for (int s = 0; s < 2; s++) {
        snprintf(full[s], sizeof full[s], "%s/chat/completions", url[s]);
        snprintf(body[s], sizeof body[s],
                 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}],\"max_tokens\":16,"
                 "\"temperature\":0%s}",
                 model[s], stream ? ",\"stream\":true" : "");
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, 2048L);
    double t_start = hr_now_s(), interval = 1.0 / rate, per_round = seconds / rounds;
    int started = 0, running = 0, failed = 0;
    while (started < total || running) {
        double now = hr_now_s();
        while (started < total && t_start + started * interval <= now) {
            int round = (int)((started * interval) / (per_round / 2));
            slot *sl = &slots[started];
            sl->side = round % 2;
            sl->t0 = hr_now_s();
            sl->used = true;
            CURL *e = curl_easy_init();
            easies[started] = e;
            curl_easy_setopt(e, CURLOPT_URL, full[sl->side]);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body[sl->side]);
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
            curl_easy_setopt(e, CURLOPT_WRITEDATA, sl);
            curl_easy_setopt(e, CURLOPT_PRIVATE, sl);
            curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
            curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
            curl_multi_add_handle(m, e);
            started++;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            slot *sl;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
            sl->tend = hr_now_s();
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &sl->code);
            if (msg->data.result != CURLE_OK || sl->code != 200)
                failed++;
            curl_multi_remove_handle(m, msg->easy_handle);
            curl_easy_cleanup(msg->easy_handle);
        }
        double next = started < total ? t_start + started * interval - hr_now_s() : 0.05;
        int ms = next > 0 ? (int)(next * 1000) : 0;
        if (ms > 50)
            ms = 50;
        curl_multi_poll(m, NULL, 0, ms, NULL);
        if (hr_now_s() - t_start > seconds + 60)
            break;
    }
    double wall = hr_now_s() - t_start;
    double *lat[2], *ttfb[2];
    int n[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        lat[s] = malloc((size_t)total * sizeof(double));
        ttfb[s] = malloc((size_t)total * sizeof(double));
    }
    for (int i = 0; i < started; i++) {
        slot *sl = &slots[i];
        if (!sl->used || sl->code != 200 || !sl->tend)
            continue;
        lat[sl->side][n[sl->side]] = (sl->tend - sl->t0) * 1000;
        ttfb[sl->side][n[sl->side]] = ((sl->tfirst ? sl->tfirst : sl->tend) - sl->t0) * 1000;
        n[sl->side]++;
    }
    for (int s = 0; s < 2; s++) {
        qsort(lat[s], (size_t)n[s], sizeof(double), cmp_d);
        qsort(ttfb[s], (size_t)n[s], sizeof(double), cmp_d);
    }
    printf("requests %d in %.1f s (%.0f/s offered), failed %d\n", started, wall, rate, failed);
    const char *name[2] = {stream ? "a" : "direct", stream ? "b" : "gateway"};
    for (int s = 0; s < 2; s++)
        printf("%-8s n=%5d  latency p50 %7.3f ms  p99 %7.3f ms   first byte p50 %7.3f ms  p99 %7.3f ms\n", name[s],
               n[s], pct(lat[s], n[s], 0.5), pct(lat[s], n[s], 0.99), pct(ttfb[s], n[s], 0.5),
               pct(ttfb[s], n[s], 0.99));
    if (!stream)
        printf("added by the gateway: p50 %.3f ms, p99 %.3f ms\n", pct(lat[1], n[1], 0.5) - pct(lat[0], n[0], 0.5),
               pct(lat[1], n[1], 0.99) - pct(lat[0], n[0], 0.99));
    else
        printf("first byte b vs a: p50 %+.1f%%, p99 %+.1f%%\n",
               100 * (pct(ttfb[1], n[1], 0.5) / pct(ttfb[0], n[0], 0.5) - 1),
               100 * (pct(ttfb[1], n[1], 0.99) / pct(ttfb[0], n[0], 0.99) - 1));
    for (int s = 0; s < 2; s++) {
        free(lat[s]);
        free(ttfb[s]);
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    free(slots);
    free(easies);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
