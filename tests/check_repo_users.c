/* The users repository against the real database: create, profiles, soft
 * delete, restore and paged lists; direct and through PgBouncer. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

START_TEST(test_repo_user_create_normalises_and_gets) {
    ds_error err = {0};
    json_t *prefs = json_pack("{s:s}", "theme", "dark");
    ds_profile_fields pf = {sizeof(ds_profile_fields), "Ada L.", "en-GB", "Europe/London", prefs};
    ds_user *u;
    ds_status st = ds_user_create(pool, "  Ada.Lovelace@Example.COM \n", &pf, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->email, "ada.lovelace@example.com");
    ck_assert_int_eq(u->status, DS_USER_ACTIVE);
    ck_assert_str_eq(u->display_name, "Ada L.");
    ck_assert_str_eq(u->locale, "en-GB");
    ck_assert_str_eq(u->timezone, "Europe/London");
    ck_assert(json_equal(u->preferences, prefs));
    ck_assert(u->created_at > 0 && u->deleted_at == 0);
    int64_t id = u->id;
    ds_user_free(u);

    st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->email, "ada.lovelace@example.com");
    ck_assert(json_equal(u->preferences, prefs));
    ds_user_free(u);
    st = ds_user_get_by_email(pool, "ADA.LOVELACE@example.com", &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(u->id == id);
    ds_user_free(u);
    /* defaults */
    st = ds_user_create(pool, "b@example.org", NULL, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "");
    ck_assert_str_eq(u->locale, "en");
    ck_assert_str_eq(u->timezone, "UTC");
    ck_assert(json_is_object(u->preferences) && json_object_size(u->preferences) == 0);
    ds_user_free(u);
    json_decref(prefs);
}
END_TEST

START_TEST(test_repo_user_duplicate_email_conflicts) {
    ds_error err = {0};
    new_user("dup@example.com");
    ds_user *u = (ds_user *)0x1;
    ds_status st = ds_user_create(pool, " DUP@Example.com", NULL, &u, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    ck_assert_ptr_null(u);
    ck_assert_ptr_nonnull(strstr(err.message, "email"));
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM users"), 1);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM profiles"), 1);
}
END_TEST

