/* The job queue against the local Redis: delivery, delays, retries, dead
 * letters, reclaiming from dead workers (killed processes), 4 workers
 * draining 10,000 jobs, and a Redis restart. */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"

static ds_queue *open_queue(ds_redis *r, const char *name, const char *consumer,
                            int visibility_ms, int max_attempts,
                            int backoff_ms) {
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    o.name = name;
    o.consumer = consumer;
    if (visibility_ms)
        o.visibility_timeout_ms = visibility_ms;
    if (max_attempts)
        o.max_attempts = max_attempts;
    if (backoff_ms) {
        o.backoff_base_ms = backoff_ms;
        o.backoff_max_ms = backoff_ms * 8;
    }
    ds_queue *q;
    ds_error err = {0};
    ds_status st = ds_queue_open(r, &o, &q, &err);
    ck_assert_ds_ok(st, err);
    return q;
}

static ds_queue_job *reserve(ds_queue *q, int wait_ms) {
    ds_queue_job *job = (ds_queue_job *)1;
    ds_error err = {0};
    ds_status st = ds_queue_reserve(q, wait_ms, &job, &err);
    ck_assert_ds_ok(st, err);
    return job;
}

static void enqueue_int(ds_queue *q, int v, int64_t delay_ms, char *id) {
    json_t *p = json_pack("{s:i}", "n", v);
    ds_error err = {0};
    ds_status st = ds_queue_enqueue(q, p, delay_ms, id, &err);
    json_decref(p);
    ck_assert_ds_ok(st, err);
}

static int n_of(const ds_queue_job *job) {
    return (int)json_integer_value(json_object_get(job->payload, "n"));
}

static ds_queue_counts counts(ds_queue *q) {
    ds_queue_counts c = DS_QUEUE_COUNTS_INIT;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_counts_get(q, &c, &err), err);
    return c;
}

static void ack_ok(ds_queue *q, ds_queue_job *job) {
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_ack(q, job, &err), err);
}

/* ---- delivery ------------------------------------------------------------------ */

START_TEST(test_queue_enqueue_reserve_ack) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "mail", "w1", 0, 0, 0);
    ck_assert_str_eq(ds_queue_consumer(q), "w1");
    char ids[3][DS_QUEUE_JOB_ID_LEN + 1];
    for (int i = 0; i < 3; i++)
        enqueue_int(q, i, 0, ids[i]);
    ck_assert_uint_eq(strlen(ids[0]), DS_QUEUE_JOB_ID_LEN);
    ck_assert_str_ne(ids[0], ids[1]);
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.ready, 3);
    ck_assert_int_eq(c.reserved, 0);
    for (int i = 0; i < 3; i++) { /* oldest first */
        ds_queue_job *job = reserve(q, 0);
        ck_assert_ptr_nonnull(job);
        ck_assert_int_eq(n_of(job), i);
        ck_assert_str_eq(job->id, ids[i]);
        ck_assert_int_eq(job->attempt, 1);
        ck_assert_int_gt(job->enqueued_at_ms, 1600000000000LL);
        ck_assert_str_eq(job->last_error, "");
        c = counts(q);
        ck_assert_int_eq(c.reserved, 1);
        ck_assert_int_eq(c.ready, 2 - i);
        ack_ok(q, job);
        /* exactly once: a second ack is refused */
        ds_error err = {0};
        ck_assert_ds_status(ds_queue_ack(q, job, &err), DS_ERR_NOT_FOUND, err);
        ds_queue_job_free(job);
    }
    ck_assert_ptr_null(reserve(q, 0));
    c = counts(q);
    ck_assert_int_eq(c.ready + c.reserved + c.delayed + c.dead, 0);
    /* any JSON value travels */
    json_t *vals[3] = {json_string("text"), json_pack("[i,s]", 1, "two"),
                       json_real(2.5)};
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_enqueue_batch(q, vals, 3, &err), err);
    for (int i = 0; i < 3; i++) {
        ds_queue_job *job = reserve(q, 0);
        ck_assert(json_equal(job->payload, vals[i]));
        ack_ok(q, job);
        ds_queue_job_free(job);
        json_decref(vals[i]);
    }
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_delayed_job) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "later", NULL, 0, 0, 0);
    enqueue_int(q, 1, 300, NULL);
    ck_assert_ptr_null(reserve(q, 0)); /* not due yet */
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.delayed, 1);
    ck_assert_int_eq(c.ready, 0);
    ds_queue_job *job = reserve(q, 10000); /* comes when due */
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(n_of(job), 1);
    ck_assert_int_eq(job->attempt, 1);
    ack_ok(q, job);
    ds_queue_job_free(job);
    ck_assert_int_eq(counts(q).delayed, 0);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_retry_backoff_then_dead_letter) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "flaky", NULL, 0, 3, 20);
    char id[DS_QUEUE_JOB_ID_LEN + 1];
    enqueue_int(q, 7, 0, id);
    ds_error err = {0};
    for (int attempt = 1; attempt <= 3; attempt++) {
        ds_queue_job *job = reserve(q, 10000);
        ck_assert_ptr_nonnull(job);
        ck_assert_str_eq(job->id, id);
        ck_assert_int_eq(job->attempt, attempt);
        ck_assert_int_eq(n_of(job), 7);
        if (attempt > 1)
            ck_assert_str_eq(job->last_error, "upstream said 503");
        bool dead = true;
        ck_assert_ds_ok(ds_queue_fail(q, job, "upstream said 503", &dead, &err),
                        err);
        ck_assert(dead == (attempt == 3));
        /* the failed delivery is no longer this worker's */
        ck_assert_ds_status(ds_queue_ack(q, job, &err), DS_ERR_NOT_FOUND, err);
        if (attempt < 3)
            ck_assert_int_eq(counts(q).delayed, 1);
        ds_queue_job_free(job);
    }
    ck_assert_ptr_null(reserve(q, 0));
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.dead, 1);
    ck_assert_int_eq(c.ready + c.reserved + c.delayed, 0);
    ds_queue_job **dead;
    size_t n;
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(dead[0]->id, id);
    ck_assert_int_eq(dead[0]->attempt, 3);
    ck_assert_str_eq(dead[0]->last_error, "upstream said 503");
    ck_assert_int_eq(n_of(dead[0]), 7);
    char entry[48];
    snprintf(entry, sizeof entry, "%s", dead[0]->entry_id);
    ds_queue_jobs_free(dead, n);
    /* replay: a fresh start with the same id and payload */
    int64_t replayed;
    ck_assert_ds_status(ds_queue_dead_replay(q, "1-1", &replayed, &err),
                        DS_ERR_NOT_FOUND, err);
    ck_assert_ds_ok(ds_queue_dead_replay(q, entry, &replayed, &err), err);
    ck_assert_int_eq(replayed, 1);
    ck_assert_int_eq(counts(q).dead, 0);
    ds_queue_job *job = reserve(q, 0);
    ck_assert_ptr_nonnull(job);
    ck_assert_str_eq(job->id, id);
    ck_assert_int_eq(job->attempt, 1);
    ack_ok(q, job);
    ds_queue_job_free(job);
    /* replay all */
    ds_queue *q1 = open_queue(r, "once", NULL, 0, 1, 1);
    for (int i = 0; i < 3; i++) {
        enqueue_int(q1, i, 0, NULL);
        job = reserve(q1, 0);
        ck_assert_ds_ok(ds_queue_fail(q1, job, NULL, NULL, &err), err);
        ds_queue_job_free(job);
    }
    ck_assert_int_eq(counts(q1).dead, 3);
    ck_assert_ds_ok(ds_queue_dead_replay(q1, NULL, &replayed, &err), err);
    ck_assert_int_eq(replayed, 3);
    ck_assert_int_eq(counts(q1).ready, 3);
    dt_redis_flush_prefix(r);
    ds_queue_close(q1);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* ---- reclaiming ------------------------------------------------------------------ */

