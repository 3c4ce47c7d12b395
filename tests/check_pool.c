/* The connection pool against the real PostgreSQL, replica and PgBouncer. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

static const char *db_url(void) { return dt_env("DATABASE_URL"); }

/* SELECT an int through the library on a leased connection. */
static long long conn_int(ds_conn *c, const char *sql) {
    ds_sql_result *res;
    ds_error err = {0};
    ds_status st = ds_sql_exec(c, sql, NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    int64_t v = 0;
    st = ds_sql_result_int64(res, 0, 0, &v, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    return v;
}

static bool conn_bool(ds_conn *c, const char *sql) {
    ds_sql_result *res;
    ds_error err = {0};
    ds_status st = ds_sql_exec(c, sql, NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    bool v = false;
    st = ds_sql_result_bool(res, 0, 0, &v, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    return v;
}

static ds_pool_stats stats_of(ds_pool *pool) {
    ds_pool_stats s = DS_POOL_STATS_INIT;
    ds_error err = {0};
    ds_status st = ds_pool_stats_get(pool, &s, &err);
    ck_assert_ds_ok(st, err);
    return s;
}

/* ---- basics ----------------------------------------------------------- */

START_TEST(test_pool_open_prewarms_to_min) {
    ds_pool *pool = dt_pool(db_url(), 3, 6);
    ds_pool_stats s = stats_of(pool);
    ck_assert_int_eq(s.connections, 3);
    ck_assert_int_eq(s.idle, 3);
    ck_assert_int_eq(s.in_use, 0);
    ds_conn *c;
    ds_error err = {0};
    ds_status st = ds_pool_acquire(pool, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(conn_int(c, "SELECT 41 + 1"), 42);
    ck_assert(!ds_pool_conn_is_replica(c));
    ck_assert_ptr_nonnull(ds_pool_conn_pg(c));
    s = stats_of(pool);
    ck_assert_int_eq(s.in_use, 1);
    ck_assert_int_eq(s.idle, 2);
    ds_pool_release(c);
    s = stats_of(pool);
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_uint_eq(s.acquires, 1);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_open_url_shorthand) {
    ds_pool *pool;
    ds_error err = {0};
    ds_status st = ds_pool_open_url(db_url(), &pool, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!ds_pool_is_pooler_mode(pool));
    ds_sql_result *res;
    st = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(ds_sql_result_rows(res), 1);
    ds_sql_result_free(res);
    ds_pool_close(pool);
}
END_TEST

/* ---- concurrency -------------------------------------------------------- */

typedef struct {
    ds_pool *pool;
    int iterations;
    atomic_int *failures;
    atomic_int *max_seen_in_use;
} churn_arg;

static void *churn_main(void *p) {
    churn_arg *a = p;
    for (int i = 0; i < a->iterations; i++) {
        ds_conn *c;
        ds_error err = {0};
        if (ds_pool_acquire(a->pool, &c, &err) != DS_OK) {
            atomic_fetch_add(a->failures, 1);
            continue;
        }
        if (i % 500 == 0) { /* a real round trip now and then */
            ds_sql_result *res;
            if (ds_sql_exec(c, "SELECT 1", NULL, 0, &res, &err) != DS_OK)
                atomic_fetch_add(a->failures, 1);
            ds_sql_result_free(res);
        }
        ds_pool_release(c);
    }
    return NULL;
}

START_TEST(test_pool_8_threads_10000_acquires_no_leak) {
    ds_config *cfg = dt_config(db_url(), 2, 4);
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "application_name", "dt_churn", &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    atomic_int failures = 0, max_in_use = 0;
    pthread_t th[8];
    churn_arg arg = {pool, 10000, &failures, &max_in_use};
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, churn_main, &arg);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&failures), 0);
    ds_pool_stats s = stats_of(pool);
    ck_assert_uint_eq(s.acquires, 80000);
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_int_eq(s.waiters, 0);
    ck_assert_int_le(s.connections, 4);
    ck_assert_int_eq(s.idle, s.connections);
    ck_assert_uint_eq(s.timeouts, 0);
    ck_assert_int_le(s.acquire_wait_p50_us, s.acquire_wait_p99_us);
    ck_assert_int_le(s.acquire_wait_p99_us, s.acquire_wait_max_us);
    /* the server sees exactly the connections the pool says it has */
    long long server_side = dt_sql_int(
        db_url(), "SELECT count(*) FROM pg_stat_activity "
                  "WHERE application_name = 'dt_churn'");
    ck_assert_int_eq(server_side, s.connections);
    ds_pool_close(pool);
    ck_assert_int_eq(dt_sql_int(db_url(),
                                "SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = 'dt_churn'"),
                     0);
}
END_TEST

START_TEST(test_pool_acquire_times_out_when_exhausted) {
    ds_pool *pool = dt_pool(db_url(), 1, 2);
    ds_conn *a, *b, *c = (ds_conn *)0x1;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &a, &err), DS_OK);
    ck_assert_int_eq(ds_pool_acquire(pool, &b, &err), DS_OK);
    long long t0 = dt_now_ms();
    ds_status st = ds_pool_acquire_timeout(pool, 300, &c, &err);
    long long waited = dt_now_ms() - t0;
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);
    ck_assert_ptr_null(c);
    ck_assert(!ds_error_is_retryable(&err) || err.retryable == false);
    /* it waited for its timeout, and did not hang past it */
    ck_assert_int_ge(waited, 290);
    ck_assert_int_lt(waited, 3000);
    st = ds_pool_acquire_timeout(pool, 0, &c, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);
    ds_pool_stats s = stats_of(pool);
    ck_assert_uint_eq(s.timeouts, 2);
    ds_pool_release(a);
    st = ds_pool_acquire_timeout(pool, 0, &c, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_release(b);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    int id;
    atomic_int *order_pos;
    int *order;
    /* Keep the connection until this many waiters have written down
     * their turn (0: for 20 ms). With one connection each turn is
     * written before the next waiter can be served; with several, a
     * waiter served earlier may be slower to run and write its turn than
     * one served after it, so the connection it would pass on is held
     * until the turns before are written. */
    int hold_until;
} fifo_arg;

static void *fifo_waiter(void *p) {
    fifo_arg *a = p;
    ds_conn *c;
    ds_error err = {0};
    ds_status st = ds_pool_acquire_timeout(a->pool, 10000, &c, &err);
    ck_assert_ds_ok(st, err);
    a->order[atomic_fetch_add(a->order_pos, 1)] = a->id;
    if (a->hold_until == 0)
        usleep(20000);
    for (int spin = 0;
         spin < 10000 && atomic_load(a->order_pos) < a->hold_until; spin++)
        usleep(1000);
    ds_pool_release(c);
    return NULL;
}

START_TEST(test_pool_waiters_served_first_come_first_served) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *held;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &held, &err), DS_OK);
    enum { N = 5 };
    pthread_t th[N];
    fifo_arg args[N];
    int order[N];
    atomic_int pos = 0;
    for (int i = 0; i < N; i++) {
        args[i] = (fifo_arg){pool, i, &pos, order, 0};
        pthread_create(&th[i], NULL, fifo_waiter, &args[i]);
        /* wait until this waiter is queued before starting the next */
        for (int spin = 0; spin < 500 && stats_of(pool).waiters != i + 1; spin++)
            usleep(2000);
        ck_assert_int_eq(stats_of(pool).waiters, i + 1);
    }
    ds_pool_release(held);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(order[i], i);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    int ops;
    int done;
} busy_arg;

