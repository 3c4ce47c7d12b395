/* Cache-aside against the local Redis: hits, misses, TTLs, stampedes in
 * threads and processes, negative caching, tags, stale serving, XFetch,
 * and Redis going away. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "dt_redis.h"
#include "redis/redis_internal.h"

typedef struct {
    atomic_int *calls;   /* may live in shared memory */
    atomic_int *entered; /* set when a call starts (may be NULL) */
    int sleep_ms;
    ds_status result;
} loader_ctx;

static ds_status test_loader(void *ud, const char *key, json_t **out,
                             ds_error *err) {
    loader_ctx *l = ud;
    int n = atomic_fetch_add(l->calls, 1) + 1;
    if (l->entered)
        atomic_store(l->entered, 1);
    if (l->sleep_ms)
        usleep((useconds_t)l->sleep_ms * 1000);
    if (l->result != DS_OK)
        return ds__error_set(err, l->result, "loader says %s for %s",
                             ds_status_str(l->result), key);
    *out = json_pack("{s:s, s:i, s:[i,i,i]}", "key", key, "n", n, "list", 1, 2,
                     3);
    return DS_OK;
}

static ds_cache *open_cache(ds_redis *r, const char *name, int ttl_ms,
                            void (*tweak)(ds_cache_options *)) {
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&o);
    o.name = name;
    o.ttl_ms = ttl_ms;
    if (tweak)
        tweak(&o);
    ds_cache *c;
    ds_error err = {0};
    ds_status st = ds_cache_open(r, &o, &c, &err);
    ck_assert_ds_ok(st, err);
    return c;
}

static ds_cache_stats stats_of(ds_cache *c) {
    ds_cache_stats s = DS_CACHE_STATS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_cache_stats_get(c, &s, &err), err);
    return s;
}

static int n_of(json_t *v) {
    json_t *n = json_object_get(v, "n");
    ck_assert_ptr_nonnull(n);
    return (int)json_integer_value(n);
}

static json_t *get_ok(ds_cache *c, const char *key, loader_ctx *l) {
    json_t *v;
    ds_error err = {0};
    ds_status st = ds_cache_get_or_load(c, key, NULL, test_loader, l, &v, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ptr_nonnull(v);
    return v;
}

/* ---- basics ------------------------------------------------------------------ */

START_TEST(test_cache_miss_then_hit) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "profile", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_t *v = get_ok(c, "42", &l);
    ck_assert_str_eq(json_string_value(json_object_get(v, "key")), "42");
    ck_assert_int_eq(n_of(v), 1);
    json_decref(v);
    for (int i = 0; i < 5; i++) {
        v = get_ok(c, "42", &l);
        ck_assert_int_eq(n_of(v), 1);
        ck_assert_int_eq(json_array_size(json_object_get(v, "list")), 3);
        json_decref(v);
    }
    ck_assert_int_eq(atomic_load(&calls), 1);
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.loads, 1);
    ck_assert_uint_eq(s.hits, 5);
    ck_assert_uint_eq(s.errors, 0);
    /* what Redis holds: our header, then the JSON */
    char *ekey = ds__redis_key(r, NULL, "c:profile:v0:42");
    redisReply *raw = dt_rcmd(r, "GET %s", ekey);
    ck_assert_int_eq(raw->type, REDIS_REPLY_STRING);
    ck_assert(strncmp(raw->str, "1 V ", 4) == 0);
    ck_assert_ptr_nonnull(strstr(raw->str, "\n{"));
    freeReplyObject(raw);
    /* ds_cache_get and ds_cache_set */
    json_t *got;
    ds_error err = {0};
    ck_assert_ds_ok(ds_cache_get(c, "42", &got, &err), err);
    ck_assert_int_eq(n_of(got), 1);
    json_decref(got);
    ck_assert_ds_status(ds_cache_get(c, "absent", &got, &err), DS_ERR_NOT_FOUND,
                        err);
    ck_assert_ptr_null(got);
    json_t *nv = json_pack("{s:i}", "n", 77);
    ck_assert_ds_ok(ds_cache_set(c, "42", nv, NULL, &err), err);
    json_decref(nv);
    v = get_ok(c, "42", &l);
    ck_assert_int_eq(n_of(v), 77);
    json_decref(v);
    /* any JSON value, not only objects */
    json_t *str = json_string("plain");
    ck_assert_ds_ok(ds_cache_set(c, "str", str, NULL, &err), err);
    json_decref(str);
    ck_assert_ds_ok(ds_cache_get(c, "str", &got, &err), err);
    ck_assert_str_eq(json_string_value(got), "plain");
    json_decref(got);
    ds__free(ekey);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

static void no_jitter(ds_cache_options *o) {
    o->ttl_jitter_pct = DS_NONE;
}

START_TEST(test_cache_ttl_expiry_and_jitter) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "ttl", 60, no_jitter);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(c, "k", &l));
    json_decref(get_ok(c, "k", &l));
    ck_assert_int_eq(atomic_load(&calls), 1);
    usleep(150 * 1000);
    json_t *v = get_ok(c, "k", &l);
    ck_assert_int_eq(n_of(v), 2);
    json_decref(v);
    ck_assert_int_eq(atomic_load(&calls), 2);
    ds_cache_close(c);

    /* TTL plus up to 20% jitter, and not all the same */
    ds_cache *j = open_cache(r, "jitter", 100000, NULL);
    long long min = 1LL << 40, max = 0;
    for (int i = 0; i < 30; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        json_decref(get_ok(j, key, &l));
        char *ekey = ds__redis_key(r, NULL, "c:jitter:v0:%s", key);
        long long ttl = dt_rint(r, "PTTL %s", ekey);
        ds__free(ekey);
        min = ttl < min ? ttl : min;
        max = ttl > max ? ttl : max;
    }
    ck_assert_int_gt(min, 90000);
    ck_assert_int_le(max, 110000);
    ck_assert_int_gt(max, min);
    dt_redis_flush_prefix(r);
    ds_cache_close(j);
    ds_redis_close(r);
}
END_TEST

