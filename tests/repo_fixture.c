/* The repository suites' shared fixture (see repo_fixture.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

char *db;
ds_pool *pool;

void repo_setup_direct(void) {
    db = dt_migrated_db("repo");
    pool = dt_pool(db, 1, 4);
}

static void setup_pooler(void) {
    db = dt_migrated_db("repopool");
    pool = dt_pooler_pool(db, 1, 4);
}

void repo_teardown(void) {
    ds_pool_close(pool);
    pool = NULL;
    dt_drop_db(db);
    free(db);
}

long long count_sql(const char *fmt, long long id) {
    char sql[512];
    snprintf(sql, sizeof sql, fmt, id);
    return dt_sql_int(db, sql);
}

int64_t new_user(const char *email) {
    ds_error err = {0};
    ds_user *u;
    ds_status st = ds_user_create(pool, email, NULL, &u, &err);
    ck_assert_ds_ok(st, err);
    int64_t id = u->id;
    ds_user_free(u);
    return id;
}

int64_t new_conversation(int64_t owner) {
    ds_error err = {0};
    ds_conversation *c;
    ds_status st = ds_conversation_create(pool, owner, "chat", &c, &err);
    ck_assert_ds_ok(st, err);
    int64_t id = c->id;
    ds_conversation_free(c);
    return id;
}

typedef struct occ_arg {
    int64_t id;
    int wins, conflicts;
    ds_status other;
    pthread_barrier_t *barrier;
    bool setting;
} occ_arg;

/* Each round both threads read the same version, meet at a barrier, and
 * try to write: exactly one may win. */
static void *occ_thread(void *p) {
    occ_arg *a = p;
    for (int round = 0; round < 20; round++) {
        ds_error err = {0};
        int64_t version;
        if (a->setting) {
            ds_setting *s;
            if (ds_setting_get(pool, a->id, "counter", &s, &err) != DS_OK) {
                a->other = err.code;
                return NULL;
            }
            version = s->version;
            ds_setting_free(s);
        } else {
            ds_team *t;
            if (ds_team_get(pool, a->id, &t, &err) != DS_OK) {
                a->other = err.code;
                return NULL;
            }
            version = t->version;
            ds_team_free(t);
        }
        pthread_barrier_wait(a->barrier);
        json_t *v = json_pack("{s:i}", "round", round);
        ds_status st = a->setting
                           ? ds_setting_put(pool, a->id, "counter", v, version, NULL, &err)
                           : ds_team_update(pool, a->id, version, NULL, NULL, v, NULL, &err);
        json_decref(v);
        if (st == DS_OK)
            a->wins++;
        else if (st == DS_ERR_CONFLICT)
            a->conflicts++;
        else
            a->other = st;
        pthread_barrier_wait(a->barrier);
    }
    return NULL;
}

void run_occ(int64_t id, bool setting, int64_t *final_version) {
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    occ_arg a[2] = {{id, 0, 0, DS_OK, &barrier, setting}, {id, 0, 0, DS_OK, &barrier, setting}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, occ_thread, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    ck_assert_int_eq(a[0].other, DS_OK);
    ck_assert_int_eq(a[1].other, DS_OK);
    /* every round: one winner, one conflict */
    ck_assert_int_eq(a[0].wins + a[1].wins, 20);
    ck_assert_int_eq(a[0].conflicts + a[1].conflicts, 20);
    *final_version = 21;
}

ds_crypto *test_crypto(const char *kid) {
    ds_crypto_secret *entry;
    ds_error err = {0};
    ds_status st = ds_crypto_generate_key(kid, &entry, &err);
    ck_assert_ds_ok(st, err);
    ds_crypto *c;
    st = ds_crypto_open_keys(ds_crypto_secret_data(entry), &c, &err);
    ds_crypto_secret_free(entry);
    ck_assert_ds_ok(st, err);
    return c;
}

/* The generic plan of the named list statement, with sequential scans
 * discouraged so that an index able to serve it is the plan: it must name
 * `index` and need no Sort, i.e. the keyset range is read in order and the
 * LIMIT stops it. */
void assert_list_plan(const char *stmt, const char *index, const char *args) {
    const ds__stmt_def *def = NULL;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module && !def; t++) {
        const ds__stmt_def *defs;
        size_t n = t->get(&defs);
        for (size_t i = 0; i < n && !def; i++)
            if (strcmp(defs[i].name, stmt) == 0)
                def = &defs[i];
    }
    ck_assert_msg(def != NULL, "no statement %s", stmt);
    PGconn *c = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SET plan_cache_mode = force_generic_plan; "
                            "SET enable_seqscan = off; ANALYZE");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQprepare(c, "list_plan", def->sql, def->nparams, def->param_types);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", stmt,
                  PQresultErrorMessage(r));
    PQclear(r);
    char sql[256];
    snprintf(sql, sizeof sql, "EXPLAIN EXECUTE list_plan(%s)", args);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    char plan[4096] = "";
    for (int i = 0; i < PQntuples(r); i++) {
        strncat(plan, PQgetvalue(r, i, 0), sizeof plan - strlen(plan) - 2);
        strcat(plan, "\n");
    }
    PQclear(r);
    PQfinish(c);
    ck_assert_msg(strstr(plan, index) != NULL, "%s does not use %s:\n%s", stmt, index, plan);
    ck_assert_msg(strstr(plan, "Limit") != NULL, "%s has no Limit:\n%s", stmt, plan);
    ck_assert_msg(strstr(plan, "Sort") == NULL, "%s sorts:\n%s", stmt, plan);
}

/* Check keeps a TCase's name pointer for as long as the runner lives and
 * never frees it, so the "pooler_" names are kept here rather than on the
 * heap (where they would leak when the runner is freed). */
enum { REPO_POOLER_CASES = 32, REPO_CASE_NAME = 64 };
static char pooler_case_names[REPO_POOLER_CASES][REPO_CASE_NAME];
static size_t pooler_case_names_used;

static const char *pooler_case_name(const char *group) {
    if (pooler_case_names_used == REPO_POOLER_CASES) {
        /* no ck_assert outside a test */
        fprintf(stderr, "dt_repo_suite: more than %d pooler cases\n",
                REPO_POOLER_CASES);
        abort();
    }
    char *name = pooler_case_names[pooler_case_names_used++];
    int n = snprintf(name, REPO_CASE_NAME, "pooler_%s", group);
    if (n < 0 || n >= REPO_CASE_NAME) {
        fprintf(stderr, "dt_repo_suite: case name too long: %s\n", group);
        abort();
    }
    return name;
}

Suite *dt_repo_suite(const char *suite, const dt_repo_group *groups, size_t n) {
    Suite *s = suite_create(suite);
    for (int pooled = 0; pooled < 2; pooled++)
        for (size_t g = 0; g < n; g++) {
            TCase *tc = tcase_create(pooled ? pooler_case_name(groups[g].name)
                                            : groups[g].name);
            tcase_add_checked_fixture(tc, pooled ? setup_pooler : repo_setup_direct,
                                      repo_teardown);
            groups[g].add(tc);
            suite_add_tcase(s, tc);
        }
    return s;
}
