/* ds_migrate_rehearse() and `ds-migrate rehearse` on real PostgreSQL: the
 * shipped migrations rehearse clean from an earlier version; a rewrite
 * hidden in a DO block, which lint passes or a waiver hides, fails with
 * its table, lock mode and rewrite; bad input is refused before anything
 * is created; the target is never changed and no scratch database stays
 * behind. */
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dt_files.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------- */

/* How many databases a rehearsal of `url` left behind. */
static long long scratch_left(const char *url) {
    char *name = dt_db_name(url);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_database WHERE starts_with(datname, "
             "'%s_rehearse_')",
             name);
    free(name);
    return dt_sql_int(url, sql);
}

/* A digest of the target's tables, columns, types and files: equal
 * before and after means nothing was changed or rewritten. */
static char *schema_digest(const char *url) {
    PGconn *c = dt_connect(url);
    PGresult *r = PQexec(
        c, "SELECT md5(coalesce(string_agg(c.relname || ':' || c.relfilenode "
           "|| ':' || a.attname || ':' || format_type(a.atttypid, "
           "a.atttypmod), ',' ORDER BY c.relname, a.attnum), '')) "
           "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
           "WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 "
           "AND NOT a.attisdropped");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    char *d = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return d;
}

static long long version_of(const char *url) {
    return dt_sql_int(url, "SELECT coalesce(max(version), 0) FROM "
                           "ds_schema_migrations");
}

static const ds_migrate_rehearse_table *table_line(const ds_migrate_rehearse_report *r,
                                           const char *name) {
    for (size_t k = 0; k < r->ntables; k++)
        if (!strcmp(r->tables[k].table, name))
            return &r->tables[k];
    return NULL;
}

/* Runs ds-migrate with DATABASE_URL=url; stdout and stderr in *out. */
static int run_cli(const char *url, const char *args, char **out) {
    char cmd[8192];
    ck_assert_int_eq(setenv("DS_TEST_REHEARSE_URL", url, 1), 0);
    snprintf(cmd, sizeof cmd,
             "DATABASE_URL=\"$DS_TEST_REHEARSE_URL\" '%s' %s 2>&1",
             dt_ds_migrate_path(), args);
    return dt_run_capture(cmd, out);
}

/* ---- the shipped migrations ---------------------------------------------- */

/* From version 2 (before the memory and soft-delete migrations) to the
 * latest: every table filled, every pending file applied on the scratch
 * database, no blocking lock on a populated table held for a second; the
 * target stays at 2 and the scratch database is gone. */
START_TEST(test_rehearse_shipped_migrations_from_version_2_pass) {
    char *url = dt_create_db("rh_ship");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_pool *pool = NULL;
    ds_error err = {0};
    ds_status st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_to(pool, NULL, 2, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    char *before = schema_digest(url);

    ds_migrate_rehearse_options o = DS_MIGRATE_REHEARSE_OPTIONS_INIT;
    o.rows_per_table = 2000;
    ds_migrate_rehearse_report *r = NULL;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_msg(r->ok, "rehearsal failed: %s (%zu violation(s))",
                  r->error ? r->error : "", r->violations);
    ck_assert_ptr_null(r->error);
    ck_assert_int_eq(r->from_version, 2);
    ck_assert_int_eq(r->to_version, DS_SCHEMA_VERSION);
    ck_assert_uint_eq(r->applied, DS_SCHEMA_VERSION - 2);
    ck_assert_uint_gt(r->nstatements, 0);
    ck_assert_uint_eq(r->violations, 0);
    ck_assert(!r->scratch_kept);
    /* the platform's tables hold the synthetic rows asked for */
    const char *filled[] = {"public.users", "public.conversations",
                            "public.messages", "public.memory_facts",
                            "public.analytics_events"};
    for (size_t k = 0; k < sizeof filled / sizeof filled[0]; k++) {
        const ds_migrate_rehearse_table *t = table_line(r, filled[k]);
        ck_assert_msg(t != NULL, "%s not in the report", filled[k]);
        ck_assert_msg(t->rows == 2000 && !t->skipped, "%s: %lld rows (%s)",
                      filled[k], (long long)t->rows,
                      t->skipped ? t->skipped : "");
    }
    /* the locks the migrations took on populated tables were observed */
    bool users_locked = false;
    for (size_t k = 0; k < r->nlocks; k++) {
        const ds_migrate_rehearse_lock *l = &r->locks[k];
        ck_assert_uint_lt(l->statement, r->nstatements);
        if (!strcmp(l->table, "public.users") && l->rows == 2000)
            users_locked = true;
    }
    ck_assert_msg(users_locked, "no lock on users seen (0004 alters it)");
    ds_migrate_rehearse_report_free(r);

    ck_assert_int_eq(version_of(url), 2);
    char *after = schema_digest(url);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    ck_assert_int_eq(scratch_left(url), 0);
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- a rewrite hidden in a DO block ------------------------------------ */

static const char table_up[] =
    "SET lock_timeout = '2s';\n"
    "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "                c int NOT NULL, note text CHECK (note IN ('a', 'b')));\n"
    "CREATE TABLE child (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "                    t_id bigint NOT NULL REFERENCES t (id));\n"
    "CREATE TABLE odd (p point NOT NULL);\n";
