/* budget.c - the per-key ledger (see budget.h): in memory, or shared by
 * the fleet in PostgreSQL. */
#include "route/budget.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"

#include <sqlite3.h>

#define MAX_ACCOUNTS 65536
#define MAX_PENDING 4096

typedef struct {
    char key_id[32];
    int rule;
    int32_t day, month;
    int64_t tok_day, tok_month;
    double usd_day, usd_month;
} account;

typedef struct {
    int account;
    int32_t day, month;
    int64_t tokens;
    double usd;
} pending_settle;

struct hr_budget {
    const hr_route_config *cfg;
    pthread_mutex_t mu;
    account *acc;
    int n, cap;
    /* the shared ledger (hr_budget_attach_pg); lock order: pg_mu, then mu */
    bool fleet;
    pthread_mutex_t pg_mu;
    PGconn *pg;
    char *pg_url;
    int64_t pg_next_try_ms;
    bool pg_down;
    pending_settle *pend;
    int npend;
    uint64_t pg_errors, unavailable, settles_lost;
};

static void windows(int64_t t_s, int32_t *day, int32_t *month)
{
    time_t t = (time_t)t_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    *day = (int32_t)(t_s / 86400);
    *month = (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

hr_status hr_budget_new(const hr_route_config *cfg, hr_budget **out, hr_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->n_budgets)
        return HR_OK;
    hr_budget *b = calloc(1, sizeof *b);
    if (!b)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    b->cfg = cfg;
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->pg_mu, NULL);
    *out = b;
    return HR_OK;
}

void hr_budget_free(hr_budget *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->pg_mu);
    PQfinish(b->pg);
    free(b->pg_url);
    free(b->pend);
    free(b->acc);
    free(b);
}

static int rule_of(const hr_budget *b, const char *key_id)
{
    int star = -1;
    for (int i = 0; i < b->cfg->n_budgets; i++) {
        if (!strcmp(b->cfg->budgets[i].key_id, key_id))
            return i;
        if (star < 0 && !strcmp(b->cfg->budgets[i].key_id, "*"))
            star = i;
    }
    return star;
}

/* The account of key_id (created), rolled to the current windows; with mu. */
static account *account_of(hr_budget *b, const char *key_id, int32_t day, int32_t month)
{
    account *a = NULL;
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->acc[i].key_id, key_id)) {
            a = &b->acc[i];
            break;
        }
    if (!a) {
        int rule = rule_of(b, key_id);
        if (rule < 0 || b->n >= MAX_ACCOUNTS || strlen(key_id) >= sizeof a->key_id)
            return NULL;
        if (b->n == b->cap) {
            int cap = b->cap ? b->cap * 2 : 16;
            account *na = realloc(b->acc, (size_t)cap * sizeof *na);
            if (!na)
                return NULL;
            b->acc = na;
            b->cap = cap;
        }
        a = &b->acc[b->n++];
        memset(a, 0, sizeof *a);
        snprintf(a->key_id, sizeof a->key_id, "%s", key_id);
        a->rule = rule;
        a->day = day;
        a->month = month;
    }
    if (a->day != day) {
        a->day = day;
        a->tok_day = 0;
        a->usd_day = 0;
    }
    if (a->month != month) {
        a->month = month;
        a->tok_month = 0;
        a->usd_month = 0;
    }
    return a;
}

double hr_budget_cost(const hr_price *p, int64_t prompt, int64_t cached, int64_t completion)
{
    if (!p)
        return 0;
    if (cached > prompt)
        cached = prompt;
    return ((double)(prompt - cached) * p->input + (double)cached * p->cached_input +
            (double)completion * p->output) / 1e6;
}

