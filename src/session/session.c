/*
 * Login sessions: random tokens handed out once, stored as keyed hashes in
 * auth_sessions, validated with a sliding expiry.
 *
 * A token is hashed under every key of the ring (the active one first) and
 * looked up with token_hash = ANY(...), so a rotation of the ring logs no
 * one out; the touch that slides the expiry also re-hashes a session found
 * under an older key. All reads go to the primary: a revocation must be
 * seen at once, and a replica may lag.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/growable.h"
#include "session/session_internal.h"

/* A failed statement's status comes from its mapped error (conflict,
 * timeout, connection...), so a caller that passes no error out-param gets
 * a local one and the same status. */
#define SESSION_ERR(err)                                                       \
    ds_error err##_local_;                                                     \
    if (!(err))                                                                \
    (err) = &err##_local_

enum {
    STMT_CREATE, STMT_LOOKUP, STMT_LOOKUP_ONE, STMT_TOUCH, STMT_REVOKE_HASH, STMT_REVOKE_ID,
    STMT_REVOKE_USER, STMT_LIST, STMT_PURGE
};

#define SESSION_COLS                                                           \
    "id, user_id, created_at, last_seen_at, expires_at, user_agent, "         \
    "host(ip), revoked"
#define SESSION_COL_TYPES                                                      \
    DS_OID_INT8, DS_OID_INT8, DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ,         \
        DS_OID_TIMESTAMPTZ, DS_OID_TEXT, DS_OID_TEXT, DS_OID_BOOL

/* A look-up by hash: the record, the stored hash (which ring key it is
 * under), whether it is live, and whether it is due for a touch ($2: the
 * touch interval in microseconds). */
#define LOOKUP_SQL(where)                                                      \
    "SELECT " SESSION_COLS ", token_hash, expires_at > now(), "               \
    "now() - last_seen_at >= $2 * interval '1 microsecond' "                  \
    "FROM auth_sessions WHERE " where
#define LOOKUP_COL_TYPES SESSION_COL_TYPES, DS_OID_BYTEA, DS_OID_BOOL, DS_OID_BOOL

/* Marks sessions revoked (keeping the first revocation's time) and returns
 * what the cache needs to replace their entries with tombstones. */
#define REVOKE_SQL(where)                                                      \
    "UPDATE auth_sessions SET revoked = true, "                               \
    "revoked_at = coalesce(revoked_at, now()) "                               \
    "WHERE " where " RETURNING user_id, token_hash"

