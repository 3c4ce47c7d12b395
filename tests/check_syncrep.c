/* Synchronous replication: a commit whose wait for the synchronous standby
 * is cancelled (here by pg_cancel_backend() while the standby is stopped;
 * a client's cancel request is the same) has committed on the primary
 * only. (statement_timeout does not fire there: PostgreSQL disarms it
 * before it commits.) PostgreSQL reports success with a
 * WARNING; the library must report DS_ERR_NOT_DURABLE instead, so that an
 * acknowledged write is never one that a failover can lose.
 *
 * Runs a throwaway primary and streaming standby of its own (unix sockets
 * in a private directory, synchronous_standby_names naming the standby), so
 * that stopping the standby never stalls the shared test servers. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dt_netns.h"

typedef struct {
    char dir[128];
    char as_user[64]; /* "runuser -u dsservices --" when root */
    char url[256];
    bool primary, standby;
} syncrep_env;

static const char *unavailable(void) {
    if (geteuid() == 0 && dt_sh("id -u dsservices >/dev/null 2>&1") != 0)
        return "needs the services user dsservices (scripts/services creates it)";
    return NULL;
}

static int pg_ctl(syncrep_env *e, const char *node, const char *action) {
    const char *bin = dt_env("DS_PG_BINDIR");
    int port = strcmp(node, "primary") == 0 ? 5432 : 5433;
    if (strcmp(action, "start") == 0)
        return dt_sh("%s %s/pg_ctl -D %s/%s -w -s -t 120 -l %s/%s.log "
                     "-o \"-c listen_addresses='' -c port=%d -k %s\" start",
                     e->as_user, bin, e->dir, node, e->dir, node, port, e->dir);
    return dt_sh("%s %s/pg_ctl -D %s/%s -w -s -m %s stop >/dev/null 2>&1",
                 e->as_user, bin, e->dir, node, action);
}

static void env_down(syncrep_env *e) {
    if (e->standby)
        pg_ctl(e, "standby", "immediate");
    if (e->primary)
        pg_ctl(e, "primary", "immediate");
    dt_sh("rm -rf '%s'", e->dir);
}

/* The standby streams synchronously (pg_stat_replication says "sync"). */
static bool standby_is_sync(syncrep_env *e) {
    for (int i = 0; i < 600; i++) {
        if (dt_sh("%s/psql -XAtq '%s' -c \"SELECT 1 FROM pg_stat_replication "
                  "WHERE application_name = 'dsstandby' AND sync_state = 'sync' "
                  "AND state = 'streaming'\" 2>/dev/null | grep -q 1",
                  dt_env("DS_PG_BINDIR"), e->url) == 0)
            return true;
        usleep(100000);
    }
    return false;
}

