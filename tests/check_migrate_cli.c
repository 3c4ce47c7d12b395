/* The ds-migrate command: exit codes, JSON output and JSON Lines
 * progress, against the real PostgreSQL. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"
#include "migrate_fixture.h"

/* A directory holding a copy of the project's sql/ files. */
static char *copy_of_sql_dir(void) {
    char *d = dt_temp_dir("migrate");
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "cp '%s'/sql/*.sql '%s'/",
             dt_env("DS_PROJECT_ROOT"), d);
    ck_assert_int_eq(system(cmd), 0);
    return d;
}

/* Runs ds-migrate with `args` (a --json command), checks its exit status
 * and returns the result object: the last of the JSON Lines it printed
 * (progress events come before it). */
static json_t *run_cli_json(const char *args, int want_status) {
    char *out = NULL;
    ck_assert_int_eq(run_cli(args, false, &out), want_status);
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    char *last = strrchr(out, '\n');
    json_error_t jerr;
    json_t *j = json_loads(last ? last + 1 : out, 0, &jerr);
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    free(out);
    return j;
}

/* ---- ds-migrate ---------------------------------------------------------------- */

START_TEST(test_migrate_cli_exit_codes_and_json) {
    char *url = dt_create_db("mig_cli");
    char args[2048], *out = NULL;
    ck_assert_int_eq(run_cli("--help", false, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: ds-migrate"));
    free(out);
    ck_assert_int_eq(run_cli("", false, NULL), 2);
    ck_assert_int_eq(run_cli("sideways", false, NULL), 2);
    ck_assert_int_eq(run_cli("--frobnicate up", false, NULL), 2);
    ck_assert_int_eq(run_cli("to", false, NULL), 2);
    ck_assert_int_eq(run_cli("to minus", false, NULL), 2);
    ck_assert_int_eq(run_cli("down 0", false, NULL), 2);
    ck_assert_int_eq(run_cli("status extra", false, NULL), 2);
    ck_assert_int_eq(run_cli("maintain 500", false, NULL), 2);
    ck_assert_int_eq(run_cli("--dry-run status", false, NULL), 2);
    ck_assert_int_eq(run_cli("--lock-timeout x up", false, NULL), 2);
    ck_assert_int_eq(run_cli("--database-url", false, NULL), 2);
    /* an empty value is no value (not "DATABASE_URL is not set") */
    ck_assert_int_eq(run_cli("--database-url '' status", false, NULL), 2);
    ck_assert_int_eq(run_cli("--database-url= status", false, NULL), 2);
    ck_assert_int_eq(run_cli("--dir '' status", true, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "--dir needs a value"));
    free(out);

    /* A server that is not there: exit 1, the password never shown. */
    ck_assert_int_eq(run_cli("--database-url 'postgresql://ds:hunter2secret@"
                             "127.0.0.1:1/x?connect_timeout=2' status",
                             true, &out),
                     1);
    ck_assert_ptr_null(strstr(out, "hunter2secret"));
    free(out);

    snprintf(args, sizeof args, "--database-url '%s' --json up", url);
    json_t *j = run_cli_json(args, 0);
    ck_assert(json_is_true(json_object_get(j, "ok")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "command")), "up");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "ran")),
                      (size_t)DS_SCHEMA_VERSION);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "current_version")),
                     DS_SCHEMA_VERSION);
    json_decref(j);

    snprintf(args, sizeof args, "--database-url '%s' --json status", url);
    j = run_cli_json(args, 0);
    json_t *migs = json_object_get(j, "migrations");
    ck_assert_uint_eq(json_array_size(migs), (size_t)DS_SCHEMA_VERSION);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(migs, 0),
                                                       "state")),
                     "applied");
    json_decref(j);

    snprintf(args, sizeof args, "--database-url '%s' status", url);
    ck_assert_int_eq(run_cli(args, false, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "platform_schema"));
    free(out);
    snprintf(args, sizeof args, "--database-url '%s' verify", url);
    ck_assert_int_eq(run_cli(args, false, NULL), 0);
    snprintf(args, sizeof args, "--database-url '%s' check", url);
    ck_assert_int_eq(run_cli(args, false, NULL), 0);
    snprintf(args, sizeof args, "--database-url=%s --json maintain 1", url);
    ck_assert_int_eq(run_cli(args, false, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"created\": 0"));
    free(out);

    /* A tampered directory: verify and up fail with exit 1 and JSON says why. */
    char *dir = copy_of_sql_dir();
    dt_write_file(dir, "0001_platform_schema.up.sql", "-- tampered\n");
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' verify", url,
             dir);
    ck_assert_int_eq(run_cli(args, false, NULL), 1);
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' --json up", url,
             dir);
    j = run_cli_json(args, 1);
    ck_assert(json_is_false(json_object_get(j, "ok")));
    json_t *e = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
                     "DS_ERR_MIGRATION");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e, "message")),
                                 "0001_platform_schema.up.sql"));
    json_decref(j);
    dt_rm_dir(dir);

    /* down, to, dry-run through the command line. */
    snprintf(args, sizeof args, "--database-url '%s' down", url);
    ck_assert_int_eq(run_cli(args, false, &out), 0);
    char newest[32];
    snprintf(newest, sizeof newest, "reverted %04d_", DS_SCHEMA_VERSION);
    ck_assert_ptr_nonnull(strstr(out, newest));
    free(out);
    snprintf(args, sizeof args, "--database-url '%s' dry-run", url);
    ck_assert_int_eq(run_cli(args, false, &out), 0);
    snprintf(newest, sizeof newest, "%04d_", DS_SCHEMA_VERSION);
    ck_assert_ptr_nonnull(strstr(out, newest));
    ck_assert_ptr_nonnull(strstr(out, ".up.sql"));
    free(out);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION - 1);
    snprintf(args, sizeof args, "--database-url '%s' to 0", url);
    ck_assert_int_eq(run_cli(args, false, NULL), 0);
    ck_assert_int_eq(applied_count(url), 0);
    snprintf(args, sizeof args, "--database-url '%s' to 99", url);
    ck_assert_int_eq(run_cli(args, false, NULL), 1);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* --json: stdout is JSON Lines, a progress event per statement and per
 * migration (the documented fields, done never going back within an item
 * and phase, each ending at total), then the result; without --json and
 * without a terminal, no progress at all. */
