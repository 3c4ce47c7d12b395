/* JSON text with the shortest numbers that read back exactly.
 *
 * jansson prints a real with 17 significant digits, so 0.7 becomes
 * 0.69999999999999996: the same double, but not the same decimal, and a
 * reader in another language comparing `metadata @> '{"temp":0.7}'` or
 * `(metadata->>'temp')::numeric = 0.7` misses the row. Every JSON text the
 * library stores goes through this encoder instead; it writes exactly what
 * jansson writes for the flags below, except that each real is the shortest
 * decimal that parses back to the same double. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/json_internal.h"

/* Deeper than any document jansson's own parser accepts (2048). */
#define DUMP_MAX_DEPTH 2048

/* strtod and snprintf follow LC_NUMERIC; JSON wants '.', so the radix
 * character is found and swapped both ways. */
static char *find_radix(char *s) {
    for (; *s; s++) {
        char c = *s;
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' ||
              c == 'E'))
            return s;
    }
    return NULL;
}

int ds__json_real_text(double v, char *out, size_t outlen) {
    if (!isfinite(v) || outlen < DS__JSON_REAL_MAX)
        return -1;
    char buf[64];
    /* For a normal double the 15-digit rounding, when it reads back, is
     * already the shortest (%g drops trailing zeros); a subnormal carries
     * fewer digits, so it is searched from one. */
    int start = fabs(v) < DBL_MIN ? 1 : 15;
    int n = 0;
    for (int prec = start; prec <= 17; prec++) {
        n = snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (n <= 0 || (size_t)n >= sizeof buf)
            return -1;
        if (strtod(buf, NULL) == v && signbit(strtod(buf, NULL)) == signbit(v))
            break;
    }
    char *radix = find_radix(buf);
    if (radix) {
        /* a multi-byte radix character collapses to one '.' */
        size_t rlen = 1;
        while (radix[rlen] && !((radix[rlen] >= '0' && radix[rlen] <= '9') ||
                                radix[rlen] == 'e' || radix[rlen] == 'E'))
            rlen++;
        *radix = '.';
        memmove(radix + 1, radix + rlen, strlen(radix + rlen) + 1);
    }
    /* keep it a real for every JSON reader that types numbers: 1 -> 1.0 */
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        size_t len = strlen(buf);
        memcpy(buf + len, ".0", 3);
    }
    /* exponent without '+' and without leading zeros, as jansson writes it */
    char *e = strchr(buf, 'e');
    if (e) {
        char *p = e + 1;
        char *digits = p;
        if (*p == '+') {
            memmove(p, p + 1, strlen(p + 1) + 1);
        } else if (*p == '-') {
            digits = p + 1;
        }
        char *q = digits;
        while (*q == '0' && q[1] != '\0')
            q++;
        if (q != digits)
            memmove(digits, q, strlen(q) + 1);
    }
    size_t len = strlen(buf);
    if (len + 1 > outlen)
        return -1;
    memcpy(out, buf, len + 1);
    return (int)len;
}

typedef struct {
    json_dump_callback_t cb;
    void *data;
    size_t flags;
} dumper;

static int emit(dumper *d, const char *s, size_t n) {
    return n ? d->cb(s, n, d->data) : 0;
}

static int emit_indent(dumper *d, int depth, int space) {
    int n = (int)(d->flags & JSON_MAX_INDENT);
    static const char spaces[] = "                                ";
    if (n > 0) {
        if (emit(d, "\n", 1))
            return -1;
        size_t total = (size_t)n * (size_t)depth;
        while (total > 0) {
            size_t chunk = total < sizeof spaces - 1 ? total : sizeof spaces - 1;
            if (emit(d, spaces, chunk))
                return -1;
            total -= chunk;
        }
    } else if (space && !(d->flags & JSON_COMPACT)) {
        return emit(d, " ", 1);
    }
    return 0;
}

/* Length of the UTF-8 sequence at s (at most n bytes), its code point in
 * *cp; 0 when the bytes are not valid UTF-8. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    size_t len;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) ||
        (len == 4 && (v < 0x10000 || v > 0x10FFFF)))
        return 0;
    *cp = v;
    return len;
}

static int emit_string(dumper *d, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    if (emit(d, "\"", 1))
        return -1;
    size_t run = 0; /* bytes copied through unchanged, not yet emitted */
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0)
            return -1;
        char esc[16];
        const char *rep = NULL;
        size_t rlen = 2;
        switch (cp) {
        case '"': rep = "\\\""; break;
        case '\\': rep = "\\\\"; break;
        case '\b': rep = "\\b"; break;
        case '\f': rep = "\\f"; break;
        case '\n': rep = "\\n"; break;
        case '\r': rep = "\\r"; break;
        case '\t': rep = "\\t"; break;
        case '/':
            if (d->flags & JSON_ESCAPE_SLASH)
                rep = "\\/";
            break;
        default:
            if (cp < 0x20 || (cp >= 0x7F && (d->flags & JSON_ENSURE_ASCII) &&
                              cp > 0x7F)) {
                if (cp < 0x10000) {
                    rlen = (size_t)snprintf(esc, sizeof esc, "\\u%04X",
                                            (unsigned)cp);
                } else {
                    uint32_t v = cp - 0x10000;
                    rlen = (size_t)snprintf(esc, sizeof esc, "\\u%04X\\u%04X",
                                            (unsigned)(0xD800 | (v >> 10)),
                                            (unsigned)(0xDC00 | (v & 0x3FF)));
                }
                rep = esc;
            }
        }
        if (rep) {
            if (emit(d, str + i - run, run) || emit(d, rep, rlen))
                return -1;
            run = 0;
        } else {
            run += n;
        }
        i += n;
    }
    if (emit(d, str + len - run, run))
        return -1;
    return emit(d, "\"", 1);
}

