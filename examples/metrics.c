/*
 * metrics: the library's counters in the Prometheus text format.
 *
 *   DATABASE_URL=postgresql://... REDIS_URL=redis://:pw@host:6379/0 ./metrics
 *
 * Opens a pool, a Redis handle, a cache, a rate limiter, a job queue and
 * the memory store, does a little work with each, and prints what a
 * /metrics endpoint would serve (pipe it into `promtool check metrics` to
 * lint it). Only counts and timings are exposed: never a URL, key or
 * parameter. The database must be migrated (ds-migrate up).
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static ds_status load_answer(void *ud, const char *key, json_t **out,
                             ds_error *err) {
    (void)key;
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec_pool(ud, "SELECT json_build_object('answer', 42)",
                                NULL, 0, &res, err);
    if (st == DS_OK)
        st = ds_sql_result_json(res, 0, 0, out, err);
    ds_sql_result_free(res);
    return st;
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_redis *redis = NULL;
    ds_cache *cache = NULL;
    ds_ratelimit *limiter = NULL;
    ds_queue *queue = NULL;
    ds_queue_job *job = NULL;
    ds_memory *memory = NULL;
    ds_memory_facts *hits = NULL;
    ds_sql_result *res = NULL;
    float *v = NULL;
    int64_t user_id = 0;
    char *text = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_redis_open(cfg, &redis, &err) != DS_OK)
        goto fail;
    ds_cache_options copts = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&copts);
    copts.name = "example-metrics";
    copts.ttl_ms = 10000;
    ds_ratelimit_options ropts = {
        .size = sizeof(ds_ratelimit_options), .name = "example-metrics",
        .algorithm = DS_RATELIMIT_GCRA,
        .limit = 2,
        .period_ms = 60000,
        .on_redis_error = DS_RATELIMIT_FAIL_OPEN,
    };
    if (ds_cache_open(redis, &copts, &cache, &err) != DS_OK ||
        ds_ratelimit_open(redis, &ropts, &limiter, &err) != DS_OK)
        goto fail;

    /* some traffic, so that the counters move */
    for (int i = 0; i < 3; i++) {
        json_t *value = NULL;
        if (ds_cache_get_or_load(cache, "answer", NULL, load_answer, pool,
                                 &value, &err) != DS_OK)
            goto fail;
        json_decref(value);
        ds_ratelimit_result r = DS_RATELIMIT_RESULT_INIT;
        if (ds_ratelimit_check(limiter, "metrics-example", &r, &err) != DS_OK)
            goto fail;
    }
    if (ds_cache_invalidate(cache, "answer", &err) != DS_OK)
        goto fail;

    /* a queue: two jobs in, both done */
    ds_queue_options qopts = {.size = sizeof(ds_queue_options)};
    ds_queue_options_init(&qopts);
    qopts.name = "example-metrics";
    if (ds_queue_open(redis, &qopts, &queue, &err) != DS_OK)
        goto fail;
    for (int i = 0; i < 2; i++) {
        json_t *payload = json_pack("{s:i}", "n", i);
        ds_status st = payload ? ds_queue_enqueue(queue, payload, 0, NULL, &err)
                               : DS_ERR_NOMEM;
        json_decref(payload);
        if (st != DS_OK)
            goto fail;
    }
    for (int i = 0; i < 2; i++) {
        if (ds_queue_reserve(queue, 1000, &job, &err) != DS_OK)
            goto fail;
        if (job && ds_queue_ack(queue, job, &err) != DS_OK)
            goto fail;
        ds_queue_job_free(job);
        job = NULL;
    }

    /* memory: one fact of a new user, searched once */
    if (ds_memory_open(pool, cfg, &memory, &err) != DS_OK)
        goto fail;
    size_t dim = ds_memory_dim(memory);
    v = calloc(dim, sizeof *v);
    if (!v) {
        err.code = DS_ERR_NOMEM;
        snprintf(err.message, sizeof err.message, "out of memory");
        goto fail;
    }
    v[0] = 1.0f;
    char email[96];
    snprintf(email, sizeof email, "metrics-example-%ld-%ld@example.org",
             (long)getpid(), (long)time(NULL));
    ds_sql_param p[] = {ds_sql_param_text(email)};
    if (ds_sql_exec_pool(pool, "INSERT INTO users (email) VALUES ($1) RETURNING id",
                     p, 1, &res, &err) != DS_OK ||
        ds_sql_result_int64(res, 0, 0, &user_id, &err) != DS_OK)
        goto fail;
    ds_memory_new_fact fact = DS_MEMORY_NEW_FACT_INIT;
    fact.user_id = user_id;
    fact.content = "Reads the metrics every morning";
    fact.importance = 0.5;
    fact.embedding = v;
    fact.dim = dim;
    ds_memory_search_options fresh = DS_MEMORY_SEARCH_OPTIONS_INIT;
    fresh.read_primary = true;
    if (ds_memory_add(memory, &fact, NULL, &err) != DS_OK ||
        ds_memory_search(memory, user_id, v, dim, 3, &fresh, &hits, &err) !=
            DS_OK)
        goto fail;

    ds_metrics_sources src = DS_METRICS_SOURCES_INIT;
    src.pool = pool;
    src.redis = redis;
    src.cache = cache;
    src.ratelimit = limiter;
    src.queue = queue;
    src.memory = memory;
    size_t len;
    if (ds_metrics_render(&src, &text, &len, &err) != DS_OK)
        goto fail;
    fwrite(text, 1, len, stdout);
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "metrics: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_metrics_free(text);
    if (user_id > 0) {
        ds_sql_param del[] = {ds_sql_param_int64(user_id)};
        ds_error cleanup = {0};
        if (ds_sql_exec_pool(pool, "DELETE FROM users WHERE id = $1", del, 1, NULL,
                         &cleanup) != DS_OK)
            fprintf(stderr, "metrics: cleanup: %s\n", cleanup.message);
    }
    ds_memory_facts_free(hits);
    ds_sql_result_free(res);
    free(v);
    ds_memory_close(memory);
    ds_queue_job_free(job);
    ds_queue_close(queue);
    ds_ratelimit_close(limiter);
    ds_cache_close(cache);
    ds_redis_close(redis);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
