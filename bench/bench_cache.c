/*
 * bench_cache: what the Redis modules cost over hand-written hiredis.
 *
 *   cache_hit   ds_cache_get_or_load() of a cached 1 KiB JSON value vs raw
 *               hiredis GET + json_loads() of the same value (target ratio
 *               >= 0.9), 1 thread and 4 threads
 *   ratelimit   ds_ratelimit_check() (GCRA) vs the fixed-window counter one
 *               writes by hand with raw hiredis: MULTI, INCR of the key of
 *               the current second, PEXPIRE, EXEC, pipelined in one round
 *               trip (less exact than GCRA: a burst at a window's edge gets
 *               twice the limit)
 *   ratelimit_sliding
 *               ds_ratelimit_check() with the exact sliding window (limit
 *               1000 per second, 5000 users in turn) vs the sliding log a
 *               hand-written Lua script keeps (ZREMRANGEBYSCORE, ZCARD,
 *               ZADD, PEXPIRE), for the same keys and limit
 *   queue       ds_queue enqueue + reserve + ack vs the raw commands a
 *               minimal queue sends (XADD, XREADGROUP, XACK + XDEL); ours
 *               also promotes delays, reclaims stuck jobs and checks the
 *               holder on ack
 *
 * Reads REDIS_URL (redis://[[user]:password@]host:port/db for the raw side).
 */
#include <datastore/datastore.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PROGRAM "bench_cache"

static char prefix[64];

/* Exits with the message when a setup call failed. */
static void must(ds_status st, const char *what, const ds_error *err) {
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s\n", what, err->message);
        exit(1);
    }
}

/* ---- raw hiredis connections ------------------------------------------------ */

static redisContext *raw_connect(const char *url) {
    /* redis://[[user]:password@]host:port[/db] (the local services' form;
     * the password alone authenticates the default user) */
    char host[256] = "127.0.0.1", pw[256] = "";
    int port = 6379, db = 0;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon)
            snprintf(pw, sizeof pw, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    snprintf(host, sizeof host, "%.*s", (int)hl, p);
    p += hl;
    if (*p == ':')
        port = atoi(p + 1);
    const char *slash = strchr(p, '/');
    if (slash)
        db = atoi(slash + 1);
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "raw connect: %s\n", c ? c->errstr : "out of memory");
        exit(1);
    }
    redisReply *r;
    if (*pw) {
        r = redisCommand(c, "AUTH %s", pw);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "raw AUTH failed\n");
            exit(1);
        }
        freeReplyObject(r);
    }
    if (db) {
        r = redisCommand(c, "SELECT %d", db);
        freeReplyObject(r);
    }
    return c;
}

static ds_redis *open_redis(const char *url, int pool) {
    ds_config *cfg;
    ds_redis *r;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "redis_url", url, &err) != DS_OK ||
        ds_config_set(cfg, "redis_prefix", prefix, &err) != DS_OK ||
        ds_config_set_int(cfg, "redis_pool_size", pool, &err) != DS_OK ||
        ds_redis_open(cfg, &r, &err) != DS_OK) {
        fprintf(stderr, "redis: %s\n", err.message);
        exit(1);
    }
    ds_config_free(cfg);
    return r;
}

/* ---- cache hit ---------------------------------------------------------------- */

static json_t *value_1k(void) {
    json_t *v = json_object();
    json_object_set_new(v, "id", json_integer(42));
    json_object_set_new(v, "email", json_string("someone@example.com"));
    json_t *facts = json_array();
    for (int i = 0; i < 12; i++)
        json_array_append_new(
            facts, json_pack("{s:i, s:s, s:f}", "n", i, "text",
                             "likes short answers and dark mode",
                             "importance", 0.5 + i / 100.0));
    json_object_set_new(v, "facts", facts);
    return v;
}

static ds_status load_value(void *ud, const char *key, json_t **out,
                            ds_error *err) {
    (void)ud;
    (void)key;
    (void)err;
    *out = value_1k();
    return DS_OK;
}

typedef struct {
    ds_cache *cache;
} cache_ctx;

static bool op_cache_hit(void *p) {
    cache_ctx *c = p;
    json_t *v;
    ds_error err;
    if (ds_cache_get_or_load(c->cache, "profile:42", NULL, load_value, NULL, &v,
                             &err) != DS_OK) {
        fprintf(stderr, "cache: %s\n", err.message);
        return false;
    }
    json_decref(v);
    return true;
}

typedef struct {
    redisContext *c;
    const char *key;
    const char *sha;
} raw_ctx;

static bool op_raw_get(void *p) {
    raw_ctx *c = p;
    redisReply *r = redisCommand(c->c, "GET %s", c->key);
    if (!r || r->type != REDIS_REPLY_STRING)
        return false;
    json_error_t jerr;
    json_t *v = json_loadb(r->str, r->len, 0, &jerr);
    freeReplyObject(r);
    if (!v)
        return false;
    json_decref(v);
    return true;
}

