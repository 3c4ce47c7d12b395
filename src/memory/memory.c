/*
 * The memory store: statements, the handle and its detection of the
 * database's backend, and the facts' create/read/update/delete.
 * Searches are in search.c, the fallback-to-pgvector conversion in
 * upgrade.c, the vector arithmetic in vec.c.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/config_internal.h"
#include "core/json_internal.h"
#include "memory/memory_internal.h"

#define MODULE "memory"

/* ---- statements ------------------------------------------------------------ */

#define FACT_COLS                                                              \
    "id, user_id, kind, content, metadata, importance, created_at, "          \
    "updated_at, last_accessed_at"
#define FACT_TYPES                                                             \
    DS_OID_INT8, DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT, DS_OID_JSONB,          \
        DS_OID_FLOAT4, DS_OID_TIMESTAMPTZ, DS_OID_TIMESTAMPTZ,                 \
        DS_OID_TIMESTAMPTZ
#define KIND_FILTER "($%d::text IS NULL OR kind = $%d)"

const ds__stmt_def ds__memory_stmts[M_COUNT_] = {
    [M_SETTINGS] = {"memory.settings",
                    "SELECT s.embedding_dim, s.backend, "
                    "(SELECT extversion FROM pg_extension WHERE extname = "
                    "'vector'), "
                    "(SELECT format_type(a.atttypid, a.atttypmod) FROM "
                    "pg_attribute a WHERE a.attrelid = "
                    "'memory_facts'::regclass AND a.attname = 'embedding' "
                    "AND NOT a.attisdropped), "
                    "to_regclass('memory_facts_embedding_hnsw') IS NOT NULL, "
                    "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name "
                    "= 'vector') "
                    "FROM memory_vector_settings s",
                    0,
                    {0},
                    6,
                    {DS_OID_INT4, DS_OID_TEXT, DS_OID_TEXT, DS_OID_TEXT,
                     DS_OID_BOOL, DS_OID_BOOL}},
    [M_BEGIN] = {"memory.begin", "BEGIN", 0, {0}, -1, {0}},
    [M_BEGIN_READ] = {"memory.begin_read",
                      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                      0,
                      {0},
                      -1,
                      {0}},
    [M_COMMIT] = {"memory.commit", "COMMIT", 0, {0}, -1, {0}},
    [M_ROWS] = {"memory.rows",
                "SELECT " FACT_COLS " FROM memory_facts "
                "WHERE user_id = $1 AND id = ANY($2)",
                2,
                {DS_OID_INT8, DS_OID_INT8_ARRAY},
                DS_MEMORY_ROW_COLS,
                {FACT_TYPES}},
    [M_LIST] = {"memory.list",
                "SELECT " FACT_COLS " FROM memory_facts "
                "WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) "
                "AND id > $3 ORDER BY id LIMIT $4",
                4,
                {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT8, DS_OID_INT4},
                DS_MEMORY_ROW_COLS,
                {FACT_TYPES}},
    [M_SET_IMPORTANCE] = {"memory.set_importance",
                          "UPDATE memory_facts SET importance = $3, "
                          "updated_at = now() "
                          "WHERE user_id = $1 AND id = $2 RETURNING id",
                          3,
                          {DS_OID_INT8, DS_OID_INT8, DS_OID_FLOAT4},
                          1,
                          {DS_OID_INT8}},
    [M_TOUCH] = {"memory.touch",
                 "UPDATE memory_facts SET last_accessed_at = now() "
                 "WHERE user_id = $1 AND id = ANY($2)",
                 2,
                 {DS_OID_INT8, DS_OID_INT8_ARRAY},
                 -1,
                 {0}},
    [M_DELETE] = {"memory.delete",
                  "DELETE FROM memory_facts WHERE user_id = $1 AND id = $2 "
                  "RETURNING id",
                  2,
                  {DS_OID_INT8, DS_OID_INT8},
                  1,
                  {DS_OID_INT8}},
    /* The expression matches memory_facts_content_fts_idx. */
    [M_TEXT_CANDIDATES] = {"memory.text_candidates",
                           "SELECT f.id, ts_rank_cd(to_tsvector('english', "
                           "f.content), q) AS rank "
                           "FROM memory_facts f, "
                           "websearch_to_tsquery('english', $2) q "
                           "WHERE f.user_id = $1 AND ($3::text IS NULL OR "
                           "f.kind = $3) "
                           "AND to_tsvector('english', f.content) @@ q "
                           "ORDER BY rank DESC, f.id LIMIT $4",
                           4,
                           {DS_OID_INT8, DS_OID_TEXT, DS_OID_TEXT,
                            DS_OID_INT4},
                           2,
                           {DS_OID_INT8, DS_OID_FLOAT4}},
    /* The first stage of every search, on both backends: an index-only
     * scan of memory_facts_embedding_sketch_idx (the predicate is the
     * index's). A NULL sketch (a row written before sketches were kept on
     * pgvector) is returned too: the caller always rescores it. */
    [M_SKETCHES] = {"memory.sketches",
                    "SELECT id, embedding_sketch FROM memory_facts "
                    "WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) "
                    "AND (embedding_sketch IS NULL OR "
                    "octet_length(embedding_sketch) <= 2008)",
                    2,
                    {DS_OID_INT8, DS_OID_TEXT},
                    2,
                    {DS_OID_INT8, DS_OID_BYTEA}},
    /* Above DS_SKETCH_INDEX_MAX_DIM dimensions: from the table. */
    [M_SKETCHES_WIDE] = {"memory.sketches_wide",
                         "SELECT id, embedding_sketch FROM memory_facts "
                         "WHERE user_id = $1 AND ($2::text IS NULL OR "
                         "kind = $2)",
                         2,
                         {DS_OID_INT8, DS_OID_TEXT},
                         2,
                         {DS_OID_INT8, DS_OID_BYTEA}},
};

