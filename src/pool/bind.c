/* The one parameter binder and binary array encoder (see pool/pgbin.h). */
#include <limits.h>
#include <string.h>

#include "pool/pgbin.h"

/* ---- binder --------------------------------------------------------------- */

static void point_inline(ds__bind *b) {
    b->values = b->values_in;
    b->lengths = b->lengths_in;
    b->formats = b->formats_in;
    b->types = b->types_in;
    b->scratch = b->scratch_in;
    b->owned = b->owned_in;
    b->release = b->release_in;
    b->cap = DS_BIND_INLINE;
}

void ds__bind_init(ds__bind *b) {
    b->n = 0;
    b->failed = DS_OK;
    b->failed_at = 0;
    b->why = NULL;
    point_inline(b);
}

/* Records the first failure; `at` is the parameter's number ($at). */
static void fail(ds__bind *b, int at, ds_status code, const char *why) {
    if (b->failed == DS_OK) {
        b->failed = code;
        b->failed_at = at;
        b->why = why;
    }
}

static bool on_heap(const ds__bind *b) { return b->values != b->values_in; }

static void free_heap(ds__bind *b) {
    if (!on_heap(b))
        return;
    ds__free(b->values);
    ds__free(b->lengths);
    ds__free(b->formats);
    ds__free(b->types);
    ds__free(b->scratch);
    ds__free(b->owned);
    ds__free(b->release);
    point_inline(b);
}

bool ds__bind_reserve(ds__bind *b, int n) {
    if (n < 0 || n > DS_BIND_MAX) {
        fail(b, n, DS_ERR_INVALID, "more parameters than the protocol allows");
        return false;
    }
    if (n <= b->cap)
        return true;
    if (b->n > 0) {
        fail(b, b->n, DS_ERR_INTERNAL, "reserve after the first bind");
        return false;
    }
    size_t cap = (size_t)n;
    b->values = ds__calloc(cap, sizeof *b->values);
    b->lengths = ds__calloc(cap, sizeof *b->lengths);
    b->formats = ds__calloc(cap, sizeof *b->formats);
    b->types = ds__calloc(cap, sizeof *b->types);
    b->scratch = ds__calloc(cap, sizeof *b->scratch);
    b->owned = ds__calloc(cap, sizeof *b->owned);
    b->release = ds__calloc(cap, sizeof *b->release);
    b->cap = n;
    if (!b->values || !b->lengths || !b->formats || !b->types ||
        !b->scratch || !b->owned || !b->release) {
        free_heap(b);
        fail(b, 0, DS_ERR_NOMEM, "out of memory");
        return false;
    }
    return true;
}

static void release_slot(ds__bind *b, int i) {
    if (!b->owned[i])
        return;
    if (b->release[i])
        b->release[i](b->owned[i]);
    else
        ds__free(b->owned[i]);
    b->owned[i] = NULL;
}

void ds__bind_free(ds__bind *b) {
    for (int i = 0; i < b->n; i++)
        release_slot(b, i);
    free_heap(b);
    ds__bind_init(b);
}

ds_status ds__bind_check(const ds__bind *b, const char *context,
                         ds_error *err) {
    if (b->failed == DS_OK)
        return DS_OK;
    if (b->failed_at <= 0)
        return ds__error_set(err, b->failed, "%s: parameters: %s",
                             context ? context : "query",
                             b->why ? b->why : "could not be bound");
    return ds__error_set(err, b->failed, "%s: parameter $%d: %s",
                         context ? context : "query", b->failed_at,
                         b->why ? b->why : "could not be bound");
}

/* The next slot, or -1 when the binder is full or has failed (a failed
 * binder never runs, so later binds are ignored). */
static int slot(ds__bind *b, Oid type, int format) {
    if (b->failed != DS_OK)
        return -1;
    if (b->n >= b->cap) {
        fail(b, b->n + 1, DS_ERR_INTERNAL,
             "more parameters than the binder holds");
        return -1;
    }
    int i = b->n++;
    b->values[i] = NULL;
    b->lengths[i] = 0;
    b->formats[i] = format;
    b->types[i] = type;
    b->owned[i] = NULL;
    b->release[i] = NULL;
    return i;
}

