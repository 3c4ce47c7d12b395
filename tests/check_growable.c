/* Growable caller-allocated structs (docs/abi.md): the one helper every
 * module reads them through, and the public functions that take them:
 * an older (smaller) struct is read with its tail as the defaults, an
 * uninitialised (size 0) or too new (too large) one is refused, and an
 * initialised struct with nothing else set behaves as NULL. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "core/internal.h"
#include "dt_redis.h"
#include "test_util.h"

/* A struct as release 1 had it, and as release 2 grew it. */
typedef struct thing_v1 {
    size_t size;
    int a;
} thing_v1;
typedef struct thing_v2 {
    size_t size;
    int a;
    int64_t added_in_v2; /* zero: the default */
} thing_v2;

#define V2_IN(in, local, err)                                                  \
    ds__growable_in((in), (local), sizeof(thing_v1), sizeof(thing_v2),         \
                    "thing", (err))

START_TEST(test_growable_older_struct_reads_its_tail_as_default) {
    ds_error err = {0};
    thing_v1 old = {sizeof old, 7};
    thing_v2 local;
    memset(&local, 0xab, sizeof local);
    ck_assert_ds_ok(V2_IN(&old, &local, &err), err);
    ck_assert_uint_eq(local.size, sizeof(thing_v1));
    ck_assert_int_eq(local.a, 7);
    ck_assert_int_eq(local.added_in_v2, 0);

    thing_v2 cur = {sizeof cur, 8, 9};
    ck_assert_ds_ok(V2_IN(&cur, &local, &err), err);
    ck_assert_int_eq(local.a, 8);
    ck_assert_int_eq(local.added_in_v2, 9);

    /* NULL: all defaults */
    memset(&local, 0xab, sizeof local);
    ck_assert_ds_ok(V2_IN(NULL, &local, &err), err);
    ck_assert_uint_eq(local.size, sizeof(thing_v2));
    ck_assert_int_eq(local.a, 0);
    ck_assert_int_eq(local.added_in_v2, 0);
}
END_TEST

START_TEST(test_growable_bad_sizes_are_refused_with_a_message) {
    ds_error err = {0};
    thing_v2 local;
    thing_v2 in = {0, 1, 2};
    ck_assert_ds_status(V2_IN(&in, &local, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "thing.size is 0"));
    in.size = sizeof(size_t); /* below release 1 */
    ck_assert_ds_status(V2_IN(&in, &local, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "smaller"));
    in.size = sizeof(thing_v2) + 8; /* a newer header than this library */
    ck_assert_ds_status(V2_IN(&in, &local, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "newer header"));
    in.size = (size_t)-1;
    ck_assert_ds_status(V2_IN(&in, &local, &err), DS_ERR_INVALID, err);
}
END_TEST

START_TEST(test_growable_out_struct_gets_only_what_the_caller_has) {
    ds_error err = {0};
    /* an older caller's struct, followed by bytes that are not its own */
    struct {
        thing_v1 v1;
        unsigned char after[16];
    } buf;
    memset(&buf, 0x5a, sizeof buf);
    buf.v1.size = sizeof(thing_v1);
    ck_assert_ds_ok(ds__growable_out_check(&buf.v1, sizeof(thing_v1),
                                           sizeof(thing_v2), "thing", &err),
                    err);
    ck_assert_int_eq(buf.v1.a, 0);
    thing_v2 local = {sizeof local, 41, 42};
    ds__growable_out(&buf.v1, &local, sizeof local);
    ck_assert_uint_eq(buf.v1.size, sizeof(thing_v1));
    ck_assert_int_eq(buf.v1.a, 41);
    for (size_t i = 0; i < sizeof buf.after; i++)
        ck_assert_uint_eq(buf.after[i], 0x5a);
    thing_v1 zero = {0, 3};
    ck_assert_ds_status(ds__growable_out_check(&zero, sizeof(thing_v1),
                                               sizeof(thing_v2), "thing", &err),
                        DS_ERR_INVALID, err);
    ck_assert_int_eq(zero.a, 3); /* a refused struct is left alone */
}
END_TEST

