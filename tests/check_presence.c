/* Presence and typing against the local Redis, with subscribers in a
 * thread and in another process. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"

/* ---- helpers ---------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    ds_presence_event ev[256];
    int n;
} collector;

static void collector_init(collector *c) {
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->n = 0;
}

static void collect(void *ud, const ds_presence_event *e) {
    collector *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->n < 256)
        c->ev[c->n++] = *e;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until an event of `type` for `user` arrived; its index or -1. */
static int wait_event(collector *c, ds_presence_event_type type, int64_t user,
                      int timeout_ms) {
    long long deadline = dt_now_ms() + timeout_ms;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        for (int i = 0; i < c->n; i++)
            if (c->ev[i].type == type && c->ev[i].user_id == user) {
                pthread_mutex_unlock(&c->mu);
                return i;
            }
        if (dt_now_ms() >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return -1;
}

static ds_presence *open_presence(ds_redis *r, int online_ms, int typing_ms) {
    ds_presence_options o = DS_PRESENCE_OPTIONS_INIT;
    ds_presence_options_init(&o);
    if (online_ms)
        o.online_ttl_ms = online_ms;
    if (typing_ms)
        o.typing_ttl_ms = typing_ms;
    ds_presence *p;
    ds_error err = {0};
    ck_assert_ds_ok(ds_presence_open(r, &o, &p, &err), err);
    return p;
}

static void ok(ds_status st, ds_error *err) { ck_assert_ds_ok(st, *err); }

/* The ids listed, as "1,2,3". */
static char *listed(ds_presence *p, int64_t conv, bool typing) {
    static char buf[256];
    int64_t *ids;
    size_t n;
    ds_error err = {0};
    ds_status st = typing ? ds_presence_list_typing(p, conv, &ids, &n, &err)
                          : ds_presence_list_online(p, conv, &ids, &n, &err);
    ck_assert_ds_ok(st, err);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld",
                 i ? "," : "", (long long)ids[i]);
    if (n == 0)
        ck_assert_ptr_null(ids);
    ds_free(ids);
    return buf;
}

/* Polls (at most 10 s) until nobody is listed online or typing in `conv`
 * any more: their entries timed out. */
static void wait_until_nobody_listed(ds_presence *p, int64_t conv) {
    long long deadline = dt_now_ms() + 10000;
    while ((strcmp(listed(p, conv, false), "") != 0 ||
            strcmp(listed(p, conv, true), "") != 0) &&
           dt_now_ms() < deadline)
        usleep(10 * 1000);
    ck_assert_str_eq(listed(p, conv, false), "");
    ck_assert_str_eq(listed(p, conv, true), "");
}

/* ---- state ---------------------------------------------------------------------- */

