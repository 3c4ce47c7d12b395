/*
 * secrets: an OAuth token encrypted at rest, and a login session whose
 * token is never stored.
 *
 *   DATABASE_URL=postgresql://... DS_TOKEN_KEYS=k1:<base64 of 32 bytes> \
 *   [REDIS_URL=redis://...] ./secrets
 *
 * Needs a migrated database (ds-migrate up). With REDIS_URL set, session
 * look-ups go to Redis first. Nothing secret is printed: not the keys, not
 * the OAuth token, not the session token.
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMAIL "secrets-example@example.com"

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_crypto *crypto = NULL;
    ds_pool *pool = NULL;
    ds_redis *redis = NULL;
    ds_session_store *sessions = NULL;
    ds_crypto_secret *entry = NULL, *plain = NULL, *token = NULL;
    ds_sql_result *res = NULL;
    uint8_t *envelope = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK)
        goto fail;
    /* Without DS_TOKEN_KEYS, an ephemeral key ring for this run only: in
     * production the keys come from your secret store, and anything sealed
     * with this one is unreadable once the program exits. */
    const char *keys = getenv("DS_TOKEN_KEYS");
    if (!keys || !*keys) {
        if (ds_crypto_generate_key("ephemeral", &entry, &err) != DS_OK ||
            ds_config_set(cfg, "token_keys", ds_crypto_secret_data(entry), &err) != DS_OK)
            goto fail;
        /* the configuration keeps its own copy: wipe this one now */
        ds_crypto_secret_free(entry);
        entry = NULL;
        puts("DS_TOKEN_KEYS is not set: using an ephemeral key ring");
    }
    if (ds_crypto_open(cfg, &crypto, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        goto fail;
    const char *redis_url = getenv("REDIS_URL");
    if (redis_url && *redis_url && ds_redis_open(cfg, &redis, &err) != DS_OK)
        goto fail;

    /* A user to own things. */
    ds_sql_param email = ds_sql_param_text(EMAIL);
    int64_t user_id;
    if (ds_sql_exec_pool(pool,
                     "INSERT INTO users (email) VALUES ($1) ON CONFLICT "
                     "((lower(email))) DO UPDATE SET updated_at = now() RETURNING id",
                     &email, 1, &res, &err) != DS_OK ||
        ds_sql_result_int64(res, 0, 0, &user_id, &err) != DS_OK)
        goto fail;
    ds_sql_result_free(res);
    res = NULL;

    /* 1. An OAuth access token, sealed for its place: this user's Google
     *    account, column access_token of service_connections. */
    const char *oauth_token = "ya29.example-access-token-from-the-provider";
    char scope[128];
    if (ds_crypto_scope_service("google", "1234567890", scope, sizeof scope,
                                &err) != DS_OK)
        goto fail;
    ds_crypto_context place = {sizeof(ds_crypto_context), "service_connections", "access_token", user_id,
                               scope};
    size_t envelope_len;
    if (ds_crypto_encrypt(crypto, &place, oauth_token, strlen(oauth_token),
                          &envelope, &envelope_len, &err) != DS_OK)
        goto fail;
    char kid[33];
    if (ds_crypto_envelope_key_id(envelope, envelope_len, kid, sizeof kid,
                                  &err) != DS_OK)
        goto fail;
    printf("sealed a %zu-byte token into a %zu-byte envelope under key '%s'\n",
           strlen(oauth_token), envelope_len, kid);
    if (ds_crypto_decrypt(crypto, &place, envelope, envelope_len, &plain,
                          &err) != DS_OK)
        goto fail;
    printf("opened it again: %s\n",
           strcmp(ds_crypto_secret_data(plain), oauth_token) == 0 ? "same token"
                                                           : "MISMATCH");
    ds_crypto_secret_free(plain); /* wipes the plaintext: keep it no longer */
    plain = NULL;
    /* Another user's row is another place: the envelope does not open. */
    ds_crypto_context elsewhere = place;
    elsewhere.owner_id = user_id + 1;
    ds_crypto_secret *wrong = NULL;
    ds_status st = ds_crypto_decrypt(crypto, &elsewhere, envelope, envelope_len,
                                     &wrong, &err);
    ds_crypto_secret_free(wrong);
    if (st != DS_ERR_CRYPTO) {
        fprintf(stderr, "secrets: an envelope opened in the wrong place\n");
        goto cleanup;
    }
    printf("in another user's row it does not open: %s\n", ds_status_str(st));
    ds_error_clear(&err);

    /* 2. A login session: the token goes to the client once; only its
     *    keyed hash is stored. */
    if (ds_session_store_open(pool, crypto, redis, NULL, &sessions, &err) != DS_OK ||
        ds_session_create(sessions, user_id, "secrets-example/1.0", "203.0.113.10",
                          &token, NULL, &err) != DS_OK)
        goto fail;
    printf("session token issued (%zu characters, given to the client only)\n",
           ds_crypto_secret_len(token));
    int64_t who;
    if (ds_session_validate(sessions, ds_crypto_secret_data(token), &who, NULL, &err) != DS_OK)
        goto fail;
    printf("the token validates for user %lld%s\n", (long long)who,
           redis ? " (Redis first, then PostgreSQL)" : "");
    if (ds_session_revoke(sessions, ds_crypto_secret_data(token), &err) != DS_OK)
        goto fail;
    st = ds_session_validate(sessions, ds_crypto_secret_data(token), &who, NULL, &err);
    if (st != DS_ERR_NOT_FOUND) {
        fprintf(stderr, "secrets: a revoked session still validated\n");
        goto cleanup;
    }
    printf("after logging out it does not: %s\n", err.message);
    ds_error_clear(&err);

    /* Clean up the example's user (sessions go with it; and its Redis
     * entries, as GDPR erase would). */
    if (ds_sql_exec_pool(pool, "DELETE FROM users WHERE id = $1",
                     (ds_sql_param[]){ds_sql_param_int64(user_id)}, 1, NULL, &err) != DS_OK)
        goto fail;
    if (redis && ds_redis_erase_user(redis, user_id, NULL, &err) != DS_OK)
        goto fail;
    rc = 0;
    goto cleanup;

fail:
    fprintf(stderr, "secrets: %s: %s\n", ds_status_str(err.code), err.message);
cleanup:
    ds_sql_result_free(res);
    ds_free(envelope);
    ds_crypto_secret_free(plain);
    ds_crypto_secret_free(token);
    ds_crypto_secret_free(entry);
    ds_session_store_close(sessions);
    ds_redis_close(redis);
    ds_pool_close(pool);
    ds_crypto_close(crypto);
    ds_config_free(cfg);
    return rc;
}
