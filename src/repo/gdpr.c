/* GDPR erase and the retention purge. Every table is named explicitly (so
 * the counts are exact) and everything happens in one statement: data-
 * modifying CTEs share one snapshot and commit together. The cascades the
 * schema declares then find nothing left to do. */
#include <string.h>

#include "core/growable.h"
#include "core/progress.h"
#include "datastore/gdpr.h"
#include "repo/repo_internal.h"

/* `ids` is a CTE or subquery yielding the user ids to erase. Messages go
 * by `= ANY (ARRAY(...))`, not `IN (...)`: as a semi-join, erasing a user
 * who owns many conversations hashed them and scanned all of messages;
 * as an array it is a probe of (conversation_id, id) per conversation. */
#define ERASE_CTES(ids)                                                        \
    "m AS (DELETE FROM messages WHERE conversation_id = ANY (ARRAY(SELECT "   \
    "id FROM conversations WHERE owner_id IN " ids ")) RETURNING 1), "        \
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

enum {
    S_ERASE,
    S_PURGE,
    S_ERASE_COUNT,
    S_ERASE_MESSAGES,
    S_ERASE_FACTS,
    S_ERASE_EVENTS,
    S_PURGE_COUNT
};

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
    /* ds_gdpr_erase_user: the rows of the user's largest tables, counted
     * for the progress total, then deleted a batch at a time (each batch
     * locks only rows of this user). */
    [S_ERASE_COUNT] = {"gdpr.erase_count",
                       "SELECT (SELECT count(*) FROM messages WHERE "
                       "conversation_id IN (SELECT id FROM conversations "
                       "WHERE owner_id = $1)), (SELECT count(*) FROM "
                       "memory_facts WHERE user_id = $1), (SELECT count(*) "
                       "FROM analytics_events WHERE user_id = $1)",
                       1, {I8}, 3, {I8, I8, I8}},
    /* A batch is gathered conversation by conversation, each through
     * (conversation_id, id), from the owner's conversations in the order
     * of their index: never a scan of messages (which a user owning much
     * of the table used to get, passing over every batch already deleted
     * on each later one). */
    [S_ERASE_MESSAGES] = {"gdpr.erase_messages",
                          "DELETE FROM messages WHERE id IN (SELECT m.id "
                          "FROM conversations c CROSS JOIN LATERAL (SELECT "
                          "id FROM messages WHERE conversation_id = c.id "
                          "LIMIT $2) m WHERE c.owner_id = $1 ORDER BY "
                          "c.updated_at DESC, c.id DESC LIMIT $2)",
                          2, {I8, DS_OID_INT4}, -1, {0}},
    /* In the order of (user_id, kind, id): an index-only walk of the
     * user's entries that stops at the batch. */
    [S_ERASE_FACTS] = {"gdpr.erase_facts",
                       "DELETE FROM memory_facts WHERE id IN (SELECT id FROM "
                       "memory_facts WHERE user_id = $1 ORDER BY user_id, "
                       "kind, id LIMIT $2)",
                       2, {I8, DS_OID_INT4}, -1, {0}},
    /* analytics_events has no key: a batch of row addresses (a TID scan
     * per partition; an address shared by two partitions is still one of
     * this user's rows, which are all going) */
    [S_ERASE_EVENTS] = {"gdpr.erase_events",
                        "DELETE FROM analytics_events WHERE user_id = $1 AND "
                        "ctid = ANY (ARRAY(SELECT ctid FROM analytics_events "
                        "WHERE user_id = $1 LIMIT $2))",
                        2, {I8, DS_OID_INT4}, -1, {0}},
    [S_PURGE_COUNT] = {"gdpr.purge_count",
                       "SELECT count(*) FROM users WHERE deleted_at IS NOT "
                       "NULL AND deleted_at < $1",
                       1, {DS_OID_TIMESTAMPTZ}, 1, {I8}},
};

size_t ds__stmts_gdpr(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

DS_EXPORT void ds_gdpr_erase_report_free(ds_gdpr_erase_report *report) {
    ds__free(report);
}

/* The one statement that erases every row of the user left; adds its
 * counts to `rep`. */
static ds_status erase_rest(ds_pool *pool, int64_t user_id,
                            ds_gdpr_erase_report *rep, ds_error *err) {
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_ERASE], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    int64_t *fields[] = {&rep->users,         &rep->profiles,
                         &rep->auth_sessions, &rep->conversations,
                         &rep->messages,      &rep->service_connections,
                         &rep->ai_teams,      &rep->app_settings,
                         &rep->memory_facts,  &rep->analytics_events};
    for (int i = 0; i < 10; i++)
        *fields[i] += ds__cell_int64(r, 0, i);
    PQclear(r);
    return DS_OK;
}

