/* budget.c - the per-key ledger (see budget.h). */
#include "route/budget.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#define MAX_ACCOUNTS 65536

typedef struct {
    char key_id[32];
    int rule;
    int32_t day, month;
    int64_t tok_day, tok_month;
    double usd_day, usd_month;
} account;

struct hr_budget {
    const hr_route_config *cfg;
    pthread_mutex_t mu;
    account *acc;
    int n, cap;
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
    *out = b;
    return HR_OK;
}

void hr_budget_free(hr_budget *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
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

bool hr_budget_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd, hr_budget_hold *h,
                       char *msg, size_t cap)
{
    *h = (hr_budget_hold){.account = -1};
    if (!b)
        return true;
    int32_t day, month;
    windows((int64_t)time(NULL), &day, &month);
    pthread_mutex_lock(&b->mu);
    account *a = account_of(b, key_id ? key_id : "", day, month);
    if (!a) {
        pthread_mutex_unlock(&b->mu);
        return true;
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
        snprintf(msg, cap,
                 "budget exceeded for API key %s: %.6g of %.6g %s used or reserved by requests in flight; this "
                 "request could need %.6g more (windows are UTC days and months)",
                 r->label, used, limit, what, what[0] == 't' ? (double)tokens : usd);
        return false;
    }
    a->tok_day += tokens;
    a->tok_month += tokens;
    a->usd_day += usd;
    a->usd_month += usd;
    *h = (hr_budget_hold){.account = (int)(a - b->acc), .tokens = tokens, .usd = usd, .day = day, .month = month};
    pthread_mutex_unlock(&b->mu);
    return true;
}

void hr_budget_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd)
{
    if (!b || h->account < 0)
        return;
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
