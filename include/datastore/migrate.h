/*
 * datastore/migrate.h — schema migrations, analytics partition maintenance
 * and the start-up schema check.
 *
 * Migrations are pairs of files `NNNN_name.up.sql` / `NNNN_name.down.sql`
 * (NNNN: the version, a positive integer; name: letters, digits, '_').
 * The project's own (sql/ in the source tree) are built into the library,
 * so a program needs no files at run time; a directory can be given
 * instead.
 *
 *   ds_migrate_options opts = {0};            (embedded migrations)
 *   if (ds_migrate_up(pool, &opts, NULL, &err) != DS_OK) ...
 *   if (ds_migrate_check_schema(pool, &err) != DS_OK) ... (refuse to start)
 *
 * How a run works:
 *   - Each migration runs in its own transaction, with `lock_timeout` set
 *     so DDL never queues behind production traffic for long (and no
 *     statement_timeout: the pool's or the role's is meant for application
 *     queries, not for a long backfill). A file whose
 *     first line is `-- ds:no-transaction` runs statement by statement
 *     outside one (CREATE INDEX CONCURRENTLY).
 *   - Runners are serialised by a transaction-scoped advisory lock taken at
 *     the start of every migration's transaction, so any number of runners
 *     may start at once (each migration is applied exactly once) and the
 *     lock can never be left behind, also behind PgBouncer in transaction
 *     mode. A `-- ds:no-transaction` migration needs a session-level lock
 *     instead; behind a transaction pooler (detected by the backend PID the
 *     pooler hands out, whatever the pool's statement mode) it is refused
 *     with DS_ERR_MIGRATION asking for the direct URL.
 *   - The runner's own statements run unnamed, so migrations work through
 *     a pool in either statement mode; status and verify follow the pool's
 *     mode (use `pooler` mode behind PgBouncer, as for everything else).
 *   - Applied migrations are recorded, with the SHA-256 of the up file, in
 *     the table ds_schema_migrations, which the runner creates itself.
 *     Before anything runs, an applied file that was edited since, an
 *     applied migration whose file is missing, and a file that was never
 *     applied but is older than the newest applied one are refused with
 *     DS_ERR_MIGRATION naming the file.
 *   - A failing migration is rolled back completely and leaves the
 *     recorded version unchanged; the error names the file, the line of the
 *     failing statement and the server's message (sqlstate is kept).
 *
 * Thread-safety: every function may be called from any thread with a
 * shared ds_pool; concurrent runs (threads or processes) serialise on the
 * database lock. A ds_migration_list is immutable.
 */
#ifndef DATASTORE_MIGRATE_H
#define DATASTORE_MIGRATE_H

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The schema version this build of the library expects: the newest
 * migration built into it. ds_migrate_check_schema() compares the database to it. */
#define DS_SCHEMA_VERSION 10

/* The kinds of event a run reports to ds_migrate_options.on_event. */
typedef enum ds_migrate_event_kind {
    DS_MIGRATE_EVENT_WAITING = 0, /* another runner holds the lock; waiting */
    DS_MIGRATE_EVENT_APPLYING,    /* about to run `name` up                 */
    DS_MIGRATE_EVENT_APPLIED,     /* `name` committed (elapsed_us: its run
                                     time)                                  */
    DS_MIGRATE_EVENT_REVERTING,   /* about to run `name` down               */
    DS_MIGRATE_EVENT_REVERTED,    /* `name` reverted (elapsed_us)           */
    DS_MIGRATE_EVENT_SQL,         /* dry run: `sql` is the script that would
                                     run                                    */
    DS_MIGRATE_EVENT_PROGRESS     /* long work: `phase`, `done` of `total` so
                                     far (partition maintenance: rows moved
                                     into the partition `name`; elapsed_us
                                     since it began). Kept for existing
                                     callers: the same reports (and more,
                                     with cancelling) go to
                                     ds_migrate_options.on_progress         */
} ds_migrate_event_kind;

/* One event of a run: which file, which way, and what happened. */
typedef struct ds_migrate_event {
    ds_migrate_event_kind kind;
    int64_t version;     /* 0 for DS_MIGRATE_EVENT_WAITING                  */
    const char *name;    /* "platform_schema"; "" for ..._WAITING           */
    bool up;             /* direction                                       */
    bool no_transaction; /* the file runs outside a transaction             */
    int64_t elapsed_us;  /* APPLIED / REVERTED                              */
    const char *sql;     /* DS_MIGRATE_EVENT_SQL: the full script, else NULL */
    const char *phase;   /* DS_MIGRATE_EVENT_PROGRESS: e.g. "copy", else
                            NULL                                            */
    int64_t done;        /* DS_MIGRATE_EVENT_PROGRESS: units done so far    */
    int64_t total;       /* DS_MIGRATE_EVENT_PROGRESS: units in all
                            (estimate)                                      */
} ds_migrate_event;

