/*
 * bench_migrate: what the migration runner costs.
 *
 *   migrate_empty    an empty database to the latest version: open a pool,
 *                    ds_migrate_up() with the embedded migrations, close
 *                    (target: under 1 s), against a raw libpq baseline that
 *                    connects, creates a record table and applies the same
 *                    files with one PQexec each (BEGIN; file; INSERT; COMMIT)
 *   status_uptodate  ds_migrate_status() on an up-to-date database through
 *                    an open pool (target: under 20 ms), against a plain
 *                    SELECT of the record table on a raw connection
 *
 *   For each size ROWS, every online operation runs while 11 probes read
 *   and write memory_facts, messages, conversations, analytics_events,
 *   users and service_connections; each line gives its duration and the
 *   probes' worst wait (goal: at most 1 s), next to the baseline: the same
 *   change done the naive way, in one transaction (hand-written SQL, the
 *   way online-migration guides warn against), on a copy of the database
 *   made just before, under the same probes.
 *
 *   up_N_to_latest   a database at version N (populated at version 1:
 *                    ROWS memory facts, messages and events, ROWS/10
 *                    conversations and users, one in a hundred of those
 *                    users soft-deleted, ROWS/5 events of a month ahead)
 *                    goes to the latest version
 *   maintain_from_1  ds_migrate_maintain() where the default partition
 *                    holds every event (an upgrade from version 1)
 *   maintain_default ds_migrate_maintain() with partitions maintained
 *                    ahead, one month's ROWS/5 rows in the default
 *   upgrade_to_pgvector  two thirds of the facts hold an embedding
 *                    (384 dimensions; skipped without pgvector)
 *   rotate           ds_crypto_rotate() of ROWS/10 service connections
 *   purge            ds_gdpr_purge_deleted_users() of 100 users with ROWS/1000
 *                    facts and events each
 *
 * Next to worst_wait_ms (the longest probe statement during the
 * operation, whatever made it slow), a line gives lock_wait_ms and lock_on
 * (the longest wait on a lock a watcher saw, sampled every 20 ms, and on
 * what), and idle_worst_ms (the probes' longest statement in the 5 s
 * before the operation started: the floor the machine's load sets).
 *
 * Every table is filled by INSERT ... SELECT over generate_series (the
 * sealed tokens through one COPY), so 1M rows take minutes, not hours.
 *
 *   bench_migrate [--op CASE[,CASE...]] [--rows N[,N...]] [--no-baseline]
 *
 * --rows (else BENCH_ONLINE_ROWS, else 100000): the sizes; the production
 * tier is 100000,1000000, an hour or more on two busy cores, so run one
 * case at a time there: --op maintain_default --rows 1000000. --op (else
 * BENCH_ONLINE_CASES, else all) picks cases: "empty" (migrate_empty and
 * status_uptodate, run with no --op), "up" (from every version), "up_N",
 * or an online case's name. --no-baseline skips the naive twin.
 *
 * Each migrate_empty round uses two fresh databases (made before timing,
 * dropped at the end); rounds alternate ours and the baseline.
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define PROGRAM "bench_migrate"

static _Noreturn void die(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    exit(1);
}

/* `url` with its database name replaced. */
static char *url_with_db(const char *url, const char *db) {
    const char *scheme = strstr(url, "://");
    if (!scheme)
        die("DATABASE_URL", "expected a postgresql:// URL");
    const char *slash = strchr(scheme + 3, '/');
    const char *query = strchr(scheme + 3, '?');
    size_t head = slash ? (size_t)(slash - url)
                        : query ? (size_t)(query - url) : strlen(url);
    const char *tail = query ? query : "";
    size_t n = head + strlen(db) + strlen(tail) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%.*s/%s%s", (int)head, url, db, tail);
    return out;
}

static void exec_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK)
        die("sql", PQerrorMessage(c));
    PQclear(r);
}

static void quiet(void *ud, const char *message) {
    (void)ud;
    (void)message; /* DROP ... IF EXISTS notices */
}

static PGconn *connect_or_die(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

/* Set by a baseline whose transaction failed (e.g. chosen as a deadlock's
 * victim against the probes): its figures are then those of the failure. */
static char baseline_failed[160];

static bool exec_ok(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK ||
              PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok && !baseline_failed[0]) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(baseline_failed, sizeof baseline_failed, "%s",
                 state ? state : "error");
        fprintf(stderr, "%s: baseline failed: %s", PROGRAM,
                PQerrorMessage(c));
    }
    PQclear(r);
    return ok;
}

/* A baseline step: on failure the baseline stops there. */
#define NAIVE(c, sql)                                                          \
    do {                                                                       \
        if (!exec_ok(c, sql))                                                  \
            goto out;                                                          \
    } while (0)

/* ---- the baseline: the same files through plain libpq ------------------ */

typedef struct sql_file {
    char *text;
    long version;
} sql_file;

static int load_up_files(const char *dir, sql_file *files, int max) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -E '^[0-9]+_.*\\.up\\.sql$' | sort",
             dir);
    FILE *ls = popen(cmd, "r");
    int n = 0;
    char name[512];
    while (ls && n < max && fgets(name, sizeof name, ls)) {
        name[strcspn(name, "\n")] = '\0';
        char path[1600];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        if (!f)
            die(path, "cannot open");
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        files[n].text = malloc((size_t)size + 1);
        if (fread(files[n].text, 1, (size_t)size, f) != (size_t)size)
            die(path, "short read");
        files[n].text[size] = '\0';
        files[n].version = atol(name);
        fclose(f);
        n++;
    }
    if (ls)
        pclose(ls);
    return n;
}

/* A file marked "-- ds:no-transaction" runs statement by statement (what
 * CREATE INDEX CONCURRENTLY needs); a "-- ds:when EXPR" line before a
 * statement runs it only when EXPR is true. A small splitter: quotes,
 * dollar quotes and comments do not end a statement. */
