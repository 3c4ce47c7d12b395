/* JSON text the library writes: the shortest numbers that read back to the
 * same double, jansson's text otherwise, and what other readers of
 * PostgreSQL and Redis then see. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/json_internal.h"
#include "dt_redis.h"
#include "redis/redis_internal.h"

static const char *real_text(double v, char *buf) {
    int n = ds__json_real_text(v, buf, DS__JSON_REAL_MAX);
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq((size_t)n, strlen(buf));
    return buf;
}

START_TEST(test_json_reals_are_shortest) {
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.1, "0.1"},
        {0.7, "0.7"},
        {1e-7, "1e-7"},
        {1.0, "1.0"},
        {-0.0, "-0.0"},
        {0.0, "0.0"},
        {1e300, "1e300"},
        {5e-324, "5e-324"},
        {-2.5e-310, "-2.5e-310"},
        {DBL_MAX, "1.7976931348623157e308"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {0.30000000000000004, "0.30000000000000004"},
        {9007199254740992.0, "9007199254740992.0"},
        {123456.789, "123456.789"},
        {-1.5, "-1.5"},
        {1e21, "1e21"},
        {1e15, "1e15"},
    };
    char buf[DS__JSON_REAL_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_str_eq(real_text(cases[i].v, buf), cases[i].text);
        double back = strtod(buf, NULL);
        ck_assert(back == cases[i].v);
        ck_assert_int_eq(!!signbit(back), !!signbit(cases[i].v));
    }
    ck_assert_int_eq(ds__json_real_text(NAN, buf, sizeof buf), -1);
    ck_assert_int_eq(ds__json_real_text(INFINITY, buf, sizeof buf), -1);
    ck_assert_int_eq(ds__json_real_text(0.5, buf, 8), -1);
}
END_TEST

/* Significant digits of a number's text: mantissa without sign, point,
 * leading and trailing zeros. */
static int sig_digits(const char *s) {
    char d[40];
    size_t n = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9')
            d[n++] = *s;
    size_t a = 0;
    while (a < n && d[a] == '0')
        a++;
    while (n > a && d[n - 1] == '0')
        n--;
    return n > a ? (int)(n - a) : 1;
}

START_TEST(test_json_reals_random_doubles_round_trip_shortest) {
    /* random bit patterns cover every exponent, subnormals included */
    uint64_t state = 0x9E3779B97F4A7C15u;
    char buf[DS__JSON_REAL_MAX], probe[40];
    for (int i = 0; i < 20000; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        double v;
        memcpy(&v, &state, sizeof v);
        if (!isfinite(v))
            continue;
        real_text(v, buf);
        ck_assert_msg(strtod(buf, NULL) == v, "%s does not read back", buf);
        int shortest = 17;
        for (int p = 1; p <= 17; p++) {
            snprintf(probe, sizeof probe, "%.*g", p, v);
            if (strtod(probe, NULL) == v) {
                shortest = p;
                break;
            }
        }
        ck_assert_msg(sig_digits(buf) == shortest, "%s: %d digits, shortest %d",
                      buf, sig_digits(buf), shortest);
    }
}
END_TEST

/* Without reals our text is jansson's, byte for byte, for every flag the
 * library uses. */