static void bench_cache_hit(const char *url, int threads, int rounds,
                            double side) {
    ds_redis *r = open_redis(url, threads);
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&o);
    o.name = "bench";
    o.ttl_ms = 3600000;
    ds_cache *cache;
    ds_error err = {0};
    must(ds_cache_open(r, &o, &cache, &err), "cache", &err);
    cache_ctx cc = {cache};
    if (!op_cache_hit(&cc)) /* the miss that fills it */
        exit(1);
    /* the same JSON text, raw, for the baseline */
    json_t *v = value_1k();
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    char rawkey[128];
    snprintf(rawkey, sizeof rawkey, "%sraw:profile:42", prefix);
    void *ours[8], *base[8];
    raw_ctx rc[8];
    for (int i = 0; i < threads; i++) {
        ours[i] = &cc;
        rc[i] = (raw_ctx){raw_connect(url), rawkey, NULL};
        base[i] = &rc[i];
    }
    redisReply *rep = redisCommand(rc[0].c, "SET %s %s", rawkey, text);
    freeReplyObject(rep);
    size_t value_bytes = strlen(text);
    free(text);
    bench_result a, b;
    bench_ab(rounds, side, threads, op_cache_hit, ours, threads, op_raw_get,
             base, &a, &b);
    if (a.failed || b.failed)
        exit(1);
    char extra[160];
    snprintf(extra, sizeof extra,
             "value_bytes=%zu baseline_p50_us=%.1f baseline_p99_us=%.1f",
             value_bytes, b.p50_us, b.p99_us);
    ds_cache_stats s = DS_CACHE_STATS_INIT;
    if (ds_cache_stats_get(cache, &s, NULL) == DS_OK && s.loads != 1)
        fprintf(stderr, "bench_cache: unexpected loads: %llu\n",
                (unsigned long long)s.loads);
    bench_print(PROGRAM, "cache_hit", threads, &a, &b, extra);
    rep = redisCommand(rc[0].c, "DEL %s %sc:bench:v0:profile:42", rawkey, prefix);
    freeReplyObject(rep);
    for (int i = 0; i < threads; i++)
        redisFree(rc[i].c);
    ds_cache_close(cache);
    ds_redis_close(r);
}

/* ---- rate limit ------------------------------------------------------------------- */

typedef struct {
    ds_ratelimit *rl;
} rl_ctx;

static bool op_ratelimit(void *p) {
    rl_ctx *c = p;
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    ds_error err;
    if (ds_ratelimit_check(c->rl, "user:42", &res, &err) != DS_OK ||
        res.degraded || !res.allowed) {
        fprintf(stderr, "ratelimit: %s\n", res.degraded ? "degraded" : "denied");
        return false;
    }
    return true;
}

/* The hand-written baseline: a counter per user and second, incremented
 * and given an expiry in one MULTI/EXEC, the four commands pipelined. */
static bool op_raw_fixed_window(void *p) {
    raw_ctx *c = p;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char key[160];
    snprintf(key, sizeof key, "%s:%lld", c->key, (long long)ts.tv_sec);
    redisAppendCommand(c->c, "MULTI");
    redisAppendCommand(c->c, "INCR %s", key);
    redisAppendCommand(c->c, "PEXPIRE %s 2000", key);
    redisAppendCommand(c->c, "EXEC");
    redisReply *r[4] = {NULL, NULL, NULL, NULL};
    bool ok = true;
    for (int i = 0; i < 4; i++)
        if (redisGetReply(c->c, (void **)&r[i]) != REDIS_OK)
            ok = false;
    /* EXEC answers [count, 1]: allowed while the count is within the limit */
    ok = ok && r[3] && r[3]->type == REDIS_REPLY_ARRAY && r[3]->elements == 2 &&
         r[3]->element[0]->type == REDIS_REPLY_INTEGER &&
         r[3]->element[0]->integer <= 1000000000;
    if (!ok)
        fprintf(stderr, "raw fixed window: %s\n",
                r[3] && r[3]->type == REDIS_REPLY_ERROR ? r[3]->str : "bad reply");
    for (int i = 0; i < 4; i++)
        freeReplyObject(r[i]);
    return ok;
}

