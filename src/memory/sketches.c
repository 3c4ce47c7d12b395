/*
 * ds_memory_fill_sketches(): gives every fact that has an embedding but no
 * sketch its sketch, and no coarse code its code, so that searches can
 * prune it instead of rescoring it.
 *
 * Facts without a sketch exist only on a pgvector database: rows written
 * before sql/0005_memory_exact_search (or after taking it down), when
 * pgvector rows had no sketch; the fallback's constraint keeps a sketch
 * with every embedding. Facts without a code are the rows written before
 * sql/0006_memory_coarse_codes, on both backends. Batches of BATCH facts,
 * each one short statement of its own, so no lock is held for long and the
 * work done survives an interruption.
 */
#include <stdlib.h>

#include "memory/memory_internal.h"

#define MODULE "memory"
#define BATCH 1000

/* What one pass fills: its statements and the bytes it builds. */
typedef struct fill_pass {
    const ds__stmt_def *read;  /* (id, embedding) of facts lacking it */
    const ds__stmt_def *write; /* (int8[] ids, bytea[] values) */
    bool pgv;                  /* embeddings as real[] (else bytea) */
    bool code;                 /* codes (else sketches) */
} fill_pass;

static bool decode_embedding(const PGresult *r, int row, const fill_pass *fp,
                             size_t dim, float *v) {
    const char *val = PQgetvalue(r, row, 1);
    int len = PQgetlength(r, row, 1);
    if (fp->pgv)
        return ds__vec_from_array(val, len, dim, v);
    if ((size_t)len != 4 * dim)
        return false;
    ds__vec_from_le((const unsigned char *)val, dim, v);
    return true;
}

static ds_status write_batch(ds_conn *c, const fill_pass *fp,
                             const int64_t *ids, size_t n, ds__pgarr *values,
                             size_t *filled, ds_error *err) {
    ds__bind w;
    ds__bind_init(&w);
    ds__bind_int8_array(&w, ids, n);
    ds__bind_array(&w, values, DS_OID_BYTEA_ARRAY);
    PGresult *u = ds__memory_exec(c, fp->write, &w, err);
    ds__bind_free(&w);
    if (!u)
        return err->code;
    *filled += (size_t)strtoull(PQcmdTuples(u), NULL, 10);
    PQclear(u);
    return DS_OK;
}

static ds_status fill_batch(ds_memory *mem, ds_conn *c, const fill_pass *fp,
                            int64_t *after, size_t *filled, bool *done,
                            ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, *after);
    ds__bind_int32(&p, BATCH);
    PGresult *r = ds__memory_exec(c, fp->read, &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    size_t n = (size_t)PQntuples(r), dim = mem->dim;
    *done = n < BATCH;
    if (n == 0) {
        PQclear(r);
        return DS_OK;
    }
    size_t bytes = fp->code ? DS_CODE_BYTES(dim) : DS_SKETCH_BYTES(dim);
    int64_t *ids = ds__calloc(n, sizeof *ids);
    float *v = ds__calloc(dim, sizeof *v);
    unsigned char *out = ds__malloc(bytes);
    ds__pgarr values;
    ds__pgarr_init(&values, DS_OID_BYTEA);
    ds_status st = DS_OK;
    if (!ids || !v || !out || !ds__pgarr_reserve(&values, n, bytes))
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        ids[i] = ds__memory_int8(r, (int)i, 0);
        if (!decode_embedding(r, (int)i, fp, dim, v)) {
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding is not a "
                               "%zu-dimension vector",
                               (long long)ids[i], dim);
            break;
        }
        if (fp->code)
            ds__code_build(v, dim, out);
        else
            ds__sketch_build(v, dim, out);
        if (!ds__pgarr_add(&values, out, bytes))
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    PQclear(r);
    if (st == DS_OK)
        st = write_batch(c, fp, ids, n, &values, filled, err);
    if (st == DS_OK)
        *after = ids[n - 1];
    ds__free(ids);
    ds__free(v);
    ds__free(out);
    ds__pgarr_free(&values);
    return st;
}

static ds_status fill_all(ds_memory *mem, ds_conn *c, const fill_pass *fp,
                          size_t *total, ds_error *err) {
    int64_t after = 0;
    bool done = false;
    ds_status st = DS_OK;
    while (st == DS_OK && !done)
        st = fill_batch(mem, c, fp, &after, total, &done, err);
    return st;
}

DS_EXPORT ds_status ds_memory_fill_sketches(ds_memory *mem, size_t *filled,
                                            ds_error *err) {
    if (filled)
        *filled = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    bool pgv =
        ds__memory_state_get(mem).backend == DS_VECTOR_BACKEND_PGVECTOR;
    fill_pass sketches = {&ds__memory_pgvector_stmts[P_UNSKETCHED],
                          &ds__memory_pgvector_stmts[P_SET_SKETCHES], true,
                          false};
    fill_pass codes = {pgv ? &ds__memory_pgvector_stmts[P_UNCODED]
                           : &ds__memory_fallback_stmts[F_UNCODED],
                       &ds__memory_stmts[M_SET_CODES], pgv, true};
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    size_t total = 0;
    if (pgv) /* every fallback fact has its sketch */
        st = fill_all(mem, c, &sketches, &total, &local);
    if (st == DS_OK && mem->dim <= DS_CODE_MAX_DIM)
        st = fill_all(mem, c, &codes, &total, &local);
    ds_pool_release(c);
    if (filled)
        *filled = total;
    if (total > 0)
        ds__log(DS_LOG_INFO, MODULE,
                "filled in %zu embedding sketches and codes", total);
    return st == DS_OK ? DS_OK : ds__memory_fail(&local, err);
}
