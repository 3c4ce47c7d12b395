/*
 * cache: cache-aside in front of PostgreSQL, and a rate limit.
 *
 *   DATABASE_URL=postgresql://... REDIS_URL=redis://:pw@host:6379/0 ./cache
 *
 * The loader is what a repository call looks like: on a miss it reads
 * PostgreSQL, and ds_cache stores the result in Redis with a TTL. If Redis is
 * down, reads still succeed through the loader. The rate limiter allows 5
 * requests per second per user (GCRA), decided atomically in Redis.
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>

/* The loader: one row as JSON, straight from PostgreSQL. */
static ds_status load_user_stats(void *ud, const char *key, json_t **out,
                                 ds_error *err) {
    ds_pool *pool = ud;
    ds_sql_param params[] = {ds_sql_param_text(key)};
    ds_sql_result *res = NULL;
    ds_status st = ds_sql_exec_pool(pool,
                                "SELECT json_build_object('key', $1::text, "
                                "'users', (SELECT count(*) FROM users), "
                                "'loaded_at', now())",
                                params, 1, &res, err);
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
    json_t *value = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK ||
        ds_redis_open(cfg, &redis, &err) != DS_OK)
        goto fail;

    ds_cache_options copts = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&copts);
    copts.name = "example-stats";
    copts.schema_version = 1; /* bump when the JSON shape changes */
    copts.ttl_ms = 30000;
    if (ds_cache_open(redis, &copts, &cache, &err) != DS_OK)
        goto fail;

    /* the first read loads from PostgreSQL, the second comes from Redis */
    for (int i = 0; i < 2; i++) {
        if (ds_cache_get_or_load(cache, "global", NULL, load_user_stats, pool,
                                 &value, &err) != DS_OK)
            goto fail;
        char *text = json_dumps(value, JSON_COMPACT);
        printf("read %d: %s\n", i + 1, text ? text : "?");
        free(text);
        json_decref(value);
        value = NULL;
    }
    ds_cache_stats cs = DS_CACHE_STATS_INIT;
    if (ds_cache_stats_get(cache, &cs, &err) != DS_OK)
        goto fail;
    printf("cache: %llu hit(s), %llu load(s), %llu redis error(s)\n",
           (unsigned long long)cs.hits, (unsigned long long)cs.loads,
           (unsigned long long)cs.errors);
    /* after a write to the users table, drop the entry */
    if (ds_cache_invalidate(cache, "global", &err) != DS_OK)
        goto fail;

    ds_ratelimit_options ropts = {
        .size = sizeof(ds_ratelimit_options), .name = "example-api",
        .algorithm = DS_RATELIMIT_GCRA,
        .limit = 5,
        .period_ms = 1000,
        .on_redis_error = DS_RATELIMIT_FAIL_OPEN, /* availability first */
    };
    if (ds_ratelimit_open(redis, &ropts, &limiter, &err) != DS_OK)
        goto fail;
    for (int i = 0; i < 7; i++) {
        ds_ratelimit_result r = DS_RATELIMIT_RESULT_INIT;
        if (ds_ratelimit_check(limiter, "user:42", &r, &err) != DS_OK)
            goto fail;
        if (r.allowed)
            printf("request %d: allowed, %lld left\n", i + 1,
                   (long long)r.remaining);
        else
            printf("request %d: 429, retry after %lld ms\n", i + 1,
                   (long long)r.retry_after_ms);
    }
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "cache: %s: %s\n", ds_status_str(err.code),
                err.message);
    json_decref(value);
    ds_ratelimit_close(limiter);
    ds_cache_close(cache);
    ds_redis_close(redis);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