static const ds__stmt_def stmts[] = {
    [STMT_CREATE] = {
        .name = "session.create",
        .sql = "INSERT INTO auth_sessions (user_id, token_hash, expires_at, "
               "user_agent, ip) "
               "VALUES ($1, $2, now() + $3 * interval '1 microsecond', $4, $5) "
               "RETURNING " SESSION_COLS,
        .nparams = 5,
        .param_types = {DS_OID_INT8, DS_OID_BYTEA, DS_OID_INT8, DS_OID_TEXT,
                        DS_OID_INET},
        .ncols = 8,
        .col_types = {SESSION_COL_TYPES},
    },
    [STMT_LOOKUP] = {
        .name = "session.lookup",
        .sql = LOOKUP_SQL("token_hash = ANY($1)"),
        .nparams = 2,
        .param_types = {DS_OID_BYTEA_ARRAY, DS_OID_INT8},
        .ncols = 11,
        .col_types = {LOOKUP_COL_TYPES},
    },
    /* The same for a ring of one key: a plain equality, which a generic
     * plan always answers from the unique index (= ANY($1) may be planned
     * as a scan on a small table). */
    [STMT_LOOKUP_ONE] = {
        .name = "session.lookup_one",
        .sql = LOOKUP_SQL("token_hash = $1"),
        .nparams = 2,
        .param_types = {DS_OID_BYTEA, DS_OID_INT8},
        .ncols = 11,
        .col_types = {LOOKUP_COL_TYPES},
    },
    [STMT_TOUCH] = {
        .name = "session.touch",
        .sql = "UPDATE auth_sessions SET last_seen_at = now(), "
               "expires_at = least(now() + $2 * interval '1 microsecond', "
               "created_at + $3 * interval '1 microsecond'), token_hash = $4 "
               "WHERE id = $1 AND NOT revoked AND expires_at > now() "
               "RETURNING last_seen_at, expires_at",
        .nparams = 4,
        .param_types = {DS_OID_INT8, DS_OID_INT8, DS_OID_INT8, DS_OID_BYTEA},
        .ncols = 2,
        .col_types = {DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ},
    },
    [STMT_REVOKE_HASH] = {
        .name = "session.revoke_by_hash",
        .sql = REVOKE_SQL("token_hash = ANY($1)"),
        .nparams = 1,
        .param_types = {DS_OID_BYTEA_ARRAY},
        .ncols = 2,
        .col_types = {DS_OID_INT8, DS_OID_BYTEA},
    },
    [STMT_REVOKE_ID] = {
        .name = "session.revoke_by_id",
        .sql = REVOKE_SQL("id = $1 AND user_id = $2"),
        .nparams = 2,
        .param_types = {DS_OID_INT8, DS_OID_INT8},
        .ncols = 2,
        .col_types = {DS_OID_INT8, DS_OID_BYTEA},
    },
    [STMT_REVOKE_USER] = {
        /* The count of sessions ended now, and the hashes of all the
         * user's unexpired ones (revoked before or now: the cache gets a
         * tombstone for each, so a retry after a Redis failure still
         * reaches them). One row even when there are none. */
        .name = "session.revoke_user",
        .sql = "WITH ended AS (UPDATE auth_sessions SET revoked = true, "
               "revoked_at = now() "
               "WHERE user_id = $1 AND NOT revoked AND expires_at > now() "
               "RETURNING id), n AS (SELECT count(*) AS n FROM ended) "
               "SELECT n.n, s.token_hash FROM n LEFT JOIN auth_sessions s "
               "ON s.user_id = $1 AND s.expires_at > now()",
        .nparams = 1,
        .param_types = {DS_OID_INT8},
        .ncols = 2,
        .col_types = {DS_OID_INT8, DS_OID_BYTEA},
    },
    [STMT_LIST] = {
        .name = "session.list_user",
        .sql = "SELECT " SESSION_COLS " FROM auth_sessions "
               "WHERE user_id = $1 AND NOT revoked AND expires_at > now() "
               "ORDER BY last_seen_at DESC, id DESC",
        .nparams = 1,
        .param_types = {DS_OID_INT8},
        .ncols = 8,
        .col_types = {SESSION_COL_TYPES},
    },
    [STMT_PURGE] = {
        .name = "session.purge_expired",
        /* = ANY(ARRAY(...)), not IN (...): as a semi-join the generic
         * plan hashes the batch and scans the whole table for it. */
        .sql = "DELETE FROM auth_sessions WHERE id = ANY (ARRAY("
               "SELECT id FROM auth_sessions "
               "WHERE expires_at < now() - $1 * interval '1 microsecond' "
               "ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
        .nparams = 2,
        .param_types = {DS_OID_INT8, DS_OID_INT4},
        .ncols = -1,
    },
};

size_t ds__stmts_session(const ds__stmt_def **defs) {
    *defs = stmts;
    return sizeof stmts / sizeof stmts[0];
}

#define PURGE_BATCH 1000
#define DAY_S INT64_C(86400)
#define YEARS_10_S (3653 * DAY_S)

/* ---- the store ----------------------------------------------------------- */

