/* Several statements in one round trip (libpq's pipeline mode): for the
 * callers whose statements do not depend on each other's results, such as a
 * transaction's BEGIN and its first query, or its last query and COMMIT.
 * On a loaded machine a round trip costs more than the server's work on a
 * small query, so each one saved is most of a statement's time.
 *
 * Statements go through the connection's prepared statement cache, as with
 * ds__stmt_run: one seen for the first time is prepared in the same
 * pipeline (Parse, then Bind and Execute), later ones are only bound and
 * executed, so the server neither parses nor plans them again. Behind a
 * transaction pooler they go unnamed. The parameters are small (the
 * server reads them while the client still writes), the results may be
 * large. */
#include <stdio.h>
#include <string.h>

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

/* How statement k was sent: prepared under `name` (first prepared when
 * `fresh`), or unnamed when `name` is empty. */
typedef struct sent {
    char name[24];
    bool fresh;
} sent;

static bool send_one(ds_conn *c, const ds__pipe_stmt *ps, sent *how) {
    const ds__stmt_def *def = ps->def;
    const ds__bind *b = ps->bind;
    how->fresh = false;
    if (ps->unnamed ||
        !ds__conn_stmt_slot(c, def, how->name, &how->fresh)) {
        how->name[0] = '\0';
        return PQsendQueryParams(c->pg, def->sql, def->nparams,
                                 def->param_types, b ? b->values : NULL,
                                 b ? b->lengths : NULL,
                                 b ? b->formats : NULL, 1) == 1;
    }
    if (how->fresh && !PQsendPrepare(c->pg, how->name, def->sql,
                                     def->nparams, def->param_types))
        return false;
    return PQsendQueryPrepared(c->pg, how->name, def->nparams,
                               b ? b->values : NULL, b ? b->lengths : NULL,
                               b ? b->formats : NULL, 1) == 1;
}

static bool send_all(ds_conn *c, const ds__pipe_stmt *stmts, sent *how,
                     size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!send_one(c, &stmts[k], &how[k]))
            return false;
    return PQpipelineSync(c->pg) == 1 && PQflush(c->pg) == 0;
}

/* One result and the NULL that ends it; NULL when the pipeline broke. */
static PGresult *next_result(ds_conn *c) {
    PGresult *r = PQgetResult(c->pg);
    if (r)
        PQclear(PQgetResult(c->pg));
    return r;
}

/* The first failure: into `err`, named after its statement. A cached
 * statement the server no longer takes as it was prepared (26000, or
 * 0A000 after DDL) leaves the connection to be closed on release, so the
 * next lease prepares afresh. */
static void note_failure(ds_conn *c, const ds__pipe_stmt *s,
                         const PGresult *r, bool *failed, ds_status *st,
                         ds_error *err) {
    if (*failed)
        return;
    *failed = true;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state && (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0))
        c->discard = true;
    *st = ds__pg_error(c, NULL, r, "query", err);
    ds__error_prefix(err, "%s", s->def->name);
}

/* Reads statement k's results (its preparation first when fresh). `failed`
 * says whether an earlier statement failed (the server then skips this
 * one). False when the pipeline broke. */
static bool read_one(ds_conn *c, ds__pipe_stmt *s, const sent *how,
                     int64_t start_us, bool *failed, ds_status *st,
                     ds_error *err) {
    if (how->fresh) {
        PGresult *p = next_result(c);
        if (!p)
            return false;
        if (PQresultStatus(p) != PGRES_COMMAND_OK) {
            ds__conn_stmt_forget(c, s->def);
            if (PQresultStatus(p) != PGRES_PIPELINE_ABORTED)
                note_failure(c, s, p, failed, st, err);
        }
        PQclear(p);
    }
    PGresult *r = next_result(c);
    if (!r)
        return false;
    ExecStatusType rs = PQresultStatus(r);
    if (rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK) {
        s->result = r;
    } else if (rs == PGRES_PIPELINE_ABORTED && *failed) {
        PQclear(r);
        return true;
    } else {
        note_failure(c, s, r, failed, st, err);
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
    sent how[DS_PIPELINE_MAX];
    if (n > DS_PIPELINE_MAX)
        return ds__error_set(err, DS_ERR_INTERNAL,
                             "pipeline: %zu statements, at most %d", n,
                             DS_PIPELINE_MAX);
    if (!PQenterPipelineMode(c->pg))
        return broken(c, "enter", err);
    int64_t start_us = ds__now_us();
    if (!send_all(c, stmts, how, n)) {
        st = broken(c, "send", err);
        PQexitPipelineMode(c->pg);
        return st;
    }
    bool failed = false;
    for (size_t k = 0; k < n; k++)
        if (!read_one(c, &stmts[k], &how[k], start_us, &failed, &st,
                      err)) {
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
