/* DATABASE_REPLICA_URLS: one setting, several URLs. The pool opens them and
 * the redaction shows them, so neither owns the split. */
#include <stdbool.h>
#include <string.h>

#include "core/config_internal.h"
#include "core/internal.h"

/* White space as libpq's conninfo parser skips it (C isspace). */
static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}

static bool starts_new_url(const char *p) {
    while (is_blank(*p))
        p++;
    if (strncmp(p, "postgresql://", 13) == 0 ||
        strncmp(p, "postgres://", 11) == 0)
        return true;
    /* a conninfo string starts with "keyword =" */
    const char *k = p;
    while ((*k >= 'a' && *k <= 'z') || *k == '_')
        k++;
    while (is_blank(*k))
        k++;
    return k > p && *k == '=';
}

void ds__config_free_urls(char **urls) {
    if (!urls)
        return;
    for (char **u = urls; *u; u++)
        ds__secret_free(*u);
    ds__free(urls);
}

ds_status ds__config_split_urls(const char *list, char ***out, size_t *count,
                                ds_error *err) {
    *out = NULL;
    *count = 0;
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += (*p == ',');
    char **urls = ds__calloc(cap + 1, sizeof *urls);
    if (!urls)
        return ds__error_set(err, DS_ERR_NOMEM, "out of memory");
    size_t n = 0;
    const char *start = list;
    for (const char *p = list;; p++) {
        if (*p == '\0' || (*p == ',' && starts_new_url(p + 1))) {
            /* an entry of white space alone is no URL (libpq would read
             * it as an empty conninfo: every default, a local socket) */
            while (start < p && is_blank(*start))
                start++;
            size_t len = (size_t)(p - start);
            while (len && is_blank(start[len - 1]))
                len--;
            if (len) {
                char *u = ds__secret_strdup(start);
                if (!u) {
                    ds__config_free_urls(urls);
                    return ds__error_set(err, DS_ERR_NOMEM, "out of memory");
                }
                u[len] = '\0';
                urls[n++] = u;
            }
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    *out = urls;
    *count = n;
    return DS_OK;
}
