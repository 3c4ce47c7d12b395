/*
 * Presence and typing: sorted sets of user ids scored by expiry (server
 * time), changed by Lua scripts that publish an event on each transition,
 * and a subscriber thread per subscription on a connection of its own.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/growable.h"
#include "datastore/presence.h"
#include "redis/redis_internal.h"

#define MAX_CONVERSATIONS 1024
#define IDLE_PING_MS 30000
#define RECONNECT_MAX_MS 2000

struct ds_presence {
    ds_redis *redis;
    int online_ttl_ms;
    int typing_ttl_ms;
};

/* ---- Lua ------------------------------------------------------------------ */

#define NOW_MS_LUA                                                             \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

#define EVENT_LUA                                                              \
    "local function event(kind, now)\n"                                        \
    "  redis.call('PUBLISH', ARGV[3], string.format(\n"                        \
    "    '{\"type\":\"%s\",\"conversation_id\":%s,\"user_id\":%s,"             \
    "\"at_ms\":%d}',\n"                                                        \
    "    kind, ARGV[4], ARGV[1], now))\n"                                      \
    "end\n"

/* KEYS[1] the state set, KEYS[2] the user's key set; ARGV[1] user id,
 * [2] TTL ms, [3] channel, [4] conversation id, [5] "z:<KEYS[1]>",
 * [6] event type. Publishes when the user was not in the state. */
static ds__redis_script mark_script = DS__REDIS_SCRIPT(
    "presence_mark", DS__REDIS_LUA_TRACK_FN NOW_MS_LUA EVENT_LUA
    "local ttl = tonumber(ARGV[2])\n"
    "local prev = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))\n"
    "redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if redis.call('PTTL', KEYS[1]) < ttl then\n"
    "  redis.call('PEXPIRE', KEYS[1], ttl)\n"
    "end\n"
    "ds_track(KEYS[2], ARGV[5], ttl)\n"
    "if not prev or prev <= now then event(ARGV[6], now) return 1 end\n"
    "return 0\n");

/* KEYS[1] the state set (and KEYS[2], another set the user leaves
 * silently); ARGV[1] user id, [3] channel, [4] conversation id, [6] event
 * type. Publishes when the user was in the state. */
static ds__redis_script unmark_script = DS__REDIS_SCRIPT(
    "presence_unmark", NOW_MS_LUA EVENT_LUA
    "local prev = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "if #KEYS > 1 then redis.call('ZREM', KEYS[2], ARGV[1]) end\n"
    "if prev and prev > now then event(ARGV[6], now) return 1 end\n"
    "return 0\n");

/* KEYS[1] a state set: the members not yet expired. */
static ds__redis_script list_script = DS__REDIS_SCRIPT(
    "presence_list", NOW_MS_LUA
    "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n");

/* ---- handle ---------------------------------------------------------------- */

DS_EXPORT void ds_presence_options_init(ds_presence_options *opts) {
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

DS_EXPORT ds_status ds_presence_open(ds_redis *redis,
                                     const ds_presence_options *opts,
                                     ds_presence **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, redis, "redis is NULL");
    ds_presence_options o = DS_PRESENCE_OPTIONS_INIT;
    ds_status checked = DS__IN(opts, &o, ds_presence_options, err);
    if (checked != DS_OK)
        return checked;
    DS_CHECK_ARG(err, o.online_ttl_ms >= 0, "online_ttl_ms is negative");
    DS_CHECK_ARG(err, o.typing_ttl_ms >= 0, "typing_ttl_ms is negative");
    if (o.online_ttl_ms == 0)
        o.online_ttl_ms = 60000;
    if (o.typing_ttl_ms == 0)
        o.typing_ttl_ms = 6000;
    ds_presence *p = ds__calloc(1, sizeof *p);
    if (!p)
        return ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
    p->redis = redis;
    p->online_ttl_ms = o.online_ttl_ms;
    p->typing_ttl_ms = o.typing_ttl_ms;
    *out = p;
    return DS_OK;
}

DS_EXPORT void ds_presence_close(ds_presence *presence) { ds__free(presence); }

DS_EXPORT const char *ds_presence_event_type_str(ds_presence_event_type type) {
    switch (type) {
    case DS_PRESENCE_ONLINE: return "online";
    case DS_PRESENCE_OFFLINE: return "offline";
    case DS_PRESENCE_TYPING: return "typing";
    case DS_PRESENCE_TYPING_STOPPED: return "typing_stopped";
    case DS_PRESENCE_RESYNC: return "resync";
    }
    return "unknown";
}

