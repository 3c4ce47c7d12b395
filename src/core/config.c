/* Table-driven configuration: one row per setting gives its names, type,
 * range and default, so the environment and ds_config_set() share one
 * parser and every error names the environment variable. */
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "core/redis_url.h"

typedef enum {
    KIND_INT,
    KIND_ENUM,          /* one of `names`, stored as its index */
    KIND_PG_URL,        /* secret */
    KIND_PG_URL_LIST,   /* secret */
    KIND_REDIS_URL,     /* secret */
    KIND_KEYS,          /* secret */
    KIND_TEXT,
} setting_kind;

typedef struct setting {
    const char *name;
    const char *env;
    setting_kind kind;
    size_t offset;
    int64_t min, max, def;
    const char *def_text;
    const char *const *names; /* KIND_ENUM: NULL-terminated, index = value */
} setting;

#define INT_SETTING(n, e, field, lo, hi, d)                                    \
    {n, e, KIND_INT, offsetof(struct ds_config, field), lo, hi, d, NULL, NULL}
#define STR_SETTING(n, e, kind, field, d)                                      \
    {n, e, kind, offsetof(struct ds_config, field), 0, 0, 0, d, NULL}
#define ENUM_SETTING(n, e, field, d, names)                                    \
    {n, e, KIND_ENUM, offsetof(struct ds_config, field), 0, 0, d, NULL, names}

/* Indexed by ds_stmt_mode and ds_vector_backend (datastore/memory.h). */
static const char *const stmt_mode_names[] = {"prepared", "pooler", NULL};
static const char *const vector_backend_names[] = {"auto", "pgvector",
                                                   "fallback", NULL};

