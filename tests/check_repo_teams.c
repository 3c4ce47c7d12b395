/* Teams against the real database: CRUD with versions, optimistic
 * concurrency, keyset-paged lists; direct and through PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

START_TEST(test_repo_team_crud_and_versions) {
    ds_error err = {0};
    int64_t owner = new_user("team@example.com");
    json_t *members = json_pack("[{s:s, s:s}]", "name", "planner", "model", "m1");
    json_t *config = json_pack("{s:f}", "temperature", 0.5);
    ds_team *t;
    ds_status st = ds_team_create(pool, owner, "Research", members, config, &t, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(t->version, 1);
    ck_assert(json_equal(t->members, members));
    ck_assert(json_equal(t->config, config));
    int64_t id = t->id;
    ds_team_free(t);
    st = ds_team_create(pool, owner, "Research", NULL, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_team_create(pool, owner + 9, "X", NULL, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_team_create(pool, owner, "", NULL, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_team_create(pool, owner, "Bad", config, NULL, NULL, &err); /* not an array */
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_team_create(pool, owner, "Empty", NULL, NULL, &t, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(json_is_array(t->members) && json_array_size(t->members) == 0);
    ck_assert(json_is_object(t->config));
    ds_team_free(t);

    json_t *config2 = json_pack("{s:f}", "temperature", 0.1);
    st = ds_team_update(pool, id, 1, NULL, NULL, config2, &t, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(t->version, 2);
    ck_assert(json_equal(t->config, config2));
    ck_assert(json_equal(t->members, members));
    ck_assert_str_eq(t->name, "Research");
    ds_team_free(t);
    /* stale */
    st = ds_team_update(pool, id, 1, "Renamed", NULL, NULL, &t, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    ck_assert_ptr_null(t);
    st = ds_team_update(pool, id, 2, "Empty", NULL, NULL, NULL, &err); /* name taken */
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_team_update(pool, id + 99, 1, "Z", NULL, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_team_get(pool, id, &t, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(t->version, 2);
    ck_assert_str_eq(t->name, "Research");
    ds_team_free(t);
    ds_team_list *list;
    st = ds_team_list_for_owner(pool, owner, NULL, 1, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 1);
    ck_assert(list->has_more);
    ds_team_list_free(list);
    st = ds_team_list_for_owner(pool, owner, NULL, 10, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    ds_team_list_free(list);
    st = ds_team_list_for_owner(pool, owner + 9, NULL, 10, &list, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_team_delete(pool, id, 1, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    st = ds_team_delete(pool, id, 2, &err);
    ck_assert_ds_ok(st, err);
    st = ds_team_delete(pool, id, 0, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_team_get(pool, id, &t, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    json_decref(members);
    json_decref(config);
    json_decref(config2);
}
END_TEST

START_TEST(test_repo_team_concurrent_updates_conflict) {
    ds_error err = {0};
    int64_t owner = new_user("occ@example.com");
    ds_team *t;
    ds_status st = ds_team_create(pool, owner, "Shared", NULL, NULL, &t, &err);
    ck_assert_ds_ok(st, err);
    int64_t id = t->id, want;
    ds_team_free(t);
    run_occ(id, false, &want);
    st = ds_team_get(pool, id, &t, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(t->version, want);
    ck_assert_int_eq(json_integer_value(json_object_get(t->config, "round")), 19);
    ds_team_free(t);
}
END_TEST

START_TEST(test_repo_team_list_pages_by_name_cursor) {
    ds_error err = {0};
    int64_t owner = new_user("tl@example.com"), other = new_user("tl2@example.com");
    /* created out of name order, so id order would differ */
    const char *names[] = {"g", "b", "e", "a", "f", "c", "d", "h"};
    const char *sorted[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    size_t n = sizeof names / sizeof names[0];
    for (size_t i = 0; i < n; i++) {
        ds_status st = ds_team_create(pool, owner, names[i], NULL, NULL, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    ds_status st = ds_team_create(pool, other, "b0", NULL, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);

    char after[16] = "";
    ds_team_cursor cur = {0};
    size_t seen = 0, pages = 0;
    for (;;) {
        ds_team_list *list;
        st = ds_team_list_for_owner(pool, owner, &cur, 3, &list, &err);
        ck_assert_ds_ok(st, err);
        pages++;
        for (size_t i = 0; i < list->count; i++) {
            ck_assert_uint_lt(seen, n);
            ck_assert_str_eq(list->items[i]->name, sorted[seen]);
            ck_assert_int_eq(list->items[i]->owner_id, owner);
            seen++;
        }
        ck_assert(list->has_more == (seen < n));
        if (list->count)
            ck_assert_str_eq(list->next.after_name, list->items[list->count - 1]->name);
        bool more = list->has_more;
        snprintf(after, sizeof after, "%s", list->next.after_name);
        ds_team_list_free(list);
        cur.after_name = after;
        if (!more)
            break;
    }
    ck_assert_uint_eq(seen, n);
    ck_assert_uint_eq(pages, 3);

    /* past the end: a correct empty page whose next stays put */
    ds_team_list *list;
    st = ds_team_list_for_owner(pool, owner, &cur, 3, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 0);
    ck_assert(!list->has_more);
    ck_assert_str_eq(list->next.after_name, "h");
    ds_team_list_free(list);

    /* a cursor from another owner's list is only a position: this owner's
     * teams after it, never the other owner's rows */
    ds_team_list *theirs;
    st = ds_team_list_for_owner(pool, other, NULL, 3, &theirs, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(theirs->count, 1);
    st = ds_team_list_for_owner(pool, owner, &theirs->next, 2, &list, &err);
    ck_assert_ds_ok(st, err);
    ds_team_list_free(theirs);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0]->name, "c");
    ck_assert_int_eq(list->items[0]->owner_id, owner);
    ck_assert_str_eq(list->items[1]->name, "d");
    ck_assert(list->has_more);
    ds_team_list_free(list);

    /* bad cursors and limits: DS_ERR_INVALID, nothing returned */
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad[] = {"", "\xff\xfe", longname};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_team_cursor b = {bad[i]};
        list = (ds_team_list *)0x1;
        st = ds_team_list_for_owner(pool, owner, &b, 3, &list, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
        ck_assert_ptr_null(list);
        ck_assert_ptr_nonnull(strstr(err.message, "cursor.after_name"));
    }
    st = ds_team_list_for_owner(pool, owner, NULL, 1000001, &list, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);

    assert_list_plan("teams.list", "ai_teams_owner_name_key", "1, 'a', 4");
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_teams(TCase *tc) {
    tcase_add_test(tc, test_repo_team_crud_and_versions);
    tcase_add_test(tc, test_repo_team_concurrent_updates_conflict);
}

static void add_lists(TCase *tc) {
    tcase_add_test(tc, test_repo_team_list_pages_by_name_cursor);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_teams_suite(void) {
    static const dt_repo_group groups[] = {
        {"teams", add_teams},
        {"lists", add_lists},
    };
    return dt_repo_suite("repo_teams", groups, sizeof groups / sizeof groups[0]);
}

