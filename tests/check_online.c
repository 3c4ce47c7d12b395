/* Schema changes and maintenance on populated tables while readers and
 * writers run: probes measure their worst wait; the runner's online tools
 * (ds:when, INVALID index repair, lock_timeout retries, accepted
 * checksums of rewritten files). Real PostgreSQL throughout. */
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate/migrate_internal.h"
#include "progress_util.h"
#include "dt_files.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------- */

/* Closes the pool and drops the test's database (the url is freed). */
static void close_db(ds_pool *pool, char *url) {
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}

/* ---- the runner's online tools --------------------------------------------- */

/* A "-- ds:when" condition skips or runs its statement; an INVALID index a
 * failed CONCURRENTLY build left is dropped and built again. */
START_TEST(test_online_when_and_invalid_index_repair) {
    char *url = dt_create_db("onl_when");
    char *dir = dt_temp_dir("online");
    dt_write_file(dir, "0001_things.up.sql",
                  "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n"
                  "INSERT INTO things SELECT g, 'same' FROM generate_series(1, 50) g;\n");
    dt_write_file(dir, "0001_things.down.sql", "DROP TABLE things;\n");
    dt_write_file(dir, "0002_idx.up.sql",
                  "-- ds:no-transaction\n"
                  "-- ds:when false\n"
                  "SELECT 1 / 0;\n"
                  "-- a comment between the condition and the statement\n"
                  "-- ds:when (SELECT count(*) = 50 FROM things)\n"
                  "-- (the condition above holds)\n"
                  "CREATE TABLE when_ran (x int);\n"
                  "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_label_idx\n"
                  "    ON things (label);\n");
    dt_write_file(dir, "0002_idx.down.sql",
                  "-- ds:no-transaction\n"
                  "DROP TABLE when_ran;\n"
                  "DROP INDEX CONCURRENTLY things_label_idx;\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    /* a failed unique build leaves things_label_idx INVALID */
    PGconn *c = dt_connect(url);
    PGresult *r = PQexec(c, "CREATE UNIQUE INDEX CONCURRENTLY things_label_idx "
                            "ON things (label)");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index WHERE "
                                     "indexrelid = 'things_label_idx'::regclass "
                                     "AND NOT indisvalid"),
                     1);
    int n = 0;
    st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    /* skipped 1/0, ran the table, and the index is valid and not unique */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'when_ran'"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index WHERE "
                                     "indexrelid = 'things_label_idx'::regclass "
                                     "AND indisvalid AND NOT indisunique"),
                     1);

    /* a condition that fails is the statement's error, with the line */
    dt_write_file(dir, "0003_bad.up.sql",
                  "-- ds:no-transaction\n-- ds:when (SELECT nope FROM things)\n"
                  "SELECT 1;\n");
    dt_write_file(dir, "0003_bad.down.sql", "SELECT 1;\n");
    st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "ds:when"));
    PQfinish(c);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

static void collect_sql(void *ud, const ds_migrate_event *p) {
    if (p->kind != DS_MIGRATE_EVENT_SQL || !p->sql)
        return;
    char **all = ud;
    size_t have = *all ? strlen(*all) : 0;
    *all = realloc(*all, have + strlen(p->sql) + 1);
    strcpy(*all + have, p->sql);
}

/* The dry-run script stays runnable by psql: a ds:when statement becomes
 * \gset / \if ... \endif. */
START_TEST(test_online_dry_run_spells_when_for_psql) {
    char *url = dt_create_db("onl_dry");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    char *script = NULL;
    opts.dry_run = true;
    opts.on_event = collect_sql;
    opts.on_event_ud = &script;
    ds_error err = {0};
    ds_status st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_nonnull(script);
    ck_assert_ptr_nonnull(strstr(script, "::boolean AS ds_when \\gset\n\\if :ds_when\n"
                                         "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
                                         "memory_facts_embedding_sketch_idx"));
    ck_assert_ptr_nonnull(strstr(script, "vector_cosine_ops);\n\\endif"));
    /* nothing ran */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'memory_facts'"),
                     0);
    free(script);
    close_db(pool, url);
}
END_TEST

/* A session that runs `sql` (which takes a lock and leaves its transaction
 * open), holds it for `hold_ms`, then commits. */
typedef struct blocker {
    const char *url;
    const char *sql;
    int hold_ms;
    atomic_bool holding; /* `sql` has run: the lock is held */
    atomic_bool done;
} blocker;

static void *blocker_main(void *p) {
    blocker *b = p;
    PGconn *c = PQconnectdb(b->url);
    PGresult *r = PQexec(c, b->sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
              PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (ok) {
        atomic_store(&b->holding, true);
        /* holding the lock for a while is the condition under test */
        usleep((useconds_t)b->hold_ms * 1000);
    }
    r = PQexec(c, "COMMIT");
    PQclear(r);
    PQfinish(c);
    atomic_store(&b->done, true);
    return NULL;
}

/* Starts the blocker and returns once it holds its lock (at most 30 s). */
static void blocker_start(blocker *b, pthread_t *t) {
    ck_assert_int_eq(pthread_create(t, NULL, blocker_main, b), 0);
    long long deadline = dt_now_ms() + 30000;
    while (!atomic_load(&b->holding) && !atomic_load(&b->done) &&
           dt_now_ms() < deadline)
        usleep(1000);
    ck_assert_msg(atomic_load(&b->holding), "the blocker never held its lock: %s",
                  b->sql);
}

/* A no-transaction statement that hits lock_timeout is tried again after a
 * pause; a long query ahead of it does not fail the deploy, and traffic
 * queues behind the ALTER for one lock_timeout at most each time. */
START_TEST(test_online_lock_timeout_is_retried) {
    char *url = dt_create_db("onl_retry");
    char *dir = dt_temp_dir("online");
    dt_write_file(dir, "0001_things.up.sql",
                  "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");
    dt_write_file(dir, "0001_things.down.sql", "DROP TABLE things;\n");
    dt_write_file(dir, "0002_extra.up.sql",
                  "-- ds:no-transaction\n"
                  "ALTER TABLE things ADD COLUMN IF NOT EXISTS extra int;\n");
    dt_write_file(dir, "0002_extra.down.sql",
                  "ALTER TABLE things DROP COLUMN extra;\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    opts.lock_timeout_ms = 100;
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    blocker b = {.url = url, .sql = "BEGIN; LOCK TABLE things IN ACCESS SHARE MODE",
                 .hold_ms = 700};
    pthread_t t;
    /* the blocker holds its lock before the migration asks */
    blocker_start(&b, &t);
    int n = 0;
    st = ds_migrate_up(pool, &opts, &n, &err);
    pthread_join(t, NULL);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 'things'::regclass AND "
                                     "attname = 'extra'"),
                     1);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* The other side of a deadlock: holds `b`, and once the migration waits
 * for `b` (having taken `a`), asks for `a`. The migration, which waited
 * first, finds the cycle first and is the one PostgreSQL cancels. */
typedef struct deadlocker {
    const char *url;
    atomic_bool holding;
    atomic_bool asked;
} deadlocker;

static void *deadlocker_main(void *p) {
    deadlocker *d = p;
    PGconn *c = dt_connect(d->url);
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "LOCK TABLE b IN ACCESS SHARE MODE"));
    atomic_store(&d->holding, true);
    long long deadline = dt_now_ms() + 30000;
    while (dt_now_ms() < deadline) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM pg_locks WHERE "
                                "relation = 'b'::regclass AND NOT granted");
        bool waiting = PQresultStatus(r) == PGRES_TUPLES_OK &&
                       atoll(PQgetvalue(r, 0, 0)) > 0;
        PQclear(r);
        if (waiting)
            break;
        usleep(1000);
    }
    atomic_store(&d->asked, true);
    PQclear(PQexec(c, "LOCK TABLE a IN ACCESS SHARE MODE"));
    usleep(200 * 1000);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    return NULL;
}

