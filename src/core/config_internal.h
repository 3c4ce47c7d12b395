/* The configuration record other modules read directly. */
#ifndef DS_CONFIG_INTERNAL_H
#define DS_CONFIG_INTERNAL_H

#include "datastore/config.h"

typedef enum ds_stmt_mode {
    DS_STMT_PREPARED = 0,
    DS_STMT_POOLER = 1
} ds_stmt_mode;

struct ds_config {
    /* Secret-bearing text lives in sodium_malloc memory. */
    char *database_url;
    char *database_replica_urls;
    char *redis_url;
    char *token_keys;
    char *application_name;
    char *redis_prefix;
    char *redis_tls_ca;
    int64_t statement_mode; /* ds_stmt_mode */
    int64_t pool_min;
    int64_t pool_max;
    int64_t acquire_timeout_ms;
    int64_t pool_overtake_ms;
    int64_t connect_timeout_ms;
    int64_t statement_timeout_ms;
    int64_t max_lifetime_ms;
    int64_t idle_timeout_ms;
    int64_t tx_max_retries;
    int64_t replica_retry_ms;
    int64_t embedding_dim;
    int64_t vector_backend;         /* ds_vector_backend */
    int64_t hnsw_ef_search;
    int64_t vector_exact_max_rows;
    int64_t memory_code_crossover;
    int64_t migrate_lock_timeout_ms;
    int64_t redis_pool_size;
    int64_t redis_connect_timeout_ms;
    int64_t redis_command_timeout_ms;
    int64_t redis_retry_ms;
    int64_t repo_max_message_bytes;
    int64_t repo_max_json_bytes;
    int64_t repo_max_page;
    int64_t repo_max_batch;
    int64_t repo_activity_interval_ms;
    ds_after_connect_fn after_connect;
    void *after_connect_ud;
    ds_statement_hook_fn statement_hook;
    void *statement_hook_ud;
};

/* Splits DATABASE_REPLICA_URLS into separate URLs. A comma starts a new URL
 * only when a scheme ("postgres://", "postgresql://") or a conninfo keyword
 * follows, so multi-host URLs ("postgresql://h1,h2/db") stay whole.
 * *out is a NULL-terminated array of secret strings; free with
 * ds__config_free_urls(). */
ds_status ds__config_split_urls(const char *list, char ***out, size_t *count,
                                ds_error *err);
void ds__config_free_urls(char **urls);

/* The password in a URL or conninfo (secret string), or NULL. */
char *ds__conninfo_password(const char *conninfo);

/* The value of a secret setting as it may be shown: rebuilt from the parsed
 * form with every password (and libpq's other hidden options) replaced by
 * "***"; "***" alone when the value does not parse. A PostgreSQL URI stays a
 * URI, a key/value conninfo stays key/value. Free with ds__free(); NULL when
 * out of memory. */
char *ds__redact_pg_url(const char *conninfo);
char *ds__redact_pg_url_list(const char *list);
char *ds__redact_redis_url(const char *url);

#endif
