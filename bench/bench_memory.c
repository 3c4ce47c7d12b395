/*
 * bench_memory: per-user semantic search over 100,000 memory facts.
 *
 * Data: 384-dimension clustered unit vectors (256 topic centres; each user
 * draws from 16 topics, each fact is its centre plus noise, cosine about
 * 0.7 to it). One user has 10,000 facts and 90 users have 1,000 each, so a
 * 1,000-fact user is 1% of the table. Queries come from the same
 * distribution; the exact top 10 of each is computed here, in C, and every
 * case reports recall@10 against it. The 1,000-fact queries rotate over 8
 * users and each case warms up before timing: the local server has
 * 256 MB of shared_buffers, and a page read from this machine's disk costs
 * more than the search (a cold 1,000-fact pgvector scan takes ~100 ms here
 * instead of ~2); a production server keeps such a table in memory.
 *
 *   fallback_1k, fallback_10k   ds_memory_search on the fallback backend vs
 *                               a raw-libpq exact scan: fetch the user's
 *                               float32 vectors and score them in C
 *   pgvector_1k, pgvector_10k   ds_memory_search on pgvector (exact below
 *                               vector_exact_max_rows, HNSW above) vs a
 *                               raw-libpq exact scan in pgvector
 *                               (ORDER BY embedding <=> q + 0)
 *   pgvector_hnsw_1k            the same with vector_exact_max_rows=0: the
 *                               HNSW index for a 1,000-fact user too (what
 *                               the exact threshold is chosen against)
 *   sql_scoring_1k              the design alternative to the fallback:
 *                               cosine computed in SQL from real[] (no
 *                               extension), baseline our fallback search
 *
 * The two databases (ds_bench_memory_fallback / _pgvector) take about a
 * minute to load and index, so they are kept and reused while the data
 * parameters and migrations are unchanged; BENCH_MEMORY_FRESH=1 rebuilds
 * them. BENCH_SECONDS sets the time per case (default 6). The pgvector
 * cases are skipped, with a note, where the server has no pgvector.
 */
#include <datastore/datastore.h>
#include <dirent.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PROGRAM "bench_memory"
#define DIM 384
#define CENTRES 256
#define TOPICS 16
#define BIG_USER_FACTS 10000
#define SMALL_USERS 90
#define SMALL_USER_FACTS 1000
#define TOTAL (BIG_USER_FACTS + SMALL_USERS * SMALL_USER_FACTS)
#define QUERIES 200
#define K 10
#define HOT_USERS 8 /* 1,000-fact users the queries rotate over */

/* ---- data ---------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double gauss(void) {
    double u = (double)(rng() >> 11) / 9007199254740992.0;
    double v = (double)(rng() >> 11) / 9007199254740992.0;
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static void normalize(float *v) {
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    s = sqrt(s);
    for (int i = 0; i < DIM; i++)
        v[i] = (float)(v[i] / s);
}

static float (*centres)[DIM];
static int topics[SMALL_USERS + 2][TOPICS];
static float *vecs;        /* TOTAL x DIM, in insertion order (id = i + 1) */
static int64_t *owner;     /* user of each (1-based user numbers)         */

static void sample(int user, float *out) {
    int c = topics[user][rng() % TOPICS];
    for (int i = 0; i < DIM; i++)
        out[i] = centres[c][i] + (float)(gauss() * 0.051);
    normalize(out);
}

static void generate(void) {
    centres = malloc(sizeof(float[CENTRES][DIM]));
    vecs = malloc((size_t)TOTAL * DIM * sizeof *vecs);
    owner = malloc(TOTAL * sizeof *owner);
    for (int c = 0; c < CENTRES; c++) {
        for (int i = 0; i < DIM; i++)
            centres[c][i] = (float)gauss();
        normalize(centres[c]);
    }
    for (int u = 1; u <= SMALL_USERS + 1; u++)
        for (int t = 0; t < TOPICS; t++)
            topics[u][t] = (int)(rng() % CENTRES);
    /* user 1 has the big memory; facts are interleaved across users */
    int n = 0;
    for (int u = 1; u <= SMALL_USERS + 1; u++)
        for (int j = 0; j < (u == 1 ? BIG_USER_FACTS : SMALL_USER_FACTS); j++)
            owner[n++] = u;
    for (int i = TOTAL - 1; i > 0; i--) {
        int j = (int)(rng() % (uint64_t)(i + 1));
        int64_t t = owner[i];
        owner[i] = owner[j];
        owner[j] = t;
    }
    for (int i = 0; i < TOTAL; i++)
        sample((int)owner[i], vecs + (size_t)i * DIM);
}

