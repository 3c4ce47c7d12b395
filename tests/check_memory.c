/* The memory store on both backends: facts CRUD, validation, exact search
 * (recall on clustered data), hybrid ranking, user isolation, the
 * fallback-to-pgvector upgrade, and every statement against the live
 * schema.
 *
 * Loop tests run once per backend: _i == 0 the fallback, _i == 1 pgvector
 * (skipped, with the reason, where the server has no pgvector or
 * DS_VECTOR_BACKEND=fallback forces the fallback). */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory/memory_internal.h"
#include "clustered.h"
#include "test_util.h"

#define DIM 384

/* ---- fixtures ------------------------------------------------------------ */

static const char *backend_of(int i) { return i ? "pgvector" : "fallback"; }

typedef struct fx {
    char *url;
    ds_pool *pool;
    ds_memory *mem;
    int64_t alice, bob;
} fx;

static ds_memory *open_mem(ds_pool *pool, const char *url, int exact_max) {
    ds_config *cfg = dt_config(url, 1, 4);
    ds_error err = {0};
    ds_status st = DS_OK;
    if (exact_max >= 0)
        st = ds_config_set_int(cfg, "vector_exact_max_rows", exact_max, &err);
    ck_assert_ds_ok(st, err);
    ds_memory *mem = NULL;
    st = ds_memory_open(pool, cfg, &mem, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    return mem;
}

/* A migrated database of `backend` with users alice and bob. Returns false
 * (the test then returns) when the backend cannot run here. */
static bool fx_open(fx *f, const char *test, int backend) {
    memset(f, 0, sizeof *f);
    if (backend == 1 && dt_skip_without_pgvector(test))
        return false;
    f->url = dt_migrated_db_backend("mem", backend_of(backend));
    dt_sql(f->url, "INSERT INTO users (email) VALUES ('alice@example.org'), "
                   "('bob@example.org')");
    f->alice = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'alice%'");
    f->bob = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'bob%'");
    f->pool = dt_pool(f->url, 1, 4);
    f->mem = open_mem(f->pool, f->url, -1);
    ck_assert_int_eq(ds_memory_backend(f->mem),
                     backend ? DS_VECTOR_BACKEND_PGVECTOR
                             : DS_VECTOR_BACKEND_FALLBACK);
    return true;
}

static void fx_close(fx *f) {
    ds_memory_close(f->mem);
    ds_pool_close(f->pool);
    if (f->url) {
        dt_drop_db(f->url);
        free(f->url);
    }
}

/* ---- vectors ------------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double uniform(void) { return (double)(rng() >> 11) / 9007199254740992.0; }
static double gauss(void) {
    double u = uniform(), v = uniform();
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static void normalize(float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    s = sqrt(s);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] / s);
}

/* A vector with the given leading components, zeros after. */
static void vec3(float *v, float a, float b, float c) {
    memset(v, 0, DIM * sizeof *v);
    v[0] = a;
    v[1] = b;
    v[2] = c;
}

/* Clustered unit vectors: `nc` centres, each point a centre plus noise
 * (cosine about 0.7 to its centre). */
typedef struct dataset {
    size_t n;
    float *v;       /* n x DIM, unit */
    int64_t *user;  /* owner of each */
    int64_t *id;    /* filled when added */
} dataset;

static float centres[32][DIM];

static void make_centres(int nc) {
    for (int c = 0; c < nc; c++) {
        for (int i = 0; i < DIM; i++)
            centres[c][i] = (float)gauss();
        normalize(centres[c], DIM);
    }
}

static void clustered(float *out, int nc) {
    int c = (int)(rng() % (uint64_t)nc);
    for (int i = 0; i < DIM; i++)
        out[i] = centres[c][i] + (float)(gauss() * 0.051);
    normalize(out, DIM);
}

static void dataset_make(dataset *d, size_t n, const int64_t *users,
                         size_t nusers, int nc) {
    d->n = n;
    d->v = malloc(n * DIM * sizeof *d->v);
    d->user = malloc(n * sizeof *d->user);
    d->id = calloc(n, sizeof *d->id);
    for (size_t i = 0; i < n; i++) {
        clustered(d->v + i * DIM, nc);
        d->user[i] = users[i % nusers];
    }
}

static void dataset_free(dataset *d) {
    free(d->v);
    free(d->user);
    free(d->id);
}

static void dataset_add(ds_memory *mem, dataset *d) {
    ds_memory_new_fact *batch = calloc(1000, sizeof *batch);
    char (*text)[48] = calloc(1000, sizeof *text);
    for (size_t start = 0; start < d->n; start += 1000) {
        size_t n = d->n - start < 1000 ? d->n - start : 1000;
        for (size_t i = 0; i < n; i++) {
            snprintf(text[i], sizeof text[i], "generated fact %zu", start + i);
            batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = d->user[start + i],
                                            .content = text[i],
                                            .importance = 0.5,
                                            .embedding = d->v + (start + i) * DIM,
                                            .dim = DIM};
        }
        ds_error err = {0};
        ds_status st = ds_memory_add_batch(mem, batch, n, d->id + start, &err);
        ck_assert_ds_ok(st, err);
    }
    free(batch);
    free(text);
}

/* Exact top-k of `user` by brute force, as ids (best first). */
static size_t brute_topk(const dataset *d, int64_t user, const float *q,
                         size_t k, int64_t *ids, double *scores) {
    size_t got = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->user[i] != user)
            continue;
        double s = 0;
        for (int j = 0; j < DIM; j++)
            s += (double)q[j] * d->v[i * DIM + j];
        size_t pos = got < k ? got++ : k;
        if (pos == k && s <= scores[k - 1])
            continue;
        if (pos == k)
            pos = k - 1;
        while (pos > 0 && scores[pos - 1] < s) {
            scores[pos] = scores[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        scores[pos] = s;
        ids[pos] = d->id[i];
    }
    return got;
}

