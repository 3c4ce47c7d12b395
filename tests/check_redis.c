/* The Redis handle against the local redis-server (plain and TLS ports). */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dt_redis.h"
#include "redis/redis_internal.h"
#include "redis/handle.h" /* DS_REDIS_FRESH_US */
#include "core/redis_url.h"

static const char *password_of(const char *url) {
    /* "redis://default:PW@host..." or "redis://:PW@host..." -> PW (static
     * copy) */
    static char pw[128];
    const char *p = strstr(url, "://");
    ck_assert_ptr_nonnull(p);
    p += 3;
    p += strcspn(p, ":@");
    ck_assert_int_eq(*p, ':');
    p++;
    size_t n = strcspn(p, "@");
    ck_assert_uint_lt(n, sizeof pw);
    memcpy(pw, p, n);
    pw[n] = '\0';
    return pw;
}

/* host:port part of a URL ("127.0.0.1:1234"). */
static void hostport_of(const char *url, char *out, size_t len) {
    const char *at = strrchr(url, '@');
    ck_assert_ptr_nonnull(at);
    snprintf(out, len, "%.*s", (int)strcspn(at + 1, "/"), at + 1);
}

static const char *tcp_port_of(const char *url) {
    static char port[16];
    char hp[128];
    hostport_of(url, hp, sizeof hp);
    snprintf(port, sizeof port, "%s", strrchr(hp, ':') + 1);
    return port;
}

static ds_status open_with(const char *url, const char *ca, ds_redis **out,
                           ds_error *err) {
    ds_config *cfg = dt_redis_config(url, "redis");
    ds_error e2 = {0};
    if (ca) {
        ds_status st = ds_config_set(cfg, "redis_tls_ca", ca, &e2);
        ck_assert_ds_ok(st, e2);
    }
    ds_status st = ds_config_set_int(cfg, "redis_connect_timeout_ms", 3000, &e2);
    ck_assert_ds_ok(st, e2);
    st = ds_redis_open(cfg, out, err);
    ds_config_free(cfg);
    return st;
}

/* ---- opening ------------------------------------------------------------ */

START_TEST(test_redis_open_plain) {
    ds_redis *r = dt_redis("open");
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    ck_assert(!ds_redis_is_tls(r));
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_int_eq(s.connections, 1);
    ck_assert_int_eq(s.idle, 1);
    ck_assert_uint_eq(s.connects, 1);
    ck_assert_uint_ge(s.commands, 1);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_open_url_shorthand) {
    ds_redis *r;
    ds_error err = {0};
    ds_status st = ds_redis_open_url(dt_env("REDIS_URL"), &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    size_t plen;
    ck_assert_str_eq(ds__redis_prefix(r, &plen), "ds:");
    ck_assert_uint_eq(plen, 3);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_open_needs_url) {
    ds_config *cfg;
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_new(&cfg, &err), err);
    ds_redis *r = (ds_redis *)1;
    ds_status st = ds_redis_open(cfg, &r, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "REDIS_URL"));
    ds_config_free(cfg);
}
END_TEST

START_TEST(test_redis_open_wrong_password) {
    const char *url = dt_env("REDIS_URL");
    char hp[128], bad[256];
    hostport_of(url, hp, sizeof hp);
    snprintf(bad, sizeof bad, "redis://:Wr0ngSecretPw@%s/0", hp);
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(bad, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "authentication failed"));
    ck_assert_ptr_null(strstr(err.message, "Wr0ngSecretPw"));
    ck_assert(!ds_error_is_retryable(&err));
    /* no password at all against a server that wants one */
    snprintf(bad, sizeof bad, "redis://%s/0", hp);
    st = open_with(bad, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "NOAUTH"));
}
END_TEST

START_TEST(test_redis_acl_user_auth) {
    ds_redis *admin = dt_redis("acl");
    const char *url = dt_env("REDIS_URL");
    char hp[128], u[256];
    hostport_of(url, hp, sizeof hp);
    char user[64];
    snprintf(user, sizeof user, "dt_user_%d", (int)getpid());
    freeReplyObject(dt_rcmd(admin, "ACL SETUSER %s on >p%%40ss:w0rd ~dt:* +@all",
                            user));
    /* '@' and ':' percent-encoded in the password */
    snprintf(u, sizeof u, "redis://%s:p%%2540ss%%3Aw0rd@%s/0", user, hp);
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(u, NULL, &r, &err);
    ck_assert_ds_ok(st, err);
    redisReply *who = dt_rcmd(r, "ACL WHOAMI");
    ck_assert_str_eq(who->str, user);
    freeReplyObject(who);
    ds_redis_close(r);
    /* the ACL user cannot touch keys outside its pattern */
    snprintf(u, sizeof u, "redis://%s:wrong@%s/0", user, hp);
    st = open_with(u, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "authentication failed"));
    freeReplyObject(dt_rcmd(admin, "ACL DELUSER %s", user));
    ds_redis_close(admin);
}
END_TEST

/* scripts/services prints the "default" user that redis-cli 7 wants; the
 * password-only form authenticates the same account. */
START_TEST(test_redis_url_default_user_and_password_only_forms) {
    const char *url = dt_env("REDIS_URL");
    char hp[128], u[256];
    hostport_of(url, hp, sizeof hp);
    const char *forms[2] = {"redis://default:%s@%s/0", "redis://:%s@%s/0"};
    for (int i = 0; i < 2; i++) {
        snprintf(u, sizeof u, forms[i], password_of(url), hp);
        ds_redis *r = dt_redis_url(u, "urlform");
        redisReply *who = dt_rcmd(r, "ACL WHOAMI");
        ck_assert_str_eq(who->str, "default");
        freeReplyObject(who);
        ds_error err = {0};
        ck_assert_ds_ok(ds_redis_ping(r, &err), err);
        ds_redis_close(r);
    }
}
END_TEST

