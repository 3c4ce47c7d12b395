/* Packed codes (sql/0009_memory_code_blocks, src/memory/blocks.c) on both
 * backends: a large user's full search from its blocks against an exact
 * scan in C (recall, never fewer than min(k, matching), only the user's
 * facts, kind and similarity filters), facts added after the packing found,
 * deleted ones not returned, a damaged block ignored, and what
 * ds_memory_maintain() packs, repacks and drops. The user's lists are
 * removed after maintenance, so that every search takes the full search.
 *
 * Loop tests run once per backend: _i == 0 the fallback, _i == 1 pgvector
 * (skipped, with the reason, where the server has no pgvector). */
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory_clustered.h"
#include "test_util.h"
#include "datastore/datastore.h"

#define DIM 384
#define K 10
/* 1 fact in 12 the small user's, the rest the large one's: about 6,700
 * facts, 4,460 of kind "fact", both above 4 x 1,000 candidates, so the
 * code stage runs with and without that kind filter */
enum { TOTAL = 7300, MIN_FACTS = 1000, QUERIES = 20, KEEP = 1000 };

typedef struct blk_fx {
    char *url;
    ds_pool *pool;
    ds_memory *mem;
    int64_t large, small;
    cl_model m;
    cl_user prof[2];
    float *v;
    int64_t *owner, *id;
    bool *is_note, *gone;
    size_t n;
} blk_fx;

static const char *backend_of(int i) { return i ? "pgvector" : "fallback"; }

static void maintain(blk_fx *f, size_t *clustered) {
    ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    o.min_facts = MIN_FACTS;
    ds_error err = {0};
    ds_status st = ds_memory_maintain(f->mem, &o, clustered, &err);
    ck_assert_ds_ok(st, err);
    /* the full search only: no lists */
    dt_sql(f->url, "DELETE FROM memory_ivf_lists");
}

static bool blk_open(blk_fx *f, const char *test, int backend) {
    memset(f, 0, sizeof *f);
    if (backend == 1 && dt_skip_without_pgvector(test))
        return false;
    f->url = dt_migrated_db_backend("blocks", backend_of(backend));
    dt_sql(f->url, "INSERT INTO users (email) VALUES ('large@example.org'), "
                   "('small@example.org')");
    f->large = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'large%'");
    f->small = dt_sql_int(f->url, "SELECT id FROM users WHERE email LIKE 'small%'");
    f->pool = dt_pool(f->url, 1, 4);
    ds_error err = {0};
    ds_config *cfg = dt_config(f->url, 1, 4);
    ds_status st = ds_memory_open(f->pool, cfg, &f->mem, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ck_assert(cl_model_init(&f->m, DIM, 200, 20261208));
    for (int u = 0; u < 2; u++)
        cl_user_init(&f->m, &f->prof[u]);
    size_t total = TOTAL, cap = total + 100;
    f->v = malloc(cap * DIM * sizeof *f->v);
    f->owner = malloc(cap * sizeof *f->owner);
    f->id = calloc(cap, sizeof *f->id);
    f->is_note = calloc(cap, sizeof *f->is_note);
    f->gone = calloc(cap, sizeof *f->gone);
    /* interleaved: 1 in 12 the small user's */
    static const int pattern[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const int64_t users[2] = {f->large, f->small};
    mc_add_clustered(f->mem, &f->m, f->prof, users, pattern, 12, total,
                     "packed fact", f->v, f->owner, f->id, f->is_note);
    f->n = total;
    size_t clustered = 0;
    maintain(f, &clustered);
    dt_sql(f->url, "VACUUM ANALYZE memory_facts");
    return true;
}

static void blk_close(blk_fx *f) {
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

static int64_t facts_of(const blk_fx *f, int64_t user) {
    int64_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        n += f->owner[i] == user && !f->gone[i];
    return n;
}

static long long packed_facts(const blk_fx *f, int64_t user) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT coalesce(sum(facts), 0) FROM "
                              "memory_code_blocks WHERE user_id = %lld",
             (long long)user);
    return dt_sql_int(f->url, sql);
}

static uint64_t rows_scanned(ds_memory *mem) {
    ds_memory_stats s = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    ds_status st = ds_memory_stats_get(mem, &s, &err);
    ck_assert_ds_ok(st, err);
    return s.rows_scanned;
}

typedef struct recall {
    double sum, worst;
    int queries;
} recall;

/* One search checked against the exact top k in C: never fewer than
 * min(k, facts that pass the filters), only the user's facts, filters
 * respected; recall accumulated. */
static void check(blk_fx *f, int64_t user, const float *q,
                  const ds_memory_search_options *o, recall *rs) {
    bool *keep = malloc(f->n * sizeof *keep);
    double floor_sim = o && o->use_min_similarity ? o->min_similarity : -2;
    for (size_t i = 0; i < f->n; i++)
        keep[i] = f->owner[i] == user && !f->gone[i] &&
                  (!o || !o->kind ||
                   strcmp(o->kind, f->is_note[i] ? "note" : "fact") == 0);
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
        for (size_t j = 0; j < f->n; j++)
            if (f->id[j] == h->id)
                ck_assert(!f->gone[j]);
    }
    double r = want ? found / (double)want : 1.0;
    rs->sum += r;
    rs->worst = rs->queries == 0 || r < rs->worst ? r : rs->worst;
    rs->queries++;
    ds_memory_facts_free(hits);
    free(keep);
}