static const char table_down[] = "DROP TABLE odd, child, t;\n";

/* What lint cannot see (the statement is assembled at run time) and what a
 * wrong waiver hides: both take ACCESS EXCLUSIVE and rewrite t. */
static const char *const widen_up[] = {
    "SET lock_timeout = '2s';\n"
    "DO $$ BEGIN EXECUTE (SELECT string_agg(w, ' ') FROM unnest(ARRAY[\n"
    "    'ALTER', 'TABLE', 't', 'ALTER', 'COLUMN', 'c', 'TYPE', 'bigint']) w);\n"
    "END $$;\n",
    "SET lock_timeout = '2s';\n"
    "-- ds:lint-ignore column-type-rewrite: int to bigint is cheap (it is not)\n"
    "DO $$ BEGIN EXECUTE 'ALTER TABLE t ALTER COLUMN c TYPE bigint'; END $$;\n",
};

START_TEST(test_rehearse_sees_rewrite_inside_do_block) {
    char *dir = dt_temp_dir("rehearse");
    dt_write_file(dir, "0001_t.up.sql", table_up);
    dt_write_file(dir, "0001_t.down.sql", table_down);
    dt_write_file(dir, "0002_widen.up.sql", widen_up[_i]);
    dt_write_file(dir, "0002_widen.down.sql",
                  "ALTER TABLE t ALTER COLUMN c TYPE int;\n");

    /* lint passes the file (unseen or waived) */
    ds_migrate_options mo = {.size = sizeof(ds_migrate_options)};
    mo.dir = dir;
    ds_migrate_lint_report *lr = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_lint(&mo, NULL, 0, &lr, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(lr->errors, 0);
    ck_assert_uint_eq(lr->waived, _i == 1 ? 1 : 0);
    ds_migrate_lint_report_free(lr);

    char *url = dt_create_db("rh_do");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_pool *pool = NULL;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_to(pool, &mo, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    char *before = schema_digest(url);

    ds_migrate_rehearse_options o = {.size = sizeof(ds_migrate_rehearse_options)};
    ds_migrate_rehearse_options_init(&o);
    o.dir = dir;
    o.rows_per_table = 1000;
    o.lock_threshold_ms = -1; /* any blocking lock on a populated table */
    ds_migrate_rehearse_report *r = NULL;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!r->ok);
    ck_assert_ptr_null(r->error);
    ck_assert_int_eq(r->from_version, 1);
    ck_assert_int_eq(r->to_version, 2);
    ck_assert_uint_eq(r->applied, 1);

    /* the fill: t and its child in order, odd reported with the reason */
    const ds_migrate_rehearse_table *tt = table_line(r, "public.t");
    const ds_migrate_rehearse_table *tc = table_line(r, "public.child");
    const ds_migrate_rehearse_table *to = table_line(r, "public.odd");
    ck_assert(tt && tc && to);
    ck_assert_int_eq(tt->rows, 1000);
    ck_assert_ptr_null(tt->skipped);
    ck_assert_int_eq(tc->rows, 1000);
    ck_assert_int_eq(to->rows, 0);
    ck_assert_ptr_nonnull(to->skipped);
    ck_assert_msg(strstr(to->skipped, "point") != NULL, "reason: %s",
                  to->skipped);

    const ds_migrate_rehearse_lock *hit = NULL;
    for (size_t k = 0; k < r->nlocks; k++) {
        const ds_migrate_rehearse_lock *l = &r->locks[k];
        if (!strcmp(l->table, "public.t") &&
            !strcmp(l->mode, "AccessExclusiveLock"))
            hit = l;
    }
    ck_assert_msg(hit != NULL, "no ACCESS EXCLUSIVE lock on t reported");
    ck_assert(hit->rewritten);
    ck_assert(hit->blocks_reads && hit->blocks_writes);
    ck_assert(hit->over_threshold);
    ck_assert_int_eq(hit->rows, 1000);
    ck_assert_uint_ge(r->violations, 1);
    const ds_migrate_rehearse_statement *s = &r->statements[hit->statement];
    ck_assert_str_eq(s->file, "0002_widen.up.sql");
    ck_assert_int_eq(s->line, _i == 0 ? 2 : 3);
    ck_assert_ptr_nonnull(strstr(s->sql, "DO $$"));
    ds_migrate_rehearse_report_free(r);

    /* the target is untouched: version 1, c still int, nothing left */
    ck_assert_int_eq(version_of(url), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_attribute WHERE "
                                     "attrelid = 't'::regclass AND attname = "
                                     "'c' AND atttypid = 'int4'::regtype"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM t"), 0);
    ck_assert_int_eq(scratch_left(url), 0);
    char *after = schema_digest(url);
    ck_assert_str_eq(before, after);
    free(after);

    /* the command line: exit 1, the table, the mode and the rewrite */
    if (_i == 1) {
        char args[PATH_MAX + 128], *out = NULL;
        snprintf(args, sizeof args, "--dir '%s' --rows 500 --threshold 0 "
                                    "rehearse", dir);
        ck_assert_int_eq(run_cli(url, args, &out), 1);
        ck_assert_msg(strstr(out, "0002_widen.up.sql:3") &&
                          strstr(out, "public.t") &&
                          strstr(out, "AccessExclusiveLock") &&
                          strstr(out, "yes") &&
                          strstr(out, "rehearse failed"),
                      "output: %s", out);
        free(out);
        snprintf(args, sizeof args, "--dir '%s' --rows 500 --threshold 0 "
                                    "--json rehearse", dir);
        ck_assert_int_eq(run_cli(url, args, &out), 1);
        /* JSON lines: each one an object; a lock line names the table */
        bool lock_seen = false, summary_seen = false;
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
            if (line[0] != '{')
                continue; /* a warning on stderr: odd cannot be filled */
            json_error_t jerr;
            json_t *j = json_loads(line, 0, &jerr);
            ck_assert_msg(j != NULL, "not JSON: %s", line);
            const char *ev = json_string_value(json_object_get(j, "event"));
            ck_assert_ptr_nonnull(ev);
            if (!strcmp(ev, "lock") &&
                !strcmp(json_string_value(json_object_get(j, "table")),
                        "public.t") &&
                json_is_true(json_object_get(j, "rewritten")) &&
                json_is_true(json_object_get(j, "over_threshold")))
                lock_seen = true;
            if (!strcmp(ev, "summary")) {
                summary_seen = true;
                ck_assert(json_is_false(json_object_get(j, "ok")));
            }
            json_decref(j);
        }
        ck_assert(lock_seen && summary_seen);
        free(out);
        ck_assert_int_eq(version_of(url), 1);
        ck_assert_int_eq(scratch_left(url), 0);
    }
    free(before);
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);
    dt_rm_dir(dir);
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

/* An unreachable target: DS_ERR_CONNECTION, a message that says so and
 * holds no password; the command line exits 2. */
START_TEST(test_rehearse_unreachable_target_is_refused) {
    const char *url =
        "postgresql://ds:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=3";
    ds_config *cfg = dt_config(url, 1, 2);
    ds_migrate_rehearse_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_rehearse(cfg, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "cannot reach the target"));
    ck_assert_ptr_null(strstr(err.message, "s3cret"));
    ds_config_free(cfg);

    char *out = NULL;
    ck_assert_int_eq(run_cli(url, "rehearse", &out), 2);
    ck_assert_msg(strstr(out, "cannot reach the target") &&
                      !strstr(out, "s3cret"),
                  "output: %s", out);
    free(out);
}
END_TEST