/* Called synchronously on the calling thread; everything it points to
 * lives for the call only. It must not call back into ds_migrate_*. */
typedef void (*ds_migrate_event_fn)(void *ud, const ds_migrate_event *event);

/*
 * Options of every ds_migrate_* call. A zeroed struct (or NULL) means: the
 * embedded migrations, the pool's migrate_lock_timeout_ms
 * (DS_MIGRATE_LOCK_TIMEOUT_MS, 5000 by default), wait up to 10 minutes for
 * another runner, no callbacks.
 */
typedef struct ds_migrate_options {
    size_t size; /* growable, caller-allocated: set by DS_MIGRATE_OPTIONS_INIT */
    const char *dir;  /* a directory of NNNN_name.up|down.sql files, or
                         NULL for the migrations built into the library   */
    int lock_timeout_ms; /* lock_timeout of migration statements: > 0 this,
                            0 the pool's setting, < 0 none                 */
    int lock_wait_ms; /* longest wait for another runner's lock: > 0 this,
                         0 the default (600000), < 0 do not wait          */
    bool dry_run;     /* report the SQL through DS_MIGRATE_EVENT_SQL events
                         and change nothing (up, down, to)                */
    /* May be NULL: the runner's events (waiting for the lock, each file
     * applying/applied, the dry run's SQL); it cannot stop anything. */
    ds_migrate_event_fn on_event;
    void *on_event_ud;
    /* May be NULL: long work reports here (ds_progress, core.h), and a
     * non-zero return stops it with DS_ERR_CANCELLED.
     *   up/down/to: operation "migrate"; after each statement of a file,
     *     item the file name, phase "statement", unit "statements" (the
     *     callback then runs inside the file's transaction, unless the file
     *     is -- ds:no-transaction: return quickly); after each migration
     *     committed, item "", phase "files", unit "files", done of the
     *     steps planned at the start. Stopping inside a file rolls it back
     *     (a no-transaction file keeps the statements that ran: they are
     *     written to run again); committed migrations stay.
     *   maintain: operation "maintain", item the partition, phase "copy",
     *     unit "rows": after each batch of rows moved out of the default
     *     partition. Stopping leaves the new month's table not attached
     *     yet; the next run continues it. */
    ds_progress_fn on_progress;
    void *on_progress_ud;
} ds_migrate_options;
#define DS_MIGRATE_OPTIONS_INIT DS_SIZED_INIT(ds_migrate_options)

/*
 * Applies every pending migration, oldest first, each in its own
 * transaction. `applied` (may be NULL) receives how many ran (or would run,
 * for a dry run).
 * Errors: DS_ERR_MIGRATION (a bad, edited, missing or out-of-order file; a
 * failing migration: the message names file and line, sqlstate is the
 * server's; a no-transaction migration behind a transaction pooler),
 * DS_ERR_TIMEOUT (another runner held the lock longer than lock_wait_ms),
 * DS_ERR_CANCELLED (opts->on_progress asked to stop), DS_ERR_CONNECTION,
 * DS_ERR_INVALID, DS_ERR_NOMEM. Migrations committed before a failure stay
 * applied.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_up(ds_pool *pool,
                                               const ds_migrate_options *opts,
                                               int *applied, ds_error *err);

/*
 * Reverts the `steps` newest applied migrations (steps >= 1), newest
 * first, each in its own transaction, with their down files. `reverted`
 * (may be NULL) receives how many were reverted. Errors as ds_migrate_up().
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_down(
    ds_pool *pool, const ds_migrate_options *opts, int steps, int *reverted,
    ds_error *err);

/*
 * Moves the database to `version`: applies the pending migrations up to it,
 * or reverts those above it. 0 reverts everything. A version that no
 * migration has is DS_ERR_INVALID. `changed` (may be NULL) receives how
 * many migrations ran. Errors as ds_migrate_up().
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_to(ds_pool *pool,
                                               const ds_migrate_options *opts,
                                               int64_t version, int *changed,
                                               ds_error *err);

/* The state of one migration in a status list. */
typedef enum ds_migration_state {
    DS_MIGRATION_PENDING = 0,    /* a file not applied yet                  */
    DS_MIGRATION_APPLIED = 1,    /* applied; the file is unchanged          */
    DS_MIGRATION_CHANGED = 2,    /* applied, but the file was edited since  */
    DS_MIGRATION_MISSING = 3,    /* applied, but no file has this version   */
    DS_MIGRATION_OUT_OF_ORDER = 4 /* not applied, older than the newest
                                     applied one                            */
} ds_migration_state;

