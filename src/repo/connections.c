/* Service connections: tokens sealed with the crypto handle before they
 * leave the process, opened into wiped ds_crypto_secret buffers on read. */
#include <string.h>

#include "core/growable.h"
#include "datastore/connections.h"
#include "repo/connection_tokens.h"
#include "repo/repo_internal.h"

#define CONN_COLS                                                              \
    "id, user_id, provider, external_account_id, scopes, access_token_enc, "  \
    "refresh_token_enc, token_expires_at, status, key_id, created_at, "       \
    "updated_at, access_token_enc IS NOT NULL, refresh_token_enc IS NOT NULL"
#define CONN_TYPES                                                             \
    {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,          \
     DS_OID_BYTEA, DS_OID_BYTEA, DS_OID_TIMESTAMPTZ, DS_OID_TEXT, DS_OID_TEXT, \
     DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ, DS_OID_BOOL, DS_OID_BOOL}
#define CONN_NCOLS 14

enum { S_UPSERT, S_GET, S_LIST, S_SET_STATUS, S_DELETE };

static const ds__stmt_def stmts[] = {
    [S_UPSERT] = {"connections.upsert",
                  "INSERT INTO service_connections AS s (user_id, provider, "
                  "external_account_id, scopes, access_token_enc, "
                  "refresh_token_enc, token_expires_at, key_id) VALUES ($1, "
                  "$2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, provider, "
                  "external_account_id) DO UPDATE SET scopes = "
                  "EXCLUDED.scopes, access_token_enc = "
                  "EXCLUDED.access_token_enc, refresh_token_enc = "
                  "EXCLUDED.refresh_token_enc, token_expires_at = "
                  "EXCLUDED.token_expires_at, key_id = EXCLUDED.key_id, "
                  "status = 'active', updated_at = now() RETURNING " CONN_COLS,
                  8,
                  {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,
                   DS_OID_BYTEA, DS_OID_BYTEA, DS_OID_TIMESTAMPTZ, DS_OID_TEXT},
                  CONN_NCOLS, CONN_TYPES},
    [S_GET] = {"connections.get",
               "SELECT " CONN_COLS " FROM service_connections WHERE id = $1",
               1, {DS_OID_INT8}, CONN_NCOLS, CONN_TYPES},
    /* Keyset on the (user_id, provider, external_account_id) unique index:
     * a range scan that stops at the LIMIT. Both are never empty, so
     * ('', '') starts the first page. */
    [S_LIST] = {"connections.list",
                "SELECT c.* FROM users u LEFT JOIN LATERAL (SELECT id, "
                "user_id, provider, external_account_id, scopes, NULL::bytea, "
                "NULL::bytea, token_expires_at, status, key_id, created_at, "
                "updated_at, access_token_enc IS NOT NULL, refresh_token_enc "
                "IS NOT NULL FROM service_connections WHERE user_id = u.id "
                "AND (provider, external_account_id) > ($2, $3) ORDER BY "
                "provider, external_account_id LIMIT $4) c ON true WHERE "
                "u.id = $1",
                4, {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_INT8},
                CONN_NCOLS, CONN_TYPES},
    [S_SET_STATUS] = {"connections.set_status",
                      "UPDATE service_connections SET status = $2, "
                      "updated_at = now() WHERE id = $1",
                      2, {DS_OID_INT8, DS_OID_TEXT}, -1, {0}},
    [S_DELETE] = {"connections.delete",
                  "DELETE FROM service_connections WHERE id = $1", 1,
                  {DS_OID_INT8}, -1, {0}},
};

size_t ds__stmts_connections(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

static const char *const status_names[] = {"active", "expired", "revoked",
                                           "error"};

DS_EXPORT const char *ds_connection_status_str(ds_connection_status status) {
    return status >= DS_CONNECTION_ACTIVE && status <= DS_CONNECTION_ERROR
               ? status_names[status]
               : "unknown";
}

static ds_connection_status status_from(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(status_names[i], s) == 0)
            return (ds_connection_status)i;
    return DS_CONNECTION_ERROR;
}

