/*
 * queue: a producer and a worker on a Redis Streams job queue.
 *
 *   REDIS_URL=redis://:pw@host:6379/0 ./queue
 *
 * The producer enqueues five e-mails (one of them for later). The worker
 * reserves jobs, "sends" them and acknowledges each; one delivery fails the
 * first time and is retried after a short backoff. A job whose worker dies
 * would come back to another worker after the visibility timeout; a job that
 * keeps failing ends in the dead letters. Producer and worker run in one
 * process here; in production they are separate services.
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_redis *redis = NULL;
    ds_queue *queue = NULL;
    ds_queue_job *job = NULL;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_redis_open(cfg, &redis, &err) != DS_OK)
        goto fail;
    ds_queue_options opts = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&opts);
    opts.name = "example-emails";
    opts.visibility_timeout_ms = 10000; /* longer than one job takes */
    opts.max_attempts = 3;
    opts.backoff_base_ms = 100;
    if (ds_queue_open(redis, &opts, &queue, &err) != DS_OK)
        goto fail;

    /* producer */
    const char *to[] = {"ada@example.com", "bob@example.com", "cy@example.com",
                        "di@example.com", "ed@example.com"};
    char flaky_id[DS_QUEUE_JOB_ID_LEN + 1] = "";
    for (int i = 0; i < 5; i++) {
        json_t *payload = json_pack("{s:s, s:s}", "to", to[i], "template",
                                    "welcome");
        char id[DS_QUEUE_JOB_ID_LEN + 1];
        ds_status st = ds_queue_enqueue(queue, payload, i == 4 ? 300 : 0, id,
                                        &err);
        json_decref(payload);
        if (st != DS_OK)
            goto fail;
        if (i == 1)
            strcpy(flaky_id, id);
    }
    printf("enqueued 5 jobs (one delayed by 300 ms)\n");

    /* worker */
    int sent = 0;
    while (sent < 5) {
        if (ds_queue_reserve(queue, 5000, &job, &err) != DS_OK)
            goto fail;
        if (!job) {
            fprintf(stderr, "queue: no job within 5 s\n");
            goto fail;
        }
        const char *addr = json_string_value(json_object_get(job->payload, "to"));
        if (strcmp(job->id, flaky_id) == 0 && job->attempt == 1) {
            bool dead;
            if (ds_queue_fail(queue, job, "SMTP server busy", &dead, &err) !=
                DS_OK)
                goto fail;
            printf("attempt %d for %s failed: retry later\n", job->attempt,
                   addr ? addr : "?");
        } else if (strlen(job->id) == DS_QUEUE_JOB_ID_LEN) {
            if (ds_queue_ack(queue, job, &err) != DS_OK)
                goto fail;
            printf("sent to %s (attempt %d%s%s)\n", addr ? addr : "?",
                   job->attempt, job->last_error[0] ? ", after: " : "",
                   job->last_error);
            if (addr)
                for (int i = 0; i < 5; i++)
                    if (strcmp(addr, to[i]) == 0)
                        sent++;
        }
        ds_queue_job_free(job);
        job = NULL;
    }
    ds_queue_counts counts = DS_QUEUE_COUNTS_INIT;
    if (ds_queue_counts_get(queue, &counts, &err) != DS_OK)
        goto fail;
    printf("queue: %lld ready, %lld reserved, %lld delayed, %lld dead\n",
           (long long)counts.ready, (long long)counts.reserved,
           (long long)counts.delayed, (long long)counts.dead);
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "queue: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_queue_job_free(job);
    ds_queue_close(queue);
    ds_redis_close(redis);
    ds_config_free(cfg);
    return rc;
}