START_TEST(test_redis_db_index_selected) {
    const char *url = dt_env("REDIS_URL");
    char hp[128], u3[256];
    hostport_of(url, hp, sizeof hp);
    snprintf(u3, sizeof u3, "redis://:%s@%s/3", password_of(url), hp);
    ds_redis *r0 = dt_redis("db");
    ds_redis *r3 = dt_redis_url(u3, "db");
    freeReplyObject(dt_rcmd(r3, "SET dt:db:%d here PX 60000", (int)getpid()));
    ck_assert_int_eq(dt_rint(r3, "EXISTS dt:db:%d", (int)getpid()), 1);
    ck_assert_int_eq(dt_rint(r0, "EXISTS dt:db:%d", (int)getpid()), 0);
    redisReply *info = dt_rcmd(r3, "CLIENT INFO");
    ck_assert_ptr_nonnull(strstr(info->str, " db=3 "));
    freeReplyObject(info);
    freeReplyObject(dt_rcmd(r3, "DEL dt:db:%d", (int)getpid()));
    ds_redis_close(r0);
    ds_redis_close(r3);
}
END_TEST

START_TEST(test_redis_unreachable_is_retryable) {
    /* a port nobody listens on: the TLS port's neighbour is not safe, so
     * bind one, learn it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char u[128];
    snprintf(u, sizeof u, "redis://:pw@127.0.0.1:%d/0", ntohs(sa.sin_port));
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(u, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_ptr_nonnull(strstr(err.message, "connect"));
    ck_assert_ptr_null(strstr(err.message, "pw@"));
}
END_TEST

/* ---- TLS ------------------------------------------------------------------ */

START_TEST(test_redis_tls_verified_with_right_ca) {
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(dt_env("REDIS_TLS_URL"), dt_env("DS_TEST_TLS_CA"),
                             &r, &err);
    ck_assert_ds_ok(st, err);
    ck_assert(ds_redis_is_tls(r));
    redisReply *info = dt_rcmd(r, "CLIENT INFO");
    ck_assert_ptr_nonnull(strstr(info->str, "laddr="));
    freeReplyObject(info);
    /* values bigger than a TLS record and our read buffer, both ways */
    size_t big = 3 * 1024 * 1024 + 17;
    char *val = malloc(big);
    for (size_t i = 0; i < big; i++)
        val[i] = (char)('a' + i % 26);
    char *key = ds__redis_key(r, NULL, "big");
    freeReplyObject(dt_rcmd(r, "SET %s %b PX 60000", key, val, big));
    redisReply *got = dt_rcmd(r, "GET %s", key);
    ck_assert_int_eq(got->type, REDIS_REPLY_STRING);
    ck_assert_uint_eq(got->len, big);
    ck_assert(memcmp(got->str, val, big) == 0);
    freeReplyObject(got);
    freeReplyObject(dt_rcmd(r, "DEL %s", key));
    ds__free(key);
    free(val);
    /* the connection stays usable after idling past the liveness check's
     * threshold (TLS 1.3 session tickets arrive after the handshake and
     * must not look like a dead socket) */
    usleep(400000);
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_uint_eq(s.stale_replaced, 0);
    ck_assert_uint_eq(s.connects, 1);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_tls_wrong_ca_refused) {
    ds_redis *r = (ds_redis *)1;
    ds_error err = {0};
    ds_status st = open_with(dt_env("REDIS_TLS_URL"),
                             dt_env("DS_TEST_TLS_WRONG_CA"), &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "certificate"));
    ck_assert_ptr_nonnull(strstr(err.message, "DS_REDIS_TLS_CA"));
    ck_assert(!ds_error_is_retryable(&err));
    ck_assert_ptr_null(strstr(err.message, password_of(dt_env("REDIS_TLS_URL"))));
}
END_TEST

START_TEST(test_redis_tls_verification_on_by_default) {
    /* no CA configured: the system store does not know the test CA */
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(dt_env("REDIS_TLS_URL"), NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "certificate"));
}
END_TEST

START_TEST(test_redis_tls_host_name_checked) {
    /* The certificate names localhost and 127.0.0.1; the same server under
     * the IPv4-mapped IPv6 address must be refused. */
    const char *url = dt_env("REDIS_TLS_URL");
    char u[256];
    snprintf(u, sizeof u, "rediss://:%s@[::ffff:127.0.0.1]:%s/0",
             password_of(url), tcp_port_of(url));
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(u, dt_env("DS_TEST_TLS_CA"), &r, &err);
    if (st != DS_OK && !strstr(err.message, "certificate")) {
        dt_skip("test_redis_tls_host_name_checked",
                "no IPv4-mapped IPv6 on this host");
        return;
    }
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "mismatch"));
    /* and 127.0.0.1, which is in the certificate, passes */
    snprintf(u, sizeof u, "rediss://:%s@127.0.0.1:%s/0", password_of(url),
             tcp_port_of(url));
    st = open_with(u, dt_env("DS_TEST_TLS_CA"), &r, &err);
    ck_assert_ds_ok(st, err);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_tls_against_plain_port) {
    const char *url = dt_env("REDIS_URL");
    char hp[128], u[256];
    hostport_of(url, hp, sizeof hp);
    snprintf(u, sizeof u, "rediss://:%s@%s/0", password_of(url), hp);
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(u, dt_env("DS_TEST_TLS_CA"), &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "TLS"));
}
END_TEST