START_TEST(test_queue_reclaim_after_visibility_timeout) {
    ds_redis *r = dt_redis("queue");
    ds_queue *a = open_queue(r, "vis", "worker-a", 200, 0, 0);
    ds_queue *b = open_queue(r, "vis", "worker-b", 200, 0, 0);
    enqueue_int(a, 1, 0, NULL);
    ds_queue_job *ja = reserve(a, 0);
    ck_assert_ptr_nonnull(ja);
    ck_assert_ptr_null(reserve(b, 0)); /* invisible while a holds it */
    ds_queue_job *jb = reserve(b, 10000);
    ck_assert_ptr_nonnull(jb);
    ck_assert_str_eq(jb->id, ja->id);
    ck_assert_int_eq(jb->attempt, 2);
    ck_assert_ptr_nonnull(strstr(jb->last_error, "stopped responding"));
    ds_error err = {0};
    /* the slow worker may not complete it any more; the new holder does */
    ck_assert_ds_status(ds_queue_ack(a, ja, &err), DS_ERR_CONFLICT, err);
    ck_assert_ds_status(ds_queue_touch(a, ja, &err), DS_ERR_CONFLICT, err);
    ack_ok(b, jb);
    ds_queue_job_free(ja);
    ds_queue_job_free(jb);
    dt_redis_flush_prefix(r);
    ds_queue_close(a);
    ds_queue_close(b);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_touch_keeps_a_long_job) {
    ds_redis *r = dt_redis("queue");
    ds_queue *a = open_queue(r, "long", "worker-a", 300, 0, 0);
    ds_queue *b = open_queue(r, "long", "worker-b", 300, 0, 0);
    enqueue_int(a, 1, 0, NULL);
    ds_queue_job *job = reserve(a, 0);
    ds_error err = {0};
    for (int i = 0; i < 8; i++) {
        usleep(100 * 1000);
        ck_assert_ds_ok(ds_queue_touch(a, job, &err), err);
        ck_assert_ptr_null(reserve(b, 0));
    }
    ack_ok(a, job);
    ds_queue_job_free(job);
    dt_redis_flush_prefix(r);
    ds_queue_close(a);
    ds_queue_close(b);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_lost_job_exhausts_attempts) {
    ds_redis *r = dt_redis("queue");
    ds_queue *a = open_queue(r, "poison", "worker-a", 100, 1, 0);
    enqueue_int(a, 1, 0, NULL);
    ds_queue_job *job = reserve(a, 0); /* and its worker "dies" */
    ds_queue_job_free(job);
    /* once its visibility timeout passes, the next reserve finds it out of
     * attempts and moves it to the dead letters (bounded polling): it is
     * never handed out again */
    ds_queue_counts c = counts(a);
    long long deadline = dt_now_ms() + 10000;
    while (c.dead == 0 && dt_now_ms() < deadline) {
        ck_assert_ptr_null(reserve(a, 0));
        c = counts(a);
        if (c.dead == 0)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(c.dead, 1);
    ck_assert_int_eq(c.reserved + c.ready, 0);
    ds_queue_job **dead;
    size_t n;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_dead_list(a, 5, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(dead[0]->last_error, "attempts exhausted"));
    ds_queue_jobs_free(dead, n);
    dt_redis_flush_prefix(r);
    ds_queue_close(a);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_killed_worker_job_redelivered) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "qkill");
    ds_error err = {0};
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_queue *q = open_queue(r, "kill", "survivor", 300, 0, 0);
    char id[DS_QUEUE_JOB_ID_LEN + 1];
    enqueue_int(q, 42, 0, id);
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* a worker that takes the job and dies in the middle of it */
        ds_redis *cr;
        ds_queue *cq;
        ds_queue_job *job = NULL;
        ds_error e = {0};
        ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
        ds_queue_options_init(&o);
        o.name = "kill";
        o.consumer = "doomed";
        o.visibility_timeout_ms = 300;
        if (ds_redis_open(cfg, &cr, &e) != DS_OK ||
            ds_queue_open(cr, &o, &cq, &e) != DS_OK ||
            ds_queue_reserve(cq, 5000, &job, &e) != DS_OK || !job)
            _exit(2);
        if (write(pipefd[1], job->id, DS_QUEUE_JOB_ID_LEN) !=
            DS_QUEUE_JOB_ID_LEN)
            _exit(3);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    char taken[DS_QUEUE_JOB_ID_LEN + 1] = "";
    ck_assert_int_eq(read(pipefd[0], taken, DS_QUEUE_JOB_ID_LEN),
                     DS_QUEUE_JOB_ID_LEN);
    close(pipefd[0]);
    ck_assert_str_eq(taken, id);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* the job comes back to a live worker, as its second attempt */
    ds_queue_job *job = reserve(q, 15000);
    ck_assert_ptr_nonnull(job);
    ck_assert_str_eq(job->id, id);
    ck_assert_int_eq(job->attempt, 2);
    ck_assert_int_eq(n_of(job), 42);
    ack_ok(q, job);
    ck_assert_ds_status(ds_queue_ack(q, job, &err), DS_ERR_NOT_FOUND, err);
    ds_queue_job_free(job);
    ck_assert_ptr_null(reserve(q, 500));
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.ready + c.reserved + c.delayed + c.dead, 0);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_queue_four_workers_drain_10000_jobs) {
    enum { JOBS = 10000, WORKERS = 4 };
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "qdrain");
    ds_error err = {0};
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_queue *q = open_queue(r, "drain", "producer", 500, 0, 0);
    json_t **payloads = malloc(JOBS * sizeof *payloads);
    for (int i = 0; i < JOBS; i++)
        payloads[i] = json_pack("{s:i}", "n", i);
    ck_assert_ds_ok(ds_queue_enqueue_batch(q, payloads, JOBS, &err), err);
    for (int i = 0; i < JOBS; i++)
        json_decref(payloads[i]);
    free(payloads);
    ck_assert_int_eq(counts(q).ready, JOBS);

    size_t shm_size = (JOBS + 16) * sizeof(atomic_int);
    atomic_int *shm = mmap(NULL, shm_size, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(shm, MAP_FAILED);
    atomic_int *acked = shm, *done = &shm[JOBS], *dropped = &shm[JOBS + 1],
               *refused = &shm[JOBS + 2];
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        ck_assert_int_ge(pids[w], 0);
        if (pids[w] == 0) {
            ds_redis *cr;
            ds_queue *cq;
            ds_error e = {0};
            ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
            ds_queue_options_init(&o);
            o.name = "drain";
            o.visibility_timeout_ms = 500;
            if (ds_redis_open(cfg, &cr, &e) != DS_OK ||
                ds_queue_open(cr, &o, &cq, &e) != DS_OK)
                _exit(2);
            unsigned seed = (unsigned)getpid();
            long long deadline = dt_now_ms() + 150000;
            while (atomic_load(done) < JOBS && dt_now_ms() < deadline) {
                ds_queue_job *job;
                if (ds_queue_reserve(cq, 200, &job, &e) != DS_OK)
                    _exit(3);
                if (!job)
                    continue;
                int n = n_of(job);
                if (rand_r(&seed) % 100 == 0) {
                    /* 1%: the worker "crashes" without acknowledging */
                    atomic_fetch_add(dropped, 1);
                } else if (ds_queue_ack(cq, job, &e) == DS_OK) {
                    if (n >= 0 && n < JOBS)
                        atomic_fetch_add(&acked[n], 1);
                    atomic_fetch_add(done, 1);
                } else {
                    atomic_fetch_add(refused, 1);
                }
                ds_queue_job_free(job);
            }
            ds_queue_close(cq);
            ds_redis_close(cr);
            _exit(0);
        }
    }
    for (int w = 0; w < WORKERS; w++) {
        int status;
        ck_assert_int_eq(waitpid(pids[w], &status, 0), pids[w]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "worker %d: status %d", w, status);
    }
    ck_assert_int_eq(atomic_load(done), JOBS);
    for (int i = 0; i < JOBS; i++)
        ck_assert_msg(atomic_load(&acked[i]) == 1, "job %d acknowledged %d times",
                      i, atomic_load(&acked[i]));
    ck_assert_int_gt(atomic_load(dropped), 0); /* redeliveries happened */
    ck_assert_int_eq(atomic_load(refused), 0);
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.ready + c.reserved + c.delayed + c.dead, 0);
    munmap(shm, shm_size);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
    ds_config_free(cfg);
}
END_TEST

