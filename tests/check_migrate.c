/* Migrations, ds-migrate, partition maintenance and the schema check,
 * against the real PostgreSQL and PgBouncer. */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "migrate/migrate_internal.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------- */

/* A fresh temporary directory (removed with rm_dir). */
static char *temp_dir(void) {
    const char *base = dt_env_opt("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/dt_migrate_XXXXXX", base ? base : P_tmpdir);
    char *d = strdup(tmpl);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

static void remove_file(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(unlink(path), 0);
}

static void rm_dir(char *dir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(dir);
}

/* A directory holding a copy of the project's sql/ files. */
static char *copy_of_sql_dir(void) {
    char *d = temp_dir();
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "cp '%s'/sql/*.sql '%s'/",
             dt_env("DS_PROJECT_ROOT"), d);
    ck_assert_int_eq(system(cmd), 0);
    return d;
}

static ds_migrate_options dir_options(const char *dir) {
    ds_migrate_options o = DS_MIGRATE_OPTIONS_INIT;
    o.dir = dir;
    return o;
}

static int64_t embedded_latest(void) { return ds__migrate_embedded_latest(); }

/* The ds-migrate next to this test binary: <build>/bin/ds-migrate. */
static const char *ds_migrate_path(void) {
    static char path[PATH_MAX + 32];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    char *slash = strrchr(self, '/'); /* .../build/tests/ds-tests */
    ck_assert_ptr_nonnull(slash);
    *slash = '\0';
    slash = strrchr(self, '/');
    ck_assert_ptr_nonnull(slash);
    *slash = '\0';
    snprintf(path, sizeof path, "%s/bin/ds-migrate", self);
    ck_assert_msg(access(path, X_OK) == 0, "%s is not built", path);
    return path;
}

/* Runs ds-migrate with `args` (already quoted); returns its exit status and
 * its stdout (+ stderr when `merge`) in *out (malloc'd). */
static int run_cli(const char *args, bool merge, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s%s", ds_migrate_path(), args,
             merge ? " 2>&1" : " 2>/dev/null");
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int rc = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
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

static long long count_rows(const char *url, const char *sql) {
    return dt_sql_int(url, sql);
}

static long long applied_count(const char *url) {
    return count_rows(url, "SELECT count(*) FROM ds_schema_migrations");
}

static bool table_exists(const char *url, const char *name) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT (to_regclass('%s') IS NOT NULL)::int",
             name);
    return count_rows(url, sql) == 1;
}

/* The URL of the same database through PgBouncer (malloc'd). */
static char *pooler_url_of(const char *direct) {
    const char *slash = strrchr(direct, '/');
    char dbname[128];
    snprintf(dbname, sizeof dbname, "%.*s", (int)strcspn(slash + 1, "?"),
             slash + 1);
    return dt_url_with_db(dt_env("DATABASE_POOLER_URL"), dbname);
}

/* Progress events, recorded. */
typedef struct events {
    int n;
    ds_migrate_event_kind ev[64];
    int64_t version[64];
    char *sql[64];
} events;

static void record_event(void *ud, const ds_migrate_event *p) {
    events *e = ud;
    if (e->n >= 64)
        return;
    e->ev[e->n] = p->kind;
    e->version[e->n] = p->version;
    e->sql[e->n] = p->sql ? strdup(p->sql) : NULL;
    e->n++;
}

static void events_free(events *e) {
    for (int i = 0; i < e->n; i++)
        free(e->sql[i]);
}

static int count_events(const events *e, ds_migrate_event_kind ev) {
    int n = 0;
    for (int i = 0; i < e->n; i++)
        n += e->ev[i] == ev;
    return n;
}

/* Two migrations on a table of their own, for tests that need a small set
 * of files under their control. */
static char *small_dir(void) {
    char *d = temp_dir();
    write_file(d, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");
    write_file(d, "0001_things.down.sql", "DROP TABLE things;\n");
    write_file(d, "0002_things_note.up.sql",
               "ALTER TABLE things ADD COLUMN note text;\n");
    write_file(d, "0002_things_note.down.sql",
               "ALTER TABLE things DROP COLUMN note;\n");
    return d;
}

/* A fresh database, small_dir()'s migrations and a pool on it. */
typedef struct small_db {
    char *url;
    char *dir;
    ds_pool *pool;
} small_db;

static small_db small_db_open(const char *tag) {
    small_db d;
    d.url = dt_create_db(tag);
    d.dir = small_dir();
    d.pool = dt_pool(d.url, 1, 2);
    return d;
}

static void small_db_close(small_db *d) {
    ds_pool_close(d->pool);
    rm_dir(d->dir);
    dt_drop_db(d->url);
    free(d->url);
}

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

/* ---- up, status, down, to --------------------------------------------------- */

START_TEST(test_migrate_up_applies_everything_once) {
    char *url = dt_create_db("mig_up");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};

    ds_migration_list *list = NULL;
    ds_status st = ds_migrate_status(pool, NULL, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->current_version, 0);
    ck_assert_int_eq(list->latest_version, DS_SCHEMA_VERSION);
    ck_assert_uint_eq(list->pending, list->count);
    ck_assert(list->consistent);
    ck_assert_int_eq(list->items[0].state, DS_MIGRATION_PENDING);
    ds_migrate_list_free(list);
    /* status is read-only: it does not even create the record table */
    ck_assert(!table_exists(url, "ds_schema_migrations"));

    events ev = {0};
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    int applied = -1;
    st = ds_migrate_up(pool, &opts, &applied, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(applied, DS_SCHEMA_VERSION);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_APPLYING), applied);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_APPLIED), applied);
    ck_assert_int_eq(ev.ev[0], DS_MIGRATE_EVENT_APPLYING);
    ck_assert_int_eq(ev.version[0], 1);
    ck_assert_int_eq(ev.ev[1], DS_MIGRATE_EVENT_APPLIED);
    events_free(&ev);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    ck_assert(table_exists(url, "users"));
    ck_assert(table_exists(url, "analytics_events_default"));

    st = ds_migrate_up(pool, NULL, &applied, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(applied, 0);

    st = ds_migrate_status(pool, NULL, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->current_version, DS_SCHEMA_VERSION);
    ck_assert_uint_eq(list->pending, 0);
    for (size_t i = 0; i < list->count; i++) {
        const ds_migration *m = &list->items[i];
        ck_assert_int_eq(m->state, DS_MIGRATION_APPLIED);
        ck_assert_int_gt(m->applied_at_us, 0);
        ck_assert_str_eq(m->checksum, m->applied_checksum);
        ck_assert_uint_eq(strlen(m->checksum), 64);
    }
    ck_assert_str_eq(list->items[0].name, "platform_schema");
    ck_assert_str_eq(ds_migrate_state_str(list->items[0].state), "applied");
    ds_migrate_list_free(list);
    st = ds_migrate_verify(pool, NULL, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_down_and_to_move_both_ways) {
    small_db d = small_db_open("mig_down");
    write_file(d.dir, "0003_more.up.sql", "CREATE TABLE more (id int);");
    write_file(d.dir, "0003_more.down.sql", "DROP TABLE more;");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    int n = -1;

    ds_status st = ds_migrate_down(d.pool, &opts, 1, &n, &err);
    ck_assert_ds_ok(st, err); /* nothing applied: nothing to revert */
    ck_assert_int_eq(n, 0);

    st = ds_migrate_to(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert(table_exists(d.url, "things") && !table_exists(d.url, "more"));

    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);

    st = ds_migrate_down(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(applied_count(d.url), 1);
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM information_schema."
                                     "columns WHERE table_name = 'things' "
                                     "AND column_name = 'note'"),
                     0);

    st = ds_migrate_to(d.pool, &opts, 3, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    st = ds_migrate_to(d.pool, &opts, 0, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 3);
    ck_assert(!table_exists(d.url, "things"));
    ck_assert_int_eq(applied_count(d.url), 0); /* the record table stays */

    st = ds_migrate_to(d.pool, &opts, 7, &n, &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "7"));

    st = ds_migrate_down(d.pool, &opts, 5, &n, &err); /* more than applied */
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 0);
    small_db_close(&d);
}
END_TEST

