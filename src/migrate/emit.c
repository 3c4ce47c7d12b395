/*
 * What the runner tells its caller and the server, shared by the runner
 * (migrate.c) and the dry run (dry_run.c): the event to opts->progress and
 * the lock_timeout text both the runner's SET and the printed script use.
 */
#include <stdio.h>

#include "migrate/runner.h"

void ds__migrate_emit(const ds__runner *r, ds_migrate_event ev,
                      const ds__migration_file *f, bool up, int64_t elapsed_us,
                      const char *sql) {
    if (!r->opts->progress)
        return;
    ds_migrate_progress p = {ev,
                             f ? f->version : 0,
                             f ? f->name : "",
                             up,
                             f ? (up ? f->up_no_tx : f->down_no_tx) : false,
                             elapsed_us,
                             sql,
                             NULL,
                             0,
                             0};
    r->opts->progress(r->opts->progress_ud, &p);
}

void ds__migrate_lock_timeout_text(const ds__runner *r, char *buf, size_t cap) {
    if (r->lock_timeout_ms < 0)
        snprintf(buf, cap, "0");
    else
        snprintf(buf, cap, "%dms", r->lock_timeout_ms);
}
