/* Network namespaces with throwaway servers inside: see dt_netns.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dt_netns.h"

int dt_sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

const char *dt_netns_unavailable(void) {
    if (geteuid() != 0)
        return "needs root (network namespaces, nftables)";
    if (dt_sh("command -v ip >/dev/null && command -v nft >/dev/null") != 0)
        return "needs ip and nft (Debian iproute2, nftables; scripts/bootstrap)";
    if (dt_sh("id -u dsservices >/dev/null 2>&1") != 0)
        return "needs the services user dsservices (scripts/services creates it)";
    return NULL;
}

/* Names unique to this test process: the runner forks one per test. */
static void names(dt_netns *e) {
    unsigned id = (unsigned)getpid() % 100000u;
    snprintf(e->ns, sizeof e->ns, "dsnf%u", id);
    snprintf(e->host_if, sizeof e->host_if, "dsnh%u", id);
    unsigned a = (id >> 6) & 255u, b = (id & 63u) * 4u;
    snprintf(e->host_ip, sizeof e->host_ip, "10.213.%u.%u", a, b + 1);
    snprintf(e->ns_ip, sizeof e->ns_ip, "10.213.%u.%u", a, b + 2);
    snprintf(e->dir, sizeof e->dir, "/var/tmp/dsnf-%u", id);
    snprintf(e->pgdata, sizeof e->pgdata, "%s/pg", e->dir);
}

void dt_netns_down(dt_netns *e) {
    if (e->bouncer)
        dt_netns_kill_pgbouncer(e);
    if (e->pg)
        dt_sh("runuser -u dsservices -- %s/pg_ctl -D %s -m immediate -w -s stop "
              ">/dev/null 2>&1",
              dt_env("DS_PG_BINDIR"), e->pgdata);
    if (e->redis)
        dt_sh("pkill -KILL -f 'redis-server %s:6379' 2>/dev/null", e->ns_ip);
    dt_sh("ip netns del %s 2>/dev/null", e->ns);
    dt_sh("ip link del %s 2>/dev/null", e->host_if);
    dt_sh("rm -rf '%s'", e->dir);
    e->pg = e->bouncer = e->redis = false;
}

void dt_netns_up(dt_netns *e) {
    memset(e, 0, sizeof *e);
    names(e);
    int rc = dt_sh("set -e; ip netns add %s; "
                   "ip link add %s type veth peer name %sn; "
                   "ip link set %sn netns %s; "
                   "ip addr add %s/30 dev %s; ip link set %s up; "
                   "ip netns exec %s ip addr add %s/30 dev %sn; "
                   "ip netns exec %s ip link set %sn up; "
                   "ip netns exec %s ip link set lo up; "
                   "ip netns exec %s nft add table inet dsnf; "
                   "ip netns exec %s nft add chain inet dsnf in "
                   "'{ type filter hook input priority 0; policy accept; }'; "
                   "mkdir -p %s; chown dsservices: %s",
                   e->ns, e->host_if, e->ns, e->ns, e->ns, e->host_ip,
                   e->host_if, e->host_if, e->ns, e->ns_ip, e->ns, e->ns,
                   e->ns, e->ns, e->ns, e->ns, e->dir, e->dir);
    if (rc != 0) {
        dt_netns_down(e);
        ck_abort_msg("could not set up network namespace %s", e->ns);
    }
}

void dt_netns_start_pg(dt_netns *e) {
    const char *bin = dt_env("DS_PG_BINDIR");
    int rc = dt_sh("set -e; "
                   "runuser -u dsservices -- %s/initdb -D %s -U ds --auth=trust "
                   "--no-sync -E UTF8 --locale=C >/dev/null; "
                   "echo 'host all ds %s/32 trust' >> %s/pg_hba.conf; "
                   "ip netns exec %s runuser -u dsservices -- %s/pg_ctl -D %s -w -s "
                   "-l %s/log -o \"-c listen_addresses=%s -c port=5432 -k %s "
                   "-c shared_buffers=16MB -c max_connections=20 -c fsync=off\" start",
                   bin, e->pgdata, e->host_ip, e->pgdata, e->ns, bin, e->pgdata,
                   e->pgdata, e->ns_ip, e->dir);
    if (rc != 0) {
        dt_netns_down(e);
        ck_abort_msg("could not start PostgreSQL in %s", e->ns);
    }
    e->pg = true;
    snprintf(e->pg_url, sizeof e->pg_url,
             "postgresql://ds@%s:5432/postgres?sslmode=disable", e->ns_ip);
}

