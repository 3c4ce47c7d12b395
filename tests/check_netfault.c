/* Network faults: a PostgreSQL server and a Redis server behind a network
 * namespace of their own (a veth pair to this host), with nftables rules
 * inside the namespace to drop or reject their packets. Shows that a
 * silent host never holds a call past its deadline, that a rejected port
 * fails fast, and that a healed partition is recovered without restarting
 * anything. Needs root, `ip` and `nft` (Debian iproute2, nftables); skips
 * with the reason otherwise. Bounds asserted below are generous (several
 * times the deadline): the point is "seconds, not the kernel's minutes". */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

typedef struct {
    char ns[32];        /* network namespace */
    char host_if[16];   /* our end of the veth pair */
    char host_ip[32];
    char ns_ip[32];
    char pgdata[128];
    char pg_url[256];
    char redis_url[256];
    char redis_dir[128];
    bool pg, redis;
} netfault_env;

/* Runs a shell command; returns its exit status (-1 when it did not run). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* Why the suite cannot run here, or NULL. */
static const char *unavailable(void) {
    if (geteuid() != 0)
        return "needs root (network namespaces, nftables)";
    if (sh("command -v ip >/dev/null && command -v nft >/dev/null") != 0)
        return "needs ip and nft (Debian iproute2, nftables; scripts/bootstrap)";
    if (sh("id -u dsservices >/dev/null 2>&1") != 0)
        return "needs the services user dsservices (scripts/services creates it)";
    return NULL;
}

/* Names unique to this test process: the runner forks one per test. */
static void env_names(netfault_env *e) {
    unsigned id = (unsigned)getpid() % 100000u;
    snprintf(e->ns, sizeof e->ns, "dsnf%u", id);
    snprintf(e->host_if, sizeof e->host_if, "dsnh%u", id);
    unsigned a = (id >> 6) & 255u, b = (id & 63u) * 4u;
    snprintf(e->host_ip, sizeof e->host_ip, "10.213.%u.%u", a, b + 1);
    snprintf(e->ns_ip, sizeof e->ns_ip, "10.213.%u.%u", a, b + 2);
    snprintf(e->pgdata, sizeof e->pgdata, "/var/tmp/dsnf-%u/pg", id);
    snprintf(e->redis_dir, sizeof e->redis_dir, "/var/tmp/dsnf-%u/redis", id);
}

static void env_down(netfault_env *e) {
    if (e->pg)
        sh("runuser -u dsservices -- %s/pg_ctl -D %s -m immediate -w -s stop "
           ">/dev/null 2>&1",
           dt_env("DS_PG_BINDIR"), e->pgdata);
    if (e->redis)
        sh("pkill -KILL -f 'redis-server %s:6379' 2>/dev/null", e->ns_ip);
    sh("ip netns del %s 2>/dev/null", e->ns);
    sh("ip link del %s 2>/dev/null", e->host_if);
    char dir[128];
    snprintf(dir, sizeof dir, "%s", e->pgdata);
    *strrchr(dir, '/') = '\0';
    sh("rm -rf '%s'", dir);
    e->pg = e->redis = false;
}

/* The namespace and the veth pair; fails the test on error. */
static void env_up(netfault_env *e) {
    memset(e, 0, sizeof *e);
    env_names(e);
    int rc = sh("set -e; ip netns add %s; "
                "ip link add %s type veth peer name %sn; "
                "ip link set %sn netns %s; "
                "ip addr add %s/30 dev %s; ip link set %s up; "
                "ip netns exec %s ip addr add %s/30 dev %sn; "
                "ip netns exec %s ip link set %sn up; "
                "ip netns exec %s ip link set lo up; "
                "ip netns exec %s nft add table inet dsnf; "
                "ip netns exec %s nft add chain inet dsnf in "
                "'{ type filter hook input priority 0; policy accept; }'",
                e->ns, e->host_if, e->ns, e->ns, e->ns, e->host_ip, e->host_if,
                e->host_if, e->ns, e->ns_ip, e->ns, e->ns, e->ns, e->ns, e->ns,
                e->ns);
    if (rc != 0) {
        env_down(e);
        ck_abort_msg("could not set up network namespace %s", e->ns);
    }
}

