/* The migration runner against the real PostgreSQL and PgBouncer: up,
 * down and to, reversibility, the protected history, failures, locks,
 * concurrency and errors. The splitter and file sets are in
 * check_migrate_split.c, ds-migrate in check_migrate_cli.c, partition
 * maintenance and the schema check in check_migrate_maintain.c. */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"
#include "migrate_fixture.h"

/* ---- helpers ----------------------------------------------------------- */

static void remove_file(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(unlink(path), 0);
}

static ds_migrate_options dir_options(const char *dir) {
    ds_migrate_options o = DS_MIGRATE_OPTIONS_INIT;
    o.dir = dir;
    return o;
}

/* Progress events, recorded. */
typedef struct events {
    int n;
    ds_migrate_event_kind ev[64];
    int64_t version[64];
    char *sql[64];
} events;

static void record_event(void *ud, const ds_migrate_event *p) {
    events *e = ud;
    if (e->n >= 64)
        return;
    e->ev[e->n] = p->kind;
    e->version[e->n] = p->version;
    e->sql[e->n] = p->sql ? strdup(p->sql) : NULL;
    e->n++;
}

static void events_free(events *e) {
    for (int i = 0; i < e->n; i++)
        free(e->sql[i]);
}

static int count_events(const events *e, ds_migrate_event_kind ev) {
    int n = 0;
    for (int i = 0; i < e->n; i++)
        n += e->ev[i] == ev;
    return n;
}

/* Two migrations on a table of their own, for tests that need a small set
 * of files under their control. */
static char *small_dir(void) {
    char *d = dt_temp_dir("migrate");
    dt_write_file(d, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");
    dt_write_file(d, "0001_things.down.sql", "DROP TABLE things;\n");
    dt_write_file(d, "0002_things_note.up.sql",
               "ALTER TABLE things ADD COLUMN note text;\n");
    dt_write_file(d, "0002_things_note.down.sql",
               "ALTER TABLE things DROP COLUMN note;\n");
    return d;
}

/* A fresh database, small_dir()'s migrations and a pool on it. */
typedef struct small_db {
    char *url;
    char *dir;
    ds_pool *pool;
} small_db;

static small_db small_db_open(const char *tag) {
    small_db d;
    d.url = dt_create_db(tag);
    d.dir = small_dir();
    d.pool = dt_pool(d.url, 1, 2);
    return d;
}

static void small_db_close(small_db *d) {
    ds_pool_close(d->pool);
    dt_rm_dir(d->dir);
    dt_drop_db(d->url);
    free(d->url);
}

/* ---- up, status, down, to --------------------------------------------------- */

START_TEST(test_migrate_up_applies_everything_once) {
    char *url = dt_create_db("mig_up");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};

    ds_migration_list *list = NULL;
    ds_status st = ds_migrate_status(pool, NULL, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->current_version, 0);
    ck_assert_int_eq(list->latest_version, DS_SCHEMA_VERSION);
    ck_assert_uint_eq(list->pending, list->count);
    ck_assert(list->consistent);
    ck_assert_int_eq(list->items[0].state, DS_MIGRATION_PENDING);
    ds_migrate_list_free(list);
    /* status is read-only: it does not even create the record table */
    ck_assert(!table_exists(url, "ds_schema_migrations"));

    events ev = {0};
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    int applied = -1;
    st = ds_migrate_up(pool, &opts, &applied, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(applied, DS_SCHEMA_VERSION);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_APPLYING), applied);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_APPLIED), applied);
    ck_assert_int_eq(ev.ev[0], DS_MIGRATE_EVENT_APPLYING);
    ck_assert_int_eq(ev.version[0], 1);
    ck_assert_int_eq(ev.ev[1], DS_MIGRATE_EVENT_APPLIED);
    events_free(&ev);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    ck_assert(table_exists(url, "users"));
    ck_assert(table_exists(url, "analytics_events_default"));

    st = ds_migrate_up(pool, NULL, &applied, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(applied, 0);

    st = ds_migrate_status(pool, NULL, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->current_version, DS_SCHEMA_VERSION);
    ck_assert_uint_eq(list->pending, 0);
    for (size_t i = 0; i < list->count; i++) {
        const ds_migration *m = &list->items[i];
        ck_assert_int_eq(m->state, DS_MIGRATION_APPLIED);
        ck_assert_int_gt(m->applied_at_us, 0);
        ck_assert_str_eq(m->checksum, m->applied_checksum);
        ck_assert_uint_eq(strlen(m->checksum), 64);
    }
    ck_assert_str_eq(list->items[0].name, "platform_schema");
    ck_assert_str_eq(ds_migrate_state_str(list->items[0].state), "applied");
    ds_migrate_list_free(list);
    st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_down_and_to_move_both_ways) {
    small_db d = small_db_open("mig_down");
    dt_write_file(d.dir, "0003_more.up.sql", "CREATE TABLE more (id int);");
    dt_write_file(d.dir, "0003_more.down.sql", "DROP TABLE more;");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    int n = -1;

    ds_status st = ds_migrate_down(d.pool, &opts, 1, &n, &err);
    ck_assert_ds_ok(st, err); /* nothing applied: nothing to revert */
    ck_assert_int_eq(n, 0);

    st = ds_migrate_to(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert(table_exists(d.url, "things") && !table_exists(d.url, "more"));

    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);

    st = ds_migrate_down(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(applied_count(d.url), 1);
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM information_schema."
                                     "columns WHERE table_name = 'things' "
                                     "AND column_name = 'note'"),
                     0);

    st = ds_migrate_to(d.pool, &opts, 3, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    st = ds_migrate_to(d.pool, &opts, 0, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 3);
    ck_assert(!table_exists(d.url, "things"));
    ck_assert_int_eq(applied_count(d.url), 0); /* the record table stays */

    st = ds_migrate_to(d.pool, &opts, 7, &n, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "7"));

    st = ds_migrate_down(d.pool, &opts, 5, &n, &err); /* more than applied */
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 0);
    small_db_close(&d);
}
END_TEST