/* ---- changes ------------------------------------------------------------------ */

typedef struct keys {
    char *online, *typing, *channel, *userset, *entry;
    char conv[24], user[24], ttl[24];
} keys;

static void keys_free(keys *k) {
    ds__free(k->online);
    ds__free(k->typing);
    ds__free(k->channel);
    ds__free(k->userset);
    ds__free(k->entry);
}

/* The keys of one (conversation, user); `state` picks the "z:" entry. */
static ds_status keys_make(ds_presence *p, int64_t conv, int64_t user,
                           bool typing_entry, keys *k, ds_error *err) {
    memset(k, 0, sizeof *k);
    snprintf(k->conv, sizeof k->conv, "%lld", (long long)conv);
    snprintf(k->user, sizeof k->user, "%lld", (long long)user);
    k->online = ds__redis_key(p->redis, NULL, "p:on:%lld", (long long)conv);
    k->typing = ds__redis_key(p->redis, NULL, "p:ty:%lld", (long long)conv);
    k->channel = ds__redis_key(p->redis, NULL, "p:ev:%lld", (long long)conv);
    k->userset = ds__redis_user_set_key(p->redis, user);
    const char *state = typing_entry ? k->typing : k->online;
    if (state)
        k->entry = ds__redis_user_entry('z', state, NULL);
    if (!k->online || !k->typing || !k->channel || !k->userset || !k->entry) {
        keys_free(k);
        return ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
    }
    return DS_OK;
}

static ds_status run(ds_presence *p, ds__redis_script *s, int nkeys,
                     const char **args, ds_error *err) {
    return ds__redis_run_script(p->redis, s, nkeys, 6, args, NULL, NULL, err);
}

static ds_status mark(ds_presence *p, int64_t conv, int64_t user, bool typing,
                      ds_error *err) {
    keys k;
    ds_status st = keys_make(p, conv, user, typing, &k, err);
    if (st != DS_OK)
        return st;
    snprintf(k.ttl, sizeof k.ttl, "%d",
             typing ? p->typing_ttl_ms : p->online_ttl_ms);
    const char *args[8] = {typing ? k.typing : k.online,
                           k.userset,
                           k.user,
                           k.ttl,
                           k.channel,
                           k.conv,
                           k.entry,
                           typing ? "typing" : "online"};
    st = run(p, &mark_script, 2, args, err);
    keys_free(&k);
    return st;
}

static ds_status unmark(ds_presence *p, int64_t conv, int64_t user,
                        bool typing, ds_error *err) {
    keys k;
    ds_status st = keys_make(p, conv, user, typing, &k, err);
    if (st != DS_OK)
        return st;
    /* ARGV: user, (unused), channel, conversation, (unused), event */
    if (typing) {
        const char *args[7] = {k.typing, k.user,  "", k.channel,
                               k.conv,   "",      "typing_stopped"};
        st = run(p, &unmark_script, 1, args, err);
    } else {
        /* offline also ends typing, silently */
        const char *args[8] = {k.online, k.typing, k.user, "", k.channel,
                               k.conv,   "",       "offline"};
        st = run(p, &unmark_script, 2, args, err);
    }
    keys_free(&k);
    return st;
}

#define CHECK_IDS(err, p, conv, user)                                          \
    do {                                                                       \
        DS_CHECK_ARG(err, p, "presence is NULL");                              \
        DS_CHECK_ARG(err, (conv) > 0, "conversation_id must be positive");     \
        DS_CHECK_ARG(err, (user) > 0, "user_id must be positive");             \
    } while (0)

DS_EXPORT ds_status ds_presence_set_online(ds_presence *presence,
                                           int64_t conversation_id,
                                           int64_t user_id, ds_error *err) {
    CHECK_IDS(err, presence, conversation_id, user_id);
    return mark(presence, conversation_id, user_id, false, err);
}

DS_EXPORT ds_status ds_presence_set_offline(ds_presence *presence,
                                            int64_t conversation_id,
                                            int64_t user_id, ds_error *err) {
    CHECK_IDS(err, presence, conversation_id, user_id);
    return unmark(presence, conversation_id, user_id, false, err);
}