/* ---- Redis restarts ------------------------------------------------------------- */

START_TEST(test_queue_resumes_after_restart) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "restart", "w", 0, 0, 0);
    char ids[3][DS_QUEUE_JOB_ID_LEN + 1];
    for (int i = 0; i < 3; i++)
        enqueue_int(q, i, 0, ids[i]);
    ds_queue_job *j0 = reserve(q, 0);
    ack_ok(q, j0);
    ds_queue_job *j1 = reserve(q, 0); /* in flight across the restart */
    ck_assert_str_eq(j1->id, ids[1]);
    /* persist what Redis holds now (production: AOF or RDB snapshots) */
    freeReplyObject(dt_rcmd(r, "SAVE"));
    dt_redis_stop();
    ds_error err = {0};
    ds_queue_job *none;
    ck_assert_ds_status(ds_queue_reserve(q, 0, &none, &err), DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_ptr_null(none);
    json_t *p = json_integer(9);
    ck_assert_ds_status(ds_queue_enqueue(q, p, 0, NULL, &err), DS_ERR_REDIS,
                        err);
    json_decref(p);
    ck_assert_ds_status(ds_queue_ack(q, j1, &err), DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    dt_redis_start(r);
    /* the in-flight job is still ours to complete; the acknowledged one
     * never comes back */
    ack_ok(q, j1);
    ds_queue_job *j2 = reserve(q, 0);
    ck_assert_ptr_nonnull(j2);
    ck_assert_str_eq(j2->id, ids[2]);
    ack_ok(q, j2);
    ck_assert_ptr_null(reserve(q, 0));
    ds_queue_job_free(j0);
    ds_queue_job_free(j1);
    ds_queue_job_free(j2);
    dt_redis_flush_prefix(r);
    freeReplyObject(dt_rcmd(r, "SAVE")); /* leave no queue in the snapshot */
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_recreates_lost_group) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "lost", NULL, 0, 0, 0);
    enqueue_int(q, 1, 0, NULL);
    /* a server that lost everything (restart without persistence) */
    dt_redis_flush_prefix(r);
    ck_assert_ptr_null(reserve(q, 0));
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.ready, 0);
    enqueue_int(q, 2, 0, NULL);
    ds_queue_job *job = reserve(q, 0);
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(n_of(job), 2);
    ack_ok(q, job);
    ds_queue_job_free(job);
    /* and a blocking reserve on a stream that vanished */
    dt_redis_flush_prefix(r);
    ck_assert_ptr_null(reserve(q, 300));
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* ---- bad arguments ---------------------------------------------------------------- */

typedef struct {
    ds_redis *r;
    const char *stream;
} late_add;

/* Whether a client of the server is blocked in XREADGROUP. */
static bool reader_blocked(ds_redis *r) {
    redisReply *rep = dt_rcmd(r, "CLIENT LIST");
    bool blocked = false;
    for (const char *line = rep->str ? rep->str : ""; *line && !blocked;) {
        size_t n = strcspn(line, "\n");
        char *one = strndup(line, n);
        blocked = strstr(one, " flags=b ") && strstr(one, " cmd=xreadgroup");
        free(one);
        line += n + (line[n] == '\n');
    }
    freeReplyObject(rep);
    return blocked;
}

static void *late_add_main(void *p) {
    late_add *a = p;
    /* once the reserve waits in its blocking read (at most 20 s), so that
     * the entry arrives on that path */
    long long deadline = dt_now_ms() + 20000;
    while (!reader_blocked(a->r)) {
        ck_assert_msg(dt_now_ms() < deadline,
                      "the reserve never blocked in XREADGROUP");
        usleep(2000);
    }
    freeReplyObject(dt_rcmd(a->r, "XADD %s * id late a 2147483647 p 2",
                            a->stream));
    return NULL;
}