static ds_status decode_conn(const PGresult *r, int row, ds__block *b,
                             void *item, ds_error *err) {
    (void)err;
    ds_connection *c = item;
    c->id = ds__cell_int64(r, row, 0);
    c->user_id = ds__cell_int64(r, row, 1);
    c->provider = ds__block_text(b, r, row, 2);
    c->external_account_id = ds__block_text(b, r, row, 3);
    c->scopes = ds__block_text(b, r, row, 4);
    c->token_expires_at = ds__cell_ts(r, row, 7);
    c->status = status_from(PQgetvalue(r, row, 8));
    c->key_id = ds__block_text(b, r, row, 9);
    c->created_at = ds__cell_ts(r, row, 10);
    c->updated_at = ds__cell_ts(r, row, 11);
    c->has_access_token = ds__cell_bool(r, row, 12);
    c->has_refresh_token = ds__cell_bool(r, row, 13);
    return DS_OK;
}

DS__LIST_ATTACH(attach_conns, ds_connection_list, ds_connection)

static const int text_cols[] = {2, 3, 4, 9};

/* Rows come without tokens: ds_connection_get decrypts them afterwards. */
static const ds__row_type conn_type = {
    sizeof(ds_connection), text_cols, DS__NELEM(text_cols), decode_conn, NULL,
    sizeof(ds_connection_list), attach_conns};

DS_EXPORT void ds_connection_free(ds_connection *connection) {
    if (!connection)
        return;
    ds_crypto_secret_free(connection->access_token);
    ds_crypto_secret_free(connection->refresh_token);
    ds__free(connection);
}

DS_EXPORT void ds_connection_list_free(ds_connection_list *list) {
    ds__free(list);
}

static ds_status check_provider(ds_error *err, const char *func,
                                const char *p) {
    if (!p)
        return ds__error_set(err, DS_ERR_INVALID, "%s: provider is NULL", func);
    size_t n = strlen(p);
    bool ok = n >= 1 && n <= DS_PROVIDER_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = p[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        ok = alnum || (i > 0 && (c == '_' || c == '.' || c == '-'));
    }
    if (!ok)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: provider must be 1 to %d of [a-z0-9_.-], "
                             "starting with a letter or digit",
                             func, DS_PROVIDER_MAX);
    return DS_OK;
}

DS_EXPORT ds_status ds_connection_upsert(ds_pool *pool, ds_crypto *crypto,
                                         const ds_connection_new *in,
                                         ds_connection **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, crypto, "crypto is NULL (tokens are never stored in "
                              "plaintext)");
    DS_CHECK_ARG(err, in, "in is NULL");
    ds_connection_new cn;
    ds_status checked = DS__IN(in, &cn, ds_connection_new, err);
    if (checked != DS_OK)
        return checked;
    in = &cn;
    DS_CHECK_ARG(err, in->user_id > 0, "user_id must be positive");
    ds_status st = check_provider(err, __func__, in->provider);
    if (st == DS_OK)
        st = ds__check_text(err, __func__, "external_account_id",
                            in->external_account_id,
                            in->external_account_id
                                ? strlen(in->external_account_id)
                                : 0,
                            1, DS_ACCOUNT_ID_MAX);
    if (st == DS_OK && in->scopes)
        st = ds__check_text(err, __func__, "scopes", in->scopes,
                            strlen(in->scopes), 0, DS_SCOPES_MAX);
    if (st != DS_OK)
        return st;
    const char *kid = ds_crypto_active_key_id(crypto);
    const char *tokens[2] = {in->access_token, in->refresh_token};
    size_t lens[2] = {in->access_token_len, in->refresh_token_len};
    const char *fields[2] = {"access_token", "refresh_token"};
    const ds__token_field places[2] = {DS__TOKEN_ACCESS, DS__TOKEN_REFRESH};
    uint8_t *env[2] = {NULL, NULL};
    size_t env_len[2] = {0, 0};
    for (int i = 0; i < 2 && st == DS_OK; i++) {
        if (!tokens[i])
            continue;
        size_t len = lens[i] ? lens[i] : strlen(tokens[i]);
        if (len == 0) {
            st = ds__error_set(err, DS_ERR_INVALID, "%s: %s is empty",
                               __func__, fields[i]);
            break;
        }
        ds__token_place place;
        st = ds__token_place_set(&place, in->user_id, in->provider,
                                 in->external_account_id, places[i], err);
        if (st == DS_OK)
            st = ds_crypto_encrypt(crypto, &place.ctx, tokens[i], len,
                                   &env[i], &env_len[i], err);
    }
    if (st == DS_OK) {
        ds__bind b;
        ds__bind_init(&b);
        ds__bind_int64(&b, in->user_id);
        ds__bind_text(&b, in->provider);
        ds__bind_text(&b, in->external_account_id);
        ds__bind_text(&b, in->scopes ? in->scopes : "");
        for (int i = 0; i < 2; i++) {
            if (env[i])
                ds__bind_bytes(&b, env[i], env_len[i]);
            else
                ds__bind_null(&b);
        }
        if (in->token_expires_at)
            ds__bind_ts(&b, in->token_expires_at);
        else
            ds__bind_null(&b);
        ds__bind_text(&b, kid);
        PGresult *r = ds__repo_exec(pool, false, &stmts[S_UPSERT], &b, err);
        if (!r) {
            st = err ? err->code : DS_ERR_DB;
            if (st == DS_ERR_NOT_FOUND)
                ds__not_found(err, __func__, "user", in->user_id);
        } else {
            if (out && !(*out = ds__row_new(r, 0, &conn_type, __func__, err)))
                st = err->code;
            PQclear(r);
        }
    }
    ds_free(env[0]);
    ds_free(env[1]);
    return st;
}

