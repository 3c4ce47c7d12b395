/*
 * bench_crypto: what the token encryptor and the session look-ups cost.
 *
 *   encrypt_decrypt_200B  ds_crypto_encrypt + ds_crypto_decrypt of a 200-byte
 *                         token vs the same XChaCha20-Poly1305 calls made
 *                         directly on libsodium (fresh nonce, the same amount
 *                         of associated data, heap buffers wiped on free);
 *                         target ratio >= 0.8
 *   session_validate_pg   ds_session_validate through PostgreSQL vs a raw
 *                         libpq look-up doing the same work (decode the token,
 *                         keyed BLAKE2b, prepared SELECT by hash on the primary)
 *   session_validate_redis
 *                         ds_session_validate with Redis in front vs raw
 *                         hiredis doing the same work (decode, keyed hash,
 *                         GET, JSON decode); skipped without REDIS_URL
 *
 * Needs DATABASE_URL. Uses the platform schema when the database has it, or
 * else a scratch database with the sql/ migrations applied (dropped at the
 * end).
 */
#include <datastore/datastore.h>
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define PROGRAM "bench_crypto"
#define TOKEN_BYTES 200
#define SESSIONS 400
#define FILLER_SESSIONS 20000

static _Noreturn void die(const char *what, const char *msg) {
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    exit(1);
}

/* ---- 1. encrypt + decrypt ---------------------------------------------- */

typedef struct seal_ctx {
    ds_crypto *crypto;
    unsigned char key[32]; /* for the raw side */
    unsigned char token[TOKEN_BYTES];
    unsigned char ad[256];
    size_t ad_len;
} seal_ctx;

static const ds_crypto_context place = {sizeof(ds_crypto_context), "service_connections", "access_token",
                                        123456, "google/109876543210987654321"};

static bool op_ours_seal(void *p) {
    seal_ctx *c = p;
    uint8_t *env;
    size_t len;
    ds_crypto_secret *out;
    if (ds_crypto_encrypt(c->crypto, &place, c->token, TOKEN_BYTES, &env, &len,
                          NULL) != DS_OK)
        return false;
    ds_status st = ds_crypto_decrypt(c->crypto, &place, env, len, &out, NULL);
    ds_free(env);
    bool ok = st == DS_OK && ds_crypto_secret_len(out) == TOKEN_BYTES;
    ds_crypto_secret_free(out);
    return ok;
}

/* The hand-written equivalent on libsodium alone. */
static bool op_raw_seal(void *p) {
    seal_ctx *c = p;
    size_t clen = 24 + TOKEN_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    unsigned char *env = malloc(clen);
    unsigned char *out = malloc(TOKEN_BYTES + 1);
    if (!env || !out)
        return false;
    randombytes_buf(env, 24);
    unsigned long long n;
    crypto_aead_xchacha20poly1305_ietf_encrypt(env + 24, &n, c->token, TOKEN_BYTES,
                                               c->ad, c->ad_len, NULL, env, c->key);
    unsigned long long m;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(out, &m, NULL, env + 24, n,
                                                        c->ad, c->ad_len, env, c->key);
    sodium_memzero(out, TOKEN_BYTES + 1);
    free(out);
    free(env);
    return rc == 0 && m == TOKEN_BYTES;
}

/* ---- database set-up -------------------------------------------------------- */

static char *url_with_db(const char *url, const char *db) {
    char *out = malloc(strlen(url) + strlen(db) + 16);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        const char *hostpart = strstr(url, "://") + 3;
        const char *slash = strchr(hostpart, '/');
        const char *q = strchr(hostpart, '?');
        size_t head = slash ? (size_t)(slash - url) : q ? (size_t)(q - url) : strlen(url);
        sprintf(out, "%.*s/%s%s", (int)head, url, db, q ? q : "");
    } else {
        sprintf(out, "%s dbname=%s", url, db); /* the later keyword wins */
    }
    return out;
}

static void exec_or_die(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die("sql", PQerrorMessage(c));
    PQclear(r);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void apply_schema(const char *url) {
    const char *root = getenv("DS_PROJECT_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sql", root && *root ? root : ".");
    DIR *d = opendir(dir);
    if (!d)
        die("schema", "no platform schema and no sql/ directory (run from the project root)");
    char *names[128];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 128) {
        size_t len = strlen(e->d_name);
        if (len > 7 && strcmp(e->d_name + len - 7, ".up.sql") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f)
            die("schema", path);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        char *sql = malloc((size_t)size + 1);
        if (fread(sql, 1, (size_t)size, f) != (size_t)size)
            die("schema", path);
        sql[size] = '\0';
        fclose(f);
        exec_or_die(c, sql);
        free(sql);
        free(names[i]);
    }
    PQfinish(c);
}

