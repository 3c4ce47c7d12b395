/*
 * datastore/crypto.h — OAuth tokens encrypted at rest, with key rotation.
 *
 * A ds_crypto holds a key ring (DS_TOKEN_KEYS: "kid:base64key,...", 32-byte
 * keys, the first key is the active one) in locked, guarded memory
 * (sodium_malloc) that is made inaccessible (PROT_NONE) within two seconds
 * of its last use, and wiped on close. Encryption uses
 * XChaCha20-Poly1305 (IETF) with a random 24-byte nonce and produces a
 * self-describing envelope:
 *
 *   offset 0        format version (1)
 *   offset 1        key id length n (1..32)
 *   offset 2        key id (n bytes: letters, digits, '-', '_', '.')
 *   offset 2+n      nonce (24 bytes)
 *   offset 26+n     ciphertext (as long as the plaintext) and tag (16 bytes)
 *
 * The associated data binds each envelope to its place: the envelope header
 * (version and key id) followed by a length-prefixed encoding of table,
 * field, owner id and scope, so an envelope copied into another user's row,
 * another column or another account fails to decrypt, and no two different
 * places share an encoding (there is no separator to forge).
 *
 * Every decryption failure (wrong key, unknown key id, tampered, truncated
 * or empty envelope, wrong place) is the same DS_ERR_CRYPTO with the same
 * message, and never yields partial plaintext.
 *
 * Service connections (the convention the repositories and
 * ds_crypto_rotate() share):
 *
 *   table     "service_connections"
 *   field     "access_token" or "refresh_token"
 *   owner_id  service_connections.user_id
 *   scope     provider "/" external_account_id  (the provider name cannot
 *             hold '/', so the split is unambiguous; e.g. "google/12345")
 *   key_id    column set to ds_crypto_active_key_id() of the ring that
 *             wrote the row's envelopes (rotation finds stale rows by it)
 *
 * ds_crypto_scope_service() builds that scope string.
 *
 * Thread-safety: a ds_crypto is safe to share between threads (close it
 * only once no other thread uses it). A ds_crypto_secret is owned by one caller.
 */
#ifndef DATASTORE_CRYPTO_H
#define DATASTORE_CRYPTO_H

#include "config.h"
#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_crypto ds_crypto;

/* Decrypted bytes (or a fresh secret such as a session token) in memory
 * that is wiped when freed. */
typedef struct ds_crypto_secret ds_crypto_secret;

/* Bytes added by the envelope around the plaintext for a key id of
 * `kid_len` characters: 2 + kid_len + 24 (nonce) + 16 (tag). */
#define DS_CRYPTO_ENVELOPE_OVERHEAD(kid_len) (42u + (size_t)(kid_len))
/* Largest plaintext ds_crypto_encrypt() accepts (16 MiB). */
#define DS_CRYPTO_MAX_PLAINTEXT ((size_t)16 << 20)

/* Where an envelope lives; all of it goes into the associated data. */
typedef struct ds_crypto_context {
    size_t size; /* growable, caller-allocated: set by DS_CRYPTO_CONTEXT_INIT */
    const char *table;  /* e.g. "service_connections"; required, non-empty */
    const char *field;  /* e.g. "access_token"; required, non-empty       */
    int64_t owner_id;   /* the owning user's id                           */
    const char *scope;  /* e.g. provider and account; may be NULL (which
                           is a different place from "")                */
} ds_crypto_context;
#define DS_CRYPTO_CONTEXT_INIT DS_SIZED_INIT(ds_crypto_context)

/* Opens the key ring from cfg's token_keys (DS_TOKEN_KEYS).
 * Errors: DS_ERR_INVALID (NULL argument), DS_ERR_CONFIG (missing or
 * malformed keys; the message names the entry, never the key),
 * DS_ERR_NOMEM. On failure *out is NULL. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_open(const ds_config *cfg,
                                                ds_crypto **out,
                                                ds_error *err);

/* Opens from a "kid:base64key,..." string (same errors). The string is not
 * kept; wipe your copy when you are done with it. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_open_keys(const char *keyspec,
                                                     ds_crypto **out,
                                                     ds_error *err);

/* Wipes the keys and frees the ring. NULL is a no-op. */
DS_EXPORT void ds_crypto_close(ds_crypto *crypto);

/* The key id new envelopes are written under (borrowed, lives with the
 * ring). NULL for a NULL ring. */
DS_EXPORT const char *ds_crypto_active_key_id(const ds_crypto *crypto);

/* True when the ring holds a key with this id. */
DS_EXPORT bool ds_crypto_has_key(const ds_crypto *crypto, const char *kid);