/* ---- stampedes ------------------------------------------------------------------- */

typedef struct {
    ds_cache *cache;
    loader_ctx *loader;
    pthread_barrier_t *barrier;
    int n_seen;
    ds_status st;
} stampede_arg;

static void *stampede_main(void *p) {
    stampede_arg *a = p;
    pthread_barrier_wait(a->barrier);
    json_t *v = NULL;
    ds_error err = {0};
    a->st = ds_cache_get_or_load(a->cache, "hot", NULL, test_loader, a->loader,
                                 &v, &err);
    a->n_seen = v ? (int)json_integer_value(json_object_get(v, "n")) : -1;
    json_decref(v);
    return NULL;
}

/* `threads` threads miss "hot" at once; returns how many saw n == 1. */
static int stampede(ds_cache *c, loader_ctx *l, int threads) {
    pthread_t th[100];
    stampede_arg args[100];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        args[i] = (stampede_arg){c, l, &barrier, 0, DS_OK};
        ck_assert_int_eq(pthread_create(&th[i], NULL, stampede_main, &args[i]),
                         0);
    }
    int good = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (args[i].st == DS_OK && args[i].n_seen == 1)
            good++;
    }
    pthread_barrier_destroy(&barrier);
    return good;
}

START_TEST(test_cache_stampede_threads_one_load) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "stampede");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_pool_size", 8, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    ds_cache *c = open_cache(r, "hot", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 200, DS_OK};
    int good = stampede(c, &l, 100);
    ck_assert_int_eq(good, 100);
    ck_assert_int_eq(atomic_load(&calls), 1);
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_eq(s.loads, 1);
    ck_assert_uint_eq(s.stampede_waits + s.hits, 99);
    ck_assert_uint_ge(s.stampede_waits, 1);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

enum { XPROC_PROCS = 4, XPROC_THREADS = 25 };

typedef struct {
    ds_config *cfg;
    atomic_int *calls, *ready; /* shared between the processes */
} xproc_arg;

/* One process: its own handle and cache; once every process is ready,
 * XPROC_THREADS threads miss the same key at once. */
static int xproc_main(void *ud, int index) {
    (void)index;
    xproc_arg *x = ud;
    ds_redis *r;
    ds_error err = {0};
    if (ds_redis_open(x->cfg, &r, &err) != DS_OK)
        return 2;
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&o);
    o.name = "xproc";
    ds_cache *c;
    if (ds_cache_open(r, &o, &c, &err) != DS_OK)
        return 3;
    atomic_fetch_add(x->ready, 1);
    long long deadline = dt_now_ms() + 30000;
    while (atomic_load(x->ready) < XPROC_PROCS) {
        if (dt_now_ms() > deadline)
            return 4; /* a sibling never got ready */
        usleep(1000);
    }
    loader_ctx l = {x->calls, NULL, 300, DS_OK};
    int good = stampede(c, &l, XPROC_THREADS);
    ds_cache_close(c);
    ds_redis_close(r);
    return good == XPROC_THREADS ? 0 : 1;
}

START_TEST(test_cache_stampede_processes_one_load) {
    /* 4 processes x 25 threads, each process with its own handle, all
     * missing the same key: one load in all. */
    atomic_int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(shared, MAP_FAILED);
    atomic_init(&shared[0], 0);
    atomic_init(&shared[1], 0);
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "xproc");
    xproc_arg x = {cfg, &shared[0], &shared[1]};
    dt_run_processes(XPROC_PROCS, xproc_main, &x);
    ck_assert_int_eq(atomic_load(x.calls), 1);
    ds_redis *r;
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
    ds_config_free(cfg);
    munmap(shared, 4096);
}
END_TEST

typedef struct {
    ds_cache *c;
    const char *key;
    loader_ctx *l;
    int n;
    ds_status st;
} getter_arg;

static void *getter_main(void *p) {
    getter_arg *a = p;
    json_t *v = NULL;
    ds_error err = {0};
    a->st = ds_cache_get_or_load(a->c, a->key, NULL, test_loader, a->l, &v, &err);
    a->n = v ? (int)json_integer_value(json_object_get(v, "n")) : -1;
    json_decref(v);
    return NULL;
}

static void stale_opts(ds_cache_options *o) {
    o->ttl_jitter_pct = DS_NONE;
    o->stale_ttl_ms = 60000;
}

START_TEST(test_cache_stale_served_while_one_refreshes) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "stale", 50, stale_opts);
    atomic_int calls = 0, entered = 0;
    loader_ctx fast = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(c, "k", &fast));
    usleep(120 * 1000); /* past its freshness, still in Redis */
    /* one caller refreshes, slowly */
    loader_ctx slow = {&calls, &entered, 400, DS_OK};
    getter_arg a = {c, "k", &slow, 0, DS_OK};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, getter_main, &a), 0);
    while (!atomic_load(&entered))
        usleep(1000);
    /* meanwhile everyone else gets the stale value at once */
    json_t *v = get_ok(c, "k", &fast);
    ck_assert_int_eq(n_of(v), 1);
    json_decref(v);
    pthread_join(th, NULL);
    ck_assert_ds_ok(a.st, (ds_error){0});
    ck_assert_int_eq(a.n, 2);
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_eq(s.stale_served, 1);
    ck_assert_uint_eq(s.loads, 2);
    v = get_ok(c, "k", &fast);
    ck_assert_int_eq(n_of(v), 2);
    json_decref(v);
    ck_assert_int_eq(atomic_load(&calls), 2);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