const ds__stmt_def ds__memory_fallback_stmts[F_COUNT_] = {
    /* Up to a batch of facts in one statement, from parallel arrays. */
    [F_INSERT_MANY] = {"memory.fallback.insert_many",
                       "INSERT INTO memory_facts (user_id, kind, content, "
                       "metadata, importance, embedding, embedding_sketch) "
                       "SELECT * FROM unnest($1::int8[], $2::text[], "
                       "$3::text[], $4::jsonb[], $5::real[], $6::bytea[], "
                       "$7::bytea[]) RETURNING id",
                       7,
                       {DS_OID_INT8_ARRAY, DS_OID_TEXT_ARRAY,
                        DS_OID_TEXT_ARRAY, DS_OID_JSONB_ARRAY,
                        DS_OID_FLOAT4_ARRAY, DS_OID_BYTEA_ARRAY,
                        DS_OID_BYTEA_ARRAY},
                       1,
                       {DS_OID_INT8}},
    [F_GET] = {"memory.fallback.get",
               "SELECT " FACT_COLS ", embedding FROM memory_facts "
               "WHERE user_id = $1 AND id = $2",
               2,
               {DS_OID_INT8, DS_OID_INT8},
               DS_MEMORY_ROW_COLS + 1,
               {FACT_TYPES, DS_OID_BYTEA}},
    [F_EMBEDDINGS] = {"memory.fallback.embeddings",
                      "SELECT id, embedding FROM memory_facts "
                      "WHERE user_id = $1 AND id = ANY($2) "
                      "AND embedding IS NOT NULL",
                      2,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY},
                      2,
                      {DS_OID_INT8, DS_OID_BYTEA}},
};

const ds__stmt_def ds__memory_pgvector_stmts[P_COUNT_] = {
    /* $6 holds the batch's vectors end to end, $7 values each; $8 the
     * sketches, which searches read first (as on the fallback). */
    [P_INSERT_MANY] = {"memory.pgvector.insert_many",
                       "INSERT INTO memory_facts (user_id, kind, content, "
                       "metadata, importance, embedding, embedding_sketch) "
                       "SELECT u.user_id, u.kind, u.content, u.metadata, "
                       "u.importance, "
                       "($6::real[])[(u.n - 1) * $7 + 1 : u.n * $7]::vector, "
                       "u.sketch "
                       "FROM unnest($1::int8[], $2::text[], $3::text[], "
                       "$4::jsonb[], $5::real[], $8::bytea[]) WITH ORDINALITY "
                       "AS u(user_id, kind, content, metadata, importance, "
                       "sketch, n) "
                       "RETURNING id",
                       8,
                       {DS_OID_INT8_ARRAY, DS_OID_TEXT_ARRAY,
                        DS_OID_TEXT_ARRAY, DS_OID_JSONB_ARRAY,
                        DS_OID_FLOAT4_ARRAY, DS_OID_FLOAT4_ARRAY, DS_OID_INT4,
                        DS_OID_BYTEA_ARRAY},
                       1,
                       {DS_OID_INT8}},
    [P_GET] = {"memory.pgvector.get",
               "SELECT " FACT_COLS ", embedding::real[] FROM memory_facts "
               "WHERE user_id = $1 AND id = $2",
               2,
               {DS_OID_INT8, DS_OID_INT8},
               DS_MEMORY_ROW_COLS + 1,
               {FACT_TYPES, DS_OID_FLOAT4_ARRAY}},
    /* The exact vectors of a search's candidates, scored by the library
     * like the fallback's, so both backends rank alike. */
    [P_EMBEDDINGS] = {"memory.pgvector.embeddings",
                      "SELECT id, embedding::real[] FROM memory_facts "
                      "WHERE user_id = $1 AND id = ANY($2) "
                      "AND embedding IS NOT NULL",
                      2,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY},
                      2,
                      {DS_OID_INT8, DS_OID_FLOAT4_ARRAY}},
    /* ds_memory_fill_sketches (sketches.c): facts without a sketch, by id
     * from $1, and their sketches written back. */
    [P_UNSKETCHED] = {"memory.pgvector.unsketched",
                      "SELECT id, embedding::real[] FROM memory_facts "
                      "WHERE id > $1 AND embedding_sketch IS NULL "
                      "AND embedding IS NOT NULL ORDER BY id LIMIT $2",
                      2,
                      {DS_OID_INT8, DS_OID_INT4},
                      2,
                      {DS_OID_INT8, DS_OID_FLOAT4_ARRAY}},
    [P_SET_SKETCHES] = {"memory.pgvector.set_sketches",
                        "UPDATE memory_facts f SET embedding_sketch = "
                        "u.sketch FROM unnest($1::int8[], $2::bytea[]) "
                        "AS u(id, sketch) WHERE f.id = u.id "
                        "AND f.embedding_sketch IS NULL",
                        2,
                        {DS_OID_INT8_ARRAY, DS_OID_BYTEA_ARRAY},
                        -1,
                        {0}},
};