hr_status hr_budget_seed_sqlite(hr_budget *b, const char *path, hr_err *err)
{
    if (!b)
        return HR_OK;
    struct stat st;
    if (!strncmp(path, "sqlite:", 7))
        path += 7;
    if (stat(path, &st))
        return HR_OK;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        hr_err_set(err, HR_ERR_IO, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return HR_ERR_IO;
    }
    sqlite3_busy_timeout(db, 5000);
    int64_t now = (int64_t)time(NULL);
    int32_t day, month;
    windows(now, &day, &month);
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    int64_t month_ms = (int64_t)timegm(&tm) * 1000, day_ms = (int64_t)day * 86400 * 1000;
    const char *sql = "SELECT key_id, backend, model, ts_ms >= ?1, SUM(prompt_tokens), SUM(cached_tokens), "
                      "SUM(completion_tokens) FROM usage WHERE ts_ms >= ?2 AND status >= 200 AND status < 300 "
                      "AND key_id <> '' GROUP BY 1, 2, 3, 4";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        hr_err_set(err, HR_ERR_FORMAT, "%s: not a usage log (%s)", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return HR_ERR_FORMAT;
    }
    sqlite3_bind_int64(q, 1, day_ms);
    sqlite3_bind_int64(q, 2, month_ms);
    pthread_mutex_lock(&b->mu);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *kid = (const char *)sqlite3_column_text(q, 0);
        const char *be = (const char *)sqlite3_column_text(q, 1);
        const char *model = (const char *)sqlite3_column_text(q, 2);
        bool today = sqlite3_column_int(q, 3) != 0;
        int64_t p = sqlite3_column_int64(q, 4), c = sqlite3_column_int64(q, 5), o = sqlite3_column_int64(q, 6);
        account *a = kid ? account_of(b, kid, day, month) : NULL;
        if (!a)
            continue;
        int bi = be ? hr_route_config_backend(b->cfg, be) : -1;
        double usd = bi >= 0 ? hr_budget_cost(hr_backend_price(&b->cfg->backends[bi], model), p, c, o) : 0;
        a->tok_month += p + o;
        a->usd_month += usd;
        if (today) {
            a->tok_day += p + o;
            a->usd_day += usd;
        }
    }
    pthread_mutex_unlock(&b->mu);
    sqlite3_finalize(q);
    sqlite3_close(db);
    if (rc != SQLITE_DONE)
        return hr_err_set(err, HR_ERR_IO, "%s: reading usage for budgets failed", path);
    return HR_OK;
}

int32_t hr_budget_default_max_tokens(hr_budget *b, const char *key_id)
{
    if (!b)
        return 0;
    int r = rule_of(b, key_id);
    return r < 0 ? 0 : b->cfg->budgets[r].default_max_tokens;
}

static void refusal(char *msg, size_t cap, const hr_budget_rule *r, const char *what, double used, double limit,
                    double need)
{
    snprintf(msg, cap,
             "budget exceeded for API key %s: %.6g of %.6g %s used or reserved by requests in flight; this "
             "request could need %.6g more (windows are UTC days and months)",
             r->label, used, limit, what, need);
}

static hr_budget_verdict fleet_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd,
                                       hr_budget_hold *h, char *msg, size_t cap);
static void fleet_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd);

bool hr_budget_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd, hr_budget_hold *h,
                       char *msg, size_t cap)
{
    return hr_budget_reserve_ex(b, key_id, tokens, usd, h, msg, cap) == HR_BUDGET_OK;
}

hr_budget_verdict hr_budget_reserve_ex(hr_budget *b, const char *key_id, int64_t tokens, double usd,
                                       hr_budget_hold *h, char *msg, size_t cap)
{
    *h = (hr_budget_hold){.account = -1};
    if (!b)
        return HR_BUDGET_OK;
    if (b->fleet)
        return fleet_reserve(b, key_id ? key_id : "", tokens, usd, h, msg, cap);
    int32_t day, month;
    windows((int64_t)time(NULL), &day, &month);
    pthread_mutex_lock(&b->mu);
    account *a = account_of(b, key_id ? key_id : "", day, month);
    if (!a) {
        pthread_mutex_unlock(&b->mu);
        return HR_BUDGET_OK;
    }
    const hr_budget_rule *r = &b->cfg->budgets[a->rule];
    const char *what = NULL;
    double used = 0, limit = 0;
    if (r->tokens_per_day && a->tok_day + tokens > r->tokens_per_day) {
        what = "tokens per day";
        used = (double)a->tok_day;
        limit = (double)r->tokens_per_day;
    } else if (r->tokens_per_month && a->tok_month + tokens > r->tokens_per_month) {
        what = "tokens per month";
        used = (double)a->tok_month;
        limit = (double)r->tokens_per_month;
    } else if (r->usd_per_day && a->usd_day + usd > r->usd_per_day) {
        what = "USD per day";
        used = a->usd_day;
        limit = r->usd_per_day;
    } else if (r->usd_per_month && a->usd_month + usd > r->usd_per_month) {
        what = "USD per month";
        used = a->usd_month;
        limit = r->usd_per_month;
    }
    if (what) {
        pthread_mutex_unlock(&b->mu);
        refusal(msg, cap, r, what, used, limit, what[0] == 't' ? (double)tokens : usd);
        return HR_BUDGET_REFUSED;
    }
    a->tok_day += tokens;
    a->tok_month += tokens;
    a->usd_day += usd;
    a->usd_month += usd;
    *h = (hr_budget_hold){.account = (int)(a - b->acc), .tokens = tokens, .usd = usd, .day = day, .month = month};
    pthread_mutex_unlock(&b->mu);
    return HR_BUDGET_OK;
}

