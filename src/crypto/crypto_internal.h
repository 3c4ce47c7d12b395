/* The key ring's private side: the envelope decoder (also driven by the
 * fuzz target) and the keyed hashes sessions are stored under. */
#ifndef DS_CRYPTO_INTERNAL_H
#define DS_CRYPTO_INTERNAL_H

#include "core/internal.h"
#include "datastore/crypto.h"

#define DS_ENVELOPE_VERSION 1
#define DS_ENVELOPE_NONCE_BYTES 24
#define DS_ENVELOPE_TAG_BYTES 16
#define DS_RING_MAX_KEYS 64

/* A parsed envelope: pointers into the caller's buffer. */
typedef struct ds__envelope {
    uint8_t version;
    char kid[DS_KID_MAX + 1];
    size_t header_len;          /* version, kid length and kid */
    const uint8_t *nonce;       /* DS_ENVELOPE_NONCE_BYTES */
    const uint8_t *ciphertext;  /* ciphertext then tag */
    size_t ciphertext_len;      /* includes the tag */
} ds__envelope;

/* Checks the structure (version, key id syntax, lengths) without any key.
 * False for anything malformed. */
bool ds__envelope_parse(const uint8_t *buf, size_t len, ds__envelope *out);

/* Session token hashes: BLAKE2b-256 keyed with a subkey derived from each
 * ring key (crypto_kdf, its own context, so it never equals an AEAD key). */
#define DS_SESSION_HASH_BYTES 32
#define DS_SESSION_TOKEN_BYTES 32

size_t ds__crypto_key_count(const ds_crypto *crypto);
/* Test hook: whether the key memory is readable right now. */
bool ds__crypto_keys_readable(ds_crypto *crypto);
/* Test hook: the key memory itself (to prove it faults when locked). */
const volatile unsigned char *ds__crypto_key_memory(const ds_crypto *crypto);
/* Hashes `token` under ring key `index` (0 is the active key). */
ds_status ds__crypto_session_hash(ds_crypto *crypto, size_t index,
                                  const uint8_t *token, size_t token_len,
                                  uint8_t out[DS_SESSION_HASH_BYTES],
                                  ds_error *err);
/* Hashes under every ring key at once (one unlock of the key memory);
 * `out` holds ds__crypto_key_count() hashes, the active key's first. */
ds_status ds__crypto_session_hashes(ds_crypto *crypto, const uint8_t *token,
                                    size_t token_len, uint8_t *out,
                                    ds_error *err);

/* A secret buffer of `len` bytes plus a NUL, wiped on free. */
ds_crypto_secret *ds__secret_new(size_t len);
char *ds__secret_bytes(ds_crypto_secret *secret);

#endif
