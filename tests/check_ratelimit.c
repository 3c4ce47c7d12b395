/* Rate limiting against the local Redis: GCRA and sliding window, peek,
 * atomicity across threads and processes, expiry, and the fail-open /
 * fail-closed policy with Redis stopped. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"

static ds_ratelimit *open_rl(ds_redis *r, const char *name,
                             ds_ratelimit_algorithm algo, int64_t limit,
                             int64_t period_ms, int64_t burst,
                             ds_ratelimit_policy policy) {
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), name, algo, limit, period_ms, burst, policy};
    ds_ratelimit *rl;
    ds_error err = {0};
    ds_status st = ds_ratelimit_open(r, &o, &rl, &err);
    ck_assert_ds_ok(st, err);
    return rl;
}

static ds_ratelimit_result check(ds_ratelimit *rl, const char *key) {
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    ds_error err = {0};
    ds_status st = ds_ratelimit_check(rl, key, &res, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(!res.degraded);
    return res;
}

static long long pttl_of(ds_redis *r, const char *name, const char *key) {
    char *k = ds__redis_key(r, NULL, "rl:%s:%s", name, key);
    long long ttl = dt_rint(r, "PTTL %s", k);
    ds__free(k);
    return ttl;
}

START_TEST(test_ratelimit_gcra_limit_and_retry_after) {
    ds_redis *r = dt_redis("rl");
    ds_ratelimit *rl = open_rl(r, "api", DS_RATELIMIT_GCRA, 5, 1000, 0,
                               DS_RATELIMIT_FAIL_CLOSED);
    for (int i = 0; i < 5; i++) {
        ds_ratelimit_result res = check(rl, "user:1");
        ck_assert(res.allowed);
        ck_assert_int_eq(res.limit, 5);
        ck_assert_int_eq(res.remaining, 4 - i);
        ck_assert_int_eq(res.retry_after_ms, 0);
        ck_assert_int_gt(res.reset_ms, 0);
        ck_assert_int_le(res.reset_ms, 1000);
    }
    ds_ratelimit_result res = check(rl, "user:1");
    ck_assert(!res.allowed);
    ck_assert_int_eq(res.remaining, 0);
    ck_assert_int_gt(res.retry_after_ms, 0);
    ck_assert_int_le(res.retry_after_ms, 200); /* one emission interval */
    /* another key has its own budget */
    ck_assert(check(rl, "user:2").allowed);
    /* the key expires when the bucket is full again */
    long long ttl = pttl_of(r, "api", "user:1");
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 1000);
    /* after retry_after, one more is allowed, and no more */
    usleep((useconds_t)res.retry_after_ms * 1000 + 2000);
    res = check(rl, "user:1");
    ck_assert(res.allowed);
    ds_ratelimit_stats s = DS_RATELIMIT_STATS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_ratelimit_stats_get(rl, &s, &err), err);
    ck_assert_uint_eq(s.checks, 8);
    ck_assert_uint_eq(s.allowed, 7);
    ck_assert_uint_eq(s.denied, 1);
    ck_assert_uint_eq(s.degraded, 0);
    dt_redis_flush_prefix(r);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_ratelimit_gcra_burst) {
    ds_redis *r = dt_redis("rl");
    /* 10 per minute on average, at most 3 at once */
    ds_ratelimit *rl = open_rl(r, "burst", DS_RATELIMIT_GCRA, 10, 60000, 3,
                               DS_RATELIMIT_FAIL_CLOSED);
    for (int i = 0; i < 3; i++)
        ck_assert(check(rl, "k").allowed);
    ds_ratelimit_result res = check(rl, "k");
    ck_assert(!res.allowed);
    ck_assert_int_eq(res.limit, 3);
    ck_assert_int_gt(res.retry_after_ms, 5000); /* 6 s per request */
    ck_assert_int_le(res.retry_after_ms, 6000);
    dt_redis_flush_prefix(r);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_ratelimit_sliding_window) {
    ds_redis *r = dt_redis("rl");
    ds_ratelimit *rl = open_rl(r, "win", DS_RATELIMIT_SLIDING_WINDOW, 5, 400, 0,
                               DS_RATELIMIT_FAIL_CLOSED);
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    for (int i = 0; i < 5; i++) {
        res = check(rl, "ip:10.0.0.1");
        ck_assert(res.allowed);
        ck_assert_int_eq(res.limit, 5);
    }
    ck_assert_int_eq(res.remaining, 0);
    res = check(rl, "ip:10.0.0.1");
    ck_assert(!res.allowed);
    ck_assert_int_gt(res.retry_after_ms, 0);
    ck_assert_int_le(res.retry_after_ms, 800);
    ck_assert_int_gt(res.reset_ms, 0);
    long long ttl = pttl_of(r, "win", "ip:10.0.0.1");
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 800);
    /* waiting retry_after is enough */
    usleep((useconds_t)res.retry_after_ms * 1000 + 2000);
    res = check(rl, "ip:10.0.0.1");
    ck_assert(res.allowed);
    /* a denied check consumes nothing */
    ds_ratelimit *one = open_rl(r, "one", DS_RATELIMIT_SLIDING_WINDOW, 1, 60000,
                                0, DS_RATELIMIT_FAIL_CLOSED);
    ck_assert(check(one, "k").allowed);
    for (int i = 0; i < 5; i++)
        ck_assert(!check(one, "k").allowed);
    char *k = ds__redis_key(r, NULL, "rl:one:k");
    ck_assert_int_eq(dt_rint(r, "ZCARD %s", k), 1);
    /* a key in the shape of the old estimate (a hash) starts afresh, for
     * the log (limit <= 1000) and for the buckets (above) */
    freeReplyObject(dt_rcmd(r, "DEL %s", k));
    freeReplyObject(dt_rcmd(r, "HSET %s w 1 c 999 p 999", k));
    ck_assert(check(one, "k").allowed);
    redisReply *ty = dt_rcmd(r, "TYPE %s", k);
    ck_assert_str_eq(ty->str, "zset");
    freeReplyObject(ty);
    ds_ratelimit *many = open_rl(r, "many", DS_RATELIMIT_SLIDING_WINDOW, 5000,
                                 60000, 0, DS_RATELIMIT_FAIL_CLOSED);
    char *mk = ds__redis_key(r, NULL, "rl:many:k");
    freeReplyObject(dt_rcmd(r, "SET %s 12345", mk));
    ck_assert(check(many, "k").allowed);
    ty = dt_rcmd(r, "TYPE %s", mk);
    ck_assert_str_eq(ty->str, "hash");
    freeReplyObject(ty);
    ck_assert_int_gt(dt_rint(r, "PTTL %s", mk), 0);
    ds__free(mk);
    ds_ratelimit_close(many);
    ds__free(k);
    dt_redis_flush_prefix(r);
    ds_ratelimit_close(one);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_ratelimit_peek_and_cost) {
    ds_redis *r = dt_redis("rl");
    ds_ratelimit_algorithm algos[2] = {DS_RATELIMIT_GCRA,
                                       DS_RATELIMIT_SLIDING_WINDOW};
    for (int a = 0; a < 2; a++) {
        ds_ratelimit *rl = open_rl(r, a ? "peekw" : "peekg", algos[a], 5, 60000,
                                   0, DS_RATELIMIT_FAIL_CLOSED);
        ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
        ds_error err = {0};
        for (int i = 0; i < 3; i++) {
            ck_assert_ds_ok(ds_ratelimit_peek(rl, "k", &res, &err), err);
            ck_assert(res.allowed);
            ck_assert_int_eq(res.remaining, 5);
        }
        /* a peek writes nothing */
        ck_assert_int_eq(pttl_of(r, a ? "peekw" : "peekg", "k"), -2);
        ck_assert_ds_ok(ds_ratelimit_check_n(rl, "k", 3, &res, &err), err);
        ck_assert(res.allowed);
        ck_assert_int_eq(res.remaining, 2);
        ck_assert_ds_ok(ds_ratelimit_peek(rl, "k", &res, &err), err);
        ck_assert_int_eq(res.remaining, 2);
        /* all or nothing */
        ck_assert_ds_ok(ds_ratelimit_check_n(rl, "k", 3, &res, &err), err);
        ck_assert(!res.allowed);
        ck_assert_int_eq(res.remaining, 2);
        ck_assert_ds_ok(ds_ratelimit_check_n(rl, "k", 2, &res, &err), err);
        ck_assert(res.allowed);
        ck_assert_int_eq(res.remaining, 0);
        ck_assert_ds_ok(ds_ratelimit_peek(rl, "k", &res, &err), err);
        ck_assert(!res.allowed);
        ck_assert_int_gt(res.retry_after_ms, 0);
        /* reset gives the full capacity back */
        ck_assert_ds_ok(ds_ratelimit_reset(rl, "k", &err), err);
        ck_assert_ds_ok(ds_ratelimit_peek(rl, "k", &res, &err), err);
        ck_assert(res.allowed);
        ck_assert_int_eq(res.remaining, 5);
        ds_ratelimit_close(rl);
    }
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
}
END_TEST

