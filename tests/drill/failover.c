/*
 * failover-drill: the load half of scripts/failover-drill.
 *
 * Eight threads append messages with idempotency keys ("t<thread>-<n>")
 * through ds_message_append() against DATABASE_URL (the HA profile's
 * multi-host URL with target_session_attrs=read-write). A write whose call
 * fails with a retryable error is retried with the same key until it is
 * acknowledged or its own deadline passes; any other error is a failure.
 * Meanwhile the script kills the primary. After DRILL_SECONDS the program
 * checks every acknowledged key against the table (from whichever node is
 * primary then) and prints
 *
 *   lost_acked_writes=N duplicate_writes=N recovery_ms=N max_call_ms=N ...
 *
 * recovery_ms is the longest time in which no write was acknowledged by
 * any thread (the outage as clients saw it); max_call_ms the longest single
 * library call. Exit status 0 only when no acknowledged write is lost, none
 * is duplicated, no call failed with a non-retryable error and writes were
 * acknowledged after the outage.
 *
 * Environment: DATABASE_URL (required), DRILL_SECONDS (default 30),
 * DRILL_READY_FILE (created once the load runs, for the script to wait on).
 */
#include <datastore/datastore.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 8
#define WRITE_DEADLINE_MS 60000 /* a write still not acknowledged is given up */
#define MAX_WRITES_PER_THREAD 200000

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    int index;
    ds_pool *pool;
    int64_t conversation_id;
    int64_t stop_at_ms;
    /* written by this thread only, read after join */
    int acked;        /* writes acknowledged: keys t<index>-0 .. acked-1 */
    int given_up;     /* a write not acknowledged by its deadline (not acked) */
    int retries;
    int hard_errors;
    int64_t max_call_ms;
    char first_hard_error[DS_ERROR_MESSAGE_MAX + 32];
} worker;

static _Atomic int64_t last_ack_ms;
static _Atomic int64_t longest_gap_ms;
static _Atomic int64_t acks_after_gap; /* acks after the longest gap began */
static pthread_mutex_t gap_mu = PTHREAD_MUTEX_INITIALIZER;

static void note_ack(void) {
    int64_t t = now_ms();
    pthread_mutex_lock(&gap_mu);
    int64_t gap = t - atomic_load(&last_ack_ms);
    if (gap > atomic_load(&longest_gap_ms)) {
        atomic_store(&longest_gap_ms, gap);
        atomic_store(&acks_after_gap, 0);
    }
    atomic_fetch_add(&acks_after_gap, 1);
    atomic_store(&last_ack_ms, t);
    pthread_mutex_unlock(&gap_mu);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    char key[64], content[96];
    for (int n = 0; n < MAX_WRITES_PER_THREAD && now_ms() < w->stop_at_ms; n++) {
        snprintf(key, sizeof key, "t%d-%d", w->index, n);
        snprintf(content, sizeof content, "drill message %d of thread %d", n,
                 w->index);
        ds_message_new m = {sizeof(ds_message_new), DS_ROLE_USER, content, 0, NULL, key};
        int64_t write_deadline = now_ms() + WRITE_DEADLINE_MS;
        bool acked = false;
        for (;;) {
            ds_error err = {0};
            int64_t t0 = now_ms();
            ds_status st = ds_message_append(w->pool, w->conversation_id, &m,
                                             NULL, &err);
            int64_t took = now_ms() - t0;
            if (took > w->max_call_ms)
                w->max_call_ms = took;
            if (st == DS_OK) {
                acked = true;
                break;
            }
            if (!ds_error_is_retryable(&err)) {
                if (!w->hard_errors++)
                    snprintf(w->first_hard_error, sizeof w->first_hard_error,
                             "%s: %s", ds_status_str(st), err.message);
                break;
            }
            if (now_ms() >= write_deadline)
                break;
            w->retries++;
            usleep(50000);
        }
        if (!acked) {
            /* Unacknowledged: stop this thread here, so that keys
             * t<index>-0 .. acked-1 are exactly the acknowledged ones. */
            w->given_up += w->hard_errors ? 0 : 1;
            break;
        }
        w->acked = n + 1;
        note_ack();
    }
    return NULL;
}

/* Retries a setup step through the failover window. */
#define RETRYING(call)                                                         \
    do {                                                                       \
        int64_t until_ = now_ms() + WRITE_DEADLINE_MS;                         \
        while ((st = (call)) != DS_OK && ds_error_is_retryable(&err) &&        \
               now_ms() < until_)                                              \
            usleep(200000);                                                    \
    } while (0)

