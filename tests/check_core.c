/* Core: status names, errors, versions, logging, text helpers, OOM hook. */
#include <string.h>

#include "core/internal.h"
#include "test_util.h"

START_TEST(test_status_str_names_every_code) {
    for (int c = DS_OK; c <= DS_ERR_CANCELLED; c++) {
        const char *s = ds_status_str((ds_status)c);
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(strncmp(s, "DS_", 3) == 0, "code %d -> %s", c, s);
        ck_assert_str_ne(s, "DS_ERR_UNKNOWN");
    }
    ck_assert_str_eq(ds_status_str(DS_ERR_TIMEOUT), "DS_ERR_TIMEOUT");
    ck_assert_str_eq(ds_status_str((ds_status)999), "DS_ERR_UNKNOWN");
}
END_TEST

START_TEST(test_version_matches_header) {
    ck_assert_str_eq(ds_version(), DS_VERSION_STRING);
    ck_assert_uint_eq(ds_version_number(), DS_VERSION_NUMBER);
    ck_assert(DS_VERSION_AT_LEAST(DS_VERSION_MAJOR, DS_VERSION_MINOR, 0));
    ck_assert(!DS_VERSION_AT_LEAST(DS_VERSION_MAJOR + 1, 0, 0));
    ds_error err = {0};
    ck_assert_int_eq(ds_init(&err), DS_OK);
    ck_assert_int_eq(ds_init(&err), DS_OK); /* idempotent */
}
END_TEST

START_TEST(test_error_retryable_classification) {
    ck_assert(!ds_error_is_retryable(NULL));
    ds_error err = {0};
    ck_assert(!ds_error_is_retryable(&err));
    const char *yes[] = {"40001", "40P01", "57P01", "57P02", "57P03",
                         "08006", "08001", "55P03", "53300"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        ds__error_set(&err, DS_ERR_DB, "x");
        ds__error_set_sqlstate(&err, yes[i]);
        ck_assert_msg(ds_error_is_retryable(&err), "%s should retry", yes[i]);
        ck_assert_str_eq(err.sqlstate, yes[i]);
    }
    const char *no[] = {"23505", "42601", "22P02", "57014", "XX000"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        ds__error_set(&err, DS_ERR_DB, "x");
        ds__error_set_sqlstate(&err, no[i]);
        ck_assert_msg(!ds_error_is_retryable(&err), "%s should not retry",
                      no[i]);
    }
    ds__error_set(&err, DS_ERR_CONNECTION, "lost");
    ck_assert(ds_error_is_retryable(&err));
    ds_error_clear(&err);
    ck_assert_int_eq(err.code, DS_OK);
    ck_assert_str_eq(err.message, "");
}
END_TEST

START_TEST(test_error_scrub_and_prefix) {
    ds_error err = {0};
    ds__error_set(&err, DS_ERR_CONNECTION, "auth for hunter2 failed: hunter2");
    ds__error_scrub(&err, "hunter2");
    ck_assert_str_eq(err.message, "auth for *** failed: ***");
    ds__error_prefix(&err, "primary");
    ck_assert_str_eq(err.message, "primary: auth for *** failed: ***");
    /* a long message is truncated, never overflowed */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ds__error_set(&err, DS_ERR_DB, "%s", big);
    ck_assert_uint_eq(strlen(err.message), DS_ERROR_MESSAGE_MAX - 1);
    ds__error_prefix(&err, "%s", big);
    ck_assert_uint_eq(strlen(err.message), DS_ERROR_MESSAGE_MAX - 1);
}
END_TEST

typedef struct {
    int calls;
    ds_log_level last_level;
    char last_module[32];
    char last_msg[256];
} log_capture;

static void capture_log(void *ud, ds_log_level level, const char *module,
                        const char *msg) {
    log_capture *c = ud;
    c->calls++;
    c->last_level = level;
    snprintf(c->last_module, sizeof c->last_module, "%s", module);
    snprintf(c->last_msg, sizeof c->last_msg, "%s", msg);
}

START_TEST(test_log_callback_levels) {
    log_capture cap = {0};
    ds__log(DS_LOG_ERROR, "core", "nobody listens"); /* silent by default */
    ds_log_set_fn(capture_log, &cap, DS_LOG_INFO);
    ds__log(DS_LOG_DEBUG, "core", "filtered %d", 1);
    ck_assert_int_eq(cap.calls, 0);
    ds__log(DS_LOG_WARN, "pool", "kept %d", 2);
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_int_eq(cap.last_level, DS_LOG_WARN);
    ck_assert_str_eq(cap.last_module, "pool");
    ck_assert_str_eq(cap.last_msg, "kept 2");
    ds_log_set_fn(NULL, NULL, DS_LOG_DEBUG);
    ds__log(DS_LOG_ERROR, "core", "removed");
    ck_assert_int_eq(cap.calls, 1);
    ck_assert_str_eq(ds_log_level_str(DS_LOG_DEBUG), "debug");
    ck_assert_str_eq(ds_log_level_str((ds_log_level)42), "unknown");
}
END_TEST

START_TEST(test_utf8_validation) {
    ck_assert(ds__utf8_valid("plain", 5));
    ck_assert(ds__utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    ck_assert(!ds__utf8_valid("a\0b", 3));          /* NUL */
    ck_assert(!ds__utf8_valid("\xc3", 1));          /* truncated */
    ck_assert(!ds__utf8_valid("\xc0\xaf", 2));      /* overlong */
    ck_assert(!ds__utf8_valid("\xed\xa0\x80", 3));  /* surrogate */
    ck_assert(!ds__utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    ck_assert(!ds__utf8_valid("\xff", 1));
}
END_TEST

START_TEST(test_alloc_failure_is_an_error) {
    ds_config *cfg = NULL;
    ds_error err = {0};
    for (long n = 1; n < 40; n++) {
        ds__test_fail_alloc_after(n);
        ds_status st = ds_config_new(&cfg, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ds_config_free(cfg);
            return; /* every earlier failure point was handled */
        }
        ck_assert_ds_status(st, DS_ERR_NOMEM, err);
        ck_assert_ptr_null(cfg);
    }
    ck_abort_msg("ds_config_new never succeeded");
}
END_TEST

Suite *ds_test_core_suite(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("status");
    tcase_add_test(tc, test_status_str_names_every_code);
    tcase_add_test(tc, test_version_matches_header);
    tcase_add_test(tc, test_error_retryable_classification);
    tcase_add_test(tc, test_error_scrub_and_prefix);
    suite_add_tcase(s, tc);
    tc = tcase_create("log");
    tcase_add_test(tc, test_log_callback_levels);
    suite_add_tcase(s, tc);
    tc = tcase_create("text");
    tcase_add_test(tc, test_utf8_validation);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, test_alloc_failure_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}