/* ---- atomicity --------------------------------------------------------------------- */

typedef struct {
    ds_ratelimit *rl;
    int n;
    int allowed;
    int errors;
} hammer_arg;

static void *hammer_main(void *p) {
    hammer_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
        ds_error err = {0};
        if (ds_ratelimit_check(a->rl, "shared", &res, &err) != DS_OK ||
            res.degraded)
            a->errors++;
        else if (res.allowed)
            a->allowed++;
    }
    return NULL;
}

typedef struct {
    ds_config *cfg;
    const char *name;
    ds_ratelimit_algorithm algo;
    atomic_int *allowed; /* shared between the processes */
} hammer_process;

/* One process: its own handle and limiter, 4 threads x 40 checks. */
static int hammer_process_main(void *ud, int index) {
    (void)index;
    hammer_process *hp = ud;
    ds_redis *r;
    ds_error err = {0};
    if (ds_redis_open(hp->cfg, &r, &err) != DS_OK)
        return 2;
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), hp->name, hp->algo, 100,
                              60000, 0, DS_RATELIMIT_FAIL_CLOSED};
    ds_ratelimit *rl;
    if (ds_ratelimit_open(r, &o, &rl, &err) != DS_OK)
        return 3;
    pthread_t th[4];
    hammer_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (hammer_arg){rl, 40, 0, 0};
        pthread_create(&th[t], NULL, hammer_main, &args[t]);
    }
    int errors = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        atomic_fetch_add(hp->allowed, args[t].allowed);
        errors += args[t].errors;
    }
    ds_ratelimit_close(rl);
    ds_redis_close(r);
    return errors ? 1 : 0;
}

