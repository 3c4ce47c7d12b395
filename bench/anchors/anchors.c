/*
 * anchors: the library side by side with what users would pick instead,
 * Drizzle ORM with prepared statements on node-postgres (drizzle.mjs next to
 * this file), on the same database in the same run, interleaved A B A B.
 *
 *   get_user    a user with its profile, by id (1,000 users)
 *   list        the newest 50 messages of a conversation of 100, 10,000 and
 *               100,000 messages (ids interleaved with other conversations)
 *   append      a message plus the conversation's activity bump
 *
 * 1 and 8 clients each (threads here, concurrent clients of a pg.Pool of
 * the same size there). ratio = our operations per second / Drizzle's.
 *
 *   anchors DIR    (DIR holds drizzle.mjs and its node_modules)
 *
 * Needs DATABASE_URL of a migrated database and `node` on the PATH; run by
 * `make bench-anchors`.
 */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"

#define PROGRAM "bench_anchors"
#define NUSERS 1000
#define MAXT 8

static ds_pool *pool;
static int64_t user_ids[NUSERS];
static int64_t append_conv[MAXT];
static int64_t list_conv;
static const int tier_sizes[] = {100, 10000, 100000};
static int64_t tier_conv[3];
static const char *anchors_dir;
static const char *content = "Sure, here is a short answer to your question "
                             "about the weather in Lisbon tomorrow.";

static void die(const char *what, const char *msg) {
    fprintf(stderr, "anchors: %s: %s\n", what, msg ? msg : "");
    exit(1);
}

typedef struct tctx {
    int index;
    uint64_t rng;
} tctx;

static bool op_get_user(void *p) {
    tctx *t = p;
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    ds_user *u;
    ds_error err;
    if (ds_user_get(pool, user_ids[t->rng % NUSERS], &u, &err) != DS_OK)
        return false;
    ds_user_free(u);
    return true;
}

static bool op_list(void *p) {
    (void)p;
    ds_message_list *list;
    ds_error err;
    if (ds_message_list_page(pool, list_conv, DS_NEWEST_FIRST, NULL, 50, &list,
                             &err) != DS_OK)
        return false;
    bool ok = list->count == 50;
    ds_message_list_free(list);
    return ok;
}

static bool op_append(void *p) {
    tctx *t = p;
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_ASSISTANT, content, 0, NULL, NULL};
    ds_message *msg;
    ds_error err;
    if (ds_message_append(pool, append_conv[t->index], &m, &msg, &err) != DS_OK)
        return false;
    ds_message_free(msg);
    return true;
}

/* One Drizzle round: the node process measures its own window (after a
 * warm-up) and prints ops and seconds. */
static bool drizzle_round(const char *workload, int clients, double seconds,
                          double *ops_s, double *p50, double *p99) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "node '%s/drizzle.mjs' %s %d %.3f", anchors_dir,
             workload, clients, seconds);
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    char line[256] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    int rc = pclose(f);
    long long ops;
    double secs;
    if (!got || rc != 0 ||
        sscanf(line, "ops=%lld seconds=%lf p50_us=%lf p99_us=%lf", &ops, &secs,
               p50, p99) != 4 || secs <= 0)
        return false;
    *ops_s = (double)ops / secs;
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static tctx ctxs[MAXT];
static void *ctx_p[MAXT];

static void run_case(const char *name, const char *workload, bench_op_fn fn,
                     int threads, double secs, const char *extra) {
    enum { ROUNDS = 3 };
    double side = secs / (2.0 * ROUNDS), ours[ROUNDS], theirs[ROUNDS];
    double p50s[ROUNDS], p99s[ROUNDS];
    bench_hist h = {0};
    for (int r = 0; r < ROUNDS; r++) {
        bool failed = false;
        ours[r] = bench_run(threads, side, fn, ctx_p, &h, &failed);
        if (failed)
            die(name, "the library side failed");
        if (!drizzle_round(workload, threads, side, &theirs[r], &p50s[r], &p99s[r]))
            die(name, "the Drizzle side failed (is `make bench-anchors` installing it?)");
    }
    qsort(ours, ROUNDS, sizeof ours[0], cmp_double);
    qsort(theirs, ROUNDS, sizeof theirs[0], cmp_double);
    qsort(p50s, ROUNDS, sizeof p50s[0], cmp_double);
    qsort(p99s, ROUNDS, sizeof p99s[0], cmp_double);
    printf("BENCH %s %s threads=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f "
           "baseline_ops_s=%.0f ratio=%.3f baseline=drizzle_orm_0.45.4_prepare_pg_8.23.1 "
           "baseline_p50_us=%.1f baseline_p99_us=%.1f%s%s\n",
           PROGRAM, name, threads, ours[ROUNDS / 2], bench_hist_percentile_us(&h, 0.5),
           bench_hist_percentile_us(&h, 0.99), theirs[ROUNDS / 2],
           ours[ROUNDS / 2] / theirs[ROUNDS / 2], p50s[ROUNDS / 2], p99s[ROUNDS / 2],
           *extra ? " " : "", extra);
    fflush(stdout);
}