/* ---- every migration is reversible ------------------------------------------- */

/* The schema as pg_dump sees it, without the record table. pg_dump 15.14+
 * writes a random \restrict key per run; those lines are dropped. */
static char *schema_dump(const char *url) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "pg_dump --schema-only --no-owner --no-privileges "
             "--exclude-table=ds_schema_migrations '%s' 2>&1 | "
             "grep -v -E '^\\\\(un)?restrict '",
             url);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    pclose(p);
    ck_assert_msg(strstr(buf, "PostgreSQL database dump") != NULL,
                  "pg_dump failed: %.300s", buf);
    return buf;
}

static void assert_same_schema(const char *a, const char *b, int64_t v,
                               const char *when) {
    if (strcmp(a, b) == 0)
        return;
    size_t i = 0;
    while (a[i] && a[i] == b[i])
        i++;
    size_t from = i > 200 ? i - 200 : 0;
    ck_abort_msg("version %lld, %s: the schema differs near:\n%.400s\n--- vs "
                 "---\n%.400s",
                 (long long)v, when, a + from, b + from);
}

START_TEST(test_migrate_every_version_reversible) {
    if (system("pg_dump --version >/dev/null 2>&1") != 0) {
        dt_skip("test_migrate_every_version_reversible", "pg_dump not found");
        return;
    }
    char *url = dt_create_db("mig_rev");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    int64_t latest = DS_SCHEMA_VERSION;
    char **dumps = calloc((size_t)latest + 1, sizeof *dumps);
    dumps[0] = schema_dump(url);
    for (int64_t v = 1; v <= latest; v++) {
        ds_status st = ds_migrate_to(pool, NULL, v, NULL, &err);
        ck_assert_ds_ok(st, err);
        dumps[v] = schema_dump(url);
        ck_assert_str_ne(dumps[v], dumps[v - 1]);
    }
    for (int64_t v = latest; v >= 1; v--) {
        ds_status st = ds_migrate_to(pool, NULL, v - 1, NULL, &err);
        ck_assert_ds_ok(st, err);
        char *down = schema_dump(url);
        assert_same_schema(dumps[v - 1], down, v, "after down");
        free(down);
        st = ds_migrate_to(pool, NULL, v, NULL, &err);
        ck_assert_ds_ok(st, err);
        char *again = schema_dump(url);
        assert_same_schema(dumps[v], again, v, "after up, down, up");
        free(again);
        st = ds_migrate_to(pool, NULL, v - 1, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    for (int64_t v = 0; v <= latest; v++)
        free(dumps[v]);
    free(dumps);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- the history is protected -------------------------------------------------- */

START_TEST(test_migrate_refuses_edited_missing_out_of_order) {
    small_db d = small_db_open("mig_hist");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_to(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);

    /* Edited after it was applied: refused before 0002 runs. */
    dt_write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n-- edit\n");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_things.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "edited"));
    ck_assert_int_eq(applied_count(d.url), 1);
    st = ds_migrate_verify(d.pool, &opts, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ds_migration_list *list = NULL;
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[0].state, DS_MIGRATION_CHANGED);
    ck_assert(!list->consistent);
    ds_migrate_list_free(list);
    dt_write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");

    /* A new file older than the newest applied one. */
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    dt_write_file(d.dir, "0000001_early.up.sql", "CREATE TABLE early (id int);");
    dt_write_file(d.dir, "0000001_early.down.sql", "DROP TABLE early;");
    remove_file(d.dir, "0001_things.up.sql"); /* keep version 1 unique */
    remove_file(d.dir, "0001_things.down.sql");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err); /* 1 renamed to "early" */
    ck_assert_ptr_nonnull(strstr(err.message, "0000001_early.up.sql"));
    remove_file(d.dir, "0000001_early.up.sql");
    remove_file(d.dir, "0000001_early.down.sql");
    dt_write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");
    dt_write_file(d.dir, "0001_things.down.sql", "DROP TABLE things;\n");
    st = ds_migrate_to(d.pool, &opts, 2, NULL, &err);
    ck_assert_ds_ok(st, err);
    dt_write_file(d.dir, "0005_late.up.sql", "CREATE TABLE late (id int);");
    dt_write_file(d.dir, "0005_late.down.sql", "DROP TABLE late;");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    dt_write_file(d.dir, "0003_forgotten.up.sql", "CREATE TABLE forgotten (id int);");
    dt_write_file(d.dir, "0003_forgotten.down.sql", "DROP TABLE forgotten;");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_forgotten.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "older"));
    ck_assert(!table_exists(d.url, "forgotten"));
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[2].state, DS_MIGRATION_OUT_OF_ORDER);
    ds_migrate_list_free(list);
    remove_file(d.dir, "0003_forgotten.up.sql");
    remove_file(d.dir, "0003_forgotten.down.sql");

    /* Applied but missing: also refused for down, which needs the file. */
    remove_file(d.dir, "0005_late.up.sql");
    remove_file(d.dir, "0005_late.down.sql");
    st = ds_migrate_down(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0005_late.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "missing"));
    ck_assert(table_exists(d.url, "late"));
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[list->count - 1].state, DS_MIGRATION_MISSING);
    ck_assert_str_eq(list->items[list->count - 1].name, "late");
    ds_migrate_list_free(list);

    small_db_close(&d);
}
END_TEST

