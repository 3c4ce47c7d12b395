/*
 * The migration runner.
 *
 * Locking. Every migration runs in its own transaction that starts by
 * taking a transaction-scoped advisory lock (pg_try_advisory_xact_lock,
 * polled so the wait is bounded), then reads and verifies the record,
 * picks the next step, runs it and records it. Commit or rollback releases
 * the lock, so it can never be left behind, and since a transaction stays on
 * one server connection this is also correct behind PgBouncer in
 * transaction mode, where a session-level lock would stay on whichever
 * pooled server connection took it and block every later deploy.
 *
 * A `-- ds:no-transaction` file cannot run inside that transaction; it holds
 * a session-level lock instead, which is only sound on a direct connection:
 * behind a transaction pooler (the pool's statement mode says so, or the
 * backend PID the server reports differs from the one libpq was given at
 * connect time: PgBouncer hands out its own) it is refused.
 *
 * The runner's lease runs its own statements unnamed (each runs once or
 * twice: one round trip, nothing left prepared) and is discarded after any
 * migration ran, so session state a migration might set never reaches the
 * application's pool.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "core/strbuf.h"
#include "events/events_internal.h"
#include "memory/memory_internal.h"
#include "migrate/migrate_internal.h"

#define MODULE "migrate"
#define DEFAULT_LOCK_WAIT_MS 600000

/* ---- statements --------------------------------------------------------- */

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

static PGresult *run_stmt(ds_conn *c, int which, const ds__bind *p,
                          ds_error *err) {
    return ds__stmt_run(c, &stmts[which], p, err);
}

/* A one-row, one-column result of `len` bytes, or NULL. */
static const char *single_value(const PGresult *r, int len) {
    if (PQntuples(r) != 1 || PQnfields(r) != 1 || PQgetisnull(r, 0, 0) ||
        PQgetlength(r, 0, 0) != len)
        return NULL;
    return PQgetvalue(r, 0, 0);
}

