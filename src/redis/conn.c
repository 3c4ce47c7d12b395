/*
 * One Redis connection: our own non-blocking socket (TCP or unix), optional
 * TLS with OpenSSL, hiredis only for the protocol (command formatter and
 * reply reader). One code path for redis:// and rediss://, so both get the
 * same deadlines: every wait is a poll() bounded by the call's deadline.
 *
 * hiredis 0.14 (Debian 12) has no TLS; keeping the socket ours is what lets
 * rediss:// work with it.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "redis/handle.h"

/* ---- errors ------------------------------------------------------------ */

static ds_status io_error(ds__rconn *c, ds_error *err, const char *what,
                          int errnum) {
    char buf[128];
    const char *reason = errnum ? strerror_r(errnum, buf, sizeof buf) : "";
    return ds__error_set(err, DS_ERR_REDIS, "redis %s: %s%s%s", c->label, what,
                         errnum ? ": " : "", reason);
}

/* The first queued OpenSSL error, for messages. Clears the queue. */
static void ssl_reason(char *buf, size_t len) {
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "no details");
    ERR_clear_error();
}

/* ---- waiting ------------------------------------------------------------- */

static int remaining_ms(int64_t deadline_us) {
    if (deadline_us == DS_REDIS_FOREVER)
        return -1;
    int64_t left = deadline_us - ds__now_us();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999) / 1000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static ds_status timed_out(ds__rconn *c, const char *what, ds_error *err) {
    return ds__error_set(err, DS_ERR_REDIS, "redis %s: %s timed out", c->label,
                         what);
}

/* Sets SO_RCVTIMEO/SO_SNDTIMEO of a blocking connection. */
static void set_sock_timeout(ds__rconn *c, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    c->sock_timeout_ms = ms;
}

/* Called before each read or write: fails once the deadline has passed, so
 * a peer that sends or takes a byte at a time cannot stretch a call past
 * it (a poll() that finds a byte ready never times out), and keeps the
 * socket timeout of a blocking connection within what is left. */
static ds_status before_io(ds__rconn *c, int64_t deadline_us, const char *what,
                           ds_error *err) {
    if (deadline_us == DS_REDIS_FOREVER)
        return DS_OK;
    if (ds__now_us() >= deadline_us)
        return timed_out(c, what, err);
    int left = remaining_ms(deadline_us);
    if (c->blocking && left + 5 < c->sock_timeout_ms)
        set_sock_timeout(c, left);
    return DS_OK;
}

/* poll() on the socket and the cancel descriptor (when there is one):
 * > 0 the socket is ready, 0 the time ran out, -1 with errno set, or
 * DS_POLL_CANCELLED. */
#define DS_POLL_CANCELLED (-2)
static int poll_conn(ds__rconn *c, short events, int ms) {
    struct pollfd p[2] = {{c->fd, events, 0}, {c->cancel_fd, POLLIN, 0}};
    int n = poll(p, c->cancel_fd >= 0 ? 2 : 1, ms);
    if (n > 0 && p[1].revents)
        return DS_POLL_CANCELLED;
    return n;
}

static ds_status cancelled(ds__rconn *c, ds_error *err) {
    ds__error_set(err, DS_ERR_CLOSED, "redis %s: connection closed by its owner",
                  c->label);
    if (err)
        err->retryable = false;
    return DS_ERR_CLOSED;
}

/* Waits for `events` on the socket; DS_ERR_REDIS (retryable) on timeout. */
static ds_status wait_fd(ds__rconn *c, short events, int64_t deadline_us,
                         const char *what, ds_error *err) {
    for (;;) {
        int n = poll_conn(c, events, remaining_ms(deadline_us));
        if (n == DS_POLL_CANCELLED)
            return cancelled(c, err);
        if (n > 0)
            return DS_OK; /* errors and hang-ups show in the next I/O call */
        if (n == 0)
            return timed_out(c, what, err);
        if (errno != EINTR)
            return io_error(c, err, "poll", errno);
    }
}

