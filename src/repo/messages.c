/* Messages: one-round-trip idempotent append (insert + updated_at bump in
 * one statement), multi-row batch append, keyset paging and counts. */
#include <stdlib.h>
#include <string.h>

#include "datastore/conversations.h"
#include "repo/repo_internal.h"

#define MSG_TYPES                                                              \
    {DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_JSONB,         \
     DS_OID_TEXT, DS_OID_TIMESTAMPTZ, DS_OID_BOOL}

/* ON CONFLICT ... DO UPDATE (a no-op assignment) rather than DO NOTHING:
 * it waits for a concurrent insert of the same key and then returns that
 * row, which a DO NOTHING + SELECT cannot see from its older snapshot.
 * xmax = 0 tells a fresh row from an existing one, and only fresh rows
 * bump the conversation. */
#define UPSERT_TAIL                                                            \
    " ON CONFLICT (conversation_id, idempotency_key) DO UPDATE SET "          \
    "idempotency_key = EXCLUDED.idempotency_key RETURNING id, "               \
    "conversation_id, role, content, metadata, idempotency_key, created_at, " \
    "(xmax = 0) AS created), bump AS (UPDATE conversations SET updated_at = " \
    "now() WHERE id = $1 AND EXISTS (SELECT 1 FROM ins WHERE created) "      \
    "RETURNING 1) SELECT id, conversation_id, role, content, metadata, "      \
    "idempotency_key, created_at, created FROM ins"

/* The bounds are row comparisons on (conversation_id, id), which only the
 * (conversation_id, id) index can serve: with `conversation_id = c.id AND
 * id < $2` the planner may walk the primary key backwards through every
 * newer message of other conversations (90 ms instead of 0.3 ms for 50 rows
 * once the table holds 200k messages). (c, after) < (cid, id) < (c, before)
 * holds exactly when cid = c and after < id < before. */
#define LIST_SQL(dir)                                                          \
    "SELECT m.id, m.conversation_id, m.role, m.content, m.metadata, "         \
    "m.idempotency_key, m.created_at, false FROM conversations c LEFT JOIN "  \
    "LATERAL (SELECT id, conversation_id, role, content, metadata, "          \
    "idempotency_key, created_at FROM messages WHERE (conversation_id, id) < " \
    "(c.id, $2) AND (conversation_id, id) > (c.id, $3) ORDER BY "            \
    "conversation_id " dir ", id " dir " LIMIT $4) m ON true WHERE c.id = $1"

enum { S_APPEND, S_APPEND_BATCH, S_LIST_DESC, S_LIST_ASC, S_COUNT };

static const ds__stmt_def stmts[] = {
    [S_APPEND] = {"messages.append",
                  "WITH ins AS (INSERT INTO messages (conversation_id, role, "
                  "content, metadata, idempotency_key) VALUES ($1, $2, $3, "
                  "$4, $5)" UPSERT_TAIL,
                  5,
                  {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_JSONB,
                   DS_OID_TEXT},
                  8, MSG_TYPES},
    [S_APPEND_BATCH] = {"messages.append_batch",
                        "WITH ins AS (INSERT INTO messages (conversation_id, "
                        "role, content, metadata, idempotency_key) SELECT $1, "
                        "r, c, m, k FROM unnest($2::text[], $3::text[], "
                        "$4::jsonb[], $5::text[]) WITH ORDINALITY AS t(r, c, "
                        "m, k, ord) ORDER BY ord" UPSERT_TAIL " ORDER BY id",
                        5,
                        {DS_OID_INT8, DS_OID_TEXT_ARRAY, DS_OID_TEXT_ARRAY,
                         3807 /* jsonb[] */, DS_OID_TEXT_ARRAY},
                        8, MSG_TYPES},
    [S_LIST_DESC] = {"messages.list_newest", LIST_SQL("DESC"), 4,
                     {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8}, 8,
                     MSG_TYPES},
    [S_LIST_ASC] = {"messages.list_oldest", LIST_SQL("ASC"), 4,
                    {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_INT8}, 8,
                    MSG_TYPES},
    [S_COUNT] = {"messages.count",
                 "SELECT (SELECT count(*) FROM messages m WHERE "
                 "m.conversation_id = c.id) FROM conversations c WHERE c.id = "
                 "$1",
                 1, {DS_OID_INT8}, 1, {DS_OID_INT8}},
};

