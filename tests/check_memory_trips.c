/* What a search sends: the statements and round trips of a small user's
 * search (two pipelines), the large user's stages still taken where they
 * pay (lists, more facts than the exact scan's limit), the plan of the
 * first statement at half the table, and pipelines that fail part-way.
 * Counts and plans only, never timings. Loop tests run once per backend
 * (0 the fallback, 1 pgvector). */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory/memory_internal.h"
#include "memory_fixture.h"
#include "test_util.h"

/* ---- the statements a search runs -------------------------------------------- */

enum { MAX_SEEN = 64 };

typedef struct seen {
    char names[MAX_SEEN][64];
    int n;
} seen;

static void record(void *ud, const ds_statement_event *ev) {
    seen *s = ud;
    if (s->n < MAX_SEEN)
        snprintf(s->names[s->n++], sizeof s->names[0], "%s", ev->name);
}

/* A pool on f->url whose statement hook writes to `s`, and a memory handle
 * on it. */
static void open_traced(const fx *f, seen *s, ds_pool **pool,
                        ds_memory **mem) {
    ds_config *cfg = dt_config(f->url, 1, 2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_statement_hook(cfg, record, s, &err), err);
    ck_assert_ds_ok(ds_pool_open(cfg, pool, &err), err);
    ck_assert_ds_ok(ds_memory_open(*pool, cfg, mem, &err), err);
    ds_config_free(cfg);
}

static bool ran(const seen *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return true;
    return false;
}

static void assert_sequence(const seen *s, const char *const *want, int n) {
    ck_assert_msg(s->n == n, "%d statements ran, expected %d (first: %s)",
                  s->n, n, s->n ? s->names[0] : "none");
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(s->names[i], want[i]);
}

/* `count` facts of `user` around a few clustered centres, kind `kind`;
 * their vectors go to units (count x DIM) and ids to ids. */
static void add_facts(ds_memory *mem, int64_t user, const char *kind,
                      size_t count, float *units, int64_t *ids) {
    ds_memory_new_fact *batch = calloc(count, sizeof *batch);
    ck_assert_ptr_nonnull(batch);
    for (size_t i = 0; i < count; i++) {
        clustered(units + i * DIM, 8);
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = user,
                                        .kind = kind,
                                        .content = i % 3 ? "green tea daily"
                                                         : "black coffee",
                                        .embedding = units + i * DIM,
                                        .dim = DIM};
    }
    ds_error err = {0};
    for (size_t at = 0; at < count; at += 1000) {
        size_t n = count - at < 1000 ? count - at : 1000;
        ck_assert_ds_ok(ds_memory_add_batch(mem, batch + at, n, ids + at,
                                            &err),
                        err);
    }
    free(batch);
}

/* The exact top k by brute force (ties by id), as ids. */
static size_t exact_top(const float *units, const int64_t *ids, size_t count,
                        const float *q, size_t k, int64_t *out) {
    double *best = calloc(k, sizeof *best);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        double s = ds__vec_dot(q, units + i * DIM, DIM);
        size_t pos = n < k ? n++ : k;
        if (pos == k) {
            if (s < best[k - 1] || (s == best[k - 1] && ids[i] > out[k - 1]))
                continue;
            pos = k - 1;
        }
        while (pos > 0 && (best[pos - 1] < s ||
                           (best[pos - 1] == s && out[pos - 1] > ids[i]))) {
            best[pos] = best[pos - 1];
            out[pos] = out[pos - 1];
            pos--;
        }
        best[pos] = s;
        out[pos] = ids[i];
    }
    free(best);
    return n;
}