typedef struct query {
    int64_t user;
    float v[DIM];
    int64_t truth[K]; /* exact top 10 ids */
} query;

static void exact_topk(int64_t user, const float *q, int64_t *ids) {
    double best[K];
    int got = 0;
    for (int i = 0; i < TOTAL; i++) {
        if (owner[i] != user)
            continue;
        const float *v = vecs + (size_t)i * DIM;
        double s = 0;
        for (int j = 0; j < DIM; j++)
            s += (double)q[j] * v[j];
        int pos;
        if (got < K) {
            pos = got++;
        } else if (s > best[K - 1]) {
            pos = K - 1;
        } else {
            continue;
        }
        while (pos > 0 && best[pos - 1] < s) {
            best[pos] = best[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        best[pos] = s;
        ids[pos] = i + 1;
    }
}

static query *make_queries(bool big) {
    query *qs = calloc(QUERIES, sizeof *qs);
    for (int i = 0; i < QUERIES; i++) {
        qs[i].user = big ? 1 : 2 + i % HOT_USERS;
        sample((int)qs[i].user, qs[i].v);
        exact_topk(qs[i].user, qs[i].v, qs[i].truth);
    }
    return qs;
}

/* ---- databases ------------------------------------------------------------ */

static PGconn *connect_or_die(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static PGresult *sql_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
        exit(1);
    }
    return r;
}

static char *url_with_db(const char *url, const char *db) {
    const char *scheme = strstr(url, "://");
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    const char *params = strchr(url, '?');
    if (!slash) {
        fprintf(stderr, "DATABASE_URL must be a postgresql:// URL\n");
        exit(2);
    }
    size_t n = strlen(url) + strlen(db) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%.*s/%s%s", (int)(slash - url), url, db,
             params ? params : "");
    return out;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The up migrations (sql/NNNN_*.up.sql) in order, concatenated: the bench
 * runs from the project root (ds-migrate's embedded migrations replace
 * this once they land). */
static char *read_migrations(void) {
    const char *root = getenv("DS_PROJECT_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sql", root && *root ? root : ".");
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: cannot open (run from the project root)\n", dir);
        exit(2);
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64) {
        size_t len = strlen(e->d_name);
        if (len > 7 && strcmp(e->d_name + len - 7, ".up.sql") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], by_name);
    size_t cap = 1 << 20, len = 0;
    char *all = calloc(1, cap);
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (f) {
            len += fread(all + len, 1, cap - len - 2, f);
            all[len++] = '\n';
            fclose(f);
        }
        free(names[i]);
    }
    return all;
}

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void die_ds(const char *what, const ds_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, ds_status_str(err->code),
            err->message);
    exit(1);
}

static ds_config *config_for(const char *url) {
    ds_config *cfg;
    ds_error err = {0};
    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set(cfg, "database_replica_urls", NULL, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", 2, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", 2, &err) != DS_OK ||
        ds_config_set_int(cfg, "embedding_dim", DIM, &err) != DS_OK ||
        ds_config_set(cfg, "vector_backend", NULL, &err) != DS_OK)
        die_ds("config", &err);
    return cfg;
}