static void xfetch_opts(ds_cache_options *o) {
    o->early_refresh_beta = 1e6; /* refresh on (almost) every hit */
}

START_TEST(test_cache_xfetch_refreshes_early) {
    ds_redis *r = dt_redis("cache");
    /* a 20 ms load and a 2 s TTL: each fresh hit refreshes with
     * probability 1 - 1e-4, so 5 hits without one would be a bug */
    ds_cache *hot = open_cache(r, "xfetch", 2000, xfetch_opts);
    ds_cache *cold = open_cache(r, "noxfetch", 2000, NULL);
    atomic_int calls = 0, cold_calls = 0;
    loader_ctx l = {&calls, NULL, 20, DS_OK};
    loader_ctx lc = {&cold_calls, NULL, 20, DS_OK};
    json_decref(get_ok(hot, "k", &l));
    int last = 1;
    for (int i = 0; i < 5; i++) {
        json_t *v = get_ok(hot, "k", &l); /* fresh, yet refreshed early */
        last = n_of(v);
        json_decref(v);
    }
    ck_assert_int_gt(last, 1);
    ck_assert_uint_ge(stats_of(hot).early_refreshes, 1);
    ck_assert_int_eq(atomic_load(&calls), 1 + (int)stats_of(hot).early_refreshes);
    for (int i = 0; i < 6; i++)
        json_decref(get_ok(cold, "k", &lc));
    ck_assert_int_eq(atomic_load(&cold_calls), 1);
    ck_assert_uint_eq(stats_of(cold).early_refreshes, 0);
    dt_redis_flush_prefix(r);
    ds_cache_close(hot);
    ds_cache_close(cold);
    ds_redis_close(r);
}
END_TEST

/* ---- not found, loader errors, corrupt values ------------------------------------ */

static void neg_opts(ds_cache_options *o) {
    o->negative_ttl_ms = 60;
}

START_TEST(test_cache_negative_caching) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "neg", 60000, neg_opts);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_ERR_NOT_FOUND};
    json_t *v = (json_t *)1;
    ds_error err = {0};
    for (int i = 0; i < 3; i++) {
        ds_status st = ds_cache_get_or_load(c, "nobody", NULL, test_loader, &l,
                                            &v, &err);
        ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
        ck_assert_ptr_null(v);
    }
    ck_assert_int_eq(atomic_load(&calls), 1);
    ck_assert_uint_eq(stats_of(c).negative_hits, 2);
    usleep(150 * 1000);
    ds_status st = ds_cache_get_or_load(c, "nobody", NULL, test_loader, &l, &v,
                                        &err);
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(atomic_load(&calls), 2);
    /* the thing now exists: after the short negative TTL it is loaded */
    usleep(150 * 1000);
    l.result = DS_OK;
    v = get_ok(c, "nobody", &l);
    json_decref(v);
    /* negative_ttl_ms = DS_NONE: "not found" is never cached */
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    o.name = "noneg";
    o.negative_ttl_ms = DS_NONE;
    ds_cache *c0;
    ck_assert_ds_ok(ds_cache_open(r, &o, &c0, &err), err);
    atomic_int calls0 = 0;
    loader_ctx l0 = {&calls0, NULL, 0, DS_ERR_NOT_FOUND};
    for (int i = 0; i < 3; i++) {
        st = ds_cache_get_or_load(c0, "x", NULL, test_loader, &l0, &v, &err);
        ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    }
    ck_assert_int_eq(atomic_load(&calls0), 3);
    dt_redis_flush_prefix(r);
    ds_cache_close(c0);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_loader_error_passes_through) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "lerr", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_ERR_DB};
    json_t *v;
    ds_error err = {0};
    ds_status st = ds_cache_get_or_load(c, "k", NULL, test_loader, &l, &v, &err);
    ck_assert_ds_status(st, DS_ERR_DB, err);
    ck_assert_ptr_nonnull(strstr(err.message, "loader says DS_ERR_DB for k"));
    ck_assert_ptr_null(v);
    /* nothing cached and the lock released: the next call loads at once */
    char *lkey = ds__redis_key(r, NULL, "cl:lerr:v0:k");
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", lkey), 0);
    ds__free(lkey);
    l.result = DS_OK;
    v = get_ok(c, "k", &l);
    ck_assert_int_eq(n_of(v), 2);
    json_decref(v);
    /* loaded at once, by us: no wait for a lock, two loader calls */
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_eq(s.stampede_waits, 0);
    ck_assert_uint_eq(s.loads, 2);
    ck_assert_int_eq(atomic_load(&calls), 2);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

static ds_status null_loader(void *ud, const char *key, json_t **out,
                             ds_error *err) {
    (void)ud;
    (void)key;
    (void)err;
    *out = NULL;
    return DS_OK;
}

START_TEST(test_cache_corrupt_value_replaced) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "corrupt", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    char *ekey = ds__redis_key(r, NULL, "c:corrupt:v0:k");
    const char *bad[] = {"not ours at all", "1 V 99999999999999 0\n{\"broken",
                         "1 V 99999999999999 0\n", "1 X 99999999999999 0\n{}"};
    for (int i = 0; i < 4; i++) {
        freeReplyObject(dt_rcmd(r, "SET %s %s PX 60000", ekey, bad[i]));
        json_t *v = get_ok(c, "k", &l);
        ck_assert_int_eq(n_of(v), i + 1);
        json_decref(v);
        redisReply *raw = dt_rcmd(r, "GET %s", ekey);
        ck_assert(strncmp(raw->str, "1 V ", 4) == 0);
        freeReplyObject(raw);
    }
    ck_assert_uint_eq(stats_of(c).corrupt, 4);
    /* a loader that says DS_OK without a value is a bug, reported */
    json_t *v;
    ds_error err = {0};
    ds_status st = ds_cache_get_or_load(c, "null", NULL, null_loader, NULL, &v,
                                        &err);
    ck_assert_ds_status(st, DS_ERR_INVALID, err);
    ds__free(ekey);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

