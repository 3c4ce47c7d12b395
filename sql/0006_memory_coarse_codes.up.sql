-- ds:no-transaction
-- A coarse first stage for users with many facts (see docs/memory.md for
-- the measurements): beside the 8-bit sketch, each fact keeps a 2-bit code
-- of its unit embedding (two float32 levels, then 2 bits a dimension: sign
-- and magnitude class), about a quarter of the sketch's bytes. A search of
-- a large user reads the codes through an index-only scan, keeps the best
-- candidates by their approximate similarity, and ranks those with their
-- sketches and exact vectors. A row without a code (written before this
-- step) is always a candidate; ds_memory_fill_sketches() fills the codes.
--
-- The column is nullable without a default, so adding it is instant; it
-- still queues behind long queries, so wait at most lock_timeout (the
-- runner's value; 5 s when none is set). The index is partial like the
-- sketch index, so no entry can outgrow a btree page (codes of more than
-- 8000 dimensions are not written).
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');
ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS embedding_code bytea;

CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_embedding_code_idx
    ON memory_facts (user_id, kind, id) INCLUDE (embedding_code)
    WHERE embedding_code IS NULL OR octet_length(embedding_code) <= 2008;
