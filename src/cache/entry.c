/* The cache entry format (see cache_internal.h): parsing what is read
 * back from Redis, which another process may have written, and encoding. */
#include <stdio.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "core/internal.h"
#include "core/json_internal.h"

static bool parse_num(const char **p, const char *end, char stop,
                      int64_t *out) {
    int64_t v = 0;
    const char *s = *p;
    if (s >= end || *s < '0' || *s > '9')
        return false;
    while (s < end && *s >= '0' && *s <= '9') {
        int digit = *s++ - '0';
        if (v > (INT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    if (s >= end || *s != stop)
        return false;
    *p = s + 1;
    *out = v;
    return true;
}

bool ds__cache_entry_parse(const char *s, size_t len, ds__cache_entry *p) {
    const char *end = s + len;
    if (len < 8 || s[0] != '1' || s[1] != ' ' || (s[2] != 'V' && s[2] != 'N') ||
        s[3] != ' ')
        return false;
    p->kind = s[2];
    const char *q = s + 4;
    if (!parse_num(&q, end, ' ', &p->fresh_until_ms) ||
        !parse_num(&q, end, '\n', &p->load_ms))
        return false;
    p->body = q;
    p->body_len = (size_t)(end - q);
    return p->kind == 'V' ? p->body_len > 0 : p->body_len == 0;
}

json_t *ds__cache_entry_body(const ds__cache_entry *p) {
    json_error_t jerr;
    return json_loadb(p->body, p->body_len, JSON_DECODE_ANY, &jerr);
}

char *ds__cache_entry_encode(const json_t *value, int64_t fresh_until_ms,
                             int64_t load_ms, size_t *len) {
    char hdr[64];
    int h = snprintf(hdr, sizeof hdr, "1 %c %lld %lld\n", value ? 'V' : 'N',
                     (long long)fresh_until_ms, (long long)load_ms);
    size_t body = 0;
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    if (value) {
        body = ds__json_dumpb(value, NULL, 0, flags);
        if (body == 0)
            return NULL;
    }
    char *buf = ds__malloc((size_t)h + body);
    if (!buf)
        return NULL;
    memcpy(buf, hdr, (size_t)h);
    if (value && ds__json_dumpb(value, buf + h, body, flags) != body) {
        ds__free(buf);
        return NULL;
    }
    *len = (size_t)h + body;
    return buf;
}
