/*
 * A job queue on Redis Streams with one consumer group ("ds").
 *
 * A stream entry carries: id (the job's, stable across retries), a (attempts
 * made before this entry), e (enqueued at, ms; else the entry id's time),
 * p (payload JSON), err (the previous failure), u (the user id given at
 * enqueue, decimal; absent for none). The attempt a delivery
 * stands for is a + the entry's delivery count, so a job reclaimed from a
 * dead worker counts as its next attempt. Acknowledged entries are deleted
 * (XACK + XDEL). Delays and retries wait in a sorted set of JSON envelopes
 * scored by due time and are moved to the stream by the reserve script.
 * Every multi-step change is one Lua script, so a crash between steps
 * cannot lose or duplicate a job.
 */
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/growable.h"
#include "core/json_internal.h"
#include "datastore/queue.h"
#include "queue/queue_internal.h"
#include "redis/redis_internal.h"

#define GROUP "ds"
#define PAYLOAD_MAX (16u * 1024 * 1024)
#define BATCH_CHUNK 500
#define BLOCK_SLICE_MS 1000

struct ds_queue {
    ds_redis *redis;
    char *name;
    char *consumer;
    char *stream, *delayed, *dead, *cursor;
    int visibility_ms;
    int max_attempts;
    int backoff_base_ms;
    int backoff_max_ms;
    char visibility[16], max[16];
    char dead_max_len[24], dead_max_age[24]; /* script arguments */
    int64_t dead_max_age_ms;
    /* ds_queue_stats */
    atomic_uint_fast64_t enqueued, reserved, reclaimed, acked, failed, retried,
        dead_lettered, lost, errors;
};

