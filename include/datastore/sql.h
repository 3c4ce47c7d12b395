/*
 * datastore/sql.h — the raw SQL escape hatch: any parameterised statement on
 * a leased connection, typed parameters and typed result accessors.
 *
 *   ds_sql_param p[] = { ds_sql_param_int64(user_id), ds_sql_param_text("hello") };
 *   ds_sql_result *res;
 *   if (ds_sql_exec(conn, "SELECT id, created_at FROM ... WHERE a = $1 AND b = $2",
 *                   p, 2, &res, &err) != DS_OK) ...
 *   for (int r = 0; r < ds_sql_result_rows(res); r++)
 *       ds_sql_result_int64(res, r, 0, ...);
 *   ds_sql_result_free(res);
 *
 * Statements follow the pool's statement mode (named and cached per
 * connection in `prepared` mode, unnamed in `pooler` mode) and the same error
 * model as the rest of the library. Results arrive in binary; the accessors
 * decode by column type, and say so when a column's type does not fit
 * (cast it in SQL, e.g. `numeric_col::float8` or `::text`).
 *
 * Names: everything here is ds_sql_* (ds_sql_exec(), the parameter
 * constructors ds_sql_param_*(), the result accessors ds_sql_result_*()),
 * as every public function starts with the name of its header.
 *
 * Thread-safety: a ds_sql_result is immutable and may be read from any thread;
 * it stays valid after its connection is released.
 */
#ifndef DATASTORE_SQL_H
#define DATASTORE_SQL_H

#include <jansson.h>
#include <string.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ds_sql_param_type {
    DS_SQL_PARAM_NULL = 0,
    DS_SQL_PARAM_INT64,       /* int8                                          */
    DS_SQL_PARAM_INT32,       /* int4                                          */
    DS_SQL_PARAM_DOUBLE,      /* float8                                        */
    DS_SQL_PARAM_BOOL,        /* bool                                          */
    DS_SQL_PARAM_TEXT,        /* text (UTF-8, no NUL byte)                     */
    DS_SQL_PARAM_BYTEA,       /* bytea                                         */
    DS_SQL_PARAM_TIMESTAMPTZ, /* timestamptz from microseconds since the epoch */
    DS_SQL_PARAM_JSONB,       /* jsonb from a json_t (borrowed for the call)   */
    DS_SQL_PARAM_UNTYPED      /* text whose type the server infers ($1::uuid)  */
} ds_sql_param_type;

/* One statement parameter, built with the ds_sql_param_*() constructors. A
 * fixed value (docs/abi.md): it never grows (arrays of it are passed). */
typedef struct ds_sql_param {
    ds_sql_param_type type;
    union {
        int64_t i64;
        double f64;
        bool b;
        struct {
            const void *ptr;
            size_t len;
        } bytes;
        const json_t *json;
    } v;
} ds_sql_param;

static inline ds_sql_param ds_sql_param_null(void) {
    ds_sql_param p;
    memset(&p, 0, sizeof p);
    return p;
}
static inline ds_sql_param ds_sql_param_int64(int64_t v) {
    ds_sql_param p = ds_sql_param_null();
    p.type = DS_SQL_PARAM_INT64;
    p.v.i64 = v;
    return p;
}
static inline ds_sql_param ds_sql_param_int32(int32_t v) {
    ds_sql_param p = ds_sql_param_null();
    p.type = DS_SQL_PARAM_INT32;
    p.v.i64 = v;
    return p;
}
static inline ds_sql_param ds_sql_param_double(double v) {
    ds_sql_param p = ds_sql_param_null();
    p.type = DS_SQL_PARAM_DOUBLE;
    p.v.f64 = v;
    return p;
}
static inline ds_sql_param ds_sql_param_bool(bool v) {
    ds_sql_param p = ds_sql_param_null();
    p.type = DS_SQL_PARAM_BOOL;
    p.v.b = v;
    return p;
}
/* NULL `s` binds SQL NULL. */
static inline ds_sql_param ds_sql_param_text(const char *s) {
    ds_sql_param p = ds_sql_param_null();
    if (s) {
        p.type = DS_SQL_PARAM_TEXT;
        p.v.bytes.ptr = s;
        p.v.bytes.len = strlen(s);
    }
    return p;
}
static inline ds_sql_param ds_sql_param_text_n(const char *s, size_t len) {
    ds_sql_param p = ds_sql_param_null();
    if (s) {
        p.type = DS_SQL_PARAM_TEXT;
        p.v.bytes.ptr = s;
        p.v.bytes.len = len;
    }
    return p;
}
static inline ds_sql_param ds_sql_param_bytea(const void *data, size_t len) {
    ds_sql_param p = ds_sql_param_null();
    if (data || len == 0) {
        p.type = DS_SQL_PARAM_BYTEA;
        p.v.bytes.ptr = data ? data : "";
        p.v.bytes.len = len;
    }
    return p;
}
/* Microseconds since 1970-01-01 UTC; INT64_MIN and INT64_MAX bind
 * -infinity and infinity, as ds_sql_result_timestamptz() reads them. */
