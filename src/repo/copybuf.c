/* The COPY stream's buffer: every size computed here is checked against
 * SIZE_MAX before it is used, so a huge declared size fails cleanly
 * instead of wrapping to a small allocation that is then overrun. */
#include "repo/copybuf.h"

#include "core/internal.h"

size_t ds__copy_buf_grown_cap(size_t cap, size_t need) {
    if (cap == 0)
        cap = DS_COPY_CHUNK;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return need; /* doubling would wrap: exactly what is needed */
        cap *= 2;
    }
    return cap;
}

bool ds__copy_buf_reserve(ds__copy_buf *b, size_t more) {
    if (more > SIZE_MAX - b->len)
        return false;
    size_t need = b->len + more;
    if (need <= b->cap)
        return true;
    size_t cap = ds__copy_buf_grown_cap(b->cap, need);
    char *np = ds__realloc(b->p, cap);
    if (!np)
        return false;
    b->p = np;
    b->cap = cap;
    return true;
}

size_t ds__copy_event_row_size(size_t name_len, size_t json_len) {
    /* a COPY field's length is a signed 32-bit integer */
    if (name_len > INT32_MAX || json_len > INT32_MAX)
        return 0;
    /* field count 2, user id 4+8, name 4+n, properties 4+n, occurred_at
     * 4+8: with both lengths below 2^31 the sum cannot wrap a 64-bit
     * size_t, but a 32-bit one it can */
    size_t fixed = 2 + 12 + 4 + 4 + 12;
    if (name_len > SIZE_MAX - fixed || json_len > SIZE_MAX - fixed - name_len)
        return 0;
    return fixed + name_len + json_len;
}