static void count_add(atomic_uint_fast64_t *c, uint64_t n) {
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Counts a call's outcome: a lost job or an error (bad arguments are the
 * caller's and not counted). */
static ds_status counted(ds_queue *q, ds_status st) {
    if (!q || st == DS_OK || st == DS_ERR_INVALID)
        return st;
    count_add(st == DS_ERR_CONFLICT || st == DS_ERR_NOT_FOUND ? &q->lost
                                                             : &q->errors,
              1);
    return st;
}

/* ---- Lua ------------------------------------------------------------------ */

#define NOW_LUA                                                                \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* fields(): an entry's field list as a table. A missing id or payload (an
 * entry written by something else) becomes "", never nil: a nil would cut
 * the reply array short and make XADD fail, so such an entry could neither
 * be delivered nor dead-lettered. count(): an attempt count as decimal
 * digits held to 0..INT_MAX (Lua's tostring writes 1e+14 from there). */
#define FIELDS_LUA                                                             \
    "local function fields(kv)\n"                                              \
    "  local f = {}\n"                                                         \
    "  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end\n"                        \
    "  f.id, f.p = f.id or '', f.p or ''\n"                                    \
    "  return f\n"                                                             \
    "end\n"                                                                    \
    "local function enqueued(f, entry)\n"                                      \
    "  return f.e or string.match(entry, '^%d+')\n"                            \
    "end\n"                                                                    \
    "local function count(n)\n"                                                \
    "  n = tonumber(n) or 0\n"                                                 \
    "  if n ~= n or n < 0 then n = 0 end\n"                                    \
    "  if n > 2147483647 then n = 2147483647 end\n"                            \
    "  return string.format('%d', n)\n"                                        \
    "end\n"

/* xadd_job(): XADD of a job's fields to `key`, with "u" only when the job
 * has a user. dead_add(): a dead letter, then the dead-letter stream held
 * to `maxlen` entries and `age` ms (entry ids are the times of death), and
 * expiring `age` ms after its newest letter. */
#define XADD_LUA                                                               \
    "local function xadd_job(key, id, a, e, p, err, u, died)\n"                \
    "  local args = {key, '*', 'id', id, 'a', a, 'e', e, 'p', p, 'err', err}\n"\
    "  if u and u ~= '' then\n"                                                \
    "    args[#args + 1] = 'u'\n"                                              \
    "    args[#args + 1] = u\n"                                                \
    "  end\n"                                                                  \
    "  if died then\n"                                                         \
    "    args[#args + 1] = 'f'\n"                                              \
    "    args[#args + 1] = died\n"                                             \
    "  end\n"                                                                  \
    "  return redis.call('XADD', unpack(args))\n"                              \
    "end\n"                                                                    \
    "local function dead_add(dead, maxlen, age, now, id, a, e, p, err, u)\n"   \
    "  xadd_job(dead, id, a, e, p, err, u, string.format('%d', now))\n"        \
    "  redis.call('XTRIM', dead, 'MAXLEN', maxlen)\n"                          \
    "  redis.call('XTRIM', dead, 'MINID',\n"                                   \
    "             string.format('%d', now - tonumber(age)))\n"                 \
    "  redis.call('PEXPIRE', dead, age)\n"                                     \
    "end\n"

/* The holder check shared by ack, fail and touch: 1 when `consumer` holds
 * `entry`, 0 when nobody does (or the group is gone), -1 when another
 * worker does. */
#define HOLDER_LUA                                                             \
    "local function holder(s, g, entry, consumer)\n"                           \
    "  local p = redis.pcall('XPENDING', s, g, entry, entry, 1)\n"             \
    "  if type(p) ~= 'table' or p.err or #p == 0 then return 0 end\n"          \
    "  if p[1][2] ~= consumer then return -1 end\n"                            \
    "  return 1\n"                                                             \
    "end\n"

/* KEYS: stream, delayed, dead, cursor; ARGV: group, consumer, visibility
 * ms, max attempts, dead-letter max length, dead-letter max age ms. Returns
 * {entry, id, attempt, enqueued, payload, err, next_due_in_ms,
 * dead_lettered, reclaimed}; entry "" when nothing is ready; dead_lettered
 * counts the jobs out of attempts this call moved to the dead letters,
 * reclaimed is "1" for a job taken over from a silent worker. */
static ds__redis_script reserve_script = DS__REDIS_SCRIPT(
    "queue_reserve", NOW_LUA FIELDS_LUA XADD_LUA
    "local s, d, dead, cur = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local g, c = ARGV[1], ARGV[2]\n"
    "local vis, max = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "for _, m in ipairs(redis.call('ZRANGEBYSCORE', d, '-inf', now,\n"
    "                              'LIMIT', 0, 100)) do\n"
    "  local j = cjson.decode(m)\n"
    "  xadd_job(s, j.id, count(j.a), string.format('%d', j.e), j.p, j.err,\n"
    "           j.u)\n"
    "  redis.call('ZREM', d, m)\n"
    "end\n"
    /* jobs of workers gone quiet; the cursor walks the pending list
     * round-robin across calls */
    "local exhausted = 0\n"
    "for _ = 1, 10 do\n"
    "  local from = redis.call('GET', cur) or '0-0'\n"
    "  local r = redis.call('XAUTOCLAIM', s, g, c, vis, from, 'COUNT', 1)\n"
    "  redis.call('SET', cur, r[1], 'PX', 86400000)\n"
    "  local e = r[2][1]\n"
    "  if not e then\n"
    "    if from == '0-0' then break end\n"
    "  else\n"
    "    local entry, f = e[1], fields(e[2])\n"
    "    local p = redis.call('XPENDING', s, g, entry, entry, 1)\n"
    "    local n = p[1] and p[1][4] or 1\n"
    "    local attempt = (tonumber(f.a) or 0) + n\n"
    "    local why = 'the worker stopped responding (visibility timeout)'\n"
    "    if attempt <= max then\n"
    "      return {entry, f.id, count(attempt), enqueued(f, entry), f.p,\n"
    "              why, '-1', count(exhausted), '1'}\n"
    "    end\n"
    "    dead_add(dead, ARGV[5], ARGV[6], now, f.id, count(attempt - 1),\n"
    "             enqueued(f, entry), f.p, 'attempts exhausted: ' .. why, f.u)\n"
    "    exhausted = exhausted + 1\n"
    "    redis.call('XACK', s, g, entry)\n"
    "    redis.call('XDEL', s, entry)\n"
    "  end\n"
    "end\n"
    "local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', 1,\n"
    "                     'STREAMS', s, '>')\n"
    "if r then\n"
    "  local e = r[1][2][1]\n"
    "  local f = fields(e[2])\n"
    "  return {e[1], f.id, count((tonumber(f.a) or 0) + 1),\n"
    "          enqueued(f, e[1]), f.p, f.err or '', '-1', count(exhausted), '0'}\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', d, 0, 0, 'WITHSCORES')\n"
    "local due = '-1'\n"
    "if nxt[2] then due = string.format('%d', math.max(0, tonumber(nxt[2]) - now)) end\n"
    "return {'', '', '', '', '', '', due, count(exhausted), '0'}\n");

/* KEYS: stream; ARGV: group, entry, consumer. */
static ds__redis_script ack_script = DS__REDIS_SCRIPT(
    "queue_ack", HOLDER_LUA
    "local h = holder(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"
    "if h ~= 1 then return h end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "return 1\n");

/* KEYS: stream, delayed, dead; ARGV: group, entry, consumer, attempt, max
 * attempts, backoff ms, reason, dead-letter max length, dead-letter max age
 * ms. 1 retried, 2 dead, 0 / -1 as holder(). */
static ds__redis_script fail_script = DS__REDIS_SCRIPT(
    "queue_fail", NOW_LUA FIELDS_LUA HOLDER_LUA XADD_LUA
    "local h = holder(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"
    "if h ~= 1 then return h end\n"
    "local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "if #e == 0 then return 0 end\n"
    "local f = fields(e[1][2])\n"
    "local attempt, max = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "if attempt >= max then\n"
    "  dead_add(KEYS[3], ARGV[8], ARGV[9], now, f.id, ARGV[4],\n"
    "           enqueued(f, ARGV[2]), f.p, ARGV[7], f.u)\n"
    "  return 2\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), cjson.encode({\n"
    "  id = f.id, a = attempt, e = tonumber(enqueued(f, ARGV[2])), p = f.p,\n"
    "  err = ARGV[7], u = f.u}))\n"
    "return 1\n");

/* KEYS: stream; ARGV: group, entry, consumer. */
static ds__redis_script touch_script = DS__REDIS_SCRIPT(
    "queue_touch", HOLDER_LUA
    "local h = holder(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"
    "if h ~= 1 then return h end\n"
    "redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')\n"
    "return 1\n");

/* KEYS: delayed; ARGV: delay ms, id, payload, user id ("" none). */
static ds__redis_script delay_script = DS__REDIS_SCRIPT(
    "queue_enqueue_delayed", NOW_LUA
    "local u = ARGV[4]\n"
    "if u == '' then u = nil end\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), cjson.encode({\n"
    "  id = ARGV[2], a = 0, e = now, p = ARGV[3], err = '', u = u}))\n"
    "return 1\n");

/* KEYS: dead, stream; ARGV: entry ("" for up to 500 of them). */
static ds__redis_script replay_script = DS__REDIS_SCRIPT(
    "queue_dead_replay", FIELDS_LUA XADD_LUA
    "local es\n"
    "if ARGV[1] == '' then\n"
    "  es = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 500)\n"
    "else\n"
    "  es = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "end\n"
    "for _, e in ipairs(es) do\n"
    "  local f = fields(e[2])\n"
    "  xadd_job(KEYS[2], f.id, '0', enqueued(f, e[1]), f.p, f.err or '', f.u)\n"
    "  redis.call('XDEL', KEYS[1], e[1])\n"
    "end\n"
    "return #es\n");

/* KEYS: stream; ARGV: group, consumer. Drops the consumer if it holds
 * nothing. */
static ds__redis_script leave_script = DS__REDIS_SCRIPT(
    "queue_leave",
    "local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])\n"
    "if type(p) == 'table' and not p.err and #p == 0 then\n"
    "  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])\n"
    "end\n"
    "return 1\n");

/* KEYS: dead. Deletes every dead letter; returns how many there were. */
static ds__redis_script purge_script = DS__REDIS_SCRIPT(
    "queue_dead_purge",
    "local n = redis.call('XLEN', KEYS[1])\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n");

/* ---- helpers ------------------------------------------------------------------- */

_Static_assert(DS_QUEUE_JOB_ID_LEN == DS__REDIS_TOKEN_LEN,
               "a job id is a token");

/* The payload's JSON text into *out (ds__malloc'd) and *len. */
static ds_status encode_payload(const json_t *payload, char **out, size_t *len,
                                ds_error *err) {
    *out = NULL;
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t n = ds__json_dumpb(payload, NULL, 0, flags);
    if (n == 0)
        return ds__error_set(err, DS_ERR_INVALID,
                             "queue: the payload cannot be encoded as JSON");
    if (n > PAYLOAD_MAX)
        return ds__error_set(err, DS_ERR_INVALID, "queue: payload over 16 MiB");
    char *buf = ds__malloc(n + 1);
    if (!buf)
        return ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    if (ds__json_dumpb(payload, buf, n, flags) != n) {
        ds__free(buf);
        return ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DS_OK;
}

static bool is_nogroup(const ds_error *e) {
    return e->code == DS_ERR_REDIS && strstr(e->message, "NOGROUP");
}

static ds_status create_group(ds_queue *q, ds_error *err) {
    const char *argv[6] = {"XGROUP", "CREATE", q->stream, GROUP, "0",
                           "MKSTREAM"};
    ds__redis_cmd cmd = {6, argv, NULL};
    redisReply *r;
    ds_status st = ds__redis_pipeline(q->redis, &cmd, 1, &r, err);
    if (st != DS_OK)
        return st;
    if (r->type == REDIS_REPLY_ERROR && !ds__redis_reply_is_error(r, "BUSYGROUP"))
        st = ds__redis_reply_error(r, "queue: XGROUP CREATE", err);
    freeReplyObject(r);
    return st;
}

/* ---- open / close ------------------------------------------------------------- */

DS_EXPORT void ds_queue_options_init(ds_queue_options *opts) {
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

static void queue_free(ds_queue *q) {
    ds__free(q->name);
    ds__free(q->consumer);
    ds__free(q->stream);
    ds__free(q->delayed);
    ds__free(q->dead);
    ds__free(q->cursor);
    ds__free(q);
}

DS_EXPORT ds_status ds_queue_open(ds_redis *redis, const ds_queue_options *opts,
                                  ds_queue **out, ds_error *err) {
    ds_queue_options o = DS_QUEUE_OPTIONS_INIT;
    DS__REDIS_CHECK_OPEN(err, redis, opts, out, &o, ds_queue_options);
    /* zero is the default of every member */
    DS_CHECK_ARG(err, o.visibility_timeout_ms >= 0,
                 "visibility_timeout_ms is negative");
    DS_CHECK_ARG(err, o.backoff_base_ms >= 0 || o.backoff_base_ms == DS_NONE,
                 "backoff_base_ms is negative (DS_NONE: retry at once)");
    DS_CHECK_ARG(err, o.backoff_max_ms >= 0, "backoff_max_ms is negative");
    if (o.visibility_timeout_ms == 0)
        o.visibility_timeout_ms = 30000;
    if (o.max_attempts == 0)
        o.max_attempts = 5;
    o.backoff_base_ms = o.backoff_base_ms == 0        ? 1000
                        : o.backoff_base_ms == DS_NONE ? 0
                                                       : o.backoff_base_ms;
    if (o.backoff_max_ms == 0)
        o.backoff_max_ms = o.backoff_base_ms > 300000 ? o.backoff_base_ms : 300000;
    DS_CHECK_ARG(err, !opts->consumer || ds__redis_name_ok(opts->consumer),
                 "consumer must be 1-64 of [A-Za-z0-9_.-]");
    DS_CHECK_ARG(err, opts->visibility_timeout_ms > 0,
                 "visibility_timeout_ms must be positive");
    DS_CHECK_ARG(err, opts->max_attempts >= 1 && opts->max_attempts <= 1000,
                 "max_attempts must be 1-1000");
    DS_CHECK_ARG(err, opts->backoff_base_ms >= 0,
                 "backoff_base_ms is negative");
    DS_CHECK_ARG(err, opts->backoff_max_ms >= opts->backoff_base_ms,
                 "backoff_max_ms is below backoff_base_ms");
    DS_CHECK_ARG(err, opts->dead_max_len >= 0 && opts->dead_max_len <= 100000000,
                 "dead_max_len must be 0 (the default) to 1e8");
    DS_CHECK_ARG(err,
                 opts->dead_max_age_ms == 0 ||
                     (opts->dead_max_age_ms >= 1000 &&
                      opts->dead_max_age_ms <= INT64_C(31536000000)),
                 "dead_max_age_ms must be 0 (the default) or 1 s to 1 year");
    ds_queue *q = ds__calloc(1, sizeof *q);
    if (!q)
        return ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    q->redis = redis;
    q->visibility_ms = opts->visibility_timeout_ms;
    q->max_attempts = opts->max_attempts;
    q->backoff_base_ms = opts->backoff_base_ms;
    q->backoff_max_ms = opts->backoff_max_ms;
    snprintf(q->visibility, sizeof q->visibility, "%d", q->visibility_ms);
    snprintf(q->max, sizeof q->max, "%d", q->max_attempts);
    snprintf(q->dead_max_len, sizeof q->dead_max_len, "%lld",
             (long long)(opts->dead_max_len ? opts->dead_max_len
                                            : DS_QUEUE_DEAD_MAX_LEN_DEFAULT));
    q->dead_max_age_ms = opts->dead_max_age_ms
                             ? opts->dead_max_age_ms
                             : DS_QUEUE_DEAD_MAX_AGE_MS_DEFAULT;
    snprintf(q->dead_max_age, sizeof q->dead_max_age, "%lld",
             (long long)q->dead_max_age_ms);
    q->name = ds__strdup(opts->name);
    if (opts->consumer) {
        q->consumer = ds__strdup(opts->consumer);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        for (char *c = host; *c; c++)
            if (!ds__redis_name_ok((char[2]){*c, '\0'}))
                *c = '_';
        char buf[128];
        snprintf(buf, sizeof buf, "%.40s-%d-%08x", host, (int)getpid(),
                 ds__random_u32());
        q->consumer = ds__strdup(buf);
    }
    q->stream = ds__redis_key(redis, NULL, "q:%s:s", opts->name);
    q->delayed = ds__redis_key(redis, NULL, "q:%s:d", opts->name);
    q->dead = ds__redis_key(redis, NULL, "q:%s:dead", opts->name);
    q->cursor = ds__redis_key(redis, NULL, "q:%s:cur", opts->name);
    if (!q->name || !q->consumer || !q->stream || !q->delayed || !q->dead ||
        !q->cursor) {
        queue_free(q);
        return ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    }
    ds_status st = create_group(q, err);
    if (st != DS_OK) {
        queue_free(q);
        return st;
    }
    *out = q;
    return DS_OK;
}

DS_EXPORT void ds_queue_close(ds_queue *queue) {
    if (!queue)
        return;
    const char *args[3] = {queue->stream, GROUP, queue->consumer};
    ds_error err = {0};
    /* best effort: a consumer left behind holds nothing and costs little */
    (void)ds__redis_run_script(queue->redis, &leave_script, 1, 2, args, NULL,
                               NULL, &err);
    queue_free(queue);
}

const char *ds__queue_name(const ds_queue *queue) { return queue->name; }

DS_EXPORT const char *ds_queue_consumer(const ds_queue *queue) {
    return queue ? queue->consumer : NULL;
}

/* ---- producing -------------------------------------------------------------------- */

/* Registers the queue in the user's key set for ds_redis_erase_user(), for
 * as long as a job of the user can still be waiting or dead. */
static ds_status register_user(ds_queue *q, int64_t user_id, int64_t delay_ms,
                               ds_error *err) {
    int64_t ttl = delay_ms + q->dead_max_age_ms + INT64_C(86400000);
    return ds__redis_track_user_queue(q->redis, user_id, q->stream, ttl, err);
}

static ds_status enqueue(ds_queue *queue, int64_t user_id,
                         const json_t *payload, int64_t delay_ms, char *job_id,
                         ds_error *err) {
    if (job_id)
        job_id[0] = '\0';
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, payload, "payload is NULL");
    DS_CHECK_ARG(err, delay_ms >= 0 && delay_ms <= INT64_C(31536000000),
                 "delay_ms must be 0 to 1 year");
    size_t plen;
    char *p;
    ds_status st = encode_payload(payload, &p, &plen, err);
    if (st != DS_OK)
        return st;
    char uid[24] = "";
    if (user_id > 0) {
        snprintf(uid, sizeof uid, "%lld", (long long)user_id);
        st = register_user(queue, user_id, delay_ms, err);
        if (st != DS_OK) {
            ds__free(p);
            return st;
        }
    }
    char id[DS_QUEUE_JOB_ID_LEN + 1];
    ds__redis_token(id);
    if (delay_ms == 0) {
        const char *argv[11] = {"XADD", queue->stream, "*", "id", id, "a",
                                "0",    "p",           p,   "u",  uid};
        size_t lens[11] = {4, strlen(queue->stream), 1, 2, DS_QUEUE_JOB_ID_LEN,
                           1, 1, 1, plen, 1, strlen(uid)};
        st = ds__redis_call(queue->redis, user_id > 0 ? 11 : 9, argv, lens,
                            NULL, err);
    } else {
        char delay[24];
        snprintf(delay, sizeof delay, "%lld", (long long)delay_ms);
        const char *args[5] = {queue->delayed, delay, id, p, uid};
        size_t lens[5] = {strlen(queue->delayed), strlen(delay),
                          DS_QUEUE_JOB_ID_LEN, plen, strlen(uid)};
        st = ds__redis_run_script(queue->redis, &delay_script, 1, 4, args, lens,
                                  NULL, err);
    }
    ds__free(p);
    if (st != DS_OK)
        return st;
    if (job_id)
        memcpy(job_id, id, sizeof id);
    return DS_OK;
}

DS_EXPORT ds_status ds_queue_enqueue(ds_queue *queue, const json_t *payload,
                                     int64_t delay_ms, char *job_id,
                                     ds_error *err) {
    ds_status st = enqueue(queue, 0, payload, delay_ms, job_id, err);
    if (st == DS_OK)
        count_add(&queue->enqueued, 1);
    return counted(queue, st);
}

DS_EXPORT ds_status ds_queue_enqueue_for_user(ds_queue *queue, int64_t user_id,
                                              const json_t *payload,
                                              int64_t delay_ms, char *job_id,
                                              ds_error *err) {
    if (job_id)
        job_id[0] = '\0';
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds_status st = enqueue(queue, user_id, payload, delay_ms, job_id, err);
    if (st == DS_OK)
        count_add(&queue->enqueued, 1);
    return counted(queue, st);
}

DS_EXPORT ds_status ds_queue_enqueue_batch(ds_queue *queue,
                                           json_t *const *payloads, size_t n,
                                           ds_error *err) {
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, n == 0 || payloads, "payloads is NULL");
    for (size_t i = 0; i < n; i++)
        DS_CHECK_ARG(err, payloads[i], "a payload is NULL");
    enum { ARGC = 9 };
    ds_status st = DS_OK;
    for (size_t base = 0; st == DS_OK && base < n; base += BATCH_CHUNK) {
        size_t m = n - base < BATCH_CHUNK ? n - base : BATCH_CHUNK;
        const char **argv = ds__calloc(m * ARGC, sizeof *argv);
        size_t *lens = ds__calloc(m * ARGC, sizeof *lens);
        char *ids = ds__calloc(m, DS_QUEUE_JOB_ID_LEN + 1);
        char **texts = ds__calloc(m, sizeof *texts);
        ds__redis_cmd *cmds = ds__calloc(m, sizeof *cmds);
        redisReply **replies = ds__calloc(m, sizeof *replies);
        if (!argv || !lens || !ids || !texts || !cmds || !replies)
            st = ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
        size_t slen = strlen(queue->stream);
        for (size_t i = 0; st == DS_OK && i < m; i++) {
            size_t plen;
            st = encode_payload(payloads[base + i], &texts[i], &plen, err);
            if (st != DS_OK)
                break;
            char *id = ids + i * (DS_QUEUE_JOB_ID_LEN + 1);
            ds__redis_token(id);
            const char *a[ARGC] = {"XADD", queue->stream, "*", "id", id,
                                   "a",    "0",           "p", texts[i]};
            size_t l[ARGC] = {4, slen, 1, 2, DS_QUEUE_JOB_ID_LEN, 1, 1, 1, plen};
            memcpy(argv + i * ARGC, a, sizeof a);
            memcpy(lens + i * ARGC, l, sizeof l);
            cmds[i] = (ds__redis_cmd){ARGC, argv + i * ARGC, lens + i * ARGC};
        }
        if (st == DS_OK) {
            ds_status sent =
                ds__redis_pipeline(queue->redis, cmds, m, replies, err);
            for (size_t i = 0; sent == DS_OK && i < m; i++) {
                if (replies[i]->type != REDIS_REPLY_ERROR)
                    count_add(&queue->enqueued, 1);
                else if (st == DS_OK)
                    st = ds__redis_reply_error(replies[i], "queue: XADD", err);
            }
            if (sent != DS_OK)
                st = sent;
        }
        if (replies)
            ds__redis_replies_free(replies, m);
        for (size_t i = 0; texts && i < m; i++)
            ds__free(texts[i]);
        ds__free(argv);
        ds__free(lens);
        ds__free(ids);
        ds__free(texts);
        ds__free(cmds);
        ds__free(replies);
    }
    return counted(queue, st);
}

/* ---- consuming --------------------------------------------------------------------- */

/* One run of the reserve script. *job NULL and *next_due_ms (-1: none)
 * when nothing is ready. */
static ds_status reserve_once(ds_queue *q, ds_queue_job **job,
                              int64_t *next_due_ms, ds_error *err) {
    *job = NULL;
    *next_due_ms = -1;
    ds__queue_reserve_info info;
    const char *args[10] = {q->stream,       q->delayed,     q->dead,
                            q->cursor,       GROUP,          q->consumer,
                            q->visibility,   q->max,         q->dead_max_len,
                            q->dead_max_age};
    redisReply *r = NULL;
    ds_status st = DS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        ds_error e = {0};
        st = ds__redis_run_script(q->redis, &reserve_script, 4, 6, args, NULL,
                                  &r, &e);
        if (st == DS_OK)
            break;
        if (attempt == 0 && is_nogroup(&e)) {
            /* a server that lost the group (restart without data) */
            st = create_group(q, err);
            if (st != DS_OK)
                return st;
            continue;
        }
        if (err)
            *err = e;
        return st;
    }
    st = ds__queue_job_from_reserve(r, job, &info, err);
    freeReplyObject(r);
    count_add(&q->dead_lettered, (uint64_t)info.dead_lettered);
    if (info.reclaimed)
        count_add(&q->reclaimed, 1);
    *next_due_ms = info.next_due_ms;
    return st;
}

/* A blocking XREADGROUP of at most `block_ms`. */
static ds_status block_read(ds_queue *q, int block_ms, ds_queue_job **job,
                            ds_error *err) {
    *job = NULL;
    char block[16];
    snprintf(block, sizeof block, "%d", block_ms < 1 ? 1 : block_ms);
    const char *argv[10] = {"XREADGROUP", "GROUP", GROUP,   q->consumer, "COUNT",
                            "1",          "BLOCK", block,   "STREAMS",  q->stream};
    const char *full[11];
    memcpy(full, argv, sizeof argv);
    full[10] = ">";
    ds_error e = {0};
    redisReply *r = ds__redis_command_argv_timeout(
        q->redis, block_ms + ds__redis_command_timeout(q->redis), 11, full,
        NULL, &e);
    if (!r) {
        if (is_nogroup(&e))
            return create_group(q, err);
        if (err)
            *err = e;
        return e.code;
    }
    ds_status st = DS_OK;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        const redisReply *s = r->element[0];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
            s->element[1]->type == REDIS_REPLY_ARRAY &&
            s->element[1]->elements > 0)
            st = ds__queue_job_from_entry(s->element[1]->element[0], 1, job, err);
        else
            st = ds__redis_unexpected(r, "queue XREADGROUP", err);
    } else if (r->type != REDIS_REPLY_NIL) {
        st = ds__redis_unexpected(r, "queue XREADGROUP", err);
    }
    freeReplyObject(r);
    return st;
}

static ds_status reserve(ds_queue *queue, int wait_ms, ds_queue_job **job,
                         ds_error *err) {
    DS_CHECK_ARG(err, job, "job is NULL");
    *job = NULL;
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, wait_ms >= 0, "wait_ms is negative");
    int64_t deadline = ds__now_us() + (int64_t)wait_ms * 1000;
    for (;;) {
        int64_t next_due;
        ds_status st = reserve_once(queue, job, &next_due, err);
        if (st != DS_OK || *job)
            return st;
        int64_t left_ms = (deadline - ds__now_us()) / 1000;
        if (left_ms <= 0)
            return DS_OK;
        /* wait for a new job, but come back for due delays and for
         * reclaims */
        int64_t slice = left_ms < BLOCK_SLICE_MS ? left_ms : BLOCK_SLICE_MS;
        if (next_due >= 0 && next_due < slice)
            slice = next_due;
        if (slice < 1)
            slice = 1;
        st = block_read(queue, (int)slice, job, err);
        if (st != DS_OK || *job)
            return st;
    }
}

