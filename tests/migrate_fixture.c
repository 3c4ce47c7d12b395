/* Helpers shared by the migrate suites: scratch directories, the
 * ds-migrate command, row counts and the PgBouncer URL. */
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

#include "migrate_fixture.h"

/* A fresh temporary directory (removed with rm_dir). */
char *temp_dir(void) {
    const char *base = dt_env_opt("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/dt_migrate_XXXXXX", base ? base : P_tmpdir);
    char *d = strdup(tmpl);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

void write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

void rm_dir(char *dir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(dir);
}

/* The ds-migrate next to this test binary: <build>/bin/ds-migrate. */
const char *ds_migrate_path(void) {
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
int run_cli(const char *args, bool merge, char **out) {
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

long long count_rows(const char *url, const char *sql) {
    return dt_sql_int(url, sql);
}

long long applied_count(const char *url) {
    return count_rows(url, "SELECT count(*) FROM ds_schema_migrations");
}

bool table_exists(const char *url, const char *name) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT (to_regclass('%s') IS NOT NULL)::int",
             name);
    return count_rows(url, sql) == 1;
}

/* The URL of the same database through PgBouncer (malloc'd). */
char *pooler_url_of(const char *direct) {
    const char *slash = strrchr(direct, '/');
    char dbname[128];
    snprintf(dbname, sizeof dbname, "%.*s", (int)strcspn(slash + 1, "?"),
             slash + 1);
    return dt_url_with_db(dt_env("DATABASE_POOLER_URL"), dbname);
}
