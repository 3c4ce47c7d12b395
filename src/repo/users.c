/* Users and profiles. Each call is one statement (one round trip); rows
 * are decoded from binary results straight into one allocation. */
#include <stdio.h>
#include <string.h>

#include "core/growable.h"
#include "datastore/users.h"
#include "repo/repo_internal.h"

/* The profile columns come as they are: a user without a profile row
 * (LEFT JOIN) gets the schema's profile defaults in decode_user. Filling
 * them in SQL (COALESCE) made the server compile and evaluate five more
 * expressions per call: 10-25% of the join's own execution time
 * (docs/repositories.md, "get_user"). */
#define USER_COLS                                                              \
    "u.id, u.email, u.status, u.created_at, u.updated_at, u.deleted_at, "     \
    "p.display_name, p.locale, p.timezone, p.preferences, p.updated_at"
#define USER_TYPES                                                             \
    {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TIMESTAMPTZ,               \
     DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ, DS_OID_TEXT, DS_OID_TEXT,         \
     DS_OID_TEXT, DS_OID_JSONB, DS_OID_TIMESTAMPTZ}
#define USER_NCOLS 11
#define PROFILE_RETURNING                                                      \
    "user_id, display_name, locale, timezone, preferences, updated_at"

enum { S_CREATE, S_GET, S_GET_BY_EMAIL, S_PROFILE_UPDATE, S_SET_STATUS,
       S_SOFT_DELETE, S_RESTORE, S_LIST };

static const ds__stmt_def stmts[] = {
    [S_CREATE] = {"users.create",
                  "WITH u AS (INSERT INTO users (email) VALUES ($1) "
                  "RETURNING id, email, status, created_at, updated_at, "
                  "deleted_at), "
                  "p AS (INSERT INTO profiles (user_id, display_name, locale, "
                  "timezone, preferences) SELECT id, COALESCE($2, ''), "
                  "COALESCE($3, 'en'), COALESCE($4, 'UTC'), "
                  "COALESCE($5, '{}'::jsonb) FROM u RETURNING " PROFILE_RETURNING
                  ") SELECT " USER_COLS " FROM u JOIN p ON p.user_id = u.id",
                  5,
                  {DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,
                   DS_OID_JSONB},
                  USER_NCOLS, USER_TYPES},
    [S_GET] = {"users.get",
               "SELECT " USER_COLS " FROM users u LEFT JOIN profiles p ON "
               "p.user_id = u.id WHERE u.id = $1 AND u.deleted_at IS NULL",
               1, {DS_OID_INT8}, USER_NCOLS, USER_TYPES},
    [S_GET_BY_EMAIL] = {"users.get_by_email",
                        "SELECT " USER_COLS " FROM users u LEFT JOIN profiles "
                        "p ON p.user_id = u.id WHERE lower(u.email) = $1 AND "
                        "u.deleted_at IS NULL",
                        1, {DS_OID_TEXT}, USER_NCOLS, USER_TYPES},
    [S_PROFILE_UPDATE] = {"users.profile_update",
                          "WITH p AS (INSERT INTO profiles AS p (user_id, "
                          "display_name, locale, timezone, preferences) "
                          "SELECT id, COALESCE($2, ''), COALESCE($3, 'en'), "
                          "COALESCE($4, 'UTC'), COALESCE($5, '{}'::jsonb) "
                          "FROM users WHERE id = $1 AND deleted_at IS NULL "
                          "ON CONFLICT (user_id) DO UPDATE SET "
                          "display_name = COALESCE($2, p.display_name), "
                          "locale = COALESCE($3, p.locale), "
                          "timezone = COALESCE($4, p.timezone), "
                          "preferences = COALESCE($5, p.preferences), "
                          "updated_at = now() RETURNING " PROFILE_RETURNING
                          ") SELECT " USER_COLS
                          " FROM users u JOIN p ON p.user_id = u.id",
                          5,
                          {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,
                           DS_OID_JSONB},
                          USER_NCOLS, USER_TYPES},
    [S_SET_STATUS] = {"users.set_status",
                      "UPDATE users SET status = $2, updated_at = now() "
                      "WHERE id = $1 AND deleted_at IS NULL",
                      2, {DS_OID_INT8, DS_OID_TEXT}, -1, {0}},
    [S_SOFT_DELETE] = {"users.soft_delete",
                       "UPDATE users SET deleted_at = now(), updated_at = "
                       "now() WHERE id = $1 AND deleted_at IS NULL",
                       1, {DS_OID_INT8}, -1, {0}},
    [S_RESTORE] = {"users.restore",
                   "UPDATE users SET deleted_at = NULL, updated_at = now() "
                   "WHERE id = $1 AND deleted_at IS NOT NULL",
                   1, {DS_OID_INT8}, -1, {0}},
    [S_LIST] = {"users.list",
                /* The page first, then each row's profile by key. A
                 * plain join under the LIMIT merge-joins the profiles
                 * index from its start (O(page depth)); a join after it
                 * still hashes all profiles in the generic plan, which
                 * guesses 10% of the table for `LIMIT $3`. OFFSET 0
                 * keeps the lookup a per-row index probe. */
                "SELECT " USER_COLS " FROM (SELECT * FROM users WHERE id > "
                "$1 AND ($2 OR deleted_at IS NULL) ORDER BY id LIMIT $3) u "
                "LEFT JOIN LATERAL (SELECT * FROM profiles WHERE user_id = "
                "u.id OFFSET 0) p ON true ORDER BY u.id",
                3, {DS_OID_INT8, DS_OID_BOOL, DS_OID_INT8}, USER_NCOLS,
                USER_TYPES},
};

