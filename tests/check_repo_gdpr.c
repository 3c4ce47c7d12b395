/* GDPR erase and the retention purge against the real database; direct
 * and through PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

static const char *const user_tables[][2] = {
        {"users", "id"},
        {"profiles", "user_id"},
        {"auth_sessions", "user_id"},
        {"conversations", "owner_id"},
        {"service_connections", "user_id"},
        {"ai_teams", "owner_id"},
        {"app_settings", "user_id"},
        {"memory_facts", "user_id"},
        {"analytics_events", "user_id"},
};

static long long rows_of(int64_t uid, const char *table, const char *col) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE %s = %lld", table, col,
             (long long)uid);
    return dt_sql_int(db, sql);
}

static long long messages_of(int64_t uid) {
    return count_sql("SELECT count(*) FROM messages m JOIN conversations c ON "
                     "c.id = m.conversation_id WHERE c.owner_id = %lld", uid);
}

/* One or more rows for the user in every table. */
static void populate(int64_t uid, ds_crypto *crypto, int n) {
    ds_error err = {0};
    char sql[512];
    for (int i = 0; i < n; i++) {
        int64_t conv = new_conversation(uid);
        ds_message_new m[3] = {{sizeof(ds_message_new), DS_ROLE_USER, "a", 0, NULL, NULL},
                               {sizeof(ds_message_new), DS_ROLE_ASSISTANT, "b", 0, NULL, "k"},
                               {sizeof(ds_message_new), DS_ROLE_USER, "c", 0, NULL, NULL}};
        ds_status st = ds_message_append_batch(pool, conv, m, 3, NULL, &err);
        ck_assert_ds_ok(st, err);
        char name[32], acct[32];
        snprintf(name, sizeof name, "team%d", i);
        st = ds_team_create(pool, uid, name, NULL, NULL, NULL, &err);
        ck_assert_ds_ok(st, err);
        json_t *v = json_integer(i);
        snprintf(name, sizeof name, "key%d", i);
        st = ds_setting_put(pool, uid, name, v, DS_VERSION_NEW, NULL, &err);
        ck_assert_ds_ok(st, err);
        json_decref(v);
        snprintf(acct, sizeof acct, "acct%d", i);
        ds_connection_new c = {sizeof(ds_connection_new), uid, "github", acct, NULL, "tok", 0, NULL, 0, 0};
        st = ds_connection_upsert(pool, crypto, &c, NULL, &err);
        ck_assert_ds_ok(st, err);
        ds_event ev = {sizeof(ds_event), uid, "e", NULL, 0};
        st = ds_event_record(pool, &ev, &err);
        ck_assert_ds_ok(st, err);
        /* sessions and memory facts are other modules' repositories:
         * their rows are made here by hand */
        snprintf(sql, sizeof sql,
                 "INSERT INTO auth_sessions (user_id, token_hash, expires_at) VALUES "
                 "(%lld, decode(md5('%lld-%d') || md5('x%d'), 'hex'), now() + interval '1 day'); "
                 "INSERT INTO memory_facts (user_id, content) VALUES (%lld, 'likes tea')",
                 (long long)uid, (long long)uid, i, i, (long long)uid);
        dt_sql(db, sql);
    }
}

