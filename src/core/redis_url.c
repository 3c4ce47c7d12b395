/* REDIS_URL parsing. Messages name the setting and the part that is wrong,
 * never the URL itself (it carries the password). */
#include <string.h>

#include "core/internal.h"
#include "core/redis_url.h"

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) into a new string (secret memory when asked). */
static ds_status decode(const char *s, size_t len, bool secret,
                        const char *varname, const char *what, char **out,
                        ds_error *err) {
    *out = NULL;
    char *tmp = ds__malloc(len + 1);
    if (!tmp)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", varname);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                ds__wipe(tmp, len + 1);
                ds__free(tmp);
                return ds__error_set(err, DS_ERR_CONFIG,
                                     "%s: bad percent-escape in the %s", varname,
                                     what);
            }
            tmp[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            tmp[o++] = s[i];
        }
    }
    tmp[o] = '\0';
    char *copy = secret ? ds__secret_strdup(tmp) : ds__strdup(tmp);
    ds__wipe(tmp, len + 1);
    ds__free(tmp);
    if (!copy)
        return ds__error_set(err, DS_ERR_NOMEM, "%s: out of memory", varname);
    *out = copy;
    return DS_OK;
}

static bool parse_uint(const char *s, size_t len, long max, long *out) {
    if (len == 0 || len > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

#define DB_MAX 1000000L

static ds_status parse_query(const char *q, const char *varname,
                             ds__redis_url *u, ds_error *err) {
    /* Only db=N, for unix:// URLs that have no path segment for it. */
    while (*q) {
        size_t n = strcspn(q, "&");
        long db;
        if (n > 3 && strncmp(q, "db=", 3) == 0 && u->unix_socket &&
            parse_uint(q + 3, n - 3, DB_MAX, &db)) {
            u->db = (int)db;
        } else if (n > 3 && strncmp(q, "db=", 3) == 0) {
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: db= in the query is only for unix:// URLs "
                                 "(redis://host:port/DB), and must be a number",
                                 varname);
        } else if (n > 0) {
            size_t klen = strcspn(q, "=&");
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: unsupported query parameter '%.*s' (TLS "
                                 "and timeouts are DS_REDIS_* settings)",
                                 varname, (int)(klen > 32 ? 32 : klen), q);
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return DS_OK;
}

static ds_status parse_userinfo(const char *s, size_t len, const char *varname,
                                ds__redis_url *u, ds_error *err) {
    const char *colon = memchr(s, ':', len);
    if (!colon) {
        if (len == 0)
            return DS_OK;
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: a user name needs a password "
                             "(redis://user:password@host, or "
                             "redis://:password@host for password-only AUTH)",
                             varname);
    }
    size_t ulen = (size_t)(colon - s), plen = len - ulen - 1;
    ds_status st;
    if (plen == 0) {
        if (ulen == 0)
            return DS_OK; /* "redis://:@host": no AUTH */
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: the password after the user name is empty",
                             varname);
    }
    if (ulen > 0) {
        st = decode(s, ulen, false, varname, "user name", &u->user, err);
        if (st != DS_OK)
            return st;
        if (!u->user[0] || strpbrk(u->user, " \t\r\n")) {
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: the user name is empty or has white space",
                                 varname);
        }
    }
    return decode(colon + 1, plen, true, varname, "password", &u->password,
                  err);
}

