/*
 * datastore/pool.h — the PostgreSQL connection pool (transactions over it:
 * datastore/tx.h).
 *
 * A ds_pool owns up to pool_max connections to the primary (and as many to
 * each replica). ds_pool_acquire() leases one as a ds_conn; ds_pool_release()
 * gives it back. Waiters are served first-come first-served; an acquire never
 * waits longer than its timeout. With more threads than connections, a
 * thread that comes straight back for another connection may keep the one it
 * released without queueing behind the waiters, but the oldest waiter is
 * overtaken for at most pool_overtake_ms (default 20; datastore/config.h)
 * and at most DS_POOL_BARGE_MAX times before a release hands it the
 * connection: a waiter is served within (waiters ahead of it + 1) such
 * windows. A longer window hands connections between threads less often
 * (more throughput when threads outnumber connections), a shorter one
 * bounds the longest wait tighter; 0 serves strictly in arrival order.
 *
 * Statement modes (setting `statement_mode`):
 *   prepared  named prepared statements, cached per connection: the fastest
 *             choice for direct connections.
 *   pooler    unnamed statements only, and no session state (no SET after
 *             connect): correct behind PgBouncer in transaction mode and
 *             managed poolers such as Neon's or Supabase's. Set
 *             statement_timeout on the role (ALTER ROLE ... SET) there;
 *             ds_tx_run() still applies it with SET LOCAL.
 *
 * Health: a connection given back inside a transaction is rolled back; one
 * that is broken, mid-query or fails the rollback is closed, never handed out
 * dirty. Idle connections whose server went away (restart, terminated
 * backend) are detected without a round trip on acquire and replaced; one
 * reused within 250 ms of its release skips that check, and if it died in
 * that window its first statement fails with a retryable error
 * (ds_error_is_retryable) and it is replaced on release.
 *
 * Silent networks: connections ask libpq for tcp_user_timeout=30000 and
 * keepalives (idle 30 s, interval 10 s, count 3) unless the URL sets its
 * own, so a host that stops answering breaks a call within about 30 s
 * (retryable DS_ERR_CONNECTION) instead of the kernel's many minutes;
 * connecting is bounded by connect_timeout_ms.
 *
 * Failover: the primary URL may list every host of a cluster with
 * target_session_attrs=read-write ("postgresql://u:p@h1:5432,h2:5432/db?
 * target_session_attrs=read-write"); libpq then connects to whichever is
 * the primary. A server that is read-only (in recovery, or
 * default_transaction_read_only on) is refused as a primary with a
 * retryable DS_ERR_CONNECTION, and a connection whose server ends the
 * session (SQLSTATE class 08, 57P01-57P03) or turns read-only under it
 * (25006 while the server reports itself read-only, or behind a pooler
 * that hides the server's state) fails its statement with a retryable
 * DS_ERR_CONNECTION and is closed on release, so the next acquire connects
 * to the new primary. A primary URL with target_session_attrs=any (or
 * read-only, standby, prefer-standby) accepts a read-only server; a write
 * there is a plain DS_ERR_DB (25006), as is one inside the caller's own
 * READ ONLY transaction.
 *
 * Thread-safety: ds_pool is safe to share between threads. A ds_conn is
 * serial: one thread at a time, from acquire to release.
 */
#ifndef DATASTORE_POOL_H
#define DATASTORE_POOL_H

#include "config.h"
#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_pool ds_pool;
/* ds_conn, a leased connection, is declared in config.h (its after-connect
 * hook takes one); C99 forbids declaring the typedef twice. */
struct pg_conn; /* libpq's PGconn */

/*
 * Opens a pool from `cfg` (which needs database_url) and pre-warms pool_min
 * connections; fails with DS_ERR_CONNECTION (message without the password)
 * when the first connection cannot be made, so a bad URL shows at start-up.
 * Replica URLs are connected lazily. On failure *out is NULL.
 * Errors: DS_ERR_INVALID, DS_ERR_CONFIG, DS_ERR_CONNECTION, DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_pool_open(const ds_config *cfg,
                                              ds_pool **out, ds_error *err);

/* Shorthand: defaults plus this database URL. */
DS_EXPORT DS_NODISCARD ds_status ds_pool_open_url(const char *database_url,
                                                  ds_pool **out,
                                                  ds_error *err);

/*
 * Closes the pool: waiters get DS_ERR_CLOSED, idle connections close now and
 * leased ones when released; the memory goes with the last lease. Every
 * lease must still be released. NULL is a no-op.
 */
DS_EXPORT void ds_pool_close(ds_pool *pool);

/* Leases a primary connection, waiting up to acquire_timeout_ms. */
DS_EXPORT DS_NODISCARD ds_status ds_pool_acquire(ds_pool *pool, ds_conn **out,
                                                 ds_error *err);

/*
 * Leases a primary connection waiting up to `timeout_ms` (0: only if one is
 * free now). Errors: DS_ERR_TIMEOUT (retryable: no), DS_ERR_CONNECTION when
 * a new connection could not be made, DS_ERR_CLOSED, DS_ERR_INVALID.
 */
DS_EXPORT DS_NODISCARD ds_status ds_pool_acquire_timeout(ds_pool *pool,
                                                         int timeout_ms,
                                                         ds_conn **out,
                                                         ds_error *err);