/* What a full search from the blocks counts: every packed code of the
 * facts that pass the filters, then the candidates' sketches (about KEEP:
 * equal scores at the cut all pass). The code index alone would count only
 * the candidates, the exact scan only the facts. */
static void assert_read(uint64_t read, uint64_t facts) {
    ck_assert_msg(read >= facts + KEEP && read <= facts + KEEP + 10,
                  "read %llu rows for %llu facts",
                  (unsigned long long)read, (unsigned long long)facts);
}

static void assert_recall(const recall *rs, const char *what, int backend) {
    double mean = rs->sum / rs->queries;
    printf("%s (%s): %d searches, recall@10 mean %.4f, worst %.3f\n", what,
           backend_of(backend), rs->queries, mean, rs->worst);
    ck_assert_msg(mean >= 0.99, "recall@10 mean %.4f < 0.99", mean);
    ck_assert_msg(rs->worst >= 0.9, "a query had recall@10 %.3f < 0.9",
                  rs->worst);
}

/* ---- tests ---------------------------------------------------------------- */

START_TEST(test_memory_blocks_recall_against_exact_scan) {
    blk_fx f;
    if (!blk_open(&f, "test_memory_blocks_recall_against_exact_scan", _i))
        return;
    /* the large user is packed, each of its facts once; the small is not */
    int64_t large_facts = facts_of(&f, f.large);
    ck_assert_int_eq(packed_facts(&f, f.large), large_facts);
    ck_assert_int_eq(packed_facts(&f, f.small), 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT kind) FROM "
                              "memory_code_blocks WHERE user_id = %lld",
             (long long)f.large);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 2);
    int64_t notes = 0;
    for (size_t i = 0; i < f.n; i++)
        notes += f.owner[i] == f.large && f.is_note[i];
    recall all = {0}, filtered = {0};
    for (int qi = 0; qi < QUERIES; qi++) {
        float q[DIM];
        cl_query(&f.m, &f.prof[0], q, NULL);
        /* the blocks answered */
        uint64_t before = rows_scanned(f.mem);
        check(&f, f.large, q, NULL, &all);
        assert_read(rows_scanned(f.mem) - before, (uint64_t)large_facts);
        ds_memory_search_options o = DS_MEMORY_SEARCH_OPTIONS_INIT;
        o.kind = "fact"; /* packed too, the kind's blocks only */
        before = rows_scanned(f.mem);
        check(&f, f.large, q, &o, &filtered);
        assert_read(rows_scanned(f.mem) - before,
                    (uint64_t)(large_facts - notes));
        o.kind = "note"; /* fewer than 4,000: scanned exactly */
        check(&f, f.large, q, &o, &filtered);
        o = (ds_memory_search_options)DS_MEMORY_SEARCH_OPTIONS_INIT;
        o.use_min_similarity = true;
        o.min_similarity = 0.45;
        check(&f, f.large, q, &o, &filtered);
    }
    assert_recall(&all, "test_memory_blocks_recall_against_exact_scan", _i);
    assert_recall(&filtered, "  with kind and min_similarity filters", _i);
    /* isolation: the small user's searches see only its facts, exactly */
    for (int qi = 0; qi < 6; qi++) {
        float q[DIM];
        cl_query(&f.m, &f.prof[1], q, NULL);
        recall small = {0};
        check(&f, f.small, q, NULL, &small);
        ck_assert_double_eq(small.worst, 1.0);
    }
    blk_close(&f);
}
END_TEST

