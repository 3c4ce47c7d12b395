#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
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
    bench_op_fn fn;
    void *ctx;
    int64_t deadline;
    bench_hist hist;
    uint64_t ops;
    bool failed;
    pthread_barrier_t *start;
} worker;

static void *worker_main(void *p) {
    worker *w = p;
    pthread_barrier_wait(w->start);
    int64_t now = bench_now_ns();
    while (now < w->deadline) {
        int64_t t0 = now;
        if (!w->fn(w->ctx)) {
            w->failed = true;
            break;
        }
        now = bench_now_ns();
        bench_hist_add(&w->hist, now - t0);
        w->ops++;
    }
    return NULL;
}

double bench_run(int threads, double seconds, bench_op_fn fn, void **ctx,
                 bench_hist *h, bool *failed) {
    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i].fn = fn;
        w[i].ctx = ctx[i];
        w[i].start = &start;
        w[i].deadline = INT64_MAX;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < threads; i++)
        w[i].deadline = t0 + (int64_t)(seconds * 1e9);
    atomic_thread_fence(memory_order_seq_cst);
    pthread_barrier_wait(&start);
    uint64_t ops = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        ops += w[i].ops;
        for (int b = 0; b < 256; b++)
            h->bucket[b] += w[i].hist.bucket[b];
        h->count += w[i].hist.count;
        if (w[i].failed)
            *failed = true;
    }
    double elapsed = (double)(bench_now_ns() - t0) / 1e9;
    pthread_barrier_destroy(&start);
    free(w);
    free(th);
    return (double)ops / elapsed;
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
    for (int r = 0; r < rounds; r++) {
        /* A B, then B A: whichever side runs first in a round meets the
         * machine as the previous round left it (caches, other work), so
         * the sides take turns at it. */
        for (int k = 0; k < 2; k++) {
            bool run_a = (k == 0) == (r % 2 == 0);
            int64_t c0 = process_cpu_ns();
            if (run_a) {
                va[r] = bench_run(threads_a, seconds_per_side, a, ctx_a, ha,
                                  &ra->failed);
                cpu_a += process_cpu_ns() - c0;
            } else if (b) {
                vb[r] = bench_run(threads_b, seconds_per_side, b, ctx_b, hb,
                                  &rb->failed);
                cpu_b += process_cpu_ns() - c0;
            }
        }
        if (b)
            vr[r] = vb[r] > 0 ? va[r] / vb[r] : 0.0;
    }
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
