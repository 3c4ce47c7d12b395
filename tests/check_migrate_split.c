/* The migration set itself: the embedded copy of sql/, file sets (pairing,
 * sorting, refusals) and the SQL splitter. No database needed. */
#include <limits.h>
#include <string.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"
#include "migrate_fixture.h"

static int64_t embedded_latest(void) { return ds__migrate_embedded_latest(); }

/* ---- the embedded set ---------------------------------------------------- */

START_TEST(test_migrate_schema_version_is_newest_embedded) {
    /* Bump DS_SCHEMA_VERSION in include/datastore/migrate.h with every new
     * migration in sql/. */
    ck_assert_msg(DS_SCHEMA_VERSION == embedded_latest(),
                  "DS_SCHEMA_VERSION is %d but the newest migration in sql/ "
                  "is %lld: set DS_SCHEMA_VERSION in "
                  "include/datastore/migrate.h to it",
                  DS_SCHEMA_VERSION, (long long)embedded_latest());
    ds__migration_set *set = NULL;
    ds_error err = {0};
    ds_status st = ds__migration_set_load(NULL, &set, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_gt(set->count, 0);
    ck_assert_int_eq(set->files[set->count - 1].version, DS_SCHEMA_VERSION);
    ds__migration_set_free(set);
}
END_TEST

START_TEST(test_migrate_embedded_is_byte_exact_copy_of_sql_dir) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/sql", dt_env("DS_PROJECT_ROOT"));
    ds__migration_set *emb = NULL, *fs = NULL;
    ds_error err = {0};
    ds_status st = ds__migration_set_load(NULL, &emb, &err);
    ck_assert_ds_ok(st, err);
    st = ds__migration_set_load(dir, &fs, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(emb->count, fs->count);
    for (size_t i = 0; i < emb->count; i++) {
        const ds__migration_file *a = &emb->files[i], *b = &fs->files[i];
        ck_assert_int_eq(a->version, b->version);
        ck_assert_str_eq(a->name, b->name);
        ck_assert_str_eq(a->checksum, b->checksum);
        ck_assert_uint_eq(a->up_len, b->up_len);
        ck_assert_uint_eq(a->down_len, b->down_len);
        ck_assert(memcmp(a->up, b->up, a->up_len) == 0);
        ck_assert(memcmp(a->down, b->down, a->down_len) == 0);
    }
    ds__migration_set_free(emb);
    ds__migration_set_free(fs);
}
END_TEST

/* ---- file sets ----------------------------------------------------------- */

static ds_status build_raw(const ds__raw_file *raw, size_t n, ds_error *err) {
    ds__migration_set *set = NULL;
    ds_status st = ds__migration_set_build(raw, n, &set, err);
    ds__migration_set_free(set);
    return st;
}

START_TEST(test_migrate_files_refuse_bad_sets) {
    ds_error err = {0};
    ds__raw_file bad_name[] = {{"1_x.sql", "", 0}};
    ck_assert_int_eq(build_raw(bad_name, 1, &err), DS_ERR_MIGRATION);
    ck_assert_ptr_nonnull(strstr(err.message, "1_x.sql"));

    ds__raw_file zero[] = {{"0000_x.up.sql", "", 0}, {"0000_x.down.sql", "", 0}};
    ck_assert_int_eq(build_raw(zero, 2, &err), DS_ERR_MIGRATION);

    ds__raw_file dash[] = {{"0001_a-b.up.sql", "", 0}};
    ck_assert_int_eq(build_raw(dash, 1, &err), DS_ERR_MIGRATION);

    ds__raw_file no_down[] = {{"0001_a.up.sql", "SELECT 1;", 9}};
    ck_assert_int_eq(build_raw(no_down, 1, &err), DS_ERR_MIGRATION);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_a.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "0001_a.down.sql"));

    ds__raw_file no_up[] = {{"0001_a.down.sql", "", 0}};
    ck_assert_int_eq(build_raw(no_up, 1, &err), DS_ERR_MIGRATION);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_a.up.sql"));

    ds__raw_file same_version[] = {{"0001_a.up.sql", "", 0},
                                   {"0001_a.down.sql", "", 0},
                                   {"0001_b.up.sql", "", 0},
                                   {"0001_b.down.sql", "", 0}};
    ck_assert_int_eq(build_raw(same_version, 4, &err), DS_ERR_MIGRATION);
    ck_assert_ptr_nonnull(strstr(err.message, "same version 1"));

    ds__raw_file nul[] = {{"0001_a.up.sql", "SELECT\0 1;", 10},
                          {"0001_a.down.sql", "", 0}};
    ck_assert_int_eq(build_raw(nul, 2, &err), DS_ERR_MIGRATION);
    ck_assert_ptr_nonnull(strstr(err.message, "NUL"));

    ds__migration_set *set = NULL;
    ck_assert_int_eq(ds__migration_set_load("/nonexistent/dt_migrations", &set,
                                            &err),
                     DS_ERR_MIGRATION);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(err.message, "/nonexistent/dt_migrations"));
}
END_TEST