/*
 * Encrypts `len` bytes for the place `ctx` under the active key, with a
 * fresh random nonce. *envelope (DS_CRYPTO_ENVELOPE_OVERHEAD(kid length) +
 * len bytes) is allocated for the caller: free with ds_free().
 * Errors: DS_ERR_INVALID (NULL argument, empty table/field, len above
 * DS_CRYPTO_MAX_PLAINTEXT), DS_ERR_NOMEM. On failure *envelope is NULL and
 * *envelope_len 0.
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_encrypt(
    ds_crypto *crypto, const ds_crypto_context *ctx, const void *plaintext,
    size_t len, uint8_t **envelope, size_t *envelope_len, ds_error *err);

/*
 * Decrypts an envelope written for the same place `ctx`, with whichever key
 * of the ring its key id names. *out is freed with ds_crypto_secret_free().
 * Errors: DS_ERR_CRYPTO (every kind of failure, one message, including an
 * empty envelope), DS_ERR_INVALID (NULL crypto/ctx/out, or NULL envelope
 * with a non-zero length), DS_ERR_NOMEM. On failure *out is NULL.
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_decrypt(
    ds_crypto *crypto, const ds_crypto_context *ctx, const uint8_t *envelope,
    size_t envelope_len, ds_crypto_secret **out, ds_error *err);

/* The key id named inside an envelope, without decrypting (nothing is
 * authenticated: use it to route, never to trust). Copies it into `kid`
 * (NUL-terminated; 33 bytes always suffice). DS_ERR_CRYPTO when the envelope
 * is malformed, DS_ERR_INVALID when `kid` is NULL or too small. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_envelope_key_id(
    const uint8_t *envelope, size_t envelope_len, char *kid, size_t kid_size,
    ds_error *err);

/* The plaintext (NUL-terminated after `ds_crypto_secret_len` bytes, for tokens
 * that are text). Borrowed: lives until ds_crypto_secret_free(). NULL / 0 for a
 * NULL secret. */
DS_EXPORT const char *ds_crypto_secret_data(const ds_crypto_secret *secret);
DS_EXPORT size_t ds_crypto_secret_len(const ds_crypto_secret *secret);
/* Wipes and frees. NULL is a no-op. */
DS_EXPORT void ds_crypto_secret_free(ds_crypto_secret *secret);

/*
 * A new random 32-byte key as one key ring entry, "kid:base64key" (standard
 * base64), in a ds_crypto_secret. Prepend it to DS_TOKEN_KEYS to make it the
 * active key. Errors: DS_ERR_INVALID (kid not 1 to 32 of letters, digits,
 * '-', '_', '.'), DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_generate_key(const char *kid,
                                                        ds_crypto_secret **entry,
                                                        ds_error *err);

/*
 * Writes the service-connection scope "provider/external_account_id" into
 * `buf` (NUL-terminated). Errors: DS_ERR_INVALID (NULL or empty part, a '/'
 * in the provider, or `buf` too small).
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_scope_service(
    const char *provider, const char *external_account_id, char *buf,
    size_t buf_size, ds_error *err);

/* ------------------------------------------------------------------------
 * Key rotation.
 *
 * 1. Generate a key (ds_crypto_generate_key) and put it first in
 *    DS_TOKEN_KEYS, keeping the old keys after it; deploy everywhere. New
 *    envelopes are now written under it, old ones still decrypt.
 * 2. Run ds_crypto_rotate() (once, from one process): it re-encrypts every
 *    service-connection token not yet under the active key.
 * 3. When it reports remaining == 0, remove the old key from DS_TOKEN_KEYS
 *    and deploy again.
 */
typedef struct ds_crypto_rotate_options {
    size_t size; /* growable, caller-allocated: set by DS_CRYPTO_ROTATE_OPTIONS_INIT */
    int batch_size;   /* rows per transaction; 0: 200 (1..10000)          */
    int64_t max_rows; /* stop after this many rows and return (call again
                         to resume); 0: no limit                          */
    int pause_ms;     /* sleep between batches to spare the primary       */
    ds_progress_fn progress; /* may be NULL: called after each committed
                                batch (operation "crypto_rotate", item
                                "service_connections", unit "rows": rows
                                rotated or found undecryptable, of those
                                under another key at the start); non-zero
                                stops with DS_ERR_CANCELLED (run again to
                                resume)                                   */
    void *progress_ud;
} ds_crypto_rotate_options;
#define DS_CRYPTO_ROTATE_OPTIONS_INIT DS_SIZED_INIT(ds_crypto_rotate_options)

typedef struct ds_crypto_rotate_stats {
    size_t size; /* growable, caller-allocated: set by DS_CRYPTO_ROTATE_STATS_INIT */
    int64_t rotated;   /* rows re-encrypted under the active key by this call */
    int64_t failed;    /* rows whose envelopes would not decrypt with this
                          ring (left unchanged; their ids are logged)     */
    int64_t remaining; /* rows still under another key when the call
                          returned (failed ones included); 0 means every
                          old key may be removed                          */
    int64_t batches;   /* committed transactions                          */
} ds_crypto_rotate_stats;
#define DS_CRYPTO_ROTATE_STATS_INIT DS_SIZED_INIT(ds_crypto_rotate_stats)

/*
 * Re-encrypts the tokens of every service_connections row whose key_id is
 * not the active key id, online: batches of short transactions that lock
 * their rows with FOR UPDATE SKIP LOCKED, so concurrent writers neither wait
 * long nor are overwritten (rows they hold are retried at the end of the
 * pass, a few times). Resumable: it only ever looks at rows still under
 * another key, so an interrupted or max_rows-limited run is simply run
 * again. `opts` may be NULL; `stats` may be NULL.
 * Errors: DS_ERR_CRYPTO when some rows could not be decrypted (the others
 * are rotated; stats->failed says how many), the pool's errors for the
 * database (stats hold the progress made so far), DS_ERR_CANCELLED (the
 * progress callback asked to stop; stats hold what was done and
 * stats->remaining is at least 1), DS_ERR_INVALID.
 * Thread-safety: run one rotation at a time (two would only waste work).
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_rotate(
    ds_crypto *crypto, ds_pool *pool, const ds_crypto_rotate_options *opts,
    ds_crypto_rotate_stats *stats, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CRYPTO_H */
