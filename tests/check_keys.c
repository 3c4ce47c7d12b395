/* Redis data that ends: after every module that writes to Redis has run
 * (cache, rate limits, presence, queue, sessions, per-user key sets), every
 * key under the handle's prefix has a TTL, except the two that
 * docs/formats.md lists as living without one (a queue's stream and its
 * delayed set, which hold live jobs). */
#include <stdlib.h>
#include <string.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"

static ds_status load_json(void *ud, const char *key, json_t **out,
                           ds_error *err) {
    (void)ud;
    (void)err;
    if (strcmp(key, "missing") == 0)
        return DS_ERR_NOT_FOUND;
    *out = json_pack("{s:s, s:f}", "key", key, "temp", 0.7);
    return DS_OK;
}

static void exercise_cache(ds_redis *r) {
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&o);
    o.name = "audit";
    o.stale_ttl_ms = 5000;
    ds_cache *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_cache_open(r, &o, &c, &err), err);
    const char *tags[] = {"team:1", "plan:pro"};
    ds_cache_entry_options e = {sizeof(ds_cache_entry_options), tags, 2, 77, 0};
    json_t *v = NULL;
    ck_assert_ds_ok(ds_cache_get_or_load(c, "k1", &e, load_json, NULL, &v, &err),
                    err);
    json_decref(v);
    ck_assert_ds_status(
        ds_cache_get_or_load(c, "missing", NULL, load_json, NULL, &v, &err),
        DS_ERR_NOT_FOUND, err);
    json_t *nv = json_pack("{s:i}", "n", 1);
    ck_assert_ds_ok(ds_cache_set(c, "k2", nv, &e, &err), err);
    json_decref(nv);
    ds_cache_close(c);
}

static void exercise_ratelimit(ds_redis *r) {
    const struct {
        const char *name;
        ds_ratelimit_algorithm algo;
        int64_t limit;
    } kinds[] = {{"gcra", DS_RATELIMIT_GCRA, 10},
                 {"log", DS_RATELIMIT_SLIDING_WINDOW, 10},
                 {"buckets", DS_RATELIMIT_SLIDING_WINDOW, 5000}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        ds_ratelimit_options o = {sizeof(ds_ratelimit_options), kinds[i].name, kinds[i].algo, kinds[i].limit,
                                  60000, 0, DS_RATELIMIT_FAIL_CLOSED};
        ds_ratelimit *rl;
        ds_error err = {0};
        ck_assert_ds_ok(ds_ratelimit_open(r, &o, &rl, &err), err);
        ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
        for (int k = 0; k < 3; k++)
            ck_assert_ds_ok(ds_ratelimit_check(rl, "user:1", &res, &err), err);
        ds_ratelimit_close(rl);
    }
}

static void exercise_presence(ds_redis *r) {
    ds_presence *p;
    ds_error err = {0};
    ck_assert_ds_ok(ds_presence_open(r, NULL, &p, &err), err);
    ck_assert_ds_ok(ds_presence_set_online(p, 900, 77, &err), err);
    ck_assert_ds_ok(ds_presence_set_online(p, 900, 78, &err), err);
    ck_assert_ds_ok(ds_presence_set_typing(p, 900, 77, true, &err), err);
    ds_presence_close(p);
}

static void exercise_queue(ds_redis *r) {
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    o.name = "audit";
    o.max_attempts = 1;
    ds_queue *q;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_open(r, &o, &q, &err), err);
    json_t *p = json_pack("{s:i}", "n", 1);
    ck_assert_ds_ok(ds_queue_enqueue(q, p, 0, NULL, &err), err);
    ck_assert_ds_ok(ds_queue_enqueue(q, p, 3600000, NULL, &err), err);
    ck_assert_ds_ok(ds_queue_enqueue_for_user(q, 77, p, 0, NULL, &err), err);
    json_decref(p);
    ds_queue_job *job;
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_ptr_nonnull(job);
    ck_assert_ds_ok(ds_queue_fail(q, job, "audit", NULL, &err), err); /* dead */
    ds_queue_job_free(job);
    ds_queue_close(q);
}