DS_EXPORT ds_status ds_session_store_open(ds_pool *pool, ds_crypto *crypto,
                                          ds_redis *redis,
                                          const ds_session_options *opts,
                                          ds_session_store **out,
                                          ds_error *err) {
    DS_CHECK_ARG(err, out != NULL, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool != NULL, "pool is NULL");
    DS_CHECK_ARG(err, crypto != NULL, "crypto is NULL");
    ds_session_options o = DS_SESSION_OPTIONS_INIT;
    ds_status checked = DS__IN(opts, &o, ds_session_options, err);
    if (checked != DS_OK)
        return checked;
    if (!o.idle_ttl_ms)
        o.idle_ttl_ms = 14 * DAY_S * 1000;
    if (!o.max_lifetime_ms)
        o.max_lifetime_ms = 30 * DAY_S * 1000;
    if (!o.touch_interval_ms)
        o.touch_interval_ms = 60000;
    if (!o.cache_ttl_ms)
        o.cache_ttl_ms = 300000;
    DS_CHECK_ARG(err, o.idle_ttl_ms >= 1000 && o.idle_ttl_ms <= YEARS_10_S * 1000,
                 "idle_ttl_ms must be 1 s to 10 years");
    DS_CHECK_ARG(err,
                 o.max_lifetime_ms >= 1000 && o.max_lifetime_ms <= YEARS_10_S * 1000,
                 "max_lifetime_ms must be 1 s to 10 years");
    DS_CHECK_ARG(err, o.touch_interval_ms >= 1 &&
                          o.touch_interval_ms < o.idle_ttl_ms,
                 "touch_interval_ms must be at least 1 and below idle_ttl_ms");
    DS_CHECK_ARG(err, o.cache_ttl_ms >= 1000 && o.cache_ttl_ms <= DAY_S * 1000,
                 "cache_ttl_ms must be 1 s to 1 day");
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    ds_session_store *s = ds__calloc(1, sizeof *s);
    if (!s)
        return ds__error_set(err, DS_ERR_NOMEM,
                             "ds_session_store_open: out of memory");
    s->pool = pool;
    s->crypto = crypto;
    s->redis = redis;
    s->idle_us = o.idle_ttl_ms * 1000;
    s->max_us = o.max_lifetime_ms * 1000;
    s->touch_us = o.touch_interval_ms * 1000;
    s->cache_ttl_ms = o.cache_ttl_ms;
    *out = s;
    return DS_OK;
}

DS_EXPORT void ds_session_store_close(ds_session_store *store) {
    if (!store)
        return;
    ds__free(store);
}

/* ---- records ------------------------------------------------------------ */

static int64_t ts_us(const PGresult *r, int row, int col) {
    return ds__ts_from_pg((int64_t)ds__get_be64(PQgetvalue(r, row, col)));
}

/* A session from the SESSION_COLS columns of row `row`. */
static ds_session *session_from_row(const PGresult *r, int row) {
    bool has_ua = !PQgetisnull(r, row, 5), has_ip = !PQgetisnull(r, row, 6);
    return ds__session_new(
        (int64_t)ds__get_be64(PQgetvalue(r, row, 0)),
        (int64_t)ds__get_be64(PQgetvalue(r, row, 1)), ts_us(r, row, 2),
        ts_us(r, row, 3), ts_us(r, row, 4), has_ua ? PQgetvalue(r, row, 5) : NULL,
        has_ua ? (size_t)PQgetlength(r, row, 5) : 0,
        has_ip ? PQgetvalue(r, row, 6) : NULL,
        has_ip ? (size_t)PQgetlength(r, row, 6) : 0, PQgetvalue(r, row, 7)[0] != 0);
}

/* ---- tokens -------------------------------------------------------------- */

