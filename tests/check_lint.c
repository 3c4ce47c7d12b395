/* ds-migrate lint: each rule with a failing and a passing example, the
 * waivers, bad input, and the command line. No database needed. */
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "migrate/migrate_internal.h"
#include "dt_files.h"
#include "test_util.h"

/* Lints `sql` as file "t.up.sql"; fails the test on a lint error. */
static ds_migrate_lint_report *lint(const char *sql) {
    ds_migrate_lint_report *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    ds_error err = {0};
    ds_status st = ds__lint_sql(r, "t.up.sql", sql, strlen(sql), &err);
    ck_assert_ds_ok(st, err);
    return r;
}

/* How many unwaived findings of `rule` the report holds. */
static int count_rule(const ds_migrate_lint_report *r, const char *rule) {
    int n = 0;
    for (size_t k = 0; k < r->count; k++)
        n += !strcmp(r->items[k].rule, rule) && !r->items[k].waived;
    return n;
}

static const ds_migrate_lint_finding *find_rule(const ds_migrate_lint_report *r,
                                        const char *rule) {
    for (size_t k = 0; k < r->count; k++)
        if (!strcmp(r->items[k].rule, rule))
            return &r->items[k];
    return NULL;
}

static void report_free(ds_migrate_lint_report *r) {
    /* ds__lint_sql appends to a caller's report; the public free frees
     * items and the struct alike. */
    ds_migrate_lint_report_free(r);
}

#define LT "SET lock_timeout = '2s';\n"

typedef struct rule_case {
    const char *rule;
    const char *bad;
    const char *good;
} rule_case;