START_TEST(test_migrate_files_pair_sort_and_mark) {
#define RAW(name, text) {name, text, sizeof(text) - 1}
    ds__raw_file raw[] = {
        RAW("10_later.down.sql", ""),
        RAW("0002_idx.up.sql", "-- ds:no-transaction  \nCREATE INDEX CONCURRENTLY i ON t (a);"),
        RAW("10_later.up.sql", "SELECT 10;"),
        RAW("0002_idx.down.sql", "-- ds:no-transaction\nDROP INDEX CONCURRENTLY i;"),
        RAW("0001_t.up.sql", "-- ds:no-transactions\nCREATE TABLE t (a int);"),
        RAW("0001_t.down.sql", "DROP TABLE t;"),
    };
#undef RAW
    ds__migration_set *set = NULL;
    ds_error err = {0};
    ds_status st = ds__migration_set_build(raw, 6, &set, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(set->count, 3);
    ck_assert_int_eq(set->files[0].version, 1);
    ck_assert_int_eq(set->files[1].version, 2);
    ck_assert_int_eq(set->files[2].version, 10);
    ck_assert_str_eq(set->files[1].name, "idx");
    ck_assert_str_eq(set->files[1].up_file, "0002_idx.up.sql");
    ck_assert(!set->files[0].up_no_tx); /* "no-transactions" is not the mark */
    ck_assert(set->files[1].up_no_tx);
    ck_assert(set->files[1].down_no_tx);
    ck_assert_ptr_eq(ds__migration_set_find(set, 10), &set->files[2]);
    ck_assert_ptr_null(ds__migration_set_find(set, 3));
    /* SHA-256 of "SELECT 10;" */
    ck_assert_str_eq(set->files[2].checksum,
                     "7510ac2d3839abb00501a87ab8f322480d834271227b9db6e764531bef02c683");
    ds__migration_set_free(set);
}
END_TEST

/* ---- splitting ------------------------------------------------------------ */

typedef struct split_out {
    int n;
    char text[16][256];
    int line[16];
    char word1[16][24];
} split_out;

static ds_status collect_stmt(void *ud, const ds__sql_stmt *s, ds_error *err) {
    (void)err;
    split_out *o = ud;
    ck_assert_int_lt(o->n, 16);
    snprintf(o->text[o->n], sizeof o->text[0], "%.*s", (int)s->len, s->text);
    o->line[o->n] = s->line;
    snprintf(o->word1[o->n], sizeof o->word1[0], "%s", s->word1);
    o->n++;
    return DS_OK;
}

static split_out split(const char *sql) {
    split_out o;
    memset(&o, 0, sizeof o);
    ds_error err = {0};
    ds_status st = ds__sql_split("t.sql", sql, strlen(sql), collect_stmt, &o,
                                 &err);
    ck_assert_ds_ok(st, err);
    return o;
}

START_TEST(test_migrate_split_follows_sql_lexing) {
    split_out o = split("-- head; comment\n"
                        "CREATE TABLE a (x text DEFAULT ';');\n"
                        "/* block /* nested; */ still; */\n"
                        "INSERT INTO a VALUES (E'it\\'s; here'), ('a''b;');\n"
                        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n"
                        "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$\n"
                        "BEGIN RETURN 2; END $body$;\n"
                        "SELECT \"odd;name\" FROM a WHERE $1 = 'x';\n"
                        "CREATE PROCEDURE p() LANGUAGE sql\n"
                        "BEGIN ATOMIC\n"
                        "  SELECT CASE WHEN true THEN 1 END;\n"
                        "  SELECT 2;\n"
                        "END;\n"
                        "SELECT 'last' -- no semicolon\n");
    ck_assert_int_eq(o.n, 7);
    ck_assert_str_eq(o.text[0], "CREATE TABLE a (x text DEFAULT ';');");
    ck_assert_int_eq(o.line[0], 2);
    ck_assert_int_eq(o.line[1], 4);
    ck_assert_str_eq(o.word1[1], "insert");
    ck_assert_int_eq(o.line[2], 5);
    ck_assert_int_eq(o.line[3], 6);
    ck_assert_ptr_nonnull(strstr(o.text[3], "END $body$;"));
    ck_assert_int_eq(o.line[4], 8);
    ck_assert_int_eq(o.line[5], 9);
    ck_assert_ptr_nonnull(strstr(o.text[5], "SELECT 2;\nEND;"));
    ck_assert_int_eq(o.line[6], 14);
    ck_assert_str_eq(o.text[6], "SELECT 'last' -- no semicolon");

    o = split("  \n-- only a comment\n/* and another */\n");
    ck_assert_int_eq(o.n, 0);
}
END_TEST

/* The corners where a splitter most easily parts company with the server
 * (each expectation was checked against how psql splits the same text). */
START_TEST(test_migrate_split_tricky_sql) {
    static const struct {
        const char *sql;
        int n;
        const char *first; /* the first statement, exactly */
    } cases[] = {
        /* an escaped backslash just before the closing quote */
        {"SELECT E'a\\\\'; SELECT 2;", 2, "SELECT E'a\\\\';"},
        {"SELECT e'\\\\\\'';", 1, "SELECT e'\\\\\\'';"},
        /* backslash is plain outside E'' */
        {"SELECT 'a\\'; SELECT 2;", 2, "SELECT 'a\\';"},
        /* a dollar quote inside another, with a ; between the inner tags */
        {"SELECT $outer$ a $inner$ ; $inner$ b $outer$; SELECT 2;", 2,
         "SELECT $outer$ a $inner$ ; $inner$ b $outer$;"},
        {"SELECT $$;$$ || $a$;$a$;", 1, "SELECT $$;$$ || $a$;$a$;"},
        /* $ inside identifiers and parameters is no dollar quote */
        {"SELECT a$b$ FROM t; SELECT $1; SELECT 3;", 3, "SELECT a$b$ FROM t;"},
        /* a doubled quote and a ; inside a quoted identifier */
        {"SELECT \"a\"\";b\" FROM t; SELECT 2;", 2, "SELECT \"a\"\";b\" FROM t;"},
        /* nesting comments, and comment markers in strings */
        {"/* a /* b */ ; c */ SELECT 1;", 1, "SELECT 1;"},
        {"SELECT '--', '/*'; SELECT 2;", 2, "SELECT '--', '/*';"},
        {"SELECT 1 -- ; not yet\n + 1;", 1, "SELECT 1 -- ; not yet\n + 1;"},
        /* U&'' strings end at a plain quote */
        {"SELECT U&'d\\0061t;'; SELECT 2;", 2, "SELECT U&'d\\0061t;';"},
        /* routine bodies: BEGIN ATOMIC ... END, with a CASE inside */
        {"CREATE FUNCTION f(int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
         "SELECT 1; SELECT CASE WHEN $1 > 0 THEN 1 END; END; SELECT 2;",
         2,
         "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql BEGIN ATOMIC "
         "SELECT 1; SELECT CASE WHEN $1 > 0 THEN 1 END; END;"},
        /* "begin" elsewhere is an ordinary word */
        {"CREATE TABLE begin_at (x int); SELECT 2;", 2,
         "CREATE TABLE begin_at (x int);"},
        /* ; inside parentheses (a rule's action list) */
        {"CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); "
         "SELECT 3;",
         2, "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        split_out o = split(cases[i].sql);
        ck_assert_msg(o.n == cases[i].n, "case %zu: %d statements, not %d", i,
                      o.n, cases[i].n);
        ck_assert_msg(strcmp(o.text[0], cases[i].first) == 0,
                      "case %zu: first statement <%s>", i, o.text[0]);
    }
}
END_TEST

START_TEST(test_migrate_split_refuses_unterminated_and_maps_positions) {
    ds_error err = {0};
    split_out o;
    memset(&o, 0, sizeof o);
    const char *bad[] = {"SELECT 1;\nSELECT 'open;\n", "SELECT $x$ open;",
                         "SELECT 1; /* open", "SELECT \"open"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.n = 0;
        ds_status st = ds__sql_split("bad.sql", bad[i], strlen(bad[i]),
                                     collect_stmt, &o, &err);
        ck_assert_int_eq(st, DS_ERR_MIGRATION);
        ck_assert_ptr_nonnull(strstr(err.message, "bad.sql:"));
        ck_assert_ptr_nonnull(strstr(err.message, "unterminated"));
    }
    ck_assert_ptr_nonnull(strstr(err.message, "bad.sql:1:"));

    /* Positions count characters, not bytes. */
    const char *sql = "SELECT 'é',\n  1,\n  nope";
    ds__sql_stmt s = {sql, strlen(sql), 7, "", ""};
    ck_assert_int_eq(ds__sql_position_line(&s, 1), 7);
    ck_assert_int_eq(ds__sql_position_line(&s, 20), 9); /* 'n' of nope */
    ck_assert_int_eq(ds__sql_position_line(&s, 12), 7); /* the newline */
    ck_assert_int_eq(ds__sql_position_line(&s, 13), 8);
}
END_TEST

Suite *ds_test_migrate_split_suite(void) {
    Suite *s = suite_create("migrate_split");
    TCase *tc = tcase_create("embedded");
    tcase_add_test(tc, test_migrate_schema_version_is_newest_embedded);
    tcase_add_test(tc, test_migrate_embedded_is_byte_exact_copy_of_sql_dir);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, test_migrate_files_refuse_bad_sets);
    tcase_add_test(tc, test_migrate_files_pair_sort_and_mark);
    suite_add_tcase(s, tc);
    tc = tcase_create("split");
    tcase_add_test(tc, test_migrate_split_follows_sql_lexing);
    tcase_add_test(tc, test_migrate_split_tricky_sql);
    tcase_add_test(tc, test_migrate_split_refuses_unterminated_and_maps_positions);
    suite_add_tcase(s, tc);
    return s;
}
