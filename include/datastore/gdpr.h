/*
 * datastore/gdpr.h — erasure of a user's data (GDPR art. 17) and the
 * retention purge of soft-deleted users.
 *
 *   ds_gdpr_erase_report *rep;
 *   st = ds_gdpr_erase_user(pool, redis, user_id, &rep, &err);
 *   printf("%lld messages, %lld events, %lld redis keys\n",
 *          (long long)rep->messages, (long long)rep->analytics_events,
 *          (long long)rep->redis_keys);
 *   ds_gdpr_erase_report_free(rep);
 *
 * ds_gdpr_erase_user() hard-deletes every row of the user in every table (the
 * user, profile, auth sessions, conversations and their messages, service
 * connections, AI teams, per-user settings, memory facts and analytics
 * events, which have no foreign key) in ONE statement, so it is all or
 * nothing, and reports per-table counts. With a Redis handle it then
 * removes the user's Redis keys (session look-ups, cache entries,
 * presence). Erasing is idempotent: erasing an unknown or already erased id
 * succeeds with zero counts, so a call that failed half-way (for example
 * at Redis, after the database commit) is simply repeated.
 *
 * Thread-safety: any thread, shared pool and Redis handle.
 */
#ifndef DATASTORE_GDPR_H
#define DATASTORE_GDPR_H

#include "core.h"
#include "pool.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows deleted per table (allocated by the library; fields may be
 * appended). */
typedef struct ds_gdpr_erase_report {
    int64_t users;
    int64_t profiles;
    int64_t auth_sessions;
    int64_t conversations;
    int64_t messages;
    int64_t service_connections;
    int64_t ai_teams;
    int64_t app_settings;
    int64_t memory_facts;
    int64_t analytics_events;
    int64_t redis_keys;  /* keys removed; 0 without a Redis handle        */
    bool redis_erased;   /* true when Redis was asked and answered        */
} ds_gdpr_erase_report;

/* Frees a report. NULL is a no-op. */
DS_EXPORT void ds_gdpr_erase_report_free(ds_gdpr_erase_report *report);

/*
 * Erases everything of `user_id` (see above). `redis` may be NULL.
 * *out (may be NULL) receives the counts, freed with
 * ds_gdpr_erase_report_free(). Errors: DS_ERR_INVALID (NULL pool, user_id below
 * 1), DS_ERR_NOMEM, the pool's errors (nothing was deleted), DS_ERR_REDIS
 * (the database part is committed and *out filled; call again to finish
 * Redis).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_erase_user(ds_pool *pool, ds_redis *redis,
                                               int64_t user_id,
                                               ds_gdpr_erase_report **out,
                                               ds_error *err);

/*
 * Retention: erases every user soft-deleted before `deleted_before` (a time: epoch
 * microseconds; INT64_MIN: none, INT64_MAX: all), with all their rows (analytics events included) and,
 * given a Redis handle, their Redis keys. `purged` (may be NULL) receives
 * the number of users erased. At most repo_max_batch users per call;
 * `*more` (may be NULL) says whether more are waiting, so call it in a
 * loop from a scheduled job. Errors: DS_ERR_INVALID (NULL pool, a time
 * PostgreSQL cannot hold), the pool's errors (nothing was erased),
 * DS_ERR_REDIS (the *purged users are erased from the database, but not
 * all of their Redis keys).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_purge_deleted_users(ds_pool *pool,
                                                       ds_redis *redis,
                                                       int64_t deleted_before,
                                                       int64_t *purged,
                                                       bool *more,
                                                       ds_error *err);

/* ------------------------------------------------------------------------
 * With options: progress and cancelling, and batches for users with many
 * rows. A growable struct (docs/abi.md): start from ds_gdpr_erase_options_init().
 */
typedef struct ds_gdpr_erase_options {
    size_t size;      /* sizeof (ds_gdpr_erase_options), set by the initialiser */
    int batch_rows;   /* rows per transaction when emptying the user's
                         messages, memory facts and analytics events
                         before the final statement; 0: 5000 (1..100000) */
    ds_progress_fn progress; /* may be NULL: operation "erase", item the
                                table being emptied ("users" for the final
                                statement), unit "rows", done of total for
                                the whole user                           */
    void *progress_ud;
} ds_gdpr_erase_options;
#define DS_GDPR_ERASE_OPTIONS_INIT DS_SIZED_INIT(ds_gdpr_erase_options)

/* Sets every member to its default (zero) and `size`. */
DS_EXPORT void ds_gdpr_erase_options_init(ds_gdpr_erase_options *opts);

/*
 * ds_gdpr_erase_user() for users with many rows: the user's messages, memory
 * facts and analytics events are deleted in batches of short transactions
 * first (only the user's own rows are locked, for one batch at a time),
 * reporting after each; then one statement erases everything left, as
 * ds_gdpr_erase_user() does, and Redis follows. A failure or a stop from the
 * progress callback (DS_ERR_CANCELLED) leaves the user with fewer rows and
 * nothing inconsistent: calling again finishes. `opts` may be NULL.
 * Errors as ds_gdpr_erase_user(), plus DS_ERR_CANCELLED and DS_ERR_INVALID (a
 * bad `size` or batch_rows).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_erase_user_ex(
    ds_pool *pool, ds_redis *redis, int64_t user_id,
    const ds_gdpr_erase_options *opts, ds_gdpr_erase_report **out, ds_error *err);

/* Options of the retention purge. A growable struct (docs/abi.md): start
 * from ds_gdpr_purge_options_init(). */
typedef struct ds_gdpr_purge_options {
    size_t size;       /* sizeof (ds_gdpr_purge_options), set by the initialiser */
    int batch_users;   /* users erased per transaction; 0: the pool's
                          repo_max_batch (1..10000)                        */
    int64_t max_users; /* stop after about this many (call again for more);
                          0: until none is left                           */
    ds_progress_fn progress; /* may be NULL: operation "purge", item
                                "users", unit "users", after each batch  */
    void *progress_ud;
} ds_gdpr_purge_options;
#define DS_GDPR_PURGE_OPTIONS_INIT DS_SIZED_INIT(ds_gdpr_purge_options)

/* Sets every member to its default (zero) and `size`. */
DS_EXPORT void ds_gdpr_purge_options_init(ds_gdpr_purge_options *opts);

/*
 * ds_gdpr_purge_deleted_users() in a loop: batch after batch (each its own
 * transaction that locks only its victims, SKIP LOCKED) until no user
 * soft-deleted before `deleted_before` is left, or max_users were erased.
 * `*purged` (may be NULL) receives how many users were erased, `*more`
 * (may be NULL) whether more may be waiting (max_users reached). The total
 * reported to the progress callback is counted once at the start.
 * Errors as ds_gdpr_purge_deleted_users(), plus DS_ERR_CANCELLED (the batches
 * done stay done; *purged says how many, *more is true) and DS_ERR_INVALID
 * (a bad `size`, batch_users or max_users).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_purge_deleted_users_ex(
    ds_pool *pool, ds_redis *redis, int64_t deleted_before,
    const ds_gdpr_purge_options *opts, int64_t *purged, bool *more, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_GDPR_H */