/* A no-transaction statement chosen as a deadlock's victim changed nothing,
 * like one that hit lock_timeout, and is tried again. */
START_TEST(test_online_deadlock_victim_is_retried) {
    char *url = dt_create_db("onl_deadlock");
    char *dir = dt_temp_dir("online");
    dt_write_file(dir, "0001_ab.up.sql",
                  "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n");
    dt_write_file(dir, "0001_ab.down.sql", "DROP TABLE a;\nDROP TABLE b;\n");
    dt_write_file(dir, "0002_both.up.sql",
                  "-- ds:no-transaction\n"
                  "DO $both$\nBEGIN\n"
                  "    LOCK TABLE a IN ACCESS EXCLUSIVE MODE;\n"
                  "    LOCK TABLE b IN ACCESS EXCLUSIVE MODE;\n"
                  "    ALTER TABLE a ADD COLUMN IF NOT EXISTS extra int;\n"
                  "END\n$both$;\n");
    dt_write_file(dir, "0002_both.down.sql",
                  "ALTER TABLE a DROP COLUMN extra;\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    /* longer than deadlock_timeout (1 s by default), so the deadlock, not
     * the lock wait, ends the first attempt */
    opts.lock_timeout_ms = 20000;
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    deadlocker d = {.url = url};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, deadlocker_main, &d), 0);
    long long deadline = dt_now_ms() + 30000;
    while (!atomic_load(&d.holding) && dt_now_ms() < deadline)
        usleep(1000);
    ck_assert(atomic_load(&d.holding));
    int n = 0;
    st = ds_migrate_up(pool, &opts, &n, &err);
    pthread_join(t, NULL);
    ck_assert(atomic_load(&d.asked));
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 'a'::regclass AND "
                                     "attname = 'extra'"),
                     1);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* 0002 and 0003 were rewritten to run online. A database that applied
 * their earlier text keeps working; any other checksum is still refused. */
START_TEST(test_online_rewritten_files_keep_applied_databases) {
    char *url = dt_migrated_db("onl_sum");
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'94412cc54b322e17b9c45062e38117539c274a7630fa1ea87ef9ac1e36bc7ab4' "
                "WHERE version = 3");
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'de4020aadf46afdd51edf143771edb080ec839ce7f0b8843e613964027f0dd08' "
                "WHERE version = 2");
    /* 0004 in one transaction, with its lock_timeout line */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'e4e56993c01ac52478078ed401f73a4675079024347f3ea6379979f2916269b8' "
                "WHERE version = 4");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    /* and the first text of 0004, before it set lock_timeout */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'3580b0c7ebdea254145b12399c0af38ce1925a6633e62c984f7509e8cca8e4b1' "
                "WHERE version = 4");
    st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_migration_list *l = NULL;
    st = ds_migrate_status(pool, NULL, &l, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(l->consistent);
    ck_assert_uint_eq(l->pending, 0);
    ds_migrate_list_free(l);
    int n = -1;
    st = ds_migrate_up(pool, NULL, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 0);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    /* the old 0003 checksum is no pass for version 2 */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'94412cc54b322e17b9c45062e38117539c274a7630fa1ea87ef9ac1e36bc7ab4' "
                "WHERE version = 2");
    st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "edited after it was applied"));
    /* nor is an earlier 0004 for version 5 */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'de4020aadf46afdd51edf143771edb080ec839ce7f0b8843e613964027f0dd08' "
                "WHERE version = 2");
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = "
                "'e4e56993c01ac52478078ed401f73a4675079024347f3ea6379979f2916269b8' "
                "WHERE version = 5");
    st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "edited after it was applied"));
    close_db(pool, url);
}
END_TEST

/* ---- probes ---------------------------------------------------------------- */

typedef struct probe {
    const char *url;
    const char *name;
    const char *sql; /* $1: a random number from 1 to `range` */
    int range;
    atomic_bool *stop;
    atomic_llong ops;
    atomic_bool done; /* the thread ended (error or stop) */
    volatile int pid; /* its backend, for the lock watcher (0: not yet) */
    long long worst_us;      /* the longest statement, wall clock */
    long long lock_wait_us;  /* the longest wait for a lock (the watcher's) */
    char error[256];
} probe;

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *probe_main(void *p) {
    probe *pr = p;
    PGconn *c = PQconnectdb(pr->url);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(pr->error, sizeof pr->error, "%s", PQerrorMessage(c));
        PQfinish(c);
        atomic_store(&pr->done, true);
        return NULL;
    }
    PGresult *r = PQexec(c, "SET statement_timeout = '60s'");
    PQclear(r);
    pr->pid = PQbackendPID(c);
    unsigned seed = (unsigned)(uintptr_t)pr;
    while (!atomic_load(pr->stop)) {
        char arg[24];
        snprintf(arg, sizeof arg, "%d", 1 + (int)(rand_r(&seed) % (unsigned)pr->range));
        const char *v[1] = {arg};
        long long t0 = now_us();
        r = PQexecParams(c, pr->sql, 1, NULL, v, NULL, NULL, 0);
        long long dt = now_us() - t0;
        ExecStatusType es = PQresultStatus(r);
        if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK && !pr->error[0])
            snprintf(pr->error, sizeof pr->error, "%s", PQerrorMessage(c));
        PQclear(r);
        pr->ops++;
        if (dt > pr->worst_us)
            pr->worst_us = dt;
        usleep(10000); /* the probe's pace, not a wait for anything */
    }
    PQfinish(c);
    atomic_store(&pr->done, true);
    return NULL;
}

enum { NPROBES = 10, MAX_PROBES = 12 };

typedef struct probes {
    probe p[MAX_PROBES];
    pthread_t t[MAX_PROBES];
    int n;
    atomic_bool stop;
    pthread_t watcher;
    const char *url;
    char watcher_error[256];
} probes;

/*
 * What the bound is about is how long a probe waits for a lock, not how
 * long its statement takes: on a loaded 2-core machine a statement can
 * take over a second for want of CPU alone. So a watcher reads pg_locks
 * every 10 ms: for each probe backend waiting for a lock, now minus the
 * moment its wait began (pg_locks.waitstart, PostgreSQL 14+), both server
 * clocks, so neither the probe's nor the watcher's scheduling counts. A
 * wait is seen at its length up to the last sample before it ends: a lock
 * held past the bound is seen past it even if the watcher misses samples.
 */