/* ---- failures roll back ------------------------------------------------------ */

/* Ends the backend that runs COMMIT once it sleeps in a deferred
 * trigger, i.e. while the commit is under way. */
typedef struct commit_killer {
    const char *url;
    int killed;
} commit_killer;

static void *kill_at_commit(void *p) {
    commit_killer *k = p;
    PGconn *c = dt_connect(k->url);
    for (int i = 0; i < 1000 && !k->killed; i++) {
        PGresult *r = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM "
                                "pg_stat_activity WHERE query = 'COMMIT' AND "
                                "wait_event = 'PgSleep' AND datname = "
                                "current_database()");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            k->killed = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        usleep(10000);
    }
    PQfinish(c);
    return NULL;
}

/* The connection lost while COMMIT runs: the outcome is unknown to the
 * runner, and it says so (DS_ERR_CONNECTION), never success. */
START_TEST(test_migrate_connection_lost_at_commit_is_reported_unknown) {
    char *url = dt_create_db("mig_commitlost");
    char *dir = dt_temp_dir("migrate");
    dt_write_file(dir, "0001_slow_commit.up.sql",
               "CREATE TABLE t (id int);\n"
               "CREATE FUNCTION t_slow() RETURNS trigger LANGUAGE plpgsql AS\n"
               "$$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$;\n"
               "CREATE CONSTRAINT TRIGGER t_slow AFTER INSERT ON t\n"
               "    DEFERRABLE INITIALLY DEFERRED\n"
               "    FOR EACH ROW EXECUTE FUNCTION t_slow();\n"
               "INSERT INTO t VALUES (1);\n");
    dt_write_file(dir, "0001_slow_commit.down.sql",
               "DROP TABLE t;\nDROP FUNCTION t_slow();\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    commit_killer k = {url, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, kill_at_commit, &k), 0);
    ds_error err = {0};
    ds_status st = ds_migrate_up(pool, &opts, NULL, &err);
    pthread_join(th, NULL);
    ck_assert_int_eq(k.killed, 1);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_msg(strstr(err.message, "0001_slow_commit.up.sql"), "%s",
                  err.message);
    ck_assert_msg(strstr(err.message, "COMMIT was sent, so the outcome is "
                                      "unknown"),
                  "%s", err.message);
    /* here the server had not committed: neither the table nor the
     * record (created in the same transaction) is there */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname IN ('t', 'ds_schema_migrations')"),
                     0);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_failure_rolls_back_and_names_line) {
    small_db d = small_db_open("mig_fail");
    dt_write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\n"
               "\n"
               "INSERT INTO half_done VALUES (1);\n"
               "-- the next statement fails on its third line\n"
               "SELECT id\n"
               "  FROM half_done\n"
               "  WHERE nope = 1;\n");
    dt_write_file(d.dir, "0003_bad.down.sql", "DROP TABLE half_done;");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    int n = -1;
    ds_status st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_int_eq(n, 2); /* 0001 and 0002 committed before */
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:7:"));
    ck_assert_ptr_nonnull(strstr(err.message, "nope"));
    ck_assert_ptr_nonnull(strstr(err.message, "stays at version 2"));
    ck_assert_str_eq(err.sqlstate, "42703");
    ck_assert(!table_exists(d.url, "half_done"));
    ck_assert_int_eq(applied_count(d.url), 2);

    /* A runtime error without a position names the statement's first line. */
    dt_write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int PRIMARY KEY);\n"
               "INSERT INTO half_done\n"
               "  VALUES (1), (1);\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert_str_eq(err.sqlstate, "23505");
    ck_assert(!table_exists(d.url, "half_done"));

    /* Transaction control inside a file is refused before it runs. */
    dt_write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\nCOMMIT;\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert(!table_exists(d.url, "half_done"));

    /* An unterminated string: nothing runs. */
    dt_write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\nSELECT 'open;\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert(!table_exists(d.url, "half_done"));
    ck_assert_int_eq(applied_count(d.url), 2);

    /* The d.pool's connections are healthy afterwards. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(d.pool, "SELECT 1", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    small_db_close(&d);
}
END_TEST

/* ---- -- ds:no-transaction ------------------------------------------------------ */

