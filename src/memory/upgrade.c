/*
 * ds_memory_upgrade_to_pgvector(): a fallback database becomes a pgvector
 * one while the application keeps reading and writing memory_facts.
 *
 *   1. one short transaction creates the extension, adds a nullable column
 *      embedding_pgv vector(D) and a trigger that clears it whenever a
 *      writer changes `embedding` (so a converted value is never stale);
 *   2. batches of short transactions convert the embeddings: SQL alone
 *      cannot read little-endian float32 out of a bytea, so the library
 *      reads a batch (FOR UPDATE: its rows' writers wait for this batch
 *      only), decodes it and writes the vectors back;
 *   3. a partial index of the rows still to convert is built CONCURRENTLY
 *      (one scan that blocks neither reads nor writes), and the rows
 *      written meanwhile are converted through it;
 *   4. one short transaction takes ACCESS EXCLUSIVE, converts the few rows
 *      written since (found through that index: without it this was a scan
 *      of the whole table under the lock, about a second at 100,000 rows),
 *      drops the CHECK, the trigger and the bytea column (the index goes
 *      with it), renames the new column into place and records the
 *      backend. It queues for its lock at most 0.5 s (lock_timeout when
 *      shorter), since readers arriving meanwhile queue behind it, and is
 *      tried again after a jittered pause.
 *
 * The sketches and their covering index stay: searches on pgvector read
 * them first, as on the fallback, and no HNSW index is built (every search
 * is an exact per-user scan; see docs/memory.md).
 *
 * A run that stopped half-way leaves the new column and the trigger; the
 * next run continues from there.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/growable.h"
#include "core/progress.h"
#include "memory/memory_internal.h"

#define MODULE "memory"
/* Rows per batch: about 2 MiB of floats, at most 1000 rows. */
#define BATCH_FLOATS 262144
#define BATCH_MAX 1000
#define SWAP_TRIES 8
/* How long one try of the swap queues for its ACCESS EXCLUSIVE lock. */
#define SWAP_LOCK_WAIT_MS 500
/* The rows not converted yet; its predicate names the bytea column, so
 * dropping that column in the swap drops it too. */
#define TODO_INDEX "memory_facts_upgrade_todo_idx"

const ds__stmt_def ds__memory_upgrade_stmts[U_COUNT_] = {
    [U_TIMEOUT] = {"memory.upgrade.timeout",
                   "SELECT set_config('lock_timeout', $1, true), "
                   "set_config('statement_timeout', '0', true)",
                   1,
                   {DS_OID_TEXT},
                   2,
                   {DS_OID_TEXT, DS_OID_TEXT}},
    /* Remember whether we created it, so the down migration can undo it. */
    [U_EXTENSION] = {"memory.upgrade.extension",
                     "DO $ext$ BEGIN IF NOT EXISTS (SELECT 1 FROM "
                     "pg_extension WHERE extname = 'vector') THEN "
                     "CREATE EXTENSION vector; UPDATE memory_vector_settings "
                     "SET extension_created = true; END IF; END $ext$",
                     0,
                     {0},
                     -1,
                     {0}},
    /* The dimension comes from the record; format() quotes nothing else. */
    [U_PREPARE] =
        {"memory.upgrade.prepare",
         "DO $prep$ DECLARE dim integer := (SELECT embedding_dim FROM "
         "memory_vector_settings); BEGIN "
         "EXECUTE format('ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS "
         "embedding_pgv vector(%s)', dim); "
         "ALTER TABLE memory_facts ALTER COLUMN embedding_pgv SET STORAGE MAIN; "
         "CREATE OR REPLACE FUNCTION ds_memory_upgrade_reset() RETURNS trigger "
         "LANGUAGE plpgsql AS $fn$ BEGIN NEW.embedding_pgv := NULL; "
         "RETURN NEW; END $fn$; "
         "DROP TRIGGER IF EXISTS ds_memory_upgrade_reset ON memory_facts; "
         "CREATE TRIGGER ds_memory_upgrade_reset BEFORE INSERT OR UPDATE OF "
         "embedding ON memory_facts FOR EACH ROW EXECUTE FUNCTION "
         "ds_memory_upgrade_reset(); END $prep$",
         0,
         {0},
         -1,
         {0}},
    [U_READ] = {"memory.upgrade.read",
                "SELECT id, embedding FROM memory_facts "
                "WHERE id > $1 AND embedding IS NOT NULL AND embedding_pgv "
                "IS NULL ORDER BY id LIMIT $2 FOR UPDATE",
                2,
                {DS_OID_INT8, DS_OID_INT4},
                2,
                {DS_OID_INT8, DS_OID_BYTEA}},
    /* $2 holds the batch's vectors end to end, $3 values each */
    [U_WRITE] = {"memory.upgrade.write",
                 "UPDATE memory_facts m SET embedding_pgv = "
                 "v.e::vector FROM (SELECT u.id, "
                 "($2::real[])[(u.n - 1) * $3 + 1 : u.n * $3] AS e "
                 "FROM unnest($1::int8[]) WITH ORDINALITY AS u(id, n)) v "
                 "WHERE m.id = v.id",
                 3,
                 {DS_OID_INT8_ARRAY, DS_OID_FLOAT4_ARRAY, DS_OID_INT4},
                 -1,
                 {0}},
    [U_LOCK] = {"memory.upgrade.lock",
                "LOCK TABLE memory_facts, memory_vector_settings "
                "IN ACCESS EXCLUSIVE MODE",
                0,
                {0},
                -1,
                {0}},
    [U_SWAP] =
        {"memory.upgrade.swap",
         "DO $swap$ BEGIN "
         "DROP TRIGGER IF EXISTS ds_memory_upgrade_reset ON memory_facts; "
         "DROP FUNCTION IF EXISTS ds_memory_upgrade_reset(); "
         "ALTER TABLE memory_facts DROP CONSTRAINT IF EXISTS "
         "memory_facts_embedding_dim_check; "
         "ALTER TABLE memory_facts DROP COLUMN embedding; "
         "ALTER TABLE memory_facts RENAME COLUMN embedding_pgv TO embedding; "
         "UPDATE memory_vector_settings SET backend = 'pgvector', "
         "updated_at = now(); END $swap$",
         0,
         {0},
         -1,
         {0}},
};

