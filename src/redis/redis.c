/*
 * The Redis handle: a small pool of connections (conn.c), commands with a
 * deadline, pipelines, Lua scripts by SHA, keys under the prefix, and the
 * per-user key sets behind ds_redis_erase_user().
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "core/growable.h"
#include "core/config_internal.h"
#include "redis/handle.h"

int64_t ds__redis_now_ms(void) { return ds__wall_us() / 1000; }

int ds__redis_command_timeout(const ds_redis *r) {
    return r->command_timeout_ms;
}

/* ---- pool ---------------------------------------------------------------- */

static void push_idle(ds_redis *r, ds__rconn *c) {
    c->next = r->idle;
    r->idle = c;
    r->idle_n++;
}

/* Leases a connection before `deadline_us`. */
static ds_status acquire(ds_redis *r, int64_t deadline_us, ds__rconn **out,
                         ds_error *err) {
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->closing) {
            pthread_mutex_unlock(&r->mu);
            return ds__error_set(err, DS_ERR_CLOSED, "redis: handle closed");
        }
        while (r->idle) {
            ds__rconn *c = r->idle;
            r->idle = c->next;
            r->idle_n--;
            /* recently used: skip the check (a death in that window shows
             * as a retryable error of the command) */
            if (ds__now_us() - c->last_used_us < DS_REDIS_FRESH_US ||
                ds__rconn_alive(c)) {
                pthread_mutex_unlock(&r->mu);
                *out = c;
                return DS_OK;
            }
            /* the server went away while it was idle (restart, timeout) */
            r->total--;
            atomic_fetch_add(&r->stale_replaced, 1);
            pthread_mutex_unlock(&r->mu);
            ds__rconn_close(c);
            pthread_mutex_lock(&r->mu);
        }
        if (r->total < r->max) {
            int64_t now = ds__now_us();
            if (now < r->down_until_us) {
                int64_t left = (r->down_until_us - now + 999) / 1000;
                pthread_mutex_unlock(&r->mu);
                return ds__error_set(err, DS_ERR_REDIS,
                                     "redis %s: unreachable (the last connect "
                                     "failed; next try in %lld ms)",
                                     r->label, (long long)left);
            }
            r->total++;
            pthread_mutex_unlock(&r->mu);
            ds__rconn *c;
            ds_status st = ds__rconn_connect(r, deadline_us, true, -1, &c, err);
            pthread_mutex_lock(&r->mu);
            if (st != DS_OK) {
                r->total--;
                if (r->retry_ms > 0)
                    r->down_until_us =
                        ds__now_us() + (int64_t)r->retry_ms * 1000;
                atomic_fetch_add(&r->connect_failures, 1);
                pthread_cond_signal(&r->cond);
                pthread_mutex_unlock(&r->mu);
                return st;
            }
            r->down_until_us = 0;
            atomic_fetch_add(&r->connects, 1);
            pthread_mutex_unlock(&r->mu);
            *out = c;
            return DS_OK;
        }
        if (deadline_us != DS_REDIS_FOREVER && ds__now_us() >= deadline_us) {
            pthread_mutex_unlock(&r->mu);
            return ds__error_set(err, DS_ERR_REDIS,
                                 "redis %s: all %d connections stayed busy "
                                 "until the command timeout",
                                 r->label, r->max);
        }
        if (deadline_us == DS_REDIS_FOREVER) {
            pthread_cond_wait(&r->cond, &r->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t left = deadline_us - ds__now_us();
            if (left < 0)
                left = 0;
            int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
            ts.tv_sec += (time_t)(left / 1000000 + ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&r->cond, &r->mu, &ts);
        }
    }
}

static void release(ds_redis *r, ds__rconn *c, bool broken) {
    pthread_mutex_lock(&r->mu);
    if (broken || r->closing) {
        r->total--;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->mu);
        ds__rconn_close(c);
        return;
    }
    push_idle(r, c);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