START_TEST(test_migrate_no_transaction_runs_outside_a_transaction) {
    small_db d = small_db_open("mig_notx");
    /* Inside a transaction this statement fails. */
    dt_write_file(d.dir, "0003_idx.up.sql",
               "CREATE INDEX CONCURRENTLY things_label_idx ON things (label);\n");
    dt_write_file(d.dir, "0003_idx.down.sql", "DROP INDEX things_label_idx;\n");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_str_eq(err.sqlstate, "25001");
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql:1:"));

    dt_write_file(d.dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_label_idx ON things (label);\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_note_idx ON things (note);\n");
    dt_write_file(d.dir, "0003_idx.down.sql",
               "-- ds:no-transaction\n"
               "DROP INDEX CONCURRENTLY IF EXISTS things_note_idx;\n"
               "DROP INDEX CONCURRENTLY IF EXISTS things_label_idx;\n");
    dt_write_file(d.dir, "0004_after.up.sql", "CREATE TABLE after_idx (id int);");
    dt_write_file(d.dir, "0004_after.down.sql", "DROP TABLE after_idx;");
    int n = 0;
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM pg_index i JOIN "
                                     "pg_class c ON c.oid = i.indexrelid "
                                     "WHERE c.relname IN ('things_label_idx',"
                                     "'things_note_idx') AND i.indisvalid"),
                     2);
    ck_assert_int_eq(count_rows(d.url, "SELECT no_transaction::int FROM "
                                     "ds_schema_migrations WHERE version = 3"),
                     1);
    ck_assert(table_exists(d.url, "after_idx"));
    /* Nothing is left locked. */
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM pg_locks WHERE "
                                     "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);

    st = ds_migrate_to(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert(!table_exists(d.url, "things_label_idx"));

    /* A failure outside a transaction says what stayed. */
    dt_write_file(d.dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_label_idx ON things (label);\n"
               "CREATE INDEX CONCURRENTLY things_x_idx ON things (missing_column);\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql:3:"));
    ck_assert_ptr_nonnull(strstr(err.message, "outside a transaction"));
    ck_assert(table_exists(d.url, "things_label_idx"));
    ck_assert_int_eq(applied_count(d.url), 2);
    small_db_close(&d);
}
END_TEST

