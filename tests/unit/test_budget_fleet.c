/* test_budget_fleet.c - budgets shared by replicas in PostgreSQL (issue 12
 * item 5): two ledgers attached to one database (two replicas), eight
 * threads reserving at once, get exactly as many reservations as the limit
 * holds; settling releases what was not used; a window's first row is
 * seeded from the usage table; a connection lost under the ledger (a
 * database restart) costs no request; an unreachable database at attach
 * is an error. Runs against $HEARTH_TEST_PG in a fresh schema; without it
 * the tests are skipped, and fail under CI=true. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "route/budget.h"
#include "route/config.h"
#include "store/usage.h"

static char url[1024];
static char schema[64];

static const char *base_url(void)
{
    const char *u = getenv("HEARTH_TEST_PG");
    return u && *u ? u : NULL;
}

static void need_pg(void)
{
    if (base_url())
        return;
    const char *ci = getenv("CI");
    if (ci && !strcmp(ci, "true"))
        fail_msg("HEARTH_TEST_PG is not set (CI=true: a check that cannot run fails)");
    skip();
}

static long long pg_int(const char *sql)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("sql '%s': %s", sql, PQerrorMessage(c));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

static void pg_exec(const char *u, const char *sql)
{
    PGconn *c = PQconnectdb(u);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("sql '%s': %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static int setup(void **state)
{
    (void)state;
    if (!base_url())
        return 0;
    snprintf(schema, sizeof schema, "hrb_%ld_%d", (long)getpid(), (int)(time(NULL) % 100000));
    const char *b = base_url();
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s", b, strchr(b, '?') ? "&" : "?", schema);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    pg_exec(b, sql);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!base_url())
        return 0;
    char sql[256];
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE", schema);
    pg_exec(base_url(), sql);
    return 0;
}

static const char *const cfg_json =
    "{\"budgets\": [{\"key_id\": \"kid-race\", \"tokens_per_day\": 1000},"
    "               {\"key_id\": \"kid-settle\", \"tokens_per_day\": 1000},"
    "               {\"key_id\": \"kid-seed\", \"tokens_per_day\": 1000},"
    "               {\"key_id\": \"kid-lost\", \"tokens_per_month\": 100000}]}";

static hr_route_config *cfg;

static hr_budget *fleet_ledger(void)
{
    hr_err err = {0};
    if (!cfg)
        assert_int_equal(hr_route_config_parse(cfg_json, strlen(cfg_json), &cfg, &err), HR_OK);
    hr_budget *b = NULL;
    assert_int_equal(hr_budget_new(cfg, &b, &err), HR_OK);
    assert_non_null(b);
    if (hr_budget_attach_pg(b, url, &err) != HR_OK)
        fail_msg("attach: %s", err.msg);
    return b;
}

typedef struct {
    hr_budget *b;
    int granted, refused, other;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < 12; i++) {
        hr_budget_hold h;
        char msg[400];
        hr_budget_verdict v = hr_budget_reserve_ex(r->b, "kid-race", 30, 0, &h, msg, sizeof msg);
        if (v == HR_BUDGET_OK) {
            r->granted++;
            hr_budget_settle(r->b, &h, 30, 0); /* used what it reserved */
        } else if (v == HR_BUDGET_REFUSED)
            r->refused++;
        else
            r->other++;
    }
    return NULL;
}

/* 2 replicas x 4 threads x 12 tries of 30 tokens against 1,000 a day:
 * exactly floor(1000 / 30) = 33 granted (two in-memory ledgers would grant
 * 33 each). */
static void test_two_replicas_one_budget(void **state)
{
    (void)state;
    need_pg();
    hr_budget *b1 = fleet_ledger(), *b2 = fleet_ledger();
    racer rs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        rs[i] = (racer){.b = i % 2 ? b2 : b1};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    int granted = 0, refused = 0, other = 0, g1 = 0, g2 = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        granted += rs[i].granted;
        refused += rs[i].refused;
        other += rs[i].other;
        *(i % 2 ? &g2 : &g1) += rs[i].granted;
    }
    printf("fleet ledger: %d granted (%d via replica 1, %d via replica 2), %d refused\n", granted, g1, g2, refused);
    assert_int_equal(other, 0);
    assert_int_equal(granted, 33);
    assert_int_equal(refused, 96 - 33);
    assert_true(g1 > 0 && g2 > 0);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-race' AND period LIKE 'd%'"), 990);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-race' AND period LIKE 'm%'"), 990);
    /* each replica's mirror shows the shared total as last seen */
    int64_t td = 0, tm = 0;
    double ud = 0, um = 0;
    assert_true(hr_budget_usage(b1, "kid-race", &td, &ud, &tm, &um));
    assert_true(td <= 990 && td > 0);
    hr_budget_free(b1);
    hr_budget_free(b2);
}