static void *busy_worker(void *p) {
    busy_arg *a = p;
    for (int i = 0; i < a->ops; i++) {
        ds_conn *c;
        ds_error err = {0};
        if (ds_pool_acquire(a->pool, &c, &err) != DS_OK)
            break;
        ds_status st = ds_sql_exec(c, "SELECT 1", NULL, 0, NULL, &err);
        ds_pool_release(c);
        if (st != DS_OK)
            break;
        a->done++;
    }
    return NULL;
}

/* 16 threads on 2 connections, each running its queries back to back:
 * threads that come straight back reuse connections without queueing, yet
 * every thread finishes every query, no acquire times out and no waiter is
 * overtaken more than the barging budget allows. */
START_TEST(test_pool_oversubscribed_threads_all_served) {
    ds_config *cfg = dt_config(db_url(), 2, 2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "acquire_timeout_ms", 20000, &err), err);
    ds_pool *pool;
    ck_assert_ds_ok(ds_pool_open(cfg, &pool, &err), err);
    ds_config_free(cfg);
    enum { T = 16, OPS = 300 };
    pthread_t th[T];
    busy_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (busy_arg){pool, OPS, 0};
        pthread_create(&th[i], NULL, busy_worker, &args[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        ck_assert_int_eq(args[i].done, OPS);
    ds_pool_stats st = stats_of(pool);
    ck_assert_uint_eq(st.timeouts, 0);
    ck_assert_uint_eq(st.acquires, (uint64_t)T * OPS);
    ck_assert_int_eq(st.in_use, 0);
    ck_assert_int_le(st.connections, 2);
    /* each waiter overtaken at most DS_POOL_BARGE_MAX times per waiter
     * ahead of it, plus its own turn at the head */
    ck_assert_uint_le(st.waiter_overtaken_max, (uint64_t)T * DS_POOL_BARGE_MAX);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    ds_status st;
} one_arg;

static void *acquire_once(void *p) {
    one_arg *a = p;
    ds_conn *c;
    ds_error err = {0};
    a->st = ds_pool_acquire_timeout(a->pool, 10000, &c, &err);
    if (a->st == DS_OK)
        ds_pool_release(c);
    return NULL;
}

/* A thread that reuses the only connection while another waits, then stops
 * asking: the waiter gets the connection (handed over when the barging
 * budget is spent, or taken from the idle stack by the oldest waiter's
 * periodic look). */
START_TEST(test_pool_waiter_gets_connection_a_busy_thread_stops_using) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    one_arg a = {pool, DS_ERR_INTERNAL};
    pthread_t th;
    pthread_create(&th, NULL, acquire_once, &a);
    for (int spin = 0; spin < 500 && stats_of(pool).waiters != 1; spin++)
        usleep(2000);
    ck_assert_int_eq(stats_of(pool).waiters, 1);
    for (int i = 0; i < 20; i++) {
        ds_pool_release(c);
        ds_status st = ds_pool_acquire_timeout(pool, 10000, &c, &err);
        ck_assert_ds_ok(st, err);
    }
    ds_pool_release(c);
    pthread_join(th, NULL);
    ck_assert_int_eq(a.st, DS_OK);
    ck_assert_uint_eq(stats_of(pool).timeouts, 0);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    atomic_int *keeper_acquires; /* the keeper's acquires while we queue */
    atomic_bool served;
    int overtaken; /* keeper_acquires when this waiter got the connection */
    ds_status st;
    atomic_bool hold; /* keep the connection until cleared */
} overtaken_arg;

static void *count_overtakers(void *p) {
    overtaken_arg *a = p;
    ds_conn *c;
    ds_error err = {0};
    a->st = ds_pool_acquire_timeout(a->pool, 20000, &c, &err);
    if (a->st == DS_OK) {
        a->overtaken = atomic_load(a->keeper_acquires);
        atomic_store(&a->served, true);
        for (int spin = 0; spin < 10000 && atomic_load(&a->hold); spin++)
            usleep(1000);
        ds_pool_release(c);
    }
    return NULL;
}

/* One waiter queues behind a keeper that comes straight back up to
 * `rounds` times on a 1-connection pool with pool_overtake_ms = `window`;
 * how many of the keeper's acquisitions overtook it (the stats must
 * agree, and nobody may time out). */
static int overtakes_with_window(int window, int rounds) {
    ds_config *cfg = dt_config(db_url(), 1, 1);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "pool_overtake_ms", window, &err),
                    err);
    ds_pool *pool;
    ck_assert_ds_ok(ds_pool_open(cfg, &pool, &err), err);
    ds_config_free(cfg);
    ds_conn *c;
    for (int i = 0; i < 10; i++) { /* the habit of coming straight back */
        ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
        ds_pool_release(c);
    }
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    atomic_int keeper_acquires = 0;
    overtaken_arg a = {pool, &keeper_acquires, false, -1, DS_ERR_INTERNAL,
                       false};
    pthread_t th;
    pthread_create(&th, NULL, count_overtakers, &a);
    for (int spin = 0; spin < 500 && stats_of(pool).waiters != 1; spin++)
        usleep(2000);
    ck_assert_int_eq(stats_of(pool).waiters, 1);
    for (int i = 0; i < rounds && !atomic_load(&a.served); i++) {
        ds_pool_release(c);
        ck_assert_ds_ok(ds_pool_acquire_timeout(pool, 20000, &c, &err), err);
        if (!atomic_load(&a.served))
            atomic_fetch_add(&keeper_acquires, 1);
    }
    ds_pool_release(c);
    pthread_join(th, NULL);
    ck_assert_int_eq(a.st, DS_OK);
    ck_assert_msg(atomic_load(&a.served), "the waiter was never served");
    ds_pool_stats st = stats_of(pool);
    ck_assert_uint_eq(st.waiter_overtaken_max, (uint64_t)a.overtaken);
    ck_assert_uint_eq(st.timeouts, 0);
    ds_pool_close(pool);
    return a.overtaken;
}

/* A thread that comes straight back may keep its connection while another
 * waits, but only DS_POOL_BARGE_MAX times: then its release hands the
 * connection over. Counted in acquisitions, not time: the window is a
 * minute, so only the count can end the waiter's turn, and the stats
 * report exactly how often the waiter was overtaken. */
START_TEST(test_pool_barging_overtakes_a_waiter_a_bounded_number_of_times) {
    int n = overtakes_with_window(60000, 4 * DS_POOL_BARGE_MAX + 4);
    ck_assert_int_ge(n, 0);
    ck_assert_int_le(n, DS_POOL_BARGE_MAX);
}
END_TEST

/* pool_overtake_ms = 0 turns barging off: a thread that comes straight
 * back queues behind the waiter, whose turn comes at the next release.
 * The control, a window of a minute, lets the same keeper overtake it (up
 * to three tries: a keeper preempted between release and acquire loses
 * its habit and hands over at once). */
START_TEST(test_pool_overtake_zero_serves_in_arrival_order) {
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(overtakes_with_window(0, 20), 0);
    int most = 0;
    for (int i = 0; i < 3 && most == 0; i++) {
        int n = overtakes_with_window(60000, 20);
        most = n > most ? n : most;
    }
    ck_assert_int_ge(most, 1);
}
END_TEST

typedef struct {
    ds_pool *pool;
    atomic_bool go;     /* waiters are queued: start keeping */
    atomic_bool ready;  /* holds a connection, habit learnt */
    int kept;           /* acquisitions after the waiters queued */
    ds_status st;
} keeper_arg;