/* ---- a socket BIO that never raises SIGPIPE -------------------------------- */

/* OpenSSL's socket BIO writes with write(2), which raises SIGPIPE on a
 * closed connection and would kill an application that did not ignore it. */
static int bio_write(BIO *b, const char *buf, int len) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = recv(fd, buf, (size_t)len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)n;
}

static int bio_puts(BIO *b, const char *s) {
    return bio_write(b, s, (int)strlen(s));
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_init_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "libdatastore socket");
    if (m && BIO_meth_set_write(m, bio_write) &&
        BIO_meth_set_read(m, bio_read) && BIO_meth_set_puts(m, bio_puts) &&
        BIO_meth_set_ctrl(m, bio_ctrl)) {
        bio_method = m;
        return;
    }
    BIO_meth_free(m);
}

/* ---- TLS context -------------------------------------------------------------- */

/* Frees `ctx` and fails with DS_ERR_CONFIG: "<what> (<OpenSSL's
 * reason>)<hint>". */
static ds_status tls_context_failed(SSL_CTX *ctx, const char *what,
                                   const char *hint, ds_error *err) {
    char reason[256];
    ssl_reason(reason, sizeof reason);
    SSL_CTX_free(ctx);
    return ds__error_set(err, DS_ERR_CONFIG, "%s (%s)%s", what, reason, hint);
}

ds_status ds__redis_tls_context(const char *ca_path, SSL_CTX **out,
                                ds_error *err) {
    *out = NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return ds__error_set(err, DS_ERR_NOMEM,
                             "redis: cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (ca_path && *ca_path) {
        struct stat sb;
        if (stat(ca_path, &sb) != 0) {
            char buf[128];
            int e = errno;
            SSL_CTX_free(ctx);
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "DS_REDIS_TLS_CA: cannot read '%s': %s",
                                 ca_path, strerror_r(e, buf, sizeof buf));
        }
        int ok = S_ISDIR(sb.st_mode)
                     ? SSL_CTX_load_verify_locations(ctx, NULL, ca_path)
                     : SSL_CTX_load_verify_locations(ctx, ca_path, NULL);
        if (!ok) {
            char what[DS_ERROR_MESSAGE_MAX];
            snprintf(what, sizeof what,
                     "DS_REDIS_TLS_CA: no usable CA certificate in '%s'",
                     ca_path);
            return tls_context_failed(ctx, what, "", err);
        }
    } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
        return tls_context_failed(ctx, "redis: cannot load the system CA store",
                                  "; set DS_REDIS_TLS_CA", err);
    }
    *out = ctx;
    return DS_OK;
}

/* ---- socket ------------------------------------------------------------------- */

static ds_status finish_connect(ds__rconn *c, int64_t deadline_us,
                                ds_error *err) {
    ds_status st = wait_fd(c, POLLOUT, deadline_us, "connect", err);
    if (st != DS_OK)
        return st;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        soerr = errno;
    return soerr ? io_error(c, err, "connect", soerr) : DS_OK;
}

static ds_status connect_unix(ds__rconn *c, const char *path,
                              int64_t deadline_us, ds_error *err) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return io_error(c, err, "socket", errno);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return DS_OK;
    if (errno != EINPROGRESS && errno != EAGAIN)
        return io_error(c, err, "connect", errno);
    return finish_connect(c, deadline_us, err);
}

static ds_status connect_tcp(ds__rconn *c, const char *host, int port,
                             int64_t deadline_us, ds_error *err) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return ds__error_set(err, DS_ERR_REDIS, "redis %s: cannot resolve host: %s",
                             c->label, gai_strerror(gai));
    ds_status st = DS_ERR_REDIS;
    ds__error_set(err, DS_ERR_REDIS, "redis %s: no address to connect to",
                  c->label);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family,
                       ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       ai->ai_protocol);
        if (c->fd < 0) {
            st = io_error(c, err, "socket", errno);
            continue;
        }
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
            st = DS_OK;
        else if (errno == EINPROGRESS)
            st = finish_connect(c, deadline_us, err);
        else
            st = io_error(c, err, "connect", errno);
        if (st == DS_OK)
            break;
        close(c->fd);
        c->fd = -1;
        if (st == DS_ERR_CLOSED)
            break; /* the owner cancelled: no next address */
    }
    freeaddrinfo(res);
    if (st != DS_OK)
        return st;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    return DS_OK;
}