static void *watcher_main(void *p) {
    probes *ps = p;
    PGconn *c = PQconnectdb(ps->url);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(ps->watcher_error, sizeof ps->watcher_error, "%s",
                 PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    while (!atomic_load(&ps->stop)) {
        PGresult *r = PQexec(
            c, "SELECT pid, (extract(epoch FROM clock_timestamp() - "
               "min(waitstart)) * 1e6)::bigint FROM pg_locks "
               "WHERE NOT granted AND waitstart IS NOT NULL GROUP BY pid");
        if (PQresultStatus(r) != PGRES_TUPLES_OK && !ps->watcher_error[0])
            snprintf(ps->watcher_error, sizeof ps->watcher_error, "%s",
                     PQerrorMessage(c));
        for (int row = 0; PQresultStatus(r) == PGRES_TUPLES_OK &&
                          row < PQntuples(r); row++) {
            int pid = atoi(PQgetvalue(r, row, 0));
            long long us = atoll(PQgetvalue(r, row, 1));
            for (int i = 0; i < ps->n; i++)
                if (ps->p[i].pid == pid && us > ps->p[i].lock_wait_us)
                    ps->p[i].lock_wait_us = us;
        }
        PQclear(r);
        usleep(10000);
    }
    PQfinish(c);
    return NULL;
}

static void watcher_start(probes *ps, const char *url) {
    ps->url = url;
    ck_assert_int_eq(pthread_create(&ps->watcher, NULL, watcher_main, ps), 0);
}

/* Waits until every probe has made `more` operations past `since` (NULL:
 * past 0) or has ended; fails the test after 30 s. */
static void probes_wait_ops(probes *ps, const long long since[], long long more,
                            const char *what) {
    long long deadline = dt_now_ms() + 30000;
    for (int i = 0; i < ps->n; i++) {
        probe *pr = &ps->p[i];
        long long want = (since ? since[i] : 0) + more;
        while (atomic_load(&pr->ops) < want && !atomic_load(&pr->done)) {
            ck_assert_msg(dt_now_ms() < deadline, "%s made no progress %s",
                          pr->name, what);
            usleep(1000);
        }
    }
}

/* A probe: its name, its statement ($1 from 1 to its range) and which
 * range it draws from. */
typedef struct probe_def {
    const char *name;
    const char *sql;
    int conv; /* 0: users, 1: conversations, 2: the extra range */
} probe_def;

/* A probe with a range of its own: $1 from 1 to `range`. */
typedef struct range_probe {
    const char *name;
    const char *sql;
    int range;
} range_probe;

/* The bound is on the locks the runner takes. An autovacuum at work on a
 * table when a DDL asks for it keeps the DDL waiting, and every probe
 * queued behind the DDL with it, until PostgreSQL cancels the autovacuum
 * after deadlock_timeout (1 s): a wait set by when the server's autovacuum
 * happened to start, not by the runner (seen as a 1,025 ms wait of the
 * memory_facts reader during "down to 1", with "canceling autovacuum task"
 * for memory_facts in the server log at that moment). So the tables the
 * probes start on are kept from autovacuum; the ALTER waits out (or, after
 * deadlock_timeout, cancels) one already running, so none runs after it. */
static void keep_autovacuum_away(const char *url) {
    dt_sql(url, "DO $$DECLARE t regclass; BEGIN "
                "FOR t IN SELECT c.oid FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND "
                "n.nspname NOT IN ('pg_catalog', 'information_schema') AND "
                "n.nspname NOT LIKE 'pg\\_%' LOOP "
                "EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off, "
                "toast.autovacuum_enabled = off)', t); "
                "END LOOP; END$$");
}

/* Starts one probe per def (at most MAX_PROBES). */
static void probes_run(probes *ps, const char *url, const range_probe *defs,
                       int n) {
    ck_assert_int_le(n, MAX_PROBES);
    keep_autovacuum_away(url);
    memset(ps, 0, sizeof *ps);
    ps->n = n;
    for (int i = 0; i < n; i++) {
        probe *pr = &ps->p[i];
        pr->url = url;
        pr->name = defs[i].name;
        pr->sql = defs[i].sql;
        pr->range = defs[i].range;
        pr->stop = &ps->stop;
        ck_assert_int_eq(pthread_create(&ps->t[i], NULL, probe_main, pr), 0);
    }
    watcher_start(ps, url);
    probes_wait_ops(ps, NULL, 1, "at the start"); /* connected and running */
}

/* Starts the probes `defs` (at most MAX_PROBES); `extra` is the range of
 * those with conv == 2. */
static void probes_start_defs(probes *ps, const char *url,
                              const probe_def *defs, int n, int users,
                              int conversations, int extra) {
    ck_assert_int_le(n, MAX_PROBES);
    range_probe ranged[MAX_PROBES];
    for (int i = 0; i < n; i++)
        ranged[i] = (range_probe){defs[i].name, defs[i].sql,
                                  defs[i].conv == 2   ? extra
                                  : defs[i].conv == 1 ? conversations
                                                      : users};
    probes_run(ps, url, ranged, n);
}

static void probes_start(probes *ps, const char *url, int users,
                         int conversations) {
    static const probe_def defs[NPROBES] = {
        {"memory_facts read",
         "SELECT id, content FROM memory_facts WHERE user_id = $1 "
         "ORDER BY id DESC LIMIT 20", 0},
        {"memory_facts write",
         "INSERT INTO memory_facts (user_id, content) VALUES ($1, 'probe')", 0},
        {"messages read",
         "SELECT id, content FROM messages WHERE conversation_id = $1 "
         "ORDER BY id DESC LIMIT 20", 1},
        {"messages write",
         "INSERT INTO messages (conversation_id, role, content) "
         "VALUES ($1, 'user', 'probe')", 1},
        {"conversations read",
         "SELECT id, title FROM conversations WHERE owner_id = $1 "
         "ORDER BY updated_at DESC LIMIT 20", 0},
        {"conversations write",
         "UPDATE conversations SET updated_at = now() WHERE id = $1", 1},
        {"analytics_events read",
         "SELECT count(*) FROM analytics_events WHERE user_id = $1", 0},
        {"analytics_events write",
         "INSERT INTO analytics_events (user_id, name) VALUES ($1, 'probe')", 0},
        /* the index sql/0007 builds and the one it drops */
        {"auth_sessions read",
         "SELECT id FROM auth_sessions WHERE user_id = $1 AND NOT revoked "
         "AND expires_at > now()", 0},
        {"auth_sessions write",
         "INSERT INTO auth_sessions (user_id, token_hash, expires_at) VALUES "
         "($1, sha256(convert_to(gen_random_uuid()::text, 'UTF8')), now() + "
         "interval '1 day')", 0},
    };
    probes_start_defs(ps, url, defs, NPROBES, users, conversations, 0);
}

/* Stops the probes and the lock watcher. */
static void probes_stop(probes *ps) {
    atomic_store(&ps->stop, true);
    for (int i = 0; i < ps->n; i++)
        pthread_join(ps->t[i], NULL);
    pthread_join(ps->watcher, NULL);
    ck_assert_msg(!ps->watcher_error[0], "lock watcher: %s", ps->watcher_error);
}

/* Stops the probes; fails unless each made progress during `what` and
 * waited at most `bound_ms` for a lock at worst. (The longest statement
 * is printed too: it includes time without CPU, so it is not asserted.) */
static void probes_check(probes *ps, const char *what, long long before[],
                         int bound_ms) {
    /* each probe goes on working once `what` is done */
    long long now[MAX_PROBES];
    for (int i = 0; i < ps->n; i++)
        now[i] = atomic_load(&ps->p[i].ops);
    probes_wait_ops(ps, now, 3, "after the operation");
    probes_stop(ps);
    for (int i = 0; i < ps->n; i++) {
        const probe *pr = &ps->p[i];
        printf("probe %-22s during %-28s ops=%lld worst_ms=%.1f "
               "lock_wait_ms=%.1f\n",
               pr->name, what, pr->ops, pr->worst_us / 1000.0,
               pr->lock_wait_us / 1000.0);
        fflush(stdout);
        ck_assert_msg(!pr->error[0], "%s: %s", pr->name, pr->error);
        ck_assert_msg(pr->ops > (before ? before[i] : 0) + 2,
                      "%s made no progress during %s", pr->name, what);
        ck_assert_msg(pr->lock_wait_us <= (long long)bound_ms * 1000,
                      "%s waited %.1f ms for a lock during %s (bound %d ms)",
                      pr->name, pr->lock_wait_us / 1000.0, what, bound_ms);
    }
}

/* Fills a database at version 2 with rows: `rows` memory facts, messages
 * and events, a tenth as many conversations and auth sessions; `future` events of a month
 * that has no partition yet (they wait in the default partition). */
static void populate(const char *url, int users, int rows, int future) {
    char sql[2048];
    PGconn *c = dt_connect(url);
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) SELECT 'u' || g || '@example.com' "
             "FROM generate_series(1, %d) g", users);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, content) SELECT 1 + g %% %d, "
             "'fact number ' || g || ' about tea, trains and the weather' "
             "FROM generate_series(1, %d) g", users, rows);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO conversations (owner_id, title) SELECT 1 + g %% %d, "
             "'c' || g FROM generate_series(1, %d) g", users, rows / 10);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO messages (conversation_id, role, content) "
             "SELECT 1 + g %% %d, 'user', 'message ' || g "
             "FROM generate_series(1, %d) g", rows / 10, rows);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO auth_sessions (user_id, token_hash, expires_at) "
             "SELECT 1 + g %% %d, sha256(int8send(g)), now() + (g %% 7 - 2) * "
             "interval '1 day' FROM generate_series(1, %d) g", users, rows / 10);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name, occurred_at) "
             "SELECT 1 + g %% %d, 'e', now() - (g %% 1000) * interval '1 second' "
             "FROM generate_series(1, %d) g", users, rows);
    dt_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name, occurred_at) "
             "SELECT 1 + g %% %d, 'future', date_trunc('month', now()) + "
             "interval '5 months 3 days' + g * interval '1 second' "
             "FROM generate_series(1, %d) g", users, future);
    dt_exec(c, sql);
    dt_exec(c, "ANALYZE");
    PQfinish(c);
}


