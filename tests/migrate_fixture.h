/* Helpers shared by the migrate suites (check_migrate.c,
 * check_migrate_split.c, check_migrate_cli.c, check_migrate_maintain.c). */
#ifndef DS_TEST_MIGRATE_FIXTURE_H
#define DS_TEST_MIGRATE_FIXTURE_H

#include <stdbool.h>

#include "test_util.h"

/* A fresh temporary directory (removed with rm_dir). */
char *temp_dir(void);
void write_file(const char *dir, const char *name, const char *text);
void rm_dir(char *dir);

/* The ds-migrate next to this test binary: <build>/bin/ds-migrate. */
const char *ds_migrate_path(void);
/* Runs ds-migrate with `args` (already quoted); returns its exit status and
 * its stdout (+ stderr when `merge`) in *out (malloc'd). */
int run_cli(const char *args, bool merge, char **out);

long long count_rows(const char *url, const char *sql);
long long applied_count(const char *url);
bool table_exists(const char *url, const char *name);
/* The URL of the same database through PgBouncer (malloc'd). */
char *pooler_url_of(const char *direct);

#endif