static void env_up(syncrep_env *e) {
    memset(e, 0, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/var/tmp/dssr-%u", (unsigned)getpid());
    if (geteuid() == 0)
        snprintf(e->as_user, sizeof e->as_user, "runuser -u dsservices --");
    snprintf(e->url, sizeof e->url,
             "postgresql://ds@/postgres?host=%s&port=5432", e->dir);
    const char *bin = dt_env("DS_PG_BINDIR");
    int rc = dt_sh("set -e; rm -rf %s; mkdir -p %s; %s chown dsservices: %s; "
                   "%s %s/initdb -D %s/primary -U ds --auth=trust --no-sync "
                   "-E UTF8 --locale=C >/dev/null; "
                   "printf '%%s\\n' \"synchronous_standby_names = 'dsstandby'\" "
                   "'synchronous_commit = on' 'fsync = off' "
                   "'shared_buffers = 16MB' 'max_connections = 20' "
                   ">> %s/primary/postgresql.conf",
                   e->dir, e->dir, geteuid() == 0 ? "" : ":", e->dir,
                   e->as_user, bin, e->dir, e->dir);
    if (rc == 0)
        rc = pg_ctl(e, "primary", "start");
    e->primary = rc == 0;
    if (rc == 0)
        rc = dt_sh("set -e; %s %s/pg_basebackup -h %s -p 5432 -U ds -D %s/standby "
                   "-X stream -c fast --no-sync; "
                   "printf '%%s\\n' \"primary_conninfo = 'host=%s port=5432 "
                   "user=ds application_name=dsstandby'\" "
                   "| %s tee -a %s/standby/postgresql.auto.conf >/dev/null; "
                   "%s touch %s/standby/standby.signal",
                   e->as_user, bin, e->dir, e->dir, e->dir, e->as_user, e->dir,
                   e->as_user, e->dir);
    if (rc == 0)
        rc = pg_ctl(e, "standby", "start");
    e->standby = rc == 0;
    if (rc != 0 || !standby_is_sync(e)) {
        env_down(e);
        ck_abort_msg("could not start a synchronous primary and standby in %s",
                     e->dir);
    }
}

/* Cancels every backend waiting for the synchronous standby, once one
 * waits; what an operator's pg_cancel_backend() or a client's cancel
 * request does. Plain libpq: this is the server's side of the story. */
typedef struct {
    const char *url;
    atomic_int cancelled;
} canceller;

static void *cancel_sync_waits(void *p) {
    canceller *c = p;
    PGconn *pg = PQconnectdb(c->url);
    for (int i = 0; i < 600 && PQstatus(pg) == CONNECTION_OK; i++) {
        PGresult *r = PQexec(pg, "SELECT count(pg_cancel_backend(pid)) "
                                 "FROM pg_stat_activity "
                                 "WHERE wait_event = 'SyncRep'");
        int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : 0;
        PQclear(r);
        if (n > 0) {
            atomic_fetch_add(&c->cancelled, n);
            break;
        }
        usleep(50000);
    }
    PQfinish(pg);
    return NULL;
}

/* Runs `call` while a canceller interrupts its wait for the standby;
 * returns how many waits were cancelled. */
#define WITH_CANCEL(url, n_cancelled, call)                                      \
    do {                                                                       \
        canceller c_ = {(url), 0};                                             \
        pthread_t t_;                                                          \
        pthread_create(&t_, NULL, cancel_sync_waits, &c_);                     \
        call;                                                                  \
        pthread_join(t_, NULL);                                                \
        (n_cancelled) = atomic_load(&c_.cancelled);                              \
    } while (0)

static ds_status insert_in_tx(ds_conn *conn, void *ud, ds_error *err) {
    (void)ud;
    return ds_sql_exec(conn, "INSERT INTO dt_sync VALUES (3)", NULL, 0, NULL, err);
}

START_TEST(test_syncrep_cancelled_wait_is_not_durable) {
    const char *why = unavailable();
    if (why) {
        dt_skip(__func__, why);
        return;
    }
    syncrep_env e;
    env_up(&e);
    ds_error err = {0};
    ds_pool *pool = NULL;
    ds_config *cfg = dt_config(e.url, 1, 2);
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    if (st != DS_OK) {
        env_down(&e);
        ck_abort_msg("open: %s", err.message);
    }
    /* With the standby streaming, commits are synchronous and succeed. */
    ds_error e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0}, e5 = {0}, e6 = {0};
    ds_status created = ds_sql_exec_pool(pool, "CREATE TABLE dt_sync (k int PRIMARY KEY)",
                                     NULL, 0, NULL, &e1);
    ds_status synced = ds_sql_exec_pool(pool, "INSERT INTO dt_sync VALUES (1)", NULL, 0,
                                    NULL, &e2);

    /* The standby goes away: a commit now waits until it is cancelled,
     * and has committed on the primary only. */
    ck_assert_int_eq(pg_ctl(&e, "standby", "fast"), 0);
    e.standby = false;
    ds_sql_result *res = NULL;
    ds_status autocommit, in_tx;
    int cancelled_autocommit, cancelled_tx;
    WITH_CANCEL(e.url, cancelled_autocommit,
                autocommit = ds_sql_exec_pool(pool, "INSERT INTO dt_sync VALUES (2)",
                                          NULL, 0, &res, &e3));
    ds_sql_result *res_after = res;
    WITH_CANCEL(e.url, cancelled_tx,
                in_tx = ds_tx_run(pool, NULL, insert_in_tx, NULL, &e4));
    /* The connection stays usable, and reads are unaffected. */
    ds_status read = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, NULL, &e5);
    long long on_primary = dt_sql_int(e.url, "SELECT count(*) FROM dt_sync");

    /* The standby back: commits are synchronous and acknowledged again. */
    int restarted = pg_ctl(&e, "standby", "start");
    e.standby = restarted == 0;
    bool sync_again = restarted == 0 && standby_is_sync(&e);
    ds_status healed = ds_sql_exec_pool(pool, "INSERT INTO dt_sync VALUES (4)", NULL, 0,
                                    NULL, &e6);
    ds_pool_close(pool);
    env_down(&e);

    ck_assert_ds_ok(created, e1);
    ck_assert_ds_ok(synced, e2);
    ck_assert_int_eq(cancelled_autocommit, 1);
    ck_assert_int_eq(cancelled_tx, 1);
    ck_assert_ds_status(autocommit, DS_ERR_NOT_DURABLE, e3);
    ck_assert_ptr_null(res_after);
    ck_assert_str_eq(e3.sqlstate, "01000");
    ck_assert(ds_error_is_retryable(&e3));
    ck_assert_msg(strstr(e3.message, "synchronous standby"), "%s", e3.message);
    ck_assert_ds_status(in_tx, DS_ERR_NOT_DURABLE, e4);
    ck_assert_msg(strncmp(e4.message, "commit:", 7) == 0, "%s", e4.message);
    ck_assert_ds_ok(read, e5);
    /* committed locally, as the server said: rows 1, 2 and 3 */
    ck_assert_int_eq(on_primary, 3);
    ck_assert_msg(sync_again, "the standby did not stream synchronously again");
    ck_assert_ds_ok(healed, e6);
}
END_TEST

