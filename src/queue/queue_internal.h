/* Decoding what the queue reads back from Redis, apart from the calls so
 * that it can be tested and fuzzed on its own: stream entries may have been
 * written by another process (or another version of this library). */
#ifndef DS_QUEUE_INTERNAL_H
#define DS_QUEUE_INTERNAL_H

#include <hiredis/hiredis.h>

#include "datastore/queue.h"

/* A count from reply text (a stream field, a script's answer), held within
 * 0..INT_MAX; 0 for NULL. */
int ds__queue_count(const char *s);

/* A job from one stream entry [id, [k, v, ...]] (XRANGE, XREADGROUP);
 * `attempt_base` is added to the entry's "a". Errors: DS_ERR_REDIS for a
 * reply of the wrong shape, DS_ERR_INTERNAL for an entry without a valid
 * JSON payload, DS_ERR_NOMEM. *out is NULL on failure. */
ds_status ds__queue_job_from_entry(const redisReply *e, int attempt_base,
                                   ds_queue_job **out, ds_error *err);

/* The reserve script's answer {entry, id, attempt, enqueued, payload, err,
 * next_due_in_ms}: a job, or *job NULL and *next_due_ms (-1: nothing
 * waits) when entry is "". Errors as above. */
ds_status ds__queue_job_from_reserve(const redisReply *r, ds_queue_job **job,
                                     int64_t *next_due_ms, ds_error *err);

#endif
