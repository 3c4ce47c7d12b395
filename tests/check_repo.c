/* The repositories against the real database: users and profiles,
 * conversations and messages, teams, settings, analytics events, service
 * connections and GDPR erase. Every case runs twice: on a direct
 * connection (prepared mode) and through PgBouncer in transaction mode
 * with the pool in pooler mode. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "pool/stmt.h"
#include "redis/redis_internal.h"
#include "test_util.h"

static char *db;      /* direct URL of this test's database */
static ds_pool *pool; /* direct or through the pooler       */

static void open_pool(const char *url, bool pooler) {
    ds_config *cfg = dt_config(url, 1, 4);
    ds_error err = {0};
    if (pooler) {
        ds_status st = ds_config_set(cfg, "statement_mode", "pooler", &err);
        ck_assert_ds_ok(st, err);
    }
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
}

static void setup_direct(void) {
    db = dt_migrated_db("repo");
    open_pool(db, false);
}

static void setup_pooler(void) {
    db = dt_migrated_db("repopool");
    char *name = strrchr(db, '/') + 1;
    char dbname[64];
    snprintf(dbname, sizeof dbname, "%.*s", (int)strcspn(name, "?"), name);
    char *url = dt_url_with_db(dt_env("DATABASE_POOLER_URL"), dbname);
    open_pool(url, true);
    free(url);
}

static void teardown(void) {
    ds_pool_close(pool);
    pool = NULL;
    dt_drop_db(db);
    free(db);
}

static long long count_sql(const char *fmt, long long id) {
    char sql[512];
    snprintf(sql, sizeof sql, fmt, id);
    return dt_sql_int(db, sql);
}

static int64_t new_user(const char *email) {
    ds_error err = {0};
    ds_user *u;
    ds_status st = ds_user_create(pool, email, NULL, &u, &err);
    ck_assert_ds_ok(st, err);
    int64_t id = u->id;
    ds_user_free(u);
    return id;
}

static int64_t new_conversation(int64_t owner) {
    ds_error err = {0};
    ds_conversation *c;
    ds_status st = ds_conversation_create(pool, owner, "chat", &c, &err);
    ck_assert_ds_ok(st, err);
    int64_t id = c->id;
    ds_conversation_free(c);
    return id;
}

/* ---- users ------------------------------------------------------------------ */

