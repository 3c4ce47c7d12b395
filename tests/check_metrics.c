/* The Prometheus exposition of the handles' stats, against the real
 * PostgreSQL and Redis; promtool lints the example's output in
 * scripts/run-tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dt_redis.h"
#include "test_util.h"

/* The value of the sample line that starts with `series` + " ". */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    ck_abort_msg("no sample %s in:\n%s", series, text);
    return -1;
}

START_TEST(test_metrics_render_matches_stats) {
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 2);
    ds_redis *redis = dt_redis("metrics");
    ds_error err = {0};
    for (int i = 0; i < 5; i++) {
        ds_sql_result *res = NULL;
        ck_assert_ds_ok(ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, &err), err);
        ds_sql_result_free(res);
    }
    ds_conn *held;
    ck_assert_ds_ok(ds_pool_acquire(pool, &held, &err), err);
    redisReply *r = dt_rcmd(redis, "PING");
    freeReplyObject(r);

    ds_pool_stats ps = DS_POOL_STATS_INIT;
    ds_redis_stats rs = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_pool_stats_get(pool, &ps, &err), err);
    ck_assert_ds_ok(ds_redis_stats_get(redis, &rs, &err), err);
    ds_metrics_sources src = {.size = sizeof(ds_metrics_sources), .pool = pool, .redis = redis};
    char *text = NULL;
    size_t len = 0;
    ck_assert_ds_ok(ds_metrics_render(&src, &text, &len, &err), err);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(len, strlen(text));
    ck_assert_double_eq(sample(text, "ds_pool_acquires_total"), (double)ps.acquires);
    ck_assert_double_ge(sample(text, "ds_pool_acquires_total"), 6);
    ck_assert_double_eq(sample(text, "ds_pool_connections{state=\"in_use\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_redis_commands_total"), (double)rs.commands);
    ck_assert_ptr_nonnull(strstr(text, "# TYPE ds_pool_acquires_total counter\n"));
    ck_assert_ptr_nonnull(strstr(text, "# TYPE ds_pool_waiters gauge\n"));
    ck_assert_double_eq(sample(text, "ds_pool_waiter_overtaken_max"),
                        (double)ps.waiter_overtaken_max);
    /* counts only: no URL, password or host in the exposition */
    ck_assert_ptr_null(strstr(text, "postgresql://"));
    ck_assert_ptr_null(strstr(text, "redis://"));
    ck_assert_ptr_null(strstr(text, "127.0.0.1"));
    /* left-out sources are left out */
    ck_assert_ptr_null(strstr(text, "ds_cache_"));
    ck_assert_ptr_null(strstr(text, "ds_ratelimit_"));
    ck_assert_ptr_null(strstr(text, "ds_queue_"));
    ck_assert_ptr_null(strstr(text, "ds_memory_"));
    ds_metrics_free(text);
    ds_pool_release(held);
    ds_redis_close(redis);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_metrics_render_queue_and_memory) {
    ds_redis *redis = dt_redis("metrics");
    ds_queue_options qo = {.size = sizeof(ds_queue_options)};
    ds_queue_options_init(&qo);
    qo.name = "metrics-jobs";
    ds_queue *q = NULL;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_open(redis, &qo, &q, &err), err);
    json_t *payload = json_integer(1);
    for (int i = 0; i < 3; i++)
        ck_assert_ds_ok(ds_queue_enqueue(q, payload, i == 2 ? 600000 : 0, NULL,
                                         &err),
                        err);
    json_decref(payload);
    ds_queue_job *job = NULL;
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_ptr_nonnull(job);
    ck_assert_ds_ok(ds_queue_ack(q, job, &err), err);
    ck_assert_ds_status(ds_queue_ack(q, job, &err), DS_ERR_NOT_FOUND, err);
    ds_queue_job_free(job);

    char *url = dt_migrated_db("metricsmem");
    dt_sql(url, "INSERT INTO users (email) VALUES ('m@example.org')");
    int64_t user = dt_sql_int(url, "SELECT id FROM users");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_memory *mem = NULL;
    ck_assert_ds_ok(ds_memory_open(pool, NULL, &mem, &err), err);
    size_t dim = ds_memory_dim(mem);
    float *v = calloc(dim, sizeof *v);
    ck_assert_ptr_nonnull(v);
    v[0] = 1;
    ds_memory_new_fact f = {.size = sizeof(ds_memory_new_fact), .user_id = user, .content = "one", .embedding = v,
                            .dim = dim};
    ck_assert_ds_ok(ds_memory_add(mem, &f, NULL, &err), err);
    ck_assert_ds_ok(ds_memory_add(mem, &f, NULL, &err), err);
    ds_memory_search_options primary = {.size = sizeof(ds_memory_search_options), .read_primary = true};
    ds_memory_facts *hits = NULL;
    ck_assert_ds_ok(ds_memory_search(mem, user, v, dim, 5, &primary, &hits, &err), err);
    ck_assert_uint_eq(hits->count, 2);
    ds_memory_facts_free(hits);
    ck_assert_ds_ok(ds_memory_search_hybrid(mem, user, "one", v, dim, 5, &primary,
                                            &hits, &err),
                    err);
    ds_memory_facts_free(hits);

    ds_metrics_sources src = {.size = sizeof(ds_metrics_sources), .queue = q, .memory = mem};
    char *text = NULL;
    ck_assert_ds_ok(ds_metrics_render(&src, &text, NULL, &err), err);
    ck_assert_double_eq(sample(text, "ds_queue_enqueued_total{queue=\"metrics-jobs\"}"), 3);
    ck_assert_double_eq(sample(text, "ds_queue_reserved_total{queue=\"metrics-jobs\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_queue_acked_total{queue=\"metrics-jobs\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_queue_lost_total{queue=\"metrics-jobs\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_queue_errors_total{queue=\"metrics-jobs\"}"), 0);
    ck_assert_double_eq(
        sample(text, "ds_queue_jobs{queue=\"metrics-jobs\",state=\"ready\"}"), 1);
    ck_assert_double_eq(
        sample(text, "ds_queue_jobs{queue=\"metrics-jobs\",state=\"delayed\"}"), 1);
    ck_assert_ptr_nonnull(strstr(text, "# TYPE ds_queue_acked_total counter\n"));
    ck_assert_ptr_nonnull(strstr(text, "# TYPE ds_queue_jobs gauge\n"));
    ck_assert_double_eq(sample(text, "ds_memory_searches_total{kind=\"vector\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_memory_searches_total{kind=\"hybrid\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_memory_search_seconds_count"), 2);
    ck_assert_double_gt(sample(text, "ds_memory_search_seconds_sum"), 0);
    ck_assert_double_eq(sample(text, "ds_memory_facts_added_total"), 2);
    ck_assert_double_eq(sample(text, "ds_memory_rows_scanned_total"), 4);
    ck_assert_double_eq(sample(text, "ds_memory_errors_total"), 0);
    ds_memory_stats ms = {.size = sizeof(ds_memory_stats)};
    ds_memory_stats_init(&ms);
    ck_assert_ds_ok(ds_memory_stats_get(mem, &ms, &err), err);
    double backend = ds_memory_backend(mem) == DS_VECTOR_BACKEND_PGVECTOR
                         ? sample(text, "ds_memory_backend_searches_total{backend=\"pgvector\"}")
                         : sample(text, "ds_memory_backend_searches_total{backend=\"fallback\"}");
    ck_assert_double_eq(backend, 2);
    ck_assert_double_eq(sample(text, "ds_memory_rows_rescored_total"),
                        (double)ms.rows_rescored);
    ck_assert_ptr_nonnull(strstr(text, "# TYPE ds_memory_search_seconds summary\n"));
    ck_assert_ptr_null(strstr(text, "ds_pool_"));
    ds_metrics_free(text);

    /* Redis gone: the queue's sizes are left out, the rest is rendered */
    ck_assert_int_eq(dt_services("stop redis"), 0);
    text = NULL;
    ds_status st = ds_metrics_render(&src, &text, NULL, &err);
    ck_assert_int_eq(dt_services("start redis"), 0);
    dt_redis_wait_up(redis);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_null(strstr(text, "ds_queue_jobs"));
    ck_assert_double_eq(sample(text, "ds_queue_acked_total{queue=\"metrics-jobs\"}"), 1);
    ck_assert_double_eq(sample(text, "ds_memory_facts_added_total"), 2);
    ds_metrics_free(text);

    free(v);
    ds_memory_close(mem);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
    dt_redis_flush_prefix(redis);
    ds_queue_close(q);
    ds_redis_close(redis);
}
END_TEST