typedef struct ds_migration {
    int64_t version;
    const char *name;          /* "platform_schema" (from the file, or the
                                  database when MISSING)                  */
    ds_migration_state state;
    bool no_transaction;       /* the up file runs outside a transaction  */
    int64_t applied_at_us;     /* epoch microseconds; 0 when not applied  */
    int64_t duration_ms;       /* how long it took when applied           */
    char checksum[65];         /* hex SHA-256 of the up file; "" MISSING  */
    char applied_checksum[65]; /* the one recorded; "" when not applied   */
} ds_migration;

typedef struct ds_migration_list {
    size_t count;
    ds_migration *items;     /* by version, files and applied merged      */
    int64_t current_version; /* newest applied, 0 when none               */
    int64_t latest_version;  /* newest file, 0 when none                  */
    size_t pending;          /* how many are PENDING                      */
    bool consistent;         /* no CHANGED, MISSING or OUT_OF_ORDER entry */
} ds_migration_list;

/*
 * Reads the files and the database's record, without taking any lock or
 * changing anything (a database never migrated simply shows every file
 * pending). An inconsistent history is reported in the list, not as an
 * error. *out is freed with ds_migrate_list_free().
 * Errors: DS_ERR_MIGRATION (a malformed file set), DS_ERR_CONNECTION,
 * DS_ERR_DB, DS_ERR_INVALID, DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_status(
    ds_pool *pool, const ds_migrate_options *opts, ds_migration_list **out,
    ds_error *err);

/* Frees a status list. NULL is a no-op. */
DS_EXPORT void ds_migrate_list_free(ds_migration_list *list);

/*
 * Checks the applied history against the files: DS_OK when every applied
 * migration has its unchanged file and no unapplied file is older than the
 * newest applied one (pending newer files are fine). Otherwise
 * DS_ERR_MIGRATION naming the first offending file.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_verify(
    ds_pool *pool, const ds_migrate_options *opts, ds_error *err);

/*
 * Partition maintenance: makes sure analytics_events has a partition for
 * this month and each of the next `months_ahead` (0..120) months (UTC),
 * moving rows that already wait in the default partition into the month
 * they belong to. Safe at any time, e.g. daily from cron, and from several
 * hosts at once (serialised with each other and with migrations); works
 * through PgBouncer in transaction mode. Statements wait at most the
 * pool's migrate_lock_timeout_ms for table locks. `created` (may be NULL)
 * receives how many partitions were created. `opts` may be NULL; only
 * the callbacks are read: opts->on_progress after each batch of
 * rows moved out of the default partition (see ds_migrate_options), and
 * opts->on_event as a DS_MIGRATE_EVENT_PROGRESS event (`name` the new
 * partition, `phase` "copy", `done` of `total` rows, `elapsed_us`), so a
 * caller can show a rate and an ETA.
 * Errors: DS_ERR_SCHEMA (the database is older than migration 2),
 * DS_ERR_TIMEOUT (lock timeout: retry later), DS_ERR_CANCELLED (on_progress
 * asked to stop: the month's table is left unattached and the next run
 * continues), DS_ERR_INVALID, DS_ERR_CONNECTION, DS_ERR_DB.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_maintain(
    ds_pool *pool, const ds_migrate_options *opts, int months_ahead,
    int *created, ds_error *err);

/*
 * The start-up check. Verifies that the database is at DS_SCHEMA_VERSION
 * (a newer database is accepted with a warning in the log, so that a
 * rolling deploy can migrate ahead of older instances), that the applied
 * migrations are the ones built into this library, and that every SQL
 * statement the library runs prepares against the live database with the
 * parameter types the C code binds and exactly the result column types it
 * decodes (PQdescribePrepared, one round trip for all of them).
 * Errors: DS_ERR_SCHEMA naming the statement and the parameter or column
 * (or the version), DS_ERR_CONNECTION, DS_ERR_INVALID, DS_ERR_NOMEM.
 * Works in both statement modes; leaves nothing prepared on the server.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_check_schema(ds_pool *pool,
                                                 ds_error *err);

/* ---- lint: static rules for migrations on live, populated tables ---- */

typedef enum ds_migrate_lint_level {
    DS_MIGRATE_LINT_WARNING = 1, /* worth a look; does not fail the lint          */
    DS_MIGRATE_LINT_ERROR = 2    /* blocks traffic or breaks running code: fails   */
} ds_migrate_lint_level;