START_TEST(test_repo_user_bad_email_is_invalid) {
    const char *bad[] = {"", "   ", "no-at-sign", "@example.com", "a@", "a@b",
                         "a@@b.com", "a b@c.com", "a@b..com", "a@-b.com",
                         "a@b-.com", ".a@b.com", "a.@b.com", "a..b@c.com",
                         "a@b.c\xff", "\xc3\xa9@b.com", "a@b_c.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_error err = {0};
        ds_status st = ds_user_create(pool, bad[i], NULL, NULL, &err);
        ck_assert_msg(st == DS_ERR_INVALID, "email '%s' gave %s", bad[i],
                      ds_status_str(st));
        ck_assert(err.message[0]);
    }
    char longmail[400];
    memset(longmail, 'a', sizeof longmail);
    strcpy(longmail + 330, "@example.com");
    ds_error err = {0};
    ck_assert_int_eq(ds_user_create(pool, longmail, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_create(pool, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM users"), 0);
}
END_TEST

START_TEST(test_repo_user_profile_update_and_bad_fields) {
    ds_error err = {0};
    int64_t id = new_user("p@example.com");
    ds_profile_fields f = DS_PROFILE_FIELDS_INIT;
    f.display_name = "Grace";
    ds_user *u;
    ds_status st = ds_user_update_profile(pool, id, &f, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "Grace");
    ck_assert_str_eq(u->locale, "en"); /* unchanged */
    ds_user_free(u);
    json_t *prefs = json_pack("{s:i}", "n", 1);
    ds_profile_fields g = {sizeof(ds_profile_fields), NULL, "fr", NULL, prefs};
    st = ds_user_update_profile(pool, id, &g, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "Grace");
    ck_assert_str_eq(u->locale, "fr");
    ck_assert(json_equal(u->preferences, prefs));
    ds_user_free(u);
    json_decref(prefs);
    /* bad input changes nothing */
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ds_profile_fields bad[] = {{sizeof(ds_profile_fields), longname, NULL, NULL, NULL},
                               {sizeof(ds_profile_fields), "\xc0\xaf", NULL, NULL, NULL},
                               {sizeof(ds_profile_fields), NULL, "x", NULL, NULL},
                               {sizeof(ds_profile_fields), NULL, NULL, "", NULL}};
    for (size_t i = 0; i < 4; i++) {
        st = ds_user_update_profile(pool, id, &bad[i], NULL, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
    }
    json_t *arr = json_array();
    ds_profile_fields notobj = {sizeof(ds_profile_fields), NULL, NULL, NULL, arr};
    st = ds_user_update_profile(pool, id, &notobj, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    json_decref(arr);
    ds_profile_fields none = DS_PROFILE_FIELDS_INIT;
    st = ds_user_update_profile(pool, id, &none, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_user_update_profile(pool, id + 100, &f, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "Grace");
    ck_assert_str_eq(u->locale, "fr");
    ds_user_free(u);
}
END_TEST

START_TEST(test_repo_user_soft_delete_and_restore) {
    ds_error err = {0};
    int64_t id = new_user("s@example.com");
    ds_status st = ds_user_soft_delete(pool, id, &err);
    ck_assert_ds_ok(st, err);
    ds_user *u;
    st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_user_get_by_email(pool, "s@example.com", &u, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_user_soft_delete(pool, id, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    /* the address stays taken while soft-deleted */
    st = ds_user_create(pool, "s@example.com", NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_user_restore(pool, id, &err);
    ck_assert_ds_ok(st, err);
    st = ds_user_restore(pool, id, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(u->deleted_at == 0);
    ds_user_free(u);
    st = ds_user_set_status(pool, id, DS_USER_SUSPENDED, &err);
    ck_assert_ds_ok(st, err);
    st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(u->status, DS_USER_SUSPENDED);
    ds_user_free(u);
    st = ds_user_set_status(pool, id, (ds_user_status)9, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_user_set_status(pool, id + 9, DS_USER_ACTIVE, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
}
END_TEST

START_TEST(test_repo_user_list_pages_without_gaps_or_duplicates) {
    ds_error err = {0};
    char email[64];
    for (int i = 0; i < 25; i++) {
        snprintf(email, sizeof email, "u%02d@example.com", i);
        new_user(email);
    }
    int64_t deleted = new_user("gone@example.com");
    ds_status st = ds_user_soft_delete(pool, deleted, &err);
    ck_assert_ds_ok(st, err);
    ds_user_cursor cur = {0};
    int seen = 0, pages = 0, inserted = 0;
    int64_t last = 0;
    for (;;) {
        ds_user_list *page;
        st = ds_user_list_page(pool, &cur, 7, false, false, &page, &err);
        ck_assert_ds_ok(st, err);
        for (size_t i = 0; i < page->count; i++) {
            ck_assert(page->items[i]->id > last); /* ordered, no duplicates */
            ck_assert(page->items[i]->id != deleted);
            last = page->items[i]->id;
            seen++;
        }
        pages++;
        bool more = page->has_more;
        cur = page->next;
        ds_user_list_free(page);
        /* users created while paging show up at the end */
        if (inserted < 3) {
            snprintf(email, sizeof email, "late%d@example.com", inserted++);
            new_user(email);
        }
        if (!more)
            break;
    }
    ck_assert_int_eq(seen, 28);
    ck_assert_int_ge(pages, 4);
    ds_user_list *all;
    st = ds_user_list_page(pool, NULL, 1000, true, true, &all, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(all->count, 29);
    ck_assert(!all->has_more);
    ds_user_list_free(all);
    st = ds_user_list_page(pool, NULL, 0, false, false, &all, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_user_list_page(pool, NULL, -5, false, false, &all, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_user_list_page(pool, NULL, 1000001, false, false, &all, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
}
END_TEST

/* A user whose profile row is gone (written by another client, or removed
 * by hand) reads with the profile defaults, by id, by email and in a list. */
START_TEST(test_repo_user_without_profile_reads_defaults) {
    ds_error err = {0};
    int64_t id = new_user("noprofile@example.com");
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM profiles WHERE user_id = %lld", (long long)id);
    dt_sql(db, sql);
    ds_user *u;
    ds_status st = ds_user_get(pool, id, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(u->id == id);
    ck_assert_str_eq(u->email, "noprofile@example.com");
    ck_assert_str_eq(u->display_name, "");
    ck_assert_str_eq(u->locale, "en");
    ck_assert_str_eq(u->timezone, "UTC");
    ck_assert(json_is_object(u->preferences) && json_object_size(u->preferences) == 0);
    ck_assert(u->profile_updated_at == u->updated_at && u->updated_at > 0);
    ds_user_free(u);
    st = ds_user_get_by_email(pool, "NoProfile@example.com", &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->locale, "en");
    ck_assert(json_is_object(u->preferences));
    ds_user_free(u);
    int64_t other = new_user("withprofile@example.com");
    ds_user_list *list;
    st = ds_user_list_page(pool, NULL, 10, false, false, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    for (size_t i = 0; i < list->count; i++) {
        ck_assert(list->items[i]->id == id || list->items[i]->id == other);
        ck_assert_str_eq(list->items[i]->timezone, "UTC");
        ck_assert(json_is_object(list->items[i]->preferences));
    }
    ds_user_list_free(list);
    /* a profile written again reads as stored */
    json_t *prefs = json_pack("{s:b}", "beta", 1);
    ds_profile_fields pf = {sizeof(ds_profile_fields), "Back", NULL, "Europe/Paris", prefs};
    st = ds_user_update_profile(pool, id, &pf, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "Back");
    ck_assert_str_eq(u->locale, "en");
    ck_assert_str_eq(u->timezone, "Europe/Paris");
    ck_assert(json_equal(u->preferences, prefs));
    ds_user_free(u);
    json_decref(prefs);
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_users(TCase *tc) {
    tcase_add_test(tc, test_repo_user_create_normalises_and_gets);
    tcase_add_test(tc, test_repo_user_duplicate_email_conflicts);
    tcase_add_test(tc, test_repo_user_bad_email_is_invalid);
    tcase_add_test(tc, test_repo_user_profile_update_and_bad_fields);
    tcase_add_test(tc, test_repo_user_soft_delete_and_restore);
    tcase_add_test(tc, test_repo_user_list_pages_without_gaps_or_duplicates);
    tcase_add_test(tc, test_repo_user_without_profile_reads_defaults);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_users_suite(void) {
    static const dt_repo_group groups[] = {
        {"users", add_users},
    };
    return dt_repo_suite("repo_users", groups, sizeof groups / sizeof groups[0]);
}

