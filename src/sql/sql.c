/* The raw SQL escape hatch: typed parameters in, binary results out, and
 * accessors that decode by column type. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_internal.h"
#include "datastore/sql.h"
#include "pool/stmt.h"

struct ds_sql_result {
    PGresult *pg;
};

static void json_text_free(void *text) {
    json_malloc_t jmalloc;
    json_free_t jfree;
    json_get_alloc_funcs(&jmalloc, &jfree);
    jfree(text);
}

/* Binds parameter `i`; errors name it as $i+1. */
static ds_status bind_param(ds__bind *b, const ds_sql_param *p, int i,
                            ds_error *err) {
    switch (p->type) {
    case DS_SQL_PARAM_NULL:
        ds__bind_null(b);
        return DS_OK;
    case DS_SQL_PARAM_INT64:
        ds__bind_int64(b, p->v.i64);
        return DS_OK;
    case DS_SQL_PARAM_INT32:
        if (p->v.i64 < INT32_MIN || p->v.i64 > INT32_MAX)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "ds_sql_exec: parameter $%d does not fit int4",
                                 i + 1);
        ds__bind_int32(b, (int32_t)p->v.i64);
        return DS_OK;
    case DS_SQL_PARAM_DOUBLE:
        ds__bind_float8(b, p->v.f64);
        return DS_OK;
    case DS_SQL_PARAM_BOOL:
        ds__bind_bool(b, p->v.b);
        return DS_OK;
    case DS_SQL_PARAM_TIMESTAMPTZ:
        ds__bind_ts(b, p->v.i64);
        return DS_OK;
    case DS_SQL_PARAM_TEXT:
    case DS_SQL_PARAM_UNTYPED:
    case DS_SQL_PARAM_BYTEA:
        if (!p->v.bytes.ptr || p->v.bytes.len > INT32_MAX)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "ds_sql_exec: parameter $%d is NULL or longer "
                                 "than 2 GiB",
                                 i + 1);
        if (p->type == DS_SQL_PARAM_BYTEA) {
            ds__bind_bytes(b, p->v.bytes.ptr, p->v.bytes.len);
            return DS_OK;
        }
        if (memchr(p->v.bytes.ptr, 0, p->v.bytes.len))
            return ds__error_set(err, DS_ERR_INVALID,
                                 "ds_sql_exec: text parameter $%d contains a NUL "
                                 "byte",
                                 i + 1);
        if (p->type == DS_SQL_PARAM_TEXT) {
            ds__bind_text_n(b, p->v.bytes.ptr, p->v.bytes.len);
            return DS_OK;
        }
        {
            /* text format needs a NUL-terminated value */
            char *copy = ds__strndup(p->v.bytes.ptr, p->v.bytes.len);
            if (!copy)
                return ds__error_set(err, DS_ERR_NOMEM,
                                     "ds_sql_exec: out of memory");
            ds__bind_owned(b, copy, p->v.bytes.len, 0, 0, NULL);
        }
        return DS_OK;
    case DS_SQL_PARAM_JSONB: {
        if (!p->v.json)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "ds_sql_exec: parameter $%d: NULL json_t", i + 1);
        char *text = ds__json_dumps(p->v.json, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "ds_sql_exec: parameter $%d: JSON could not be "
                                 "serialised",
                                 i + 1);
        ds__bind_owned(b, text, strlen(text), DS_OID_JSONB, 0,
                       json_text_free);
        return DS_OK;
    }
    default:
        return ds__error_set(err, DS_ERR_INVALID,
                             "ds_sql_exec: parameter $%d has an unknown type",
                             i + 1);
    }
}

static ds_status bind_params(ds__bind *b, const ds_sql_param *params, int n,
                             ds_error *err) {
    if (!ds__bind_reserve(b, n))
        return ds__bind_check(b, "ds_sql_exec", err);
    for (int i = 0; i < n; i++) {
        ds_status st = bind_param(b, &params[i], i, err);
        if (st != DS_OK)
            return st;
    }
    return ds__bind_check(b, "ds_sql_exec", err);
}

