/*
 * datastore/core.h — versions, status codes, errors, logging and init.
 *
 * Every fallible call in libdatastore returns a ds_status (DS_OK == 0) and
 * takes a trailing `ds_error *err` that may be NULL. The error belongs to the
 * call, not to a handle, so two threads never overwrite each other's message.
 *
 * Thread-safety: everything here is safe to call from any thread.
 */
#ifndef DATASTORE_CORE_H
#define DATASTORE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The Makefile reads these three lines: they are the one source of truth. */
#define DS_VERSION_MAJOR 0
#define DS_VERSION_MINOR 1
#define DS_VERSION_PATCH 0

#define DS_VERSION_STR_(x) #x
#define DS_VERSION_STR(x) DS_VERSION_STR_(x)
#define DS_VERSION_STRING                                                      \
    DS_VERSION_STR(DS_VERSION_MAJOR)                                           \
    "." DS_VERSION_STR(DS_VERSION_MINOR) "." DS_VERSION_STR(DS_VERSION_PATCH)
/* 0xMMmmpp, comparable with < and >. */
#define DS_VERSION_NUMBER                                                      \
    ((DS_VERSION_MAJOR << 16) | (DS_VERSION_MINOR << 8) | DS_VERSION_PATCH)
#define DS_VERSION_AT_LEAST(major, minor, patch)                               \
    (DS_VERSION_NUMBER >= (((major) << 16) | ((minor) << 8) | (patch)))

#if defined(DS_BUILDING_LIBRARY) && defined(__GNUC__)
#define DS_EXPORT __attribute__((visibility("default")))
#else
#define DS_EXPORT
#endif

#if defined(__GNUC__)
#define DS_NODISCARD __attribute__((warn_unused_result))
#define DS_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DS_NODISCARD
#define DS_PRINTF(fmt, args)
#endif

/*
 * Status codes. Append-only: a value, once released, never changes meaning.
 */
typedef enum ds_status {
    DS_OK = 0,
    DS_ERR_INVALID = 1,     /* bad argument: NULL, out of range, malformed  */
    DS_ERR_NOMEM = 2,       /* an allocation failed; nothing was changed    */
    DS_ERR_CONFIG = 3,      /* bad configuration value (message names it)   */
    DS_ERR_CONNECTION = 4,  /* could not connect, or the connection was lost */
    DS_ERR_TIMEOUT = 5,     /* acquire, statement or lock timeout           */
    DS_ERR_DB = 6,          /* the server reported an error (see sqlstate)  */
    DS_ERR_NOT_FOUND = 7,   /* no such row / key                            */
    DS_ERR_CONFLICT = 8,    /* unique violation, stale version, ...         */
    DS_ERR_MIGRATION = 9,   /* migration refused or failed                  */
    DS_ERR_SCHEMA = 10,     /* live schema does not match this build        */
    DS_ERR_CRYPTO = 11,     /* any decrypt/verify failure (deliberately vague) */
    DS_ERR_REDIS = 12,      /* Redis reported an error or is unreachable    */
    DS_ERR_CLOSED = 13,     /* the handle is closing or closed              */
    DS_ERR_UNSUPPORTED = 14,/* the server lacks a feature (e.g. pgvector),
                               or stored data this build cannot represent */
    DS_ERR_INTERNAL = 15,   /* a bug in libdatastore: please report it      */
    DS_ERR_NOT_DURABLE = 16,/* committed on the primary, but the wait for the
                               synchronous standby was cancelled: the write
                               may be lost in a failover (see below)      */
    DS_ERR_CANCELLED = 17   /* a progress callback asked to stop; the work
                               done so far is committed and consistent, and
                               running the call again finishes it          */
} ds_status;

/*
 * DS_ERR_NOT_DURABLE: PostgreSQL with synchronous replication acknowledges
 * a commit only once a standby has its WAL. When that wait is cancelled
 * (pg_cancel_backend(), a client's cancel request; statement_timeout is
 * disarmed before a commit waits), the server still reports success with
 * only a warning (SQLSTATE 01000, "canceling wait for synchronous
 * replication"); the library returns this error instead of DS_OK. The data
 * is visible on the primary, but a failover may lose it. The error is
 * retryable: repeat the write with the same idempotency key (the repeat
 * finds the stored row) and check it after a failover. The warning is
 * recognised by its English text, so the server's lc_messages must be
 * English (the default with the C and en_* locales). Results and
 * out-parameters of the failed call are not filled.
 */

#define DS_ERROR_MESSAGE_MAX 512

/*
 * Structs come in three kinds (docs/abi.md, "Growable structs"); each
 * struct's comment says which it is:
 *   - library-allocated (rows, lists, reports, callback arguments): only
 *     the library creates them, so members may be appended;
 *   - growable, caller-allocated (options, inputs, stats the caller passes
 *     in): they start with `size_t size`, set by their initialiser
 *     `DS_<TYPE>_INIT` (C99 and C++); the library reads only the members
 *     within `size`, and zero means "default" for every member, so an
 *     initialised struct with nothing else set equals passing NULL. A size
 *     of 0 (not initialised) or larger than the library knows is
 *     DS_ERR_INVALID;
 *   - fixed values (ds_error, cursors, ds_read_token, ds_sql_param): small
 *     plain values that never change shape; a new shape is a new type.
 */
