/* Helpers shared by the migrate suites (check_migrate.c,
 * check_migrate_split.c, check_migrate_cli.c, check_migrate_maintain.c);
 * scratch files and the ds-migrate path come from dt_files.h. */
#ifndef DS_TEST_MIGRATE_FIXTURE_H
#define DS_TEST_MIGRATE_FIXTURE_H

#include <stdbool.h>

#include "dt_files.h"
#include "test_util.h"

/* Runs the ds-migrate next to this test binary (dt_ds_migrate_path()) with
 * `args` (already quoted); returns its exit status and its stdout (+ stderr
 * when `merge`) in *out (malloc'd; NULL: discarded). */
int run_cli(const char *args, bool merge, char **out);

long long count_rows(const char *url, const char *sql);
/* Rows in ds_schema_migrations. */
long long applied_count(const char *url);
bool table_exists(const char *url, const char *name);

#endif
