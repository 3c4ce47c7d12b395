/* The process-wide log callback. Silent unless the application installs
 * one; the level check is a lock-free read so disabled levels cost nothing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/internal.h"

static pthread_rwlock_t log_lock = PTHREAD_RWLOCK_INITIALIZER;
static ds_log_fn log_fn;
static void *log_ud;
/* DS_LOG_ERROR + 1 means "no callback". */
static atomic_int log_min_level = DS_LOG_ERROR + 1;

DS_EXPORT void ds_log_set_fn(ds_log_fn fn, void *ud, ds_log_level min_level) {
    pthread_rwlock_wrlock(&log_lock);
    log_fn = fn;
    log_ud = ud;
    atomic_store(&log_min_level, fn ? (int)min_level : DS_LOG_ERROR + 1);
    pthread_rwlock_unlock(&log_lock);
}

DS_EXPORT const char *ds_log_level_str(ds_log_level level) {
    switch (level) {
    case DS_LOG_DEBUG: return "debug";
    case DS_LOG_INFO: return "info";
    case DS_LOG_WARN: return "warn";
    case DS_LOG_ERROR: return "error";
    }
    return "unknown";
}

bool ds__log_enabled(ds_log_level level) {
    return (int)level >= atomic_load_explicit(&log_min_level,
                                              memory_order_relaxed);
}

void ds__log(ds_log_level level, const char *module, const char *fmt, ...) {
    if (!ds__log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_rwlock_rdlock(&log_lock);
    if (log_fn && (int)level >= atomic_load(&log_min_level))
        log_fn(log_ud, level, module, msg);
    pthread_rwlock_unlock(&log_lock);
}
