/*
 * bench_memory: per-user semantic and hybrid search and inserts, on both
 * backends, on clustered data (tests/clustered.h: 384 dimensions, 200
 * gaussian topics of different spreads, each user's facts from 20 to 40 of
 * them, held-out queries near a topic centre, 3 in 4 on the user's topics)
 * with clustered text (each topic has its own words; a fact's content is
 * four words of its topic and three common ones; a query's text is two
 * words of its topic, so an off-topic query's text matches none of the
 * user's facts).
 *
 * Table-share tiers. A search costs what the user's facts cost, but what
 * lies around them may not: so each tier is a user of a given size at a
 * given share of the table. One table per backend grows through the stages
 * below; each tier user's facts are spread at random over the rows of its
 * stage (interleaved with the other users'), and the tier is measured when
 * the table has exactly that many rows:
 *
 *   stage rows   tiers measured there
 *        2,000   1k user at 50%
 *       10,000   1k user at 10%
 *       20,000   10k user at 50%
 *      100,000   1k user at 1%, 10k user at 10%
 *      200,000   100k user at 50%; hybrid at 1k/10k/100k; inserts
 *    1,000,000   1k user at 0.1%, 10k user at 1%
 *
 * (0.1% of a 10k user would need a 10,000,000-row table: not measured.)
 * BENCH_MEMORY_ROWS caps the table (default 200000; 1000000 runs every
 * tier); stages above it are skipped with a note. BENCH_MEMORY_BACKEND
 * (fallback or pgvector) runs one backend only.
 *
 * Cases (one BENCH line each, single thread, interleaved A/B rounds):
 *
 *   <backend>_search_<facts>_<share>  ds_memory_search, k 10, vs an exact
 *                              brute force in C with raw libpq (the user's
 *                              vectors fetched and scored, top 10 kept).
 *                              recall= (mean) and recall_min= (worst query)
 *                              are against the exact top 10 computed here
 *                              in C from the generated data.
 *   <backend>_hybrid_<facts>   ds_memory_search_hybrid (the same vector
 *                              query and its text) vs ds_memory_search of
 *                              the same vector query, interleaved: the
 *                              issue asks hybrid to stay within 1.5x of the
 *                              vector search (ratio = hybrid ops/s over
 *                              vector ops/s; >= 0.667 meets it).
 *                              rescored_per_search= and
 *                              baseline_rescored_per_search= are the exact
 *                              vectors each side read (ds_memory_stats).
 *                              BENCH_ONLY=hybrid runs these cases and
 *                              nothing else (hybrid_1k: the 1k user's
 *                              only), with BENCH_MEMORY_REUSE=1 on a kept
 *                              database in seconds.
 *   <backend>_add_many         ds_memory_add_batch of 1,000 facts vs a
 *                              binary COPY of 1,000 (user, content, vector)
 *                              rows into a table with a user index and a
 *                              full-text index, as an expert would load it.
 *   <backend>_add              ds_memory_add of one fact vs one prepared
 *                              INSERT into that table.
 *   <backend>_search_<facts>_<share>_lists / _nolists
 *                              only with BENCH_MEMORY_AB=1 (or =only, which
 *                              runs nothing else): the classes whose users
 *                              ds_memory_maintain() clustered (each
 *                              stage's load clusters them), without their
 *                              lists (moved aside: the coarse-code stage of
 *                              sql/0006 answers) and with them. The load
 *                              clusters those users (BENCH_MEMORY_LISTS=0
 *                              drops the lists for the whole run).
 *   <backend>_crossover_<facts>_<way>
 *                              only with BENCH_ONLY=crossover, which runs
 *                              nothing else: users of 2k, 4k, 6k, 8k, 12k,
 *                              16k and 32k facts in one table of
 *                              BENCH_MEMORY_ROWS rows (default 200,000),
 *                              each searched four ways interleaved in every
 *                              round: <way> exact (sketch scan only), codes
 *                              (coarse-code stage always), lists (the
 *                              user's per-user lists, clustered with the
 *                              threshold lowered), and the brute force
 *                              that every way's ratio= is against;
 *                              vs_exact= is the way's per-round ratio to
 *                              the exact scan, sketches_per_search= and
 *                              rescored_per_search= what it read.
 *                              BENCH_MEMORY_PASSES repeats the cases over
 *                              the same table (pass=).
 *   pgvector_hnsw_<facts>      only with BENCH_MEMORY_HNSW=1 (builds an
 *                              HNSW index at the 200,000-row stage, minutes
 *                              here): the library vs what a new user
 *                              writes, a filtered HNSW query (ef_search
 *                              200, iterative relaxed scan);
 *                              baseline_recall shows what that loses.
 *
 *   <backend>_search_<facts>_<share>_unpacked / _packed
 *                              only with BENCH_MEMORY_PACK_AB=1: the users
 *                              whose codes ds_memory_maintain() packed
 *                              (sql/0009), without their blocks (moved
 *                              aside: the code index answers) and with.
 *
 * Every run loads fresh databases (ds_bench_memory_fallback / _pgvector)
 * and drops them at the end (BENCH_MEMORY_KEEP=1 keeps them;
 * BENCH_MEMORY_REUSE=1 then measures a kept database again without
 * loading it: the rows are generated again for the truths, their ids read
 * back, and only the tiers of the last stage, its hybrid and insert cases
 * run, since the earlier stages' tables are gone). BENCH_SECONDS
 * sets the time per case (default 6). Each case warms the user's rows
 * first: a production server keeps its working set in memory, this shared
 * machine's disk does not. The pgvector cases are skipped, with a note,
 * where the server has no pgvector.
 *
 * One command for every tier on both backends:
 *   BENCH_MEMORY_ROWS=1000000 BENCH_SECONDS=4 build/bench/bench_memory
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tests/clustered.h"
#include "harness.h"

#define PROGRAM "bench_memory"
#define DIM 384
#define CENTRES 200
#define SEED 20261206u
#define K 10
#define QUERIES 100   /* per tier user */
#define FILLERS 2000  /* users owning the rest of the table */
#define LOAD_BATCH 1000

/* ---- the data -------------------------------------------------------------- */

typedef struct query {
    float v[DIM];
    char text[64];
    int64_t truth[K]; /* exact top 10 by id, best first */
    double best[K];
    int got;
} query;

typedef struct tier {
    const char *name; /* "<facts>_<share>" */
    int facts;
    long stage;       /* table rows when it is measured */
    int user;         /* user number (1-based) */
    query *qs;
} tier;

static tier default_tiers[] = {
    {"1k_50pct", 1000, 2000, 0, NULL},
    {"1k_10pct", 1000, 10000, 0, NULL},
    {"10k_50pct", 10000, 20000, 0, NULL},
    {"1k_1pct", 1000, 100000, 0, NULL},
    {"10k_10pct", 10000, 100000, 0, NULL},
    {"100k_50pct", 100000, 200000, 0, NULL},
    {"1k_0.1pct", 1000, 1000000, 0, NULL},
    {"10k_1pct", 10000, 1000000, 0, NULL},
};
/* BENCH_ONLY=crossover: one user of each size in one 200,000-row table */
static tier crossover_tiers[] = {
    {"2k", 2000, 200000, 0, NULL},   {"4k", 4000, 200000, 0, NULL},
    {"6k", 6000, 200000, 0, NULL},   {"8k", 8000, 200000, 0, NULL},
    {"12k", 12000, 200000, 0, NULL}, {"16k", 16000, 200000, 0, NULL},
    {"32k", 32000, 200000, 0, NULL},
};
static tier *tiers = default_tiers;
static size_t ntiers = sizeof default_tiers / sizeof default_tiers[0];
#define NTIERS ntiers
static const long stages[] = {2000, 10000, 20000, 100000, 200000, 1000000};
#define NSTAGES (sizeof stages / sizeof stages[0])
#define INSERT_STAGE 200000 /* inserts and hybrid cases run here */

