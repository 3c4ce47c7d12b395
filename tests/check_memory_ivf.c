/* Large users' lists (sql/0008_memory_ivf_lists, src/memory/ivf.c) on both
 * backends: recall against an exact scan in C for a clustered user (the
 * threshold lowered through ds_memory_maintain's min_facts, so the data
 * stays small), facts added after clustering found at once, deleted facts
 * gone, filters, a user below the threshold unchanged, re-clustering,
 * progress and cancellation, bad arguments.
 *
 * Loop tests run once per backend: _i == 0 the fallback, _i == 1 pgvector
 * (skipped, with the reason, where the server has no pgvector). */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory_clustered.h"
#include "test_util.h"
#include "datastore/datastore.h"

#define DIM 384
#define K 10
enum { TOTAL = 4000, DENSE = TOTAL * 7 / 10, MIN_FACTS = 1000, QUERIES = 40 };

typedef struct ivf_fx {
    char *url;
    ds_pool *pool;
    ds_memory *mem;
    int64_t dense, sparse, filler;
    cl_model m;
    cl_user prof[3];
    float *v;          /* TOTAL x DIM, then room for added facts */
    int64_t *owner, *id;
    bool *is_note, *gone;
    size_t n;          /* facts in v */
} ivf_fx;

static const char *backend_of(int i) { return i ? "pgvector" : "fallback"; }

/* A migrated database with three users, their clustered facts interleaved,
 * and the dense user clustered (MIN_FACTS). false: backend unavailable. */