START_TEST(test_redis_tls_bad_ca_file) {
    ds_redis *r;
    ds_error err = {0};
    ds_status st = open_with(dt_env("REDIS_TLS_URL"), "/nonexistent/ca.pem",
                             &r, &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "DS_REDIS_TLS_CA"));
    char path[256];
    const char *base = dt_env_opt("TMPDIR");
    snprintf(path, sizeof path, "%s/dt_notaca_XXXXXX", base ? base : P_tmpdir);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "not a certificate\n", 18), 18);
    close(fd);
    st = open_with(dt_env("REDIS_TLS_URL"), path, &r, &err);
    unlink(path);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_nonnull(strstr(err.message, "no usable CA"));
}
END_TEST

/* ---- commands ------------------------------------------------------------------ */

START_TEST(test_redis_commands_and_error_replies) {
    ds_redis *r = dt_redis("cmd");
    ds_error err = {0};
    char *key = ds__redis_key(r, NULL, "k:%d", 7);
    ck_assert_ptr_nonnull(strstr(key, "dt:cmd:"));
    ck_assert(strcmp(key + strlen(key) - 4, ":k:7") == 0);
    const char *argv[] = {"SET", key, "v\0x", "PX", "60000"};
    size_t lens[] = {3, strlen(key), 3, 2, 5};
    redisReply *rep = ds__redis_command_argv(r, 5, argv, lens, &err);
    ck_assert_ptr_nonnull(rep);
    ck_assert_int_eq(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    rep = dt_rcmd(r, "GET %s", key);
    ck_assert_uint_eq(rep->len, 3);
    ck_assert(memcmp(rep->str, "v\0x", 3) == 0);
    freeReplyObject(rep);
    /* an error reply: DS_ERR_REDIS with the server's words, not retryable */
    rep = ds__redis_command(r, &err, "LPUSH %s x", key);
    ck_assert_ptr_null(rep);
    ck_assert_int_eq(err.code, DS_ERR_REDIS);
    ck_assert_ptr_nonnull(strstr(err.message, "WRONGTYPE"));
    ck_assert(!ds_error_is_retryable(&err));
    /* the connection survives an error reply */
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_int_eq(s.connections, 1);
    freeReplyObject(dt_rcmd(r, "DEL %s", key));
    ds__free(key);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_pipeline_one_round_trip) {
    ds_redis *r = dt_redis("pipe");
    ds_error err = {0};
    char *key = ds__redis_key(r, NULL, "n");
    const char *a0[] = {"INCR", key};
    const char *a1[] = {"HSET", key, "f", "v"}; /* WRONGTYPE */
    const char *a2[] = {"INCRBY", key, "41"};
    const char *a3[] = {"PEXPIRE", key, "60000"};
    ds__redis_cmd cmds[] = {{2, a0, NULL}, {4, a1, NULL}, {3, a2, NULL},
                            {3, a3, NULL}};
    redisReply *rep[4];
    ds_redis_stats before = DS_REDIS_STATS_INIT, after = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &before, &err), err);
    ds_status st = ds__redis_pipeline(r, cmds, 4, rep, &err);
    ck_assert_ds_ok(st, err);
    ck_assert_ds_ok(ds_redis_stats_get(r, &after, &err), err);
    ck_assert_uint_eq(after.commands - before.commands, 1);
    ck_assert_int_eq(rep[0]->integer, 1);
    ck_assert(ds__redis_reply_is_error(rep[1], "WRONGTYPE"));
    ck_assert_int_eq(rep[2]->integer, 42);
    ck_assert_int_eq(rep[3]->integer, 1);
    ds__redis_replies_free(rep, 4);
    ck_assert_ptr_null(rep[0]);
    freeReplyObject(dt_rcmd(r, "DEL %s", key));
    ds__free(key);
    ds_redis_close(r);
}
END_TEST

static ds__redis_script add_script =
    DS__REDIS_SCRIPT("dt_add", "return redis.call('INCRBY', KEYS[1], ARGV[1])");

START_TEST(test_redis_script_reloaded_after_flush) {
    ds_redis *r = dt_redis("script");
    ds_error err = {0};
    char *key = ds__redis_key(r, NULL, "sum");
    const char *args[] = {key, "5"};
    redisReply *rep = ds__redis_eval(r, &add_script, 1, 1, args, NULL, &err);
    ck_assert_msg(rep != NULL, "%s", err.message);
    ck_assert_int_eq(rep->integer, 5);
    freeReplyObject(rep);
    const char *sha = ds__redis_script_sha(&add_script);
    ck_assert_uint_eq(strlen(sha), 40);
    ck_assert_uint_eq(strspn(sha, "0123456789abcdef"), 40);
    /* a flushed script cache (or a restarted server) answers NOSCRIPT */
    freeReplyObject(dt_rcmd(r, "SCRIPT FLUSH"));
    rep = ds__redis_eval(r, &add_script, 1, 1, args, NULL, &err);
    ck_assert_msg(rep != NULL, "%s", err.message);
    ck_assert_int_eq(rep->integer, 10);
    freeReplyObject(rep);
    redisReply *exists =
        dt_rcmd(r, "SCRIPT EXISTS %s", ds__redis_script_sha(&add_script));
    ck_assert_int_eq(exists->element[0]->integer, 1);
    freeReplyObject(exists);
    /* a script error is DS_ERR_REDIS naming the script */
    const char *bad[] = {key, "not-a-number"};
    rep = ds__redis_eval(r, &add_script, 1, 1, bad, NULL, &err);
    ck_assert_ptr_null(rep);
    ck_assert_int_eq(err.code, DS_ERR_REDIS);
    ck_assert_ptr_nonnull(strstr(err.message, "dt_add"));
    freeReplyObject(dt_rcmd(r, "DEL %s", key));
    ds__free(key);
    ds_redis_close(r);
}
END_TEST

