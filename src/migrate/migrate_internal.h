/* The migration runner's private parts: the file set, the SQL splitter and
 * the entry points that the schema check and the tests share. */
#ifndef DS_MIGRATE_INTERNAL_H
#define DS_MIGRATE_INTERNAL_H

#include "core/progress.h"
#include "datastore/migrate.h"
#include "migrate/embedded.h"
#include "pool/stmt.h"

/* The advisory lock key of migrations and partition maintenance ('dsmigrat').
 * sql/0002_analytics_partitions.up.sql spells the same number. */
#define DS_MIGRATE_LOCK_KEY INT64_C(7238249325589062004)

/* First line that makes a file run outside a transaction. */
#define DS_MIGRATE_NO_TX_MARK "-- ds:no-transaction"

/* ---- the file set ---------------------------------------------------- */

typedef struct ds__migration_file {
    int64_t version;
    char *name;            /* "platform_schema" */
    char *up_file;         /* "0001_platform_schema.up.sql" */
    char *down_file;
    const char *up;        /* NUL-terminated contents (borrowed from the  */
    size_t up_len;         /* embedded table or owned by the set)         */
    const char *down;
    size_t down_len;
    bool up_no_tx;
    bool down_no_tx;
    char checksum[65];     /* hex SHA-256 of the up file */
} ds__migration_file;

typedef struct ds__migration_set {
    ds__migration_file *files; /* by version, ascending */
    size_t count;
    char **buffers;            /* file contents read from a directory */
    size_t nbuffers;
    bool shared;               /* the embedded set: freeing is a no-op */
} ds__migration_set;

/* One file before it is paired: a name and its bytes (borrowed). */
typedef struct ds__raw_file {
    const char *name;
    const char *data;
    size_t len;
} ds__raw_file;

/* Pairs and validates files (names, up/down pairs, duplicate versions, NUL
 * bytes) and computes checksums. The set borrows the raw files' data.
 * Errors: DS_ERR_MIGRATION naming the file, DS_ERR_NOMEM. */
ds_status ds__migration_set_build(const ds__raw_file *raw, size_t n,
                                  ds__migration_set **out, ds_error *err);
/* The embedded set (dir == NULL; built once and shared, so freeing it is
 * a no-op) or a directory's. */
ds_status ds__migration_set_load(const char *dir, ds__migration_set **out,
                                 ds_error *err);
void ds__migration_set_free(ds__migration_set *set);
const ds__migration_file *ds__migration_set_find(const ds__migration_set *set,
                                                 int64_t version);

/* Whether an applied migration (its recorded name and checksum) is file
 * `f`: the same name and the file's checksum, or the checksum of an
 * earlier text of a shipped file that was rewritten to run online. */
bool ds__migration_checksum_matches(const ds__migration_file *f,
                                    const char *name, const char *checksum);

/* Newest version built into the library (0 when none). */
int64_t ds__migrate_embedded_latest(void);

/* ---- the record in the database -------------------------------------- */

typedef struct ds__applied {
    int64_t version;
    char *name;
    char checksum[65];
    bool no_transaction;
    int64_t applied_at_us;
    int64_t duration_ms;
} ds__applied;

typedef struct ds__applied_list {
    ds__applied *rows; /* by version, ascending */
    size_t count;
    bool table_exists;
} ds__applied_list;

/* Reads ds_schema_migrations on `conn`. A missing table is an empty list
 * (table_exists false) when `missing_ok`; never call it that way inside a
 * transaction, where the error would abort it. */
ds_status ds__migrate_read_applied(ds_conn *conn, bool missing_ok,
                                   ds__applied_list *out, ds_error *err);
void ds__applied_list_clear(ds__applied_list *list);

/* The runner's own statements (registered in src/schema/registry.c). */
size_t ds__stmts_migrate(const ds__stmt_def **defs);

/* ---- the schema check ------------------------------------------------- */

/*
 * ds_migrate_check_schema() with the statement tables and the version given:
 * `tables` ends with an entry whose module is NULL; `expected_version` 0
 * skips the version and history checks (tests check their own tables).
 */
ds_status ds__schema_check(ds_pool *pool, const ds__stmt_table *tables,
                           int64_t expected_version, ds_error *err);

/* ---- splitting a file into statements --------------------------------- */

typedef struct ds__sql_stmt {
    const char *text;  /* first token to the terminating ';' (inclusive) */
    size_t len;
    int line;          /* 1-based line of the first token */
    char word1[24];    /* first two words, lower-case ("" when none) */
    char word2[24];
} ds__sql_stmt;

typedef ds_status (*ds__sql_stmt_fn)(void *ud, const ds__sql_stmt *stmt,
                                     ds_error *err);