/* ---- every migration is reversible ------------------------------------------- */

/* The schema as pg_dump sees it, without the record table. pg_dump 15.14+
 * writes a random \restrict key per run; those lines are dropped. */
static char *schema_dump(const char *url) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "pg_dump --schema-only --no-owner --no-privileges "
             "--exclude-table=ds_schema_migrations '%s' 2>&1 | "
             "grep -v -E '^\\\\(un)?restrict '",
             url);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    pclose(p);
    ck_assert_msg(strstr(buf, "PostgreSQL database dump") != NULL,
                  "pg_dump failed: %.300s", buf);
    return buf;
}

static void assert_same_schema(const char *a, const char *b, int64_t v,
                               const char *when) {
    if (strcmp(a, b) == 0)
        return;
    size_t i = 0;
    while (a[i] && a[i] == b[i])
        i++;
    size_t from = i > 200 ? i - 200 : 0;
    ck_abort_msg("version %lld, %s: the schema differs near:\n%.400s\n--- vs "
                 "---\n%.400s",
                 (long long)v, when, a + from, b + from);
}

START_TEST(test_migrate_every_version_reversible) {
    if (system("pg_dump --version >/dev/null 2>&1") != 0) {
        dt_skip("test_migrate_every_version_reversible", "pg_dump not found");
        return;
    }
    char *url = dt_create_db("mig_rev");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    int64_t latest = DS_SCHEMA_VERSION;
    char **dumps = calloc((size_t)latest + 1, sizeof *dumps);
    dumps[0] = schema_dump(url);
    for (int64_t v = 1; v <= latest; v++) {
        ds_status st = ds_migrate_to(pool, NULL, v, NULL, &err);
        ck_assert_ds_ok(st, err);
        dumps[v] = schema_dump(url);
        ck_assert_str_ne(dumps[v], dumps[v - 1]);
    }
    for (int64_t v = latest; v >= 1; v--) {
        ds_status st = ds_migrate_to(pool, NULL, v - 1, NULL, &err);
        ck_assert_ds_ok(st, err);
        char *down = schema_dump(url);
        assert_same_schema(dumps[v - 1], down, v, "after down");
        free(down);
        st = ds_migrate_to(pool, NULL, v, NULL, &err);
        ck_assert_ds_ok(st, err);
        char *again = schema_dump(url);
        assert_same_schema(dumps[v], again, v, "after up, down, up");
        free(again);
        st = ds_migrate_to(pool, NULL, v - 1, NULL, &err);
        ck_assert_ds_ok(st, err);
    }
    for (int64_t v = 0; v <= latest; v++)
        free(dumps[v]);
    free(dumps);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- the history is protected -------------------------------------------------- */

START_TEST(test_migrate_refuses_edited_missing_out_of_order) {
    small_db d = small_db_open("mig_hist");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_to(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);

    /* Edited after it was applied: refused before 0002 runs. */
    write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n-- edit\n");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_things.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "edited"));
    ck_assert_int_eq(applied_count(d.url), 1);
    st = ds_migrate_verify(d.pool, &opts, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ds_migration_list *list = NULL;
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[0].state, DS_MIGRATION_CHANGED);
    ck_assert(!list->consistent);
    ds_migrate_list_free(list);
    write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");

    /* A new file older than the newest applied one. */
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    write_file(d.dir, "0000001_early.up.sql", "CREATE TABLE early (id int);");
    write_file(d.dir, "0000001_early.down.sql", "DROP TABLE early;");
    remove_file(d.dir, "0001_things.up.sql"); /* keep version 1 unique */
    remove_file(d.dir, "0001_things.down.sql");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err); /* 1 renamed to "early" */
    ck_assert_ptr_nonnull(strstr(err.message, "0000001_early.up.sql"));
    remove_file(d.dir, "0000001_early.up.sql");
    remove_file(d.dir, "0000001_early.down.sql");
    write_file(d.dir, "0001_things.up.sql",
               "CREATE TABLE things (id bigint PRIMARY KEY, label text);\n");
    write_file(d.dir, "0001_things.down.sql", "DROP TABLE things;\n");
    st = ds_migrate_to(d.pool, &opts, 2, NULL, &err);
    ck_assert_ds_ok(st, err);
    write_file(d.dir, "0005_late.up.sql", "CREATE TABLE late (id int);");
    write_file(d.dir, "0005_late.down.sql", "DROP TABLE late;");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    write_file(d.dir, "0003_forgotten.up.sql", "CREATE TABLE forgotten (id int);");
    write_file(d.dir, "0003_forgotten.down.sql", "DROP TABLE forgotten;");
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_forgotten.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "older"));
    ck_assert(!table_exists(d.url, "forgotten"));
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[2].state, DS_MIGRATION_OUT_OF_ORDER);
    ds_migrate_list_free(list);
    remove_file(d.dir, "0003_forgotten.up.sql");
    remove_file(d.dir, "0003_forgotten.down.sql");

    /* Applied but missing: also refused for down, which needs the file. */
    remove_file(d.dir, "0005_late.up.sql");
    remove_file(d.dir, "0005_late.down.sql");
    st = ds_migrate_down(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0005_late.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "missing"));
    ck_assert(table_exists(d.url, "late"));
    st = ds_migrate_status(d.pool, &opts, &list, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(list->items[list->count - 1].state, DS_MIGRATION_MISSING);
    ck_assert_str_eq(list->items[list->count - 1].name, "late");
    ds_migrate_list_free(list);

    small_db_close(&d);
}
END_TEST