typedef struct progress_log {
    int events;
    long long last_done, last_total;
    bool monotonic;
} progress_log;

static void log_progress(void *ud, const ds_migrate_event *p) {
    progress_log *pl = ud;
    if (p->kind != DS_MIGRATE_EVENT_PROGRESS)
        return;
    if (pl->events == 0)
        pl->monotonic = true;
    if (p->done < pl->last_done || p->done > p->total || !p->phase ||
        strcmp(p->phase, "copy") != 0 || strncmp(p->name, "analytics_events_", 17))
        pl->monotonic = false;
    pl->events++;
    pl->last_done = p->done;
    pl->last_total = p->total;
}

#define PROBE_ROWS 30000
#define PROBE_FUTURE 20000
#define BOUND_MS 1000

/* The probes' set-up: a database of its own (URL in *url) at schema
 * `version` (0: the latest), filled by populate() for 200 users with
 * PROBE_ROWS rows and `future` events of a month that has no partition
 * yet, and a pool on it. `backend` (NULL: the default) is the vector
 * backend the pool migrates with. */
static ds_pool *populated_db(char **url, const char *tag, int version,
                             int future, const char *backend) {
    if (version == 0) {
        *url = dt_migrated_db_backend(tag, backend);
        populate(*url, 200, PROBE_ROWS, future);
        return dt_pool(*url, 1, 2);
    }
    *url = dt_create_db(tag);
    ds_config *cfg = dt_config(*url, 1, 2);
    ds_error err = {0};
    if (backend)
        ck_assert_ds_ok(ds_config_set(cfg, "vector_backend", backend, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_to(pool, NULL, version, NULL, &err);
    ck_assert_ds_ok(st, err);
    populate(*url, 200, PROBE_ROWS, future);
    return pool;
}

/* A database at version 2 with rows in every table is moved to the latest
 * version, then maintained (one month's rows wait in the default
 * partition), while probes read and write memory_facts, messages,
 * conversations and analytics_events. */
START_TEST(test_online_upgrade_and_maintain_under_probes) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_probe", 2, PROBE_FUTURE,
                                 dt_env_opt("DS_VECTOR_BACKEND"));
    ds_error err = {0};
    ds_status st;

    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    int n = 0;
    st = ds_migrate_up(pool, NULL, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, (int)(DS_SCHEMA_VERSION - 2));
    long long after_up[NPROBES];
    for (int i = 0; i < NPROBES; i++)
        after_up[i] = ps.p[i].ops;
    int created = 0;
    progress_log pl = {0};
    ds_migrate_options mopts = DS_MIGRATE_OPTIONS_INIT;
    mopts.on_event = log_progress;
    mopts.on_event_ud = &pl;
    st = ds_migrate_maintain(pool, &mopts, 6, &created, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "up from 2 and maintain", after_up, BOUND_MS);
    /* progress: batches of the one month that had rows, up to all of them */
    ck_assert_int_ge(pl.events, 2);
    ck_assert_int_eq(pl.last_done, PROBE_FUTURE);
    ck_assert_int_eq(pl.last_total, PROBE_FUTURE);
    ck_assert(pl.monotonic);
    ck_assert_int_eq(created, 3); /* months +4, +5, +6 */

    /* the future month's rows moved out of the default partition, none lost */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM "
                                     "analytics_events_default WHERE name = 'future'"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'future'"),
                     PROBE_FUTURE);
    ck_assert_int_eq(dt_sql_int(url,
                                "SELECT count(*) FROM analytics_events e JOIN "
                                "pg_class c ON c.oid = e.tableoid WHERE "
                                "e.name = 'future' AND c.relname = "
                                "'analytics_events_' || to_char(date_trunc('month', "
                                "now() AT TIME ZONE 'UTC') + interval '5 months', "
                                "'YYYY_MM')"),
                     PROBE_FUTURE);
    /* the indexes 0003 built are valid, the CHECK validated */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index i JOIN "
                                     "pg_class c ON c.oid = i.indexrelid WHERE "
                                     "c.relname LIKE 'memory_facts_%' AND NOT "
                                     "i.indisvalid"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'memory_facts_content_fts_idx'"),
                     1);
    /* sql/0008 ran under the probes too: its list column and index */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'memory_facts_ivf_idx'"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts "
                                     "WHERE list_id IS NOT NULL"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_constraint WHERE "
                                     "conrelid = 'memory_facts'::regclass AND "
                                     "NOT convalidated"),
                     0);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    close_db(pool, url);
}
END_TEST

/* From version 1 (every event in the default partition) to the latest,
 * then maintained: 0002 leaves a populated table's rows where they are and
 * maintain moves this month's into its new partition in batches. */
START_TEST(test_online_upgrade_from_1_under_probes) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_from1", 1, PROBE_FUTURE, NULL);
    ds_error err = {0};
    ds_status st;
    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    int n = 0;
    st = ds_migrate_up(pool, NULL, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, (int)(DS_SCHEMA_VERSION - 1));
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     1); /* the default partition only, for now */
    int created = 0;
    st = ds_migrate_maintain(pool, NULL, 3, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 4);
    probes_check(&ps, "up from 1 and maintain", NULL, BOUND_MS);
    /* this month's rows left the default partition */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events_default "
                                     "WHERE occurred_at >= date_trunc('month', now() "
                                     "AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AND "
                                     "name = 'e' AND occurred_at < now() - interval '1 hour'"),
                     0);
    close_db(pool, url);
}
END_TEST

/* The watcher measures lock waits, and the bound can fail: a table held
 * in ACCESS EXCLUSIVE for 1.5 s makes its reader wait about that long. */
