/*
 * Statement definitions: every SQL statement a repository runs is declared
 * once with the parameter types C binds and the result column types C
 * decodes. ds_migrate_check_schema() prepares each against the live database and
 * compares (PQdescribePrepared), so a schema change that breaks a
 * repository fails at start-up and in CI, not at 3 a.m.
 */
/*
 * The statement API of database modules (repo, memory, migrate, session,
 * crypto, schema, sql, events): everything they need from a leased
 * connection, so that the pool's structures stay private to src/pool/.
 *
 *   - ds__stmt_run / ds__sql_run: a statement with bound binary parameters
 *     (pool/pgbin.h), named and cached per connection in prepared mode,
 *     unnamed behind a transaction pooler; binary results.
 *   - ds__conn_use_unnamed: run one lease's statements unnamed for a while
 *     (one-shot statements that should leave nothing prepared).
 *   - ds__conn_simple / ds__conn_exec_simple: the simple protocol, for DDL
 *     and multi-statement text.
 *   - ds__conn_copy_*: COPY FROM STDIN.
 *   - ds__conn_describe: what the server makes of statements, unrun.
 *   - ds_pool_conn_discard (public): close the connection instead of reusing it.
 *   - ds__pool_settings: the module settings read from the configuration.
 *
 * Statement definitions: every SQL statement a repository runs is declared
 * once with the parameter types C binds and the result column types C
 * decodes. ds_migrate_check_schema() prepares each against the live database and
 * compares (PQdescribePrepared), so a schema change that breaks a
 * repository fails at start-up and in CI, not at 3 a.m.
 */
#ifndef DS_POOL_STMT_H
#define DS_POOL_STMT_H

#include "datastore/pool.h"
#include "pool/pgbin.h"

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

/* ---- statements with parameters ---------------------------------------- */

/*
 * Runs a defined statement with the parameters in `b` (NULL: none) and
 * binary results. Returns a PGresult whose status is PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK (the caller PQclear()s it), or NULL with `err` filled
 * and prefixed with the statement's name. A failed bind, or a count of
 * parameters other than the definition's, is refused before anything is
 * sent. A lost connection marks the lease for discard.
 */
PGresult *ds__stmt_run(ds_conn *c, const ds__stmt_def *def, const ds__bind *b,
                       ds_error *err);

/* One statement of a pipeline: what to run, its parameters (NULL: none),
 * whether to run it unnamed even where statements are prepared (planned
 * for its own parameters every time, for a statement whose best plan
 * depends on them) and, after ds__stmt_run_pipeline, its result (the
 * caller PQclear()s it; NULL when it failed or did not run). */
typedef struct ds__pipe_stmt {
    const ds__stmt_def *def;
    const ds__bind *bind;
    bool unnamed;
    PGresult *result;
} ds__pipe_stmt;

/*
 * Runs stmts[0..n) (n <= DS_PIPELINE_MAX) in one round trip: sent
 * together in libpq's pipeline mode, prepared and cached per connection
 * as by ds__stmt_run (unnamed behind a transaction pooler), one Sync after
 * the last, binary results. The first
 * failure fills `err` (prefixed with its statement's name) and the
 * statements after it do not run (the server skips them up to the Sync);
 * every result is NULL then. Each statement goes to the statement hook.
 * A broken pipeline marks the lease for discard. A transaction begun in
 * the pipeline stays open after it.
 */
#define DS_PIPELINE_MAX 8
ds_status ds__stmt_run_pipeline(ds_conn *c, ds__pipe_stmt *stmts, size_t n,
                                ds_error *err);

/* The same for SQL that has no definition: the parameter types are the
 * binds' own. `context` names it in messages (NULL: "query"). */
PGresult *ds__sql_run(ds_conn *c, const char *sql, const ds__bind *b,
                      const char *context, ds_error *err);

/* Sets whether the lease runs its statements unnamed (as behind a
 * transaction pooler) and returns the previous setting, to restore. */
bool ds__conn_use_unnamed(ds_conn *c, bool unnamed);

/* ---- text without parameters ------------------------------------------- */

