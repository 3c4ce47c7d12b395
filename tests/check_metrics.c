/* The Prometheus exposition of the handles' stats, against the real
 * PostgreSQL and Redis; promtool lints the example's output in
 * scripts/run-tests. */
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
        ds_result *res = NULL;
        ck_assert_ds_ok(ds_pool_exec(pool, "SELECT 1", NULL, 0, &res, &err), err);
        ds_result_free(res);
    }
    ds_conn *held;
    ck_assert_ds_ok(ds_pool_acquire(pool, &held, &err), err);
    redisReply *r = dt_rcmd(redis, "PING");
    freeReplyObject(r);

    ds_pool_stats ps;
    ds_redis_stats rs;
    ck_assert_ds_ok(ds_pool_stats_get(pool, &ps, &err), err);
    ck_assert_ds_ok(ds_redis_stats_get(redis, &rs, &err), err);
    ds_metrics_sources src = {.pool = pool, .redis = redis};
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
    /* counts only: no URL, password or host in the exposition */
    ck_assert_ptr_null(strstr(text, "postgresql://"));
    ck_assert_ptr_null(strstr(text, "redis://"));
    ck_assert_ptr_null(strstr(text, "127.0.0.1"));
    /* left-out sources are left out */
    ck_assert_ptr_null(strstr(text, "ds_cache_"));
    ck_assert_ptr_null(strstr(text, "ds_ratelimit_"));
    ds_metrics_free(text);
    ds_pool_release(held);
    ds_redis_close(redis);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_metrics_render_with_no_sources_is_only_info) {
    ds_metrics_sources src = {0};
    char *text = NULL;
    ds_error err = {0};
    ck_assert_ds_ok(ds_metrics_render(&src, &text, NULL, &err), err);
    ck_assert_double_eq(sample(text, "ds_info{version=\"" DS_VERSION_STRING "\"}"), 1);
    ck_assert_ptr_null(strstr(text, "ds_pool_"));
    ds_metrics_free(text);
}
END_TEST

START_TEST(test_metrics_errors_null_arguments) {
    ds_metrics_sources src = {0};
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

Suite *ds_test_metrics_suite(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, test_metrics_render_matches_stats);
    tcase_add_test(tc, test_metrics_render_with_no_sources_is_only_info);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_metrics_errors_null_arguments);
    suite_add_tcase(s, tc);
    return s;
}