static bool ivf_open(ivf_fx *f, const char *test, int backend, bool cluster) {
    memset(f, 0, sizeof *f);
    if (backend == 1 && dt_skip_without_pgvector(test))
        return false;
    f->url = dt_migrated_db_backend("ivf", backend_of(backend));
    dt_sql(f->url, "INSERT INTO users (email) VALUES ('dense@example.org'), "
                   "('sparse@example.org'), ('filler@example.org')");
    f->dense = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'dense%'");
    f->sparse = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'sparse%'");
    f->filler = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'filler%'");
    f->pool = dt_pool(f->url, 1, 4);
    ds_error err = {0};
    ds_config *cfg = dt_config(f->url, 1, 4);
    ds_status st = ds_memory_open(f->pool, cfg, &f->mem, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ck_assert(cl_model_init(&f->m, DIM, 200, 20261207));
    for (int u = 0; u < 3; u++)
        cl_user_init(&f->m, &f->prof[u]);
    size_t cap = TOTAL + 200;
    f->v = malloc(cap * DIM * sizeof *f->v);
    f->owner = malloc(cap * sizeof *f->owner);
    f->id = calloc(cap, sizeof *f->id);
    f->is_note = calloc(cap, sizeof *f->is_note);
    f->gone = calloc(cap, sizeof *f->gone);
    /* interleaved: 7 in 10 dense, 1 sparse, 2 filler */
    static const int pattern[10] = {0, 0, 0, 0, 0, 0, 0, 1, 2, 2};
    const int64_t users[3] = {f->dense, f->sparse, f->filler};
    mc_add_clustered(f->mem, &f->m, f->prof, users, pattern, 10, TOTAL,
                     "clustered fact", f->v, f->owner, f->id, f->is_note);
    f->n = TOTAL;
    if (cluster) {
        ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
        o.min_facts = MIN_FACTS;
        size_t done = 0;
        st = ds_memory_maintain(f->mem, &o, &done, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(done, 1); /* the dense user only */
    }
    dt_sql(f->url, "VACUUM ANALYZE memory_facts");
    return true;
}

static void ivf_close(ivf_fx *f) {
    ds_memory_close(f->mem);
    ds_pool_close(f->pool);
    cl_model_free(&f->m);
    free(f->v);
    free(f->owner);
    free(f->id);
    free(f->is_note);
    free(f->gone);
    dt_drop_db(f->url);
    free(f->url);
}

static int64_t facts_of(const ivf_fx *f, int64_t user) {
    int64_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        n += f->owner[i] == user && !f->gone[i];
    return n;
}

typedef struct recall {
    double sum, worst;
    int queries;
} recall;

/* One search checked against the exact top k in C: never fewer than
 * min(k, facts that pass the filters), only the user's facts, filters
 * respected; recall accumulated. */
static void check(ivf_fx *f, int64_t user, const float *q,
                  const ds_memory_search_options *o, recall *rs) {
    bool *keep = malloc(f->n * sizeof *keep);
    double floor_sim = o && o->use_min_similarity ? o->min_similarity : -2;
    for (size_t i = 0; i < f->n; i++)
        keep[i] = f->owner[i] == user && !f->gone[i] &&
                  (!o || !o->kind || f->is_note[i]);
    size_t idx[K];
    double scores[K];
    size_t want = cl_exact_topk(f->v, f->n, DIM, keep, q, K, idx, scores);
    while (want > 0 && scores[want - 1] < floor_sim)
        want--;
    ds_memory_facts *hits = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_search(f->mem, user, q, DIM, K, o, &hits, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hits->count, want);
    int found = 0;
    for (size_t i = 0; i < hits->count; i++) {
        const ds_memory_fact *h = hits->items[i];
        ck_assert_int_eq(h->user_id, user);
        if (o && o->kind)
            ck_assert_str_eq(h->kind, o->kind);
        ck_assert(h->score >= floor_sim - 1e-6);
        for (size_t j = 0; j < want; j++)
            found += h->id == f->id[idx[j]];
    }
    double r = want ? found / (double)want : 1.0;
    if (r < 1)
        printf("recall %.2f kind %s min %.2f want %zu kth %.3f\n", r,
               o && o->kind ? o->kind : "-", floor_sim, want,
               want ? scores[want - 1] : 0.0);
    rs->sum += r;
    rs->worst = rs->queries == 0 || r < rs->worst ? r : rs->worst;
    rs->queries++;
    ds_memory_facts_free(hits);
    free(keep);
}

static uint64_t rows_scanned(ds_memory *mem) {
    ds_memory_stats s = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    ds_status st = ds_memory_stats_get(mem, &s, &err);
    ck_assert_ds_ok(st, err);
    return s.rows_scanned;
}

/* ---- recall and the lists ------------------------------------------------ */

START_TEST(test_memory_ivf_recall_against_exact_scan) {
    ivf_fx f;
    if (!ivf_open(&f, "test_memory_ivf_recall_against_exact_scan", _i, true))
        return;
    /* lists for the dense user only, about sqrt(facts), every fact in one */
    long long lists = dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists");
    ck_assert_int_ge(lists, 40);
    ck_assert_int_le(lists, 70);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT user_id) FROM "
                              "memory_ivf_lists WHERE user_id = %lld",
             (long long)f.dense);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(DISTINCT user_id) FROM "
                                       "memory_ivf_lists"),
                     1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_facts WHERE "
                              "user_id = %lld AND list_id IS NULL",
             (long long)f.dense);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 0);

    recall all = {0}, on_topic = {0};
    uint64_t on_scanned = 0;
    int on_queries = 0;
    int64_t dense_facts = facts_of(&f, f.dense);
    for (int qi = 0; qi < QUERIES; qi++) {
        float q[DIM];
        bool on;
        cl_query(&f.m, &f.prof[0], q, &on);
        uint64_t before = rows_scanned(f.mem);
        check(&f, f.dense, q, NULL, on ? &on_topic : &all);
        if (on) {
            on_scanned += rows_scanned(f.mem) - before;
            on_queries++;
        }
        ds_memory_search_options o = DS_MEMORY_SEARCH_OPTIONS_INIT;
        o.kind = "note";
        check(&f, f.dense, q, &o, &all);
        o = (ds_memory_search_options)DS_MEMORY_SEARCH_OPTIONS_INIT;
        o.use_min_similarity = true;
        o.min_similarity = 0.45;
        check(&f, f.dense, q, &o, &all);
    }
    /* the user below the threshold: exact as ever */
    for (int qi = 0; qi < 10; qi++) {
        float q[DIM];
        cl_query(&f.m, &f.prof[1], q, NULL);
        recall sparse = {0};
        check(&f, f.sparse, q, NULL, &sparse);
        ck_assert_double_eq(sparse.worst, 1.0);
    }
    all.sum += on_topic.sum;
    all.queries += on_topic.queries;
    if (on_topic.worst < all.worst || all.queries == on_topic.queries)
        all.worst = on_topic.worst < all.worst ? on_topic.worst : all.worst;
    double mean = all.sum / all.queries;
    printf("test_memory_ivf_recall_against_exact_scan (%s): %d searches, "
           "recall@10 mean %.4f, worst %.3f; on-topic searches read %.0f of "
           "%lld sketches on average\n",
           backend_of(_i), all.queries, mean, all.worst,
           on_queries ? (double)on_scanned / on_queries : 0.0,
           (long long)dense_facts);
    ck_assert_msg(mean >= 0.99, "recall@10 mean %.4f < 0.99", mean);
    ck_assert_msg(all.worst >= 0.9, "a query had recall@10 %.3f < 0.9",
                  all.worst);
    /* the lists did the work: an on-topic search read a fraction of the
     * user's sketches (the full search reads all of them) */
    ck_assert_int_gt(on_queries, 0);
    ck_assert_msg(on_scanned / (uint64_t)on_queries < (uint64_t)dense_facts / 3,
                  "on-topic searches read %llu sketches of %lld on average",
                  (unsigned long long)(on_scanned / (uint64_t)on_queries),
                  (long long)dense_facts);
    ivf_close(&f);
}
END_TEST