/* ---- locks ------------------------------------------------------------------- */

typedef struct release_later {
    PGconn *conn;
    int after_ms;
} release_later;

static void *release_main(void *p) {
    release_later *r = p;
    usleep((useconds_t)r->after_ms * 1000);
    PQclear(PQexec(r->conn, "COMMIT"));
    return NULL;
}

START_TEST(test_migrate_waits_for_lock_then_times_out_or_proceeds) {
    small_db d = small_db_open("mig_wait");
    PGconn *holder = dt_connect(d.url);
    dt_exec(holder, "BEGIN");
    dt_exec(holder, "SELECT pg_advisory_xact_lock(7238249325589062004)");

    events ev = {0};
    ds_migrate_options opts = dir_options(d.dir);
    opts.lock_wait_ms = 300;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    ds_error err = {0};
    ds_status st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_WAITING), 1);
    ck_assert(!table_exists(d.url, "things"));

    opts.lock_wait_ms = -1; /* do not wait at all */
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);

    release_later rl = {holder, 300};
    pthread_t th;
    pthread_create(&th, NULL, release_main, &rl);
    opts.lock_wait_ms = 30000;
    int n = 0;
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    pthread_join(th, NULL);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    events_free(&ev);
    PQfinish(holder);
    small_db_close(&d);
}
END_TEST

START_TEST(test_migrate_ddl_lock_timeout_bounds_the_wait) {
    small_db d = small_db_open("mig_lockto");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_to(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);

    PGconn *reader = dt_connect(d.url); /* production traffic holding a lock */
    dt_exec(reader, "BEGIN");
    dt_exec(reader, "SELECT * FROM things");
    opts.lock_timeout_ms = 200;
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_str_eq(err.sqlstate, "55P03");
    ck_assert(err.retryable);
    ck_assert_ptr_nonnull(strstr(err.message, "0002_things_note.up.sql:1:"));
    ck_assert_int_eq(applied_count(d.url), 1); /* gave up instead of queueing */
    dt_exec(reader, "COMMIT");
    PQfinish(reader);

    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    small_db_close(&d);
}
END_TEST

