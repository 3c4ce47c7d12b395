#include "dt_redis.h"

#include <stdarg.h>
#include <string.h>
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

void dt_redis_flush_prefix(ds_redis *r) {
    size_t plen;
    const char *prefix = ds__redis_prefix(r, &plen);
    char pattern[160];
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    char cursor[32] = "0";
    do {
        redisReply *rep = dt_rcmd(r, "SCAN %s MATCH %s COUNT 1000", cursor,
                                  pattern);
        ck_assert_int_eq(rep->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *d = dt_rcmd(r, "DEL %b", keys->element[i]->str,
                                    keys->element[i]->len);
            freeReplyObject(d);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
}
