/*
 * PostgreSQL's binary wire format for database modules: type OIDs, the
 * big-endian and timestamp conversions, the one parameter binder and the
 * one binary array encoder. Both check their bounds: a bind or an element
 * that does not fit marks the binder or array as failed, and the statement
 * that would use it is refused before anything is sent. Never installed.
 */
#ifndef DS_POOL_PGBIN_H
#define DS_POOL_PGBIN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

/* Common type OIDs (pg_type.h is a server header, so we spell them). */
enum {
    DS_OID_BOOL = 16, DS_OID_BYTEA = 17, DS_OID_CHAR = 18, DS_OID_NAME = 19,
    DS_OID_INT8 = 20, DS_OID_INT2 = 21, DS_OID_INT4 = 23, DS_OID_TEXT = 25,
    DS_OID_OID = 26, DS_OID_JSON = 114, DS_OID_FLOAT4 = 700,
    DS_OID_FLOAT8 = 701, DS_OID_UNKNOWN = 705, DS_OID_BPCHAR = 1042,
    DS_OID_VARCHAR = 1043, DS_OID_TIMESTAMP = 1114, DS_OID_TIMESTAMPTZ = 1184,
    DS_OID_UUID = 2950, DS_OID_JSONB = 3802, DS_OID_FLOAT4_ARRAY = 1021,
    DS_OID_INT8_ARRAY = 1016, DS_OID_TEXT_ARRAY = 1009,
    DS_OID_BYTEA_ARRAY = 1001, DS_OID_JSONB_ARRAY = 3807, DS_OID_INET = 869,
    DS_OID_INT4_ARRAY = 1007
};

/* Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
#define DS_PG_EPOCH_OFFSET_US INT64_C(946684800000000)
/* The earliest timestamptz, 4714-11-24 00:00 UTC BC, in epoch
 * microseconds; the latest lies beyond what int64 epoch microseconds can
 * say. */
#define DS_PG_MIN_EPOCH_US INT64_C(-210866803200000000)

/* Epoch microseconds to PostgreSQL's binary timestamptz. INT64_MIN and
 * INT64_MAX are -infinity and infinity (as ds__ts_from_pg reads them
 * back). A time too far in the past to shift without overflow becomes a
 * value the server refuses as out of range instead of wrapping around to
 * a date far in the future. */
static inline int64_t ds__ts_to_pg(int64_t epoch_us) {
    if (epoch_us == INT64_MIN || epoch_us == INT64_MAX)
        return epoch_us;
    if (epoch_us < INT64_MIN + DS_PG_EPOCH_OFFSET_US)
        return INT64_MIN + 1;
    return epoch_us - DS_PG_EPOCH_OFFSET_US;
}

/* Binary timestamptz to epoch microseconds: -infinity is INT64_MIN and
 * infinity INT64_MAX. PostgreSQL's last years (from 294247 AD) do not fit
 * once shifted to the Unix epoch and read as INT64_MAX too. */
static inline int64_t ds__ts_from_pg(int64_t pg) {
    if (pg == INT64_MIN)
        return pg;
    if (pg > INT64_MAX - DS_PG_EPOCH_OFFSET_US)
        return INT64_MAX;
    return pg + DS_PG_EPOCH_OFFSET_US;
}

/* Big-endian helpers for binary parameters and results. */
static inline void ds__put_be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static inline void ds__put_be32(char *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static inline uint64_t ds__get_be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}
static inline uint32_t ds__get_be32(const char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}
static inline uint16_t ds__get_be16(const char *p) {
    return (uint16_t)(((unsigned char)p[0] << 8) | (unsigned char)p[1]);
}


/* ---- parameters --------------------------------------------------------- */

#define DS_BIND_INLINE 16
#define DS_BIND_MAX 65535 /* the protocol's limit */

/* Frees a buffer handed to the binder (NULL: ds__free). */
typedef void (*ds__bind_release_fn)(void *buf);

/*
 * Parameters for one statement, in the arrays libpq takes. Holds
 * DS_BIND_INLINE parameters without allocating; ds__bind_reserve() makes
 * room for more before the first bind. The arrays point into the struct
 * itself: never copy a ds__bind, pass its address. A bind that does not
 * fit (too many parameters, a value over 2 GiB, out of memory) records
 * `failed` and `why`; ds__stmt_run() and ds__sql_run() then refuse to run.
 */
