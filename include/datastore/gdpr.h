/*
 * datastore/gdpr.h — erasure of a user's data (GDPR art. 17) and the
 * retention purge of soft-deleted users.
 *
 *   ds_gdpr_erase_report *rep;
 *   st = ds_gdpr_erase_user(pool, redis, user_id, NULL, &rep, &err);
 *   printf("%lld messages, %lld events, %lld redis keys\n",
 *          (long long)rep->messages, (long long)rep->analytics_events,
 *          (long long)rep->redis_keys);
 *   ds_gdpr_erase_report_free(rep);
 *
 * ds_gdpr_erase_user() hard-deletes every row of the user in every table (the
 * user, profile, auth sessions, conversations and their messages, service
 * connections, AI teams, per-user settings, memory facts and analytics
 * events, which have no foreign key) and reports per-table counts. The
 * tables that grow large (messages, memory facts, analytics events) are
 * emptied first in batches of short transactions, each locking only rows
 * of this user; then ONE statement erases everything left, user row
 * included, all or nothing. With a Redis handle it then removes the user's
 * Redis keys (session look-ups, cache entries, presence). Erasing is
 * idempotent: erasing an unknown or already erased id succeeds with zero
 * counts, so a call that failed half-way (a user with fewer rows, or a
 * database part committed before Redis failed) is simply repeated.
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

/* ------------------------------------------------------------------------
 * Options of the erase: batches and progress. A growable struct
 * (docs/abi.md): start from DS_GDPR_ERASE_OPTIONS_INIT or
 * ds_gdpr_erase_options_init(); NULL means all defaults.
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
 * Erases everything of `user_id` (see above). `redis` may be NULL; `opts`
 * may be NULL (defaults). *out (may be NULL) receives the counts, freed
 * with ds_gdpr_erase_report_free(). A progress callback that returns
 * non-zero stops between batches with DS_ERR_CANCELLED: the user is left
 * with fewer rows and nothing inconsistent, and calling again finishes.
 * Errors: DS_ERR_INVALID (NULL pool, user_id below 1, a bad opts->size or
 * batch_rows), DS_ERR_NOMEM, DS_ERR_CANCELLED, the pool's errors (the
 * batches done stay done; the final statement is all or nothing),
 * DS_ERR_REDIS (the database part is committed and *out filled; call again
 * to finish Redis).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_erase_user(
    ds_pool *pool, ds_redis *redis, int64_t user_id,
    const ds_gdpr_erase_options *opts, ds_gdpr_erase_report **out, ds_error *err);

/* Options of the retention purge. A growable struct (docs/abi.md): start
 * from DS_GDPR_PURGE_OPTIONS_INIT or ds_gdpr_purge_options_init(); NULL
 * means all defaults. */
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
 * Retention: erases every user soft-deleted before `deleted_before` (a
 * time: epoch microseconds; INT64_MIN: none, INT64_MAX: all), with all
 * their rows (analytics events included) and, given a Redis handle, their
 * Redis keys. Batch after batch, each its own transaction that locks only
 * its victims (SKIP LOCKED), until none is left or opts->max_users were
 * erased; run it from a scheduled job. `opts` may be NULL (defaults).
 * `*purged` (may be NULL) receives how many users were erased, `*more`
 * (may be NULL) whether more may be waiting (max_users reached, or
 * stopped). The total reported to the progress callback is counted once at
 * the start. Errors: DS_ERR_INVALID (NULL pool, a time PostgreSQL cannot
 * hold, a bad opts->size, batch_users or max_users), the pool's errors and
 * DS_ERR_CANCELLED (the batches done stay done; *purged says how many),
 * DS_ERR_REDIS (the *purged users are erased from the database, but not
 * all of their Redis keys).
 */
DS_EXPORT DS_NODISCARD ds_status ds_gdpr_purge_deleted_users(
    ds_pool *pool, ds_redis *redis, int64_t deleted_before,
    const ds_gdpr_purge_options *opts, int64_t *purged, bool *more, ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_GDPR_H */