START_TEST(test_growable_array_steps_by_the_callers_size) {
    ds_error err = {0};
    thing_v1 old[3] = {{sizeof(thing_v1), 1}, {sizeof(thing_v1), 2},
                       {sizeof(thing_v1), 3}};
    thing_v2 *copy = NULL;
    ck_assert_ds_ok(ds__growable_array(old, 3, sizeof(thing_v1),
                                       sizeof(thing_v2), "thing",
                                       (void **)&copy, &err),
                    err);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(copy[i].a, i + 1);
        ck_assert_int_eq(copy[i].added_in_v2, 0);
    }
    ds__free(copy);
    old[2].size = 0;
    ck_assert_ds_status(ds__growable_array(old, 3, sizeof(thing_v1),
                                           sizeof(thing_v2), "thing",
                                           (void **)&copy, &err),
                        DS_ERR_INVALID, err);
    ck_assert_ptr_null(copy);
    ck_assert_ptr_nonnull(strstr(err.message, "thing[2].size"));
}
END_TEST

/* ---- the public structs ------------------------------------------------------ */

/* Sets the leading size of a caller's struct. */
#define WITH_SIZE(s, n) ((s).size = (n), &(s))
#define HUGE_SIZE ((size_t)1 << 20)

/* `call` (an expression using `var`) with var.size 0 and far too large is
 * DS_ERR_INVALID naming the type; with the initialiser's size it is not. */
