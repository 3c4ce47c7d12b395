/*
 * Running the memory store's statements and decoding their binary results
 * into facts; the result types' free functions.
 */
#include <stdlib.h>

#include "memory/memory_internal.h"

/* ---- execution and decoding ------------------------------------------------- */

int ds__int64_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

ds_status ds__memory_fail(const ds_error *local, ds_error *err) {
    if (err)
        *err = *local;
    return local->code ? local->code : DS_ERR_INTERNAL;
}

PGresult *ds__memory_exec(ds_conn *c, const ds__stmt_def *def,
                          const ds__bind *p, ds_error *err) {
    return ds__stmt_run(c, def, p, err);
}

int64_t ds__memory_int8(const PGresult *r, int row, int col) {
    return (int64_t)ds__get_be64(PQgetvalue(r, row, col));
}

double ds__memory_float(const PGresult *r, int row, int col) {
    const char *v = PQgetvalue(r, row, col);
    if (PQgetlength(r, row, col) == 4) {
        uint32_t bits = ds__get_be32(v);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint64_t bits = ds__get_be64(v);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

int64_t ds__memory_ts(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col))
        return 0;
    return ds__ts_from_pg((int64_t)ds__get_be64(PQgetvalue(r, row, col)));
}

DS_EXPORT void ds_memory_fact_free(ds_memory_fact *fact) {
    if (!fact)
        return;
    ds__free(fact->kind);
    ds__free(fact->content);
    json_decref(fact->metadata);
    ds__free(fact->embedding);
    ds__free(fact);
}

DS_EXPORT void ds_memory_facts_free(ds_memory_facts *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        ds_memory_fact_free(list->items[i]);
    ds__free(list->items);
    ds__free(list);
}

ds_status ds__memory_list_new(size_t cap, ds_memory_facts **out,
                              ds_error *err) {
    *out = NULL;
    ds_memory_facts *l = ds__calloc(1, sizeof *l);
    ds_memory_fact **items = ds__calloc(cap ? cap : 1, sizeof *items);
    if (!l || !items) {
        ds__free(l);
        ds__free(items);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    l->items = items;
    *out = l;
    return DS_OK;
}

ds_status ds__memory_decode_fact(const PGresult *r, int row,
                                 ds_memory_fact **out, ds_error *err) {
    *out = NULL;
    ds_memory_fact *f = ds__calloc(1, sizeof *f);
    if (!f)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    f->id = ds__memory_int8(r, row, 0);
    f->user_id = ds__memory_int8(r, row, 1);
    f->kind = ds__strndup(PQgetvalue(r, row, 2),
                          (size_t)PQgetlength(r, row, 2));
    f->content = ds__strndup(PQgetvalue(r, row, 3),
                             (size_t)PQgetlength(r, row, 3));
    /* binary jsonb: a version byte (1), then the text */
    const char *meta = PQgetvalue(r, row, 4);
    int meta_len = PQgetlength(r, row, 4);
    if (meta_len >= 1 && meta[0] == 1)
        f->metadata = json_loadb(meta + 1, (size_t)meta_len - 1, 0, NULL);
    f->importance = ds__memory_float(r, row, 5);
    f->created_at_us = ds__memory_ts(r, row, 6);
    f->updated_at_us = ds__memory_ts(r, row, 7);
    f->last_accessed_at_us = ds__memory_ts(r, row, 8);
    if (!f->kind || !f->content || !f->metadata) {
        bool oom = !f->kind || !f->content || meta_len >= 1;
        ds_memory_fact_free(f);
        return oom ? ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory")
                   : ds__error_set(err, DS_ERR_INTERNAL,
                                   "memory: unexpected metadata encoding");
    }
    *out = f;
    return DS_OK;
}
