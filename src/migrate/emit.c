/*
 * What the runner tells its caller and the server, shared by the runner
 * (migrate.c) and the dry run (dry_run.c): the event to opts->on_event and
 * the lock_timeout text both the runner's SET and the printed script use.
 */
#include <stdio.h>

#include "migrate/runner.h"

void ds__migrate_emit(const ds__runner *r, ds_migrate_event_kind kind,
                      const ds__migration_file *f, bool up, int64_t elapsed_us,
                      const char *sql) {
    if (!r->opts->on_event)
        return;
    ds_migrate_event e = {kind,
                          f ? f->version : 0,
                          f ? f->name : "",
                          up,
                          f ? (up ? f->up_no_tx : f->down_no_tx) : false,
                          elapsed_us,
                          sql,
                          NULL,
                          0,
                          0};
    r->opts->on_event(r->opts->on_event_ud, &e);
}

void ds__migrate_lock_timeout_text(const ds__runner *r, char *buf, size_t cap) {
    if (r->lock_timeout_ms < 0)
        snprintf(buf, cap, "0");
    else
        snprintf(buf, cap, "%dms", r->lock_timeout_ms);
}