void hr_budget_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd)
{
    if (!b || h->account < 0)
        return;
    if (h->fleet) {
        fleet_settle(b, h, tokens, usd);
        return;
    }
    int32_t day, month;
    windows((int64_t)time(NULL), &day, &month);
    pthread_mutex_lock(&b->mu);
    account *a = &b->acc[h->account];
    account_of(b, a->key_id, day, month); /* roll */
    if (a->day == h->day) {
        a->tok_day += tokens - h->tokens;
        a->usd_day += usd - h->usd;
    } else {
        a->tok_day += tokens;
        a->usd_day += usd;
    }
    if (a->month == h->month) {
        a->tok_month += tokens - h->tokens;
        a->usd_month += usd - h->usd;
    } else {
        a->tok_month += tokens;
        a->usd_month += usd;
    }
    pthread_mutex_unlock(&b->mu);
    h->account = -1;
}

bool hr_budget_usage(hr_budget *b, const char *key_id, int64_t *tok_day, double *usd_day, int64_t *tok_month,
                     double *usd_month)
{
    if (!b)
        return false;
    int32_t day, month;
    windows((int64_t)time(NULL), &day, &month);
    pthread_mutex_lock(&b->mu);
    account *a = account_of(b, key_id, day, month);
    if (a) {
        *tok_day = a->tok_day;
        *usd_day = a->usd_day;
        *tok_month = a->tok_month;
        *usd_month = a->usd_month;
    }
    pthread_mutex_unlock(&b->mu);
    return a != NULL;
}

/* ---- the shared ledger (PostgreSQL) ----------------------------------- */

static const char *const create_sql =
    "CREATE TABLE IF NOT EXISTS hearth_budget ("
    " key_id TEXT NOT NULL,"
    " period TEXT NOT NULL," /* 'dYYYY-MM-DD' or 'mYYYY-MM', UTC */
    " tokens BIGINT NOT NULL DEFAULT 0,"
    " usd DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " updated_ms BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (key_id, period))";

/* Adds to both windows' rows, created when missing, in one statement: the
 * rows are locked day first, then month, by every replica, so concurrent
 * reservations queue instead of deadlocking. (xmax = 0) tells a new row. */
static const char *const add_sql =
    "INSERT INTO hearth_budget AS b (key_id, period, tokens, usd, updated_ms)"
    " VALUES ($1, $2, GREATEST($4::bigint, 0), GREATEST($5::float8, 0), $6::bigint),"
    "        ($1, $3, GREATEST($4::bigint, 0), GREATEST($5::float8, 0), $6::bigint)"
    " ON CONFLICT (key_id, period) DO UPDATE SET tokens = GREATEST(b.tokens + $4::bigint, 0),"
    " usd = GREATEST(b.usd + $5::float8, 0), updated_ms = $6::bigint"
    " RETURNING period, tokens, usd, (xmax = 0)";

static const char *const seed_sql =
    "SELECT backend, model, SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens) FROM usage"
    " WHERE key_id = $1 AND ts_ms >= $2::bigint AND ts_ms < $3::bigint AND status >= 200 AND status < 300"
    " GROUP BY 1, 2";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hearth: budgets: %s\n", line);
}

