/* Status names, error filling and SQLSTATE classification. */
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

DS_EXPORT const char *ds_status_str(ds_status status) {
    switch (status) {
    case DS_OK: return "DS_OK";
    case DS_ERR_INVALID: return "DS_ERR_INVALID";
    case DS_ERR_NOMEM: return "DS_ERR_NOMEM";
    case DS_ERR_CONFIG: return "DS_ERR_CONFIG";
    case DS_ERR_CONNECTION: return "DS_ERR_CONNECTION";
    case DS_ERR_TIMEOUT: return "DS_ERR_TIMEOUT";
    case DS_ERR_DB: return "DS_ERR_DB";
    case DS_ERR_NOT_FOUND: return "DS_ERR_NOT_FOUND";
    case DS_ERR_CONFLICT: return "DS_ERR_CONFLICT";
    case DS_ERR_MIGRATION: return "DS_ERR_MIGRATION";
    case DS_ERR_SCHEMA: return "DS_ERR_SCHEMA";
    case DS_ERR_CRYPTO: return "DS_ERR_CRYPTO";
    case DS_ERR_REDIS: return "DS_ERR_REDIS";
    case DS_ERR_CLOSED: return "DS_ERR_CLOSED";
    case DS_ERR_UNSUPPORTED: return "DS_ERR_UNSUPPORTED";
    case DS_ERR_INTERNAL: return "DS_ERR_INTERNAL";
    case DS_ERR_NOT_DURABLE: return "DS_ERR_NOT_DURABLE";
    case DS_ERR_CANCELLED: return "DS_ERR_CANCELLED";
    }
    return "DS_ERR_UNKNOWN";
}

DS_EXPORT bool ds_error_is_retryable(const ds_error *err) {
    return err != NULL && err->code != DS_OK && err->retryable;
}

DS_EXPORT void ds_error_clear(ds_error *err) {
    if (err)
        memset(err, 0, sizeof *err);
}

ds_status ds__error_setv(ds_error *err, ds_status code, const char *fmt,
                         va_list ap) {
    if (!err)
        return code;
    err->code = code;
    err->sqlstate[0] = '\0';
    /* Connection loss and an unreachable Redis are transient by nature. */
    err->retryable = (code == DS_ERR_CONNECTION || code == DS_ERR_REDIS);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    return code;
}

ds_status ds__error_set(ds_error *err, ds_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ds__error_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

bool ds__sqlstate_retryable(const char *s) {
    if (!s || strlen(s) != 5)
        return false;
    if (strncmp(s, "08", 2) == 0) /* connection exception class */
        return true;
    static const char *const retry[] = {"40001", "40P01", "57P01", "57P02",
                                        "57P03", "55P03", "53300", "53400"};
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++)
        if (strcmp(s, retry[i]) == 0)
            return true;
    return false;
}

void ds__error_set_sqlstate(ds_error *err, const char *sqlstate) {
    if (!err)
        return;
    if (sqlstate && strlen(sqlstate) == 5) {
        memcpy(err->sqlstate, sqlstate, 6);
        if (ds__sqlstate_retryable(sqlstate))
            err->retryable = true;
    } else {
        err->sqlstate[0] = '\0';
    }
}

void ds__error_scrub(ds_error *err, const char *secret) {
    if (!err || !secret || !*secret)
        return;
    size_t slen = strlen(secret);
    char out[DS_ERROR_MESSAGE_MAX];
    size_t o = 0;
    const char *p = err->message;
    while (*p && o + 1 < sizeof out) {
        if (strncmp(p, secret, slen) == 0) {
            const char *mask = "***";
            while (*mask && o + 1 < sizeof out)
                out[o++] = *mask++;
            p += slen;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    memcpy(err->message, out, o + 1);
}

void ds__error_prefix(ds_error *err, const char *fmt, ...) {
    if (!err)
        return;
    char prefix[DS_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[DS_ERROR_MESSAGE_MAX];
    size_t cap = sizeof joined - 1, n = strlen(prefix);
    if (n > cap)
        n = cap;
    memcpy(joined, prefix, n);
    const char *parts[2] = {": ", err->message};
    for (int i = 0; i < 2; i++) {
        size_t m = strlen(parts[i]);
        if (m > cap - n)
            m = cap - n;
        memcpy(joined + n, parts[i], m);
        n += m;
    }
    joined[n] = '\0';
    memcpy(err->message, joined, n + 1);
}
