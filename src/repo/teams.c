/* AI team configurations with optimistic concurrency: an update names the
 * version it read, and one statement both applies it and, when it does
 * not apply, tells a stale version from a missing row. */
#include <string.h>

#include "datastore/teams.h"
#include "repo/repo_internal.h"

#define TEAM_COLS                                                              \
    "id, owner_id, name, members, config, version, created_at, updated_at"
#define TEAM_TYPES                                                             \
    {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB, DS_OID_JSONB,        \
     DS_OID_INT8, DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ, DS_OID_BOOL}

enum { S_CREATE, S_GET, S_LIST, S_UPDATE, S_DELETE };

static const ds__stmt_def stmts[] = {
    [S_CREATE] = {"teams.create",
                  "INSERT INTO ai_teams (owner_id, name, members, config) "
                  "VALUES ($1, $2, $3, $4) RETURNING " TEAM_COLS ", true",
                  4, {DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB, DS_OID_JSONB}, 9,
                  TEAM_TYPES},
    [S_GET] = {"teams.get",
               "SELECT " TEAM_COLS ", true FROM ai_teams WHERE id = $1", 1,
               {DS_OID_INT8}, 9, TEAM_TYPES},
    /* Keyset on the (owner_id, name) unique index: a range scan that stops
     * at the LIMIT. Names are never empty, so '' starts the first page. */
    [S_LIST] = {"teams.list",
                "SELECT t.id, t.owner_id, t.name, t.members, t.config, "
                "t.version, t.created_at, t.updated_at, true FROM users u "
                "LEFT JOIN LATERAL (SELECT " TEAM_COLS " FROM ai_teams WHERE "
                "owner_id = u.id AND name > $2 ORDER BY name LIMIT $3) t ON "
                "true WHERE u.id = $1",
                3, {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8}, 9, TEAM_TYPES},
    /* The last column says whether the update applied; when it did not,
     * the row as it stands comes back (a stale version), or nothing (no
     * such team). A concurrent update is waited for and re-checked. */
    [S_UPDATE] = {"teams.update",
                  "WITH upd AS (UPDATE ai_teams SET name = COALESCE($3, "
                  "name), members = COALESCE($4, members), config = "
                  "COALESCE($5, config), version = version + 1, updated_at = "
                  "now() WHERE id = $1 AND version = $2 RETURNING " TEAM_COLS
                  ") SELECT " TEAM_COLS ", true FROM upd UNION ALL SELECT "
                  TEAM_COLS ", false FROM ai_teams WHERE id = $1 AND NOT "
                  "EXISTS (SELECT 1 FROM upd)",
                  5,
                  {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB,
                   DS_OID_JSONB},
                  9, TEAM_TYPES},
    [S_DELETE] = {"teams.delete",
                  "WITH del AS (DELETE FROM ai_teams WHERE id = $1 AND ($2 = "
                  "0 OR version = $2) RETURNING id) SELECT true FROM del "
                  "UNION ALL SELECT false FROM ai_teams WHERE id = $1 AND NOT "
                  "EXISTS (SELECT 1 FROM del)",
                  2, {DS_OID_INT8, DS_OID_INT8}, 1, {DS_OID_BOOL}},
};

