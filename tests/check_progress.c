/* Progress of long work (ds_progress_fn): every operation reports with
 * done never going back and finishing at done == total, and a callback
 * that asks to stop gets DS_ERR_CANCELLED, a consistent database, and a
 * second run that finishes the job. Real PostgreSQL throughout; the
 * probes that bound the waits are in check_online.c. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "progress_util.h"
#include "dt_files.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------- */

static long long version_of(const char *url) {
    return dt_sql_int(url, "SELECT coalesce(max(version), 0) FROM "
                           "ds_schema_migrations");
}

/* ---- migrations ------------------------------------------------------------- */

/* Stopped inside a file's transaction: the file is rolled back, the one
 * before stays; stopped after a committed file: it stays. Each second run
 * finishes, reporting each statement and each file. */
START_TEST(test_progress_migrate_stops_and_resumes) {
    char *url = dt_create_db("prog_mig");
    char *dir = dt_temp_dir("progress");
    dt_write_file(dir, "0001_a.up.sql",
                  "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n");
    dt_write_file(dir, "0001_a.down.sql", "DROP TABLE a;\n");
    dt_write_file(dir, "0002_b.up.sql",
                  "CREATE TABLE b (id int);\n"
                  "INSERT INTO b SELECT g FROM generate_series(1, 100) g;\n"
                  "CREATE INDEX b_id_idx ON b (id);\n");
    dt_write_file(dir, "0002_b.down.sql", "DROP TABLE b;\n");
    dt_write_file(dir, "0003_c.up.sql",
                  "-- ds:no-transaction\nCREATE TABLE IF NOT EXISTS c (id int);\n");
    dt_write_file(dir, "0003_c.down.sql", "DROP TABLE c;\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = {.size = sizeof(ds_migrate_options)};
    opts.dir = dir;
    opts.on_progress = dt_progress_record;
    ds_error err = {0};

    /* events: 0001 stmt 1, 2; files 1/3; 0002 stmt 1, 2 <- stop */
    dt_progress p;
    dt_progress_init(&p, "migrate", 5);
    opts.on_progress_ud = &p;
    int n = -1;
    ds_status st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0002_b.up.sql was rolled back"));
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(p.events, 5);
    ck_assert_str_eq(p.last_item, "0002_b.up.sql");
    ck_assert_int_eq(p.last_done, 2);
    ck_assert_int_eq(p.last_total, 3);
    dt_progress_check(&p, false);
    ck_assert_int_eq(version_of(url), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'b'"),
                     0);

    /* stop on the "files" event after 0002 committed: 0002 stays */
    dt_progress_init(&p, "migrate", 4);
    st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_str_eq(p.last_phase, "files");
    ck_assert_int_eq(p.last_done, 1);
    ck_assert_int_eq(p.last_total, 2);
    ck_assert_int_eq(version_of(url), 2);

    /* the rest, reported to the end */
    dt_progress_init(&p, "migrate", 0);
    st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(version_of(url), 3);
    dt_progress_check(&p, true);
    ck_assert_str_eq(p.last_phase, "files");
    ck_assert_int_eq(p.last_total, 1);

    /* down reports too: 3 files, each statement */
    dt_progress_init(&p, "migrate", 0);
    st = ds_migrate_to(pool, &opts, 0, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(p.events, 3 + 3);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.last_total, 3);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* "-- ds:batch TOTAL": the backfill runs in batches that each commit,
 * reported with the total counted first; stopped half-way, the next run
 * continues where it stopped. Misplaced, it is refused before anything
 * runs. */
START_TEST(test_progress_migrate_batch_backfill) {
    char *url = dt_create_db("prog_batch");
    char *dir = dt_temp_dir("progress");
    dt_write_file(dir, "0001_t.up.sql",
                  "CREATE TABLE t (id int PRIMARY KEY, old int, new int);\n"
                  "INSERT INTO t SELECT g, g, NULL FROM generate_series(1, "
                  "20000) g;\n");
    dt_write_file(dir, "0001_t.down.sql", "DROP TABLE t;\n");
    dt_write_file(dir, "0002_fill.up.sql",
                  "-- ds:no-transaction\n"
                  "-- copy old into new, 5000 rows a transaction\n"
                  "-- ds:batch (SELECT count(*) FROM t WHERE new IS NULL)\n"
                  "UPDATE t SET new = old WHERE id IN (SELECT id FROM t WHERE "
                  "new IS NULL ORDER BY id LIMIT 5000);\n");
    dt_write_file(dir, "0002_fill.down.sql", "UPDATE t SET new = NULL;\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = {.size = sizeof(ds_migrate_options)};
    opts.dir = dir;
    ds_error err = {0};
    ds_status st = ds_migrate_to(pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    opts.on_progress = dt_progress_record;

    /* events: backfill 5000, 10000 <- stop */
    dt_progress p;
    dt_progress_init(&p, "migrate", 2);
    opts.on_progress_ud = &p;
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_str_eq(p.last_item, "0002_fill.up.sql:4");
    ck_assert_str_eq(p.last_phase, "backfill");
    ck_assert_int_eq(p.last_done, 10000);
    ck_assert_int_eq(p.last_total, 20000);
    dt_progress_check(&p, false);
    ck_assert_int_eq(version_of(url), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM t WHERE new = old"),
                     10000);

    dt_progress_init(&p, "migrate", 0);
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.events, 2 + 1 + 1); /* 2 batches, statement, file */
    ck_assert_int_eq(version_of(url), 2);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM t WHERE new = old"),
                     20000);

    /* a statement that never runs out of rows is stopped, not run for ever */
    dt_write_file(dir, "0003_forever.up.sql",
                  "-- ds:no-transaction\n"
                  "-- ds:batch (SELECT 10)\n"
                  "UPDATE t SET new = new + 1 WHERE id <= 50000;\n");
    dt_write_file(dir, "0003_forever.down.sql", "SELECT 1;\n");
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_forever.up.sql:3"));
    ck_assert_ptr_nonnull(strstr(err.message, "leave out the rows"));

    /* refused before anything runs: in a transaction, on a SELECT */
    dt_write_file(dir, "0003_forever.up.sql",
                  "CREATE TABLE never (x int);\n"
                  "-- ds:batch\n"
                  "UPDATE t SET new = NULL WHERE id = 1;\n");
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_forever.up.sql:3"));
    ck_assert_ptr_nonnull(strstr(err.message, "outside a transaction"));
    dt_write_file(dir, "0003_forever.up.sql",
                  "-- ds:no-transaction\n"
                  "CREATE TABLE never (x int);\n"
                  "-- ds:batch\n"
                  "SELECT 1;\n");
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "UPDATE, DELETE or INSERT"));
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'never'"),
                     0);
    /* a total that does not evaluate names the file and line */
    dt_write_file(dir, "0003_forever.up.sql",
                  "-- ds:no-transaction\n"
                  "-- ds:batch (SELECT nope FROM t)\n"
                  "DELETE FROM t WHERE id > 100000;\n");
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_forever.up.sql:3"));
    ck_assert_str_eq(err.sqlstate, "42703");
    /* without a total: done of an unknown total, then it finishes */
    dt_write_file(dir, "0003_forever.up.sql",
                  "-- ds:no-transaction\n"
                  "-- ds:batch\n"
                  "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE id > 15000 "
                  "LIMIT 2000);\n");
    dt_progress_init(&p, "migrate", 0);
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM t"), 15000);
    ck_assert_int_eq(version_of(url), 3);
    dt_progress_check(&p, true);
    ds_pool_close(pool);
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- partition maintenance --------------------------------------------------- */