static const setting settings[] = {
    STR_SETTING("database_url", "DATABASE_URL", KIND_PG_URL, database_url, NULL),
    STR_SETTING("database_replica_urls", "DATABASE_REPLICA_URLS",
                KIND_PG_URL_LIST, database_replica_urls, NULL),
    STR_SETTING("redis_url", "REDIS_URL", KIND_REDIS_URL, redis_url, NULL),
    INT_SETTING("pool_min", "DS_POOL_MIN", pool_min, 0, 10000, 1),
    INT_SETTING("pool_max", "DS_POOL_MAX", pool_max, 1, 10000, 10),
    INT_SETTING("acquire_timeout_ms", "DS_ACQUIRE_TIMEOUT_MS",
                acquire_timeout_ms, 0, 3600000, 5000),
    /* How long the oldest waiter may be overtaken (src/pool/pool.c;
     * docs/pool.md has the measurements behind the default). */
    INT_SETTING("pool_overtake_ms", "DS_POOL_OVERTAKE_MS", pool_overtake_ms,
                0, 60000, 20),
    INT_SETTING("connect_timeout_ms", "DS_CONNECT_TIMEOUT_MS",
                connect_timeout_ms, 1, 3600000, 5000),
    INT_SETTING("statement_timeout_ms", "DS_STATEMENT_TIMEOUT_MS",
                statement_timeout_ms, 0, INT_MAX, 0),
    INT_SETTING("max_lifetime_ms", "DS_POOL_MAX_LIFETIME_MS", max_lifetime_ms,
                0, INT64_C(31536000000), 1800000),
    INT_SETTING("idle_timeout_ms", "DS_POOL_IDLE_TIMEOUT_MS", idle_timeout_ms,
                0, INT64_C(31536000000), 600000),
    ENUM_SETTING("statement_mode", "DS_STATEMENT_MODE", statement_mode,
                 DS_STMT_PREPARED, stmt_mode_names),
    INT_SETTING("tx_max_retries", "DS_TX_MAX_RETRIES", tx_max_retries, 0, 100,
                5),
    INT_SETTING("replica_retry_ms", "DS_REPLICA_RETRY_MS", replica_retry_ms, 0,
                3600000, 5000),
    STR_SETTING("application_name", "DS_APPLICATION_NAME", KIND_TEXT,
                application_name, "libdatastore"),
    STR_SETTING("token_keys", "DS_TOKEN_KEYS", KIND_KEYS, token_keys, NULL),
    INT_SETTING("embedding_dim", "DS_EMBEDDING_DIM", embedding_dim, 1, 16000,
                384),
    ENUM_SETTING("vector_backend", "DS_VECTOR_BACKEND", vector_backend,
                 0 /* auto */, vector_backend_names),
    INT_SETTING("hnsw_ef_search", "DS_HNSW_EF_SEARCH", hnsw_ef_search, 1, 1000,
                200),
    INT_SETTING("vector_exact_max_rows", "DS_VECTOR_EXACT_MAX_ROWS",
                vector_exact_max_rows, 0, INT32_MAX, 2000),
    /* Where a user's search starts with the coarse codes (src/memory/codes.c;
     * docs/memory.md "Where each stage starts" has the measurements). */
    INT_SETTING("memory_code_crossover", "DS_MEMORY_CODE_CROSSOVER",
                memory_code_crossover, 0, 100, 4),
    INT_SETTING("migrate_lock_timeout_ms", "DS_MIGRATE_LOCK_TIMEOUT_MS",
                migrate_lock_timeout_ms, 0, 3600000, 5000),
    STR_SETTING("redis_prefix", "DS_REDIS_PREFIX", KIND_TEXT, redis_prefix,
                "ds:"),
    INT_SETTING("redis_pool_size", "DS_REDIS_POOL_SIZE", redis_pool_size, 1,
                1024, 4),
    INT_SETTING("redis_connect_timeout_ms", "DS_REDIS_CONNECT_TIMEOUT_MS",
                redis_connect_timeout_ms, 1, 3600000, 2000),
    INT_SETTING("redis_command_timeout_ms", "DS_REDIS_COMMAND_TIMEOUT_MS",
                redis_command_timeout_ms, 1, 3600000, 2000),
    STR_SETTING("redis_tls_ca", "DS_REDIS_TLS_CA", KIND_TEXT, redis_tls_ca,
                NULL),
    INT_SETTING("redis_retry_ms", "DS_REDIS_RETRY_MS", redis_retry_ms, 0,
                3600000, 1000),
    /* Repository input limits (the schema's CHECKs are the upper bounds). */
    INT_SETTING("repo_max_message_bytes", "DS_REPO_MAX_MESSAGE_BYTES",
                repo_max_message_bytes, 1, 1000000, 1000000),
    INT_SETTING("repo_max_json_bytes", "DS_REPO_MAX_JSON_BYTES",
                repo_max_json_bytes, 2, INT64_C(67108864), 1048576),
    INT_SETTING("repo_max_page", "DS_REPO_MAX_PAGE", repo_max_page, 1, 100000,
                1000),
    INT_SETTING("repo_max_batch", "DS_REPO_MAX_BATCH", repo_max_batch, 1,
                1000000, 10000),
    /* How stale a conversation's activity time may get before an append
     * moves it: each move is a non-HOT update of an indexed row. */
    INT_SETTING("repo_activity_interval_ms", "DS_REPO_ACTIVITY_INTERVAL_MS",
                repo_activity_interval_ms, 0, 86400000, 30000),
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static bool kind_is_number(setting_kind k) {
    return k == KIND_INT || k == KIND_ENUM;
}

static bool kind_is_secret(setting_kind k) {
    return k == KIND_PG_URL || k == KIND_PG_URL_LIST || k == KIND_REDIS_URL ||
           k == KIND_KEYS;
}

static const setting *find_setting(const char *name) {
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (ds__strcasecmp(name, settings[i].name) == 0 ||
            ds__strcasecmp(name, settings[i].env) == 0)
            return &settings[i];
    return NULL;
}

static int64_t *int_field(ds_config *cfg, const setting *s) {
    return (int64_t *)(void *)((char *)cfg + s->offset);
}
static char **str_field(ds_config *cfg, const setting *s) {
    return (char **)(void *)((char *)cfg + s->offset);
}

static void free_text(const setting *s, char *v) {
    if (kind_is_secret(s->kind))
        ds__secret_free(v);
    else
        ds__free(v);
}

static ds_status store_text(ds_config *cfg, const setting *s,
                            const char *value, ds_error *err) {
    char *copy = NULL;
    if (value) {
        copy = kind_is_secret(s->kind) ? ds__secret_strdup(value)
                                       : ds__strdup(value);
        if (!copy)
            return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory",
                                 s->env);
    }
    char **field = str_field(cfg, s);
    free_text(s, *field);
    *field = copy;
    return DS_OK;
}

