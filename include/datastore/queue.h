/*
 * datastore/queue.h — a durable job queue on Redis Streams.
 *
 *   producer:  ds_queue_enqueue(q, payload, 0, job_id, &err);
 *   worker:    ds_queue_job *job;
 *              if (ds_queue_reserve(q, 5000, &job, &err) == DS_OK && job) {
 *                  if (do_work(job->payload))
 *                      ds_queue_ack(q, job, &err);
 *                  else
 *                      ds_queue_fail(q, job, "upstream timed out", NULL,
 *                                    &err);
 *                  ds_queue_job_free(job);
 *              }
 *
 * Delivery is at least once. A reserved job is invisible to other workers
 * for visibility_timeout_ms; if its worker dies (or takes longer without
 * ds_queue_touch), another worker's reserve reclaims it (XAUTOCLAIM) as its
 * next attempt. ds_queue_ack() completes a job exactly once: only the worker
 * that holds the job can acknowledge it, and only once.
 *
 * A failed job (ds_queue_fail) is retried after an exponential backoff
 * (backoff_base_ms * 2^(attempt-1), plus up to 25% jitter, never more than
 * backoff_max_ms: at the cap the jitter goes downwards); after max_attempts
 * attempts, whether failed or lost with a dead worker, it moves to the
 * dead-letter stream, where it can be listed, replayed or purged. Dead letters do not pile up: each new one trims the
 * stream to its newest dead_max_len letters and drops those older than
 * dead_max_age_ms, and the stream expires dead_max_age_ms after its newest
 * letter. Delayed jobs (enqueue with delay_ms) and retries wait in a
 * sorted set and are moved to the stream when due by the next reserve.
 *
 * Redis restarts: calls fail with DS_ERR_REDIS (retryable) while Redis is
 * down and work again when it is back; the consumer group is recreated if
 * the server lost it. What survives a restart is what Redis persisted (use
 * AOF or RDB snapshots in production); acknowledged jobs are deleted and
 * never come back.
 *
 * GDPR: a job enqueued with ds_queue_enqueue_for_user() carries the user's
 * id, and ds_redis_erase_user() deletes it wherever it waits (ready,
 * reserved, delayed or dead), for as long as delay + dead_max_age_ms + one
 * day after the enqueue. The payload itself is opaque to the library: put
 * personal data only in jobs enqueued for their user.
 *
 * Keys (byte layouts in docs/formats.md): <redis_prefix>q:<name>:s (stream,
 * consumer group "ds"; no TTL: it holds the live jobs and the group),
 * q:<name>:d (sorted set of delayed jobs; no TTL, emptied as they fall
 * due), q:<name>:dead (dead letters; expires as above), q:<name>:cur (the
 * reclaim cursor; a string with a TTL of one day).
 *
 * Thread-safety: a ds_queue is safe to share between threads (they share
 * its consumer name); a blocking reserve holds one Redis connection while it
 * waits, so size redis_pool_size for the workers. It borrows its ds_redis,
 * which must outlive it. A ds_queue_job belongs to one caller.
 */
#ifndef DATASTORE_QUEUE_H
#define DATASTORE_QUEUE_H

#include <jansson.h>

#include "core.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_queue ds_queue;

/* Length of a job id (hex), without the NUL. */
#define DS_QUEUE_JOB_ID_LEN 32

typedef struct ds_queue_options {
    size_t size; /* growable, caller-allocated: set by DS_QUEUE_OPTIONS_INIT */
    const char *name;            /* 1-64 of [A-Za-z0-9_.-]; required        */
    const char *consumer;        /* this worker's name; NULL: host-pid-random */
    int visibility_timeout_ms;   /* 0: the default, 30000                    */
    int max_attempts;            /* 0: the default, 5                        */
    int backoff_base_ms;         /* 0: the default, 1000; DS_NONE: no pause  */
    int backoff_max_ms;          /* 0: the default, 300000 (or the base)     */
    /* Dead letters kept at most (newest first); 0: the default, 10000.     */
    int64_t dead_max_len;
    /* Dead letters older than this go; 0: the default, 7 days; 1 s-1 year. */
    int64_t dead_max_age_ms;
} ds_queue_options;
#define DS_QUEUE_OPTIONS_INIT DS_SIZED_INIT(ds_queue_options)

#define DS_QUEUE_DEAD_MAX_LEN_DEFAULT 10000
#define DS_QUEUE_DEAD_MAX_AGE_MS_DEFAULT INT64_C(604800000)

/* Same as DS_QUEUE_OPTIONS_INIT: size set, every member zero (the
 * defaults; name NULL). NULL is a no-op. */
DS_EXPORT void ds_queue_options_init(ds_queue_options *opts);

/* A job as handed out by the queue. Only the library allocates it; fields
 * may be appended in later versions. */