START_TEST(test_ratelimit_exact_under_concurrency) {
    /* 4 processes x 4 threads x 40 checks against a limit of 100 per
     * minute, on both algorithms: exactly 100 allowed each time */
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "rlconc");
    ds_ratelimit_algorithm algos[2] = {DS_RATELIMIT_GCRA,
                                       DS_RATELIMIT_SLIDING_WINDOW};
    for (int a = 0; a < 2; a++) {
        atomic_int *allowed = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert_ptr_ne(allowed, MAP_FAILED);
        atomic_init(allowed, 0);
        hammer_process hp = {cfg, a ? "concw" : "concg", algos[a], allowed};
        dt_run_processes(4, hammer_process_main, &hp);
        ck_assert_int_eq(atomic_load(allowed), 100);
        munmap(allowed, 4096);
    }
    ds_redis *r;
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
    ds_config_free(cfg);
}
END_TEST

/* ---- the promise under bursts ------------------------------------------------------- */

/* One admitted check: its cost and the wall-clock span (µs) around the call.
 * Redis runs on this host, so its TIME, which the scripts decide by, reads
 * the same clock: the decision lies inside the span. */
typedef struct {
    int64_t t0, t1;
    int cost;
} admit_rec;

#define BURST_MAX_RECS 60000

typedef struct {
    atomic_int n;
    atomic_int denied;
    admit_rec recs[BURST_MAX_RECS];
} burst_log;

