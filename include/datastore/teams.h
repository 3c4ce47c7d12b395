/*
 * datastore/teams.h — AI team configurations (member agents and config as
 * JSON) with optimistic concurrency.
 *
 *   ds_team *t;                               // read, change, write back:
 *   ds_team_get(pool, id, &t, &err);
 *   json_t *cfg = json_deep_copy(t->config);
 *   json_object_set_new(cfg, "temperature", json_real(0.2));
 *   st = ds_team_update(pool, id, t->version, NULL, NULL, cfg, &t2, &err);
 *   // DS_ERR_CONFLICT: someone else updated it first; read again and retry
 *
 * Every update names the version it read; a stale version gives
 * DS_ERR_CONFLICT and changes nothing, so two editors never overwrite each
 * other silently. Team names are unique per owner (DS_ERR_CONFLICT).
 *
 * JSON ownership: JSON arguments are borrowed for the call (the library
 * never keeps or modifies them); JSON in a returned row is owned by the row
 * (json_incref() to keep it beyond ds_team_free()).
 *
 * Limits: name 1..200 bytes of UTF-8 without NUL; members a JSON array and
 * config a JSON object, each at most repo_max_json_bytes when serialised.
 *
 * Errors of every call besides those named: DS_ERR_INVALID (a NULL pool
 * or out-param, an id below 1, anything outside the limits; nothing is
 * written), DS_ERR_NOMEM, the pool's DS_ERR_CONNECTION / DS_ERR_TIMEOUT /
 * DS_ERR_DB, and DS_ERR_UNSUPPORTED for stored JSON that jansson cannot
 * hold (written by another client). After a failure every out-param is
 * NULL.
 *
 * Thread-safety: any thread, shared pool.
 */
#ifndef DATASTORE_TEAMS_H
#define DATASTORE_TEAMS_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_team {
    int64_t id;
    int64_t owner_id;
    const char *name;
    json_t *members;  /* array; owned by the row */
    json_t *config;   /* object; owned by the row */
    int64_t version;  /* 1 on create, +1 per update */
    int64_t created_at;
    int64_t updated_at;
} ds_team;

/* Keyset cursor for ds_team_list_for_owner(): teams whose name sorts
 * after `after_name`. Start with {0} (NULL: the first page); continue with
 * the list's `next`. A cursor is a position, not a session: one taken
 * from another owner's list still means "names after this one". A fixed
 * value (docs/abi.md): it never grows. */
typedef struct ds_team_cursor {
    const char *after_name;
} ds_team_cursor;

/* One page of teams by name, allocated as one block. */
typedef struct ds_team_list {
    size_t count;
    ds_team **items;     /* count rows, owned by the list                  */
    bool has_more;       /* another page follows                           */
    ds_team_cursor next; /* where the next page starts; its string is
                            borrowed from the list (or, for an empty page,
                            from the cursor passed in): use it before
                            freeing the list                               */
} ds_team_list;

/* Frees a row / a list and its rows, JSON included. NULL is a no-op. */
DS_EXPORT void ds_team_free(ds_team *team);
DS_EXPORT void ds_team_list_free(ds_team_list *list);

/* Creates a team of user `owner_id` at version 1. `members` NULL means [],
 * `config` NULL {}. *out (may be NULL) receives the row, freed with
 * ds_team_free(). DS_ERR_NOT_FOUND for an unknown owner, DS_ERR_CONFLICT
 * when the owner already has a team of that name. */
DS_EXPORT DS_NODISCARD ds_status ds_team_create(ds_pool *pool,
                                                int64_t owner_id,
                                                const char *name,
                                                const json_t *members,
                                                const json_t *config,
                                                ds_team **out, ds_error *err);

/* The team `id` into *out (free with ds_team_free()). DS_ERR_NOT_FOUND
 * for an unknown id. */
DS_EXPORT DS_NODISCARD ds_status ds_team_get(ds_pool *pool, int64_t id,
                                             ds_team **out, ds_error *err);

/*
 * An owner's teams by name (unique per owner), at most `limit`
 * (1..repo_max_page) after `cursor` (NULL or {0}: from the start), into
 * *out (free with ds_team_list_free()); its `next` continues after it and
 * has_more says whether another page follows. DS_ERR_NOT_FOUND for an
 * unknown owner; DS_ERR_INVALID for a limit out of range or a cursor name
 * that is empty, longer than 200 bytes or not UTF-8.
 */
DS_EXPORT DS_NODISCARD ds_status ds_team_list_for_owner(
    ds_pool *pool, int64_t owner_id, const ds_team_cursor *cursor, int limit,
    ds_team_list **out, ds_error *err);

/*
 * Replaces the non-NULL fields (at least one) if the team is still at
 * `expected_version` (from 1), and bumps the version. *out (may be NULL)
 * receives the new row, freed with ds_team_free(). Errors:
 * DS_ERR_CONFLICT (stale version, or the new name is taken; nothing
 * changed), DS_ERR_NOT_FOUND.
 */
DS_EXPORT DS_NODISCARD ds_status ds_team_update(ds_pool *pool, int64_t id,
                                                int64_t expected_version,
                                                const char *name,
                                                const json_t *members,
                                                const json_t *config,
                                                ds_team **out, ds_error *err);

/* Deletes a team if it is at `expected_version` (0: any version).
 * DS_ERR_CONFLICT for a stale version, DS_ERR_NOT_FOUND for none. */
DS_EXPORT DS_NODISCARD ds_status ds_team_delete(ds_pool *pool, int64_t id,
                                                int64_t expected_version,
                                                ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_TEAMS_H */
