/* The session store's private side. */
#ifndef DS_SESSION_INTERNAL_H
#define DS_SESSION_INTERNAL_H

#include "crypto/crypto_internal.h"
#include "datastore/session.h"
#include "pool/stmt.h"

struct ds_session_store {
    ds_pool *pool;      /* borrowed */
    ds_crypto *crypto;  /* borrowed */
    ds_redis *redis;    /* borrowed, may be NULL */
    int64_t idle_us, max_us, touch_us;
    int64_t cache_ttl_ms;
};

/* Decodes a presented token into its 32 raw bytes; DS_ERR_INVALID (naming
 * `fn`, never the token) when it is not one. */
ds_status ds__session_token_decode(const char *token,
                                   uint8_t raw[DS_SESSION_TOKEN_BYTES],
                                   const char *fn, ds_error *err);

/* One allocation holding the record and its strings. */
ds_session *ds__session_new(int64_t id, int64_t user_id, int64_t created,
                            int64_t last_seen, int64_t expires,
                            const char *ua, size_t ua_len, const char *ip,
                            size_t ip_len, bool revoked);

size_t ds__stmts_session(const ds__stmt_def **defs);

/* ---- the Redis look-up cache (cache.c; only with store->redis) ---- */

typedef enum ds__cache_result {
    DS_CACHE_MISS = 0, /* absent, unreadable, due for a touch, or Redis failed */
    DS_CACHE_HIT,      /* *out holds the live session */
    DS_CACHE_REVOKED   /* a tombstone: revoked */
} ds__cache_result;

/* The key that seals a Redis copy's user agent and IP: BLAKE2b-256 keyed
 * with the token's 32 raw bytes over DS__SESSION_SEAL_CONTEXT. Only a
 * holder of the token can derive it; Redis never sees it. */
#define DS__SESSION_SEAL_KEY_BYTES 32
#define DS__SESSION_SEAL_CONTEXT "datastore session cache details v1"
void ds__session_seal_key(const uint8_t raw[DS_SESSION_TOKEN_BYTES],
                          uint8_t key[DS__SESSION_SEAL_KEY_BYTES]);

ds__cache_result ds__session_cache_get(ds_session_store *s, const uint8_t *hash,
                                       const uint8_t *seal_key,
                                       ds_session **out);
/* Best effort: a failure is logged, never returned. */
void ds__session_cache_put(ds_session_store *s, const uint8_t *hash,
                           const uint8_t *seal_key, const ds_session *sess);
/* Replaces the entry of `hash` with a tombstone (registered for the user). */
ds_status ds__session_cache_revoke(ds_session_store *s, int64_t user_id,
                                   const uint8_t *hash, ds_error *err);

#endif
