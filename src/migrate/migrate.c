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
#include "migrate/runner.h"

#define MODULE "migrate"
#define DEFAULT_LOCK_WAIT_MS 600000

/* `unnamed`: run this lease's statements unnamed whatever the pool's
 * mode (see the top); read-only calls keep the pool's mode, so a status
 * call repeated by a health check reuses its prepared statement. */
ds_status ds__migrate_lease(ds__runner *r, bool unnamed, ds_error *err) {
    ds_status st = ds_pool_acquire(r->pool, &r->conn, err);
    if (st != DS_OK)
        return st;
    r->saved_pooler = ds__conn_use_unnamed(r->conn, true);
    if (!unnamed)
        ds__conn_use_unnamed(r->conn, r->saved_pooler);
    return DS_OK;
}

void ds__migrate_unlease(ds__runner *r) {
    if (!r->conn)
        return;
    ds__conn_use_unnamed(r->conn, r->saved_pooler);
    if (r->ran_any)
        ds_pool_conn_discard(r->conn);
    ds_pool_release(r->conn);
    r->conn = NULL;
}

ds_status ds__migrate_simple(ds__runner *r, const char *sql, ds_error *err) {
    ds_status st = ds__conn_exec_simple(r->conn, sql, err);
    if (st != DS_OK)
        ds__error_prefix(err, "%s", sql);
    return st;
}

static ds_status set_timeouts(ds__runner *r, bool local, ds_error *err) {
    char value[32];
    ds__migrate_lock_timeout_text(r, value, sizeof value);
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
    return ds__migrate_run_command(r->conn, S_SET_TIMEOUTS, &p, err);
}

/* Takes the migration lock: transaction-scoped (opening the transaction)
 * or session-scoped. Polls so that the wait is bounded by lock_wait_ms. */