static void raw_run_no_tx(PGconn *c, const char *s) {
    size_t i = 0, start = 0, len = strlen(s);
    char when[1024] = "";
    bool code = false;
    while (i <= len) {
        if (i == len || s[i] == ';') {
            if (code) {
                size_t n = i - start;
                char *stmt = malloc(n + 1);
                memcpy(stmt, s + start, n);
                stmt[n] = '\0';
                bool run = true;
                if (when[0]) {
                    char q[1100];
                    snprintf(q, sizeof q, "SELECT (%s)::boolean", when);
                    PGresult *r = PQexec(c, q);
                    if (PQresultStatus(r) != PGRES_TUPLES_OK)
                        die("ds:when", PQerrorMessage(c));
                    run = PQgetvalue(r, 0, 0)[0] == 't';
                    PQclear(r);
                }
                if (run)
                    exec_or_die(c, stmt);
                free(stmt);
            }
            when[0] = '\0';
            code = false;
            start = ++i;
            continue;
        }
        if (s[i] == '-' && s[i + 1] == '-') {
            size_t e = i;
            while (e < len && s[e] != '\n')
                e++;
            if (!code && !strncmp(s + i, "-- ds:when ", 11))
                snprintf(when, sizeof when, "%.*s", (int)(e - i - 11), s + i + 11);
            i = e;
            if (!code)
                start = i;
            continue;
        }
        if (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
            if (!code)
                start = i + 1;
            i++;
            continue;
        }
        code = true;
        if (s[i] == '\'') {
            i++;
            while (i < len && !(s[i] == '\'' && s[i + 1] != '\''))
                i += s[i] == '\'' ? 2 : 1;
            i++;
        } else if (s[i] == '$') {
            size_t e = i + 1;
            while (e < len && (s[e] == '_' || (s[e] >= 'a' && s[e] <= 'z')))
                e++;
            if (e < len && s[e] == '$') {
                size_t tl = e - i + 1;
                char tag[64];
                snprintf(tag, sizeof tag, "%.*s", (int)tl, s + i);
                const char *end = strstr(s + e + 1, tag);
                i = end ? (size_t)(end - s) + tl : len;
            } else {
                i++;
            }
        } else {
            i++;
        }
    }
}

static void raw_migrate(const char *url, const sql_file *files, int n) {
    PGconn *c = connect_or_die(url);
    exec_or_die(c, "CREATE TABLE IF NOT EXISTS raw_migrations (version bigint "
                   "PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    for (int i = 0; i < n; i++) {
        if (!strncmp(files[i].text, "-- ds:no-transaction", 20)) {
            raw_run_no_tx(c, files[i].text);
            char ins[128];
            snprintf(ins, sizeof ins,
                     "INSERT INTO raw_migrations (version) VALUES (%ld)",
                     files[i].version);
            exec_or_die(c, ins);
            continue;
        }
        exec_or_die(c, "BEGIN");
        exec_or_die(c, files[i].text);
        char ins[128];
        snprintf(ins, sizeof ins, "INSERT INTO raw_migrations (version) VALUES (%ld)",
                 files[i].version);
        exec_or_die(c, ins);
        exec_or_die(c, "COMMIT");
    }
    PQfinish(c);
}

static void lib_migrate(const char *url) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    int applied = 0;
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_migrate_up(pool, NULL, &applied, &err) != DS_OK)
        die("ds_migrate_up", err.message);
    if (applied != DS_SCHEMA_VERSION)
        die("ds_migrate_up", "did not apply every migration");
    ds_pool_close(pool);
    ds_config_free(cfg);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void summarize(int64_t *ns, int n, bench_result *r) {
    qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
    double median = n % 2 ? (double)ns[n / 2]
                          : ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / 2;
    memset(r, 0, sizeof *r);
    r->ops_s = 1e9 / median;
    r->p50_us = median / 1000;
    r->p99_us = (double)ns[n - 1] / 1000; /* few rounds: the slowest */
    r->ops = (uint64_t)n;
}

/* ---- status ------------------------------------------------------------- */

static bool op_lib_status(void *p) {
    ds_pool *pool = p;
    ds_migration_list *list = NULL;
    ds_error err;
    if (ds_migrate_status(pool, NULL, &list, &err) != DS_OK) {
        fprintf(stderr, "status: %s\n", err.message);
        return false;
    }
    bool ok = list->pending == 0;
    ds_migrate_list_free(list);
    return ok;
}

static bool op_raw_status(void *p) {
    PGconn *c = p;
    PGresult *r = PQexec(c, "SELECT version, name, checksum, no_transaction, "
                            "applied_at, duration_ms FROM ds_schema_migrations "
                            "ORDER BY version");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK &&
              PQntuples(r) == DS_SCHEMA_VERSION;
    PQclear(r);
    return ok;
}


/* ---- online: probes while the schema changes ------------------------- */

typedef struct probe {
    const char *url;
    const char *sql;
    const char *name; /* for the line: which probe waited longest */
    volatile int pid; /* its server process, once connected */
    int range;
    volatile int *stop;
    long long ops;
    volatile int *phase; /* 0: before the operation, 1: during it */
    int64_t worst_ns[2];  /* the longest statement of each phase */
    long long errors;
    char error[200];
} probe;

static void *probe_main(void *p) {
    probe *pr = p;
    PGconn *c = connect_or_die(pr->url);
    pr->pid = PQbackendPID(c);
    unsigned seed = (unsigned)(uintptr_t)pr;
    while (!*pr->stop) {
        char arg[24];
        snprintf(arg, sizeof arg, "%d",
                 1 + (int)(rand_r(&seed) % (unsigned)pr->range));
        const char *v[1] = {arg};
        int64_t t0 = bench_now_ns();
        PGresult *r = PQexecParams(c, pr->sql, 1, NULL, v, NULL, NULL, 0);
        int64_t dt = bench_now_ns() - t0;
        if (PQresultStatus(r) != PGRES_TUPLES_OK &&
            PQresultStatus(r) != PGRES_COMMAND_OK && pr->errors++ == 0)
            snprintf(pr->error, sizeof pr->error, "%s", PQerrorMessage(c));
        PQclear(r);
        pr->ops++;
        int ph = *pr->phase;
        if (dt > pr->worst_ns[ph])
            pr->worst_ns[ph] = dt;
        usleep(10000);
    }
    PQfinish(c);
    return NULL;
}

#define NPROBES 11

/* A probe's wait has two parts: the locks the operation holds (what the
 * operation can change) and a loaded machine's slowness. The watcher
 * samples pg_stat_activity every 20 ms for probes waiting on a lock and
 * keeps the longest such wait seen (a statement's time since it started
 * while it waits on a lock: the probes' statements take their locks
 * first), with the lock's relation (or its type: a row lock's
 * "transactionid"). A wait shorter than a sample may be missed. */
typedef struct lock_watch {
    const char *url;
    const probe *probes;
    volatile int *stop;
    double worst_ms;
    char what[80];
} lock_watch;

static void *watch_main(void *p) {
    lock_watch *w = p;
    PGconn *c = connect_or_die(w->url);
    while (!*w->stop) {
        char pids[NPROBES * 12 + 4] = "{";
        size_t k = 1;
        for (int i = 0; i < NPROBES; i++)
            if (w->probes[i].pid)
                k += (size_t)snprintf(pids + k, sizeof pids - k, "%s%d",
                                      k > 1 ? "," : "", w->probes[i].pid);
        snprintf(pids + k, sizeof pids - k, "}");
        const char *v[1] = {pids};
        PGresult *r = PQexecParams(
            c,
            "SELECT extract(epoch FROM clock_timestamp() - a.query_start) "
            "* 1000, coalesce((SELECT coalesce(l.relation::regclass::text, "
            "l.locktype) FROM pg_locks l WHERE l.pid = a.pid AND NOT "
            "l.granted LIMIT 1), 'unknown') FROM pg_stat_activity a WHERE "
            "a.pid = ANY ($1::int[]) AND a.wait_event_type = 'Lock' "
            "ORDER BY 1 DESC LIMIT 1",
            1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            double ms = atof(PQgetvalue(r, 0, 0));
            if (ms > w->worst_ms) {
                w->worst_ms = ms;
                snprintf(w->what, sizeof w->what, "%s", PQgetvalue(r, 0, 1));
            }
        }
        PQclear(r);
        usleep(20000);
    }
    PQfinish(c);
    return NULL;
}

