/*
 * datastore/users.h — users and their profiles.
 *
 *   ds_user *u;
 *   if (ds_user_create(pool, " Ada@Example.COM ", NULL, &u, &err) == DS_OK) {
 *       printf("%lld %s\n", (long long)u->id, u->email); // ada@example.com
 *       ds_user_free(u);
 *   }
 *
 * Emails are trimmed and lower-cased before they are checked and stored,
 * and are unique case-insensitively (also against soft-deleted users, who
 * keep their address until they are purged or erased). Every user has one
 * profile row, created with the user.
 *
 * Rows are allocated by the library (fields may be appended in later
 * versions, so never allocate or copy a ds_user yourself); strings and JSON
 * inside a row live exactly as long as the row.
 *
 * Limits: email 320 bytes (64 before the '@'), display_name 200, locale
 * 2..35, timezone 1..64, preferences a JSON object of at most
 * repo_max_json_bytes; list limit 1..repo_max_page. Text must be valid
 * UTF-8 without NUL bytes. Bad input gives DS_ERR_INVALID and writes
 * nothing.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool
 * or out-param, an argument outside the limits), DS_ERR_NOMEM, the pool's
 * DS_ERR_CONNECTION / DS_ERR_TIMEOUT / DS_ERR_DB, and DS_ERR_UNSUPPORTED
 * for stored JSON that jansson cannot hold (written by another client,
 * e.g. a number beyond 64 bits). After a failure every out-param is NULL.
 *
 * Thread-safety: every function may be called from any thread with a
 * shared pool; a row is owned by the caller and not shared.
 */
#ifndef DATASTORE_USERS_H
#define DATASTORE_USERS_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_user_status {
    DS_USER_ACTIVE = 0,
    DS_USER_PENDING = 1,
    DS_USER_SUSPENDED = 2,
    /* Soft-deleted (schema 4 on): seen only by lists that include deleted
     * users; not a status ds_user_set_status() sets. */
    DS_USER_DELETED = 3
} ds_user_status;

/* A user with its profile. Times are microseconds since the epoch (UTC). */
typedef struct ds_user {
    int64_t id;
    const char *email;        /* normalised (trimmed, lower-case)          */
    ds_user_status status;
    int64_t created_at;
    int64_t updated_at;
    int64_t deleted_at;       /* 0 unless soft-deleted                      */
    const char *display_name; /* profile                                    */
    const char *locale;
    const char *timezone;
    json_t *preferences;      /* object; borrowed: lives with the row
                                 (json_incref() it to keep it longer)       */
    int64_t profile_updated_at;
} ds_user;

/* Profile fields for create and update: NULL means "default" on create and
 * "leave unchanged" on update. Everything is borrowed for the call. */
typedef struct ds_profile_fields {
    size_t size; /* growable, caller-allocated: set by DS_PROFILE_FIELDS_INIT */
    const char *display_name;
    const char *locale;
    const char *timezone;
    const json_t *preferences; /* a JSON object                            */
} ds_profile_fields;
#define DS_PROFILE_FIELDS_INIT DS_SIZED_INIT(ds_profile_fields)

/* Frees a row with its strings and preferences. NULL is a no-op. */
DS_EXPORT void ds_user_free(ds_user *user);

/*
 * Creates an active user and its profile in one statement. `email` is
 * normalised and validated; `profile` may be NULL (defaults: "", "en",
 * "UTC", {}) and is borrowed for the call. *out (may be NULL when not
 * wanted) receives the new row, freed with ds_user_free(). Errors:
 * DS_ERR_INVALID (malformed email or field), DS_ERR_CONFLICT (the email is
 * taken, also by a soft-deleted user).
 */
DS_EXPORT DS_NODISCARD ds_status ds_user_create(ds_pool *pool,
                                                const char *email,
                                                const ds_profile_fields *profile,
                                                ds_user **out, ds_error *err);

