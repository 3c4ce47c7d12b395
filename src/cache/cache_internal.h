/* The cache entry format, apart from the Redis calls so that it can be
 * tested and fuzzed on its own: whatever another process wrote under an
 * entry key is read through ds__cache_entry_parse(). */
#ifndef DS_CACHE_INTERNAL_H
#define DS_CACHE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An entry is a small text header followed by the JSON text:
 *     "1 V <fresh_until_ms> <load_ms>\n{...}"   a value
 *     "1 N <fresh_until_ms> <load_ms>\n"        "not found"
 * Both numbers are decimal, 0 to INT64_MAX.
 */
typedef struct ds__cache_entry {
    char kind; /* 'V' or 'N' */
    int64_t fresh_until_ms;
    int64_t load_ms;
    const char *body; /* borrowed from the parsed text; not NUL-terminated */
    size_t body_len;  /* > 0 for 'V', 0 for 'N' */
} ds__cache_entry;

/* Parses s[0..len) (any bytes); false when it is not an entry. */
bool ds__cache_entry_parse(const char *s, size_t len, ds__cache_entry *out);

/* The body of a 'V' entry as a new JSON reference, NULL when it is not
 * JSON. */
json_t *ds__cache_entry_body(const ds__cache_entry *e);

/* The entry text for `value` (a "not found" entry when NULL), in
 * ds__malloc'd memory, not NUL-terminated; NULL when the value cannot be
 * encoded or memory runs out. The numbers must be 0 or more. */
char *ds__cache_entry_encode(const json_t *value, int64_t fresh_until_ms,
                             int64_t load_ms, size_t *len);

#endif