/* ---- failures roll back ------------------------------------------------------ */

/* Ends the backend that runs COMMIT once it sleeps in a deferred
 * trigger, i.e. while the commit is under way. */
typedef struct commit_killer {
    const char *url;
    int killed;
} commit_killer;

static void *kill_at_commit(void *p) {
    commit_killer *k = p;
    PGconn *c = dt_connect(k->url);
    for (int i = 0; i < 1000 && !k->killed; i++) {
        PGresult *r = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM "
                                "pg_stat_activity WHERE query = 'COMMIT' AND "
                                "wait_event = 'PgSleep' AND datname = "
                                "current_database()");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            k->killed = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        usleep(10000);
    }
    PQfinish(c);
    return NULL;
}

/* The connection lost while COMMIT runs: the outcome is unknown to the
 * runner, and it says so (DS_ERR_CONNECTION), never success. */
START_TEST(test_migrate_connection_lost_at_commit_is_reported_unknown) {
    char *url = dt_create_db("mig_commitlost");
    char *dir = temp_dir();
    write_file(dir, "0001_slow_commit.up.sql",
               "CREATE TABLE t (id int);\n"
               "CREATE FUNCTION t_slow() RETURNS trigger LANGUAGE plpgsql AS\n"
               "$$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$;\n"
               "CREATE CONSTRAINT TRIGGER t_slow AFTER INSERT ON t\n"
               "    DEFERRABLE INITIALLY DEFERRED\n"
               "    FOR EACH ROW EXECUTE FUNCTION t_slow();\n"
               "INSERT INTO t VALUES (1);\n");
    write_file(dir, "0001_slow_commit.down.sql",
               "DROP TABLE t;\nDROP FUNCTION t_slow();\n");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dir = dir;
    commit_killer k = {url, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, kill_at_commit, &k), 0);
    ds_error err = {0};
    ds_status st = ds_migrate_up(pool, &opts, NULL, &err);
    pthread_join(th, NULL);
    ck_assert_int_eq(k.killed, 1);
    ck_assert_ds_status(st, DS_ERR_CONNECTION, err);
    ck_assert_msg(strstr(err.message, "0001_slow_commit.up.sql"), "%s",
                  err.message);
    ck_assert_msg(strstr(err.message, "COMMIT was sent, so the outcome is "
                                      "unknown"),
                  "%s", err.message);
    /* here the server had not committed: neither the table nor the
     * record (created in the same transaction) is there */
    ck_assert_int_eq(dt_sql_int(url, "SELECT count(*) FROM pg_class WHERE "
                                     "relname IN ('t', 'ds_schema_migrations')"),
                     0);
    ds_pool_close(pool);
    rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_failure_rolls_back_and_names_line) {
    small_db d = small_db_open("mig_fail");
    write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\n"
               "\n"
               "INSERT INTO half_done VALUES (1);\n"
               "-- the next statement fails on its third line\n"
               "SELECT id\n"
               "  FROM half_done\n"
               "  WHERE nope = 1;\n");
    write_file(d.dir, "0003_bad.down.sql", "DROP TABLE half_done;");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    int n = -1;
    ds_status st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_int_eq(n, 2); /* 0001 and 0002 committed before */
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:7:"));
    ck_assert_ptr_nonnull(strstr(err.message, "nope"));
    ck_assert_ptr_nonnull(strstr(err.message, "stays at version 2"));
    ck_assert_str_eq(err.sqlstate, "42703");
    ck_assert(!table_exists(d.url, "half_done"));
    ck_assert_int_eq(applied_count(d.url), 2);

    /* A runtime error without a position names the statement's first line. */
    write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int PRIMARY KEY);\n"
               "INSERT INTO half_done\n"
               "  VALUES (1), (1);\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert_str_eq(err.sqlstate, "23505");
    ck_assert(!table_exists(d.url, "half_done"));

    /* Transaction control inside a file is refused before it runs. */
    write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\nCOMMIT;\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert(!table_exists(d.url, "half_done"));

    /* An unterminated string: nothing runs. */
    write_file(d.dir, "0003_bad.up.sql",
               "CREATE TABLE half_done (id int);\nSELECT 'open;\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_bad.up.sql:2:"));
    ck_assert(!table_exists(d.url, "half_done"));
    ck_assert_int_eq(applied_count(d.url), 2);

    /* The d.pool's connections are healthy afterwards. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(d.pool, "SELECT 1", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    small_db_close(&d);
}
END_TEST

/* ---- -- ds:no-transaction ------------------------------------------------------ */