/* For an integer option whose zero means "the default": none, off, do not
 * (each such member says so). */
#define DS_NONE (-1)

#ifdef __cplusplus
/* C++11 has no designated initialisers: a value-initialised (all zero)
 * struct with its size set (ds_sized_init, defined below). */
#define DS_SIZED_INIT(type) (ds_sized_init<type>())
#else
#define DS_SIZED_INIT(type) {.size = sizeof(type)}
#endif

/*
 * Error details of one call (a fixed value). Zero-initialise it or pass NULL. On failure the
 * call fills every field; on success it leaves the struct untouched.
 * `message` never contains passwords, keys or tokens.
 */
typedef struct ds_error {
    ds_status code;
    char sqlstate[6];      /* five-character SQLSTATE or "" when none     */
    bool retryable;        /* see ds_error_is_retryable()                 */
    char message[DS_ERROR_MESSAGE_MAX];
} ds_error;

/* Static English name of a status, e.g. "DS_ERR_TIMEOUT". Never NULL. */
DS_EXPORT const char *ds_status_str(ds_status status);

/*
 * True when repeating the same operation later may succeed: connection loss,
 * server shutdown/restart (57P01/57P02/57P03), serialization failure (40001),
 * deadlock (40P01), lock timeout (55P03), too many connections (53300),
 * an unreachable Redis, a commit the synchronous standby did not confirm
 * (DS_ERR_NOT_DURABLE: retry only with an idempotency key). False for NULL.
 */
DS_EXPORT bool ds_error_is_retryable(const ds_error *err);

/* Resets `err` to the "no error" state. NULL is a no-op. */
DS_EXPORT void ds_error_clear(ds_error *err);

/*
 * One-time process initialisation (libsodium, random seeds). Idempotent and
 * thread-safe; every constructor calls it, so calling it yourself is only
 * needed to fail early.
 */
DS_EXPORT DS_NODISCARD ds_status ds_init(ds_error *err);

/* Frees a plain buffer the library allocated for the caller (documented as
 * "free with ds_free"). NULL is a no-op. */
DS_EXPORT void ds_free(void *ptr);

/* Runtime version, e.g. "0.1.0"; compare with DS_VERSION_STRING. */
DS_EXPORT const char *ds_version(void);
/* Runtime DS_VERSION_NUMBER. */
DS_EXPORT uint32_t ds_version_number(void);

/* ------------------------------------------------------------------------
 * Logging. The library never writes to stdout or stderr; messages go to the
 * callback installed here (none by default). Messages never carry passwords,
 * keys, tokens or full connection strings.
 */
typedef enum ds_log_level {
    DS_LOG_DEBUG = 0,
    DS_LOG_INFO = 1,
    DS_LOG_WARN = 2,
    DS_LOG_ERROR = 3
} ds_log_level;

/* `module` is a static string such as "pool"; `msg` lives for the call. */
typedef void (*ds_log_fn)(void *ud, ds_log_level level, const char *module,
                          const char *msg);

/*
 * Installs the process-wide log callback (NULL removes it). Messages below
 * `min_level` are not formatted at all. The callback may be called from any
 * thread, including the pool's maintenance thread, and must not call back
 * into the library.
 */
DS_EXPORT void ds_log_set_fn(ds_log_fn fn, void *ud, ds_log_level min_level);

/* "debug", "info", "warn", "error"; never NULL. */
DS_EXPORT const char *ds_log_level_str(ds_log_level level);

/* ------------------------------------------------------------------------
 * Progress of long work. Every long operation (migrations, partition
 * maintenance, ds_memory_upgrade_to_pgvector, ds_crypto_rotate,
 * ds_gdpr_purge_deleted_users, ds_gdpr_erase_user) takes the same callback in its
 * options and calls it after each committed step, so a caller can show
 * done/total, a rate and an ETA, or stop the work.
 *
 * The struct is filled by the library (fields may be appended); it and its
 * strings live for the call only.
 */
typedef struct ds_progress {
    const char *operation; /* static: "migrate", "maintain",
                              "memory_upgrade", "crypto_rotate", "purge",
                              "erase"                                     */
    const char *item;      /* what is worked on: a migration file, a
                              partition, a table; "" when nothing smaller
                              than the operation                          */
    const char *phase;     /* static: e.g. "statement", "copy", "rows"     */
    const char *unit;      /* static: "statements", "rows", "users"        */
    int64_t done;          /* units done so far; never decreases within one
                              (operation, item, phase)                    */
    int64_t total;         /* units in all (an estimate taken at the start;
                              never below done), or -1 when unknown       */
    int64_t elapsed_ms;    /* since the operation began                   */
} ds_progress;

/*
 * Called synchronously on the calling thread, between committed steps
 * (never while a lock is held for the step). Return 0 to go on, non-zero to
 * stop: the operation then returns DS_ERR_CANCELLED, leaving the database
 * consistent, and the same call made again later picks up where it
 * stopped. It must not call back into the operation it reports on.
 */
typedef int (*ds_progress_fn)(void *ud, const ds_progress *progress);

#ifdef __cplusplus
}

/* DS_SIZED_INIT in C++ (outside extern "C": a template). */
template <typename T> inline T ds_sized_init() {
    T v = T();
    v.size = sizeof(T);
    return v;
}
#endif
#endif /* DATASTORE_CORE_H */