/* One finding. Every pointer lives as long as the report. */
typedef struct ds_migrate_lint_finding {
    const char *rule;    /* stable id, e.g. "index-not-concurrent"       */
    ds_migrate_lint_level level;
    const char *file;    /* the file name or path given                 */
    int line;            /* 1-based line of the statement               */
    const char *message; /* what the statement does                     */
    const char *why;     /* why it is dangerous on a live table         */
    const char *fix;     /* the safe recipe                             */
    bool waived;         /* a "-- ds:lint-ignore RULE: reason" above it  */
    const char *waiver;  /* the waiver's reason, or NULL                */
} ds_migrate_lint_finding;

typedef struct ds_migrate_lint_report {
    ds_migrate_lint_finding *items; /* in file order                            */
    size_t count;
    size_t files;           /* files linted                             */
    size_t errors;          /* error-level findings not waived          */
    size_t warnings;        /* warnings not waived                      */
    size_t waived;
} ds_migrate_lint_report;

/*
 * Lints migration files without a database: the rules (index without
 * CONCURRENTLY on an existing table, constraint without NOT VALID, SET NOT
 * NULL without a validated CHECK, rewriting type changes and defaults,
 * renames and drops, VACUUM FULL, CLUSTER, explicit locks, DDL without
 * lock_timeout, ...) also look inside DO blocks, function bodies and SQL
 * held in strings (EXECUTE, format()). Tables created earlier in the same
 * file count as new. `paths`/`npaths`: the files to read; npaths 0 lints
 * the up files of opts->dir or of the migrations built into the library
 * (what `up` runs on a new database). docs/migrations.md lists the rules.
 * `*out` receives the report (free with ds_migrate_lint_report_free()) even when
 * it holds error-level findings: the call fails only when a file cannot
 * be read or split.
 * Errors: DS_ERR_MIGRATION (a file that cannot be read, or cannot be split
 * into statements: an unterminated quote or comment, a NUL byte; the
 * message names file and line), DS_ERR_INVALID, DS_ERR_NOMEM.
 * Thread-safe.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_lint(const ds_migrate_options *opts,
                                                 const char *const *paths,
                                                 size_t npaths,
                                                 ds_migrate_lint_report **out,
                                                 ds_error *err);
/* Frees a report; a no-op on NULL. */
DS_EXPORT void ds_migrate_lint_report_free(ds_migrate_lint_report *report);

/* ---- rehearse: the pending migrations on a populated copy, watched ---- */

/*
 * Options of ds_migrate_rehearse(): a growable struct (docs/abi.md). Set
 * it up with ds_migrate_rehearse_options_init() or
 * DS_MIGRATE_REHEARSE_OPTIONS_INIT, then change members; zero means the default everywhere.
 */
typedef struct ds_migrate_rehearse_options {
    size_t size;              /* sizeof(ds_migrate_rehearse_options), set by the
                                 initialiser                              */
    const char *dir;          /* migrations directory; NULL: built in     */
    const char *scratch_url;  /* an existing, empty database to rehearse
                                 in, used as it is and never dropped;
                                 NULL: create one (scratch_name)          */
    const char *scratch_name; /* the database created on the target's
                                 server and dropped afterwards; NULL:
                                 "<target>_rehearse_<pid>"                */
    bool keep;                /* do not drop the created database         */
    int64_t rows_per_table;   /* synthetic rows per table: > 0 this many,
                                 0 the default (10000), < 0 none          */
    int64_t lock_threshold_ms; /* a lock that blocks reads or writes, held
                                  on a table with rows longer than this,
                                  fails the rehearsal: > 0 this, 0 the
                                  default (1000), < 0 any such lock fails,
                                  however short                          */
    int64_t sample_interval_ms; /* pg_locks sampling period: > 0 this, 0
                                   the default (5)                        */
    int64_t lock_timeout_ms;  /* lock_timeout of the migration statements
                                 (as ds_migrate_options): > 0 this, 0 the
                                 configuration's, < 0 none                */
    const char *pg_dump;      /* the pg_dump program; NULL: "pg_dump"     */
    const char *psql;         /* the psql program; NULL: "psql"           */
} ds_migrate_rehearse_options;

#define DS_MIGRATE_REHEARSE_OPTIONS_INIT DS_SIZED_INIT(ds_migrate_rehearse_options)

/* Sets `opts` to the defaults (all zero) with its size. */
DS_EXPORT void ds_migrate_rehearse_options_init(ds_migrate_rehearse_options *opts);