START_TEST(test_migrate_not_cut_by_statement_timeout) {
    char *url = dt_create_db("mig_stmtto");
    char *dir = dt_temp_dir("migrate");
    dt_write_file(dir, "0001_slow.up.sql",
               "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.5);\n");
    dt_write_file(dir, "0001_slow.down.sql", "DROP TABLE slow;\n");
    /* An application pool with a short statement timeout. */
    ds_config *cfg = dt_config(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "statement_timeout_ms", 100, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool = NULL;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    ds_config_free(cfg);
    st = ds_sql_exec_pool(pool, "SELECT pg_sleep(0.5)", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err); /* applies to queries */
    ds_migrate_options opts = dir_options(dir);
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err); /* but not to migrations */
    ck_assert(table_exists(url, "slow"));
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------------- */

/* Starts `n` ds-migrate processes at once with `args`; each one's stdout
 * goes to a file. Returns how many exited 0 and how many "applied" lines
 * they printed together. */
static void run_cli_concurrently(int n, const char *url, const char *to,
                                 int *ok, int *applied_lines,
                                 char *last_stderr, size_t cap) {
    const char *bin = dt_ds_migrate_path();
    char *dir = dt_temp_dir("migrate");
    pid_t pids[16];
    for (int i = 0; i < n; i++) {
        char out[PATH_MAX], errp[PATH_MAX];
        snprintf(out, sizeof out, "%s/out%d", dir, i);
        snprintf(errp, sizeof errp, "%s/err%d", dir, i);
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            int fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            dup2(fd, 1);
            dup2(fe, 2);
            if (to)
                execl(bin, bin, "--database-url", url, "to", to, (char *)NULL);
            else
                execl(bin, bin, "--database-url", url, "up", (char *)NULL);
            _exit(127);
        }
    }
    *ok = 0;
    *applied_lines = 0;
    for (int i = 0; i < n; i++) {
        int status = 0;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            (*ok)++;
        char path[PATH_MAX], line[1024];
        snprintf(path, sizeof path, "%s/out%d", dir, i);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            *applied_lines += strncmp(line, "applied ", 8) == 0;
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "%s/err%d", dir, i);
        f = fopen(path, "r");
        if (f) {
            size_t got = fread(last_stderr, 1, cap - 1, f);
            if (got)
                last_stderr[got] = '\0';
            fclose(f);
        }
    }
    dt_rm_dir(dir);
}

