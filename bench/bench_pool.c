/*
 * bench_pool: what the pool costs.
 *
 *   acquire_release  uncontended acquire+release, ns per pair
 *   select1          8 threads, SELECT 1 through an 8-connection pool vs the
 *                    same loop on 8 raw libpq connections (target ratio >= 0.98)
 *   shared4          8, 16 and 64 threads sharing 4 pooled connections vs 4
 *                    threads on 4 raw connections (the same server work: the
 *                    server runs at most 4 queries at once either way), with
 *                    the p99 and maximum acquire wait of the pooled side
 *                    (target ratio >= 0.9 at every thread count)
 *   shared4_handpool the same N threads sharing the same 4 raw connections
 *                    through a minimal hand-written pool (a mutex, a stack
 *                    of free connections, a condition variable: what an
 *                    expert writes in twenty lines, no fairness) vs the
 *                    4 raw threads: what oversubscription costs on this
 *                    machine before any pool logic. Measured interleaved
 *                    with shared4 (pool, raw, hand pool in rotating order);
 *                    shared4's vs_handpool is the median of the per-round
 *                    ratios pool / hand pool.
 *   shared4_split, shared4_handpool_split
 *                    the same with this process on half the CPUs and the
 *                    8 backends on the other half, as with a server
 *                    elsewhere (BENCH_PLACEMENT=shared|split|both, default
 *                    both)
 *
 * BENCH_POOL_OVERTAKE_MS sets the pools' pool_overtake_ms (default 20);
 * BENCH_SHARED4_SIDE=pool|raw|hand runs one side of shared4 alone, with
 * its scheduling profile; BENCH_SHARED4_THREADS=8|16|64 runs one count.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include <datastore/datastore.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "harness.h"

#define PROGRAM "bench_pool"

/* Connection time accounting, on only in the separate profile runs (the
 * ratio rounds run without it): summed over every query, the time a
 * connection was leased (acquire returned to release returned) and the
 * time a query was in flight on it (the statement call). Divided by
 * connections x wall time, the shares say how much of the time the
 * server's connections were working, held but idle, or free. */
static bool account_on;
static _Atomic long long leased_ns_sum, in_flight_ns_sum;

/* Sampled in the same runs, every 32nd query of a thread: did the thread
 * wake on the CPU its connection's backend last ran on? A client and its
 * backend on one CPU wake each other without an inter-processor
 * interrupt (costly under a hypervisor). */
static _Atomic long long affinity_samples, affinity_same;
static _Thread_local unsigned affinity_tick;

static int backend_last_cpu(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* after the command name */
    if (!p)
        return -1;
    /* field 39 ("processor"); p points at the end of field 2 */
    int field = 2;
    for (; *p && field < 39; p++)
        if (*p == ' ')
            field++;
    return *p ? atoi(p) : -1;
}

static void sample_affinity(PGconn *c) {
    if (!account_on || (affinity_tick++ & 31) != 0)
        return;
    int cpu = sched_getcpu();
    int backend_cpu = backend_last_cpu(PQbackendPID(c));
    if (cpu < 0 || backend_cpu < 0)
        return;
    atomic_fetch_add_explicit(&affinity_samples, 1, memory_order_relaxed);
    if (cpu == backend_cpu)
        atomic_fetch_add_explicit(&affinity_same, 1, memory_order_relaxed);
}

static void account(int64_t got, int64_t sent, int64_t answered,
                    int64_t released) {
    if (!account_on)
        return;
    atomic_fetch_add_explicit(&leased_ns_sum, released - got,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&in_flight_ns_sum, answered - sent,
                              memory_order_relaxed);
}

typedef struct pool_ctx {
    ds_pool *pool;
} pool_ctx;

static bool op_acquire_release(void *p) {
    pool_ctx *c = p;
    ds_conn *conn;
    if (ds_pool_acquire(c->pool, &conn, NULL) != DS_OK)
        return false;
    ds_pool_release(conn);
    return true;
}