/* Facts added after the packing are found at once (read from the code
 * index); a deleted packed fact is never returned and the answer stays
 * exact; ds_memory_maintain() then packs the user again. */
START_TEST(test_memory_blocks_new_and_deleted_facts) {
    blk_fx f;
    if (!blk_open(&f, "test_memory_blocks_new_and_deleted_facts", _i))
        return;
    ds_error err = {0};
    enum { NEW = 12 };
    ds_memory_new_fact batch[NEW];
    size_t first_new = f.n;
    for (int i = 0; i < NEW; i++) {
        size_t at = f.n + (size_t)i;
        cl_query(&f.m, &f.prof[0], f.v + at * DIM, NULL);
        f.owner[at] = f.large;
        f.is_note[at] = i % 2 == 0;
        batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact),
                                        .user_id = f.large,
                                        .kind = f.is_note[at] ? "note" : "fact",
                                        .content = "added after packing",
                                        .embedding = f.v + at * DIM,
                                        .dim = DIM};
    }
    ds_status st = ds_memory_add_batch(f.mem, batch, NEW, f.id + f.n, &err);
    ck_assert_ds_ok(st, err);
    f.n += NEW;
    /* a fact of a kind the blocks have never seen */
    size_t odd = f.n;
    cl_query(&f.m, &f.prof[0], f.v + odd * DIM, NULL);
    f.owner[odd] = f.large;
    ds_memory_new_fact one = DS_MEMORY_NEW_FACT_INIT;
    one.user_id = f.large;
    one.kind = "reminder";
    one.content = "a new kind";
    one.embedding = f.v + odd * DIM;
    one.dim = DIM;
    st = ds_memory_add(f.mem, &one, &f.id[odd], &err);
    ck_assert_ds_ok(st, err);
    f.n++;
    ck_assert_int_eq(packed_facts(&f, f.large), facts_of(&f, f.large) - NEW - 1);
    /* each new fact is the top result of a search by its own vector */
    for (size_t i = first_new; i < f.n; i++) {
        ds_memory_facts *hits = NULL;
        st = ds_memory_search(f.mem, f.large, f.v + i * DIM, DIM, K, NULL,
                              &hits, &err);
        ck_assert_ds_ok(st, err);
        ck_assert_uint_eq(hits->count, K);
        ck_assert_int_eq(hits->items[0]->id, f.id[i]);
        ck_assert_double_eq_tol(hits->items[0]->score, 1.0, 1e-4);
        ds_memory_facts_free(hits);
    }
    /* packed facts deleted: the top 10 of a query, gone from its answer,
     * which stays the exact top 10 of what is left */
    float q[DIM];
    cl_query(&f.m, &f.prof[0], q, NULL);
    bool *keep = malloc(f.n * sizeof *keep);
    for (size_t i = 0; i < f.n; i++)
        keep[i] = f.owner[i] == f.large && i < first_new;
    size_t idx[K];
    double scores[K];
    ck_assert_uint_eq(cl_exact_topk(f.v, f.n, DIM, keep, q, K, idx, scores), K);
    free(keep);
    for (size_t j = 0; j < K; j++) {
        st = ds_memory_delete(f.mem, f.large, f.id[idx[j]], &err);
        ck_assert_ds_ok(st, err);
        f.gone[idx[j]] = true;
    }
    /* no code of a deleted fact stays behind in a block */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_code_blocks WHERE "
                              "user_id = %lld",
             (long long)f.large);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 0);
    recall rs = {0};
    check(&f, f.large, q, NULL, &rs);
    for (int qi = 0; qi < 8; qi++) {
        float q2[DIM];
        cl_query(&f.m, &f.prof[0], q2, NULL);
        check(&f, f.large, q2, NULL, &rs);
    }
    ck_assert_double_eq(rs.worst, 1.0);
    /* maintenance packs the user again: the new facts in, the deleted out */
    size_t clustered = 0;
    maintain(&f, &clustered);
    ck_assert_int_eq(packed_facts(&f, f.large), facts_of(&f, f.large));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_code_blocks WHERE "
                              "user_id = %lld AND kind = 'reminder'",
             (long long)f.large);
    ck_assert_int_eq(dt_sql_int(f.url, sql), 1);
    recall again = {0};
    check(&f, f.large, q, NULL, &again);
    for (size_t i = first_new; i < f.n; i++)
        check(&f, f.large, f.v + i * DIM, NULL, &again);
    ck_assert_double_eq(again.worst, 1.0);
    blk_close(&f);
}
END_TEST

