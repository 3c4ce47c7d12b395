/*
 * datastore/events.h — analytics events: one at a time, or many through
 * COPY (binary), the fastest way into PostgreSQL.
 *
 *   ds_event ev[2] = {{uid, "signup", NULL, 0}, {uid, "first_message", props, 0}};
 *   st = ds_event_record_batch(pool, ev, 2, &err);
 *
 * Events have no foreign key to users (a key lookup per row would cap the
 * insert rate); ds_gdpr_erase_user() deletes a user's events explicitly.
 * A batch is one COPY statement: all rows or none. Bad input anywhere in a
 * batch (detected while streaming) aborts the COPY, so nothing is written.
 *
 * Limits: name 1..200 bytes of UTF-8 without NUL; properties a JSON object
 * up to repo_max_json_bytes (NULL: {}); a batch 1..repo_max_batch events;
 * occurred_at within PostgreSQL's range (4713 BC to 294247 AD; INT64_MIN
 * and INT64_MAX are -infinity and infinity), else DS_ERR_INVALID.
 * Thread-safety: any thread, shared pool. Inputs are borrowed for the call.
 */
#ifndef DATASTORE_EVENTS_H
#define DATASTORE_EVENTS_H

#include <jansson.h>

#include "core.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An event to record. */
typedef struct ds_event {
    size_t size; /* growable, caller-allocated: set by DS_EVENT_INIT */
    int64_t user_id;          /* 0: anonymous                               */
    const char *name;
    const json_t *properties; /* object or NULL                             */
    int64_t occurred_at;      /* epoch microseconds; 0: now (server time for
                                 one event, this process's clock in a batch) */
} ds_event;
#define DS_EVENT_INIT DS_SIZED_INIT(ds_event)

/* Records one event (one INSERT); `event` is borrowed for the call.
 * Errors: DS_ERR_INVALID (NULL pool or event, a negative user_id, a bad
 * name, properties or time; nothing is written), DS_ERR_NOMEM, the pool's
 * DS_ERR_CONNECTION / DS_ERR_TIMEOUT / DS_ERR_DB. */
DS_EXPORT DS_NODISCARD ds_status ds_event_record(ds_pool *pool,
                                                 const ds_event *event,
                                                 ds_error *err);

/* Records `n` events with one COPY ... FROM STDIN (FORMAT binary); works
 * through PgBouncer in transaction mode too. `events` is borrowed for the
 * call. The same errors as ds_event_record(), for the whole batch: one bad
 * event writes nothing, and the message starts with "event <index>". */
DS_EXPORT DS_NODISCARD ds_status ds_event_record_batch(ds_pool *pool,
                                                       const ds_event *events,
                                                       size_t n,
                                                       ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_EVENTS_H */
