/* bench_serve - load generator for OpenAI-compatible servers (hearth serve,
 * llama-server, vLLM, ...), written on libcurl's multi interface.
 *
 * For each concurrency level it keeps that many streamed /v1/completions
 * requests in flight (prompt ~128 tokens, 64 generated tokens, ignore_eos)
 * until the level's request count is done or its time is up, and reports
 * aggregate generated tokens/s, time to first token p50/p99 and
 * inter-token latency p50/p99 (gaps between streamed chunks that carry
 * text). Loopback URLs only; counts and times are bounded.
 *
 *   bench_serve [--url http://127.0.0.1:8080] [--levels 1,4,16,64]
 *               [--requests N] [--prompt-tokens 128] [--gen-tokens 64]
 *               [--max-seconds 120] [--model NAME] [--api-key KEY]
 *               [--no-ignore-eos] [--temperature T] [--shared-prefix N]
 *               [--ramp SECONDS]
 *
 * --ramp spreads the start of a level's first `conc` requests evenly over
 * that many seconds (then each finished request is replaced at once, as
 * usual), so the clients do not all send at the same instant.
 *
 * --shared-prefix N puts the same ~N-token text (a system prompt, new for
 * each level and run) before every request's own ~prompt-tokens, and
 * reports the prefix cache's effect: the level's first request's TTFT
 * (cold), the TTFT p50/p99 of the requests sent after that first token
 * arrived (warm: the prefix is computed by then), their ratio, and the
 * share of prompt tokens the server reported as cached.
 *
 * Chaos for soak runs (bench/soak.sh), chosen per request index so a run
 * is reproducible:
 *   --drop-fraction F   that share of requests closes the connection
 *                       mid-stream, after 1..8 text chunks (not failures)
 *   --slow-fraction F   that share of the others reads at --slow-bps
 *                       bytes/s (default 2000): a slow reader
 *   --alt-model M --alt-fraction F   that share names model M (a route)
 * and a last line "# totals: ..." sums every level's client-side counts. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "base/clock.h"
#include "upstream/sse.h"

#define MAX_LEVELS 16
#define MAX_INFLIGHT 1024
#define MAX_BUF (1u << 20)

typedef struct {
    double *v;
    size_t n, cap;
} vec;

static void vec_push(vec *a, double x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        double *p = realloc(a->v, cap * sizeof *p);
        if (!p)
            return;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(vec *a, double p)
{
    if (!a->n)
        return NAN;
    qsort(a->v, a->n, sizeof *a->v, cmp_d);
    size_t i = (size_t)ceil(p / 100.0 * (double)a->n);
    return a->v[i ? i - 1 : 0];
}

typedef struct {
    CURL *easy;
    struct curl_slist *hdr;
    char *body;
    hr_sse sse;
    double t0, first, last;
    long completion_tokens, prompt_tokens, cached_tokens, index;
    int chunks, drop_after; /* text chunks seen; close after that many (0: never) */
    bool failed, done_seen, dropped, tag; /* tag: sent to the alt model */
    vec *itl;
} xfer;

static bool on_event(void *ud, const char *line, size_t len)
{
    xfer *x = ud;
    (void)len;
    if (!strcmp(line, "[DONE]")) {
        x->done_seen = true;
        return true;
    }
    json_t *o = json_loads(line, 0, NULL);
    if (!o)
        return true;
    if (json_object_get(o, "error"))
        x->failed = true;
    json_t *u = json_object_get(o, "usage");
    if (json_is_object(u)) {
        x->completion_tokens = (long)json_integer_value(json_object_get(u, "completion_tokens"));
        x->prompt_tokens = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
        x->cached_tokens =
            (long)json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    json_t *c0 = json_array_get(json_object_get(o, "choices"), 0);
    const char *text = json_string_value(json_object_get(c0, "text"));
    if (text && *text) {
        x->chunks++;
        double t = hr_now_s();
        if (x->first == 0)
            x->first = t;
        else
            vec_push(x->itl, t - x->last);
        x->last = t;
    }
    json_decref(o);
    return true;
}

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    xfer *x = ud;
    size_t n = sz * nm;
    if (x->drop_after > 0 && x->chunks >= x->drop_after && !x->done_seen) {
        x->dropped = true;
        return 0; /* curl closes the connection */
    }
    hr_err err;
    if (hr_sse_feed(&x->sse, p, n, on_event, x, &err) != HR_OK) {
        x->failed = true;
        return 0;
    }
    return n;
}

