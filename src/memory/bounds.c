/*
 * The bounds a fact's 8-bit sketch puts on its cosine similarity to a
 * query: every search stage that reads sketches (search.c, fusion.c)
 * decodes them here, so a damaged sketch is treated alike everywhere.
 */
#include <math.h>

#include "memory/memory_internal.h"

void ds__fact_bounds_free(ds__fact_bounds *b) {
    ds__free(b->ids);
    ds__free(b->lo);
    ds__free(b->hi);
    *b = (ds__fact_bounds){0};
}

/* Row `row` of `r` (its sketch in column 1): the bounds into *lo and *hi,
 * or -inf and +inf when the fact was written without a sketch or its
 * sketch is damaged (it bounds nothing, so it is always rescored). */
ds_status ds__sketch_row_bounds(ds_memory *mem, const PGresult *r, int row,
                                int64_t id, const float *q, float *lo,
                                float *hi, ds_error *err) {
    *lo = -INFINITY;
    *hi = INFINITY;
    if (PQgetisnull(r, row, 1))
        return DS_OK;
    size_t sketch_len = DS_SKETCH_BYTES(mem->dim);
    if ((size_t)PQgetlength(r, row, 1) != sketch_len)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "memory fact %lld: the embedding sketch has %d "
                             "bytes, not %zu",
                             (long long)id, PQgetlength(r, row, 1),
                             sketch_len);
    const unsigned char *sk = (const unsigned char *)PQgetvalue(r, row, 1);
    float slack = ds__sketch_slack(mem->dim);
    float bound;
    float approx = ds__sketch_dot(q, sk, mem->dim, &bound);
    /* A damaged sketch's lower bound must not reach any ranking: NaN, or a
     * lower bound above any cosine, would rule everybody out. */
    if (!ds__sketch_plausible(sk, mem->dim) || !isfinite(approx) ||
        !isfinite(bound) || approx - bound - slack > 1 + slack)
        return DS_OK;
    *lo = approx - bound - slack;
    *hi = approx + bound + slack;
    return DS_OK;
}

ds_status ds__sketch_bounds(ds_memory *mem, PGresult *r, const float *q,
                            ds__fact_bounds *out, ds_error *err) {
    *out = (ds__fact_bounds){0};
    size_t rows = (size_t)PQntuples(r);
    ds__memory_count(&mem->rows_scanned, rows);
    ds__fact_bounds b = {ds__calloc(rows ? rows : 1, sizeof *b.ids),
                         ds__calloc(rows ? rows : 1, sizeof *b.lo),
                         ds__calloc(rows ? rows : 1, sizeof *b.hi), rows};
    ds_status st = DS_OK;
    if (!b.ids || !b.lo || !b.hi)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < rows; i++) {
        b.ids[i] = ds__memory_int8(r, (int)i, 0);
        st = ds__sketch_row_bounds(mem, r, (int)i, b.ids[i], q, &b.lo[i],
                                   &b.hi[i], err);
    }
    PQclear(r);
    if (st != DS_OK) {
        ds__fact_bounds_free(&b);
        return st;
    }
    *out = b;
    return DS_OK;
}