int main(void) {
    const char *url = getenv("DATABASE_URL");
    if (!url || !*url) {
        fprintf(stderr, "failover-drill: DATABASE_URL is not set\n");
        return 2;
    }
    const char *secs = getenv("DRILL_SECONDS");
    int seconds = secs && atoi(secs) > 0 ? atoi(secs) : 30;

    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_status st = ds_config_new(&cfg, &err);
    if (st == DS_OK)
        st = ds_config_set(cfg, "database_url", url, &err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "pool_max", THREADS + 2, &err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "connect_timeout_ms", 2000, &err);
    if (st == DS_OK)
        st = ds_config_set_int(cfg, "acquire_timeout_ms", 5000, &err);
    if (st == DS_OK)
        st = ds_pool_open(cfg, &pool, &err);
    ds_config_free(cfg);
    if (st != DS_OK) {
        fprintf(stderr, "failover-drill: open: %s\n", err.message);
        return 1;
    }
    ds_migrate_options mopts = DS_MIGRATE_OPTIONS_INIT;
    st = ds_migrate_up(pool, &mopts, NULL, &err);
    char email[96];
    snprintf(email, sizeof email, "drill-%ld-%ld@example.com", (long)getpid(),
             (long)time(NULL));
    ds_user *user = NULL;
    ds_conversation *conv = NULL;
    if (st == DS_OK)
        RETRYING(ds_user_create(pool, email, NULL, &user, &err));
    if (st == DS_OK)
        RETRYING(ds_conversation_create(pool, user->id, "failover drill",
                                        &conv, &err));
    if (st != DS_OK) {
        fprintf(stderr, "failover-drill: setup: %s\n", err.message);
        ds_user_free(user);
        ds_pool_close(pool);
        return 1;
    }
    int64_t conversation_id = conv->id;
    ds_conversation_free(conv);
    ds_user_free(user);

    worker workers[THREADS];
    pthread_t th[THREADS];
    int64_t start = now_ms();
    atomic_store(&last_ack_ms, start);
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){.index = i,
                              .pool = pool,
                              .conversation_id = conversation_id,
                              .stop_at_ms = start + (int64_t)seconds * 1000};
        if (pthread_create(&th[i], NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "failover-drill: pthread_create failed\n");
            return 1;
        }
    }
    const char *ready = getenv("DRILL_READY_FILE");
    if (ready && *ready) {
        while (atomic_load(&acks_after_gap) < 100 && now_ms() - start < 30000)
            usleep(20000);
        FILE *f = fopen(ready, "w");
        if (f)
            fclose(f);
    }
    fprintf(stderr, "failover-drill: %d threads appending for %d s\n", THREADS,
            seconds);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);

    int acked = 0, given_up = 0, retries = 0, hard = 0;
    int64_t max_call = 0;
    for (int i = 0; i < THREADS; i++) {
        acked += workers[i].acked;
        given_up += workers[i].given_up;
        retries += workers[i].retries;
        hard += workers[i].hard_errors;
        if (workers[i].max_call_ms > max_call)
            max_call = workers[i].max_call_ms;
        if (workers[i].hard_errors)
            fprintf(stderr, "failover-drill: thread %d: %s\n", i,
                    workers[i].first_hard_error);
    }

    /* Verify on the primary of now: per key, how many rows. */
    ds_sql_param p[] = {ds_sql_param_int64(conversation_id)};
    ds_sql_result *res = NULL;
    RETRYING(ds_sql_exec_pool(pool,
                          "SELECT idempotency_key, count(*) FROM messages "
                          "WHERE conversation_id = $1 GROUP BY 1",
                          p, 1, &res, &err));
    if (st != DS_OK) {
        fprintf(stderr, "failover-drill: verify: %s\n", err.message);
        ds_pool_close(pool);
        return 1;
    }
    /* seen[i][n]: rows with key t<i>-<n> */
    int *seen[THREADS];
    for (int i = 0; i < THREADS; i++) {
        seen[i] = calloc((size_t)workers[i].acked + 2, sizeof **seen);
        if (!seen[i]) {
            fprintf(stderr, "failover-drill: out of memory\n");
            return 1;
        }
    }
    long duplicates = 0, unacked_rows = 0;
    for (int r = 0; r < ds_sql_result_rows(res); r++) {
        const char *k = NULL;
        int64_t count = 0;
        int ti, n;
        if (ds_sql_result_text(res, r, 0, &k, NULL, &err) != DS_OK ||
            ds_sql_result_int64(res, r, 1, &count, &err) != DS_OK || !k ||
            sscanf(k, "t%d-%d", &ti, &n) != 2 || ti < 0 || ti >= THREADS ||
            n < 0) {
            fprintf(stderr, "failover-drill: unexpected row %d\n", r);
            hard++;
            continue;
        }
        if (count > 1)
            duplicates += count - 1;
        if (n < workers[ti].acked)
            seen[ti][n] += (int)count;
        else
            unacked_rows += count; /* in doubt when the primary died: fine */
    }
    ds_sql_result_free(res);
    long lost = 0;
    for (int i = 0; i < THREADS; i++) {
        for (int n = 0; n < workers[i].acked; n++)
            if (seen[i][n] == 0)
                lost++;
        free(seen[i]);
    }
    int64_t gap = atomic_load(&longest_gap_ms);
    int64_t after = atomic_load(&acks_after_gap);
    printf("lost_acked_writes=%ld duplicate_writes=%ld recovery_ms=%lld "
           "max_call_ms=%lld acked=%d retries=%d in_doubt_rows=%ld "
           "given_up=%d hard_errors=%d acked_after_outage=%lld\n",
           lost, duplicates, (long long)gap, (long long)max_call, acked,
           retries, unacked_rows, given_up, hard, (long long)after);
    ds_pool_close(pool);
    return lost == 0 && duplicates == 0 && hard == 0 && given_up == 0 &&
                   after > 0
               ? 0
               : 1;
}
