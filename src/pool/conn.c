/* Statement execution on a leased connection: the per-connection prepared
 * statement cache, the pooler-safe unnamed path, and error mapping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_POOL_SOURCE /* this file may see the pool's structures */
#include "pool/pool_internal.h"

#define STMT_CACHE_MAX 512 /* beyond this, statements run unnamed */

ds_status ds__sqlstate_status(const char *s) {
    if (!s || strlen(s) != 5)
        return DS_ERR_DB;
    if (strcmp(s, "23505") == 0)
        return DS_ERR_CONFLICT;
    if (strcmp(s, "57014") == 0 || strcmp(s, "55P03") == 0)
        return DS_ERR_TIMEOUT;
    if (strncmp(s, "08", 2) == 0 || strncmp(s, "57P0", 4) == 0 ||
        strcmp(s, "53300") == 0)
        return DS_ERR_CONNECTION;
    if (strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0)
        return DS_ERR_INVALID;
    return DS_ERR_DB;
}

/* libpq messages end in newlines and may span lines; keep them on one. */
static void one_line(char *dst, size_t cap, const char *src) {
    size_t o = 0;
    for (; src && *src && o + 1 < cap; src++) {
        if (*src == '\n') {
            if (src[1] && o + 3 < cap) {
                dst[o++] = ';';
                dst[o++] = ' ';
            }
            continue;
        }
        dst[o++] = *src;
    }
    while (o && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
}

bool ds__server_read_only(PGconn *pg, bool *known) {
    const char *standby = pg ? PQparameterStatus(pg, "in_hot_standby") : NULL;
    const char *ro = pg ? PQparameterStatus(pg, "default_transaction_read_only")
                        : NULL;
    *known = standby || ro;
    return (standby && strcmp(standby, "on") == 0) ||
           (ro && strcmp(ro, "on") == 0);
}

/* The server ended the session or is going away: 08xxx (connection
 * exception), 57P01 admin shutdown (fast shutdown, pg_terminate_backend,
 * a failover tool stopping the old primary), 57P02 crash shutdown, 57P03
 * cannot connect now. Such a connection must not be reused even when
 * libpq has not noticed the closed socket yet. */
static bool session_over(const char *state) {
    return state && (strncmp(state, "08", 2) == 0 ||
                     strcmp(state, "57P01") == 0 ||
                     strcmp(state, "57P02") == 0 ||
                     strcmp(state, "57P03") == 0);
}

/* 25006 (read-only transaction) on a connection that needs a writable
 * server: the server was demoted to a standby or made read-only under us,
 * so the statement was not applied and a fresh connection (following a
 * multi-host URL with target_session_attrs=read-write to the new primary)
 * is the cure. When the server says it is writable the read-only state is
 * the caller's own (SET TRANSACTION READ ONLY) and the error stays a
 * statement error. Behind a pooler the server's state is not reported;
 * then a failover is the likely cause. */
static bool server_demoted(const ds_conn *c, PGconn *pg, const char *state) {
    if (!state || strcmp(state, "25006") != 0 || !c || !c->sub ||
        !c->sub->needs_writable)
        return false;
    bool known;
    bool ro = ds__server_read_only(pg, &known);
    return ro || !known;
}

ds_status ds__pg_error(ds_conn *c, PGconn *pg, const PGresult *res,
                       const char *context, ds_error *err) {
    if (!pg && c)
        pg = c->pg;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool demoted = server_demoted(c, pg, state);
    bool lost = !pg || PQstatus(pg) != CONNECTION_OK || session_over(state) ||
                demoted;
    ds_status code = (lost && !state) || demoted ? DS_ERR_CONNECTION
                                                 : ds__sqlstate_status(state);
    char msg[DS_ERROR_MESSAGE_MAX];
    if (res && state) {
        const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
        snprintf(msg, sizeof msg, "%s%s%s%s%s (SQLSTATE %s)",
                 primary ? primary : "error", detail ? "; " : "",
                 detail ? detail : "", hint ? "; hint: " : "",
                 hint ? hint : "", state);
    } else {
        const char *raw = res ? PQresultErrorMessage(res) : NULL;
        if (!raw || !*raw)
            raw = pg ? PQerrorMessage(pg) : "no connection";
        one_line(msg, sizeof msg, raw);
        if (!msg[0])
            snprintf(msg, sizeof msg, "unknown error");
    }
    ds__error_set(err, code, "%s: %s%s", context ? context : "query", msg,
                  demoted ? "; the server is read-only (a standby or a "
                            "demoted primary): reconnecting"
                          : "");
    ds__error_set_sqlstate(err, state);
    if (err && lost)
        err->retryable = true;
    if (c) {
        if (lost)
            c->discard = true;
        if (err && c->sub)
            ds__error_scrub(err, c->sub->password);
    }
    return code;
}

/* ---- synchronous commit that was not waited for ----------------------- */

/* With synchronous replication, a cancel (pg_cancel_backend(), a cancel
 * request; not statement_timeout, which the server disarms before it
 * commits) that arrives while COMMIT waits for the standby does not undo
 * the commit: the server answers success plus this WARNING (SQLSTATE
 * 01000, primary message "canceling wait for synchronous replication due
 * to user request", detail "The transaction has already committed locally,
 * but might not have been replicated to the standby."). Reporting that as
 * success would acknowledge a write that a failover can lose. The warning
 * has no SQLSTATE of its own (01000 is also what RAISE WARNING uses), so
 * its text is what identifies it. */
#define SYNC_REP_CANCEL "canceling wait for synchronous replication"

void ds__conn_notice(void *arg, const PGresult *res) {
    ds_conn *c = arg;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (c && state && strcmp(state, "01000") == 0 && msg &&
        strncmp(msg, SYNC_REP_CANCEL, strlen(SYNC_REP_CANCEL)) == 0)
        c->not_durable = true;
    if (ds__log_enabled(DS_LOG_DEBUG))
        ds__log(DS_LOG_DEBUG, "pool", "server notice: %s", msg ? msg : "");
}

ds_status ds__conn_check_durable(ds_conn *c, const char *context,
                                 ds_error *err) {
    if (!c->not_durable)
        return DS_OK;
    c->not_durable = false;
    ds__error_set(err, DS_ERR_NOT_DURABLE,
                  "%s: committed on the primary, but the wait for the "
                  "synchronous standby was cancelled: the write may be lost "
                  "in a failover; repeat it with its idempotency key",
                  context ? context : "commit");
    ds__error_set_sqlstate(err, "01000");
    if (err)
        err->retryable = true;
    return DS_ERR_NOT_DURABLE;
}

/* ---- prepared statement cache ----------------------------------------- */

/* A statement of a definition table (ds__stmt_run) is looked up by the
 * definition's address: hashing its text (hundreds of bytes, one
 * dependent multiply per byte) cost more than the rest of the lookup on
 * every call. The text is still compared on a hit, so a definition
 * rebuilt at the same address with other text is never confused. Ad-hoc
 * SQL (ds__sql_run) has no stable address and is hashed by its text. */
static uint64_t stmt_hash(const void *def, const char *sql, int nparams,
                          const Oid *types) {
    if (def) {
        uint64_t h = (uint64_t)(uintptr_t)def * UINT64_C(0x9e3779b97f4a7c15);
        return (h ^ (h >> 29)) | 1; /* 0 = empty */
    }
    uint64_t h = UINT64_C(1469598103934665603);
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    for (int i = 0; types && i < nparams; i++)
        h = (h ^ types[i]) * UINT64_C(1099511628211);
    return (h ^ (uint64_t)nparams) * UINT64_C(1099511628211) | 1; /* 0 = empty */
}

static bool stmt_matches(const ds_stmt *s, uint64_t h, const void *def,
                         const char *sql, int nparams, const Oid *types) {
    if (s->hash != h || s->def != def || s->nparams != nparams ||
        strcmp(s->sql, sql) != 0)
        return false;
    for (int i = 0; i < nparams; i++)
        if ((types ? types[i] : 0) != s->types[i])
            return false;
    return true;
}

static ds_stmt *stmt_find(ds_conn *c, uint64_t h, const void *def,
                          const char *sql, int nparams, const Oid *types) {
    if (!c->stmt_cap)
        return NULL;
    for (uint32_t i = (uint32_t)h & (c->stmt_cap - 1);;
         i = (i + 1) & (c->stmt_cap - 1)) {
        ds_stmt *s = &c->stmts[i];
        if (!s->hash)
            return NULL;
        if (stmt_matches(s, h, def, sql, nparams, types))
            return s;
    }
}

static void stmt_cache_clear(ds_conn *c) {
    for (uint32_t i = 0; i < c->stmt_cap; i++) {
        ds__free(c->stmts[i].sql);
        ds__free(c->stmts[i].types);
    }
    ds__free(c->stmts);
    c->stmts = NULL;
    c->stmt_cap = c->stmt_count = 0;
}

void ds__conn_free_cache(ds_conn *c) { stmt_cache_clear(c); }

/* Returns the new entry, or NULL when the cache is full or memory ran out
 * (the caller then runs the statement unnamed: slower, never wrong). */
static ds_stmt *stmt_insert(ds_conn *c, uint64_t h, const void *def,
                            const char *sql, int nparams, const Oid *types) {
    if (c->stmt_count >= STMT_CACHE_MAX)
        return NULL;
    if ((c->stmt_count + 1) * 4 > c->stmt_cap * 3) {
        uint32_t cap = c->stmt_cap ? c->stmt_cap * 2 : 32;
        ds_stmt *t = ds__calloc(cap, sizeof *t);
        if (!t)
            return NULL;
        for (uint32_t i = 0; i < c->stmt_cap; i++) {
            ds_stmt *s = &c->stmts[i];
            if (!s->hash)
                continue;
            uint32_t j = (uint32_t)s->hash & (cap - 1);
            while (t[j].hash)
                j = (j + 1) & (cap - 1);
            t[j] = *s;
        }
        ds__free(c->stmts);
        c->stmts = t;
        c->stmt_cap = cap;
    }
    char *copy = ds__strdup(sql);
    Oid *tcopy = ds__calloc((size_t)(nparams ? nparams : 1), sizeof(Oid));
    if (!copy || !tcopy) {
        ds__free(copy);
        ds__free(tcopy);
        return NULL;
    }
    for (int i = 0; i < nparams; i++)
        tcopy[i] = types ? types[i] : 0;
    uint32_t j = (uint32_t)h & (c->stmt_cap - 1);
    while (c->stmts[j].hash)
        j = (j + 1) & (c->stmt_cap - 1);
    ds_stmt *s = &c->stmts[j];
    s->hash = h;
    s->def = def;
    s->sql = copy;
    s->types = tcopy;
    s->nparams = nparams;
    s->id = ++c->next_stmt_id;
    snprintf(s->name, sizeof s->name, "ds_%u", s->id);
    c->stmt_count++;
    return s;
}

/* Backward-shift deletion keeps linear probing free of tombstones. */
static void stmt_remove(ds_conn *c, ds_stmt *s) {
    uint32_t mask = c->stmt_cap - 1, i = (uint32_t)(s - c->stmts), j = i;
    ds__free(s->sql);
    ds__free(s->types);
    memset(s, 0, sizeof *s);
    c->stmt_count--;
    for (;;) {
        j = (j + 1) & mask;
        if (!c->stmts[j].hash)
            return;
        uint32_t k = (uint32_t)c->stmts[j].hash & mask;
        bool in_place = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (in_place)
            continue;
        c->stmts[i] = c->stmts[j];
        memset(&c->stmts[j], 0, sizeof c->stmts[j]);
        i = j;
    }
}

static bool result_ok(const PGresult *r) {
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

static bool needs_reprepare(const PGresult *r) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* 26000: the statement vanished (DISCARD ALL, DEALLOCATE);
     * 0A000: "cached plan must not change result type" after DDL. */
    return s && (strcmp(s, "26000") == 0 || strcmp(s, "0A000") == 0);
}

/* For a pipeline (pipeline.c): the name of definition `def`'s prepared copy
 * on this connection, and whether it must be prepared first (*fresh).
 * False: run it unnamed (behind a pooler, or the cache is full). Found by
 * the definition, as ds__stmt_run finds it, so a statement used both ways
 * is prepared once. */
bool ds__conn_stmt_slot(ds_conn *c, const ds__stmt_def *def, char name[24],
                        bool *fresh) {
    *fresh = false;
    if (c->pooler)
        return false;
    const char *sql = def->sql;
    int nparams = def->nparams;
    const Oid *types = def->param_types;
    uint64_t h = stmt_hash(def, sql, nparams, types);
    ds_stmt *s = stmt_find(c, h, def, sql, nparams, types);
    if (!s) {
        s = stmt_insert(c, h, def, sql, nparams, types);
        if (!s)
            return false;
        *fresh = true;
    }
    memcpy(name, s->name, sizeof s->name);
    return true;
}

/* Forgets a statement whose preparation failed. */
void ds__conn_stmt_forget(ds_conn *c, const ds__stmt_def *def) {
    ds_stmt *s = stmt_find(c, stmt_hash(def, def->sql, def->nparams,
                                        def->param_types),
                           def, def->sql, def->nparams, def->param_types);
    if (s)
        stmt_remove(c, s);
}

typedef enum { PREP_DONE, PREP_UNNAMED, PREP_FAILED } prep_outcome;

/* Runs a named statement, preparing it on first use. PREP_UNNAMED asks the
 * caller to run it unnamed (cache full or out of memory); PREP_FAILED means
 * `err` is filled. */
static prep_outcome exec_prepared(ds_conn *c, const void *def,
                                  const char *sql, int nparams,
                                  const Oid *types, const char *const *values,
                                  const int *lengths, const int *formats,
                                  int result_format, bool may_retry,
                                  PGresult **out, ds_error *err) {
    uint64_t h = stmt_hash(def, sql, nparams, types);
    ds_stmt *s = stmt_find(c, h, def, sql, nparams, types);
    if (!s) {
        s = stmt_insert(c, h, def, sql, nparams, types);
        if (!s)
            return PREP_UNNAMED;
        PGresult *pr = PQprepare(c->pg, s->name, sql, nparams, types);
        if (!pr || PQresultStatus(pr) != PGRES_COMMAND_OK) {
            ds__pg_error(c, NULL, pr, "prepare", err);
            PQclear(pr);
            stmt_remove(c, s);
            return PREP_FAILED;
        }
        PQclear(pr);
    }
    PGresult *r = PQexecPrepared(c->pg, s->name, nparams, values, lengths,
                                 formats, result_format);
    if (r && !result_ok(r) && may_retry && needs_reprepare(r) &&
        PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
        PQclear(r);
        stmt_cache_clear(c);
        PQclear(PQexec(c->pg, "DEALLOCATE ALL"));
        return exec_prepared(c, def, sql, nparams, types, values, lengths,
                             formats, result_format, false, out, err);
    }
    *out = r;
    return PREP_DONE;
}

static PGresult *conn_exec(ds_conn *c, const void *def, const char *sql,
                           int nparams,
                           const Oid *types, const char *const *values,
                           const int *lengths, const int *formats,
                           int result_format, ds_error *err) {
    PGresult *r = NULL;
    prep_outcome o = PREP_UNNAMED;
    c->not_durable = false;
    if (!c->pooler)
        o = exec_prepared(c, def, sql, nparams, types, values, lengths,
                          formats, result_format, true, &r, err);
    if (o == PREP_FAILED)
        return NULL;
    if (o == PREP_UNNAMED)
        r = PQexecParams(c->pg, sql, nparams, types, values, lengths, formats,
                         result_format);
    if (r && result_ok(r)) {
        if (ds__conn_check_durable(c, "query", err) == DS_OK)
            return r;
        PQclear(r);
        return NULL;
    }
    ds__pg_error(c, NULL, r, "query", err);
    PQclear(r);
    return NULL;
}

/* Tells the pool's statement hook about one statement: its name, text,
 * time, rows and outcome, never its parameters. */
void ds__conn_report_statement(const ds_conn *c, const char *name,
                               const char *sql, int64_t start_us,
                               const PGresult *r, const ds_error *err) {
    ds_statement_event ev = {
        .name = name ? name : "",
        .sql = sql,
        .duration_us = ds__now_us() - start_us,
        .rows = -1,
        .status = r ? DS_OK : (err && err->code ? err->code : DS_ERR_DB),
        .sqlstate = !r && err ? err->sqlstate : "",
        .replica = c->sub && c->sub->replica,
    };
    if (r) {
        const char *affected = PQcmdTuples((PGresult *)r);
        ev.rows = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r)
                  : affected && *affected           ? strtoll(affected, NULL, 10)
                                                    : 0;
    }
    c->pool->statement_hook(c->pool->statement_hook_ud, &ev);
}