/* Runs formatted commands (`buf`, `n` of them) with `timeout_ms`. */
static ds_status run_buf(ds_redis *r, const char *buf, size_t len, size_t n,
                         redisReply **replies, int timeout_ms, ds_error *err) {
    int64_t deadline = ds__now_us() + (int64_t)timeout_ms * 1000;
    ds__rconn *c;
    ds_status st = acquire(r, deadline, &c, err);
    if (st == DS_OK) {
        st = ds__rconn_roundtrip(c, buf, len, n, replies, deadline, err);
        release(r, c, st != DS_OK || !ds__rconn_clean(c));
    }
    atomic_fetch_add(&r->commands, 1);
    if (st != DS_OK)
        atomic_fetch_add(&r->errors, 1);
    return st;
}

/* A single reply into *out, with error replies turned into DS_ERR_REDIS.
 * Frees `cmd`. */
static ds_status run_one(ds_redis *r, char *cmd, int len, int timeout_ms,
                         redisReply **out, ds_error *err) {
    *out = NULL;
    if (len < 0 || !cmd)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory (or a "
                                                "bad command format)");
    redisReply *reply = NULL;
    ds_status st = run_buf(r, cmd, (size_t)len, 1, &reply, timeout_ms, err);
    redisFreeCommand(cmd);
    if (st != DS_OK)
        return st;
    if (reply->type == REDIS_REPLY_ERROR) {
        char ctx[DS_REDIS_HOST_MAX + 64];
        snprintf(ctx, sizeof ctx, "redis %s", r->label);
        st = ds__redis_reply_error(reply, ctx, err);
        freeReplyObject(reply);
        atomic_fetch_add(&r->errors, 1);
        return st;
    }
    *out = reply;
    return DS_OK;
}

/* Hands `reply` to *out, or frees it when the caller wants none. */
static void hand_over(redisReply *reply, redisReply **out) {
    if (out)
        *out = reply;
    else
        freeReplyObject(reply);
}

redisReply *ds__redis_commandv(ds_redis *r, ds_error *err, const char *fmt,
                               va_list ap) {
    if (!r || !fmt) {
        ds__error_set(err, DS_ERR_INVALID, "redis: NULL handle or command");
        return NULL;
    }
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    redisReply *reply;
    run_one(r, cmd, len, r->command_timeout_ms, &reply, err);
    return reply;
}

redisReply *ds__redis_command(ds_redis *r, ds_error *err, const char *fmt,
                              ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = ds__redis_commandv(r, err, fmt, ap);
    va_end(ap);
    return reply;
}

static ds_status call_timeout(ds_redis *r, int timeout_ms, int argc,
                              const char *const *argv, const size_t *argvlen,
                              redisReply **out, ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err, r && argc > 0 && argv, "NULL handle or command");
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, (const char **)argv, argvlen);
    redisReply *reply;
    ds_status st = run_one(r, cmd, len, timeout_ms, &reply, err);
    if (st == DS_OK)
        hand_over(reply, out);
    return st;
}

ds_status ds__redis_call(ds_redis *r, int argc, const char *const *argv,
                         const size_t *argvlen, redisReply **out,
                         ds_error *err) {
    return call_timeout(r, r ? r->command_timeout_ms : 0, argc, argv, argvlen,
                        out, err);
}

redisReply *ds__redis_command_argv_timeout(ds_redis *r, int timeout_ms,
                                           int argc, const char *const *argv,
                                           const size_t *argvlen,
                                           ds_error *err) {
    redisReply *reply;
    call_timeout(r, timeout_ms, argc, argv, argvlen, &reply, err);
    return reply;
}

redisReply *ds__redis_command_argv(ds_redis *r, int argc,
                                   const char *const *argv,
                                   const size_t *argvlen, ds_error *err) {
    return ds__redis_command_argv_timeout(
        r, r ? r->command_timeout_ms : 0, argc, argv, argvlen, err);
}

