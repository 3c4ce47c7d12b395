/* Shared machinery of the repositories: input
 * validation against the pool's limits, decoding binary PGresult cells
 * straight into row structs, and one-allocation row blocks. Never
 * installed. */
#ifndef DS_REPO_INTERNAL_H
#define DS_REPO_INTERNAL_H

#include <jansson.h>
#include <string.h>

#include "pool/stmt.h"

/* Fixed field limits: the schema's CHECK constraints (bytes here, which
 * is never more characters than the schema allows). */
#define DS_EMAIL_MAX 320
#define DS_DISPLAY_NAME_MAX 200
#define DS_LOCALE_MAX 35
#define DS_TIMEZONE_MAX 64
#define DS_TITLE_MAX 500
#define DS_IDEMPOTENCY_KEY_MAX 200
#define DS_PROVIDER_MAX 64
#define DS_ACCOUNT_ID_MAX 255
#define DS_SCOPES_MAX 4000
#define DS_TEAM_NAME_MAX 200
#define DS_SETTING_KEY_MAX 128
#define DS_EVENT_NAME_MAX 200

/* Public entry points start with this, so that internal paths can always
 * read the error code (callers may pass err == NULL). */
#define DS_REPO_ERR(err)                                                       \
    ds_error err##_local_;                                                     \
    if (!(err))                                                                \
    (err) = &err##_local_

/* ---- validation --------------------------------------------------------- */

/* Text field: not NULL, valid UTF-8 without NUL, at most `max` bytes, and
 * at least `min`. `func`/`field` name it in the message. */
ds_status ds__check_text(ds_error *err, const char *func, const char *field,
                         const char *s, size_t len, size_t min, size_t max);

/* Lower-cases and trims `email` into `out` (DS_EMAIL_MAX + 1 bytes) and
 * checks its shape: one '@', a non-empty local part and a dotted domain of
 * letters, digits and hyphens, no spaces or control characters. */
ds_status ds__email_normalise(ds_error *err, const char *func,
                              const char *email, char *out);

/* Serialises `j` (which must be of `want` type: JSON_OBJECT, JSON_ARRAY or
 * -1 for any) into a binary jsonb buffer (ds__malloc'd, version byte
 * first) of at most `max` bytes of text. NULL `j` gives `def` ("{}",
 * "[]"). Errors: DS_ERR_INVALID (wrong type, too long, not encodable:
 * e.g. NaN or invalid UTF-8 in a string), DS_ERR_NOMEM. */
ds_status ds__json_encode(ds_error *err, const char *func, const char *field,
                          const json_t *j, int want, const char *def,
                          int64_t max, char **out, size_t *out_len);

/* The repository limits of `pool` (repo_max_* settings). */
static inline int64_t ds__repo_max_json(const ds_pool *pool) {
    return ds__pool_settings_get(pool)->repo_max_json_bytes;
}
static inline int64_t ds__repo_max_message(const ds_pool *pool) {
    return ds__pool_settings_get(pool)->repo_max_message_bytes;
}
static inline int ds__repo_max_batch(const ds_pool *pool) {
    return ds__pool_settings_get(pool)->repo_max_batch;
}
static inline int ds__repo_max_page(const ds_pool *pool) {
    return ds__pool_settings_get(pool)->repo_max_page;
}
static inline int64_t ds__repo_activity_interval_ms(const ds_pool *pool) {
    return ds__pool_settings_get(pool)->repo_activity_interval_ms;
}

/* Checks a page limit against the pool's repo_max_page. */
ds_status ds__check_limit(ds_error *err, const char *func, const ds_pool *pool,
                          int limit);

/* ---- execution ---------------------------------------------------------- */

/* Acquires (the primary, or a read lease when `read`), runs `def` with the
 * bound parameters and releases. Returns the PGresult or NULL with `err`
 * filled. SQLSTATE 23503 (a referenced row is missing) comes back as
 * DS_ERR_NOT_FOUND. */
