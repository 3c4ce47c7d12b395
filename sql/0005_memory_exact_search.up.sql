-- ds:no-transaction
-- Memory search is an exact per-user scan on both backends (see
-- docs/memory.md for the measurements behind it): the library reads the
-- user's 8-bit sketches (a float32 step, a float32 error bound and D int8
-- values) through an index-only scan, keeps the facts whose upper bound can
-- still reach the top k, and rescores those with the exact embeddings.
--
-- The fallback has had the sketch column and its covering index since 0003;
-- here a pgvector database gets them too (the library writes a sketch with
-- every embedding from now on; a row without one is always rescored, so
-- older rows stay exact, only slower). The index is partial so that no
-- entry can outgrow a btree page: sketches of more than 2000 dimensions are
-- read from the table instead, as the fallback always did for them.
--
-- The global HNSW index goes: filtered by user it lost recall exactly where
-- a user's memory grows, and maintaining it capped inserts near 800 facts/s.
-- The column is nullable without a default: adding it is instant, but it
-- still queues behind long queries, so wait at most lock_timeout (the
-- runner's value; 5 s when none is set).
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS embedding_sketch bytea;

CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_embedding_sketch_idx
    ON memory_facts (user_id, kind, id) INCLUDE (embedding_sketch)
    WHERE embedding_sketch IS NULL OR octet_length(embedding_sketch) <= 2008;

DROP INDEX CONCURRENTLY IF EXISTS memory_facts_embedding_hnsw;