START_TEST(test_presence_online_list) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    ds_error err = {0};
    ok(ds_presence_set_online(p, 7, 300, &err), &err);
    ok(ds_presence_set_online(p, 7, 1, &err), &err);
    ok(ds_presence_set_online(p, 7, 20, &err), &err);
    ok(ds_presence_set_online(p, 7, 1, &err), &err); /* heartbeat */
    ck_assert_str_eq(listed(p, 7, false), "1,20,300");
    ck_assert_str_eq(listed(p, 8, false), "");
    ok(ds_presence_set_offline(p, 7, 20, &err), &err);
    ck_assert_str_eq(listed(p, 7, false), "1,300");
    ok(ds_presence_set_offline(p, 7, 20, &err), &err); /* already offline */
    /* the set expires with its members */
    char *key = ds__redis_key(r, NULL, "p:on:7");
    long long ttl = dt_rint(r, "PTTL %s", key);
    ck_assert_int_gt(ttl, 50000);
    ck_assert_int_le(ttl, 60000);
    ds__free(key);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_expires_without_heartbeat) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 80, 40);
    ds_error err = {0};
    ok(ds_presence_set_online(p, 1, 5, &err), &err);
    ok(ds_presence_set_typing(p, 1, 5, true, &err), &err);
    ck_assert_str_eq(listed(p, 1, false), "5");
    ck_assert_str_eq(listed(p, 1, true), "5");
    wait_until_nobody_listed(p, 1);
    char *on = ds__redis_key(r, NULL, "p:on:1");
    char *ty = ds__redis_key(r, NULL, "p:ty:1");
    /* and the keys themselves expire (bounded polling) */
    long long deadline = dt_now_ms() + 10000;
    while (dt_rint(r, "EXISTS %s %s", on, ty) != 0 && dt_now_ms() < deadline)
        usleep(10 * 1000);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s %s", on, ty), 0);
    ds__free(on);
    ds__free(ty);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_typing) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    ds_error err = {0};
    ok(ds_presence_set_online(p, 3, 1, &err), &err);
    ok(ds_presence_set_online(p, 3, 2, &err), &err);
    ok(ds_presence_set_typing(p, 3, 2, true, &err), &err);
    ok(ds_presence_set_typing(p, 3, 1, true, &err), &err);
    ck_assert_str_eq(listed(p, 3, true), "1,2");
    ok(ds_presence_set_typing(p, 3, 1, false, &err), &err);
    ck_assert_str_eq(listed(p, 3, true), "2");
    /* going offline ends typing too */
    ok(ds_presence_set_offline(p, 3, 2, &err), &err);
    ck_assert_str_eq(listed(p, 3, true), "");
    ck_assert_str_eq(listed(p, 3, false), "1");
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_erased_with_user) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    ds_error err = {0};
    ok(ds_presence_set_online(p, 1, 42, &err), &err);
    ok(ds_presence_set_typing(p, 1, 42, true, &err), &err);
    ok(ds_presence_set_online(p, 2, 42, &err), &err);
    ok(ds_presence_set_online(p, 1, 43, &err), &err);
    ok(ds_presence_set_typing(p, 1, 43, true, &err), &err);
    int64_t removed;
    ok(ds_redis_erase_user(r, 42, &removed, &err), &err);
    ck_assert_int_eq(removed, 3);
    ck_assert_str_eq(listed(p, 1, false), "43");
    ck_assert_str_eq(listed(p, 1, true), "43");
    ck_assert_str_eq(listed(p, 2, false), "");
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

/* ---- events ------------------------------------------------------------------------ */

