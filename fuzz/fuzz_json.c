/*
 * libFuzzer target for the library's JSON writer (`make fuzz`).
 *
 * Each input that jansson parses (any JSON value) is written with
 * ds__json_dumps under several flag sets and must:
 *  - read back (jansson) as a value equal to the input's, reals included
 *    bit for bit and the sign of zero kept;
 *  - be jansson's own text byte for byte when the value holds no real;
 *  - write every real as the shortest text that reads back (no shorter
 *    %.*g does).
 * The first input byte, when it is not JSON, instead feeds 8 bytes as a
 * double to ds__json_real_text, with the same shortest/round-trip checks.
 * Every input also goes through ds__json_loadb (the fast reader of the
 * database's JSON), which must give jansson's value or jansson's error.
 * Any violated property traps, which libFuzzer reports as a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            __builtin_trap();                                                  \
    } while (0)

static int has_real(const json_t *j) {
    size_t i;
    const char *k;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_REAL: return 1;
    case JSON_ARRAY:
        json_array_foreach((json_t *)j, i, v) if (has_real(v)) return 1;
        return 0;
    case JSON_OBJECT:
        json_object_foreach((json_t *)j, k, v) if (has_real(v)) return 1;
        return 0;
    default: return 0;
    }
}

/* equal, with reals compared by bits (so -0.0 differs from 0.0) */
static int same(const json_t *a, const json_t *b) {
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_real(a)) {
        double x = json_real_value(a), y = json_real_value(b);
        return memcmp(&x, &y, sizeof x) == 0;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !same(v, w))
                return 0;
        }
        return 1;
    }
    return json_equal(a, b);
}

static void check_real(double v) {
    char buf[DS__JSON_REAL_MAX], probe[40];
    int n = ds__json_real_text(v, buf, sizeof buf);
    if (!isfinite(v)) {
        CHECK(n == -1);
        return;
    }
    CHECK(n > 0 && (size_t)n == strlen(buf));
    double back = strtod(buf, NULL);
    CHECK(memcmp(&back, &v, sizeof v) == 0);
    CHECK(strchr(buf, '.') || strchr(buf, 'e'));
    /* significant digits of ours against the shortest %.*g */
    int digits = 0, lead = 1, trailing = 0;
    for (const char *p = buf; *p && *p != 'e'; p++) {
        if (*p < '0' || *p > '9')
            continue;
        if (lead && *p == '0')
            continue;
        lead = 0;
        digits++;
        trailing = *p == '0' ? trailing + 1 : 0;
    }
    digits -= trailing;
    if (digits < 1)
        digits = 1;
    for (int p = 1; p < digits; p++) {
        snprintf(probe, sizeof probe, "%.*g", p, v);
        CHECK(strtod(probe, NULL) != v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    /* the fast reader: jansson's value, or jansson's error */
    for (int any = 0; any < 2; any++) {
        size_t rf = any ? JSON_DECODE_ANY | JSON_ALLOW_NUL : 0;
        json_error_t e1, e2;
        json_t *theirs = any ? json_incref(j)
                             : json_loadb((const char *)data, size, rf, &e1);
        json_t *ours = ds__json_loadb((const char *)data, size, rf, &e2);
        CHECK((theirs == NULL) == (ours == NULL));
        CHECK(!theirs || same(theirs, ours));
        CHECK(theirs || any || (e1.position == e2.position &&
                                strcmp(e1.text, e2.text) == 0));
        json_decref(theirs);
        json_decref(ours);
    }
    if (!j) {
        if (size >= 8) {
            double v;
            memcpy(&v, data, sizeof v);
            check_real(v);
        }
        return 0;
    }
    static const size_t flags[] = {JSON_COMPACT | JSON_ENCODE_ANY, JSON_ENCODE_ANY,
                                   JSON_INDENT(2) | JSON_ENCODE_ANY,
                                   JSON_COMPACT | JSON_ENSURE_ASCII |
                                       JSON_SORT_KEYS | JSON_ENCODE_ANY};
    int reals = has_real(j);
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        char *ours = ds__json_dumps(j, flags[f]);
        CHECK(ours);
        size_t len = ds__json_dumpb(j, NULL, 0, flags[f]);
        CHECK(len == strlen(ours)); /* a NUL inside a string is \u0000 */
        json_t *back = json_loads(ours, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        CHECK(back && same(j, back));
        json_decref(back);
        if (!reals) {
            char *theirs = json_dumps(j, flags[f]);
            CHECK(theirs && strcmp(ours, theirs) == 0);
            free(theirs);
        }
        free(ours);
    }
    json_decref(j);
    return 0;
}