typedef struct {
    ds_ratelimit *rl;
    burst_log *log;
    int cost;
    int64_t until_us;
    int errors;
} burst_arg;

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Hammers only in the 300 ms on either side of each whole second of the
 * wall clock, so the traffic comes in bursts straddling window edges, the
 * pattern a window estimate gets wrong. */
static void *burst_main(void *p) {
    burst_arg *a = p;
    for (;;) {
        int64_t now = wall_us();
        if (now >= a->until_us)
            break;
        int64_t in_sec = now % 1000000;
        if (in_sec >= 300000 && in_sec < 700000) {
            usleep((useconds_t)(700000 - in_sec));
            continue;
        }
        ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
        ds_error err = {0};
        int64_t t0 = wall_us();
        ds_status st = ds_ratelimit_check_n(a->rl, "burst", a->cost, &res, &err);
        int64_t t1 = wall_us();
        if (st != DS_OK || res.degraded) {
            a->errors++;
        } else if (res.allowed) {
            int i = atomic_fetch_add(&a->log->n, 1);
            if (i < BURST_MAX_RECS)
                a->log->recs[i] = (admit_rec){t0, t1, a->cost};
        } else {
            atomic_fetch_add(&a->log->denied, 1);
        }
    }
    return NULL;
}

static int rec_cmp(const void *x, const void *y) {
    const admit_rec *a = x, *b = y;
    return a->t0 < b->t0 ? -1 : a->t0 > b->t0;
}

/* The most admitted cost whose calls lay wholly inside one span of
 * `span_us`: those decisions certainly fell in it. */
static long long most_in_span(admit_rec *recs, int n, int64_t span_us) {
    qsort(recs, (size_t)n, sizeof *recs, rec_cmp);
    long long most = 0;
    for (int i = 0; i < n; i++) {
        long long sum = 0;
        for (int j = i; j < n && recs[j].t0 < recs[i].t0 + span_us; j++)
            if (recs[j].t1 < recs[i].t0 + span_us)
                sum += recs[j].cost;
        if (sum > most)
            most = sum;
    }
    return most;
}

typedef struct {
    ds_config *cfg;
    const char *name;
    ds_ratelimit_algorithm algo;
    int64_t limit, period_ms;
    int cost;
    int64_t until_us;
    burst_log *log; /* shared between the processes */
} burst_process;

/* One process: its own handle and limiter, 4 threads in bursts. */
static int burst_process_main(void *ud, int index) {
    (void)index;
    burst_process *bp = ud;
    ds_redis *r;
    ds_error err = {0};
    if (ds_redis_open(bp->cfg, &r, &err) != DS_OK)
        return 2;
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), bp->name, bp->algo,
                              bp->limit, bp->period_ms, 0, DS_RATELIMIT_FAIL_CLOSED};
    ds_ratelimit *rl;
    if (ds_ratelimit_open(r, &o, &rl, &err) != DS_OK)
        return 3;
    pthread_t th[4];
    burst_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (burst_arg){rl, bp->log, bp->cost, bp->until_us, 0};
        pthread_create(&th[t], NULL, burst_main, &args[t]);
    }
    int errors = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        errors += args[t].errors;
    }
    ds_ratelimit_close(rl);
    ds_redis_close(r);
    return errors ? 1 : 0;
}

/* 4 processes x 4 threads in bursts for ~3.5 s against one key, per
 * algorithm; every admitted check logged; no `period_ms` span may hold more
 * than the header allows. */