START_TEST(test_json_text_matches_jansson_without_reals) {
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:[b,b,n,{},[]], s:{s:{s:[i,s]}}, s:s#}",
        "plain", "hello", "escapes", "q\" b\\ / \b\f\n\r\t \x01\x1f \x7f",
        "unicode", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8",
        "max", (json_int_t)INT64_MAX, "min", (json_int_t)INT64_MIN, "list", 1,
        0, "deep", "a", "b", 1, "x", "nul",
        "a\0b", (int)3);
    ck_assert_ptr_nonnull(doc);
    json_object_set_new(doc, "2^53+1", json_integer(9007199254740993LL));
    const size_t flags[] = {
        JSON_COMPACT | JSON_ENCODE_ANY,
        JSON_COMPACT,
        0,
        JSON_INDENT(2) | JSON_PRESERVE_ORDER,
        JSON_INDENT(3) | JSON_SORT_KEYS,
        JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH,
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        char *want = json_dumps(doc, flags[i]);
        char *got = ds__json_dumps(doc, flags[i]);
        ck_assert_ptr_nonnull(want);
        ck_assert_ptr_nonnull(got);
        ck_assert_str_eq(got, want);
        size_t n = ds__json_dumpb(doc, NULL, 0, flags[i]);
        ck_assert_uint_eq(n, strlen(want));
        free(want);
        free(got);
    }
    char *text = ds__json_dumps(doc, JSON_COMPACT);
    ck_assert_ptr_nonnull(strstr(text, "\"2^53+1\":9007199254740993"));
    free(text);
    json_decref(doc);
}
END_TEST

START_TEST(test_json_document_with_reals_reads_back_equal) {
    json_t *doc = json_pack("{s:f, s:f, s:f, s:f, s:f, s:[f,f,f], s:I}", "a",
                            0.1, "b", 0.7, "c", 1e-7, "d", -0.0, "e", 1e300,
                            "list", 5e-324, 2.5, 1.0 / 3.0, "int",
                            (json_int_t)9007199254740993LL);
    char *text = ds__json_dumps(doc, JSON_COMPACT);
    ck_assert_str_eq(text, "{\"a\":0.1,\"b\":0.7,\"c\":1e-7,\"d\":-0.0,"
                           "\"e\":1e300,\"list\":[5e-324,2.5,"
                           "0.3333333333333333],\"int\":9007199254740993}");
    json_error_t jerr;
    json_t *back = json_loads(text, 0, &jerr);
    ck_assert_ptr_nonnull(back);
    ck_assert(json_equal(doc, back));
    ck_assert(json_is_integer(json_object_get(back, "int")));
    ck_assert(signbit(json_real_value(json_object_get(back, "d"))));
    json_decref(back);
    /* a short buffer gets what fits; the answer is the full length */
    char small[8];
    size_t n = ds__json_dumpb(doc, small, sizeof small, JSON_COMPACT);
    ck_assert_uint_eq(n, strlen(text));
    ck_assert(memcmp(small, text, sizeof small) == 0);
    free(text);
    json_decref(doc);
}
END_TEST

START_TEST(test_json_errors) {
    json_t *s = json_string("x");
    ck_assert_ptr_null(ds__json_dumps(s, JSON_COMPACT)); /* needs ENCODE_ANY */
    char *t = ds__json_dumps(s, JSON_COMPACT | JSON_ENCODE_ANY);
    ck_assert_str_eq(t, "\"x\"");
    free(t);
    json_decref(s);
    ck_assert_ptr_null(ds__json_dumps(NULL, JSON_ENCODE_ANY));
    ck_assert_uint_eq(ds__json_dumpb(NULL, NULL, 0, JSON_ENCODE_ANY), 0);
    /* bytes that are not UTF-8 are refused, as jansson refuses them */
    json_t *bad = json_object();
    json_object_set_new(bad, "k", json_stringn_nocheck("\xff\xfe", 2));
    ck_assert_ptr_null(ds__json_dumps(bad, JSON_COMPACT));
    json_decref(bad);
    /* a nesting deeper than any parser takes is refused, not recursed */
    json_t *root = json_array(), *cur = root;
    for (int i = 0; i < 3000; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    ck_assert_ptr_null(ds__json_dumps(root, JSON_COMPACT));
    json_decref(root);
}
END_TEST

/* ---- reading: the fast reader gives jansson's value or jansson's error --- */

/* Reals compared bit for bit, objects key by key (insertion order aside). */
static bool json_same(const json_t *a, const json_t *b) {
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_real(a)) {
        double x = json_real_value(a), y = json_real_value(b);
        return memcmp(&x, &y, sizeof x) == 0;
    }
    return json_equal(a, b);
}

