/*
 * bench_repo: the repositories against what a PostgreSQL expert would write
 * by hand with raw libpq for the same job: the idiomatic statement (never a
 * copy of the library's), prepared once per connection, binary results,
 * decoded into heap rows with the JSON parsed, as an application would.
 * Interleaved rounds (A B, B A, ...).
 *
 *   get_user           ds_user_get vs users LEFT JOIN profiles by id  1, 8 threads
 *   append_message     ds_message_append vs INSERT ... RETURNING with
 *                      the updated_at bump in the same statement     1, 8 threads
 *   list_last_50       ds_message_list_page newest-first, 50 rows, vs
 *                      WHERE conversation_id = $1 ORDER BY id DESC
 *                      LIMIT 50, on conversations of 100, 10,000 and
 *                      100,000 messages interleaved with others     1, 8 threads
 *   append_vs_naive_tx ds_message_append vs BEGIN; INSERT; UPDATE;
 *                      COMMIT (four round trips)                    1, 8 threads
 *   append_batch_100   ds_message_append_batch of 100 vs a raw pipeline
 *                      of the same 100 INSERTs + the bump in one
 *                      transaction                                   1 thread
 *   events_copy        ds_event_record_batch of 10,000 events (binary
 *                      COPY) vs a raw text-format COPY of the same   1 thread
 *
 *   get_user_shared4   ds_user_get on 8, 16 and 64 threads sharing a pool
 *                      of 4 connections vs the raw join on 4 threads with
 *                      4 connections (the same server concurrency), with
 *                      the pool's acquire waits                 8, 16, 64 threads
 *   get_user_shared4_handpool  the raw join on the same N threads sharing
 *                      the 4 raw connections through a minimal
 *                      hand-written pool (mutex, free stack, condition
 *                      variable) vs the 4 raw threads: what N threads on 4
 *                      connections cost on this machine without our pool
 *   ..._split          both again with the client on half the CPUs and
 *                      those 8 backends on the other half, as with a
 *                      server elsewhere (BENCH_PLACEMENT=shared|split|both)
 *
 * BENCH_SCALE=1 adds the production tiers (minutes, not for make check):
 *   get_user_1m        get_user on a users table of 1,000,000        1, 8 threads
 *   after_1m_appends   1,000,000 ds_message_append calls (8 threads, 2,000
 *                      conversations, autovacuum at its defaults), then
 *                      list_last_50 and the conversations table's HOT
 *                      ratio and size against its fresh size (BENCH_APPENDS
 *                      changes the count, BENCH_ACTIVITY_INTERVAL_MS the
 *                      appends' repo_activity_interval_ms)
 *
 * Needs DATABASE_URL; applies the sql/ migrations when the schema is missing.
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PROGRAM "bench_repo"
#define NUSERS 1000
#define MAXT 8

/* What an expert writes for each job, independently of the library: the
 * obvious join, the insert with its bump as one statement, the plain
 * keyset page. */
#define USER_SQL                                                               \
    "SELECT u.id, u.email, u.status, u.created_at, u.updated_at, "            \
    "u.deleted_at, p.display_name, p.locale, p.timezone, p.preferences, "     \
    "p.updated_at FROM users u LEFT JOIN profiles p ON p.user_id = u.id "     \
    "WHERE u.id = $1 AND u.deleted_at IS NULL"
#define APPEND_SQL                                                             \
    "WITH m AS (INSERT INTO messages (conversation_id, role, content, "       \
    "metadata, idempotency_key) VALUES ($1, $2, $3, $4, $5) RETURNING id, "   \
    "conversation_id, role, content, metadata, idempotency_key, created_at), " \
    "c AS (UPDATE conversations SET updated_at = now() WHERE id = $1) "       \
    "SELECT * FROM m"
#define LIST_SQL                                                               \
    "SELECT id, conversation_id, role, content, metadata, idempotency_key, "  \
    "created_at FROM messages WHERE conversation_id = $1 ORDER BY id DESC "   \
    "LIMIT $2"
#define NAIVE_INSERT_SQL                                                       \
    "INSERT INTO messages (conversation_id, role, content, metadata, "        \
    "idempotency_key) VALUES ($1, $2, $3, $4, $5) RETURNING id, "             \
    "conversation_id, role, content, metadata, idempotency_key, created_at"
#define BUMP_SQL "UPDATE conversations SET updated_at = now() WHERE id = $1"

static ds_pool *pool;
static int64_t user_ids[NUSERS];
static int64_t conv_ids[MAXT];      /* one conversation per thread: appends */
static int64_t list_conv;           /* the conversation list reads */
/* Conversations of 100, 10,000 and 100,000 messages, their ids spread
 * among 50,000 messages of 500 other conversations. */
static const int tier_sizes[] = {100, 10000, 100000};
static int64_t tier_conv[3];
static const char *content = "Sure, here is a short answer to your question "
                             "about the weather in Lisbon tomorrow.";

static _Noreturn void die(const char *what, const ds_error *err) {
    fprintf(stderr, "bench_repo: %s: %s\n", what, err ? err->message : "");
    exit(1);
}

typedef struct tctx {
    int index;
    uint64_t rng;
    PGconn *pg;      /* raw side */
    int64_t conv;
} tctx;

static uint64_t next_rand(tctx *t) {
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng;
}

/* ---- raw decode: what a hand-written application does with a row -------- */

typedef struct raw_row {
    int64_t id;
    char **text;
    json_t *json;
} raw_row;

static uint64_t be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

/* Copies the text columns of a row into one heap block and parses its
 * JSON column (jsonb binary: a version byte, then text). */
