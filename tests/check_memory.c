/* The memory store on both backends: opening and detection, facts CRUD,
 * validation, stats and errors. Searches are in check_memory_search.c, the
 * upgrade, the schema and pooler mode in check_memory_upgrade.c, the shared
 * fixtures in memory_fixture.c.
 *
 * Loop tests run once per backend: _i == 0 the fallback, _i == 1 pgvector
 * (skipped, with the reason, where the server has no pgvector or
 * DS_VECTOR_BACKEND=fallback forces the fallback). */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory/memory_internal.h"
#include "memory_fixture.h"
#include "test_util.h"

/* ---- open and detection ----------------------------------------------------- */

START_TEST(test_memory_open_checks_the_database_record) {
    fx f;
    if (!fx_open(&f, "test_memory_open_checks_the_database_record", _i))
        return;
    ck_assert_uint_eq(ds_memory_dim(f.mem), DIM);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT embedding_dim FROM "
                                       "memory_vector_settings"),
                     DIM);

    /* a configuration that disagrees is refused, with the way out */
    ds_config *cfg = dt_config(f.url, 1, 1);
    ds_error err = {0};
    ds_memory *other = (ds_memory *)0x1;
    ck_assert_int_eq(ds_config_set_int(cfg, "embedding_dim", 768, &err), DS_OK);
    ds_status st = ds_memory_open(f.pool, cfg, &other, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_null(other);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_EMBEDDING_DIM"));
    ck_assert_int_eq(ds_config_set_int(cfg, "embedding_dim", DIM, &err), DS_OK);
    ck_assert_int_eq(ds_config_set(cfg, "vector_backend",
                                   _i ? "fallback" : "pgvector", &err),
                     DS_OK);
    st = ds_memory_open(f.pool, cfg, &other, &err);
    if (_i == 0 && !dt_server_has_pgvector())
        ck_assert_ds_status(st, DS_ERR_UNSUPPORTED, err);
    else
        ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_VECTOR_BACKEND"));
    if (_i == 0 && dt_server_has_pgvector())
        ck_assert_ptr_nonnull(strstr(err.message, "ds_memory_upgrade_to_pgvector"));
    /* the matching explicit backend opens */
    ck_assert_int_eq(ds_config_set(cfg, "vector_backend", backend_of(_i), &err),
                     DS_OK);
    st = ds_memory_open(f.pool, cfg, &other, &err);
    ck_assert_ds_ok(st, err);
    ds_memory_close(other);
    ds_config_free(cfg);

    /* NULL config: the defaults (384 dimensions, auto) */
    st = ds_memory_open(f.pool, NULL, &other, &err);
    ck_assert_ds_ok(st, err);
    ds_memory_close(other);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_open_refuses_unmigrated_database) {
    char *url = dt_create_db("memraw");
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_memory *mem = (ds_memory *)0x1;
    ds_error err = {0};
    ds_status st = ds_memory_open(pool, NULL, &mem, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_null(mem);
    ck_assert_ptr_nonnull(strstr(err.message, "migrations"));
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* The migration learns the dimension and backend from its settings, and
 * its down migration undoes it so that it can run again. */
START_TEST(test_memory_migration_settings_and_down) {
    char *url = dt_migrated_db_backend("memmig", "fallback");
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_vector_settings "
                                     "WHERE backend = 'fallback' AND "
                                     "embedding_dim = 384"),
                     1);
    /* 0003 down and up again through the runner (it runs outside a
     * transaction and has ds:when lines, so not as one psql script),
     * this time for 16 dimensions */
    char path[1024], *sql;
    {
        ds_config *c16 = dt_config(url, 1, 2);
        ds_error e16 = {0};
        ck_assert_int_eq(ds_config_set_int(c16, "embedding_dim", 16, &e16), DS_OK);
        ck_assert_int_eq(ds_config_set(c16, "vector_backend", "fallback", &e16), DS_OK);
        ds_pool *p16;
        ck_assert_int_eq(ds_pool_open(c16, &p16, &e16), DS_OK);
        ds_status s16 = ds_migrate_to(p16, NULL, 2, NULL, &e16);
        ck_assert_ds_ok(s16, e16);
        ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                         "attrelid = 'memory_facts'::regclass AND "
                                         "attname LIKE 'embedding%' AND NOT "
                                         "attisdropped"),
                         0);
        s16 = ds_migrate_up(p16, NULL, NULL, &e16);
        ck_assert_ds_ok(s16, e16);
        ds_pool_close(p16);
        ds_config_free(c16);
    }
    snprintf(path, sizeof path, "%s/sql/0003_memory_embeddings.up.sql",
             dt_env("DS_PROJECT_ROOT"));
    FILE *fp;
    ck_assert_int_eq(dt_sql_int(url, "SELECT embedding_dim FROM "
                                     "memory_vector_settings"),
                     16);
    /* a store configured for 16 dimensions opens on it */
    ds_config *cfg = dt_config(url, 1, 1);
    ds_error err = {0};
    ck_assert_int_eq(ds_config_set_int(cfg, "embedding_dim", 16, &err), DS_OK);
    ds_pool *pool;
    ck_assert_int_eq(ds_pool_open(cfg, &pool, &err), DS_OK);
    ds_memory *mem;
    ds_status st = ds_memory_open(pool, cfg, &mem, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(ds_memory_dim(mem), 16);
    ds_memory_close(mem);
    ds_pool_close(pool);

    /* what a migration runner passes to the migration */
    ds__migration_setting set[2];
    ck_assert_uint_eq(ds__memory_migration_settings(16, DS_VECTOR_BACKEND_AUTO, set), 2);
    ck_assert_str_eq(set[0].name, "ds.embedding_dim");
    ck_assert_str_eq(set[0].value, "16");
    ck_assert_str_eq(set[1].name, "ds.vector_backend");
    ck_assert_str_eq(set[1].value, "auto");
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);

    /* a bad setting stops the migration with a clear message */
    url = dt_create_db("memmigbad");
    PGconn *c = PQconnectdb(url);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "CREATE TABLE memory_facts (id int); SET ds.embedding_dim = 'many';");
    PQclear(r);
    fp = fopen(path, "rb");
    sql = calloc(1, 1 << 16);
    ck_assert_uint_gt(fread(sql, 1, (1 << 16) - 1, fp), 0);
    fclose(fp);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_ptr_nonnull(strstr(PQresultErrorMessage(r), "ds.embedding_dim"));
    PQclear(r);
    PQfinish(c);
    free(sql);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* Ten queries per user of `users` (two): the exact top 10 of each. */