START_TEST(test_migrate_no_transaction_runs_outside_a_transaction) {
    small_db d = small_db_open("mig_notx");
    /* Inside a transaction this statement fails. */
    write_file(d.dir, "0003_idx.up.sql",
               "CREATE INDEX CONCURRENTLY things_label_idx ON things (label);\n");
    write_file(d.dir, "0003_idx.down.sql", "DROP INDEX things_label_idx;\n");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_str_eq(err.sqlstate, "25001");
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql:1:"));

    write_file(d.dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_label_idx ON things (label);\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_note_idx ON things (note);\n");
    write_file(d.dir, "0003_idx.down.sql",
               "-- ds:no-transaction\n"
               "DROP INDEX CONCURRENTLY IF EXISTS things_note_idx;\n"
               "DROP INDEX CONCURRENTLY IF EXISTS things_label_idx;\n");
    write_file(d.dir, "0004_after.up.sql", "CREATE TABLE after_idx (id int);");
    write_file(d.dir, "0004_after.down.sql", "DROP TABLE after_idx;");
    int n = 0;
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM pg_index i JOIN "
                                     "pg_class c ON c.oid = i.indexrelid "
                                     "WHERE c.relname IN ('things_label_idx',"
                                     "'things_note_idx') AND i.indisvalid"),
                     2);
    ck_assert_int_eq(count_rows(d.url, "SELECT no_transaction::int FROM "
                                     "ds_schema_migrations WHERE version = 3"),
                     1);
    ck_assert(table_exists(d.url, "after_idx"));
    /* Nothing is left locked. */
    ck_assert_int_eq(count_rows(d.url, "SELECT count(*) FROM pg_locks WHERE "
                                     "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);

    st = ds_migrate_to(d.pool, &opts, 2, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    ck_assert(!table_exists(d.url, "things_label_idx"));

    /* A failure outside a transaction says what stayed. */
    write_file(d.dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_label_idx ON things (label);\n"
               "CREATE INDEX CONCURRENTLY things_x_idx ON things (missing_column);\n");
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql:3:"));
    ck_assert_ptr_nonnull(strstr(err.message, "outside a transaction"));
    ck_assert(table_exists(d.url, "things_label_idx"));
    ck_assert_int_eq(applied_count(d.url), 2);
    small_db_close(&d);
}
END_TEST

/* ---- locks ------------------------------------------------------------------- */

typedef struct release_later {
    PGconn *conn;
    int after_ms;
} release_later;

static void *release_main(void *p) {
    release_later *r = p;
    usleep((useconds_t)r->after_ms * 1000);
    PQclear(PQexec(r->conn, "COMMIT"));
    return NULL;
}

START_TEST(test_migrate_waits_for_lock_then_times_out_or_proceeds) {
    small_db d = small_db_open("mig_wait");
    PGconn *holder = dt_connect(d.url);
    dt_exec(holder, "BEGIN");
    dt_exec(holder, "SELECT pg_advisory_xact_lock(7238249325589062004)");

    events ev = {0};
    ds_migrate_options opts = dir_options(d.dir);
    opts.lock_wait_ms = 300;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    ds_error err = {0};
    ds_status st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_WAITING), 1);
    ck_assert(!table_exists(d.url, "things"));

    opts.lock_wait_ms = -1; /* do not wait at all */
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err);

    release_later rl = {holder, 300};
    pthread_t th;
    pthread_create(&th, NULL, release_main, &rl);
    opts.lock_wait_ms = 30000;
    int n = 0;
    st = ds_migrate_up(d.pool, &opts, &n, &err);
    pthread_join(th, NULL);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 2);
    events_free(&ev);
    PQfinish(holder);
    small_db_close(&d);
}
END_TEST

START_TEST(test_migrate_ddl_lock_timeout_bounds_the_wait) {
    small_db d = small_db_open("mig_lockto");
    ds_migrate_options opts = dir_options(d.dir);
    ds_error err = {0};
    ds_status st = ds_migrate_to(d.pool, &opts, 1, NULL, &err);
    ck_assert_ds_ok(st, err);

    PGconn *reader = dt_connect(d.url); /* production traffic holding a lock */
    dt_exec(reader, "BEGIN");
    dt_exec(reader, "SELECT * FROM things");
    opts.lock_timeout_ms = 200;
    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_str_eq(err.sqlstate, "55P03");
    ck_assert(err.retryable);
    ck_assert_ptr_nonnull(strstr(err.message, "0002_things_note.up.sql:1:"));
    ck_assert_int_eq(applied_count(d.url), 1); /* gave up instead of queueing */
    dt_exec(reader, "COMMIT");
    PQfinish(reader);

    st = ds_migrate_up(d.pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err);
    small_db_close(&d);
}
END_TEST