static ds_memory_facts *search(ds_memory *mem, int64_t user, const float *q,
                               int k, const ds_memory_search_options *opts) {
    ds_memory_facts *out = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_search(mem, user, q, DIM, k, opts, &out, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_nonnull(out);
    return out;
}

static int64_t add(ds_memory *mem, int64_t user, const char *kind,
                   const char *content, const float *v) {
    ds_memory_new_fact f = {.size = sizeof(ds_memory_new_fact), .user_id = user,
                            .kind = kind,
                            .content = content,
                            .importance = 0.5,
                            .embedding = v,
                            .dim = DIM};
    int64_t id = 0;
    ds_error err = {0};
    ds_status st = ds_memory_add(mem, &f, &id, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_gt(id, 0);
    return id;
}

static long long count_facts(const char *url) {
    return dt_sql_int(url, "SELECT count(*) FROM memory_facts");
}

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

/* ---- search ------------------------------------------------------------------------ */

START_TEST(test_memory_search_orders_by_cosine) {
    fx f;
    if (!fx_open(&f, "test_memory_search_orders_by_cosine", _i))
        return;
    float v[DIM];
    /* against the query (1, 0, 0) the cosines are 1, 0.8, 0.6, 0, -1 */
    vec3(v, 2, 0, 0);
    int64_t exact = add(f.mem, f.alice, "fact", "exact", v);
    vec3(v, 0.8f, 0.6f, 0);
    int64_t near = add(f.mem, f.alice, "note", "near", v);
    vec3(v, 0.6f, 0, 0.8f);
    int64_t mid = add(f.mem, f.alice, "fact", "mid", v);
    vec3(v, 0, 5, 0);
    int64_t ortho = add(f.mem, f.alice, "fact", "orthogonal", v);
    vec3(v, -1, 0, 0);
    int64_t opposite = add(f.mem, f.alice, "fact", "opposite", v);

    vec3(v, 10, 0, 0); /* the query's length does not matter */
    ds_memory_facts *hits = search(f.mem, f.alice, v, 10, NULL);
    int64_t want[] = {exact, near, mid, ortho, opposite};
    double score[] = {1, 0.8, 0.6, 0, -1};
    ck_assert_uint_eq(hits->count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(hits->items[i]->id, want[i]);
        ck_assert_double_eq_tol(hits->items[i]->score, score[i], 1e-6);
        ck_assert_int_eq(hits->items[i]->vector_rank, i + 1);
        ck_assert_int_eq(hits->items[i]->text_rank, 0);
        ck_assert_ptr_null(hits->items[i]->embedding);
    }
    ck_assert_str_eq(hits->items[1]->content, "near");
    ds_memory_facts_free(hits);

    hits = search(f.mem, f.alice, v, 2, NULL);
    ck_assert_uint_eq(hits->count, 2);
    ck_assert_int_eq(hits->items[1]->id, near);
    ds_memory_facts_free(hits);

    ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .use_min_similarity = true, .min_similarity = 0.5};
    hits = search(f.mem, f.alice, v, 10, &o);
    ck_assert_uint_eq(hits->count, 3);
    ck_assert_int_eq(hits->items[2]->id, mid);
    ds_memory_facts_free(hits);

    o = (ds_memory_search_options){.size = sizeof(ds_memory_search_options), .kind = "fact", .ef_search = 64};
    hits = search(f.mem, f.alice, v, 10, &o);
    ck_assert_uint_eq(hits->count, 4);
    ck_assert_int_eq(hits->items[0]->id, exact);
    ck_assert_int_eq(hits->items[1]->id, mid);
    ds_memory_facts_free(hits);

    o = (ds_memory_search_options){.size = sizeof(ds_memory_search_options), .kind = "nothing_here"};
    hits = search(f.mem, f.alice, v, 10, &o);
    ck_assert_uint_eq(hits->count, 0);
    ds_memory_facts_free(hits);
    /* a user without facts gets an empty list */
    hits = search(f.mem, f.bob, v, 10, NULL);
    ck_assert_uint_eq(hits->count, 0);
    ds_memory_facts_free(hits);
    fx_close(&f);
}
END_TEST

START_TEST(test_memory_user_isolation) {
    fx f;
    if (!fx_open(&f, "test_memory_user_isolation", _i))
        return;
    float v[DIM];
    vec3(v, 1, 0, 0);
    int64_t bob_best = add(f.mem, f.bob, "fact", "bob likes tea", v);
    add(f.mem, f.bob, "fact", "bob likes coffee", v);
    vec3(v, 0, 1, 0);
    int64_t alice_only = add(f.mem, f.alice, "fact", "alice likes tea", v);
    /* many facts of bob around the query, one of alice far from it */
    rng_state = 99;
    make_centres(4);
    for (int i = 0; i < 60; i++) {
        float w[DIM];
        clustered(w, 4);
        w[0] += 3;
        normalize(w, DIM);
        add(f.mem, f.bob, "fact", "bob tea noise", w);
    }
    vec3(v, 1, 0, 0);
    ds_memory_facts *hits = search(f.mem, f.alice, v, 50, NULL);
    ck_assert_uint_eq(hits->count, 1);
    ck_assert_int_eq(hits->items[0]->id, alice_only);
    ck_assert_int_eq(hits->items[0]->user_id, f.alice);
    ds_memory_facts_free(hits);
    ds_memory_facts *hy = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_search_hybrid(f.mem, f.alice, "tea", v, DIM, 50,
                                           NULL, &hy, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hy->count, 1);
    ck_assert_int_eq(hy->items[0]->id, alice_only);
    ds_memory_facts_free(hy);

    /* bob's fact does not exist for alice */
    ds_memory_fact *got = (ds_memory_fact *)0x1;
    st = ds_memory_get(f.mem, f.alice, bob_best, &got, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(got);
    st = ds_memory_set_importance(f.mem, f.alice, bob_best, 1, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_memory_delete(f.mem, f.alice, bob_best, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    size_t touched = 9;
    st = ds_memory_touch(f.mem, f.alice, &bob_best, 1, &touched, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(touched, 0);
    ds_memory_facts *list;
    st = ds_memory_list(f.mem, f.alice, NULL, 0, 1000, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 1);
    ds_memory_facts_free(list);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts "
                                       "WHERE last_accessed_at IS NOT NULL "
                                       "OR importance <> 0.5"),
                     0);
    fx_close(&f);
}
END_TEST

/* Hand-checked reciprocal rank fusion (k = 60). Query vector (1, 0, 0),
 * text "green tea":
 *   A "black coffee"          cos 1.0   vector rank 1, no text match
 *   B "green tea"             cos 0.9   vector rank 2, text rank 1
 *   C "green tea with honey"  cos 0.5   vector rank 3, text rank 2
 *   D "tea garden"            cos -0.2  vector rank 4, no text match ("green"
 *                                       is missing: websearch terms are ANDed)
 *   E "green tea and green tea leaves" (another user's, never seen)
 * Scores: B 1/62 + 1/61 = 0.032522, C 1/63 + 1/62 = 0.032002,
 *         A 1/61 = 0.016393, D 1/64 = 0.015625.
 * So B, C, A, D, where the vector ranking alone says A, B, C, D. */
START_TEST(test_memory_hybrid_rrf_hand_checked) {
    fx f;
    if (!fx_open(&f, "test_memory_hybrid_rrf_hand_checked", _i))
        return;
    float v[DIM];
    vec3(v, 1, 0, 0);
    int64_t a = add(f.mem, f.alice, "fact", "black coffee", v);
    vec3(v, 0.9f, sqrtf(1 - 0.81f), 0);
    int64_t b = add(f.mem, f.alice, "fact", "green tea", v);
    vec3(v, 0.5f, 0, sqrtf(0.75f));
    int64_t c = add(f.mem, f.alice, "fact", "green tea with honey", v);
    vec3(v, -0.2f, sqrtf(1 - 0.04f), 0);
    int64_t d = add(f.mem, f.alice, "fact", "tea garden", v);
    vec3(v, 1, 0, 0);
    add(f.mem, f.bob, "fact", "green tea and green tea leaves", v);

    ds_memory_facts *hy = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_search_hybrid(f.mem, f.alice, "green tea", v, DIM,
                                           10, NULL, &hy, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hy->count, 4);
    int64_t want[] = {b, c, a, d};
    double score[] = {1.0 / 62 + 1.0 / 61, 1.0 / 63 + 1.0 / 62, 1.0 / 61,
                      1.0 / 64};
    int vrank[] = {2, 3, 1, 4}, trank[] = {1, 2, 0, 0};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(hy->items[i]->id, want[i]);
        ck_assert_double_eq_tol(hy->items[i]->score, score[i], 1e-12);
        ck_assert_int_eq(hy->items[i]->vector_rank, vrank[i]);
        ck_assert_int_eq(hy->items[i]->text_rank, trank[i]);
    }
    ds_memory_facts_free(hy);

    /* k cuts the fused list; min_similarity trims the vector side only */
    ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .use_min_similarity = true, .min_similarity = 0.95};
    st = ds_memory_search_hybrid(f.mem, f.alice, "green tea", v, DIM, 2, &o,
                                 &hy, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hy->count, 2);
    /* vector list is only A now: A 1/61, B 1/61 (text 1), C 1/62 */
    ck_assert_int_eq(hy->items[0]->id, a < b ? a : b);
    ck_assert_int_eq(hy->items[1]->id, a < b ? b : a);
    ds_memory_facts_free(hy);

    /* text that matches nothing (or only stop words) leaves the vector order */
    st = ds_memory_search_hybrid(f.mem, f.alice, "the of", v, DIM, 10, NULL,
                                 &hy, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hy->count, 4);
    ck_assert_int_eq(hy->items[0]->id, a);
    ck_assert_int_eq(hy->items[3]->id, d);
    ds_memory_facts_free(hy);
    fx_close(&f);
}
END_TEST

/* ---- the fallback's sketches --------------------------------------------------------- */

/* |q.u - approx| <= bound + slack for every unit q: the promise the
 * fallback's pruning rests on. Checked against the exact dot product (in
 * double) and against the float one the search reports, on vectors that
 * make the 8-bit rounding as bad as it gets (one large component, so the
 * step is coarse and the rest rounds away; values at half steps; tiny
 * components), and on the worst query of all: the rounding error's own
 * direction, which turns Cauchy-Schwarz into an equality. */
static void check_bound(const float *unit, const float *q, size_t dim,
                        const char *what) {
    unsigned char *sk = malloc(DS_SKETCH_BYTES(dim));
    ds__sketch_build(unit, dim, sk);
    float bound;
    float approx = ds__sketch_dot(q, sk, dim, &bound);
    double slack = ds__sketch_slack(dim);
    double exact = 0;
    for (size_t i = 0; i < dim; i++)
        exact += (double)q[i] * unit[i];
    double reported = ds__vec_dot(q, unit, dim);
    ck_assert_msg(isfinite(approx) && bound >= 0, "%s, dim %zu", what, dim);
    ck_assert_msg(fabs(exact - approx) <= bound + slack,
                  "%s, dim %zu: |%.9g - %.9g| > %.9g + %.3g", what, dim, exact,
                  (double)approx, (double)bound, slack);
    ck_assert_msg(fabs(reported - approx) <= bound + slack,
                  "%s, dim %zu: float |%.9g - %.9g| > %.9g + %.3g", what, dim,
                  reported, (double)approx, (double)bound, slack);
    free(sk);
}

/* pgvector's binary form (vector_send): int16 dimensions, int16 zero,
 * big-endian float4 values. What the rescoring of a pgvector search reads;
 * anything else is refused, never read past its end. */
START_TEST(test_memory_pgvector_binary_form_decodes) {
    static const float want[3] = {1.0f, -2.5f, 0.125f};
    char buf[4 + 4 * 3 + 4];
    buf[0] = 0;
    buf[1] = 3;
    buf[2] = 0;
    buf[3] = 0;
    for (int i = 0; i < 3; i++) {
        uint32_t bits;
        memcpy(&bits, &want[i], 4);
        for (int b = 0; b < 4; b++)
            buf[4 + 4 * i + b] = (char)(bits >> (24 - 8 * b));
    }
    float got[4] = {0};
    ck_assert(ds__vec_from_pgvector(buf, 16, 3, got));
    for (int i = 0; i < 3; i++)
        ck_assert(got[i] == want[i]);
    ck_assert(!ds__vec_from_pgvector(buf, 16, 4, got));  /* other dim */
    ck_assert(!ds__vec_from_pgvector(buf, 12, 3, got));  /* short */
    ck_assert(!ds__vec_from_pgvector(buf, 20, 3, got));  /* long */
    ck_assert(!ds__vec_from_pgvector(buf, 2, 0, got));   /* no header */
    buf[3] = 1;                                          /* unused != 0 */
    ck_assert(!ds__vec_from_pgvector(buf, 16, 3, got));
    buf[3] = 0;
    buf[1] = 2;                                          /* header says 2 */
    ck_assert(!ds__vec_from_pgvector(buf, 16, 3, got));
}
END_TEST

/* The rounding error of `unit`'s sketch as a unit vector (false when the
 * sketch is exact). */
static bool error_direction(const float *unit, size_t dim, float *out) {
    unsigned char *sk = malloc(DS_SKETCH_BYTES(dim));
    ds__sketch_build(unit, dim, sk);
    float step;
    memcpy(&step, sk, 4); /* little-endian host, as the library assumes */
    float *e = malloc(dim * sizeof *e);
    for (size_t i = 0; i < dim; i++)
        e[i] = (float)((double)unit[i] - (double)(int8_t)sk[8 + i] * step);
    ds_status st = ds__vec_normalize(e, dim, dim, "e", out, NULL);
    free(e);
    free(sk);
    return st == DS_OK;
}

START_TEST(test_memory_sketch_bound_holds) {
    static const size_t dims[] = {1, 2, 7, 8, 9, 384, 1536, 2000, 16000};
    rng_state = 4242;
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        size_t dim = dims[d];
        float *v = malloc(dim * sizeof *v), *unit = malloc(dim * sizeof *unit);
        float *q = malloc(dim * sizeof *q), *qu = malloc(dim * sizeof *qu);
        for (int shape = 0; shape < 5; shape++) {
            for (size_t i = 0; i < dim; i++) {
                double g = gauss();
                switch (shape) {
                case 0: v[i] = (float)g; break;               /* isotropic */
                case 1: v[i] = i ? (float)(g * 1e-3) : 1; break; /* a spike */
                case 2: v[i] = (float)((double)(i % 7) + 0.5); break; /* half steps */
                case 3: v[i] = i % 97 ? (float)(g * 1e-30) : (float)g; break;
                default: v[i] = (float)(i % 2 ? -1 : 1); break; /* all equal */
                }
            }
            ck_assert_int_eq(ds__vec_normalize(v, dim, dim, "v", unit, NULL), DS_OK);
            for (int t = 0; t < 20; t++) {
                for (size_t i = 0; i < dim; i++)
                    q[i] = (float)gauss();
                ck_assert_int_eq(ds__vec_normalize(q, dim, dim, "q", qu, NULL), DS_OK);
                check_bound(unit, qu, dim, "random query");
            }
            check_bound(unit, unit, dim, "the vector itself");
            if (error_direction(unit, dim, qu)) {
                check_bound(unit, qu, dim, "the error's direction");
                for (size_t i = 0; i < dim; i++)
                    qu[i] = -qu[i];
                check_bound(unit, qu, dim, "against the error");
            }
        }
        free(v);
        free(unit);
        free(q);
        free(qu);
    }
}
END_TEST

