/*
 * datastore/crypto.h — OAuth tokens encrypted at rest, with key rotation.
 *
 * A ds_crypto holds a key ring (DS_TOKEN_KEYS: "kid:base64key,...", the
 * first key is the active one) in locked, guarded memory. Encryption uses
 * XChaCha20-Poly1305 (IETF) and produces a self-describing envelope
 * (format version, key id, nonce, ciphertext, tag). The associated data binds
 * each envelope to its place (table, field, owning user, scope), so an
 * envelope copied into another user's row or another column fails to
 * decrypt.
 *
 * Every decryption failure (wrong key, unknown key id, tampered or truncated
 * envelope, wrong place) is the same DS_ERR_CRYPTO, with no partial
 * plaintext.
 *
 * Thread-safety: a ds_crypto is safe to share between threads. A ds_secret
 * is owned by one caller.
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

/* Decrypted bytes in memory that is wiped when freed. */
typedef struct ds_secret ds_secret;

/* Where an envelope lives; all of it goes into the associated data. */
typedef struct ds_crypto_context {
    const char *table;  /* e.g. "service_connections"                     */
    const char *field;  /* e.g. "access_token"                            */
    int64_t owner_id;   /* the owning user's id                           */
    const char *scope;  /* e.g. provider and account; may be NULL         */
} ds_crypto_context;

/* Opens the key ring from cfg's token_keys (DS_TOKEN_KEYS).
 * Errors: DS_ERR_CONFIG (missing or malformed keys), DS_ERR_NOMEM. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_open(const ds_config *cfg,
                                                ds_crypto **out,
                                                ds_error *err);

/* Opens from a "kid:base64key,..." string. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_open_keys(const char *keyspec,
                                                     ds_crypto **out,
                                                     ds_error *err);

/* Wipes the keys and frees the ring. NULL is a no-op. */
DS_EXPORT void ds_crypto_close(ds_crypto *crypto);

/* The key id new envelopes are written under (borrowed, lives with the
 * ring). */
DS_EXPORT const char *ds_crypto_active_key_id(const ds_crypto *crypto);

/*
 * Encrypts `len` bytes for the place `ctx` under the active key.
 * *envelope is allocated for the caller: free with ds_free().
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_encrypt(
    ds_crypto *crypto, const ds_crypto_context *ctx, const void *plaintext,
    size_t len, uint8_t **envelope, size_t *envelope_len, ds_error *err);

/*
 * Decrypts an envelope written for the same place `ctx`, with whichever key
 * of the ring its key id names. *out is freed with ds_secret_free().
 * Errors: DS_ERR_CRYPTO (every kind of failure), DS_ERR_INVALID, DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_decrypt(
    ds_crypto *crypto, const ds_crypto_context *ctx, const uint8_t *envelope,
    size_t envelope_len, ds_secret **out, ds_error *err);

/* The key id named inside an envelope, without decrypting. Copies it into
 * `kid` (NUL-terminated). DS_ERR_CRYPTO when the envelope is malformed. */
DS_EXPORT DS_NODISCARD ds_status ds_crypto_envelope_key_id(
    const uint8_t *envelope, size_t envelope_len, char *kid, size_t kid_size,
    ds_error *err);

/* The plaintext (NUL-terminated after `ds_secret_len` bytes, for tokens
 * that are text). Borrowed: lives until ds_secret_free(). */
DS_EXPORT const char *ds_secret_data(const ds_secret *secret);
DS_EXPORT size_t ds_secret_len(const ds_secret *secret);
/* Wipes and frees. NULL is a no-op. */
DS_EXPORT void ds_secret_free(ds_secret *secret);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CRYPTO_H */
