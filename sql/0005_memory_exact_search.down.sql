-- Back to 0003's shape: a pgvector database loses the sketches and gets its
-- HNSW index again; the fallback keeps the sketches it had (and drops the
-- partial index this step made where 0003 made none, above 2000 dimensions).
DO $down$
DECLARE
    dim integer := (SELECT embedding_dim FROM memory_vector_settings);
    backend text := (SELECT backend FROM memory_vector_settings);
BEGIN
    IF backend = 'pgvector' THEN
        DROP INDEX IF EXISTS memory_facts_embedding_sketch_idx;
        ALTER TABLE memory_facts DROP COLUMN IF EXISTS embedding_sketch;
        IF dim <= 2000 AND EXISTS (SELECT 1 FROM pg_am WHERE amname = 'hnsw') THEN
            CREATE INDEX IF NOT EXISTS memory_facts_embedding_hnsw ON memory_facts
                USING hnsw (embedding vector_cosine_ops);
        END IF;
    ELSIF dim > 2000 THEN
        DROP INDEX IF EXISTS memory_facts_embedding_sketch_idx;
    END IF;
END
$down$;