/* conn_exec(), timed and reported to the statement hook when there is one.
 * `def` is the statement's definition (NULL for ad-hoc SQL). */
static PGresult *exec_reported(ds_conn *c, const void *def, const char *name,
                               const char *sql,
                               int nparams, const Oid *types,
                               const char *const *values, const int *lengths,
                               const int *formats, int result_format,
                               ds_error *err) {
    if (!c->pool || !c->pool->statement_hook)
        return conn_exec(c, def, sql, nparams, types, values, lengths,
                         formats, result_format, err);
    /* The hook needs the error even when the caller passed none. */
    ds_error local = {0};
    ds_error *e = err ? err : &local;
    int64_t start = ds__now_us();
    PGresult *r = conn_exec(c, def, sql, nparams, types, values, lengths,
                            formats, result_format, e);
    ds__conn_report_statement(c, name, sql, start, r, e);
    return r;
}

PGresult *ds__conn_exec(ds_conn *c, const char *sql, int nparams,
                        const Oid *types, const char *const *values,
                        const int *lengths, const int *formats,
                        int result_format, ds_error *err) {
    return exec_reported(c, NULL, NULL, sql, nparams, types, values, lengths,
                         formats, result_format, err);
}

ds_status ds__conn_exec_simple(ds_conn *c, const char *sql, ds_error *err) {
    c->not_durable = false;
    PGresult *r = PQexec(c->pg, sql);
    /* PQexec returns the last statement's result; an earlier failure
     * stops the string and is what we get. */
    if (r && result_ok(r)) {
        PQclear(r);
        return ds__conn_check_durable(c, "query", err);
    }
    ds_status st = ds__pg_error(c, NULL, r, "query", err);
    PQclear(r);
    return st;
}

