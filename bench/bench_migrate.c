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
 *   up_2_to_latest   a database at version 2 holding ROWS memory facts,
 *                    messages and events (ROWS/10 conversations) goes to
 *                    the latest version while 8 probes read and write
 *                    memory_facts, messages, conversations and
 *                    analytics_events: the duration and the probes' worst
 *                    wait (goal: at most 1 s), against the same schema
 *                    change written the plain way (ADD COLUMN, CHECK and
 *                    CREATE INDEX in one transaction) on a twin database
 *   maintain_default ds_migrate_maintain() creating three months, one of
 *                    them with ROWS/5 rows waiting in the default
 *                    partition, under the same probes
 *   upgrade_to_pgvector  ds_memory_upgrade_to_pgvector() with two thirds
 *                    of the ROWS facts holding an embedding (384 dimensions),
 *                    under the same probes (skipped without pgvector)
 *
 * ROWS: each value of BENCH_ONLINE_ROWS (default 100000; the production
 * tier is BENCH_ONLINE_ROWS=100000,1000000, several minutes).
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


/* ---- online: probes while the schema changes ------------------------- */

typedef struct probe {
    const char *url;
    const char *sql;
    int range;
    volatile int *stop;
    long long ops;
    int64_t worst_ns;
    bool failed;
} probe;

static void *probe_main(void *p) {
    probe *pr = p;
    PGconn *c = connect_or_die(pr->url);
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
            PQresultStatus(r) != PGRES_COMMAND_OK)
            pr->failed = true;
        PQclear(r);
        pr->ops++;
        if (dt > pr->worst_ns)
            pr->worst_ns = dt;
        usleep(10000);
    }
    PQfinish(c);
    return NULL;
}

#define NPROBES 8

typedef struct probes {
    probe p[NPROBES];
    pthread_t t[NPROBES];
    volatile int stop;
} probes;

static void probes_start(probes *ps, const char *url, int users, int convs) {
    static const char *const sql[NPROBES] = {
        "SELECT id, content FROM memory_facts WHERE user_id = $1 ORDER BY id DESC LIMIT 20",
        "INSERT INTO memory_facts (user_id, content) VALUES ($1, 'probe')",
        "SELECT id, content FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 20",
        "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'user', 'probe')",
        "SELECT id, title FROM conversations WHERE owner_id = $1 ORDER BY updated_at DESC LIMIT 20",
        "UPDATE conversations SET updated_at = now() WHERE id = $1",
        "SELECT count(*) FROM analytics_events WHERE user_id = $1",
        "INSERT INTO analytics_events (user_id, name) VALUES ($1, 'probe')",
    };
    memset(ps, 0, sizeof *ps);
    for (int i = 0; i < NPROBES; i++) {
        ps->p[i].url = url;
        ps->p[i].sql = sql[i];
        ps->p[i].range = (i == 2 || i == 3 || i == 5) ? convs : users;
        ps->p[i].stop = &ps->stop;
        pthread_create(&ps->t[i], NULL, probe_main, &ps->p[i]);
    }
    usleep(300000);
}