size_t ds__stmts_memory(const ds__stmt_def **defs) {
    *defs = ds__memory_stmts;
    return M_COUNT_;
}
size_t ds__stmts_memory_fallback(const ds__stmt_def **defs) {
    *defs = ds__memory_fallback_stmts;
    return F_COUNT_;
}
size_t ds__stmts_memory_pgvector(const ds__stmt_def **defs) {
    *defs = ds__memory_pgvector_stmts;
    return P_COUNT_;
}

/* ---- execution and decoding ------------------------------------------------- */

int ds__int64_cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

ds_status ds__memory_fail(const ds_error *local, ds_error *err) {
    if (err)
        *err = *local;
    return local->code ? local->code : DS_ERR_INTERNAL;
}

PGresult *ds__memory_exec(ds_conn *c, const ds__stmt_def *def,
                          const ds__bind *p, ds_error *err) {
    return ds__stmt_run(c, def, p, err);
}

int64_t ds__memory_int8(const PGresult *r, int row, int col) {
    return (int64_t)ds__get_be64(PQgetvalue(r, row, col));
}

double ds__memory_float(const PGresult *r, int row, int col) {
    const char *v = PQgetvalue(r, row, col);
    if (PQgetlength(r, row, col) == 4) {
        uint32_t bits = ds__get_be32(v);
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint64_t bits = ds__get_be64(v);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

int64_t ds__memory_ts(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col))
        return 0;
    return ds__ts_from_pg((int64_t)ds__get_be64(PQgetvalue(r, row, col)));
}

DS_EXPORT void ds_memory_fact_free(ds_memory_fact *fact) {
    if (!fact)
        return;
    ds__free(fact->kind);
    ds__free(fact->content);
    json_decref(fact->metadata);
    ds__free(fact->embedding);
    ds__free(fact);
}

DS_EXPORT void ds_memory_facts_free(ds_memory_facts *list) {
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        ds_memory_fact_free(list->items[i]);
    ds__free(list->items);
    ds__free(list);
}

ds_status ds__memory_list_new(size_t cap, ds_memory_facts **out,
                              ds_error *err) {
    *out = NULL;
    ds_memory_facts *l = ds__calloc(1, sizeof *l);
    ds_memory_fact **items = ds__calloc(cap ? cap : 1, sizeof *items);
    if (!l || !items) {
        ds__free(l);
        ds__free(items);
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    }
    l->items = items;
    *out = l;
    return DS_OK;
}

ds_status ds__memory_decode_fact(const PGresult *r, int row,
                                 ds_memory_fact **out, ds_error *err) {
    *out = NULL;
    ds_memory_fact *f = ds__calloc(1, sizeof *f);
    if (!f)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    f->id = ds__memory_int8(r, row, 0);
    f->user_id = ds__memory_int8(r, row, 1);
    f->kind = ds__strndup(PQgetvalue(r, row, 2),
                          (size_t)PQgetlength(r, row, 2));
    f->content = ds__strndup(PQgetvalue(r, row, 3),
                             (size_t)PQgetlength(r, row, 3));
    /* binary jsonb: a version byte (1), then the text */
    const char *meta = PQgetvalue(r, row, 4);
    int meta_len = PQgetlength(r, row, 4);
    if (meta_len >= 1 && meta[0] == 1)
        f->metadata = json_loadb(meta + 1, (size_t)meta_len - 1, 0, NULL);
    f->importance = ds__memory_float(r, row, 5);
    f->created_at_us = ds__memory_ts(r, row, 6);
    f->updated_at_us = ds__memory_ts(r, row, 7);
    f->last_accessed_at_us = ds__memory_ts(r, row, 8);
    if (!f->kind || !f->content || !f->metadata) {
        bool oom = !f->kind || !f->content || meta_len >= 1;
        ds_memory_fact_free(f);
        return oom ? ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory")
                   : ds__error_set(err, DS_ERR_INTERNAL,
                                   "memory: unexpected metadata encoding");
    }
    *out = f;
    return DS_OK;
}

PGresult *ds__memory_rows_by_ids(ds_conn *c, int64_t user_id,
                                 const int64_t *ids, size_t n, ds_error *err) {
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, n);
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_ROWS], &p, err);
    ds__bind_free(&p);
    return r;
}

/* ---- detection -------------------------------------------------------------- */

static void parse_version(const char *v, int out[3]) {
    out[0] = out[1] = out[2] = 0;
    sscanf(v, "%d.%d.%d", &out[0], &out[1], &out[2]);
}

typedef struct db_record {
    size_t dim;
    ds__memory_state state;
    bool available; /* the server could install pgvector */
} db_record;

ds_status ds__memory_settings(ds_conn *c, PGresult **out, ds_error *err) {
    *out = NULL;
    PGresult *r =
        ds__memory_exec(c, &ds__memory_stmts[M_SETTINGS], NULL, err);
    if (!r)
        return err->code;
    if (PQntuples(r) != 1) {
        ds_status st = ds__error_set(err, DS_ERR_SCHEMA,
                                     "memory_vector_settings must hold one "
                                     "row, it holds %d",
                                     PQntuples(r));
        PQclear(r);
        return st;
    }
    *out = r;
    return DS_OK;
}