static bool host_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static ds_status parse_tcp(const char *p, const char *varname, ds__redis_url *u,
                           ds_error *err) {
    /* host[:port] up to '/', '?' or end */
    const char *end = p + strcspn(p, "/?#");
    const char *port_at = NULL;
    const char *h = p, *hend;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close)
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: unterminated [IPv6] host", varname);
        h = p + 1;
        hend = close;
        for (const char *c = h; c < hend; c++)
            if (!(host_char_ok(*c) || *c == ':' || *c == '%'))
                return ds__error_set(err, DS_ERR_CONFIG,
                                     "%s: bad character in the IPv6 host",
                                     varname);
        if (close + 1 < end) {
            if (close[1] != ':')
                return ds__error_set(err, DS_ERR_CONFIG,
                                     "%s: expected ':port' after the [IPv6] "
                                     "host",
                                     varname);
            port_at = close + 2;
        }
    } else {
        hend = memchr(p, ':', (size_t)(end - p));
        if (hend)
            port_at = hend + 1;
        else
            hend = end;
        for (const char *c = h; c < hend; c++)
            if (!host_char_ok(*c))
                return ds__error_set(err, DS_ERR_CONFIG,
                                     "%s: bad character in the host name "
                                     "(percent-encode a password that holds "
                                     "'@', ':' or '/')",
                                     varname);
    }
    if (hend == h)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: the host is missing",
                             varname);
    if ((size_t)(hend - h) >= sizeof u->host)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: the host name is too long",
                             varname);
    memcpy(u->host, h, (size_t)(hend - h));
    u->host[hend - h] = '\0';
    u->port = 6379;
    if (port_at) {
        long port;
        if (!parse_uint(port_at, (size_t)(end - port_at), 65535, &port) ||
            port < 1)
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: port must be a number from 1 to 65535",
                                 varname);
        u->port = (int)port;
    }
    p = end;
    if (*p == '/') {
        p++;
        size_t n = strcspn(p, "?#");
        long db = 0;
        if (n > 0 && !parse_uint(p, n, DB_MAX, &db))
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: the database index after '/' must be a "
                                 "number from 0 to %ld",
                                 varname, DB_MAX);
        u->db = (int)db;
        p += n;
    }
    if (*p == '#')
        return ds__error_set(err, DS_ERR_CONFIG, "%s: unexpected '#'", varname);
    return *p == '?' ? parse_query(p + 1, varname, u, err) : DS_OK;
}

static ds_status parse_unix(const char *p, const char *varname,
                            ds__redis_url *u, ds_error *err) {
    size_t n = strcspn(p, "?#");
    if (n == 0 || *p != '/')
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: expected unix:///absolute/path/to/socket",
                             varname);
    if (n >= sizeof u->path)
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: the socket path is longer than %zu bytes",
                             varname, sizeof u->path - 1);
    memcpy(u->path, p, n);
    u->path[n] = '\0';
    p += n;
    if (*p == '#')
        return ds__error_set(err, DS_ERR_CONFIG, "%s: unexpected '#'", varname);
    return *p == '?' ? parse_query(p + 1, varname, u, err) : DS_OK;
}

ds_status ds__redis_url_parse(const char *url, const char *varname,
                              ds__redis_url *out, ds_error *err) {
    ds__redis_url u;
    memset(&u, 0, sizeof u);
    if (out)
        memset(out, 0, sizeof *out);
    if (!url || !*url)
        return ds__error_set(err, DS_ERR_CONFIG, "%s: not set", varname);
    const char *p;
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        p = url + 9;
        u.tls = true;
    } else if (strncmp(url, "unix://", 7) == 0) {
        p = url + 7;
        u.unix_socket = true;
    } else {
        return ds__error_set(err, DS_ERR_CONFIG,
                             "%s: expected a redis://, rediss:// or unix:// URL",
                             varname);
    }
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return ds__error_set(err, DS_ERR_CONFIG,
                                 "%s: white space or control characters in the "
                                 "URL (percent-encode them)",
                                 varname);
    /* The userinfo ends at the last '@', so an unencoded '@', '/' or '?'
     * in a password still parses. */
    const char *at = strrchr(p, '@');
    ds_status st = DS_OK;
    if (at) {
        st = parse_userinfo(p, (size_t)(at - p), varname, &u, err);
        p = at + 1;
    }
    if (st == DS_OK)
        st = u.unix_socket ? parse_unix(p, varname, &u, err)
                           : parse_tcp(p, varname, &u, err);
    if (st != DS_OK || !out) {
        ds__redis_url_clear(&u);
        return st;
    }
    *out = u;
    return DS_OK;
}

void ds__redis_url_clear(ds__redis_url *u) {
    if (!u)
        return;
    ds__free(u->user);
    ds__secret_free(u->password);
    u->user = NULL;
    u->password = NULL;
}