static void bind_fixed(ds__bind *b, Oid type, const char *bytes, int len) {
    int i = slot(b, type, 1);
    if (i < 0)
        return;
    memcpy(b->scratch[i], bytes, (size_t)len);
    b->values[i] = b->scratch[i];
    b->lengths[i] = len;
}

void ds__bind_int64(ds__bind *b, int64_t v) {
    char be[8];
    ds__put_be64(be, (uint64_t)v);
    bind_fixed(b, DS_OID_INT8, be, 8);
}

void ds__bind_int32(ds__bind *b, int32_t v) {
    char be[4];
    ds__put_be32(be, (uint32_t)v);
    bind_fixed(b, DS_OID_INT4, be, 4);
}

void ds__bind_float4(ds__bind *b, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    char be[4];
    ds__put_be32(be, bits);
    bind_fixed(b, DS_OID_FLOAT4, be, 4);
}

void ds__bind_float8(ds__bind *b, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    char be[8];
    ds__put_be64(be, bits);
    bind_fixed(b, DS_OID_FLOAT8, be, 8);
}

void ds__bind_bool(ds__bind *b, bool v) {
    char byte = v ? 1 : 0;
    bind_fixed(b, DS_OID_BOOL, &byte, 1);
}

void ds__bind_ts(ds__bind *b, int64_t epoch_us) {
    char be[8];
    ds__put_be64(be, (uint64_t)ds__ts_to_pg(epoch_us));
    bind_fixed(b, DS_OID_TIMESTAMPTZ, be, 8);
}

void ds__bind_null_as(ds__bind *b, Oid type) { (void)slot(b, type, 1); }

void ds__bind_null(ds__bind *b) { ds__bind_null_as(b, 0); }

static void bind_borrowed(ds__bind *b, Oid type, const void *p, size_t len) {
    int i = slot(b, type, 1);
    if (i < 0)
        return;
    if (len > INT32_MAX) {
        fail(b, i + 1, DS_ERR_INVALID, "longer than 2 GiB");
        return;
    }
    b->values[i] = p ? (const char *)p : "";
    b->lengths[i] = (int)len;
}

void ds__bind_bytes(ds__bind *b, const void *p, size_t len) {
    bind_borrowed(b, DS_OID_BYTEA, p, len);
}

void ds__bind_text_n(ds__bind *b, const char *s, size_t len) {
    bind_borrowed(b, DS_OID_TEXT, s, len);
}

void ds__bind_text(ds__bind *b, const char *s) {
    if (s)
        ds__bind_text_n(b, s, strlen(s));
    else
        ds__bind_null_as(b, DS_OID_TEXT);
}

void ds__bind_text_as(ds__bind *b, const char *s, Oid type) {
    int i = slot(b, type, 0);
    if (i < 0 || !s)
        return;
    size_t len = strlen(s);
    if (len > INT32_MAX) {
        fail(b, i + 1, DS_ERR_INVALID, "longer than 2 GiB");
        return;
    }
    b->values[i] = s;
    b->lengths[i] = (int)len;
}

void ds__bind_owned(ds__bind *b, char *buf, size_t len, Oid type, int format,
                    ds__bind_release_fn release) {
    int i = slot(b, type, format);
    if (i < 0 || len > INT32_MAX) {
        if (i >= 0)
            fail(b, i + 1, DS_ERR_INVALID, "longer than 2 GiB");
        if (release)
            release(buf);
        else
            ds__free(buf);
        return;
    }
    b->values[i] = buf;
    b->lengths[i] = (int)len;
    b->owned[i] = buf;
    b->release[i] = release;
}

void ds__bind_jsonb_owned(ds__bind *b, char *buf, size_t len) {
    ds__bind_owned(b, buf, len, DS_OID_JSONB, 1, NULL);
}

/* ---- arrays ---------------------------------------------------------------- */

#define ARRAY_HEADER 20
/* PostgreSQL's MaxArraySize: larger arrays are refused by the server. */
#define ARRAY_MAX_ELEMS ((size_t)0x7ffffff)

void ds__pgarr_init(ds__pgarr *a, Oid elem) {
    memset(a, 0, sizeof *a);
    a->elem = elem;
}

