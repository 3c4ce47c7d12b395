/*
 * interop: the C side of a platform whose other parts are not in C (see
 * tests/interop/crosslang.sh, which runs it with a Node and a Python
 * program, and docs/formats.md for the formats they share).
 *
 *   DATABASE_URL=... REDIS_URL=... DS_TOKEN_KEYS=k1:<base64> \
 *       ./interop prepare HANDOFF.json   user, session, cache entry,
 *                                        message and event; the ids, the
 *                                        session token and the Redis keys
 *                                        go to HANDOFF.json (mode 0600)
 *       ./interop work                   processes one job of the queue
 *                                        "interop" (10 s at most), which
 *                                        must carry n = 2^53+1 and 0.7
 *       ./interop                        both, enqueueing the job itself
 *
 * Needs a migrated database (ds-migrate up) and Redis.
 */
#include <datastore/datastore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BIG_ID 9007199254740993LL /* 2^53 + 1: beyond a JavaScript number */

typedef struct app {
    ds_config *cfg;
    ds_pool *pool;
    ds_redis *redis;
    ds_crypto *crypto;
    ds_session_store *sessions;
    ds_cache *cache;
    ds_queue *queue;
} app;

static void app_close(app *a) {
    ds_queue_close(a->queue);
    ds_cache_close(a->cache);
    ds_session_store_close(a->sessions);
    ds_crypto_close(a->crypto);
    ds_redis_close(a->redis);
    ds_pool_close(a->pool);
    ds_config_free(a->cfg);
}

static ds_status app_open(app *a, ds_error *err) {
    memset(a, 0, sizeof *a);
    ds_status st = ds_config_from_env(&a->cfg, err);
    const char *keys = getenv("DS_TOKEN_KEYS");
    if (st == DS_OK && (!keys || !*keys)) {
        /* an ephemeral ring for this run: a reader elsewhere needs the
         * real one (DS_TOKEN_KEYS) to check session tokens */
        ds_crypto_secret *entry;
        st = ds_crypto_generate_key("ephemeral", &entry, err);
        if (st == DS_OK) {
            st = ds_config_set(a->cfg, "token_keys", ds_crypto_secret_data(entry), err);
            ds_crypto_secret_free(entry);
        }
    }
    if (st == DS_OK)
        st = ds_pool_open(a->cfg, &a->pool, err);
    if (st == DS_OK)
        st = ds_redis_open(a->cfg, &a->redis, err);
    if (st == DS_OK)
        st = ds_crypto_open(a->cfg, &a->crypto, err);
    if (st == DS_OK)
        st = ds_session_store_open(a->pool, a->crypto, a->redis, NULL,
                                   &a->sessions, err);
    ds_cache_options co = DS_CACHE_OPTIONS_INIT;
    ds_cache_options_init(&co);
    co.name = "interop";
    if (st == DS_OK)
        st = ds_cache_open(a->redis, &co, &a->cache, err);
    ds_queue_options qo = DS_QUEUE_OPTIONS_INIT;
    ds_queue_options_init(&qo);
    qo.name = "interop";
    if (st == DS_OK)
        st = ds_queue_open(a->redis, &qo, &a->queue, err);
    return st;
}

/* Writes the hand-off for the other languages; the file holds a session
 * token, so only its owner may read it. */
static int write_handoff(const char *path, json_t *handoff) {
    char *text = json_dumps(handoff, JSON_COMPACT);
    FILE *f = NULL;
    int fd = text ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    if (fd >= 0)
        f = fdopen(fd, "w");
    int ok = f && fputs(text, f) >= 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    else if (fd >= 0)
        close(fd);
    free(text);
    return ok ? 0 : -1;
}