/* ---- TLS handshake ------------------------------------------------------------- */

static bool is_ip_literal(const char *host) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

static ds_status tls_handshake(ds_redis *r, ds__rconn *c, int64_t deadline_us,
                               ds_error *err) {
    pthread_once(&bio_once, bio_init_method);
    ERR_clear_error();
    if (!bio_method)
        return ds__error_set(err, DS_ERR_NOMEM, "redis %s: TLS setup failed",
                             c->label);
    c->ssl = SSL_new(r->ssl_ctx);
    BIO *bio = c->ssl ? BIO_new(bio_method) : NULL;
    if (!bio)
        return ds__error_set(err, DS_ERR_NOMEM, "redis %s: TLS setup failed",
                             c->label);
    BIO_set_data(bio, (void *)(intptr_t)c->fd);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl, bio, bio);
    const char *host = r->url.host;
    int ok;
    if (is_ip_literal(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    } else {
        ok = SSL_set_tlsext_host_name(c->ssl, host) &&
             SSL_set1_host(c->ssl, host);
    }
    if (!ok) {
        ERR_clear_error();
        return ds__error_set(err, DS_ERR_REDIS,
                             "redis %s: cannot set the host name to verify",
                             c->label);
    }
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(c->ssl);
        if (rc == 1)
            return DS_OK;
        int e = SSL_get_error(c->ssl, rc);
        ds_status st;
        if (e == SSL_ERROR_WANT_READ)
            st = wait_fd(c, POLLIN, deadline_us, "TLS handshake", err);
        else if (e == SSL_ERROR_WANT_WRITE)
            st = wait_fd(c, POLLOUT, deadline_us, "TLS handshake", err);
        else
            break;
        if (st != DS_OK)
            return st;
    }
    long verify = SSL_get_verify_result(c->ssl);
    if (verify != X509_V_OK) {
        ERR_clear_error();
        ds__error_set(err, DS_ERR_REDIS,
                      "redis %s: TLS: the server certificate failed "
                      "verification (%s); check DS_REDIS_TLS_CA and the host "
                      "name in REDIS_URL",
                      c->label, X509_verify_cert_error_string(verify));
        if (err)
            err->retryable = false;
        return DS_ERR_REDIS;
    }
    char reason[256];
    int saved = errno;
    ssl_reason(reason, sizeof reason);
    if (strcmp(reason, "no details") == 0 && saved)
        return io_error(c, err, "TLS handshake", saved);
    return ds__error_set(err, DS_ERR_REDIS,
                         "redis %s: TLS handshake failed (%s); is this a TLS "
                         "port?",
                         c->label, reason);
}

/* ---- reading and writing ---------------------------------------------------------- */

static ds_status write_all(ds__rconn *c, const char *buf, size_t len,
                           int64_t deadline_us, ds_error *err) {
    size_t off = 0;
    while (off < len) {
        ds_status st = before_io(c, deadline_us, "write", err);
        if (st != DS_OK)
            return st;
        if (c->ssl) {
            ERR_clear_error();
            size_t chunk = len - off > INT32_MAX ? INT32_MAX : len - off;
            int n = SSL_write(c->ssl, buf + off, (int)chunk);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_WRITE)
                st = wait_fd(c, POLLOUT, deadline_us, "write", err);
            else if (e == SSL_ERROR_WANT_READ)
                st = wait_fd(c, POLLIN, deadline_us, "write", err);
            else {
                char reason[256];
                int saved = errno;
                ssl_reason(reason, sizeof reason);
                return e == SSL_ERROR_SYSCALL
                           ? io_error(c, err, "write", saved)
                           : ds__error_set(err, DS_ERR_REDIS,
                                           "redis %s: TLS write failed (%s)",
                                           c->label, reason);
            }
        } else {
            ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
            if (n >= 0) {
                off += (size_t)n;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return io_error(c, err, "write", errno);
            st = wait_fd(c, POLLOUT, deadline_us, "write", err);
        }
        if (st != DS_OK)
            return st;
    }
    return DS_OK;
}