/* The user with this id, unless soft-deleted, into *out (free with
 * ds_user_free()). DS_ERR_NOT_FOUND otherwise. */
DS_EXPORT DS_NODISCARD ds_status ds_user_get(ds_pool *pool, int64_t id,
                                             ds_user **out, ds_error *err);

/* The user with this email (normalised first), unless soft-deleted, into
 * *out (free with ds_user_free()). DS_ERR_INVALID for a malformed email,
 * DS_ERR_NOT_FOUND for none. */
DS_EXPORT DS_NODISCARD ds_status ds_user_get_by_email(ds_pool *pool,
                                                      const char *email,
                                                      ds_user **out,
                                                      ds_error *err);

/*
 * Updates the profile fields that are non-NULL in `fields` (at least one
 * must be; borrowed for the call) and returns the updated row in *out (may
 * be NULL; free with ds_user_free()). DS_ERR_NOT_FOUND for an unknown or
 * soft-deleted user.
 */
DS_EXPORT DS_NODISCARD ds_status ds_user_update_profile(
    ds_pool *pool, int64_t user_id, const ds_profile_fields *fields,
    ds_user **out, ds_error *err);

/* Sets the account status. DS_ERR_NOT_FOUND for an unknown or soft-deleted
 * user, DS_ERR_INVALID for an unknown status. */
DS_EXPORT DS_NODISCARD ds_status ds_user_set_status(ds_pool *pool,
                                                    int64_t user_id,
                                                    ds_user_status status,
                                                    ds_error *err);

/*
 * Soft delete: the user disappears from get and list (and is purged by
 * ds_gdpr_purge_deleted_users() later) but keeps every row and the email.
 * Every reader sees it: users.status becomes 'deleted' (the status before
 * is kept in status_before_delete for a restore), so filtering on status
 * alone leaves the user out; a trigger keeps status and deleted_at together
 * for plain SQL writers too (docs/formats.md). DS_ERR_NOT_FOUND when unknown or already deleted.
 */
DS_EXPORT DS_NODISCARD ds_status ds_user_soft_delete(ds_pool *pool,
                                                     int64_t user_id,
                                                     ds_error *err);

/* Undoes a soft delete; the user gets back the status they had (a
 * suspended user stays suspended). DS_ERR_NOT_FOUND when unknown or not
 * deleted. */
DS_EXPORT DS_NODISCARD ds_status ds_user_restore(ds_pool *pool,
                                                 int64_t user_id,
                                                 ds_error *err);

/* Keyset cursor for ds_user_list_page(): users with id > after_id. Start
 * with {0}; continue with the list's `next`. A fixed value (docs/abi.md):
 * it never grows. */
typedef struct ds_user_cursor {
    int64_t after_id;
} ds_user_cursor;

/* One page of users, oldest id first, allocated as one block. */
typedef struct ds_user_list {
    size_t count;
    ds_user **items;     /* count rows, owned by the list                  */
    bool has_more;       /* another page follows                           */
    ds_user_cursor next; /* where the next page starts                     */
} ds_user_list;

/* Frees a list and every row in it. NULL is a no-op. */
DS_EXPORT void ds_user_list_free(ds_user_list *list);

/*
 * Lists up to `limit` users after `cursor` (NULL: from the start) in id
 * order; soft-deleted users only when `include_deleted`. Inserts made
 * while paging never cause duplicates or gaps among rows that existed when
 * paging began. `from_replica` reads through ds_pool_acquire_read() (may
 * lag the primary). *out receives the page (free with ds_user_list_free());
 * its `next` continues after it. DS_ERR_INVALID for a limit outside
 * 1..repo_max_page or a negative cursor.
 */
DS_EXPORT DS_NODISCARD ds_status ds_user_list_page(
    ds_pool *pool, const ds_user_cursor *cursor, int limit,
    bool include_deleted, bool from_replica, ds_user_list **out,
    ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_USERS_H */