/* libpq's message on one line */
static const char *pg_msg(PGconn *c, const PGresult *r, char *buf, size_t cap)
{
    const char *m = r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : c ? PQerrorMessage(c) : "no connection";
    size_t j = 0;
    for (; *m && j + 1 < cap; m++)
        buf[j++] = *m == '\n' || *m == '\r' || *m == '\t' ? ' ' : *m;
    while (j && buf[j - 1] == ' ')
        j--;
    buf[j] = 0;
    return buf;
}

static void month_start(int32_t month, struct tm *tm)
{
    memset(tm, 0, sizeof *tm);
    tm->tm_year = month / 12 - 1900;
    tm->tm_mon = month % 12;
    tm->tm_mday = 1;
}

static void period_names(int32_t day, int32_t month, char *dp, char *mp, size_t cap)
{
    time_t t = (time_t)day * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(dp, cap, "d%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    snprintf(mp, cap, "m%04d-%02d", month / 12, month % 12 + 1);
}

static bool exec_cmd(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static PGconn *pg_connect(const char *url)
{
    const char *keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"2", "hearth-budget", "1", "10", "5", "3", "10000", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c && PQstatus(c) == CONNECTION_OK) {
        /* bounded waits: a reservation runs on a request's path */
        exec_cmd(c, "SET statement_timeout = '5s'");
        exec_cmd(c, "SET lock_timeout = '5s'");
        exec_cmd(c, "SET client_min_messages = warning");
    }
    return c;
}

/* Adds tokens / usd to the key's day and month rows (add_sql; with pg_mu). */
static PGresult *exec_add(hr_budget *b, const char *kid, int32_t day, int32_t month, int64_t tokens, double usd)
{
    char dp[48], mp[48], t[32], u[48], now[32];
    period_names(day, month, dp, mp, sizeof dp);
    snprintf(t, sizeof t, "%lld", (long long)tokens);
    snprintf(u, sizeof u, "%.17g", usd);
    snprintf(now, sizeof now, "%lld", (long long)hr_wall_ms());
    const char *pv[6] = {kid, dp, mp, t, u, now};
    return PQexecParams(b->pg, add_sql, 6, NULL, pv, NULL, NULL, 0);
}

/* One settlement; false when it could not be sent (with pg_mu). */
static bool send_add(hr_budget *b, const char *kid, int32_t day, int32_t month, int64_t tokens, double usd)
{
    PGresult *r = exec_add(b, kid, day, month, tokens, usd);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        char m[512];
        b->pg_errors++;
        say("settling usage for a key failed: %s", pg_msg(b->pg, r, m, sizeof m));
    }
    PQclear(r);
    return ok;
}

/* Connected, reconnecting at most once a second, pending settlements
 * sent first; with pg_mu. */
static bool pg_ready(hr_budget *b)
{
    if (b->pg && PQstatus(b->pg) == CONNECTION_OK)
        return true;
    int64_t now = hr_mono_ms();
    if (now < b->pg_next_try_ms)
        return false;
    PQfinish(b->pg);
    b->pg = pg_connect(b->pg_url);
    if (!b->pg || PQstatus(b->pg) != CONNECTION_OK) {
        b->pg_next_try_ms = now + 1000;
        b->pg_errors++;
        if (!b->pg_down) {
            char m[512];
            b->pg_down = true;
            say("the shared ledger is unreachable (%s): requests of keys with a budget get 503 until it is back",
                pg_msg(b->pg, NULL, m, sizeof m));
        }
        return false;
    }
    if (b->pg_down) {
        b->pg_down = false;
        say("the shared ledger is reachable again; sending %d held settlements", b->npend);
    }
    int sent = 0;
    while (sent < b->npend) {
        pending_settle *p = &b->pend[sent];
        if (!send_add(b, b->acc[p->account].key_id, p->day, p->month, p->tokens, p->usd))
            break;
        sent++;
    }
    memmove(b->pend, b->pend + sent, (size_t)(b->npend - sent) * sizeof *b->pend);
    b->npend -= sent;
    return PQstatus(b->pg) == CONNECTION_OK;
}