/* One non-blocking read into the reply reader. *want is 0 when bytes were
 * fed, else the poll event to wait for (POLLIN, or POLLOUT for a TLS
 * renegotiation). End of stream and failures are errors. */
static ds_status try_read(ds__rconn *c, short *want, ds_error *err) {
    char buf[16384];
    ssize_t n;
    *want = 0;
    if (c->ssl) {
        ERR_clear_error();
        int rn = SSL_read(c->ssl, buf, (int)sizeof buf);
        if (rn <= 0) {
            int e = SSL_get_error(c->ssl, rn);
            int saved = errno;
            if (e == SSL_ERROR_WANT_READ) {
                *want = POLLIN;
                return DS_OK;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                *want = POLLOUT;
                return DS_OK;
            }
            if (e == SSL_ERROR_ZERO_RETURN ||
                (e == SSL_ERROR_SYSCALL && saved == 0)) {
                ERR_clear_error();
                return ds__error_set(err, DS_ERR_REDIS,
                                     "redis %s: the server closed the "
                                     "connection",
                                     c->label);
            }
            char reason[256];
            ssl_reason(reason, sizeof reason);
            return e == SSL_ERROR_SYSCALL
                       ? io_error(c, err, "read", saved)
                       : ds__error_set(err, DS_ERR_REDIS,
                                       "redis %s: TLS read failed (%s)",
                                       c->label, reason);
        }
        n = rn;
    } else {
        do
            n = recv(c->fd, buf, sizeof buf, 0);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            return ds__error_set(err, DS_ERR_REDIS,
                                 "redis %s: the server closed the connection",
                                 c->label);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return io_error(c, err, "read", errno);
            *want = POLLIN;
            return DS_OK;
        }
    }
    int fed = redisReaderFeed(c->reader, buf, (size_t)n);
    if (c->wipe_reads)
        ds__wipe(buf, (size_t)n);
    if (fed != REDIS_OK)
        return ds__error_set(err, DS_ERR_REDIS, "redis %s: protocol error: %s",
                             c->label, c->reader->errstr);
    return DS_OK;
}

/* Feeds at least one byte into the reply reader, waiting until the
 * deadline. */
static ds_status read_some(ds__rconn *c, int64_t deadline_us, ds_error *err) {
    for (;;) {
        short want;
        ds_status st = before_io(c, deadline_us, "read", err);
        if (st == DS_OK)
            st = try_read(c, &want, err);
        if (st != DS_OK || !want)
            return st;
        st = wait_fd(c, want, deadline_us, "read", err);
        if (st != DS_OK)
            return st;
    }
}

static ds_status next_reply(ds__rconn *c, int64_t deadline_us,
                            redisReply **out, ds_error *err) {
    *out = NULL;
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
            return ds__error_set(err, DS_ERR_REDIS,
                                 "redis %s: protocol error: %s", c->label,
                                 c->reader->errstr[0] ? c->reader->errstr
                                                      : "out of memory");
        if (reply) {
            *out = reply;
            return DS_OK;
        }
        ds_status st = read_some(c, deadline_us, err);
        if (st != DS_OK)
            return st;
    }
}

