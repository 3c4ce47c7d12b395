/* The hybrid search of a small user on both backends: its answer is the
 * reciprocal rank fusion of the exact vector list of the max(4k, 40) best
 * facts with the text list, fact for fact, score for score and rank for
 * rank, while it reads exact vectors only where the fused top k needs
 * them (fusion.c). Loop tests run once per backend. */
#include <stdlib.h>
#include <string.h>

#include "memory/memory_internal.h"
#include "memory_fixture.h"
#include "test_util.h"

#define FACTS 400
#define RRF 60.0

static const char *const words[] = {"apple", "banana", "cherry", "grape",
                                    "lemon", "mango",  "olive",  "peach"};
#define NWORDS (sizeof words / sizeof words[0])

/* A word, the first ones more often. */
static const char *some_word(void) {
    double u = uniform();
    return words[(size_t)(NWORDS * u * u) % NWORDS];
}

static void add_alice_and_bob(fx *f) {
    static float v[FACTS][DIM];
    static char text[FACTS][64];
    ds_memory_new_fact batch[FACTS];
    for (int i = 0; i < FACTS; i++) {
        clustered(v[i], 8);
        snprintf(text[i], sizeof text[i], "%s %s %s", some_word(),
                 some_word(), some_word());
        batch[i] = (ds_memory_new_fact){
            .size = sizeof(ds_memory_new_fact),
            /* bob owns one in eight, with the same words and vectors */
            .user_id = i % 8 == 7 ? f->bob : f->alice,
            .kind = i % 2 ? "note" : "fact",
            .content = text[i],
            .importance = 0.5,
            .embedding = v[i],
            .dim = DIM};
    }
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_add_batch(f->mem, batch, FACTS, NULL, &err),
                    err);
}

/* The text list: alice's facts matching `text` (websearch syntax, English
 * configuration) by ts_rank_cd, best first, ties by id; up to `n`. */
static size_t text_list(PGconn *c, int64_t user, const char *text,
                        const char *kind, size_t n, int64_t *ids) {
    char user_s[24], n_s[24];
    snprintf(user_s, sizeof user_s, "%lld", (long long)user);
    snprintf(n_s, sizeof n_s, "%zu", n);
    const char *params[4] = {user_s, text, kind, n_s};
    PGresult *r = PQexecParams(
        c,
        "WITH q AS (SELECT websearch_to_tsquery('english', $2) AS q) "
        "SELECT m.id FROM memory_facts m, q WHERE m.user_id = $1::int8 "
        "AND ($3::text IS NULL OR m.kind = $3) "
        "AND to_tsvector('english', m.content) @@ q.q "
        "ORDER BY ts_rank_cd(to_tsvector('english', m.content), q.q) DESC, "
        "m.id LIMIT $4::int",
        4, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s",
                  PQerrorMessage(c));
    size_t got = (size_t)PQntuples(r);
    for (size_t i = 0; i < got; i++)
        ids[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    return got;
}

typedef struct want {
    int64_t id;
    double score;
    int vr, tr;
} want;

static int want_cmp(const void *a, const void *b) {
    const want *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static uint64_t rescored(ds_memory *mem) {
    ds_memory_stats s = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_stats_get(mem, &s, &err), err);
    return s.rows_rescored;
}

/* One hybrid search checked against the fusion computed here from the
 * vector search of the n best and the text list; adds the exact vectors
 * each read to *hybrid_reads and *vector_reads. */
static void check_one(fx *f, PGconn *c, const float *q, const char *text,
                      int k, const ds_memory_search_options *o,
                      uint64_t *hybrid_reads, uint64_t *vector_reads) {
    size_t n = (size_t)(4 * k > 40 ? 4 * k : 40);
    uint64_t before = rescored(f->mem);
    ds_memory_facts *vec = search(f->mem, f->alice, q, (int)n, o);
    uint64_t mid = rescored(f->mem);
    *vector_reads += mid - before;
    int64_t tids[1000];
    size_t nt = text_list(c, f->alice, text, o ? o->kind : NULL, n, tids);

    want all[2000];
    size_t na = 0;
    for (size_t i = 0; i < vec->count; i++)
        all[na++] = (want){vec->items[i]->id, 0, (int)i + 1, 0};
    for (size_t t = 0; t < nt; t++) {
        size_t i = 0;
        while (i < na && all[i].id != tids[t])
            i++;
        if (i == na)
            all[na++] = (want){tids[t], 0, 0, 0};
        all[i].tr = (int)t + 1;
    }
    for (size_t i = 0; i < na; i++) {
        double s = 0;
        if (all[i].vr)
            s += 1.0 / (RRF + all[i].vr);
        if (all[i].tr)
            s += 1.0 / (RRF + all[i].tr);
        all[i].score = s;
    }
    qsort(all, na, sizeof *all, want_cmp);
    ds_memory_facts_free(vec);

    ds_memory_facts *hy = NULL;
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_search_hybrid(f->mem, f->alice, text, q, DIM, k,
                                            o, &hy, &err),
                    err);
    *hybrid_reads += rescored(f->mem) - mid;
    size_t expect = na < (size_t)k ? na : (size_t)k;
    ck_assert_uint_eq(hy->count, expect);
    for (size_t i = 0; i < expect; i++) {
        const ds_memory_fact *h = hy->items[i];
        ck_assert_int_eq(h->id, all[i].id);
        ck_assert_double_eq_tol(h->score, all[i].score, 1e-15);
        ck_assert_int_eq(h->vector_rank, all[i].vr);
        ck_assert_int_eq(h->text_rank, all[i].tr);
        ck_assert_int_eq(h->user_id, f->alice);
        ck_assert_ptr_nonnull(h->content);
        ck_assert_uint_gt(strlen(h->content), 0);
    }
    ds_memory_facts_free(hy);
}