/* Learns the habit of coming straight back, holds a connection until the
 * waiters have queued, keeps it for a few acquisitions and stops for good,
 * leaving it released with threads still waiting. */
static void *keep_then_stop(void *p) {
    keeper_arg *a = p;
    ds_conn *c;
    ds_error err = {0};
    for (int i = 0; i < 10; i++) {
        if ((a->st = ds_pool_acquire(a->pool, &c, &err)) != DS_OK)
            return NULL;
        ds_pool_release(c);
    }
    if ((a->st = ds_pool_acquire(a->pool, &c, &err)) != DS_OK)
        return NULL;
    atomic_store(&a->ready, true);
    for (int spin = 0; spin < 10000 && !atomic_load(&a->go); spin++)
        usleep(1000);
    for (int i = 0; i < 5; i++) {
        ds_pool_release(c);
        if ((a->st = ds_pool_acquire_timeout(a->pool, 20000, &c, &err)) != DS_OK)
            return NULL;
        a->kept++;
    }
    ds_pool_release(c);
    return NULL;
}

/* Every thread that kept a connection while others waited stops at once
 * and nobody else passes through the pool: the waiters are still all
 * served, oldest first, whichever way the connections come to them (a
 * release that hands over once the oldest waiter's budget is spent, or the
 * polling waiter finding a connection left idle and giving it to the
 * oldest). */
START_TEST(test_pool_waiters_served_in_order_after_every_keeper_stops) {
    ds_pool *pool = dt_pool(db_url(), 2, 2);
    enum { K = 2, N = 3 }; /* K connections */
    pthread_t keepers[K], waiters[N];
    keeper_arg ka[K];
    for (int i = 0; i < K; i++) {
        ka[i] = (keeper_arg){pool, false, false, 0, DS_ERR_INTERNAL};
        pthread_create(&keepers[i], NULL, keep_then_stop, &ka[i]);
    }
    for (int i = 0; i < K; i++)
        for (int spin = 0; spin < 5000 && !atomic_load(&ka[i].ready); spin++)
            usleep(2000);
    for (int i = 0; i < K; i++)
        ck_assert_msg(atomic_load(&ka[i].ready), "keeper %d never started", i);
    fifo_arg wa[N];
    int order[N];
    atomic_int pos = 0;
    for (int i = 0; i < N; i++) {
        /* the first K hold their connections until both have written
         * their turn: the newest can only be served after that */
        wa[i] = (fifo_arg){pool, i, &pos, order, K};
        pthread_create(&waiters[i], NULL, fifo_waiter, &wa[i]);
        for (int spin = 0; spin < 500 && stats_of(pool).waiters != i + 1; spin++)
            usleep(2000);
        ck_assert_int_eq(stats_of(pool).waiters, i + 1);
    }
    for (int i = 0; i < K; i++)
        atomic_store(&ka[i].go, true);
    for (int i = 0; i < K; i++)
        pthread_join(keepers[i], NULL);
    for (int i = 0; i < N; i++)
        pthread_join(waiters[i], NULL); /* fifo_waiter asserts it was served */
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(ka[i].st, DS_OK);
        ck_assert_int_eq(ka[i].kept, 5);
    }
    /* the two oldest got the two connections (in either order: they
     * record it as they run), the newest waited for one of them (had it
     * been served before the second oldest, that one would have been
     * served only once the oldest let go, and written its turn last) */
    ck_assert_int_eq(atomic_load(&pos), N);
    ck_assert_int_eq(order[0] + order[1], 1);
    ck_assert_int_eq(order[2], 2);
    ds_pool_stats st = stats_of(pool);
    ck_assert_uint_eq(st.timeouts, 0);
    ck_assert_int_eq(st.waiters, 0);
    ck_assert_int_eq(st.in_use, 0);
    ck_assert_uint_le(st.waiter_overtaken_max, (uint64_t)N * DS_POOL_BARGE_MAX);
    ds_pool_close(pool);
}
END_TEST

/* A thread with no habit of coming straight back (here: its first
 * release) hands its connection to the waiter at once, never leaving it
 * idle while someone waits. */
START_TEST(test_pool_release_hands_over_at_once_without_a_quick_return) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    atomic_int none = 0;
    overtaken_arg a = {pool, &none, false, -1, DS_ERR_INTERNAL, true};
    pthread_t th;
    pthread_create(&th, NULL, count_overtakers, &a);
    for (int spin = 0; spin < 500 && stats_of(pool).waiters != 1; spin++)
        usleep(2000);
    ck_assert_int_eq(stats_of(pool).waiters, 1);
    ds_pool_release(c);
    /* handed over, not pushed onto the idle stack (the waiter holds it) */
    ck_assert_int_eq(stats_of(pool).idle, 0);
    atomic_store(&a.hold, false);
    pthread_join(th, NULL);
    ck_assert(atomic_load(&a.served));
    ck_assert_int_eq(a.st, DS_OK);
    ck_assert_int_eq(a.overtaken, 0);
    ck_assert_uint_eq(stats_of(pool).waiter_overtaken_max, 0);
    ds_pool_close(pool);
}
END_TEST

/* ---- health on release --------------------------------------------------- */

START_TEST(test_pool_release_rolls_back_open_transaction) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid = conn_int(c, "SELECT pg_backend_pid()");
    ds_status st = ds_sql_exec(c, "CREATE TEMP TABLE t_release (v int)", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec(c, "BEGIN", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec(c, "INSERT INTO t_release VALUES (1)", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_release(c); /* left inside a transaction */
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(conn_int(c, "SELECT pg_backend_pid()"), pid); /* reused */
    ck_assert_int_eq(PQtransactionStatus(ds_pool_conn_pg(c)), PQTRANS_IDLE);
    ck_assert_int_eq(conn_int(c, "SELECT count(*) FROM t_release"), 0);
    /* a failed transaction is rolled back too */
    st = ds_sql_exec(c, "BEGIN", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec(c, "SELECT 1/0", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_str_eq(err.sqlstate, "22012");
    ds_pool_release(c);
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(conn_int(c, "SELECT 7"), 7);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_release_discards_busy_or_marked_connection) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid1 = conn_int(c, "SELECT pg_backend_pid()");
    /* a query sent but never read: the connection is mid-query */
    ck_assert_int_eq(PQsendQuery(ds_pool_conn_pg(c), "SELECT pg_sleep(0.05)"), 1);
    ds_pool_release(c);
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid2 = conn_int(c, "SELECT pg_backend_pid()");
    ck_assert_int_ne(pid1, pid2);
    ds_pool_conn_discard(c);
    ds_pool_release(c);
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_ne(conn_int(c, "SELECT pg_backend_pid()"), pid2);
    ds_pool_release(c);
    ck_assert_uint_eq(stats_of(pool).discarded, 2);
    ds_pool_close(pool);
}
END_TEST

/* ---- healing ------------------------------------------------------------- */

START_TEST(test_pool_heals_terminated_backend) {
    ds_pool *pool = dt_pool(db_url(), 2, 2);
    ds_conn *a, *b;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &a, &err), DS_OK);
    ck_assert_int_eq(ds_pool_acquire(pool, &b, &err), DS_OK);
    long long pid_a = conn_int(a, "SELECT pg_backend_pid()");
    long long pid_b = conn_int(b, "SELECT pg_backend_pid()");
    ds_pool_release(a);
    ds_pool_release(b);
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT pg_terminate_backend(%lld), "
             "pg_terminate_backend(%lld)) t", pid_a, pid_b);
    dt_sql(db_url(), sql);
    usleep(400000); /* past the 250 ms bypass window of the liveness check */
    for (int i = 0; i < 2; i++) {
        ds_conn *c;
        ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
        long long pid = conn_int(c, "SELECT pg_backend_pid()");
        ck_assert_int_ne(pid, pid_a);
        ck_assert_int_ne(pid, pid_b);
        ds_pool_release(c);
    }
    ck_assert_uint_ge(stats_of(pool).reconnects, 1);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_in_flight_query_on_killed_backend_is_retryable) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid = conn_int(c, "SELECT pg_backend_pid()");
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", pid);
    dt_sql(db_url(), sql);
    /* until the server has ended that backend (at most 30 s) */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld", pid);
    long long deadline = dt_now_ms() + 30000;
    while (dt_sql_int(db_url(), sql) > 0) {
        ck_assert_msg(dt_now_ms() < deadline, "backend %lld still alive", pid);
        usleep(2000);
    }
    ds_status st = ds_sql_exec(c, "SELECT 1", NULL, 0, NULL, &err);
    ck_assert_int_ne(st, DS_OK);
    ck_assert_msg(ds_error_is_retryable(&err), "%s: %s", ds_status_str(st),
                  err.message);
    ds_pool_release(c); /* discarded */
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(conn_int(c, "SELECT 1"), 1);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    atomic_bool *stop;
    atomic_int *ok, *retryable, *other;
} load_arg;

