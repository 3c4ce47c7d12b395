/*
 * Reading, updating and deleting one user's facts by id.
 */
#include <stdlib.h>

#include "memory/memory_internal.h"

/* ---- read, update, delete -------------------------------------------------------- */

static ds_status get_once(ds_memory *mem, int64_t user_id, int64_t id,
                          ds_memory_fact **out, ds_error *err) {
    ds__memory_state s = ds__memory_state_get(mem);
    bool pgv = s.backend == DS_VECTOR_BACKEND_PGVECTOR;
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    PGresult *r = ds__memory_exec(
        c,
        pgv ? &ds__memory_pgvector_stmts[P_GET]
            : &ds__memory_fallback_stmts[F_GET],
        &p, err);
    ds_pool_release(c);
    if (!r)
        return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "memory fact %lld of user %lld not found",
                             (long long)id, (long long)user_id);
    }
    ds_memory_fact *f;
    st = ds__memory_decode_fact(r, 0, &f, err);
    int col = DS_MEMORY_ROW_COLS;
    if (st == DS_OK && !PQgetisnull(r, 0, col)) {
        f->embedding = ds__calloc(mem->dim, sizeof(float));
        f->dim = mem->dim;
        if (!f->embedding) {
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        } else if (pgv) {
            if (!ds__vec_from_array(PQgetvalue(r, 0, col),
                                    PQgetlength(r, 0, col), mem->dim,
                                    f->embedding))
                st = ds__error_set(err, DS_ERR_SCHEMA,
                                   "memory fact %lld: embedding is not a "
                                   "%zu-dimension vector",
                                   (long long)id, mem->dim);
        } else if ((size_t)PQgetlength(r, 0, col) != 4 * mem->dim) {
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding has %d bytes, "
                               "not %zu",
                               (long long)id, PQgetlength(r, 0, col),
                               4 * mem->dim);
        } else {
            ds__vec_from_le((const unsigned char *)PQgetvalue(r, 0, col),
                            mem->dim, f->embedding);
        }
        if (st != DS_OK)
            ds_memory_fact_free(f);
    }
    PQclear(r);
    if (st == DS_OK)
        *out = f;
    return st;
}

DS_EXPORT ds_status ds_memory_get(ds_memory *mem, int64_t user_id, int64_t id,
                                  ds_memory_fact **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds_error local = {0};
    ds_status st = get_once(mem, user_id, id, out, &local);
    if (st != DS_OK && ds__memory_state_changed(mem, &local)) {
        memset(&local, 0, sizeof local);
        st = get_once(mem, user_id, id, out, &local);
    }
    if (st != DS_OK && err)
        *err = local;
    return st;
}

DS_EXPORT ds_status ds_memory_list(ds_memory *mem, int64_t user_id,
                                   const char *kind, int64_t after_id,
                                   int limit, ds_memory_facts **out,
                                   ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, after_id >= 0, "after_id must not be negative");
    DS_CHECK_ARG(err, limit >= 1 && limit <= 1000, "limit must be 1 to 1000");
    ds_status st = ds__memory_check_kind(kind, err);
    if (st != DS_OK)
        return st;
    ds_conn *c;
    st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    if (kind)
        ds__bind_text(&p, kind);
    ds__bind_int64(&p, after_id);
    ds__bind_int32(&p, limit);
    ds_error local = {0};
    PGresult *r = ds__memory_exec(
        c, &ds__memory_stmts[kind ? M_LIST_KIND : M_LIST], &p, &local);
    ds_pool_release(c);
    if (!r)
        return ds__memory_fail(&local, err);
    ds_memory_facts *list;
    st = ds__memory_list_new((size_t)PQntuples(r), &list, err);
    for (int i = 0; st == DS_OK && i < PQntuples(r); i++) {
        st = ds__memory_decode_fact(r, i, &list->items[i], err);
        if (st == DS_OK)
            list->count++;
    }
    PQclear(r);
    if (st != DS_OK) {
        ds_memory_facts_free(list);
        return st;
    }
    *out = list;
    return DS_OK;
}

/* Runs a statement that returns the id of the row it changed. */
static ds_status change_one(ds_memory *mem, const ds__stmt_def *def,
                            const ds__bind *p, int64_t user_id, int64_t id,
                            ds_error *err) {
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    PGresult *r = ds__memory_exec(c, def, p, &local);
    ds_pool_release(c);
    if (!r)
        return ds__memory_fail(&local, err);
    int rows = PQntuples(r);
    PQclear(r);
    if (rows == 0)
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "memory fact %lld of user %lld not found",
                             (long long)id, (long long)user_id);
    return DS_OK;
}

DS_EXPORT ds_status ds_memory_set_importance(ds_memory *mem, int64_t user_id,
                                             int64_t id, double importance,
                                             ds_error *err) {
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    DS_CHECK_ARG(err, importance >= 0.0 && importance <= 1.0,
                 "importance must be from 0 to 1");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    ds__bind_float4(&p, (float)importance);
    return change_one(mem, &ds__memory_stmts[M_SET_IMPORTANCE], &p, user_id,
                      id, err);
}

DS_EXPORT ds_status ds_memory_delete(ds_memory *mem, int64_t user_id,
                                     int64_t id, ds_error *err) {
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    return change_one(mem, &ds__memory_stmts[M_DELETE], &p, user_id, id, err);
}

DS_EXPORT ds_status ds_memory_touch(ds_memory *mem, int64_t user_id,
                                    const int64_t *ids, size_t count,
                                    size_t *touched, ds_error *err) {
    if (touched)
        *touched = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, ids, "ids is NULL");
    DS_CHECK_ARG(err, count >= 1 && count <= 10000,
                 "count must be 1 to 10000");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, count);
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st == DS_OK) {
        ds_error local = {0};
        PGresult *r =
            ds__memory_exec(c, &ds__memory_stmts[M_TOUCH], &p, &local);
        ds_pool_release(c);
        if (r) {
            if (touched)
                *touched = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
            PQclear(r);
        } else {
            st = ds__memory_fail(&local, err);
        }
    }
    ds__bind_free(&p);
    return st;
}
