/* Rate limits as Lua scripts on the Redis server (see scripts.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/growable.h"
#include "datastore/ratelimit.h"
#include "ratelimit/scripts.h"
#include "redis/redis_internal.h"

#define KEY_MAX 512

static ds__redis_script gcra_script =
    DS__REDIS_SCRIPT("ratelimit_gcra", DS_RATELIMIT_GCRA_LUA);
static ds__redis_script sliding_log_script =
    DS__REDIS_SCRIPT("ratelimit_sliding_log", DS_RATELIMIT_SLIDING_LOG_LUA);
static ds__redis_script sliding_buckets_script = DS__REDIS_SCRIPT(
    "ratelimit_sliding_buckets", DS_RATELIMIT_SLIDING_BUCKETS_LUA);

struct ds_ratelimit {
    ds_redis *redis;
    ds_ratelimit_options o;
    char *name;
    char *prefix; /* "<prefix>rl:<name>:" */
    size_t prefix_len;
    char limit[24], period[24], burst[24]; /* script arguments */
    atomic_uint_fast64_t checks, allowed, denied, degraded;
};

DS_EXPORT ds_status ds_ratelimit_open(ds_redis *redis,
                                      const ds_ratelimit_options *opts,
                                      ds_ratelimit **out, ds_error *err) {
    ds_ratelimit_options o = DS_RATELIMIT_OPTIONS_INIT;
    DS__REDIS_CHECK_OPEN(err, redis, opts, out, &o, ds_ratelimit_options);
    DS_CHECK_ARG(err,
                 opts->algorithm == DS_RATELIMIT_GCRA ||
                     opts->algorithm == DS_RATELIMIT_SLIDING_WINDOW,
                 "unknown algorithm");
    DS_CHECK_ARG(err,
                 opts->on_redis_error == DS_RATELIMIT_FAIL_CLOSED ||
                     opts->on_redis_error == DS_RATELIMIT_FAIL_OPEN,
                 "unknown on_redis_error policy");
    /* bounds keep the script's arithmetic exact in Lua doubles */
    DS_CHECK_ARG(err, opts->limit > 0 && opts->limit <= 1000000000,
                 "limit must be 1 to 1e9");
    DS_CHECK_ARG(err,
                 opts->period_ms > 0 && opts->period_ms <= INT64_C(31536000000),
                 "period_ms must be 1 ms to 1 year");
    DS_CHECK_ARG(err, opts->burst >= 0 && opts->burst <= 1000000000,
                 "burst must be 0 (= limit) to 1e9");
    DS_CHECK_ARG(err,
                 opts->algorithm == DS_RATELIMIT_GCRA || opts->burst == 0,
                 "burst applies to GCRA only");
    ds_ratelimit *rl = ds__calloc(1, sizeof *rl);
    if (!rl)
        return ds__error_set(err, DS_ERR_NOMEM, "ratelimit: out of memory");
    rl->redis = redis;
    rl->o = *opts;
    if (rl->o.burst == 0)
        rl->o.burst = rl->o.limit;
    rl->name = ds__strdup(opts->name);
    rl->o.name = rl->name;
    rl->prefix = ds__redis_key(redis, &rl->prefix_len, "rl:%s:", opts->name);
    if (!rl->name || !rl->prefix) {
        ds__free(rl->name);
        ds__free(rl->prefix);
        ds__free(rl);
        return ds__error_set(err, DS_ERR_NOMEM, "ratelimit: out of memory");
    }
    snprintf(rl->limit, sizeof rl->limit, "%lld", (long long)rl->o.limit);
    snprintf(rl->period, sizeof rl->period, "%lld", (long long)rl->o.period_ms);
    snprintf(rl->burst, sizeof rl->burst, "%lld", (long long)rl->o.burst);
    *out = rl;
    return DS_OK;
}

DS_EXPORT void ds_ratelimit_close(ds_ratelimit *rl) {
    if (!rl)
        return;
    ds__free(rl->name);
    ds__free(rl->prefix);
    ds__free(rl);
}

static int64_t capacity(const ds_ratelimit *rl) {
    return rl->o.algorithm == DS_RATELIMIT_GCRA ? rl->o.burst : rl->o.limit;
}

static ds_status check_key(const char *key, ds_error *err) {
    DS_CHECK_ARG(err, key, "key is NULL");
    size_t n = strlen(key);
    DS_CHECK_ARG(err, n > 0 && n <= KEY_MAX, "key must be 1-512 bytes");
    return DS_OK;
}

static bool int_at(const redisReply *r, size_t i, int64_t *v) {
    if (r->elements <= i || r->element[i]->type != REDIS_REPLY_INTEGER)
        return false;
    *v = r->element[i]->integer;
    return true;
}