typedef struct probes {
    probe p[NPROBES];
    pthread_t t[NPROBES];
    lock_watch watch;
    pthread_t watcher;
    volatile int stop;
    volatile int phase;
} probes;

/* `owners`: the users who own rows (1..owners); `users`: every user. */
static void probes_start(probes *ps, const char *url, int owners, int users,
                         int convs, int conns) {
    static const char *const sql[NPROBES] = {
        "SELECT id, content FROM memory_facts WHERE user_id = $1 ORDER BY id DESC LIMIT 20",
        "INSERT INTO memory_facts (user_id, content) VALUES ($1, 'probe')",
        "SELECT id, content FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 20",
        "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'user', 'probe')",
        "SELECT id, title FROM conversations WHERE owner_id = $1 ORDER BY updated_at DESC LIMIT 20",
        "UPDATE conversations SET updated_at = now() WHERE id = $1",
        "SELECT count(*) FROM analytics_events WHERE user_id = $1",
        "INSERT INTO analytics_events (user_id, name) VALUES ($1, 'probe')",
        "UPDATE service_connections SET token_expires_at = now() WHERE id = $1",
        "SELECT id, email, status FROM users WHERE id = $1",
        "UPDATE users SET updated_at = now() WHERE id = $1",
    };
    static const char *const names[NPROBES] = {
        "memory_facts_read", "memory_facts_write", "messages_read",
        "messages_write", "conversations_read", "conversations_write",
        "analytics_events_read", "analytics_events_write",
        "service_connections_write", "users_read", "users_write",
    };
    memset(ps, 0, sizeof *ps);
    for (int i = 0; i < NPROBES; i++) {
        ps->p[i].url = url;
        ps->p[i].sql = sql[i];
        ps->p[i].name = names[i];
        ps->p[i].range = (i == 2 || i == 3 || i == 5) ? convs
                         : i == 8                     ? (conns > 0 ? conns : 1)
                         : i >= 9                     ? users
                                                      : owners;
        ps->p[i].stop = &ps->stop;
        ps->p[i].phase = &ps->phase;
        pthread_create(&ps->t[i], NULL, probe_main, &ps->p[i]);
    }
    ps->watch.url = url;
    ps->watch.probes = ps->p;
    ps->watch.stop = &ps->stop;
    snprintf(ps->watch.what, sizeof ps->watch.what, "none");
    pthread_create(&ps->watcher, NULL, watch_main, &ps->watch);
    usleep(300000);
}

/* Stops the probes; the worst wait of any, in ms, which probe it was, and
 * how many of their statements failed (each failure's first message goes
 * to stderr). */
static double probes_stop(probes *ps, long long *errors, const char **who) {
    ps->stop = 1;
    pthread_join(ps->watcher, NULL);
    int64_t worst = 0;
    *errors = 0;
    for (int i = 0; i < NPROBES; i++) {
        pthread_join(ps->t[i], NULL);
        if (ps->p[i].errors)
            fprintf(stderr, "%s: probe \"%s\": %lld error(s), first: %s\n",
                    PROGRAM, ps->p[i].sql, ps->p[i].errors, ps->p[i].error);
        else if (ps->p[i].ops < 2)
            fprintf(stderr, "%s: probe \"%s\" made no progress\n", PROGRAM,
                    ps->p[i].sql);
        *errors += ps->p[i].errors;
        if (ps->p[i].worst_ns[1] > worst) {
            worst = ps->p[i].worst_ns[1];
            *who = ps->p[i].name;
        }
    }
    return (double)worst / 1e6;
}

static ds_pool *pool_on(const char *url) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set(cfg, "vector_backend", "fallback", &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        die("pool", err.message);
    ds_config_free(cfg);
    return pool;
}

/* rows/10 users (at least 1000), the users the probes read and update. */
static int user_count(int rows) {
    return rows / 10 > 1000 ? rows / 10 : 1000;
}

/* user_count(rows) users, of whom 1..1000 own the rows the probes touch;
 * `rows` memory facts, messages and events, rows/10 conversations, and
 * rows/5 events of a month five months ahead, which has no partition
 * (they wait in the default partition). Every row comes from one
 * INSERT ... SELECT over generate_series per table. Works from version 1
 * on. */
static void populate(const char *url, int rows) {
    PGconn *c = connect_or_die(url);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) SELECT 'u' || g || '@example.com' "
             "FROM generate_series(1, %d) g", user_count(rows));
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, content) SELECT 1 + g %% 1000, "
             "'fact ' || g || ' about tea, trains, the weather and ' || md5(g::text) "
             "FROM generate_series(1, %d) g", rows);
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO conversations (owner_id, title) SELECT 1 + g %% 1000, "
             "'c' || g FROM generate_series(1, %d) g", rows / 10);
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO messages (conversation_id, role, content) SELECT "
             "1 + g %% %d, 'user', 'message ' || g FROM generate_series(1, %d) g",
             rows / 10, rows);
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name, occurred_at) SELECT "
             "1 + g %% 1000, 'e', now() - (g %% 1000) * interval '1 second' "
             "FROM generate_series(1, %d) g", rows);
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name, occurred_at) SELECT "
             "1 + g %% 1000, 'future', date_trunc('month', now()) + "
             "interval '5 months 2 days' + g * interval '1 second' "
             "FROM generate_series(1, %d) g", rows / 5);
    exec_or_die(c, sql);
    exec_or_die(c, "VACUUM ANALYZE");
    PQfinish(c);
}

#define TOKEN_K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define TOKEN_K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static void put_hex(PGconn *c, const uint8_t *b, size_t n) {
    static const char hx[] = "0123456789abcdef";
    char buf[4096];
    size_t k = 0;
    buf[k++] = '\\';
    buf[k++] = '\\';
    buf[k++] = 'x';
    for (size_t i = 0; i < n && k + 3 < sizeof buf; i++) {
        buf[k++] = hx[b[i] >> 4];
        buf[k++] = hx[b[i] & 15];
    }
    PQputCopyData(c, buf, (int)k);
}

