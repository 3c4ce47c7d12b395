/* The growing buffer of a binary COPY stream (events.c), apart so that its
 * size arithmetic can be tested on its own. Never installed. */
#ifndef DS_REPO_COPYBUF_H
#define DS_REPO_COPYBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ds__copy_buf {
    char *p;
    size_t len, cap;
} ds__copy_buf;

/* The first allocation; the buffer doubles from there. */
#define DS_COPY_CHUNK ((size_t)256 * 1024)

/* The capacity to grow `cap` (0: none yet) to so that `need` bytes fit:
 * doubled from DS_COPY_CHUNK, or exactly `need` where doubling would pass
 * SIZE_MAX. Never less than `need`. */
size_t ds__copy_buf_grown_cap(size_t cap, size_t need);

/* Makes room for `more` bytes after len. False, with *b unchanged, when
 * the allocation fails or len + more (or the doubled capacity) would pass
 * SIZE_MAX. */
bool ds__copy_buf_reserve(ds__copy_buf *b, size_t more);

/* The bytes of one events row in COPY binary: field count, user id, name,
 * properties, occurred_at. 0 when a field is longer than a COPY field may
 * be (INT32_MAX) or the sum would pass SIZE_MAX. */
size_t ds__copy_event_row_size(size_t name_len, size_t json_len);

#endif
