/* analytics_events' private parts: its monthly partitions. */
#ifndef DS_EVENTS_INTERNAL_H
#define DS_EVENTS_INTERNAL_H

#include "datastore/migrate.h"
#include "pool/stmt.h"

/* Creates the missing analytics_events partitions of this month and the
 * next `months_ahead` on `c` (not in a transaction), online: see the top
 * of partitions.c. Each transaction waits at most `lock_timeout_ms` for a
 * lock and is retried after a jittered pause when it gives up.
 * `opts->on_event` (opts may be NULL) receives each batch copied.
 * `*created` receives how many partitions were attached. */
ds_status ds__events_ensure_partitions(ds_conn *c, int months_ahead,
                                       int lock_timeout_ms,
                                       const ds_migrate_options *opts,
                                       int *created, ds_error *err);

#endif