DS_EXPORT ds_status ds_presence_set_typing(ds_presence *presence,
                                           int64_t conversation_id,
                                           int64_t user_id, bool typing,
                                           ds_error *err) {
    CHECK_IDS(err, presence, conversation_id, user_id);
    return typing ? mark(presence, conversation_id, user_id, true, err)
                  : unmark(presence, conversation_id, user_id, true, err);
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static ds_status list(ds_presence *p, int64_t conv, bool typing,
                      int64_t **ids, size_t *count, ds_error *err) {
    DS_CHECK_ARG(err, ids && count, "user_ids or count is NULL");
    *ids = NULL;
    *count = 0;
    DS_CHECK_ARG(err, p, "presence is NULL");
    DS_CHECK_ARG(err, conv > 0, "conversation_id must be positive");
    char *key = ds__redis_key(p->redis, NULL, "p:%s:%lld", typing ? "ty" : "on",
                              (long long)conv);
    if (!key)
        return ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
    const char *args[1] = {key};
    redisReply *r;
    ds_status st =
        ds__redis_run_script(p->redis, &list_script, 1, 0, args, NULL, &r, err);
    ds__free(key);
    if (st != DS_OK)
        return st;
    if (r->type != REDIS_REPLY_ARRAY) {
        st = ds__redis_unexpected(r, "presence list", err);
        freeReplyObject(r);
        return st;
    }
    int64_t *out = NULL;
    if (r->elements > 0) {
        out = ds__calloc(r->elements, sizeof *out);
        if (!out) {
            freeReplyObject(r);
            return ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        char *end = NULL;
        long long v = e->type == REDIS_REPLY_STRING ? strtoll(e->str, &end, 10)
                                                    : 0;
        if (end && *end == '\0' && v > 0)
            out[n++] = v; /* anything else is not ours: skip it */
    }
    freeReplyObject(r);
    if (n > 0)
        qsort(out, n, sizeof *out, cmp_id);
    if (n == 0) {
        ds__free(out);
        out = NULL;
    }
    *ids = out;
    *count = n;
    return DS_OK;
}

DS_EXPORT ds_status ds_presence_list_online(ds_presence *presence,
                                            int64_t conversation_id,
                                            int64_t **user_ids, size_t *count,
                                            ds_error *err) {
    return list(presence, conversation_id, false, user_ids, count, err);
}

DS_EXPORT ds_status ds_presence_list_typing(ds_presence *presence,
                                            int64_t conversation_id,
                                            int64_t **user_ids, size_t *count,
                                            ds_error *err) {
    return list(presence, conversation_id, true, user_ids, count, err);
}

/* ---- subscriptions -------------------------------------------------------------- */

struct ds_presence_subscription {
    ds_redis *redis;
    ds_presence_event_fn fn;
    void *ud;
    char **channels; /* one pattern when `pattern` */
    size_t nchannels;
    bool pattern;
    int command_timeout_ms;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int ready; /* 0 starting, 1 subscribed, -1 failed */
    ds_error first_err;
    atomic_bool stop;
    atomic_bool self_free; /* unsubscribed from its own callback */
    ds__rconn *conn;
};

static void sub_free(ds_presence_subscription *s) {
    for (size_t i = 0; i < s->nchannels; i++)
        ds__free(s->channels[i]);
    ds__free(s->channels);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    ds__free(s);
}

/* Waits for the wake pipe at most `ms`; true when asked to stop. */
static bool sleep_or_stop(ds_presence_subscription *s, int ms) {
    struct pollfd p = {s->wake[0], POLLIN, 0};
    poll(&p, 1, ms);
    return atomic_load(&s->stop);
}

static ds_status subscribe_conn(ds_presence_subscription *s, ds_error *err) {
    /* the wake pipe cancels every wait of the connection, so unsubscribe
     * never waits for a connect or command timeout */
    ds_status st = ds__redis_conn_open(s->redis, s->wake[0], &s->conn, err);
    if (st != DS_OK)
        return st;
    size_t argc = s->nchannels + 1;
    const char **argv = ds__calloc(argc, sizeof *argv);
    if (!argv)
        st = ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
    if (st == DS_OK) {
        argv[0] = s->pattern ? "PSUBSCRIBE" : "SUBSCRIBE";
        for (size_t i = 0; i < s->nchannels; i++)
            argv[i + 1] = s->channels[i];
        st = ds__rconn_send_argv(s->conn, (int)argc, argv, NULL, -1, err);
        ds__free(argv);
    }
    /* one confirmation per channel */
    for (size_t i = 0; st == DS_OK && i < s->nchannels; i++) {
        redisReply *r = NULL;
        st = ds__rconn_read(s->conn, s->command_timeout_ms, &r, err);
        if (st != DS_OK)
            break;
        if (!r) {
            st = ds__error_set(err, DS_ERR_REDIS,
                               "presence: no answer to SUBSCRIBE");
        } else if (r->type == REDIS_REPLY_ERROR) {
            st = ds__redis_reply_error(r, "presence: SUBSCRIBE", err);
        } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
                   r->element[0]->type != REDIS_REPLY_STRING ||
                   strstr(r->element[0]->str, "subscribe") == NULL) {
            st = ds__redis_unexpected(r, "presence: SUBSCRIBE", err);
        }
        if (r)
            freeReplyObject(r);
    }
    if (st != DS_OK) {
        ds__rconn_close(s->conn);
        s->conn = NULL;
    }
    return st;
}

static void deliver(ds_presence_subscription *s, const char *payload,
                    size_t len) {
    json_error_t jerr;
    json_t *j = json_loadb(payload, len, 0, &jerr);
    const char *type = j ? json_string_value(json_object_get(j, "type")) : NULL;
    json_t *conv = j ? json_object_get(j, "conversation_id") : NULL;
    json_t *user = j ? json_object_get(j, "user_id") : NULL;
    json_t *at = j ? json_object_get(j, "at_ms") : NULL;
    ds_presence_event ev;
    bool ok = type && json_is_integer(conv) && json_is_integer(user) &&
              json_is_integer(at);
    if (ok) {
        if (strcmp(type, "online") == 0)
            ev.type = DS_PRESENCE_ONLINE;
        else if (strcmp(type, "offline") == 0)
            ev.type = DS_PRESENCE_OFFLINE;
        else if (strcmp(type, "typing") == 0)
            ev.type = DS_PRESENCE_TYPING;
        else if (strcmp(type, "typing_stopped") == 0)
            ev.type = DS_PRESENCE_TYPING_STOPPED;
        else
            ok = false;
        ev.conversation_id = json_integer_value(conv);
        ev.user_id = json_integer_value(user);
        ev.at_ms = json_integer_value(at);
    }
    json_decref(j);
    if (!ok) {
        ds__log(DS_LOG_DEBUG, "presence", "ignoring a malformed event");
        return;
    }
    s->fn(s->ud, &ev);
}

/* One pub/sub message (or a PING answer). */
static void handle(ds_presence_subscription *s, const redisReply *r,
                   bool *ping_pending) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "message") == 0 && r->elements == 3 &&
        r->element[2]->type == REDIS_REPLY_STRING)
        deliver(s, r->element[2]->str, r->element[2]->len);
    else if (strcmp(kind, "pmessage") == 0 && r->elements == 4 &&
             r->element[3]->type == REDIS_REPLY_STRING)
        deliver(s, r->element[3]->str, r->element[3]->len);
    else if (strcmp(kind, "pong") == 0)
        *ping_pending = false;
}