ds_status ds__session_token_decode(const char *token,
                                   uint8_t raw[DS_SESSION_TOKEN_BYTES],
                                   const char *fn, ds_error *err) {
    if (!token)
        return ds__error_set(err, DS_ERR_INVALID, "%s: token is NULL", fn);
    size_t n = strnlen(token, DS_SESSION_TOKEN_LEN + 1);
    size_t bin_len = 0;
    const char *end = NULL;
    if (n != DS_SESSION_TOKEN_LEN ||
        sodium_base642bin(raw, DS_SESSION_TOKEN_BYTES, token, n, NULL, &bin_len,
                          &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        bin_len != DS_SESSION_TOKEN_BYTES || end != token + n) {
        sodium_memzero(raw, DS_SESSION_TOKEN_BYTES);
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s: not a session token (expected %d characters "
                             "of base64url)",
                             fn, DS_SESSION_TOKEN_LEN);
    }
    return DS_OK;
}

/* A presented token's keyed hashes under every ring key, the active
 * key's first (a token is looked up under all of them, so a new active
 * key logs no one out), as bytes and as a bytea[] parameter. */
typedef struct presented {
    uint8_t hashes[DS_RING_MAX_KEYS * DS_SESSION_HASH_BYTES];
    uint8_t seal_key[DS__SESSION_SEAL_KEY_BYTES]; /* of the Redis copy */
    size_t n;
    ds__pgarr arr;
} presented;

/* Decodes and hashes `token`; the decoded bytes are wiped before this
 * returns. Call presented_done() whatever it returns. */
static ds_status presented_hash(ds_session_store *s, const char *token,
                                const char *fn, presented *p, ds_error *err) {
    p->n = 0;
    uint8_t raw[DS_SESSION_TOKEN_BYTES];
    ds_status st = ds__session_token_decode(token, raw, fn, err);
    if (st != DS_OK)
        return st;
    p->n = ds__crypto_key_count(s->crypto);
    st = ds__crypto_session_hashes(s->crypto, raw, sizeof raw, p->hashes, err);
    if (st == DS_OK)
        ds__session_seal_key(raw, p->seal_key);
    sodium_memzero(raw, sizeof raw);
    if (st != DS_OK)
        return st;
    ds__pgarr_init(&p->arr, DS_OID_BYTEA);
    bool ok = true;
    for (size_t i = 0; ok && i < p->n; i++)
        ok = ds__pgarr_add(&p->arr, p->hashes + i * DS_SESSION_HASH_BYTES,
                           DS_SESSION_HASH_BYTES);
    if (!ok || !ds__pgarr_finish(&p->arr))
        return ds__error_set(err, DS_ERR_NOMEM, "session: out of memory");
    return DS_OK;
}

static void presented_done(presented *p) {
    sodium_memzero(p->seal_key, sizeof p->seal_key);
    ds__pgarr_free(&p->arr);
}

/* Runs one statement on a primary lease that goes back at once (all
 * session statements go to the primary: a revocation must be seen at
 * once, and a replica may lag). */
static ds_status exec_primary(ds_session_store *s, int which,
                              const ds__bind *b, PGresult **out,
                              ds_error *err) {
    *out = NULL;
    ds_conn *conn;
    ds_status st = ds_pool_acquire(s->pool, &conn, err);
    if (st != DS_OK)
        return st;
    *out = ds__stmt_run(conn, &stmts[which], b, err);
    ds_pool_release(conn);
    if (!*out)
        return err ? err->code : DS_ERR_DB;
    return DS_OK;
}

/* ---- create ---------------------------------------------------------------- */

/* Cuts `ua` to DS_SESSION_USER_AGENT_MAX characters (UTF-8). */
static size_t ua_cut(const char *ua, size_t len) {
    size_t chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)ua[i] & 0xC0) != 0x80) {
            if (chars == DS_SESSION_USER_AGENT_MAX)
                return i;
            chars++;
        }
    }
    return len;
}

static bool ip_valid(const char *ip) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, ip, buf) == 1 || inet_pton(AF_INET6, ip, buf) == 1;
}