/* Stopped after the first batch: the month's table is not attached, no row
 * is lost or doubled; the next run copies again from an emptied table (rows
 * copied by the first run may have changed since) and moves them all. */
START_TEST(test_progress_maintain_stops_and_resumes) {
    enum { FUTURE = 12000 };
    char *url = dt_migrated_db("prog_maint");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO analytics_events (user_id, name, occurred_at) "
             "SELECT g, 'future', date_trunc('month', now()) + interval "
             "'5 months 3 days' + g * interval '1 second' FROM "
             "generate_series(1, %d) g",
             FUTURE);
    dt_sql(url, sql);
    const char *part_sql =
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = "
        "i.inhrelid WHERE c.relname = 'analytics_events_' || "
        "to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + "
        "interval '5 months', 'YYYY_MM')";
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = {.size = sizeof(ds_migrate_options)};
    dt_progress p;
    dt_progress_init(&p, "maintain", 1);
    opts.on_progress = dt_progress_record;
    opts.on_progress_ud = &p;
    ds_error err = {0};
    int created = -1;
    ds_status st = ds_migrate_maintain(pool, &opts, 6, &created, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_ptr_nonnull(strstr(err.message, "not attached yet"));
    ck_assert_int_eq(p.events, 1);
    ck_assert_int_gt(p.last_done, 0); /* one batch of 64 pages */
    ck_assert_int_lt(p.last_done, FUTURE);
    ck_assert_int_eq(p.last_total, FUTURE);
    ck_assert_str_eq(p.last_phase, "copy");
    ck_assert_int_eq(dt_sql_int(url, part_sql), 0); /* not attached */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'future'"),
                     FUTURE);

    dt_progress_init(&p, "maintain", 0);
    st = ds_migrate_maintain(pool, &opts, 6, &created, &err);
    ck_assert_ds_ok(st, err);
    dt_progress_check(&p, true);
    ck_assert_int_gt(p.first_done, 0);
    ck_assert_int_eq(p.last_done, FUTURE);
    ck_assert_int_eq(dt_sql_int(url, part_sql), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'future'"),
                     FUTURE);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM "
                                     "analytics_events_default WHERE name = "
                                     "'future'"),
                     0);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- key rotation --------------------------------------------------------------- */