START_TEST(test_memory_hybrid_matches_fusion_of_both_lists) {
    fx f;
    if (!fx_open(&f, "test_memory_hybrid_matches_fusion_of_both_lists", _i))
        return;
    rng_state = 4242;
    make_centres(8);
    add_alice_and_bob(&f);
    PGconn *c = dt_connect(f.url);
    uint64_t hybrid_reads = 0, vector_reads = 0;
    char text[64];
    float q[DIM];
    ds_memory_search_options none = {.size = sizeof none};
    ds_memory_search_options notes = {.size = sizeof notes, .kind = "note"};
    ds_memory_search_options close = {.size = sizeof close,
                                      .use_min_similarity = true,
                                      .min_similarity = 0.45};
    for (int t = 0; t < 12; t++) {
        clustered(q, 8);
        snprintf(text, sizeof text, "%s", some_word());
        check_one(&f, c, q, text, 10, &none, &hybrid_reads, &vector_reads);
        snprintf(text, sizeof text, "%s %s", some_word(), some_word());
        check_one(&f, c, q, text, 10, &none, &hybrid_reads, &vector_reads);
        check_one(&f, c, q, some_word(), 5, &notes, &hybrid_reads,
                  &vector_reads);
        check_one(&f, c, q, some_word(), 10, &close, &hybrid_reads,
                  &vector_reads);
        check_one(&f, c, q, some_word(), 15, NULL, &hybrid_reads,
                  &vector_reads);
        /* no text match: the vector order alone */
        check_one(&f, c, q, "zebra", 3, NULL, &hybrid_reads, &vector_reads);
    }
    /* the same answers from fewer exact vectors than the vector list of
     * the n best reads */
    ck_assert_uint_gt(hybrid_reads, 0);
    ck_assert_uint_lt(hybrid_reads, vector_reads);

    /* Text that matches nothing: the fused top k is the vector top k, and
     * the hybrid search reads the very exact vectors the vector search of
     * k reads, not those of the n best. */
    for (int t = 0; t < 8; t++) {
        clustered(q, 8);
        uint64_t r0 = rescored(f.mem);
        ds_memory_facts *vec = search(f.mem, f.alice, q, 10, NULL);
        uint64_t r1 = rescored(f.mem);
        ds_memory_facts *hy = NULL;
        ds_error err = {0};
        ck_assert_ds_ok(ds_memory_search_hybrid(f.mem, f.alice, "zebra", q,
                                                DIM, 10, NULL, &hy, &err),
                        err);
        ck_assert_uint_eq(rescored(f.mem) - r1, r1 - r0);
        ck_assert_uint_eq(hy->count, vec->count);
        for (size_t i = 0; i < hy->count; i++) {
            ck_assert_int_eq(hy->items[i]->id, vec->items[i]->id);
            ck_assert_int_eq(hy->items[i]->vector_rank, (int)i + 1);
        }
        ds_memory_facts_free(vec);
        ds_memory_facts_free(hy);
    }
    PQfinish(c);
    fx_close(&f);
}
END_TEST

