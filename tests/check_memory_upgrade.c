/* The memory store's upgrade from the fallback to pgvector, every
 * statement against the live schema, and the store behind a
 * transaction-mode pooler. Loop tests run once per backend, as in
 * check_memory.c. */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory/memory_internal.h"
#include "memory_fixture.h"
#include "test_util.h"

/* ---- the upgrade --------------------------------------------------------------------- */

START_TEST(test_memory_upgrade_to_pgvector_keeps_every_row) {
    if (dt_skip_without_pgvector("test_memory_upgrade_to_pgvector_keeps_every_row"))
        return;
    fx f;
    fx_open(&f, "", 0);
    rng_state = 4242;
    make_centres(8);
    dataset d;
    int64_t users[] = {f.alice, f.bob};
    dataset_make(&d, 2300, users, 2, 8); /* more than one staging batch */
    dataset_add(f.mem, &d);
    /* a fact without an embedding (as rows from before the migration) */
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO memory_facts (user_id, content) "
                              "VALUES (%lld, 'no embedding')",
             (long long)f.alice);
    dt_sql(f.url, sql);
    float q[DIM];
    clustered(q, 8);
    ds_memory_facts *before = search(f.mem, f.alice, q, 10, NULL);
    /* a handle on unnamed statements (pooler mode), where no cached plan
     * notices the column's new type */
    ds_config *pcfg = dt_config(f.url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_config_set(pcfg, "statement_mode", "pooler", &err);
    ck_assert_ds_ok(st, err);
    ds_pool *ppool;
    st = ds_pool_open(pcfg, &ppool, &err);
    ck_assert_ds_ok(st, err);
    ds_memory *pmem;
    st = ds_memory_open(ppool, pcfg, &pmem, &err);
    ck_assert_ds_ok(st, err);
    ds_config_free(pcfg);
    ds_memory_facts_free(search(pmem, f.alice, q, 10, NULL));

    st = ds_memory_upgrade_to_pgvector(f.pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_vector_settings "
                                       "WHERE backend = 'pgvector'"),
                     1);
    ck_assert_int_eq(count_facts(f.url), (long long)d.n + 1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts "
                                       "WHERE embedding IS NULL"),
                     1);
    /* the sketches and their index stay: searches read them first */
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = 'memory_facts_embedding_hnsw'"),
                     0);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_sketch_idx'"),
                     1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts WHERE "
                                       "embedding IS NOT NULL AND "
                                       "embedding_sketch IS NULL"),
                     0);

    /* the handle opened before switches on its next call */
    ds_memory_facts *after = search(f.mem, f.alice, q, 10, NULL);
    ck_assert_int_eq(ds_memory_backend(f.mem), DS_VECTOR_BACKEND_PGVECTOR);
    ck_assert_uint_eq(after->count, before->count);
    for (size_t i = 0; i < after->count; i++) {
        ck_assert_int_eq(after->items[i]->id, before->items[i]->id);
        ck_assert_double_eq_tol(after->items[i]->score, before->items[i]->score,
                                1e-5);
    }
    ds_memory_facts *pooled = search(pmem, f.alice, q, 10, NULL);
    ck_assert_int_eq(ds_memory_backend(pmem), DS_VECTOR_BACKEND_PGVECTOR);
    ck_assert_uint_eq(pooled->count, before->count);
    for (size_t i = 0; i < pooled->count; i++)
        ck_assert_int_eq(pooled->items[i]->id, before->items[i]->id);
    ds_memory_facts_free(pooled);
    ds_memory_close(pmem);
    ds_pool_close(ppool);
    ds_memory_facts_free(before);
    ds_memory_facts_free(after);

    /* every embedding came through bit for bit */
    ds_memory *fresh = open_mem(f.pool, f.url, -1);
    ck_assert_int_eq(ds_memory_backend(fresh), DS_VECTOR_BACKEND_PGVECTOR);
    for (size_t i = 0; i < d.n; i++) {
        ds_memory_fact *got;
        st = ds_memory_get(fresh, d.user[i], d.id[i], &got, &err);
        ck_assert_ds_ok(st, err);
        float unit[DIM];
        ds__vec_normalize(d.v + i * DIM, DIM, DIM, "v", unit, NULL);
        ck_assert_int_eq(memcmp(got->embedding, unit, sizeof unit), 0);
        ds_memory_fact_free(got);
    }
    /* adding works on the new backend; a second upgrade is a no-op */
    add(fresh, f.bob, "fact", "after the upgrade", q);
    st = ds_memory_upgrade_to_pgvector(f.pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(count_facts(f.url), (long long)d.n + 2);
    ds_memory_close(fresh);
    dataset_free(&d);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_upgrade_refuses_unmigrated_database) {
    char *url = dt_create_db("memupg");
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_error err = {0};
    ds_status st = ds_memory_upgrade_to_pgvector(pool, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);

    /* a record that lost its row: refused, not read past its end */
    url = dt_migrated_db_backend("memupg", "fallback");
    dt_sql(url, "DELETE FROM memory_vector_settings");
    pool = dt_pool(url, 1, 1);
    st = ds_memory_upgrade_to_pgvector(pool, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "memory_vector_settings"));
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 'memory_facts'::regclass AND "
                                     "attname = 'embedding_sketch' AND NOT "
                                     "attisdropped"),
                     1);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- statements against the live schema; pooler mode ---------------------------------- */