/* A throwaway PostgreSQL inside the namespace, trust auth from our end. */
static void env_start_pg(netfault_env *e) {
    const char *bin = dt_env("DS_PG_BINDIR");
    char dir[128];
    snprintf(dir, sizeof dir, "%s", e->pgdata);
    *strrchr(dir, '/') = '\0';
    int rc = sh("set -e; mkdir -p %s; chown dsservices: %s; "
                "runuser -u dsservices -- %s/initdb -D %s -U ds --auth=trust "
                "--no-sync -E UTF8 --locale=C >/dev/null; "
                "echo 'host all ds %s/32 trust' >> %s/pg_hba.conf; "
                "ip netns exec %s runuser -u dsservices -- %s/pg_ctl -D %s -w -s "
                "-l %s/log -o \"-c listen_addresses=%s -c port=5432 -k %s "
                "-c shared_buffers=16MB -c max_connections=20 -c fsync=off\" start",
                dir, dir, bin, e->pgdata, e->host_ip, e->pgdata, e->ns, bin,
                e->pgdata, dir, e->ns_ip, dir);
    if (rc != 0) {
        env_down(e);
        ck_abort_msg("could not start PostgreSQL in %s", e->ns);
    }
    e->pg = true;
    snprintf(e->pg_url, sizeof e->pg_url,
             "postgresql://ds@%s:5432/postgres?sslmode=disable", e->ns_ip);
}

static void env_start_redis(netfault_env *e) {
    int rc = sh("set -e; mkdir -p %s; chown dsservices: %s; "
                "ip netns exec %s runuser -u dsservices -- redis-server "
                "--bind %s --port 6379 --save '' --appendonly no "
                "--protected-mode no --dir %s --daemonize yes "
                "--logfile %s/log; "
                "for i in $(seq 100); do ip netns exec %s redis-cli -h %s ping "
                "2>/dev/null | grep -q PONG && exit 0; sleep 0.1; done; exit 1",
                e->redis_dir, e->redis_dir, e->ns, e->ns_ip, e->redis_dir,
                e->redis_dir, e->ns, e->ns_ip);
    e->redis = true;
    if (rc != 0) {
        env_down(e);
        ck_abort_msg("could not start Redis in %s", e->ns);
    }
    snprintf(e->redis_url, sizeof e->redis_url, "redis://%s:6379/0", e->ns_ip);
}

/* nftables inside the namespace: "drop" (silence) or "reject" (a TCP
 * reset) for packets to `port`; "" removes every rule (heal). */
static void env_rule(netfault_env *e, const char *verdict, int port) {
    int rc = !*verdict
                 ? sh("ip netns exec %s nft flush chain inet dsnf in", e->ns)
                 : sh("ip netns exec %s nft add rule inet dsnf in tcp dport %d %s%s",
                      e->ns, port, verdict,
                      strcmp(verdict, "reject") == 0 ? " with tcp reset" : "");
    ck_assert_int_eq(rc, 0);
}

#define SKIP_UNLESS_AVAILABLE()                                                \
    do {                                                                       \
        const char *why_ = unavailable();                                      \
        if (why_) {                                                            \
            dt_skip(__func__, why_);                                           \
            return;                                                            \
        }                                                                      \
    } while (0)

/* A pool on `url` with a 1 s connect timeout and `extra` URL options. */
static ds_status open_pool(const char *url, const char *extra, ds_pool **out,
                           ds_error *err) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", url, extra);
    ds_config *cfg = dt_config(full, 0, 2);
    ds_status st = ds_config_set_int(cfg, "connect_timeout_ms", 1000, err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "acquire_timeout_ms", 3000, err);
    if (st == DS_OK)
        st = ds_pool_open(cfg, out, err);
    ds_config_free(cfg);
    return st;
}

static ds_status query_one(ds_pool *pool, ds_error *err) {
    ds_result *res = NULL;
    ds_status st = ds_pool_exec(pool, "SELECT 1", NULL, 0, &res, err);
    ds_result_free(res);
    return st;
}

START_TEST(test_netfault_pg_silent_host_fails_connect_within_deadline) {
    SKIP_UNLESS_AVAILABLE();
    netfault_env e;
    env_up(&e);
    env_start_pg(&e);
    env_rule(&e, "drop", 5432);
    ds_pool *pool = NULL;
    ds_error err = {0};
    long long t0 = dt_now_ms();
    ds_status st = open_pool(e.pg_url, "", &pool, &err);
    long long took = dt_now_ms() - t0;
    env_down(&e);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_msg(took < 15000, "connect took %lld ms with a 1000 ms deadline", took);
}
END_TEST