START_TEST(test_presence_events_in_process) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    collector c;
    collector_init(&c);
    ds_presence_subscription *sub;
    ds_error err = {0};
    int64_t convs[] = {5};
    ok(ds_presence_subscribe(p, convs, 1, collect, &c, &sub, &err), &err);
    ok(ds_presence_set_online(p, 5, 42, &err), &err);
    ok(ds_presence_set_online(p, 5, 42, &err), &err);      /* no event */
    ok(ds_presence_set_typing(p, 5, 42, true, &err), &err);
    ok(ds_presence_set_typing(p, 5, 42, true, &err), &err); /* no event */
    ok(ds_presence_set_typing(p, 5, 42, false, &err), &err);
    ok(ds_presence_set_typing(p, 5, 42, false, &err), &err); /* no event */
    ok(ds_presence_set_online(p, 6, 42, &err), &err);      /* not ours */
    ok(ds_presence_set_offline(p, 5, 42, &err), &err);
    ok(ds_presence_set_online(p, 5, 999, &err), &err);     /* sentinel */
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_ONLINE, 999, 10000), 0);
    ds_presence_unsubscribe(sub);
    ds_presence_event_type want[] = {DS_PRESENCE_ONLINE, DS_PRESENCE_TYPING,
                                     DS_PRESENCE_TYPING_STOPPED,
                                     DS_PRESENCE_OFFLINE, DS_PRESENCE_ONLINE};
    int64_t users[] = {42, 42, 42, 42, 999};
    ck_assert_int_eq(c.n, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(ds_presence_event_type_str(c.ev[i].type),
                         ds_presence_event_type_str(want[i]));
        ck_assert_int_eq(c.ev[i].user_id, users[i]);
        ck_assert_int_eq(c.ev[i].conversation_id, 5);
        ck_assert_int_gt(c.ev[i].at_ms, 1600000000000LL);
    }
    /* after unsubscribe, nothing more arrives */
    ok(ds_presence_set_online(p, 5, 7, &err), &err);
    ck_assert_int_eq(c.n, 5);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_subscriber_in_another_process) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "pubsub");
    int ready[2], lines[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(lines), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the subscriber: prints each event as a line to the parent */
        close(ready[0]);
        close(lines[0]);
        ds_redis *r;
        ds_presence *p;
        ds_presence_subscription *sub;
        ds_error err = {0};
        collector c;
        collector_init(&c);
        int64_t convs[] = {11, 12};
        if (ds_redis_open(cfg, &r, &err) != DS_OK ||
            ds_presence_open(r, NULL, &p, &err) != DS_OK ||
            ds_presence_subscribe(p, convs, 2, collect, &c, &sub, &err) != DS_OK)
            _exit(2);
        if (write(ready[1], "R", 1) != 1)
            _exit(3);
        int idx = wait_event(&c, DS_PRESENCE_OFFLINE, 999, 15000);
        ds_presence_unsubscribe(sub);
        FILE *f = fdopen(lines[1], "w");
        for (int i = 0; idx >= 0 && i <= idx; i++)
            fprintf(f, "%s %lld %lld\n", ds_presence_event_type_str(c.ev[i].type),
                    (long long)c.ev[i].conversation_id,
                    (long long)c.ev[i].user_id);
        fclose(f);
        ds_presence_close(p);
        ds_redis_close(r);
        _exit(idx >= 0 ? 0 : 1);
    }
    close(ready[1]);
    close(lines[1]);
    char b;
    ck_assert_int_eq(read(ready[0], &b, 1), 1);
    ds_redis *r;
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_presence *p = open_presence(r, 0, 0);
    ok(ds_presence_set_online(p, 11, 1, &err), &err);
    ok(ds_presence_set_online(p, 13, 1, &err), &err); /* not subscribed */
    ok(ds_presence_set_offline(p, 12, 2, &err), &err); /* was not online */
    ok(ds_presence_set_online(p, 12, 2, &err), &err);
    ok(ds_presence_set_typing(p, 12, 2, true, &err), &err);
    ok(ds_presence_set_offline(p, 12, 2, &err), &err);
    ok(ds_presence_set_online(p, 11, 999, &err), &err);
    ok(ds_presence_set_offline(p, 11, 999, &err), &err);
    char out[1024] = "";
    size_t got = 0;
    ssize_t n;
    while ((n = read(lines[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "subscriber exit %d; got:\n%s", status, out);
    ck_assert_str_eq(out, "online 11 1\n"
                          "online 12 2\n"
                          "typing 12 2\n"
                          "offline 12 2\n"
                          "online 11 999\n"
                          "offline 11 999\n");
    close(ready[0]);
    close(lines[0]);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_presence_all_conversations_prefix_is_literal) {
    /* a prefix with glob characters must not match other prefixes */
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "glob");
    ds_error err = {0};
    char prefix[64], other[64];
    snprintf(prefix, sizeof prefix, "dt*[1]:%d:", (int)getpid());
    snprintf(other, sizeof other, "dtX1:%d:", (int)getpid());
    ok(ds_config_set(cfg, "redis_prefix", prefix, &err), &err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ok(ds_config_set(cfg, "redis_prefix", other, &err), &err);
    ds_redis *r2;
    ck_assert_ds_ok(ds_redis_open(cfg, &r2, &err), err);
    ds_config_free(cfg);
    ds_presence *p = open_presence(r, 0, 0);
    ds_presence *p2 = open_presence(r2, 0, 0);
    collector c;
    collector_init(&c);
    ds_presence_subscription *sub;
    ok(ds_presence_subscribe(p, NULL, 0, collect, &c, &sub, &err), &err);
    ok(ds_presence_set_online(p2, 5, 1, &err), &err); /* other prefix */
    ok(ds_presence_set_online(p, 77, 2, &err), &err);
    ok(ds_presence_set_online(p, 78, 3, &err), &err);
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_ONLINE, 3, 10000), 0);
    ds_presence_unsubscribe(sub);
    ck_assert_int_eq(c.n, 2);
    ck_assert_int_eq(c.ev[0].conversation_id, 77);
    ck_assert_int_eq(c.ev[1].conversation_id, 78);
    dt_redis_flush_prefix(r);
    dt_redis_flush_prefix(r2);
    ds_presence_close(p);
    ds_presence_close(p2);
    ds_redis_close(r);
    ds_redis_close(r2);
}
END_TEST

