/*
 * The memory store's SQL: the statements shared by both backends and each
 * backend's own (only the one the database uses can be prepared there).
 */
#include "memory/memory_internal.h"

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
    /* The ids first, each a probe of the primary key, and only then the
     * user (MATERIALIZED keeps the planner from reading the user's facts
     * and filtering them by id, which a generic plan, which takes every
     * user for an average one, otherwise prefers). */
    [M_ROWS] = {"memory.rows",
                "WITH f AS MATERIALIZED (SELECT " FACT_COLS
                " FROM memory_facts WHERE id = ANY($2)) "
                "SELECT * FROM f WHERE user_id = $1",
                2,
                {DS_OID_INT8, DS_OID_INT8_ARRAY},
                DS_MEMORY_ROW_COLS,
                {FACT_TYPES}},
    /* A page of the user's facts by id, whatever their kind: the index
     * (user_id, kind, id) holds them in id order within each kind, so the
     * user's kinds are found by skipping through it (a loose index scan,
     * one probe a kind) and each kind's next page is read in order; the
     * pages are merged: the final sort holds at most a page per kind.
     * O(kinds x page), never the user's every fact (a user has a handful
     * of kinds; thousands of distinct kinds would make this slow, and an
     * index on (user_id, id) would serve them, at the cost of a
     * migration). */
    [M_LIST] = {"memory.list",
                "WITH RECURSIVE kinds(kind) AS ("
                "(SELECT kind FROM memory_facts WHERE user_id = $1 "
                "ORDER BY kind LIMIT 1) "
                "UNION ALL "
                "SELECT (SELECT m.kind FROM memory_facts m WHERE m.user_id = "
                "$1 AND m.kind > k.kind ORDER BY m.kind LIMIT 1) "
                "FROM kinds k WHERE k.kind IS NOT NULL) "
                "SELECT f.* FROM unnest(ARRAY(SELECT kind FROM kinds WHERE "
                "kind IS NOT NULL)) AS k(kind) CROSS JOIN LATERAL (SELECT "
                FACT_COLS " FROM memory_facts WHERE user_id = $1 "
                "AND kind = k.kind AND id > $2 ORDER BY id LIMIT $3) f "
                "ORDER BY f.id LIMIT $3",
                3,
                {DS_OID_INT8, DS_OID_INT8, DS_OID_INT4},
                DS_MEMORY_ROW_COLS,
                {FACT_TYPES}},
    /* One kind's page: in the order of (user_id, kind, id). */
    [M_LIST_KIND] = {"memory.list_kind",
                     "SELECT " FACT_COLS " FROM memory_facts "
                     "WHERE user_id = $1 AND kind = $2 "
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
    /* The user's packed codes go with the fact (blocks.c): a code is
     * derived from the embedding, so none outlives it; the user's
     * searches read the code index until ds_memory_maintain() packs it
     * again. */
    [M_DELETE] = {"memory.delete",
                  "WITH d AS (DELETE FROM memory_facts WHERE user_id = $1 "
                  "AND id = $2 RETURNING id), b AS (DELETE FROM "
                  "memory_code_blocks WHERE user_id = $1 AND EXISTS "
                  "(SELECT 1 FROM d)) SELECT id FROM d",
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
    /* A large user's first stage: the coarse codes, by an index-only scan
     * of memory_facts_embedding_code_idx (the predicate is the index's); a
     * NULL code (a row written before sql/0006) is always a candidate. */
    [M_CODES] = {"memory.codes",
                 "SELECT id, embedding_code, kind FROM memory_facts "
                 "WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) "
                 "AND (embedding_code IS NULL OR "
                 "octet_length(embedding_code) <= 2008)",
                 2,
                 {DS_OID_INT8, DS_OID_TEXT},
                 3,
                 {DS_OID_INT8, DS_OID_BYTEA, DS_OID_TEXT}},
    /* Its second stage: the sketches of the candidates the codes chose,
     * (kind, id) pairs in index order, each an index-only probe of
     * memory_facts_embedding_sketch_idx (cheaper than the heap rows, which
     * lie anywhere in the table). A LATERAL subquery with LIMIT 1 is one
     * probe per candidate whatever the planner estimates: as a plain join,
     * even planned for its parameters, a user holding half the table was
     * hash-joined against all of its index entries (100,000 sketches read
     * and hashed, spilling to disk, for 4,000 candidates). */
    [M_SKETCHES_BY_ID] = {"memory.sketches_by_id",
                          "SELECT f.id, f.embedding_sketch "
                          "FROM unnest($2::text[], $3::int8[]) AS u(kind, id) "
                          "CROSS JOIN LATERAL (SELECT m.id, "
                          "m.embedding_sketch FROM memory_facts m "
                          "WHERE m.user_id = $1 "
                          "AND m.kind = u.kind AND m.id = u.id "
                          "AND (m.embedding_sketch IS NULL OR "
                          "octet_length(m.embedding_sketch) <= 2008) "
                          "LIMIT 1) f",
                          3,
                          {DS_OID_INT8, DS_OID_TEXT_ARRAY,
                           DS_OID_INT8_ARRAY},
                          2,
                          {DS_OID_INT8, DS_OID_BYTEA}},
    /* ds_memory_fill_sketches (sketches.c): codes written back. */
    [M_SET_CODES] = {"memory.set_codes",
                     "UPDATE memory_facts f SET embedding_code = u.code "
                     "FROM unnest($1::int8[], $2::bytea[]) AS u(id, code) "
                     "WHERE f.id = u.id AND f.embedding_code IS NULL",
                     2,
                     {DS_OID_INT8_ARRAY, DS_OID_BYTEA_ARRAY},
                     -1,
                     {0}},
    /* Above DS_SKETCH_INDEX_MAX_DIM dimensions: from the table. */
    [M_SKETCHES_WIDE] = {"memory.sketches_wide",
                         "SELECT id, embedding_sketch FROM memory_facts "
                         "WHERE user_id = $1 AND ($2::text IS NULL OR "
                         "kind = $2)",
                         2,
                         {DS_OID_INT8, DS_OID_TEXT},
                         2,
                         {DS_OID_INT8, DS_OID_BYTEA}},
    /* The first statement of a search, sent with its BEGIN: a small user
     * (no lists, fewer than $3 facts that pass the kind filter) gets the
     * sketches of all its facts, as memory.sketches; any other user gets
     * one row of NULLs, and the large user's stages follow (search.c). So
     * a small user's search reads neither its lists nor its codes. The
     * scan stops at $3 rows and is kept (MATERIALIZED) to be counted and
     * sent: one pass over the user's entries, which on pages the
     * visibility map does not mark yet (a freshly written table) is one
     * heap visit per fact, not two as with a count before the scan. A
     * clustered user's facts are not scanned at all. */
    [M_SMALL_SKETCHES] = {"memory.small_sketches",
                          "WITH clustered AS MATERIALIZED (SELECT EXISTS "
                          "(SELECT 1 FROM memory_ivf_lists WHERE user_id = "
                          "$1) AS yes), "
                          "s AS MATERIALIZED (SELECT id, embedding_sketch "
                          "FROM memory_facts WHERE NOT (SELECT yes FROM "
                          "clustered) AND user_id = $1 "
                          "AND ($2::text IS NULL OR kind = $2) "
                          "AND (embedding_sketch IS NULL OR "
                          "octet_length(embedding_sketch) <= 2008) LIMIT $3), "
                          "n AS MATERIALIZED (SELECT count(*) AS facts "
                          "FROM s) "
                          "SELECT id, embedding_sketch FROM s "
                          "WHERE (SELECT facts FROM n) < $3 "
                          "UNION ALL SELECT NULL, NULL WHERE (SELECT yes "
                          "FROM clustered) OR (SELECT facts FROM n) >= $3",
                          3,
                          {DS_OID_INT8, DS_OID_TEXT, DS_OID_INT4},
                          2,
                          {DS_OID_INT8, DS_OID_BYTEA}},
};

const ds__stmt_def ds__memory_fallback_stmts[F_COUNT_] = {
    /* Up to a batch of facts in one statement, from parallel arrays. */
    [F_INSERT_MANY] = {"memory.fallback.insert_many",
                       "INSERT INTO memory_facts (user_id, kind, content, "
                       "metadata, importance, embedding, embedding_sketch, "
                       "embedding_code) "
                       "SELECT * FROM unnest($1::int8[], $2::text[], "
                       "$3::text[], $4::jsonb[], $5::real[], $6::bytea[], "
                       "$7::bytea[], $8::bytea[]) RETURNING id",
                       8,
                       {DS_OID_INT8_ARRAY, DS_OID_TEXT_ARRAY,
                        DS_OID_TEXT_ARRAY, DS_OID_JSONB_ARRAY,
                        DS_OID_FLOAT4_ARRAY, DS_OID_BYTEA_ARRAY,
                        DS_OID_BYTEA_ARRAY, DS_OID_BYTEA_ARRAY},
                       1,
                       {DS_OID_INT8}},
    [F_GET] = {"memory.fallback.get",
               "SELECT " FACT_COLS ", embedding FROM memory_facts "
               "WHERE user_id = $1 AND id = $2",
               2,
               {DS_OID_INT8, DS_OID_INT8},
               DS_MEMORY_ROW_COLS + 1,
               {FACT_TYPES, DS_OID_BYTEA}},
    /* By primary key first, then the user, as memory.rows. */
    [F_EMBEDDINGS] = {"memory.fallback.embeddings",
                      "WITH f AS MATERIALIZED (SELECT id, user_id, embedding "
                      "FROM memory_facts WHERE id = ANY($2)) "
                      "SELECT id, embedding FROM f "
                      "WHERE user_id = $1 AND embedding IS NOT NULL",
                      2,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY},
                      2,
                      {DS_OID_INT8, DS_OID_BYTEA}},
    /* A small user's candidates in one statement, sent with the COMMIT:
     * the rows of $2 (to rescore: with their exact vectors) and of $3
     * (text matches of a hybrid search: rows only), by primary key. */
    [F_CANDIDATES] = {"memory.fallback.candidates",
                      "WITH f AS MATERIALIZED (SELECT " FACT_COLS ", "
                      "embedding FROM memory_facts WHERE id = ANY($2) "
                      "OR id = ANY($3)) "
                      "SELECT " FACT_COLS ", CASE WHEN id = ANY($2) THEN "
                      "embedding END FROM f WHERE user_id = $1",
                      3,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY, DS_OID_INT8_ARRAY},
                      DS_MEMORY_ROW_COLS + 1,
                      {FACT_TYPES, DS_OID_BYTEA}},
    /* ds_memory_fill_sketches (sketches.c): facts without a code. */
    [F_UNCODED] = {"memory.fallback.uncoded",
                   "SELECT id, embedding FROM memory_facts "
                   "WHERE id > $1 AND embedding_code IS NULL "
                   "AND embedding IS NOT NULL ORDER BY id LIMIT $2",
                   2,
                   {DS_OID_INT8, DS_OID_INT4},
                   2,
                   {DS_OID_INT8, DS_OID_BYTEA}},
};

