/* The parameter binder and the binary array encoder every database module
 * uses (pool/pgbin.h), and the statement API's refusals (pool/stmt.h). */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "pool/stmt.h"
#include "test_util.h"

static uint32_t be32_at(const char *p) { return ds__get_be32(p); }

START_TEST(test_bind_fixed_width_values) {
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, -2);
    ds__bind_int32(&b, 7);
    ds__bind_bool(&b, true);
    ds__bind_float8(&b, 1.5);
    ds__bind_ts(&b, INT64_C(946684800000000)); /* 2000-01-01: PG's zero */
    ds__bind_null(&b);
    ds__bind_text(&b, NULL);
    ck_assert_int_eq(b.n, 7);
    ck_assert_int_eq(b.failed, DS_OK);
    ck_assert_int_eq(b.lengths[0], 8);
    ck_assert_uint_eq(ds__get_be64(b.values[0]), UINT64_MAX - 1);
    ck_assert_uint_eq(b.types[0], DS_OID_INT8);
    ck_assert_int_eq(b.lengths[1], 4);
    ck_assert_uint_eq(be32_at(b.values[1]), 7);
    ck_assert_uint_eq(b.types[1], DS_OID_INT4);
    ck_assert_int_eq(b.values[2][0], 1);
    ck_assert_uint_eq(ds__get_be64(b.values[3]), UINT64_C(0x3FF8000000000000));
    ck_assert_uint_eq(ds__get_be64(b.values[4]), 0);
    ck_assert_uint_eq(b.types[4], DS_OID_TIMESTAMPTZ);
    ck_assert_ptr_null(b.values[5]);
    ck_assert_uint_eq(b.types[5], 0);
    ck_assert_ptr_null(b.values[6]);
    ck_assert_uint_eq(b.types[6], DS_OID_TEXT);
    for (int i = 0; i < b.n; i++)
        ck_assert_int_eq(b.formats[i], 1);
    ds__bind_free(&b);
    ck_assert_int_eq(b.n, 0);
}
END_TEST

START_TEST(test_bind_refuses_what_does_not_fit) {
    ds__bind b;
    ds__bind_init(&b);
    for (int i = 0; i < DS_BIND_INLINE + 1; i++)
        ds__bind_int32(&b, i);
    ck_assert_int_eq(b.n, DS_BIND_INLINE);
    ck_assert_int_eq(b.failed, DS_ERR_INTERNAL);
    ds_error err = {0};
    ck_assert_int_eq(ds__bind_check(&b, "t.stmt", &err), DS_ERR_INTERNAL);
    ck_assert_ptr_nonnull(strstr(err.message, "t.stmt"));
    ck_assert_ptr_nonnull(strstr(err.message, "$17"));
    /* an owned buffer handed to a failed binder is freed, not leaked */
    char *buf = malloc(4);
    ck_assert_ptr_nonnull(buf);
    ds__bind_owned(&b, buf, 4, DS_OID_BYTEA, 1, free);
    ds__bind_free(&b);
    ck_assert_int_eq(b.failed, DS_OK);

    /* beyond the protocol's limit */
    ck_assert(!ds__bind_reserve(&b, DS_BIND_MAX + 1));
    ck_assert_int_eq(ds__bind_check(&b, "t", &err), DS_ERR_INVALID);
    ds__bind_free(&b);

    /* a value over 2 GiB is refused without reading it */
    static const char byte = 'x';
    ds__bind_bytes(&b, &byte, (size_t)INT32_MAX + 1);
    ck_assert_int_eq(ds__bind_check(&b, "t", &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "$1"));
    ds__bind_free(&b);
}
END_TEST

START_TEST(test_bind_reserve_holds_many) {
    ds__bind b;
    ds__bind_init(&b);
    ck_assert(ds__bind_reserve(&b, 1000));
    for (int i = 0; i < 1000; i++) {
        char *s = malloc(8);
        ck_assert_ptr_nonnull(s);
        memcpy(s, "abcdefg", 8);
        ds__bind_owned(&b, s, 7, DS_OID_TEXT, 0, free);
    }
    ck_assert_int_eq(b.failed, DS_OK);
    ck_assert_int_eq(b.n, 1000);
    ck_assert_int_eq(b.lengths[999], 7);
    ck_assert_int_eq(b.formats[999], 0);
    /* too late to grow once binds are in */
    ck_assert(!ds__bind_reserve(&b, 2000));
    ds__bind_free(&b);
}
END_TEST

