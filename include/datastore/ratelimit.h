/*
 * datastore/ratelimit.h — rate limits shared by every process, in Redis.
 *
 *   ds_ratelimit_result res;
 *   if (ds_ratelimit_check(rl, "user:42", &res, &err) == DS_OK && !res.allowed)
 *       reply_429(res.retry_after_ms);
 *
 * Each check is one Lua script on the server (atomic, using the server's
 * clock), in one of two algorithms:
 *
 *   GCRA            a smooth rate of `limit` per `period_ms` that allows
 *                   bursts of up to `burst` requests (the default: limit):
 *                   any span of t ms admits at most
 *                   burst + floor(t * limit / period_ms) requests (so at
 *                   most burst + limit in any `period_ms` window). One key
 *                   holding one timestamp.
 *   SLIDING_WINDOW  at most `limit` in any `period_ms` window, on the
 *                   server's clock, from every process together. With
 *                   limit <= 1000 it is exact (a sliding log: a sorted set
 *                   with one member per admitted request, so a request is
 *                   denied only when admitting it would break the rule);
 *                   above 1000 it counts buckets of period_ms/20, whole, so
 *                   it never admits more than `limit` but may deny while
 *                   up to period_ms/20 of older requests still count (one
 *                   hash of at most 22 fields per key).
 *
 * Every key the limiter writes expires (once the limit is back to full).
 * Keys: <redis_prefix>rl:<name>:<key>.
 *
 * Redis unreachable (or slow beyond the command timeout): the call still
 * returns DS_OK, with `degraded` set and `allowed` decided by the caller's
 * policy: FAIL_CLOSED denies (e.g. login attempts), FAIL_OPEN allows (e.g.
 * API quotas where availability matters more). The failure is counted in
 * the stats and logged at warn level.
 *
 * Thread-safety: a ds_ratelimit is safe to share between threads. It
 * borrows its ds_redis, which must outlive it.
 */
#ifndef DATASTORE_RATELIMIT_H
#define DATASTORE_RATELIMIT_H

#include "core.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_ratelimit ds_ratelimit;

typedef enum ds_ratelimit_algorithm {
    DS_RATELIMIT_GCRA = 0,
    DS_RATELIMIT_SLIDING_WINDOW = 1
} ds_ratelimit_algorithm;

/* What a check answers when Redis cannot be asked. */
typedef enum ds_ratelimit_policy {
    DS_RATELIMIT_FAIL_CLOSED = 0,
    DS_RATELIMIT_FAIL_OPEN = 1
} ds_ratelimit_policy;

typedef struct ds_ratelimit_options {
    size_t size; /* growable, caller-allocated: set by DS_RATELIMIT_OPTIONS_INIT */
    const char *name;                   /* 1-64 of [A-Za-z0-9_.-]; required */
    ds_ratelimit_algorithm algorithm;
    int64_t limit;                      /* requests per period, > 0        */
    int64_t period_ms;                  /* > 0                              */
    int64_t burst;                      /* GCRA: at once; 0 means `limit`   */
    ds_ratelimit_policy on_redis_error;
} ds_ratelimit_options;
#define DS_RATELIMIT_OPTIONS_INIT DS_SIZED_INIT(ds_ratelimit_options)

typedef struct ds_ratelimit_result {
    size_t size; /* growable, caller-allocated: set by DS_RATELIMIT_RESULT_INIT */
    bool allowed;
    int64_t limit;          /* the capacity: burst (GCRA) or limit (window)   */
    int64_t remaining;      /* requests still allowed right now               */
    int64_t retry_after_ms; /* 0 when allowed; else when to try again         */
    int64_t reset_ms;       /* until the full capacity is back                */
    bool degraded;          /* Redis failed: `allowed` is the policy's answer */
} ds_ratelimit_result;
#define DS_RATELIMIT_RESULT_INIT DS_SIZED_INIT(ds_ratelimit_result)

/* Opens a limiter on `redis`, which it borrows (close the limiter first).
 * `opts` is copied, its name included. Does not talk to Redis. *out
 * receives the limiter, owned by the caller (ds_ratelimit_close), NULL on
 * failure. Errors: DS_ERR_INVALID (NULL argument, bad name, algorithm,
 * policy or bound), DS_ERR_NOMEM. Any thread may call it. */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_open(
    ds_redis *redis, const ds_ratelimit_options *opts, ds_ratelimit **out,
    ds_error *err);

/* Frees the limiter (not its Redis handle). Call it only when no other call
 * on it is in flight. NULL is a no-op. */
DS_EXPORT void ds_ratelimit_close(ds_ratelimit *rl);

/*
 * Consumes one request for `key` (1-512 bytes, e.g. "user:42" or an IP)
 * when it is allowed, and fills *out (caller storage) either way. DS_OK
 * unless an argument is bad (DS_ERR_INVALID, *out zeroed) or memory runs
 * out (DS_ERR_NOMEM); a Redis failure gives DS_OK with out->degraded and
 * the policy's answer. Thread-safe; checks from every process agree.
 */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_check(ds_ratelimit *rl,
                                                    const char *key,
                                                    ds_ratelimit_result *out,
                                                    ds_error *err);

/* ds_ratelimit_check() for `cost` requests at once, all or none. Errors as
 * there, and DS_ERR_INVALID for a cost outside 1 to the capacity (burst for
 * GCRA, limit for the sliding window). */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_check_n(ds_ratelimit *rl,
                                                      const char *key,
                                                      int64_t cost,
                                                      ds_ratelimit_result *out,
                                                      ds_error *err);

/* Whether one request would be allowed now, without consuming anything;
 * out->remaining is what is left before it. Errors and Redis failures as
 * ds_ratelimit_check(). Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_peek(ds_ratelimit *rl,
                                                   const char *key,
                                                   ds_ratelimit_result *out,
                                                   ds_error *err);

/* Forgets `key`'s history (full capacity again). Unlike a check, a Redis
 * failure is an error here. Errors: DS_ERR_INVALID (NULL limiter, bad
 * key), DS_ERR_REDIS, DS_ERR_NOMEM. Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_reset(ds_ratelimit *rl,
                                                    const char *key,
                                                    ds_error *err);

typedef struct ds_ratelimit_stats {
    size_t size; /* growable, caller-allocated: set by DS_RATELIMIT_STATS_INIT */
    uint64_t checks;    /* checks and peeks                     */
    uint64_t allowed;
    uint64_t denied;
    uint64_t degraded;  /* answered by the policy, Redis failed */
} ds_ratelimit_stats;
#define DS_RATELIMIT_STATS_INIT DS_SIZED_INIT(ds_ratelimit_stats)

/* Copies the counters since the limiter opened into *out (caller storage;
 * reset first, so zero on failure). Errors: DS_ERR_INVALID (NULL limiter
 * or out). Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_ratelimit_stats_get(
    const ds_ratelimit *rl, ds_ratelimit_stats *out, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_RATELIMIT_H */
