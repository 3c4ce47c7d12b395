/*
 * bench_pool: what the pool costs.
 *
 *   acquire_release  uncontended acquire+release, ns per pair
 *   select1          8 threads, SELECT 1 through an 8-connection pool vs the
 *                    same loop on 8 raw libpq connections (target ratio >= 0.98)
 *   shared4          8, 16 and 64 threads sharing 4 pooled connections vs 4
 *                    threads on 4 raw connections (the same server work: the
 *                    server runs at most 4 queries at once either way), with
 *                    the p99 and maximum acquire wait of the pooled side
 *                    (target ratio >= 0.9 at every thread count)
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "harness.h"

#define PROGRAM "bench_pool"

typedef struct pool_ctx {
    ds_pool *pool;
} pool_ctx;

static bool op_acquire_release(void *p) {
    pool_ctx *c = p;
    ds_conn *conn;
    if (ds_pool_acquire(c->pool, &conn, NULL) != DS_OK)
        return false;
    ds_pool_release(conn);
    return true;
}

static bool op_pool_select1(void *p) {
    pool_ctx *c = p;
    ds_conn *conn;
    ds_error err;
    if (ds_pool_acquire(c->pool, &conn, &err) != DS_OK) {
        fprintf(stderr, "acquire: %s\n", err.message);
        return false;
    }
    ds_status st = ds_sql_exec(conn, "SELECT 1", NULL, 0, NULL, &err);
    ds_pool_release(conn);
    if (st != DS_OK)
        fprintf(stderr, "exec: %s\n", err.message);
    return st == DS_OK;
}

/* The hand-written baseline: one connection per thread, the statement
 * prepared once, binary results, exactly what the pool's prepared mode does. */
static bool op_raw_select1(void *p) {
    PGconn *c = p;
    PGresult *r = PQexecPrepared(c, "s1", 0, NULL, NULL, NULL, 1);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static PGconn *raw_connect(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "raw connect: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(PQprepare(c, "s1", "SELECT 1", 0, NULL));
    return c;
}

static ds_pool *open_pool(const char *url, int size) {
    ds_config *cfg;
    ds_pool *pool;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "acquire_timeout_ms", 30000, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK) {
        fprintf(stderr, "pool: %s\n", err.message);
        exit(1);
    }
    ds_config_free(cfg);
    return pool;
}

/* Context switches of this process per operation over one extra,
 * separate run of `fn`: what a hand-off costs, independent of how busy the
 * machine is (throughput ratios on a shared machine swing with its load). */
static double switches_per_op(int threads, double seconds, bench_op_fn fn,
                              void **ctx) {
    struct rusage before, after;
    bench_hist *h = calloc(1, sizeof *h);
    bool failed = false;
    getrusage(RUSAGE_SELF, &before);
    bench_run(threads, seconds, fn, ctx, h, &failed);
    getrusage(RUSAGE_SELF, &after);
    uint64_t ops = h->count;
    free(h);
    long sw = (after.ru_nvcsw - before.ru_nvcsw) +
              (after.ru_nivcsw - before.ru_nivcsw);
    return ops && !failed ? (double)sw / (double)ops : 0.0;
}

/* A measurement build of the library (CPPFLAGS=-DDS_POOL_COUNTERS) logs
 * the pool's event counters when it closes: printed to stderr with the
 * case they belong to, for the per-query breakdown in docs/pool.md. */
static char counters_case[64];

static void print_counters(void *ud, ds_log_level level, const char *module,
                           const char *msg) {
    (void)ud, (void)level;
    if (strcmp(module, "pool") == 0 && strncmp(msg, "counters:", 9) == 0)
        fprintf(stderr, "# %s %s\n", counters_case, msg);
}

/* BENCH_ONLY=<case> runs one case; BENCH_ROUNDS sets the A B rounds
 * (more, shorter rounds follow a loaded machine's drift more closely). */
static bool selected(const char *name) {
    const char *only = getenv("BENCH_ONLY");
    return !only || !*only || strcmp(only, name) == 0;
}

