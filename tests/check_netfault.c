/* Network faults: a PostgreSQL server, a PgBouncer in front of it and a
 * Redis server behind a network namespace of their own (a veth pair to this host), with nftables rules
 * inside the namespace to drop or reject their packets. Shows that a
 * silent host never holds a call past its deadline, that a rejected port
 * fails fast, and that a healed partition is recovered without restarting
 * anything. Needs root, `ip` and `nft` (Debian iproute2, nftables); skips
 * with the reason otherwise. Bounds asserted below are generous (several
 * times the deadline): the point is "seconds, not the kernel's minutes". */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dt_netns.h"

/* A pool on `url` with a 1 s connect timeout and `extra` URL options;
 * `pooler` for a PgBouncer in transaction mode. */
static ds_status open_pool_mode(const char *url, const char *extra, bool pooler,
                                int max, ds_pool **out, ds_error *err) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", url, extra);
    ds_config *cfg = dt_config(full, 0, max);
    ds_status st = ds_config_set_int(cfg, "connect_timeout_ms", 1000, err);
    if (st == DS_OK && pooler)
        st = ds_config_set(cfg, "statement_mode", "pooler", err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "acquire_timeout_ms", 3000, err);
    if (st == DS_OK)
        st = ds_pool_open(cfg, out, err);
    ds_config_free(cfg);
    return st;
}

static ds_status query_one(ds_pool *pool, ds_error *err) {
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, err);
    ds_sql_result_free(res);
    return st;
}

/* Connects to a silent host (packets to `port` dropped): fails within
 * the 1 s connect deadline (bounded generously), retryable. */
static void silent_host_fails_connect_within_deadline(dt_netns *e, const char *url,
                                                      bool pooler, int port) {
    dt_netns_rule(e, "drop", port);
    ds_pool *pool = NULL;
    ds_error err = {0};
    long long t0 = dt_now_ms();
    ds_status st = open_pool_mode(url, "", pooler, 2, &pool, &err);
    long long took = dt_now_ms() - t0;
    dt_netns_down(e);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_msg(strstr(err.message, "timed out"), "%s", err.message);
    ck_assert_msg(took < 15000, "connect took %lld ms with a 1000 ms deadline", took);
}

/* Connects to a port that answers with a TCP reset: refused at once, not
 * after the connect deadline (20 s here, so waiting for it shows). */
static void rejected_port_fails_fast(dt_netns *e, const char *url, bool pooler,
                                     int port) {
    dt_netns_rule(e, "reject", port);
    ds_pool *pool = NULL;
    ds_error err = {0};
    ds_config *cfg = dt_config(url, 0, 2);
    if (pooler)
        ck_assert_ds_ok(ds_config_set(cfg, "statement_mode", "pooler", &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "connect_timeout_ms", 20000, &err), err);
    long long t0 = dt_now_ms();
    ds_status st = ds_pool_open(cfg, &pool, &err);
    long long took = dt_now_ms() - t0;
    ds_config_free(cfg);
    dt_netns_down(e);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_msg(strstr(err.message, "refused"), "%s", err.message);
    ck_assert_msg(took < 20000, "a refused connect waited for the 20 s deadline "
                  "(%lld ms)", took);
}

/* Packets to `port` dropped on an established connection: the call in
 * flight fails (retryable) once its data stays unacknowledged for
 * tcp_user_timeout, the next one within the connect deadline, and the
 * same pool works again once the partition heals. */
static void partition_mid_session_bounded_and_healed(dt_netns *e, const char *url,
                                                     bool pooler, int port) {
    ds_pool *pool = NULL;
    ds_error err = {0};
    /* 2 s instead of the library's 30 s default, to keep the test short */
    ds_status open_st = open_pool_mode(url, "&tcp_user_timeout=2000", pooler, 2,
                                       &pool, &err);
    if (open_st != DS_OK) {
        dt_netns_down(e);
        ck_abort_msg("open: %s", err.message);
    }
    ds_error before_err = {0}, cut_err = {0}, again_err = {0}, healed_err = {0};
    ds_status before = query_one(pool, &before_err);
    dt_netns_rule(e, "drop", port);
    long long t0 = dt_now_ms();
    ds_status cut = query_one(pool, &cut_err);
    long long cut_ms = dt_now_ms() - t0;
    t0 = dt_now_ms();
    ds_status again = query_one(pool, &again_err);
    long long again_ms = dt_now_ms() - t0;
    int heal_attempts = 0;
    ds_status healed = dt_netns_heal_pool(e, pool, &heal_attempts, &healed_err);
    ds_pool_close(pool);
    dt_netns_down(e);

    ck_assert_ds_ok(before, before_err);
    ck_assert_ds_status(cut, DS_ERR_CONNECTION, cut_err);
    ck_assert(ds_error_is_retryable(&cut_err));
    ck_assert_msg(cut_ms < 20000, "in-flight call took %lld ms (tcp_user_timeout 2 s)",
                  cut_ms);
    ck_assert_int_ne(again, DS_OK);
    ck_assert(ds_error_is_retryable(&again_err));
    ck_assert_msg(again_ms < 15000, "next call took %lld ms", again_ms);
    ck_assert_msg(healed == DS_OK, "no recovery after %d attempts: %s",
                  heal_attempts, healed_err.message);
}

