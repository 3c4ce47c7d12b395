/*
 * datastore/messages.h — the messages of a conversation (conversations:
 * datastore/conversations.h).
 *
 *   ds_message_new m = DS_MESSAGE_NEW_INIT;
 *   m.role = DS_ROLE_USER;
 *   m.content = "hello";
 *   m.idempotency_key = "req-42";
 *   ds_message *msg;
 *   if (ds_message_append(pool, conv_id, &m, &msg, &err) == DS_OK) {
 *       // msg->created is false when "req-42" had been appended before:
 *       // the original row comes back, never a duplicate
 *       ds_message_free(msg);
 *   }
 *
 * An append is one statement (one round trip): it inserts the message and
 * bumps the conversation's updated_at atomically when that is older than
 * repo_activity_interval_ms (default 30 s), so recent-activity order holds
 * at that granularity without rewriting the conversation's row for every
 * message (see docs/repositories.md). With an idempotency key,
 * a retried append (also several at once, from other threads or processes)
 * returns the original row and bumps nothing. A batch append inserts many
 * messages in one statement (one round trip) with the same rules.
 *
 * Paging is keyset (never OFFSET): messages by id in either order with
 * before/after cursors. Messages appended while paging newest-first never
 * shift the pages.
 *
 * Limits: message content 1..repo_max_message_bytes
 * (content may be given with a length, so an embedded NUL is detected and
 * refused), idempotency key 1..200 bytes, metadata a JSON object of at most
 * repo_max_json_bytes, page limit 1..repo_max_page, batch 1..repo_max_batch
 * messages. Text must be valid UTF-8 without NUL. Bad input: DS_ERR_INVALID,
 * nothing written; unknown ids: DS_ERR_NOT_FOUND.
 *
 * Rows and lists are allocated by the library (fields may be appended
 * later); strings and JSON inside live as long as their row or list.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool,
 * argument or out-param, an id below 1, anything outside the limits),
 * DS_ERR_NOMEM, the pool's DS_ERR_CONNECTION / DS_ERR_TIMEOUT / DS_ERR_DB,
 * and DS_ERR_UNSUPPORTED for stored metadata that jansson cannot hold
 * (written by another client). After a failure every out-param is NULL
 * (counts 0).
 *
 * Thread-safety: every function may be called from any thread with a
 * shared pool.
 */
#ifndef DATASTORE_MESSAGES_H
#define DATASTORE_MESSAGES_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_message_role {
    DS_ROLE_USER = 0,
    DS_ROLE_ASSISTANT = 1,
    DS_ROLE_SYSTEM = 2,
    DS_ROLE_TOOL = 3
} ds_message_role;

/* "user", "assistant", "system", "tool"; "unknown" otherwise. */
DS_EXPORT const char *ds_message_role_str(ds_message_role role);

typedef struct ds_message {
    int64_t id;
    int64_t conversation_id;
    ds_message_role role;
    const char *content;         /* NUL-terminated                         */
    size_t content_len;          /* bytes, without the NUL                 */
    json_t *metadata;            /* object; borrowed, lives with the row   */
    const char *idempotency_key; /* NULL when none                         */
    int64_t created_at;
    bool created; /* append results: false when an earlier append with the
                     same key is returned instead                           */
} ds_message;

/* A message to append. Everything is borrowed for the call. */
typedef struct ds_message_new {
    size_t size; /* growable, caller-allocated: set by DS_MESSAGE_NEW_INIT */
    ds_message_role role;
    const char *content;
    size_t content_len;          /* 0: strlen(content)                     */
    const json_t *metadata;      /* object, or NULL for {}                 */
    const char *idempotency_key; /* NULL: none                             */
} ds_message_new;
#define DS_MESSAGE_NEW_INIT DS_SIZED_INIT(ds_message_new)

/* Frees a row with its strings and metadata. NULL is a no-op. */
DS_EXPORT void ds_message_free(ds_message *message);

/*
 * Appends one message and bumps the conversation's updated_at (when older
 * than repo_activity_interval_ms), in one statement. With an idempotency key already used in this conversation,
 * returns that original row (created == false) and changes nothing.
 * `msg` is borrowed for the call. *out (may be NULL) receives the row,
 * freed with ds_message_free(). DS_ERR_NOT_FOUND for an unknown
 * conversation.
 */
DS_EXPORT DS_NODISCARD ds_status ds_message_append(ds_pool *pool,
                                                   int64_t conversation_id,
                                                   const ds_message_new *msg,
                                                   ds_message **out,
                                                   ds_error *err);

/* Keyset cursor: ids strictly below `before_id` and above `after_id`
 * (0: no bound). It is a range, valid in either order; a bound may be a
 * deleted message, but not a message of another conversation. A fixed
 * value (docs/abi.md): it never grows. */
typedef struct ds_message_cursor {
    int64_t before_id;
    int64_t after_id;
} ds_message_cursor;

typedef enum ds_order {
    DS_NEWEST_FIRST = 0,
    DS_OLDEST_FIRST = 1
} ds_order;

typedef struct ds_message_list {
    size_t count;
    ds_message **items;
    bool has_more;          /* more rows in this direction               */
    ds_message_cursor next; /* the next page in the same order           */
} ds_message_list;

/* Frees a list and its rows. NULL is a no-op. */
DS_EXPORT void ds_message_list_free(ds_message_list *list);

/*
 * Appends `n` messages (1..repo_max_batch) in one statement and bumps the
 * conversation once. Keys must be distinct within the batch; keys used
 * before return their original rows. The whole batch is validated before
 * anything is sent, and is written all or nothing; the message of an
 * error in one message starts with "message <index>". `msgs` is borrowed
 * for the call. *out (may be NULL) receives the rows in input order, freed
 * with ds_message_list_free(). DS_ERR_INVALID also for shared keys or more
 * than 512 MiB of content and metadata; DS_ERR_NOT_FOUND for an unknown
 * conversation.
 */
DS_EXPORT DS_NODISCARD ds_status ds_message_append_batch(
    ds_pool *pool, int64_t conversation_id, const ds_message_new *msgs,
    size_t n, ds_message_list **out, ds_error *err);

/*
 * One page of at most `limit` (1..repo_max_page) of a conversation's
 * messages in `order`, within `cursor` (NULL: everything). *out receives
 * the page (free with ds_message_list_free()); its `next` continues in the
 * same order. DS_ERR_NOT_FOUND for an unknown conversation; DS_ERR_INVALID
 * for a cursor bound that is a message of another conversation. A page
 * costs one index range scan of `limit` rows, whatever the conversation's
 * size.
 */
DS_EXPORT DS_NODISCARD ds_status ds_message_list_page(
    ds_pool *pool, int64_t conversation_id, ds_order order,
    const ds_message_cursor *cursor, int limit, ds_message_list **out,
    ds_error *err);

/* Counts a conversation's messages into *out. DS_ERR_NOT_FOUND when
 * unknown. */
DS_EXPORT DS_NODISCARD ds_status ds_message_count(ds_pool *pool,
                                                  int64_t conversation_id,
                                                  int64_t *out, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_MESSAGES_H */