static int key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int dump_value(dumper *d, const json_t *j, int depth);

static int dump_object(dumper *d, const json_t *j, int depth) {
    size_t size = json_object_size(j);
    if (emit(d, "{", 1))
        return -1;
    if (size == 0)
        return emit(d, "}", 1);
    const char **keys = NULL;
    if (d->flags & JSON_SORT_KEYS) {
        keys = ds__calloc(size, sizeof *keys);
        if (!keys)
            return -1;
        size_t k = 0;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v) {
            if (k < size)
                keys[k++] = key;
        }
        size = k;
        qsort(keys, size, sizeof *keys, key_cmp);
    }
    int rc = -1;
    const char *colon = d->flags & JSON_COMPACT ? ":" : ": ";
    void *it = keys ? NULL : json_object_iter((json_t *)j);
    for (size_t k = 0; keys ? k < size : it != NULL; k++) {
        const char *key = keys ? keys[k] : json_object_iter_key(it);
        json_t *v = keys ? json_object_get(j, key) : json_object_iter_value(it);
        if (k > 0 && emit(d, ",", 1))
            goto out;
        if (emit_indent(d, depth + 1, k > 0) ||
            emit_string(d, key, strlen(key)) || emit(d, colon, strlen(colon)) ||
            dump_value(d, v, depth + 1))
            goto out;
        if (!keys)
            it = json_object_iter_next((json_t *)j, it);
    }
    rc = emit_indent(d, depth, 0) || emit(d, "}", 1) ? -1 : 0;
out:
    ds__free(keys);
    return rc;
}

static int dump_array(dumper *d, const json_t *j, int depth) {
    size_t size = json_array_size(j);
    if (emit(d, "[", 1))
        return -1;
    if (size == 0)
        return emit(d, "]", 1);
    for (size_t i = 0; i < size; i++) {
        if (i > 0 && emit(d, ",", 1))
            return -1;
        if (emit_indent(d, depth + 1, i > 0) ||
            dump_value(d, json_array_get(j, i), depth + 1))
            return -1;
    }
    return emit_indent(d, depth, 0) || emit(d, "]", 1) ? -1 : 0;
}

static int dump_value(dumper *d, const json_t *j, int depth) {
    if (!j || depth > DUMP_MAX_DEPTH)
        return -1;
    char buf[DS__JSON_REAL_MAX];
    switch (json_typeof(j)) {
    case JSON_NULL: return emit(d, "null", 4);
    case JSON_TRUE: return emit(d, "true", 4);
    case JSON_FALSE: return emit(d, "false", 5);
    case JSON_INTEGER: {
        int n = snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
                         json_integer_value(j));
        return n > 0 ? emit(d, buf, (size_t)n) : -1;
    }
    case JSON_REAL: {
        int n = ds__json_real_text(json_real_value(j), buf, sizeof buf);
        return n > 0 ? emit(d, buf, (size_t)n) : -1;
    }
    case JSON_STRING:
        return emit_string(d, json_string_value(j), json_string_length(j));
    case JSON_ARRAY: return dump_array(d, j, depth);
    case JSON_OBJECT: return dump_object(d, j, depth);
    }
    return -1;
}

int ds__json_dump_callback(const json_t *j, json_dump_callback_t cb,
                           void *data, size_t flags) {
    if (!j || !cb)
        return -1;
    if (!(flags & JSON_ENCODE_ANY) && !json_is_object(j) && !json_is_array(j))
        return -1;
    dumper d = {cb, data, flags};
    return dump_value(&d, j, 0);
}

typedef struct {
    char *p;
    size_t cap;
    size_t len;
} sized_sink;

static int sized_cb(const char *buf, size_t size, void *data) {
    sized_sink *s = data;
    if (s->len < s->cap) {
        size_t n = s->cap - s->len < size ? s->cap - s->len : size;
        memcpy(s->p + s->len, buf, n);
    }
    if (size > SIZE_MAX - s->len)
        return -1;
    s->len += size;
    return 0;
}

size_t ds__json_dumpb(const json_t *j, char *buf, size_t size, size_t flags) {
    sized_sink s = {buf, buf ? size : 0, 0};
    if (ds__json_dump_callback(j, sized_cb, &s, flags) != 0)
        return 0;
    return s.len;
}

typedef struct {
    char *p;
    size_t cap;
    size_t len;
    json_malloc_t jmalloc;
    json_free_t jfree;
} grow_sink;

static int grow_cb(const char *buf, size_t size, void *data) {
    grow_sink *s = data;
    if (size >= SIZE_MAX / 2 - s->len)
        return -1;
    if (s->len + size + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < s->len + size + 1)
            cap *= 2;
        char *np = s->jmalloc(cap);
        if (!np)
            return -1;
        if (s->p) {
            memcpy(np, s->p, s->len);
            s->jfree(s->p);
        }
        s->p = np;
        s->cap = cap;
    }
    memcpy(s->p + s->len, buf, size);
    s->len += size;
    return 0;
}

char *ds__json_dumps(const json_t *j, size_t flags) {
    grow_sink s = {NULL, 0, 0, NULL, NULL};
    json_get_alloc_funcs(&s.jmalloc, &s.jfree);
    if (ds__json_dump_callback(j, grow_cb, &s, flags) != 0 ||
        grow_cb("", 0, &s) != 0) {
        if (s.p)
            s.jfree(s.p);
        return NULL;
    }
    s.p[s.len] = '\0';
    return s.p;
}