/* Reads memory_vector_settings and the catalog, and checks that the
 * embedding column is what the record says. */
static ds_status read_record(ds_conn *c, db_record *rec, ds_error *err) {
    memset(rec, 0, sizeof *rec);
    ds_error local = {0};
    PGresult *r;
    ds_status st = ds__memory_settings(c, &r, &local);
    if (st != DS_OK) {
        if (strcmp(local.sqlstate, "42P01") == 0) {
            local.code = DS_ERR_SCHEMA;
            ds__error_prefix(&local, "the memory schema is missing (run the "
                                     "migrations: sql/0003_memory_embeddings)");
        }
        return ds__memory_fail(&local, err);
    }
    rec->dim = ds__get_be32(PQgetvalue(r, 0, 0));
    const char *backend = PQgetvalue(r, 0, 1);
    bool has_ext = !PQgetisnull(r, 0, 2);
    const char *coltype = PQgetisnull(r, 0, 3) ? "" : PQgetvalue(r, 0, 3);
    rec->state.hnsw = PQgetvalue(r, 0, 4)[0] != 0;
    rec->available = PQgetvalue(r, 0, 5)[0] != 0;
    if (has_ext)
        snprintf(rec->state.pgvector_version,
                 sizeof rec->state.pgvector_version, "%s",
                 PQgetvalue(r, 0, 2));
    int ver[3];
    parse_version(rec->state.pgvector_version, ver);
    rec->state.iterative = ver[0] > 0 || ver[1] >= 8;
    char want_type[32];
    if (strcmp(backend, "pgvector") == 0) {
        rec->state.backend = DS_VECTOR_BACKEND_PGVECTOR;
        snprintf(want_type, sizeof want_type, "vector(%zu)", rec->dim);
        if (!has_ext)
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "the database records the pgvector backend "
                               "but the extension is not installed");
    } else {
        rec->state.backend = DS_VECTOR_BACKEND_FALLBACK;
        snprintf(want_type, sizeof want_type, "bytea");
    }
    if (st == DS_OK && strcmp(coltype, want_type) != 0)
        st = ds__error_set(err, DS_ERR_SCHEMA,
                           "memory_facts.embedding is '%s' but the database "
                           "records the %s backend (%s)",
                           coltype[0] ? coltype : "missing", backend,
                           want_type);
    PQclear(r);
    return st;
}

static const char *backend_name(ds_vector_backend b) {
    return b == DS_VECTOR_BACKEND_PGVECTOR ? "pgvector" : "fallback";
}

ds__memory_state ds__memory_state_get(ds_memory *mem) {
    pthread_mutex_lock(&mem->mu);
    ds__memory_state s = mem->state;
    pthread_mutex_unlock(&mem->mu);
    return s;
}

bool ds__memory_state_changed(ds_memory *mem, const ds_error *failure) {
    /* What a statement of the old backend meets after a conversion: a
     * dropped column, an operator on the wrong type, a cached plan whose
     * result type changed. */
    static const char *const states[] = {"42703", "42883", "42804", "0A000",
                                         "42P01"};
    bool match = false;
    for (size_t i = 0; failure && i < sizeof states / sizeof states[0]; i++)
        match |= strcmp(failure->sqlstate, states[i]) == 0;
    if (!match)
        return false;
    ds_conn *c;
    if (ds_pool_acquire(mem->pool, &c, NULL) != DS_OK)
        return false;
    db_record rec;
    ds_status st = read_record(c, &rec, NULL);
    ds_pool_release(c);
    if (st != DS_OK || rec.dim != mem->dim)
        return false;
    pthread_mutex_lock(&mem->mu);
    bool changed = rec.state.backend != mem->state.backend ||
                   rec.state.hnsw != mem->state.hnsw;
    if (changed)
        mem->state = rec.state;
    pthread_mutex_unlock(&mem->mu);
    if (changed)
        ds__log(DS_LOG_INFO, MODULE, "the database now uses the %s backend",
                backend_name(rec.state.backend));
    return changed;
}

ds_status ds__memory_active_table(ds_conn *conn, const char **module,
                                  ds_error *err) {
    *module = NULL;
    db_record rec;
    ds_status st = read_record(conn, &rec, err);
    if (st == DS_OK)
        *module = rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR
                      ? "memory.pgvector"
                      : "memory.fallback";
    return st;
}

size_t ds__memory_migration_settings(int64_t embedding_dim,
                                     int64_t vector_backend,
                                     ds__migration_setting out[2]) {
    static const char *const names[] = {"auto", "pgvector", "fallback"};
    out[0].name = "ds.embedding_dim";
    snprintf(out[0].value, sizeof out[0].value, "%lld",
             (long long)embedding_dim);
    out[1].name = "ds.vector_backend";
    int64_t b = vector_backend;
    snprintf(out[1].value, sizeof out[1].value, "%s",
             names[b >= 0 && b <= 2 ? b : 0]);
    return 2;
}

/* ---- the handle ---------------------------------------------------------------- */