START_TEST(test_presence_subscription_resyncs_after_restart) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    collector c;
    collector_init(&c);
    ds_presence_subscription *sub;
    ds_error err = {0};
    int64_t convs[] = {9};
    ok(ds_presence_subscribe(p, convs, 1, collect, &c, &sub, &err), &err);
    ck_assert_int_eq(dt_services("restart redis"), 0);
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_RESYNC, 0, 20000), 0);
    dt_redis_wait_up(r);
    ok(ds_presence_set_online(p, 9, 4, &err), &err);
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_ONLINE, 4, 10000), 0);
    ds_presence_unsubscribe(sub);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

typedef struct {
    ds_presence_subscription *sub;
    volatile int calls;
} self_stop;

static void stop_self(void *ud, const ds_presence_event *e) {
    (void)e;
    self_stop *s = ud;
    if (s->calls++ == 0)
        ds_presence_unsubscribe(s->sub);
}

/* Waits, at most 10 s, until no channel under the handle's prefix has a
 * subscriber left: every subscription's connection is closed. */
static void wait_no_subscribers(ds_redis *r) {
    size_t plen;
    const char *prefix = ds__redis_prefix(r, &plen);
    long long deadline = dt_now_ms() + 10000;
    for (;;) {
        redisReply *rep = dt_rcmd(r, "PUBSUB CHANNELS %s*", prefix);
        size_t n = rep->elements;
        freeReplyObject(rep);
        if (n == 0)
            return;
        ck_assert_msg(dt_now_ms() < deadline,
                      "%zu channel(s) still subscribed after 10 s", n);
        usleep(1000);
    }
}

START_TEST(test_presence_unsubscribe_from_callback) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    self_stop s = {NULL, 0};
    ds_error err = {0};
    int64_t convs[] = {4};
    ok(ds_presence_subscribe(p, convs, 1, stop_self, &s, &s.sub, &err), &err);
    ok(ds_presence_set_online(p, 4, 1, &err), &err);
    ok(ds_presence_set_online(p, 4, 2, &err), &err);
    long long deadline = dt_now_ms() + 10000;
    while (s.calls == 0 && dt_now_ms() < deadline)
        usleep(1000);
    /* the thread closes its connection on the way out: once Redis counts
     * no subscriber, nothing more can be delivered */
    wait_no_subscribers(r);
    ck_assert_int_eq(s.calls, 1);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

/* ---- bad arguments ------------------------------------------------------------------ */

static void ignore(void *ud, const ds_presence_event *e) {
    (void)ud;
    (void)e;
}

/* A server for one subscription that then goes quiet: connection 0 (the
 * handle) and 1 (the subscriber) are answered, 1 is then dropped, and the
 * subscriber's reconnect (2) is accepted and never answered. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool reconnecting;
} quiet_server;

static void quiet_fn(void *ud, int index, int fd) {
    quiet_server *q = ud;
    char buf[256];
    if (index == 0) {
        if (dt_fake_expect(fd, "PING") && dt_fake_send(fd, "+PONG\r\n"))
            while (recv(fd, buf, sizeof buf, 0) > 0)
                ;
        return;
    }
    if (index == 1) {
        if (dt_fake_expect(fd, "PING") && dt_fake_send(fd, "+PONG\r\n") &&
            dt_fake_expect(fd, "SUBSCRIBE"))
            dt_fake_send(fd, "*3\r\n$9\r\nsubscribe\r\n$4\r\nchan\r\n"
                             ":1\r\n");
        shutdown(fd, SHUT_RDWR);
        return;
    }
    /* the reconnect: take its handshake and say nothing */
    if (dt_fake_expect(fd, "PING")) {
        pthread_mutex_lock(&q->mu);
        q->reconnecting = true;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->mu);
    }
    while (recv(fd, buf, sizeof buf, 0) > 0)
        ;
}