/* The database to use: DATABASE_URL when it has the schema, else a scratch
 * one (*scratch receives its name for the drop). */
static char *bench_db(const char *url, char *scratch, size_t n) {
    scratch[0] = '\0';
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT to_regclass('auth_sessions') IS NOT NULL");
    bool has = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (has) {
        PQfinish(c);
        return strdup(url);
    }
    snprintf(scratch, n, "bench_crypto_%d", (int)getpid());
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", scratch);
    exec_or_die(c, sql);
    PQfinish(c);
    char *db_url = url_with_db(url, scratch);
    apply_schema(db_url);
    return db_url;
}

/* ---- 2/3. session validation ----------------------------------------------- */

typedef struct tokens {
    char (*text)[DS_SESSION_TOKEN_LEN + 1];
    int n;
} tokens;

typedef struct ours_ctx {
    ds_session_store *store;
    const tokens *t;
    int next;
} ours_ctx;

static bool op_ours_validate(void *p) {
    ours_ctx *c = p;
    int64_t uid;
    const char *tok = c->t->text[c->next++ % c->t->n];
    ds_error err;
    if (ds_session_validate(c->store, tok, &uid, NULL, &err) != DS_OK) {
        fprintf(stderr, "validate: %s\n", err.message);
        return false;
    }
    return uid > 0;
}

/* What the raw sides share: token -> 32 bytes -> keyed BLAKE2b. */
static bool raw_hash(const unsigned char subkey[32], const char *tok,
                     unsigned char hash[32]) {
    unsigned char raw[32];
    size_t len;
    const char *end;
    if (sodium_base642bin(raw, sizeof raw, tok, strlen(tok), NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len != 32)
        return false;
    crypto_generichash(hash, 32, raw, sizeof raw, subkey, 32);
    sodium_memzero(raw, sizeof raw);
    return true;
}

typedef struct raw_pg_ctx {
    PGconn *pg;
    const unsigned char *subkey;
    const tokens *t;
    int next;
} raw_pg_ctx;

static bool op_raw_pg_validate(void *p) {
    raw_pg_ctx *c = p;
    unsigned char hash[32];
    if (!raw_hash(c->subkey, c->t->text[c->next++ % c->t->n], hash))
        return false;
    const char *values[] = {(const char *)hash};
    int lengths[] = {32}, formats[] = {1};
    PGresult *r = PQexecPrepared(c->pg, "lookup", 1, values, lengths, formats, 1);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    return ok;
}

typedef struct raw_redis_ctx {
    redisContext *rc;
    const unsigned char *subkey;
    const char *prefix;
    const tokens *t;
    int next;
} raw_redis_ctx;

static bool op_raw_redis_validate(void *p) {
    raw_redis_ctx *c = p;
    unsigned char hash[32];
    if (!raw_hash(c->subkey, c->t->text[c->next++ % c->t->n], hash))
        return false;
    char key[256], hex[65];
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    snprintf(key, sizeof key, "%ssess:%s", c->prefix, hex);
    redisReply *r = redisCommand(c->rc, "GET %s", key);
    bool ok = r && r->type == REDIS_REPLY_STRING;
    if (ok) {
        json_t *j = json_loadb(r->str, r->len, 0, NULL);
        ok = j && json_integer_value(json_object_get(j, "uid")) > 0;
        json_decref(j);
    }
    freeReplyObject(r);
    return ok;
}

/* redis://[user]:password@host:port/db, without TLS (the raw side). */
static redisContext *raw_redis_connect(const char *url) {
    char host[256] = "127.0.0.1", pw[256] = "";
    int port = 6379, db = 0;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon)
            snprintf(pw, sizeof pw, "%.*s", (int)(at - colon - 1), colon + 1);
        p = at + 1;
    }
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    snprintf(host, sizeof host, "%.*s", (int)hl, p);
    if (colon)
        port = atoi(colon + 1);
    if (slash)
        db = atoi(slash + 1);
    redisContext *rc = redisConnect(host, port);
    if (!rc || rc->err)
        die("raw redis connect", rc ? rc->errstr : "out of memory");
    if (*pw) {
        redisReply *r = redisCommand(rc, "AUTH %s", pw);
        if (!r || r->type == REDIS_REPLY_ERROR)
            die("raw redis", "AUTH failed");
        freeReplyObject(r);
    }
    redisReply *r = redisCommand(rc, "SELECT %d", db);
    freeReplyObject(r);
    return rc;
}

