/* Where a service connection's token envelopes are bound: the one place
 * the associated-data convention lives (datastore/crypto.h describes it
 * for readers in other languages). The connections repository seals and
 * opens tokens with it; rotation (connections_rotate.c) re-seals them.
 * Never installed. */
#ifndef DS_REPO_CONNECTION_TOKENS_H
#define DS_REPO_CONNECTION_TOKENS_H

#include "datastore/crypto.h"
#include "repo/repo_internal.h"

typedef enum ds__token_field {
    DS__TOKEN_ACCESS,  /* service_connections.access_token_enc  */
    DS__TOKEN_REFRESH  /* service_connections.refresh_token_enc */
} ds__token_field;

/* A token's place: the crypto context and the scope string it points to.
 * ctx.scope points into scope, so a place is filled where it is used and
 * never copied. */
typedef struct ds__token_place {
    char scope[DS_PROVIDER_MAX + 1 + DS_ACCOUNT_ID_MAX + 1];
    ds_crypto_context ctx;
} ds__token_place;

/* Fills `place` for token `field` of the connection (user_id, provider,
 * external_account_id). Errors: DS_ERR_INVALID (an empty provider or
 * account, a '/' in the provider, a part longer than the schema allows). */
ds_status ds__token_place_set(ds__token_place *place, int64_t user_id,
                              const char *provider,
                              const char *external_account_id,
                              ds__token_field field, ds_error *err);

/* The rotation's statements, for the schema check's registry. */
size_t ds__stmts_crypto(const struct ds__stmt_def **defs);

#endif