const ds__stmt_def ds__memory_pgvector_stmts[P_COUNT_] = {
    /* $6 holds the batch's vectors end to end, $7 values each; $8 the
     * sketches and $9 the coarse codes, which searches read first (as on
     * the fallback). */
    [P_INSERT_MANY] = {"memory.pgvector.insert_many",
                       "INSERT INTO memory_facts (user_id, kind, content, "
                       "metadata, importance, embedding, embedding_sketch, "
                       "embedding_code) "
                       "SELECT u.user_id, u.kind, u.content, u.metadata, "
                       "u.importance, "
                       "($6::real[])[(u.n - 1) * $7 + 1 : u.n * $7]::vector, "
                       "u.sketch, u.code "
                       "FROM unnest($1::int8[], $2::text[], $3::text[], "
                       "$4::jsonb[], $5::real[], $8::bytea[], $9::bytea[]) "
                       "WITH ORDINALITY "
                       "AS u(user_id, kind, content, metadata, importance, "
                       "sketch, code, n) "
                       "RETURNING id",
                       9,
                       {DS_OID_INT8_ARRAY, DS_OID_TEXT_ARRAY,
                        DS_OID_TEXT_ARRAY, DS_OID_JSONB_ARRAY,
                        DS_OID_FLOAT4_ARRAY, DS_OID_FLOAT4_ARRAY, DS_OID_INT4,
                        DS_OID_BYTEA_ARRAY, DS_OID_BYTEA_ARRAY},
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
     * like the fallback's, so both backends rank alike. vector_send() hands
     * each over in pgvector's own binary form: a cast to real[] made the
     * server build an array of 384 boxed float4 values per row and send
     * twice the bytes, most of the pgvector search's extra time. */
    [P_EMBEDDINGS] = {"memory.pgvector.embeddings",
                      "WITH f AS MATERIALIZED (SELECT id, user_id, embedding "
                      "FROM memory_facts WHERE id = ANY($2)) "
                      "SELECT id, vector_send(embedding) FROM f "
                      "WHERE user_id = $1 AND embedding IS NOT NULL",
                      2,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY},
                      2,
                      {DS_OID_INT8, DS_OID_BYTEA}},
    /* As memory.fallback.candidates, the vectors in pgvector's binary
     * form (see memory.pgvector.embeddings). */
    [P_CANDIDATES] = {"memory.pgvector.candidates",
                      "WITH f AS MATERIALIZED (SELECT " FACT_COLS ", "
                      "embedding FROM memory_facts WHERE id = ANY($2) "
                      "OR id = ANY($3)) "
                      "SELECT " FACT_COLS ", CASE WHEN id = ANY($2) THEN "
                      "vector_send(embedding) END FROM f WHERE user_id = $1",
                      3,
                      {DS_OID_INT8, DS_OID_INT8_ARRAY, DS_OID_INT8_ARRAY},
                      DS_MEMORY_ROW_COLS + 1,
                      {FACT_TYPES, DS_OID_BYTEA}},
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
    [P_UNCODED] = {"memory.pgvector.uncoded",
                   "SELECT id, embedding::real[] FROM memory_facts "
                   "WHERE id > $1 AND embedding_code IS NULL "
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
