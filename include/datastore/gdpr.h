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

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_GDPR_H */
