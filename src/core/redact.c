/* Connection strings shown back without their secrets.
 *
 * A redacted value is rebuilt from the parsed form (libpq's PQconninfoParse
 * for PostgreSQL, our own parser for Redis), never by scanning the text: the
 * parser is the one that decides what the password is, so every syntax it
 * accepts (URI userinfo, ?password=, spaces around '=', quoting, escapes, a
 * keyword given twice) is covered by construction. */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "core/redis_url.h"

#define MASK "***"

typedef struct text_buf {
    char *s;
    size_t len, cap;
    bool failed;
} text_buf;

static void put_n(text_buf *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (n >= b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 64;
        while (n >= cap - b->len) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        char *grown = ds__realloc(b->s, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void put(text_buf *b, const char *s) { put_n(b, s, strlen(s)); }

static char *finish(text_buf *b) {
    if (b->failed || !b->s) {
        ds__free(b->s);
        return b->failed ? NULL : ds__strdup("");
    }
    return b->s;
}

static bool unreserved(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* RFC 3986 percent-encoding of everything but unreserved characters and
 * the ones in `keep`. */
static void put_encoded(text_buf *b, const char *s, const char *keep) {
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (unreserved(*c) || (keep && strchr(keep, *c))) {
            put_n(b, (const char *)c, 1);
        } else {
            char esc[4];
            snprintf(esc, sizeof esc, "%%%02X", *c);
            put_n(b, esc, 3);
        }
    }
}

/* A conninfo value, quoted when libpq would otherwise split or unescape it. */
static void put_conninfo_value(text_buf *b, const char *v) {
    if (*v && !strpbrk(v, " \t\n\r\f\v'\\")) {
        put(b, v);
        return;
    }
    put(b, "'");
    for (const char *c = v; *c; c++) {
        if (*c == '\'' || *c == '\\')
            put(b, "\\");
        put_n(b, c, 1);
    }
    put(b, "'");
}

/* libpq marks the options it hides from display with '*' (password,
 * sslpassword); name the known ones too in case a libpq forgets. */
static bool option_is_secret(const PQconninfoOption *o) {
    return (o->dispchar && o->dispchar[0] == '*') ||
           strcmp(o->keyword, "password") == 0 ||
           strcmp(o->keyword, "sslpassword") == 0;
}

static const PQconninfoOption *find_option(const PQconninfoOption *opts,
                                           const char *keyword) {
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val ? o : NULL;
    return NULL;
}

static size_t count_items(const char *list) {
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    return n;
}

/* "host:port,host:port" in the URI authority when every host has its own
 * port (or none is given); false when the lists do not pair up. */
static bool put_authority_hosts(text_buf *b, const char *hosts,
                                const char *ports) {
    if (!hosts)
        return !ports;
    size_t nh = count_items(hosts);
    if (ports && count_items(ports) != nh)
        return false;
    const char *h = hosts, *p = ports;
    for (size_t i = 0; i < nh; i++) {
        size_t hl = strcspn(h, ","), pl = p ? strcspn(p, ",") : 0;
        char *host = ds__strndup(h, hl);
        if (!host) {
            b->failed = true;
            return true;
        }
        if (i > 0)
            put(b, ",");
        if (strchr(host, ':')) { /* IPv6 literal */
            put(b, "[");
            put_encoded(b, host, ":");
            put(b, "]");
        } else {
            put_encoded(b, host, NULL);
        }
        ds__free(host);
        if (pl) {
            put(b, ":");
            put_n(b, p, pl);
        }
        h += hl + (h[hl] == ',');
        if (p)
            p += pl + (p[pl] == ',');
    }
    return true;
}

static void put_pg_uri(text_buf *b, const char *scheme,
                       const PQconninfoOption *opts) {
    const PQconninfoOption *user = find_option(opts, "user");
    const PQconninfoOption *pass = find_option(opts, "password");
    const PQconninfoOption *host = find_option(opts, "host");
    const PQconninfoOption *port = find_option(opts, "port");
    const PQconninfoOption *db = find_option(opts, "dbname");
    put(b, scheme);
    if (user || pass) {
        if (user)
            put_encoded(b, user->val, NULL);
        if (pass)
            put(b, ":" MASK);
        put(b, "@");
    }
    size_t mark = b->len;
    bool hosts_in_authority =
        put_authority_hosts(b, host ? host->val : NULL, port ? port->val : NULL);
    if (!hosts_in_authority && !b->failed) {
        b->len = mark;
        b->s[mark] = '\0';
    }
    if (db && db->val[0]) { /* libpq reads an empty dbname as unset */
        put(b, "/");
        put_encoded(b, db->val, NULL);
    }
    const char *sep = "?";
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || o == user || o == pass || o == db ||
            ((o == host || o == port) && hosts_in_authority))
            continue;
        put(b, sep);
        put(b, o->keyword);
        put(b, "=");
        if (option_is_secret(o))
            put(b, MASK);
        else
            put_encoded(b, o->val, ",");
        sep = "&";
    }
}

static void put_conninfo_option(text_buf *b, const PQconninfoOption *o,
                                const char **sep) {
    put(b, *sep);
    put(b, o->keyword);
    put(b, "=");
    if (option_is_secret(o))
        put(b, MASK);
    else
        put_conninfo_value(b, o->val);
    *sep = " ";
}

static void put_pg_conninfo(text_buf *b, const PQconninfoOption *opts) {
    /* the options that say where and who first, then libpq's order */
    static const char *const first[] = {"host", "hostaddr", "port", "user",
                                        "password", "dbname", NULL};
    const char *sep = "";
    for (const char *const *f = first; *f; f++) {
        const PQconninfoOption *o = find_option(opts, *f);
        if (o)
            put_conninfo_option(b, o, &sep);
    }
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        bool listed = false;
        for (const char *const *f = first; *f && !listed; f++)
            listed = strcmp(*f, o->keyword) == 0;
        if (o->val && !listed)
            put_conninfo_option(b, o, &sep);
    }
}