/* Simple-protocol execution of trusted SQL without parameters (may hold
 * several statements). */
ds_status ds__conn_exec_simple(ds_conn *c, const char *sql, ds_error *err);

/* The same, handing back libpq's result of the last statement whatever its
 * status (NULL when libpq ran out of memory), for callers that tell empty
 * queries and COPY apart; errors go through ds__pg_error. Clears the
 * not-durable mark first (see ds__conn_check_durable). */
PGresult *ds__conn_simple(ds_conn *c, const char *sql);

/* DS_OK, or DS_ERR_NOT_DURABLE (and clears the mark) when a statement
 * run since the mark was last cleared committed without the synchronous
 * standby's confirmation (the server's warning when that wait was
 * cancelled). ds__conn_simple and the pool's own calls clear the mark
 * before sending; `context` starts the message. */
ds_status ds__conn_check_durable(ds_conn *c, const char *context,
                                 ds_error *err);

/* ---- COPY FROM STDIN --------------------------------------------------- */

/* Starts `copy_sql`; errors name `context`. */
ds_status ds__conn_copy_begin(ds_conn *c, const char *copy_sql,
                              const char *context, ds_error *err);
ds_status ds__conn_copy_send(ds_conn *c, const void *data, size_t len,
                             const char *context, ds_error *err);
/* Ends the COPY (aborting it with `abort_msg` when non-NULL) and collects
 * the server's verdict; `st` is the caller's status so far, returned when
 * it is already a failure. */
ds_status ds__conn_copy_end(ds_conn *c, const char *abort_msg, ds_status st,
                            const char *context, ds_error *err);

/* ---- describing ------------------------------------------------------- */

/* Called for statement `index` with the server's description, or with NULL
 * and the server's refusal to prepare it (`refused`, context and name in
 * its message). Both are borrowed for the call. */
typedef void (*ds__describe_fn)(void *ud, size_t index, const PGresult *desc,
                                const ds_error *refused);

/* Prepares defs[0..n) unnamed with their parameter types and describes
 * them, all in one pipeline (a Parse + Describe + Sync group each, so it
 * holds behind a transaction pooler), calling `fn` for each in order.
 * Nothing stays prepared. Fails (and marks the lease for discard) only
 * when the pipeline itself fails; messages start with `context`. */
ds_status ds__conn_describe(ds_conn *c, const ds__stmt_def *const *defs,
                            size_t n, ds__describe_fn fn, void *ud,
                            const char *context, ds_error *err);

/* ---- errors and connection facts --------------------------------------- */

/* Fills `err` from a failed PGresult (may be NULL) and the connection. Maps
 * SQLSTATE to a ds_status, sets sqlstate/retryable, prefixes `context`, and
 * scrubs the pool's passwords. Marks `c` for discard on connection loss.
 * `c` may be NULL when only `pg` is at hand. */
ds_status ds__pg_error(ds_conn *c, PGconn *pg, const PGresult *res,
                       const char *context, ds_error *err);

/* SQLSTATE to status: 23505 -> CONFLICT, 57014/55P03 -> TIMEOUT, class
 * 08/57P0x -> CONNECTION, 22/23 -> INVALID, else DB. */
ds_status ds__sqlstate_status(const char *sqlstate);

/* The server process id libpq was given at connect time. */
int ds__conn_backend_pid(const ds_conn *c);

/* ---- module settings --------------------------------------------------- */

/* What database modules read from the configuration, copied at open. */
typedef struct ds__pool_settings {
    int64_t repo_max_message_bytes; /* repository input limits */
    int64_t repo_max_json_bytes;
    int repo_max_page;
    int repo_max_batch;
    /* an append bumps updated_at only when older than this */
    int64_t repo_activity_interval_ms;
    int migrate_lock_timeout_ms; /* default DDL lock_timeout of ds_migrate_* */
    /* Handed to migrations as ds.embedding_dim / ds.vector_backend. */
    int64_t embedding_dim;
    int64_t vector_backend;
} ds__pool_settings;

/* Borrowed; lives as long as the pool. */
const ds__pool_settings *ds__pool_settings_get(const ds_pool *pool);

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