START_TEST(test_migrate_cli_json_lines_report_progress) {
    char *url = dt_create_db("mig_cli_prog");
    char args[2048];
    snprintf(args, sizeof args, "--database-url '%s' --json up", url);
    char *out = NULL;
    ck_assert_int_eq(run_cli(args, false, &out), 0);
    int lines = 0, progress = 0, files = 0;
    long long done = -1;
    char key[300] = "";
    json_t *result = NULL;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        ck_assert_msg(result == NULL, "a line after the result: %s", line);
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        ck_assert_msg(j != NULL, "line %d is not JSON: %s", lines, line);
        const char *ev = json_string_value(json_object_get(j, "event"));
        if (!ev) {
            result = j; /* the result object: the last line */
            continue;
        }
        ck_assert_str_eq(ev, "progress");
        progress++;
        ck_assert_str_eq(json_string_value(json_object_get(j, "operation")),
                         "migrate");
        const char *item = json_string_value(json_object_get(j, "item"));
        const char *phase = json_string_value(json_object_get(j, "phase"));
        const char *unit = json_string_value(json_object_get(j, "unit"));
        ck_assert_ptr_nonnull(item);
        ck_assert_ptr_nonnull(phase);
        ck_assert_ptr_nonnull(unit);
        ck_assert(json_is_integer(json_object_get(j, "elapsed_ms")));
        ck_assert(json_is_number(json_object_get(j, "rate_per_s")));
        json_t *eta = json_object_get(j, "eta_s");
        ck_assert(json_is_number(eta) || json_is_null(eta));
        long long d = json_integer_value(json_object_get(j, "done"));
        long long t = json_integer_value(json_object_get(j, "total"));
        ck_assert_int_le(d, t);
        char k[300];
        snprintf(k, sizeof k, "%s/%s", item, phase);
        if (!strcmp(k, key))
            ck_assert_int_gt(d, done);
        snprintf(key, sizeof key, "%s", k);
        done = d;
        if (!strcmp(phase, "statement")) {
            ck_assert_str_eq(unit, "statements");
            ck_assert_ptr_nonnull(strstr(item, ".up.sql"));
        } else {
            ck_assert_str_eq(phase, "files");
            ck_assert_str_eq(item, "");
            files++;
            ck_assert_int_eq(d, files);
            ck_assert_int_eq(t, DS_SCHEMA_VERSION);
        }
        json_decref(j);
    }
    free(out);
    ck_assert_int_eq(files, DS_SCHEMA_VERSION);
    ck_assert_int_gt(progress, DS_SCHEMA_VERSION * 2);
    ck_assert_ptr_nonnull(result);
    ck_assert(json_is_true(json_object_get(result, "ok")));
    ck_assert_uint_eq(json_array_size(json_object_get(result, "ran")),
                      (size_t)DS_SCHEMA_VERSION);
    json_decref(result);

    /* no terminal, no --json: the result line only (stderr included) */
    snprintf(args, sizeof args, "--database-url '%s' to 0", url);
    ck_assert_int_eq(run_cli(args, true, &out), 0);
    ck_assert_ptr_null(strstr(out, "statements"));
    ck_assert_ptr_null(strstr(out, "ETA"));
    ck_assert_ptr_nonnull(strstr(out, "reverted 0001_platform_schema"));
    free(out);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* JSON strings are UTF-8; an error message cut at DS_ERROR_MESSAGE_MAX bytes
 * in the middle of a character, or a migration file in another encoding,
 * must still reach the JSON (the byte becomes U+FFFD), not vanish. */
