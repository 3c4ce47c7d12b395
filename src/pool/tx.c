/* ds_tx_run(): BEGIN, the caller's body, COMMIT, with retries for the
 * failures that PostgreSQL itself says are worth repeating. */
#include <stdio.h>
#include <string.h>

#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "core/growable.h"
#include "datastore/tx.h"
#include "pool/pool_internal.h"

static const char *isolation_sql(ds_isolation iso) {
    switch (iso) {
    case DS_ISOLATION_READ_COMMITTED: return " ISOLATION LEVEL READ COMMITTED";
    case DS_ISOLATION_REPEATABLE_READ: return " ISOLATION LEVEL REPEATABLE READ";
    case DS_ISOLATION_SERIALIZABLE: return " ISOLATION LEVEL SERIALIZABLE";
    default: return "";
    }
}

/* 40001 and 40P01 are the server telling us to try again; a connection
 * lost before COMMIT was sent cannot have committed. */
static bool worth_retrying(const ds_error *e, bool commit_sent) {
    if (strcmp(e->sqlstate, "40001") == 0 || strcmp(e->sqlstate, "40P01") == 0)
        return true;
    return e->code == DS_ERR_CONNECTION && !commit_sent;
}

static void backoff(int attempt) {
    /* Full jitter over 2 ms * 2^attempt, capped at 250 ms. */
    int64_t cap = INT64_C(2000) << (attempt < 7 ? attempt : 7);
    if (cap > 250000)
        cap = 250000;
    ds__sleep_us(1000 + (int64_t)ds__random_uniform((uint32_t)cap));
}

static ds_status run_once(ds_pool *pool, const ds_tx_options *opts,
                          ds_tx_fn fn, void *ud, bool *commit_sent,
                          ds_error *err) {
    ds_conn *conn;
    ds_status st = ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return st;
    char begin[160];
    int n = snprintf(begin, sizeof begin, "BEGIN%s%s",
                     isolation_sql(opts->isolation),
                     opts->read_only ? " READ ONLY" : "");
    /* Behind a transaction pooler SET LOCAL is the only safe way to give
     * the transaction a statement timeout; it rides in the same round
     * trip as BEGIN. */
    if (pool->pooler && pool->statement_timeout_ms > 0)
        snprintf(begin + n, sizeof begin - (size_t)n,
                 "; SET LOCAL statement_timeout = %d",
                 pool->statement_timeout_ms);
    st = ds__conn_exec_simple(conn, begin, err);
    if (st == DS_OK) {
        ds_error body_err = {0};
        st = fn(conn, ud, &body_err);
        if (st != DS_OK) {
            if (body_err.code == DS_OK)
                ds__error_set(&body_err, st,
                              "transaction body returned %s",
                              ds_status_str(st));
            if (err)
                *err = body_err;
        } else if (PQtransactionStatus(conn->pg) == PQTRANS_INERROR) {
            st = ds__error_set(err, DS_ERR_DB,
                               "transaction body returned DS_OK after a "
                               "statement failed; rolled back");
        } else {
            *commit_sent = true;
            conn->not_durable = false;
            PGresult *r = PQexec(conn->pg, "COMMIT");
            if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
                st = ds__pg_error(conn, NULL, r, "commit", err);
                if (st == DS_ERR_CONNECTION && err) {
                    err->retryable = false;
                    ds__error_prefix(err, "outcome unknown");
                }
            } else if (strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
                st = ds__error_set(err, DS_ERR_DB,
                                   "commit: the transaction was rolled back");
            } else {
                st = ds__conn_check_durable(conn, "commit", err);
            }
            PQclear(r);
        }
    }
    /* release rolls back whatever is still open */
    ds_pool_release(conn);
    return st;
}

DS_EXPORT ds_status ds_tx_run(ds_pool *pool, const ds_tx_options *opts,
                              ds_tx_fn fn, void *ud, ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, fn, "fn is NULL");
    ds_tx_options o = DS_TX_OPTIONS_INIT;
    ds_status checked = DS__IN(opts, &o, ds_tx_options, err);
    if (checked != DS_OK)
        return checked;
    opts = &o;
    DS_CHECK_ARG(err, opts->isolation >= DS_ISOLATION_DEFAULT &&
                          opts->isolation <= DS_ISOLATION_SERIALIZABLE,
                 "unknown isolation level");
    DS_CHECK_ARG(err, opts->max_retries >= DS_TX_NO_RETRY,
                 "max_retries is negative (DS_TX_NO_RETRY: none; 0: the pool's)");
    int max_retries = opts->max_retries == 0 ? pool->tx_max_retries
                      : opts->max_retries == DS_TX_NO_RETRY ? 0
                                                            : opts->max_retries;
    for (int attempt = 0;; attempt++) {
        ds_error local = {0};
        bool commit_sent = false;
        ds_status st = run_once(pool, opts, fn, ud, &commit_sent, &local);
        if (st == DS_OK)
            return DS_OK;
        if (attempt >= max_retries || !worth_retrying(&local, commit_sent)) {
            if (err)
                *err = local;
            return st;
        }
        ds__log(DS_LOG_DEBUG, "tx", "retrying after %s (attempt %d of %d)",
                local.sqlstate[0] ? local.sqlstate : ds_status_str(st),
                attempt + 1, max_retries);
        backoff(attempt);
    }
}