typedef struct ds_queue_job {
    char id[DS_QUEUE_JOB_ID_LEN + 1]; /* stable across retries             */
    char entry_id[48];     /* this delivery's stream entry (dead letters:
                              the dead-letter entry, for replay)          */
    json_t *payload;       /* owned by the job                           */
    int attempt;           /* 1 on the first delivery                    */
    int64_t enqueued_at_ms;
    char last_error[256];  /* the previous failure ("" none)             */
} ds_queue_job;

/* Frees a job and its payload. NULL is a no-op. */
DS_EXPORT void ds_queue_job_free(ds_queue_job *job);
/* Frees an array of `count` jobs from ds_queue_dead_list() and the array.
 * NULL is a no-op. */
DS_EXPORT void ds_queue_jobs_free(ds_queue_job **jobs, size_t count);

/* Opens the queue on `redis`, which it borrows (close the queue first), and
 * creates its stream and consumer group if missing. `opts` is copied. *out
 * receives the queue, owned by the caller (ds_queue_close), NULL on
 * failure. Errors: DS_ERR_INVALID (NULL argument, bad name, consumer or
 * option), DS_ERR_REDIS, DS_ERR_NOMEM. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_open(ds_redis *redis,
                                               const ds_queue_options *opts,
                                               ds_queue **out, ds_error *err);

/* Frees the queue; removes its consumer from the group when it holds no
 * jobs (best effort: a Redis failure is ignored). Call it only when no other
 * call on the queue is in flight. Jobs it handed out stay valid and must
 * still be freed. NULL is a no-op. */
DS_EXPORT void ds_queue_close(ds_queue *queue);

/* The consumer name (borrowed, lives with the queue); NULL for NULL. */
DS_EXPORT const char *ds_queue_consumer(const ds_queue *queue);

/*
 * Adds a job with `payload` (borrowed; any JSON value, at most 16 MiB
 * encoded), ready now or after `delay_ms` (at most a year). `job_id` (may be
 * NULL; caller storage of DS_QUEUE_JOB_ID_LEN + 1 bytes) receives the new
 * job's id, "" on failure. Errors: DS_ERR_INVALID (NULL queue or payload,
 * bad delay, a payload that is not encodable or too large), DS_ERR_REDIS,
 * DS_ERR_NOMEM. Thread-safe.
 */
DS_EXPORT DS_NODISCARD ds_status ds_queue_enqueue(ds_queue *queue,
                                                  const json_t *payload,
                                                  int64_t delay_ms,
                                                  char *job_id, ds_error *err);

/* ds_queue_enqueue() for a job that concerns user `user_id` (> 0): the job
 * carries the id, and ds_redis_erase_user() deletes it wherever it waits
 * (see GDPR above). job->payload is what the worker gets, as with
 * ds_queue_enqueue(). Errors as ds_queue_enqueue(), DS_ERR_INVALID also for
 * user_id <= 0. Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_enqueue_for_user(
    ds_queue *queue, int64_t user_id, const json_t *payload, int64_t delay_ms,
    char *job_id, ds_error *err);

/* Adds `n` jobs ready now (payloads borrowed), pipelined: one round trip
 * per 500. On failure some of them may have been added. Errors as
 * ds_queue_enqueue() (DS_ERR_INVALID also for a NULL payload). */
DS_EXPORT DS_NODISCARD ds_status ds_queue_enqueue_batch(
    ds_queue *queue, json_t *const *payloads, size_t n, ds_error *err);

/*
 * Takes the next job: a stuck one past its visibility timeout first, then
 * the oldest ready one, waiting up to `wait_ms` (0: do not wait). *job is
 * NULL when none came in time (DS_OK). A job past max_attempts found on the
 * way is moved to the dead letters instead. *job is owned by the caller
 * (ds_queue_job_free), NULL on failure. Waiting holds one pooled
 * connection. Errors: DS_ERR_INVALID (NULL argument, wait_ms < 0),
 * DS_ERR_REDIS, DS_ERR_NOMEM, DS_ERR_INTERNAL (an entry whose payload is
 * not JSON). Thread-safe.
 */
DS_EXPORT DS_NODISCARD ds_status ds_queue_reserve(ds_queue *queue, int wait_ms,
                                                  ds_queue_job **job,
                                                  ds_error *err);

/*
 * Completes the job and deletes it. Errors: DS_ERR_CONFLICT (another worker
 * reclaimed it after the visibility timeout: that worker completes it),
 * DS_ERR_NOT_FOUND (no longer pending: already acknowledged, failed, or
 * lost with the server), DS_ERR_INVALID, DS_ERR_REDIS, DS_ERR_NOMEM. `job`
 * is borrowed and stays the caller's to free. Thread-safe.
 */
DS_EXPORT DS_NODISCARD ds_status ds_queue_ack(ds_queue *queue,
                                              const ds_queue_job *job,
                                              ds_error *err);

/*
 * Reports a failed attempt with a short `reason` (may be NULL; kept with
 * the job, up to 255 bytes): the job is retried after the backoff, or moved
 * to the dead letters after max_attempts. *dead (may be NULL) says which.
 * Errors as ds_queue_ack().
 */
DS_EXPORT DS_NODISCARD ds_status ds_queue_fail(ds_queue *queue,
                                               const ds_queue_job *job,
                                               const char *reason, bool *dead,
                                               ds_error *err);