DS_EXPORT ds_status ds_memory_open(ds_pool *pool, const ds_config *cfg,
                                   ds_memory **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, pool, "pool is NULL");
    ds_config *defaults = NULL;
    if (!cfg) {
        ds_status st = ds_config_new(&defaults, err);
        if (st != DS_OK)
            return st;
        cfg = defaults;
    }
    size_t want_dim = (size_t)cfg->embedding_dim;
    ds_vector_backend wanted = (ds_vector_backend)cfg->vector_backend;
    int ef_search = (int)cfg->hnsw_ef_search;
    int exact_max = (int)cfg->vector_exact_max_rows;
    ds_config_free(defaults);

    ds_conn *c;
    ds_status st = ds_pool_acquire(pool, &c, err);
    if (st != DS_OK)
        return st;
    db_record rec;
    st = read_record(c, &rec, err);
    ds_pool_release(c);
    if (st != DS_OK)
        return st;

    if (rec.dim != want_dim)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_EMBEDDING_DIM is %zu but the database stores "
                             "%zu-dimension embeddings (chosen when it was "
                             "migrated; set DS_EMBEDDING_DIM=%zu)",
                             want_dim, rec.dim, rec.dim);
    if (wanted == DS_VECTOR_BACKEND_PGVECTOR &&
        rec.state.backend == DS_VECTOR_BACKEND_FALLBACK) {
        if (!rec.available)
            return ds__error_set(err, DS_ERR_UNSUPPORTED,
                                 "DS_VECTOR_BACKEND is pgvector but this "
                                 "server has no pgvector extension");
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_VECTOR_BACKEND is pgvector but the database "
                             "uses the fallback: convert it with "
                             "ds_memory_upgrade_to_pgvector()");
    }
    if (wanted == DS_VECTOR_BACKEND_FALLBACK &&
        rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR)
        return ds__error_set(err, DS_ERR_SCHEMA,
                             "DS_VECTOR_BACKEND is fallback but the database "
                             "was migrated with pgvector (set it to auto or "
                             "pgvector)");
    if (rec.state.backend == DS_VECTOR_BACKEND_FALLBACK && rec.available)
        ds__log(DS_LOG_INFO, MODULE,
                "pgvector is available on this server; "
                "ds_memory_upgrade_to_pgvector() converts the database");
    if (rec.state.backend == DS_VECTOR_BACKEND_PGVECTOR && rec.state.hnsw &&
        !rec.state.iterative)
        ds__log(DS_LOG_WARN, MODULE,
                "pgvector %s has no iterative index scans (0.8.0+): every "
                "search is an exact scan",
                rec.state.pgvector_version);

    ds_memory *mem = ds__calloc(1, sizeof *mem);
    if (!mem)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    pthread_mutex_init(&mem->mu, NULL);
    mem->pool = pool;
    mem->dim = rec.dim;
    mem->ef_search = ef_search;
    mem->exact_max_rows = exact_max;
    mem->state = rec.state;
    ds__log(DS_LOG_INFO, MODULE, "memory store open: %s backend%s%s, %zu "
            "dimensions",
            backend_name(rec.state.backend),
            rec.state.pgvector_version[0] ? " " : "",
            rec.state.pgvector_version, rec.dim);
    *out = mem;
    return DS_OK;
}

DS_EXPORT void ds_memory_close(ds_memory *mem) {
    if (!mem)
        return;
    pthread_mutex_destroy(&mem->mu);
    ds__free(mem);
}

DS_EXPORT ds_vector_backend ds_memory_backend(const ds_memory *mem) {
    if (!mem)
        return DS_VECTOR_BACKEND_AUTO;
    return ds__memory_state_get((ds_memory *)mem).backend;
}

DS_EXPORT size_t ds_memory_dim(const ds_memory *mem) {
    return mem ? mem->dim : 0;
}

/* ---- validation ------------------------------------------------------------------ */