static void exercise_sessions(ds_redis *r, const char *url) {
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_crypto *crypto;
    ds_error err = {0};
    ck_assert_ds_ok(ds_crypto_open_keys(
                        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                        &crypto, &err),
                    err);
    ds_session_store *store;
    ck_assert_ds_ok(ds_session_store_open(pool, crypto, r, NULL, &store, &err),
                    err);
    long long uid = dt_sql_int(url, "INSERT INTO users (email) VALUES "
                                    "('audit@example.com') RETURNING id");
    ds_crypto_secret *a, *b;
    ck_assert_ds_ok(ds_session_create(store, uid, "ua", "192.0.2.1", &a, NULL, &err),
                    err);
    ck_assert_ds_ok(ds_session_create(store, uid, NULL, NULL, &b, NULL, &err), err);
    int64_t who;
    ck_assert_ds_ok(ds_session_validate(store, ds_crypto_secret_data(a), &who, NULL, &err),
                    err);
    ck_assert_ds_ok(ds_session_validate(store, ds_crypto_secret_data(b), &who, NULL, &err),
                    err);
    ck_assert_ds_ok(ds_session_revoke(store, ds_crypto_secret_data(b), &err), err);
    ds_crypto_secret_free(a);
    ds_crypto_secret_free(b);
    ds_session_store_close(store);
    ds_crypto_close(crypto);
    ds_pool_close(pool);
}

/* The keys documented without a TTL, and a prefix of each kind of key the
 * exercises above write. */
static const char *const persistent[] = {"q:audit:s", "q:audit:d"};
static const char *const wanted[] = {"c:", "cl:", "ct:", "rl:gcra:", "rl:log:",
                                     "rl:buckets:", "p:on:", "p:ty:", "q:audit:dead",
                                     "q:audit:cur", "sess:", "u:"};

typedef struct key_audit {
    ds_redis *r;
    int kinds; /* bit k: a key starting with wanted[k] was seen */
} key_audit;

/* One key: a TTL unless it is documented without one. */
static void audit_key(void *ud, const char *key, size_t len, const char *rel) {
    (void)len;
    key_audit *a = ud;
    bool keep = false;
    for (size_t k = 0; k < sizeof persistent / sizeof persistent[0]; k++)
        keep |= strcmp(rel, persistent[k]) == 0;
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++)
        if (strncmp(rel, wanted[k], strlen(wanted[k])) == 0)
            a->kinds |= 1 << k;
    long long ttl = dt_rint(a->r, "PTTL %s", key);
    if (keep)
        ck_assert_msg(ttl == -1, "%s: documented without a TTL, has %lld", rel, ttl);
    else
        ck_assert_msg(ttl > 0, "%s has no TTL (PTTL %lld)", rel, ttl);
}

START_TEST(test_keys_every_key_expires) {
    char *url = dt_migrated_db("keys");
    ds_redis *r = dt_redis("keys");
    exercise_cache(r);
    exercise_ratelimit(r);
    exercise_presence(r);
    exercise_queue(r);
    exercise_sessions(r, url);

    key_audit audit = {r, 0};
    long long seen = dt_redis_each_key(r, "*", audit_key, &audit);
    ck_assert_int_gt(seen, 12);
    /* every kind of key was made, so the audit saw each one; the load lock
     * is deleted after its load, so it may be absent */
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++)
        if (strcmp(wanted[k], "cl:") != 0)
            ck_assert_msg(audit.kinds & (1 << k), "no key %s* was written",
                          wanted[k]);
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_keys_suite(void) {
    Suite *s = suite_create("keys");
    TCase *tc = tcase_create("ttl");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_keys_every_key_expires);
    suite_add_tcase(s, tc);
    return s;
}