/* The fallback's answers are exact whatever the pruning skips: on facts
 * whose similarities to the query lie far closer together than their
 * sketches can tell apart (a coarse step from a large component
 * elsewhere), the top k equals a brute-force ranking with the same float
 * arithmetic and the same tie-break (score, then id). Runs without
 * pgvector, unlike the comparison of the two backends. */
START_TEST(test_memory_fallback_search_is_exact) {
    fx f;
    if (!fx_open(&f, "test_memory_fallback_search_is_exact", 0))
        return;
    enum { N = 300 };
    float (*units)[DIM] = calloc(N, sizeof *units);
    int64_t *ids = calloc(N, sizeof *ids);
    ds_memory_new_fact *batch = calloc(N, sizeof *batch);
    rng_state = 31337;
    for (int i = 0; i < N; i++) {
        /* (c, s, r) on three axes, unit length: c in a sliver, the largest
         * component s (hence the step, s / 127) different for each */
        float v[DIM] = {0};
        double c = 0.3 + uniform() * 5e-4, big = 0.7 + uniform() * 0.25;
        v[0] = (float)c;
        v[1 + i % (DIM - 2)] = (float)big;
        v[DIM - 1] = (float)sqrt(1 - c * c - big * big);
        ck_assert_int_eq(ds__vec_normalize(v, DIM, DIM, "v", units[i], NULL), DS_OK);
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = i % 5 ? f.alice : f.bob,
                                        .content = "near tie",
                                        .embedding = units[i],
                                        .dim = DIM};
    }
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_add_batch(f.mem, batch, N, ids, &err), err);
    float q[DIM] = {0};
    q[0] = 1;
    static const int ks[] = {1, 2, 3, 5, 10, 20, 57};
    enum { NK = sizeof ks / sizeof ks[0] };
    for (int t = 0; t < 2 * NK; t++) {
        int k = ks[t % NK];
        ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .use_min_similarity = t >= NK,
                                   .min_similarity = 0.3002};
        /* brute force: every fact of alice, best first, ties by id */
        double best[N];
        int64_t best_id[N];
        int n = 0;
        for (int i = 0; i < N; i++) {
            if (batch[i].user_id != f.alice)
                continue;
            double s = ds__vec_dot(q, units[i], DIM);
            if (o.use_min_similarity && s < o.min_similarity)
                continue;
            int pos = n++;
            while (pos > 0 && (best[pos - 1] < s ||
                               (best[pos - 1] == s && best_id[pos - 1] > ids[i]))) {
                best[pos] = best[pos - 1];
                best_id[pos] = best_id[pos - 1];
                pos--;
            }
            best[pos] = s;
            best_id[pos] = ids[i];
        }
        ck_assert_int_gt(n, k);
        ds_memory_facts *hits = search(f.mem, f.alice, q, k, &o);
        ck_assert_uint_eq(hits->count, (size_t)k);
        for (int i = 0; i < k; i++) {
            ck_assert_int_eq(hits->items[i]->id, best_id[i]);
            ck_assert_double_eq(hits->items[i]->score, best[i]);
        }
        ds_memory_facts_free(hits);
    }
    free(units);
    free(ids);
    free(batch);
    fx_close(&f);
}
END_TEST