ds_status ds__rconn_roundtrip(ds__rconn *c, const char *buf, size_t len,
                              size_t n, redisReply **replies,
                              int64_t deadline_us, ds_error *err) {
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    if (c->blocking) {
        /* a blocking call must not outlive the deadline: follow it when it
         * is not the usual command timeout (a wait for the pool, a
         * XREADGROUP BLOCK) */
        int left = remaining_ms(deadline_us);
        if (left < 1)
            left = 1;
        if (left < c->sock_timeout_ms - 5 || left > c->sock_timeout_ms + 5)
            set_sock_timeout(c, left);
    }
    ds_status st = write_all(c, buf, len, deadline_us, err);
    for (size_t i = 0; st == DS_OK && i < n; i++)
        st = next_reply(c, deadline_us, &replies[i], err);
    if (st != DS_OK) {
        ds__redis_replies_free(replies, n);
        return st;
    }
    c->last_used_us = ds__now_us();
    return DS_OK;
}

bool ds__rconn_clean(ds__rconn *c) {
    return c->reader->pos >= c->reader->len &&
           !(c->ssl && SSL_pending(c->ssl) > 0);
}

bool ds__rconn_alive(ds__rconn *c) {
    if (c->reader->pos < c->reader->len)
        return false; /* unread bytes: out of step with the server */
    struct pollfd p = {c->fd, POLLIN | POLLRDHUP, 0};
    int n = poll(&p, 1, 0);
    if (n == 0)
        return true;
    if (n < 0 || (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)))
        return false;
    if (!c->ssl)
        return false; /* data nobody asked for */
    /* TLS 1.3 servers send session tickets after the handshake: consume
     * them, and only application data or a close means trouble. */
    int flags = fcntl(c->fd, F_GETFL);
    if (c->blocking)
        fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
    char b;
    ERR_clear_error();
    int rn = SSL_peek(c->ssl, &b, 1);
    int e = rn > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, rn);
    ERR_clear_error();
    if (c->blocking)
        fcntl(c->fd, F_SETFL, flags);
    return rn <= 0 && e == SSL_ERROR_WANT_READ;
}

/* ---- connect + AUTH + SELECT ------------------------------------------------------- */

/* Wipes what the reply reader has buffered (the connection is closed after
 * a failed handshake, and its bytes may echo the password). */
static void wipe_reader(ds__rconn *c) {
    if (c->reader->buf && c->reader->len > 0)
        ds__wipe(c->reader->buf, c->reader->len);
}

/* The set-up commands, formatted and joined into one buffer: AUTH (when
 * a password is set), SELECT (db != 0) and PING, pipelined in one round
 * trip. Both the parts and the buffer hold the password: wipe them. */
typedef struct handshake {
    char *parts[3];
    int lens[3];
    size_t n;
    int auth_index, select_index; /* -1: not sent */
    char *buf;
    size_t total;
} handshake;

static void handshake_free(handshake *h) {
    for (size_t i = 0; i < h->n; i++) {
        if (h->parts[i] && h->lens[i] > 0)
            ds__wipe(h->parts[i], (size_t)h->lens[i]);
        redisFreeCommand(h->parts[i]);
    }
    if (h->buf) {
        ds__wipe(h->buf, h->total);
        ds__free(h->buf);
    }
}

static void handshake_add(handshake *h, int argc, const char **argv) {
    h->lens[h->n] = redisFormatCommandArgv(&h->parts[h->n], argc, argv, NULL);
    h->n++;
}

static ds_status handshake_format(const ds_redis *r, handshake *h,
                                  ds_error *err) {
    memset(h, 0, sizeof *h);
    h->auth_index = h->select_index = -1;
    if (r->url.password) {
        const char *auth_argv[3] = {"AUTH", r->url.user, r->url.password};
        h->auth_index = (int)h->n;
        if (r->url.user) {
            handshake_add(h, 3, auth_argv);
        } else {
            auth_argv[1] = r->url.password;
            handshake_add(h, 2, auth_argv);
        }
    }
    if (r->url.db != 0) {
        char dbtext[16];
        snprintf(dbtext, sizeof dbtext, "%d", r->url.db);
        const char *select_argv[2] = {"SELECT", dbtext};
        h->select_index = (int)h->n;
        handshake_add(h, 2, select_argv);
    }
    const char *ping_argv[1] = {"PING"};
    handshake_add(h, 1, ping_argv);
    for (size_t i = 0; i < h->n; i++) {
        if (h->lens[i] < 0 || !h->parts[i])
            return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
        h->total += (size_t)h->lens[i];
    }
    h->buf = ds__malloc(h->total);
    if (!h->buf)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    size_t off = 0;
    for (size_t i = 0; i < h->n; i++) {
        memcpy(h->buf + off, h->parts[i], (size_t)h->lens[i]);
        off += (size_t)h->lens[i];
    }
    return DS_OK;
}