DS_EXPORT ds_status ds_sql_exec(ds_conn *conn, const char *sql,
                            const ds_sql_param *params, int nparams,
                            ds_sql_result **out, ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, conn, "conn is NULL");
    DS_CHECK_ARG(err, sql, "sql is NULL");
    DS_CHECK_ARG(err, nparams >= 0 && nparams <= 65535,
                 "nparams must be 0 to 65535");
    DS_CHECK_ARG(err, nparams == 0 || params, "params is NULL");
    ds_sql_result *res = NULL;
    if (out) {
        res = ds__malloc(sizeof *res);
        if (!res)
            return ds__error_set(err, DS_ERR_NOMEM, "ds_sql_exec: out of memory");
    }
    ds__bind b;
    ds__bind_init(&b);
    ds_status st = bind_params(&b, params, nparams, err);
    if (st != DS_OK) {
        ds__bind_free(&b);
        ds__free(res);
        return st;
    }
    /* the status comes from the mapped error, so a caller that passes no
     * error out-param gets the same one */
    ds_error local = {0};
    ds_error *e = err ? err : &local;
    PGresult *r = ds__sql_run(conn, sql, &b, NULL, e);
    ds__bind_free(&b);
    if (!r) {
        ds__free(res);
        return e->code;
    }
    if (!out) {
        PQclear(r);
        return DS_OK;
    }
    res->pg = r;
    *out = res;
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_exec_pool(ds_pool *pool, const char *sql,
                                 const ds_sql_param *params, int nparams,
                                 ds_sql_result **out, ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_conn *conn;
    ds_status st = ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return st;
    st = ds_sql_exec(conn, sql, params, nparams, out, err);
    ds_pool_release(conn);
    return st;
}

/* ---- results ---------------------------------------------------------- */

DS_EXPORT void ds_sql_result_free(ds_sql_result *res) {
    if (!res)
        return;
    PQclear(res->pg);
    ds__free(res);
}

DS_EXPORT int ds_sql_result_rows(const ds_sql_result *res) {
    return res ? PQntuples(res->pg) : 0;
}

DS_EXPORT int ds_sql_result_cols(const ds_sql_result *res) {
    return res ? PQnfields(res->pg) : 0;
}

DS_EXPORT int64_t ds_sql_result_affected(const ds_sql_result *res) {
    if (!res)
        return 0;
    const char *t = PQcmdTuples(res->pg);
    return t && *t ? strtoll(t, NULL, 10) : 0;
}

DS_EXPORT const char *ds_sql_result_col_name(const ds_sql_result *res, int col) {
    if (!res || col < 0 || col >= PQnfields(res->pg))
        return NULL;
    return PQfname(res->pg, col);
}

DS_EXPORT int ds_sql_result_col_index(const ds_sql_result *res, const char *name) {
    if (!res || !name)
        return -1;
    for (int i = 0; i < PQnfields(res->pg); i++)
        if (strcmp(PQfname(res->pg, i), name) == 0)
            return i;
    return -1;
}

static bool in_range(const ds_sql_result *res, int row, int col) {
    return res && row >= 0 && col >= 0 && row < PQntuples(res->pg) &&
           col < PQnfields(res->pg);
}

DS_EXPORT bool ds_sql_result_is_null(const ds_sql_result *res, int row, int col) {
    return !in_range(res, row, col) || PQgetisnull(res->pg, row, col);
}

/* Validates the cell and returns its bytes, or fills err. */
static const char *cell(const ds_sql_result *res, int row, int col, int *len,
                        Oid *type, ds_error *err) {
    if (!res) {
        ds__error_set(err, DS_ERR_INVALID, "result is NULL");
        return NULL;
    }
    if (!in_range(res, row, col)) {
        ds__error_set(err, DS_ERR_INVALID,
                      "row %d column %d is out of range (%d rows, %d columns)",
                      row, col, PQntuples(res->pg), PQnfields(res->pg));
        return NULL;
    }
    if (PQgetisnull(res->pg, row, col)) {
        ds__error_set(err, DS_ERR_INVALID,
                      "row %d column '%s' is NULL (check ds_sql_result_is_null)",
                      row, PQfname(res->pg, col));
        return NULL;
    }
    *len = PQgetlength(res->pg, row, col);
    *type = PQftype(res->pg, col);
    return PQgetvalue(res->pg, row, col);
}

static ds_status wrong_type(const ds_sql_result *res, int row, int col, Oid type,
                            const char *want, ds_error *err) {
    return ds__error_set(err, DS_ERR_INVALID,
                         "row %d column '%s' has type oid %u, which %s cannot "
                         "decode; cast it in SQL",
                         row, PQfname(res->pg, col), type, want);
}

