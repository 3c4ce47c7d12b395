/* The pool's private structures and the statement path shared by every
 * module that talks to PostgreSQL (sql, migrate, repo, ...). */
#ifndef DS_POOL_INTERNAL_H
#define DS_POOL_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "datastore/pool.h"

/* Common type OIDs (pg_type.h is a server header, so we spell them). */
enum {
    DS_OID_BOOL = 16, DS_OID_BYTEA = 17, DS_OID_CHAR = 18, DS_OID_NAME = 19,
    DS_OID_INT8 = 20, DS_OID_INT2 = 21, DS_OID_INT4 = 23, DS_OID_TEXT = 25,
    DS_OID_OID = 26, DS_OID_JSON = 114, DS_OID_FLOAT4 = 700,
    DS_OID_FLOAT8 = 701, DS_OID_UNKNOWN = 705, DS_OID_BPCHAR = 1042,
    DS_OID_VARCHAR = 1043, DS_OID_TIMESTAMP = 1114, DS_OID_TIMESTAMPTZ = 1184,
    DS_OID_UUID = 2950, DS_OID_JSONB = 3802, DS_OID_FLOAT4_ARRAY = 1021,
    DS_OID_INT8_ARRAY = 1016, DS_OID_TEXT_ARRAY = 1009,
    DS_OID_BYTEA_ARRAY = 1001, DS_OID_JSONB_ARRAY = 3807, DS_OID_INET = 869
};

/* Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
#define DS_PG_EPOCH_OFFSET_US INT64_C(946684800000000)
/* The earliest timestamptz, 4714-11-24 00:00 UTC BC, in epoch
 * microseconds; the latest lies beyond what int64 epoch microseconds can
 * say. */
#define DS_PG_MIN_EPOCH_US INT64_C(-210866803200000000)

/* Epoch microseconds to PostgreSQL's binary timestamptz. INT64_MIN and
 * INT64_MAX are -infinity and infinity (as ds__ts_from_pg reads them
 * back). A time too far in the past to shift without overflow becomes a
 * value the server refuses as out of range instead of wrapping around to
 * a date far in the future. */
static inline int64_t ds__ts_to_pg(int64_t epoch_us) {
    if (epoch_us == INT64_MIN || epoch_us == INT64_MAX)
        return epoch_us;
    if (epoch_us < INT64_MIN + DS_PG_EPOCH_OFFSET_US)
        return INT64_MIN + 1;
    return epoch_us - DS_PG_EPOCH_OFFSET_US;
}

/* Binary timestamptz to epoch microseconds: -infinity is INT64_MIN and
 * infinity INT64_MAX. PostgreSQL's last years (from 294247 AD) do not fit
 * once shifted to the Unix epoch and read as INT64_MAX too. */
static inline int64_t ds__ts_from_pg(int64_t pg) {
    if (pg == INT64_MIN)
        return pg;
    if (pg > INT64_MAX - DS_PG_EPOCH_OFFSET_US)
        return INT64_MAX;
    return pg + DS_PG_EPOCH_OFFSET_US;
}

typedef struct ds_stmt {
    uint64_t hash;
    char *sql;
    Oid *types;
    int nparams;
    uint32_t id;
} ds_stmt;

typedef struct ds_subpool ds_subpool;

struct ds_conn {
    PGconn *pg;
    struct ds_pool *pool;
    ds_subpool *sub;
    int64_t created_us;
    int64_t expires_us;     /* 0: no lifetime limit */
    int64_t idle_since_us;
    struct ds_conn *next;   /* idle stack link */
    ds_stmt *stmts;         /* open-addressing table, prepared mode */
    uint32_t stmt_cap;
    uint32_t stmt_count;
    uint32_t next_stmt_id;
    bool discard;           /* close instead of reuse on release */
    bool pooler;            /* unnamed statements only */
};