static ds_status run_bool(ds_conn *c, int which, const ds__bind *p, bool *out,
                          ds_error *err) {
    PGresult *r = run_stmt(c, which, p, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    const char *v = single_value(r, 1);
    ds_status st = v ? DS_OK
                     : ds__error_set(err, DS_ERR_INTERNAL,
                                     "%s: unexpected result", stmts[which].name);
    if (v)
        *out = v[0] != 0;
    PQclear(r);
    return st;
}

static ds_status run_command(ds_conn *c, int which, const ds__bind *p,
                             ds_error *err) {
    PGresult *r = run_stmt(c, which, p, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    PQclear(r);
    return DS_OK;
}

/* ---- errors --------------------------------------------------------------- */

static void error_append(ds_error *err, const char *fmt, ...) DS_PRINTF(2, 3);
static void error_append(ds_error *err, const char *fmt, ...) {
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
    PGresult *r = run_stmt(conn, S_APPLIED, NULL, &local);
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

static int64_t current_version(const ds__applied_list *a) {
    return a->count ? a->rows[a->count - 1].version : 0;
}

/* The rules that protect the history, checked before anything runs. */
static ds_status verify_history(const ds__migration_set *set,
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
    int64_t current = current_version(applied);
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

typedef struct step {
    const ds__migration_file *file;
    bool up;
} step;

/* The next step towards `target` from a verified history: revert the
 * newest applied migration while it is above the target, else apply the
 * oldest pending one at or below it. */
static bool next_step(const ds__migration_set *set, const int64_t *applied,
                      size_t napplied, int64_t target, step *out) {
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

static int64_t *versions_of(const ds__applied_list *a, size_t extra) {
    int64_t *v = ds__calloc(a->count + extra + 1, sizeof *v);
    if (v)
        for (size_t k = 0; k < a->count; k++)
            v[k] = a->rows[k].version;
    return v;
}

/* ---- the runner ------------------------------------------------------------- */

typedef struct runner {
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
} runner;

static void emit(const runner *r, ds_migrate_event ev,
                 const ds__migration_file *f, bool up, int64_t elapsed_us,
                 const char *sql) {
    if (!r->opts->progress)
        return;
    ds_migrate_progress p = {ev,
                             f ? f->version : 0,
                             f ? f->name : "",
                             up,
                             f ? (up ? f->up_no_tx : f->down_no_tx) : false,
                             elapsed_us,
                             sql,
                             NULL,
                             0,
                             0};
    r->opts->progress(r->opts->progress_ud, &p);
}

/* `unnamed`: run this lease's statements unnamed whatever the pool's
 * mode (see the top); read-only calls keep the pool's mode, so a status
 * call repeated by a health check reuses its prepared statement. */
static ds_status lease(runner *r, bool unnamed, ds_error *err) {
    ds_status st = ds_pool_acquire(r->pool, &r->conn, err);
    if (st != DS_OK)
        return st;
    r->saved_pooler = ds__conn_use_unnamed(r->conn, true);
    if (!unnamed)
        ds__conn_use_unnamed(r->conn, r->saved_pooler);
    return DS_OK;
}

static void unlease(runner *r) {
    if (!r->conn)
        return;
    ds__conn_use_unnamed(r->conn, r->saved_pooler);
    if (r->ran_any)
        ds_conn_discard(r->conn);
    ds_pool_release(r->conn);
    r->conn = NULL;
}

static ds_status simple(runner *r, const char *sql, ds_error *err) {
    ds_status st = ds__conn_exec_simple(r->conn, sql, err);
    if (st != DS_OK)
        ds__error_prefix(err, "%s", sql);
    return st;
}

static void lock_timeout_text(const runner *r, char *buf, size_t cap) {
    if (r->lock_timeout_ms < 0)
        snprintf(buf, cap, "0");
    else
        snprintf(buf, cap, "%dms", r->lock_timeout_ms);
}

static ds_status set_timeouts(runner *r, bool local, ds_error *err) {
    char value[32];
    lock_timeout_text(r, value, sizeof value);
    ds__migration_setting set[2];
    const ds__pool_settings *ps = ds__pool_settings_get(r->pool);
    ds__memory_migration_settings(ps->embedding_dim, ps->vector_backend, set);
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_text(&p, value);
    ds__bind_bool(&p, local);
    for (int i = 0; i < 2; i++) {
        ds__bind_text(&p, set[i].name);
        ds__bind_text(&p, set[i].value);
    }
    return run_command(r->conn, S_SET_TIMEOUTS, &p, err);
}

/* Takes the migration lock: transaction-scoped (opening the transaction)
 * or session-scoped. Polls so that the wait is bounded by lock_wait_ms. */
static ds_status take_lock(runner *r, bool session, ds_error *err) {
    int64_t deadline = ds__now_us() + (int64_t)r->lock_wait_ms * 1000;
    for (int attempt = 0;; attempt++) {
        ds_status st;
        if (!session && (st = simple(r, "BEGIN", err)) != DS_OK)
            return st;
        ds__bind p;
        ds__bind_init(&p);
        ds__bind_int64(&p, DS_MIGRATE_LOCK_KEY);
        bool got = false;
        st = run_bool(r->conn, session ? S_TRY_SESSION_LOCK : S_TRY_XACT_LOCK,
                      &p, &got, err);
        if (st != DS_OK || got)
            return st;
        if (!session && (st = simple(r, "ROLLBACK", err)) != DS_OK)
            return st;
        if (!r->waiting_reported) {
            r->waiting_reported = true;
            ds__log(DS_LOG_INFO, MODULE,
                    "another migration runner holds the lock; waiting");
            emit(r, DS_MIGRATE_WAITING, NULL, true, 0, NULL);
        }
        int64_t now = ds__now_us();
        if (r->lock_wait_ms < 0)
            return ds__error_set(err, DS_ERR_TIMEOUT,
                                 "migrations: another runner holds the "
                                 "migration lock (not waiting)");
        if (now >= deadline)
            return ds__error_set(err, DS_ERR_TIMEOUT,
                                 "migrations: another runner held the "
                                 "migration lock for longer than %d ms",
                                 r->lock_wait_ms);
        int64_t nap = INT64_C(20000) << (attempt < 4 ? attempt : 4);
        nap += (int64_t)ds__random_uniform((uint32_t)(nap / 2 + 1));
        if (nap > deadline - now)
            nap = deadline - now;
        ds__sleep_us(nap);
    }
}

/* Inside the locked transaction: the record, verified. */
static ds_status read_verified(runner *r, ds__applied_list *applied,
                               ds_error *err) {
    ds_status st;
    if (!r->table_ready) {
        if ((st = run_command(r->conn, S_CREATE_TABLE, NULL, err)) != DS_OK)
            return st;
        r->table_ready = true;
    }
    if ((st = ds__migrate_read_applied(r->conn, false, applied, err)) != DS_OK)
        return st;
    return verify_history(r->set, applied, err);
}

/* BEGIN, lock, lock_timeout, record: ready to plan the next step. */
static ds_status begin_step(runner *r, ds__applied_list *applied,
                            ds_error *err) {
    ds_status st = take_lock(r, false, err);
    if (st == DS_OK)
        st = set_timeouts(r, true, err);
    if (st == DS_OK)
        st = read_verified(r, applied, err);
    return st;
}

/* ---- running one file ---------------------------------------------------- */

static bool is_tx_control(const ds__sql_stmt *s) {
    const char *w = s->word1, *w2 = s->word2;
    if (!strcmp(w, "begin") || !strcmp(w, "start") || !strcmp(w, "commit") ||
        !strcmp(w, "end") || !strcmp(w, "abort"))
        return true;
    if (!strcmp(w, "rollback"))
        return strcmp(w2, "to") != 0; /* ROLLBACK TO SAVEPOINT is fine */
    if (!strcmp(w, "prepare"))
        return !strcmp(w2, "transaction");
    return false;
}

typedef struct file_run {
    runner *r;
    const char *file;
    const char *sql; /* the whole file: statements point into it */
    bool no_tx;
    int64_t stays_at; /* the version the database stays at on failure */
    int statements;
    int executed; /* statements run or skipped so far */
} file_run;

static ds_status check_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    file_run *fr = ud;
    if (is_tx_control(s))
        return ds__error_set(err, DS_ERR_MIGRATION,
                             "%s:%d: transaction control (%s) is not allowed "
                             "in a migration: each one runs in its own "
                             "transaction (or none, with a first line "
                             "\"" DS_MIGRATE_NO_TX_MARK "\")",
                             fr->file, s->line, s->word1);
    fr->statements++;
    return ds__migrate_batch_check(fr->file, fr->sql, s, fr->no_tx, err);
}

static ds_status stmt_failed(file_run *fr, const ds__sql_stmt *s,
                             PGresult *res, ds_error *err) {
    int line = s->line;
    const char *pos =
        res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    if (pos)
        line = ds__sql_position_line(s, atol(pos));
    char where[320];
    snprintf(where, sizeof where, "%s:%d", fr->file, line);
    ds_status st = ds__pg_error(fr->r->conn, NULL, res, where, err);
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    if (ctx) {
        size_t n = strcspn(ctx, "\n");
        error_append(err, " (context: %.*s)", (int)(n > 160 ? 160 : n), ctx);
    }
    if (st != DS_ERR_CONNECTION) {
        st = DS_ERR_MIGRATION;
        if (err)
            err->code = st;
    }
    if (fr->no_tx)
        error_append(err,
                     "; the file runs outside a transaction, so the statements "
                     "before line %d took effect and stay: make them "
                     "idempotent (IF NOT EXISTS) and run again",
                     s->line);
    else if (st == DS_ERR_CONNECTION)
        error_append(err, "; the server rolls the migration back");
    else
        error_append(err, "; rolled back, the database stays at version %lld",
                     (long long)fr->stays_at);
    const char *state =
        res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (fr->stays_at == 0 && state &&
        (!strcmp(state, "42P07") || !strcmp(state, "42710")))
        error_append(err, " (the database holds objects but no migration "
                          "record: was it set up without the runner? "
                          "Migrate an empty database)");
    return st;
}

/* "-- ds:when EXPR" above the statement: runs it only when EXPR is true. */
static ds_status when_allows(file_run *fr, const ds__sql_stmt *s, bool *run,
                             ds_error *err) {
    *run = true;
    const char *expr;
    size_t len;
    if (!ds__stmt_when(fr->sql, s, &expr, &len))
        return DS_OK;
    char *q = ds__malloc(len + 32);
    if (!q)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    snprintf(q, len + 32, "SELECT (%.*s)::boolean", (int)len, expr);
    PGresult *res = ds__conn_simple(fr->r->conn, q);
    ds__free(q);
    ds_status st = DS_OK;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        PQnfields(res) != 1) {
        st = stmt_failed(fr, s, res, err);
        error_append(err, " (in the ds:when condition above line %d)",
                     s->line);
    } else {
        *run = !PQgetisnull(res, 0, 0) && PQgetvalue(res, 0, 0)[0] == 't';
    }
    PQclear(res);
    if (st == DS_OK && !*run)
        ds__log(DS_LOG_INFO, MODULE, "%s:%d: skipped (ds:when is false)",
                fr->file, s->line);
    return st;
}

/* Before CREATE INDEX CONCURRENTLY in a no-transaction file: a build that
 * failed (or was cancelled) leaves an INVALID index of that name, which
 * IF NOT EXISTS would then keep for good. Drop it, concurrently. */
static ds_status repair_invalid_index(file_run *fr, const ds__sql_stmt *s,
                                      ds_error *err) {
    char name[256];
    if (!ds__stmt_concurrent_index(s, name, sizeof name))
        return DS_OK;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_text(&b, name);
    char where[320];
    snprintf(where, sizeof where, "%s:%d", fr->file, s->line);
    PGresult *res = ds__sql_run(fr->r->conn,
                                "SELECT NOT i.indisvalid FROM pg_index i "
                                "WHERE i.indexrelid = to_regclass($1)",
                                &b, where, err);
    ds__bind_free(&b);
    if (!res)
        return err ? err->code : DS_ERR_DB;
    bool invalid = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 1 &&
                   PQgetvalue(res, 0, 0)[0] != 0;
    PQclear(res);
    ds_status st = DS_OK;
    if (st != DS_OK || !invalid)
        return st;
    ds__log(DS_LOG_WARN, MODULE,
            "%s:%d: index %s is INVALID (an earlier build failed): dropping "
            "it concurrently before building it again",
            fr->file, s->line, name);
    char drop[320];
    snprintf(drop, sizeof drop, "DROP INDEX CONCURRENTLY IF EXISTS %s", name);
    res = ds__conn_simple(fr->r->conn, drop);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        st = stmt_failed(fr, s, res, err);
    PQclear(res);
    return st;
}

/* After a statement that committed (COMMIT, or a statement of a
 * no-transaction file, line > 0): DS_ERR_NOT_DURABLE when the server
 * committed it on the primary only because the wait for the synchronous
 * standby was cancelled. Neither success (a failover may lose it) nor
 * failure (it is applied on the primary): the message says which. */
static ds_status not_durable(runner *r, const char *file, int line,
                             ds_error *err) {
    ds_status st = ds__conn_check_durable(r->conn, file, NULL);
    if (st != DS_ERR_NOT_DURABLE)
        return st;
    if (line > 0)
        ds__error_set(err, st,
                      "%s:%d: committed on the primary, but the wait for the "
                      "synchronous standby was cancelled, so a failover may "
                      "lose it; the statements up to here stay applied on the "
                      "primary and the migration is not recorded: run up "
                      "again (the file's statements can run again)",
                      file, line);
    else
        ds__error_set(err, st,
                      "%s: applied and recorded on the primary, but the wait "
                      "for the synchronous standby was cancelled at COMMIT, "
                      "so a failover may lose it: check with ds-migrate status "
                      "(and run up again) after a failover",
                      file);
    ds__error_set_sqlstate(err, "01000");
    if (err)
        err->retryable = true;
    return st;
}

/* How often a no-transaction statement that hit lock_timeout is tried. */
#define LOCK_RETRIES 8

static bool lock_timed_out(const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && !strcmp(state, "55P03");
}

/* The statement watcher of a rehearsal (rehearse.c), per thread: only the
 * run on the thread that set it reports to it. */
static _Thread_local ds__migrate_stmt_hook_fn stmt_hook;
static _Thread_local void *stmt_hook_ud;

void ds__migrate_set_stmt_hook(ds__migrate_stmt_hook_fn fn, void *ud) {
    stmt_hook = fn;
    stmt_hook_ud = ud;
}

static ds_status exec_stmt_watched(file_run *fr, const ds__sql_stmt *s,
                                   ds_error *err);

static ds_status exec_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    file_run *fr = ud;
    if (!stmt_hook)
        return exec_stmt_watched(fr, s, err);
    stmt_hook(stmt_hook_ud, false, true, fr->file, s, fr->r->conn);
    ds_status st = exec_stmt_watched(fr, s, err);
    stmt_hook(stmt_hook_ud, true, st == DS_OK, fr->file, s, fr->r->conn);
    return st;
}

static ds_status exec_stmt_watched(file_run *fr, const ds__sql_stmt *s,
                                   ds_error *err) {
    bool run = true;
    ds_status st = when_allows(fr, s, &run, err);
    if (st != DS_OK)
        return st;
    if (!run)
        return ds__migrate_report_statement(&fr->r->prog, fr->file, fr->no_tx,
                                            ++fr->executed, fr->statements,
                                            err);
    ds__batch batch;
    st = ds__migrate_batch_begin(fr->r->conn, fr->file, fr->sql, s, &batch,
                                 err);
    if (st != DS_OK)
        return st;
    char *sql = ds__strndup(s->text, s->len);
    if (!sql)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    bool again = true; /* a "-- ds:batch" statement: until no row changes */
    while (st == DS_OK && again) {
        again = false;
        PGresult *res = NULL;
        /* Outside a transaction each statement is its own: one that gave up
         * waiting for its lock (lock_timeout) changed nothing and is tried
         * again after a jittered pause, so a deploy rides out a long query
         * instead of failing, and never queues traffic for longer than
         * lock_timeout at a time. */
        for (int attempt = 0;; attempt++) {
            if (fr->no_tx && (st = repair_invalid_index(fr, s, err)) != DS_OK)
                break;
            res = ds__conn_simple(fr->r->conn, sql);
            if (!fr->no_tx || attempt + 1 >= LOCK_RETRIES ||
                !lock_timed_out(res))
                break;
            PQclear(res);
            res = NULL;
            int64_t nap = ds__lock_retry_pause_us(100000, attempt, 5);
            ds__log(DS_LOG_WARN, MODULE,
                    "%s:%d: lock_timeout (attempt %d of %d); trying again in "
                    "%lld ms",
                    fr->file, s->line, attempt + 1, LOCK_RETRIES,
                    (long long)(nap / 1000));
            ds__sleep_us(nap);
        }
        if (st != DS_OK)
            break;
        switch (res ? PQresultStatus(res) : PGRES_FATAL_ERROR) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
            break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            ds_conn_discard(fr->r->conn);
            st = ds__error_set(err, DS_ERR_MIGRATION,
                               "%s:%d: COPY to or from the client is not "
                               "supported in migrations",
                               fr->file, s->line);
            break;
        default:
            st = stmt_failed(fr, s, res, err);
            break;
        }
        if (st == DS_OK && fr->no_tx)
            st = not_durable(fr->r, fr->file, s->line, err);
        if (st == DS_OK && batch.on)
            st = ds__migrate_batch_step(&fr->r->prog, &batch, res, &again,
                                        err);
        PQclear(res);
    }
    ds__free(sql);
    if (st == DS_OK)
        st = ds__migrate_report_statement(&fr->r->prog, fr->file, fr->no_tx,
                                          ++fr->executed, fr->statements, err);
    return st;
}

static const char *file_name(const step *s) {
    return s->up ? s->file->up_file : s->file->down_file;
}

static ds_status run_file(runner *r, const step *s, int64_t stays_at,
                          ds_error *err) {
    const ds__migration_file *f = s->file;
    const char *sql = s->up ? f->up : f->down;
    file_run fr = {r, file_name(s), sql, s->up ? f->up_no_tx : f->down_no_tx,
                   stays_at, 0, 0};
    size_t len = s->up ? f->up_len : f->down_len;
    /* Refuse a malformed file before any of it runs. */
    ds_status st = ds__sql_split(fr.file, sql, len, check_stmt, &fr, err);
    if (st == DS_OK)
        st = ds__sql_split(fr.file, sql, len, exec_stmt, &fr, err);
    return st;
}

static ds_status record_step(runner *r, const step *s, int64_t duration_ms,
                             ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, s->file->version);
    if (!s->up)
        return run_command(r->conn, S_UNRECORD, &p, err);
    ds__bind_text(&p, s->file->name);
    ds__bind_text(&p, s->file->checksum);
    ds__bind_bool(&p, s->file->up_no_tx);
    ds__bind_int64(&p, duration_ms);
    return run_command(r->conn, S_RECORD, &p, err);
}