START_TEST(test_progress_rotate_stops_and_resumes) {
    enum { ROWS = 1000 };
    char *url = dt_migrated_db("prog_rot");
    dt_sql(url, "INSERT INTO users (email) SELECT 'u' || g || '@example.com' "
                "FROM generate_series(1, 50) g");
    ds_crypto *ring1 = dt_crypto_ring(DT_K1);
    ds_crypto *ring2 = dt_crypto_ring(DT_K2 "," DT_K1);
    dt_seed_connections(url, ring1, ROWS, 50);
    ds_pool *pool = dt_pool(url, 1, 2);
    dt_progress p;
    dt_progress_init(&p, "crypto_rotate", 3);
    ds_crypto_rotate_options opts = {.size = sizeof(ds_crypto_rotate_options), .batch_size = 100,
                                     .progress = dt_progress_record,
                                     .progress_ud = &p};
    ds_crypto_rotate_stats stats = {.size = sizeof(ds_crypto_rotate_stats)};
    ds_error err = {0};
    ds_status st = ds_crypto_rotate(ring2, pool, &opts, &stats, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_ptr_nonnull(strstr(err.message, "run ds_crypto_rotate again"));
    ck_assert_int_eq(stats.rotated, 300);
    ck_assert_int_eq(stats.batches, 3);
    ck_assert_int_eq(stats.remaining, ROWS - 300);
    ck_assert_int_eq(p.last_done, 300);
    ck_assert_int_eq(p.last_total, ROWS);
    ck_assert_str_eq(p.last_item, "service_connections");
    dt_progress_check(&p, false);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM service_connections "
                                     "WHERE key_id = 'k2'"),
                     300);

    dt_progress_init(&p, "crypto_rotate", 0);
    st = ds_crypto_rotate(ring2, pool, &opts, &stats, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(stats.rotated, ROWS - 300);
    ck_assert_int_eq(stats.remaining, 0);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.last_total, ROWS - 300);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM service_connections "
                                     "WHERE key_id = 'k2'"),
                     ROWS);
    /* every envelope opens with the new key alone */
    ds_crypto *only2 = dt_crypto_ring(DT_K2);
    ds_sql_result *res;
    st = ds_sql_exec_pool(pool,
                      "SELECT user_id, external_account_id, access_token_enc "
                      "FROM service_connections ORDER BY id",
                      NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(ds_sql_result_rows(res), ROWS);
    for (int i = 0; i < ROWS; i++) {
        int64_t user;
        const char *acct;
        const uint8_t *env;
        size_t len;
        ck_assert_ds_ok(ds_sql_result_int64(res, i, 0, &user, &err), err);
        ck_assert_ds_ok(ds_sql_result_text(res, i, 1, &acct, NULL, &err), err);
        ck_assert_ds_ok(ds_sql_result_bytea(res, i, 2, &env, &len, &err), err);
        char scope[80];
        snprintf(scope, sizeof scope, "google/%s", acct);
        ds_crypto_context ctx = {sizeof(ds_crypto_context), "service_connections", "access_token", user,
                                 scope};
        ds_crypto_secret *plain;
        ck_assert_ds_ok(ds_crypto_decrypt(only2, &ctx, env, len, &plain, &err),
                        err);
        ck_assert_int_eq(strncmp((const char *)ds_crypto_secret_data(plain),
                                 "ya29.token-", 11),
                         0);
        ds_crypto_secret_free(plain);
    }
    ds_sql_result_free(res);
    ds_crypto_close(only2);
    ds_crypto_close(ring1);
    ds_crypto_close(ring2);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- GDPR erase and the purge --------------------------------------------------- */

/* A user with 12,000 messages, 3,000 facts and 3,000 events, and another
 * user whose rows must survive. */
static void seed_heavy_user(const char *url) {
    dt_sql(url, "INSERT INTO users (email) VALUES ('heavy@example.com'), "
                "('other@example.com')");
    dt_sql(url, "INSERT INTO conversations (owner_id, title) SELECT u.id, "
                "'c' || g FROM users u, generate_series(1, 12) g");
    dt_sql(url, "INSERT INTO messages (conversation_id, role, content) SELECT "
                "c.id, 'user', 'm' || g FROM conversations c, "
                "generate_series(1, 1000) g");
    dt_sql(url, "INSERT INTO memory_facts (user_id, content) SELECT u.id, "
                "'fact ' || g FROM users u, generate_series(1, 3000) g");
    dt_sql(url, "INSERT INTO analytics_events (user_id, name) SELECT u.id, "
                "'e' FROM users u, generate_series(1, 3000) g");
}

START_TEST(test_progress_erase_stops_and_resumes) {
    char *url = dt_migrated_db("prog_erase");
    seed_heavy_user(url);
    long long heavy = dt_sql_int(url, "SELECT id FROM users WHERE email = "
                                      "'heavy@example.com'");
    ds_pool *pool = dt_pool(url, 1, 2);
    dt_progress p;
    dt_progress_init(&p, "erase", 2);
    p.cumulative = true;
    ds_gdpr_erase_options opts = {.size = sizeof(ds_gdpr_erase_options)};
    ds_gdpr_erase_options_init(&opts);
    opts.batch_rows = 2000;
    opts.progress = dt_progress_record;
    opts.progress_ud = &p;
    ds_gdpr_erase_report *rep = (ds_gdpr_erase_report *)&rep; /* must become NULL */
    ds_error err = {0};
    ds_status st = ds_gdpr_erase_user(pool, NULL, heavy, &opts, &rep, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_ptr_null(rep);
    ck_assert_int_eq(p.last_done, 4000);
    ck_assert_int_eq(p.last_total, 18000);
    ck_assert_str_eq(p.last_item, "messages");
    dt_progress_check(&p, false);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages m JOIN conversations c ON c.id = "
             "m.conversation_id WHERE c.owner_id = %lld",
             heavy);
    ck_assert_int_eq(dt_sql_int(url, sql), 8000);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM users WHERE id = %lld",
             heavy);
    ck_assert_int_eq(dt_sql_int(url, sql), 1);

    dt_progress_init(&p, "erase", 0);
    p.cumulative = true;
    st = ds_gdpr_erase_user(pool, NULL, heavy, &opts, &rep, &err);
    ck_assert_ds_ok(st, err);
    dt_progress_check(&p, true);
    ck_assert_int_ge(p.events, 4 + 2 + 2); /* batches of each table, final */
    ck_assert_int_eq(rep->users, 1);
    ck_assert_int_eq(rep->conversations, 12);
    ck_assert_int_eq(rep->messages, 8000);
    ck_assert_int_eq(rep->memory_facts, 3000);
    ck_assert_int_eq(rep->analytics_events, 3000);
    /* everything this call deleted, and nothing else */
    ck_assert_int_eq(p.last_done, 1 + 12 + 8000 + 3000 + 3000);
    ds_gdpr_erase_report_free(rep);
    ck_assert_int_eq(dt_sql_int(url, sql), 0);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM messages"), 12000);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts"), 3000);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM analytics_events"),
                     3000);
    /* erasing again: nothing left, still a report that finishes */
    dt_progress_init(&p, "erase", 0);
    st = ds_gdpr_erase_user(pool, NULL, heavy, &opts, &rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(rep->users, 0);
    dt_progress_check(&p, true);
    ds_gdpr_erase_report_free(rep);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_progress_purge_stops_and_resumes) {
    char *url = dt_migrated_db("prog_purge");
    dt_sql(url, "INSERT INTO users (email, deleted_at) SELECT 'gone' || g || "
                "'@example.com', now() - interval '40 days' FROM "
                "generate_series(1, 50) g");
    dt_sql(url, "INSERT INTO users (email) VALUES ('kept@example.com')");
    dt_sql(url, "INSERT INTO memory_facts (user_id, content) SELECT u.id, "
                "'fact ' || g FROM users u, generate_series(1, 100) g");
    ds_pool *pool = dt_pool(url, 1, 2);
    dt_progress p;
    dt_progress_init(&p, "purge", 2);
    ds_gdpr_purge_options opts = {.size = sizeof(ds_gdpr_purge_options)};
    ds_gdpr_purge_options_init(&opts);
    opts.batch_users = 10;
    opts.progress = dt_progress_record;
    opts.progress_ud = &p;
    int64_t purged = -1;
    bool more = true;
    ds_error err = {0};
    ds_status st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &opts,
                                            &purged, &more, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_int_eq(purged, 20);
    ck_assert(more);
    ck_assert_int_eq(p.last_done, 20);
    ck_assert_int_eq(p.last_total, 50);
    dt_progress_check(&p, false);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM users WHERE "
                                     "deleted_at IS NOT NULL"),
                     30);

    /* a bounded run: 15 users, more waiting */
    dt_progress_init(&p, "purge", 0);
    opts.max_users = 15;
    st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &opts, &purged, &more,
                                  &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 15);
    ck_assert(more);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.last_total, 15);

    dt_progress_init(&p, "purge", 0);
    opts.max_users = 0;
    st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &opts, &purged, &more,
                                  &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 15);
    ck_assert(!more);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.last_done, 15);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM users"), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts"), 100);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- memory upgrade ---------------------------------------------------------- */