ds_status ds__redis_pipeline(ds_redis *r, const ds__redis_cmd *cmds, size_t n,
                             redisReply **replies, ds_error *err) {
    DS_CHECK_ARG(err, r && cmds && replies && n > 0, "bad pipeline");
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    char **parts = ds__calloc(n, sizeof *parts);
    int *lens = ds__calloc(n, sizeof *lens);
    ds_status st = DS_OK;
    size_t total = 0;
    if (!parts || !lens)
        st = ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        lens[i] = redisFormatCommandArgv(&parts[i], cmds[i].argc,
                                         (const char **)cmds[i].argv,
                                         cmds[i].argvlen);
        if (lens[i] < 0 || !parts[i])
            st = ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
        else
            total += (size_t)lens[i];
    }
    char *buf = NULL;
    if (st == DS_OK && n > 1) {
        buf = ds__malloc(total);
        if (!buf)
            st = ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
        for (size_t i = 0, off = 0; buf && i < n; i++) {
            memcpy(buf + off, parts[i], (size_t)lens[i]);
            off += (size_t)lens[i];
        }
    }
    if (st == DS_OK)
        st = run_buf(r, n > 1 ? buf : parts[0], total, n, replies,
                     r->command_timeout_ms, err);
    ds__free(buf);
    for (size_t i = 0; parts && i < n; i++)
        redisFreeCommand(parts[i]);
    ds__free(parts);
    ds__free(lens);
    return st;
}

/* ---- scripts ----------------------------------------------------------------- */

static pthread_mutex_t sha_mu = PTHREAD_MUTEX_INITIALIZER;

