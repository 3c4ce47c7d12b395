/*
 * datastore/cache.h — cache-aside for JSON values in Redis.
 *
 *   json_t *profile;
 *   ds_status st = ds_cache_get_or_load(cache, "42", NULL, load_profile, db,
 *                                       &profile, &err);
 *
 * On a hit the cached value comes back; on a miss the loader (typically a
 * repository call) runs and its result is stored with the cache's TTL plus
 * random jitter, so entries written together do not expire together.
 *
 * Stampede protection: when many threads or processes miss the same key at
 * once, one loader runs. Threads of one process wait for it in memory;
 * other processes see a short lock in Redis and poll until the value
 * appears, bounded by wait_timeout_ms, after which they load themselves.
 * With stale_ttl_ms an expired entry is kept a while and served to everyone
 * but the one caller who refreshes it. With early_refresh_beta (XFetch) a
 * hot entry is refreshed by one caller shortly before it expires, the more
 * likely the closer it is and the slower its loader was.
 *
 * "Not found" (the loader returns DS_ERR_NOT_FOUND) is cached too, for
 * negative_ttl_ms. Keys carry the cache's name and schema_version, so a
 * build that caches a new shape never reads an old one. Entries can belong
 * to tags (invalidated together) and to a user (removed by
 * ds_redis_erase_user).
 *
 * Redis down or slow: ds_cache_get_or_load() calls the loader directly and
 * succeeds; the failure is counted in the stats (errors), never returned.
 * A corrupt cached value (not ours, not JSON) is a miss and is replaced.
 *
 * Keys: <redis_prefix>c:<name>:v<schema_version>:<key> (entry),
 * <redis_prefix>cl:<name>:v<schema_version>:<key> (load lock),
 * <redis_prefix>ct:<name>:<tag> (tag set, shared by schema versions).
 *
 * Thread-safety: a ds_cache is safe to share between threads. It borrows
 * its ds_redis, which must outlive it.
 */
#ifndef DATASTORE_CACHE_H
#define DATASTORE_CACHE_H

#include <jansson.h>

#include "core.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_cache ds_cache;

typedef struct ds_cache_options {
    size_t size; /* growable, caller-allocated: set by DS_CACHE_OPTIONS_INIT */
    /* Namespace of the keys: 1-64 of [A-Za-z0-9_.-]. Required. */
    const char *name;
    /* Part of every key: bump it when the cached value's shape changes. */
    uint32_t schema_version;
    /* How long an entry is fresh. 0: the default, 60000. */
    int ttl_ms;
    /* Each TTL gets 0..ttl_jitter_pct percent added at random. 0: the
     * default, 10; DS_NONE: no jitter. */
    int ttl_jitter_pct;
    /* How long "not found" is remembered. 0: the default, 5000; DS_NONE:
     * not cached. */
    int negative_ttl_ms;
    /* After its TTL an entry stays this long and is served stale while one
     * caller refreshes it; 0: off (the default). */
    int stale_ttl_ms;
    /* A loader's lock expires after this; make it longer than the slowest
     * load. 0: the default, 10000. */
    int lock_ttl_ms;
    /* How long a caller waits for another's load before loading itself.
     * 0: the default, 5000; DS_NONE: do not wait. */
    int wait_timeout_ms;
    /* XFetch early refresh: 0 off (default); 1.0 is the usual value, more
     * refreshes earlier. */
    double early_refresh_beta;
} ds_cache_options;
#define DS_CACHE_OPTIONS_INIT DS_SIZED_INIT(ds_cache_options)

/* Same as DS_CACHE_OPTIONS_INIT: size set, every member zero (the
 * defaults; name NULL). NULL is a no-op. */
DS_EXPORT void ds_cache_options_init(ds_cache_options *opts);

/* Per-call options of a stored entry; pass NULL for none. */
typedef struct ds_cache_entry_options {
    size_t size; /* growable, caller-allocated: set by DS_CACHE_ENTRY_OPTIONS_INIT */
    const char *const *tags; /* invalidated together by ds_cache_invalidate_tag */
    size_t ntags;            /* at most 16 */
    int64_t user_id;         /* > 0: the entry is this user's data, removed by
                                ds_redis_erase_user(); 0: nobody's */
    int ttl_ms;              /* > 0: instead of the cache's ttl_ms */
} ds_cache_entry_options;
#define DS_CACHE_ENTRY_OPTIONS_INIT DS_SIZED_INIT(ds_cache_entry_options)

/*
 * Loads the value of `key` on a miss. Return DS_OK with *out set (the cache
 * takes the reference), DS_ERR_NOT_FOUND for "no such thing" (cached for
 * negative_ttl_ms), or any other error, which ds_cache_get_or_load() passes
 * through unchanged (nothing is cached). Called on the caller's thread; may
 * be called from several threads at once for different keys.
 */
