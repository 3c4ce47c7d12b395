/* Analytics events against the real database; direct and through
 * PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

START_TEST(test_repo_event_record_one_and_batch) {
    ds_error err = {0};
    int64_t uid = new_user("ev@example.com");
    json_t *props = json_pack("{s:s, s:i}", "plan", "pro", "n", 3);
    ds_event one = {sizeof(ds_event), uid, "signup", props, 0};
    ds_status st = ds_event_record(pool, &one, &err);
    ck_assert_ds_ok(st, err);
    ds_event anon = {sizeof(ds_event), 0, "page_view", NULL, INT64_C(1700000000000000)};
    st = ds_event_record(pool, &anon, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events WHERE user_id IS NULL "
                                    "AND occurred_at = to_timestamp(1700000000)"), 1);
    enum { N = 5000 };
    ds_event *evs = calloc(N, sizeof *evs);
    for (int i = 0; i < N; i++) {
        evs[i].size = sizeof evs[i];
        evs[i].user_id = i % 2 ? uid : 0;
        evs[i].name = i % 3 ? "message_sent" : "search";
        evs[i].properties = i % 5 ? NULL : props;
    }
    st = ds_event_record_batch(pool, evs, N, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events"), N + 2);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM analytics_events WHERE user_id = %lld AND "
                               "properties->>'plan' = 'pro'", uid), 1 + N / 10);
    /* a bad event anywhere: the whole COPY is aborted */
    json_t *arr = json_array();
    evs[N - 1].properties = arr;
    st = ds_event_record_batch(pool, evs, N, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "event 4999"));
    evs[N - 1].properties = NULL;
    evs[10].name = "bad\xff";
    st = ds_event_record_batch(pool, evs, N, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    evs[10].name = "";
    st = ds_event_record(pool, &evs[10], &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    evs[10].name = "ok";
    evs[10].user_id = -1;
    st = ds_event_record_batch(pool, evs, N, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_event_record_batch(pool, evs, 0, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events"), N + 2);
    /* the connection is fine afterwards */
    st = ds_event_record(pool, &one, &err);
    ck_assert_ds_ok(st, err);
    json_decref(arr);
    json_decref(props);
    free(evs);
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_events(TCase *tc) {
    tcase_add_test(tc, test_repo_event_record_one_and_batch);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_events_suite(void) {
    static const dt_repo_group groups[] = {
        {"events", add_events},
    };
    return dt_repo_suite("repo_events", groups, sizeof groups / sizeof groups[0]);
}