static void write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

/* The migration runner's COMMIT (and each statement of a no-transaction
 * file) whose wait for the standby is cancelled: neither success nor
 * failure but DS_ERR_NOT_DURABLE naming the file; the database is at the
 * new version on the primary, and with the standby back `up` goes on. */
START_TEST(test_syncrep_migration_commit_is_not_durable) {
    const char *why = unavailable();
    if (why) {
        dt_skip(__func__, why);
        return;
    }
    char dir[] = "/var/tmp/dssr-mig-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    write_file(dir, "0001_t.up.sql", "CREATE TABLE t (id int);\n");
    write_file(dir, "0001_t.down.sql", "DROP TABLE t;\n");
    write_file(dir, "0002_u.up.sql",
               "-- ds:no-transaction\nCREATE TABLE IF NOT EXISTS u (id int);\n");
    write_file(dir, "0002_u.down.sql", "DROP TABLE u;\n");
    syncrep_env e;
    env_up(&e);
    ds_error err = {0};
    ds_pool *pool = NULL;
    ds_config *cfg = dt_config(e.url, 1, 2);
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    if (st != DS_OK) {
        env_down(&e);
        ck_abort_msg("open: %s", err.message);
    }
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    ck_assert_int_eq(pg_ctl(&e, "standby", "fast"), 0);
    e.standby = false;
    ds_error e1 = {0}, e2 = {0}, e3 = {0};
    ds_status in_tx, no_tx;
    int cancelled_tx, cancelled_no_tx;
    WITH_CANCEL(e.url, cancelled_tx,
                in_tx = ds_migrate_to(pool, &opts, 1, NULL, &e1));
    long long version_after_tx = dt_sql_int(
        e.url, "SELECT coalesce(max(version), 0) FROM ds_schema_migrations");
    WITH_CANCEL(e.url, cancelled_no_tx,
                no_tx = ds_migrate_up(pool, &opts, NULL, &e2));
    long long version_after_no_tx = dt_sql_int(
        e.url, "SELECT coalesce(max(version), 0) FROM ds_schema_migrations");
    int restarted = pg_ctl(&e, "standby", "start");
    e.standby = restarted == 0;
    bool sync_again = restarted == 0 && standby_is_sync(&e);
    int applied = -1;
    ds_status healed = ds_migrate_up(pool, &opts, &applied, &e3);
    long long version_healed = dt_sql_int(
        e.url, "SELECT coalesce(max(version), 0) FROM ds_schema_migrations");
    ds_pool_close(pool);
    env_down(&e);
    dt_sh("rm -rf '%s'", dir);

    ck_assert_int_eq(cancelled_tx, 1);
    ck_assert_ds_status(in_tx, DS_ERR_NOT_DURABLE, e1);
    ck_assert_msg(strstr(e1.message, "0001_t.up.sql: applied and recorded on "
                                     "the primary"), "%s", e1.message);
    ck_assert_msg(strstr(e1.message, "synchronous standby"), "%s", e1.message);
    ck_assert_str_eq(e1.sqlstate, "01000");
    ck_assert_int_eq(version_after_tx, 1);
    ck_assert_int_eq(cancelled_no_tx, 1);
    ck_assert_ds_status(no_tx, DS_ERR_NOT_DURABLE, e2);
    ck_assert_msg(strstr(e2.message, "0002_u.up.sql:2: committed on the primary"),
                  "%s", e2.message);
    ck_assert_int_eq(version_after_no_tx, 1); /* not recorded */
    ck_assert_msg(sync_again, "the standby did not stream synchronously again");
    ck_assert_ds_ok(healed, e3);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(version_healed, 2);
}
END_TEST

Suite *ds_test_syncrep_suite(void) {
    Suite *s = suite_create("syncrep");
    TCase *tc = tcase_create("commit");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_syncrep_cancelled_wait_is_not_durable);
    tcase_add_test(tc, test_syncrep_migration_commit_is_not_durable);
    suite_add_tcase(s, tc);
    return s;
}