static long max_rows;
/* BENCH_ONLY=hybrid: only the hybrid cases (hybrid_1k: only the 1k user's) */
static bool hybrid_only;
static int hybrid_only_facts; /* 0: every hybrid user */
static int nusers;       /* tiers, fillers, and one more for inserts */
static int *owner;       /* user number of each row, in insertion order */
static int *tier_of;     /* per user number: tier index, or -1 */
static cl_model model;
static cl_user *profiles;
/* The share of memory_facts' pages the visibility map marks all-visible
 * when the stage's cases ran: below 1, an index-only scan visits the heap
 * for the rows on the other pages (allvisible= on each search line). */
static double allvisible;

static _Noreturn void die(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    exit(1);
}

/* A pseudo-word, the same for the same (group, j): topic words have the
 * topic as group, common words group -1. */
static void word(int group, int j, char *out, size_t cap) {
    static const char *const syl[] = {
        "ka", "lo", "mi", "ren", "tu", "bel", "dor", "fi", "gan",
        "hu", "jel", "kor", "lim", "nav", "po", "quin", "ro", "sal",
        "tev", "ul", "vor", "wen", "xan", "yor", "zel", "ab"};
    uint64_t h = (uint64_t)(group + 7) * 0x9E3779B97F4A7C15ull ^
                 (uint64_t)(j + 1) * 0xC2B2AE3D27D4EB4Full;
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ull;
        n += (size_t)snprintf(out + n, cap - n, "%s",
                              syl[(h >> 32) % (sizeof syl / sizeof syl[0])]);
    }
}

/* Skewed choice of 0..n-1: low numbers more often. */
static int skewed(cl_rng *r, int n, double power) {
    int j = (int)(n * pow(cl_uniform(r), power));
    return j < n ? j : n - 1;
}

#define TOPIC_WORDS 16
#define COMMON_WORDS 400

/* A fact's content: four words of its topic, three common ones. */
static void fact_text(cl_rng *r, int topic, char *out, size_t cap) {
    size_t n = 0;
    char w[32];
    for (int i = 0; i < 7; i++) {
        if (i == 1 || i == 4 || i == 6)
            word(-1, skewed(r, COMMON_WORDS, 2.0), w, sizeof w);
        else
            word(topic, skewed(r, TOPIC_WORDS, 1.5), w, sizeof w);
        n += (size_t)snprintf(out + n, cap - n, i ? " %s" : "%s", w);
    }
}

/* A query's text: two words of its topic. */
static void query_text(cl_rng *r, int topic, char *out, size_t cap) {
    char a[32], b[32];
    word(topic, skewed(r, TOPIC_WORDS, 1.5), a, sizeof a);
    word(topic, skewed(r, TOPIC_WORDS, 1.5), b, sizeof b);
    snprintf(out, cap, "%s %s", a, b);
}

static cl_rng text_rng = {SEED ^ 0x5555};

/* Owners of every row up to max_rows: each tier user's facts at random
 * free positions below its stage, the rest spread over the fillers. */
static void plan_rows(void) {
    if (!cl_model_init(&model, DIM, CENTRES, SEED))
        die("generate", "out of memory");
    nusers = (int)NTIERS + FILLERS + 1;
    profiles = calloc((size_t)nusers + 1, sizeof *profiles);
    tier_of = malloc(((size_t)nusers + 1) * sizeof *tier_of);
    owner = calloc((size_t)max_rows, sizeof *owner);
    if (!profiles || !tier_of || !owner)
        die("generate", "out of memory");
    for (int u = 1; u <= nusers; u++) {
        cl_user_init(&model, &profiles[u]);
        tier_of[u] = -1;
    }
    for (size_t t = 0; t < NTIERS; t++) {
        tiers[t].user = (int)t + 1;
        tier_of[t + 1] = (int)t;
        if (tiers[t].stage > max_rows)
            continue;
        for (int placed = 0; placed < tiers[t].facts;) {
            long pos = (long)(cl_next(&model.rng) % (uint64_t)tiers[t].stage);
            if (owner[pos] == 0) {
                owner[pos] = tiers[t].user;
                placed++;
            }
        }
    }
    for (long i = 0; i < max_rows; i++)
        if (owner[i] == 0)
            owner[i] = (int)NTIERS + 1 +
                       (int)(cl_next(&model.rng) % (uint64_t)FILLERS);
    for (size_t t = 0; t < NTIERS; t++) {
        if (tiers[t].stage > max_rows)
            continue;
        tiers[t].qs = calloc(QUERIES, sizeof *tiers[t].qs);
        if (!tiers[t].qs)
            die("generate", "out of memory");
        for (int i = 0; i < QUERIES; i++) {
            query *q = &tiers[t].qs[i];
            int c = cl_query_topic(&model, &profiles[tiers[t].user], q->v,
                                   NULL);
            query_text(&text_rng, c, q->text, sizeof q->text);
        }
    }
}

/* The exact top 10 of each of the tier's queries, kept up to date as its
 * facts are generated. */
static void add_to_truth(tier *t, const float *v, int64_t id) {
    for (int i = 0; i < QUERIES; i++) {
        query *q = &t->qs[i];
        double s = 0;
        for (int j = 0; j < DIM; j++)
            s += (double)q->v[j] * v[j];
        int pos;
        if (q->got < K)
            pos = q->got++;
        else if (s > q->best[K - 1])
            pos = K - 1;
        else
            continue;
        while (pos > 0 && q->best[pos - 1] < s) {
            q->best[pos] = q->best[pos - 1];
            q->truth[pos] = q->truth[pos - 1];
            pos--;
        }
        q->best[pos] = s;
        q->truth[pos] = id;
    }
}

/* ---- databases ------------------------------------------------------------ */

static PGconn *connect_or_die(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    return c;
}

static PGresult *sql_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    return r;
}

static char *url_with_db(const char *url, const char *db) {
    const char *scheme = strstr(url, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *params = strchr(url, '?');
    if (!slash)
        die("DATABASE_URL", "must be a postgresql:// URL");
    size_t n = strlen(url) + strlen(db) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%.*s/%s%s", (int)(slash - url), url, db,
             params ? params : "");
    return out;
}

static _Noreturn void die_ds(const char *what, const ds_error *err) {
    fprintf(stderr, "%s: %s: %s: %s\n", PROGRAM, what,
            ds_status_str(err->code), err->message);
    exit(1);
}

static ds_config *config_for(const char *url, const char *backend) {
    ds_config *cfg;
    ds_error err = {0};
    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set(cfg, "database_replica_urls", NULL, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", 1, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", 2, &err) != DS_OK ||
        ds_config_set_int(cfg, "embedding_dim", DIM, &err) != DS_OK ||
        ds_config_set(cfg, "vector_backend", backend, &err) != DS_OK)
        die_ds("config", &err);
    return cfg;
}

static void drop_db(const char *admin_url, const char *name) {
    char sql[160];
    PGconn *admin = connect_or_die(admin_url);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)",
             name);
    PQclear(sql_or_die(admin, sql));
    PQfinish(admin);
}

/* A fresh database of one backend, migrated, with the users and the
 * baseline's table. */