static bool kind_valid(const char *kind) {
    size_t n = 0;
    for (const char *p = kind; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return n >= 1 && n <= DS_MEMORY_KIND_MAX;
}

static size_t utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

ds_status ds__memory_check_kind(const char *kind, ds_error *err) {
    if (kind && !kind_valid(kind))
        return ds__error_set(err, DS_ERR_INVALID,
                             "kind must be 1 to 64 of a-z, 0-9 and _");
    return DS_OK;
}

ds_status ds__memory_check_fact(const ds_memory *mem,
                                const ds_memory_new_fact *f, float *unit,
                                ds_error *err) {
    if (f->user_id <= 0)
        return ds__error_set(err, DS_ERR_INVALID, "user_id must be positive");
    ds_status st = ds__memory_check_kind(f->kind, err);
    if (st != DS_OK)
        return st;
    if (!f->content)
        return ds__error_set(err, DS_ERR_INVALID, "content is NULL");
    size_t len = strlen(f->content);
    if (!ds__utf8_valid(f->content, len))
        return ds__error_set(err, DS_ERR_INVALID,
                             "content is not valid UTF-8");
    size_t chars = utf8_chars(f->content, len);
    if (chars < 1 || chars > DS_MEMORY_CONTENT_MAX)
        return ds__error_set(err, DS_ERR_INVALID,
                             "content must be 1 to %d characters, not %zu",
                             DS_MEMORY_CONTENT_MAX, chars);
    if (f->metadata && !json_is_object(f->metadata))
        return ds__error_set(err, DS_ERR_INVALID,
                             "metadata must be a JSON object");
    if (!(f->importance >= 0.0 && f->importance <= 1.0))
        return ds__error_set(err, DS_ERR_INVALID,
                             "importance must be from 0 to 1");
    return ds__vec_normalize(f->embedding, f->dim, mem->dim, "embedding",
                             unit, err);
}

/* ---- add ------------------------------------------------------------------------- */

/* jansson allocates the dump; free it with jansson's free. */
static void json_text_free(char *text) {
    json_malloc_t jmalloc;
    json_free_t jfree;
    json_get_alloc_funcs(&jmalloc, &jfree);
    if (text)
        jfree(text);
}

/* Binary jsonb of a fact's metadata: version byte 1, then the text. */
static ds_status encode_metadata(const json_t *metadata, char **out,
                                 size_t *len, ds_error *err) {
    char *text = metadata ? ds__json_dumps(metadata, JSON_COMPACT) : NULL;
    if (metadata && !text)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    size_t n = text ? strlen(text) : 2;
    *out = ds__malloc(n + 1);
    if (*out) {
        (*out)[0] = 1;
        memcpy(*out + 1, text ? text : "{}", n);
        *len = n + 1;
    }
    json_text_free(text);
    return *out ? DS_OK
                : ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
}

/* Inserts `n` validated facts in one statement; ids in input order. */
static ds_status insert_batch(ds_memory *mem, ds_conn *c,
                              ds_vector_backend backend,
                              const ds_memory_new_fact *f, size_t n,
                              int64_t *ids, ds_error *err) {
    size_t dim = mem->dim;
    bool pgv = backend == DS_VECTOR_BACKEND_PGVECTOR;
    ds_status st = DS_OK;
    char **meta = ds__calloc(n, sizeof *meta);
    size_t *meta_len = ds__calloc(n, sizeof *meta_len);
    int64_t *users = ds__calloc(n, sizeof *users);
    float *importance = ds__calloc(n, sizeof *importance);
    float *units = ds__calloc(n * dim, sizeof *units);
    /* each fact's little-endian vector (fallback) and sketch (both) */
    unsigned char *bytes = ds__malloc(n * (5 * dim + 8));
    ds__pgarr kinds, contents, metas, embs, sketches;
    ds__pgarr_init(&kinds, DS_OID_TEXT);
    ds__pgarr_init(&contents, DS_OID_TEXT);
    ds__pgarr_init(&metas, DS_OID_JSONB);
    ds__pgarr_init(&embs, DS_OID_BYTEA);
    ds__pgarr_init(&sketches, DS_OID_BYTEA);
    ds__bind p;
    ds__bind_init(&p);
    if (!meta || !meta_len || !users || !importance || !units || !bytes)
        st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    for (size_t i = 0; st == DS_OK && i < n; i++) {
        st = encode_metadata(f[i].metadata, &meta[i], &meta_len[i], err);
        users[i] = f[i].user_id;
        importance[i] = (float)f[i].importance;
        /* validated before: this only recomputes the unit vector */
        ds__vec_normalize(f[i].embedding, f[i].dim, dim, "embedding",
                          units + i * dim, NULL);
    }
    PGresult *r = NULL;
    if (st == DS_OK) {
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++) {
            const char *kind = f[i].kind ? f[i].kind : "fact";
            ok = ds__pgarr_add(&kinds, kind, strlen(kind)) &&
                 ds__pgarr_add(&contents, f[i].content, strlen(f[i].content)) &&
                 ds__pgarr_add(&metas, meta[i], meta_len[i]);
            unsigned char *le = bytes + i * (5 * dim + 8);
            unsigned char *sk = le + 4 * dim;
            ds__sketch_build(units + i * dim, dim, sk);
            ok = ok && ds__pgarr_add(&sketches, sk, DS_SKETCH_BYTES(dim));
            if (ok && !pgv) {
                ds__vec_to_le(units + i * dim, dim, le);
                ok = ds__pgarr_add(&embs, le, 4 * dim);
            }
        }
        ds__bind_int8_array(&p, users, n);
        ds__bind_array(&p, &kinds, DS_OID_TEXT_ARRAY);
        ds__bind_array(&p, &contents, DS_OID_TEXT_ARRAY);
        ds__bind_array(&p, &metas, DS_OID_JSONB_ARRAY);
        ds__bind_float4_array(&p, importance, n);
        if (pgv) {
            ds__bind_float4_array(&p, units, n * dim);
            ds__bind_int32(&p, (int32_t)dim);
            ds__bind_array(&p, &sketches, DS_OID_BYTEA_ARRAY);
        } else {
            ds__bind_array(&p, &embs, DS_OID_BYTEA_ARRAY);
            ds__bind_array(&p, &sketches, DS_OID_BYTEA_ARRAY);
        }
        if (!ok)
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        else
            r = ds__memory_exec(c,
                                pgv ? &ds__memory_pgvector_stmts[P_INSERT_MANY]
                                    : &ds__memory_fallback_stmts[F_INSERT_MANY],
                                &p, err);
        if (st == DS_OK && !r)
            st = err->code;
    }
    if (r) {
        /* identity values rise in insertion order, which is input order */
        size_t got = (size_t)PQntuples(r);
        for (size_t i = 0; ids && i < got && i < n; i++)
            ids[i] = ds__memory_int8(r, (int)i, 0);
        if (ids)
            qsort(ids, got < n ? got : n, sizeof *ids, ds__int64_cmp);
        PQclear(r);
    }
    for (size_t i = 0; meta && i < n; i++)
        ds__free(meta[i]);
    ds__free(meta);
    ds__free(meta_len);
    ds__free(users);
    ds__free(importance);
    ds__free(units);
    ds__free(bytes);
    ds__pgarr_free(&kinds);
    ds__pgarr_free(&contents);
    ds__pgarr_free(&metas);
    ds__pgarr_free(&embs);
    ds__pgarr_free(&sketches);
    ds__bind_free(&p);
    return st;
}