/* Facts added after clustering join a list at once and are found; a fact
 * without a list, or whose list is gone, is still found; a deleted fact is
 * not. */
START_TEST(test_memory_ivf_new_unlisted_and_deleted_facts) {
    ivf_fx f;
    if (!ivf_open(&f, "test_memory_ivf_new_unlisted_and_deleted_facts", _i,
                  true))
        return;
    ds_error err = {0};
    /* new facts, each a query of the user's topics */
    enum { NEW = 20 };
    ds_memory_new_fact batch[NEW];
    for (int i = 0; i < NEW; i++) {
        size_t at = f.n + (size_t)i;
        cl_query(&f.m, &f.prof[0], f.v + at * DIM, NULL);
        f.owner[at] = f.dense;
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = f.dense,
                                        .content = "added later",
                                        .embedding = f.v + at * DIM,
                                        .dim = DIM};
    }
    ds_status st = ds_memory_add_batch(f.mem, batch, NEW, f.id + f.n, &err);
    ck_assert_ds_ok(st, err);
    size_t first_new = f.n;
    f.n += NEW;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_facts WHERE "
                              "id >= %lld AND list_id IS NOT NULL",
             (long long)f.id[first_new]);
    ck_assert_int_eq(dt_sql_int(f.url, sql), NEW); /* assigned at insert */
    /* a single add too */
    size_t at = f.n;
    cl_query(&f.m, &f.prof[0], f.v + at * DIM, NULL);
    f.owner[at] = f.dense;
    ds_memory_new_fact one = DS_MEMORY_NEW_FACT_INIT;
    one.user_id = f.dense;
    one.content = "one more";
    one.embedding = f.v + at * DIM;
    one.dim = DIM;
    st = ds_memory_add(f.mem, &one, &f.id[at], &err);
    ck_assert_ds_ok(st, err);
    f.n++;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_facts WHERE "
                              "id = %lld AND list_id IS NOT NULL",
             (long long)f.id[at]);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 1);
    /* two new facts lose their list: none, and one that does not exist */
    snprintf(sql, sizeof sql, "UPDATE memory_facts SET list_id = NULL WHERE "
                              "id = %lld", (long long)f.id[first_new]);
    dt_sql(f.url, sql);
    snprintf(sql, sizeof sql, "UPDATE memory_facts SET list_id = 2000000000 "
                              "WHERE id = %lld", (long long)f.id[first_new + 1]);
    dt_sql(f.url, sql);
    /* each new fact is the top result of a search by its own vector */
    for (size_t i = first_new; i < f.n; i++) {
        ds_memory_facts *hits = NULL;
        st = ds_memory_search(f.mem, f.dense, f.v + i * DIM, DIM, K, NULL,
                              &hits, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(hits->count, K);
        ck_assert_int_eq(hits->items[0]->id, f.id[i]);
        ck_assert_double_eq_tol(hits->items[0]->score, 1.0, 1e-4);
        ds_memory_facts_free(hits);
    }
    /* deleted facts are gone, the rest of the answer exact */
    recall rs = {0};
    for (size_t i = first_new; i < first_new + 5; i++) {
        st = ds_memory_delete(f.mem, f.dense, f.id[i], &err);
        ck_assert_ds_ok(st, err);
        f.gone[i] = true;
        check(&f, f.dense, f.v + i * DIM, NULL, &rs);
    }
    ck_assert_double_eq(rs.worst, 1.0);
    /* maintain gives the facts without a usable list their nearest */
    ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    o.min_facts = MIN_FACTS;
    size_t done = 9;
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(done, 0); /* nothing to re-cluster */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_facts f WHERE "
                              "user_id = %lld AND NOT EXISTS (SELECT 1 FROM "
                              "memory_ivf_lists l WHERE l.user_id = f.user_id "
                              "AND l.list_id = f.list_id)",
             (long long)f.dense);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 0);
    /* a batch of several users: only the clustered user's facts join
     * lists, and only lists of their own user */
    enum { MIXED = 9 };
    ds_memory_new_fact mixed[MIXED];
    size_t first_mixed = f.n;
    for (int i = 0; i < MIXED; i++) {
        size_t k = f.n + (size_t)i;
        int who = i % 3;
        f.owner[k] = who == 0 ? f.dense : who == 1 ? f.sparse : f.filler;
        cl_query(&f.m, &f.prof[who], f.v + k * DIM, NULL);
        mixed[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = f.owner[k],
                                        .content = "mixed batch",
                                        .embedding = f.v + k * DIM,
                                        .dim = DIM};
    }
    st = ds_memory_add_batch(f.mem, mixed, MIXED, f.id + f.n, &err);
    ck_assert_ds_ok(st, err);
    f.n += MIXED;
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM memory_facts f WHERE id >= %lld AND "
             "EXISTS (SELECT 1 FROM memory_ivf_lists l WHERE l.user_id = "
             "f.user_id AND l.list_id = f.list_id)",
             (long long)f.id[first_mixed]);
    ck_assert_int_eq(dt_sql_int(f.url, sql), MIXED / 3);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM memory_facts WHERE id >= %lld AND "
             "user_id <> %lld AND list_id IS NULL",
             (long long)f.id[first_mixed], (long long)f.dense);
    ck_assert_int_eq(dt_sql_int(f.url, sql), MIXED - MIXED / 3);
    ivf_close(&f);
}
END_TEST

