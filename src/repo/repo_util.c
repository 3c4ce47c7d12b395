/* Validation, JSON encoding, statement execution and decoding helpers
 * shared by every repository. */
#include <stdio.h>
#include <string.h>

#include "core/json_internal.h"
#include "repo/repo_internal.h"

ds_status ds__check_text(ds_error *err, const char *func, const char *field,
                         const char *s, size_t len, size_t min, size_t max) {
    if (!s)
        return ds__error_set(err, DS_ERR_INVALID, "%s: %s is NULL", func,
                             field);
    if (len > max)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s is %zu bytes, longer than the limit of "
                             "%zu",
                             func, field, len, max);
    if (len < min)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s is shorter than %zu bytes", func, field,
                             min);
    if (memchr(s, 0, len))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s contains a NUL byte", func, field);
    if (!ds__utf8_valid(s, len))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s is not valid UTF-8", func, field);
    return DS_OK;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' ||
           c == '\v';
}

/* Characters RFC 5322 allows unquoted in a local part (atext and '.'). */
static bool local_char(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

ds_status ds__email_normalise(ds_error *err, const char *func,
                              const char *email, char *out) {
    if (!email)
        return ds__error_set(err, DS_ERR_INVALID, "%s: email is NULL", func);
    size_t len = strlen(email);
    while (len && is_space(email[len - 1]))
        len--;
    while (len && is_space(*email)) {
        email++;
        len--;
    }
    if (len > DS_EMAIL_MAX)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: email is longer than %d bytes", func,
                             DS_EMAIL_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = email[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[len] = '\0';
    const char *at = strchr(out, '@');
    if (!at || strchr(at + 1, '@'))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: email must contain exactly one '@'", func);
    size_t local_len = (size_t)(at - out);
    if (local_len == 0 || local_len > 64 || out[0] == '.' ||
        out[local_len - 1] == '.')
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: email has an empty, over-long or badly "
                             "dotted local part",
                             func);
    for (size_t i = 0; i < local_len; i++)
        if (!local_char((unsigned char)out[i]) ||
            (out[i] == '.' && out[i + 1] == '.'))
            return ds__error_set(err, DS_ERR_INVALID,
                                 "%s: email local part has a character that "
                                 "is not allowed",
                                 func);
    const char *domain = at + 1;
    size_t label = 0, labels = 0;
    for (const char *p = domain;; p++) {
        char c = *p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return ds__error_set(err, DS_ERR_INVALID,
                                     "%s: email domain is malformed", func);
            labels++;
            label = 0;
            if (!c)
                break;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (c == '-' && label > 0);
        if (!ok)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "%s: email domain has a character that is "
                                 "not allowed",
                                 func);
        label++;
    }
    if (labels < 2)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: email domain needs a dot", func);
    return DS_OK;
}

typedef struct json_buf {
    char *p;
    size_t len, cap;
    int64_t max;
    bool too_long, nomem;
} json_buf;

static int json_sink(const char *buf, size_t size, void *data) {
    json_buf *b = data;
    if ((int64_t)(b->len - 1 + size) > b->max) {
        b->too_long = true;
        return -1;
    }
    if (b->len + size + 1 > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + size + 1)
            cap *= 2;
        char *np = ds__realloc(b->p, cap);
        if (!np) {
            b->nomem = true;
            return -1;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, buf, size);
    b->len += size;
    return 0;
}

ds_status ds__json_encode(ds_error *err, const char *func, const char *field,
                          const json_t *j, int want, const char *def,
                          int64_t max, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    json_buf b = {NULL, 1, 0, max, false, false};
    if (j && want >= 0 && (int)json_typeof(j) != want)
        return ds__error_set(err, DS_ERR_INVALID, "%s: %s must be a JSON %s",
                             func, field,
                             want == JSON_OBJECT ? "object" : "array");
    b.cap = 256;
    b.p = ds__malloc(b.cap);
    if (!b.p)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", func);
    b.p[0] = 1; /* jsonb binary format version */
    if (!j) {
        size_t n = strlen(def);
        memcpy(b.p + 1, def, n);
        b.len = 1 + n;
    } else if (ds__json_dump_callback(j, json_sink, &b,
                                  JSON_COMPACT | JSON_ENCODE_ANY) != 0) {
        ds__free(b.p);
        if (b.nomem)
            return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", func);
        if (b.too_long)
            return ds__error_set(err, DS_ERR_INVALID,
                                 "%s: %s is longer than the limit of %lld "
                                 "bytes (repo_max_json_bytes)",
                                 func, field, (long long)max);
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s could not be encoded as JSON", func,
                             field);
    }
    b.p[b.len] = '\0';
    /* jsonb cannot store U+0000; refuse it here rather than half-way. */
    if (strstr(b.p + 1, "\\u0000")) {
        ds__free(b.p);
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: %s contains a NUL character, which jsonb "
                             "cannot store",
                             func, field);
    }
    *out = b.p;
    *out_len = b.len;
    return DS_OK;
}

