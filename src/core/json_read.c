/*
 * A fast reader for the JSON the database sends back.
 *
 * Listing 50 messages spent about 70% of the library's client time in
 * jansson's json_loadb (a lexer that copies every byte through a string
 * buffer, then copies strings and keys again). The values read here come
 * from PostgreSQL's jsonb output: plain objects, arrays, short strings,
 * integers. This reader builds the same jansson values straight from the
 * text, with one copy per string, and hands anything outside that common
 * shape (reals, \u0000, over-deep nesting, any syntax error) to json_loadb
 * from the start, so the result, or the error, is always exactly jansson's.
 */
#include <string.h>

#include "core/internal.h"
#include "core/json_internal.h"

/* Deeper documents are rare and go to jansson (whose own limit is 2048). */
#define FAST_MAX_DEPTH 64

typedef struct reader {
    const char *p, *end;
    int depth;
} reader;

static void skip_ws(reader *r) {
    while (r->p < r->end &&
           (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* Appends code point cp as UTF-8. */
static size_t put_utf8(char *out, int32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escapes of s[0..n) (the text between the quotes) into out,
 * which has room for n bytes (an escape never grows). Returns the length,
 * or -1 for anything jansson should judge (a bad escape, \u0000, a lone
 * surrogate). */
static long unescape(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        if (i + 1 >= n)
            return -1;
        char c = s[i + 1];
        i += 2;
        switch (c) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            if (i + 4 > n)
                return -1;
            int32_t cp = hex4(s + i);
            i += 4;
            if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u')
                    return -1;
                int32_t lo = hex4(s + i + 2);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* "\uXXXX" is 6 bytes, its UTF-8 at most 3; a pair is 12
             * bytes for 4 */
            o += put_utf8(out + o, cp);
            break;
        }
        default: return -1;
        }
    }
    return (long)o;
}

/* Scans a string at r->p (the opening quote). On success *s and *n give its
 * text, decoded into *heap when it had escapes (the caller frees it with
 * ds__free). False hands the document to jansson. */
static bool read_string(reader *r, const char **s, size_t *n, char **heap) {
    const char *start = ++r->p;
    bool escaped = false;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            escaped = true;
            r->p++;
            if (r->p >= r->end)
                return false;
        }
        r->p++;
    }
    if (r->p >= r->end)
        return false;
    size_t len = (size_t)(r->p - start);
    r->p++; /* the closing quote */
    *heap = NULL;
    if (!escaped) {
        *s = start;
        *n = len;
        return true;
    }
    char *buf = ds__malloc(len ? len : 1);
    if (!buf)
        return false;
    long out = unescape(start, len, buf);
    if (out < 0) {
        ds__free(buf);
        return false;
    }
    *s = buf;
    *n = (size_t)out;
    *heap = buf;
    return true;
}

static json_t *read_value(reader *r);

static json_t *read_number(reader *r) {
    bool neg = *r->p == '-';
    if (neg)
        r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return NULL;
    if (*r->p == '0' && r->p + 1 < r->end && r->p[1] >= '0' && r->p[1] <= '9')
        return NULL; /* a leading zero: jansson's error */
    unsigned long long v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        unsigned d = (unsigned)(*r->p - '0');
        if (v > (9223372036854775808ULL - d) / 10)
            return NULL; /* beyond json_int_t: jansson decides */
        v = v * 10 + d;
        r->p++;
    }
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
        return NULL; /* a real: jansson's conversion, whatever the locale */
    if (!neg && v > 9223372036854775807ULL)
        return NULL;
    json_int_t iv = neg ? (json_int_t)(0 - v) : (json_int_t)v;
    return json_integer(iv);
}

static json_t *read_array(reader *r) {
    json_t *a = json_array();
    if (!a)
        return NULL;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return a;
    }
    for (;;) {
        json_t *v = read_value(r);
        if (!v || json_array_append_new(a, v)) {
            json_decref(a);
            return NULL;
        }
        skip_ws(r);
        if (r->p >= r->end)
            break;
        if (*r->p == ']') {
            r->p++;
            return a;
        }
        if (*r->p != ',')
            break;
        r->p++;
        skip_ws(r);
    }
    json_decref(a);
    return NULL;
}

static json_t *read_object(reader *r) {
    json_t *o = json_object();
    if (!o)
        return NULL;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return o;
    }
    for (;;) {
        const char *key;
        size_t key_len;
        char *heap;
        if (r->p >= r->end || *r->p != '"' ||
            !read_string(r, &key, &key_len, &heap))
            break;
        skip_ws(r);
        json_t *v = NULL;
        if (r->p < r->end && *r->p == ':') {
            r->p++;
            skip_ws(r);
            v = read_value(r);
        }
        /* json_object_setn_new checks the key's UTF-8 and takes v even
         * when it fails */
        int rc = v ? json_object_setn_new(o, key, key_len, v) : -1;
        ds__free(heap);
        if (rc)
            break;
        skip_ws(r);
        if (r->p >= r->end)
            break;
        if (*r->p == '}') {
            r->p++;
            return o;
        }
        if (*r->p != ',')
            break;
        r->p++;
        skip_ws(r);
    }
    json_decref(o);
    return NULL;
}

static bool literal(reader *r, const char *word, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return false;
    r->p += n;
    return true;
}

/* NULL: not read here (any reason); the caller asks jansson. */
static json_t *read_value(reader *r) {
    if (r->p >= r->end)
        return NULL;
    switch (*r->p) {
    case '{':
    case '[': {
        if (++r->depth > FAST_MAX_DEPTH)
            return NULL;
        json_t *v = *r->p == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    }
    case '"': {
        const char *s;
        size_t n;
        char *heap;
        if (!read_string(r, &s, &n, &heap))
            return NULL;
        json_t *v = json_stringn(s, n); /* checks the UTF-8 */
        ds__free(heap);
        return v;
    }
    case 't': return literal(r, "true", 4) ? json_true() : NULL;
    case 'f': return literal(r, "false", 5) ? json_false() : NULL;
    case 'n': return literal(r, "null", 4) ? json_null() : NULL;
    default: return read_number(r);
    }
}

json_t *ds__json_loadb(const char *text, size_t len, size_t flags,
                       json_error_t *err) {
    reader r = {text, text + len, 0};
    skip_ws(&r);
    bool any = (flags & JSON_DECODE_ANY) != 0;
    /* Only the flags this reader honours; any other goes to jansson. */
    if (!(flags & ~(size_t)(JSON_DECODE_ANY | JSON_ALLOW_NUL)) &&
        r.p < r.end && (any || *r.p == '{' || *r.p == '[')) {
        json_t *v = read_value(&r);
        if (v) {
            skip_ws(&r);
            if (r.p == r.end)
                return v;
            json_decref(v);
        }
    }
    return json_loadb(text, len, flags, err);
}
