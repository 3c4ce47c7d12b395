/* The append's activity bump on `conversations` (docs/repositories.md,
 * "Appends without rewriting the conversation's row each time"), asserted
 * with the server's own counts, never with timings: how many updates the
 * appends make, that none of them is HOT (the activity index covers the
 * column), and that the table's free space per page (sql/0010) keeps each
 * new row version on its page while vacuum is not running. Direct
 * connections only: the statistics are read from the one server backend
 * that ran the appends, which a transaction pooler does not guarantee. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

/* The fillfactor sql/0010 sets on conversations. */
#define CONV_FILLFACTOR "70"

/* A pool of one connection, so that every statement of the test runs in
 * one server backend whose statistics flush_stats() can force out. */
static ds_pool *one_backend_pool(const char *interval_ms) {
    ds_error err = {0};
    ds_config *cfg = dt_config(db, 1, 1);
    ck_assert_ds_ok(ds_config_set(cfg, "repo_activity_interval_ms", interval_ms, &err),
                    err);
    ds_pool *p;
    ck_assert_ds_ok(ds_pool_open(cfg, &p, &err), err);
    ds_config_free(cfg);
    return p;
}

/* Runs `sql` on the pool's connection, then makes that backend publish its
 * table statistics before it answers (pg_stat_force_next_flush: the flush
 * happens before the backend reports itself idle), so a new session reads
 * every update made so far. */
static void run_and_flush(ds_pool *p, const char *sql) {
    ds_error err = {0};
    ds_conn *conn;
    ck_assert_ds_ok(ds_pool_acquire(p, &conn, &err), err);
    PGconn *pg = ds_pool_conn_pg(conn);
    if (sql)
        dt_exec(pg, sql);
    dt_exec(pg, "SELECT pg_stat_force_next_flush()");
    ds_pool_release(conn);
}

typedef struct conv_stats {
    long long updates, hot_updates;
} conv_stats;

static conv_stats read_stats(void) {
    conv_stats s;
    s.updates = dt_sql_int(db, "SELECT n_tup_upd FROM pg_stat_user_tables "
                               "WHERE relname = 'conversations'");
    s.hot_updates = dt_sql_int(db, "SELECT n_tup_hot_upd FROM pg_stat_user_tables "
                                   "WHERE relname = 'conversations'");
    return s;
}

static void append_n(ds_pool *p, int64_t conv, int n) {
    ds_error err = {0};
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "a message", 0, NULL, NULL};
    for (int i = 0; i < n; i++)
        ck_assert_ds_ok(ds_message_append(p, conv, &m, NULL, &err), err);
}

/* 200 appends within one interval update the conversation's row once; with
 * the interval 0 each of 200 appends updates it, and none of those updates
 * is HOT, since `conversations_owner_activity_idx` covers updated_at. */
START_TEST(test_repo_activity_counts_one_update_per_interval) {
    enum { APPENDS = 200 };
    int64_t conv = new_conversation(new_user("act-count@example.com"));
    /* an hour: far longer than this test runs, however loaded the machine */
    ds_pool *throttled = one_backend_pool("3600000");
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = now() - "
             "interval '1 day' WHERE id = %lld", (long long)conv);
    run_and_flush(throttled, sql);
    conv_stats s0 = read_stats();
    append_n(throttled, conv, APPENDS);
    run_and_flush(throttled, NULL);
    conv_stats s1 = read_stats();
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld",
                               conv),
                     APPENDS);
    ck_assert_msg(s1.updates - s0.updates == 1,
                  "%d appends in one interval updated conversations %lld times",
                  APPENDS, s1.updates - s0.updates);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM conversations WHERE id = %lld AND "
                               "updated_at > now() - interval '1 hour'", conv),
                     1);
    ds_pool_close(throttled);

    ds_pool *eager = one_backend_pool("0");
    run_and_flush(eager, NULL);
    conv_stats s2 = read_stats();
    append_n(eager, conv, APPENDS);
    run_and_flush(eager, NULL);
    conv_stats s3 = read_stats();
    ds_pool_close(eager);
    ck_assert_msg(s3.updates - s2.updates == APPENDS,
                  "interval 0: %d appends, %lld updates", APPENDS, s3.updates - s2.updates);
    ck_assert_msg(s3.hot_updates == s2.hot_updates,
                  "a bump of the indexed updated_at counted as HOT (%lld)",
                  s3.hot_updates - s2.hot_updates);
}
END_TEST

/* The block of a conversation row's current version. */
#define ROW_BLOCK "(ctid::text::point)[0]"

