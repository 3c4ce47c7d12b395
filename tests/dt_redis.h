/* Helpers for the suites that talk to the local Redis (scripts/services). */
#ifndef DS_DT_REDIS_H
#define DS_DT_REDIS_H

#include <hiredis/hiredis.h>

#include "test_util.h"

/* A config for `url` with a key prefix unique to this process and call
 * ("dt:<tag>:<pid>:<n>:"), a short fail-fast window and test-friendly
 * timeouts. */
ds_config *dt_redis_config(const char *url, const char *tag);
/* ds_redis_open() on REDIS_URL with dt_redis_config(); fails the test on
 * error. */
ds_redis *dt_redis(const char *tag);
/* The same on `url`. */
ds_redis *dt_redis_url(const char *url, const char *tag);

/* Runs one command through the handle's internal API (fails the test on a
 * transport error). Free with freeReplyObject. */
redisReply *dt_rcmd(ds_redis *r, const char *fmt, ...);
/* Integer reply of a command. */
long long dt_rint(ds_redis *r, const char *fmt, ...);

/* Waits (bounded) until the handle reaches the server again after a
 * restart; fails the test if it never does. */
void dt_redis_wait_up(ds_redis *r);

/* Stops the local Redis (scripts/services), failing the test if it cannot;
 * pair it with dt_redis_ensure_started as the TCase's unchecked teardown. */
void dt_redis_stop(void);
/* Starts it again and waits (bounded) until `r` reaches it. */
void dt_redis_start(ds_redis *r);

/* Unchecked TCase teardown: starts Redis again whatever the test did, so a
 * failed "stop redis" test does not break the tests after it. */
void dt_redis_ensure_started(void);

/* Calls fn(ud, key, len, rel) for every key under the handle's prefix
 * matching "<prefix><pattern>" (SCAN: each key present throughout is seen;
 * fn may delete it); `rel` is the key after the prefix. fn may be NULL.
 * Returns how many keys were seen. */
typedef void (*dt_redis_key_fn)(void *ud, const char *key, size_t len,
                                const char *rel);
long long dt_redis_each_key(ds_redis *r, const char *pattern,
                            dt_redis_key_fn fn, void *ud);
/* How many keys under the handle's prefix match "<prefix><pattern>". */
long long dt_redis_count_keys(ds_redis *r, const char *pattern);

/* Deletes every key under the handle's prefix (test clean-up). */
void dt_redis_flush_prefix(ds_redis *r);

/*
 * A scripted stand-in for a Redis server on 127.0.0.1, for failures the real
 * one cannot be made to show (a reply that trickles in, a server that
 * accepts and never answers, a reply that echoes a password). Each accepted
 * connection is served on a thread of its own by fn(ud, index, fd), index
 * counting connections from 0. dt_fake_stop() shuts every connection down
 * (so a blocked fn returns), joins the threads and closes the sockets.
 */
typedef void (*dt_fake_fn)(void *ud, int index, int fd);
typedef struct dt_fake dt_fake;
dt_fake *dt_fake_start(dt_fake_fn fn, void *ud);
/* "redis://127.0.0.1:<port>/0" (no password: the handshake is one PING). */
const char *dt_fake_url(const dt_fake *f);
int dt_fake_port(const dt_fake *f);
void dt_fake_stop(dt_fake *f);
/* Reads from `fd` until the bytes read by this call contain `needle`; false
 * when the peer closed first or 20 s passed. */
bool dt_fake_expect(int fd, const char *needle);
/* Sends `s` whole; false when the peer is gone. */
bool dt_fake_send(int fd, const char *s);

#endif
