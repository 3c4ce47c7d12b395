/*
 * Cache-aside for JSON values in Redis, with stampede protection on two
 * levels: threads of this process that miss the same key share one load
 * (a "flight" in memory), and processes share one load through a short
 * lock key taken atomically with the check for the value (one Lua script,
 * so nobody can load after another's result was stored).
 *
 * An entry is a small text header followed by the JSON text:
 *     "1 V <fresh_until_ms> <load_ms>\n{...}"   a value
 *     "1 N <fresh_until_ms> <load_ms>\n"        "not found"
 * fresh_until is the writer's wall clock; <load_ms> feeds XFetch. Redis
 * expires the key at fresh_until plus stale_ttl_ms.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "cache/cache_internal.h"
#include "datastore/cache.h"
#include "redis/redis_internal.h"

#define KEY_MAX 1024
#define TAG_MAX 256
#define TAGS_MAX 16
#define FLIGHT_BUCKETS 64
/* Room for "<redis_prefix>c:<name>:v<version>:" (at most 255 + 79). */
#define PREFIX_ROOM 512
#define KEYBUF (KEY_MAX + PREFIX_ROOM)

typedef struct flight {
    char *ekey;
    int refs;
    bool done;
    ds_status st;
    json_t *value; /* a copy for the waiters */
    ds_error err;
    pthread_cond_t cond;
    struct flight *next;
} flight;

struct ds_cache {
    ds_redis *redis;
    ds_cache_options o;
    char *name;
    char *entry_prefix; /* "<prefix>c:<name>:v<ver>:" */
    char *lock_prefix;  /* "<prefix>cl:<name>:v<ver>:" */
    char *tag_prefix;   /* "<prefix>ct:<name>:" */
    size_t entry_prefix_len, lock_prefix_len, tag_prefix_len;
    pthread_mutex_t mu;
    flight *flights[FLIGHT_BUCKETS];
    atomic_uint_fast64_t hits, negative_hits, misses, loads, stampede_waits,
        stale_served, early_refreshes, corrupt, errors;
};

/* ---- Lua ------------------------------------------------------------------ */

/* KEYS[1] entry, KEYS[2] lock; ARGV[1] token, ARGV[2] lock TTL ms,
 * ARGV[3] now ms, ARGV[4] "r" to skip the freshness check (early refresh).
 * {1, value}: a fresh value is there; {2}: the lock is ours; {3}: another
 * caller holds it. */
static ds__redis_script acquire_script = DS__REDIS_SCRIPT(
    "cache_acquire",
    "if ARGV[4] ~= 'r' then\n"
    "  local v = redis.call('GET', KEYS[1])\n"
    "  if v then\n"
    "    local fresh = tonumber(string.match(v, '^1 [VN] (%d+) '))\n"
    "    if fresh and fresh > tonumber(ARGV[3]) then return {1, v} end\n"
    "  end\n"
    "end\n"
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return {2}\n"
    "end\n"
    "return {3}\n");

/* KEYS[1] entry, KEYS[2] lock, KEYS[3] user key set, KEYS[4..] tag sets;
 * ARGV[1] payload, ARGV[2] PX, ARGV[3] lock token ("" none), ARGV[4] user
 * set entry ("" none). */
static ds__redis_script store_script = DS__REDIS_SCRIPT(
    "cache_store", DS__REDIS_LUA_TRACK_FN
    "local px = tonumber(ARGV[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', px)\n"
    "if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "end\n"
    "if ARGV[4] ~= '' then ds_track(KEYS[3], ARGV[4], px) end\n"
    "for i = 4, #KEYS do\n"
    "  redis.call('SADD', KEYS[i], KEYS[1])\n"
    "  if redis.call('PTTL', KEYS[i]) < px then\n"
    "    redis.call('PEXPIRE', KEYS[i], px)\n"
    "  end\n"
    "end\n"
    "return 1\n");