static uint8_t *seal(ds_crypto *ring, const char *field, int64_t user,
                     const char *scope, const char *text, size_t *len) {
    ds_crypto_context ctx = {sizeof(ds_crypto_context), "service_connections", field, user, scope};
    uint8_t *env = NULL;
    ds_error err = {0};
    if (ds_crypto_encrypt(ring, &ctx, text, strlen(text), &env, len, &err) !=
        DS_OK)
        die("encrypt", err.message);
    return env;
}

/* `n` service connections with both tokens sealed under k1 (what
 * ds_crypto_rotate() re-encrypts), written through one COPY. */
static void populate_connections(const char *url, int n) {
    ds_crypto *k1 = NULL;
    ds_error err = {0};
    if (ds_crypto_open_keys(TOKEN_K1, &k1, &err) != DS_OK)
        die("keys", err.message);
    PGconn *c = connect_or_die(url);
    PGresult *r = PQexec(c, "COPY service_connections (user_id, provider, "
                            "external_account_id, access_token_enc, "
                            "refresh_token_enc, key_id) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN)
        die("copy", PQerrorMessage(c));
    PQclear(r);
    for (int i = 0; i < n; i++) {
        int64_t user = 1 + i % 1000;
        char account[32], scope[64], line[96], text[64];
        snprintf(account, sizeof account, "acct-%d", i);
        snprintf(scope, sizeof scope, "google/%s", account);
        snprintf(line, sizeof line, "%lld\tgoogle\t%s\t", (long long)user,
                 account);
        PQputCopyData(c, line, (int)strlen(line));
        size_t len;
        snprintf(text, sizeof text, "ya29.access-%d", i);
        uint8_t *env = seal(k1, "access_token", user, scope, text, &len);
        put_hex(c, env, len);
        ds_free(env);
        PQputCopyData(c, "\t", 1);
        snprintf(text, sizeof text, "1//refresh-%d", i);
        env = seal(k1, "refresh_token", user, scope, text, &len);
        put_hex(c, env, len);
        ds_free(env);
        PQputCopyData(c, "\tk1\n", 4);
    }
    if (PQputCopyEnd(c, NULL) != 1)
        die("copy", PQerrorMessage(c));
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("copy", PQerrorMessage(c));
    PQclear(r);
    exec_or_die(c, "ANALYZE service_connections");
    PQfinish(c);
    ds_crypto_close(k1);
}

/* 100 more users (after user_count(rows), which no probe uses),
 * soft-deleted 40 days ago, with rows/1000 memory facts and events each: what the retention
 * purge erases. */
static void populate_purgeable(const char *url, int rows) {
    PGconn *c = connect_or_die(url);
    char sql[512];
    exec_or_die(c, "INSERT INTO users (email, deleted_at) SELECT 'gone' || g || "
                   "'@example.com', now() - interval '40 days' FROM "
                   "generate_series(1, 100) g");
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, content) SELECT u.id, "
             "'old fact ' || g FROM users u, generate_series(1, %d) g "
             "WHERE u.deleted_at IS NOT NULL", rows / 1000);
    exec_or_die(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name) SELECT u.id, 'old' "
             "FROM users u, generate_series(1, %d) g WHERE u.deleted_at IS "
             "NOT NULL", rows / 1000);
    exec_or_die(c, sql);
    exec_or_die(c, "VACUUM ANALYZE");
    PQfinish(c);
}

/* ---- baselines: the same change the way one is warned against ---------- */

/* Version v's change as commonly written, for a transaction that makes
 * several of them (hand-written: not the shipped files). */
static const char *const naive_change[] = {
    [2] = /* monthly partitions, the default's rows moved at once */
    "DO $n$ DECLARE m timestamptz; BEGIN "
    "ALTER TABLE analytics_events DETACH PARTITION analytics_events_default; "
    "FOR i IN 0..3 LOOP "
    "m := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
    "+ make_interval(months => i); "
    "EXECUTE format('CREATE TABLE %I PARTITION OF analytics_events FOR VALUES "
    "FROM (%L) TO (%L)', 'analytics_events_n' || i, m, m + interval '1 month'); "
    "EXECUTE format('INSERT INTO analytics_events OVERRIDING SYSTEM VALUE "
    "SELECT * FROM analytics_events_default WHERE occurred_at >= %L AND "
    "occurred_at < %L', m, m + interval '1 month'); "
    "EXECUTE format('DELETE FROM analytics_events_default WHERE occurred_at "
    ">= %L AND occurred_at < %L', m, m + interval '1 month'); "
    "END LOOP; "
    "ALTER TABLE analytics_events ATTACH PARTITION analytics_events_default "
    "DEFAULT; END $n$;",
    [3] = /* the embedding columns, their CHECK and indexes */
    "CREATE TABLE memory_vector_settings (singleton boolean PRIMARY KEY "
    "DEFAULT true CHECK (singleton), embedding_dim integer NOT NULL, backend "
    "text NOT NULL, extension_created boolean NOT NULL DEFAULT false, "
    "updated_at timestamptz NOT NULL DEFAULT now());"
    "ALTER TABLE memory_facts ADD COLUMN embedding bytea, ADD COLUMN "
    "embedding_sketch bytea;"
    "ALTER TABLE memory_facts ADD CONSTRAINT memory_facts_embedding_dim_check "
    "CHECK (octet_length(embedding) = 1536 AND octet_length(embedding_sketch) "
    "= 392 AND (embedding IS NULL) = (embedding_sketch IS NULL));"
    "CREATE INDEX memory_facts_naive_sketch_idx ON memory_facts "
    "(user_id, kind, id) INCLUDE (embedding_sketch);"
    "INSERT INTO memory_vector_settings (embedding_dim, backend) VALUES "
    "(384, 'fallback');"
    "CREATE INDEX memory_facts_naive_fts_idx ON memory_facts USING gin "
    "(to_tsvector('english', content));",
    [4] = /* the users' status kept in step with deleted_at */
    "ALTER TABLE users ADD COLUMN status_before_delete text;"
    "ALTER TABLE users ADD CONSTRAINT users_naive_status_check CHECK (status "
    "IN ('active', 'pending', 'suspended', 'deleted'));",
    [5] = /* the exact search's partial index */
    "CREATE INDEX memory_facts_naive_partial_idx ON memory_facts (user_id, "
    "kind, id) INCLUDE (embedding_sketch) WHERE embedding_sketch IS NULL OR "
    "octet_length(embedding_sketch) <= 2008;",
    [6] = /* the coarse codes' column and its index */
    "ALTER TABLE memory_facts ADD COLUMN embedding_code bytea;"
    "CREATE INDEX memory_facts_naive_code_idx ON memory_facts (user_id, "
    "kind, id) INCLUDE (embedding_code);",
    [7] = /* the sessions' index by user and expiry */
    "CREATE INDEX auth_sessions_naive_expires_idx ON auth_sessions (user_id, "
    "expires_at);",
};
#define NAIVE_LAST 7