static char *create_db(const char *admin_url, const char *backend) {
    char name[64], sql[512];
    snprintf(name, sizeof name, "ds_bench_memory_%s", backend);
    drop_db(admin_url, name);
    PGconn *admin = connect_or_die(admin_url);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PQclear(sql_or_die(admin, sql));
    PQfinish(admin);
    char *url = url_with_db(admin_url, name);
    ds_config *cfg = config_for(url, backend);
    ds_pool *pool;
    ds_error err = {0};
    if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_migrate_up(pool, NULL, NULL, &err) != DS_OK)
        die_ds("migrate", &err);
    ds_pool_close(pool);
    ds_config_free(cfg);
    PGconn *c = connect_or_die(url);
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) SELECT 'bench' || g || "
             "'@example.org' FROM generate_series(1, %d) g",
             nusers);
    PQclear(sql_or_die(c, sql));
    snprintf(sql, sizeof sql,
             "CREATE TABLE bench_raw_facts (id bigint GENERATED ALWAYS AS "
             "IDENTITY PRIMARY KEY, user_id bigint NOT NULL, content text "
             "NOT NULL, embedding %s NOT NULL); "
             "CREATE INDEX ON bench_raw_facts (user_id); "
             "CREATE INDEX ON bench_raw_facts USING gin "
             "(to_tsvector('english', content))",
             strcmp(backend, "pgvector") == 0 ? "vector(384)" : "bytea");
    PQclear(sql_or_die(c, sql));
    PQfinish(c);
    return url;
}

/* Adds rows [*loaded, upto) with ds_memory_add_batch, in order; the tier
 * users' truths take the ids the library returns (the insert cases use up
 * identity values between stages). */
static void load_rows(ds_memory *mem, long *loaded, long upto) {
    ds_memory_new_fact *batch = calloc(LOAD_BATCH, sizeof *batch);
    char(*text)[128] = calloc(LOAD_BATCH, sizeof *text);
    float *v = malloc((size_t)LOAD_BATCH * DIM * sizeof *v);
    int64_t *ids = calloc(LOAD_BATCH, sizeof *ids);
    if (!batch || !text || !v || !ids)
        die("load", "out of memory");
    ds_error err = {0};
    int64_t t0 = bench_now_ns();
    long first = *loaded;
    while (*loaded < upto) {
        int n = upto - *loaded < LOAD_BATCH ? (int)(upto - *loaded)
                                            : LOAD_BATCH;
        for (int i = 0; i < n; i++) {
            long row = *loaded + i;
            int u = owner[row];
            float *x = v + (size_t)i * DIM;
            int topic = cl_fact_topic(&model, &profiles[u], x);
            fact_text(&text_rng, topic, text[i], sizeof text[i]);
            batch[i] = (ds_memory_new_fact){
                .size = sizeof(ds_memory_new_fact), .user_id = u,
                .content = text[i], .importance = 0.5, .embedding = x,
                .dim = DIM};
        }
        if (ds_memory_add_batch(mem, batch, (size_t)n, ids, &err) != DS_OK)
            die_ds("load", &err);
        for (int i = 0; i < n; i++) {
            int u = owner[*loaded + i];
            if (ids[i] <= 0)
                die("load", "no id returned");
            if (tier_of[u] >= 0)
                add_to_truth(&tiers[tier_of[u]], v + (size_t)i * DIM, ids[i]);
        }
        *loaded += n;
    }
    fprintf(stderr, "%s: rows %ld to %ld added in %.1f s\n", PROGRAM, first,
            upto, (double)(bench_now_ns() - t0) / 1e9);
    free(batch);
    free(text);
    free(v);
    free(ids);
}

/* BENCH_MEMORY_REUSE: rows [*loaded, upto) generated as load_rows would,
 * their ids read back from the kept table (in id order, the order they
 * were added in; the insert cases' rows are gone). */
static void replay_rows(PGconn *raw, long *loaded, long upto) {
    PGresult *r = sql_or_die(raw, "SELECT id, user_id FROM memory_facts "
                                  "ORDER BY id");
    if (PQntuples(r) != upto)
        die("BENCH_MEMORY_REUSE", "the kept database holds another number "
                                  "of rows: drop it, or set "
                                  "BENCH_MEMORY_ROWS to what it holds");
    float v[DIM];
    char text[128];
    for (; *loaded < upto; (*loaded)++) {
        int u = owner[*loaded];
        int topic = cl_fact_topic(&model, &profiles[u], v);
        fact_text(&text_rng, topic, text, sizeof text);
        if (atoi(PQgetvalue(r, (int)*loaded, 1)) != u)
            die("BENCH_MEMORY_REUSE", "the kept rows are not this plan's");
        if (tier_of[u] >= 0)
            add_to_truth(&tiers[tier_of[u]], v,
                         strtoll(PQgetvalue(r, (int)*loaded, 0), NULL, 10));
    }
    PQclear(r);
}

/* ---- binary helpers ---------------------------------------------------------- */

static void put_be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static void put_be32(char *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static uint32_t get_be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
           u[3];
}
static int64_t get_be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return (int64_t)v;
}

/* pgvector's text form of a vector, "[a,b,...]". */
static void vector_text(const float *v, char *out, size_t cap) {
    size_t n = 0;
    out[n++] = '[';
    for (int i = 0; i < DIM && n + 20 < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, i ? ",%.9g" : "%.9g", v[i]);
    out[n++] = ']';
    out[n] = 0;
}

/* ---- search ------------------------------------------------------------------ */

typedef enum side_kind { LIB_VECTOR, LIB_HYBRID, RAW_BRUTE, RAW_HNSW } side_kind;

typedef struct search_ctx {
    side_kind kind;
    ds_memory *mem;
    PGconn *raw;
    bool pgv;            /* raw side decodes pgvector's binary vectors */
    const tier *t;
    int next;
    double hits, worst;  /* recall accounting over every operation     */
    long ops;
    uint64_t rescored;   /* exact vectors the library read (its stats) */
} search_ctx;

static uint64_t rows_rescored(ds_memory *mem) {
    ds_memory_stats st = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    return ds_memory_stats_get(mem, &st, &err) == DS_OK ? st.rows_rescored
                                                         : 0;
}

static void score(search_ctx *s, const query *q, const int64_t *ids, int n) {
    int hit = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < q->got; j++)
            hit += ids[i] == q->truth[j];
    double r = q->got ? hit / (double)q->got : 1.0;
    s->hits += r;
    if (s->ops == 0 || r < s->worst)
        s->worst = r;
    s->ops++;
}

static bool op_library(search_ctx *s, const query *q) {
    ds_memory_facts *out;
    ds_error err = {0};
    uint64_t before = rows_rescored(s->mem);
    ds_status st =
        s->kind == LIB_HYBRID
            ? ds_memory_search_hybrid(s->mem, s->t->user, q->text, q->v, DIM,
                                      K, NULL, &out, &err)
            : ds_memory_search(s->mem, s->t->user, q->v, DIM, K, NULL, &out,
                               &err);
    if (st != DS_OK) {
        fprintf(stderr, "search: %s\n", err.message);
        return false;
    }
    s->rescored += rows_rescored(s->mem) - before;
    int64_t ids[K];
    int n = 0;
    for (size_t i = 0; i < out->count && n < K; i++)
        ids[n++] = out->items[i]->id;
    if (s->kind == LIB_VECTOR)
        score(s, q, ids, n);
    else /* fused ranks are not a top 10 by similarity */
        s->ops++;
    ds_memory_facts_free(out);
    return true;
}