START_TEST(test_metrics_render_with_no_sources_is_only_info) {
    ds_metrics_sources src = DS_METRICS_SOURCES_INIT;
    char *text = NULL;
    ds_error err = {0};
    ck_assert_ds_ok(ds_metrics_render(&src, &text, NULL, &err), err);
    ck_assert_double_eq(sample(text, "ds_info{version=\"" DS_VERSION_STRING "\"}"), 1);
    ck_assert_ptr_null(strstr(text, "ds_pool_"));
    ds_metrics_free(text);
}
END_TEST

START_TEST(test_metrics_errors_null_arguments) {
    ds_metrics_sources src = DS_METRICS_SOURCES_INIT;
    char *text = (char *)"unchanged";
    size_t len = 7;
    ds_error err = {0};
    ck_assert_int_eq(ds_metrics_render(NULL, &text, &len, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(text);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(ds_metrics_render(&src, NULL, &len, &err), DS_ERR_INVALID);
    ds_metrics_free(NULL);
}
END_TEST

/* ---- the statement hook ------------------------------------------------ */

typedef struct {
    int n;
    char name[8][64];
    char sql[8][160];
    int64_t rows[8], duration_us[8];
    ds_status status[8];
    char sqlstate[8][6];
} recorded;

static void record_statement(void *ud, const ds_statement_event *ev) {
    recorded *rec = ud;
    if (rec->n >= 8)
        return;
    int i = rec->n++;
    snprintf(rec->name[i], sizeof rec->name[i], "%s", ev->name);
    snprintf(rec->sql[i], sizeof rec->sql[i], "%s", ev->sql);
    rec->rows[i] = ev->rows;
    rec->duration_us[i] = ev->duration_us;
    rec->status[i] = ev->status;
    snprintf(rec->sqlstate[i], sizeof rec->sqlstate[i], "%s", ev->sqlstate);
}

START_TEST(test_statement_hook_reports_time_rows_and_errors_not_parameters) {
    char *url = dt_migrated_db("stmthook");
    dt_sql(url, "CREATE TABLE dt_hook (x int); INSERT INTO dt_hook SELECT generate_series(1, 7)");
    ds_config *cfg = dt_config(url, 1, 1);
    recorded rec = {0};
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_statement_hook(cfg, record_statement, &rec, &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    int before = rec.n; /* statements run while connecting, if any */

    ds_sql_param p[] = {ds_sql_param_text("secret-parameter-value")};
    ds_sql_result *res = NULL;
    ck_assert_ds_ok(ds_sql_exec_pool(pool, "SELECT x FROM dt_hook WHERE $1 <> ''", p, 1,
                                 &res, &err), err);
    ds_sql_result_free(res);
    ck_assert_ds_ok(ds_sql_exec_pool(pool, "UPDATE dt_hook SET x = x + 1 WHERE x <= 3",
                                 NULL, 0, NULL, &err), err);
    ds_error div_err = {0};
    st = ds_sql_exec_pool(pool, "SELECT 1 / 0", NULL, 0, NULL, &div_err);
    ck_assert_int_ne(st, DS_OK);
    /* without an error out-param the hook still learns the outcome */
    ck_assert_int_ne(ds_sql_exec_pool(pool, "SELECT 2 / 0", NULL, 0, NULL, NULL), DS_OK);
    int before_repo = rec.n;
    ds_user *user = NULL;
    ck_assert_ds_ok(ds_user_create(pool, "hook@example.com", NULL, &user, &err), err);
    ds_user_free(user);
    ds_pool_close(pool);

    ck_assert_int_eq(before_repo - before, 4);
    /* the repository's statements come with their names */
    ck_assert_int_gt(rec.n, before_repo);
    ck_assert_msg(strncmp(rec.name[before_repo], "users.", 6) == 0, "name %s",
                  rec.name[before_repo]);
    ck_assert_ptr_null(strstr(rec.sql[before_repo], "hook@example.com"));
    int i = before;
    ck_assert_str_eq(rec.sql[i], "SELECT x FROM dt_hook WHERE $1 <> ''");
    ck_assert_str_eq(rec.name[i], ""); /* the caller's own SQL */
    ck_assert_int_eq(rec.rows[i], 7);
    ck_assert_int_eq(rec.status[i], DS_OK);
    ck_assert_str_eq(rec.sqlstate[i], "");
    ck_assert_int_ge(rec.duration_us[i], 0);
    ck_assert_int_eq(rec.rows[i + 1], 3);
    ck_assert_str_eq(rec.sql[i + 2], "SELECT 1 / 0");
    ck_assert_int_eq(rec.rows[i + 2], -1);
    ck_assert_int_eq(rec.status[i + 2], st);
    ck_assert_str_eq(rec.sqlstate[i + 2], "22012");
    ck_assert_str_eq(rec.sqlstate[i + 3], "22012");
    ck_assert_int_eq(rec.status[i + 3], st);
    for (int k = 0; k < rec.n; k++)
        ck_assert_ptr_null(strstr(rec.sql[k], "secret-parameter-value"));
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_metrics_suite(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, test_metrics_render_matches_stats);
    tcase_add_test(tc, test_metrics_render_with_no_sources_is_only_info);
    suite_add_tcase(s, tc);
    tc = tcase_create("queue_and_memory");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_metrics_render_queue_and_memory);
    suite_add_tcase(s, tc);
    tc = tcase_create("statement_hook");
    tcase_add_test(tc, test_statement_hook_reports_time_rows_and_errors_not_parameters);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_metrics_errors_null_arguments);
    suite_add_tcase(s, tc);
    return s;
}