static const rule_case cases[] = {
    {"index-not-concurrent", LT "CREATE INDEX t_a_idx ON t (a);",
     "-- ds:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_idx "
     "ON t (a);"},
    /* a table created earlier in the same file is new */
    {"index-not-concurrent", LT "CREATE UNIQUE INDEX t_a_idx ON public.t (a);",
     "CREATE TABLE t (a int);\nCREATE INDEX t_a_idx ON t (a);"},
    {"concurrently-in-transaction",
     "CREATE INDEX CONCURRENTLY t_a_idx ON t (a);",
     "-- ds:no-transaction\nCREATE INDEX CONCURRENTLY t_a_idx ON t (a);"},
    {"constraint-not-valid",
     LT "ALTER TABLE t ADD CONSTRAINT t_a_check CHECK (a > 0);",
     LT "ALTER TABLE t ADD CONSTRAINT t_a_check CHECK (a > 0) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT t_a_check;"},
    {"constraint-not-valid",
     LT "ALTER TABLE t ADD CONSTRAINT t_u_fk FOREIGN KEY (u) REFERENCES users;",
     LT "ALTER TABLE t ADD CONSTRAINT t_u_fk FOREIGN KEY (u) REFERENCES users "
        "NOT VALID;"},
    {"constraint-builds-index", LT "ALTER TABLE t ADD CONSTRAINT t_a UNIQUE (a);",
     LT "ALTER TABLE t ADD CONSTRAINT t_a UNIQUE USING INDEX t_a_idx;"},
    {"set-not-null", LT "ALTER TABLE t ALTER COLUMN a SET NOT NULL;",
     LT "ALTER TABLE t ADD CONSTRAINT t_a_nn CHECK (a IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT t_a_nn;\n"
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL;"},
    {"column-type-rewrite", LT "ALTER TABLE t ALTER COLUMN a TYPE bigint;",
     LT "ALTER TABLE t ADD COLUMN a_new bigint;"},
    {"column-type-rewrite",
     LT "ALTER TABLE t ALTER COLUMN a SET DATA TYPE bigint;",
     "CREATE TABLE t (a int);\nALTER TABLE t ALTER COLUMN a TYPE bigint;"},
    {"table-rewrite", LT "ALTER TABLE t SET LOGGED;",
     LT "ALTER TABLE t SET (fillfactor = 90);"},
    {"volatile-default",
     LT "ALTER TABLE t ADD COLUMN token uuid DEFAULT gen_random_uuid();",
     LT "ALTER TABLE t ADD COLUMN kind text DEFAULT 'fact';"},
    {"volatile-default", LT "ALTER TABLE t ADD COLUMN n bigserial;",
     LT "ALTER TABLE t ADD COLUMN n bigint;"},
    {"add-column-not-null", LT "ALTER TABLE t ADD COLUMN b int NOT NULL;",
     LT "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 0;"},
    {"rename-column", LT "ALTER TABLE t RENAME COLUMN a TO b;",
     LT "ALTER TABLE t RENAME CONSTRAINT c1 TO c2;"},
    {"rename-table", LT "ALTER TABLE t RENAME TO t2;",
     "CREATE TABLE t (a int);\nALTER TABLE t RENAME TO t2;"},
    {"drop-column", LT "ALTER TABLE t DROP COLUMN a;",
     LT "ALTER TABLE t DROP CONSTRAINT t_a_check;"},
    {"vacuum-full", "VACUUM FULL t;", "VACUUM (ANALYZE) t;"},
    {"cluster", "CLUSTER t USING t_pkey;", "ANALYZE t;"},
    {"reindex-not-concurrent", "REINDEX INDEX t_a_idx;",
     "-- ds:no-transaction\nREINDEX INDEX CONCURRENTLY t_a_idx;"},
    {"concurrently-in-transaction", "REINDEX INDEX CONCURRENTLY t_a_idx;",
     "-- ds:no-transaction\nREINDEX INDEX CONCURRENTLY t_a_idx;"},
    {"lock-timeout", "DROP INDEX t_a_idx;",
     "-- ds:no-transaction\nDROP INDEX CONCURRENTLY t_a_idx;"},
    {"lock-timeout",
     "CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE "
     "FUNCTION touch();",
     LT "CREATE TRIGGER t_touch BEFORE UPDATE ON t FOR EACH ROW EXECUTE "
        "FUNCTION touch();"},
    {"lock-table", LT "LOCK TABLE t IN ACCESS EXCLUSIVE MODE;",
     LT "LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE;"},
    {"partition-of-existing",
     LT "CREATE TABLE ev_2030_01 PARTITION OF ev FOR VALUES FROM "
        "('2030-01-01') TO ('2030-02-01');",
     LT "CREATE TABLE ev_2030_01 (LIKE ev);\n"
        "ALTER TABLE ev ATTACH PARTITION ev_2030_01 FOR VALUES FROM "
        "('2030-01-01') TO ('2030-02-01');"},
    {"lock-timeout", "ALTER TABLE t ADD COLUMN b int;",
     "SET lock_timeout = '2s';\nALTER TABLE t ADD COLUMN b int;"},
    {"lock-timeout",
     "SET lock_timeout = 0;\nALTER TABLE t ADD COLUMN b int;",
     "SELECT set_config('lock_timeout', '3s', true);\n"
     "ALTER TABLE t ADD COLUMN b int;"},
};

START_TEST(test_lint_each_rule_fails_and_passes) {
    const rule_case *c = &cases[_i];
    ds_migrate_lint_report *bad = lint(c->bad);
    ck_assert_msg(count_rule(bad, c->rule) >= 1, "%s: not found in:\n%s",
                  c->rule, c->bad);
    const ds_migrate_lint_finding *f = find_rule(bad, c->rule);
    ck_assert_int_ge(f->line, 1);
    ck_assert_str_eq(f->file, "t.up.sql");
    ck_assert(strlen(f->message) > 0 && strlen(f->why) > 20 &&
              strlen(f->fix) > 20);
    report_free(bad);
    ds_migrate_lint_report *good = lint(c->good);
    ck_assert_msg(count_rule(good, c->rule) == 0, "%s: reported for:\n%s",
                  c->rule, c->good);
    report_free(good);
}
END_TEST

/* What Squawk cannot see: DDL inside a DO block, inside EXECUTE and
 * format() strings (pieces joined), and inside a function body. */
START_TEST(test_lint_sees_inside_do_execute_and_functions) {
    ds_migrate_lint_report *r = lint(
        "DO $m$\n"
        "BEGIN\n"
        "    IF true THEN\n"
        "        CREATE INDEX t_b_idx ON t (b);\n"
        "        EXECUTE format('ALTER TABLE t ADD CONSTRAINT t_dim '\n"
        "                       'CHECK (octet_length(e) = %s)', 4 * 3);\n"
        "        EXECUTE 'ALTER TABLE ' || quote_ident('t') || ' DROP COLUMN c';\n"
        "    END IF;\n"
        "END\n"
        "$m$;\n"
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$\n"
        "BEGIN\n"
        "    EXECUTE format('LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE', 't');\n"
        "END $f$;\n");
    const ds_migrate_lint_finding *f = find_rule(r, "index-not-concurrent");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->line, 4);
    f = find_rule(r, "constraint-not-valid");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->line, 5);
    ck_assert_ptr_nonnull(find_rule(r, "drop-column"));
    f = find_rule(r, "lock-table");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->line, 13);
    /* lock_timeout is the caller's business inside a function, not in a DO
     * block, which runs now */
    ck_assert_int_ge(count_rule(r, "lock-timeout"), 1);
    for (size_t k = 0; k < r->count; k++)
        if (!strcmp(r->items[k].rule, "lock-timeout"))
            ck_assert_int_lt(r->items[k].line, 11);
    ck_assert_uint_ge(r->errors, 4);
    report_free(r);
}
END_TEST