/* Facts per INSERT: about 4 MiB of vectors, at most 1000. */
static size_t batch_rows(size_t dim) {
    size_t rows = (size_t)(1u << 20) / dim;
    return rows < 1 ? 1 : rows > 1000 ? 1000 : rows;
}

static ds_status add_many_once(ds_memory *mem, const ds_memory_new_fact *facts,
                               size_t count, int64_t *ids, ds_error *err) {
    ds__memory_state s = ds__memory_state_get(mem);
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    size_t batch = batch_rows(mem->dim);
    bool tx = count > batch;
    if (tx) {
        PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_BEGIN], NULL, err);
        st = r ? DS_OK : err->code;
        PQclear(r);
    }
    for (size_t at = 0; st == DS_OK && at < count; at += batch) {
        size_t n = count - at < batch ? count - at : batch;
        st = insert_batch(mem, c, s.backend, facts + at, n,
                          ids ? ids + at : NULL, err);
    }
    if (st == DS_OK && tx) {
        PGresult *r =
            ds__memory_exec(c, &ds__memory_stmts[M_COMMIT], NULL, err);
        st = r ? DS_OK : err->code;
        PQclear(r);
    }
    ds_pool_release(c); /* rolls back a failed transaction */
    if (strcmp(err->sqlstate, "23503") == 0) {
        err->code = st = DS_ERR_NOT_FOUND;
        ds__error_prefix(err, "no such user");
    }
    return st;
}

DS_EXPORT ds_status ds_memory_add_many(ds_memory *mem,
                                       const ds_memory_new_fact *facts,
                                       size_t count, int64_t *ids,
                                       ds_error *err) {
    if (ids && count >= 1 && count <= 10000)
        memset(ids, 0, count * sizeof *ids);
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, facts, "facts is NULL");
    DS_CHECK_ARG(err, count >= 1 && count <= 10000,
                 "count must be 1 to 10000");
    float *unit = ds__calloc(mem->dim, sizeof *unit);
    if (!unit)
        return ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
    /* Every fact is checked before anything is written. */
    ds_status st = DS_OK;
    for (size_t i = 0; i < count && st == DS_OK; i++) {
        st = ds__memory_check_fact(mem, &facts[i], unit, err);
        if (st != DS_OK && count > 1)
            ds__error_prefix(err, "fact %zu", i);
    }
    ds__free(unit);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    st = add_many_once(mem, facts, count, ids, &local);
    if (st != DS_OK && ds__memory_state_changed(mem, &local)) {
        memset(&local, 0, sizeof local);
        st = add_many_once(mem, facts, count, ids, &local);
    }
    if (st == DS_OK)
        return DS_OK;
    /* ids of batches written before the failure were rolled back */
    if (ids)
        memset(ids, 0, count * sizeof *ids);
    return ds__memory_fail(&local, err);
}

DS_EXPORT ds_status ds_memory_add(ds_memory *mem,
                                  const ds_memory_new_fact *fact, int64_t *id,
                                  ds_error *err) {
    if (id)
        *id = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, fact, "fact is NULL");
    return ds_memory_add_many(mem, fact, 1, id, err);
}

/* ---- read, update, delete -------------------------------------------------------- */

static ds_status get_once(ds_memory *mem, int64_t user_id, int64_t id,
                          ds_memory_fact **out, ds_error *err) {
    ds__memory_state s = ds__memory_state_get(mem);
    bool pgv = s.backend == DS_VECTOR_BACKEND_PGVECTOR;
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    PGresult *r = ds__memory_exec(
        c,
        pgv ? &ds__memory_pgvector_stmts[P_GET]
            : &ds__memory_fallback_stmts[F_GET],
        &p, err);
    ds_pool_release(c);
    if (!r)
        return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "memory fact %lld of user %lld not found",
                             (long long)id, (long long)user_id);
    }
    ds_memory_fact *f;
    st = ds__memory_decode_fact(r, 0, &f, err);
    int col = DS_MEMORY_ROW_COLS;
    if (st == DS_OK && !PQgetisnull(r, 0, col)) {
        f->embedding = ds__calloc(mem->dim, sizeof(float));
        f->dim = mem->dim;
        if (!f->embedding) {
            st = ds__error_set(err, DS_ERR_NOMEM, "memory: out of memory");
        } else if (pgv) {
            if (!ds__vec_from_array(PQgetvalue(r, 0, col),
                                    PQgetlength(r, 0, col), mem->dim,
                                    f->embedding))
                st = ds__error_set(err, DS_ERR_SCHEMA,
                                   "memory fact %lld: embedding is not a "
                                   "%zu-dimension vector",
                                   (long long)id, mem->dim);
        } else if ((size_t)PQgetlength(r, 0, col) != 4 * mem->dim) {
            st = ds__error_set(err, DS_ERR_SCHEMA,
                               "memory fact %lld: embedding has %d bytes, "
                               "not %zu",
                               (long long)id, PQgetlength(r, 0, col),
                               4 * mem->dim);
        } else {
            ds__vec_from_le((const unsigned char *)PQgetvalue(r, 0, col),
                            mem->dim, f->embedding);
        }
        if (st != DS_OK)
            ds_memory_fact_free(f);
    }
    PQclear(r);
    if (st == DS_OK)
        *out = f;
    return st;
}