/* Stops the probes; the worst wait of any, in ms. */
static double probes_stop(probes *ps) {
    ps->stop = 1;
    int64_t worst = 0;
    for (int i = 0; i < NPROBES; i++) {
        pthread_join(ps->t[i], NULL);
        if (ps->p[i].failed || ps->p[i].ops < 2)
            die("probe", "a probe failed or made no progress");
        if (ps->p[i].worst_ns > worst)
            worst = ps->p[i].worst_ns;
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

/* A database at version 2 with `rows` rows per big table. */
static void populate(const char *url, int rows) {
    PGconn *c = connect_or_die(url);
    char sql[1024];
    exec_or_die(c, "INSERT INTO users (email) SELECT 'u' || g || '@example.com' "
                   "FROM generate_series(1, 1000) g");
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

/* The baseline: the embedding schema change as it is commonly written,
 * one transaction (what 0003 used to do). */
static const char blocking_upgrade[] =
    "BEGIN;"
    "SET LOCAL lock_timeout = '5s';"
    "CREATE TABLE memory_vector_settings (singleton boolean PRIMARY KEY "
    "DEFAULT true CHECK (singleton), embedding_dim integer NOT NULL, backend "
    "text NOT NULL, extension_created boolean NOT NULL DEFAULT false, "
    "updated_at timestamptz NOT NULL DEFAULT now());"
    "ALTER TABLE memory_facts ADD COLUMN embedding bytea, ADD COLUMN "
    "embedding_sketch bytea;"
    "ALTER TABLE memory_facts ADD CONSTRAINT memory_facts_embedding_dim_check "
    "CHECK (octet_length(embedding) = 1536 AND octet_length(embedding_sketch) "
    "= 392 AND (embedding IS NULL) = (embedding_sketch IS NULL));"
    "CREATE INDEX memory_facts_embedding_sketch_idx ON memory_facts "
    "(user_id, kind, id) INCLUDE (embedding_sketch);"
    "INSERT INTO memory_vector_settings (embedding_dim, backend) VALUES (384, 'fallback');"
    "CREATE INDEX memory_facts_content_fts_idx ON memory_facts USING gin "
    "(to_tsvector('english', content));"
    "COMMIT;";

static char *fresh_db(PGconn *admin, const char *url, const char *tag, int rows) {
    char name[80], sql[200];
    snprintf(name, sizeof name, "bench_online_%s_%d_%d", tag, rows, (int)getpid());
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_or_die(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE template0", name);
    exec_or_die(admin, sql);
    return url_with_db(url, name);
}

static void drop_db(PGconn *admin, const char *dburl) {
    const char *slash = strrchr(dburl, '/');
    char name[128], sql[200];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_or_die(admin, sql);
}

static void bench_online(PGconn *admin, const char *url, int rows) {
    ds_error err = {0};
    char *ours = fresh_db(admin, url, "lib", rows);
    char *base = fresh_db(admin, url, "raw", rows);
    ds_pool *pool = pool_on(ours);
    if (ds_migrate_to(pool, NULL, 2, NULL, &err) != DS_OK)
        die("to 2", err.message);
    ds_pool *bpool = pool_on(base);
    if (ds_migrate_to(bpool, NULL, 2, NULL, &err) != DS_OK)
        die("to 2", err.message);
    ds_pool_close(bpool);
    populate(ours, rows);
    populate(base, rows);

    probes ps;
    probes_start(&ps, ours, 1000, rows / 10);
    int64_t t0 = bench_now_ns();
    if (ds_migrate_up(pool, NULL, NULL, &err) != DS_OK)
        die("up", err.message);
    double up_ms = (double)(bench_now_ns() - t0) / 1e6;
    double up_wait = probes_stop(&ps);

    probes_start(&ps, base, 1000, rows / 10);
    PGconn *c = connect_or_die(base);
    t0 = bench_now_ns();
    exec_or_die(c, blocking_upgrade);
    double base_ms = (double)(bench_now_ns() - t0) / 1e6;
    PQfinish(c);
    double base_wait = probes_stop(&ps);
    printf("BENCH %s up_2_to_latest threads=8 rows=%d duration_ms=%.0f "
           "worst_wait_ms=%.1f baseline_duration_ms=%.0f "
           "baseline_worst_wait_ms=%.1f goal_wait_ms=1000\n",
           PROGRAM, rows, up_ms, up_wait, base_ms, base_wait);

    probes_start(&ps, ours, 1000, rows / 10);
    int created = 0;
    t0 = bench_now_ns();
    if (ds_migrate_maintain(pool, NULL, 6, &created, &err) != DS_OK)
        die("maintain", err.message);
    double m_ms = (double)(bench_now_ns() - t0) / 1e6;
    double m_wait = probes_stop(&ps);
    printf("BENCH %s maintain_default threads=8 rows=%d moved=%d created=%d "
           "duration_ms=%.0f worst_wait_ms=%.1f goal_wait_ms=1000\n",
           PROGRAM, rows, rows / 5, created, m_ms, m_wait);
    fflush(stdout);

    /* upgrade_to_pgvector: two thirds of the facts get an embedding */
    PGconn *q = connect_or_die(ours);
    PGresult *av = PQexec(q, "SELECT count(*) FROM pg_available_extensions "
                             "WHERE name = 'vector'");
    bool have_pgvector = PQresultStatus(av) == PGRES_TUPLES_OK &&
                         atoi(PQgetvalue(av, 0, 0)) > 0;
    PQclear(av);
    if (have_pgvector) {
        exec_or_die(q, "UPDATE memory_facts SET embedding = "
                       "decode(repeat('0000803f', 384), 'hex'), "
                       "embedding_sketch = decode(repeat('00', 392), 'hex') "
                       "WHERE id % 3 <> 0");
        exec_or_die(q, "VACUUM ANALYZE memory_facts");
        probes_start(&ps, ours, 1000, rows / 10);
        t0 = bench_now_ns();
        if (ds_memory_upgrade_to_pgvector(pool, &err) != DS_OK)
            die("upgrade_to_pgvector", err.message);
        double u_ms = (double)(bench_now_ns() - t0) / 1e6;
        double u_wait = probes_stop(&ps);
        printf("BENCH %s upgrade_to_pgvector threads=8 rows=%d "
               "embeddings=%d duration_ms=%.0f worst_wait_ms=%.1f "
               "goal_wait_ms=1000\n",
               PROGRAM, rows, rows - rows / 3, u_ms, u_wait);
        fflush(stdout);
    } else {
        fprintf(stderr, "%s: upgrade_to_pgvector skipped: the server has no "
                        "pgvector extension\n", PROGRAM);
    }
    PQfinish(q);
    ds_pool_close(pool);
    drop_db(admin, ours);
    drop_db(admin, base);
    free(ours);
    free(base);
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
    const char *tiers = getenv("BENCH_ONLINE_ROWS");
    char list[256];
    snprintf(list, sizeof list, "%s", tiers && *tiers ? tiers : "100000");
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int rows = atoi(tok);
        if (rows < 1000 || rows > 100000000)
            die("BENCH_ONLINE_ROWS", "each value must be 1000 to 100000000");
        bench_online(admin, url, rows);
    }
    PQfinish(admin);
    free(dbs);
    free(ours);
    free(base);
    for (int i = 0; i < nfiles; i++)
        free(files[i].text);
    return 0;
}