DS_EXPORT ds_status ds_session_create(ds_session_store *store, int64_t user_id,
                                      const char *user_agent, const char *ip,
                                      ds_crypto_secret **token, ds_session **session,
                                      ds_error *err) {
    SESSION_ERR(err);
    if (session)
        *session = NULL;
    DS_CHECK_ARG(err, token != NULL, "token is NULL");
    *token = NULL;
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    if (ip && !*ip)
        ip = NULL;
    if (user_agent && !*user_agent)
        user_agent = NULL;
    DS_CHECK_ARG(err, !ip || (strlen(ip) < INET6_ADDRSTRLEN && ip_valid(ip)),
                 "ip is not an IPv4 or IPv6 address");
    size_t ua_len = user_agent ? strlen(user_agent) : 0;
    DS_CHECK_ARG(err, !user_agent || ds__utf8_valid(user_agent, ua_len),
                 "user_agent is not valid UTF-8");
    ua_len = user_agent ? ua_cut(user_agent, ua_len) : 0;

    ds_crypto_secret *tok = ds__secret_new(DS_SESSION_TOKEN_LEN);
    if (!tok)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_session_create: out of memory");
    uint8_t raw[DS_SESSION_TOKEN_BYTES], hash[DS_SESSION_HASH_BYTES];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(ds__secret_bytes(tok), DS_SESSION_TOKEN_LEN + 1, raw,
                      sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    ds_status st = ds__crypto_session_hash(store->crypto, 0, raw, sizeof raw,
                                           hash, err);
    sodium_memzero(raw, sizeof raw);
    if (st != DS_OK) {
        ds_crypto_secret_free(tok);
        return st;
    }

    int64_t ttl = store->idle_us < store->max_us ? store->idle_us : store->max_us;
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    ds__bind_bytes(&b, hash, DS_SESSION_HASH_BYTES);
    ds__bind_int64(&b, ttl);
    if (user_agent)
        ds__bind_text_n(&b, user_agent, ua_len);
    else
        ds__bind_null(&b);
    ds__bind_text_as(&b, ip, DS_OID_INET); /* as text: inet parses it */

    ds_error local = {0};
    PGresult *r;
    st = exec_primary(store, STMT_CREATE, &b, &r, &local);
    ds__bind_free(&b);
    sodium_memzero(hash, sizeof hash);
    if (st != DS_OK) {
        ds_crypto_secret_free(tok);
        if (strcmp(local.sqlstate, "23503") == 0)
            return ds__error_set(err, DS_ERR_NOT_FOUND,
                                 "ds_session_create: no user %lld",
                                 (long long)user_id);
        if (err)
            *err = local;
        return st;
    }
    if (session) {
        *session = session_from_row(r, 0);
        if (!*session) {
            /* The row exists but the caller never learns the token: it is
             * unusable, and the purge removes it once it expires. */
            PQclear(r);
            ds_crypto_secret_free(tok);
            return ds__error_set(err, DS_ERR_NOMEM,
                                 "ds_session_create: out of memory");
        }
    }
    PQclear(r);
    *token = tok;
    return DS_OK;
}

/* ---- validate -------------------------------------------------------------- */

/* The look-up on `conn` and, when the session is due for a touch or was
 * found under an older ring key, the touch that slides its expiry and
 * re-hashes it under the active key. */
static ds_status lookup_and_touch(ds_session_store *store, ds_conn *conn,
                                  const presented *tok, ds_session **out,
                                  ds_error *err) {
    *out = NULL;
    const uint8_t *hashes = tok->hashes;
    size_t nhashes = tok->n;
    bool one = nhashes == 1;
    ds__bind b;
    ds__bind_init(&b);
    if (one)
        ds__bind_bytes(&b, hashes, DS_SESSION_HASH_BYTES);
    else
        ds__bind_bytes(&b, tok->arr.buf, tok->arr.len); /* bytea[] */
    ds__bind_int64(&b, store->touch_us);
    const ds__stmt_def *def = &stmts[one ? STMT_LOOKUP_ONE : STMT_LOOKUP];
    PGresult *r = ds__stmt_run(conn, def, &b, err);
    ds__bind_free(&b);
    if (!r)
        return err ? err->code : DS_ERR_DB;
    const char *why = NULL;
    if (PQntuples(r) == 0)
        why = "no such session";
    else if (PQgetvalue(r, 0, 7)[0])
        why = "the session was revoked";
    else if (!PQgetvalue(r, 0, 9)[0])
        why = "the session expired";
    if (why) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOT_FOUND, "ds_session_validate: %s", why);
    }

    /* Which ring key the stored hash is under (constant-time compares). */
    const uint8_t *stored = (const uint8_t *)PQgetvalue(r, 0, 8);
    size_t key_index = nhashes;
    for (size_t i = 0; i < nhashes; i++)
        if (PQgetlength(r, 0, 8) == DS_SESSION_HASH_BYTES &&
            sodium_memcmp(stored, hashes + i * DS_SESSION_HASH_BYTES,
                          DS_SESSION_HASH_BYTES) == 0)
            key_index = i;
    bool due = PQgetvalue(r, 0, 10)[0] != 0;
    ds_session *sess = session_from_row(r, 0);
    PQclear(r);
    if (!sess)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_session_validate: out of memory");
    if (!due && key_index == 0) {
        *out = sess;
        return DS_OK;
    }

    ds__bind tb;
    ds__bind_init(&tb);
    ds__bind_int64(&tb, sess->id);
    ds__bind_int64(&tb, store->idle_us);
    ds__bind_int64(&tb, store->max_us);
    ds__bind_bytes(&tb, hashes, DS_SESSION_HASH_BYTES);
    PGresult *t = ds__stmt_run(conn, &stmts[STMT_TOUCH], &tb, err);
    ds__bind_free(&tb);
    ds_status st = DS_OK;
    if (!t) {
        st = err ? err->code : DS_ERR_DB;
    } else if (PQntuples(t) == 0) { /* revoked or expired in between */
        st = ds__error_set(err, DS_ERR_NOT_FOUND,
                           "ds_session_validate: the session was revoked");
    } else {
        sess->last_seen_at_us = ts_us(t, 0, 0);
        sess->expires_at_us = ts_us(t, 0, 1);
        if (key_index != 0)
            ds__log(DS_LOG_DEBUG, "session",
                    "session %lld re-hashed under the active key",
                    (long long)sess->id);
    }
    PQclear(t);
    if (st != DS_OK) {
        ds_session_free(sess);
        return st;
    }
    *out = sess;
    return DS_OK;
}