static ds_status commit(runner *r, const step *s, ds_error *err) {
    PGresult *res = ds__conn_simple(r->conn, "COMMIT");
    ds_status st = DS_OK;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        st = ds__pg_error(r->conn, NULL, res, file_name(s), err);
        if (st == DS_ERR_CONNECTION)
            error_append(err, "; COMMIT was sent, so the outcome is unknown: "
                              "check with ds-migrate status");
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        st = ds__error_set(err, DS_ERR_MIGRATION,
                           "%s: the transaction was rolled back at COMMIT",
                           file_name(s));
    } else {
        st = not_durable(r, file_name(s), 0, err);
    }
    PQclear(res);
    return st;
}

/* One step inside the locked transaction begin_step() opened. */
static ds_status run_in_tx(runner *r, const step *s, int64_t current,
                           ds_error *err) {
    emit(r, s->up ? DS_MIGRATE_APPLYING : DS_MIGRATE_REVERTING, s->file, s->up,
         0, NULL);
    ds__log(DS_LOG_INFO, MODULE, "%s %s", s->up ? "applying" : "reverting",
            file_name(s));
    r->ran_any = true;
    int64_t t0 = ds__now_us();
    ds_status st = run_file(r, s, current, err);
    if (st == DS_OK)
        st = record_step(r, s, (ds__now_us() - t0) / 1000, err);
    if (st == DS_OK)
        st = commit(r, s, err);
    if (st != DS_OK)
        return st; /* release rolls back whatever is still open */
    int64_t us = ds__now_us() - t0;
    emit(r, s->up ? DS_MIGRATE_APPLIED : DS_MIGRATE_REVERTED, s->file, s->up,
         us, NULL);
    ds__log(DS_LOG_INFO, MODULE, "%s %s in %lld ms",
            s->up ? "applied" : "reverted", file_name(s),
            (long long)(us / 1000));
    return DS_OK;
}