START_TEST(test_netfault_pg_silent_host_fails_connect_within_deadline) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    dt_netns_up(&e);
    dt_netns_start_pg(&e);
    silent_host_fails_connect_within_deadline(&e, e.pg_url, false, 5432);
}
END_TEST

START_TEST(test_netfault_pg_rejected_port_fails_fast) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    dt_netns_up(&e);
    dt_netns_start_pg(&e);
    rejected_port_fails_fast(&e, e.pg_url, false, 5432);
}
END_TEST

START_TEST(test_netfault_pg_partition_mid_session_bounded_and_healed) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    dt_netns_up(&e);
    dt_netns_start_pg(&e);
    partition_mid_session_bounded_and_healed(&e, e.pg_url, false, 5432);
}
END_TEST

/* Redis behind a silent network: every command returns within the
 * handle's command timeout (the cache falls back to its loader), and the
 * handle recovers once the path heals. */
START_TEST(test_netfault_redis_silent_host_bounded_and_healed) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    dt_netns_up(&e);
    dt_netns_start_redis(&e);
    ds_config *cfg = dt_config(dt_env("DATABASE_URL"), 0, 1);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "redis_url", e.redis_url, &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_connect_timeout_ms", 500, &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_command_timeout_ms", 500, &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_retry_ms", 100, &err), err);
    ds_redis *redis = NULL;
    ds_status open_st = ds_redis_open(cfg, &redis, &err);
    ds_config_free(cfg);
    if (open_st != DS_OK) {
        dt_netns_down(&e);
        ck_abort_msg("redis open: %s", err.message);
    }
    ds_error e1 = {0}, e2 = {0}, e3 = {0};
    ds_status before = ds_redis_ping(redis, &e1);
    dt_netns_rule(&e, "drop", 6379);
    long long t0 = dt_now_ms();
    ds_status cut = ds_redis_ping(redis, &e2);
    long long cut_ms = dt_now_ms() - t0;
    ds_status healed = dt_netns_heal_redis(&e, redis, &e3);
    ds_redis_close(redis);
    dt_netns_down(&e);

    ck_assert_ds_ok(before, e1);
    ck_assert_ds_status(cut, DS_ERR_REDIS, e2);
    ck_assert(ds_error_is_retryable(&e2));
    ck_assert_msg(cut_ms < 10000, "a ping to a silent Redis took %lld ms "
                  "(command timeout 500 ms)", cut_ms);
    ck_assert_ds_ok(healed, e3);
}
END_TEST

/* ---- PgBouncer ---------------------------------------------------------- */

/* PostgreSQL and PgBouncer in the namespace; the library talks to
 * PgBouncer only. */
static void bouncer_up(dt_netns *e) {
    dt_netns_up(e);
    dt_netns_start_pg(e);
    dt_netns_start_pgbouncer(e);
}

START_TEST(test_netfault_bouncer_silent_host_fails_connect_within_deadline) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    bouncer_up(&e);
    silent_host_fails_connect_within_deadline(&e, e.bouncer_url, true, 6432);
}
END_TEST

START_TEST(test_netfault_bouncer_rejected_port_fails_fast) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    bouncer_up(&e);
    rejected_port_fails_fast(&e, e.bouncer_url, true, 6432);
}
END_TEST

START_TEST(test_netfault_bouncer_partition_mid_session_bounded_and_healed) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    bouncer_up(&e);
    partition_mid_session_bounded_and_healed(&e, e.bouncer_url, true, 6432);
}
END_TEST

typedef struct {
    ds_pool *pool;
    atomic_bool stop;
    atomic_int ok, retryable, other;
    atomic_llong max_call_ms;
} bouncer_load;

