/* The migration record (ds_schema_migrations): the runner's statements,
 * reading and verifying what was applied, and planning the next step. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/runner.h"

#define MODULE "migrate"

/* ---- statements --------------------------------------------------------- */


static const ds__stmt_def stmts[] = {
    [S_TRY_XACT_LOCK] = {"migrate.try_xact_lock",
                         "SELECT pg_try_advisory_xact_lock($1)", 1,
                         {DS_OID_INT8}, 1, {DS_OID_BOOL}},
    [S_TRY_SESSION_LOCK] = {"migrate.try_session_lock",
                            "SELECT pg_try_advisory_lock($1)", 1,
                            {DS_OID_INT8}, 1, {DS_OID_BOOL}},
    [S_SESSION_UNLOCK] = {"migrate.session_unlock",
                          "SELECT pg_advisory_unlock($1)", 1, {DS_OID_INT8},
                          1, {DS_OID_BOOL}},
    /* lock_timeout bounds the waits; statement_timeout (the pool's or the
     * role's, meant for application queries) must not cut a long migration
     * or backfill short. */
    /* ... and the settings migrations read (ds.embedding_dim and
     * ds.vector_backend, for 0003_memory_embeddings) ride along. */
    [S_SET_TIMEOUTS] = {"migrate.set_timeouts",
                            "SELECT set_config('lock_timeout', $1, $2), "
                            "set_config('statement_timeout', '0', $2), "
                            "set_config($3, $4, $2), set_config($5, $6, $2)",
                            6,
                            {DS_OID_TEXT, DS_OID_BOOL, DS_OID_TEXT,
                             DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT},
                            4,
                            {DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,
                             DS_OID_TEXT}},
    [S_BACKEND_PID] = {"migrate.backend_pid", "SELECT pg_backend_pid()", 0,
                       {0}, 1, {DS_OID_INT4}},
    [S_CREATE_TABLE] = {"migrate.create_table", BOOKKEEPING_DDL, 0, {0}, -1,
                        {0}},
    [S_APPLIED] = {"migrate.applied",
                   "SELECT version, name, checksum, no_transaction, "
                   "applied_at, duration_ms FROM ds_schema_migrations "
                   "ORDER BY version",
                   0,
                   {0},
                   6,
                   {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_BOOL,
                    DS_OID_TIMESTAMPTZ, DS_OID_INT8}},
    [S_RECORD] = {"migrate.record",
                  "INSERT INTO ds_schema_migrations (version, name, checksum, "
                  "no_transaction, duration_ms) VALUES ($1, $2, $3, $4, $5)",
                  5,
                  {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_BOOL,
                   DS_OID_INT8},
                  -1,
                  {0}},
    [S_UNRECORD] = {"migrate.unrecord",
                    "DELETE FROM ds_schema_migrations WHERE version = $1", 1,
                    {DS_OID_INT8}, -1, {0}},
    [S_MAINTAIN] = {"migrate.maintain",
                    "SELECT ds_analytics_ensure_partitions($1)", 1,
                    {DS_OID_INT4}, 1, {DS_OID_INT4}},
};

