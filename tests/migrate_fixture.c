/* Helpers shared by the migrate suites: the ds-migrate command line and
 * row counts. Scratch directories, the ds-migrate path and the PgBouncer
 * URL come from dt_files.h and test_util.h. */
#include <stdio.h>
#include <stdlib.h>

#include "migrate_fixture.h"

/* Runs ds-migrate with `args` (already quoted); returns its exit status and
 * its stdout (+ stderr when `merge`) in *out (malloc'd). */
int run_cli(const char *args, bool merge, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s%s", dt_ds_migrate_path(), args,
             merge ? " 2>&1" : " 2>/dev/null");
    char *buf = NULL;
    int rc = dt_run_capture(cmd, &buf);
    if (out)
        *out = buf;
    else
        free(buf);
    return rc;
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