static inline ds_sql_param ds_sql_param_timestamptz(int64_t epoch_us) {
    ds_sql_param p = ds_sql_param_null();
    p.type = DS_SQL_PARAM_TIMESTAMPTZ;
    p.v.i64 = epoch_us;
    return p;
}
/* NULL `j` binds SQL NULL (use json_null() for a JSON null). */
static inline ds_sql_param ds_sql_param_jsonb(const json_t *j) {
    ds_sql_param p = ds_sql_param_null();
    if (j) {
        p.type = DS_SQL_PARAM_JSONB;
        p.v.json = j;
    }
    return p;
}
static inline ds_sql_param ds_sql_param_untyped(const char *s) {
    ds_sql_param p = ds_sql_param_text(s);
    if (s)
        p.type = DS_SQL_PARAM_UNTYPED;
    return p;
}

typedef struct ds_sql_result ds_sql_result;

/*
 * Runs one statement with `nparams` parameters ($1..$n) on a leased
 * connection. `out` may be NULL when no result is wanted; otherwise *out
 * receives a result to free with ds_sql_result_free() (rows, or none for a
 * command). Errors: DS_ERR_INVALID (bad argument or parameter, e.g. a NUL
 * byte in text), DS_ERR_CONFLICT (unique violation), DS_ERR_TIMEOUT
 * (statement or lock timeout), DS_ERR_CONNECTION (retryable), DS_ERR_DB
 * (sqlstate says which), DS_ERR_NOT_DURABLE (committed without the
 * synchronous standby's confirmation; see core.h), DS_ERR_NOMEM. Use one
 * statement per call.
 */
DS_EXPORT DS_NODISCARD ds_status ds_sql_exec(ds_conn *conn, const char *sql,
                                         const ds_sql_param *params, int nparams,
                                         ds_sql_result **out, ds_error *err);

/* Acquire, ds_sql_exec(), release: for a single statement. */
DS_EXPORT DS_NODISCARD ds_status ds_sql_exec_pool(ds_pool *pool, const char *sql,
                                              const ds_sql_param *params,
                                              int nparams, ds_sql_result **out,
                                              ds_error *err);

/* Frees a result. NULL is a no-op. */
DS_EXPORT void ds_sql_result_free(ds_sql_result *res);

/* Row and column counts (0 for NULL). */
DS_EXPORT int ds_sql_result_rows(const ds_sql_result *res);
DS_EXPORT int ds_sql_result_cols(const ds_sql_result *res);
/* Rows affected by INSERT/UPDATE/DELETE/COPY..., 0 otherwise. */
DS_EXPORT int64_t ds_sql_result_affected(const ds_sql_result *res);
/* Column name (borrowed, lives with the result) or NULL when out of range. */
DS_EXPORT const char *ds_sql_result_col_name(const ds_sql_result *res, int col);
/* Column index by name, or -1. */
DS_EXPORT int ds_sql_result_col_index(const ds_sql_result *res, const char *name);
/* True when the cell is SQL NULL or out of range. */
DS_EXPORT bool ds_sql_result_is_null(const ds_sql_result *res, int row, int col);

/*
 * Typed accessors. Each fails with DS_ERR_INVALID (message names the row,
 * column and type) when the cell is NULL, out of range, or of a type it does
 * not decode:
 *   int64        int2, int4, int8, oid
 *   double       float4, float8, int2, int4, int8
 *   bool         bool
 *   text         text, varchar, bpchar, name, json, jsonb (cast others:
 *                `uuid_col::text`)
 *   bytea        bytea (any type: the raw binary value)
 *   timestamptz  timestamptz, timestamp (microseconds since 1970-01-01 UTC)
 *   json         json, jsonb, text holding JSON
 */
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_int64(const ds_sql_result *res, int row,
                                                 int col, int64_t *out,
                                                 ds_error *err);
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_double(const ds_sql_result *res,
                                                  int row, int col,
                                                  double *out, ds_error *err);
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_bool(const ds_sql_result *res, int row,
                                                int col, bool *out,
                                                ds_error *err);
/* *out is borrowed and NUL-terminated; it lives until ds_sql_result_free(). */
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_text(const ds_sql_result *res, int row,
                                                int col, const char **out,
                                                size_t *len, ds_error *err);
/* *out is borrowed; it lives until ds_sql_result_free(). */
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_bytea(const ds_sql_result *res,
                                                 int row, int col,
                                                 const uint8_t **out,
                                                 size_t *len, ds_error *err);
/* Microseconds since 1970-01-01 UTC; -infinity is INT64_MIN, infinity
 * INT64_MAX, and so are PostgreSQL's last years (from 294247 AD), which
 * the type cannot hold. Takes timestamp columns too (read as UTC). */
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_timestamptz(const ds_sql_result *res,
                                                       int row, int col,
                                                       int64_t *epoch_us,
                                                       ds_error *err);
/* *out is a new reference: json_decref() it. */
DS_EXPORT DS_NODISCARD ds_status ds_sql_result_json(const ds_sql_result *res, int row,
                                                int col, json_t **out,
                                                ds_error *err);

struct pg_result; /* libpq's PGresult */
/* The underlying PGresult (binary format), read-only like the result that
 * holds it. Borrowed: lives as long as `res`; do not PQclear it. NULL for a
 * NULL `res`. */
DS_EXPORT const struct pg_result *ds_sql_result_pg(const ds_sql_result *res);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_SQL_H */
