-- Memory search: the embedding column of memory_facts, its dimension and
-- backend, and the full-text index hybrid search ranks with.
--
-- Two custom settings steer it (ds-migrate sets both from its configuration
-- before running this file; by hand: PGOPTIONS='-c ds.embedding_dim=768'):
--   ds.embedding_dim   DS_EMBEDDING_DIM, 1 to 16000, default 384
--   ds.vector_backend  DS_VECTOR_BACKEND: auto (default), pgvector, fallback
--
-- With pgvector available (pg_available_extensions) and not refused, the
-- column is vector(D) with an HNSW cosine index (up to 2000 dimensions, the
-- HNSW limit; above that searches are exact). Otherwise it is the portable
-- fallback, scored by the library: bytea holding D little-endian float32
-- values, plus a sketch (a float32 step, a float32 error bound and D int8
-- values) that a covering index serves to searches. Either way embeddings
-- are stored unit-length, so cosine similarity is a dot product. memory_vector_settings records what was
-- chosen; the library reads it at start-up and refuses a configuration that
-- disagrees. ds_memory_upgrade_to_pgvector() converts a fallback database
-- once pgvector is installed, keeping every row.

CREATE TABLE memory_vector_settings (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    embedding_dim  integer NOT NULL CHECK (embedding_dim BETWEEN 1 AND 16000),
    backend        text NOT NULL CHECK (backend IN ('pgvector', 'fallback')),
    -- Whether this schema created the vector extension (the down migration
    -- then drops it again, unless something else has come to use it).
    extension_created boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

DO $migration$
DECLARE
    dim_text text := coalesce(nullif(current_setting('ds.embedding_dim', true), ''), '384');
    wanted text := lower(coalesce(nullif(current_setting('ds.vector_backend', true), ''), 'auto'));
    dim integer;
    backend text := 'fallback';
    created boolean := NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector');
BEGIN
    IF dim_text !~ '^[0-9]{1,5}$' OR dim_text::integer NOT BETWEEN 1 AND 16000 THEN
        RAISE EXCEPTION 'ds.embedding_dim must be an integer from 1 to 16000, not "%"', dim_text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    dim := dim_text::integer;
    IF wanted NOT IN ('auto', 'pgvector', 'fallback') THEN
        RAISE EXCEPTION 'ds.vector_backend must be auto, pgvector or fallback, not "%"', wanted
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF wanted <> 'fallback' AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
            backend := 'pgvector';
        EXCEPTION WHEN insufficient_privilege THEN
            IF wanted = 'pgvector' THEN
                RAISE;
            END IF;
            RAISE NOTICE 'pgvector is available but this role cannot create it (%); using the portable fallback', SQLERRM;
        END;
    ELSIF wanted = 'pgvector' THEN
        RAISE EXCEPTION 'ds.vector_backend is pgvector but this server has no pgvector extension'
            USING ERRCODE = 'feature_not_supported';
    END IF;

    IF backend = 'pgvector' THEN
        EXECUTE format('ALTER TABLE memory_facts ADD COLUMN embedding vector(%s)', dim);
        -- Inline (MAIN) rather than pgvector's default EXTERNAL: a search
        -- reads every candidate's vector and a TOAST lookup per row would
        -- dominate it. Long content is moved out of line first.
        ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN;
        IF dim <= 2000 AND EXISTS (SELECT 1 FROM pg_am WHERE amname = 'hnsw') THEN
            CREATE INDEX memory_facts_embedding_hnsw ON memory_facts
                USING hnsw (embedding vector_cosine_ops);
        END IF;
    ELSE
        ALTER TABLE memory_facts ADD COLUMN embedding bytea, ADD COLUMN embedding_sketch bytea;
        ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN;
        EXECUTE format('ALTER TABLE memory_facts ADD CONSTRAINT memory_facts_embedding_dim_check '
                       'CHECK (octet_length(embedding) = %s AND octet_length(embedding_sketch) = %s '
                       'AND (embedding IS NULL) = (embedding_sketch IS NULL))', 4 * dim, dim + 8);
        IF dim <= 2000 THEN
            -- Searches read only this index (an index-only scan over the
            -- user's entries); PLAIN keeps sketches uncompressed in it.
            ALTER TABLE memory_facts ALTER COLUMN embedding_sketch SET STORAGE PLAIN;
            CREATE INDEX memory_facts_embedding_sketch_idx ON memory_facts (user_id, kind, id)
                INCLUDE (embedding_sketch);
        ELSE
            ALTER TABLE memory_facts ALTER COLUMN embedding_sketch SET STORAGE MAIN;
        END IF;
    END IF;
    INSERT INTO memory_vector_settings (embedding_dim, backend, extension_created)
    VALUES (dim, backend, backend = 'pgvector' AND created);
END
$migration$;

-- Full-text side of hybrid search (English stemming and stop words).
CREATE INDEX memory_facts_content_fts_idx ON memory_facts
    USING gin (to_tsvector('english', content));
