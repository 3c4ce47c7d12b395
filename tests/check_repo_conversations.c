/* Conversations and their messages against the real database: lifecycle,
 * activity order, idempotent and batch appends, paging; direct and through
 * PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

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
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "hi", 0, NULL, NULL};
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
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "bump", 0, NULL, NULL};
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
/* An activity cursor is a position (updated_at, id), not a session: one
 * whose conversation was deleted, or taken from another user's list, still
 * gives exactly this user's conversations after that position; a limit
 * above repo_max_page or a malformed cursor is refused. */
START_TEST(test_repo_conversation_paging_cursor_edge_cases) {
    ds_error err = {0};
    int64_t owner = new_user("convcursor@example.com");
    int64_t other = new_user("convcursor-other@example.com");
    int64_t ids[6], foreign;
    for (int i = 0; i < 6; i++)
        ids[i] = new_conversation(owner);
    foreign = new_conversation(other);
    /* distinct activity times: ids[0] newest, then one minute apart; the
     * other user's conversation sits between ids[2] and ids[3] */
    char sql[256];
    for (int i = 0; i < 6; i++) {
        snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = "
                 "now() - interval '%d minutes' WHERE id = %lld", 2 * i + 10,
                 (long long)ids[i]);
        dt_sql(db, sql);
    }
    snprintf(sql, sizeof sql, "UPDATE conversations SET updated_at = now() - "
             "interval '15 minutes' WHERE id = %lld", (long long)foreign);
    dt_sql(db, sql);

    ds_conversation_list *page;
    ds_status st = ds_conversation_list_page(pool, owner, NULL, 2, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 2);
    ck_assert(page->items[1]->id == ids[1] && page->has_more);
    ds_conversation_cursor next = page->next;
    ds_conversation_list_free(page);

    /* the cursor's conversation is deleted: the next page is still exact */
    ck_assert_ds_ok(ds_conversation_delete(pool, ids[1], &err), err);
    st = ds_conversation_list_page(pool, owner, &next, 2, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 2);
    ck_assert(page->items[0]->id == ids[2] && page->items[1]->id == ids[3]);
    ds_conversation_list_free(page);

    /* another user's cursor: this user's rows after that position, only */
    st = ds_conversation_list_page(pool, other, NULL, 1, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 1);
    ck_assert(page->items[0]->id == foreign);
    ds_conversation_cursor theirs = page->next;
    ds_conversation_list_free(page);
    st = ds_conversation_list_page(pool, owner, &theirs, 10, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 3);
    for (size_t i = 0; i < page->count; i++) {
        ck_assert(page->items[i]->owner_id == owner);
        ck_assert(page->items[i]->id == ids[3 + i]);
    }
    ck_assert(!page->has_more);
    ds_conversation_list_free(page);

    /* past the last row: an empty page that keeps the cursor */
    ds_conversation_cursor end = {1, 1};
    st = ds_conversation_list_page(pool, owner, &end, 10, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 0);
    ck_assert(!page->has_more);
    ck_assert(page->next.updated_at == 1 && page->next.id == 1);
    ds_conversation_list_free(page);

    /* a malformed cursor, and limits out of range */
    ds_conversation_cursor bad = {next.updated_at, -5};
    st = ds_conversation_list_page(pool, owner, &bad, 2, false, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(page);
    st = ds_conversation_list_page(pool, owner, NULL, 0, false, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_conversation_list_page(pool, owner, NULL, -1, false, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_config *cfg = dt_config(db, 1, 1);
    ck_assert_int_eq(ds_config_set_int(cfg, "repo_max_page", 3, &err), DS_OK);
    ds_pool *small;
    ck_assert_int_eq(ds_pool_open(cfg, &small, &err), DS_OK);
    ds_config_free(cfg);
    st = ds_conversation_list_page(small, owner, NULL, 4, false, &page, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(page);
    ck_assert(strstr(err.message, "repo_max_page") != NULL);
    st = ds_conversation_list_page(small, owner, NULL, 3, false, &page, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(page->count, 3);
    ck_assert(page->items[0]->id == ids[0] && page->has_more);
    ds_conversation_list_free(page);
    ds_pool_close(small);
}
END_TEST

START_TEST(test_repo_message_append_bumps_updated_at) {
    ds_error err = {0};
    int64_t conv = new_conversation(new_user("m@example.com"));
    dt_sql(db, "UPDATE conversations SET updated_at = now() - interval '1 day'");
    json_t *meta = json_pack("{s:s}", "model", "m1");
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_ASSISTANT, "Hello there", 0, meta, NULL};
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
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "a message", 0, NULL, NULL};
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
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "first", 0, NULL, "req-1"};
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
        ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "race", 0, NULL, key};
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
        ds_message_new m = {sizeof(ds_message_new), i % 2 ? DS_ROLE_ASSISTANT : DS_ROLE_USER, text, 0, NULL, NULL};
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
        ds_message_new late = {sizeof(ds_message_new), DS_ROLE_USER, "late", 0, NULL, NULL};
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
        ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, NULL, NULL};
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
        {sizeof(ds_message_new), DS_ROLE_USER, "a\0b", 3, NULL, NULL},
        {sizeof(ds_message_new), DS_ROLE_USER, "\xff\xfe", 0, NULL, NULL},
        {sizeof(ds_message_new), DS_ROLE_USER, "", 0, NULL, NULL},
        {sizeof(ds_message_new), DS_ROLE_USER, NULL, 0, NULL, NULL},
        {sizeof(ds_message_new), (ds_message_role)42, "x", 0, NULL, NULL},
        {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, NULL, ""},
        {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, NULL, "\xed\xa0\x80"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ds_status st = ds_message_append(pool, conv, &cases[i], NULL, &err);
        ck_assert_msg(st == DS_ERR_INVALID, "case %zu gave %s", i, ds_status_str(st));
    }
    json_t *arr = json_array();
    ds_message_new notobj = {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, arr, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, &notobj, NULL, &err), DS_ERR_INVALID);
    json_decref(arr);
    json_t *nul = json_pack("{s:s#}", "k", "a\0b", 3);
    ds_message_new withnul = {sizeof(ds_message_new), DS_ROLE_USER, "x", 0, nul, NULL};
    ck_assert_int_eq(ds_message_append(pool, conv, &withnul, NULL, &err), DS_ERR_INVALID);
    json_decref(nul);
    /* over the configured limit */
    ds_config *cfg = dt_config(db, 1, 1);
    ck_assert_int_eq(ds_config_set_int(cfg, "repo_max_message_bytes", 10, &err), DS_OK);
    ck_assert_int_eq(ds_config_set_int(cfg, "repo_max_json_bytes", 10, &err), DS_OK);
    ds_pool *small;
    ck_assert_int_eq(ds_pool_open(cfg, &small, &err), DS_OK);
    ds_config_free(cfg);
    ds_message_new longer = {sizeof(ds_message_new), DS_ROLE_USER, "01234567890", 0, NULL, NULL};
    ck_assert_int_eq(ds_message_append(small, conv, &longer, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "limit"));
    json_t *big = json_pack("{s:s}", "key", "a long value");
    ds_message_new bigmeta = {sizeof(ds_message_new), DS_ROLE_USER, "ok", 0, big, NULL};
    ck_assert_int_eq(ds_message_append(small, conv, &bigmeta, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "repo_max_json_bytes"));
    json_decref(big);
    ds_message_new fits = {sizeof(ds_message_new), DS_ROLE_USER, "0123456789", 0, NULL, NULL};
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
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_TOOL, nasty, 0, meta, nasty};
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
        msgs[i].size = sizeof msgs[i];
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

/* ---- registration ------------------------------------------------------------ */

static void add_conversations(TCase *tc) {
    tcase_add_test(tc, test_repo_conversation_lifecycle);
    tcase_add_test(tc, test_repo_conversation_list_by_recent_activity);
    tcase_add_test(tc, test_repo_conversation_paging_cursor_edge_cases);
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

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_conversations_suite(void) {
    static const dt_repo_group groups[] = {
        {"conversations", add_conversations},
        {"messages", add_messages},
    };
    return dt_repo_suite("repo_conversations", groups, sizeof groups / sizeof groups[0]);
}

