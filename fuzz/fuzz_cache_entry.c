/*
 * libFuzzer target for cache entries as read back from Redis (`make fuzz`):
 * another process, or a damaged value, may have written anything under an
 * entry key.
 *
 * Each input is used twice:
 *  1. as an entry read back: a parse that succeeds describes the text
 *     exactly (kind, both numbers as written, the body the rest of the
 *     input), and re-encoding what it holds parses to the same;
 *  2. as what a writer stores: two numbers (0 to INT64_MAX) from the first
 *     16 bytes and, when the rest is JSON, that value (else "not found"):
 *     the entry written must parse back to the same numbers and value.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_internal.h"
#include "core/internal.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            __builtin_trap();                                                  \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The decimal number at *p (digits only, no sign), independently of the
 * parser under test; advances *p. */
static int64_t read_number(const char **p) {
    int64_t v = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++)
        v = v * 10 + (**p - '0'); /* the parser already bounded it */
    return v;
}

/* Writes the entry for (value, fresh, load), reads it back, compares. */
static void round_trip(const json_t *value, int64_t fresh, int64_t load) {
    size_t len;
    char *text = ds__cache_entry_encode(value, fresh, load, &len);
    CHECK(text);
    ds__cache_entry e;
    CHECK(ds__cache_entry_parse(text, len, &e));
    CHECK(e.kind == (value ? 'V' : 'N'));
    CHECK(e.fresh_until_ms == fresh && e.load_ms == load);
    CHECK(e.body >= text && e.body + e.body_len == text + len);
    if (value) {
        json_t *back = ds__cache_entry_body(&e);
        CHECK(back && json_equal(back, value));
        json_decref(back);
    }
    ds__free(text);
}

static void as_read_back(const char *s, size_t len) {
    ds__cache_entry e;
    if (!ds__cache_entry_parse(s, len, &e))
        return;
    CHECK(e.kind == 'V' || e.kind == 'N');
    CHECK(s[0] == '1' && s[1] == ' ' && s[2] == e.kind && s[3] == ' ');
    CHECK(e.fresh_until_ms >= 0 && e.load_ms >= 0);
    const char *p = s + 4;
    CHECK(read_number(&p) == e.fresh_until_ms && *p++ == ' ');
    CHECK(read_number(&p) == e.load_ms && *p++ == '\n');
    CHECK(e.body == p && e.body + e.body_len == s + len);
    CHECK(e.kind == 'V' ? e.body_len > 0 : e.body_len == 0);
    if (e.kind == 'N') {
        round_trip(NULL, e.fresh_until_ms, e.load_ms);
        return;
    }
    json_t *v = ds__cache_entry_body(&e);
    if (v) {
        round_trip(v, e.fresh_until_ms, e.load_ms);
        json_decref(v);
    }
}

static void as_written(const uint8_t *data, size_t size) {
    if (size < 16)
        return;
    uint64_t a, b;
    memcpy(&a, data, 8);
    memcpy(&b, data + 8, 8);
    int64_t fresh = (int64_t)(a >> 1), load = (int64_t)(b >> 1);
    json_error_t jerr;
    json_t *v = json_loadb((const char *)data + 16, size - 16, JSON_DECODE_ANY,
                           &jerr);
    round_trip(v, fresh, load);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exactly `size` bytes, so ASan sees a read past the end */
    char *s = malloc(size ? size : 1);
    CHECK(s);
    memcpy(s, data, size);
    as_read_back(s, size);
    free(s);
    as_written(data, size);
    return 0;
}