START_TEST(test_online_probes_see_a_lock_held_too_long) {
    char *url = dt_create_db("onl_held");
    dt_sql(url, "CREATE TABLE things (id bigint PRIMARY KEY, label text)");
    dt_sql(url, "INSERT INTO things SELECT g, 'x' FROM generate_series(1, 100) g");
    static const range_probe defs[] = {
        {"things read", "SELECT label FROM things WHERE id = $1", 100},
    };
    probes ps;
    probes_run(&ps, url, defs, 1);
    PGconn *c = dt_connect(url);
    dt_exec(c, "BEGIN");
    dt_exec(c, "LOCK TABLE things IN ACCESS EXCLUSIVE MODE");
    usleep(1500000);
    dt_exec(c, "COMMIT");
    usleep(100000);
    probes_stop(&ps);
    PQfinish(c);
    printf("probe things read: worst_ms=%.1f lock_wait_ms=%.1f\n",
           ps.p[0].worst_us / 1000.0, ps.p[0].lock_wait_us / 1000.0);
    ck_assert_msg(ps.p[0].lock_wait_us > (long long)BOUND_MS * 1000,
                  "a lock held 1.5 s was seen as a %.1f ms wait",
                  ps.p[0].lock_wait_us / 1000.0);
    ck_assert_int_le(ps.p[0].lock_wait_us, ps.p[0].worst_us);
    dt_drop_db(url);
    free(url);
}
END_TEST

#define USERS_0004 100000

/* The backfill's done when it reached its total. */
static int record_backfill(void *ud, const ds_progress *p) {
    long long *last = ud;
    if (!strcmp(p->phase, "backfill") && p->done == p->total)
        *last = p->done;
    return 0;
}

static int stop_after_first_batch(void *ud, const ds_progress *p) {
    int *batches = ud;
    return !strcmp(p->phase, "backfill") && ++*batches == 1;
}

/* 0004 on a populated users table (100,000 users, half soft-deleted
 * before the migration: the one-transaction 0004 held ACCESS EXCLUSIVE
 * for about 2 s here) while probes read, sign up, update and
 * soft-delete users: the backfill goes in batches, and every user ends up
 * paired (status 'deleted' exactly when deleted_at is set), with the
 * status before the delete kept. */
START_TEST(test_online_0004_under_probes) {
    char *url = dt_create_db("onl_0004");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, NULL, 3, NULL, &err);
    ck_assert_ds_ok(st, err);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email, status, deleted_at) SELECT 'u' || g || "
             "'@example.com', CASE WHEN g %% 7 = 0 THEN 'suspended' ELSE "
             "'active' END, CASE WHEN g %% 2 = 0 THEN now() - interval '1 day' "
             "END FROM generate_series(1, %d) g",
             USERS_0004);
    dt_sql(url, sql);
    dt_sql(url, "ANALYZE users");
    static const range_probe defs[] = {
        {"users read", "SELECT email, status FROM users WHERE id = $1", USERS_0004},
        {"users update", "UPDATE users SET updated_at = now() WHERE id = $1",
         USERS_0004},
        {"users soft-delete",
         "UPDATE users SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
         USERS_0004},
        {"users sign-up",
         "INSERT INTO users (email) VALUES ('p' || $1 || '-' || "
         "gen_random_uuid() || '@example.com')",
         USERS_0004},
        {"users list",
         "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL AND id < $1",
         USERS_0004},
    };
    probes ps;
    probes_run(&ps, url, defs, 5);
    long long backfilled = -1;
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.on_progress = record_backfill;
    opts.on_progress_ud = &backfilled;
    int n = 0;
    st = ds_migrate_to(pool, &opts, 4, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    usleep(200000);
    probes_check(&ps, "0004 on 100k users", NULL, BOUND_MS);
    /* half, and those the probe soft-deleted before the trigger */
    ck_assert_int_ge(backfilled, USERS_0004 / 2);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM users WHERE "
                                     "(status = 'deleted') <> (deleted_at IS NOT NULL)"),
                     0);
    /* the status before the delete is kept, for the backfilled rows too */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM users WHERE id <= %d AND id %% 2 = 0 AND "
             "status_before_delete = CASE WHEN id %% 7 = 0 THEN 'suspended' "
             "ELSE 'active' END",
             USERS_0004);
    ck_assert_int_eq(dt_sql_int(url, sql), USERS_0004 / 2);
    /* both checks are there and validated, the trigger too */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_constraint WHERE "
                                     "conrelid = 'users'::regclass AND conname IN "
                                     "('users_status_check', "
                                     "'users_deleted_status_check') AND convalidated"),
                     2);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_trigger WHERE "
                                     "tgname = 'users_soft_delete_status'"),
                     1);
    /* down, and up again stopped after the first batch: some rows are
     * paired, the rest not; the next run does them and validates */
    st = ds_migrate_to(pool, NULL, 3, NULL, &err);
    ck_assert_ds_ok(st, err);
    const char *unpaired = "SELECT count(*) FROM users WHERE deleted_at IS NOT "
                           "NULL AND status <> 'deleted'";
    long long before = dt_sql_int(url, unpaired);
    ck_assert_int_gt(before, 1000);
    int batches = 0;
    opts.on_progress = stop_after_first_batch;
    opts.on_progress_ud = &batches;
    st = ds_migrate_to(pool, &opts, 4, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_int_eq(dt_sql_int(url, unpaired), before - 1000);
    st = ds_migrate_to(pool, NULL, 4, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(url, unpaired), 0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_constraint WHERE "
                                     "conrelid = 'users'::regclass AND NOT "
                                     "convalidated"),
                     0);
    close_db(pool, url);
}
END_TEST

/* Down from the latest version to 1 on a populated database: 0002's down
 * folds the monthly partitions (which hold rows) into the default
 * partition in batches and one catalog-only swap, under the probes; every
 * event is kept, and a row written during the fold is not lost. */
START_TEST(test_online_down_to_1_under_probes) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_down", 0, 0, NULL);
    /* one month ahead with rows too, and a few in the default partition */
    dt_sql(url, "SELECT ds_analytics_ensure_partitions(2)");
    dt_sql(url, "INSERT INTO analytics_events (user_id, name, occurred_at) "
                "SELECT 1 + g % 200, 'ahead', date_trunc('month', now()) + "
                "interval '1 month 1 day' + g * interval '1 second' FROM "
                "generate_series(1, 5000) g");
    dt_sql(url, "INSERT INTO analytics_events (user_id, name, occurred_at) "
                "SELECT 1 + g % 200, 'old', now() - interval '3 years' FROM "
                "generate_series(1, 1000) g");
    long long before = dt_sql_int(url, "SELECT count(*) FROM analytics_events");
    long long sum_before = dt_sql_int(url, "SELECT sum(id) FROM analytics_events");
    ck_assert_int_gt(dt_sql_int(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     3);
    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, NULL, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "down to 1", NULL, BOUND_MS);
    /* one partition left, the default, holding every event: those from
     * before and each probe insert */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events_default "
                                     "WHERE name <> 'probe'"),
                     before);
    ck_assert_int_eq(dt_sql_int(url, "SELECT sum(id) FROM analytics_events "
                                     "WHERE name <> 'probe'"),
                     sum_before);
    long long inserted = 0;
    for (int i = 0; i < NPROBES; i++)
        if (strstr(ps.p[i].name, "analytics_events write"))
            inserted = ps.p[i].ops;
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'probe'"),
                     inserted);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname LIKE 'analytics_events_fold%'"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index i WHERE "
                                     "i.indrelid = 'analytics_events_default'::regclass"),
                     2);
    /* and up again, to the latest */
    int n = 0;
    st = ds_migrate_up(pool, NULL, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, (int)(DS_SCHEMA_VERSION - 1));
    close_db(pool, url);
}
END_TEST

/* A fallback database with embeddings moves to pgvector while the probes
 * run: no long ACCESS EXCLUSIVE, every embedding converted. */