hr_status hr_budget_attach_pg(hr_budget *b, const char *url, hr_err *err)
{
    if (!b)
        return HR_OK;
    b->pg_url = strdup(url);
    b->pend = calloc(MAX_PENDING, sizeof *b->pend);
    if (!b->pg_url || !b->pend)
        return hr_err_set(err, HR_ERR_NOMEM, "budgets: out of memory");
    b->pg = pg_connect(url);
    char m[512];
    if (!b->pg || PQstatus(b->pg) != CONNECTION_OK)
        return hr_err_set(err, HR_ERR_IO, "budgets: cannot connect to the shared ledger: %s",
                          pg_msg(b->pg, NULL, m, sizeof m));
    /* replicas starting together: one creates the table */
    if (!exec_cmd(b->pg, "BEGIN") || !exec_cmd(b->pg, "SELECT pg_advisory_xact_lock(7526402773455020034)")) {
        hr_err_set(err, HR_ERR_IO, "budgets: cannot lock the shared ledger: %s", pg_msg(b->pg, NULL, m, sizeof m));
        exec_cmd(b->pg, "ROLLBACK");
        return HR_ERR_IO;
    }
    PGresult *r = PQexec(b->pg, create_sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        hr_err_set(err, HR_ERR_IO, "budgets: cannot create table hearth_budget: %s", pg_msg(b->pg, r, m, sizeof m));
        PQclear(r);
        exec_cmd(b->pg, "ROLLBACK");
        return HR_ERR_IO;
    }
    PQclear(r);
    if (!exec_cmd(b->pg, "COMMIT"))
        return hr_err_set(err, HR_ERR_IO, "budgets: cannot create table hearth_budget: %s",
                          pg_msg(b->pg, NULL, m, sizeof m));
    b->fleet = true;
    return HR_OK;
}

/* The usage of one window before its ledger row existed (2xx rows of the
 * usage table, priced with the config's prices); with pg_mu, inside the
 * reservation's transaction. false: the query failed. */
static bool seed_window(hr_budget *b, const char *kid, int64_t from_ms, int64_t to_ms, int64_t *tok, double *usd)
{
    *tok = 0;
    *usd = 0;
    PGresult *r = PQexec(b->pg, "SELECT to_regclass('usage') IS NOT NULL");
    bool have = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (!have)
        return ok;
    char a[32], z[32];
    snprintf(a, sizeof a, "%lld", (long long)from_ms);
    snprintf(z, sizeof z, "%lld", (long long)to_ms);
    const char *pv[3] = {kid, a, z};
    r = PQexecParams(b->pg, seed_sql, 3, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return false;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *be = PQgetvalue(r, i, 0), *model = PQgetvalue(r, i, 1);
        int64_t p = strtoll(PQgetvalue(r, i, 2), NULL, 10), c = strtoll(PQgetvalue(r, i, 3), NULL, 10),
                o = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        int bi = hr_route_config_backend(b->cfg, be);
        *tok += p + o;
        if (bi >= 0)
            *usd += hr_budget_cost(hr_backend_price(&b->cfg->backends[bi], model), p, c, o);
    }
    PQclear(r);
    return true;
}

static hr_budget_verdict fleet_fail(hr_budget *b, const PGresult *r, char *msg, size_t cap)
{
    char m[512];
    pg_msg(b->pg, r, m, sizeof m);
    b->pg_errors++;
    if (PQstatus(b->pg) == CONNECTION_OK)
        exec_cmd(b->pg, "ROLLBACK");
    else if (!b->pg_down) {
        b->pg_down = true;
        say("lost the shared ledger (%s): requests of keys with a budget get 503 until it is back", m);
    }
    snprintf(msg, cap, "the budget ledger is unavailable (%s); retry later", m);
    return HR_BUDGET_UNAVAILABLE;
}

static hr_budget_verdict fleet_txn(hr_budget *b, int ai, const char *kid, const hr_budget_rule *rule, int32_t day,
                                   int32_t month, int64_t tokens, double usd, hr_budget_hold *h, char *msg,
                                   size_t cap);

