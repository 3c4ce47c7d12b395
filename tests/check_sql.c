/* The raw SQL escape hatch: parameters, results, errors, both modes. */
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "test_util.h"

static char *db;             /* a database of this suite's own */
static ds_pool *pool;

static void setup_direct(void) {
    db = dt_create_db("sql");
    pool = dt_pool(db, 1, 2);
}

static void setup_pooler(void) {
    db = dt_create_db("sqlpool");
    pool = dt_pooler_pool(db, 1, 2);
}

static void teardown(void) {
    ds_pool_close(pool);
    dt_drop_db(db);
    free(db);
}

static ds_sql_result *run(const char *sql, const ds_sql_param *p, int n) {
    ds_sql_result *res = NULL;
    ds_error err = {0};
    ds_status st = ds_sql_exec_pool(pool, sql, p, n, &res, &err);
    ck_assert_ds_ok(st, err);
    return res;
}

START_TEST(test_sql_round_trips_every_param_type) {
    json_t *doc = json_pack("{s:s, s:[i,i], s:b}", "name", "ada", "n", 1, 2, "ok", 1);
    const uint8_t blob[] = {0, 1, 2, 255, 0, 39, 92};
    int64_t ts = INT64_C(1700000000123456); /* 2023-11-14 22:13:20.123456 UTC */
    ds_sql_param p[] = {
        ds_sql_param_int64(INT64_MIN + 1), ds_sql_param_int32(-42),
        ds_sql_param_double(3.25),         ds_sql_param_bool(true),
        ds_sql_param_text("h\xc3\xa9llo"), ds_sql_param_bytea(blob, sizeof blob),
        ds_sql_param_timestamptz(ts),      ds_sql_param_jsonb(doc),
        ds_sql_param_null(),               ds_sql_param_untyped("123e4567-e89b-12d3-a456-426614174000"),
    };
    ds_sql_result *res = run("SELECT $1::int8, $2::int4, $3::float8, $4::bool, $5::text, "
                         "$6::bytea, $7::timestamptz, $8::jsonb, $9::text, $10::uuid::text, "
                         "$7::timestamptz::text",
                         p, 10);
    ds_error err = {0};
    ck_assert_int_eq(ds_sql_result_rows(res), 1);
    ck_assert_int_eq(ds_sql_result_cols(res), 11);
    int64_t i;
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 0, &i, &err), DS_OK);
    ck_assert(i == INT64_MIN + 1);
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 1, &i, &err), DS_OK);
    ck_assert_int_eq(i, -42);
    double d;
    ck_assert_int_eq(ds_sql_result_double(res, 0, 2, &d, &err), DS_OK);
    ck_assert(d == 3.25);
    ck_assert_int_eq(ds_sql_result_double(res, 0, 1, &d, &err), DS_OK); /* int4 widens */
    ck_assert(d == -42.0);
    bool b;
    ck_assert_int_eq(ds_sql_result_bool(res, 0, 3, &b, &err), DS_OK);
    ck_assert(b);
    const char *text;
    size_t len;
    ck_assert_int_eq(ds_sql_result_text(res, 0, 4, &text, &len, &err), DS_OK);
    ck_assert_str_eq(text, "h\xc3\xa9llo");
    ck_assert_uint_eq(len, 6);
    const uint8_t *bytes;
    ck_assert_int_eq(ds_sql_result_bytea(res, 0, 5, &bytes, &len, &err), DS_OK);
    ck_assert_uint_eq(len, sizeof blob);
    ck_assert_mem_eq(bytes, blob, sizeof blob);
    int64_t ts_out;
    ck_assert_int_eq(ds_sql_result_timestamptz(res, 0, 6, &ts_out, &err), DS_OK);
    ck_assert(ts_out == ts);
    json_t *j;
    ck_assert_int_eq(ds_sql_result_json(res, 0, 7, &j, &err), DS_OK);
    ck_assert(json_equal(j, doc));
    json_decref(j);
    ck_assert_int_eq(ds_sql_result_text(res, 0, 7, &text, NULL, &err), DS_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"ada\""));
    ck_assert(ds_sql_result_is_null(res, 0, 8));
    ck_assert(!ds_sql_result_is_null(res, 0, 0));
    ck_assert_int_eq(ds_sql_result_text(res, 0, 9, &text, NULL, &err), DS_OK);
    ck_assert_str_eq(text, "123e4567-e89b-12d3-a456-426614174000");
    /* the server agrees on the instant we sent */
    dt_sql(db, "SET TIME ZONE 'UTC'");
    ck_assert_int_eq(ds_sql_result_text(res, 0, 10, &text, NULL, &err), DS_OK);
    ck_assert_ptr_nonnull(strstr(text, "2023-11-14"));
    ck_assert_str_eq(ds_sql_result_col_name(res, 0), "int8");
    ck_assert_int_eq(ds_sql_result_col_index(res, "bool"), 3);
    ck_assert_int_eq(ds_sql_result_col_index(res, "nope"), -1);
    ck_assert_ptr_null(ds_sql_result_col_name(res, 99));
    ds_sql_result_free(res);
    json_decref(doc);
}
END_TEST

