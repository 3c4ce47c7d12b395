/* The memory store's searches on both backends: ordering and user
 * isolation, hybrid ranking, the fallback's sketches, the two backends
 * agreeing, recall on clustered data, and read-your-writes through a
 * replica. Loop tests run once per backend, as in check_memory.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory/memory_internal.h"
#include "clustered.h"
#include "memory_fixture.h"
#include "test_util.h"

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

/* memory_code_crossover chooses the stage: at 0 a user of 2,200 facts
 * takes the coarse codes (the sketches of their 1,000 candidates are read),
 * at 100 and at the default (4 times the 1,000 candidates) the exact scan
 * reads all 2,200; the answer is the exact top 10 either way. */
enum { CC_FACTS = 2200 };

static uint64_t sketches_read(ds_memory *mem, int64_t user, const float *q,
                              const int64_t *want) {
    ds_memory_stats before = DS_MEMORY_STATS_INIT, after = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_stats_get(mem, &before, &err), err);
    ds_memory_facts *hits = NULL;
    ds_status st = ds_memory_search(mem, user, q, DIM, 10, NULL, &hits, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hits->count, 10);
    for (size_t j = 0; j < 10; j++)
        ck_assert_int_eq(hits->items[j]->id, want[j]);
    ds_memory_facts_free(hits);
    ck_assert_ds_ok(ds_memory_stats_get(mem, &after, &err), err);
    return after.rows_scanned - before.rows_scanned;
}

START_TEST(test_memory_code_crossover_setting_chooses_the_stage) {
    fx f;
    if (!fx_open(&f, "test_memory_code_crossover_setting_chooses_the_stage",
                 _i))
        return;
    cl_model m;
    ck_assert(cl_model_init(&m, DIM, 50, 11));
    cl_user prof;
    cl_user_init(&m, &prof);
    float *v = malloc((size_t)CC_FACTS * DIM * sizeof *v);
    int64_t *ids = calloc(CC_FACTS, sizeof *ids);
    ds_memory_new_fact *batch = calloc(CC_FACTS, sizeof *batch);
    for (size_t i = 0; i < CC_FACTS; i++) {
        cl_fact(&m, &prof, v + i * DIM);
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = f.alice,
                                        .content = "crossover",
                                        .embedding = v + i * DIM,
                                        .dim = DIM};
    }
    ds_error err = {0};
    ck_assert_ds_ok(ds_memory_add_batch(f.mem, batch, CC_FACTS, ids, &err),
                    err);
    float q[DIM];
    cl_query(&m, &prof, q, NULL);
    size_t idx[10];
    double scores[10];
    ck_assert_uint_eq(cl_exact_topk(v, CC_FACTS, DIM, NULL, q, 10, idx, scores),
                      10);
    int64_t want[10];
    for (size_t j = 0; j < 10; j++)
        want[j] = ids[idx[j]];
    /* out of range: the configuration refuses it, naming the variable */
    ds_config *cfg = dt_config(f.url, 1, 4);
    ck_assert_int_eq(ds_config_set_int(cfg, "memory_code_crossover", 101, &err),
                     DS_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_MEMORY_CODE_CROSSOVER"));
    ck_assert_int_eq(ds_config_set_int(cfg, "memory_code_crossover", -1, &err),
                     DS_ERR_CONFIG);
    static const int64_t settings[] = {0, 100};
    uint64_t read[2];
    for (size_t s = 0; s < 2; s++) {
        ck_assert_ds_ok(ds_config_set_int(cfg, "memory_code_crossover",
                                          settings[s], &err),
                        err);
        ds_memory *mem = NULL;
        ck_assert_ds_ok(ds_memory_open(f.pool, cfg, &mem, &err), err);
        read[s] = sketches_read(mem, f.alice, q, want);
        ds_memory_close(mem);
    }
    ds_config_free(cfg);
    /* the codes keep 1,000 candidates (more only on tied scores) */
    ck_assert_uint_ge(read[0], 1000);
    ck_assert_uint_le(read[0], 1100);
    ck_assert_uint_eq(read[1], CC_FACTS);
    /* the default handle: 2,200 facts are under 4 times the candidates */
    ck_assert_uint_eq(sketches_read(f.mem, f.alice, q, want), CC_FACTS);
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

/* Read your writes: with the local replica's replay paused, a search
 * routed to replicas misses a fact added a moment ago, and the same search
 * with the read token taken after the add finds it (from the primary); the
 * same for the hybrid search. */
START_TEST(test_memory_search_with_read_token_sees_a_new_fact) {
    fx f;
    if (!fx_open(&f, "test_memory_search_with_read_token_sees_a_new_fact", 0))
        return;
    /* The database can reach the replica before its tables do: wait for the
     * table, then for the fixture's rows. */
    char *replica = dt_replica_when_ready(
        f.url, "SELECT (to_regclass('users') IS NOT NULL)::int");
    free(replica);
    replica = dt_replica_when_ready(f.url,
                                    "SELECT (count(*) >= 2)::int FROM users");
    ds_config *cfg = dt_config(f.url, 1, 3);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "DATABASE_REPLICA_URLS", replica, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ds_memory *mem = open_mem(pool, f.url, -1);

    dt_replica_pause_replay(replica);
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
    fx_close(&f);
}
END_TEST

Suite *ds_test_memory_search_suite(void) {
    Suite *s = suite_create("memory_search");
    TCase *tc = tcase_create("search");
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
    tcase_add_loop_test(tc, test_memory_code_crossover_setting_chooses_the_stage,
                        0, 2);
    suite_add_tcase(s, tc);
    return s;
}