static void raw_decode(const PGresult *r, int row, const int *tcols, int nt,
                       int jcol) {
    size_t need = sizeof(raw_row) + sizeof(char *) * (size_t)nt;
    for (int i = 0; i < nt; i++)
        need += (size_t)PQgetlength(r, row, tcols[i]) + 1;
    raw_row *rr = malloc(need);
    rr->id = (int64_t)be64(PQgetvalue(r, row, 0));
    rr->text = (char **)(rr + 1);
    char *p = (char *)(rr->text + nt);
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)PQgetlength(r, row, tcols[i]);
        memcpy(p, PQgetvalue(r, row, tcols[i]), n);
        p[n] = '\0';
        rr->text[i] = p;
        p += n + 1;
    }
    rr->json = json_loadb(PQgetvalue(r, row, jcol) + 1,
                          (size_t)PQgetlength(r, row, jcol) - 1, 0, NULL);
    json_decref(rr->json);
    free(rr);
}

static const int user_tcols[] = {1, 2, 6, 7, 8};
static const int msg_tcols[] = {2, 3, 5};

static bool raw_ok(PGresult *r, ExecStatusType want) {
    if (PQresultStatus(r) == want)
        return true;
    fprintf(stderr, "raw: %s", PQresultErrorMessage(r));
    return false;
}

/* ---- get_user ---------------------------------------------------------------- */

static bool op_get_user(void *p) {
    tctx *t = p;
    ds_user *u;
    ds_error err;
    if (ds_user_get(pool, user_ids[next_rand(t) % NUSERS], &u, &err) != DS_OK) {
        fprintf(stderr, "get: %s\n", err.message);
        return false;
    }
    ds_user_free(u);
    return true;
}

/* The same call through a pool of 4 connections shared by more threads. */
static ds_pool *shared_pool;

static bool op_get_user_shared(void *p) {
    tctx *t = p;
    ds_user *u;
    ds_error err;
    if (ds_user_get(shared_pool, user_ids[next_rand(t) % NUSERS], &u, &err) !=
        DS_OK) {
        fprintf(stderr, "get: %s\n", err.message);
        return false;
    }
    ds_user_free(u);
    return true;
}

static bool raw_get_user(void *p) {
    tctx *t = p;
    char id[8];
    uint64_t v = (uint64_t)user_ids[next_rand(t) % NUSERS];
    for (int i = 7; i >= 0; i--, v >>= 8)
        id[i] = (char)(v & 0xff);
    const char *vals[] = {id};
    int lens[] = {8}, fmts[] = {1};
    PGresult *r = PQexecPrepared(t->pg, "get_user", 1, vals, lens, fmts, 1);
    bool ok = raw_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1;
    if (ok)
        raw_decode(r, 0, user_tcols, 5, 9);
    PQclear(r);
    return ok;
}

/* The anchor for oversubscription: N threads sharing the 4 raw connections
 * through the pool an expert writes by hand (no fairness: whoever locks
 * first after a release takes the connection). */
typedef struct handpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    PGconn *free_conns[4];
    int nfree;
} handpool;

static handpool shared_handpool = {PTHREAD_MUTEX_INITIALIZER,
                                   PTHREAD_COND_INITIALIZER, {NULL}, 0};

static bool handpool_get_user(void *p) {
    tctx *t = p;
    handpool *hp = &shared_handpool;
    pthread_mutex_lock(&hp->mu);
    while (hp->nfree == 0)
        pthread_cond_wait(&hp->cv, &hp->mu);
    t->pg = hp->free_conns[--hp->nfree];
    pthread_mutex_unlock(&hp->mu);
    bool ok = raw_get_user(t);
    pthread_mutex_lock(&hp->mu);
    hp->free_conns[hp->nfree++] = t->pg;
    pthread_cond_signal(&hp->cv);
    pthread_mutex_unlock(&hp->mu);
    t->pg = NULL;
    return ok;
}

/* ---- append ------------------------------------------------------------------ */

static bool op_append(void *p) {
    tctx *t = p;
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_ASSISTANT, content, 0, NULL, NULL};
    ds_message *msg;
    ds_error err;
    if (ds_message_append(pool, t->conv, &m, &msg, &err) != DS_OK) {
        fprintf(stderr, "append: %s\n", err.message);
        return false;
    }
    ds_message_free(msg);
    return true;
}

typedef struct append_params {
    char conv[8];
    const char *vals[5];
    int lens[5], fmts[5];
} append_params;

static void fill_append(append_params *a, int64_t conv) {
    uint64_t v = (uint64_t)conv;
    for (int i = 7; i >= 0; i--, v >>= 8)
        a->conv[i] = (char)(v & 0xff);
    a->vals[0] = a->conv;
    a->lens[0] = 8;
    a->vals[1] = "assistant";
    a->lens[1] = 9;
    a->vals[2] = content;
    a->lens[2] = (int)strlen(content);
    a->vals[3] = "\001{}";
    a->lens[3] = 3;
    a->vals[4] = NULL;
    a->lens[4] = 0;
    for (int i = 0; i < 5; i++)
        a->fmts[i] = 1;
}

static bool raw_append(void *p) {
    tctx *t = p;
    append_params a;
    fill_append(&a, t->conv);
    PGresult *r = PQexecPrepared(t->pg, "append", 5, a.vals, a.lens, a.fmts, 1);
    bool ok = raw_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1;
    if (ok)
        raw_decode(r, 0, msg_tcols, 3, 4);
    PQclear(r);
    return ok;
}