/* The error for error reply `rep` to set-up command `i` (AUTH was command
 * `auth_index`, SELECT `select_index`; -1: not sent). */
static ds_status handshake_reply_error(const ds_redis *r, const ds__rconn *c,
                                       int auth_index, int select_index,
                                       size_t i, const redisReply *rep,
                                       ds_error *err) {
    if ((int)i == auth_index || ds__redis_reply_is_error(rep, "NOAUTH") ||
        ds__redis_reply_is_error(rep, "WRONGPASS")) {
        /* Servers quote the arguments they echo ("unknown command
         * 'AUTH', with args beginning with: '...'"), and an argument
         * of AUTH is the password, perhaps cut short where scrubbing
         * would not find it: keep their words up to the first quote. */
        const char *words = rep->str ? rep->str : "";
        size_t keep = strcspn(words, "'\"`");
        while (keep > 0 && strchr(" ,:", words[keep - 1]))
            keep--;
        if (keep == 0) {
            words = "error reply";
            keep = strlen(words);
        }
        ds_status st = ds__error_set(err, DS_ERR_REDIS,
                                     "redis %s: authentication failed (check "
                                     "the user and password in REDIS_URL): "
                                     "%.*s",
                                     c->label, (int)(keep > 200 ? 200 : keep),
                                     words);
        if (err)
            err->retryable = false;
        return st;
    }
    if ((int)i == select_index) {
        char ctx[DS_REDIS_HOST_MAX + 160];
        snprintf(ctx, sizeof ctx, "redis %s: SELECT %d failed", c->label,
                 r->url.db);
        return ds__redis_reply_error(rep, ctx, err);
    }
    char ctx[DS_REDIS_HOST_MAX + 64];
    snprintf(ctx, sizeof ctx, "redis %s", c->label);
    return ds__redis_reply_error(rep, ctx, err);
}

static ds_status handshake_commands(ds_redis *r, ds__rconn *c,
                                    int64_t deadline_us, ds_error *err) {
    bool auth = r->url.password != NULL;
    handshake h;
    redisReply *replies[3] = {NULL, NULL, NULL};
    ds_status st = handshake_format(r, &h, err);
    if (st == DS_OK) {
        c->wipe_reads = auth;
        st = ds__rconn_roundtrip(c, h.buf, h.total, h.n, replies, deadline_us,
                                 err);
        c->wipe_reads = false;
    }
    size_t n = h.n;
    int auth_index = h.auth_index, select_index = h.select_index;
    handshake_free(&h);
    if (st != DS_OK) {
        if (auth)
            wipe_reader(c);
        return st;
    }
    for (size_t i = 0; i < n && st == DS_OK; i++)
        if (replies[i]->type == REDIS_REPLY_ERROR)
            st = handshake_reply_error(r, c, auth_index, select_index, i,
                                       replies[i], err);
    if (st != DS_OK && auth) {
        ds__error_scrub(err, r->url.password);
        /* the replies and the bytes they came in may echo the password */
        for (size_t i = 0; i < n; i++)
            if (replies[i]->type == REDIS_REPLY_ERROR && replies[i]->str)
                ds__wipe(replies[i]->str, replies[i]->len);
        wipe_reader(c);
    }
    ds__redis_replies_free(replies, n);
    return st;
}

