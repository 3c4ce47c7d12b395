/* Sessions: tokens handed out once, keyed hashes at rest, sliding expiry,
 * revocation, purge, key rotation, and the database dump scan. */
#define _GNU_SOURCE /* memmem */
#include <libpq-fe.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <unistd.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"
#include "session/session_internal.h"
#include "test_util.h"

/* One fresh database with a pool, a ring and a store. */
typedef struct fixture {
    char *url;
    ds_pool *pool;
    ds_crypto *crypto;
    ds_session_store *store;
} fixture;

static ds_session_store *store_over(ds_pool *pool, ds_crypto *c,
                                    const ds_session_options *opts) {
    ds_session_store *s;
    ds_error err = {0};
    ds_status st = ds_session_store_open(pool, c, NULL, opts, &s, &err);
    ck_assert_ds_ok(st, err);
    return s;
}

static fixture setup(const char *tag, const ds_session_options *opts) {
    fixture f;
    f.url = dt_migrated_db(tag);
    f.pool = dt_pool(f.url, 1, 4);
    f.crypto = dt_crypto_ring(DT_K1);
    f.store = store_over(f.pool, f.crypto, opts);
    return f;
}

static void teardown(fixture *f) {
    ds_session_store_close(f->store);
    ds_crypto_close(f->crypto);
    ds_pool_close(f->pool);
    dt_drop_db(f->url);
    free(f->url);
}

static int64_t make_user(const char *url, const char *email) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO users (email) VALUES ('%s') RETURNING id", email);
    return dt_sql_int(url, sql);
}

static ds_crypto_secret *login(ds_session_store *s, int64_t uid, const char *ua,
                        const char *ip, ds_session **out) {
    ds_crypto_secret *tok;
    ds_error err = {0};
    ds_status st = ds_session_create(s, uid, ua, ip, &tok, out, &err);
    ck_assert_ds_ok(st, err);
    return tok;
}

static void assert_valid(ds_session_store *s, const ds_crypto_secret *tok, int64_t uid) {
    int64_t got = 0;
    ds_error err = {0};
    ds_status st = ds_session_validate(s, ds_crypto_secret_data(tok), &got, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(got, uid);
}

static void assert_rejected(ds_session_store *s, const ds_crypto_secret *tok,
                            const char *why) {
    int64_t got = 7;
    ds_session *sess = (ds_session *)1;
    ds_error err = {0};
    ds_status st = ds_session_validate(s, ds_crypto_secret_data(tok), &got, &sess, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(got, 0);
    ck_assert_ptr_null(sess);
    ck_assert_msg(strstr(err.message, why) != NULL, "message '%s' lacks '%s'",
                  err.message, why);
}

/* Runs SQL on the session of this token's row: `sql` has one %lld for the
 * session id. */
static void sql_on_session(const char *url, int64_t id, const char *fmt) {
    char sql[512];
    snprintf(sql, sizeof sql, fmt, (long long)id);
    dt_sql(url, sql);
}

/* ---- create ------------------------------------------------------------- */

START_TEST(test_session_create_hands_out_token_once) {
    fixture f = setup("screate", NULL);
    int64_t uid = make_user(f.url, "ann@example.com");
    ds_session *s;
    ds_crypto_secret *tok = login(f.store, uid, "Mozilla/5.0 (X11; Linux) Firefox/128.0",
                           "2001:DB8:0:0::1", &s);
    ck_assert_uint_eq(ds_crypto_secret_len(tok), DS_SESSION_TOKEN_LEN);
    ck_assert_uint_eq(strlen(ds_crypto_secret_data(tok)), DS_SESSION_TOKEN_LEN);
    ck_assert_uint_eq(strspn(ds_crypto_secret_data(tok),
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                      DS_SESSION_TOKEN_LEN);
    ck_assert_int_gt(s->id, 0);
    ck_assert_int_eq(s->user_id, uid);
    ck_assert_str_eq(s->user_agent, "Mozilla/5.0 (X11; Linux) Firefox/128.0");
    ck_assert_str_eq(s->ip, "2001:db8::1");
    ck_assert(!s->revoked);
    /* default idle ttl: 14 days */
    ck_assert_int_eq(s->expires_at_us - s->created_at_us, INT64_C(14) * 86400 * 1000000);
    ck_assert_int_eq(s->last_seen_at_us, s->created_at_us);
    /* two logins, two different tokens */
    ds_crypto_secret *tok2 = login(f.store, uid, NULL, "203.0.113.7", NULL);
    ck_assert_str_ne(ds_crypto_secret_data(tok), ds_crypto_secret_data(tok2));
    /* only 32-byte hashes are stored */
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions "
                                       "WHERE length(token_hash) = 32"), 2);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions "
                                       "WHERE user_agent IS NULL AND ip = '203.0.113.7'"), 1);
    assert_valid(f.store, tok, uid);
    assert_valid(f.store, tok2, uid);
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    ds_crypto_secret_free(tok2);
    teardown(&f);
}
END_TEST

