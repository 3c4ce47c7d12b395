-- Large users' coarse codes packed into a few wide rows (see docs/memory.md,
-- "Packed codes"): ds_memory_maintain() copies the 2-bit code of every fact
-- of a user above a size threshold into blocks of a few hundred facts, one
-- kind per block, so that a full search of a 100,000-fact user reads about
-- 400 rows instead of 100,000 index entries. Facts written after the
-- packing (id above `upto`) are read from the code index as before.
--
-- Online: the table is new; creating it takes a brief lock on users for
-- the foreign key (wait at most lock_timeout, the runner's value or 5 s).
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE TABLE IF NOT EXISTS memory_code_blocks (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind     text NOT NULL,
    block_no integer NOT NULL CHECK (block_no >= 0),
    -- every fact of the user with an id up to this one was packed (or has
    -- been deleted since); the same in each block of a packing
    upto     bigint NOT NULL,
    facts    integer NOT NULL CHECK (facts > 0),
    -- little-endian: a header, the ids, the two levels of each code, then
    -- the code bytes group by group (src/memory/blocks.c)
    codes    bytea NOT NULL,
    packed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind, block_no)
);

-- The codes do not compress: keep them out of line without trying.
ALTER TABLE memory_code_blocks ALTER COLUMN codes SET STORAGE EXTERNAL;