ds_status ds__check_limit(ds_error *err, const char *func, const ds_pool *pool,
                          int limit) {
    if (limit <= 0)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: limit must be positive (got %d)", func,
                             limit);
    int max_page = ds__repo_max_page(pool);
    if (limit > max_page)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: limit %d is above repo_max_page (%d)", func,
                             limit, max_page);
    return DS_OK;
}

ds_status ds__not_found(ds_error *err, const char *func, const char *what,
                        int64_t id) {
    return ds__error_set(err, DS_ERR_NOT_FOUND, "%s: no %s with id %lld", func,
                         what, (long long)id);
}

PGresult *ds__repo_exec_conn(ds_conn *conn, const ds__stmt_def *def,
                             const ds__bind *b, ds_error *err) {
    PGresult *r = ds__stmt_run(conn, def, b, err);
    if (!r && err && strcmp(err->sqlstate, "23503") == 0)
        err->code = DS_ERR_NOT_FOUND;
    return r;
}

PGresult *ds__repo_exec(ds_pool *pool, bool read, const ds__stmt_def *def,
                        const ds__bind *b, ds_error *err) {
    ds_conn *conn;
    ds_status st = read ? ds_pool_acquire_read(pool, &conn, err)
                        : ds_pool_acquire(pool, &conn, err);
    if (st != DS_OK)
        return NULL;
    PGresult *r = ds__repo_exec_conn(conn, def, b, err);
    ds_pool_release(conn);
    return r;
}