START_TEST(test_session_create_rejects_bad_input) {
    fixture f = setup("sbad", NULL);
    int64_t uid = make_user(f.url, "bob@example.com");
    static const char *const bad_ips[] = {"999.1.1.1", "10.0.0", "abc", "10.0.0.1/24",
                                          "::g", "1.2.3.4 ", " 1.2.3.4",
                                          "fe80::1%eth0"};
    ds_error err = {0};
    for (size_t i = 0; i < sizeof bad_ips / sizeof bad_ips[0]; i++) {
        ds_crypto_secret *tok = (ds_crypto_secret *)1;
        ds_status st = ds_session_create(f.store, uid, NULL, bad_ips[i], &tok, NULL, &err);
        ck_assert_msg(st == DS_ERR_INVALID, "ip '%s': %s", bad_ips[i], ds_status_str(st));
        ck_assert_ptr_null(tok);
    }
    ds_crypto_secret *tok;
    ds_status st = ds_session_create(f.store, uid, "bad \xC3\x28 utf8", NULL, &tok, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_session_create(f.store, uid + 1000, NULL, NULL, &tok, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(tok);
    st = ds_session_create(f.store, 0, NULL, NULL, &tok, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions"), 0);

    /* a long user agent is kept to 512 characters, cut between characters */
    char ua[2000] = "";
    for (int i = 0; i < 600; i++)
        strcat(ua, i % 2 ? "a" : "\xC3\xA9"); /* 'é' is two bytes */
    ds_session *s;
    tok = login(f.store, uid, ua, NULL, &s);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT length(user_agent) FROM auth_sessions"), 512);
    ck_assert_uint_eq(strlen(s->user_agent), 256 * 3);
    ck_assert_ptr_null(s->ip);
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

/* ---- validate ------------------------------------------------------------- */

START_TEST(test_session_validate_rejects_malformed_tokens) {
    fixture f = setup("smal", NULL);
    static const char *const bad[] = {
        "", "short", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  /* 42 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",              /* 44 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",               /* padded */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+/",               /* not url-safe */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_error err = {0};
        int64_t uid = 5;
        ds_status st = ds_session_validate(f.store, bad[i], &uid, NULL, &err);
        ck_assert_msg(st == DS_ERR_INVALID, "token %zu: %s", i, ds_status_str(st));
        ck_assert_int_eq(uid, 0);
        if (*bad[i])
            ck_assert_ptr_null(strstr(err.message, bad[i]));
        ck_assert_int_eq(ds_session_revoke(f.store, bad[i], &err), DS_ERR_INVALID);
    }
    /* well-formed but unknown */
    ds_error err = {0};
    ds_status st = ds_session_validate(f.store,
                                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                       NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_nonnull(strstr(err.message, "no such session"));
    teardown(&f);
}
END_TEST

START_TEST(test_session_validate_returns_the_session) {
    fixture f = setup("sval", NULL);
    int64_t uid = make_user(f.url, "cy@example.com");
    ds_session *created;
    ds_crypto_secret *tok = login(f.store, uid, "curl/8.0", "198.51.100.20", &created);
    ds_session *s;
    int64_t got;
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_validate(f.store, ds_crypto_secret_data(tok), &got, &s, &err), err);
    ck_assert_int_eq(got, uid);
    ck_assert_int_eq(s->id, created->id);
    ck_assert_int_eq(s->user_id, uid);
    ck_assert_str_eq(s->user_agent, "curl/8.0");
    ck_assert_str_eq(s->ip, "198.51.100.20");
    ck_assert_int_eq(s->created_at_us, created->created_at_us);
    ck_assert(!s->revoked);
    /* a token of another ring's key does not validate */
    ds_crypto *other = dt_crypto_ring(DT_K3);
    ds_session_store *st3 = store_over(f.pool, other, NULL);
    assert_rejected(st3, tok, "no such session");
    ds_session_store_close(st3);
    ds_crypto_close(other);
    ds_session_free(s);
    ds_session_free(created);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

START_TEST(test_session_validate_slides_expiry) {
    ds_session_options o = {.size = sizeof(ds_session_options), .idle_ttl_ms = 3600000, .max_lifetime_ms = 86400000};
    fixture f = setup("sslide", &o);
    int64_t uid = make_user(f.url, "dee@example.com");
    ds_session *created;
    ds_crypto_secret *tok = login(f.store, uid, NULL, NULL, &created);
    /* used 59 minutes ago: expires in one minute */
    sql_on_session(f.url, created->id,
                   "UPDATE auth_sessions SET created_at = now() - interval '2 hours', "
                   "last_seen_at = now() - interval '59 minutes', "
                   "expires_at = now() + interval '1 minute' WHERE id = %lld");
    ds_session *s;
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_validate(f.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    /* slid to one idle ttl after this use */
    ck_assert_int_eq(s->expires_at_us - s->last_seen_at_us, INT64_C(3600) * 1000000);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions WHERE "
                                       "expires_at > now() + interval '59 minutes' AND "
                                       "last_seen_at > now() - interval '1 minute'"), 1);
    ds_session_free(s);

    /* created 23.5 hours ago: the max lifetime caps the slide */
    sql_on_session(f.url, created->id,
                   "UPDATE auth_sessions SET created_at = now() - interval '23 hours 30 minutes', "
                   "last_seen_at = now() - interval '30 minutes' WHERE id = %lld");
    ck_assert_ds_ok(ds_session_validate(f.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_int_eq(s->expires_at_us, s->created_at_us + INT64_C(86400) * 1000000);
    ds_session_free(s);
    ds_session_free(created);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

START_TEST(test_session_touch_is_throttled) {
    fixture f = setup("sthrottle", NULL); /* touch at most once a minute */
    int64_t uid = make_user(f.url, "eve@example.com");
    ds_session *created;
    ds_crypto_secret *tok = login(f.store, uid, NULL, NULL, &created);
    /* a marker expiry: a touch would replace it */
    sql_on_session(f.url, created->id,
                   "UPDATE auth_sessions SET expires_at = now() + interval '1 hour', "
                   "last_seen_at = now() - interval '30 seconds' WHERE id = %lld");
    for (int i = 0; i < 5; i++)
        assert_valid(f.store, tok, uid);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions WHERE "
                                       "expires_at < now() + interval '2 hours'"), 1);
    /* last seen over a minute ago: this validation writes */
    sql_on_session(f.url, created->id,
                   "UPDATE auth_sessions SET last_seen_at = now() - interval '61 seconds' "
                   "WHERE id = %lld");
    assert_valid(f.store, tok, uid);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions WHERE "
                                       "expires_at > now() + interval '13 days'"), 1);
    ds_session_free(created);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

START_TEST(test_session_expired_is_rejected) {
    fixture f = setup("sexp", NULL);
    int64_t uid = make_user(f.url, "fay@example.com");
    ds_session *created;
    ds_crypto_secret *tok = login(f.store, uid, NULL, NULL, &created);
    sql_on_session(f.url, created->id,
                   "UPDATE auth_sessions SET expires_at = now() - interval '1 second', "
                   "last_seen_at = now() - interval '15 days' WHERE id = %lld");
    assert_rejected(f.store, tok, "expired");
    /* and a rejection does not revive it */
    assert_rejected(f.store, tok, "expired");
    ds_session_free(created);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

/* ---- revoke ---------------------------------------------------------------- */

START_TEST(test_session_revoke_one) {
    fixture f = setup("srev", NULL);
    int64_t uid = make_user(f.url, "gus@example.com");
    ds_crypto_secret *a = login(f.store, uid, NULL, NULL, NULL);
    ds_crypto_secret *b = login(f.store, uid, NULL, NULL, NULL);
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(f.store, ds_crypto_secret_data(a), &err), err);
    assert_rejected(f.store, a, "revoked");
    assert_valid(f.store, b, uid);
    /* again: still fine (log out twice) */
    ck_assert_ds_ok(ds_session_revoke(f.store, ds_crypto_secret_data(a), &err), err);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions WHERE revoked "
                                       "AND revoked_at IS NOT NULL"), 1);
    ck_assert_int_eq(ds_session_revoke(f.store, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                       &err), DS_ERR_NOT_FOUND);
    ds_crypto_secret_free(a);
    ds_crypto_secret_free(b);
    teardown(&f);
}
END_TEST

START_TEST(test_session_revoke_by_id_only_for_its_user) {
    fixture f = setup("srevid", NULL);
    int64_t u1 = make_user(f.url, "hal@example.com");
    int64_t u2 = make_user(f.url, "ivy@example.com");
    ds_session *s;
    ds_crypto_secret *tok = login(f.store, u1, "phone", NULL, &s);
    ds_error err = {0};
    ck_assert_int_eq(ds_session_revoke_id(f.store, u2, s->id, &err), DS_ERR_NOT_FOUND);
    assert_valid(f.store, tok, u1);
    ck_assert_int_eq(ds_session_revoke_id(f.store, u1, s->id + 100, &err), DS_ERR_NOT_FOUND);
    ck_assert_ds_ok(ds_session_revoke_id(f.store, u1, s->id, &err), err);
    assert_rejected(f.store, tok, "revoked");
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    teardown(&f);
}
END_TEST

START_TEST(test_session_revoke_all_of_a_user) {
    fixture f = setup("srevall", NULL);
    int64_t u1 = make_user(f.url, "jo@example.com");
    int64_t u2 = make_user(f.url, "kim@example.com");
    ds_crypto_secret *t1[3];
    for (int i = 0; i < 3; i++)
        t1[i] = login(f.store, u1, NULL, NULL, NULL);
    ds_crypto_secret *t2 = login(f.store, u2, NULL, NULL, NULL);
    int64_t n = -1;
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke_user(f.store, u1, &n, &err), err);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++)
        assert_rejected(f.store, t1[i], "revoked");
    assert_valid(f.store, t2, u2);
    ck_assert_ds_ok(ds_session_revoke_user(f.store, u1, &n, &err), err);
    ck_assert_int_eq(n, 0);
    ds_session **list;
    size_t count;
    ck_assert_ds_ok(ds_session_list(f.store, u1, &list, &count, &err), err);
    ck_assert_uint_eq(count, 0);
    ds_session_list_free(list, count);
    for (int i = 0; i < 3; i++)
        ds_crypto_secret_free(t1[i]);
    ds_crypto_secret_free(t2);
    teardown(&f);
}
END_TEST