static void *sub_main(void *arg) {
    ds_presence_subscription *s = arg;
    bool first = true;
    int backoff_ms = 50;
    bool ping_pending = false;
    while (!atomic_load(&s->stop)) {
        if (!s->conn) {
            ds_error err = {0};
            ds_status st = subscribe_conn(s, &err);
            if (first) {
                pthread_mutex_lock(&s->mu);
                s->ready = st == DS_OK ? 1 : -1;
                s->first_err = err;
                pthread_cond_signal(&s->cond);
                pthread_mutex_unlock(&s->mu);
                first = false;
                if (st != DS_OK)
                    return NULL; /* the subscriber joins and frees */
                continue;
            }
            if (st != DS_OK) {
                if (atomic_load(&s->stop))
                    break;
                ds__log(DS_LOG_WARN, "presence", "resubscribe failed: %s",
                        err.message);
                if (sleep_or_stop(s, backoff_ms))
                    break;
                backoff_ms = backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS
                                                               : backoff_ms * 2;
                continue;
            }
            backoff_ms = 50;
            ping_pending = false;
            ds_presence_event ev = {DS_PRESENCE_RESYNC, 0, 0,
                                    ds__redis_now_ms()};
            s->fn(s->ud, &ev);
            continue;
        }
        /* what has arrived first; only then wait on the socket, so a
         * reply half received (the rest still on its way) is waited for,
         * not spun on */
        ds_error err = {0};
        redisReply *r = NULL;
        if (ds__rconn_read(s->conn, 0, &r, &err) != DS_OK) {
            if (atomic_load(&s->stop))
                break;
            ds__log(DS_LOG_INFO, "presence", "subscription lost: %s",
                    err.message);
            ds__rconn_close(s->conn);
            s->conn = NULL;
            continue;
        }
        if (r) {
            handle(s, r, &ping_pending);
            freeReplyObject(r);
            continue;
        }
        struct pollfd p[2] = {{s->wake[0], POLLIN, 0},
                              {ds__rconn_fd(s->conn), POLLIN, 0}};
        int n = poll(p, 2, ping_pending ? s->command_timeout_ms : IDLE_PING_MS);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && p[0].revents)
            break;
        if (n == 0) {
            /* quiet: make sure the connection is still there */
            const char *ping[1] = {"PING"};
            if (ping_pending ||
                ds__rconn_send_argv(s->conn, 1, ping, NULL, -1, &err) != DS_OK) {
                ds__rconn_close(s->conn);
                s->conn = NULL;
                continue;
            }
            ping_pending = true;
        }
    }
    ds__rconn_close(s->conn);
    s->conn = NULL;
    if (atomic_load(&s->self_free))
        sub_free(s);
    return NULL;
}

