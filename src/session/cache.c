/*
 * The Redis side of session look-ups.
 *
 * "<prefix>sess:<hex of the keyed hash>" holds a small JSON copy of a live
 * session, for at most cache_ttl_ms and never past its expiry, or the
 * tombstone "revoked" after a revocation. A tombstone outlives every entry
 * it replaces, and entries are written by a script that refuses to
 * overwrite one, so a validation racing a revocation cannot put the session
 * back. Every key is registered as its user's, for ds_redis_erase_user().
 *
 * Redis holds only the hash (useless without the key ring), never a token,
 * and never a user agent or IP in clear: those travel sealed (secretbox)
 * under a key derived from the token itself, so only a request presenting
 * the token opens them. Entry layout in docs/formats.md.
 * A Redis failure during a look-up is a miss: PostgreSQL answers.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/json_internal.h"
#include "redis/redis_internal.h"
#include "session/session_internal.h"

static const char tombstone[] = "revoked";

static ds__redis_script put_script = DS__REDIS_SCRIPT(
    "session_put",
    DS__REDIS_LUA_TRACK_FN
    "if redis.call('GET', KEYS[1]) == 'revoked' then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "ds_track(KEYS[2], ARGV[3], tonumber(ARGV[2]))\n"
    "return 1\n");

void ds__session_seal_key(const uint8_t raw[DS_SESSION_TOKEN_BYTES],
                          uint8_t key[DS__SESSION_SEAL_KEY_BYTES]) {
    static const char ctx[] = DS__SESSION_SEAL_CONTEXT;
    crypto_generichash(key, DS__SESSION_SEAL_KEY_BYTES, (const uint8_t *)ctx,
                       sizeof ctx - 1, raw, DS_SESSION_TOKEN_BYTES);
}

/* The user agent and IP as {"ua":..., "ip":...} sealed with secretbox under
 * `seal_key`: base64 (standard, padded) of nonce || box. NULL when there is
 * nothing to seal or on failure (json_t owned by the caller). */
static json_t *seal_details(const ds_session *sess, const uint8_t *seal_key) {
    if (!sess->user_agent && !sess->ip)
        return NULL;
    json_t *d = json_object();
    if (d && sess->user_agent)
        json_object_set_new(d, "ua", json_string(sess->user_agent));
    if (d && sess->ip)
        json_object_set_new(d, "ip", json_string(sess->ip));
    char *text = d ? ds__json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    size_t blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + n;
    uint8_t *box = ds__malloc(blen);
    size_t b64len = sodium_base64_encoded_len(blen, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = box ? ds__malloc(b64len) : NULL;
    json_t *out = NULL;
    if (b64) {
        randombytes_buf(box, crypto_secretbox_NONCEBYTES);
        crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES,
                              (const uint8_t *)text, n, box, seal_key);
        sodium_bin2base64(b64, b64len, box, blen, sodium_base64_VARIANT_ORIGINAL);
        out = json_string(b64);
    }
    sodium_memzero(text, n);
    free(text); /* jansson's allocator */
    ds__free(box);
    ds__free(b64);
    return out;
}

/* Opens "x" into *d (owned by the caller); false when it does not open. */
static bool open_details(const char *b64, const uint8_t *seal_key, json_t **d) {
    *d = NULL;
    size_t len = strlen(b64);
    uint8_t *box = ds__malloc(len);
    size_t blen = 0;
    bool ok = box && sodium_base642bin(box, len, b64, len, NULL, &blen, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) == 0 &&
              blen >= crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES;
    size_t n = ok ? blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES
                  : 0;
    char *text = ok ? ds__malloc(n + 1) : NULL;
    ok = text && crypto_secretbox_open_easy(
                     (uint8_t *)text, box + crypto_secretbox_NONCEBYTES,
                     blen - crypto_secretbox_NONCEBYTES, box, seal_key) == 0;
    if (ok) {
        *d = json_loadb(text, n, 0, NULL);
        ok = *d && json_is_object(*d);
        sodium_memzero(text, n);
    }
    ds__free(text);
    ds__free(box);
    if (!ok) {
        json_decref(*d);
        *d = NULL;
    }
    return ok;
}

/* "<prefix>sess:<64 hex digits>" (ds__malloc'd). */
static char *cache_key(ds_session_store *s, const uint8_t *hash, size_t *len) {
    char hex[2 * DS_SESSION_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, hash, DS_SESSION_HASH_BYTES);
    return ds__redis_key(s->redis, len, "sess:%s", hex);
}

static void cache_trouble(const char *what, const ds_error *e) {
    ds__log(DS_LOG_WARN, "session", "redis %s failed (PostgreSQL answers): %s",
            what, e->message);
}

