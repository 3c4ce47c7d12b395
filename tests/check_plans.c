/* Query plans of every library statement on a populated, skewed database.
 *
 * Each statement of the registry that reads or writes rows is prepared
 * with its declared parameter types and EXPLAINed twice: as a custom plan
 * for the heaviest entity (id 1 owns a large share of every table, and
 * conversation 1 holds 50,000 old messages) and as the generic plan that a
 * prepared statement may settle on. A plan fails when its cost grows with
 * a table or with one user's or conversation's rows while the statement
 * returns a bounded page:
 *   - a sequential scan of a platform table,
 *   - an index scan without an index condition (a walk of the whole index),
 *   - a sort below a LIMIT whose input is estimated above SORT_INPUT_MAX
 *     rows (a top-N sort of a whole conversation instead of an ordered
 *     index scan),
 *   - for SELECTs, which are also run (EXPLAIN ANALYZE, rolled back): more
 *     than FILTERED_MAX rows read and thrown away by a filter (such as a
 *     primary key walked backwards past every newer message of other
 *     conversations).
 * Statements whose work is proportional to their answer by nature are
 * listed in `allowed` with the reason. A statement added to the library is
 * checked without any change here. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "memory_clustered.h"
#include "pool/stmt.h"
#include "test_util.h"

#define SORT_INPUT_MAX 1000.0
#define FILTERED_MAX 1000.0

static char *db;
static PGconn *conn;

/* The platform's tables, all populated below: a scan of any of them that
 * is not bounded by an index grows with the data. */
static const char *const grown_tables[] = {
    "users",         "profiles",       "auth_sessions",
    "conversations", "messages",       "service_connections",
    "ai_teams",      "app_settings",   "memory_facts",
    "analytics_events_default"};

/* Whole modules left out: the migration runner and the schema check read
 * the catalogs and their own small table; the embedding upgrade is a
 * one-off rewrite of the whole table by design. */
static const char *const skipped_modules[] = {"migrate", "schema",
                                              "memory.upgrade"};

typedef struct allowed_finding {
    const char *stmt;
    const char *mode; /* "custom", "generic" or NULL: both */
    const char *kind; /* "seqscan", "fullindex", "sort", "filtered" */
    const char *reason;
} allowed_finding;

static const allowed_finding allowed[] = {
    {"crypto.rotate_remaining", NULL, "seqscan",
     "key rotation's progress counts every row not yet under the new key; "
     "an operator's command, run once per batch"},
    {"memory.text_candidates", "generic", "filtered",
     "never run with a generic plan: the library sends it unnamed, so each "
     "call is planned for its words and user (the full-text index first for "
     "rare words, the user's rows for common ones); whichever leads, the "
     "other condition filters its rows"},
    {"memory.pgvector.unsketched", NULL, "seqscan",
     "ds_memory_fill_sketches walks the table once by id to give old facts "
     "their sketches: a one-off maintenance pass, like memory.upgrade (only "
     "a partial index on the rows without one would bound each batch, "
     "which needs a migration)"},
    {"memory.pgvector.unsketched", NULL, "filtered",
     "the same walk passes over facts that already have their sketch"},
    {"memory.pgvector.uncoded", NULL, "seqscan",
     "ds_memory_fill_sketches walks the table once by id to give old facts "
     "their coarse codes: a one-off maintenance pass"},
    {"memory.pgvector.uncoded", NULL, "filtered",
     "the same walk passes over facts that already have their code"},
    {"memory.fallback.uncoded", NULL, "seqscan",
     "as memory.pgvector.uncoded, on the fallback backend"},
    {"memory.fallback.uncoded", NULL, "filtered",
     "as memory.pgvector.uncoded, on the fallback backend"},
    /* The exact search reads every sketch (or code) of the user by design
     * (docs/memory.md); with a kind filter it also reads the user's other
     * kinds, because `$2 IS NULL OR kind = $2` is no index condition. */
    {"memory.sketches", "generic", "filtered",
     "the kind filter: O(the user's facts), the scan's own cost; a "
     "statement per case would end it, in the vector stage's files"},
    {"memory.sketches_wide", "generic", "filtered",
     "as memory.sketches, above 2000 dimensions"},
    {"memory.codes", "generic", "filtered",
     "as memory.sketches, for a large user's coarse codes"},
    {"memory.ivf.rest", "generic", "filtered",
     "as memory.sketches: the kind filter over the facts without a list "
     "(or whose list is gone), the ranges every list search reads"},
    /* ds_memory_maintain() (src/memory/ivf.c, blocks.c) */
    {"memory.ivf.users", NULL, "fullindex",
     "ds_memory_maintain() over every user finds the users to cluster "
     "(those with at least min_facts facts) in one index-only pass over "
     "memory_facts_user_kind_idx per run, a periodic job; only per-user "
     "counters kept on every write would bound it (a migration)"},
    {"memory.ivf.users", NULL, "seqscan",
     "the same pass, where the planner costs a scan of the table lower "
     "(pages vacuum has not marked all-visible yet)"},
    {"memory.ivf.users", NULL, "filtered",
     "the candidates' facts without an embedding, read and not counted"},
    {"memory.blocks.users", NULL, "fullindex",
     "ds_memory_maintain() over every user counts each user's facts to find "
     "the users to pack: one index-only pass per run, as memory.ivf.users"},
    {"memory.blocks.users", NULL, "seqscan",
     "the same pass, where the planner costs a scan of the table lower"},
    {"memory.ivf.user", NULL, "filtered",
     "ds_memory_maintain() for one user counts that user's facts with an "
     "embedding: it reads the user's rows by nature and skips those "
     "without one"},
    {"memory.ivf.user_ids", NULL, "filtered",
     "the facts without a list include those stored without an embedding, "
     "which never get one; read here once per maintenance run, as "
     "memory.ivf.rest reads them on every search (no index tells them "
     "apart: that would take a migration)"},
    {"gdpr.erase_count", "custom", "seqscan",
     "the progress total counts every row of the user; for the heaviest "
     "user (a third of all messages) a scan is the cheaper plan and the "
     "planner takes it, once per erase; others count by index"},
};