/* One statement of a pending migration as the rehearsal ran it. */
typedef struct ds_migrate_rehearse_statement {
    const char *file;     /* "0003_memory_embeddings.up.sql"            */
    int line;             /* 1-based line of the statement              */
    const char *sql;      /* its start, on one line (at most ~120 bytes) */
    int64_t duration_ms;
    bool ok;              /* false: the statement failed (see error)    */
} ds_migrate_rehearse_statement;

/* A lock on a table, from the first sample that saw it to its release. */
typedef struct ds_migrate_rehearse_lock {
    size_t statement;     /* index in statements: the one running when
                             the lock was first seen (it may be held on
                             to the end of the file's transaction)      */
    const char *table;    /* schema.table                               */
    const char *mode;     /* as pg_locks names it: "AccessExclusiveLock" */
    int64_t held_ms;
    int64_t rows;         /* rows in the table before the statement; -1:
                             a table the migrations created             */
    bool rewritten;       /* the table's file was replaced (relfilenode
                             changed) while the lock was held           */
    bool blocks_reads;    /* SELECT waits for it (ACCESS EXCLUSIVE)     */
    bool blocks_writes;   /* INSERT/UPDATE/DELETE wait for it           */
    bool over_threshold;  /* blocks, the table has rows, and it was held
                             longer than the threshold: fails           */
} ds_migrate_rehearse_lock;

/* A table of the scratch database and how it was filled. */
typedef struct ds_migrate_rehearse_table {
    const char *table;    /* schema.table                               */
    int64_t rows;         /* rows it held before the migrations ran     */
    const char *skipped;  /* why it holds fewer rows than asked, or NULL */
} ds_migrate_rehearse_table;

typedef struct ds_migrate_rehearse_report {
    bool ok;              /* every pending migration applied and no lock
                             over the threshold                         */
    const char *error;    /* a migration failed on the scratch database:
                             the runner's message; else NULL            */
    int64_t from_version; /* the target's version                       */
    int64_t to_version;   /* the scratch's version after the run        */
    size_t applied;       /* migrations applied on the scratch database */
    size_t violations;    /* locks over the threshold                   */
    int64_t lock_threshold_ms; /* as applied (0: any blocking lock)     */
    int64_t rows_per_table;
    const char *scratch_database; /* its name                          */
    bool scratch_kept;    /* it still exists                            */
    ds_migrate_rehearse_statement *statements;
    size_t nstatements;
    ds_migrate_rehearse_lock *locks;
    size_t nlocks;
    ds_migrate_rehearse_table *tables;
    size_t ntables;
} ds_migrate_rehearse_report;

/*
 * Rehearses `ds-migrate up` for the database of cfg's database_url (the
 * target), which it only reads: builds a scratch database from the
 * target's schema (pg_dump --schema-only, restored with psql) with the
 * target's migration record, fills every table with synthetic rows that
 * satisfy its constraints (foreign keys in dependency order, partitioned
 * tables through their parent; a table it cannot fill is listed with the
 * reason), applies the pending migrations there with the runner while a
 * second connection samples pg_locks, pg_stat_activity and pg_class, and
 * reports per statement the table locks, how long each was held and
 * whether the table was rewritten. Locks are observed, not parsed, so
 * statements inside DO blocks and functions are seen. The created scratch
 * database is dropped afterwards unless opts->keep. The configuration's
 * other settings (embedding dimension, vector backend, lock timeout) are
 * those the migrations run with.
 * `*out` receives the report (free with ds_migrate_rehearse_report_free()) when
 * the rehearsal ran, whatever it found: a migration that fails on the
 * scratch database or a lock over the threshold makes report->ok false.
 * Errors (nothing was rehearsed, the target is untouched):
 * DS_ERR_CONNECTION (the target or the scratch cannot be reached),
 * DS_ERR_MIGRATION (a migration file that cannot be read or split; a
 * history the runner would refuse), DS_ERR_DB (the scratch database
 * cannot be created or the schema not copied: the message says which
 * step), DS_ERR_INVALID, DS_ERR_NOMEM.
 * Thread-safe; runs pg_dump and psql as child processes.
 */
DS_EXPORT DS_NODISCARD ds_status ds_migrate_rehearse(
    const ds_config *cfg, const ds_migrate_rehearse_options *opts,
    ds_migrate_rehearse_report **out, ds_error *err);
/* Frees a report; a no-op on NULL. */
DS_EXPORT void ds_migrate_rehearse_report_free(ds_migrate_rehearse_report *report);

/* "pending", "applied", "changed", "missing", "out-of-order"; never NULL. */
DS_EXPORT const char *ds_migrate_state_str(ds_migration_state state);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_MIGRATE_H */
