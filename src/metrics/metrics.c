/* The Prometheus text exposition (format 0.0.4) of the handles' stats. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/growable.h"
#include "core/internal.h"
#include "datastore/metrics.h"
#include "queue/queue_internal.h"

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} text_buf;

static void put(text_buf *t, const char *fmt, ...) DS_PRINTF(2, 3);

static void put(text_buf *t, const char *fmt, ...) {
    if (t->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *grown = ds__realloc(t->buf, cap);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
}

/* One family header. */
static void family(text_buf *t, const char *name, const char *type,
                   const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(text_buf *t, const char *name, const char *help,
                    uint64_t v) {
    family(t, name, "counter", help);
    put(t, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(text_buf *t, const char *name, const char *help, long long v) {
    family(t, name, "gauge", help);
    put(t, "%s %lld\n", name, v);
}

static void render_pool(text_buf *t, const ds_pool_stats *s) {
    family(t, "ds_pool_connections", "gauge",
           "Open PostgreSQL connections of the pool, by state.");
    put(t, "ds_pool_connections{state=\"idle\"} %d\n", s->idle);
    put(t, "ds_pool_connections{state=\"in_use\"} %d\n", s->in_use);
    gauge(t, "ds_pool_waiters", "Threads waiting in acquire now.", s->waiters);
    counter(t, "ds_pool_acquires_total", "Successful acquires.", s->acquires);
    counter(t, "ds_pool_acquire_timeouts_total",
            "Acquires that timed out waiting for a connection.", s->timeouts);
    counter(t, "ds_pool_reconnects_total",
            "Dead connections replaced (server restart, failover, killed backend).",
            s->reconnects);
    counter(t, "ds_pool_connect_failures_total",
            "Attempts to open a connection that failed.", s->connect_failures);
    counter(t, "ds_pool_discarded_connections_total",
            "Leases closed on release instead of reused (broken, dirty, expired).",
            s->discarded);
    /* Gauges, not a summary: the pool keeps a histogram of waits but no
     * running sum. */
    family(t, "ds_pool_acquire_wait_p50_seconds", "gauge",
           "Median time spent waiting in acquire since the pool opened.");
    put(t, "ds_pool_acquire_wait_p50_seconds %.6f\n",
        (double)s->acquire_wait_p50_us / 1e6);
    family(t, "ds_pool_acquire_wait_p99_seconds", "gauge",
           "99th percentile of the time spent waiting in acquire.");
    put(t, "ds_pool_acquire_wait_p99_seconds %.6f\n",
        (double)s->acquire_wait_p99_us / 1e6);
    family(t, "ds_pool_acquire_wait_max_seconds", "gauge",
           "Longest time spent waiting in acquire.");
    put(t, "ds_pool_acquire_wait_max_seconds %.6f\n",
        (double)s->acquire_wait_max_us / 1e6);
    gauge(t, "ds_pool_waiter_overtaken_max",
          "Most acquisitions that overtook one waiter (threads keeping a "
          "connection while it waited).",
          (long long)s->waiter_overtaken_max);
}

static void render_redis(text_buf *t, const ds_redis_stats *s) {
    family(t, "ds_redis_connections", "gauge",
           "Open Redis connections of the handle, by state.");
    put(t, "ds_redis_connections{state=\"idle\"} %d\n", s->idle);
    put(t, "ds_redis_connections{state=\"in_use\"} %d\n",
        s->connections - s->idle > 0 ? s->connections - s->idle : 0);
    counter(t, "ds_redis_commands_total",
            "Redis round trips (a pipeline counts once).", s->commands);
    counter(t, "ds_redis_errors_total",
            "Failed Redis round trips and error replies.", s->errors);
    counter(t, "ds_redis_connects_total", "Redis connections opened.",
            s->connects);
    counter(t, "ds_redis_connect_failures_total",
            "Attempts to open a Redis connection that failed.",
            s->connect_failures);
    counter(t, "ds_redis_stale_connections_replaced_total",
            "Idle Redis connections found dead and replaced.",
            s->stale_replaced);
}

static void render_cache(text_buf *t, const ds_cache_stats *s) {
    counter(t, "ds_cache_hits_total", "Fresh values served from the cache.",
            s->hits);
    counter(t, "ds_cache_negative_hits_total",
            "Cached not-found answers served.", s->negative_hits);
    counter(t, "ds_cache_misses_total", "Reads that found nothing usable.",
            s->misses);
    counter(t, "ds_cache_loads_total", "Loader calls.", s->loads);
    counter(t, "ds_cache_stampede_waits_total",
            "Callers served by another caller's load.", s->stampede_waits);
    counter(t, "ds_cache_stale_served_total",
            "Stale values served during a refresh.", s->stale_served);
    counter(t, "ds_cache_early_refreshes_total",
            "Refreshes started before expiry.", s->early_refreshes);
    counter(t, "ds_cache_corrupt_values_total",
            "Unreadable cached values replaced.", s->corrupt);
    counter(t, "ds_cache_errors_total",
            "Redis failures absorbed by loading from the source.", s->errors);
}

static void render_ratelimit(text_buf *t, const ds_ratelimit_stats *s) {
    counter(t, "ds_ratelimit_checks_total", "Rate limit checks and peeks.",
            s->checks);
    counter(t, "ds_ratelimit_allowed_total", "Requests allowed.", s->allowed);
    counter(t, "ds_ratelimit_denied_total", "Requests denied.", s->denied);
    counter(t, "ds_ratelimit_degraded_total",
            "Checks answered by the failure policy because Redis failed.",
            s->degraded);
}

/* A counter family with one sample labelled queue="<name>" (queue names
 * are [A-Za-z0-9_.-]: nothing to escape). */
static void queue_counter(text_buf *t, const char *queue, const char *name,
                          const char *help, uint64_t v) {
    family(t, name, "counter", help);
    put(t, "%s{queue=\"%s\"} %llu\n", name, queue, (unsigned long long)v);
}

static void render_queue(text_buf *t, const char *q, const ds_queue_stats *s,
                         const ds_queue_counts *c) {
    queue_counter(t, q, "ds_queue_enqueued_total",
                  "Jobs added by this process (ready, delayed, batched).",
                  s->enqueued);
    queue_counter(t, q, "ds_queue_reserved_total",
                  "Jobs handed to this process's workers.", s->reserved);
    queue_counter(t, q, "ds_queue_reclaimed_total",
                  "Reserved jobs taken over from a worker past its "
                  "visibility timeout.",
                  s->reclaimed);
    queue_counter(t, q, "ds_queue_acked_total", "Jobs completed.", s->acked);
    queue_counter(t, q, "ds_queue_failed_total", "Failed attempts reported.",
                  s->failed);
    queue_counter(t, q, "ds_queue_retried_total",
                  "Failed jobs scheduled for another attempt.", s->retried);
    queue_counter(t, q, "ds_queue_dead_lettered_total",
                  "Jobs moved to the dead letters (failed or out of attempts).",
                  s->dead_lettered);
    queue_counter(t, q, "ds_queue_lost_total",
                  "Acks, fails and touches of jobs no longer held (the "
                  "visibility timeout passed).",
                  s->lost);
    queue_counter(t, q, "ds_queue_errors_total",
                  "Queue calls failed by Redis or a malformed entry.",
                  s->errors);
    if (!c)
        return;
    family(t, "ds_queue_jobs", "gauge", "Jobs in the queue now, by state.");
    put(t, "ds_queue_jobs{queue=\"%s\",state=\"ready\"} %lld\n", q,
        (long long)c->ready);
    put(t, "ds_queue_jobs{queue=\"%s\",state=\"reserved\"} %lld\n", q,
        (long long)c->reserved);
    put(t, "ds_queue_jobs{queue=\"%s\",state=\"delayed\"} %lld\n", q,
        (long long)c->delayed);
    put(t, "ds_queue_jobs{queue=\"%s\",state=\"dead\"} %lld\n", q,
        (long long)c->dead);
}

static void render_memory(text_buf *t, const ds_memory_stats *s) {
    family(t, "ds_memory_searches_total", "counter",
           "Memory searches answered, by kind.");
    put(t, "ds_memory_searches_total{kind=\"vector\"} %llu\n",
        (unsigned long long)s->searches);
    put(t, "ds_memory_searches_total{kind=\"hybrid\"} %llu\n",
        (unsigned long long)s->hybrid_searches);
    family(t, "ds_memory_backend_searches_total", "counter",
           "Memory searches answered, by vector backend.");
    put(t, "ds_memory_backend_searches_total{backend=\"pgvector\"} %llu\n",
        (unsigned long long)s->pgvector_searches);
    put(t, "ds_memory_backend_searches_total{backend=\"fallback\"} %llu\n",
        (unsigned long long)s->fallback_searches);
    counter(t, "ds_memory_rows_scanned_total",
            "Embedding sketches read by searches.", s->rows_scanned);
    counter(t, "ds_memory_rows_rescored_total",
            "Exact embeddings read by searches to rescore candidates.",
            s->rows_rescored);
    family(t, "ds_memory_search_seconds", "summary",
           "Wall time of answered memory searches.");
    put(t, "ds_memory_search_seconds_sum %.6f\n",
        (double)s->search_time_us / 1e6);
    put(t, "ds_memory_search_seconds_count %llu\n",
        (unsigned long long)(s->searches + s->hybrid_searches));
    counter(t, "ds_memory_facts_added_total", "Facts written.",
            s->facts_added);
    counter(t, "ds_memory_errors_total",
            "Memory searches and adds failed by the database or connection.",
            s->errors);
}

DS_EXPORT ds_status ds_metrics_render(const ds_metrics_sources *src, char **out,
                                      size_t *out_len, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    if (out_len)
        *out_len = 0;
    DS_CHECK_ARG(err, src, "src is NULL");
    ds_metrics_sources sources;
    ds_status checked = DS__IN(src, &sources, ds_metrics_sources, err);
    if (checked != DS_OK)
        return checked;
    src = &sources;

    /* Every stats call first, so that a failure leaves nothing half
     * rendered. */
    ds_pool_stats pool = DS_POOL_STATS_INIT;
    ds_redis_stats redis = DS_REDIS_STATS_INIT;
    ds_cache_stats cache = DS_CACHE_STATS_INIT;
    ds_ratelimit_stats rl = DS_RATELIMIT_STATS_INIT;
    ds_queue_stats queue = DS_QUEUE_STATS_INIT;
    ds_queue_counts counts = DS_QUEUE_COUNTS_INIT;
    bool have_counts = false;
    ds_memory_stats memory = DS_MEMORY_STATS_INIT;
    ds_status st = DS_OK;
    if (src->pool)
        st = ds_pool_stats_get(src->pool, &pool, err);
    if (st == DS_OK && src->redis)
        st = ds_redis_stats_get(src->redis, &redis, err);
    if (st == DS_OK && src->cache)
        st = ds_cache_stats_get(src->cache, &cache, err);
    if (st == DS_OK && src->ratelimit)
        st = ds_ratelimit_stats_get(src->ratelimit, &rl, err);
    if (st == DS_OK && src->queue)
        st = ds_queue_stats_get(src->queue, &queue, err);
    if (st == DS_OK && src->memory)
        st = ds_memory_stats_get(src->memory, &memory, err);
    if (st != DS_OK) {
        ds__error_prefix(err, "metrics");
        return st;
    }

    if (src->queue) {
        /* the sizes are a Redis round trip: without Redis they are left
         * out, not the whole exposition */
        ds_error ignored = {0};
        have_counts = ds_queue_counts_get(src->queue, &counts, &ignored) == DS_OK;
    }

    text_buf t = {.buf = ds__malloc(4096), .cap = 4096};
    if (!t.buf)
        return ds__error_set(err, DS_ERR_NOMEM, "metrics: out of memory");
    t.buf[0] = '\0';
    family(&t, "ds_info", "gauge", "libdatastore version (always 1).");
    put(&t, "ds_info{version=\"%s\"} 1\n", ds_version());
    if (src->pool)
        render_pool(&t, &pool);
    if (src->redis)
        render_redis(&t, &redis);
    if (src->cache)
        render_cache(&t, &cache);
    if (src->ratelimit)
        render_ratelimit(&t, &rl);
    if (src->queue)
        render_queue(&t, ds__queue_name(src->queue), &queue,
                     have_counts ? &counts : NULL);
    if (src->memory)
        render_memory(&t, &memory);
    if (t.oom) {
        ds__free(t.buf);
        return ds__error_set(err, DS_ERR_NOMEM, "metrics: out of memory");
    }
    *out = t.buf;
    if (out_len)
        *out_len = t.len;
    return DS_OK;
}

DS_EXPORT void ds_metrics_free(char *text) { ds__free(text); }