void dt_netns_start_pgbouncer(dt_netns *e) {
    /* Its configuration is written once; a restart reuses it. */
    int rc = dt_sh("set -e; d=%s/pgbouncer; "
                   "if [ ! -e $d/pgbouncer.ini ]; then "
                   "mkdir -p $d; echo '\"ds\" \"\"' > $d/userlist.txt; "
                   "printf '%%s\\n' '[databases]' "
                   "'postgres = host=%s port=5432 dbname=postgres' "
                   "'[pgbouncer]' 'listen_addr = %s' 'listen_port = 6432' "
                   "'unix_socket_dir =' 'auth_type = trust' "
                   "\"auth_file = $d/userlist.txt\" 'pool_mode = transaction' "
                   "'max_client_conn = 50' 'default_pool_size = 10' "
                   "\"logfile = $d/log\" \"pidfile = $d/pid\" "
                   "> $d/pgbouncer.ini; chown -R dsservices: $d; fi; "
                   "ip netns exec %s runuser -u dsservices -- pgbouncer -d -q "
                   "$d/pgbouncer.ini; "
                   "for i in $(seq 100); do "
                   "ip netns exec %s %s/pg_isready -q -h %s -p 6432 -U ds "
                   "-d postgres && exit 0; sleep 0.1; done; exit 1",
                   e->dir, e->dir, e->ns_ip, e->ns, e->ns, dt_env("DS_PG_BINDIR"),
                   e->ns_ip);
    e->bouncer = true;
    if (rc != 0) {
        dt_netns_down(e);
        ck_abort_msg("could not start PgBouncer in %s", e->ns);
    }
    snprintf(e->bouncer_url, sizeof e->bouncer_url,
             "postgresql://ds@%s:6432/postgres?sslmode=disable", e->ns_ip);
}

void dt_netns_kill_pgbouncer(dt_netns *e) {
    /* The pid file names the daemon; wait until it is gone so that a
     * restart can bind the port again. */
    dt_sh("p=$(cat %s/pgbouncer/pid 2>/dev/null) && [ -n \"$p\" ] && "
          "kill -KILL $p 2>/dev/null; "
          "for i in $(seq 50); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; "
          "rm -f %s/pgbouncer/pid",
          e->dir, e->dir);
    e->bouncer = false;
}

void dt_netns_start_redis(dt_netns *e) {
    int rc = dt_sh("set -e; d=%s/redis; mkdir -p $d; chown dsservices: $d; "
                   "ip netns exec %s runuser -u dsservices -- redis-server "
                   "--bind %s --port 6379 --save '' --appendonly no "
                   "--protected-mode no --dir $d --daemonize yes "
                   "--logfile $d/log; "
                   "for i in $(seq 100); do ip netns exec %s redis-cli -h %s ping "
                   "2>/dev/null | grep -q PONG && exit 0; sleep 0.1; done; exit 1",
                   e->dir, e->ns, e->ns_ip, e->ns, e->ns_ip);
    e->redis = true;
    if (rc != 0) {
        dt_netns_down(e);
        ck_abort_msg("could not start Redis in %s", e->ns);
    }
    snprintf(e->redis_url, sizeof e->redis_url, "redis://%s:6379/0", e->ns_ip);
}

void dt_netns_rule(dt_netns *e, const char *verdict, int port) {
    int rc = !*verdict
                 ? dt_sh("ip netns exec %s nft flush chain inet dsnf in", e->ns)
                 : dt_sh("ip netns exec %s nft add rule inet dsnf in tcp dport %d %s%s",
                         e->ns, port, verdict,
                         strcmp(verdict, "reject") == 0 ? " with tcp reset" : "");
    ck_assert_int_eq(rc, 0);
}

/* How long a healed partition may take to carry traffic again: generous,
 * the machine may be loaded. */
enum { HEAL_TIMEOUT_MS = 20000 };

ds_status dt_netns_heal_pool(dt_netns *e, ds_pool *pool, int *attempts,
                             ds_error *err) {
    dt_netns_rule(e, "", 0);
    return dt_pool_wait_query_ok(pool, HEAL_TIMEOUT_MS, attempts, err);
}

ds_status dt_netns_heal_redis(dt_netns *e, ds_redis *redis, ds_error *err) {
    dt_netns_rule(e, "", 0);
    long long deadline = dt_now_ms() + HEAL_TIMEOUT_MS;
    ds_status st;
    while ((st = ds_redis_ping(redis, err)) != DS_OK && dt_now_ms() < deadline)
        usleep(100000);
    return st;
}