/* A migration that cannot be split, bad arguments, a scratch database that
 * is not empty: refused before anything is created or applied. */
START_TEST(test_rehearse_bad_input_changes_nothing) {
    char *url = dt_create_db("rh_bad");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_error err = {0};
    ds_migrate_rehearse_report *r = NULL;

    ds_status st = ds_migrate_rehearse(cfg, NULL, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    st = ds_migrate_rehearse(NULL, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds_migrate_rehearse_options o = {0}; /* no size: not initialised */
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_null(r);

    char *dir = dt_temp_dir("rehearse");
    dt_write_file(dir, "0001_t.up.sql", table_up);
    dt_write_file(dir, "0001_t.down.sql", table_down);
    dt_write_file(dir, "0002_broken.up.sql", "SELECT 'unterminated;\n");
    dt_write_file(dir, "0002_broken.down.sql", "SELECT 1;\n");
    ds_migrate_rehearse_options_init(&o);
    o.dir = dir;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0002_broken.up.sql"));
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 'ds_schema_migrations'"),
                     0);
    ck_assert_int_eq(scratch_left(url), 0);
    char *out = NULL, args[PATH_MAX + 64];
    snprintf(args, sizeof args, "--dir '%s' rehearse", dir);
    ck_assert_int_eq(run_cli(url, args, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "0002_broken.up.sql"));
    free(out);

    /* a scratch database that holds tables is not used */
    dt_write_file(dir, "0002_broken.up.sql", "SELECT 1;\n");
    char *busy = dt_create_db("rh_busy");
    dt_sql(busy, "CREATE TABLE keep_me (a int)");
    o.scratch_url = busy;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "not empty"));
    ck_assert_int_eq(dt_sql_int(busy, "SELECT count(*) FROM pg_class WHERE "
                                      "relname IN ('t', 'keep_me')"),
                     1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 't'"),
                     0);
    dt_drop_db(busy);
    free(busy);

    /* a scratch name that is taken: the CREATE fails, nothing else runs */
    char *taken = dt_db_name(url);
    o.scratch_url = NULL;
    o.scratch_name = taken;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_ptr_nonnull(strstr(err.message, "creating the scratch database"));
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 't'"),
                     0);
    free(taken);

    /* pg_dump missing: the scratch database was created, then dropped */
    o.scratch_name = NULL;
    o.pg_dump = "ds-no-such-pg_dump";
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_msg(strstr(err.message, "cannot run pg_dump") != NULL,
                  "message: %s", err.message);
    ck_assert_int_eq(scratch_left(url), 0);
    dt_rm_dir(dir);
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* --keep leaves the scratch database, migrated and populated; a target
 * with nothing pending needs no scratch database at all. */
