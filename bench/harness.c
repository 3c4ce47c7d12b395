#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include "harness.h"

#include <datastore/datastore.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double bench_seconds(double def) {
    const char *v = getenv("BENCH_SECONDS");
    double s = v && *v ? atof(v) : def;
    return s > 0 ? s : def;
}

const char *bench_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "%s is not set (make bench-run starts local services)\n",
                name);
        exit(2);
    }
    return v;
}

/* log-linear: 8 sub-buckets per power of two of nanoseconds */
static int bucket_of(int64_t ns) {
    if (ns < 8)
        return ns < 0 ? 0 : (int)ns;
    int lg = 63 - __builtin_clzll((unsigned long long)ns);
    int sub = (int)((ns >> (lg - 3)) & 7);
    int b = (lg - 2) * 8 + sub;
    return b > 255 ? 255 : b;
}

static double bucket_mid_ns(int b) {
    if (b < 8)
        return b;
    int lg = b / 8 + 2, sub = b % 8;
    double lo = (double)((int64_t)(8 + sub) << (lg - 3));
    double width = (double)((int64_t)1 << (lg - 3));
    return lo + width / 2;
}

void bench_hist_add(bench_hist *h, int64_t ns) {
    h->bucket[bucket_of(ns)]++;
    h->count++;
}

double bench_hist_percentile_us(const bench_hist *h, double q) {
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)(h->count - 1)), seen = 0;
    for (int b = 0; b < 256; b++) {
        seen += h->bucket[b];
        if (seen > rank)
            return bucket_mid_ns(b) / 1000.0;
    }
    return 0;
}

typedef struct worker {
    bench_crew *crew;
    bench_op_fn fn;
    void *ctx;
    bench_hist hist;
    uint64_t ops, in_window;
    bool failed;
} worker;

/* Threads that live across runs, parked on a condition variable between
 * them: an application's threads are long-lived, and a thread's first
 * queries (cold caches, no history in the library's per-thread state)
 * would otherwise be part of every round. */
struct bench_crew {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int threads, running;
    unsigned generation; /* bumped to start a run */
    bool quit;
    int64_t deadline;
    worker *w;
    pthread_t *th;
};

static void crew_work(worker *w, int64_t deadline) {
    int64_t now = bench_now_ns();
    while (now < deadline) {
        int64_t t0 = now;
        if (!w->fn(w->ctx)) {
            w->failed = true;
            break;
        }
        now = bench_now_ns();
        bench_hist_add(&w->hist, now - t0);
        w->ops++;
        if (now <= deadline)
            w->in_window++;
    }
}

static void *crew_main(void *p) {
    worker *w = p;
    bench_crew *c = w->crew;
    unsigned seen = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->generation == seen && !c->quit)
            pthread_cond_wait(&c->go, &c->mu);
        if (c->quit)
            break;
        seen = c->generation;
        int64_t deadline = c->deadline;
        pthread_mutex_unlock(&c->mu);
        crew_work(w, deadline);
        pthread_mutex_lock(&c->mu);
        if (--c->running == 0)
            pthread_cond_signal(&c->done);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

bench_crew *bench_crew_new(int threads, bench_op_fn fn, void **ctx) {
    bench_crew *c = calloc(1, sizeof *c);
    c->w = calloc((size_t)threads, sizeof *c->w);
    c->th = calloc((size_t)threads, sizeof *c->th);
    c->threads = threads;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->go, NULL);
    pthread_cond_init(&c->done, NULL);
    for (int i = 0; i < threads; i++) {
        c->w[i] = (worker){.crew = c, .fn = fn, .ctx = ctx[i]};
        /* a missing thread would leave every run waiting for it */
        if (pthread_create(&c->th[i], NULL, crew_main, &c->w[i]) != 0) {
            fprintf(stderr, "bench: cannot start thread %d of %d\n", i + 1,
                    threads);
            exit(1);
        }
    }
    return c;
}

/* BENCH_COUNT_DRAIN=1: every operation over the run's whole wall time,
 * the drain after the deadline included (the accounting before crews). */
static bool count_drain(void) {
    const char *v = getenv("BENCH_COUNT_DRAIN");
    return v && strcmp(v, "1") == 0;
}