START_TEST(test_online_upgrade_to_pgvector_under_probes) {
    if (dt_skip_without_pgvector("test_online_upgrade_to_pgvector_under_probes"))
        return;
    char *url;
    ds_pool *pool = populated_db(&url, "onl_pgv", 0, 0, "fallback");
    dt_sql(url, "UPDATE memory_facts SET "
                "embedding = decode(repeat('0000803f', 384), 'hex'), "
                "embedding_sketch = decode(repeat('00', 392), 'hex') "
                "WHERE id % 3 <> 0");
    long long with = dt_sql_int(url, "SELECT count(*) FROM memory_facts WHERE "
                                     "embedding IS NOT NULL");
    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    ds_error err = {0};
    dt_progress prog;
    dt_progress_init(&prog, "memory_upgrade", 0);
    ds_memory_upgrade_options uo = {.size = sizeof(ds_memory_upgrade_options)};
    ds_memory_upgrade_options_init(&uo);
    uo.progress = dt_progress_record;
    uo.progress_ud = &prog;
    ds_status st = ds_memory_upgrade_to_pgvector(pool, &uo, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "upgrade_to_pgvector", NULL, BOUND_MS);
    dt_progress_check(&prog, true);
    ck_assert_int_eq(prog.last_done, with);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_vector_settings "
                                     "WHERE backend = 'pgvector'"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts WHERE "
                                     "embedding IS NOT NULL AND "
                                     "vector_dims(embedding) = 384"),
                     with);
    /* no HNSW index: searches scan the user's sketches, which stay */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index i JOIN "
                                     "pg_class c ON c.oid = i.indexrelid WHERE "
                                     "c.relname = 'memory_facts_embedding_sketch_idx' "
                                     "AND i.indisvalid"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_trigger WHERE "
                                     "tgrelid = 'memory_facts'::regclass AND "
                                     "NOT tgisinternal"),
                     0);
    /* the index of the rows left to convert went with the bytea column */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'memory_facts_upgrade_todo_idx'"),
                     0);
    close_db(pool, url);
}
END_TEST

/* Retention purge of soft-deleted users with many rows each (40,000 in
 * all), batch after batch (ds_gdpr_purge_deleted_users), under the probes
 * (which use the other users); progress reported to the end. */
START_TEST(test_online_purge_under_probes) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_purge", 0, 0, NULL);
    /* 100 more users, 200 memory facts and 200 events each, soft-deleted */
    dt_sql(url, "INSERT INTO users (email, deleted_at) SELECT 'gone' || g || "
                "'@example.com', now() - interval '40 days' FROM "
                "generate_series(1, 100) g");
    dt_sql(url, "INSERT INTO memory_facts (user_id, content) SELECT u.id, "
                "'old fact ' || g FROM users u, generate_series(1, 200) g "
                "WHERE u.deleted_at IS NOT NULL");
    dt_sql(url, "INSERT INTO analytics_events (user_id, name) SELECT u.id, "
                "'old' FROM users u, generate_series(1, 200) g "
                "WHERE u.deleted_at IS NOT NULL");
    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    ds_error err = {0};
    int64_t total = 0;
    bool more = true;
    dt_progress prog;
    dt_progress_init(&prog, "purge", 0);
    ds_gdpr_purge_options po = {.size = sizeof(ds_gdpr_purge_options)};
    ds_gdpr_purge_options_init(&po);
    po.batch_users = 10;
    po.progress = dt_progress_record;
    po.progress_ud = &prog;
    ds_status st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &po, &total,
                                            &more, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!more);
    probes_check(&ps, "purge_soft_deleted", NULL, BOUND_MS);
    ck_assert_int_eq(total, 100);
    dt_progress_check(&prog, true);
    ck_assert_int_ge(prog.events, 10);
    ck_assert_int_eq(prog.last_done, 100);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts WHERE "
                                     "content LIKE 'old fact %'"),
                     0);
    close_db(pool, url);
}
END_TEST

/* Key rotation of 30,000 service connections while probes read and write
 * them (and the other tables): short batches that skip rows a writer
 * holds, so nobody waits for long; progress to the end. */
START_TEST(test_online_rotate_under_probes) {
    enum { CONNS = 30000 };
    char *url;
    ds_pool *pool = populated_db(&url, "onl_rot", 0, 0, NULL);
    ds_error err = {0};
    ds_crypto *ring1, *ring2;
    ck_assert_ds_ok(ds_crypto_open_keys(DT_K1, &ring1, &err), err);
    ck_assert_ds_ok(ds_crypto_open_keys(DT_K2 "," DT_K1, &ring2, &err), err);
    dt_seed_connections(url, ring1, CONNS, 200);
    dt_sql(url, "ANALYZE service_connections");
    static const probe_def defs[] = {
        {"service_connections read",
         "SELECT id, access_token_enc FROM service_connections "
         "WHERE user_id = $1 ORDER BY id LIMIT 20", 0},
        {"service_connections write",
         "UPDATE service_connections SET updated_at = now() WHERE id = $1", 2},
        {"memory_facts read",
         "SELECT id, content FROM memory_facts WHERE user_id = $1 "
         "ORDER BY id DESC LIMIT 20", 0},
        {"messages write",
         "INSERT INTO messages (conversation_id, role, content) "
         "VALUES ($1, 'user', 'probe')", 1},
    };
    probes ps;
    probes_start_defs(&ps, url, defs, 4, 200, PROBE_ROWS / 10, CONNS);
    dt_progress prog;
    dt_progress_init(&prog, "crypto_rotate", 0);
    ds_crypto_rotate_options ro = {.size = sizeof(ds_crypto_rotate_options), .progress = dt_progress_record,
                                   .progress_ud = &prog};
    ds_crypto_rotate_stats stats = {.size = sizeof(ds_crypto_rotate_stats)};
    ds_status st = ds_crypto_rotate(ring2, pool, &ro, &stats, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "crypto_rotate", NULL, BOUND_MS);
    /* rows the writer probe held were skipped, then rotated on a later
     * pass */
    ck_assert_int_eq(stats.rotated, CONNS);
    ck_assert_int_eq(stats.failed, 0);
    ck_assert_int_eq(stats.remaining, 0);
    dt_progress_check(&prog, true);
    ck_assert_int_ge(prog.events, CONNS / 200);
    ck_assert_int_eq(prog.last_done, CONNS);
    ck_assert_int_eq(prog.last_total, CONNS);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM service_connections "
                                     "WHERE key_id = 'k2' AND external_account_id "
                                     "LIKE 'acct-%'"),
                     CONNS);
    ds_crypto_close(ring1);
    ds_crypto_close(ring2);
    close_db(pool, url);
}
END_TEST

/* GDPR erase of a user with 30,000 messages, memory facts and events each,
 * in batches, while probes work on the other users' rows of the same
 * tables; progress done only grows and ends at total. */