START_TEST(test_json_fast_reader_matches_jansson) {
    static const char *const docs[] = {
        "{}", "[]", " { } ", "{\"a\": 1}", "{\"model\": \"m-large\", \"tokens\": 42}",
        "{\"a\": [1, 2, {\"b\": null}], \"c\": true, \"d\": false}",
        "{\"a\":1,\"a\":2}", "{\"\": \"\"}", "[-0, 0, -1, 9223372036854775807]",
        "[-9223372036854775808]", "[9223372036854775808]",
        "[-9223372036854775809]", "[01]", "[1.5, 2e3, -0.0, 1E-7]", "[1.]",
        "[-]", "[--1]", "\"top\"", "42", "true", "null", "  7  ",
        "{\"esc\": \"q\\\"b\\\\s\\/n\\nr\\rt\\tb\\bf\\f\"}",
        "{\"u\": \"\\u00e9\\u20ac\\ud83d\\ude00\"}", "{\"k\\u00e9y\": 1}",
        "[\"\\u0000\"]", "{\"a\\u0000b\": 1}", "[\"\\ud83d\"]", "[\"\\ude00\"]",
        "[\"\\ud83dx\"]", "[\"\\uZZZZ\"]", "[\"\\x\"]", "[\"\\u12\"]",
        "[\"caf\xc3\xa9\"]", "[\"\xff\"]", "{\"\xc3\": 1}", "[\"a\tb\"]",
        "[1,]", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{a:1}", "{\"a\":1,}",
        "[1]x", "[1] [2]", "", " ", "[", "{", "\"open", "[tru]", "[nul]",
        "[falsey]", "[\"\\\"]", "{\"a\":{\"b\":{\"c\":[[[[]]]]}}}",
    };
    static const size_t flags[] = {0, JSON_DECODE_ANY,
                                   JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                   JSON_REJECT_DUPLICATES};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
            size_t len = strlen(docs[i]);
            json_error_t e1, e2;
            json_t *theirs = json_loadb(docs[i], len, flags[f], &e1);
            json_t *ours = ds__json_loadb(docs[i], len, flags[f], &e2);
            ck_assert_msg((theirs == NULL) == (ours == NULL),
                          "doc %zu flags %zu: jansson %s, ours %s", i, f,
                          theirs ? "reads it" : "refuses it",
                          ours ? "reads it" : "refuses it");
            if (theirs) {
                ck_assert_msg(json_same(theirs, ours), "doc %zu differs", i);
            } else {
                ck_assert_int_eq(e1.position, e2.position);
                ck_assert_str_eq(e1.text, e2.text);
            }
            json_decref(theirs);
            json_decref(ours);
        }
    }
    /* deeper than the fast reader goes: still jansson's answer */
    char deep[4002];
    memset(deep, '[', 2000);
    memset(deep + 2000, ']', 2000);
    deep[4000] = '\0';
    json_t *d1 = json_loads(deep, 0, NULL), *d2 = ds__json_loadb(deep, 4000, 0, NULL);
    ck_assert((d1 == NULL) == (d2 == NULL));
    ck_assert(!d1 || json_equal(d1, d2));
    json_decref(d1);
    json_decref(d2);
}
END_TEST

/* ---- what readers in other languages see ----------------------------------- */