START_TEST(test_rehearse_keep_and_nothing_pending) {
    char *dir = dt_temp_dir("rehearse");
    dt_write_file(dir, "0001_t.up.sql", table_up);
    dt_write_file(dir, "0001_t.down.sql", table_down);
    char *url = dt_create_db("rh_keep");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_migrate_rehearse_options o = DS_MIGRATE_REHEARSE_OPTIONS_INIT;
    o.dir = dir;
    o.keep = true;
    o.rows_per_table = -1; /* none */
    o.scratch_name = "dt_rh_keep_scratch";
    ds_migrate_rehearse_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(r->ok);
    ck_assert(r->scratch_kept);
    ck_assert_str_eq(r->scratch_database, "dt_rh_keep_scratch");
    ck_assert_int_eq(r->from_version, 0);
    ck_assert_int_eq(r->to_version, 1);
    ds_migrate_rehearse_report_free(r);
    char *scratch = dt_url_with_db(url, "dt_rh_keep_scratch");
    ck_assert_int_eq(version_of(scratch), 1);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname = 't'"),
                     0);
    dt_drop_db(scratch);
    free(scratch);

    ds_pool *pool = NULL;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    ds_migrate_options mo = {.size = sizeof(ds_migrate_options)};
    mo.dir = dir;
    st = ds_migrate_up(pool, &mo, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    o.keep = false;
    o.scratch_name = NULL;
    st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(r->ok);
    ck_assert_uint_eq(r->applied, 0);
    ck_assert_ptr_null(r->scratch_database);
    ck_assert_int_eq(r->from_version, 1);
    ds_migrate_rehearse_report_free(r);
    ck_assert_int_eq(scratch_left(url), 0);
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);
    dt_rm_dir(dir);
}
END_TEST