ds__cache_result ds__session_cache_get(ds_session_store *s, const uint8_t *hash,
                                       const uint8_t *seal_key,
                                       ds_session **out) {
    *out = NULL;
    size_t klen;
    char *key = cache_key(s, hash, &klen);
    if (!key)
        return DS_CACHE_MISS;
    const char *argv[] = {"GET", key};
    size_t argvlen[] = {3, klen};
    ds_error e = {0};
    redisReply *reply = ds__redis_command_argv(s->redis, 2, argv, argvlen, &e);
    ds__free(key);
    if (!reply) {
        cache_trouble("look-up", &e);
        return DS_CACHE_MISS;
    }
    ds__cache_result res = DS_CACHE_MISS;
    if (reply->type == REDIS_REPLY_STRING) {
        if (reply->len == sizeof tombstone - 1 &&
            memcmp(reply->str, tombstone, reply->len) == 0) {
            res = DS_CACHE_REVOKED;
        } else {
            json_t *j = json_loadb(reply->str, reply->len, 0, NULL);
            json_int_t id = 0, uid = 0, c = 0, seen = 0, exp = 0;
            const char *ua = NULL, *ip = NULL, *sealed = NULL;
            json_t *d = NULL;
            if (j && json_unpack(j, "{s:I, s:I, s:I, s:I, s:I, s?s}", "id", &id,
                                 "uid", &uid, "c", &c, "s", &seen, "e", &exp,
                                 "x", &sealed) == 0 &&
                id > 0 && uid > 0) {
                /* details that do not open (or a copy in the old clear
                 * layout): PostgreSQL answers, and the copy is rewritten */
                if (json_object_get(j, "ua") || json_object_get(j, "ip") ||
                    (sealed && !open_details(sealed, seal_key, &d)))
                    exp = 0;
                if (d && json_unpack(d, "{s?s, s?s}", "ua", &ua, "ip", &ip) != 0)
                    exp = 0;
                int64_t now = ds__wall_us();
                /* expired here, or due for a touch: PostgreSQL decides */
                if (now < exp && now - seen < s->touch_us) {
                    *out = ds__session_new(id, uid, c, seen, exp, ua,
                                           ua ? strlen(ua) : 0, ip,
                                           ip ? strlen(ip) : 0, false);
                    res = *out ? DS_CACHE_HIT : DS_CACHE_MISS;
                }
                json_decref(d);
            } else {
                ds__log(DS_LOG_WARN, "session",
                        "unreadable session cache entry; ignored");
            }
            json_decref(j);
        }
    }
    freeReplyObject(reply);
    return res;
}

void ds__session_cache_put(ds_session_store *s, const uint8_t *hash,
                           const uint8_t *seal_key, const ds_session *sess) {
    int64_t ttl_ms = s->cache_ttl_ms;
    int64_t left_ms = (sess->expires_at_us - ds__wall_us()) / 1000;
    if (left_ms < ttl_ms)
        ttl_ms = left_ms;
    if (ttl_ms <= 0)
        return;
    json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I}", "id", (json_int_t)sess->id,
                          "uid", (json_int_t)sess->user_id, "c",
                          (json_int_t)sess->created_at_us, "s",
                          (json_int_t)sess->last_seen_at_us, "e",
                          (json_int_t)sess->expires_at_us);
    json_t *sealed = j ? seal_details(sess, seal_key) : NULL;
    if (j && (sess->user_agent || sess->ip) && !sealed) {
        json_decref(j); /* never a copy that would lose them */
        j = NULL;
    }
    if (sealed)
        json_object_set_new(j, "x", sealed);
    char *value = j ? ds__json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    size_t klen;
    char *key = cache_key(s, hash, &klen);
    char *set = ds__redis_user_set_key(s->redis, sess->user_id);
    char *entry = key ? ds__malloc(klen + 3) : NULL;
    if (value && key && set && entry) {
        entry[0] = 'k';
        entry[1] = ':';
        memcpy(entry + 2, key, klen + 1);
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
        const char *args[] = {key, set, value, ttl, entry};
        size_t lens[] = {klen, strlen(set), strlen(value), strlen(ttl), klen + 2};
        ds_error e = {0};
        redisReply *reply = ds__redis_eval(s->redis, &put_script, 2, 3, args, lens, &e);
        if (reply)
            freeReplyObject(reply);
        else
            cache_trouble("store", &e);
    }
    free(value); /* jansson's allocator */
    ds__free(key);
    ds__free(set);
    ds__free(entry);
}

ds_status ds__session_cache_revoke(ds_session_store *s, int64_t user_id,
                                   const uint8_t *hash, ds_error *err) {
    size_t klen;
    char *key = cache_key(s, hash, &klen);
    if (!key)
        return ds__error_set(err, DS_ERR_NOMEM, "session: out of memory");
    ds_status st = ds__redis_set_for_user(s->redis, user_id, key, tombstone,
                                          sizeof tombstone - 1,
                                          s->cache_ttl_ms, err);
    ds__free(key);
    if (st != DS_OK)
        ds__error_prefix(err, "the session is revoked in PostgreSQL, but its "
                              "Redis entry could not be replaced (a cached "
                              "look-up may accept it for up to cache_ttl_ms; "
                              "retry the revocation)");
    return st;
}