static bool op_pool_select1(void *p) {
    pool_ctx *c = p;
    ds_conn *conn;
    ds_error err;
    if (ds_pool_acquire(c->pool, &conn, &err) != DS_OK) {
        fprintf(stderr, "acquire: %s\n", err.message);
        return false;
    }
    int64_t got = account_on ? bench_now_ns() : 0;
    ds_status st = ds_sql_exec(conn, "SELECT 1", NULL, 0, NULL, &err);
    int64_t answered = account_on ? bench_now_ns() : 0;
    sample_affinity(ds_pool_conn_pg(conn));
    ds_pool_release(conn);
    if (account_on)
        account(got, got, answered, bench_now_ns());
    if (st != DS_OK)
        fprintf(stderr, "exec: %s\n", err.message);
    return st == DS_OK;
}

/* The hand-written baseline: one connection per thread, the statement
 * prepared once, binary results, exactly what the pool's prepared mode does. */
static bool exec_raw_select1(PGconn *c) {
    PGresult *r = PQexecPrepared(c, "s1", 0, NULL, NULL, NULL, 1);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static bool op_raw_select1(void *p) {
    if (!account_on)
        return exec_raw_select1(p);
    int64_t sent = bench_now_ns();
    bool ok = exec_raw_select1(p);
    int64_t answered = bench_now_ns();
    sample_affinity(p);
    account(sent, sent, answered, answered); /* owned: always leased */
    return ok;
}

static PGconn *raw_connect(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "raw connect: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(PQprepare(c, "s1", "SELECT 1", 0, NULL));
    return c;
}

/* The independent anchor for oversubscription: the pool an expert writes
 * by hand around raw libpq connections. Releasing pushes the connection
 * and signals one sleeper; whoever locks first takes it (so a thread that
 * comes straight back usually does: no fairness, no bound on a wait). */
enum { HANDPOOL_MAX = 4 };
typedef struct handpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    PGconn *free_conns[HANDPOOL_MAX];
    int nfree;
} handpool;

static PGconn *handpool_acquire(handpool *hp) {
    pthread_mutex_lock(&hp->mu);
    while (hp->nfree == 0)
        pthread_cond_wait(&hp->cv, &hp->mu);
    PGconn *c = hp->free_conns[--hp->nfree];
    pthread_mutex_unlock(&hp->mu);
    return c;
}

static void handpool_release(handpool *hp, PGconn *c) {
    pthread_mutex_lock(&hp->mu);
    hp->free_conns[hp->nfree++] = c;
    pthread_cond_signal(&hp->cv);
    pthread_mutex_unlock(&hp->mu);
}

static bool op_handpool_select1(void *p) {
    handpool *hp = p;
    PGconn *c = handpool_acquire(hp);
    int64_t got = account_on ? bench_now_ns() : 0;
    bool ok = exec_raw_select1(c);
    int64_t answered = account_on ? bench_now_ns() : 0;
    sample_affinity(c);
    handpool_release(hp, c);
    if (account_on)
        account(got, got, answered, bench_now_ns());
    return ok;
}

/* A backend's CPU time and run-queue wait in ns (/proc/<pid>/schedstat),
 * false when it is not a local process. */
static bool backend_sched_ns(int pid, long long *cpu, long long *runq) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fscanf(f, "%lld %lld", cpu, runq) == 2;
    fclose(f);
    return ok;
}

/* A backend's CPU migrations so far (/proc/<pid>/sched), 0 if unknown. */
static long long backend_migrations(int pid) {
    char path[64], line[256];
    long long n = 0;
    snprintf(path, sizeof path, "/proc/%d/sched", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "se.nr_migrations", 16) == 0) {
            const char *colon = strchr(line, ':');
            n = colon ? atoll(colon + 1) : 0;
        }
    fclose(f);
    return n;
}

/* The whole machine's idle and total jiffies (/proc/stat). */
static void machine_jiffies(long long *idle, long long *total) {
    long long v[10] = {0};
    *idle = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld",
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8],
               &v[9]) >= 4) {
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *idle = v[3] + v[4];
    }
    fclose(f);
}

/* How often any CPU has gone idle so far (cpuidle entries of every state
 * of every CPU; 0 where the kernel does not say). A CPU that idles has to
 * be woken for the next query, which under a hypervisor costs far more
 * than handing work to a busy one. */
static long long machine_idle_entries(void) {
    long long sum = 0;
    for (int cpu = 0; cpu < 256; cpu++) {
        bool any = false;
        for (int state = 0; state < 16; state++) {
            char path[96];
            snprintf(path, sizeof path,
                     "/sys/devices/system/cpu/cpu%d/cpuidle/state%d/usage", cpu,
                     state);
            FILE *f = fopen(path, "r");
            if (!f)
                break;
            long long n = 0;
            if (fscanf(f, "%lld", &n) == 1)
                sum += n;
            fclose(f);
            any = true;
        }
        if (!any)
            break;
    }
    return sum;
}

