/* App settings, global (user_id NULL) or per user. The two scopes have
 * their own partial unique indexes, so each statement comes in a global
 * and a user flavour (an `IS NOT DISTINCT FROM` would not use them). */
#include <stdio.h>
#include <string.h>

#include "datastore/settings.h"
#include "repo/repo_internal.h"

#define SET_COLS "id, user_id, key, value, version, updated_at"
#define SET_TYPES                                                              \
    {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB, DS_OID_INT8,         \
     DS_OID_TIMESTAMPTZ, DS_OID_BOOL}
#define P3 {DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB}
#define P3V {DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB, DS_OID_INT8}

/* $1 user id (unused by global flavours), $2 key, $3 value, $4 version. */
#define SCOPE_G "user_id IS NULL"
#define SCOPE_U "user_id = $1"
#define UID_G "NULL::bigint"
#define UID_U "$1"
#define TARGET_G "(key) WHERE user_id IS NULL"
#define TARGET_U "(user_id, key) WHERE user_id IS NOT NULL"

#define GET(scope)                                                             \
    "SELECT " SET_COLS ", true FROM app_settings WHERE " scope " AND key = $2"
#define CREATE(uid)                                                            \
    "INSERT INTO app_settings (user_id, key, value) VALUES (" uid ", $2, $3) " \
    "RETURNING " SET_COLS ", true"
#define UPSERT(uid, target)                                                    \
    "INSERT INTO app_settings AS s (user_id, key, value) VALUES (" uid       \
    ", $2, $3) ON CONFLICT " target " DO UPDATE SET value = EXCLUDED.value, " \
    "version = s.version + 1, updated_at = now() RETURNING " SET_COLS ", true"
#define UPDATE(scope)                                                          \
    "WITH upd AS (UPDATE app_settings SET value = $3, version = version + 1, " \
    "updated_at = now() WHERE " scope " AND key = $2 AND version = $4 "       \
    "RETURNING " SET_COLS ") SELECT " SET_COLS ", true FROM upd UNION ALL "   \
    "SELECT " SET_COLS ", false FROM app_settings WHERE " scope " AND key = " \
    "$2 AND NOT EXISTS (SELECT 1 FROM upd)"
#define DELETE(scope)                                                          \
    "WITH del AS (DELETE FROM app_settings WHERE " scope " AND key = $2 AND " \
    "($3 < 0 OR version = $3) RETURNING id) SELECT true FROM del UNION ALL "  \
    "SELECT false FROM app_settings WHERE " scope " AND key = $2 AND NOT "    \
    "EXISTS (SELECT 1 FROM del)"
/* Keyset on the scope's partial unique index: a range scan that stops at
 * the LIMIT. Keys are never empty, so '' starts the first page. */
#define LIST(scope)                                                            \
    "SELECT " SET_COLS ", true FROM app_settings WHERE " scope " AND key > "  \
    "$2 ORDER BY key LIMIT $3"

enum { S_GET, S_CREATE, S_UPSERT, S_UPDATE, S_DELETE, S_LIST, S_N };

