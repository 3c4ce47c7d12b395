/* Scratch files and the ds-migrate command line, shared by the suites that
 * write migration directories or run the CLI (check_online.c,
 * check_progress.c, check_rehearse.c, check_lint.c, the check_migrate*.c
 * suites). */
#ifndef DS_TEST_FILES_H
#define DS_TEST_FILES_H

#include "test_util.h"

/* A new empty directory $TMPDIR/dt_<tag>_XXXXXX (malloc'd path); fails the
 * test if it cannot be made. */
char *dt_temp_dir(const char *tag);
/* Writes `text` to dir/name (replacing it); fails the test on error. */
void dt_write_file(const char *dir, const char *name, const char *text);
/* Removes `dir` and everything in it, then frees the path. */
void dt_rm_dir(char *dir);

/* The ds-migrate built next to this test binary (<build>/bin/ds-migrate);
 * fails the test if it is not built. A static buffer. */
const char *dt_ds_migrate_path(void);
/* Runs `cmd` through the shell and returns its exit status (-1 when it did
 * not exit); what it printed on stdout in *out (malloc'd, NUL-terminated;
 * add 2>&1 to the command for stderr too). */
int dt_run_capture(const char *cmd, char **out);

#endif
