/*
 * Adding facts: validation of every fact before anything is written, then
 * batches of facts in one INSERT each (one transaction when there are
 * several), each with its vector and its sketch.
 */
#include <stdlib.h>

#include "core/growable.h"
#include "core/json_internal.h"
#include "memory/memory_internal.h"

/* ---- validation ------------------------------------------------------------------ */

static bool kind_valid(const char *kind) {
    size_t n = 0;
    for (const char *p = kind; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return n >= 1 && n <= DS_MEMORY_KIND_MAX;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

ds_status ds__memory_check_kind(const char *kind, ds_error *err) {
    if (kind && !kind_valid(kind))
        return ds__error_set(err, DS_ERR_INVALID,
                             "kind must be 1 to 64 of a-z, 0-9 and _");
    return DS_OK;
}

ds_status ds__memory_check_fact(const ds_memory *mem,
                                const ds_memory_new_fact *f, float *unit,
                                ds_error *err) {
    if (f->user_id <= 0)
        return ds__error_set(err, DS_ERR_INVALID, "user_id must be positive");
    ds_status st = ds__memory_check_kind(f->kind, err);
    if (st != DS_OK)
        return st;
    if (!f->content)
        return ds__error_set(err, DS_ERR_INVALID, "content is NULL");
    size_t len = strlen(f->content);
    if (!ds__utf8_valid(f->content, len))
        return ds__error_set(err, DS_ERR_INVALID,
                             "content is not valid UTF-8");
    size_t chars = utf8_chars(f->content, len);
    if (chars < 1 || chars > DS_MEMORY_CONTENT_MAX)
        return ds__error_set(err, DS_ERR_INVALID,
                             "content must be 1 to %d characters, not %zu",
                             DS_MEMORY_CONTENT_MAX, chars);
    if (f->metadata && !json_is_object(f->metadata))
        return ds__error_set(err, DS_ERR_INVALID,
                             "metadata must be a JSON object");
    if (!(f->importance >= 0.0 && f->importance <= 1.0))
        return ds__error_set(err, DS_ERR_INVALID,
                             "importance must be from 0 to 1");
    return ds__vec_normalize(f->embedding, f->dim, mem->dim, "embedding",
                             unit, err);
}

/* ---- add ------------------------------------------------------------------------- */

/* jansson allocates the dump; free it with jansson's free. */
static void json_text_free(char *text) {
    json_malloc_t jmalloc;
    json_free_t jfree;
    json_get_alloc_funcs(&jmalloc, &jfree);
    if (text)
        jfree(text);
}

/* Binary jsonb of a fact's metadata: version byte 1, then the text. */
static ds_status encode_metadata(const json_t *metadata, char **out,
                                 size_t *len, ds_error *err) {
    char *text = metadata ? ds__json_dumps(metadata, JSON_COMPACT) : NULL;
    if (metadata && !text)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    size_t n = text ? strlen(text) : 2;
    *out = ds__malloc(n + 1);
    if (*out) {
        (*out)[0] = 1;
        memcpy(*out + 1, text ? text : "{}", n);
        *len = n + 1;
    }
    json_text_free(text);
    return *out ? DS_OK
                : ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
}

/* The working buffers of one batch insert: per-fact columns, the arrays
 * they are sent in, and the statement's parameters. */
typedef struct {
    char **meta;
    size_t *meta_len;
    int64_t *users;
    float *importance;
    float *units;
    /* each fact's little-endian vector (fallback), sketch and code (both) */
    size_t stride;
    unsigned char *bytes;
    ds__pgarr kinds, contents, metas, embs, sketches, codes;
    ds__bind p;
} insert_bufs;

bool ds__memory_batch_fits(size_t n, size_t dim) {
    /* per fact: dim floats, and a stride of 5 * dim + 8 + DS_CODE_BYTES(dim)
     * bytes, which stays below 6 * dim + 17 */
    if (dim == 0 || dim > (SIZE_MAX - 17) / 6)
        return false;
    size_t stride = 5 * dim + 8 + DS_CODE_BYTES(dim);
    return n <= SIZE_MAX / stride && n <= SIZE_MAX / (dim * sizeof(float));
}

/* Allocates the buffers for `n` facts of `dim` (ds__memory_batch_fits
 * checked); false when any allocation failed (insert_bufs_free undoes
 * either way). */
static bool insert_bufs_init(insert_bufs *b, size_t n, size_t dim) {
    b->meta = ds__calloc(n, sizeof *b->meta);
    b->meta_len = ds__calloc(n, sizeof *b->meta_len);
    b->users = ds__calloc(n, sizeof *b->users);
    b->importance = ds__calloc(n, sizeof *b->importance);
    b->units = ds__calloc(n * dim, sizeof *b->units);
    b->stride = 5 * dim + 8 + DS_CODE_BYTES(dim);
    b->bytes = ds__malloc(n * b->stride);
    ds__pgarr_init(&b->kinds, DS_OID_TEXT);
    ds__pgarr_init(&b->contents, DS_OID_TEXT);
    ds__pgarr_init(&b->metas, DS_OID_JSONB);
    ds__pgarr_init(&b->embs, DS_OID_BYTEA);
    ds__pgarr_init(&b->sketches, DS_OID_BYTEA);
    ds__pgarr_init(&b->codes, DS_OID_BYTEA);
    ds__bind_init(&b->p);
    return b->meta && b->meta_len && b->users && b->importance && b->units &&
           b->bytes;
}

/* Frees what insert_bufs_init allocated for `n` facts. */
static void insert_bufs_free(insert_bufs *b, size_t n) {
    for (size_t i = 0; b->meta && i < n; i++)
        ds__free(b->meta[i]);
    ds__free(b->meta);
    ds__free(b->meta_len);
    ds__free(b->users);
    ds__free(b->importance);
    ds__free(b->units);
    ds__free(b->bytes);
    ds__pgarr_free(&b->kinds);
    ds__pgarr_free(&b->contents);
    ds__pgarr_free(&b->metas);
    ds__pgarr_free(&b->embs);
    ds__pgarr_free(&b->sketches);
    ds__pgarr_free(&b->codes);
    ds__bind_free(&b->p);
}

/* Per-fact columns: encoded metadata, user, importance and unit vector. */
static ds_status fill_columns(insert_bufs *b, const ds_memory_new_fact *f,
                              size_t n, size_t dim, ds_error *err) {
    ds_status st = DS_OK;
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        st = encode_metadata(f[i].metadata, &b->meta[i], &b->meta_len[i], err);
        b->users[i] = f[i].user_id;
        b->importance[i] = (float)f[i].importance;
        /* validated before: this only recomputes the unit vector */
        ds__vec_normalize(f[i].embedding, f[i].dim, dim, "embedding",
                          b->units + i * dim, NULL);
    }
    return st;
}

/* Appends every fact to the arrays: kind, content, metadata, sketch, code
 * and (fallback) vector bytes; false when out of memory. */
static bool fill_arrays(insert_bufs *b, const ds_memory_new_fact *f,
                        size_t n, size_t dim, bool pgv) {
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        const char *kind = f[i].kind ? f[i].kind : "fact";
        ok = ds__pgarr_add(&b->kinds, kind, strlen(kind)) &&
             ds__pgarr_add(&b->contents, f[i].content, strlen(f[i].content)) &&
             ds__pgarr_add(&b->metas, b->meta[i], b->meta_len[i]);
        unsigned char *le = b->bytes + i * b->stride;
        unsigned char *sk = le + 4 * dim;
        unsigned char *code = sk + DS_SKETCH_BYTES(dim);
        ds__sketch_build(b->units + i * dim, dim, sk);
        ok = ok && ds__pgarr_add(&b->sketches, sk, DS_SKETCH_BYTES(dim));
        if (dim <= DS_CODE_MAX_DIM) {
            ds__code_build(b->units + i * dim, dim, code);
            ok = ok && ds__pgarr_add(&b->codes, code, DS_CODE_BYTES(dim));
        } else {
            ok = ok && ds__pgarr_add(&b->codes, NULL, 0);
        }
        if (ok && !pgv) {
            ds__vec_to_le(b->units + i * dim, dim, le);
            ok = ds__pgarr_add(&b->embs, le, 4 * dim);
        }
    }
    return ok;
}