START_TEST(test_sql_metacharacters_round_trip_byte_identical) {
    const char *nasty = "'; DROP TABLE users; -- \\ \" $1 %s %n \t\r\n E'\\x00' "
                        "\xe2\x80\xae \xf0\x9f\x92\xa3 ) ( ` $$ $tag$";
    ds_sql_param p[] = {ds_sql_param_text(nasty)};
    ds_sql_result *res = run("SELECT $1::text, length($1)", p, 1);
    const char *out;
    size_t len;
    ds_error err = {0};
    ck_assert_int_eq(ds_sql_result_text(res, 0, 0, &out, &len, &err), DS_OK);
    ck_assert_uint_eq(len, strlen(nasty));
    ck_assert_mem_eq(out, nasty, len);
    ds_sql_result_free(res);
}
END_TEST

START_TEST(test_sql_many_params_use_heap_arrays) {
    enum { N = 40 };
    ds_sql_param p[N];
    char sql[1024] = "SELECT 0";
    for (int i = 0; i < N; i++) {
        p[i] = ds_sql_param_int64(i + 1);
        char part[16];
        snprintf(part, sizeof part, " + $%d", i + 1);
        strcat(sql, part);
    }
    ds_sql_result *res = run(sql, p, N);
    int64_t sum;
    ds_error err = {0};
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 0, &sum, &err), DS_OK);
    ck_assert_int_eq(sum, N * (N + 1) / 2);
    ds_sql_result_free(res);
}
END_TEST