START_TEST(test_session_list_most_recent_first) {
    fixture f = setup("slist", NULL);
    int64_t uid = make_user(f.url, "lu@example.com");
    ds_session *s[3];
    ds_crypto_secret *t[3];
    const char *agents[] = {"laptop", "phone", "tablet"};
    for (int i = 0; i < 3; i++)
        t[i] = login(f.store, uid, agents[i], "192.0.2.1", &s[i]);
    sql_on_session(f.url, s[0]->id, "UPDATE auth_sessions SET last_seen_at = now() - "
                                    "interval '1 hour' WHERE id = %lld");
    sql_on_session(f.url, s[2]->id, "UPDATE auth_sessions SET last_seen_at = now() - "
                                    "interval '2 hours' WHERE id = %lld");
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(f.store, ds_crypto_secret_data(t[1]), &err), err);
    ds_session **list;
    size_t count;
    ck_assert_ds_ok(ds_session_list(f.store, uid, &list, &count, &err), err);
    ck_assert_uint_eq(count, 2);
    ck_assert_str_eq(list[0]->user_agent, "laptop");
    ck_assert_str_eq(list[1]->user_agent, "tablet");
    ck_assert_str_eq(list[1]->ip, "192.0.2.1");
    ds_session_list_free(list, count);
    for (int i = 0; i < 3; i++) {
        ds_session_free(s[i]);
        ds_crypto_secret_free(t[i]);
    }
    teardown(&f);
}
END_TEST

START_TEST(test_session_purge_expired) {
    fixture f = setup("spurge", NULL);
    int64_t uid = make_user(f.url, "max@example.com");
    ds_session *s[4];
    ds_crypto_secret *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = login(f.store, uid, NULL, NULL, &s[i]);
    sql_on_session(f.url, s[0]->id, "UPDATE auth_sessions SET expires_at = now() - "
                                    "interval '3 days' WHERE id = %lld");
    sql_on_session(f.url, s[1]->id, "UPDATE auth_sessions SET expires_at = now() - "
                                    "interval '1 hour' WHERE id = %lld");
    /* revoked, and expired long ago */
    sql_on_session(f.url, s[2]->id, "UPDATE auth_sessions SET revoked = true, revoked_at = "
                                    "now() - interval '10 days', expires_at = now() - "
                                    "interval '5 days' WHERE id = %lld");
    int64_t n = -1;
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_purge_expired(f.store, 86400000, &n, &err), err);
    ck_assert_int_eq(n, 2);
    ck_assert_ds_ok(ds_session_purge_expired(f.store, 0, &n, &err), err);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions"), 1);
    assert_valid(f.store, t[3], uid);
    /* many rows: several batches */
    dt_sql(f.url, "INSERT INTO auth_sessions (user_id, token_hash, expires_at) "
                  "SELECT (SELECT id FROM users LIMIT 1), "
                  "decode(lpad(to_hex(g), 64, '0'), 'hex'), now() - interval '2 days' "
                  "FROM generate_series(1, 2500) g");
    ck_assert_ds_ok(ds_session_purge_expired(f.store, 3600000, &n, &err), err);
    ck_assert_int_eq(n, 2500);
    ck_assert_int_eq(dt_sql_int(f.url, "SELECT count(*) FROM auth_sessions"), 1);
    for (int i = 0; i < 4; i++) {
        ds_session_free(s[i]);
        ds_crypto_secret_free(t[i]);
    }
    teardown(&f);
}
END_TEST

/* ---- key rotation ----------------------------------------------------------- */

START_TEST(test_session_survives_key_rotation) {
    char *url = dt_migrated_db("srot");
    ds_pool *pool = dt_pool(url, 1, 2);
    int64_t uid = make_user(url, "ned@example.com");
    ds_crypto *r1 = dt_crypto_ring(DT_K1);
    ds_session_store *s1 = store_over(pool, r1, NULL);
    ds_crypto_secret *used = login(s1, uid, NULL, NULL, NULL);
    ds_crypto_secret *idle = login(s1, uid, NULL, NULL, NULL);
    char *before = NULL;
    {
        PGconn *c = PQconnectdb(url);
        PGresult *r = PQexec(c, "SELECT string_agg(encode(token_hash, 'hex'), ',' ORDER BY id) "
                                "FROM auth_sessions");
        before = strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        PQfinish(c);
    }
    /* new active key k2, k1 still in the ring: both sessions still valid */
    ds_crypto *r2 = dt_crypto_ring(DT_K2 "," DT_K1);
    ds_session_store *s2 = store_over(pool, r2, NULL);
    assert_valid(s2, used, uid);
    /* ... and the used one was re-hashed under k2 on the spot */
    {
        PGconn *c = PQconnectdb(url);
        PGresult *r = PQexec(c, "SELECT string_agg(encode(token_hash, 'hex'), ',' ORDER BY id) "
                                "FROM auth_sessions");
        const char *after = PQgetvalue(r, 0, 0);
        ck_assert_str_ne(after, before);
        ck_assert_str_eq(strchr(after, ','), strchr(before, ',')); /* idle one unchanged */
        PQclear(r);
        PQfinish(c);
    }
    /* k1 removed: the used session lives on, the idle one has ended */
    ds_crypto *r3 = dt_crypto_ring(DT_K2);
    ds_session_store *s3 = store_over(pool, r3, NULL);
    assert_valid(s3, used, uid);
    assert_rejected(s3, idle, "no such session");
    /* revocation also finds sessions under an older key */
    ds_crypto_secret *late = login(s1, uid, NULL, NULL, NULL);
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(s2, ds_crypto_secret_data(late), &err), err);
    assert_rejected(s1, late, "revoked");
    free(before);
    ds_crypto_secret_free(used);
    ds_crypto_secret_free(idle);
    ds_crypto_secret_free(late);
    ds_session_store_close(s1);
    ds_session_store_close(s2);
    ds_session_store_close(s3);
    ds_crypto_close(r1);
    ds_crypto_close(r2);
    ds_crypto_close(r3);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- PgBouncer ----------------------------------------------------------------- */