/* Runs versions from+1..NAIVE_LAST the naive way in one transaction. */
static void naive_up(const char *url, int from) {
    PGconn *c = connect_or_die(url);
    NAIVE(c, "BEGIN");
    NAIVE(c, "SET LOCAL lock_timeout = '5s'");
    for (int v = from + 1; v <= NAIVE_LAST; v++)
        NAIVE(c, naive_change[v]);
    NAIVE(c, "COMMIT");
out:
    PQfinish(c);
}

/* Partitions for months first..last (from this month) the way
 * ds_analytics_ensure_partitions() used to: the default detached, the
 * month's rows moved, re-attached, in one transaction. */
static void naive_maintain(const char *url, int first, int last) {
    char sql[2048];
    snprintf(sql, sizeof sql,
             "DO $n$ DECLARE m timestamptz; BEGIN "
             "ALTER TABLE analytics_events DETACH PARTITION "
             "analytics_events_default; "
             "FOR i IN %d..%d LOOP "
             "m := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE "
             "'UTC' + make_interval(months => i); "
             "CONTINUE WHEN to_regclass('analytics_events_' || "
             "to_char(m AT TIME ZONE 'UTC', 'YYYY_MM')) IS NOT NULL; "
             "EXECUTE format('CREATE TABLE %%I PARTITION OF analytics_events "
             "FOR VALUES FROM (%%L) TO (%%L)', 'analytics_events_' || "
             "to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'), m, m + interval "
             "'1 month'); "
             "EXECUTE format('INSERT INTO analytics_events OVERRIDING SYSTEM "
             "VALUE SELECT * FROM analytics_events_default WHERE occurred_at "
             ">= %%L AND occurred_at < %%L', m, m + interval '1 month'); "
             "EXECUTE format('DELETE FROM analytics_events_default WHERE "
             "occurred_at >= %%L AND occurred_at < %%L', m, m + interval "
             "'1 month'); "
             "END LOOP; "
             "ALTER TABLE analytics_events ATTACH PARTITION "
             "analytics_events_default DEFAULT; END $n$",
             first, last);
    PGconn *c = connect_or_die(url);
    NAIVE(c, "BEGIN");
    NAIVE(c, "SET LOCAL lock_timeout = '5s'");
    NAIVE(c, sql);
    NAIVE(c, "COMMIT");
out:
    PQfinish(c);
}

/* The pgvector conversion in one transaction: the new column, every row
 * written under the ALTER's lock. (Every bench embedding is the all-ones
 * vector, so the value is written without decoding the bytes.) */
static void naive_pgvector(const char *url) {
    PGconn *c = connect_or_die(url);
    NAIVE(c, "BEGIN");
    NAIVE(c, "SET LOCAL lock_timeout = '5s'");
    NAIVE(c, "CREATE EXTENSION IF NOT EXISTS vector");
    NAIVE(c, "ALTER TABLE memory_facts ADD COLUMN embedding_v vector(384)");
    NAIVE(c, "UPDATE memory_facts SET embedding_v = array_fill(1.0::real, "
                   "ARRAY[384])::vector WHERE embedding IS NOT NULL");
    NAIVE(c, "COMMIT");
out:
    PQfinish(c);
}

/* Every token re-sealed under k2 in one transaction, rows locked first. */
static void naive_rotate(const char *url) {
    ds_crypto *ring = NULL;
    ds_error err = {0};
    if (ds_crypto_open_keys(TOKEN_K2 "," TOKEN_K1, &ring, &err) != DS_OK)
        die("keys", err.message);
    PGconn *c = connect_or_die(url);
    NAIVE(c, "BEGIN");
    PGresult *rows = PQexecParams(
        c,
        "SELECT id, user_id, provider || '/' || external_account_id, "
        "access_token_enc, refresh_token_enc FROM service_connections WHERE "
        "key_id <> 'k2' ORDER BY id FOR UPDATE",
        0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(rows) != PGRES_TUPLES_OK)
        die("rotate", PQerrorMessage(c));
    PGresult *p = PQprepare(c, "upd",
                            "UPDATE service_connections SET access_token_enc "
                            "= $2, refresh_token_enc = $3, key_id = 'k2' "
                            "WHERE id = $1",
                            3, NULL);
    PQclear(p);
    for (int i = 0; i < PQntuples(rows); i++) {
        uint64_t be_id, be_user;
        memcpy(&be_id, PQgetvalue(rows, i, 0), 8);
        memcpy(&be_user, PQgetvalue(rows, i, 1), 8);
        int64_t user = (int64_t)__builtin_bswap64(be_user);
        const char *scope = PQgetvalue(rows, i, 2);
        uint8_t *env[2];
        size_t len[2];
        for (int f = 0; f < 2; f++) {
            ds_crypto_context ctx = {sizeof(ds_crypto_context), "service_connections",
                                     f ? "refresh_token" : "access_token",
                                     user, scope};
            ds_crypto_secret *plain = NULL;
            if (ds_crypto_decrypt(ring, &ctx,
                                  (const uint8_t *)PQgetvalue(rows, i, 3 + f),
                                  (size_t)PQgetlength(rows, i, 3 + f), &plain,
                                  &err) != DS_OK ||
                ds_crypto_encrypt(ring, &ctx, ds_crypto_secret_data(plain),
                                  ds_crypto_secret_len(plain), &env[f], &len[f],
                                  &err) != DS_OK)
                die("rotate", err.message);
            ds_crypto_secret_free(plain);
        }
        const char *v[3] = {PQgetvalue(rows, i, 0), (const char *)env[0],
                            (const char *)env[1]};
        int l[3] = {8, (int)len[0], (int)len[1]};
        int fmt[3] = {1, 1, 1};
        PGresult *u = PQexecPrepared(c, "upd", 3, v, l, fmt, 0);
        if (PQresultStatus(u) != PGRES_COMMAND_OK)
            die("rotate", PQerrorMessage(c));
        PQclear(u);
        ds_free(env[0]);
        ds_free(env[1]);
        (void)be_id;
    }
    PQclear(rows);
    NAIVE(c, "COMMIT");
out:
    PQfinish(c);
    ds_crypto_close(ring);
}

/* Every soft-deleted user and their rows, in one transaction. */
static void naive_purge(const char *url) {
    PGconn *c = connect_or_die(url);
    NAIVE(c, "BEGIN");
    NAIVE(c, "DELETE FROM analytics_events WHERE user_id IN (SELECT id "
                   "FROM users WHERE deleted_at IS NOT NULL)");
    NAIVE(c, "DELETE FROM users WHERE deleted_at IS NOT NULL");
    NAIVE(c, "COMMIT");
out:
    PQfinish(c);
}

/* ---- databases ----------------------------------------------------------- */