DS_EXPORT ds_status ds_memory_get(ds_memory *mem, int64_t user_id, int64_t id,
                                  ds_memory_fact **out, ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds_error local = {0};
    ds_status st = get_once(mem, user_id, id, out, &local);
    if (st != DS_OK && ds__memory_state_changed(mem, &local)) {
        memset(&local, 0, sizeof local);
        st = get_once(mem, user_id, id, out, &local);
    }
    if (st != DS_OK && err)
        *err = local;
    return st;
}

DS_EXPORT ds_status ds_memory_list(ds_memory *mem, int64_t user_id,
                                   const char *kind, int64_t after_id,
                                   int limit, ds_memory_facts **out,
                                   ds_error *err) {
    DS_CHECK_ARG(err, out, "out is NULL");
    *out = NULL;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, after_id >= 0, "after_id must not be negative");
    DS_CHECK_ARG(err, limit >= 1 && limit <= 1000, "limit must be 1 to 1000");
    ds_status st = ds__memory_check_kind(kind, err);
    if (st != DS_OK)
        return st;
    ds_conn *c;
    st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_text(&p, kind);
    ds__bind_int64(&p, after_id);
    ds__bind_int32(&p, limit);
    ds_error local = {0};
    PGresult *r = ds__memory_exec(c, &ds__memory_stmts[M_LIST], &p, &local);
    ds_pool_release(c);
    if (!r)
        return ds__memory_fail(&local, err);
    ds_memory_facts *list;
    st = ds__memory_list_new((size_t)PQntuples(r), &list, err);
    for (int i = 0; st == DS_OK && i < PQntuples(r); i++) {
        st = ds__memory_decode_fact(r, i, &list->items[i], err);
        if (st == DS_OK)
            list->count++;
    }
    PQclear(r);
    if (st != DS_OK) {
        ds_memory_facts_free(list);
        return st;
    }
    *out = list;
    return DS_OK;
}

/* Runs a statement that returns the id of the row it changed. */
static ds_status change_one(ds_memory *mem, const ds__stmt_def *def,
                            const ds__bind *p, int64_t user_id, int64_t id,
                            ds_error *err) {
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st != DS_OK)
        return st;
    ds_error local = {0};
    PGresult *r = ds__memory_exec(c, def, p, &local);
    ds_pool_release(c);
    if (!r)
        return ds__memory_fail(&local, err);
    int rows = PQntuples(r);
    PQclear(r);
    if (rows == 0)
        return ds__error_set(err, DS_ERR_NOT_FOUND,
                             "memory fact %lld of user %lld not found",
                             (long long)id, (long long)user_id);
    return DS_OK;
}

DS_EXPORT ds_status ds_memory_set_importance(ds_memory *mem, int64_t user_id,
                                             int64_t id, double importance,
                                             ds_error *err) {
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    DS_CHECK_ARG(err, importance >= 0.0 && importance <= 1.0,
                 "importance must be from 0 to 1");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    ds__bind_float4(&p, (float)importance);
    return change_one(mem, &ds__memory_stmts[M_SET_IMPORTANCE], &p, user_id,
                      id, err);
}

DS_EXPORT ds_status ds_memory_delete(ds_memory *mem, int64_t user_id,
                                     int64_t id, ds_error *err) {
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, id > 0, "id must be positive");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int64(&p, id);
    return change_one(mem, &ds__memory_stmts[M_DELETE], &p, user_id, id, err);
}

DS_EXPORT ds_status ds_memory_touch(ds_memory *mem, int64_t user_id,
                                    const int64_t *ids, size_t count,
                                    size_t *touched, ds_error *err) {
    if (touched)
        *touched = 0;
    DS_CHECK_ARG(err, mem, "mem is NULL");
    DS_CHECK_ARG(err, user_id > 0, "user_id must be positive");
    DS_CHECK_ARG(err, ids, "ids is NULL");
    DS_CHECK_ARG(err, count >= 1 && count <= 10000,
                 "count must be 1 to 10000");
    ds__bind p;
    ds__bind_init(&p);
    ds__bind_int64(&p, user_id);
    ds__bind_int8_array(&p, ids, count);
    ds_conn *c;
    ds_status st = ds_pool_acquire(mem->pool, &c, err);
    if (st == DS_OK) {
        ds_error local = {0};
        PGresult *r =
            ds__memory_exec(c, &ds__memory_stmts[M_TOUCH], &p, &local);
        ds_pool_release(c);
        if (r) {
            if (touched)
                *touched = (size_t)strtoull(PQcmdTuples(r), NULL, 10);
            PQclear(r);
        } else {
            st = ds__memory_fail(&local, err);
        }
    }
    ds__bind_free(&p);
    return st;
}