size_t ds__stmts_messages(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

static const char *const role_names[] = {"user", "assistant", "system",
                                         "tool"};

DS_EXPORT const char *ds_message_role_str(ds_message_role role) {
    return role >= DS_ROLE_USER && role <= DS_ROLE_TOOL ? role_names[role]
                                                        : "unknown";
}

static ds_message_role role_from(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(role_names[i], s) == 0)
            return (ds_message_role)i;
    return DS_ROLE_USER;
}

static ds_status decode_msg(const PGresult *r, int row, ds__block *b,
                            void *item, ds_error *err) {
    ds_message *m = item;
    m->id = ds__cell_int64(r, row, 0);
    m->conversation_id = ds__cell_int64(r, row, 1);
    m->role = role_from(PQgetvalue(r, row, 2));
    m->content_len = ds__cell_len(r, row, 3);
    m->content = ds__block_text(b, r, row, 3);
    m->idempotency_key = ds__block_text(b, r, row, 5);
    m->created_at = ds__cell_ts(r, row, 6);
    m->created = ds__cell_bool(r, row, 7);
    return ds__cell_json(r, row, 4, &m->metadata, err);
}

static void clear_msg(void *item) {
    json_decref(((ds_message *)item)->metadata);
}

DS__LIST_ATTACH(attach_msgs, ds_message_list, ds_message)

static const int text_cols[] = {3, 5};

static const ds__row_type msg_type = {
    sizeof(ds_message), text_cols, DS__NELEM(text_cols), decode_msg, clear_msg,
    sizeof(ds_message_list), attach_msgs};

DS_EXPORT void ds_message_free(ds_message *message) {
    if (!message)
        return;
    clear_msg(message);
    ds__free(message);
}

DS_EXPORT void ds_message_list_free(ds_message_list *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        clear_msg(list->items[i]);
    ds__free(list);
}

/* Validates one message; on success *len is the content length and *json
 * the encoded metadata (owned by the caller). */
static ds_status check_message(ds_pool *pool, const char *func,
                               const ds_message_new *m, size_t *len,
                               char **json, size_t *json_len, ds_error *err) {
    *json = NULL;
    if (m->role < DS_ROLE_USER || m->role > DS_ROLE_TOOL)
        return ds__error_set(err, DS_ERR_INVALID, "%s: unknown role %d", func,
                             (int)m->role);
    if (!m->content)
        return ds__error_set(err, DS_ERR_INVALID, "%s: content is NULL", func);
    *len = m->content_len ? m->content_len : strlen(m->content);
    ds_status st = ds__check_text(err, func, "content", m->content, *len, 1,
                                  (size_t)ds__repo_max_message(pool));
    if (st == DS_OK && m->idempotency_key)
        st = ds__check_text(err, func, "idempotency_key", m->idempotency_key,
                            strlen(m->idempotency_key), 1,
                            DS_IDEMPOTENCY_KEY_MAX);
    if (st == DS_OK)
        st = ds__json_encode(err, func, "metadata", m->metadata, JSON_OBJECT,
                             "{}", ds__repo_max_json(pool), json, json_len);
    return st;
}

DS_EXPORT ds_status ds_message_append(ds_pool *pool, int64_t conversation_id,
                                      const ds_message_new *msg,
                                      ds_message **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, conversation_id > 0, "conversation_id must be positive");
    DS_CHECK_ARG(err, msg, "msg is NULL");
    size_t len, json_len;
    char *json;
    ds_status st = check_message(pool, __func__, msg, &len, &json, &json_len,
                                 err);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, conversation_id);
    ds__bind_text(&b, role_names[msg->role]);
    ds__bind_bytes(&b, msg->content, len);
    ds__bind_jsonb_owned(&b, json, json_len);
    ds__bind_text(&b, msg->idempotency_key);
    void *row;
    st = ds__repo_get(pool, false, &stmts[S_APPEND], &b, &msg_type, __func__,
                      NULL, 0, out ? &row : NULL, err);
    ds__bind_free(&b);
    if (st == DS_ERR_NOT_FOUND) /* the conversation: a foreign key violation */
        ds__not_found(err, __func__, "conversation", conversation_id);
    else if (st == DS_OK && out)
        *out = row;
    return st;
}

/* ---- batch ------------------------------------------------------------------- */

typedef struct key_ref {
    const char *key;
    int row;
} key_ref;

static int key_cmp(const void *a, const void *b) {
    return strcmp(((const key_ref *)a)->key, ((const key_ref *)b)->key);
}