char *ds__conninfo_password(const char *conninfo) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (msg)
        PQfreemem(msg);
    if (!opts)
        return NULL; /* config only stores values that parse */
    char *pw = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
            pw = ds__secret_strdup(o->val);
        if (o->val && o->dispchar && o->dispchar[0] == '*')
            ds__wipe(o->val, strlen(o->val)); /* libpq does not wipe */
    }
    PQconninfoFree(opts);
    return pw;
}

/* "5432" or, for multi-host URLs, "5432,5433" (an empty entry means the
 * default port). */
static bool ports_valid(const char *list) {
    for (const char *p = list;;) {
        const char *end = p + strcspn(p, ",");
        if (end > p) {
            long v = 0;
            for (const char *c = p; c < end; c++) {
                if (*c < '0' || *c > '9' || v > 65535)
                    return false;
                v = v * 10 + (*c - '0');
            }
            if (v < 1 || v > 65535)
                return false;
        }
        if (!*end)
            return true;
        p = end + 1;
    }
}

static ds_status validate_pg_url(const setting *s, const char *value,
                                 ds_error *err) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(value, &msg);
    if (opts) {
        /* libpq checks ports only when connecting; say so now */
        bool ports_ok = true;
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, "port") == 0 && o->val)
                ports_ok = ports_valid(o->val);
            if (o->val && o->dispchar && o->dispchar[0] == '*')
                ds__wipe(o->val, strlen(o->val)); /* libpq does not wipe */
        }
        PQconninfoFree(opts);
        if (ports_ok)
            return DS_OK;
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: port must be a number from 1 to 65535",
                             s->env);
    }
    /* libpq's reason quotes the offending part of the input, which may be
     * the password (a whole URI, a percent-escape), in any language: keep
     * only the plain words before the first quote or other punctuation. */
    char reason[128] = "";
    if (msg) {
        size_t n = 0;
        while (n + 1 < sizeof reason &&
               ((msg[n] >= 'a' && msg[n] <= 'z') ||
                (msg[n] >= 'A' && msg[n] <= 'Z') ||
                (msg[n] >= '0' && msg[n] <= '9') || msg[n] == ' ' ||
                msg[n] == '-' || msg[n] == '/'))
            n++;
        while (n > 0 && msg[n - 1] == ' ')
            n--;
        memcpy(reason, msg, n);
        reason[n] = '\0';
        ds__wipe(msg, strlen(msg));
        PQfreemem(msg);
    }
    ds__error_set(err, DS_ERR_CONFIG,
                  "%s: not a valid PostgreSQL URL or connection string (%s)",
                  s->env, reason[0] ? reason : "unparsable");
    return DS_ERR_CONFIG;
}

static ds_status validate_text(const setting *s, const char *value,
                               ds_error *err) {
    switch (s->kind) {
    case KIND_PG_URL:
        return validate_pg_url(s, value, err);
    case KIND_PG_URL_LIST: {
        char **urls;
        size_t n;
        ds_status st = ds__config_split_urls(value, &urls, &n, err);
        if (st != DS_OK)
            return st;
        for (size_t i = 0; i < n && st == DS_OK; i++)
            st = validate_pg_url(s, urls[i], err);
        ds__config_free_urls(urls);
        return st;
    }
    case KIND_REDIS_URL:
        /* the Redis handle's own parser: user, password, host, port, db */
        return ds__redis_url_parse(value, s->env, NULL, err);
    case KIND_KEYS:
        return ds__keyspec_parse(value, s->env, NULL, NULL, err);
    case KIND_TEXT:
        if (strlen(value) > 255)
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: longer than 255 bytes", s->env);
        for (const unsigned char *c = (const unsigned char *)value; *c; c++)
            if (*c < 0x20 || *c == 0x7f)
                return ds__error_set(err, DS_ERR_CONFIG,
                                     "%s: control characters are not allowed",
                                     s->env);
        return DS_OK;
    default:
        return DS_OK;
    }
}