static void populate(void) {
    dt_sql(db,
           "INSERT INTO users (email, deleted_at) SELECT 'user' || g || "
           "'@example.com', CASE WHEN g % 50 = 0 THEN now() - interval '40 "
           "days' END FROM generate_series(1, 20000) g;"
           "INSERT INTO profiles (user_id, display_name) SELECT id, 'name' "
           "FROM users;"
           /* user 1 owns a quarter of the conversations */
           "INSERT INTO conversations (owner_id, title, archived) SELECT CASE "
           "WHEN g <= 5000 THEN 1 ELSE 1 + g % 20000 END, 't', g % 10 = 0 FROM "
           "generate_series(1, 20000) g;"
           /* conversation 1: 50,000 old messages; conversation 2: 10,000
            * spread among the 150,000 newer ones of the others */
           "INSERT INTO messages (conversation_id, role, content, "
           "idempotency_key) SELECT 1, 'user', 'old', 'o' || g FROM "
           "generate_series(1, 50000) g;"
           "INSERT INTO messages (conversation_id, role, content) SELECT CASE "
           "WHEN g % 15 = 0 THEN 2 ELSE 3 + g % 19990 END, 'assistant', "
           "'reply ' || g FROM generate_series(1, 150000) g ORDER BY random();"
           "INSERT INTO auth_sessions (user_id, token_hash, expires_at, "
           "last_seen_at) SELECT CASE WHEN g <= 5000 THEN 1 ELSE g END, "
           "sha256(int8send(g)), now() + (g % 7 - 2) * interval '1 day', now() "
           "- g * interval '1 second' FROM generate_series(1, 20000) g;"
           "INSERT INTO service_connections (user_id, provider, "
           "external_account_id, key_id) SELECT CASE WHEN g <= 5000 THEN 1 "
           "ELSE g END, 'google', 'acct' || g, CASE WHEN g % 100 = 0 THEN 'k1' "
           "ELSE 'k2' END FROM generate_series(1, 20000) g;"
           "INSERT INTO ai_teams (owner_id, name) SELECT CASE WHEN g <= 5000 "
           "THEN 1 ELSE g END, 'team' || g FROM generate_series(1, 20000) g;"
           "INSERT INTO app_settings (user_id, key, value) SELECT CASE WHEN g "
           "<= 5000 THEN NULL WHEN g <= 10000 THEN 1 ELSE g END, 'key' || g, "
           "'1' FROM generate_series(1, 20000) g;"
           "INSERT INTO memory_facts (user_id, kind, content) SELECT CASE WHEN "
           "g <= 5000 THEN 1 ELSE g END, CASE WHEN g % 3 = 0 THEN 'fact' ELSE "
           "'preference' END, 'likes topic ' || g FROM generate_series(1, "
           "20000) g;"
           "INSERT INTO analytics_events (user_id, name, occurred_at) SELECT 1 "
           "+ g % 20000, 'click', now() - g * interval '1 minute' FROM "
           "generate_series(1, 20000) g;"
           "ANALYZE;");
}