static void assert_exact(ds_memory *mem, int64_t user, const float *units,
                         const int64_t *ids, size_t count, const float *q,
                         int k) {
    int64_t want[16];
    size_t n = exact_top(units, ids, count, q, (size_t)k, want);
    ds_memory_facts *hits = search(mem, user, q, k, NULL);
    ck_assert_uint_eq(hits->count, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(hits->items[i]->id, want[i]);
    ds_memory_facts_free(hits);
}

/* A small user's search: BEGIN with its sketches in one round trip, the
 * candidates' vectors and rows with the COMMIT in the second; neither the
 * lists nor the codes are read. Hybrid adds its text query to the first
 * round trip. The answers are the exact top k. */
START_TEST(test_memory_small_user_search_statements) {
    fx f;
    if (!fx_open(&f, "test_memory_small_user_search_statements", _i))
        return;
    enum { N = 400 };
    float *units = calloc((size_t)N * DIM, sizeof *units);
    int64_t *ids = calloc(N, sizeof *ids);
    rng_state = 4242;
    make_centres(8);
    add_facts(f.mem, f.alice, NULL, N, units, ids);

    seen s = {0};
    ds_pool *pool;
    ds_memory *mem;
    open_traced(&f, &s, &pool, &mem);
    const char *cands = _i ? "memory.pgvector.candidates"
                           : "memory.fallback.candidates";
    float q[DIM];
    for (int t = 0; t < 8; t++) { /* past the server's first custom plans */
        clustered(q, 8);
        s.n = 0;
        assert_exact(mem, f.alice, units, ids, N, q, 10);
        const char *want[] = {"memory.begin_read", "memory.small_sketches",
                              cands, "memory.commit"};
        assert_sequence(&s, want, 4);
    }

    s.n = 0;
    ds_error err = {0};
    ds_memory_facts *hits;
    ck_assert_ds_ok(ds_memory_search_hybrid(mem, f.alice, "coffee", q, DIM, 5,
                                            NULL, &hits, &err),
                    err);
    ck_assert_uint_eq(hits->count, 5);
    for (size_t i = 0; i < hits->count; i++)
        ck_assert_int_gt(hits->items[i]->vector_rank + hits->items[i]->text_rank,
                         0);
    ds_memory_facts_free(hits);
    const char *hybrid[] = {"memory.begin_read", "memory.small_sketches",
                            "memory.text_candidates", cands, "memory.commit"};
    assert_sequence(&s, hybrid, 5);

    /* a user without facts: no second statement to fetch anything */
    s.n = 0;
    hits = search(mem, f.bob, q, 10, NULL);
    ck_assert_uint_eq(hits->count, 0);
    ds_memory_facts_free(hits);
    const char *empty[] = {"memory.begin_read", "memory.small_sketches",
                           "memory.commit"};
    assert_sequence(&s, empty, 3);

    ds_memory_close(mem);
    ds_pool_close(pool);
    free(units);
    free(ids);
    fx_close(&f);
}
END_TEST

/* Behind PgBouncer in transaction mode the pipelines run unnamed, BEGIN
 * to COMMIT on one server connection: the answers stay exact. */
START_TEST(test_memory_small_user_search_behind_a_pooler) {
    fx f;
    if (!fx_open(&f, "test_memory_small_user_search_behind_a_pooler", _i))
        return;
    enum { N = 200 };
    float *units = calloc((size_t)N * DIM, sizeof *units);
    int64_t *ids = calloc(N, sizeof *ids);
    rng_state = 5150;
    make_centres(8);
    add_facts(f.mem, f.alice, NULL, N, units, ids);
    ds_pool *pool = dt_pooler_pool(f.url, 1, 2);
    ds_memory *mem = open_mem(pool, f.url, -1);
    float q[DIM];
    for (int t = 0; t < 8; t++) {
        clustered(q, 8);
        assert_exact(mem, f.alice, units, ids, N, q, 10);
    }
    ds_error err = {0};
    ds_memory_facts *hits;
    ck_assert_ds_ok(ds_memory_search_hybrid(mem, f.alice, "coffee", q, DIM, 5,
                                            NULL, &hits, &err),
                    err);
    ck_assert_uint_eq(hits->count, 5);
    ds_memory_facts_free(hits);
    ds_memory_close(mem);
    ds_pool_close(pool);
    free(units);
    free(ids);
    fx_close(&f);
}
END_TEST

/* Users the exact scan does not suit still take the large user's stages:
 * one with lists reads its lists; one with more facts than the limit
 * reads its codes, unless the kind filter leaves it few. Their answers
 * stay exact where the stages are exact. */
START_TEST(test_memory_large_users_keep_their_stages) {
    fx f;
    if (!fx_open(&f, "test_memory_large_users_keep_their_stages", _i))
        return;
    enum { MANY = 4100, FEW = 20, CLUSTERED = 600 };
    float *units = calloc((size_t)MANY * DIM, sizeof *units);
    int64_t *ids = calloc(MANY, sizeof *ids);
    rng_state = 777;
    make_centres(8);
    add_facts(f.mem, f.alice, "bulk", MANY - FEW, units, ids);
    add_facts(f.mem, f.alice, "rare", FEW, units + (size_t)(MANY - FEW) * DIM,
              ids + (MANY - FEW));

    seen s = {0};
    ds_pool *pool;
    ds_memory *mem;
    open_traced(&f, &s, &pool, &mem);
    float q[DIM];
    clustered(q, 8);
    s.n = 0;
    ds_memory_facts *hits = search(mem, f.alice, q, 10, NULL);
    ck_assert_uint_eq(hits->count, 10);
    ds_memory_facts_free(hits);
    ck_assert(ran(&s, "memory.small_sketches"));
    ck_assert(ran(&s, "memory.codes"));
    ck_assert_str_eq(s.names[s.n - 2], "memory.rows");
    ck_assert_str_eq(s.names[s.n - 1], "memory.commit");

    /* the kind filter leaves 20 facts: the exact scan, exact answers */
    s.n = 0;
    ds_memory_search_options o = DS_MEMORY_SEARCH_OPTIONS_INIT;
    o.kind = "rare";
    hits = search(mem, f.alice, q, 5, &o);
    int64_t want[5];
    size_t n = exact_top(units + (size_t)(MANY - FEW) * DIM,
                         ids + (MANY - FEW), FEW, q, 5, want);
    ck_assert_uint_eq(hits->count, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(hits->items[i]->id, want[i]);
    ds_memory_facts_free(hits);
    ck_assert(!ran(&s, "memory.codes"));
    ck_assert_int_eq(s.n, 4);

    /* a clustered user below the limit reads its lists */
    float *cu = calloc((size_t)CLUSTERED * DIM, sizeof *cu);
    int64_t *cids = calloc(CLUSTERED, sizeof *cids);
    add_facts(f.mem, f.bob, NULL, CLUSTERED, cu, cids);
    ds_memory_maintain_options mo = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    mo.user_id = f.bob;
    mo.min_facts = 100;
    size_t clustered_users = 0;
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_maintain(mem, &mo, &clustered_users, &err), err);
    ck_assert_uint_eq(clustered_users, 1);
    s.n = 0;
    hits = search(mem, f.bob, q, 10, NULL);
    ck_assert_uint_eq(hits->count, 10);
    ds_memory_facts_free(hits);
    ck_assert(ran(&s, "memory.ivf.lists"));
    ck_assert(!ran(&s, "memory.fallback.candidates"));
    ck_assert(!ran(&s, "memory.pgvector.candidates"));

    ds_memory_close(mem);
    ds_pool_close(pool);
    free(units);
    free(ids);
    free(cu);
    free(cids);
    fx_close(&f);
}
END_TEST

/* VACUUM ANALYZE memory_facts until every page is all-visible, which the
 * planner's cost of an index-only scan counts on. VACUUM marks a page only
 * when no snapshot still open in the database can miss its rows, and a new
 * database's first autovacuum visit ANALYZEs its tables (catalogs too),
 * each under a snapshot: one taken before the last facts were written
 * left their pages unmarked, now and then. Fails (after 30 s) if the
 * pages never all become visible. */
static void vacuum_until_all_visible(const char *url) {
    long long pages = -1, visible = -1;
    for (int tries = 0; tries < 300; tries++) {
        dt_sql(url, "VACUUM ANALYZE memory_facts");
        pages = dt_sql_int(url, "SELECT relpages FROM pg_class WHERE oid = "
                                "'memory_facts'::regclass");
        visible = dt_sql_int(url, "SELECT relallvisible FROM pg_class "
                                  "WHERE oid = 'memory_facts'::regclass");
        if (pages > 0 && visible >= pages)
            return;
        usleep(100 * 1000);
    }
    ck_abort_msg("memory_facts: %lld of %lld pages all-visible after 30 s "
                 "of VACUUM", visible, pages);
}

/* A user with half the table among many small users (the benchmark's
 * 50% tier): the server's custom plan for that user may read the whole
 * table, the prepared statement's generic plan, which a search settles
 * on, reads the user's index entries only. */
START_TEST(test_memory_small_sketches_plan_at_half_the_table) {
    fx f;
    if (!fx_open(&f, "test_memory_small_sketches_plan_at_half_the_table", _i))
        return;
    enum { N = 300 };
    float *units = calloc((size_t)N * DIM, sizeof *units);
    int64_t *ids = calloc(N, sizeof *ids);
    rng_state = 99;
    make_centres(8);
    add_facts(f.mem, f.alice, NULL, N, units, ids);
    dt_sql(f.url, "INSERT INTO users (email) SELECT 'u' || g || "
                  "'@example.org' FROM generate_series(1, 100) g");
    PGconn *c = PQconnectdb(f.url);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT id FROM users WHERE email LIKE 'u%' "
                            "ORDER BY id");
    ck_assert_int_eq(PQntuples(r), 100);
    for (int i = 0; i < N; i++) /* three facts each */
        add_facts(f.mem, atoll(PQgetvalue(r, i / 3, 0)), NULL, 1,
                  units + (size_t)i * DIM, ids + i);
    PQclear(r);
    vacuum_until_all_visible(f.url);
    const ds__stmt_def *def = &ds__memory_stmts[M_SMALL_SKETCHES];
    PQclear(PQexec(c, "SET plan_cache_mode = force_generic_plan"));
    r = PQprepare(c, "small", def->sql, def->nparams,
                            def->param_types);
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    char sql[128];
    snprintf(sql, sizeof sql,
             "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE small(%lld, NULL, 4001)",
             (long long)f.alice);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    bool index_only = false, seq = false;
    char plan[4096] = "";
    for (int i = 0; i < PQntuples(r); i++) {
        const char *line = PQgetvalue(r, i, 0);
        strncat(plan, line, sizeof plan - strlen(plan) - 2);
        strcat(plan, "\n");
        index_only |= strstr(line, "Index Only Scan") != NULL &&
                      strstr(line, "memory_ivf_lists") == NULL;
        seq |= strstr(line, "Seq Scan on memory_facts") != NULL;
    }
    PQclear(r);
    PQfinish(c);
    ck_assert_msg(index_only && !seq, "generic plan:\n%s", plan);
    free(units);
    free(ids);
    fx_close(&f);
}
END_TEST