/* BEGIN; INSERT ... RETURNING; UPDATE; COMMIT: four round trips. */
static bool raw_naive_tx(void *p) {
    tctx *t = p;
    append_params a;
    fill_append(&a, t->conv);
    PGresult *r = PQexec(t->pg, "BEGIN");
    bool ok = raw_ok(r, PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexecPrepared(t->pg, "naive_insert", 5, a.vals, a.lens, a.fmts, 1);
    ok = ok && raw_ok(r, PGRES_TUPLES_OK);
    if (ok)
        raw_decode(r, 0, msg_tcols, 3, 4);
    PQclear(r);
    r = PQexecPrepared(t->pg, "bump", 1, a.vals, a.lens, a.fmts, 1);
    ok = ok && raw_ok(r, PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(t->pg, "COMMIT");
    ok = ok && raw_ok(r, PGRES_COMMAND_OK);
    PQclear(r);
    return ok;
}

/* ---- list_last_50 -------------------------------------------------------------- */

static bool op_list(void *p) {
    (void)p;
    ds_message_list *list;
    ds_error err;
    if (ds_message_list_page(pool, list_conv, DS_NEWEST_FIRST, NULL, 50, &list,
                             &err) != DS_OK) {
        fprintf(stderr, "list: %s\n", err.message);
        return false;
    }
    bool ok = list->count == 50;
    ds_message_list_free(list);
    return ok;
}

static bool raw_list(void *p) {
    tctx *t = p;
    char conv[8], limit[8];
    uint64_t vs[2] = {(uint64_t)list_conv, 50};
    char *bufs[2] = {conv, limit};
    for (int k = 0; k < 2; k++) {
        uint64_t v = vs[k];
        for (int i = 7; i >= 0; i--, v >>= 8)
            bufs[k][i] = (char)(v & 0xff);
    }
    const char *vals[] = {conv, limit};
    int lens[] = {8, 8}, fmts[] = {1, 1};
    PGresult *r = PQexecPrepared(t->pg, "list", 2, vals, lens, fmts, 1);
    bool ok = raw_ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 50;
    for (int i = 0; ok && i < 50; i++)
        raw_decode(r, i, msg_tcols, 3, 4);
    PQclear(r);
    return ok;
}

/* ---- batch append ---------------------------------------------------------------- */

#define BATCH 100

static bool op_batch(void *p) {
    tctx *t = p;
    ds_message_new m[BATCH];
    for (int i = 0; i < BATCH; i++) {
        m[i].size = sizeof m[i];
        m[i].role = i % 2 ? DS_ROLE_ASSISTANT : DS_ROLE_USER;
        m[i].content = content;
        m[i].content_len = 0;
        m[i].metadata = NULL;
        m[i].idempotency_key = NULL;
    }
    ds_message_list *out;
    ds_error err;
    if (ds_message_append_batch(pool, t->conv, m, BATCH, &out, &err) != DS_OK) {
        fprintf(stderr, "batch: %s\n", err.message);
        return false;
    }
    ds_message_list_free(out);
    return true;
}

/* The same rows through libpq's pipeline: BEGIN, 100 prepared INSERTs,
 * the bump and COMMIT in one round trip, every row decoded. */
static bool raw_batch(void *p) {
    tctx *t = p;
    PGconn *c = t->pg;
    append_params a;
    fill_append(&a, t->conv);
    if (!PQenterPipelineMode(c))
        return false;
    bool ok = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    for (int i = 0; ok && i < BATCH; i++) {
        a.vals[1] = i % 2 ? "assistant" : "user";
        a.lens[1] = i % 2 ? 9 : 4;
        ok = PQsendQueryPrepared(c, "naive_insert", 5, a.vals, a.lens, a.fmts, 1);
    }
    ok = ok && PQsendQueryPrepared(c, "bump", 1, a.vals, a.lens, a.fmts, 1);
    ok = ok && PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    ok = ok && PQpipelineSync(c);
    int results = 0;
    while (ok) {
        PGresult *r = PQgetResult(c);
        if (!r)
            continue; /* end of one query's results */
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (st == PGRES_TUPLES_OK) {
            raw_decode(r, 0, msg_tcols, 3, 4);
            results++;
        } else if (st != PGRES_COMMAND_OK) {
            fprintf(stderr, "raw batch: %s", PQresultErrorMessage(r));
            ok = false;
        }
        PQclear(r);
    }
    PQexitPipelineMode(c);
    return ok && results == BATCH;
}

/* ---- events through COPY ------------------------------------------------------------ */

#define EVENTS 10000
static ds_event events[EVENTS];

static bool op_copy(void *p) {
    (void)p;
    ds_error err;
    if (ds_event_record_batch(pool, events, EVENTS, &err) != DS_OK) {
        fprintf(stderr, "copy: %s\n", err.message);
        return false;
    }
    return true;
}

static bool raw_copy(void *p) {
    tctx *t = p;
    PGresult *r = PQexec(t->pg, "COPY analytics_events (user_id, name, "
                                "properties, occurred_at) FROM STDIN");
    bool ok = raw_ok(r, PGRES_COPY_IN);
    PQclear(r);
    char *buf = malloc(256 * 1024);
    size_t len = 0;
    for (int i = 0; ok && i < EVENTS; i++) {
        const ds_event *e = &events[i];
        char *props = e->properties ? json_dumps(e->properties, JSON_COMPACT) : NULL;
        len += (size_t)snprintf(buf + len, 1024, "%lld\t%s\t%s\t2026-01-01 00:00:00+00\n",
                                (long long)e->user_id, e->name, props ? props : "{}");
        free(props);
        if (len > 255 * 1024) {
            ok = PQputCopyData(t->pg, buf, (int)len) == 1;
            len = 0;
        }
    }
    ok = ok && (len == 0 || PQputCopyData(t->pg, buf, (int)len) == 1);
    ok = ok && PQputCopyEnd(t->pg, NULL) == 1;
    free(buf);
    while ((r = PQgetResult(t->pg)) != NULL) {
        ok = ok && raw_ok(r, PGRES_COMMAND_OK);
        PQclear(r);
    }
    return ok;
}

/* ---- setup ------------------------------------------------------------------------------ */

static void exec_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_repo: %s\n", PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
}

/* The embedded migrations, as an application deploys them (some steps
 * cannot run inside a transaction, so never the sql/ files by hand). */
static void ensure_schema(ds_pool *p) {
    ds_error err = {0};
    if (ds_migrate_up(p, NULL, NULL, &err) != DS_OK) {
        fprintf(stderr, "bench_repo: migrate: %s\n", err.message);
        exit(1);
    }
}

static PGconn *raw_connect(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "raw connect: %s", PQerrorMessage(c));
        exit(1);
    }
    struct {
        const char *name, *sql;
        int n;
        Oid types[5];
    } defs[] = {
        {"get_user", USER_SQL, 1, {20}},
        {"append", APPEND_SQL, 5, {20, 25, 25, 3802, 25}},
        {"list", LIST_SQL, 2, {20, 20}},
        {"naive_insert", NAIVE_INSERT_SQL, 5, {20, 25, 25, 3802, 25}},
        {"bump", BUMP_SQL, 1, {20}},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        PGresult *r = PQprepare(c, defs[i].name, defs[i].sql, defs[i].n, defs[i].types);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "prepare %s: %s", defs[i].name, PQresultErrorMessage(r));
            exit(1);
        }
        PQclear(r);
    }
    return c;
}

