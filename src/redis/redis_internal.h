/*
 * The Redis handle's internal API, for every module that keeps state in
 * Redis (cache, rate limiter, presence, queue, session look-ups).
 *
 * Commands run on a pooled connection with the handle's command timeout. A
 * connection whose server went away while it sat idle (a Redis restart) is
 * replaced before use without a round trip; one that fails mid-command is
 * closed, and the call fails with DS_ERR_REDIS, retryable. After a failed
 * connect the handle fails fast for redis_retry_ms instead of waiting for
 * another connect timeout on every call.
 *
 * Errors are always DS_ERR_REDIS: `retryable` is true for transport failures
 * and timeouts and for the server's transient errors (LOADING, BUSY,
 * TRYAGAIN, MASTERDOWN, READONLY, ...); a plain error reply (WRONGTYPE, a
 * script error) is not retryable. Messages never carry the password.
 *
 * Replies are hiredis `redisReply *` (free with freeReplyObject). A reply
 * handed back by ds__redis_command* is never of type REDIS_REPLY_ERROR.
 *
 * Keys: every key the library writes starts with the handle's prefix
 * (redis_prefix, default "ds:"); build them with ds__redis_key().
 *
 * Per-user keys: whatever belongs to a user (a cached session look-up, a
 * cache entry of their data, their presence) is registered in the user's
 * key set with ds__redis_track_user_key()/ds__redis_track_user_member(), so
 * that ds_redis_erase_user() finds it without SCAN. The set lives at
 * "<prefix>u:<user_id>:keys" and never expires before the keys it lists.
 *
 * Thread-safety: everything here may be called from any thread on a shared
 * handle. After fork() the child must open its own handle.
 */
#ifndef DS_REDIS_INTERNAL_H
#define DS_REDIS_INTERNAL_H

#include <hiredis/hiredis.h>
#include <stdarg.h>

#include "core/growable.h"
#include "core/internal.h"
#include "datastore/redis.h"

/* ---- commands ----------------------------------------------------------- */

/*
 * Runs one command given as an argument vector (binary-safe; argvlen may be
 * NULL for C strings) with the handle's command timeout. On DS_OK *out (may
 * be NULL to drop the reply) gets the reply, never an error reply: those
 * become DS_ERR_REDIS. The status is exact even when `err` is NULL, so
 * prefer this (and ds__redis_run_script) to the reply-returning forms.
 */
ds_status ds__redis_call(ds_redis *r, int argc, const char *const *argv,
                         const size_t *argvlen, redisReply **out,
                         ds_error *err);

/*
 * Runs one command given in hiredis' printf-like format (%s a C string, %b a
 * pointer and a size_t length; other conversions such as %d or %lld format
 * inside an argument). Returns the reply, or NULL with `err` filled.
 */
redisReply *ds__redis_command(ds_redis *r, ds_error *err, const char *fmt, ...);
redisReply *ds__redis_commandv(ds_redis *r, ds_error *err, const char *fmt,
                               va_list ap);

/* The same with an argument vector (binary-safe; argvlen may be NULL for C
 * strings). */
redisReply *ds__redis_command_argv(ds_redis *r, int argc,
                                   const char *const *argv,
                                   const size_t *argvlen, ds_error *err);

/* The same with a command timeout of its own (ms; e.g. for XREADGROUP
 * BLOCK, which waits on the server). */
redisReply *ds__redis_command_argv_timeout(ds_redis *r, int timeout_ms,
                                           int argc, const char *const *argv,
                                           const size_t *argvlen,
                                           ds_error *err);

/* One command of a pipeline. */
typedef struct ds__redis_cmd {
    int argc;
    const char *const *argv;
    const size_t *argvlen; /* NULL: C strings */
} ds__redis_cmd;

/*
 * Sends `n` commands in one write and reads their `n` replies (one round
 * trip). On DS_OK every replies[i] is set, and error replies stay as
 * REDIS_REPLY_ERROR for the caller to inspect; free each with
 * freeReplyObject (ds__redis_replies_free). On failure no reply is returned.
 */
ds_status ds__redis_pipeline(ds_redis *r, const ds__redis_cmd *cmds, size_t n,
                             redisReply **replies, ds_error *err);
void ds__redis_replies_free(redisReply **replies, size_t n);

/* Fills `err` from an error reply (DS_ERR_REDIS, retryable for the
 * transient kinds) prefixed with `context`; returns DS_ERR_REDIS. */
ds_status ds__redis_reply_error(const redisReply *reply, const char *context,
                                ds_error *err);
/* True when `reply` is an error reply starting with `code` ("NOSCRIPT"). */
bool ds__redis_reply_is_error(const redisReply *reply, const char *code);

/* Fills `err` for a reply of an unexpected type (a bug or a foreign key of
 * the same name); returns DS_ERR_REDIS. */
ds_status ds__redis_unexpected(const redisReply *reply, const char *context,
                               ds_error *err);

/* ---- Lua scripts ---------------------------------------------------------- */

