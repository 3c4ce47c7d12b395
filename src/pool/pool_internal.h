/* The pool's private structures, included only by the pool's own sources:
 * database modules use the statement API in pool/stmt.h. */
#ifndef DS_POOL_INTERNAL_H
#define DS_POOL_INTERNAL_H

#ifndef DS_POOL_SOURCE
#error "pool_internal.h is private to src/pool: use pool/stmt.h"
#endif

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/config_internal.h"
#include "core/internal.h"
#include "datastore/pool.h"
#include "pool/pool_counters.h"
#include "pool/stmt.h"

typedef struct ds_stmt {
    uint64_t hash;
    const void *def;  /* the ds__stmt_def it was found by; NULL: by text */
    char *sql;
    Oid *types;
    int nparams;
    uint32_t id;
    char name[16];    /* "ds_<id>", the server-side name */
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
    bool not_durable;       /* the last statement's commit skipped the
                               synchronous standby (see conn.c) */
    bool pooler;            /* unnamed statements only */
};

typedef struct ds_waiter {
    pthread_cond_t cond;
    ds_conn *conn;   /* handed a live connection */
    bool grant;      /* or handed a slot to open one in */
    bool done;
    uint64_t barges_at_enqueue; /* the sub-pool's barges when it queued */
    uint64_t overtaken;  /* barges while it queued, set as it leaves the queue */
    int64_t handed_us;   /* when it was handed a connection */
    int64_t poll_us;     /* the poller's current interval */
    struct ds_waiter *next;
} ds_waiter;

struct ds_subpool {
    char *url;        /* secret string */
    char *password;   /* secret string, scrubbed from libpq messages */
    char label[32];   /* "primary", "replica 1", ... */
    bool replica;
    /* The primary, unless its URL asks for any server (target_session_attrs
     * other than read-write/primary): a read-only server (a standby, or a
     * primary demoted during a failover) is refused at connect, and a
     * connection that finds its server turned read-only is discarded. */
    bool needs_writable;
    int min;
    int total;        /* open plus being opened; never above pool max */
    int idle_n;
    ds_conn *idle;    /* LIFO keeps a hot set and lets the rest idle out */
    ds_waiter *wait_head, *wait_tail;
    ds_waiter *poller; /* the one waiter that looks for connections left idle */
    int waiters;
    int head_barged;  /* acquisitions that overtook the current oldest
                         waiter (reset when it leaves the head) */
    uint64_t barges;  /* acquisitions that overtook waiters, ever */
    int64_t head_since_us; /* when the current oldest waiter became it */
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
    int64_t overtake_us; /* pool_overtake_ms */
    int connect_timeout_ms;
    int statement_timeout_ms;
    int64_t lifetime_us;
    int64_t idle_timeout_us;
    int64_t replica_retry_us;
    int tx_max_retries;
    ds__pool_settings settings; /* for database modules, read-only */
    bool pooler;
    char *application_name;
    ds_after_connect_fn after_connect;
    void *after_connect_ud;
    ds_statement_hook_fn statement_hook;
    void *statement_hook_ud;

    bool closing;
    int leased;
    pthread_t maint;
    bool maint_started;
    pthread_cond_t maint_cond;

    atomic_uint_fast64_t acquires, timeouts, reconnects, connect_failures,
        discarded;
    uint32_t wait_hist[DS_WAIT_BUCKETS];
    int64_t wait_max_us;
    uint64_t overtaken_max; /* most barges any one waiter saw */
#ifdef DS_POOL_COUNTERS
    ds_pool_counters counters_at_open;
#endif
};

/* The layer under ds__stmt_run / ds__sql_run: libpq's arrays as they are,
 * through the connection's statement mode. */
PGresult *ds__conn_exec(ds_conn *c, const char *sql, int nparams,
                        const Oid *types, const char *const *values,
                        const int *lengths, const int *formats,
                        int result_format, ds_error *err);

/* Tells the pool's statement hook (when there is one: the caller checks)
 * about one statement: its name, text, time since `start_us`, rows and
 * outcome (`r`, or `err` when r is NULL), never its parameters. */
void ds__conn_report_statement(const ds_conn *c, const char *name,
                               const char *sql, int64_t start_us,
                               const PGresult *r, const ds_error *err);

/* The prepared statement cache, for pipelines: the name of the statement's
 * prepared copy and whether it must be prepared first (*fresh); false when
 * it runs unnamed (pooler mode, cache full). A statement whose preparation
 * failed is forgotten. */
bool ds__conn_stmt_slot(ds_conn *c, const ds__stmt_def *def, char name[24],
                        bool *fresh);
void ds__conn_stmt_forget(ds_conn *c, const ds__stmt_def *def);

/* Whether the server behind `pg` says it is read-only: in recovery
 * (in_hot_standby) or default_transaction_read_only on, as reported by
 * PostgreSQL 14+ at connect and whenever they change. *known is false when
 * the server reports neither (older servers, or a pooler such as PgBouncer
 * in between). */
bool ds__server_read_only(PGconn *pg, bool *known);

/* The notice receiver of every pooled connection: remembers a cancelled
 * synchronous-replication wait in c->not_durable (logs the rest at debug
 * level). `arg` is the ds_conn. */
void ds__conn_notice(void *arg, const PGresult *res);

/* ds__conn_check_durable() is declared in pool/stmt.h. */

/* Frees the prepared statement cache (the server side goes with the
 * connection). */
void ds__conn_free_cache(ds_conn *c);

#endif
