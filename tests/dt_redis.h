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

/* Unchecked TCase teardown: starts Redis again whatever the test did, so a
 * failed "stop redis" test does not break the tests after it. */
void dt_redis_ensure_started(void);

/* Deletes every key under the handle's prefix (test clean-up). */
void dt_redis_flush_prefix(ds_redis *r);

#endif