static void bench_ratelimit(const char *url, int rounds, double side) {
    ds_redis *r = open_redis(url, 1);
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), "bench", DS_RATELIMIT_GCRA, 1000000000, 1000, 0,
                              DS_RATELIMIT_FAIL_CLOSED};
    ds_ratelimit *rl;
    ds_error err = {0};
    must(ds_ratelimit_open(r, &o, &rl, &err), "ratelimit", &err);
    rl_ctx c = {rl};
    raw_ctx rc = {raw_connect(url), NULL, NULL};
    char rawkey[128];
    snprintf(rawkey, sizeof rawkey, "%sraw:rl:user:42", prefix);
    rc.key = rawkey;
    void *ours[1] = {&c}, *base[1] = {&rc};
    bench_result a, b;
    bench_ab(rounds, side, 1, op_ratelimit, ours, 1, op_raw_fixed_window, base,
             &a, &b);
    if (a.failed || b.failed)
        exit(1);
    char extra[160];
    snprintf(extra, sizeof extra,
             "algorithm=gcra baseline=fixed_window_multi_incr_pexpire "
             "baseline_p50_us=%.1f baseline_p99_us=%.1f",
             b.p50_us, b.p99_us);
    bench_print(PROGRAM, "ratelimit", 1, &a, &b, extra);
    /* the raw side's keys of each second expire by themselves */
    redisReply *rep = redisCommand(rc.c, "DEL %srl:bench:user:42", prefix);
    freeReplyObject(rep);
    redisFree(rc.c);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}

/* ---- rate limit: the exact sliding window --------------------------------------------- */

#define SLIDING_USERS 5000

/* What one would write by hand for "at most N per window": not the
 * library's script (which also reports remaining, retry-after and reset,
 * and keeps members unique within a microsecond without a client nonce). */
static const char raw_sliding_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local window = tonumber(ARGV[2]) * 1000\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)\n"
    "if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

typedef struct {
    ds_ratelimit *rl;
    unsigned n;
} rl_sliding_ctx;

static bool op_ratelimit_sliding(void *p) {
    rl_sliding_ctx *c = p;
    char key[32];
    snprintf(key, sizeof key, "user:%u", c->n++ % SLIDING_USERS);
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    ds_error err;
    if (ds_ratelimit_check(c->rl, key, &res, &err) != DS_OK || res.degraded) {
        fprintf(stderr, "ratelimit sliding: %s\n", res.degraded ? "degraded" : err.message);
        return false;
    }
    return true;
}

typedef struct {
    redisContext *c;
    const char *sha;
    unsigned n;
} raw_sliding_ctx;

static bool op_raw_sliding(void *p) {
    raw_sliding_ctx *c = p;
    unsigned n = c->n++;
    char key[96], member[24];
    snprintf(key, sizeof key, "%sraw:rls:user:%u", prefix, n % SLIDING_USERS);
    snprintf(member, sizeof member, "%u", n);
    redisReply *r = redisCommand(c->c, "EVALSHA %s 1 %s 1000 1000 %s", c->sha,
                                 key, member);
    bool ok = r && r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        fprintf(stderr, "raw sliding: %s\n",
                r && r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    freeReplyObject(r);
    return ok;
}

static void bench_ratelimit_sliding(const char *url, int rounds, double side) {
    ds_redis *r = open_redis(url, 1);
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), "benchsw", DS_RATELIMIT_SLIDING_WINDOW, 1000, 1000,
                              0, DS_RATELIMIT_FAIL_CLOSED};
    ds_ratelimit *rl;
    ds_error err = {0};
    must(ds_ratelimit_open(r, &o, &rl, &err), "ratelimit", &err);
    rl_sliding_ctx c = {rl, 0};
    raw_sliding_ctx rc = {raw_connect(url), NULL, 0};
    redisReply *rep = redisCommand(rc.c, "SCRIPT LOAD %s", raw_sliding_lua);
    if (!rep || rep->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "SCRIPT LOAD failed\n");
        exit(1);
    }
    char sha[41];
    snprintf(sha, sizeof sha, "%s", rep->str);
    freeReplyObject(rep);
    rc.sha = sha;
    void *ours[1] = {&c}, *base[1] = {&rc};
    bench_result a, b;
    bench_ab(rounds, side, 1, op_ratelimit_sliding, ours, 1, op_raw_sliding,
             base, &a, &b);
    if (a.failed || b.failed)
        exit(1);
    char extra[160];
    snprintf(extra, sizeof extra,
             "algorithm=sliding_log baseline=hand_written_lua_sliding_log "
             "limit=1000 keys=%d baseline_p50_us=%.1f "
             "baseline_p99_us=%.1f",
             SLIDING_USERS, b.p50_us, b.p99_us);
    bench_print(PROGRAM, "ratelimit_sliding", 1, &a, &b, extra);
    for (int i = 0; i < SLIDING_USERS; i++) {
        redisAppendCommand(rc.c, "DEL %sraw:rls:user:%d %srl:benchsw:user:%d",
                           prefix, i, prefix, i);
    }
    for (int i = 0; i < SLIDING_USERS; i++) {
        redisReply *d = NULL;
        if (redisGetReply(rc.c, (void **)&d) != REDIS_OK)
            break;
        freeReplyObject(d);
    }
    redisFree(rc.c);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}