START_TEST(test_repo_gdpr_erase_leaves_nothing_and_spares_others) {
    ds_error err = {0};
    ds_crypto *crypto = test_crypto("g1");
    int64_t victim = new_user("victim@example.com"), other = new_user("keep@example.com");
    populate(victim, crypto, 2);
    populate(other, crypto, 1);
    json_t *g = json_true();
    ds_status st = ds_setting_put(pool, 0, "global.flag", g, DS_VERSION_NEW, NULL, &err);
    ck_assert_ds_ok(st, err);
    json_decref(g);
    ds_redis *redis = NULL;
    const char *rurl = dt_env_opt("REDIS_URL");
    if (rurl) {
        st = ds_redis_open_url(rurl, &redis, &err);
        ck_assert_ds_ok(st, err);
        for (int u = 0; u < 2; u++) {
            int64_t id = u ? other : victim;
            char *key = ds__redis_key(redis, NULL, "test:cache:%lld", (long long)id);
            st = ds__redis_set_for_user(redis, id, key, "v", 1, 60000, &err);
            ck_assert_ds_ok(st, err);
            ds__free(key);
        }
    }
    long long other_before[9];
    for (int t = 0; t < 9; t++)
        other_before[t] = rows_of(other, user_tables[t][0], user_tables[t][1]);
    long long other_msgs = messages_of(other);

    ds_gdpr_erase_report *rep;
    st = ds_gdpr_erase_user(pool, redis, victim, NULL, &rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(rep->users, 1);
    ck_assert_int_eq(rep->profiles, 1);
    ck_assert_int_eq(rep->conversations, 2);
    ck_assert_int_eq(rep->messages, 6);
    ck_assert_int_eq(rep->ai_teams, 2);
    ck_assert_int_eq(rep->app_settings, 2);
    ck_assert_int_eq(rep->service_connections, 2);
    ck_assert_int_eq(rep->analytics_events, 2);
    ck_assert_int_eq(rep->auth_sessions, 2);
    ck_assert_int_eq(rep->memory_facts, 2);
    if (redis) {
        ck_assert(rep->redis_erased);
        ck_assert_int_ge(rep->redis_keys, 1);
    }
    ds_gdpr_erase_report_free(rep);
    /* every table, queried directly */
    for (int t = 0; t < 9; t++)
        ck_assert_msg(rows_of(victim, user_tables[t][0], user_tables[t][1]) == 0,
                      "%s still has rows of the erased user", user_tables[t][0]);
    ck_assert_int_eq(messages_of(victim), 0);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM messages m WHERE NOT EXISTS "
                                    "(SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)"),
                     0);
    for (int t = 0; t < 9; t++)
        ck_assert_int_eq(rows_of(other, user_tables[t][0], user_tables[t][1]), other_before[t]);
    ck_assert_int_eq(messages_of(other), other_msgs);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM app_settings WHERE user_id IS NULL"), 1);
    if (redis) {
        for (int u = 0; u < 2; u++) {
            int64_t id = u ? other : victim;
            char *key = ds__redis_key(redis, NULL, "test:cache:%lld", (long long)id);
            redisReply *r = ds__redis_command(redis, &err, "EXISTS %s", key);
            ck_assert_ptr_nonnull(r);
            ck_assert_int_eq(r->integer, u ? 1 : 0);
            freeReplyObject(r);
            ds__free(key);
        }
    }
    /* erasing again is a no-op that succeeds */
    st = ds_gdpr_erase_user(pool, redis, victim, NULL, &rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(rep->users, 0);
    ck_assert_int_eq(rep->messages, 0);
    ds_gdpr_erase_report_free(rep);
    st = ds_gdpr_erase_user(pool, NULL, 0, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_redis_close(redis);
    ds_crypto_close(crypto);
}
END_TEST

START_TEST(test_repo_gdpr_purge_soft_deleted) {
    ds_error err = {0};
    ds_crypto *crypto = test_crypto("p1");
    int64_t old_del = new_user("old@example.com"), new_del = new_user("new@example.com"),
            live = new_user("live@example.com");
    populate(old_del, crypto, 1);
    populate(new_del, crypto, 1);
    populate(live, crypto, 1);
    ds_status st = ds_user_soft_delete(pool, old_del, &err);
    ck_assert_ds_ok(st, err);
    st = ds_user_soft_delete(pool, new_del, &err);
    ck_assert_ds_ok(st, err);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE users SET deleted_at = now() - interval '40 days' "
             "WHERE id = %lld", (long long)old_del);
    dt_sql(db, sql);
    int64_t cutoff = ds__wall_us() - INT64_C(30) * 86400 * 1000000;
    int64_t purged;
    bool more;
    st = ds_gdpr_purge_deleted_users(pool, NULL, cutoff, NULL, &purged, &more, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 1);
    ck_assert(!more);
    for (int t = 0; t < 9; t++) {
        ck_assert_int_eq(rows_of(old_del, user_tables[t][0], user_tables[t][1]), 0);
        ck_assert_int_gt(rows_of(new_del, user_tables[t][0], user_tables[t][1]), 0);
        ck_assert_int_gt(rows_of(live, user_tables[t][0], user_tables[t][1]), 0);
    }
    st = ds_gdpr_purge_deleted_users(pool, NULL, cutoff, NULL, &purged, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 0);
    ds_crypto_close(crypto);
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

static void add_gdpr(TCase *tc) {
    tcase_add_test(tc, test_repo_gdpr_erase_leaves_nothing_and_spares_others);
    tcase_add_test(tc, test_repo_gdpr_purge_soft_deleted);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_gdpr_suite(void) {
    static const dt_repo_group groups[] = {
        {"gdpr", add_gdpr},
    };
    return dt_repo_suite("repo_gdpr", groups, sizeof groups / sizeof groups[0]);
}

