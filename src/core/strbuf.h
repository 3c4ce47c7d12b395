/*
 * A growable NUL-terminated string for text the library builds (dry-run
 * scripts, rehearsal reports). An allocation failure sets `failed` and
 * makes every later append a no-op, so callers check once at the end.
 * Never installed.
 */
#ifndef DS_CORE_STRBUF_H
#define DS_CORE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "core/internal.h"

typedef struct ds__strbuf {
    char *s; /* ds__free() it; NULL until the first append */
    size_t len, cap;
    bool failed;
} ds__strbuf;

void ds__strbuf_add(ds__strbuf *b, const char *s, size_t n);
void ds__strbuf_puts(ds__strbuf *b, const char *s);
void ds__strbuf_printf(ds__strbuf *b, const char *fmt, ...) DS_PRINTF(2, 3);

#endif