START_TEST(test_progress_memory_upgrade_stops_and_resumes) {
    if (dt_skip_without_pgvector("test_progress_memory_upgrade_stops_and_resumes"))
        return;
    char *url = dt_migrated_db_backend("prog_pgv", "fallback");
    dt_sql(url, "INSERT INTO users (email) VALUES ('v@example.com')");
    long long dim = dt_sql_int(url, "SELECT embedding_dim FROM "
                                    "memory_vector_settings");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO memory_facts (user_id, content, embedding, "
             "embedding_sketch) SELECT 1, 'f' || g, decode(repeat('0000803f', "
             "%lld), 'hex'), decode(repeat('00', %lld), 'hex') FROM "
             "generate_series(1, 3000) g",
             dim, dim + 8);
    dt_sql(url, sql);
    ds_pool *pool = dt_pool(url, 1, 2);
    dt_progress p;
    dt_progress_init(&p, "memory_upgrade", 1);
    ds_memory_upgrade_options opts = {.size = sizeof(ds_memory_upgrade_options)};
    ds_memory_upgrade_options_init(&opts);
    opts.progress = dt_progress_record;
    opts.progress_ud = &p;
    ds_error err = {0};
    ds_status st = ds_memory_upgrade_to_pgvector(pool, &opts, &err);
    ck_assert_ds_status(st, DS_ERR_CANCELLED, err);
    ck_assert_int_eq(p.last_total, 3000);
    ck_assert_int_gt(p.last_done, 0);
    ck_assert_int_lt(p.last_done, 3000);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_vector_settings "
                                     "WHERE backend = 'fallback'"),
                     1);
    long long first = p.last_done;
    dt_progress_init(&p, "memory_upgrade", 0);
    st = ds_memory_upgrade_to_pgvector(pool, &opts, &err);
    ck_assert_ds_ok(st, err);
    dt_progress_check(&p, true);
    ck_assert_int_eq(p.last_done, 3000 - first); /* the rest, not all again */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_vector_settings "
                                     "WHERE backend = 'pgvector'"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM memory_facts WHERE "
                                     "embedding IS NOT NULL"),
                     3000);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- errors ------------------------------------------------------------------- */