static char *db_name(const char *tag, int rows) {
    char *name = malloc(96);
    snprintf(name, 96, "bench_online_%s_%d_%d", tag, rows, (int)getpid());
    return name;
}

static char *fresh_db(PGconn *admin, const char *url, const char *tag, int rows) {
    char *name = db_name(tag, rows), sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_or_die(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0", name);
    exec_or_die(admin, sql);
    char *out = url_with_db(url, name);
    free(name);
    return out;
}

static const char *db_of(const char *dburl, char name[128]) {
    const char *slash = strrchr(dburl, '/');
    snprintf(name, 128, "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
    return name;
}

/* A copy of `src` (nobody may be connected to it), file by file. */
static char *clone_db(PGconn *admin, const char *url, const char *src,
                      const char *tag, int rows) {
    char *name = db_name(tag, rows), from[128], sql[400];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_or_die(admin, sql);
    snprintf(sql, sizeof sql,
             "CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY", name,
             db_of(src, from));
    exec_or_die(admin, sql);
    char *out = url_with_db(url, name);
    free(name);
    return out;
}

static void drop_db(PGconn *admin, char *dburl) {
    char name[128], sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)",
             db_of(dburl, name));
    exec_or_die(admin, sql);
    free(dburl);
}

/* ---- one operation: ours on `ours`, the baseline on a copy ------------- */

typedef struct measured {
    double ms, wait_ms;
    long long errors;
    const char *worst_probe;
    double lock_wait_ms; /* the longest wait on a lock seen */
    double idle_wait_ms; /* the probes' worst before the operation */
    char lock_on[80];    /* what that lock was on */
} measured;

/* How long the probes run before each operation starts. */
#define CONTROL_MS 5000


typedef struct op_ctx {
    int rows;
    int from;        /* up: the version migrated from */
    int first, last; /* maintain: the months */
    int64_t count;   /* what the operation did, for the line */
} op_ctx;

typedef void (*op_fn)(const char *url, op_ctx *ctx);

static measured timed(const char *url, int convs, int conns, op_fn fn,
                      op_ctx *ctx) {
    probes ps;
    probes_start(&ps, url, 1000, user_count(ctx->rows), convs, conns);
    /* The probes alone first: their worst statement with nothing else
     * running on this database is the floor the machine's load sets. */
    usleep(CONTROL_MS * 1000);
    ps.phase = 1;
    int64_t t0 = bench_now_ns();
    fn(url, ctx);
    measured m = {(double)(bench_now_ns() - t0) / 1e6, 0, 0, "none", 0, 0, ""};
    m.wait_ms = probes_stop(&ps, &m.errors, &m.worst_probe);
    for (int i = 0; i < NPROBES; i++)
        if ((double)ps.p[i].worst_ns[0] / 1e6 > m.idle_wait_ms)
            m.idle_wait_ms = (double)ps.p[i].worst_ns[0] / 1e6;
    m.lock_wait_ms = ps.watch.worst_ms;
    snprintf(m.lock_on, sizeof m.lock_on, "%s", ps.watch.what);
    return m;
}

/* --no-baseline: ours only (a quicker run; the line says baseline=none). */
static bool with_baseline = true;

/* Ours on `db` (left in the state the operation leaves), the baseline on
 * a copy of `db` made before; one BENCH line. */
static void compare(PGconn *admin, const char *url, const char *db,
                    const char *case_name, const char *baseline_kind,
                    op_fn ours, op_fn base, op_ctx *ctx, const char *extra) {
    int convs = ctx->rows / 10, conns = ctx->rows / 10;
    if (!with_baseline)
        base = NULL;
    char *twin = base ? clone_db(admin, url, db, "twin", ctx->rows) : NULL;
    measured o = timed(db, convs, conns, ours, ctx);
    measured b = {0, 0, 0, "none", 0, 0, ""};
    baseline_failed[0] = '\0';
    if (twin) {
        op_ctx bctx = *ctx;
        b = timed(twin, convs, conns, base, &bctx);
        drop_db(admin, twin);
    }
    printf("BENCH %s %s threads=%d rows=%d %s duration_ms=%.0f "
           "worst_wait_ms=%.1f worst_probe=%s lock_wait_ms=%.0f lock_on=%s "
           "idle_worst_ms=%.1f probe_errors=%lld",
           PROGRAM, case_name, NPROBES, ctx->rows, extra, o.ms, o.wait_ms,
           o.worst_probe, o.lock_wait_ms, o.lock_on, o.idle_wait_ms, o.errors);
    if (base)
        printf(" baseline=%s baseline_duration_ms=%.0f "
               "baseline_worst_wait_ms=%.1f baseline_worst_probe=%s "
               "baseline_lock_wait_ms=%.0f baseline_lock_on=%s "
               "baseline_probe_errors=%lld%s%s",
               baseline_kind, b.ms, b.wait_ms, b.worst_probe, b.lock_wait_ms,
               b.lock_on, b.errors,
               baseline_failed[0] ? " baseline_failed=" : "", baseline_failed);
    else
        printf(" baseline=none");
    printf(" goal_wait_ms=1000\n");
    fflush(stdout);
}

static void op_up(const char *url, op_ctx *ctx) {
    ds_pool *pool = pool_on(url);
    ds_error err = {0};
    int n = 0;
    if (ds_migrate_up(pool, NULL, &n, &err) != DS_OK)
        die("up", err.message);
    ctx->count = n;
    ds_pool_close(pool);
}

static void op_naive_up(const char *url, op_ctx *ctx) {
    naive_up(url, ctx->from);
}

static void op_maintain(const char *url, op_ctx *ctx) {
    ds_pool *pool = pool_on(url);
    ds_error err = {0};
    int created = 0;
    if (ds_migrate_maintain(pool, NULL, ctx->last, &created, &err) != DS_OK)
        die("maintain", err.message);
    ctx->count = created;
    ds_pool_close(pool);
}

static void op_naive_maintain(const char *url, op_ctx *ctx) {
    naive_maintain(url, ctx->first, ctx->last);
}

static void op_pgvector(const char *url, op_ctx *ctx) {
    ds_pool *pool = pool_on(url);
    ds_error err = {0};
    if (ds_memory_upgrade_to_pgvector(pool, NULL, &err) != DS_OK)
        die("upgrade_to_pgvector", err.message);
    (void)ctx;
    ds_pool_close(pool);
}

static void op_naive_pgvector(const char *url, op_ctx *ctx) {
    (void)ctx;
    naive_pgvector(url);
}

static void op_rotate(const char *url, op_ctx *ctx) {
    ds_pool *pool = pool_on(url);
    ds_crypto *ring = NULL;
    ds_error err = {0};
    ds_crypto_rotate_stats stats = {.size = sizeof(ds_crypto_rotate_stats)};
    if (ds_crypto_open_keys(TOKEN_K2 "," TOKEN_K1, &ring, &err) != DS_OK ||
        ds_crypto_rotate(ring, pool, NULL, &stats, &err) != DS_OK)
        die("rotate", err.message);
    if (stats.remaining != 0)
        die("rotate", "rows left under the old key");
    ctx->count = stats.rotated;
    ds_crypto_close(ring);
    ds_pool_close(pool);
}

