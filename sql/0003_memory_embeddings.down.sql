-- Drops the embeddings (they cannot be recomputed here) and the settings.
-- The pgvector extension, when present, stays: other schemas may use it.
DROP INDEX IF EXISTS memory_facts_content_fts_idx;
DROP INDEX IF EXISTS memory_facts_embedding_hnsw;
DROP INDEX IF EXISTS memory_facts_embedding_sketch_idx;
ALTER TABLE memory_facts DROP CONSTRAINT IF EXISTS memory_facts_embedding_dim_check;
ALTER TABLE memory_facts DROP COLUMN IF EXISTS embedding_sketch;
ALTER TABLE memory_facts DROP COLUMN IF EXISTS embedding;
DROP TABLE IF EXISTS memory_vector_settings;