static ds_status set_int(ds_config *cfg, const setting *s, int64_t v,
                         ds_error *err) {
    if (v < s->min || v > s->max)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: %lld is out of range (%lld to %lld)", s->env,
                             (long long)v, (long long)s->min,
                             (long long)s->max);
    *int_field(cfg, s) = v;
    return DS_OK;
}

static ds_status apply(ds_config *cfg, const setting *s, const char *value,
                       ds_error *err) {
    if (value && !*value)
        value = NULL;
    switch (s->kind) {
    case KIND_INT: {
        if (!value) {
            *int_field(cfg, s) = s->def;
            return DS_OK;
        }
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0')
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: expected an integer from %lld to %lld",
                                 s->env, (long long)s->min, (long long)s->max);
        return set_int(cfg, s, v, err);
    }
    case KIND_ENUM: {
        if (!value) {
            *int_field(cfg, s) = s->def;
            return DS_OK;
        }
        char expected[128] = "";
        size_t used = 0;
        for (int64_t i = 0; s->names[i]; i++) {
            if (ds__strcasecmp(value, s->names[i]) == 0) {
                *int_field(cfg, s) = i;
                return DS_OK;
            }
            int n = snprintf(expected + used, sizeof expected - used, "%s'%s'",
                             i == 0 ? "" : s->names[i + 1] ? ", " : " or ",
                             s->names[i]);
            if (n > 0 && (size_t)n < sizeof expected - used)
                used += (size_t)n;
        }
        return ds__error_set(err, DS_ERR_CONFIG, "%s: expected %s", s->env,
                             expected);
    }
    default:
        if (!value)
            return store_text(cfg, s, s->def_text, err);
        ds_status st = validate_text(s, value, err);
        return st != DS_OK ? st : store_text(cfg, s, value, err);
    }
}

static void free_fields(ds_config *cfg) {
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (!kind_is_number(settings[i].kind)) {
            free_text(&settings[i], *str_field(cfg, &settings[i]));
            *str_field(cfg, &settings[i]) = NULL;
        }
}

DS_EXPORT ds_status ds_config_new(ds_config **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    ds_status st = ds__ensure_init(err);
    if (st != DS_OK)
        return st;
    ds_config *cfg = ds__calloc(1, sizeof *cfg);
    if (!cfg)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_config_new: out of memory");
    for (size_t i = 0; i < N_SETTINGS && st == DS_OK; i++)
        st = apply(cfg, &settings[i], NULL, err);
    if (st != DS_OK) {
        ds_config_free(cfg);
        return st;
    }
    *out = cfg;
    return DS_OK;
}

DS_EXPORT ds_status ds_config_load_env(ds_config *cfg, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (!v || !*v)
            continue;
        ds_status st = apply(cfg, &settings[i], v, err);
        if (st != DS_OK)
            return st;
    }
    return DS_OK;
}

DS_EXPORT ds_status ds_config_from_env(ds_config **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    ds_status st = ds_config_new(out, err);
    if (st != DS_OK)
        return st;
    st = ds_config_load_env(*out, err);
    if (st != DS_OK) {
        ds_config_free(*out);
        *out = NULL;
    }
    return st;
}

static ds_status lookup(const char *fn, const char *name, const setting **s,
                        ds_error *err) {
    *s = find_setting(name);
    if (!*s)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: unknown setting '%.64s'",
                             fn, name);
    return DS_OK;
}

DS_EXPORT ds_status ds_config_set(ds_config *cfg, const char *name,
                                  const char *value, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    DS_CHECK_ARG(err, name, "name is NULL");
    const setting *s;
    ds_status st = lookup(__func__, name, &s, err);
    return st != DS_OK ? st : apply(cfg, s, value, err);
}

DS_EXPORT ds_status ds_config_set_int(ds_config *cfg, const char *name,
                                      int64_t value, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    DS_CHECK_ARG(err, name, "name is NULL");
    const setting *s;
    ds_status st = lookup(__func__, name, &s, err);
    if (st != DS_OK)
        return st;
    if (s->kind == KIND_ENUM) {
        int64_t count = 0;
        while (s->names[count])
            count++;
        if (value < 0 || value >= count)
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: %lld is out of range (0 to %lld)", s->env,
                                 (long long)value, (long long)count - 1);
        *int_field(cfg, s) = value;
        return DS_OK;
    }
    if (s->kind != KIND_INT)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: not an integer setting",
                             s->env);
    return set_int(cfg, s, value, err);
}

