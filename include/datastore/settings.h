/*
 * datastore/settings.h — application settings: JSON values by key, global
 * (user_id 0) or per user, with optimistic concurrency.
 *
 *   json_t *v = json_pack("{s:b}", "beta", 1);
 *   ds_setting *s;
 *   st = ds_setting_put(pool, user_id, "features", v, DS_VERSION_NEW, &s, &err);
 *   ...
 *   st = ds_setting_put(pool, user_id, "features", v2, s->version, NULL, &err);
 *   // DS_ERR_CONFLICT when another writer got there first
 *
 * `expected_version` says what the caller believes: DS_VERSION_NEW (the key
 * does not exist yet), a version read earlier (the row is still at it), or
 * DS_VERSION_ANY (write unconditionally). A wrong belief gives
 * DS_ERR_CONFLICT (or DS_ERR_NOT_FOUND when the key does not exist) and
 * changes nothing.
 *
 * Keys: 1..128 of [A-Za-z0-9_.:-]. Values: any JSON value (a JSON null too)
 * up to repo_max_json_bytes serialised; borrowed for the call. JSON in a
 * returned row is owned by the row.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool,
 * value or out-param, a negative user_id, a bad key or expected_version,
 * a value over the limit; nothing is written), DS_ERR_NOMEM, the pool's
 * DS_ERR_CONNECTION / DS_ERR_TIMEOUT / DS_ERR_DB, and DS_ERR_UNSUPPORTED
 * for a stored value that jansson cannot hold (written by another client).
 * After a failure every out-param is NULL.
 *
 * Thread-safety: any thread, shared pool.
 */
#ifndef DATASTORE_SETTINGS_H
#define DATASTORE_SETTINGS_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_VERSION_NEW INT64_C(0)
#define DS_VERSION_ANY INT64_C(-1)

typedef struct ds_setting {
    int64_t id;
    int64_t user_id;  /* 0 for a global setting */
    const char *key;
    json_t *value;    /* owned by the row */
    int64_t version;
    int64_t updated_at;
} ds_setting;

/* Keyset cursor for ds_setting_list_for_user(): settings whose key sorts
 * after `after_key`. Start with {0} (NULL: the first page); continue with
 * the list's `next`. A fixed value (docs/abi.md): it never grows. */
typedef struct ds_setting_cursor {
    const char *after_key;
} ds_setting_cursor;

/* One page of settings by key, allocated as one block. */
typedef struct ds_setting_list {
    size_t count;
    ds_setting **items;     /* count rows by key, owned by the list        */
    bool has_more;          /* another page follows                        */
    ds_setting_cursor next; /* where the next page starts; its string is
                               borrowed from the list (or, for an empty
                               page, from the cursor passed in): use it
                               before freeing the list                     */
} ds_setting_list;

/* Frees a row / a list and its rows, JSON included. NULL is a no-op. */
DS_EXPORT void ds_setting_free(ds_setting *setting);
DS_EXPORT void ds_setting_list_free(ds_setting_list *list);

/* One setting of `user_id` (0: global) into *out (free with
 * ds_setting_free()). DS_ERR_NOT_FOUND when unset. */
DS_EXPORT DS_NODISCARD ds_status ds_setting_get(ds_pool *pool,
                                                int64_t user_id,
                                                const char *key,
                                                ds_setting **out,
                                                ds_error *err);

/* Writes a value (see expected_version above). *out (may be NULL)
 * receives the stored row, freed with ds_setting_free(). DS_ERR_CONFLICT,
 * DS_ERR_NOT_FOUND as above, and DS_ERR_NOT_FOUND for an unknown user. */
DS_EXPORT DS_NODISCARD ds_status ds_setting_put(ds_pool *pool,
                                                int64_t user_id,
                                                const char *key,
                                                const json_t *value,
                                                int64_t expected_version,
                                                ds_setting **out,
                                                ds_error *err);

/* Deletes a setting at `expected_version` (DS_VERSION_ANY: any).
 * DS_ERR_NOT_FOUND when unset, DS_ERR_CONFLICT when stale. */
DS_EXPORT DS_NODISCARD ds_status ds_setting_delete(ds_pool *pool,
                                                   int64_t user_id,
                                                   const char *key,
                                                   int64_t expected_version,
                                                   ds_error *err);

/*
 * The settings of `user_id` (0: the global ones) by key, at most `limit`
 * (1..repo_max_page) after `cursor` (NULL or {0}: from the start), into
 * *out (free with ds_setting_list_free()); its `next` continues after it
 * and has_more says whether another page follows. An unknown user has no
 * settings: an empty list, not DS_ERR_NOT_FOUND. DS_ERR_INVALID for a
 * limit out of range or a cursor key that is empty, longer than 128 bytes
 * or not UTF-8.
 */
DS_EXPORT DS_NODISCARD ds_status ds_setting_list_for_user(
    ds_pool *pool, int64_t user_id, const ds_setting_cursor *cursor,
    int limit, ds_setting_list **out, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_SETTINGS_H */
