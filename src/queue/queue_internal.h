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

/* What a reserve did besides handing out a job (for the stats). */
typedef struct ds__queue_reserve_info {
    int64_t next_due_ms; /* -1: nothing waits                          */
    int dead_lettered;   /* jobs out of attempts moved to dead letters */
    bool reclaimed;      /* the job was taken over from a silent worker */
} ds__queue_reserve_info;

/* The reserve script's answer {entry, id, attempt, enqueued, payload, err,
 * next_due_in_ms, dead_lettered, reclaimed}: a job, or *job NULL when
 * entry is "" (info->next_due_ms says when the next delayed job is due).
 * Errors as above; on failure *info holds only dead_lettered (the
 * script's moves happened even if its job cannot be decoded). */
ds_status ds__queue_job_from_reserve(const redisReply *r, ds_queue_job **job,
                                     ds__queue_reserve_info *info,
                                     ds_error *err);

/* The queue's name (borrowed, lives with the queue): the metrics label. */
const char *ds__queue_name(const ds_queue *queue);

#endif
