/*
 * datastore/tx.h — transactions over the pool: ds_tx_run() leases a
 * connection, runs a function between BEGIN and COMMIT and retries
 * serialization failures and deadlocks.
 *
 * Thread-safety: ds_tx_run() may be called from any thread on a shared
 * pool; the connection it passes to `fn` is that call's alone.
 */
#ifndef DATASTORE_TX_H
#define DATASTORE_TX_H

#include <stdbool.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_isolation {
    DS_ISOLATION_DEFAULT = 0, /* the server's default (READ COMMITTED)   */
    DS_ISOLATION_READ_COMMITTED,
    DS_ISOLATION_REPEATABLE_READ,
    DS_ISOLATION_SERIALIZABLE
} ds_isolation;

typedef struct ds_tx_options {
    size_t size; /* growable, caller-allocated: set by DS_TX_OPTIONS_INIT */
    ds_isolation isolation;
    bool read_only;
    /* Retries of a serialization failure or deadlock: 0 the pool's
     * tx_max_retries (default 5), > 0 this many, DS_TX_NO_RETRY none. */
    int max_retries;
} ds_tx_options;
#define DS_TX_NO_RETRY DS_NONE
#define DS_TX_OPTIONS_INIT DS_SIZED_INIT(ds_tx_options)

/* Body of a transaction: return DS_OK to commit, anything else to roll
 * back. It may run more than once, so keep side effects outside the
 * database idempotent. */
typedef ds_status (*ds_tx_fn)(ds_conn *conn, void *ud, ds_error *err);

/*
 * Leases a connection, runs `fn` between BEGIN and COMMIT, rolls back when
 * it fails, and retries with jittered exponential backoff when the failure
 * is a serialization failure (40001), a deadlock (40P01) or a connection
 * lost before COMMIT was sent. `opts` may be NULL. Returns fn's error (or
 * the server's) after the last attempt. A COMMIT whose wait for the
 * synchronous standby was cancelled returns DS_ERR_NOT_DURABLE (see
 * core.h) and is not retried here: the transaction did commit.
 */
DS_EXPORT DS_NODISCARD ds_status ds_tx_run(ds_pool *pool,
                                           const ds_tx_options *opts,
                                           ds_tx_fn fn, void *ud,
                                           ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_TX_H */