START_TEST(test_migrate_four_processes_apply_each_once) {
    char *url = dt_create_db("mig_conc");
    int ok, applied;
    char errtext[1024] = "";
    run_cli_concurrently(4, url, NULL, &ok, &applied, errtext, sizeof errtext);
    ck_assert_msg(ok == 4, "%d of 4 exited 0; stderr: %s", ok, errtext);
    ck_assert_int_eq(applied, DS_SCHEMA_VERSION);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* The migrations that run in a transaction go through the pooler; the
 * first `-- ds:no-transaction` one (0003, which builds its indexes
 * CONCURRENTLY) needs the direct URL, and says so. */
START_TEST(test_migrate_four_processes_through_pgbouncer) {
    char *direct = dt_create_db("mig_bouncer");
    char *pooled = dt_url_same_db(dt_env("DATABASE_POOLER_URL"), direct);
    int ok, applied;
    char errtext[1024] = "";
    run_cli_concurrently(4, pooled, "2", &ok, &applied, errtext,
                         sizeof errtext);
    ck_assert_msg(ok == 4, "%d of 4 exited 0; stderr: %s", ok, errtext);
    ck_assert_int_eq(applied, 2);
    ck_assert_int_eq(applied_count(direct), 2);
    /* No lock is left on any pooled server connection. */
    ck_assert_int_eq(count_rows(direct, "SELECT count(*) FROM pg_locks WHERE "
                                        "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    /* A second deploy through the pooler is not blocked by the first; it
     * stops at the no-transaction file with the way out. */
    char args[2048];
    snprintf(args, sizeof args, "--database-url '%s' --wait 2000 up", pooled);
    char *out = NULL;
    ck_assert_int_eq(run_cli(args, true, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "0003_memory_embeddings.up.sql"));
    ck_assert_ptr_nonnull(strstr(out, "direct database URL"));
    free(out);
    ck_assert_int_eq(applied_count(direct), 2);
    snprintf(args, sizeof args, "--database-url '%s' up", direct);
    ck_assert_int_eq(run_cli(args, true, &out), 0);
    free(out);
    ck_assert_int_eq(applied_count(direct), DS_SCHEMA_VERSION);
    snprintf(args, sizeof args, "--database-url '%s' --wait 2000 up", pooled);
    ck_assert_int_eq(run_cli(args, true, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "0 migration(s) applied"));
    free(out);
    free(pooled);
    dt_drop_db(direct);
    free(direct);
}
END_TEST

START_TEST(test_migrate_no_transaction_refused_behind_pgbouncer) {
    char *direct = dt_create_db("mig_bnotx");
    char *pooled = dt_url_same_db(dt_env("DATABASE_POOLER_URL"), direct);
    char *dir = small_dir();
    dt_write_file(dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY things_label_idx ON things (label);\n");
    dt_write_file(dir, "0003_idx.down.sql",
               "-- ds:no-transaction\nDROP INDEX CONCURRENTLY things_label_idx;\n");
    ds_error err = {0};
    /* The pool is in prepared mode here: the runner notices the pooler by
     * itself (the backend PID does not match). */
    ds_pool *pool = dt_pool(pooled, 1, 2);
    ds_migrate_options opts = dir_options(dir);
    int n = 0;
    ds_status st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_int_eq(n, 2); /* the transactional ones went through */
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "direct"));
    ck_assert_int_eq(applied_count(direct), 2);
    ds_pool_close(pool);

    /* The same through ds-migrate: exit 1 and the message. */
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' up", pooled,
             dir);
    ck_assert_int_eq(run_cli(args, true, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "direct database URL"));
    free(out);
    /* And directly it runs. */
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' up", direct,
             dir);
    ck_assert_int_eq(run_cli(args, false, NULL), 0);
    ck_assert_int_eq(applied_count(direct), 3);
    ck_assert_int_eq(count_rows(direct, "SELECT count(*) FROM pg_locks WHERE "
                                        "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    dt_rm_dir(dir);
    free(pooled);
    dt_drop_db(direct);
    free(direct);
}
END_TEST

typedef struct thread_up {
    const char *url;
    int applied;
    ds_status st;
    ds_error err;
} thread_up;

static void *thread_up_main(void *p) {
    thread_up *t = p;
    ds_pool *pool = NULL;
    t->st = ds_pool_open_url(t->url, &pool, &t->err);
    if (t->st == DS_OK)
        t->st = ds_migrate_up(pool, NULL, &t->applied, &t->err);
    ds_pool_close(pool);
    return NULL;
}

START_TEST(test_migrate_threads_share_the_work) {
    char *url = dt_create_db("mig_threads");
    thread_up t[4];
    pthread_t th[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].url = url;
        pthread_create(&th[i], NULL, thread_up_main, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_ds_ok(t[i].st, t[i].err);
        total += t[i].applied;
    }
    ck_assert_int_eq(total, DS_SCHEMA_VERSION);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- dry run ------------------------------------------------------------------- */

START_TEST(test_migrate_dry_run_reports_and_changes_nothing) {
    char *url = dt_create_db("mig_dry");
    ds_pool *pool = dt_pool(url, 1, 2);
    events ev = {0};
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dry_run = true;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    ds_error err = {0};
    int n = 0;
    ds_status st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, DS_SCHEMA_VERSION);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_SQL), n);
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "CREATE TABLE IF NOT EXISTS ds_schema_migrations"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "CREATE TABLE users"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "BEGIN;"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "INSERT INTO ds_schema_migrations"));
    ck_assert_ptr_null(strstr(ev.sql[1], "CREATE TABLE IF NOT EXISTS"));
    events_free(&ev);
    ck_assert(!table_exists(url, "users"));
    ck_assert(!table_exists(url, "ds_schema_migrations"));

    /* The dry script is what psql would need to do the same. */
    st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    memset(&ev, 0, sizeof ev);
    st = ds_migrate_down(pool, &opts, 1, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "DELETE FROM ds_schema_migrations"));
    events_free(&ev);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- errors and out of memory ---------------------------------------------------- */