/*
 * Leases a connection for reads that tolerate replica lag: round-robin over
 * replicas that are up; a replica that fails to connect is skipped for
 * replica_retry_ms; with none configured or none up, the primary.
 */
DS_EXPORT DS_NODISCARD ds_status ds_pool_acquire_read(ds_pool *pool,
                                                      ds_conn **out,
                                                      ds_error *err);

/*
 * Read-your-writes across replicas. After a write, ds_pool_read_token()
 * records the primary's WAL position; ds_pool_acquire_read_token() then
 * leases a connection that has replayed at least that far: a replica that
 * has, else (after waiting up to max_wait_ms for one to catch up) the
 * primary. A read through it never misses the write; a plain
 * ds_pool_acquire_read() may.
 *
 *   ds_read_token tok;
 *   ds_message_append(pool, conv, &m, NULL, &err);
 *   ds_pool_read_token(pool, &tok, &err);         // pass tok along
 *   ds_pool_acquire_read_token(pool, &tok, 50, &conn, &err);
 *
 * A token is a plain value: copy it, keep it in a session, send it to
 * another process of the same cluster. A zeroed token asks for nothing.
 * A fixed value (docs/abi.md): it never grows.
 */
typedef struct ds_read_token {
    uint64_t lsn; /* a WAL position (pg_lsn as a number); 0: none */
} ds_read_token;

/* The primary's current WAL insert position into *out: every write the
 * caller completed before the call is at or before it. One round trip.
 * Errors: the pool's (DS_ERR_CONNECTION, DS_ERR_TIMEOUT, ...), DS_ERR_INVALID. */
DS_EXPORT DS_NODISCARD ds_status ds_pool_read_token(ds_pool *pool,
                                                    ds_read_token *out,
                                                    ds_error *err);

/* ds_pool_read_token() on a connection the caller holds (a primary one, e.g.
 * inside a transaction that just committed, or after a write on it). */
DS_EXPORT DS_NODISCARD ds_status ds_pool_conn_read_token(ds_conn *conn,
                                                    ds_read_token *out,
                                                    ds_error *err);

/*
 * Like ds_pool_acquire_read(), but only a replica that has replayed
 * `token` qualifies (one round trip per replica tried). When none has,
 * waits up to max_wait_ms (0: not at all) for one to catch up, polling
 * every few milliseconds, then leases a primary connection. A NULL or
 * zeroed token is ds_pool_acquire_read(). Errors: as ds_pool_acquire_read(),
 * DS_ERR_INVALID (max_wait_ms negative).
 */
DS_EXPORT DS_NODISCARD ds_status ds_pool_acquire_read_token(
    ds_pool *pool, const ds_read_token *token, int max_wait_ms, ds_conn **out,
    ds_error *err);

/* Gives a lease back (see "Health" above). NULL is a no-op. */
DS_EXPORT void ds_pool_release(ds_conn *conn);

/* True when the lease came from a replica. */
DS_EXPORT bool ds_pool_conn_is_replica(const ds_conn *conn);

/*
 * The underlying libpq connection, for what the library does not cover.
 * Borrowed: valid until ds_pool_release(). Leave it idle and outside a
 * transaction (or call ds_pool_conn_discard()) when you give it back, and do not
 * PQfinish it.
 */
DS_EXPORT struct pg_conn *ds_pool_conn_pg(ds_conn *conn);

/* Marks the lease so that release closes it instead of reusing it, e.g.
 * after changing session state through ds_pool_conn_pg(). */
DS_EXPORT void ds_pool_conn_discard(ds_conn *conn);

/* How many acquisitions may overtake the oldest waiter (see the top of
 * this header) before the next release hands it a connection, however
 * short they are; usually pool_overtake_ms ends its turn first. */
#define DS_POOL_BARGE_MAX 4096

typedef struct ds_pool_stats {
    size_t size; /* growable, caller-allocated: set by DS_POOL_STATS_INIT */
    int connections;     /* open connections, primary and replicas        */
    int idle;            /* of which idle                                 */
    int in_use;          /* of which leased                               */
    int waiters;         /* threads waiting in acquire now                */
    uint64_t acquires;   /* successful acquires since open                */
    uint64_t timeouts;   /* acquires that gave DS_ERR_TIMEOUT             */
    uint64_t reconnects; /* dead connections replaced                     */
    uint64_t connect_failures;
    uint64_t discarded;  /* leases closed on release (broken, dirty, old) */
    int64_t acquire_wait_p50_us;
    int64_t acquire_wait_p99_us;
    int64_t acquire_wait_max_us;
    /* The most acquisitions that overtook one waiter (threads keeping a
     * connection while it waited): at most (waiters ahead of it + 1) *
     * DS_POOL_BARGE_MAX. */
    uint64_t waiter_overtaken_max;
} ds_pool_stats;
#define DS_POOL_STATS_INIT DS_SIZED_INIT(ds_pool_stats)

/* A consistent snapshot of the counters. */
DS_EXPORT DS_NODISCARD ds_status ds_pool_stats_get(ds_pool *pool,
                                                   ds_pool_stats *out,
                                                   ds_error *err);

/* The pool's statement mode: true for `pooler`. */
DS_EXPORT bool ds_pool_is_pooler_mode(const ds_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_POOL_H */
