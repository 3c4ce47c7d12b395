/* Shared by the progress tests (check_progress.c, check_online.c): a
 * recorder for ds_progress events that checks the promises every report
 * keeps, and bulk seeding of encrypted service connections. */
#ifndef DT_PROGRESS_UTIL_H
#define DT_PROGRESS_UTIL_H

#include <datastore/datastore.h>
#include <stdbool.h>

typedef struct dt_progress {
    const char *operation; /* expected in every event */
    int stop_at;           /* > 0: ask to stop at this event (1-based) */
    int events;
    bool ok;               /* every promise held so far */
    char why[256];         /* the first broken promise */
    long long first_done, last_done, last_total;
    char last_item[128], last_phase[32];
    bool cumulative;       /* done never decreases across items either */
} dt_progress;

/* A recorder expecting `operation`; stops at event `stop_at` (0: never). */
void dt_progress_init(dt_progress *p, const char *operation, int stop_at);
/* The ds_progress_fn: pass the recorder as `ud`. */
int dt_progress_record(void *ud, const ds_progress *ev);
/* Fails the test unless events came, every promise held and the last event
 * said done == total (when `finished`). */
void dt_progress_check(const dt_progress *p, bool finished);

/* Inserts `n` service connections sealed with `c` (key id of its active
 * key), for the users 1..users round robin (they must exist), in
 * multi-row INSERTs on one connection. */
void dt_seed_connections(const char *url, ds_crypto *c, int n, int users);

#endif
