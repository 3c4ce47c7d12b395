/*
 * ds_memory_upgrade_to_pgvector(): a fallback database becomes a pgvector
 * one in a single transaction.
 *
 * SQL alone cannot read little-endian float32 out of a bytea, so the
 * library does that part: it stages every embedding as real[] in a
 * temporary table (batches of BATCH rows), then one ALTER TABLE rewrites
 * memory_facts with embedding vector(D) taken from the stage (through a
 * temporary SQL function, since ALTER TABLE ... USING allows no subquery).
 * The sketches and their covering index stay: searches on pgvector read
 * them first, as on the fallback (no HNSW index is built; see
 * docs/memory.md). The exclusive lock taken first means no row can change
 * in between.
 */
#include <stdio.h>

#include "memory/memory_internal.h"

#define MODULE "memory"
/* Rows per staging batch: about 2 MiB of floats, at most 1000 rows. */
#define BATCH_FLOATS 262144
#define BATCH_MAX 1000

const ds__stmt_def ds__memory_upgrade_stmts[U_COUNT_] = {
    [U_LOCK] = {"memory.upgrade.lock",
                "LOCK TABLE memory_facts, memory_vector_settings "
                "IN ACCESS EXCLUSIVE MODE",
                0,
                {0},
                -1,
                {0}},
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
    [U_STAGE] = {"memory.upgrade.stage",
                 "CREATE TEMPORARY TABLE ds_memory_upgrade "
                 "(id bigint PRIMARY KEY, embedding real[] NOT NULL) "
                 "ON COMMIT DROP",
                 0,
                 {0},
                 -1,
                 {0}},
    [U_READ] = {"memory.upgrade.read",
                "SELECT id, embedding FROM memory_facts "
                "WHERE id > $1 AND embedding IS NOT NULL ORDER BY id LIMIT $2",
                2,
                {DS_OID_INT8, DS_OID_INT4},
                2,
                {DS_OID_INT8, DS_OID_BYTEA}},
    /* $2 holds the batch's vectors end to end, $3 values each */
    [U_WRITE] = {"memory.upgrade.write",
                 "INSERT INTO pg_temp.ds_memory_upgrade (id, embedding) "
                 "SELECT u.id, ($2::real[])[(u.n - 1) * $3 + 1 : u.n * $3] "
                 "FROM unnest($1::int8[]) WITH ORDINALITY AS u(id, n)",
                 3,
                 {DS_OID_INT8_ARRAY, DS_OID_FLOAT4_ARRAY, DS_OID_INT4},
                 -1,
                 {0}},
    [U_FUNCTION] = {"memory.upgrade.function",
                    "CREATE FUNCTION pg_temp.ds_memory_staged(bigint) "
                    "RETURNS real[] LANGUAGE sql STABLE AS "
                    "'SELECT embedding FROM pg_temp.ds_memory_upgrade "
                    "WHERE id = $1'",
                    0,
                    {0},
                    -1,
                    {0}},
    /* The dimension comes from the record; format() quotes nothing else. */
    [U_CONVERT] =
        {"memory.upgrade.convert",
         "DO $convert$ DECLARE dim integer := (SELECT embedding_dim FROM "
         "memory_vector_settings); BEGIN "
         "ALTER TABLE memory_facts DROP CONSTRAINT IF EXISTS "
         "memory_facts_embedding_dim_check; "
         "EXECUTE format('ALTER TABLE memory_facts ALTER COLUMN embedding "
         "TYPE vector(%s) USING pg_temp.ds_memory_staged(id)::vector(%s)', "
         "dim, dim); "
         "ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN; "
         "UPDATE memory_vector_settings SET backend = 'pgvector', "
         "updated_at = now(); END $convert$",
         0,
         {0},
         -1,
         {0}},
    [U_CLEANUP] = {"memory.upgrade.cleanup",
                   "DROP FUNCTION pg_temp.ds_memory_staged(bigint)",
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

/* Copies every embedding into the stage, a batch at a time. */
static ds_status stage_embeddings(ds_conn *c, size_t dim, size_t *staged,
                                  ds_error *err) {
    size_t batch = BATCH_FLOATS / dim;
    if (batch < 1)
        batch = 1;
    if (batch > BATCH_MAX)
        batch = BATCH_MAX;
    int64_t *ids = ds__calloc(batch, sizeof *ids);
    float *flat = ds__calloc(batch * dim, sizeof *flat);
    ds_status st = DS_OK;
    if (!ids || !flat)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory upgrade: out of memory");
    int64_t after = 0;
    while (st == DS_OK) {
        ds__bind p;
        ds__bind_init(&p);
        ds__bind_int64(&p, after);
        ds__bind_int32(&p, (int32_t)batch);
        PGresult *r =
            ds__memory_exec(c, &ds__memory_upgrade_stmts[U_READ], &p, err);
        if (!r) {
            st = err->code;
            break;
        }
        size_t n = (size_t)PQntuples(r);
        for (size_t i = 0; st == DS_OK && i < n; i++) {
            ids[i] = ds__memory_int8(r, (int)i, 0);
            if ((size_t)PQgetlength(r, (int)i, 1) != 4 * dim)
                st = ds__error_set(err, DS_ERR_SCHEMA,
                                   "memory fact %lld: embedding has %d "
                                   "bytes, not %zu",
                                   (long long)ids[i],
                                   PQgetlength(r, (int)i, 1), 4 * dim);
            else
                ds__vec_from_le(
                    (const unsigned char *)PQgetvalue(r, (int)i, 1), dim,
                    flat + i * dim);
        }
        PQclear(r);
        if (st != DS_OK || n == 0)
            break;
        ds__bind w;
        ds__bind_init(&w);
        ds__bind_int8_array(&w, ids, n);
        ds__bind_float4_array(&w, flat, n * dim);
        ds__bind_int32(&w, (int32_t)dim);
        st = run(c, &ds__memory_upgrade_stmts[U_WRITE], &w, err);
        ds__bind_free(&w);
        *staged += n;
        after = ids[n - 1];
        if (n < batch)
            break;
    }
    ds__free(ids);
    ds__free(flat);
    return st;
}

static ds_status upgrade(ds_conn *c, ds_error *err) {
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_BEGIN], NULL, err);
    if (!r)
        return err->code;
    PQclear(r);
    ds_status st = run(c, &ds__memory_upgrade_stmts[U_LOCK], NULL, err);
    if (st != DS_OK)
        return st;
    if ((st = ds__memory_settings(c, &r, err)) != DS_OK)
        return st;
    size_t dim = ds__get_be32(PQgetvalue(r, 0, 0));
    bool already = strcmp(PQgetvalue(r, 0, 1), "pgvector") == 0;
    bool available = PQgetvalue(r, 0, 5)[0] != 0;
    PQclear(r);
    if (already)
        return run(c, &ds__memory_stmts[M_COMMIT], NULL, err);
    if (!available)
        return ds__error_set(err, DS_ERR_UNSUPPORTED,
                             "this server has no pgvector extension: install "
                             "it first (the database stays on the fallback)");
    int64_t t0 = ds__now_us();
    size_t staged = 0;
    st = run(c, &ds__memory_upgrade_stmts[U_EXTENSION], NULL, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_STAGE], NULL, err);
    if (st == DS_OK)
        st = stage_embeddings(c, dim, &staged, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_FUNCTION], NULL, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_CONVERT], NULL, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_upgrade_stmts[U_CLEANUP], NULL, err);
    if (st == DS_OK)
        st = run(c, &ds__memory_stmts[M_COMMIT], NULL, err);
    if (st == DS_OK)
        ds__log(DS_LOG_INFO, MODULE,
                "converted %zu embeddings to pgvector in %lld ms", staged,
                (long long)((ds__now_us() - t0) / 1000));
    else
        ds__error_prefix(err, "upgrade to pgvector failed; nothing changed");
    return st;
}

DS_EXPORT ds_status ds_memory_upgrade_to_pgvector(ds_pool *pool,
                                                  ds_error *err) {
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_conn *c;
    ds_status st = ds_pool_acquire(pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    st = upgrade(c, &local);
    if (st != DS_OK && strcmp(local.sqlstate, "42P01") == 0) {
        local.code = st = DS_ERR_SCHEMA;
        ds__error_prefix(&local, "the memory schema is missing (run the "
                                 "migrations first)");
    }
    /* temporary objects must not outlive the transaction on a reused
     * connection: a failure rolls them back, success dropped them */
    ds_pool_release(c); /* rolls back a failed transaction */
    return st == DS_OK ? DS_OK : ds__memory_fail(&local, err);
}