static ds_status run(ds_ratelimit *rl, const char *key, int64_t cost,
                     bool consume, ds_ratelimit_result *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    memset(out, 0, sizeof *out);
    DS_CHECK_ARG(err, rl, "rl is NULL");
    ds_status st = check_key(key, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, cost >= 1 && cost <= capacity(rl),
                 "cost must be 1 to the limiter's capacity");
    out->limit = capacity(rl);
    char fkey[KEY_MAX + 512];
    size_t fkey_len = ds__redis_join(fkey, rl->prefix, rl->prefix_len, key);
    char costs[24];
    snprintf(costs, sizeof costs, "%lld", (long long)cost);
    const char *args[6] = {fkey,      rl->limit, rl->period,
                           rl->burst, costs,     consume ? "1" : "0"};
    size_t lens[6] = {fkey_len,          strlen(rl->limit), strlen(rl->period),
                      strlen(rl->burst), strlen(costs),     1};
    ds__redis_script *script =
        rl->o.algorithm == DS_RATELIMIT_GCRA ? &gcra_script
        : rl->o.limit <= DS__RATELIMIT_LOG_MAX ? &sliding_log_script
                                               : &sliding_buckets_script;
    atomic_fetch_add_explicit(&rl->checks, 1, memory_order_relaxed);
    ds_error rerr = {0};
    redisReply *r;
    ds__redis_run_script(rl->redis, script, 1, 5, args, lens, &r, &rerr);
    int64_t allowed = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && int_at(r, 0, &allowed) &&
        int_at(r, 1, &out->remaining) && int_at(r, 2, &out->retry_after_ms) &&
        int_at(r, 3, &out->reset_ms)) {
        freeReplyObject(r);
        out->allowed = allowed == 1;
        atomic_fetch_add_explicit(out->allowed ? &rl->allowed : &rl->denied, 1,
                                  memory_order_relaxed);
        return DS_OK;
    }
    if (r) {
        ds__redis_unexpected(r, "ratelimit", &rerr);
        freeReplyObject(r);
    }
    if (rerr.code == DS_ERR_NOMEM) {
        if (err)
            *err = rerr;
        return DS_ERR_NOMEM;
    }
    /* Redis could not answer: the caller's policy does */
    bool open = rl->o.on_redis_error == DS_RATELIMIT_FAIL_OPEN;
    ds__log(DS_LOG_WARN, "ratelimit", "ratelimit %s: %s; failing %s",
            rl->name, rerr.message, open ? "open" : "closed");
    atomic_fetch_add_explicit(&rl->degraded, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(open ? &rl->allowed : &rl->denied, 1,
                              memory_order_relaxed);
    out->degraded = true;
    out->allowed = open;
    out->remaining = open ? capacity(rl) - (consume ? cost : 0) : 0;
    out->retry_after_ms =
        open ? 0 : (rl->o.period_ms < 1000 ? rl->o.period_ms : 1000);
    out->reset_ms = 0;
    return DS_OK;
}

/* run() on a full result of this library's size, copied into the caller's
 * growable one. */
static ds_status run_sized(ds_ratelimit *rl, const char *key, int64_t cost,
                           bool consume, ds_ratelimit_result *caller,
                           ds_error *err) {
    DS_CHECK_ARG(err, caller, "out is NULL");
    ds_status st = DS__OUT_CHECK(caller, ds_ratelimit_result, err);
    if (st != DS_OK)
        return st;
    ds_ratelimit_result local = DS_RATELIMIT_RESULT_INIT;
    st = run(rl, key, cost, consume, &local, err);
    ds__growable_out(caller, &local, sizeof local);
    return st;
}

DS_EXPORT ds_status ds_ratelimit_check(ds_ratelimit *rl, const char *key,
                                       ds_ratelimit_result *out,
                                       ds_error *err) {
    return run_sized(rl, key, 1, true, out, err);
}

DS_EXPORT ds_status ds_ratelimit_check_n(ds_ratelimit *rl, const char *key,
                                         int64_t cost,
                                         ds_ratelimit_result *out,
                                         ds_error *err) {
    return run_sized(rl, key, cost, true, out, err);
}

DS_EXPORT ds_status ds_ratelimit_peek(ds_ratelimit *rl, const char *key,
                                      ds_ratelimit_result *out, ds_error *err) {
    return run_sized(rl, key, 1, false, out, err);
}

DS_EXPORT ds_status ds_ratelimit_reset(ds_ratelimit *rl, const char *key,
                                       ds_error *err) {
    DS_CHECK_ARG(err, rl, "rl is NULL");
    ds_status st = check_key(key, err);
    if (st != DS_OK)
        return st;
    char fkey[KEY_MAX + 512];
    size_t fkey_len = ds__redis_join(fkey, rl->prefix, rl->prefix_len, key);
    const char *argv[2] = {"DEL", fkey};
    size_t lens[2] = {3, fkey_len};
    return ds__redis_call(rl->redis, 2, argv, lens, NULL, err);
}

DS_EXPORT ds_status ds_ratelimit_stats_get(const ds_ratelimit *rl,
                                           ds_ratelimit_stats *caller,
                                           ds_error *err) {
    DS_CHECK_ARG(err, caller, "out is NULL");
    ds_status st = DS__OUT_CHECK(caller, ds_ratelimit_stats, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, rl, "rl is NULL");
    ds_ratelimit_stats local = DS_RATELIMIT_STATS_INIT, *out = &local;
    ds_ratelimit *m = (ds_ratelimit *)rl;
    out->checks = atomic_load(&m->checks);
    out->allowed = atomic_load(&m->allowed);
    out->denied = atomic_load(&m->denied);
    out->degraded = atomic_load(&m->degraded);
    ds__growable_out(caller, &local, sizeof local);
    return DS_OK;
}