START_TEST(test_online_erase_under_probes) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_erase", 0, 0, NULL);
    dt_sql(url, "INSERT INTO users (email) VALUES ('heavy@example.com')");
    long long heavy = dt_sql_int(url, "SELECT id FROM users WHERE email = "
                                      "'heavy@example.com'");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO conversations (owner_id, title) SELECT %lld, 'h' || "
             "g FROM generate_series(1, 30) g",
             heavy);
    dt_sql(url, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO messages (conversation_id, role, content) SELECT "
             "c.id, 'user', 'heavy ' || g FROM conversations c, "
             "generate_series(1, 1000) g WHERE c.owner_id = %lld",
             heavy);
    dt_sql(url, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, content) SELECT %lld, "
             "'heavy fact ' || g FROM generate_series(1, 30000) g",
             heavy);
    dt_sql(url, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name) SELECT %lld, "
             "'heavy' FROM generate_series(1, 30000) g",
             heavy);
    dt_sql(url, sql);
    dt_sql(url, "ANALYZE");
    probes ps;
    probes_start(&ps, url, 200, PROBE_ROWS / 10);
    dt_progress prog;
    dt_progress_init(&prog, "erase", 0);
    prog.cumulative = true;
    ds_gdpr_erase_options eo = {.size = sizeof(ds_gdpr_erase_options)};
    ds_gdpr_erase_options_init(&eo);
    eo.progress = dt_progress_record;
    eo.progress_ud = &prog;
    ds_gdpr_erase_report *rep;
    ds_error err = {0};
    ds_status st = ds_gdpr_erase_user(pool, NULL, heavy, &eo, &rep, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "user_erase", NULL, BOUND_MS);
    ck_assert_int_eq(rep->users, 1);
    ck_assert_int_eq(rep->messages, 30000);
    ck_assert_int_eq(rep->memory_facts, 30000);
    ck_assert_int_eq(rep->analytics_events, 30000);
    ds_gdpr_erase_report_free(rep);
    dt_progress_check(&prog, true);
    ck_assert_int_ge(prog.events, 3 * (30000 / 5000));
    ck_assert_int_eq(prog.last_done, 1 + 30 + 3 * 30000);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM memory_facts WHERE user_id = %lld) "
             "+ (SELECT count(*) FROM analytics_events WHERE user_id = %lld) "
             "+ (SELECT count(*) FROM conversations WHERE owner_id = %lld)",
             heavy, heavy, heavy);
    ck_assert_int_eq(dt_sql_int(url, sql), 0);
    /* the others' rows are all there */
    ck_assert_int_ge(dt_sql_int(url, "SELECT count(*) FROM memory_facts"),
                     PROBE_ROWS);
    close_db(pool, url);
}
END_TEST

/* Sums the operations of the probes whose name starts with `prefix`. */
static long long probe_ops(const probes *ps, const char *prefix) {
    long long n = 0;
    for (int i = 0; i < ps->n; i++)
        if (!strncmp(ps->p[i].name, prefix, strlen(prefix)))
            n += ps->p[i].ops;
    return n;
}

/* Maintain moves a month whose rows a writer keeps updating: the move
 * gives way to the writer waiting on a moved row (no deadlock error), and
 * no update is lost: the updater adds 1 to a counter in a random row of
 * the month, so the counters sum to the number of updates made. (The
 * updater waits on row locks while the move runs, so the bound here is
 * generous: this test is about correctness.) */
START_TEST(test_online_maintain_while_rows_of_the_month_change) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_upd", 2, PROBE_FUTURE, NULL);
    ds_error err = {0};
    ds_status st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    long long first = dt_sql_int(url, "SELECT min(id) - 1 FROM analytics_events "
                                      "WHERE name = 'future'");
    char upd[400];
    snprintf(upd, sizeof upd,
             "UPDATE analytics_events SET properties = jsonb_build_object("
             "'n', coalesce((properties->>'n')::int, 0) + 1) WHERE id = "
             "%lld + $1::bigint",
             first);
    range_probe defs[] = {
        {"updater 1", upd, PROBE_FUTURE},
        {"updater 2", upd, PROBE_FUTURE},
        {"analytics_events write",
         "INSERT INTO analytics_events (user_id, name) VALUES ($1, 'probe')", 200},
        {"analytics_events read",
         "SELECT count(*) FROM analytics_events WHERE user_id = $1", 200},
    };
    probes ps;
    probes_run(&ps, url, defs, 4);
    int created = 0;
    st = ds_migrate_maintain(pool, NULL, 6, &created, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "maintain while rows change", NULL, 10 * BOUND_MS);
    ck_assert_int_eq(created, 3);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events e "
                                     "JOIN pg_class c ON c.oid = e.tableoid "
                                     "WHERE e.name = 'future' AND c.relname <> "
                                     "'analytics_events_default'"),
                     PROBE_FUTURE);
    ck_assert_int_eq(dt_sql_int(url, "SELECT coalesce(sum((properties->>'n')"
                                     "::int), 0) FROM analytics_events WHERE "
                                     "name = 'future'"),
                     probe_ops(&ps, "updater"));
    close_db(pool, url);
}
END_TEST

/* A long query on analytics_events holds its lock while maintain wants to
 * attach: the attach queues briefly and tries again, so readers and
 * writers arriving meanwhile never queue behind it for long, and maintain
 * finishes once the query is done. */
START_TEST(test_online_maintain_behind_a_long_reader) {
    char *url;
    ds_pool *pool = populated_db(&url, "onl_long", 2, PROBE_FUTURE, NULL);
    ds_error err = {0};
    ds_status st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    range_probe defs[] = {
        {"analytics_events write",
         "INSERT INTO analytics_events (user_id, name) VALUES ($1, 'probe')", 200},
        {"analytics_events read",
         "SELECT count(*) FROM analytics_events WHERE user_id = $1", 200},
    };
    probes ps;
    probes_run(&ps, url, defs, 2);
    blocker b = {.url = url, .sql = "BEGIN; SELECT count(*) FROM analytics_events",
                 .hold_ms = 3000};
    pthread_t t;
    blocker_start(&b, &t); /* the long query holds its lock */
    int created = 0;
    st = ds_migrate_maintain(pool, NULL, 6, &created, &err);
    pthread_join(t, NULL);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 3);
    probes_check(&ps, "maintain behind a long reader", NULL, BOUND_MS);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events_default "
                                     "WHERE name = 'future'"),
                     0);
    close_db(pool, url);
}
END_TEST

/* ---- expand/contract recipes ---------------------------------------------- */

#define RECIPE_ROWS 30000

/* The recipes of docs/online-migrations.md (rename a column across two
 * releases, add a NOT NULL column, change a type, split a table, add a
 * foreign key), as migrations in tests/migrations/recipes on top of the
 * shipped ones, run on 30,000 rows while probes read and write the table:
 * the old code's paths, then the old and new side by side during the
 * expand steps, then the new only for the contract. Lint finds nothing
 * unwaived in them, no probe waits more than the bound, and after the
 * contract every row holds what it should. */