/* [0] global, [1] per user. */
static const ds__stmt_def stmts[2][S_N] = {
    {
        [S_GET] = {"settings.get_global", GET(SCOPE_G), 2,
                   {DS_OID_INT8, DS_OID_TEXT}, 7, SET_TYPES},
        [S_CREATE] = {"settings.create_global", CREATE(UID_G), 3, P3, 7,
                      SET_TYPES},
        [S_UPSERT] = {"settings.upsert_global", UPSERT(UID_G, TARGET_G), 3,
                      P3, 7, SET_TYPES},
        [S_UPDATE] = {"settings.update_global", UPDATE(SCOPE_G), 4, P3V, 7,
                      SET_TYPES},
        [S_DELETE] = {"settings.delete_global", DELETE(SCOPE_G), 3,
                      {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8}, 1,
                      {DS_OID_BOOL}},
        [S_LIST] = {"settings.list_global", LIST(SCOPE_G), 3,
                    {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8}, 7, SET_TYPES},
    },
    {
        [S_GET] = {"settings.get_user", GET(SCOPE_U), 2,
                   {DS_OID_INT8, DS_OID_TEXT}, 7, SET_TYPES},
        [S_CREATE] = {"settings.create_user", CREATE(UID_U), 3, P3, 7,
                      SET_TYPES},
        [S_UPSERT] = {"settings.upsert_user", UPSERT(UID_U, TARGET_U), 3, P3,
                      7, SET_TYPES},
        [S_UPDATE] = {"settings.update_user", UPDATE(SCOPE_U), 4, P3V, 7,
                      SET_TYPES},
        [S_DELETE] = {"settings.delete_user", DELETE(SCOPE_U), 3,
                      {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8}, 1,
                      {DS_OID_BOOL}},
        [S_LIST] = {"settings.list_user", LIST(SCOPE_U), 3,
                    {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8}, 7, SET_TYPES},
    },
};

size_t ds__stmts_settings(const ds__stmt_def **defs) {
    *defs = &stmts[0][0];
    return 2 * S_N;
}

static ds_status decode_setting(const PGresult *r, int row, ds__block *b,
                                void *item, ds_error *err) {
    ds_setting *s = item;
    s->id = ds__cell_int64(r, row, 0);
    s->user_id = ds__cell_int64(r, row, 1);
    s->key = ds__block_text(b, r, row, 2);
    s->version = ds__cell_int64(r, row, 4);
    s->updated_at = ds__cell_ts(r, row, 5);
    return ds__cell_json(r, row, 3, &s->value, err);
}

static void clear_setting(void *item) {
    json_decref(((ds_setting *)item)->value);
}

DS__LIST_ATTACH(attach_settings, ds_setting_list, ds_setting)

static const int text_cols[] = {2};

static const ds__row_type setting_type = {
    sizeof(ds_setting), text_cols, DS__NELEM(text_cols), decode_setting, clear_setting,
    sizeof(ds_setting_list), attach_settings};

DS_EXPORT void ds_setting_free(ds_setting *setting) {
    if (!setting)
        return;
    clear_setting(setting);
    ds__free(setting);
}

DS_EXPORT void ds_setting_list_free(ds_setting_list *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        clear_setting(list->items[i]);
    ds__free(list);
}

static ds_status check_key(ds_error *err, const char *func, const char *key) {
    if (!key)
        return ds__error_set(err, DS_ERR_INVALID, "%s: key is NULL", func);
    size_t n = strlen(key);
    if (n == 0 || n > DS_SETTING_KEY_MAX)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: key must be 1 to %d bytes", func,
                             DS_SETTING_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                  c == ':' || c == '-';
        if (!ok)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "%s: key may hold only letters, digits and "
                                 "_ . : -",
                                 func);
    }
    return DS_OK;
}

static void bind_scope(ds__bind *b, int64_t user_id, const char *key) {
    ds__bind_int64(b, user_id);
    ds__bind_text(b, key);
}