/* Restarts the job's visibility timeout (a heartbeat for long jobs).
 * Errors as ds_queue_ack(). */
DS_EXPORT DS_NODISCARD ds_status ds_queue_touch(ds_queue *queue,
                                                const ds_queue_job *job,
                                                ds_error *err);

/* Up to `max` (1-100000) dead letters, oldest first, in an array the caller
 * frees with ds_queue_jobs_free(jobs, count) (NULL/0 when there are none or
 * on failure); each job's entry_id names it for replay and last_error says
 * why it died. Errors: DS_ERR_INVALID, DS_ERR_REDIS, DS_ERR_NOMEM,
 * DS_ERR_INTERNAL (a dead letter whose payload is not JSON). */
DS_EXPORT DS_NODISCARD ds_status ds_queue_dead_list(ds_queue *queue,
                                                    size_t max,
                                                    ds_queue_job ***jobs,
                                                    size_t *count,
                                                    ds_error *err);

/* Moves a dead letter (`entry_id` from ds_queue_dead_list, or NULL for
 * all of them) back to the queue as a fresh job with the same id and
 * payload; *replayed (may be NULL) counts them (0 on failure, although
 * with entry_id NULL a failure after the first 500 leaves those replayed).
 * Errors:
 * DS_ERR_NOT_FOUND (`entry_id` names no dead letter), DS_ERR_INVALID,
 * DS_ERR_REDIS, DS_ERR_NOMEM. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_dead_replay(ds_queue *queue,
                                                      const char *entry_id,
                                                      int64_t *replayed,
                                                      ds_error *err);

/* Deletes a dead letter (`entry_id` from ds_queue_dead_list) or, with
 * entry_id NULL, all of them; *purged (may be NULL) counts them (0 on
 * failure). Errors: DS_ERR_NOT_FOUND (`entry_id` names no dead letter),
 * DS_ERR_INVALID, DS_ERR_REDIS, DS_ERR_NOMEM. Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_dead_purge(ds_queue *queue,
                                                     const char *entry_id,
                                                     int64_t *purged,
                                                     ds_error *err);

typedef struct ds_queue_counts {
    size_t size; /* growable, caller-allocated: set by DS_QUEUE_COUNTS_INIT */
    int64_t ready;    /* waiting for a worker               */
    int64_t reserved; /* held by workers (pending)          */
    int64_t delayed;  /* not due yet (delays and retries)   */
    int64_t dead;     /* dead letters                       */
} ds_queue_counts;
#define DS_QUEUE_COUNTS_INIT DS_SIZED_INIT(ds_queue_counts)

/* The queue's sizes now, into *out (caller storage; reset first). Errors:
 * DS_ERR_INVALID, DS_ERR_REDIS, DS_ERR_NOMEM. Thread-safe. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_counts_get(ds_queue *queue,
                                                     ds_queue_counts *out,
                                                     ds_error *err);

/*
 * What this handle did since it opened: counters kept in memory, read
 * without a round trip (ds_queue_counts_get() asks Redis for the sizes).
 * A caller-allocated, growable struct (docs/abi.md): set `size` with
 * ds_queue_stats_init() or DS_QUEUE_STATS_INIT before the call.
 */
typedef struct ds_queue_stats {
    size_t size;            /* sizeof (ds_queue_stats) as compiled        */
    uint64_t enqueued;      /* jobs added (ready, delayed and batched)    */
    uint64_t reserved;      /* jobs handed out by ds_queue_reserve()      */
    uint64_t reclaimed;     /* of those, taken over from a silent worker  */
    uint64_t acked;         /* jobs completed by ds_queue_ack()           */
    uint64_t failed;        /* ds_queue_fail() calls that took effect     */
    uint64_t retried;       /* of those, jobs scheduled for a retry       */
    uint64_t dead_lettered; /* jobs moved to the dead letters, by a fail
                               or by a reserve that found a job out of
                               attempts                                   */
    uint64_t lost;          /* ack/fail/touch of a job this worker no
                               longer held (DS_ERR_CONFLICT/NOT_FOUND)    */
    uint64_t errors;        /* calls that failed for another reason than
                               a bad argument or a lost job (Redis
                               down, a malformed entry, out of memory)    */
} ds_queue_stats;

#define DS_QUEUE_STATS_INIT DS_SIZED_INIT(ds_queue_stats)

/* Zeroes *stats and sets its size. NULL is a no-op. */
DS_EXPORT void ds_queue_stats_init(ds_queue_stats *stats);

/* Copies the counters of `queue` into *out (its size set; the counters are
 * zeroed first). Errors: DS_ERR_INVALID (NULL queue or out, out->size not
 * one this library knows). Thread-safe; each counter is read atomically,
 * the set is not one snapshot. */
DS_EXPORT DS_NODISCARD ds_status ds_queue_stats_get(const ds_queue *queue,
                                                    ds_queue_stats *out,
                                                    ds_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_QUEUE_H */