static void exec_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die("setup", PQresultErrorMessage(r));
    PQclear(r);
}

static void setup(const char *url) {
    ds_error err = {0};
    json_t *prefs = json_pack("{s:s, s:b}", "theme", "dark", "beta", 1);
    ds_profile_fields pf = {sizeof(ds_profile_fields), "Anchor User", "en-GB", "Europe/Lisbon", prefs};
    long long tag = (long long)bench_now_ns();
    for (int i = 0; i < NUSERS; i++) {
        char email[80];
        ds_user *u;
        snprintf(email, sizeof email, "anchor%lld.%d@example.com", tag, i);
        if (ds_user_create(pool, email, &pf, &u, &err) != DS_OK)
            die("create user", err.message);
        user_ids[i] = u->id;
        ds_user_free(u);
    }
    json_decref(prefs);
    for (int i = 0; i < MAXT + 3; i++) {
        ds_conversation *c;
        if (ds_conversation_create(pool, user_ids[i], "anchors", &c, &err) != DS_OK)
            die("create conversation", err.message);
        if (i < MAXT)
            append_conv[i] = c->id;
        else
            tier_conv[i - MAXT] = c->id;
        ds_conversation_free(c);
    }
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
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
             (long long)user_ids[0], content, (long long)tier_conv[0], tier_sizes[0],
             (long long)tier_conv[1], tier_sizes[1], (long long)tier_conv[2],
             tier_sizes[2]);
    exec_or_die(c, sql);
    exec_or_die(c, "ANALYZE messages");
    exec_or_die(c, "ANALYZE conversations");
    PQfinish(c);

    /* the Drizzle side's ids */
    size_t cap = NUSERS * 21 + 1, len = 0;
    char *list = malloc(cap);
    if (!list)
        die("setup", "out of memory");
    list[0] = '\0';
    for (int i = 0; i < NUSERS; i++)
        len += (size_t)snprintf(list + len, cap - len, "%s%lld", i ? "," : "",
                                (long long)user_ids[i]);
    setenv("ANCHOR_USER_IDS", list, 1);
    len = 0;
    for (int i = 0; i < MAXT; i++)
        len += (size_t)snprintf(list + len, cap - len, "%s%lld", i ? "," : "",
                                (long long)append_conv[i]);
    setenv("ANCHOR_APPEND_CONVS", list, 1);
    free(list);
}

static void set_list_conv(int64_t id) {
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)id);
    setenv("ANCHOR_LIST_CONV", v, 1);
    list_conv = id;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: anchors DIR\n");
        return 2;
    }
    anchors_dir = argv[1];
    const char *url = bench_env("DATABASE_URL");
    double secs = bench_seconds(6);
    ds_config *cfg;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", MAXT, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", MAXT, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        die("pool", err.message);
    ds_config_free(cfg);
    setup(url);
    for (int i = 0; i < MAXT; i++) {
        ctxs[i] = (tctx){i, 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)};
        ctx_p[i] = &ctxs[i];
    }
    static const int clients[] = {1, 8};
    for (int k = 0; k < 2; k++)
        run_case("get_user", "get_user", op_get_user, clients[k], secs, "users=1000");
    for (int t = 0; t < 3; t++) {
        char extra[48];
        set_list_conv(tier_conv[t]);
        snprintf(extra, sizeof extra, "rows=50 messages=%d", tier_sizes[t]);
        for (int k = 0; k < 2; k++)
            run_case("list_last_50", "list", op_list, clients[k], secs, extra);
    }
    for (int k = 0; k < 2; k++)
        run_case("append_message", "append", op_append, clients[k], secs,
                 "drizzle=insert_then_update_prepared");
    ds_pool_close(pool);
    return 0;
}
