/* The Redis handle's private structures (src/redis only). */
#ifndef DS_REDIS_HANDLE_H
#define DS_REDIS_HANDLE_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "redis/redis_internal.h"
#include "core/redis_url.h"

struct ds__rconn {
    int fd;
    SSL *ssl;              /* NULL for plain connections */
    redisReader *reader;
    int64_t last_used_us;
    int command_timeout_ms;
    /* Pooled connections block in send/recv with SO_SNDTIMEO/SO_RCVTIMEO
     * (one syscall per read, like hiredis' own blocking mode); dedicated
     * ones (pub/sub) stay non-blocking for poll(). Either way an EAGAIN
     * falls back to poll() bounded by the call's deadline. */
    bool blocking;
    int sock_timeout_ms;
    /* Dedicated connections: a descriptor that becomes readable when the
     * owner wants every wait to stop (-1: none). */
    int cancel_fd;
    /* While AUTH's replies are read: the bytes may echo the password, so
     * the read buffer is wiped after each read. */
    bool wipe_reads;
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

/* Opens, authenticates and selects the database (conn.c), within the
 * connect timeout and never after `deadline_us` (a command's deadline;
 * DS_REDIS_FOREVER for none). `pooled` picks blocking I/O; `cancel_fd`
 * (-1: none) as in ds__redis_conn_open(). */
ds_status ds__rconn_connect(ds_redis *r, int64_t deadline_us, bool pooled,
                            int cancel_fd, ds__rconn **out, ds_error *err);

/* A connection released less than this long ago is reused without the
 * liveness check (saves a syscall on busy paths). */
#define DS_REDIS_FRESH_US 250000

/* Writes `len` bytes and reads `n` replies before `deadline_us`
 * (monotonic). On failure the connection is unusable. */
ds_status ds__rconn_roundtrip(ds__rconn *c, const char *buf, size_t len,
                              size_t n, redisReply **replies,
                              int64_t deadline_us, ds_error *err);

/* False when an idle connection's server went away (checked without a
 * round trip). */
bool ds__rconn_alive(ds__rconn *c);

/* True when nothing already received is left over from the last round
 * trip: a server that sent more than the replies asked for is out of step,
 * and the next caller would read a stale reply. Best effort: surplus bytes
 * still on the way are caught by the next idle check (ds__rconn_alive) or
 * read as a reply out of step. */
bool ds__rconn_clean(ds__rconn *c);

/* TLS context for the handle from the CA setting (conn.c). */
ds_status ds__redis_tls_context(const char *ca_path, SSL_CTX **out,
                                ds_error *err);

#endif