/* The memory migration as it shipped before it was made online: every
 * problem sat inside its DO block, where a linter that reads only
 * top-level statements sees nothing. */
START_TEST(test_lint_finds_what_the_old_0003_hid_in_its_do_block) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tests/fixtures/lint_0003_before_online.sql",
             dt_env("DS_PROJECT_ROOT"));
    const char *paths[] = {path};
    ds_migrate_lint_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_lint(NULL, paths, 1, &r, &err);
    ck_assert_ds_ok(st, err);
    /* HNSW and sketch indexes inside the DO block, GIN at the top level */
    ck_assert_int_eq(count_rule(r, "index-not-concurrent"), 3);
    const ds_migrate_lint_finding *f = find_rule(r, "constraint-not-valid");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->line, 76);
    ck_assert_int_ge(count_rule(r, "lock-timeout"), 1);
    ck_assert_uint_ge(r->errors, 5);
    ds_migrate_lint_report_free(r);
}
END_TEST

START_TEST(test_lint_waiver_needs_reason_and_known_rule) {
    /* a waiver with a reason waives, and the reason is kept */
    ds_migrate_lint_report *r = lint(LT
                             "-- ds:lint-ignore drop-column: no release since "
                             "1.4 reads legacy_flag\n"
                             "ALTER TABLE t\n    DROP COLUMN legacy_flag;\n");
    ck_assert_int_eq(count_rule(r, "drop-column"), 0);
    const ds_migrate_lint_finding *f = find_rule(r, "drop-column");
    ck_assert_ptr_nonnull(f);
    ck_assert(f->waived);
    ck_assert_str_eq(f->waiver, "no release since 1.4 reads legacy_flag");
    ck_assert_uint_eq(r->errors, 0);
    ck_assert_uint_eq(r->waived, 1);
    report_free(r);

    /* without a reason: an error, and the finding stays */
    r = lint(LT "-- ds:lint-ignore drop-column\n"
                "ALTER TABLE t DROP COLUMN legacy_flag;\n");
    ck_assert_int_eq(count_rule(r, "waiver-without-reason"), 1);
    ck_assert_int_eq(count_rule(r, "drop-column"), 1);
    ck_assert_int_eq(find_rule(r, "waiver-without-reason")->line, 2);
    report_free(r);
    r = lint(LT "-- ds:lint-ignore drop-column:   \n"
                "ALTER TABLE t DROP COLUMN legacy_flag;\n");
    ck_assert_int_eq(count_rule(r, "waiver-without-reason"), 1);
    report_free(r);

    /* an unknown rule is an error; a waiver that waives nothing a warning */
    r = lint(LT "-- ds:lint-ignore drop-colum: typo\n"
                "ALTER TABLE t DROP COLUMN legacy_flag;\n"
                "-- ds:lint-ignore cluster: nothing below clusters\n"
                "ANALYZE t;\n");
    ck_assert_int_eq(count_rule(r, "waiver-unknown-rule"), 1);
    ck_assert_int_eq(count_rule(r, "drop-column"), 1);
    ck_assert_int_eq(count_rule(r, "waiver-unused"), 1);
    ck_assert_int_eq(find_rule(r, "waiver-unused")->level, DS_MIGRATE_LINT_WARNING);
    report_free(r);
}
END_TEST