static ds_status take_lock(ds__runner *r, bool session, ds_error *err) {
    int64_t deadline = ds__now_us() + (int64_t)r->lock_wait_ms * 1000;
    for (int attempt = 0;; attempt++) {
        ds_status st;
        if (!session && (st = ds__migrate_simple(r, "BEGIN", err)) != DS_OK)
            return st;
        ds__bind p;
        ds__bind_init(&p);
        ds__bind_int64(&p, DS_MIGRATE_LOCK_KEY);
        bool got = false;
        st = ds__migrate_run_bool(
            r->conn, session ? S_TRY_SESSION_LOCK : S_TRY_XACT_LOCK, &p, &got,
            err);
        if (st != DS_OK || got)
            return st;
        if (!session && (st = ds__migrate_simple(r, "ROLLBACK", err)) != DS_OK)
            return st;
        if (!r->waiting_reported) {
            r->waiting_reported = true;
            ds__log(DS_LOG_INFO, MODULE,
                    "another migration runner holds the lock; waiting");
            ds__migrate_emit(r, DS_MIGRATE_EVENT_WAITING, NULL, true, 0, NULL);
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
static ds_status read_verified(ds__runner *r, ds__applied_list *applied,
                               ds_error *err) {
    ds_status st;
    if (!r->table_ready) {
        if ((st = ds__migrate_run_command(r->conn, S_CREATE_TABLE, NULL,
                                          err)) != DS_OK)
            return st;
        r->table_ready = true;
    }
    if ((st = ds__migrate_read_applied(r->conn, false, applied, err)) != DS_OK)
        return st;
    return ds__migrate_verify_history(r->set, applied, err);
}

/* BEGIN, lock, lock_timeout, record: ready to plan the next step. */
static ds_status begin_step(ds__runner *r, ds__applied_list *applied,
                            ds_error *err) {
    ds_status st = take_lock(r, false, err);
    if (st == DS_OK)
        st = set_timeouts(r, true, err);
    if (st == DS_OK)
        st = read_verified(r, applied, err);
    return st;
}

static ds_status record_step(ds__runner *r, const ds__step *s,
                             int64_t duration_ms, ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, s->file->version);
    if (!s->up)
        return ds__migrate_run_command(r->conn, S_UNRECORD, &p, err);
    ds__bind_text(&p, s->file->name);
    ds__bind_text(&p, s->file->checksum);
    ds__bind_bool(&p, s->file->up_no_tx);
    ds__bind_int64(&p, duration_ms);
    return ds__migrate_run_command(r->conn, S_RECORD, &p, err);
}

static ds_status commit(ds__runner *r, const ds__step *s, ds_error *err) {
    PGresult *res = ds__conn_simple(r->conn, "COMMIT");
    ds_status st = DS_OK;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        st = ds__pg_error(r->conn, NULL, res, ds__migrate_step_file(s), err);
        if (st == DS_ERR_CONNECTION)
            ds__migrate_error_append(
                err, "; COMMIT was sent, so the outcome is unknown: "
                     "check with ds-migrate status");
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        st = ds__error_set(err, DS_ERR_MIGRATION,
                           "%s: the transaction was rolled back at COMMIT",
                           ds__migrate_step_file(s));
    } else {
        st = ds__migrate_not_durable(r, ds__migrate_step_file(s), 0, err);
    }
    PQclear(res);
    return st;
}

/* One step inside the locked transaction begin_step() opened. */
static ds_status run_in_tx(ds__runner *r, const ds__step *s, int64_t current,
                           ds_error *err) {
    ds__migrate_emit(r, s->up ? DS_MIGRATE_EVENT_APPLYING
                              : DS_MIGRATE_EVENT_REVERTING,
                     s->file, s->up, 0, NULL);
    ds__log(DS_LOG_INFO, MODULE, "%s %s", s->up ? "applying" : "reverting",
            ds__migrate_step_file(s));
    r->ran_any = true;
    int64_t t0 = ds__now_us();
    ds_status st = ds__migrate_run_file(r, s, current, err);
    if (st == DS_OK)
        st = record_step(r, s, (ds__now_us() - t0) / 1000, err);
    if (st == DS_OK)
        st = commit(r, s, err);
    if (st != DS_OK)
        return st; /* release rolls back whatever is still open */
    int64_t us = ds__now_us() - t0;
    ds__migrate_emit(r, s->up ? DS_MIGRATE_EVENT_APPLIED
                              : DS_MIGRATE_EVENT_REVERTED,
                     s->file, s->up, us, NULL);
    ds__log(DS_LOG_INFO, MODULE, "%s %s in %lld ms",
            s->up ? "applied" : "reverted", ds__migrate_step_file(s),
            (long long)(us / 1000));
    return DS_OK;
}

/* Is this lease going through a transaction pooler? A pooler that
 * multiplexes server connections must route cancel requests itself, so it
 * hands the client its own BackendKeyData: the PID libpq was given at
 * connect time then differs from the server's pg_backend_pid(). (The pool's
 * statement mode is not the test: `pooler` mode is also a fine choice on a
 * direct connection, e.g. for ds-migrate's one-shot statements.) */
static ds_status behind_pooler(ds__runner *r, bool *out, ds_error *err) {
    *out = false;
    PGresult *res = ds__migrate_run_stmt(r->conn, S_BACKEND_PID, NULL, err);
    if (!res)
        return err ? err->code : DS_ERR_DB;
    const char *v = ds__migrate_single_value(res, 4);
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
static ds_status run_without_tx(ds__runner *r, const ds__step *planned,
                                int64_t target, bool *ran, ds_error *err) {
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
            ds__migrate_step_file(planned));
    /* Session state from here on: this connection never goes back. */
    ds_pool_conn_discard(r->conn);
    r->ran_any = true;
    if ((st = take_lock(r, true, err)) != DS_OK)
        return st;
    ds__applied_list applied = {0};
    st = set_timeouts(r, false, err);
    if (st == DS_OK)
        st = read_verified(r, &applied, err);
    int64_t *vers = st == DS_OK ? ds__migrate_versions_of(&applied, 0) : NULL;
    if (st == DS_OK && !vers)
        st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
    ds__step s;
    bool still =
        st == DS_OK &&
        ds__migrate_next_step(r->set, vers, applied.count, target, &s) &&
        s.file == planned->file && s.up == planned->up;
    int64_t current = ds__migrate_current_version(&applied);
    ds__free(vers);
    ds__applied_list_clear(&applied);
    if (st == DS_OK && still) {
        ds__migrate_emit(r, s.up ? DS_MIGRATE_EVENT_APPLYING
                                 : DS_MIGRATE_EVENT_REVERTING,
                         s.file, s.up, 0, NULL);
        ds__log(DS_LOG_INFO, MODULE, "%s %s outside a transaction",
                s.up ? "applying" : "reverting", ds__migrate_step_file(&s));
        int64_t t0 = ds__now_us();
        st = ds__migrate_run_file(r, &s, current, err);
        if (st == DS_OK)
            st = record_step(r, &s, (ds__now_us() - t0) / 1000, err);
        if (st == DS_OK) {
            *ran = true;
            ds__migrate_emit(r, s.up ? DS_MIGRATE_EVENT_APPLIED
                                     : DS_MIGRATE_EVENT_REVERTED,
                             s.file, s.up, ds__now_us() - t0, NULL);
        }
    }
    /* The lease is discarded anyway; unlocking is for a pool that is slow
     * to close it, and harmless when the connection already failed. */
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, DS_MIGRATE_LOCK_KEY);
    bool released;
    ds_error ignore = {0};
    (void)ds__migrate_run_bool(r->conn, S_SESSION_UNLOCK, &p, &released,
                               &ignore);
    return st;
}