DS_EXPORT ds_status ds_queue_reserve(ds_queue *queue, int wait_ms,
                                     ds_queue_job **job, ds_error *err) {
    ds_status st = reserve(queue, wait_ms, job, err);
    if (st == DS_OK && *job)
        count_add(&queue->reserved, 1);
    return counted(queue, st);
}

static ds_status holder_result(long long v, const ds_queue_job *job,
                               ds_error *err) {
    if (v == 1 || v == 2)
        return DS_OK;
    if (v == -1)
        return ds__error_set(err, DS_ERR_CONFLICT,
                             "queue: job %s was reclaimed by another worker "
                             "after its visibility timeout",
                             job->id);
    return ds__error_set(err, DS_ERR_NOT_FOUND,
                         "queue: job %s is no longer pending (acknowledged, "
                         "failed, or lost with the server)",
                         job->id);
}

static ds_status check_job(const ds_queue *q, const ds_queue_job *job,
                           ds_error *err) {
    DS_CHECK_ARG(err, q, "queue is NULL");
    DS_CHECK_ARG(err, job, "job is NULL");
    DS_CHECK_ARG(err, job->entry_id[0] && strlen(job->entry_id) < 48,
                 "job has no entry id");
    return DS_OK;
}

/* Runs a script that first checks the job's holder (ack, touch). */
static ds_status holder_call(ds_queue *q, ds__redis_script *s,
                             const ds_queue_job *job, ds_error *err) {
    ds_status st = check_job(q, job, err);
    if (st != DS_OK)
        return st;
    const char *args[4] = {q->stream, GROUP, job->entry_id, q->consumer};
    long long v;
    st = ds__redis_script_int(q->redis, s, 1, 3, args, NULL, &v, err);
    return st == DS_OK ? holder_result(v, job, err) : st;
}