DS_EXPORT ds_status ds_session_validate(ds_session_store *store,
                                        const char *token, int64_t *user_id,
                                        ds_session **session, ds_error *err) {
    SESSION_ERR(err);
    if (user_id)
        *user_id = 0;
    if (session)
        *session = NULL;
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    presented tok = {.n = 0};
    ds_status st = presented_hash(store, token, __func__, &tok, err);

    ds_session *sess = NULL;
    ds__cache_result cached = DS_CACHE_MISS;
    if (st == DS_OK && store->redis)
        cached = ds__session_cache_get(store, tok.hashes, tok.seal_key, &sess);
    if (cached == DS_CACHE_REVOKED)
        st = ds__error_set(err, DS_ERR_NOT_FOUND,
                           "ds_session_validate: the session was revoked");
    if (st == DS_OK && cached == DS_CACHE_MISS) {
        ds_conn *conn;
        st = ds_pool_acquire(store->pool, &conn, err);
        if (st == DS_OK) {
            st = lookup_and_touch(store, conn, &tok, &sess, err);
            ds_pool_release(conn);
        }
        if (st == DS_OK && store->redis)
            ds__session_cache_put(store, tok.hashes, tok.seal_key, sess);
    }
    presented_done(&tok);
    if (st != DS_OK)
        return st;
    if (user_id)
        *user_id = sess->user_id;
    if (session)
        *session = sess;
    else
        ds_session_free(sess);
    return DS_OK;
}

/* ---- revoke ------------------------------------------------------------------- */

/* Runs one of the revoke statements (rows of user_id and token_hash, or for
 * revoke_user count and token_hash) and replaces each session's cache entry
 * with a tombstone; `extra_hash` (may be NULL) gets one too. *count
 * receives the rows the statement changed. */
static ds_status run_revoke(ds_session_store *store, int which,
                            const ds__bind *b, const uint8_t *extra_hash,
                            int64_t user_id, int64_t *count, ds_error *err) {
    *count = 0;
    PGresult *r;
    ds_status st = exec_primary(store, which, b, &r, err);
    if (st != DS_OK)
        return st;
    int n = PQntuples(r);
    bool per_user = which == STMT_REVOKE_USER;
    *count = per_user ? (int64_t)ds__get_be64(PQgetvalue(r, 0, 0)) : n;
    for (int i = 0; store->redis && st == DS_OK && i < n; i++) {
        if (PQgetisnull(r, i, 1) || PQgetlength(r, i, 1) != DS_SESSION_HASH_BYTES)
            continue;
        int64_t uid = per_user ? user_id : (int64_t)ds__get_be64(PQgetvalue(r, i, 0));
        const uint8_t *h = (const uint8_t *)PQgetvalue(r, i, 1);
        st = ds__session_cache_revoke(store, uid, h, err);
        if (st == DS_OK && extra_hash &&
            sodium_memcmp(h, extra_hash, DS_SESSION_HASH_BYTES) != 0)
            st = ds__session_cache_revoke(store, uid, extra_hash, err);
    }
    PQclear(r);
    return st;
}

