/*
 * transactions: the pool, ds_tx_run() with automatic retries, the raw SQL
 * escape hatch with typed parameters and results, replica reads and stats.
 *
 *   DATABASE_URL=... [DATABASE_REPLICA_URLS=...] ./transactions
 */
#include <datastore/datastore.h>
#include <stdio.h>

typedef struct transfer {
    int64_t from, to, amount;
} transfer;

/* The body may run more than once (serialization failures are retried), so
 * it only touches the database. Returning an error rolls back. */
static ds_status do_transfer(ds_conn *conn, void *ud, ds_error *err) {
    const transfer *t = ud;
    ds_sql_param debit[] = {ds_sql_param_int64(t->amount), ds_sql_param_int64(t->from)};
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec(conn,
                           "UPDATE example_accounts SET balance = balance - $1 "
                           "WHERE id = $2 AND balance >= $1",
                           debit, 2, &res, err);
    if (st != DS_OK)
        return st;
    int64_t changed = ds_sql_result_affected(res);
    ds_sql_result_free(res);
    if (changed != 1) {
        err->code = DS_ERR_CONFLICT;
        snprintf(err->message, sizeof err->message,
                 "account %lld has less than %lld", (long long)t->from,
                 (long long)t->amount);
        return DS_ERR_CONFLICT;
    }
    ds_sql_param credit[] = {ds_sql_param_int64(t->amount), ds_sql_param_int64(t->to)};
    return ds_sql_exec(conn,
                   "UPDATE example_accounts SET balance = balance + $1 "
                   "WHERE id = $2",
                   credit, 2, NULL, err);
}

static ds_status print_balances(ds_pool *pool, ds_error *err) {
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec_pool(pool,
                                "SELECT id, balance FROM example_accounts "
                                "ORDER BY id",
                                NULL, 0, &res, err);
    for (int row = 0; st == DS_OK && row < ds_sql_result_rows(res); row++) {
        int64_t id, balance;
        st = ds_sql_result_int64(res, row, 0, &id, err);
        if (st == DS_OK)
            st = ds_sql_result_int64(res, row, 1, &balance, err);
        if (st == DS_OK)
            printf("  account %lld: %lld\n", (long long)id, (long long)balance);
    }
    ds_sql_result_free(res);
    return st;
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_conn *reader = NULL;
    ds_sql_result *res = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        goto out;
    if (ds_sql_exec_pool(pool,
                     "CREATE TABLE IF NOT EXISTS example_accounts "
                     "(id int8 PRIMARY KEY, balance int8 NOT NULL)",
                     NULL, 0, NULL, &err) != DS_OK ||
        ds_sql_exec_pool(pool,
                     "INSERT INTO example_accounts VALUES (1, 100), (2, 0) "
                     "ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance",
                     NULL, 0, NULL, &err) != DS_OK)
        goto out;

    ds_tx_options serializable = DS_TX_OPTIONS_INIT;
    serializable.isolation = DS_ISOLATION_SERIALIZABLE; /* retries: the pool's */
    transfer ok = {1, 2, 30};
    if (ds_tx_run(pool, &serializable, do_transfer, &ok, &err) != DS_OK)
        goto out;
    printf("moved 30 from account 1 to account 2:\n");
    if (print_balances(pool, &err) != DS_OK)
        goto out;

    transfer too_much = {2, 1, 500};
    ds_status st = ds_tx_run(pool, &serializable, do_transfer, &too_much, &err);
    if (st != DS_ERR_CONFLICT) {
        fprintf(stderr, "expected a refused transfer\n");
        goto out;
    }
    printf("refused: %s (rolled back, balances unchanged)\n", err.message);

    /* Reads that tolerate lag can go to a replica (or the primary when no
     * replica is configured or reachable). */
    if (ds_pool_acquire_read(pool, &reader, &err) != DS_OK ||
        ds_sql_exec(reader, "SELECT pg_is_in_recovery()", NULL, 0, &res, &err) != DS_OK)
        goto out;
    bool on_replica = false;
    if (ds_sql_result_bool(res, 0, 0, &on_replica, &err) != DS_OK)
        goto out;
    printf("read connection is on the %s\n", on_replica ? "replica" : "primary");

    ds_pool_stats stats = DS_POOL_STATS_INIT;
    if (ds_pool_stats_get(pool, &stats, &err) != DS_OK)
        goto out;
    printf("pool: %d open, %d idle, %llu acquires, p99 wait %lld us\n",
           stats.connections, stats.idle, (unsigned long long)stats.acquires,
           (long long)stats.acquire_wait_p99_us);
    if (ds_sql_exec_pool(pool, "DROP TABLE example_accounts", NULL, 0, NULL, &err) != DS_OK)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "transactions: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_sql_result_free(res);
    ds_pool_release(reader);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