/* A sketch is only an accelerator: one that holds NaN, infinity or a step
 * or bound no unit vector has (bit rot, a hand-made row) must neither hide its fact nor, through the heap
 * of lower bounds, anybody else's; the exact vector decides. */
START_TEST(test_memory_fallback_survives_a_damaged_sketch) {
    fx f;
    if (!fx_open(&f, "test_memory_fallback_survives_a_damaged_sketch", 0))
        return;
    /* against the query (1, 0, 0) the cosines are -1, 0, 0.6, 0.8 and 1;
     * the best comes last, so its sketch is the last the search reads */
    static const float ladder[5][3] = {
        {-1, 0, 0}, {0, 5, 0}, {0.6f, 0, 0.8f}, {0.8f, 0.6f, 0}, {2, 0, 0}};
    float v[DIM];
    int64_t id[5];
    for (int i = 0; i < 5; i++) {
        vec3(v, ladder[i][0], ladder[i][1], ladder[i][2]);
        id[i] = add(f.mem, f.alice, "fact", "ladder", v);
    }
    int64_t opposite = id[0], ortho = id[1], mid = id[2], near = id[3],
            exact = id[4];
    char sql[256];
    /* the step of the last sketch the search reads becomes NaN */
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding_sketch = overlay("
             "embedding_sketch placing '\\x0000c07f'::bytea from 1 for 4) "
             "WHERE id = %lld",
             (long long)exact);
    dt_sql(f.url, sql);
    vec3(v, 1, 0, 0);
    ds_memory_facts *hits = search(f.mem, f.alice, v, 2, NULL);
    ck_assert_uint_eq(hits->count, 2);
    ck_assert_int_eq(hits->items[0]->id, exact);
    ck_assert_double_eq_tol(hits->items[0]->score, 1, 1e-6);
    ck_assert_int_eq(hits->items[1]->id, near);
    ds_memory_facts_free(hits);
    /* and another one's bound becomes infinite */
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding_sketch = overlay("
             "embedding_sketch placing '\\x0000807f'::bytea from 5 for 4) "
             "WHERE id = %lld",
             (long long)ortho);
    dt_sql(f.url, sql);
    hits = search(f.mem, f.alice, v, 10, NULL);
    int64_t want[] = {exact, near, mid, ortho, opposite};
    double score[] = {1, 0.8, 0.6, 0, -1};
    ck_assert_uint_eq(hits->count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(hits->items[i]->id, want[i]);
        ck_assert_double_eq_tol(hits->items[i]->score, score[i], 1e-6);
    }
    ds_memory_facts_free(hits);
    /* finite damage: a negative step hides its own fact, and steps of
     * 1000 and -1000 give two lower bounds far above any cosine, a floor
     * that would prune the true second best */
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding_sketch = overlay("
             "embedding_sketch placing '\\x040201bc'::bytea from 1 for 4) "
             "WHERE id = %lld",
             (long long)near);
    dt_sql(f.url, sql);
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding_sketch = overlay("
             "embedding_sketch placing '\\x00007a44'::bytea from 1 for 4) "
             "WHERE id = %lld",
             (long long)mid);
    dt_sql(f.url, sql);
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding_sketch = overlay("
             "embedding_sketch placing '\\x00007ac4'::bytea from 1 for 4) "
             "WHERE id = %lld",
             (long long)opposite);
    dt_sql(f.url, sql);
    hits = search(f.mem, f.alice, v, 2, NULL);
    ck_assert_uint_eq(hits->count, 2);
    ck_assert_int_eq(hits->items[0]->id, exact);
    ck_assert_int_eq(hits->items[1]->id, near);
    ck_assert_double_eq_tol(hits->items[1]->score, 0.8, 1e-6);
    ds_memory_facts_free(hits);

    /* A damaged embedding is the data itself: said, not ranked as NaN. */
    snprintf(sql, sizeof sql,
             "UPDATE memory_facts SET embedding = overlay(embedding placing "
             "'\\x0000c07f'::bytea from 1 for 4) WHERE id = %lld",
             (long long)mid);
    dt_sql(f.url, sql);
    ds_memory_facts *out = (ds_memory_facts *)0x1;
    ds_error err = {0};
    ds_status st = ds_memory_search(f.mem, f.alice, v, DIM, 10, NULL, &out, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_null(out);
    snprintf(sql, sizeof sql, "memory fact %lld", (long long)mid);
    ck_assert_ptr_nonnull(strstr(err.message, sql));
    fx_close(&f);
}
END_TEST

/* A large user's codes only choose candidates: a fact whose code is
 * missing, of the wrong length or holds NaN is always a candidate, so the
 * exact top k still comes back. */
enum { LC_FACTS = 4500 };

START_TEST(test_memory_large_user_survives_damaged_codes) {
    fx f;
    if (!fx_open(&f, "test_memory_large_user_survives_damaged_codes", _i))
        return;
    cl_model m;
    ck_assert(cl_model_init(&m, DIM, 50, 7));
    cl_user prof;
    cl_user_init(&m, &prof);
    float *v = malloc((size_t)LC_FACTS * DIM * sizeof *v);
    int64_t *ids = calloc(LC_FACTS, sizeof *ids);
    ds_memory_new_fact *batch = calloc(LC_FACTS, sizeof *batch);
    for (size_t i = 0; i < LC_FACTS; i++) {
        cl_fact(&m, &prof, v + i * DIM);
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = f.alice,
                                        .content = "large user",
                                        .embedding = v + i * DIM,
                                        .dim = DIM};
    }
    ds_error err = {0};
    ds_status st = ds_memory_add_batch(f.mem, batch, LC_FACTS, ids, &err);
    ck_assert_ds_ok(st, err);
    float q[DIM];
    cl_query(&m, &prof, q, NULL);
    size_t idx[10];
    double scores[10];
    ck_assert_uint_eq(cl_exact_topk(v, LC_FACTS, DIM, NULL, q, 10, idx, scores),
                      10);
    static const char *const damage[] = {
        "NULL", "'\\x00'::bytea",
        "overlay(embedding_code placing '\\x0000c07f'::bytea from 1 for 4)",
        "overlay(embedding_code placing '\\x0000c07f'::bytea from 5 for 4)",
        "overlay(embedding_code placing '\\x0000807f'::bytea from 5 for 4)"};
    char sql[256];
    for (size_t j = 0; j < 10; j++) {
        snprintf(sql, sizeof sql,
                 "UPDATE memory_facts SET embedding_code = %s WHERE id = %lld",
                 damage[j % 5], (long long)ids[idx[j]]);
        dt_sql(f.url, sql);
    }
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts "
                                       "WHERE embedding_code IS NULL"),
                     2);
    ds_memory_facts *hits = search(f.mem, f.alice, q, 10, NULL);
    ck_assert_uint_eq(hits->count, 10);
    for (size_t j = 0; j < 10; j++) {
        ck_assert_int_eq(hits->items[j]->id, ids[idx[j]]);
        ck_assert_double_eq_tol(hits->items[j]->score, scores[j], 1e-5);
    }
    ds_memory_facts_free(hits);
    /* ds_memory_fill_sketches gives the two rows without one a code */
    size_t filled = 0;
    st = ds_memory_fill_sketches(f.mem, &filled, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(filled, 2);
    cl_model_free(&m);
    free(v);
    free(ids);
    free(batch);
    fx_close(&f);
}
END_TEST