PGresult *ds__stmt_run(ds_conn *c, const ds__stmt_def *def, const ds__bind *b,
                       ds_error *err) {
    int n = b ? b->n : 0;
    if (b && ds__bind_check(b, def->name, err) != DS_OK)
        return NULL;
    if (n != def->nparams) {
        ds__error_set(err, DS_ERR_INTERNAL,
                      "%s: %d parameter(s) bound, the statement takes %d",
                      def->name, n, def->nparams);
        return NULL;
    }
    PGresult *r = exec_reported(c, def, def->name, def->sql, def->nparams,
                                def->param_types, b ? b->values : NULL,
                                b ? b->lengths : NULL, b ? b->formats : NULL,
                                1, err);
    if (!r)
        ds__error_prefix(err, "%s", def->name);
    return r;
}

PGresult *ds__sql_run(ds_conn *c, const char *sql, const ds__bind *b,
                      const char *context, ds_error *err) {
    if (b && ds__bind_check(b, context, err) != DS_OK)
        return NULL;
    PGresult *r = exec_reported(c, NULL, context, sql, b ? b->n : 0,
                                b ? b->types : NULL, b ? b->values : NULL,
                                b ? b->lengths : NULL, b ? b->formats : NULL,
                                1, err);
    if (!r && context)
        ds__error_prefix(err, "%s", context);
    return r;
}