static void setup_data(void) {
    ds_error err = {0};
    char email[64];
    int64_t tag = (int64_t)bench_now_ns();
    json_t *prefs = json_pack("{s:s, s:b}", "theme", "dark", "beta", 1);
    ds_profile_fields pf = {sizeof(ds_profile_fields), "Bench User", "en-GB", "Europe/Lisbon", prefs};
    for (int i = 0; i < NUSERS; i++) {
        ds_user *u;
        snprintf(email, sizeof email, "bench%lld.%d@example.com", (long long)tag, i);
        if (ds_user_create(pool, email, &pf, &u, &err) != DS_OK)
            die("create user", &err);
        user_ids[i] = u->id;
        ds_user_free(u);
    }
    json_decref(prefs);
    for (int i = 0; i < MAXT; i++) {
        ds_conversation *c;
        if (ds_conversation_create(pool, user_ids[i], "bench", &c, &err) != DS_OK)
            die("create conversation", &err);
        conv_ids[i] = c->id;
        ds_conversation_free(c);
    }
    for (int i = 0; i < 3; i++) {
        ds_conversation *c;
        if (ds_conversation_create(pool, user_ids[MAXT], "history", &c, &err) != DS_OK)
            die("create conversation", &err);
        tier_conv[i] = c->id;
        ds_conversation_free(c);
    }
    list_conv = tier_conv[0];
    static json_t *props;
    props = json_pack("{s:s, s:i}", "page", "/chat", "ms", 120);
    for (int i = 0; i < EVENTS; i++) {
        events[i].size = sizeof events[i];
        events[i].user_id = user_ids[i % NUSERS];
        events[i].name = i % 3 ? "message_sent" : "page_view";
        events[i].properties = props;
        events[i].occurred_at = 0;
    }
}

/* The tier conversations' messages, in random order so that their ids
 * interleave with those of 500 other conversations, as in a live system. */
static void seed_tiers(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_repo: %s", PQerrorMessage(c));
        exit(1);
    }
    char sql[2048];
    snprintf(sql, sizeof sql,
             "WITH noise AS (INSERT INTO conversations (owner_id, title) SELECT "
             "%lld, 'noise' FROM generate_series(1, 500) RETURNING id), nz AS "
             "(SELECT array_agg(id) AS a FROM noise) "
             "INSERT INTO messages (conversation_id, role, content, metadata) "
             "SELECT conv, CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' "
             "END, '%s', '{\"model\": \"m-large\", \"tokens\": 42}' FROM ("
             "SELECT %lld AS conv, g FROM generate_series(1, %d) g UNION ALL "
             "SELECT %lld, g FROM generate_series(1, %d) g UNION ALL "
             "SELECT %lld, g FROM generate_series(1, %d) g UNION ALL "
             "SELECT nz.a[1 + g %% 500], g FROM nz, generate_series(1, 50000) g"
             ") s ORDER BY random()",
             (long long)user_ids[MAXT], content, (long long)tier_conv[0],
             tier_sizes[0], (long long)tier_conv[1], tier_sizes[1],
             (long long)tier_conv[2], tier_sizes[2]);
    exec_or_die(c, sql);
    exec_or_die(c, "ANALYZE messages");
    exec_or_die(c, "ANALYZE conversations");
    PQfinish(c);
}

/* ---- BENCH_SCALE=1: a users table of 1,000,000; 1,000,000 appends ------------ */

static long long sql_int(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        fprintf(stderr, "bench_repo: %s: %s", sql, PQresultErrorMessage(r));
        exit(1);
    }
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* Grows users (and profiles) to 1,000,000 rows and points get_user at 1,000
 * random ones of them. */