DS_EXPORT ds_status ds_queue_ack(ds_queue *queue, const ds_queue_job *job,
                                 ds_error *err) {
    ds_status st = holder_call(queue, &ack_script, job, err);
    if (st == DS_OK)
        count_add(&queue->acked, 1);
    return counted(queue, st);
}

DS_EXPORT ds_status ds_queue_touch(ds_queue *queue, const ds_queue_job *job,
                                   ds_error *err) {
    return counted(queue, holder_call(queue, &touch_script, job, err));
}

static ds_status fail(ds_queue *queue, const ds_queue_job *job,
                      const char *reason, bool *dead, ds_error *err) {
    if (dead)
        *dead = false;
    ds_status st = check_job(queue, job, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, job->attempt >= 1, "job has no attempt number");
    char why[256];
    snprintf(why, sizeof why, "%s", reason && *reason ? reason : "failed");
    /* exponential backoff with up to 25% jitter */
    int64_t backoff = queue->backoff_base_ms;
    for (int i = 1;
         i < job->attempt && backoff > 0 && backoff < queue->backoff_max_ms;
         i++)
        backoff *= 2;
    if (backoff > queue->backoff_max_ms)
        backoff = queue->backoff_max_ms;
    /* up to 25% jitter, never past backoff_max_ms as the header promises:
     * at the cap it spreads downwards instead, so retries that reached the
     * cap together still do not come back together */
    if (backoff > 0) {
        int64_t jitter = ds__random_uniform((uint32_t)(backoff / 4 + 1));
        backoff = backoff + jitter <= queue->backoff_max_ms ? backoff + jitter
                                                            : backoff - jitter;
    }
    char attempt[16], delay[24];
    snprintf(attempt, sizeof attempt, "%d", job->attempt);
    snprintf(delay, sizeof delay, "%lld", (long long)backoff);
    const char *args[12] = {queue->stream,       queue->delayed,
                            queue->dead,         GROUP,
                            job->entry_id,       queue->consumer,
                            attempt,             queue->max,
                            delay,               why,
                            queue->dead_max_len, queue->dead_max_age};
    long long v;
    st = ds__redis_script_int(queue->redis, &fail_script, 3, 9, args, NULL, &v,
                              err);
    if (st != DS_OK)
        return st;
    if (v == 1 || v == 2) {
        count_add(&queue->failed, 1);
        count_add(v == 2 ? &queue->dead_lettered : &queue->retried, 1);
    }
    if (dead)
        *dead = v == 2;
    return holder_result(v, job, err);
}

