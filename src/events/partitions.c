/*
 * analytics_events' monthly partitions, created without readers or writers
 * noticing (what ds_migrate_maintain() and `ds-migrate maintain` run). For
 * each month without a partition:
 *
 *   1. the month's table is created on its own (LIKE the parent: columns,
 *      defaults, CHECKs, indexes) with a CHECK matching its bounds, so that
 *      attaching it later needs no scan of it;
 *   2. rows of that month already waiting in the default partition are
 *      copied into it in batches of 64 pages, each its own short
 *      transaction (the rows stay where readers see them);
 *   3. one transaction moves and attaches. Before it takes any lock that
 *      blocks anyone, it deletes from the default partition every row whose
 *      copy is known current (the row version is older than the first
 *      batch's snapshot), drops the copies of rows deleted or changed since,
 *      and moves what is left (rows changed or written since the copy).
 *      Readers keep seeing the rows in the default partition until the
 *      transaction commits, and then see them in the new partition: never
 *      both, never neither. Only then does it take SHARE on
 *      analytics_events (readers go on; writers wait before their row is
 *      routed to a partition), move the rows written in the meantime
 *      (a few) and ATTACH the table. Writers thus wait for that short tail
 *      only, whatever the number of rows moved. ATTACH scans the default
 *      partition under its lock to prove that no row of the month is left:
 *      that scan is what grows with the size of the default partition.
 *
 * Every transaction takes the migration advisory lock (transaction-scoped:
 * correct behind PgBouncer), checks the state again, and sets lock_timeout;
 * a step that hits it is rolled back and tried again after a jittered
 * pause (the SHARE lock is retried on its own, inside the transaction, so
 * that the move before it is not done again). A run that stopped half-way
 * leaves a table that is not attached yet, which the next run picks up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "events/events_internal.h"
#include "migrate/migrate_internal.h"

#define MODULE "events"
#define BATCH_PAGES 64
#define SWAP_TRIES 8

typedef struct maint {
    ds_conn *c;
    char lock_timeout[32];
    ds_error *err;
    const ds_migrate_options *opts; /* progress; may be NULL */
    ds__progress prog;              /* opts->on_progress */
} maint;

/* Both callbacks: the runner's event (kept for existing callers) and the
 * shared one, which may stop the work (DS_ERR_CANCELLED). */
static ds_status report(maint *m, const char *part, int64_t done,
                        int64_t total, int64_t t0) {
    if (m->opts && m->opts->on_event) {
        ds_migrate_event e = {DS_MIGRATE_EVENT_PROGRESS, 0, part, true, false,
                              ds__now_us() - t0, NULL, "copy", done, total};
        m->opts->on_event(m->opts->on_event_ud, &e);
    }
    return ds__progress_report(&m->prog, part, "copy", "rows", done, total,
                               "the month's table is not attached yet; the "
                               "next maintain run continues it",
                               m->err);
}

/* Runs `sql` with parameters the server parses from text; *out (may be
 * NULL) gets the result. Every query here returns text columns (casting
 * where needed), since results come back in binary. */
static ds_status run(maint *m, const char *sql, int n,
                     const char *const *values, PGresult **out) {
    if (out)
        *out = NULL;
    ds__bind b;
    ds__bind_init(&b);
    for (int i = 0; i < n; i++)
        ds__bind_text_as(&b, values[i], 0);
    PGresult *res = ds__sql_run(m->c, sql, &b, "maintain", m->err);
    ds__bind_free(&b);
    if (!res)
        return m->err ? m->err->code : DS_ERR_DB;
    if (out)
        *out = res;
    else
        PQclear(res);
    return DS_OK;
}

static void rollback(maint *m) {
    PQclear(ds__conn_simple(m->c, "ROLLBACK"));
}

/* BEGIN; lock_timeout; the migration lock (its wait is bounded by
 * lock_timeout too). */