const char *ds__redis_script_sha(ds__redis_script *s) {
    if (__atomic_load_n(&s->sha_ready, __ATOMIC_ACQUIRE))
        return s->sha;
    pthread_mutex_lock(&sha_mu);
    if (!s->sha_ready) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (EVP_Digest(s->source, strlen(s->source), md, &mdlen, EVP_sha1(),
                       NULL) &&
            mdlen == 20) {
            static const char hex[] = "0123456789abcdef";
            for (unsigned i = 0; i < 20; i++) {
                s->sha[2 * i] = hex[md[i] >> 4];
                s->sha[2 * i + 1] = hex[md[i] & 15];
            }
            s->sha[40] = '\0';
            __atomic_store_n(&s->sha_ready, 1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&sha_mu);
    return __atomic_load_n(&s->sha_ready, __ATOMIC_ACQUIRE) ? s->sha : NULL;
}

void ds__redis_eval_cmd(ds__redis_script *s, int nkeys, int nargs,
                        const char *const *args, const size_t *arglens,
                        const char **argv, size_t *argvlen, char *numkeys,
                        ds__redis_cmd *cmd) {
    const char *sha = ds__redis_script_sha(s);
    snprintf(numkeys, 16, "%d", nkeys);
    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = sha ? sha : "0000000000000000000000000000000000000000";
    argvlen[1] = 40;
    argv[2] = numkeys;
    argvlen[2] = strlen(numkeys);
    for (int i = 0; i < nkeys + nargs; i++) {
        argv[3 + i] = args[i];
        argvlen[3 + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    cmd->argc = nkeys + nargs + 3;
    cmd->argv = argv;
    cmd->argvlen = argvlen;
}

#define EVAL_MAX_ARGS 64

ds_status ds__redis_run_script(ds_redis *r, ds__redis_script *s, int nkeys,
                               int nargs, const char *const *args,
                               const size_t *arglens, redisReply **out,
                               ds_error *err) {
    if (out)
        *out = NULL;
    DS_CHECK_ARG(err,
                 r && s && nkeys >= 0 && nargs >= 0 &&
                     nkeys <= EVAL_MAX_ARGS - nargs &&
                     (nkeys + nargs == 0 || args),
                 "bad script call");
    if (!ds__redis_script_sha(s))
        return ds__error_set(err, DS_ERR_NOMEM, "redis: cannot hash script %s",
                             s->name);
    const char *argv[EVAL_MAX_ARGS + 3];
    size_t argvlen[EVAL_MAX_ARGS + 3];
    char numkeys[16];
    ds__redis_cmd cmd;
    ds__redis_eval_cmd(s, nkeys, nargs, args, arglens, argv, argvlen, numkeys,
                       &cmd);
    for (int attempt = 0;; attempt++) {
        redisReply *reply = NULL;
        ds_status st = ds__redis_pipeline(r, &cmd, 1, &reply, err);
        if (st != DS_OK)
            return st;
        if (reply->type != REDIS_REPLY_ERROR) {
            hand_over(reply, out);
            return DS_OK;
        }
        if (attempt == 0 && ds__redis_reply_is_error(reply, "NOSCRIPT")) {
            /* a restarted or flushed server: load it and go again */
            freeReplyObject(reply);
            const char *load[3] = {"SCRIPT", "LOAD", s->source};
            redisReply *loaded;
            st = ds__redis_call(r, 3, load, NULL, &loaded, err);
            if (st != DS_OK) {
                ds__error_prefix(err, "redis: loading script %s", s->name);
                return st;
            }
            bool same = loaded->type == REDIS_REPLY_STRING &&
                        loaded->len == 40 &&
                        memcmp(loaded->str, s->sha, 40) == 0;
            freeReplyObject(loaded);
            if (!same)
                return ds__error_set(err, DS_ERR_INTERNAL,
                                     "redis: script %s: server SHA differs",
                                     s->name);
            continue;
        }
        char ctx[128];
        snprintf(ctx, sizeof ctx, "redis: script %s", s->name);
        st = ds__redis_reply_error(reply, ctx, err);
        freeReplyObject(reply);
        atomic_fetch_add(&r->errors, 1);
        return st;
    }
}

redisReply *ds__redis_eval(ds_redis *r, ds__redis_script *s, int nkeys,
                           int nargs, const char *const *args,
                           const size_t *arglens, ds_error *err) {
    redisReply *reply;
    ds__redis_run_script(r, s, nkeys, nargs, args, arglens, &reply, err);
    return reply;
}

ds_status ds__redis_script_int(ds_redis *r, ds__redis_script *s, int nkeys,
                               int nargs, const char *const *args,
                               const size_t *arglens, long long *value,
                               ds_error *err) {
    if (value)
        *value = 0;
    redisReply *reply;
    ds_status st =
        ds__redis_run_script(r, s, nkeys, nargs, args, arglens, &reply, err);
    if (st != DS_OK)
        return st;
    if (reply->type != REDIS_REPLY_INTEGER) {
        char ctx[128];
        snprintf(ctx, sizeof ctx, "redis: script %s", s->name);
        st = ds__redis_unexpected(reply, ctx, err);
    } else if (value) {
        *value = reply->integer;
    }
    freeReplyObject(reply);
    return st;
}

/* ---- names, keys and tokens ------------------------------------------------- */

bool ds__redis_name_ok(const char *name) {
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-'))
            return false;
    return true;
}

void ds__redis_token(char out[DS__REDIS_TOKEN_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < DS__REDIS_TOKEN_LEN / 8; i++) {
        uint32_t bits = ds__random_u32();
        for (int j = 0; j < 8; j++, bits >>= 4)
            out[i * 8 + j] = hex[bits & 15];
    }
    out[DS__REDIS_TOKEN_LEN] = '\0';
}

size_t ds__redis_join(char *buf, const char *prefix, size_t plen,
                      const char *rest) {
    size_t n = strlen(rest);
    memcpy(buf, prefix, plen);
    memcpy(buf + plen, rest, n + 1);
    return plen + n;
}

char *ds__redis_user_entry(char kind, const char *key, size_t *len) {
    size_t klen = strlen(key);
    char *entry = ds__malloc(klen + 3);
    if (!entry)
        return NULL;
    entry[0] = kind;
    entry[1] = ':';
    memcpy(entry + 2, key, klen + 1);
    if (len)
        *len = klen + 2;
    return entry;
}

const char *ds__redis_prefix(const ds_redis *r, size_t *len) {
    if (len)
        *len = r->prefix_len;
    return r->prefix;
}

char *ds__redis_key(const ds_redis *r, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *key = ds__malloc(r->prefix_len + (size_t)n + 1);
    if (!key)
        return NULL;
    memcpy(key, r->prefix, r->prefix_len);
    va_start(ap, fmt);
    vsnprintf(key + r->prefix_len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (len)
        *len = r->prefix_len + (size_t)n;
    return key;
}

/* ---- per-user key sets --------------------------------------------------------- */

/* KEYS[1] the user's set; ARGV[1] "k:<key>" or "z:<key>"; ARGV[2] TTL ms. */
static ds__redis_script track_script = DS__REDIS_SCRIPT(
    "track_user_key", DS__REDIS_LUA_TRACK_FN
    "ds_track(KEYS[1], ARGV[1], tonumber(ARGV[2]))\n"
    "return 1\n");

/* KEYS[1] the key, KEYS[2] the user's set; ARGV[1] value, ARGV[2] TTL ms,
 * ARGV[3] "k:<key>". */
static ds__redis_script set_track_script = DS__REDIS_SCRIPT(
    "set_for_user", DS__REDIS_LUA_TRACK_FN
    "local ttl = tonumber(ARGV[2])\n"
    "if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)\n"
    "else redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "ds_track(KEYS[2], ARGV[3], ttl)\n"
    "return 1\n");

/* KEYS[1] the user's set; ARGV[1] the user id as the member name. Deletes
 * "k:" keys, removes the member from "z:" sets, then the set itself.
 * Returns keys deleted plus memberships removed. */
static ds__redis_script erase_script = DS__REDIS_SCRIPT(
    "erase_user",
    "local n = 0\n"
    "for _, e in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local kind, key = string.sub(e, 1, 1), string.sub(e, 3)\n"
    "  if kind == 'k' then\n"
    "    n = n + redis.call('DEL', key)\n"
    /* a queue: its stream "<base>s", delayed set "<base>d" and dead letters
     * "<base>dead" hold jobs; those whose u is the user go */
    "  elseif kind == 'q' then\n"
    "    local base = string.sub(key, 1, -2)\n"
    "    for _, s in ipairs({key, base .. 'dead'}) do\n"
    "      local from = '-'\n"
    "      while true do\n"
    "        local es = redis.call('XRANGE', s, from, '+', 'COUNT', 1000)\n"
    "        for _, e in ipairs(es) do\n"
    "          local kv = e[2]\n"
    "          for i = 1, #kv, 2 do\n"
    "            if kv[i] == 'u' and kv[i + 1] == ARGV[1] then\n"
    "              if s == key then redis.pcall('XACK', s, 'ds', e[1]) end\n"
    "              n = n + redis.call('XDEL', s, e[1])\n"
    "            end\n"
    "          end\n"
    "        end\n"
    "        if #es < 1000 then break end\n"
    "        from = '(' .. es[#es][1]\n"
    "      end\n"
    "    end\n"
    "    local d = base .. 'd'\n"
    "    for _, m in ipairs(redis.call('ZRANGE', d, 0, -1)) do\n"
    "      local ok, j = pcall(cjson.decode, m)\n"
    "      if ok and type(j) == 'table' and j.u == ARGV[1] then\n"
    "        n = n + redis.call('ZREM', d, m)\n"
    "      end\n"
    "    end\n"
    "  else\n"
    "    local t = redis.call('TYPE', key).ok\n"
    "    if t == 'zset' then n = n + redis.call('ZREM', key, ARGV[1])\n"
    "    elseif t == 'set' then n = n + redis.call('SREM', key, ARGV[1])\n"
    "    elseif t == 'hash' then n = n + redis.call('HDEL', key, ARGV[1])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n");

char *ds__redis_user_set_key(const ds_redis *r, int64_t user_id) {
    return ds__redis_key(r, NULL, "u:%lld:keys", (long long)user_id);
}

/* What a per-user write sends besides its own data: the user's key set,
 * the set's entry for the key, and the TTL as text. */
typedef struct user_track {
    char *set;
    char *entry;
    size_t entry_len;
    char ttl[24];
} user_track;

static void user_track_clear(user_track *t) {
    ds__free(t->set);
    ds__free(t->entry);
    t->set = t->entry = NULL;
}

static ds_status user_track_init(ds_redis *r, int64_t user_id, const char *key,
                                 char kind, int64_t ttl_ms, user_track *t,
                                 ds_error *err) {
    memset(t, 0, sizeof *t);
    DS_CHECK_ARG(err, r, "redis is NULL");
    DS_CHECK_ARG(err, key && *key, "key is NULL or empty");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, ttl_ms >= 0, "ttl_ms is negative");
    t->set = ds__redis_user_set_key(r, user_id);
    t->entry = ds__redis_user_entry(kind, key, &t->entry_len);
    if (!t->set || !t->entry) {
        user_track_clear(t);
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    }
    snprintf(t->ttl, sizeof t->ttl, "%lld", (long long)ttl_ms);
    return DS_OK;
}

static ds_status track(ds_redis *r, int64_t user_id, const char *key,
                       char kind, int64_t ttl_ms, ds_error *err) {
    user_track t;
    ds_status st = user_track_init(r, user_id, key, kind, ttl_ms, &t, err);
    if (st != DS_OK)
        return st;
    const char *args[3] = {t.set, t.entry, t.ttl};
    st = ds__redis_run_script(r, &track_script, 1, 2, args, NULL, NULL, err);
    user_track_clear(&t);
    return st;
}

ds_status ds__redis_track_user_key(ds_redis *r, int64_t user_id,
                                   const char *key, int64_t ttl_ms,
                                   ds_error *err) {
    return track(r, user_id, key, 'k', ttl_ms, err);
}

ds_status ds__redis_track_user_member(ds_redis *r, int64_t user_id,
                                      const char *key, int64_t ttl_ms,
                                      ds_error *err) {
    return track(r, user_id, key, 'z', ttl_ms, err);
}

ds_status ds__redis_track_user_queue(ds_redis *r, int64_t user_id,
                                     const char *stream, int64_t ttl_ms,
                                     ds_error *err) {
    return track(r, user_id, stream, 'q', ttl_ms, err);
}

ds_status ds__redis_set_for_user(ds_redis *r, int64_t user_id, const char *key,
                                 const void *value, size_t len, int64_t ttl_ms,
                                 ds_error *err) {
    DS_CHECK_ARG(err, value || len == 0, "value is NULL");
    user_track t;
    ds_status st = user_track_init(r, user_id, key, 'k', ttl_ms, &t, err);
    if (st != DS_OK)
        return st;
    const char *args[5] = {key, t.set, value ? (const char *)value : "", t.ttl,
                           t.entry};
    size_t lens[5] = {t.entry_len - 2, strlen(t.set), len, strlen(t.ttl),
                      t.entry_len};
    st = ds__redis_run_script(r, &set_track_script, 2, 3, args, lens, NULL,
                              err);
    user_track_clear(&t);
    return st;
}

DS_EXPORT ds_status ds_redis_erase_user(ds_redis *redis, int64_t user_id,
                                        int64_t *keys_removed, ds_error *err) {
    if (keys_removed)
        *keys_removed = 0;
    DS_CHECK_ARG(err, redis, "redis is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    char *set = ds__redis_user_set_key(redis, user_id);
    if (!set)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    char uid[24];
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    const char *args[2] = {set, uid};
    long long n;
    ds_status st =
        ds__redis_script_int(redis, &erase_script, 1, 1, args, NULL, &n, err);
    ds__free(set);
    if (st == DS_OK && keys_removed)
        *keys_removed = n;
    return st;
}

/* ---- dedicated connections ------------------------------------------------------ */

ds_status ds__redis_conn_open(ds_redis *r, int cancel_fd, ds__rconn **out,
                              ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, r, "redis is NULL");
    ds_status st =
        ds__rconn_connect(r, DS_REDIS_FOREVER, false, cancel_fd, out, err);
    atomic_fetch_add(st == DS_OK ? &r->connects : &r->connect_failures, 1);
    return st;
}

/* ---- open / close ------------------------------------------------------------ */

static void free_handle(ds_redis *r) {
    ds__redis_url_clear(&r->url);
    if (r->ssl_ctx)
        SSL_CTX_free(r->ssl_ctx);
    ds__free(r->prefix);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    ds__free(r);
}

DS_EXPORT ds_status ds_redis_open(const ds_config *cfg, ds_redis **out,
                                  ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    if (!cfg->redis_url)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "REDIS_URL: not set (redis://[user:password@]"
                             "host:port/db or rediss:// for TLS)");
    ds_redis *r = ds__calloc(1, sizeof *r);
    if (!r)
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->commands, 0);
    atomic_init(&r->errors, 0);
    atomic_init(&r->connects, 0);
    atomic_init(&r->connect_failures, 0);
    atomic_init(&r->stale_replaced, 0);
    r->max = (int)cfg->redis_pool_size;
    r->connect_timeout_ms = (int)cfg->redis_connect_timeout_ms;
    r->command_timeout_ms = (int)cfg->redis_command_timeout_ms;
    r->retry_ms = (int)cfg->redis_retry_ms;
    r->prefix = ds__strdup(cfg->redis_prefix ? cfg->redis_prefix : "");
    if (!r->prefix) {
        free_handle(r);
        return ds__error_set(err, DS_ERR_NOMEM, "redis: out of memory");
    }
    r->prefix_len = strlen(r->prefix);
    st = ds__redis_url_parse(cfg->redis_url, "REDIS_URL", &r->url, err);
    if (st != DS_OK) {
        free_handle(r);
        return st;
    }
    if (r->url.unix_socket)
        snprintf(r->label, sizeof r->label, "%s", r->url.path);
    else if (strchr(r->url.host, ':'))
        snprintf(r->label, sizeof r->label, "[%s]:%d", r->url.host,
                 r->url.port);
    else
        snprintf(r->label, sizeof r->label, "%s:%d", r->url.host, r->url.port);
    if (r->url.tls) {
        st = ds__redis_tls_context(cfg->redis_tls_ca, &r->ssl_ctx, err);
        if (st != DS_OK) {
            free_handle(r);
            return st;
        }
    }
    /* One connection now: a wrong URL, password or CA shows at start-up. */
    ds__rconn *c;
    st = ds__rconn_connect(r, DS_REDIS_FOREVER, true, -1, &c, err);
    if (st != DS_OK) {
        free_handle(r);
        return st;
    }
    atomic_fetch_add(&r->connects, 1);
    r->total = 1;
    push_idle(r, c);
    *out = r;
    return DS_OK;
}

DS_EXPORT ds_status ds_redis_open_url(const char *url, ds_redis **out,
                                      ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, url, "url is NULL");
    ds_config *cfg;
    ds_status st = ds_config_new(&cfg, err);
    if (st != DS_OK)
        return st;
    st = ds_config_set(cfg, "redis_url", url, err);
    if (st == DS_OK)
        st = ds_redis_open(cfg, out, err);
    ds_config_free(cfg);
    return st;
}