static void op_naive_rotate(const char *url, op_ctx *ctx) {
    (void)ctx;
    naive_rotate(url);
}

static void op_purge(const char *url, op_ctx *ctx) {
    ds_pool *pool = pool_on(url);
    ds_error err = {0};
    bool more = true;
    ctx->count = 0;
    for (int calls = 0; more && calls < 100000; calls++) {
        int64_t purged = 0;
        if (ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, NULL, &purged, &more,
                                  &err) != DS_OK)
            die("purge", err.message);
        ctx->count += purged;
    }
    ds_pool_close(pool);
}

static void op_naive_purge(const char *url, op_ctx *ctx) {
    (void)ctx;
    naive_purge(url);
}

static void migrate_to(const char *url, int64_t version) {
    ds_pool *pool = pool_on(url);
    ds_error err = {0};
    if (ds_migrate_to(pool, NULL, version, NULL, &err) != DS_OK)
        die("migrate", err.message);
    ds_pool_close(pool);
}

static bool has_pgvector(const char *url) {
    PGconn *q = connect_or_die(url);
    PGresult *av = PQexec(q, "SELECT count(*) FROM pg_available_extensions "
                             "WHERE name = 'vector'");
    bool have = PQresultStatus(av) == PGRES_TUPLES_OK &&
                atoi(PQgetvalue(av, 0, 0)) > 0;
    PQclear(av);
    PQfinish(q);
    return have;
}

/* The cases to run: --op, else BENCH_ONLINE_CASES, a comma-separated
 * list of "empty" (migrate_empty and status_uptodate), "up" (up from every
 * earlier version), "up_N" (up from version N only), "maintain_from_1",
 * "maintain_default", "upgrade_to_pgvector", "rotate", "purge"; neither:
 * all. */
static const char *cases_list;

static bool wanted(const char *name) {
    const char *list = cases_list;
    if (!list || !*list)
        return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && !strncmp(p, name, n))
            return true;
        p += k + (p[k] == ',');
    }
    return false;
}

static bool wanted_up(int from) {
    char name[24];
    snprintf(name, sizeof name, "up_%d", from);
    return wanted("up") || wanted(name);
}

static bool any_up_wanted(void) {
    for (int from = 1; from < DS_SCHEMA_VERSION; from++)
        if (wanted_up(from))
            return true;
    return false;
}

/* Every name the list gives is a case this program knows. */
static bool cases_valid(const char *list, char *bad, size_t cap) {
    static const char *const known[] = {
        "empty", "up", "maintain_from_1", "maintain_default",
        "upgrade_to_pgvector", "rotate", "purge"};
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof *known && !ok; i++)
            ok = strlen(known[i]) == k && !strncmp(p, known[i], k);
        if (!ok && k > 3 && !strncmp(p, "up_", 3)) {
            char *end = NULL;
            long v = strtol(p + 3, &end, 10);
            ok = end == p + k && v >= 1 && v < DS_SCHEMA_VERSION;
        }
        if (!ok) {
            snprintf(bad, cap, "%.*s", (int)k, p);
            return false;
        }
        p += k + (p[k] == ',');
    }
    return true;
}

static void bench_online(PGconn *admin, const char *url, int rows) {
    char extra[160];
    op_ctx ctx = {rows, 0, 0, 0, 0};

    /* up from every earlier version: one database populated at version 1
     * (every event in the default partition, one in a hundred users
     * without rows soft-deleted a day ago) moves up to each version asked
     * for in turn; each step is measured on a copy. */
    bool chain_cases = any_up_wanted() || wanted("maintain_from_1");
    char *chain = chain_cases ? fresh_db(admin, url, "chain", rows) : NULL;
    if (chain_cases) {
        migrate_to(chain, 1);
        populate(chain, rows);
        PGconn *c = connect_or_die(chain);
        exec_or_die(c, "UPDATE users SET deleted_at = now() - interval "
                       "'1 day' WHERE id > 1000 AND id % 100 = 0");
        exec_or_die(c, "VACUUM ANALYZE users");
        PQfinish(c);
    }
    for (int from = 1; from < DS_SCHEMA_VERSION; from++) {
        if (!wanted_up(from))
            continue;
        if (from > 1)
            migrate_to(chain, from);
        char *ours = clone_db(admin, url, chain, "up", rows);
        ctx.from = from;
        char name[32];
        snprintf(name, sizeof name, "up_%d_to_latest", from);
        snprintf(extra, sizeof extra, "from=%d to=%d baseline_to=%d", from,
                 (int)DS_SCHEMA_VERSION, from < NAIVE_LAST ? NAIVE_LAST : from);
        compare(admin, url, ours, name, "naive_one_transaction", op_up,
                from < NAIVE_LAST ? op_naive_up : NULL, &ctx, extra);
        drop_db(admin, ours);
    }
    /* maintain where the default partition holds every event: this
     * month's `rows` and rows/5 of a month ahead move out */
    ctx.last = 6;
    if (wanted("maintain_from_1")) {
        migrate_to(chain, DS_SCHEMA_VERSION);
        ctx.first = 0;
        snprintf(extra, sizeof extra, "in_default=%d months=7",
                 rows + rows / 5);
        compare(admin, url, chain, "maintain_from_1", "naive_one_transaction",
                op_maintain, op_naive_maintain, &ctx, extra);
    }
    if (chain)
        drop_db(admin, chain);

    if (!wanted("maintain_default") && !wanted("upgrade_to_pgvector") &&
        !wanted("rotate") && !wanted("purge"))
        return;
    /* partitions maintained ahead, except one month's rows/5 rows. The
     * schema is the latest before the rows go in (migrating populated
     * tables is the up cases' job, and would only slow this set-up). */
    char *db = fresh_db(admin, url, "main", rows);
    migrate_to(db, DS_SCHEMA_VERSION);
    populate(db, rows);
    populate_connections(db, rows / 10);
    populate_purgeable(db, rows);
    ctx.first = 4;
    snprintf(extra, sizeof extra, "in_default=%d", rows / 5);
    if (wanted("maintain_default"))
        compare(admin, url, db, "maintain_default", "naive_one_transaction",
                op_maintain, op_naive_maintain, &ctx, extra);
    else
        op_maintain(db, &ctx);

    if (!wanted("upgrade_to_pgvector")) {
        /* not asked for */
    } else if (has_pgvector(db)) {
        PGconn *q = connect_or_die(db);
        exec_or_die(q, "UPDATE memory_facts SET embedding = "
                       "decode(repeat('0000803f', 384), 'hex'), "
                       "embedding_sketch = decode(repeat('00', 392), 'hex') "
                       "WHERE id % 3 <> 0");
        exec_or_die(q, "VACUUM ANALYZE memory_facts");
        PQfinish(q);
        snprintf(extra, sizeof extra, "embeddings=%d", rows - rows / 3);
        compare(admin, url, db, "upgrade_to_pgvector", "naive_one_transaction",
                op_pgvector, op_naive_pgvector, &ctx, extra);
    } else {
        fprintf(stderr, "%s: upgrade_to_pgvector skipped: the server has no "
                        "pgvector extension\n", PROGRAM);
    }
    snprintf(extra, sizeof extra, "tokens=%d", rows / 10);
    if (wanted("rotate"))
        compare(admin, url, db, "rotate", "naive_one_transaction", op_rotate,
                op_naive_rotate, &ctx, extra);
    snprintf(extra, sizeof extra, "users=100 rows_each=%d", 2 * (rows / 1000));
    if (wanted("purge"))
        compare(admin, url, db, "purge", "naive_one_transaction", op_purge,
                op_naive_purge, &ctx, extra);
    drop_db(admin, db);
}