static void seed_million_users(PGconn *c) {
    long long have = sql_int(c, "SELECT count(*) FROM users");
    if (have < 1000000) {
        char sql[1024];
        snprintf(sql, sizeof sql,
                 "WITH u AS (INSERT INTO users (email) SELECT 'scale' || g || "
                 "'.' || extract(epoch FROM now())::bigint || '@example.com' "
                 "FROM generate_series(1, %lld) g RETURNING id) INSERT INTO "
                 "profiles (user_id, display_name, locale, timezone, "
                 "preferences) SELECT id, 'Scale User', 'en-GB', "
                 "'Europe/Lisbon', '{\"theme\": \"dark\", \"beta\": true}' "
                 "FROM u",
                 1000000 - have);
        exec_or_die(c, sql);
        exec_or_die(c, "VACUUM ANALYZE users");
        exec_or_die(c, "VACUUM ANALYZE profiles");
    }
    PGresult *r = PQexec(c, "SELECT id FROM users WHERE deleted_at IS NULL "
                            "ORDER BY random() LIMIT 1000");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != NUSERS) {
        fprintf(stderr, "bench_repo: sample users: %s", PQresultErrorMessage(r));
        exit(1);
    }
    for (int i = 0; i < NUSERS; i++)
        user_ids[i] = atoll(PQgetvalue(r, i, 0));
    PQclear(r);
}

#define SCALE_CONVS 2000
/* BENCH_APPENDS changes the count (a quick check of the scale path). */
static long scale_appends = 1000000;
#define SCALE_APPENDS scale_appends
static int64_t scale_conv[SCALE_CONVS];
/* The pool the appends use: `pool`, or one with BENCH_ACTIVITY_INTERVAL_MS
 * as repo_activity_interval_ms (a variant, never the default figure). */
static ds_pool *append_pool;

typedef struct append_worker {
    int index;
    long ops;
    bool failed;
} append_worker;

static void *append_worker_run(void *p) {
    append_worker *w = p;
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, content, 0, NULL, NULL};
    for (long i = 0; i < w->ops; i++) {
        ds_error err;
        int64_t conv = scale_conv[(w->index + i * MAXT) % SCALE_CONVS];
        if (ds_message_append(append_pool, conv, &m, NULL, &err) != DS_OK) {
            fprintf(stderr, "append: %s\n", err.message);
            w->failed = true;
            return NULL;
        }
    }
    return NULL;
}

/* The size `conversations` would have freshly filled with its current rows
 * at `fillfactor`: a copy of the rows into a new table, vacuumed. */
static long long fresh_bytes(PGconn *c, int fillfactor) {
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TEMP TABLE conv_fresh (LIKE conversations) "
             "WITH (fillfactor = %d)", fillfactor);
    exec_or_die(c, sql);
    exec_or_die(c, "INSERT INTO conv_fresh SELECT * FROM conversations ORDER BY id");
    exec_or_die(c, "VACUUM conv_fresh");
    long long bytes = sql_int(c, "SELECT pg_relation_size('pg_temp.conv_fresh')");
    exec_or_die(c, "DROP TABLE pg_temp.conv_fresh");
    return bytes;
}

typedef struct conv_state {
    long long upd, hot, dead, heap, table, idx, autovacuums;
} conv_state;

static conv_state read_conv_state(PGconn *c) {
    const char *sql =
        "SELECT n_tup_upd || ' ' || n_tup_hot_upd || ' ' || n_dead_tup || ' ' || "
        "pg_relation_size('conversations') || ' ' || "
        "pg_table_size('conversations') || ' ' || "
        "pg_indexes_size('conversations') || ' ' || coalesce(autovacuum_count, 0) "
        "FROM pg_stat_user_tables WHERE relname = 'conversations'";
    conv_state s;
    exec_or_die(c, "SELECT pg_stat_clear_snapshot()");
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        sscanf(PQgetvalue(r, 0, 0), "%lld %lld %lld %lld %lld %lld %lld", &s.upd,
               &s.hot, &s.dead, &s.heap, &s.table, &s.idx, &s.autovacuums) != 7) {
        fprintf(stderr, "bench_repo: conversations state: %s", PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
    return s;
}

/* 1,000,000 appends on 8 threads, round robin over 2,000 conversations,
 * autovacuum at its defaults; then the state of the conversations table:
 * updates, HOT updates, dead tuples, and its size against its size before
 * the appends and against fresh copies of its rows (at its own fillfactor,
 * which measures bloat, and at 100, which shows what the fillfactor's free
 * space costs). Sizes are of the main fork (the heap) unless named
 * `table` (pg_table_size: with the free space and visibility maps). */
static void run_million_appends(PGconn *c) {
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO conversations (owner_id, title) SELECT %lld, 'scale' "
             "FROM generate_series(1, %d) RETURNING id",
             (long long)user_ids[0], SCALE_CONVS);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != SCALE_CONVS) {
        fprintf(stderr, "bench_repo: %s", PQresultErrorMessage(r));
        exit(1);
    }
    for (int i = 0; i < SCALE_CONVS; i++)
        scale_conv[i] = atoll(PQgetvalue(r, i, 0));
    PQclear(r);
    exec_or_die(c, "VACUUM ANALYZE conversations");
    int fillfactor = (int)sql_int(
        c, "SELECT coalesce((SELECT option_value FROM pg_options_to_table("
           "reloptions) WHERE option_name = 'fillfactor'), '100')::int FROM "
           "pg_class WHERE oid = 'conversations'::regclass");
    const char *interval = getenv("BENCH_ACTIVITY_INTERVAL_MS");
    append_pool = pool;
    if (interval && *interval) {
        ds_config *cfg;
        ds_error err = {0};
        if (ds_config_new(&cfg, &err) != DS_OK ||
            ds_config_set(cfg, "database_url", bench_env("DATABASE_URL"), &err) != DS_OK ||
            ds_config_set_int(cfg, "pool_max", MAXT, &err) != DS_OK ||
            ds_config_set(cfg, "repo_activity_interval_ms", interval, &err) != DS_OK ||
            ds_pool_open(cfg, &append_pool, &err) != DS_OK)
            die("append pool", &err);
        ds_config_free(cfg);
    }
    long long interval_ms;
    if (interval && *interval) {
        interval_ms = atoll(interval);
    } else { /* the library's default, as `pool` has it */
        ds_config *cfg;
        int64_t v = -1;
        if (ds_config_new(&cfg, NULL) == DS_OK &&
            ds_config_get_int(cfg, "repo_activity_interval_ms", &v, NULL) != DS_OK)
            v = -1;
        ds_config_free(cfg);
        interval_ms = v;
    }
    conv_state s0 = read_conv_state(c);
    pthread_t th[MAXT];
    append_worker w[MAXT];
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < MAXT; i++) {
        w[i] = (append_worker){i, SCALE_APPENDS / MAXT, false};
        pthread_create(&th[i], NULL, append_worker_run, &w[i]);
    }
    for (int i = 0; i < MAXT; i++) {
        pthread_join(th[i], NULL);
        if (w[i].failed)
            exit(1);
    }
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    if (append_pool != pool)
        ds_pool_close(append_pool);
    sleep(2); /* server statistics reach the shared view within a second */
    conv_state s1 = read_conv_state(c);
    long long fresh_same = fresh_bytes(c, fillfactor);
    long long fresh_full = fresh_bytes(c, 100);
    long long upd = s1.upd - s0.upd, hot = s1.hot - s0.hot;
    printf("BENCH %s append_1m threads=%d ops_s=%.0f appends=%ld conversations=%d "
           "activity_interval_ms=%lld conv_rows=%lld fillfactor=%d conv_updates=%lld conv_hot_updates=%lld "
           "hot_ratio=%.3f dead_tuples=%lld heap_bytes_before=%lld heap_bytes_after=%lld "
           "fresh_bytes_same_fillfactor=%lld fresh_bytes_fillfactor100=%lld "
           "size_ratio_same_fillfactor=%.2f size_ratio_fillfactor100=%.2f "
           "conv_table_bytes_before=%lld conv_table_bytes_after=%lld size_ratio=%.2f "
           "conv_index_bytes_before=%lld conv_index_bytes_after=%lld autovacuums=%lld "
           "seconds=%.0f\n",
           PROGRAM, MAXT, SCALE_APPENDS / secs, SCALE_APPENDS, SCALE_CONVS, interval_ms,
           sql_int(c, "SELECT count(*) FROM conversations"), fillfactor, upd, hot,
           upd ? (double)hot / (double)upd : 1.0, s1.dead, s0.heap, s1.heap, fresh_same,
           fresh_full, (double)s1.heap / (double)fresh_same,
           (double)s1.heap / (double)fresh_full, s0.table, s1.table,
           (double)s1.table / (double)s0.table, s0.idx, s1.idx,
           s1.autovacuums - s0.autovacuums, secs);
    fflush(stdout);
}