/* A glob pattern that matches the prefix literally. */
static char *escape_glob(const char *s) {
    size_t n = strlen(s);
    char *out = ds__malloc(2 * n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", s[i]))
            out[o++] = '\\';
        out[o++] = s[i];
    }
    out[o] = '\0';
    return out;
}

DS_EXPORT ds_status ds_presence_subscribe(ds_presence *presence,
                                          const int64_t *conversation_ids,
                                          size_t n, ds_presence_event_fn fn,
                                          void *ud,
                                          ds_presence_subscription **out,
                                          ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, presence, "presence is NULL");
    DS_CHECK_ARG(err, fn, "fn is NULL");
    DS_CHECK_ARG(err, n == 0 || conversation_ids, "conversation_ids is NULL");
    DS_CHECK_ARG(err, n <= MAX_CONVERSATIONS, "more than 1024 conversations");
    for (size_t i = 0; i < n; i++)
        DS_CHECK_ARG(err, conversation_ids[i] > 0,
                     "conversation ids must be positive");
    ds_presence_subscription *s = ds__calloc(1, sizeof *s);
    if (!s)
        return ds__error_set(err, DS_ERR_NOMEM, "presence: out of memory");
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->redis = presence->redis;
    s->fn = fn;
    s->ud = ud;
    s->command_timeout_ms = ds__redis_command_timeout(presence->redis);
    s->pattern = n == 0;
    s->nchannels = n == 0 ? 1 : n;
    s->channels = ds__calloc(s->nchannels, sizeof *s->channels);
    bool oom = !s->channels;
    if (!oom && n == 0) {
        /* every conversation: a pattern that takes the prefix literally */
        char *prefix = escape_glob(ds__redis_prefix(presence->redis, NULL));
        if (prefix) {
            size_t len = strlen(prefix) + sizeof "p:ev:*";
            s->channels[0] = ds__malloc(len);
            if (s->channels[0])
                snprintf(s->channels[0], len, "%sp:ev:*", prefix);
        }
        oom = !s->channels[0];
        ds__free(prefix);
    }
    for (size_t i = 0; !oom && i < n; i++) {
        s->channels[i] = ds__redis_key(presence->redis, NULL, "p:ev:%lld",
                                       (long long)conversation_ids[i]);
        oom = !s->channels[i];
    }
    if (oom || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        sub_free(s);
        return ds__error_set(err, oom ? DS_ERR_NOMEM : DS_ERR_INTERNAL,
                             "presence: cannot set up the subscription");
    }
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0) {
        sub_free(s);
        return ds__error_set(err, DS_ERR_NOMEM,
                             "presence: cannot start the subscriber thread");
    }
    pthread_mutex_lock(&s->mu);
    while (s->ready == 0)
        pthread_cond_wait(&s->cond, &s->mu);
    int ready = s->ready;
    pthread_mutex_unlock(&s->mu);
    if (ready < 0) {
        pthread_join(s->thread, NULL);
        ds_status st = s->first_err.code ? s->first_err.code : DS_ERR_REDIS;
        if (err)
            *err = s->first_err;
        sub_free(s);
        return st;
    }
    *out = s;
    return DS_OK;
}

DS_EXPORT void ds_presence_unsubscribe(ds_presence_subscription *sub) {
    if (!sub)
        return;
    if (pthread_equal(pthread_self(), sub->thread)) {
        /* from the callback: the thread frees itself when it returns */
        atomic_store(&sub->self_free, true);
        atomic_store(&sub->stop, true);
        pthread_detach(sub->thread);
        return;
    }
    atomic_store(&sub->stop, true);
    ssize_t w;
    do
        w = write(sub->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(sub->thread, NULL);
    sub_free(sub);
}