/* ---- pipelines ----------------------------------------------------------------- */

static const ds__stmt_def pipe_ok = {"test.pipe_ok", "SELECT $1::int8 + 1",
                                     1, {DS_OID_INT8}, 1, {DS_OID_INT8}};
static const ds__stmt_def pipe_fails = {"test.pipe_fails",
                                        "SELECT 1 / ($1::int8 - $1::int8)",
                                        1, {DS_OID_INT8}, 1, {DS_OID_INT8}};
static const ds__stmt_def pipe_bad_sql = {"test.pipe_bad_sql",
                                          "SELEC 1", 0, {0}, 1, {0}};

/* A failure part-way names its statement, returns no result at all, skips
 * the rest, and leaves the connection usable; a statement that cannot be
 * prepared is not remembered as prepared. */
START_TEST(test_pipeline_failure_names_the_statement) {
    char *url = dt_migrated_db("pipe");
    ds_pool *pool = dt_pool(url, 1, 1);
    for (int round = 0; round < 2; round++) {
        ds_conn *c;
        ds_error err = {0};
        ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
        ds__bind a, b;
        ds__bind_init(&a);
        ds__bind_init(&b);
        ds__bind_int64(&a, 41);
        ds__bind_int64(&b, 7);
        ds__pipe_stmt ok[2] = {{&pipe_ok, &a, false, NULL},
                               {&pipe_ok, &b, true, NULL}};
        ck_assert_ds_ok(ds__stmt_run_pipeline(c, ok, 2, &err), err);
        ck_assert_int_eq(ds__memory_int8(ok[0].result, 0, 0), 42);
        ck_assert_int_eq(ds__memory_int8(ok[1].result, 0, 0), 8);
        PQclear(ok[0].result);
        PQclear(ok[1].result);

        ds__pipe_stmt bad[3] = {{&pipe_ok, &a, false, NULL},
                                {&pipe_fails, &b, false, NULL},
                                {&pipe_ok, &b, false, NULL}};
        memset(&err, 0, sizeof err);
        ck_assert_int_ne(ds__stmt_run_pipeline(c, bad, 3, &err), DS_OK);
        ck_assert_ptr_nonnull(strstr(err.message, "test.pipe_fails"));
        ck_assert_str_eq(err.sqlstate, "22012");
        for (int i = 0; i < 3; i++)
            ck_assert_ptr_null(bad[i].result);

        ds__pipe_stmt syntax[2] = {{&pipe_bad_sql, NULL, false, NULL},
                                   {&pipe_ok, &a, false, NULL}};
        memset(&err, 0, sizeof err);
        ck_assert_int_ne(ds__stmt_run_pipeline(c, syntax, 2, &err), DS_OK);
        ck_assert_ptr_nonnull(strstr(err.message, "test.pipe_bad_sql"));
        ck_assert_str_eq(err.sqlstate, "42601");

        /* the connection goes on, and so do its prepared statements */
        ck_assert_ds_ok(ds__stmt_run_pipeline(c, ok, 2, &err), err);
        ck_assert_int_eq(ds__memory_int8(ok[0].result, 0, 0), 42);
        PQclear(ok[0].result);
        PQclear(ok[1].result);
        PGresult *r = ds__stmt_run(c, &pipe_ok, &b, &err);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(ds__memory_int8(r, 0, 0), 8);
        PQclear(r);
        ds__bind_free(&a);
        ds__bind_free(&b);
        ds_pool_release(c);
    }
    ds_pool_stats st = DS_POOL_STATS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_stats_get(pool, &st, &err), err);
    ck_assert_uint_eq(st.discarded, 0);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_memory_trips_suite(void) {
    Suite *s = suite_create("memory_trips");
    TCase *tc = tcase_create("statements");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_memory_small_user_search_statements, 0, 2);
    tcase_add_loop_test(tc, test_memory_small_user_search_behind_a_pooler, 0,
                        2);
    tcase_add_loop_test(tc, test_memory_large_users_keep_their_stages, 0, 2);
    tcase_add_loop_test(tc, test_memory_small_sketches_plan_at_half_the_table,
                        0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pipeline_failure_names_the_statement);
    suite_add_tcase(s, tc);
    return s;
}