/*
 * A script run with EVALSHA; on NOSCRIPT (a restarted or flushed server) it
 * is loaded with SCRIPT LOAD and run again. Define each as a static object:
 *     static ds__redis_script my_script = DS__REDIS_SCRIPT("name", "...lua");
 */
typedef struct ds__redis_script {
    const char *name;   /* for messages */
    const char *source;
    int sha_ready;      /* set once, under an internal lock */
    char sha[41];
} ds__redis_script;
#define DS__REDIS_SCRIPT(name, source) {(name), (source), 0, {0}}

/* The script's SHA1 (hex), computed on first use. NULL on failure. */
const char *ds__redis_script_sha(ds__redis_script *s);

/*
 * EVALSHA with `nkeys` keys followed by `nargs` arguments in args/arglens
 * (arglens may be NULL for C strings; at most 64 in all). On DS_OK *out
 * (may be NULL to drop the reply) gets the reply, never an error reply:
 * script errors become DS_ERR_REDIS naming the script.
 */
ds_status ds__redis_run_script(ds_redis *r, ds__redis_script *s, int nkeys,
                               int nargs, const char *const *args,
                               const size_t *arglens, redisReply **out,
                               ds_error *err);

/* The same for a script that answers an integer, stored in *value (may be
 * NULL); any other reply is DS_ERR_REDIS. */
ds_status ds__redis_script_int(ds_redis *r, ds__redis_script *s, int nkeys,
                               int nargs, const char *const *args,
                               const size_t *arglens, long long *value,
                               ds_error *err);

/* ds__redis_run_script() returning the reply, or NULL with `err` filled. */
redisReply *ds__redis_eval(ds_redis *r, ds__redis_script *s, int nkeys,
                           int nargs, const char *const *argv,
                           const size_t *argvlen, ds_error *err);

/* Builds the EVALSHA command for a pipeline in caller storage: `argv` and
 * `argvlen` need nkeys+nargs+3 slots, `numkeys` 16 bytes. */
void ds__redis_eval_cmd(ds__redis_script *s, int nkeys, int nargs,
                        const char *const *args, const size_t *arglens,
                        const char **argv, size_t *argvlen, char *numkeys,
                        ds__redis_cmd *cmd);

/* ---- names, keys and tokens ----------------------------------------------- */

/* True for the name of a module's object (a cache, a limiter, a queue, a
 * consumer): 1-64 of [A-Za-z0-9_.-], so it can stand in a key as is. False
 * for NULL. */
bool ds__redis_name_ok(const char *name);

/* The argument checks a module's open function starts with: *out set to
 * NULL, `redis` and `opts` present, opts->name a valid name. Returns
 * DS_ERR_INVALID from the caller like DS_CHECK_ARG. */
/* ...and reads the caller's growable options struct (type T) into
 * `local`, pointing `opts` at it. */
#define DS__REDIS_CHECK_OPEN(err, redis, opts, out, local, T)                  \
    do {                                                                       \
        DS_CHECK_ARG(err, out, "out is NULL");                                 \
        *(out) = NULL;                                                         \
        DS_CHECK_ARG(err, redis, "redis is NULL");                             \
        DS_CHECK_ARG(err, opts, "opts is NULL");                               \
        ds_status growable_st_ = DS__IN((opts), (local), T, (err));            \
        if (growable_st_ != DS_OK)                                             \
            return growable_st_;                                               \
        (opts) = (local);                                                      \
        DS_CHECK_ARG(err, ds__redis_name_ok((opts)->name),                     \
                     "name must be 1-64 of [A-Za-z0-9_.-]");                   \
    } while (0)

/* A random 128-bit token in DS__REDIS_TOKEN_LEN hex characters and a NUL
 * (lock owners, job ids). */
#define DS__REDIS_TOKEN_LEN 32
void ds__redis_token(char out[DS__REDIS_TOKEN_LEN + 1]);

/* Writes `prefix` (plen bytes) and the C string `rest` to `buf`, which must
 * hold plen + strlen(rest) + 1 bytes; returns the key's length. For keys
 * built on the stack on hot paths. */
size_t ds__redis_join(char *buf, const char *prefix, size_t plen,
                      const char *rest);

/* The key prefix (borrowed, lives with the handle). */
const char *ds__redis_prefix(const ds_redis *r, size_t *len);

/*
 * "<prefix>" followed by the printf-formatted rest, in ds__malloc'd memory
 * (free with ds__free); *len (may be NULL) receives its length. NULL when
 * out of memory.
 */
char *ds__redis_key(const ds_redis *r, size_t *len, const char *fmt, ...)
    DS_PRINTF(3, 4);

/* ---- per-user keys (GDPR erase) ------------------------------------------ */

/*
 * Registers `key` (a full key, prefix included) as the user's: erase deletes
 * it. `ttl_ms` is the key's time to live (0: it does not expire): the user's
 * key set is kept alive at least that long. Call it whenever the key is
 * (re)written with a longer TTL.
 */
ds_status ds__redis_track_user_key(ds_redis *r, int64_t user_id,
                                   const char *key, int64_t ttl_ms,
                                   ds_error *err);