typedef struct {
    ds_redis *r;
    const char *key;
    int n;
    int failures;
} incr_arg;

static void *incr_main(void *p) {
    incr_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        ds_error err = {0};
        redisReply *rep = ds__redis_command(a->r, &err, "INCR %s", a->key);
        if (!rep)
            a->failures++;
        else
            freeReplyObject(rep);
    }
    return NULL;
}

START_TEST(test_redis_pool_shared_by_threads) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "threads");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_pool_size", 2, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    char *key = ds__redis_key(r, NULL, "counter");
    enum { T = 8, N = 400 };
    pthread_t th[T];
    incr_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (incr_arg){r, key, N, 0};
        pthread_create(&th[i], NULL, incr_main, &args[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    redisReply *rep = dt_rcmd(r, "GET %s", key);
    ck_assert_int_eq(atoi(rep->str), T * N);
    freeReplyObject(rep);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_int_le(s.connections, 2);
    ck_assert_uint_le(s.connects, 2);
    freeReplyObject(dt_rcmd(r, "DEL %s", key));
    ds__free(key);
    ds_redis_close(r);
}
END_TEST

/* ---- failures: timeouts, restarts -------------------------------------------- */

START_TEST(test_redis_command_timeout) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "timeout");
    ds_error err = {0};
    ck_assert_ds_ok(
        ds_config_set_int(cfg, "redis_command_timeout_ms", 150, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    ds_redis *admin = dt_redis("timeout");
    /* the server stops answering everyone for 800 ms */
    freeReplyObject(dt_rcmd(admin, "CLIENT PAUSE 2000 ALL"));
    ds_status st = ds_redis_ping(r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    ck_assert_ptr_nonnull(strstr(err.message, "timed out"));
    /* the timed-out connection was dropped; a fresh one works after the
     * pause */
    dt_redis_wait_up(r);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_uint_ge(s.connects, 2);
    ck_assert_uint_ge(s.errors, 1);
    ds_redis_close(r);
    ds_redis_close(admin);
}
END_TEST

START_TEST(test_redis_reconnects_after_restart) {
    ds_redis *r = dt_redis("restart");
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    dt_redis_stop();
    ds_status st = ds_redis_ping(r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert(ds_error_is_retryable(&err));
    /* fail fast while it is down: within redis_retry_ms of a failed
     * connect, calls fail at once instead of each trying (and waiting for)
     * a connect of its own, which the connect counters show */
    ds_redis_stats down = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &down, &err), err);
    int unreachable = 0;
    for (int i = 0; i < 20; i++) {
        st = ds_redis_ping(r, &err);
        ck_assert_ds_status(st, DS_ERR_REDIS, err);
        ck_assert(ds_error_is_retryable(&err));
        unreachable += strstr(err.message, "unreachable") != NULL;
    }
    ds_redis_stats after = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &after, &err), err);
    /* a connect was tried (by the first failed ping or the first of the
     * 20), then at most one per retry window, not one per call */
    ck_assert_uint_ge(after.connect_failures, 1);
    ck_assert_uint_le(after.connect_failures - down.connect_failures, 3);
    ck_assert_int_ge(unreachable, 17);
    ck_assert_uint_eq(after.connects, down.connects);
    dt_redis_start(r);
    char *key = ds__redis_key(r, NULL, "after");
    freeReplyObject(dt_rcmd(r, "SET %s 1 PX 10000", key));
    ds__free(key);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_uint_ge(s.connect_failures, 1);
    ck_assert_uint_ge(s.connects, 2);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_idle_connection_replaced_after_restart) {
    ds_config *cfg = dt_redis_config(dt_env("REDIS_URL"), "stale");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_pool_size", 1, &err), err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    int64_t opened_us = ds__now_us();
    ds_config_free(cfg);
    ck_assert_int_eq(dt_services("restart redis"), 0);
    /* A connection used within DS_REDIS_FRESH_US is lent without the check
     * (its death shows as a retryable error). On a quiet machine the
     * restart can take less than that: let the window pass, so the
     * connection is idle as this test means it to be. */
    int64_t left_us = opened_us + DS_REDIS_FRESH_US + 50000 - ds__now_us();
    if (left_us > 0)
        usleep((useconds_t)left_us);
    /* the idle connection died with the old server: replaced before use,
     * so the first call after the restart already succeeds */
    ds_status st = ds_redis_ping(r, &err);
    ck_assert_ds_ok(st, err);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_uint_eq(s.stale_replaced, 1);
    ds_redis_close(r);
}
END_TEST

/* A handle on a fake server with a short command timeout. */
static ds_redis *open_fake(const dt_fake *f, int command_timeout_ms) {
    ds_config *cfg = dt_redis_config(dt_fake_url(f), "fake");
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_set_int(cfg, "redis_command_timeout_ms",
                                      command_timeout_ms, &err),
                    err);
    ds_redis *r;
    ck_assert_ds_ok(ds_redis_open(cfg, &r, &err), err);
    ds_config_free(cfg);
    return r;
}

/* Answers the handshake, then the next command with a long bulk string
 * sent a byte at a time until the client goes away. */
static void trickle_reply(void *ud, int index, int fd) {
    (void)ud;
    (void)index;
    if (!dt_fake_expect(fd, "PING") || !dt_fake_send(fd, "+PONG\r\n") ||
        !dt_fake_expect(fd, "PING") || !dt_fake_send(fd, "$100000\r\n"))
        return;
    while (dt_fake_send(fd, "x"))
        usleep(10000);
}

