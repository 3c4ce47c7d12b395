/* Vector arithmetic of the memory store: validation and normalisation,
 * dot products, the little-endian bytea form, the 8-bit sketches of the
 * fallback backend and the binary array parameters. */
#include <math.h>

#include "memory/memory_internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

static inline float load_le_float(const unsigned char *p) {
    uint32_t bits;
    memcpy(&bits, p, 4);
#if HOST_BIG_ENDIAN
    bits = __builtin_bswap32(bits);
#endif
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline void store_le_float(unsigned char *p, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
#if HOST_BIG_ENDIAN
    bits = __builtin_bswap32(bits);
#endif
    memcpy(p, &bits, 4);
}

ds_status ds__vec_normalize(const float *v, size_t dim, size_t want_dim,
                            const char *what, float *unit, ds_error *err) {
    if (!v)
        return ds__error_set(err, DS_ERR_INVALID, "%s is NULL", what);
    if (dim != want_dim)
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s has %zu dimensions; the database stores %zu",
                             what, dim, want_dim);
    double norm2 = 0;
    for (size_t i = 0; i < dim; i++) {
        if (!isfinite(v[i]))
            return ds__error_set(err, DS_ERR_INVALID,
                                 "%s[%zu] is %s: embeddings must be finite",
                                 what, i, isnan(v[i]) ? "NaN" : "infinite");
        norm2 += (double)v[i] * (double)v[i];
    }
    /* Below this the direction is lost in float rounding. */
    if (!(norm2 > 1e-30) || !isfinite(norm2))
        return ds__error_set(err, DS_ERR_INVALID,
                             "%s has length zero: cosine similarity is "
                             "undefined for it",
                             what);
    double inv = 1.0 / sqrt(norm2);
    for (size_t i = 0; i < dim; i++)
        unit[i] = (float)((double)v[i] * inv);
    return DS_OK;
}

/* Eight independent sums: the compiler keeps them in vector registers
 * without reassociating anything. */
float ds__vec_dot(const float *a, const float *b, size_t dim) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float tail = 0;
    for (; i < dim; i++)
        tail += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) +
           tail;
}

float ds__vec_dot_le(const float *q, const unsigned char *le, size_t dim) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= dim; i += 8) {
        float x[8];
#if HOST_BIG_ENDIAN
        for (int j = 0; j < 8; j++)
            x[j] = load_le_float(le + 4 * (i + j));
#else
        memcpy(x, le + 4 * i, sizeof x);
#endif
        for (int j = 0; j < 8; j++)
            s[j] += q[i + j] * x[j];
    }
    float tail = 0;
    for (; i < dim; i++)
        tail += q[i] * load_le_float(le + 4 * i);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) +
           tail;
}

void ds__vec_to_le(const float *unit, size_t dim, unsigned char *out) {
#if HOST_BIG_ENDIAN
    for (size_t i = 0; i < dim; i++)
        store_le_float(out + 4 * i, unit[i]);
#else
    memcpy(out, unit, 4 * dim);
#endif
}

void ds__vec_from_le(const unsigned char *le, size_t dim, float *out) {
    for (size_t i = 0; i < dim; i++)
        out[i] = load_le_float(le + 4 * i);
}

/* Each component is rounded to a multiple of step = max|v_i| / 127; the
 * stored bound is the exact Euclidean norm of the rounding error, rounded
 * up, so by Cauchy-Schwarz |q.v - q.v'| <= |q| * bound = bound for a unit
 * query. */
void ds__sketch_build(const float *unit, size_t dim, unsigned char *out) {
    float max = 0;
    for (size_t i = 0; i < dim; i++)
        if (fabsf(unit[i]) > max)
            max = fabsf(unit[i]);
    float step = max > 0 ? max / 127.0f : 1.0f;
    double err2 = 0;
    for (size_t i = 0; i < dim; i++) {
        long q = lrintf(unit[i] / step);
        if (q > 127)
            q = 127;
        if (q < -127)
            q = -127;
        out[8 + i] = (unsigned char)(int8_t)q;
        double d = (double)unit[i] - (double)q * (double)step;
        err2 += d * d;
    }
    float bound = nextafterf((float)sqrt(err2), INFINITY);
    store_le_float(out, step);
    store_le_float(out + 4, bound);
}

/* What ds__sketch_build can write for a unit vector: max|v_i| is in (0, 1],
 * so 0 < step <= 1/127, and each component's rounding error is at most
 * step/2, so bound <= step/2 * sqrt(dim); both up to float rounding. */
bool ds__sketch_plausible(const unsigned char *sketch, size_t dim) {
    float step = load_le_float(sketch);
    float bound = load_le_float(sketch + 4);
    const float margin = 1.0f + 1e-5f;
    return step > 0 && step <= margin / 127.0f && bound >= 0 &&
           bound <= 0.5f * step * sqrtf((float)dim) * margin + 1e-30f;
}

float ds__sketch_dot(const float *q, const unsigned char *sketch, size_t dim,
                     float *bound) {
    const int8_t *v = (const int8_t *)(sketch + 8);
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += q[i + j] * (float)v[i + j];
    float tail = 0;
    for (; i < dim; i++)
        tail += q[i] * (float)v[i];
    *bound = load_le_float(sketch + 4);
    float sum = ((s[0] + s[1]) + (s[2] + s[3])) +
                ((s[4] + s[5]) + (s[6] + s[7])) + tail;
    return sum * load_le_float(sketch);
}

/* float32 rounding of two dot products of unit vectors (about dim/8 + 4
 * additions each at 2^-24 relative error) and of the normalisation, with a
 * wide margin: a candidate too many costs a few bytes, one too few a wrong
 * answer. */
float ds__sketch_slack(size_t dim) { return 1e-6f + (float)dim * 4e-8f; }

bool ds__vec_from_array(const char *data, int len, size_t dim, float *out) {
    if (len < 20 || dim > (SIZE_MAX - 20) / 8 || (size_t)len != 20 + 8 * dim ||
        ds__get_be32(data) != 1 || ds__get_be32(data + 4) != 0 ||
        ds__get_be32(data + 8) != DS_OID_FLOAT4 ||
        ds__get_be32(data + 12) != dim)
        return false;
    const char *p = data + 20;
    for (size_t i = 0; i < dim; i++, p += 8) {
        if (ds__get_be32(p) != 4)
            return false;
        uint32_t bits = ds__get_be32(p + 4);
        memcpy(&out[i], &bits, 4);
    }
    return true;
}

/* pgvector's binary form (vector_send): int16 dimensions, int16 unused
 * (zero), then the values as big-endian float4: half the bytes of a
 * real[] and no per-element conversion on the server. */
bool ds__vec_from_pgvector(const char *data, int len, size_t dim,
                           float *out) {
    if (len < 4 || dim > (SIZE_MAX - 4) / 4 || (size_t)len != 4 + 4 * dim ||
        ds__get_be16(data) != dim || ds__get_be16(data + 2) != 0)
        return false;
    const char *p = data + 4;
    for (size_t i = 0; i < dim; i++, p += 4) {
        uint32_t bits = ds__get_be32(p);
        memcpy(&out[i], &bits, 4);
    }
    return true;
}