static void run_bursts(ds_ratelimit_algorithm algo, const char *name,
                       int64_t limit, int64_t period_ms, int cost,
                       long long bound) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "rlburst");
    burst_log *log = mmap(NULL, sizeof *log, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(log, MAP_FAILED);
    atomic_init(&log->n, 0);
    atomic_init(&log->denied, 0);
    /* start just before a second's edge, run three and a half seconds */
    int64_t start = wall_us();
    int64_t until = start - start % 1000000 + 4500000;
    burst_process bp = {cfg, name, algo, limit, period_ms, cost, until, log};
    dt_run_processes(4, burst_process_main, &bp);
    int n = atomic_load(&log->n);
    ck_assert_int_le(n, BURST_MAX_RECS);
    /* the traffic did overrun the limit, and the limiter did admit */
    ck_assert_int_gt(atomic_load(&log->denied), 0);
    ck_assert_int_ge((long long)n * cost, limit);
    long long most = most_in_span(log->recs, n, period_ms * 1000);
    ck_assert_msg(most <= bound, "%s: %lld admitted within one %lld ms span, "
                  "the header allows %lld", name, most, (long long)period_ms,
                  bound);
    munmap(log, sizeof *log);
    ds_redis *r;
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    dt_redis_flush_prefix(r);
    ds_redis_close(r);
    ds_config_free(cfg);
}

START_TEST(test_ratelimit_sliding_log_holds_under_bursts) {
    run_bursts(DS_RATELIMIT_SLIDING_WINDOW, "blog", 200, 1000, 1, 200);
}
END_TEST

START_TEST(test_ratelimit_sliding_buckets_hold_under_bursts) {
    /* above 1000 the bucket counter; cost 10 reaches the limit quickly */
    run_bursts(DS_RATELIMIT_SLIDING_WINDOW, "bbuck", 2000, 1000, 10, 2000);
}
END_TEST

START_TEST(test_ratelimit_gcra_holds_under_bursts) {
    /* burst (= limit) plus limit per period */
    run_bursts(DS_RATELIMIT_GCRA, "bgcra", 200, 1000, 1, 400);
}
END_TEST

/* ---- Redis down: the caller's policy ------------------------------------------------------ */

START_TEST(test_ratelimit_policy_when_redis_down) {
    ds_redis *r = dt_redis("rl");
    ds_ratelimit *open = open_rl(r, "open", DS_RATELIMIT_GCRA, 2, 60000, 0,
                                 DS_RATELIMIT_FAIL_OPEN);
    ds_ratelimit *closed = open_rl(r, "closed", DS_RATELIMIT_SLIDING_WINDOW, 2,
                                   60000, 0, DS_RATELIMIT_FAIL_CLOSED);
    ck_assert(check(open, "k").allowed);
    ck_assert(check(closed, "k").allowed);
    dt_redis_stop();
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    ds_error err = {0};
    for (int i = 0; i < 5; i++) {
        ck_assert_ds_ok(ds_ratelimit_check(open, "k", &res, &err), err);
        ck_assert(res.degraded);
        ck_assert(res.allowed);
        ck_assert_int_eq(res.retry_after_ms, 0);
        ck_assert_ds_ok(ds_ratelimit_check(closed, "k", &res, &err), err);
        ck_assert(res.degraded);
        ck_assert(!res.allowed);
        ck_assert_int_gt(res.retry_after_ms, 0);
        ck_assert_int_eq(res.remaining, 0);
    }
    ck_assert_ds_ok(ds_ratelimit_peek(closed, "k", &res, &err), err);
    ck_assert(res.degraded && !res.allowed);
    /* opening a limiter does not talk to Redis */
    ds_ratelimit *later = open_rl(r, "later", DS_RATELIMIT_GCRA, 2, 60000, 0,
                                  DS_RATELIMIT_FAIL_OPEN);
    ds_ratelimit_close(later);
    /* reset is an explicit write: it reports the failure */
    ck_assert_ds_status(ds_ratelimit_reset(open, "k", &err), DS_ERR_REDIS, err);
    ds_ratelimit_stats s = DS_RATELIMIT_STATS_INIT;
    ck_assert_ds_ok(ds_ratelimit_stats_get(open, &s, &err), err);
    ck_assert_uint_eq(s.degraded, 5);
    ck_assert_uint_eq(s.allowed, 6);
    ck_assert_ds_ok(ds_ratelimit_stats_get(closed, &s, &err), err);
    ck_assert_uint_eq(s.degraded, 6);
    ck_assert_uint_eq(s.denied, 6);
    dt_redis_start(r);
    /* a restarted server (empty, scripts unloaded) answers again */
    res = check(open, "k");
    ck_assert(res.allowed);
    ck_assert_int_eq(res.remaining, 1);
    dt_redis_flush_prefix(r);
    ds_ratelimit_close(open);
    ds_ratelimit_close(closed);
    ds_redis_close(r);
}
END_TEST