static void put_pg(text_buf *b, const char *conninfo) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (msg)
        PQfreemem(msg);
    if (!opts) {
        put(b, MASK); /* nothing we can show safely */
        return;
    }
    if (strncmp(conninfo, "postgresql://", 13) == 0)
        put_pg_uri(b, "postgresql://", opts);
    else if (strncmp(conninfo, "postgres://", 11) == 0)
        put_pg_uri(b, "postgres://", opts);
    else
        put_pg_conninfo(b, opts);
    /* libpq does not wipe its copies of the secret values */
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && option_is_secret(o))
            ds__wipe(o->val, strlen(o->val));
    PQconninfoFree(opts);
}

char *ds__redact_pg_url(const char *conninfo) {
    text_buf b = {0};
    put_pg(&b, conninfo ? conninfo : "");
    return finish(&b);
}

char *ds__redact_pg_url_list(const char *list) {
    char **urls;
    size_t n;
    if (ds__config_split_urls(list ? list : "", &urls, &n, NULL) != DS_OK)
        return NULL;
    text_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            put(&b, ",");
        put_pg(&b, urls[i]);
    }
    ds__config_free_urls(urls);
    return finish(&b);
}

char *ds__redact_redis_url(const char *url) {
    text_buf b = {0};
    if (!url || !*url)
        return finish(&b);
    ds__redis_url u;
    if (ds__redis_url_parse(url, "REDIS_URL", &u, NULL) != DS_OK) {
        put(&b, MASK);
        return finish(&b);
    }
    put(&b, u.unix_socket ? "unix://" : u.tls ? "rediss://" : "redis://");
    if (u.password) {
        if (u.user)
            put_encoded(&b, u.user, NULL);
        put(&b, ":" MASK "@");
    }
    char num[32];
    if (u.unix_socket) {
        put(&b, u.path); /* taken verbatim by the parser: never decoded */
        if (u.db) {
            snprintf(num, sizeof num, "?db=%d", u.db);
            put(&b, num);
        }
    } else {
        /* ':' and '%' (a zone) only parse inside brackets */
        bool v6 = strpbrk(u.host, ":%") != NULL;
        put(&b, v6 ? "[" : "");
        put_encoded(&b, u.host, ":%");
        put(&b, v6 ? "]" : "");
        snprintf(num, sizeof num, ":%d", u.port);
        put(&b, num);
        if (u.db) {
            snprintf(num, sizeof num, "/%d", u.db);
            put(&b, num);
        }
    }
    ds__redis_url_clear(&u);
    return finish(&b);
}