typedef struct ds__bind {
    const char **values;
    int *lengths;
    int *formats;
    Oid *types; /* what each bind says it is; 0 lets the server infer */
    char (*scratch)[8];
    char **owned;
    ds__bind_release_fn *release;
    int n, cap;
    ds_status failed;
    int failed_at; /* $n of the parameter that failed; 0: all of them */
    const char *why;
    const char *values_in[DS_BIND_INLINE];
    int lengths_in[DS_BIND_INLINE];
    int formats_in[DS_BIND_INLINE];
    Oid types_in[DS_BIND_INLINE];
    char scratch_in[DS_BIND_INLINE][8];
    char *owned_in[DS_BIND_INLINE];
    ds__bind_release_fn release_in[DS_BIND_INLINE];
} ds__bind;

void ds__bind_init(ds__bind *b);
/* Room for `n` parameters; only before the first bind. False (and `failed`
 * set) when `n` is above DS_BIND_MAX or memory runs out. */
bool ds__bind_reserve(ds__bind *b, int n);
/* Frees what the binds own; the binder is empty again (as after init). */
void ds__bind_free(ds__bind *b);
/* DS_OK, or fills `err` naming `context` with why a bind failed. */
ds_status ds__bind_check(const ds__bind *b, const char *context,
                         ds_error *err);

void ds__bind_int64(ds__bind *b, int64_t v);
void ds__bind_int32(ds__bind *b, int32_t v);
void ds__bind_float4(ds__bind *b, float v);
void ds__bind_float8(ds__bind *b, double v);
void ds__bind_bool(ds__bind *b, bool v);
/* Epoch microseconds as timestamptz (ds__ts_to_pg). */
void ds__bind_ts(ds__bind *b, int64_t epoch_us);
/* SQL NULL of an inferred type, or of `type`. */
void ds__bind_null(ds__bind *b);
void ds__bind_null_as(ds__bind *b, Oid type);
/* Bytes borrowed for the call, as bytea (binary). */
void ds__bind_bytes(ds__bind *b, const void *p, size_t len);
/* Text borrowed for the call (binary text is the bytes); NULL binds SQL
 * NULL. */
void ds__bind_text(ds__bind *b, const char *s);
void ds__bind_text_n(ds__bind *b, const char *s, size_t len);
/* A NUL-terminated value in text format that the server parses as `type`
 * (0: inferred from the statement), e.g. an inet address. */
void ds__bind_text_as(ds__bind *b, const char *s, Oid type);
/* A buffer the binder owns from now on (freed by ds__bind_free with
 * `release`, NULL: ds__free; also when the bind fails). */
void ds__bind_owned(ds__bind *b, char *buf, size_t len, Oid type, int format,
                    ds__bind_release_fn release);
/* A binary jsonb buffer (version byte 1, then the text) the bind owns. */
void ds__bind_jsonb_owned(ds__bind *b, char *buf, size_t len);

/* ---- arrays ------------------------------------------------------------- */

/*
 * A one-dimensional binary array: header (ndim 1, has-null flag, element
 * type, element count, lower bound 1), then each element as a length (-1
 * for NULL) and its bytes. Elements are appended; the header is written by
 * ds__pgarr_finish() from what was added, so the count cannot disagree.
 * Sizes are overflow-checked; a failed add marks the array `failed`.
 */
typedef struct ds__pgarr {
    char *buf;
    size_t len, cap;
    size_t count;
    Oid elem;
    bool has_null;
    bool failed;
    bool nomem; /* failed for want of memory (else: too large) */
} ds__pgarr;

void ds__pgarr_init(ds__pgarr *a, Oid elem);
/* Room for `elems` more elements of `bytes_each` bytes (a hint). */
bool ds__pgarr_reserve(ds__pgarr *a, size_t elems, size_t bytes_each);
/* `p` NULL adds SQL NULL; else `n` bytes (at most INT32_MAX). */
bool ds__pgarr_add(ds__pgarr *a, const void *p, size_t n);
bool ds__pgarr_add_int8(ds__pgarr *a, int64_t v);
bool ds__pgarr_add_int4(ds__pgarr *a, int32_t v);
bool ds__pgarr_add_float4(ds__pgarr *a, float v);
/* Writes the header; false when an add failed or there are more elements
 * than an array can hold. */
bool ds__pgarr_finish(ds__pgarr *a);
void ds__pgarr_free(ds__pgarr *a);
/* Binds a finished array of `array_type` (int8[] is DS_OID_INT8_ARRAY),
 * handing its buffer to the binder; `a` is empty afterwards. An unfinished
 * or failed array fails the bind. */
void ds__bind_array(ds__bind *b, ds__pgarr *a, Oid array_type);
/* int8[] and float4[] parameters straight from C arrays. */
void ds__bind_int8_array(ds__bind *b, const int64_t *v, size_t n);
void ds__bind_float4_array(ds__bind *b, const float *v, size_t n);

#endif