START_TEST(test_lint_refuses_unparseable_files) {
    ds_migrate_lint_report *r = calloc(1, sizeof *r);
    ds_error err = {0};
    const char *sql = LT "ALTER TABLE t ADD COLUMN b text DEFAULT 'oops;\n";
    ds_status st = ds__lint_sql(r, "bad.up.sql", sql, strlen(sql), &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "bad.up.sql:2"));
    ck_assert_ptr_nonnull(strstr(err.message, "unterminated"));
    const char nul[] = "SELECT 1;\0DROP TABLE t;";
    st = ds__lint_sql(r, "nul.up.sql", nul, sizeof nul - 1, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "NUL"));
    ds_migrate_lint_report_free(r);

    /* the public call: a missing file, bad arguments */
    ds_migrate_lint_report *out = (ds_migrate_lint_report *)&err; /* reset on entry */
    const char *paths[] = {"/nonexistent/x.up.sql"};
    st = ds_migrate_lint(NULL, paths, 1, &out, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(err.message, "cannot open"));
    st = ds_migrate_lint(NULL, NULL, 1, &out, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_migrate_lint(NULL, paths, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
}
END_TEST

/* The shipped migrations pass (what `make check` also runs). */
START_TEST(test_lint_shipped_migrations_have_no_error) {
    ds_migrate_lint_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_lint(NULL, NULL, 0, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(r->files, (size_t)ds__migrate_embedded_latest());
    for (size_t k = 0; k < r->count; k++)
        ck_assert_msg(r->items[k].waived || r->items[k].level != DS_MIGRATE_LINT_ERROR,
                      "%s:%d: [%s] %s", r->items[k].file, r->items[k].line,
                      r->items[k].rule, r->items[k].message);
    ck_assert_uint_eq(r->errors, 0);
    ds_migrate_lint_report_free(r);
}
END_TEST

/* ---- the command line ---------------------------------------------------- */

static int run(const char *args, char **out) {
    char cmd[8192];
    /* no database for lint: it must not need one */
    snprintf(cmd, sizeof cmd, "env -u DATABASE_URL '%s' %s 2>&1",
             dt_ds_migrate_path(), args);
    return dt_run_capture(cmd, out);
}

static char *write_temp(const char *name, const char *text) {
    const char *base = dt_env_opt("TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/dt_lint_XXXXXX", base ? base : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *path = malloc(PATH_MAX + 64);
    snprintf(path, PATH_MAX + 64, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_temp(char *path) {
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    rmdir(path);
    free(path);
}

START_TEST(test_lint_cli_exit_codes_and_json) {
    char *bad = write_temp("0009_bad.up.sql",
                           "DO $$ BEGIN CREATE INDEX i ON t (a); END $$;\n");
    char *good = write_temp("0009_good.up.sql",
                            "-- ds:no-transaction\n"
                            "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);\n");
    char *broken = write_temp("0009_broken.up.sql", "SELECT 'unterminated;\n");
    char args[4096], *out = NULL;

    snprintf(args, sizeof args, "lint '%s'", bad);
    ck_assert_int_eq(run(args, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "0009_bad.up.sql:1: error [index-not-concurrent]"));
    ck_assert_ptr_nonnull(strstr(out, "fix: CREATE INDEX CONCURRENTLY"));
    free(out);

    snprintf(args, sizeof args, "lint '%s'", good);
    ck_assert_int_eq(run(args, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "0 error(s)"));
    free(out);

    snprintf(args, sizeof args, "--json lint '%s' '%s'", good, bad);
    ck_assert_int_eq(run(args, &out), 1);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    free(out);
    ck_assert(json_is_false(json_object_get(j, "ok")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "files")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "errors")), 1);
    json_t *f0 = json_array_get(json_object_get(j, "findings"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(f0, "rule")),
                     "index-not-concurrent");
    ck_assert_str_eq(json_string_value(json_object_get(f0, "level")), "error");
    ck_assert_int_eq(json_integer_value(json_object_get(f0, "line")), 1);
    json_decref(j);

    /* a file that cannot be parsed: a clear error, exit 1 */
    snprintf(args, sizeof args, "lint '%s'", broken);
    ck_assert_int_eq(run(args, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "0009_broken.up.sql:1: unterminated"));
    free(out);

    /* the shipped migrations: clean */
    ck_assert_int_eq(run("lint", &out), 0);
    free(out);
    remove_temp(bad);
    remove_temp(good);
    remove_temp(broken);
}
END_TEST

Suite *ds_test_lint_suite(void) {
    Suite *s = suite_create("lint");
    TCase *tc = tcase_create("rules");
    tcase_add_loop_test(tc, test_lint_each_rule_fails_and_passes, 0,
                        (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_lint_sees_inside_do_execute_and_functions);
    tcase_add_test(tc, test_lint_finds_what_the_old_0003_hid_in_its_do_block);
    suite_add_tcase(s, tc);
    tc = tcase_create("waivers");
    tcase_add_test(tc, test_lint_waiver_needs_reason_and_known_rule);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_lint_refuses_unparseable_files);
    suite_add_tcase(s, tc);
    tc = tcase_create("shipped");
    tcase_add_test(tc, test_lint_shipped_migrations_have_no_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_lint_cli_exit_codes_and_json);
    suite_add_tcase(s, tc);
    return s;
}
