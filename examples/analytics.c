/*
 * analytics: record product analytics events, one at a time and in a batch
 * streamed through PostgreSQL's binary COPY (all or nothing).
 *
 *   DATABASE_URL=postgresql://... ./analytics
 *
 * Needs a migrated database (ds-migrate up).
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_pool *pool = NULL;
    ds_event *events = NULL;
    json_t *props = NULL, *bad = NULL;
    int rc = 1;
    enum { N = 10000 }; /* repo_max_batch by default */

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        goto fail;

    props = json_pack("{s:s, s:i}", "page", "/chat", "latency_ms", 120);
    events = calloc(N, sizeof *events);
    bad = json_array();
    if (!props || !events || !bad) {
        fprintf(stderr, "analytics: out of memory\n");
        goto fail;
    }
    ds_event one = {sizeof(ds_event), 0, "app_opened", props, 0}; /* anonymous, now */
    if (ds_event_record(pool, &one, &err) != DS_OK)
        goto fail;

    for (int i = 0; i < N; i++) {
        events[i].size = sizeof events[i];
        events[i].user_id = 0;
        events[i].name = i % 4 ? "message_sent" : "search";
        events[i].properties = i % 10 ? NULL : props;
        events[i].occurred_at = 0; /* now */
    }
    if (ds_event_record_batch(pool, events, N, &err) != DS_OK)
        goto fail;
    printf("recorded 1 + %d events through COPY\n", N);

    /* One bad event (properties must be an object) rejects the batch. */
    events[N / 2].properties = bad;
    ds_status st = ds_event_record_batch(pool, events, N, &err);
    printf("a batch with a bad event: %s (%s); nothing of it was written\n",
           ds_status_str(st), err.message);
    if (st != DS_ERR_INVALID) {
        if (st == DS_OK)
            fprintf(stderr, "analytics: the bad batch was accepted\n");
        goto fail;
    }
    rc = 0;

fail:
    if (rc != 0 && err.code != DS_OK)
        fprintf(stderr, "analytics: %s: %s\n", ds_status_str(err.code),
                err.message);
    free(events);
    json_decref(props);
    json_decref(bad);
    ds_pool_close(pool);
    ds_config_free(cfg);
    return rc;
}