DS_EXPORT ds_status ds_queue_fail(ds_queue *queue, const ds_queue_job *job,
                                  const char *reason, bool *dead,
                                  ds_error *err) {
    return counted(queue, fail(queue, job, reason, dead, err));
}

/* ---- dead letters and counts ------------------------------------------------------ */

DS_EXPORT void ds_queue_job_free(ds_queue_job *job) {
    if (!job)
        return;
    json_decref(job->payload);
    ds__free(job);
}

DS_EXPORT void ds_queue_jobs_free(ds_queue_job **jobs, size_t count) {
    if (!jobs)
        return;
    for (size_t i = 0; i < count; i++)
        ds_queue_job_free(jobs[i]);
    ds__free(jobs);
}

DS_EXPORT ds_status ds_queue_dead_list(ds_queue *queue, size_t max,
                                       ds_queue_job ***jobs, size_t *count,
                                       ds_error *err) {
    DS_CHECK_ARG(err, jobs && count, "jobs or count is NULL");
    *jobs = NULL;
    *count = 0;
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, max >= 1 && max <= 100000, "max must be 1-100000");
    char count_text[24];
    snprintf(count_text, sizeof count_text, "%zu", max);
    const char *argv[6] = {"XRANGE", queue->dead, "-", "+", "COUNT",
                           count_text};
    redisReply *r;
    ds_status st = ds__redis_call(queue->redis, 6, argv, NULL, &r, err);
    if (st != DS_OK)
        return st;
    if (r->type != REDIS_REPLY_ARRAY) {
        st = ds__redis_unexpected(r, "queue dead list", err);
        freeReplyObject(r);
        return st;
    }
    ds_queue_job **out = NULL;
    if (r->elements > 0) {
        out = ds__calloc(r->elements, sizeof *out);
        if (!out)
            st = ds__error_set(err, DS_ERR_NOMEM, "queue: out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; st == DS_OK && i < r->elements; i++) {
        st = ds__queue_job_from_entry(r->element[i], 0, &out[n], err);
        if (st == DS_OK)
            n++;
    }
    freeReplyObject(r);
    if (st != DS_OK) {
        ds_queue_jobs_free(out, n);
        return st;
    }
    *jobs = out;
    *count = n;
    return DS_OK;
}