/* ---- the two backends agree; recall on clustered data ---------------------------------------------- */

START_TEST(test_memory_backends_return_the_same_top_k) {
    if (dt_skip_without_pgvector("test_memory_backends_return_the_same_top_k"))
        return;
    fx fb, pv;
    fx_open(&fb, "", 0);
    fx_open(&pv, "", 1);
    ck_assert_int_eq(fb.alice, pv.alice);
    rng_state = 12345;
    make_centres(8);
    dataset d;
    int64_t users[] = {fb.alice, fb.bob, fb.alice};
    dataset_make(&d, 1500, users, 3, 8);
    dataset_add(fb.mem, &d);
    int64_t *fb_ids = malloc(d.n * sizeof *fb_ids);
    memcpy(fb_ids, d.id, d.n * sizeof *fb_ids);
    dataset_add(pv.mem, &d);
    for (size_t i = 0; i < d.n; i++) /* fresh databases: the same ids */
        ck_assert_int_eq(fb_ids[i], d.id[i]);
    free(fb_ids);
    /* no HNSW index since sql/0005: both search exactly */
    ck_assert(!ds__memory_state_get(pv.mem).hnsw);
    for (int qi = 0; qi < 25; qi++) {
        float q[DIM];
        clustered(q, 8);
        int64_t user = qi % 2 ? fb.bob : fb.alice;
        ds_memory_facts *a = search(fb.mem, user, q, 10, NULL);
        ds_memory_facts *b = search(pv.mem, user, q, 10, NULL);
        int64_t ids[10];
        double scores[10];
        size_t n = brute_topk(&d, user, q, 10, ids, scores);
        ck_assert_uint_eq(n, 10);
        ck_assert_uint_eq(a->count, 10);
        ck_assert_uint_eq(b->count, 10);
        for (size_t i = 0; i < 10; i++) {
            ck_assert_int_eq(a->items[i]->id, ids[i]);
            ck_assert_int_eq(b->items[i]->id, ids[i]);
            ck_assert_double_eq_tol(a->items[i]->score, scores[i], 1e-5);
            ck_assert_double_eq_tol(b->items[i]->score, scores[i], 1e-5);
        }
        ds_memory_facts_free(a);
        ds_memory_facts_free(b);
    }
    dataset_free(&d);
    fx_close(&fb);
    fx_close(&pv);
}
END_TEST