static void search_all_exact(ds_memory *mem, const dataset *d,
                             const int64_t *users) {
    for (int qi = 0; qi < 10; qi++) {
        float q[DIM];
        clustered(q, 8);
        int64_t user = users[qi % 2];
        int64_t ids[10];
        double scores[10];
        ck_assert_uint_eq(brute_topk(d, user, q, 10, ids, scores), 10);
        ds_memory_facts *hits = search(mem, user, q, 10, NULL);
        ck_assert_uint_eq(hits->count, 10);
        for (int i = 0; i < 10; i++)
            ck_assert_int_eq(hits->items[i]->id, ids[i]);
        ds_memory_facts_free(hits);
    }
}

/* sql/0006 and 0005 down and up again on a populated database: on pgvector
 * the sketches are gone after that (the rows of an older version), and every
 * such fact is rescored, so searches stay exact; the codes are gone on both
 * backends until ds_memory_fill_sketches() writes them. */
START_TEST(test_memory_exact_search_migration_down_and_up) {
    fx f;
    if (!fx_open(&f, "test_memory_exact_search_migration_down_and_up", _i))
        return;
    rng_state = 99;
    make_centres(8);
    dataset d;
    int64_t users[] = {f.alice, f.bob};
    dataset_make(&d, 600, users, 2, 8);
    dataset_add(f.mem, &d);
    ds_error err = {0};
    int n = 0;
    /* to version 4 (below 0005), whatever migrations come after it */
    ds_status st = ds_migrate_to(f.pool, NULL, 4, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, (int)(DS_SCHEMA_VERSION - 4));
    /* 0003's shape: pgvector has no sketches and its HNSW index again */
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_sketch_idx'"),
                     _i ? 0 : 1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_hnsw'"),
                     _i ? 1 : 0);
    st = ds_migrate_up(f.pool, NULL, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, (int)(DS_SCHEMA_VERSION - 4));
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_sketch_idx'"),
                     1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_code_idx'"),
                     1);
    const char *uncoded = "SELECT count(*) FROM memory_facts WHERE "
                          "embedding_code IS NULL";
    ck_assert_int_eq(dt_sql_int(f.url, uncoded), (long long)d.n);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_indexes WHERE "
                                       "indexname = "
                                       "'memory_facts_embedding_hnsw'"),
                     0);
    const char *unsketched = "SELECT count(*) FROM memory_facts WHERE "
                             "embedding_sketch IS NULL";
    ck_assert_int_eq(dt_sql_int(f.url, unsketched), _i ? (long long)d.n : 0);
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* the sketches filled in: the same answers */
            size_t filled = 99;
            st = ds_memory_fill_sketches(f.mem, &filled, &err);
            ck_assert_ds_ok(st, err);
            /* sketches (pgvector only) and codes (both) */
            ck_assert_uint_eq(filled, _i ? 2 * d.n : d.n);
            ck_assert_int_eq(dt_sql_int(f.url, unsketched), 0);
            ck_assert_int_eq(dt_sql_int(f.url, uncoded), 0);
            st = ds_memory_fill_sketches(f.mem, &filled, &err);
            ck_assert_ds_ok(st, err);
            ck_assert_uint_eq(filled, 0);
        }
        search_all_exact(f.mem, &d, users);
    }
    st = ds_memory_fill_sketches(NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    dataset_free(&d);
    fx_close(&f);
}
END_TEST