/* ---- queue ---------------------------------------------------------------------------- */

typedef struct {
    ds_queue *q;
    json_t *payload;
} queue_ctx;

static bool op_queue(void *p) {
    queue_ctx *c = p;
    ds_error err;
    ds_queue_job *job;
    if (ds_queue_enqueue(c->q, c->payload, 0, NULL, &err) != DS_OK ||
        ds_queue_reserve(c->q, 0, &job, &err) != DS_OK) {
        fprintf(stderr, "queue: %s\n", err.message);
        return false;
    }
    if (!job) {
        fprintf(stderr, "queue: no job\n");
        return false;
    }
    ds_status st = ds_queue_ack(c->q, job, &err);
    ds_queue_job_free(job);
    if (st != DS_OK)
        fprintf(stderr, "queue ack: %s\n", err.message);
    return st == DS_OK;
}

typedef struct {
    redisContext *c;
    const char *stream;
    const char *payload;
    unsigned long n;
} raw_queue_ctx;

static bool op_raw_queue(void *p) {
    raw_queue_ctx *c = p;
    char id[33];
    snprintf(id, sizeof id, "%032lx", ++c->n);
    redisReply *r = redisCommand(c->c, "XADD %s * id %s a 0 p %s", c->stream, id,
                                 c->payload);
    if (!r || r->type != REDIS_REPLY_STRING)
        return false;
    freeReplyObject(r);
    r = redisCommand(c->c, "XREADGROUP GROUP g c COUNT 1 STREAMS %s >",
                     c->stream);
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return false;
    redisReply *entry = r->element[0]->element[1]->element[0];
    char entry_id[64];
    snprintf(entry_id, sizeof entry_id, "%s", entry->element[0]->str);
    json_error_t jerr;
    redisReply *kv = entry->element[1];
    json_t *payload = json_loadb(kv->element[5]->str, kv->element[5]->len,
                                 JSON_DECODE_ANY, &jerr);
    freeReplyObject(r);
    if (!payload)
        return false;
    json_decref(payload);
    redisAppendCommand(c->c, "XACK %s g %s", c->stream, entry_id);
    redisAppendCommand(c->c, "XDEL %s %s", c->stream, entry_id);
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        void *rr = NULL;
        if (redisGetReply(c->c, &rr) != REDIS_OK || !rr)
            ok = false;
        else
            freeReplyObject(rr);
    }
    return ok;
}

static void bench_queue(const char *url, int rounds, double side) {
    ds_redis *r = open_redis(url, 1);
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    o.name = "bench";
    ds_queue *q;
    ds_error err = {0};
    must(ds_queue_open(r, &o, &q, &err), "queue", &err);
    json_t *payload = json_pack("{s:s, s:i, s:s}", "kind", "send_email", "user",
                                42, "template", "welcome");
    queue_ctx c = {q, payload};
    char *text = json_dumps(payload, JSON_COMPACT);
    char stream[128];
    snprintf(stream, sizeof stream, "%sraw:q", prefix);
    raw_queue_ctx rc = {raw_connect(url), stream, text, 0};
    redisReply *rep =
        redisCommand(rc.c, "XGROUP CREATE %s g $ MKSTREAM", stream);
    freeReplyObject(rep);
    void *ours[1] = {&c}, *base[1] = {&rc};
    bench_result a, b;
    bench_ab(rounds, side, 1, op_queue, ours, 1, op_raw_queue, base, &a, &b);
    if (a.failed || b.failed)
        exit(1);
    char extra[128];
    snprintf(extra, sizeof extra,
             "unit=jobs round_trips=3 baseline_p50_us=%.1f baseline_p99_us=%.1f",
             b.p50_us, b.p99_us);
    bench_print(PROGRAM, "queue_enqueue_reserve_ack", 1, &a, &b, extra);
    rep = redisCommand(rc.c, "DEL %s %sq:bench:s %sq:bench:cur", stream, prefix,
                       prefix);
    freeReplyObject(rep);
    free(text);
    json_decref(payload);
    redisFree(rc.c);
    ds_queue_close(q);
    ds_redis_close(r);
}

int main(void) {
    const char *url = bench_env("REDIS_URL");
    snprintf(prefix, sizeof prefix, "bench:%d:", (int)getpid());
    /* five cases in at most 60 s by default */
    double secs = bench_seconds(11);
    int rounds = 7;
    double side = secs / (2.0 * rounds);
    bench_cache_hit(url, 1, rounds, side);
    bench_cache_hit(url, 4, rounds, side);
    bench_ratelimit(url, rounds, side);
    bench_ratelimit_sliding(url, rounds, side);
    bench_queue(url, rounds, side);
    return 0;
}