DS_EXPORT ds_status ds_session_revoke(ds_session_store *store,
                                      const char *token, ds_error *err) {
    SESSION_ERR(err);
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    presented tok = {.n = 0};
    ds_status st = presented_hash(store, token, __func__, &tok, err);
    int64_t n = 0;
    if (st == DS_OK) {
        ds__bind b;
        ds__bind_init(&b);
        ds__bind_bytes(&b, tok.arr.buf, tok.arr.len); /* bytea[] */
        st = run_revoke(store, STMT_REVOKE_HASH, &b, tok.hashes, 0, &n, err);
        ds__bind_free(&b);
    }
    presented_done(&tok);
    if (st == DS_OK && n == 0)
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "ds_session_revoke: no such session");
    return st;
}

DS_EXPORT ds_status ds_session_revoke_id(ds_session_store *store,
                                         int64_t user_id, int64_t session_id,
                                         ds_error *err) {
    SESSION_ERR(err);
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, session_id > 0, "session_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, session_id);
    ds__bind_int64(&b, user_id);
    int64_t n;
    ds_status st = run_revoke(store, STMT_REVOKE_ID, &b, NULL, 0, &n, err);
    ds__bind_free(&b);
    if (st == DS_OK && n == 0)
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "ds_session_revoke_id: user %lld has no session %lld",
                             (long long)user_id, (long long)session_id);
    return st;
}

DS_EXPORT ds_status ds_session_revoke_user(ds_session_store *store,
                                           int64_t user_id, int64_t *revoked,
                                           ds_error *err) {
    SESSION_ERR(err);
    if (revoked)
        *revoked = 0;
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    int64_t n;
    ds_status st = run_revoke(store, STMT_REVOKE_USER, &b, NULL, user_id, &n,
                              err);
    ds__bind_free(&b);
    if (revoked)
        *revoked = n; /* also when only the cache update failed */
    return st;
}

/* ---- list and purge ----------------------------------------------------------- */

DS_EXPORT ds_status ds_session_list(ds_session_store *store, int64_t user_id,
                                    ds_session ***sessions, size_t *count,
                                    ds_error *err) {
    SESSION_ERR(err);
    if (sessions)
        *sessions = NULL;
    if (count)
        *count = 0;
    DS_CHECK_ARG(err, sessions != NULL && count != NULL,
                 "sessions and count are required");
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, user_id);
    PGresult *r;
    ds_status st = exec_primary(store, STMT_LIST, &b, &r, err);
    ds__bind_free(&b);
    if (st != DS_OK)
        return st;
    size_t n = (size_t)PQntuples(r);
    ds_session **list = ds__calloc(n ? n : 1, sizeof *list);
    for (size_t i = 0; list && i < n; i++) {
        list[i] = session_from_row(r, (int)i);
        if (!list[i]) {
            ds_session_list_free(list, i);
            list = NULL;
        }
    }
    PQclear(r);
    if (!list)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_session_list: out of memory");
    *sessions = list;
    *count = n;
    return DS_OK;
}

DS_EXPORT ds_status ds_session_purge_expired(ds_session_store *store,
                                             int64_t older_than_ms,
                                             int64_t *purged, ds_error *err) {
    SESSION_ERR(err);
    if (purged)
        *purged = 0;
    DS_CHECK_ARG(err, store != NULL, "store is NULL");
    DS_CHECK_ARG(err, older_than_ms >= 0 && older_than_ms <= YEARS_10_S * 1000,
                 "older_than_ms must be 0 to 10 years");
    ds__bind b;
    ds__bind_init(&b);
    ds__bind_int64(&b, older_than_ms * 1000);
    ds__bind_int32(&b, PURGE_BATCH);
    int64_t total = 0;
    for (;;) {
        PGresult *r;
        ds_status st = exec_primary(store, STMT_PURGE, &b, &r, err);
        if (st != DS_OK)
            return st;
        long n = strtol(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        total += n;
        if (purged)
            *purged = total;
        if (n < PURGE_BATCH)
            break;
    }
    ds__log(DS_LOG_INFO, "session", "purged %lld expired session(s)",
            (long long)total);
    return DS_OK;
}