size_t ds__stmts_memory_upgrade(const ds__stmt_def **defs) {
    *defs = ds__memory_upgrade_stmts;
    return U_COUNT_;
}

static ds_status run(ds_conn *c, const ds__stmt_def *def, const ds__bind *p,
                     ds_error *err) {
    PGresult *r = ds__memory_exec(c, def, p, err);
    if (!r)
        return err->code;
    PQclear(r);
    return DS_OK;
}

static ds_status begin_tx(ds_conn *c, const char *lock_timeout,
                          ds_error *err) {
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_BEGIN], NULL, err);
    if (!r)
        return err->code;
    PQclear(r);
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_text(&p, lock_timeout);
    ds_status st = run(c, &ds__memory_upgrade_stmts[U_TIMEOUT], &p, err);
    ds__bind_free(&p);
    return st;
}

static ds_status commit_tx(ds_conn *c, ds_error *err) {
    return run(c, &ds__memory_stmts[M_COMMIT], NULL, err);
}

static void rollback_tx(ds_conn *c) {
    PQclear(ds__conn_simple(c, "ROLLBACK"));
}

/* Converts up to one batch of rows (id > *after) inside the caller's
 * transaction; *n gets how many. */
static ds_status convert_batch(ds_conn *c, size_t dim, size_t batch,
                               int64_t *after, size_t *n, int64_t *ids,
                               float *flat, ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, *after);
    ds__bind_int32(&p, (int32_t)batch);
    PGresult *r = ds__memory_exec(c, &ds__memory_upgrade_stmts[U_READ], &p, err);
    ds__bind_free(&p);
    if (!r)
        return err->code;
    *n = (size_t)PQntuples(r);
    ds_status st = DS_OK;
    for (size_t i = 0; st == DS_OK && i < *n; i++) {
        ids[i] = ds__memory_int8(r, (int)i, 0);
        if ((size_t)PQgetlength(r, (int)i, 1) != 4 * dim)
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding has %d bytes, "
                               "not %zu",
                               (long long)ids[i], PQgetlength(r, (int)i, 1),
                               4 * dim);
        else
            ds__vec_from_le((const unsigned char *)PQgetvalue(r, (int)i, 1),
                            dim, flat + i * dim);
    }
    PQclear(r);
    if (st != DS_OK || *n == 0)
        return st;
    ds__bind w;
    ds__bind_init(&w);
    ds__bind_int8_array(&w, ids, *n);
    ds__bind_float4_array(&w, flat, *n * dim);
    ds__bind_int32(&w, (int32_t)dim);
    st = run(c, &ds__memory_upgrade_stmts[U_WRITE], &w, err);
    ds__bind_free(&w);
    *after = ids[*n - 1];
    return st;
}

typedef struct buffers {
    size_t batch;
    int64_t *ids;
    float *flat;
} buffers;