START_TEST(test_migrate_cli_json_keeps_text_that_is_not_utf8) {
    char *url = dt_create_db("mig_cli_utf8");
    char *dir = dt_temp_dir("migrate");
    char args[2048], sql[256], want[64];
    json_t *j;
    /* 400 two-byte characters after one or two ASCII ones: one of the two
     * 512-byte messages ends in the middle of a character */
    for (int odd = 0; odd < 2; odd++) {
        const char *lead = odd ? "x" : "xy";
        snprintf(sql, sizeof sql,
                 "DO $$ BEGIN RAISE EXCEPTION '%s%%', repeat('\xc3\xa9', 400); "
                 "END $$;\n",
                 lead);
        dt_write_file(dir, "0001_loud.up.sql", sql);
        dt_write_file(dir, "0001_loud.down.sql", "SELECT 1;\n");
        snprintf(args, sizeof args, "--database-url '%s' --dir '%s' --json up",
                 url, dir);
        j = run_cli_json(args, 1);
        ck_assert(json_is_false(json_object_get(j, "ok")));
        json_t *e = json_object_get(j, "error");
        ck_assert_msg(e != NULL, "no error in the JSON");
        ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
                         "DS_ERR_MIGRATION");
        ck_assert_str_eq(json_string_value(json_object_get(e, "sqlstate")),
                         "P0001");
        snprintf(want, sizeof want, "0001_loud.up.sql:1: %s\xc3\xa9\xc3\xa9", lead);
        ck_assert_ptr_nonnull(
            strstr(json_string_value(json_object_get(e, "message")), want));
        json_decref(j);
    }

    /* Latin-1 in a file: the dry run still lists the step. */
    dt_write_file(dir, "0001_loud.up.sql", "SELECT 'caf\xe9';\n");
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' --json dry-run",
             url, dir);
    j = run_cli_json(args, 0);
    json_t *steps = json_object_get(j, "steps");
    ck_assert_uint_eq(json_array_size(steps), 1);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(
                                     json_array_get(steps, 0), "sql")),
                                 "SELECT 'caf\xef\xbf\xbd';"));
    json_decref(j);
    /* the failure rolled back, the dry run wrote nothing */
    ck_assert(!table_exists(url, "ds_schema_migrations"));
    dt_rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_migrate_cli_suite(void) {
    Suite *s = suite_create("migrate_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_cli_exit_codes_and_json);
    tcase_add_test(tc, test_migrate_cli_json_keeps_text_that_is_not_utf8);
    tcase_add_test(tc, test_migrate_cli_json_lines_report_progress);
    suite_add_tcase(s, tc);
    return s;
}
