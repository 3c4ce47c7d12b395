/*
 * datastore/metrics.h — the library's counters in the Prometheus text
 * exposition format.
 *
 *   ds_metrics_sources src = DS_METRICS_SOURCES_INIT;
 *   src.pool = pool; src.redis = redis; src.cache = cache;
 *   char *text;
 *   size_t len;
 *   if (ds_metrics_render(&src, &text, &len, &err) == DS_OK) {
 *       send_http_200(text, len);   // Content-Type: text/plain; version=0.0.4
 *       ds_metrics_free(text);
 *   }
 *
 * Every handle given in the sources is read through its own stats call
 * (ds_pool_stats_get, ds_redis_stats_get, ds_cache_stats_get,
 * ds_ratelimit_stats_get, ds_queue_stats_get, ds_memory_stats_get); NULL
 * ones are left out. The queue's sizes (ds_queue_jobs) come from
 * ds_queue_counts_get(), one pipelined Redis round trip: when Redis does
 * not answer, that one family is left out and the rest is rendered (the
 * failure shows in ds_redis_errors_total). Names follow the
 * Prometheus conventions: prefix `ds_`, base units in the name (seconds),
 * `_total` on counters, one # HELP and # TYPE line per family. The
 * exposition holds counts and timings only: never a URL, key, user id or
 * statement parameter.
 *
 * Families:
 *   ds_info{version}                                    gauge, always 1
 *   ds_pool_connections{state="idle"|"in_use"}          gauge
 *   ds_pool_waiters                                     gauge
 *   ds_pool_acquires_total, ds_pool_acquire_timeouts_total,
 *   ds_pool_reconnects_total, ds_pool_connect_failures_total,
 *   ds_pool_discarded_connections_total                 counters
 *   ds_pool_acquire_wait_{p50,p99,max}_seconds          gauges
 *   ds_redis_connections{state="idle"|"in_use"}         gauge
 *   ds_redis_commands_total, ds_redis_errors_total, ds_redis_connects_total,
 *   ds_redis_connect_failures_total, ds_redis_stale_connections_replaced_total
 *   ds_cache_{hits,negative_hits,misses,loads,stampede_waits,stale_served,
 *             early_refreshes,corrupt_values,errors}_total
 *   ds_ratelimit_{checks,allowed,denied,degraded}_total
 *   ds_queue_{enqueued,reserved,reclaimed,acked,failed,retried,
 *             dead_lettered,lost,errors}_total{queue}   counters
 *   ds_queue_jobs{queue,state="ready"|"reserved"|"delayed"|"dead"}  gauge
 *   ds_memory_searches_total{kind="vector"|"hybrid"},
 *   ds_memory_backend_searches_total{backend="pgvector"|"fallback"},
 *   ds_memory_rows_scanned_total, ds_memory_rows_rescored_total,
 *   ds_memory_facts_added_total, ds_memory_errors_total  counters
 *   ds_memory_search_seconds_{sum,count}                summary (no quantiles)
 *
 * Thread-safety: safe to call from any thread while the handles are in use
 * (each counter is read atomically; the set is not one snapshot).
 */
#ifndef DATASTORE_METRICS_H
#define DATASTORE_METRICS_H

#include <stddef.h>

#include "cache.h"
#include "core.h"
#include "memory.h"
#include "pool.h"
#include "queue.h"
#include "ratelimit.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The handles to report on; each may be NULL. Borrowed for the call. */
typedef struct ds_metrics_sources {
    size_t size; /* growable, caller-allocated: set by DS_METRICS_SOURCES_INIT */
    ds_pool *pool;
    ds_redis *redis;
    const ds_cache *cache;
    const ds_ratelimit *ratelimit;
    ds_queue *queue;          /* also asked for its sizes (see above)  */
    const ds_memory *memory;
} ds_metrics_sources;
#define DS_METRICS_SOURCES_INIT DS_SIZED_INIT(ds_metrics_sources)

/*
 * Renders the exposition into *out (NUL-terminated, *out_len bytes without
 * the NUL; out_len may be NULL), freed with ds_metrics_free(). On failure
 * *out is NULL. Errors: DS_ERR_INVALID (NULL src or out), DS_ERR_NOMEM, and
 * the error of a stats call that fails.
 */
DS_EXPORT DS_NODISCARD ds_status ds_metrics_render(const ds_metrics_sources *src,
                                                   char **out, size_t *out_len,
                                                   ds_error *err);

/* Frees a rendered exposition. NULL is a no-op. */
DS_EXPORT void ds_metrics_free(char *text);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_METRICS_H */