static ds_status begin_locked(maint *m) {
    ds_status st = run(m, "BEGIN", 0, NULL, NULL);
    const char *lt[1] = {m->lock_timeout};
    if (st == DS_OK)
        st = run(m,
                 "SELECT set_config('lock_timeout', $1, true), "
                 "set_config('statement_timeout', '0', true)",
                 1, lt, NULL);
    if (st == DS_OK) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)",
                 (long long)DS_MIGRATE_LOCK_KEY);
        st = run(m, sql, 0, NULL, NULL);
    }
    if (st != DS_OK)
        rollback(m);
    return st;
}

static ds_status commit(maint *m) {
    ds_status st = run(m, "COMMIT", 0, NULL, NULL);
    if (st != DS_OK)
        rollback(m);
    return st;
}

/* lock_timeout, or this side chosen as a deadlock's victim: nothing
 * changed, try again. */
static bool timed_out(const maint *m) {
    return m->err && (!strcmp(m->err->sqlstate, "55P03") ||
                      !strcmp(m->err->sqlstate, "40P01"));
}

/* The month's names and bounds, spelled in UTC. */
typedef struct month {
    char part[64]; /* analytics_events_YYYY_MM */
    char lo[40];
    char hi[40];
} month;

static ds_status month_of(maint *m, int offset, month *out) {
    char off[16];
    snprintf(off, sizeof off, "%d", offset);
    const char *v[1] = {off};
    PGresult *r;
    ds_status st = run(
        m,
        "SELECT 'analytics_events_' || to_char(mon, 'YYYY_MM'), "
        "to_char(mon, 'YYYY-MM-DD HH24:MI:SS') || '+00', "
        "to_char(mon + interval '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00' "
        "FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + "
        "make_interval(months => $1::int) AS mon) s",
        1, v, &r);
    if (st != DS_OK)
        return st;
    snprintf(out->part, sizeof out->part, "%s", PQgetvalue(r, 0, 0));
    snprintf(out->lo, sizeof out->lo, "%s", PQgetvalue(r, 0, 1));
    snprintf(out->hi, sizeof out->hi, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    return DS_OK;
}

/* Is [lo, hi) covered, even partly, by an attached range partition? */
static ds_status covered(maint *m, const month *mo, bool *out) {
    const char *v[2] = {mo->lo, mo->hi};
    PGresult *r;
    ds_status st = run(
        m,
        "SELECT EXISTS (SELECT 1 FROM pg_inherits inh "
        "JOIN pg_class c ON c.oid = inh.inhrelid "
        "CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "'^FOR VALUES FROM \\((.*)\\) TO \\((.*)\\)$') AS b(m) "
        "WHERE inh.inhparent = 'analytics_events'::regclass "
        "AND (CASE WHEN b.m[1] = 'MINVALUE' THEN '-infinity'::timestamptz "
        "WHEN b.m[1] = 'MAXVALUE' THEN 'infinity'::timestamptz "
        "ELSE btrim(b.m[1], '''')::timestamptz END) < $2::timestamptz "
        "AND (CASE WHEN b.m[2] = 'MINVALUE' THEN '-infinity'::timestamptz "
        "WHEN b.m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz "
        "ELSE btrim(b.m[2], '''')::timestamptz END) > $1::timestamptz)::text",
        2, v, &r);
    if (st == DS_OK) {
        *out = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
    return st;
}

/* Schema-qualified names and the column list, read once. */
typedef struct names {
    char nsp[130];     /* quoted */
    char def[300];     /* the default partition, qualified and quoted, or "" */
    char *cols;        /* quoted column list */
} names;

static ds_status read_names(maint *m, names *n) {
    PGresult *r;
    ds_status st = run(
        m,
        "SELECT quote_ident(ns.nspname), "
        "coalesce((SELECT NULLIF(p.partdefid, 0)::regclass::text "
        "FROM pg_partitioned_table p WHERE p.partrelid = c.oid), ''), "
        "(SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) "
        "FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
        "AND NOT a.attisdropped) "
        "FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
        "WHERE c.oid = 'analytics_events'::regclass",
        0, NULL, &r);
    if (st != DS_OK)
        return st;
    snprintf(n->nsp, sizeof n->nsp, "%s", PQgetvalue(r, 0, 0));
    snprintf(n->def, sizeof n->def, "%s", PQgetvalue(r, 0, 1));
    n->cols = ds__strdup(PQgetvalue(r, 0, 2));
    PQclear(r);
    return n->cols ? DS_OK
                   : ds__error_set(m->err, DS_ERR_NOMEM,
                                   "maintain: out of memory");
}

/* A statement built from names (all quoted by the server) and bounds. */
static char *build(maint *m, const char *fmt, ...) DS_PRINTF(2, 3);
static char *build(maint *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? ds__malloc((size_t)n + 1) : NULL;
    if (!s) {
        ds__error_set(m->err, DS_ERR_NOMEM, "maintain: out of memory");
        return NULL;
    }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static ds_status exec_built(maint *m, char *sql, int n,
                            const char *const *values, PGresult **out) {
    if (!sql)
        return DS_ERR_NOMEM;
    ds_status st = run(m, sql, n, values, out);
    ds__free(sql);
    return st;
}

/* Step 1: the month's table on its own, with its bounds CHECK and a
 * helper index on id for the copy. false in *todo when already covered. */
static ds_status stage(maint *m, const names *n, const month *mo, bool *todo) {
    ds_status st = begin_locked(m);
    if (st != DS_OK)
        return st;
    bool done = false;
    st = covered(m, mo, &done);
    *todo = st == DS_OK && !done;
    if (st == DS_OK && *todo)
        st = exec_built(m,
                        build(m,
                              "CREATE TABLE IF NOT EXISTS %s.%s (LIKE "
                              "analytics_events INCLUDING ALL EXCLUDING "
                              "IDENTITY, CONSTRAINT %s_bounds CHECK "
                              "(occurred_at >= '%s' AND occurred_at < '%s'))",
                              n->nsp, mo->part, mo->part, mo->lo, mo->hi),
                        0, NULL, NULL);
    if (st == DS_OK && *todo && n->def[0])
        st = exec_built(m,
                        build(m,
                              "CREATE INDEX IF NOT EXISTS %s_ds_move ON "
                              "%s.%s (id)",
                              mo->part, n->nsp, mo->part),
                        0, NULL, NULL);
    if (st == DS_OK)
        st = commit(m);
    else
        rollback(m);
    return st;
}

/* Step 2: copies the month's rows from the default partition in batches
 * of BATCH_PAGES pages (a TID range scan each: the cost of a batch does not
 * grow with the table), over the pages the table had when the copy began.
 * `horizon` receives the oldest transaction the first batch's snapshot
 * could not see: every row version older than it lies below those pages
 * and is copied as it is; a newer one may have changed after it was
 * copied, and rows written later are the swap's. A copy left by an earlier
 * run is emptied first, since its rows may have changed since. */
static ds_status copy_batches(maint *m, const names *n, const month *mo,
                              int64_t *copied, char horizon[24]) {
    char from[32] = "", to[32] = "";
    const char *v[4] = {mo->lo, mo->hi, from, to};
    horizon[0] = '\0';
    *copied = 0;
    int64_t total = 0, t0 = ds__now_us(), pages = 0;
    if ((m->opts && m->opts->on_event) || m->prog.fn) {
        /* the estimate a progress line needs: one count, no lock held */
        PGresult *c = NULL;
        ds_status cs = exec_built(
            m,
            build(m,
                  "SELECT count(*)::text FROM %s WHERE occurred_at >= "
                  "$1::timestamptz AND occurred_at < $2::timestamptz",
                  n->def),
            2, v, &c);
        if (cs != DS_OK)
            return cs;
        total = atoll(PQgetvalue(c, 0, 0));
        PQclear(c);
    }
    for (int64_t page = 0; page == 0 || page < pages; page += BATCH_PAGES) {
        ds_status st = begin_locked(m);
        if (st != DS_OK)
            return st;
        PGresult *r = NULL;
        if (!horizon[0]) {
            st = exec_built(m, build(m, "TRUNCATE %s.%s", n->nsp, mo->part),
                            0, NULL, NULL);
            if (st == DS_OK)
                st = exec_built(
                    m,
                    build(m,
                          "SELECT (pg_snapshot_xmin(pg_current_snapshot())"
                          "::text::numeric %% 4294967296)::text, "
                          "(pg_relation_size('%s') / "
                          "current_setting('block_size')::bigint)::text",
                          n->def),
                    0, NULL, &r);
            if (st != DS_OK) {
                rollback(m);
                return st;
            }
            snprintf(horizon, 24, "%s", PQgetvalue(r, 0, 0));
            pages = atoll(PQgetvalue(r, 0, 1));
            PQclear(r);
            r = NULL;
        }
        snprintf(from, sizeof from, "(%lld,0)", (long long)page);
        snprintf(to, sizeof to, "(%lld,0)", (long long)(page + BATCH_PAGES));
        st = exec_built(
            m,
            build(m,
                  "INSERT INTO %s.%s (%s) SELECT %s FROM %s d "
                  "WHERE d.ctid >= $3::tid AND d.ctid < $4::tid AND "
                  "d.occurred_at >= $1::timestamptz AND d.occurred_at < "
                  "$2::timestamptz",
                  n->nsp, mo->part, n->cols, n->cols, n->def),
            4, v, &r);
        long rows = r ? atol(PQcmdTuples(r)) : 0;
        PQclear(r);
        if (st == DS_OK)
            st = commit(m);
        else
            rollback(m);
        if (st != DS_OK)
            return st;
        *copied += rows;
        if (rows > 0) {
            /* a copy an earlier run left was emptied: it starts from 0 */
            st = report(m, mo->part, *copied,
                        total > *copied ? total : *copied, t0);
            if (st != DS_OK)
                return st;
        }
    }
    return DS_OK;
}

/* How long one attempt at the SHARE lock may queue: writers arriving
 * meanwhile queue behind it, and it stays below the server's default
 * deadlock_timeout (1 s), so that this side, not a writer, gives way. */
#define SHARE_WAIT "500ms"

/* LOCK TABLE ... IN SHARE MODE inside the swap's transaction, tried again
 * from a savepoint after a jittered pause when an attempt times out, so
 * the move before it stands. A writer that waits on a row this
 * transaction moved can never let the lock be granted: then the whole
 * transaction gives way (a lock_timeout error, which the caller retries
 * from the start). */
static ds_status lock_share(maint *m) {
    ds_status st = run(m, "SAVEPOINT ds_share", 0, NULL, NULL);
    for (int try_ = 0; st == DS_OK; try_++) {
        st = run(m,
                 "SELECT set_config('lock_timeout', '" SHARE_WAIT "', true)",
                 0, NULL, NULL);
        if (st == DS_OK)
            st = run(m, "LOCK TABLE ONLY analytics_events IN SHARE MODE", 0,
                     NULL, NULL);
        if (st == DS_OK) {
            const char *lt[1] = {m->lock_timeout};
            return run(m, "SELECT set_config('lock_timeout', $1, true)", 1,
                       lt, NULL);
        }
        if (!timed_out(m) || try_ + 1 >= SWAP_TRIES)
            break;
        ds_error saved = *m->err;
        st = run(m, "ROLLBACK TO SAVEPOINT ds_share", 0, NULL, NULL);
        PGresult *r = NULL;
        if (st == DS_OK)
            st = run(m,
                     "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
                     "pg_backend_pid() = ANY (pg_blocking_pids(pid)))::text",
                     0, NULL, &r);
        if (st != DS_OK)
            break;
        bool waited_on = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (waited_on) {
            *m->err = saved; /* lock_timeout: the caller starts again */
            return saved.code;
        }
        int64_t nap = ds__lock_retry_pause_us(100000, try_, 4);
        ds__log(DS_LOG_WARN, MODULE,
                "maintain: SHARE lock on analytics_events timed out (attempt "
                "%d of %d); trying again in %lld ms",
                try_ + 1, SWAP_TRIES, (long long)(nap / 1000));
        ds__sleep_us(nap);
    }
    return st;
}

/* Moves the month's rows left in the default partition (visible to this
 * transaction) into the month's table, in one statement. */
static ds_status move_rest(maint *m, const names *n, const month *mo) {
    const char *v[2] = {mo->lo, mo->hi};
    return exec_built(
        m,
        build(m,
              "WITH gone AS (DELETE FROM %s WHERE occurred_at >= "
              "$1::timestamptz AND occurred_at < $2::timestamptz RETURNING "
              "%s) INSERT INTO %s.%s (%s) SELECT %s FROM gone",
              n->def, n->cols, n->nsp, mo->part, n->cols, n->cols),
        2, v, NULL);
}

/* Step 3, one transaction: the move, then the brief SHARE lock and the
 * attach. */
static ds_status swap(maint *m, const names *n, const month *mo,
                      const char *horizon, bool lock_first, bool *attached) {
    const char *v[3] = {mo->lo, mo->hi, horizon[0] ? horizon : "3"};
    *attached = false;
    ds_status st = begin_locked(m);
    if (st != DS_OK)
        return st;
    bool done = false;
    st = covered(m, mo, &done);
    if (st == DS_OK && done) {
        rollback(m); /* another runner attached it */
        return DS_OK;
    }
    if (st == DS_OK && n->def[0] && lock_first)
        st = lock_share(m);
    if (st == DS_OK && n->def[0]) {
        /* The rows whose copy is current leave the default partition, and
         * in the same statement the copies of every other row go (their
         * row was deleted, or changed after it was copied: a row version
         * as new as the copy's horizon). Row locks only: nobody waits
         * unless they update one of these very rows. */
        st = exec_built(
            m,
            build(m,
                  "WITH gone AS (DELETE FROM %s d USING %s.%s p WHERE "
                  "p.id = d.id AND d.occurred_at >= $1::timestamptz AND "
                  "d.occurred_at < $2::timestamptz AND age(d.xmin) > "
                  "age($3::xid) RETURNING d.id) DELETE FROM %s.%s p WHERE "
                  "NOT EXISTS (SELECT 1 FROM gone g WHERE g.id = p.id)",
                  n->def, n->nsp, mo->part, n->nsp, mo->part),
            3, v, NULL);
        /* what is left: rows changed or written since the copy */
        if (st == DS_OK)
            st = move_rest(m, n, mo);
        if (st == DS_OK)
            st = exec_built(m,
                            build(m, "DROP INDEX IF EXISTS %s.%s_ds_move",
                                  n->nsp, mo->part),
                            0, NULL, NULL);
        /* SHARE on the parent: writers wait before their row is routed.
         * (A lock on the default partition alone would let an insert
         * already routed there wait, then fail the new bounds.) Then the
         * rows written since the move above, a few at most. */
        if (st == DS_OK && !lock_first)
            st = lock_share(m);
        if (st == DS_OK && !lock_first)
            st = move_rest(m, n, mo);
    }
    /* ATTACH takes ACCESS EXCLUSIVE on the default partition, so readers
     * arriving while it queues behind a long query would queue behind it:
     * it queues briefly, and the swap starts again when it gives up. */
    if (st == DS_OK && n->def[0])
        st = run(m, "SELECT set_config('lock_timeout', '" SHARE_WAIT "', true)",
                 0, NULL, NULL);
    if (st == DS_OK)
        st = exec_built(m,
                        build(m,
                              "ALTER TABLE analytics_events ATTACH PARTITION "
                              "%s.%s FOR VALUES FROM ('%s') TO ('%s')",
                              n->nsp, mo->part, mo->lo, mo->hi),
                        0, NULL, NULL);
    if (st == DS_OK)
        st = commit(m);
    else
        rollback(m);
    *attached = st == DS_OK;
    return st;
}

/* Runs `step` again (after a jittered pause) while it hits lock_timeout. */
#define WITH_RETRY(m, call)                                                    \
    do {                                                                       \
        for (int try_ = 0;; try_++) {                                          \
            st = (call);                                                       \
            if (st == DS_OK || !timed_out(m) || try_ + 1 >= SWAP_TRIES)        \
                break;                                                         \
            int64_t nap = ds__lock_retry_pause_us(100000, try_, 4);            \
            ds__log(DS_LOG_WARN, MODULE,                                       \
                    "maintain: lock_timeout (attempt %d of %d); trying "       \
                    "again in %lld ms",                                        \
                    try_ + 1, SWAP_TRIES, (long long)(nap / 1000));            \
            ds__sleep_us(nap);                                                 \
        }                                                                      \
    } while (0)

ds_status ds__events_ensure_partitions(ds_conn *c, int months_ahead,
                                       int lock_timeout_ms,
                                       const ds_migrate_options *opts,
                                       int *created, ds_error *err) {
    /* A local error: the retries read its SQLSTATE even when the caller
     * passed no `err`. */
    ds_error local = {0};
    maint m = {c, "", &local, opts, {0}};
    ds__migrate_progress_init(&m.prog, "maintain", opts);
    *created = 0;
    snprintf(m.lock_timeout, sizeof m.lock_timeout, "%dms",
             lock_timeout_ms > 0 ? lock_timeout_ms : 5000);
    PGresult *r;
    ds_status st = run(&m,
                       "SELECT (to_regprocedure('ds_analytics_ensure_"
                       "partitions(integer, timestamptz)') IS NOT NULL)::text",
                       0, NULL, &r);
    if (st != DS_OK) {
        if (err)
            *err = local;
        return st;
    }
    bool have = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!have)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "partition maintenance needs schema version 2 "
                             "or later (ds_analytics_ensure_partitions is "
                             "missing): run ds-migrate up");
    names n = {{0}, {0}, NULL};
    if ((st = read_names(&m, &n)) != DS_OK) {
        if (err)
            *err = local;
        return st;
    }
    for (int i = 0; i <= months_ahead && st == DS_OK; i++) {
        month mo;
        if ((st = month_of(&m, i, &mo)) != DS_OK)
            break;
        bool todo = false;
        WITH_RETRY(&m, stage(&m, &n, &mo, &todo));
        if (st != DS_OK || !todo)
            continue;
        int64_t copied = 0;
        char horizon[24] = "";
        if (n.def[0])
            WITH_RETRY(&m, copy_batches(&m, &n, &mo, &copied, horizon));
        bool attached = false;
        if (st == DS_OK)
            for (int try_ = 0;; try_++) {
                /* Writers that keep changing rows of the month can make
                 * the online swap give way every time: the last tries
                 * take the SHARE lock first, and writers wait for the
                 * move as they did before. */
                st = swap(&m, &n, &mo, horizon, try_ >= SWAP_TRIES / 2,
                          &attached);
                if (st == DS_OK || !timed_out(&m) || try_ + 1 >= SWAP_TRIES)
                    break;
                int64_t nap = ds__lock_retry_pause_us(100000, try_, 4);
                ds__log(DS_LOG_WARN, MODULE,
                        "maintain: the swap of %s gave way (attempt %d of "
                        "%d); trying again in %lld ms",
                        mo.part, try_ + 1, SWAP_TRIES,
                        (long long)(nap / 1000));
                ds__sleep_us(nap);
            }
        if (st == DS_OK && attached) {
            (*created)++;
            ds__log(DS_LOG_INFO, MODULE,
                    "created partition %s (%lld row(s) moved from the "
                    "default partition)",
                    mo.part, (long long)copied);
        }
    }
    ds__free(n.cols);
    if (st != DS_OK) {
        ds__error_prefix(&local, "partition maintenance");
        if (err)
            *err = local;
    }
    return st;
}