START_TEST(test_redis_trickled_reply_times_out) {
    /* every poll() finds a byte ready, so only the deadline ends the call */
    dt_fake *f = dt_fake_start(trickle_reply, NULL);
    ds_redis *r = open_fake(f, 300);
    ds_error err = {0};
    ds_status st = ds_redis_ping(r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_nonnull(strstr(err.message, "read timed out"));
    ck_assert(ds_error_is_retryable(&err));
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_int_eq(s.connections, 0); /* the connection was dropped */
    ds_redis_close(r);
    dt_fake_stop(f);
}
END_TEST

/* Answers the handshake, then takes what comes at most 256 KiB per 30 ms
 * (about 8 MB/s) and never answers. */
static void slow_reader(void *ud, int index, int fd) {
    (void)ud;
    (void)index;
    if (!dt_fake_expect(fd, "PING") || !dt_fake_send(fd, "+PONG\r\n"))
        return;
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    while (recv(fd, buf, cap, 0) > 0)
        usleep(30000);
    free(buf);
}

START_TEST(test_redis_slow_reader_write_times_out) {
    /* far more than the socket buffers hold, taken at a pace that keeps
     * every send() making progress: the write must stop at the deadline,
     * not seconds later when the last byte went out */
    dt_fake *f = dt_fake_start(slow_reader, NULL);
    ds_redis *r = open_fake(f, 300);
    size_t big = 48u * 1024 * 1024;
    char *val = malloc(big);
    ck_assert_ptr_nonnull(val);
    memset(val, 'v', big);
    const char *argv[] = {"SET", "k", val};
    size_t lens[] = {3, 1, big};
    ds_error err = {0};
    redisReply *rep = ds__redis_command_argv(r, 3, argv, lens, &err);
    ck_assert_ptr_null(rep);
    ck_assert_int_eq(err.code, DS_ERR_REDIS);
    ck_assert_ptr_nonnull(strstr(err.message, "write timed out"));
    free(val);
    ds_redis_close(r);
    dt_fake_stop(f);
}
END_TEST

/* Connection 0 answers a PING with one reply too many; every connection
 * answers GET with "v". */
static void extra_reply(void *ud, int index, int fd) {
    (void)ud;
    if (!dt_fake_expect(fd, "PING") || !dt_fake_send(fd, "+PONG\r\n"))
        return;
    if (index == 0 && (!dt_fake_expect(fd, "PING") ||
                       !dt_fake_send(fd, "+PONG\r\n:42\r\n")))
        return;
    if (dt_fake_expect(fd, "GET"))
        dt_fake_send(fd, "$1\r\nv\r\n");
    char buf[64];
    while (recv(fd, buf, sizeof buf, 0) > 0)
        ;
}

START_TEST(test_redis_extra_reply_drops_connection) {
    /* the extra reply would answer the next command on that connection
     * (reused at once, so without the idle check): it must not be pooled */
    dt_fake *f = dt_fake_start(extra_reply, NULL);
    ds_redis *r = open_fake(f, 2000);
    ds_error err = {0};
    ck_assert_ds_ok(ds_redis_ping(r, &err), err);
    const char *argv[] = {"GET", "k"};
    redisReply *rep;
    ck_assert_ds_ok(ds__redis_call(r, 2, argv, NULL, &rep, &err), err);
    ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(rep->str, "v");
    freeReplyObject(rep);
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    ck_assert_ds_ok(ds_redis_stats_get(r, &s, &err), err);
    ck_assert_uint_eq(s.connects, 2);
    ds_redis_close(r);
    dt_fake_stop(f);
}
END_TEST

/* Answers the set-up PING with one reply too many. */
static void extra_handshake_reply(void *ud, int index, int fd) {
    (void)ud;
    (void)index;
    if (!dt_fake_expect(fd, "PING") || !dt_fake_send(fd, "+PONG\r\n:42\r\n"))
        return;
    char buf[64];
    while (recv(fd, buf, sizeof buf, 0) > 0)
        ;
}

START_TEST(test_redis_extra_handshake_reply_refused) {
    /* the surplus reply would answer the connection's first command */
    dt_fake *f = dt_fake_start(extra_handshake_reply, NULL);
    ds_redis *r = (ds_redis *)1;
    ds_error err = {0};
    ds_status st = open_with(dt_fake_url(f), NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(err.message, "more replies"), "%s", err.message);
    dt_fake_stop(f);
}
END_TEST

#define ECHOED_PW "Sup3rS3cretPassw0rd-0123456789abcdef"

/* A server that does not know AUTH and, like Redis with an unknown
 * command, quotes the start of its arguments back. */
static void auth_echo(void *ud, int index, int fd) {
    (void)ud;
    (void)index;
    if (dt_fake_expect(fd, "PING"))
        dt_fake_send(fd, "-ERR unknown command 'AUTH', with args beginning "
                         "with: 'Sup3rS3cretPas' \r\n"
                         "-NOAUTH Authentication required.\r\n");
}

START_TEST(test_redis_auth_echo_not_in_message) {
    /* a server echoing a cut-short password: scrubbing the whole password
     * would not find it, so the message must not carry the echo at all */
    dt_fake *f = dt_fake_start(auth_echo, NULL);
    char url[128];
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/0", ECHOED_PW,
             dt_fake_port(f));
    ds_redis *r = (ds_redis *)1;
    ds_error err = {0};
    ds_status st = open_with(url, NULL, &r, &err);
    ck_assert_ds_status(st, DS_ERR_REDIS, err);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "authentication failed"));
    ck_assert_ptr_nonnull(strstr(err.message, "unknown command"));
    ck_assert_ptr_null(strstr(err.message, "Sup3r"));
    ck_assert(!ds_error_is_retryable(&err));
    dt_fake_stop(f);
}
END_TEST