/* ---- invalidation, schema versions, users ---------------------------------------- */

static void version2(ds_cache_options *o) {
    o->schema_version = 2;
}

START_TEST(test_cache_invalidate_key_and_tags) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "inv", 60000, NULL);
    ds_cache *c2 = open_cache(r, "inv", 60000, version2);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    const char *tags42[] = {"user:42", "team:7"};
    ds_cache_entry_options e42 = {sizeof(ds_cache_entry_options), tags42, 2, 0, 0};
    const char *tags43[] = {"user:43"};
    ds_cache_entry_options e43 = {sizeof(ds_cache_entry_options), tags43, 1, 0, 0};
    json_t *v;
    ds_error err = {0};
    const char *keys42[] = {"profile:42", "settings:42", "teams:42"};
    for (int i = 0; i < 3; i++) {
        ck_assert_ds_ok(ds_cache_get_or_load(c, keys42[i], &e42, test_loader,
                                             &l, &v, &err),
                        err);
        json_decref(v);
    }
    ck_assert_ds_ok(ds_cache_get_or_load(c2, "profile:42", &e42, test_loader,
                                         &l, &v, &err),
                    err);
    json_decref(v);
    ck_assert_ds_ok(ds_cache_get_or_load(c, "profile:43", &e43, test_loader, &l,
                                         &v, &err),
                    err);
    json_decref(v);
    ck_assert_int_eq(atomic_load(&calls), 5);
    /* the tag set expires no earlier than its entries */
    char *tkey = ds__redis_key(r, NULL, "ct:inv:user:42");
    ck_assert_int_gt(dt_rint(r, "PTTL %s", tkey), 50000);
    ds__free(tkey);

    int64_t removed = -1;
    ck_assert_ds_ok(ds_cache_invalidate_tag(c, "user:42", &removed, &err), err);
    ck_assert_int_eq(removed, 4); /* 3 of v0 and 1 of v2 */
    for (int i = 0; i < 3; i++)
        ck_assert_ds_status(ds_cache_get(c, keys42[i], &v, &err),
                            DS_ERR_NOT_FOUND, err);
    ck_assert_ds_ok(ds_cache_get(c, "profile:43", &v, &err), err);
    json_decref(v);
    ck_assert_ds_ok(ds_cache_invalidate_tag(c, "user:42", &removed, &err), err);
    ck_assert_int_eq(removed, 0);
    ck_assert_ds_ok(ds_cache_invalidate_tag(c, "never-used", NULL, &err), err);

    ck_assert_ds_ok(ds_cache_invalidate(c, "profile:43", &err), err);
    ck_assert_ds_status(ds_cache_get(c, "profile:43", &v, &err),
                        DS_ERR_NOT_FOUND, err);
    ck_assert_ds_ok(ds_cache_invalidate(c, "profile:43", &err), err);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_cache_close(c2);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_schema_version_isolates) {
    ds_redis *r = dt_redis("cache");
    ds_cache *v1 = open_cache(r, "shape", 60000, NULL);
    ds_cache *v2 = open_cache(r, "shape", 60000, version2);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(v1, "k", &l));
    json_t *v = get_ok(v2, "k", &l); /* never the old shape */
    ck_assert_int_eq(n_of(v), 2);
    json_decref(v);
    v = get_ok(v1, "k", &l);
    ck_assert_int_eq(n_of(v), 1);
    json_decref(v);
    dt_redis_flush_prefix(r);
    ds_cache_close(v1);
    ds_cache_close(v2);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_user_entries_erased) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "gdpr", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    ds_cache_entry_options mine = {sizeof(ds_cache_entry_options), NULL, 0, 42, 0};
    ds_cache_entry_options theirs = {sizeof(ds_cache_entry_options), NULL, 0, 43, 0};
    json_t *v;
    ds_error err = {0};
    ck_assert_ds_ok(ds_cache_get_or_load(c, "profile:42", &mine, test_loader,
                                         &l, &v, &err),
                    err);
    json_decref(v);
    json_t *doc = json_pack("{s:s}", "email", "a@example.com");
    ck_assert_ds_ok(ds_cache_set(c, "email:42", doc, &mine, &err), err);
    json_decref(doc);
    ck_assert_ds_ok(ds_cache_get_or_load(c, "profile:43", &theirs, test_loader,
                                         &l, &v, &err),
                    err);
    json_decref(v);
    int64_t removed;
    ck_assert_ds_ok(ds_redis_erase_user(r, 42, &removed, &err), err);
    ck_assert_int_eq(removed, 2);
    ck_assert_ds_status(ds_cache_get(c, "profile:42", &v, &err),
                        DS_ERR_NOT_FOUND, err);
    ck_assert_ds_status(ds_cache_get(c, "email:42", &v, &err), DS_ERR_NOT_FOUND,
                        err);
    ck_assert_ds_ok(ds_cache_get(c, "profile:43", &v, &err), err);
    json_decref(v);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

/* ---- Redis down or slow ---------------------------------------------------------------- */

