-- ds:no-transaction
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
--
-- Online: memory_facts may already hold millions of rows that the
-- application reads and writes while this runs. So the file runs outside a
-- transaction, statement by statement: the columns are added nullable
-- (no rewrite), the CHECK NOT VALID and then validated (a scan that blocks
-- neither reads nor writes), and every index is built CONCURRENTLY. Each
-- statement is idempotent, so a run that stopped half-way is simply run
-- again (the runner drops an INVALID index a failed build left behind).
-- A "-- ds:when" line makes the runner run the next statement only when
-- the query after it is true.

-- The runner's lock_timeout when it set one, else a few seconds: a DDL
-- statement queued behind a long query would queue every later query too.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE TABLE IF NOT EXISTS memory_vector_settings (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    embedding_dim  integer NOT NULL CHECK (embedding_dim BETWEEN 1 AND 16000),
    backend        text NOT NULL CHECK (backend IN ('pgvector', 'fallback')),
    -- Whether this schema created the vector extension (the down migration
    -- then drops it again, unless something else has come to use it).
    extension_created boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Choose the backend (once: a second run keeps the first run's choice) and
-- add the columns. Every step here takes its lock for an instant.
DO $migration$
DECLARE
    dim_text text := coalesce(nullif(current_setting('ds.embedding_dim', true), ''), '384');
    wanted text := lower(coalesce(nullif(current_setting('ds.vector_backend', true), ''), 'auto'));
    dim integer;
    backend text := 'fallback';
    created boolean := NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector');
    had_row boolean;
    prior memory_vector_settings%ROWTYPE;
BEGIN
    SELECT * INTO prior FROM memory_vector_settings;
    had_row := FOUND;
    IF had_row THEN
        dim := prior.embedding_dim;
        backend := prior.backend;
    ELSE
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
    END IF;

    IF backend = 'pgvector' THEN
        CREATE EXTENSION IF NOT EXISTS vector;
        EXECUTE format('ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS embedding vector(%s)', dim);
        -- Inline (MAIN) rather than pgvector's default EXTERNAL: a search
        -- reads every candidate's vector and a TOAST lookup per row would
        -- dominate it. Long content is moved out of line first.
        ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN;
    ELSE
        ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS embedding bytea,
                                 ADD COLUMN IF NOT EXISTS embedding_sketch bytea;
        -- Searches read only the sketch index (an index-only scan over the
        -- user's entries); PLAIN keeps sketches uncompressed in it.
        IF dim <= 2000 THEN
            ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN,
                                     ALTER COLUMN embedding_sketch SET STORAGE PLAIN;
        ELSE
            ALTER TABLE memory_facts ALTER COLUMN embedding SET STORAGE MAIN,
                                     ALTER COLUMN embedding_sketch SET STORAGE MAIN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_constraint
                        WHERE conrelid = 'memory_facts'::regclass
                          AND conname = 'memory_facts_embedding_dim_check') THEN
            EXECUTE format('ALTER TABLE memory_facts ADD CONSTRAINT memory_facts_embedding_dim_check '
                           'CHECK (octet_length(embedding) = %s AND octet_length(embedding_sketch) = %s '
                           'AND (embedding IS NULL) = (embedding_sketch IS NULL)) NOT VALID',
                           4 * dim, dim + 8);
        END IF;
    END IF;
    IF NOT had_row THEN
        INSERT INTO memory_vector_settings (embedding_dim, backend, extension_created)
        VALUES (dim, backend, backend = 'pgvector' AND created)
        ON CONFLICT (singleton) DO NOTHING;
    END IF;
END
$migration$;

-- The validating scan takes SHARE UPDATE EXCLUSIVE: reads and writes go on.
DO $validate$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conrelid = 'memory_facts'::regclass
                  AND conname = 'memory_facts_embedding_dim_check'
                  AND NOT convalidated) THEN
        ALTER TABLE memory_facts VALIDATE CONSTRAINT memory_facts_embedding_dim_check;
    END IF;
END
$validate$;

-- ds:when (SELECT backend = 'fallback' AND embedding_dim <= 2000 FROM memory_vector_settings)
CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_embedding_sketch_idx
    ON memory_facts (user_id, kind, id) INCLUDE (embedding_sketch);

-- ds:when (SELECT backend = 'pgvector' AND embedding_dim <= 2000 FROM memory_vector_settings) AND EXISTS (SELECT 1 FROM pg_am WHERE amname = 'hnsw')
CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_embedding_hnsw
    ON memory_facts USING hnsw (embedding vector_cosine_ops);

-- Full-text side of hybrid search (English stemming and stop words).
CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_content_fts_idx
    ON memory_facts USING gin (to_tsvector('english', content));