size_t ds__stmts_users(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

static const char *const status_names[] = {"active", "pending", "suspended",
                                           "deleted"};

static ds_user_status status_from(const char *s, size_t len) {
    for (int i = 0; i < 4; i++)
        if (strlen(status_names[i]) == len &&
            memcmp(status_names[i], s, len) == 0)
            return (ds_user_status)i;
    return DS_USER_ACTIVE;
}

static ds_status decode_user(const PGresult *r, int row, ds__block *b,
                             void *item, ds_error *err) {
    ds_user *u = item;
    u->id = ds__cell_int64(r, row, 0);
    u->email = ds__block_text(b, r, row, 1);
    u->status = status_from(PQgetvalue(r, row, 2),
                            (size_t)PQgetlength(r, row, 2));
    u->created_at = ds__cell_ts(r, row, 3);
    u->updated_at = ds__cell_ts(r, row, 4);
    u->deleted_at = ds__cell_ts(r, row, 5);
    if (PQgetisnull(r, row, 6)) {
        /* no profile row: the defaults of the profiles table */
        u->display_name = "";
        u->locale = "en";
        u->timezone = "UTC";
        u->profile_updated_at = u->updated_at;
        u->preferences = json_object();
        return u->preferences ? DS_OK
                              : ds__error_set(err, DS_ERR_NOMEM,
                                              "out of memory decoding a user");
    }
    u->display_name = ds__block_text(b, r, row, 6);
    u->locale = ds__block_text(b, r, row, 7);
    u->timezone = ds__block_text(b, r, row, 8);
    u->profile_updated_at = ds__cell_ts(r, row, 10);
    return ds__cell_json(r, row, 9, &u->preferences, err);
}

static void clear_user(void *item) { json_decref(((ds_user *)item)->preferences); }

DS__LIST_ATTACH(attach_users, ds_user_list, ds_user)

static const int text_cols[] = {1, 6, 7, 8};

static const ds__row_type user_type = {
    sizeof(ds_user), text_cols, DS__NELEM(text_cols), decode_user, clear_user,
    sizeof(ds_user_list), attach_users};

DS_EXPORT void ds_user_free(ds_user *user) {
    if (!user)
        return;
    clear_user(user);
    ds__free(user);
}

DS_EXPORT void ds_user_list_free(ds_user_list *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        clear_user(list->items[i]);
    ds__free(list);
}

/* Runs a statement that returns zero or one user row (no row: as
 * ds__repo_get). Frees the bind. */
static ds_status run_one(ds_pool *pool, const ds__stmt_def *def,
                         ds__bind *b, const char *func, int64_t id,
                         const char *what, ds_user **out, ds_error *err) {
    void *row;
    ds_status st = ds__repo_get(pool, false, def, b, &user_type, func, what,
                                id, out ? &row : NULL, err);
    ds__bind_free(b);
    if (st == DS_OK && out)
        *out = row;
    return st;
}

/* Validates and binds profile fields (NULL ones bind NULL). */
static ds_status bind_profile(ds_pool *pool, const char *func,
                              const ds_profile_fields *f, ds__bind *b,
                              ds_error *err) {
    const char *dn = f ? f->display_name : NULL;
    const char *lc = f ? f->locale : NULL;
    const char *tz = f ? f->timezone : NULL;
    ds_status st = DS_OK;
    if (dn)
        st = ds__check_text(err, func, "display_name", dn, strlen(dn), 0,
                            DS_DISPLAY_NAME_MAX);
    if (st == DS_OK && lc)
        st = ds__check_text(err, func, "locale", lc, strlen(lc), 2,
                            DS_LOCALE_MAX);
    if (st == DS_OK && tz)
        st = ds__check_text(err, func, "timezone", tz, strlen(tz), 1,
                            DS_TIMEZONE_MAX);
    if (st != DS_OK)
        return st;
    ds__bind_text(b, dn);
    ds__bind_text(b, lc);
    ds__bind_text(b, tz);
    if (f && f->preferences) {
        char *json;
        size_t len;
        st = ds__json_encode(err, func, "preferences", f->preferences,
                             JSON_OBJECT, "{}", ds__repo_max_json(pool),
                             &json, &len);
        if (st != DS_OK)
            return st;
        ds__bind_jsonb_owned(b, json, len);
    } else {
        ds__bind_null(b);
    }
    return DS_OK;
}

DS_EXPORT ds_status ds_user_create(ds_pool *pool, const char *email,
                                   const ds_profile_fields *profile,
                                   ds_user **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_profile_fields pf;
    if (profile) {
        ds_status checked = DS__IN(profile, &pf, ds_profile_fields, err);
        if (checked != DS_OK)
            return checked;
        profile = &pf;
    }
    char norm[DS_EMAIL_MAX + 1];
    ds_status st = ds__email_normalise(err, __func__, email, norm);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_text(&b, norm);
    st = bind_profile(pool, __func__, profile, &b, err);
    if (st != DS_OK) {
        ds__bind_free(&b);
        return st;
    }
    st = run_one(pool, &stmts[S_CREATE], &b, __func__, 0, NULL,
                 out, err);
    if (st == DS_ERR_CONFLICT)
        ds__error_set(err, DS_ERR_CONFLICT,
                      "%s: a user with this email already exists", __func__);
    return st;
}

DS_EXPORT ds_status ds_user_get(ds_pool *pool, int64_t id, ds_user **out,
                                ds_error *err) {
    void *row = NULL;
    ds_status st = ds__repo_get_id(pool, &stmts[S_GET], &user_type, id,
                                   __func__, "user", out ? &row : NULL, err);
    if (out)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_user_get_by_email(ds_pool *pool, const char *email,
                                         ds_user **out, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    char norm[DS_EMAIL_MAX + 1];
    ds_status st = ds__email_normalise(err, __func__, email, norm);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_text(&b, norm);
    return run_one(pool, &stmts[S_GET_BY_EMAIL], &b, __func__, 0,
                   "user with this email", out, err);
}

DS_EXPORT ds_status ds_user_update_profile(ds_pool *pool, int64_t user_id,
                                      const ds_profile_fields *fields,
                                      ds_user **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, fields, "fields is NULL");
    ds_profile_fields pf;
    ds_status checked = DS__IN(fields, &pf, ds_profile_fields, err);
    if (checked != DS_OK)
        return checked;
    fields = &pf;
    DS_CHECK_ARG(err, fields->display_name || fields->locale ||
                          fields->timezone || fields->preferences,
                 "no field to update");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    ds_status st = bind_profile(pool, __func__, fields, &b, err);
    if (st != DS_OK) {
        ds__bind_free(&b);
        return st;
    }
    return run_one(pool, &stmts[S_PROFILE_UPDATE], &b, __func__, user_id,
                   "user", out, err);
}

DS_EXPORT ds_status ds_user_set_status(ds_pool *pool, int64_t user_id,
                                       ds_user_status status, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, status >= DS_USER_ACTIVE && status <= DS_USER_SUSPENDED,
                 "unknown status");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    ds__bind_text(&b, status_names[status]);
    return ds__repo_command(pool, &stmts[S_SET_STATUS], &b, __func__, "user",
                            user_id, err);
}