static ds_pool *open_pool(const char *url, int size) {
    ds_config *cfg;
    ds_pool *pool;
    ds_error err = {0};
    if (ds_config_new(&cfg, &err) != DS_OK ||
        ds_config_set(cfg, "database_url", url, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_min", size, &err) != DS_OK ||
        ds_config_set_int(cfg, "pool_max", size, &err) != DS_OK ||
        ds_pool_open(cfg, &pool, &err) != DS_OK)
        die("pool", err.message);
    ds_config_free(cfg);
    return pool;
}

static void run_validate_case(const char *name, int threads, ds_session_store *store,
                              const tokens *t, bench_op_fn raw_fn, void **raw_ctx,
                              int rounds, double side) {
    ours_ctx oc[8];
    void *octx[8];
    for (int i = 0; i < threads; i++) {
        oc[i] = (ours_ctx){store, t, i * 97};
        octx[i] = &oc[i];
    }
    bench_result ours, base;
    bench_ab(rounds, side, threads, op_ours_validate, octx, threads, raw_fn,
             raw_ctx, &ours, &base);
    if (ours.failed || base.failed)
        die(name, "an operation failed");
    char extra[64];
    snprintf(extra, sizeof extra, "sessions=%d table_rows=%d", t->n,
             t->n + FILLER_SESSIONS);
    bench_print(PROGRAM, name, threads, &ours, &base, extra);
}

int main(void) {
    const char *url = bench_env("DATABASE_URL");
    const char *redis_url = getenv("REDIS_URL");
    double secs = bench_seconds(8);
    int rounds = 5;
    double side = secs / (2.0 * rounds);
    ds_error err = {0};
    if (ds_init(&err) != DS_OK)
        die("init", err.message);

    /* one key, known to both sides */
    unsigned char key[32];
    randombytes_buf(key, sizeof key);
    char spec[128] = "bench:";
    sodium_bin2base64(spec + 6, sizeof spec - 6, key, sizeof key,
                      sodium_base64_VARIANT_ORIGINAL);
    ds_crypto *crypto;
    if (ds_crypto_open_keys(spec, &crypto, &err) != DS_OK)
        die("crypto", err.message);
    sodium_memzero(spec, sizeof spec);

    /* 1. encrypt + decrypt of a 200-byte token */
    {
        seal_ctx sc = {.crypto = crypto};
        memcpy(sc.key, key, sizeof key);
        randombytes_buf(sc.token, sizeof sc.token);
        /* the raw side authenticates as many bytes as our envelope's AD */
        sc.ad_len = 2 + 5 /* "bench" */ + 4 + strlen(place.table) + 4 +
                    strlen(place.field) + 8 + 1 + 4 + strlen(place.scope);
        randombytes_buf(sc.ad, sc.ad_len);
        void *ctx[2] = {&sc, &sc};
        for (int threads = 1; threads <= 2; threads++) {
            bench_result ours, base;
            bench_ab(rounds, side, threads, op_ours_seal, ctx, threads, op_raw_seal,
                     ctx, &ours, &base);
            if (ours.failed || base.failed)
                die("encrypt_decrypt", "an operation failed");
            bench_print(PROGRAM, "encrypt_decrypt_200B", threads, &ours, &base,
                        "bytes=200");
        }
    }

    /* sessions for the look-ups */
    char scratch[64];
    char *db_url = bench_db(url, scratch, sizeof scratch);
    ds_pool *pool = open_pool(db_url, 4);
    ds_redis *redis = NULL;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "bench:crypto:%d:", (int)getpid());
    if (redis_url && *redis_url) {
        ds_config *cfg;
        if (ds_config_new(&cfg, &err) != DS_OK ||
            ds_config_set(cfg, "redis_url", redis_url, &err) != DS_OK ||
            ds_config_set(cfg, "redis_prefix", prefix, &err) != DS_OK ||
            ds_config_set_int(cfg, "redis_pool_size", 4, &err) != DS_OK ||
            ds_redis_open(cfg, &redis, &err) != DS_OK)
            die("redis", err.message);
        ds_config_free(cfg);
    }
    ds_session_store *pg_store, *redis_store = NULL;
    if (ds_session_store_open(pool, crypto, NULL, NULL, &pg_store, &err) != DS_OK)
        die("store", err.message);
    if (redis && ds_session_store_open(pool, crypto, redis, NULL, &redis_store, &err) != DS_OK)
        die("store", err.message);

    char email[96];
    snprintf(email, sizeof email,
             "INSERT INTO users (email) VALUES ('bench-crypto-%d@example.com') "
             "RETURNING id", (int)getpid());
    ds_sql_result *res;
    int64_t uid;
    if (ds_sql_exec_pool(pool, email, NULL, 0, &res, &err) != DS_OK ||
        ds_sql_result_int64(res, 0, 0, &uid, &err) != DS_OK)
        die("user", err.message);
    ds_sql_result_free(res);
    /* other users' sessions around ours: a table of realistic size */
    {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "INSERT INTO auth_sessions (user_id, token_hash, expires_at) "
                 "SELECT %lld, decode(md5(random()::text) || md5(random()::text), 'hex'), "
                 "now() + interval '1 day' FROM generate_series(1, %d)",
                 (long long)uid, FILLER_SESSIONS);
        if (ds_sql_exec_pool(pool, sql, NULL, 0, NULL, &err) != DS_OK ||
            ds_sql_exec_pool(pool, "ANALYZE auth_sessions", NULL, 0, NULL, &err) != DS_OK)
            die("filler", err.message);
    }
    tokens t = {calloc(SESSIONS, sizeof *t.text), SESSIONS};
    for (int i = 0; i < SESSIONS; i++) {
        ds_crypto_secret *tok;
        if (ds_session_create(pg_store, uid, "bench", "127.0.0.1", &tok, NULL, &err) != DS_OK)
            die("create", err.message);
        memcpy(t.text[i], ds_crypto_secret_data(tok), DS_SESSION_TOKEN_LEN + 1);
        ds_crypto_secret_free(tok);
    }
    unsigned char subkey[32];
    crypto_kdf_derive_from_key(subkey, sizeof subkey, 1, "dssessn1", key);

    /* 2. through PostgreSQL */
    for (int threads = 1; threads <= 4; threads += 3) {
        raw_pg_ctx rc[4];
        void *rctx[4];
        for (int i = 0; i < threads; i++) {
            rc[i] = (raw_pg_ctx){PQconnectdb(db_url), subkey, &t, i * 97};
            if (PQstatus(rc[i].pg) != CONNECTION_OK)
                die("raw connect", PQerrorMessage(rc[i].pg));
            PQclear(PQprepare(rc[i].pg, "lookup",
                              "SELECT id, user_id FROM auth_sessions WHERE token_hash = $1 "
                              "AND NOT revoked AND expires_at > now()",
                              1, (const Oid[]){17}));
            rctx[i] = &rc[i];
        }
        run_validate_case("session_validate_pg", threads, pg_store, &t,
                          op_raw_pg_validate, rctx, rounds, side);
        for (int i = 0; i < threads; i++)
            PQfinish(rc[i].pg);
    }

    /* 3. through Redis (warm: every session cached once) */
    if (redis_store) {
        for (int i = 0; i < SESSIONS; i++)
            if (ds_session_validate(redis_store, t.text[i], NULL, NULL, &err) != DS_OK)
                die("warm", err.message);
        for (int threads = 1; threads <= 4; threads += 3) {
            raw_redis_ctx rc[4];
            void *rctx[4];
            for (int i = 0; i < threads; i++) {
                rc[i] = (raw_redis_ctx){raw_redis_connect(redis_url), subkey, prefix,
                                        &t, i * 97};
                rctx[i] = &rc[i];
            }
            run_validate_case("session_validate_redis", threads, redis_store, &t,
                              op_raw_redis_validate, rctx, rounds, side);
            for (int i = 0; i < threads; i++)
                redisFree(rc[i].rc);
        }
    } else {
        fprintf(stderr, "%s: REDIS_URL not set: session_validate_redis skipped\n",
                PROGRAM);
    }

    sodium_memzero(key, sizeof key);
    sodium_memzero(subkey, sizeof subkey);
    if (redis) {
        int64_t removed;
        if (ds_redis_erase_user(redis, uid, &removed, &err) != DS_OK)
            fprintf(stderr, "%s: clean-up: %s\n", PROGRAM, err.message);
    }
    ds_sql_param p = ds_sql_param_int64(uid);
    if (ds_sql_exec_pool(pool, "DELETE FROM users WHERE id = $1", &p, 1, NULL, &err) != DS_OK)
        fprintf(stderr, "%s: clean-up: %s\n", PROGRAM, err.message);
    ds_session_store_close(redis_store);
    ds_session_store_close(pg_store);
    ds_redis_close(redis);
    ds_pool_close(pool);
    ds_crypto_close(crypto);
    if (scratch[0]) {
        PGconn *c = PQconnectdb(url);
        char sql[128];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", scratch);
        exec_or_die(c, sql);
        PQfinish(c);
    }
    free(db_url);
    free(t.text);
    return 0;
}