double bench_crew_run(bench_crew *c, double seconds, bench_hist *h,
                      bool *failed) {
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->threads; i++) {
        worker *w = &c->w[i];
        memset(&w->hist, 0, sizeof w->hist);
        w->ops = w->in_window = 0;
        w->failed = false;
    }
    c->running = c->threads;
    int64_t start = bench_now_ns();
    c->deadline = start + (int64_t)(seconds * 1e9);
    c->generation++;
    pthread_cond_broadcast(&c->go);
    while (c->running > 0)
        pthread_cond_wait(&c->done, &c->mu);
    int64_t end = bench_now_ns();
    uint64_t in_window = 0, all = 0;
    for (int i = 0; i < c->threads; i++) {
        worker *w = &c->w[i];
        in_window += w->in_window;
        all += w->ops;
        for (int b = 0; b < 256; b++)
            h->bucket[b] += w->hist.bucket[b];
        h->count += w->hist.count;
        if (w->failed)
            *failed = true;
    }
    pthread_mutex_unlock(&c->mu);
    if (count_drain())
        return end > start ? (double)all / ((double)(end - start) / 1e9) : 0;
    return (double)in_window / seconds;
}

void bench_crew_free(bench_crew *c) {
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->quit = true;
    pthread_cond_broadcast(&c->go);
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->threads; i++)
        pthread_join(c->th[i], NULL);
    pthread_cond_destroy(&c->go);
    pthread_cond_destroy(&c->done);
    pthread_mutex_destroy(&c->mu);
    free(c->w);
    free(c->th);
    free(c);
}

double bench_run(int threads, double seconds, bench_op_fn fn, void **ctx,
                 bench_hist *h, bool *failed) {
    bench_crew *c = bench_crew_new(threads, fn, ctx);
    double ops_s = bench_crew_run(c, seconds, h, failed);
    bench_crew_free(c);
    return ops_s;
}

static int64_t process_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_ab(int rounds, double seconds_per_side, int threads_a,
              bench_op_fn a, void **ctx_a, int threads_b, bench_op_fn b,
              void **ctx_b, bench_result *ra, bench_result *rb) {
    double *va = calloc((size_t)rounds, sizeof *va);
    double *vb = calloc((size_t)rounds, sizeof *vb);
    double *vr = calloc((size_t)rounds, sizeof *vr);
    bench_hist *ha = calloc(1, sizeof *ha), *hb = calloc(1, sizeof *hb);
    memset(ra, 0, sizeof *ra);
    if (rb)
        memset(rb, 0, sizeof *rb);
    int64_t cpu_a = 0, cpu_b = 0;
    bench_crew *crew_a = bench_crew_new(threads_a, a, ctx_a);
    bench_crew *crew_b = b ? bench_crew_new(threads_b, b, ctx_b) : NULL;
    for (int r = 0; r < rounds; r++) {
        /* A B, then B A: whichever side runs first in a round meets the
         * machine as the previous round left it (caches, other work), so
         * the sides take turns at it. */
        for (int k = 0; k < 2; k++) {
            bool run_a = (k == 0) == (r % 2 == 0);
            int64_t c0 = process_cpu_ns();
            if (run_a) {
                va[r] = bench_crew_run(crew_a, seconds_per_side, ha, &ra->failed);
                cpu_a += process_cpu_ns() - c0;
            } else if (b) {
                vb[r] = bench_crew_run(crew_b, seconds_per_side, hb, &rb->failed);
                cpu_b += process_cpu_ns() - c0;
            }
        }
        if (b)
            vr[r] = vb[r] > 0 ? va[r] / vb[r] : 0.0;
    }
    bench_crew_free(crew_a);
    bench_crew_free(crew_b);
    if (b && rounds > 0) {
        ra->ratio_rounds = rounds;
        ra->ratio = median(vr, rounds); /* sorts vr */
        ra->ratio_min = vr[0];
        ra->ratio_max = vr[rounds - 1];
    }
    ra->ops_s = median(va, rounds);
    ra->ops = ha->count;
    ra->cpu_us_op = ha->count ? (double)cpu_a / 1e3 / (double)ha->count : 0;
    ra->p50_us = bench_hist_percentile_us(ha, 0.50);
    ra->p99_us = bench_hist_percentile_us(ha, 0.99);
    if (b) {
        rb->ops_s = median(vb, rounds);
        rb->ops = hb->count;
        rb->cpu_us_op = hb->count ? (double)cpu_b / 1e3 / (double)hb->count : 0;
        rb->p50_us = bench_hist_percentile_us(hb, 0.50);
        rb->p99_us = bench_hist_percentile_us(hb, 0.99);
    }
    free(va);
    free(vb);
    free(vr);
    free(ha);
    free(hb);
}