/* Raw libpq: every vector of the user, dot products and a top 10 in C. */
static bool op_raw_brute_force(search_ctx *s, const query *q) {
    char user[8];
    put_be64(user, (uint64_t)s->t->user);
    const char *vals[1] = {user};
    int lens[1] = {8}, fmts[1] = {1};
    PGresult *r = PQexecPrepared(s->raw, "fetch", 1, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "raw fetch: %s", PQerrorMessage(s->raw));
        PQclear(r);
        return false;
    }
    int64_t ids[K];
    float best[K];
    int got = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *val = PQgetvalue(r, i, 1);
        float x[DIM];
        if (s->pgv) { /* int16 dim, int16 unused, big-endian float4s */
            if (PQgetlength(r, i, 1) != 4 + 4 * DIM)
                return false;
            for (int j = 0; j < DIM; j++) {
                uint32_t bits = get_be32(val + 4 + 4 * j);
                memcpy(&x[j], &bits, 4);
            }
        } else { /* little-endian float32s (little-endian host) */
            if (PQgetlength(r, i, 1) != 4 * DIM)
                return false;
            memcpy(x, val, sizeof x);
        }
        float acc[8] = {0};
        for (int j = 0; j < DIM; j += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += q->v[j + l] * x[j + l];
        float d = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                  ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        int pos = got < K ? got++ : K;
        if (pos == K) {
            if (d <= best[K - 1])
                continue;
            pos = K - 1;
        }
        while (pos > 0 && best[pos - 1] < d) {
            best[pos] = best[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        best[pos] = d;
        ids[pos] = get_be64(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    score(s, q, ids, got);
    return true;
}

/* Raw libpq: the filtered HNSW query a new pgvector user writes. */
static bool op_raw_hnsw(search_ctx *s, const query *q) {
    char user[8], vec[DIM * 20];
    put_be64(user, (uint64_t)s->t->user);
    vector_text(q->v, vec, sizeof vec);
    const char *vals[2] = {user, vec};
    int lens[2] = {8, 0}, fmts[2] = {1, 0};
    PGresult *r = PQexecPrepared(s->raw, "hnsw", 2, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "raw hnsw: %s", PQerrorMessage(s->raw));
        PQclear(r);
        return false;
    }
    int64_t ids[K];
    int n = PQntuples(r) < K ? PQntuples(r) : K;
    for (int i = 0; i < n; i++)
        ids[i] = get_be64(PQgetvalue(r, i, 0));
    PQclear(r);
    score(s, q, ids, n);
    return true;
}

static bool op_search(void *p) {
    search_ctx *s = p;
    const query *q = &s->t->qs[s->next++ % QUERIES];
    switch (s->kind) {
    case LIB_VECTOR:
    case LIB_HYBRID: return op_library(s, q);
    case RAW_BRUTE: return op_raw_brute_force(s, q);
    case RAW_HNSW: return op_raw_hnsw(s, q);
    }
    return false;
}

static void prepare_or_die(PGconn *c, const char *name, const char *sql,
                           int nparams, const Oid *types) {
    PGresult *r = PQprepare(c, name, sql, nparams, types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(name, PQerrorMessage(c));
    PQclear(r);
}

static void run_search_case(const char *name, int rounds, double side,
                            long table_rows, search_ctx *ours,
                            search_ctx *base) {
    void *a[1] = {ours}, *b[1] = {base};
    /* warm-up: every query once on both sides (bounded in time) */
    int64_t until = bench_now_ns() + (int64_t)(4 * side * 1e9);
    for (int i = 0; i < QUERIES && bench_now_ns() < until; i++)
        if (!op_search(ours) || !op_search(base))
            exit(1);
    ours->hits = base->hits = ours->worst = base->worst = 0;
    ours->ops = base->ops = 0;
    ours->rescored = base->rescored = 0;
    bench_result ra, rb;
    bench_ab(rounds, side, 1, op_search, a, 1, op_search, b, &ra, &rb);
    if (ra.failed || rb.failed)
        exit(1);
    char extra[320];
    int n = snprintf(extra, sizeof extra,
                     "facts=%d table_rows=%ld allvisible=%.2f ",
                     ours->t->facts, table_rows, allvisible);
    if (ours->kind == LIB_HYBRID)
        snprintf(extra + n, sizeof extra - (size_t)n,
                 "baseline=ds_memory_search baseline_p50_us=%.1f "
                 "baseline_p99_us=%.1f rescored_per_search=%.1f "
                 "baseline_rescored_per_search=%.1f",
                 rb.p50_us, rb.p99_us,
                 ours->rescored / (double)(ours->ops ? ours->ops : 1),
                 base->rescored / (double)(base->ops ? base->ops : 1));
    else
        snprintf(extra + n, sizeof extra - (size_t)n,
                 "recall=%.4f recall_min=%.2f baseline_recall=%.4f "
                 "baseline_recall_min=%.2f baseline_p50_us=%.1f "
                 "baseline_p99_us=%.1f",
                 ours->hits / (double)ours->ops, ours->worst,
                 base->hits / (double)base->ops, base->worst, rb.p50_us,
                 rb.p99_us);
    bench_print(PROGRAM, name, 1, &ra, &rb, extra);
}

/* ---- inserts ----------------------------------------------------------------- */

enum { INSERT_BATCH = 1000, INSERT_POOL = 4096 };

typedef struct insert_ctx {
    ds_memory *mem;
    PGconn *raw;
    bool pgv;
    int64_t user;
    int batch;           /* facts per operation */
    int next;
    float *v;            /* INSERT_POOL vectors of the insert user */
    char (*text)[128];   /* and their contents */
    ds_memory_new_fact *facts;
    char *copybuf;       /* the baseline's COPY data */
} insert_ctx;

static bool op_add(void *p) {
    insert_ctx *s = p;
    for (int i = 0; i < s->batch; i++) {
        int k = s->next++ % INSERT_POOL;
        s->facts[i] = (ds_memory_new_fact){
            .size = sizeof(ds_memory_new_fact), .user_id = s->user,
            .content = s->text[k], .importance = 0.5,
            .embedding = s->v + (size_t)k * DIM, .dim = DIM};
    }
    ds_error err = {0};
    ds_status st = s->batch == 1
                       ? ds_memory_add(s->mem, s->facts, NULL, &err)
                       : ds_memory_add_batch(s->mem, s->facts,
                                            (size_t)s->batch, NULL, &err);
    if (st != DS_OK) {
        fprintf(stderr, "add: %s\n", err.message);
        return false;
    }
    return true;
}

static bool raw_ok(PGconn *c, PGresult *r) {
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "raw insert: %s", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* Binary COPY of a batch: (user_id int8, content text, embedding). */
static bool raw_copy(insert_ctx *s) {
    if (PQresultStatus(PQexec(s->raw, "COPY bench_raw_facts (user_id, "
                                      "content, embedding) FROM STDIN "
                                      "(FORMAT binary)")) != PGRES_COPY_IN) {
        fprintf(stderr, "raw copy: %s", PQerrorMessage(s->raw));
        return false;
    }
    char *b = s->copybuf;
    size_t n = 0;
    memcpy(b, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
    n = 19;
    for (int i = 0; i < s->batch; i++) {
        int k = s->next++ % INSERT_POOL;
        const float *v = s->v + (size_t)k * DIM;
        b[n++] = 0;
        b[n++] = 3;
        put_be32(b + n, 8);
        put_be64(b + n + 4, (uint64_t)s->user);
        n += 12;
        size_t len = strlen(s->text[k]);
        put_be32(b + n, (uint32_t)len);
        memcpy(b + n + 4, s->text[k], len);
        n += 4 + len;
        if (s->pgv) { /* int16 dim, int16 unused, big-endian float4s */
            put_be32(b + n, 4 + 4 * DIM);
            b[n + 4] = (char)(DIM >> 8);
            b[n + 5] = (char)(DIM & 0xff);
            b[n + 6] = b[n + 7] = 0;
            n += 8;
            for (int j = 0; j < DIM; j++, n += 4) {
                uint32_t bits;
                memcpy(&bits, &v[j], 4);
                put_be32(b + n, bits);
            }
        } else { /* bytea: little-endian float32s (little-endian host) */
            put_be32(b + n, 4 * DIM);
            memcpy(b + n + 4, v, 4 * DIM);
            n += 4 + 4 * DIM;
        }
    }
    b[n++] = (char)0xff;
    b[n++] = (char)0xff;
    if (PQputCopyData(s->raw, b, (int)n) != 1 ||
        PQputCopyEnd(s->raw, NULL) != 1)
        return false;
    bool ok = raw_ok(s->raw, PQgetResult(s->raw));
    PGresult *r;
    while ((r = PQgetResult(s->raw)))
        PQclear(r);
    return ok;
}

/* Raw libpq: a binary COPY for a batch, one prepared INSERT for one. */
static bool op_raw_insert(void *p) {
    insert_ctx *s = p;
    if (s->batch > 1)
        return raw_copy(s);
    char user[8];
    put_be64(user, (uint64_t)s->user);
    static char text[DIM * 20];
    char le[4 * DIM];
    int k = s->next++ % INSERT_POOL;
    const float *v = s->v + (size_t)k * DIM;
    const char *vals[3] = {user, s->text[k], NULL};
    int lens[3] = {8, 0, 0}, fmts[3] = {1, 0, 0};
    if (s->pgv) {
        vector_text(v, text, sizeof text);
        vals[2] = text;
    } else {
        memcpy(le, v, sizeof le); /* little-endian host */
        vals[2] = le;
        lens[2] = (int)sizeof le;
        fmts[2] = 1;
    }
    return raw_ok(s->raw,
                  PQexecPrepared(s->raw, "insert", 3, vals, lens, fmts, 0));
}

static void run_insert_case(const char *name, int rounds, double side,
                            long table_rows, insert_ctx *ours,
                            insert_ctx *base) {
    void *a[1] = {ours}, *b[1] = {base};
    bench_result ra, rb;
    bench_ab(rounds, side, 1, op_add, a, 1, op_raw_insert, b, &ra, &rb);
    if (ra.failed || rb.failed)
        exit(1);
    char extra[200];
    /* facts per second: operations per second times facts per operation */
    snprintf(extra, sizeof extra,
             "table_rows=%ld facts_per_op=%d facts_s=%.0f "
             "baseline_facts_s=%.0f",
             table_rows, ours->batch, ra.ops_s * ours->batch,
             rb.ops_s * base->batch);
    bench_print(PROGRAM, name, 1, &ra, &rb, extra);
}

static void bench_inserts(const char *backend, ds_memory *mem, PGconn *raw,
                          bool pgv, int rounds, double side, long rows) {
    int64_t insert_user = nusers;
    float *v = malloc((size_t)INSERT_POOL * DIM * sizeof *v);
    char(*text)[128] = calloc(INSERT_POOL, sizeof *text);
    ds_memory_new_fact *facts = calloc(INSERT_BATCH, sizeof *facts);
    char *copybuf = malloc((size_t)INSERT_BATCH * (40 + 128 + 4 * DIM) + 64);
    if (!v || !text || !facts || !copybuf)
        die("inserts", "out of memory");
    for (int i = 0; i < INSERT_POOL; i++) {
        int topic = cl_fact_topic(&model, &profiles[insert_user],
                                  v + (size_t)i * DIM);
        fact_text(&text_rng, topic, text[i], sizeof text[i]);
    }
    Oid types[3] = {20, 25, 0};
    prepare_or_die(raw, "insert",
                   pgv ? "INSERT INTO bench_raw_facts (user_id, content, "
                         "embedding) VALUES ($1, $2, $3::vector)"
                       : "INSERT INTO bench_raw_facts (user_id, content, "
                         "embedding) VALUES ($1, $2, $3)",
                   3, types);
    char name[64];
    for (int batch = INSERT_BATCH; batch >= 1; batch = batch > 1 ? 1 : 0) {
        insert_ctx ours = {.mem = mem, .pgv = pgv, .user = insert_user,
                           .batch = batch, .v = v, .text = text,
                           .facts = facts};
        insert_ctx base = {.raw = raw, .pgv = pgv, .user = insert_user,
                           .batch = batch, .v = v, .text = text,
                           .copybuf = copybuf};
        snprintf(name, sizeof name, "%s_%s", backend,
                 batch > 1 ? "add_many" : "add");
        run_insert_case(name, rounds, side, rows, &ours, &base);
    }
    /* the inserted facts go again, so later stages hold only the plan */
    char sql[160];
    snprintf(sql, sizeof sql,
             "DELETE FROM memory_facts WHERE user_id = %lld; "
             "TRUNCATE bench_raw_facts",
             (long long)insert_user);
    PQclear(sql_or_die(raw, sql));
    PQclear(sql_or_die(raw, "VACUUM ANALYZE memory_facts"));
    free(v);
    free(text);
    free(facts);
    free(copybuf);
}

/* ---- main ------------------------------------------------------------------- */

static bool server_has_pgvector(const char *url) {
    PGconn *c = connect_or_die(url);
    PGresult *r = sql_or_die(c, "SELECT 1 FROM pg_available_extensions "
                                "WHERE name = 'vector'");
    bool yes = PQntuples(r) == 1;
    PQclear(r);
    PQfinish(c);
    return yes;
}

static const tier *tier_named(const char *name) {
    for (size_t t = 0; t < NTIERS; t++)
        if (strcmp(tiers[t].name, name) == 0)
            return &tiers[t];
    return NULL;
}

static void bench_hnsw(ds_memory *mem, PGconn *raw, int rounds, double side,
                       long rows) {
    int64_t t0 = bench_now_ns();
    PQclear(sql_or_die(raw, "SET maintenance_work_mem = '1GB'"));
    PQclear(sql_or_die(raw, "CREATE INDEX bench_hnsw ON memory_facts "
                            "USING hnsw (embedding vector_cosine_ops)"));
    fprintf(stderr, "%s: HNSW index over %ld rows built in %.1f s\n", PROGRAM,
            rows, (double)(bench_now_ns() - t0) / 1e9);
    PQclear(sql_or_die(raw, "SET hnsw.ef_search = 200; "
                            "SET hnsw.iterative_scan = relaxed_order; "
                            "ANALYZE memory_facts"));
    Oid ht[2] = {20, 0};
    prepare_or_die(raw, "hnsw",
                   "SELECT id FROM memory_facts WHERE user_id = $1 "
                   "ORDER BY embedding <=> $2::vector LIMIT 10",
                   2, ht);
    static const char *const at_stage[] = {"1k_1pct", "10k_10pct",
                                           "100k_50pct"};
    char name[64];
    for (size_t i = 0; i < 3; i++) {
        const tier *t = tier_named(at_stage[i]);
        search_ctx ours = {.kind = LIB_VECTOR, .mem = mem, .t = t};
        search_ctx base = {.kind = RAW_HNSW, .raw = raw, .pgv = true, .t = t};
        snprintf(name, sizeof name, "pgvector_hnsw_%s", t->name);
        run_search_case(name, rounds, side, rows, &ours, &base);
    }
    PQclear(sql_or_die(raw, "DROP INDEX bench_hnsw"));
}

/* The lists of the users above DS_MEMORY_IVF_MIN_FACTS, kept up to date
 * as production would after a load (ds_memory_maintain clusters users that
 * reached the threshold; the list index is rebuilt as after clustering any
 * loaded table). BENCH_MEMORY_LISTS=0 skips it: the searches then take the
 * coarse-code stage of sql/0006. */
static void cluster_users(ds_memory *mem, const char *backend) {
    ds_error err = {0};
    int64_t t0 = bench_now_ns();
    size_t clustered = 0;
    ds_memory_maintain_options mo = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    mo.reindex = true;
    if (ds_memory_maintain(mem, &mo, &clustered, &err) != DS_OK)
        die_ds("maintain", &err);
    fprintf(stderr, "%s: %s: ds_memory_maintain clustered %zu users in %.1f s\n",
            PROGRAM, backend, clustered, (double)(bench_now_ns() - t0) / 1e9);
}

/* BENCH_MEMORY_AB: a clustered tier again, without its lists (moved aside
 * for the case, so the search takes the coarse-code stage of sql/0006),
 * then with them, against the same baseline. */
static void run_lists_ab(const char *backend, PGconn *raw, int rounds,
                         double side, long rows, search_ctx *ours,
                         search_ctx *base) {
    char name[64];
    for (int with = 0; with < 2; with++) {
        PQclear(sql_or_die(raw, with
            ? "INSERT INTO memory_ivf_lists SELECT * FROM "
              "bench_lists_aside; DROP TABLE bench_lists_aside"
            : "CREATE TABLE bench_lists_aside AS SELECT * FROM "
              "memory_ivf_lists; DELETE FROM memory_ivf_lists"));
        snprintf(name, sizeof name, "%s_search_%s_%s", backend,
                 ours->t->name, with ? "lists" : "nolists");
        run_search_case(name, rounds, side, rows, ours, base);
    }
}

static double visible_share(PGconn *raw) {
    PGresult *r = sql_or_die(raw, "SELECT relallvisible::float8 / "
                                  "greatest(relpages, 1) FROM pg_class "
                                  "WHERE oid = 'memory_facts'::regclass");
    double v = atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* A production table is vacuumed (autovacuum), so its visibility map is
 * set but for the pages written since. Right after a load, one VACUUM
 * here often leaves it unset on this machine (seen: 0 of 500 pages, and
 * 500 of 2,500), and every index-only scan then reads a heap page per
 * fact: so VACUUM again, a second apart, until the map is set or five
 * tries have passed; the figure printed says how far it got. */
static void vacuum_table(PGconn *raw) {
    PQclear(sql_or_die(raw, "VACUUM ANALYZE memory_facts"));
    allvisible = visible_share(raw);
    for (int i = 0; i < 5 && allvisible < 0.99; i++) {
        struct timespec pause = {1, 0};
        nanosleep(&pause, NULL);
        PQclear(sql_or_die(raw, "VACUUM memory_facts"));
        allvisible = visible_share(raw);
    }
}

/* BENCH_MEMORY_PACK_AB: a packed tier without its blocks (moved aside, so
 * the code index answers the full search), then with them. */
static void run_pack_ab(const char *backend, PGconn *raw, int rounds,
                        double side, long rows, search_ctx *ours,
                        search_ctx *base) {
    char name[64], sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM memory_code_blocks "
                              "WHERE user_id = %d", ours->t->user);
    PGresult *r = sql_or_die(raw, sql);
    bool packed = atol(PQgetvalue(r, 0, 0)) > 0;
    PQclear(r);
    if (!packed)
        return;
    for (int with = 0; with < 2; with++) {
        snprintf(sql, sizeof sql, with
            ? "INSERT INTO memory_code_blocks SELECT * FROM "
              "bench_blocks_aside; DROP TABLE bench_blocks_aside"
            : "CREATE TABLE bench_blocks_aside AS SELECT * FROM "
              "memory_code_blocks WHERE user_id = %d; DELETE FROM "
              "memory_code_blocks WHERE user_id = %d",
            ours->t->user, ours->t->user);
        PQclear(sql_or_die(raw, sql));
        snprintf(name, sizeof name, "%s_search_%s_%s", backend,
                 ours->t->name, with ? "packed" : "unpacked");
        run_search_case(name, rounds, side, rows, ours, base);
    }
}

static bool env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

static void bench_backend(const char *admin, const char *backend, int rounds,
                          double side, bool hnsw, bool keep) {
    bool pgv = strcmp(backend, "pgvector") == 0;
    bool reuse = env_is("BENCH_MEMORY_REUSE", "1");
    char *url;
    if (reuse && max_rows > INSERT_STAGE)
        die("BENCH_MEMORY_REUSE", "needs BENCH_MEMORY_ROWS of at most "
                                  "200000 (the insert cases there draw from "
                                  "the generator before the later stages)");
    if (reuse) {
        char dbname[64];
        snprintf(dbname, sizeof dbname, "ds_bench_memory_%s", backend);
        url = url_with_db(admin, dbname);
        ds_config *mcfg = config_for(url, backend);
        ds_pool *mpool;
        ds_error merr = {0};
        if (ds_pool_open(mcfg, &mpool, &merr) != DS_OK ||
            ds_migrate_up(mpool, NULL, NULL, &merr) != DS_OK)
            die_ds("BENCH_MEMORY_REUSE: migrate the kept database", &merr);
        ds_pool_close(mpool);
        ds_config_free(mcfg);
    } else {
        url = create_db(admin, backend);
    }
    ds_config *cfg = config_for(url, backend);
    ds_pool *pool;
    ds_memory *mem;
    ds_error err = {0};
    if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
        die_ds("open", &err);
    PGconn *raw = connect_or_die(url);
    PQclear(sql_or_die(raw, "SET jit = off"));
    bool lists = !env_is("BENCH_MEMORY_LISTS", "0");
    const char *ab_env = getenv("BENCH_MEMORY_AB");
    bool ab = ab_env && (strcmp(ab_env, "1") == 0 || strcmp(ab_env, "only") == 0);
    bool ab_only = ab && strcmp(ab_env, "only") == 0;
    Oid int8 = 20;
    prepare_or_die(raw, "fetch",
                   "SELECT id, embedding FROM memory_facts WHERE user_id = $1",
                   1, &int8);
    char name[64];
    long loaded = 0;
    for (size_t st = 0; st < NSTAGES && stages[st] <= max_rows; st++) {
        long rows = stages[st];
        bool last = st + 1 == NSTAGES || stages[st + 1] > max_rows;
        if (reuse && !last)
            continue; /* generated with the last stage's rows */
        if (reuse)
            replay_rows(raw, &loaded, rows);
        else
            load_rows(mem, &loaded, rows);
        if (lists)
            cluster_users(mem, backend);
        vacuum_table(raw);
        for (size_t t = 0; t < NTIERS; t++) {
            if (tiers[t].stage != rows)
                continue;
            search_ctx ours = {.kind = LIB_VECTOR, .mem = mem, .t = &tiers[t]};
            search_ctx base = {.kind = RAW_BRUTE, .raw = raw, .pgv = pgv,
                               .t = &tiers[t]};
            snprintf(name, sizeof name, "%s_search_%s", backend,
                     tiers[t].name);
            if (!ab_only && !hybrid_only)
                run_search_case(name, rounds, side, rows, &ours, &base);
            if (ab && lists && tiers[t].facts >= DS_MEMORY_IVF_MIN_FACTS)
                run_lists_ab(backend, raw, rounds, side, rows, &ours, &base);
            if (env_is("BENCH_MEMORY_PACK_AB", "1"))
                run_pack_ab(backend, raw, rounds, side, rows, &ours, &base);
        }
        if (rows != INSERT_STAGE || ab_only)
            continue;
        static const char *const hybrid_users[] = {"1k_1pct", "10k_10pct",
                                                   "100k_50pct"};
        for (size_t i = 0; i < 3; i++) {
            const tier *t = tier_named(hybrid_users[i]);
            if (hybrid_only_facts && t->facts != hybrid_only_facts)
                continue;
            search_ctx ours = {.kind = LIB_HYBRID, .mem = mem, .t = t};
            search_ctx base = {.kind = LIB_VECTOR, .mem = mem, .t = t};
            snprintf(name, sizeof name, "%s_hybrid_%dk", backend,
                     t->facts / 1000);
            run_search_case(name, rounds, side, rows, &ours, &base);
        }
        if (hybrid_only)
            continue;
        bench_inserts(backend, mem, raw, pgv, rounds, side, rows);
        if (pgv && hnsw)
            bench_hnsw(mem, raw, rounds, side, rows);
    }
    PQfinish(raw);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ds_config_free(cfg);
    if (!keep) {
        char dbname[64];
        snprintf(dbname, sizeof dbname, "ds_bench_memory_%s", backend);
        drop_db(admin, dbname);
    }
    free(url);
}

/* ---- crossover: where each stage starts (BENCH_ONLY=crossover) ------------- */

/* Each crossover user is searched four ways, interleaved in every round
 * (the order rotates from round to round, so drift within a round hits
 * each way alike): the exact sketch scan alone (a handle whose
 * memory_code_crossover is 100: never the codes), the coarse-code stage
 * (memory_code_crossover 0: always), the per-user lists (the user's lists
 * moved back in for that way only; a handle with the default setting, so
 * the queries the trust rule refuses take today's full search), and the
 * brute-force baseline. */
enum { WAY_EXACT, WAY_CODES, WAY_LISTS, WAY_BRUTE, WAYS };
static const char *const way_names[WAYS] = {"exact", "codes", "lists",
                                            "brute"};
#define CROSSOVER_ROUNDS_MAX 16

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts a copy). */
static double median_of(const double *v, int n) {
    double s[CROSSOVER_ROUNDS_MAX];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Per-round ratios a[r] / b[r]: median, lowest and highest. */
static void ratios(const double *a, const double *b, int n, double *med,
                   double *lo, double *hi) {
    double r[CROSSOVER_ROUNDS_MAX];
    for (int i = 0; i < n; i++)
        r[i] = b[i] > 0 ? a[i] / b[i] : 0;
    *med = median_of(r, n);
    qsort(r, (size_t)n, sizeof *r, cmp_double);
    *lo = r[0];
    *hi = r[n - 1];
}

/* The user's lists in memory_ivf_lists (from bench_xo_lists) or not. */
static void crossover_lists(PGconn *raw, int user, bool on) {
    char sql[160];
    snprintf(sql, sizeof sql,
             on ? "INSERT INTO memory_ivf_lists SELECT * FROM bench_xo_lists "
                  "WHERE user_id = %d"
                : "DELETE FROM memory_ivf_lists WHERE user_id = %d",
             user);
    PQclear(sql_or_die(raw, sql));
}

static ds_memory_stats stats_of(ds_memory *mem) {
    ds_memory_stats s = DS_MEMORY_STATS_INIT;
    ds_error err = {0};
    if (ds_memory_stats_get(mem, &s, &err) != DS_OK)
        die_ds("stats", &err);
    return s;
}

static void run_crossover_case(const char *backend, PGconn *raw,
                               ds_memory *const mems[3], bool pgv,
                               const tier *t, int rounds, double side,
                               long rows, int pass) {
    search_ctx ctx[WAYS];
    for (int w = 0; w < WAY_BRUTE; w++)
        ctx[w] = (search_ctx){.kind = LIB_VECTOR, .mem = mems[w], .t = t};
    ctx[WAY_BRUTE] = (search_ctx){.kind = RAW_BRUTE, .raw = raw, .pgv = pgv,
                                  .t = t};
    /* warm-up: every query once each way (bounded in time) */
    for (int w = 0; w < WAYS; w++) {
        if (w == WAY_LISTS)
            crossover_lists(raw, t->user, true);
        int64_t until = bench_now_ns() + (int64_t)(4 * side * 1e9);
        for (int i = 0; i < QUERIES && bench_now_ns() < until; i++)
            if (!op_search(&ctx[w]))
                exit(1);
        if (w == WAY_LISTS)
            crossover_lists(raw, t->user, false);
        ctx[w].hits = ctx[w].worst = 0;
        ctx[w].ops = 0;
    }
    ds_memory_stats before[3];
    for (int w = 0; w < WAY_BRUTE; w++)
        before[w] = stats_of(mems[w]);
    double ops[WAYS][CROSSOVER_ROUNDS_MAX];
    static bench_hist hist[WAYS];
    memset(hist, 0, sizeof hist);
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < WAYS; i++) {
            int w = (i + r) % WAYS;
            void *arg[1] = {&ctx[w]};
            bool failed = false;
            if (w == WAY_LISTS)
                crossover_lists(raw, t->user, true);
            ops[w][r] = bench_run(1, side, op_search, arg, &hist[w], &failed);
            if (w == WAY_LISTS)
                crossover_lists(raw, t->user, false);
            if (failed)
                exit(1);
        }
    bench_result base = {0};
    base.ops_s = median_of(ops[WAY_BRUTE], rounds);
    base.ops = hist[WAY_BRUTE].count;
    for (int w = 0; w < WAY_BRUTE; w++) {
        bench_result res = {0};
        res.ops_s = median_of(ops[w], rounds);
        res.ops = hist[w].count;
        res.p50_us = bench_hist_percentile_us(&hist[w], 0.50);
        res.p99_us = bench_hist_percentile_us(&hist[w], 0.99);
        res.ratio_rounds = rounds;
        ratios(ops[w], ops[WAY_BRUTE], rounds, &res.ratio, &res.ratio_min,
               &res.ratio_max);
        double vs, vs_lo, vs_hi;
        ratios(ops[w], ops[WAY_EXACT], rounds, &vs, &vs_lo, &vs_hi);
        ds_memory_stats after = stats_of(mems[w]);
        double searches = (double)(after.searches - before[w].searches);
        /* the lists handle also answered nothing else meanwhile; each
         * handle's counters are its own way's */
        char extra[480], name[64];
        snprintf(extra, sizeof extra,
                 "facts=%d table_rows=%ld pass=%d recall=%.4f "
                 "recall_min=%.2f baseline=brute baseline_recall=%.4f "
                 "baseline_p50_us=%.1f baseline_p99_us=%.1f vs_exact=%.3f "
                 "vs_exact_min=%.3f vs_exact_max=%.3f "
                 "sketches_per_search=%.0f rescored_per_search=%.1f",
                 t->facts, rows, pass, ctx[w].hits / (double)ctx[w].ops,
                 ctx[w].worst,
                 ctx[WAY_BRUTE].hits / (double)ctx[WAY_BRUTE].ops,
                 bench_hist_percentile_us(&hist[WAY_BRUTE], 0.50),
                 bench_hist_percentile_us(&hist[WAY_BRUTE], 0.99), vs, vs_lo,
                 vs_hi,
                 searches > 0 ? (double)(after.rows_scanned -
                                         before[w].rows_scanned) / searches
                              : 0.0,
                 searches > 0 ? (double)(after.rows_rescored -
                                         before[w].rows_rescored) / searches
                              : 0.0);
        snprintf(name, sizeof name, "%s_crossover_%s_%s", backend, t->name,
                 way_names[w]);
        bench_print(PROGRAM, name, 1, &res, &base, extra);
    }
}

static void bench_crossover_backend(const char *admin, const char *backend,
                                    int rounds, double side, int passes,
                                    bool keep) {
    bool pgv = strcmp(backend, "pgvector") == 0;
    char *url = create_db(admin, backend);
    ds_config *cfg[3];
    ds_memory *mems[3];
    ds_pool *pool;
    ds_error err = {0};
    for (int w = 0; w < 3; w++)
        cfg[w] = config_for(url, backend);
    if (ds_config_set_int(cfg[WAY_EXACT], "memory_code_crossover", 100,
                          &err) != DS_OK ||
        ds_config_set_int(cfg[WAY_CODES], "memory_code_crossover", 0,
                          &err) != DS_OK ||
        ds_pool_open(cfg[WAY_LISTS], &pool, &err) != DS_OK)
        die_ds("open", &err);
    for (int w = 0; w < 3; w++)
        if (ds_memory_open(pool, cfg[w], &mems[w], &err) != DS_OK)
            die_ds("open", &err);
    PGconn *raw = connect_or_die(url);
    PQclear(sql_or_die(raw, "SET jit = off"));
    Oid int8 = 20;
    prepare_or_die(raw, "fetch",
                   "SELECT id, embedding FROM memory_facts WHERE user_id = $1",
                   1, &int8);
    long loaded = 0;
    load_rows(mems[WAY_LISTS], &loaded, max_rows);
    /* every crossover user gets lists (the threshold lowered below the
     * smallest of them; the other users own 60 facts each), then they are
     * moved aside: each case moves its user's back in for its lists way */
    int64_t t0 = bench_now_ns();
    size_t clustered = 0;
    ds_memory_maintain_options mo = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    mo.min_facts = 1000;
    mo.reindex = true;
    if (ds_memory_maintain(mems[WAY_LISTS], &mo, &clustered, &err) != DS_OK)
        die_ds("maintain", &err);
    fprintf(stderr, "%s: %s: ds_memory_maintain clustered %zu users in %.1f s\n",
            PROGRAM, backend, clustered, (double)(bench_now_ns() - t0) / 1e9);
    PQclear(sql_or_die(raw, "CREATE TABLE bench_xo_lists AS SELECT * FROM "
                            "memory_ivf_lists; DELETE FROM memory_ivf_lists"));
    PQclear(sql_or_die(raw, "VACUUM ANALYZE memory_facts"));
    PQclear(sql_or_die(raw, "VACUUM ANALYZE memory_ivf_lists"));
    for (int pass = 1; pass <= passes; pass++)
        for (size_t t = 0; t < NTIERS; t++)
            run_crossover_case(backend, raw, mems, pgv, &tiers[t], rounds,
                               side, max_rows, pass);
    PQfinish(raw);
    for (int w = 0; w < 3; w++) {
        ds_memory_close(mems[w]);
        ds_config_free(cfg[w]);
    }
    ds_pool_close(pool);
    if (!keep) {
        char dbname[64];
        snprintf(dbname, sizeof dbname, "ds_bench_memory_%s", backend);
        drop_db(admin, dbname);
    }
    free(url);
}

static bool env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int main(void) {
    const char *admin = bench_env("DATABASE_URL");
    double secs = bench_seconds(6);
    int rounds = 4;
    double side = secs / (2.0 * rounds);
    const char *rows_env = getenv("BENCH_MEMORY_ROWS");
    max_rows = rows_env && *rows_env ? strtol(rows_env, NULL, 10) : 200000;
    const char *only_case = getenv("BENCH_ONLY");
    bool crossover = only_case && strcmp(only_case, "crossover") == 0;
    hybrid_only = only_case && (strcmp(only_case, "hybrid") == 0 ||
                                strcmp(only_case, "hybrid_1k") == 0);
    if (only_case && strcmp(only_case, "hybrid_1k") == 0)
        hybrid_only_facts = 1000;
    if (only_case && *only_case && !crossover && !hybrid_only)
        die("BENCH_ONLY", "the cases it selects are 'crossover', 'hybrid' "
                          "and 'hybrid_1k'");
    if (crossover) {
        /* the crossover users hold 80,000 facts: the rest of the table
         * belongs to the other users */
        if (max_rows < 100000)
            die("BENCH_MEMORY_ROWS", "must be at least 100000 for crossover");
        tiers = crossover_tiers;
        ntiers = sizeof crossover_tiers / sizeof crossover_tiers[0];
        for (size_t t = 0; t < NTIERS; t++)
            tiers[t].stage = max_rows;
        rounds = 3;
        side = secs / (2.0 * rounds);
    }
    if (max_rows < stages[0] || max_rows > stages[NSTAGES - 1])
        die("BENCH_MEMORY_ROWS", "must be from 2000 to 1000000");
    for (size_t st = 0; st < NSTAGES && !crossover; st++)
        if (stages[st] > max_rows)
            fprintf(stderr, "%s: the %ld-row stage is above "
                            "BENCH_MEMORY_ROWS=%ld: skipped\n",
                    PROGRAM, stages[st], max_rows);
    plan_rows();
    /* every backend's table is generated alike: the same rows, texts and
     * truths, from the same seeds */
    cl_model saved_model = model;
    cl_rng saved_text = text_rng;
    bool pgv = server_has_pgvector(admin);
    if (!pgv)
        fprintf(stderr, "%s: the server has no pgvector: pgvector cases "
                        "skipped\n", PROGRAM);
    const char *backends[2] = {"fallback", "pgvector"};
    const char *only = getenv("BENCH_MEMORY_BACKEND");
    for (int b = 0; b < (pgv ? 2 : 1); b++) {
        if (only && *only && strcmp(only, backends[b]) != 0)
            continue;
        model.rng = saved_model.rng;
        text_rng = saved_text;
        for (size_t t = 0; t < NTIERS; t++)
            if (tiers[t].qs)
                for (int i = 0; i < QUERIES; i++)
                    tiers[t].qs[i].got = 0;
        if (crossover) {
            const char *passes = getenv("BENCH_MEMORY_PASSES");
            int n = passes && *passes ? atoi(passes) : 1;
            if (n < 1 || n > 10)
                die("BENCH_MEMORY_PASSES", "must be 1 to 10");
            bench_crossover_backend(admin, backends[b], rounds, side, n,
                                    env_flag("BENCH_MEMORY_KEEP"));
        } else {
            bench_backend(admin, backends[b], rounds, side,
                          env_flag("BENCH_MEMORY_HNSW"),
                          env_flag("BENCH_MEMORY_KEEP"));
        }
    }
    for (size_t t = 0; t < NTIERS; t++)
        free(tiers[t].qs);
    cl_model_free(&model);
    free(owner);
    free(tier_of);
    free(profiles);
    return 0;
}