/* ---- unix sockets: a private redis-server ------------------------------------- */

START_TEST(test_redis_unix_socket) {
    /* a short base: unix socket paths are limited to 107 bytes */
    char dir[96];
    const char *base = dt_env_opt("TMPDIR");
    if (!base || strlen(base) > 60)
        base = P_tmpdir;
    snprintf(dir, sizeof dir, "%s/dt_redis_unix_XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    chmod(dir, 0777);
    char sock[128];
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               sock, "--unixsocketperm", "700", "--save", "", "--appendonly",
               "no", "--dir", dir, "--requirepass", "sockpw", "--daemonize",
               "no", (char *)NULL);
        _exit(127);
    }
    struct stat sb;
    long long deadline = dt_now_ms() + 10000;
    while (stat(sock, &sb) != 0 && dt_now_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            rmdir(dir);
            dt_skip("test_redis_unix_socket", "redis-server did not start");
            return;
        }
        usleep(10000);
    }
    char url[256];
    snprintf(url, sizeof url, "unix://:sockpw@%s?db=2", sock);
    ds_redis *r;
    ds_error err = {0};
    ds_status st;
    /* the socket file appears a moment before the server listens */
    while ((st = open_with(url, NULL, &r, &err)) != DS_OK &&
           strstr(err.message, "refused") && dt_now_ms() < deadline)
        usleep(10000);
    if (st == DS_OK) {
        redisReply *info = dt_rcmd(r, "CLIENT INFO");
        bool db2 = strstr(info->str, " db=2 ") != NULL;
        freeReplyObject(info);
        ds_redis_close(r);
        ck_assert(db2);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(sock);
    rmdir(dir);
    ck_assert_ds_ok(st, err);
}
END_TEST

/* ---- per-user keys and erase ---------------------------------------------------- */

START_TEST(test_redis_erase_user_removes_tracked_keys) {
    ds_redis *r = dt_redis("erase");
    ds_error err = {0};
    char *k1 = ds__redis_key(r, NULL, "sess:a");
    char *k2 = ds__redis_key(r, NULL, "cache:profile:42");
    char *k3 = ds__redis_key(r, NULL, "sess:other");
    char *room = ds__redis_key(r, NULL, "room:1");
    ck_assert_ds_ok(ds__redis_set_for_user(r, 42, k1, "s1", 2, 60000, &err), err);
    freeReplyObject(dt_rcmd(r, "SET %s x PX 60000", k2));
    ck_assert_ds_ok(ds__redis_track_user_key(r, 42, k2, 60000, &err), err);
    ck_assert_ds_ok(ds__redis_set_for_user(r, 43, k3, "s3", 2, 60000, &err), err);
    freeReplyObject(dt_rcmd(r, "ZADD %s 1 42 2 43", room));
    ck_assert_ds_ok(ds__redis_track_user_member(r, 42, room, 60000, &err), err);
    /* a key that expired before the erase still counts nothing */
    char *gone = ds__redis_key(r, NULL, "gone");
    ck_assert_ds_ok(ds__redis_track_user_key(r, 42, gone, 1000, &err), err);

    int64_t removed = -1;
    ck_assert_ds_ok(ds_redis_erase_user(r, 42, &removed, &err), err);
    ck_assert_int_eq(removed, 3); /* k1, k2, membership in room */
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", k1), 0);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", k2), 0);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", k3), 1);
    ck_assert_int_eq(dt_rint(r, "ZCARD %s", room), 1);
    redisReply *score = dt_rcmd(r, "ZSCORE %s 43", room);
    ck_assert_int_eq(score->type, REDIS_REPLY_STRING);
    freeReplyObject(score);
    char *set = ds__redis_user_set_key(r, 42);
    ck_assert_int_eq(dt_rint(r, "EXISTS %s", set), 0);
    /* erasing again removes nothing */
    ck_assert_ds_ok(ds_redis_erase_user(r, 42, &removed, &err), err);
    ck_assert_int_eq(removed, 0);
    ck_assert_ds_ok(ds_redis_erase_user(r, 42, NULL, &err), err);
    ds__free(set);
    dt_redis_flush_prefix(r);
    ds__free(k1);
    ds__free(k2);
    ds__free(k3);
    ds__free(room);
    ds__free(gone);
    ds_redis_close(r);
}
END_TEST

START_TEST(test_redis_user_set_outlives_its_keys) {
    ds_redis *r = dt_redis("ttl");
    ds_error err = {0};
    char *set = ds__redis_user_set_key(r, 7);
    char *a = ds__redis_key(r, NULL, "a");
    char *b = ds__redis_key(r, NULL, "b");
    ck_assert_ds_ok(ds__redis_set_for_user(r, 7, a, "1", 1, 50000, &err), err);
    long long ttl = dt_rint(r, "PTTL %s", set);
    ck_assert_int_gt(ttl, 40000);
    ck_assert_int_le(ttl, 50000);
    /* a shorter TTL does not shorten the set */
    ck_assert_ds_ok(ds__redis_set_for_user(r, 7, b, "2", 1, 1000, &err), err);
    ck_assert_int_gt(dt_rint(r, "PTTL %s", set), 40000);
    /* a longer one extends it */
    ck_assert_ds_ok(ds__redis_track_user_key(r, 7, b, 900000, &err), err);
    ck_assert_int_gt(dt_rint(r, "PTTL %s", set), 800000);
    /* a key without expiry makes the set persistent, and it stays so */
    ck_assert_ds_ok(ds__redis_set_for_user(r, 7, b, "2", 1, 0, &err), err);
    ck_assert_int_eq(dt_rint(r, "PTTL %s", set), -1);
    ck_assert_int_eq(dt_rint(r, "PTTL %s", b), -1);
    ck_assert_ds_ok(ds__redis_track_user_key(r, 7, a, 5000, &err), err);
    ck_assert_int_eq(dt_rint(r, "PTTL %s", set), -1);
    ck_assert_int_eq(dt_rint(r, "SCARD %s", set), 2);
    dt_redis_flush_prefix(r);
    ds__free(set);
    ds__free(a);
    ds__free(b);
    ds_redis_close(r);
}
END_TEST