DS_EXPORT ds_status ds_sql_result_int64(const ds_sql_result *res, int row, int col,
                                    int64_t *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    int len;
    Oid type;
    const char *v = cell(res, row, col, &len, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    if (type == DS_OID_INT8 && len == 8)
        *out = (int64_t)ds__get_be64(v);
    else if (type == DS_OID_INT4 && len == 4)
        *out = (int32_t)ds__get_be32(v);
    else if (type == DS_OID_INT2 && len == 2)
        *out = (int16_t)ds__get_be16(v);
    else if (type == DS_OID_OID && len == 4)
        *out = ds__get_be32(v);
    else
        return wrong_type(res, row, col, type, "ds_sql_result_int64", err);
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_double(const ds_sql_result *res, int row, int col,
                                     double *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    int len;
    Oid type;
    const char *v = cell(res, row, col, &len, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    if (type == DS_OID_FLOAT8 && len == 8) {
        uint64_t bits = ds__get_be64(v);
        memcpy(out, &bits, 8);
    } else if (type == DS_OID_FLOAT4 && len == 4) {
        uint32_t bits = ds__get_be32(v);
        float f;
        memcpy(&f, &bits, 4);
        *out = f;
    } else {
        int64_t i;
        ds_error tmp;
        if (ds_sql_result_int64(res, row, col, &i, &tmp) != DS_OK)
            return wrong_type(res, row, col, type, "ds_sql_result_double", err);
        *out = (double)i;
    }
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_bool(const ds_sql_result *res, int row, int col,
                                   bool *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    int len;
    Oid type;
    const char *v = cell(res, row, col, &len, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    if (type != DS_OID_BOOL || len != 1)
        return wrong_type(res, row, col, type, "ds_sql_result_bool", err);
    *out = v[0] != 0;
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_text(const ds_sql_result *res, int row, int col,
                                   const char **out, size_t *len,
                                   ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    int n;
    Oid type;
    const char *v = cell(res, row, col, &n, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    switch (type) {
    case DS_OID_TEXT: case DS_OID_VARCHAR: case DS_OID_BPCHAR:
    case DS_OID_NAME: case DS_OID_JSON: case DS_OID_UNKNOWN: case DS_OID_CHAR:
        break;
    case DS_OID_JSONB:
        /* binary jsonb is a version byte (1) followed by the text */
        if (n < 1 || v[0] != 1)
            return wrong_type(res, row, col, type, "ds_sql_result_text", err);
        v++;
        n--;
        break;
    default:
        return wrong_type(res, row, col, type, "ds_sql_result_text", err);
    }
    *out = v; /* libpq NUL-terminates every value */
    if (len)
        *len = (size_t)n;
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_bytea(const ds_sql_result *res, int row, int col,
                                    const uint8_t **out, size_t *len,
                                    ds_error *err) {
    DS_CHECK_ARG(err, out && len, "out or len is NULL");
    int n;
    Oid type;
    const char *v = cell(res, row, col, &n, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    *out = (const uint8_t *)v;
    *len = (size_t)n;
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_timestamptz(const ds_sql_result *res, int row,
                                          int col, int64_t *epoch_us,
                                          ds_error *err) {
    DS_CHECK_ARG(err, epoch_us, "epoch_us is NULL");
    int n;
    Oid type;
    const char *v = cell(res, row, col, &n, &type, err);
    if (!v)
        return DS_ERR_INVALID;
    if ((type != DS_OID_TIMESTAMPTZ && type != DS_OID_TIMESTAMP) || n != 8)
        return wrong_type(res, row, col, type, "ds_sql_result_timestamptz", err);
    *epoch_us = ds__ts_from_pg((int64_t)ds__get_be64(v));
    return DS_OK;
}

DS_EXPORT ds_status ds_sql_result_json(const ds_sql_result *res, int row, int col,
                                   json_t **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    const char *text;
    size_t len;
    ds_error tmp;
    if (ds_sql_result_text(res, row, col, &text, &len, &tmp) != DS_OK) {
        if (err)
            *err = tmp;
        return tmp.code;
    }
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
    if (!j)
        return ds__error_set(err, DS_ERR_INVALID,
                             "row %d column '%s' is not valid JSON: %s", row,
                             PQfname(res->pg, col), jerr.text);
    *out = j;
    return DS_OK;
}

DS_EXPORT const struct pg_result *ds_sql_result_pg(const ds_sql_result *res) {
    return res ? res->pg : NULL;
}
