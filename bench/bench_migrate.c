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
 * Each migrate_empty round uses two fresh databases (made before timing,
 * dropped at the end); rounds alternate ours and the baseline.
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define PROGRAM "bench_migrate"

static void die(const char *what, const char *msg) {
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

static PGconn *connect_or_die(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    return c;
}

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

static void raw_migrate(const char *url, const sql_file *files, int n) {
    PGconn *c = connect_or_die(url);
    exec_or_die(c, "CREATE TABLE IF NOT EXISTS raw_migrations (version bigint "
                   "PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    for (int i = 0; i < n; i++) {
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
    ds_migration_list_free(list);
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

int main(void) {
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

    /* migrate_empty: databases made up front, so only migrating is timed. */
    int rounds = (int)(secs / 2);
    if (rounds < 3)
        rounds = 3;
    if (rounds > 15)
        rounds = 15;
    PGconn *admin = connect_or_die(url);
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
    PQfinish(admin);
    free(dbs);
    free(ours);
    free(base);
    for (int i = 0; i < nfiles; i++)
        free(files[i].text);
    return 0;
}
