#define _GNU_SOURCE /* memmem */
#include "dt_redis.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "redis/redis_internal.h"

ds_config *dt_redis_config(const char *url, const char *tag) {
    static int counter;
    ds_config *cfg;
    ds_error err = {0};
    ds_status st = ds_config_new(&cfg, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set(cfg, "redis_url", url, &err);
    ck_assert_ds_ok(st, err);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "dt:%s:%d:%d:", tag, (int)getpid(),
             ++counter);
    st = ds_config_set(cfg, "redis_prefix", prefix, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set_int(cfg, "redis_retry_ms", 20, &err);
    ck_assert_ds_ok(st, err);
    st = ds_config_set_int(cfg, "redis_command_timeout_ms", 5000, &err);
    ck_assert_ds_ok(st, err);
    return cfg;
}

ds_redis *dt_redis_url(const char *url, const char *tag) {
    ds_config *cfg = dt_redis_config(url, tag);
    ds_redis *r;
    ds_error err = {0};
    ds_status st = ds_redis_open(cfg, &r, &err);
    ds_config_free(cfg);
    ck_assert_ds_ok(st, err);
    return r;
}

ds_redis *dt_redis(const char *tag) {
    return dt_redis_url(dt_env("REDIS_URL"), tag);
}

redisReply *dt_rcmd(ds_redis *r, const char *fmt, ...) {
    ds_error err = {0};
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = ds__redis_commandv(r, &err, fmt, ap);
    va_end(ap);
    ck_assert_msg(reply != NULL, "redis command '%s' failed: %s", fmt,
                  err.message);
    return reply;
}

long long dt_rint(ds_redis *r, const char *fmt, ...) {
    ds_error err = {0};
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = ds__redis_commandv(r, &err, fmt, ap);
    va_end(ap);
    ck_assert_msg(reply != NULL, "redis command '%s' failed: %s", fmt,
                  err.message);
    ck_assert_msg(reply->type == REDIS_REPLY_INTEGER,
                  "redis command '%s': not an integer reply (type %d)", fmt,
                  reply->type);
    long long v = reply->integer;
    freeReplyObject(reply);
    return v;
}

void dt_redis_stop(void) {
    ck_assert_int_eq(dt_services("stop redis"), 0);
}

void dt_redis_start(ds_redis *r) {
    ck_assert_int_eq(dt_services("start redis"), 0);
    dt_redis_wait_up(r);
}

void dt_redis_wait_up(ds_redis *r) {
    ds_error err = {0};
    long long deadline = dt_now_ms() + 30000;
    while (ds_redis_ping(r, &err) != DS_OK) {
        ck_assert_msg(dt_now_ms() < deadline,
                      "redis did not come back: %s", err.message);
        usleep(20000);
    }
}

void dt_redis_ensure_started(void) {
    if (dt_services("status redis") != 0)
        dt_services("start redis");
}

long long dt_redis_each_key(ds_redis *r, const char *pattern,
                            dt_redis_key_fn fn, void *ud) {
    size_t plen;
    const char *prefix = ds__redis_prefix(r, &plen);
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, pattern);
    long long seen = 0;
    char cursor[32] = "0";
    do {
        redisReply *rep = dt_rcmd(r, "SCAN %s MATCH %s COUNT 1000", cursor, full);
        ck_assert_int_eq(rep->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        const redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            seen++;
            const redisReply *k = keys->element[i];
            if (fn)
                fn(ud, k->str, k->len, k->len >= plen ? k->str + plen : k->str);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return seen;
}

long long dt_redis_count_keys(ds_redis *r, const char *pattern) {
    return dt_redis_each_key(r, pattern, NULL, NULL);
}

static void delete_key(void *ud, const char *key, size_t len, const char *rel) {
    (void)rel;
    freeReplyObject(dt_rcmd(ud, "DEL %b", key, len));
}

void dt_redis_flush_prefix(ds_redis *r) {
    dt_redis_each_key(r, "*", delete_key, r);
}

/* ---- a scripted fake server ---------------------------------------------------- */

#define DT_FAKE_CONNS 16

struct dt_fake {
    int lfd;
    int port;
    char url[64];
    dt_fake_fn fn;
    void *ud;
    pthread_t acceptor;
    pthread_mutex_t mu;
    int n;
    int fds[DT_FAKE_CONNS];
    pthread_t threads[DT_FAKE_CONNS];
    atomic_bool stopping;
};

typedef struct {
    dt_fake *f;
    int index;
} dt_fake_conn;

static void *fake_conn_main(void *p) {
    dt_fake_conn *c = p;
    c->f->fn(c->f->ud, c->index, c->f->fds[c->index]);
    free(c);
    return NULL;
}

static void *fake_accept_main(void *p) {
    dt_fake *f = p;
    for (;;) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0 || atomic_load(&f->stopping)) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        pthread_mutex_lock(&f->mu);
        if (f->n == DT_FAKE_CONNS) {
            pthread_mutex_unlock(&f->mu);
            close(fd);
            continue;
        }
        dt_fake_conn *c = malloc(sizeof *c);
        c->f = f;
        c->index = f->n;
        f->fds[f->n] = fd;
        pthread_create(&f->threads[f->n], NULL, fake_conn_main, c);
        f->n++;
        pthread_mutex_unlock(&f->mu);
    }
}

dt_fake *dt_fake_start(dt_fake_fn fn, void *ud) {
    dt_fake *f = calloc(1, sizeof *f);
    ck_assert_ptr_nonnull(f);
    f->fn = fn;
    f->ud = ud;
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(f->lfd, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(f->lfd, 16), 0);
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    snprintf(f->url, sizeof f->url, "redis://127.0.0.1:%d/0", f->port);
    ck_assert_int_eq(pthread_create(&f->acceptor, NULL, fake_accept_main, f), 0);
    return f;
}

const char *dt_fake_url(const dt_fake *f) { return f->url; }

int dt_fake_port(const dt_fake *f) { return f->port; }

void dt_fake_stop(dt_fake *f) {
    atomic_store(&f->stopping, true);
    shutdown(f->lfd, SHUT_RDWR); /* wakes accept() */
    pthread_join(f->acceptor, NULL);
    close(f->lfd);
    for (int i = 0; i < f->n; i++)
        shutdown(f->fds[i], SHUT_RDWR);
    for (int i = 0; i < f->n; i++) {
        pthread_join(f->threads[i], NULL);
        close(f->fds[i]);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

bool dt_fake_expect(int fd, const char *needle) {
    char buf[8192];
    size_t have = 0, nlen = strlen(needle);
    long long deadline = dt_now_ms() + 20000;
    while (dt_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        if (have == sizeof buf) { /* keep the tail a needle may span */
            memmove(buf, buf + have - nlen, nlen);
            have = nlen;
        }
        ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n <= 0)
            return false;
        have += (size_t)n;
        if (memmem(buf, have, needle, nlen))
            return true;
    }
    return false;
}

bool dt_fake_send(int fd, const char *s) {
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}