DS_EXPORT ds_status ds_user_soft_delete(ds_pool *pool, int64_t user_id,
                                        ds_error *err) {
    return ds__repo_id_command(pool, &stmts[S_SOFT_DELETE], user_id, "user_id",
                               __func__, "undeleted user", err);
}

DS_EXPORT ds_status ds_user_restore(ds_pool *pool, int64_t user_id,
                                    ds_error *err) {
    return ds__repo_id_command(pool, &stmts[S_RESTORE], user_id, "user_id",
                               __func__, "soft-deleted user", err);
}

DS_EXPORT ds_status ds_user_list_page(ds_pool *pool,
                                      const ds_user_cursor *cursor, int limit,
                                      bool include_deleted, bool from_replica,
                                      ds_user_list **out, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    int64_t after = cursor ? cursor->after_id : 0;
    DS_CHECK_ARG(err, after >= 0, "cursor.after_id is negative");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, after);
    ds__bind_bool(&b, include_deleted);
    ds__bind_int64(&b, (int64_t)limit + 1);
    ds_user_list *list = ds__repo_list(pool, from_replica, &stmts[S_LIST], &b,
                                       limit, &user_type, __func__, NULL, 0,
                                       err);
    if (!list)
        return err->code;
    list->next.after_id = list->count ? list->items[list->count - 1]->id : after;
    *out = list;
    return DS_OK;
}
