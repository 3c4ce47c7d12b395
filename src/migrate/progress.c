/* What the runner and partition maintenance report to the options'
 * on_progress callback (see ds_progress in core.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"

void ds__migrate_progress_init(ds__progress *p, const char *operation,
                               const ds_migrate_options *opts) {
    ds__progress_init(p, operation, opts ? opts->on_progress : NULL,
                      opts ? opts->on_progress_ud : NULL);
}

int64_t ds__migrate_planned(const ds__migration_set *set,
                            const ds__applied_list *applied, int64_t target) {
    int64_t n = 0;
    for (size_t k = 0; k < applied->count; k++)
        n += applied->rows[k].version > target; /* to revert */
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        if (f->version > target)
            break;
        bool done = false;
        for (size_t j = 0; j < applied->count && !done; j++)
            done = applied->rows[j].version == f->version;
        n += !done; /* to apply */
    }
    return n;
}

ds_status ds__migrate_report_statement(ds__progress *p, const char *file,
                                       bool no_tx, int done, int total,
                                       ds_error *err) {
    char resume[400];
    snprintf(resume, sizeof resume,
             no_tx ? "the statements of %s that ran stay (it runs outside a "
                     "transaction and is written to run again); run the "
                     "migrations again to finish it"
                   : "%s was rolled back; run the migrations again",
             file);
    return ds__progress_report(p, file, "statement", "statements", done, total,
                               resume, err);
}

ds_status ds__migrate_report_file(ds__progress *p, int64_t done,
                                  int64_t total, ds_error *err) {
    return ds__progress_report(p, "", "files", "files", done, total,
                               "the migrations applied so far stay; run the "
                               "migrations again to apply the rest",
                               err);
}

/* ---- "-- ds:batch [TOTAL]": a backfill in batches ---------------------- */

#define BATCH_MARK "ds:batch"

ds_status ds__migrate_batch_check(const char *file, const char *text,
                                  const ds__sql_stmt *s, bool no_tx,
                                  ds_error *err) {
    const char *arg;
    size_t len;
    if (!ds__stmt_directive(text, s, BATCH_MARK, &arg, &len))
        return DS_OK;
    if (!no_tx)
        return ds__error_set(
            err, DS_ERR_MIGRATION,
            "%s:%d: -- " BATCH_MARK " needs a file that runs outside a "
            "transaction (first line \"" DS_MIGRATE_NO_TX_MARK "\"), so that "
            "each batch commits on its own",
            file, s->line);
    const char *w = s->word1;
    if (strcmp(w, "update") && strcmp(w, "delete") && strcmp(w, "insert") &&
        strcmp(w, "with"))
        return ds__error_set(err, DS_ERR_MIGRATION,
                             "%s:%d: -- " BATCH_MARK " repeats an UPDATE, "
                             "DELETE or INSERT until it changes no row, not "
                             "%s",
                             file, s->line, s->word1);
    return DS_OK;
}

ds_status ds__migrate_batch_begin(ds_conn *c, const char *file,
                                  const char *text, const ds__sql_stmt *s,
                                  ds__batch *b, ds_error *err) {
    memset(b, 0, sizeof *b);
    b->total = -1;
    b->file = file;
    b->line = s->line;
    const char *arg;
    size_t len;
    if (!ds__stmt_directive(text, s, BATCH_MARK, &arg, &len))
        return DS_OK;
    b->on = true;
    if (len == 0)
        return DS_OK;
    /* TOTAL: an expression counting the rows to do, for the progress total
     * (evaluated once, before the first batch) */
    char *q = ds__malloc(len + 40);
    if (!q)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    snprintf(q, len + 40, "SELECT (%.*s)::bigint::text", (int)len, arg);
    PGresult *res = ds__conn_simple(c, q);
    ds__free(q);
    ds_status st = DS_OK;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK ||
        PQntuples(res) != 1 || PQnfields(res) != 1) {
        char where[320];
        snprintf(where, sizeof where, "%s:%d: in the " BATCH_MARK " total",
                 file, s->line);
        st = ds__pg_error(c, NULL, res, where, err);
        if (st != DS_ERR_CONNECTION && err)
            err->code = st = DS_ERR_MIGRATION;
    } else if (!PQgetisnull(res, 0, 0)) {
        b->total = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (b->total < 0)
            b->total = 0;
    }
    PQclear(res);
    return st;
}

ds_status ds__migrate_batch_step(ds__progress *p, ds__batch *b,
                                 const PGresult *res, bool *again,
                                 ds_error *err) {
    *again = false;
    const char *n = PQcmdTuples((PGresult *)res);
    if (!n || !*n)
        return ds__error_set(err, DS_ERR_MIGRATION,
                             "%s:%d: -- " BATCH_MARK ": the statement reports "
                             "no row count (%s)",
                             b->file, b->line, PQcmdStatus((PGresult *)res));
    int64_t rows = strtoll(n, NULL, 10);
    if (rows == 0)
        return DS_OK;
    b->done += rows;
    b->batches++;
    /* a statement whose WHERE does not leave out the rows it did would
     * run for ever */
    if (b->total >= 0 && b->done > 2 * b->total + 100000)
        return ds__error_set(err, DS_ERR_MIGRATION,
                             "%s:%d: -- " BATCH_MARK ": %lld rows changed for "
                             "an expected %lld: the statement must leave out "
                             "the rows it already did (WHERE ... IS NULL)",
                             b->file, b->line, (long long)b->done,
                             (long long)b->total);
    char item[300];
    snprintf(item, sizeof item, "%s:%d", b->file, b->line);
    *again = true;
    return ds__progress_report(p, item, "backfill", "rows", b->done, b->total,
                               "the batches done stay; run the migrations "
                               "again to continue the backfill",
                               err);
}
