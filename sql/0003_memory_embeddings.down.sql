-- Drops the embeddings (they cannot be recomputed here) and the settings.
-- The pgvector extension goes too when this schema created it and nothing
-- else has come to use it since.
DROP INDEX IF EXISTS memory_facts_content_fts_idx;
DROP INDEX IF EXISTS memory_facts_embedding_hnsw;
DROP INDEX IF EXISTS memory_facts_embedding_sketch_idx;
ALTER TABLE memory_facts DROP CONSTRAINT IF EXISTS memory_facts_embedding_dim_check;
ALTER TABLE memory_facts DROP COLUMN IF EXISTS embedding_sketch;
ALTER TABLE memory_facts DROP COLUMN IF EXISTS embedding;
DO $down$
BEGIN
    IF (SELECT extension_created FROM memory_vector_settings) THEN
        BEGIN
            DROP EXTENSION IF EXISTS vector;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'the vector extension stays: other objects use it';
        END;
    END IF;
END
$down$;
DROP TABLE IF EXISTS memory_vector_settings;