/* A block that is not well formed (damaged in the table) is not trusted:
 * the code index answers, exactly as before the packing. */
START_TEST(test_memory_blocks_damaged_block_ignored) {
    blk_fx f;
    if (!blk_open(&f, "test_memory_blocks_damaged_block_ignored", _i))
        return;
    static const char *const damage[] = {
        "'\\x00'::bytea",
        "overlay(codes placing '\\x02'::bytea from 1 for 1)",  /* version */
        "overlay(codes placing '\\x0001'::bytea from 3 for 2)", /* dim */
        "substr(codes, 1, octet_length(codes) - 1)"};
    char sql[256];
    for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
        dt_sql(f.url, "CREATE TABLE IF NOT EXISTS blocks_saved AS SELECT * "
                      "FROM memory_code_blocks");
        snprintf(sql, sizeof sql,
                 "UPDATE memory_code_blocks SET codes = %s WHERE user_id = "
                 "%lld AND block_no = 3 AND kind = 'fact'",
                 damage[d], (long long)f.large);
        dt_sql(f.url, sql);
        recall rs = {0};
        for (int qi = 0; qi < 4; qi++) {
            float q[DIM];
            cl_query(&f.m, &f.prof[0], q, NULL);
            uint64_t before = rows_scanned(f.mem);
            check(&f, f.large, q, NULL, &rs);
            /* not the blocks: the code index chose the candidates */
            uint64_t read = rows_scanned(f.mem) - before;
            ck_assert_msg(read >= KEEP && read <= KEEP + 10, "read %llu",
                          (unsigned long long)read);
        }
        ck_assert_double_ge(rs.sum / rs.queries, 0.99);
        ck_assert_double_ge(rs.worst, 0.9);
        dt_sql(f.url, "DELETE FROM memory_code_blocks; INSERT INTO "
                      "memory_code_blocks SELECT * FROM blocks_saved; DROP "
                      "TABLE blocks_saved");
    }
    blk_close(&f);
}
END_TEST

typedef struct maint_arg {
    ds_memory *mem;
    ds_status st;
    ds_error err;
} maint_arg;

static void *maintain_thread(void *p) {
    maint_arg *a = p;
    ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    o.min_facts = MIN_FACTS;
    size_t clustered = 0;
    a->st = ds_memory_maintain(a->mem, &o, &clustered, &a->err);
    return NULL;
}

/* A fact whose insert was still open when a packing began, with an id
 * below the packing's: the packing waits for it, so once committed it is
 * found (packed), never lost between the blocks and the facts above them. */
