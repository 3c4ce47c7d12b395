/*
 * libFuzzer target for configuration values (`make fuzz`): ds_config_set()
 * of every setting, whatever its kind (integer, enum, PostgreSQL URL or
 * conninfo, URL list, Redis URL, key ring, text), then reading it back.
 *
 * Input: byte 0 picks the setting (past the end of the table: the name is
 * read from the value, up to '='); byte 1 holds flags: bit 0 spells the
 * name in upper case, bit 1 splices a known password (or key) into the
 * value in one of several forms (bits 2-4), bits 5-7 pick the read-back
 * buffer. The rest is the value.
 *
 * Properties checked on every input:
 *  - the status is DS_OK or DS_ERR_CONFIG with a message naming the
 *    setting; a refused value leaves the setting as it was;
 *  - a spliced password or key never appears in a message, nor in what
 *    ds_config_get_str() shows when libpq (or the Redis parser) reads it
 *    as the password;
 *  - an accepted integer reads back as the number written, an enum as the
 *    name written, plain text byte for byte, a default for an empty value;
 *  - what is shown of a secret setting is itself a valid value, shown the
 *    same again (redaction is idempotent), with no password but "***";
 *  - ds_config_get_str() refuses a buffer one byte short and writes nothing
 *    past the one it is given; a clone reads back the same.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "core/redis_url.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

#define MARKER "Mk7pQ2xZw9"
/* base64 of "Mk7pQ2xZw9Mk7pQ2xZw9Mk7pQ2xZw9AA", a valid 32-byte key */
#define KEY_MARKER "TWs3cFEyeFp3OU1rN3BRMnhadzlNazdwUTJ4Wnc5QUE="
#define SHOW_MAX 16384

typedef enum { INT, ENUM, PG, PG_LIST, REDIS, KEYS, TEXT } kind;

static const struct {
    const char *name;
    kind k;
} settings[] = {
    {"database_url", PG},
    {"database_replica_urls", PG_LIST},
    {"redis_url", REDIS},
    {"pool_min", INT},
    {"pool_max", INT},
    {"acquire_timeout_ms", INT},
    {"connect_timeout_ms", INT},
    {"statement_timeout_ms", INT},
    {"max_lifetime_ms", INT},
    {"idle_timeout_ms", INT},
    {"statement_mode", ENUM},
    {"tx_max_retries", INT},
    {"replica_retry_ms", INT},
    {"application_name", TEXT},
    {"token_keys", KEYS},
    {"embedding_dim", INT},
    {"vector_backend", ENUM},
    {"hnsw_ef_search", INT},
    {"vector_exact_max_rows", INT},
    {"migrate_lock_timeout_ms", INT},
    {"redis_prefix", TEXT},
    {"redis_pool_size", INT},
    {"redis_connect_timeout_ms", INT},
    {"redis_command_timeout_ms", INT},
    {"redis_tls_ca", TEXT},
    {"redis_retry_ms", INT},
    {"repo_max_message_bytes", INT},
    {"repo_max_json_bytes", INT},
    {"repo_max_page", INT},
    {"repo_max_batch", INT},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static ds_config *defaults;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (ds_init(NULL) != DS_OK || ds_config_new(&defaults, NULL) != DS_OK)
        abort();
    /* every name of the table is a setting, of the kind listed */
    for (size_t i = 0; i < N_SETTINGS; i++) {
        int64_t v;
        ds_status st = ds_config_get_int(defaults, settings[i].name, &v, NULL);
        CHECK((st == DS_OK) == (settings[i].k == INT || settings[i].k == ENUM));
    }
    return 0;
}

/* The value with the marker password (or key) spliced in, form by form. */
static char *splice(kind k, int form, const char *rest) {
    static const char *const pg_forms[] = {
        "postgresql://u:" MARKER "@%s",
        "password=" MARKER " %s",
        "password = '" MARKER "' %s",
        "%s password =" MARKER,
        "postgresql://h/db?password=" MARKER "&%s",
        "postgres://u:" MARKER "@h1:5432,h2/db?%s",
        "password='" MARKER "\\' x' %s",
        "%s,postgresql://u:" MARKER "@h/db",
    };
    const char *fmt;
    switch (k) {
    case PG:
        fmt = pg_forms[form % 7];
        break;
    case PG_LIST:
        fmt = pg_forms[form % 8];
        break;
    case REDIS:
        fmt = form & 1 ? "rediss://u:" MARKER "@%s" : "redis://:" MARKER "@%s";
        break;
    case KEYS:
        fmt = form & 1 ? "%s,kz:" KEY_MARKER : "kz:" KEY_MARKER ",%s";
        break;
    default:
        return NULL;
    }
    size_t cap = strlen(fmt) + strlen(rest) + 1;
    char *s = malloc(cap);
    CHECK(s);
    snprintf(s, cap, fmt, rest);
    return s;
}

