/*
 * datastore/config.h — configuration from explicit values or the environment.
 *
 * A ds_config is a bag of named settings with defaults. Each setting has a
 * lower-case name and an environment variable; ds_config_set() accepts
 * either spelling. Constructors (ds_pool_open, ds_redis_open, ...) copy what
 * they need, so a config may be freed or reused right after.
 *
 *   name                     environment variable        default and meaning
 *   database_url             DATABASE_URL                (none) primary: URL or key=value; multi-host
 *                                                        with target_session_attrs passes through
 *   database_replica_urls    DATABASE_REPLICA_URLS       (none) comma-separated replicas for
 *                                                        ds_pool_acquire_read()
 *   redis_url                REDIS_URL                   (none) redis://[user:password@]host:port/db
 *                                                        or rediss:// (TLS)
 *   pool_min                 DS_POOL_MIN                 1 connections kept open (pre-warmed)
 *   pool_max                 DS_POOL_MAX                 10 most connections the pool opens
 *   acquire_timeout_ms       DS_ACQUIRE_TIMEOUT_MS       5000 longest wait for a connection
 *                                                        (DS_ERR_TIMEOUT)
 *   pool_overtake_ms         DS_POOL_OVERTAKE_MS         20 (0 to 60000) how long threads that come
 *                                                        straight back may keep connections while
 *                                                        the oldest waiter waits (datastore/pool.h);
 *                                                        0 = strictly first come, first served
 *   connect_timeout_ms       DS_CONNECT_TIMEOUT_MS       5000 longest TCP + TLS + auth handshake
 *   statement_timeout_ms     DS_STATEMENT_TIMEOUT_MS     0 per-connection statement_timeout
 *                                                        (0 = server default)
 *   max_lifetime_ms          DS_POOL_MAX_LIFETIME_MS     1800000 a connection is replaced after
 *                                                        this, minus up to 10% jitter (0 = never)
 *   idle_timeout_ms          DS_POOL_IDLE_TIMEOUT_MS     600000 idle connections above pool_min
 *                                                        close after this (0 = never)
 *   statement_mode           DS_STATEMENT_MODE           prepared | pooler (PgBouncer transaction
 *                                                        mode, Neon's pooler: no named statements)
 *   tx_max_retries           DS_TX_MAX_RETRIES           5 ds_tx_run() retries of 40001/40P01
 *   replica_retry_ms         DS_REPLICA_RETRY_MS         5000 a replica that failed to connect is
 *                                                        skipped this long
 *   application_name         DS_APPLICATION_NAME         libdatastore application_name unless the
 *                                                        URL sets one
 *   token_keys               DS_TOKEN_KEYS               (none; secret) kid:base64key,... 32-byte
 *                                                        keys, the first is active
 *   embedding_dim            DS_EMBEDDING_DIM            384 embedding dimension of this deployment
 *                                                        (recorded by the migration)
 *   vector_backend           DS_VECTOR_BACKEND           auto | pgvector | fallback
 *   hnsw_ef_search           DS_HNSW_EF_SEARCH           200 (1 to 1000) no effect: memory
 *                                                        searches are exact (kept for compatibility)
 *   vector_exact_max_rows    DS_VECTOR_EXACT_MAX_ROWS    2000 no effect, likewise
 *   memory_code_crossover    DS_MEMORY_CODE_CROSSOVER    4 (0 to 100) a memory search reads the
 *                                                        coarse codes first when the user has more
 *                                                        than this many times the candidates they
 *                                                        keep (4,000 facts at k = 10); 0 = always,
 *                                                        25 and up = never
 *   migrate_lock_timeout_ms  DS_MIGRATE_LOCK_TIMEOUT_MS  5000 lock_timeout of migration DDL and
 *                                                        partition maintenance (0 = none)
 *   redis_prefix             DS_REDIS_PREFIX             ds: prefix of every Redis key written
 *   redis_pool_size          DS_REDIS_POOL_SIZE          4 Redis connections per handle
 *   redis_connect_timeout_ms DS_REDIS_CONNECT_TIMEOUT_MS 2000 longest Redis connect + AUTH
 *   redis_command_timeout_ms DS_REDIS_COMMAND_TIMEOUT_MS 2000 longest Redis command (a reconnect
 *                                                        counts against it)
 *   redis_tls_ca             DS_REDIS_TLS_CA             (system CA store) CA file for rediss://
 *   redis_retry_ms           DS_REDIS_RETRY_MS           1000 fail fast this long after a failed
 *                                                        connect (0 = never)
 *   repo_max_message_bytes   DS_REPO_MAX_MESSAGE_BYTES   1000000 bytes of one message's content
 *   repo_max_json_bytes      DS_REPO_MAX_JSON_BYTES      1048576 bytes of one JSON value serialised
 *   repo_max_page            DS_REPO_MAX_PAGE            1000 rows per list call
 *   repo_max_batch           DS_REPO_MAX_BATCH           10000 rows per batch call
 *   repo_activity_interval_ms DS_REPO_ACTIVITY_INTERVAL_MS 30000 an append moves its
 *                                                        conversation's updated_at only when it is
 *                                                        older than this (0 = on every append)
 *
 * A bad value gives DS_ERR_CONFIG with a message naming the environment
 * variable; the message never repeats a URL, password or key.
 *
 * Thread-safety: a config may be read by many threads at once (e.g. passed to
 * several constructors) but must not be modified concurrently.
 */