/* After the database part: the log line, then Redis. */
static ds_status erase_finish(const char *func, ds_redis *redis,
                              int64_t user_id, ds_gdpr_erase_report *rep,
                              ds_gdpr_erase_report **out, ds_error *err) {
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
                             func);
    }
    if (out)
        *out = rep;
    else
        ds__free(rep);
    return st;
}

DS_EXPORT void ds_gdpr_erase_options_init(ds_gdpr_erase_options *opts) {
    if (opts) {
        memset(opts, 0, sizeof *opts);
        opts->size = sizeof *opts;
    }
}

#define ERASE_DEFAULT_BATCH 5000

/* Deletes the user's rows of one table a batch (its own transaction) at a
 * time; `*count` and `*done` grow by each batch. */
static ds_status erase_batches(ds_pool *pool, int64_t user_id, int which,
                               const char *table, int batch, int64_t *count,
                               int64_t *done, int64_t total,
                               ds__progress *prog, ds_error *err) {
    for (;;) {
        ds__bind b;
        ds__bind_init(&b);
        ds__bind_int64(&b, user_id);
        ds__bind_int32(&b, batch);
        PGresult *r = ds__repo_exec(pool, false, &stmts[which], &b, err);
        if (!r)
            return err ? err->code : DS_ERR_DB;
        long n = strtol(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        *count += n;
        *done += n;
        if (n == 0)
            return DS_OK;
        ds_status st = ds__progress_report(
            prog, table, "rows", "rows", *done, total,
            "the user is partly erased; erase again to finish", err);
        if (st != DS_OK || n < batch)
            return st;
    }
}

/* The progress total of an erase: the rows of the tables emptied in
 * batches. */
static ds_status erase_total(ds_pool *pool, int64_t user_id, int64_t *total,
                             ds_error *err) {
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_ERASE_COUNT], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    *total = ds__cell_int64(r, 0, 0) + ds__cell_int64(r, 0, 1) +
             ds__cell_int64(r, 0, 2);
    PQclear(r);
    return DS_OK;
}

DS_EXPORT ds_status ds_gdpr_erase_user(ds_pool *pool, ds_redis *redis,
                                      int64_t user_id,
                                      const ds_gdpr_erase_options *opts,
                                      ds_gdpr_erase_report **out,
                                      ds_error *err) {
    DS_REPO_ERR(err);
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds_gdpr_erase_options o;
    ds_status checked = DS__IN(opts, &o, ds_gdpr_erase_options, err);
    if (checked != DS_OK)
        return checked;
    DS_CHECK_ARG(err, o.batch_rows >= 0 && o.batch_rows <= 100000,
                 "batch_rows must be 0 (default) to 100000");
    int batch = o.batch_rows ? o.batch_rows : ERASE_DEFAULT_BATCH;
    ds__progress prog;
    ds__progress_init(&prog, "erase", o.progress, o.progress_ud);
    ds_gdpr_erase_report *rep = ds__calloc(1, sizeof *rep);
    if (!rep)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", __func__);
    int64_t total = -1, done = 0;
    ds_status st = prog.fn ? erase_total(pool, user_id, &total, err) : DS_OK;
    if (st == DS_OK)
        st = erase_batches(pool, user_id, S_ERASE_MESSAGES, "messages", batch,
                           &rep->messages, &done, total, &prog, err);
    if (st == DS_OK)
        st = erase_batches(pool, user_id, S_ERASE_FACTS, "memory_facts",
                           batch, &rep->memory_facts, &done, total, &prog,
                           err);
    if (st == DS_OK)
        st = erase_batches(pool, user_id, S_ERASE_EVENTS, "analytics_events",
                           batch, &rep->analytics_events, &done, total, &prog,
                           err);
    ds_gdpr_erase_report before = *rep;
    if (st == DS_OK)
        st = erase_rest(pool, user_id, rep, err);
    if (st != DS_OK) {
        ds__free(rep);
        return st;
    }
    /* the final statement's rows (every table) finish the count */
    done += (rep->users + rep->profiles + rep->auth_sessions +
             rep->conversations + rep->messages + rep->service_connections +
             rep->ai_teams + rep->app_settings + rep->memory_facts +
             rep->analytics_events) -
            (before.messages + before.memory_facts + before.analytics_events);
    /* the work is done: a stop asked now has nothing left to stop */
    (void)ds__progress_report(&prog, "users", "rows", "rows", done, done, NULL,
                              NULL);
    return erase_finish(__func__, redis, user_id, rep, out, err);
}