ds_status ds__cell_json(const PGresult *r, int row, int col, json_t **out,
                        ds_error *err) {
    *out = NULL;
    if (PQgetisnull(r, row, col))
        return DS_OK;
    const char *p = PQgetvalue(r, row, col);
    size_t len = (size_t)PQgetlength(r, row, col);
    if (PQftype(r, col) == DS_OID_JSONB) {
        if (len < 1 || p[0] != 1)
            return ds__error_set(err, DS_ERR_INTERNAL,
                                 "unknown jsonb binary version");
        p++;
        len--;
    }
    json_error_t jerr;
    *out = ds__json_loadb(p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (*out)
        return DS_OK;
    if (json_error_code(&jerr) == json_error_out_of_memory)
        return ds__error_set(err, DS_ERR_NOMEM, "out of memory decoding %s",
                             PQfname(r, col));
    /* Valid jsonb that jansson cannot hold (written by another client).
     * jerr.text quotes the value, so it is not repeated here. */
    return ds__error_set(
        err, DS_ERR_UNSUPPORTED,
        "the stored JSON of %s cannot be decoded (byte %d): %s",
        PQfname(r, col), jerr.position,
        json_error_code(&jerr) == json_error_numeric_overflow
            ? "a number beyond 64-bit integers and doubles"
            : "beyond what jansson accepts (e.g. nested too deeply)");
}

ds_status ds__repo_command(ds_pool *pool, const ds__stmt_def *def,
                           const ds__bind *b, const char *func,
                           const char *what, int64_t id, ds_error *err) {
    PGresult *r = ds__repo_exec(pool, false, def, b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    bool hit = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return hit ? DS_OK : ds__not_found(err, func, what, id);
}

ds_status ds__repo_id_command(ds_pool *pool, const ds__stmt_def *def,
                              int64_t id, const char *id_name,
                              const char *func, const char *what,
                              ds_error *err) {
    DS_REPO_ERR(err);
    if (!pool)
        return ds__error_set(err, DS_ERR_INVALID, "%s: pool is NULL", func);
    if (id <= 0)
        return ds__error_set(err, DS_ERR_INVALID, "%s: %s must be positive",
                             func, id_name);
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    return ds__repo_command(pool, def, &b, func, what, id, err);
}

ds_status ds__repo_count(ds_pool *pool, const ds__stmt_def *def,
                         const ds__bind *b, const char *func, const char *what,
                         int64_t id, int64_t *out, ds_error *err) {
    *out = 0;
    PGresult *r = ds__repo_exec(pool, false, def, b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    ds_status st = DS_OK;
    if (PQntuples(r) == 0)
        st = ds__not_found(err, func, what, id);
    else
        *out = ds__cell_int64(r, 0, 0);
    PQclear(r);
    return st;
}

/* ---- rows and lists ---------------------------------------------------------- */

static void *block_take(ds__block *b, size_t size) {
    b->used = (b->used + 7) & ~(size_t)7;
    void *p = b->base + b->used;
    b->used += size;
    return p;
}

/* Room for `n` structs of `size` taken at once, with the padding
 * block_take may add in front of them. */
static size_t struct_bytes(size_t size, size_t n) { return size * n + 7; }

/* Room for the text cells of `t` in result row `row` (each + NUL). */
static size_t text_bytes(const PGresult *r, int row, const ds__row_type *t) {
    size_t n = 0;
    for (int i = 0; i < t->ntext; i++)
        n += ds__cell_len(r, row, t->text_cols[i]) + 1;
    return n;
}

static void *nomem(ds_error *err, const char *func) {
    ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", func);
    return NULL;
}

void *ds__row_new(const PGresult *r, int row, const ds__row_type *t,
                  const char *func, ds_error *err) {
    ds__block b = {ds__malloc(t->size + text_bytes(r, row, t)), 0};
    if (!b.base)
        return nomem(err, func);
    void *item = block_take(&b, t->size);
    memset(item, 0, t->size);
    if (t->decode(r, row, &b, item, err) != DS_OK) {
        if (t->clear)
            t->clear(item);
        ds__free(b.base);
        return NULL;
    }
    return item;
}

void *ds__list_new(const PGresult *r, const int *order, int n, bool has_more,
                   const ds__row_type *t, const char *func, ds_error *err) {
    size_t rows_size = t->size * (size_t)n;
    /* The item pointers are stored as the row type's pointers by attach;
     * every object pointer has the size of void * on the platforms we
     * build for. */
    size_t cap = t->list_size + struct_bytes(sizeof(void *), (size_t)n) +
                 struct_bytes(t->size, (size_t)n);
    for (int i = 0; i < n; i++)
        cap += text_bytes(r, order ? order[i] : i, t);
    ds__block b = {ds__malloc(cap), 0};
    if (!b.base)
        return nomem(err, func);
    void *list = block_take(&b, t->list_size);
    memset(list, 0, t->list_size);
    void *items = block_take(&b, sizeof(void *) * (size_t)n);
    char *rows = block_take(&b, rows_size);
    memset(rows, 0, rows_size);
    t->attach(list, n ? items : NULL, rows, (size_t)n, has_more);
    for (int i = 0; i < n; i++) {
        if (t->decode(r, order ? order[i] : i, &b, rows + t->size * (size_t)i,
                      err) == DS_OK)
            continue;
        for (int k = 0; t->clear && k <= i; k++)
            t->clear(rows + t->size * (size_t)k);
        ds__free(b.base);
        return NULL;
    }
    return list;
}

ds_status ds__repo_get(ds_pool *pool, bool read, const ds__stmt_def *def,
                       const ds__bind *b, const ds__row_type *t,
                       const char *func, const char *what, int64_t id,
                       void **out, ds_error *err) {
    if (out)
        *out = NULL;
    PGresult *r = ds__repo_exec(pool, read, def, b, err);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    ds_status st = DS_OK;
    if (PQntuples(r) == 0 && !what)
        st = ds__error_set(err, DS_ERR_INTERNAL, "%s: the statement returned "
                           "no row", func);
    else if (PQntuples(r) == 0)
        st = id ? ds__not_found(err, func, what, id)
                : ds__error_set(err, DS_ERR_NOT_FOUND, "%s: no %s", func, what);
    else if (out && !(*out = ds__row_new(r, 0, t, func, err)))
        st = err ? err->code : DS_ERR_NOMEM;
    PQclear(r);
    return st;
}

ds_status ds__repo_get_id(ds_pool *pool, const ds__stmt_def *def,
                          const ds__row_type *t, int64_t id, const char *func,
                          const char *what, void **out, ds_error *err) {
    DS_REPO_ERR(err);
    if (!out)
        return ds__error_set(err, DS_ERR_INVALID, "%s: out is NULL", func);
    *out = NULL;
    if (!pool)
        return ds__error_set(err, DS_ERR_INVALID, "%s: pool is NULL", func);
    if (id <= 0)
        return ds__error_set(err, DS_ERR_INVALID, "%s: id must be positive",
                             func);
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, id);
    return ds__repo_get(pool, false, def, &b, t, func, what, id, out, err);
}

void *ds__repo_list(ds_pool *pool, bool read, const ds__stmt_def *def,
                    const ds__bind *b, int limit, const ds__row_type *t,
                    const char *func, const char *owner, int64_t owner_id,
                    ds_error *err) {
    PGresult *r = ds__repo_exec(pool, read, def, b, err);
    if (!r)
        return NULL;
    int rows = PQntuples(r);
    void *list = NULL;
    if (owner && rows == 0) {
        ds__not_found(err, func, owner, owner_id);
    } else {
        if (owner && rows == 1 && PQgetisnull(r, 0, 0))
            rows = 0;
        list = ds__list_new(r, NULL, rows > limit ? limit : rows, rows > limit,
                            t, func, err);
    }
    PQclear(r);
    return list;
}
