/* Read-your-writes: WAL positions as tokens, and read leases that have
 * replayed them. */
#include <string.h>

#include "datastore/sql.h"
#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "pool/pool_internal.h"

#define MODULE "pool"
#define CATCH_UP_POLL_US 5000

/* WAL positions as numbers (bytes since 0/0), which int8 holds for any
 * cluster younger than 8 exabytes of WAL. */
static const char SQL_INSERT_LSN[] =
    "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";
/* How far a server has replayed: a standby its replay position; a server
 * not in recovery (a promoted replica) has everything it ever received. */
static const char SQL_REPLAYED_LSN[] =
    "SELECT CASE WHEN pg_is_in_recovery() "
    "THEN coalesce((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, 0) "
    "ELSE (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 END";

static ds_status query_lsn(ds_conn *conn, const char *sql, uint64_t *out,
                           ds_error *err) {
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec(conn, sql, NULL, 0, &res, err);
    int64_t v = 0;
    if (st == DS_OK)
        st = ds_sql_result_int64(res, 0, 0, &v, err);
    ds_sql_result_free(res);
    if (st == DS_OK && v < 0)
        st = ds__error_set(err, DS_ERR_INTERNAL, "negative WAL position");
    *out = st == DS_OK ? (uint64_t)v : 0;
    return st;
}

DS_EXPORT ds_status ds_pool_conn_read_token(ds_conn *conn, ds_read_token *out,
                                       ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    memset(out, 0, sizeof *out);
    DS_CHECK_ARG(err, conn, "conn is NULL");
    if (ds_pool_conn_is_replica(conn))
        return ds__error_set(err, DS_ERR_INVALID,
                             "read token: take it on a primary connection, "
                             "where the write happened");
    return query_lsn(conn, SQL_INSERT_LSN, &out->lsn, err);
}

DS_EXPORT ds_status ds_pool_read_token(ds_pool *pool, ds_read_token *out,
                                       ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    memset(out, 0, sizeof *out);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_conn *conn;
    ds_status st = ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return st;
    st = ds_pool_conn_read_token(conn, out, err);
    ds_pool_release(conn);
    return st;
}

/* A replica lease that has replayed `lsn`, or NULL (none has, or none is
 * up). A primary lease handed out by ds_pool_acquire_read() (no replica up)
 * is returned as is: the primary has every write. */
static ds_conn *replica_caught_up(ds_pool *pool, uint64_t lsn, ds_error *err,
                                  ds_status *fatal) {
    size_t tries = pool->nreplicas;
    for (size_t i = 0; i < tries; i++) {
        ds_conn *c;
        ds_error local = {0};
        ds_status st = ds_pool_acquire_read(pool, &c, &local);
        if (st != DS_OK) {
            if (st == DS_ERR_CLOSED || st == DS_ERR_INVALID) {
                if (err)
                    *err = local;
                *fatal = st;
            }
            return NULL;
        }
        if (!ds_pool_conn_is_replica(c))
            return c;
        uint64_t replayed = 0;
        if (query_lsn(c, SQL_REPLAYED_LSN, &replayed, &local) == DS_OK &&
            replayed >= lsn)
            return c;
        ds_pool_release(c);
    }
    return NULL;
}

DS_EXPORT ds_status ds_pool_acquire_read_token(ds_pool *pool,
                                               const ds_read_token *token,
                                               int max_wait_ms, ds_conn **out,
                                               ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, max_wait_ms >= 0, "max_wait_ms is negative");
    if (!token || token->lsn == 0)
        return ds_pool_acquire_read(pool, out, err);
    if (pool->nreplicas == 0)
        return ds_pool_acquire(pool, out, err);
    int64_t deadline = ds__now_us() + (int64_t)max_wait_ms * 1000;
    for (;;) {
        ds_status fatal = DS_OK;
        ds_conn *c = replica_caught_up(pool, token->lsn, err, &fatal);
        if (fatal != DS_OK)
            return fatal;
        if (c) {
            *out = c;
            return DS_OK;
        }
        int64_t left = deadline - ds__now_us();
        if (left <= 0)
            break;
        ds__sleep_us(left < CATCH_UP_POLL_US ? left : CATCH_UP_POLL_US);
    }
    ds__log(DS_LOG_DEBUG, MODULE,
            "no replica has replayed the read token; reading from the primary");
    return ds_pool_acquire(pool, out, err);
}