/* ---- REDIS_URL parsing ------------------------------------------------------------ */

static void parse_ok(const char *url, ds__redis_url *u) {
    ds_error err = {0};
    ds_status st = ds__redis_url_parse(url, "REDIS_URL", u, &err);
    ck_assert_msg(st == DS_OK, "%s: %s", url, err.message);
}

static void parse_bad(const char *url, const char *needle) {
    ds_error err = {0};
    ds__redis_url u;
    ds_status st = ds__redis_url_parse(url, "REDIS_URL", &u, &err);
    ck_assert_msg(st == DS_ERR_CONFIG, "%s: accepted", url);
    ck_assert_msg(strstr(err.message, "REDIS_URL") != NULL, "%s", err.message);
    ck_assert_msg(strstr(err.message, needle) != NULL, "%s: '%s' not in '%s'",
                  url, needle, err.message);
    ck_assert_msg(strstr(err.message, "s3cret") == NULL, "password leaked: %s",
                  err.message);
}

START_TEST(test_redis_url_parsing) {
    ds__redis_url u;
    parse_ok("redis://localhost", &u);
    ck_assert_str_eq(u.host, "localhost");
    ck_assert_int_eq(u.port, 6379);
    ck_assert_int_eq(u.db, 0);
    ck_assert(!u.tls && !u.unix_socket);
    ck_assert_ptr_null(u.user);
    ck_assert_ptr_null(u.password);
    ds__redis_url_clear(&u);

    parse_ok("rediss://:s3cret@cache.example.com:6380/2", &u);
    ck_assert(u.tls);
    ck_assert_str_eq(u.host, "cache.example.com");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 2);
    ck_assert_ptr_null(u.user);
    ck_assert_str_eq(u.password, "s3cret");
    ds__redis_url_clear(&u);

    /* ACL user; '@', ':' and '/' in the password, encoded or not */
    parse_ok("redis://default:p%40ss%3Aw%2Frd@10.0.0.1:7000/0", &u);
    ck_assert_str_eq(u.user, "default");
    ck_assert_str_eq(u.password, "p@ss:w/rd");
    ds__redis_url_clear(&u);
    parse_ok("redis://:p@ss:w0rd@cache:6380/0", &u);
    ck_assert_str_eq(u.password, "p@ss:w0rd");
    ck_assert_str_eq(u.host, "cache");
    ds__redis_url_clear(&u);

    parse_ok("redis://[::1]:6390", &u);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 6390);
    ds__redis_url_clear(&u);
    parse_ok("redis://:@h/", &u);
    ck_assert_ptr_null(u.password);
    ds__redis_url_clear(&u);

    parse_ok("unix://:s3cret@/run/redis/redis.sock?db=4", &u);
    ck_assert(u.unix_socket);
    ck_assert_str_eq(u.path, "/run/redis/redis.sock");
    ck_assert_int_eq(u.db, 4);
    ds__redis_url_clear(&u);

    parse_bad("http://h", "redis://");
    parse_bad("redis://", "host is missing");
    parse_bad("redis://:s3cret@", "host is missing");
    parse_bad("redis://h:0", "port");
    parse_bad("redis://h:65536", "port");
    parse_bad("redis://h:12ab", "port");
    parse_bad("redis://h/x", "database index");
    parse_bad("redis://h/99999999999", "database index");
    parse_bad("redis://user@h", "needs a password");
    parse_bad("redis://user:@h", "password after the user name is empty");
    parse_bad("redis://:s3cret%zz@h", "percent-escape");
    parse_bad("redis://:s3cret%00@h", "percent-escape");
    parse_bad("redis://h?ssl=true", "unsupported query parameter 'ssl'");
    parse_bad("redis://h/0?db=1", "only for unix");
    parse_bad("redis://h o/0", "white space");
    parse_bad("redis://[::1/0", "IPv6");
    parse_bad("redis://h!x:1/0", "bad character");
    parse_bad("unix://relative.sock", "absolute");

    /* ds_config_set() validates with the same parser and keeps quiet */
    ds_config *cfg;
    ds_error err = {0};
    ck_assert_ds_ok(ds_config_new(&cfg, &err), err);
    ds_status st = ds_config_set(cfg, "redis_url", "redis://:s3cret@h:99999", &err);
    ck_assert_ds_status(st, DS_ERR_CONFIG, err);
    ck_assert_ptr_null(strstr(err.message, "s3cret"));
    ck_assert_ds_ok(ds_config_set(cfg, "REDIS_URL", "rediss://u:s3cret@h:1/1",
                                  &err),
                    err);
    char buf[128];
    ck_assert_ds_ok(ds_config_get_str(cfg, "redis_url", buf, sizeof buf, &err),
                    err);
    ck_assert_str_eq(buf, "rediss://u:***@h:1/1");
    int64_t v;
    ck_assert_ds_ok(ds_config_get_int(cfg, "redis_retry_ms", &v, &err), err);
    ck_assert_int_eq(v, 1000);
    ds_config_free(cfg);
}
END_TEST

/* ---- bad arguments ------------------------------------------------------------------ */

