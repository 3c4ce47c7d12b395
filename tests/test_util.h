/* Helpers shared by the Check suites. Tests talk to the real services that
 * scripts/services starts; scripts/run-tests exports their URLs. */
#ifndef DS_TEST_UTIL_H
#define DS_TEST_UTIL_H

#include <check.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "datastore/datastore.h"

/* Fails the test unless `st` is DS_OK, printing the error. */
#define ck_assert_ds_ok(st, err)                                               \
    ck_assert_msg((st) == DS_OK, "expected DS_OK, got %s: %s",                 \
                  ds_status_str(st), (err).message)
/* Fails unless `st` equals `want`. */
#define ck_assert_ds_status(st, want, err)                                     \
    ck_assert_msg((st) == (want), "expected %s, got %s: %s",                   \
                  ds_status_str(want), ds_status_str(st), (err).message)

/* The value of an environment variable the harness must set; fails the
 * test (with a hint) when it is missing. */
const char *dt_env(const char *name);
/* The value, or NULL when unset or empty. */
const char *dt_env_opt(const char *name);

/* Prints "SKIP: <test>: <reason>" (counted by scripts/run-tests). The
 * caller returns from the test after it. */
void dt_skip(const char *test, const char *reason);
/* Whether the test server offers the pgvector extension. */
bool dt_server_has_pgvector(void);
/* True (after printing why) when a pgvector case cannot run here: the
 * server lacks pgvector, or DS_VECTOR_BACKEND=fallback forces the fallback. */
bool dt_skip_without_pgvector(const char *test);

/* A config for `url` with small, test-friendly pool settings. */
ds_config *dt_config(const char *url, int pool_min, int pool_max);
/* Opens a pool on `url`, failing the test on error. */
ds_pool *dt_pool(const char *url, int pool_min, int pool_max);

/* Runs scripts/services with the given arguments; returns its exit code. */
int dt_services(const char *args);

/* `url` with its database name replaced (malloc'd). */
char *dt_url_with_db(const char *url, const char *dbname);
/* The database name of `url` (malloc'd). */
char *dt_db_name(const char *url);
/* `base` (another server: PgBouncer, the replica) pointed at the database
 * `url` names (malloc'd). */
char *dt_url_same_db(const char *base, const char *url);
/* The replica (DATABASE_REPLICA_URLS) pointed at the database `url` names,
 * once it has replayed that database and `ready_sql` (one int: nonzero
 * when what the test needs has arrived) says so; fails the test after
 * 30 s. malloc'd. */
char *dt_replica_when_ready(const char *url, const char *ready_sql);
/* Pauses WAL replay on `replica_url` and waits (at most 30 s) until it is
 * paused; pg_wal_replay_resume() undoes it. */
void dt_replica_pause_replay(const char *replica_url);
/* A pool in pooler statement mode through PgBouncer (DATABASE_POOLER_URL)
 * on the database `url` names; fails the test on error. */
ds_pool *dt_pooler_pool(const char *url, int pool_min, int pool_max);

/* Creates a fresh, empty database named dt_<tag>_<pid>_<n> on the primary
 * and returns its URL (malloc'd). scripts/run-tests drops leftovers. */
char *dt_create_db(const char *tag);
/* dt_create_db() plus every migration built into the library applied
 * with ds_migrate_up() (the platform schema). Like ds-migrate, the runner
 * passes DS_EMBEDDING_DIM and DS_VECTOR_BACKEND (when set) to the
 * migrations. Returns the URL (malloc'd). */
char *dt_migrated_db(const char *tag);
/* dt_migrated_db() with ds.vector_backend set to `backend` ("auto",
 * "pgvector", "fallback"; NULL: DS_VECTOR_BACKEND as above). */
char *dt_migrated_db_backend(const char *tag, const char *backend);
/* Drops the database named by `url` (WITH (FORCE)). */
void dt_drop_db(const char *url);

/* Runs SQL (simple protocol) on `url` through plain libpq and fails the
 * test on error. */
void dt_sql(const char *url, const char *sql);
/* A plain libpq connection to `url` (fails the test if it cannot connect);
 * the caller PQfinish()es it. */
PGconn *dt_connect(const char *url);
/* Runs SQL on `c` (simple protocol) and fails the test on error. */
void dt_exec(PGconn *c, const char *sql);
/* First column of the first row as int64 (fails the test otherwise). */
long long dt_sql_int(const char *url, const char *sql);

/* Fixed test keys, "<key id>:<base64 of 32 bytes>", for rings opened
 * with dt_crypto_ring() (DT_K2 "," DT_K1: k2 active, k1 still readable). */
#define DT_K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define DT_K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define DT_K3 "k3:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="
/* ds_crypto_open_keys(spec) (see DS_TOKEN_KEYS); fails the test on error. */
ds_crypto *dt_crypto_ring(const char *spec);

/* Forks `n` processes; process `index` runs child(ud, index) and exits
 * with what it returns (0: all went well). Waits for every one and fails
 * the test unless each exited 0. A child must not use ck_assert: it
 * reports through its exit code (or memory shared with MAP_SHARED). */
void dt_run_processes(int n, int (*child)(void *ud, int index), void *ud);

/* Monotonic milliseconds. */
long long dt_now_ms(void);

/* Runs "SELECT 1" through `pool` every 50 ms until it succeeds or
 * `timeout_ms` have passed: for a pool that must heal by itself after a
 * restart or a partition. Returns the last call's status (its error in
 * `err`, which may be NULL); `attempts` (may be NULL) counts the calls. */
ds_status dt_pool_wait_query_ok(ds_pool *pool, long long timeout_ms,
                                int *attempts, ds_error *err);

#endif