/* One transaction: up to `limit` users soft-deleted before `deleted_before`
 * erased (victims locked SKIP LOCKED), then their Redis keys. */
static ds_status purge_batch(ds_pool *pool, ds_redis *redis,
                             int64_t deleted_before, int64_t limit, int *purged,
                             ds_error *err) {
    *purged = 0;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_ts(&b, deleted_before);
    ds__bind_int64(&b, limit);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_PURGE], &b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    int n = PQntuples(r);
    *purged = n;
    ds_status st = DS_OK;
    for (int i = 0; redis && i < n; i++) {
        int64_t keys;
        st = ds_redis_erase_user(redis, ds__cell_int64(r, i, 0), &keys, err);
        if (st != DS_OK) {
            ds__error_prefix(err,
                             "ds_gdpr_purge_deleted_users: %d users are erased from "
                             "the database but not all from Redis",
                             n);
            break;
        }
    }
    if (n)
        ds__log(DS_LOG_INFO, "gdpr", "purged %d soft-deleted users", n);
    PQclear(r);
    return st;
}

DS_EXPORT void ds_gdpr_purge_options_init(ds_gdpr_purge_options *opts) {
    if (opts) {
        memset(opts, 0, sizeof *opts);
        opts->size = sizeof *opts;
    }
}

DS_EXPORT ds_status ds_gdpr_purge_deleted_users(ds_pool *pool, ds_redis *redis,
                                               int64_t deleted_before,
                                               const ds_gdpr_purge_options *opts,
                                               int64_t *purged, bool *more,
                                               ds_error *err) {
    DS_REPO_ERR(err);
    if (purged)
        *purged = 0;
    if (more)
        *more = false;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_gdpr_purge_options o;
    ds_status checked = DS__IN(opts, &o, ds_gdpr_purge_options, err);
    if (checked != DS_OK)
        return checked;
    DS_CHECK_ARG(err, o.batch_users >= 0 && o.batch_users <= 10000,
                 "batch_users must be 0 (default) to 10000");
    DS_CHECK_ARG(err, o.max_users >= 0, "max_users must be >= 0");
    int64_t batch = o.batch_users ? o.batch_users : ds__repo_max_batch(pool);
    int64_t max_users = o.max_users;
    ds__progress prog;
    ds__progress_init(&prog, "purge", o.progress, o.progress_ud);
    int64_t total = -1, done = 0;
    ds_status st = DS_OK;
    if (prog.fn) {
        ds__bind b;
        ds__bind_init(&b);
        ds__bind_ts(&b, deleted_before);
        PGresult *r = ds__repo_exec(pool, false, &stmts[S_PURGE_COUNT], &b,
                                    err);
        if (!r)
            return err->code;
        total = ds__cell_int64(r, 0, 0);
        PQclear(r);
        if (max_users && max_users < total)
            total = max_users;
    }
    for (;;) {
        int64_t limit = batch;
        if (max_users && max_users - done < limit)
            limit = max_users - done;
        int n = 0;
        st = purge_batch(pool, redis, deleted_before, limit, &n, err);
        done += n;
        if (st != DS_OK)
            break;
        bool finished = n < limit;
        if (!finished && max_users && done >= max_users) {
            if (more)
                *more = true;
            finished = true;
        }
        if (finished) {
            /* the last report of a purge that ran out of users says
             * done == total; a stop asked now has nothing left to stop */
            (void)ds__progress_report(&prog, "users", "users", "users", done,
                                      n < limit ? done : total, NULL, NULL);
            break;
        }
        st = ds__progress_report(
            &prog, "users", "users", "users", done, total,
            "the users purged so far stay purged; run the purge again", err);
        if (st != DS_OK)
            break;
    }
    if (purged)
        *purged = done;
    if (more && st == DS_ERR_CANCELLED)
        *more = true; /* stopped: users may be waiting */
    return st;
}
