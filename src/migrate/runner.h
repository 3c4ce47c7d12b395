/* The migration runner's parts shared by its files (migrate.c: the runner
 * and the entry points; history.c: the record and the plan; run_file.c:
 * one file's statements; emit.c: what the runner and the dry run both
 * report; dry_run.c; status.c). Private to src/migrate/. */
#ifndef DS_MIGRATE_RUNNER_H
#define DS_MIGRATE_RUNNER_H

#include "migrate/migrate_internal.h"

/* The record table (history.c runs it; the dry run prints it). */
#define BOOKKEEPING_DDL                                                        \
    "CREATE TABLE IF NOT EXISTS ds_schema_migrations (\n"                      \
    "    version         bigint PRIMARY KEY CHECK (version > 0),\n"           \
    "    name            text NOT NULL,\n"                                     \
    "    checksum        text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),\n" \
    "    no_transaction  boolean NOT NULL DEFAULT false,\n"                    \
    "    applied_at      timestamptz NOT NULL DEFAULT now(),\n"                \
    "    duration_ms     bigint NOT NULL DEFAULT 0,\n"                         \
    "    applied_by      text NOT NULL DEFAULT current_user\n"                 \
    ")"

/* The runner's own statements (history.c), by index. */
enum {
    S_TRY_XACT_LOCK,
    S_TRY_SESSION_LOCK,
    S_SESSION_UNLOCK,
    S_SET_TIMEOUTS,
    S_BACKEND_PID,
    S_CREATE_TABLE,
    S_APPLIED,
    S_RECORD,
    S_UNRECORD,
    S_MAINTAIN,
};

PGresult *ds__migrate_run_stmt(ds_conn *c, int which, const ds__bind *p,
                               ds_error *err);
/* A one-row, one-column result of `len` bytes, or NULL. */
const char *ds__migrate_single_value(const PGresult *r, int len);
ds_status ds__migrate_run_bool(ds_conn *c, int which, const ds__bind *p,
                               bool *out, ds_error *err);
ds_status ds__migrate_run_command(ds_conn *c, int which, const ds__bind *p,
                                  ds_error *err);
/* Appends to err->message (err may be NULL). */
void ds__migrate_error_append(ds_error *err, const char *fmt, ...)
    DS_PRINTF(2, 3);

/* ---- the record and the plan (history.c) ------------------------------- */

int64_t ds__migrate_current_version(const ds__applied_list *a);
/* The rules that protect the history, checked before anything runs. */
ds_status ds__migrate_verify_history(const ds__migration_set *set,
                                     const ds__applied_list *applied,
                                     ds_error *err);

typedef struct ds__step {
    const ds__migration_file *file;
    bool up;
} ds__step;

/* The next step towards `target` from a verified history: revert the
 * newest applied migration while it is above the target, else apply the
 * oldest pending one at or below it. */
bool ds__migrate_next_step(const ds__migration_set *set, const int64_t *applied,
                           size_t napplied, int64_t target, ds__step *out);
/* The applied versions, with room for `extra` more (NULL: out of memory). */
int64_t *ds__migrate_versions_of(const ds__applied_list *a, size_t extra);

/* ---- the runner (migrate.c) ------------------------------------------- */

typedef struct ds__runner {
    ds_pool *pool;
    ds_conn *conn;
    bool saved_pooler;
    const ds_migrate_options *opts; /* &o */
    ds_migrate_options o;           /* the caller's, read by size */
    ds__migration_set *set;
    int lock_timeout_ms; /* < 0: none */
    int lock_wait_ms;    /* < 0: do not wait */
    bool table_ready;
    bool waiting_reported;
    bool ran_any;
    ds__progress prog; /* opts->on_progress */
} ds__runner;

ds_status ds__migrate_runner_open(ds__runner *r, ds_pool *pool,
                                  const ds_migrate_options *opts,
                                  const ds_migrate_options *defaults,
                                  ds_error *err);
void ds__migrate_runner_close(ds__runner *r);
/* `unnamed`: run this lease's statements unnamed whatever the pool's mode. */
ds_status ds__migrate_lease(ds__runner *r, bool unnamed, ds_error *err);
void ds__migrate_unlease(ds__runner *r);
ds_status ds__migrate_simple(ds__runner *r, const char *sql, ds_error *err);

/* ---- shared by the runner and the dry run (emit.c) --------------------- */

/* The lock_timeout value the runner sets ("0" when none). */
void ds__migrate_lock_timeout_text(const ds__runner *r, char *buf, size_t cap);
/* To opts->on_event, when set. */
void ds__migrate_emit(const ds__runner *r, ds_migrate_event_kind kind,
                      const ds__migration_file *f, bool up, int64_t elapsed_us,
                      const char *sql);

/* ---- one file (run_file.c) --------------------------------------------- */

const char *ds__migrate_step_file(const ds__step *s);
/* Runs the step's file on r->conn (inside the caller's transaction, or
 * statement by statement for a no-transaction file); `stays_at` is the
 * version a failure leaves. */
ds_status ds__migrate_run_file(ds__runner *r, const ds__step *s,
                               int64_t stays_at, ds_error *err);
/* After a statement that committed (COMMIT: line 0; a statement of a
 * no-transaction file: its line): DS_ERR_NOT_DURABLE when the synchronous
 * standby's confirmation was cancelled. */
ds_status ds__migrate_not_durable(ds__runner *r, const char *file, int line,
                                  ds_error *err);

/* ---- dry run (dry_run.c) ------------------------------------------------ */

/* The script of each step towards `target` (or `steps` down), to
 * opts->on_event as DS_MIGRATE_EVENT_SQL; nothing runs. */
ds_status ds__migrate_dry_run(ds__runner *r, int64_t target, int steps,
                              int *changed, ds_error *err);

#endif