/* Recall on clustered data (tests/clustered.h) against an exact scan in C:
 * a dense user (53% of the table, large enough that its searches choose
 * candidates by coarse code first), a sparse one (under 0.2%), one with
 * fewer facts than k, and fillers, their facts interleaved; every query
 * unfiltered, by kind and with a similarity floor. */
enum { RC_DENSE = 4500, RC_SPARSE = 9, RC_TINY = 4, RC_FILLERS = 3,
       RC_TOTAL = 8500, RC_K = 10 };

typedef struct recall_stats {
    double sum, worst;
    int queries;
} recall_stats;

static void check_search(ds_memory *mem, const cl_model *m, const float *v,
                         const int64_t *owner, const bool *is_note,
                         const int64_t *ids, int64_t user, const float *q,
                         const ds_memory_search_options *o, recall_stats *rs) {
    bool *keep = malloc(RC_TOTAL * sizeof *keep);
    double floor_sim = o && o->use_min_similarity ? o->min_similarity : -2;
    for (size_t i = 0; i < RC_TOTAL; i++)
        keep[i] = owner[i] == user && (!o || !o->kind || is_note[i]);
    size_t idx[RC_K];
    double scores[RC_K];
    size_t want = cl_exact_topk(v, RC_TOTAL, m->dim, keep, q, RC_K, idx,
                                scores);
    while (want > 0 && scores[want - 1] < floor_sim)
        want--;
    ds_memory_facts *hits = search(mem, user, q, RC_K, o);
    /* never fewer than min(k, facts that pass the filters) */
    ck_assert_uint_eq(hits->count, want);
    int found = 0;
    for (size_t i = 0; i < hits->count; i++) {
        const ds_memory_fact *h = hits->items[i];
        ck_assert_int_eq(h->user_id, user); /* isolation */
        if (o && o->kind)
            ck_assert_str_eq(h->kind, o->kind);
        ck_assert(h->score >= floor_sim - 1e-6);
        if (i > 0)
            ck_assert(h->score <= hits->items[i - 1]->score);
        for (size_t j = 0; j < want; j++)
            found += h->id == ids[idx[j]];
    }
    double recall = want ? found / (double)want : 1.0;
    rs->sum += recall;
    rs->worst = rs->queries == 0 || recall < rs->worst ? recall : rs->worst;
    rs->queries++;
    ds_memory_facts_free(hits);
    free(keep);
}

