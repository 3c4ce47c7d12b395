#include "test_util.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *dt_env_opt(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *dt_env(const char *name) {
    const char *v = dt_env_opt(name);
    ck_assert_msg(v != NULL,
                  "%s is not set: run the tests through `make check` "
                  "(scripts/run-tests exports the local services)",
                  name);
    return v;
}

void dt_skip(const char *test, const char *reason) {
    printf("SKIP: %s: %s\n", test, reason);
    fflush(stdout);
}

bool dt_server_has_pgvector(void) {
    return dt_sql_int(dt_env("DATABASE_URL"),
                      "SELECT count(*) FROM pg_available_extensions "
                      "WHERE name = 'vector'") > 0;
}

bool dt_skip_without_pgvector(const char *test) {
    const char *forced = dt_env_opt("DS_VECTOR_BACKEND");
    if (forced && strcmp(forced, "fallback") == 0) {
        dt_skip(test, "DS_VECTOR_BACKEND=fallback forces the fallback");
        return true;
    }
    if (!dt_server_has_pgvector()) {
        dt_skip(test, "the server has no pgvector extension");
        return true;
    }
    return false;
}

ds_config *dt_config(const char *url, int pool_min, int pool_max) {
    ds_config *cfg;
    ds_error err = {0};
    ds_status st = ds_config_new(&cfg, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set(cfg, "database_url", url, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set_int(cfg, "pool_min", pool_min, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set_int(cfg, "pool_max", pool_max, &err);
    ck_assert_ds_ok(st, err);
    return cfg;
}

ds_pool *dt_pool(const char *url, int pool_min, int pool_max) {
    ds_config *cfg = dt_config(url, pool_min, pool_max);
    ds_pool *pool;
    ds_error err = {0};
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    return pool;
}

int dt_services(const char *args) {
    const char *root = dt_env("DS_PROJECT_ROOT");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/scripts/services' %s >/dev/null 2>&1", root,
             args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

char *dt_url_with_db(const char *url, const char *dbname) {
    /* postgresql://user:pw@host:port/db?query */
    const char *scheme = strstr(url, "://");
    ck_assert_ptr_nonnull(scheme);
    const char *slash = strchr(scheme + 3, '/');
    const char *query = strchr(scheme + 3, '?');
    size_t head = slash ? (size_t)(slash - url)
                        : (query ? (size_t)(query - url) : strlen(url));
    const char *tail = query ? query : "";
    size_t n = head + 1 + strlen(dbname) + strlen(tail) + 1;
    char *out = malloc(n);
    ck_assert_ptr_nonnull(out);
    snprintf(out, n, "%.*s/%s%s", (int)head, url, dbname, tail);
    return out;
}

char *dt_db_name(const char *url) {
    const char *scheme = strstr(url, "://");
    ck_assert_ptr_nonnull(scheme);
    const char *slash = strchr(scheme + 3, '/');
    ck_assert_ptr_nonnull(slash);
    char *name = strndup(slash + 1, strcspn(slash + 1, "?"));
    ck_assert_ptr_nonnull(name);
    return name;
}

char *dt_url_same_db(const char *base, const char *url) {
    char *name = dt_db_name(url);
    char *out = dt_url_with_db(base, name);
    free(name);
    return out;
}

char *dt_replica_when_ready(const char *url, const char *ready_sql) {
    const char *replicas = dt_env("DATABASE_REPLICA_URLS");
    char *name = dt_db_name(url);
    char *admin = dt_url_with_db(replicas, "postgres");
    char *replica = dt_url_with_db(replicas, name);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_database WHERE datname = '%s'", name);
    free(name);
    long long deadline = dt_now_ms() + 30000;
    /* the database reaches the replica before its tables and rows do */
    while (dt_sql_int(admin, sql) == 0) {
        ck_assert_msg(dt_now_ms() < deadline, "the replica has no database %s",
                      replica);
        usleep(20000);
    }
    free(admin);
    while (dt_sql_int(replica, ready_sql) == 0) {
        ck_assert_msg(dt_now_ms() < deadline, "the replica is not ready: %s",
                      ready_sql);
        usleep(20000);
    }
    return replica;
}

void dt_replica_pause_replay(const char *replica_url) {
    dt_sql(replica_url, "SELECT pg_wal_replay_pause()");
    long long deadline = dt_now_ms() + 30000;
    while (dt_sql_int(replica_url, "SELECT (pg_get_wal_replay_pause_state() = "
                                   "'paused')::int") != 1) {
        ck_assert_msg(dt_now_ms() < deadline, "replay never paused");
        usleep(20000);
    }
}

ds_pool *dt_pooler_pool(const char *url, int pool_min, int pool_max) {
    char *pooler_url = dt_url_same_db(dt_env("DATABASE_POOLER_URL"), url);
    ds_config *cfg = dt_config(pooler_url, pool_min, pool_max);
    free(pooler_url);
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "statement_mode", "pooler", &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    return pool;
}

PGconn *dt_connect(const char *url) {
    PGconn *c = PQconnectdb(url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect failed: %s",
                  PQerrorMessage(c));
    return c;
}

void dt_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK,
                  "SQL failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

void dt_sql(const char *url, const char *sql) {
    PGconn *c = dt_connect(url);
    dt_exec(c, sql);
    PQfinish(c);
}

long long dt_sql_int(const char *url, const char *sql) {
    PGconn *c = dt_connect(url);
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
                      !PQgetisnull(r, 0, 0),
                  "SQL gave no value: %s: %s", sql, PQerrorMessage(c));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

char *dt_create_db(const char *tag) {
    static int counter;
    const char *url = dt_env("DATABASE_URL");
    char name[64], sql[160];
    snprintf(name, sizeof name, "dt_%s_%d_%d", tag, (int)getpid(), ++counter);
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\" TEMPLATE template0", name);
    dt_sql(url, sql);
    return dt_url_with_db(url, name);
}

/* The library's own runner with the migrations built into it: the tests
 * run against exactly the schema a deployed library would create. */
char *dt_migrated_db(const char *tag) {
    return dt_migrated_db_backend(tag, NULL);
}

char *dt_migrated_db_backend(const char *tag, const char *backend) {
    char *url = dt_create_db(tag);
    ds_config *cfg = dt_config(url, 1, 1);
    ds_error err = {0};
    const char *dim = dt_env_opt("DS_EMBEDDING_DIM");
    if (!backend)
        backend = dt_env_opt("DS_VECTOR_BACKEND");
    ds_status st = DS_OK;
    if (dim)
        st = ds_config_set(cfg, "embedding_dim", dim, &err);
    if (st == DS_OK && backend)
        st = ds_config_set(cfg, "vector_backend", backend, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_up(pool, NULL, NULL, &err);
    ds_pool_close(pool);
    ck_assert_ds_ok(st, err);
    return url;
}

void dt_drop_db(const char *url) {
    char *name = dt_db_name(url);
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", name);
    free(name);
    dt_sql(dt_env("DATABASE_URL"), sql);
}

long long dt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ds_status dt_pool_wait_query_ok(ds_pool *pool, long long timeout_ms,
                                int *attempts, ds_error *err) {
    ds_error local = {0};
    ds_error *e = err ? err : &local;
    long long deadline = dt_now_ms() + timeout_ms;
    int tries = 0;
    ds_status st;
    for (;;) {
        tries++;
        ds_sql_result *res = NULL;
        st = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, e);
        ds_sql_result_free(res);
        if (st == DS_OK || dt_now_ms() >= deadline)
            break;
        usleep(50000);
    }
    if (attempts)
        *attempts = tries;
    return st;
}

ds_crypto *dt_crypto_ring(const char *spec) {
    ds_crypto *c;
    ds_error err = {0};
    ds_status st = ds_crypto_open_keys(spec, &c, &err);
    ck_assert_ds_ok(st, err);
    return c;
}

void dt_run_processes(int n, int (*child)(void *ud, int index), void *ud) {
    enum { MAX_PROCESSES = 64 };
    ck_assert_int_le(n, MAX_PROCESSES);
    pid_t pids[MAX_PROCESSES];
    for (int i = 0; i < n; i++) {
        fflush(NULL); /* nothing buffered is written twice */
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0)
            _exit(child(ud, i));
    }
    int failed = -1, failed_status = 0;
    for (int i = 0; i < n; i++) {
        int status;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        if (failed < 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            failed = i;
            failed_status = status;
        }
    }
    ck_assert_msg(failed < 0, "process %d of %d: %s %d", failed, n,
                  WIFEXITED(failed_status) ? "exit status" : "wait status",
                  WIFEXITED(failed_status) ? WEXITSTATUS(failed_status)
                                           : failed_status);
}