/* Binds the INSERT's parameters in the order of the backend's statement. */
static void bind_insert(insert_bufs *b, size_t n, size_t dim, bool pgv) {
    ds__bind_int8_array(&b->p, b->users, n);
    ds__bind_array(&b->p, &b->kinds, DS_OID_TEXT_ARRAY);
    ds__bind_array(&b->p, &b->contents, DS_OID_TEXT_ARRAY);
    ds__bind_array(&b->p, &b->metas, DS_OID_JSONB_ARRAY);
    ds__bind_float4_array(&b->p, b->importance, n);
    if (pgv) {
        ds__bind_float4_array(&b->p, b->units, n * dim);
        ds__bind_int32(&b->p, (int32_t)dim);
        ds__bind_array(&b->p, &b->sketches, DS_OID_BYTEA_ARRAY);
        ds__bind_array(&b->p, &b->codes, DS_OID_BYTEA_ARRAY);
    } else {
        ds__bind_array(&b->p, &b->embs, DS_OID_BYTEA_ARRAY);
        ds__bind_array(&b->p, &b->sketches, DS_OID_BYTEA_ARRAY);
        ds__bind_array(&b->p, &b->codes, DS_OID_BYTEA_ARRAY);
    }
}

/* Copies the returned ids into `ids` (may be NULL) in input order. */
static void take_ids(PGresult *r, size_t n, int64_t *ids) {
    /* identity values rise in insertion order, which is input order */
    size_t got = (size_t)PQntuples(r);
    for (size_t i = 0; ids && i < got && i < n; i++)
        ids[i] = ds__memory_int8(r, (int)i, 0);
    if (ids)
        qsort(ids, got < n ? got : n, sizeof *ids, ds__int64_cmp);
}