/* What one side costs per query over a separate run, counted rather than
 * timed where it can be: context switches and CPU of this process, CPU
 * and run-queue wait of the 4 backends, and the share of the machine's
 * CPU time left idle (other users of the machine included). */
typedef struct side_profile {
    double csw_op, client_us_op, client_sys_us_op, server_us_op,
        server_runq_us_op, server_migrations_op, idle_share;
    double in_flight_share, held_share; /* of 4 connections x wall time */
    double same_cpu_share; /* sampled queries answered on the backend's CPU */
    double idle_entries_op; /* CPUs going idle, per query */
    double drain_ms; /* the run's wall time past its deadline: the last
                        queries of threads still queued at the deadline */
    double alone_ops_s; /* the side's throughput in this run of its own */
} side_profile;

static side_profile profile_side(int threads, double seconds, bench_op_fn fn,
                                 void **ctx, const int *pids, int npids) {
    side_profile out = {0}, none = {0};
    struct rusage before, after;
    long long cpu0 = 0, rq0 = 0, cpu1 = 0, rq1 = 0, idle0, tot0, idle1, tot1;
    bool local = true;
    long long mig0 = 0, mig1 = 0;
    for (int i = 0; i < npids; i++) {
        long long c = 0, r = 0;
        local = local && backend_sched_ns(pids[i], &c, &r);
        cpu0 += c, rq0 += r;
        mig0 += backend_migrations(pids[i]);
    }
    bench_hist *h = calloc(1, sizeof *h);
    bool failed = false;
    machine_jiffies(&idle0, &tot0);
    long long idle_entries0 = machine_idle_entries();
    getrusage(RUSAGE_SELF, &before);
    atomic_store(&leased_ns_sum, 0);
    atomic_store(&in_flight_ns_sum, 0);
    atomic_store(&affinity_samples, 0);
    atomic_store(&affinity_same, 0);
    account_on = true;
    int64_t wall0 = bench_now_ns();
    double alone_ops_s = bench_run(threads, seconds, fn, ctx, h, &failed);
    double wall_ns = (double)(bench_now_ns() - wall0);
    out.drain_ms = (wall_ns - seconds * 1e9) / 1e6;
    out.alone_ops_s = alone_ops_s;
    account_on = false;
    getrusage(RUSAGE_SELF, &after);
    machine_jiffies(&idle1, &tot1);
    long long idle_entries1 = machine_idle_entries();
    out.in_flight_share = (double)atomic_load(&in_flight_ns_sum) / (4 * wall_ns);
    out.held_share = (double)atomic_load(&leased_ns_sum) / (4 * wall_ns);
    long long samples = atomic_load(&affinity_samples);
    out.same_cpu_share =
        samples ? (double)atomic_load(&affinity_same) / (double)samples : 0;
    for (int i = 0; i < npids; i++) {
        long long c = 0, r = 0;
        local = local && backend_sched_ns(pids[i], &c, &r);
        cpu1 += c, rq1 += r;
        mig1 += backend_migrations(pids[i]);
    }
    double ops = (double)h->count;
    free(h);
    if (!ops || failed)
        return none;
    long sw = (after.ru_nvcsw - before.ru_nvcsw) +
              (after.ru_nivcsw - before.ru_nivcsw);
    double client_us =
        (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec +
                 after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1e6 +
        (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec +
                 after.ru_stime.tv_usec - before.ru_stime.tv_usec);
    double sys_us =
        (double)(after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1e6 +
        (double)(after.ru_stime.tv_usec - before.ru_stime.tv_usec);
    out.client_sys_us_op = sys_us / ops;
    out.csw_op = (double)sw / ops;
    out.idle_entries_op = (double)(idle_entries1 - idle_entries0) / ops;
    out.client_us_op = client_us / ops;
    if (local) {
        out.server_us_op = (double)(cpu1 - cpu0) / 1e3 / ops;
        out.server_runq_us_op = (double)(rq1 - rq0) / 1e3 / ops;
        out.server_migrations_op = (double)(mig1 - mig0) / ops;
    }
    if (tot1 > tot0)
        out.idle_share = (double)(idle1 - idle0) / (double)(tot1 - tot0);
    return out;
}

static ds_pool *open_pool(const char *url, int size) {
    ds_config *cfg;
    ds_pool *pool;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "acquire_timeout_ms", 30000, &err) != DS_OK ||
        (getenv("BENCH_POOL_OVERTAKE_MS") &&
         ds_config_set(cfg, "pool_overtake_ms", getenv("BENCH_POOL_OVERTAKE_MS"),
                       &err) != DS_OK) ||
        ds_pool_open(cfg, &pool, &err) != DS_OK) {
        fprintf(stderr, "pool: %s\n", err.message);
        exit(1);
    }
    ds_config_free(cfg);
    return pool;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v; its median. */
static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { SIDES = 3 };
typedef struct run_side {
    int threads;
    bench_op_fn fn;
    void **ctx;
    double *ops_s; /* per round */
    bench_hist hist;
    bool failed;
} run_side;

/* Rounds of the three sides in rotating order (0 1 2, 1 2 0, 2 0 1, ...),
 * so that each meets the machine as each other left it equally often. */
static void run_rotating(int rounds, double seconds, run_side *sides) {
    bench_crew *crew[SIDES];
    for (int k = 0; k < SIDES; k++)
        crew[k] = bench_crew_new(sides[k].threads, sides[k].fn, sides[k].ctx);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < SIDES; k++) {
            int i = (r + k) % SIDES;
            run_side *sd = &sides[i];
            sd->ops_s[r] = bench_crew_run(crew[i], seconds, &sd->hist, &sd->failed);
        }
    for (int k = 0; k < SIDES; k++)
        bench_crew_free(crew[k]);
}