START_TEST(test_json_postgres_readers_match_decimal_literals) {
    char *url = dt_migrated_db("json");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    json_t *v = json_pack("{s:f, s:f, s:f, s:I}", "temp", 0.7, "p", 0.1,
                          "eps", 1e-7, "big", (json_int_t)9007199254740993LL);
    /* through a repository (binary jsonb) */
    ds_status st = ds_setting_put(pool, 0, "model", v, DS_VERSION_ANY, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM app_settings WHERE "
                                     "value @> '{\"temp\":0.7}'"),
                     1);
    ck_assert_int_eq(
        dt_sql_int(url, "SELECT count(*) FROM app_settings WHERE "
                        "(value->>'temp')::numeric = 0.7 AND "
                        "(value->>'p')::numeric = 0.1 AND "
                        "(value->>'eps')::numeric = 0.0000001 AND "
                        "(value->>'big')::numeric = 9007199254740993"),
        1);
    /* through the raw SQL escape hatch (text jsonb parameter) */
    ds_sql_param p[] = {ds_sql_param_jsonb(v)};
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(pool,
                      "SELECT ($1::jsonb @> '{\"temp\":0.7}')::text, "
                      "$1::jsonb->>'temp', $1::jsonb->>'eps'",
                      p, 1, &res, &err);
    ck_assert_ds_ok(st, err);
    const char *s;
    ck_assert_ds_ok(ds_sql_result_text(res, 0, 0, &s, NULL, &err), err);
    ck_assert_str_eq(s, "true");
    ck_assert_ds_ok(ds_sql_result_text(res, 0, 1, &s, NULL, &err), err);
    ck_assert_str_eq(s, "0.7");
    ck_assert_ds_ok(ds_sql_result_text(res, 0, 2, &s, NULL, &err), err);
    ck_assert_str_eq(s, "0.0000001");
    ds_sql_result_free(res);
    json_decref(v);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_json_redis_values_hold_short_numbers) {
    ds_redis *r = dt_redis("json");
    ds_error err = {0};
    json_t *v = json_pack("{s:f, s:f}", "temp", 0.7, "p", 0.1);

    ds_cache_options co = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&co);
    co.name = "num";
    ds_cache *c;
    ck_assert_ds_ok(ds_cache_open(r, &co, &c, &err), err);
    ck_assert_ds_ok(ds_cache_set(c, "k", v, NULL, &err), err);
    char *ekey = ds__redis_key(r, NULL, "c:num:v0:k");
    redisReply *raw = dt_rcmd(r, "GET %s", ekey);
    ck_assert_int_eq(raw->type, REDIS_REPLY_STRING);
    ck_assert_ptr_nonnull(strstr(raw->str, "\n{\"temp\":0.7,\"p\":0.1}"));
    freeReplyObject(raw);
    ds__free(ekey);
    ds_cache_close(c);

    ds_queue_options qo = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&qo);
    qo.name = "num";
    ds_queue *q;
    ck_assert_ds_ok(ds_queue_open(r, &qo, &q, &err), err);
    ck_assert_ds_ok(ds_queue_enqueue(q, v, 0, NULL, &err), err);
    char *stream = ds__redis_key(r, NULL, "q:num:s");
    raw = dt_rcmd(r, "XRANGE %s - +", stream);
    ck_assert_int_eq(raw->type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(raw->elements, 1);
    redisReply *fields = raw->element[0]->element[1];
    bool found = false;
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i + 1]->str, "{\"temp\":0.7,\"p\":0.1}") == 0)
            found = true;
    ck_assert_msg(found, "the payload is not stored as {\"temp\":0.7,\"p\":0.1}");
    freeReplyObject(raw);
    ds__free(stream);
    ds_queue_close(q);

    json_decref(v);
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
}
END_TEST

Suite *ds_test_json_suite(void) {
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("reals");
    tcase_add_test(tc, test_json_reals_are_shortest);
    tcase_add_test(tc, test_json_reals_random_doubles_round_trip_shortest);
    suite_add_tcase(s, tc);
    tc = tcase_create("text");
    tcase_add_test(tc, test_json_text_matches_jansson_without_reals);
    tcase_add_test(tc, test_json_document_with_reals_reads_back_equal);
    suite_add_tcase(s, tc);
    tc = tcase_create("fast_reader");
    tcase_add_test(tc, test_json_fast_reader_matches_jansson);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_json_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("readers");
    tcase_add_test(tc, test_json_postgres_readers_match_decimal_literals);
    tcase_add_test(tc, test_json_redis_values_hold_short_numbers);
    suite_add_tcase(s, tc);
    return s;
}
