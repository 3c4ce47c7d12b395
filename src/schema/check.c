/*
 * ds_migrate_check_schema(): is the live database the one this build was written
 * against? The version and the applied history come from the migration
 * record; every registered statement is then prepared (unnamed, with the
 * parameter types the C code binds) and described, and the result columns
 * are compared with what the C code decodes.
 *
 * The statements go out BATCH at a time through ds__conn_describe(): one
 * pipeline round trip per batch, holding behind PgBouncer in transaction
 * mode, leaving nothing prepared behind.
 */
#include <stdio.h>
#include <string.h>

#include "memory/memory_internal.h"
#include "migrate/migrate_internal.h"

#define MODULE "schema"
#define BATCH 64 /* groups in flight before reading their results */

static const ds__stmt_def stmts[] = {
    {"schema.type_name", "SELECT format_type($1, NULL)", 1, {DS_OID_OID}, 1,
     {DS_OID_TEXT}},
};

static size_t stmts_schema(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

/* "timestamp with time zone" for 1184; "oid 123" when the lookup fails. */
static void type_name(ds_conn *c, Oid oid, char *buf, size_t cap) {
    snprintf(buf, cap, "oid %u", (unsigned)oid);
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int32(&b, (int32_t)oid); /* an oid travels as 4 bytes */
    ds_error ignore = {0};
    PGresult *r = ds__stmt_run(c, &stmts[0], &b, &ignore);
    if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        snprintf(buf, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- the statements to check ------------------------------------------ */

typedef struct def_list {
    const ds__stmt_def **defs;
    size_t n;
} def_list;

static ds_status collect(const ds__stmt_table *tables, def_list *out,
                         ds_error *err) {
    size_t total = 0;
    for (const ds__stmt_table *t = tables; t->module; t++) {
        const ds__stmt_def *defs;
        total += t->get ? t->get(&defs) : 0;
    }
    out->defs = ds__calloc(total ? total : 1, sizeof *out->defs);
    if (!out->defs)
        return ds__error_set(err, DS_ERR_NOMEM, "schema check: out of memory");
    for (const ds__stmt_table *t = tables; t->module; t++) {
        const ds__stmt_def *defs = NULL;
        size_t n = t->get ? t->get(&defs) : 0;
        for (size_t k = 0; k < n; k++) {
            const ds__stmt_def *d = &defs[k];
            if (!d->name || !d->sql || d->nparams < 0 ||
                d->nparams > DS_STMT_MAX_PARAMS || d->ncols < -1 ||
                d->ncols > DS_STMT_MAX_COLS)
                return ds__error_set(err, DS_ERR_INTERNAL,
                                     "schema check: module %s: statement %zu "
                                     "(%s) is malformed",
                                     t->module, k + 1,
                                     d->name ? d->name : "unnamed");
            for (size_t j = 0; j < out->n; j++)
                if (strcmp(out->defs[j]->name, d->name) == 0)
                    return ds__error_set(err, DS_ERR_INTERNAL,
                                         "schema check: two statements are "
                                         "named %s",
                                         d->name);
            out->defs[out->n++] = d;
        }
    }
    return DS_OK;
}

/* ---- comparing -------------------------------------------------------------- */

typedef struct outcome {
    int mismatches;
    ds_error first;
} outcome;

static void mismatch(outcome *o, ds_error *e) {
    ds__log(DS_LOG_ERROR, MODULE, "%s", e->message);
    if (o->mismatches++ == 0)
        o->first = *e;
}

/* Describe of one statement against its definition. Type names are looked
 * up after the pipeline, so only the OIDs are noted here. */
typedef struct finding {
    const ds__stmt_def *def;
    bool param;     /* a parameter, else a result column */
    int index;      /* 0-based */
    Oid want, got;
    char column[64];
    char text[DS_ERROR_MESSAGE_MAX]; /* a complete message, or "" */
    char sqlstate[6];                /* the server's, when it refused */
} finding;

static bool compare(const ds__stmt_def *d, const PGresult *desc, finding *f) {
    memset(f, 0, sizeof *f);
    f->def = d;
    int np = PQnparams(desc), nf = PQnfields(desc);
    if (np != d->nparams) {
        snprintf(f->text, sizeof f->text,
                 "schema check: %s: the statement takes %d parameter(s), the "
                 "code binds %d",
                 d->name, np, d->nparams);
        return false;
    }
    for (int i = 0; i < np; i++) {
        Oid got = PQparamtype(desc, i);
        if (d->param_types[i] && got != d->param_types[i]) {
            f->param = true;
            f->index = i;
            f->want = d->param_types[i];
            f->got = got;
            return false;
        }
    }
    if (d->ncols < 0 && nf > 0) {
        snprintf(f->text, sizeof f->text,
                 "schema check: %s: returns %d column(s), the code expects "
                 "no rows",
                 d->name, nf);
        return false;
    }
    if (d->ncols >= 0 && nf != d->ncols) {
        snprintf(f->text, sizeof f->text,
                 "schema check: %s: returns %d column(s), the code decodes %d",
                 d->name, nf, d->ncols);
        return false;
    }
    for (int i = 0; i < nf; i++) {
        Oid got = PQftype(desc, i);
        /* 0: a type without a fixed OID (an extension's, e.g. vector) */
        if (d->col_types[i] && got != d->col_types[i]) {
            f->index = i;
            f->want = d->col_types[i];
            f->got = got;
            snprintf(f->column, sizeof f->column, "%s", PQfname(desc, i));
            return false;
        }
    }
    return true;
}

static void report(ds_conn *c, finding *f, outcome *o) {
    ds_error e = {0};
    if (f->text[0]) {
        ds__error_set(&e, DS_ERR_SCHEMA, "%s", f->text);
        memcpy(e.sqlstate, f->sqlstate, sizeof e.sqlstate);
    } else {
        char want[96], got[96];
        type_name(c, f->want, want, sizeof want);
        type_name(c, f->got, got, sizeof got);
        if (f->param)
            ds__error_set(&e, DS_ERR_SCHEMA,
                          "schema check: %s: parameter $%d is %s in the "
                          "database, the code binds %s",
                          f->def->name, f->index + 1, got, want);
        else
            ds__error_set(&e, DS_ERR_SCHEMA,
                          "schema check: %s: result column %d \"%s\" is %s in "
                          "the database, the code decodes %s",
                          f->def->name, f->index + 1, f->column, got, want);
    }
    mismatch(o, &e);
}

/* ---- describing ------------------------------------------------------------- */

typedef struct batch {
    const ds__stmt_def *const *defs;
    finding *found;
    size_t nfound;
} batch;

static void on_described(void *ud, size_t index, const PGresult *desc,
                         const ds_error *refused) {
    batch *b = ud;
    finding *f = &b->found[b->nfound];
    if (refused) {
        memset(f, 0, sizeof *f);
        f->def = b->defs[index];
        snprintf(f->text, sizeof f->text, "%s", refused->message);
        memcpy(f->sqlstate, refused->sqlstate, sizeof f->sqlstate);
        b->nfound++;
    } else if (!compare(b->defs[index], desc, f)) {
        b->nfound++;
    }
}

static ds_status check_statements(ds_conn *c, const def_list *list,
                                  outcome *o, ds_error *err) {
    finding *found = ds__calloc(BATCH, sizeof *found);
    if (!found)
        return ds__error_set(err, DS_ERR_NOMEM, "schema check: out of memory");
    ds_status st = DS_OK;
    for (size_t at = 0; st == DS_OK && at < list->n; at += BATCH) {
        size_t n = list->n - at < BATCH ? list->n - at : BATCH;
        batch b = {list->defs + at, found, 0};
        st = ds__conn_describe(c, b.defs, n, on_described, &b, "schema check",
                               err);
        /* Type names need the connection out of pipeline mode. */
        for (size_t k = 0; st == DS_OK && k < b.nfound; k++)
            report(c, &found[k], o);
    }
    ds__free(found);
    return st;
}

/* ---- version and history ------------------------------------------------------ */

static ds_status check_version(ds_conn *c, int64_t expected, outcome *o,
                               ds_error *err) {
    ds__applied_list applied;
    ds_status st = ds__migrate_read_applied(c, true, &applied, err);
    if (st != DS_OK)
        return st;
    ds__migration_set *set = NULL;
    st = ds__migration_set_load(NULL, &set, err);
    int64_t current = applied.count ? applied.rows[applied.count - 1].version
                                    : 0;
    ds_error e = {0};
    if (st == DS_OK && current < expected) {
        ds__error_set(&e, DS_ERR_SCHEMA,
                      "schema check: the database is at schema version %lld, "
                      "this build needs %lld: run ds-migrate up",
                      (long long)current, (long long)expected);
        mismatch(o, &e);
    }
    if (st == DS_OK && current > expected)
        ds__log(DS_LOG_WARN, MODULE,
                "the database is at schema version %lld, newer than this "
                "build's %lld (a rolling deploy?); checking the statements",
                (long long)current, (long long)expected);
    for (size_t k = 0; st == DS_OK && k < applied.count; k++) {
        const ds__applied *a = &applied.rows[k];
        const ds__migration_file *f = ds__migration_set_find(set, a->version);
        if (a->version > expected || !f)
            continue;
        if (!ds__migration_checksum_matches(f, a->name, a->checksum)) {
            ds__error_set(&e, DS_ERR_SCHEMA,
                          "schema check: migration %04lld_%s applied to the "
                          "database differs from %s built into this library",
                          (long long)a->version, a->name, f->up_file);
            mismatch(o, &e);
        }
    }
    ds__migration_set_free(set);
    ds__applied_list_clear(&applied);
    return st;
}

ds_status ds__schema_check(ds_pool *pool, const ds__stmt_table *tables,
                           int64_t expected_version, ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, tables, "tables is NULL");
    def_list list = {0};
    ds_status st = collect(tables, &list, err);
    ds_conn *c = NULL;
    if (st == DS_OK)
        st = ds_pool_acquire(pool, &c, err);
    /* type-name look-ups unnamed too */
    bool saved_pooler = c ? ds__conn_use_unnamed(c, true) : false;
    outcome o = {0};
    if (st == DS_OK && expected_version > 0)
        st = check_version(c, expected_version, &o, err);
    /* Behind an old schema most statements would fail: the version says it. */
    if (st == DS_OK && o.mismatches == 0)
        st = check_statements(c, &list, &o, err);
    if (c) {
        ds__conn_use_unnamed(c, saved_pooler);
        ds_pool_release(c);
    }
    ds__free(list.defs);
    if (st != DS_OK)
        return st;
    if (o.mismatches) {
        if (err) {
            *err = o.first;
            if (o.mismatches > 1) {
                size_t used = strlen(err->message);
                snprintf(err->message + used, sizeof err->message - used,
                         " (and %d more mismatch(es), each logged)",
                         o.mismatches - 1);
            }
        }
        return DS_ERR_SCHEMA;
    }
    ds__log(DS_LOG_DEBUG, MODULE, "%zu statement(s) match the database",
            list.n);
    return DS_OK;
}

/* Memory statements come in one variant per vector backend and only the
 * database's backend applies; "memory.upgrade" runs only inside the
 * upgrade (it uses a temporary table). A database too old to say which
 * backend it has gets neither, and the version check reports it. */
static bool table_applies(const char *module, const char *backend_table) {
    /* the lists' and the packed codes' statements are the same on both
     * backends; the upgrade's run only while a database converts */
    if (strcmp(module, "memory.pgvector") == 0 ||
        strcmp(module, "memory.fallback") == 0)
        return backend_table && strcmp(module, backend_table) == 0;
    return strcmp(module, "memory.upgrade") != 0;
}

DS_EXPORT ds_status ds_migrate_check_schema(ds_pool *pool, ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_conn *c;
    ds_status st = ds_pool_acquire(pool, &c, err);
    if (st != DS_OK)
        return st;
    const char *backend_table = NULL;
    ds_error ignored = {0};
    /* unnamed: the check leaves nothing prepared */
    bool saved_pooler = ds__conn_use_unnamed(c, true);
    if (ds__memory_active_table(c, &backend_table, &ignored) != DS_OK)
        backend_table = NULL;
    ds__conn_use_unnamed(c, saved_pooler);
    ds_pool_release(c);
    size_t n = 0;
    while (ds__stmt_registry[n].module)
        n++;
    ds__stmt_table *tables = ds__calloc(n + 2, sizeof *tables);
    if (!tables)
        return ds__error_set(err, DS_ERR_NOMEM, "schema check: out of memory");
    size_t k = 0;
    tables[k++] = (ds__stmt_table){"schema", stmts_schema};
    for (size_t i = 0; i < n; i++)
        if (table_applies(ds__stmt_registry[i].module, backend_table))
            tables[k++] = ds__stmt_registry[i];
    st = ds__schema_check(pool, tables, DS_SCHEMA_VERSION, err);
    ds__free(tables);
    return st;
}