size_t ds__stmts_migrate(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

PGresult *ds__migrate_run_stmt(ds_conn *c, int which, const ds__bind *p,
                               ds_error *err) {
    return ds__stmt_run(c, &stmts[which], p, err);
}

/* A one-row, one-column result of `len` bytes, or NULL. */
const char *ds__migrate_single_value(const PGresult *r, int len) {
    if (PQntuples(r) != 1 || PQnfields(r) != 1 || PQgetisnull(r, 0, 0) ||
        PQgetlength(r, 0, 0) != len)
        return NULL;
    return PQgetvalue(r, 0, 0);
}

ds_status ds__migrate_run_bool(ds_conn *c, int which, const ds__bind *p,
                               bool *out, ds_error *err) {
    PGresult *r = ds__migrate_run_stmt(c, which, p, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    const char *v = ds__migrate_single_value(r, 1);
    ds_status st =
        v ? DS_OK
          : ds__error_set(err, DS_ERR_INTERNAL, "%s: unexpected result",
                          stmts[which].name);
    if (v)
        *out = v[0] != 0;
    PQclear(r);
    return st;
}

ds_status ds__migrate_run_command(ds_conn *c, int which, const ds__bind *p,
                                  ds_error *err) {
    PGresult *r = ds__migrate_run_stmt(c, which, p, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    PQclear(r);
    return DS_OK;
}

/* ---- errors --------------------------------------------------------------- */

void ds__migrate_error_append(ds_error *err, const char *fmt, ...)
    DS_PRINTF(2, 3);
void ds__migrate_error_append(ds_error *err, const char *fmt, ...) {
    if (!err)
        return;
    size_t used = strlen(err->message);
    if (used + 1 >= sizeof err->message)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message + used, sizeof err->message - used, fmt, ap);
    va_end(ap);
}

/* ---- the record -------------------------------------------------------------- */

void ds__applied_list_clear(ds__applied_list *list) {
    if (!list)
        return;
    for (size_t k = 0; k < list->count; k++)
        ds__free(list->rows[k].name);
    ds__free(list->rows);
    memset(list, 0, sizeof *list);
}

ds_status ds__migrate_read_applied(ds_conn *conn, bool missing_ok,
                                   ds__applied_list *out, ds_error *err) {
    memset(out, 0, sizeof *out);
    ds_error local = {0};
    PGresult *r = ds__migrate_run_stmt(conn, S_APPLIED, NULL, &local);
    if (!r) {
        if (missing_ok && strcmp(local.sqlstate, "42P01") == 0)
            return DS_OK; /* never migrated */
        if (err)
            *err = local;
        return local.code;
    }
    out->table_exists = true;
    int n = PQntuples(r);
    if (PQnfields(r) != 6) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "ds_schema_migrations: unexpected shape");
    }
    out->rows = ds__calloc((size_t)(n ? n : 1), sizeof *out->rows);
    if (!out->rows) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    }
    for (int i = 0; i < n; i++) {
        ds__applied *a = &out->rows[i];
        bool ok = PQgetlength(r, i, 0) == 8 && PQgetlength(r, i, 2) == 64 &&
                  PQgetlength(r, i, 3) == 1 && PQgetlength(r, i, 4) == 8 &&
                  PQgetlength(r, i, 5) == 8 && !PQgetisnull(r, i, 1);
        if (!ok) {
            PQclear(r);
            ds__applied_list_clear(out);
            return ds__error_set(err, DS_ERR_SCHEMA,
                                 "ds_schema_migrations: row %d is malformed",
                                 i + 1);
        }
        a->version = (int64_t)ds__get_be64(PQgetvalue(r, i, 0));
        a->name = ds__strndup(PQgetvalue(r, i, 1),
                              (size_t)PQgetlength(r, i, 1));
        if (!a->name) {
            PQclear(r);
            ds__applied_list_clear(out);
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "migrations: out of memory");
        }
        memcpy(a->checksum, PQgetvalue(r, i, 2), 64);
        a->checksum[64] = '\0';
        a->no_transaction = PQgetvalue(r, i, 3)[0] != 0;
        a->applied_at_us =
            ds__ts_from_pg((int64_t)ds__get_be64(PQgetvalue(r, i, 4)));
        a->duration_ms = (int64_t)ds__get_be64(PQgetvalue(r, i, 5));
        out->count++;
    }
    PQclear(r);
    return DS_OK;
}

static const ds__applied *find_applied(const ds__applied_list *a,
                                       int64_t version) {
    for (size_t k = 0; k < a->count; k++)
        if (a->rows[k].version == version)
            return &a->rows[k];
    return NULL;
}

int64_t ds__migrate_current_version(const ds__applied_list *a) {
    return a->count ? a->rows[a->count - 1].version : 0;
}

/* The rules that protect the history, checked before anything runs. */
ds_status ds__migrate_verify_history(const ds__migration_set *set,
                                     const ds__applied_list *applied,
                                     ds_error *err) {
    for (size_t k = 0; k < applied->count; k++) {
        const ds__applied *a = &applied->rows[k];
        const ds__migration_file *f = ds__migration_set_find(set, a->version);
        if (!f)
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%04lld_%s.up.sql: applied to the database "
                                 "but missing from the migrations",
                                 (long long)a->version, a->name);
        if (strcmp(f->name, a->name) != 0)
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: version %lld was applied as \"%s\"; "
                                 "an applied migration must not be renamed",
                                 f->up_file, (long long)a->version, a->name);
        if (!ds__migration_checksum_matches(f, a->name, a->checksum))
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: edited after it was applied (SHA-256 "
                                 "%.12s..., applied %.12s...); write a new "
                                 "migration instead",
                                 f->up_file, f->checksum, a->checksum);
    }
    int64_t current = ds__migrate_current_version(applied);
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        if (f->version >= current)
            break;
        if (!find_applied(applied, f->version)) {
            const ds__applied *newest = &applied->rows[applied->count - 1];
            return ds__error_set(err, DS_ERR_MIGRATION,
                                 "%s: never applied, but older than the "
                                 "newest applied migration %04lld_%s; give "
                                 "it a version above %lld",
                                 f->up_file, (long long)newest->version,
                                 newest->name, (long long)current);
        }
    }
    return DS_OK;
}

/* ---- planning ---------------------------------------------------------------- */


/* The next step towards `target` from a verified history: revert the
 * newest applied migration while it is above the target, else apply the
 * oldest pending one at or below it. */
bool ds__migrate_next_step(const ds__migration_set *set, const int64_t *applied,
                           size_t napplied, int64_t target, ds__step *out) {
    int64_t current = napplied ? applied[napplied - 1] : 0;
    if (current > target) {
        out->file = ds__migration_set_find(set, current);
        out->up = false;
        return out->file != NULL;
    }
    for (size_t k = 0; k < set->count; k++) {
        const ds__migration_file *f = &set->files[k];
        if (f->version > target)
            break;
        bool done = false;
        for (size_t j = 0; j < napplied && !done; j++)
            done = applied[j] == f->version;
        if (!done) {
            out->file = f;
            out->up = true;
            return true;
        }
    }
    return false;
}

int64_t *ds__migrate_versions_of(const ds__applied_list *a, size_t extra) {
    int64_t *v = ds__calloc(a->count + extra + 1, sizeof *v);
    if (v)
        for (size_t k = 0; k < a->count; k++)
            v[k] = a->rows[k].version;
    return v;
}