static ds_status buffers_init(buffers *b, size_t dim, ds_error *err) {
    b->batch = BATCH_FLOATS / dim;
    if (b->batch < 1)
        b->batch = 1;
    if (b->batch > BATCH_MAX)
        b->batch = BATCH_MAX;
    b->ids = ds__calloc(b->batch, sizeof *b->ids);
    b->flat = ds__calloc(b->batch * dim, sizeof *b->flat);
    if (!b->ids || !b->flat)
        return ds__error_set(err, DS_ERR_NOMEM, "memory upgrade: out of memory");
    return DS_OK;
}

static void buffers_free(buffers *b) {
    ds__free(b->ids);
    ds__free(b->flat);
}

/* Every row not converted yet, a batch per transaction. Passes repeat
 * while writers changed rows behind the previous pass (at most a few). */
static ds_status convert_all(ds_conn *c, size_t dim, const char *lt,
                             buffers *b, size_t *converted, ds__progress *prog,
                             int64_t total, ds_error *err) {
    for (int pass = 0; pass < 4; pass++) {
        int64_t after = 0;
        size_t in_pass = 0;
        for (;;) {
            ds_status st = begin_tx(c, lt, err);
            size_t n = 0;
            if (st == DS_OK)
                st = convert_batch(c, dim, b->batch, &after, &n, b->ids,
                                   b->flat, err);
            if (st == DS_OK)
                st = commit_tx(c, err);
            if (st != DS_OK) {
                rollback_tx(c);
                return st;
            }
            in_pass += n;
            if (n > 0 && (st = ds__progress_report(
                              prog, "memory_facts", "convert", "rows",
                              (int64_t)(*converted + in_pass), total,
                              "the database stays on the fallback; run the "
                              "upgrade again to continue",
                              err)) != DS_OK)
                return st;
            if (n < b->batch)
                break;
        }
        *converted += in_pass;
        if (in_pass == 0)
            break;
    }
    return DS_OK;
}

/* Builds TODO_INDEX (again, when a stopped build left it INVALID). It runs
 * outside a transaction without statement_timeout; the setting is reset
 * afterwards, whatever happened (behind a transaction pooler the server
 * connection goes on to other clients), and the lease is discarded. */
static ds_status build_todo_index(ds_conn *c, ds_error *err) {
    ds_pool_conn_discard(c);
    PGresult *r = ds__sql_run(c,
                              "SELECT NOT indisvalid FROM pg_index WHERE "
                              "indexrelid = to_regclass('" TODO_INDEX "')",
                              NULL, "memory upgrade", err);
    if (!r)
        return err->code;
    bool invalid = PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 1 &&
                   PQgetvalue(r, 0, 0)[0] != 0;
    PQclear(r);
    ds_status st = ds__conn_exec_simple(c, "SET statement_timeout = 0", err);
    if (st == DS_OK && invalid)
        st = ds__conn_exec_simple(
            c, "DROP INDEX CONCURRENTLY IF EXISTS " TODO_INDEX, err);
    if (st == DS_OK)
        st = ds__conn_exec_simple(
            c,
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS " TODO_INDEX
            " ON memory_facts (id) WHERE embedding IS NOT NULL AND "
            "embedding_pgv IS NULL",
            err);
    ds_error ignore = {0};
    (void)ds__conn_exec_simple(c, "RESET statement_timeout", &ignore);
    return st;
}

/* The short exclusive step: the last rows, then the new column takes the
 * old one's place. */
static ds_status swap(ds_conn *c, size_t dim, const char *lt, buffers *b,
                      size_t *converted, ds_error *err) {
    ds_status st = begin_tx(c, lt, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_LOCK], NULL, err);
    int64_t after = 0;
    size_t n = b->batch;
    while (st == DS_OK && n == b->batch) {
        st = convert_batch(c, dim, b->batch, &after, &n, b->ids, b->flat,
                           err);
        *converted += n;
    }
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_SWAP], NULL, err);
    if (st == DS_OK)
        st = commit_tx(c, err);
    if (st != DS_OK)
        rollback_tx(c);
    return st;
}

/* The rows left to convert: the progress total, counted once. */
static ds_status count_pending(ds_conn *c, int64_t *total, ds_error *err) {
    PGresult *r = ds__sql_run(c,
                              "SELECT count(*)::text FROM memory_facts WHERE "
                              "embedding IS NOT NULL AND embedding_pgv IS NULL",
                              NULL, "memory upgrade", err);
    if (!r)
        return err->code;
    *total = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return DS_OK;
}