START_TEST(test_migrate_not_cut_by_statement_timeout) {
    char *url = dt_create_db("mig_stmtto");
    char *dir = temp_dir();
    write_file(dir, "0001_slow.up.sql",
               "CREATE TABLE slow (id int);\nSELECT pg_sleep(0.5);\n");
    write_file(dir, "0001_slow.down.sql", "DROP TABLE slow;\n");
    /* An application pool with a short statement timeout. */
    ds_config *cfg = dt_config(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_config_set_int(cfg, "statement_timeout_ms", 100, &err);
    ck_assert_ds_ok(st, err);
    ds_pool *pool = NULL;
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    ds_config_free(cfg);
    st = ds_sql_exec_pool(pool, "SELECT pg_sleep(0.5)", NULL, 0, NULL, &err);
    ck_assert_ds_status(st, DS_ERR_TIMEOUT, err); /* applies to queries */
    ds_migrate_options opts = dir_options(dir);
    st = ds_migrate_up(pool, &opts, NULL, &err);
    ck_assert_ds_ok(st, err); /* but not to migrations */
    ck_assert(table_exists(url, "slow"));
    ds_pool_close(pool);
    rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------------- */

/* Starts `n` ds-migrate processes at once with `args`; each one's stdout
 * goes to a file. Returns how many exited 0 and how many "applied" lines
 * they printed together. */
static void run_cli_concurrently(int n, const char *url, const char *to,
                                 int *ok, int *applied_lines,
                                 char *last_stderr, size_t cap) {
    const char *bin = ds_migrate_path();
    char *dir = temp_dir();
    pid_t pids[16];
    for (int i = 0; i < n; i++) {
        char out[PATH_MAX], errp[PATH_MAX];
        snprintf(out, sizeof out, "%s/out%d", dir, i);
        snprintf(errp, sizeof errp, "%s/err%d", dir, i);
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            int fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            dup2(fd, 1);
            dup2(fe, 2);
            if (to)
                execl(bin, bin, "--database-url", url, "to", to, (char *)NULL);
            else
                execl(bin, bin, "--database-url", url, "up", (char *)NULL);
            _exit(127);
        }
    }
    *ok = 0;
    *applied_lines = 0;
    for (int i = 0; i < n; i++) {
        int status = 0;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            (*ok)++;
        char path[PATH_MAX], line[1024];
        snprintf(path, sizeof path, "%s/out%d", dir, i);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            *applied_lines += strncmp(line, "applied ", 8) == 0;
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "%s/err%d", dir, i);
        f = fopen(path, "r");
        if (f) {
            size_t got = fread(last_stderr, 1, cap - 1, f);
            if (got)
                last_stderr[got] = '\0';
            fclose(f);
        }
    }
    rm_dir(dir);
}

