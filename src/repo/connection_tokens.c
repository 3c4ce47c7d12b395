/* The associated data of service-connection tokens (connection_tokens.h). */
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "repo/connection_tokens.h"

DS_EXPORT ds_status ds_crypto_scope_service(const char *provider,
                                            const char *external_account_id,
                                            char *buf, size_t buf_size,
                                            ds_error *err) {
    DS_CHECK_ARG(err, buf != NULL && buf_size > 0, "buf is NULL or empty");
    buf[0] = '\0';
    DS_CHECK_ARG(err, provider && *provider, "provider is NULL or empty");
    DS_CHECK_ARG(err, external_account_id && *external_account_id,
                 "external_account_id is NULL or empty");
    DS_CHECK_ARG(err, strchr(provider, '/') == NULL, "provider holds a '/'");
    size_t need = strlen(provider) + 1 + strlen(external_account_id) + 1;
    if (need > buf_size)
        return ds__error_set(err, DS_ERR_INVALID,
                             "ds_crypto_scope_service: buffer of %zu bytes is "
                             "too small (%zu needed)",
                             buf_size, need);
    snprintf(buf, buf_size, "%s/%s", provider, external_account_id);
    return DS_OK;
}

ds_status ds__token_place_set(ds__token_place *place, int64_t user_id,
                              const char *provider,
                              const char *external_account_id,
                              ds__token_field field, ds_error *err) {
    ds_status st = ds_crypto_scope_service(provider, external_account_id,
                                           place->scope, sizeof place->scope,
                                           err);
    if (st != DS_OK)
        return st;
    ds_crypto_context ctx = DS_CRYPTO_CONTEXT_INIT;
    place->ctx = ctx;
    place->ctx.table = "service_connections";
    place->ctx.field =
        field == DS__TOKEN_ACCESS ? "access_token" : "refresh_token";
    place->ctx.owner_id = user_id;
    place->ctx.scope = place->scope;
    return DS_OK;
}