typedef struct page_outcome {
    long long rows_on_first_page, stayed, pages_before, pages_after, updates;
} page_outcome;

/* Fills the first pages of `conversations` with one INSERT (each page up to
 * the table's fillfactor), then bumps every row of the first page `rounds`
 * times (interval 0: every append updates) while vacuum cannot run on the
 * table, and reports how many of those rows still live on the first page.
 * Without vacuum only page pruning (which runs when a statement reads a
 * page short of free space) reclaims the dead versions' space. */
static page_outcome bump_first_page(int rounds) {
    /* nothing may vacuum conversations, and no autoanalyze of messages may
     * hold back the pruning horizon while the test runs */
    dt_sql(db, "ALTER TABLE conversations SET (autovacuum_enabled = false)");
    dt_sql(db, "ALTER TABLE messages SET (autovacuum_enabled = false)");
    int64_t owner = new_user("act-page@example.com");
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO conversations (owner_id, title) SELECT %lld, "
             "'chat' FROM generate_series(1, 300)", (long long)owner);
    dt_sql(db, sql);
    page_outcome o;
    o.pages_before = dt_sql_int(db, "SELECT pg_relation_size('conversations') / 8192");
    ck_assert_int_ge(o.pages_before, 2); /* the first page is full */
    PGconn *c = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SELECT id FROM conversations WHERE " ROW_BLOCK " = 0 "
                            "ORDER BY id");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    int n = PQntuples(r);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    for (int i = 0; i < n; i++)
        ids[i] = atoll(PQgetvalue(r, i, 0));
    PQclear(r);
    PQfinish(c);
    o.rows_on_first_page = n;
    ds_pool *eager = one_backend_pool("0");
    run_and_flush(eager, NULL);
    conv_stats s0 = read_stats();
    for (int k = 0; k < rounds; k++)
        for (int i = 0; i < n; i++)
            append_n(eager, ids[i], 1);
    run_and_flush(eager, NULL);
    conv_stats s1 = read_stats();
    ds_pool_close(eager);
    o.updates = s1.updates - s0.updates;
    ck_assert_int_eq(s1.hot_updates, s0.hot_updates);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM conversations WHERE owner_id = %lld "
             "AND id <= %lld AND " ROW_BLOCK " = 0", (long long)owner,
             (long long)ids[n - 1]);
    o.stayed = dt_sql_int(db, sql);
    o.pages_after = dt_sql_int(db, "SELECT pg_relation_size('conversations') / 8192");
    free(ids);
    return o;
}

/* With the free space sql/0010 leaves on each page, every bump of a row on
 * the first page finds room there once pruning has reclaimed the previous
 * versions: two rounds of non-HOT updates of every row move none of them
 * and add no page, with vacuum switched off. */
START_TEST(test_repo_activity_bumps_stay_on_their_page) {
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM pg_class WHERE relname = "
                                    "'conversations' AND 'fillfactor=" CONV_FILLFACTOR "' = "
                                    "ANY (reloptions)"),
                     1);
    page_outcome o = bump_first_page(2);
    ck_assert_int_eq(o.updates, 2 * o.rows_on_first_page);
    ck_assert_msg(o.stayed == o.rows_on_first_page && o.pages_after == o.pages_before,
                  "%lld of %lld rows left the first page; %lld -> %lld pages",
                  o.rows_on_first_page - o.stayed, o.rows_on_first_page,
                  o.pages_before, o.pages_after);
}
END_TEST

/* The control: with the table's pages packed full (fillfactor 100, as
 * before sql/0010), the same bumps move rows off the first page, because a
 * full page has no room for a row's new version until something prunes
 * it. */
START_TEST(test_repo_activity_full_pages_move_bumped_rows) {
    dt_sql(db, "ALTER TABLE conversations RESET (fillfactor)");
    page_outcome o = bump_first_page(2);
    ck_assert_int_eq(o.updates, 2 * o.rows_on_first_page);
    ck_assert_msg(o.stayed < o.rows_on_first_page,
                  "with full pages no row left the first page (%lld rows)",
                  o.rows_on_first_page);
}
END_TEST

Suite *ds_test_repo_activity_suite(void) {
    Suite *s = suite_create("repo_activity");
    TCase *tc = tcase_create("activity");
    tcase_add_checked_fixture(tc, repo_setup_direct, repo_teardown);
    tcase_add_test(tc, test_repo_activity_counts_one_update_per_interval);
    tcase_add_test(tc, test_repo_activity_bumps_stay_on_their_page);
    tcase_add_test(tc, test_repo_activity_full_pages_move_bumped_rows);
    suite_add_tcase(s, tc);
    return s;
}