START_TEST(test_cache_survives_redis_down) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "down", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(c, "k", &l));
    dt_redis_stop();
    for (int i = 0; i < 3; i++) {
        json_t *v = get_ok(c, "k", &l); /* straight from the loader */
        ck_assert_int_eq(n_of(v), 2 + i);
        json_decref(v);
    }
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_ge(s.errors, 3);
    ck_assert_uint_eq(s.loads, 4);
    /* the cache-only read does report the failure */
    json_t *v;
    ds_error err = {0};
    ck_assert_ds_status(ds_cache_get(c, "k", &v, &err), DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    /* so do the writes; and opening a cache does not talk to Redis */
    json_t *one = json_integer(1);
    ck_assert_ds_status(ds_cache_set(c, "k", one, NULL, &err), DS_ERR_REDIS, err);
    json_decref(one);
    ck_assert_ds_status(ds_cache_invalidate(c, "k", &err), DS_ERR_REDIS, err);
    int64_t removed = 7;
    ck_assert_ds_status(ds_cache_invalidate_tag(c, "t", &removed, &err),
                        DS_ERR_REDIS, err);
    ck_assert_int_eq(removed, 0);
    ds_cache_options o2 = {.size = sizeof(ds_cache_options)};
    ds_cache_options_init(&o2);
    o2.name = "opened-while-down";
    ds_cache *c2 = NULL;
    ck_assert_ds_ok(ds_cache_open(r, &o2, &c2, &err), err);
    ds_cache_close(c2);
    dt_redis_start(r);
    v = get_ok(c, "k", &l); /* empty after the restart: loaded and stored */
    ck_assert_int_eq(n_of(v), 5);
    json_decref(v);
    v = get_ok(c, "k", &l);
    ck_assert_int_eq(n_of(v), 5);
    json_decref(v);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_survives_redis_slow) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "slow");
    ds_error err = {0};
    ck_assert_ds_ok(
        ds_config_set_int(cfg, "redis_command_timeout_ms", 100, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    ds_redis *admin = dt_redis("slow");
    ds_cache *c = open_cache(r, "slow", 60000, NULL);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(c, "k", &l));
    freeReplyObject(dt_rcmd(admin, "CLIENT PAUSE 2000 ALL"));
    json_t *v = get_ok(c, "k", &l);
    ck_assert_int_eq(n_of(v), 2);
    json_decref(v);
    ck_assert_uint_ge(stats_of(c).errors, 1);
    dt_redis_wait_up(r);
    v = get_ok(c, "k", &l);
    ck_assert_int_ge(n_of(v), 1);
    json_decref(v);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
    ds_redis_close(admin);
}
END_TEST

/* ---- bad arguments ---------------------------------------------------------------------- */