DS_EXPORT ds_status ds_connection_get(ds_pool *pool, ds_crypto *crypto,
                                      int64_t id, ds_connection **out,
                                      ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_GET], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return ds__not_found(err, __func__, "service connection", id);
    }
    ds_connection *c = ds__row_new(r, 0, &conn_type, __func__, err);
    ds_status st = c ? DS_OK : err->code;
    for (int i = 0; st == DS_OK && crypto && i < 2; i++) {
        if (PQgetisnull(r, 0, 5 + i))
            continue;
        ds__token_place place;
        st = ds__token_place_set(&place, c->user_id, c->provider,
                                 c->external_account_id,
                                 i == 0 ? DS__TOKEN_ACCESS : DS__TOKEN_REFRESH,
                                 err);
        if (st == DS_OK)
            st = ds_crypto_decrypt(
                crypto, &place.ctx, (const uint8_t *)PQgetvalue(r, 0, 5 + i),
                (size_t)PQgetlength(r, 0, 5 + i),
                i == 0 ? &c->access_token : &c->refresh_token, err);
        if (st != DS_OK)
            ds_connection_free(c);
    }
    PQclear(r);
    if (st == DS_OK)
        *out = c;
    return st;
}

DS_EXPORT ds_status ds_connection_list_for_user(
    ds_pool *pool, int64_t user_id, const ds_connection_cursor *cursor,
    int limit, ds_connection_list **out, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    const char *provider = cursor ? cursor->after_provider : NULL;
    const char *account = cursor ? cursor->after_account : NULL;
    DS_CHECK_ARG(err, !provider == !account,
                 "cursor has only one of after_provider and after_account");
    if (provider) {
        st = ds__check_text(err, __func__, "cursor.after_provider", provider,
                            strlen(provider), 1, DS_PROVIDER_MAX);
        if (st == DS_OK)
            st = ds__check_text(err, __func__, "cursor.after_account",
                                account, strlen(account), 1,
                                DS_ACCOUNT_ID_MAX);
        if (st != DS_OK)
            return st;
    }
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    ds__bind_text(&b, provider ? provider : "");
    ds__bind_text(&b, account ? account : "");
    ds__bind_int64(&b, (int64_t)limit + 1);
    ds_connection_list *list =
        ds__repo_list(pool, false, &stmts[S_LIST], &b, limit, &conn_type,
                      __func__, "user", user_id, err);
    if (!list)
        return err->code;
    if (list->count) {
        const ds_connection *last = list->items[list->count - 1];
        list->next.after_provider = last->provider;
        list->next.after_account = last->external_account_id;
    } else if (cursor) {
        list->next = *cursor;
    }
    *out = list;
    return DS_OK;
}

DS_EXPORT ds_status ds_connection_set_status(ds_pool *pool, int64_t id,
                                             ds_connection_status status,
                                             ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    DS_CHECK_ARG(err, status >= DS_CONNECTION_ACTIVE &&
                          status <= DS_CONNECTION_ERROR,
                 "unknown status");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    ds__bind_text(&b, status_names[status]);
    return ds__repo_command(pool, &stmts[S_SET_STATUS], &b, __func__,
                            "service connection", id, err);
}

DS_EXPORT ds_status ds_connection_delete(ds_pool *pool, int64_t id,
                                         ds_error *err) {
    return ds__repo_id_command(pool, &stmts[S_DELETE], id, "id", __func__,
                               "service connection", err);
}