START_TEST(test_progress_errors_bad_options) {
    ck_assert_str_eq(ds_status_str(DS_ERR_CANCELLED), "DS_ERR_CANCELLED");
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_error err = {0};
    ds_gdpr_erase_options eo = {.size = sizeof(ds_gdpr_erase_options)};
    ds_gdpr_erase_options_init(&eo);
    ck_assert_uint_eq(eo.size, sizeof eo);
    ck_assert_int_eq(eo.batch_rows, 0);
    ck_assert_ptr_null(eo.progress);
    eo.size = 3;
    ds_gdpr_erase_report *rep = NULL;
    ds_status st = ds_gdpr_erase_user(pool, NULL, 1, &eo, &rep, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds_gdpr_erase_options.size"));
    eo.size = sizeof eo + 8; /* a newer header than this library */
    ck_assert_int_eq(ds_gdpr_erase_user(pool, NULL, 1, &eo, &rep, &err),
                     DS_ERR_INVALID);
    ds_gdpr_erase_options_init(&eo);
    eo.batch_rows = -1;
    ck_assert_int_eq(ds_gdpr_erase_user(pool, NULL, 1, &eo, &rep, &err),
                     DS_ERR_INVALID);
    eo.batch_rows = 100001;
    ck_assert_int_eq(ds_gdpr_erase_user(pool, NULL, 1, &eo, &rep, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_gdpr_erase_user(NULL, NULL, 1, NULL, &rep, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_gdpr_erase_user(pool, NULL, 0, NULL, &rep, &err),
                     DS_ERR_INVALID);

    ds_gdpr_purge_options po = {.size = sizeof(ds_gdpr_purge_options)};
    ds_gdpr_purge_options_init(&po);
    po.size = 0;
    int64_t purged = 7;
    bool more = true;
    st = ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &po, &purged, &more,
                                  &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(purged, 0);
    ck_assert(!more);
    ds_gdpr_purge_options_init(&po);
    po.batch_users = 10001;
    ck_assert_int_eq(ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &po,
                                              NULL, NULL, &err),
                     DS_ERR_INVALID);
    ds_gdpr_purge_options_init(&po);
    po.max_users = -1;
    ck_assert_int_eq(ds_gdpr_purge_deleted_users(pool, NULL, INT64_MAX, &po,
                                              NULL, NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_gdpr_purge_deleted_users(NULL, NULL, INT64_MAX, NULL,
                                              NULL, NULL, &err),
                     DS_ERR_INVALID);

    ds_memory_upgrade_options mo = {.size = sizeof(ds_memory_upgrade_options)};
    ds_memory_upgrade_options_init(&mo);
    mo.size = sizeof mo - 1;
    ck_assert_int_eq(ds_memory_upgrade_to_pgvector(pool, &mo, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_memory_upgrade_to_pgvector(NULL, NULL, &err),
                     DS_ERR_INVALID);
    /* the init functions take NULL */
    ds_gdpr_erase_options_init(NULL);
    ds_gdpr_purge_options_init(NULL);
    ds_memory_upgrade_options_init(NULL);
    ds_pool_close(pool);
}
END_TEST

Suite *ds_test_progress_suite(void) {
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("cancel");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_progress_migrate_stops_and_resumes);
    tcase_add_test(tc, test_progress_migrate_batch_backfill);
    tcase_add_test(tc, test_progress_maintain_stops_and_resumes);
    tcase_add_test(tc, test_progress_rotate_stops_and_resumes);
    tcase_add_test(tc, test_progress_erase_stops_and_resumes);
    tcase_add_test(tc, test_progress_purge_stops_and_resumes);
    tcase_add_test(tc, test_progress_memory_upgrade_stops_and_resumes);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_progress_errors_bad_options);
    suite_add_tcase(s, tc);
    return s;
}
