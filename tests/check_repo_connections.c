/* Service connections against the real database: sealed tokens and
 * keyset-paged lists; direct and through PgBouncer. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "repo_fixture.h"

START_TEST(test_repo_connection_tokens_are_sealed) {
    ds_error err = {0};
    ds_crypto *crypto = test_crypto("k1");
    int64_t uid = new_user("oauth@example.com"), other = new_user("other@example.com");
    const char *access = "gho_PLAINTEXT_ACCESS_TOKEN_1234567890";
    const char *refresh = "ghr_PLAINTEXT_REFRESH_TOKEN_0987654321";
    ds_connection_new in = {sizeof(ds_connection_new), uid, "github", "4242", "repo read:user", access, 0, refresh, 0,
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
    ck_assert_str_eq(ds_crypto_secret_data(c->access_token), access);
    ck_assert_str_eq(ds_crypto_secret_data(c->refresh_token), refresh);
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
    ck_assert_str_eq(ds_crypto_secret_data(c->access_token), "second");
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
    ds_connection_new bad = {sizeof(ds_connection_new), uid, "GitHub", "1", NULL, "t", 0, NULL, 0, 0};
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
        ds_connection_new in = {sizeof(ds_connection_new), uid, rows[i][0], rows[i][1], NULL, "tok", 0, NULL, 0, 0};
        ds_status st = ds_connection_upsert(pool, crypto, &in, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    ds_connection_new in = {sizeof(ds_connection_new), other, "github", "aa", NULL, "tok", 0, NULL, 0, 0};
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

/* ---- registration ------------------------------------------------------------ */

static void add_connections(TCase *tc) {
    tcase_add_test(tc, test_repo_connection_tokens_are_sealed);
}

static void add_lists(TCase *tc) {
    tcase_add_test(tc, test_repo_connection_list_pages_by_account_cursor);
}

/* Each group twice: direct (prepared statements) and through PgBouncer in
 * transaction mode with the pool in pooler mode. */
Suite *ds_test_repo_connections_suite(void) {
    static const dt_repo_group groups[] = {
        {"connections", add_connections},
        {"lists", add_lists},
    };
    return dt_repo_suite("repo_connections", groups, sizeof groups / sizeof groups[0]);
}