size_t ds__stmts_teams(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

static ds_status decode_team(const PGresult *r, int row, ds__block *b,
                             void *item, ds_error *err) {
    ds_team *t = item;
    t->id = ds__cell_int64(r, row, 0);
    t->owner_id = ds__cell_int64(r, row, 1);
    t->name = ds__block_text(b, r, row, 2);
    t->version = ds__cell_int64(r, row, 5);
    t->created_at = ds__cell_ts(r, row, 6);
    t->updated_at = ds__cell_ts(r, row, 7);
    ds_status st = ds__cell_json(r, row, 3, &t->members, err);
    if (st == DS_OK)
        st = ds__cell_json(r, row, 4, &t->config, err);
    return st;
}

static void clear_team(void *item) {
    ds_team *t = item;
    json_decref(t->members);
    json_decref(t->config);
}

DS__LIST_ATTACH(attach_teams, ds_team_list, ds_team)

static const int text_cols[] = {2};

static const ds__row_type team_type = {
    sizeof(ds_team), text_cols, DS__NELEM(text_cols), decode_team, clear_team,
    sizeof(ds_team_list), attach_teams};

DS_EXPORT void ds_team_free(ds_team *team) {
    if (!team)
        return;
    clear_team(team);
    ds__free(team);
}

DS_EXPORT void ds_team_list_free(ds_team_list *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        clear_team(list->items[i]);
    ds__free(list);
}

/* Validates and binds name (may be NULL when `optional`), members and
 * config. */
static ds_status bind_fields(ds_pool *pool, const char *func, ds__bind *b,
                             const char *name, bool optional,
                             const json_t *members, const json_t *config,
                             bool defaults, ds_error *err) {
    ds_status st = DS_OK;
    if (name || !optional)
        st = ds__check_text(err, func, "name", name, name ? strlen(name) : 0,
                            1, DS_TEAM_NAME_MAX);
    if (st != DS_OK)
        return st;
    ds__bind_text(b, name);
    const json_t *js[2] = {members, config};
    const int types[2] = {JSON_ARRAY, JSON_OBJECT};
    const char *names[2] = {"members", "config"}, *defs[2] = {"[]", "{}"};
    for (int i = 0; i < 2; i++) {
        if (!js[i] && !defaults) {
            ds__bind_null(b);
            continue;
        }
        char *json;
        size_t len;
        st = ds__json_encode(err, func, names[i], js[i], types[i], defs[i],
                             ds__repo_max_json(pool), &json, &len);
        if (st != DS_OK)
            return st;
        ds__bind_jsonb_owned(b, json, len);
    }
    return DS_OK;
}

DS_EXPORT ds_status ds_team_create(ds_pool *pool, int64_t owner_id,
                                   const char *name, const json_t *members,
                                   const json_t *config, ds_team **out,
                                   ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, owner_id > 0, "owner_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, owner_id);
    ds_status st = bind_fields(pool, __func__, &b, name, false, members,
                               config, true, err);
    if (st != DS_OK) {
        ds__bind_free(&b);
        return st;
    }
    void *row;
    st = ds__repo_get(pool, false, &stmts[S_CREATE], &b, &team_type, __func__,
                      NULL, 0, out ? &row : NULL, err);
    ds__bind_free(&b);
    if (st == DS_ERR_NOT_FOUND) /* the owner: a foreign key violation */
        ds__not_found(err, __func__, "user", owner_id);
    else if (st == DS_ERR_CONFLICT)
        ds__error_set(err, DS_ERR_CONFLICT,
                      "%s: the owner already has a team of that name",
                      __func__);
    else if (st == DS_OK && out)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_team_get(ds_pool *pool, int64_t id, ds_team **out,
                                ds_error *err) {
    void *row = NULL;
    ds_status st = ds__repo_get_id(pool, &stmts[S_GET], &team_type, id,
                                   __func__, "team", out ? &row : NULL, err);
    if (out)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_team_list_for_owner(ds_pool *pool, int64_t owner_id,
                                           const ds_team_cursor *cursor,
                                           int limit, ds_team_list **out,
                                           ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, owner_id > 0, "owner_id must be positive");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    const char *after = cursor ? cursor->after_name : NULL;
    if (after) {
        st = ds__check_text(err, __func__, "cursor.after_name", after,
                            strlen(after), 1, DS_TEAM_NAME_MAX);
        if (st != DS_OK)
            return st;
    }
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, owner_id);
    ds__bind_text(&b, after ? after : "");
    ds__bind_int64(&b, (int64_t)limit + 1);
    ds_team_list *list = ds__repo_list(pool, false, &stmts[S_LIST], &b, limit,
                                       &team_type, __func__, "user", owner_id,
                                       err);
    if (!list)
        return err->code;
    list->next.after_name =
        list->count ? list->items[list->count - 1]->name : after;
    *out = list;
    return DS_OK;
}

DS_EXPORT ds_status ds_team_update(ds_pool *pool, int64_t id,
                                   int64_t expected_version, const char *name,
                                   const json_t *members, const json_t *config,
                                   ds_team **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    DS_CHECK_ARG(err, expected_version > 0, "expected_version must be positive");
    DS_CHECK_ARG(err, name || members || config, "nothing to update");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    ds__bind_int64(&b, expected_version);
    ds_status st = bind_fields(pool, __func__, &b, name, true, members, config,
                               false, err);
    if (st != DS_OK) {
        ds__bind_free(&b);
        return st;
    }
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_UPDATE], &b, err);
    ds__bind_free(&b);
    if (!r) {
        st = err ? err->code : DS_ERR_DB;
        if (st == DS_ERR_CONFLICT)
            ds__error_set(err, DS_ERR_CONFLICT,
                          "%s: the owner already has a team of that name",
                          __func__);
        return st;
    }
    if (PQntuples(r) == 0)
        st = ds__not_found(err, __func__, "team", id);
    else if (!ds__cell_bool(r, 0, 8))
        st = ds__error_set(err, DS_ERR_CONFLICT,
                           "%s: team %lld is no longer at version %lld "
                           "(changed by someone else); read it again",
                           __func__, (long long)id,
                           (long long)expected_version);
    else if (out && !(*out = ds__row_new(r, 0, &team_type, __func__, err)))
        st = err->code;
    PQclear(r);
    return st;
}

DS_EXPORT ds_status ds_team_delete(ds_pool *pool, int64_t id,
                                   int64_t expected_version, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    DS_CHECK_ARG(err, expected_version >= 0, "expected_version is negative");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    ds__bind_int64(&b, expected_version);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_DELETE], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    ds_status st = DS_OK;
    if (PQntuples(r) == 0)
        st = ds__not_found(err, __func__, "team", id);
    else if (!ds__cell_bool(r, 0, 0))
        st = ds__error_set(err, DS_ERR_CONFLICT,
                           "%s: team %lld is not at version %lld", __func__,
                           (long long)id, (long long)expected_version);
    PQclear(r);
    return st;
}
