/* Settings against the real database: versions and scopes, optimistic
 * concurrency, values jansson cannot hold, keyset-paged lists; direct and
 * through PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

START_TEST(test_repo_setting_versions_and_scopes) {
    ds_error err = {0};
    int64_t uid = new_user("set@example.com");
    json_t *v1 = json_pack("{s:b}", "beta", 1), *v2 = json_string("dark");
    ds_setting *s;
    ds_status st = ds_setting_put(pool, 0, "theme", v2, DS_VERSION_NEW, &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(s->user_id, 0);
    ck_assert_int_eq(s->version, 1);
    ds_setting_free(s);
    st = ds_setting_put(pool, uid, "theme", v1, DS_VERSION_NEW, &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(s->user_id == uid);
    ds_setting_free(s);
    st = ds_setting_put(pool, uid, "theme", v1, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_setting_get(pool, 0, "theme", &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(json_equal(s->value, v2));
    ds_setting_free(s);
    st = ds_setting_put(pool, uid, "theme", v2, 1, &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(s->version, 2);
    ds_setting_free(s);
    st = ds_setting_put(pool, uid, "theme", v1, 1, &s, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_setting_put(pool, uid, "nokey", v1, 3, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_setting_put(pool, uid, "theme", v1, DS_VERSION_ANY, &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(s->version, 3);
    ds_setting_free(s);
    json_t *jnull = json_null();
    st = ds_setting_put(pool, uid, "nothing", jnull, DS_VERSION_ANY, &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(json_is_null(s->value));
    ds_setting_free(s);
    ds_setting_list *list;
    st = ds_setting_list_for_user(pool, uid, NULL, 10, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0]->key, "nothing");
    ds_setting_list_free(list);
    st = ds_setting_list_for_user(pool, 0, NULL, 10, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 1);
    ds_setting_list_free(list);
    st = ds_setting_put(pool, uid + 50, "theme", v1, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    const char *badkeys[] = {"", "has space", "ünï", "semi;colon"};
    for (int i = 0; i < 4; i++) {
        st = ds_setting_put(pool, uid, badkeys[i], v1, DS_VERSION_ANY, NULL, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
    }
    st = ds_setting_put(pool, uid, "k", NULL, DS_VERSION_ANY, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_setting_delete(pool, uid, "theme", 1, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_setting_delete(pool, uid, "theme", 3, &err);
    ck_assert_ds_ok(st, err);
    st = ds_setting_delete(pool, uid, "theme", DS_VERSION_ANY, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_setting_get(pool, uid, "theme", &s, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM app_settings"), 2);
    json_decref(v1);
    json_decref(v2);
    json_decref(jnull);
}
END_TEST

START_TEST(test_repo_setting_concurrent_updates_conflict) {
    ds_error err = {0};
    int64_t uid = new_user("setocc@example.com");
    json_t *v = json_integer(0);
    ds_status st = ds_setting_put(pool, uid, "counter", v, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_ok(st, err);
    json_decref(v);
    int64_t want;
    run_occ(uid, true, &want);
    ds_setting *s;
    st = ds_setting_get(pool, uid, "counter", &s, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(s->version, want);
    ds_setting_free(s);
}
END_TEST

/* A value another client stored that jansson cannot hold is reported as
 * such (not as out of memory), without quoting it, and leaks nothing. */