static void usage(FILE *to) {
    fprintf(to,
            "usage: %s [--op CASE[,CASE...]] [--rows N[,N...]] [--no-baseline]\n"
            "  CASE: empty, up, up_N (from version N), maintain_from_1,\n"
            "        maintain_default, upgrade_to_pgvector, rotate, purge\n"
            "        (default: BENCH_ONLINE_CASES, else all)\n"
            "  N:    rows per table, 1000 to 100000000 (default:\n"
            "        BENCH_ONLINE_ROWS, else 100000)\n"
            "  --no-baseline: skip the naive one-transaction baseline\n",
            PROGRAM);
}

/* migrate_empty and status_uptodate. */
static void bench_empty(PGconn *admin, const char *url, double secs,
                        const sql_file *files, int nfiles) {
    /* migrate_empty: databases made up front, so only migrating is timed. */
    int rounds = (int)(secs / 2);
    if (rounds < 3)
        rounds = 3;
    if (rounds > 15)
        rounds = 15;
    char **dbs = calloc((size_t)rounds * 2, sizeof *dbs);
    for (int i = 0; i < rounds * 2; i++) {
        char name[64], sql[160];
        snprintf(name, sizeof name, "bench_migrate_%d_%d", (int)getpid(), i);
        snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0", name);
        exec_or_die(admin, sql);
        dbs[i] = url_with_db(url, name);
    }
    int64_t *ours = calloc((size_t)rounds, sizeof *ours);
    int64_t *base = calloc((size_t)rounds, sizeof *base);
    for (int r = 0; r < rounds; r++) {
        int64_t t0 = bench_now_ns();
        lib_migrate(dbs[2 * r]);
        int64_t t1 = bench_now_ns();
        raw_migrate(dbs[2 * r + 1], files, nfiles);
        int64_t t2 = bench_now_ns();
        ours[r] = t1 - t0;
        base[r] = t2 - t1;
    }
    bench_result ro, rb;
    summarize(ours, rounds, &ro);
    summarize(base, rounds, &rb);
    char extra[128];
    snprintf(extra, sizeof extra, "ms=%.1f baseline_ms=%.1f migrations=%d target_ms=1000",
             ro.p50_us / 1000, rb.p50_us / 1000, nfiles);
    bench_print(PROGRAM, "migrate_empty", 1, &ro, &rb, extra);

    /* status_uptodate on the first migrated database. */
    ds_pool *pool = NULL;
    ds_error err = {0};
    if (ds_pool_open_url(dbs[0], &pool, &err) != DS_OK)
        die("pool", err.message);
    PGconn *raw = connect_or_die(dbs[0]);
    void *pctx[1] = {pool}, *rctx[1] = {raw};
    int status_rounds = 5;
    double side = secs / (2.0 * status_rounds);
    bench_result so, sb;
    bench_ab(status_rounds, side, 1, op_lib_status, pctx, 1, op_raw_status,
             rctx, &so, &sb);
    if (so.failed || sb.failed)
        die("status", "an operation failed");
    snprintf(extra, sizeof extra, "ms=%.3f target_ms=20", so.p50_us / 1000);
    bench_print(PROGRAM, "status_uptodate", 1, &so, &sb, extra);
    PQfinish(raw);
    ds_pool_close(pool);

    for (int i = 0; i < rounds * 2; i++) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "DROP DATABASE IF EXISTS bench_migrate_%d_%d WITH (FORCE)",
                 (int)getpid(), i);
        exec_or_die(admin, sql);
        free(dbs[i]);
    }
    free(dbs);
    free(ours);
    free(base);
}

int main(int argc, char **argv) {
    const char *op_arg = NULL, *rows_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--op") && i + 1 < argc)
            op_arg = argv[++i];
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows_arg = argv[++i];
        else if (!strcmp(argv[i], "--no-baseline"))
            with_baseline = false;
        else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    cases_list = op_arg ? op_arg : getenv("BENCH_ONLINE_CASES");
    char bad[64];
    if (cases_list && !cases_valid(cases_list, bad, sizeof bad)) {
        fprintf(stderr, "%s: unknown case \"%s\"\n", PROGRAM, bad);
        usage(stderr);
        return 2;
    }
    const char *url = bench_env("DATABASE_URL");
    const char *root = getenv("DS_PROJECT_ROOT");
    double secs = bench_seconds(15);
    char sql_dir[1024];
    snprintf(sql_dir, sizeof sql_dir, "%s/sql", root && *root ? root : ".");
    sql_file files[64];
    int nfiles = load_up_files(sql_dir, files, 64);
    if (nfiles != DS_SCHEMA_VERSION)
        die(sql_dir, "run from the source tree (or set DS_PROJECT_ROOT): the "
                     "baseline applies sql/*.up.sql");

    PGconn *admin = connect_or_die(url);
    /* An --op list runs migrate_empty and status_uptodate only when it
     * names "empty"; BENCH_ONLINE_CASES picks among the online cases. */
    if (op_arg ? wanted("empty") : true)
        bench_empty(admin, url, secs, files, nfiles);
    const char *tiers = rows_arg ? rows_arg : getenv("BENCH_ONLINE_ROWS");
    char list[256];
    snprintf(list, sizeof list, "%s", tiers && *tiers ? tiers : "100000");
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        char *end = NULL;
        long rows = strtol(tok, &end, 10);
        if (*end || rows < 1000 || rows > 100000000)
            die("rows", "each value must be 1000 to 100000000");
        bench_online(admin, url, (int)rows);
    }
    PQfinish(admin);
    for (int i = 0; i < nfiles; i++)
        free(files[i].text);
    return 0;
}