bool ds__conn_use_unnamed(ds_conn *c, bool unnamed) {
    bool was = c->pooler;
    c->pooler = unnamed;
    return was;
}

PGresult *ds__conn_simple(ds_conn *c, const char *sql) {
    c->not_durable = false;
    return PQexec(c->pg, sql);
}

int ds__conn_backend_pid(const ds_conn *c) { return PQbackendPID(c->pg); }

ds_status ds__conn_copy_begin(ds_conn *c, const char *copy_sql,
                              const char *context, ds_error *err) {
    PGresult *r = PQexec(c->pg, copy_sql);
    ds_status st = DS_OK;
    if (!r || PQresultStatus(r) != PGRES_COPY_IN)
        st = ds__pg_error(c, NULL, r, context, err);
    PQclear(r);
    return st;
}

ds_status ds__conn_copy_send(ds_conn *c, const void *data, size_t len,
                             const char *context, ds_error *err) {
    char what[96];
    snprintf(what, sizeof what, "%s: sending", context);
    /* libpq takes an int length: send in pieces below that */
    const char *p = data;
    while (len > 0) {
        int chunk = len > (size_t)(1 << 30) ? 1 << 30 : (int)len;
        if (PQputCopyData(c->pg, p, chunk) != 1)
            return ds__pg_error(c, NULL, NULL, what, err);
        p += chunk;
        len -= (size_t)chunk;
    }
    return DS_OK;
}