START_TEST(test_pgarr_header_follows_the_elements) {
    ds__pgarr a;
    ds__pgarr_init(&a, DS_OID_BYTEA);
    ck_assert(ds__pgarr_add(&a, "ab", 2));
    ck_assert(ds__pgarr_add(&a, NULL, 0));
    ck_assert(ds__pgarr_add(&a, "", 0));
    ck_assert(ds__pgarr_finish(&a));
    ck_assert_uint_eq(a.len, 20 + (4 + 2) + 4 + 4);
    ck_assert_uint_eq(be32_at(a.buf), 1);              /* ndim */
    ck_assert_uint_eq(be32_at(a.buf + 4), 1);          /* has a NULL */
    ck_assert_uint_eq(be32_at(a.buf + 8), DS_OID_BYTEA);
    ck_assert_uint_eq(be32_at(a.buf + 12), 3);         /* count */
    ck_assert_uint_eq(be32_at(a.buf + 16), 1);         /* lower bound */
    ck_assert_uint_eq(be32_at(a.buf + 20), 2);
    ck_assert_int_eq(memcmp(a.buf + 24, "ab", 2), 0);
    ck_assert_uint_eq(be32_at(a.buf + 26), UINT32_MAX); /* NULL */
    ck_assert_uint_eq(be32_at(a.buf + 30), 0);
    ds__pgarr_free(&a);

    /* empty arrays have a header too */
    ds__pgarr_init(&a, DS_OID_INT8);
    ck_assert(ds__pgarr_finish(&a));
    ck_assert_uint_eq(a.len, 20);
    ck_assert_uint_eq(be32_at(a.buf + 12), 0);
    ds__pgarr_free(&a);
}
END_TEST

START_TEST(test_pgarr_refuses_oversized) {
    ds__pgarr a;
    ds__pgarr_init(&a, DS_OID_INT8);
    ck_assert(!ds__pgarr_reserve(&a, SIZE_MAX / 2, 8)); /* overflow */
    ck_assert(a.failed);
    ck_assert(!a.nomem);
    ck_assert(!ds__pgarr_add_int8(&a, 1)); /* stays failed */
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_array(&b, &a, DS_OID_INT8_ARRAY);
    ds_error err = {0};
    ck_assert_int_eq(ds__bind_check(&b, "t", &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "array too large"));
    ck_assert_ptr_null(a.buf);
    ds__bind_free(&b);

    ds__pgarr_init(&a, DS_OID_BYTEA);
    static const char byte = 'x';
    ck_assert(!ds__pgarr_add(&a, &byte, (size_t)INT32_MAX + 1));
    ck_assert(!ds__pgarr_finish(&a));
    ds__pgarr_free(&a);
}
END_TEST

/* ---- against the server ----------------------------------------------- */

static const ds__stmt_def sum_def = {
    "test.sum",
    "SELECT cardinality($1::int8[])::int8, "
    "(SELECT coalesce(sum(x), 0)::int8 FROM unnest($1::int8[]) x), "
    "(SELECT count(*) FROM unnest($2::bytea[]) y WHERE y IS NULL)",
    2,
    {DS_OID_INT8_ARRAY, DS_OID_BYTEA_ARRAY},
    3,
    {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8}};

