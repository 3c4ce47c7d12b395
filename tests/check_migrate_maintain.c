/* Partition maintenance and the schema check, against the real
 * PostgreSQL and PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"
#include "migrate_fixture.h"

/* ---- partition maintenance --------------------------------------------------------- */

START_TEST(test_migrate_maintain_creates_months_and_moves_rows) {
    char *url = dt_migrated_db("mig_maint");
    /* Rows of a month that has no partition yet wait in the default one. */
    dt_sql(url, "INSERT INTO analytics_events (user_id, name, occurred_at) "
                "SELECT 1, 'ev', date_trunc('month', now() AT TIME ZONE 'UTC') "
                "AT TIME ZONE 'UTC' + interval '6 months 3 days' + "
                "g * interval '1 minute' FROM generate_series(1, 40) g");
    dt_sql(url, "INSERT INTO analytics_events (name, occurred_at) VALUES "
                "('old', now() - interval '3 years')");
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM "
                                     "analytics_events_default"),
                     41);
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    int created = -1;
    ds_status st = ds_migrate_maintain(pool, NULL, 8, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 5); /* months 4..8; 0..3 came with 0002 */
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM "
                                     "analytics_events_default"),
                     1);
    ck_assert_int_eq(count_rows(url, "SELECT count(DISTINCT tableoid) FROM "
                                     "analytics_events WHERE name = 'ev'"),
                     1);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events"),
                     41);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     10);
    st = ds_migrate_maintain(pool, NULL, 8, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 0);
    st = ds_migrate_maintain(pool, NULL, 0, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 0);
    /* Inserts keep working and land in their month. */
    dt_sql(url, "INSERT INTO analytics_events (name) VALUES ('now')");
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'now' AND tableoid <> "
                                     "'analytics_events_default'::regclass"),
                     1);
    /* Reverting 0002 folds the months back, rows included. */
    st = ds_migrate_to(pool, NULL, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events"),
                     42);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     1);
    st = ds_migrate_maintain(pool, NULL, 3, &created, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds-migrate up"));
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

typedef struct thread_maint {
    const char *url;
    int created;
    ds_status st;
    ds_error err;
} thread_maint;

static void *thread_maint_main(void *p) {
    thread_maint *t = p;
    ds_pool *pool = NULL;
    t->st = ds_pool_open_url(t->url, &pool, &t->err);
    if (t->st == DS_OK)
        t->st = ds_migrate_maintain(pool, NULL, 12, &t->created, &t->err);
    ds_pool_close(pool);
    return NULL;
}

START_TEST(test_migrate_maintain_concurrent_and_through_pgbouncer) {
    char *url = dt_migrated_db("mig_maintc");
    char *pooled = dt_url_same_db(dt_env("DATABASE_POOLER_URL"), url);
    thread_maint t[4];
    pthread_t th[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].url = i % 2 ? pooled : url;
        pthread_create(&th[i], NULL, thread_maint_main, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_ds_ok(t[i].st, t[i].err);
        total += t[i].created;
    }
    ck_assert_int_eq(total, 9); /* months 4..12, each once */
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_locks WHERE "
                                     "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    free(pooled);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- the schema check --------------------------------------------------------------- */

static const ds__stmt_def test_user_stmts[] = {
    {"test.user_by_id",
     "SELECT id, email, status, created_at FROM users WHERE id = $1",
     1,
     {DS_OID_INT8},
     4,
     {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TIMESTAMPTZ}},
    {"test.touch_user", "UPDATE users SET updated_at = now() WHERE id = $1", 1,
     {DS_OID_INT8}, -1, {0}},
    {"test.any_type", "SELECT email FROM users LIMIT 1", 0, {0}, 1, {0}},
    {"test.profile_prefs",
     "SELECT preferences FROM profiles WHERE user_id = $1", 1, {DS_OID_INT8},
     1, {DS_OID_JSONB}},
};
static size_t test_user_table(const ds__stmt_def **d) {
    *d = test_user_stmts;
    return sizeof test_user_stmts / sizeof test_user_stmts[0];
}
static const ds__stmt_table test_tables[] = {{"test", test_user_table},
                                             {NULL, NULL}};

static const ds__stmt_def wrong_stmts[] = {
    {"test.email_by_wrong_type", "SELECT id FROM users WHERE email = $1", 1,
     {DS_OID_INT8}, 1, {DS_OID_INT8}},
    {"test.too_few_columns", "SELECT id, email FROM users", 0, {0}, 1,
     {DS_OID_INT8}},
    {"test.rows_from_command", "DELETE FROM users RETURNING id", 0, {0}, -1,
     {0}},
};
static size_t wrong_table(const ds__stmt_def **d) {
    *d = wrong_stmts;
    return sizeof wrong_stmts / sizeof wrong_stmts[0];
}

static const ds__stmt_def dup_stmts[] = {
    {"test.user_by_id", "SELECT 1", 0, {0}, 1, {DS_OID_INT4}},
};
static size_t dup_table(const ds__stmt_def **d) {
    *d = dup_stmts;
    return 1;
}

START_TEST(test_migrate_schema_check_passes_on_migrated_db) {
    char *url = dt_migrated_db("mig_check");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    st = ds__schema_check(pool, test_tables, DS_SCHEMA_VERSION, &err);
    ck_assert_ds_ok(st, err);
    /* Nothing is left prepared. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(pool, "SELECT count(*)::int8 FROM pg_prepared_statements",
                      NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    int64_t prepared = -1;
    st = ds_sql_result_int64(res, 0, 0, &prepared, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    ck_assert_int_le(prepared, 1); /* only the pool's own count(*) */
    ds_pool_close(pool);

    /* Through PgBouncer, in pooler mode. */
    pool = dt_pooler_pool(url, 1, 2);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    dt_sql(url, "ALTER TABLE users ALTER COLUMN created_at TYPE timestamp");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "created_at"));
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_schema_check_catches_altered_column) {
    char *url = dt_migrated_db("mig_checkalt");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    dt_sql(url, "ALTER TABLE users ALTER COLUMN created_at TYPE timestamp");
    ds_status st = ds__schema_check(pool, test_tables, DS_SCHEMA_VERSION, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));
    ck_assert_ptr_nonnull(strstr(err.message, "column 4 \"created_at\""));
    ck_assert_ptr_nonnull(strstr(err.message, "timestamp without time zone"));
    ck_assert_ptr_nonnull(strstr(err.message, "timestamp with time zone"));

    /* Two mismatches: the first is named, the count says there is more. */
    dt_sql(url, "ALTER TABLE profiles DROP CONSTRAINT profiles_preferences_check, "
                "ALTER COLUMN preferences TYPE json");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "and 1 more"));

    /* A dropped column: the statement no longer prepares. */
    dt_sql(url, "ALTER TABLE users DROP COLUMN status");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));
    ck_assert_ptr_nonnull(strstr(err.message, "status"));
    ck_assert_str_eq(err.sqlstate, "42703");

    /* Parameter type, column count, rows where none were expected. */
    const ds__stmt_table wrong[] = {{"wrong", wrong_table}, {NULL, NULL}};
    st = ds__schema_check(pool, wrong, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.email_by_wrong_type"));
    ck_assert_ptr_nonnull(strstr(err.message, "and 2 more"));

    /* Duplicate names are a bug in the library. */
    const ds__stmt_table dup[] = {
        {"test", test_user_table}, {"dup", dup_table}, {NULL, NULL}};
    st = ds__schema_check(pool, dup, 0, &err);
    ck_assert_ds_status(st, DS_ERR_INTERNAL, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));

    /* The connection is fine afterwards. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_schema_check_version_and_history) {
    char *url = dt_create_db("mig_checkver");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "version 0"));
    ck_assert_ptr_nonnull(strstr(err.message, "ds-migrate up"));

    st = ds_migrate_to(pool, NULL, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "version 1"));

    st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);

    /* Migrated with a different file than the one built in. */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = repeat('0', 64) "
                "WHERE version = 1");
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_platform_schema"));

    /* A newer database (a rolling deploy) is accepted. */
    dt_sql(url, "DELETE FROM ds_schema_migrations WHERE version = 1");
    dt_sql(url, "INSERT INTO ds_schema_migrations (version, name, checksum) "
                "VALUES (99999, 'from_the_future', repeat('a', 64))");
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_migrate_maintain_suite(void) {
    Suite *s = suite_create("migrate_maintain");
    TCase *tc = tcase_create("maintain");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_maintain_creates_months_and_moves_rows);
    tcase_add_test(tc, test_migrate_maintain_concurrent_and_through_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("schema_check");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_schema_check_passes_on_migrated_db);
    tcase_add_test(tc, test_migrate_schema_check_catches_altered_column);
    tcase_add_test(tc, test_migrate_schema_check_version_and_history);
    suite_add_tcase(s, tc);
    return s;
}
