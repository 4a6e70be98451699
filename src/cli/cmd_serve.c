/* hearth serve: the OpenAI-compatible HTTP server (docs/SERVER.md).
 *
 * Starts listening first (GET /health answers 503 while the model loads),
 * loads the model and its chat template, starts the scheduler, then waits
 * for SIGINT / SIGTERM: on either it stops accepting, cancels what is
 * running, lets open streams write their last events, and frees everything. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/openai.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "http/server.h"
#include "model/model.h"
#include "route/budget.h"
#include "route/router.h"
#include "sched/sched.h"
#include "store/usage.h"
#include "tmpl/jinja.h"
#include "tok/vocab.h"

#define MAX_KEYS 64
#define MAX_LIST 32 /* --cors, --allow-host */
#define MAX_KEY_FILE (1u << 20)
#define MAX_TEMPLATE_FILE (4u << 20)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth serve -m MODEL.gguf [options]\n"
            "  --host ADDR            listen address (default 127.0.0.1)\n"
            "  --port N               port (default 8080; 0 = any free port)\n"
            "  -c, --ctx-size N       positions per sequence (default: the model's)\n"
            "  --kv-mem SIZE          KV cache pool, e.g. 512M, 2G (default: ctx x max-running)\n"
            "  --max-running N        sequences decoded together (default 16)\n"
            "  --batch-tokens N       tokens per engine step: decodes plus prefill chunks (default 256)\n"
            "  --max-queue N          requests waiting for admission before 429 (default 256)\n"
            "  --timeout SECONDS      per-request wall-clock limit (default 600; 0 = none)\n"
            "  --admission-bypass S   seconds a queued request that does not fit yet (n > free slots)\n"
            "                         may be passed by later ones (default 5; 0 = strict arrival order)\n"
            "  -t, --threads N        compute threads (default 1)\n"
            "  --alias NAME           model id clients use (default: the file's base name)\n"
            "  --chat-template FILE   Jinja chat template (default: the model's, else the fallback)\n"
            "  --api-key KEY          require 'Authorization: Bearer KEY' (repeatable)\n"
            "  --api-key-file FILE    one key per line\n"
            "  --metrics-key          /metrics needs a key too (default: open)\n"
            "  --max-body SIZE        request body limit (default 8M)\n"
            "  --max-response SIZE    cap on a non-streamed response body (default 64M)\n"
            "  --max-conns N          concurrent connections; 503 past it (default 4096)\n"
            "  --max-conns-per-ip N   concurrent connections per client address; 503 past it\n"
            "                         (default max-conns / 4; 0 = no per-address limit)\n"
            "  --cors ORIGIN          allow cross-origin requests from ORIGIN (repeat; '*' = any);\n"
            "                         without it a request with a foreign Origin gets 403\n"
            "  --allow-host NAME      Host name accepted on a loopback bind besides localhost\n"
            "                         and the loopback addresses (repeat; '*' = no Host check)\n"
            "  --idle-timeout S       idle / slow-header connection timeout (default 60)\n"
            "  --http-threads N       HTTP event threads (default 1)\n"
            "  --quiet                no per-request log lines\n"
            "  --usage-db TARGET      usage log: a SQLite path (default hearth-usage.db), postgresql://..., or none\n"
            "  --config FILE          routes, upstream backends, budgets, pilot (JSON; docs/ROUTING.md)\n");
}

/* "512M", "2G", "1.5g", "4096" -> bytes. */
static bool parse_size(const char *opt, const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (end != s) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1024.0; end++; break;
        case 'M': mul = 1024.0 * 1024; end++; break;
        case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
        case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
        default: break;
        }
        if (mul > 1 && (*end == 'i' || *end == 'I'))
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (end == s || *end || errno || !(v > 0) || v * mul > 9e18) {
        fprintf(stderr, "hearth serve: %s: '%s' is not a size (e.g. 512M, 2G)\n", opt, s);
        return false;
    }
    *out = (int64_t)(v * mul);
    return true;
}

static char *read_file(const char *path, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, f) : 0;
    fclose(f);
    if (!buf || n > cap) {
        free(buf);
        errno = EFBIG;
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int add_keys_from_file(const char *path, char **keys, int *n_keys, char **file_buf)
{
    size_t len;
    char *buf = read_file(path, MAX_KEY_FILE, &len);
    if (!buf)
        return cli_fail("serve", "--api-key-file %s: %s", path, strerror(errno));
    *file_buf = buf;
    for (char *line = strtok(buf, "\r\n"); line; line = strtok(NULL, "\r\n")) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == ' ' || line[l - 1] == '\t'))
            line[--l] = 0;
        if (!l || line[0] == '#')
            continue;
        if (*n_keys >= MAX_KEYS)
            return cli_fail("serve", "at most %d API keys", MAX_KEYS);
        keys[(*n_keys)++] = line;
    }
    return 0;
}