PGresult *ds__repo_exec(ds_pool *pool, bool read, const ds__stmt_def *def,
                        const ds__bind *b, ds_error *err);

/* The same on a connection the caller holds. */
PGresult *ds__repo_exec_conn(ds_conn *conn, const ds__stmt_def *def,
                             const ds__bind *b, ds_error *err);

/* Builds "not found" errors consistently: "func: no <what> with id <id>". */
ds_status ds__not_found(ds_error *err, const char *func, const char *what,
                        int64_t id);

/* Runs an UPDATE or DELETE of the row `id`: DS_ERR_NOT_FOUND naming `what`
 * when it touches nothing. */
ds_status ds__repo_command(ds_pool *pool, const ds__stmt_def *def,
                           const ds__bind *b, const char *func,
                           const char *what, int64_t id, ds_error *err);

/* A command on one row by its id alone: checks `pool` and `id` (named
 * `id_name` in the message), binds the id and runs ds__repo_command. */
ds_status ds__repo_id_command(ds_pool *pool, const ds__stmt_def *def,
                              int64_t id, const char *id_name,
                              const char *func, const char *what,
                              ds_error *err);

/* Runs a count statement that returns one row, or none when the owner `id`
 * (a `what`) does not exist: DS_ERR_NOT_FOUND then. *out is 0 on failure. */
ds_status ds__repo_count(ds_pool *pool, const ds__stmt_def *def,
                         const ds__bind *b, const char *func, const char *what,
                         int64_t id, int64_t *out, ds_error *err);

/* ---- decoding ----------------------------------------------------------- */

static inline int64_t ds__cell_int64(const PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col)
               ? 0
               : (int64_t)ds__get_be64(PQgetvalue(r, row, col));
}
static inline bool ds__cell_bool(const PGresult *r, int row, int col) {
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] != 0;
}
/* Timestamptz to epoch microseconds (ds__ts_from_pg); NULL gives 0. */
static inline int64_t ds__cell_ts(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col))
        return 0;
    return ds__ts_from_pg((int64_t)ds__get_be64(PQgetvalue(r, row, col)));
}
static inline size_t ds__cell_len(const PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
}

/* Parses a binary jsonb cell into a new json_t (NULL cell: NULL, no
 * error). Errors: DS_ERR_NOMEM, DS_ERR_UNSUPPORTED for valid JSON that
 * jansson cannot represent (e.g. 1e400 or a 30-digit integer, which other
 * writers may store); the message never quotes the value. */
ds_status ds__cell_json(const PGresult *r, int row, int col, json_t **out,
                        ds_error *err);

/* A bump allocator over one block: rows and their strings live together
 * and go with one free. */
typedef struct ds__block {
    char *base;
    size_t used;
} ds__block;

/* Copies a text cell (NULL cell: NULL). The block was sized for it from
 * the row type's text_cols. */
static inline const char *ds__block_text(ds__block *b, const PGresult *r,
                                         int row, int col) {
    if (PQgetisnull(r, row, col))
        return NULL;
    size_t len = (size_t)PQgetlength(r, row, col);
    char *p = b->base + b->used;
    memcpy(p, PQgetvalue(r, row, col), len);
    p[len] = '\0';
    b->used += len + 1;
    return p;
}

/* ---- rows and lists ---------------------------------------------------------- */

/* The number of elements of an array (not a pointer). */
#define DS__NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A repository's row type, for the shared row and list builders. A row is
 * one allocation (the struct, then its strings) freed with ds__free after
 * `clear`; a list is one allocation too: the list struct, the item
 * pointers, the rows and their strings. */