/* What ds_migrate_check_schema does: prepare each statement and compare the types
 * C binds and decodes with what the server describes. */
static void check_table(PGconn *c, const char *module) {
    const ds__stmt_def *defs = NULL;
    size_t n = 0;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module; t++)
        if (strcmp(t->module, module) == 0)
            n = t->get(&defs);
    ck_assert_msg(n > 0, "no statement table %s", module);
    for (size_t i = 0; i < n; i++) {
        const ds__stmt_def *d = &defs[i];
        PGresult *r = PQprepare(c, "", d->sql, d->nparams, d->param_types);
        ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", d->name,
                      PQresultErrorMessage(r));
        PQclear(r);
        r = PQdescribePrepared(c, "");
        ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
        ck_assert_msg(PQnparams(r) == d->nparams, "%s: %d parameters", d->name,
                      PQnparams(r));
        for (int p = 0; p < d->nparams; p++)
            ck_assert_msg(PQparamtype(r, p) == d->param_types[p],
                          "%s: $%d is %u", d->name, p + 1, PQparamtype(r, p));
        int want_cols = d->ncols < 0 ? 0 : d->ncols;
        ck_assert_msg(PQnfields(r) == want_cols, "%s: %d columns", d->name,
                      PQnfields(r));
        for (int col = 0; col < want_cols; col++)
            ck_assert_msg(PQftype(r, col) == d->col_types[col],
                          "%s: column %d is %u", d->name, col, PQftype(r, col));
        PQclear(r);
    }
}

START_TEST(test_memory_statements_match_the_schema) {
    fx f;
    if (!fx_open(&f, "test_memory_statements_match_the_schema", _i))
        return;
    ds_conn *conn;
    ds_error err = {0};
    ck_assert_int_eq(ds_pool_acquire(f.pool, &conn, &err), DS_OK);
    const char *active = NULL;
    ds_status st = ds__memory_active_table(conn, &active, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(active, _i ? "memory.pgvector" : "memory.fallback");
    PGconn *c = ds_pool_conn_pg(conn);
    check_table(c, "memory");
    check_table(c, active);
    ds_pool_release(conn);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_pooler_mode) {
    fx f;
    if (!fx_open(&f, "test_memory_pooler_mode", _i))
        return;
    ds_pool *pool = dt_pooler_pool(f.url, 1, 3);
    ds_memory *mem = open_mem(pool, f.url, -1);
    ds_error err = {0};
    ds_status st;
    float v[DIM];
    for (int i = 0; i < 20; i++) {
        vec3(v, 1, (float)i / 10, 0);
        add(mem, f.alice, "fact", i % 2 ? "green tea" : "black coffee", v);
    }
    vec3(v, 1, 0, 0);
    for (int round = 0; round < 5; round++) {
        ds_memory_facts *hits = search(mem, f.alice, v, 3, NULL);
        ck_assert_uint_eq(hits->count, 3);
        ck_assert_double_eq_tol(hits->items[0]->score, 1.0, 1e-6);
        ds_memory_facts_free(hits);
        st = ds_memory_search_hybrid(mem, f.alice, "tea", v, DIM, 5, NULL,
                                     &hits, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(hits->count, 5);
        ds_memory_facts_free(hits);
    }
    ds_memory_close(mem);
    ds_pool_close(pool);
    fx_close(&f);
}
END_TEST

Suite *ds_test_memory_upgrade_suite(void) {
    Suite *s = suite_create("memory_upgrade");
    TCase *tc = tcase_create("upgrade");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_memory_upgrade_to_pgvector_keeps_every_row);
    tcase_add_test(tc, test_memory_upgrade_refuses_unmigrated_database);
    suite_add_tcase(s, tc);
    tc = tcase_create("schema");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_statements_match_the_schema, 0, 2);
    tcase_add_loop_test(tc, test_memory_pooler_mode, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