START_TEST(test_repo_user_create_normalises_and_gets) {
    ds_error err = {0};
    json_t *prefs = json_pack("{s:s}", "theme", "dark");
    ds_profile_fields pf = {"Ada L.", "en-GB", "Europe/London", prefs};
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
    ds_profile_fields f = {0};
    f.display_name = "Grace";
    ds_user *u;
    ds_status st = ds_profile_update(pool, id, &f, &u, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(u->display_name, "Grace");
    ck_assert_str_eq(u->locale, "en"); /* unchanged */
    ds_user_free(u);
    json_t *prefs = json_pack("{s:i}", "n", 1);
    ds_profile_fields g = {NULL, "fr", NULL, prefs};
    st = ds_profile_update(pool, id, &g, &u, &err);
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
    ds_profile_fields bad[] = {{longname, NULL, NULL, NULL},
                               {"\xc0\xaf", NULL, NULL, NULL},
                               {NULL, "x", NULL, NULL},
                               {NULL, NULL, "", NULL}};
    for (size_t i = 0; i < 4; i++) {
        st = ds_profile_update(pool, id, &bad[i], NULL, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
    }
    json_t *arr = json_array();
    ds_profile_fields notobj = {NULL, NULL, NULL, arr};
    st = ds_profile_update(pool, id, &notobj, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    json_decref(arr);
    ds_profile_fields none = {0};
    st = ds_profile_update(pool, id, &none, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_profile_update(pool, id + 100, &f, NULL, &err);
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

/* ---- conversations and messages ------------------------------------------- */

START_TEST(test_repo_conversation_lifecycle) {
    ds_error err = {0};
    int64_t owner = new_user("c@example.com");
    ds_conversation *c;
    ds_status st = ds_conversation_create(pool, owner, "Trip to Rome", &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(c->title, "Trip to Rome");
    ck_assert(!c->archived && c->owner_id == owner);
    int64_t id = c->id;
    ds_conversation_free(c);
    st = ds_conversation_create(pool, owner, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_conversation_create(pool, owner + 50, "x", &c, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(c);
    st = ds_conversation_archive(pool, id, true, &err);
    ck_assert_ds_ok(st, err);
    st = ds_conversation_get(pool, id, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->archived);
    ds_conversation_free(c);
    int64_t n;
    st = ds_conversation_count(pool, owner, false, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    st = ds_conversation_count(pool, owner, true, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    st = ds_conversation_count(pool, owner + 50, true, &n, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ds_message_new m = {DS_ROLE_USER, "hi", 0, NULL, NULL};
    st = ds_message_append(pool, id, &m, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_conversation_delete(pool, id, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", id), 0);
    st = ds_conversation_delete(pool, id, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_conversation_get(pool, id, &c, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_conversation_archive(pool, id, false, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    char title[600];
    memset(title, 't', sizeof title - 1);
    title[sizeof title - 1] = '\0';
    st = ds_conversation_create(pool, owner, title, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
}
END_TEST

START_TEST(test_repo_conversation_list_by_recent_activity) {
    ds_error err = {0};
    int64_t owner = new_user("act@example.com");
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = new_conversation(owner);
    /* an hour ago, in creation order: older than repo_activity_interval_ms */
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = updated_at - "
             "interval '1 hour' WHERE owner_id = %lld", (long long)owner);
    dt_sql(db, sql);
    /* activity on the oldest moves it to the top */
    ds_message_new m = {DS_ROLE_USER, "bump", 0, NULL, NULL};
    ds_status st = ds_message_append(pool, ids[0], &m, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_conversation_archive(pool, ids[2], true, &err);
    ck_assert_ds_ok(st, err);
    ds_conversation_cursor cur = {0, 0};
    int64_t order[5];
    int n = 0;
    for (;;) {
        ds_conversation_list *page;
        st = ds_conversation_list_page(pool, owner, &cur, 2, false, &page, &err);
        ck_assert_ds_ok(st, err);
        for (size_t i = 0; i < page->count; i++)
            order[n++] = page->items[i]->id;
        bool more = page->has_more;
        cur = page->next;
        ds_conversation_list_free(page);
        if (!more)
            break;
    }
    ck_assert_int_eq(n, 4);
    ck_assert(order[0] == ids[0]);
    ck_assert(order[1] == ids[4] && order[2] == ids[3] && order[3] == ids[1]);
    ds_conversation_list *page;
    st = ds_conversation_list_page(pool, owner, NULL, 10, true, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 5);
    ds_conversation_list_free(page);
    int64_t lonely = new_user("none@example.com");
    st = ds_conversation_list_page(pool, lonely, NULL, 10, true, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 0);
    ck_assert(!page->has_more);
    ds_conversation_list_free(page);
    st = ds_conversation_list_page(pool, owner + 99, NULL, 10, true, &page, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
}
END_TEST

START_TEST(test_repo_message_append_bumps_updated_at) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("m@example.com"));
    dt_sql(db, "UPDATE conversations SET updated_at = now() - interval '1 day'");
    json_t *meta = json_pack("{s:s}", "model", "m1");
    ds_message_new m = {DS_ROLE_ASSISTANT, "Hello there", 0, meta, NULL};
    ds_message *msg;
    ds_status st = ds_message_append(pool, conv, &m, &msg, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(msg->created);
    ck_assert_int_eq(msg->role, DS_ROLE_ASSISTANT);
    ck_assert_str_eq(msg->content, "Hello there");
    ck_assert_uint_eq(msg->content_len, 11);
    ck_assert(json_equal(msg->metadata, meta));
    ck_assert_ptr_null(msg->idempotency_key);
    ck_assert(msg->conversation_id == conv);
    ds_message_free(msg);
    json_decref(meta);
    m.metadata = NULL;
    ck_assert_int_eq(count_sql("SELECT count(*) FROM conversations WHERE id = %lld AND "
                               "updated_at > now() - interval '1 hour'", conv), 1);
    st = ds_message_append(pool, conv + 1000, &m, &msg, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(msg);
    int64_t n;
    st = ds_message_count(pool, conv, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    st = ds_message_count(pool, conv + 1000, &n, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
}
END_TEST

static long long rel_pages(const char *rel) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT pg_relation_size('%s') / 8192", rel);
    return dt_sql_int(db, sql);
}

/* Appends `per_conv` messages to each of `n` conversations, round robin. */
static void append_round_robin(ds_pool *p, const int64_t *convs, int n,
                               int per_conv) {
    ds_error err = {0};
    ds_message_new m = {DS_ROLE_USER, "a message", 0, NULL, NULL};
    for (int r = 0; r < per_conv; r++)
        for (int i = 0; i < n; i++)
            ck_assert_ds_ok(ds_message_append(p, convs[i], &m, NULL, &err), err);
}

/* Within repo_activity_interval_ms an append leaves its conversation's row
 * alone: 300 appends to 10 conversations move each activity time once and
 * add no index entries; with the interval 0 every append rewrites the row. */
START_TEST(test_repo_message_append_bumps_activity_at_most_once_per_interval) {
    enum { CONVS = 10, PER_CONV = 30 };
    int64_t owner = new_user("hot@example.com");
    int64_t throttled[CONVS], every[CONVS];
    for (int i = 0; i < CONVS; i++) {
        throttled[i] = new_conversation(owner);
        every[i] = new_conversation(owner);
    }
    dt_sql(db, "UPDATE conversations SET updated_at = now() - interval '1 hour'");
    dt_sql(db, "VACUUM conversations");
    long long heap0 = rel_pages("conversations");
    long long idx0 = rel_pages("conversations_owner_activity_idx");
    append_round_robin(pool, throttled, CONVS, PER_CONV);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM conversations WHERE owner_id = %lld AND "
             "updated_at > now() - interval '10 minutes'", (long long)owner);
    ck_assert_int_eq(dt_sql_int(db, sql), CONVS); /* each moved to the top */
    long long heap1 = rel_pages("conversations");
    long long idx1 = rel_pages("conversations_owner_activity_idx");
    ck_assert_msg(heap1 <= heap0 + 1 && idx1 <= idx0 + 1,
                  "throttled: heap %lld -> %lld pages, index %lld -> %lld", heap0,
                  heap1, idx0, idx1);

    ds_config *cfg = dt_config(db, 1, 2);
    ds_error err = {0};
    ds_pool *eager;
    ck_assert_ds_ok(ds_config_set(cfg, "repo_activity_interval_ms", "0", &err), err);
    ck_assert_ds_ok(ds_pool_open(cfg, &eager, &err), err);
    ds_config_free(cfg);
    append_round_robin(eager, every, CONVS, PER_CONV);
    ds_pool_close(eager);
    long long idx2 = rel_pages("conversations_owner_activity_idx");
    ck_assert_msg(idx2 > idx1, "a bump on every append added no index entries "
                  "(%lld -> %lld pages)", idx1, idx2);
}
END_TEST

START_TEST(test_repo_message_idempotent_append_returns_original) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("i@example.com"));
    ds_message_new m = {DS_ROLE_USER, "first", 0, NULL, "req-1"};
    ds_message *a, *b;
    ds_status st = ds_message_append(pool, conv, &m, &a, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(a->created);
    dt_sql(db, "UPDATE conversations SET updated_at = '2000-01-01'");
    m.content = "a retry with different text";
    st = ds_message_append(pool, conv, &m, &b, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!b->created);
    ck_assert(a->id == b->id);
    ck_assert_str_eq(b->content, "first");
    ck_assert_str_eq(b->idempotency_key, "req-1");
    ck_assert(a->created_at == b->created_at);
    ds_message_free(a);
    ds_message_free(b);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", conv), 1);
    /* a retry bumps nothing */
    ck_assert_int_eq(count_sql("SELECT count(*) FROM conversations WHERE id = %lld AND "
                               "updated_at = '2000-01-01'", conv), 1);
}
END_TEST

typedef struct retry_arg {
    int64_t conv;
    int64_t ids[20];
    ds_status st;
} retry_arg;

static void *retry_thread(void *p) {
    retry_arg *a = p;
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        ds_message_new m = {DS_ROLE_USER, "race", 0, NULL, key};
        ds_message *msg;
        ds_error err = {0};
        a->st = ds_message_append(pool, a->conv, &m, &msg, &err);
        if (a->st != DS_OK)
            return NULL;
        a->ids[i] = msg->id;
        ds_message_free(msg);
    }
    return NULL;
}

START_TEST(test_repo_message_concurrent_retries_never_duplicate) {
    int64_t conv = new_conversation(new_user("race@example.com"));
    enum { T = 4 };
    retry_arg args[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].conv = conv;
        pthread_create(&th[t], NULL, retry_thread, &args[t]);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        ck_assert_int_eq(args[t].st, DS_OK);
        for (int i = 0; i < 20; i++)
            ck_assert(args[t].ids[i] == args[0].ids[i]);
    }
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", conv), 20);
}
END_TEST

START_TEST(test_repo_message_paging_newest_and_oldest_first) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("pg@example.com"));
    int64_t ids[30];
    for (int i = 0; i < 30; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        ds_message_new m = {i % 2 ? DS_ROLE_ASSISTANT : DS_ROLE_USER, text, 0, NULL, NULL};
        ds_message *msg;
        ds_status st = ds_message_append(pool, conv, &m, &msg, &err);
        ck_assert_ds_ok(st, err);
        ids[i] = msg->id;
        ds_message_free(msg);
    }
    /* newest first, while new messages keep arriving: no duplicates, no gaps */
    ds_message_cursor cur = {0, 0};
    int idx = 29, pages = 0;
    for (;;) {
        ds_message_list *page;
        ds_status st = ds_message_list_page(pool, conv, DS_NEWEST_FIRST, &cur, 8, &page, &err);
        ck_assert_ds_ok(st, err);
        for (size_t i = 0; i < page->count; i++)
            ck_assert(page->items[i]->id == ids[idx--]);
        bool more = page->has_more;
        cur = page->next;
        ds_message_list_free(page);
        ds_message_new late = {DS_ROLE_USER, "late", 0, NULL, NULL};
        st = ds_message_append(pool, conv, &late, NULL, &err);
        ck_assert_ds_ok(st, err);
        pages++;
        if (!more)
            break;
    }
    ck_assert_int_eq(idx, -1);
    ck_assert_int_eq(pages, 4);
    /* oldest first */
    cur.before_id = 0;
    cur.after_id = 0;
    idx = 0;
    int total = 0;
    for (;;) {
        ds_message_list *page;
        ds_status st = ds_message_list_page(pool, conv, DS_OLDEST_FIRST, &cur, 11, &page, &err);
        ck_assert_ds_ok(st, err);
        for (size_t i = 0; i < page->count; i++, total++)
            if (idx < 30) {
                ck_assert(page->items[i]->id == ids[idx]);
                char text[32];
                snprintf(text, sizeof text, "m%d", idx);
                ck_assert_str_eq(page->items[i]->content, text);
                idx++;
            }
        bool more = page->has_more;
        cur = page->next;
        ds_message_list_free(page);
        if (!more)
            break;
    }
    ck_assert_int_eq(total, 34);
    /* a window between two ids */
    ds_message_cursor win = {ids[10], ids[4]};
    ds_message_list *page;
    ds_status st = ds_message_list_page(pool, conv, DS_OLDEST_FIRST, &win, 100, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 5);
    ck_assert(page->items[0]->id == ids[5]);
    ds_message_list_free(page);
    int64_t empty = new_conversation(new_user("e@example.com"));
    st = ds_message_list_page(pool, empty, DS_NEWEST_FIRST, NULL, 50, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 0);
    ds_message_list_free(page);
    st = ds_message_list_page(pool, conv + 999, DS_NEWEST_FIRST, NULL, 50, &page, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_message_list_page(pool, conv, DS_NEWEST_FIRST, NULL, 0, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_message_list_page(pool, conv, (ds_order)7, NULL, 5, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
}
END_TEST

/* A cursor is an id range of one conversation: a bound from another
 * conversation is refused, a bound that was deleted or lies in the other
 * order's direction still gives exactly the messages of the range. */
START_TEST(test_repo_message_paging_cursor_edge_cases) {
    ds_error err = {0};
    int64_t owner = new_user("cursor@example.com");
    int64_t a = new_conversation(owner), b = new_conversation(owner);
    int64_t ids_a[12], ids_b[12];
    for (int i = 0; i < 12; i++) { /* interleaved: a's and b's ids alternate */
        ds_message_new m = {DS_ROLE_USER, "x", 0, NULL, NULL};
        ds_message *msg;
        ck_assert_ds_ok(ds_message_append(pool, a, &m, &msg, &err), err);
        ids_a[i] = msg->id;
        ds_message_free(msg);
        ck_assert_ds_ok(ds_message_append(pool, b, &m, &msg, &err), err);
        ids_b[i] = msg->id;
        ds_message_free(msg);
    }
    ds_message_list *page;
    ds_status st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, NULL, 4, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(page->has_more && page->next.before_id == ids_a[8]);
    ds_message_cursor next = page->next;
    ds_message_list_free(page);

    /* a's cursor on b, and b's ids as either bound on a: refused */
    st = ds_message_list_page(pool, b, DS_NEWEST_FIRST, &next, 4, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(page);
    ck_assert(strstr(err.message, "another conversation") != NULL);
    ds_message_cursor foreign_after = {0, ids_b[3]};
    st = ds_message_list_page(pool, a, DS_OLDEST_FIRST, &foreign_after, 4, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_message_cursor foreign_before = {ids_b[5], ids_a[1]};
    st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, &foreign_before, 4, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);

    /* the newest-first cursor read oldest first: the range below it, ascending */
    st = ds_message_list_page(pool, a, DS_OLDEST_FIRST, &next, 100, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 8);
    for (size_t i = 0; i < page->count; i++) {
        ck_assert(page->items[i]->id == ids_a[i]);
        ck_assert(page->items[i]->conversation_id == a);
    }
    ck_assert(!page->has_more);
    ds_message_list_free(page);

    /* the cursor's message is deleted: the next page is still exact */
    char sql[128];
    snprintf(sql, sizeof sql, "DELETE FROM messages WHERE id = %lld", (long long)ids_a[8]);
    dt_sql(db, sql);
    st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, &next, 3, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert(page->items[i]->id == ids_a[7 - i]);
    ck_assert(page->has_more && page->next.before_id == ids_a[5]);
    ds_message_list_free(page);

    /* bounds that leave nothing, or an id past every message */
    ds_message_cursor crossed = {ids_a[2], ids_a[6]};
    st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, &crossed, 10, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 0);
    ck_assert(!page->has_more);
    ds_message_list_free(page);
    ds_message_cursor future = {ids_b[11] + 1000000, 0};
    st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, &future, 2, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 2);
    ck_assert(page->items[0]->id == ids_a[11] && page->has_more);
    ds_message_list_free(page);

    /* a limit above repo_max_page */
    st = ds_message_list_page(pool, a, DS_NEWEST_FIRST, NULL, 100001, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert(strstr(err.message, "repo_max_page") != NULL);
}
END_TEST

START_TEST(test_repo_message_bad_input_writes_nothing) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("bad@example.com"));
    ds_message_new cases[] = {
        {DS_ROLE_USER, "a\0b", 3, NULL, NULL},
        {DS_ROLE_USER, "\xff\xfe", 0, NULL, NULL},
        {DS_ROLE_USER, "", 0, NULL, NULL},
        {DS_ROLE_USER, NULL, 0, NULL, NULL},
        {(ds_message_role)42, "x", 0, NULL, NULL},
        {DS_ROLE_USER, "x", 0, NULL, ""},
        {DS_ROLE_USER, "x", 0, NULL, "\xed\xa0\x80"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_status st = ds_message_append(pool, conv, &cases[i], NULL, &err);
        ck_assert_msg(st == DS_ERR_INVALID, "case %zu gave %s", i, ds_status_str(st));
    }
    json_t *arr = json_array();
    ds_message_new notobj = {DS_ROLE_USER, "x", 0, arr, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, &notobj, NULL, &err), DS_ERR_INVALID);
    json_decref(arr);
    json_t *nul = json_pack("{s:s#}", "k", "a\0b", 3);
    ds_message_new withnul = {DS_ROLE_USER, "x", 0, nul, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, &withnul, NULL, &err), DS_ERR_INVALID);
    json_decref(nul);
    /* over the configured limit */
    ds_config *cfg = dt_config(db, 1, 1);
    ck_assert_int_eq(ds_config_set_int(cfg, "repo_max_message_bytes", 10, &err), DS_OK);
    ck_assert_int_eq(ds_config_set_int(cfg, "repo_max_json_bytes", 10, &err), DS_OK);
    ds_pool *small;
    ck_assert_int_eq(ds_pool_open(cfg, &small, &err), DS_OK);
    ds_config_free(cfg);
    ds_message_new longer = {DS_ROLE_USER, "01234567890", 0, NULL, NULL};
    ck_assert_int_eq(ds_message_append(small, conv, &longer, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "limit"));
    json_t *big = json_pack("{s:s}", "key", "a long value");
    ds_message_new bigmeta = {DS_ROLE_USER, "ok", 0, big, NULL};
    ck_assert_int_eq(ds_message_append(small, conv, &bigmeta, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "repo_max_json_bytes"));
    json_decref(big);
    ds_message_new fits = {DS_ROLE_USER, "0123456789", 0, NULL, NULL};
    ck_assert_int_eq(ds_message_append(small, conv, &fits, NULL, &err), DS_OK);
    ds_pool_close(small);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", conv), 1);
}
END_TEST

START_TEST(test_repo_message_metacharacters_round_trip) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("meta@example.com"));
    const char *nasty = "'; DROP TABLE messages; -- \\ \" $1 %s %n \t\r\n E'\\x00' "
                        "\xe2\x80\xae \xf0\x9f\x92\xa3 ) ( ` $$ $tag$ {\"a\":1}";
    json_t *meta = json_pack("{s:s}", "q", nasty);
    ds_message_new m = {DS_ROLE_TOOL, nasty, 0, meta, nasty};
    ds_message *out;
    ds_status st = ds_message_append(pool, conv, &m, &out, &err);
    ck_assert_ds_ok(st, err);
    ds_message_free(out);
    ds_message_list *page;
    st = ds_message_list_page(pool, conv, DS_NEWEST_FIRST, NULL, 5, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 1);
    ck_assert_uint_eq(page->items[0]->content_len, strlen(nasty));
    ck_assert_mem_eq(page->items[0]->content, nasty, strlen(nasty));
    ck_assert_str_eq(page->items[0]->idempotency_key, nasty);
    ck_assert(json_equal(page->items[0]->metadata, meta));
    ck_assert_int_eq(page->items[0]->role, DS_ROLE_TOOL);
    ds_message_list_free(page);
    json_decref(meta);
}
END_TEST

START_TEST(test_repo_message_batch_append) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("batch@example.com"));
    dt_sql(db, "UPDATE conversations SET updated_at = '2000-01-01'");
    enum { N = 300 };
    ds_message_new *msgs = calloc(N, sizeof *msgs);
    char (*texts)[32] = calloc(N, 32);
    char (*keys)[32] = calloc(N, 32);
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], 32, "batch %d", i);
        snprintf(keys[i], 32, "bk%d", i);
        msgs[i].role = i % 2 ? DS_ROLE_ASSISTANT : DS_ROLE_USER;
        msgs[i].content = texts[i];
        msgs[i].idempotency_key = i % 3 ? keys[i] : NULL;
    }
    ds_message_list *out;
    ds_status st = ds_message_append_batch(pool, conv, msgs, N, &out, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(out->count, N);
    for (int i = 0; i < N; i++) {
        ck_assert_str_eq(out->items[i]->content, texts[i]);
        ck_assert(out->items[i]->created);
        if (i)
            ck_assert(out->items[i]->id > out->items[i - 1]->id);
    }
    int64_t first_keyed = out->items[1]->id;
    ds_message_list_free(out);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM conversations WHERE id = %lld AND "
                               "updated_at > '2000-01-01'", conv), 1);
    /* a retried batch: keyed rows come back as they were, unkeyed ones are new */
    msgs[1].content = "changed";
    st = ds_message_append_batch(pool, conv, msgs, N, &out, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(out->items[1]->id == first_keyed);
    ck_assert(!out->items[1]->created);
    ck_assert_str_eq(out->items[1]->content, "batch 1");
    ck_assert(out->items[0]->created);
    ck_assert_str_eq(out->items[0]->content, "batch 0");
    ds_message_list_free(out);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", conv),
                     N + N / 3);
    /* one bad message: nothing of the batch is written */
    msgs[7].content = "\xff";
    st = ds_message_append_batch(pool, conv, msgs, N, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "message 7"));
    msgs[7].content = texts[7];
    /* duplicate keys inside one batch */
    msgs[2].idempotency_key = keys[1];
    st = ds_message_append_batch(pool, conv, msgs, N, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    msgs[2].idempotency_key = keys[2];
    st = ds_message_append_batch(pool, conv + 77, msgs, 3, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_message_append_batch(pool, conv, msgs, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_message_append_batch(pool, conv, msgs, 20000, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM messages WHERE conversation_id = %lld", conv),
                     N + N / 3);
    free(msgs);
    free(texts);
    free(keys);
}
END_TEST


/* ---- teams ---------------------------------------------------------------------- */

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

typedef struct occ_arg {
    int64_t id;
    int wins, conflicts;
    ds_status other;
    pthread_barrier_t *barrier;
    bool setting;
} occ_arg;

/* Each round both threads read the same version, meet at a barrier, and
 * try to write: exactly one may win. */
static void *occ_thread(void *p) {
    occ_arg *a = p;
    for (int round = 0; round < 20; round++) {
        ds_error err = {0};
        int64_t version;
        if (a->setting) {
            ds_setting *s;
            if (ds_setting_get(pool, a->id, "counter", &s, &err) != DS_OK) {
                a->other = err.code;
                return NULL;
            }
            version = s->version;
            ds_setting_free(s);
        } else {
            ds_team *t;
            if (ds_team_get(pool, a->id, &t, &err) != DS_OK) {
                a->other = err.code;
                return NULL;
            }
            version = t->version;
            ds_team_free(t);
        }
        pthread_barrier_wait(a->barrier);
        json_t *v = json_pack("{s:i}", "round", round);
        ds_status st = a->setting
                           ? ds_setting_put(pool, a->id, "counter", v, version, NULL, &err)
                           : ds_team_update(pool, a->id, version, NULL, NULL, v, NULL, &err);
        json_decref(v);
        if (st == DS_OK)
            a->wins++;
        else if (st == DS_ERR_CONFLICT)
            a->conflicts++;
        else
            a->other = st;
        pthread_barrier_wait(a->barrier);
    }
    return NULL;
}

static void run_occ(int64_t id, bool setting, int64_t *final_version) {
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    occ_arg a[2] = {{id, 0, 0, DS_OK, &barrier, setting}, {id, 0, 0, DS_OK, &barrier, setting}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, occ_thread, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    ck_assert_int_eq(a[0].other, DS_OK);
    ck_assert_int_eq(a[1].other, DS_OK);
    /* every round: one winner, one conflict */
    ck_assert_int_eq(a[0].wins + a[1].wins, 20);
    ck_assert_int_eq(a[0].conflicts + a[1].conflicts, 20);
    *final_version = 21;
}

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

/* ---- settings ---------------------------------------------------------------- */

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

/* ---- analytics events ---------------------------------------------------- */

START_TEST(test_repo_event_record_one_and_batch) {
    ds_error err = {0};
    int64_t uid = new_user("ev@example.com");
    json_t *props = json_pack("{s:s, s:i}", "plan", "pro", "n", 3);
    ds_event one = {uid, "signup", props, 0};
    ds_status st = ds_event_record(pool, &one, &err);
    ck_assert_ds_ok(st, err);
    ds_event anon = {0, "page_view", NULL, INT64_C(1700000000000000)};
    st = ds_event_record(pool, &anon, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events WHERE user_id IS NULL "
                                    "AND occurred_at = to_timestamp(1700000000)"), 1);
    enum { N = 5000 };
    ds_event *evs = calloc(N, sizeof *evs);
    for (int i = 0; i < N; i++) {
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


/* ---- service connections ------------------------------------------------------ */

static ds_crypto *test_crypto(const char *kid) {
    ds_secret *entry;
    ds_error err = {0};
    ds_status st = ds_crypto_generate_key(kid, &entry, &err);
    ck_assert_ds_ok(st, err);
    ds_crypto *c;
    st = ds_crypto_open_keys(ds_secret_data(entry), &c, &err);
    ds_secret_free(entry);
    ck_assert_ds_ok(st, err);
    return c;
}

START_TEST(test_repo_connection_tokens_are_sealed) {
    ds_error err = {0};
    ds_crypto *crypto = test_crypto("k1");
    int64_t uid = new_user("oauth@example.com"), other = new_user("other@example.com");
    const char *access = "gho_PLAINTEXT_ACCESS_TOKEN_1234567890";
    const char *refresh = "ghr_PLAINTEXT_REFRESH_TOKEN_0987654321";
    ds_connection_new in = {uid, "github", "4242", "repo read:user", access, 0, refresh, 0,
                            INT64_C(1900000000000000)};
    ds_connection *c;
    ds_status st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(c->key_id, "k1");
    ck_assert(c->has_access_token && c->has_refresh_token);
    ck_assert_ptr_null(c->access_token);
    ck_assert_int_eq(c->status, DS_CONNECTION_ACTIVE);
    ck_assert(c->token_expires_at == INT64_C(1900000000000000));
    int64_t id = c->id;
    ds_connection_free(c);
    /* no plaintext anywhere in the row */
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM service_connections WHERE "
                                    "position('PLAINTEXT'::bytea IN access_token_enc) > 0 OR "
                                    "position('PLAINTEXT'::bytea IN refresh_token_enc) > 0"), 0);
    st = ds_connection_get(pool, crypto, id, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(ds_secret_data(c->access_token), access);
    ck_assert_str_eq(ds_secret_data(c->refresh_token), refresh);
    ck_assert_str_eq(c->provider, "github");
    ck_assert_str_eq(c->scopes, "repo read:user");
    ds_connection_free(c);
    st = ds_connection_get(pool, NULL, id, &c, &err); /* metadata only */
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_null(c->access_token);
    ds_connection_free(c);
    /* upsert replaces; a missing refresh token is stored as none */
    in.access_token = "second";
    in.refresh_token = NULL;
    st = ds_connection_set_status(pool, id, DS_CONNECTION_EXPIRED, &err);
    ck_assert_ds_ok(st, err);
    st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->id == id);
    ck_assert_int_eq(c->status, DS_CONNECTION_ACTIVE);
    ck_assert(!c->has_refresh_token);
    ds_connection_free(c);
    st = ds_connection_get(pool, crypto, id, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(ds_secret_data(c->access_token), "second");
    ck_assert_ptr_null(c->refresh_token);
    ds_connection_free(c);
    /* an envelope copied into another user's row does not open */
    in.user_id = other;
    in.access_token = "theirs";
    ds_connection *oc;
    st = ds_connection_upsert(pool, crypto, &in, &oc, &err);
    ck_assert_ds_ok(st, err);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE service_connections SET access_token_enc = "
             "(SELECT access_token_enc FROM service_connections WHERE id = %lld) WHERE id = %lld",
             (long long)id, (long long)oc->id);
    dt_sql(db, sql);
    st = ds_connection_get(pool, crypto, oc->id, &c, &err);
    ck_assert_ds_status(st, DS_ERR_CRYPTO, err);
    ck_assert_ptr_null(c);
    ck_assert_ptr_null(strstr(err.message, "second"));
    /* another key ring cannot open them either */
    ds_crypto *wrong = test_crypto("k1");
    st = ds_connection_get(pool, wrong, id, &c, &err);
    ck_assert_ds_status(st, DS_ERR_CRYPTO, err);
    ds_crypto_close(wrong);
    ds_connection_list *list;
    st = ds_connection_list_for_user(pool, uid, NULL, 10, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 1);
    ck_assert_ptr_null(list->items[0]->access_token);
    ck_assert(list->items[0]->has_access_token);
    ds_connection_list_free(list);
    st = ds_connection_list_for_user(pool, uid + 100, NULL, 10, &list, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_connection_set_status(pool, id, DS_CONNECTION_REVOKED, &err);
    ck_assert_ds_ok(st, err);
    st = ds_connection_set_status(pool, id, (ds_connection_status)12, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_connection_delete(pool, id, &err);
    ck_assert_ds_ok(st, err);
    st = ds_connection_delete(pool, id, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    st = ds_connection_get(pool, crypto, id, &c, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    /* bad input */
    ds_connection_new bad = {uid, "GitHub", "1", NULL, "t", 0, NULL, 0, 0};
    st = ds_connection_upsert(pool, crypto, &bad, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    bad.provider = "github";
    bad.external_account_id = "";
    st = ds_connection_upsert(pool, crypto, &bad, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    bad.external_account_id = "1";
    st = ds_connection_upsert(pool, NULL, &bad, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    bad.user_id = uid + 100;
    st = ds_connection_upsert(pool, crypto, &bad, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ds_connection_free(oc);
    ds_crypto_close(crypto);
}
END_TEST

/* ---- GDPR ------------------------------------------------------------------------- */

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
        ds_message_new m[3] = {{DS_ROLE_USER, "a", 0, NULL, NULL},
                               {DS_ROLE_ASSISTANT, "b", 0, NULL, "k"},
                               {DS_ROLE_USER, "c", 0, NULL, NULL}};
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
        ds_connection_new c = {uid, "github", acct, NULL, "tok", 0, NULL, 0, 0};
        st = ds_connection_upsert(pool, crypto, &c, NULL, &err);
        ck_assert_ds_ok(st, err);
        ds_event ev = {uid, "e", NULL, 0};
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

    ds_erase_report *rep;
    st = ds_user_erase(pool, redis, victim, &rep, &err);
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
    ds_erase_report_free(rep);
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
    st = ds_user_erase(pool, redis, victim, &rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(rep->users, 0);
    ck_assert_int_eq(rep->messages, 0);
    ds_erase_report_free(rep);
    st = ds_user_erase(pool, NULL, 0, NULL, &err);
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
    st = ds_purge_soft_deleted(pool, NULL, cutoff, &purged, &more, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 1);
    ck_assert(!more);
    for (int t = 0; t < 9; t++) {
        ck_assert_int_eq(rows_of(old_del, user_tables[t][0], user_tables[t][1]), 0);
        ck_assert_int_gt(rows_of(new_del, user_tables[t][0], user_tables[t][1]), 0);
        ck_assert_int_gt(rows_of(live, user_tables[t][0], user_tables[t][1]), 0);
    }
    st = ds_purge_soft_deleted(pool, NULL, cutoff, &purged, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 0);
    ds_crypto_close(crypto);
}
END_TEST


/* ---- times at the edges of the range ------------------------------------------ */

/* INT64_MIN and INT64_MAX are -infinity and infinity both ways; a time too
 * far in the past for PostgreSQL is refused, never wrapped around into the
 * far future (a purge "older than INT64_MIN" used to erase every
 * soft-deleted user). */
START_TEST(test_repo_times_at_the_edges) {
    ds_error err = {0};
    int64_t uid = new_user("edge@example.com");
    ds_status st = ds_user_soft_delete(pool, uid, &err);
    ck_assert_ds_ok(st, err);
    int64_t purged = -1;
    st = ds_purge_soft_deleted(pool, NULL, INT64_MIN, &purged, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(purged, 0);
    st = ds_purge_soft_deleted(pool, NULL, INT64_MIN + 1, &purged, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM users WHERE id = %lld", uid), 1);
    st = ds_user_restore(pool, uid, &err);
    ck_assert_ds_ok(st, err);

    ds_crypto *crypto = test_crypto("t1");
    ds_connection_new in = {uid, "github", "edge", NULL, "tok", 0, NULL, 0, INT64_MIN};
    ds_connection *c;
    st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->token_expires_at == INT64_MIN);
    ds_connection_free(c);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM service_connections WHERE "
                                    "token_expires_at = '-infinity'"), 1);
    in.token_expires_at = INT64_MAX;
    st = ds_connection_upsert(pool, crypto, &in, &c, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(c->token_expires_at == INT64_MAX);
    ds_connection_free(c);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM service_connections WHERE "
                                    "token_expires_at = 'infinity'"), 1);
    in.token_expires_at = INT64_MIN + 1;
    st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_crypto_close(crypto);

    ds_event ev[2] = {{uid, "ok", NULL, 0}, {uid, "too_early", NULL, INT64_MIN + 1}};
    st = ds_event_record(pool, &ev[1], &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_event_record_batch(pool, ev, 2, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_msg(strncmp(err.message, "event 1", 7) == 0, "%s", err.message);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events"), 0);
    ev[1].occurred_at = INT64_C(-210866803200000000); /* the first instant */
    st = ds_event_record_batch(pool, ev, 2, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events WHERE "
                                    "occurred_at = '4714-11-24 00:00:00+00 BC'"), 1);
    dt_sql(db, "DELETE FROM analytics_events");

    /* a date PostgreSQL holds but epoch microseconds cannot (from 294247
     * AD) reads as infinity */
    int64_t conv = new_conversation(uid);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = '294270-01-01' "
             "WHERE id = %lld", (long long)conv);
    dt_sql(db, sql);
    ds_conversation *cv;
    st = ds_conversation_get(pool, conv, &cv, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(cv->updated_at == INT64_MAX);
    ds_conversation_free(cv);
    ds_conversation_cursor cur = {INT64_MIN + 5, 1};
    ds_conversation_list *list = (ds_conversation_list *)0x1;
    st = ds_conversation_list_page(pool, uid, &cur, 10, true, &list, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(list);
}
END_TEST


/* ---- errors: bad arguments never crash and never write --------------------- */

START_TEST(test_repo_errors_null_and_out_of_range_arguments) {
    ds_error err = {0};
    int64_t uid = new_user("err@example.com");
    int64_t conv = new_conversation(uid);
    ds_user *u = (ds_user *)0x1;
    ds_user_list *ul = (ds_user_list *)0x1;
    ck_assert_int_eq(ds_user_create(NULL, "a@b.co", NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(NULL, 1, &u, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(u);
    ck_assert_int_eq(ds_user_get(pool, 0, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, -4, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get(pool, uid + 1000, &u, &err), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_user_get_by_email(pool, NULL, &u, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_get_by_email(pool, "nobody@example.com", &u, &err), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_profile_update(pool, uid, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_soft_delete(pool, 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_restore(NULL, uid, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_user_list_page(pool, NULL, 10, false, false, NULL, &err), DS_ERR_INVALID);
    ds_user_cursor neg = {-1};
    ck_assert_int_eq(ds_user_list_page(pool, &neg, 10, false, false, &ul, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(ul);

    ds_conversation *c = (ds_conversation *)0x1;
    ck_assert_int_eq(ds_conversation_create(pool, 0, NULL, &c, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(ds_conversation_create(pool, uid, "\xff", NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_get(pool, conv, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_count(pool, uid, true, NULL, &err), DS_ERR_INVALID);
    ds_conversation_list *cl;
    ds_conversation_cursor badc = {5, -1};
    ck_assert_int_eq(ds_conversation_list_page(pool, uid, &badc, 5, true, &cl, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_conversation_list_page(pool, uid, NULL, 0, true, &cl, &err),
                     DS_ERR_INVALID);

    ds_message_new m = {DS_ROLE_USER, "x", 0, NULL, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(pool, 0, &m, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(NULL, conv, &m, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append_batch(pool, conv, NULL, 3, NULL, &err), DS_ERR_INVALID);
    ds_message_list *ml;
    ds_message_cursor badm = {-3, 0};
    ck_assert_int_eq(ds_message_list_page(pool, conv, DS_NEWEST_FIRST, &badm, 5, &ml, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_list_page(pool, conv, DS_NEWEST_FIRST, NULL, 5, NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_count(pool, conv, NULL, &err), DS_ERR_INVALID);
    ck_assert_str_eq(ds_message_role_str((ds_message_role)99), "unknown");
    ck_assert_str_eq(ds_message_role_str(DS_ROLE_TOOL), "tool");

    ck_assert_int_eq(ds_team_create(pool, uid, NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_get(pool, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_update(pool, 1, 0, "x", NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_update(pool, 1, 1, NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_delete(pool, 1, -1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_team_list_for_owner(pool, uid, NULL, -1, NULL, &err), DS_ERR_INVALID);

    json_t *v = json_integer(1);
    ds_setting *st_out;
    ck_assert_int_eq(ds_setting_get(pool, 0, NULL, &st_out, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_get(pool, -1, "k", &st_out, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_put(pool, 0, "k", v, -2, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_delete(pool, 0, "k", 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_setting_list_for_user(pool, 0, NULL, 0, NULL, &err), DS_ERR_INVALID);
    json_decref(v);

    ck_assert_int_eq(ds_event_record(pool, NULL, &err), DS_ERR_INVALID);
    ds_event ev = {-1, "x", NULL, 0};
    ck_assert_int_eq(ds_event_record(pool, &ev, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_event_record_batch(pool, NULL, 1, &err), DS_ERR_INVALID);

    ck_assert_int_eq(ds_connection_get(pool, NULL, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_connection_upsert(pool, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_connection_delete(pool, -1, &err), DS_ERR_INVALID);
    ck_assert_str_eq(ds_connection_status_str((ds_connection_status)7), "unknown");

    ck_assert_int_eq(ds_user_erase(NULL, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_purge_soft_deleted(NULL, NULL, 0, NULL, NULL, &err), DS_ERR_INVALID);
    /* NULL err is allowed everywhere */
    ck_assert_int_eq(ds_user_get(pool, 0, &u, NULL), DS_ERR_INVALID);
    ck_assert_int_eq(ds_message_append(pool, conv + 500, &m, NULL, NULL), DS_ERR_NOT_FOUND);
    /* frees accept NULL */
    ds_user_free(NULL);
    ds_user_list_free(NULL);
    ds_conversation_free(NULL);
    ds_conversation_list_free(NULL);
    ds_message_free(NULL);
    ds_message_list_free(NULL);
    ds_team_free(NULL);
    ds_team_list_free(NULL);
    ds_setting_free(NULL);
    ds_setting_list_free(NULL);
    ds_connection_free(NULL);
    ds_connection_list_free(NULL);
    ds_erase_report_free(NULL);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM messages"), 0);
}
END_TEST

START_TEST(test_repo_errors_out_of_memory_is_reported) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("oom@example.com"));
    json_t *meta = json_pack("{s:s}", "a", "b");
    ds_message_new m[2] = {{DS_ROLE_USER, "one", 0, meta, "k1"},
                           {DS_ROLE_USER, "two", 0, NULL, NULL}};
    bool done = false;
    for (long n = 1; n < 40 && !done; n++) {
        ds_message_list *out = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_message_append_batch(pool, conv, m, 2, &out, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ck_assert_uint_eq(out->count, 2);
            ds_message_list_free(out);
            done = true;
        } else {
            ck_assert_ds_status(st, DS_ERR_NOMEM, err);
            ck_assert_ptr_null(out);
        }
    }
    ck_assert(done);
    done = false;
    for (long n = 1; n < 40 && !done; n++) {
        ds_user *u = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_user_create(pool, "oom2@example.com", NULL, &u, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ds_user_free(u);
            done = true;
        } else {
            /* an allocation after the insert fails the call; the row
             * exists then, and the retry reports the conflict */
            ck_assert(st == DS_ERR_NOMEM || st == DS_ERR_CONFLICT);
            if (st == DS_ERR_CONFLICT)
                done = true;
        }
    }
    ck_assert(done);
    json_decref(meta);
}
END_TEST

/* Reads under injected allocation failures: DS_ERR_NOMEM and a NULL row or
 * list until there is memory, then the full result (ASan: nothing leaks). */
START_TEST(test_repo_errors_out_of_memory_in_reads) {
    ds_error err = {0};
    json_t *prefs = json_pack("{s:s}", "theme", "dark");
    ds_profile_fields pf = {"Oom", NULL, NULL, prefs};
    ds_user *u;
    ds_status st = ds_user_create(pool, "reads@example.com", &pf, &u, &err);
    ck_assert_ds_ok(st, err);
    int64_t uid = u->id;
    ds_user_free(u);
    json_decref(prefs);
    int64_t conv = new_conversation(uid);
    ds_message_new m[3] = {{DS_ROLE_USER, "a", 0, NULL, NULL},
                           {DS_ROLE_ASSISTANT, "b", 0, NULL, "k"},
                           {DS_ROLE_USER, "c", 0, NULL, NULL}};
    st = ds_message_append_batch(pool, conv, m, 3, NULL, &err);
    ck_assert_ds_ok(st, err);
    int64_t team = 0;
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        ds_team *t;
        st = ds_team_create(pool, uid, name, NULL, NULL, &t, &err);
        ck_assert_ds_ok(st, err);
        team = t->id;
        ds_team_free(t);
        json_t *v = json_integer(i);
        st = ds_setting_put(pool, uid, name, v, DS_VERSION_NEW, NULL, &err);
        ck_assert_ds_ok(st, err);
        json_decref(v);
    }
    ds_crypto *crypto = test_crypto("o1");
    ds_connection_new cn = {uid, "github", "oom", NULL, "tok", 0, NULL, 0, 0};
    st = ds_connection_upsert(pool, crypto, &cn, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_crypto_close(crypto);
    for (int op = 0; op < 8; op++) {
        bool done = false;
        int nomem = 0;
        /* n == 0: a first call without failures warms the connection's
         * statement cache, whose allocations fail silently */
        for (long n = 0; n < 30 && !done; n++) {
            void *out = NULL;
            size_t count = 0, want = 0;
            ds__test_fail_alloc_after(n);
            if (op == 0) {
                ds_user *row = NULL;
                st = ds_user_get(pool, uid, &row, &err);
                out = row;
            } else if (op == 1) {
                ds_user_list *l = NULL;
                st = ds_user_list_page(pool, NULL, 10, false, false, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else if (op == 2) {
                ds_conversation_list *l = NULL;
                st = ds_conversation_list_page(pool, uid, NULL, 10, false, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else if (op == 3) {
                ds_message_list *l = NULL;
                st = ds_message_list_page(pool, conv, DS_OLDEST_FIRST, NULL, 10, &l, &err);
                out = l, want = 3, count = l ? l->count : 0;
            } else if (op == 4) {
                ds_team_list *l = NULL;
                st = ds_team_list_for_owner(pool, uid, NULL, 10, &l, &err);
                out = l, want = 2, count = l ? l->count : 0;
            } else if (op == 5) {
                ds_setting_list *l = NULL;
                st = ds_setting_list_for_user(pool, uid, NULL, 10, &l, &err);
                out = l, want = 2, count = l ? l->count : 0;
            } else if (op == 6) {
                ds_connection_list *l = NULL;
                st = ds_connection_list_for_user(pool, uid, NULL, 10, &l, &err);
                out = l, want = 1, count = l ? l->count : 0;
            } else {
                ds_team *row = NULL;
                st = ds_team_get(pool, team, &row, &err);
                out = row;
            }
            ds__test_fail_alloc_after(0);
            if (st != DS_OK) {
                ck_assert_ds_status(st, DS_ERR_NOMEM, err);
                ck_assert_ptr_null(out);
                nomem++;
                continue;
            }
            done = n > 0;
            ck_assert_uint_eq(count, want);
            switch (op) {
            case 0: ds_user_free(out); break;
            case 1: ds_user_list_free(out); break;
            case 2: ds_conversation_list_free(out); break;
            case 3: ds_message_list_free(out); break;
            case 4: ds_team_list_free(out); break;
            case 5: ds_setting_list_free(out); break;
            case 6: ds_connection_list_free(out); break;
            default: ds_team_free(out); break;
            }
        }
        ck_assert_msg(done, "read %d never succeeded", op);
        /* the failure paths were taken, not only the happy one */
        ck_assert_msg(nomem > 0, "read %d never met an allocation failure", op);
    }
}
END_TEST

/* ---- statement definitions match the live schema ------------------------- */

/* ---- one list shape: teams, settings, connections ----------------------------- */

/* The generic plan of the named list statement, with sequential scans
 * discouraged so that an index able to serve it is the plan: it must name
 * `index` and need no Sort, i.e. the keyset range is read in order and the
 * LIMIT stops it. */
static void assert_list_plan(const char *stmt, const char *index, const char *args) {
    const ds__stmt_def *def = NULL;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module && !def; t++) {
        const ds__stmt_def *defs;
        size_t n = t->get(&defs);
        for (size_t i = 0; i < n && !def; i++)
            if (strcmp(defs[i].name, stmt) == 0)
                def = &defs[i];
    }
    ck_assert_msg(def != NULL, "no statement %s", stmt);
    PGconn *c = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, "SET plan_cache_mode = force_generic_plan; "
                            "SET enable_seqscan = off; ANALYZE");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQprepare(c, "list_plan", def->sql, def->nparams, def->param_types);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", stmt,
                  PQresultErrorMessage(r));
    PQclear(r);
    char sql[256];
    snprintf(sql, sizeof sql, "EXPLAIN EXECUTE list_plan(%s)", args);
    r = PQexec(c, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    char plan[4096] = "";
    for (int i = 0; i < PQntuples(r); i++) {
        strncat(plan, PQgetvalue(r, i, 0), sizeof plan - strlen(plan) - 2);
        strcat(plan, "\n");
    }
    PQclear(r);
    PQfinish(c);
    ck_assert_msg(strstr(plan, index) != NULL, "%s does not use %s:\n%s", stmt, index, plan);
    ck_assert_msg(strstr(plan, "Limit") != NULL, "%s has no Limit:\n%s", stmt, plan);
    ck_assert_msg(strstr(plan, "Sort") == NULL, "%s sorts:\n%s", stmt, plan);
}

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

START_TEST(test_repo_connection_list_pages_by_account_cursor) {
    ds_error err = {0};
    ds_crypto *crypto = test_crypto("l1");
    int64_t uid = new_user("cl@example.com"), other = new_user("cl2@example.com");
    /* (provider, account), created out of order */
    const char *rows[][2] = {{"slack", "2"}, {"github", "b"}, {"google", "x"},
                             {"github", "a"}, {"slack", "1"}, {"github", "c"},
                             {"google", "w"}};
    const char *sorted[][2] = {{"github", "a"}, {"github", "b"}, {"github", "c"},
                               {"google", "w"}, {"google", "x"}, {"slack", "1"},
                               {"slack", "2"}};
    size_t n = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < n; i++) {
        ds_connection_new in = {uid, rows[i][0], rows[i][1], NULL, "tok", 0, NULL, 0, 0};
        ds_status st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    ds_connection_new in = {other, "github", "aa", NULL, "tok", 0, NULL, 0, 0};
    ds_status st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
    ck_assert_ds_ok(st, err);

    char after_p[80] = "", after_a[80] = "";
    ds_connection_cursor cur = {0};
    size_t seen = 0, pages = 0;
    bool more = true;
    while (more) {
        ds_connection_list *list;
        st = ds_connection_list_for_user(pool, uid, &cur, 3, &list, &err);
        ck_assert_ds_ok(st, err);
        pages++;
        for (size_t i = 0; i < list->count; i++) {
            ck_assert_uint_lt(seen, n);
            ck_assert_str_eq(list->items[i]->provider, sorted[seen][0]);
            ck_assert_str_eq(list->items[i]->external_account_id, sorted[seen][1]);
            ck_assert_int_eq(list->items[i]->user_id, uid);
            ck_assert_ptr_null(list->items[i]->access_token);
            seen++;
        }
        ck_assert(list->has_more == (seen < n));
        more = list->has_more;
        snprintf(after_p, sizeof after_p, "%s", list->next.after_provider);
        snprintf(after_a, sizeof after_a, "%s", list->next.after_account);
        ds_connection_list_free(list);
        cur.after_provider = after_p;
        cur.after_account = after_a;
    }
    ck_assert_uint_eq(seen, n);
    ck_assert_uint_eq(pages, 3);

    /* a cursor inside one provider continues within it, then the next */
    ds_connection_cursor mid = {"github", "b"};
    ds_connection_list *list;
    st = ds_connection_list_for_user(pool, uid, &mid, 2, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 2);
    ck_assert_str_eq(list->items[0]->external_account_id, "c");
    ck_assert_str_eq(list->items[1]->provider, "google");
    ck_assert(list->has_more);
    ds_connection_list_free(list);

    ck_assert_str_eq(cur.after_provider, "slack");
    st = ds_connection_list_for_user(pool, uid, &cur, 3, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(list->count, 0);
    ck_assert(!list->has_more);
    ck_assert_ptr_eq(list->next.after_provider, cur.after_provider);
    ds_connection_list_free(list);

    char longacct[300];
    memset(longacct, 'a', sizeof longacct - 1);
    longacct[sizeof longacct - 1] = '\0';
    const ds_connection_cursor bad[] = {
        {"github", NULL}, {NULL, "a"}, {"", "a"}, {"github", ""}, {"github", longacct},
        {"git\xffhub", "a"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        list = (ds_connection_list *)0x1;
        st = ds_connection_list_for_user(pool, uid, &bad[i], 3, &list, &err);
        ck_assert_ds_status(st, DS_ERR_INVALID, err);
        ck_assert_ptr_null(list);
        ck_assert_ptr_nonnull(strstr(err.message, "cursor"));
    }
    st = ds_connection_list_for_user(pool, uid, NULL, 1000001, &list, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_connection_list_for_user(pool, uid + 100, NULL, 3, &list, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);

    assert_list_plan("connections.list", "service_connections_account_key",
                     "1, 'github', 'a', 4");
    ds_crypto_close(crypto);
}
END_TEST

/* What ds_schema_check() will do at start-up, for this module's statements:
 * prepare each against the migrated schema and compare the parameter and
 * result column types with what the C code binds and decodes. */
START_TEST(test_repo_statements_match_live_schema) {
    const char *repo_modules[] = {"users", "conversations", "messages", "teams",
                                  "settings", "events", "connections", "gdpr"};
    PGconn *c = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    int checked = 0;
    for (const ds__stmt_table *t = ds__stmt_registry; t->module; t++) {
        bool mine = false;
        for (size_t i = 0; i < sizeof repo_modules / sizeof repo_modules[0]; i++)
            mine = mine || strcmp(t->module, repo_modules[i]) == 0;
        if (!mine)
            continue;
        const ds__stmt_def *defs;
        size_t n = t->get(&defs);
        for (size_t i = 0; i < n; i++) {
            const ds__stmt_def *d = &defs[i];
            PGresult *r = PQprepare(c, "", d->sql, d->nparams, d->param_types);
            ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", d->name,
                          PQresultErrorMessage(r));
            PQclear(r);
            r = PQdescribePrepared(c, "");
            ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
            ck_assert_msg(PQnparams(r) == d->nparams, "%s: %d params", d->name, PQnparams(r));
            for (int p = 0; p < d->nparams; p++)
                ck_assert_msg(PQparamtype(r, p) == d->param_types[p], "%s: $%d is %u", d->name,
                              p + 1, PQparamtype(r, p));
            int want = d->ncols < 0 ? 0 : d->ncols;
            ck_assert_msg(PQnfields(r) == want, "%s: %d columns", d->name, PQnfields(r));
            for (int col = 0; col < want; col++)
                ck_assert_msg(PQftype(r, col) == d->col_types[col], "%s: column %d is %u",
                              d->name, col, PQftype(r, col));
            PQclear(r);
            checked++;
        }
    }
    ck_assert_int_ge(checked, 35);
    PQfinish(c);
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
}

static void add_conversations(TCase *tc) {
    tcase_add_test(tc, test_repo_conversation_lifecycle);
    tcase_add_test(tc, test_repo_conversation_list_by_recent_activity);
}

static void add_messages(TCase *tc) {
    tcase_add_test(tc, test_repo_message_append_bumps_updated_at);
    tcase_add_test(tc, test_repo_message_append_bumps_activity_at_most_once_per_interval);
    tcase_add_test(tc, test_repo_message_idempotent_append_returns_original);
    tcase_add_test(tc, test_repo_message_concurrent_retries_never_duplicate);
    tcase_add_test(tc, test_repo_message_paging_newest_and_oldest_first);
    tcase_add_test(tc, test_repo_message_paging_cursor_edge_cases);
    tcase_add_test(tc, test_repo_message_bad_input_writes_nothing);
    tcase_add_test(tc, test_repo_message_metacharacters_round_trip);
    tcase_add_test(tc, test_repo_message_batch_append);
}

static void add_teams(TCase *tc) {
    tcase_add_test(tc, test_repo_team_crud_and_versions);
    tcase_add_test(tc, test_repo_team_concurrent_updates_conflict);
}

static void add_settings(TCase *tc) {
    tcase_add_test(tc, test_repo_setting_versions_and_scopes);
    tcase_add_test(tc, test_repo_setting_concurrent_updates_conflict);
    tcase_add_test(tc, test_repo_setting_value_beyond_jansson_is_reported);
}

static void add_events(TCase *tc) {
    tcase_add_test(tc, test_repo_event_record_one_and_batch);
}

static void add_connections(TCase *tc) {
    tcase_add_test(tc, test_repo_connection_tokens_are_sealed);
}

static void add_lists(TCase *tc) {
    tcase_add_test(tc, test_repo_team_list_pages_by_name_cursor);
    tcase_add_test(tc, test_repo_setting_list_pages_by_key_cursor);
    tcase_add_test(tc, test_repo_connection_list_pages_by_account_cursor);
}

static void add_times(TCase *tc) {
    tcase_add_test(tc, test_repo_times_at_the_edges);
}

static void add_gdpr(TCase *tc) {
    tcase_add_test(tc, test_repo_gdpr_erase_leaves_nothing_and_spares_others);
    tcase_add_test(tc, test_repo_gdpr_purge_soft_deleted);
}

typedef struct group {
    const char *name;
    void (*add)(TCase *tc);
} group;

static const group groups[] = {
    {"users", add_users},
    {"conversations", add_conversations},
    {"messages", add_messages},
    {"teams", add_teams},
    {"settings", add_settings},
    {"events", add_events},
    {"connections", add_connections},
    {"lists", add_lists},
    {"gdpr", add_gdpr},
    {"times", add_times},
};

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_suite(void) {
    static char names[2][sizeof groups / sizeof groups[0]][48];
    Suite *s = suite_create("repo");
    TCase *errors = tcase_create("errors");
    tcase_add_checked_fixture(errors, setup_direct, teardown);
    tcase_add_test(errors, test_repo_errors_null_and_out_of_range_arguments);
    tcase_add_test(errors, test_repo_errors_out_of_memory_is_reported);
    tcase_add_test(errors, test_repo_errors_out_of_memory_in_reads);
    tcase_add_test(errors, test_repo_statements_match_live_schema);
    suite_add_tcase(s, errors);
    for (int pooled = 0; pooled < 2; pooled++)
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
            snprintf(names[pooled][g], sizeof names[pooled][g], "%s%s",
                     pooled ? "pooler_" : "", groups[g].name);
            TCase *tc = tcase_create(names[pooled][g]);
            tcase_add_checked_fixture(tc, pooled ? setup_pooler : setup_direct,
                                      teardown);
            groups[g].add(tc);
            suite_add_tcase(s, tc);
        }
    return s;
}