START_TEST(test_queue_damaged_attempt_count) {
    /* an entry whose attempt count is at the top of an int (damaged, or
     * written by something else) is delivered with the count held there,
     * never overflowed: on the reserve script's path and on the blocking
     * read's */
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "damaged", "w1", 30000, 5, 10);
    char *stream = ds__redis_key(r, NULL, "q:damaged:s");
    freeReplyObject(dt_rcmd(r, "XADD %s * id now a 2147483647 p 1", stream));
    ds_queue_job *job;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_ptr_nonnull(job);
    ck_assert_str_eq(job->id, "now");
    ck_assert_int_eq(job->attempt, INT_MAX);
    ds_queue_job_free(job);
    /* Lua writes a count this large as 1.2345678901234568e+20, which once
     * read back as 1; text that is no number counts as none */
    freeReplyObject(dt_rcmd(r, "XADD %s * id big a 123456789012345678901 p 1",
                            stream));
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_str_eq(job->id, "big");
    ck_assert_int_eq(job->attempt, INT_MAX);
    ds_queue_job_free(job);
    freeReplyObject(dt_rcmd(r, "XADD %s * id nan a nan p 1", stream));
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_str_eq(job->id, "nan");
    ck_assert_int_eq(job->attempt, 1);
    ds_queue_job_free(job);
    late_add a = {r, stream};
    pthread_t th;
    pthread_create(&th, NULL, late_add_main, &a);
    ck_assert_ds_ok(ds_queue_reserve(q, 20000, &job, &err), err);
    pthread_join(th, NULL);
    ck_assert_ptr_nonnull(job);
    ck_assert_str_eq(job->id, "late");
    ck_assert_int_eq(job->attempt, INT_MAX);
    ds_queue_job_free(job);
    ds__free(stream);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_entry_without_fields_dead_letters) {
    /* an entry with neither id nor payload (written by something else):
     * each delivery is an error, and after max_attempts it goes to the
     * dead letters instead of failing every reserve from then on */
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "poison", "w1", 50, 2, 10);
    char *stream = ds__redis_key(r, NULL, "q:poison:s");
    freeReplyObject(dt_rcmd(r, "XADD %s * x 1", stream));
    ds__free(stream);
    ds_queue_job *job = NULL;
    ds_error err = {0};
    for (int attempt = 1; attempt <= 2; attempt++) {
        ds_status st = ds_queue_reserve(q, 0, &job, &err);
        ck_assert_ds_status(st, DS_ERR_INTERNAL, err);
        ck_assert_ptr_null(job);
        usleep(120000); /* past the visibility timeout */
    }
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_ptr_null(job);
    ds_queue_counts c = DS_QUEUE_COUNTS_INIT;
    ck_assert_ds_ok(ds_queue_counts_get(q, &c, &err), err);
    ck_assert_int_eq(c.dead, 1);
    ck_assert_int_eq(c.reserved, 0);
    ck_assert_ds_ok(ds_queue_reserve(q, 0, &job, &err), err);
    ck_assert_ptr_null(job);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_errors) {
    ds_redis *r = dt_redis("queue");
    ds_error err = {0};
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    ds_queue_options_init(NULL);
    ds_queue *q = (ds_queue *)1;
    ck_assert_int_eq(ds_queue_open(r, &o, &q, &err), DS_ERR_INVALID); /* name */
    ck_assert_ptr_null(q);
    o.name = "bad name";
    ck_assert_int_eq(ds_queue_open(r, &o, &q, &err), DS_ERR_INVALID);
    o.name = "ok";
    o.consumer = "no spaces please";
    ck_assert_int_eq(ds_queue_open(r, &o, &q, &err), DS_ERR_INVALID);
    o.consumer = NULL;
    ds_queue_options b = o;
    b.visibility_timeout_ms = -1;
    ck_assert_int_eq(ds_queue_open(r, &b, &q, &err), DS_ERR_INVALID);
    b = o;
    b.max_attempts = 1001;
    ck_assert_int_eq(ds_queue_open(r, &b, &q, &err), DS_ERR_INVALID);
    b = o;
    b.backoff_max_ms = 10;
    ck_assert_int_eq(ds_queue_open(r, &b, &q, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_open(NULL, &o, &q, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_open(r, NULL, &q, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_open(r, &o, NULL, &err), DS_ERR_INVALID);
    ck_assert_ds_ok(ds_queue_open(r, &o, &q, &err), err);
    ck_assert_ptr_nonnull(strchr(ds_queue_consumer(q), '-'));
    ck_assert_ptr_null(ds_queue_consumer(NULL));
    char id[DS_QUEUE_JOB_ID_LEN + 1] = "x";
    ck_assert_int_eq(ds_queue_enqueue(q, NULL, 0, id, &err), DS_ERR_INVALID);
    ck_assert_str_eq(id, "");
    ck_assert_int_eq(ds_queue_enqueue(NULL, json_null(), 0, NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_enqueue(q, json_null(), -1, NULL, &err),
                     DS_ERR_INVALID);
    json_t *bad[2] = {json_null(), NULL};
    ck_assert_int_eq(ds_queue_enqueue_batch(q, bad, 2, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_enqueue_batch(q, NULL, 2, &err), DS_ERR_INVALID);
    ck_assert_ds_ok(ds_queue_enqueue_batch(q, NULL, 0, &err), err);
    ds_queue_job *job = (ds_queue_job *)1;
    ck_assert_int_eq(ds_queue_reserve(q, -1, &job, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(job);
    ck_assert_int_eq(ds_queue_reserve(NULL, 0, &job, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_reserve(q, 0, NULL, &err), DS_ERR_INVALID);
    ds_queue_job fake;
    memset(&fake, 0, sizeof fake);
    ck_assert_int_eq(ds_queue_ack(q, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_ack(q, &fake, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_ack(NULL, &fake, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_touch(q, &fake, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_fail(q, &fake, "x", NULL, &err), DS_ERR_INVALID);
    snprintf(fake.entry_id, sizeof fake.entry_id, "1-1");
    fake.attempt = 1;
    ck_assert_int_eq(ds_queue_ack(q, &fake, &err), DS_ERR_NOT_FOUND);
    ck_assert_int_eq(ds_queue_fail(q, &fake, "x", NULL, &err), DS_ERR_NOT_FOUND);
    snprintf(fake.entry_id, sizeof fake.entry_id, "not-an-id");
    ck_assert_int_eq(ds_queue_ack(q, &fake, &err), DS_ERR_NOT_FOUND);
    ds_queue_job **jobs = (ds_queue_job **)1;
    size_t n = 5;
    ck_assert_int_eq(ds_queue_dead_list(q, 0, &jobs, &n, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(jobs);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(ds_queue_dead_list(q, 1, NULL, &n, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_dead_list(NULL, 1, &jobs, &n, &err),
                     DS_ERR_INVALID);
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &jobs, &n, &err), err);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(jobs);
    int64_t replayed = 3;
    ck_assert_int_eq(ds_queue_dead_replay(q, "", &replayed, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(replayed, 0);
    ck_assert_int_eq(ds_queue_dead_replay(NULL, NULL, NULL, &err),
                     DS_ERR_INVALID);
    ds_queue_counts c = DS_QUEUE_COUNTS_INIT;
    ck_assert_int_eq(ds_queue_counts_get(NULL, &c, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_queue_counts_get(q, NULL, &err), DS_ERR_INVALID);
    ds_queue_job_free(NULL);
    ds_queue_jobs_free(NULL, 3);
    ds_queue_close(NULL);
    /* a payload that is not JSON in the stream is reported, not a crash */
    char *stream = ds__redis_key(r, NULL, "q:ok:s");
    freeReplyObject(dt_rcmd(r, "XADD %s * id x a 0 p {broken", stream));
    ds__free(stream);
    ck_assert_int_eq(ds_queue_reserve(q, 0, &job, &err), DS_ERR_INTERNAL);
    /* the status is the real one without an error struct too */
    snprintf(fake.entry_id, sizeof fake.entry_id, "1-1");
    for (int k = 1; k < 8; k++) {
        ds__test_fail_alloc_after(k);
        ds_status st1 = ds_queue_enqueue(q, json_null(), 0, NULL, NULL);
        ds__test_fail_alloc_after(k);
        ds_status st2 = ds_queue_enqueue(q, json_null(), 60000, NULL, NULL);
        ds__test_fail_alloc_after(k);
        ds_status st3 = ds_queue_ack(q, &fake, NULL);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st1 == DS_OK || st1 == DS_ERR_NOMEM, "k=%d: %s", k,
                      ds_status_str(st1));
        ck_assert_msg(st2 == DS_OK || st2 == DS_ERR_NOMEM, "k=%d: %s", k,
                      ds_status_str(st2));
        ck_assert_msg(st3 == DS_ERR_NOT_FOUND || st3 == DS_ERR_NOMEM,
                      "k=%d: %s", k, ds_status_str(st3));
    }
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* The backoff stays within backoff_max_ms, jitter included, as the header
 * says: the delayed set's score is at most now + backoff_max_ms. */
START_TEST(test_queue_backoff_never_past_its_cap) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "capped", NULL, 0, 1000, 400);
    ds_error err = {0};
    char *delayed = ds__redis_key(r, NULL, "q:capped:d");
    for (int i = 0; i < 40; i++) {
        enqueue_int(q, i, 0, NULL);
        ds_queue_job *job = reserve(q, 0);
        ck_assert_ptr_nonnull(job);
        /* past the cap already: 400 * 2^5 >> 3200 */
        job->attempt = 6;
        redisReply *t = dt_rcmd(r, "TIME");
        long long before = atoll(t->element[0]->str) * 1000 +
                           atoll(t->element[1]->str) / 1000;
        freeReplyObject(t);
        ck_assert_ds_ok(ds_queue_fail(q, job, "again", NULL, &err), err);
        ds_queue_job_free(job);
        redisReply *z = dt_rcmd(r, "ZRANGE %s 0 0 WITHSCORES", delayed);
        ck_assert_uint_eq(z->elements, 2);
        long long due = atoll(z->element[1]->str);
        freeReplyObject(z);
        t = dt_rcmd(r, "TIME");
        long long after = atoll(t->element[0]->str) * 1000 +
                          atoll(t->element[1]->str) / 1000;
        freeReplyObject(t);
        /* open_queue: backoff_max_ms = 8 * 400; the script's clock read
         * lies between before and after */
        ck_assert_int_le(due - after, 3200);
        ck_assert_int_ge(due - before, 3200 * 3 / 4);
        freeReplyObject(dt_rcmd(r, "DEL %s", delayed));
    }
    ds__free(delayed);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* ---- dead letters that end, GDPR -------------------------------------------------- */

static ds_queue *open_dead_queue(ds_redis *r, const char *name,
                                 int64_t max_len, int64_t max_age_ms) {
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    ck_assert_int_eq(o.dead_max_len, 0);    /* zero: the default */
    ck_assert_int_eq(o.dead_max_age_ms, 0);
    o.name = name;
    o.max_attempts = 1;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 8;
    o.dead_max_len = max_len;
    o.dead_max_age_ms = max_age_ms;
    ds_queue *q;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_open(r, &o, &q, &err), err);
    return q;
}

/* One job of value v through one failed attempt into the dead letters. */
static void kill_one(ds_queue *q, int v) {
    enqueue_int(q, v, 0, NULL);
    ds_queue_job *job = reserve(q, 0);
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(n_of(job), v);
    bool dead = false;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_fail(q, job, "boom", &dead, &err), err);
    ck_assert(dead);
    ds_queue_job_free(job);
}

START_TEST(test_queue_dead_letters_trimmed_by_count_and_age) {
    ds_redis *r = dt_redis("queue");
    /* by count: the newest three stay */
    ds_queue *q = open_dead_queue(r, "deadlen", 3, 0);
    for (int i = 0; i < 5; i++)
        kill_one(q, i);
    ck_assert_int_eq(counts(q).dead, 3);
    ds_queue_job **dead;
    size_t n;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 3);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(n_of(dead[i]), (int)i + 2);
    ds_queue_jobs_free(dead, n);
    /* the stream expires with the default age, 7 days after its newest */
    char *k = ds__redis_key(r, NULL, "q:deadlen:dead");
    long long ttl = dt_rint(r, "PTTL %s", k);
    ck_assert_int_gt(ttl, DS_QUEUE_DEAD_MAX_AGE_MS_DEFAULT - 60000);
    ck_assert_int_le(ttl, DS_QUEUE_DEAD_MAX_AGE_MS_DEFAULT);
    ds__free(k);
    ds_queue_close(q);

    /* by age: a letter older than 1 s goes when the next one comes */
    q = open_dead_queue(r, "deadage", 0, 1000);
    kill_one(q, 1);
    k = ds__redis_key(r, NULL, "q:deadage:dead");
    ttl = dt_rint(r, "PTTL %s", k);
    ck_assert_int_gt(ttl, 0);
    ck_assert_int_le(ttl, 1000);
    usleep(1100 * 1000);
    kill_one(q, 2);
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(n_of(dead[0]), 2);
    ds_queue_jobs_free(dead, n);
    /* and with no new letter the stream itself expires */
    usleep(1100 * 1000);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", k), 0);
    ck_assert_int_eq(counts(q).dead, 0);
    ds__free(k);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_dead_purge) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_dead_queue(r, "purge", 0, 0);
    for (int i = 0; i < 4; i++)
        kill_one(q, i);
    ds_queue_job **dead;
    size_t n;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 4);
    char entry[48];
    snprintf(entry, sizeof entry, "%s", dead[1]->entry_id);
    ds_queue_jobs_free(dead, n);
    int64_t purged = -1;
    ck_assert_ds_ok(ds_queue_dead_purge(q, entry, &purged, &err), err);
    ck_assert_int_eq(purged, 1);
    ck_assert_ds_status(ds_queue_dead_purge(q, entry, &purged, &err),
                        DS_ERR_NOT_FOUND, err);
    ck_assert_int_eq(purged, 0);
    ck_assert_ds_ok(ds_queue_dead_list(q, 10, &dead, &n, &err), err);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(n_of(dead[0]), 0);
    ck_assert_int_eq(n_of(dead[1]), 2);
    ds_queue_jobs_free(dead, n);
    ck_assert_ds_ok(ds_queue_dead_purge(q, NULL, &purged, &err), err);
    ck_assert_int_eq(purged, 3);
    ck_assert_int_eq(counts(q).dead, 0);
    ck_assert_ds_ok(ds_queue_dead_purge(q, NULL, &purged, &err), err);
    ck_assert_int_eq(purged, 0);
    /* errors */
    ck_assert_ds_status(ds_queue_dead_purge(NULL, NULL, &purged, &err),
                        DS_ERR_INVALID, err);
    ck_assert_ds_status(ds_queue_dead_purge(q, "", &purged, &err),
                        DS_ERR_INVALID, err);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

static void enqueue_user(ds_queue *q, int64_t user, int v, int64_t delay_ms) {
    json_t *p = json_pack("{s:i, s:s}", "n", v, "email", "someone@example.com");
    ds_error err = {0};
    char id[DS_QUEUE_JOB_ID_LEN + 1];
    ds_status st = ds_queue_enqueue_for_user(q, user, p, delay_ms, id, &err);
    json_decref(p);
    ck_assert_ds_ok(st, err);
    ck_assert_uint_eq(strlen(id), DS_QUEUE_JOB_ID_LEN);
}

START_TEST(test_queue_erase_user_reaches_jobs) {
    ds_redis *r = dt_redis("queue");
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&o);
    o.name = "gdpr";
    o.max_attempts = 2;
    o.backoff_base_ms = 60000;
    o.backoff_max_ms = 60000;
    ds_queue *q;
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_open(r, &o, &q, &err), err);
    const int64_t ada = 4242, bob = 4343;
    /* ada: one reserved then failed (waits for its retry: delayed, with the
     * user carried along), one dead, one delayed, one reserved, one ready */
    enqueue_user(q, ada, 1, 0);
    ds_queue_job *job = reserve(q, 0);
    ck_assert_int_eq(n_of(job), 1);
    ck_assert_ds_ok(ds_queue_fail(q, job, "later", NULL, &err), err);
    ds_queue_job_free(job);
    ds_queue *q1 = open_dead_queue(r, "gdpr", 0, 0); /* max_attempts 1 */
    enqueue_user(q1, ada, 2, 0);
    job = reserve(q1, 0);
    ck_assert_int_eq(n_of(job), 2);
    bool dead = false;
    ck_assert_ds_ok(ds_queue_fail(q1, job, "boom", &dead, &err), err);
    ck_assert(dead);
    ds_queue_job_free(job);
    ds_queue_close(q1);
    enqueue_user(q, ada, 3, 3600000);
    enqueue_user(q, ada, 4, 0);
    ds_queue_job *held = reserve(q, 0);
    ck_assert_int_eq(n_of(held), 4);
    enqueue_user(q, ada, 5, 0);
    /* others' jobs stay */
    enqueue_user(q, bob, 6, 0);
    enqueue_user(q, bob, 7, 3600000);
    enqueue_int(q, 8, 0, NULL);
    ds_queue_counts c = counts(q);
    ck_assert_int_eq(c.ready, 3);    /* 5, 6, 8 */
    ck_assert_int_eq(c.reserved, 1); /* 4 */
    ck_assert_int_eq(c.delayed, 3);  /* 1 (retry), 3, 7 */
    ck_assert_int_eq(c.dead, 1);     /* 2 */

    int64_t removed = 0;
    ck_assert_ds_ok(ds_redis_erase_user(r, ada, &removed, &err), err);
    ck_assert_int_eq(removed, 5);
    c = counts(q);
    ck_assert_int_eq(c.ready, 2);
    ck_assert_int_eq(c.reserved, 0);
    ck_assert_int_eq(c.delayed, 1);
    ck_assert_int_eq(c.dead, 0);
    /* the held job is gone: its worker learns so on ack */
    ck_assert_ds_status(ds_queue_ack(q, held, &err), DS_ERR_NOT_FOUND, err);
    ds_queue_job_free(held);
    /* no byte of ada's payloads is left in the queue's keys */
    const char *suffix[3] = {"s", "d", "dead"};
    for (int i = 0; i < 3; i++) {
        char *k = ds__redis_key(r, NULL, "q:gdpr:%s", suffix[i]);
        redisReply *dump = dt_rcmd(r, i == 1 ? "ZRANGE %s 0 -1" : "XRANGE %s - +", k);
        for (size_t e = 0; e < dump->elements; e++) {
            const redisReply *x = dump->element[e];
            if (x->type == REDIS_REPLY_STRING)
                ck_assert_ptr_null(strstr(x->str, "\"u\":\"4242\""));
            else
                for (size_t f = 0; f + 1 < x->element[1]->elements; f += 2)
                    ck_assert(!(strcmp(x->element[1]->element[f]->str, "u") == 0 &&
                                strcmp(x->element[1]->element[f + 1]->str, "4242") == 0));
        }
        freeReplyObject(dump);
        ds__free(k);
    }
    /* bob's jobs are whole and still say whose they are */
    int seen = 0;
    while ((job = reserve(q, 0)) != NULL) {
        ck_assert(n_of(job) == 6 || n_of(job) == 8);
        ack_ok(q, job);
        ds_queue_job_free(job);
        seen++;
    }
    ck_assert_int_eq(seen, 2);
    ck_assert_ds_ok(ds_redis_erase_user(r, bob, &removed, &err), err);
    ck_assert_int_eq(removed, 1); /* the delayed one */
    ck_assert_int_eq(counts(q).delayed, 0);
    /* errors */
    json_t *p = json_object();
    ck_assert_ds_status(ds_queue_enqueue_for_user(q, 0, p, 0, NULL, &err),
                        DS_ERR_INVALID, err);
    ck_assert_ds_status(ds_queue_enqueue_for_user(NULL, 1, p, 0, NULL, &err),
                        DS_ERR_INVALID, err);
    json_decref(p);
    o.dead_max_len = -1;
    ck_assert_ds_status(ds_queue_open(r, &o, &q1, &err), DS_ERR_INVALID, err);
    o.dead_max_len = 0;
    o.dead_max_age_ms = 10;
    ck_assert_ds_status(ds_queue_open(r, &o, &q1, &err), DS_ERR_INVALID, err);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* ---- stats ------------------------------------------------------------------- */

static ds_queue_stats stats_of(const ds_queue *q) {
    ds_queue_stats s = {.size = sizeof(ds_queue_stats)};
    ds_queue_stats_init(&s);
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_stats_get(q, &s, &err), err);
    ck_assert_uint_eq(s.size, sizeof s);
    return s;
}

START_TEST(test_queue_stats_count_each_outcome) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "stats", "w1", 0, 2, 1);
    ds_queue_stats s = stats_of(q);
    ck_assert_uint_eq(s.enqueued + s.reserved + s.acked + s.failed + s.errors, 0);
    for (int i = 1; i <= 3; i++)
        enqueue_int(q, i, 0, NULL);
    enqueue_int(q, 4, 600000, NULL); /* delayed: counted when enqueued */
    json_t *batch[2] = {json_pack("{s:i}", "n", 5), json_pack("{s:i}", "n", 6)};
    ds_error err = {0};
    ck_assert_ds_ok(ds_queue_enqueue_batch(q, batch, 2, &err), err);
    json_decref(batch[0]);
    json_decref(batch[1]);
    s = stats_of(q);
    ck_assert_uint_eq(s.enqueued, 6);
    ck_assert_uint_eq(s.reserved, 0);

    ds_queue_job *j1 = reserve(q, 0);
    ack_ok(q, j1);
    ds_queue_job *j2 = reserve(q, 0);
    bool dead = true;
    ck_assert_ds_ok(ds_queue_fail(q, j2, "try again", &dead, &err), err);
    ck_assert(!dead);
    /* an acknowledgement of a job no longer held is lost, not an error */
    ck_assert_ds_status(ds_queue_ack(q, j2, &err), DS_ERR_NOT_FOUND, err);
    /* bad arguments are the caller's: not counted */
    ds_queue_job *none;
    ck_assert_ds_status(ds_queue_reserve(q, -1, &none, &err), DS_ERR_INVALID, err);
    ck_assert_ds_status(ds_queue_enqueue(q, NULL, 0, NULL, &err), DS_ERR_INVALID, err);
    s = stats_of(q);
    ck_assert_uint_eq(s.enqueued, 6);
    ck_assert_uint_eq(s.reserved, 2);
    ck_assert_uint_eq(s.acked, 1);
    ck_assert_uint_eq(s.failed, 1);
    ck_assert_uint_eq(s.retried, 1);
    ck_assert_uint_eq(s.dead_lettered, 0);
    ck_assert_uint_eq(s.lost, 1);
    ck_assert_uint_eq(s.reclaimed, 0);
    ck_assert_uint_eq(s.errors, 0);

    /* the rest: three ready jobs, then the retry of j2 (its second and
     * last attempt), which fails into the dead letters */
    int acked = 0, died = 0;
    for (int i = 0; i < 4; i++) {
        ds_queue_job *j = reserve(q, 10000);
        ck_assert_ptr_nonnull(j);
        if (strcmp(j->id, j2->id) == 0) {
            ck_assert_int_eq(j->attempt, 2);
            ck_assert_ds_ok(ds_queue_fail(q, j, "again", &dead, &err), err);
            ck_assert(dead);
            died++;
        } else {
            ack_ok(q, j);
            acked++;
        }
        ds_queue_job_free(j);
    }
    ck_assert_int_eq(acked, 3);
    ck_assert_int_eq(died, 1);
    s = stats_of(q);
    ck_assert_uint_eq(s.enqueued, 6);
    ck_assert_uint_eq(s.reserved, 6);
    ck_assert_uint_eq(s.acked, 4);
    ck_assert_uint_eq(s.failed, 2);
    ck_assert_uint_eq(s.retried, 1);
    ck_assert_uint_eq(s.dead_lettered, 1);
    ck_assert_uint_eq(s.lost, 1);
    ck_assert_uint_eq(s.errors, 0);
    ck_assert_int_eq(counts(q).dead, 1);
    ds_queue_job_free(j1);
    ds_queue_job_free(j2);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_stats_reclaim_dead_letter_and_errors) {
    ds_redis *r = dt_redis("queue");
    ds_queue *a = open_queue(r, "stats2", "worker-a", 150, 2, 1);
    ds_queue *b = open_queue(r, "stats2", "worker-b", 150, 2, 1);
    enqueue_int(a, 1, 0, NULL);
    ds_queue_job *ja = reserve(a, 0); /* and worker a goes quiet */
    ds_queue_job *jb = reserve(b, 10000);
    ck_assert_ptr_nonnull(jb);
    ck_assert_str_eq(jb->id, ja->id);
    ds_queue_stats s = stats_of(b);
    ck_assert_uint_eq(s.reserved, 1);
    ck_assert_uint_eq(s.reclaimed, 1);
    ck_assert_uint_eq(s.dead_lettered, 0);
    /* b goes quiet too: past its attempts, a later reserve of b moves the
     * job to the dead letters (bounded polling, not a fixed sleep) */
    for (int i = 0; i < 40 && stats_of(b).dead_lettered == 0; i++)
        ck_assert_ptr_null(reserve(b, 250));
    s = stats_of(b);
    ck_assert_uint_eq(s.dead_lettered, 1);
    ck_assert_uint_eq(s.reserved, 1);
    ck_assert_uint_eq(s.failed, 0);
    ck_assert_int_eq(counts(b).dead, 1);
    ds_error err = {0};
    ck_assert_ds_status(ds_queue_ack(a, ja, &err), DS_ERR_NOT_FOUND, err);
    /* an entry that is not a job (written by something else) is an error */
    char *stream = ds__redis_key(r, NULL, "q:stats2:s");
    freeReplyObject(dt_rcmd(r, "XADD %s * id x a 0 p not-json", stream));
    ds__free(stream);
    ds_queue_job *none;
    ck_assert_ds_status(ds_queue_reserve(a, 0, &none, &err), DS_ERR_INTERNAL, err);
    s = stats_of(a);
    ck_assert_uint_eq(s.enqueued, 1);
    ck_assert_uint_eq(s.reserved, 1);
    ck_assert_uint_eq(s.reclaimed, 0);
    ck_assert_uint_eq(s.lost, 1);
    ck_assert_uint_eq(s.errors, 1);
    ck_assert_uint_eq(s.dead_lettered, 0);
    ds_queue_job_free(ja);
    ds_queue_job_free(jb);
    dt_redis_flush_prefix(r);
    ds_queue_close(a);
    ds_queue_close(b);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_queue_stats_errors) {
    ds_redis *r = dt_redis("queue");
    ds_queue *q = open_queue(r, "stats3", "w1", 0, 0, 0);
    ds_error err = {0};
    ds_queue_stats s = {.size = sizeof(ds_queue_stats)};
    ds_queue_stats_init(&s);
    ck_assert_ds_status(ds_queue_stats_get(NULL, &s, &err), DS_ERR_INVALID, err);
    ck_assert_ds_status(ds_queue_stats_get(q, NULL, &err), DS_ERR_INVALID, err);
    /* a struct from another build of the header (or never initialised) */
    s.size = sizeof s - sizeof(uint64_t);
    ck_assert_ds_status(ds_queue_stats_get(q, &s, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "ds_queue_stats.size"));
    s.size = sizeof s + 8;
    ck_assert_ds_status(ds_queue_stats_get(q, &s, &err), DS_ERR_INVALID, err);
    ds_queue_stats lit = DS_QUEUE_STATS_INIT;
    ck_assert_ds_ok(ds_queue_stats_get(q, &lit, &err), err);
    ds_queue_stats_init(NULL);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

/* ---- the header's promises not covered above ------------------------------------- */

/* The consumers of the queue's group, by name; -1 when `name` is not one. */
static long long consumer_pending(ds_redis *r, const char *queue, const char *name) {
    char *stream = ds__redis_key(r, NULL, "q:%s:s", queue);
    redisReply *rep = dt_rcmd(r, "XINFO CONSUMERS %s ds", stream);
    ds__free(stream);
    ck_assert_int_eq(rep->type, REDIS_REPLY_ARRAY);
    long long pending = -1;
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *c = rep->element[i];
        const char *cname = NULL;
        long long cpending = -1;
        for (size_t k = 0; k + 1 < c->elements; k += 2) {
            if (strcmp(c->element[k]->str, "name") == 0)
                cname = c->element[k + 1]->str;
            else if (strcmp(c->element[k]->str, "pending") == 0)
                cpending = c->element[k + 1]->integer;
        }
        if (cname && strcmp(cname, name) == 0)
            pending = cpending;
    }
    freeReplyObject(rep);
    return pending;
}

START_TEST(test_queue_header_promises) {
    ds_queue_options d = {.size = sizeof(ds_queue_options)};
    memset(&d, 0x5a, sizeof d);
    ds_queue_options_init(&d);
    ck_assert_ptr_null(d.name);
    ck_assert_ptr_null(d.consumer);
    /* zero means default: the initialiser sets only the size */
    ck_assert_uint_eq(d.size, sizeof d);
    ck_assert_int_eq(d.visibility_timeout_ms, 0);
    ck_assert_int_eq(d.max_attempts, 0);
    ck_assert_int_eq(d.backoff_base_ms, 0);
    ck_assert_int_eq(d.backoff_max_ms, 0);
    ck_assert_int_eq(d.dead_max_len, 0);
    ck_assert_int_eq(d.dead_max_age_ms, 0);

    ds_redis *r = dt_redis("queue");
    ds_error err = {0};
    /* close drops the consumer that holds nothing, keeps one that holds a
     * job (another worker reclaims it later) */
    ds_queue *idle = open_queue(r, "promises", "idle-worker", 0, 0, 0);
    ds_queue *busy = open_queue(r, "promises", "busy-worker", 0, 0, 0);
    enqueue_int(busy, 1, 0, NULL);
    ds_queue_job *held = reserve(busy, 0);
    ck_assert_ptr_nonnull(held);
    enqueue_int(idle, 2, 0, NULL);
    ds_queue_job *done = reserve(idle, 0); /* registers idle-worker */
    ck_assert_ptr_nonnull(done);
    ack_ok(idle, done);
    ds_queue_job_free(done);
    ck_assert_int_eq(consumer_pending(r, "promises", "idle-worker"), 0);
    ck_assert_int_eq(consumer_pending(r, "promises", "busy-worker"), 1);
    ds_queue_close(idle);
    ds_queue_close(busy);
    ck_assert_int_eq(consumer_pending(r, "promises", "idle-worker"), -1);
    ck_assert_int_eq(consumer_pending(r, "promises", "busy-worker"), 1);
    ds_queue_job_free(held); /* still valid after close */

    ds_queue *q = open_queue(r, "promises", "w", 0, 0, 0);
    /* delays up to a year, payloads up to 16 MiB encoded */
    json_t *p = json_integer(1);
    ck_assert_ds_ok(ds_queue_enqueue(q, p, INT64_C(31536000000), NULL, &err), err);
    ck_assert_ds_status(ds_queue_enqueue(q, p, INT64_C(31536000001), NULL, &err),
                        DS_ERR_INVALID, err);
    json_decref(p);
    size_t big = 16u * 1024 * 1024 - 2; /* two quotes: 16 MiB encoded */
    char *text = malloc(big + 2);
    ck_assert_ptr_nonnull(text);
    memset(text, 'x', big + 1);
    text[big + 1] = '\0';
    p = json_string(text); /* one byte over */
    ck_assert_ds_status(ds_queue_enqueue(q, p, 0, NULL, &err), DS_ERR_INVALID, err);
    ck_assert_ptr_nonnull(strstr(err.message, "16 MiB"));
    json_decref(p);
    text[big] = '\0';
    p = json_string(text);
    ck_assert_ds_ok(ds_queue_enqueue(q, p, 0, NULL, &err), err);
    json_decref(p);
    free(text);
    ds_queue_job *j = reserve(q, 0);
    ck_assert_uint_eq(strlen(json_string_value(j->payload)), big);
    ack_ok(q, j);
    ds_queue_job_free(j);
    /* a batch is one round trip per 500 */
    json_t *one = json_integer(1);
    json_t *batch[1200];
    for (int i = 0; i < 1200; i++)
        batch[i] = one;
    ds_redis_stats before = {.size = sizeof(ds_redis_stats)}, after = {.size = sizeof(ds_redis_stats)};
    ck_assert_ds_ok(ds_redis_stats_get(r, &before, &err), err);
    ck_assert_ds_ok(ds_queue_enqueue_batch(q, batch, 1200, &err), err);
    ck_assert_ds_ok(ds_redis_stats_get(r, &after, &err), err);
    json_decref(one);
    ck_assert_uint_eq(after.commands - before.commands, 3);
    ck_assert_int_eq(counts(q).ready, 1200);
    dt_redis_flush_prefix(r);
    ds_queue_close(q);
    ds_redis_close(r);
}
END_TEST

Suite *ds_test_queue_suite(void) {
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("delivery");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_queue_enqueue_reserve_ack);
    tcase_add_test(tc, test_queue_delayed_job);
    tcase_add_test(tc, test_queue_retry_backoff_then_dead_letter);
    suite_add_tcase(s, tc);
    tc = tcase_create("reclaim");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_queue_reclaim_after_visibility_timeout);
    tcase_add_test(tc, test_queue_touch_keeps_a_long_job);
    tcase_add_test(tc, test_queue_lost_job_exhausts_attempts);
    tcase_add_test(tc, test_queue_killed_worker_job_redelivered);
    suite_add_tcase(s, tc);
    tc = tcase_create("drain");
    tcase_set_timeout(tc, 200);
    tcase_add_test(tc, test_queue_four_workers_drain_10000_jobs);
    suite_add_tcase(s, tc);
    tc = tcase_create("restart");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_queue_resumes_after_restart);
    tcase_add_test(tc, test_queue_recreates_lost_group);
    suite_add_tcase(s, tc);
    tc = tcase_create("damaged_attempt_count");
    tcase_add_test(tc, test_queue_damaged_attempt_count);
    suite_add_tcase(s, tc);
    tc = tcase_create("entry_without_fields");
    tcase_add_test(tc, test_queue_entry_without_fields_dead_letters);
    suite_add_tcase(s, tc);
    tc = tcase_create("data_that_ends");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_queue_dead_letters_trimmed_by_count_and_age);
    tcase_add_test(tc, test_queue_dead_purge);
    tcase_add_test(tc, test_queue_erase_user_reaches_jobs);
    tcase_add_test(tc, test_queue_backoff_never_past_its_cap);
    suite_add_tcase(s, tc);
    tc = tcase_create("stats");
    tcase_add_test(tc, test_queue_stats_count_each_outcome);
    tcase_add_test(tc, test_queue_stats_reclaim_dead_letter_and_errors);
    tcase_add_test(tc, test_queue_stats_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("promises");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_queue_header_promises);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_queue_errors);
    suite_add_tcase(s, tc);
    return s;
}