/* The median, lowest and highest of the per-round ratios a / b into
 * `out`, with a's median throughput and latencies. */
static void ratio_result(int rounds, const run_side *a, const run_side *b,
                         bench_result *out) {
    double *v = calloc((size_t)rounds, sizeof *v), *t = calloc((size_t)rounds, sizeof *t);
    for (int r = 0; r < rounds; r++) {
        v[r] = b->ops_s[r] > 0 ? a->ops_s[r] / b->ops_s[r] : 0.0;
        t[r] = a->ops_s[r];
    }
    memset(out, 0, sizeof *out);
    out->ratio_rounds = rounds;
    out->ratio = median_of(v, rounds);
    out->ratio_min = v[0];
    out->ratio_max = v[rounds - 1];
    out->ops_s = median_of(t, rounds);
    out->ops = a->hist.count;
    out->p50_us = bench_hist_percentile_us(&a->hist, 0.50);
    out->p99_us = bench_hist_percentile_us(&a->hist, 0.99);
    free(v);
    free(t);
}

static void format_profile(char *buf, size_t cap, const char *prefix,
                           const side_profile *pr) {
    snprintf(buf, cap,
             "%scsw_op=%.2f %sclient_us_op=%.2f %sclient_sys_us_op=%.2f "
             "%sserver_us_op=%.2f %sserver_runq_us_op=%.2f "
             "%sserver_migrations_op=%.3f %sidle_share=%.3f "
             "%sconn_in_flight=%.3f %sconn_held=%.3f %ssame_cpu=%.3f "
             "%sidle_entries_op=%.3f %sdrain_ms=%.2f %salone_ops_s=%.0f",
             prefix, pr->csw_op, prefix, pr->client_us_op, prefix,
             pr->client_sys_us_op, prefix,
             pr->server_us_op, prefix, pr->server_runq_us_op, prefix,
             pr->server_migrations_op, prefix, pr->idle_share, prefix,
             pr->in_flight_share, prefix, pr->held_share, prefix,
             pr->same_cpu_share, prefix, pr->idle_entries_op, prefix,
             pr->drain_ms, prefix, pr->alone_ops_s);
}

/* Ends one thread count of shared4: its raw connections, hand pool, pool
 * and, when split, the placement. */
static void shared4_end(void **raw, handpool *hp, ds_pool *pool,
                        bool split) {
    for (int i = 0; i < 4; i++)
        PQfinish(raw[i]);
    pthread_cond_destroy(&hp->cv);
    pthread_mutex_destroy(&hp->mu);
    ds_pool_close(pool);
    if (split)
        bench_place_unsplit();
}