static ds_pool *open_pool(const char *url, int size) {
    ds_config *cfg;
    ds_pool *p;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "acquire_timeout_ms", 30000, &err) != DS_OK ||
        ds_pool_open(cfg, &p, &err) != DS_OK)
        die("pool", &err);
    ds_config_free(cfg);
    return p;
}

static tctx ours[MAXT], raw[MAXT];
static void *ours_p[MAXT], *raw_p[MAXT];

/* ---- CPU per operation: figures a loaded machine barely moves ---------------
 * Beside throughput, each case reports the CPU time one operation costs:
 * this process's (both sides run in it, one after the other) and the
 * server backends' (each side has its own connections, so their CPU time
 * is that side's). Read from /proc/<pid>/schedstat, so only when the
 * server runs on this machine; otherwise the server figures are left
 * out. */

typedef struct side_pids {
    int pid[MAXT];
    int n;
} side_pids;

/* A backend's CPU time in ns, or -1 when it is not a local postgres. */
static long long backend_cpu_ns(int pid) {
    char path[64], comm[32] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    bool is_pg = fgets(comm, sizeof comm, f) && strncmp(comm, "postgres", 8) == 0;
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    long long ns = -1;
    if (is_pg && (f = fopen(path, "r")) != NULL) {
        if (fscanf(f, "%lld", &ns) != 1)
            ns = -1;
        fclose(f);
    }
    return ns;
}

static long long side_cpu_ns(const side_pids *s) {
    long long sum = 0;
    for (int i = 0; i < s->n; i++) {
        long long ns = backend_cpu_ns(s->pid[i]);
        if (ns < 0)
            return -1;
        sum += ns;
    }
    return s->n ? sum : -1;
}

/* The backends of every connection of `p` (`size` of them, all idle). */
static void pool_pids(ds_pool *p, int size, side_pids *out) {
    ds_conn *held[MAXT];
    ds_error err = {0};
    out->n = 0;
    for (int i = 0; i < size && i < MAXT; i++) {
        if (ds_pool_acquire(p, &held[i], &err) != DS_OK)
            die("acquire", &err);
        out->pid[out->n++] = PQbackendPID(ds_pool_conn_pg(held[i]));
    }
    for (int i = 0; i < out->n; i++)
        ds_pool_release(held[i]);
}

static void raw_pids(int threads, side_pids *out) {
    out->n = 0;
    for (int i = 0; i < threads && i < MAXT; i++)
        out->pid[out->n++] = PQbackendPID(raw[i].pg);
}

/* Appends the CPU figures of a case to `more` (capacity `cap`):
 * cpu_us_op / baseline_cpu_us_op (this process), server_us_op /
 * baseline_server_us_op (the backends) and cpu_ratio, the baseline's
 * total CPU per operation over ours (higher is better, like ratio). */