static void ignore_event(void *ud, const ds_presence_event *e) {
    (void)ud;
    (void)e;
}

START_TEST(test_presence_unsubscribe_while_reconnecting) {
    /* the subscriber waits on a server that accepted its reconnect and
     * never answers; with a long connect timeout, unsubscribe must still
     * return at once rather than after the timeout */
    quiet_server q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                      false};
    dt_fake *f = dt_fake_start(quiet_fn, &q);
    ds_config *cfg = dt_redis_config(dt_fake_url(f), "presence");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_connect_timeout_ms", 3600000,
                                      &err),
                    err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    ds_presence *p = open_presence(r, 0, 0);
    int64_t conv = 5;
    ds_presence_subscription *sub;
    ck_assert_ds_ok(ds_presence_subscribe(p, &conv, 1, ignore_event, NULL, &sub,
                                          &err),
                    err);
    pthread_mutex_lock(&q.mu);
    while (!q.reconnecting)
        pthread_cond_wait(&q.cond, &q.mu);
    pthread_mutex_unlock(&q.mu);
    ds_presence_unsubscribe(sub);
    ds_presence_close(p);
    ds_redis_close(r);
    dt_fake_stop(f);
}
END_TEST

START_TEST(test_presence_errors) {
    ds_redis *r = dt_redis("presence");
    ds_error err = {0};
    ds_presence *p = (ds_presence *)1;
    ck_assert_int_eq(ds_presence_open(NULL, NULL, &p, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(ds_presence_open(r, NULL, NULL, &err), DS_ERR_INVALID);
    ds_presence_options o = {sizeof(ds_presence_options), -1, 10};
    ck_assert_int_eq(ds_presence_open(r, &o, &p, &err), DS_ERR_INVALID);
    o = (ds_presence_options){sizeof(ds_presence_options), 10, -1};
    ck_assert_int_eq(ds_presence_open(r, &o, &p, &err), DS_ERR_INVALID);
    ds_presence_options_init(NULL);
    ck_assert_ds_ok(ds_presence_open(r, NULL, &p, &err), err);
    ck_assert_int_eq(ds_presence_set_online(NULL, 1, 1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_set_online(p, 0, 1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_set_online(p, 1, -1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_set_offline(p, -1, 1, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_set_typing(p, 1, 0, true, &err),
                     DS_ERR_INVALID);
    int64_t *ids = (int64_t *)1;
    size_t n = 9;
    ck_assert_int_eq(ds_presence_list_online(p, 0, &ids, &n, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(ids);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(ds_presence_list_online(p, 1, NULL, &n, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_list_typing(p, 1, &ids, NULL, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_list_typing(NULL, 1, &ids, &n, &err),
                     DS_ERR_INVALID);
    ds_presence_subscription *sub = (ds_presence_subscription *)1;
    int64_t convs[] = {1, 0};
    ck_assert_int_eq(ds_presence_subscribe(p, convs, 1, NULL, NULL, &sub, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(sub);
    ck_assert_int_eq(ds_presence_subscribe(p, convs, 2, ignore, NULL, &sub, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_subscribe(p, NULL, 2, ignore, NULL, &sub, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_subscribe(p, convs, 1025, ignore, NULL, &sub,
                                           &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_subscribe(NULL, convs, 1, ignore, NULL, &sub,
                                           &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds_presence_subscribe(p, convs, 1, ignore, NULL, NULL, &err),
                     DS_ERR_INVALID);
    ds_presence_unsubscribe(NULL);
    ds_presence_close(NULL);
    ck_assert_str_eq(ds_presence_event_type_str((ds_presence_event_type)77),
                     "unknown");
    ck_assert_str_eq(ds_presence_event_type_str(DS_PRESENCE_RESYNC), "resync");
    /* the status is the real one without an error struct too */
    for (int k = 1; k < 12; k++) {
        ds__test_fail_alloc_after(k);
        ds_status st = ds_presence_set_online(p, 3, 4, NULL);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM, "k=%d: %s", k,
                      ds_status_str(st));
    }
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_subscribe_fails_without_redis) {
    ds_redis *r = dt_redis("presence");
    dt_redis_stop();
    /* opening does not talk to Redis */
    ds_presence *p = open_presence(r, 0, 0);
    ds_presence_subscription *sub = (ds_presence_subscription *)1;
    ds_error err = {0};
    int64_t convs[] = {1};
    ds_status st = ds_presence_subscribe(p, convs, 1, ignore, NULL, &sub, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(sub);
    ck_assert(ds_error_is_retryable(&err));
    st = ds_presence_set_online(p, 1, 1, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    dt_redis_start(r);
    ok(ds_presence_set_online(p, 1, 1, &err), &err);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

/* ---- the header's promises, one by one ------------------------------------------ */

/* The Redis server's clock, epoch ms. */
static long long server_ms(ds_redis *r) {
    redisReply *t = dt_rcmd(r, "TIME");
    ck_assert_int_eq(t->type, REDIS_REPLY_ARRAY);
    long long ms = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    return ms;
}

/* The expiry the state set holds for `user`, epoch ms of the server. */
static long long expiry_of(ds_redis *r, const char *set, int64_t conv, int64_t user) {
    char *key = ds__redis_key(r, NULL, "p:%s:%lld", set, (long long)conv);
    redisReply *z = dt_rcmd(r, "ZSCORE %s %lld", key, (long long)user);
    ds__free(key);
    ck_assert_int_eq(z->type, REDIS_REPLY_STRING);
    long long v = atoll(z->str);
    freeReplyObject(z);
    return v;
}

START_TEST(test_presence_heartbeat_extends_by_server_time) {
    ds_presence_options o = {.size = sizeof(ds_presence_options)};
    memset(&o, 0, sizeof o);
    ds_presence_options_init(&o);
    /* zero means default (60 s online, 6 s typing): the initialiser sets
     * only the size; the expiry below checks the default's effect */
    ck_assert_uint_eq(o.size, sizeof o);
    ck_assert_int_eq(o.online_ttl_ms, 0);
    ck_assert_int_eq(o.typing_ttl_ms, 0);
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    ds_error err = {0};
    /* online until online_ttl_ms after the call, by the server's clock */
    long long before = server_ms(r);
    ok(ds_presence_set_online(p, 51, 8, &err), &err);
    ok(ds_presence_set_typing(p, 51, 8, true, &err), &err);
    long long after = server_ms(r);
    long long on1 = expiry_of(r, "on", 51, 8), ty1 = expiry_of(r, "ty", 51, 8);
    ck_assert_int_ge(on1, before + 60000);
    ck_assert_int_le(on1, after + 60000);
    ck_assert_int_ge(ty1, before + 6000);
    ck_assert_int_le(ty1, after + 6000);
    /* a heartbeat moves it on (bounded wait for the server clock) */
    long long deadline = dt_now_ms() + 10000;
    while (server_ms(r) < after + 5 && dt_now_ms() < deadline)
        usleep(1000);
    ok(ds_presence_set_online(p, 51, 8, &err), &err);
    ok(ds_presence_set_typing(p, 51, 8, true, &err), &err);
    ck_assert_int_gt(expiry_of(r, "on", 51, 8), on1);
    ck_assert_int_gt(expiry_of(r, "ty", 51, 8), ty1);
    ck_assert_str_eq(listed(p, 51, false), "8");
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_presence_timing_out_publishes_nothing) {
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 100, 100);
    collector c;
    collector_init(&c);
    ds_presence_subscription *sub;
    ds_error err = {0};
    int64_t convs[] = {21};
    ok(ds_presence_subscribe(p, convs, 1, collect, &c, &sub, &err), &err);
    ok(ds_presence_set_online(p, 21, 1, &err), &err);
    ok(ds_presence_set_typing(p, 21, 1, true, &err), &err);
    wait_until_nobody_listed(p, 21); /* both timed out */
    /* back after the timeout: "not online" before, so online again */
    ok(ds_presence_set_online(p, 21, 1, &err), &err);
    ok(ds_presence_set_online(p, 21, 999, &err), &err); /* sentinel */
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_ONLINE, 999, 10000), 0);
    ds_presence_unsubscribe(sub);
    ds_presence_event_type want[] = {DS_PRESENCE_ONLINE, DS_PRESENCE_TYPING,
                                     DS_PRESENCE_ONLINE, DS_PRESENCE_ONLINE};
    int64_t users[] = {1, 1, 1, 999};
    ck_assert_int_eq(c.n, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(ds_presence_event_type_str(c.ev[i].type),
                         ds_presence_event_type_str(want[i]));
        ck_assert_int_eq(c.ev[i].user_id, users[i]);
    }
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

/* The next message on a raw subscriber: its JSON text, parsed. */
static json_t *next_message(ds__rconn *conn) {
    for (;;) {
        redisReply *m = NULL;
        ds_error err = {0};
        ck_assert_ds_ok(ds__rconn_read(conn, 10000, &m, &err), err);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(m->type, REDIS_REPLY_ARRAY);
        if (strcmp(m->element[0]->str, "message") != 0) {
            freeReplyObject(m); /* the subscribe confirmation */
            continue;
        }
        json_error_t jerr;
        json_t *j = json_loadb(m->element[2]->str, m->element[2]->len, 0, &jerr);
        ck_assert_msg(j != NULL, "not JSON: %s", m->element[2]->str);
        freeReplyObject(m);
        return j;
    }
}

static void check_event_json(json_t *j, const char *type, int64_t conv,
                             int64_t user, long long lo, long long hi) {
    ck_assert_uint_eq(json_object_size(j), 4);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), type);
    ck_assert(json_is_integer(json_object_get(j, "conversation_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "conversation_id")), conv);
    ck_assert(json_is_integer(json_object_get(j, "user_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "user_id")), user);
    json_t *at = json_object_get(j, "at_ms");
    ck_assert(json_is_integer(at));
    ck_assert_int_ge(json_integer_value(at), lo);
    ck_assert_int_le(json_integer_value(at), hi);
    json_decref(j);
}

START_TEST(test_presence_event_json_on_the_channel) {
    /* what a subscriber in another language reads: the documented channel
     * and JSON, whatever the C API does with it */
    ds_redis *r = dt_redis("presence");
    ds_presence *p = open_presence(r, 0, 0);
    ds__rconn *conn;
    ds_error err = {0};
    ck_assert_ds_ok(ds__redis_conn_open(r, -1, &conn, &err), err);
    char *channel = ds__redis_key(r, NULL, "p:ev:31");
    const char *argv[2] = {"SUBSCRIBE", channel};
    ck_assert_ds_ok(ds__rconn_send_argv(conn, 2, argv, NULL, -1, &err), err);
    redisReply *conf = NULL;
    ck_assert_ds_ok(ds__rconn_read(conn, 10000, &conf, &err), err);
    ck_assert_ptr_nonnull(conf);
    freeReplyObject(conf);
    long long t0 = server_ms(r);
    ok(ds_presence_set_online(p, 31, 42, &err), &err);
    ok(ds_presence_set_typing(p, 31, 42, true, &err), &err);
    ok(ds_presence_set_typing(p, 31, 42, false, &err), &err);
    ok(ds_presence_set_offline(p, 31, 42, &err), &err);
    long long t1 = server_ms(r);
    check_event_json(next_message(conn), "online", 31, 42, t0, t1);
    check_event_json(next_message(conn), "typing", 31, 42, t0, t1);
    check_event_json(next_message(conn), "typing_stopped", 31, 42, t0, t1);
    check_event_json(next_message(conn), "offline", 31, 42, t0, t1);
    ds__rconn_close(conn);
    ds__free(channel);
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

typedef struct {
    ds_presence *p;
    pthread_barrier_t *barrier;
    int failures;
} hammer_arg;

static void *hammer_main(void *ptr) {
    hammer_arg *a = ptr;
    pthread_barrier_wait(a->barrier);
    for (int i = 0; i < 50; i++) {
        ds_error err = {0};
        if (ds_presence_set_online(a->p, 41, 7, &err) != DS_OK ||
            ds_presence_set_typing(a->p, 41, 7, true, &err) != DS_OK)
            a->failures++;
    }
    return NULL;
}

START_TEST(test_presence_one_event_per_transition_from_many_threads) {
    /* 8 threads on one shared handle heartbeat the same user at once:
     * one "online" and one "typing" event in all */
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "hammer");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_pool_size", 8, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    ds_presence *p = open_presence(r, 0, 0);
    collector c;
    collector_init(&c);
    ds_presence_subscription *sub;
    int64_t convs[] = {41};
    ok(ds_presence_subscribe(p, convs, 1, collect, &c, &sub, &err), &err);
    convs[0] = 99; /* the subscription copied the ids */
    enum { THREADS = 8 };
    pthread_t th[THREADS];
    hammer_arg args[THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (hammer_arg){p, &barrier, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    pthread_barrier_destroy(&barrier);
    ok(ds_presence_set_online(p, 41, 999, &err), &err); /* sentinel */
    ck_assert_int_ge(wait_event(&c, DS_PRESENCE_ONLINE, 999, 10000), 0);
    ds_presence_unsubscribe(sub);
    int online = 0, typing = 0;
    for (int i = 0; i < c.n; i++) {
        ck_assert_int_eq(c.ev[i].conversation_id, 41);
        if (c.ev[i].user_id != 7)
            continue;
        online += c.ev[i].type == DS_PRESENCE_ONLINE;
        typing += c.ev[i].type == DS_PRESENCE_TYPING;
    }
    ck_assert_int_eq(online, 1);
    ck_assert_int_eq(typing, 1);
    ck_assert_int_eq(c.n, 3);
    ck_assert_str_eq(listed(p, 41, false), "7,999");
    dt_redis_flush_prefix(r);
    ds_presence_close(p);
    ds_redis_close(r);
}
END_TEST

Suite *ds_test_presence_suite(void) {
    Suite *s = suite_create("presence");
    TCase *tc = tcase_create("state");
    tcase_add_test(tc, test_presence_online_list);
    tcase_add_test(tc, test_presence_expires_without_heartbeat);
    tcase_add_test(tc, test_presence_typing);
    tcase_add_test(tc, test_presence_erased_with_user);
    suite_add_tcase(s, tc);
    tc = tcase_create("events");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_presence_events_in_process);
    tcase_add_test(tc, test_presence_subscriber_in_another_process);
    tcase_add_test(tc, test_presence_all_conversations_prefix_is_literal);
    tcase_add_test(tc, test_presence_unsubscribe_from_callback);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis_restart");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
    tcase_add_test(tc, test_presence_subscription_resyncs_after_restart);
    tcase_add_test(tc, test_presence_subscribe_fails_without_redis);
    suite_add_tcase(s, tc);
    tc = tcase_create("unsubscribe_while_reconnecting");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_presence_unsubscribe_while_reconnecting);
    suite_add_tcase(s, tc);
    tc = tcase_create("promises");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_presence_heartbeat_extends_by_server_time);
    tcase_add_test(tc, test_presence_timing_out_publishes_nothing);
    tcase_add_test(tc, test_presence_event_json_on_the_channel);
    tcase_add_test(tc, test_presence_one_event_per_transition_from_many_threads);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, test_presence_errors);
    suite_add_tcase(s, tc);
    return s;
}