static ds_status prepare(app *a, const char *handoff_path, ds_error *err) {
    /* a user of this run */
    char email[96];
    snprintf(email, sizeof email, "interop-%ld@example.com", (long)getpid());
    ds_user *user = NULL;
    ds_status st = ds_user_create(a->pool, email, NULL, &user, err);
    if (st != DS_OK)
        return st;
    int64_t uid = user->id;
    ds_user_free(user);

    /* a session token, as a login would hand it out */
    ds_crypto_secret *token = NULL;
    st = ds_session_create(a->sessions, uid, "interop/1.0", "192.0.2.10", &token,
                           NULL, err);
    if (st != DS_OK)
        return st;

    /* a cache entry with numbers other languages must read exactly */
    char key[64];
    snprintf(key, sizeof key, "user:%lld", (long long)uid);
    json_t *value = json_pack("{s:I, s:f, s:I}", "user_id", (json_int_t)uid,
                              "temp", 0.7, "big", (json_int_t)BIG_ID);
    ds_cache_entry_options entry = {sizeof(ds_cache_entry_options), NULL, 0, uid, 0};
    st = value ? ds_cache_set(a->cache, key, value, &entry, err) : DS_ERR_NOMEM;
    json_decref(value);

    /* a message and an event in PostgreSQL */
    ds_conversation *conv = NULL;
    if (st == DS_OK)
        st = ds_conversation_create(a->pool, uid, "interop", &conv, err);
    int64_t conv_id = conv ? conv->id : 0;
    ds_conversation_free(conv);
    json_t *meta = json_pack("{s:f, s:I, s:s}", "temp", 0.7, "big",
                             (json_int_t)BIG_ID, "model", "m-1");
    ds_message_new m = {sizeof(ds_message_new), DS_ROLE_ASSISTANT, "Grüße aus C", 0, meta, NULL};
    if (st == DS_OK)
        st = ds_message_append(a->pool, conv_id, &m, NULL, err);
    json_decref(meta);
    json_t *props = json_pack("{s:f, s:I}", "score", 0.1, "n", (json_int_t)BIG_ID);
    ds_event ev = {sizeof(ds_event), uid, "interop_prepared", props, 0};
    if (st == DS_OK)
        st = ds_event_record(a->pool, &ev, err);
    json_decref(props);

    if (st == DS_OK && handoff_path) {
        const char *prefix = getenv("DS_REDIS_PREFIX");
        if (!prefix)
            prefix = "ds:"; /* the default redis_prefix */
        char cache_key[160], stream[96];
        snprintf(cache_key, sizeof cache_key, "%sc:interop:v0:%s", prefix, key);
        snprintf(stream, sizeof stream, "%sq:interop:s", prefix);
        json_t *h = json_pack("{s:I, s:I, s:s, s:s, s:s}", "user_id",
                              (json_int_t)uid, "conversation_id",
                              (json_int_t)conv_id, "session_token",
                              ds_crypto_secret_data(token), "cache_key", cache_key,
                              "queue_stream", stream);
        if (!h || write_handoff(handoff_path, h) != 0) {
            fprintf(stderr, "interop: cannot write %s\n", handoff_path);
            st = DS_ERR_INTERNAL;
        }
        json_decref(h);
    }
    ds_crypto_secret_free(token);
    if (st == DS_OK)
        printf("interop: prepared user %lld, conversation %lld\n", (long long)uid,
               (long long)conv_id);
    return st;
}

/* One job, which must carry n = 2^53+1 (an integer) and temp = 0.7 (a
 * real): what a producer in any language writes as JSON text. */
static ds_status work(app *a, ds_error *err) {
    ds_queue_job *job = NULL;
    ds_status st = ds_queue_reserve(a->queue, 10000, &job, err);
    if (st != DS_OK)
        return st;
    if (!job) {
        fprintf(stderr, "interop: no job came within 10 s\n");
        return DS_ERR_TIMEOUT;
    }
    json_t *n = json_object_get(job->payload, "n");
    json_t *temp = json_object_get(job->payload, "temp");
    const char *from = json_string_value(json_object_get(job->payload, "from"));
    int exact = json_is_integer(n) && json_integer_value(n) == BIG_ID &&
                json_is_real(temp) && json_real_value(temp) == 0.7;
    printf("interop: job %s from %s: n=%lld temp=%.17g %s\n", job->id,
           from ? from : "?", (long long)json_integer_value(n),
           json_real_value(temp), exact ? "exact" : "NOT EXACT");
    st = ds_queue_ack(a->queue, job, err);
    ds_queue_job_free(job);
    if (st == DS_OK && !exact)
        st = DS_ERR_INTERNAL;
    return st;
}

int main(int argc, char **argv) {
    ds_error err = {0};
    app a;
    ds_status st = app_open(&a, &err);
    const char *mode = argc > 1 ? argv[1] : "";
    if (st == DS_OK && strcmp(mode, "prepare") == 0) {
        if (argc < 3) {
            fprintf(stderr, "usage: interop [prepare HANDOFF.json | work]\n");
            app_close(&a);
            return 2;
        }
        st = prepare(&a, argv[2], &err);
    } else if (st == DS_OK && strcmp(mode, "work") == 0) {
        st = work(&a, &err);
    } else if (st == DS_OK && !*mode) {
        st = prepare(&a, NULL, &err);
        json_t *p = json_pack("{s:s, s:I, s:f}", "from", "c", "n",
                              (json_int_t)BIG_ID, "temp", 0.7);
        if (st == DS_OK)
            st = p ? ds_queue_enqueue(a.queue, p, 0, NULL, &err) : DS_ERR_NOMEM;
        json_decref(p);
        if (st == DS_OK)
            st = work(&a, &err);
    } else if (st == DS_OK) {
        fprintf(stderr, "usage: interop [prepare HANDOFF.json | work]\n");
        app_close(&a);
        return 2;
    }
    if (st != DS_OK)
        fprintf(stderr, "interop: %s: %s\n", ds_status_str(st), err.message);
    app_close(&a);
    return st == DS_OK ? 0 : 1;
}
