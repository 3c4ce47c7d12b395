/* Describing statements without running them, for the schema check: one
 * pipeline, one Parse + Describe + Sync group per statement, so there is
 * one round trip for the lot, an error in one group does not hide the
 * others, and each group holds on its own behind PgBouncer in transaction
 * mode. Unnamed statements leave nothing prepared behind. */
#include <stdio.h>
#include <string.h>

#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "pool/pool_internal.h"

static ds_status pipeline_failed(ds_conn *c, const char *context,
                                 const char *what, ds_error *err) {
    char ctx[96];
    snprintf(ctx, sizeof ctx, "%s: %s", context, what);
    c->discard = true;
    return ds__pg_error(c, NULL, NULL, ctx, err);
}

/* Reads one command's result (and the NULL after it). */
static PGresult *next_result(PGconn *pg) {
    PGresult *r = PQgetResult(pg);
    if (r) {
        PGresult *end = PQgetResult(pg);
        PQclear(end); /* NULL separates commands in pipeline mode */
    }
    return r;
}

static ds_status send_groups(ds_conn *c, const ds__stmt_def *const *defs,
                             size_t n, const char *context, ds_error *err) {
    for (size_t k = 0; k < n; k++)
        if (!PQsendPrepare(c->pg, "", defs[k]->sql, defs[k]->nparams,
                           defs[k]->param_types) ||
            !PQsendDescribePrepared(c->pg, "") || !PQpipelineSync(c->pg))
            return pipeline_failed(c, context, "send", err);
    return DS_OK;
}

static ds_status read_groups(ds_conn *c, const ds__stmt_def *const *defs,
                             size_t n, ds__describe_fn fn, void *ud,
                             const char *context, ds_error *err) {
    for (size_t k = 0; k < n; k++) {
        PGresult *prep = next_result(c->pg);
        PGresult *desc = next_result(c->pg);
        PGresult *sync = PQgetResult(c->pg);
        bool shape = prep && desc && sync &&
                     PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        if (shape && PQresultStatus(prep) == PGRES_FATAL_ERROR) {
            ds_error refused = {0};
            char ctx[160];
            snprintf(ctx, sizeof ctx, "%s: %s", context, defs[k]->name);
            ds__pg_error(c, NULL, prep, ctx, &refused);
            fn(ud, k, NULL, &refused);
        } else if (shape && PQresultStatus(prep) == PGRES_COMMAND_OK &&
                   PQresultStatus(desc) == PGRES_COMMAND_OK) {
            fn(ud, k, desc, NULL);
        } else {
            shape = false;
        }
        PQclear(prep);
        PQclear(desc);
        PQclear(sync);
        if (!shape)
            return pipeline_failed(c, context, "unexpected reply", err);
    }
    return DS_OK;
}

ds_status ds__conn_describe(ds_conn *c, const ds__stmt_def *const *defs,
                            size_t n, ds__describe_fn fn, void *ud,
                            const char *context, ds_error *err) {
    if (n == 0)
        return DS_OK;
    if (!PQenterPipelineMode(c->pg))
        return pipeline_failed(c, context, "pipeline", err);
    ds_status st = send_groups(c, defs, n, context, err);
    if (st == DS_OK)
        st = read_groups(c, defs, n, fn, ud, context, err);
    if (st == DS_OK && !PQexitPipelineMode(c->pg))
        st = pipeline_failed(c, context, "pipeline", err);
    return st;
}