START_TEST(test_migrate_four_processes_apply_each_once) {
    char *url = dt_create_db("mig_conc");
    int ok, applied;
    char errtext[1024] = "";
    run_cli_concurrently(4, url, NULL, &ok, &applied, errtext, sizeof errtext);
    ck_assert_msg(ok == 4, "%d of 4 exited 0; stderr: %s", ok, errtext);
    ck_assert_int_eq(applied, DS_SCHEMA_VERSION);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* The migrations that run in a transaction go through the pooler; the
 * first `-- ds:no-transaction` one (0003, which builds its indexes
 * CONCURRENTLY) needs the direct URL, and says so. */
START_TEST(test_migrate_four_processes_through_pgbouncer) {
    char *direct = dt_create_db("mig_bouncer");
    char *pooled = pooler_url_of(direct);
    int ok, applied;
    char errtext[1024] = "";
    run_cli_concurrently(4, pooled, "2", &ok, &applied, errtext,
                         sizeof errtext);
    ck_assert_msg(ok == 4, "%d of 4 exited 0; stderr: %s", ok, errtext);
    ck_assert_int_eq(applied, 2);
    ck_assert_int_eq(applied_count(direct), 2);
    /* No lock is left on any pooled server connection. */
    ck_assert_int_eq(count_rows(direct, "SELECT count(*) FROM pg_locks WHERE "
                                        "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    /* A second deploy through the pooler is not blocked by the first; it
     * stops at the no-transaction file with the way out. */
    char args[2048];
    snprintf(args, sizeof args, "--database-url '%s' --wait 2000 up", pooled);
    char *out = NULL;
    ck_assert_int_eq(run_cli(args, true, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "0003_memory_embeddings.up.sql"));
    ck_assert_ptr_nonnull(strstr(out, "direct database URL"));
    free(out);
    ck_assert_int_eq(applied_count(direct), 2);
    snprintf(args, sizeof args, "--database-url '%s' up", direct);
    ck_assert_int_eq(run_cli(args, true, &out), 0);
    free(out);
    ck_assert_int_eq(applied_count(direct), DS_SCHEMA_VERSION);
    snprintf(args, sizeof args, "--database-url '%s' --wait 2000 up", pooled);
    ck_assert_int_eq(run_cli(args, true, &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "0 migration(s) applied"));
    free(out);
    free(pooled);
    dt_drop_db(direct);
    free(direct);
}
END_TEST

START_TEST(test_migrate_no_transaction_refused_behind_pgbouncer) {
    char *direct = dt_create_db("mig_bnotx");
    char *pooled = pooler_url_of(direct);
    char *dir = small_dir();
    write_file(dir, "0003_idx.up.sql",
               "-- ds:no-transaction\n"
               "CREATE INDEX CONCURRENTLY things_label_idx ON things (label);\n");
    write_file(dir, "0003_idx.down.sql",
               "-- ds:no-transaction\nDROP INDEX CONCURRENTLY things_label_idx;\n");
    ds_error err = {0};
    /* The pool is in prepared mode here: the runner notices the pooler by
     * itself (the backend PID does not match). */
    ds_pool *pool = dt_pool(pooled, 1, 2);
    ds_migrate_options opts = dir_options(dir);
    int n = 0;
    ds_status st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_status(st, DS_ERR_MIGRATION, err);
    ck_assert_int_eq(n, 2); /* the transactional ones went through */
    ck_assert_ptr_nonnull(strstr(err.message, "0003_idx.up.sql"));
    ck_assert_ptr_nonnull(strstr(err.message, "direct"));
    ck_assert_int_eq(applied_count(direct), 2);
    ds_pool_close(pool);

    /* The same through ds-migrate: exit 1 and the message. */
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' up", pooled,
             dir);
    ck_assert_int_eq(run_cli(args, true, &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "direct database URL"));
    free(out);
    /* And directly it runs. */
    snprintf(args, sizeof args, "--database-url '%s' --dir '%s' up", direct,
             dir);
    ck_assert_int_eq(run_cli(args, false, NULL), 0);
    ck_assert_int_eq(applied_count(direct), 3);
    ck_assert_int_eq(count_rows(direct, "SELECT count(*) FROM pg_locks WHERE "
                                        "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    rm_dir(dir);
    free(pooled);
    dt_drop_db(direct);
    free(direct);
}
END_TEST

typedef struct thread_up {
    const char *url;
    int applied;
    ds_status st;
    ds_error err;
} thread_up;

static void *thread_up_main(void *p) {
    thread_up *t = p;
    ds_pool *pool = NULL;
    t->st = ds_pool_open_url(t->url, &pool, &t->err);
    if (t->st == DS_OK)
        t->st = ds_migrate_up(pool, NULL, &t->applied, &t->err);
    ds_pool_close(pool);
    return NULL;
}

START_TEST(test_migrate_threads_share_the_work) {
    char *url = dt_create_db("mig_threads");
    thread_up t[4];
    pthread_t th[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].url = url;
        pthread_create(&th[i], NULL, thread_up_main, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_ds_ok(t[i].st, t[i].err);
        total += t[i].applied;
    }
    ck_assert_int_eq(total, DS_SCHEMA_VERSION);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- dry run ------------------------------------------------------------------- */

START_TEST(test_migrate_dry_run_reports_and_changes_nothing) {
    char *url = dt_create_db("mig_dry");
    ds_pool *pool = dt_pool(url, 1, 2);
    events ev = {0};
    ds_migrate_options opts = DS_MIGRATE_OPTIONS_INIT;
    opts.dry_run = true;
    opts.on_event = record_event;
    opts.on_event_ud = &ev;
    ds_error err = {0};
    int n = 0;
    ds_status st = ds_migrate_up(pool, &opts, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, DS_SCHEMA_VERSION);
    ck_assert_int_eq(count_events(&ev, DS_MIGRATE_EVENT_SQL), n);
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "CREATE TABLE IF NOT EXISTS ds_schema_migrations"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "CREATE TABLE users"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "BEGIN;"));
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "INSERT INTO ds_schema_migrations"));
    ck_assert_ptr_null(strstr(ev.sql[1], "CREATE TABLE IF NOT EXISTS"));
    events_free(&ev);
    ck_assert(!table_exists(url, "users"));
    ck_assert(!table_exists(url, "ds_schema_migrations"));

    /* The dry script is what psql would need to do the same. */
    st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    memset(&ev, 0, sizeof ev);
    st = ds_migrate_down(pool, &opts, 1, &n, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(ev.sql[0], "DELETE FROM ds_schema_migrations"));
    events_free(&ev);
    ck_assert_int_eq(applied_count(url), DS_SCHEMA_VERSION);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

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
    write_file(dir, "0001_platform_schema.up.sql", "-- tampered\n");
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
    rm_dir(dir);

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
    char *dir = temp_dir();
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
        write_file(dir, "0001_loud.up.sql", sql);
        write_file(dir, "0001_loud.down.sql", "SELECT 1;\n");
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
    write_file(dir, "0001_loud.up.sql", "SELECT 'caf\xe9';\n");
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
    rm_dir(dir);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- partition maintenance --------------------------------------------------------- */

START_TEST(test_migrate_maintain_creates_months_and_moves_rows) {
    char *url = dt_migrated_db("mig_maint");
    /* Rows of a month that has no partition yet wait in the default one. */
    dt_sql(url, "INSERT INTO analytics_events (user_id, name, occurred_at) "
                "SELECT 1, 'ev', date_trunc('month', now() AT TIME ZONE 'UTC') "
                "AT TIME ZONE 'UTC' + interval '6 months 3 days' + "
                "g * interval '1 minute' FROM generate_series(1, 40) g");
    dt_sql(url, "INSERT INTO analytics_events (name, occurred_at) VALUES "
                "('old', now() - interval '3 years')");
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM "
                                     "analytics_events_default"),
                     41);
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    int created = -1;
    ds_status st = ds_migrate_maintain(pool, NULL, 8, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 5); /* months 4..8; 0..3 came with 0002 */
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM "
                                     "analytics_events_default"),
                     1);
    ck_assert_int_eq(count_rows(url, "SELECT count(DISTINCT tableoid) FROM "
                                     "analytics_events WHERE name = 'ev'"),
                     1);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events"),
                     41);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     10);
    st = ds_migrate_maintain(pool, NULL, 8, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 0);
    st = ds_migrate_maintain(pool, NULL, 0, &created, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(created, 0);
    /* Inserts keep working and land in their month. */
    dt_sql(url, "INSERT INTO analytics_events (name) VALUES ('now')");
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events "
                                     "WHERE name = 'now' AND tableoid <> "
                                     "'analytics_events_default'::regclass"),
                     1);
    /* Reverting 0002 folds the months back, rows included. */
    st = ds_migrate_to(pool, NULL, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM analytics_events"),
                     42);
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_inherits WHERE "
                                     "inhparent = 'analytics_events'::regclass"),
                     1);
    st = ds_migrate_maintain(pool, NULL, 3, &created, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds-migrate up"));
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

typedef struct thread_maint {
    const char *url;
    int created;
    ds_status st;
    ds_error err;
} thread_maint;

static void *thread_maint_main(void *p) {
    thread_maint *t = p;
    ds_pool *pool = NULL;
    t->st = ds_pool_open_url(t->url, &pool, &t->err);
    if (t->st == DS_OK)
        t->st = ds_migrate_maintain(pool, NULL, 12, &t->created, &t->err);
    ds_pool_close(pool);
    return NULL;
}

START_TEST(test_migrate_maintain_concurrent_and_through_pgbouncer) {
    char *url = dt_migrated_db("mig_maintc");
    char *pooled = pooler_url_of(url);
    thread_maint t[4];
    pthread_t th[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].url = i % 2 ? pooled : url;
        pthread_create(&th[i], NULL, thread_maint_main, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_ds_ok(t[i].st, t[i].err);
        total += t[i].created;
    }
    ck_assert_int_eq(total, 9); /* months 4..12, each once */
    ck_assert_int_eq(count_rows(url, "SELECT count(*) FROM pg_locks WHERE "
                                     "locktype = 'advisory' AND database = (SELECT oid FROM "
                                     "pg_database WHERE datname = current_database())"),
                     0);
    free(pooled);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- the schema check --------------------------------------------------------------- */

static const ds__stmt_def test_user_stmts[] = {
    {"test.user_by_id",
     "SELECT id, email, status, created_at FROM users WHERE id = $1",
     1,
     {DS_OID_INT8},
     4,
     {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TIMESTAMPTZ}},
    {"test.touch_user", "UPDATE users SET updated_at = now() WHERE id = $1", 1,
     {DS_OID_INT8}, -1, {0}},
    {"test.any_type", "SELECT email FROM users LIMIT 1", 0, {0}, 1, {0}},
    {"test.profile_prefs",
     "SELECT preferences FROM profiles WHERE user_id = $1", 1, {DS_OID_INT8},
     1, {DS_OID_JSONB}},
};
static size_t test_user_table(const ds__stmt_def **d) {
    *d = test_user_stmts;
    return sizeof test_user_stmts / sizeof test_user_stmts[0];
}
static const ds__stmt_table test_tables[] = {{"test", test_user_table},
                                             {NULL, NULL}};

static const ds__stmt_def wrong_stmts[] = {
    {"test.email_by_wrong_type", "SELECT id FROM users WHERE email = $1", 1,
     {DS_OID_INT8}, 1, {DS_OID_INT8}},
    {"test.too_few_columns", "SELECT id, email FROM users", 0, {0}, 1,
     {DS_OID_INT8}},
    {"test.rows_from_command", "DELETE FROM users RETURNING id", 0, {0}, -1,
     {0}},
};
static size_t wrong_table(const ds__stmt_def **d) {
    *d = wrong_stmts;
    return sizeof wrong_stmts / sizeof wrong_stmts[0];
}

static const ds__stmt_def dup_stmts[] = {
    {"test.user_by_id", "SELECT 1", 0, {0}, 1, {DS_OID_INT4}},
};
static size_t dup_table(const ds__stmt_def **d) {
    *d = dup_stmts;
    return 1;
}

START_TEST(test_migrate_schema_check_passes_on_migrated_db) {
    char *url = dt_migrated_db("mig_check");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    st = ds__schema_check(pool, test_tables, DS_SCHEMA_VERSION, &err);
    ck_assert_ds_ok(st, err);
    /* Nothing is left prepared. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(pool, "SELECT count(*)::int8 FROM pg_prepared_statements",
                      NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    int64_t prepared = -1;
    st = ds_sql_result_int64(res, 0, 0, &prepared, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    ck_assert_int_le(prepared, 1); /* only the pool's own count(*) */
    ds_pool_close(pool);

    /* Through PgBouncer, in pooler mode. */
    char *pooled = pooler_url_of(url);
    ds_config *cfg = dt_config(pooled, 1, 2);
    st = ds_config_set(cfg, "statement_mode", "pooler", &err);
    ck_assert_ds_ok(st, err);
    st = ds_pool_open(cfg, &pool, &err);
    ck_assert_ds_ok(st, err);
    ds_config_free(cfg);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    dt_sql(url, "ALTER TABLE users ALTER COLUMN created_at TYPE timestamp");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "created_at"));
    ds_pool_close(pool);
    free(pooled);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_schema_check_catches_altered_column) {
    char *url = dt_migrated_db("mig_checkalt");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    dt_sql(url, "ALTER TABLE users ALTER COLUMN created_at TYPE timestamp");
    ds_status st = ds__schema_check(pool, test_tables, DS_SCHEMA_VERSION, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));
    ck_assert_ptr_nonnull(strstr(err.message, "column 4 \"created_at\""));
    ck_assert_ptr_nonnull(strstr(err.message, "timestamp without time zone"));
    ck_assert_ptr_nonnull(strstr(err.message, "timestamp with time zone"));

    /* Two mismatches: the first is named, the count says there is more. */
    dt_sql(url, "ALTER TABLE profiles DROP CONSTRAINT profiles_preferences_check, "
                "ALTER COLUMN preferences TYPE json");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "and 1 more"));

    /* A dropped column: the statement no longer prepares. */
    dt_sql(url, "ALTER TABLE users DROP COLUMN status");
    st = ds__schema_check(pool, test_tables, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));
    ck_assert_ptr_nonnull(strstr(err.message, "status"));
    ck_assert_str_eq(err.sqlstate, "42703");

    /* Parameter type, column count, rows where none were expected. */
    const ds__stmt_table wrong[] = {{"wrong", wrong_table}, {NULL, NULL}};
    st = ds__schema_check(pool, wrong, 0, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.email_by_wrong_type"));
    ck_assert_ptr_nonnull(strstr(err.message, "and 2 more"));

    /* Duplicate names are a bug in the library. */
    const ds__stmt_table dup[] = {
        {"test", test_user_table}, {"dup", dup_table}, {NULL, NULL}};
    st = ds__schema_check(pool, dup, 0, &err);
    ck_assert_ds_status(st, DS_ERR_INTERNAL, err);
    ck_assert_ptr_nonnull(strstr(err.message, "test.user_by_id"));

    /* The connection is fine afterwards. */
    ds_sql_result *res = NULL;
    st = ds_sql_exec_pool(pool, "SELECT 1", NULL, 0, &res, &err);
    ck_assert_ds_ok(st, err);
    ds_sql_result_free(res);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

START_TEST(test_migrate_schema_check_version_and_history) {
    char *url = dt_create_db("mig_checkver");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    ds_status st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "version 0"));
    ck_assert_ptr_nonnull(strstr(err.message, "ds-migrate up"));

    st = ds_migrate_to(pool, NULL, 1, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "version 1"));

    st = ds_migrate_up(pool, NULL, NULL, &err);
    ck_assert_ds_ok(st, err);
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);

    /* Migrated with a different file than the one built in. */
    dt_sql(url, "UPDATE ds_schema_migrations SET checksum = repeat('0', 64) "
                "WHERE version = 1");
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_status(st, DS_ERR_SCHEMA, err);
    ck_assert_ptr_nonnull(strstr(err.message, "0001_platform_schema"));

    /* A newer database (a rolling deploy) is accepted. */
    dt_sql(url, "DELETE FROM ds_schema_migrations WHERE version = 1");
    dt_sql(url, "INSERT INTO ds_schema_migrations (version, name, checksum) "
                "VALUES (99999, 'from_the_future', repeat('a', 64))");
    st = ds_migrate_check_schema(pool, &err);
    ck_assert_ds_ok(st, err);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