/* ---- CRUD ------------------------------------------------------------------------ */

START_TEST(test_memory_crud) {
    fx f;
    if (!fx_open(&f, "test_memory_crud", _i))
        return;
    float v[DIM];
    vec3(v, 3, 4, 0); /* length 5: stored as (0.6, 0.8, 0) */
    json_t *meta = json_pack("{s:s, s:i}", "source", "chat", "turn", 7);
    ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact), .user_id = f.alice,
                             .kind = "preference",
                             .content = "Prefers green tea, no sugar — ☕",
                             .metadata = meta,
                             .importance = 0.75,
                             .embedding = v,
                             .dim = DIM};
    int64_t id;
    ds_error err = {0};
    ds_status st = ds_memory_add(f.mem, &nf, &id, &err);
    ck_assert_ds_ok(st, err);
    json_decref(meta);

    ds_memory_fact *got;
    st = ds_memory_get(f.mem, f.alice, id, &got, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(got->id, id);
    ck_assert_int_eq(got->user_id, f.alice);
    ck_assert_str_eq(got->kind, "preference");
    ck_assert_str_eq(got->content, "Prefers green tea, no sugar — ☕");
    ck_assert_str_eq(json_string_value(json_object_get(got->metadata, "source")),
                     "chat");
    ck_assert_int_eq(json_integer_value(json_object_get(got->metadata, "turn")), 7);
    ck_assert_double_eq_tol(got->importance, 0.75, 1e-6);
    ck_assert_int_gt(got->created_at_us, INT64_C(1600000000000000));
    ck_assert_int_eq(got->last_accessed_at_us, 0);
    ck_assert_uint_eq(got->dim, DIM);
    ck_assert_ptr_nonnull(got->embedding);
    ck_assert_double_eq_tol(got->embedding[0], 0.6, 1e-7);
    ck_assert_double_eq_tol(got->embedding[1], 0.8, 1e-7);
    ck_assert_double_eq_tol(got->embedding[2], 0.0, 1e-9);
    ds_memory_fact_free(got);

    /* defaults: kind "fact", metadata {} */
    vec3(v, 0, 1, 0);
    int64_t id2 = add(f.mem, f.alice, NULL, "Lives in Lisbon", v);
    int64_t id3 = add(f.mem, f.alice, "preference", "Likes jazz", v);
    add(f.mem, f.bob, "preference", "Bob's fact", v);
    st = ds_memory_get(f.mem, f.alice, id2, &got, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(got->kind, "fact");
    ck_assert_int_eq(json_object_size(got->metadata), 0);
    ds_memory_fact_free(got);

    /* list: by id, paged, filtered by kind, never another user's */
    ds_memory_facts *list;
    st = ds_memory_list(f.mem, f.alice, NULL, 0, 2, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_int_eq(list->items[0]->id, id);
    ck_assert_int_eq(list->items[1]->id, id2);
    ck_assert_ptr_null(list->items[0]->embedding);
    int64_t last = list->items[1]->id;
    ds_memory_facts_free(list);
    st = ds_memory_list(f.mem, f.alice, NULL, last, 2, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 1);
    ck_assert_int_eq(list->items[0]->id, id3);
    ds_memory_facts_free(list);
    st = ds_memory_list(f.mem, f.alice, "preference", 0, 10, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    ds_memory_facts_free(list);

    /* importance */
    st = ds_memory_set_importance(f.mem, f.alice, id2, 0.9, &err);
    ck_assert_ds_ok(st, err);
    st = ds_memory_get(f.mem, f.alice, id2, &got, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_double_eq_tol(got->importance, 0.9, 1e-6);
    ck_assert_int_ge(got->updated_at_us, got->created_at_us);
    ds_memory_fact_free(got);
    st = ds_memory_set_importance(f.mem, f.alice, 999999, 0.1, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);

    /* last accessed */
    int64_t ids[] = {id, id2, 999999};
    size_t touched = 0;
    st = ds_memory_touch(f.mem, f.alice, ids, 3, &touched, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(touched, 2);
    st = ds_memory_get(f.mem, f.alice, id, &got, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_gt(got->last_accessed_at_us, 0);
    ds_memory_fact_free(got);

    /* delete */
    st = ds_memory_delete(f.mem, f.alice, id3, &err);
    ck_assert_ds_ok(st, err);
    st = ds_memory_delete(f.mem, f.alice, id3, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_memory_get(f.mem, f.alice, id3, &got, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(got);
    ck_assert_int_eq(count_facts(f.url), 3);

    /* search with touch marks what it returns */
    vec3(v, 1, 0, 0);
    ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .touch = true, .kind = "fact"};
    ds_memory_facts *hits = search(f.mem, f.alice, v, 5, &o);
    ck_assert_uint_eq(hits->count, 1);
    ck_assert_int_eq(hits->items[0]->id, id2);
    ds_memory_facts_free(hits);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts "
                                       "WHERE last_accessed_at IS NOT NULL"),
                     2);
    fx_close(&f);
}
END_TEST

/* A list without a kind merges the pages of each of the user's kinds
 * (memory.list): every fact of the user, in id order, each once, across
 * page boundaries, whatever the order the kinds were written in; with a
 * kind, only that kind's. */
START_TEST(test_memory_list_pages_across_kinds) {
    fx f;
    if (!fx_open(&f, "test_memory_list_pages_across_kinds", _i))
        return;
    static const char *const kinds[] = {"fact", "preference", "goal", "a_1"};
    float v[DIM];
    vec3(v, 1, 0, 0);
    int64_t mine[40];
    int per_kind[4] = {0, 0, 0, 0};
    rng_state = 7;
    for (int i = 0; i < 40; i++) {
        int k = (int)(rng() % 4);
        per_kind[k]++;
        mine[i] = add(f.mem, f.alice, kinds[k], "a fact", v);
        if (i % 3 == 0) /* another user's, interleaved */
            add(f.mem, f.bob, kinds[k], "bob's", v);
    }
    for (int limit = 1; limit <= 41; limit += 6) {
        int seen = 0;
        int64_t after = 0;
        for (;;) {
            ds_memory_facts *page;
            ds_error err = {0};
            ds_status st =
                ds_memory_list(f.mem, f.alice, NULL, after, limit, &page, &err);
            ck_assert_ds_ok(st, err);
            ck_assert_uint_le(page->count, (size_t)limit);
            for (size_t j = 0; j < page->count; j++) {
                ck_assert_int_lt(seen, 40);
                ck_assert_int_eq(page->items[j]->id, mine[seen]);
                ck_assert_int_eq(page->items[j]->user_id, f.alice);
                seen++;
            }
            size_t n = page->count;
            if (n > 0)
                after = page->items[n - 1]->id;
            ds_memory_facts_free(page);
            if (n < (size_t)limit)
                break;
        }
        ck_assert_int_eq(seen, 40);
    }
    for (int k = 0; k < 4; k++) {
        ds_memory_facts *page;
        ds_error err = {0};
        ds_status st =
            ds_memory_list(f.mem, f.alice, kinds[k], 0, 1000, &page, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(page->count, (size_t)per_kind[k]);
        for (size_t j = 0; j < page->count; j++) {
            ck_assert_str_eq(page->items[j]->kind, kinds[k]);
            if (j > 0)
                ck_assert_int_gt(page->items[j]->id, page->items[j - 1]->id);
        }
        ds_memory_facts_free(page);
    }
    /* a user without facts (no such user here): an empty page */
    ds_memory_facts *page;
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_list(f.mem, f.bob + 1000, NULL, 0, 10, &page, &err),
                    err);
    ck_assert_uint_eq(page->count, 0);
    ds_memory_facts_free(page);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_add_batch_is_all_or_nothing) {
    fx f;
    if (!fx_open(&f, "test_memory_add_batch_is_all_or_nothing", _i))
        return;
    float a[DIM], bad[DIM];
    vec3(a, 1, 2, 3);
    vec3(bad, 1, 2, 3);
    bad[100] = NAN;
    ds_memory_new_fact facts[3] = {
        {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "one", .embedding = a, .dim = DIM},
        {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "two", .embedding = bad, .dim = DIM},
        {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "three", .embedding = a, .dim = DIM},
    };
    int64_t ids[3] = {-1, -1, -1};
    ds_error err = {0};
    ds_status st = ds_memory_add_batch(f.mem, facts, 3, ids, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "fact 1"));
    ck_assert_ptr_nonnull(strstr(err.message, "NaN"));
    ck_assert_int_eq(count_facts(f.url), 0);
    for (int i = 0; i < 3; i++) /* the out-parameter is reset */
        ck_assert_int_eq(ids[i], 0);
    /* a failure in the database (no such user) rolls back the batch */
    facts[1].embedding = a;
    facts[2].user_id = 424242;
    st = ds_memory_add_batch(f.mem, facts, 3, ids, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_nonnull(strstr(err.message, "424242"));
    ck_assert_int_eq(count_facts(f.url), 0);
    facts[2].user_id = f.bob;
    st = ds_memory_add_batch(f.mem, facts, 3, ids, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_lt(ids[0], ids[1]);
    ck_assert_int_lt(ids[1], ids[2]);
    ck_assert_int_eq(count_facts(f.url), 3);

    /* More facts than one INSERT takes: the first batch is written, the
     * second fails, the transaction rolls both back, and no id of the
     * first batch is left in the caller's array. */
    size_t many = 1001;
    ds_memory_new_fact *batch = calloc(many, sizeof *batch);
    int64_t *many_ids = calloc(many, sizeof *many_ids);
    for (size_t i = 0; i < many; i++)
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "many",
                                        .embedding = a, .dim = DIM};
    batch[many - 1].user_id = 424242;
    st = ds_memory_add_batch(f.mem, batch, many, many_ids, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(count_facts(f.url), 3);
    for (size_t i = 0; i < many; i++)
        ck_assert_int_eq(many_ids[i], 0);
    free(batch);
    free(many_ids);
    fx_close(&f);
}
END_TEST

/* ---- validation: nothing bad is written ------------------------------------------ */

START_TEST(test_memory_add_rejects_bad_input) {
    fx f;
    if (!fx_open(&f, "test_memory_add_rejects_bad_input", _i))
        return;
    float v[DIM + 1];
    ds_error err = {0};
    ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "x", .embedding = v,
                             .dim = DIM};
    struct {
        float value;
        int index;
        const char *says;
    } bad[] = {{NAN, 7, "NaN"}, {INFINITY, 0, "infinite"},
               {-INFINITY, DIM - 1, "infinite"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vec3(v, 1, 1, 1);
        v[bad[i].index] = bad[i].value;
        ds_status st = ds_memory_add(f.mem, &nf, NULL, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
        ck_assert_ptr_nonnull(strstr(err.message, bad[i].says));
    }
    vec3(v, 0, 0, 0);
    ds_status st = ds_memory_add(f.mem, &nf, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "length zero"));
    vec3(v, 1, 0, 0);
    nf.dim = DIM + 1;
    st = ds_memory_add(f.mem, &nf, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "385 dimensions"));
    nf.dim = DIM - 1;
    st = ds_memory_add(f.mem, &nf, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    nf.dim = DIM;
    nf.embedding = NULL;
    st = ds_memory_add(f.mem, &nf, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    nf.embedding = v;

    /* the other fields */
    char *huge = malloc(DS_MEMORY_CONTENT_MAX + 2);
    memset(huge, 'a', DS_MEMORY_CONTENT_MAX + 1);
    huge[DS_MEMORY_CONTENT_MAX + 1] = '\0';
    json_t *array = json_array();
    const char *kinds[] = {"", "Upper", "has space", "x;drop",
                           "k23456789012345678901234567890123456789012345678901234567890123456"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        ds_memory_new_fact k = nf;
        k.kind = kinds[i];
        st = ds_memory_add(f.mem, &k, NULL, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
    }
    ds_memory_new_fact g = nf;
    g.content = "";
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g.content = huge;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g.content = "\xc3\x28 broken UTF-8";
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g.content = NULL;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g = nf;
    g.metadata = array;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g = nf;
    g.importance = 1.5;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g.importance = NAN;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g = nf;
    g.user_id = 0;
    ck_assert_int_eq(ds_memory_add(f.mem, &g, NULL, &err), DS_ERR_INVALID);
    g.user_id = 987654;
    st = ds_memory_add(f.mem, &g, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(count_facts(f.url), 0);

    /* exactly 100000 characters (multi-byte ones count once) is fine */
    char *max = malloc(2 * DS_MEMORY_CONTENT_MAX + 1);
    for (int i = 0; i < DS_MEMORY_CONTENT_MAX; i++)
        memcpy(max + 2 * i, "\xc3\xa9", 2);
    max[2 * DS_MEMORY_CONTENT_MAX] = '\0';
    g = nf;
    g.content = max;
    st = ds_memory_add(f.mem, &g, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(count_facts(f.url), 1);

    /* a search query is checked the same way */
    ds_memory_facts *out = (ds_memory_facts *)0x1;
    v[3] = NAN;
    st = ds_memory_search(f.mem, f.alice, v, DIM, 5, NULL, &out, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(out);
    vec3(v, 0, 0, 0);
    st = ds_memory_search(f.mem, f.alice, v, DIM, 5, NULL, &out, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    vec3(v, 1, 0, 0);
    st = ds_memory_search(f.mem, f.alice, v, 3, 5, NULL, &out, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    free(huge);
    free(max);
    json_decref(array);
    fx_close(&f);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------------- */

/* A batch's buffers are n * dim floats and n times a few bytes per
 * dimension: sizes that would wrap a size_t are refused, whether the count
 * or the dimension is huge, and nothing is written. */
START_TEST(test_memory_add_batch_refuses_sizes_that_wrap) {
    ck_assert(ds__memory_batch_fits(10000, 16000));
    ck_assert(ds__memory_batch_fits(1, 384));
    ck_assert(!ds__memory_batch_fits(SIZE_MAX / 384 + 1, 384));
    ck_assert(!ds__memory_batch_fits(SIZE_MAX / (4 * 384) + 1, 384));
    ck_assert(!ds__memory_batch_fits(2, SIZE_MAX / 4 + 1));
    ck_assert(!ds__memory_batch_fits(1, SIZE_MAX));
    ck_assert(!ds__memory_batch_fits(1, 0));
    fx f;
    if (!fx_open(&f, "test_memory_add_batch_refuses_sizes_that_wrap", 0))
        return;
    ds_error err = {0};
    float v[DIM];
    vec3(v, 1, 0, 0);
    ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact),
                             .user_id = f.alice, .content = "x",
                             .embedding = v, .dim = DIM};
    int64_t id = 7;
    ck_assert_int_eq(ds_memory_add_batch(f.mem, &nf, SIZE_MAX, &id, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add_batch(f.mem, &nf, SIZE_MAX / DIM + 1, NULL,
                                         &err),
                     DS_ERR_INVALID);
    static const size_t dims[] = {SIZE_MAX, SIZE_MAX / 4 + 1, SIZE_MAX / 6};
    for (size_t i = 0; i < 3; i++) {
        nf.dim = dims[i];
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(ds_memory_add_batch(f.mem, &nf, 1, &id, &err),
                         DS_ERR_INVALID);
        ck_assert_ptr_nonnull(strstr(err.message, "dimensions"));
        ck_assert_int_eq(id, 0);
    }
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts"), 0);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_errors_bad_arguments) {
    fx f;
    if (!fx_open(&f, "test_memory_errors_bad_arguments", 0))
        return;
    ds_error err = {0};
    float v[DIM];
    vec3(v, 1, 0, 0);
    ds_memory *m = NULL;
    ds_memory_fact *fact = NULL;
    ds_memory_facts *list = NULL;
    ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "x", .embedding = v,
                             .dim = DIM};
    int64_t id = add(f.mem, f.alice, "fact", "x", v);

    ck_assert_int_eq(ds_memory_open(NULL, NULL, &m, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_open(f.pool, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add(NULL, &nf, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add(f.mem, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add_batch(f.mem, &nf, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add_batch(f.mem, &nf, 10001, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_add_batch(f.mem, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_get(NULL, f.alice, id, &fact, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_get(f.mem, f.alice, id, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_get(f.mem, 0, id, &fact, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_get(f.mem, f.alice, -1, &fact, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(NULL, f.alice, NULL, 0, 10, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(f.mem, f.alice, NULL, 0, 0, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(f.mem, f.alice, NULL, 0, 1001, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(f.mem, f.alice, NULL, -1, 10, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(f.mem, f.alice, "Bad Kind", 0, 10, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_list(f.mem, f.alice, NULL, 0, 10, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_set_importance(f.mem, f.alice, id, -0.1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_set_importance(f.mem, f.alice, id, NAN, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_set_importance(NULL, f.alice, id, 0.1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_delete(NULL, f.alice, id, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_delete(f.mem, -3, id, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_touch(f.mem, f.alice, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_touch(f.mem, f.alice, &id, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_touch(NULL, f.alice, &id, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(NULL, f.alice, v, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 5, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, NULL, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 0, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 1001, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search(f.mem, 0, v, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .ef_search = 1001};
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 5, &o, &list, &err), DS_ERR_INVALID);
    o = (ds_memory_search_options){.size = sizeof(ds_memory_search_options), .use_min_similarity = true, .min_similarity = 1.5};
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 5, &o, &list, &err), DS_ERR_INVALID);
    o = (ds_memory_search_options){.size = sizeof(ds_memory_search_options), .kind = "NO"};
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, DIM, 5, &o, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search_hybrid(f.mem, f.alice, NULL, v, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search_hybrid(f.mem, f.alice, "", v, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search_hybrid(f.mem, f.alice, "\xff", v, DIM, 5, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_upgrade_to_pgvector(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(list);
    ck_assert_ptr_null(fact);
    ck_assert_ptr_null(m);
    /* NULL error pointers are fine too */
    ck_assert_int_eq(ds_memory_get(f.mem, f.alice, 999999, &fact, NULL), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_memory_search(f.mem, f.alice, v, 7, 5, NULL, &list, NULL), DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_backend(NULL), DS_VECTOR_BACKEND_AUTO);
    ck_assert_uint_eq(ds_memory_dim(NULL), 0);
    ds_memory_close(NULL);
    ds_memory_fact_free(NULL);
    ds_memory_facts_free(NULL);
    /* a bad setting value is a configuration error naming the variable */
    ds_config *cfg = dt_config(f.url, 1, 1);
    ck_assert_int_eq(ds_config_set(cfg, "DS_VECTOR_BACKEND", "faiss", &err), DS_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_VECTOR_BACKEND"));
    ck_assert_ptr_nonnull(strstr(err.message, "'fallback'"));
    ck_assert_int_eq(ds_config_set_int(cfg, "hnsw_ef_search", 0, &err), DS_ERR_CONFIG);
    ck_assert_int_eq(ds_config_set_int(cfg, "vector_backend", 3, &err), DS_ERR_CONFIG);
    char buf[16];
    ck_assert_int_eq(ds_config_set(cfg, "vector_backend", "PGVECTOR", &err), DS_OK);
    ck_assert_int_eq(ds_config_get_str(cfg, "vector_backend", buf, sizeof buf, &err), DS_OK);
    ck_assert_str_eq(buf, "pgvector");
    ds_config_free(cfg);
    fx_close(&f);
}
END_TEST

/* Every allocation of an add, a search and a hybrid search may fail:
 * the call says DS_ERR_NOMEM (or succeeds), never crashes or leaks. */
START_TEST(test_memory_errors_out_of_memory) {
    fx f;
    if (!fx_open(&f, "test_memory_errors_out_of_memory", _i))
        return;
    float v[DIM];
    vec3(v, 1, 2, 0);
    add(f.mem, f.alice, "fact", "green tea", v);
    add(f.mem, f.alice, "fact", "black tea", v);
    ds_memory_new_fact nf = {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "more tea",
                             .embedding = v, .dim = DIM};
    int failures = 0;
    for (long n = 1; n < 40; n++) {
        ds_error err = {0};
        ds_memory_facts *out = NULL;
        ds_memory_fact *one = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st1 = ds_memory_search(f.mem, f.alice, v, DIM, 5, NULL, &out, &err);
        ds_memory_facts_free(out);
        out = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st2 = ds_memory_search_hybrid(f.mem, f.alice, "tea", v, DIM, 5,
                                                NULL, &out, &err);
        ds_memory_facts_free(out);
        ds__test_fail_alloc_after(n);
        ds_status st3 = ds_memory_add(f.mem, &nf, NULL, &err);
        ds__test_fail_alloc_after(n);
        ds_status st4 = ds_memory_get(f.mem, f.alice, 1, &one, &err);
        ds_memory_fact_free(one);
        ds__test_fail_alloc_after(0);
        ds_status all[] = {st1, st2, st3, st4};
        for (int i = 0; i < 4; i++) {
            ck_assert_msg(all[i] == DS_OK || all[i] == DS_ERR_NOMEM ||
                              all[i] == DS_ERR_CONNECTION,
                          "allocation %ld, call %d: %s", n, i,
                          ds_status_str(all[i]));
            failures += all[i] != DS_OK;
        }
    }
    ck_assert_int_gt(failures, 0);
    fx_close(&f);
}
END_TEST

/* ---- stats -------------------------------------------------------------------- */

static ds_memory_stats mem_stats(const ds_memory *mem) {
    ds_memory_stats s = {.size = sizeof(ds_memory_stats)};
    ds_memory_stats_init(&s);
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_stats_get(mem, &s, &err), err);
    ck_assert_uint_eq(s.size, sizeof s);
    return s;
}

START_TEST(test_memory_stats_count_searches_rows_and_adds) {
    fx f;
    if (!fx_open(&f, "test_memory_stats_count_searches_rows_and_adds", _i))
        return;
    ds_memory_stats s = mem_stats(f.mem);
    ck_assert_uint_eq(s.searches + s.hybrid_searches + s.facts_added + s.errors +
                          s.rows_scanned + s.search_time_us, 0);
    /* against the query (1, 0, 0) the cosines are 1, 0.8, 0.6, 0 and -1 */
    static const float ladder[5][3] = {
        {2, 0, 0}, {0.8f, 0.6f, 0}, {0.6f, 0, 0.8f}, {0, 5, 0}, {-1, 0, 0}};
    float v[5][DIM];
    for (int i = 0; i < 5; i++)
        vec3(v[i], ladder[i][0], ladder[i][1], ladder[i][2]);
    for (int i = 0; i < 3; i++)
        add(f.mem, f.alice, "fact", "exact match", v[i]);
    ds_memory_new_fact two[2] = {
        {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "two", .embedding = v[3], .dim = DIM},
        {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "more", .embedding = v[4], .dim = DIM}};
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_add_batch(f.mem, two, 2, NULL, &err), err);
    /* neither a bad argument nor an unknown user is an error of ours */
    ds_memory_new_fact nobody = {.size = sizeof(ds_memory_new_fact), .user_id = 999999, .content = "x",
                                 .embedding = v[0], .dim = DIM};
    ck_assert_ds_status(ds_memory_add(f.mem, &nobody, NULL, &err),
                        DS_ERR_NOT_FOUND, err);
    nobody.dim = 3;
    ck_assert_ds_status(ds_memory_add(f.mem, &nobody, NULL, &err),
                        DS_ERR_INVALID, err);
    s = mem_stats(f.mem);
    ck_assert_uint_eq(s.facts_added, 5);
    ck_assert_uint_eq(s.errors, 0);

    /* k above the user's facts: every sketch read, every fact rescored */
    ds_memory_facts *hits = search(f.mem, f.alice, v[0], 10, NULL);
    ck_assert_uint_eq(hits->count, 5);
    ds_memory_facts_free(hits);
    s = mem_stats(f.mem);
    ck_assert_uint_eq(s.searches, 1);
    ck_assert_uint_eq(s.rows_scanned, 5);
    ck_assert_uint_eq(s.rows_rescored, 5);
    ck_assert_uint_gt(s.search_time_us, 0);
    /* k = 1: the sketches rule out all but the exact match (its lower
     * bound is far above 0.8, the next upper bound) */
    hits = search(f.mem, f.alice, v[0], 1, NULL);
    ck_assert_uint_eq(hits->count, 1);
    ds_memory_facts_free(hits);
    s = mem_stats(f.mem);
    ck_assert_uint_eq(s.rows_scanned, 10);
    ck_assert_uint_eq(s.rows_rescored, 6);
    /* a kind nobody has and a user without facts read nothing */
    ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .kind = "nothing_here"};
    hits = search(f.mem, f.alice, v[0], 10, &o);
    ds_memory_facts_free(hits);
    hits = search(f.mem, f.bob, v[0], 10, NULL);
    ds_memory_facts_free(hits);
    ck_assert_ds_status(ds_memory_search(f.mem, f.alice, v[0], DIM, 0, NULL,
                                         &hits, &err),
                        DS_ERR_INVALID, err);
    ck_assert_ds_ok(ds_memory_search_hybrid(f.mem, f.alice, "exact match", v[0],
                                            DIM, 3, NULL, &hits, &err),
                    err);
    ds_memory_facts_free(hits);
    s = mem_stats(f.mem);
    ck_assert_uint_eq(s.searches, 4);
    ck_assert_uint_eq(s.hybrid_searches, 1);
    /* the hybrid search ranks max(4k, 40) candidates, all five, but reads
     * exact vectors only where the fused top 3 needs them: the three text
     * matches (vector ranks 1-3, each ahead of both unmatched facts by its
     * own text rank), whose sketch bounds lie far apart */
    ck_assert_uint_eq(s.rows_scanned, 15);
    ck_assert_uint_eq(s.rows_rescored, 9);
    ck_assert_uint_eq(_i ? s.pgvector_searches : s.fallback_searches, 5);
    ck_assert_uint_eq(_i ? s.fallback_searches : s.pgvector_searches, 0);
    ck_assert_uint_eq(s.errors, 0);

    if (_i == 0) {
        /* a damaged stored embedding (NaN) fails the search: an error */
        dt_sql(f.url, "UPDATE memory_facts SET embedding = "
                      "decode(repeat('0000c07f', 384), 'hex') "
                      "WHERE content = 'two'");
        ck_assert_ds_status(ds_memory_search(f.mem, f.alice, v[0], DIM, 10,
                                             NULL, &hits, &err),
                            DS_ERR_SCHEMA, err);
        s = mem_stats(f.mem);
        ck_assert_uint_eq(s.errors, 1);
        ck_assert_uint_eq(s.searches, 4);
    }
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_stats_errors) {
    ds_error err = {0};
    ds_memory_stats s = {.size = sizeof(ds_memory_stats)};
    ds_memory_stats_init(&s);
    ck_assert_ds_status(ds_memory_stats_get(NULL, &s, &err), DS_ERR_INVALID, err);
    ck_assert_ds_status(ds_memory_stats_get(NULL, NULL, &err), DS_ERR_INVALID, err);
    ds_memory_stats lit = DS_MEMORY_STATS_INIT;
    ck_assert_uint_eq(lit.size, sizeof lit);
    ds_memory_stats_init(NULL);
    fx f;
    if (!fx_open(&f, "test_memory_stats_errors", 0))
        return;
    s.size = 0; /* never initialised */
    ck_assert_ds_status(ds_memory_stats_get(f.mem, &s, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds_memory_stats.size"));
    s.size = sizeof s + 8;
    ck_assert_ds_status(ds_memory_stats_get(f.mem, &s, &err), DS_ERR_INVALID, err);
    ck_assert_ds_ok(ds_memory_stats_get(f.mem, &lit, &err), err);
    fx_close(&f);
}
END_TEST

Suite *ds_test_memory_suite(void) {
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("open");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_open_checks_the_database_record, 0, 2);
    tcase_add_test(tc, test_memory_open_refuses_unmigrated_database);
    tcase_add_test(tc, test_memory_migration_settings_and_down);
    tcase_add_loop_test(tc, test_memory_exact_search_migration_down_and_up, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("crud");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_crud, 0, 2);
    tcase_add_loop_test(tc, test_memory_list_pages_across_kinds, 0, 2);
    tcase_add_loop_test(tc, test_memory_add_batch_is_all_or_nothing, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("validation");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_add_rejects_bad_input, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("stats");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_stats_count_searches_rows_and_adds, 0, 2);
    tcase_add_test(tc, test_memory_stats_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_memory_errors_bad_arguments);
    tcase_add_test(tc, test_memory_add_batch_refuses_sizes_that_wrap);
    tcase_add_loop_test(tc, test_memory_errors_out_of_memory, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