ds_status ds__rconn_connect(ds_redis *r, int64_t deadline_us, bool pooled,
                            int cancel_fd, ds__rconn **out, ds_error *err) {
    *out = NULL;
    ds__rconn *c = ds__calloc(1, sizeof *c);
    if (!c)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    c->fd = -1;
    c->cancel_fd = pooled ? -1 : cancel_fd;
    c->command_timeout_ms = r->command_timeout_ms;
    memcpy(c->label, r->label, sizeof c->label);
    c->reader = redisReaderCreate();
    if (!c->reader) {
        ds__free(c);
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    }
    int64_t deadline = ds__now_us() + (int64_t)r->connect_timeout_ms * 1000;
    if (deadline_us < deadline)
        deadline = deadline_us;
    ds_status st = r->url.unix_socket
                       ? connect_unix(c, r->url.path, deadline, err)
                       : connect_tcp(c, r->url.host, r->url.port, deadline, err);
    if (st == DS_OK && r->ssl_ctx)
        st = tls_handshake(r, c, deadline, err);
    if (st == DS_OK)
        st = handshake_commands(r, c, deadline, err);
    if (st == DS_OK && !ds__rconn_clean(c))
        st = ds__error_set(err, DS_ERR_REDIS,
                           "redis %s: the server answered the connection "
                           "set-up with more replies than it was sent commands",
                           c->label);
    if (st != DS_OK) {
        ds__rconn_close(c);
        return st;
    }
    if (pooled) {
        int flags = fcntl(c->fd, F_GETFL);
        if (flags >= 0 && fcntl(c->fd, F_SETFL, flags & ~O_NONBLOCK) == 0) {
            c->blocking = true;
            set_sock_timeout(c, r->command_timeout_ms);
        }
    }
    c->last_used_us = ds__now_us();
    *out = c;
    return DS_OK;
}

void ds__rconn_close(ds__rconn *c) {
    if (!c)
        return;
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* best effort close_notify, never waits */
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    ds__free(c);
}

/* ---- dedicated connections --------------------------------------------------------- */

ds_status ds__rconn_send_argv(ds__rconn *c, int argc, const char *const *argv,
                              const size_t *argvlen, int timeout_ms,
                              ds_error *err) {
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, (const char **)argv, argvlen);
    if (len < 0 || !cmd)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    if (timeout_ms < 0)
        timeout_ms = c->command_timeout_ms;
    ds_status st = write_all(c, cmd, (size_t)len,
                             ds__now_us() + (int64_t)timeout_ms * 1000, err);
    redisFreeCommand(cmd);
    return st;
}

ds_status ds__rconn_read(ds__rconn *c, int timeout_ms, redisReply **out,
                         ds_error *err) {
    *out = NULL;
    int64_t deadline = timeout_ms < 0
                           ? DS_REDIS_FOREVER
                           : ds__now_us() + (int64_t)timeout_ms * 1000;
    short want = POLLIN;
    bool fed = false;
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
            return ds__error_set(err, DS_ERR_REDIS,
                                 "redis %s: protocol error: %s", c->label,
                                 c->reader->errstr);
        if (reply) {
            *out = reply;
            return DS_OK;
        }
        if (!(c->ssl && SSL_pending(c->ssl) > 0)) {
            /* a reply still coming in a byte at a time does not hold the
             * caller past its deadline: what arrived stays in the reader
             * for the next call */
            if (fed && deadline != DS_REDIS_FOREVER && ds__now_us() >= deadline)
                return DS_OK;
            int n = poll_conn(c, want, remaining_ms(deadline));
            if (n == DS_POLL_CANCELLED)
                return cancelled(c, err);
            if (n == 0)
                return DS_OK; /* nothing arrived in time */
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return io_error(c, err, "poll", errno);
            }
        }
        /* TLS records without application data (tickets) leave want set:
         * go on waiting */
        ds_status st = try_read(c, &want, err);
        if (st != DS_OK)
            return st;
        if (!want) {
            fed = true;
            want = POLLIN;
        }
    }
}

int ds__rconn_fd(const ds__rconn *c) { return c->fd; }
