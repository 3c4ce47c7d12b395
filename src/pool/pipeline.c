/* Several statements in one round trip (libpq's pipeline mode): for the
 * callers whose statements do not depend on each other's results, such as a
 * transaction's BEGIN and its first query, or its last query and COMMIT.
 * On a loaded machine a round trip costs more than the server's work on a
 * small query, so each one saved is most of a statement's time.
 *
 * Statements go unnamed (Parse, Bind, Execute each), like ds__stmt_run
 * behind a transaction pooler: each is planned for its own parameters, and
 * nothing stays prepared. The parameters are small (the server reads them
 * while the client still writes), the results may be large. */
#include <stdio.h>

#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "pool/pool_internal.h"

static ds_status broken(ds_conn *c, const char *what, ds_error *err) {
    char ctx[64];
    snprintf(ctx, sizeof ctx, "pipeline: %s", what);
    c->discard = true;
    return ds__pg_error(c, NULL, NULL, ctx, err);
}

static ds_status check_binds(const ds__pipe_stmt *stmts, size_t n,
                             ds_error *err) {
    for (size_t k = 0; k < n; k++) {
        const ds__stmt_def *def = stmts[k].def;
        const ds__bind *b = stmts[k].bind;
        if (b && ds__bind_check(b, def->name, err) != DS_OK)
            return err ? err->code : DS_ERR_INVALID;
        int bound = b ? b->n : 0;
        if (bound != def->nparams)
            return ds__error_set(err, DS_ERR_INTERNAL,
                                 "%s: %d parameter(s) bound, the statement "
                                 "takes %d",
                                 def->name, bound, def->nparams);
    }
    return DS_OK;
}

static bool send_all(ds_conn *c, const ds__pipe_stmt *stmts, size_t n) {
    for (size_t k = 0; k < n; k++) {
        const ds__stmt_def *def = stmts[k].def;
        const ds__bind *b = stmts[k].bind;
        if (!PQsendQueryParams(c->pg, def->sql, def->nparams,
                               def->param_types, b ? b->values : NULL,
                               b ? b->lengths : NULL, b ? b->formats : NULL,
                               1))
            return false;
    }
    return PQpipelineSync(c->pg) == 1 && PQflush(c->pg) == 0;
}

/* Reads statement k's result and the NULL that ends it. `failed` says
 * whether an earlier statement failed (the server then skips this one).
 * False when the pipeline broke. */
static bool read_one(ds_conn *c, ds__pipe_stmt *s, int64_t start_us,
                     bool *failed, ds_status *st, ds_error *err) {
    PGresult *r = PQgetResult(c->pg);
    if (!r)
        return false;
    PQclear(PQgetResult(c->pg)); /* NULL: the end of this command */
    ExecStatusType rs = PQresultStatus(r);
    if (rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK) {
        s->result = r;
    } else if (rs == PGRES_PIPELINE_ABORTED && *failed) {
        PQclear(r);
        return true;
    } else {
        if (!*failed) {
            *failed = true;
            *st = ds__pg_error(c, NULL, r, "query", err);
            ds__error_prefix(err, "%s", s->def->name);
        }
        PQclear(r);
        r = NULL;
    }
    if (c->pool && c->pool->statement_hook)
        ds__conn_report_statement(c, s->def->name, s->def->sql, start_us,
                                  r, err);
    return true;
}

static void clear_results(ds__pipe_stmt *stmts, size_t n) {
    for (size_t k = 0; k < n; k++) {
        PQclear(stmts[k].result);
        stmts[k].result = NULL;
    }
}

ds_status ds__stmt_run_pipeline(ds_conn *c, ds__pipe_stmt *stmts, size_t n,
                                ds_error *err) {
    for (size_t k = 0; k < n; k++)
        stmts[k].result = NULL;
    ds_status st = check_binds(stmts, n, err);
    if (st != DS_OK || n == 0)
        return st;
    c->not_durable = false;
    if (!PQenterPipelineMode(c->pg))
        return broken(c, "enter", err);
    int64_t start_us = ds__now_us();
    if (!send_all(c, stmts, n)) {
        st = broken(c, "send", err);
        PQexitPipelineMode(c->pg);
        return st;
    }
    bool failed = false;
    for (size_t k = 0; k < n; k++)
        if (!read_one(c, &stmts[k], start_us, &failed, &st, err)) {
            clear_results(stmts, n);
            return broken(c, "reply", err);
        }
    PGresult *sync = PQgetResult(c->pg);
    bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced || !PQexitPipelineMode(c->pg)) {
        clear_results(stmts, n);
        return broken(c, "sync", err);
    }
    if (!failed)
        st = ds__conn_check_durable(c, "query", err);
    if (failed || st != DS_OK)
        clear_results(stmts, n);
    return st;
}
