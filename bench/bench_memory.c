/*
 * bench_memory: per-user semantic search and inserts in a 200,000-fact table,
 * on both backends, on clustered data (tests/clustered.h: 384 dimensions,
 * 200 gaussian topics of different spreads, each user's facts from 20 to 40
 * of them, held-out queries near a topic centre, 3 in 4 on the user's
 * topics).
 *
 * The table holds users of every size the cases need, their facts
 * interleaved (shuffled), so each class is a share of one table:
 *
 *   class    facts    users   share of the table
 *   200        200      200   0.1%
 *   1k       1,000       20   0.5%
 *   2k       2,000        5   1%
 *   10k     10,000        1   5%
 *   20k     20,000        1   10%
 *   100k   100,000        1   50%
 *
 * Cases (one BENCH line each, single thread, interleaved A/B rounds):
 *
 *   <backend>_search_<class>   ds_memory_search, k 10, vs the baseline: an
 *                              exact brute force in C with raw libpq (fetch
 *                              the user's vectors, score, keep the top 10).
 *                              recall= (mean) and recall_min= (worst query)
 *                              are against the exact top 10 computed here in
 *                              C from the generated data.
 *   <backend>_hybrid_<class>   ds_memory_search_hybrid (the same vector
 *                              query and the text "fact <n>", which a few
 *                              of the user's facts match) vs the same
 *                              brute force: the issue asks hybrid to stay
 *                              within 1.5x of the vector search.
 *   <backend>_add_many         ds_memory_add_batch of 1,000 facts vs raw
 *                              libpq: one transaction of prepared INSERTs of
 *                              (user, content, vector) into a plain table of
 *                              the same vectors (no search structure).
 *   <backend>_add              ds_memory_add of one fact vs one prepared
 *                              INSERT into that table.
 *   <backend>_search_<class>_lists / _nolists
 *                              only with BENCH_MEMORY_AB=1 (or =only, which
 *                              runs nothing else): the classes whose users
 *                              ds_memory_maintain() clustered, without their
 *                              lists (moved aside: the coarse-code stage of
 *                              sql/0006 answers) and with them. The load
 *                              clusters those users (BENCH_MEMORY_LISTS=0
 *                              drops the lists for the whole run).
 *   pgvector_hnsw_<class>      only with BENCH_MEMORY_HNSW=1 (builds an HNSW
 *                              index over the 200,000 rows, minutes here):
 *                              the library vs what a new user writes, a
 *                              filtered HNSW query (ef_search 200, iterative
 *                              relaxed scan); baseline_recall shows what that
 *                              loses. The index is dropped afterwards.
 *
 * The two databases (ds_bench_memory_fallback / _pgvector) take minutes to
 * load, so they are kept and reused while the data and migrations are
 * unchanged; BENCH_MEMORY_FRESH=1 rebuilds them. BENCH_SECONDS sets the time
 * per case (default 6). Each case warms the user's rows first: a production
 * server keeps its working set in memory, this shared machine's disk does
 * not. The pgvector cases are skipped, with a note, where the server has no
 * pgvector.
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/clustered.h"
#include "harness.h"

#define PROGRAM "bench_memory"
#define DIM 384
#define CENTRES 200
#define SEED 20261206u
#define K 10
#define QUERIES 100 /* per class, rotating over its users */
#define FINGERPRINT "v2 classes 200x200 20x1k 5x2k 10k 20k 100k"

typedef struct size_class {
    const char *name;
    int facts;
    int users;
    int first_user; /* 1-based number of its first user */
} size_class;

static size_class classes[] = {
    {"200", 200, 200, 0},   {"1k", 1000, 20, 0},    {"2k", 2000, 5, 0},
    {"10k", 10000, 1, 0},   {"20k", 20000, 1, 0},   {"100k", 100000, 1, 0},
};
#define NCLASSES (sizeof classes / sizeof classes[0])