/* BENCH_ONLY=<case> runs one case; BENCH_ROUNDS sets the A B rounds
 * (more, shorter rounds follow a loaded machine's drift more closely). */
static bool selected(const char *name) {
    const char *only = getenv("BENCH_ONLY");
    return !only || !*only || strcmp(only, name) == 0;
}

int main(void) {
    const char *url = bench_env("DATABASE_URL");
    double secs = bench_seconds(15);
    const char *rounds_env = getenv("BENCH_ROUNDS");
    int rounds = rounds_env && atoi(rounds_env) > 0 ? atoi(rounds_env) : 15;
    double side = secs / (2.0 * rounds);
    char extra[2048];
    bench_pool_counters_to_stderr();

    /* 1. uncontended acquire + release */
    if (selected("acquire_release")) {
        ds_pool *pool = open_pool(url, 1);
        pool_ctx pc = {pool};
        void *ctx[1] = {&pc};
        bench_result r;
        bench_ab(rounds, side, 1, op_acquire_release, ctx, 0, NULL, NULL, &r, NULL);
        snprintf(extra, sizeof extra, "ns_op=%.0f", 1e9 / r.ops_s);
        bench_print(PROGRAM, "acquire_release", 1, &r, NULL, extra);
        ds_pool_close(pool);
    }

    /* 2. 8 threads, SELECT 1: pool of 8 vs 8 raw connections */
    if (selected("select1")) {
        enum { T = 8 };
        ds_pool *pool = open_pool(url, T);
        pool_ctx pc = {pool};
        void *pctx[T], *rctx[T];
        for (int i = 0; i < T; i++) {
            pctx[i] = &pc;
            rctx[i] = raw_connect(url);
        }
        bench_result ours, base;
        bench_ab(rounds, side, T, op_pool_select1, pctx, T, op_raw_select1, rctx,
                 &ours, &base);
        if (ours.failed || base.failed)
            return 1;
        bench_print(PROGRAM, "select1", T, &ours, &base, "connections=8");
        for (int i = 0; i < T; i++)
            PQfinish(rctx[i]);
        ds_pool_close(pool);
    }

    /* 3. 8, 16, 64 threads sharing 4 connections vs 4 threads on 4 raw
     * ones, and the same threads sharing those 4 raw connections through
     * the hand-written pool; a fresh pool per count, so its wait
     * statistics are its own */
    static const int shared_threads[] = {8, 16, 64};
    enum { NCOUNTS = sizeof shared_threads / sizeof shared_threads[0] };
    for (size_t k = 0; selected("shared4") && k < 2 * NCOUNTS; k++) {
        enum { MAXT = 64 };
        int threads = shared_threads[k % NCOUNTS];
        bool split = k >= NCOUNTS;
        const char *only_threads = getenv("BENCH_SHARED4_THREADS");
        if ((only_threads && *only_threads && atoi(only_threads) != threads) ||
            !bench_placement_selected(split ? "split" : "shared"))
            continue;
        const char *sfx = split ? "_split" : "";
        char cname[64];
        ds_pool *pool = open_pool(url, 4);
        pool_ctx pc = {pool};
        handpool hp = {.nfree = 0};
        pthread_mutex_init(&hp.mu, NULL);
        pthread_cond_init(&hp.cv, NULL);
        void *pctx[MAXT], *rctx[4], *hctx[MAXT];
        int pool_pid[4], raw_pid[4];
        ds_conn *held[4];
        for (int i = 0; i < 4; i++) {
            if (ds_pool_acquire(pool, &held[i], NULL) != DS_OK)
                return 1;
            pool_pid[i] = PQbackendPID(ds_pool_conn_pg(held[i]));
        }
        for (int i = 0; i < 4; i++)
            ds_pool_release(held[i]);
        for (int i = 0; i < threads; i++)
            pctx[i] = &pc, hctx[i] = &hp;
        for (int i = 0; i < 4; i++) {
            rctx[i] = raw_connect(url);
            raw_pid[i] = PQbackendPID(rctx[i]);
            hp.free_conns[hp.nfree++] = rctx[i];
        }
        if (split) {
            /* client threads on half the CPUs, these 8 backends on the
             * other half: as with a server elsewhere */
            int pids[8];
            char why[160];
            memcpy(pids, pool_pid, sizeof pool_pid);
            memcpy(pids + 4, raw_pid, sizeof raw_pid);
            if (!bench_place_split(pids, 8, why, sizeof why)) {
                printf("# shared4_split threads=%d skipped: %s\n", threads, why);
                shared4_end(rctx, &hp, pool, false);
                continue;
            }
        }
        const char *only_side = getenv("BENCH_SHARED4_SIDE");
        if (only_side && *only_side) {
            /* One side alone for BENCH_SECONDS (to profile it with perf):
             * pool, raw or hand. */
            bool raw = strcmp(only_side, "raw") == 0;
            bool hand = strcmp(only_side, "hand") == 0;
            side_profile pr = profile_side(
                raw ? 4 : threads, secs,
                raw ? op_raw_select1 : hand ? op_handpool_select1 : op_pool_select1,
                raw ? rctx : hand ? hctx : pctx, raw || hand ? raw_pid : pool_pid, 4);
            format_profile(extra, sizeof extra, "", &pr);
            printf("# shared4%s side=%s threads=%d %s\n", sfx, only_side,
                   raw ? 4 : threads, extra);
            snprintf(extra, sizeof extra, "shared4%s side=%s threads=%d", sfx,
                     only_side, raw ? 4 : threads);
            bench_pool_counters_label(extra);
            shared4_end(rctx, &hp, pool, split);
            continue;
        }
        double per_round[SIDES][64];
        run_side sides[SIDES] = {
            {threads, op_pool_select1, pctx, per_round[0], {{0}, 0}, false},
            {4, op_raw_select1, rctx, per_round[1], {{0}, 0}, false},
            {threads, op_handpool_select1, hctx, per_round[2], {{0}, 0}, false},
        };
        int r3 = rounds > 64 ? 64 : rounds;
        run_rotating(r3, side, sides);
        if (sides[0].failed || sides[1].failed || sides[2].failed)
            return 1;
        bench_result ours, base, hand, vs_hand;
        ratio_result(r3, &sides[0], &sides[1], &ours);
        ratio_result(r3, &sides[1], &sides[1], &base);
        ratio_result(r3, &sides[2], &sides[1], &hand);
        ratio_result(r3, &sides[0], &sides[2], &vs_hand);
        ds_pool_stats st = DS_POOL_STATS_INIT;
        if (ds_pool_stats_get(pool, &st, NULL) != DS_OK)
            return 1;
        side_profile pp = profile_side(threads, side, op_pool_select1, pctx,
                                       pool_pid, 4);
        side_profile rp = profile_side(4, side, op_raw_select1, rctx, raw_pid, 4);
        side_profile hpp = profile_side(threads, side, op_handpool_select1,
                                        hctx, raw_pid, 4);
        char pool_prof[512], raw_prof[512], hand_prof[512];
        format_profile(pool_prof, sizeof pool_prof, "", &pp);
        format_profile(raw_prof, sizeof raw_prof, "baseline_", &rp);
        format_profile(hand_prof, sizeof hand_prof, "", &hpp);
        snprintf(extra, sizeof extra,
                 "connections=4 baseline_threads=4 vs_handpool=%.3f %s %s "
                 "acquire_wait_p50_us=%lld acquire_wait_p99_us=%lld "
                 "acquire_wait_max_us=%lld overtaken_max=%llu",
                 vs_hand.ratio, pool_prof, raw_prof,
                 (long long)st.acquire_wait_p50_us,
                 (long long)st.acquire_wait_p99_us,
                 (long long)st.acquire_wait_max_us,
                 (unsigned long long)st.waiter_overtaken_max);
        snprintf(cname, sizeof cname, "shared4%s", sfx);
        bench_print(PROGRAM, cname, threads, &ours, &base, extra);
        snprintf(extra, sizeof extra,
                 "connections=4 baseline_threads=4 pool=hand_written_mutex_condvar %s",
                 hand_prof);
        snprintf(cname, sizeof cname, "shared4_handpool%s", sfx);
        bench_print(PROGRAM, cname, threads, &hand, &base, extra);
        snprintf(extra, sizeof extra, "shared4%s threads=%d", sfx, threads);
        bench_pool_counters_label(extra);
        shared4_end(rctx, &hp, pool, split);
    }
    return 0;
}