START_TEST(test_repo_setting_value_beyond_jansson_is_reported) {
    ds_error err = {0};
    int64_t uid = new_user("big@example.com");
    json_t *v = json_integer(1);
    ds_status st = ds_setting_put(pool, uid, "a", v, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_setting_put(pool, uid, "b", v, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_ok(st, err);
    json_decref(v);
    dt_sql(db, "UPDATE app_settings SET value = "
               "'{\"n\": 123456789012345678901234567890}' WHERE key = 'b'");
    ds_setting *s = (ds_setting *)0x1;
    st = ds_setting_get(pool, uid, "b", &s, &err);
    ck_assert_ds_status(st, DS_ERR_UNSUPPORTED, err);
    ck_assert_ptr_null(s);
    ck_assert_ptr_null(strstr(err.message, "12345678901234567890"));
    ck_assert_msg(strstr(err.message, "JSON of value"), "%s", err.message);
    ds_setting_list *list = (ds_setting_list *)0x1;
    st = ds_setting_list_for_user(pool, uid, NULL, 10, &list, &err);
    ck_assert_ds_status(st, DS_ERR_UNSUPPORTED, err);
    ck_assert_ptr_null(list);
    dt_sql(db, "UPDATE app_settings SET value = '[1e400]' WHERE key = 'a'");
    st = ds_setting_get(pool, uid, "a", &s, &err);
    ck_assert_ds_status(st, DS_ERR_UNSUPPORTED, err);
}
END_TEST

START_TEST(test_repo_setting_list_pages_by_key_cursor) {
    ds_error err = {0};
    int64_t uid = new_user("sl@example.com"), other = new_user("sl2@example.com");
    const char *keys[] = {"k.7", "k.1", "k.5", "k.3", "k.2", "k.6", "k.4"};
    const char *sorted[] = {"k.1", "k.2", "k.3", "k.4", "k.5", "k.6", "k.7"};
    size_t n = sizeof keys / sizeof keys[0];
    json_t *v = json_integer(1);
    for (size_t i = 0; i < n; i++) {
        ds_status st = ds_setting_put(pool, uid, keys[i], v, DS_VERSION_NEW, NULL, &err);
        ck_assert_ds_ok(st, err);
        st = ds_setting_put(pool, 0, keys[i], v, DS_VERSION_NEW, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    ds_status st = ds_setting_put(pool, other, "k.35", v, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_ok(st, err);
    json_decref(v);

    /* the user's settings, then the global ones: each key once, in order */
    int64_t scopes[] = {uid, 0};
    for (size_t sc = 0; sc < 2; sc++) {
        char after[160] = "";
        ds_setting_cursor cur = {0};
        size_t seen = 0, pages = 0;
        bool more = true;
        while (more) {
            ds_setting_list *list;
            st = ds_setting_list_for_user(pool, scopes[sc], &cur, 3, &list, &err);
            ck_assert_ds_ok(st, err);
            pages++;
            for (size_t i = 0; i < list->count; i++) {
                ck_assert_uint_lt(seen, n);
                ck_assert_str_eq(list->items[i]->key, sorted[seen]);
                ck_assert_int_eq(list->items[i]->user_id, scopes[sc]);
                seen++;
            }
            ck_assert(list->has_more == (seen < n));
            more = list->has_more;
            snprintf(after, sizeof after, "%s", list->next.after_key);
            ds_setting_list_free(list);
            cur.after_key = after;
        }
        ck_assert_uint_eq(seen, n);
        ck_assert_uint_eq(pages, 3);
    }

    ds_setting_cursor end = {"zzz"};
    ds_setting_list *list;
    st = ds_setting_list_for_user(pool, uid, &end, 3, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 0);
    ck_assert(!list->has_more);
    ck_assert_str_eq(list->next.after_key, "zzz");
    ds_setting_list_free(list);

    char longkey[200];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    const char *bad[] = {"", "\xc3", longkey};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_setting_cursor b = {bad[i]};
        list = (ds_setting_list *)0x1;
        st = ds_setting_list_for_user(pool, uid, &b, 3, &list, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
        ck_assert_ptr_null(list);
        ck_assert_ptr_nonnull(strstr(err.message, "cursor.after_key"));
    }
    st = ds_setting_list_for_user(pool, uid, NULL, 1000001, &list, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);

    assert_list_plan("settings.list_user", "app_settings_user_key", "1, 'a', 4");
    assert_list_plan("settings.list_global", "app_settings_global_key", "0, 'a', 4");
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_settings(TCase *tc) {
    tcase_add_test(tc, test_repo_setting_versions_and_scopes);
    tcase_add_test(tc, test_repo_setting_concurrent_updates_conflict);
    tcase_add_test(tc, test_repo_setting_value_beyond_jansson_is_reported);
}

static void add_lists(TCase *tc) {
    tcase_add_test(tc, test_repo_setting_list_pages_by_key_cursor);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_settings_suite(void) {
    static const dt_repo_group groups[] = {
        {"settings", add_settings},
        {"lists", add_lists},
    };
    return dt_repo_suite("repo_settings", groups, sizeof groups / sizeof groups[0]);
}