/* Creates (or reuses) the database of one backend with the data set. */
static char *prepare_db(const char *admin_url, const char *backend,
                        const char *migrations, bool fresh) {
    char name[64], fingerprint[96], sql[512];
    snprintf(name, sizeof name, "ds_bench_memory_%s", backend);
    snprintf(fingerprint, sizeof fingerprint, "v1 %d %d %d %016llx", TOTAL,
             DIM, CENTRES, (unsigned long long)fnv(migrations));
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
        bool same = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                    strcmp(PQgetvalue(r, 0, 0), fingerprint) == 0;
        PQclear(r);
        PQfinish(c);
        if (same) {
            PQfinish(admin);
            return url;
        }
    }
    fprintf(stderr, "%s: loading %d facts into %s (kept for the next runs)\n",
            PROGRAM, TOTAL, name);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(sql_or_die(admin, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PQclear(sql_or_die(admin, sql));
    PQfinish(admin);

    PGconn *c = connect_or_die(url);
    snprintf(sql, sizeof sql,
             "SET ds.embedding_dim = '%d'; SET ds.vector_backend = '%s'", DIM,
             backend);
    PQclear(sql_or_die(c, sql));
    PQclear(sql_or_die(c, migrations));
    PQclear(sql_or_die(c, "INSERT INTO users (email) SELECT 'bench' || g || "
                          "'@example.org' FROM generate_series(1, 91) g"));
    bool pgvector = strcmp(backend, "pgvector") == 0;
    /* building the graph once is much faster than growing it per row */
    if (pgvector)
        PQclear(sql_or_die(c, "DROP INDEX memory_facts_embedding_hnsw"));

    int64_t t0 = bench_now_ns();
    ds_config *cfg = config_for(url);
    ds_pool *pool;
    ds_memory *mem;
    ds_error err = {0};
    if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
        die_ds("open", &err);
    enum { BATCH = 1000 };
    ds_memory_new_fact *batch = calloc(BATCH, sizeof *batch);
    char (*text)[64] = calloc(BATCH, sizeof *text);
    for (int start = 0; start < TOTAL; start += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            int k = start + i;
            snprintf(text[i], sizeof text[i], "fact %d of user %lld", k + 1,
                     (long long)owner[k]);
            batch[i] = (ds_memory_new_fact){.user_id = owner[k],
                                            .content = text[i],
                                            .importance = 0.5,
                                            .embedding = vecs + (size_t)k * DIM,
                                            .dim = DIM};
        }
        if (ds_memory_add_many(mem, batch, BATCH, NULL, &err) != DS_OK)
            die_ds("add_many", &err);
    }
    free(batch);
    free(text);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ds_config_free(cfg);
    fprintf(stderr, "%s: %s: %d facts added in %.1f s (ds_memory_add_many)\n",
            PROGRAM, backend, TOTAL, (double)(bench_now_ns() - t0) / 1e9);
    if (pgvector) {
        t0 = bench_now_ns();
        PQclear(sql_or_die(c, "SET maintenance_work_mem = '1GB'"));
        PQclear(sql_or_die(c, "CREATE INDEX memory_facts_embedding_hnsw ON "
                              "memory_facts USING hnsw "
                              "(embedding vector_cosine_ops)"));
        fprintf(stderr, "%s: HNSW index built in %.1f s\n", PROGRAM,
                (double)(bench_now_ns() - t0) / 1e9);
    }
    PQclear(sql_or_die(c, "VACUUM ANALYZE memory_facts"));
    snprintf(sql, sizeof sql,
             "CREATE TABLE bench_memory_meta (fingerprint text); "
             "INSERT INTO bench_memory_meta VALUES ('%s')",
             fingerprint);
    PQclear(sql_or_die(c, sql));
    PQfinish(c);
    return url;
}

/* ---- operations -------------------------------------------------------------- */

typedef struct search_ctx {
    ds_memory *mem;
    PGconn *raw;
    const query *qs;
    int next;
    double hits;   /* recall accounting over every operation */
    long ops;
    const char *raw_sql;
} search_ctx;

static void score(search_ctx *s, const query *q, const int64_t *ids, int n) {
    int hit = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < K; j++)
            hit += ids[i] == q->truth[j];
    s->hits += hit / (double)K;
    s->ops++;
}

static bool op_library(void *p) {
    search_ctx *s = p;
    const query *q = &s->qs[s->next++ % QUERIES];
    ds_memory_facts *out;
    ds_error err = {0};
    if (ds_memory_search(s->mem, q->user, q->v, DIM, K, NULL, &out, &err) !=
        DS_OK) {
        fprintf(stderr, "search: %s\n", err.message);
        return false;
    }
    int64_t ids[K];
    int n = (int)(out->count < K ? out->count : K);
    for (int i = 0; i < n; i++)
        ids[i] = out->items[i]->id;
    score(s, q, ids, n);
    ds_memory_facts_free(out);
    return true;
}

static void put_be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static void put_be32(char *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static int64_t get_be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return (int64_t)v;
}

/* Binary real[] of a query. */
static void real_array(const float *v, char *out) {
    put_be32(out, 1);
    put_be32(out + 4, 0);
    put_be32(out + 8, 700);
    put_be32(out + 12, DIM);
    put_be32(out + 16, 1);
    for (int i = 0; i < DIM; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], 4);
        put_be32(out + 20 + 8 * i, 4);
        put_be32(out + 24 + 8 * i, bits);
    }
}