static bool has(const char *hay, const char *needle) {
    return strstr(hay, needle) != NULL;
}

/* ds_config_get_str into a buffer of exactly `len` bytes (ASan-checked). */
static ds_status get_exact(const ds_config *cfg, const char *name, size_t len,
                           ds_error *err) {
    char *buf = malloc(len);
    CHECK(buf);
    ds_status st = ds_config_get_str(cfg, name, buf, len, err);
    if (st == DS_OK)
        CHECK(memchr(buf, '\0', len));
    free(buf);
    return st;
}

/* The shown value of a text setting; "" when it cannot be read. */
static void shown(const ds_config *cfg, const char *name, char *out) {
    ds_error err;
    if (ds_config_get_str(cfg, name, out, SHOW_MAX, &err) != DS_OK)
        out[0] = '\0';
}

/* Whether the password that libpq (or the Redis parser) reads from `value`
 * holds the marker: a marker that lands in a host name is no password. */
static bool password_has_marker(kind k, const char *value) {
    bool found = false;
    if (k == PG) {
        char *pw = ds__conninfo_password(value);
        found = pw && has(pw, MARKER);
        ds__secret_free(pw);
    } else if (k == PG_LIST) {
        char **urls;
        size_t n;
        CHECK(ds__config_split_urls(value, &urls, &n, NULL) == DS_OK);
        for (size_t i = 0; i < n; i++) {
            char *pw = ds__conninfo_password(urls[i]);
            found = found || (pw && has(pw, MARKER));
            ds__secret_free(pw);
        }
        ds__config_free_urls(urls);
    } else if (k == REDIS) {
        ds__redis_url u;
        if (ds__redis_url_parse(value, "REDIS_URL", &u, NULL) == DS_OK) {
            found = u.password && has(u.password, MARKER);
            ds__redis_url_clear(&u);
        }
    }
    return found;
}

static void check_secret_shown(kind k, const char *name, const char *show) {
    /* what is shown is a valid value, shown the same again */
    ds_config *again;
    CHECK(ds_config_new(&again, NULL) == DS_OK);
    ds_error err;
    if (show[0]) {
        CHECK(ds_config_set(again, name, show, &err) == DS_OK);
        static char twice[SHOW_MAX];
        CHECK(ds_config_get_str(again, name, twice, sizeof twice, &err) ==
              DS_OK);
        CHECK(strcmp(twice, show) == 0);
    }
    ds_config_free(again);
    /* and holds no password but "***" */
    if (k == PG) {
        char *pw = ds__conninfo_password(show);
        CHECK(!pw || strcmp(pw, "***") == 0);
        ds__secret_free(pw);
    } else if (k == REDIS && show[0]) {
        ds__redis_url u;
        CHECK(ds__redis_url_parse(show, "REDIS_URL", &u, &err) == DS_OK);
        CHECK(!u.password || strcmp(u.password, "***") == 0);
        ds__redis_url_clear(&u);
    } else if (k == PG_LIST && show[0]) {
        char **urls;
        size_t n;
        CHECK(ds__config_split_urls(show, &urls, &n, &err) == DS_OK);
        for (size_t i = 0; i < n; i++) {
            char *pw = ds__conninfo_password(urls[i]);
            CHECK(!pw || strcmp(pw, "***") == 0);
            ds__secret_free(pw);
        }
        ds__config_free_urls(urls);
    }
}