static int nusers, total;
static float *vecs;       /* total x DIM, in insertion order (id = i + 1) */
static int *owner;        /* user number (1-based) of each row            */
static int *user_start;   /* rows of user u: by_user[user_start[u] ..]    */
static int *by_user;
static cl_model model;
static cl_user *profiles; /* per user number */

static void die(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    exit(1);
}

static void generate(void) {
    if (!cl_model_init(&model, DIM, CENTRES, SEED))
        die("generate", "out of memory");
    for (size_t c = 0; c < NCLASSES; c++) {
        classes[c].first_user = nusers + 1;
        nusers += classes[c].users;
        total += classes[c].users * classes[c].facts;
    }
    profiles = calloc((size_t)nusers + 1, sizeof *profiles);
    owner = malloc((size_t)total * sizeof *owner);
    vecs = malloc((size_t)total * DIM * sizeof *vecs);
    user_start = calloc((size_t)nusers + 2, sizeof *user_start);
    by_user = malloc((size_t)total * sizeof *by_user);
    if (!profiles || !owner || !vecs || !user_start || !by_user)
        die("generate", "out of memory");
    for (int u = 1; u <= nusers; u++)
        cl_user_init(&model, &profiles[u]);
    int n = 0;
    for (size_t c = 0; c < NCLASSES; c++)
        for (int u = 0; u < classes[c].users; u++)
            for (int j = 0; j < classes[c].facts; j++)
                owner[n++] = classes[c].first_user + u;
    for (int i = total - 1; i > 0; i--) {
        int j = (int)(cl_next(&model.rng) % (uint64_t)(i + 1));
        int t = owner[i];
        owner[i] = owner[j];
        owner[j] = t;
    }
    for (int i = 0; i < total; i++) {
        cl_fact(&model, &profiles[owner[i]], vecs + (size_t)i * DIM);
        user_start[owner[i] + 1]++;
    }
    for (int u = 1; u <= nusers + 1; u++)
        user_start[u] += user_start[u - 1];
    int *fill = calloc((size_t)nusers + 1, sizeof *fill);
    for (int i = 0; i < total; i++)
        by_user[user_start[owner[i]] + fill[owner[i]]++] = i;
    free(fill);
}

typedef struct query {
    int user;
    float v[DIM];
    int64_t truth[K];
} query;