typedef struct ds__row_type {
    size_t size;          /* sizeof the row struct                          */
    const int *text_cols; /* the cells decode copies with ds__block_text;
                             the block is sized from these, so every text
                             cell decode copies must be listed */
    int ntext;
    /* Decodes result row `row` into `item` (zeroed). */
    ds_status (*decode)(const PGresult *r, int row, ds__block *b, void *item,
                        ds_error *err);
    /* Releases what decode attached to a row beyond the block (JSON); NULL
     * when nothing. Must accept a zeroed row. */
    void (*clear)(void *item);
    size_t list_size; /* sizeof the list struct                             */
    /* Points the zeroed list at its rows: items = `items` (room for `n`
     * pointers), items[i] = the i-th of the `n` rows at `rows`, count = n,
     * has_more. */
    void (*attach)(void *list, void *items, void *rows, size_t n,
                   bool has_more);
} ds__row_type;

/* Defines `static void fn(...)`, the `attach` of a row type whose list
 * type is `list_t` with items of `row_t *` (count, items, has_more). */
#define DS__LIST_ATTACH(fn, list_t, row_t)                                     \
    static void fn(void *list_, void *items, void *rows, size_t n,             \
                   bool has_more) {                                            \
        list_t *list = list_;                                                  \
        list->items = items;                                                   \
        for (size_t i = 0; i < n; i++)                                         \
            list->items[i] = (row_t *)rows + i;                                \
        list->count = n;                                                       \
        list->has_more = has_more;                                             \
    }

/* Decodes result row `row` into a new row of type `t`. NULL with `err`
 * filled (DS_ERR_NOMEM naming `func`, or decode's error) on failure. */
void *ds__row_new(const PGresult *r, int row, const ds__row_type *t,
                  const char *func, ds_error *err);

/* Builds a list of `n` rows: result rows order[0..n) (NULL order: 0..n).
 * NULL with `err` filled on failure, nothing left allocated. */
void *ds__list_new(const PGresult *r, const int *order, int n, bool has_more,
                   const ds__row_type *t, const char *func, ds_error *err);

/* Runs `def`, which returns zero or one row, and decodes the row into
 * *out (NULL `out`: only checks that a row came). No row is
 * DS_ERR_NOT_FOUND, "func: no <what> with id <id>" (id 0: "func: no
 * <what>"); NULL `what` marks a statement that always returns its row
 * (INSERT ... RETURNING), where no row is DS_ERR_INTERNAL. A foreign key
 * violation is DS_ERR_NOT_FOUND (ds__repo_exec). *out is NULL on failure. */
ds_status ds__repo_get(ds_pool *pool, bool read, const ds__stmt_def *def,
                       const ds__bind *b, const ds__row_type *t,
                       const char *func, const char *what, int64_t id,
                       void **out, ds_error *err);

/* Runs a page statement bound with `limit` + 1 as its row limit and builds
 * the list of at most `limit` rows (has_more when the extra row came).
 * With `owner`, `def` is scoped to an owner through LEFT JOIN LATERAL: no
 * row means the owner `owner_id` does not exist (DS_ERR_NOT_FOUND), one
 * row of NULLs that it has no rows. NULL with `err` filled on failure. */
/* ds__repo_get of the row `id` by its id alone, with the argument checks
 * of a public get: `out` (DS_ERR_INVALID when NULL), `pool`, `id`. */
ds_status ds__repo_get_id(ds_pool *pool, const ds__stmt_def *def,
                          const ds__row_type *t, int64_t id, const char *func,
                          const char *what, void **out, ds_error *err);

void *ds__repo_list(ds_pool *pool, bool read, const ds__stmt_def *def,
                    const ds__bind *b, int limit, const ds__row_type *t,
                    const char *func, const char *owner, int64_t owner_id,
                    ds_error *err);

/* ---- statement tables ------------------------------------------------------ */
size_t ds__stmts_users(const ds__stmt_def **defs);
size_t ds__stmts_conversations(const ds__stmt_def **defs);
size_t ds__stmts_messages(const ds__stmt_def **defs);
size_t ds__stmts_connections(const ds__stmt_def **defs);
size_t ds__stmts_teams(const ds__stmt_def **defs);
size_t ds__stmts_settings(const ds__stmt_def **defs);
size_t ds__stmts_events(const ds__stmt_def **defs);
size_t ds__stmts_gdpr(const ds__stmt_def **defs);

#endif
