/* Soft delete seen by every reader: users.status says 'deleted' exactly when
 * deleted_at is set, whoever wrote it (the library or plain SQL), restore
 * brings the earlier status back.
 * Checked from SQL, as a reader in another language would. */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static long long count(const char *url, const char *where) {
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM users WHERE %s", where);
    return dt_sql_int(url, sql);
}

static int64_t create(ds_pool *pool, const char *email) {
    ds_user *u;
    ds_error err = {0};
    ck_assert_ds_ok(ds_user_create(pool, email, NULL, &u, &err), err);
    int64_t id = u->id;
    ds_user_free(u);
    return id;
}

static const char *status_of(const char *url, int64_t id) {
    static char buf[32];
    char sql[160];
    /* the status as a number of a fixed list, read back through the helper */
    snprintf(sql, sizeof sql,
             "SELECT array_position(ARRAY['active','pending','suspended',"
             "'deleted'], status) FROM users WHERE id = %lld",
             (long long)id);
    static const char *const names[] = {"?", "active", "pending", "suspended",
                                        "deleted"};
    long long i = dt_sql_int(url, sql);
    snprintf(buf, sizeof buf, "%s", i >= 1 && i <= 4 ? names[i] : "?");
    return buf;
}

START_TEST(test_softdelete_status_follows_the_library) {
    char *url = dt_migrated_db("softdel");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    int64_t ada = create(pool, "ada@example.com");
    int64_t bob = create(pool, "bob@example.com");
    int64_t cy = create(pool, "cy@example.com");
    ck_assert_ds_ok(ds_user_set_status(pool, cy, DS_USER_SUSPENDED, &err), err);

    ck_assert_ds_ok(ds_user_soft_delete(pool, ada, &err), err);
    ck_assert_ds_ok(ds_user_soft_delete(pool, cy, &err), err);
    /* a reader filtering on status alone no longer counts them */
    ck_assert_int_eq(count(url, "status = 'active'"), 1); /* bob */
    ck_assert_int_eq(count(url, "status = 'suspended'"), 0);
    ck_assert_int_eq(count(url, "status = 'deleted' AND deleted_at IS NOT NULL"), 2);
    ck_assert_int_eq(count(url, "deleted_at IS NULL AND status = 'deleted'"), 0);
    /* the library reports the status too, where deleted users are listed */
    ds_user_list *list;
    ck_assert_ds_ok(ds_user_list_page(pool, NULL, 10, true, false, &list, &err),
                    err);
    ck_assert_uint_eq(list->count, 3);
    ck_assert_int_eq(list->items[0]->status, DS_USER_DELETED);
    ck_assert_int_eq(list->items[1]->status, DS_USER_ACTIVE);
    ck_assert_int_eq(list->items[2]->status, DS_USER_DELETED);
    ds_user_list_free(list);
    /* deleted is not a status one sets; soft delete does it */
    ck_assert_ds_status(ds_user_set_status(pool, bob, DS_USER_DELETED, &err),
                        DS_ERR_INVALID, err);

    /* restore: the status from before, a suspended user stays suspended */
    ck_assert_ds_ok(ds_user_restore(pool, ada, &err), err);
    ck_assert_ds_ok(ds_user_restore(pool, cy, &err), err);
    ck_assert_str_eq(status_of(url, ada), "active");
    ck_assert_str_eq(status_of(url, cy), "suspended");
    ck_assert_int_eq(count(url, "status_before_delete IS NOT NULL"), 0);
    ck_assert_int_eq(count(url, "status <> 'deleted'"), 3);
    ds_user *u;
    ck_assert_ds_ok(ds_user_get(pool, cy, &u, &err), err);
    ck_assert_int_eq(u->status, DS_USER_SUSPENDED);
    ds_user_free(u);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_softdelete_status_follows_plain_sql_writers) {
    char *url = dt_migrated_db("softsql");
    dt_sql(url, "INSERT INTO users (email, status) VALUES ('a@x.io', 'pending'), "
                "('b@x.io', 'active'), ('c@x.io', 'active'), ('d@x.io', 'active')");
    /* deleted_at set by hand */
    dt_sql(url, "UPDATE users SET deleted_at = now() WHERE email = 'a@x.io'");
    ck_assert_int_eq(count(url, "email = 'a@x.io' AND status = 'deleted' AND "
                                "status_before_delete = 'pending'"),
                     1);
    /* status = 'deleted' written by hand is a soft delete */
    dt_sql(url, "UPDATE users SET status = 'deleted' WHERE email = 'b@x.io'");
    ck_assert_int_eq(count(url, "email = 'b@x.io' AND deleted_at IS NOT NULL"), 1);
    /* a deleted user stays deleted until restored */
    dt_sql(url, "UPDATE users SET status = 'active' WHERE email = 'b@x.io'");
    ck_assert_int_eq(count(url, "email = 'b@x.io' AND status = 'deleted'"), 1);
    /* restored by hand: the earlier status comes back */
    dt_sql(url, "UPDATE users SET deleted_at = NULL WHERE email = 'a@x.io'");
    ck_assert_int_eq(count(url, "email = 'a@x.io' AND status = 'pending' AND "
                                "status_before_delete IS NULL"),
                     1);
    /* or restored with a status chosen by the writer */
    dt_sql(url, "UPDATE users SET deleted_at = NULL, status = 'suspended' "
                "WHERE email = 'b@x.io'");
    ck_assert_int_eq(count(url, "email = 'b@x.io' AND status = 'suspended'"), 1);
    /* inserted already deleted */
    dt_sql(url, "INSERT INTO users (email, deleted_at) VALUES ('e@x.io', now())");
    ck_assert_int_eq(count(url, "email = 'e@x.io' AND status = 'deleted'"), 1);
    /* never one without the other */
    ck_assert_int_eq(count(url, "(status = 'deleted') <> (deleted_at IS NOT NULL)"),
                     0);
    ck_assert_int_eq(count(url, "status <> 'deleted' AND deleted_at IS NULL"), 4);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* Users soft-deleted before the migration get the status on the way up and
 * their old status back on the way down. */
START_TEST(test_softdelete_migration_backfills_and_reverts) {
    char *url = dt_migrated_db("softmig");
    ds_pool *pool = dt_pool(url, 1, 1);
    ds_error err = {0};
    ck_assert_ds_ok(ds_migrate_to(pool, NULL, 3, NULL, &err), err);
    dt_sql(url, "INSERT INTO users (email, status, deleted_at) VALUES "
                "('old@x.io', 'suspended', now()), ('live@x.io', 'active', NULL)");
    ck_assert_ds_ok(ds_migrate_to(pool, NULL, 4, NULL, &err), err);
    ck_assert_int_eq(count(url, "email = 'old@x.io' AND status = 'deleted' AND "
                                "status_before_delete = 'suspended'"),
                     1);
    ck_assert_int_eq(count(url, "email = 'live@x.io' AND status = 'active'"), 1);
    ck_assert_ds_ok(ds_migrate_to(pool, NULL, 3, NULL, &err), err);
    ck_assert_int_eq(count(url, "email = 'old@x.io' AND status = 'suspended' AND "
                                "deleted_at IS NOT NULL"),
                     1);
    ck_assert_ds_ok(ds_migrate_up(pool, NULL, NULL, &err), err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_softdelete_suite(void) {
    Suite *s = suite_create("softdelete");
    TCase *tc = tcase_create("status");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_softdelete_status_follows_the_library);
    tcase_add_test(tc, test_softdelete_status_follows_plain_sql_writers);
    tcase_add_test(tc, test_softdelete_migration_backfills_and_reverts);
    suite_add_tcase(s, tc);
    return s;
}