/* What the lists' and the packed codes' statements read: clustered
 * embeddings, one in ten user 1's (which keeps about its share of the
 * table), the rest of 30 small users; user 1 clustered into lists and its
 * codes packed by ds_memory_maintain(), then facts written since (above
 * the packing, each given its nearest list as it is written). User 1's
 * facts from populate() have no embedding, as facts written before
 * embeddings existed: they never get a list. */
static void populate_memory(void) {
    enum { USERS = 31, FACTS = 6000, LATER = 200 };
    int pattern[40];
    int64_t users[USERS];
    cl_user prof[USERS];
    for (int i = 0; i < 40; i++)
        pattern[i] = i < 4 ? 0 : 1 + (i - 4) % (USERS - 1);
    ds_pool *pool = dt_pool(db, 1, 2);
    ds_config *cfg = dt_config(db, 1, 2);
    ds_memory *mem = NULL;
    ds_error err = {0};
    ds_status st = ds_memory_open(pool, cfg, &mem, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    cl_model m;
    ck_assert(cl_model_init(&m, ds_memory_dim(mem), 200, 20261206));
    for (int u = 0; u < USERS; u++) {
        users[u] = 1 + u;
        cl_user_init(&m, &prof[u]);
    }
    int64_t *ids = calloc(FACTS, sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    mc_add_clustered(mem, &m, prof, users, pattern, 40, FACTS, "clustered",
                     NULL, NULL, ids, NULL);
    ds_memory_maintain_options o = DS_MEMORY_MAINTAIN_OPTIONS_INIT;
    o.min_facts = 500;
    size_t clustered = 0;
    st = ds_memory_maintain(mem, &o, &clustered, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(clustered, 1);
    mc_add_clustered(mem, &m, prof, users, pattern, 40, LATER, "later", NULL,
                     NULL, ids, NULL);
    free(ids);
    cl_model_free(&m);
    ds_memory_close(mem);
    ds_pool_close(pool);
    ck_assert_int_gt(dt_sql_int(db, "SELECT count(*) FROM memory_ivf_lists "
                                    "WHERE user_id = 1"), 10);
    ck_assert_int_gt(dt_sql_int(db, "SELECT count(*) FROM memory_code_blocks "
                                    "WHERE user_id = 1"), 10);
    dt_sql(db, "VACUUM ANALYZE memory_facts, memory_ivf_lists, "
               "memory_code_blocks");
}

/* The database is built and populated once for the case (in the runner,
 * before the tests fork); each test opens its own connection. */
static void setup_db(void) {
    db = dt_migrated_db("plans");
    populate();
    populate_memory();
}

/* The same after vacuum has marked every page all-visible, as in a
 * database autovacuum keeps up with: index-only scans turn cheap, and the
 * planner's choices change with them. */
static void setup_db_vacuumed(void) {
    db = dt_migrated_db("plans_vacuumed");
    populate();
    populate_memory();
    dt_sql(db, "VACUUM ANALYZE");
}

/* The same on the fallback backend, whose memory statements differ (on
 * a server without pgvector both cases run the fallback). */
static void setup_db_fallback(void) {
    db = dt_migrated_db_backend("plans_fallback", "fallback");
    populate();
    populate_memory();
}

static void teardown_db(void) {
    dt_drop_db(db);
    free(db);
    db = NULL;
}

static void setup(void) {
    conn = PQconnectdb(db);
    ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "connect: %s",
                  PQerrorMessage(conn));
}

static void teardown(void) {
    PQfinish(conn);
    conn = NULL;
}

/* A literal for a parameter of type `oid` in a custom plan: the heavy
 * entity (id 1), open bounds, a page of 51. Callers override by position
 * where the SQL compares or limits. */
static const char *default_value(Oid oid) {
    switch (oid) {
    case 16: return "false";
    case 17: return "\\x00";
    case 20: case 21: case 23: case 26: return "1";
    case 25: return "10"; /* also a valid hnsw.ef_search */
    case 700: case 701: return "0.5";
    case 869: return "127.0.0.1";
    case 1001: return "{}";
    case 1007: return "{0,1,2}"; /* list ids */
    case 1009: return "{x}";
    case 1016: return "{1,2,3}";
    case 1021: return "{0.5}";
    case 1184: return "infinity";
    case 3802: return "{}";
    case 3807: return "{}";
    default: return NULL;
    }
}

/* The value of parameter `n` (1-based) for a custom plan: open bounds for
 * `< $n` / `> $n` on ids, a page of 51 for `LIMIT $n`. */
static const char *param_value(const ds__stmt_def *def, int n) {
    char ref[16];
    snprintf(ref, sizeof ref, "$%d", n);
    Oid oid = def->param_types[n - 1];
    for (const char *p = strstr(def->sql, ref); p; p = strstr(p + 1, ref)) {
        if (p[strlen(ref)] >= '0' && p[strlen(ref)] <= '9')
            continue; /* $1 inside $12 */
        const char *q = p;
        while (q > def->sql && q[-1] == ' ')
            q--;
        if (q - def->sql >= 5 && strncmp(q - 5, "LIMIT", 5) == 0)
            return "51";
        if (oid == 20 && q > def->sql && q[-1] == '<')
            return "9223372036854775807";
        if (oid == 20 && q > def->sql && q[-1] == '>')
            return "0";
    }
    return default_value(oid);
}

static bool is_grown(const char *rel) {
    for (size_t i = 0; i < sizeof grown_tables / sizeof grown_tables[0]; i++)
        if (rel && strcmp(rel, grown_tables[i]) == 0)
            return true;
    return false;
}

static bool is_allowed(const char *stmt, const char *mode, const char *kind) {
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (strcmp(allowed[i].stmt, stmt) == 0 &&
            (!allowed[i].mode || strcmp(allowed[i].mode, mode) == 0) &&
            strcmp(allowed[i].kind, kind) == 0)
            return true;
    return false;
}

typedef struct findings {
    char text[4096];
    size_t len;
    int count;
} findings;

static void found(findings *f, const char *stmt, const char *mode,
                  const char *kind, const char *detail) {
    if (is_allowed(stmt, mode, kind))
        return;
    f->count++;
    if (f->len < sizeof f->text)
        f->len += (size_t)snprintf(f->text + f->len, sizeof f->text - f->len,
                                   "\n  %s (%s plan): %s %s", stmt, mode, kind,
                                   detail);
}

static void walk(const json_t *node, const char *parent, bool under_limit,
                 const char *stmt, const char *mode, findings *f) {
    const char *type = json_string_value(json_object_get(node, "Node Type"));
    const char *rel = json_string_value(json_object_get(node, "Relation Name"));
    const char *index = json_string_value(json_object_get(node, "Index Name"));
    char detail[256];
    if (!type)
        return;
    if (strcmp(type, "Seq Scan") == 0 && is_grown(rel)) {
        snprintf(detail, sizeof detail, "on %s", rel);
        found(f, stmt, mode, "seqscan", detail);
    }
    /* An index walked from one end is fine only straight under a LIMIT
     * with every row kept (an ordered page), or when the index orders by
     * distance (an ANN search, bounded by its own search width). Under a
     * join, or with a filter, it reads rows the answer does not hold. */
    bool ordered_page = parent && strcmp(parent, "Limit") == 0 &&
                        !json_object_get(node, "Filter");
    if ((strcmp(type, "Index Scan") == 0 ||
         strcmp(type, "Index Only Scan") == 0) &&
        is_grown(rel) && !json_object_get(node, "Index Cond") &&
        !json_object_get(node, "Order By") && !ordered_page) {
        snprintf(detail, sizeof detail, "on %s using %s", rel,
                 index ? index : "?");
        found(f, stmt, mode, "fullindex", detail);
    }
    const json_t *children = json_object_get(node, "Plans");
    if ((strcmp(type, "Sort") == 0 || strcmp(type, "Incremental Sort") == 0) &&
        under_limit) {
        const json_t *child = json_array_get(children, 0);
        double rows = json_number_value(json_object_get(child, "Plan Rows"));
        if (rows > SORT_INPUT_MAX) {
            snprintf(detail, sizeof detail,
                     "(%s) of an estimated %.0f rows for a limited answer",
                     type, rows);
            found(f, stmt, mode, "sort", detail);
        }
    }
    double loops = json_number_value(json_object_get(node, "Actual Loops"));
    double removed =
        json_number_value(json_object_get(node, "Rows Removed by Filter")) +
        json_number_value(
            json_object_get(node, "Rows Removed by Index Recheck"));
    if (is_grown(rel) && removed * (loops > 1 ? loops : 1) > FILTERED_MAX) {
        snprintf(detail, sizeof detail, "on %s: %.0f rows read and dropped",
                 rel, removed * (loops > 1 ? loops : 1));
        found(f, stmt, mode, "filtered", detail);
    }
    bool limit = under_limit || strcmp(type, "Limit") == 0;
    size_t i;
    const json_t *child;
    json_array_foreach(children, i, child)
        walk(child, type, limit, stmt, mode, f);
}

static void exec_ok(const char *sql) {
    PGresult *r = PQexec(conn, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* EXPLAINs one prepared statement in the current plan_cache_mode. */
static void explain(const ds__stmt_def *def, const char *mode, findings *f) {
    char *sql = NULL;
    size_t cap = 64 + strlen(def->name);
    for (int i = 1; i <= def->nparams; i++) {
        const char *v = param_value(def, i);
        ck_assert_msg(v != NULL, "%s: no test value for parameter %d (type %u)",
                      def->name, i, def->param_types[i - 1]);
        cap += 4 + 2 * strlen(v);
    }
    sql = malloc(cap);
    ck_assert_ptr_nonnull(sql);
    bool run = strncmp(def->sql, "SELECT", 6) == 0;
    size_t len = (size_t)snprintf(sql, cap, "EXPLAIN (%sFORMAT JSON) EXECUTE plan_stmt",
                                  run ? "ANALYZE, " : "");
    for (int i = 1; i <= def->nparams; i++) {
        const char *v = param_value(def, i);
        len += (size_t)snprintf(sql + len, cap - len, "%s'", i == 1 ? "(" : ", ");
        for (const char *c = v; *c; c++) { /* quote doubling */
            if (*c == '\'')
                sql[len++] = '\'';
            sql[len++] = *c;
        }
        sql[len++] = '\'';
        sql[len] = '\0';
    }
    if (def->nparams)
        snprintf(sql + len, cap - len, ")");
    if (run)
        exec_ok("BEGIN");
    PGresult *r = PQexec(conn, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s (%s): %s",
                  def->name, mode, PQresultErrorMessage(r));
    if (run)
        exec_ok("ROLLBACK");
    json_error_t jerr;
    json_t *plan = json_loads(PQgetvalue(r, 0, 0), 0, &jerr);
    ck_assert_msg(plan != NULL, "%s: EXPLAIN output is not JSON", def->name);
    walk(json_object_get(json_array_get(plan, 0), "Plan"), NULL, false,
         def->name, mode, f);
    json_decref(plan);
    PQclear(r);
    free(sql);
}

static bool explainable(const ds__stmt_def *def) {
    static const char *const verbs[] = {"SELECT", "WITH", "INSERT", "UPDATE",
                                        "DELETE"};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strncmp(def->sql, verbs[i], strlen(verbs[i])) == 0)
            return true;
    return false;
}

static bool skipped(const char *module, const char *backend) {
    for (size_t i = 0; i < sizeof skipped_modules / sizeof skipped_modules[0];
         i++)
        if (strcmp(module, skipped_modules[i]) == 0)
            return true;
    /* the statements of the backend this database does not use refer to
     * columns it does not have; the lists' and the packed codes' are the
     * same on both */
    if (strcmp(module, "memory.pgvector") == 0 ||
        strcmp(module, "memory.fallback") == 0)
        return strcmp(module + 7, backend) != 0;
    return false;
}

START_TEST(test_plans_bounded_for_every_statement) {
    PGresult *r = PQexec(conn, "SELECT backend FROM memory_vector_settings");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    char backend[32];
    snprintf(backend, sizeof backend, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);

    findings f = {.len = 0, .count = 0};
    int checked = 0;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module; t++) {
        if (skipped(t->module, backend))
            continue;
        const ds__stmt_def *defs;
        size_t n = t->get(&defs);
        for (size_t i = 0; i < n; i++) {
            if (!explainable(&defs[i]))
                continue;
            r = PQprepare(conn, "plan_stmt", defs[i].sql, defs[i].nparams,
                          defs[i].param_types);
            ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s",
                          defs[i].name, PQresultErrorMessage(r));
            PQclear(r);
            exec_ok("SET plan_cache_mode = force_custom_plan");
            explain(&defs[i], "custom", &f);
            exec_ok("SET plan_cache_mode = force_generic_plan");
            explain(&defs[i], "generic", &f);
            exec_ok("DEALLOCATE plan_stmt");
            checked++;
        }
    }
    /* the registry must really have been walked: the repositories alone
     * hold more than 50 statements */
    ck_assert_int_gt(checked, 50);
    ck_assert_msg(f.count == 0, "%d plan(s) grow with the data:%s", f.count,
                  f.text);
}
END_TEST

/* The checker itself: statements written the slow way are caught. */
START_TEST(test_plans_checker_catches_growing_plans) {
    static const ds__stmt_def bad[] = {
        {"bad.seqscan", "SELECT id FROM users WHERE email = $1", 1, {25}, 1, {20}},
        {"bad.sort", "SELECT id FROM messages WHERE conversation_id = $1 "
                     "ORDER BY content LIMIT $2", 2, {20, 20}, 1, {20}},
        /* the newest of conversation 1 (old messages) by the primary key */
        {"bad.pkeywalk", "SELECT id, content FROM messages WHERE "
         "conversation_id + 0 = $1 ORDER BY id DESC LIMIT $2", 2, {20, 20}, 2,
         {20, 25}},
        /* the old page of messages: with the content in the answer (as
         * the old listing returned it) no index-only scan of the right
         * index is possible, and the planner walks the idempotency keys of
         * the whole conversation and sorts them. With ids alone its plan
         * changed once vacuum had marked the table all-visible. */
        {"bad.rowcompare", "SELECT m.id, m.content FROM conversations c "
         "LEFT JOIN LATERAL (SELECT id, content FROM messages WHERE "
         "(conversation_id, id) < (c.id, $2) AND (conversation_id, id) > "
         "(c.id, $3) ORDER BY conversation_id DESC, id DESC LIMIT $4) m ON "
         "true WHERE c.id = $1", 4, {20, 20, 20, 20}, 2, {20, 25}},
    };
    /* once as populated, once after vacuum has marked the pages
     * all-visible (which makes index-only scans cheap): the examples must
     * be caught whether or not autovacuum has run */
    for (int pass = 1; pass <= 2; pass++) {
        if (pass == 2)
            exec_ok("VACUUM ANALYZE users, conversations, messages");
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            findings f = {.len = 0, .count = 0};
            PGresult *r = PQprepare(conn, "plan_stmt", bad[i].sql,
                                    bad[i].nparams, bad[i].param_types);
            ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
            PQclear(r);
            exec_ok("SET plan_cache_mode = force_custom_plan");
            explain(&bad[i], "custom", &f);
            int custom = f.count;
            exec_ok("SET plan_cache_mode = force_generic_plan");
            explain(&bad[i], "generic", &f);
            exec_ok("DEALLOCATE plan_stmt");
            ck_assert_msg(f.count > 0,
                          "%s (pass %d): %d finding(s) in custom, %d in all",
                          bad[i].name, pass, custom, f.count);
        }
    }
}
END_TEST

/* A case on its own database, built by `setup_db_fn` before the tests
 * fork, checking every statement's plans. */
static TCase *plan_case(Suite *s, const char *name, void (*setup_db_fn)(void)) {
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, setup_db_fn, teardown_db);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_plans_bounded_for_every_statement);
    suite_add_tcase(s, tc);
    return tc;
}

Suite *ds_test_plans_suite(void) {
    Suite *s = suite_create("plans");
    TCase *tc = plan_case(s, "plans", setup_db);
    tcase_add_test(tc, test_plans_checker_catches_growing_plans);
    plan_case(s, "plans_vacuumed", setup_db_vacuumed);
    plan_case(s, "plans_fallback", setup_db_fallback);
    return s;
}
