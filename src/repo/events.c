/* Analytics events: a single INSERT, or a batch streamed through one
 * binary COPY. Bad input found while streaming aborts the COPY, so a batch
 * is written whole or not at all. */
#include <stdio.h>
#include <string.h>

#include "core/growable.h"
#include "datastore/events.h"
#include "repo/copybuf.h"
#include "repo/repo_internal.h"

enum { S_RECORD, S_COPY };

static const ds__stmt_def stmts[] = {
    [S_RECORD] = {"events.record",
                  "INSERT INTO analytics_events (user_id, name, properties, "
                  "occurred_at) VALUES ($1, $2, $3, COALESCE($4, now()))",
                  4,
                  {DS_OID_INT8, DS_OID_TEXT, DS_OID_JSONB, DS_OID_TIMESTAMPTZ},
                  -1, {0}},
    /* Run directly on the leased PGconn (COPY is not a row-returning
     * statement); listed so that ds_migrate_check_schema() prepares it too. */
    [S_COPY] = {"events.copy",
                "COPY analytics_events (user_id, name, properties, "
                "occurred_at) FROM STDIN (FORMAT binary)",
                0, {0}, -1, {0}},
};

size_t ds__stmts_events(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

/* The checks that need no encoding: user, name and time. */
static ds_status check_fields(const char *func, const ds_event *e,
                              ds_error *err) {
    if (e->user_id < 0)
        return ds__error_set(err, DS_ERR_INVALID, "%s: user_id is negative",
                             func);
    if (e->occurred_at != INT64_MIN && e->occurred_at < DS_PG_MIN_EPOCH_US)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: occurred_at is before PostgreSQL's first "
                             "timestamp (4714-11-24 BC)",
                             func);
    return ds__check_text(err, func, "name", e->name,
                          e->name ? strlen(e->name) : 0, 1,
                          DS_EVENT_NAME_MAX);
}

static ds_status check_event(ds_pool *pool, const char *func,
                             const ds_event *e, char **json, size_t *json_len,
                             ds_error *err) {
    *json = NULL;
    ds_status st = check_fields(func, e, err);
    if (st == DS_OK)
        st = ds__json_encode(err, func, "properties", e->properties,
                             JSON_OBJECT, "{}", ds__repo_max_json(pool),
                             json, json_len);
    return st;
}

DS_EXPORT ds_status ds_event_record(ds_pool *pool, const ds_event *event,
                                    ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, event, "event is NULL");
    ds_event ev;
    ds_status st = DS__IN(event, &ev, ds_event, err);
    if (st != DS_OK)
        return st;
    event = &ev;
    char *json;
    size_t len;
    st = check_event(pool, __func__, event, &json, &len, err);
    if (st != DS_OK)
        return st;
    ds__bind b;
    ds__bind_init(&b);
    if (event->user_id)
        ds__bind_int64(&b, event->user_id);
    else
        ds__bind_null(&b);
    ds__bind_text(&b, event->name);
    ds__bind_jsonb_owned(&b, json, len);
    if (event->occurred_at)
        ds__bind_ts(&b, event->occurred_at);
    else
        ds__bind_null(&b);
    PGresult *r = ds__repo_exec(pool, false, &stmts[S_RECORD], &b, err);
    ds__bind_free(&b);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    PQclear(r);
    return DS_OK;
}

/* ---- COPY (FORMAT binary) ---------------------------------------------------- */