static bool grow(ds__pgarr *a, size_t more) {
    if (a->failed)
        return false;
    size_t base = a->len ? a->len : ARRAY_HEADER;
    if (more > (size_t)INT32_MAX - base) { /* a parameter is at most 2 GiB */
        a->failed = true;
        return false;
    }
    if (base + more <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < base + more)
        cap *= 2; /* base + more < 2^31: no overflow */
    char *p = ds__realloc(a->buf, cap);
    if (!p) {
        a->failed = a->nomem = true;
        return false;
    }
    a->buf = p;
    a->cap = cap;
    a->len = base;
    return true;
}

bool ds__pgarr_reserve(ds__pgarr *a, size_t elems, size_t bytes_each) {
    if (bytes_each > (size_t)INT32_MAX - 4 ||
        (elems && 4 + bytes_each > (size_t)INT32_MAX / elems)) {
        a->failed = true;
        return false;
    }
    return grow(a, elems * (4 + bytes_each));
}

bool ds__pgarr_add(ds__pgarr *a, const void *p, size_t n) {
    if (p && n > INT32_MAX) {
        a->failed = true;
        return false;
    }
    size_t body = p ? n : 0;
    if (a->count >= ARRAY_MAX_ELEMS) {
        a->failed = true;
        return false;
    }
    if (body > SIZE_MAX - 4 || !grow(a, 4 + body))
        return false;
    ds__put_be32(a->buf + a->len, p ? (uint32_t)n : UINT32_MAX);
    a->len += 4;
    if (body) {
        memcpy(a->buf + a->len, p, body);
        a->len += body;
    }
    if (!p)
        a->has_null = true;
    a->count++;
    return true;
}

bool ds__pgarr_add_int8(ds__pgarr *a, int64_t v) {
    char be[8];
    ds__put_be64(be, (uint64_t)v);
    return ds__pgarr_add(a, be, 8);
}

bool ds__pgarr_add_int4(ds__pgarr *a, int32_t v) {
    char be[4];
    ds__put_be32(be, (uint32_t)v);
    return ds__pgarr_add(a, be, 4);
}

bool ds__pgarr_add_float4(ds__pgarr *a, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    char be[4];
    ds__put_be32(be, bits);
    return ds__pgarr_add(a, be, 4);
}

bool ds__pgarr_finish(ds__pgarr *a) {
    if (a->failed || a->count > ARRAY_MAX_ELEMS || !grow(a, 0))
        return false;
    ds__put_be32(a->buf, 1);
    ds__put_be32(a->buf + 4, a->has_null ? 1 : 0);
    ds__put_be32(a->buf + 8, a->elem);
    ds__put_be32(a->buf + 12, (uint32_t)a->count);
    ds__put_be32(a->buf + 16, 1);
    return true;
}

void ds__pgarr_free(ds__pgarr *a) {
    ds__free(a->buf);
    a->buf = NULL;
    Oid elem = a->elem;
    ds__pgarr_init(a, elem);
}

void ds__bind_array(ds__bind *b, ds__pgarr *a, Oid array_type) {
    if (!ds__pgarr_finish(a)) {
        bool nomem = a->nomem;
        ds__pgarr_free(a);
        int i = slot(b, array_type, 1);
        if (i >= 0)
            fail(b, i + 1, nomem ? DS_ERR_NOMEM : DS_ERR_INVALID,
                 nomem ? "out of memory" : "array too large");
        return;
    }
    char *buf = a->buf;
    size_t len = a->len;
    a->buf = NULL;
    ds__pgarr_free(a);
    ds__bind_owned(b, buf, len, array_type, 1, NULL);
}

void ds__bind_int8_array(ds__bind *b, const int64_t *v, size_t n) {
    ds__pgarr a;
    ds__pgarr_init(&a, DS_OID_INT8);
    bool ok = ds__pgarr_reserve(&a, n, 8);
    for (size_t i = 0; ok && i < n; i++)
        ok = ds__pgarr_add_int8(&a, v[i]);
    ds__bind_array(b, &a, DS_OID_INT8_ARRAY);
}

void ds__bind_float4_array(ds__bind *b, const float *v, size_t n) {
    ds__pgarr a;
    ds__pgarr_init(&a, DS_OID_FLOAT4);
    bool ok = ds__pgarr_reserve(&a, n, 4);
    for (size_t i = 0; ok && i < n; i++)
        ok = ds__pgarr_add_float4(&a, v[i]);
    ds__bind_array(b, &a, DS_OID_FLOAT4_ARRAY);
}
