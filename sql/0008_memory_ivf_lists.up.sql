-- ds:no-transaction
-- A coarse partition of each large user's facts (see docs/memory.md for the
-- measurements): ds_memory_maintain() clusters the facts of a user above a
-- size threshold into lists (k-means over the unit embeddings, about
-- sqrt(facts) lists), stores each list's centroid here and each fact's list
-- in memory_facts.list_id. A search of such a user reads only the sketches
-- of the lists nearest the query (an index range scan per list), plus every
-- fact without a list (NULL: not clustered yet, always read) or whose list
-- is gone.
--
-- Online: the table is new; the column is nullable without a default, so
-- adding it is instant (it still queues behind long queries: wait at most
-- lock_timeout, the runner's value or 5 s); the index is built
-- CONCURRENTLY. Each statement is idempotent.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE TABLE IF NOT EXISTS memory_ivf_lists (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    list_id    integer NOT NULL CHECK (list_id >= 0),
    -- unit float32 vector, little-endian (as the fallback's embeddings)
    centroid   bytea NOT NULL,
    -- facts in the list when it was built (the probe budget's estimate)
    facts      integer NOT NULL CHECK (facts >= 0),
    -- mean cosine of its facts to the centroid when it was built: a query
    -- much farther from every centroid lies outside the lists
    cohesion   real NOT NULL CHECK (cohesion BETWEEN -1 AND 1),
    built_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, list_id)
);

ALTER TABLE memory_facts ADD COLUMN IF NOT EXISTS list_id integer;

-- The search of a clustered user: the sketches of one list are one range
-- of this index (index-only scan). Partial like the other sketch index, so
-- no entry can outgrow a btree page.
CREATE INDEX CONCURRENTLY IF NOT EXISTS memory_facts_ivf_idx
    ON memory_facts (user_id, list_id, kind, id) INCLUDE (embedding_sketch)
    WHERE embedding_sketch IS NULL OR octet_length(embedding_sketch) <= 2008;
