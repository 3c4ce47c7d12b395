/*
 * Internal helpers shared by every module. Never installed.
 * Cross-file internal symbols use the ds__ prefix and hidden visibility.
 */
#ifndef DS_CORE_INTERNAL_H
#define DS_CORE_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datastore/core.h"

/* ---- errors ---------------------------------------------------------- */

/* Fills `err` (if non-NULL) and returns `code`. The message is formatted
 * with printf rules and truncated to fit. */
ds_status ds__error_set(ds_error *err, ds_status code, const char *fmt, ...)
    DS_PRINTF(3, 4);
ds_status ds__error_setv(ds_error *err, ds_status code, const char *fmt,
                         va_list ap);
/* Sets sqlstate and derives `retryable` from it and `code`. */
void ds__error_set_sqlstate(ds_error *err, const char *sqlstate);
/* True for SQLSTATEs worth retrying (40001, 40P01, 57P0x, 08xxx, ...). */
bool ds__sqlstate_retryable(const char *sqlstate);
/* Replaces every occurrence of `secret` in err->message with "***". */
void ds__error_scrub(ds_error *err, const char *secret);
/* Prefixes err->message with "context: " (keeps the rest). */
void ds__error_prefix(ds_error *err, const char *fmt, ...) DS_PRINTF(2, 3);

/* Argument checks that fill the error and return from the caller. */
#define DS_CHECK_ARG(err, cond, what)                                          \
    do {                                                                       \
        if (!(cond))                                                           \
            return ds__error_set((err), DS_ERR_INVALID, "%s: %s", __func__,    \
                                 (what));                                      \
    } while (0)

/* ---- logging --------------------------------------------------------- */

bool ds__log_enabled(ds_log_level level);
void ds__log(ds_log_level level, const char *module, const char *fmt, ...)
    DS_PRINTF(3, 4);

/* ---- allocation ------------------------------------------------------ */
/* Every library allocation goes through these so tests can inject
 * failures (ds__test_fail_alloc_after). */
void *ds__malloc(size_t size);
void *ds__calloc(size_t count, size_t size); /* guards count*size overflow */
void *ds__realloc(void *ptr, size_t size);
void *ds__reallocarray(void *ptr, size_t count, size_t size);
void ds__free(void *ptr);
char *ds__strdup(const char *s);
char *ds__strndup(const char *s, size_t n);
/* Test hook: the n-th allocation from now fails (0 disables). */
void ds__test_fail_alloc_after(long n);

/* Secret-bearing strings live in guarded, locked memory and are wiped
 * on free (sodium_malloc / sodium_free). */
char *ds__secret_strdup(const char *s);
void ds__secret_free(char *s);
/* Wipes `len` bytes (not optimised away). */
void ds__wipe(void *ptr, size_t len);

/* ---- time and randomness --------------------------------------------- */

int64_t ds__now_us(void);        /* CLOCK_MONOTONIC */
int64_t ds__wall_us(void);       /* CLOCK_REALTIME, epoch microseconds */
void ds__sleep_us(int64_t us);
uint32_t ds__random_u32(void);   /* libsodium's CSPRNG */
uint32_t ds__random_uniform(uint32_t upper);
/* The pause before retry `attempt` (0-based) of a step that hit
 * lock_timeout: base_us doubled per attempt up to 2^max_shift times, plus a
 * uniform jitter of up to as much again, so runners that collided spread. */
int64_t ds__lock_retry_pause_us(int64_t base_us, int attempt, int max_shift);

/* ---- text ------------------------------------------------------------ */

/* True when `s[0..len)` is valid UTF-8 without NUL bytes. */
bool ds__utf8_valid(const char *s, size_t len);
/* ASCII case-insensitive compare. */
int ds__strcasecmp(const char *a, const char *b);

/* ---- keyring spec ("kid:base64key,kid:base64key") -------------------- */

#define DS_KEY_BYTES 32
#define DS_KID_MAX 32

/* Called once per entry with the decoded key in sodium_malloc memory that
 * is wiped right after the call. Return DS_OK to go on. */
typedef ds_status (*ds__key_entry_fn)(void *ud, const char *kid,
                                      const unsigned char *key,
                                      size_t index, ds_error *err);

/* Parses the spec, calling `fn` (may be NULL to only validate). Errors are
 * DS_ERR_CONFIG naming `varname` and the entry number, never the key. */
ds_status ds__keyspec_parse(const char *spec, const char *varname,
                            ds__key_entry_fn fn, void *ud, ds_error *err);

/* ---- init ------------------------------------------------------------ */
ds_status ds__ensure_init(ds_error *err);

#endif /* DS_CORE_INTERNAL_H */