static void put16(ds__copy_buf *b, uint16_t v) {
    b->p[b->len++] = (char)(v >> 8);
    b->p[b->len++] = (char)(v & 0xff);
}
static void put32(ds__copy_buf *b, uint32_t v) {
    ds__put_be32(b->p + b->len, v);
    b->len += 4;
}
static void put64(ds__copy_buf *b, uint64_t v) {
    ds__put_be64(b->p + b->len, v);
    b->len += 8;
}
/* n <= INT32_MAX: ds__copy_event_row_size() refused longer fields */
static void put_bytes(ds__copy_buf *b, const void *p, size_t n) {
    put32(b, (uint32_t)n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static ds_status flush(ds_conn *conn, ds__copy_buf *b, ds_error *err) {
    ds_status st = ds__conn_copy_send(conn, b->p, b->len, "events.copy", err);
    b->len = 0;
    return st;
}

static ds_status record_batch(ds_pool *pool, const ds_event *events,
                              size_t n, ds_error *err);

DS_EXPORT ds_status ds_event_record_batch(ds_pool *pool,
                                          const ds_event *events, size_t n,
                                          ds_error *err) {
    DS_REPO_ERR(err);
    DS_CHECK_ARG(err, pool, "pool is NULL");
    DS_CHECK_ARG(err, events, "events is NULL");
    DS_CHECK_ARG(err, n > 0, "n must be positive");
    if (n > (size_t)ds__repo_max_batch(pool))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %zu events is more than repo_max_batch (%d)",
                             __func__, n, ds__repo_max_batch(pool));
    ds_event *copy;
    ds_status st = DS__ARRAY(events, n, &copy, ds_event, err);
    if (st != DS_OK)
        return st;
    st = record_batch(pool, copy, n, err);
    ds__free(copy);
    return st;
}

/* ds_event_record_batch() on checked arguments and events in this
 * library's layout. */
static ds_status record_batch(ds_pool *pool, const ds_event *events,
                              size_t n, ds_error *err) {
    /* Check the cheap things first so that most bad batches never reach
     * the server. */
    for (size_t i = 0; i < n; i++) {
        ds_status st = check_fields("ds_event_record_batch", &events[i], err);
        if (st != DS_OK) {
            ds__error_prefix(err, "event %zu", i);
            return st;
        }
    }
    ds_conn *conn;
    ds_status st = ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return st;
    st = ds__conn_copy_begin(conn, stmts[S_COPY].sql, stmts[S_COPY].name, err);
    if (st != DS_OK) {
        ds_pool_release(conn);
        return st;
    }
    ds__copy_buf b = {0};
    const char *abort_msg = NULL;
    int64_t now_pg = ds__ts_to_pg(ds__wall_us());
    if (!ds__copy_buf_reserve(&b, 19)) {
        st = ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", "ds_event_record_batch");
        abort_msg = "out of memory";
    } else {
        memcpy(b.p, "PGCOPY\n\377\r\n\0", 11);
        b.len = 11;
        put32(&b, 0); /* flags */
        put32(&b, 0); /* header extension length */
    }
    for (size_t i = 0; i < n && !abort_msg; i++) {
        const ds_event *e = &events[i];
        char *json;
        size_t jlen;
        st = ds__json_encode(err, "ds_event_record_batch", "properties", e->properties,
                             JSON_OBJECT, "{}", ds__repo_max_json(pool),
                             &json, &jlen);
        if (st != DS_OK) {
            ds__error_prefix(err, "event %zu", i);
            abort_msg = "invalid event";
            break;
        }
        size_t name_len = strlen(e->name);
        size_t row = ds__copy_event_row_size(name_len, jlen);
        if (row == 0) { /* cannot happen within the checked limits */
            ds__free(json);
            st = ds__error_set(err, DS_ERR_INVALID,
                               "%s: event %zu is larger than a COPY field "
                               "may be",
                               "ds_event_record_batch", i);
            abort_msg = "invalid event";
            break;
        }
        if (!ds__copy_buf_reserve(&b, row)) {
            ds__free(json);
            st = ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory",
                               "ds_event_record_batch");
            abort_msg = "out of memory";
            break;
        }
        put16(&b, 4);
        if (e->user_id) {
            put32(&b, 8);
            put64(&b, (uint64_t)e->user_id);
        } else {
            put32(&b, UINT32_MAX); /* NULL */
        }
        put_bytes(&b, e->name, name_len);
        put_bytes(&b, json, jlen); /* version byte + text */
        ds__free(json);
        put32(&b, 8);
        put64(&b, (uint64_t)(e->occurred_at ? ds__ts_to_pg(e->occurred_at)
                                            : now_pg));
        if (b.len >= DS_COPY_CHUNK) {
            st = flush(conn, &b, err);
            if (st != DS_OK)
                abort_msg = "send failed";
        }
    }
    if (!abort_msg && ds__copy_buf_reserve(&b, 2)) {
        put16(&b, 0xffff); /* trailer */
        st = flush(conn, &b, err);
        if (st != DS_OK)
            abort_msg = "send failed";
    } else if (!abort_msg) {
        st = ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", "ds_event_record_batch");
        abort_msg = "out of memory";
    }
    ds__free(b.p);
    st = ds__conn_copy_end(conn, abort_msg, st, "events.copy", err);
    ds_pool_release(conn);
    return st;
}