DS_EXPORT void ds_redis_close(ds_redis *redis) {
    if (!redis)
        return;
    pthread_mutex_lock(&redis->mu);
    redis->closing = true;
    ds__rconn *idle = redis->idle;
    redis->idle = NULL;
    redis->idle_n = 0;
    pthread_cond_broadcast(&redis->cond);
    pthread_mutex_unlock(&redis->mu);
    while (idle) {
        ds__rconn *next = idle->next;
        ds__rconn_close(idle);
        idle = next;
    }
    free_handle(redis);
}

DS_EXPORT ds_status ds_redis_ping(ds_redis *redis, ds_error *err) {
    DS_CHECK_ARG(err, redis, "redis is NULL");
    const char *argv[1] = {"PING"};
    redisReply *reply;
    ds_status st = ds__redis_call(redis, 1, argv, NULL, &reply, err);
    if (st != DS_OK)
        return st;
    if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0)
        st = ds__redis_unexpected(reply, "PING", err);
    freeReplyObject(reply);
    return st;
}

DS_EXPORT ds_status ds_redis_stats_get(ds_redis *redis, ds_redis_stats *caller,
                                       ds_error *err) {
    DS_CHECK_ARG(err, caller, "out is NULL");
    ds_status st = DS__OUT_CHECK(caller, ds_redis_stats, err);
    if (st != DS_OK)
        return st;
    DS_CHECK_ARG(err, redis, "redis is NULL");
    ds_redis_stats local = DS_REDIS_STATS_INIT, *out = &local;
    out->commands = atomic_load(&redis->commands);
    out->errors = atomic_load(&redis->errors);
    out->connects = atomic_load(&redis->connects);
    out->connect_failures = atomic_load(&redis->connect_failures);
    out->stale_replaced = atomic_load(&redis->stale_replaced);
    pthread_mutex_lock(&redis->mu);
    out->connections = redis->total;
    out->idle = redis->idle_n;
    pthread_mutex_unlock(&redis->mu);
    ds__growable_out(caller, &local, sizeof local);
    return DS_OK;
}

DS_EXPORT bool ds_redis_is_tls(const ds_redis *redis) {
    return redis && redis->url.tls;
}