/* Settling replaces the reservation with the real use. */
static void test_settle_releases(void **state)
{
    (void)state;
    need_pg();
    hr_budget *b = fleet_ledger();
    hr_budget_hold h, h2, h3;
    char msg[400];
    assert_int_equal(hr_budget_reserve_ex(b, "kid-settle", 600, 0, &h, msg, sizeof msg), HR_BUDGET_OK);
    assert_int_equal(hr_budget_reserve_ex(b, "kid-settle", 500, 0, &h2, msg, sizeof msg), HR_BUDGET_REFUSED);
    assert_non_null(strstr(msg, "tokens per day"));
    hr_budget_settle(b, &h, 100, 0);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-settle' AND period LIKE 'd%'"), 100);
    assert_int_equal(hr_budget_reserve_ex(b, "kid-settle", 900, 0, &h2, msg, sizeof msg), HR_BUDGET_OK);
    assert_int_equal(hr_budget_reserve_ex(b, "kid-settle", 1, 0, &h3, msg, sizeof msg), HR_BUDGET_REFUSED);
    hr_budget_settle(b, &h2, 900, 0);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-settle' AND period LIKE 'd%'"), 1000);
    /* a key without a budget is not charged anywhere */
    assert_int_equal(hr_budget_reserve_ex(b, "kid-nobody", 1000000, 0, &h3, msg, sizeof msg), HR_BUDGET_OK);
    assert_int_equal(h3.account, -1);
    assert_int_equal(pg_int("SELECT count(*) FROM hearth_budget WHERE key_id = 'kid-nobody'"), 0);
    hr_budget_free(b);
}

/* A window's first ledger row starts from the usage already logged. */
static void test_seeded_from_usage(void **state)
{
    (void)state;
    need_pg();
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(url, NULL, &db, &err), HR_OK);
    hr_usage_row r = {.key_id = "kid-seed", .model = "m", .backend = "local", .prompt_tokens = 200,
                      .completion_tokens = 100, .duration_s = 0.1, .status = 200, .finish_reason = "stop"};
    assert_true(hr_usage_record(db, &r));
    assert_true(hr_usage_record(db, &r));
    r.status = 429; /* not 2xx: not usage */
    assert_true(hr_usage_record(db, &r));
    assert_int_equal(hr_usage_close(db, &err), HR_OK);

    hr_budget *b = fleet_ledger();
    hr_budget_hold h;
    char msg[400];
    /* 600 logged: 500 more would pass 1,000 */
    assert_int_equal(hr_budget_reserve_ex(b, "kid-seed", 500, 0, &h, msg, sizeof msg), HR_BUDGET_REFUSED);
    assert_int_equal(hr_budget_reserve_ex(b, "kid-seed", 400, 0, &h, msg, sizeof msg), HR_BUDGET_OK);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-seed' AND period LIKE 'd%'"), 1000);
    hr_budget_settle(b, &h, 400, 0);
    hr_budget_free(b);
}

/* The ledger's connection killed (as by a database restart): the next
 * reservation reconnects and goes through. */
static void test_connection_lost(void **state)
{
    (void)state;
    need_pg();
    hr_budget *b = fleet_ledger();
    hr_budget_hold h;
    char msg[400];
    assert_int_equal(hr_budget_reserve_ex(b, "kid-lost", 10, 0, &h, msg, sizeof msg), HR_BUDGET_OK);
    hr_budget_settle(b, &h, 10, 0);
    pg_exec(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hearth-budget'");
    assert_int_equal(hr_budget_reserve_ex(b, "kid-lost", 10, 0, &h, msg, sizeof msg), HR_BUDGET_OK);
    hr_budget_settle(b, &h, 5, 0);
    assert_int_equal(pg_int("SELECT tokens FROM hearth_budget WHERE key_id = 'kid-lost' AND period LIKE 'm%'"), 15);
    hr_budget_free(b);
}

static void test_unreachable_at_attach(void **state)
{
    (void)state;
    need_pg();
    hr_err err = {0};
    hr_budget *b = NULL;
    if (!cfg)
        assert_int_equal(hr_route_config_parse(cfg_json, strlen(cfg_json), &cfg, &err), HR_OK);
    assert_int_equal(hr_budget_new(cfg, &b, &err), HR_OK);
    assert_int_equal(hr_budget_attach_pg(b, "postgresql://u@127.0.0.1:1/x?connect_timeout=2", &err), HR_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot connect"));
    hr_budget_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_replicas_one_budget),
        cmocka_unit_test(test_settle_releases),
        cmocka_unit_test(test_seeded_from_usage),
        cmocka_unit_test(test_connection_lost),
        cmocka_unit_test(test_unreachable_at_attach),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    hr_route_config_free(cfg);
    return rc;
}