DS_EXPORT ds_status ds_setting_get(ds_pool *pool, int64_t user_id,
                                   const char *key, ds_setting **out,
                                   ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id >= 0, "user_id is negative");
    ds_status st = check_key(err, __func__, key);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    bind_scope(&b, user_id, key);
    char what[sizeof "setting ''" + DS_SETTING_KEY_MAX];
    snprintf(what, sizeof what, "setting '%s'", key);
    void *row;
    st = ds__repo_get(pool, false, &stmts[user_id > 0][S_GET], &b,
                      &setting_type, __func__, what, 0, &row, err);
    if (st == DS_OK)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_setting_put(ds_pool *pool, int64_t user_id,
                                   const char *key, const json_t *value,
                                   int64_t expected_version, ds_setting **out,
                                   ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id >= 0, "user_id is negative");
    DS_CHECK_ARG(err, value, "value is NULL (use json_null() for a JSON null)");
    DS_CHECK_ARG(err, expected_version >= DS_VERSION_ANY,
                 "expected_version is below DS_VERSION_ANY");
    ds_status st = check_key(err, __func__, key);
    if (st != DS_OK)
        return st;
    char *json;
    size_t len;
    st = ds__json_encode(err, __func__, "value", value, -1, "null",
                         ds__repo_max_json(pool), &json, &len);
    if (st != DS_OK)
        return st;
    int which = expected_version == DS_VERSION_NEW   ? S_CREATE
                : expected_version == DS_VERSION_ANY ? S_UPSERT
                                                     : S_UPDATE;
    ds__bind b;
    ds__bind_init(&b);
    bind_scope(&b, user_id, key);
    ds__bind_jsonb_owned(&b, json, len);
    if (which == S_UPDATE)
        ds__bind_int64(&b, expected_version);
    PGresult *r = ds__repo_exec(pool, false, &stmts[user_id > 0][which], &b,
                                err);
    ds__bind_free(&b);
    if (!r) {
        st = err ? err->code : DS_ERR_DB;
        if (st == DS_ERR_NOT_FOUND)
            ds__not_found(err, __func__, "user", user_id);
        else if (st == DS_ERR_CONFLICT)
            ds__error_set(err, DS_ERR_CONFLICT,
                          "%s: setting '%s' already exists", __func__, key);
        return st;
    }
    if (PQntuples(r) == 0)
        st = ds__error_set(err, DS_ERR_NOT_FOUND, "%s: no setting '%s'",
                           __func__, key);
    else if (!ds__cell_bool(r, 0, 6))
        st = ds__error_set(err, DS_ERR_CONFLICT,
                           "%s: setting '%s' is no longer at version %lld "
                           "(changed by someone else); read it again",
                           __func__, key, (long long)expected_version);
    else if (out &&
             !(*out = ds__row_new(r, 0, &setting_type, __func__, err)))
        st = err->code;
    PQclear(r);
    return st;
}

DS_EXPORT ds_status ds_setting_delete(ds_pool *pool, int64_t user_id,
                                      const char *key,
                                      int64_t expected_version,
                                      ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id >= 0, "user_id is negative");
    DS_CHECK_ARG(err, expected_version == DS_VERSION_ANY || expected_version > 0,
                 "expected_version must be a version or DS_VERSION_ANY");
    ds_status st = check_key(err, __func__, key);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    bind_scope(&b, user_id, key);
    ds__bind_int64(&b, expected_version);
    PGresult *r = ds__repo_exec(pool, false, &stmts[user_id > 0][S_DELETE],
                                &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    if (PQntuples(r) == 0)
        st = ds__error_set(err, DS_ERR_NOT_FOUND, "%s: no setting '%s'",
                           __func__, key);
    else if (!ds__cell_bool(r, 0, 0))
        st = ds__error_set(err, DS_ERR_CONFLICT,
                           "%s: setting '%s' is not at version %lld",
                           __func__, key, (long long)expected_version);
    PQclear(r);
    return st;
}

DS_EXPORT ds_status ds_setting_list_for_user(ds_pool *pool, int64_t user_id,
                                             const ds_setting_cursor *cursor,
                                             int limit, ds_setting_list **out,
                                             ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id >= 0, "user_id is negative");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    const char *after = cursor ? cursor->after_key : NULL;
    if (after) {
        st = ds__check_text(err, __func__, "cursor.after_key", after,
                            strlen(after), 1, DS_SETTING_KEY_MAX);
        if (st != DS_OK)
            return st;
    }
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    ds__bind_text(&b, after ? after : "");
    ds__bind_int64(&b, (int64_t)limit + 1);
    ds_setting_list *list =
        ds__repo_list(pool, false, &stmts[user_id > 0][S_LIST], &b, limit,
                      &setting_type, __func__, NULL, 0, err);
    if (!list)
        return err->code;
    list->next.after_key =
        list->count ? list->items[list->count - 1]->key : after;
    *out = list;
    return DS_OK;
}