/* ---- errors and out of memory ---------------------------------------------------- */

START_TEST(test_migrate_errors_null_and_out_of_range) {
    ds_error err = {0};
    int n = 7;
    ds_migration_list *list = (ds_migration_list *)&err;
    ck_assert_int_eq(ds_migrate_up(NULL, NULL, &n, &err), DS_ERR_INVALID);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(ds_migrate_down(NULL, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_to(NULL, NULL, 1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_status(NULL, NULL, &list, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(list);
    ck_assert_int_eq(ds_migrate_verify(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(NULL, NULL, 3, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_check_schema(NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_up(NULL, NULL, NULL, NULL), DS_ERR_INVALID);

    ds_pool *pool = dt_pool(dt_env("DATABASE_URL"), 0, 1);
    ck_assert_int_eq(ds_migrate_down(pool, NULL, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_down(pool, NULL, -3, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_to(pool, NULL, -1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_status(pool, NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(pool, NULL, -1, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_migrate_maintain(pool, NULL, 121, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds__schema_check(pool, NULL, 0, &err), DS_ERR_INVALID);
    ds_migrate_options opts = dir_options("/nonexistent/dt_migrations");
    ck_assert_int_eq(ds_migrate_up(pool, &opts, NULL, &err), DS_ERR_MIGRATION);
    ck_assert_int_eq(ds_migrate_status(pool, &opts, &list, &err),
                     DS_ERR_MIGRATION);
    ds_pool_close(pool);
    ds_migrate_list_free(NULL);
    ck_assert_str_eq(ds_migrate_state_str((ds_migration_state)42), "unknown");
    ck_assert_str_eq(ds_migrate_state_str(DS_MIGRATION_OUT_OF_ORDER),
                     "out-of-order");
}
END_TEST

START_TEST(test_migrate_out_of_memory_is_an_error) {
    char *url = dt_migrated_db("mig_oom");
    ds_pool *pool = dt_pool(url, 1, 2);
    ds_error err = {0};
    bool succeeded = false;
    for (long n = 1; n < 400 && !succeeded; n++) {
        ds_migration_list *list = NULL;
        ds__test_fail_alloc_after(n);
        ds_status st = ds_migrate_status(pool, NULL, &list, &err);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM,
                      "allocation %ld: %s: %s", n, ds_status_str(st),
                      err.message);
        if (st == DS_OK) {
            ck_assert_uint_eq(list->count, (size_t)DS_SCHEMA_VERSION);
            succeeded = true;
        } else {
            ck_assert_ptr_null(list);
        }
        ds_migrate_list_free(list);
    }
    ck_assert(succeeded);
    succeeded = false;
    for (long n = 1; n < 400 && !succeeded; n++) {
        ds__test_fail_alloc_after(n);
        ds_status st = ds_migrate_check_schema(pool, &err);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM,
                      "allocation %ld: %s: %s", n, ds_status_str(st),
                      err.message);
        succeeded = st == DS_OK;
    }
    ck_assert(succeeded);
    ds_pool_close(pool);
    dt_drop_db(url);
    free(url);
}
END_TEST

Suite *ds_test_migrate_suite(void) {
    Suite *s = suite_create("migrate");
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
    tc = tcase_create("run");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_up_applies_everything_once);
    tcase_add_test(tc, test_migrate_down_and_to_move_both_ways);
    tcase_add_test(tc, test_migrate_dry_run_reports_and_changes_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("reversible");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_migrate_every_version_reversible);
    suite_add_tcase(s, tc);
    tc = tcase_create("history");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_refuses_edited_missing_out_of_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("failure");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_failure_rolls_back_and_names_line);
    tcase_add_test(tc, test_migrate_no_transaction_runs_outside_a_transaction);
    tcase_add_test(tc, test_migrate_connection_lost_at_commit_is_reported_unknown);
    suite_add_tcase(s, tc);
    tc = tcase_create("locks");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_waits_for_lock_then_times_out_or_proceeds);
    tcase_add_test(tc, test_migrate_ddl_lock_timeout_bounds_the_wait);
    tcase_add_test(tc, test_migrate_not_cut_by_statement_timeout);
    tcase_add_test(tc, test_migrate_four_processes_apply_each_once);
    tcase_add_test(tc, test_migrate_threads_share_the_work);
    suite_add_tcase(s, tc);
    tc = tcase_create("pgbouncer");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_four_processes_through_pgbouncer);
    tcase_add_test(tc, test_migrate_no_transaction_refused_behind_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("cli");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_migrate_cli_exit_codes_and_json);
    tcase_add_test(tc, test_migrate_cli_json_keeps_text_that_is_not_utf8);
    tcase_add_test(tc, test_migrate_cli_json_lines_report_progress);
    suite_add_tcase(s, tc);
    tc = tcase_create("maintain");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_maintain_creates_months_and_moves_rows);
    tcase_add_test(tc, test_migrate_maintain_concurrent_and_through_pgbouncer);
    suite_add_tcase(s, tc);
    tc = tcase_create("schema_check");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_schema_check_passes_on_migrated_db);
    tcase_add_test(tc, test_migrate_schema_check_catches_altered_column);
    tcase_add_test(tc, test_migrate_schema_check_version_and_history);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_migrate_errors_null_and_out_of_range);
    tcase_add_test(tc, test_migrate_out_of_memory_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}