static void *load_main(void *p) {
    load_arg *a = p;
    while (!atomic_load(a->stop)) {
        ds_conn *c;
        ds_error err = {0};
        ds_status st = ds_pool_acquire(a->pool, &c, &err);
        if (st == DS_OK) {
            st = ds_sql_exec(c, "SELECT pg_sleep(0.01)", NULL, 0, NULL, &err);
            ds_pool_release(c);
        }
        if (st == DS_OK)
            atomic_fetch_add(a->ok, 1);
        else if (ds_error_is_retryable(&err))
            atomic_fetch_add(a->retryable, 1);
        else {
            fprintf(stderr, "non-retryable during restart: %s: %s\n",
                    ds_status_str(st), err.message);
            atomic_fetch_add(a->other, 1);
        }
        if (st != DS_OK)
            usleep(20000);
    }
    return NULL;
}

/* Four threads load `pool` while scripts/services restarts `service`: the
 * load flows before (8 queries), the pool heals without any action from us
 * (bounded generously: the machine may be loaded), the load flows again (4
 * more queries), and every failure in between is retryable. */
static void survives_restart_under_load(ds_pool *pool, const char *service) {
    atomic_bool stop = false;
    atomic_int ok = 0, retryable = 0, other = 0;
    load_arg arg = {pool, &stop, &ok, &retryable, &other};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, load_main, &arg);
    long long deadline = dt_now_ms() + 30000;
    while (atomic_load(&ok) < 8 && dt_now_ms() < deadline)
        usleep(2000);
    int ok_at_restart = atomic_load(&ok);
    char args[64];
    snprintf(args, sizeof args, "restart %s", service);
    int restarted = dt_services(args);
    ds_error heal_err = {0};
    ds_status healed = restarted == 0
                           ? dt_pool_wait_query_ok(pool, 30000, NULL, &heal_err)
                           : DS_ERR_CONNECTION;
    int ok_before = atomic_load(&ok);
    deadline = dt_now_ms() + 30000;
    while (healed == DS_OK && atomic_load(&ok) <= ok_before + 4 &&
           dt_now_ms() < deadline)
        usleep(2000);
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_ge(ok_at_restart, 8);
    ck_assert_int_eq(restarted, 0);
    ck_assert_msg(healed == DS_OK, "pool did not recover within 30 s of the %s "
                  "restart: %s", service, heal_err.message);
    ck_assert_int_gt(atomic_load(&ok), ok_before + 4); /* load flows again */
    ck_assert_int_eq(atomic_load(&other), 0);      /* every failure retryable */
    ck_assert_int_eq(stats_of(pool).in_use, 0);
}

START_TEST(test_pool_survives_postgres_restart) {
    ds_config *cfg = dt_config(db_url(), 2, 4);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "acquire_timeout_ms", 2000, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    survives_restart_under_load(pool, "postgres");
    ds_pool_close(pool);
}
END_TEST

/* ---- transactions -------------------------------------------------------- */

typedef struct {
    ds_pool *pool;
    pthread_barrier_t *barrier;
    atomic_int *attempts;
    bool barrier_done;
} tx_arg;

static ds_status bump_counter(ds_conn *c, void *ud, ds_error *err) {
    tx_arg *a = ud;
    atomic_fetch_add(a->attempts, 1);
    ds_sql_result *res;
    ds_status st = ds_sql_exec(c, "SELECT v FROM dt_tx_counter WHERE id = 1", NULL,
                           0, &res, err);
    if (st != DS_OK)
        return st;
    int64_t v;
    st = ds_sql_result_int64(res, 0, 0, &v, err);
    ds_sql_result_free(res);
    if (st != DS_OK)
        return st;
    if (!a->barrier_done) { /* both read before either writes */
        a->barrier_done = true;
        pthread_barrier_wait(a->barrier);
    }
    ds_sql_param p[] = {ds_sql_param_int64(v + 1)};
    return ds_sql_exec(c, "UPDATE dt_tx_counter SET v = $1 WHERE id = 1", p, 1,
                   NULL, err);
}

static void *tx_main(void *p) {
    tx_arg *a = p;
    ds_tx_options opts = {sizeof(ds_tx_options), DS_ISOLATION_SERIALIZABLE, false, 0};
    ds_error err = {0};
    ds_status st = ds_tx_run(a->pool, &opts, bump_counter, a, &err);
    ck_assert_ds_ok(st, err);
    return NULL;
}

START_TEST(test_tx_run_retries_serialization_failure) {
    char *url = dt_create_db("tx");
    dt_sql(url, "CREATE TABLE dt_tx_counter (id int PRIMARY KEY, v int NOT NULL);"
                "INSERT INTO dt_tx_counter VALUES (1, 0)");
    ds_pool *pool = dt_pool(url, 2, 2);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    atomic_int attempts = 0;
    tx_arg a1 = {pool, &barrier, &attempts, false};
    tx_arg a2 = {pool, &barrier, &attempts, false};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, tx_main, &a1);
    pthread_create(&t2, NULL, tx_main, &a2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    /* one of the two hit 40001 and ran again: no lost update */
    ck_assert_int_ge(atomic_load(&attempts), 3);
    ck_assert_int_eq(dt_sql_int(url, "SELECT v FROM dt_tx_counter"), 2);
    ds_pool_close(pool);
    pthread_barrier_destroy(&barrier);
    dt_drop_db(url);
    free(url);
}
END_TEST

static ds_status failing_body(ds_conn *c, void *ud, ds_error *err) {
    (void)ud;
    ds_status st = ds_sql_exec(c, "INSERT INTO dt_tx_items VALUES (1)", NULL, 0,
                           NULL, err);
    if (st != DS_OK)
        return st;
    return ds_sql_exec(c, "INSERT INTO dt_tx_items VALUES (1)", NULL, 0, NULL, err);
}

static ds_status swallowing_body(ds_conn *c, void *ud, ds_error *err) {
    (void)ud;
    (void)err;
    ds_error ignored = {0};
    ds_status st = ds_sql_exec(c, "SELECT 1/0", NULL, 0, NULL, &ignored);
    ck_assert_int_eq(st, DS_ERR_INVALID);
    return DS_OK; /* claims success although the statement failed */
}