/* Batch limit on the bytes sent: PostgreSQL caps one value at 1 GiB. */
#define BATCH_MAX_BYTES ((size_t)1 << 29)

DS_EXPORT ds_status ds_message_append_batch(ds_pool *pool,
                                            int64_t conversation_id,
                                            const ds_message_new *msgs,
                                            size_t n, ds_message_list **out,
                                            ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, conversation_id > 0, "conversation_id must be positive");
    DS_CHECK_ARG(err, msgs, "msgs is NULL");
    DS_CHECK_ARG(err, n > 0, "n must be positive");
    if (n > (size_t)ds__repo_max_batch(pool))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %zu messages is more than repo_max_batch "
                             "(%d)",
                             __func__, n, ds__repo_max_batch(pool));
    ds_status st = DS_OK;
    size_t *lens = ds__calloc(n, sizeof *lens);
    char **jsons = ds__calloc(n, sizeof *jsons);
    size_t *jlens = ds__calloc(n, sizeof *jlens);
    key_ref *keys = ds__calloc(n, sizeof *keys);
    int *order = ds__calloc(n, sizeof *order);
    ds__pgarr roles, contents, metas, keyarr;
    ds__pgarr_init(&roles, DS_OID_TEXT);
    ds__pgarr_init(&contents, DS_OID_TEXT);
    ds__pgarr_init(&metas, DS_OID_JSONB);
    ds__pgarr_init(&keyarr, DS_OID_TEXT);
    ds__bind b;
    ds__bind_init(&b);
    PGresult *r = NULL;
    if (!lens || !jsons || !jlens || !keys || !order) {
        st = ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", __func__);
        goto done;
    }
    size_t content_bytes = 0, json_bytes = 0, key_bytes = 0, nkeys = 0;
    for (size_t i = 0; i < n && st == DS_OK; i++) {
        st = check_message(pool, __func__, &msgs[i], &lens[i], &jsons[i],
                           &jlens[i], err);
        if (st != DS_OK) {
            ds__error_prefix(err, "message %zu", i);
            break;
        }
        content_bytes += lens[i];
        json_bytes += jlens[i];
        if (msgs[i].idempotency_key) {
            keys[nkeys].key = msgs[i].idempotency_key;
            keys[nkeys].row = (int)i;
            nkeys++;
            key_bytes += strlen(msgs[i].idempotency_key);
        }
    }
    if (st != DS_OK)
        goto done;
    if (content_bytes + json_bytes > BATCH_MAX_BYTES) {
        st = ds__error_set(err, DS_ERR_INVALID,
                           "%s: the batch holds more than %zu bytes; split it",
                           __func__, BATCH_MAX_BYTES);
        goto done;
    }
    qsort(keys, nkeys, sizeof *keys, key_cmp);
    for (size_t i = 1; i < nkeys; i++)
        if (strcmp(keys[i - 1].key, keys[i].key) == 0) {
            st = ds__error_set(err, DS_ERR_INVALID,
                               "%s: messages %d and %d share an idempotency "
                               "key",
                               __func__, keys[i - 1].row, keys[i].row);
            goto done;
        }
    bool ok = ds__pgarr_reserve(&roles, n, 9) &&
              ds__pgarr_reserve(&contents, n, content_bytes / n + 1) &&
              ds__pgarr_reserve(&metas, n, json_bytes / n + 1) &&
              ds__pgarr_reserve(&keyarr, n, key_bytes / n + 1);
    for (size_t i = 0; ok && i < n; i++) {
        const char *role = role_names[msgs[i].role];
        const char *k = msgs[i].idempotency_key;
        ok = ds__pgarr_add(&roles, role, strlen(role)) &&
             ds__pgarr_add(&contents, msgs[i].content, lens[i]) &&
             ds__pgarr_add(&metas, jsons[i], jlens[i]) &&
             ds__pgarr_add(&keyarr, k, k ? strlen(k) : 0);
    }
    if (!ok) {
        st = ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", __func__);
        goto done;
    }
    ds__bind_int64(&b, conversation_id);
    ds__bind_array(&b, &roles, DS_OID_TEXT_ARRAY);
    ds__bind_array(&b, &contents, DS_OID_TEXT_ARRAY);
    ds__bind_array(&b, &metas, DS_OID_JSONB_ARRAY);
    ds__bind_array(&b, &keyarr, DS_OID_TEXT_ARRAY);
    r = ds__repo_exec(pool, false, &stmts[S_APPEND_BATCH], &b, err);
    if (!r) {
        st = err ? err->code : DS_ERR_DB;
        if (st == DS_ERR_NOT_FOUND)
            ds__not_found(err, __func__, "conversation", conversation_id);
        goto done;
    }
    if ((size_t)PQntuples(r) != n) {
        st = ds__error_set(err, DS_ERR_INTERNAL, "%s: %d rows for %zu messages",
                           __func__, PQntuples(r), n);
        goto done;
    }
    if (!out)
        goto done;
    /* Rows come in id order. Keyed messages are matched by key; the rest
     * were inserted in input order, so they take the unkeyed rows in id
     * order. */
    {
        int next_unkeyed = 0, rows = PQntuples(r);
        size_t nrk = 0;
        for (int row = 0; row < rows; row++)
            if (!PQgetisnull(r, row, 5)) {
                keys[nrk].key = PQgetvalue(r, row, 5);
                keys[nrk].row = row;
                nrk++;
            }
        qsort(keys, nrk, sizeof *keys, key_cmp);
        for (size_t i = 0; i < n; i++) {
            order[i] = -1;
            if (msgs[i].idempotency_key) {
                key_ref probe = {msgs[i].idempotency_key, 0};
                const key_ref *hit = bsearch(&probe, keys, nrk, sizeof *keys,
                                             key_cmp);
                if (hit)
                    order[i] = hit->row;
            } else {
                while (next_unkeyed < rows && !PQgetisnull(r, next_unkeyed, 5))
                    next_unkeyed++;
                order[i] = next_unkeyed++;
            }
            if (order[i] < 0 || order[i] >= rows) {
                st = ds__error_set(err, DS_ERR_INTERNAL,
                                   "%s: result rows do not match the input",
                                   __func__);
                goto done;
            }
        }
    }
    if (!(*out = ds__list_new(r, order, (int)n, false, &msg_type, __func__,
                              err)))
        st = err->code;