int main(void) {
    const char *url = bench_env("DATABASE_URL");
    double secs = bench_seconds(15);
    const char *rounds_env = getenv("BENCH_ROUNDS");
    int rounds = rounds_env && atoi(rounds_env) > 0 ? atoi(rounds_env) : 15;
    double side = secs / (2.0 * rounds);
    char extra[256];
    ds_log_set_fn(print_counters, NULL, DS_LOG_INFO);

    /* 1. uncontended acquire + release */
    if (selected("acquire_release")) {
        ds_pool *pool = open_pool(url, 1);
        pool_ctx pc = {pool};
        void *ctx[1] = {&pc};
        bench_result r;
        bench_ab(rounds, side, 1, op_acquire_release, ctx, 0, NULL, NULL, &r, NULL);
        snprintf(extra, sizeof extra, "ns_op=%.0f", 1e9 / r.ops_s);
        bench_print(PROGRAM, "acquire_release", 1, &r, NULL, extra);
        ds_pool_close(pool);
    }

    /* 2. 8 threads, SELECT 1: pool of 8 vs 8 raw connections */
    if (selected("select1")) {
        enum { T = 8 };
        ds_pool *pool = open_pool(url, T);
        pool_ctx pc = {pool};
        void *pctx[T], *rctx[T];
        for (int i = 0; i < T; i++) {
            pctx[i] = &pc;
            rctx[i] = raw_connect(url);
        }
        bench_result ours, base;
        bench_ab(rounds, side, T, op_pool_select1, pctx, T, op_raw_select1, rctx,
                 &ours, &base);
        if (ours.failed || base.failed)
            return 1;
        bench_print(PROGRAM, "select1", T, &ours, &base, "connections=8");
        for (int i = 0; i < T; i++)
            PQfinish(rctx[i]);
        ds_pool_close(pool);
    }

    /* 3. 8, 16, 64 threads sharing 4 connections vs 4 threads on 4 raw
     * ones; a fresh pool per count, so its wait statistics are its own */
    static const int shared_threads[] = {8, 16, 64};
    for (size_t k = 0; selected("shared4") &&
                       k < sizeof shared_threads / sizeof shared_threads[0];
         k++) {
        enum { MAXT = 64 };
        int threads = shared_threads[k];
        ds_pool *pool = open_pool(url, 4);
        pool_ctx pc = {pool};
        void *pctx[MAXT], *rctx[4];
        for (int i = 0; i < threads; i++)
            pctx[i] = &pc;
        for (int i = 0; i < 4; i++)
            rctx[i] = raw_connect(url);
        bench_result ours, base;
        bench_ab(rounds, side, threads, op_pool_select1, pctx, 4, op_raw_select1,
                 rctx, &ours, &base);
        if (ours.failed || base.failed)
            return 1;
        ds_pool_stats st = DS_POOL_STATS_INIT;
        if (ds_pool_stats_get(pool, &st, NULL) != DS_OK)
            return 1;
        double csw = switches_per_op(threads, side, op_pool_select1, pctx);
        double base_csw = switches_per_op(4, side, op_raw_select1, rctx);
        snprintf(extra, sizeof extra,
                 "connections=4 baseline_threads=4 csw_op=%.2f "
                 "baseline_csw_op=%.2f acquire_wait_p50_us=%lld "
                 "acquire_wait_p99_us=%lld acquire_wait_max_us=%lld "
                 "overtaken_max=%llu",
                 csw, base_csw,
                 (long long)st.acquire_wait_p50_us,
                 (long long)st.acquire_wait_p99_us,
                 (long long)st.acquire_wait_max_us,
                 (unsigned long long)st.waiter_overtaken_max);
        bench_print(PROGRAM, "shared4", threads, &ours, &base, extra);
        for (int i = 0; i < 4; i++)
            PQfinish(rctx[i]);
        snprintf(counters_case, sizeof counters_case,
                 "shared4 threads=%d", threads);
        ds_pool_close(pool);
    }
    return 0;
}