static ds_status plain_body(ds_conn *c, void *ud, ds_error *err) {
    (void)ud;
    return ds_sql_exec(c, "INSERT INTO dt_tx_items VALUES (2)", NULL, 0, NULL, err);
}

START_TEST(test_tx_run_rolls_back_on_error) {
    char *url = dt_create_db("txrb");
    dt_sql(url, "CREATE TABLE dt_tx_items (id int PRIMARY KEY)");
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_error err = {0};
    ds_status st = ds_tx_run(pool, NULL, failing_body, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    ck_assert_str_eq(err.sqlstate, "23505");
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM dt_tx_items"), 0);
    st = ds_tx_run(pool, NULL, swallowing_body, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    st = ds_tx_run(pool, NULL, plain_body, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM dt_tx_items"), 1);
    ds_tx_options bad = {sizeof(ds_tx_options), (ds_isolation)42, false, 0};
    st = ds_tx_run(pool, &bad, plain_body, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- settings -------------------------------------------------------------- */

START_TEST(test_pool_statement_timeout_applies) {
    ds_config *cfg = dt_config(db_url(), 1, 1);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "statement_timeout_ms", 100, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec_pool(pool, "SELECT pg_sleep(2)", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);
    ck_assert_str_eq(err.sqlstate, "57014");
    ds_pool_close(pool);
}
END_TEST

static ds_status set_app_name(void *ud, ds_conn *c, ds_error *err) {
    atomic_int *calls = ud;
    atomic_fetch_add(calls, 1);
    return ds_sql_exec(c, "SET application_name = 'dt_hooked'", NULL, 0, NULL, err);
}

static ds_status refuse(void *ud, ds_conn *c, ds_error *err) {
    (void)ud;
    (void)c;
    (void)err;
    return DS_ERR_INVALID; /* without a message: the pool writes one */
}

START_TEST(test_pool_after_connect_hook) {
    ds_config *cfg = dt_config(db_url(), 2, 2);
    atomic_int calls = 0;
    ds_error err = {0};
    ds_status st = ds_config_set_after_connect(cfg, set_app_name, &calls, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(atomic_load(&calls), 2);
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ds_sql_result *res;
    st = ds_sql_exec(c, "SELECT current_setting('application_name')", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    const char *name;
    st = ds_sql_result_text(res, 0, 0, &name, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(name, "dt_hooked");
    ds_sql_result_free(res);
    ds_pool_release(c);
    ds_pool_close(pool);

    st = ds_config_set_after_connect(cfg, refuse, NULL, &err);
    ck_assert_ds_ok(st, err);
    pool = (ds_pool *)0x1;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(pool);
    ck_assert_ptr_nonnull(strstr(err.message, "after-connect"));
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_pool_max_lifetime_replaces_connections) {
    ds_config *cfg = dt_config(db_url(), 1, 1);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "max_lifetime_ms", 300, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid1 = conn_int(c, "SELECT pg_backend_pid()");
    ds_pool_release(c);
    usleep(400000);
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    long long pid2 = conn_int(c, "SELECT pg_backend_pid()");
    ds_pool_release(c);
    ck_assert_int_ne(pid1, pid2);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_idle_timeout_shrinks_to_min) {
    ds_config *cfg = dt_config(db_url(), 1, 4);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "idle_timeout_ms", 500, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ds_conn *c[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(ds_pool_acquire(pool, &c[i], &err), DS_OK);
    for (int i = 0; i < 4; i++)
        ds_pool_release(c[i]);
    ck_assert_int_eq(stats_of(pool).connections, 4);
    /* the maintenance thread runs once a second (bounded at 30 s) */
    long long t0 = dt_now_ms();
    while (stats_of(pool).connections > 1 && dt_now_ms() - t0 < 30000)
        usleep(20000);
    ck_assert_int_eq(stats_of(pool).connections, 1);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_refills_min_after_connections_die) {
    ds_config *cfg = dt_config(db_url(), 2, 4);
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "application_name", "dt_refill", &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    /* the two backends pool_min opened, which are about to die */
    long long old1 = dt_sql_int(db_url(), "SELECT min(pid) FROM pg_stat_activity "
                                          "WHERE application_name = 'dt_refill'");
    long long old2 = dt_sql_int(db_url(), "SELECT max(pid) FROM pg_stat_activity "
                                          "WHERE application_name = 'dt_refill'");
    ck_assert_int_ne(old1, old2);
    dt_sql(db_url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'dt_refill'");
    /* until the old ones are gone and two new ones are connected and idle
     * in the pool (at most 30 s): counting the old ones would pass at once */
    char sql[192];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE pid NOT IN (%lld, %lld)) * 10 + "
             "count(*) FILTER (WHERE pid IN (%lld, %lld)) FROM pg_stat_activity "
             "WHERE application_name = 'dt_refill'",
             old1, old2, old1, old2);
    long long deadline = dt_now_ms() + 30000;
    long long state = 0; /* new * 10 + old */
    while (dt_now_ms() < deadline) {
        state = dt_sql_int(db_url(), sql);
        if (state == 20 && stats_of(pool).idle == 2)
            break;
        usleep(20000);
    }
    ck_assert_msg(state == 20, "new backends * 10 + old ones: %lld, want 20",
                  state);
    ck_assert_int_eq(stats_of(pool).connections, 2);
    ds_pool_close(pool);
}
END_TEST

/* ---- closing --------------------------------------------------------------- */

static void *wait_on_closed(void *p) {
    ds_pool *pool = p;
    ds_conn *c;
    ds_error err = {0};
    ds_status st = ds_pool_acquire_timeout(pool, 10000, &c, &err);
    return (void *)(intptr_t)st;
}

START_TEST(test_pool_close_wakes_waiters_and_outlives_leases) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *held;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &held, &err), DS_OK);
    pthread_t th;
    pthread_create(&th, NULL, wait_on_closed, pool);
    while (stats_of(pool).waiters != 1)
        usleep(2000);
    ds_pool_close(pool);
    void *ret;
    pthread_join(th, &ret);
    ck_assert_int_eq((int)(intptr_t)ret, DS_ERR_CLOSED);
    /* the lease still works and its release frees the pool */
    ck_assert_int_eq(conn_int(held, "SELECT 3"), 3);
    ds_pool_release(held);
}
END_TEST

/* ---- replicas, multi-host, pooler, TLS ---------------------------------- */

START_TEST(test_pool_acquire_read_uses_replica) {
    ds_config *cfg = dt_config(db_url(), 1, 2);
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "DATABASE_REPLICA_URLS",
                                 dt_env("DATABASE_REPLICA_URLS"), &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    for (int i = 0; i < 3; i++) {
        ds_conn *c;
        ck_assert_int_eq(ds_pool_acquire_read(pool, &c, &err), DS_OK);
        ck_assert(ds_pool_conn_is_replica(c));
        ck_assert(conn_bool(c, "SELECT pg_is_in_recovery()"));
        ds_pool_release(c);
    }
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert(!conn_bool(c, "SELECT pg_is_in_recovery()"));
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_acquire_read_falls_back_to_primary) {
    ds_config *cfg = dt_config(db_url(), 1, 2);
    ds_error err = {0};
    /* port 1 on loopback: nothing listens there */
    ds_status st = ds_config_set(cfg, "DATABASE_REPLICA_URLS",
                                 "postgresql://ds:nope@127.0.0.1:1/ds", &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    for (int i = 0; i < 2; i++) {
        ds_conn *c;
        st = ds_pool_acquire_read(pool, &c, &err);
        ck_assert_ds_ok(st, err);
        ck_assert(!ds_pool_conn_is_replica(c));
        ck_assert(!conn_bool(c, "SELECT pg_is_in_recovery()"));
        ds_pool_release(c);
    }
    ds_pool_close(pool);
}
END_TEST

/* Builds postgresql://ds:pw@127.0.0.1:<replica port>,127.0.0.1:<primary port>/ds */
static char *multi_host_url(void) {
    const char *primary = db_url();
    const char *replica = dt_env("DATABASE_REPLICA_URLS");
    const char *at_p = strrchr(primary, '@'), *at_r = strrchr(replica, '@');
    ck_assert_ptr_nonnull(at_p);
    ck_assert_ptr_nonnull(at_r);
    size_t host_r = strcspn(at_r + 1, "/");
    char *url = malloc(1024);
    snprintf(url, 1024, "%.*s@%.*s,%s", (int)(at_p - primary), primary,
             (int)host_r, at_r + 1, at_p + 1);
    /* add target_session_attrs to the query */
    strncat(url, strchr(url, '?') ? "&target_session_attrs=read-write"
                                  : "?target_session_attrs=read-write",
            1023 - strlen(url));
    return url;
}

START_TEST(test_pool_multi_host_read_write_passes_through) {
    char *url = multi_host_url();
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    /* the replica is listed first but is read-only: libpq skips it */
    ck_assert(!conn_bool(c, "SELECT pg_is_in_recovery()"));
    ds_pool_release(c);
    ds_pool_close(pool);
    free(url);
}
END_TEST

/* ---- failover: a read-only server, a restarted pooler ------------------ */

/* `url` with one more query parameter (malloc'd). */
static char *url_with_param(const char *url, const char *param) {
    size_t n = strlen(url) + strlen(param) + 2;
    char *out = malloc(n);
    ck_assert_ptr_nonnull(out);
    snprintf(out, n, "%s%c%s", url, strchr(url, '?') ? '&' : '?', param);
    return out;
}

START_TEST(test_pool_refuses_standby_as_primary) {
    const char *standby = dt_env("DATABASE_REPLICA_URLS");
    ds_config *cfg = dt_config(standby, 0, 1);
    ds_pool *pool = NULL;
    ds_error err = {0};
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_ptr_null(pool);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_msg(strstr(err.message, "read-only"), "%s", err.message);
    ck_assert_ptr_null(strstr(err.message, "postgresql://")); /* no URL */

    /* Asking for any server is how a read-only pool on a standby is made. */
    char *any = url_with_param(standby, "target_session_attrs=any");
    pool = dt_pool(any, 1, 1);
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert(conn_bool(c, "SELECT pg_is_in_recovery()"));
    /* There a write is the caller's mistake, not a failover. */
    st = ds_sql_exec(c, "CREATE TEMP TABLE dt_nope (x int)", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_str_eq(err.sqlstate, "25006");
    ds_pool_release(c);
    ds_pool_close(pool);
    free(any);
}
END_TEST

/* The value libpq uses for `keyword` on this lease ("" when unset). */
static void conn_option(ds_conn *c, const char *keyword, char *buf, size_t cap) {
    PQconninfoOption *opts = PQconninfo(ds_pool_conn_pg(c));
    ck_assert_ptr_nonnull(opts);
    buf[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0 && o->val)
            snprintf(buf, cap, "%s", o->val);
    PQconninfoFree(opts);
}

/* A host that goes silent must not hold a call for the kernel's minutes:
 * the pool asks for tcp_user_timeout and keepalives unless the URL sets
 * its own (the network-fault suite shows the effect). */
START_TEST(test_pool_sets_tcp_timeouts_unless_the_url_does) {
    ds_pool *pool = dt_pool(db_url(), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    char v[32];
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    conn_option(c, "tcp_user_timeout", v, sizeof v);
    ck_assert_str_eq(v, "30000");
    conn_option(c, "keepalives", v, sizeof v);
    ck_assert_str_eq(v, "1");
    conn_option(c, "keepalives_idle", v, sizeof v);
    ck_assert_str_eq(v, "30");
    ds_pool_release(c);
    ds_pool_close(pool);

    char *url = url_with_param(db_url(), "tcp_user_timeout=1234&keepalives_idle=7");
    pool = dt_pool(url, 1, 1);
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    conn_option(c, "tcp_user_timeout", v, sizeof v);
    ck_assert_str_eq(v, "1234");
    conn_option(c, "keepalives_idle", v, sizeof v);
    ck_assert_str_eq(v, "7");
    ds_pool_release(c);
    ds_pool_close(pool);
    free(url);
}
END_TEST

/* Whether a fresh session on `url` starts read-only, as the server is now
 * configured. */
static bool fresh_session_read_only(const char *url) {
    return dt_sql_int(url, "SELECT (current_setting("
                           "'default_transaction_read_only') = 'on')::int") == 1;
}

static void set_cluster_read_only(const char *admin_url, bool on) {
    dt_sql(admin_url, on ? "ALTER SYSTEM SET default_transaction_read_only = on"
                         : "ALTER SYSTEM RESET default_transaction_read_only");
    dt_sql(admin_url, "SELECT pg_reload_conf()");
    long long t0 = dt_now_ms();
    while (fresh_session_read_only(admin_url) != on && dt_now_ms() - t0 < 10000)
        usleep(20000);
}

/* A primary that turns read-only under an open connection (what a failover
 * tool does to a demoted primary, and managed hosts to a full disk): the
 * in-flight write gets a retryable DS_ERR_CONNECTION with SQLSTATE 25006,
 * the connection is discarded, a new one is refused while the server stays
 * read-only, and the pool reconnects once it is writable again. */
START_TEST(test_pool_discards_connection_when_server_turns_read_only) {
    char *url = dt_create_db("readonly");
    dt_sql(url, "CREATE TABLE dt_ro (x int)");
    /* The session that flips the setting back must itself be writable. */
    char *admin = url_with_param(db_url(),
                                 "options=-c%20default_transaction_read_only%3Doff");
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(ds_sql_exec(c, "INSERT INTO dt_ro VALUES (1)", NULL, 0, NULL, &err),
                     DS_OK);
    /* The caller's own read-only transaction is a statement error: the
     * connection stays. */
    long long pid = conn_int(c, "SELECT pg_backend_pid()");
    ck_assert_int_eq(ds_sql_exec(c, "BEGIN READ ONLY", NULL, 0, NULL, &err), DS_OK);
    ds_status st = ds_sql_exec(c, "INSERT INTO dt_ro VALUES (9)", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_str_eq(err.sqlstate, "25006");
    ck_assert(!ds_error_is_retryable(&err));
    ds_pool_release(c);
    uint64_t discarded = stats_of(pool).discarded;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(conn_int(c, "SELECT pg_backend_pid()"), pid);

    set_cluster_read_only(admin, true);
    ds_error write_err = {0};
    ds_status write_st = ds_sql_exec(c, "INSERT INTO dt_ro VALUES (2)", NULL, 0,
                                 NULL, &write_err);
    ds_pool_release(c);
    uint64_t discarded_after = stats_of(pool).discarded;
    ds_error reopen_err = {0};
    ds_status reopen_st = ds_pool_acquire(pool, &c, &reopen_err);
    if (reopen_st == DS_OK)
        ds_pool_release(c);
    set_cluster_read_only(admin, false); /* before any assertion can stop us */

    ck_assert_ds_status(write_st, DS_ERR_CONNECTION, write_err);
    ck_assert_str_eq(write_err.sqlstate, "25006");
    ck_assert(ds_error_is_retryable(&write_err));
    ck_assert_uint_eq(discarded_after, discarded + 1);
    ck_assert_ds_status(reopen_st, DS_ERR_CONNECTION, reopen_err);
    ck_assert(ds_error_is_retryable(&reopen_err));
    ck_assert_msg(strstr(reopen_err.message, "read-only"), "%s", reopen_err.message);

    ck_assert(!fresh_session_read_only(admin));
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(ds_sql_exec(c, "INSERT INTO dt_ro VALUES (3)", NULL, 0, NULL, &err),
                     DS_OK);
    ds_pool_release(c);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM dt_ro"), 2);
    ds_pool_close(pool);
    free(admin);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* PgBouncer stopped and started under load: every failed call is
 * retryable, and the load flows again without any action from us. */
START_TEST(test_pool_survives_pgbouncer_restart) {
    ds_config *cfg = dt_config(dt_env("DATABASE_POOLER_URL"), 2, 4);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "statement_mode", "pooler", &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "acquire_timeout_ms", 2000, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    survives_restart_under_load(pool, "pgbouncer");
    ds_pool_close(pool);
}
END_TEST

/* ---- read-your-writes --------------------------------------------------- */

static long long conn_count(ds_conn *c, int id) {
    ds_sql_param p[] = {ds_sql_param_int64(id)};
    ds_sql_result *res;
    ds_error err = {0};
    ds_status st = ds_sql_exec(c, "SELECT count(*) FROM dt_ryw WHERE id = $1", p, 1,
                           &res, &err);
    ck_assert_ds_ok(st, err);
    int64_t v = -1;
    st = ds_sql_result_int64(res, 0, 0, &v, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    return v;
}

/* Where a read lease came from and whether it saw row `id`. */
typedef struct {
    ds_status st;
    bool replica;
    long long seen;
} read_outcome;

static read_outcome read_with(ds_pool *pool, const ds_read_token *tok,
                              int wait_ms, int id) {
    read_outcome o = {0};
    ds_conn *c = NULL;
    ds_error err = {0};
    o.st = tok ? ds_pool_acquire_read_token(pool, tok, wait_ms, &c, &err)
               : ds_pool_acquire_read(pool, &c, &err);
    if (o.st == DS_OK) {
        o.replica = ds_pool_conn_is_replica(c);
        o.seen = conn_count(c, id);
        ds_pool_release(c);
    }
    return o;
}

/* With the local replica's replay paused, a read with the token of a write
 * never misses it (the primary serves it); a read without one goes to the
 * replica and does miss it; once replay resumes, the token is served by
 * the replica that caught up. */
START_TEST(test_pool_read_token_never_misses_a_write_on_a_paused_replica) {
    char *url = dt_create_db("ryw");
    dt_sql(url, "CREATE TABLE dt_ryw (id int PRIMARY KEY)");
    char *replica = dt_replica_when_ready(url, "SELECT count(*) FROM pg_class "
                                               "WHERE relname = 'dt_ryw'");
    ds_config *cfg = dt_config(url, 1, 3);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "DATABASE_REPLICA_URLS", replica, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);

    dt_replica_pause_replay(replica);
    ck_assert_ds_ok(ds_sql_exec_pool(pool, "INSERT INTO dt_ryw VALUES (1)", NULL, 0,
                                 NULL, &err), err);
    ds_read_token tok;
    ds_status tok_st = ds_pool_read_token(pool, &tok, &err);
    read_outcome plain = read_with(pool, NULL, 0, 1);
    read_outcome now = read_with(pool, &tok, 0, 1);
    read_outcome waited = read_with(pool, &tok, 200, 1);
    dt_sql(replica, "SELECT pg_wal_replay_resume()"); /* before any assertion */
    read_outcome caught_up = read_with(pool, &tok, 20000, 1);

    ck_assert_ds_ok(tok_st, err);
    ck_assert_uint_gt(tok.lsn, 0);
    /* the setup is meaningful: without a token the replica misses it */
    ck_assert_ds_ok(plain.st, err);
    ck_assert(plain.replica);
    ck_assert_int_eq(plain.seen, 0);
    /* with one, never */
    ck_assert_ds_ok(now.st, err);
    ck_assert(!now.replica);
    ck_assert_int_eq(now.seen, 1);
    ck_assert_ds_ok(waited.st, err);
    ck_assert(!waited.replica);
    ck_assert_int_eq(waited.seen, 1);
    ck_assert_ds_ok(caught_up.st, err);
    ck_assert(caught_up.replica);
    ck_assert_int_eq(caught_up.seen, 1);

    /* a token is the primary's: not taken on a replica lease */
    ds_conn *c;
    ck_assert_ds_ok(ds_pool_acquire_read(pool, &c, &err), err);
    ck_assert(ds_pool_conn_is_replica(c));
    ck_assert_int_eq(ds_pool_conn_read_token(c, &tok, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(tok.lsn, 0);
    ds_pool_release(c);
    ds_pool_close(pool);
    free(replica);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_pool_read_token_errors) {
    ds_pool *pool = dt_pool(db_url(), 0, 1);
    ds_read_token tok = {42};
    ds_conn *c = NULL;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_read_token(NULL, &tok, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(tok.lsn, 0);
    ck_assert_int_eq(ds_pool_read_token(pool, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_conn_read_token(NULL, &tok, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire_read_token(NULL, &tok, 0, &c, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire_read_token(pool, &tok, -1, &c, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(ds_pool_acquire_read_token(pool, &tok, 0, NULL, &err),
                     DS_ERR_INVALID);
    /* without replicas, a token read is a primary read */
    ck_assert_ds_ok(ds_pool_read_token(pool, &tok, &err), err);
    ck_assert_ds_ok(ds_pool_acquire_read_token(pool, &tok, 0, &c, &err), err);
    ck_assert(!ds_pool_conn_is_replica(c));
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

typedef struct {
    ds_pool *pool;
    atomic_int *failures;
} pooler_arg;

static ds_status pooler_tx(ds_conn *c, void *ud, ds_error *err) {
    (void)ud;
    ds_sql_param p[] = {ds_sql_param_int64(5), ds_sql_param_text("x")};
    ds_sql_result *res;
    ds_status st = ds_sql_exec(c, "SELECT $1::int8 * 2, length($2)", p, 2, &res, err);
    ds_sql_result_free(res);
    return st;
}

static void *pooler_main(void *p) {
    pooler_arg *a = p;
    for (int i = 0; i < 300; i++) {
        ds_error err = {0};
        ds_sql_param params[] = {ds_sql_param_int64(i), ds_sql_param_text("pgbouncer")};
        ds_sql_result *res = NULL;
        ds_status st = ds_sql_exec_pool(a->pool, "SELECT $1::int8 + 1, upper($2)",
                                    params, 2, &res, &err);
        int64_t v = -1;
        if (st == DS_OK)
            st = ds_sql_result_int64(res, 0, 0, &v, &err);
        if (st != DS_OK || v != i + 1) {
            fprintf(stderr, "pooler failure: %s\n", err.message);
            atomic_fetch_add(a->failures, 1);
        }
        ds_sql_result_free(res);
        if (i % 50 == 0 && ds_tx_run(a->pool, NULL, pooler_tx, NULL, &err) != DS_OK) {
            fprintf(stderr, "pooler tx failure: %s\n", err.message);
            atomic_fetch_add(a->failures, 1);
        }
    }
    return NULL;
}

START_TEST(test_pool_pooler_mode_through_pgbouncer) {
    ds_config *cfg = dt_config(dt_env("DATABASE_POOLER_URL"), 2, 6);
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "statement_mode", "pooler", &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set_int(cfg, "statement_timeout_ms", 5000, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool;
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ck_assert(ds_pool_is_pooler_mode(pool));
    atomic_int failures = 0;
    pooler_arg arg = {pool, &failures};
    pthread_t th[6];
    for (int i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, pooler_main, &arg);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&failures), 0);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_pool_tls_verify_full_and_wrong_ca) {
    const char *tls_url = dt_env("DATABASE_TLS_URL");
    ds_pool *pool = dt_pool(tls_url, 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert(conn_bool(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"));
    ds_pool_release(c);
    ds_pool_close(pool);

    /* the same URL trusting an unrelated CA must be refused */
    const char *ca = dt_env("DS_TEST_TLS_CA");
    const char *wrong = dt_env("DS_TEST_TLS_WRONG_CA");
    const char *pos = strstr(tls_url, ca);
    ck_assert_ptr_nonnull(pos);
    char url[1024];
    snprintf(url, sizeof url, "%.*s%s%s", (int)(pos - tls_url), tls_url, wrong,
             pos + strlen(ca));
    ds_config *cfg = dt_config(url, 1, 1);
    pool = (ds_pool *)0x1;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_ptr_null(pool);
    ck_assert_msg(strstr(err.message, "certificate") != NULL, "unclear: %s",
                  err.message);
}
END_TEST

START_TEST(test_pool_bad_password_never_echoed) {
    const char *url = db_url();
    const char *at = strrchr(url, '@');
    ck_assert_ptr_nonnull(at);
    char bad[1024];
    snprintf(bad, sizeof bad, "postgresql://ds:WrongPassw0rdXYZ%s", at);
    ds_config *cfg = dt_config(bad, 1, 1);
    ds_pool *pool;
    ds_error err = {0};
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "password authentication failed"));
    ck_assert_ptr_null(strstr(err.message, "WrongPassw0rdXYZ"));
    /* nothing listening */
    cfg = dt_config("postgresql://ds:WrongPassw0rdXYZ@127.0.0.1:1/ds", 1, 1);
    st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_ptr_null(strstr(err.message, "WrongPassw0rdXYZ"));
}
END_TEST

/* ---- bad arguments ----------------------------------------------------------- */

START_TEST(test_pool_errors_null_arguments) {
    ds_error err = {0};
    ds_pool *pool = NULL;
    ds_conn *c = NULL;
    ds_pool_stats s = DS_POOL_STATS_INIT;
    ck_assert_int_eq(ds_pool_open(NULL, &pool, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_open(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_open_url(NULL, &pool, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire(NULL, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire_read(NULL, &c, NULL), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire_timeout(NULL, 10, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_stats_get(NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_tx_run(NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(ds_pool_conn_pg(NULL));
    ck_assert(!ds_pool_conn_is_replica(NULL));
    ck_assert(!ds_pool_is_pooler_mode(NULL));
    ds_pool_conn_discard(NULL);
    ds_pool_release(NULL);
    ds_pool_close(NULL);

    ds_config *cfg;
    ck_assert_int_eq(ds_config_new(&cfg, &err), DS_OK);
    ck_assert_int_eq(ds_pool_open(cfg, &pool, &err), DS_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "DATABASE_URL"));
    ck_assert_int_eq(ds_config_set(cfg, "database_url", db_url(), &err), DS_OK);
    ck_assert_int_eq(ds_config_set_int(cfg, "pool_min", 5, &err), DS_OK);
    ck_assert_int_eq(ds_config_set_int(cfg, "pool_max", 2, &err), DS_OK);
    ck_assert_int_eq(ds_pool_open(cfg, &pool, &err), DS_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_POOL_MIN"));
    ds_config_free(cfg);

    pool = dt_pool(db_url(), 0, 1);
    ck_assert_int_eq(ds_pool_acquire(pool, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_acquire_timeout(pool, -5, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_pool_stats_get(pool, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_tx_run(pool, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ds_pool_close(pool);
}
END_TEST

Suite *ds_test_pool_suite(void) {
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("basics");
    tcase_add_test(tc, test_pool_open_prewarms_to_min);
    tcase_add_test(tc, test_pool_open_url_shorthand);
    suite_add_tcase(s, tc);
    tc = tcase_create("concurrency");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_8_threads_10000_acquires_no_leak);
    tcase_add_test(tc, test_pool_acquire_times_out_when_exhausted);
    tcase_add_test(tc, test_pool_waiters_served_first_come_first_served);
    tcase_add_test(tc, test_pool_oversubscribed_threads_all_served);
    tcase_add_test(tc, test_pool_waiter_gets_connection_a_busy_thread_stops_using);
    tcase_add_test(tc, test_pool_barging_overtakes_a_waiter_a_bounded_number_of_times);
    tcase_add_test(tc, test_pool_overtake_zero_serves_in_arrival_order);
    tcase_add_test(tc, test_pool_release_hands_over_at_once_without_a_quick_return);
    tcase_add_test(tc, test_pool_waiters_served_in_order_after_every_keeper_stops);
    suite_add_tcase(s, tc);
    tc = tcase_create("release");
    tcase_add_test(tc, test_pool_release_rolls_back_open_transaction);
    tcase_add_test(tc, test_pool_release_discards_busy_or_marked_connection);
    suite_add_tcase(s, tc);
    tc = tcase_create("healing");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_heals_terminated_backend);
    tcase_add_test(tc, test_pool_in_flight_query_on_killed_backend_is_retryable);
    tcase_add_test(tc, test_pool_refills_min_after_connections_die);
    tcase_add_test(tc, test_pool_survives_postgres_restart);
    suite_add_tcase(s, tc);
    tc = tcase_create("read_your_writes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_read_token_never_misses_a_write_on_a_paused_replica);
    tcase_add_test(tc, test_pool_read_token_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("failover");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_refuses_standby_as_primary);
    tcase_add_test(tc, test_pool_sets_tcp_timeouts_unless_the_url_does);
    tcase_add_test(tc, test_pool_discards_connection_when_server_turns_read_only);
    tcase_add_test(tc, test_pool_survives_pgbouncer_restart);
    suite_add_tcase(s, tc);
    tc = tcase_create("tx");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tx_run_retries_serialization_failure);
    tcase_add_test(tc, test_tx_run_rolls_back_on_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("settings");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pool_statement_timeout_applies);
    tcase_add_test(tc, test_pool_after_connect_hook);
    tcase_add_test(tc, test_pool_max_lifetime_replaces_connections);
    tcase_add_test(tc, test_pool_idle_timeout_shrinks_to_min);
    suite_add_tcase(s, tc);
    tc = tcase_create("close");
    tcase_add_test(tc, test_pool_close_wakes_waiters_and_outlives_leases);
    suite_add_tcase(s, tc);
    tc = tcase_create("topology");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pool_acquire_read_uses_replica);
    tcase_add_test(tc, test_pool_acquire_read_falls_back_to_primary);
    tcase_add_test(tc, test_pool_multi_host_read_write_passes_through);
    tcase_add_test(tc, test_pool_pooler_mode_through_pgbouncer);
    tcase_add_test(tc, test_pool_tls_verify_full_and_wrong_ca);
    tcase_add_test(tc, test_pool_bad_password_never_echoed);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_pool_errors_null_arguments);
    suite_add_tcase(s, tc);
    return s;
}