#ifndef DATASTORE_CONFIG_H
#define DATASTORE_CONFIG_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_config ds_config;
typedef struct ds_conn ds_conn;

/* A config holding only the defaults. Free with ds_config_free(). */
DS_EXPORT DS_NODISCARD ds_status ds_config_new(ds_config **out, ds_error *err);

/* ds_config_new() followed by ds_config_load_env(). */
DS_EXPORT DS_NODISCARD ds_status ds_config_from_env(ds_config **out,
                                                    ds_error *err);

/*
 * Overlays every environment variable of the table above that is set (an
 * empty value counts as unset). Stops at the first bad value, which it names;
 * settings read before it stay applied.
 */
DS_EXPORT DS_NODISCARD ds_status ds_config_load_env(ds_config *cfg,
                                                    ds_error *err);

/*
 * Sets one value from text: `name` is the setting's name or its environment
 * variable, case-insensitive. A NULL or empty value resets it to its default.
 * Errors: DS_ERR_INVALID (NULL cfg/name), DS_ERR_CONFIG (unknown name, bad
 * value), DS_ERR_NOMEM.
 */
DS_EXPORT DS_NODISCARD ds_status ds_config_set(ds_config *cfg,
                                               const char *name,
                                               const char *value,
                                               ds_error *err);

/* Sets an integer setting. DS_ERR_CONFIG when out of its range. */
DS_EXPORT DS_NODISCARD ds_status ds_config_set_int(ds_config *cfg,
                                                   const char *name,
                                                   int64_t value,
                                                   ds_error *err);

/* Reads an integer setting. */
DS_EXPORT DS_NODISCARD ds_status ds_config_get_int(const ds_config *cfg,
                                                   const char *name,
                                                   int64_t *out,
                                                   ds_error *err);

/*
 * Copies a text setting into `buf` (NUL-terminated). URLs come back with the
 * password replaced by "***"; token_keys is refused (DS_ERR_INVALID).
 * A URL is shown as its parser read it (libpq's for PostgreSQL: any form
 * libpq accepts, every option libpq hides, such as sslpassword, masked), so
 * its spelling may differ from what was set: options in a canonical order,
 * a key=value value quoted, Redis's default port written out. A PostgreSQL
 * URI stays a URI and key=value stays key=value; the shown text is itself a
 * valid setting. An unset value gives "". DS_ERR_INVALID when `buf` is too
 * small.
 */
DS_EXPORT DS_NODISCARD ds_status ds_config_get_str(const ds_config *cfg,
                                                   const char *name,
                                                   char *buf, size_t buflen,
                                                   ds_error *err);

/*
 * Called on every new PostgreSQL connection before it is first handed out
 * (e.g. to SET search_path). Returning non-DS_OK discards the connection and
 * fails the acquire with that error. In `pooler` statement mode session state
 * does not survive a transaction, so keep this hook for direct connections.
 */
typedef ds_status (*ds_after_connect_fn)(void *ud, ds_conn *conn,
                                         ds_error *err);

DS_EXPORT DS_NODISCARD ds_status ds_config_set_after_connect(
    ds_config *cfg, ds_after_connect_fn fn, void *ud, ds_error *err);

/* One statement as the statement hook sees it. Everything is borrowed for
 * the hook's call. */
typedef struct ds_statement_event {
    const char *name;     /* the library's name for it ("users.get_by_id"),
                             "" for SQL the caller wrote                    */
    const char *sql;      /* the statement text with $1.. placeholders: the
                             library's own statements pass every value as a
                             parameter, and parameters are never reported */
    int64_t duration_us;  /* from sending to the complete result          */
    int64_t rows;         /* rows returned, or affected; -1 on failure    */
    ds_status status;     /* DS_OK or the statement's error code          */
    const char *sqlstate; /* the server's SQLSTATE, "" when none          */
    bool replica;         /* ran on a replica connection                  */
} ds_statement_event;

typedef void (*ds_statement_hook_fn)(void *ud, const ds_statement_event *ev);

/*
 * Called after every statement with parameters that the pool's connections
 * run (ds_sql_exec, ds_sql_exec_pool, repositories, memory, sessions, ...; not the
 * simple-protocol DDL of migrations), on the calling thread, for tracing
 * and timing: keep it short and do not call back into the library on the
 * same connection. NULL removes it.
 */
DS_EXPORT DS_NODISCARD ds_status ds_config_set_statement_hook(
    ds_config *cfg, ds_statement_hook_fn fn, void *ud, ds_error *err);

/* Deep copy. */
DS_EXPORT DS_NODISCARD ds_status ds_config_clone(const ds_config *cfg,
                                                 ds_config **out,
                                                 ds_error *err);

/* Frees the config, wiping URLs and keys. NULL is a no-op. */
DS_EXPORT void ds_config_free(ds_config *cfg);

#ifdef __cplusplus
}
#endif
#endif /* DATASTORE_CONFIG_H */