START_TEST(test_memory_blocks_packing_waits_for_open_inserts) {
    blk_fx f;
    if (!blk_open(&f, "test_memory_blocks_packing_waits_for_open_inserts",
                  _i))
        return;
    /* a deletion, so that maintenance packs the user again */
    size_t victim = 0;
    while (f.owner[victim] != f.large)
        victim++;
    ds_error err = {0};
    ds_status st = ds_memory_delete(f.mem, f.large, f.id[victim], &err);
    ck_assert_ds_ok(st, err);
    f.gone[victim] = true;
    /* an open insert: a copy of another fact of the user, id taken */
    size_t orig = victim + 1;
    while (f.owner[orig] != f.large)
        orig++;
    PGconn *writer = dt_connect(f.url);
    dt_exec(writer, "BEGIN");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, kind, content, metadata, "
             "importance, embedding, embedding_sketch, embedding_code) "
             "SELECT user_id, kind, 'copy', metadata, importance, embedding, "
             "embedding_sketch, embedding_code FROM memory_facts "
             "WHERE id = %lld",
             (long long)f.id[orig]);
    dt_exec(writer, sql);
    maint_arg a = {.mem = f.mem};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, maintain_thread, &a), 0);
    /* the packing reached its wait for the open insert (it sleeps
     * between checks whether older transactions have ended) */
    bool waiting = false;
    for (int tries = 0; !waiting && tries < 2400; tries++) {
        waiting = dt_sql_int(f.url, "SELECT count(*) FROM pg_stat_activity "
                                    "WHERE pid <> pg_backend_pid() AND "
                                    "wait_event = 'PgSleep' AND query "
                                    "LIKE '%pg_snapshot_xmin(pg_current_%'") > 0;
        if (!waiting)
            usleep(50 * 1000);
    }
    ck_assert_msg(waiting, "the packing never waited for the open insert");
    usleep(300 * 1000);
    dt_exec(writer, "COMMIT");
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_ds_ok(a.st, a.err);
    PQfinish(writer);
    dt_sql(f.url, "DELETE FROM memory_ivf_lists");
    long long copy = dt_sql_int(f.url, "SELECT id FROM memory_facts "
                                       "WHERE content = 'copy'");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_code_blocks WHERE "
                              "user_id = %lld AND upto >= %lld",
             (long long)f.large, copy);
    ck_assert_int_gt(dt_sql_int(f.url, sql), 0); /* below the packing's */
    ck_assert_int_eq(packed_facts(&f, f.large), facts_of(&f, f.large) + 1);
    /* both the fact and its copy come first for its own vector */
    ds_memory_facts *hits = NULL;
    st = ds_memory_search(f.mem, f.large, f.v + orig * DIM, DIM, K, NULL,
                          &hits, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(hits->count, K);
    bool seen_copy = false, seen_orig = false;
    for (size_t i = 0; i < 2; i++) {
        seen_copy |= hits->items[i]->id == copy;
        seen_orig |= hits->items[i]->id == f.id[orig];
        ck_assert_double_eq_tol(hits->items[i]->score, 1.0, 1e-4);
    }
    ck_assert(seen_copy && seen_orig);
    ds_memory_facts_free(hits);
    blk_close(&f);
}
END_TEST

/* A user that falls below half the threshold loses its blocks; packing
 * again without any change writes nothing new. */
START_TEST(test_memory_blocks_maintenance) {
    blk_fx f;
    if (!blk_open(&f, "test_memory_blocks_maintenance", _i))
        return;
    long long first = dt_sql_int(f.url, "SELECT max(xmin::text::bigint) FROM "
                                        "memory_code_blocks");
    size_t clustered = 0;
    maintain(&f, &clustered);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT max(xmin::text::bigint) FROM "
                                       "memory_code_blocks"),
                     first); /* up to date: not packed again */
    char sql[256];
    snprintf(sql, sizeof sql, "DELETE FROM memory_facts WHERE user_id = %lld "
                              "AND id IN (SELECT id FROM memory_facts WHERE "
                              "user_id = %lld ORDER BY id LIMIT %d)",
             (long long)f.large, (long long)f.large,
             (int)(facts_of(&f, f.large) - MIN_FACTS / 2 + 1));
    dt_sql(f.url, sql);
    maintain(&f, &clustered);
    ck_assert_int_eq(packed_facts(&f, f.large), 0);
    blk_close(&f);
}
END_TEST

Suite *ds_test_memory_blocks_suite(void) {
    Suite *s = suite_create("memory_blocks");
    TCase *tc = tcase_create("blocks");
    tcase_add_loop_test(tc, test_memory_blocks_recall_against_exact_scan, 0, 2);
    tcase_add_loop_test(tc, test_memory_blocks_new_and_deleted_facts, 0, 2);
    tcase_add_loop_test(tc, test_memory_blocks_damaged_block_ignored, 0, 2);
    tcase_add_loop_test(tc, test_memory_blocks_maintenance, 0, 2);
    tcase_add_loop_test(tc, test_memory_blocks_packing_waits_for_open_inserts,
                        0, 2);
    suite_add_tcase(s, tc);
    return s;
}
