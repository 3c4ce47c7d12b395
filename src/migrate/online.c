/* What the runner reads around a statement to run it online: the
 * "-- ds:when" condition above it, and the index a CREATE INDEX
 * CONCURRENTLY builds (to repair an INVALID one a failed run left). */
#include <string.h>

#include "migrate/migrate_internal.h"

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

bool ds__stmt_directive(const char *file, const ds__sql_stmt *s,
                        const char *mark, const char **arg, size_t *len) {
    /* walk back over the comment lines directly above the statement */
    const char *line_end = s->text;
    while (line_end > file && line_end[-1] != '\n')
        line_end--; /* the statement's own line start */
    while (line_end > file) {
        const char *end = line_end - 1; /* the '\n' ending the line above */
        const char *start = end;
        while (start > file && start[-1] != '\n')
            start--;
        const char *p = start;
        while (p < end && is_blank(*p))
            p++;
        if (end - p < 2 || p[0] != '-' || p[1] != '-')
            return false; /* code or a blank line: no condition */
        p += 2;
        while (p < end && is_blank(*p))
            p++;
        size_t ml = strlen(mark);
        if ((size_t)(end - p) >= ml && !memcmp(p, mark, ml) &&
            (p + ml == end || is_blank(p[ml]))) {
            p += ml;
            while (p < end && is_blank(*p))
                p++;
            const char *q = end;
            while (q > p && is_blank(q[-1]))
                q--;
            *arg = p;
            *len = (size_t)(q - p);
            return true;
        }
        line_end = start;
    }
    return false;
}

bool ds__stmt_when(const char *file, const ds__sql_stmt *s, const char **expr,
                   size_t *len) {
    return ds__stmt_directive(file, s, "ds:when", expr, len) && *len > 0;
}

/* The next word of `s` at *i (letters, digits, '_', or a "quoted" name
 * with '.' parts), lower-cased into `w` for keywords. */
static size_t next_word(const char *s, size_t len, size_t *i, char *w,
                        size_t cap, const char **raw) {
    while (*i < len && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' ||
                        s[*i] == '\r'))
        (*i)++;
    size_t start = *i;
    while (*i < len) {
        char c = s[*i];
        if (c == '"') {
            (*i)++;
            while (*i < len && s[*i] != '"')
                (*i)++;
            if (*i < len)
                (*i)++;
            continue;
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '$' ||
            (unsigned char)c >= 0x80) {
            (*i)++;
            continue;
        }
        break;
    }
    size_t n = *i - start;
    size_t k = 0;
    for (; k < n && k + 1 < cap; k++) {
        char c = s[start + k];
        w[k] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    w[k] = '\0';
    if (raw)
        *raw = s + start;
    return n;
}

bool ds__stmt_concurrent_index(const ds__sql_stmt *s, char *name, size_t cap) {
    char w[64];
    size_t i = 0;
    const char *raw;
    next_word(s->text, s->len, &i, w, sizeof w, NULL);
    if (strcmp(w, "create") != 0)
        return false;
    next_word(s->text, s->len, &i, w, sizeof w, NULL);
    if (!strcmp(w, "unique"))
        next_word(s->text, s->len, &i, w, sizeof w, NULL);
    if (strcmp(w, "index") != 0)
        return false;
    next_word(s->text, s->len, &i, w, sizeof w, NULL);
    if (strcmp(w, "concurrently") != 0)
        return false;
    size_t n = next_word(s->text, s->len, &i, w, sizeof w, &raw);
    if (!strcmp(w, "if")) {
        next_word(s->text, s->len, &i, w, sizeof w, NULL); /* not */
        next_word(s->text, s->len, &i, w, sizeof w, NULL); /* exists */
        n = next_word(s->text, s->len, &i, w, sizeof w, &raw);
    }
    if (n == 0 || n + 1 > cap || !strcmp(w, "on"))
        return false; /* an unnamed index cannot be left behind by name */
    memcpy(name, raw, n);
    name[n] = '\0';
    return true;
}
