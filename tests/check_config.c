/* Configuration: defaults, names, environment, validation, secrecy. */
#include <stdlib.h>
#include <string.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "test_util.h"

/* 32 bytes of 0x01..0x20 in standard base64, and another key. */
#define KEY_A "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

static ds_config *new_config(void) {
    ds_config *cfg;
    ds_error err = {0};
    ds_status st = ds_config_new(&cfg, &err);
    ck_assert_ds_ok(st, err);
    return cfg;
}

START_TEST(test_config_defaults) {
    ds_config *cfg = new_config();
    int64_t v;
    ds_error err = {0};
    ck_assert_int_eq(ds_config_get_int(cfg, "pool_min", &v, &err), DS_OK);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(ds_config_get_int(cfg, "DS_POOL_MAX", &v, &err), DS_OK);
    ck_assert_int_eq(v, 10);
    ck_assert_int_eq(ds_config_get_int(cfg, "acquire_timeout_ms", &v, &err), DS_OK);
    ck_assert_int_eq(v, 5000);
    ck_assert_int_eq(ds_config_get_int(cfg, "embedding_dim", &v, &err), DS_OK);
    ck_assert_int_eq(v, 384);
    char buf[64];
    ck_assert_int_eq(ds_config_get_str(cfg, "statement_mode", buf, sizeof buf, &err), DS_OK);
    ck_assert_str_eq(buf, "prepared");
    ck_assert_int_eq(ds_config_get_str(cfg, "database_url", buf, sizeof buf, &err), DS_OK);
    ck_assert_str_eq(buf, "");
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_config_set_by_either_name) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    int64_t v;
    ck_assert_int_eq(ds_config_set(cfg, "pool_max", "32", &err), DS_OK);
    ck_assert_int_eq(ds_config_get_int(cfg, "pool_max", &v, &err), DS_OK);
    ck_assert_int_eq(v, 32);
    ck_assert_int_eq(ds_config_set(cfg, "ds_pool_max", "7", &err), DS_OK);
    ck_assert_int_eq(ds_config_get_int(cfg, "POOL_MAX", &v, &err), DS_OK);
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(ds_config_set(cfg, "DS_POOL_MAX", NULL, &err), DS_OK);
    ck_assert_int_eq(ds_config_get_int(cfg, "pool_max", &v, &err), DS_OK);
    ck_assert_int_eq(v, 10); /* reset to default */
    ck_assert_int_eq(ds_config_set(cfg, "statement_mode", "POOLER", &err), DS_OK);
    ck_assert_int_eq(cfg->statement_mode, DS_STMT_POOLER);
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_config_bad_values_name_the_variable) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "pool_max", "lots", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_POOL_MAX"));
    st = ds_config_set(cfg, "pool_max", "0", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    st = ds_config_set(cfg, "acquire_timeout_ms", "-1", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_ACQUIRE_TIMEOUT_MS"));
    st = ds_config_set(cfg, "statement_mode", "session", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_STATEMENT_MODE"));
    st = ds_config_set(cfg, "no_such_setting", "1", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    st = ds_config_set(cfg, "redis_url", "http://example.com", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "REDIS_URL"));
    st = ds_config_set_int(cfg, "DS_POOL_MIN", 20000, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    st = ds_config_set_int(cfg, "database_url", 1, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    /* a failed set leaves the old value */
    int64_t v;
    ck_assert_int_eq(ds_config_get_int(cfg, "pool_max", &v, &err), DS_OK);
    ck_assert_int_eq(v, 10);
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_config_from_env) {
    setenv("DATABASE_URL", "postgresql://app:pw@db.internal:5432/app", 1);
    setenv("DS_POOL_MIN", "2", 1);
    setenv("DS_POOL_MAX", "12", 1);
    setenv("DS_STATEMENT_TIMEOUT_MS", "2500", 1);
    setenv("DS_TOKEN_KEYS", "k1:" KEY_A ",k0:" KEY_B, 1);
    ds_config *cfg;
    ds_error err = {0};
    ds_status st = ds_config_from_env(&cfg, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(cfg->pool_min, 2);
    ck_assert_int_eq(cfg->pool_max, 12);
    ck_assert_int_eq(cfg->statement_timeout_ms, 2500);
    ck_assert_str_eq(cfg->database_url, "postgresql://app:pw@db.internal:5432/app");
    char buf[128];
    st = ds_config_get_str(cfg, "DATABASE_URL", buf, sizeof buf, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(buf, "postgresql://app:***@db.internal:5432/app");
    st = ds_config_get_str(cfg, "token_keys", buf, sizeof buf, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_config *copy;
    st = ds_config_clone(cfg, &copy, &err);
    ck_assert_ds_ok(st, err);
    ds_config_free(cfg);
    ck_assert_str_eq(copy->token_keys, "k1:" KEY_A ",k0:" KEY_B);
    ck_assert_int_eq(copy->pool_max, 12);
    ds_config_free(copy);

    setenv("DS_POOL_MIN", "two", 1);
    st = ds_config_from_env(&cfg, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_null(cfg);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_POOL_MIN"));
}
END_TEST

START_TEST(test_config_errors_never_show_passwords) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    const char *bad[] = {
        "postgresql://app:Sup3rS3cretPW@db:notaport/app",
        "postgresql://app:Sup3rS3cretPW%zz@db/app",
        "postgresql://app:Sup3rS3cretPW@db/app?nosuchoption=1",
        "host=db password=Sup3rS3cretPW nosuchkey=1",
        /* libpq's messages for these quote the whole URI or the token */
        "postgresql://app:Sup3rS3cretPW@[::1/app",
        "postgresql://[::1]x/app?password=Sup3rS3cretPW",
        "postgresql://db/app?password=Sup3rS3cretPW%zz",
        "postgresql://db/app?password=Sup3rS3cretPW=x",
        "host=db password='Sup3rS3cretPW",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_status st = ds_config_set(cfg, "DATABASE_URL", bad[i], &err);
        ck_assert_ds_status(st, DS_ERR_CONFIG, err);
        ck_assert_ptr_nonnull(strstr(err.message, "DATABASE_URL"));
        ck_assert_msg(strstr(err.message, "Sup3rS3cret") == NULL,
                      "password leaked: %s", err.message);
    }
    ds_status st = ds_config_set(cfg, "DATABASE_REPLICA_URLS",
                                 "postgresql://r:Sup3rS3cretPW@r1/app,"
                                 "postgresql://r:Sup3rS3cretPW@r2:bad/app",
                                 &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_null(strstr(err.message, "Sup3rS3cret"));
    ds_config_free(cfg);
}
END_TEST

/* Reads `name` back after setting `value`: the secret must be gone, the
 * shown text must equal `want`, and it must itself be a valid setting that
 * reads back unchanged (so it is still useful to a person or a log). */
static void assert_shown(const char *name, const char *value,
                         const char *secret, const char *want) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, name, value, &err);
    ck_assert_msg(st == DS_OK, "'%s' rejected: %s", value, err.message);
    char buf[512];
    st = ds_config_get_str(cfg, name, buf, sizeof buf, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_msg(strstr(buf, secret) == NULL, "secret shown: %s", buf);
    ck_assert_str_eq(buf, want);
    char again[512];
    st = ds_config_set(cfg, name, buf, &err);
    ck_assert_msg(st == DS_OK, "shown value '%s' rejected: %s", buf,
                  err.message);
    st = ds_config_get_str(cfg, name, again, sizeof again, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_str_eq(again, want);
    ds_config_free(cfg);
}

START_TEST(test_config_database_url_redacts_uri_forms) {
    assert_shown("database_url",
                 "postgresql://app:s3cretPW@db.example.com:5432/app?sslmode=require",
                 "s3cret", "postgresql://app:***@db.example.com:5432/app?sslmode=require");
    /* the password in the query, and percent-encoded */
    assert_shown("database_url",
                 "postgresql://db.example.com/app?user=app&password=s3cretPW&sslmode=require",
                 "s3cret", "postgresql://app:***@db.example.com/app?sslmode=require");
    assert_shown("database_url", "postgres://app:s3cret%40P%2FW@db/app", "s3cret",
                 "postgres://app:***@db/app");
    assert_shown("database_url", "postgresql://:s3cretPW@db", "s3cret",
                 "postgresql://:***@db");
    /* in the userinfo and again in the query: libpq takes the last */
    assert_shown("database_url",
                 "postgresql://app:firstPW@db/app?password=s3cretPW", "PW",
                 "postgresql://app:***@db/app");
    /* multi-host, IPv6 and a socket directory keep their shape */
    assert_shown("database_url",
                 "postgresql://app:s3cretPW@h1:5432,h2:5433/app"
                 "?target_session_attrs=read-write",
                 "s3cret",
                 "postgresql://app:***@h1:5432,h2:5433/app"
                 "?target_session_attrs=read-write");
    assert_shown("database_url", "postgresql://app:s3cretPW@[::1]:5432/app",
                 "s3cret", "postgresql://app:***@[::1]:5432/app");
    assert_shown("database_url",
                 "postgresql://app:s3cretPW@%2Fvar%2Frun%2Fpostgresql/app",
                 "s3cret", "postgresql://app:***@%2Fvar%2Frun%2Fpostgresql/app");
    assert_shown("database_url", "postgresql://app:s3cretPW@h1,h2:5433/app",
                 "s3cret", "postgresql://app:***@h1,h2:5433/app");
    /* hosts and ports that do not pair up go to the query */
    assert_shown("database_url",
                 "postgresql://app:s3cretPW@h1,h2/app?port=5432,5433,5434",
                 "s3cret",
                 "postgresql://app:***@/app?host=h1,h2&port=5432,5433,5434");
    /* the key passphrase is hidden too */
    assert_shown("database_url",
                 "postgresql://app@db/app?sslpassword=s3cretKEY&sslmode=verify-full",
                 "s3cret",
                 "postgresql://app@db/app?sslmode=verify-full&sslpassword=***");
}
END_TEST

START_TEST(test_config_database_url_redacts_conninfo_forms) {
    assert_shown("database_url", "host=db user=app password=s3cretPW dbname=x",
                 "s3cret", "host=db user=app password=*** dbname=x");
    /* white space around '=' (the form the old scanner missed) */
    assert_shown("database_url", "host=db user=app password = s3cretPW dbname=x",
                 "s3cret", "host=db user=app password=*** dbname=x");
    assert_shown("database_url", "host = db\tpassword\t=\ts3cretPW  dbname =x",
                 "s3cret", "host=db password=*** dbname=x");
    /* quoted, with escaped quotes and backslashes, and escaped unquoted */
    assert_shown("database_url", "host=db password='s3cret PW' dbname=x",
                 "s3cret", "host=db password=*** dbname=x");
    assert_shown("database_url",
                 "host=db password='s3cret\\' PW\\\\ x' dbname=x", "s3cret",
                 "host=db password=*** dbname=x");
    assert_shown("database_url", "host=db password=s3cret\\ PW dbname=x",
                 "s3cret", "host=db password=*** dbname=x");
    assert_shown("database_url", "password=''", "''", "password=***");
    /* twice: both copies are gone, and only one mask is shown */
    assert_shown("database_url",
                 "password=firstPW host=db password=s3cretPW dbname=x", "PW",
                 "host=db password=*** dbname=x");
    assert_shown("database_url", "host=db sslpassword='s3cret KEY' sslmode=require",
                 "s3cret", "host=db sslmode=require sslpassword=***");
    /* other values keep their quoting so they still mean the same */
    assert_shown("database_url",
                 "host=db password=s3cretPW application_name='my app' "
                 "options='-c search_path=it\\'s'",
                 "s3cret",
                 "host=db password=*** options='-c search_path=it\\'s' "
                 "application_name='my app'");
    assert_shown("database_url", "host=db dbname=x", "PW", "host=db dbname=x");
}
END_TEST

START_TEST(test_config_replica_and_redis_urls_redacted) {
    assert_shown("database_replica_urls",
                 "postgresql://r:s3cretPW@r1/app, host=r2 password = s3cretPW "
                 "dbname=app,postgres://r:s3cretPW@r3,r4/app",
                 "s3cret",
                 "postgresql://r:***@r1/app,host=r2 password=*** dbname=app,"
                 "postgres://r:***@r3,r4/app");
    assert_shown("redis_url", "rediss://:p@ss:w0rd@cache:6380/0", "w0rd",
                 "rediss://:***@cache:6380");
    assert_shown("redis_url", "redis://default:s3cret%2FPW@cache/2", "s3cret",
                 "redis://default:***@cache:6379/2");
    assert_shown("redis_url", "redis://[::1]:6380", "***",
                 "redis://[::1]:6380");
    assert_shown("redis_url", "unix://app:s3cretPW@/run/redis.sock?db=3",
                 "s3cret", "unix://app:***@/run/redis.sock?db=3");
}
END_TEST

START_TEST(test_config_redacted_value_needs_room) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    ds_status st = ds_config_set(cfg, "database_url",
                                 "host=db password=s3cretPW dbname=x", &err);
    ck_assert_ds_ok(st, err);
    char small[16];
    memset(small, 'z', sizeof small);
    st = ds_config_get_str(cfg, "database_url", small, sizeof small, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "buffer too small"));
    for (size_t i = 0; i + 6 <= sizeof small; i++)
        ck_assert_msg(memcmp(small + i, "s3cret", 6) != 0, "secret in buffer");
    ck_assert_ptr_null(strstr(err.message, "s3cret"));
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_config_token_keys_validated) {
    ds_config *cfg = new_config();
    ds_error err = {0};
    ck_assert_int_eq(ds_config_set(cfg, "DS_TOKEN_KEYS", "k1:" KEY_A, &err), DS_OK);
    /* url-safe and unpadded forms are accepted too */
    ck_assert_int_eq(ds_config_set(cfg, "DS_TOKEN_KEYS",
                                   "a:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
                                   &err), DS_OK);
    const char *bad[] = {
        "k1",                                   /* no key */
        ":" KEY_A,                              /* empty kid */
        "k1:AAAA",                              /* too short */
        "k1:" KEY_A ",k1:" KEY_B,               /* duplicate kid */
        "k 1:" KEY_A,                           /* bad kid char */
        "k1:" KEY_A "!!",                       /* not base64 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_status st = ds_config_set(cfg, "DS_TOKEN_KEYS", bad[i], &err);
        ck_assert_msg(st == DS_ERR_CONFIG, "'%s' accepted", bad[i]);
        ck_assert_ptr_nonnull(strstr(err.message, "DS_TOKEN_KEYS"));
        ck_assert_msg(strstr(err.message, "AQIDBAUG") == NULL &&
                          strstr(err.message, "ICEiIyQl") == NULL,
                      "key material in message: %s", err.message);
    }
    ds_config_free(cfg);
}
END_TEST

typedef struct {
    int n;
    char kids[4][8];
    unsigned char first[4];
} key_seen;

static ds_status on_key(void *ud, const char *kid, const unsigned char *key,
                        size_t index, ds_error *err) {
    (void)err;
    key_seen *s = ud;
    ck_assert_uint_eq(index, (size_t)s->n);
    snprintf(s->kids[s->n], sizeof s->kids[0], "%s", kid);
    s->first[s->n] = key[0];
    s->n++;
    return DS_OK;
}

START_TEST(test_keyspec_parse_entries) {
    key_seen seen = {0};
    ds_error err = {0};
    ds_status st = ds__keyspec_parse(" new:" KEY_B " , old:" KEY_A, "DS_TOKEN_KEYS",
                                     on_key, &seen, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.kids[0], "new");
    ck_assert_str_eq(seen.kids[1], "old");
    ck_assert_uint_eq(seen.first[0], 0x20);
    ck_assert_uint_eq(seen.first[1], 0x01);
}
END_TEST

START_TEST(test_replica_url_list_split) {
    char **urls;
    size_t n;
    ds_error err = {0};
    ds_status st = ds__config_split_urls(
        "postgresql://a@r1/db, postgres://a@h1,h2/db?target_session_attrs=any,"
        "host=r3 dbname=db",
        &urls, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(urls[0], "postgresql://a@r1/db");
    ck_assert_str_eq(urls[1], "postgres://a@h1,h2/db?target_session_attrs=any");
    ck_assert_str_eq(urls[2], "host=r3 dbname=db");
    ds__config_free_urls(urls);
}
END_TEST

START_TEST(test_config_null_arguments) {
    ds_error err = {0};
    ds_config *cfg = new_config();
    int64_t v;
    char buf[8];
    ck_assert_int_eq(ds_config_new(NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_from_env(NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_load_env(NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_set(NULL, "pool_max", "1", &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_set(cfg, NULL, "1", &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_set_int(NULL, "pool_max", 1, NULL), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_get_int(cfg, "pool_max", NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_get_int(NULL, "pool_max", &v, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_get_str(cfg, "redis_prefix", NULL, 8, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_get_str(cfg, "redis_prefix", buf, 0, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_get_str(cfg, "application_name", buf, 4, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_clone(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_config_set_after_connect(NULL, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "cfg"));
    ds_config_free(NULL);
    ds_config_free(cfg);
}
END_TEST

Suite *ds_test_config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_config_defaults);
    tcase_add_test(tc, test_config_set_by_either_name);
    tcase_add_test(tc, test_config_bad_values_name_the_variable);
    tcase_add_test(tc, test_config_from_env);
    suite_add_tcase(s, tc);
    tc = tcase_create("secrets");
    tcase_add_test(tc, test_config_errors_never_show_passwords);
    tcase_add_test(tc, test_config_database_url_redacts_uri_forms);
    tcase_add_test(tc, test_config_database_url_redacts_conninfo_forms);
    tcase_add_test(tc, test_config_replica_and_redis_urls_redacted);
    tcase_add_test(tc, test_config_redacted_value_needs_room);
    tcase_add_test(tc, test_config_token_keys_validated);
    tcase_add_test(tc, test_keyspec_parse_entries);
    suite_add_tcase(s, tc);
    tc = tcase_create("urls");
    tcase_add_test(tc, test_replica_url_list_split);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_config_null_arguments);
    suite_add_tcase(s, tc);
    return s;
}