START_TEST(test_redis_errors) {
    ds_error err = {0};
    ds_redis *r = (ds_redis *)1;
    ck_assert_int_eq(ds_redis_open(NULL, &r, &err), DS_ERR_INVALID);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(ds_redis_open(NULL, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_redis_open_url(NULL, &r, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_redis_open_url("bogus", &r, &err), DS_ERR_CONFIG);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(ds_redis_open_url("redis://h", NULL, &err), DS_ERR_INVALID);
    ds_redis_close(NULL);
    ck_assert_int_eq(ds_redis_ping(NULL, &err), DS_ERR_INVALID);
    ck_assert(!ds_redis_is_tls(NULL));
    ds_redis_stats s = DS_REDIS_STATS_INIT;
    memset(&s, 0xff, sizeof s);
    s.size = sizeof s;
    ck_assert_int_eq(ds_redis_stats_get(NULL, &s, &err), DS_ERR_INVALID);
    ck_assert_uint_eq(s.commands, 0); /* out-params are reset first */
    ck_assert_int_eq(s.connections, 0);
    int64_t removed = 5;
    ck_assert_int_eq(ds_redis_erase_user(NULL, 1, &removed, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(removed, 0);
    ds_redis *real = dt_redis("errors");
    ck_assert_int_eq(ds_redis_stats_get(real, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_redis_erase_user(real, 0, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds_redis_erase_user(real, -3, NULL, &err), DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_track_user_key(real, 1, NULL, 0, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_track_user_key(real, 1, "", 0, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_track_user_key(real, 1, "k", -1, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_set_for_user(real, 0, "k", "v", 1, 0, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_set_for_user(real, 1, "k", NULL, 1, 0, &err),
                     DS_ERR_INVALID);
    ck_assert_ptr_null(ds__redis_command(NULL, &err, "PING"));
    ck_assert_int_eq(err.code, DS_ERR_INVALID);
    ck_assert_ptr_null(ds__redis_command_argv(real, 0, NULL, NULL, &err));
    ck_assert_int_eq(err.code, DS_ERR_INVALID);
    ck_assert_ptr_null(ds__redis_eval(real, NULL, 0, 0, NULL, NULL, &err));
    ck_assert_int_eq(err.code, DS_ERR_INVALID);
    redisReply *rep[1];
    ck_assert_int_eq(ds__redis_pipeline(real, NULL, 1, rep, &err),
                     DS_ERR_INVALID);
    ck_assert_int_eq(ds__redis_conn_open(real, -1, NULL, &err), DS_ERR_INVALID);
    /* the status is the real one without an error struct too */
    for (int n = 1; n < 6; n++) {
        ds__test_fail_alloc_after(n);
        ds_status st = ds_redis_erase_user(real, 1, NULL, NULL);
        ds__test_fail_alloc_after(0);
        ck_assert_msg(st == DS_OK || st == DS_ERR_NOMEM, "n=%d: %s", n,
                      ds_status_str(st));
    }
    /* out of memory while opening: an error, never a crash */
    for (int n = 1; n < 12; n++) {
        ds__test_fail_alloc_after(n);
        ds_redis *x = NULL;
        ds_status st = ds_redis_open_url(dt_env("REDIS_URL"), &x, &err);
        ds__test_fail_alloc_after(0);
        if (st == DS_OK)
            ds_redis_close(x);
        else
            ck_assert_int_eq(st, DS_ERR_NOMEM);
    }
    ds_redis_close(real);
}
END_TEST

Suite *ds_test_redis_suite(void) {
    Suite *s = suite_create("redis");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"open", test_redis_open_plain},
        {"open_url", test_redis_open_url_shorthand},
        {"needs_url", test_redis_open_needs_url},
        {"wrong_password", test_redis_open_wrong_password},
        {"acl_user", test_redis_acl_user_auth},
        {"db_index", test_redis_db_index_selected},
        {"url_forms", test_redis_url_default_user_and_password_only_forms},
        {"unreachable", test_redis_unreachable_is_retryable},
        {"tls", test_redis_tls_verified_with_right_ca},
        {"tls_wrong_ca", test_redis_tls_wrong_ca_refused},
        {"tls_default_verify", test_redis_tls_verification_on_by_default},
        {"tls_host_name", test_redis_tls_host_name_checked},
        {"tls_plain_port", test_redis_tls_against_plain_port},
        {"tls_bad_ca_file", test_redis_tls_bad_ca_file},
        {"commands", test_redis_commands_and_error_replies},
        {"pipeline", test_redis_pipeline_one_round_trip},
        {"script", test_redis_script_reloaded_after_flush},
        {"threads", test_redis_pool_shared_by_threads},
        {"timeout", test_redis_command_timeout},
        {"restart", test_redis_reconnects_after_restart},
        {"stale", test_redis_idle_connection_replaced_after_restart},
        {"auth_echo", test_redis_auth_echo_not_in_message},
        {"extra_reply", test_redis_extra_reply_drops_connection},
        {"extra_handshake_reply", test_redis_extra_handshake_reply_refused},
        {"trickled_reply", test_redis_trickled_reply_times_out},
        {"slow_reader", test_redis_slow_reader_write_times_out},
        {"unix", test_redis_unix_socket},
        {"erase_user", test_redis_erase_user_removes_tracked_keys},
        {"user_set_ttl", test_redis_user_set_outlives_its_keys},
        {"url", test_redis_url_parsing},
        {"errors", test_redis_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        /* a test that stops Redis may fail half-way: start it again */
        if (strcmp(cases[i].name, "restart") == 0 ||
            strcmp(cases[i].name, "stale") == 0)
            tcase_add_unchecked_fixture(tc, NULL, dt_redis_ensure_started);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}
