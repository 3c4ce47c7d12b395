/*
 * ds_memory_fill_sketches(): gives every fact that has an embedding but no
 * sketch its sketch, so that searches can prune it instead of rescoring it.
 *
 * Only a pgvector database can hold such facts: rows written before
 * sql/0005_memory_exact_search (or after taking it down), when pgvector
 * rows had no sketch. The fallback's constraint keeps a sketch with every
 * embedding. Batches of BATCH facts, each one short statement of its own,
 * so no lock is held for long and the work done survives an interruption.
 */
#include "memory/memory_internal.h"

#define MODULE "memory"
#define BATCH 1000

static ds_status fill_batch(ds_memory *mem, ds_conn *c, int64_t *after,
                            size_t *filled, bool *done, ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, *after);
    ds__bind_int32(&p, BATCH);
    PGresult *r =
        ds__memory_exec(c, &ds__memory_pgvector_stmts[P_UNSKETCHED], &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    size_t n = (size_t)PQntuples(r), dim = mem->dim;
    *done = n < BATCH;
    if (n == 0) {
        PQclear(r);
        return DS_OK;
    }
    int64_t *ids = ds__calloc(n, sizeof *ids);
    float *v = ds__calloc(dim, sizeof *v);
    unsigned char *sk = ds__malloc(DS_SKETCH_BYTES(dim));
    ds__pgarr sketches;
    ds__pgarr_init(&sketches, DS_OID_BYTEA);
    ds_status st = DS_OK;
    if (!ids || !v || !sk ||
        !ds__pgarr_reserve(&sketches, n, DS_SKETCH_BYTES(dim)))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        ids[i] = ds__memory_int8(r, (int)i, 0);
        if (!ds__vec_from_array(PQgetvalue(r, (int)i, 1),
                                PQgetlength(r, (int)i, 1), dim, v)) {
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding is not a "
                               "%zu-dimension vector",
                               (long long)ids[i], dim);
            break;
        }
        ds__sketch_build(v, dim, sk);
        if (!ds__pgarr_add(&sketches, sk, DS_SKETCH_BYTES(dim)))
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    PQclear(r);
    if (st == DS_OK) {
        ds__bind w;
        ds__bind_init(&w);
        ds__bind_int8_array(&w, ids, n);
        ds__bind_array(&w, &sketches, DS_OID_BYTEA_ARRAY);
        PGresult *u = ds__memory_exec(
            c, &ds__memory_pgvector_stmts[P_SET_SKETCHES], &w, err);
        ds__bind_free(&w);
        if (!u) {
            st = err->code;
        } else {
            *filled += (size_t)strtoull(PQcmdTuples(u), NULL, 10);
            PQclear(u);
            *after = ids[n - 1];
        }
    }
    ds__free(ids);
    ds__free(v);
    ds__free(sk);
    ds__pgarr_free(&sketches);
    return st;
}

DS_EXPORT ds_status ds_memory_fill_sketches(ds_memory *mem, size_t *filled,
                                            ds_error *err) {
    if (filled)
        *filled = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    if (ds__memory_state_get(mem).backend != DS_VECTOR_BACKEND_PGVECTOR)
        return DS_OK; /* every fallback fact has its sketch */
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    int64_t after = 0;
    size_t total = 0;
    bool done = false;
    while (st == DS_OK && !done)
        st = fill_batch(mem, c, &after, &total, &done, &local);
    ds_pool_release(c);
    if (filled)
        *filled = total;
    if (total > 0)
        ds__log(DS_LOG_INFO, MODULE, "filled in %zu embedding sketches",
                total);
    return st == DS_OK ? DS_OK : ds__memory_fail(&local, err);
}
