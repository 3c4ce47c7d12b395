/*
 * datastore/session.h — login sessions whose tokens are never stored.
 *
 * ds_session_create() draws a 256-bit random token, hands it to the caller
 * once (43 characters of base64url without padding, for a cookie or a
 * bearer header) and stores only its keyed hash: BLAKE2b-256 keyed with a
 * subkey that crypto_kdf derives from the active key of the ds_crypto ring
 * (a context of its own, so it is never the key that seals OAuth tokens).
 * A database dump, a replica or a backup therefore holds nothing that
 * opens a session: without the key ring a hash is useless, and it cannot be
 * turned back into a token.
 *
 * Validation hashes the presented token and looks it up — in Redis first
 * when the store has a ds_redis, then in PostgreSQL (the primary, so a
 * revocation is seen at once) —, rejects revoked and expired sessions, and
 * slides the expiry: a session lives idle_ttl_ms after its last use, and
 * never longer than max_lifetime_ms after its creation. last_seen_at and
 * expires_at are written at most once per touch_interval_ms, so a busy
 * session costs a read, not a write, per request.
 *
 * With Redis, "<redis_prefix>sess:<hex of the hash>" keeps a copy of a live
 * session for at most cache_ttl_ms (never past its expiry), so a validation
 * is one Redis GET; it falls through to PostgreSQL when the copy is due for
 * a touch, and whenever Redis fails. A revocation replaces the copy with a
 * tombstone that a racing validation cannot overwrite, so it takes effect
 * at once; every key is registered as its user's for ds_redis_erase_user().
 * Changes made to auth_sessions behind the library's back (plain SQL) are
 * seen by cached look-ups only once the copy goes.
 *
 * Key rotation: a token is looked up under every key of the ring, so
 * sessions survive a new active key; one validated under an older key is
 * re-hashed under the active key on the spot. Sessions not used between the
 * rotation and the removal of the old key from the ring end (their holders
 * log in again); ds_crypto_rotate() cannot re-hash them, as it never sees
 * tokens.
 *
 * Thread-safety: a ds_session_store is safe to share between threads; the
 * pool, ring and Redis handle it was opened with must outlive it. A
 * ds_session is owned by its caller.
 */
#ifndef DATASTORE_SESSION_H
#define DATASTORE_SESSION_H

#include "core.h"
#include "crypto.h"
#include "pool.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_session_store ds_session_store;

/* Length of a session token in characters (without the NUL). */
#define DS_SESSION_TOKEN_LEN 43
/* Longest user agent kept; longer ones are cut at a character boundary. */
#define DS_SESSION_USER_AGENT_MAX 512

/* Zero fields take the defaults. */
typedef struct ds_session_options {
    size_t size; /* growable, caller-allocated: set by DS_SESSION_OPTIONS_INIT */
    int64_t idle_ttl_ms;       /* unused this long: expired. 14 days       */
    int64_t max_lifetime_ms;   /* after creation, whatever the use. 30 days */
    int64_t touch_interval_ms; /* slide the expiry at most this often. 60000 */
    int64_t cache_ttl_ms;      /* Redis entries live at most this long. 300000 */
} ds_session_options;
#define DS_SESSION_OPTIONS_INIT DS_SIZED_INIT(ds_session_options)

/* One session. Only the library allocates it; free with ds_session_free(). */
typedef struct ds_session {
    int64_t id;
    int64_t user_id;
    int64_t created_at_us;   /* microseconds since the epoch (server clock) */
    int64_t last_seen_at_us;
    int64_t expires_at_us;
    const char *user_agent;  /* NULL when none was given                   */
    const char *ip;          /* canonical text ("203.0.113.7", "2001:db8::1"),
                                NULL when none was given                  */
    bool revoked;
} ds_session;

/*
 * Opens a store over `pool` and `crypto` (both required, borrowed) and
 * `redis` (optional, borrowed: NULL for PostgreSQL only). `opts` may be
 * NULL. Errors: DS_ERR_INVALID (NULL pool/crypto/out, options out of range:
 * idle_ttl_ms and max_lifetime_ms 1 s to 10 years, touch_interval_ms below
 * idle_ttl_ms, cache_ttl_ms 1 s to 1 day), DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_session_store_open(
    ds_pool *pool, ds_crypto *crypto, ds_redis *redis,
    const ds_session_options *opts, ds_session_store **out, ds_error *err);

/* Frees the store (not the pool, ring or Redis handle). NULL is a no-op. */
DS_EXPORT void ds_session_store_close(ds_session_store *store);