/* Raw libpq, fallback database: every float32 vector of the user, dot
 * products and a top 10 in C (the same work as an exact scan). */
static bool op_raw_fetch_score(void *p) {
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
        float x[DIM];
        memcpy(x, PQgetvalue(r, i, 1), sizeof x); /* little-endian host */
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

/* Raw libpq, one statement with (user, real[] query) returning ids. */
static bool op_raw_sql(void *p) {
    search_ctx *s = p;
    const query *q = &s->qs[s->next++ % QUERIES];
    char user[8], arr[20 + 8 * DIM];
    put_be64(user, (uint64_t)q->user);
    real_array(q->v, arr);
    const char *vals[2] = {user, arr};
    int lens[2] = {8, (int)sizeof arr}, fmts[2] = {1, 1};
    PGresult *r = PQexecPrepared(s->raw, "search", 2, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "raw search: %s", PQerrorMessage(s->raw));
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

static PGconn *raw_prepared(const char *url, const char *name,
                            const char *sql) {
    PGconn *c = connect_or_die(url);
    PQclear(sql_or_die(c, "SET jit = off"));
    Oid types[2] = {20, 1021};
    PGresult *r = PQprepare(c, name, sql, strcmp(name, "fetch") ? 2 : 1,
                            types);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "prepare %s: %s", name, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    return c;
}

/* ---- cases ------------------------------------------------------------------- */

static void run_case(const char *name, int rounds, double side,
                     search_ctx *ours, bench_op_fn ours_fn, search_ctx *base,
                     bench_op_fn base_fn) {
    void *a[1] = {ours}, *b[1] = {base};
    /* untimed queries (at most `side` seconds) so both sides start warm */
    int64_t until = bench_now_ns() + (int64_t)(side * 1e9);
    for (int i = 0; i < QUERIES && bench_now_ns() < until; i++)
        if (!ours_fn(ours) || !base_fn(base))
            exit(1);
    ours->hits = base->hits = 0;
    ours->ops = base->ops = 0;
    bench_result ra, rb;
    bench_ab(rounds, side, 1, ours_fn, a, 1, base_fn, b, &ra, &rb);
    if (ra.failed || rb.failed)
        exit(1);
    char extra[160];
    snprintf(extra, sizeof extra,
             "recall=%.3f baseline_recall=%.3f baseline_p50_us=%.1f",
             ours->hits / (double)ours->ops, base->hits / (double)base->ops,
             rb.p50_us);
    bench_print(PROGRAM, name, 1, &ra, &rb, extra);
}

static bool server_has_pgvector(const char *url) {
    PGconn *c = connect_or_die(url);
    PGresult *r = sql_or_die(c, "SELECT 1 FROM pg_available_extensions "
                                "WHERE name = 'vector'");
    bool yes = PQntuples(r) == 1;
    PQclear(r);
    PQfinish(c);
    return yes;
}

/* A side table with the vectors of the queried small users as real[]:
 * what scoring inside PostgreSQL without an extension has to work on. */
static void prepare_sql_scoring(const char *url) {
    PGconn *c = connect_or_die(url);
    PGresult *r = PQexec(c, "SELECT count(*) FROM bench_real_facts");
    bool ready = PQresultStatus(r) == PGRES_TUPLES_OK &&
                 atoi(PQgetvalue(r, 0, 0)) == HOT_USERS * SMALL_USER_FACTS;
    PQclear(r);
    if (!ready) {
        PQclear(sql_or_die(c, "DROP TABLE IF EXISTS bench_real_facts; "
                              "CREATE TABLE bench_real_facts (id bigint, "
                              "user_id bigint, embedding real[]); "
                              "CREATE INDEX ON bench_real_facts (user_id)"));
        PQclear(PQprepare(c, "ins",
                          "INSERT INTO bench_real_facts VALUES ($1, $2, $3)",
                          0, NULL));
        PQclear(sql_or_die(c, "BEGIN"));
        char arr[20 + 8 * DIM], id[8], user[8];
        for (int i = 0; i < TOTAL; i++) {
            if (owner[i] < 2 || owner[i] > 1 + HOT_USERS)
                continue;
            put_be64(id, (uint64_t)i + 1);
            put_be64(user, (uint64_t)owner[i]);
            real_array(vecs + (size_t)i * DIM, arr);
            const char *vals[3] = {id, user, arr};
            int lens[3] = {8, 8, (int)sizeof arr}, fmts[3] = {1, 1, 1};
            PQclear(PQexecPrepared(c, "ins", 3, vals, lens, fmts, 0));
        }
        PQclear(sql_or_die(c, "COMMIT; ANALYZE bench_real_facts"));
    }
    PQfinish(c);
}

int main(void) {
    const char *admin = bench_env("DATABASE_URL");
    double secs = bench_seconds(6);
    int rounds = 4;
    double side = secs / (2.0 * rounds);
    bool fresh = getenv("BENCH_MEMORY_FRESH") && *getenv("BENCH_MEMORY_FRESH");

    generate();
    query *small = make_queries(false), *big = make_queries(true);
    char *migrations = read_migrations();
    bool pgv = server_has_pgvector(admin);
    char *fb_url = prepare_db(admin, "fallback", migrations, fresh);
    char *pv_url = pgv ? prepare_db(admin, "pgvector", migrations, fresh) : NULL;
    if (!pgv)
        fprintf(stderr, "%s: the server has no pgvector: pgvector cases "
                        "skipped\n", PROGRAM);

    const char *urls[2] = {fb_url, pv_url};
    const char *names[2] = {"fallback", "pgvector"};
    for (int b = 0; b < (pgv ? 2 : 1); b++) {
        ds_config *cfg = config_for(urls[b]);
        ds_pool *pool;
        ds_memory *mem;
        ds_error err = {0};
        if (ds_pool_open(cfg, &pool, &err) != DS_OK ||
            ds_memory_open(pool, cfg, &mem, &err) != DS_OK)
            die_ds("open", &err);
        PGconn *raw =
            b == 0 ? raw_prepared(urls[b], "fetch",
                                  "SELECT id, embedding FROM memory_facts "
                                  "WHERE user_id = $1")
                   : raw_prepared(urls[b], "search",
                                  "SELECT id FROM memory_facts WHERE "
                                  "user_id = $1 ORDER BY (embedding <=> "
                                  "(SELECT $2::vector)) + 0 LIMIT 10");
        for (int size = 0; size < 2; size++) {
            search_ctx ours = {mem, NULL, size ? big : small, 0, 0, 0, NULL};
            search_ctx base = {NULL, raw, size ? big : small, 0, 0, 0, NULL};
            char name[32];
            snprintf(name, sizeof name, "%s_%s", names[b], size ? "10k" : "1k");
            run_case(name, rounds, side, &ours, op_library, &base,
                     b == 0 ? op_raw_fetch_score : op_raw_sql);
        }
        if (b == 1) {
            ds_memory *hnsw;
            if (ds_config_set_int(cfg, "vector_exact_max_rows", 0, &err) !=
                    DS_OK ||
                ds_memory_open(pool, cfg, &hnsw, &err) != DS_OK)
                die_ds("open", &err);
            search_ctx ours = {hnsw, NULL, small, 0, 0, 0, NULL};
            search_ctx base = {NULL, raw, small, 0, 0, 0, NULL};
            run_case("pgvector_hnsw_1k", rounds, side, &ours, op_library,
                     &base, op_raw_sql);
            ds_memory_close(hnsw);
        }
        if (b == 0) {
            prepare_sql_scoring(urls[0]);
            PGconn *sqlc = raw_prepared(
                urls[0], "search",
                "SELECT id FROM bench_real_facts WHERE user_id = $1 ORDER BY "
                "(SELECT sum(a * b) FROM unnest(embedding, $2) AS t(a, b)) "
                "DESC LIMIT 10");
            search_ctx ours = {NULL, sqlc, small, 0, 0, 0, NULL};
            search_ctx base = {mem, NULL, small, 0, 0, 0, NULL};
            run_case("sql_scoring_1k", 2, side, &ours, op_raw_sql, &base,
                     op_library);
            PQfinish(sqlc);
        }
        PQfinish(raw);
        ds_memory_close(mem);
        ds_pool_close(pool);
        ds_config_free(cfg);
    }
    free(small);
    free(big);
    free(migrations);
    free(fb_url);
    free(pv_url);
    free(vecs);
    free(owner);
    free(centres);
    return 0;
}
