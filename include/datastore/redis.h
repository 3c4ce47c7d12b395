/*
 * datastore/redis.h — the Redis handle shared by the cache, rate limiter,
 * presence, job queue and session look-ups.
 *
 * A ds_redis is a small pool of connections (redis_pool_size) to one Redis
 * server, opened from REDIS_URL:
 *
 *   redis://[[user]:password@]host[:port][/db]   plain TCP
 *   rediss://[[user]:password@]host[:port][/db]  TLS (managed hosts)
 *   unix://[[user]:password@]/path/redis.sock[?db=N]
 *
 * An empty user (`redis://:pw@host`) sends `AUTH pw`; a user sends the ACL
 * form `AUTH user pw`; a db other than 0 is SELECTed on every connection.
 * Percent-encode reserved characters in the user and password.
 *
 * TLS verifies the server's certificate and host name, always: against the
 * CA file or directory in redis_tls_ca (DS_REDIS_TLS_CA), else against the
 * system store. There is no switch to turn verification off.
 *
 * Timeouts: connect + TLS + AUTH within redis_connect_timeout_ms; each
 * command (including the wait for a free connection) within
 * redis_command_timeout_ms. A connection whose server went away while idle
 * (a restart) is replaced before use, without a round trip; one reused
 * within 250 ms of its last command skips that check, and like one that
 * fails mid-command it is closed and the call fails with DS_ERR_REDIS,
 * retryable. After a failed connect, calls fail fast for redis_retry_ms
 * before the next attempt.
 *
 * Every key the library writes starts with redis_prefix (default "ds:"), so
 * several applications or environments can share one server.
 *
 * Thread-safety: a ds_redis is safe to share between threads. Close it only
 * when no other call on it is in flight. After fork(), the child must open
 * a handle of its own.
 */
#ifndef DATASTORE_REDIS_H
#define DATASTORE_REDIS_H

#include "config.h"
#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_redis ds_redis;

/*
 * Opens a handle from cfg's redis_url and redis_* settings and connects
 * once, so a wrong URL, password or CA shows here.
 *   cfg  borrowed for the call (the handle keeps copies of what it needs)
 *   out  receives the handle, which the caller owns: ds_redis_close()
 * Errors: DS_ERR_INVALID (NULL cfg or out), DS_ERR_CONFIG (no or bad
 * REDIS_URL, unreadable DS_REDIS_TLS_CA), DS_ERR_REDIS (unreachable,
 * authentication, TLS verification; retryable when transient),
 * DS_ERR_NOMEM. On failure *out is NULL and nothing needs freeing; the
 * message never holds the password. Any thread may call it.
 */
DS_EXPORT DS_NODISCARD ds_status ds_redis_open(const ds_config *cfg,
                                               ds_redis **out, ds_error *err);

/* ds_redis_open() with the default settings and `url` (borrowed) as
 * redis_url. Errors and ownership as ds_redis_open(). */
DS_EXPORT DS_NODISCARD ds_status ds_redis_open_url(const char *url,
                                                   ds_redis **out,
                                                   ds_error *err);

/* Closes every connection and frees the handle. Call it only when no other
 * call on the handle is in flight, and after closing the caches, limiters,
 * presence handles, subscriptions and queues that borrow it. NULL is a
 * no-op. */
DS_EXPORT void ds_redis_close(ds_redis *redis);

/*
 * Removes every key the library keeps for one user (session look-ups, cache
 * entries registered for the user, presence and typing state) and the
 * user's queued jobs (ds_queue_enqueue_for_user: ready, reserved, delayed
 * and dead, found by scanning each queue the user has jobs in), and reports
 * how many it removed (keys deleted plus memberships in shared presence sets
 * and jobs removed; may be NULL). Used by GDPR erase. Atomic on the server:
 * nothing registered for the user before the call survives it.
 * Errors: DS_ERR_INVALID (NULL handle, user_id <= 0), DS_ERR_REDIS,
 * DS_ERR_NOMEM; *keys_removed is 0 on failure. Thread-safe.
 */
DS_EXPORT DS_NODISCARD ds_status ds_redis_erase_user(ds_redis *redis,
                                                     int64_t user_id,
                                                     int64_t *keys_removed,
                                                     ds_error *err);

/* One round trip (PING) on a pooled connection, e.g. for a health check.
 * Errors: DS_ERR_INVALID (NULL handle), DS_ERR_REDIS (retryable when the
 * server is unreachable or slow), DS_ERR_NOMEM. Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_redis_ping(ds_redis *redis, ds_error *err);

/* True for a rediss:// handle. False for NULL. Thread-safe. */
DS_EXPORT bool ds_redis_is_tls(const ds_redis *redis);

/* Counters since the handle opened. */
typedef struct ds_redis_stats {
    size_t size; /* growable, caller-allocated: set by DS_REDIS_STATS_INIT */
    uint64_t commands;         /* round trips (a pipeline counts once)       */
    uint64_t errors;           /* failed round trips and error replies       */
    uint64_t connects;         /* connections opened                         */
    uint64_t connect_failures;
    uint64_t stale_replaced;   /* idle connections found dead and replaced   */
    int connections;           /* open now (idle + in use)                   */
    int idle;
} ds_redis_stats;
#define DS_REDIS_STATS_INIT DS_SIZED_INIT(ds_redis_stats)

/* Copies the counters into *out (caller storage; reset first, so zero on
 * failure). Each counter is read atomically, not the set as a whole.
 * Errors: DS_ERR_INVALID (NULL handle or out). Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_redis_stats_get(ds_redis *redis,
                                                    ds_redis_stats *out,
                                                    ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_REDIS_H */