/* ---- maintenance ---------------------------------------------------------- */

typedef struct progress_log {
    int events, stop_after;
    int64_t last_done;
    bool monotonic, sane;
} progress_log;

static int on_progress(void *ud, const ds_progress *p) {
    progress_log *l = ud;
    if (l->events == 0) {
        l->monotonic = l->sane = true;
        l->last_done = 0;
    }
    l->events++;
    l->sane &= strcmp(p->operation, "memory_maintain") == 0 &&
               strcmp(p->phase, "assign") == 0 &&
               strcmp(p->unit, "facts") == 0 && p->done <= p->total &&
               strncmp(p->item, "user ", 5) == 0;
    l->monotonic &= p->done >= l->last_done || p->done <= 1000;
    l->last_done = p->done;
    return l->stop_after && l->events >= l->stop_after;
}

START_TEST(test_memory_ivf_maintain_progress_cancel_and_rebuild) {
    ivf_fx f;
    if (!ivf_open(&f, "test_memory_ivf_maintain_progress_cancel_and_rebuild",
                  _i, false))
        return;
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists"),
                     0);
    ds_error err = {0};
    ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    o.min_facts = MIN_FACTS;
    o.progress = on_progress;
    progress_log log = {.stop_after = 1};
    o.progress_ud = &log;
    /* stopped after the first batch: lists written, some facts moved */
    size_t done = 0;
    ds_status st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_int_eq(st, DS_ERR_CANCELLED);
    ck_assert_int_eq(err.code, DS_ERR_CANCELLED);
    ck_assert_int_eq(log.events, 1);
    /* searches stay right half-way */
    recall rs = {0};
    for (int qi = 0; qi < 10; qi++) {
        float q[DIM];
        cl_query(&f.m, &f.prof[0], q, NULL);
        check(&f, f.dense, q, NULL, &rs);
    }
    ck_assert(rs.sum / rs.queries >= 0.99);
    /* again, to the end: the lists of the stopped run stay, the facts it
     * did not reach join them */
    log = (progress_log){0};
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(log.events >= 2);
    ck_assert(log.sane);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_facts f WHERE "
                              "user_id = %lld AND NOT EXISTS (SELECT 1 FROM "
                              "memory_ivf_lists l WHERE l.user_id = f.user_id "
                              "AND l.list_id = f.list_id)",
             (long long)f.dense);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 0);
    long long lists = dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists");
    long long top = dt_sql_int(f.url, "SELECT max(list_id) FROM memory_ivf_lists");
    /* a forced rebuild: new ids above the old, the old lists gone */
    o.rebuild = true;
    o.reindex = true;
    o.progress = NULL;
    long long index_before = dt_sql_int(f.url, "SELECT c.oid FROM pg_class c "
                                               "WHERE relname = "
                                               "'memory_facts_ivf_idx'");
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(done, 1);
    /* rebuilt: a new, valid index of the same name */
    ck_assert_int_ne(dt_sql_int(f.url, "SELECT c.oid FROM pg_class c WHERE "
                                       "relname = 'memory_facts_ivf_idx'"),
                     index_before);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM pg_index i JOIN "
                                       "pg_class c ON c.oid = i.indexrelid "
                                       "WHERE c.relname = "
                                       "'memory_facts_ivf_idx' AND "
                                       "i.indisvalid"),
                     1);
    o.reindex = false;
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists"),
                     lists);
    snprintf(sql, sizeof sql, "SELECT (min(list_id) > %lld)::int FROM memory_ivf_lists",
             top);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_facts f "
                                       "WHERE list_id IS NOT NULL AND NOT "
                                       "EXISTS (SELECT 1 FROM memory_ivf_lists "
                                       "l WHERE l.user_id = f.user_id AND "
                                       "l.list_id = f.list_id)"),
                     0);
    /* only one user, by id */
    o.rebuild = true;
    o.user_id = f.sparse;
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(done, 0); /* below min_facts */
    /* a user who fell below half the threshold loses the lists */
    o.user_id = 0;
    o.rebuild = false;
    o.min_facts = 3 * DENSE;
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists"),
                     0);
    rs = (recall){0};
    for (int qi = 0; qi < 5; qi++) {
        float q[DIM];
        cl_query(&f.m, &f.prof[0], q, NULL);
        check(&f, f.dense, q, NULL, &rs);
    }
    ck_assert_double_eq(rs.worst, 1.0);
    /* a user with lists and no fact left loses them too */
    o.min_facts = MIN_FACTS;
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(done, 1);
    snprintf(sql, sizeof sql, "DELETE FROM memory_facts WHERE user_id = %lld",
             (long long)f.dense);
    dt_sql(f.url, sql);
    st = ds_memory_maintain(f.mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM memory_ivf_lists"),
                     0);
    ivf_close(&f);
}
END_TEST

