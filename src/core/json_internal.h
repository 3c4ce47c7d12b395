/* The library's JSON writer: jansson's text, with each real written as the
 * shortest decimal that reads back to the same double (0.7, not
 * 0.69999999999999996). Every JSON text the library stores goes through
 * these instead of json_dumps/json_dumpb/json_dump_callback. */
#ifndef DS_CORE_JSON_INTERNAL_H
#define DS_CORE_JSON_INTERNAL_H

#include <jansson.h>
#include <stddef.h>

/* Room for any double's text plus NUL. */
#define DS__JSON_REAL_MAX 32

/* The shortest text of a finite double that strtod reads back to the same
 * value (sign of zero included), always with '.' or an exponent so it stays
 * a real: 0.7 -> "0.7", 1.0 -> "1.0", 1e-7 -> "1e-7", -0.0 -> "-0.0".
 * Returns its length, or -1 for NaN/infinity or an outlen under
 * DS__JSON_REAL_MAX. */
int ds__json_real_text(double v, char *out, size_t outlen);

/* As jansson's json_dump_callback (flags JSON_COMPACT, JSON_ENCODE_ANY,
 * JSON_INDENT, JSON_SORT_KEYS, JSON_ENSURE_ASCII, JSON_ESCAPE_SLASH);
 * 0 on success, -1 on a callback failure or invalid value. */
int ds__json_dump_callback(const json_t *j, json_dump_callback_t cb,
                           void *data, size_t flags);
/* As json_dumpb: the full length (0 on failure); writes at most size. */
size_t ds__json_dumpb(const json_t *j, char *buf, size_t size, size_t flags);
/* As json_dumps: NUL-terminated text in jansson's allocator (free it as a
 * json_dumps result), NULL on failure. */
char *ds__json_dumps(const json_t *j, size_t flags);

/* As json_loadb, result and error alike, but the common shape of the
 * database's JSON (objects, arrays, strings, integers, literals) is read
 * without jansson's lexer; anything else is handed to json_loadb. */
json_t *ds__json_loadb(const char *text, size_t len, size_t flags,
                       json_error_t *err);

#endif /* DS_CORE_JSON_INTERNAL_H */