static query *make_queries(const size_class *c) {
    query *qs = calloc(QUERIES, sizeof *qs);
    float *mine = malloc((size_t)c->facts * DIM * sizeof *mine);
    if (!qs || !mine)
        die("queries", "out of memory");
    for (int i = 0; i < QUERIES; i++) {
        qs[i].user = c->first_user + i % c->users;
        cl_query(&model, &profiles[qs[i].user], qs[i].v, NULL);
        const int *rows = by_user + user_start[qs[i].user];
        for (int j = 0; j < c->facts; j++)
            memcpy(mine + (size_t)j * DIM, vecs + (size_t)rows[j] * DIM,
                   DIM * sizeof *mine);
        size_t idx[K];
        double scores[K];
        cl_exact_topk(mine, (size_t)c->facts, DIM, NULL, qs[i].v, K, idx,
                      scores);
        for (int j = 0; j < K; j++)
            qs[i].truth[j] = rows[idx[j]] + 1;
    }
    free(mine);
    return qs;
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

static void die_ds(const char *what, const ds_error *err) {
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

/* The database's migration state, so a reused copy matches this build. */
static char *fingerprint_of(ds_pool *pool) {
    ds_result *res;
    ds_error err = {0};
    if (ds_sql_exec_pool(pool, "SELECT string_agg(version::text, ',' ORDER BY "
                           "version) FROM ds_schema_migrations",
                     NULL, 0, &res, &err) != DS_OK)
        return NULL;
    const char *v = NULL;
    char *out = NULL;
    if (ds_result_text(res, 0, 0, &v, NULL, &err) == DS_OK && v) {
        /* the library's schema version too: a database loaded before a
         * new migration is reloaded, not half-migrated */
        size_t n = strlen(FINGERPRINT) + strlen(v) + 32;
        out = malloc(n);
        snprintf(out, n, "%s schema %d %s", FINGERPRINT, DS_SCHEMA_VERSION,
                 v);
    }
    ds_result_free(res);
    return out;
}

/* Creates (or reuses) the database of one backend with the data set and
 * the baseline's plain table. */
static char *prepare_db(const char *admin_url, const char *backend,
                        bool fresh) {
    char name[64], sql[512];
    snprintf(name, sizeof name, "ds_bench_memory_%s", backend);
    char *url = url_with_db(admin_url, name);
    PGconn *admin = connect_or_die(admin_url);
    snprintf(sql, sizeof sql,
             "SELECT 1 FROM pg_database WHERE datname = '%s'", name);
    PGresult *r = sql_or_die(admin, sql);
    bool exists = PQntuples(r) == 1;
    PQclear(r);
    if (exists && !fresh) {
        PGconn *c = connect_or_die(url);
        r = PQexec(c, "SELECT fingerprint FROM bench_memory_meta");
        char *want = NULL;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            ds_config *cfg = config_for(url, backend);
            ds_pool *pool;
            ds_error err = {0};
            if (ds_pool_open(cfg, &pool, &err) == DS_OK) {
                want = fingerprint_of(pool);
                ds_pool_close(pool);
            }
            ds_config_free(cfg);
        }
        bool same = want && strcmp(PQgetvalue(r, 0, 0), want) == 0;
        free(want);
        PQclear(r);
        PQfinish(c);
        if (same) {
            PQfinish(admin);
            return url;
        }
    }
    fprintf(stderr, "%s: loading %d facts into %s (kept for the next runs)\n",
            PROGRAM, total, name);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(sql_or_die(admin, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PQclear(sql_or_die(admin, sql));
    PQfinish(admin);

    ds_config *cfg = config_for(url, backend);
    ds_pool *pool;
    ds_memory *mem;
    ds_error err = {0};
    if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_migrate_up(pool, NULL, NULL, &err) != DS_OK ||
        ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
        die_ds("open", &err);
    PGconn *c = connect_or_die(url);
    /* one more user for the insert cases */
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) SELECT 'bench' || g || "
             "'@example.org' FROM generate_series(1, %d) g",
             nusers + 1);
    PQclear(sql_or_die(c, sql));
    snprintf(sql, sizeof sql,
             "CREATE TABLE bench_raw_facts (id bigint GENERATED ALWAYS AS "
             "IDENTITY PRIMARY KEY, user_id bigint NOT NULL, content text "
             "NOT NULL, embedding %s NOT NULL); "
             "CREATE INDEX ON bench_raw_facts (user_id)",
             strcmp(backend, "pgvector") == 0 ? "vector(384)" : "bytea");
    PQclear(sql_or_die(c, sql));

    int64_t t0 = bench_now_ns();
    enum { BATCH = 1000 };
    ds_memory_new_fact *batch = calloc(BATCH, sizeof *batch);
    char (*text)[64] = calloc(BATCH, sizeof *text);
    int64_t *ids = calloc(BATCH, sizeof *ids);
    for (int start = 0; start < total; start += BATCH) {
        int n = total - start < BATCH ? total - start : BATCH;
        for (int i = 0; i < n; i++) {
            int k = start + i;
            snprintf(text[i], sizeof text[i], "fact %d of user %d", k + 1,
                     owner[k]);
            batch[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = owner[k],
                                            .content = text[i],
                                            .importance = 0.5,
                                            .embedding = vecs + (size_t)k * DIM,
                                            .dim = DIM};
        }
        if (ds_memory_add_batch(mem, batch, (size_t)n, ids, &err) != DS_OK)
            die_ds("add_many", &err);
        for (int i = 0; i < n; i++)
            if (ids[i] != start + i + 1)
                die("load", "ids are not 1..N in order (not a fresh table)");
    }
    free(batch);
    free(text);
    free(ids);
    fprintf(stderr, "%s: %s: %d facts added in %.1f s (ds_memory_add_batch)\n",
            PROGRAM, backend, total, (double)(bench_now_ns() - t0) / 1e9);
    PQclear(sql_or_die(c, "VACUUM ANALYZE memory_facts"));
    char *fp = fingerprint_of(pool);
    if (!fp)
        die("fingerprint", "cannot read the migration record");
    PQclear(sql_or_die(c, "CREATE TABLE bench_memory_meta (fingerprint text)"));
    const char *vals[1] = {fp};
    r = PQexecParams(c, "INSERT INTO bench_memory_meta VALUES ($1)", 1, NULL,
                     vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("meta", PQerrorMessage(c));
    PQclear(r);
    free(fp);
    PQfinish(c);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return url;
}

/* ---- binary helpers ---------------------------------------------------------- */

static void put_be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
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

typedef struct search_ctx {
    ds_memory *mem;
    PGconn *raw;
    bool pgv;            /* raw side decodes pgvector's binary vectors */
    bool hnsw;           /* raw side runs the filtered HNSW query      */
    bool hybrid;         /* library side runs the hybrid search        */
    const query *qs;
    int next;
    double hits, worst;  /* recall accounting over every operation     */
    long ops;
} search_ctx;

static void score(search_ctx *s, const query *q, const int64_t *ids, int n) {
    int hit = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < K; j++)
            hit += ids[i] == q->truth[j];
    double r = hit / (double)K;
    s->hits += r;
    if (s->ops == 0 || r < s->worst)
        s->worst = r;
    s->ops++;
}

static bool op_library(void *p) {
    search_ctx *s = p;
    const query *q = &s->qs[s->next++ % QUERIES];
    ds_memory_facts *out;
    ds_error err = {0};
    char text[32];
    snprintf(text, sizeof text, "fact %d", 1 + s->next % 97);
    ds_status st =
        s->hybrid ? ds_memory_search_hybrid(s->mem, q->user, text, q->v, DIM,
                                            K, NULL, &out, &err)
                  : ds_memory_search(s->mem, q->user, q->v, DIM, K, NULL,
                                     &out, &err);
    if (st != DS_OK) {
        fprintf(stderr, "search: %s\n", err.message);
        return false;
    }
    int64_t ids[K];
    int n = 0;
    /* hybrid: the recall of its vector list (the facts it ranked) */
    for (size_t i = 0; i < out->count && n < K; i++)
        if (!s->hybrid || out->items[i]->vector_rank > 0)
            ids[n++] = out->items[i]->id;
    if (!s->hybrid)
        score(s, q, ids, n);
    else
        s->ops++;
    ds_memory_facts_free(out);
    return true;
}

/* Raw libpq: every vector of the user, dot products and a top 10 in C. */
static bool op_raw_brute_force(void *p) {
    search_ctx *s = p;
    const query *q = &s->qs[s->next++ % QUERIES];
    char user[8];
    put_be64(user, (uint64_t)q->user);
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
static bool op_raw_hnsw(void *p) {
    search_ctx *s = p;
    const query *q = &s->qs[s->next++ % QUERIES];
    char user[8], vec[DIM * 20];
    put_be64(user, (uint64_t)q->user);
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

static void prepare_or_die(PGconn *c, const char *name, const char *sql,
                           int nparams, const Oid *types) {
    PGresult *r = PQprepare(c, name, sql, nparams, types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(name, PQerrorMessage(c));
    PQclear(r);
}

static void run_search_case(const char *name, int rounds, double side,
                            search_ctx *ours, search_ctx *base,
                            bench_op_fn base_fn) {
    void *a[1] = {ours}, *b[1] = {base};
    /* warm-up: every query once on both sides (bounded in time) */
    int64_t until = bench_now_ns() + (int64_t)(4 * side * 1e9);
    for (int i = 0; i < QUERIES && bench_now_ns() < until; i++)
        if (!op_library(ours) || !base_fn(base))
            exit(1);
    ours->hits = base->hits = ours->worst = base->worst = 0;
    ours->ops = base->ops = 0;
    bench_result ra, rb;
    bench_ab(rounds, side, 1, op_library, a, 1, base_fn, b, &ra, &rb);
    if (ra.failed || rb.failed)
        exit(1);
    char extra[200];
    if (ours->hybrid) /* fused ranks are not a top 10 by similarity */
        snprintf(extra, sizeof extra,
                 "baseline_p50_us=%.1f baseline_p99_us=%.1f", rb.p50_us,
                 rb.p99_us);
    else
        snprintf(extra, sizeof extra,
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
    ds_memory_new_fact *facts;
    long facts_done;
} insert_ctx;

static bool op_add(void *p) {
    insert_ctx *s = p;
    for (int i = 0; i < s->batch; i++) {
        int k = s->next++ % INSERT_POOL;
        s->facts[i] = (ds_memory_new_fact){.size = sizeof(ds_memory_new_fact), .user_id = s->user,
                                           .content = "inserted fact",
                                           .importance = 0.5,
                                           .embedding = s->v + (size_t)k * DIM,
                                           .dim = DIM};
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
    s->facts_done += s->batch;
    return true;
}

static bool raw_ok(PGconn *c, PGresult *r) {
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "raw insert: %s", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* Raw libpq: prepared INSERTs, in one transaction for a batch. */
static bool op_raw_insert(void *p) {
    insert_ctx *s = p;
    if (s->batch > 1 && !raw_ok(s->raw, PQexec(s->raw, "BEGIN")))
        return false;
    char user[8];
    put_be64(user, (uint64_t)s->user);
    static char text[DIM * 20];
    char le[4 * DIM];
    for (int i = 0; i < s->batch; i++) {
        const float *v = s->v + (size_t)(s->next++ % INSERT_POOL) * DIM;
        const char *vals[3] = {user, "inserted fact", NULL};
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
        if (!raw_ok(s->raw, PQexecPrepared(s->raw, "insert", 3, vals, lens,
                                           fmts, 0)))
            return false;
    }
    if (s->batch > 1 && !raw_ok(s->raw, PQexec(s->raw, "COMMIT")))
        return false;
    s->facts_done += s->batch;
    return true;
}

static void run_insert_case(const char *name, int rounds, double side,
                            insert_ctx *ours, insert_ctx *base) {
    void *a[1] = {ours}, *b[1] = {base};
    bench_result ra, rb;
    bench_ab(rounds, side, 1, op_add, a, 1, op_raw_insert, b, &ra, &rb);
    if (ra.failed || rb.failed)
        exit(1);
    char extra[160];
    /* facts per second: operations per second times facts per operation */
    snprintf(extra, sizeof extra, "facts_per_op=%d facts_s=%.0f "
             "baseline_facts_s=%.0f",
             ours->batch, ra.ops_s * ours->batch, rb.ops_s * base->batch);
    bench_print(PROGRAM, name, 1, &ra, &rb, extra);
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

static void bench_backend(const char *backend, const char *url, int rounds,
                          double side, query **qs, bool hnsw) {
    bool pgv = strcmp(backend, "pgvector") == 0;
    ds_config *cfg = config_for(url, backend);
    ds_pool *pool;
    ds_memory *mem;
    ds_error err = {0};
    if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
        die_ds("open", &err);
    PGconn *raw = connect_or_die(url);
    PQclear(sql_or_die(raw, "SET jit = off"));
    /* The lists of the users above DS_MEMORY_IVF_MIN_FACTS (10k, 20k, 100k
     * here): kept up to date like production would (a no-op when they
     * are), or dropped with BENCH_MEMORY_LISTS=0 to measure the search
     * without them (the coarse-code stage of sql/0006). */
    const char *lists_env = getenv("BENCH_MEMORY_LISTS");
    if (lists_env && strcmp(lists_env, "0") == 0) {
        PQclear(sql_or_die(raw, "DELETE FROM memory_ivf_lists"));
        fprintf(stderr, "%s: %s: searches without lists\n", PROGRAM, backend);
    } else {
        int64_t t0 = bench_now_ns();
        size_t clustered = 0;
        ds_memory_maintain_options mo = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
        mo.reindex = true; /* as after clustering any loaded table */
        if (ds_memory_maintain(mem, &mo, &clustered, &err) != DS_OK)
            die_ds("maintain", &err);
        PQclear(sql_or_die(raw, "VACUUM ANALYZE memory_facts"));
        fprintf(stderr, "%s: %s: ds_memory_maintain clustered %zu users in "
                "%.1f s\n", PROGRAM, backend, clustered,
                (double)(bench_now_ns() - t0) / 1e9);
    }
    Oid int8 = 20;
    prepare_or_die(raw, "fetch",
                   "SELECT id, embedding FROM memory_facts WHERE user_id = $1",
                   1, &int8);
    char name[64];
    const char *ab_env = getenv("BENCH_MEMORY_AB");
    bool ab_only = ab_env && strcmp(ab_env, "only") == 0;
    for (size_t c = 0; c < NCLASSES && !ab_only; c++) {
        search_ctx ours = {.mem = mem, .qs = qs[c]};
        search_ctx base = {.raw = raw, .pgv = pgv, .qs = qs[c]};
        snprintf(name, sizeof name, "%s_search_%s", backend, classes[c].name);
        run_search_case(name, rounds, side, &ours, &base, op_raw_brute_force);
    }
    /* BENCH_MEMORY_AB=1: the clustered classes again, without their lists
     * (moved aside for the case, so the search takes the coarse-code stage
     * of sql/0006), then with them, against the same baseline;
     * BENCH_MEMORY_AB=only runs nothing else */
    if (ab_env && (strcmp(ab_env, "1") == 0 || ab_only)) {
        for (size_t c = 0; c < NCLASSES; c++) {
            if (classes[c].facts < DS_MEMORY_IVF_MIN_FACTS)
                continue;
            for (int with = 0; with < 2; with++) {
                PQclear(sql_or_die(raw, with
                    ? "INSERT INTO memory_ivf_lists SELECT * FROM "
                      "bench_lists_aside; DROP TABLE bench_lists_aside"
                    : "CREATE TABLE bench_lists_aside AS SELECT * FROM "
                      "memory_ivf_lists; DELETE FROM memory_ivf_lists"));
                search_ctx ours = {.mem = mem, .qs = qs[c]};
                search_ctx base = {.raw = raw, .pgv = pgv, .qs = qs[c]};
                snprintf(name, sizeof name, "%s_search_%s_%s", backend,
                         classes[c].name, with ? "lists" : "nolists");
                run_search_case(name, rounds, side, &ours, &base,
                                op_raw_brute_force);
            }
        }
    }
    if (ab_only) {
        PQfinish(raw);
        ds_memory_close(mem);
        ds_pool_close(pool);
        ds_config_free(cfg);
        return;
    }
    for (size_t c = 1; c < NCLASSES; c += 2) { /* 1k, 10k, 100k */
        search_ctx ours = {.mem = mem, .hybrid = true, .qs = qs[c]};
        search_ctx base = {.raw = raw, .pgv = pgv, .qs = qs[c]};
        snprintf(name, sizeof name, "%s_hybrid_%s", backend, classes[c].name);
        run_search_case(name, rounds, side, &ours, &base, op_raw_brute_force);
    }

    /* inserts, for one more user, rolled away afterwards */
    int64_t insert_user = nusers + 1;
    float *v = malloc((size_t)INSERT_POOL * DIM * sizeof *v);
    for (int i = 0; i < INSERT_POOL; i++)
        cl_fact(&model, &profiles[1], v + (size_t)i * DIM);
    ds_memory_new_fact *facts = calloc(INSERT_BATCH, sizeof *facts);
    Oid types[3] = {20, 25, 0};
    prepare_or_die(raw, "insert",
                   pgv ? "INSERT INTO bench_raw_facts (user_id, content, "
                         "embedding) VALUES ($1, $2, $3::vector)"
                       : "INSERT INTO bench_raw_facts (user_id, content, "
                         "embedding) VALUES ($1, $2, $3)",
                   3, types);
    for (int batch = INSERT_BATCH; batch >= 1; batch = batch > 1 ? 1 : 0) {
        insert_ctx ours = {.mem = mem, .pgv = pgv, .user = insert_user,
                           .batch = batch, .v = v, .facts = facts};
        insert_ctx base = {.raw = raw, .pgv = pgv, .user = insert_user,
                           .batch = batch, .v = v};
        snprintf(name, sizeof name, "%s_%s", backend,
                 batch > 1 ? "add_many" : "add");
        run_insert_case(name, rounds, side, &ours, &base);
    }
    char sql[160];
    snprintf(sql, sizeof sql,
             "DELETE FROM memory_facts WHERE user_id = %lld; "
             "TRUNCATE bench_raw_facts",
             (long long)insert_user);
    PQclear(sql_or_die(raw, sql));
    PQclear(sql_or_die(raw, "VACUUM memory_facts"));
    free(v);
    free(facts);

    if (pgv && hnsw) {
        int64_t t0 = bench_now_ns();
        PQclear(sql_or_die(raw, "SET maintenance_work_mem = '1GB'"));
        PQclear(sql_or_die(raw, "CREATE INDEX bench_hnsw ON memory_facts "
                                "USING hnsw (embedding vector_cosine_ops)"));
        fprintf(stderr, "%s: HNSW index over %d rows built in %.1f s\n",
                PROGRAM, total, (double)(bench_now_ns() - t0) / 1e9);
        PQclear(sql_or_die(raw, "SET hnsw.ef_search = 200; "
                                "SET hnsw.iterative_scan = relaxed_order; "
                                "ANALYZE memory_facts"));
        Oid ht[2] = {20, 0};
        prepare_or_die(raw, "hnsw",
                       "SELECT id FROM memory_facts WHERE user_id = $1 "
                       "ORDER BY embedding <=> $2::vector LIMIT 10",
                       2, ht);
        for (size_t c = 0; c < NCLASSES; c++) {
            search_ctx ours = {.mem = mem, .qs = qs[c]};
            search_ctx base = {.raw = raw, .pgv = true, .hnsw = true,
                               .qs = qs[c]};
            snprintf(name, sizeof name, "pgvector_hnsw_%s", classes[c].name);
            run_search_case(name, rounds, side, &ours, &base, op_raw_hnsw);
        }
        PQclear(sql_or_die(raw, "DROP INDEX bench_hnsw"));
    }
    PQfinish(raw);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ds_config_free(cfg);
}

int main(void) {
    const char *admin = bench_env("DATABASE_URL");
    double secs = bench_seconds(6);
    int rounds = 4;
    double side = secs / (2.0 * rounds);
    const char *fresh_env = getenv("BENCH_MEMORY_FRESH");
    const char *hnsw_env = getenv("BENCH_MEMORY_HNSW");
    bool fresh = fresh_env && *fresh_env && strcmp(fresh_env, "0") != 0;
    bool hnsw = hnsw_env && *hnsw_env && strcmp(hnsw_env, "0") != 0;

    generate();
    query *qs[NCLASSES];
    for (size_t c = 0; c < NCLASSES; c++)
        qs[c] = make_queries(&classes[c]);
    bool pgv = server_has_pgvector(admin);
    if (!pgv)
        fprintf(stderr, "%s: the server has no pgvector: pgvector cases "
                        "skipped\n", PROGRAM);
    const char *backends[2] = {"fallback", "pgvector"};
    for (int b = 0; b < (pgv ? 2 : 1); b++) {
        char *url = prepare_db(admin, backends[b], fresh);
        bench_backend(backends[b], url, rounds, side, qs, hnsw);
        free(url);
    }
    for (size_t c = 0; c < NCLASSES; c++)
        free(qs[c]);
    cl_model_free(&model);
    free(vecs);
    free(owner);
    free(user_start);
    free(by_user);
    free(profiles);
    return 0;
}