DS_EXPORT ds_status ds_queue_dead_replay(ds_queue *queue, const char *entry_id,
                                         int64_t *replayed, ds_error *err) {
    if (replayed)
        *replayed = 0;
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, !entry_id || (*entry_id && strlen(entry_id) < 48),
                 "entry_id is empty or too long");
    int64_t total = 0;
    for (;;) {
        const char *args[3] = {queue->dead, queue->stream,
                               entry_id ? entry_id : ""};
        long long n;
        ds_status st = ds__redis_script_int(queue->redis, &replay_script, 2, 1,
                                            args, NULL, &n, err);
        if (st != DS_OK)
            return st;
        total += n;
        if (entry_id || n < 500)
            break;
    }
    if (replayed)
        *replayed = total;
    if (entry_id && total == 0)
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "queue: no dead letter %s", entry_id);
    return DS_OK;
}

DS_EXPORT ds_status ds_queue_dead_purge(ds_queue *queue, const char *entry_id,
                                        int64_t *purged, ds_error *err) {
    if (purged)
        *purged = 0;
    DS_CHECK_ARG(err, queue, "queue is NULL");
    DS_CHECK_ARG(err, !entry_id || (*entry_id && strlen(entry_id) < 48),
                 "entry_id is empty or too long");
    redisReply *r;
    ds_status st;
    if (entry_id) {
        const char *argv[3] = {"XDEL", queue->dead, entry_id};
        st = ds__redis_call(queue->redis, 3, argv, NULL, &r, err);
    } else {
        const char *args[1] = {queue->dead};
        long long n;
        st = ds__redis_script_int(queue->redis, &purge_script, 1, 0, args,
                                  NULL, &n, err);
        if (st == DS_OK && purged)
            *purged = n;
        return st;
    }
    if (st != DS_OK)
        return st;
    if (r->type != REDIS_REPLY_INTEGER)
        st = ds__redis_unexpected(r, "queue dead purge", err);
    else if (r->integer == 0)
        st = ds__error_set(err, DS_ERR_NOT_FOUND, "queue: no dead letter %s",
                           entry_id);
    else if (purged)
        *purged = r->integer;
    freeReplyObject(r);
    return st;
}