/*
 * Starts a session for `user_id`. `user_agent` (UTF-8) and `ip` (an IPv4 or
 * IPv6 address) may be NULL. *token receives the token: show it to the user
 * once and free it with ds_crypto_secret_free(); the library keeps no copy.
 * `session` (may be NULL) receives the stored record.
 * Errors: DS_ERR_INVALID (user_id <= 0, malformed ip, user agent not UTF-8),
 * DS_ERR_NOT_FOUND (no such user), the pool's errors, DS_ERR_NOMEM. On
 * failure *token (and *session) are NULL.
 */
DS_EXPORT DS_NODISCARD ds_status ds_session_create(ds_session_store *store,
                                                   int64_t user_id,
                                                   const char *user_agent,
                                                   const char *ip,
                                                   ds_crypto_secret **token,
                                                   ds_session **session,
                                                   ds_error *err);

/*
 * Checks a presented token and slides its session's expiry. On success
 * *user_id (may be NULL) and *session (may be NULL; free it) describe the
 * session. Errors: DS_ERR_NOT_FOUND (unknown, expired or revoked: the
 * message says which; answer all three the same way to the client),
 * DS_ERR_INVALID (not a token: wrong length or alphabet), the pool's errors.
 * A Redis failure is not an error: the look-up falls back to PostgreSQL.
 */
DS_EXPORT DS_NODISCARD ds_status ds_session_validate(ds_session_store *store,
                                                     const char *token,
                                                     int64_t *user_id,
                                                     ds_session **session,
                                                     ds_error *err);

/* Ends the session of `token` (log out). Revoking a revoked session again
 * is DS_OK. Errors: DS_ERR_NOT_FOUND (no such session), DS_ERR_INVALID,
 * the pool's errors, and DS_ERR_REDIS (retryable) when the revocation is
 * stored in PostgreSQL but the store's Redis could not be updated: a cached
 * copy may then be accepted for up to cache_ttl_ms, so retry the call (it
 * is idempotent) until it returns DS_OK. The same holds for the two
 * functions below. */
DS_EXPORT DS_NODISCARD ds_status ds_session_revoke(ds_session_store *store,
                                                   const char *token,
                                                   ds_error *err);

/* Ends one session of a user by its id ("log out that device"); the
 * session must belong to `user_id`. Errors: DS_ERR_NOT_FOUND, DS_ERR_INVALID. */
DS_EXPORT DS_NODISCARD ds_status ds_session_revoke_id(ds_session_store *store,
                                                      int64_t user_id,
                                                      int64_t session_id,
                                                      ds_error *err);

/* Ends every live session of a user (password change, "log out
 * everywhere"); *revoked (may be NULL) receives how many were live (also
 * on DS_ERR_REDIS). */
DS_EXPORT DS_NODISCARD ds_status ds_session_revoke_user(
    ds_session_store *store, int64_t user_id, int64_t *revoked, ds_error *err);

/*
 * The live (neither expired nor revoked) sessions of a user, most recently
 * used first. *sessions is an array of *count pointers: free it with
 * ds_session_list_free(). Errors: DS_ERR_INVALID, the pool's errors.
 */
DS_EXPORT DS_NODISCARD ds_status ds_session_list(ds_session_store *store,
                                                 int64_t user_id,
                                                 ds_session ***sessions,
                                                 size_t *count, ds_error *err);

/*
 * Deletes sessions that expired more than `older_than_ms` milliseconds ago (an age, >= 0;
 * revoked sessions go once their expiry passes too), in batches of short
 * transactions. *purged (may be NULL) receives how many rows went.
 */
DS_EXPORT DS_NODISCARD ds_status ds_session_purge_expired(
    ds_session_store *store, int64_t older_than_ms, int64_t *purged,
    ds_error *err);

/* Frees a session. NULL is a no-op. */
DS_EXPORT void ds_session_free(ds_session *session);
/* Frees a list from ds_session_list(). NULL is a no-op. */
DS_EXPORT void ds_session_list_free(ds_session **sessions, size_t count);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_SESSION_H */
