/* Shared benchmark harness: threads driving an operation for a time,
 * latency histograms, interleaved A/B rounds and the BENCH line format of
 * ../shared/BENCH.md. */
#ifndef DS_BENCH_HARNESS_H
#define DS_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One operation; returns false on error (the run then stops). */
typedef bool (*bench_op_fn)(void *ctx);

typedef struct bench_hist {
    uint64_t bucket[256];
    uint64_t count;
} bench_hist;

typedef struct bench_result {
    double ops_s;     /* median over rounds                     */
    double p50_us;    /* over every operation of every round    */
    double p99_us;
    uint64_t ops;     /* total operations                       */
    bool failed;
    /* Set on A's result by bench_ab with a baseline: the median, lowest
     * and highest of the per-round ratios A/B. A ratio taken within one
     * round sees the same machine drift on both sides, so its median is
     * steadier than the ratio of the two medians on a shared machine. */
    int ratio_rounds;
    double ratio, ratio_min, ratio_max;
    /* Set by bench_ab: this process's CPU time (every thread) while the
     * side ran, per operation. A loaded machine stretches wall time far
     * more than CPU time, so this compares the two sides' client work
     * where throughput cannot. */
    double cpu_us_op;
} bench_result;

int64_t bench_now_ns(void);
/* BENCH_SECONDS (time per case), default `def`. */
double bench_seconds(double def);
const char *bench_env(const char *name); /* exits with a message when unset */

void bench_hist_add(bench_hist *h, int64_t ns);
double bench_hist_percentile_us(const bench_hist *h, double q);

/* `threads` threads, thread i calling fn(ctx[i]) for the length of each
 * run and parked between runs, so that rounds measure threads as an
 * application has them (long-lived), not threads starting up. */
typedef struct bench_crew bench_crew;
bench_crew *bench_crew_new(int threads, bench_op_fn fn, void **ctx);
/* One run of `seconds`: adds every operation's latency to `h` and returns
 * the operations completed within the run's time per second. Operations
 * still under way at the deadline finish (their latency counts) but not
 * their throughput, on either side of a comparison: a run's end is the
 * benchmark's, not the workload's. BENCH_COUNT_DRAIN=1 counts every
 * operation over the whole wall time instead. */
double bench_crew_run(bench_crew *c, double seconds, bench_hist *h,
                      bool *failed);
void bench_crew_free(bench_crew *c);

/* One run of a crew made for it (bench_crew_run's figures). */
double bench_run(int threads, double seconds, bench_op_fn fn, void **ctx,
                 bench_hist *h, bool *failed);

/* Interleaved rounds of `seconds_per_side` per side, A on `threads_a`
 * threads and B (may be NULL) on `threads_b`, the side that goes first
 * alternating (A B, B A, A B, ...); medians. */
void bench_ab(int rounds, double seconds_per_side, int threads_a,
              bench_op_fn a, void **ctx_a, int threads_b, bench_op_fn b,
              void **ctx_b, bench_result *ra, bench_result *rb);

/* Prints: BENCH <program> <case> threads=T ops_s=.. p50_us=.. p99_us=..
 * baseline_ops_s=.. ratio=.. <extra> (baseline fields when `base`). The
 * ratio is the median of the per-round ratios when bench_ab measured them
 * (then also ratio_min=.. ratio_max=.. rounds=..), else ours/base. */
void bench_print(const char *program, const char *case_name, int threads,
                 const bench_result *ours, const bench_result *base,
                 const char *extra);

/* A measurement build of the library (CPPFLAGS=-DDS_POOL_COUNTERS) logs a
 * pool's event counters when it closes: after this call they are printed
 * to stderr, each after "# <label>" as last set with
 * bench_pool_counters_label(). */
void bench_pool_counters_to_stderr(void);
void bench_pool_counters_label(const char *label);

/* Where the client and its server backends run. The benchmarks' server is
 * local and shares this machine's CPUs with the client; a production
 * server is elsewhere and shares none. BENCH_PLACEMENT=split models that:
 * bench_place_split() pins this process's threads to the first half of
 * the CPUs it may use and the backends `pids` (PostgreSQL processes of
 * the local server) to the second half. False, with the reason in `why`,
 * when it cannot (one CPU, not allowed, not a local backend).
 * bench_place_unsplit() gives this process's threads and those backends
 * back every CPU this process had. */
bool bench_place_split(const int *pids, int n, char *why, size_t why_len);
void bench_place_unsplit(void);
/* The placements BENCH_PLACEMENT asks for: "shared", "split" or "both"
 * (the default); true when `name` is one of them. */
bool bench_placement_selected(const char *name);

#endif