/* Plans chosen for the prepared text statement on the pool's one
 * connection (one per execution, or per EXPLAIN of it), 0 when it is not
 * prepared there. */
static int64_t text_statement_runs(ds_pool *pool) {
    ds_sql_result *res = NULL;
    ds_error err = {0};
    ck_assert_ds_ok(ds_sql_exec_pool(pool,
                                     "SELECT coalesce(sum(generic_plans + "
                                     "custom_plans), 0)::int8 FROM "
                                     "pg_prepared_statements WHERE "
                                     "statement LIKE '%ts_rank_cd%' AND "
                                     "statement NOT LIKE '%pg_prepared%'",
                                     NULL, 0, &res, &err),
                    err);
    int64_t runs = 0;
    ck_assert_ds_ok(ds_sql_result_int64(res, 0, 0, &runs, &err), err);
    ds_sql_result_free(res);
    return runs;
}

/* A user the handle saw small gets the text statement prepared (its
 * generic plan ANDs the user's few index entries, and planning it every
 * time cost more than running it); a user not seen small, or seen large,
 * gets it unnamed, planned for its words every time. */
START_TEST(test_memory_hybrid_text_statement_prepared_for_small_users) {
    fx f;
    if (!fx_open(&f, "test_memory_hybrid_text_statement_prepared_for_small_"
                     "users",
                 _i))
        return;
    rng_state = 77;
    make_centres(8);
    add_alice_and_bob(&f);
    float q[DIM];
    clustered(q, 8);
    for (int crossover = 0; crossover <= 1; crossover++) {
        /* crossover 0: nobody is scanned as a small user */
        ds_config *cfg = dt_config(f.url, 1, 1);
        ds_error err = {0};
        ck_assert_ds_ok(ds_config_set_int(cfg, "memory_code_crossover",
                                          crossover, &err),
                        err);
        ds_pool *pool = NULL;
        ck_assert_ds_ok(ds_pool_open(cfg, &pool, &err), err);
        ds_memory *mem = NULL;
        ck_assert_ds_ok(ds_memory_open(pool, cfg, &mem, &err), err);
        ds_config_free(cfg);
        int64_t before = text_statement_runs(pool);
        for (int t = 0; t < 8; t++) {
            ds_memory_facts *hy = NULL;
            ck_assert_ds_ok(ds_memory_search_hybrid(mem, f.alice, some_word(),
                                                    q, DIM, 10, NULL, &hy,
                                                    &err),
                            err);
            ck_assert_uint_gt(hy->count, 0);
            ds_memory_facts_free(hy);
        }
        /* the first search learnt the size; the seven after it ran the
         * prepared statement, or none did */
        ck_assert_int_eq(text_statement_runs(pool) - before,
                         crossover ? 7 : 0);
        ds_memory_close(mem);
        ds_pool_close(pool);
    }
    fx_close(&f);
}
END_TEST

Suite *ds_test_memory_hybrid_suite(void) {
    Suite *s = suite_create("memory_hybrid");
    TCase *tc = tcase_create("fusion");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_memory_hybrid_matches_fusion_of_both_lists, 0,
                        2);
    tcase_add_loop_test(tc,
                        test_memory_hybrid_text_statement_prepared_for_small_users,
                        0, 2);
    suite_add_tcase(s, tc);
    return s;
}
