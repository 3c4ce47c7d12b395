/* Throwaway servers for the network-fault tests: a PostgreSQL, a PgBouncer
 * and a Redis, run by the services user behind a network namespace of their
 * own (a veth pair to this host, an nftables chain inside the namespace to
 * drop or reject their packets). Needs root, `ip` and `nft`. */
#ifndef DS_TEST_NETNS_H
#define DS_TEST_NETNS_H

#include <stdbool.h>

#include "test_util.h"

typedef struct {
    char ns[32];         /* network namespace */
    char host_if[16];    /* our end of the veth pair */
    char host_ip[32];
    char ns_ip[32];
    char dir[128];       /* everything the servers write */
    char pgdata[160];
    char pg_url[256];
    char bouncer_url[256];
    char redis_url[256];
    bool pg, bouncer, redis;
} dt_netns;

/* Runs a shell command; returns its exit status (-1 when it did not run). */
int dt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Why the namespace tests cannot run here, or NULL. */
const char *dt_netns_unavailable(void);

/* Returns from the calling test with a printed SKIP when the namespace
 * tests cannot run here. */
#define DT_NETNS_SKIP_UNLESS_AVAILABLE()                                       \
    do {                                                                       \
        const char *why_ = dt_netns_unavailable();                             \
        if (why_) {                                                            \
            dt_skip(__func__, why_);                                           \
            return;                                                            \
        }                                                                      \
    } while (0)

/* The namespace and the veth pair (names unique to this test process);
 * fails the test on error. */
void dt_netns_up(dt_netns *e);
/* Stops every server started in `e`, removes the namespace and the files. */
void dt_netns_down(dt_netns *e);

/* A PostgreSQL inside the namespace on ns_ip:5432 (and a unix socket in
 * e->dir), trust authentication for user ds. */
void dt_netns_start_pg(dt_netns *e);
/* PgBouncer (transaction pooling) inside the namespace on ns_ip:6432, in
 * front of that PostgreSQL over its unix socket. Starting it again after
 * dt_netns_kill_pgbouncer() reuses the same port. */
void dt_netns_start_pgbouncer(dt_netns *e);
/* SIGKILL to the namespace's PgBouncer: a crash, no goodbye to clients. */
void dt_netns_kill_pgbouncer(dt_netns *e);
/* Redis inside the namespace on ns_ip:6379. */
void dt_netns_start_redis(dt_netns *e);

/* nftables inside the namespace: "drop" (silence) or "reject" (a TCP
 * reset) for packets to `port`; "" removes every rule (heal). */
void dt_netns_rule(dt_netns *e, const char *verdict, int port);

/* Heals the partition (removes every rule), then polls (at most 20 s)
 * until a query through `pool` succeeds: the pool must recover by itself.
 * Returns the last query's status (its error in `err`); `attempts` (may be
 * NULL) counts the queries. */
ds_status dt_netns_heal_pool(dt_netns *e, ds_pool *pool, int *attempts,
                             ds_error *err);
/* The same for a Redis handle, polled with PING. */
ds_status dt_netns_heal_redis(dt_netns *e, ds_redis *redis, ds_error *err);

#endif
