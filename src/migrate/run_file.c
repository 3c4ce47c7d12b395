/* Running one migration file: its statements one by one, with the
 * online tools (ds:when, ds:batch, lock_timeout retries, INVALID index
 * repair) and errors that name the file and line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/runner.h"

#define MODULE "migrate"

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
    ds__runner *r;
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
        ds__migrate_error_append(err, " (context: %.*s)",
                                 (int)(n > 160 ? 160 : n), ctx);
    }
    if (st != DS_ERR_CONNECTION) {
        st = DS_ERR_MIGRATION;
        if (err)
            err->code = st;
    }
    if (fr->no_tx)
        ds__migrate_error_append(err,
                     "; the file runs outside a transaction, so the statements "
                     "before line %d took effect and stay: make them "
                     "idempotent (IF NOT EXISTS) and run again",
                     s->line);
    else if (st == DS_ERR_CONNECTION)
        ds__migrate_error_append(err, "; the server rolls the migration back");
    else
        ds__migrate_error_append(
            err, "; rolled back, the database stays at version %lld",
            (long long)fr->stays_at);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (fr->stays_at == 0 && state &&
        (!strcmp(state, "42P07") || !strcmp(state, "42710")))
        ds__migrate_error_append(
            err, " (the database holds objects but no migration "
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
        ds__migrate_error_append(
            err, " (in the ds:when condition above line %d)", s->line);
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
ds_status ds__migrate_not_durable(ds__runner *r, const char *file, int line,
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

/* How often a no-transaction statement that gave up on a lock is tried. */
#define LOCK_RETRIES 8

/* lock_timeout (55P03), or chosen as a deadlock's victim (40P01): either
 * way the statement was rolled back whole and changed nothing. */
static bool lock_given_up(const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && (!strcmp(state, "55P03") || !strcmp(state, "40P01"));
}

/* The statement watcher of a rehearsal (rehearse.c), per thread: only the
 * run on the thread that set it reports to it. */
_Thread_local ds__migrate_stmt_hook_fn stmt_hook;
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
         * waiting for its lock (lock_timeout, or a deadlock with traffic)
         * changed nothing and is tried
         * again after a jittered pause, so a deploy rides out a long query
         * instead of failing, and never queues traffic for longer than
         * lock_timeout at a time. */
        for (int attempt = 0;; attempt++) {
            if (fr->no_tx && (st = repair_invalid_index(fr, s, err)) != DS_OK)
                break;
            res = ds__conn_simple(fr->r->conn, sql);
            if (!fr->no_tx || attempt + 1 >= LOCK_RETRIES ||
                !lock_given_up(res))
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
            ds_pool_conn_discard(fr->r->conn);
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
            st = ds__migrate_not_durable(fr->r, fr->file, s->line, err);
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

const char *ds__migrate_step_file(const ds__step *s) {
    return s->up ? s->file->up_file : s->file->down_file;
}

ds_status ds__migrate_run_file(ds__runner *r, const ds__step *s,
                               int64_t stays_at, ds_error *err) {
    const ds__migration_file *f = s->file;
    const char *sql = s->up ? f->up : f->down;
    file_run fr = {r,        ds__migrate_step_file(s),
                   sql,      s->up ? f->up_no_tx : f->down_no_tx,
                   stays_at, 0,
                   0};
    size_t len = s->up ? f->up_len : f->down_len;
    /* Refuse a malformed file before any of it runs. */
    ds_status st = ds__sql_split(fr.file, sql, len, check_stmt, &fr, err);
    if (st == DS_OK)
        st = ds__sql_split(fr.file, sql, len, exec_stmt, &fr, err);
    return st;
}
