/*
 * datastore/redis.h — the Redis handle shared by the cache, rate limiter,
 * presence, job queue and session look-ups.
 *
 * A ds_redis is a small pool of connections to one Redis server
 * (`redis://[user:password@]host:port/db`, or `rediss://` for TLS with
 * certificate verification on), with connect/command timeouts, reconnection
 * after a server restart, and a key prefix (redis_prefix) on every key the
 * library writes.
 *
 * Thread-safety: a ds_redis is safe to share between threads.
 */
#ifndef DATASTORE_REDIS_H
#define DATASTORE_REDIS_H

#include "config.h"
#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_redis ds_redis;

/* Opens from cfg's redis_url and redis_* settings, and checks the server
 * answers. Errors: DS_ERR_CONFIG, DS_ERR_REDIS (unreachable, auth, TLS;
 * retryable when transient), DS_ERR_NOMEM. On failure *out is NULL. */
DS_EXPORT DS_NODISCARD ds_status ds_redis_open(const ds_config *cfg,
                                               ds_redis **out, ds_error *err);

/* Shorthand: defaults plus this URL. */
DS_EXPORT DS_NODISCARD ds_status ds_redis_open_url(const char *url,
                                                   ds_redis **out,
                                                   ds_error *err);

/* Closes every connection. NULL is a no-op. */
DS_EXPORT void ds_redis_close(ds_redis *redis);

/*
 * Removes every key the library keeps for one user (session look-ups, cache
 * entries registered for the user, presence and typing state) and reports
 * how many keys it removed. Used by GDPR erase.
 */
DS_EXPORT DS_NODISCARD ds_status ds_redis_erase_user(ds_redis *redis,
                                                     int64_t user_id,
                                                     int64_t *keys_removed,
                                                     ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_REDIS_H */