START_TEST(test_online_expand_contract_recipes_under_probes) {
    const char *root = dt_env("DS_PROJECT_ROOT");
    char recipes[PATH_MAX];
    snprintf(recipes, sizeof recipes, "%s/tests/migrations/recipes", root);
    ds_error err = {0};
    ds_migrate_options lopts = {.size = sizeof(ds_migrate_options)};
    lopts.dir = recipes;
    ds_migrate_lint_report *rep = NULL;
    ds_status st = ds_migrate_lint(&lopts, NULL, 0, &rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(rep->files, 14);
    ck_assert_uint_eq(rep->errors, 0);
    ck_assert_uint_eq(rep->warnings, 0);
    ds_migrate_lint_report_free(rep);

    char *url = dt_create_db("onl_recipes");
    char *dir = dt_temp_dir("online");
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "cp '%s'/sql/*.sql '%s'/*.sql '%s'/", root,
             recipes, dir);
    ck_assert_int_eq(system(cmd), 0);
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = {.size = sizeof(ds_migrate_options)};
    opts.dir = dir;
    st = ds_migrate_to(pool, &opts, 1001, NULL, &err);
    ck_assert_ds_ok(st, err);
    char sql[512];
    dt_sql(url, "INSERT INTO users (email) SELECT 'u' || g || '@example.com' "
                "FROM generate_series(1, 200) g");
    snprintf(sql, sizeof sql,
             "INSERT INTO recipe_notes (owner_id, title, score, address) "
             "SELECT 1 + g %% 200, 'note ' || g, g, CASE WHEN g %% 3 = 0 THEN "
             "NULL ELSE 'addr ' || g END FROM generate_series(1, %d) g",
             RECIPE_ROWS);
    dt_sql(url, sql);
    dt_sql(url, "ANALYZE recipe_notes");

    const range_probe old_reader = {
        "old reader",
        "SELECT id, title, score, address FROM recipe_notes WHERE owner_id = "
        "$1::bigint ORDER BY id DESC LIMIT 20", 200};
    const range_probe old_writer = {
        "old writer",
        "INSERT INTO recipe_notes (owner_id, title, score, address) VALUES "
        "($1::bigint, 'old ' || $1::bigint, $1::bigint, 'old addr')", 200};
    const range_probe old_updater = {
        "old updater",
        "UPDATE recipe_notes SET title = 'edited ' || $1::bigint, score = "
        "score + 1 WHERE id = $1::bigint", RECIPE_ROWS};

    /* release N-1's code while the rename's expand step runs */
    probes ps;
    range_probe a[] = {old_reader, old_writer, old_updater};
    probes_run(&ps, url, a, 3);
    st = ds_migrate_to(pool, &opts, 1002, NULL, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "recipes: rename expand", NULL, BOUND_MS);
    long long old_rows = probe_ops(&ps, "old writer");

    /* old and new code side by side through every expand step */
    range_probe b[] = {
        old_reader, old_writer, old_updater,
        {"new reader",
         "SELECT id, heading, score FROM recipe_notes WHERE owner_id = "
         "$1::bigint ORDER BY id DESC LIMIT 20", 200},
        {"new writer",
         "INSERT INTO recipe_notes (owner_id, heading, score, address) VALUES "
         "($1::bigint, 'new ' || $1::bigint, $1::bigint, 'new addr')", 200},
        {"new updater",
         "UPDATE recipe_notes SET heading = 'renamed ' || $1::bigint WHERE "
         "id = $1::bigint", RECIPE_ROWS},
    };
    probes_run(&ps, url, b, 6);
    st = ds_migrate_to(pool, &opts, 1013, NULL, &err);
    ck_assert_ds_ok(st, err);
    probes_check(&ps, "recipes: expand and backfill", NULL, BOUND_MS);
    old_rows += probe_ops(&ps, "old writer");
    long long new_rows = probe_ops(&ps, "new writer");

    /* release N+1's code only, while the contract step runs */
    range_probe c[] = {
        {"newer reader",
         "SELECT n.id, n.heading, n.score, n.priority, a.address FROM "
         "recipe_notes n LEFT JOIN recipe_note_addresses a ON a.note_id = "
         "n.id WHERE n.owner_id = $1::bigint ORDER BY n.id DESC LIMIT 20", 200},
        {"newer writer",
         "WITH n AS (INSERT INTO recipe_notes (owner_id, heading, score) "
         "VALUES ($1::bigint, 'newer ' || $1::bigint, $1::bigint) RETURNING "
         "id) INSERT INTO recipe_note_addresses (note_id, address) SELECT id, "
         "'newer addr' FROM n", 200},
        {"newer updater",
         "UPDATE recipe_notes SET heading = 'renamed ' || $1::bigint, score = "
         "score + 1 WHERE id = $1::bigint", RECIPE_ROWS},
    };
    probes_run(&ps, url, c, 3);
    int n = 0;
    st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    probes_check(&ps, "recipes: contract", NULL, BOUND_MS);
    long long newer_rows = probe_ops(&ps, "newer writer");

    /* the schema the recipes end with */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 'recipe_notes'::regclass AND "
                                     "attname IN ('title', 'score_old', "
                                     "'address', 'score_new') AND NOT attisdropped"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 'recipe_notes'::regclass AND "
                                     "attname IN ('score', 'priority') AND "
                                     "attnotnull AND NOT attisdropped AND "
                                     "atttypid = CASE attname WHEN 'score' THEN "
                                     "'int8'::regtype ELSE 'int4'::regtype END"),
                     2);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_constraint WHERE "
                                     "conrelid = 'recipe_notes'::regclass AND "
                                     "(NOT convalidated OR contype = 'c')"),
                     0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_constraint WHERE "
                                     "conname = 'recipe_notes_owner_fk' AND "
                                     "contype = 'f' AND convalidated"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_index i JOIN "
                                     "pg_class c ON c.oid = i.indexrelid WHERE "
                                     "c.relname = 'recipe_notes_owner_idx' AND "
                                     "i.indisvalid"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_trigger WHERE "
                                     "tgrelid = 'recipe_notes'::regclass AND "
                                     "NOT tgisinternal"),
                     0);
    /* every row: the ones from before, each writer's */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recipe_notes WHERE id <= %d", RECIPE_ROWS);
    ck_assert_int_eq(dt_sql_int(url, sql), RECIPE_ROWS);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM recipe_notes WHERE "
                                     "heading LIKE 'old %'"),
                     old_rows);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM recipe_notes WHERE "
                                     "heading LIKE 'new %'"),
                     new_rows);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM recipe_notes WHERE "
                                     "heading LIKE 'newer %'"),
                     newer_rows);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM recipe_notes WHERE "
                                     "heading IS NULL"),
                     0);
    /* the renamed column holds the old one's text, or an edit made through
     * either name; the score, widened, never went back */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recipe_notes WHERE id <= %d AND NOT "
             "(heading IN ('note ' || id, 'edited ' || id, 'renamed ' || id) "
             "AND score >= id AND priority = 0)",
             RECIPE_ROWS);
    ck_assert_int_eq(dt_sql_int(url, sql), 0);
    /* the split: each address that was written, in the new table */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recipe_note_addresses WHERE note_id <= %d "
             "AND address = 'addr ' || note_id",
             RECIPE_ROWS);
    ck_assert_int_eq(dt_sql_int(url, sql), RECIPE_ROWS - RECIPE_ROWS / 3);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM recipe_notes n "
                                     "WHERE n.heading ~ '^(old|new|newer) ' "
                                     "AND NOT EXISTS (SELECT 1 FROM "
                                     "recipe_note_addresses a WHERE a.note_id = "
                                     "n.id AND a.address = split_part(n.heading, "
                                     "' ', 1) || ' addr')"),
                     0);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_online_suite(void) {
    Suite *s = suite_create("online");
    TCase *tc = tcase_create("runner");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_online_when_and_invalid_index_repair);
    tcase_add_test(tc, test_online_lock_timeout_is_retried);
    tcase_add_test(tc, test_online_deadlock_victim_is_retried);
    tcase_add_test(tc, test_online_dry_run_spells_when_for_psql);
    tcase_add_test(tc, test_online_rewritten_files_keep_applied_databases);
    suite_add_tcase(s, tc);
    tc = tcase_create("probes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_online_upgrade_and_maintain_under_probes);
    tcase_add_test(tc, test_online_upgrade_to_pgvector_under_probes);
    tcase_add_test(tc, test_online_upgrade_from_1_under_probes);
    tcase_add_test(tc, test_online_purge_under_probes);
    tcase_add_test(tc, test_online_rotate_under_probes);
    tcase_add_test(tc, test_online_erase_under_probes);
    tcase_add_test(tc, test_online_down_to_1_under_probes);
    tcase_add_test(tc, test_online_maintain_while_rows_of_the_month_change);
    tcase_add_test(tc, test_online_maintain_behind_a_long_reader);
    suite_add_tcase(s, tc);
    tc = tcase_create("watcher");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_online_probes_see_a_lock_held_too_long);
    suite_add_tcase(s, tc);
    tc = tcase_create("users");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_online_0004_under_probes);
    suite_add_tcase(s, tc);
    tc = tcase_create("recipes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_online_expand_contract_recipes_under_probes);
    suite_add_tcase(s, tc);
    return s;
}