static char *hr_calib_body;
static size_t hr_calib_len;

static size_t on_calib(char *p, size_t sz, size_t nm, void *ud)
{
    (void)ud;
    size_t n = sz * nm;
    if (!hr_calib_body)
        hr_calib_len = 0;
    if (hr_calib_len + n > MAX_BUF)
        return 0;
    char *b = realloc(hr_calib_body, hr_calib_len + n + 1);
    if (!b)
        return 0;
    memcpy(b + hr_calib_len, p, n);
    hr_calib_len += n;
    b[hr_calib_len] = 0;
    hr_calib_body = b;
    return n;
}

static bool loopback(const char *url)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    return !strncmp(h, "127.", 4) || !strncmp(h, "localhost", 9) || !strncmp(h, "[::1]", 5);
}

static const char *const k_words[] = {"the", "little", "dog", "ran", "to", "a", "big", "tree", "and", "saw",
                                      "bird", "who", "was", "happy", "sun", "day", "girl", "named", "Lily",
                                      "played", "with", "her", "ball", "in", "park", "mom", "said", "good"};

/* a uniform number in [0, 1) from a request index and a salt */
static double pick(long idx, unsigned salt)
{
    uint64_t z = (uint64_t)idx * 0x9e3779b97f4a7c15ull + salt * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

int main(int argc, char **argv)
{
    const char *url = "http://127.0.0.1:8080", *model = NULL, *key = NULL, *alt_model = NULL;
    double drop_frac = 0, slow_frac = 0, alt_frac = 0, slow_bps = 2000;
    int levels[MAX_LEVELS] = {1, 4, 16, 64}, n_levels = 4;
    long requests = 0, prompt_tokens = 128, gen_tokens = 64, shared_prefix = 0;
    double max_seconds = 120, temperature = 0, ramp = 0;
    bool ignore_eos = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--url") && v)
            url = argv[++i];
        else if (!strcmp(a, "--model") && v)
            model = argv[++i];
        else if (!strcmp(a, "--api-key") && v)
            key = argv[++i];
        else if (!strcmp(a, "--levels") && v) {
            n_levels = 0;
            char *s = strdup(argv[++i]);
            for (char *t = strtok(s, ","); t && n_levels < MAX_LEVELS; t = strtok(NULL, ","))
                levels[n_levels++] = atoi(t);
            free(s);
        } else if (!strcmp(a, "--requests") && v)
            requests = atol(argv[++i]);
        else if (!strcmp(a, "--prompt-tokens") && v)
            prompt_tokens = atol(argv[++i]);
        else if (!strcmp(a, "--gen-tokens") && v)
            gen_tokens = atol(argv[++i]);
        else if (!strcmp(a, "--max-seconds") && v)
            max_seconds = atof(argv[++i]);
        else if (!strcmp(a, "--temperature") && v)
            temperature = atof(argv[++i]);
        else if (!strcmp(a, "--ramp") && v)
            ramp = atof(argv[++i]);
        else if (!strcmp(a, "--shared-prefix") && v)
            shared_prefix = atol(argv[++i]);
        else if (!strcmp(a, "--drop-fraction") && v)
            drop_frac = atof(argv[++i]);
        else if (!strcmp(a, "--slow-fraction") && v)
            slow_frac = atof(argv[++i]);
        else if (!strcmp(a, "--slow-bps") && v)
            slow_bps = atof(argv[++i]);
        else if (!strcmp(a, "--alt-model") && v)
            alt_model = argv[++i];
        else if (!strcmp(a, "--alt-fraction") && v)
            alt_frac = atof(argv[++i]);
        else if (!strcmp(a, "--no-ignore-eos"))
            ignore_eos = false;
        else {
            fprintf(stderr, "usage: bench_serve [--url U] [--levels 1,4,16,64] [--requests N] [--prompt-tokens 128]\n"
                            "       [--gen-tokens 64] [--max-seconds 120] [--model M] [--api-key K]\n"
                            "       [--no-ignore-eos] [--temperature T] [--shared-prefix N] [--ramp S]\n"
                            "       [--drop-fraction F] [--slow-fraction F] [--slow-bps B]\n"
                            "       [--alt-model M --alt-fraction F]\n");
            return 2;
        }
    }
    if (!loopback(url)) {
        fprintf(stderr, "bench_serve: only loopback URLs (127.x, localhost, [::1]) are allowed\n");
        return 2;
    }
    for (int l = 0; l < n_levels; l++)
        if (levels[l] < 1 || levels[l] > MAX_INFLIGHT) {
            fprintf(stderr, "bench_serve: levels must be in 1..%d\n", MAX_INFLIGHT);
            return 2;
        }
    if (prompt_tokens < 1 || prompt_tokens > 100000 || gen_tokens < 1 || gen_tokens > 100000 || max_seconds <= 0 ||
        max_seconds > 3600 || requests < 0 || requests > 100000 || shared_prefix < 0 || shared_prefix > 100000 ||
        ramp < 0 || ramp > 600 || !(drop_frac >= 0 && drop_frac <= 1) || !(slow_frac >= 0 && slow_frac <= 1) ||
        !(alt_frac >= 0 && alt_frac <= 1) || (alt_frac > 0 && !alt_model) || !(slow_bps >= 1)) {
        fprintf(stderr, "bench_serve: out-of-range option\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char endpoint[1024];
    snprintf(endpoint, sizeof endpoint, "%s/v1/completions", url);
    char auth[512] = "";
    if (key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);

    /* words per prompt: calibrated with the server's /tokenize when it has one */
    long words = prompt_tokens - 3, shared_words = 0;
    {
        size_t cap = 64 * 12 + 64, pl = 0;
        char *sample = malloc(cap);
        for (int w = 0; w < 64; w++)
            pl += (size_t)snprintf(sample + pl, cap - pl, " %s",
                                   k_words[(size_t)(w * 7 + w / 5) % (sizeof k_words / sizeof k_words[0])]);
        json_t *req = json_pack("{s:s}", "content", sample);
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        free(sample);
        char turl[1100];
        snprintf(turl, sizeof turl, "%s/tokenize", url);
        hr_calib_body = NULL;
        CURL *e = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        if (key)
            h = curl_slist_append(h, auth);
        curl_easy_setopt(e, CURLOPT_URL, turl);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_calib);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 10L);
        long code = 0;
        if (curl_easy_perform(e) == CURLE_OK && curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
            code == 200 && hr_calib_body) {
            json_t *o = json_loads(hr_calib_body, 0, NULL);
            size_t nt = json_array_size(json_object_get(o, "tokens"));
            if (nt > 0)
                words = (long)((double)(prompt_tokens - 4) * 64.0 / (double)nt);
            json_decref(o);
        }
        if (words < 1)
            words = 1;
        shared_words = (long)((double)shared_prefix * (double)words / (double)(prompt_tokens > 4 ? prompt_tokens - 4 : 1));
        free(hr_calib_body);
        curl_slist_free_all(h);
        curl_easy_cleanup(e);
        free(body);
    }

    printf("# %s, prompt ~%ld tokens, %ld generated%s\n", endpoint, prompt_tokens, gen_tokens,
           ignore_eos ? " (ignore_eos)" : "");
    if (shared_prefix)
        printf("# shared prefix ~%ld tokens before each prompt\n", shared_prefix);
    printf("%-6s %6s %6s %9s %10s %10s %10s %10s %10s %8s", "conc", "reqs", "fail", "wall_s", "gen_tok/s",
           "ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "prompt");
    if (shared_prefix)
        printf(" %10s %6s %10s %10s %7s %7s", "ttft_first", "warm", "warm_p50", "warm_p99", "ratio", "cached");
    printf("\n");
    int rc = 0;
    long all_req = 0, all_ok = 0, all_failed = 0, all_dropped = 0, all_slow = 0, all_alt = 0, all_alt_ok = 0,
         all_alt_dropped = 0;
    unsigned run_nonce = (unsigned)time(NULL) ^ (unsigned)getpid();
    for (int l = 0; l < n_levels; l++) {
        int conc = levels[l];
        long total = requests ? requests : (conc * 4 > 16 ? conc * 4 : 16);
        CURLM *multi = curl_multi_init();
        xfer *xs = calloc((size_t)conc, sizeof *xs);
        vec ttft = {0}, itl = {0}, warm = {0};
        double *t0s = calloc((size_t)total, sizeof *t0s), *ttfts = calloc((size_t)total, sizeof *ttfts);
        long prompt_sum = 0, cached_sum = 0;
        long started = 0, finished = 0, failed = 0, gen_total = 0, prompt_seen = 0;
        int running = 0;
        double t_start = hr_now_s(), deadline = t_start + max_seconds;
        /* a prompt of about prompt_tokens words, different per request */
        size_t pcap = (size_t)(words + shared_words) * 12 + 128;
        char *prompt = malloc(pcap);
        for (;;) {
            /* keep `conc` in flight */
            for (int s = 0; s < conc && started < total && hr_now_s() < deadline; s++) {
                xfer *x = &xs[s];
                if (x->easy)
                    continue;
                if (started < conc && hr_now_s() < t_start + ramp * (double)started / (double)conc)
                    break; /* ramping up */
                memset(x, 0, sizeof *x);
                hr_sse_init(&x->sse, 1u << 20);
                x->itl = &itl;
                x->index = started;
                size_t pl = 0;
                /* unique across levels and runs, so no level reuses another's prompts from the prefix cache */
                if (shared_words) {
                    pl += (size_t)snprintf(prompt + pl, pcap - pl, "System %u level %d:", run_nonce, conc);
                    for (long w = 0; w < shared_words && pl + 16 < pcap; w++)
                        pl += (size_t)snprintf(prompt + pl, pcap - pl, " %s",
                                               k_words[(size_t)(w * 11 + w / 3) % (sizeof k_words / sizeof k_words[0])]);
                    pl += (size_t)snprintf(prompt + pl, pcap - pl, "\n");
                }
                pl += (size_t)snprintf(prompt + pl, pcap - pl, "Run %u level %d request %ld:", run_nonce, conc, started);
                for (long w = 0; w < words && pl + 16 < pcap; w++)
                    pl += (size_t)snprintf(prompt + pl, pcap - pl, " %s",
                                           k_words[(size_t)(w * 7 + started * 13 + w / 5) % (sizeof k_words / sizeof k_words[0])]);
                json_t *req = json_pack("{s:s,s:i,s:b,s:f,s:b,s:{s:b}}", "prompt", prompt, "max_tokens", (int)gen_tokens,
                                        "ignore_eos", ignore_eos, "temperature", temperature, "stream", 1,
                                        "stream_options", "include_usage", 1);
                bool alt = alt_frac > 0 && pick(started, 3) < alt_frac;
                if (alt)
                    json_object_set_new(req, "model", json_string(alt_model));
                else if (model)
                    json_object_set_new(req, "model", json_string(model));
                x->body = json_dumps(req, JSON_COMPACT);
                json_decref(req);
                x->easy = curl_easy_init();
                x->hdr = curl_slist_append(NULL, "Content-Type: application/json");
                if (key)
                    x->hdr = curl_slist_append(x->hdr, auth);
                curl_easy_setopt(x->easy, CURLOPT_URL, endpoint);
                curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdr);
                curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
                curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_data);
                curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
                curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
                curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)(max_seconds * 1000) + 5000);
                curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
                x->tag = alt;
                if (pick(started, 1) < drop_frac) {
                    x->drop_after = 1 + (int)(pick(started, 2) * 8);
                } else if (pick(started, 4) < slow_frac) {
                    curl_easy_setopt(x->easy, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)slow_bps);
                    curl_easy_setopt(x->easy, CURLOPT_BUFFERSIZE, 1024L);
                    all_slow++;
                }
                all_alt += alt;
                x->t0 = hr_now_s();
                curl_multi_add_handle(multi, x->easy);
                started++;
            }
            curl_multi_perform(multi, &running);
            CURLMsg *msg;
            int left;
            while ((msg = curl_multi_info_read(multi, &left))) {
                if (msg->msg != CURLMSG_DONE)
                    continue;
                xfer *x;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                long code = 0;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
                all_req++;
                if (x->dropped) {
                    all_dropped++;
                    all_alt_dropped += x->tag;
                } else if (msg->data.result != CURLE_OK || code != 200 || x->failed || !x->done_seen) {
                    failed++;
                } else {
                    all_ok++;
                    all_alt_ok += x->tag;
                    gen_total += x->completion_tokens;
                    prompt_seen = x->prompt_tokens;
                    if (x->first > 0)
                        vec_push(&ttft, x->first - x->t0);
                    if (x->index < total) {
                        t0s[x->index] = x->t0;
                        ttfts[x->index] = x->first > 0 ? x->first - x->t0 : NAN;
                    }
                    prompt_sum += x->prompt_tokens;
                    cached_sum += x->cached_tokens;
                }
                finished++;
                curl_multi_remove_handle(multi, x->easy);
                curl_easy_cleanup(x->easy);
                curl_slist_free_all(x->hdr);
                free(x->body);
                hr_sse_free(&x->sse);
                x->easy = NULL;
            }
            if (finished >= started && (started >= total || hr_now_s() >= deadline))
                break;
            if (hr_now_s() > deadline + 10)
                break; /* stragglers past their curl timeout: give up */
            curl_multi_poll(multi, NULL, 0, 50, NULL);
        }
        double wall = hr_now_s() - t_start;
        printf("%-6d %6ld %6ld %9.2f %10.1f %10.4f %10.4f %10.4f %10.4f %8ld", conc, finished, failed, wall,
               (double)gen_total / wall, pct(&ttft, 50), pct(&ttft, 99), pct(&itl, 50), pct(&itl, 99), prompt_seen);
        if (shared_prefix) {
            /* warm: sent after the first request's first token, when the
             * shared prefix had been computed */
            const double first = ttfts[0] > 0 ? ttfts[0] : NAN, first_at = t0s[0] + first;
            for (long i = 1; i < total && !isnan(first); i++)
                if (t0s[i] >= first_at && !isnan(ttfts[i]) && ttfts[i] > 0)
                    vec_push(&warm, ttfts[i]);
            const double p50 = pct(&warm, 50);
            printf(" %10.4f %6zu %10.4f %10.4f %6.1fx %6.1f%%", first, warm.n, p50, pct(&warm, 99), first / p50,
                   prompt_sum ? 100.0 * (double)cached_sum / (double)prompt_sum : 0.0);
        }
        printf("\n");
        fflush(stdout);
        if (failed)
            rc = 1;
        all_failed += failed;
        for (int s = 0; s < conc; s++)
            if (xs[s].easy) {
                curl_multi_remove_handle(multi, xs[s].easy);
                curl_easy_cleanup(xs[s].easy);
                curl_slist_free_all(xs[s].hdr);
                free(xs[s].body);
                hr_sse_free(&xs[s].sse);
            }
        free(xs);
        free(prompt);
        free(ttft.v);
        free(itl.v);
        free(warm.v);
        free(t0s);
        free(ttfts);
        curl_multi_cleanup(multi);
    }
    printf("# totals: requests %ld ok %ld failed %ld dropped %ld slow %ld alt %ld alt_ok %ld alt_dropped %ld\n",
           all_req, all_ok, all_failed, all_dropped, all_slow, all_alt, all_alt_ok, all_alt_dropped);
    curl_global_cleanup();
    return rc;
}