/* Is this lease going through a transaction pooler? A pooler that
 * multiplexes server connections must route cancel requests itself, so it
 * hands the client its own BackendKeyData: the PID libpq was given at
 * connect time then differs from the server's pg_backend_pid(). (The pool's
 * statement mode is not the test: `pooler` mode is also a fine choice on a
 * direct connection, e.g. for ds-migrate's one-shot statements.) */
static ds_status behind_pooler(runner *r, bool *out, ds_error *err) {
    *out = false;
    PGresult *res = run_stmt(r->conn, S_BACKEND_PID, NULL, err);
    if (!res)
        return err ? err->code : DS_ERR_DB;
    const char *v = single_value(res, 4);
    if (v)
        *out = (int)ds__get_be32(v) != ds__conn_backend_pid(r->conn);
    PQclear(res);
    return v ? DS_OK
             : ds__error_set(err, DS_ERR_INTERNAL,
                             "migrate.backend_pid: unexpected result");
}

/*
 * A `-- ds:no-transaction` step: session lock on a direct connection, the
 * statements one by one, the record, unlock. `*ran` is false when another
 * runner got there first (the caller then plans again).
 */
static ds_status run_without_tx(runner *r, const step *planned, int64_t target,
                                bool *ran, ds_error *err) {
    *ran = false;
    bool pooled = false;
    ds_status st = behind_pooler(r, &pooled, err);
    if (st != DS_OK)
        return st;
    if (pooled)
        return ds__error_set(
            err, DS_ERR_MIGRATION,
            "%s: starts with \"" DS_MIGRATE_NO_TX_MARK "\" and so needs a "
            "session-level lock, which a transaction-mode pooler (PgBouncer) "
            "cannot hold; run the migrations against the direct database URL, "
            "not the pooler's",
            file_name(planned));
    /* Session state from here on: this connection never goes back. */
    ds_conn_discard(r->conn);
    r->ran_any = true;
    if ((st = take_lock(r, true, err)) != DS_OK)
        return st;
    ds__applied_list applied = {0};
    st = set_timeouts(r, false, err);
    if (st == DS_OK)
        st = read_verified(r, &applied, err);
    int64_t *vers = st == DS_OK ? versions_of(&applied, 0) : NULL;
    if (st == DS_OK && !vers)
        st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    step s;
    bool still = st == DS_OK && next_step(r->set, vers, applied.count, target,
                                          &s) &&
                 s.file == planned->file && s.up == planned->up;
    int64_t current = current_version(&applied);
    ds__free(vers);
    ds__applied_list_clear(&applied);
    if (st == DS_OK && still) {
        emit(r, s.up ? DS_MIGRATE_APPLYING : DS_MIGRATE_REVERTING, s.file,
             s.up, 0, NULL);
        ds__log(DS_LOG_INFO, MODULE, "%s %s outside a transaction",
                s.up ? "applying" : "reverting", file_name(&s));
        int64_t t0 = ds__now_us();
        st = run_file(r, &s, current, err);
        if (st == DS_OK)
            st = record_step(r, &s, (ds__now_us() - t0) / 1000, err);
        if (st == DS_OK) {
            *ran = true;
            emit(r, s.up ? DS_MIGRATE_APPLIED : DS_MIGRATE_REVERTED, s.file,
                 s.up, ds__now_us() - t0, NULL);
        }
    }
    /* The lease is discarded anyway; unlocking is for a pool that is slow
     * to close it, and harmless when the connection already failed. */
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, DS_MIGRATE_LOCK_KEY);
    bool released;
    ds_error ignore = {0};
    (void)run_bool(r->conn, S_SESSION_UNLOCK, &p, &released, &ignore);
    return st;
}

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
static ds_status dry_script(const runner *r, const step *s, bool create_table,
                            ds__strbuf *b) {
    const ds__migration_file *f = s->file;
    bool no_tx = s->up ? f->up_no_tx : f->down_no_tx;
    char lt[32];
    lock_timeout_text(r, lt, sizeof lt);
    ds__strbuf_printf(b, "-- %s: version %lld %s, %s\n", file_name(s),
              (long long)f->version, s->up ? "up" : "down",
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
        ds__strbuf_printf(b, "SET %s%s = '%s';\n", no_tx ? "" : "LOCAL ", set[i].name,
                  set[i].value);
    if (create_table)
        ds__strbuf_printf(b, "%s;\n", BOOKKEEPING_DDL);
    const char *sql = s->up ? f->up : f->down;
    size_t len = s->up ? f->up_len : f->down_len;
    dry_file d = {b, sql, 0};
    ds_error ignored = {0};
    if (ds__sql_split(file_name(s), sql, len, dry_stmt, &d, &ignored) != DS_OK)
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
        ds__strbuf_printf(b, "DELETE FROM ds_schema_migrations WHERE version = %lld;\n",
                  (long long)f->version);
    ds__strbuf_printf(b, no_tx ? "SELECT pg_advisory_unlock(%lld);\n" : "COMMIT;\n",
              (long long)DS_MIGRATE_LOCK_KEY);
    return b->failed ? DS_ERR_NOMEM : DS_OK;
}

static ds_status dry_run(runner *r, int64_t target, int steps, int *changed,
                         ds_error *err) {
    ds__applied_list applied = {0};
    ds_status st = ds__migrate_read_applied(r->conn, true, &applied, err);
    if (st == DS_OK)
        st = verify_history(r->set, &applied, err);
    if (st != DS_OK) {
        ds__applied_list_clear(&applied);
        return st;
    }
    if (steps > 0)
        target = applied.count > (size_t)steps
                     ? applied.rows[applied.count - (size_t)steps - 1].version
                     : 0;
    int64_t *vers = versions_of(&applied, r->set->count);
    size_t n = applied.count;
    bool create_table = !applied.table_exists;
    ds__applied_list_clear(&applied);
    if (!vers)
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    step s;
    while (st == DS_OK && next_step(r->set, vers, n, target, &s)) {
        ds__strbuf b = {0};
        if (dry_script(r, &s, create_table, &b) != DS_OK) {
            st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
        } else {
            emit(r, DS_MIGRATE_SQL, s.file, s.up, 0, b.s);
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

/* ---- the entry points -------------------------------------------------------- */

/* The configured migrate_lock_timeout_ms; -1 (none) when 0. */
static int default_lock_timeout_ms(const ds_pool *pool) {
    int ms = ds__pool_settings_get(pool)->migrate_lock_timeout_ms;
    return ms > 0 ? ms : -1;
}

static ds_status runner_open(runner *r, ds_pool *pool,
                             const ds_migrate_options *opts,
                             const ds_migrate_options *defaults,
                             ds_error *err) {
    (void)defaults;
    memset(r, 0, sizeof *r);
    r->pool = pool;
    ds_status st = DS__IN(opts, &r->o, ds_migrate_options, err);
    if (st != DS_OK)
        return st;
    r->opts = &r->o;
    r->lock_timeout_ms = r->opts->lock_timeout_ms > 0
                             ? r->opts->lock_timeout_ms
                             : r->opts->lock_timeout_ms < 0
                                   ? -1
                                   : default_lock_timeout_ms(pool);
    r->lock_wait_ms = r->opts->lock_wait_ms > 0   ? r->opts->lock_wait_ms
                      : r->opts->lock_wait_ms < 0 ? -1
                                                  : DEFAULT_LOCK_WAIT_MS;
    ds__migrate_progress_init(&r->prog, "migrate", r->opts);
    return ds__migration_set_load(r->opts->dir, &r->set, err);
}

static void runner_close(runner *r) {
    unlease(r);
    ds__migration_set_free(r->set);
    r->set = NULL;
}

/* Moves towards `target`; with steps > 0 the target is computed from the
 * record under the lock (down N). */
static ds_status migrate(ds_pool *pool, const ds_migrate_options *opts,
                         int64_t target, int steps, int *changed,
                         ds_error *err) {
    if (changed)
        *changed = 0;
    int count = 0;
    ds_migrate_options defaults = DS_MIGRATE_OPTIONS_INIT;
    runner r;
    ds_status st = runner_open(&r, pool, opts, &defaults, err);
    if (st == DS_OK && steps == 0 && target != INT64_MAX && target != 0 &&
        !ds__migration_set_find(r.set, target))
        st = ds__error_set(err, DS_ERR_INVALID,
                           "migrations: no migration has version %lld",
                           (long long)target);
    if (st == DS_OK)
        st = lease(&r, true, err);
    if (st == DS_OK && r.opts->dry_run) {
        st = dry_run(&r, target, steps, &count, err);
        runner_close(&r);
        if (changed)
            *changed = count;
        return st;
    }
    bool first = true;
    int64_t planned = 0;
    while (st == DS_OK) {
        ds__applied_list applied = {0};
        st = begin_step(&r, &applied, err);
        if (st == DS_OK && first && steps > 0)
            target = applied.count > (size_t)steps
                         ? applied.rows[applied.count - (size_t)steps - 1]
                               .version
                         : 0;
        if (st == DS_OK && first)
            planned = ds__migrate_planned(r.set, &applied, target);
        first = false;
        int64_t *vers = st == DS_OK ? versions_of(&applied, 0) : NULL;
        if (st == DS_OK && !vers)
            st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
        step s;
        bool more = st == DS_OK && next_step(r.set, vers, applied.count, target,
                                             &s);
        int64_t current = current_version(&applied);
        ds__free(vers);
        ds__applied_list_clear(&applied);
        if (st != DS_OK)
            break;
        if (!more) {
            st = simple(&r, "COMMIT", err); /* keeps a new record table */
            break;
        }
        bool no_tx = s.up ? s.file->up_no_tx : s.file->down_no_tx;
        if (!no_tx) {
            st = run_in_tx(&r, &s, current, err);
            count += st == DS_OK;
            if (st == DS_OK)
                st = ds__migrate_report_file(&r.prog, count, planned, err);
            continue;
        }
        if ((st = simple(&r, "COMMIT", err)) != DS_OK)
            break;
        bool ran = false;
        st = run_without_tx(&r, &s, target, &ran, err);
        count += ran;
        if (st == DS_OK && ran)
            st = ds__migrate_report_file(&r.prog, count, planned, err);
        /* That connection holds session state: take a fresh one. */
        unlease(&r);
        if (st == DS_OK)
            st = lease(&r, true, err);
    }
    runner_close(&r);
    if (changed)
        *changed = count;
    return st;
}

DS_EXPORT ds_status ds_migrate_up(ds_pool *pool, const ds_migrate_options *opts,
                                  int *applied, ds_error *err) {
    if (applied)
        *applied = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    return migrate(pool, opts, INT64_MAX, 0, applied, err);
}

DS_EXPORT ds_status ds_migrate_down(ds_pool *pool,
                                    const ds_migrate_options *opts, int steps,
                                    int *reverted, ds_error *err) {
    if (reverted)
        *reverted = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, steps >= 1, "steps must be at least 1");
    return migrate(pool, opts, 0, steps, reverted, err);
}

DS_EXPORT ds_status ds_migrate_to(ds_pool *pool, const ds_migrate_options *opts,
                                  int64_t version, int *changed,
                                  ds_error *err) {
    if (changed)
        *changed = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, version >= 0, "version must be 0 or more");
    return migrate(pool, opts, version, 0, changed, err);
}

/* ---- status and verify ---------------------------------------------------- */

DS_EXPORT const char *ds_migration_state_str(ds_migration_state state) {
    switch (state) {
    case DS_MIGRATION_PENDING: return "pending";
    case DS_MIGRATION_APPLIED: return "applied";
    case DS_MIGRATION_CHANGED: return "changed";
    case DS_MIGRATION_MISSING: return "missing";
    case DS_MIGRATION_OUT_OF_ORDER: return "out-of-order";
    }
    return "unknown";
}

DS_EXPORT void ds_migration_list_free(ds_migration_list *list) {
    if (!list)
        return;
    for (size_t k = 0; k < list->count; k++)
        ds__free((char *)list->items[k].name);
    ds__free(list->items);
    ds__free(list);
}

static ds_status build_list(const ds__migration_set *set,
                            const ds__applied_list *applied,
                            ds_migration_list **out, ds_error *err) {
    ds_migration_list *l = ds__calloc(1, sizeof *l);
    size_t cap = set->count + applied->count;
    if (l)
        l->items = ds__calloc(cap ? cap : 1, sizeof *l->items);
    if (!l || !l->items) {
        ds__free(l);
        return ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    }
    l->current_version = current_version(applied);
    l->latest_version = set->count ? set->files[set->count - 1].version : 0;
    l->consistent = true;
    size_t i = 0, j = 0;
    while (i < set->count || j < applied->count) {
        const ds__migration_file *f = i < set->count ? &set->files[i] : NULL;
        const ds__applied *a = j < applied->count ? &applied->rows[j] : NULL;
        ds_migration *m = &l->items[l->count];
        const char *name;
        if (f && (!a || f->version <= a->version)) {
            bool same = a && a->version == f->version;
            m->version = f->version;
            name = f->name;
            m->no_transaction = f->up_no_tx;
            memcpy(m->checksum, f->checksum, sizeof m->checksum);
            if (same) {
                m->state = ds__migration_checksum_matches(f, a->name,
                                                          a->checksum)
                               ? DS_MIGRATION_APPLIED
                               : DS_MIGRATION_CHANGED;
                m->applied_at_us = a->applied_at_us;
                m->duration_ms = a->duration_ms;
                memcpy(m->applied_checksum, a->checksum,
                       sizeof m->applied_checksum);
                j++;
            } else {
                m->state = f->version < l->current_version
                               ? DS_MIGRATION_OUT_OF_ORDER
                               : DS_MIGRATION_PENDING;
            }
            i++;
        } else {
            m->version = a->version;
            name = a->name;
            m->state = DS_MIGRATION_MISSING;
            m->no_transaction = a->no_transaction;
            m->applied_at_us = a->applied_at_us;
            m->duration_ms = a->duration_ms;
            memcpy(m->applied_checksum, a->checksum,
                   sizeof m->applied_checksum);
            j++;
        }
        m->name = ds__strdup(name);
        if (!m->name) {
            ds_migration_list_free(l);
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "migrations: out of memory");
        }
        l->count++;
        if (m->state == DS_MIGRATION_PENDING)
            l->pending++;
        else if (m->state != DS_MIGRATION_APPLIED)
            l->consistent = false;
    }
    *out = l;
    return DS_OK;
}

/* Files and record, read without a lock. */
static ds_status read_state(ds_pool *pool, const ds_migrate_options *opts,
                            runner *r, ds__applied_list *applied,
                            ds_error *err) {
    static const ds_migrate_options defaults = DS_MIGRATE_OPTIONS_INIT;
    ds_status st = runner_open(r, pool, opts, &defaults, err);
    if (st == DS_OK)
        st = lease(r, false, err);
    if (st == DS_OK)
        st = ds__migrate_read_applied(r->conn, true, applied, err);
    return st;
}

DS_EXPORT ds_status ds_migrate_status(ds_pool *pool,
                                      const ds_migrate_options *opts,
                                      ds_migration_list **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    runner r;
    ds__applied_list applied = {0};
    ds_status st = read_state(pool, opts, &r, &applied, err);
    if (st == DS_OK)
        st = build_list(r.set, &applied, out, err);
    ds__applied_list_clear(&applied);
    runner_close(&r);
    return st;
}

DS_EXPORT ds_status ds_migrate_verify(ds_pool *pool,
                                      const ds_migrate_options *opts,
                                      ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    runner r;
    ds__applied_list applied = {0};
    ds_status st = read_state(pool, opts, &r, &applied, err);
    if (st == DS_OK)
        st = verify_history(r.set, &applied, err);
    ds__applied_list_clear(&applied);
    runner_close(&r);
    return st;
}

/* ---- partition maintenance ---------------------------------------------------- */

DS_EXPORT ds_status ds_migrate_maintain(ds_pool *pool,
                                        const ds_migrate_options *opts,
                                        int months_ahead, int *created,
                                        ds_error *err) {
    if (created)
        *created = 0;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, months_ahead >= 0 && months_ahead <= 120,
                 "months_ahead must be 0 to 120");
    ds_migrate_options o;
    ds_status checked = DS__IN(opts, &o, ds_migrate_options, err);
    if (checked != DS_OK)
        return checked;
    opts = &o;
    runner r;
    memset(&r, 0, sizeof r);
    r.pool = pool;
    r.lock_timeout_ms = default_lock_timeout_ms(pool);
    ds_status st = lease(&r, true, err);
    int n = 0;
    if (st == DS_OK)
        st = ds__events_ensure_partitions(r.conn, months_ahead,
                                          r.lock_timeout_ms, opts, &n, err);
    unlease(&r);
    if (st == DS_OK) {
        if (created)
            *created = n;
        if (n)
            ds__log(DS_LOG_INFO, MODULE,
                    "created %d analytics_events partition(s)", n);
    }
    return st;
}
