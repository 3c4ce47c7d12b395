/*
 * metrics: the library's counters in the Prometheus text format.
 *
 *   DATABASE_URL=postgresql://... REDIS_URL=redis://:pw@host:6379/0 ./metrics
 *
 * Opens a pool, a Redis handle, a cache and a rate limiter, does a little
 * work with each, and prints what a /metrics endpoint would serve (pipe it
 * into `promtool check metrics` to lint it). Only counts and timings are
 * exposed: never a URL, key or parameter.
 */
#include <datastore/datastore.h>
#include <stdio.h>

static ds_status load_answer(void *ud, const char *key, json_t **out,
                             ds_error *err) {
    (void)key;
    ds_result *res = NULL;
    ds_status st = ds_sql_exec_pool(ud, "SELECT json_build_object('answer', 42)",
                                NULL, 0, &res, err);
    if (st == DS_OK)
        st = ds_result_json(res, 0, 0, out, err);
    ds_result_free(res);
    return st;
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_redis *redis = NULL;
    ds_cache *cache = NULL;
    ds_ratelimit *limiter = NULL;
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

    ds_metrics_sources src = {
        .size = sizeof(ds_metrics_sources), .pool = pool, .redis = redis, .cache = cache, .ratelimit = limiter};
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
    ds_ratelimit_close(limiter);
    ds_cache_close(cache);
    ds_redis_close(redis);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