/*
 * Registers the user as a member of a shared sorted set or set `key` (e.g.
 * the users online in a conversation): erase removes only the member
 * "<user_id>" from it (ZREM/SREM), not the key.
 */
/* Registers a queue (its stream key) as holding jobs of the user: erase
 * deletes the user's entries from the stream, its delayed set and its dead
 * letters (entries whose field "u" is the user id). */
ds_status ds__redis_track_user_queue(ds_redis *r, int64_t user_id,
                                     const char *stream, int64_t ttl_ms,
                                     ds_error *err);
ds_status ds__redis_track_user_member(ds_redis *r, int64_t user_id,
                                      const char *key, int64_t ttl_ms,
                                      ds_error *err);

/* Sets `key` to the value with PX `ttl_ms` (0: no expiry) and registers it as
 * the user's, in one round trip and atomically. */
ds_status ds__redis_set_for_user(ds_redis *r, int64_t user_id, const char *key,
                                 const void *value, size_t len, int64_t ttl_ms,
                                 ds_error *err);

/*
 * Lua for scripts of other modules that write a per-user key together with
 * its data, atomically: defines `ds_track(set, entry, ttl_ms)` where `set` is
 * ds__redis_user_set_key(), `entry` "k:<key>" (erase deletes the key) or
 * "z:<key>" (erase removes the member "<user_id>"), ttl_ms 0 for none.
 */
#define DS__REDIS_LUA_TRACK_FN                                                 \
    "local function ds_track(set, entry, ttl)\n"                               \
    "  local cur = redis.call('PTTL', set)\n"                                  \
    "  if redis.call('SADD', set, entry) == 1 and\n"                           \
    "     redis.call('SCARD', set) % 256 == 0 then\n"                          \
    "    for _, e in ipairs(redis.call('SMEMBERS', set)) do\n"                 \
    "      if redis.call('EXISTS', string.sub(e, 3)) == 0 then\n"              \
    "        redis.call('SREM', set, e)\n"                                     \
    "      end\n"                                                              \
    "    end\n"                                                                \
    "  end\n"                                                                  \
    "  if ttl <= 0 then\n"                                                     \
    "    if cur >= 0 then redis.call('PERSIST', set) end\n"                    \
    "  elseif cur == -2 or (cur >= 0 and cur < ttl) then\n"                    \
    "    redis.call('PEXPIRE', set, ttl)\n"                                    \
    "  end\n"                                                                  \
    "end\n"

/* "<prefix>u:<user_id>:keys" (ds__malloc'd). */
char *ds__redis_user_set_key(const ds_redis *r, int64_t user_id);

/* The user set's entry for `key`: "<kind>:<key>" with kind 'k' (erase
 * deletes the key) or 'z' (erase removes the member "<user_id>"), in
 * ds__malloc'd memory; *len (may be NULL) gets its length. NULL when out of
 * memory. */
char *ds__redis_user_entry(char kind, const char *key, size_t *len);

/* ---- dedicated connections (pub/sub) --------------------------------------- */

typedef struct ds__rconn ds__rconn;

/* A new connection of its own (authenticated, database selected), outside
 * the pool, e.g. for SUBSCRIBE. Close with ds__rconn_close(). `cancel_fd`
 * (-1: none) is a descriptor the owner makes readable to stop it: from then
 * on every wait of the connection, the connect included, ends at once with
 * DS_ERR_CLOSED, so a thread that owns it can be stopped without waiting
 * for a connect or command timeout. Host name resolution (getaddrinfo) is
 * the one wait it cannot cut short. */
ds_status ds__redis_conn_open(ds_redis *r, int cancel_fd, ds__rconn **out,
                              ds_error *err);
void ds__rconn_close(ds__rconn *c);
/* Sends one command; -1 timeout means the handle's command timeout. */
ds_status ds__rconn_send_argv(ds__rconn *c, int argc, const char *const *argv,
                              const size_t *argvlen, int timeout_ms,
                              ds_error *err);
/*
 * Reads the next reply, waiting at most `timeout_ms` (0: only what is
 * already there, -1: forever). *out is NULL when none arrived in time (not
 * an error). A reply may be an error reply. Transport errors fill `err`.
 * When it returns no reply, nothing is left buffered in TLS: poll() on
 * ds__rconn_fd() before the next call does not miss a reply.
 */
ds_status ds__rconn_read(ds__rconn *c, int timeout_ms, redisReply **out,
                         ds_error *err);
/* The socket, for poll() together with other descriptors. */
int ds__rconn_fd(const ds__rconn *c);

/* ---- handle internals shared by the modules ------------------------------- */

/* The handle's command timeout (redis_command_timeout_ms). */
int ds__redis_command_timeout(const ds_redis *r);

/* Wall clock of the library in ms (what cache headers carry). */
int64_t ds__redis_now_ms(void);

/* ds_redis_erase_user() is declared in datastore/redis.h. */

#endif /* DS_REDIS_INTERNAL_H */