#define CHECK_SIZES(T, var, call, want_ok)                                     \
    do {                                                                       \
        ds_error e_ = {0};                                                     \
        var.size = 0;                                                          \
        ck_assert_ds_status((call), DS_ERR_INVALID, e_);                       \
        ck_assert_msg(strstr(e_.message, #T ".size") != NULL, "%s: %s", #T,    \
                      e_.message);                                             \
        var.size = HUGE_SIZE;                                                  \
        ck_assert_ds_status((call), DS_ERR_INVALID, e_);                       \
        ck_assert_msg(strstr(e_.message, "newer header") != NULL, "%s: %s",    \
                      #T, e_.message);                                         \
        var.size = sizeof(T);                                                  \
        ck_assert_ds_status((call), (want_ok), e_);                            \
    } while (0)

static ds_status noop_tx(ds_conn *conn, void *ud, ds_error *err) {
    (void)conn, (void)ud, (void)err;
    return DS_OK;
}

START_TEST(test_growable_public_structs_check_their_size) {
    ds_error err = {0};
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 2);
    ds_redis *redis = dt_redis("growable");

    ds_tx_options tx = DS_TX_OPTIONS_INIT;
    CHECK_SIZES(ds_tx_options, tx, ds_tx_run(pool, &tx, noop_tx, NULL, &e_), DS_OK);
    ds_pool_stats ps = DS_POOL_STATS_INIT;
    CHECK_SIZES(ds_pool_stats, ps, ds_pool_stats_get(pool, &ps, &e_), DS_OK);
    ds_redis_stats rs = DS_REDIS_STATS_INIT;
    CHECK_SIZES(ds_redis_stats, rs, ds_redis_stats_get(redis, &rs, &e_), DS_OK);
    ds_migrate_options mo = DS_MIGRATE_OPTIONS_INIT;
    ds_migrate_lint_report *lr = NULL;
    CHECK_SIZES(ds_migrate_options, mo, ds_migrate_lint(&mo, NULL, 0, &lr, &e_), DS_OK);
    ds_migrate_lint_report_free(lr);

    ds_cache_options co = DS_CACHE_OPTIONS_INIT;
    co.name = "growable";
    ds_cache *cache = NULL;
    CHECK_SIZES(ds_cache_options, co, ds_cache_open(redis, &co, &cache, &e_), DS_OK);
    ds_cache_stats cs = DS_CACHE_STATS_INIT;
    CHECK_SIZES(ds_cache_stats, cs, ds_cache_stats_get(cache, &cs, &e_), DS_OK);
    json_t *v = json_integer(1);
    ds_cache_entry_options ce = DS_CACHE_ENTRY_OPTIONS_INIT;
    CHECK_SIZES(ds_cache_entry_options, ce, ds_cache_set(cache, "k", v, &ce, &e_), DS_OK);
    json_decref(v);
    ds_cache_close(cache);

    ds_ratelimit_options ro = DS_RATELIMIT_OPTIONS_INIT;
    ro.name = "growable";
    ro.limit = 10;
    ro.period_ms = 1000;
    ds_ratelimit *rl = NULL;
    CHECK_SIZES(ds_ratelimit_options, ro, ds_ratelimit_open(redis, &ro, &rl, &e_), DS_OK);
    ds_ratelimit_result rr = DS_RATELIMIT_RESULT_INIT;
    CHECK_SIZES(ds_ratelimit_result, rr, ds_ratelimit_check(rl, "k", &rr, &e_), DS_OK);
    ck_assert(rr.allowed);
    ds_ratelimit_stats rst = DS_RATELIMIT_STATS_INIT;
    CHECK_SIZES(ds_ratelimit_stats, rst, ds_ratelimit_stats_get(rl, &rst, &e_), DS_OK);
    ck_assert_uint_eq(rst.checks, 1);
    ds_ratelimit_close(rl);

    ds_queue_options qo = DS_QUEUE_OPTIONS_INIT;
    qo.name = "growable";
    ds_queue *q = NULL;
    CHECK_SIZES(ds_queue_options, qo, ds_queue_open(redis, &qo, &q, &e_), DS_OK);
    ds_queue_counts qc = DS_QUEUE_COUNTS_INIT;
    CHECK_SIZES(ds_queue_counts, qc, ds_queue_counts_get(q, &qc, &e_), DS_OK);
    ds_queue_close(q);

    ds_presence_options po = DS_PRESENCE_OPTIONS_INIT;
    ds_presence *pr = NULL;
    CHECK_SIZES(ds_presence_options, po, ds_presence_open(redis, &po, &pr, &e_), DS_OK);
    ds_presence_close(pr);

    ds_metrics_sources ms = DS_METRICS_SOURCES_INIT;
    ms.pool = pool;
    char *text = NULL;
    CHECK_SIZES(ds_metrics_sources, ms, ds_metrics_render(&ms, &text, NULL, &e_), DS_OK);
    ds_free(text);

    ds_crypto_secret *key;
    ck_assert_ds_ok(ds_crypto_generate_key("g1", &key, &err), err);
    ds_crypto *crypto;
    ck_assert_ds_ok(ds_crypto_open_keys(ds_crypto_secret_data(key), &crypto, &err), err);
    ds_crypto_secret_free(key);
    ds_crypto_context ctx = DS_CRYPTO_CONTEXT_INIT;
    ctx.table = "t";
    ctx.field = "f";
    uint8_t *env = NULL;
    size_t env_len;
    CHECK_SIZES(ds_crypto_context, ctx,
                ds_crypto_encrypt(crypto, &ctx, "x", 1, &env, &env_len, &e_), DS_OK);
    ds_free(env);
    ds_session_options so = DS_SESSION_OPTIONS_INIT;
    ds_session_store *store = NULL;
    CHECK_SIZES(ds_session_options, so,
                ds_session_store_open(pool, crypto, NULL, &so, &store, &e_), DS_OK);
    ds_session_store_close(store);
    ds_crypto_close(crypto);

    ds_redis_close(redis);
    ds_pool_close(pool);
}
END_TEST

/* The repository inputs need the platform schema. */
START_TEST(test_growable_repository_inputs_check_their_size) {
    ds_error err = {0};
    char *db = dt_migrated_db("growable");
    ds_pool *pool = dt_pool(db, 1, 2);
    ds_profile_fields pf = DS_PROFILE_FIELDS_INIT;
    pf.display_name = "Ada";
    ds_user *u = NULL;
    CHECK_SIZES(ds_profile_fields, pf,
                ds_user_create(pool, "g@example.com", &pf, &u, &e_), DS_OK);
    ck_assert_str_eq(u->display_name, "Ada");
    ds_conversation *c;
    ck_assert_ds_ok(ds_conversation_create(pool, u->id, "t", &c, &err), err);
    ds_message_new m = DS_MESSAGE_NEW_INIT;
    m.content = "hi";
    CHECK_SIZES(ds_message_new, m, ds_message_append(pool, c->id, &m, NULL, &e_), DS_OK);
    /* in an array every element carries the same size */
    ds_message_new batch[2] = {DS_MESSAGE_NEW_INIT, DS_MESSAGE_NEW_INIT};
    batch[0].content = batch[1].content = "b";
    batch[1].size = 0;
    ck_assert_ds_status(ds_message_append_batch(pool, c->id, batch, 2, NULL, &err),
                        DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds_message_new[1].size"));
    batch[1].size = sizeof batch[1];
    ck_assert_ds_ok(ds_message_append_batch(pool, c->id, batch, 2, NULL, &err), err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM messages"), 3);
    ds_event ev = DS_EVENT_INIT;
    ev.name = "growable";
    CHECK_SIZES(ds_event, ev, ds_event_record(pool, &ev, &e_), DS_OK);
    ds_event evs[2] = {DS_EVENT_INIT, DS_EVENT_INIT};
    evs[0].name = evs[1].name = "batch";
    evs[0].size = 0;
    ck_assert_ds_status(ds_event_record_batch(pool, evs, 2, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds_event.size is 0"));
    evs[0].size = sizeof evs[0];
    ck_assert_ds_ok(ds_event_record_batch(pool, evs, 2, &err), err);
    ck_assert_int_eq(dt_sql_int(db, "SELECT count(*) FROM analytics_events"), 3);
    ds_conversation_free(c);
    ds_user_free(u);
    ds_pool_close(pool);
    dt_drop_db(db);
    free(db);
}
END_TEST

/* ---- zero means default ------------------------------------------------------- */

static ds_status serialization_failure(ds_conn *conn, void *ud, ds_error *err) {
    (void)conn;
    ++*(int *)ud;
    ds__error_set(err, DS_ERR_DB, "could not serialize access");
    ds__error_set_sqlstate(err, "40001");
    return DS_ERR_DB;
}

static int tx_attempts(ds_pool *pool, const ds_tx_options *opts) {
    int calls = 0;
    ds_error err = {0};
    ds_status st = ds_tx_run(pool, opts, serialization_failure, &calls, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    return calls;
}

START_TEST(test_growable_tx_zero_retries_means_the_pools) {
    ds_config *cfg = dt_config(dt_env("DATABASE_URL"), 1, 2);
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set(cfg, "tx_max_retries", "2", &err), err);
    ds_pool *pool;
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    ds_tx_options o = DS_TX_OPTIONS_INIT;
    ck_assert_int_eq(tx_attempts(pool, NULL), 3);
    ck_assert_int_eq(tx_attempts(pool, &o), 3); /* {0} == NULL */
    o.max_retries = 1;
    ck_assert_int_eq(tx_attempts(pool, &o), 2);
    o.max_retries = DS_TX_NO_RETRY;
    ck_assert_int_eq(tx_attempts(pool, &o), 1);
    o.max_retries = -2;
    int calls = 0;
    st = ds_tx_run(pool, &o, serialization_failure, &calls, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_int_eq(calls, 0);
    ds_pool_close(pool);
}
END_TEST

Suite *ds_test_growable_suite(void) {
    Suite *s = suite_create("growable");
    TCase *helper = tcase_create("helper");
    tcase_add_test(helper, test_growable_older_struct_reads_its_tail_as_default);
    tcase_add_test(helper, test_growable_bad_sizes_are_refused_with_a_message);
    tcase_add_test(helper, test_growable_out_struct_gets_only_what_the_caller_has);
    tcase_add_test(helper, test_growable_array_steps_by_the_callers_size);
    suite_add_tcase(s, helper);
    TCase *pub = tcase_create("public");
    tcase_add_test(pub, test_growable_public_structs_check_their_size);
    tcase_add_test(pub, test_growable_repository_inputs_check_their_size);
    tcase_add_test(pub, test_growable_tx_zero_retries_means_the_pools);
    suite_add_tcase(s, pub);
    return s;
}
