/* GDPR erase and the retention purge. Every table is named explicitly (so
 * the counts are exact) and everything happens in one statement: data-
 * modifying CTEs share one snapshot and commit together. The cascades the
 * schema declares then find nothing left to do. */
#include <string.h>

#include "datastore/gdpr.h"
#include "repo/repo_internal.h"

/* `ids` is a CTE or subquery yielding the user ids to erase. */
#define ERASE_CTES(ids)                                                        \
    "m AS (DELETE FROM messages WHERE conversation_id IN (SELECT id FROM "    \
    "conversations WHERE owner_id IN " ids ") RETURNING 1), "                 \
    "c AS (DELETE FROM conversations WHERE owner_id IN " ids                  \
    " RETURNING 1), "                                                         \
    "s AS (DELETE FROM auth_sessions WHERE user_id IN " ids " RETURNING 1), " \
    "sc AS (DELETE FROM service_connections WHERE user_id IN " ids            \
    " RETURNING 1), "                                                         \
    "t AS (DELETE FROM ai_teams WHERE owner_id IN " ids " RETURNING 1), "     \
    "st AS (DELETE FROM app_settings WHERE user_id IN " ids " RETURNING 1), " \
    "mf AS (DELETE FROM memory_facts WHERE user_id IN " ids " RETURNING 1), " \
    "e AS (DELETE FROM analytics_events WHERE user_id IN " ids               \
    " RETURNING 1), "                                                         \
    "p AS (DELETE FROM profiles WHERE user_id IN " ids " RETURNING 1) "

#define COUNTS                                                                 \
    "(SELECT count(*) FROM p), (SELECT count(*) FROM s), "                    \
    "(SELECT count(*) FROM c), (SELECT count(*) FROM m), "                    \
    "(SELECT count(*) FROM sc), (SELECT count(*) FROM t), "                   \
    "(SELECT count(*) FROM st), (SELECT count(*) FROM mf), "                  \
    "(SELECT count(*) FROM e)"

#define I8 DS_OID_INT8

enum { S_ERASE, S_PURGE };

static const ds__stmt_def stmts[] = {
    [S_ERASE] = {"gdpr.erase",
                 "WITH u AS (DELETE FROM users WHERE id = $1 RETURNING id), "
                 ERASE_CTES("(SELECT $1)")
                 "SELECT (SELECT count(*) FROM u), " COUNTS,
                 1, {I8}, 10, {I8, I8, I8, I8, I8, I8, I8, I8, I8, I8}},
    /* Victims are locked and chosen first, then erased like above; the
     * ids come back for the Redis part. */
    [S_PURGE] = {"gdpr.purge",
                 "WITH v AS (SELECT id FROM users WHERE deleted_at IS NOT "
                 "NULL AND deleted_at < $1 ORDER BY deleted_at LIMIT $2 FOR "
                 "UPDATE SKIP LOCKED), u AS (DELETE FROM users WHERE id IN "
                 "(SELECT id FROM v) RETURNING id), "
                 ERASE_CTES("(SELECT id FROM v)")
                 "SELECT u.id, " COUNTS " FROM u",
                 2, {DS_OID_TIMESTAMPTZ, I8}, 10,
                 {I8, I8, I8, I8, I8, I8, I8, I8, I8, I8}},
};

size_t ds__stmts_gdpr(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

DS_EXPORT void ds_gdpr_erase_report_free(ds_gdpr_erase_report *report) {
    ds__free(report);
}

DS_EXPORT ds_status ds_gdpr_erase_user(ds_pool *pool, ds_redis *redis,
                                  int64_t user_id, ds_gdpr_erase_report **out,
                                  ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds_gdpr_erase_report *rep = ds__calloc(1, sizeof *rep);
    if (!rep)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", __func__);
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_ERASE], &b, err);
    if (!r) {
        ds__free(rep);
        return err ? err->code : DS_ERR_DB;
    }
    int64_t *fields[] = {&rep->users,         &rep->profiles,
                         &rep->auth_sessions, &rep->conversations,
                         &rep->messages,      &rep->service_connections,
                         &rep->ai_teams,      &rep->app_settings,
                         &rep->memory_facts,  &rep->analytics_events};
    for (int i = 0; i < 10; i++)
        *fields[i] = ds__cell_int64(r, 0, i);
    PQclear(r);
    ds__log(DS_LOG_INFO, "gdpr",
            "erased user %lld: %lld messages, %lld events",
            (long long)user_id, (long long)rep->messages,
            (long long)rep->analytics_events);
    ds_status st = DS_OK;
    if (redis) {
        st = ds_redis_erase_user(redis, user_id, &rep->redis_keys, err);
        if (st == DS_OK)
            rep->redis_erased = true;
        else
            ds__error_prefix(err,
                             "%s: the database rows are erased, Redis is not "
                             "(call again)",
                             __func__);
    }
    if (out)
        *out = rep;
    else
        ds__free(rep);
    return st;
}

DS_EXPORT ds_status ds_gdpr_purge_deleted_users(ds_pool *pool, ds_redis *redis,
                                          int64_t deleted_before, int64_t *purged,
                                          bool *more, ds_error *err) {
    DS_REPO_ERR(err);
    if (purged)
        *purged = 0;
    if (more)
        *more = false;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_ts(&b, deleted_before);
    ds__bind_int64(&b, ds__repo_max_batch(pool));
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_PURGE], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    int n = PQntuples(r);
    if (purged)
        *purged = n;
    if (more)
        *more = n >= ds__repo_max_batch(pool);
    ds_status st = DS_OK;
    for (int i = 0; redis && i < n; i++) {
        int64_t keys;
        st = ds_redis_erase_user(redis, ds__cell_int64(r, i, 0), &keys, err);
        if (st != DS_OK) {
            ds__error_prefix(err,
                             "%s: %d users are erased from the database but "
                             "not all from Redis",
                             __func__, n);
            break;
        }
    }
    if (n)
        ds__log(DS_LOG_INFO, "gdpr", "purged %d soft-deleted users", n);
    PQclear(r);
    return st;
}