static ds_status counts_get(ds_queue *queue, ds_queue_counts *out,
                            ds_error *err) {
    memset(out, 0, sizeof *out);
    DS_CHECK_ARG(err, queue, "queue is NULL");
    const char *a0[2] = {"XLEN", queue->stream};
    const char *a1[3] = {"XPENDING", queue->stream, GROUP};
    const char *a2[2] = {"ZCARD", queue->delayed};
    const char *a3[2] = {"XLEN", queue->dead};
    ds__redis_cmd cmds[4] = {{2, a0, NULL}, {3, a1, NULL}, {2, a2, NULL},
                             {2, a3, NULL}};
    redisReply *r[4];
    ds_status st = ds__redis_pipeline(queue->redis, cmds, 4, r, err);
    if (st != DS_OK)
        return st;
    int64_t len = r[0]->type == REDIS_REPLY_INTEGER ? r[0]->integer : 0;
    int64_t pending = 0;
    if (r[1]->type == REDIS_REPLY_ARRAY && r[1]->elements > 0 &&
        r[1]->element[0]->type == REDIS_REPLY_INTEGER)
        pending = r[1]->element[0]->integer;
    else if (r[1]->type == REDIS_REPLY_ERROR &&
             !ds__redis_reply_is_error(r[1], "NOGROUP"))
        st = ds__redis_reply_error(r[1], "queue: XPENDING", err);
    if (st == DS_OK) {
        out->reserved = pending;
        out->ready = len - pending > 0 ? len - pending : 0;
        out->delayed = r[2]->type == REDIS_REPLY_INTEGER ? r[2]->integer : 0;
        out->dead = r[3]->type == REDIS_REPLY_INTEGER ? r[3]->integer : 0;
    }
    ds__redis_replies_free(r, 4);
    return st;
}