START_TEST(test_memory_recall_on_clustered_data) {
    fx f;
    if (!fx_open(&f, "test_memory_recall_on_clustered_data", _i))
        return;
    dt_sql(f.url, "INSERT INTO users (email) SELECT 'filler' || g || "
                  "'@example.org' FROM generate_series(1, 4) g");
    int64_t dense = f.alice, sparse = f.bob;
    int64_t tiny = dt_sql_int(f.url, "SELECT min(id) FROM users WHERE "
                                     "email LIKE 'filler%'");
    cl_model m;
    ck_assert(cl_model_init(&m, DIM, 200, 20261206));
    cl_user prof[3 + RC_FILLERS];
    for (int u = 0; u < 3 + RC_FILLERS; u++)
        cl_user_init(&m, &prof[u]);
    /* owners shuffled so a user's rows are spread over the table */
    int64_t *owner = malloc(RC_TOTAL * sizeof *owner);
    int *who = malloc(RC_TOTAL * sizeof *who);
    size_t n = 0;
    for (int i = 0; i < RC_DENSE; i++)
        who[n++] = 0;
    for (int i = 0; i < RC_SPARSE; i++)
        who[n++] = 1;
    for (int i = 0; i < RC_TINY; i++)
        who[n++] = 2;
    while (n < RC_TOTAL)
        who[n] = 3 + (int)(n % RC_FILLERS), n++;
    for (size_t i = RC_TOTAL - 1; i > 0; i--) {
        size_t j = cl_next(&m.rng) % (i + 1);
        int t = who[i];
        who[i] = who[j];
        who[j] = t;
    }
    float *v = malloc((size_t)RC_TOTAL * DIM * sizeof *v);
    bool *is_note = malloc(RC_TOTAL * sizeof *is_note);
    int64_t *ids = calloc(RC_TOTAL, sizeof *ids);
    ds_memory_new_fact *batch = calloc(RC_TOTAL, sizeof *batch);
    for (size_t i = 0; i < RC_TOTAL; i++) {
        owner[i] = who[i] == 0   ? dense
                   : who[i] == 1 ? sparse
                                 : tiny + (who[i] - 2);
        cl_fact(&m, &prof[who[i]], v + i * DIM);
        is_note[i] = i % 3 == 0;
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = owner[i],
                                        .kind = is_note[i] ? "note" : "fact",
                                        .content = "clustered fact",
                                        .importance = 0.5,
                                        .embedding = v + i * DIM,
                                        .dim = DIM};
    }
    ds_error err = {0};
    ds_status st = ds_memory_add_batch(f.mem, batch, RC_TOTAL, ids, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts "
                                       "WHERE embedding_sketch IS NULL"),
                     0);
    dt_sql(f.url, "VACUUM ANALYZE memory_facts");

    struct {
        int64_t user;
        int profile, queries;
    } cases[] = {{dense, 0, 24}, {sparse, 1, 12}, {tiny, 2, 6}};
    recall_stats all = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int qi = 0; qi < cases[c].queries; qi++) {
            float q[DIM];
            cl_query(&m, &prof[cases[c].profile], q, NULL);
            check_search(f.mem, &m, v, owner, is_note, ids, cases[c].user, q,
                         NULL, &all);
            ds_memory_search_options o = {.size = sizeof(ds_memory_search_options), .kind = "note"};
            check_search(f.mem, &m, v, owner, is_note, ids, cases[c].user, q,
                         &o, &all);
            /* a floor between the best scores: some facts pass, some not */
            o = (ds_memory_search_options){.size = sizeof(ds_memory_search_options), .use_min_similarity = true,
                                        .min_similarity = 0.3};
            check_search(f.mem, &m, v, owner, is_note, ids, cases[c].user, q,
                         &o, &all);
        }
    }
    double mean = all.sum / all.queries;
    printf("test_memory_recall_on_clustered_data (%s): %d searches, "
           "recall@10 mean %.4f, worst %.3f\n",
           backend_of(_i), all.queries, mean, all.worst);
    ck_assert_msg(mean >= 0.99, "recall@10 mean %.4f < 0.99", mean);
    ck_assert_msg(all.worst >= 0.9, "a query had recall@10 %.3f < 0.9",
                  all.worst);
    cl_model_free(&m);
    free(owner);
    free(who);
    free(v);
    free(is_note);
    free(ids);
    free(batch);
    fx_close(&f);
}
END_TEST

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
    char *name = strrchr(f.url, '/') + 1;
    char dbname[64];
    snprintf(dbname, sizeof dbname, "%.*s", (int)strcspn(name, "?"), name);
    char *url = dt_url_with_db(dt_env("DATABASE_POOLER_URL"), dbname);
    ds_config *cfg = dt_config(url, 1, 3);
    ds_error err = {0};
    ck_assert_int_eq(ds_config_set(cfg, "statement_mode", "pooler", &err), DS_OK);
    ds_pool *pool;
    ck_assert_int_eq(ds_pool_open(cfg, &pool, &err), DS_OK);
    ds_memory *mem;
    ds_status st = ds_memory_open(pool, cfg, &mem, &err);
    ck_assert_ds_ok(st, err);
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
    ds_config_free(cfg);
    free(url);
    fx_close(&f);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------------- */

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

/* Read your writes: with the local replica's replay paused, a search
 * routed to replicas misses a fact added a moment ago, and the same search
 * with the read token taken after the add finds it (from the primary); the
 * same for the hybrid search. */