START_TEST(test_session_through_pgbouncer) {
    char *url = dt_migrated_db("spool");
    int64_t uid = make_user(url, "oz@example.com");
    ds_pool *pool = dt_pooler_pool(url, 1, 3);
    ds_error err = {0};
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ds_session_options o = {.size = sizeof(ds_session_options), .touch_interval_ms = 1};
    ds_session_store *s = store_over(pool, c, &o);
    ds_crypto_secret *tok = login(s, uid, "ua", "10.1.2.3", NULL);
    for (int i = 0; i < 20; i++)
        assert_valid(s, tok, uid);
    int64_t n;
    ck_assert_ds_ok(ds_session_revoke_user(s, uid, &n, &err), err);
    ck_assert_int_eq(n, 1);
    assert_rejected(s, tok, "revoked");
    ck_assert_ds_ok(ds_session_purge_expired(s, 0, &n, &err), err);
    ds_crypto_secret_free(tok);
    ds_session_store_close(s);
    ds_crypto_close(c);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- the dump scan -------------------------------------------------------------- */

/* Byte strings that must appear nowhere in the database. */
typedef struct needles {
    struct {
        unsigned char *p;
        size_t n;
        char what[64];
    } v[1024];
    int n;
} needles;

static void needle_add(needles *nd, const void *p, size_t n, const char *what) {
    ck_assert_int_lt(nd->n, 1024);
    nd->v[nd->n].p = malloc(n);
    memcpy(nd->v[nd->n].p, p, n);
    nd->v[nd->n].n = n;
    snprintf(nd->v[nd->n].what, sizeof nd->v[nd->n].what, "%s", what);
    nd->n++;
}

/* A secret in every form a careless layer might store it: as given, its
 * bytes in hex (both cases) and base64 (both alphabets), and a prefix. */
static void needle_forms(needles *nd, const unsigned char *p, size_t n,
                         const char *what) {
    char buf[1024], label[64];
    needle_add(nd, p, n, what);
    sodium_bin2hex(buf, sizeof buf, p, n);
    snprintf(label, sizeof label, "%s (hex)", what);
    needle_add(nd, buf, strlen(buf), label);
    for (char *c = buf; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    snprintf(label, sizeof label, "%s (HEX)", what);
    needle_add(nd, buf, strlen(buf), label);
    sodium_bin2base64(buf, sizeof buf, p, n, sodium_base64_VARIANT_ORIGINAL);
    snprintf(label, sizeof label, "%s (base64)", what);
    needle_add(nd, buf, strlen(buf), label);
    sodium_bin2base64(buf, sizeof buf, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(label, sizeof label, "%s (base64url)", what);
    needle_add(nd, buf, strlen(buf), label);
    if (n > 16) {
        snprintf(label, sizeof label, "%s (prefix)", what);
        needle_add(nd, p, 16, label);
    }
}

static void session_needles(needles *nd, const ds_crypto_secret *tok) {
    const char *text = ds_crypto_secret_data(tok);
    needle_forms(nd, (const unsigned char *)text, strlen(text), "session token");
    unsigned char raw[32], h[32];
    size_t len;
    ck_assert_int_eq(sodium_base642bin(raw, sizeof raw, text, strlen(text), NULL, &len,
                                       NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
    needle_forms(nd, raw, sizeof raw, "session token bytes");
    /* an unkeyed hash would let anyone test guesses: it must not be stored */
    crypto_generichash(h, sizeof h, raw, sizeof raw, NULL, 0);
    needle_add(nd, h, sizeof h, "unkeyed BLAKE2b of the token bytes");
    crypto_hash_sha256(h, (const unsigned char *)text, strlen(text));
    needle_add(nd, h, sizeof h, "SHA-256 of the token");
}

static void needles_free(needles *nd) {
    for (int i = 0; i < nd->n; i++)
        free(nd->v[i].p);
    nd->n = 0;
}

/* Reads every column of every table of the database (bytea as raw bytes,
 * everything else as its text form) and counts needle hits. */
static int scan_database(const char *url, const needles *nd, char *first, size_t first_size) {
    PGconn *c = PQconnectdb(url);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PGresult *cols = PQexec(c,
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "ORDER BY 1, 2");
    ck_assert_int_eq(PQresultStatus(cols), PGRES_TUPLES_OK);
    ck_assert_int_gt(PQntuples(cols), 50); /* the whole platform schema */
    int hits = 0, textual = 0;
    for (int i = 0; i < PQntuples(cols); i++) {
        const char *table = PQgetvalue(cols, i, 0), *col = PQgetvalue(cols, i, 1);
        const char *type = PQgetvalue(cols, i, 2);
        bool bytea = strcmp(type, "bytea") == 0;
        if (bytea || strcmp(type, "text") == 0 || strcmp(type, "jsonb") == 0 ||
            strcmp(type, "json") == 0 || strncmp(type, "character", 9) == 0)
            textual++;
        char sql[512];
        snprintf(sql, sizeof sql, "SELECT \"%s\"%s FROM \"%s\" WHERE \"%s\" IS NOT NULL",
                 col, bytea ? "" : "::text", table, col);
        PGresult *r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, bytea ? 1 : 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
                      PQerrorMessage(c));
        for (int row = 0; row < PQntuples(r); row++) {
            const char *v = PQgetvalue(r, row, 0);
            size_t vlen = (size_t)PQgetlength(r, row, 0);
            for (int k = 0; k < nd->n; k++)
                if (memmem(v, vlen, nd->v[k].p, nd->v[k].n)) {
                    if (hits++ == 0)
                        snprintf(first, first_size, "%s in %s.%s", nd->v[k].what,
                                 table, col);
                }
        }
        PQclear(r);
    }
    ck_assert_int_ge(textual, 25);
    PQclear(cols);
    PQfinish(c);
    return hits;
}

static void random_token(char *out, size_t n, const char *prefix) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    for (size_t i = p; i < n - 1; i++)
        out[i] = alphabet[randombytes_uniform(64)];
    out[n - 1] = '\0';
}

START_TEST(test_session_dump_reveals_no_token) {
    char *url = dt_migrated_db("sdump");
    ds_pool *pool = dt_pool(url, 1, 4);
    ds_crypto *ring1 = dt_crypto_ring(DT_K1);
    ds_session_store *store = store_over(pool, ring1, NULL);
    needles *nd = calloc(1, sizeof *nd);
    ds_error err = {0};
    enum { USERS = 6 };
    char oauth[USERS][2][2][160];
    for (int u = 0; u < USERS; u++) {
        char sql[1024];
        snprintf(sql, sizeof sql,
                 "INSERT INTO users (email) VALUES ('person%d@example.org') RETURNING id", u);
        int64_t uid = dt_sql_int(url, sql);
        snprintf(sql, sizeof sql,
                 "INSERT INTO profiles (user_id, display_name, preferences) VALUES "
                 "(%lld, 'Person %d', '{\"theme\": \"dark\", \"lang\": \"en\"}');"
                 "INSERT INTO conversations (owner_id, title) VALUES (%lld, 'Trip plans');"
                 "INSERT INTO messages (conversation_id, role, content, metadata) "
                 "SELECT id, 'user', 'Book a table for two at eight', '{\"client\": \"web\"}' "
                 "FROM conversations WHERE owner_id = %lld;"
                 "INSERT INTO memory_facts (user_id, content) VALUES (%lld, 'Prefers window seats');"
                 "INSERT INTO ai_teams (owner_id, name, members) VALUES "
                 "(%lld, 'Helpers', '[{\"name\": \"planner\", \"model\": \"small\"}]');"
                 "INSERT INTO app_settings (user_id, key, value) VALUES (%lld, 'ui.density', '\"compact\"');"
                 "INSERT INTO analytics_events (user_id, name, properties) VALUES "
                 "(%lld, 'login', '{\"method\": \"password\"}')",
                 (long long)uid, u, (long long)uid, (long long)uid, (long long)uid,
                 (long long)uid, (long long)uid, (long long)uid);
        dt_sql(url, sql);
        /* sessions: some used, one revoked */
        for (int k = 0; k < 3; k++) {
            ds_crypto_secret *tok = login(store, uid, "Mozilla/5.0 (Macintosh) Safari/17.0",
                                   k ? "203.0.113.9" : "2001:db8::42", NULL);
            session_needles(nd, tok);
            assert_valid(store, tok, uid);
            if (k == 2)
                ck_assert_ds_ok(ds_session_revoke(store, ds_crypto_secret_data(tok), &err), err);
            ds_crypto_secret_free(tok);
        }
        /* two service connections, written the repository's way */
        for (int k = 0; k < 2; k++) {
            const char *provider = k ? "github" : "google";
            char account[32], scope[64];
            snprintf(account, sizeof account, "ext-%d-%d", u, k);
            ck_assert_ds_ok(ds_crypto_scope_service(provider, account, scope, sizeof scope, &err), err);
            random_token(oauth[u][k][0], 120, k ? "gho_" : "ya29.");
            random_token(oauth[u][k][1], 100, "1//0g");
            ds_crypto_context actx = {sizeof(ds_crypto_context), "service_connections", "access_token", uid, scope};
            ds_crypto_context rctx = {sizeof(ds_crypto_context), "service_connections", "refresh_token", uid, scope};
            uint8_t *aenv, *renv;
            size_t alen, rlen;
            ck_assert_ds_ok(ds_crypto_encrypt(ring1, &actx, oauth[u][k][0],
                                              strlen(oauth[u][k][0]), &aenv, &alen, &err), err);
            ck_assert_ds_ok(ds_crypto_encrypt(ring1, &rctx, oauth[u][k][1],
                                              strlen(oauth[u][k][1]), &renv, &rlen, &err), err);
            ds_sql_param p[] = {ds_sql_param_int64(uid), ds_sql_param_text(provider),
                            ds_sql_param_text(account), ds_sql_param_text("read write"),
                            ds_sql_param_bytea(aenv, alen), ds_sql_param_bytea(renv, rlen),
                            ds_sql_param_text(ds_crypto_active_key_id(ring1))};
            ck_assert_ds_ok(ds_sql_exec_pool(pool,
                "INSERT INTO service_connections (user_id, provider, external_account_id, "
                "scopes, access_token_enc, refresh_token_enc, key_id, token_expires_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '1 hour')",
                p, 7, NULL, &err), err);
            ds_free(aenv);
            ds_free(renv);
            needle_forms(nd, (const unsigned char *)oauth[u][k][0],
                         strlen(oauth[u][k][0]), "OAuth access token");
            needle_forms(nd, (const unsigned char *)oauth[u][k][1],
                         strlen(oauth[u][k][1]), "OAuth refresh token");
        }
    }
    /* a rotation halfway through the platform's life */
    ds_crypto *ring2 = dt_crypto_ring(DT_K2 "," DT_K1);
    ds_crypto_rotate_stats stats = DS_CRYPTO_ROTATE_STATS_INIT;
    ck_assert_ds_ok(ds_crypto_rotate(ring2, pool, NULL, &stats, &err), err);
    ck_assert_int_eq(stats.rotated, USERS * 2);

    char first[256] = "";
    int hits = scan_database(url, nd, first, sizeof first);
    ck_assert_msg(hits == 0, "%d plaintext hit(s), first: %s", hits, first);

    /* the scan itself works: a token leaked into a message is found */
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE messages SET content = content || ' %s' WHERE id = (SELECT min(id) FROM messages)",
             oauth[2][1][0]);
    dt_sql(url, sql);
    hits = scan_database(url, nd, first, sizeof first);
    ck_assert_int_ge(hits, 1);
    ck_assert_ptr_nonnull(strstr(first, "messages.content"));

    /* and the tokens are all still usable with the key ring */
    for (int u = 0; u < USERS; u++) {
        PGconn *c = PQconnectdb(url);
        char q[256];
        snprintf(q, sizeof q, "SELECT access_token_enc, user_id, provider || '/' || "
                              "external_account_id FROM service_connections WHERE "
                              "external_account_id = 'ext-%d-0'", u);
        PGresult *r = PQexecParams(c, q, 0, NULL, NULL, NULL, NULL, 1);
        ck_assert_int_eq(PQntuples(r), 1);
        int64_t uid = (int64_t)be64toh(*(const uint64_t *)PQgetvalue(r, 0, 1));
        ds_crypto_context actx = {sizeof(ds_crypto_context), "service_connections", "access_token", uid, PQgetvalue(r, 0, 2)};
        ds_crypto_secret *plain;
        ck_assert_ds_ok(ds_crypto_decrypt(ring2, &actx, (const uint8_t *)PQgetvalue(r, 0, 0),
                                          (size_t)PQgetlength(r, 0, 0), &plain, &err), err);
        ck_assert_str_eq(ds_crypto_secret_data(plain), oauth[u][0][0]);
        ds_crypto_secret_free(plain);
        PQclear(r);
        PQfinish(c);
    }
    needles_free(nd);
    free(nd);
    ds_session_store_close(store);
    ds_crypto_close(ring1);
    ds_crypto_close(ring2);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- Redis first ------------------------------------------------------------------ */

typedef struct rfixture {
    fixture f;
    ds_redis *redis;
    ds_session_store *store; /* over Redis and PostgreSQL */
} rfixture;

static rfixture rsetup(const char *tag, const ds_session_options *opts) {
    rfixture r;
    r.f = setup(tag, opts);
    r.redis = dt_redis(tag);
    ds_error err = {0};
    ds_status st = ds_session_store_open(r.f.pool, r.f.crypto, r.redis, opts,
                                         &r.store, &err);
    ck_assert_ds_ok(st, err);
    return r;
}

static void rteardown(rfixture *r) {
    ds_session_store_close(r->store);
    dt_redis_flush_prefix(r->redis);
    ds_redis_close(r->redis);
    teardown(&r->f);
}

/* The PTTL of the one "sess:*" key under the handle's prefix. */
static long long session_copy_pttl(ds_redis *r) {
    size_t plen;
    const char *prefix = ds__redis_prefix(r, &plen);
    redisReply *rep = dt_rcmd(r, "SCAN 0 MATCH %ssess:* COUNT 10000", prefix);
    ck_assert_uint_eq(rep->element[1]->elements, 1);
    long long ttl = dt_rint(r, "PTTL %s", rep->element[1]->element[0]->str);
    freeReplyObject(rep);
    return ttl;
}

START_TEST(test_session_redis_copy_lives_at_most_cache_ttl_ms_and_its_expiry) {
    /* "keeps a copy of a live session for at most cache_ttl_ms (never past
     * its expiry)" */
    ds_session_options o = {.size = sizeof(ds_session_options),
                            .cache_ttl_ms = 120000};
    rfixture r = rsetup("srttl", &o);
    int64_t uid = make_user(r.f.url, "ttl@example.com");
    ds_crypto_secret *tok = login(r.store, uid, NULL, NULL, NULL);
    assert_valid(r.store, tok, uid);
    long long ttl = session_copy_pttl(r.redis);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 120000);
    ds_crypto_secret_free(tok);
    rteardown(&r);

    /* a session that expires in 30 s: its copy goes with it, though the
     * cache would keep it 300 s */
    ds_session_options brief = {.size = sizeof(ds_session_options),
                                .idle_ttl_ms = 30000, .touch_interval_ms = 1000,
                                .cache_ttl_ms = 300000};
    r = rsetup("srttl2", &brief);
    uid = make_user(r.f.url, "brief@example.com");
    tok = login(r.store, uid, NULL, NULL, NULL);
    assert_valid(r.store, tok, uid);
    ttl = session_copy_pttl(r.redis);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 30000);
    ds_crypto_secret_free(tok);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_serves_validations) {
    rfixture r = rsetup("srhit", NULL);
    int64_t uid = make_user(r.f.url, "pia@example.com");
    ds_crypto_secret *tok = login(r.store, uid, "agent/1", "192.0.2.5", NULL);
    ck_assert_int_eq(dt_redis_count_keys(r.redis, "sess:*"), 0); /* cached on first use */
    assert_valid(r.store, tok, uid);
    ck_assert_int_eq(dt_redis_count_keys(r.redis, "sess:*"), 1);
    /* the entry is the user's, with a bounded lifetime */
    ck_assert_int_eq(dt_rint(r.redis, "SCARD %su:%lld:keys",
                             ds__redis_prefix(r.redis, NULL), (long long)uid), 1);
    /* served from Redis now: a change made behind the library's back is not
     * seen until the entry goes (the library's own changes clear it) */
    dt_sql(r.f.url, "UPDATE auth_sessions SET user_agent = 'changed in SQL'");
    ds_session *s;
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_validate(r.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_str_eq(s->user_agent, "agent/1");
    ck_assert_str_eq(s->ip, "192.0.2.5");
    ck_assert_int_eq(s->user_id, uid);
    ds_session_free(s);
    /* the PostgreSQL-only store sees the change */
    ck_assert_ds_ok(ds_session_validate(r.f.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_str_eq(s->user_agent, "changed in SQL");
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_revocation_is_immediate) {
    rfixture r = rsetup("srrev", NULL);
    int64_t u1 = make_user(r.f.url, "quinn@example.com");
    int64_t u2 = make_user(r.f.url, "ray@example.com");
    ds_session *s;
    ds_crypto_secret *a = login(r.store, u1, NULL, NULL, NULL);
    ds_crypto_secret *b = login(r.store, u1, NULL, NULL, &s);
    ds_crypto_secret *c = login(r.store, u1, NULL, NULL, NULL);
    ds_crypto_secret *d = login(r.store, u2, NULL, NULL, NULL);
    assert_valid(r.store, a, u1);
    assert_valid(r.store, b, u1);
    assert_valid(r.store, c, u1);
    assert_valid(r.store, d, u2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(r.store, ds_crypto_secret_data(a), &err), err);
    assert_rejected(r.store, a, "revoked");
    ck_assert_ds_ok(ds_session_revoke_id(r.store, u1, s->id, &err), err); /* b */
    assert_rejected(r.store, b, "revoked");
    int64_t n;
    ck_assert_ds_ok(ds_session_revoke_user(r.store, u1, &n, &err), err);
    ck_assert_int_eq(n, 1); /* c */
    assert_rejected(r.store, c, "revoked");
    assert_valid(r.store, d, u2);
    /* and PostgreSQL agrees */
    assert_rejected(r.f.store, a, "revoked");
    assert_rejected(r.f.store, c, "revoked");
    ds_session_free(s);
    ds_crypto_secret_free(a);
    ds_crypto_secret_free(b);
    ds_crypto_secret_free(c);
    ds_crypto_secret_free(d);
    rteardown(&r);
}
END_TEST

/* The one key under "<prefix>sess:*" and its value (malloc'd). */
static char *the_session_copy(ds_redis *r, char **value) {
    size_t plen;
    const char *prefix = ds__redis_prefix(r, &plen);
    redisReply *rep = dt_rcmd(r, "KEYS %ssess:*", prefix);
    ck_assert_uint_eq(rep->elements, 1);
    char *key = strdup(rep->element[0]->str);
    freeReplyObject(rep);
    rep = dt_rcmd(r, "GET %s", key);
    ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
    *value = strdup(rep->str);
    freeReplyObject(rep);
    return key;
}

START_TEST(test_session_redis_copy_holds_no_clear_agent_or_ip) {
    rfixture r = rsetup("srclear", NULL);
    int64_t uid = make_user(r.f.url, "ida@example.com");
    ds_crypto_secret *tok = login(r.store, uid, "Secret-Agent/7.1", "198.51.100.23", NULL);
    assert_valid(r.store, tok, uid);
    char *value;
    char *key = the_session_copy(r.redis, &value);
    ck_assert_ptr_null(strstr(value, "Secret-Agent"));
    ck_assert_ptr_null(strstr(value, "198.51.100"));
    ck_assert_ptr_null(strstr(value, "\"ua\""));
    ck_assert_ptr_null(strstr(value, "\"ip\""));
    ck_assert_ptr_nonnull(strstr(value, "\"x\":\""));
    /* yet a validation served from the copy has them */
    ds_session *s;
    ds_error err = {0};
    dt_sql(r.f.url, "UPDATE auth_sessions SET user_agent = 'changed in SQL'");
    ck_assert_ds_ok(ds_session_validate(r.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_str_eq(s->user_agent, "Secret-Agent/7.1");
    ck_assert_str_eq(s->ip, "198.51.100.23");
    ds_session_free(s);
    /* a sealed part that does not open (damaged, or sealed for another
     * token) is not trusted: PostgreSQL answers */
    char *x = strstr(value, "\"x\":\"") + 5;
    *x = *x == 'A' ? 'B' : 'A';
    freeReplyObject(dt_rcmd(r.redis, "SET %s %s PX 60000", key, value));
    ck_assert_ds_ok(ds_session_validate(r.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_str_eq(s->user_agent, "changed in SQL");
    ds_session_free(s);
    free(value);
    free(key);
    /* a copy in the old clear layout is not trusted either, and is replaced */
    key = the_session_copy(r.redis, &value);
    free(value);
    json_t *old = json_pack("{s:I, s:I, s:I, s:I, s:I, s:s, s:s}", "id", (json_int_t)999999,
                            "uid", (json_int_t)uid, "c", (json_int_t)0, "s",
                            (json_int_t)ds__wall_us(), "e",
                            (json_int_t)(ds__wall_us() + 3600000000LL), "ua", "forged",
                            "ip", "10.9.9.9");
    char *text = json_dumps(old, JSON_COMPACT);
    freeReplyObject(dt_rcmd(r.redis, "SET %s %s PX 60000", key, text));
    free(text);
    json_decref(old);
    ck_assert_ds_ok(ds_session_validate(r.store, ds_crypto_secret_data(tok), NULL, &s, &err), err);
    ck_assert_str_eq(s->user_agent, "changed in SQL");
    ck_assert_int_ne(s->id, 999999);
    ds_session_free(s);
    free(key);
    key = the_session_copy(r.redis, &value);
    ck_assert_ptr_null(strstr(value, "forged"));
    ck_assert_ptr_null(strstr(value, "changed in SQL"));
    free(value);
    free(key);
    ds_crypto_secret_free(tok);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_race_cannot_resurrect) {
    rfixture r = rsetup("srrace", NULL);
    int64_t uid = make_user(r.f.url, "sam@example.com");
    ds_session *s;
    ds_crypto_secret *tok = login(r.store, uid, NULL, NULL, &s);
    assert_valid(r.store, tok, uid);
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(r.store, ds_crypto_secret_data(tok), &err), err);
    /* a validation that read PostgreSQL just before the revocation now
     * writes its copy: the tombstone wins */
    uint8_t raw[32], hash[32];
    ck_assert_ds_ok(ds__session_token_decode(ds_crypto_secret_data(tok), raw, "test", &err), err);
    ck_assert_ds_ok(ds__crypto_session_hash(r.f.crypto, 0, raw, 32, hash, &err), err);
    uint8_t seal[DS__SESSION_SEAL_KEY_BYTES];
    ds__session_seal_key(raw, seal);
    ds__session_cache_put(r.store, hash, seal, s);
    assert_rejected(r.store, tok, "revoked");
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_touch_still_slides) {
    ds_session_options o = {.size = sizeof(ds_session_options), .touch_interval_ms = 300};
    rfixture r = rsetup("srslide", &o);
    int64_t uid = make_user(r.f.url, "tia@example.com");
    ds_session *s;
    ds_crypto_secret *tok = login(r.store, uid, NULL, NULL, &s);
    assert_valid(r.store, tok, uid); /* cached */
    usleep(400 * 1000);
    sql_on_session(r.f.url, s->id,
                   "UPDATE auth_sessions SET expires_at = now() + interval '1 hour', "
                   "last_seen_at = now() - interval '1 hour' WHERE id = %lld");
    assert_valid(r.store, tok, uid); /* the cached copy is due: PostgreSQL touches */
    ck_assert_int_eq(dt_sql_int(r.f.url, "SELECT count(*) FROM auth_sessions WHERE "
                                         "expires_at > now() + interval '13 days'"), 1);
    ds_session_free(s);
    ds_crypto_secret_free(tok);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_down_falls_back_to_postgres) {
    rfixture r = rsetup("srdown", NULL);
    int64_t uid = make_user(r.f.url, "uma@example.com");
    ds_crypto_secret *tok = login(r.store, uid, NULL, NULL, NULL);
    ds_crypto_secret *other = login(r.store, uid, NULL, NULL, NULL);
    assert_valid(r.store, tok, uid);
    assert_valid(r.store, other, uid);
    dt_redis_stop();
    assert_valid(r.store, tok, uid); /* PostgreSQL answers */
    ds_crypto_secret *fresh = login(r.store, uid, NULL, NULL, NULL);
    assert_valid(r.store, fresh, uid);
    /* the revocation is in PostgreSQL, but the cache could not be told: the
     * caller hears it (retryable) */
    ds_error err = {0};
    ds_status st = ds_session_revoke(r.store, ds_crypto_secret_data(tok), &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_ptr_nonnull(strstr(err.message, "revoked in PostgreSQL"));
    assert_rejected(r.store, tok, "revoked");
    int64_t n = -1;
    st = ds_session_revoke_user(r.store, uid, &n, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_int_eq(n, 2);
    dt_redis_start(r.redis);
    /* retried once Redis is back: every entry gets its tombstone */
    ck_assert_ds_ok(ds_session_revoke(r.store, ds_crypto_secret_data(tok), &err), err);
    ck_assert_ds_ok(ds_session_revoke_user(r.store, uid, &n, &err), err);
    ck_assert_int_eq(n, 0);
    assert_rejected(r.store, tok, "revoked");
    assert_rejected(r.store, other, "revoked");
    assert_rejected(r.store, fresh, "revoked");
    ds_crypto_secret_free(tok);
    ds_crypto_secret_free(other);
    ds_crypto_secret_free(fresh);
    rteardown(&r);
}
END_TEST

START_TEST(test_session_redis_erase_user_removes_entries) {
    rfixture r = rsetup("srerase", NULL);
    int64_t u1 = make_user(r.f.url, "val@example.com");
    int64_t u2 = make_user(r.f.url, "wes@example.com");
    ds_crypto_secret *a = login(r.store, u1, NULL, NULL, NULL);
    ds_crypto_secret *b = login(r.store, u1, NULL, NULL, NULL);
    ds_crypto_secret *c = login(r.store, u2, NULL, NULL, NULL);
    assert_valid(r.store, a, u1);
    assert_valid(r.store, b, u1);
    assert_valid(r.store, c, u2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_session_revoke(r.store, ds_crypto_secret_data(b), &err), err);
    ck_assert_int_eq(dt_redis_count_keys(r.redis, "sess:*"), 3); /* 2 entries, 1 tombstone */
    int64_t removed = 0;
    ck_assert_ds_ok(ds_redis_erase_user(r.redis, u1, &removed, &err), err);
    ck_assert_int_ge(removed, 2);
    ck_assert_int_eq(dt_redis_count_keys(r.redis, "sess:*"), 1); /* u2's */
    assert_valid(r.store, c, u2);
    ds_crypto_secret_free(a);
    ds_crypto_secret_free(b);
    ds_crypto_secret_free(c);
    rteardown(&r);
}
END_TEST

typedef struct redis_scan {
    ds_redis *r;
    const needles *nd;
    int hits;
    char *first;
    size_t first_size;
} redis_scan;

/* One key: its name and every value it holds, searched for the needles. */
static void scan_key(void *ud, const char *key, size_t key_len, const char *rel) {
    (void)rel;
    redis_scan *sc = ud;
    redisReply *t = dt_rcmd(sc->r, "TYPE %b", key, key_len);
    const char *fmt = strcmp(t->str, "string") == 0 ? "GET %b"
                      : strcmp(t->str, "set") == 0  ? "SMEMBERS %b"
                      : strcmp(t->str, "hash") == 0 ? "HGETALL %b"
                      : strcmp(t->str, "list") == 0 ? "LRANGE %b 0 -1"
                      : strcmp(t->str, "zset") == 0 ? "ZRANGE %b 0 -1"
                                                    : NULL;
    ck_assert_msg(fmt != NULL, "unexpected key type %s", t->str);
    freeReplyObject(t);
    redisReply *v = dt_rcmd(sc->r, fmt, key, key_len);
    size_t nvals = v->type == REDIS_REPLY_ARRAY ? v->elements : 1;
    for (size_t j = 0; j < nvals + 1; j++) {
        const char *p;
        size_t len;
        if (j == nvals) { /* the key name itself */
            p = key;
            len = key_len;
        } else {
            const redisReply *e = v->type == REDIS_REPLY_ARRAY ? v->element[j] : v;
            p = e->str;
            len = e->str ? e->len : 0;
        }
        for (int n = 0; p && n < sc->nd->n; n++)
            if (memmem(p, len, sc->nd->v[n].p, sc->nd->v[n].n) && sc->hits++ == 0)
                snprintf(sc->first, sc->first_size, "%s in redis key %.*s",
                         sc->nd->v[n].what, (int)key_len, key);
    }
    freeReplyObject(v);
}

/* Every string, set, hash, list and sorted set under the handle's prefix,
 * scanned for the needles. */
static int scan_redis(ds_redis *r, const needles *nd, char *first, size_t first_size) {
    redis_scan sc = {r, nd, 0, first, first_size};
    long long keys = dt_redis_each_key(r, "*", scan_key, &sc);
    ck_assert_int_gt(keys, 0);
    return sc.hits;
}

START_TEST(test_session_redis_holds_no_token) {
    rfixture r = rsetup("srscan", NULL);
    needles *nd = calloc(1, sizeof *nd);
    ds_error err = {0};
    for (int u = 0; u < 4; u++) {
        char email[64];
        snprintf(email, sizeof email, "scan%d@example.com", u);
        int64_t uid = make_user(r.f.url, email);
        for (int k = 0; k < 3; k++) {
            ds_crypto_secret *tok = login(r.store, uid, "Mozilla/5.0", "198.51.100.1", NULL);
            session_needles(nd, tok);
            assert_valid(r.store, tok, uid);
            if (k == 1)
                ck_assert_ds_ok(ds_session_revoke(r.store, ds_crypto_secret_data(tok), &err), err);
            ds_crypto_secret_free(tok);
        }
    }
    char first[256] = "";
    int hits = scan_redis(r.redis, nd, first, sizeof first);
    ck_assert_msg(hits == 0, "%d hit(s) in Redis, first: %s", hits, first);
    /* the scan finds a planted token */
    char key[160];
    snprintf(key, sizeof key, "%splanted", ds__redis_prefix(r.redis, NULL));
    freeReplyObject(dt_rcmd(r.redis, "SET %s %b", key, nd->v[0].p, nd->v[0].n));
    ck_assert_int_ge(scan_redis(r.redis, nd, first, sizeof first), 1);
    needles_free(nd);
    free(nd);
    rteardown(&r);
}
END_TEST

/* ---- out of memory ------------------------------------------------------------------ */

START_TEST(test_session_out_of_memory_is_an_error) {
    fixture f = setup("soom", NULL);
    int64_t uid = make_user(f.url, "oom@example.com");
    ds_error err = {0};
    ds_crypto_secret *keep = login(f.store, uid, NULL, NULL, NULL);
    bool created = false, validated = false;
    for (long n = 1; n < 40 && !(created && validated); n++) {
        if (!created) {
            ds_crypto_secret *tok = (ds_crypto_secret *)1;
            ds_session *s = (ds_session *)1;
            ds__test_fail_alloc_after(n);
            ds_status st = ds_session_create(f.store, uid, "ua", "10.0.0.1", &tok, &s, &err);
            ds__test_fail_alloc_after(0);
            if (st == DS_OK) {
                created = true;
                ds_session_free(s);
                ds_crypto_secret_free(tok);
            } else {
                ck_assert_ds_status(st, DS_ERR_NOMEM, err);
                ck_assert_ptr_null(tok);
                ck_assert_ptr_null(s);
            }
        }
        if (!validated) {
            ds_session *s = (ds_session *)1;
            int64_t who = 5;
            ds__test_fail_alloc_after(n);
            ds_status st = ds_session_validate(f.store, ds_crypto_secret_data(keep), &who, &s, &err);
            ds__test_fail_alloc_after(0);
            if (st == DS_OK) {
                validated = true;
                ck_assert_int_eq(who, uid);
                ds_session_free(s);
            } else {
                ck_assert_ds_status(st, DS_ERR_NOMEM, err);
                ck_assert_ptr_null(s);
                ck_assert_int_eq(who, 0);
            }
        }
    }
    ck_assert(created && validated);
    /* and the store still works */
    assert_valid(f.store, keep, uid);
    ds_crypto_secret_free(keep);
    teardown(&f);
}
END_TEST

/* ---- statement definitions ------------------------------------------------------ */

/* Prepares each statement of `module` on `pg` with its declared parameter
 * types and compares what the server describes with the definition. */
static void check_module_statements(PGconn *pg, const char *module) {
    const ds__stmt_table *t = ds__stmt_registry;
    while (t->module && strcmp(t->module, module) != 0)
        t++;
    ck_assert_msg(t->module != NULL, "module %s is not in the registry", module);
    const ds__stmt_def *defs;
    size_t n = t->get(&defs);
    ck_assert_uint_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        const ds__stmt_def *d = &defs[i];
        PGresult *r = PQprepare(pg, d->name, d->sql, d->nparams, d->param_types);
        ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", d->name,
                      PQerrorMessage(pg));
        PQclear(r);
        r = PQdescribePrepared(pg, d->name);
        ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
        ck_assert_msg(PQnparams(r) == d->nparams, "%s: %d parameters", d->name, PQnparams(r));
        for (int p = 0; p < d->nparams; p++)
            ck_assert_msg(PQparamtype(r, p) == d->param_types[p], "%s: $%d is %u", d->name,
                          p + 1, PQparamtype(r, p));
        int want_cols = d->ncols < 0 ? 0 : d->ncols;
        ck_assert_msg(PQnfields(r) == want_cols, "%s: %d columns", d->name, PQnfields(r));
        for (int c = 0; c < want_cols; c++)
            ck_assert_msg(PQftype(r, c) == d->col_types[c], "%s: column %d is %u",
                          d->name, c, PQftype(r, c));
        PQclear(r);
    }
}

START_TEST(test_session_statements_match_live_schema) {
    char *url = dt_migrated_db("sstmt");
    PGconn *pg = PQconnectdb(url);
    ck_assert_int_eq(PQstatus(pg), CONNECTION_OK);
    check_module_statements(pg, "session");
    check_module_statements(pg, "crypto");
    PQfinish(pg);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------- */

/* A failed statement's status is the mapped one whether or not the caller
 * passes an error out-param (it used to be DS_ERR_DB without). */
START_TEST(test_session_status_does_not_depend_on_err) {
    char *url = dt_migrated_db("sstatus");
    int64_t uid = make_user(url, "status@example.com");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "statement_timeout_ms", 200, &err), err);
    ds_pool *pool;
    ck_assert_ds_ok(ds_pool_open(cfg, &pool, &err), err);
    ds_config_free(cfg);
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ds_session_store *store = store_over(pool, c, NULL);
    /* another session holds the table: every statement on it times out */
    PGconn *locker = dt_connect(url);
    PGresult *lr = PQexec(locker, "BEGIN; LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(lr), PGRES_COMMAND_OK);
    PQclear(lr);
    int64_t revoked = 9;
    ck_assert_int_eq(ds_session_revoke_user(store, uid, &revoked, &err), DS_ERR_TIMEOUT);
    ck_assert_int_eq(ds_session_revoke_user(store, uid, &revoked, NULL), DS_ERR_TIMEOUT);
    ck_assert_int_eq(revoked, 0);
    ds_crypto_secret *tok = NULL;
    ck_assert_int_eq(ds_session_create(store, uid, NULL, NULL, &tok, NULL, NULL),
                     DS_ERR_TIMEOUT);
    ck_assert_ptr_null(tok);
    ck_assert_int_eq(ds_session_purge_expired(store, 0, NULL, NULL), DS_ERR_TIMEOUT);
    lr = PQexec(locker, "ROLLBACK");
    PQclear(lr);
    PQfinish(locker);
    ds_session_store_close(store);
    ds_crypto_close(c);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_session_errors_null_and_out_of_range) {
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_crypto *c = dt_crypto_ring(DT_K1);
    ds_session_store *s = (ds_session_store *)1;
    ds_error err = {0};
    ck_assert_int_eq(ds_session_store_open(NULL, c, NULL, NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(ds_session_store_open(pool, NULL, NULL, NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_store_open(pool, c, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ds_session_options bad[] = {
        {.size = sizeof(ds_session_options), .idle_ttl_ms = -1}, {.size = sizeof(ds_session_options), .max_lifetime_ms = -5}, {.size = sizeof(ds_session_options), .touch_interval_ms = -1},
        {.size = sizeof(ds_session_options), .idle_ttl_ms = 10000, .touch_interval_ms = 10000}, {.size = sizeof(ds_session_options), .cache_ttl_ms = 86401000},
        {.size = sizeof(ds_session_options), .idle_ttl_ms = INT64_C(400) * 365 * 86400 * 1000}, {.size = sizeof(ds_session_options), .idle_ttl_ms = 999},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(ds_session_store_open(pool, c, NULL, &bad[i], &s, &err) == DS_ERR_INVALID,
                      "options %zu accepted", i);
    s = store_over(pool, c, NULL);
    ds_crypto_secret *tok;
    ck_assert_int_eq(ds_session_create(NULL, 1, NULL, NULL, &tok, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_create(s, 1, NULL, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ds_session *sess = (ds_session *)1;
    ck_assert_int_eq(ds_session_create(s, 1, NULL, NULL, NULL, &sess, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(sess);
    ck_assert_int_eq(ds_session_create(s, -1, NULL, NULL, &tok, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_validate(NULL, "x", NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_validate(s, NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_revoke(NULL, "x", &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_revoke(s, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_revoke_id(s, 0, 1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_revoke_id(s, 1, 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_revoke_id(NULL, 1, 1, &err), DS_ERR_INVALID);
    int64_t n = 9;
    ck_assert_int_eq(ds_session_revoke_user(s, 0, &n, &err), DS_ERR_INVALID);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(ds_session_revoke_user(NULL, 1, NULL, &err), DS_ERR_INVALID);
    ds_session **list;
    size_t count;
    ck_assert_int_eq(ds_session_list(s, 0, &list, &count, &err), DS_ERR_INVALID);
    count = 7;
    ck_assert_int_eq(ds_session_list(s, 1, NULL, &count, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(count, 0);
    list = (ds_session **)&n;
    ck_assert_int_eq(ds_session_list(s, 1, &list, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(list);
    ck_assert_int_eq(ds_session_list(NULL, 1, &list, &count, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_purge_expired(s, -1, &n, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_session_purge_expired(NULL, 0, &n, &err), DS_ERR_INVALID);
    ds_session_free(NULL);
    ds_session_list_free(NULL, 3);
    ds_session_store_close(NULL);
    ds_session_store_close(s);
    ds_crypto_close(c);
    ds_pool_close(pool);
}
END_TEST

Suite *ds_test_session_suite(void) {
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("create");
    tcase_add_test(tc, test_session_create_hands_out_token_once);
    tcase_add_test(tc, test_session_create_rejects_bad_input);
    suite_add_tcase(s, tc);
    tc = tcase_create("validate");
    tcase_add_test(tc, test_session_validate_rejects_malformed_tokens);
    tcase_add_test(tc, test_session_validate_returns_the_session);
    tcase_add_test(tc, test_session_validate_slides_expiry);
    tcase_add_test(tc, test_session_touch_is_throttled);
    tcase_add_test(tc, test_session_expired_is_rejected);
    suite_add_tcase(s, tc);
    tc = tcase_create("revoke");
    tcase_add_test(tc, test_session_revoke_one);
    tcase_add_test(tc, test_session_revoke_by_id_only_for_its_user);
    tcase_add_test(tc, test_session_revoke_all_of_a_user);
    tcase_add_test(tc, test_session_list_most_recent_first);
    suite_add_tcase(s, tc);
    tc = tcase_create("purge");
    tcase_add_test(tc, test_session_purge_expired);
    suite_add_tcase(s, tc);
    tc = tcase_create("rotation");
    tcase_add_test(tc, test_session_survives_key_rotation);
    suite_add_tcase(s, tc);
    tc = tcase_create("pooler");
    tcase_add_test(tc, test_session_through_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("dump_scan");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_session_dump_reveals_no_token);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis");
    tcase_set_timeout(tc, 90);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_session_redis_serves_validations);
    tcase_add_test(tc, test_session_redis_copy_lives_at_most_cache_ttl_ms_and_its_expiry);
    tcase_add_test(tc, test_session_redis_revocation_is_immediate);
    tcase_add_test(tc, test_session_redis_race_cannot_resurrect);
    tcase_add_test(tc, test_session_redis_copy_holds_no_clear_agent_or_ip);
    tcase_add_test(tc, test_session_redis_touch_still_slides);
    tcase_add_test(tc, test_session_redis_down_falls_back_to_postgres);
    tcase_add_test(tc, test_session_redis_erase_user_removes_entries);
    tcase_add_test(tc, test_session_redis_holds_no_token);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, test_session_out_of_memory_is_an_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("statements");
    tcase_add_test(tc, test_session_statements_match_live_schema);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_session_errors_null_and_out_of_range);
    tcase_add_test(tc, test_session_status_does_not_depend_on_err);
    suite_add_tcase(s, tc);
    return s;
}