static ds_status upgrade(ds_conn *c, int lock_timeout_ms, ds__progress *prog,
                         ds_error *err) {
    char lt[32];
    snprintf(lt, sizeof lt, "%dms", lock_timeout_ms > 0 ? lock_timeout_ms : 5000);
    PGresult *r;
    ds_status st = begin_tx(c, lt, err);
    if (st != DS_OK)
        return st;
    if ((st = ds__memory_settings(c, &r, err)) != DS_OK)
        return st;
    size_t dim = ds__get_be32(PQgetvalue(r, 0, 0));
    bool already = strcmp(PQgetvalue(r, 0, 1), "pgvector") == 0;
    bool available = PQgetvalue(r, 0, 5)[0] != 0;
    PQclear(r);
    if (already)
        return commit_tx(c, err);
    if (!available)
        return ds__error_set(err, DS_ERR_UNSUPPORTED,
                             "this server has no pgvector extension: install "
                             "it first (the database stays on the fallback)");
    int64_t t0 = ds__now_us();
    size_t converted = 0;
    st = run(c, &ds__memory_upgrade_stmts[U_EXTENSION], NULL, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_PREPARE], NULL, err);
    if (st == DS_OK)
        st = commit_tx(c, err);
    if (st != DS_OK) {
        rollback_tx(c);
        return st;
    }
    buffers b = {0};
    int64_t total = -1;
    st = buffers_init(&b, dim, err);
    if (st == DS_OK && prog->fn)
        st = count_pending(c, &total, err);
    if (st == DS_OK)
        st = convert_all(c, dim, lt, &b, &converted, prog, total, err);
    if (st == DS_OK)
        st = build_todo_index(c, err);
    if (st == DS_OK) /* what was written during the build */
        st = convert_all(c, dim, lt, &b, &converted, prog, total, err);
    char swap_lt[32];
    snprintf(swap_lt, sizeof swap_lt, "%dms",
             lock_timeout_ms > 0 && lock_timeout_ms < SWAP_LOCK_WAIT_MS
                 ? lock_timeout_ms
                 : SWAP_LOCK_WAIT_MS);
    for (int attempt = 0; st == DS_OK; attempt++) {
        ds_error local = {0};
        st = swap(c, dim, swap_lt, &b, &converted, &local);
        if (st == DS_OK || strcmp(local.sqlstate, "55P03") != 0 ||
            attempt + 1 >= SWAP_TRIES) {
            if (st != DS_OK && err)
                *err = local;
            break;
        }
        int64_t nap = ds__lock_retry_pause_us(100000, attempt, 4);
        ds__log(DS_LOG_WARN, MODULE,
                "upgrade: lock_timeout on the final swap (attempt %d of %d); "
                "trying again in %lld ms",
                attempt + 1, SWAP_TRIES, (long long)(nap / 1000));
        ds__sleep_us(nap);
        st = DS_OK;
    }
    buffers_free(&b);
    if (st == DS_OK) /* finished: nothing left for a stop to stop */
        (void)ds__progress_report(prog, "memory_facts", "convert", "rows",
                                  (int64_t)converted, (int64_t)converted,
                                  NULL, NULL);
    if (st == DS_OK)
        ds__log(DS_LOG_INFO, MODULE,
                "converted %zu embeddings to pgvector in %lld ms", converted,
                (long long)((ds__now_us() - t0) / 1000));
    else
        ds__error_prefix(err, "upgrade to pgvector stopped; the database "
                              "stays on the fallback (run it again to "
                              "continue)");
    return st;
}

DS_EXPORT void ds_memory_upgrade_options_init(ds_memory_upgrade_options *opts) {
    if (opts) {
        memset(opts, 0, sizeof *opts);
        opts->size = sizeof *opts;
    }
}

DS_EXPORT ds_status ds_memory_upgrade_to_pgvector(
    ds_pool *pool, const ds_memory_upgrade_options *opts, ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_memory_upgrade_options o;
    ds_status checked = DS__IN(opts, &o, ds_memory_upgrade_options, err);
    if (checked != DS_OK)
        return checked;
    ds__progress prog;
    ds__progress_init(&prog, "memory_upgrade", o.progress, o.progress_ud);
    ds_conn *c;
    ds_status st = ds_pool_acquire(pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    st = upgrade(c, ds__pool_settings_get(pool)->migrate_lock_timeout_ms,
                 &prog, &local);
    if (st != DS_OK && strcmp(local.sqlstate, "42P01") == 0) {
        local.code = st = DS_ERR_SCHEMA;
        ds__error_prefix(&local, "the memory schema is missing (run the "
                                 "migrations first)");
    }
    ds_pool_release(c); /* rolls back a transaction left open */
    return st == DS_OK ? DS_OK : ds__memory_fail(&local, err);
}
