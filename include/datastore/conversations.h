/*
 * datastore/conversations.h — conversations (their messages:
 * datastore/messages.h).
 *
 * Paging is keyset (never OFFSET): conversations by recent activity
 * (updated_at, id), which an append to a conversation moves (see
 * messages.h).
 *
 * Limits: title 500 bytes, page limit 1..repo_max_page. Text must be valid
 * UTF-8 without NUL. Bad input: DS_ERR_INVALID, nothing written; unknown
 * ids: DS_ERR_NOT_FOUND.
 *
 * Rows and lists are allocated by the library (fields may be appended
 * later); strings inside live as long as their row or list.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool,
 * argument or out-param, an id below 1, anything outside the limits),
 * DS_ERR_NOMEM, the pool's DS_ERR_CONNECTION / DS_ERR_TIMEOUT / DS_ERR_DB.
 * After a failure every out-param is NULL (counts 0).
 *
 * Thread-safety: every function may be called from any thread with a
 * shared pool.
 */
#ifndef DATASTORE_CONVERSATIONS_H
#define DATASTORE_CONVERSATIONS_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- conversations -------------------------------------------------------- */

typedef struct ds_conversation {
    int64_t id;
    int64_t owner_id;
    const char *title;
    bool archived;
    int64_t created_at; /* microseconds since the epoch                   */
    int64_t updated_at; /* "recent activity": moved by an append when older
                           than repo_activity_interval_ms                */
} ds_conversation;

/* Frees a row. NULL is a no-op. */
DS_EXPORT void ds_conversation_free(ds_conversation *conversation);

/* Creates a conversation of user `owner_id`. `title` may be NULL ("").
 * *out (may be NULL) receives the row, freed with ds_conversation_free().
 * DS_ERR_NOT_FOUND when the owner does not exist. */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_create(
    ds_pool *pool, int64_t owner_id, const char *title,
    ds_conversation **out, ds_error *err);

/* The conversation `id` into *out (free with ds_conversation_free()).
 * DS_ERR_NOT_FOUND when there is no such conversation. */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_get(ds_pool *pool,
                                                     int64_t id,
                                                     ds_conversation **out,
                                                     ds_error *err);

/* Sets or clears the archived flag. DS_ERR_NOT_FOUND for an unknown id. */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_archive(ds_pool *pool,
                                                         int64_t id,
                                                         bool archived,
                                                         ds_error *err);

/* Deletes a conversation and its messages. DS_ERR_NOT_FOUND when unknown. */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_delete(ds_pool *pool,
                                                        int64_t id,
                                                        ds_error *err);

/* Counts a user's conversations (archived ones too when asked) into
 * *out. DS_ERR_NOT_FOUND when the user does not exist. */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_count(ds_pool *pool,
                                                       int64_t owner_id,
                                                       bool include_archived,
                                                       int64_t *out,
                                                       ds_error *err);

/* Keyset cursor for activity order: rows strictly after (updated_at, id)
 * in descending order. Start with {0, 0}. A fixed value (docs/abi.md):
 * it never grows. */
typedef struct ds_conversation_cursor {
    int64_t updated_at;
    int64_t id;
} ds_conversation_cursor;

typedef struct ds_conversation_list {
    size_t count;
    ds_conversation **items;
    bool has_more;
    ds_conversation_cursor next;
} ds_conversation_list;

/* Frees a list and its rows. NULL is a no-op. */
DS_EXPORT void ds_conversation_list_free(ds_conversation_list *list);

/*
 * A user's conversations, most recent activity first, `limit`
 * (1..repo_max_page) per page after `cursor` (NULL: from the top). A
 * conversation that gets a new message while you page moves to the top
 * and may be skipped by later pages; start over to see it. *out receives
 * the page (free with ds_conversation_list_free()); its `next` continues
 * after it. DS_ERR_NOT_FOUND for an unknown user.
 */
DS_EXPORT DS_NODISCARD ds_status ds_conversation_list_page(
    ds_pool *pool, int64_t owner_id, const ds_conversation_cursor *cursor,
    int limit, bool include_archived, ds_conversation_list **out,
    ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CONVERSATIONS_H */