START_TEST(test_cache_errors) {
    ds_redis *r = dt_redis("cache");
    ds_cache_options o = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&o);
    ds_cache_options_init(NULL);
    ck_assert_uint_eq(o.size, sizeof o);
    ck_assert_int_eq(o.ttl_ms, 0); /* zero: the default */
    ds_cache *c = (ds_cache *)1;
    ds_error err = {0};
    ck_assert_int_eq(ds_cache_open(r, &o, &c, &err), DS_ERR_INVALID); /* name */
    ck_assert_ptr_null(c);
    const char *bad_names[] = {"", "has space", "a:b", "x/y",
                               "0123456789012345678901234567890123456789"
                               "01234567890123456789012345"};
    for (size_t i = 0; i < 5; i++) {
        o.name = bad_names[i];
        ck_assert_int_eq(ds_cache_open(r, &o, &c, &err), DS_ERR_INVALID);
    }
    o.name = "ok";
    ck_assert_int_eq(ds_cache_open(NULL, &o, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_open(r, NULL, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_open(r, &o, NULL, &err), DS_ERR_INVALID);
    ds_cache_options b = o;
    b.ttl_ms = -5;
    ck_assert_int_eq(ds_cache_open(r, &b, &c, &err), DS_ERR_INVALID);
    b = o;
    b.ttl_jitter_pct = 101;
    ck_assert_int_eq(ds_cache_open(r, &b, &c, &err), DS_ERR_INVALID);
    b = o;
    b.negative_ttl_ms = -2;
    ck_assert_int_eq(ds_cache_open(r, &b, &c, &err), DS_ERR_INVALID);
    b = o;
    b.lock_ttl_ms = -1;
    ck_assert_int_eq(ds_cache_open(r, &b, &c, &err), DS_ERR_INVALID);
    b = o;
    b.early_refresh_beta = -1;
    ck_assert_int_eq(ds_cache_open(r, &b, &c, &err), DS_ERR_INVALID);
    ck_assert_ds_ok(ds_cache_open(r, &o, &c, &err), err);

    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_t *v = (json_t *)1;
    ck_assert_int_eq(ds_cache_get_or_load(NULL, "k", NULL, test_loader, &l, &v,
                                          &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(ds_cache_get_or_load(c, NULL, NULL, test_loader, &l, &v,
                                          &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_get_or_load(c, "", NULL, test_loader, &l, &v, &err),
                     DS_ERR_INVALID);
    char longkey[1100];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    ck_assert_int_eq(ds_cache_get_or_load(c, longkey, NULL, test_loader, &l, &v,
                                          &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_get_or_load(c, "k", NULL, NULL, &l, &v, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_get_or_load(c, "k", NULL, test_loader, &l, NULL,
                                          &err),
                     DS_ERR_INVALID);
    const char *tags[17];
    for (int i = 0; i < 17; i++)
        tags[i] = "t";
    ds_cache_entry_options e = {sizeof(ds_cache_entry_options), tags, 17, 0, 0};
    ck_assert_int_eq(ds_cache_get_or_load(c, "k", &e, test_loader, &l, &v, &err),
                     DS_ERR_INVALID);
    e.ntags = 1;
    e.user_id = -1;
    ck_assert_int_eq(ds_cache_get_or_load(c, "k", &e, test_loader, &l, &v, &err),
                     DS_ERR_INVALID);
    const char *empty_tag[] = {""};
    ds_cache_entry_options e2 = {sizeof(ds_cache_entry_options), empty_tag, 1, 0, 0};
    ck_assert_int_eq(ds_cache_set(c, "k", json_null(), &e2, &err),
                     DS_ERR_INVALID);
    ds_cache_entry_options e3 = {sizeof(ds_cache_entry_options), NULL, 1, 0, 0};
    ck_assert_int_eq(ds_cache_set(c, "k", json_null(), &e3, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_set(c, "k", NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_set(NULL, "k", json_null(), NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_get(c, NULL, &v, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_get(c, "k", NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_invalidate(c, "", &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_cache_invalidate(NULL, "k", &err), DS_ERR_INVALID);
    int64_t removed = 9;
    ck_assert_int_eq(ds_cache_invalidate_tag(c, "", &removed, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(ds_cache_invalidate_tag(c, NULL, NULL, &err),
                     DS_ERR_INVALID);
    ds_cache_stats s = DS_CACHE_STATS_INIT;
    memset(&s, 0xff, sizeof s);
    s.size = sizeof s;
    ck_assert_int_eq(ds_cache_stats_get(NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(s.hits, 0); /* out-params are reset first */
    ck_assert_uint_eq(s.errors, 0);
    ck_assert_int_eq(ds_cache_stats_get(c, NULL, &err), DS_ERR_INVALID);
    ds_cache_close(NULL);

    /* allocation failures anywhere on the miss path: an error or a value,
     * never a crash or a leak */
    for (int n = 1; n < 40; n++) {
        char key[16];
        snprintf(key, sizeof key, "oom%d", n);
        const char *t1[] = {"tag"};
        ds_cache_entry_options eo = {sizeof(ds_cache_entry_options), t1, 1, 5, 0};
        ds__test_fail_alloc_after(n);
        ds_status st =
            ds_cache_get_or_load(c, key, &eo, test_loader, &l, &v, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK)
            json_decref(v);
        else
            ck_assert_msg(st == DS_ERR_NOMEM, "n=%d: %s", n, ds_status_str(st));
    }
    /* the status is the real one without an error struct too */
    for (int n = 1; n < 8; n++) {
        ds__test_fail_alloc_after(n);
        ds_status st1 = ds_cache_set(c, "k", json_null(), NULL, NULL);
        ds__test_fail_alloc_after(n);
        ds_status st2 = ds_cache_invalidate_tag(c, "tag", NULL, NULL);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st1 == DS_OK || st1 == DS_ERR_NOMEM, "n=%d: %s", n,
                      ds_status_str(st1));
        ck_assert_msg(st2 == DS_OK || st2 == DS_ERR_NOMEM, "n=%d: %s", n,
                      ds_status_str(st2));
    }
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

/* ---- the header's promises, one by one ------------------------------------------- */

static void short_wait(ds_cache_options *o) {
    o->wait_timeout_ms = 300;
    o->lock_ttl_ms = 5000;
}

START_TEST(test_cache_waits_for_another_process_then_loads_itself) {
    /* "other processes see a short lock in Redis and poll until the value
     * appears, bounded by wait_timeout_ms, after which they load
     * themselves": a lock held by a loader that never stores */
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "waiter", 60000, short_wait);
    char *lkey = ds__redis_key(r, NULL, "cl:waiter:v0:k");
    freeReplyObject(dt_rcmd(r, "SET %s someone-else PX 60000", lkey));
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    long long t0 = dt_now_ms();
    json_t *v = get_ok(c, "k", &l);
    long long waited = dt_now_ms() - t0;
    ck_assert_int_eq(n_of(v), 1);
    json_decref(v);
    ck_assert_int_eq(atomic_load(&calls), 1);
    /* it did wait (a lower bound only: no upper timing bound here) */
    ck_assert_int_ge(waited, 250);
    /* the other loader's lock is not ours to delete */
    redisReply *lock = dt_rcmd(r, "GET %s", lkey);
    ck_assert_int_eq(lock->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(lock->str, "someone-else");
    freeReplyObject(lock);
    ds__free(lkey);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

typedef struct {
    ds_redis *r;
    const char *lkey;
    int n;
    uint64_t commands_before; /* the handle's round trips before the get */
} other_loader;

/* Another process's loader: once the waiter is polling (its handle made a
 * few round trips: the miss, the lock it did not get, a poll), stores the
 * value with a cache of its own, then releases its lock. */
static void *other_loader_main(void *p) {
    other_loader *o = p;
    long long deadline = dt_now_ms() + 20000;
    for (;;) {
        ds_redis_stats rs = DS_REDIS_STATS_INIT;
        ds_error serr = {0};
        if (ds_redis_stats_get(o->r, &rs, &serr) != DS_OK)
            return NULL;
        if (rs.commands >= o->commands_before + 3 || dt_now_ms() > deadline)
            break;
        usleep(1000);
    }
    ds_cache_options opts = {.size = sizeof(ds_cache_options)};
    ds_cache_options_init(&opts);
    opts.name = "waiter2";
    ds_cache *c;
    ds_error err = {0};
    if (ds_cache_open(o->r, &opts, &c, &err) != DS_OK)
        return NULL;
    json_t *v = json_pack("{s:i}", "n", o->n);
    if (ds_cache_set(c, "k", v, NULL, &err) == DS_OK)
        freeReplyObject(dt_rcmd(o->r, "DEL %s", o->lkey));
    json_decref(v);
    ds_cache_close(c);
    return NULL;
}

START_TEST(test_cache_waiter_takes_the_value_another_process_stored) {
    ds_redis *r = dt_redis("cache");
    ds_cache_options o = {.size = sizeof(ds_cache_options)};
    ds_cache_options_init(&o);
    o.name = "waiter2";
    o.wait_timeout_ms = 30000; /* far beyond the other loader's store */
    ds_cache *c;
    ds_error err = {0};
    ck_assert_ds_ok(ds_cache_open(r, &o, &c, &err), err);
    char *lkey = ds__redis_key(r, NULL, "cl:waiter2:v0:k");
    freeReplyObject(dt_rcmd(r, "SET %s someone-else PX 60000", lkey));
    ds_redis_stats rs = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &rs, &err), err);
    other_loader ol = {r, lkey, 1234, rs.commands};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, other_loader_main, &ol), 0);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_t *v = get_ok(c, "k", &l);
    pthread_join(th, NULL);
    ck_assert_int_eq(n_of(v), 1234);
    json_decref(v);
    ck_assert_int_eq(atomic_load(&calls), 0); /* our loader never ran */
    ds_cache_stats s = stats_of(c);
    ck_assert_uint_eq(s.loads, 0);
    ck_assert_uint_eq(s.stampede_waits, 1);
    ds__free(lkey);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_load_lock_expires_after_lock_ttl) {
    /* "a loader's lock expires after lock_ttl_ms": seen while a slow
     * loader runs, then gone with the load */
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "locked", 60000, short_wait);
    atomic_int calls = 0, entered = 0;
    loader_ctx slow = {&calls, &entered, 500, DS_OK};
    getter_arg a = {c, "k", &slow, 0, DS_OK};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, getter_main, &a), 0);
    long long deadline = dt_now_ms() + 10000;
    while (!atomic_load(&entered) && dt_now_ms() < deadline)
        usleep(1000);
    ck_assert(atomic_load(&entered));
    char *lkey = ds__redis_key(r, NULL, "cl:locked:v0:k");
    long long pttl = dt_rint(r, "PTTL %s", lkey);
    ck_assert_int_gt(pttl, 0);
    ck_assert_int_le(pttl, 5000);
    pthread_join(th, NULL);
    ck_assert_ds_ok(a.st, (ds_error){0});
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", lkey), 0);
    ds__free(lkey);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

static void stale_10s(ds_cache_options *o) {
    o->ttl_jitter_pct = 10;
    o->stale_ttl_ms = 10000;
}

START_TEST(test_cache_entry_ttl_jitter_and_stale_retention) {
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "ettl", 100000, stale_10s);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    ds_error err = {0};
    json_t *v;
    /* the cache's TTL, 0..10% added (never removed), plus the stale time
     * the entry is kept after it */
    long long min = 1LL << 40, max = 0;
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        json_decref(get_ok(c, key, &l));
        char *ekey = ds__redis_key(r, NULL, "c:ettl:v0:%s", key);
        long long ttl = dt_rint(r, "PTTL %s", ekey);
        ds__free(ekey);
        min = ttl < min ? ttl : min;
        max = ttl > max ? ttl : max;
    }
    ck_assert_int_gt(min, 100000 + 10000 - 2000); /* a little time passes */
    ck_assert_int_le(max, 110000 + 10000);
    /* an entry's own ttl_ms replaces the cache's, jittered the same way */
    ds_cache_entry_options own = {sizeof(ds_cache_entry_options), NULL, 0, 0, 500000};
    ck_assert_ds_ok(ds_cache_get_or_load(c, "own", &own, test_loader, &l, &v, &err),
                    err);
    json_decref(v);
    json_t *doc = json_integer(5);
    ck_assert_ds_ok(ds_cache_set(c, "own-set", doc, &own, &err), err);
    json_decref(doc);
    const char *own_keys[] = {"own", "own-set"};
    for (int i = 0; i < 2; i++) {
        char *ekey = ds__redis_key(r, NULL, "c:ettl:v0:%s", own_keys[i]);
        long long ttl = dt_rint(r, "PTTL %s", ekey);
        ds__free(ekey);
        ck_assert_int_gt(ttl, 500000 + 10000 - 2000);
        ck_assert_int_le(ttl, 550000 + 10000);
    }
    ds_cache_entry_options negative = {sizeof(ds_cache_entry_options), NULL, 0, 0, -1};
    ck_assert_ds_status(ds_cache_get_or_load(c, "neg", &negative, test_loader, &l,
                                             &v, &err),
                        DS_ERR_INVALID, err);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

static void stale_short(ds_cache_options *o) {
    o->ttl_jitter_pct = 0;
    o->stale_ttl_ms = 60000;
    o->negative_ttl_ms = 60000;
}

START_TEST(test_cache_get_only_reads_fresh_values) {
    /* ds_cache_get: DS_ERR_NOT_FOUND for absent, past its TTL (though kept
     * for stale serving), a cached "not found", or unreadable */
    ds_redis *r = dt_redis("cache");
    ds_cache *c = open_cache(r, "getonly", 50, stale_short);
    atomic_int calls = 0;
    loader_ctx l = {&calls, NULL, 0, DS_OK};
    json_decref(get_ok(c, "old", &l));
    char *ekey = ds__redis_key(r, NULL, "c:getonly:v0:old");
    long long deadline = dt_now_ms() + 10000;
    json_t *v = NULL;
    ds_error err = {0};
    ds_status st;
    /* bounded polling until it is past its 50 ms */
    while ((st = ds_cache_get(c, "old", &v, &err)) == DS_OK &&
           dt_now_ms() < deadline) {
        json_decref(v);
        usleep(10 * 1000);
    }
    ck_assert_ds_status(st, DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", ekey), 1); /* still kept */
    ds__free(ekey);
    /* a cached "not found" */
    loader_ctx nf = {&calls, NULL, 0, DS_ERR_NOT_FOUND};
    ck_assert_ds_status(ds_cache_get_or_load(c, "gone", NULL, test_loader, &nf,
                                             &v, &err),
                        DS_ERR_NOT_FOUND, err);
    char *gkey = ds__redis_key(r, NULL, "c:getonly:v0:gone");
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", gkey), 1);
    ds__free(gkey);
    ck_assert_ds_status(ds_cache_get(c, "gone", &v, &err), DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(v);
    /* unreadable */
    char *bkey = ds__redis_key(r, NULL, "c:getonly:v0:bad");
    freeReplyObject(dt_rcmd(r, "SET %s %s PX 60000", bkey, "not ours"));
    ds__free(bkey);
    ck_assert_ds_status(ds_cache_get(c, "bad", &v, &err), DS_ERR_NOT_FOUND, err);
    ck_assert_ptr_null(v);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_cache_options_defaults_copies_and_limits) {
    ds_redis *r = dt_redis("cache");
    ds_cache_options o = {.size = sizeof(ds_cache_options)};
    memset(&o, 0x5a, sizeof o);
    ds_cache_options_init(&o);
    ck_assert_ptr_null(o.name);
    ck_assert_uint_eq(o.schema_version, 0);
    /* zero means default: the initialiser sets only the size */
    ck_assert_uint_eq(o.size, sizeof o);
    ck_assert_int_eq(o.ttl_ms, 0);
    ck_assert_int_eq(o.ttl_jitter_pct, 0);
    ck_assert_int_eq(o.negative_ttl_ms, 0);
    ck_assert_int_eq(o.stale_ttl_ms, 0);
    ck_assert_int_eq(o.lock_ttl_ms, 0);
    ck_assert_int_eq(o.wait_timeout_ms, 0);
    ck_assert(o.early_refresh_beta == 0);
    /* the name: 64 characters are fine, 65 are not */
    char name[66];
    memset(name, 'n', 65);
    name[65] = '\0';
    ds_cache *c = NULL;
    ds_error err = {0};
    o.name = name;
    ck_assert_ds_status(ds_cache_open(r, &o, &c, &err), DS_ERR_INVALID, err);
    name[64] = '\0';
    ck_assert_ds_ok(ds_cache_open(r, &o, &c, &err), err);
    ds_cache_close(c);
    /* opts is copied, its name included */
    snprintf(name, sizeof name, "copied");
    ck_assert_ds_ok(ds_cache_open(r, &o, &c, &err), err);
    snprintf(name, sizeof name, "changed");
    json_t *v = json_integer(1);
    ck_assert_ds_ok(ds_cache_set(c, "k", v, NULL, &err), err);
    json_decref(v);
    char *ekey = ds__redis_key(r, NULL, "c:copied:v0:k");
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", ekey), 1);
    ds__free(ekey);
    /* keys of 1024 bytes and tags of 256 are fine, one more is not; 16
     * tags are fine */
    char key[1026], tag[258];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    memset(tag, 't', sizeof tag - 1);
    tag[sizeof tag - 1] = '\0';
    ck_assert_ds_status(ds_cache_set(c, key, json_null(), NULL, &err),
                        DS_ERR_INVALID, err);
    key[1024] = '\0';
    const char *tags[16];
    for (int i = 0; i < 16; i++)
        tags[i] = tag;
    ds_cache_entry_options e = {sizeof(ds_cache_entry_options), tags, 16, 0, 0};
    ck_assert_ds_status(ds_cache_set(c, key, json_null(), &e, &err),
                        DS_ERR_INVALID, err);
    tag[256] = '\0';
    ck_assert_ds_ok(ds_cache_set(c, key, json_null(), &e, &err), err);
    int64_t removed = 0;
    ck_assert_ds_ok(ds_cache_invalidate_tag(c, tag, &removed, &err), err);
    ck_assert_int_eq(removed, 1);
    tag[256] = 't';
    ck_assert_ds_status(ds_cache_invalidate_tag(c, tag, &removed, &err),
                        DS_ERR_INVALID, err);
    dt_redis_flush_prefix(r);
    ds_cache_close(c);
    ds_redis_close(r);
}
END_TEST

Suite *ds_test_cache_suite(void) {
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("basics");
    tcase_add_test(tc, test_cache_miss_then_hit);
    tcase_add_test(tc, test_cache_ttl_expiry_and_jitter);
    suite_add_tcase(s, tc);
    tc = tcase_create("stampede");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cache_stampede_threads_one_load);
    tcase_add_test(tc, test_cache_stampede_processes_one_load);
    suite_add_tcase(s, tc);
    tc = tcase_create("stale");
    tcase_add_test(tc, test_cache_stale_served_while_one_refreshes);
    tcase_add_test(tc, test_cache_xfetch_refreshes_early);
    suite_add_tcase(s, tc);
    tc = tcase_create("negative");
    tcase_add_test(tc, test_cache_negative_caching);
    tcase_add_test(tc, test_cache_loader_error_passes_through);
    tcase_add_test(tc, test_cache_corrupt_value_replaced);
    suite_add_tcase(s, tc);
    tc = tcase_create("invalidate");
    tcase_add_test(tc, test_cache_invalidate_key_and_tags);
    tcase_add_test(tc, test_cache_schema_version_isolates);
    tcase_add_test(tc, test_cache_user_entries_erased);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis_failure");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_cache_survives_redis_down);
    tcase_add_test(tc, test_cache_survives_redis_slow);
    suite_add_tcase(s, tc);
    tc = tcase_create("promises");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cache_waits_for_another_process_then_loads_itself);
    tcase_add_test(tc, test_cache_waiter_takes_the_value_another_process_stored);
    tcase_add_test(tc, test_cache_load_lock_expires_after_lock_ttl);
    tcase_add_test(tc, test_cache_entry_ttl_jitter_and_stale_retention);
    tcase_add_test(tc, test_cache_get_only_reads_fresh_values);
    tcase_add_test(tc, test_cache_options_defaults_copies_and_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cache_errors);
    suite_add_tcase(s, tc);
    return s;
}
