/* The Redis handle's private structures (src/redis only). */
#ifndef DS_REDIS_HANDLE_H
#define DS_REDIS_HANDLE_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "redis/redis_internal.h"
#include "redis/url.h"

struct ds__rconn {
    int fd;
    SSL *ssl;              /* NULL for plain connections */
    redisReader *reader;
    int64_t last_used_us;
    int command_timeout_ms;
    char label[DS_REDIS_HOST_MAX + 16]; /* "host:port" for messages */
    struct ds__rconn *next; /* idle stack link */
};

struct ds_redis {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    ds__rconn *idle;        /* LIFO: a hot set stays warm */
    int idle_n;
    int total;              /* open plus being opened */
    int max;
    bool closing;
    int64_t down_until_us;  /* fail fast until then after a connect failure */

    ds__redis_url url;
    SSL_CTX *ssl_ctx;       /* rediss:// only */
    char label[DS_REDIS_HOST_MAX + 16];
    char *prefix;
    size_t prefix_len;
    int connect_timeout_ms;
    int command_timeout_ms;
    int retry_ms;

    atomic_uint_fast64_t commands, errors, connects, connect_failures,
        stale_replaced;
};

/* A deadline that never comes. */
#define DS_REDIS_FOREVER INT64_MAX

/* Opens, authenticates and selects the database (conn.c). */
ds_status ds__rconn_connect(ds_redis *r, ds__rconn **out, ds_error *err);

/* Writes `len` bytes and reads `n` replies before `deadline_us`
 * (monotonic). On failure the connection is unusable. */
ds_status ds__rconn_roundtrip(ds__rconn *c, const char *buf, size_t len,
                              size_t n, redisReply **replies,
                              int64_t deadline_us, ds_error *err);

/* False when an idle connection's server went away (checked without a
 * round trip). */
bool ds__rconn_alive(ds__rconn *c);

/* TLS context for the handle from the CA setting (conn.c). */
ds_status ds__redis_tls_context(const char *ca_path, SSL_CTX **out,
                                ds_error *err);

#endif