/* A migration that fails on the scratch database: reported (the runner's
 * message, the statement marked), the rehearsal fails, the target is
 * untouched. */
START_TEST(test_rehearse_reports_a_failing_migration) {
    char *dir = dt_temp_dir("rehearse");
    dt_write_file(dir, "0001_t.up.sql", table_up);
    dt_write_file(dir, "0001_t.down.sql", table_down);
    dt_write_file(dir, "0002_fail.up.sql", "SELECT 1;\nSELECT 1 / 0;\n");
    dt_write_file(dir, "0002_fail.down.sql", "SELECT 1;\n");
    char *url = dt_create_db("rh_fail");
    ds_config *cfg = dt_config(url, 1, 2);
    ds_migrate_rehearse_options o = DS_MIGRATE_REHEARSE_OPTIONS_INIT;
    o.dir = dir;
    o.rows_per_table = 100;
    ds_migrate_rehearse_report *r = NULL;
    ds_error err = {0};
    ds_status st = ds_migrate_rehearse(cfg, &o, &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!r->ok);
    ck_assert_ptr_nonnull(r->error);
    ck_assert_msg(strstr(r->error, "0002_fail.up.sql:2") &&
                      strstr(r->error, "division by zero"),
                  "error: %s", r->error);
    ck_assert_int_eq(r->from_version, 0);
    ck_assert_int_eq(r->to_version, 1);
    ck_assert_uint_eq(r->applied, 1);
    ck_assert_uint_ge(r->nstatements, 2);
    const ds_migrate_rehearse_statement *last = &r->statements[r->nstatements - 1];
    ck_assert(!last->ok);
    ck_assert_str_eq(last->file, "0002_fail.up.sql");
    ck_assert_int_eq(last->line, 2);
    ds_migrate_rehearse_report_free(r);
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname IN ('t', "
                                     "'ds_schema_migrations')"),
                     0);
    ck_assert_int_eq(scratch_left(url), 0);
    ds_config_free(cfg);
    dt_drop_db(url);
    free(url);
    dt_rm_dir(dir);
}
END_TEST

Suite *ds_test_rehearse_suite(void) {
    Suite *s = suite_create("rehearse");
    TCase *tc = tcase_create("shipped");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_rehearse_shipped_migrations_from_version_2_pass);
    suite_add_tcase(s, tc);
    tc = tcase_create("hidden");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_rehearse_sees_rewrite_inside_do_block, 0,
                        (int)(sizeof widen_up / sizeof widen_up[0]));
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_rehearse_unreachable_target_is_refused);
    tcase_add_test(tc, test_rehearse_bad_input_changes_nothing);
    tcase_add_test(tc, test_rehearse_keep_and_nothing_pending);
    tcase_add_test(tc, test_rehearse_reports_a_failing_migration);
    suite_add_tcase(s, tc);
    return s;
}
