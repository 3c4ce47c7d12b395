/*
 * Statement definitions: every SQL statement a repository runs is declared
 * once with the parameter types C binds and the result column types C
 * decodes. ds_schema_check() prepares each against the live database and
 * compares (PQdescribePrepared), so a schema change that breaks a
 * repository fails at start-up and in CI, not at 3 a.m.
 */
#ifndef DS_POOL_STMT_H
#define DS_POOL_STMT_H

#include "pool/pool_internal.h"

#define DS_STMT_MAX_PARAMS 32
#define DS_STMT_MAX_COLS 32

typedef struct ds__stmt_def {
    const char *name;  /* "users.get_by_id": module.verb, unique */
    const char *sql;
    int nparams;
    Oid param_types[DS_STMT_MAX_PARAMS]; /* what the C code binds          */
    int ncols;                           /* -1: returns no rows (command)  */
    Oid col_types[DS_STMT_MAX_COLS];     /* what the C code decodes, in order;
                                            0 (as for params): not compared,
                                            for types without a fixed OID */
} ds__stmt_def;

/*
 * Runs a defined statement with binary parameters where `formats` says so
 * (NULL: all text) and binary results. Returns the PGresult or NULL with
 * `err` filled, prefixed with the statement's name.
 */
static inline PGresult *ds__stmt_exec(ds_conn *c, const ds__stmt_def *def,
                                      const char *const *values,
                                      const int *lengths, const int *formats,
                                      ds_error *err) {
    PGresult *r = ds__conn_exec(c, def->sql, def->nparams, def->param_types,
                                values, lengths, formats, 1, err);
    if (!r)
        ds__error_prefix(err, "%s", def->name);
    return r;
}

/* A module's statements, listed in src/schema/registry.c. Each module
 * keeps `static const ds__stmt_def stmts[]` and exports one function:
 *   size_t ds__stmts_users(const ds__stmt_def **defs)
 *   { *defs = stmts; return sizeof stmts / sizeof stmts[0]; } */
typedef size_t (*ds__stmt_table_fn)(const ds__stmt_def **defs);

typedef struct ds__stmt_table {
    const char *module;
    ds__stmt_table_fn get;
} ds__stmt_table;

/* Every module's statements, ended by an entry whose module is NULL. */
extern const ds__stmt_table ds__stmt_registry[];

#endif
