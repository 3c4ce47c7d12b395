/* Binary one-dimensional arrays for array parameters (int8[], bytea[]):
 * header (ndim, has-null flag, element type, length, lower bound), then
 * each element as a length (-1 for NULL) and its bytes. */
#include <string.h>

#include "crypto/crypto_internal.h"
#include "pool/pool_internal.h"

static bool reserve(ds__pgarr *a, size_t more) {
    if (more > SIZE_MAX / 4 - a->len)
        return false;
    if (a->len + more <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + more)
        cap *= 2;
    char *p = ds__realloc(a->buf, cap);
    if (!p)
        return false;
    a->buf = p;
    a->cap = cap;
    return true;
}

bool ds__pgarr_begin(ds__pgarr *a, unsigned int elem, int n, bool has_null) {
    a->len = 0;
    if (!reserve(a, 20))
        return false;
    ds__put_be32(a->buf, 1);
    ds__put_be32(a->buf + 4, has_null ? 1 : 0);
    ds__put_be32(a->buf + 8, elem);
    ds__put_be32(a->buf + 12, (uint32_t)n);
    ds__put_be32(a->buf + 16, 1);
    a->len = 20;
    return true;
}

bool ds__pgarr_add(ds__pgarr *a, const void *p, size_t n) {
    if (p && n > INT32_MAX)
        return false;
    if (!reserve(a, 4 + (p ? n : 0)))
        return false;
    ds__put_be32(a->buf + a->len, p ? (uint32_t)n : UINT32_MAX);
    a->len += 4;
    if (p && n) {
        memcpy(a->buf + a->len, p, n);
        a->len += n;
    }
    return true;
}

void ds__pgarr_free(ds__pgarr *a) {
    ds__free(a->buf);
    memset(a, 0, sizeof *a);
}