ds_status ds__conn_copy_end(ds_conn *c, const char *abort_msg, ds_status st,
                            const char *context, ds_error *err) {
    char what[96];
    snprintf(what, sizeof what, "%s: ending", context);
    if (PQputCopyEnd(c->pg, abort_msg) != 1 && st == DS_OK)
        st = ds__pg_error(c, NULL, NULL, what, err);
    PGresult *r;
    while ((r = PQgetResult(c->pg)) != NULL) {
        ExecStatusType rs = PQresultStatus(r);
        if (rs != PGRES_COMMAND_OK && st == DS_OK)
            st = ds__pg_error(c, NULL, r, context, err);
        PQclear(r);
        /* Still copying: the end never left (libpq ran out of memory), and
         * PQgetResult would say so forever. The connection goes. */
        if (rs == PGRES_COPY_IN) {
            c->discard = true;
            break;
        }
    }
    return st;
}

DS_EXPORT struct pg_conn *ds_pool_conn_pg(ds_conn *conn) {
    return conn ? conn->pg : NULL;
}

DS_EXPORT void ds_pool_conn_discard(ds_conn *conn) {
    if (conn)
        conn->discard = true;
}

DS_EXPORT bool ds_pool_conn_is_replica(const ds_conn *conn) {
    return conn && conn->sub && conn->sub->replica;
}
