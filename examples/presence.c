/*
 * presence: who is online and typing in a conversation, with live events.
 *
 *   REDIS_URL=redis://:pw@host:6379/0 ./presence
 *
 * A subscriber receives presence events on a thread of its own while this
 * program marks two users online, one of them typing, then offline. At the
 * end the users' presence is erased as a GDPR erase would.
 */
#include <datastore/datastore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

enum { CONVERSATION = 1001 };

static atomic_int events_seen;

/* Runs on the subscription's thread. */
static void on_event(void *ud, const ds_presence_event *ev) {
    (void)ud;
    printf("event: user %lld %s in conversation %lld\n",
           (long long)ev->user_id, ds_presence_event_type_str(ev->type),
           (long long)ev->conversation_id);
    fflush(stdout);
    atomic_fetch_add(&events_seen, 1);
}

static void print_ids(const char *what, int64_t *ids, size_t n) {
    printf("%s:", what);
    for (size_t i = 0; i < n; i++)
        printf(" %lld", (long long)ids[i]);
    printf("%s\n", n ? "" : " nobody");
}

int main(void) {
    ds_error err = {0};
    ds_config *cfg = NULL;
    ds_redis *redis = NULL;
    ds_presence *presence = NULL;
    ds_presence_subscription *sub = NULL;
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = 1;

    if (ds_config_from_env(&cfg, &err) != DS_OK ||
        ds_redis_open(cfg, &redis, &err) != DS_OK ||
        ds_presence_open(redis, NULL, &presence, &err) != DS_OK)
        goto fail;
    int64_t conversations[] = {CONVERSATION};
    if (ds_presence_subscribe(presence, conversations, 1, on_event, NULL, &sub,
                              &err) != DS_OK)
        goto fail;

    if (ds_presence_set_online(presence, CONVERSATION, 42, &err) != DS_OK ||
        ds_presence_set_online(presence, CONVERSATION, 7, &err) != DS_OK ||
        ds_presence_set_typing(presence, CONVERSATION, 42, true, &err) != DS_OK)
        goto fail;
    if (ds_presence_list_online(presence, CONVERSATION, &ids, &n, &err) != DS_OK)
        goto fail;
    print_ids("online", ids, n);
    ds_free(ids);
    ids = NULL;
    if (ds_presence_list_typing(presence, CONVERSATION, &ids, &n, &err) != DS_OK)
        goto fail;
    print_ids("typing", ids, n);
    ds_free(ids);
    ids = NULL;
    if (ds_presence_set_typing(presence, CONVERSATION, 42, false, &err) != DS_OK ||
        ds_presence_set_offline(presence, CONVERSATION, 42, &err) != DS_OK)
        goto fail;

    /* 5 events: 2 online, typing, typing stopped, offline */
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 500 && atomic_load(&events_seen) < 5; i++)
        nanosleep(&tick, NULL);
    ds_presence_unsubscribe(sub);
    sub = NULL;
    if (atomic_load(&events_seen) < 5) {
        fprintf(stderr, "presence: only %d of 5 events arrived\n",
                atomic_load(&events_seen));
        goto fail;
    }

    int64_t removed;
    if (ds_redis_erase_user(redis, 7, &removed, &err) != DS_OK)
        goto fail;
    printf("erased user 7: %lld presence entr%s\n", (long long)removed,
           removed == 1 ? "y" : "ies");
    rc = 0;

fail:
    if (rc != 0)
        fprintf(stderr, "presence: %s: %s\n", ds_status_str(err.code),
                err.message);
    ds_free(ids);
    ds_presence_unsubscribe(sub);
    ds_presence_close(presence);
    ds_redis_close(redis);
    ds_config_free(cfg);
    return rc;
}
