/* The dry run: the exact script each step would run, nothing applied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/runner.h"

#define MODULE "migrate"
#include "core/strbuf.h"
#include "memory/memory_internal.h"

/* ---- dry run --------------------------------------------------------------- */


/* Copies a file into the dry-run script; a statement under a
 * "-- ds:when EXPR" line becomes psql's \gset / \if, so that the script
 * still runs as the runner would run it. */
typedef struct dry_file {
    ds__strbuf *b;
    const char *sql;
    size_t done; /* bytes of sql copied so far */
} dry_file;

static ds_status dry_stmt(void *ud, const ds__sql_stmt *st, ds_error *err) {
    (void)err;
    dry_file *d = ud;
    const char *expr;
    size_t elen;
    if (!ds__stmt_when(d->sql, st, &expr, &elen))
        return DS_OK;
    size_t start = (size_t)(st->text - d->sql);
    ds__strbuf_add(d->b, d->sql + d->done, start - d->done);
    static const char open1[] = "SELECT (";
    static const char open2[] = ")::boolean AS ds_when \\gset\n\\if :ds_when\n";
    static const char close[] = "\n\\endif";
    ds__strbuf_add(d->b, open1, sizeof open1 - 1);
    ds__strbuf_add(d->b, expr, elen);
    ds__strbuf_add(d->b, open2, sizeof open2 - 1);
    ds__strbuf_add(d->b, st->text, st->len);
    ds__strbuf_add(d->b, close, sizeof close - 1);
    d->done = start + st->len;
    return DS_OK;
}

/* The script that the step runs, as one could feed it to psql. */
static ds_status dry_script(const ds__runner *r, const ds__step *s,
                            bool create_table, ds__strbuf *b) {
    const ds__migration_file *f = s->file;
    bool no_tx = s->up ? f->up_no_tx : f->down_no_tx;
    char lt[32];
    ds__migrate_lock_timeout_text(r, lt, sizeof lt);
    ds__strbuf_printf(b, "-- %s: version %lld %s, %s\n",
                      ds__migrate_step_file(s), (long long)f->version,
                      s->up ? "up" : "down",
                      no_tx ? "outside a transaction" : "in one transaction");
    if (no_tx)
        ds__strbuf_printf(b,
                  "SELECT pg_advisory_lock(%lld);\nSET lock_timeout = '%s';\n"
                  "SET statement_timeout = 0;\n",
                  (long long)DS_MIGRATE_LOCK_KEY, lt);
    else
        ds__strbuf_printf(b,
                  "BEGIN;\nSELECT pg_advisory_xact_lock(%lld);\n"
                  "SET LOCAL lock_timeout = '%s';\n"
                  "SET LOCAL statement_timeout = 0;\n",
                  (long long)DS_MIGRATE_LOCK_KEY, lt);
    ds__migration_setting set[2];
    const ds__pool_settings *ps = ds__pool_settings_get(r->pool);
    ds__memory_migration_settings(ps->embedding_dim, ps->vector_backend, set);
    for (int i = 0; i < 2; i++)
        ds__strbuf_printf(b, "SET %s%s = '%s';\n", no_tx ? "" : "LOCAL ",
                          set[i].name, set[i].value);
    if (create_table)
        ds__strbuf_printf(b, "%s;\n", BOOKKEEPING_DDL);
    const char *sql = s->up ? f->up : f->down;
    size_t len = s->up ? f->up_len : f->down_len;
    dry_file d = {b, sql, 0};
    ds_error ignored = {0};
    if (ds__sql_split(ds__migrate_step_file(s), sql, len, dry_stmt, &d,
                      &ignored) != DS_OK)
        d.done = 0; /* unsplittable: shown as it is (the run refuses it) */
    ds__strbuf_add(b, sql + d.done, len - d.done);
    if (len && sql[len - 1] != '\n')
        ds__strbuf_add(b, "\n", 1);
    if (s->up)
        ds__strbuf_printf(b,
                  "INSERT INTO ds_schema_migrations (version, name, checksum, "
                  "no_transaction) VALUES (%lld, '%s', '%s', %s);\n",
                  (long long)f->version, f->name, f->checksum,
                  f->up_no_tx ? "true" : "false");
    else
        ds__strbuf_printf(
            b, "DELETE FROM ds_schema_migrations WHERE version = %lld;\n",
            (long long)f->version);
    ds__strbuf_printf(
        b, no_tx ? "SELECT pg_advisory_unlock(%lld);\n" : "COMMIT;\n",
        (long long)DS_MIGRATE_LOCK_KEY);
    return b->failed ? DS_ERR_NOMEM : DS_OK;
}

ds_status ds__migrate_dry_run(ds__runner *r, int64_t target, int steps,
                              int *changed, ds_error *err) {
    ds__applied_list applied = {0};
    ds_status st = ds__migrate_read_applied(r->conn, true, &applied, err);
    if (st == DS_OK)
        st = ds__migrate_verify_history(r->set, &applied, err);
    if (st != DS_OK) {
        ds__applied_list_clear(&applied);
        return st;
    }
    if (steps > 0)
        target = applied.count > (size_t)steps
                     ? applied.rows[applied.count - (size_t)steps - 1].version
                     : 0;
    int64_t *vers = ds__migrate_versions_of(&applied, r->set->count);
    size_t n = applied.count;
    bool create_table = !applied.table_exists;
    ds__applied_list_clear(&applied);
    if (!vers)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    ds__step s;
    while (st == DS_OK && ds__migrate_next_step(r->set, vers, n, target, &s)) {
        ds__strbuf b = {0};
        if (dry_script(r, &s, create_table, &b) != DS_OK) {
            st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
        } else {
            ds__migrate_emit(r, DS_MIGRATE_EVENT_SQL, s.file, s.up, 0, b.s);
            (*changed)++;
        }
        ds__free(b.s);
        create_table = false;
        if (s.up)
            vers[n++] = s.file->version; /* versions stay ascending */
        else
            n--;
    }
    ds__free(vers);
    return st;
}