void bench_print(const char *program, const char *case_name, int threads,
                 const bench_result *ours, const bench_result *base,
                 const char *extra) {
    printf("BENCH %s %s threads=%d ops_s=%.0f p50_us=%.1f p99_us=%.1f", program,
           case_name, threads, ours->ops_s, ours->p50_us, ours->p99_us);
    if (base && ours->ratio_rounds > 0)
        printf(" baseline_ops_s=%.0f ratio=%.3f ratio_min=%.3f ratio_max=%.3f "
               "rounds=%d",
               base->ops_s, ours->ratio, ours->ratio_min, ours->ratio_max,
               ours->ratio_rounds);
    else if (base)
        printf(" baseline_ops_s=%.0f ratio=%.3f", base->ops_s,
               base->ops_s > 0 ? ours->ops_s / base->ops_s : 0.0);
    if (extra && *extra)
        printf(" %s", extra);
    printf("\n");
    fflush(stdout);
}

static char counters_label[64];

static void print_counters(void *ud, ds_log_level level, const char *module,
                           const char *msg) {
    (void)ud, (void)level;
    if (strcmp(module, "pool") == 0 && strncmp(msg, "counters:", 9) == 0)
        fprintf(stderr, "# %s %s\n", counters_label, msg);
}

void bench_pool_counters_to_stderr(void) {
    ds_log_set_fn(print_counters, NULL, DS_LOG_INFO);
}

void bench_pool_counters_label(const char *label) {
    snprintf(counters_label, sizeof counters_label, "%s", label);
}

/* ---- placement ---------------------------------------------------------- */

static cpu_set_t place_all; /* this process's CPUs before any split */
static bool place_saved;
static int place_pids[64], place_npids; /* backends pinned by the split */

/* Applies `set` to every thread of this process (threads started later
 * inherit it from the thread that starts them). */
static bool place_self(const cpu_set_t *set, char *why, size_t why_len) {
    DIR *d = opendir("/proc/self/task");
    if (!d) {
        snprintf(why, why_len, "cannot list this process's threads: %s",
                 strerror(errno));
        return false;
    }
    bool ok = true;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        if (sched_setaffinity(tid, sizeof *set, set) != 0 && errno != ESRCH) {
            snprintf(why, why_len, "cannot pin thread %d: %s", (int)tid,
                     strerror(errno));
            ok = false;
        }
    }
    closedir(d);
    return ok;
}

/* Only a local PostgreSQL process is pinned: a backend of a remote server
 * has a PID of that server's, which may name an unrelated process here. */
static bool local_backend(int pid) {
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(comm, sizeof comm, f) && strncmp(comm, "postgres", 8) == 0;
    fclose(f);
    return ok;
}

bool bench_place_split(const int *pids, int n, char *why, size_t why_len) {
    if (!place_saved) {
        if (sched_getaffinity(0, sizeof place_all, &place_all) != 0) {
            snprintf(why, why_len, "sched_getaffinity: %s", strerror(errno));
            return false;
        }
        place_saved = true;
    }
    int cpus[CPU_SETSIZE], ncpu = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &place_all))
            cpus[ncpu++] = c;
    if (ncpu < 2) {
        snprintf(why, why_len, "one CPU: nothing to split");
        return false;
    }
    cpu_set_t client, server;
    CPU_ZERO(&client);
    CPU_ZERO(&server);
    for (int i = 0; i < ncpu; i++)
        CPU_SET(cpus[i], i < ncpu / 2 ? &client : &server);
    for (int i = 0; i < n; i++) {
        if (!local_backend(pids[i])) {
            snprintf(why, why_len, "backend %d is not a local postgres process",
                     pids[i]);
            bench_place_unsplit();
            return false;
        }
        if (sched_setaffinity(pids[i], sizeof server, &server) != 0) {
            snprintf(why, why_len, "cannot pin backend %d: %s", pids[i],
                     strerror(errno));
            bench_place_unsplit();
            return false;
        }
        if (place_npids < (int)(sizeof place_pids / sizeof place_pids[0]))
            place_pids[place_npids++] = pids[i];
    }
    if (!place_self(&client, why, why_len)) {
        bench_place_unsplit();
        return false;
    }
    return true;
}

void bench_place_unsplit(void) {
    char why[160];
    if (place_saved && !place_self(&place_all, why, sizeof why))
        fprintf(stderr, "# placement not restored: %s\n", why);
    /* backends still connected (a process that ended is gone: ESRCH) */
    for (int i = 0; i < place_npids; i++)
        if (local_backend(place_pids[i]))
            sched_setaffinity(place_pids[i], sizeof place_all, &place_all);
    place_npids = 0;
}

bool bench_placement_selected(const char *name) {
    const char *v = getenv("BENCH_PLACEMENT");
    if (!v || !*v || strcmp(v, "both") == 0)
        return true;
    return strcmp(v, name) == 0;
}