/* KEYS[1] lock; ARGV[1] token. */
static ds__redis_script release_script = DS__REDIS_SCRIPT(
    "cache_release",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n");

/* KEYS[1] tag set. Returns entries deleted. */
static ds__redis_script invalidate_tag_script = DS__REDIS_SCRIPT(
    "cache_invalidate_tag",
    "local keys = redis.call('SMEMBERS', KEYS[1])\n"
    "local n = 0\n"
    "for i = 1, #keys, 500 do\n"
    "  n = n + redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n");

/* ---- helpers ------------------------------------------------------------------- */

static void count(atomic_uint_fast64_t *c) {
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ln(x) for x in (0, 1]: libm is not among the library's dependencies,
 * and XFetch needs nothing more precise than this series. */
static double ln_unit(double x) {
    int e = 0;
    while (x < 0.5) {
        x *= 2;
        e--;
    }
    double z = (x - 1) / (x + 1), z2 = z * z, term = z, sum = 0;
    for (int k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return 2 * sum + e * 0.69314718055994530942;
}

static ds_status check_key(const char *key, ds_error *err) {
    DS_CHECK_ARG(err, key, "key is NULL");
    size_t n = strlen(key);
    DS_CHECK_ARG(err, n > 0 && n <= KEY_MAX, "key must be 1-1024 bytes");
    return DS_OK;
}

static ds_status check_entry(const ds_cache_entry_options *e, ds_error *err) {
    if (!e)
        return DS_OK;
    /* a member appended later is read through a DS__IN copy */
    ds_status st = ds__growable_check(e->size, sizeof *e, sizeof *e,
                                      "ds_cache_entry_options", err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, e->ntags <= TAGS_MAX, "more than 16 tags");
    DS_CHECK_ARG(err, e->ntags == 0 || e->tags, "tags is NULL");
    for (size_t i = 0; i < e->ntags; i++) {
        DS_CHECK_ARG(err, e->tags[i], "a tag is NULL");
        size_t n = strlen(e->tags[i]);
        DS_CHECK_ARG(err, n > 0 && n <= TAG_MAX, "a tag must be 1-256 bytes");
    }
    DS_CHECK_ARG(err, e->user_id >= 0, "user_id is negative");
    DS_CHECK_ARG(err, e->ttl_ms >= 0, "ttl_ms is negative");
    return DS_OK;
}

/* The entry and lock keys of `key` (checked) in KEYBUF bytes; the length. */
static size_t entry_key(const ds_cache *c, const char *key, char *buf) {
    return ds__redis_join(buf, c->entry_prefix, c->entry_prefix_len, key);
}

static size_t lock_key(const ds_cache *c, const char *key, char *buf) {
    return ds__redis_join(buf, c->lock_prefix, c->lock_prefix_len, key);
}

/* Checks `key` and `entry`, then builds the entry and lock keys (KEYBUF
 * bytes each). */
static ds_status checked_keys(const ds_cache *c, const char *key,
                              const ds_cache_entry_options *entry, char *ekey,
                              char *lkey, ds_error *err) {
    ds_status st = check_key(key, err);
    if (st == DS_OK)
        st = check_entry(entry, err);
    if (st == DS_OK) {
        entry_key(c, key, ekey);
        lock_key(c, key, lkey);
    }
    return st;
}

/* Runs `verb` (GET, UNLINK) on the entry of `key`. */
static ds_status entry_call(ds_cache *c, const char *verb, const char *key,
                            redisReply **out, ds_error *err) {
    char ekey[KEYBUF];
    size_t len = entry_key(c, key, ekey);
    const char *argv[2] = {verb, ekey};
    size_t argvlen[2] = {strlen(verb), len};
    return ds__redis_call(c->redis, 2, argv, argvlen, out, err);
}

static int entry_ttl(const ds_cache *c, const ds_cache_entry_options *e) {
    return e && e->ttl_ms > 0 ? e->ttl_ms : c->o.ttl_ms;
}

static int64_t jittered(const ds_cache *c, int ttl_ms) {
    int64_t extra = 0;
    if (c->o.ttl_jitter_pct > 0) {
        int64_t span = (int64_t)ttl_ms * c->o.ttl_jitter_pct / 100;
        if (span > 0)
            extra = (int64_t)ds__random_uniform(
                (uint32_t)(span > UINT32_MAX - 1 ? UINT32_MAX - 1 : span) + 1);
    }
    return ttl_ms + extra;
}

/* ---- Redis operations ---------------------------------------------------------- */

/* Stores `payload` for the entry with PX `px_ms`, releasing the lock when
 * `token` still holds it, registering tags and the user. */
static ds_status store(ds_cache *c, const char *ekey, const char *lkey,
                       const char *token, const char *payload, size_t plen,
                       int64_t px_ms, const ds_cache_entry_options *e,
                       ds_error *err) {
    const char *args[TAGS_MAX + 8];
    size_t lens[TAGS_MAX + 8];
    char *tagkeys[TAGS_MAX] = {0};
    char *userset = NULL, *track = NULL;
    size_t ntags = e ? e->ntags : 0;
    ds_status st = DS_OK;
    size_t ekey_len = strlen(ekey);
    if (e && e->user_id > 0) {
        userset = ds__redis_user_set_key(c->redis, e->user_id);
        track = ds__redis_user_entry('k', ekey, NULL);
        if (!userset || !track)
            st = ds__error_set(err, DS_ERR_NOMEM, "cache: out of memory");
    }
    for (size_t i = 0; st == DS_OK && i < ntags; i++) {
        size_t tlen = strlen(e->tags[i]);
        tagkeys[i] = ds__malloc(c->tag_prefix_len + tlen + 1);
        if (!tagkeys[i])
            st = ds__error_set(err, DS_ERR_NOMEM, "cache: out of memory");
        else
            ds__redis_join(tagkeys[i], c->tag_prefix, c->tag_prefix_len,
                           e->tags[i]);
    }
    if (st == DS_OK) {
        char px[24];
        snprintf(px, sizeof px, "%lld", (long long)(px_ms > 0 ? px_ms : 1));
        size_t n = 0;
        args[n] = ekey, lens[n++] = ekey_len;
        args[n] = lkey, lens[n++] = strlen(lkey);
        args[n] = userset ? userset : ekey;
        lens[n] = strlen(args[n]), n++;
        for (size_t i = 0; i < ntags; i++)
            args[n] = tagkeys[i], lens[n++] = strlen(tagkeys[i]);
        args[n] = payload, lens[n++] = plen;
        args[n] = px, lens[n++] = strlen(px);
        args[n] = token ? token : "", lens[n] = strlen(args[n]), n++;
        args[n] = track ? track : "", lens[n] = strlen(args[n]), n++;
        st = ds__redis_run_script(c->redis, &store_script, (int)(3 + ntags), 4,
                                  args, lens, NULL, err);
    }
    for (size_t i = 0; i < ntags; i++)
        ds__free(tagkeys[i]);
    ds__free(userset);
    ds__free(track);
    return st;
}

static void release_lock(ds_cache *c, const char *lkey, const char *token) {
    ds_error e = {0};
    const char *args[2] = {lkey, token};
    if (ds__redis_run_script(c->redis, &release_script, 1, 1, args, NULL, NULL,
                             &e) != DS_OK)
        count(&c->errors); /* the lock expires on its own */
}

/* Calls the loader, counts it, checks its answer. *load_ms gets the time it
 * took (rounded up). */
static ds_status call_loader(ds_cache *c, const char *key,
                             ds_cache_loader_fn loader, void *ud, json_t **out,
                             int64_t *load_ms, ds_error *err) {
    *out = NULL;
    int64_t t0 = ds__now_us();
    json_t *v = NULL;
    ds_status st = loader(ud, key, &v, err);
    count(&c->loads);
    if (load_ms)
        *load_ms = (ds__now_us() - t0 + 999) / 1000;
    if (st != DS_OK) {
        if (v)
            json_decref(v);
        return st;
    }
    if (!v)
        return ds__error_set(err, DS_ERR_INVALID,
                             "cache %s: the loader returned DS_OK without a "
                             "value",
                             c->name);
    *out = v;
    return DS_OK;
}

/* Loader, then store (releasing our lock, if any). Storing is best effort:
 * the value goes to the caller either way. */
static ds_status load_and_store(ds_cache *c, const char *ekey,
                                const char *lkey, const char *token,
                                const char *key,
                                const ds_cache_entry_options *e,
                                ds_cache_loader_fn loader, void *ud,
                                json_t **out, ds_error *err) {
    int64_t load_ms = 0;
    json_t *v;
    ds_status st = call_loader(c, key, loader, ud, &v, &load_ms, err);
    int64_t now = ds__redis_now_ms();
    char *payload = NULL;
    size_t plen = 0;
    int64_t px = 0;
    if (st == DS_OK) {
        int64_t ttl = jittered(c, entry_ttl(c, e));
        payload = ds__cache_entry_encode(v, now + ttl, load_ms, &plen);
        px = ttl + c->o.stale_ttl_ms;
    } else if (st == DS_ERR_NOT_FOUND && c->o.negative_ttl_ms > 0) {
        payload = ds__cache_entry_encode(NULL, now + c->o.negative_ttl_ms, load_ms, &plen);
        px = c->o.negative_ttl_ms;
    }
    if (payload) {
        ds_error serr = {0};
        if (store(c, ekey, lkey, token, payload, plen, px, e, &serr) != DS_OK) {
            count(&c->errors);
            ds__log(DS_LOG_WARN, "cache", "cache %s: store failed: %s",
                    c->name, serr.message);
        }
        ds__free(payload);
    } else if (token) {
        release_lock(c, lkey, token);
    }
    *out = v;
    return st;
}

typedef enum { ACQ_FRESH = 1, ACQ_LOCKED = 2, ACQ_BUSY = 3 } acq_kind;

/* Runs the acquire script. ACQ_FRESH hands back the raw entry in *raw. */
static ds_status acquire(ds_cache *c, const char *ekey, const char *lkey,
                         const char *token, bool refresh, acq_kind *kind,
                         redisReply **raw, ds_error *err) {
    *raw = NULL;
    char ttl[24], now[24];
    snprintf(ttl, sizeof ttl, "%d", c->o.lock_ttl_ms);
    snprintf(now, sizeof now, "%lld", (long long)ds__redis_now_ms());
    const char *args[6] = {ekey, lkey, token, ttl, now, refresh ? "r" : ""};
    redisReply *r;
    ds_status st =
        ds__redis_run_script(c->redis, &acquire_script, 2, 4, args, NULL, &r, err);
    if (st != DS_OK)
        return st;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[0]->integer < 1 || r->element[0]->integer > 3 ||
        (r->element[0]->integer == 1 &&
         (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING))) {
        st = ds__redis_unexpected(r, "cache acquire", err);
        freeReplyObject(r);
        return st;
    }
    *kind = (acq_kind)r->element[0]->integer;
    if (*kind == ACQ_FRESH)
        *raw = r;
    else
        freeReplyObject(r);
    return DS_OK;
}

/* A fresh raw entry (already checked by the script) to a result. */
static ds_status from_entry(ds_cache *c, const char *s, size_t len,
                            json_t **out, ds_error *err, bool *corrupt) {
    ds__cache_entry p;
    *corrupt = false;
    if (!ds__cache_entry_parse(s, len, &p)) {
        *corrupt = true;
        return DS_OK;
    }
    if (p.kind == 'N')
        return ds__error_set(err, DS_ERR_NOT_FOUND, "cache %s: not found",
                             c->name);
    *out = ds__cache_entry_body(&p);
    if (!*out)
        *corrupt = true;
    return DS_OK;
}

/* The cross-process part of a miss: take the lock and load, or wait for
 * whoever has it. Without Redis, loads directly. */
static ds_status remote_load(ds_cache *c, const char *ekey, const char *lkey,
                             const char *key, const ds_cache_entry_options *e,
                             ds_cache_loader_fn loader, void *ud, json_t **out,
                             bool *waited, ds_error *err) {
    char token[DS__REDIS_TOKEN_LEN + 1];
    ds__redis_token(token);
    int64_t deadline = ds__now_us() + (int64_t)c->o.wait_timeout_ms * 1000;
    int64_t delay_us = 1000;
    *waited = false;
    for (;;) {
        acq_kind kind;
        redisReply *raw;
        ds_error aerr = {0};
        if (acquire(c, ekey, lkey, token, false, &kind, &raw, &aerr) != DS_OK) {
            count(&c->errors);
            ds__log(DS_LOG_WARN, "cache", "cache %s: %s; loading directly",
                    c->name, aerr.message);
            return call_loader(c, key, loader, ud, out, NULL, err);
        }
        if (kind == ACQ_FRESH) {
            bool corrupt;
            ds_status st = from_entry(c, raw->element[1]->str,
                                      raw->element[1]->len, out, err, &corrupt);
            freeReplyObject(raw);
            if (!corrupt)
                return st;
            /* counted when the read found it; replace it */
            return load_and_store(c, ekey, lkey, NULL, key, e, loader, ud, out,
                                  err);
        }
        if (kind == ACQ_LOCKED)
            return load_and_store(c, ekey, lkey, token, key, e, loader, ud,
                                  out, err);
        /* another caller is loading: poll until it stores, its lock goes,
         * or we stop waiting and load ourselves */
        *waited = true;
        int64_t now = ds__now_us();
        if (now >= deadline)
            return load_and_store(c, ekey, lkey, NULL, key, e, loader, ud, out,
                                  err);
        int64_t sleep = delay_us < deadline - now ? delay_us : deadline - now;
        ds__sleep_us(sleep);
        delay_us = delay_us * 3 / 2 > 50000 ? 50000 : delay_us * 3 / 2;
    }
}

/* ---- in-process flights ---------------------------------------------------------- */

static uint32_t hash_key(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void flight_unref(flight *f) {
    /* under c->mu */
    if (--f->refs > 0)
        return;
    if (f->value)
        json_decref(f->value);
    pthread_cond_destroy(&f->cond);
    ds__free(f->ekey);
    ds__free(f);
}

static ds_status miss(ds_cache *c, const char *ekey, const char *lkey,
                      const char *key, const ds_cache_entry_options *e,
                      ds_cache_loader_fn loader, void *ud, json_t **out,
                      ds_error *err) {
    uint32_t b = hash_key(ekey) % FLIGHT_BUCKETS;
    pthread_mutex_lock(&c->mu);
    flight *f = c->flights[b];
    while (f && strcmp(f->ekey, ekey) != 0)
        f = f->next;
    if (f) {
        /* someone in this process is loading it: wait for that */
        f->refs++;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)(c->o.wait_timeout_ms % 1000) * 1000000;
        ts.tv_sec += c->o.wait_timeout_ms / 1000 + (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        while (!f->done)
            if (pthread_cond_timedwait(&f->cond, &c->mu, &ts) != 0)
                break;
        ds_status st;
        if (f->done) {
            st = f->st;
            if (st == DS_OK) {
                *out = f->value ? json_deep_copy(f->value) : NULL;
                if (!*out)
                    st = ds__error_set(err, DS_ERR_NOMEM,
                                       "cache: out of memory");
            } else if (err) {
                *err = f->err;
            }
            count(&c->stampede_waits);
            flight_unref(f);
            pthread_mutex_unlock(&c->mu);
            return st;
        }
        flight_unref(f);
        pthread_mutex_unlock(&c->mu);
        return call_loader(c, key, loader, ud, out, NULL, err);
    }
    f = ds__calloc(1, sizeof *f);
    char *copy = f ? ds__strdup(ekey) : NULL;
    if (!copy) {
        ds__free(f);
        pthread_mutex_unlock(&c->mu);
        return ds__error_set(err, DS_ERR_NOMEM, "cache: out of memory");
    }
    f->ekey = copy;
    f->refs = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    f->next = c->flights[b];
    c->flights[b] = f;
    pthread_mutex_unlock(&c->mu);

    bool waited = false;
    ds_error lerr = {0};
    json_t *v = NULL;
    ds_status st = remote_load(c, ekey, lkey, key, e, loader, ud, &v, &waited,
                               &lerr);
    if (waited && st == DS_OK)
        count(&c->stampede_waits);

    pthread_mutex_lock(&c->mu);
    for (flight **pp = &c->flights[b]; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    f->done = true;
    f->st = st;
    f->err = lerr;
    if (st == DS_OK && f->refs > 1) {
        /* the waiters copy from a copy: the caller may change its own */
        f->value = json_deep_copy(v);
        if (!f->value) {
            f->st = DS_ERR_NOMEM;
            ds__error_set(&f->err, DS_ERR_NOMEM, "cache: out of memory");
        }
    }
    pthread_cond_broadcast(&f->cond);
    flight_unref(f);
    pthread_mutex_unlock(&c->mu);
    if (err && st != DS_OK)
        *err = lerr;
    *out = v;
    return st;
}

/* ---- public API -------------------------------------------------------------- */

DS_EXPORT void ds_cache_options_init(ds_cache_options *opts) {
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

/* Zero is the default of every member; DS_NONE turns a feature off. */
static int or_default(int v, int def) {
    return v == 0 ? def : v == DS_NONE ? 0 : v;
}

DS_EXPORT ds_status ds_cache_open(ds_redis *redis, const ds_cache_options *opts,
                                  ds_cache **out, ds_error *err) {
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    DS__REDIS_CHECK_OPEN(err, redis, opts, out, &o, ds_cache_options);
    DS_CHECK_ARG(err, o.ttl_ms >= 0, "ttl_ms is negative");
    DS_CHECK_ARG(err, (o.ttl_jitter_pct >= 0 && o.ttl_jitter_pct <= 100) ||
                          o.ttl_jitter_pct == DS_NONE,
                 "ttl_jitter_pct must be 0-100 or DS_NONE");
    DS_CHECK_ARG(err, o.negative_ttl_ms >= 0 || o.negative_ttl_ms == DS_NONE,
                 "negative_ttl_ms is negative (DS_NONE: not cached)");
    DS_CHECK_ARG(err, o.stale_ttl_ms >= 0, "stale_ttl_ms is negative");
    DS_CHECK_ARG(err, o.lock_ttl_ms >= 0, "lock_ttl_ms is negative");
    DS_CHECK_ARG(err, o.wait_timeout_ms >= 0 || o.wait_timeout_ms == DS_NONE,
                 "wait_timeout_ms is negative (DS_NONE: do not wait)");
    o.ttl_ms = or_default(o.ttl_ms, 60000);
    o.ttl_jitter_pct = or_default(o.ttl_jitter_pct, 10);
    o.negative_ttl_ms = or_default(o.negative_ttl_ms, 5000);
    o.lock_ttl_ms = or_default(o.lock_ttl_ms, 10000);
    o.wait_timeout_ms = or_default(o.wait_timeout_ms, 5000);
    DS_CHECK_ARG(err,
                 opts->early_refresh_beta >= 0 &&
                     opts->early_refresh_beta <= 1e6,
                 "early_refresh_beta must be 0-1e6");
    ds_cache *c = ds__calloc(1, sizeof *c);
    if (!c)
        return ds__error_set(err, DS_ERR_NOMEM, "cache: out of memory");
    c->redis = redis;
    c->o = *opts;
    c->name = ds__strdup(opts->name);
    c->o.name = c->name;
    unsigned ver = opts->schema_version;
    c->entry_prefix =
        ds__redis_key(redis, &c->entry_prefix_len, "c:%s:v%u:", opts->name, ver);
    c->lock_prefix =
        ds__redis_key(redis, &c->lock_prefix_len, "cl:%s:v%u:", opts->name, ver);
    c->tag_prefix = ds__redis_key(redis, &c->tag_prefix_len, "ct:%s:", opts->name);
    if (!c->name || !c->entry_prefix || !c->lock_prefix || !c->tag_prefix) {
        ds__free(c->name);
        ds__free(c->entry_prefix);
        ds__free(c->lock_prefix);
        ds__free(c->tag_prefix);
        ds__free(c);
        return ds__error_set(err, DS_ERR_NOMEM, "cache: out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return DS_OK;
}

DS_EXPORT void ds_cache_close(ds_cache *cache) {
    if (!cache)
        return;
    pthread_mutex_destroy(&cache->mu);
    ds__free(cache->name);
    ds__free(cache->entry_prefix);
    ds__free(cache->lock_prefix);
    ds__free(cache->tag_prefix);
    ds__free(cache);
}

/* A stale entry: one caller refreshes it, the others get the stale value. */
static ds_status serve_stale(ds_cache *c, const char *ekey, const char *lkey,
                             const char *key, const ds_cache_entry_options *e,
                             ds_cache_loader_fn loader, void *ud,
                             json_t *stale, json_t **out, ds_error *err) {
    char token[DS__REDIS_TOKEN_LEN + 1];
    ds__redis_token(token);
    acq_kind kind;
    redisReply *raw;
    ds_error aerr = {0};
    if (acquire(c, ekey, lkey, token, false, &kind, &raw, &aerr) != DS_OK) {
        count(&c->errors);
        kind = ACQ_BUSY; /* Redis trouble: stale beats nothing */
    }
    if (kind == ACQ_FRESH) {
        bool corrupt;
        json_t *v = NULL;
        ds_status st = from_entry(c, raw->element[1]->str, raw->element[1]->len,
                                  &v, err, &corrupt);
        freeReplyObject(raw);
        if (!corrupt) {
            json_decref(stale);
            if (st == DS_OK)
                count(&c->hits);
            *out = v;
            return st;
        }
        kind = ACQ_BUSY;
    }
    if (kind == ACQ_LOCKED) {
        json_t *v;
        ds_error lerr = {0};
        ds_status st = load_and_store(c, ekey, lkey, token, key, e, loader, ud,
                                      &v, &lerr);
        if (st == DS_OK || st == DS_ERR_NOT_FOUND) {
            json_decref(stale);
            if (st != DS_OK && err)
                *err = lerr;
            *out = v;
            return st;
        }
        /* the refresh failed: the stale value is still better */
    }
    count(&c->stale_served);
    *out = stale;
    return DS_OK;
}

DS_EXPORT ds_status ds_cache_get_or_load(ds_cache *cache, const char *key,
                                         const ds_cache_entry_options *entry,
                                         ds_cache_loader_fn loader, void *ud,
                                         json_t **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cache, "cache is NULL");
    DS_CHECK_ARG(err, loader, "loader is NULL");
    char ekey[KEYBUF], lkey[KEYBUF];
    ds_status st = checked_keys(cache, key, entry, ekey, lkey, err);
    if (st != DS_OK)
        return st;
    ds_error gerr = {0};
    redisReply *r;
    if (entry_call(cache, "GET", key, &r, &gerr) != DS_OK) {
        count(&cache->errors);
        ds__log(DS_LOG_DEBUG, "cache", "cache %s: %s", cache->name,
                gerr.message);
    } else if (r->type == REDIS_REPLY_STRING) {
        ds__cache_entry p;
        if (ds__cache_entry_parse(r->str, r->len, &p)) {
            int64_t now = ds__redis_now_ms();
            if (p.kind == 'N' && p.fresh_until_ms > now) {
                freeReplyObject(r);
                count(&cache->negative_hits);
                return ds__error_set(err, DS_ERR_NOT_FOUND,
                                     "cache %s: not found", cache->name);
            }
            json_t *v = p.kind == 'V' ? ds__cache_entry_body(&p) : NULL;
            if (v && p.fresh_until_ms > now) {
                double beta = cache->o.early_refresh_beta;
                int64_t load_ms = p.load_ms;
                freeReplyObject(r);
                if (beta > 0 && load_ms > 0) {
                    /* XFetch: refresh early with probability rising as
                     * expiry nears, scaled by how slow the load is */
                    double u = ((double)ds__random_u32() + 1.0) / 4294967296.0;
                    double gap = -(double)load_ms * beta * ln_unit(u);
                    if ((double)now + gap >= (double)p.fresh_until_ms) {
                        char token[DS__REDIS_TOKEN_LEN + 1];
                        ds__redis_token(token);
                        acq_kind kind;
                        redisReply *raw;
                        ds_error aerr = {0};
                        if (acquire(cache, ekey, lkey, token, true, &kind, &raw,
                                    &aerr) == DS_OK &&
                            kind == ACQ_LOCKED) {
                            json_t *nv;
                            ds_error lerr = {0};
                            if (load_and_store(cache, ekey, lkey, token, key,
                                               entry, loader, ud, &nv,
                                               &lerr) == DS_OK) {
                                count(&cache->early_refreshes);
                                json_decref(v);
                                *out = nv;
                                return DS_OK;
                            }
                        }
                    }
                }
                count(&cache->hits);
                *out = v;
                return DS_OK;
            }
            if (v) { /* past its freshness, kept for stale serving */
                freeReplyObject(r);
                return serve_stale(cache, ekey, lkey, key, entry, loader, ud, v,
                                   out, err);
            }
            if (p.kind == 'V')
                count(&cache->corrupt);
        } else {
            count(&cache->corrupt);
        }
        freeReplyObject(r);
    } else {
        freeReplyObject(r);
    }
    count(&cache->misses);
    return miss(cache, ekey, lkey, key, entry, loader, ud, out, err);
}

DS_EXPORT ds_status ds_cache_get(ds_cache *cache, const char *key,
                                 json_t **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cache, "cache is NULL");
    ds_status st = check_key(key, err);
    if (st != DS_OK)
        return st;
    redisReply *r;
    st = entry_call(cache, "GET", key, &r, err);
    if (st != DS_OK) {
        count(&cache->errors);
        return st;
    }
    ds__cache_entry p;
    json_t *v = NULL;
    if (r->type == REDIS_REPLY_STRING && ds__cache_entry_parse(r->str, r->len, &p) &&
        p.kind == 'V' && p.fresh_until_ms > ds__redis_now_ms())
        v = ds__cache_entry_body(&p);
    freeReplyObject(r);
    if (!v) {
        count(&cache->misses);
        return ds__error_set(err, DS_ERR_NOT_FOUND, "cache %s: no fresh entry",
                             cache->name);
    }
    count(&cache->hits);
    *out = v;
    return DS_OK;
}

DS_EXPORT ds_status ds_cache_set(ds_cache *cache, const char *key,
                                 const json_t *value,
                                 const ds_cache_entry_options *entry,
                                 ds_error *err) {
    DS_CHECK_ARG(err, cache, "cache is NULL");
    DS_CHECK_ARG(err, value, "value is NULL");
    char ekey[KEYBUF], lkey[KEYBUF];
    ds_status st = checked_keys(cache, key, entry, ekey, lkey, err);
    if (st != DS_OK)
        return st;
    int64_t ttl = jittered(cache, entry_ttl(cache, entry));
    size_t plen;
    char *payload = ds__cache_entry_encode(value, ds__redis_now_ms() + ttl, 0, &plen);
    if (!payload)
        return ds__error_set(err, DS_ERR_NOMEM,
                             "cache %s: cannot encode the value", cache->name);
    st = store(cache, ekey, lkey, NULL, payload, plen,
               ttl + cache->o.stale_ttl_ms, entry, err);
    ds__free(payload);
    return st;
}

DS_EXPORT ds_status ds_cache_invalidate(ds_cache *cache, const char *key,
                                        ds_error *err) {
    DS_CHECK_ARG(err, cache, "cache is NULL");
    ds_status st = check_key(key, err);
    if (st != DS_OK)
        return st;
    return entry_call(cache, "UNLINK", key, NULL, err);
}

DS_EXPORT ds_status ds_cache_invalidate_tag(ds_cache *cache, const char *tag,
                                            int64_t *removed, ds_error *err) {
    if (removed)
        *removed = 0;
    DS_CHECK_ARG(err, cache, "cache is NULL");
    DS_CHECK_ARG(err, tag && *tag && strlen(tag) <= TAG_MAX,
                 "tag must be 1-256 bytes");
    char tkey[TAG_MAX + PREFIX_ROOM];
    ds__redis_join(tkey, cache->tag_prefix, cache->tag_prefix_len, tag);
    const char *args[1] = {tkey};
    long long n;
    ds_status st = ds__redis_script_int(cache->redis, &invalidate_tag_script, 1,
                                        0, args, NULL, &n, err);
    if (st == DS_OK && removed)
        *removed = n;
    return st;
}

DS_EXPORT ds_status ds_cache_stats_get(const ds_cache *cache,
                                       ds_cache_stats *caller, ds_error *err) {
    DS_CHECK_ARG(err, caller, "out is NULL");
    ds_status st = DS__OUT_CHECK(caller, ds_cache_stats, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, cache, "cache is NULL");
    ds_cache_stats local = DS_CACHE_STATS_INIT, *out = &local;
    ds_cache *c = (ds_cache *)cache;
    out->hits = atomic_load(&c->hits);
    out->negative_hits = atomic_load(&c->negative_hits);
    out->misses = atomic_load(&c->misses);
    out->loads = atomic_load(&c->loads);
    out->stampede_waits = atomic_load(&c->stampede_waits);
    out->stale_served = atomic_load(&c->stale_served);
    out->early_refreshes = atomic_load(&c->early_refreshes);
    out->corrupt = atomic_load(&c->corrupt);
    out->errors = atomic_load(&c->errors);
    ds__growable_out(caller, &local, sizeof local);
    return DS_OK;
}