static hr_budget_verdict fleet_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd,
                                       hr_budget_hold *h, char *msg, size_t cap)
{
    int32_t day, month;
    windows((int64_t)time(NULL), &day, &month);
    pthread_mutex_lock(&b->mu);
    account *a = account_of(b, key_id, day, month);
    if (!a) {
        pthread_mutex_unlock(&b->mu);
        return HR_BUDGET_OK;
    }
    int ai = (int)(a - b->acc);
    const hr_budget_rule *rule = &b->cfg->budgets[a->rule];
    char kid[32];
    snprintf(kid, sizeof kid, "%s", a->key_id);
    pthread_mutex_unlock(&b->mu);

    pthread_mutex_lock(&b->pg_mu);
    hr_budget_verdict v = HR_BUDGET_UNAVAILABLE;
    bool tried = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!pg_ready(b))
            break;
        tried = true;
        v = fleet_txn(b, ai, kid, rule, day, month, tokens, usd, h, msg, cap);
        if (v != HR_BUDGET_UNAVAILABLE || PQstatus(b->pg) == CONNECTION_OK)
            break;
        b->pg_next_try_ms = 0; /* the connection was lost since the last call (a restart): one fresh try */
    }
    if (v == HR_BUDGET_UNAVAILABLE) {
        b->unavailable++;
        if (!tried)
            snprintf(msg, cap, "the budget ledger is unavailable (the database cannot be reached); retry later");
    }
    pthread_mutex_unlock(&b->pg_mu);
    return v;
}

/* The reservation's transaction; with pg_mu. */
static hr_budget_verdict fleet_txn(hr_budget *b, int ai, const char *kid, const hr_budget_rule *rule, int32_t day,
                                   int32_t month, int64_t tokens, double usd, hr_budget_hold *h, char *msg,
                                   size_t cap)
{
    PGresult *r = PQexec(b->pg, "BEGIN");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        hr_budget_verdict v = fleet_fail(b, r, msg, cap);
        PQclear(r);
        return v;
    }
    PQclear(r);
    r = exec_add(b, kid, day, month, tokens, usd);
    char dp[48], mp[48]; /* the rows' period names, for seeding below */
    period_names(day, month, dp, mp, sizeof dp);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 2) {
        hr_budget_verdict v = fleet_fail(b, r, msg, cap);
        PQclear(r);
        return v;
    }
    int64_t tok_day = 0, tok_month = 0;
    double usd_day = 0, usd_month = 0;
    bool new_day = false, new_month = false;
    for (int i = 0; i < 2; i++) {
        bool is_day = PQgetvalue(r, i, 0)[0] == 'd';
        int64_t tv = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        double uv = strtod(PQgetvalue(r, i, 2), NULL);
        bool fresh = PQgetvalue(r, i, 3)[0] == 't';
        if (is_day) {
            tok_day = tv;
            usd_day = uv;
            new_day = fresh;
        } else {
            tok_month = tv;
            usd_month = uv;
            new_month = fresh;
        }
    }
    PQclear(r);
    /* a window's first row: add what the usage log already holds for it */
    struct tm tm;
    month_start(month, &tm);
    int64_t m0 = (int64_t)timegm(&tm) * 1000;
    month_start(month + 1, &tm);
    int64_t m1 = (int64_t)timegm(&tm) * 1000;
    int64_t d0 = (int64_t)day * 86400000, d1 = d0 + 86400000;
    const struct {
        bool fresh;
        int64_t from, to;
        const char *period;
        int64_t *tok;
        double *usd;
    } seeds[2] = {{new_day, d0, d1, dp, &tok_day, &usd_day}, {new_month, m0, m1, mp, &tok_month, &usd_month}};
    for (int i = 0; i < 2; i++) {
        if (!seeds[i].fresh)
            continue;
        int64_t st = 0;
        double su = 0;
        if (!seed_window(b, kid, seeds[i].from, seeds[i].to, &st, &su)) {
            return fleet_fail(b, NULL, msg, cap);
        }
        if (st || su) {
            char a1[32], a2[48];
            snprintf(a1, sizeof a1, "%lld", (long long)st);
            snprintf(a2, sizeof a2, "%.17g", su);
            const char *sv[4] = {kid, seeds[i].period, a1, a2};
            r = PQexecParams(b->pg,
                             "UPDATE hearth_budget SET tokens = tokens + $3::bigint, usd = usd + $4::float8"
                             " WHERE key_id = $1 AND period = $2",
                             4, NULL, sv, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                hr_budget_verdict v = fleet_fail(b, r, msg, cap);
                PQclear(r);
                return v;
            }
            PQclear(r);
            *seeds[i].tok += st;
            *seeds[i].usd += su;
        }
    }
    const char *what = NULL;
    double used = 0, limit = 0;
    if (rule->tokens_per_day && tok_day > rule->tokens_per_day) {
        what = "tokens per day";
        used = (double)(tok_day - tokens);
        limit = (double)rule->tokens_per_day;
    } else if (rule->tokens_per_month && tok_month > rule->tokens_per_month) {
        what = "tokens per month";
        used = (double)(tok_month - tokens);
        limit = (double)rule->tokens_per_month;
    } else if (rule->usd_per_day && usd_day > rule->usd_per_day) {
        what = "USD per day";
        used = usd_day - usd;
        limit = rule->usd_per_day;
    } else if (rule->usd_per_month && usd_month > rule->usd_per_month) {
        what = "USD per month";
        used = usd_month - usd;
        limit = rule->usd_per_month;
    }
    if (what) {
        /* undo; a fresh row's seed goes with it and is taken again next time */
        exec_cmd(b->pg, "ROLLBACK"); /* a lost connection rolls back too */
        refusal(msg, cap, rule, what, used, limit, what[0] == 't' ? (double)tokens : usd);
        return HR_BUDGET_REFUSED;
    }
    r = PQexec(b->pg, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        hr_budget_verdict v = fleet_fail(b, r, msg, cap);
        PQclear(r);
        return v;
    }
    PQclear(r);
    pthread_mutex_lock(&b->mu);
    account *a = &b->acc[ai];
    account_of(b, a->key_id, day, month); /* roll */
    a->tok_day = tok_day;
    a->usd_day = usd_day;
    a->tok_month = tok_month;
    a->usd_month = usd_month;
    pthread_mutex_unlock(&b->mu);
    *h = (hr_budget_hold){.account = ai, .tokens = tokens, .usd = usd, .day = day, .month = month, .fleet = true};
    return HR_BUDGET_OK;
}