START_TEST(test_stmt_run_sends_arrays_the_server_reads) {
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    int64_t v[] = {5, -3, INT64_MAX / 4};
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int8_array(&b, v, 3);
    ds__pgarr blobs;
    ds__pgarr_init(&blobs, DS_OID_BYTEA);
    ck_assert(ds__pgarr_add(&blobs, "x", 1) && ds__pgarr_add(&blobs, NULL, 0));
    ds__bind_array(&b, &blobs, DS_OID_BYTEA_ARRAY);
    PGresult *r = ds__stmt_run(c, &sum_def, &b, &err);
    ck_assert_msg(r != NULL, "%s", err.message);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq((int64_t)ds__get_be64(PQgetvalue(r, 0, 0)), 3);
    ck_assert_int_eq((int64_t)ds__get_be64(PQgetvalue(r, 0, 1)),
                     5 - 3 + INT64_MAX / 4);
    ck_assert_int_eq((int64_t)ds__get_be64(PQgetvalue(r, 0, 2)), 1);
    PQclear(r);
    ds__bind_free(&b);

    /* float4[] and ad-hoc SQL with the binds' own types */
    float f[] = {0.5f, 0.25f};
    ds__bind_float4_array(&b, f, 2);
    ds__bind_text(&b, "t");
    r = ds__sql_run(c, "SELECT (SELECT sum(x) FROM unnest($1) x)::float8, "
                       "length($2)::int8", &b, "test.adhoc", &err);
    ck_assert_msg(r != NULL, "%s", err.message);
    uint64_t bits = ds__get_be64(PQgetvalue(r, 0, 0));
    double sum;
    memcpy(&sum, &bits, 8);
    ck_assert(sum == 0.75);
    ck_assert_int_eq((int64_t)ds__get_be64(PQgetvalue(r, 0, 1)), 1);
    PQclear(r);
    ds__bind_free(&b);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_stmt_run_refuses_before_sending) {
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, 1); /* one of the two parameters */
    PGresult *r = ds__stmt_run(c, &sum_def, &b, &err);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(err.code, DS_ERR_INTERNAL);
    ck_assert_ptr_nonnull(strstr(err.message, "test.sum"));
    ds__bind_free(&b);

    ds__pgarr a;
    ds__pgarr_init(&a, DS_OID_INT8);
    a.failed = true; /* as after a failed add */
    ds__bind_array(&b, &a, DS_OID_INT8_ARRAY);
    ds__bind_null(&b);
    r = ds__stmt_run(c, &sum_def, &b, &err);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(err.code, DS_ERR_INVALID);
    ds__bind_free(&b);

    /* nothing went out, so the lease is as good as before */
    ck_assert_ds_ok(ds__conn_exec_simple(c, "SELECT 1", &err), err);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

START_TEST(test_conn_use_unnamed_restores) {
    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 1, 1);
    ds_conn *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    bool was = ds__conn_use_unnamed(c, true);
    ck_assert(was == ds_pool_is_pooler_mode(pool));
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, 41);
    PGresult *r = ds__sql_run(c, "SELECT $1 + 1", &b, NULL, &err);
    ck_assert_msg(r != NULL, "%s", err.message);
    PQclear(r);
    /* unnamed: nothing was left prepared on the server */
    r = ds__sql_run(c, "SELECT count(*) FROM pg_prepared_statements", NULL,
                    NULL, &err);
    ck_assert_msg(r != NULL, "%s", err.message);
    ck_assert_int_eq((int64_t)ds__get_be64(PQgetvalue(r, 0, 0)), 0);
    PQclear(r);
    ck_assert(ds__conn_use_unnamed(c, was));
    ck_assert(ds__conn_use_unnamed(c, was) == was);
    ds__bind_free(&b);
    ds_pool_release(c);
    ds_pool_close(pool);
}
END_TEST

Suite *ds_test_bind_suite(void) {
    Suite *s = suite_create("bind");
    TCase *tc = tcase_create("binder");
    tcase_add_test(tc, test_bind_fixed_width_values);
    tcase_add_test(tc, test_bind_refuses_what_does_not_fit);
    tcase_add_test(tc, test_bind_reserve_holds_many);
    suite_add_tcase(s, tc);
    tc = tcase_create("arrays");
    tcase_add_test(tc, test_pgarr_header_follows_the_elements);
    tcase_add_test(tc, test_pgarr_refuses_oversized);
    suite_add_tcase(s, tc);
    tc = tcase_create("statements");
    tcase_add_test(tc, test_stmt_run_sends_arrays_the_server_reads);
    tcase_add_test(tc, test_stmt_run_refuses_before_sending);
    tcase_add_test(tc, test_conn_use_unnamed_restores);
    suite_add_tcase(s, tc);
    return s;
}