static void append_cpu(char *more, size_t cap, const bench_result *ra,
                       const bench_result *rb, long long srv_a, long long srv_b) {
    size_t len = strlen(more);
    double client_a = ra->cpu_us_op, client_b = rb->cpu_us_op;
    if (srv_a < 0 || srv_b < 0 || !ra->ops || !rb->ops) {
        snprintf(more + len, cap - len, "%scpu_us_op=%.2f baseline_cpu_us_op=%.2f",
                 len ? " " : "", client_a, client_b);
        return;
    }
    double server_a = (double)srv_a / 1e3 / (double)ra->ops;
    double server_b = (double)srv_b / 1e3 / (double)rb->ops;
    snprintf(more + len, cap - len,
             "%scpu_us_op=%.2f baseline_cpu_us_op=%.2f server_us_op=%.2f "
             "baseline_server_us_op=%.2f cpu_ratio=%.3f",
             len ? " " : "", client_a, client_b, server_a, server_b,
             (client_b + server_b) / (client_a + server_a));
}

/* BENCH_ONLY=<case> runs one case (for quick iterations). */
static bool selected(const char *name) {
    const char *only = getenv("BENCH_ONLY");
    return !only || !*only || strcmp(only, name) == 0;
}

static void run_case(const char *name, int threads, bench_op_fn a, bench_op_fn b,
                     double secs, int rounds, const char *extra) {
    if (!selected(name))
        return;
    bench_result ra, rb;
    side_pids pa, pb;
    pool_pids(pool, MAXT, &pa);
    raw_pids(threads, &pb);
    long long a0 = side_cpu_ns(&pa), b0 = side_cpu_ns(&pb);
    bench_ab(rounds, secs / (2.0 * rounds), threads, a, ours_p, threads, b, raw_p,
             &ra, &rb);
    long long a1 = side_cpu_ns(&pa), b1 = side_cpu_ns(&pb);
    if (ra.failed || rb.failed) {
        fprintf(stderr, "bench_repo: %s failed\n", name);
        exit(1);
    }
    ds_pool_stats ps = DS_POOL_STATS_INIT;
    char more[512];
    if (ds_pool_stats_get(pool, &ps, NULL) != DS_OK)
        exit(1);
    snprintf(more, sizeof more, "%s%sacquire_wait_p99_us=%lld", extra, *extra ? " " : "",
             (long long)ps.acquire_wait_p99_us);
    append_cpu(more, sizeof more, &ra, &rb, a0 < 0 || a1 < 0 ? -1 : a1 - a0,
               b0 < 0 || b1 < 0 ? -1 : b1 - b0);
    bench_print(PROGRAM, name, threads, &ra, &rb, more);
    fflush(stdout);
}

/* N threads on a fresh 4-connection pool (its wait statistics its own)
 * against 4 threads on 4 raw connections: more, shorter rounds, since a
 * loaded machine's drift is what limits this comparison. */
static void run_shared4(const char *url, double secs) {
    enum { SHARED_MAXT = 64 };
    static tctx sh[SHARED_MAXT];
    void *sh_p[SHARED_MAXT];
    static const int counts[] = {8, 16, 64};
    enum { NC = sizeof counts / sizeof counts[0] };
    for (size_t kk = 0; kk < 2 * NC; kk++) {
        /* the second pass with client and backends on separate CPUs */
        bool split = kk >= NC;
        if (!bench_placement_selected(split ? "split" : "shared"))
            continue;
        const size_t k = kk % NC;
        const char *sfx = split ? "_split" : "";
        char cname[64];
        shared_pool = open_pool(url, 4);
        for (int i = 0; i < counts[k]; i++) {
            sh[i] = (tctx){i, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1), NULL, 0};
            sh_p[i] = &sh[i];
        }
        /* BENCH_ROUNDS when given, else 15 */
        const char *rounds_env = getenv("BENCH_ROUNDS");
        int rounds = rounds_env && atoi(rounds_env) > 0 ? atoi(rounds_env) : 15;
        bench_result ra, rb;
        side_pids pa, pb;
        pool_pids(shared_pool, 4, &pa);
        raw_pids(4, &pb);
        if (split) {
            int pids[8];
            char why[160];
            memcpy(pids, pa.pid, 4 * sizeof *pids);
            memcpy(pids + 4, pb.pid, 4 * sizeof *pids);
            if (pa.n != 4 || pb.n != 4 ||
                !bench_place_split(pids, 8, why, sizeof why)) {
                printf("# get_user_shared4_split threads=%d skipped: %s\n",
                       counts[k], pa.n != 4 || pb.n != 4 ? "backends unknown" : why);
                ds_pool_close(shared_pool);
                shared_pool = NULL;
                continue;
            }
        }
        long long a0 = side_cpu_ns(&pa), b0 = side_cpu_ns(&pb);
        bench_ab(rounds, 2 * secs / (2.0 * rounds), counts[k], op_get_user_shared,
                 sh_p, 4, raw_get_user, raw_p, &ra, &rb);
        long long a1 = side_cpu_ns(&pa), b1 = side_cpu_ns(&pb);
        if (ra.failed || rb.failed) {
            fprintf(stderr, "bench_repo: get_user_shared4 failed\n");
            exit(1);
        }
        ds_pool_stats ps = DS_POOL_STATS_INIT;
        if (ds_pool_stats_get(shared_pool, &ps, NULL) != DS_OK)
            exit(1);
        char more[512];
        snprintf(more, sizeof more,
                 "connections=4 baseline_threads=4 acquire_wait_p50_us=%lld "
                 "acquire_wait_p99_us=%lld acquire_wait_max_us=%lld "
                 "overtaken_max=%llu",
                 (long long)ps.acquire_wait_p50_us,
                 (long long)ps.acquire_wait_p99_us,
                 (long long)ps.acquire_wait_max_us,
                 (unsigned long long)ps.waiter_overtaken_max);
        append_cpu(more, sizeof more, &ra, &rb, a0 < 0 || a1 < 0 ? -1 : a1 - a0,
                   b0 < 0 || b1 < 0 ? -1 : b1 - b0);
        snprintf(cname, sizeof cname, "get_user_shared4%s", sfx);
        bench_print(PROGRAM, cname, counts[k], &ra, &rb, more);
        snprintf(more, sizeof more, "%s threads=%d", cname, counts[k]);
        bench_pool_counters_label(more);
        ds_pool_close(shared_pool);
        shared_pool = NULL;

        /* the same N threads on the same 4 raw connections, hand-pooled */
        shared_handpool.nfree = 0;
        for (int i = 0; i < 4; i++)
            shared_handpool.free_conns[shared_handpool.nfree++] = raw[i].pg;
        bench_result ha, hb;
        bench_ab(rounds, 2 * secs / (2.0 * rounds), counts[k], handpool_get_user,
                 sh_p, 4, raw_get_user, raw_p, &ha, &hb);
        if (ha.failed || hb.failed) {
            fprintf(stderr, "bench_repo: get_user_shared4_handpool failed\n");
            exit(1);
        }
        snprintf(cname, sizeof cname, "get_user_shared4_handpool%s", sfx);
        bench_print(PROGRAM, cname, counts[k], &ha, &hb,
                    "connections=4 baseline_threads=4 "
                    "pool=hand_written_mutex_condvar");
        if (split)
            bench_place_unsplit();
    }
}