START_TEST(test_netfault_pg_rejected_port_fails_fast) {
    SKIP_UNLESS_AVAILABLE();
    netfault_env e;
    env_up(&e);
    env_start_pg(&e);
    env_rule(&e, "reject", 5432);
    ds_pool *pool = NULL;
    ds_error err = {0};
    long long t0 = dt_now_ms();
    ds_status st = open_pool(e.pg_url, "", &pool, &err);
    long long took = dt_now_ms() - t0;
    env_down(&e);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_msg(strstr(err.message, "refused"), "%s", err.message);
    /* refused at once, not after the connect deadline */
    ck_assert_msg(took < 1000, "a refused connect took %lld ms", took);
}
END_TEST

/* Packets dropped on an established connection: the in-flight call fails
 * (retryable) once its data stays unacknowledged for tcp_user_timeout, the
 * next call fails within the connect deadline, and when the partition
 * heals the same pool works again. */
START_TEST(test_netfault_pg_partition_mid_session_bounded_and_healed) {
    SKIP_UNLESS_AVAILABLE();
    netfault_env e;
    env_up(&e);
    env_start_pg(&e);
    ds_pool *pool = NULL;
    ds_error err = {0};
    /* 2 s instead of the library's 30 s default, to keep the test short */
    ds_status open_st = open_pool(e.pg_url, "&tcp_user_timeout=2000", &pool, &err);
    if (open_st != DS_OK) {
        env_down(&e);
        ck_abort_msg("open: %s", err.message);
    }
    ds_status before = query_one(pool, &err);
    env_rule(&e, "drop", 5432);
    ds_error cut_err = {0}, again_err = {0}, healed_err = {0};
    long long t0 = dt_now_ms();
    ds_status cut = query_one(pool, &cut_err);
    long long cut_ms = dt_now_ms() - t0;
    t0 = dt_now_ms();
    ds_status again = query_one(pool, &again_err);
    long long again_ms = dt_now_ms() - t0;
    env_rule(&e, "", 0);
    ds_status healed = DS_ERR_CONNECTION;
    t0 = dt_now_ms();
    while (healed != DS_OK && dt_now_ms() - t0 < 20000) {
        healed = query_one(pool, &healed_err);
        if (healed != DS_OK)
            usleep(100000);
    }
    ds_pool_close(pool);
    env_down(&e);

    ck_assert_int_eq(before, DS_OK);
    ck_assert_ds_status(cut, DS_ERR_CONNECTION, cut_err);
    ck_assert(ds_error_is_retryable(&cut_err));
    ck_assert_msg(cut_ms < 20000, "in-flight call took %lld ms (tcp_user_timeout 2 s)",
                  cut_ms);
    ck_assert_int_ne(again, DS_OK);
    ck_assert(ds_error_is_retryable(&again_err));
    ck_assert_msg(again_ms < 15000, "next call took %lld ms", again_ms);
    ck_assert_ds_ok(healed, healed_err);
}
END_TEST

/* Redis behind a silent network: every command returns within the
 * handle's command timeout (the cache falls back to its loader), and the
 * handle recovers once the path heals. */
START_TEST(test_netfault_redis_silent_host_bounded_and_healed) {
    SKIP_UNLESS_AVAILABLE();
    netfault_env e;
    env_up(&e);
    env_start_redis(&e);
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
        env_down(&e);
        ck_abort_msg("redis open: %s", err.message);
    }
    ds_error e1 = {0}, e2 = {0}, e3 = {0};
    ds_status before = ds_redis_ping(redis, &e1);
    env_rule(&e, "drop", 6379);
    long long t0 = dt_now_ms();
    ds_status cut = ds_redis_ping(redis, &e2);
    long long cut_ms = dt_now_ms() - t0;
    env_rule(&e, "", 0);
    ds_status healed = DS_ERR_REDIS;
    t0 = dt_now_ms();
    while (healed != DS_OK && dt_now_ms() - t0 < 20000) {
        healed = ds_redis_ping(redis, &e3);
        if (healed != DS_OK)
            usleep(100000);
    }
    ds_redis_close(redis);
    env_down(&e);

    ck_assert_ds_ok(before, e1);
    ck_assert_ds_status(cut, DS_ERR_REDIS, e2);
    ck_assert(ds_error_is_retryable(&e2));
    ck_assert_msg(cut_ms < 10000, "a ping to a silent Redis took %lld ms "
                  "(command timeout 500 ms)", cut_ms);
    ck_assert_ds_ok(healed, e3);
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
    tc = tcase_create("redis");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_netfault_redis_silent_host_bounded_and_healed);
    suite_add_tcase(s, tc);
    return s;
}