/* Real use replaces the reservation in the windows it was charged to. */
static void fleet_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd)
{
    int64_t dt = tokens - h->tokens;
    double du = usd - h->usd;
    pthread_mutex_lock(&b->pg_mu);
    bool sent = false;
    if (dt || du) {
        if (pg_ready(b))
            sent = send_add(b, b->acc[h->account].key_id, h->day, h->month, dt, du);
        if (!sent) {
            if (b->npend < MAX_PENDING)
                b->pend[b->npend++] = (pending_settle){h->account, h->day, h->month, dt, du};
            else
                b->settles_lost++; /* the reservation stays charged: an over-count */
        }
    }
    pthread_mutex_lock(&b->mu);
    account *a = &b->acc[h->account];
    if (a->day == h->day) {
        a->tok_day += dt;
        a->usd_day += du;
    }
    if (a->month == h->month) {
        a->tok_month += dt;
        a->usd_month += du;
    }
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&b->pg_mu);
    h->account = -1;
}

static void put_one(void (*put)(void *, const char *), void *ctx, const char *name, const char *type,
                    const char *help, double v)
{
    char line[512];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
    put(ctx, line);
}

void hr_budget_metrics(hr_budget *b, void (*put)(void *ctx, const char *line), void *ctx)
{
    if (!b || !b->fleet)
        return;
    pthread_mutex_lock(&b->pg_mu);
    bool up = b->pg && PQstatus(b->pg) == CONNECTION_OK && !b->pg_down;
    double errors = (double)b->pg_errors, unavail = (double)b->unavailable, pend = b->npend,
           lost = (double)b->settles_lost;
    pthread_mutex_unlock(&b->pg_mu);
    put_one(put, ctx, "hearth_budget_ledger_up", "gauge", "1 while the shared budget ledger (PostgreSQL) answers.",
            up ? 1 : 0);
    put_one(put, ctx, "hearth_budget_ledger_errors_total", "counter", "Failed calls to the shared budget ledger.",
            errors);
    put_one(put, ctx, "hearth_budget_unavailable_total", "counter",
            "Requests answered 503 because the shared budget ledger could not be reached.", unavail);
    put_one(put, ctx, "hearth_budget_settles_pending", "gauge",
            "Settlements held until the shared budget ledger is reachable again.", pend);
    put_one(put, ctx, "hearth_budget_settles_lost_total", "counter",
            "Settlements dropped (the hold list was full); their reservations stay charged.", lost);
}