DS_EXPORT ds_status ds_config_get_int(const ds_config *cfg, const char *name,
                                      int64_t *out, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    DS_CHECK_ARG(err, name, "name is NULL");
    DS_CHECK_ARG(err, out, "out is NULL");
    const setting *s;
    ds_status st = lookup(__func__, name, &s, err);
    if (st != DS_OK)
        return st;
    if (!kind_is_number(s->kind))
        return ds__error_set(err, DS_ERR_CONFIG, "%s: not an integer setting",
                             s->env);
    *out = *int_field((ds_config *)cfg, s);
    return DS_OK;
}

DS_EXPORT ds_status ds_config_get_str(const ds_config *cfg, const char *name,
                                      char *buf, size_t buflen, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    DS_CHECK_ARG(err, name, "name is NULL");
    DS_CHECK_ARG(err, buf && buflen > 0, "buf is NULL or empty");
    const setting *s;
    ds_status st = lookup(__func__, name, &s, err);
    if (st != DS_OK)
        return st;
    if (s->kind == KIND_INT)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: not a text setting",
                             s->env);
    if (s->kind == KIND_KEYS)
        return ds__error_set(err, DS_ERR_INVALID, "%s: keys cannot be read back",
                             s->env);
    if (s->kind == KIND_ENUM) {
        const char *v = s->names[*int_field((ds_config *)cfg, s)];
        if (strlen(v) >= buflen)
            return ds__error_set(err, DS_ERR_INVALID, "%s: buffer too small",
                                 s->env);
        strcpy(buf, v);
        return DS_OK;
    }
    const char *v = *str_field((ds_config *)cfg, s);
    if (!v)
        v = "";
    char *shown = NULL;
    if (*v && s->kind == KIND_PG_URL)
        shown = ds__redact_pg_url(v);
    else if (*v && s->kind == KIND_PG_URL_LIST)
        shown = ds__redact_pg_url_list(v);
    else if (*v && s->kind == KIND_REDIS_URL)
        shown = ds__redact_redis_url(v);
    else
        shown = ds__strdup(v);
    if (!shown)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", s->env);
    size_t need = strlen(shown) + 1;
    if (need > buflen)
        st = ds__error_set(err, DS_ERR_INVALID, "%s: buffer too small (%zu "
                           "bytes needed)", s->env, need);
    else
        memcpy(buf, shown, need);
    ds__free(shown);
    return st;
}

DS_EXPORT ds_status ds_config_set_after_connect(ds_config *cfg,
                                                ds_after_connect_fn fn,
                                                void *ud, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    cfg->after_connect = fn;
    cfg->after_connect_ud = ud;
    return DS_OK;
}

DS_EXPORT ds_status ds_config_set_statement_hook(ds_config *cfg,
                                                 ds_statement_hook_fn fn,
                                                 void *ud, ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    cfg->statement_hook = fn;
    cfg->statement_hook_ud = ud;
    return DS_OK;
}

DS_EXPORT ds_status ds_config_clone(const ds_config *cfg, ds_config **out,
                                    ds_error *err) {
    DS_CHECK_ARG(err, cfg, "cfg is NULL");
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    ds_config *copy = ds__calloc(1, sizeof *copy);
    if (!copy)
        return ds__error_set(err, DS_ERR_NOMEM, "ds_config_clone: out of memory");
    *copy = *cfg;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (!kind_is_number(settings[i].kind))
            *str_field(copy, &settings[i]) = NULL;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        if (kind_is_number(s->kind))
            continue;
        const char *v = *str_field((ds_config *)cfg, s);
        if (v && store_text(copy, s, v, err) != DS_OK) {
            ds_config_free(copy);
            return DS_ERR_NOMEM;
        }
    }
    *out = copy;
    return DS_OK;
}

DS_EXPORT void ds_config_free(ds_config *cfg) {
    if (!cfg)
        return;
    free_fields(cfg);
    ds__wipe(cfg, sizeof *cfg);
    ds__free(cfg);
}