typedef struct ds_waiter {
    pthread_cond_t cond;
    ds_conn *conn;   /* handed a live connection */
    bool grant;      /* or handed a slot to open one in */
    bool done;
    struct ds_waiter *next;
} ds_waiter;

struct ds_subpool {
    char *url;        /* secret string */
    char *password;   /* secret string, scrubbed from libpq messages */
    char label[32];   /* "primary", "replica 1", ... */
    bool replica;
    int min;
    int total;        /* open plus being opened; never above pool max */
    int idle_n;
    ds_conn *idle;    /* LIFO keeps a hot set and lets the rest idle out */
    ds_waiter *wait_head, *wait_tail;
    int waiters;
    int64_t down_until_us;
};

#define DS_WAIT_BUCKETS 192

struct ds_pool {
    pthread_mutex_t mu;
    ds_subpool primary;
    ds_subpool *replicas;
    size_t nreplicas;
    size_t rr;

    int max;
    int acquire_timeout_ms;
    int connect_timeout_ms;
    int statement_timeout_ms;
    int64_t lifetime_us;
    int64_t idle_timeout_us;
    int64_t replica_retry_us;
    int tx_max_retries;
    int migrate_lock_timeout_ms; /* default DDL lock_timeout of ds_migrate_* */
    /* Handed to migrations as ds.embedding_dim / ds.vector_backend. */
    int64_t embedding_dim;
    int64_t vector_backend;
    /* Repository input limits, copied from the config at open. */
    int64_t repo_max_message_bytes;
    int64_t repo_max_json_bytes;
    int repo_max_page;
    int repo_max_batch;
    bool pooler;
    char *application_name;
    ds_after_connect_fn after_connect;
    void *after_connect_ud;

    bool closing;
    int leased;
    pthread_t maint;
    bool maint_started;
    pthread_cond_t maint_cond;

    atomic_uint_fast64_t acquires, timeouts, reconnects, connect_failures,
        discarded;
    uint32_t wait_hist[DS_WAIT_BUCKETS];
    int64_t wait_max_us;
};

/*
 * Runs one statement through the connection's statement mode and returns a
 * PGresult whose status is PGRES_TUPLES_OK or PGRES_COMMAND_OK (the caller
 * PQclear()s it), or NULL with `err` filled. `types` may be NULL (server
 * infers). A lost connection marks the lease for discard.
 */
PGresult *ds__conn_exec(ds_conn *c, const char *sql, int nparams,
                        const Oid *types, const char *const *values,
                        const int *lengths, const int *formats,
                        int result_format, ds_error *err);

/* Simple-protocol execution of trusted SQL without parameters (may hold
 * several statements). */
ds_status ds__conn_exec_simple(ds_conn *c, const char *sql, ds_error *err);

/* Fills `err` from a failed PGresult (may be NULL) and the connection. Maps
 * SQLSTATE to a ds_status, sets sqlstate/retryable, prefixes `context`, and
 * scrubs the pool's passwords. Marks `c` for discard on connection loss.
 * `c` may be NULL when only `pg` is at hand. */
ds_status ds__pg_error(ds_conn *c, PGconn *pg, const PGresult *res,
                       const char *context, ds_error *err);

/* SQLSTATE to status: 23505 -> CONFLICT, 57014/55P03 -> TIMEOUT, class
 * 08/57P0x -> CONNECTION, 22/23 -> INVALID, else DB. */
ds_status ds__sqlstate_status(const char *sqlstate);

/* Frees the prepared statement cache (the server side goes with the
 * connection). */
void ds__conn_free_cache(ds_conn *c);

/* Big-endian helpers for binary parameters and results. */
static inline void ds__put_be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static inline void ds__put_be32(char *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}
static inline uint64_t ds__get_be64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}
static inline uint32_t ds__get_be32(const char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}
static inline uint16_t ds__get_be16(const char *p) {
    return (uint16_t)(((unsigned char)p[0] << 8) | (unsigned char)p[1]);
}

#endif