/* ---- bad arguments ------------------------------------------------------------------------- */

START_TEST(test_ratelimit_errors) {
    ds_redis *r = dt_redis("rl");
    ds_error err = {0};
    ds_ratelimit *rl = (ds_ratelimit *)1;
    ds_ratelimit_options o = {sizeof(ds_ratelimit_options), "ok", DS_RATELIMIT_GCRA, 10, 1000, 0,
                              DS_RATELIMIT_FAIL_OPEN};
    ck_assert_int_eq(ds_ratelimit_open(NULL, &o, &rl, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(rl);
    ck_assert_int_eq(ds_ratelimit_open(r, NULL, &rl, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_open(r, &o, NULL, &err), DS_ERR_INVALID);
    ds_ratelimit_options b = o;
    b.name = NULL;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b.name = "bad name";
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.limit = 0;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.period_ms = -5;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.burst = -1;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.algorithm = (ds_ratelimit_algorithm)7;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.on_redis_error = (ds_ratelimit_policy)9;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    b = o;
    b.algorithm = DS_RATELIMIT_SLIDING_WINDOW;
    b.burst = 5;
    ck_assert_int_eq(ds_ratelimit_open(r, &b, &rl, &err), DS_ERR_INVALID);
    ck_assert_ds_ok(ds_ratelimit_open(r, &o, &rl, &err), err);
    ds_ratelimit_result res = DS_RATELIMIT_RESULT_INIT;
    ck_assert_int_eq(ds_ratelimit_check(NULL, "k", &res, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_check(rl, NULL, &res, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_check(rl, "", &res, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_check(rl, "k", NULL, &err), DS_ERR_INVALID);
    char longkey[600];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    ck_assert_int_eq(ds_ratelimit_check(rl, longkey, &res, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_check_n(rl, "k", 0, &res, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_check_n(rl, "k", 11, &res, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_peek(rl, NULL, &res, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_reset(rl, "", &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_ratelimit_reset(NULL, "k", &err), DS_ERR_INVALID);
    ds_ratelimit_stats s = DS_RATELIMIT_STATS_INIT;
    memset(&s, 0xff, sizeof s);
    s.size = sizeof s;
    ck_assert_int_eq(ds_ratelimit_stats_get(NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(s.checks, 0); /* out-params are reset first */
    ck_assert_int_eq(ds_ratelimit_stats_get(rl, NULL, &err), DS_ERR_INVALID);
    ds_ratelimit_close(NULL);
    ds_ratelimit_close(rl);
    ds_redis_close(r);
}
END_TEST

Suite *ds_test_ratelimit_suite(void) {
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("gcra");
    tcase_add_test(tc, test_ratelimit_gcra_limit_and_retry_after);
    tcase_add_test(tc, test_ratelimit_gcra_burst);
    suite_add_tcase(s, tc);
    tc = tcase_create("sliding_window");
    tcase_add_test(tc, test_ratelimit_sliding_window);
    suite_add_tcase(s, tc);
    tc = tcase_create("peek");
    tcase_add_test(tc, test_ratelimit_peek_and_cost);
    suite_add_tcase(s, tc);
    tc = tcase_create("concurrency");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ratelimit_exact_under_concurrency);
    suite_add_tcase(s, tc);
    tc = tcase_create("bursts");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ratelimit_sliding_log_holds_under_bursts);
    tcase_add_test(tc, test_ratelimit_sliding_buckets_hold_under_bursts);
    tcase_add_test(tc, test_ratelimit_gcra_holds_under_bursts);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis_down");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_ratelimit_policy_when_redis_down);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_ratelimit_errors);
    suite_add_tcase(s, tc);
    return s;
}