START_TEST(test_memory_ivf_errors) {
    ds_error err = {0};
    size_t done = 7;
    ck_assert_int_eq(ds_memory_maintain(NULL, NULL, &done, &err),
                     DS_ERR_INVALID);
    ck_assert_uint_eq(done, 0);
    ds_memory_maintain_options_init(NULL); /* a no-op */
    char *url = dt_migrated_db_backend("ivf_err", "fallback");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_memory *mem = NULL;
    ds_status st = ds_memory_open(pool, NULL, &mem, &err);
    ck_assert_ds_ok(st, err);
    ds_memory_maintain_options o = {0}; /* size 0: refused */
    ck_assert_int_eq(ds_memory_maintain(mem, &o, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "size"));
    ds_memory_maintain_options_init(&o);
    o.min_facts = -1;
    ck_assert_int_eq(ds_memory_maintain(mem, &o, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "min_facts"));
    o.min_facts = 0;
    o.user_id = -5;
    ck_assert_int_eq(ds_memory_maintain(mem, &o, NULL, &err), DS_ERR_INVALID);
    /* nothing to do on an empty database */
    o.user_id = 0;
    done = 7;
    st = ds_memory_maintain(mem, &o, &done, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(done, 0);
    ds_memory_close(mem);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_memory_ivf_suite(void) {
    Suite *s = suite_create("memory_ivf");
    TCase *tc = tcase_create("recall");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_memory_ivf_recall_against_exact_scan, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("facts");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_memory_ivf_new_unlisted_and_deleted_facts, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("maintain");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_memory_ivf_maintain_progress_cancel_and_rebuild, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_memory_ivf_errors);
    suite_add_tcase(s, tc);
    return s;
}