START_TEST(test_sql_commands_report_affected_rows) {
    ds_error err = {0};
    ds_status st = ds_sql_exec_pool(pool, "CREATE TABLE dt_items (id int8 PRIMARY KEY, name text)",
                                NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result *res = run("INSERT INTO dt_items SELECT g, 'n' || g FROM generate_series(1, 5) g",
                         NULL, 0);
    ck_assert_int_eq(ds_sql_result_affected(res), 5);
    ck_assert_int_eq(ds_sql_result_rows(res), 0);
    ds_sql_result_free(res);
    ds_sql_param p[] = {ds_sql_param_int64(3), ds_sql_param_text("dup")};
    st = ds_sql_exec_pool(pool, "INSERT INTO dt_items VALUES ($1, $2)", p, 2, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_CONFLICT, err);
    ck_assert_str_eq(err.sqlstate, "23505");
    ck_assert(!ds_error_is_retryable(&err));
    ck_assert_ptr_nonnull(strstr(err.message, "duplicate key"));
    res = run("DELETE FROM dt_items WHERE id > $1", p, 1);
    ck_assert_int_eq(ds_sql_result_affected(res), 2);
    ds_sql_result_free(res);
}
END_TEST

START_TEST(test_sql_bad_input_is_rejected_cleanly) {
    ds_error err = {0};
    ds_sql_param nul[] = {ds_sql_param_text_n("a\0b", 3)};
    ds_status st = ds_sql_exec_pool(pool, "SELECT $1::text", nul, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "NUL"));
    ds_sql_param bad_utf8[] = {ds_sql_param_text("\xff\xfe")};
    st = ds_sql_exec_pool(pool, "SELECT $1::text", bad_utf8, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_str_eq(err.sqlstate, "22021");
    ds_sql_param big[] = {ds_sql_param_int32(0)};
    big[0].v.i64 = INT64_C(1) << 40;
    st = ds_sql_exec_pool(pool, "SELECT $1::int4", big, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_sql_exec_pool(pool, "SELEC 1", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_str_eq(err.sqlstate, "42601");
    ck_assert_ptr_nonnull(strstr(err.message, "syntax error"));
    ds_sql_param weird = ds_sql_param_null();
    weird.type = (ds_sql_param_type)77;
    st = ds_sql_exec_pool(pool, "SELECT $1", &weird, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    /* the connections are still good afterwards */
    ds_sql_result *res = run("SELECT 1", NULL, 0);
    ds_sql_result_free(res);
}
END_TEST

START_TEST(test_sql_accessor_type_mismatch_and_nulls) {
    ds_sql_result *res = run("SELECT 1.5::numeric AS amount, NULL::int8 AS nothing, "
                         "'x'::text AS word, 'not json'::text AS bad",
                         NULL, 0);
    ds_error err = {0};
    int64_t i;
    double d;
    bool b;
    json_t *j;
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 0, &i, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "amount"));
    ck_assert_ptr_nonnull(strstr(err.message, "cast"));
    ck_assert_int_eq(ds_sql_result_double(res, 0, 0, &d, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 1, &i, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "NULL"));
    ck_assert_int_eq(ds_sql_result_bool(res, 0, 2, &b, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_result_int64(res, 5, 0, &i, &err), DS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.message, "out of range"));
    ck_assert_int_eq(ds_sql_result_int64(res, 0, -1, &i, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_result_json(res, 0, 3, &j, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(ds_sql_result_json(res, 0, 2, &j, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_result_int64(NULL, 0, 0, &i, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert(ds_sql_result_is_null(NULL, 0, 0));
    ck_assert_int_eq(ds_sql_result_rows(NULL), 0);
    ds_sql_result_free(res);
    ds_sql_result_free(NULL);
}
END_TEST

START_TEST(test_sql_infinite_timestamps_and_floats) {
    ds_sql_result *res = run("SELECT 'infinity'::timestamptz, '-infinity'::timestamptz, "
                         "'NaN'::float8, 1.5::float4, 7::int2, 9::oid",
                         NULL, 0);
    ds_error err = {0};
    int64_t ts, i;
    ck_assert_int_eq(ds_sql_result_timestamptz(res, 0, 0, &ts, &err), DS_OK);
    ck_assert(ts == INT64_MAX);
    ck_assert_int_eq(ds_sql_result_timestamptz(res, 0, 1, &ts, &err), DS_OK);
    ck_assert(ts == INT64_MIN);
    double d;
    ck_assert_int_eq(ds_sql_result_double(res, 0, 2, &d, &err), DS_OK);
    ck_assert(isnan(d));
    ck_assert_int_eq(ds_sql_result_double(res, 0, 3, &d, &err), DS_OK);
    ck_assert(d == 1.5);
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 4, &i, &err), DS_OK);
    ck_assert_int_eq(i, 7);
    ck_assert_int_eq(ds_sql_result_int64(res, 0, 5, &i, &err), DS_OK);
    ck_assert_int_eq(i, 9);
    ds_sql_result_free(res);
}
END_TEST

/* The edges of the type: infinities both ways, the first instant the
 * server holds, the last years that epoch microseconds cannot say, and a
 * time before the first, which the server refuses instead of reading a
 * wrapped-around value. */
START_TEST(test_sql_timestamp_edges) {
    const int64_t first = INT64_C(-210866803200000000); /* 4714-11-24 BC */
    ds_sql_param p[] = {ds_sql_param_timestamptz(INT64_MAX),
                    ds_sql_param_timestamptz(INT64_MIN),
                    ds_sql_param_timestamptz(first)};
    ds_sql_result *res = run("SELECT $1::timestamptz = 'infinity', "
                         "$2::timestamptz = '-infinity', "
                         "$3::timestamptz = '4714-11-24 00:00:00+00 BC', "
                         "$3::timestamptz, '294250-01-01 00:00:00+00'::timestamptz",
                         p, 3);
    ds_error err = {0};
    bool b;
    for (int col = 0; col < 3; col++) {
        ck_assert_int_eq(ds_sql_result_bool(res, 0, col, &b, &err), DS_OK);
        ck_assert_msg(b, "column %d", col);
    }
    int64_t ts;
    ck_assert_int_eq(ds_sql_result_timestamptz(res, 0, 3, &ts, &err), DS_OK);
    ck_assert(ts == first);
    ck_assert_int_eq(ds_sql_result_timestamptz(res, 0, 4, &ts, &err), DS_OK);
    ck_assert(ts == INT64_MAX);
    ds_sql_result_free(res);

    ds_sql_param early[] = {ds_sql_param_timestamptz(first - 1)};
    res = (ds_sql_result *)&ts;
    ds_status st = ds_sql_exec_pool(pool, "SELECT $1::timestamptz", early, 1, &res, &err);
    ck_assert_int_ne(st, DS_OK);
    ck_assert_ptr_null(res);
    ck_assert_str_eq(err.sqlstate, "22008");
    ds_sql_param far[] = {ds_sql_param_timestamptz(INT64_MIN + 1)};
    res = (ds_sql_result *)&ts;
    st = ds_sql_exec_pool(pool, "SELECT $1::timestamptz", far, 1, &res, &err);
    ck_assert_int_ne(st, DS_OK);
    ck_assert_ptr_null(res);
    ck_assert_str_eq(err.sqlstate, "22008");
}
END_TEST

START_TEST(test_sql_prepared_statement_survives_schema_change) {
    ds_error err = {0};
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ds_status st = ds_sql_exec(c, "CREATE TABLE dt_shape (id int8, v int4)", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec(c, "INSERT INTO dt_shape VALUES (1, 2)", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result *res;
    st = ds_sql_exec(c, "SELECT * FROM dt_shape", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(ds_sql_result_cols(res), 2);
    ds_sql_result_free(res);
    /* the cached plan's result type changes under it */
    st = ds_sql_exec(c, "ALTER TABLE dt_shape ALTER COLUMN v TYPE text", NULL, 0, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_sql_exec(c, "SELECT * FROM dt_shape", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    const char *v;
    ck_assert_int_eq(ds_sql_result_text(res, 0, 1, &v, NULL, &err), DS_OK);
    ck_assert_str_eq(v, "2");
    ds_sql_result_free(res);
    /* and after DEALLOCATE ALL behind our back */
    PGresult *raw = PQexec(ds_pool_conn_pg(c), "DEALLOCATE ALL");
    ck_assert_int_eq(PQresultStatus(raw), PGRES_COMMAND_OK);
    PQclear(raw);
    st = ds_sql_exec(c, "SELECT * FROM dt_shape", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    ds_pool_release(c);
}
END_TEST

START_TEST(test_sql_out_of_memory_is_reported) {
    ds_error err = {0};
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ds_sql_param p[] = {ds_sql_param_int64(1)};
    for (long n = 1; n < 20; n++) {
        ds_sql_result *res = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_sql_exec(c, "SELECT $1::int8 + 100", p, 1, &res, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK) {
            ds_sql_result_free(res);
            ds_pool_release(c);
            return;
        }
        ck_assert_ds_status(st, DS_ERR_NOMEM, err);
        ck_assert_ptr_null(res);
    }
    ck_abort_msg("ds_sql_exec never succeeded");
}
END_TEST

START_TEST(test_sql_errors_null_arguments) {
    ds_error err = {0};
    ds_sql_result *res = (ds_sql_result *)0x1;
    ck_assert_int_eq(ds_sql_exec(NULL, "SELECT 1", NULL, 0, &res, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(res);
    ds_conn *c;
    ck_assert_int_eq(ds_pool_acquire(pool, &c, &err), DS_OK);
    ck_assert_int_eq(ds_sql_exec(c, NULL, NULL, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_exec(c, "SELECT $1", NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_sql_exec(c, "SELECT 1", NULL, -1, NULL, &err), DS_ERR_INVALID);
    ds_pool_release(c);
    ck_assert_int_eq(ds_sql_exec_pool(NULL, "SELECT 1", NULL, 0, NULL, &err), DS_ERR_INVALID);
}
END_TEST

/* The status of a failed statement is the mapped one whether or not the
 * caller passes an error out-param (it used to be DS_ERR_DB without). */
START_TEST(test_sql_status_does_not_depend_on_err) {
    ds_conn *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_pool_acquire(pool, &c, &err), err);
    ck_assert_ds_ok(ds_sql_exec(c, "CREATE TEMP TABLE dt_once (k int PRIMARY KEY)",
                            NULL, 0, NULL, &err),
                    err);
    ck_assert_ds_ok(ds_sql_exec(c, "INSERT INTO dt_once VALUES (1)", NULL, 0, NULL, &err),
                    err);
    static const struct {
        const char *sql;
        ds_status want;
    } cases[] = {
        {"INSERT INTO dt_once VALUES (1)", DS_ERR_CONFLICT},
        {"SELECT 1 / 0", DS_ERR_INVALID},
        {"SELECT pg_sleep(5)", DS_ERR_TIMEOUT},
        {"SELEC 1", DS_ERR_DB},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int with_err = 1; with_err >= 0; with_err--) {
            /* a short statement_timeout for the pg_sleep case only */
            ck_assert_ds_ok(ds_sql_exec(c, cases[i].want == DS_ERR_TIMEOUT
                                           ? "SET statement_timeout = '50ms'"
                                           : "SET statement_timeout = 0",
                                    NULL, 0, NULL, &err),
                            err);
            ds_error e = {0};
            ds_sql_result *res = (ds_sql_result *)0x1;
            ck_assert_int_eq(ds_sql_exec(c, cases[i].sql, NULL, 0, &res,
                                     with_err ? &e : NULL),
                             cases[i].want);
            ck_assert_ptr_null(res);
            if (with_err)
                ck_assert_int_eq(e.code, cases[i].want);
        }
    }
    /* the same through the pool */
    ck_assert_int_eq(ds_sql_exec_pool(pool, "SELECT 1 / 0", NULL, 0, NULL, NULL),
                     DS_ERR_INVALID);
    ck_assert_ds_ok(ds_sql_exec(c, "RESET statement_timeout", NULL, 0, NULL, &err), err);
    ds_pool_release(c);
}
END_TEST

static void add_common(TCase *tc) {
    tcase_add_test(tc, test_sql_round_trips_every_param_type);
    tcase_add_test(tc, test_sql_metacharacters_round_trip_byte_identical);
    tcase_add_test(tc, test_sql_many_params_use_heap_arrays);
    tcase_add_test(tc, test_sql_commands_report_affected_rows);
    tcase_add_test(tc, test_sql_bad_input_is_rejected_cleanly);
    tcase_add_test(tc, test_sql_accessor_type_mismatch_and_nulls);
    tcase_add_test(tc, test_sql_infinite_timestamps_and_floats);
    tcase_add_test(tc, test_sql_timestamp_edges);
}

Suite *ds_test_sql_suite(void) {
    Suite *s = suite_create("sql");
    TCase *tc = tcase_create("direct");
    tcase_add_checked_fixture(tc, setup_direct, teardown);
    add_common(tc);
    tcase_add_test(tc, test_sql_prepared_statement_survives_schema_change);
    tcase_add_test(tc, test_sql_out_of_memory_is_reported);
    tcase_add_test(tc, test_sql_errors_null_arguments);
    tcase_add_test(tc, test_sql_status_does_not_depend_on_err);
    suite_add_tcase(s, tc);
    tc = tcase_create("pooler");
    tcase_add_checked_fixture(tc, setup_pooler, teardown);
    add_common(tc);
    suite_add_tcase(s, tc);
    return s;
}