typedef ds_status (*ds_cache_loader_fn)(void *ud, const char *key,
                                        json_t **out, ds_error *err);

/*
 * Opens a cache on `redis`, which it borrows (close the cache first).
 * `opts` is copied, its name included. Does not talk to Redis. *out
 * receives the cache, owned by the caller (ds_cache_close), NULL on
 * failure. Errors: DS_ERR_INVALID (NULL argument, bad name or option),
 * DS_ERR_NOMEM. Any thread may call it.
 */
DS_EXPORT DS_NODISCARD ds_status ds_cache_open(ds_redis *redis,
                                               const ds_cache_options *opts,
                                               ds_cache **out, ds_error *err);

/* Frees the cache (not its Redis handle). Call it only when no other call
 * on the cache is in flight. NULL is a no-op. */
DS_EXPORT void ds_cache_close(ds_cache *cache);

/*
 * The value of `key` (1-1024 bytes): from Redis when cached, else from
 * `loader` (called with `ud`), whose result is then stored with `entry`'s
 * tags, user and TTL (`entry` may be NULL; borrowed for the call, like
 * `key`). *out is a new reference the caller owns (json_decref), NULL on
 * failure. Errors: DS_ERR_NOT_FOUND (the loader said so, now or within
 * negative_ttl_ms), the loader's own errors, DS_ERR_INVALID (NULL
 * argument, bad key or entry options), DS_ERR_NOMEM. Never DS_ERR_REDIS:
 * without Redis the loader is called directly. Thread-safe; callers that
 * miss the same key at once share one loader call.
 */
DS_EXPORT DS_NODISCARD ds_status ds_cache_get_or_load(
    ds_cache *cache, const char *key, const ds_cache_entry_options *entry,
    ds_cache_loader_fn loader, void *ud, json_t **out, ds_error *err);

/* The cached value of `key` only, never a load. *out is a new reference
 * the caller owns (json_decref), NULL on failure. Errors: DS_ERR_NOT_FOUND
 * (absent, past its TTL, a cached "not found", or unreadable),
 * DS_ERR_REDIS (retryable when transient), DS_ERR_INVALID, DS_ERR_NOMEM.
 * Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_cache_get(ds_cache *cache, const char *key,
                                              json_t **out, ds_error *err);

/* Stores `value` for `key` with `entry`'s tags, user and TTL (NULL: none,
 * the cache's TTL), e.g. right after an update. `value`, `key` and `entry`
 * are borrowed for the call (the value is copied as JSON text). Errors:
 * DS_ERR_INVALID (NULL argument, bad key or entry options), DS_ERR_REDIS,
 * DS_ERR_NOMEM (also for a value that cannot be encoded). Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_cache_set(
    ds_cache *cache, const char *key, const json_t *value,
    const ds_cache_entry_options *entry, ds_error *err);

/* Removes `key`'s entry (absent is fine), so the next read loads it.
 * Errors: DS_ERR_INVALID (NULL cache, bad key), DS_ERR_REDIS, DS_ERR_NOMEM.
 * Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_cache_invalidate(ds_cache *cache,
                                                     const char *key,
                                                     ds_error *err);

/* Removes every entry stored with `tag` (1-256 bytes; any schema version)
 * and reports how many in *removed (may be NULL; 0 on failure). Errors:
 * DS_ERR_INVALID (NULL cache, bad tag), DS_ERR_REDIS, DS_ERR_NOMEM.
 * Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_cache_invalidate_tag(ds_cache *cache,
                                                         const char *tag,
                                                         int64_t *removed,
                                                         ds_error *err);

typedef struct ds_cache_stats {
    size_t size; /* growable, caller-allocated: set by DS_CACHE_STATS_INIT */
    uint64_t hits;            /* fresh values served from Redis            */
    uint64_t negative_hits;   /* cached "not found" answers                */
    uint64_t misses;          /* reads that found nothing usable           */
    uint64_t loads;           /* loader calls                              */
    uint64_t stampede_waits;  /* callers served by another caller's load   */
    uint64_t stale_served;    /* stale values served during a refresh      */
    uint64_t early_refreshes; /* XFetch refreshes before expiry            */
    uint64_t corrupt;         /* unreadable cached values replaced         */
    uint64_t errors;          /* Redis failures absorbed by the loader     */
} ds_cache_stats;
#define DS_CACHE_STATS_INIT DS_SIZED_INIT(ds_cache_stats)

/* Copies the counters since the cache opened into *out (caller storage;
 * reset first, so zero on failure). Errors: DS_ERR_INVALID (NULL cache or
 * out). Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_cache_stats_get(const ds_cache *cache,
                                                    ds_cache_stats *out,
                                                    ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CACHE_H */
