/*
 * datastore/connections.h — a user's connections to outside services
 * (OAuth accounts), with their tokens encrypted at rest.
 *
 *   ds_connection_new in = {user_id, "github", "12345", "repo read:user",
 *                           access, 0, refresh, 0, expires_at_us};
 *   st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
 *   ds_connection *c;
 *   st = ds_connection_get(pool, crypto, id, &c, &err);
 *   use(ds_crypto_secret_data(c->access_token));   // wiped by ds_connection_free
 *
 * The repository never writes a token in plaintext: each is sealed with
 * ds_crypto_encrypt() under the active key (its id goes into key_id, so
 * ds_crypto_rotate() finds rows to re-encrypt), bound to its place
 * (table "service_connections", field "access_token"/"refresh_token",
 * owner = user_id, scope = "provider/external_account_id"). An envelope
 * moved to another row or column does not decrypt. Reads decrypt into
 * ds_crypto_secret buffers that are wiped when freed; any decrypt failure is
 * DS_ERR_CRYPTO with no partial row.
 *
 * One connection per (user, provider, external account): upsert replaces
 * the scopes, both tokens and the expiry, and sets the status back to
 * active. Limits: provider 1..64 of [a-z0-9_.-] starting with a letter or
 * digit; external_account_id 1..255 bytes; scopes up to 4000 bytes (UTF-8,
 * no NUL); tokens 1..DS_CRYPTO_MAX_PLAINTEXT bytes.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool,
 * argument or out-param, an id below 1, anything outside the limits;
 * nothing is written), DS_ERR_NOMEM, the pool's DS_ERR_CONNECTION /
 * DS_ERR_TIMEOUT / DS_ERR_DB. After a failure every out-param is NULL.
 * No message ever holds a token.
 *
 * Thread-safety: any thread, shared pool and crypto handle.
 */
#ifndef DATASTORE_CONNECTIONS_H
#define DATASTORE_CONNECTIONS_H

#include "core.h"
#include "crypto.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_connection_status {
    DS_CONNECTION_ACTIVE = 0,
    DS_CONNECTION_EXPIRED = 1,
    DS_CONNECTION_REVOKED = 2,
    DS_CONNECTION_ERROR = 3
} ds_connection_status;

typedef struct ds_connection {
    int64_t id;
    int64_t user_id;
    const char *provider;
    const char *external_account_id;
    const char *scopes;
    ds_connection_status status;
    int64_t token_expires_at;  /* epoch microseconds; 0: unknown          */
    const char *key_id;        /* key the tokens are sealed under          */
    int64_t created_at;
    int64_t updated_at;
    bool has_access_token;
    bool has_refresh_token;
    ds_crypto_secret *access_token;   /* decrypted by ds_connection_get() with a
                                  crypto handle; NULL otherwise or if none */
    ds_crypto_secret *refresh_token;
} ds_connection;

/* What to store. Tokens are borrowed for the call; NULL means "none". */
typedef struct ds_connection_new {
    size_t size; /* growable, caller-allocated: set by DS_CONNECTION_NEW_INIT */
    int64_t user_id;
    const char *provider;
    const char *external_account_id;
    const char *scopes;        /* NULL: ""                                 */
    const char *access_token;
    size_t access_token_len;   /* 0: strlen(access_token)                  */
    const char *refresh_token;
    size_t refresh_token_len;  /* 0: strlen(refresh_token)                 */
    int64_t token_expires_at;  /* 0: unknown; INT64_MAX: never (infinity)  */
} ds_connection_new;
#define DS_CONNECTION_NEW_INIT DS_SIZED_INIT(ds_connection_new)

/* Keyset cursor for ds_connection_list_for_user(): connections after
 * (after_provider, after_account) in (provider, external_account_id)
 * order. Start with {0} (both NULL: the first page); continue with the
 * list's `next`. A fixed value (docs/abi.md): it never grows. */
typedef struct ds_connection_cursor {
    const char *after_provider;
    const char *after_account;
} ds_connection_cursor;

/* One page of connections, allocated as one block. */
typedef struct ds_connection_list {
    size_t count;
    ds_connection **items;     /* no decrypted tokens; owned by the list   */
    bool has_more;             /* another page follows                     */
    ds_connection_cursor next; /* where the next page starts; its strings
                                  are borrowed from the list (or, for an
                                  empty page, from the cursor passed in):
                                  use it before freeing the list           */
} ds_connection_list;

/* Frees a row, wiping its decrypted tokens / a list and its rows. NULL is
 * a no-op. */
DS_EXPORT void ds_connection_free(ds_connection *connection);
DS_EXPORT void ds_connection_list_free(ds_connection_list *list);

/* "active", "expired", "revoked", "error"; "unknown" otherwise. */
DS_EXPORT const char *ds_connection_status_str(ds_connection_status status);

/*
 * Inserts or replaces the connection (user, provider, external account),
 * encrypting the tokens with `crypto` (required). `in` and the tokens are
 * borrowed for the call; the library keeps no copy of a plaintext token.
 * *out (may be NULL) receives the stored row without decrypted tokens,
 * freed with ds_connection_free(). Errors: DS_ERR_INVALID (also for an
 * empty token), DS_ERR_NOT_FOUND (unknown user).
 */
DS_EXPORT DS_NODISCARD ds_status ds_connection_upsert(
    ds_pool *pool, ds_crypto *crypto, const ds_connection_new *in,
    ds_connection **out, ds_error *err);

/* The connection `id` into *out (free with ds_connection_free(), which
 * wipes the tokens). With `crypto` its tokens are decrypted into the row
 * (DS_ERR_CRYPTO when they do not decrypt, and then no row); without, only
 * has_access_token / has_refresh_token tell. DS_ERR_NOT_FOUND when
 * unknown. */
DS_EXPORT DS_NODISCARD ds_status ds_connection_get(ds_pool *pool,
                                                   ds_crypto *crypto,
                                                   int64_t id,
                                                   ds_connection **out,
                                                   ds_error *err);

/*
 * A user's connections by (provider, external_account_id), which is
 * unique per user, at most `limit` (1..repo_max_page) after `cursor` (NULL
 * or {0}: from the start), without tokens, into *out (free with
 * ds_connection_list_free()); its `next` continues after it and has_more
 * says whether another page follows. DS_ERR_NOT_FOUND for an unknown
 * user; DS_ERR_INVALID for a limit out of range, a cursor with only one of
 * its two strings, or one that is empty, too long or not UTF-8.
 */
DS_EXPORT DS_NODISCARD ds_status ds_connection_list_for_user(
    ds_pool *pool, int64_t user_id, const ds_connection_cursor *cursor,
    int limit, ds_connection_list **out, ds_error *err);

/* Marks a connection expired, revoked, errored or active again.
 * DS_ERR_NOT_FOUND when unknown. */
DS_EXPORT DS_NODISCARD ds_status ds_connection_set_status(
    ds_pool *pool, int64_t id, ds_connection_status status, ds_error *err);

/* Deletes a connection and its tokens. DS_ERR_NOT_FOUND when unknown. */
DS_EXPORT DS_NODISCARD ds_status ds_connection_delete(ds_pool *pool,
                                                      int64_t id,
                                                      ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CONNECTIONS_H */