/* Inserts `n` validated facts in one statement; ids in input order. */
static ds_status insert_batch(ds_memory *mem, ds_conn *c,
                              ds_vector_backend backend,
                              const ds_memory_new_fact *f, size_t n,
                              int64_t *ids, ds_error *err) {
    size_t dim = mem->dim;
    bool pgv = backend == DS_VECTOR_BACKEND_PGVECTOR;
    ds_status st = DS_OK;
    insert_bufs b;
    if (!ds__memory_batch_fits(n, dim))
        return ds__error_set(err, DS_ERR_INVALID,
                             "a batch of %zu facts of %zu dimensions does not "
                             "fit in memory",
                             n, dim);
    if (!insert_bufs_init(&b, n, dim))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    if (st == DS_OK)
        st = fill_columns(&b, f, n, dim, err);
    PGresult *r = NULL;
    if (st == DS_OK) {
        bool ok = fill_arrays(&b, f, n, dim, pgv);
        bind_insert(&b, n, dim, pgv);
        if (!ok)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        else
            r = ds__memory_exec(c,
                                pgv ? &ds__memory_pgvector_stmts[P_INSERT_MANY]
                                    : &ds__memory_fallback_stmts[F_INSERT_MANY],
                                &b.p, err);
        if (st == DS_OK && !r)
            st = err->code;
    }
    if (r) {
        take_ids(r, n, ids);
        PQclear(r);
    }
    insert_bufs_free(&b, n);
    return st;
}

/* Facts per INSERT: about 4 MiB of vectors, at most 1000. */
static size_t batch_rows(size_t dim) {
    size_t rows = (size_t)(1u << 20) / dim;
    return rows < 1 ? 1 : rows > 1000 ? 1000 : rows;
}