/*
 * Calls `fn` for each statement of `sql` the way psql splits a script:
 * semicolons inside quotes, quoted identifiers, dollar quotes, comments
 * (nested block comments), parentheses and SQL-standard function bodies
 * (BEGIN ATOMIC ... END) do not end a statement. Statements holding only
 * comments are skipped. `file` names the source in errors: an
 * unterminated quote or comment is DS_ERR_MIGRATION with its line. Stops
 * at the first non-DS_OK from `fn` and returns it.
 */
ds_status ds__sql_split(const char *file, const char *sql, size_t len,
                        ds__sql_stmt_fn fn, void *ud, ds_error *err);

/* The line of the character the server's error position (1-based, in
 * characters of the statement text) points at. */
int ds__sql_position_line(const ds__sql_stmt *stmt, long position);

/* ---- running statements online (online.c) ------------------------------ */

/* The condition of a "-- ds:when EXPR" comment line among the comment
 * lines directly above `s` (whose text points into `file`): EXPR, borrowed,
 * or false when there is none. */
bool ds__stmt_when(const char *file, const ds__sql_stmt *s, const char **expr,
                   size_t *len);
/* The same for any "-- MARK [ARG]" line (ARG may be empty: *len 0). */
bool ds__stmt_directive(const char *file, const ds__sql_stmt *s,
                        const char *mark, const char **arg, size_t *len);
/* For CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ...: the name
 * as written (quotes and schema kept) into `name`. */
bool ds__stmt_concurrent_index(const ds__sql_stmt *s, char *name, size_t cap);

/* ---- progress (progress.c) -------------------------------------------- */

/* A reporter for `operation` to opts->on_progress (opts may be NULL). */
void ds__migrate_progress_init(ds__progress *p, const char *operation,
                               const ds_migrate_options *opts);
/* How many steps (applies and reverts) lie between `applied` and `target`. */
int64_t ds__migrate_planned(const ds__migration_set *set,
                            const ds__applied_list *applied, int64_t target);
/* After statement `done` of `total` of `file` ran; DS_ERR_CANCELLED when
 * the callback asked to stop (the message says what stays). */
ds_status ds__migrate_report_statement(ds__progress *p, const char *file,
                                       bool no_tx, int done, int total,
                                       ds_error *err);
/* After migration `done` of `total` was committed. */
ds_status ds__migrate_report_file(ds__progress *p, int64_t done,
                                  int64_t total, ds_error *err);

/* A statement under "-- ds:batch [TOTAL]" (only in a no-transaction file):
 * run again and again, each run committing on its own, until it changes no
 * row; TOTAL, an expression counting the rows to do, gives the progress
 * total. Progress after each batch: item "FILE:LINE", phase "backfill",
 * unit "rows". */
typedef struct ds__batch {
    bool on;
    int64_t total; /* -1: unknown */
    int64_t done;
    int64_t batches;
    const char *file;
    int line;
} ds__batch;

/* Before anything runs: a ds:batch in a transactional file, or above a
 * statement that changes no rows, is DS_ERR_MIGRATION. */
ds_status ds__migrate_batch_check(const char *file, const char *text,
                                  const ds__sql_stmt *s, bool no_tx,
                                  ds_error *err);
/* Reads the statement's ds:batch line (b->on) and evaluates TOTAL. */
ds_status ds__migrate_batch_begin(ds_conn *c, const char *file,
                                  const char *text, const ds__sql_stmt *s,
                                  ds__batch *b, ds_error *err);
/* After a run of the statement: counts its rows, reports, and says whether
 * to run it again; DS_ERR_CANCELLED when the callback asked to stop. */
ds_status ds__migrate_batch_step(ds__progress *p, ds__batch *b,
                                 const PGresult *res, bool *again,
                                 ds_error *err);

/* ---- rehearsal (rehearse.c) ------------------------------------------- */

/* Called around each statement of a migration file that the runner on this
 * thread executes: before it (done false, ok true) and after it (done true,
 * ok: it succeeded; a successful statement of a transactional file still
 * holds its locks then). `conn` is the runner's lease, inside the file's
 * transaction when it has one. */
typedef void (*ds__migrate_stmt_hook_fn)(void *ud, bool done, bool ok,
                                         const char *file,
                                         const ds__sql_stmt *stmt,
                                         ds_conn *conn);
/* Sets (fn non-NULL) or clears the calling thread's statement hook. */
void ds__migrate_set_stmt_hook(ds__migrate_stmt_hook_fn fn, void *ud);

/* ---- lint -------------------------------------------------------------- */

/* Lints one file's text into `report` (appending; report->files counts it).
 * Errors: DS_ERR_MIGRATION (cannot be split: names file and line),
 * DS_ERR_NOMEM. */
ds_status ds__lint_sql(ds_migrate_lint_report *report, const char *file,
                       const char *sql, size_t len, ds_error *err);

#endif