/* ---- the entry points -------------------------------------------------------- */

/* The configured migrate_lock_timeout_ms; -1 (none) when 0. */
static int default_lock_timeout_ms(const ds_pool *pool) {
    int ms = ds__pool_settings_get(pool)->migrate_lock_timeout_ms;
    return ms > 0 ? ms : -1;
}

ds_status ds__migrate_runner_open(ds__runner *r, ds_pool *pool,
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

void ds__migrate_runner_close(ds__runner *r) {
    ds__migrate_unlease(r);
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
    ds__runner r;
    ds_status st = ds__migrate_runner_open(&r, pool, opts, &defaults, err);
    if (st == DS_OK && steps == 0 && target != INT64_MAX && target != 0 &&
        !ds__migration_set_find(r.set, target))
        st = ds__error_set(err, DS_ERR_INVALID,
                           "migrations: no migration has version %lld",
                           (long long)target);
    if (st == DS_OK)
        st = ds__migrate_lease(&r, true, err);
    if (st == DS_OK && r.opts->dry_run) {
        st = ds__migrate_dry_run(&r, target, steps, &count, err);
        ds__migrate_runner_close(&r);
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
        int64_t *vers =
            st == DS_OK ? ds__migrate_versions_of(&applied, 0) : NULL;
        if (st == DS_OK && !vers)
            st = ds__error_set(err, DS_ERR_NOMEM, "migrations: out of memory");
        ds__step s;
        bool more = st == DS_OK && ds__migrate_next_step(
                                       r.set, vers, applied.count, target, &s);
        int64_t current = ds__migrate_current_version(&applied);
        ds__free(vers);
        ds__applied_list_clear(&applied);
        if (st != DS_OK)
            break;
        if (!more) {
            st = ds__migrate_simple(&r, "COMMIT",
                                    err); /* keeps a new record table */
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
        if ((st = ds__migrate_simple(&r, "COMMIT", err)) != DS_OK)
            break;
        bool ran = false;
        st = run_without_tx(&r, &s, target, &ran, err);
        count += ran;
        if (st == DS_OK && ran)
            st = ds__migrate_report_file(&r.prog, count, planned, err);
        /* That connection holds session state: take a fresh one. */
        ds__migrate_unlease(&r);
        if (st == DS_OK)
            st = ds__migrate_lease(&r, true, err);
    }
    ds__migrate_runner_close(&r);
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
    ds__runner r;
    memset(&r, 0, sizeof r);
    r.pool = pool;
    r.lock_timeout_ms = default_lock_timeout_ms(pool);
    ds_status st = ds__migrate_lease(&r, true, err);
    int n = 0;
    if (st == DS_OK)
        st = ds__events_ensure_partitions(r.conn, months_ahead,
                                          r.lock_timeout_ms, opts, &n, err);
    ds__migrate_unlease(&r);
    if (st == DS_OK) {
        if (created)
            *created = n;
        if (n)
            ds__log(DS_LOG_INFO, MODULE,
                    "created %d analytics_events partition(s)", n);
    }
    return st;
}
