/* Checked allocation with an injection hook for out-of-memory tests. */
#include <errno.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static atomic_long fail_countdown;

void ds__test_fail_alloc_after(long n) { atomic_store(&fail_countdown, n); }

static bool should_fail(void) {
    long cur = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (cur > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &cur, cur - 1))
            return cur == 1;
    }
    return false;
}

void *ds__malloc(size_t size) {
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *ds__calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size)
        return NULL;
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *ds__realloc(void *ptr, size_t size) {
    if (should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

void *ds__reallocarray(void *ptr, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size)
        return NULL;
    return ds__realloc(ptr, count * size);
}

void ds__free(void *ptr) { free(ptr); }

DS_EXPORT void ds_free(void *ptr) { free(ptr); }

char *ds__strndup(const char *s, size_t n) {
    if (!s)
        return NULL;
    char *d = ds__malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ds__strdup(const char *s) { return s ? ds__strndup(s, strlen(s)) : NULL; }

char *ds__secret_strdup(const char *s) {
    /* sodium_malloc needs sodium_init (it reads the page size there) */
    if (!s || ds__ensure_init(NULL) != DS_OK || should_fail())
        return NULL;
    size_t n = strlen(s);
    char *d = sodium_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n + 1);
    return d;
}

void ds__secret_free(char *s) {
    if (s)
        sodium_free(s); /* wipes before unmapping */
}

void ds__wipe(void *ptr, size_t len) {
    if (ptr && len)
        sodium_memzero(ptr, len);
}