done:
    PQclear(r);
    if (jsons)
        for (size_t i = 0; i < n; i++)
            ds__free(jsons[i]);
    ds__free(lens);
    ds__free(jsons);
    ds__free(jlens);
    ds__free(keys);
    ds__free(order);
    ds__pgarr_free(&roles);
    ds__pgarr_free(&contents);
    ds__pgarr_free(&metas);
    ds__pgarr_free(&keyarr);
    ds__bind_free(&b);
    return st;
}

DS_EXPORT ds_status ds_message_list_page(ds_pool *pool,
                                         int64_t conversation_id,
                                         ds_order order,
                                         const ds_message_cursor *cursor,
                                         int limit, ds_message_list **out,
                                         ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, conversation_id > 0, "conversation_id must be positive");
    DS_CHECK_ARG(err, order == DS_NEWEST_FIRST || order == DS_OLDEST_FIRST,
                 "unknown order");
    ds_status st = ds__check_limit(err, __func__, pool, limit);
    if (st != DS_OK)
        return st;
    int64_t before = cursor && cursor->before_id ? cursor->before_id : INT64_MAX;
    int64_t after = cursor ? cursor->after_id : 0;
    DS_CHECK_ARG(err, before > 0 && after >= 0, "cursor ids are negative");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, conversation_id);
    ds__bind_int64(&b, before);
    ds__bind_int64(&b, after);
    ds__bind_int64(&b, (int64_t)limit + 1);
    const ds__stmt_def *def =
        &stmts[order == DS_NEWEST_FIRST ? S_LIST_DESC : S_LIST_ASC];
    ds_message_list *list = ds__repo_list(pool, false, def, &b, limit,
                                          &msg_type, __func__, "conversation",
                                          conversation_id, err);
    if (!list)
        return err->code;
    list->next.before_id = cursor ? cursor->before_id : 0;
    list->next.after_id = after;
    if (list->count) {
        int64_t last = list->items[list->count - 1]->id;
        if (order == DS_NEWEST_FIRST)
            list->next.before_id = last;
        else
            list->next.after_id = last;
    }
    *out = list;
    return DS_OK;
}

DS_EXPORT ds_status ds_message_count(ds_pool *pool, int64_t conversation_id,
                                     int64_t *out, ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, conversation_id > 0, "conversation_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, conversation_id);
    return ds__repo_count(pool, &stmts[S_COUNT], &b, __func__, "conversation",
                          conversation_id, out, err);
}
