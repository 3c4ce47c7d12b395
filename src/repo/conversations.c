/* Conversations: create, get, archive, delete, count and activity-ordered
 * keyset paging. */
#include <string.h>

#include "datastore/conversations.h"
#include "repo/repo_internal.h"

#define CONV_COLS "id, owner_id, title, archived, created_at, updated_at"
#define CONV_TYPES                                                             \
    {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_BOOL, DS_OID_TIMESTAMPTZ,   \
     DS_OID_TIMESTAMPTZ}

enum { S_CREATE, S_GET, S_ARCHIVE, S_DELETE, S_COUNT, S_LIST };

static const ds__stmt_def stmts[] = {
    [S_CREATE] = {"conversations.create",
                  "INSERT INTO conversations (owner_id, title) VALUES ($1, "
                  "COALESCE($2, '')) RETURNING " CONV_COLS,
                  2, {DS_OID_INT8, DS_OID_TEXT}, 6, CONV_TYPES},
    [S_GET] = {"conversations.get",
               "SELECT " CONV_COLS " FROM conversations WHERE id = $1", 1,
               {DS_OID_INT8}, 6, CONV_TYPES},
    [S_ARCHIVE] = {"conversations.archive",
                   "UPDATE conversations SET archived = $2 WHERE id = $1", 2,
                   {DS_OID_INT8, DS_OID_BOOL}, -1, {0}},
    [S_DELETE] = {"conversations.delete",
                  "DELETE FROM conversations WHERE id = $1", 1, {DS_OID_INT8},
                  -1, {0}},
    [S_COUNT] = {"conversations.count",
                 "SELECT (SELECT count(*) FROM conversations c WHERE "
                 "c.owner_id = u.id AND ($2 OR NOT c.archived)) FROM users u "
                 "WHERE u.id = $1",
                 2, {DS_OID_INT8, DS_OID_BOOL}, 1, {DS_OID_INT8}},
    /* One row with NULLs when the user exists but has no (more)
     * conversations; none when the user does not exist. */
    [S_LIST] = {"conversations.list",
                "SELECT c.id, c.owner_id, c.title, c.archived, c.created_at, "
                "c.updated_at FROM users u LEFT JOIN LATERAL (SELECT " CONV_COLS
                " FROM conversations WHERE owner_id = u.id AND ($2 OR NOT "
                "archived) AND (updated_at, id) < ($3, $4) ORDER BY "
                "updated_at DESC, id DESC LIMIT $5) c ON true WHERE u.id = $1",
                5,
                {DS_OID_INT8, DS_OID_BOOL, DS_OID_TIMESTAMPTZ, DS_OID_INT8,
                 DS_OID_INT8},
                6, CONV_TYPES},
};

size_t ds__stmts_conversations(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

static ds_status decode_conv(const PGresult *r, int row, ds__block *b,
                             void *item, ds_error *err) {
    (void)err;
    ds_conversation *c = item;
    c->id = ds__cell_int64(r, row, 0);
    c->owner_id = ds__cell_int64(r, row, 1);
    c->title = ds__block_text(b, r, row, 2);
    c->archived = ds__cell_bool(r, row, 3);
    c->created_at = ds__cell_ts(r, row, 4);
    c->updated_at = ds__cell_ts(r, row, 5);
    return DS_OK;
}

DS__LIST_ATTACH(attach_convs, ds_conversation_list, ds_conversation)

static const int text_cols[] = {2};

static const ds__row_type conv_type = {
    sizeof(ds_conversation), text_cols, DS__NELEM(text_cols), decode_conv, NULL,
    sizeof(ds_conversation_list), attach_convs};

DS_EXPORT void ds_conversation_free(ds_conversation *conversation) {
    ds__free(conversation);
}

DS_EXPORT void ds_conversation_list_free(ds_conversation_list *list) {
    ds__free(list);
}

DS_EXPORT ds_status ds_conversation_create(ds_pool *pool, int64_t owner_id,
                                           const char *title,
                                           ds_conversation **out,
                                           ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, owner_id > 0, "owner_id must be positive");
    if (title) {
        ds_status st = ds__check_text(err, __func__, "title", title,
                                      strlen(title), 0, DS_TITLE_MAX);
        if (st != DS_OK)
            return st;
    }
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, owner_id);
    ds__bind_text(&b, title);
    void *row;
    ds_status st = ds__repo_get(pool, false, &stmts[S_CREATE], &b, &conv_type,
                                __func__, NULL, 0,
                                out ? &row : NULL, err);
    if (st == DS_ERR_NOT_FOUND) /* the owner: a foreign key violation */
        return ds__not_found(err, __func__, "user", owner_id);
    if (st == DS_OK && out)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_conversation_get(ds_pool *pool, int64_t id,
                                        ds_conversation **out, ds_error *err) {
    void *row = NULL;
    ds_status st = ds__repo_get_id(pool, &stmts[S_GET], &conv_type, id,
                                   __func__, "conversation",
                                   out ? &row : NULL, err);
    if (out)
        *out = row;
    return st;
}

DS_EXPORT ds_status ds_conversation_archive(ds_pool *pool, int64_t id,
                                            bool archived, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    ds__bind_bool(&b, archived);
    return ds__repo_command(pool, &stmts[S_ARCHIVE], &b, __func__,
                            "conversation", id, err);
}

DS_EXPORT ds_status ds_conversation_delete(ds_pool *pool, int64_t id,
                                           ds_error *err) {
    return ds__repo_id_command(pool, &stmts[S_DELETE], id, "id", __func__,
                               "conversation", err);
}

DS_EXPORT ds_status ds_conversation_count(ds_pool *pool, int64_t owner_id,
                                          bool include_archived, int64_t *out,
                                          ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, owner_id > 0, "owner_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, owner_id);
    ds__bind_bool(&b, include_archived);
    return ds__repo_count(pool, &stmts[S_COUNT], &b, __func__, "user",
                          owner_id, out, err);
}

DS_EXPORT ds_status ds_conversation_list_page(
    ds_pool *pool, int64_t owner_id, const ds_conversation_cursor *cursor,
    int limit, bool include_archived, ds_conversation_list **out,
    ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, owner_id > 0, "owner_id must be positive");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    bool from_top = !cursor || (cursor->updated_at == 0 && cursor->id == 0);
    DS_CHECK_ARG(err, from_top || cursor->id > 0, "cursor.id is not positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, owner_id);
    ds__bind_bool(&b, include_archived);
    if (from_top) {
        ds__bind_int64(&b, INT64_MAX); /* binary timestamptz 'infinity' */
        ds__bind_int64(&b, INT64_MAX);
    } else {
        ds__bind_ts(&b, cursor->updated_at);
        ds__bind_int64(&b, cursor->id);
    }
    ds__bind_int64(&b, (int64_t)limit + 1);
    ds_conversation_list *list =
        ds__repo_list(pool, false, &stmts[S_LIST], &b, limit, &conv_type,
                      __func__, "user", owner_id, err);
    if (!list)
        return err->code;
    if (list->count) {
        const ds_conversation *last = list->items[list->count - 1];
        list->next.updated_at = last->updated_at;
        list->next.id = last->id;
    } else if (cursor) {
        list->next = *cursor;
    }
    *out = list;
    return DS_OK;
}