static ds_status add_batch_once(ds_memory *mem, const ds_memory_new_fact *facts,
                               size_t count, int64_t *ids, ds_error *err) {
    ds__memory_state s = ds__memory_state_get(mem);
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    size_t batch = batch_rows(mem->dim);
    bool tx = count > batch;
    if (tx) {
        PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_BEGIN], NULL, err);
        st = r ? DS_OK : err->code;
        PQclear(r);
    }
    /* new facts of clustered users join their nearest list (ivf.c), in
     * the insert's transaction */
    int64_t *own = ids ? ids : ds__calloc(count, sizeof *own);
    if (!own)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t at = 0; st == DS_OK && at < count; at += batch) {
        size_t n = count - at < batch ? count - at : batch;
        st = insert_batch(mem, c, s.backend, facts + at, n, own + at, err);
        if (st == DS_OK && mem->dim <= DS_SKETCH_INDEX_MAX_DIM) {
            /* Outside a transaction the facts are written already: one
             * left without a list is still found (every search reads
             * those), so a failure here only costs speed until
             * ds_memory_maintain() assigns it. */
            ds_error aerr = {0};
            ds_status a = ds__ivf_assign_new(mem, c, facts + at, n, own + at,
                                             tx ? err : &aerr);
            if (tx)
                st = a;
            else if (a != DS_OK)
                ds__log(DS_LOG_WARN, "memory", "new facts left without a "
                        "list: %s", aerr.message);
        }
    }
    if (own != ids)
        ds__free(own);
    if (st == DS_OK && tx) {
        PGresult *r =
            ds__memory_exec(c, &ds__memory_stmts[M_COMMIT], NULL, err);
        st = r ? DS_OK : err->code;
        PQclear(r);
    }
    ds_pool_release(c); /* rolls back a failed transaction */
    if (strcmp(err->sqlstate, "23503") == 0) {
        err->code = st = DS_ERR_NOT_FOUND;
        ds__error_prefix(err, "no such user");
    }
    return st;
}

DS_EXPORT ds_status ds_memory_add_batch(ds_memory *mem,
                                       const ds_memory_new_fact *facts,
                                       size_t count, int64_t *ids,
                                       ds_error *err) {
    if (ids && count >= 1 && count <= 10000)
        memset(ids, 0, count * sizeof *ids);
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, facts, "facts is NULL");
    DS_CHECK_ARG(err, count >= 1 && count <= 10000,
                 "count must be 1 to 10000");
    DS_CHECK_ARG(err, ds__memory_batch_fits(count, mem->dim),
                 "count facts of the database's dimension do not fit in "
                 "memory");
    ds_memory_new_fact *copy;
    ds_status st = DS__ARRAY(facts, count, &copy, ds_memory_new_fact, err);
    if (st != DS_OK)
        return st;
    facts = copy;
    float *unit = ds__calloc(mem->dim, sizeof *unit);
    if (!unit) {
        ds__free(copy);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    /* Every fact is checked before anything is written. */
    for (size_t i = 0; i < count && st == DS_OK; i++) {
        st = ds__memory_check_fact(mem, &facts[i], unit, err);
        if (st != DS_OK && count > 1)
            ds__error_prefix(err, "fact %zu", i);
    }
    ds__free(unit);
    if (st != DS_OK) {
        ds__free(copy);
        return st;
    }
    ds_error local = {0};
    st = add_batch_once(mem, facts, count, ids, &local);
    if (st != DS_OK && ds__memory_state_changed(mem, &local)) {
        memset(&local, 0, sizeof local);
        st = add_batch_once(mem, facts, count, ids, &local);
    }
    ds__free(copy);
    if (st == DS_OK) {
        ds__memory_count(&mem->facts_added, count);
        return DS_OK;
    }
    if (st != DS_ERR_NOT_FOUND) /* no such user: the caller's mistake */
        ds__memory_count(&mem->errors, 1);
    /* ids of batches written before the failure were rolled back */
    if (ids)
        memset(ids, 0, count * sizeof *ids);
    return ds__memory_fail(&local, err);
}

DS_EXPORT ds_status ds_memory_add(ds_memory *mem,
                                  const ds_memory_new_fact *fact, int64_t *id,
                                  ds_error *err) {
    if (id)
        *id = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, fact, "fact is NULL");
    return ds_memory_add_batch(mem, fact, 1, id, err);
}