int main(void) {
    const char *url = bench_env("DATABASE_URL");
    double secs = bench_seconds(4.5);
    bench_pool_counters_to_stderr();
    pool = open_pool(url, MAXT);
    ensure_schema(pool);
    setup_data();
    seed_tiers(url);
    for (int i = 0; i < MAXT; i++) {
        ours[i] = (tctx){i, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1), NULL, conv_ids[i]};
        raw[i] = (tctx){i, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1), raw_connect(url),
                        conv_ids[i]};
        ours_p[i] = &ours[i];
        raw_p[i] = &raw[i];
    }
    /* BENCH_ROUNDS: more, shorter rounds follow a loaded machine's drift */
    const char *rounds_env = getenv("BENCH_ROUNDS");
    int rounds = rounds_env && atoi(rounds_env) > 0 ? atoi(rounds_env) : 5;
    int tcounts[2] = {1, 8};
    for (int k = 0; k < 2; k++)
        run_case("get_user", tcounts[k], op_get_user, raw_get_user, secs, rounds, "");
    for (int k = 0; k < 2; k++)
        run_case("append_message", tcounts[k], op_append, raw_append, secs, rounds,
                 "bump=same_statement");
    for (int t = 0; t < 3; t++) {
        char extra[64];
        snprintf(extra, sizeof extra, "rows=50 messages=%d", tier_sizes[t]);
        list_conv = tier_conv[t];
        for (int k = 0; k < 2; k++)
            run_case("list_last_50", tcounts[k], op_list, raw_list, secs, rounds,
                     extra);
    }
    for (int k = 0; k < 2; k++)
        run_case("append_vs_naive_tx", tcounts[k], op_append, raw_naive_tx, secs, rounds,
                 "baseline=begin_insert_update_commit round_trips=1_vs_4");
    run_case("append_batch_100", 1, op_batch, raw_batch, secs, rounds,
             "rows=100 baseline=libpq_pipeline_one_tx");
    if (selected("get_user_shared4"))
        run_shared4(url, secs);
    const char *scale = getenv("BENCH_SCALE");
    if (scale && strcmp(scale, "1") == 0) {
        PGconn *c = PQconnectdb(url);
        if (PQstatus(c) != CONNECTION_OK)
            return 1;
        const char *appends = getenv("BENCH_APPENDS");
        if (appends && atol(appends) >= MAXT)
            scale_appends = atol(appends);
        seed_million_users(c);
        for (int k = 0; k < 2; k++)
            run_case("get_user", tcounts[k], op_get_user, raw_get_user, secs, rounds,
                     "users=1000000");
        if (selected("append_1m")) {
            run_million_appends(c);
            for (int t = 0; t < 3; t++) {
                char extra[96];
                snprintf(extra, sizeof extra, "rows=50 messages=%d after_appends=%ld",
                         tier_sizes[t], scale_appends);
                list_conv = tier_conv[t];
                for (int k = 0; k < 2; k++)
                    run_case("list_last_50", tcounts[k], op_list, raw_list, secs,
                             rounds, extra);
            }
        }
        PQfinish(c);
    }
    if (selected("events_copy")) {
        bench_result ra, rb;
        side_pids pa, pb;
        pool_pids(pool, MAXT, &pa);
        raw_pids(1, &pb);
        long long a0 = side_cpu_ns(&pa), b0 = side_cpu_ns(&pb);
        bench_ab(3, secs / 6.0, 1, op_copy, ours_p, 1, raw_copy, raw_p, &ra, &rb);
        long long a1 = side_cpu_ns(&pa), b1 = side_cpu_ns(&pb);
        if (ra.failed || rb.failed)
            return 1;
        char extra[512];
        snprintf(extra, sizeof extra,
                 "rows=%d events_s=%.0f baseline_events_s=%.0f baseline=libpq_text_copy",
                 EVENTS, ra.ops_s * EVENTS, rb.ops_s * EVENTS);
        append_cpu(extra, sizeof extra, &ra, &rb, a0 < 0 || a1 < 0 ? -1 : a1 - a0,
                   b0 < 0 || b1 < 0 ? -1 : b1 - b0);
        bench_print(PROGRAM, "events_copy", 1, &ra, &rb, extra);
    }
    for (int i = 0; i < MAXT; i++)
        PQfinish(raw[i].pg);
    ds_pool_close(pool);
    return 0;
}