static char *token_text(const hr_vocab *v, int32_t id)
{
    if (id < 0)
        return NULL;
    size_t len;
    const char *t = hr_vocab_token_text(v, id, &len);
    if (!t)
        return NULL;
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, t, len);
        s[len] = 0;
    }
    return s;
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    size_t l = strlen(buf);
    if (l > 5 && !strcmp(buf + l - 5, ".gguf"))
        buf[l - 5] = 0;
    return buf;
}

int cmd_serve(int argc, char **argv)
{
    const char *model_path = NULL, *host = "127.0.0.1", *alias = NULL, *tmpl_path = NULL;
    const char *usage_path = "hearth-usage.db", *config_path = NULL;
    long long port = 8080, ctx = 0, max_running = 16, max_queue = 256, batch_tokens = 0, threads = 1, max_conns = 4096,
              idle = 60, http_threads = 1, max_conns_ip = -1;
    double timeout = 600, bypass = -1;
    int64_t kv_mem = 0, max_body = 8 << 20, max_response = 64 << 20;
    bool metrics_key = false, quiet = false;
    char *keys[MAX_KEYS];
    int n_keys = 0;
    char *key_files[8] = {0};
    const char *cors[MAX_LIST], *allow_hosts[MAX_LIST];
    int n_cors = 0, n_allow_hosts = 0;
    int n_key_files = 0;
    int rc = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() (v = arg_value(argc, argv, &i))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            ok = (model_path = VAL()) != NULL;
        else if (!strcmp(a, "--host"))
            ok = (host = VAL()) != NULL;
        else if (!strcmp(a, "--port"))
            ok = VAL() && arg_int(a, v, 0, 65535, &port);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            ok = VAL() && arg_int(a, v, 0, 1 << 24, &ctx);
        else if (!strcmp(a, "--kv-mem"))
            ok = VAL() && parse_size(a, v, &kv_mem);
        else if (!strcmp(a, "--batch-tokens"))
            ok = VAL() && arg_int(a, v, 1, 65536, &batch_tokens);
        else if (!strcmp(a, "--max-running"))
            ok = VAL() && arg_int(a, v, 1, 4096, &max_running);
        else if (!strcmp(a, "--max-queue"))
            ok = VAL() && arg_int(a, v, 1, 1 << 20, &max_queue);
        else if (!strcmp(a, "--timeout"))
            ok = VAL() && arg_float(a, v, 0, 1e7, &timeout);
        else if (!strcmp(a, "--admission-bypass"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &bypass);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = VAL() && arg_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--alias"))
            ok = (alias = VAL()) != NULL;
        else if (!strcmp(a, "--chat-template"))
            ok = (tmpl_path = VAL()) != NULL;
        else if (!strcmp(a, "--api-key")) {
            ok = VAL() != NULL;
            if (ok && n_keys >= MAX_KEYS) {
                fprintf(stderr, "hearth serve: at most %d API keys\n", MAX_KEYS);
                ok = false;
            } else if (ok && !*v) {
                fprintf(stderr, "hearth serve: --api-key must not be empty\n");
                ok = false;
            } else if (ok)
                keys[n_keys++] = (char *)v;
        } else if (!strcmp(a, "--api-key-file")) {
            ok = VAL() != NULL;
            if (ok && n_key_files >= 8) {
                fprintf(stderr, "hearth serve: at most 8 --api-key-file options\n");
                ok = false;
            } else if (ok && add_keys_from_file(v, keys, &n_keys, &key_files[n_key_files++]))
                goto done;
        } else if (!strcmp(a, "--metrics-key"))
            metrics_key = true;
        else if (!strcmp(a, "--max-body"))
            ok = VAL() && parse_size(a, v, &max_body);
        else if (!strcmp(a, "--max-response"))
            ok = VAL() && parse_size(a, v, &max_response);
        else if (!strcmp(a, "--max-conns"))
            ok = VAL() && arg_int(a, v, 1, 1 << 20, &max_conns);
        else if (!strcmp(a, "--max-conns-per-ip"))
            ok = VAL() && arg_int(a, v, 0, 1 << 20, &max_conns_ip);
        else if (!strcmp(a, "--cors") || !strcmp(a, "--allow-host")) {
            bool is_cors = a[2] == 'c';
            ok = VAL() != NULL;
            if (ok && (!*v || strlen(v) > 200)) {
                fprintf(stderr, "hearth serve: %s needs a value of 1 to 200 bytes\n", a);
                ok = false;
            } else if (ok && (is_cors ? n_cors : n_allow_hosts) >= MAX_LIST) {
                fprintf(stderr, "hearth serve: at most %d %s options\n", MAX_LIST, a);
                ok = false;
            } else if (ok && is_cors)
                cors[n_cors++] = v;
            else if (ok)
                allow_hosts[n_allow_hosts++] = v;
        } else if (!strcmp(a, "--idle-timeout"))
            ok = VAL() && arg_int(a, v, 1, 86400, &idle);
        else if (!strcmp(a, "--http-threads"))
            ok = VAL() && arg_int(a, v, 1, 64, &http_threads);
        else if (!strcmp(a, "--quiet"))
            quiet = true;
        else if (!strcmp(a, "--usage-db"))
            ok = (usage_path = VAL()) != NULL;
        else if (!strcmp(a, "--config"))
            ok = (config_path = VAL()) != NULL;
        else {
            fprintf(stderr, "hearth serve: unknown option '%s'\n", a);
            usage(stderr);
            rc = 2;
            goto done;
        }
#undef VAL
        if (!ok) {
            rc = 2;
            goto done;
        }
    }
    if (!model_path) {
        usage(stderr);
        rc = 2;
        goto done;
    }

    /* Signals are taken by sigwait in this thread only; every thread
     * started from here on inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    hr_err err = {0};
    hr_http *http = NULL;
    hr_model *model = NULL;
    hr_sched *sched = NULL;
    hr_tmpl *tmpl = NULL;
    hr_usage_db *usage_db = NULL;
    hr_router *router = NULL;
    char *tmpl_src = NULL, *bos = NULL, *eos = NULL;
    hr_route_config *rcfg = NULL;
    if (config_path && hr_route_config_load(config_path, &rcfg, &err)) {
        cli_fail("serve", "--config %s", err.msg);
        goto done;
    }
    if (rcfg) {
        char nb[256];
        const char *lid = alias ? alias : base_name(model_path, nb, sizeof nb);
        if (hr_route_config_check_local(rcfg, lid, alias ? base_name(model_path, nb, sizeof nb) : NULL, &err)) {
            cli_fail("serve", "--config %s: %s", config_path, err.msg);
            hr_route_config_free(rcfg);
            goto done;
        }
    }
    if (strcmp(usage_path, "none") && hr_usage_open(usage_path, NULL, &usage_db, &err)) {
        cli_fail("serve", "usage log: %s", err.msg); /* the message masks a URL password */
        hr_route_config_free(rcfg);
        goto done;
    }
    if (rcfg) {
        /* budgets: seeded from a SQLite log; with a PostgreSQL log the ledger lives there, shared by replicas */
        bool pg_log = usage_db && strstr(usage_path, "://");
        hr_router_params rp = {.cfg = rcfg, .usage = usage_db,
                               .usage_path = usage_db && !pg_log ? usage_path : NULL,
                               .seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16};
        if (hr_router_new(&rp, &router, &err)) {
            cli_fail("serve", "--config %s: %s", config_path, err.msg);
            goto stop;
        }
        if (pg_log && hr_budget_attach_pg(hr_router_budget(router), usage_path, &err)) {
            cli_fail("serve", "%s", err.msg);
            goto stop;
        }
    }
    hr_http_params hp = {
        .host = host,
        .port = (int)port,
        .api_keys = (const char *const *)keys,
        .n_api_keys = n_keys,
        .metrics_need_key = metrics_key,
        .max_body = (size_t)max_body,
        .max_conns = (unsigned)max_conns,
        /* not given: the library's default (max-conns / 4); 0: no per-address limit */
        .max_conns_per_ip = max_conns_ip < 0 ? 0 : max_conns_ip == 0 ? -1 : (int)max_conns_ip,
        .cors = cors,
        .n_cors = n_cors,
        .allow_hosts = allow_hosts,
        .n_allow_hosts = n_allow_hosts,
        .idle_timeout_s = (unsigned)idle,
        .n_threads = (unsigned)http_threads,
        .quiet = quiet,
        .usage = usage_db,
        .router = router,
    };
    if (hr_http_start(&hp, &http, &err)) {
        cli_fail("serve", "%s", err.msg);
        goto done;
    }
    fprintf(stderr, "hearth serve: listening on http://%s%s%s:%d (loading %s)\n", strchr(host, ':') ? "[" : "",
            host, strchr(host, ':') ? "]" : "", hr_http_port(http), model_path);

    if (hr_model_load(model_path, &model, &err)) {
        cli_fail("serve", "%s", err.msg);
        goto stop;
    }
    const hr_vocab *vocab = hr_model_vocab(model);
    const char *tsource = "fallback";
    if (tmpl_path) {
        size_t len;
        tmpl_src = read_file(tmpl_path, MAX_TEMPLATE_FILE, &len);
        if (!tmpl_src) {
            cli_fail("serve", "--chat-template %s: %s", tmpl_path, strerror(errno));
            goto stop;
        }
        tsource = "file";
    } else if (hr_chat_template_from_gguf(hr_model_gguf(model), &tmpl_src, NULL, NULL, &err) == HR_OK) {
        tsource = "gguf";
    } else if (err.status != HR_ERR_NOT_FOUND) {
        cli_fail("serve", "reading the chat template: %s", err.msg);
        goto stop;
    }
    if (tmpl_src && hr_tmpl_parse(tmpl_src, strlen(tmpl_src), &tmpl, &err)) {
        cli_fail("serve", "the chat template (%s) does not parse: %s", tsource, err.msg);
        goto stop;
    }
    bos = token_text(vocab, hr_vocab_bos(vocab));
    eos = token_text(vocab, hr_vocab_eos(vocab));

    hr_sched_params sp = hr_sched_defaults();
    if (ctx > 0)
        sp.n_ctx = (int32_t)ctx;
    if (kv_mem > 0)
        sp.kv_bytes = kv_mem;
    sp.max_running = (int32_t)max_running;
    if (batch_tokens)
        sp.step_tokens = (int32_t)batch_tokens;
    sp.max_queue = (int32_t)max_queue;
    sp.n_threads = (int32_t)threads;
    sp.timeout_s = timeout;
    if (bypass >= 0)
        sp.bypass_s = bypass;
    if (hr_sched_new(model, &sp, &sched, &err)) {
        cli_fail("serve", "%s", err.msg);
        goto stop;
    }
    char idbuf[256];
    struct stat st;
    const hr_hparams *hpar = hr_model_hparams(model);
    hr_api_model am = {
        .vocab = vocab,
        .n_vocab = hpar->n_vocab,
        .n_ctx = hr_sched_params_of(sched)->n_ctx,
        .id = alias ? alias : base_name(model_path, idbuf, sizeof idbuf),
        .alt_id = alias ? base_name(model_path, idbuf, sizeof idbuf) : NULL,
        .tmpl = tmpl,
        .bos_text = bos,
        .eos_text = eos,
        .reasoning = hr_reason_kind_for(vocab, tmpl_src),
        .created = (int64_t)time(NULL),
        .owned_by = "hearth",
        .arch = hpar->arch_name,
        .n_params = hr_model_n_params(model),
        .size_bytes = stat(model_path, &st) == 0 ? (uint64_t)st.st_size : 0,
        .template_source = tsource,
        .max_token_bytes = hr_api_max_token_bytes(vocab),
        .max_response = (size_t)max_response,
    };
    if (router) {
        char self[128];
        bool any4 = !strcmp(host, "0.0.0.0"), any6 = !strcmp(host, "::");
        if (strchr(host, ':'))
            snprintf(self, sizeof self, "http://[%s]:%d", any6 ? "::1" : host, hr_http_port(http));
        else
            snprintf(self, sizeof self, "http://%s:%d", any4 ? "127.0.0.1" : host, hr_http_port(http));
        hr_router_set_self(router, self, n_keys ? keys[0] : NULL, am.id);
    }
    hr_http_set_ready(http, sched, &am);
    fprintf(stderr, "hearth serve: ready: model '%s', context %d, max running %d, chat template %s\n", am.id,
            am.n_ctx, hr_sched_params_of(sched)->max_running, tsource);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "hearth serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
stop:
    hr_http_stop(http, 5.0);
    hr_router_free(router); /* after the server: no request uses it any more */
    hr_sched_free(sched);
    hr_tmpl_free(tmpl);
    free(tmpl_src);
    free(bos);
    free(eos);
    hr_model_free(model);
    if (usage_db && hr_usage_close(usage_db, &err))
        fprintf(stderr, "hearth serve: closing the usage log: %s\n", err.msg);
done:
    for (int i = 0; i < n_key_files; i++)
        free(key_files[i]);
    return rc;
}