START_TEST(test_memory_search_with_read_token_sees_a_new_fact) {
    fx f;
    if (!fx_open(&f, "test_memory_search_with_read_token_sees_a_new_fact", 0))
        return;
    const char *dbname = strrchr(f.url, '/') + 1;
    char db[96], sql[160];
    snprintf(db, sizeof db, "%.*s", (int)strcspn(dbname, "?"), dbname);
    char *replica = dt_url_with_db(dt_env("DATABASE_REPLICA_URLS"), db);
    char *replica_admin = dt_url_with_db(dt_env("DATABASE_REPLICA_URLS"), "postgres");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_database WHERE datname = '%s'", db);
    long long t0 = dt_now_ms();
    while (dt_sql_int(replica_admin, sql) == 0 && dt_now_ms() - t0 < 30000)
        usleep(20000);
    /* The database can reach the replica before its tables do: wait for the
     * table, then for the fixture's rows. */
    while (dt_sql_int(replica, "SELECT (to_regclass('users') IS NOT NULL)::int") == 0 &&
           dt_now_ms() - t0 < 30000)
        usleep(20000);
    while (dt_sql_int(replica, "SELECT count(*) FROM users") < 2 &&
           dt_now_ms() - t0 < 30000)
        usleep(20000);
    ds_config *cfg = dt_config(f.url, 1, 3);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "DATABASE_REPLICA_URLS", replica, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ds_memory *mem = open_mem(pool, f.url, -1);

    dt_sql(replica, "SELECT pg_wal_replay_pause()");
    while (dt_sql_int(replica, "SELECT (pg_get_wal_replay_pause_state() = "
                               "'paused')::int") != 1 &&
           dt_now_ms() - t0 < 40000)
        usleep(20000);
    float v[DIM];
    vec3(v, 1, 0, 0);
    ds_memory_new_fact fact = {.size = sizeof(ds_memory_new_fact), .user_id = f.alice, .content = "just added",
                               .importance = 0.5, .embedding = v, .dim = DIM};
    int64_t id = 0;
    ds_status add_st = ds_memory_add(mem, &fact, &id, &err);
    ds_read_token tok = {0};
    ds_status tok_st = ds_pool_read_token(pool, &tok, &err);
    ds_memory_facts *plain = NULL, *with_token = NULL;
    ds_error e1 = {0}, e2 = {0};
    ds_status plain_st = ds_memory_search(mem, f.alice, v, DIM, 5, NULL, &plain, &e1);
    ds_status tok_search_st = ds_memory_search_read_token(
        mem, f.alice, v, DIM, 5, NULL, &tok, 0, &with_token, &e2);
    ds_memory_facts *hplain = NULL, *hwith_token = NULL;
    ds_error e3 = {0}, e4 = {0};
    ds_status hplain_st = ds_memory_search_hybrid(mem, f.alice, "added", v, DIM,
                                                  5, NULL, &hplain, &e3);
    ds_status htok_st = ds_memory_search_hybrid_read_token(
        mem, f.alice, "added", v, DIM, 5, NULL, &tok, 0, &hwith_token, &e4);
    dt_sql(replica, "SELECT pg_wal_replay_resume()"); /* before any assertion */

    ck_assert_ds_ok(add_st, err);
    ck_assert_ds_ok(tok_st, err);
    ck_assert_ds_ok(plain_st, e1);
    ck_assert_uint_eq(plain->count, 0); /* the replica has not replayed it */
    ck_assert_ds_ok(tok_search_st, e2);
    ck_assert_uint_eq(with_token->count, 1);
    ck_assert_int_eq(with_token->items[0]->id, id);
    ds_memory_facts_free(plain);
    ds_memory_facts_free(with_token);
    /* the hybrid search likewise, found by both of its lists */
    ck_assert_ds_ok(hplain_st, e3);
    ck_assert_uint_eq(hplain->count, 0);
    ck_assert_ds_ok(htok_st, e4);
    ck_assert_uint_eq(hwith_token->count, 1);
    ck_assert_int_eq(hwith_token->items[0]->id, id);
    ck_assert_int_eq(hwith_token->items[0]->vector_rank, 1);
    ck_assert_int_eq(hwith_token->items[0]->text_rank, 1);
    ds_memory_facts_free(hplain);
    ds_memory_facts_free(hwith_token);

    ds_memory_facts *bad = NULL;
    ck_assert_int_eq(ds_memory_search_read_token(mem, f.alice, v, DIM, 5, NULL,
                                                 &tok, -1, &bad, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(ds_memory_search_hybrid_read_token(mem, f.alice, NULL, v,
                                                        DIM, 5, NULL, &tok, 0,
                                                        &bad, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_search_hybrid_read_token(mem, f.alice, "added",
                                                        v, DIM, 5, NULL, &tok,
                                                        60001, &bad, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(bad);
    ds_memory_close(mem);
    ds_pool_close(pool);
    free(replica);
    free(replica_admin);
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
    /* the hybrid search draws max(4k, 40) candidates: all five */
    ck_assert_uint_eq(s.rows_scanned, 15);
    ck_assert_uint_eq(s.rows_rescored, 11);
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
    tc = tcase_create("search");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_search_orders_by_cosine, 0, 2);
    tcase_add_loop_test(tc, test_memory_user_isolation, 0, 2);
    tcase_add_test(tc, test_memory_search_with_read_token_sees_a_new_fact);
    suite_add_tcase(s, tc);
    tc = tcase_create("sketch");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_memory_sketch_bound_holds);
    tcase_add_test(tc, test_memory_pgvector_binary_form_decodes);
    tcase_add_test(tc, test_memory_fallback_search_is_exact);
    tcase_add_test(tc, test_memory_fallback_survives_a_damaged_sketch);
    suite_add_tcase(s, tc);
    tc = tcase_create("hybrid");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_hybrid_rrf_hand_checked, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("backends");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_memory_backends_return_the_same_top_k);
    tcase_add_loop_test(tc, test_memory_recall_on_clustered_data, 0, 2);
    tcase_add_loop_test(tc, test_memory_large_user_survives_damaged_codes, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("upgrade");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_memory_upgrade_to_pgvector_keeps_every_row);
    tcase_add_test(tc, test_memory_upgrade_refuses_unmigrated_database);
    suite_add_tcase(s, tc);
    tc = tcase_create("schema");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_statements_match_the_schema, 0, 2);
    tcase_add_loop_test(tc, test_memory_pooler_mode, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("stats");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_memory_stats_count_searches_rows_and_adds, 0, 2);
    tcase_add_test(tc, test_memory_stats_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_memory_errors_bad_arguments);
    tcase_add_loop_test(tc, test_memory_errors_out_of_memory, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