static void *bouncer_load_main(void *p) {
    bouncer_load *a = p;
    while (!atomic_load(&a->stop)) {
        ds_error err = {0};
        long long t0 = dt_now_ms();
        ds_status st = ds_sql_exec_pool(a->pool, "SELECT pg_sleep(0.005)", NULL, 0,
                                    NULL, &err);
        long long took = dt_now_ms() - t0;
        long long max = atomic_load(&a->max_call_ms);
        while (took > max && !atomic_compare_exchange_weak(&a->max_call_ms, &max, took))
            ;
        if (st == DS_OK) {
            atomic_fetch_add(&a->ok, 1);
        } else if (ds_error_is_retryable(&err)) {
            atomic_fetch_add(&a->retryable, 1);
            usleep(20000);
        } else {
            fprintf(stderr, "non-retryable while PgBouncer restarts: %s: %s\n",
                    ds_status_str(st), err.message);
            atomic_fetch_add(&a->other, 1);
            usleep(20000);
        }
    }
    return NULL;
}

/* PgBouncer killed (SIGKILL) under load from 4 threads and started again a
 * second later: calls in between fail with retryable errors, none hangs
 * past its deadlines, and the load flows again with no action from us. */
START_TEST(test_netfault_bouncer_killed_mid_load_recovers) {
    DT_NETNS_SKIP_UNLESS_AVAILABLE();
    dt_netns e;
    bouncer_up(&e);
    bouncer_load a = {0};
    ds_error err = {0};
    ds_config *cfg = dt_config(e.bouncer_url, 2, 4);
    ck_assert_ds_ok(ds_config_set(cfg, "statement_mode", "pooler", &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "connect_timeout_ms", 1000, &err), err);
    ck_assert_ds_ok(ds_config_set_int(cfg, "acquire_timeout_ms", 3000, &err), err);
    ds_status open_st = ds_pool_open(cfg, &a.pool, &err);
    ds_config_free(cfg);
    if (open_st != DS_OK) {
        dt_netns_down(&e);
        ck_abort_msg("open: %s", err.message);
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, bouncer_load_main, &a);
    long long deadline = dt_now_ms() + 30000;
    while (atomic_load(&a.ok) < 20 && dt_now_ms() < deadline)
        usleep(10000);
    int ok_before_kill = atomic_load(&a.ok);
    int failed_before_kill = atomic_load(&a.retryable);
    dt_netns_kill_pgbouncer(&e);
    /* down until the load has seen it: some call failed (at most 20 s) */
    deadline = dt_now_ms() + 20000;
    while (atomic_load(&a.retryable) == failed_before_kill && dt_now_ms() < deadline)
        usleep(10000);
    int failed_while_down = atomic_load(&a.retryable) - failed_before_kill;
    dt_netns_start_pgbouncer(&e);
    int ok_at_restart = atomic_load(&a.ok);
    deadline = dt_now_ms() + 20000;
    while (atomic_load(&a.ok) < ok_at_restart + 20 && dt_now_ms() < deadline)
        usleep(10000);
    atomic_store(&a.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    int ok_after = atomic_load(&a.ok) - ok_at_restart;
    ds_pool_stats stats = DS_POOL_STATS_INIT;
    ds_status stats_st = ds_pool_stats_get(a.pool, &stats, &err);
    ds_pool_close(a.pool);
    dt_netns_down(&e);

    ck_assert_int_ge(ok_before_kill, 20);
    ck_assert_msg(failed_while_down > 0, "no call failed while PgBouncer was down");
    ck_assert_int_eq(atomic_load(&a.other), 0);
    ck_assert_msg(ok_after >= 20, "only %d calls succeeded after the restart", ok_after);
    /* acquire (3 s) + connect (1 s) deadlines, with room for a loaded machine */
    ck_assert_msg(atomic_load(&a.max_call_ms) < 15000, "a call took %lld ms",
                  (long long)atomic_load(&a.max_call_ms));
    ck_assert_ds_ok(stats_st, err);
    ck_assert_int_eq(stats.in_use, 0);
}
END_TEST

Suite *ds_test_netfault_suite(void) {
    Suite *s = suite_create("netfault");
    TCase *tc = tcase_create("postgres");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_netfault_pg_silent_host_fails_connect_within_deadline);
    tcase_add_test(tc, test_netfault_pg_rejected_port_fails_fast);
    tcase_add_test(tc, test_netfault_pg_partition_mid_session_bounded_and_healed);
    suite_add_tcase(s, tc);
    tc = tcase_create("pgbouncer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_netfault_bouncer_silent_host_fails_connect_within_deadline);
    tcase_add_test(tc, test_netfault_bouncer_rejected_port_fails_fast);
    tcase_add_test(tc, test_netfault_bouncer_partition_mid_session_bounded_and_healed);
    tcase_add_test(tc, test_netfault_bouncer_killed_mid_load_recovers);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_netfault_redis_silent_host_bounded_and_healed);
    suite_add_tcase(s, tc);
    return s;
}