static void check_int(ds_config *cfg, const char *name, const char *value) {
    int64_t got, def;
    ds_error err;
    CHECK(ds_config_get_int(cfg, name, &got, &err) == DS_OK);
    CHECK(ds_config_get_int(defaults, name, &def, &err) == DS_OK);
    if (!value[0]) {
        CHECK(got == def);
        return;
    }
    errno = 0;
    char *end;
    long long want = strtoll(value, &end, 10);
    CHECK(errno == 0 && *end == '\0' && end != value && got == want);
    /* the number reads back through both setters */
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)got);
    CHECK(ds_config_set(cfg, name, text, &err) == DS_OK);
    CHECK(ds_config_set_int(cfg, name, got, &err) == DS_OK);
    int64_t again;
    CHECK(ds_config_get_int(cfg, name, &again, &err) == DS_OK && again == got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    size_t pick = data[0];
    uint8_t flags = data[1];
    char *value = strndup((const char *)data + 2, size - 2);
    CHECK(value);
    char name[128];
    kind k = TEXT;
    bool known = pick < N_SETTINGS;
    if (known) {
        snprintf(name, sizeof name, "%s", settings[pick].name);
        k = settings[pick].k;
    } else {
        /* a name of the input's own, "name=value" */
        size_t n = strcspn(value, "=");
        snprintf(name, sizeof name, "%.*s", (int)(n < 127 ? n : 127), value);
        const char *rest = value + n + (value[n] == '=');
        memmove(value, rest, strlen(rest) + 1);
    }
    if (flags & 1)
        for (char *c = name; *c; c++)
            *c = (char)toupper((unsigned char)*c);
    if (known && (flags & 2)) {
        char *s = splice(k, (flags >> 2) & 7, value);
        if (s) {
            free(value);
            value = s;
        }
    }
    /* the input may spell a marker itself: then its absence proves nothing */
    bool marker_free =
        !memmem(data, size, MARKER, strlen(MARKER)) &&
        !memmem(data, size, "TWs3cFEy", 8); /* KEY_MARKER's start */

    ds_config *cfg;
    CHECK(ds_config_new(&cfg, NULL) == DS_OK);
    static char before[SHOW_MAX], after[SHOW_MAX];
    int64_t int_before = 0, int_after = 0;
    if (known) {
        shown(cfg, name, before);
        (void)ds_config_get_int(cfg, name, &int_before, NULL);
    }

    ds_error err;
    memset(&err, 0, sizeof err);
    ds_status st = ds_config_set(cfg, name, value, &err);
    CHECK(st == DS_OK || st == DS_ERR_CONFIG);
    if (marker_free) {
        CHECK(!has(err.message, MARKER));
        CHECK(!has(err.message, KEY_MARKER));
    }
    if (!known) {
        /* the status alone: the name may still spell a setting */
    } else if (st != DS_OK) {
        CHECK(err.code == st && err.message[0] != '\0');
        /* named by its environment variable (the message never
         * repeats the value) */
        CHECK(strcasestr(err.message, settings[pick].name));
        shown(cfg, name, after);
        (void)ds_config_get_int(cfg, name, &int_after, NULL);
        CHECK(strcmp(before, after) == 0 && int_before == int_after);
    } else {
        switch (k) {
        case INT:
            check_int(cfg, name, value);
            break;
        case ENUM: {
            shown(cfg, name, after);
            if (value[0])
                CHECK(strcasecmp(after, value) == 0);
            else
                CHECK(strcmp(after, before) == 0); /* the default */
            int64_t idx;
            CHECK(ds_config_get_int(cfg, name, &idx, &err) == DS_OK);
            CHECK(ds_config_set_int(cfg, name, idx, &err) == DS_OK);
            break;
        }
        case TEXT:
            shown(cfg, name, after);
            CHECK(strcmp(after, value[0] ? value : before) == 0);
            break;
        case KEYS:
            CHECK(ds_config_get_str(cfg, name, after, sizeof after, &err) ==
                  DS_ERR_INVALID);
            CHECK(!has(err.message, KEY_MARKER));
            break;
        case PG:
        case PG_LIST:
        case REDIS:
            shown(cfg, name, after);
            if (marker_free && password_has_marker(k, value))
                CHECK(!has(after, MARKER));
            check_secret_shown(k, name, after);
            break;
        }
        /* buffer bounds, and the clone */
        if (k != KEYS && k != INT) {
            shown(cfg, name, after);
            size_t need = strlen(after) + 1;
            CHECK(get_exact(cfg, name, need, &err) == DS_OK);
            if (need > 1)
                CHECK(get_exact(cfg, name, need - 1, &err) ==
                      DS_ERR_INVALID);
            size_t small = 1 + (flags >> 5);
            if (small < need)
                CHECK(get_exact(cfg, name, small, &err) ==
                      DS_ERR_INVALID);
            ds_config *copy;
            CHECK(ds_config_clone(cfg, &copy, &err) == DS_OK);
            static char cloned[SHOW_MAX];
            shown(copy, name, cloned);
            CHECK(strcmp(cloned, after) == 0);
            ds_config_free(copy);
        }
    }
    ds_config_free(cfg);
    free(value);
    return 0;
}