START_TEST(test_migrate_errors_null_and_out_of_range) {
    ds_error err = {0};
    int n = 7;
    ds_migration_list *list = (ds_migration_list *)&err;
    ck_assert_int_eq(ds_migrate_up(NULL, NULL, &n, &err), DS_ERR_INVALID);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(ds_migrate_down(NULL, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_to(NULL, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_status(NULL, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(list);
    ck_assert_int_eq(ds_migrate_verify(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(NULL, NULL, 3, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_check_schema(NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_up(NULL, NULL, NULL, NULL), DS_ERR_INVALID);

    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 0, 1);
    ck_assert_int_eq(ds_migrate_down(pool, NULL, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_down(pool, NULL, -3, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_to(pool, NULL, -1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_status(pool, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(pool, NULL, -1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(pool, NULL, 121, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds__schema_check(pool, NULL, 0, &err), DS_ERR_INVALID);
    ds_migrate_options opts = dir_options("/nonexistent/dt_migrations");
    ck_assert_int_eq(ds_migrate_up(pool, &opts, NULL, &err), DS_ERR_MIGRATION);
    ck_assert_int_eq(ds_migrate_status(pool, &opts, &list, &err),
                     DS_ERR_MIGRATION);
    ds_pool_close(pool);
    ds_migrate_list_free(NULL);
    ck_assert_str_eq(ds_migrate_state_str((ds_migration_state)42), "unknown");
    ck_assert_str_eq(ds_migrate_state_str(DS_MIGRATION_OUT_OF_ORDER),
                     "out-of-order");
}
END_TEST

START_TEST(test_migrate_out_of_memory_is_an_error) {
    char *url = dt_migrated_db("mig_oom");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    bool succeeded = false;
    for (long n = 1; n < 400 && !succeeded; n++) {
        ds_migration_list *list = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_migrate_status(pool, NULL, &list, &err);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM,
                      "allocation %ld: %s: %s", n, ds_status_str(st),
                      err.message);
        if (st == DS_OK) {
            ck_assert_uint_eq(list->count, (size_t)DS_SCHEMA_VERSION);
            succeeded = true;
        } else {
            ck_assert_ptr_null(list);
        }
        ds_migrate_list_free(list);
    }
    ck_assert(succeeded);
    succeeded = false;
    for (long n = 1; n < 400 && !succeeded; n++) {
        ds__test_fail_alloc_after(n);
        ds_status st = ds_migrate_check_schema(pool, &err);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM,
                      "allocation %ld: %s: %s", n, ds_status_str(st),
                      err.message);
        succeeded = st == DS_OK;
    }
    ck_assert(succeeded);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_migrate_suite(void) {
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("run");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_up_applies_everything_once);
    tcase_add_test(tc, test_migrate_down_and_to_move_both_ways);
    tcase_add_test(tc, test_migrate_dry_run_reports_and_changes_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("reversible");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_migrate_every_version_reversible);
    suite_add_tcase(s, tc);
    tc = tcase_create("history");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_refuses_edited_missing_out_of_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("failure");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_failure_rolls_back_and_names_line);
    tcase_add_test(tc, test_migrate_no_transaction_runs_outside_a_transaction);
    tcase_add_test(tc, test_migrate_connection_lost_at_commit_is_reported_unknown);
    suite_add_tcase(s, tc);
    tc = tcase_create("locks");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_waits_for_lock_then_times_out_or_proceeds);
    tcase_add_test(tc, test_migrate_ddl_lock_timeout_bounds_the_wait);
    tcase_add_test(tc, test_migrate_not_cut_by_statement_timeout);
    tcase_add_test(tc, test_migrate_four_processes_apply_each_once);
    tcase_add_test(tc, test_migrate_threads_share_the_work);
    suite_add_tcase(s, tc);
    tc = tcase_create("pgbouncer");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_four_processes_through_pgbouncer);
    tcase_add_test(tc, test_migrate_no_transaction_refused_behind_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_errors_null_and_out_of_range);
    tcase_add_test(tc, test_migrate_out_of_memory_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}