DS_EXPORT ds_status ds_queue_counts_get(ds_queue *queue, ds_queue_counts *out,
                                        ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    ds_status st = DS__OUT_CHECK(out, ds_queue_counts, err);
    if (st != DS_OK)
        return st;
    ds_queue_counts local = DS_QUEUE_COUNTS_INIT;
    st = counts_get(queue, &local, err);
    ds__growable_out(out, &local, sizeof local);
    return st;
}

/* ---- stats ------------------------------------------------------------------------ */

DS_EXPORT void ds_queue_stats_init(ds_queue_stats *stats) {
    if (!stats)
        return;
    memset(stats, 0, sizeof *stats);
    stats->size = sizeof *stats;
}

DS_EXPORT ds_status ds_queue_stats_get(const ds_queue *queue,
                                       ds_queue_stats *out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    ds_status st = DS__OUT_CHECK(out, ds_queue_stats, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, queue, "queue is NULL");
    ds_queue *q = (ds_queue *)queue; /* atomics are read, never written */
    ds_queue_stats local = DS_QUEUE_STATS_INIT;
    local.enqueued = atomic_load(&q->enqueued);
    local.reserved = atomic_load(&q->reserved);
    local.reclaimed = atomic_load(&q->reclaimed);
    local.acked = atomic_load(&q->acked);
    local.failed = atomic_load(&q->failed);
    local.retried = atomic_load(&q->retried);
    local.dead_lettered = atomic_load(&q->dead_lettered);
    local.lost = atomic_load(&q->lost);
    local.errors = atomic_load(&q->errors);
    ds__growable_out(out, &local, sizeof local);
    return DS_OK;
}
